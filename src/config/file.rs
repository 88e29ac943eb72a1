//! The configuration file (TOML, `--config` / `WECOM_CONFIG`) as written, and **the one place every default
//! lives**: each table's `Default` impl. `#[serde(default)]` fills in what the file leaves out, so
//! `FileConfig::default()` is the configuration of a machine with no file at all; the help text, `doctor` and
//! the test harnesses ([`crate::config::Settings::defaults`]) read their defaults from here too.
//!
//! Values that need validation with a fix in the message (addresses, URLs, names) stay strings here and are
//! checked in [`crate::config::build_settings`], so every problem is reported at once instead of serde's first.
//!
//! Environment variables: none read here (the file's path comes from `WECOM_CONFIG` through clap).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;
use super::apps::FileApp;

/// The database used when neither `DATABASE_URL` nor the file names one.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/wecom_callback";
/// The listen address used when none is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The app name used for a single app configured from environment variables.
pub const DEFAULT_APP_NAME: &str = "default";
/// The replay window: callbacks whose timestamp is further than this from now are refused.
pub const DEFAULT_TIMESTAMP_TOLERANCE_SECS: u64 = 300;
/// The local address probed for a PostgreSQL server before `serve` starts a private cluster.
pub const DEFAULT_LOCAL_PG_ADDR: &str = "127.0.0.1:5432";
/// WeCom's API.
pub const DEFAULT_API_BASE_URL: &str = crate::sync::client::DEFAULT_BASE_URL;

/// The configuration file as written; what it leaves out takes the defaults below.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// `IP:PORT` to listen on.
    pub listen: String,
    /// `None`: not in the file (then `serve` may start a private cluster; see `WECOM_LOCAL_PG_ADDR`).
    pub database_url: Option<String>,
    /// `text` or `json`.
    pub log_format: String,
    /// Bearer token for the read API (`/api/v1`); the API is off without one.
    pub api_token: Option<String>,
    /// Apply stored events to the synced tables inside `serve`.
    pub run_projector: bool,
    /// `[database]`.
    pub database: FileDatabase,
    /// `[http]`.
    pub http: FileHttp,
    /// `[store]`.
    pub store: FileStore,
    /// `[projector]`.
    pub projector: FileProjector,
    /// `[spool]`.
    pub spool: FileSpool,
    /// `[capture]`.
    pub capture: FileCapture,
    /// `"WW_verify_xxxx.txt" = "content"`: files WeCom asks to serve at the domain root.
    pub verification_files: BTreeMap<String, String>,
    /// Listen address for `/metrics` alone, e.g. "127.0.0.1:9090".
    pub metrics_listen: Option<String>,
    /// `[api]`.
    pub api: FileApi,
    /// `[api_limits]`: WeCom API limits per corp across every replica.
    pub api_limits: FileApiLimits,
    /// `[[apps]]`.
    pub apps: Vec<FileApp>,
    /// `[feed]`: the change feed.
    pub feed: super::webhooks::FileFeed,
    /// `[[webhooks]]`: subscribers the change feed is pushed to.
    pub webhooks: Vec<super::webhooks::FileWebhook>,
    /// `[[suites]]`: service providers' suites and 代开发 templates.
    pub suites: Vec<super::suites::FileSuite>,
    /// `[provider]`.
    pub provider: super::suites::FileProvider,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            listen: DEFAULT_LISTEN.to_owned(),
            database_url: None,
            log_format: "text".to_owned(),
            api_token: None,
            run_projector: true,
            database: FileDatabase::default(),
            http: FileHttp::default(),
            store: FileStore::default(),
            projector: FileProjector::default(),
            spool: FileSpool::default(),
            capture: FileCapture::default(),
            verification_files: BTreeMap::new(),
            metrics_listen: None,
            api: FileApi::default(),
            api_limits: FileApiLimits::default(),
            apps: Vec::new(),
            feed: super::webhooks::FileFeed::default(),
            webhooks: Vec::new(),
            suites: Vec::new(),
            provider: Default::default(),
        }
    }
}

/// `[database]` in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileDatabase {
    /// Pool size.
    pub max_connections: u32,
    /// How long a request may wait for a pooled connection.
    pub acquire_timeout_ms: u64,
    /// PostgreSQL `statement_timeout` for every connection.
    pub statement_timeout_ms: u64,
}

