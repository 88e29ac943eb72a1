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

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};

use crate::domain::{ChangeKind, ChangeSource};

/// Advisory lock key of the sequencer (one per cluster at a time).
const SEQUENCER_LOCK: i64 = 0x5745_434f_4d15;

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
    // One round trip: stage (with the changed row as it is now, inside this transaction), number the staged
    // rows back to their payloads (ids are taken in insertion order, which is `n` order), notify in order.
    sqlx::query(
        "WITH u AS ( \
           SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
               $7::bigint[], $8::text[]) WITH ORDINALITY \
             AS u(corp_id, kind, subject, userid, change, source, event_id, data, n)), \
         todo AS ( \
           SELECT u.*, row_number() OVER (ORDER BY u.n) AS k FROM u \
           WHERE u.kind IS NOT NULL AND current_setting($10, true) IS DISTINCT FROM 'on'), \
         ins AS ( \
           INSERT INTO wecom_change_entries (corp_id, kind, subject, change, source, event_id, data, state) \
           SELECT t.corp_id, t.kind, t.subject, t.change, t.source, t.event_id, t.data::json, \
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
           FROM todo t ORDER BY t.k \
           RETURNING id), \
         queued AS (INSERT INTO wecom_change_unsequenced (id) SELECT id FROM ins), \
         ids AS (SELECT id, row_number() OVER (ORDER BY id) AS k FROM ins) \
         SELECT pg_notify($9, CASE WHEN ids.id IS NULL THEN u.data \
                  ELSE left(u.data, -1) || ',\"change_id\":' || ids.id || '}' END) \
         FROM u LEFT JOIN todo USING (n) LEFT JOIN ids ON ids.k = todo.k \
         WHERE current_setting($10, true) IS DISTINCT FROM 'on' \
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

/// What one sequencer pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequenced {
    /// Another session holds the sequencer lock (another replica sequences).
    Busy,
    /// Entries moved into the feed (possibly none), and the head after them.
    Moved { entries: u64, head: i64 },
}

/// One sequencer pass: numbers up to `limit` committed, unsequenced entries after the head, in id order
/// (see the module doc).
pub async fn sequence(pool: &PgPool, limit: i64) -> Result<Sequenced, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The feed is what readers trust: this commit must be durable before it is visible (see the module doc),
    // whatever the session default is.
    let locked: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock($1) FROM set_config('synchronous_commit', 'on', true)",
    )
    .bind(SEQUENCER_LOCK)
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        tx.rollback().await?;
        return Ok(Sequenced::Busy);
    }
    let head: i64 =
        sqlx::query_scalar("SELECT head FROM wecom_change_feed_state WHERE singleton FOR UPDATE")
            .fetch_one(&mut *tx)
            .await?;
    let moved: i64 = sqlx::query_scalar(
        "WITH moved AS ( \
           DELETE FROM wecom_change_unsequenced WHERE id IN \
             (SELECT id FROM wecom_change_unsequenced ORDER BY id LIMIT $2) \
           RETURNING id), \
         ins AS ( \
           INSERT INTO wecom_change_positions (position, id) \
           SELECT $1 + row_number() OVER (ORDER BY id), id FROM moved \
           RETURNING 1) \
         SELECT count(*) FROM ins",
    )
    .bind(head)
    .bind(limit.max(1))
    .fetch_one(&mut *tx)
    .await?;
    let head = head + moved;
    if moved > 0 {
        sqlx::query("UPDATE wecom_change_feed_state SET head = $1 WHERE singleton")
            .bind(head)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Sequenced::Moved {
        entries: u64::try_from(moved).unwrap_or(0),
        head,
    })
}

/// One entry of the feed, as the API and webhooks show it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Entry {
    /// The cursor of this entry: pass it as `after` to read what follows.
    pub position: i64,
    /// The entry's stable id (the same across redeliveries; `change_id` in the NOTIFY payload).
    pub id: i64,
    pub corp_id: String,
    pub kind: ChangeKind,
    /// The changed thing within the kind (external_userid, chat_id, tag id, unionid, userid, department id).
    pub subject: String,
    /// The change type (WeCom's `ChangeType`, or `resync`, `pending_resolved`, …).
    pub change: String,
    pub source: ChangeSource,
    /// The stored event that caused it; `None` for an API observation.
    pub event_id: Option<i64>,
    /// What changed: the NOTIFY payload.
    pub data: Value,
    /// The changed row after the change; `None` when there is no row.
    pub state: Option<Value>,
    /// When the change was committed (staged) and when it entered the feed.
    pub staged_at: chrono::DateTime<chrono::Utc>,
    pub sequenced_at: chrono::DateTime<chrono::Utc>,
}

