//! The command line: one module per subcommand, each an `Args` and an `async fn run(args, ctx)`.
//!
//! `--help` is the configuration reference: every flag names its environment variable, and the environment is
//! read nowhere else (see [`crate::config`]), so the list is complete by construction.

mod corps;
mod decrypt;
mod doctor;
mod drain;
mod events;
mod explain;
mod gen_key;
mod jobs;
mod migrate;
mod rebuild;
mod replay;
mod resync;
mod send_test;
mod serve;
mod status;
mod webhooks;
mod worker;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::app::AppConfig;
use crate::config::{
    self, ApiArgs, AppArgs, DatabaseArgs, DatabaseSettings, EmbeddedArgs, FileConfig, Overrides,
    PlatformDirs, ServeOverrides, Settings,
};
use crate::store;
use crate::tools::embedded;

const AFTER_HELP: &str = "\
A single app can be configured from the environment alone (WECOM_TOKEN, WECOM_ENCODING_AES_KEY, WECOM_CORP_ID, and
WECOM_SECRET to call WeCom's API);
several apps need a configuration file (--config); see config.example.toml.
Log levels: RUST_LOG (e.g. info, debug, wecom_callback=debug).";

/// WeCom (企业微信) callback receiver.
#[derive(Debug, Parser)]
#[command(name = "wecom-callback", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// TOML configuration file (see config.example.toml).
    #[arg(
        long,
        short = 'c',
        env = "WECOM_CONFIG",
        global = true,
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// `DATABASE_URL`.
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Where the private cluster is when no database is configured (`serve` starts it, the others find it).
    #[command(flatten)]
    pub embedded: EmbeddedArgs,
    /// `WECOM_API_BASE_URL`.
    #[command(flatten)]
    pub api: ApiArgs,
    /// The single app from the environment.
    #[command(flatten)]
    pub app: AppArgs,
    /// The platform's directories (hidden; for defaults only).
    #[command(flatten)]
    pub dirs: PlatformDirs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the callback receiver (applies migrations first).
    Serve(serve::Args),
    /// Apply database migrations and exit.
    Migrate(migrate::Args),
    /// Recompute every synced table (contacts, follows, chats, tags) from the stored events.
    Rebuild(rebuild::Args),
    /// Print a fresh random Token and EncodingAESKey to paste into the WeCom admin console.
    GenKey(gen_key::Args),
    /// Verify and decrypt a captured request and say exactly which check fails.
    Decrypt(decrypt::Args),
    /// Send correctly signed, encrypted requests as WeCom would, to test a deployment end to end.
    SendTest(send_test::Args),
    /// List stored events.
    Events(events::Args),
    /// Apply stored events to the synced tables again (e.g. after a fix).
    Replay(replay::Args),
    /// Run only the WeCom API job worker (for apps with a secret), without the HTTP server.
    Worker(worker::Args),
    /// Reconcile the synced tables with WeCom's API now (contacts and follows, chats, tags); prints the drift.
    Resync(resync::Args),
    /// List WeCom API jobs (`jobs list`), or queue dead ones again (`jobs retry`).
    Jobs(jobs::Args),
    /// Check the configuration, the database, URL verification and each secret; explain every failure.
    Doctor(doctor::Args),
    /// Explain a WeCom API errcode and its usual fix (offline).
    Explain(explain::Args),
    /// Store what a stopped replica's spool holds (re-verified, deduplicated), e.g. from its re-attached volume.
    Drain(drain::Args),
    /// Show each app's state: last URL verification and its fix, callbacks by outcome, lag, jobs, resync.
    Status(status::Args),
    /// Webhook subscribers of the change feed: cursor, lag, last error (`list`); `replay --from`; `gen-secret`.
    Webhooks(webhooks::Args),
    /// List the corps that authorised a configured suite (service providers): name, state, last token,
    /// last resync, last callback.
    Corps(corps::Args),
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Context::new(
        cli.config.as_deref(),
        cli.database,
        cli.embedded,
        cli.api,
        cli.app,
        cli.dirs,
    )?;
    match cli.command {
        Command::Serve(args) => serve::run(args, &ctx).await,
        Command::Migrate(args) => migrate::run(args, &ctx).await,
        Command::Rebuild(args) => rebuild::run(args, &ctx).await,
        Command::GenKey(args) => gen_key::run(args, &ctx).await,
        Command::Decrypt(args) => decrypt::run(args, &ctx).await,
        Command::SendTest(args) => send_test::run(args, &ctx).await,
        Command::Events(args) => events::run(args, &ctx).await,
        Command::Replay(args) => replay::run(args, &ctx).await,
        Command::Worker(args) => worker::run(args, &ctx).await,
        Command::Resync(args) => resync::run(args, &ctx).await,
        Command::Jobs(args) => jobs::run(args, &ctx).await,
        Command::Doctor(args) => doctor::run(args, &ctx).await,
        Command::Explain(args) => explain::run(args, &ctx).await,
        Command::Drain(args) => drain::run(args, &ctx).await,
        Command::Status(args) => status::run(args, &ctx).await,
        Command::Webhooks(args) => webhooks::run(args, &ctx).await,
        Command::Corps(args) => corps::run(args, &ctx).await,
    }
}

