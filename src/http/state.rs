//! What every handler can reach.

use std::collections::HashMap;

use secrecy::SecretString;
use sqlx::PgPool;

use crate::app::AppConfig;
use crate::config::HttpSettings;
use crate::ingest::Ingest;
use crate::metrics::Metrics;

/// What every handler can reach.
pub struct AppState {
    pub(crate) apps: HashMap<String, AppConfig>,
    pub(crate) default_app: Option<String>,
    /// Where verified callbacks go (store, or spool) before they are acknowledged. Its spool, if any, is
    /// `ingest.spool()`.
    pub ingest: Ingest,
    pub pool: PgPool,
    pub http: HttpSettings,
    /// Bearer token of the read API (the API routes exist only when it is set).
    pub api_token: Option<SecretString>,
    pub metrics: Metrics,
    /// Domain ownership files by name.
    pub verification_files: std::collections::BTreeMap<String, String>,
    /// WeCom API client, when any app has a secret.
    pub api: Option<crate::sync::client::WecomApi>,
    /// API credentials by app name.
    pub credentials: HashMap<String, crate::sync::client::Credentials>,
    /// Service providers' suites (`[[suites]]`): a third-party suite's mini-program login goes through
    /// `service/miniprogram/jscode2session` for whichever corp authorised it.
    pub suites: Vec<crate::sync::provider::Suite>,
    /// Opens the permanent codes of authorised corps (a 代开发 corp's mini-program login needs its code).
    pub provider_key: Option<crate::sync::provider::SecretKey>,
    /// The corps authorising each suite: receive ids of its data callback URLs.
    pub suite_corps: crate::http::suite_corps::SuiteCorps,
    /// Whether a critical background task has failed (then `/readyz` fails).
    pub tasks: crate::tasks::TaskHealth,
    /// Callback outcomes and URL verifications for the status page (see [`crate::http::status`]).
    pub status: crate::http::status::StatusRecorder,
    /// Where refused requests are kept for `decrypt --last`; `None` when off.
    pub captures: Option<crate::tools::capture::Captures>,
}

impl AppState {
    /// The app configured under `name`.
    pub fn app(&self, name: &str) -> Option<&AppConfig> {
        self.apps.get(name)
    }

    /// The app served at `/callback` (only when exactly one is configured).
    pub fn default_app(&self) -> Option<&AppConfig> {
        self.default_app.as_deref().and_then(|n| self.apps.get(n))
    }
}
