//! What the directory APIs answered (`user/get`, `department/list`, `user/list_id`, a resync's sweep) as
//! directory writes, versioned by the fetch.

use chrono::{DateTime, Utc};

use crate::domain::StaffStatus;
use crate::sync::client::types::{Department, StaffMember};
use crate::sync::directory::{
    DepartmentWrite, Departments, DirectoryPlan, FetchWrite, STAFF_FIELDS, StaffWrite, stamp,
    status_write,
};
use crate::sync::plan::Version;

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
}
