//! Configuration: a TOML file, environment variables and command-line flags, validated once at start-up.
//!
//! Precedence, highest first: command-line flag, environment variable, file, built-in default. A single app
//! can be configured from environment variables alone (`WECOM_TOKEN`, `WECOM_ENCODING_AES_KEY`,
//! `WECOM_CORP_ID`, ...); several apps need a file with one `[[apps]]` table each.
//!
//! Every problem is reported at once, each naming the setting and the fix, so an operator fixes the file in one
//! pass instead of one restart per mistake.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::postgres::PgConnectOptions;

use crate::app::{AppConfig, AppKind};
use crate::wecom::crypto::AesKey;

/// The database used when neither `DATABASE_URL` nor the file names one.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/wecom_callback";
/// The listen address used when none is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The app name used for a single app configured from environment variables.
pub const DEFAULT_APP_NAME: &str = "default";

/// Database connection settings.
#[derive(Clone)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
    /// How long a request may wait for a pooled connection. sqlx's default (30 s) is far beyond WeCom's
    /// 5-second budget.
    pub acquire_timeout: Duration,
    /// PostgreSQL `statement_timeout` for every connection.
    pub statement_timeout: Duration,
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(self.url.expose_secret()))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

impl DatabaseSettings {
    /// Connection options for the configured database.
    pub fn connect_options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        let statement_timeout = self.statement_timeout.as_millis().to_string();
        Ok(PgConnectOptions::from_str(self.url.expose_secret())?
            // `success` promises durability: never let a server-wide `synchronous_commit = off` weaken it.
            .options([
                ("synchronous_commit", "on"),
                ("statement_timeout", statement_timeout.as_str()),
            ])
            .application_name("wecom-callback"))
    }

    /// The database name from the URL (the one `serve` creates when it is missing).
    pub fn database_name(&self) -> Option<String> {
        self.connect_options()
            .ok()
            .and_then(|o| o.get_database().map(str::to_owned))
    }
}

/// HTTP-level limits.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// Largest accepted POST body; larger ones get 413.
    pub max_body_bytes: usize,
    /// How long the whole body may take to arrive; slower ones get 408.
    pub body_read_timeout: Duration,
    /// How long a client may take to send the request head.
    pub header_read_timeout: Duration,
    /// Upper bound for one callback from first byte to reply. WeCom waits 5 s.
    pub request_deadline: Duration,
    /// Replay window: a timestamp further than this from now is refused. Zero disables the check.
    pub timestamp_tolerance: Duration,
    /// Worker threads for the HTTP server (0 = one per core).
    pub workers: usize,
}

/// Group-commit settings for writing events.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Most rows written by one INSERT (and so one commit).
    pub max_batch_rows: usize,
    /// Most batches being committed at the same time.
    pub max_in_flight_batches: usize,
    /// Callbacks waiting for a batch; past it requests wait (and time out to 503).
    pub queue_capacity: usize,
}

/// The local spool for callbacks the database could not take in time.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    /// Directory of the spool; `None` = no spool (answer 503 when the database is down).
    pub dir: Option<PathBuf>,
    /// Largest spool; past it callbacks get 503.
    pub max_bytes: u64,
    /// How long a callback waits for the database before it is spooled instead.
    pub after: Duration,
}

/// The default spool directory: systemd's `$STATE_DIRECTORY`, else `$XDG_STATE_HOME/wecom-callback/spool`,
/// else `~/.local/state/wecom-callback/spool`, else `./spool`.
pub fn default_spool_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = env("STATE_DIRECTORY") {
        return d.join("spool");
    }
    if let Some(d) = env("XDG_STATE_HOME") {
        return d.join("wecom-callback").join("spool");
    }
    if let Some(h) = env("HOME") {
        return h.join(".local/state/wecom-callback/spool");
    }
    PathBuf::from("spool")
}

