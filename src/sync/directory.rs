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

use chrono::{DateTime, Utc};

use crate::domain::{JobKind, StaffStatus};
use crate::sync::client::types::{Department, StaffMember};
use crate::sync::plan::{EventMeta, JobRequest, Stamped, Version};
use crate::wecom::events::{ContactEvent, EventKind, PartyChange, TypedEvent, UserChange};

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
    /// WeCom changed this member's userid to this one.
    pub renamed_to: Option<Stamped<String>>,
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

/// A userid WeCom changed (`NewUserID`): the follows of the old userid belong to the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    pub corp_id: String,
    pub from: String,
    pub to: String,
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
            let change = if w.renamed_to.is_some() {
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
                "renamed_to": w.renamed_to.as_ref().map(|r| r.value.as_str()),
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

/// Rank within one second: a creation comes before an update, an update before a deletion.
fn rank(e: &ContactEvent) -> u8 {
    match e {
        ContactEvent::CreateUser(_) | ContactEvent::CreateParty(_) => 1,
        ContactEvent::UpdateUser(_) | ContactEvent::UpdateParty(_) => 2,
        ContactEvent::DeleteUser { .. } | ContactEvent::DeleteParty { .. } => 3,
        ContactEvent::UpdateTag(_) | ContactEvent::Other(_) => 0,
    }
}

fn stamp<T>(version: &Version, value: T) -> Stamped<T> {
    Stamped {
        version: version.clone(),
        value,
    }
}

/// The writes a stored `change_contact` event implies; empty for every other event.
pub fn plan_event(meta: &EventMeta<'_>, typed: &TypedEvent) -> DirectoryPlan {
    let mut plan = DirectoryPlan::default();
    let EventKind::Contact(e) = &typed.kind else {
        return plan;
    };
    // `send-test`'s 通讯录 event is stored, never projected (see `plan::is_send_test`).
    if crate::sync::plan::is_send_test(typed) {
        return plan;
    }
    let v = Version::event(meta.time, rank(e), meta.dedupe_key);
    match e {
        ContactEvent::CreateUser(u) => user_event(&mut plan, meta, &v, u, true),
        ContactEvent::UpdateUser(u) => user_event(&mut plan, meta, &v, u, false),
        ContactEvent::DeleteUser { userid } => {
            let mut w = StaffWrite::new(meta.corp_id, userid);
            w.status = Some(stamp(
                &v,
                StatusWrite {
                    status: StaffStatus::Left,
                    left_at: Some(meta.time),
                },
            ));
            plan.staff.push(w);
        }
        ContactEvent::CreateParty(p) | ContactEvent::UpdateParty(p) => {
            if let Some(d) = party_event(meta.corp_id, &v, p) {
                plan.departments.push(d);
            }
        }
        ContactEvent::DeleteParty { id } => {
            if let Ok(id) = id.trim().parse() {
                plan.departments.push(DepartmentWrite {
                    corp_id: meta.corp_id.to_owned(),
                    id,
                    name: None,
                    parent_id: None,
                    order: None,
                    deleted: stamp(&v, true),
                });
            }
        }
        ContactEvent::UpdateTag(_) | ContactEvent::Other(_) => {}
    }
    plan
}

fn ids(list: &[String]) -> Vec<i64> {
    list.iter().filter_map(|s| s.trim().parse().ok()).collect()
}

fn user_event(
    plan: &mut DirectoryPlan,
    meta: &EventMeta<'_>,
    v: &Version,
    u: &UserChange,
    created: bool,
) {
    // A changed userid: the member lives on under the new one; the old row says where it went.
    let current = match u.new_userid.as_deref().filter(|n| *n != u.userid) {
        Some(new) => {
            let mut old = StaffWrite::new(meta.corp_id, &u.userid);
            old.renamed_to = Some(stamp(v, new.to_owned()));
            plan.staff.push(old);
            plan.renames.push(Rename {
                corp_id: meta.corp_id.to_owned(),
                from: u.userid.clone(),
                to: new.to_owned(),
            });
            new
        }
        None => u.userid.as_str(),
    };
    let mut w = StaffWrite::new(meta.corp_id, current);
    w.name = u.name.clone().map(|n| stamp(v, n));
    // `Department` is the one field every callback still carries; an event without it says nothing.
    if !u.department.is_empty() {
        w.departments = Some(stamp(
            v,
            Departments {
                ids: ids(&u.department),
                main: u
                    .main_department
                    .as_deref()
                    .and_then(|m| m.trim().parse().ok()),
            },
        ));
    }
    w.position = u.position.clone().map(|p| stamp(v, p));
    w.open_userid = u.open_userid.clone().map(|o| stamp(v, o));
    // A creation puts the member in the directory (a rehire after a deletion included); an update without
    // `Status` says nothing of it.
    let status = u
        .status
        .and_then(StaffStatus::from_wecom)
        .or(created.then_some(StaffStatus::Active));
    w.status = status.map(|status| stamp(v, status_write(status, meta.time)));
    plan.staff.push(w);
    if meta.enrich {
        plan.jobs.push(JobRequest {
            kind: JobKind::StaffDetail,
            app: meta.app.to_owned(),
            corp_id: meta.corp_id.to_owned(),
            subject: current.to_owned(),
            event_id: meta.id,
        });
    }
}

fn status_write(status: StaffStatus, at: i64) -> StatusWrite {
    StatusWrite {
        status,
        left_at: (status == StaffStatus::Left).then_some(at),
    }
}

fn party_event(corp_id: &str, v: &Version, p: &PartyChange) -> Option<DepartmentWrite> {
    Some(DepartmentWrite {
        corp_id: corp_id.to_owned(),
        id: p.id.trim().parse().ok()?,
        name: p.name.clone().map(|n| stamp(v, n)),
        parent_id: p
            .parent_id
            .as_deref()
            .and_then(|x| x.trim().parse().ok())
            .map(|x| stamp(v, x)),
        order: p.order.map(|o| stamp(v, o)),
        deleted: stamp(v, false),
    })
}

/// What a `user/get` answer at `at` says of a member: the fields it carried, and which it did not.
pub fn observe_member(corp_id: &str, m: &StaffMember, at: DateTime<Utc>) -> StaffWrite {
    let v = Version::fetched(at);
    let mut w = StaffWrite::new(corp_id, &m.userid);
    let mut unavailable = Vec::new();
    let mut missing = |field: &str, present: bool| {
        if !present {
            unavailable.push(field.to_owned());
        }
    };
    missing("name", m.name.is_some());
    let departments = m.department_ids();
    missing("department", departments.is_some());
    missing("main_department", m.main_department.is_some());
    missing("position", m.position.is_some());
    missing("status", m.status.is_some());
    missing("open_userid", m.open_userid.is_some());
    w.name = m.name.clone().map(|n| stamp(&v, n));
    w.departments = departments.map(|ids| {
        stamp(
            &v,
            Departments {
                ids,
                main: m.main_department,
            },
        )
    });
    w.position = m.position.clone().map(|p| stamp(&v, p));
    w.open_userid = m.open_userid.clone().map(|o| stamp(&v, o));
    w.status = m
        .status
        .and_then(StaffStatus::from_wecom)
        .map(|s| stamp(&v, status_write(s, at.timestamp())));
    w.fetch = Some(FetchWrite {
        version: v,
        unavailable,
        synced_at: at,
    });
    w
}

/// What a `department/list` entry at `at` says; `None` without an id.
pub fn observe_department(
    corp_id: &str,
    d: &Department,
    at: DateTime<Utc>,
) -> Option<DepartmentWrite> {
    let v = Version::fetched(at);
    Some(DepartmentWrite {
        corp_id: corp_id.to_owned(),
        id: d.id?,
        name: d.name.clone().map(|n| stamp(&v, n)),
        parent_id: d.parentid.map(|p| stamp(&v, p)),
        order: d.order.map(|o| stamp(&v, o)),
        deleted: stamp(&v, false),
    })
}

/// A member a directory resync listed (`user/list_id`), seen by run `run`: the row exists and is marked
/// as listed; nothing else is known from a listing.
pub fn observe_listed(corp_id: &str, userid: &str, run: i64) -> StaffWrite {
    let mut w = StaffWrite::new(corp_id, userid);
    w.resync_run = Some(run);
    w
}

/// A member the resync no longer found at `at`: left (the sweep, after the removal guard).
pub fn observe_gone(corp_id: &str, userid: &str, at: DateTime<Utc>) -> StaffWrite {
    let mut w = StaffWrite::new(corp_id, userid);
    w.status = Some(stamp(
        &Version::fetched(at),
        status_write(StaffStatus::Left, at.timestamp()),
    ));
    w
}

/// The plan of one `user/get` answer (see [`observe_member`]).
pub fn member_plan(corp_id: &str, m: &StaffMember, at: DateTime<Utc>) -> DirectoryPlan {
    DirectoryPlan {
        staff: vec![observe_member(corp_id, m, at)],
        ..Default::default()
    }
}

/// The plan of a `department/list` answer (entries without an id are skipped).
///
/// `known`: the departments the table holds (not deleted). Those the list no longer names are marked deleted
/// at the fetch's version (a `delete_party` callback can be lost, and a department outside the app's
/// visibility is gone for every reader of the tables too) — except after an empty list, which says more about
/// the app's 可见范围 than about the corp, and deletes nothing.
pub fn departments_plan(
    corp_id: &str,
    list: &[Department],
    at: DateTime<Utc>,
    known: &[i64],
) -> DirectoryPlan {
    let mut departments: Vec<DepartmentWrite> = list
        .iter()
        .filter_map(|d| observe_department(corp_id, d, at))
        .collect();
    if !departments.is_empty() {
        let listed: std::collections::BTreeSet<i64> = departments.iter().map(|d| d.id).collect();
        let v = Version::fetched(at);
        for id in known.iter().filter(|id| !listed.contains(id)) {
            departments.push(DepartmentWrite {
                corp_id: corp_id.to_owned(),
                id: *id,
                name: None,
                parent_id: None,
                order: None,
                deleted: stamp(&v, true),
            });
        }
    }
    DirectoryPlan {
        departments,
        ..Default::default()
    }
}

/// The plan of a `user/list_id` page of run `run` (see [`observe_listed`]). A userid WeCom lists twice (one
/// entry per department) is written once; empty ones are skipped.
pub fn listed_plan(corp_id: &str, userids: &[String], run: i64) -> DirectoryPlan {
    let mut ids: Vec<&str> = userids
        .iter()
        .map(String::as_str)
        .filter(|u| !u.is_empty())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    DirectoryPlan {
        staff: ids
            .into_iter()
            .map(|u| observe_listed(corp_id, u, run))
            .collect(),
        ..Default::default()
    }
}

/// The fields a `user/get` answer carried (what an observation of it covers: a newer answer carrying at
/// least these rewrites everything it wrote).
pub fn fields_read(m: &StaffMember) -> Vec<String> {
    let w = observe_member("", m, DateTime::UNIX_EPOCH);
    let unavailable = w.fetch.map(|f| f.unavailable).unwrap_or_default();
    STAFF_FIELDS
        .iter()
        .filter(|f| !unavailable.iter().any(|u| u == *f))
        .map(|f| (*f).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wecom::events::interpret;
    use crate::wecom::message::parse_message;

    fn plan(time: i64, change: &str, body: &str, enrich: bool) -> DirectoryPlan {
        let xml = format!(
            "<xml><ToUserName>corp</ToUserName><CreateTime>{time}</CreateTime><MsgType>event</MsgType>\
             <Event>change_contact</Event><ChangeType>{change}</ChangeType>{body}</xml>"
        );
        let typed = interpret(&parse_message(xml.as_bytes()).expect("parses"));
        let meta = EventMeta {
            id: 1,
            app: "main",
            corp_id: "corp",
            time,
            dedupe_key: "k",
            enrich,
        };
        plan_event(&meta, &typed)
    }

    #[test]
    fn a_post_2022_user_event_writes_only_the_departments_and_queues_user_get() {
        let p = plan(
            100,
            "update_user",
            "<UserID>zs</UserID><Department>1,2</Department>",
            true,
        );
        let w = &p.staff[0];
        assert_eq!(
            w.departments.as_ref().map(|d| d.value.ids.clone()),
            Some(vec![1, 2])
        );
        assert!(w.name.is_none() && w.position.is_none() && w.status.is_none());
        assert_eq!(p.jobs.len(), 1);
        assert_eq!(
            (p.jobs[0].kind, p.jobs[0].subject.as_str()),
            (JobKind::StaffDetail, "zs")
        );
        assert!(
            plan(100, "update_user", "<UserID>zs</UserID>", false)
                .jobs
                .is_empty()
        );
    }

    #[test]
    fn a_deletion_outranks_a_creation_of_the_same_second() {
        let created = plan(
            100,
            "create_user",
            "<UserID>ww</UserID><Status>1</Status>",
            false,
        );
        let deleted = plan(100, "delete_user", "<UserID>ww</UserID>", false);
        let (c, d) = (
            created.staff[0].status.as_ref().expect("status"),
            deleted.staff[0].status.as_ref().expect("status"),
        );
        assert_eq!(c.value.status, StaffStatus::Active);
        assert_eq!(
            d.value,
            StatusWrite {
                status: StaffStatus::Left,
                left_at: Some(100)
            }
        );
        assert!(d.version > c.version);
    }

    #[test]
    fn a_new_userid_moves_the_member_and_their_follows() {
        let p = plan(
            100,
            "update_user",
            "<UserID>a</UserID><NewUserID>b</NewUserID><Department>2</Department>",
            true,
        );
        assert_eq!(
            p.renames,
            vec![Rename {
                corp_id: "corp".into(),
                from: "a".into(),
                to: "b".into()
            }]
        );
        assert_eq!(p.staff[0].userid, "a");
        assert_eq!(
            p.staff[0].renamed_to.as_ref().map(|r| r.value.as_str()),
            Some("b")
        );
        assert_eq!(p.staff[1].userid, "b");
        assert_eq!(p.jobs[0].subject, "b", "user/get asks for the new userid");
    }

    #[test]
    fn a_restricted_answer_records_what_it_could_not_read() {
        let m = StaffMember {
            userid: "zs".into(),
            name: Some("张三".into()),
            position: Some(String::new()),
            ..Default::default()
        };
        let w = observe_member("corp", &m, Utc::now());
        assert_eq!(
            w.fetch.map(|f| f.unavailable),
            Some(vec![
                "department".into(),
                "main_department".into(),
                "status".into(),
                "open_userid".into()
            ])
        );
        assert_eq!(
            w.position.map(|p| p.value),
            Some(String::new()),
            "an empty position is known"
        );
        assert!(w.departments.is_none(), "the event's departments stay");
    }

    #[test]
    fn a_listing_writes_each_member_once_and_a_fetch_covers_the_fields_it_read() {
        let listed = listed_plan(
            "corp",
            &["b".into(), "a".into(), "b".into(), String::new()],
            7,
        );
        let ids: Vec<(&str, Option<i64>)> = listed
            .staff
            .iter()
            .map(|w| (w.userid.as_str(), w.resync_run))
            .collect();
        assert_eq!(ids, vec![("a", Some(7)), ("b", Some(7))]);
        assert!(
            listed
                .staff
                .iter()
                .all(|w| w.status.is_none() && w.name.is_none())
        );
        let m = StaffMember {
            userid: "zs".into(),
            name: Some("张三".into()),
            position: Some("销售".into()),
            ..Default::default()
        };
        assert_eq!(
            fields_read(&m),
            vec!["name".to_owned(), "position".to_owned()]
        );
        // The observation log keeps "not sent" apart from a value: an answer read back plans the same.
        let back: StaffMember =
            serde_json::from_value(serde_json::to_value(&m).expect("ser")).expect("de");
        let at = Utc::now();
        assert_eq!(member_plan("corp", &back, at), member_plan("corp", &m, at));
    }

    #[test]
    fn party_events_and_non_numeric_ids() {
        let p = plan(
            100,
            "create_party",
            "<Id>5</Id><Name>销售</Name><ParentId>1</ParentId><Order>3</Order>",
            false,
        );
        let d = &p.departments[0];
        assert_eq!((d.id, d.deleted.value), (5, false));
        assert_eq!(d.order.as_ref().map(|o| o.value), Some(3));
        let del = plan(100, "delete_party", "<Id>5</Id>", false);
        assert!(
            del.departments[0].deleted.value
                && del.departments[0].deleted.version > d.deleted.version
        );
        assert!(plan(100, "create_party", "<Id>x</Id>", false).is_empty());
    }
}
