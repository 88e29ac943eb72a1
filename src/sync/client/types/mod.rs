//! WeCom's answers, typed (docs/protocol.md §7). Tolerant the way WeCom needs: unknown fields are ignored, missing
//! ones default, and a field of an unexpected type counts as missing (see [`super::de`]).
//!
//! `serde_json::Value` remains only for what a JSONB column stores as WeCom sent it (`external_profile`), and
//! a follow's `tags` / `tag_id`, which the planner turns into one shape.
//!
//! The answers the synced tables are built from also serialise, for the API observation log
//! ([`crate::store::observations`]), and read back equal: the raw fields skip `None`, so "not sent" and
//! `null` stay apart.
//!
//! One module per concept: `contacts` (customers and follows), `chats`, `tags`, `identity`
//! (logins and id conversions), `directory` (staff and departments).

mod chats;
mod contacts;
mod directory;
mod identity;
mod tags;

pub use chats::*;
pub use contacts::*;
pub use directory::*;
pub use identity::*;
pub use tags::*;

use serde::Deserialize;

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

/// Decodes a test answer (the tests of every concept's module).
#[cfg(test)]
pub(super) fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("decodes")
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

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
}
