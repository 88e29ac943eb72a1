//! The projection rules, pure: from a typed event to the writes it implies on the synced tables.
//!
//! [`plan_event`] decides *what* an event means for each table; [`crate::store::projections`] only executes
//! the [`Plan`]. Keeping the rules here means they are tested in microseconds without PostgreSQL, and the same
//! plan can later be merged with others in memory before it is written.
//!
//! Order safety: every group of columns is a "last writer wins" register keyed by a [`Version`], so the
//! tables do not depend on the order events arrive in and duplicates change nothing. A write changes a group
//! only when its version is greater than the stored one.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::domain::{FollowStatus, JobKind};
use crate::sync::client::types::{ExternalContact, ExternalContactDetail, FollowInfo};
use crate::wecom::events::{
    ChatChange, ContactChange, ContactEvent, EventKind, ExternalChatEvent, ExternalContactEvent,
    ExternalTagEvent, TagChange, TypedEvent, UpdateDetail,
};

/// The position of a write in last-writer-wins order: `lpad(event_time, 12) ':' rank ':' dedupe_key`,
/// compared as bytes (the columns are `COLLATE "C"`). Within one second the rank decides, so two events in
/// the same second resolve to the one that must have come last; the dedupe key only breaks exact ties.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(String);

impl Version {
    /// The version of an event's write.
    pub fn event(time: i64, rank: u8, dedupe_key: &str) -> Version {
        Version(format!("{:012}:{rank}:{dedupe_key}", time.max(0)))
    }

    /// A placeholder every real version outranks: the value a row gets in a group the creating write does
    /// not decide (an edit creates a follow whose status any add or delete overrides).
    pub fn placeholder() -> Version {
        Version(String::new())
    }

    /// The version of what WeCom's API said about a follow relation, dated by the relation's own
    /// `createtime`: rank 0 with key `api`, below every event rank, so an event in the same second (or later)
    /// wins and only a relation created after the last status event (a genuine re-add) outranks it.
    pub fn observed(createtime: i64) -> Version {
        Version::event(createtime, 0, "api")
    }

    /// The version of an API fetch, for the detail registers only (compared with other fetches, never with
    /// events): the fetch time to the microsecond, so of two fetches the later one wins.
    pub fn fetched(at: DateTime<Utc>) -> Version {
        Version(format!(
            "{:012}:0:api{:06}",
            at.timestamp().max(0),
            at.timestamp_subsec_micros().min(999_999)
        ))
    }

    /// The stored text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the planner needs to know about a stored event besides its meaning.
#[derive(Debug, Clone, Copy)]
pub struct EventMeta<'a> {
    /// `wecom_events.id`.
    pub id: i64,
    /// The app that received it (jobs run with that app's secret).
    pub app: &'a str,
    /// The corp it is about.
    pub corp_id: &'a str,
    /// Event time, unix seconds.
    pub time: i64,
    pub dedupe_key: &'a str,
    /// Whether the app has a secret, so the event queues WeCom API reads (enrichment).
    pub enrich: bool,
}

/// Which history a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryKind {
    Contact,
    Chat,
    Tag,
}

impl HistoryKind {
    /// The stored `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryKind::Contact => "contact",
            HistoryKind::Chat => "chat",
            HistoryKind::Tag => "tag",
        }
    }
}

/// One row of `external_contact_history` (inserted once per event and subject).
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub event_id: i64,
    pub corp_id: String,
    pub kind: HistoryKind,
    pub subject_id: String,
    pub userid: Option<String>,
    pub change_type: String,
    pub event_time: i64,
    pub details: Value,
}

/// Events seen for a customer: `external_contacts` keeps the first time and the latest event (the latest
/// time; on a tie, the greater event id, so the result does not depend on the order of applying).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactSeen {
    pub corp_id: String,
    pub external_userid: String,
    pub first_seen_at: i64,
    pub last_event_at: i64,
    pub last_event_id: i64,
}

/// The "last change" register every row has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastChange {
    pub version: Version,
    pub change_type: String,
    pub at: i64,
    /// `None` for an API observation.
    pub event_id: Option<i64>,
}

/// The status register of a follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowState {
    /// [`Version::placeholder`] when the write does not decide the status.
    pub version: Version,
    pub status: FollowStatus,
    pub deleted_at: Option<i64>,
    pub delete_source: Option<String>,
    /// For an API observation, the fetch version: a follow the resync swept as `removed` (not listed then)
    /// that WeCom lists again in a later fetch is active again, whatever its `createtime` (the sweep was
    /// wrong, or the listing had a gap). `None` for events.
    pub listed: Option<Version>,
}

/// The add register of a follow: the latest add or half-add decides the channel and welcome code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowAdd {
    pub version: Version,
    pub state: Option<String>,
    pub welcome_code: Option<String>,
    pub added_at: i64,
}

/// The API-only detail register of a follow: what the latest fetch (`externalcontact/get` or
/// `batch/get_by_user`) said; an older fetch never overwrites a newer one.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowDetail {
    /// [`Version::fetched`].
    pub version: Version,
    pub remark: Option<String>,
    pub description: Option<String>,
    pub remark_mobiles: Option<Vec<String>>,
    pub add_way: Option<i64>,
    pub oper_userid: Option<String>,
    /// Always the one shape, see [`tag_objects`].
    pub tags: Option<Value>,
    pub synced_at: DateTime<Utc>,
}

