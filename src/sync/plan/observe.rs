//! Planning from API observations (`externalcontact/get`, `batch/get_by_user`): what WeCom listed, as
//! register writes that events outrank where they should, and the one shape of a follow's tags.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::domain::FollowStatus;
use crate::sync::client::types::{ExternalContact, ExternalContactDetail, FollowInfo};
use crate::sync::plan::{
    ContactDetailWrite, FollowAdd, FollowDetail, FollowState, FollowWrite, LastChange, Plan,
    Version,
};

/// Known corp tags by id, read from `external_corp_tags` by the store: (tag name, group name, rule group).
pub type TagNames = HashMap<String, KnownTag>;

/// What `external_corp_tags` knows of a tag, to name the ids `batch/get_by_user` sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownTag {
    pub tag_name: Option<String>,
    pub group_name: Option<String>,
    /// Whether the tag belongs to a rule group (规则组), WeCom's tag `type` 3; otherwise 1 (corp tag).
    pub rule_group: bool,
}

fn str_field(o: &serde_json::Map<String, Value>, k: &str) -> Value {
    match o.get(k) {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Number(n)) => Value::String(n.to_string()),
        _ => Value::Null,
    }
}

/// The one shape of `external_contact_follows.tags`: an array of
/// `{"tag_id", "type", "tag_name", "group_name"}` objects. `externalcontact/get` sends `tags` objects with
/// names; `batch/get_by_user` sends `tag_id` strings only, named here from `known` where the tag is known
/// (else the names and type are null). Anything else in the array is dropped; no list gives `None`.
pub fn tag_objects(
    tags: Option<&Value>,
    tag_ids: Option<&Value>,
    known: &TagNames,
) -> Option<Value> {
    let list = match (tags, tag_ids) {
        (Some(Value::Array(a)), _) => a,
        (_, Some(Value::Array(a))) => a,
        _ => return None,
    };
    let objects = list
        .iter()
        .filter_map(|t| match t {
            Value::Object(o) => {
                let id = str_field(o, "tag_id");
                if id.is_null() {
                    return None;
                }
                let kind = match o.get("type") {
                    Some(Value::Number(n)) => n.as_i64().map_or(Value::Null, Value::from),
                    Some(Value::String(s)) => s.parse::<i64>().map_or(Value::Null, Value::from),
                    _ => Value::Null,
                };
                Some(json!({
                    "tag_id": id,
                    "type": kind,
                    "tag_name": str_field(o, "tag_name"),
                    "group_name": str_field(o, "group_name"),
                }))
            }
            Value::String(id) => {
                let k = known.get(id);
                Some(json!({
                    "tag_id": id,
                    "type": k.map(|k| if k.rule_group { 3 } else { 1 }),
                    "tag_name": k.and_then(|k| k.tag_name.clone()),
                    "group_name": k.and_then(|k| k.group_name.clone()),
                }))
            }
            _ => None,
        })
        .collect();
    Some(Value::Array(objects))
}

/// The change type an observation's row gets when it creates the row (events then decide it).
pub const API_SYNC: &str = "api_sync";
/// The change type a resync's row gets when it creates the row.
pub const RESYNC: &str = "resync";

fn observe_customer(
    corp_id: &str,
    contact: &ExternalContact,
    fetched_at: DateTime<Utc>,
) -> Option<ContactDetailWrite> {
    Some(ContactDetailWrite {
        corp_id: corp_id.to_owned(),
        external_userid: contact.external_userid.clone()?,
        version: Version::fetched(fetched_at),
        name: contact.name.clone(),
        avatar: contact.avatar.clone(),
        kind: contact.kind,
        gender: contact.gender,
        unionid: contact.unionid.clone(),
        position: contact.position.clone(),
        corp_name: contact.corp_name.clone(),
        corp_full_name: contact.corp_full_name.clone(),
        external_profile: contact.external_profile.clone(),
        synced_at: fetched_at,
    })
}

/// One follow relation WeCom lists, as register writes:
/// - status `active`, versioned by the relation's `createtime` ([`Version::observed`]): a deletion event at or
///   after `createtime` keeps winning (WeCom keeps listing a one-way relation after `del_follow_user`), and a
///   relation created after the deletion (a re-add) wins over it. Without a `createtime` the status is a
///   placeholder: it creates an `active` row when there is none and overrides nothing. A follow the resync
///   swept as `removed` is active again (see [`FollowState::listed`]).
/// - the add register (`state`, `added_at`) at the same version, so the newest relation's channel shows;
/// - the detail register at the fetch time.
fn observe_follow(
    corp_id: &str,
    external_userid: &str,
    f: &FollowInfo,
    fetched_at: DateTime<Utc>,
    tags: Option<Value>,
    change: &str,
    resync_run: Option<i64>,
) -> Option<FollowWrite> {
    let userid = f.userid.clone()?;
    let version = f
        .createtime
        .map_or_else(Version::placeholder, Version::observed);
    Some(FollowWrite {
        corp_id: corp_id.to_owned(),
        userid,
        external_userid: external_userid.to_owned(),
        state: FollowState {
            version: version.clone(),
            status: FollowStatus::Active,
            deleted_at: None,
            delete_source: None,
            listed: Some(Version::fetched(fetched_at)),
        },
        add: f.createtime.map(|t| FollowAdd {
            version,
            state: f.state.clone(),
            welcome_code: None,
            added_at: t,
        }),
        detail: Some(FollowDetail {
            version: Version::fetched(fetched_at),
            remark: f.remark.clone(),
            description: f.description.clone(),
            remark_mobiles: f.remark_mobiles.clone(),
            add_way: f.add_way,
            oper_userid: f.oper_userid.clone(),
            tags,
            synced_at: fetched_at,
        }),
        resync_run,
        // Only names the row when the observation creates it: any event outranks it.
        last: LastChange {
            version: Version::placeholder(),
            change_type: change.to_owned(),
            at: fetched_at.timestamp(),
            event_id: None,
        },
    })
}

