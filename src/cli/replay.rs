//! `replay`: apply stored events to the synced tables again (e.g. after a fix).

use super::Context;
use super::events::FilterArgs;
use crate::store;

/// Options of `replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which events.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Replay every stored event (required when no filter is given).
    #[arg(long)]
    pub all: bool,
}

/// Marks the chosen events unapplied, then applies them.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    if args.filter.is_empty() && !args.all {
        anyhow::bail!(
            "replay needs a filter (--app, --corp, --event, --change-type, --since, --until, --ids) or --all"
        );
    }
    let (pool, _) = ctx.database_pool().await?;
    let marked = store::read::mark_for_replay(&pool, &args.filter.filter()).await?;
    let mut applied = 0;
    loop {
        let n = store::projections::apply_pending(&pool, 1000).await?;
        if n == 0 {
            break;
        }
        applied += n;
    }
    tracing::info!(marked, applied, "events applied again to the synced tables");
    Ok(())
}