/// WeCom API settings (used for apps with a secret).
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Default https://qyapi.weixin.qq.com; tests point it at a fake.
    pub base_url: String,
    /// Concurrent API jobs inside `serve` (0: no worker in `serve`; run `wecom-callback worker`).
    pub worker_concurrency: usize,
    /// Attempts before a job is dead.
    pub max_attempts: i32,
    /// Full resync inside `serve` every this often (zero: off).
    pub resync_interval: Duration,
    /// Minimum gap between API calls during a resync.
    pub resync_pause: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub http: HttpSettings,
    pub store: StoreSettings,
    pub log_format: LogFormat,
    pub apps: Vec<AppConfig>,
    /// Bearer token for the read API; the API is off without one.
    pub api_token: Option<SecretString>,
    /// Apply stored events to the synced tables inside `serve`.
    pub run_projector: bool,
    pub spool: SpoolSettings,
    /// Domain ownership files served at `/{name}` (WeCom's WW_verify_*.txt for 可信域名).
    pub verification_files: std::collections::BTreeMap<String, String>,
    /// A separate listen address for `/metrics` (then it is not served on the main one).
    pub metrics_listen: Option<SocketAddr>,
    pub api: ApiSettings,
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
}

/// Why the configuration was refused: every problem found, each with its fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
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

/// The configuration file as written: every field optional, validated later.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub log_format: Option<String>,
    /// Bearer token for the read API (`/api/v1`); the API is off without one.
    pub api_token: Option<String>,
    /// Apply stored events to the synced tables inside `serve` (default true).
    pub run_projector: Option<bool>,
    #[serde(default)]
    pub database: FileDatabase,
    #[serde(default)]
    pub http: FileHttp,
    #[serde(default)]
    pub store: FileStore,
    #[serde(default)]
    pub spool: FileSpool,
    /// `"WW_verify_xxxx.txt" = "content"`: files WeCom asks to serve at the domain root.
    #[serde(default)]
    pub verification_files: std::collections::BTreeMap<String, String>,
    /// Listen address for `/metrics` alone, e.g. "127.0.0.1:9090".
    pub metrics_listen: Option<String>,
    #[serde(default)]
    pub api: FileApi,
    #[serde(default)]
    pub apps: Vec<FileApp>,
}

/// `[api]` in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileApi {
    pub base_url: Option<String>,
    pub worker_concurrency: Option<usize>,
    pub max_attempts: Option<i32>,
    pub resync_interval_hours: Option<u64>,
    pub resync_pause_ms: Option<u64>,
}

/// `[spool]` in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpool {
    pub enabled: Option<bool>,
    pub dir: Option<PathBuf>,
    pub max_bytes: Option<u64>,
    pub after_ms: Option<u64>,
}

/// `[database]` in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDatabase {
    pub max_connections: Option<u32>,
    pub acquire_timeout_ms: Option<u64>,
    pub statement_timeout_ms: Option<u64>,
}

/// `[http]` in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHttp {
    pub max_body_bytes: Option<usize>,
    pub body_read_timeout_ms: Option<u64>,
    pub header_read_timeout_ms: Option<u64>,
    pub request_deadline_ms: Option<u64>,
    pub timestamp_tolerance_secs: Option<u64>,
    pub workers: Option<usize>,
}

/// `[store]` in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStore {
    pub max_batch_rows: Option<usize>,
    pub max_in_flight_batches: Option<usize>,
    pub queue_capacity: Option<usize>,
}

/// One `[[apps]]` table in the file.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileApp {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub token: Option<String>,
    pub encoding_aes_key: Option<String>,
    pub receive_ids: Option<Vec<String>>,
    /// Shorthand for `receive_ids = [corp_id]`.
    pub corp_id: Option<String>,
    /// The app's Secret (应用管理 → the app → Secret), to call WeCom's API. Optional.
    pub secret: Option<String>,
}

impl fmt::Debug for FileApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileApp")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("receive_ids", &self.receive_ids)
            .field("corp_id", &self.corp_id)
            .finish_non_exhaustive()
    }
}

