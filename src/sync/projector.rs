//! The projector: applies stored events to the synced tables, at start-up (whatever a crash left) and then
//! continuously, woken by the event writer after each commit and by a timer for other replicas' events.
//! Supervised by [`crate::tasks`] (restarted after a panic); how many events wait is computed at scrape time
//! (`wecom_apply_pending_events`), not here.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::projections;

/// Events applied per transaction.
const BATCH: i64 = 500;
/// Poll interval for events stored by other replicas.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Runs until `token` is cancelled. A batch under way is finished first (one transaction, bounded by the
/// statement timeout), so a stop never leaves half a batch to roll back.
/// `enrich`: apps with a secret, whose events queue WeCom API jobs.
pub async fn run(
    pool: PgPool,
    committed: Arc<Notify>,
    enrich: HashSet<String>,
    token: CancellationToken,
) {
    let mut failures = 0u32;
    while !token.is_cancelled() {
        match projections::apply_pending_with(&pool, BATCH, &enrich).await {
            Ok(n) if n > 0 => {
                failures = 0;
                tracing::debug!(applied = n, "events applied");
            }
            Ok(_) => {
                failures = 0;
                tokio::select! {
                    () = token.cancelled() => return,
                    _ = tokio::time::timeout(IDLE_POLL, committed.notified()) => {}
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(60) {
                    tracing::warn!(error = %e, "applying events failed; retrying (events stay stored and will be applied)");
                }
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(IDLE_POLL) => {}
                }
            }
        }
    }
}
