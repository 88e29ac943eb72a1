//! The command line: `serve`, `migrate`, and room for more subcommands.
//!
//! `--help` is the configuration reference: every flag names its environment variable.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{self, EnvApp, FileConfig, Overrides};
use crate::http::server::Application;
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
    /// WeCom API base URL [default: https://qyapi.weixin.qq.com].
    #[arg(long, env = "WECOM_API_BASE_URL", global = true)]
    pub api_base_url: Option<String>,
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
    /// Print a fresh random Token and EncodingAESKey to paste into the WeCom admin console.
    GenKey,
    /// Verify and decrypt a captured request and say exactly which check fails.
    Decrypt(DecryptArgs),
    /// Send correctly signed, encrypted requests as WeCom would, to test a deployment end to end.
    SendTest(SendTestArgs),
    /// List stored events.
    Events(EventsArgs),
    /// Apply stored events to the synced tables again (e.g. after a fix).
    Replay(ReplayArgs),
    /// Run only the WeCom API job worker (for apps with a secret), without the HTTP server.
    Worker {
        /// Concurrent jobs [default: api.worker_concurrency, 2].
        #[arg(long)]
        concurrency: Option<usize>,
    },
    /// Reconcile the synced tables with WeCom's API now (contacts and follows, chats, tags); prints the drift.
    Resync {
        /// Only this app [default: every app with a secret].
        #[arg(long)]
        app: Option<String>,
    },
    /// List WeCom API jobs, or retry dead ones.
    Jobs(JobsArgs),
    /// Check the configuration, the database, URL verification and each secret; explain every failure.
    Doctor {
        /// Your public base URL (e.g. https://example.com): URL verification is then tried through it, as
        /// WeCom would; without it, it is simulated locally.
        #[arg(long)]
        public_url: Option<String>,
    },
    /// Explain a WeCom API errcode and its usual fix (offline).
    Explain {
        /// The errcode, e.g. 60020; omit to list every known code.
        errcode: Option<i64>,
    },
}

/// Options of `jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Which jobs to list.
    #[arg(long, value_enum, default_value_t = crate::domain::JobStatus::Dead)]
    pub status: crate::domain::JobStatus,
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// Queue these dead jobs again (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    pub retry: Vec<i64>,
    /// Queue every dead job again.
    #[arg(long)]
    pub retry_all_dead: bool,
}

/// Options of `decrypt`.
#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// The app whose Token and key to use [default: the only app].
    #[arg(long)]
    pub app: Option<String>,
    /// The query string exactly as received, e.g. 'msg_signature=…&timestamp=…&nonce=…[&echostr=…]'.
    #[arg(long)]
    pub query: String,
    /// File with the POST body ('-' for standard input); omit for a GET (URL verification).
    #[arg(long)]
    pub body: Option<PathBuf>,
    /// Also print the decrypted message (it may hold personal data).
    #[arg(long)]
    pub show_plaintext: bool,
}

/// Options of `send-test`.
#[derive(Debug, Args)]
pub struct SendTestArgs {
    /// The full callback URL, e.g. https://example.com/callback/crm.
    #[arg(long)]
    pub url: String,
    /// The app whose Token and key to sign with [default: the only app].
    #[arg(long)]
    pub app: Option<String>,
    /// Event to send (repeatable): add_external_contact, edit_external_contact, add_half_external_contact,
    /// del_external_contact, del_follow_user, transfer_fail, change_external_chat, change_external_tag,
    /// change_contact, suite_ticket [default: add_external_contact].
    #[arg(long = "event")]
    pub events: Vec<String>,
    /// Receive id to put inside the ciphertext [default: the app's first].
    #[arg(long)]
    pub receive_id: Option<String>,
    /// Skip the URL verification (GET).
    #[arg(long)]
    pub no_verify: bool,
}

/// Filters shared by `events` and `replay`.
#[derive(Debug, Args)]
pub struct EventFilterArgs {
    #[arg(long)]
    pub app: Option<String>,
    #[arg(long)]
    pub corp: Option<String>,
    /// Event (or InfoType), e.g. change_external_contact.
    #[arg(long)]
    pub event: Option<String>,
    /// ChangeType, e.g. add_external_contact.
    #[arg(long)]
    pub change_type: Option<String>,
    /// Received at or after (RFC 3339, e.g. 2026-11-24T00:00:00+08:00).
    #[arg(long)]
    pub since: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Received before (RFC 3339).
    #[arg(long)]
    pub until: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Event ids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub ids: Vec<i64>,
}

