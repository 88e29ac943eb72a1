//! The staff directory rules (通讯录), pure: from a `change_contact` event, a `user/get` answer or a
//! `department/list` entry to the writes on `staff` and `departments`.
//!
//! The same order safety as [`crate::sync::plan`]: every group of columns (name, departments, position,
//! open_userid, status, rename, what the last fetch could not read) is a last-writer-wins register keyed by a
//! [`Version`], and a write carries only the groups it knows. Since 2022-08-15 most callbacks carry only
//! `UserID` and `Department`, so an event that does not name a field leaves it as it is, and a `user/get`
//! job fills it in (what the secret may read: a field WeCom did not send is recorded as unavailable).
//!
//! Fetch versions ([`Version::fetched`]) are compared with event versions here: a fetch tells the state at
//! the time it was made, so an event of a later second outranks it and an earlier one does not.
//!
//! By source, as in the planner: `events` (a `change_contact` callback) and `observe` (what `user/get`,
//! `department/list` and `user/list_id` answered); this module holds the writes they produce.

mod events;
mod observe;

pub use events::plan_event;
pub use observe::{
    departments_plan, fields_read, listed_plan, member_plan, observe_department, observe_gone,
    observe_listed, observe_member,
};

use chrono::{DateTime, Utc};

use crate::domain::StaffStatus;
use crate::sync::plan::{JobRequest, Stamped, Version};

/// The fields `user/get` may leave out, in the order they are reported.
pub const STAFF_FIELDS: &[&str] = &[
    "name",
    "department",
    "main_department",
    "position",
    "status",
    "open_userid",
];

/// The departments register: ids and the main one, always written together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departments {
    pub ids: Vec<i64>,
    pub main: Option<i64>,
}

/// The status register: `left_at` is set with `left`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusWrite {
    pub status: StaffStatus,
    pub left_at: Option<i64>,
}

/// What a `user/get` answer could not say (its own register, so the latest fetch decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchWrite {
    pub version: Version,
    pub unavailable: Vec<String>,
    pub synced_at: DateTime<Utc>,
}

/// A write to one `staff` row (inserted when missing, `active` until a status is known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffWrite {
    pub corp_id: String,
    pub userid: String,
    pub name: Option<Stamped<String>>,
    pub departments: Option<Stamped<Departments>>,
    pub position: Option<Stamped<String>>,
    pub open_userid: Option<Stamped<String>>,
    pub status: Option<Stamped<StatusWrite>>,
    /// Where the member lives as of the version: `Some(userid)` when WeCom changed this member's userid to
    /// that one, `None` when an event shows the member under this userid (created, updated, or renamed
    /// to it), which outdates an older rename away from it (a userid renamed back, or reused).
    pub renamed_to: Option<Stamped<Option<String>>>,
    pub fetch: Option<FetchWrite>,
    /// The resync run that listed the member.
    pub resync_run: Option<i64>,
}

impl StaffWrite {
    fn new(corp_id: &str, userid: &str) -> StaffWrite {
        StaffWrite {
            corp_id: corp_id.to_owned(),
            userid: userid.to_owned(),
            name: None,
            departments: None,
            position: None,
            open_userid: None,
            status: None,
            renamed_to: None,
            fetch: None,
            resync_run: None,
        }
    }
}

/// A write to one `departments` row (inserted when missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepartmentWrite {
    pub corp_id: String,
    pub id: i64,
    pub name: Option<Stamped<String>>,
    pub parent_id: Option<Stamped<i64>>,
    pub order: Option<Stamped<i64>>,
    /// The status register: deleted or not; every write decides it.
    pub deleted: Stamped<bool>,
}

/// A userid WeCom changed (`NewUserID`): the follows of the old userid belong to the new one, and the group
/// chats it owns or sits in name the new one from then on (WeCom sends no chat callback for that, and the
/// chat's member version stays the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    pub corp_id: String,
    pub from: String,
    pub to: String,
    /// Set when the corp has an API: who queues `groupchat/get` for those chats.
    pub refetch_chats: Option<ChatRefetch>,
}

/// The app whose API reads a renamed member's group chats again, and the rename event that asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRefetch {
    pub app: String,
    pub event_id: i64,
}

/// Everything a directory event or observation implies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryPlan {
    pub staff: Vec<StaffWrite>,
    pub departments: Vec<DepartmentWrite>,
    pub renames: Vec<Rename>,
    pub jobs: Vec<JobRequest>,
}

impl DirectoryPlan {
    /// Appends another plan (a batch of events is executed at once).
    pub fn extend(&mut self, other: DirectoryPlan) {
        self.staff.extend(other.staff);
        self.departments.extend(other.departments);
        self.renames.extend(other.renames);
        self.jobs.extend(other.jobs);
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.staff.is_empty()
            && self.departments.is_empty()
            && self.renames.is_empty()
            && self.jobs.is_empty()
    }
}

impl DirectoryPlan {
    /// The NOTIFY payloads (and change feed entries) of this plan: one per staff member and department it
    /// writes, `{"kind": "staff", "userid"}` or `{"kind": "department", "id"}`, with `change` `left` /
    /// `renamed` / `update` (staff) or `delete` / `update` (departments). Directory writes do not carry their
    /// event id: `event_id` is null, `source` says whether an event or the API (a fetch, a resync) wrote it.
    pub fn notifications(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::with_capacity(self.staff.len() + self.departments.len());
        for w in &self.staff {
            let renamed_to = w.renamed_to.as_ref().and_then(|r| r.value.as_deref());
            let change = if renamed_to.is_some() {
                "renamed"
            } else if w
                .status
                .as_ref()
                .is_some_and(|s| s.value.status == StaffStatus::Left)
            {
                "left"
            } else {
                "update"
            };
            let api = w.resync_run.is_some() || w.fetch.is_some();
            out.push(serde_json::json!({
                "kind": "staff",
                "source": if api { "api" } else { "event" },
                "corp_id": w.corp_id,
                "userid": w.userid,
                "change": change,
                "renamed_to": renamed_to,
                "event_id": null,
            }));
        }
        for d in &self.departments {
            out.push(serde_json::json!({
                "kind": "department",
                "source": "event",
                "corp_id": d.corp_id,
                "id": d.id,
                "change": if d.deleted.value { "delete" } else { "update" },
                "event_id": null,
            }));
        }
        out
    }
}

fn stamp<T>(version: &Version, value: T) -> Stamped<T> {
    Stamped {
        version: version.clone(),
        value,
    }
}

fn status_write(status: StaffStatus, at: i64) -> StatusWrite {
    StatusWrite {
        status,
        left_at: (status == StaffStatus::Left).then_some(at),
    }
}
