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
            self.merge_contact_detail((d.corp_id.clone(), d.external_userid.clone()), d);
        }
        for c in plan.contacts {
            self.merge_contact((c.corp_id.clone(), c.external_userid.clone()), c);
        }
        for f in plan.follows {
            let key = (
                f.corp_id.clone(),
                f.userid.clone(),
                f.external_userid.clone(),
            );
            self.merge_follow(key, f);
        }
        for c in plan.chats {
            self.merge_chat((c.corp_id.clone(), c.chat_id.clone()), c);
        }
        for m in plan.members {
            let key = (m.corp_id.clone(), m.chat_id.clone(), m.member_id.clone());
            self.merge_member(key, m);
        }
        for t in plan.tags {
            self.merge_tag((t.corp_id.clone(), t.id.clone()), t);
        }
        for j in plan.jobs {
            let key = (j.kind, j.app.clone(), j.corp_id.clone(), j.subject.clone());
            self.merge_job(key, j);
        }
    }

    /// Merges a later batch into this one (its events after this one's, as for [`Batch::add`]): the same
    /// per-row rule, so the result equals one batch of both batches' plans.
    pub fn absorb(&mut self, later: Batch) {
        self.history.extend(later.history);
        self.notifications.extend(later.notifications);
        self.transfers.extend(later.transfers);
        for (k, d) in later.contact_details {
            self.merge_contact_detail(k, d);
        }
        for (k, c) in later.contacts {
            self.merge_contact(k, c);
        }
        for (k, f) in later.follows {
            self.merge_follow(k, f);
        }
        for (k, c) in later.chats {
            self.merge_chat(k, c);
        }
        for (k, m) in later.members {
            self.merge_member(k, m);
        }
        for (k, t) in later.tags {
            self.merge_tag(k, t);
        }
        for (k, j) in later.jobs {
            self.merge_job(k, j);
        }
    }

    /// How many rows the merged registers hold (history, transfers and notifications not counted).
    pub fn rows(&self) -> usize {
        self.contacts.len()
            + self.contact_details.len()
            + self.follows.len()
            + self.chats.len()
            + self.members.len()
            + self.tags.len()
            + self.jobs.len()
    }

    /// Takes the first `n` rows (in key order) of every register map, and all the history, transfers and
    /// notifications, as a batch of their own; the rest stays. Writing the two in turn equals writing this one:
    /// each table's statement is its own per-row rule.
    pub fn take_first(&mut self, n: usize) -> Batch {
        fn first<K: Ord, V>(map: &mut BTreeMap<K, V>, n: usize) -> BTreeMap<K, V> {
            let mut out = BTreeMap::new();
            while out.len() < n {
                let Some((k, v)) = map.pop_first() else { break };
                out.insert(k, v);
            }
            out
        }
        Batch {
            history: std::mem::take(&mut self.history),
            contacts: first(&mut self.contacts, n),
            contact_details: first(&mut self.contact_details, n),
            transfers: std::mem::take(&mut self.transfers),
            follows: first(&mut self.follows, n),
            chats: first(&mut self.chats, n),
            members: first(&mut self.members, n),
            tags: first(&mut self.tags, n),
            jobs: first(&mut self.jobs, n),
            notifications: std::mem::take(&mut self.notifications),
        }
    }

    fn merge_contact_detail(&mut self, key: (String, String), d: ContactDetailWrite) {
        match self.contact_details.entry(key) {
            Entry::Vacant(e) => {
                e.insert(d);
            }
            Entry::Occupied(mut e) => newer(e.get_mut(), d, |d| &d.version),
        }
    }

    fn merge_contact(&mut self, key: (String, String), c: ContactSeen) {
        match self.contacts.entry(key) {
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

    fn merge_follow(&mut self, key: (String, String, String), f: FollowWrite) {
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

    fn merge_chat(&mut self, key: (String, String), c: ChatWrite) {
        match self.chats.entry(key) {
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

    fn merge_member(&mut self, key: (String, String, String), m: MemberWrite) {
        match self.members.entry(key) {
            Entry::Vacant(e) => {
                e.insert(m);
            }
            Entry::Occupied(mut e) => newer(e.get_mut(), m, |m| &m.version),
        }
    }

    fn merge_tag(&mut self, key: (String, String), t: TagWrite) {
        match self.tags.entry(key) {
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

    /// The first request per key wins (see [`Batch::jobs`]).
    fn merge_job(&mut self, key: (JobKind, String, String, String), j: JobRequest) {
        self.jobs.entry(key).or_insert(j);
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

    fn batch_of(plans: &[Plan]) -> Batch {
        let mut b = Batch::default();
        for p in plans {
            b.add(p.clone());
        }
        b
    }

    /// Adds, edits, deletions both ways and listings of two staff, out of time order.
    fn mixed() -> Vec<Plan> {
        let add = |state: &str| ContactChange::Add {
            state: Some(state.into()),
            welcome_code: None,
        };
        vec![
            plan_event(&meta(100, "a"), &contact(add("ch1"))),
            observe_contact("wwcorp", &listed("alice", 100, json!([])), at(150)),
            plan_event(&meta(300, "c"), &contact(ContactChange::DeletedByCustomer)),
            plan_event(&meta(200, "b"), &contact(ContactChange::Edit)),
            observe_contact("wwcorp", &listed("bob", 120, json!(["t1"])), at(320)),
            plan_event(
                &meta(250, "d"),
                &contact(ContactChange::AddHalf {
                    state: None,
                    welcome_code: None,
                }),
            ),
            plan_event(&meta(400, "e"), &contact(add("ch2"))),
            plan_event(
                &meta(350, "f"),
                &contact(ContactChange::DeletedByStaff { source: None }),
            ),
        ]
    }

    #[test]
    fn absorbing_a_later_batch_equals_one_batch_of_both() {
        let plans = mixed();
        let all = format!("{:?}", batch_of(&plans));
        for k in 0..=plans.len() {
            let mut first = batch_of(&plans[..k]);
            first.absorb(batch_of(&plans[k..]));
            assert_eq!(format!("{first:?}"), all, "split after {k} plans");
        }
    }

    #[test]
    fn taking_the_first_rows_splits_every_map_and_keeps_the_rest() {
        let plans = mixed();
        let mut rest = batch_of(&plans);
        let (rows, history) = (rest.rows(), rest.history.len());
        assert!(rows > 2 && history > 0, "a batch of several rows: {rest:?}");
        let first = rest.take_first(1);
        assert_eq!(
            first.history.len(),
            history,
            "the log rows go with the first part"
        );
        assert!(rest.history.is_empty() && rest.notifications.is_empty());
        assert!(first.follows.len() == 1 && first.contacts.len() == 1);
        assert_eq!(first.rows() + rest.rows(), rows);
        // Every row is in one part, the first part's keys before the rest's.
        let first_key = first.follows.keys().next().cloned();
        assert!(rest.follows.keys().all(|k| Some(k) > first_key.as_ref()));
        let mut again = first;
        again.absorb(rest);
        assert_eq!(format!("{again:?}"), format!("{:?}", batch_of(&plans)));
    }
}