impl Entry {
    /// The key changes are ordered by for delivery: one subject's entries are delivered in feed order.
    pub fn subject_key(&self) -> (String, ChangeKind, String) {
        (self.corp_id.clone(), self.kind, self.subject.clone())
    }
}

/// Which entries a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only these corps (all when empty).
    pub corps: Vec<String>,
    /// Only these kinds (all when empty).
    pub kinds: Vec<ChangeKind>,
}

/// A page of the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// The cursor to continue from: the last entry's position, or the head when the page is not full (the
    /// entries up to it did not match the filter).
    pub next: i64,
    /// The feed's head when the page was read.
    pub head: i64,
}

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Entries after the cursor were pruned (retention): the consumer missed changes.
    #[error(
        "cursor {cursor} is older than the feed's retention (entries up to {pruned_through} were pruned): \
         resync from the tables, then continue from cursor {head} / 游标早于保留期，请先从同步表全量同步，再从 {head} 继续"
    )]
    Expired {
        cursor: i64,
        pruned_through: i64,
        head: i64,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The head and the pruned watermark.
pub async fn bounds(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as("SELECT head, pruned_through FROM wecom_change_feed_state WHERE singleton")
        .fetch_one(pool)
        .await
}

/// Up to `limit` entries after `after` matching `filter`, in position order (see the module doc).
pub async fn read(
    pool: &PgPool,
    after: i64,
    limit: i64,
    filter: &Filter,
) -> Result<Page, ReadError> {
    let mut tx = pool.begin().await?;
    let (head, pruned_through): (i64, i64) =
        sqlx::query_as("SELECT head, pruned_through FROM wecom_change_feed_state WHERE singleton")
            .fetch_one(&mut *tx)
            .await?;
    if after < pruned_through {
        return Err(ReadError::Expired {
            cursor: after,
            pruned_through,
            head,
        });
    }
    let kinds: Vec<&str> = filter.kinds.iter().map(|k| k.as_str()).collect();
    let entries: Vec<Entry> = sqlx::query_as(
        "SELECT position, id, corp_id, kind, subject, change, source, event_id, data, state, staged_at, \
             sequenced_at \
         FROM wecom_changes \
         WHERE position > $1 AND position <= $2 \
           AND (cardinality($3::text[]) = 0 OR corp_id = ANY($3)) \
           AND (cardinality($4::text[]) = 0 OR kind = ANY($4)) \
         ORDER BY position LIMIT $5",
    )
    .bind(after)
    .bind(head)
    .bind(&filter.corps)
    .bind(&kinds)
    .bind(limit.max(1))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let full = entries.len() as i64 >= limit.max(1);
    let next = match entries.last() {
        Some(last) if full => last.position,
        _ => head.max(after),
    };
    Ok(Page {
        entries,
        next,
        head,
    })
}

/// Deletes the entries sequenced more than `retention` ago; returns how many.
pub async fn prune(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let cutoff: Option<i64> = sqlx::query_scalar(
        "SELECT max(position) FROM wecom_change_positions \
         WHERE sequenced_at < now() - make_interval(secs => $1)",
    )
    .bind(retention.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    let Some(cutoff) = cutoff else {
        tx.rollback().await?;
        return Ok(0);
    };
    let deleted = sqlx::query(
        "WITH gone AS (DELETE FROM wecom_change_positions WHERE position <= $1 RETURNING id) \
         DELETE FROM wecom_change_entries WHERE id IN (SELECT id FROM gone)",
    )
    .bind(cutoff)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(
        "UPDATE wecom_change_feed_state SET pruned_through = GREATEST(pruned_through, $1) WHERE singleton",
    )
    .bind(cutoff)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(deleted)
}

/// A webhook subscriber's stored cursor and delivery state.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Subscriber {
    pub name: String,
    /// Every entry at or below it is delivered (or filtered out).
    pub position: i64,
    /// Since when it is marked failing (retries failed for the whole give-up window).
    pub failing_since: Option<chrono::DateTime<chrono::Utc>>,
    /// When the current run of failures began.
    pub failures_since: Option<chrono::DateTime<chrono::Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_delivered_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The subscriber `name`, created at the feed's head when new (a new subscriber gets what changes from now
/// on; `webhooks replay --from` sends older entries).
pub async fn subscriber(pool: &PgPool, name: &str) -> Result<Subscriber, sqlx::Error> {
    sqlx::query(
        "INSERT INTO wecom_webhook_cursors (name, position) \
         SELECT $1, head FROM wecom_change_feed_state WHERE singleton ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .execute(pool)
    .await?;
    sqlx::query_as(
        "SELECT name, position, failing_since, failures_since, last_error, last_error_at, last_delivered_at \
         FROM wecom_webhook_cursors WHERE name = $1",
    )
    .bind(name)
    .fetch_one(pool)
    .await
}

/// Every stored subscriber, by name.
pub async fn subscribers(pool: &PgPool) -> Result<Vec<Subscriber>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, position, failing_since, failures_since, last_error, last_error_at, last_delivered_at \
         FROM wecom_webhook_cursors ORDER BY name",
    )
    .fetch_all(pool)
    .await
}

/// Records deliveries up to `position`, if the stored cursor is still `from` (what the sender read): a
/// `webhooks replay` meanwhile moved it, and then the replay wins. Failures are cleared either way. Returns
/// whether the cursor moved.
pub async fn delivered(
    pool: &PgPool,
    name: &str,
    from: i64,
    position: i64,
) -> Result<bool, sqlx::Error> {
    let moved: Option<bool> = sqlx::query_scalar(
        "UPDATE wecom_webhook_cursors SET \
           position = CASE WHEN position = $3 THEN GREATEST(position, $2) ELSE position END, \
           failing_since = NULL, failures_since = NULL, last_delivered_at = now(), updated_at = now() \
         WHERE name = $1 RETURNING position = GREATEST($3, $2)",
    )
    .bind(name)
    .bind(position)
    .bind(from)
    .fetch_optional(pool)
    .await?;
    Ok(moved.unwrap_or(false))
}

/// Moves the cursor from `from` up to `position` over entries filtered out or pruned (nothing was sent),
/// unless a replay moved it meanwhile.
pub async fn skipped(
    pool: &PgPool,
    name: &str,
    from: i64,
    position: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE wecom_webhook_cursors SET position = GREATEST(position, $2), updated_at = now() \
         WHERE name = $1 AND position = $3",
    )
    .bind(name)
    .bind(position)
    .bind(from)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a failed delivery attempt; marks the subscriber failing when its failures began more than
/// `give_up` ago. Returns whether it is failing now.
pub async fn failed(
    pool: &PgPool,
    name: &str,
    error: &str,
    give_up: Duration,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE wecom_webhook_cursors SET last_error = $2, last_error_at = now(), \
           failures_since = COALESCE(failures_since, now()), \
           failing_since = CASE WHEN failing_since IS NOT NULL THEN failing_since \
             WHEN COALESCE(failures_since, now()) < now() - make_interval(secs => $3) THEN now() END, \
           updated_at = now() \
         WHERE name = $1 RETURNING failing_since IS NOT NULL",
    )
    .bind(name)
    .bind(error)
    .bind(give_up.as_secs_f64())
    .fetch_one(pool)
    .await
}

