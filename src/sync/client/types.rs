//! WeCom's answers, typed (docs/protocol.md §7). Tolerant the way WeCom needs: unknown fields are ignored, missing
//! ones default, and a field of an unexpected type counts as missing (see [`super::de`]).
//!
//! `serde_json::Value` remains only for what a JSONB column stores as WeCom sent it (`external_profile`), and
//! a follow's `tags` / `tag_id`, which the planner turns into one shape.
//!
//! The answers the synced tables are built from also serialise, for the API observation log
//! ([`crate::store::observations`]), and read back equal: the raw fields skip `None`, so "not sent" and
//! `null` stay apart.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
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
paged!(
    ExternalContactDetail,
    BatchByUserPage,
    GroupChatListPage,
    UnassignedPage,
    UserIdPage
);

/// `gettoken`.
#[derive(Debug, Deserialize)]
pub(crate) struct AccessToken {
    #[serde(default, deserialize_with = "de::opt_str")]
    pub access_token: Option<String>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub expires_in: Option<i64>,
}

/// `externalcontact/get_follow_user_list`: the members with 客户联系 enabled.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct FollowUserList {
    /// Their userids.
    #[serde(default, deserialize_with = "de::strings")]
    pub follow_user: Vec<String>,
}

/// A customer (`external_contact` in `externalcontact/get` and `batch/get_by_user`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
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
    #[serde(
        default,
        deserialize_with = "de::raw",
        skip_serializing_if = "Option::is_none"
    )]
    pub external_profile: Option<Value>,
}

/// A follow relation: `follow_user[]` in `externalcontact/get`, `follow_info` in `batch/get_by_user`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
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
    /// Raw JSON on purpose: `externalcontact/get` sends `tags[]{group_name, tag_name, type, tag_id}`; the
    /// planner stores it in the one shape of `external_contact_follows.tags` (`plan::tag_objects`).
    #[serde(
        default,
        deserialize_with = "de::raw",
        skip_serializing_if = "Option::is_none"
    )]
    pub tags: Option<Value>,
    /// Raw JSON on purpose: `batch/get_by_user` sends `tag_id[]` (ids only) instead of `tags`; the planner turns
    /// the ids into the same objects, named from `external_corp_tags` where known (`plan::tag_objects`).
    #[serde(
        default,
        deserialize_with = "de::raw",
        skip_serializing_if = "Option::is_none"
    )]
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
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct BatchEntry {
    #[serde(default, deserialize_with = "de::opt_object")]
    pub external_contact: Option<ExternalContact>,
    #[serde(default, deserialize_with = "de::opt_object")]
    pub follow_info: Option<FollowInfo>,
}

/// A page of `externalcontact/batch/get_by_user`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct BatchByUserPage {
    #[serde(default, deserialize_with = "de::objects")]
    pub external_contact_list: Vec<BatchEntry>,
    #[serde(default, deserialize_with = "de::str_or_empty")]
    pub next_cursor: String,
    /// The members WeCom did not answer for (docs/protocol.md §7.2): their follows are not in the list.
    #[serde(default, deserialize_with = "de::opt_object")]
    pub fail_info: Option<BatchFailInfo>,
}

/// `fail_info` of `batch/get_by_user`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct BatchFailInfo {
    /// Members without a 客户联系 licence: WeCom lists none of their follows (they still have them).
    #[serde(default, deserialize_with = "de::strings")]
    pub unlicensed_userid_list: Vec<String>,
}

/// One `group_chat_list[]` entry of `groupchat/list`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct GroupChatListEntry {
    /// Entries without one are skipped.
    #[serde(default, deserialize_with = "de::opt_str")]
    pub chat_id: Option<String>,
    /// 0 normal, 1 跟进人离职, 2 离职继承中, 3 离职继承完成.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub status: Option<i64>,
}

/// A page of `externalcontact/groupchat/list`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct GroupChatListPage {
    #[serde(default, deserialize_with = "de::objects")]
    pub group_chat_list: Vec<GroupChatListEntry>,
    #[serde(default, deserialize_with = "de::str_or_empty")]
    pub next_cursor: String,
}

