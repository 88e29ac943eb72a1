//! WeCom's answers, typed (PROTOCOL.md §7). Tolerant the way WeCom needs: unknown fields are ignored, missing
//! ones default, and a field of an unexpected type counts as missing (see [`super::de`]).
//!
//! `serde_json::Value` remains only for what a JSONB column stores as WeCom sent it: `external_profile`, and
//! a follow's `tags` / `tag_id`.

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;

use super::de;

/// A page of a cursor-paged endpoint.
pub trait Paged {
    /// The cursor of the next page; empty on the last page.
    fn next_cursor(&self) -> &str;
}

macro_rules! paged {
    ($($t:ty),*) => {$(
        impl Paged for $t {
            fn next_cursor(&self) -> &str {
                &self.next_cursor
            }
        }
    )*};
}
paged!(ExternalContactDetail, BatchByUserPage, GroupChatListPage);

/// `gettoken`.
#[derive(Debug, Deserialize)]
pub(crate) struct AccessToken {
    #[serde(default, deserialize_with = "de::opt_str")]
    pub access_token: Option<String>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub expires_in: Option<i64>,
}

/// `externalcontact/get_follow_user_list`: the members with 客户联系 enabled.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FollowUserList {
    /// Their userids.
    #[serde(default, deserialize_with = "de::strings")]
    pub follow_user: Vec<String>,
}

/// A customer (`external_contact` in `externalcontact/get` and `batch/get_by_user`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExternalContact {
    /// Without it the contact cannot be stored.
    #[serde(default, deserialize_with = "de::opt_str")]
    pub external_userid: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub avatar: Option<String>,
    /// 1 WeChat user, 2 WeCom user.
    #[serde(rename = "type", default, deserialize_with = "de::opt_i64")]
    pub kind: Option<i64>,
    /// 0 unknown, 1 male, 2 female.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub gender: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub unionid: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub position: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub corp_name: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub corp_full_name: Option<String>,
    /// Raw JSON on purpose: stored as-is in `external_contacts.external_profile` (JSONB). `Some(Value::Null)`
    /// when WeCom sent `null`, `None` when it sent nothing.
    #[serde(default, deserialize_with = "de::raw")]
    pub external_profile: Option<Value>,
}

/// A follow relation: `follow_user[]` in `externalcontact/get`, `follow_info` in `batch/get_by_user`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FollowInfo {
    /// The member; without it the follow cannot be stored.
    #[serde(default, deserialize_with = "de::opt_str")]
    pub userid: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub remark: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub description: Option<String>,
    /// When the member added the customer (unix seconds).
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub createtime: Option<i64>,
    /// Raw JSON on purpose: `externalcontact/get` sends `tags[]{group_name, tag_name, type, tag_id}`, stored
    /// as-is in `external_contact_follows.tags` (JSONB).
    #[serde(default, deserialize_with = "de::raw")]
    pub tags: Option<Value>,
    /// Raw JSON on purpose: `batch/get_by_user` sends `tag_id[]` (ids only) instead of `tags`; the resync stores
    /// it as-is in the same `tags` column (so that column holds two shapes; a known defect, kept for now).
    #[serde(default, deserialize_with = "de::raw")]
    pub tag_id: Option<Value>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub remark_corp_name: Option<String>,
    /// `None` when WeCom sent no list (a column that tells "not sent" from "none").
    #[serde(default, deserialize_with = "de::opt_strings")]
    pub remark_mobiles: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub oper_userid: Option<String>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub add_way: Option<i64>,
    /// The `state` of the 联系我 / acquisition link used.
    #[serde(default, deserialize_with = "de::opt_str")]
    pub state: Option<String>,
}

/// `externalcontact/get` (one page, or every page with the followers merged).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExternalContactDetail {
    /// `None` when WeCom sent none (nothing to store).
    #[serde(default, deserialize_with = "de::opt_object")]
    pub external_contact: Option<ExternalContact>,
    #[serde(default, deserialize_with = "de::objects")]
    pub follow_user: Vec<FollowInfo>,
    /// More than 500 followers come in pages.
    #[serde(default, deserialize_with = "de::str_or_empty")]
    pub next_cursor: String,
}

/// One `external_contact_list[]` entry of `batch/get_by_user`: a contact and one of its follows.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BatchEntry {
    #[serde(default, deserialize_with = "de::opt_object")]
    pub external_contact: Option<ExternalContact>,
    #[serde(default, deserialize_with = "de::opt_object")]
    pub follow_info: Option<FollowInfo>,
}

