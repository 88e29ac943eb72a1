//! [`StatusRecorder`]: counts every callback outcome per app and minute, and keeps the last URL verification
//! per app, in memory; [`run`] adds them to PostgreSQL every few seconds (see `store::status`).
//!
//! In memory first so the callback path never waits on an extra statement; in PostgreSQL so the page covers
//! every replica and survives a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::ingest::Outcome;
use crate::store::status::{self, OutcomeCount, Verification};

/// How often the counts are added to the database.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Counts not yet in the database. Bounded: apps are the configured ones (plus `-` for unknown paths),
/// outcomes a closed set, and a flush empties it; when the database is down it keeps at most a day of
/// minutes, the oldest dropped first.
#[derive(Default)]
struct Pending {
    counts: HashMap<(String, DateTime<Utc>, &'static str), i64>,
    verifications: HashMap<String, Verification>,
}

/// Minutes of counts kept while the database cannot take them.
const MAX_PENDING_MINUTES: usize = 24 * 60;

/// See the module doc. Cloning shares the counts.
#[derive(Clone, Default)]
pub struct StatusRecorder {
    pending: Arc<Mutex<Pending>>,
}

impl StatusRecorder {
    /// A recorder with nothing pending.
    pub fn new() -> StatusRecorder {
        StatusRecorder::default()
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves counts, which are still counts.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one callback outcome of `app` now.
    pub fn outcome(&self, app: &str, outcome: Outcome) {
        let minute = minute_of(Utc::now());
        let mut p = self.lock();
        *p.counts
            .entry((app.to_owned(), minute, outcome.as_str()))
            .or_insert(0) += 1;
        if p.counts.len() > MAX_PENDING_MINUTES * 8
            && let Some(oldest) = p.counts.keys().map(|k| k.1).min()
        {
            p.counts.retain(|k, _| k.1 != oldest);
        }
    }

    /// Records a URL verification attempt of `app`: passed, or refused with its class, WeCom code and reason.
    pub fn verification(
        &self,
        app: &str,
        outcome: Outcome,
        wecom_code: Option<i32>,
        reason: Option<String>,
    ) {
        let mut p = self.lock();
        // An earlier pass not yet flushed is still the last pass.
        let last_ok_at = p.verifications.get(app).and_then(|prev| {
            if prev.outcome == Outcome::UrlVerified.as_str() {
                Some(prev.attempted_at)
            } else {
                prev.last_ok_at
            }
        });
        let v = Verification {
            app: app.to_owned(),
            attempted_at: Utc::now(),
            outcome: outcome.as_str().to_owned(),
            wecom_code,
            reason,
            last_ok_at,
        };
        p.verifications.insert(app.to_owned(), v);
    }

    /// Adds what is pending to the database. On failure it stays pending for the next flush.
    pub async fn flush(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let taken = std::mem::take(&mut *self.lock());
        let counts: Vec<OutcomeCount> = taken
            .counts
            .iter()
            .map(|((app, minute, outcome), count)| OutcomeCount {
                app: app.clone(),
                minute: *minute,
                outcome: (*outcome).to_owned(),
                count: *count,
            })
            .collect();
        let mut result = status::add_outcomes(pool, &counts).await;
        let counts_failed = result.is_err();
        let mut unwritten = HashMap::new();
        for (app, v) in taken.verifications {
            if result.is_ok()
                && let Err(e) = status::record_verification(pool, &v).await
            {
                result = Err(e);
            }
            if result.is_err() {
                unwritten.insert(app, v);
            }
        }
        if result.is_err() {
            let mut p = self.lock();
            if counts_failed {
                for (k, n) in taken.counts {
                    *p.counts.entry(k).or_insert(0) += n;
                }
            }
            for (app, v) in unwritten {
                // A newer attempt recorded meanwhile wins.
                p.verifications.entry(app).or_insert(v);
            }
        }
        result
    }
}

fn minute_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::minutes(1)).unwrap_or(t)
}

/// Flushes the recorder every [`FLUSH_EVERY`] until cancelled, and once more then.
pub async fn run(recorder: StatusRecorder, pool: PgPool, token: CancellationToken) {
    loop {
        let stop = tokio::select! {
            () = token.cancelled() => true,
            () = tokio::time::sleep(FLUSH_EVERY) => false,
        };
        if let Err(e) = recorder.flush(&pool).await {
            tracing::debug!(error = %e, "status counts not flushed; kept for the next try");
        }
        if stop {
            return;
        }
    }
}
