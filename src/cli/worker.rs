//! `worker`: only the WeCom API job worker, without the HTTP server.

use super::Context;
use crate::sync::worker;
use crate::telemetry;

/// Options of `worker`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Concurrent jobs [default: api.worker_concurrency].
    #[arg(long)]
    pub concurrency: Option<usize>,
}

/// Runs jobs until SIGTERM or SIGINT, then lets the jobs under way finish (at most 10 s).
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let settings = ctx.settings()?;
    telemetry::init(settings.log_format);
    let credentials = worker::credentials(&settings.apps);
    if credentials.is_empty() && !settings.provider.is_enabled() {
        anyhow::bail!(
            "no app has a secret (WECOM_SECRET or secret in [[apps]]): the worker has nothing to call WeCom's API with"
        );
    }
    let pool = ctx.pool(&settings.database).await?;
    let api = crate::sync::client::WecomApi::new(&settings.api.base_url, pool.clone())?
        .with_limits(settings.api.limits.clone());
    tracing::info!(apps = credentials.len(), "WeCom API job worker running");
    let w = worker::Worker {
        pool,
        api,
        credentials,
        max_attempts: settings.api.max_attempts,
        metrics: None,
        idle: std::time::Duration::from_secs(1),
        provider: settings.provider.clone(),
        wake: None,
    };
    let concurrency = args
        .concurrency
        .unwrap_or(settings.api.worker_concurrency)
        .max(1);
    let token = tokio_util::sync::CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        crate::http::server::shutdown_signal().await;
        tracing::info!("stop requested: finishing the jobs under way");
        stop.cancel();
    });
    worker::run_until(w, concurrency, token).await;
    Ok(())
}
