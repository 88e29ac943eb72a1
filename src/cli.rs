//! The command line: `serve`, `migrate`, and room for more subcommands.
//!
//! `--help` is the configuration reference: every flag names its environment variable.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::configuration::{self, EnvApp, FileConfig, Overrides};
use crate::startup::Application;
use crate::{store, telemetry};

const ENV_HELP: &str = "\
A single app can be configured from environment variables alone:
  WECOM_TOKEN             the Token from the WeCom admin console (接收消息服务器配置)
  WECOM_ENCODING_AES_KEY  the 43-character EncodingAESKey from the same page
  WECOM_CORP_ID           your corpid (我的企业 → 企业信息 → 企业ID); the receive id to accept
  WECOM_RECEIVE_IDS       optional, comma-separated extra receive ids (suite id, provider corpid)
  WECOM_APP_NAME          optional, the URL path segment (default: default)
  WECOM_APP_KIND          optional: self_built (default), agency, suite_instruction, suite_data
Several apps need a configuration file (--config); see config.example.toml.
Logging: RUST_LOG (e.g. info, debug, wecom_callback=debug).";

/// WeCom (企业微信) callback receiver.
#[derive(Debug, Parser)]
#[command(name = "wecom-callback", version, about, after_help = ENV_HELP)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "WECOM_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// PostgreSQL URL [default: postgres://postgres@127.0.0.1:5432/wecom_callback].
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the callback receiver (applies migrations first).
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Recompute every synced table (contacts, follows, chats, tags) from the stored events.
    Rebuild,
}

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "WECOM_LISTEN")]
    pub listen: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "WECOM_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Refuse callbacks whose timestamp is further than this from now; 0 disables [default: 300].
    #[arg(long, env = "WECOM_TIMESTAMP_TOLERANCE_SECS")]
    pub timestamp_tolerance_secs: Option<u64>,
    /// Bearer token enabling the read API under /api/v1 (at least 16 characters) [default: API off].
    #[arg(long, env = "WECOM_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Spool directory for callbacks the database cannot take in time
    /// [default: $STATE_DIRECTORY/spool, $XDG_STATE_HOME/wecom-callback/spool or ~/.local/state/wecom-callback/spool].
    #[arg(long, env = "WECOM_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
}

impl Cli {
    fn file(&self) -> anyhow::Result<FileConfig> {
        Ok(match &self.config {
            Some(path) => configuration::read_file(path)?,
            None => FileConfig::default(),
        })
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let file = cli.file()?;
    match &cli.command {
        Command::Serve(args) => {
            let overrides = Overrides {
                listen: args.listen.clone(),
                database_url: cli.database_url.clone(),
                log_format: args.log_format.clone(),
                timestamp_tolerance_secs: args.timestamp_tolerance_secs,
                api_token: args.api_token.clone(),
                spool_dir: args.spool_dir.clone(),
                app: EnvApp::from_env(),
            };
            let settings = configuration::build_settings(file, overrides)?;
            telemetry::init(settings.log_format);
            serve(settings).await
        }
        Command::Migrate => {
            let (pool, target) = prepared_pool(&cli, &file).await?;
            drop(pool);
            tracing::info!(database = %target, "migrations applied");
            Ok(())
        }
        Command::Rebuild => {
            let (pool, target) = prepared_pool(&cli, &file).await?;
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
    }
}

/// Logging plus a migrated pool, for the one-shot commands.
async fn prepared_pool(cli: &Cli, file: &FileConfig) -> anyhow::Result<(sqlx::PgPool, String)> {
    telemetry::init(configuration::LogFormat::Text);
    let overrides = Overrides {
        database_url: cli.database_url.clone(),
        ..Overrides::default()
    };
    let db = configuration::database_settings(file, &overrides)?;
    let target = store::describe(&db);
    store::ensure_database_exists(&db)
        .await
        .with_context(|| cannot_reach(&target))?;
    let pool = store::pool(&db)?;
    store::migrate(&pool)
        .await
        .with_context(|| cannot_reach(&target))?;
    Ok((pool, target))
}

fn cannot_reach(target: &str) -> String {
    format!(
        "cannot prepare the database {target}: is PostgreSQL running and does DATABASE_URL point at it? \
         (on Debian: apt-get install postgresql && pg_ctlcluster 15 main start)"
    )
}

async fn serve(settings: configuration::Settings) -> anyhow::Result<()> {
    let target = store::describe(&settings.database);
    let listen = settings.http.listen;
    let apps: Vec<(String, &'static str)> = settings
        .apps
        .iter()
        .map(|a| (a.name.clone(), a.kind.as_str()))
        .collect();
    let app = Application::build(settings)
        .await
        .with_context(|| cannot_reach(&target))?;
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
