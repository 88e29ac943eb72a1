//! Configuration: a TOML file, environment variables and command-line flags, validated once at start-up.
//!
//! Precedence, highest first: command-line flag, environment variable, file, built-in default. The defaults
//! live in one place, the `Default` impls in [`file`]. The environment is read only through clap: every
//! variable is an `env = "…"` on a flag of an [`Overrides`] part, so `wecom-callback serve --help` lists them
//! all. A single app can be configured from environment variables alone (`WECOM_TOKEN`,
//! `WECOM_ENCODING_AES_KEY`, `WECOM_CORP_ID`, ...); several apps need a file with one `[[apps]]` table each.
//!
//! One concern per module, each naming its environment variables: [`file`] (the TOML file and the defaults),
//! [`database`], [`dirs`] (platform directories), [`http`], [`store`], [`projector`], [`spool`], [`api`] (WeCom's API), [`limits`] (its limits across replicas), [`apps`], [`webhooks`] (the change feed and its subscribers). Here: [`Settings`],
//! [`build_settings`], [`ConfigError`]; and `WECOM_LOG_FORMAT` ([`ServeOverrides`]).
//!
//! Every problem is reported at once, each naming the setting and the fix, so an operator fixes the file in one
//! pass instead of one restart per mistake.

pub mod api;
pub mod apps;
pub mod capture;
pub mod database;
pub mod dirs;
pub mod file;
pub mod http;
pub mod limits;
pub mod projector;
pub mod spool;
pub mod store;
pub mod suites;
pub mod webhooks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

use crate::app::{AppConfig, AppKind};

pub use api::{ApiArgs, ApiSettings};
pub use apps::{AppArgs, FileApp};
pub use capture::CaptureSettings;
pub use database::{DatabaseArgs, DatabaseSettings, EmbeddedArgs, redact_url};
pub use dirs::PlatformDirs;
pub use file::{
    DEFAULT_APP_NAME, DEFAULT_DATABASE_URL, DEFAULT_LISTEN, DEFAULT_TIMESTAMP_TOLERANCE_SECS,
    FileConfig, read_file,
};
pub use http::{HttpArgs, HttpSettings};
pub use projector::ProjectorSettings;
pub use spool::{SpoolArgs, SpoolSettings, default_spool_dir};
pub use store::StoreSettings;

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the request id.
    Json,
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// PostgreSQL.
    pub database: DatabaseSettings,
    /// The HTTP server.
    pub http: HttpSettings,
    /// Group commit.
    pub store: StoreSettings,
    /// Log output format.
    pub log_format: LogFormat,
    /// The callback URLs served.
    pub apps: Vec<AppConfig>,
    /// Bearer token for the read API; the API is off without one.
    pub api_token: Option<SecretString>,
    /// Apply stored events to the synced tables inside `serve`.
    pub run_projector: bool,
    /// How the projector batches events.
    pub projector: ProjectorSettings,
    /// The local spool.
    pub spool: SpoolSettings,
    /// Captured rejections (for `decrypt --last`).
    pub capture: CaptureSettings,
    /// Domain ownership files served at `/{name}` (WeCom's WW_verify_*.txt for 可信域名).
    pub verification_files: BTreeMap<String, String>,
    /// A separate listen address for `/metrics` (then it is not served on the main one).
    pub metrics_listen: Option<SocketAddr>,
    /// WeCom's API.
    pub api: ApiSettings,
    /// The change feed (`[feed]`).
    pub feed: webhooks::FeedSettings,
    /// Webhook subscribers (`[[webhooks]]`).
    pub webhooks: Vec<webhooks::WebhookSettings>,
    /// Service providers: `[[suites]]` and `[provider]`.
    pub provider: crate::sync::provider::Provider,
    /// Test-only fault: answer success before the commit. Exists so the fault-injection checker can prove it
    /// catches exactly this bug; never settable from a file or the environment.
    #[doc(hidden)]
    pub fault_ack_before_commit: bool,
    /// Test-only fault: the named background tasks (see [`crate::tasks`]) panic once, so tests can prove each
    /// is supervised; never settable from a file or the environment.
    #[doc(hidden)]
    pub fault_panic_once: Vec<String>,
}

impl Settings {
    /// The app configured under `name`.
    pub fn app(&self, name: &str) -> Option<&AppConfig> {
        self.apps.iter().find(|a| a.name == name)
    }

