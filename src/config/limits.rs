//! `[api_limits]`: WeCom API calls per corp and API, counted across every replica (see
//! [`crate::sync::client::limiter`]). Defaults in [`super::file::FileApiLimits`].
//!
//! Environment variables: none (the file only; the defaults stay below WeCom's limits).

use std::time::Duration;

use super::file::{FileApiLimit, FileApiLimits};
use crate::sync::client::limiter::{ApiLimits, Limit, api_name};

/// WeCom's own ceilings, for the messages: concurrent calls of one API per corp, calls per minute.
const WECOM_CONCURRENCY: u32 = 5;
const WECOM_PER_MINUTE: u32 = 10_000;

/// The defaults, as a machine with no file gets them.
pub fn defaults() -> ApiLimits {
    build(&FileApiLimits::default(), &mut Vec::new())
}

fn check(name: &str, l: Limit, problems: &mut Vec<String>) {
    if l.concurrency == 0 {
        problems.push(format!(
            "{name}.concurrency is 0, which would stop every call; use 1 to {WECOM_CONCURRENCY} \
             (WeCom answers 45033 past about {WECOM_CONCURRENCY} concurrent calls per corp), or \
             api_limits.enabled = false for no limit"
        ));
    }
    if l.per_minute == 0 || l.per_minute > WECOM_PER_MINUTE {
        problems.push(format!(
            "{name}.per_minute = {} must be between 1 and {WECOM_PER_MINUTE} (WeCom's limit per corp and API; \
             45009 beyond)",
            l.per_minute
        ));
    }
    if l.burst == 0 {
        problems.push(format!(
            "{name}.burst is 0; use at least 1 (one call at a time)"
        ));
    }
}

pub(super) fn build(file: &FileApiLimits, problems: &mut Vec<String>) -> ApiLimits {
    let default = Limit {
        concurrency: file.concurrency,
        per_minute: file.per_minute,
        burst: file.burst,
    };
    if file.enabled {
        check("api_limits", default, problems);
        if file.slowdown_factor == 0 {
            problems.push(
                "api_limits.slowdown_factor is 0; use 1 (no slowdown after 45033 / 45009) or more"
                    .into(),
            );
        }
    }
    let apis = file
        .apis
        .iter()
        .map(|(name, l): (&String, &FileApiLimit)| {
            let limit = Limit {
                concurrency: l.concurrency.unwrap_or(default.concurrency),
                per_minute: l.per_minute.unwrap_or(default.per_minute),
                burst: l.burst.unwrap_or(default.burst),
            };
            if file.enabled {
                check(&format!("api_limits.apis.{name:?}"), limit, problems);
            }
            // "/cgi-bin/externalcontact/get" and "externalcontact/get" name the same API.
            (api_name(name).to_owned(), limit)
        })
        .collect();
    ApiLimits {
        enabled: file.enabled,
        default,
        apis,
        slowdown: Duration::from_secs(file.slowdown_secs),
        slowdown_factor: file.slowdown_factor.max(1),
        lease: Duration::from_secs(30),
        max_wait: Duration::from_secs(120),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_stay_below_wecoms_limits() {
        let d = defaults();
        assert!(d.enabled);
        assert!(d.default.concurrency < WECOM_CONCURRENCY);
        assert!(d.default.per_minute < WECOM_PER_MINUTE);
        assert!(
            d.lease > Duration::from_secs(10),
            "outlives the HTTP timeout"
        );
    }

    #[test]
    fn per_api_entries_inherit_and_are_checked() {
        let file: FileApiLimits = toml::from_str(
            r#"
            concurrency = 2
            [apis."/cgi-bin/externalcontact/get"]
            per_minute = 60
            [apis."externalcontact/groupchat/get"]
            concurrency = 0
            "#,
        )
        .expect("toml");
        let mut problems = Vec::new();
        let l = build(&file, &mut problems);
        assert_eq!(
            l.limit("/cgi-bin/externalcontact/get"),
            Limit {
                concurrency: 2,
                per_minute: 60,
                burst: 20
            }
        );
        assert_eq!(l.limit("externalcontact/batch/get_by_user").concurrency, 2);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("externalcontact/groupchat/get") && problems[0].contains("45033"),
            "{problems:?}"
        );
    }
}