/// What every command shares: the configuration file and the global flags.
pub struct Context {
    file: FileConfig,
    overrides: Overrides,
    embedded: EmbeddedArgs,
}

impl Context {
    fn new(
        config: Option<&std::path::Path>,
        database: DatabaseArgs,
        embedded: EmbeddedArgs,
        api: ApiArgs,
        app: AppArgs,
        dirs: PlatformDirs,
    ) -> anyhow::Result<Context> {
        let file = match config {
            Some(path) => config::read_file(path)?,
            None => FileConfig::default(),
        };
        Ok(Context {
            file,
            overrides: Overrides {
                database,
                api,
                app,
                dirs,
                serve: ServeOverrides::default(),
            },
            embedded,
        })
    }

    /// The validated settings, with `serve`'s own flags when given.
    fn settings_with(&self, serve: Option<&ServeOverrides>) -> anyhow::Result<Settings> {
        let overrides = match serve {
            Some(s) => Overrides {
                serve: s.clone(),
                ..self.overrides.clone()
            },
            None => self.overrides.clone(),
        };
        Ok(config::build_settings(self.file.clone(), &overrides)?)
    }

    /// The validated settings for the tools (every setting but `serve`'s own flags).
    fn settings(&self) -> anyhow::Result<Settings> {
        self.settings_with(None)
    }

    /// The database settings alone, for commands that need no app.
    fn database(&self) -> anyhow::Result<DatabaseSettings> {
        Ok(config::database_settings(&self.file, &self.overrides)?)
    }

    /// The database settings, with logging set up, as a ready pool: for the one-shot database commands.
    async fn database_pool(&self) -> anyhow::Result<(sqlx::PgPool, String)> {
        self.database_pool_logging_after(config::database::SLOW_STATEMENT)
            .await
    }

    /// [`Self::database_pool`], logging statements slower than `slow` (a bulk command's are slow by design).
    async fn database_pool_logging_after(
        &self,
        slow: std::time::Duration,
    ) -> anyhow::Result<(sqlx::PgPool, String)> {
        crate::telemetry::init(config::LogFormat::Text);
        let mut db = self.locate(self.database()?)?;
        db.slow_statement = slow;
        let pool = prepared_pool(&db).await?;
        Ok((pool, store::describe(&db)))
    }

    /// A ready pool on `db`, or on the private cluster `serve` runs when no database is configured.
    async fn pool(&self, db: &DatabaseSettings) -> anyhow::Result<sqlx::PgPool> {
        prepared_pool(&self.locate(db.clone())?).await
    }

