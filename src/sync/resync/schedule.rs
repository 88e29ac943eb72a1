//! When resyncs run inside `serve`: every app now and then every interval, a run another replica finished
//! recently counting, and a failed run retried after a backoff rather than a whole interval.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::store::resync as runs;
use crate::sync::client::{Credentials, WecomApi};
use crate::sync::resync::{Options, resync_with};

/// Runs a resync for every app with a secret now and then every `interval`, inside `serve`, until `token` is
/// cancelled. A failed resync is retried after a backoff in minutes (1, 2, 4, … up to 60 with the default
/// `options.retry_base`, never later than `interval`), not after the whole interval. A resync under way is dropped at cancellation as a crash would
/// drop it: its progress is saved after every page and the next start resumes it.
pub async fn schedule(
    pool: PgPool,
    api: WecomApi,
    credentials: HashMap<String, Credentials>,
    interval: Duration,
    options: Options,
    metrics: Option<crate::metrics::Metrics>,
    token: tokio_util::sync::CancellationToken,
) {
    let mut due: HashMap<String, (Instant, u32)> = credentials
        .keys()
        .map(|app| (app.clone(), (Instant::now(), 0)))
        .collect();
    loop {
        let mut apps: Vec<&String> = credentials.keys().collect();
        apps.sort();
        for app in apps {
            let Some(creds) = credentials.get(app) else {
                continue;
            };
            let (at, failures) = due.get(app).copied().unwrap_or((Instant::now(), 0));
            if at > Instant::now() {
                continue;
            }
            // Once per interval across every replica: a run another replica (or this one before a restart)
            // finished recently counts. A failed or interrupted run does not, so it is still retried here.
            if let Ok(Some(age)) = runs::last_done_age(&pool, &creds.corp_id).await {
                let age = Duration::from_secs_f64(age.max(0.0));
                if age < interval {
                    tracing::info!(
                        app = app.as_str(),
                        "this corp was resynced recently (by this or another replica); next run after the interval"
                    );
                    due.insert(app.clone(), (Instant::now() + (interval - age), 0));
                    continue;
                }
            }
            let result = tokio::select! {
                () = token.cancelled() => return,
                r = resync_with(&pool, &api, app, creds, &options) => r,
            };
            let next = match &result {
                Ok(_) => (Instant::now() + interval, 0),
                Err(e) => {
                    let wait = retry_backoff(options.retry_base, failures, interval);
                    tracing::warn!(
                        app = app.as_str(),
                        error = %e,
                        retry_in_s = wait.as_secs(),
                        "the scheduled resync did not finish; retrying it after a backoff"
                    );
                    (Instant::now() + wait, failures + 1)
                }
            };
            due.insert(app.clone(), next);
            if let (Ok(d), Some(m)) = (result, &metrics) {
                for (table, change, n) in [
                    ("contacts", "created", d.contacts_created),
                    ("follows", "created", d.follows_created),
                    ("follows", "updated", d.follows_updated),
                    ("follows", "removed", d.follows_removed),
                    ("follows", "unlisted_kept", d.follows_unlisted_kept),
                    ("chats", "created", d.chats_created),
                    ("chats", "updated", d.chats_updated),
                    ("chats", "removed", d.chats_dismissed),
                    ("chats", "unlisted_kept", d.chats_unlisted_kept),
                    ("tags", "created", d.tags_created),
                    ("tags", "updated", d.tags_updated),
                    ("tags", "removed", d.tags_deleted),
                    ("staff", "created", d.staff_created),
                    ("staff", "updated", d.staff_updated),
                    ("staff", "removed", d.staff_left),
                    ("staff", "unlisted_kept", d.staff_unlisted_kept),
                    ("departments", "created", d.departments_created),
                    ("departments", "updated", d.departments_updated),
                ] {
                    m.resync_drift.with_label_values(&[table, change]).inc_by(n);
                }
            }
        }
        let wake = due
            .values()
            .map(|(at, _)| *at)
            .min()
            .unwrap_or_else(|| Instant::now() + interval);
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

/// The default [`Options::retry_base`]: a failed start-up resync is retried after a minute, not a day.
pub const RETRY_BASE: Duration = Duration::from_secs(60);

/// The wait before retrying a failed scheduled resync after `failures` consecutive failures before this one:
/// `base`, 2 × `base`, 4 × `base`, … at most 60 × `base` (1, 2, 4, … 60 minutes with the default base of a
/// minute) and never more than `interval`.
pub fn retry_backoff(base: Duration, failures: u32, interval: Duration) -> Duration {
    let factor = (1u32 << failures.min(6)).min(60);
    base.saturating_mul(factor).min(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_resync_is_retried_after_minutes_doubling_to_an_hour() {
        let day = Duration::from_secs(24 * 3600);
        let minutes: Vec<u64> = (0..9)
            .map(|f| retry_backoff(RETRY_BASE, f, day).as_secs() / 60)
            .collect();
        assert_eq!(minutes, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(
            retry_backoff(RETRY_BASE, u32::MAX, day),
            Duration::from_secs(3600),
            "no overflow after many failures"
        );
    }

    #[test]
    fn the_retry_never_waits_longer_than_the_interval_and_follows_the_base() {
        let interval = Duration::from_secs(5 * 60);
        assert_eq!(retry_backoff(RETRY_BASE, 5, interval), interval);
        let base = Duration::from_millis(300);
        assert_eq!(retry_backoff(base, 1, interval), Duration::from_millis(600));
        assert_eq!(Options::new(Duration::ZERO).retry_base, RETRY_BASE);
    }
}
