//! The change feed (`[feed]`) and its webhook subscribers (`[[webhooks]]`): see [`crate::store::feed`] and
//! [`crate::deliver`].
//!
//! Environment variables: none (file only). Secrets are Standard Webhooks secrets, `whsec_` followed by the
//! base64 of the key; list two to rotate (every delivery is signed with both until the old one is removed).

use std::time::Duration;

use serde::Deserialize;

use super::file::FileConfig;
use crate::deliver::sign::Secret;
use crate::domain::ChangeKind;

/// `[feed]` in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileFeed {
    /// Entries older than this are pruned (a cursor older gets 410).
    pub retention_days: u64,
    /// Run the sequencer (which moves committed changes into the feed) inside `serve`.
    pub run_sequencer: bool,
}

impl Default for FileFeed {
    fn default() -> Self {
        FileFeed {
            retention_days: 30,
            run_sequencer: true,
        }
    }
}

/// One `[[webhooks]]` table in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWebhook {
    /// The subscriber's name: its cursor is stored under it (`wecom-callback webhooks`).
    pub name: String,
    /// Where deliveries are POSTed (https://; http:// only with `allow_private`).
    pub url: String,
    /// `whsec_…` secrets; two during a rotation.
    pub secrets: Vec<String>,
    /// Only these corps (all when empty).
    #[serde(default)]
    pub corps: Vec<String>,
    /// Only these kinds: contact, chat, tag, identity, staff, department (all when empty).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Deliveries in flight at once (different subjects; one subject's changes go one after another).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Per-request timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries go on for this long before the subscriber is marked failing (it keeps retrying, slowly).
    #[serde(default = "default_give_up_hours")]
    pub give_up_after_hours: u64,
    /// Permit private, loopback and link-local addresses (refused by default: see [`crate::deliver::guard`]).
    #[serde(default)]
    pub allow_private: bool,
}

fn default_max_in_flight() -> usize {
    4
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_give_up_hours() -> u64 {
    72
}

/// The feed's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSettings {
    pub retention: Duration,
    /// Run the sequencer inside `serve` (every replica may: one at a time works, the others wait).
    pub run_sequencer: bool,
    /// How often the sequencer looks for committed changes when idle (not in the file).
    pub sequence_interval: Duration,
    /// How often expired entries are pruned (not in the file; tests shorten it).
    pub prune_interval: Duration,
}

impl Default for FeedSettings {
    fn default() -> Self {
        build_feed(&FileConfig::default())
    }
}

/// One webhook subscriber, validated.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub name: String,
    pub url: reqwest::Url,
    pub secrets: Vec<Secret>,
    pub corps: Vec<String>,
    pub kinds: Vec<ChangeKind>,
    pub max_in_flight: usize,
    pub timeout: Duration,
    pub give_up_after: Duration,
    pub allow_private: bool,
    /// The first retry's pause (doubling up to [`WebhookSettings::max_backoff`]; not in the file).
    pub first_backoff: Duration,
    /// The longest pause between retries (not in the file; tests shorten it).
    pub max_backoff: Duration,
}

impl WebhookSettings {
    /// A subscriber with the defaults, for tests and embedders.
    pub fn new(name: &str, url: reqwest::Url, secrets: Vec<Secret>) -> WebhookSettings {
        WebhookSettings {
            name: name.to_owned(),
            url,
            secrets,
            corps: Vec::new(),
            kinds: Vec::new(),
            max_in_flight: default_max_in_flight(),
            timeout: Duration::from_millis(default_timeout_ms()),
            give_up_after: Duration::from_secs(default_give_up_hours() * 3600),
            allow_private: false,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

pub(super) fn build_feed(file: &FileConfig) -> FeedSettings {
    FeedSettings {
        retention: Duration::from_secs(file.feed.retention_days.max(1).saturating_mul(86_400)),
        run_sequencer: file.feed.run_sequencer,
        sequence_interval: Duration::from_millis(50),
        prune_interval: Duration::from_secs(3600),
    }
}

pub(super) fn build_webhooks(
    file: &FileConfig,
    problems: &mut Vec<String>,
) -> Vec<WebhookSettings> {
    let mut out: Vec<WebhookSettings> = Vec::new();
    for (i, w) in file.webhooks.iter().enumerate() {
        let at = format!("[[webhooks]] #{} ({:?})", i + 1, w.name);
        if w.name.trim().is_empty() {
            problems.push(format!(
                "{at}: name must not be empty (the cursor is stored under it)"
            ));
        }
        if out.iter().any(|o| o.name == w.name) {
            problems.push(format!(
                "{at}: another [[webhooks]] has the same name; names must be unique"
            ));
        }
        let url = match reqwest::Url::parse(&w.url) {
            Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && w.allow_private) => Some(u),
            Ok(_) => {
                problems.push(format!(
                    "{at}: url {:?} must start with https:// (http:// only with allow_private = true, for a \
                     receiver on this network)",
                    w.url
                ));
                None
            }
            Err(e) => {
                problems.push(format!("{at}: url {:?} is not a URL ({e})", w.url));
                None
            }
        };
        let mut secrets = Vec::new();
        if w.secrets.is_empty() || w.secrets.len() > 2 {
            problems.push(format!(
                "{at}: secrets must list one whsec_ secret, or two while rotating (generate one with \
                 `wecom-callback webhooks gen-secret`)"
            ));
        }
        for s in &w.secrets {
            match Secret::parse(s) {
                Ok(s) => secrets.push(s),
                Err(e) => problems.push(format!("{at}: {e}")),
            }
        }
        let mut kinds = Vec::new();
        for k in &w.kinds {
            match k.parse::<ChangeKind>() {
                Ok(k) => kinds.push(k),
                Err(e) => problems.push(format!("{at}: kinds: {e}")),
            }
        }
        if w.max_in_flight == 0 || w.max_in_flight > 64 {
            problems.push(format!("{at}: max_in_flight must be between 1 and 64"));
        }
        if let Some(url) = url {
            out.push(WebhookSettings {
                corps: w.corps.clone(),
                kinds,
                max_in_flight: w.max_in_flight.clamp(1, 64),
                timeout: Duration::from_millis(w.timeout_ms.clamp(100, 120_000)),
                give_up_after: Duration::from_secs(
                    w.give_up_after_hours.max(1).saturating_mul(3600),
                ),
                allow_private: w.allow_private,
                ..WebhookSettings::new(&w.name, url, secrets)
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(toml: &str) -> FileConfig {
        toml::from_str(toml).expect("parses")
    }

    #[test]
    fn a_webhook_is_validated_with_every_problem() {
        let f = file(
            r#"
            [[webhooks]]
            name = "crm"
            url = "http://crm.example.com/hook"
            secrets = ["nope"]
            kinds = ["contact", "bogus"]
            "#,
        );
        let mut problems = Vec::new();
        build_webhooks(&f, &mut problems);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("https://"));
        assert!(problems[1].contains("whsec_"));
        assert!(problems[2].contains("bogus"));
    }

    #[test]
    fn a_good_webhook_gets_its_defaults() {
        let f = file(
            r#"
            [[webhooks]]
            name = "crm"
            url = "https://crm.example.com/hook"
            secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
            "#,
        );
        let mut problems = Vec::new();
        let w = build_webhooks(&f, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(w[0].give_up_after, Duration::from_secs(3 * 86_400));
        assert_eq!(w[0].max_in_flight, 4);
        assert!(!w[0].allow_private);
        assert_eq!(build_feed(&f).retention, Duration::from_secs(30 * 86_400));
    }
}
