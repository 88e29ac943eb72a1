//! `serve`: the callback receiver. With no database configured and nothing on the local PostgreSQL port, it
//! runs a private cluster (see [`crate::tools::embedded`]).

use super::Context;
use crate::config::{self, ServeOverrides};
use crate::http::server::Application;
use crate::tools::embedded;
use crate::{store, telemetry};

/// Options of `serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Listen address, log format, replay window, read API token, spool, verification file, metrics.
    #[command(flatten)]
    pub settings: ServeOverrides,
}

/// Runs `serve` until SIGTERM or Ctrl-C.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<()> {
    let explicit_database = config::database::is_explicit(&ctx.file, &ctx.overrides.database);
    let mut settings = ctx.settings_with(Some(&args.settings))?;
    telemetry::init(settings.log_format);
    // First run on a fresh machine: no database configured and none on the local port.
    let mut private = None;
    if !explicit_database {
        let probe = ctx.embedded.probe();
        if !embedded::listening(probe) {
            let dir = ctx.private_data_dir();
            tracing::info!(%probe, dir = %dir.display(), "no DATABASE_URL and no PostgreSQL on the local port: using a private cluster");
            let bin = ctx.embedded.postgres_bin.clone();
            let pg = tokio::task::spawn_blocking(move || {
                embedded::EmbeddedPostgres::start(&dir, bin.as_deref())
            })
            .await??;
            settings.database.url = secrecy::SecretString::from(pg.url("wecom_callback"));
            private = Some(pg);
        }
    }
    let result = serve(settings).await;
    if let Some(mut pg) = private {
        tokio::task::spawn_blocking(move || pg.stop()).await?;
    }
    result
}

async fn serve(settings: config::Settings) -> anyhow::Result<()> {
    let target = store::describe(&settings.database);
    let listen = settings.http.listen;
    let apps: Vec<(String, &'static str)> = settings
        .apps
        .iter()
        .map(|a| (a.name.clone(), a.kind.as_str()))
        .collect();
    let app = Application::build(settings).await.map_err(|e| match e {
        // Each failure says what failed: a port in use is not a database problem.
        crate::http::server::StartupError::Store(e) => {
            anyhow::anyhow!("{}", super::describe_database_failure(&target, &e))
        }
        other => anyhow::Error::new(other),
    })?;
    tracing::info!(%listen, database = %target, "wecom-callback is listening");
    for (name, kind) in &apps {
        tracing::info!(
            app = %name,
            kind,
            "callback URL to enter in the WeCom admin console (接收消息服务器 URL): https://YOUR-DOMAIN/callback/{name}"
        );
    }
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}
