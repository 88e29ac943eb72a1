//! Customer group chats: `groupchat/list` and `groupchat/get`.

use serde::{Deserialize, Serialize};

use crate::sync::client::de;

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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sync::client::types::{Paged, decode};

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
}