/// What `externalcontact/get` answered at `fetched_at`: the customer's details and every follow relation
/// WeCom lists, as register writes (see [`observe_follow`] for the rules).
pub fn observe_contact(
    corp_id: &str,
    answer: &ExternalContactDetail,
    fetched_at: DateTime<Utc>,
) -> Plan {
    let mut plan = Plan::default();
    let Some(contact) = &answer.external_contact else {
        return plan;
    };
    let Some(detail) = observe_customer(corp_id, contact, fetched_at) else {
        return plan;
    };
    let none = TagNames::new();
    for f in &answer.follow_user {
        let tags = tag_objects(f.tags.as_ref(), f.tag_id.as_ref(), &none);
        plan.follows.extend(observe_follow(
            corp_id,
            &detail.external_userid,
            f,
            fetched_at,
            tags,
            API_SYNC,
            None,
        ));
    }
    plan.contact_details.push(detail);
    plan
}

/// One `batch/get_by_user` entry (a customer and one follow) seen by resync run `run_id` at `fetched_at`;
/// `known` names the tag ids WeCom sends there.
pub fn observe_follow_entry(
    corp_id: &str,
    contact: &ExternalContact,
    follow: &FollowInfo,
    fetched_at: DateTime<Utc>,
    run_id: i64,
    known: &TagNames,
) -> Plan {
    let mut plan = Plan::default();
    let Some(detail) = observe_customer(corp_id, contact, fetched_at) else {
        return plan;
    };
    let tags = tag_objects(follow.tags.as_ref(), follow.tag_id.as_ref(), known);
    plan.follows.extend(observe_follow(
        corp_id,
        &detail.external_userid,
        follow,
        fetched_at,
        tags,
        RESYNC,
        Some(run_id),
    ));
    plan.contact_details.push(detail);
    plan
}

/// The NOTIFY payload for a follow status an API observation changed (`previous` is `None` when it created
/// the row): the same fields as an event's, with `source` `api` and no event.
pub fn api_status_notification(f: &FollowWrite, previous: Option<&str>, status: &str) -> Value {
    json!({
        "kind": "contact",
        "source": "api",
        "corp_id": f.corp_id,
        "external_userid": f.external_userid,
        "userid": f.userid,
        "change": f.last.change_type,
        "event_id": Value::Null,
        "status": status,
        "previous_status": previous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::plan::Batch;
    use crate::sync::plan::fixtures::{at, listed};

    #[test]
    fn both_writers_store_one_tags_shape() {
        let from_get = tag_objects(
            Some(&json!([{"group_name": "等级", "tag_name": "A", "tag_id": "etA", "type": 1}])),
            None,
            &TagNames::new(),
        );
        let known: TagNames = [(
            "etA".to_owned(),
            KnownTag {
                tag_name: Some("A".into()),
                group_name: Some("等级".into()),
                rule_group: false,
            },
        )]
        .into();
        let from_batch = tag_objects(None, Some(&json!(["etA"])), &known);
        assert_eq!(from_get, from_batch);
        assert_eq!(
            tag_objects(None, Some(&json!(["etX"])), &known),
            Some(json!([{"tag_id": "etX", "type": null, "tag_name": null, "group_name": null}]))
        );
        assert_eq!(tag_objects(None, None, &known), None);
    }

    #[test]
    fn an_older_fetch_never_overwrites_a_newer_one() {
        let mut old = listed("alice", 100, json!([]));
        old.follow_user[0].remark = Some("old".into());
        let new = observe_contact("wwcorp", &listed("alice", 100, json!([])), at(301));
        let old = observe_contact("wwcorp", &old, at(300));
        for plans in [
            vec![old.clone(), new.clone()],
            vec![new.clone(), old.clone()],
        ] {
            let mut b = Batch::default();
            for p in plans {
                b.add(p);
            }
            let f = b.follows.values().next().expect("a follow");
            assert_eq!(
                f.detail.as_ref().and_then(|d| d.remark.as_deref()),
                Some("r")
            );
            let c = b.contact_details.values().next().expect("a contact");
            assert_eq!(c.synced_at, at(301));
        }
        assert!(Version::fetched(at(300)) < Version::fetched(at(301)));
        assert!(
            Version::observed(100) < Version::event(100, 2, "a"),
            "rank 0 is below every event rank in the same second"
        );
    }
}
