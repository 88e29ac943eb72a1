//! Many plans merged per row in memory, by the registers' last-writer-wins rule, so a batch of events is
//! written once.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use serde_json::Value;

use crate::domain::JobKind;
use crate::sync::plan::{
    ChatWrite, ContactDetailWrite, ContactSeen, FollowState, FollowWrite, HistoryRow, JobRequest,
    MemberWrite, Plan, TagWrite, TransferAttempt, Version,
};

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
    use serde_json::json;

    use super::*;
    use crate::domain::FollowStatus;
    use crate::sync::plan::fixtures::{at, contact, listed, meta};
    use crate::sync::plan::{observe_contact, plan_event};
    use crate::wecom::events::ContactChange;

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
}
