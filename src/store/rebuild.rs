//! Recomputing the synced tables from the logs: `rebuild` (everything, from the event log and the API
//! observation log, in one transaction) and `replay` (a filtered set of events applied again). Both apply
//! through the projector's set-based path ([`crate::store::projections`]).

use std::collections::HashSet;

use sqlx::{PgPool, Postgres, Transaction};

use crate::store::observations::{self, Replay};
use crate::store::projections::{APPLY_LOCK, Unapplied, apply_rows, apply_rows_with};
use crate::sync::plan::Plan;

/// How many events a `replay` reads and applies per batch (one short transaction each).
pub const MAINTENANCE_BATCH: i64 = 2000;

/// How many events a `rebuild` reads and applies per batch. Far more than a replay's: the rebuild is one
/// transaction, so every batch that touches a row leaves one more version of it that nothing can prune
/// before the commit, and later look-ups of that row walk them all; a chat or tag touched in every batch
/// gains hundreds. Larger batches also merge more events per row. Measured on 1,000,000 events (5,000 chats,
/// 2,000 tags; BENCHMARKS.md): 105 s at 2,000, 84 s at 20,000, 60 s at 50,000, 56 s at 100,000 (with about
/// 650 MB resident, against about half that at 50,000).
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
/// The event log is read in batches of `batch` events by id (keyset: `id > last ORDER BY id`) and each batch
/// is applied through the projector's set-based path. Each observation is replayed through the code that
/// applied it first, right after the events that had been applied before it (its `events_before`), in the
/// order observations were recorded: the few order-dependent rules (sweeps, member lists, a listing reviving
/// a removed follow) see what they saw.
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
        cancelled,
    };
    let mut cursor = (i64::MIN, 0);
    // Observations that commute with events (see `Replay::Plan`) wait here to be merged into the next event
    // batch, so a log with an `externalcontact/get` answer every few events keeps its batches whole. Before
    // an order-dependent observation, every waiting plan is written first (the replay order is kept where it
    // matters).
    let mut pending = Pending::default();
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
                    pending.push(o, *plan);
                    if pending.plans.len() as i64 >= batch {
                        out.events += events
                            .apply_until(
                                &mut tx,
                                Some(o.events_before),
                                &mut pending,
                                out.events,
                                &mut progress,
                            )
                            .await?;
                        pending.write(&mut tx, &mut out).await?;
                    }
                }
                Replay::InOrder => {
                    out.events += events
                        .apply_until(
                            &mut tx,
                            Some(o.events_before),
                            &mut pending,
                            out.events,
                            &mut progress,
                        )
                        .await?;
                    pending.write(&mut tx, &mut out).await?;
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
        .apply_until(&mut tx, None, &mut pending, out.events, &mut progress)
        .await?;
    pending.write(&mut tx, &mut out).await?;
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

/// Replayed observation plans waiting for the next event batch (see [`rebuild_all`]).
#[derive(Default)]
struct Pending {
    plans: Vec<Plan>,
    /// Per kind, counted into [`Rebuilt::observations`] when written.
    kinds: Vec<String>,
}

impl Pending {
    fn push(&mut self, stored: &observations::Stored, plan: Plan) {
        self.plans.push(plan);
        self.kinds.push(stored.kind.clone());
    }

    /// Hands the waiting plans to an event batch.
    fn take(&mut self, out: &mut Vec<Plan>) {
        out.append(&mut self.plans);
    }

    /// Writes the plans no event batch took (as one batch), and counts every plan since the last call.
    async fn write(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        out: &mut Rebuilt,
    ) -> Result<(), sqlx::Error> {
        if !self.plans.is_empty() {
            apply_rows_with(
                tx,
                Vec::new(),
                &HashSet::new(),
                &HashSet::new(),
                std::mem::take(&mut self.plans),
            )
            .await?;
        }
        for kind in self.kinds.drain(..) {
            *out.observations.entry(kind).or_default() += 1;
        }
        Ok(())
    }
}

/// Where a rebuild is in the event log.
struct EventCursor {
    /// The last event id applied.
    last: i64,
    /// Every event up to this id is applied (so a bound at or below it needs no query).
    reached: i64,
    batch: i64,
    total: u64,
    /// The corps whose events plan no rows ([`crate::store::corps::cancelled_ids`]).
    cancelled: HashSet<String>,
}

impl EventCursor {
    /// Applies the events after `last` up to `upper` (all when `None`) in batches, the `pending` plans merged
    /// into the first; returns how many events.
    async fn apply_until(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        upper: Option<i64>,
        pending: &mut Pending,
        done_before: u64,
        progress: &mut impl FnMut(Progress),
    ) -> Result<u64, sqlx::Error> {
        let bound = upper.unwrap_or(i64::MAX);
        if bound <= self.reached {
            return Ok(0);
        }
        let mut done = 0;
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
            let Some(end) = rows.last().map(|r| r.id) else {
                break;
            };
            self.last = end;
            let mut extra = Vec::new();
            pending.take(&mut extra);
            // History is not re-fetched from WeCom on a rebuild: no enrichment jobs.
            done +=
                apply_rows_with(tx, rows, &HashSet::new(), &self.cancelled, extra).await? as u64;
            progress(Progress {
                done: done_before + done,
                total: self.total.max(done_before + done),
            });
        }
        self.reached = bound;
        Ok(done)
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
