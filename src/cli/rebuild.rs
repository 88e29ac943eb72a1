//! `rebuild`: recompute every synced table from `wecom_events` and the API observation log in one
//! transaction.

use anyhow::Context as _;

use super::Context;
use crate::store;

/// Options of `rebuild`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Events read and planned per batch (also API observations read per batch); up to ten batches' worth of
    /// merged rows are held before they are written. Large on purpose (see `store::rebuild::REBUILD_BATCH`):
    /// about 1 GB resident at the default, 350 MB at 10,000; lower it only to bound memory.
    #[arg(long, default_value_t = store::rebuild::REBUILD_BATCH, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub batch_size: i64,
}

/// Rebuilds the synced tables.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    // Each statement writes up to tens of thousands of rows: seconds are expected, not worth a warning each.
    let (pool, target) = ctx
        .database_pool_logging_after(std::time::Duration::from_secs(60))
        .await?;
    let started = std::time::Instant::now();
    let mut meter = super::replay::ProgressMeter::new("rebuild");
    let rebuilt = store::rebuild::rebuild_all(&pool, args.batch_size, |p| meter.update(p))
        .await
        .with_context(|| {
            format!("rebuilding the synced tables in {target} failed; nothing was changed")
        })?;
    meter.finish(rebuilt.events);
    // What WeCom's API had taught, restored too: say so, per kind, so an operator can see nothing was lost.
    let kinds = rebuilt
        .observations
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!(
        "rebuild: {} API observations replayed{}",
        rebuilt.observations_total(),
        if kinds.is_empty() {
            String::new()
        } else {
            format!(" ({kinds})")
        }
    );
    if rebuilt.unreadable > 0 {
        eprintln!(
            "rebuild: {} API observations were stored by a newer version of wecom-callback and were skipped; \
             run the rebuild with that version, or run `wecom-callback resync` to learn again what they held",
            rebuilt.unreadable
        );
    }
    tracing::info!(
        events = rebuilt.events,
        observations = rebuilt.observations_total(),
        unreadable = rebuilt.unreadable,
        seconds = started.elapsed().as_secs_f64(),
        "synced tables rebuilt from wecom_events and wecom_api_observations"
    );
    Ok(())
}