/// The API-only detail register of a customer (`external_contacts`), keyed by the fetch time.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactDetailWrite {
    pub corp_id: String,
    pub external_userid: String,
    /// [`Version::fetched`].
    pub version: Version,
    pub name: Option<String>,
    pub avatar: Option<String>,
    pub kind: Option<i64>,
    pub gender: Option<i64>,
    pub unionid: Option<String>,
    pub position: Option<String>,
    pub corp_name: Option<String>,
    pub corp_full_name: Option<String>,
    pub external_profile: Option<Value>,
    pub synced_at: DateTime<Utc>,
}

/// A failed transfer attempt (`transfer_fail`): one row of `external_contact_transfers`. The `UserID` of the
/// callback is the takeover member (接替成员) who did not get the customer, so no follow is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferAttempt {
    pub corp_id: String,
    pub external_userid: String,
    pub takeover_userid: String,
    pub reason: Option<String>,
    pub failed_at: i64,
    pub event_id: i64,
}

/// A write to one `external_contact_follows` row (inserted when missing).
#[derive(Debug, Clone, PartialEq)]
pub struct FollowWrite {
    pub corp_id: String,
    pub userid: String,
    pub external_userid: String,
    pub state: FollowState,
    pub add: Option<FollowAdd>,
    /// API observations only.
    pub detail: Option<FollowDetail>,
    /// The resync run that saw the follow (the sweep removes what a run did not see).
    pub resync_run: Option<i64>,
    pub last: LastChange,
}

/// `external_group_chats.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatStatus {
    Active,
    Dismissed,
}

impl ChatStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatStatus::Active => "active",
            ChatStatus::Dismissed => "dismissed",
        }
    }
}

/// The update register of a chat: the latest `update` event's detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatUpdateWrite {
    pub version: Version,
    pub detail: String,
}

/// The member-version register of a chat: the latest `update` that carried a `CurMemVer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMemberVersion {
    pub version: Version,
    pub member_version: String,
}

/// A write to one `external_group_chats` row (inserted when missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatWrite {
    pub corp_id: String,
    pub chat_id: String,
    /// Status register; [`Version::placeholder`] when the write does not decide it.
    pub status_version: Version,
    pub status: ChatStatus,
    pub created_at: Option<i64>,
    pub dismissed_at: Option<i64>,
    pub update: Option<ChatUpdateWrite>,
    pub member_version: Option<ChatMemberVersion>,
    pub last: LastChange,
}

/// `external_group_chat_members.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberStatus {
    Joined,
    Left,
}

impl MemberStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Joined => "joined",
            MemberStatus::Left => "left",
        }
    }
}

/// A write to one `external_group_chat_members` row (one register: the whole row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberWrite {
    pub corp_id: String,
    pub chat_id: String,
    pub member_id: String,
    pub version: Version,
    pub status: MemberStatus,
    pub join_scene: Option<i64>,
    pub quit_scene: Option<i64>,
    pub changed_at: i64,
    pub event_id: i64,
}

/// A value with the version of the write that carried it: a register of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped<T> {
    pub version: Version,
    pub value: T,
}

/// A write to one `external_corp_tags` row (inserted when missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagWrite {
    pub corp_id: String,
    pub id: String,
    /// `tag` or `tag_group`, when the event says (a shuffle does not).
    pub tag_type: Option<Stamped<String>>,
    /// The rule group (规则组), when the event says.
    pub strategy_id: Option<Stamped<String>>,
    /// Status register; [`Version::placeholder`] for a shuffle, which decides nothing.
    pub status_version: Version,
    pub deleted: bool,
    pub last: LastChange,
}

/// A WeCom API read the event calls for: callbacks carry ids, not state (docs/protocol.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    pub kind: JobKind,
    pub app: String,
    pub corp_id: String,
    pub subject: String,
    pub event_id: i64,
}

/// Everything one event implies, for the store to execute in the transaction that marks it applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub history: Vec<HistoryRow>,
    pub contacts: Vec<ContactSeen>,
    pub contact_details: Vec<ContactDetailWrite>,
    pub transfers: Vec<TransferAttempt>,
    pub follows: Vec<FollowWrite>,
    pub chats: Vec<ChatWrite>,
    pub members: Vec<MemberWrite>,
    pub tags: Vec<TagWrite>,
    pub jobs: Vec<JobRequest>,
    /// NOTIFY payloads on [`crate::store::projections::CHANNEL`], sent when the transaction commits.
    pub notifications: Vec<Value>,
}

/// Rank of a contact change within one second: a later step of a relation's life ranks higher, so two events
/// in the same second resolve to the one that must have come last (a deletion after an add, an add after a
/// half-add). `None`: the change touches no register.
fn contact_rank(c: &ContactChange) -> Option<u8> {
    Some(match c {
        ContactChange::TransferFail { .. } => 1,
        ContactChange::Edit => 2,
        ContactChange::AddHalf { .. } => 3,
        ContactChange::Add { .. } => 4,
        ContactChange::DeletedByCustomer => 5,
        ContactChange::DeletedByStaff { .. } => 6,
        ContactChange::Other(_) => return None,
    })
}