/// One `info[]` entry of `externalcontact/get_unassigned_list`: a customer of a member who left the corp,
/// waiting for 离职继承 (reassignment).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UnassignedEntry {
    /// The member who left.
    #[serde(default, deserialize_with = "de::opt_str")]
    pub handover_userid: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub external_userid: Option<String>,
    /// When the member left (unix seconds).
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub dimission_time: Option<i64>,
}

/// A page of `externalcontact/get_unassigned_list`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UnassignedPage {
    #[serde(default, deserialize_with = "de::objects")]
    pub info: Vec<UnassignedEntry>,
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
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
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
    /// Changes whenever the member list does (docs/protocol.md §7.3).
    #[serde(default, deserialize_with = "de::opt_str")]
    pub member_version: Option<String>,
}

/// A member of a group chat.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct GroupChatMember {
    /// A member's userid or a customer's external_userid; members without one are skipped.
    #[serde(default, deserialize_with = "de::opt_str")]
    pub userid: Option<String>,
    /// 1 member of the corp, 2 external contact.
    #[serde(rename = "type", default, deserialize_with = "de::opt_i64")]
    pub kind: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub join_time: Option<i64>,
    /// 1 invited directly, 2 through a link, 3 by QR code (the event's codes differ, docs/protocol.md §6.2).
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
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct GroupChatAdmin {
    #[serde(default, deserialize_with = "de::opt_str")]
    pub userid: Option<String>,
}

/// `externalcontact/get_corp_tag_list`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct CorpTagList {
    #[serde(default, deserialize_with = "de::objects")]
    pub tag_group: Vec<CorpTagGroup>,
}

/// A tag group and its tags.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct CorpTagGroup {
    #[serde(default, deserialize_with = "de::opt_str")]
    pub group_id: Option<String>,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub group_name: Option<String>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub create_time: Option<i64>,
    /// The group's sort order under the name some answers use (see `group_order`).
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub order: Option<i64>,
    /// The group's sort order under the name docs/protocol.md §7.4 gives; preferred over `order` when both come.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub group_order: Option<i64>,
    /// The rule group (规则组) of a group from `get_strategy_tag_list`; `None` for corp tags.
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub strategy_id: Option<i64>,
    #[serde(default, deserialize_with = "de::bool_or_false")]
    pub deleted: bool,
    #[serde(default, deserialize_with = "de::objects")]
    pub tag: Vec<CorpTag>,
}

/// A tag.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
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

// Customer identity (issue 13).

/// `externalcontact/unionid_to_external_userid` (self-built) or `idconvert/unionid_to_external_userid`
/// (third-party, 代开发): the customer a WeChat unionid is, or the pending id while it is none yet.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UnionidConversion {
    /// Set when the person is a customer of the corp; an empty string counts as none.
    #[serde(default, deserialize_with = "de::opt_str")]
    pub external_userid: Option<String>,
    /// Set when the person is not a customer yet (valid 90 days); an empty string counts as none.
    #[serde(default, deserialize_with = "de::opt_str")]
    pub pending_id: Option<String>,
}

/// `idconvert/batch/external_userid_to_pending_id`: the pending ids of up to 100 customers.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PendingIdList {
    /// Only customers that have a pending id are listed.
    #[serde(default, deserialize_with = "de::objects")]
    pub result: Vec<PendingIdPair>,
}

/// One `result[]` entry of `idconvert/batch/external_userid_to_pending_id`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PendingIdPair {
    #[serde(default, deserialize_with = "de::str_or_empty")]
    pub external_userid: String,
    #[serde(default, deserialize_with = "de::str_or_empty")]
    pub pending_id: String,
}

