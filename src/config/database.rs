//! Which PostgreSQL to use, and how to connect.
//!
//! Environment variables (read through clap, see [`DatabaseArgs`] and [`EmbeddedArgs`]):
//! - `DATABASE_URL`: the server; default [`DEFAULT_DATABASE_URL`](super::file::DEFAULT_DATABASE_URL).
//! - `WECOM_LOCAL_PG_ADDR`: with no database configured, `serve` probes this address and starts a private
//!   cluster when nothing listens there (default 127.0.0.1:5432).
//! - `WECOM_EMBEDDED_DATA_DIR`: the private cluster's data directory.
//! - `WECOM_POSTGRES_BIN`: the directory holding `initdb` and `pg_ctl` for the private cluster.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;

use super::file::{DEFAULT_DATABASE_URL, DEFAULT_LOCAL_PG_ADDR, FileConfig};

/// Database connection settings.
#[derive(Clone)]
pub struct DatabaseSettings {
    /// The PostgreSQL URL (may hold a password: never logged).
    pub url: SecretString,
    /// Pool size.
    pub max_connections: u32,
    /// How long a request may wait for a pooled connection. sqlx's default (30 s) is far beyond WeCom's
    /// 5-second budget.
    pub acquire_timeout: Duration,
    /// PostgreSQL `statement_timeout` for every connection.
    pub statement_timeout: Duration,
    /// A statement taking longer is logged at `warn`, with its SQL ([`SLOW_STATEMENT`] for the service;
    /// `rebuild`, whose statements write tens of thousands of rows each, raises it).
    pub slow_statement: Duration,
}

/// The default of [`DatabaseSettings::slow_statement`]: in the service, a second is a problem worth a line.
pub const SLOW_STATEMENT: Duration = Duration::from_secs(1);

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(self.url.expose_secret()))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("slow_statement", &self.slow_statement)
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

/// `DATABASE_URL` / `--database-url`, for every command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL, e.g. postgres://USER:PASSWORD@HOST:5432/wecom_callback.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true, value_parser = super::secret,
          value_name = "URL",
          help = format!("PostgreSQL URL, e.g. postgres://USER:PASSWORD@HOST:5432/wecom_callback \
                          [default: {DEFAULT_DATABASE_URL}, or a private cluster when nothing listens there]"))]
    pub database_url: Option<SecretString>,
}

/// Where `serve` finds PostgreSQL when no database is configured (first run on a fresh machine), and where
/// the other commands then find the private cluster `serve` started.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EmbeddedArgs {
    /// With no database configured, the address probed for a local PostgreSQL.
    #[arg(long, env = "WECOM_LOCAL_PG_ADDR", value_name = "IP:PORT", value_parser = local_pg_addr, global = true,
          help = format!("With no database configured, the address probed for a local PostgreSQL; when nothing \
                          listens there, serve starts a private cluster and the other commands use the one \
                          serve started [default: {DEFAULT_LOCAL_PG_ADDR}]"))]
    pub local_pg_addr: Option<SocketAddr>,
    /// Data directory of the private cluster [default: ~/.local/share/wecom-callback/postgres;
    /// /var/lib/wecom-callback/postgres as root].
    #[arg(
        long,
        env = "WECOM_EMBEDDED_DATA_DIR",
        value_name = "DIR",
        global = true
    )]
    pub embedded_data_dir: Option<PathBuf>,
    /// Directory holding initdb and pg_ctl for the private cluster [default: the newest
    /// /usr/lib/postgresql/*/bin, then PATH].
    #[arg(long, env = "WECOM_POSTGRES_BIN", value_name = "DIR", global = true)]
    pub postgres_bin: Option<PathBuf>,
}

impl EmbeddedArgs {
    /// The address to probe for a local PostgreSQL.
    pub fn probe(&self) -> SocketAddr {
        self.local_pg_addr.unwrap_or_else(default_local_pg_addr)
    }

    /// The private cluster's data directory, if one was given (else the platform default applies).
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.embedded_data_dir
            .as_deref()
            .filter(|d| !d.as_os_str().is_empty())
    }
}

fn default_local_pg_addr() -> SocketAddr {
    DEFAULT_LOCAL_PG_ADDR
        .parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 5432)))
}

/// `WECOM_LOCAL_PG_ADDR`: empty means the default, as it always has.
fn local_pg_addr(s: &str) -> Result<SocketAddr, String> {
    if s.trim().is_empty() {
        Ok(default_local_pg_addr())
    } else {
        super::socket_addr(s)
    }
}

/// Whether the flag, the environment or the file names a database (else `serve` may start its own).
pub fn is_explicit(file: &FileConfig, args: &DatabaseArgs) -> bool {
    args.database_url.is_some() || file.database_url.is_some()
}

pub(super) fn build(
    file: &FileConfig,
    args: &DatabaseArgs,
    problems: &mut Vec<String>,
) -> DatabaseSettings {
    let url = match &args.database_url {
        Some(u) => u.expose_secret().to_owned(),
        None => file
            .database_url
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
    };
    if let Err(e) = PgConnectOptions::from_str(&url) {
        problems.push(format!(
            "DATABASE_URL / database_url is not a valid PostgreSQL URL ({e}); \
             write it as postgres://USER[:PASSWORD]@HOST:PORT/DATABASE"
        ));
    }
    let d = &file.database;
    if d.max_connections == 0 {
        problems.push("database.max_connections must be at least 1".to_owned());
    }
    DatabaseSettings {
        url: SecretString::from(url),
        max_connections: d.max_connections.max(1),
        acquire_timeout: Duration::from_millis(d.acquire_timeout_ms),
        statement_timeout: Duration::from_millis(d.statement_timeout_ms),
        slow_statement: SLOW_STATEMENT,
    }
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