    /// `db`, pointed at the private cluster `serve` runs when no database is configured and nothing listens
    /// on the local PostgreSQL port (the case `serve` starts its own cluster in); says so in one info line.
    /// Fails with what to do when there is no such cluster either.
    fn locate(&self, mut db: DatabaseSettings) -> anyhow::Result<DatabaseSettings> {
        if config::database::is_explicit(&self.file, &self.overrides.database) {
            return Ok(db);
        }
        let probe = self.embedded.probe();
        if embedded::listening(probe) {
            return Ok(db);
        }
        let dir = self.private_data_dir();
        let url = embedded::find_running(&dir, probe)?;
        tracing::info!(
            %probe,
            file = %dir.join(embedded::URL_FILE).display(),
            "no DATABASE_URL and no PostgreSQL on the local port: using the private cluster serve runs"
        );
        db.url = secrecy::SecretString::from(url);
        Ok(db)
    }

    /// The private cluster's data directory (`WECOM_EMBEDDED_DATA_DIR`, else the platform default).
    fn private_data_dir(&self) -> PathBuf {
        self.embedded
            .data_dir()
            .map(PathBuf::from)
            .unwrap_or_else(|| embedded::default_data_dir(&self.overrides.dirs))
    }
}

/// The one way commands get a database: create it if missing, open a pool, apply migrations.
async fn prepared_pool(db: &DatabaseSettings) -> anyhow::Result<sqlx::PgPool> {
    let target = store::describe(db);
    store::ensure_database_exists(db)
        .await
        .map_err(|e| database_failure(&target, &e))?;
    let pool = store::pool(db)?;
    store::migrate(&pool)
        .await
        .map_err(|e| database_failure(&target, &e))?;
    Ok(pool)
}

/// A database failure said once, with the fix for that failure (not a chain repeating the cause).
fn database_failure(target: &str, e: &store::StoreError) -> anyhow::Error {
    anyhow::anyhow!("{}", describe_database_failure(target, e))
}

/// What failed and the likely fix, by kind of failure: nothing listening, login refused, database missing,
/// permission, timeout, a failed migration.
pub fn describe_database_failure(target: &str, e: &store::StoreError) -> String {
    use store::StoreError;
    let sql = match e {
        StoreError::Database(sql) => sql,
        StoreError::Migrate(m) => {
            return format!(
                "the database {target} answered, but applying the migrations failed: {m}; run \
                 `wecom-callback migrate` to see it again, and check the role may create tables"
            );
        }
        other => return format!("the database {target}: {other}"),
    };
    match sql {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => format!(
            "nothing accepts connections at {target} (connection refused): start PostgreSQL (on Debian: \
             apt-get install postgresql, then pg_ctlcluster <version> main start; or scripts/ensure-postgres), \
             or point DATABASE_URL at the server you use"
        ),
        sqlx::Error::Io(io) => format!(
            "cannot reach the database at {target} ({io}): check the host and port in DATABASE_URL and that \
             this machine can reach them"
        ),
        sqlx::Error::PoolTimedOut => format!(
            "the database at {target} did not answer in time: check it is up and not overloaded, and the \
             host in DATABASE_URL"
        ),
        sqlx::Error::Tls(t) => format!(
            "the TLS handshake with the database at {target} failed ({t}): check sslmode in DATABASE_URL"
        ),
        sqlx::Error::Database(d) => {
            let msg = d.message();
            match d.code().as_deref() {
                Some("28P01") => format!(
                    "PostgreSQL at {target} refused the password ({msg}): fix the password in DATABASE_URL"
                ),
                Some("28000") => format!(
                    "PostgreSQL at {target} refused the login ({msg}): create the role (createuser), fix the user \
                     in DATABASE_URL, or let it in through pg_hba.conf"
                ),
                Some("3D000") => format!(
                    "the database in {target} does not exist and could not be created ({msg}): create it \
                     (createdb), or give the role CREATEDB"
                ),
                // From the CREATE DATABASE of a missing database: say it is missing, not a vague permission.
                Some("42501") if msg.contains("create database") => format!(
                    "the database in {target} does not exist, and this role may not create it ({msg}): \
                     create it for the role (createdb -O USER DATABASE, as user postgres), or give the role \
                     CREATEDB"
                ),
                Some("42501") => format!(
                    "the role in {target} lacks a permission ({msg}): give it CREATEDB, or ownership of the \
                     database so migrations can create tables"
                ),
                Some("57P03") => format!(
                    "PostgreSQL at {target} is starting up or shutting down ({msg}): wait a moment and retry"
                ),
                _ => format!("the database at {target} refused: {msg}"),
            }
        }
        other => format!("the database at {target} failed: {other}"),
    }
}