/// A member as `user/get` answers (通讯录). Since 2022 WeCom omits what the secret may not read (a new
/// self-built app gets little more than `userid`, `name` and `position`): every field is optional, and an
/// absent field is recorded as unavailable rather than as empty.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct StaffMember {
    #[serde(default, deserialize_with = "de::str_or_empty")]
    pub userid: String,
    #[serde(
        default,
        deserialize_with = "de::opt_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<String>,
    /// Department ids; `None` when not sent.
    #[serde(
        default,
        deserialize_with = "de::raw",
        skip_serializing_if = "Option::is_none"
    )]
    pub department: Option<Value>,
    #[serde(
        default,
        deserialize_with = "de::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub main_department: Option<i64>,
    #[serde(
        default,
        deserialize_with = "de::opt_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub position: Option<String>,
    /// 1 active, 2 disabled, 4 not activated, 5 left.
    #[serde(
        default,
        deserialize_with = "de::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<i64>,
    #[serde(
        default,
        deserialize_with = "de::opt_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub open_userid: Option<String>,
}

impl StaffMember {
    /// The department ids, when WeCom sent a list (ids that are not integers are skipped).
    pub fn department_ids(&self) -> Option<Vec<i64>> {
        match &self.department {
            Some(Value::Array(items)) => Some(items.iter().filter_map(Value::as_i64).collect()),
            _ => None,
        }
    }
}

/// A department as `department/list` answers.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Department {
    #[serde(
        default,
        deserialize_with = "de::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<i64>,
    #[serde(
        default,
        deserialize_with = "de::opt_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<String>,
    #[serde(
        default,
        deserialize_with = "de::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub parentid: Option<i64>,
    #[serde(
        default,
        deserialize_with = "de::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub order: Option<i64>,
}

/// `department/list`'s envelope.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct DepartmentList {
    #[serde(default, deserialize_with = "de::objects")]
    pub department: Vec<Department>,
}

/// One entry of `user/list_id`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeptUser {
    #[serde(default, deserialize_with = "de::str_or_empty")]
    pub userid: String,
    #[serde(default, deserialize_with = "de::opt_i64")]
    pub department: Option<i64>,
}

/// A page of `user/list_id`.
#[derive(Debug, Default, Deserialize)]
pub struct UserIdPage {
    #[serde(default, deserialize_with = "de::str_or_empty")]
    pub next_cursor: String,
    #[serde(default, deserialize_with = "de::objects")]
    pub dept_user: Vec<DeptUser>,
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;

