//! The feed's background tasks: the sequencer (one pass every few milliseconds while idle, back to back
//! while there is a backlog; another replica's sequencer makes this one wait) and the retention prune.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::webhooks::FeedSettings;
use crate::metrics::Metrics;
use crate::store::feed::{self, Sequenced};

/// Staging rows moved per sequencer transaction.
pub const SEQUENCE_BATCH: i64 = 5000;

/// Runs the sequencer until `token` is cancelled.
pub async fn run(
    pool: PgPool,
    settings: FeedSettings,
    metrics: Option<Metrics>,
    token: CancellationToken,
) {
    loop {
        let pause = match feed::sequence(&pool, SEQUENCE_BATCH).await {
            Ok(Sequenced::Moved { entries, .. }) => {
                if let Some(m) = &metrics {
                    m.feed_sequenced.inc_by(entries);
                }
                if entries as i64 >= SEQUENCE_BATCH {
                    Duration::ZERO
                } else {
                    settings.sequence_interval
                }
            }
            Ok(Sequenced::Busy) => settings.sequence_interval,
            Err(e) => {
                tracing::warn!(error = %e, "sequencing the change feed failed; retrying in 1 s");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Prunes feed entries past the retention every `settings.prune_interval`, until `token` is cancelled.
pub async fn prune(pool: PgPool, settings: FeedSettings, token: CancellationToken) {
    loop {
        match feed::prune(&pool, settings.retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                deleted = n,
                "change feed entries past their retention pruned"
            ),
            Err(e) => tracing::warn!(error = %e, "pruning the change feed failed; retrying later"),
        }
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(settings.prune_interval) => {}
        }
    }
}
