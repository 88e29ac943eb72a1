//! Recomputing the synced tables from the logs: `rebuild` (everything, from the event log and the API
//! observation log, in one transaction) and `replay` (a filtered set of events applied again). Both apply
//! through the projector's set-based path ([`crate::store::projections`]).

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::{PgPool, Postgres, Transaction};

use crate::store::observations::{self, Replay};
use crate::store::projections::{self, APPLY_LOCK, Planned, Unapplied, apply_rows, plan_batch};
use crate::sync::plan::Batch;

/// How many events a `replay` reads and applies per batch (one short transaction each).
pub const MAINTENANCE_BATCH: i64 = 2000;

/// How many events a `rebuild` reads and plans per batch; it holds up to ten batches' worth of merged rows
/// before writing them (see [`rebuild_all`]), so this also bounds its memory. Far more than a replay's: the
/// rebuild is one transaction, so every write of a row leaves one more version of it that nothing can prune
/// before the commit, and later look-ups of that row walk them all. Measured on 1,000,000 events and 50,000
/// observations (BENCHMARKS.md, 2-core VM): 45-52 s and about 1 GB resident at 50,000; 83 s and about
/// 350 MB at 10,000.
pub const REBUILD_BATCH: i64 = 50_000;

/// Secondary indexes of the rebuilt tables that no statement of the rebuild reads: dropped after the
/// truncation and built again, from their own definitions, before the commit. Building an index once from
/// the finished table costs a fraction of inserting a million entries into it one by one (the history's
/// subject index is one entry per event). Unique indexes stay: `ON CONFLICT` needs them.
const BUILT_AFTER_REBUILD: &[&str] = &["external_contact_history_subject"];

/// How far a maintenance pass (rebuild, replay) has got, reported after every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Events read and applied so far.
    pub done: u64,
    /// Events the pass will read, counted when it started (events stored meanwhile may add a few).
    pub total: u64,
}

/// Turns off the connection's `statement_timeout` for the rest of the transaction. The service's timeout
/// (a few seconds, so a stuck statement cannot eat WeCom's answer budget) is right for callbacks and wrong
/// for maintenance, whose statements legitimately scan millions of rows.
async fn maintenance_tx(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Recomputes every projection from `wecom_events` and the API observation log in one transaction, so
/// readers see either the old tables or the new ones. Returns how many events were applied. See
/// [`rebuild_all`].
pub async fn rebuild(pool: &PgPool) -> Result<u64, sqlx::Error> {
    rebuild_with(pool, REBUILD_BATCH, |_| {}).await
}

/// [`rebuild_all`], returning how many events were applied.
pub async fn rebuild_with(
    pool: &PgPool,
    batch: i64,
    progress: impl FnMut(Progress),
) -> Result<u64, sqlx::Error> {
    Ok(rebuild_all(pool, batch, progress).await?.events)
}

/// What a rebuild restored.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// Events applied.
    pub events: u64,
    /// API observations replayed, per kind (`contact_detail`, `follow_entry`, `group_chat`, `corp_tags`,
    /// `mark_chat`, `mark_tags`, `sweep_follows`, `sweep_chats`, `sweep_tags`).
    pub observations: std::collections::BTreeMap<String, u64>,
    /// Observations skipped because they no longer read (written by a newer version of the service).
    pub unreadable: u64,
}

impl Rebuilt {
    /// API observations replayed, all kinds.
    pub fn observations_total(&self) -> u64 {
        self.observations.values().sum()
    }
}

