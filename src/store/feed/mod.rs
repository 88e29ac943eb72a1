//! The change feed (issue 15): every committed change to the synced tables as one entry of an ordered,
//! durable feed that readers page through with a cursor (`GET /api/v1/changes`) and webhooks deliver from
//! ([`crate::deliver`]).
//!
//! # Why a reader can never find an entry below its cursor
//!
//! Ids from a sequence are not commit-ordered: with concurrent appliers, transaction A may take id 10,
//! transaction B id 11, and B commit first. A reader paging by id would see 11, move its cursor past it, and
//! never see 10. So the feed is written in two steps:
//!
//! 1. **Staging.** Every writer of the synced tables appends its changes to `wecom_change_entries` in its own
//!    transaction, and their ids to `wecom_change_unsequenced` ([`record`], called where the writers NOTIFY).
//!    The id is the entry's stable `id` (the `webhook-id`, and `change_id` in the NOTIFY payload); it says
//!    nothing about order. An entry is written once: sequencing moves only its id.
//! 2. **Sequencing.** One sequencer in the whole cluster at a time ([`sequence`], under a transaction-level
//!    advisory lock) moves the unsequenced ids it can see, i.e. the *committed* ones, into
//!    `wecom_change_positions`, numbering them `head + 1, head + 2, …` from the one-row
//!    `wecom_change_feed_state`. Since only the lock holder writes positions, and PostgreSQL makes a
//!    transaction visible before it releases its locks, the next sequencer starts after the previous one's
//!    positions are visible: positions become visible in increasing order, all of a pass at once. An entry
//!    committed late is simply numbered by a later pass, above every position already visible. Readers
//!    read the view `wecom_changes` (positions joined with entries).
//!
//! A reader reads `head` first, then the entries `position > cursor AND position <= head`: every position up
//! to `head` is visible once `head` is (same transaction), so the page has no hole and the next cursor
//! (`head` when the page is not full) is safe.
//!
//! **Durability.** Appliers commit with `synchronous_commit = off`, so a crash can lose an applied transaction
//! that other sessions already saw, staging rows included. The sequencer commits with `synchronous_commit =
//! on`: its commit record is flushed before its transaction becomes visible, and every transaction whose rows
//! it moved committed earlier in the WAL, so it is flushed too. An entry a reader can see therefore never
//! disappears; an applier transaction lost in a crash was never sequenced, and its events are applied (and
//! staged) again after the restart, at positions above every cursor handed out.
//!
//! **Retention.** [`prune`] deletes positioned entries older than the retention and raises `pruned_through`; a cursor
//! below it gets [`ReadError::Expired`] (410), so the consumer knows to resync from the tables.
//!
//! The module is by step: staging here ([`record`]), numbering in `sequence`, reading and retention in
//! `read`, webhook subscribers' cursors in `subscribers`.

mod read;
mod sequence;
mod subscribers;

pub use read::{Entry, Filter, Page, ReadError, bounds, lag, prune, read};
pub use sequence::{Sequenced, sequence, staging_backlog};
pub use subscribers::{
    Subscriber, delivered, failed, lock_subscriber, replay_from, skipped, subscriber, subscribers,
};

use serde_json::Value;
use sqlx::{Postgres, Transaction};

use crate::domain::{ChangeKind, ChangeSource};

/// Transaction-local setting that turns [`record`] off, staging and NOTIFY both: a rebuild recomputes the
/// tables from events the feed already carries, and sends one `rebuild` notification at its end instead of
/// one per recomputed change (a million-event rebuild would otherwise queue a million notifications).
pub(crate) const FEED_OFF_SETTING: &str = "wecom.feed_off";

/// A change as staged: what [`record`] takes from a NOTIFY payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Staged {
    pub(crate) corp_id: String,
    pub(crate) kind: ChangeKind,
    /// The changed thing within the kind.
    pub(crate) subject: String,
    /// The staff member of a contact change (the follow's other key).
    pub(crate) userid: Option<String>,
    pub(crate) change: String,
    pub(crate) source: ChangeSource,
    pub(crate) event_id: Option<i64>,
}

impl Staged {
    /// Reads a NOTIFY payload (the shapes of [`crate::sync::plan`], the resync and identity modules);
    /// `None` for one that names no corp, kind or subject.
    pub(crate) fn from_payload(p: &Value) -> Option<Staged> {
        let text = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_owned);
        let kind: ChangeKind = text("kind")?.parse().ok()?;
        let subject = match kind {
            ChangeKind::Contact => text("external_userid"),
            ChangeKind::Chat => text("chat_id"),
            ChangeKind::Tag => text("id"),
            ChangeKind::Identity => text("unionid"),
            ChangeKind::Staff => text("userid"),
            ChangeKind::Department => p.get("id").and_then(Value::as_i64).map(|i| i.to_string()),
        }?;
        // Identity payloads name how it was resolved in `source`; everything but an event is the API.
        let source = match text("source").as_deref() {
            Some("event") => ChangeSource::Event,
            _ => ChangeSource::Api,
        };
        Some(Staged {
            corp_id: text("corp_id")?,
            kind,
            subject,
            userid: (kind == ChangeKind::Contact)
                .then(|| text("userid"))
                .flatten(),
            change: text("change").unwrap_or_default(),
            source,
            event_id: p.get("event_id").and_then(Value::as_i64),
        })
    }
}