/// The app named by `--app`, or the only one.
fn select_app<'a>(apps: &'a [AppConfig], name: Option<&str>) -> anyhow::Result<&'a AppConfig> {
    match (name, apps) {
        (Some(n), _) => apps.iter().find(|a| a.name == n).ok_or_else(|| {
            let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
            anyhow::anyhow!("no app named {n:?}; configured: {names:?}")
        }),
        (None, [only]) => Ok(only),
        (None, _) => anyhow::bail!("several apps are configured; name one with --app"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    /// The README's endpoint tables (English and 中文) name every route the server has.
    #[test]
    fn the_readme_endpoint_tables_name_every_route() {
        let server = include_str!("../http/server.rs");
        let readme = include_str!("../../README.md");
        // From the heading to the next heading.
        let table = |heading: &str| -> String {
            let start = readme.find(heading).expect(heading) + heading.len();
            let rest = &readme[start..];
            rest[..rest.find("\n#").unwrap_or(rest.len())].to_owned()
        };
        let (en, zh) = (table("## Endpoints"), table("### 接口一览"));
        let mut routes = Vec::new();
        for piece in server.split(".route(").skip(1) {
            let path = piece.trim_start().trim_start_matches('"');
            let Some(end) = path.find('"') else { continue };
            let path = &path[..end];
            // The /api/v1 scope's routes are written relative to it (they come first in the file).
            let full = if path.starts_with("/corps")
                || path.starts_with("/miniprogram")
                || path == "/changes"
                || path == "/openapi.yaml"
            {
                format!("/api/v1{path}")
            } else {
                path.to_owned()
            };
            routes.push(full);
        }
        assert!(routes.len() >= 15, "{routes:?}");
        for r in routes.iter().filter(|r| *r != "/{file}") {
            assert!(
                en.contains(&format!("{r}`")) || en.contains(&format!("{r},")),
                "Endpoints lacks {r}"
            );
            assert!(
                zh.contains(&format!("{r}`")) || zh.contains(&format!("{r}、")),
                "接口一览 lacks {r}"
            );
        }
        for t in [&en, &zh] {
            assert!(t.contains("WW_verify_"), "{t}");
        }
    }

    /// Every variable the README names is a flag's `env`, so `--help` lists it.
    #[test]
    fn every_environment_variable_in_the_readme_is_a_flag() {
        let mut cmd = Cli::command();
        let mut envs = std::collections::BTreeSet::new();
        fn collect(cmd: &clap::Command, envs: &mut std::collections::BTreeSet<String>) {
            for a in cmd.get_arguments() {
                if let Some(e) = a.get_env() {
                    envs.insert(e.to_string_lossy().into_owned());
                }
            }
            for sub in cmd.get_subcommands() {
                collect(sub, envs);
            }
        }
        cmd.build();
        collect(&cmd, &mut envs);
        let readme = include_str!("../../README.md");
        let mut missing = Vec::new();
        for word in readme.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            let ours = (word.starts_with("WECOM_") && word.len() > "WECOM_".len())
                || word == "DATABASE_URL";
            // WECOM_FAULT_SCALE tunes the fault-injection tests, not the service.
            if ours && word != "WECOM_FAULT_SCALE" && !envs.contains(word) {
                missing.push(word.to_owned());
            }
        }
        missing.sort();
        missing.dedup();
        assert!(
            missing.is_empty(),
            "README names {missing:?}, which no flag reads"
        );

        let help = cmd
            .find_subcommand_mut("serve")
            .expect("serve")
            .render_long_help()
            .to_string();
        for env in envs
            .iter()
            .filter(|e| e.starts_with("WECOM_") || *e == "DATABASE_URL")
        {
            assert!(
                help.contains(env.as_str()),
                "serve --help does not show {env}:\n{help}"
            );
        }
    }
}