    /// The settings every default gives, serving `apps` from the database at `database_url`, without a spool
    /// (its default directory depends on the machine). Tests and embedders start here and change what they
    /// need, so no default is written twice.
    pub fn defaults(apps: Vec<AppConfig>, database_url: &str) -> Result<Settings, ConfigError> {
        let overrides = Overrides {
            database: DatabaseArgs {
                database_url: Some(SecretString::from(database_url)),
            },
            ..Overrides::default()
        };
        let mut problems = Vec::new();
        let mut settings = assemble(FileConfig::default(), &overrides, apps, &mut problems);
        settings.spool.dir = None;
        settings.capture.dir = None;
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// Why the configuration was refused: every problem found, each with its fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` / `WECOM_CONFIG` cannot be read.
    #[error("cannot read the configuration file {path} (check --config / WECOM_CONFIG)")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML, or has a key we do not know (often a typo).
    #[error(
        "the configuration file {path} is not valid: {detail} (compare it with config.example.toml)"
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why: the line number and the parser's message, never the line itself (it may hold a
        /// Token, EncodingAESKey or secret).
        detail: String,
    },
    /// Every problem found, each naming the setting and the fix.
    #[error("the configuration has {} problem(s):\n{}", .0.len(), bullet_list(.0))]
    Invalid(Vec<String>),
}

fn bullet_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("  - {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Values from the command line and the environment (parsed by clap); `None` where neither gave one.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `DATABASE_URL`.
    pub database: DatabaseArgs,
    /// `WECOM_API_BASE_URL`.
    pub api: ApiArgs,
    /// The single-app variables (`WECOM_TOKEN`, ...).
    pub app: AppArgs,
    /// `STATE_DIRECTORY`, `XDG_STATE_HOME`, `HOME` (for the default spool directory).
    pub dirs: PlatformDirs,
    /// `serve`'s own flags; all `None` for the other commands.
    pub serve: ServeOverrides,
}

/// The flags only `serve` takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeOverrides {
    /// Listen address, replay window, read API token, verification file, metrics listener.
    #[command(flatten)]
    pub http: HttpArgs,
    /// The spool directory.
    #[command(flatten)]
    pub spool: SpoolArgs,
    /// Log format.
    #[arg(long, env = "WECOM_LOG_FORMAT", value_enum, value_name = "FORMAT",
          help = format!("Log format [default: {}]", FileConfig::default().log_format))]
    pub log_format: Option<LogFormat>,
}

/// Builds the database settings alone (for commands such as `migrate` that need no app).
pub fn database_settings(
    file: &FileConfig,
    overrides: &Overrides,
) -> Result<DatabaseSettings, ConfigError> {
    let mut problems = Vec::new();
    let db = database::build(file, &overrides.database, &mut problems);
    if problems.is_empty() {
        Ok(db)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Validates everything `serve` needs; every problem at once.
pub fn build_settings(
    mut file: FileConfig,
    overrides: &Overrides,
) -> Result<Settings, ConfigError> {
    let mut problems = Vec::new();
    let (provider, suite_apps) = suites::build(
        std::mem::take(&mut file.suites),
        &file.provider,
        overrides.api.secret_key.as_ref(),
        &mut problems,
    );
    // Suites alone are a complete configuration: their instruction URLs are apps.
    let mut apps = if suite_apps.is_empty() || !file.apps.is_empty() || overrides.app.is_set() {
        apps::build(
            std::mem::take(&mut file.apps),
            &overrides.app,
            &mut problems,
        )
    } else {
        Vec::new()
    };
    for a in suite_apps {
        if apps.iter().any(|b| b.name == a.name) {
            problems.push(format!(
                "suites: the name {:?} is also an [[apps]] name; names must be unique (each is a URL path)",
                a.name
            ));
        } else {
            apps.push(a);
        }
    }
    for (i, suite) in provider.suites.iter().enumerate() {
        for d in &suite.data_apps {
            match apps.iter().find(|a| &a.name == d) {
                Some(a) if matches!(a.kind, AppKind::SuiteData | AppKind::Agency) => {}
                Some(a) => problems.push(format!(
                    "suites[{i}].data_apps: app {d:?} is of kind {}; a suite's data URL is suite_data (第三方数据回调) \
                     or agency (代开发应用的回调URL)",
                    a.kind.as_str()
                )),
                None => problems.push(format!(
                    "suites[{i}].data_apps: no [[apps]] entry is named {d:?}; add it (kind suite_data or agency)"
                )),
            }
        }
    }
    let mut settings = assemble(file, overrides, apps, &mut problems);
    settings.provider = provider;
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Everything but the apps, with the problems found pushed to `problems`.
fn assemble(
    mut file: FileConfig,
    overrides: &Overrides,
    apps: Vec<AppConfig>,
    problems: &mut Vec<String>,
) -> Settings {
    let database = database::build(&file, &overrides.database, problems);
    let (http, extras) = http::build(&mut file, &overrides.serve.http, problems);
    let store = store::build(&file);
    if store.max_in_flight_batches as u32 > database.max_connections {
        problems.push(format!(
            "store.max_in_flight_batches ({}) exceeds database.max_connections ({}); \
             each batch needs a connection",
            store.max_in_flight_batches, database.max_connections
        ));
    }
    let log_format = match overrides.serve.log_format {
        Some(f) => f,
        None => match file.log_format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                problems.push(format!(
                    "WECOM_LOG_FORMAT / log_format {other:?} is unknown; use text or json"
                ));
                LogFormat::default()
            }
        },
    };
    let spool = spool::build(
        &file,
        &overrides.serve.spool,
        &overrides.dirs,
        http.request_deadline,
        problems,
    );
    let capture = capture::build(&file, &overrides.dirs, spool.dir.as_deref(), problems);
    let api = api::build(&file, &overrides.api, problems);
    let feed = webhooks::build_feed(&file);
    let webhooks = webhooks::build_webhooks(&file, problems);
    Settings {
        database,
        http,
        store,
        log_format,
        apps,
        api_token: extras.api_token,
        run_projector: file.run_projector,
        projector: projector::build(&file),
        spool,
        capture,
        verification_files: extras.verification_files,
        metrics_listen: extras.metrics_listen,
        api,
        feed,
        webhooks,
        provider: Default::default(),
        fault_ack_before_commit: false,
        fault_panic_once: Vec::new(),
    }
}

/// clap value parser for secrets: kept out of `Debug` output from the moment they are parsed.
fn secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s))
}

