//! `resync`: reconcile the synced tables with WeCom's API now, printing the drift.

use super::{Context, prepared_pool};
use crate::telemetry;

/// Options of `resync`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this app [default: every app with a secret].
    #[arg(long)]
    pub app: Option<String>,
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
    let pool = prepared_pool(&settings.database).await?;
    let api = crate::sync::client::WecomApi::new(&settings.api.base_url, pool.clone())?;
    let mut failed = 0;
    for (name, creds) in &credentials {
        match crate::sync::resync::resync(&pool, &api, name, creds, settings.api.resync_pause).await
        {
            Ok(d) => println!("{name}: {}", serde_json::to_string(&d)?),
            Err(e) => {
                failed += 1;
                eprintln!("{name}: {e}");
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} resync(s) stopped early; run again to resume");
    }
    Ok(())
}