impl Default for FileDatabase {
    fn default() -> Self {
        FileDatabase {
            max_connections: 16,
            // sqlx's default (30 s) is far beyond WeCom's 5-second budget.
            acquire_timeout_ms: 1_000,
            statement_timeout_ms: 3_000,
        }
    }
}

/// `[http]` in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileHttp {
    /// Largest accepted POST body.
    pub max_body_bytes: usize,
    /// How long the whole body may take to arrive.
    pub body_read_timeout_ms: u64,
    /// How long a client may take to send the request head.
    pub header_read_timeout_ms: u64,
    /// Upper bound for one callback from first byte to reply.
    pub request_deadline_ms: u64,
    /// The same bound for `suite_instruction` apps, whose auth events WeCom wants answered within 1 s.
    pub instruction_deadline_ms: u64,
    /// How long a `suite_instruction` callback waits for the database before it is spooled instead.
    pub instruction_spool_after_ms: u64,
    /// Replay window; 0 disables the check.
    pub timestamp_tolerance_secs: u64,
    /// HTTP worker threads; 0 = one per core.
    pub workers: usize,
}

impl Default for FileHttp {
    fn default() -> Self {
        FileHttp {
            // Fits every known callback.
            max_body_bytes: 64 * 1024,
            body_read_timeout_ms: 3_000,
            header_read_timeout_ms: 3_000,
            // WeCom waits 5 s; leave room for the network.
            request_deadline_ms: 4_000,
            // WeCom wants create_auth, change_auth, ... answered within 1000 ms; leave room for the network.
            instruction_deadline_ms: 900,
            instruction_spool_after_ms: 400,
            timestamp_tolerance_secs: DEFAULT_TIMESTAMP_TOLERANCE_SECS,
            workers: 0,
        }
    }
}

/// `[store]` in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileStore {
    /// Most rows written by one INSERT (and so one commit).
    pub max_batch_rows: usize,
    /// Most batches being committed at the same time.
    pub max_in_flight_batches: usize,
    /// Callbacks waiting for a batch.
    pub queue_capacity: usize,
}

impl Default for FileStore {
    fn default() -> Self {
        FileStore {
            max_batch_rows: 512,
            // Fastest on 2 cores (BENCHMARKS.md).
            max_in_flight_batches: 1,
            queue_capacity: 16_384,
        }
    }
}

/// `[projector]` in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileProjector {
    /// Events per applying transaction without a backlog (and where a growing batch starts).
    pub min_batch: usize,
    /// Most events per applying transaction; batches double toward it while a backlog remains.
    pub max_batch: usize,
    /// Wait this long after being woken before applying, to apply more events per transaction.
    pub coalesce_ms: u64,
    /// Concurrent applying transactions in this process.
    pub appliers: usize,
}

impl Default for FileProjector {
    fn default() -> Self {
        // Measured on 2 cores (BENCHMARKS.md, 2026-12-01 "projection at ingest speed").
        FileProjector {
            min_batch: 500,
            max_batch: 4000,
            coalesce_ms: 10,
            appliers: 2,
        }
    }
}

/// `[spool]` in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileSpool {
    /// `false`: no local state; answer 503 when the database is down.
    pub enabled: bool,
    /// `None`: the platform's state directory (see [`crate::config::spool::default_spool_dir`]).
    pub dir: Option<PathBuf>,
    /// Largest spool.
    pub max_bytes: u64,
    /// How long a callback waits for the database before it is spooled instead.
    pub after_ms: u64,
}

impl Default for FileSpool {
    fn default() -> Self {
        FileSpool {
            enabled: true,
            dir: None,
            max_bytes: 256 * 1024 * 1024,
            after_ms: 2_500,
        }
    }
}

/// `[capture]` in the file: the last refused requests per app, for `decrypt --last`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileCapture {
    /// `false`: refused requests are only logged.
    pub enabled: bool,
    /// `None`: `rejected` beside the default spool directory (see
    /// [`crate::config::capture::default_capture_dir`]).
    pub dir: Option<PathBuf>,
    /// Refused requests kept per app.
    pub per_app: usize,
}

impl Default for FileCapture {
    fn default() -> Self {
        FileCapture {
            enabled: true,
            dir: None,
            per_app: 20,
        }
    }
}

