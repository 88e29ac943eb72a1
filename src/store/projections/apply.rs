//! Applying stored events: taking the pending ones (the projector), or given rows (`rebuild`, `replay`),
//! and planning them into one merged batch for [`super::execute`].

use std::collections::HashSet;

use sqlx::{PgPool, Postgres, Transaction};

use crate::store::projections::{APPLY_LOCK, Unapplied, execute};
use crate::sync::plan::{self, Batch, EventMeta};
use crate::wecom::message;

/// Applies up to `limit` unapplied events in one transaction. Returns how many were taken.
pub async fn apply_pending(pool: &PgPool, limit: i64) -> Result<usize, sqlx::Error> {
    apply_pending_with(pool, limit, &HashSet::new()).await
}

/// Like [`apply_pending`], and queues WeCom API enrichment jobs (in the same transaction) for events of the
/// apps in `enrich` (those configured with a secret).
pub async fn apply_pending_with(
    pool: &PgPool,
    limit: i64,
    enrich: &HashSet<String>,
) -> Result<usize, sqlx::Error> {
    apply_pending_shard(pool, limit, enrich, Shard::ALL)
        .await
        .map_err(|e| e.source)
}

/// Which pending events an applier takes: those whose `shard` (a hash of the key their writes centre on,
/// see migration `20261204200000_pending_shards`) is `index` modulo `of`. Applier k of n takes shard k of
/// n, so concurrent appliers rarely wait on each other's row locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub of: usize,
}

impl Shard {
    /// Every pending event.
    pub const ALL: Shard = Shard { index: 0, of: 1 };
}

/// A failed batch: why, and the events it had taken (none when taking them failed), so that a batch of one
/// that fails names its event exactly (see [`hold`]).
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct BatchFailed {
    /// The ids of the events the batch had taken, in id order.
    pub taken: Vec<i64>,
    #[source]
    pub source: sqlx::Error,
}

impl BatchFailed {
    fn untaken(source: sqlx::Error) -> BatchFailed {
        BatchFailed {
            taken: Vec::new(),
            source,
        }
    }
}

/// [`apply_pending_with`], taking only the events of `shard`.
pub async fn apply_pending_shard(
    pool: &PgPool,
    limit: i64,
    enrich: &HashSet<String>,
    shard: Shard,
) -> Result<usize, BatchFailed> {
    let mut tx = pool.begin().await.map_err(BatchFailed::untaken)?;
    // The synced tables are derived from committed events: if this commit is lost in a crash, the events are
    // still unapplied and are applied again. So it need not wait for its WAL flush, which would otherwise
    // compete with the receiver's commits (the ones behind `success`) for the disk.
    // The advisory lock is shared with other appliers, exclusive against a rebuild (which would otherwise
    // deadlock with us). Both in one statement: one round trip less per batch.
    sqlx::query(
        "SELECT set_config('synchronous_commit', 'off', true), pg_advisory_xact_lock_shared($1)",
    )
    .bind(APPLY_LOCK)
    .execute(&mut *tx)
    .await
    .map_err(BatchFailed::untaken)?;
    let mut taken = Vec::new();
    let applied = match apply_batch(&mut tx, limit, enrich, shard, &mut taken).await {
        Ok(n) => tx.commit().await.map(|()| n),
        Err(e) => {
            // Rolled back before returning, not on drop (which only queues it): the taken events' locks
            // are released by the time the caller retries or holds one of them. A failed rollback means
            // a broken connection, which the pool discards, releasing them too.
            let _ = tx.rollback().await;
            Err(e)
        }
    };
    applied.map_err(|source| BatchFailed { taken, source })
}