impl EventFilterArgs {
    fn filter(&self) -> store::read::EventFilter {
        store::read::EventFilter {
            app: self.app.clone(),
            corp_id: self.corp.clone(),
            event: self.event.clone(),
            change_type: self.change_type.clone(),
            since: self.since.map(|t| t.with_timezone(&chrono::Utc)),
            until: self.until.map(|t| t.with_timezone(&chrono::Utc)),
            ids: (!self.ids.is_empty()).then(|| self.ids.clone()),
        }
    }

    fn is_empty(&self) -> bool {
        self.app.is_none()
            && self.corp.is_none()
            && self.event.is_none()
            && self.change_type.is_none()
            && self.since.is_none()
            && self.until.is_none()
            && self.ids.is_empty()
    }
}

/// Options of `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub filter: EventFilterArgs,
    /// Most events to list (newest first).
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Options of `replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub filter: EventFilterArgs,
    /// Replay every stored event (required when no filter is given).
    #[arg(long)]
    pub all: bool,
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
    /// A domain ownership file to serve at /NAME, as NAME=CONTENT (WeCom's WW_verify_*.txt for 可信域名).
    #[arg(long, env = "WECOM_VERIFY_FILE")]
    pub verify_file: Option<String>,
    /// Serve /metrics on this address only (e.g. 127.0.0.1:9090) instead of the main listener.
    #[arg(long, env = "WECOM_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

impl Cli {
    fn file(&self) -> anyhow::Result<FileConfig> {
        Ok(match &self.config {
            Some(path) => config::read_file(path)?,
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
                verification_file: args.verify_file.clone(),
                metrics_listen: args.metrics_listen.clone(),
                api_base_url: cli.api_base_url.clone(),
                app: EnvApp::from_env(),
            };
            let explicit_database = cli.database_url.is_some() || file.database_url.is_some();
            let mut settings = config::build_settings(file, overrides)?;
            telemetry::init(settings.log_format);
            // First run on a fresh machine: no database configured and none on the local port.
            let mut embedded = None;
            if !explicit_database {
                let probe = std::env::var("WECOM_LOCAL_PG_ADDR")
                    .ok()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 5432)));
                if !crate::tools::embedded::listening(probe) {
                    let dir = std::env::var_os("WECOM_EMBEDDED_DATA_DIR")
                        .filter(|d| !d.is_empty())
                        .map(PathBuf::from)
                        .unwrap_or_else(crate::tools::embedded::default_data_dir);
                    tracing::info!(%probe, dir = %dir.display(), "no DATABASE_URL and no PostgreSQL on the local port: using a private cluster");
                    let pg = tokio::task::spawn_blocking(move || {
                        crate::tools::embedded::EmbeddedPostgres::start(&dir)
                    })
                    .await??;
                    settings.database.url = secrecy::SecretString::from(pg.url("wecom_callback"));
                    embedded = Some(pg);
                }
            }
            let result = serve(settings).await;
            if let Some(mut pg) = embedded {
                tokio::task::spawn_blocking(move || pg.stop()).await?;
            }
            result
        }
        Command::Migrate => {
            let (pool, target) = prepared_pool(&cli, &file).await?;
            drop(pool);
            tracing::info!(database = %target, "migrations applied");
            Ok(())
        }
        Command::Explain { errcode } => {
            match errcode {
                Some(code) => match crate::wecom::errcode::explain(*code) {
                    Some(i) => println!("{}: {}\n{}", i.code, i.meaning, i.fix),
                    None => anyhow::bail!(
                        "errcode {code} is not in our table; WeCom's lookup: https://open.work.weixin.qq.com/devtool/query?e={code}"
                    ),
                },
                None => {
                    for i in crate::wecom::errcode::all() {
                        println!("{:>6}  {}\n        {}", i.code, i.meaning, i.fix);
                    }
                }
            }
            Ok(())
        }
        Command::Worker { concurrency } => {
            let settings = settings_for_tools(&cli, file)?;
            telemetry::init(settings.log_format);
            let credentials = crate::sync::worker::credentials(&settings.apps);
            if credentials.is_empty() {
                anyhow::bail!(
                    "no app has a secret (WECOM_SECRET or secret in [[apps]]): the worker has nothing to call WeCom's API with"
                );
            }
            store::ensure_database_exists(&settings.database).await?;
            let pool = store::pool(&settings.database)?;
            store::migrate(&pool).await?;
            let api = crate::sync::client::WecomApi::new(&settings.api.base_url, pool.clone())?;
            tracing::info!(apps = credentials.len(), "WeCom API job worker running");
            let w = crate::sync::worker::Worker {
                pool,
                api,
                credentials,
                max_attempts: settings.api.max_attempts,
                metrics: None,
                idle: std::time::Duration::from_secs(1),
            };
            tokio::select! {
                _ = crate::sync::worker::run(w, concurrency.unwrap_or(settings.api.worker_concurrency).max(1)) => {}
                _ = tokio::signal::ctrl_c() => tracing::info!("stopping"),
            }
            Ok(())
        }
        Command::Resync { app } => {
            let settings = settings_for_tools(&cli, file)?;
            telemetry::init(settings.log_format);
            let mut credentials = crate::sync::worker::credentials(&settings.apps);
            if let Some(name) = app {
                credentials.retain(|k, _| k == name);
            }
            if credentials.is_empty() {
                anyhow::bail!(
                    "no app with a secret to resync (WECOM_SECRET or secret in [[apps]]; --app names one)"
                );
            }
            store::ensure_database_exists(&settings.database).await?;
            let pool = store::pool(&settings.database)?;
            store::migrate(&pool).await?;
            let api = crate::sync::client::WecomApi::new(&settings.api.base_url, pool.clone())?;
            let mut failed = 0;
            for (name, creds) in &credentials {
                match crate::sync::resync::resync(
                    &pool,
                    &api,
                    name,
                    creds,
                    settings.api.resync_pause,
                )
                .await
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
        Command::Jobs(args) => {
            let (pool, _) = prepared_pool(&cli, &file).await?;
            if args.retry_all_dead || !args.retry.is_empty() {
                let ids = (!args.retry.is_empty()).then_some(args.retry.as_slice());
                let n = store::jobs::retry_dead(&pool, ids).await?;
                println!("{n} dead job(s) queued again");
                return Ok(());
            }
            let rows = store::jobs::list(&pool, args.status, args.limit.clamp(1, 10_000)).await?;
            for j in &rows {
                println!(
                    "{:>8}  {:<15} {:<10} {:<20} {:<34} attempts {:<2} {}",
                    j.id,
                    j.kind,
                    j.app,
                    j.corp_id,
                    j.subject,
                    j.attempts,
                    j.last_error.as_deref().unwrap_or("")
                );
            }
            eprintln!("{} {} job(s)", rows.len(), args.status);
            Ok(())
        }
        Command::Doctor { public_url } => doctor(&cli, file, public_url.as_deref()).await,
        Command::GenKey => {
            gen_key();
            Ok(())
        }
        Command::Decrypt(args) => decrypt_command(&cli, file, args),
        Command::SendTest(args) => send_test_command(&cli, file, args).await,
        Command::Events(args) => {
            let (pool, _) = prepared_pool(&cli, &file).await?;
            let rows =
                store::read::list_events(&pool, &args.filter.filter(), args.limit.clamp(1, 10_000))
                    .await?;
            if args.json {
                for r in &rows {
                    println!("{}", serde_json::to_string(r)?);
                }
            } else {
                println!(
                    "{:>8}  {:<25}  {:<10}  {:<20}  {:<26}  {:<26}  applied",
                    "id", "received_at", "app", "corp", "event", "change_type"
                );
                for r in &rows {
                    println!(
                        "{:>8}  {:<25}  {:<10}  {:<20}  {:<26}  {:<26}  {}",
                        r.id,
                        r.received_at.format("%Y-%m-%d %H:%M:%S%.3f"),
                        r.app,
                        r.corp_id.as_deref().unwrap_or("-"),
                        r.event.as_deref().or(r.msg_type.as_deref()).unwrap_or("-"),
                        r.change_type.as_deref().unwrap_or("-"),
                        if r.applied_at.is_some() { "yes" } else { "no" }
                    );
                }
                eprintln!("{} event(s)", rows.len());
            }
            Ok(())
        }
        Command::Replay(args) => {
            if args.filter.is_empty() && !args.all {
                anyhow::bail!(
                    "replay needs a filter (--app, --corp, --event, --change-type, --since, --until, --ids) or --all"
                );
            }
            let (pool, _) = prepared_pool(&cli, &file).await?;
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

async fn doctor(cli: &Cli, file: FileConfig, public_url: Option<&str>) -> anyhow::Result<()> {
    let mut failures = 0;
    let mut report = |ok: bool, check: &str, detail: String| {
        println!("{} {check:<22} {detail}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            failures += 1;
        }
    };
    let settings = match settings_for_tools(cli, file) {
        Ok(s) => s,
        Err(e) => {
            report(false, "configuration", format!("{e:#}"));
            anyhow::bail!("fix the configuration first");
        }
    };
    for app in &settings.apps {
        report(
            true,
            "configuration",
            format!(
                "app {:?} ({}): Token and 43-character EncodingAESKey valid, receive ids {:?}, {}",
                app.name,
                app.kind.as_str(),
                app.receive_ids,
                if app.secret.is_some() {
                    "secret set"
                } else {
                    "no secret (events only)"
                }
            ),
        );
    }

    let target = store::describe(&settings.database);
    let pool = match store::pool(&settings.database) {
        Ok(p) => Some(p),
        Err(e) => {
            report(false, "database", format!("{target}: {e}"));
            None
        }
    };
    if let Some(pool) = &pool {
        match store::readiness(pool).await {
            Ok(()) => report(true, "database", format!("{target} reachable and migrated")),
            Err(why) => report(
                false,
                "database",
                format!("{target}: {why} (start PostgreSQL, or run `wecom-callback migrate`)"),
            ),
        }
    }

    let now = chrono::Utc::now().timestamp();
    for app in &settings.apps {
        let receive_id = app.receive_ids.first().cloned().unwrap_or_default();
        let request = crate::tools::send_test::verification(app, &receive_id, now);
        match public_url {
            Some(base) => {
                let url = format!("{}/callback/{}", base.trim_end_matches('/'), app.name);
                let r = crate::tools::send_test::send(&url, std::slice::from_ref(&request)).await;
                let ok = r.first().is_some_and(|r| r.ok);
                let detail = r
                    .first()
                    .map(|r| match &r.error {
                        Some(e) => format!("{url}: {e}"),
                        None => format!("{url}: status {:?} in {} ms", r.status, r.millis),
                    })
                    .unwrap_or_default();
                report(ok, "URL verification", detail);
            }
            None => {
                let q = crate::wecom::verify::parse_query(&request.query, true);
                let ok = q
                    .map_err(crate::wecom::verify::Rejection::from)
                    .and_then(|q| crate::wecom::verify::verify_url(app, &q, now, 300))
                    .is_ok_and(|e| e.plaintext() == request.expect.as_bytes());
                report(
                    ok,
                    "URL verification",
                    format!(
                        "app {:?} simulated locally (add --public-url https://your.domain to go through your proxy)",
                        app.name
                    ),
                );
            }
        }
    }

    let credentials = crate::sync::worker::credentials(&settings.apps);
    if let (Some(pool), false) = (&pool, credentials.is_empty()) {
        let api = crate::sync::client::WecomApi::new(&settings.api.base_url, pool.clone())?;
        for (name, creds) in &credentials {
            match api.access_token(creds).await {
                Ok(_) => report(
                    true,
                    "secret (gettoken)",
                    format!(
                        "app {name:?}: the secret is valid for corp {}",
                        creds.corp_id
                    ),
                ),
                Err(e) => {
                    report(false, "secret (gettoken)", format!("app {name:?}: {e}"));
                    continue;
                }
            }
            match api.follow_user_list(creds).await {
                Ok(users) => report(
                    true,
                    "客户联系 permission",
                    format!("app {name:?}: {} member(s) with 客户联系", users.len()),
                ),
                Err(e) => report(false, "客户联系 permission", format!("app {name:?}: {e}")),
            }
        }
    }
    if failures > 0 {
        anyhow::bail!("{failures} check(s) failed");
    }
    println!("\nEverything checked passed.");
    Ok(())
}

fn gen_key() {
    use rand::Rng;
    let mut rng = rand::rng();
    let key = crate::wecom::crypto::AesKey::from_bytes(rng.random());
    let token: String = (0..32)
        .map(|_| {
            let c = rng.random_range(0..62u8);
            (match c {
                0..=9 => b'0' + c,
                10..=35 => b'a' + c - 10,
                _ => b'A' + c - 36,
            }) as char
        })
        .collect();
    println!("WECOM_TOKEN={token}");
    println!("WECOM_ENCODING_AES_KEY={}", key.to_encoding_aes_key());
    eprintln!(
        "Paste both into the WeCom admin console (应用 → 接收消息 → 设置API接收: Token and EncodingAESKey) and give the \
         same values to this service. Keep them secret."
    );
}

fn select_app<'a>(
    apps: &'a [crate::app::AppConfig],
    name: Option<&str>,
) -> anyhow::Result<&'a crate::app::AppConfig> {
    match (name, apps) {
        (Some(n), _) => apps.iter().find(|a| a.name == n).ok_or_else(|| {
            let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
            anyhow::anyhow!("no app named {n:?}; configured: {names:?}")
        }),
        (None, [only]) => Ok(only),
        (None, _) => anyhow::bail!("several apps are configured; name one with --app"),
    }
}

fn settings_for_tools(cli: &Cli, file: FileConfig) -> anyhow::Result<config::Settings> {
    let overrides = Overrides {
        database_url: cli.database_url.clone(),
        api_base_url: cli.api_base_url.clone(),
        app: EnvApp::from_env(),
        ..Overrides::default()
    };
    Ok(config::build_settings(file, overrides)?)
}

fn decrypt_command(cli: &Cli, file: FileConfig, args: &DecryptArgs) -> anyhow::Result<()> {
    let settings = settings_for_tools(cli, file)?;
    let app = select_app(&settings.apps, args.app.as_deref())?;
    let body = match &args.body {
        None => None,
        Some(p) if p.as_os_str() == "-" => {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)?;
            Some(b)
        }
        Some(p) => Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?),
    };
    let now = chrono::Utc::now().timestamp();
    let d =
        crate::tools::diagnose::diagnose(&settings.apps, app, &args.query, body.as_deref(), now);
    print!(
        "{}",
        crate::tools::diagnose::render(&d, args.show_plaintext)
    );
    if d.ok() {
        Ok(())
    } else {
        anyhow::bail!("the request does not pass")
    }
}

async fn send_test_command(cli: &Cli, file: FileConfig, args: &SendTestArgs) -> anyhow::Result<()> {
    let settings = settings_for_tools(cli, file)?;
    let app = select_app(&settings.apps, args.app.as_deref())?;
    let receive_id = args
        .receive_id
        .clone()
        .or_else(|| app.receive_ids.first().cloned())
        .unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    let marker = format!("{:08x}", rand::random::<u32>());
    let mut requests = Vec::new();
    if !args.no_verify {
        requests.push(crate::tools::send_test::verification(app, &receive_id, now));
    }
    let events = if args.events.is_empty() {
        vec!["add_external_contact".to_owned()]
    } else {
        args.events.clone()
    };
    for e in &events {
        let xml = crate::tools::send_test::sample_event(e, &receive_id, now, &marker).ok_or_else(
            || {
                anyhow::anyhow!(
                    "unknown --event {e:?}; one of {:?}",
                    crate::tools::send_test::EVENTS
                )
            },
        )?;
        requests.push(crate::tools::send_test::callback(
            app,
            &receive_id,
            &xml,
            e,
            now,
        ));
    }
    let url = args.url.trim_end_matches('/');
    let results = crate::tools::send_test::send(url, &requests).await;
    let mut failed = 0;
    for (r, req) in results.iter().zip(&requests) {
        let status = r
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "{} {:<45} status {status:<3} {:>5} ms  body {:?}{}",
            if r.ok { "ok  " } else { "FAIL" },
            r.label,
            r.millis,
            r.body,
            r.error
                .as_ref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        );
        if !r.ok {
            failed += 1;
            if r.error.is_none() {
                println!("     expected status 200 and body {:?}", req.expect);
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} requests failed", results.len());
    }
    println!(
        "All {} requests passed: {url} answers like WeCom expects.",
        results.len()
    );
    Ok(())
}

/// Logging plus a migrated pool, for the one-shot commands.
async fn prepared_pool(cli: &Cli, file: &FileConfig) -> anyhow::Result<(sqlx::PgPool, String)> {
    telemetry::init(config::LogFormat::Text);
    let overrides = Overrides {
        database_url: cli.database_url.clone(),
        ..Overrides::default()
    };
    let db = config::database_settings(file, &overrides)?;
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

async fn serve(settings: config::Settings) -> anyhow::Result<()> {
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
