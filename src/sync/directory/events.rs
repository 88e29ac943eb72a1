//! A `change_contact` callback (members and departments) as directory writes, and the `user/get` it
//! queues.

use crate::domain::{JobKind, StaffStatus};
use crate::sync::directory::{
    ChatRefetch, DepartmentWrite, Departments, DirectoryPlan, Rename, StaffWrite, StatusWrite,
    stamp, status_write,
};
use crate::sync::plan::{EventMeta, JobRequest, Version};
use crate::wecom::events::{ContactEvent, EventKind, PartyChange, TypedEvent, UserChange};

/// Rank within one second: a creation comes before an update, an update before a deletion.
fn rank(e: &ContactEvent) -> u8 {
    match e {
        ContactEvent::CreateUser(_) | ContactEvent::CreateParty(_) => 1,
        ContactEvent::UpdateUser(_) | ContactEvent::UpdateParty(_) => 2,
        ContactEvent::DeleteUser { .. } | ContactEvent::DeleteParty { .. } => 3,
        ContactEvent::UpdateTag(_) | ContactEvent::Other(_) => 0,
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
            old.renamed_to = Some(stamp(v, Some(new.to_owned())));
            plan.staff.push(old);
            plan.renames.push(Rename {
                corp_id: meta.corp_id.to_owned(),
                from: u.userid.clone(),
                to: new.to_owned(),
                refetch_chats: meta.enrich.then(|| ChatRefetch {
                    app: meta.app.to_owned(),
                    event_id: meta.id,
                }),
            });
            new
        }
        None => u.userid.as_str(),
    };
    let mut w = StaffWrite::new(meta.corp_id, current);
    // The member lives under `current` as of this event: a rename away from it that is older no longer
    // holds (renamed back, or the userid reused), and its follows must stay here.
    w.renamed_to = Some(stamp(v, None));
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
                to: "b".into(),
                refetch_chats: Some(ChatRefetch {
                    app: "main".into(),
                    event_id: 1
                }),
            }]
        );
        assert_eq!(p.staff[0].userid, "a");
        assert_eq!(
            p.staff[0].renamed_to.as_ref().map(|r| r.value.as_deref()),
            Some(Some("b"))
        );
        assert_eq!(
            p.staff[1].renamed_to.as_ref().map(|r| r.value.as_deref()),
            Some(None),
            "the new userid is where the member lives now"
        );
        assert_eq!(p.staff[1].userid, "b");
        assert_eq!(p.jobs[0].subject, "b", "user/get asks for the new userid");
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
