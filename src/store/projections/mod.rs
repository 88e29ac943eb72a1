//! Applying stored events to the projection tables (external contacts, follows, group chats, corp tags). The
//! rules are in [`crate::sync::plan`]; this module reads the events, executes their plans and marks them
//! applied.
//!
//! Every stored event is applied exactly once: a worker takes unapplied events (their ids in
//! `wecom_events_pending`, `FOR UPDATE SKIP LOCKED`, so replicas share the work), applies them and deletes
//! their pending rows in one transaction.
//! A crash between storing and applying leaves the event unapplied, and the next pass takes it.
//!
//! Order safety: see the migration. Each group of columns is a "last writer wins" register keyed by the
//! event's version `(event_time, rank, dedupe_key)`, so the tables do not depend on the order events arrive
//! in, and duplicates change nothing.
//!
//! The entry points are by path: `apply` (stored events, for the projector, `rebuild` and `replay`) ends in
//! `execute` here, one statement per table; `observe` (an API observation) runs the customer and follow
//! statements itself, to tell what they changed. The statements are by table: `contacts` (customers and
//! transfer attempts), `follows`, `chats` (chats and their members) and `tags`; the history and NOTIFY are
//! here.

mod apply;
mod chats;
mod contacts;
mod follows;
pub(crate) use follows::{COLUMNS as FOLLOW_COLUMNS, merge_clause as follow_merge_clause};
mod observe;
mod tags;

pub use apply::{BatchFailed, Shard, apply_pending, apply_pending_shard, apply_pending_with, hold};
pub(crate) use apply::{Planned, apply_rows, lock_cancelled_of, plan_batch};
pub use observe::{Observed, apply_observation};
pub(crate) use observe::{observation_tx, observe_in};
pub(crate) use tags::untag;

use sqlx::{PgPool, Postgres, Transaction};

use crate::store::projections::chats::{chats, members};
use crate::store::projections::contacts::{contact_details, contacts, transfers};
use crate::store::projections::follows::follows;
use crate::store::projections::tags::{tags, tags_of_deleted_groups, untag_deleted};
use crate::sync::plan::{Batch, HistoryRow};

/// Advisory lock key separating appliers (shared) from a rebuild (exclusive).
pub(crate) const APPLY_LOCK: i64 = 0x5745_434f_4d01;

/// The channel backends LISTEN on.
pub const CHANNEL: &str = "wecom_contact_changed";

/// A stored event as the applier reads it.
#[derive(sqlx::FromRow)]
pub(crate) struct Unapplied {
    pub(crate) id: i64,
    app: String,
    dedupe_key: String,
    corp_id: Option<String>,
    /// Event time, unix seconds.
    t: Option<i64>,
    message: String,
}

/// Executes a merged batch inside `tx`: one multi-row statement per table, rows in key order (see
/// [`Batch`]). The SQL repeats the planner's last-writer-wins rule against the stored rows.
async fn execute(tx: &mut Transaction<'_, Postgres>, b: &Batch) -> Result<(), sqlx::Error> {
    execute_log(tx, b).await?;
    execute_rows(tx, b).await
}

/// The rows of `b` that are one per event and read nothing (history, transfer attempts): written whenever,
/// so a rebuild writes them per batch of events while it keeps merging the rest (see [`execute_rows`]).
pub(crate) async fn execute_log(
    tx: &mut Transaction<'_, Postgres>,
    b: &Batch,
) -> Result<(), sqlx::Error> {
    if !b.history.is_empty() {
        history(tx, &b.history).await?;
    }
    if !b.transfers.is_empty() {
        transfers(tx, &b.transfers).await?;
    }
    Ok(())
}

/// The merged registers of `b` (and its jobs and notifications), each table's statement its own per-row
/// rule.
pub(crate) async fn execute_rows(
    tx: &mut Transaction<'_, Postgres>,
    b: &Batch,
) -> Result<(), sqlx::Error> {
    if !b.contacts.is_empty() {
        contacts(tx, b.contacts.values()).await?;
    }
    if !b.contact_details.is_empty() {
        contact_details(tx, b.contact_details.values()).await?;
    }
    if !b.follows.is_empty() {
        follows(tx, b.follows.values(), false).await?;
        // A follow of a userid renamed meanwhile goes to its successor (see the function).
        // One pair per member: the keys are sorted by (corp, userid, customer), so duplicates are adjacent.
        let mut written: Vec<(&str, &str)> = b
            .follows
            .values()
            .map(|f| (f.corp_id.as_str(), f.userid.as_str()))
            .collect();
        written.dedup();
        crate::store::directory::follows_of_renamed(tx, &written).await?;
    }
    if !b.chats.is_empty() {
        chats(tx, b.chats.values()).await?;
    }
    if !b.members.is_empty() {
        members(tx, b.members.values()).await?;
    }
    // A tag deletion's consequences WeCom does not call back about: the group's tags, the relations' tags.
    let mut consequences = Vec::new();
    if !b.tags.is_empty() {
        tags(tx, b.tags.values()).await?;
        let group_tags = tags_of_deleted_groups(tx, b.tags.values()).await?;
        consequences.extend(group_tags.iter().map(|t| t.notification()));
        consequences.extend(untag_deleted(tx, b.tags.values(), &group_tags).await?);
    }
    if !b.jobs.is_empty() {
        crate::store::jobs::enqueue_many(tx, b.jobs.values()).await?;
    }
    // Customer identity (issue 13): an add may resolve a pending id. Queues nothing without open pending ids.
    if !b.jobs.is_empty() {
        crate::store::identity::queue_resolutions(tx, b).await?;
    }
    if !b.notifications.is_empty() {
        notify(tx, &b.notifications).await?;
    }
    if !consequences.is_empty() {
        notify(tx, &consequences).await?;
    }
    Ok(())
}

fn ts(t: i64) -> f64 {
    t as f64
}

async fn history(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[HistoryRow],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO external_contact_history (event_id, corp_id, kind, subject_id, userid, change_type, event_time, details) \
         SELECT u.event_id, u.corp_id, u.kind, u.subject_id, u.userid, u.change_type, to_timestamp(u.event_time), u.details \
         FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::float8[], $8::jsonb[]) \
           AS u(event_id, corp_id, kind, subject_id, userid, change_type, event_time, details) \
         ON CONFLICT DO NOTHING",
    )
    .bind(rows.iter().map(|h| h.event_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|h| h.corp_id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|h| h.kind.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|h| h.subject_id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|h| h.userid.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|h| h.change_type.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|h| ts(h.event_time)).collect::<Vec<_>>())
    .bind(rows.iter().map(|h| &h.details).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Sends `payloads` on the change channel when (and only if) `tx` commits, in order.
pub(crate) async fn notify(
    tx: &mut Transaction<'_, Postgres>,
    payloads: &[serde_json::Value],
) -> Result<(), sqlx::Error> {
    // Delivered by PostgreSQL when (and only if) the transaction commits, in this order; each change is also
    // staged for the change feed in the same transaction (see `store::feed`).
    crate::store::feed::record(tx, payloads).await
}

/// Stored events not yet applied.
pub async fn pending_count(pool: &PgPool) -> Result<i64, sqlx::Error> {
    pending_and_held(pool).await.map(|(pending, _)| pending)
}

/// Stored events not yet applied, and of them those held back because the tables refused them (see
/// [`hold`]).
pub async fn pending_and_held(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE held_error IS NOT NULL) FROM wecom_events_pending",
    )
    .fetch_one(pool)
    .await
}