/// Values from the command line and the environment; `None` where neither gave one.
#[derive(Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub log_format: Option<String>,
    pub timestamp_tolerance_secs: Option<u64>,
    pub api_token: Option<String>,
    /// `WECOM_SPOOL_DIR`.
    pub spool_dir: Option<PathBuf>,
    /// `WECOM_VERIFY_FILE`: `NAME=CONTENT`.
    pub verification_file: Option<String>,
    /// `WECOM_METRICS_LISTEN`.
    pub metrics_listen: Option<String>,
    /// `WECOM_API_BASE_URL`.
    pub api_base_url: Option<String>,
    /// The single-app environment variables (`WECOM_*`).
    pub app: EnvApp,
}

/// A single app from environment variables.
#[derive(Default, Clone)]
pub struct EnvApp {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub token: Option<String>,
    pub encoding_aes_key: Option<String>,
    pub corp_id: Option<String>,
    /// Comma-separated.
    pub receive_ids: Option<String>,
    pub secret: Option<String>,
}

impl EnvApp {
    /// Reads `WECOM_APP_NAME`, `WECOM_APP_KIND`, `WECOM_TOKEN`, `WECOM_ENCODING_AES_KEY`, `WECOM_CORP_ID` and
    /// `WECOM_RECEIVE_IDS`.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        EnvApp {
            name: var("WECOM_APP_NAME"),
            kind: var("WECOM_APP_KIND"),
            token: var("WECOM_TOKEN"),
            encoding_aes_key: var("WECOM_ENCODING_AES_KEY"),
            corp_id: var("WECOM_CORP_ID"),
            receive_ids: var("WECOM_RECEIVE_IDS"),
            secret: var("WECOM_SECRET"),
        }
    }

    fn is_set(&self) -> bool {
        self.token.is_some()
            || self.encoding_aes_key.is_some()
            || self.corp_id.is_some()
            || self.receive_ids.is_some()
    }
}

