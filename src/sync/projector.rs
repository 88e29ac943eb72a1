//! The projector: applies stored events to the synced tables, at start-up (whatever a crash left) and then
//! continuously, woken by the event writer after each commit and by a timer for other replicas' events.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::store::projections;

/// Events applied per transaction.
const BATCH: i64 = 500;
/// Poll interval for events stored by other replicas.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Runs until the process stops.
/// `enrich`: apps with a secret, whose events queue WeCom API jobs.
pub async fn run(
    pool: PgPool,
    committed: Arc<Notify>,
    pending_gauge: Option<IntGauge>,
    enrich: HashSet<String>,
) {
    let mut failures = 0u32;
    loop {
        match projections::apply_pending_with(&pool, BATCH, &enrich).await {
            Ok(n) if n > 0 => {
                failures = 0;
                tracing::debug!(applied = n, "events applied");
                if let (Some(g), Ok(p)) = (&pending_gauge, projections::pending_count(&pool).await)
                {
                    g.set(p);
                }
            }
            Ok(_) => {
                failures = 0;
                if let Some(g) = &pending_gauge {
                    g.set(0);
                }
                let _ = tokio::time::timeout(IDLE_POLL, committed.notified()).await;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(60) {
                    tracing::warn!(error = %e, "applying events failed; retrying (events stay stored and will be applied)");
                }
                tokio::time::sleep(IDLE_POLL).await;
            }
        }
    }
}