/// Stages one feed entry per payload and sends each payload on [`crate::store::projections::CHANNEL`], in
/// order, both inside `tx` (so both happen if and only if it commits). Each staged payload's NOTIFY gains
/// `"change_id"`: the feed entry's `id`. Every writer of the synced tables calls this where it notified.
pub(crate) async fn record(
    tx: &mut Transaction<'_, Postgres>,
    payloads: &[Value],
) -> Result<(), sqlx::Error> {
    if payloads.is_empty() {
        return Ok(());
    }
    let staged: Vec<Option<Staged>> = payloads.iter().map(Staged::from_payload).collect();
    let s = |f: fn(&Staged) -> Option<&str>| -> Vec<Option<&str>> {
        staged.iter().map(|x| x.as_ref().and_then(f)).collect()
    };
    // One round trip: give every payload that stages an entry its id up front (`nextval` in payload order),
    // stage the entries with the changed row as it is now inside this transaction, queue their ids, and
    // notify in payload order with each entry's id. Taking the ids up front spares numbering the inserted
    // rows back to their payloads (a window over RETURNING, sorts and two merge joins of wide rows): with
    // the row snapshots in the same statement, that numbering had cost more than the snapshots themselves
    // (3,333 changes: 100-140 ms against 50-80 ms, session 6).
    sqlx::query(
        "WITH u AS MATERIALIZED ( \
           SELECT u.*, CASE WHEN u.kind IS NOT NULL AND current_setting($10, true) IS DISTINCT FROM 'on' \
               THEN nextval('wecom_change_entries_id_seq') END AS id \
           FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
               $7::bigint[], $8::text[]) WITH ORDINALITY \
             AS u(corp_id, kind, subject, userid, change, source, event_id, data, n)), \
         ins AS ( \
           INSERT INTO wecom_change_entries (id, corp_id, kind, subject, change, source, event_id, data, state) \
           SELECT t.id, t.corp_id, t.kind, t.subject, t.change, t.source, t.event_id, t.data::json, \
             CASE t.kind \
               WHEN 'contact' THEN (SELECT to_json(f) FROM external_contact_follows f \
                 WHERE f.corp_id = t.corp_id AND f.userid = t.userid AND f.external_userid = t.subject) \
               WHEN 'chat' THEN (SELECT to_json(g) \
                 FROM external_group_chats g WHERE g.corp_id = t.corp_id AND g.chat_id = t.subject) \
               WHEN 'tag' THEN (SELECT to_json(x) FROM external_corp_tags x \
                 WHERE x.corp_id = t.corp_id AND x.id = t.subject) \
               WHEN 'identity' THEN (SELECT to_json(i) FROM customer_identities i \
                 WHERE i.corp_id = t.corp_id AND i.unionid = t.subject) \
               WHEN 'staff' THEN (SELECT to_json(s) FROM staff s \
                 WHERE s.corp_id = t.corp_id AND s.userid = t.subject) \
               WHEN 'department' THEN (SELECT to_json(d) FROM departments d \
                 WHERE d.corp_id = t.corp_id AND d.id::text = t.subject) \
             END \
           FROM u t WHERE t.id IS NOT NULL), \
         queued AS (INSERT INTO wecom_change_unsequenced (id) SELECT id FROM u WHERE id IS NOT NULL) \
         SELECT pg_notify($9, CASE WHEN u.id IS NULL THEN u.data \
                  ELSE left(u.data, -1) || ',\"change_id\":' || u.id || '}' END) \
         FROM u WHERE current_setting($10, true) IS DISTINCT FROM 'on' \
         ORDER BY u.n",
    )
    .bind(s(|x| Some(x.corp_id.as_str())))
    .bind(s(|x| Some(x.kind.as_str())))
    .bind(s(|x| Some(x.subject.as_str())))
    .bind(s(|x| x.userid.as_deref()))
    .bind(s(|x| Some(x.change.as_str())))
    .bind(s(|x| Some(x.source.as_str())))
    .bind(
        staged
            .iter()
            .map(|x| x.as_ref().and_then(|x| x.event_id))
            .collect::<Vec<_>>(),
    )
    .bind(payloads.iter().map(Value::to_string).collect::<Vec<_>>())
    .bind(crate::store::projections::CHANNEL)
    .bind(FEED_OFF_SETTING)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Turns [`record`] off for the rest of `tx` (a rebuild: see [`FEED_OFF_SETTING`]).
pub(crate) async fn off_for(tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config($1, 'on', true)")
        .bind(FEED_OFF_SETTING)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_name_their_subject() {
        let p = json!({"kind": "contact", "source": "event", "corp_id": "ww1", "external_userid": "wm1",
            "userid": "zhang", "change": "add_external_contact", "event_id": 7});
        let s = Staged::from_payload(&p).expect("staged");
        assert_eq!(s.kind, ChangeKind::Contact);
        assert_eq!(s.subject, "wm1");
        assert_eq!(s.userid.as_deref(), Some("zhang"));
        assert_eq!(s.source, ChangeSource::Event);
        assert_eq!(s.event_id, Some(7));
        let chat = json!({"kind": "chat", "source": "event", "corp_id": "ww1", "chat_id": "wr1", "change": "update"});
        assert_eq!(Staged::from_payload(&chat).expect("chat").subject, "wr1");
        let id = json!({"kind": "identity", "source": "contact_detail", "corp_id": "ww1", "unionid": "u1",
            "change": "pending_resolved"});
        let id = Staged::from_payload(&id).expect("identity");
        assert_eq!((id.subject.as_str(), id.source), ("u1", ChangeSource::Api));
        let dept = json!({"kind": "department", "source": "event", "corp_id": "ww1", "id": 3, "change": "upsert"});
        assert_eq!(Staged::from_payload(&dept).expect("dept").subject, "3");
        assert!(Staged::from_payload(&json!({"kind": "nope", "corp_id": "ww1"})).is_none());
        assert!(Staged::from_payload(&json!({"kind": "tag", "id": "t"})).is_none());
    }
}