/// The wire `ChangeType` of a contact change.
pub fn contact_change_name(c: &ContactChange) -> &str {
    match c {
        ContactChange::Add { .. } => "add_external_contact",
        ContactChange::Edit => "edit_external_contact",
        ContactChange::AddHalf { .. } => "add_half_external_contact",
        ContactChange::DeletedByStaff { .. } => "del_external_contact",
        ContactChange::DeletedByCustomer => "del_follow_user",
        ContactChange::TransferFail { .. } => "transfer_fail",
        ContactChange::Other(s) => s,
    }
}

fn contact_details(c: &ContactChange) -> Value {
    match c {
        ContactChange::Add {
            state,
            welcome_code,
        }
        | ContactChange::AddHalf {
            state,
            welcome_code,
        } => json!({"state": state, "welcome_code": welcome_code.is_some()}),
        ContactChange::DeletedByStaff { source } => {
            json!({"source": source.as_ref().map(|s| s.as_str())})
        }
        ContactChange::TransferFail { reason } => {
            json!({"fail_reason": reason.as_ref().map(|r| r.as_str())})
        }
        _ => json!({}),
    }
}

/// What `wecom-callback send-test` puts in the ids of the events it sends (`wmSendTest…`, `wrSendTest…`,
/// `etSendTest…`; WeCom's own ids never contain it at that place). Such events are stored like any other,
/// which is what the test proves, but [`plan_event`] gives them an empty plan: no synced row, no
/// notification, no API job, so running send-test against production leaves the backends' tables alone.
pub const SEND_TEST_MARK: &str = "SendTest";

/// The member `send-test` names in its events (its 通讯录 event is about this userid only).
pub const SEND_TEST_STAFF: &str = "send-test-staff";

/// Whether `typed` is one of `send-test`'s events (see [`SEND_TEST_MARK`]).
pub fn is_send_test(typed: &TypedEvent) -> bool {
    let marked = |id: &str, prefix: &str| {
        id.strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with(SEND_TEST_MARK))
    };
    match &typed.kind {
        EventKind::ExternalContact(c) => marked(&c.external_userid, "wm"),
        EventKind::ExternalChat(c) => marked(&c.chat_id, "wr"),
        EventKind::ExternalTag(t) => marked(&t.id, "et"),
        EventKind::Contact(ContactEvent::UpdateUser(u)) => u.userid == SEND_TEST_STAFF,
        _ => false,
    }
}

/// The writes one stored event implies. Events of kinds the synced tables do not cover, and `send-test`'s
/// events ([`is_send_test`]), give an empty plan.
pub fn plan_event(meta: &EventMeta<'_>, typed: &TypedEvent) -> Plan {
    let mut plan = Plan::default();
    if is_send_test(typed) {
        return plan;
    }
    match &typed.kind {
        EventKind::ExternalContact(c) => plan_contact(&mut plan, meta, c),
        EventKind::ExternalChat(c) => plan_chat(&mut plan, meta, c),
        EventKind::ExternalTag(t) => plan_tag(&mut plan, meta, t),
        _ => {}
    }
    plan
}

fn job(meta: &EventMeta<'_>, kind: JobKind, subject: &str) -> JobRequest {
    JobRequest {
        kind,
        app: meta.app.to_owned(),
        corp_id: meta.corp_id.to_owned(),
        subject: subject.to_owned(),
        event_id: meta.id,
    }
}