/// clap value parser for addresses, with the fix in the message.
fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        "not an address: write IP:PORT, e.g. 0.0.0.0:8080 (all interfaces) or 127.0.0.1:8080 (loopback only)"
            .to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AppKind;
    use std::time::Duration;

    const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

    fn env_app() -> AppArgs {
        AppArgs {
            token: Some("QDG6eK".into()),
            encoding_aes_key: Some(KEY.into()),
            corp_id: Some("wx5823bf96d3bd56c7".into()),
            ..AppArgs::default()
        }
    }

    fn problems(r: Result<Settings, ConfigError>) -> Vec<String> {
        match r {
            Err(ConfigError::Invalid(p)) => p,
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("expected problems"),
        }
    }

    #[test]
    fn single_app_from_env_alone() {
        let s = build_settings(
            FileConfig::default(),
            &Overrides {
                app: env_app(),
                ..Overrides::default()
            },
        )
        .expect("valid");
        assert_eq!(s.apps.len(), 1);
        assert_eq!(s.apps[0].name, "default");
        assert_eq!(s.apps[0].kind, AppKind::SelfBuilt);
        assert_eq!(s.apps[0].receive_ids, vec!["wx5823bf96d3bd56c7"]);
        assert_eq!(s.http.timestamp_tolerance, Duration::from_secs(300));
        assert_eq!(s.http.max_body_bytes, 65536);
    }

    #[test]
    fn key_with_trailing_equals_names_the_fix() {
        let mut app = env_app();
        app.encoding_aes_key = Some(format!("{KEY}=").into());
        let p = problems(build_settings(
            FileConfig::default(),
            &Overrides {
                app,
                ..Overrides::default()
            },
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("WECOM_ENCODING_AES_KEY"), "{}", p[0]);
        assert!(p[0].contains("43"), "{}", p[0]);
        assert!(p[0].contains("44"), "{}", p[0]);
    }

    #[test]
    fn every_problem_is_reported_at_once_without_secrets() {
        let file: FileConfig = toml::from_str(
            r#"
            listen = "nonsense"
            [[apps]]
            name = "a b"
            token = "has space secretvalue"
            encoding_aes_key = "short"
            [[apps]]
            name = "ok"
            kind = "weird"
            token = "abc"
            encoding_aes_key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
            "#,
        )
        .expect("toml");
        let p = problems(build_settings(file, &Overrides::default()));
        let all = p.join("\n");
        assert!(all.contains("listen"), "{all}");
        assert!(all.contains("apps[0].name"), "{all}");
        assert!(all.contains("apps[0].token"), "{all}");
        assert!(all.contains("apps[0].encoding_aes_key"), "{all}");
        assert!(all.contains("apps[0].receive_ids"), "{all}");
        assert!(all.contains("apps[1].kind"), "{all}");
        assert!(!all.contains("secretvalue"), "a secret leaked: {all}");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let r: Result<FileConfig, _> = toml::from_str("lisen = \"127.0.0.1:1\"");
        assert!(r.is_err());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let s = build_settings(
            FileConfig {
                database_url: Some("postgres://u:hunter2@localhost/db".into()),
                ..FileConfig::default()
            },
            &Overrides {
                app: env_app(),
                ..Overrides::default()
            },
        )
        .expect("valid");
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("QDG6eK"), "{dbg}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(!dbg.contains(KEY), "{dbg}");
    }

    #[test]
    fn the_example_configuration_is_valid_once_filled_in() {
        let text = include_str!("../../config.example.toml")
            .replace("REPLACE_WITH_TOKEN", "abc123")
            .replace("REPLACE_WITH_THE_43_CHARACTER_ENCODING_AES_KEY", KEY);
        let file: FileConfig = toml::from_str(&text).expect("the example parses");
        let s = build_settings(file, &Overrides::default()).expect("and validates");
        assert_eq!(s.apps[0].name, "crm");
        assert!(s.spool.dir.is_some());
    }

    /// config.example.toml shows the defaults; this keeps it from drifting from `file.rs`.
    #[test]
    fn the_example_configuration_shows_the_defaults() {
        let file: FileConfig =
            toml::from_str(include_str!("../../config.example.toml")).expect("the example parses");
        let d = FileConfig::default();
        assert_eq!(file.listen, d.listen);
        assert_eq!(file.database_url.as_deref(), Some(DEFAULT_DATABASE_URL));
        assert_eq!(file.log_format, d.log_format);
        assert_eq!(format!("{:?}", file.database), format!("{:?}", d.database));
        assert_eq!(format!("{:?}", file.http), format!("{:?}", d.http));
        assert_eq!(format!("{:?}", file.store), format!("{:?}", d.store));
        assert_eq!(
            format!("{:?}", file.projector),
            format!("{:?}", d.projector)
        );
        assert_eq!(format!("{:?}", file.spool), format!("{:?}", d.spool));
        assert_eq!(format!("{:?}", file.api), format!("{:?}", d.api));
        assert_eq!(
            format!("{:?}", file.api_limits),
            format!("{:?}", d.api_limits)
        );
    }

    #[test]
    fn defaults_give_the_documented_values() {
        let s = Settings::defaults(Vec::new(), DEFAULT_DATABASE_URL).expect("valid");
        assert_eq!(s.http.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.http.timestamp_tolerance, Duration::from_secs(300));
        assert_eq!(s.database.max_connections, 16);
        assert_eq!(s.api.resync_interval, Duration::from_secs(24 * 3600));
        assert!(s.spool.dir.is_none());
        assert_eq!(s.log_format, LogFormat::Text);
    }

    #[test]
    fn a_file_with_a_typo_names_the_line() {
        let dir = std::env::temp_dir().join(format!("wecom-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("bad.toml");
        std::fs::write(&path, "lisen = \"127.0.0.1:1\"\n").expect("write");
        let e = read_file(&path).expect_err("refused");
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains("line 1:") && text.contains("lisen"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn empty_single_app_variables_count_as_unset() {
        let mut app = env_app();
        app.app_name = Some(String::new());
        app.secret = Some("".into());
        app.receive_ids = vec![String::new()];
        let s = build_settings(
            FileConfig::default(),
            &Overrides {
                app,
                ..Overrides::default()
            },
        )
        .expect("valid");
        assert_eq!(s.apps[0].name, DEFAULT_APP_NAME);
        assert!(s.apps[0].secret.is_none());
        assert_eq!(s.apps[0].receive_ids, vec!["wx5823bf96d3bd56c7"]);

        let empty = AppArgs {
            token: Some("".into()),
            corp_id: Some(String::new()),
            ..AppArgs::default()
        };
        let p = problems(build_settings(
            FileConfig::default(),
            &Overrides {
                app: empty,
                ..Overrides::default()
            },
        ));
        assert!(p[0].contains("no app is configured"), "{p:?}");
    }

    #[test]
    fn reply_body_follows_the_kind() {
        assert_eq!(AppKind::SelfBuilt.success_body(), "");
        assert_eq!(AppKind::Agency.success_body(), "");
        assert_eq!(AppKind::SuiteData.success_body(), "");
        assert_eq!(AppKind::SuiteInstruction.success_body(), "success");
    }

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