/// `[api]` in the file: WeCom's API, for apps with a secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileApi {
    /// WeCom's API base URL.
    pub base_url: String,
    /// Concurrent API jobs inside `serve`; 0 = none.
    pub worker_concurrency: usize,
    /// Attempts before a job is dead.
    pub max_attempts: i32,
    /// Full resync inside `serve` every this many hours; 0 = off.
    pub resync_interval_hours: u64,
    /// Minimum gap between API calls during a resync.
    pub resync_pause_ms: u64,
    /// Done jobs older than this many days are deleted; 0 = kept forever. Dead jobs are always kept.
    pub jobs_retention_days: u64,
    /// The resync's follow sweep refuses to remove more than this share (0..=1) of a corp's active follows
    /// (`wecom-callback resync --allow-mass-removal` overrides it once).
    pub resync_max_removal_share: f64,
}

impl Default for FileApi {
    fn default() -> Self {
        FileApi {
            base_url: DEFAULT_API_BASE_URL.to_owned(),
            worker_concurrency: 2,
            max_attempts: 8,
            resync_interval_hours: 24,
            resync_pause_ms: 50,
            jobs_retention_days: 7,
            resync_max_removal_share: 0.2,
        }
    }
}

/// `[api_limits]` in the file: WeCom API calls per corp, counted across every replica (through PostgreSQL).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileApiLimits {
    /// `false`: no limits (e.g. against a fake API).
    pub enabled: bool,
    /// Calls of one API in flight at once per corp.
    pub concurrency: u32,
    /// Calls of one API per minute per corp.
    pub per_minute: u32,
    /// Calls that may go at once after a quiet spell.
    pub burst: u32,
    /// How long a 45033 / 45009 slows the corp down, for every replica.
    pub slowdown_secs: u64,
    /// The rate is divided by this while slowed down.
    pub slowdown_factor: u32,
    /// Per API (path without `/cgi-bin/`, e.g. "externalcontact/get"): what differs from the above.
    pub apis: BTreeMap<String, FileApiLimit>,
}

impl Default for FileApiLimits {
    fn default() -> Self {
        FileApiLimits {
            enabled: true,
            // WeCom refuses (45033) past about 5 concurrent calls of some APIs per corp: stay below.
            concurrency: 3,
            // WeCom allows 10,000 calls a minute per corp and API (45009 beyond); a resync needs far fewer.
            per_minute: 1_200,
            burst: 20,
            slowdown_secs: 60,
            slowdown_factor: 4,
            apis: BTreeMap::new(),
        }
    }
}

/// One API's entry in `[api_limits.apis]`; what it leaves out comes from `[api_limits]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileApiLimit {
    /// Calls in flight at once per corp.
    pub concurrency: Option<u32>,
    /// Calls per minute per corp.
    pub per_minute: Option<u32>,
    /// Calls that may go at once after a quiet spell.
    pub burst: Option<u32>,
}

/// Reads and parses a configuration file.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        detail: parse_detail(&text, &e),
    })
}

/// The parse error without the echoed source line, with a hint for the classic mistakes.
pub(crate) fn parse_detail(text: &str, e: &toml::de::Error) -> String {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let message = e.message().trim();
    let mut detail = match line {
        Some(n) => format!("line {n}: {message}"),
        None => message.to_owned(),
    };
    if message.contains("expected a sequence")
        || message.contains("invalid type: map, expected a sequence")
    {
        detail.push_str(
            "; each app is its own [[apps]] table, with two brackets ([apps] is one table, not a list)",
        );
    } else if message.contains("unknown field") {
        detail.push_str("; a misspelt setting? config.example.toml lists every one");
    }
    detail
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    fn detail(text: &str) -> String {
        let e = toml::from_str::<FileConfig>(text).expect_err("invalid");
        parse_detail(text, &e)
    }

    #[test]
    fn a_parse_error_names_the_line_but_never_echoes_it() {
        let key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
        let d = detail(&format!(
            "[[apps]]\nname = \"a\"\nencoding_aes_key = \"{key}\" oops\n"
        ));
        assert!(d.starts_with("line 3:"), "{d}");
        assert!(!d.contains(key), "the key is not echoed: {d}");
    }

    #[test]
    fn single_brackets_for_apps_get_the_hint() {
        let d = detail("[apps]\nname = \"a\"\n");
        assert!(d.contains("[[apps]]") && d.contains("two brackets"), "{d}");
        let d = detail("lisen = \"x\"\n");
        assert!(d.contains("misspelt"), "{d}");
    }
}