    fn decode<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).expect("decodes")
    }

    #[test]
    fn follow_user_list_keeps_only_userids() {
        let l: FollowUserList = decode(json!({
            "errcode": 0, "errmsg": "ok", "follow_user": ["zhangsan", 7, "lisi"], "new_field": {"x": 1}
        }));
        assert_eq!(l.follow_user, vec!["zhangsan", "lisi"]);
        let l: FollowUserList = decode(json!({"errcode": 0, "errmsg": "ok"}));
        assert!(l.follow_user.is_empty());
    }

    #[test]
    fn external_contact_detail_decodes_a_full_answer() {
        let d: ExternalContactDetail = decode(json!({
            "errcode": 0, "errmsg": "ok",
            "external_contact": {
                "external_userid": "woAJ2GCAAAXtWyujaWJHDDGi0mACHAAA", "name": "李雷", "position": "Manager",
                "avatar": "http://p.qlogo.cn/bizmail/x/0", "corp_name": "腾讯", "corp_full_name": "腾讯科技有限公司",
                "type": 2, "gender": 1, "unionid": "ozynqsulJFCZ2z1aYeS8h-nuasdAAA",
                "external_profile": {"external_attr": [{"type": 0, "name": "文本名称", "text": {"value": "文本"}}]},
                "brand_new": true
            },
            "follow_user": [{
                "userid": "rocky", "remark": "李部长", "description": "对接采购事务", "createtime": 1525779812,
                "tags": [{"group_name": "标签分组名称", "tag_name": "标签名称", "tag_id": "etAJ2GCAAAXtWyujaWJHDDGi0mACHAAA", "type": 1}],
                "remark_corp_name": "腾讯科技", "remark_mobiles": ["13800000001", "13000000002"],
                "oper_userid": "rocky", "add_way": 1, "state": "外联二维码1",
                "wechat_channels": {"nickname": "视频号名称", "source": 0}
            }, {"userid": "tommy", "createtime": 1525881637}],
            "next_cursor": "NEXT"
        }));
        let c = d.external_contact.expect("contact");
        assert_eq!(
            c.external_userid.as_deref(),
            Some("woAJ2GCAAAXtWyujaWJHDDGi0mACHAAA")
        );
        assert_eq!((c.kind, c.gender), (Some(2), Some(1)));
        assert_eq!(c.corp_full_name.as_deref(), Some("腾讯科技有限公司"));
        assert_eq!(
            c.external_profile.expect("profile")["external_attr"][0]["name"],
            "文本名称"
        );
        assert_eq!(d.follow_user.len(), 2);
        let f = &d.follow_user[0];
        assert_eq!(f.userid.as_deref(), Some("rocky"));
        assert_eq!(f.createtime, Some(1525779812));
        assert_eq!(
            f.tags.as_ref().expect("tags")[0]["tag_id"],
            "etAJ2GCAAAXtWyujaWJHDDGi0mACHAAA"
        );
        assert!(f.tag_id.is_none());
        assert_eq!(
            f.remark_mobiles.as_deref(),
            Some(&["13800000001".to_owned(), "13000000002".to_owned()][..])
        );
        assert_eq!(
            (f.add_way, f.state.as_deref()),
            (Some(1), Some("外联二维码1"))
        );
        // Missing optional fields default.
        let t = &d.follow_user[1];
        assert_eq!(t.userid.as_deref(), Some("tommy"));
        assert!(t.remark.is_none() && t.tags.is_none() && t.remark_mobiles.is_none());
        assert_eq!(d.next_cursor, "NEXT");
    }

    #[test]
    fn odd_fields_count_as_missing_and_null_is_kept_for_jsonb() {
        let d: ExternalContactDetail = decode(json!({
            "external_contact": {"external_userid": "wm1", "type": "2", "gender": 1.5, "name": 3,
                                 "external_profile": null},
            "follow_user": [{"userid": "a", "remark_mobiles": "138", "tags": null, "createtime": "1525779812"},
                            "not an object", ["a"]],
            "next_cursor": null
        }));
        let c = d.external_contact.expect("contact");
        assert_eq!((c.kind, c.gender, c.name), (None, None, None));
        assert_eq!(
            c.external_profile,
            Some(Value::Null),
            "stored as JSON null, as before"
        );
        assert_eq!(
            d.follow_user.len(),
            1,
            "elements that are not objects are skipped"
        );
        let f = &d.follow_user[0];
        assert_eq!(f.remark_mobiles, None);
        assert_eq!(f.tags, Some(Value::Null));
        assert_eq!(f.createtime, None);
        assert_eq!(d.next_cursor, "");

        // Nothing at all: no contact, no followers, the last page.
        let d: ExternalContactDetail = decode(json!({"errcode": 0, "errmsg": "ok"}));
        assert!(d.external_contact.is_none() && d.follow_user.is_empty());
        assert_eq!(d.next_cursor(), "");
        let d: ExternalContactDetail = decode(json!({"external_contact": "x", "follow_user": {}}));
        assert!(d.external_contact.is_none() && d.follow_user.is_empty());
    }

    #[test]
    fn batch_by_user_page_decodes_entries_with_tag_ids() {
        let p: BatchByUserPage = decode(json!({
            "errcode": 0, "errmsg": "ok",
            "external_contact_list": [
                {"external_contact": {"external_userid": "wmC1", "name": "n", "type": 1, "gender": 2},
                 "follow_info": {"userid": "alice", "remark": "r", "description": "d", "createtime": 1700000000,
                                 "tag_id": ["et1", "et2"], "remark_corp_name": "c", "remark_mobiles": [],
                                 "oper_userid": "alice", "add_way": 3, "state": "s", "unknown": 1}},
                {"external_contact": {"external_userid": "wmC2"}},
                {"follow_info": {"userid": "bob"}}
            ],
            "next_cursor": "c2"
        }));
        assert_eq!(p.external_contact_list.len(), 3);
        let e = &p.external_contact_list[0];
        let f = e.follow_info.as_ref().expect("follow");
        assert_eq!(f.tag_id, Some(json!(["et1", "et2"])));
        assert!(f.tags.is_none());
        assert_eq!(f.remark_mobiles.as_deref(), Some(&[][..]));
        assert_eq!(f.add_way, Some(3));
        assert!(p.external_contact_list[1].follow_info.is_none());
        assert!(p.external_contact_list[2].external_contact.is_none());
        assert_eq!(p.next_cursor(), "c2");
        let p: BatchByUserPage = decode(json!({"errcode": 0}));
        assert!(p.external_contact_list.is_empty() && p.next_cursor.is_empty());
    }

    #[test]
    fn group_chat_list_page_decodes() {
        let p: GroupChatListPage = decode(json!({
            "errcode": 0, "errmsg": "ok",
            "group_chat_list": [{"chat_id": "wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA", "status": 0}, {"status": 1}],
            "next_cursor": "tJzlB9tdqfh-g7i_J-ehOz_TWcd7dSKa39_AqCIeMFw"
        }));
        assert_eq!(
            p.group_chat_list[0].chat_id.as_deref(),
            Some("wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA")
        );
        assert_eq!(p.group_chat_list[1].chat_id, None);
        assert_eq!(
            p.next_cursor(),
            "tJzlB9tdqfh-g7i_J-ehOz_TWcd7dSKa39_AqCIeMFw"
        );
    }

    #[test]
    fn group_chat_decodes_members_and_admins() {
        let a: GroupChatAnswer = decode(json!({
            "errcode": 0, "errmsg": "ok",
            "group_chat": {
                "chat_id": "wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA", "name": "销售客服群", "owner": "ZhuShengBen",
                "create_time": 1572505490, "notice": "文档详情",
                "member_list": [
                    {"userid": "abel", "type": 1, "join_time": 1572505491, "join_scene": 1,
                     "invitor": {"userid": "jack"}, "group_nickname": "客服小张", "name": "张三丰"},
                    {"userid": "wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA", "type": 2, "unionid": "ozynqsulJFCZ2z1aYeS8h-nuasdAAA",
                     "join_time": 1572505491, "join_scene": 1, "group_nickname": "顾客老王", "name": "王语嫣",
                     "state": "state1"},
                    {"type": 2}
                ],
                "admin_list": [{"userid": "sam"}, {"userid": "pony"}],
                "member_version": "71217227bbd112ecfe3a49c482195cb4"
            }
        }));
        let g = a.group_chat.expect("chat");
        assert_eq!(g.create_time, Some(1572505490));
        assert_eq!(g.member_list.len(), 3);
        assert_eq!(
            g.member_list[0]
                .invitor
                .as_ref()
                .and_then(|i| i.userid.as_deref()),
            Some("jack")
        );
        assert_eq!(g.member_list[1].state.as_deref(), Some("state1"));
        assert_eq!(g.member_list[2].userid, None);
        assert_eq!(g.admin_list.len(), 2);
        assert_eq!(
            g.member_version.as_deref(),
            Some("71217227bbd112ecfe3a49c482195cb4")
        );
        let a: GroupChatAnswer = decode(json!({"errcode": 0, "errmsg": "ok"}));
        assert!(a.group_chat.is_none());
        let a: GroupChatAnswer = decode(json!({"group_chat": {"chat_id": "wr1"}}));
        let g = a.group_chat.expect("chat");
        assert!(g.member_list.is_empty() && g.member_version.is_none() && g.name.is_none());
    }

    #[test]
    fn corp_tag_list_decodes() {
        let l: CorpTagList = decode(json!({
            "errcode": 0, "errmsg": "ok",
            "tag_group": [{
                "group_id": "TAG_GROUPID1", "group_name": "GOURP_NAME", "create_time": 1557838797,
                "order": 1, "group_order": 2, "deleted": false,
                "tag": [
                    {"id": "TAG_ID1", "name": "NAME1", "create_time": 1557838797, "order": 1, "deleted": false},
                    {"id": "TAG_ID2", "name": "NAME2", "create_time": 1557838797, "order": 2, "deleted": true}
                ]
            }, {"group_name": "no id", "deleted": "yes"}]
        }));
        let g = &l.tag_group[0];
        assert_eq!(g.group_id.as_deref(), Some("TAG_GROUPID1"));
        assert_eq!(
            (g.order, g.group_order, g.deleted),
            (Some(1), Some(2), false)
        );
        assert_eq!(g.tag.len(), 2);
        assert!(g.tag[1].deleted);
        assert_eq!(g.tag[1].id.as_deref(), Some("TAG_ID2"));
        let odd = &l.tag_group[1];
        assert!(odd.group_id.is_none() && !odd.deleted && odd.tag.is_empty());
        let l: CorpTagList = decode(json!({"errcode": 0, "errmsg": "ok"}));
        assert!(l.tag_group.is_empty());
    }

    #[test]
    fn jscode2session_decodes_and_hides_the_session_key() {
        let s: Jscode2Session = decode(json!({
            "corpid": "CORPID", "userid": "USERID", "session_key": "kJtdi6RF+Dv67QkbLlPGjw==",
            "errcode": 0, "errmsg": "ok", "extra": [1]
        }));
        assert_eq!((s.corpid.as_str(), s.userid.as_str()), ("CORPID", "USERID"));
        assert!(s.open_userid.is_none());
        assert_eq!(
            s.session_key.as_ref().map(|k| k.expose_secret().to_owned()),
            Some("kJtdi6RF+Dv67QkbLlPGjw==".to_owned())
        );
        assert!(!format!("{s:?}").contains("kJtdi6RF"), "never in Debug");
        let s: Jscode2Session = decode(json!({"errcode": 0, "open_userid": "ou1", "corpid": 1}));
        assert_eq!((s.corpid.as_str(), s.userid.as_str()), ("", ""));
        assert_eq!(s.open_userid.as_deref(), Some("ou1"));
        assert!(s.session_key.is_none());
    }

    #[test]
    fn identity_answers_decode() {
        let c: UnionidConversion =
            decode(json!({"errcode": 0, "errmsg": "ok", "pending_id": "p1", "external_userid": 3}));
        assert_eq!(c.pending_id.as_deref(), Some("p1"));
        assert!(c.external_userid.is_none());
        let l: PendingIdList = decode(json!({"errcode": 0, "result": [
            {"external_userid": "wmE1", "pending_id": "p1"}, "junk", {"pending_id": "p2"}]}));
        assert_eq!(l.result.len(), 2);
        assert_eq!(
            (
                l.result[0].external_userid.as_str(),
                l.result[0].pending_id.as_str()
            ),
            ("wmE1", "p1")
        );
        assert_eq!(l.result[1].external_userid, "");
    }

    #[test]
    fn gettoken_decodes() {
        let t: AccessToken = decode(
            json!({"errcode": 0, "errmsg": "ok", "access_token": "accesstoken000001", "expires_in": 7200}),
        );
        assert_eq!(t.access_token.as_deref(), Some("accesstoken000001"));
        assert_eq!(t.expires_in, Some(7200));
        let t: AccessToken = decode(json!({"errcode": 0}));
        assert!(t.access_token.is_none() && t.expires_in.is_none());
    }

    #[test]
    fn decoding_from_bytes_matches_decoding_from_a_value() {
        // The client decodes from the response bytes (visit_* straight from the parser), the tests above from a
        // Value: both must agree, numbers beyond i64 included.
        let text = r#"{"external_contact":{"external_userid":"wm1","type":18446744073709551615,"gender":-1},
                       "follow_user":[{"userid":"a","add_way":1.0}],"next_cursor":"n"}"#;
        let d: ExternalContactDetail = serde_json::from_str(text).expect("decodes");
        let c = d.external_contact.expect("contact");
        assert_eq!((c.kind, c.gender), (None, Some(-1)));
        assert_eq!(d.follow_user[0].add_way, None);
        assert_eq!(d.next_cursor, "n");
    }

    /// The service's accessors before the typed client, kept here to prove the typed answers read every field
    /// exactly as they did (so the stored rows stay the same).
    mod legacy {
        use serde_json::Value;

        pub fn text(v: &Value, key: &str) -> Option<String> {
            v.get(key).and_then(Value::as_str).map(str::to_owned)
        }
        pub fn int(v: &Value, key: &str) -> Option<i64> {
            v.get(key).and_then(Value::as_i64)
        }
        pub fn mobiles(f: &Value) -> Option<Vec<String>> {
            f.get("remark_mobiles").and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
        }
    }

    fn pool() -> Vec<Value> {
        vec![
            Value::Null,
            json!(true),
            json!(false),
            json!(0),
            json!(-3),
            json!(1_700_000_000),
            json!(u64::MAX),
            json!(1.5),
            json!(""),
            json!("s"),
            json!("中文"),
            json!([]),
            json!(["a", 2, "b", null]),
            json!({}),
            json!({"userid": "u", "x": [1, 2.5]}),
        ]
    }

    /// An object with each of `keys` absent or set to one of [`pool`]'s values.
    fn object(keys: &'static [&'static str]) -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        proptest::collection::vec(proptest::option::of(0..pool().len()), keys.len()).prop_map(
            move |picks| {
                let pool = pool();
                let mut m = serde_json::Map::new();
                for (k, p) in keys.iter().zip(picks) {
                    if let Some(i) = p {
                        m.insert((*k).to_owned(), pool[i].clone());
                    }
                }
                Value::Object(m)
            },
        )
    }

    const CONTACT: &[&str] = &[
        "external_userid",
        "name",
        "avatar",
        "type",
        "gender",
        "unionid",
        "position",
        "corp_name",
        "corp_full_name",
        "external_profile",
    ];
    const FOLLOW: &[&str] = &[
        "userid",
        "remark",
        "description",
        "createtime",
        "tags",
        "tag_id",
        "remark_mobiles",
        "oper_userid",
        "add_way",
        "state",
    ];
    const CHAT: &[&str] = &[
        "chat_id",
        "name",
        "owner",
        "create_time",
        "notice",
        "member_version",
        "member_list",
    ];
    const TAG: &[&str] = &[
        "group_id",
        "id",
        "group_name",
        "name",
        "order",
        "deleted",
        "tag",
    ];

    fn same_contact(old: &Value, new: &ExternalContact) {
        use legacy::{int, text};
        assert_eq!(text(old, "external_userid"), new.external_userid);
        assert_eq!(text(old, "name"), new.name);
        assert_eq!(text(old, "avatar"), new.avatar);
        assert_eq!(int(old, "type"), new.kind);
        assert_eq!(int(old, "gender"), new.gender);
        assert_eq!(text(old, "unionid"), new.unionid);
        assert_eq!(text(old, "position"), new.position);
        assert_eq!(text(old, "corp_name"), new.corp_name);
        assert_eq!(text(old, "corp_full_name"), new.corp_full_name);
        assert_eq!(old.get("external_profile").cloned(), new.external_profile);
    }

    fn same_follow(old: &Value, new: &FollowInfo) {
        use legacy::{int, mobiles, text};
        assert_eq!(text(old, "userid"), new.userid);
        assert_eq!(text(old, "remark"), new.remark);
        assert_eq!(text(old, "description"), new.description);
        assert_eq!(int(old, "createtime"), new.createtime);
        assert_eq!(old.get("tags").cloned(), new.tags);
        assert_eq!(
            old.get("tag_id").or_else(|| old.get("tags")).cloned(),
            new.tag_id.clone().or(new.tags.clone())
        );
        assert_eq!(mobiles(old), new.remark_mobiles);
        assert_eq!(text(old, "oper_userid"), new.oper_userid);
        assert_eq!(int(old, "add_way"), new.add_way);
        assert_eq!(text(old, "state"), new.state);
    }

    proptest::proptest! {
        /// Decoded from the bytes, as the client does; compared with the old accessors on the same bytes.
        #[test]
        fn typed_answers_read_fields_exactly_as_the_old_accessors(
            contact in object(CONTACT),
            follow in object(FOLLOW),
            chat in object(CHAT),
            group in object(TAG),
            tag in object(TAG),
        ) {
            let mut group = group;
            if let Some(m) = group.as_object_mut() {
                m.insert("tag".into(), json!([tag, 5]));
            }
            let bytes = serde_json::to_string(&json!({
                "external_contact": contact, "follow_user": [follow, "x"],
                "group_chat": chat, "tag_group": [group],
            }))
            .expect("encodes");
            let old: Value = serde_json::from_str(&bytes).expect("json");

            let new: ExternalContactDetail = serde_json::from_str(&bytes).expect("decodes");
            same_contact(&old["external_contact"], new.external_contact.as_ref().expect("an object"));
            assert_eq!(new.follow_user.len(), 1, "the string element is skipped, as before");
            same_follow(&old["follow_user"][0], &new.follow_user[0]);

            let entry: BatchEntry = serde_json::from_str(
                &serde_json::to_string(&json!({"external_contact": old["external_contact"], "follow_info": old["follow_user"][0]}))
                    .expect("encodes"),
            )
            .expect("decodes");
            same_contact(&old["external_contact"], entry.external_contact.as_ref().expect("contact"));
            same_follow(&old["follow_user"][0], entry.follow_info.as_ref().expect("follow"));

            let answer: GroupChatAnswer = serde_json::from_str(&bytes).expect("decodes");
            let (c, g) = (&old["group_chat"], answer.group_chat.expect("an object"));
            assert_eq!(legacy::text(c, "chat_id"), g.chat_id);
            assert_eq!(legacy::text(c, "name"), g.name);
            assert_eq!(legacy::text(c, "owner"), g.owner);
            assert_eq!(legacy::int(c, "create_time"), g.create_time);
            assert_eq!(legacy::text(c, "notice"), g.notice);
            assert_eq!(legacy::text(c, "member_version"), g.member_version);
            let members: Vec<String> = c
                .get("member_list")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|m| legacy::text(m, "userid"))
                .collect();
            let typed: Vec<String> = g.member_list.iter().filter_map(|m| m.userid.clone()).collect();
            assert_eq!(members, typed);

            let tags: CorpTagList = serde_json::from_str(&bytes).expect("decodes");
            let (og, ng) = (&old["tag_group"][0], &tags.tag_group[0]);
            assert_eq!(legacy::text(og, "group_id"), ng.group_id);
            assert_eq!(legacy::text(og, "group_name"), ng.group_name);
            assert_eq!(legacy::int(og, "order"), ng.order);
            assert_eq!(og.get("deleted").and_then(Value::as_bool).unwrap_or(false), ng.deleted);
            assert_eq!(ng.tag.len(), 1, "the number element is skipped, as before");
            let (ot, nt) = (&og["tag"][0], &ng.tag[0]);
            assert_eq!(legacy::text(ot, "id"), nt.id);
            assert_eq!(legacy::text(ot, "name"), nt.name);
            assert_eq!(legacy::int(ot, "order"), nt.order);
            assert_eq!(ot.get("deleted").and_then(Value::as_bool).unwrap_or(false), nt.deleted);
        }
    }

    #[test]
    fn a_restricted_user_get_answer_leaves_the_unreadable_fields_absent() {
        let m: StaffMember =
            decode(json!({"errcode": 0, "userid": "zhangsan", "name": "张三", "position": ""}));
        assert_eq!(m.name.as_deref(), Some("张三"));
        assert_eq!(m.position.as_deref(), Some(""));
        assert!(m.department_ids().is_none() && m.status.is_none());
        let m: StaffMember =
            decode(json!({"userid": "u", "department": [1, "x", 3], "main_department": 3}));
        assert_eq!(m.department_ids(), Some(vec![1, 3]));
    }
}
