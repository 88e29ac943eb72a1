//! Service providers (服务商, issue 14): third-party suites (第三方应用) and 代开发 templates, and the corps that
//! authorise them. One instance serves every authorising corp, with no per-corp configuration.
//!
//! The lifecycle, stage by stage:
//! * A suite's instruction callbacks (指令回调URL / 模版回调URL) are stored like every callback (`success` once
//!   committed, well inside WeCom's 1 s for auth events). The applier ([`plan`], pure) turns suite events into
//!   writes in its own transaction: a `suite_ticket` is kept per suite (newest push wins), a `cancel_auth`
//!   marks the corp cancelled at once, and the rest become jobs ([`crate::domain::JobKind`]).
//! * The worker ([`auth`]) exchanges a `create_auth` / `reset_permanent_code` AuthCode for the permanent code
//!   (retrying with its backoff, well inside the code's 10 minutes), seals the code ([`seal`]) and stores the
//!   corp, then queues the corp's first resync. `change_auth` re-reads the authorisation; `cancel_auth`
//!   deletes the corp's synced rows (after `[provider] delete_rows_after_secs`, default at once) and its
//!   stored events (after `delete_events_after_days`, default 30).
//! * Every other job for a corp of a suite app runs with that corp's token ([`crate::sync::client::TokenSource`]):
//!   `service/get_corp_token` for a third-party suite, `gettoken` with the permanent code for 代开发.

pub mod auth;
pub mod plan;
pub mod seal;

use std::time::Duration;

use secrecy::SecretString;

pub use seal::SecretKey;

/// Which kind of provider app a suite is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuiteKind {
    /// 第三方应用: corp tokens from `service/get_corp_token` (suite token + permanent code).
    ThirdParty,
    /// 代开发应用模板: the installed app's token from `gettoken` with the permanent code as its secret.
    Agency,
}

impl SuiteKind {
    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            SuiteKind::ThirdParty => "third_party",
            SuiteKind::Agency => "agency",
        }
    }
}

/// One `[[suites]]` entry: a third-party suite or a 代开发 template.
#[derive(Clone)]
pub struct Suite {
    /// The app name of its instruction URL (`/callback/{name}`); its jobs and resync runs carry it.
    pub name: String,
    pub kind: SuiteKind,
    /// The suite id (第三方应用 SuiteID, or the 代开发 template id).
    pub suite_id: String,
    /// The suite secret. Never logged.
    pub secret: SecretString,
    /// `[[apps]]` whose events are this suite's corps' data callbacks (第三方 数据回调URL, the 代开发 app's own
    /// callback URL): their jobs run with the corp's token too.
    pub data_apps: Vec<String>,
}

impl std::fmt::Debug for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suite")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("suite_id", &self.suite_id)
            .field("secret", &"<redacted>")
            .field("data_apps", &self.data_apps)
            .finish()
    }
}

/// The default of `[provider] delete_events_after_days`.
pub const DEFAULT_EVENT_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// Everything the provider lifecycle needs (`[[suites]]` and `[provider]`).
#[derive(Debug, Clone)]
pub struct Provider {
    pub suites: Vec<Suite>,
    /// Seals permanent codes at rest; required when any suite is configured.
    pub key: Option<SecretKey>,
    /// How long after `cancel_auth` a corp's synced rows are deleted (default: at once).
    pub delete_rows_after: Duration,
    /// How long after `cancel_auth` a corp's stored events are kept, for audit.
    pub delete_events_after: Duration,
}

impl Default for Provider {
    /// No suites; rows deleted at cancellation, events after [`DEFAULT_EVENT_RETENTION`].
    fn default() -> Provider {
        Provider {
            suites: Vec::new(),
            key: None,
            delete_rows_after: Duration::ZERO,
            delete_events_after: DEFAULT_EVENT_RETENTION,
        }
    }
}

impl Provider {
    /// The suite whose instruction URL (or one of whose data URLs) is the app `app`.
    pub fn suite_by_app(&self, app: &str) -> Option<&Suite> {
        self.suites
            .iter()
            .find(|s| s.name == app || s.data_apps.iter().any(|d| d == app))
    }

    /// Every app whose events run jobs with a suite's corp tokens.
    pub fn app_names(&self) -> impl Iterator<Item = &String> {
        self.suites
            .iter()
            .flat_map(|s| std::iter::once(&s.name).chain(s.data_apps.iter()))
    }

    /// The suite with this id.
    pub fn suite_by_id(&self, suite_id: &str) -> Option<&Suite> {
        self.suites.iter().find(|s| s.suite_id == suite_id)
    }

    /// Whether any suite is configured.
    pub fn is_enabled(&self) -> bool {
        !self.suites.is_empty()
    }
}
