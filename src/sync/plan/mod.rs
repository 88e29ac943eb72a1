//! The projection rules, pure: from a typed event to the writes it implies on the synced tables.
//!
//! [`plan_event`] decides *what* an event means for each table; [`crate::store::projections`] only executes
//! the [`Plan`]. Keeping the rules here means they are tested in microseconds without PostgreSQL, and the same
//! plan can later be merged with others in memory before it is written.
//!
//! Order safety: every group of columns is a "last writer wins" register keyed by a [`Version`], so the
//! tables do not depend on the order events arrive in and duplicates change nothing. A write changes a group
//! only when its version is greater than the stored one.
//!
//! The rules by source: `events` (a callback event; per subject in `contacts`, `chats` and `tags`),
//! `observe` (what WeCom's API answered) and `batch` (many plans merged per row before they are written).
//! This module holds the writes they all produce; everything is re-exported here.

mod batch;
mod chats;
mod contacts;
mod events;
#[cfg(test)]
mod fixtures;
mod observe;
mod tags;

pub use batch::Batch;
pub use contacts::contact_change_name;
pub use events::{SEND_TEST_MARK, SEND_TEST_STAFF, is_send_test, plan_event};
pub use observe::{
    API_SYNC, KnownTag, RESYNC, TagNames, api_status_notification, observe_contact,
    observe_follow_entry, tag_objects,
};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::{FollowStatus, JobKind};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_time_then_rank_then_key() {
        assert!(Version::event(99, 6, "z") < Version::event(100, 1, "a"));
        assert!(Version::event(100, 4, "z") < Version::event(100, 5, "a"));
        assert!(Version::event(100, 4, "a") < Version::event(100, 4, "b"));
        assert!(Version::placeholder() < Version::event(0, 0, ""));
        assert_eq!(Version::event(-5, 1, "k"), Version::event(0, 1, "k"));
    }
}
