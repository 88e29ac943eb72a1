//! Customers and their follows: `externalcontact/get_follow_user_list`, `externalcontact/get`,
//! `batch/get_by_user`, `get_unassigned_list`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sync::client::de;

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

#[cfg(test)]
mod tests {
    use crate::sync::client::types::Paged;
    use serde_json::json;

    use super::*;
    use crate::sync::client::types::decode;

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
}