/// Reads and parses a configuration file.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Builds the database settings alone (for commands such as `migrate` that need no app).
pub fn database_settings(
    file: &FileConfig,
    overrides: &Overrides,
) -> Result<DatabaseSettings, ConfigError> {
    let mut problems = Vec::new();
    let db = build_database(file, overrides, &mut problems);
    if problems.is_empty() {
        Ok(db)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

fn build_database(
    file: &FileConfig,
    overrides: &Overrides,
    problems: &mut Vec<String>,
) -> DatabaseSettings {
    let url = overrides
        .database_url
        .clone()
        .or_else(|| file.database_url.clone())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    if let Err(e) = PgConnectOptions::from_str(&url) {
        problems.push(format!(
            "DATABASE_URL / database_url is not a valid PostgreSQL URL ({e}); \
             write it as postgres://USER[:PASSWORD]@HOST:PORT/DATABASE"
        ));
    }
    let max_connections = file.database.max_connections.unwrap_or(16);
    if max_connections == 0 {
        problems.push("database.max_connections must be at least 1".to_owned());
    }
    DatabaseSettings {
        url: SecretString::from(url),
        max_connections: max_connections.max(1),
        acquire_timeout: Duration::from_millis(file.database.acquire_timeout_ms.unwrap_or(1_000)),
        statement_timeout: Duration::from_millis(
            file.database.statement_timeout_ms.unwrap_or(3_000),
        ),
    }
}

/// Validates everything `serve` needs.
pub fn build_settings(mut file: FileConfig, overrides: Overrides) -> Result<Settings, ConfigError> {
    let mut problems = Vec::new();
    let database = build_database(&file, &overrides, &mut problems);

    let listen_text = overrides
        .listen
        .clone()
        .or_else(|| file.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen = match listen_text.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            problems.push(format!(
                "WECOM_LISTEN / listen {listen_text:?} is not an address: write IP:PORT, \
                 e.g. 0.0.0.0:8080 (all interfaces) or 127.0.0.1:8080 (behind a local proxy)"
            ));
            SocketAddr::from(([127, 0, 0, 1], 8080))
        }
    };

    let h = &file.http;
    let max_body_bytes = h.max_body_bytes.unwrap_or(64 * 1024);
    if max_body_bytes < 1024 {
        problems.push(format!(
            "http.max_body_bytes = {max_body_bytes} is too small for WeCom callbacks; use at least 1024 \
             (the default 65536 fits every known callback)"
        ));
    }
    let request_deadline = Duration::from_millis(h.request_deadline_ms.unwrap_or(4_000));
    if request_deadline > Duration::from_millis(4_500)
        || request_deadline < Duration::from_millis(500)
    {
        problems.push(format!(
            "http.request_deadline_ms = {} must be between 500 and 4500: WeCom gives up after 5 s",
            request_deadline.as_millis()
        ));
    }
    let http = HttpSettings {
        listen,
        max_body_bytes,
        body_read_timeout: Duration::from_millis(h.body_read_timeout_ms.unwrap_or(3_000)),
        header_read_timeout: Duration::from_millis(h.header_read_timeout_ms.unwrap_or(3_000)),
        request_deadline,
        timestamp_tolerance: Duration::from_secs(
            overrides
                .timestamp_tolerance_secs
                .or(h.timestamp_tolerance_secs)
                .unwrap_or(300),
        ),
        workers: h.workers.unwrap_or(0),
    };

    let s = &file.store;
    let store = StoreSettings {
        max_batch_rows: s.max_batch_rows.unwrap_or(512).clamp(1, 4096),
        max_in_flight_batches: s.max_in_flight_batches.unwrap_or(1).max(1),
        queue_capacity: s.queue_capacity.unwrap_or(16_384).max(1),
    };

    let log_format = match overrides
        .log_format
        .clone()
        .or_else(|| file.log_format.clone())
        .as_deref()
    {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            problems.push(format!(
                "WECOM_LOG_FORMAT / log_format {other:?} is unknown; use text or json"
            ));
            LogFormat::Text
        }
    };

    let apps = build_apps(
        std::mem::take(&mut file.apps),
        &overrides.app,
        &mut problems,
    );

    if store.max_in_flight_batches as u32 > database.max_connections {
        problems.push(format!(
            "store.max_in_flight_batches ({}) exceeds database.max_connections ({}); \
             each batch needs a connection",
            store.max_in_flight_batches, database.max_connections
        ));
    }

    let api_token = overrides.api_token.clone().or(file.api_token.clone());
    if let Some(t) = &api_token {
        if t.len() < 16 {
            problems.push(format!(
                "WECOM_API_TOKEN / api_token is {} characters; use at least 16 random characters \
                 (e.g. `openssl rand -hex 24`)",
                t.len()
            ));
        }
    }

    let sp = &file.spool;
    let spool_after = Duration::from_millis(sp.after_ms.unwrap_or(2_500));
    if spool_after + Duration::from_millis(500) > request_deadline {
        problems.push(format!(
            "spool.after_ms = {} leaves no time to write the spool within http.request_deadline_ms = {}; \
             keep it at least 500 ms below",
            spool_after.as_millis(),
            request_deadline.as_millis()
        ));
    }
    let spool = SpoolSettings {
        dir: if sp.enabled.unwrap_or(true) {
            Some(
                overrides
                    .spool_dir
                    .clone()
                    .or_else(|| sp.dir.clone())
                    .unwrap_or_else(default_spool_dir),
            )
        } else {
            None
        },
        max_bytes: sp.max_bytes.unwrap_or(256 * 1024 * 1024),
        after: spool_after,
    };

    let mut verification_files = std::mem::take(&mut file.verification_files);
    if let Some(pair) = &overrides.verification_file {
        match pair.split_once('=') {
            Some((name, content)) => {
                verification_files.insert(name.trim().to_owned(), content.trim().to_owned());
            }
            None => problems.push(
                "WECOM_VERIFY_FILE must be NAME=CONTENT, e.g. WW_verify_AbCdEf.txt=AbCdEf (the file's name and \
                 its content as the admin console shows them)"
                    .to_owned(),
            ),
        }
    }
    for name in verification_files.keys() {
        let safe = !name.is_empty()
            && name.len() <= 128
            && name.ends_with(".txt")
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
            && !name.starts_with('.');
        if !safe {
            problems.push(format!(
                "verification file name {name:?} must be a plain file name ending in .txt \
                 (letters, digits, '_', '-', '.'), e.g. WW_verify_AbCdEf.txt"
            ));
        }
    }
    let metrics_listen = match overrides
        .metrics_listen
        .clone()
        .or(file.metrics_listen.clone())
    {
        None => None,
        Some(text) => match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                problems.push(format!(
                    "WECOM_METRICS_LISTEN / metrics_listen {text:?} is not an address: write IP:PORT, e.g. 127.0.0.1:9090"
                ));
                None
            }
        },
    };

    let base_url = overrides
        .api_base_url
        .clone()
        .or(file.api.base_url.clone())
        .unwrap_or_else(|| crate::sync::client::DEFAULT_BASE_URL.to_owned());
    if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
        problems.push(format!(
            "WECOM_API_BASE_URL / api.base_url {base_url:?} must start with https:// (default {})",
            crate::sync::client::DEFAULT_BASE_URL
        ));
    }
    let api = ApiSettings {
        base_url,
        worker_concurrency: file.api.worker_concurrency.unwrap_or(2),
        max_attempts: file.api.max_attempts.unwrap_or(8).max(1),
        resync_interval: Duration::from_secs(file.api.resync_interval_hours.unwrap_or(24) * 3600),
        resync_pause: Duration::from_millis(file.api.resync_pause_ms.unwrap_or(50)),
    };

    if problems.is_empty() {
        Ok(Settings {
            database,
            http,
            store,
            log_format,
            apps,
            api_token: api_token.map(SecretString::from),
            run_projector: file.run_projector.unwrap_or(true),
            spool,
            verification_files,
            metrics_listen,
            api,
            fault_ack_before_commit: false,
            fault_panic_once: Vec::new(),
        })
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

fn build_apps(file_apps: Vec<FileApp>, env: &EnvApp, problems: &mut Vec<String>) -> Vec<AppConfig> {
    let raw: Vec<(String, FileApp)> = if file_apps.is_empty() {
        if !env.is_set() {
            problems.push(
                "no app is configured: set WECOM_TOKEN, WECOM_ENCODING_AES_KEY and WECOM_CORP_ID \
                 (the values you enter in the WeCom admin console under 接收消息服务器配置), \
                 or add an [[apps]] table to the configuration file"
                    .to_owned(),
            );
            return Vec::new();
        }
        let receive_ids = env.receive_ids.as_ref().map(|ids| {
            ids.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        });
        vec![(
            "WECOM_".to_owned(),
            FileApp {
                name: env.name.clone(),
                kind: env.kind.clone(),
                token: env.token.clone(),
                encoding_aes_key: env.encoding_aes_key.clone(),
                receive_ids,
                corp_id: env.corp_id.clone(),
                secret: env.secret.clone(),
            },
        )]
    } else {
        if env.is_set() {
            problems.push(
                "apps are configured both in the file ([[apps]]) and by WECOM_TOKEN / \
                 WECOM_ENCODING_AES_KEY / WECOM_CORP_ID; keep one of the two"
                    .to_owned(),
            );
        }
        file_apps
            .into_iter()
            .enumerate()
            .map(|(i, a)| (format!("apps[{i}]."), a))
            .collect()
    };

    let from_env = raw.len() == 1 && raw[0].0 == "WECOM_";
    let mut seen = HashSet::new();
    let mut apps = Vec::new();
    for (prefix, app) in raw {
        let setting = |field: &str, env_name: &str| {
            if from_env {
                env_name.to_owned()
            } else {
                format!("{prefix}{field}")
            }
        };
        let before = problems.len();

        let name = app.name.unwrap_or_else(|| {
            if from_env {
                DEFAULT_APP_NAME.to_owned()
            } else {
                String::new()
            }
        });
        if name.is_empty() {
            problems.push(format!(
                "{} is missing: every app needs a name, used in its callback URL /callback/NAME",
                setting("name", "WECOM_APP_NAME")
            ));
        } else if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            || name.len() > 64
        {
            problems.push(format!(
                "{} {name:?} may only use letters, digits, '-' and '_' (at most 64): it is a URL path segment",
                setting("name", "WECOM_APP_NAME")
            ));
        } else if !seen.insert(name.clone()) {
            problems.push(format!(
                "{} {name:?} is used by two apps; names must be unique",
                setting("name", "WECOM_APP_NAME")
            ));
        }

        let kind = match app.kind.as_deref() {
            None => AppKind::SelfBuilt,
            Some(k) => match k.parse() {
                Ok(kind) => kind,
                Err(e) => {
                    problems.push(format!("{}: {e}", setting("kind", "WECOM_APP_KIND")));
                    AppKind::SelfBuilt
                }
            },
        };

        let token = app.token.unwrap_or_default();
        if let Err(why) = validate_token(&token) {
            problems.push(format!("{} {why}", setting("token", "WECOM_TOKEN")));
        }

        let aes_key = match app.encoding_aes_key.as_deref() {
            None | Some("") => {
                problems.push(format!(
                    "{} is missing: copy the EncodingAESKey (43 characters) from the WeCom admin console, \
                     or generate one with `wecom-callback gen-key` and paste it there",
                    setting("encoding_aes_key", "WECOM_ENCODING_AES_KEY")
                ));
                None
            }
            Some(k) => match AesKey::from_encoding_aes_key(k.trim()) {
                Ok(key) => Some(key),
                Err(e) => {
                    problems.push(format!(
                        "{}: {e}",
                        setting("encoding_aes_key", "WECOM_ENCODING_AES_KEY")
                    ));
                    None
                }
            },
        };

        let mut receive_ids = app.receive_ids.unwrap_or_default();
        if let Some(corp) = app.corp_id {
            if !receive_ids.contains(&corp) {
                receive_ids.insert(0, corp);
            }
        }
        if receive_ids.is_empty() {
            problems.push(format!(
                "{} is missing: set the receive ids this URL accepts — the corpid (企业ID, 我的企业 → 企业信息) \
                 for a self-built app; the suite id for a suite instruction URL (plus the provider corpid for \
                 its URL verification)",
                setting("receive_ids / corp_id", "WECOM_CORP_ID")
            ));
        }
        for id in &receive_ids {
            if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                problems.push(format!(
                    "{} {id:?} contains whitespace; copy the id exactly",
                    setting("receive_ids", "WECOM_CORP_ID")
                ));
            }
        }

        if problems.len() == before {
            if let Some(aes_key) = aes_key {
                apps.push(AppConfig {
                    name,
                    kind,
                    token: SecretString::from(token),
                    aes_key,
                    receive_ids,
                    secret: app
                        .secret
                        .filter(|s| !s.trim().is_empty())
                        .map(SecretString::from),
                });
            }
        }
    }
    apps
}

