//! WeCom's API (for apps with a secret): where it is, the job worker, the resync.
//!
//! Environment variables (read through clap, see [`ApiArgs`]): `WECOM_API_BASE_URL`,
//! `WECOM_RESYNC_MAX_REMOVAL_SHARE`.

use secrecy::SecretString;
use std::time::Duration;

use super::file::{DEFAULT_API_BASE_URL, FileConfig};

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
    /// Done jobs older than this are deleted (zero: kept forever). Dead jobs are always kept.
    pub jobs_retention: Duration,
    /// How often done jobs past their retention are looked for (one hour; not in the file, tests shorten it).
    pub jobs_prune_interval: Duration,
    /// The resync's follow sweep refuses to remove more than this share (0..=1) of a corp's active follows.
    pub resync_max_removal_share: f64,
    /// Calls per corp and API across every replica (`[api_limits]`, see [`super::limits`]).
    pub limits: crate::sync::client::limiter::ApiLimits,
}

/// `WECOM_API_BASE_URL` / `--api-base-url`, for every command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ApiArgs {
    /// WeCom API base URL.
    #[arg(long, env = "WECOM_API_BASE_URL", global = true, value_name = "URL",
          help = format!("WeCom API base URL [default: {DEFAULT_API_BASE_URL}]"))]
    pub api_base_url: Option<String>,
    /// The resync's mass-removal guard: the largest share (0..=1) of a corp's active follows one resync may
    /// mark removed.
    #[arg(
        long,
        env = "WECOM_RESYNC_MAX_REMOVAL_SHARE",
        global = true,
        value_name = "SHARE",
        help = "Largest share (0..=1) of active follows one resync may remove [default: 0.2]"
    )]
    pub resync_max_removal_share: Option<f64>,
    /// Service providers: the key (32 bytes, base64) sealing permanent codes at rest.
    #[arg(long, env = "WECOM_SECRET_KEY", global = true, hide_env_values = true,
          value_parser = super::secret, value_name = "BASE64")]
    pub secret_key: Option<SecretString>,
}

pub(super) fn build(file: &FileConfig, args: &ApiArgs, problems: &mut Vec<String>) -> ApiSettings {
    let a = &file.api;
    let base_url = args
        .api_base_url
        .clone()
        .unwrap_or_else(|| a.base_url.clone());
    if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
        problems.push(format!(
            "WECOM_API_BASE_URL / api.base_url {base_url:?} must start with https:// (default {DEFAULT_API_BASE_URL})"
        ));
    }
    let share = args
        .resync_max_removal_share
        .unwrap_or(a.resync_max_removal_share);
    if !(0.0..=1.0).contains(&share) {
        problems.push(format!(
            "WECOM_RESYNC_MAX_REMOVAL_SHARE / api.resync_max_removal_share {share} must be between 0 and 1 \
             (default 0.2: a resync removes at most 20 % of a corp's active follows)"
        ));
    }
    ApiSettings {
        base_url,
        resync_max_removal_share: share.clamp(0.0, 1.0),
        worker_concurrency: a.worker_concurrency,
        max_attempts: a.max_attempts.max(1),
        resync_interval: Duration::from_secs(a.resync_interval_hours.saturating_mul(3600)),
        resync_pause: Duration::from_millis(a.resync_pause_ms),
        jobs_retention: Duration::from_secs(a.jobs_retention_days.saturating_mul(86_400)),
        jobs_prune_interval: Duration::from_secs(3600),
        limits: super::limits::build(&file.api_limits, problems),
    }
}
