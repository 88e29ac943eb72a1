//! The projector: applies stored events to the synced tables, at start-up (whatever a crash left) and then
//! continuously, woken by the event writer after each commit and by a timer for other replicas' events.
//! Supervised by [`crate::tasks`] (restarted after a panic); how many events wait is computed at scrape time
//! (`wecom_apply_pending_events`), not here.
//!
//! **Batch size adapts to the backlog.** Applying costs a fixed amount per transaction (the round trips,
//! the commit, the scans for unapplied events) plus an amount per event, so events applied together are
//! cheaper per event. A batch that comes back full means a backlog: the next batch is twice as large, up to
//! `max_batch`, so a backlog of 100,000 events is applied in a few dozen large transactions. A batch that
//! comes back short means the backlog is gone: the size falls back toward `min_batch`, and the projector
//! waits for the next commit. When a commit wakes it, it first waits `coalesce` (a few milliseconds): while
//! the receiver is busy, events keep arriving meanwhile and one transaction applies them all, instead of one
//! transaction per group commit competing with the receiver for the same cores. While idle, the wait only
//! delays the notification by those few milliseconds.
//!
//! **Appliers.** `appliers` loops apply concurrently, each in its own transaction, exactly as replicas do
//! (`FOR UPDATE SKIP LOCKED` shares the events, key-ordered writes rule out deadlocks). One applier alternates
//! between planning in Rust and waiting for PostgreSQL, so on a backlog a second one keeps both busy — if
//! they do not wait on each other: two appliers taking the oldest events touch the same hot rows, and the
//! second waits for the first's commit on each. So applier k of n takes only the events of shard k of n
//! ([`projections::Shard`]: a hash of the customer, chat, tag or member the event is about), and each has
//! its own wake-up, fanned out from the writer's.
//!
//! **An event that cannot be applied stops nobody.** A failed batch is retried at half its size, down to one
//! event. When one event fails alone on what it carries (a value the tables refuse, say), the applier holds
//! it back ([`projections::hold`]): it stays stored and pending, with why (the status page shows
//! it), the log names it at `warn`, and the shard's later events are applied past it (the tables do not
//! depend on the order events are applied in). A held event is tried again after [`HELD_RETRY`], so a fix
//! (a migration, a trigger dropped) lets it through without a restart.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::ProjectorSettings;
use crate::store::projections;

/// Poll interval for events stored by other replicas.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// How long an event that failed alone is passed over before it is tried again.
pub const HELD_RETRY: Duration = Duration::from_secs(300);

/// Whether applying failed on what an event carries (a value out of range, a constraint, a trigger's
/// refusal: SQLSTATE classes 22, 23, 54 and P0), not on the connection or the server (a restart, a timeout),
/// so that a batch of one that fails so is that event's doing.
fn refused_by_the_tables(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    db.code().is_some_and(|c| {
        ["22", "23", "54", "P0"]
            .iter()
            .any(|class| c.starts_with(class))
    })
}

/// The batch size after a batch of `limit` took `taken` events: doubled after a full batch (a backlog),
/// halved toward the minimum after a short one (caught up).
pub fn next_limit(s: &ProjectorSettings, limit: usize, taken: usize) -> usize {
    if taken >= limit {
        limit.saturating_mul(2).clamp(s.min_batch, s.max_batch)
    } else {
        (limit / 2).clamp(s.min_batch, s.max_batch)
    }
}

/// Runs until `token` is cancelled. A batch under way is finished first (one transaction, bounded by the
/// statement timeout), so a stop never leaves half a batch to roll back.
/// `enrich`: apps with a secret, whose events queue WeCom API jobs.
pub async fn run(
    pool: PgPool,
    committed: Arc<Notify>,
    enrich: HashSet<String>,
    batching: ProjectorSettings,
    token: CancellationToken,
) {
    let n = batching.appliers.max(1);
    // Every applier must hear of every commit (each takes only its shard); a permit stored per applier means
    // one busy applying when the commit came still sees it.
    let wakes: Vec<Notify> = (0..n).map(|_| Notify::new()).collect();
    let fan_out = async {
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                () = committed.notified() => wakes.iter().for_each(Notify::notify_one),
            }
        }
    };
    let loops = wakes.iter().enumerate().map(|(index, wake)| {
        let shard = projections::Shard { index, of: n };
        apply_loop(&pool, wake, shard, &enrich, &batching, &token)
    });
    tokio::join!(fan_out, futures_util::future::join_all(loops));
}

