//! `resync`: reconcile the synced tables with WeCom's API now, printing the drift.

use super::Context;
use crate::telemetry;

/// Options of `resync`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this app [default: every app with a secret].
    #[arg(long)]
    pub app: Option<String>,
    /// Let the follow sweep remove more than `api.resync_max_removal_share` of a corp's active follows (only
    /// when you know the removals are real, e.g. after a large clean-up in WeCom).
    #[arg(long)]
    pub allow_mass_removal: bool,
    /// No progress line on the terminal (the log still has it).
    #[arg(long)]
    pub quiet: bool,
}

/// Resyncs each app with a secret; fails when any stopped early.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let settings = ctx.settings()?;
    telemetry::init(settings.log_format);
    let mut credentials = crate::sync::worker::credentials(&settings.apps);
    if let Some(name) = &args.app {
        credentials.retain(|k, _| k == name);
    }
    if credentials.is_empty() {
        anyhow::bail!(
            "no app with a secret to resync (WECOM_SECRET or secret in [[apps]]; --app names one)"
        );
    }
    let pool = ctx.pool(&settings.database).await?;
    let api = crate::sync::client::WecomApi::new(&settings.api.base_url, pool.clone())?
        .with_limits(settings.api.limits.clone());
    let mut options = crate::sync::resync::Options::new(settings.api.resync_pause);
    options.max_removal_share = settings.api.resync_max_removal_share;
    options.allow_mass_removal = args.allow_mass_removal;
    if !args.quiet {
        // On stderr, so stdout stays the drift reports.
        options.on_progress = Some(std::sync::Arc::new(|r: &crate::sync::resync::Report| {
            eprintln!("{r}");
        }));
    }
    let mut failed = 0;
    let mut refused = 0;
    let mut names: Vec<&String> = credentials.keys().collect();
    names.sort();
    for name in names {
        let Some(creds) = credentials.get(name) else {
            continue;
        };
        match crate::sync::resync::resync_with(&pool, &api, name, creds, &options).await {
            Ok(d) => {
                println!("{name}: {}", serde_json::to_string(&d)?);
                if d.follows_removal_refused > 0 {
                    refused += 1;
                    eprintln!(
                        "{name}: the sweep would have removed {} follows, more than {} % of the corp's active \
                         follows, and removed none. Check the app's visible range, secret and licences; if the \
                         removals are real, run `wecom-callback resync --allow-mass-removal`",
                        d.follows_removal_refused,
                        options.max_removal_share * 100.0
                    );
                }
                if d.skipped > 0 {
                    eprintln!(
                        "{name}: {} item(s) skipped after errors (their rows were not swept); the errors are in \
                         wecom_resync_runs.progress->'errors' and the log",
                        d.skipped
                    );
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("{name}: {e}");
            }
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} resync(s) stopped early; fix what the error says and run again to resume"
        );
    }
    if refused > 0 {
        anyhow::bail!(
            "{refused} resync(s) refused a mass removal; see above (--allow-mass-removal if it is real)"
        );
    }
    Ok(())
}