/// WeCom: "Token 由英文或数字组成且长度不超过32位".
fn validate_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err(
            "is missing: copy the Token from the WeCom admin console (接收消息服务器配置), or generate one \
             with `wecom-callback gen-key`"
                .to_owned(),
        );
    }
    if token.chars().count() > 32 {
        return Err(format!(
            "must be at most 32 characters; you gave {}",
            token.chars().count()
        ));
    }
    if let Some((i, _)) = token
        .char_indices()
        .find(|(_, c)| !c.is_ascii_alphanumeric())
    {
        return Err(format!(
            "may only contain letters and digits (WeCom's rule); character {} is not one — \
             check for a stray space or quote",
            i + 1
        ));
    }
    Ok(())
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

    fn env_app() -> EnvApp {
        EnvApp {
            token: Some("QDG6eK".into()),
            encoding_aes_key: Some(KEY.into()),
            corp_id: Some("wx5823bf96d3bd56c7".into()),
            ..EnvApp::default()
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
            Overrides {
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
        app.encoding_aes_key = Some(format!("{KEY}="));
        let p = problems(build_settings(
            FileConfig::default(),
            Overrides {
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
        let p = problems(build_settings(file, Overrides::default()));
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
            Overrides {
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
        let s = build_settings(file, Overrides::default()).expect("and validates");
        assert_eq!(s.apps[0].name, "crm");
        assert!(s.spool.dir.is_some());
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