/// Recomputes every projection from `wecom_events` and `wecom_api_observations` (what WeCom's API taught:
/// see [`crate::store::observations`]), so the result equals the incrementally maintained tables, API-learned
/// rows and columns included.
///
/// The event log is read in batches of `batch` events by id (keyset: `id > last ORDER BY id`), each planned
/// on a blocking thread while the one before is written. A batch's history rows and transfer attempts are
/// written at once; its merged rows join those of the batches before (and of the observations that commute
/// with events), by the projector's last-writer-wins rule, and are written when ten batches' worth are held,
/// before a batch that changes the staff directory, before an order-dependent observation and at the end:
/// merging per row is associative and commutative, so this equals applying the batches one by one, with
/// each row written once instead of once per batch. Each order-dependent observation (sweeps, marks, member
/// lists, a listing reviving a removed follow) is replayed through the code that applied it first, right
/// after the events that had been applied before it (its `events_before`), in the order observations were
/// recorded: they see what they saw.
///
/// Everything happens in one transaction with `statement_timeout` off: readers keep seeing the old tables
/// until the commit, then the new ones; appliers and API writers of every replica wait (advisory lock) until
/// then, and a failure changes nothing. Events stored while the rebuild runs are included if the rebuild
/// reaches them, else they stay unapplied and the projector takes them after the commit (applying is
/// order-independent and idempotent). `progress` is called after every batch of events.
pub async fn rebuild_all(
    pool: &PgPool,
    batch: i64,
    mut progress: impl FnMut(Progress),
) -> Result<Rebuilt, sqlx::Error> {
    let batch = batch.max(1);
    let mut tx = maintenance_tx(pool).await?;
    // Appliers (of every replica) wait until the rebuild commits.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(APPLY_LOCK)
        .execute(&mut *tx)
        .await?;
    // The feed already carries every change the rebuild recomputes.
    crate::store::feed::off_for(&mut tx).await?;
    // A cancelled corp's rows stay deleted (its events are kept for audit only; its API observations until
    // the rows go): neither plans a row. Under the exclusive lock no applier can cancel a corp meanwhile, so
    // one look-up serves the whole rebuild.
    let cancelled = crate::store::corps::cancelled_ids(&mut *tx).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_events")
        .fetch_one(&mut *tx)
        .await?;
    let total = u64::try_from(total).unwrap_or(0);
    sqlx::query(
        "TRUNCATE external_contact_history, external_group_chat_members, external_group_chats, \
         external_corp_tags, external_contact_follows, external_contacts, staff, departments",
    )
    .execute(&mut *tx)
    .await?;
    // Their definitions as the migrations made them, read back so this list names indexes only.
    let deferred: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes \
         WHERE schemaname = current_schema() AND indexname = ANY($1)",
    )
    .bind(BUILT_AFTER_REBUILD)
    .fetch_all(&mut *tx)
    .await?;
    for (name, _) in &deferred {
        // A name from the catalog, quoted as an identifier.
        let sql = format!("DROP INDEX \"{}\"", name.replace('"', "\"\""));
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await?;
    }
    let mut out = Rebuilt::default();
    let mut events = EventCursor {
        last: 0,
        reached: 0,
        batch,
        total,
        cancelled: Arc::new(cancelled),
    };
    let mut cursor = (i64::MIN, 0);
    // Everything planned and not yet written: the merged registers of every event batch and every
    // observation that commutes with events (see `Replay::Plan`), so each row is written once per
    // `merged_limit` rows planned rather than once per batch that touches it. Before an order-dependent
    // observation, and before a batch that changes the staff directory, the merged rows are written first
    // (the replay order is kept where it matters).
    let mut merged = Merged::new(batch);
    loop {
        let stored = observations::after(&mut tx, cursor, batch).await?;
        if stored.is_empty() {
            break;
        }
        for o in &stored {
            cursor = (o.events_before, o.seq);
            // Nor what WeCom's API said of a cancelled corp (kept until its rows are purged).
            if events.cancelled.contains(&o.corp_id) {
                continue;
            }
            match observations::classify(o) {
                Replay::Plan(plan) => {
                    merged.batch.add(*plan);
                    *out.observations.entry(o.kind.clone()).or_default() += 1;
                    merged.write_if_full(&mut tx).await?;
                }
                Replay::InOrder => {
                    out.events += events
                        .apply_until(
                            &mut tx,
                            Some(o.events_before),
                            &mut merged,
                            out.events,
                            &mut progress,
                        )
                        .await?;
                    merged.write(&mut tx).await?;
                    if observations::replay(&mut tx, o).await? {
                        *out.observations.entry(o.kind.clone()).or_default() += 1;
                    } else {
                        out.unreadable += 1;
                    }
                }
                Replay::Unreadable => out.unreadable += 1,
            }
        }
    }
    out.events += events
        .apply_until(&mut tx, None, &mut merged, out.events, &mut progress)
        .await?;
    merged.write(&mut tx).await?;
    for (_, definition) in &deferred {
        sqlx::query(sqlx::AssertSqlSafe(definition.clone()))
            .execute(&mut *tx)
            .await?;
    }
    // One notification for the whole rebuild instead of one per recomputed change (see
    // `feed::FEED_OFF_SETTING`): listeners re-read what they cache.
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(crate::store::projections::CHANNEL)
        .bind(
            serde_json::json!({
                "kind": "rebuild",
                "source": "rebuild",
                "events": out.events,
                "observations": out.observations_total(),
            })
            .to_string(),
        )
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(out)
}

