//! One run: taken (started or resumed) under the corp's lock, walked through the steps in order, and
//! finished or failed; and what every step shares: saving progress, retrying an item, skipping it, reporting.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::store::resync::{self as runs, Drift, Step};
use crate::sync::client::{ApiError, Credentials, MAX_OWNER_FILTER, WecomApi};
use crate::sync::resync::{CHUNK, MASS_REMOVAL_FLOOR, Options, Report, ResyncError};

pub(super) async fn locked(
    pool: &PgPool,
    api: &WecomApi,
    app: &str,
    creds: &Credentials,
    options: &Options,
) -> Result<Drift, ResyncError> {
    let mut run = runs::start_or_resume(pool, app, &creds.corp_id, options.abandon).await?;
    if run.resumed {
        tracing::info!(
            app,
            run = run.id,
            attempt = run.attempts,
            step = ?run.progress.step,
            staff_done = run.progress.users_done.len(),
            "resuming an interrupted resync"
        );
    } else {
        tracing::info!(app, run = run.id, "resync started");
    }
    let mut walk = Walk {
        pool,
        api,
        app,
        creds,
        options,
        run: &mut run,
        started: Instant::now(),
        done_at_start: 0,
    };
    let outcome = walk.steps().await;
    if crate::store::corps::is_cancelled(pool, &creds.corp_id).await? {
        // A service provider's corp cancelled while this ran (`cancel_auth`): whatever a page wrote after the
        // purge goes too, and the run is not recorded.
        let rows = crate::store::corps::clear_after_cancel(pool, &creds.corp_id).await?;
        tracing::info!(app, corp_id = %creds.corp_id, rows, "resync stopped: the corp cancelled its authorisation");
        return Err(ResyncError::Cancelled {
            corp_id: creds.corp_id.clone(),
        });
    }
    match outcome {
        Ok(drift) => {
            runs::finish(pool, &run, &drift).await?;
            tracing::info!(
                app,
                run = run.id,
                calls = run.progress.calls,
                skipped = drift.skipped,
                drift = %serde_json::to_string(&drift).unwrap_or_default(),
                "resync done"
            );
            if drift.skipped > 0 {
                tracing::warn!(
                    app,
                    run = run.id,
                    errors = ?run.progress.errors,
                    "the resync skipped items after errors; their rows were not swept (the errors say what to do)"
                );
            }
            Ok(drift)
        }
        Err(e) => {
            let _ = runs::fail(pool, &run, &e.to_string()).await;
            tracing::warn!(app, run = run.id, error = %e, "resync interrupted; the next run resumes it");
            Err(e)
        }
    }
}

/// Errors that fail every call of the app, not one item: skipping to the next item would only fail again.
pub(super) fn fails_everything(e: &ApiError) -> bool {
    match e {
        // Token/secret refused, invalid corp, API not allowed for the secret, IP not trusted.
        ApiError::Wecom(w) => matches!(
            w.errcode,
            40001 | 40013 | 40014 | 41001 | 42001 | 48002 | 60020
        ),
        ApiError::Unreachable { .. }
        | ApiError::NoSecret { .. }
        | ApiError::NoSuiteTicket(_)
        | ApiError::NotAuthorised(_)
        | ApiError::Database(_) => true,
        ApiError::HttpStatus(_) | ApiError::BadResponse(_) | ApiError::Throttled { .. } => false,
    }
}

/// Errors that may pass when the item is asked for again (the others, e.g. 40050 "no such chat", are
/// answers: asking again gives the same).
pub(super) fn transient(e: &ApiError) -> bool {
    match e {
        ApiError::Wecom(w) => w.retryable() || matches!(w.errcode, -1 | 45009 | 45033),
        ApiError::HttpStatus(_) | ApiError::Throttled { .. } => true,
        _ => false,
    }
}

/// One run's walk through the steps.
pub(super) struct Walk<'a> {
    pub(super) pool: &'a PgPool,
    pub(super) api: &'a WecomApi,
    pub(super) app: &'a str,
    pub(super) creds: &'a Credentials,
    pub(super) options: &'a Options,
    pub(super) run: &'a mut runs::Run,
    pub(super) started: Instant,
    /// Staff done when this attempt's current step started (for the ETA).
    pub(super) done_at_start: usize,
}