fn plan_contact(plan: &mut Plan, meta: &EventMeta<'_>, c: &ExternalContactEvent) {
    let change = contact_change_name(&c.change).to_owned();
    plan.history.push(HistoryRow {
        event_id: meta.id,
        corp_id: meta.corp_id.to_owned(),
        kind: HistoryKind::Contact,
        subject_id: c.external_userid.clone(),
        userid: Some(c.userid.clone()),
        change_type: change.clone(),
        event_time: meta.time,
        details: contact_details(&c.change),
    });
    let Some(rank) = contact_rank(&c.change) else {
        return;
    };
    let v = Version::event(meta.time, rank, meta.dedupe_key);
    plan.contacts.push(ContactSeen {
        corp_id: meta.corp_id.to_owned(),
        external_userid: c.external_userid.clone(),
        first_seen_at: meta.time,
        last_event_at: meta.time,
        last_event_id: meta.id,
    });
    let notification = json!({
        "kind": "contact",
        "source": "event",
        "corp_id": meta.corp_id,
        "external_userid": c.external_userid,
        "userid": c.userid,
        "change": change,
        "event_id": meta.id,
    });
    // A transfer failure is an attempt, not a relation: its `UserID` is the takeover member, who never got the
    // customer, and the original follow is whatever WeCom lists. Record the attempt, and ask WeCom who follows.
    if let ContactChange::TransferFail { reason } = &c.change {
        plan.transfers.push(TransferAttempt {
            corp_id: meta.corp_id.to_owned(),
            external_userid: c.external_userid.clone(),
            takeover_userid: c.userid.clone(),
            reason: reason.as_ref().map(|r| r.as_str().to_owned()),
            failed_at: meta.time,
            event_id: meta.id,
        });
        plan.notifications.push(notification);
        if meta.enrich {
            plan.jobs
                .push(job(meta, JobKind::ContactDetail, &c.external_userid));
        }
        return;
    }
    // Column groups: status (the latest add, half-add or delete decides), add (the latest add or half-add
    // decides the channel and welcome code), last (any change).
    let status = |status, deleted_at, delete_source| FollowState {
        version: v.clone(),
        status,
        deleted_at,
        delete_source,
        listed: None,
    };
    let state = match &c.change {
        ContactChange::Add { .. } => status(FollowStatus::Active, None, None),
        ContactChange::AddHalf { .. } => status(FollowStatus::Pending, None, None),
        ContactChange::DeletedByStaff { source } => status(
            FollowStatus::DeletedByStaff,
            Some(meta.time),
            source.as_ref().map(|s| s.as_str().to_owned()),
        ),
        ContactChange::DeletedByCustomer => {
            status(FollowStatus::DeletedByCustomer, Some(meta.time), None)
        }
        // Not a status change: a placeholder every real status write outranks.
        _ => FollowState {
            version: Version::placeholder(),
            status: FollowStatus::Active,
            deleted_at: None,
            delete_source: None,
            listed: None,
        },
    };
    let add = match &c.change {
        ContactChange::Add {
            state,
            welcome_code,
        }
        | ContactChange::AddHalf {
            state,
            welcome_code,
        } => Some(FollowAdd {
            version: v.clone(),
            state: state.clone(),
            welcome_code: welcome_code.clone(),
            added_at: meta.time,
        }),
        _ => None,
    };
    plan.follows.push(FollowWrite {
        corp_id: meta.corp_id.to_owned(),
        userid: c.userid.clone(),
        external_userid: c.external_userid.clone(),
        state,
        add,
        detail: None,
        resync_run: None,
        last: LastChange {
            version: v,
            change_type: change.clone(),
            at: meta.time,
            event_id: Some(meta.id),
        },
    });
    plan.notifications.push(notification);
    if meta.enrich
        && matches!(
            c.change,
            ContactChange::Add { .. } | ContactChange::Edit | ContactChange::AddHalf { .. }
        )
    {
        plan.jobs
            .push(job(meta, JobKind::ContactDetail, &c.external_userid));
    }
}

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

fn plan_chat(plan: &mut Plan, meta: &EventMeta<'_>, c: &ExternalChatEvent) {
    let history = |change: &str, details: Value| HistoryRow {
        event_id: meta.id,
        corp_id: meta.corp_id.to_owned(),
        kind: HistoryKind::Chat,
        subject_id: c.chat_id.clone(),
        userid: None,
        change_type: change.to_owned(),
        event_time: meta.time,
        details,
    };
    let (change, rank) = match &c.change {
        ChatChange::Create => ("create", 1),
        ChatChange::Update(_) => ("update", 2),
        ChatChange::Dismiss => ("dismiss", 3),
        ChatChange::Other(s) => {
            plan.history.push(history(s, json!({})));
            return;
        }
    };
    let v = Version::event(meta.time, rank, meta.dedupe_key);
    let details = match &c.change {
        ChatChange::Update(u) => json!({
            "update_detail": u.detail.as_str(),
            "join_scene": u.join_scene,
            "quit_scene": u.quit_scene,
            "mem_change_cnt": u.mem_change_cnt,
            "mem_change_list": u.mem_change_list,
        }),
        _ => json!({}),
    };
    plan.history.push(history(change, details));
    let (status, status_version) = match &c.change {
        ChatChange::Create => (ChatStatus::Active, v.clone()),
        ChatChange::Dismiss => (ChatStatus::Dismissed, v.clone()),
        _ => (ChatStatus::Active, Version::placeholder()),
    };
    let update = match &c.change {
        ChatChange::Update(u) => Some(ChatUpdateWrite {
            version: v.clone(),
            detail: u.detail.as_str().to_owned(),
        }),
        _ => None,
    };
    let member_version = match &c.change {
        ChatChange::Update(u) => u.cur_mem_ver.clone().map(|mv| ChatMemberVersion {
            version: v.clone(),
            member_version: mv,
        }),
        _ => None,
    };
    plan.chats.push(ChatWrite {
        corp_id: meta.corp_id.to_owned(),
        chat_id: c.chat_id.clone(),
        status_version,
        status,
        created_at: matches!(c.change, ChatChange::Create).then_some(meta.time),
        dismissed_at: matches!(c.change, ChatChange::Dismiss).then_some(meta.time),
        update,
        member_version,
        last: LastChange {
            version: v.clone(),
            change_type: change.to_owned(),
            at: meta.time,
            event_id: Some(meta.id),
        },
    });
    plan.notifications.push(json!({
        "kind": "chat",
        "source": "event",
        "corp_id": meta.corp_id,
        "chat_id": c.chat_id,
        "change": change,
        "update_detail": match &c.change {
            ChatChange::Update(u) => Some(u.detail.as_str()),
            _ => None,
        },
        "event_id": meta.id,
    }));
    if let ChatChange::Update(u) = &c.change {
        let member_status = match u.detail {
            UpdateDetail::AddMember => Some(MemberStatus::Joined),
            UpdateDetail::DelMember => Some(MemberStatus::Left),
            _ => None,
        };
        if let Some(status) = member_status {
            for member in &u.mem_change_list {
                plan.members.push(MemberWrite {
                    corp_id: meta.corp_id.to_owned(),
                    chat_id: c.chat_id.clone(),
                    member_id: member.clone(),
                    version: v.clone(),
                    status,
                    join_scene: u.join_scene.filter(|_| status == MemberStatus::Joined),
                    quit_scene: u.quit_scene.filter(|_| status == MemberStatus::Left),
                    changed_at: meta.time,
                    event_id: meta.id,
                });
            }
        }
    }
    if meta.enrich && matches!(c.change, ChatChange::Create | ChatChange::Update(_)) {
        plan.jobs.push(job(meta, JobKind::GroupChat, &c.chat_id));
    }
}