/// A page of `externalcontact/batch/get_by_user`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BatchByUserPage {
    #[serde(default, deserialize_with = "de::objects")]
    pub external_contact_list: Vec<BatchEntry>,
    #[serde(default, deserialize_with = "de::str_or_empty")]
    pub next_cursor: String,
}

/// One `group_chat_list[]` entry of `groupchat/list`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GroupChatListEntry {
    /// Entries without one are skipped.
    #[serde(default, deserialize_with = "de::opt_str")]
    pub chat_id: Option<String>,
    /// 0 normal, 1 跟进人离职, 2 离职继承中, 3 离职继承完成.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub status: Option<i64>,
}

/// A page of `externalcontact/groupchat/list`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GroupChatListPage {
    #[serde(default, deserialize_with = "de::objects")]
    pub group_chat_list: Vec<GroupChatListEntry>,
    #[serde(default, deserialize_with = "de::str_or_empty")]
    pub next_cursor: String,
}

/// `externalcontact/groupchat/get`'s envelope.
#[derive(Debug, Deserialize)]
pub(crate) struct GroupChatAnswer {
    #[serde(default, deserialize_with = "de::opt_object")]
    pub group_chat: Option<GroupChat>,
}

/// A customer group chat (`group_chat` in `groupchat/get`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GroupChat {
    /// Without it the chat cannot be stored.
    #[serde(default, deserialize_with = "de::opt_str")]
    pub chat_id: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub name: Option<String>,
    /// The owner's userid.
    #[serde(default, deserialize_with = "de::opt_str")]
    pub owner: Option<String>,
    /// Unix seconds.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub create_time: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub notice: Option<String>,
    #[serde(default, deserialize_with = "de::objects")]
    pub member_list: Vec<GroupChatMember>,
    #[serde(default, deserialize_with = "de::objects")]
    pub admin_list: Vec<GroupChatAdmin>,
    /// Changes whenever the member list does (PROTOCOL.md §7.5).
    #[serde(default, deserialize_with = "de::opt_str")]
    pub member_version: Option<String>,
}

/// A member of a group chat.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GroupChatMember {
    /// A member's userid or a customer's external_userid; members without one are skipped.
    #[serde(default, deserialize_with = "de::opt_str")]
    pub userid: Option<String>,
    /// 1 member of the corp, 2 external contact.
    #[serde(rename = "type", default, deserialize_with = "de::opt_i64")]
    pub kind: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub join_time: Option<i64>,
    /// 1 invited directly, 2 through a link, 3 by QR code (the event's codes differ, PROTOCOL.md §6.3).
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub join_scene: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_object")]
    pub invitor: Option<GroupChatAdmin>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub group_nickname: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub unionid: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub state: Option<String>,
}

/// A userid in `admin_list[]` or `invitor`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GroupChatAdmin {
    #[serde(default, deserialize_with = "de::opt_str")]
    pub userid: Option<String>,
}

/// `externalcontact/get_corp_tag_list`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CorpTagList {
    #[serde(default, deserialize_with = "de::objects")]
    pub tag_group: Vec<CorpTagGroup>,
}

/// A tag group and its tags.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CorpTagGroup {
    #[serde(default, deserialize_with = "de::opt_str")]
    pub group_id: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub group_name: Option<String>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub create_time: Option<i64>,
    /// The group's sort order as the store reads it today (see `group_order`).
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub order: Option<i64>,
    /// The group's sort order under the name PROTOCOL.md §7.6 gives; not stored yet (the store reads `order`).
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub group_order: Option<i64>,
    #[serde(default, deserialize_with = "de::bool_or_false")]
    pub deleted: bool,
    #[serde(default, deserialize_with = "de::objects")]
    pub tag: Vec<CorpTag>,
}

/// A tag.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CorpTag {
    #[serde(default, deserialize_with = "de::opt_str")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub create_time: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub order: Option<i64>,
    #[serde(default, deserialize_with = "de::bool_or_false")]
    pub deleted: bool,
}

/// `miniprogram/jscode2session`: who logged in with `wx.qy.login`.
#[derive(Debug, Default, Deserialize)]
pub struct Jscode2Session {
    /// The user's corp; empty when WeCom sent none.
    #[serde(default, deserialize_with = "de::str_or_empty")]
    pub corpid: String,
    /// Empty when WeCom sent none.
    #[serde(default, deserialize_with = "de::str_or_empty")]
    pub userid: String,
    /// Only third-party mini-programs get it.
    #[serde(default, deserialize_with = "de::opt_str")]
    pub open_userid: Option<String>,
    /// Must never reach a client, nor a log.
    #[serde(default, deserialize_with = "de::opt_secret")]
    pub session_key: Option<SecretString>,
}