impl Walk<'_> {
    /// Saves the run's progress after a page, and stops the run ([`ResyncError::Cancelled`]) when the corp
    /// cancelled its authorisation meanwhile: no further page is fetched or written for it.
    pub(super) async fn save(&self) -> Result<(), ResyncError> {
        runs::save_progress(self.pool, self.run).await?;
        if crate::store::corps::is_cancelled(self.pool, &self.creds.corp_id).await? {
            return Err(ResyncError::Cancelled {
                corp_id: self.creds.corp_id.clone(),
            });
        }
        Ok(())
    }

    pub(super) fn chunk_size(&self) -> usize {
        self.options.chunk.clamp(1, CHUNK.min(MAX_OWNER_FILTER))
    }

    /// Records a problem of the run as a whole (`e` says what to do) in the run's errors and the log.
    pub(super) fn note(&mut self, e: String) {
        tracing::warn!(app = self.app, run = self.run.id, "{e}");
        self.run.progress.record_error(e);
    }

    /// Records a step skipped as a whole ([`Walk::note`]), counts it as skipped, and saves.
    pub(super) async fn skip_step(&mut self, e: String) -> Result<(), ResyncError> {
        self.note(e);
        self.run.progress.drift.skipped += 1;
        self.save().await
    }

    /// Whether the mass-removal guard refuses a sweep of `candidates` out of `total` rows: more than
    /// [`MASS_REMOVAL_FLOOR`] and more than `max_removal_share` of them, unless the operator allowed it.
    pub(super) fn refuses_mass_removal(&self, candidates: u64, total: u64) -> bool {
        let limit = (self.options.max_removal_share * total as f64).floor() as u64;
        candidates > MASS_REMOVAL_FLOOR && candidates > limit && !self.options.allow_mass_removal
    }

    /// Records a skipped item's error in the run and the log.
    pub(super) fn skip(&mut self, what: &str, e: &ApiError) {
        tracing::warn!(app = self.app, run = self.run.id, item = what, error = %e, "resync item skipped after retries");
        self.run.progress.record_error(format!("{what}: {e}"));
        self.run.progress.drift.skipped += 1;
    }

    pub(super) fn report(&self, staff_done: usize) {
        self.report_of(staff_done, self.run.progress.users_total);
    }

    pub(super) fn report_of(&self, staff_done: usize, total: usize) {
        let p = &self.run.progress;
        let done_now = staff_done.saturating_sub(self.done_at_start);
        let eta = (done_now > 0 && staff_done <= total).then(|| {
            let per = self.started.elapsed().as_secs_f64() / done_now as f64;
            Duration::from_secs_f64(per * (total - staff_done) as f64)
        });
        let report = Report {
            app: self.app.to_owned(),
            step: p.step,
            staff_done,
            staff_total: total,
            calls: p.calls,
            skipped: p.drift.skipped,
            eta,
        };
        tracing::info!(
            app = self.app,
            run = self.run.id,
            "resync progress: {report}"
        );
        if let Some(f) = &self.options.on_progress {
            f(&report);
        }
    }

    async fn pause(&self) {
        if !self.options.pause.is_zero() {
            tokio::time::sleep(self.options.pause).await;
        }
    }

    /// `call` up to `item_attempts` times; `Ok(Err(e))` when the item is to be skipped, `Err` when the run
    /// must stop.
    pub(super) async fn attempt<T, F, Fut>(
        &mut self,
        mut call: F,
    ) -> Result<Result<T, ApiError>, ResyncError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut tries = 0;
        loop {
            self.pause().await;
            self.run.progress.calls += 1;
            match call().await {
                Ok(v) => return Ok(Ok(v)),
                Err(e) if fails_everything(&e) => return Err(e.into()),
                Err(e) => {
                    tries += 1;
                    if tries >= self.options.item_attempts.max(1) || !transient(&e) {
                        return Ok(Err(e));
                    }
                    tokio::time::sleep(self.options.item_backoff).await;
                }
            }
        }
    }

    async fn steps(&mut self) -> Result<Drift, ResyncError> {
        let api = self.api;
        let creds = self.creds;
        // Listed again on every start: a resume works with today's staff.
        let mut users = match self.attempt(|| api.follow_user_list(creds)).await? {
            Ok(u) => u,
            Err(e) => return Err(e.into()),
        };
        users.sort();
        users.dedup();
        self.run.progress.users_total = users.len();
        if users.is_empty() {
            let e = "get_follow_user_list is empty: no member of the app's visible range has 客户联系 (customer \
                     contact) enabled, or the secret is not the one of the 客户联系 app. Nothing was swept; check \
                     the app's visible range and the secret";
            self.note(e.to_owned());
        }
        // Tags first: a follow's tag ids are named from the tag table when the follow is written.
        if self.run.progress.step == Step::Tags {
            self.tags().await?;
            self.run.progress.step = Step::Follows;
            self.save().await?;
        }
        if self.run.progress.step == Step::Follows {
            self.follows(&users).await?;
            self.run.progress.step = Step::Chats;
            self.save().await?;
        }
        if self.run.progress.step == Step::Chats {
            self.chats(&users).await?;
            self.run.progress.step = Step::Directory;
            self.save().await?;
        }
        self.directory(&users).await?;
        Ok(self.run.progress.drift.clone())
    }
}