fn plan_tag(plan: &mut Plan, meta: &EventMeta<'_>, t: &ExternalTagEvent) {
    let (change, rank) = match &t.change {
        TagChange::Shuffle => ("shuffle", 0),
        TagChange::Create => ("create", 1),
        TagChange::Update => ("update", 2),
        TagChange::Delete => ("delete", 3),
        TagChange::Other(s) => (s.as_str(), 0),
    };
    plan.history.push(HistoryRow {
        event_id: meta.id,
        corp_id: meta.corp_id.to_owned(),
        kind: HistoryKind::Tag,
        subject_id: t.id.clone(),
        userid: None,
        change_type: change.to_owned(),
        event_time: meta.time,
        details: json!({"tag_type": t.tag_type.as_ref().map(|x| x.as_str()), "strategy_id": t.strategy_id}),
    });
    let v = Version::event(meta.time, rank, meta.dedupe_key);
    plan.tags.push(TagWrite {
        corp_id: meta.corp_id.to_owned(),
        id: t.id.clone(),
        tag_type: t.tag_type.as_ref().map(|x| Stamped {
            version: v.clone(),
            value: x.as_str().to_owned(),
        }),
        strategy_id: t.strategy_id.clone().map(|value| Stamped {
            version: v.clone(),
            value,
        }),
        // A shuffle (or an unknown change) decides no status.
        status_version: if rank == 0 {
            Version::placeholder()
        } else {
            v.clone()
        },
        deleted: matches!(t.change, TagChange::Delete),
        last: LastChange {
            version: v,
            change_type: change.to_owned(),
            at: meta.time,
            event_id: Some(meta.id),
        },
    });
    plan.notifications.push(json!({
        "kind": "tag",
        "source": "event",
        "corp_id": meta.corp_id,
        "id": t.id,
        "tag_type": t.tag_type.as_ref().map(|x| x.as_str()),
        "change": change,
        "event_id": meta.id,
    }));
    if meta.enrich {
        plan.jobs.push(job(meta, JobKind::CorpTags, "*"));
    }
}

/// Keeps whichever of two register values has the greater version (equal versions come from the same
/// event, so either will do).
fn newer<T>(current: &mut T, other: T, version: impl Fn(&T) -> &Version) {
    if version(&other) > version(current) {
        *current = other;
    }
}

fn newer_opt<T>(current: &mut Option<T>, other: Option<T>, version: impl Fn(&T) -> &Version) {
    match (current.as_mut(), other) {
        (Some(c), Some(o)) => newer(c, o, version),
        (None, Some(o)) => *current = Some(o),
        (_, None) => {}
    }
}

/// The status register's rule: the greater version wins; a `removed` status (the resync sweep's, never an
/// event's or an observation's) also gives way to a later listing. Observations are merged here only with
/// events and other observations, so `removed` is never the current value in memory; the rule is stated once
/// for the store's SQL to repeat against stored rows, and `listed` travels with the winner.
fn merge_state(current: &mut FollowState, other: FollowState) {
    let listed = match (&current.listed, &other.listed) {
        (Some(a), Some(b)) => Some(a.max(b).clone()),
        (a, b) => a.clone().or_else(|| b.clone()),
    };
    newer(current, other, |s| &s.version);
    current.listed = listed;
}

/// The plans of many events merged per row, by the same last-writer-wins rule the SQL applies against the
/// stored rows: so writing the merged batch once equals writing each plan in turn, in any order. Keys are
/// kept sorted, so every applier takes row locks in the same order and two appliers cannot deadlock.
#[derive(Debug, Default)]
pub struct Batch {
    pub history: Vec<HistoryRow>,
    pub contacts: BTreeMap<(String, String), ContactSeen>,
    pub contact_details: BTreeMap<(String, String), ContactDetailWrite>,
    pub transfers: Vec<TransferAttempt>,
    pub follows: BTreeMap<(String, String, String), FollowWrite>,
    pub chats: BTreeMap<(String, String), ChatWrite>,
    pub members: BTreeMap<(String, String, String), MemberWrite>,
    pub tags: BTreeMap<(String, String), TagWrite>,
    /// The first request per (kind, app, corp, subject) wins, as the queue's unique index would decide.
    pub jobs: BTreeMap<(JobKind, String, String, String), JobRequest>,
    pub notifications: Vec<Value>,
}