/// What a rebuild has planned and not yet written (see [`rebuild_all`]).
struct Merged {
    /// The merged registers; its history and transfer attempts are written per event batch, and its
    /// notifications dropped (the feed is off for a rebuild).
    batch: Batch,
    /// Rows held before they are written: ten event batches' worth, which bounds the memory a rebuild
    /// takes with the batch size (`--batch-size`).
    limit: usize,
    /// Rows per statement when writing.
    slice: usize,
}

impl Merged {
    fn new(batch: i64) -> Merged {
        let batch = usize::try_from(batch).unwrap_or(1).max(1);
        Merged {
            batch: Batch::default(),
            limit: batch.saturating_mul(10),
            slice: batch,
        }
    }

    /// Writes the merged rows, `slice` rows of each table per statement.
    async fn write(&mut self, tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        self.batch.notifications = Vec::new();
        while !self.batch.is_empty() {
            let part = self.batch.take_first(self.slice);
            projections::execute_log(tx, &part).await?;
            projections::execute_rows(tx, &part).await?;
        }
        Ok(())
    }

    /// [`Merged::write`] once more than `limit` rows are held.
    async fn write_if_full(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
    ) -> Result<(), sqlx::Error> {
        if self.batch.rows() > self.limit {
            self.write(tx).await?;
        }
        Ok(())
    }
}

/// Where a rebuild is in the event log.
struct EventCursor {
    /// The last event id read.
    last: i64,
    /// Every event up to this id is applied (so a bound at or below it needs no query).
    reached: i64,
    batch: i64,
    total: u64,
    /// The corps whose events plan no rows ([`crate::store::corps::cancelled_ids`]); shared with the
    /// planning threads.
    cancelled: Arc<HashSet<String>>,
}

