//! `drain`: store what another replica's spool holds, e.g. one that is gone for good (its volume re-attached
//! here, or a shared volume). The spool's lock is taken first, so a live replica's spool is refused; every
//! request is verified again before it is stored, and the dedupe key makes anything already stored harmless.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context as _;

use super::Context;
use crate::app::AppConfig;
use crate::ingest::drain;
use crate::ingest::spool::Spool;
use crate::{store, telemetry};

/// Options of `drain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spool directory to drain (another replica's; it must not be in use).
    #[arg(long, value_name = "DIR")]
    pub spool_dir: PathBuf,
}

/// Drains the spool once and prints what it did.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let settings = ctx.settings()?;
    telemetry::init(settings.log_format);
    let dir = &args.spool_dir;
    // Never create an empty spool where the operator mistyped a path.
    if !dir.is_dir() {
        anyhow::bail!(
            "{} is not a directory: give --spool-dir the spool directory of the replica to drain \
             (its WECOM_SPOOL_DIR, e.g. the mounted volume's spool/)",
            dir.display()
        );
    }
    let spool = Spool::open(dir, u64::MAX)?;
    let pool = ctx.pool(&settings.database).await?;
    let apps: HashMap<String, AppConfig> = settings
        .apps
        .iter()
        .map(|a| (a.name.clone(), a.clone()))
        .collect();
    let before = spool.bytes();
    let report = drain::drain_once_report(&spool, &pool, &apps)
        .await
        .with_context(|| {
            format!(
                "draining {} stopped ({} of {} bytes still spooled); nothing is lost: the segments not yet \
                 stored are still there, run the same command again once {} answers",
                dir.display(),
                spool.bytes(),
                before,
                store::describe(&settings.database)
            )
        })?;
    println!(
        "drained {}: {} segment(s), {} callback(s) stored ({} new, {} already stored), {} torn line(s) \
         skipped, {} rejected",
        dir.display(),
        report.segments,
        report.written,
        report.new,
        report.written - report.new,
        report.torn,
        report.rejected
    );
    if report.rejected > 0 {
        eprintln!(
            "{} callback(s) no longer verify with this configuration (e.g. their app is not configured here); \
             they are kept in {}: run drain again with the dead replica's configuration (--config)",
            report.rejected,
            dir.join("rejected.jsonl").display()
        );
    }
    if spool.bytes() > 0 {
        anyhow::bail!(
            "{} bytes are still spooled in {}: run drain again",
            spool.bytes(),
            dir.display()
        );
    }
    Ok(())
}