impl Batch {
    /// Adds one event's plan; plans should be added in event id order (history, jobs and notifications keep
    /// that order).
    pub fn add(&mut self, plan: Plan) {
        self.history.extend(plan.history);
        self.notifications.extend(plan.notifications);
        self.transfers.extend(plan.transfers);
        for d in plan.contact_details {
            match self
                .contact_details
                .entry((d.corp_id.clone(), d.external_userid.clone()))
            {
                Entry::Vacant(e) => {
                    e.insert(d);
                }
                Entry::Occupied(mut e) => newer(e.get_mut(), d, |d| &d.version),
            }
        }
        for c in plan.contacts {
            match self
                .contacts
                .entry((c.corp_id.clone(), c.external_userid.clone()))
            {
                Entry::Vacant(e) => {
                    e.insert(c);
                }
                Entry::Occupied(mut e) => {
                    let cur = e.get_mut();
                    cur.first_seen_at = cur.first_seen_at.min(c.first_seen_at);
                    if (c.last_event_at, c.last_event_id) > (cur.last_event_at, cur.last_event_id) {
                        cur.last_event_at = c.last_event_at;
                        cur.last_event_id = c.last_event_id;
                    }
                }
            }
        }
        for f in plan.follows {
            let key = (
                f.corp_id.clone(),
                f.userid.clone(),
                f.external_userid.clone(),
            );
            match self.follows.entry(key) {
                Entry::Vacant(e) => {
                    e.insert(f);
                }
                Entry::Occupied(mut e) => {
                    let cur = e.get_mut();
                    merge_state(&mut cur.state, f.state);
                    newer_opt(&mut cur.add, f.add, |a| &a.version);
                    newer_opt(&mut cur.detail, f.detail, |d| &d.version);
                    cur.resync_run = f.resync_run.or(cur.resync_run);
                    newer(&mut cur.last, f.last, |l| &l.version);
                }
            }
        }
        for c in plan.chats {
            match self.chats.entry((c.corp_id.clone(), c.chat_id.clone())) {
                Entry::Vacant(e) => {
                    e.insert(c);
                }
                Entry::Occupied(mut e) => {
                    let cur = e.get_mut();
                    cur.created_at = match (cur.created_at, c.created_at) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    if c.status_version > cur.status_version {
                        cur.status_version = c.status_version;
                        cur.status = c.status;
                        cur.dismissed_at = c.dismissed_at;
                    }
                    newer_opt(&mut cur.update, c.update, |u| &u.version);
                    newer_opt(&mut cur.member_version, c.member_version, |m| &m.version);
                    newer(&mut cur.last, c.last, |l| &l.version);
                }
            }
        }
        for m in plan.members {
            let key = (m.corp_id.clone(), m.chat_id.clone(), m.member_id.clone());
            match self.members.entry(key) {
                Entry::Vacant(e) => {
                    e.insert(m);
                }
                Entry::Occupied(mut e) => newer(e.get_mut(), m, |m| &m.version),
            }
        }
        for t in plan.tags {
            match self.tags.entry((t.corp_id.clone(), t.id.clone())) {
                Entry::Vacant(e) => {
                    e.insert(t);
                }
                Entry::Occupied(mut e) => {
                    let cur = e.get_mut();
                    if t.status_version > cur.status_version {
                        cur.status_version = t.status_version;
                        cur.deleted = t.deleted;
                    }
                    newer_opt(&mut cur.tag_type, t.tag_type, |s| &s.version);
                    newer_opt(&mut cur.strategy_id, t.strategy_id, |s| &s.version);
                    newer(&mut cur.last, t.last, |l| &l.version);
                }
            }
        }
        for j in plan.jobs {
            let key = (j.kind, j.app.clone(), j.corp_id.clone(), j.subject.clone());
            self.jobs.entry(key).or_insert(j);
        }
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.history.is_empty()
            && self.contacts.is_empty()
            && self.contact_details.is_empty()
            && self.transfers.is_empty()
            && self.follows.is_empty()
            && self.chats.is_empty()
            && self.members.is_empty()
            && self.tags.is_empty()
            && self.jobs.is_empty()
            && self.notifications.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wecom::events::{DeleteSource, FailReason};

    fn meta(time: i64, key: &'static str) -> EventMeta<'static> {
        EventMeta {
            id: 7,
            app: "main",
            corp_id: "wwcorp",
            time,
            dedupe_key: key,
            enrich: true,
        }
    }

    fn contact(change: ContactChange) -> TypedEvent {
        TypedEvent {
            corp_id: Some("wwcorp".into()),
            suite_id: None,
            time: Some(100),
            kind: EventKind::ExternalContact(ExternalContactEvent {
                userid: "alice".into(),
                external_userid: "wmC".into(),
                change,
            }),
        }
    }

    #[test]
    fn versions_order_by_time_then_rank_then_key() {
        assert!(Version::event(99, 6, "z") < Version::event(100, 1, "a"));
        assert!(Version::event(100, 4, "z") < Version::event(100, 5, "a"));
        assert!(Version::event(100, 4, "a") < Version::event(100, 4, "b"));
        assert!(Version::placeholder() < Version::event(0, 0, ""));
        assert_eq!(Version::event(-5, 1, "k"), Version::event(0, 1, "k"));
    }

    #[test]
    fn an_add_decides_status_and_channel_and_queues_a_detail_fetch() {
        let p = plan_event(
            &meta(100, "k1"),
            &contact(ContactChange::Add {
                state: Some("ad".into()),
                welcome_code: Some("W".into()),
            }),
        );
        let f = &p.follows[0];
        assert_eq!(f.state.status, FollowStatus::Active);
        assert_eq!(f.state.version, Version::event(100, 4, "k1"));
        let add = f.add.as_ref().expect("an add register");
        assert_eq!(add.state.as_deref(), Some("ad"));
        assert_eq!(add.added_at, 100);
        assert_eq!(p.history[0].change_type, "add_external_contact");
        assert_eq!(
            p.history[0].details,
            json!({"state": "ad", "welcome_code": true})
        );
        assert_eq!(p.jobs[0].kind, JobKind::ContactDetail);
        assert_eq!(p.jobs[0].subject, "wmC");
        assert_eq!(p.notifications[0]["change"], "add_external_contact");
    }

    #[test]
    fn send_test_events_plan_nothing_and_only_they_do() {
        let mut ev = contact(ContactChange::Add {
            state: None,
            welcome_code: None,
        });
        if let EventKind::ExternalContact(c) = &mut ev.kind {
            c.external_userid = format!("wm{SEND_TEST_MARK}1a2b");
        }
        assert!(is_send_test(&ev));
        let p = plan_event(&meta(100, "k1"), &ev);
        assert!(p.follows.is_empty() && p.history.is_empty() && p.jobs.is_empty());
        assert!(p.notifications.is_empty());
        // A real id that merely contains the mark elsewhere is planned as usual.
        if let EventKind::ExternalContact(c) = &mut ev.kind {
            c.external_userid = "wmABCSendTest".into();
        }
        assert!(!is_send_test(&ev));
        assert_eq!(plan_event(&meta(100, "k1"), &ev).follows.len(), 1);
    }

    #[test]
    fn an_edit_decides_no_status() {
        let p = plan_event(&meta(100, "k"), &contact(ContactChange::Edit));
        assert_eq!(p.follows[0].state.version, Version::placeholder());
        assert!(p.follows[0].add.is_none());
        assert_eq!(p.follows[0].last.change_type, "edit_external_contact");
    }

    #[test]
    fn deletions_record_direction_time_and_source() {
        let p = plan_event(
            &meta(100, "k"),
            &contact(ContactChange::DeletedByStaff {
                source: Some(DeleteSource::DeleteByTransfer),
            }),
        );
        let s = &p.follows[0].state;
        assert_eq!(s.status, FollowStatus::DeletedByStaff);
        assert_eq!(s.deleted_at, Some(100));
        assert_eq!(s.delete_source.as_deref(), Some("DELETE_BY_TRANSFER"));
        assert!(p.jobs.is_empty(), "nothing to fetch after a deletion");
        let p = plan_event(&meta(100, "k"), &contact(ContactChange::DeletedByCustomer));
        assert_eq!(p.follows[0].state.status, FollowStatus::DeletedByCustomer);
        // Same second: the deletion outranks the add.
        let add = plan_event(
            &meta(100, "k"),
            &contact(ContactChange::Add {
                state: None,
                welcome_code: None,
            }),
        );
        assert!(p.follows[0].state.version > add.follows[0].state.version);
    }

    #[test]
    fn a_transfer_failure_is_an_attempt_and_never_a_follow() {
        let p = plan_event(
            &meta(100, "k"),
            &contact(ContactChange::TransferFail {
                reason: Some(FailReason::CustomerRefused),
            }),
        );
        assert!(
            p.follows.is_empty(),
            "the takeover member never got the customer"
        );
        let t = &p.transfers[0];
        assert_eq!(t.takeover_userid, "alice");
        assert_eq!(t.reason.as_deref(), Some("customer_refused"));
        assert_eq!((t.failed_at, t.event_id), (100, 7));
        assert_eq!(p.history[0].change_type, "transfer_fail");
        assert_eq!(
            p.jobs[0].kind,
            JobKind::ContactDetail,
            "ask WeCom who follows"
        );
        assert_eq!(p.notifications[0]["kind"], "contact");
        assert_eq!(p.notifications[0]["source"], "event");
    }

    fn listed(userid: &str, createtime: i64, tags: Value) -> ExternalContactDetail {
        serde_json::from_value(json!({
            "external_contact": {"external_userid": "wmC", "name": "客户"},
            "follow_user": [{"userid": userid, "createtime": createtime, "remark": "r", "tags": tags}],
        }))
        .expect("an answer")
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).expect("a time")
    }

    /// Applies plans in turn through a batch, as the store would.
    fn merged(plans: Vec<Plan>) -> FollowWrite {
        let mut b = Batch::default();
        for p in plans {
            b.add(p);
        }
        b.follows.into_values().next().expect("a follow")
    }

    #[test]
    fn a_listing_after_a_customer_deletion_does_not_revive_it() {
        let del = plan_event(&meta(200, "d"), &contact(ContactChange::DeletedByCustomer));
        // WeCom keeps listing the one-way relation with the original createtime.
        let obs = observe_contact("wwcorp", &listed("alice", 100, json!([])), at(300));
        assert_eq!(obs.follows[0].state.version, Version::observed(100));
        let f = merged(vec![obs.clone(), del.clone()]);
        assert_eq!(f.state.status, FollowStatus::DeletedByCustomer);
        let f = merged(vec![del.clone(), obs]);
        assert_eq!(f.state.status, FollowStatus::DeletedByCustomer);
        assert_eq!(
            f.detail.as_ref().and_then(|d| d.remark.as_deref()),
            Some("r")
        );
        // Deleted in the second the relation was created: the event still wins.
        let same = observe_contact("wwcorp", &listed("alice", 200, json!([])), at(300));
        assert_eq!(
            merged(vec![del.clone(), same]).state.status,
            FollowStatus::DeletedByCustomer
        );
        // A re-add (newer createtime) wins over the old deletion, and its channel shows.
        let readd = observe_contact("wwcorp", &listed("alice", 250, json!([])), at(300));
        let f = merged(vec![del, readd]);
        assert_eq!(f.state.status, FollowStatus::Active);
        assert_eq!(f.add.as_ref().map(|a| a.added_at), Some(250));
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
    fn chat_and_tag_events_notify_with_their_kind() {
        let p = plan_event(&meta(100, "k"), &chat(ChatChange::Dismiss));
        assert_eq!(p.notifications[0]["kind"], "chat");
        assert_eq!(p.notifications[0]["chat_id"], "wrX");
        let p = plan_event(&meta(100, "k"), &contact(ContactChange::Edit));
        assert_eq!(p.notifications[0]["kind"], "contact");
        assert_eq!(p.notifications[0]["change"], "edit_external_contact");
    }

    #[test]
    fn an_unknown_contact_change_is_history_only() {
        let p = plan_event(
            &meta(100, "k"),
            &contact(ContactChange::Other("msg_audit_approved".into())),
        );
        assert_eq!(p.history.len(), 1);
        assert!(p.follows.is_empty() && p.contacts.is_empty() && p.notifications.is_empty());
    }

    #[test]
    fn without_a_secret_nothing_is_queued() {
        let mut m = meta(100, "k");
        m.enrich = false;
        let p = plan_event(&m, &contact(ContactChange::Edit));
        assert!(p.jobs.is_empty());
    }

    fn chat(change: ChatChange) -> TypedEvent {
        TypedEvent {
            corp_id: Some("wwcorp".into()),
            suite_id: None,
            time: Some(100),
            kind: EventKind::ExternalChat(ExternalChatEvent {
                chat_id: "wrX".into(),
                change,
            }),
        }
    }

    #[test]
    fn a_member_update_writes_each_member_and_the_version() {
        let p = plan_event(
            &meta(100, "k"),
            &chat(ChatChange::Update(crate::wecom::events::ChatUpdate {
                detail: UpdateDetail::AddMember,
                join_scene: Some(3),
                quit_scene: Some(0),
                mem_change_cnt: Some(2),
                mem_change_list: vec!["wmA".into(), "wmB".into()],
                last_mem_ver: Some("v1".into()),
                cur_mem_ver: Some("v2".into()),
            })),
        );
        assert_eq!(p.members.len(), 2);
        assert_eq!(p.members[0].status, MemberStatus::Joined);
        assert_eq!(p.members[0].join_scene, Some(3));
        assert_eq!(p.members[0].quit_scene, None);
        let mv = p.chats[0]
            .member_version
            .as_ref()
            .expect("a member version");
        assert_eq!(mv.member_version, "v2");
        assert_eq!(p.chats[0].status_version, Version::placeholder());
        assert_eq!(p.jobs[0].kind, JobKind::GroupChat);
    }

    #[test]
    fn dismiss_decides_status_and_time() {
        let p = plan_event(&meta(100, "k"), &chat(ChatChange::Dismiss));
        assert_eq!(p.chats[0].status, ChatStatus::Dismissed);
        assert_eq!(p.chats[0].dismissed_at, Some(100));
        assert!(p.jobs.is_empty());
    }

    #[test]
    fn a_tag_shuffle_decides_no_status() {
        let t = TypedEvent {
            corp_id: Some("wwcorp".into()),
            suite_id: None,
            time: Some(100),
            kind: EventKind::ExternalTag(ExternalTagEvent {
                id: "et1".into(),
                tag_type: None,
                strategy_id: Some("1".into()),
                change: TagChange::Shuffle,
            }),
        };
        let p = plan_event(&meta(100, "k"), &t);
        assert_eq!(p.tags[0].status_version, Version::placeholder());
        assert!(!p.tags[0].deleted);
        assert_eq!(p.jobs[0].kind, JobKind::CorpTags);
        assert_eq!(p.jobs[0].subject, "*");
    }
}