impl EventCursor {
    /// Applies the events after `last` up to `upper` (all when `None`) in batches, merging them into
    /// `merged`; returns how many events.
    ///
    /// Each batch is planned on a blocking thread while the batch before it is written: planning (parsing
    /// every message, merging the plans) is most of the rebuild process's own CPU, and PostgreSQL's work on
    /// the previous batch does not depend on it. A batch's history and transfer attempts are written at once;
    /// its registers join `merged`, which is written when full and before a batch that changes the staff
    /// directory (whose renames move the follows written before them).
    async fn apply_until(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        upper: Option<i64>,
        merged: &mut Merged,
        done_before: u64,
        progress: &mut impl FnMut(Progress),
    ) -> Result<u64, sqlx::Error> {
        let bound = upper.unwrap_or(i64::MAX);
        if bound <= self.reached {
            return Ok(0);
        }
        let mut done = 0;
        let mut planning: Option<tokio::task::JoinHandle<Planned>> = None;
        let mut freeing: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            let rows: Vec<Unapplied> = sqlx::query_as(
                "SELECT id, app, dedupe_key, corp_id, extract(epoch FROM event_time)::bigint AS t, message \
                 FROM wecom_events WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3",
            )
            .bind(self.last)
            .bind(bound)
            .bind(self.batch)
            .fetch_all(&mut **tx)
            .await?;
            let next = rows.last().map(|r| r.id).map(|end| {
                self.last = end;
                let cancelled = Arc::clone(&self.cancelled);
                // History is not re-fetched from WeCom on a rebuild: no enrichment jobs.
                tokio::task::spawn_blocking(move || {
                    plan_batch(rows, &HashSet::new(), &cancelled).without_notifications()
                })
            });
            if let Some(handle) = planning.take() {
                let (events, mut batch, directory) = joined(handle).await?.into_parts();
                let log = Batch {
                    history: std::mem::take(&mut batch.history),
                    transfers: std::mem::take(&mut batch.transfers),
                    ..Batch::default()
                };
                projections::execute_log(tx, &log).await?;
                merged.batch.absorb(batch);
                if directory.is_empty() {
                    merged.write_if_full(tx).await?;
                } else {
                    merged.write(tx).await?;
                    crate::store::directory::execute(tx, &directory).await?;
                }
                done += events as u64;
                progress(Progress {
                    done: done_before + done,
                    total: self.total.max(done_before + done),
                });
                // Freeing a batch's rows is CPU too: done beside the next batch's writes.
                if let Some(previous) =
                    freeing.replace(tokio::task::spawn_blocking(move || drop(log)))
                {
                    joined(previous).await?;
                }
            }
            match next {
                Some(handle) => planning = Some(handle),
                None => break,
            }
        }
        if let Some(last) = freeing {
            joined(last).await?;
        }
        self.reached = bound;
        Ok(done)
    }
}

/// What a blocking thread of the rebuild returns. Planning (and freeing) is pure: a panic there is a bug,
/// raised here as if it had run on this thread.
async fn joined<T>(handle: tokio::task::JoinHandle<T>) -> Result<T, sqlx::Error> {
    match handle.await {
        Ok(value) => Ok(value),
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only a runtime shutting down cancels a blocking task.
            Err(_) => Err(sqlx::Error::WorkerCrashed),
        },
    }
}

/// Applies the stored events matching `filter` again, in batches of `batch` by id, each batch in a short
/// transaction of its own (with `statement_timeout` off: a selective filter may scan far to fill a batch).
/// Nothing is reset first: the tables only move forward, so applying an event again is harmless, and an
/// interrupted replay leaves every event applied. An event a concurrent applier holds is skipped by the
/// replay, as that applier is applying it. Returns how many events were applied.
pub async fn replay(
    pool: &PgPool,
    filter: &crate::store::read::EventFilter,
    batch: i64,
    mut progress: impl FnMut(Progress),
) -> Result<u64, sqlx::Error> {
    let batch = batch.max(1);
    let total = {
        let mut tx = maintenance_tx(pool).await?;
        let n = crate::store::read::count_events(&mut tx, filter).await?;
        tx.commit().await?;
        n
    };
    let mut done: u64 = 0;
    let mut last: i64 = 0;
    loop {
        let mut tx = maintenance_tx(pool).await?;
        // Shared with appliers, exclusive against a rebuild.
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(APPLY_LOCK)
            .execute(&mut *tx)
            .await?;
        let rows = crate::store::read::events_after(&mut tx, filter, last, batch).await?;
        let Some(end) = rows.last().map(|r| r.id) else {
            tx.commit().await?;
            break;
        };
        last = end;
        // Looked up per batch, under a share lock like the projector's: a corp may cancel while a long
        // replay runs.
        let cancelled = crate::store::projections::lock_cancelled_of(&mut tx, &rows).await?;
        done += apply_rows(&mut tx, rows, &HashSet::new(), &cancelled).await? as u64;
        tx.commit().await?;
        progress(Progress {
            done,
            total: u64::try_from(total).unwrap_or(0).max(done),
        });
    }
    Ok(done)
}
