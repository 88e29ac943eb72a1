//! A contact callback event (`change_external_contact`) as writes: the follow's registers, the customer
//! seen, a transfer attempt, and the detail fetch it queues.

use serde_json::{Value, json};

use crate::domain::{FollowStatus, JobKind};
use crate::sync::plan::events::job;
use crate::sync::plan::{
    ContactSeen, EventMeta, FollowAdd, FollowState, FollowWrite, HistoryKind, HistoryRow,
    LastChange, Plan, TransferAttempt, Version,
};
use crate::wecom::events::{ContactChange, ExternalContactEvent};

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

pub(super) fn plan_contact(plan: &mut Plan, meta: &EventMeta<'_>, c: &ExternalContactEvent) {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::domain::{FollowStatus, JobKind};
    use crate::sync::plan::fixtures::{contact, meta};
    use crate::sync::plan::{Version, plan_event};
    use crate::wecom::events::{ContactChange, DeleteSource, FailReason};

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

    #[test]
    fn an_unknown_contact_change_is_history_only() {
        let p = plan_event(
            &meta(100, "k"),
            &contact(ContactChange::Other("msg_audit_approved".into())),
        );
        assert_eq!(p.history.len(), 1);
        assert!(p.follows.is_empty() && p.contacts.is_empty() && p.notifications.is_empty());
    }
}
