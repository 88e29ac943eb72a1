//! `replay`: apply stored events to the synced tables again (e.g. after a fix).

use std::time::{Duration, Instant};

use super::Context;
use super::events::FilterArgs;
use crate::store;
use crate::store::rebuild::Progress;

/// Options of `replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which events.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Replay every stored event (required when no filter is given).
    #[arg(long)]
    pub all: bool,
    /// Events read and applied per batch (each batch is one short transaction).
    #[arg(long, default_value_t = store::rebuild::MAINTENANCE_BATCH, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub batch_size: i64,
}

/// Applies the chosen events again, batch by batch.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    if args.filter.is_empty() && !args.all {
        anyhow::bail!(
            "replay needs a filter (--app, --corp, --event, --change-type, --since, --until, --ids) or --all"
        );
    }
    let (pool, _) = ctx.database_pool().await?;
    let mut meter = ProgressMeter::new("replay");
    let applied = store::rebuild::replay(&pool, &args.filter.filter(), args.batch_size, |p| {
        meter.update(p)
    })
    .await?;
    meter.finish(applied);
    tracing::info!(applied, "events applied again to the synced tables");
    Ok(())
}

/// Prints a maintenance pass's progress on stderr (events done / total, rate), at most every two seconds so
/// a run over millions of events stays readable.
pub(super) struct ProgressMeter {
    what: &'static str,
    started: Instant,
    last_print: Option<Instant>,
}

impl ProgressMeter {
    pub(super) fn new(what: &'static str) -> Self {
        ProgressMeter {
            what,
            started: Instant::now(),
            last_print: None,
        }
    }

    pub(super) fn update(&mut self, p: Progress) {
        let now = Instant::now();
        if self
            .last_print
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(2))
        {
            return;
        }
        self.last_print = Some(now);
        let pct = if p.total == 0 {
            100.0
        } else {
            p.done as f64 * 100.0 / p.total as f64
        };
        eprintln!(
            "{}: {}/{} events ({pct:.1}%), {:.0} events/s",
            self.what,
            p.done,
            p.total,
            self.rate(p.done)
        );
    }

    pub(super) fn finish(&self, done: u64) {
        eprintln!(
            "{}: {done} events in {:.1} s ({:.0} events/s)",
            self.what,
            self.started.elapsed().as_secs_f64(),
            self.rate(done)
        );
    }

    fn rate(&self, done: u64) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 { done as f64 / secs } else { 0.0 }
    }
}