/// Sets the subscriber's cursor to `position` (`webhooks replay --from`): entries after it are sent again.
/// Creates the subscriber if new. Returns whether the position is still in the feed (not pruned).
pub async fn replay_from(pool: &PgPool, name: &str, position: i64) -> Result<bool, sqlx::Error> {
    let (_, pruned_through) = bounds(pool).await?;
    sqlx::query(
        "INSERT INTO wecom_webhook_cursors (name, position) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
    )
    .bind(name)
    .bind(position)
    .execute(pool)
    .await?;
    Ok(position >= pruned_through)
}

/// How many entries after `position` are in the feed (a subscriber's lag, before its filters).
pub async fn lag(pool: &PgPool, position: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM wecom_change_positions WHERE position > $1")
        .bind(position)
        .fetch_one(pool)
        .await
}

/// Staged changes not yet sequenced, and the age in seconds of the oldest (a backlog that only grows means no
/// sequencer runs: no `serve` with `[feed] run_sequencer`).
pub async fn staging_backlog(pool: &PgPool) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), COALESCE(extract(epoch FROM now() - min(e.staged_at))::float8, 0) \
         FROM wecom_change_unsequenced u JOIN wecom_change_entries e USING (id)",
    )
    .fetch_one(pool)
    .await
}

/// First key of the per-subscriber delivery lock (the second is the name's hash).
const SUBSCRIBER_LOCK: i32 = 0x5745_4315;

/// Takes the cluster-wide lock of subscriber `name` on a connection of its own (detached from the pool, so
/// the lock goes with the connection when it is dropped): `None` when another replica holds it.
pub async fn lock_subscriber(
    pool: &PgPool,
    name: &str,
) -> Result<Option<sqlx::PgConnection>, sqlx::Error> {
    let mut conn = pool.acquire().await?.detach();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
        .bind(SUBSCRIBER_LOCK)
        .bind(name)
        .fetch_one(&mut conn)
        .await?;
    Ok(locked.then_some(conn))
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