/// Takes up to `limit` unapplied events inside `tx` (passing over held ones, see [`hold`]), marks them
/// applied and applies them; their ids are in `taken` once taken.
async fn apply_batch(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
    enrich: &HashSet<String>,
    shard: Shard,
    taken: &mut Vec<i64>,
) -> Result<usize, sqlx::Error> {
    // Taking and marking in one statement: the pending rows are deleted (narrow rows, no index to insert
    // into) and the events read in the same round trip. The delete is part of this transaction, so it counts
    // only if the writes below commit too; until then other appliers skip the locked rows.
    let mut rows: Vec<Unapplied> = sqlx::query_as(
        "WITH taken AS ( \
             DELETE FROM wecom_events_pending q \
             WHERE q.id IN (SELECT id FROM wecom_events_pending \
                 WHERE ($2::int = 1 OR shard % $2::int = $3::int) \
                   AND (held_until IS NULL OR held_until <= now()) \
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING q.id) \
         SELECT e.id, e.app, e.dedupe_key, e.corp_id, extract(epoch FROM e.event_time)::bigint AS t, e.message \
         FROM wecom_events e JOIN taken USING (id)",
    )
    .bind(limit)
    .bind(i32::try_from(shard.of.max(1)).unwrap_or(1))
    .bind(i32::try_from(shard.index).unwrap_or(0))
    .fetch_all(&mut **tx)
    .await?;
    // RETURNING has no order; plans are merged in id order (history, jobs and notifications keep it).
    rows.sort_unstable_by_key(|r| r.id);
    taken.extend(rows.iter().map(|r| r.id));
    // A late event of a corp that cancelled its authorisation must not re-create its deleted rows; nor may
    // an event applied while another applier commits the cancellation (see `lock_cancelled`).
    let cancelled = lock_cancelled_of(tx, &rows).await?;
    let (ids, batch, directory, provider) = plan_rows(rows, enrich, &cancelled);
    execute(tx, &batch).await?;
    if !directory.is_empty() {
        crate::store::directory::execute(tx, &directory).await?;
    }
    // Suite events act on their first application only: a rebuild or replay must not exchange an old
    // AuthCode or cancel a corp that authorised again since.
    if !provider.is_empty() {
        crate::store::suites::execute(tx, &provider).await?;
    }
    Ok(ids.len())
}

/// The corps of `rows` (their stored corp id, or for an event stored without one, its message's) that are
/// cancelled, read under [`crate::store::corps::lock_cancelled`]'s share lock.
pub(crate) async fn lock_cancelled_of(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[Unapplied],
) -> Result<HashSet<String>, sqlx::Error> {
    // Borrowed where stored (nearly every row); parsed only for the few stored without one.
    let parsed: Vec<String> = rows
        .iter()
        .filter(|r| r.corp_id.is_none())
        .filter_map(|r| {
            message::parse_message(r.message.as_bytes())
                .ok()
                .and_then(|m| m.corp_id().map(str::to_owned))
        })
        .collect();
    let mut corps: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.corp_id.as_deref())
        .chain(parsed.iter().map(String::as_str))
        .collect();
    corps.sort_unstable();
    corps.dedup();
    crate::store::corps::lock_cancelled(tx, &corps).await
}

/// Plans `rows` (in id order) into one merged [`Batch`] and the staff directory's plan; returns the ids taken
/// with them. Events of the `cancelled` corps ([`crate::store::corps::cancelled_ids`]) plan no rows: their
/// data is deleted, and only their suite events (a new authorisation) still count.
fn plan_rows(
    rows: Vec<Unapplied>,
    enrich: &HashSet<String>,
    cancelled: &HashSet<String>,
) -> (
    Vec<i64>,
    Batch,
    crate::sync::directory::DirectoryPlan,
    crate::sync::provider::plan::ProviderPlan,
) {
    let mut ids = Vec::with_capacity(rows.len());
    let mut batch = Batch::default();
    // Suite events (tickets, authorisations) of the apps that call the API: see `sync::provider::plan`.
    let mut provider = crate::sync::provider::plan::ProviderPlan::default();
    // The staff directory (通讯录) has its own planner and executor: see `sync::directory`.
    let mut directory = crate::sync::directory::DirectoryPlan::default();
    for row in rows {
        ids.push(row.id);
        // Stored messages were parsed once already; one that no longer parses is skipped, never retried forever.
        let Ok(parsed) = message::parse_message(row.message.as_bytes()) else {
            tracing::warn!(
                event_id = row.id,
                "stored message does not parse; not applied"
            );
            continue;
        };
        let typed = crate::wecom::events::interpret(&parsed);
        if enrich.contains(&row.app) {
            provider.add(row.id, &row.app, &typed);
        }
        let Some(corp) = row.corp_id.or(typed.corp_id.clone()) else {
            continue;
        };
        if cancelled.contains(&corp) {
            continue;
        }
        let meta = EventMeta {
            id: row.id,
            app: &row.app,
            corp_id: &corp,
            time: row.t.unwrap_or(0),
            dedupe_key: &row.dedupe_key,
            enrich: enrich.contains(&row.app),
        };
        batch.add(plan::plan_event(&meta, &typed));
        directory.extend(crate::sync::directory::plan_event(&meta, &typed));
    }
    (ids, batch, directory, provider)
}