/// One applier: batches sized by [`next_limit`], coalescing after a wake-up (see the module comment).
async fn apply_loop(
    pool: &PgPool,
    committed: &Notify,
    shard: projections::Shard,
    enrich: &HashSet<String>,
    batching: &ProjectorSettings,
    token: &CancellationToken,
) {
    let mut failures = 0u32;
    let mut limit = batching.min_batch;
    while !token.is_cancelled() {
        let size = i64::try_from(limit).unwrap_or(i64::MAX);
        match projections::apply_pending_shard(pool, size, enrich, shard).await {
            Ok(n) => {
                failures = 0;
                if n > 0 {
                    tracing::debug!(applied = n, limit, "events applied");
                }
                let full = n >= limit;
                limit = next_limit(batching, limit, n);
                if full {
                    // A backlog: the next batch at once.
                    continue;
                }
                tokio::select! {
                    () = token.cancelled() => return,
                    woken = tokio::time::timeout(IDLE_POLL, committed.notified()) => {
                        if woken.is_ok() && !batching.coalesce.is_zero() {
                            tokio::select! {
                                () = token.cancelled() => return,
                                () = tokio::time::sleep(batching.coalesce) => {}
                            }
                        }
                    }
                }
            }
            Err(failed) => {
                failures = failures.saturating_add(1);
                let e = failed.source;
                // The batch's one event, named by the batch itself: the oldest pending event may be another
                // one by now (a smaller id committed meanwhile).
                if let [id] = failed.taken[..]
                    && refused_by_the_tables(&e)
                {
                    match projections::hold(pool, id, &e.to_string(), HELD_RETRY).await {
                        Ok(true) => {
                            failures = 0;
                            tracing::warn!(
                                event_id = id,
                                shard = shard.index,
                                of = shard.of,
                                error = %e,
                                "stored event {id} cannot be applied to the synced tables: {e}. It stays stored and \
                                 unapplied; later events are applied past it and it is tried again in {} s. See it with \
                                 `wecom-callback events --ids {id}` / 事件 {id} 无法写入同步表，已保留待重试，其后事件照常处理",
                                HELD_RETRY.as_secs()
                            );
                            continue;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, event_id = id, "cannot hold back the event that failed alone")
                        }
                    }
                }
                if failures == 1 || failures.is_multiple_of(60) {
                    tracing::warn!(
                        error = %e,
                        shard = shard.index,
                        of = shard.of,
                        "applying events failed; retrying (events stay stored and will be applied)"
                    );
                }
                // Retried at half the size (a statement timeout on a huge batch, or one event the tables
                // refuse, which a batch of one then isolates); at once while halving, after a pause at one.
                let halving = limit > 1;
                limit = (limit / 2).max(1);
                if !halving {
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = tokio::time::sleep(IDLE_POLL) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ProjectorSettings {
        ProjectorSettings {
            min_batch: 500,
            max_batch: 4000,
            coalesce: Duration::from_millis(10),
            appliers: 2,
        }
    }

    #[test]
    fn a_backlog_doubles_the_batch_up_to_the_maximum() {
        let s = settings();
        let mut limit = s.min_batch;
        let mut seen = Vec::new();
        for _ in 0..5 {
            limit = next_limit(&s, limit, limit);
            seen.push(limit);
        }
        assert_eq!(seen, [1000, 2000, 4000, 4000, 4000]);
    }

    #[test]
    fn a_short_batch_halves_it_back_to_the_minimum() {
        let s = settings();
        assert_eq!(next_limit(&s, 4000, 3999), 2000);
        assert_eq!(next_limit(&s, 2000, 10), 1000);
        assert_eq!(next_limit(&s, 1000, 0), 500);
        assert_eq!(next_limit(&s, 500, 0), 500);
    }
}
