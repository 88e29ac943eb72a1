//! `rebuild`: recompute every synced table from `wecom_events` in one transaction.

use anyhow::Context as _;

use super::Context;
use crate::store;

/// Options of `rebuild`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Events read and applied per batch.
    #[arg(long, default_value_t = store::projections::MAINTENANCE_BATCH, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub batch_size: i64,
}

/// Rebuilds the synced tables.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let (pool, target) = ctx.database_pool().await?;
    let started = std::time::Instant::now();
    let mut meter = super::replay::ProgressMeter::new("rebuild");
    let applied = store::projections::rebuild_with(&pool, args.batch_size, |p| meter.update(p))
        .await
        .with_context(|| {
            format!("rebuilding the synced tables in {target} failed; nothing was changed")
        })?;
    meter.finish(applied);
    tracing::info!(
        events = applied,
        seconds = started.elapsed().as_secs_f64(),
        "synced tables rebuilt from wecom_events"
    );
    Ok(())
}
