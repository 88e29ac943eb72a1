//! `rebuild`: recompute every synced table from `wecom_events` in one transaction.

use anyhow::Context as _;

use super::Context;
use crate::store;

/// Options of `rebuild` (none).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Rebuilds the synced tables.
pub async fn run(_args: Args, ctx: &Context) -> anyhow::Result<()> {
    let (pool, target) = ctx.database_pool().await?;
    let started = std::time::Instant::now();
    let applied = store::projections::rebuild(&pool).await.with_context(|| {
        format!("rebuilding the synced tables in {target} failed; nothing was changed")
    })?;
    tracing::info!(
        events = applied,
        seconds = started.elapsed().as_secs_f64(),
        "synced tables rebuilt from wecom_events"
    );
    Ok(())
}