/// Plans and executes `rows` as one merged [`Batch`] inside `tx` (skipping the `cancelled` corps' events, see
/// [`plan_rows`]): the apply path of `replay` (and, planned on another thread, `rebuild`: see [`plan_batch`]),
/// sharing [`plan_rows`] and [`execute`] with the projector's [`apply_batch`]. Events still pending stay
/// pending: the projector applies them again afterwards (harmless: applying is idempotent) and only then do
/// their first-application effects happen (enrichment jobs, suite authorisations), which a rebuild, having no
/// secrets' app list, would otherwise lose. Returns how many rows were taken.
pub(crate) async fn apply_rows(
    tx: &mut Transaction<'_, Postgres>,
    rows: Vec<Unapplied>,
    enrich: &HashSet<String>,
    cancelled: &HashSet<String>,
) -> Result<usize, sqlx::Error> {
    plan_batch(rows, enrich, cancelled).execute(tx).await
}

/// Stored events planned and merged into one batch, not yet written: planning is pure, so a rebuild plans
/// its next batch on another thread while this one executes (see [`plan_batch`]).
pub(crate) struct Planned {
    /// How many events were taken (planned or skipped).
    events: usize,
    batch: Batch,
    directory: crate::sync::directory::DirectoryPlan,
}

impl Planned {
    /// Writes the batch inside `tx`; returns how many events it holds.
    pub(crate) async fn execute(
        &self,
        tx: &mut Transaction<'_, Postgres>,
    ) -> Result<usize, sqlx::Error> {
        execute(tx, &self.batch).await?;
        if !self.directory.is_empty() {
            crate::store::directory::execute(tx, &self.directory).await?;
        }
        Ok(self.events)
    }

    /// How many events, their merged plan and their staff directory plan.
    pub(crate) fn into_parts(self) -> (usize, Batch, crate::sync::directory::DirectoryPlan) {
        (self.events, self.batch, self.directory)
    }

    /// Drops the batch's change notifications: a rebuild, whose feed is off (see
    /// [`crate::store::feed::off_for`]), would otherwise stage and serialize one payload per change only for
    /// PostgreSQL to discard them all (a seventh of a rebuild's time, measured).
    pub(crate) fn without_notifications(mut self) -> Planned {
        self.batch.notifications = Vec::new();
        self
    }
}

/// Plans `rows` as [`apply_rows`] does, without writing anything.
pub(crate) fn plan_batch(
    rows: Vec<Unapplied>,
    enrich: &HashSet<String>,
    cancelled: &HashSet<String>,
) -> Planned {
    let (ids, batch, directory, _first_application_only) = plan_rows(rows, enrich, cancelled);
    Planned {
        events: ids.len(),
        batch,
        directory,
    }
}

/// Holds back the event `id`, whose batch of one failed with `error`: it stays pending, passed over until
/// `retry` from now, and `error` is kept for the status page. Returns whether it was still pending and not
/// held (false: applied meanwhile by another replica, or held already). Applying out of id order is safe:
/// the tables do not depend on the order events are applied in.
pub async fn hold(
    pool: &PgPool,
    id: i64,
    error: &str,
    retry: std::time::Duration,
) -> Result<bool, sqlx::Error> {
    let held = sqlx::query(
        "UPDATE wecom_events_pending SET held_until = now() + make_interval(secs => $2), held_error = $3 \
         WHERE id = $1 AND (held_until IS NULL OR held_until <= now())",
    )
    .bind(id)
    .bind(retry.as_secs_f64())
    .bind(error)
    .execute(pool)
    .await?;
    Ok(held.rows_affected() == 1)
}
