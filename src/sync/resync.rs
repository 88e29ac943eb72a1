//! Full resync: callbacks are hints and can be missed, and changes made through the API make none, so the
//! synced tables are periodically reconciled with what WeCom's API says (docs/protocol.md §7.2–7.4).
//!
//! A run, one at a time per corp (a PostgreSQL advisory lock, across processes and replicas):
//! 1. `get_follow_user_list` (the staff with 客户联系), on every start.
//! 2. `get_corp_tag_list` and `get_strategy_tag_list` (rule-group tags); tags absent from both lists become
//!    deleted (only when both were read). First, because `batch/get_by_user` gives a follow's tag ids only:
//!    their names come from the tag table, so they must be known before the follows are written.
//! 3. `batch/get_by_user` per chunk of ≤ 100 of them (following `next_cursor`) → upsert; progress is saved
//!    after every page, and staff are remembered by userid, so a resume after the list changed neither skips
//!    nor repeats anyone (a chunk under way that names someone no longer listed is started over without
//!    them). Members in `fail_info.unlicensed_userid_list` are remembered as unlicensed.
//! 4. The follow sweep: follows WeCom no longer lists become `removed`, but only `active` ones (WeCom lists no
//!    half-added relation), only of the staff this run listed completely (not unlicensed, not a failed
//!    chunk), never after an empty follow-user list, and never more than `max_removal_share` of the corp's
//!    active follows unless the operator allows it.
//! 5. `groupchat/list` with `owner_filter` per chunk of ≤ 100 owners (without it WeCom answers 81017 when
//!    the app sees more than 1000 members), then `groupchat/get` per chat (members and admins reconciled);
//!    chats of the owners listed completely that WeCom no longer lists become dismissed. When the app may not
//!    call the 客户群 APIs (48002) the step is recorded as skipped, with what to do, and the run finishes.
//!
//! 6. The directory (通讯录): `department/list`, then `user/list_id` page by page (its cursor saved after every
//!    page), each page's members marked listed and `user/get` asked for those whose row is missing, never
//!    fetched, older than [`Options::staff_detail_max_age`] or `left`; after the last page, members no longer
//!    listed become `left` (the staff sweep, never after an empty listing and behind the same mass-removal
//!    guard). When WeCom refuses the secret the directory (48002, 60011, 48009) the step is recorded as
//!    skipped, with what to do, and the run finishes.
//!
//! A failing item (a staff chunk, an owner chunk, one chat, one tag list) is retried, then recorded in the
//! run's progress (`errors`) and skipped; errors that fail every call (the IP is not trusted, the secret or
//! token is refused, the network or the database is down) stop the run, which the next start resumes. A run
//! started [`ABANDON_AFTER_ATTEMPTS`] times or older than a day is abandoned and a fresh one starts.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::store::directory as store_dir;
use crate::store::enrichment;
use crate::store::resync::{self as runs, Abandon, Drift, Step};
use crate::store::sweeps;
use crate::sync::client::types::{CorpTagList, StaffMember};
use crate::sync::client::{ApiError, Credentials, MAX_OWNER_FILTER, WecomApi};

/// Userids per `batch/get_by_user` call (WeCom's maximum).
const CHUNK: usize = 100;
/// WeCom's "API not authorised for this app" errcode.
const API_NOT_AUTHORISED: i64 = 48002;
/// Starts after which an unfinished run is abandoned.
pub const ABANDON_AFTER_ATTEMPTS: i32 = 3;
/// Below this many, removals are never refused as a mass removal (a small corp's one missed deletion can be
/// more than the share).
pub const MASS_REMOVAL_FLOOR: u64 = 10;
/// The default [`Options::staff_detail_max_age`]: a week (changes in between come as `update_user` events).
pub const STAFF_DETAIL_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Errcodes with which WeCom refuses the configured secret the directory: 48002 (API not allowed for the
/// app), 60011 (no privilege: the member or department is outside the app's 可见范围), 48009 (the 通讯录
/// secret called from an IP that is not trusted, since 2022).
const DIRECTORY_REFUSED: [i64; 3] = [48002, 60011, 48009];
/// The default of `api.resync_max_removal_share`.
pub const DEFAULT_MAX_REMOVAL_SHARE: f64 = 0.2;

/// Why a resync stopped (it resumes where it stopped next time).
#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    /// An error that fails every call (see the message for what to do); the next start resumes the run.
    #[error("{0}")]
    Api(#[from] ApiError),
    /// PostgreSQL failed; the next start resumes the run.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Another process or replica holds the corp's resync lock.
    #[error(
        "another resync of corp {corp_id} is running (in this or another process); this one is skipped. \
         Wait for it to finish (see wecom_resync_runs) and run again if needed"
    )]
    Busy {
        /// The corp.
        corp_id: String,
    },
    /// The corp cancelled its authorisation (`cancel_auth`) while the resync ran: it stopped, and what it
    /// wrote is deleted with the corp's data.
    #[error(
        "corp {corp_id} cancelled its authorisation while it was resynced; the resync stopped and its rows \
         are deleted with the corp's data (企业已取消授权，对账已停止)"
    )]
    Cancelled {
        /// The corp.
        corp_id: String,
    },
}

/// Where a run is, for a terminal or the log.
#[derive(Debug, Clone)]
pub struct Report {
    /// The app.
    pub app: String,
    /// The step under way.
    pub step: Step,
    /// Staff members done in this step (follows: listed; chats: their chats listed).
    pub staff_done: usize,
    /// Staff members in the follow-user list.
    pub staff_total: usize,
    /// API calls made by the run.
    pub calls: u64,
    /// Items skipped after errors so far.
    pub skipped: u64,
    /// Estimated time left in this step.
    pub eta: Option<Duration>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {:?}: staff {}/{}, {} calls, {} skipped",
            self.app, self.step, self.staff_done, self.staff_total, self.calls, self.skipped
        )?;
        if let Some(eta) = self.eta {
            write!(f, ", ETA {}m{:02}s", eta.as_secs() / 60, eta.as_secs() % 60)?;
        }
        Ok(())
    }
}

/// Called with every progress report.
pub type OnProgress = Arc<dyn Fn(&Report) + Send + Sync>;

/// How a resync runs.
#[derive(Clone)]
pub struct Options {
    /// Minimum gap between API calls (a rate limit).
    pub pause: Duration,
    /// The follow sweep refuses to remove more than this share of the corp's active follows (0..=1).
    pub max_removal_share: f64,
    /// The operator's `--allow-mass-removal`: remove whatever the sweep finds.
    pub allow_mass_removal: bool,
    /// Staff per `batch/get_by_user` and per `groupchat/list` owner filter (at most 100).
    pub chunk: usize,
    /// Attempts of one item (a chunk, a chat, a tag list) before it is skipped.
    pub item_attempts: u32,
    /// Pause between two attempts of an item (the client already retried WeCom's busy answers).
    pub item_backoff: Duration,
    /// When an unfinished run is abandoned.
    pub abandon: Abandon,
    /// A listed member whose last `user/get` is older than this is fetched again by the directory step.
    pub staff_detail_max_age: Duration,
    /// Progress reports (besides the log).
    pub on_progress: Option<OnProgress>,
    /// The first wait of [`schedule`] before it retries a failed resync (doubled after every further
    /// failure; see [`retry_backoff`]).
    pub retry_base: Duration,
}

impl Options {
    /// The defaults, with `pause` between API calls.
    pub fn new(pause: Duration) -> Options {
        Options {
            pause,
            max_removal_share: DEFAULT_MAX_REMOVAL_SHARE,
            allow_mass_removal: false,
            chunk: CHUNK,
            item_attempts: 3,
            item_backoff: Duration::from_secs(1),
            abandon: Abandon {
                max_attempts: ABANDON_AFTER_ATTEMPTS,
                max_age: chrono::Duration::hours(24),
            },
            staff_detail_max_age: STAFF_DETAIL_MAX_AGE,
            on_progress: None,
            retry_base: RETRY_BASE,
        }
    }
}

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
                    ("chats", "created", d.chats_created),
                    ("chats", "updated", d.chats_updated),
                    ("chats", "removed", d.chats_dismissed),
                    ("tags", "created", d.tags_created),
                    ("tags", "updated", d.tags_updated),
                    ("tags", "removed", d.tags_deleted),
                    ("staff", "created", d.staff_created),
                    ("staff", "updated", d.staff_updated),
                    ("staff", "removed", d.staff_left),
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

/// Resyncs one app's corp with the default [`Options`]. `pause` is the minimum gap between API calls.
pub async fn resync(
    pool: &PgPool,
    api: &WecomApi,
    app: &str,
    creds: &Credentials,
    pause: Duration,
) -> Result<Drift, ResyncError> {
    resync_with(pool, api, app, creds, &Options::new(pause)).await
}

/// Resyncs one app's corp, holding the corp's resync lock ([`ResyncError::Busy`] when another holds it).
pub async fn resync_with(
    pool: &PgPool,
    api: &WecomApi,
    app: &str,
    creds: &Credentials,
    options: &Options,
) -> Result<Drift, ResyncError> {
    let Some(lock) = runs::try_lock(pool, &creds.corp_id).await? else {
        tracing::warn!(
            app,
            corp_id = %creds.corp_id,
            "another resync of this corp is running; skipping this one"
        );
        return Err(ResyncError::Busy {
            corp_id: creds.corp_id.clone(),
        });
    };
    let result = locked(pool, api, app, creds, options).await;
    lock.release().await;
    result
}

async fn locked(
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
fn fails_everything(e: &ApiError) -> bool {
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
fn transient(e: &ApiError) -> bool {
    match e {
        ApiError::Wecom(w) => w.retryable() || matches!(w.errcode, -1 | 45009 | 45033),
        ApiError::HttpStatus(_) | ApiError::Throttled { .. } => true,
        _ => false,
    }
}

/// One run's walk through the steps.
struct Walk<'a> {
    pool: &'a PgPool,
    api: &'a WecomApi,
    app: &'a str,
    creds: &'a Credentials,
    options: &'a Options,
    run: &'a mut runs::Run,
    started: Instant,
    /// Staff done when this attempt's current step started (for the ETA).
    done_at_start: usize,
}

impl Walk<'_> {
    /// Saves the run's progress after a page, and stops the run ([`ResyncError::Cancelled`]) when the corp
    /// cancelled its authorisation meanwhile: no further page is fetched or written for it.
    async fn save(&self) -> Result<(), ResyncError> {
        runs::save_progress(self.pool, self.run).await?;
        if crate::store::corps::is_cancelled(self.pool, &self.creds.corp_id).await? {
            return Err(ResyncError::Cancelled {
                corp_id: self.creds.corp_id.clone(),
            });
        }
        Ok(())
    }

    fn chunk_size(&self) -> usize {
        self.options.chunk.clamp(1, CHUNK.min(MAX_OWNER_FILTER))
    }

    /// Records a skipped item's error in the run and the log.
    fn skip(&mut self, what: &str, e: &ApiError) {
        tracing::warn!(app = self.app, run = self.run.id, item = what, error = %e, "resync item skipped after retries");
        self.run.progress.record_error(format!("{what}: {e}"));
        self.run.progress.drift.skipped += 1;
    }

    fn report(&self, staff_done: usize) {
        self.report_of(staff_done, self.run.progress.users_total);
    }

    fn report_of(&self, staff_done: usize, total: usize) {
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
    async fn attempt<T, F, Fut>(&mut self, mut call: F) -> Result<Result<T, ApiError>, ResyncError>
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
            tracing::warn!(app = self.app, run = self.run.id, "{e}");
            self.run.progress.record_error(e.to_owned());
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
        self.directory().await?;
        Ok(self.run.progress.drift.clone())
    }

    async fn follows(&mut self, users: &[String]) -> Result<(), ResyncError> {
        let corp = self.creds.corp_id.clone();
        self.done_at_start = self.run.progress.users_done.len();
        self.started = Instant::now();
        // A chunk interrupted by the last attempt: anyone in it who is no longer listed is dropped, and then
        // the chunk starts over (its cursor belongs to the old `userid_list`).
        let p = &mut self.run.progress;
        if p.chunk_users
            .iter()
            .any(|u| users.binary_search(u).is_err())
        {
            p.chunk_users.retain(|u| users.binary_search(u).is_ok());
            p.cursor.clear();
        }
        loop {
            if self.run.progress.chunk_users.is_empty() {
                let p = &self.run.progress;
                let next: Vec<String> = users
                    .iter()
                    .filter(|u| {
                        !p.users_done.contains(*u)
                            && !p.users_failed.contains(*u)
                            && !p.unlicensed.contains(*u)
                    })
                    .take(self.chunk_size())
                    .cloned()
                    .collect();
                if next.is_empty() {
                    break;
                }
                self.run.progress.chunk_users = next;
                self.run.progress.cursor.clear();
            }
            let chunk = self.run.progress.chunk_users.clone();
            let mut tries = 0;
            let outcome = loop {
                match self.chunk(&corp, &chunk).await {
                    Ok(()) => break Ok(()),
                    Err(ChunkError::Stop(e)) => return Err(e),
                    Err(ChunkError::Item(e)) => {
                        tries += 1;
                        if tries >= self.options.item_attempts.max(1) || !transient(&e) {
                            break Err(e);
                        }
                        tokio::time::sleep(self.options.item_backoff).await;
                    }
                }
            };
            let p = &mut self.run.progress;
            match outcome {
                Ok(()) => {
                    let unlicensed = p.unlicensed.clone();
                    p.users_done
                        .extend(chunk.iter().filter(|u| !unlicensed.contains(*u)).cloned());
                }
                Err(e) => {
                    p.users_failed.extend(chunk.iter().cloned());
                    let what = format!(
                        "batch/get_by_user for {} staff ({}…)",
                        chunk.len(),
                        chunk.first().map_or("", String::as_str)
                    );
                    self.skip(&what, &e);
                }
            }
            let p = &mut self.run.progress;
            p.chunk_users.clear();
            p.cursor.clear();
            self.save().await?;
            self.report(self.run.progress.users_done.len());
        }
        self.sweep_follows(users).await?;
        self.unassigned(users).await
    }

    /// The follows of members who left the corp: they are in no follow-user list, so no sweep covers them,
    /// and no callback says so; `get_unassigned_list` names them (waiting for 离职继承). They become `removed`.
    /// WeCom names them one by one, so the mass-removal guard (which is about not seeing) does not apply.
    async fn unassigned(&mut self, users: &[String]) -> Result<(), ResyncError> {
        let (api, creds) = (self.api, self.creds);
        let pause = self.options.pause;
        let listed = self
            .attempt(|| async move {
                let mut pairs = Vec::new();
                let mut pages = api.unassigned_list(creds).with_pause(pause);
                while let Some(page) = pages.next().await? {
                    pairs.extend(
                        page.info
                            .into_iter()
                            .filter_map(|e| Some((e.handover_userid?, e.external_userid?))),
                    );
                }
                Ok(pairs)
            })
            .await;
        let pairs = match listed {
            Ok(Ok(pairs)) => pairs,
            Ok(Err(e)) => {
                self.skip(
                    "get_unassigned_list; the follows of members who left were not removed",
                    &e,
                );
                return Ok(());
            }
            Err(ResyncError::Api(ApiError::Wecom(w))) if w.errcode == API_NOT_AUTHORISED => {
                self.skip(
                    "get_unassigned_list (离职继承 not allowed for this app); the follows of members who left \
                     were not removed",
                    &ApiError::Wecom(w),
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // Someone this run listed is still here, whatever an older listing says.
        let pairs: Vec<(String, String)> = pairs
            .into_iter()
            .filter(|(u, _)| users.binary_search(u).is_err())
            .collect();
        if pairs.is_empty() {
            return Ok(());
        }
        let removed =
            sweeps::remove_unassigned(self.pool, &self.creds.corp_id, self.run, &pairs).await?;
        self.run.progress.drift.follows_removed += removed;
        self.save().await?;
        Ok(())
    }

    /// One chunk of staff from the saved cursor to its last page, saving after every page.
    async fn chunk(&mut self, corp: &str, chunk: &[String]) -> Result<(), ChunkError> {
        let cursor = self.run.progress.cursor.clone();
        let mut pages = self
            .api
            .batch_get_by_user(self.creds, chunk, &cursor)
            .with_pause(self.options.pause);
        loop {
            self.run.progress.calls += 1;
            let page = match pages.next().await {
                Ok(Some(page)) => page,
                Ok(None) => return Ok(()),
                Err(e) if fails_everything(&e) => return Err(ChunkError::Stop(e.into())),
                Err(e) => return Err(ChunkError::Item(e)),
            };
            let pairs: Vec<(String, String)> = page
                .external_contact_list
                .iter()
                .filter_map(|e| {
                    let user = e.follow_info.as_ref()?.userid.clone()?;
                    let ext = e.external_contact.as_ref()?.external_userid.clone()?;
                    Some((user, ext))
                })
                .collect();
            let before = runs::follow_fingerprints(self.pool, corp, &pairs)
                .await
                .map_err(|e| ChunkError::Stop(e.into()))?;
            let mut seen = Drift::default();
            for entry in &page.external_contact_list {
                if let (Some(contact), Some(follow)) = (&entry.external_contact, &entry.follow_info)
                {
                    runs::upsert_entry(self.pool, corp, self.run, contact, follow, &mut seen)
                        .await
                        .map_err(|e| ChunkError::Stop(e.into()))?;
                }
            }
            let after = runs::follow_fingerprints(self.pool, corp, &pairs)
                .await
                .map_err(|e| ChunkError::Stop(e.into()))?;
            // Drift counts rows whose values changed: a follow that was there and now differs.
            let updated = after
                .iter()
                .filter(|(k, v)| before.get(*k).is_some_and(|b| b != *v))
                .count() as u64;
            let p = &mut self.run.progress;
            p.drift.contacts_created += seen.contacts_created;
            p.drift.follows_created += seen.follows_created;
            p.drift.follows_updated += updated;
            if let Some(fail) = &page.fail_info {
                p.unlicensed
                    .extend(fail.unlicensed_userid_list.iter().cloned());
            }
            p.cursor = page.next_cursor.clone();
            self.save().await.map_err(ChunkError::Stop)?;
            if page.next_cursor.is_empty() {
                return Ok(());
            }
        }
    }

    /// The follow sweep over the staff this run listed completely, behind the mass-removal guard.
    async fn sweep_follows(&mut self, users: &[String]) -> Result<(), ResyncError> {
        let p = &self.run.progress;
        let scope: Vec<String> = users
            .iter()
            .filter(|u| p.users_done.contains(*u) && !p.unlicensed.contains(*u))
            .cloned()
            .collect();
        if scope.is_empty() {
            tracing::info!(
                app = self.app,
                run = self.run.id,
                "no staff member was listed completely; no follow is swept"
            );
            return Ok(());
        }
        let corp = &self.creds.corp_id;
        let candidates = sweeps::sweep_follows(self.pool, corp, self.run, &scope, true).await?;
        let active = sweeps::active_follows(self.pool, corp).await?;
        let share = self.options.max_removal_share;
        let limit = (share * active as f64).floor() as u64;
        if candidates > MASS_REMOVAL_FLOOR && candidates > limit && !self.options.allow_mass_removal
        {
            let e = format!(
                "the follow sweep was refused: it would mark {candidates} of the corp's {active} active follows \
                 removed (more than {pct} %, api.resync_max_removal_share). WeCom not listing that many usually \
                 means a listing problem (a changed visible range or secret, unlicensed staff), not that \
                 customers left. Check the app's visible range and licences; if the removals are real, run \
                 `wecom-callback resync --allow-mass-removal`",
                pct = share * 100.0
            );
            tracing::warn!(app = self.app, run = self.run.id, "{e}");
            self.run.progress.record_error(e);
            self.run.progress.drift.follows_removal_refused = candidates;
            return Ok(());
        }
        let removed = sweeps::sweep_follows(self.pool, corp, self.run, &scope, false).await?;
        self.run.progress.drift.follows_removed += removed;
        Ok(())
    }

    /// The chat step. A 48002 (the app may not call the 客户群 APIs) fails every chat call, but retrying the
    /// run would only fail the same way: the step is recorded as skipped (nothing swept) and the run finishes.
    async fn chats(&mut self, users: &[String]) -> Result<(), ResyncError> {
        match self.chat_step(users).await {
            Err(ResyncError::Api(ApiError::Wecom(w))) if w.errcode == API_NOT_AUTHORISED => {
                let e = format!(
                    "the chat step was skipped and no chat was swept: groupchat/list or groupchat/get was \
                     refused with {w} A 代开发 or 第三方 app also needs its 客户群 (customer group chat) \
                     permission, granted by the corp's admin. Follows and tags were synced; the next resync reads \
                     the chats once the app may"
                );
                tracing::warn!(app = self.app, run = self.run.id, "{e}");
                self.run.progress.record_error(e);
                self.run.progress.drift.skipped += 1;
                self.save().await?;
                Ok(())
            }
            other => other,
        }
    }

    async fn chat_step(&mut self, users: &[String]) -> Result<(), ResyncError> {
        let corp = self.creds.corp_id.clone();
        let (api, creds) = (self.api, self.creds);
        self.done_at_start = self.run.progress.owners_done.len();
        self.started = Instant::now();
        loop {
            let p = &self.run.progress;
            let owners: Vec<String> = users
                .iter()
                .filter(|u| !p.owners_done.contains(*u) && !p.owners_failed.contains(*u))
                .take(self.chunk_size())
                .cloned()
                .collect();
            if owners.is_empty() {
                break;
            }
            let listed = self
                .attempt(|| {
                    let owners = owners.clone();
                    async move {
                        let mut ids = Vec::new();
                        let mut pages = api.group_chat_list(creds, &owners);
                        while let Some(page) = pages.next().await? {
                            ids.extend(page.group_chat_list.into_iter().filter_map(|c| c.chat_id));
                        }
                        Ok(ids)
                    }
                })
                .await?;
            let ids = match listed {
                Ok(ids) => ids,
                Err(e) => {
                    let what = format!(
                        "groupchat/list for {} owners ({}…)",
                        owners.len(),
                        owners.first().map_or("", String::as_str)
                    );
                    self.skip(&what, &e);
                    self.run.progress.owners_failed.extend(owners);
                    self.save().await?;
                    continue;
                }
            };
            for chat_id in &ids {
                let created = sweeps::mark_chat(self.pool, &corp, chat_id, self.run).await?;
                let before = runs::chat_fingerprint(self.pool, &corp, chat_id).await?;
                let got = self.attempt(|| api.group_chat(creds, chat_id)).await?;
                match got {
                    Ok(Some(g)) => {
                        enrichment::group_chat(self.pool, &corp, &g, chrono::Utc::now()).await?
                    }
                    Ok(None) => {}
                    Err(e) => {
                        if created {
                            self.run.progress.drift.chats_created += 1;
                        }
                        self.skip(&format!("groupchat/get {chat_id}"), &e);
                        continue;
                    }
                }
                let after = runs::chat_fingerprint(self.pool, &corp, chat_id).await?;
                let d = &mut self.run.progress.drift;
                if created {
                    // A chat no event told us of.
                    d.chats_created += 1;
                } else if before != after {
                    d.chats_updated += 1;
                }
            }
            self.run.progress.owners_done.extend(owners);
            self.save().await?;
            self.report(self.run.progress.owners_done.len());
        }
        let p = &self.run.progress;
        let listed: Vec<String> = users
            .iter()
            .filter(|u| p.owners_done.contains(*u))
            .cloned()
            .collect();
        // Chats whose owner we never learned: asked one by one (40050: WeCom has no such chat).
        let mut gone = Vec::new();
        for chat_id in sweeps::unowned_unseen_chats(self.pool, &corp, self.run).await? {
            match self.attempt(|| api.group_chat(creds, &chat_id)).await? {
                Ok(Some(g)) => {
                    enrichment::group_chat(self.pool, &corp, &g, chrono::Utc::now()).await?;
                    sweeps::mark_chat(self.pool, &corp, &chat_id, self.run).await?;
                }
                Ok(None) => {}
                Err(ApiError::Wecom(e)) if e.errcode == 40050 => gone.push(chat_id),
                Err(e) => self.skip(&format!("groupchat/get {chat_id} (owner unknown)"), &e),
            }
        }
        if !listed.is_empty() || !gone.is_empty() {
            let dismissed = sweeps::sweep_chats(self.pool, &corp, self.run, &listed, &gone).await?;
            self.run.progress.drift.chats_dismissed += dismissed;
        }
        Ok(())
    }

    async fn tags(&mut self) -> Result<(), ResyncError> {
        let corp = self.creds.corp_id.clone();
        let (api, creds) = (self.api, self.creds);
        let before = runs::tag_fingerprints(self.pool, &corp).await?;
        let mut complete = true;
        let mut ids: BTreeSet<String> = BTreeSet::new();
        for strategy in [false, true] {
            let got = self
                .attempt(|| async move {
                    if strategy {
                        api.strategy_tag_list(creds).await
                    } else {
                        api.corp_tag_list(creds).await
                    }
                })
                .await?;
            let list: CorpTagList = match got {
                Ok(list) => list,
                Err(e) => {
                    let what = if strategy {
                        "get_strategy_tag_list (rule-group tags)"
                    } else {
                        "get_corp_tag_list"
                    };
                    self.skip(&format!("{what}; no tag was swept"), &e);
                    complete = false;
                    continue;
                }
            };
            enrichment::corp_tags(self.pool, &corp, &list, chrono::Utc::now()).await?;
            for group in &list.tag_group {
                ids.extend(group.group_id.clone());
                ids.extend(group.tag.iter().filter_map(|t| t.id.clone()));
            }
        }
        let ids: Vec<String> = ids.into_iter().collect();
        sweeps::mark_tags(self.pool, &corp, &ids, self.run).await?;
        let after = runs::tag_fingerprints(self.pool, &corp).await?;
        let d = &mut self.run.progress.drift;
        for (id, fp) in &after {
            match before.get(id) {
                None => d.tags_created += 1,
                Some(b) if b != fp => d.tags_updated += 1,
                Some(_) => {}
            }
        }
        // A tag learned from an event is deleted only when neither list names it.
        if complete {
            let deleted = sweeps::sweep_tags(self.pool, &corp, self.run).await?;
            self.run.progress.drift.tags_deleted += deleted;
        }
        Ok(())
    }
}

impl Walk<'_> {
    /// The directory step. When WeCom refuses the secret the directory ([`DIRECTORY_REFUSED`]), retrying the
    /// run would only be refused the same way: the step is recorded as skipped (no member swept) and the run
    /// finishes, so it neither fails nor counts toward abandonment.
    async fn directory(&mut self) -> Result<(), ResyncError> {
        match self.directory_step().await {
            Err(ResyncError::Api(ApiError::Wecom(w))) if DIRECTORY_REFUSED.contains(&w.errcode) => {
                let why = match w.errcode {
                    48009 => {
                        "WeCom refuses the 通讯录 (directory) secret from this server's IP: add it to the \
                         corp's 企业可信IP, or configure the app's own secret"
                    }
                    60011 => {
                        "the app may not read the directory beyond its 可见范围 (visible range): widen the \
                         visible range in the admin console"
                    }
                    _ => {
                        "the app may not call the 通讯录 APIs: grant it the directory permission (a 代开发 or \
                         第三方 app needs 通讯录 access granted by the corp's admin)"
                    }
                };
                let e = format!(
                    "{} and no member was swept: department/list, user/list_id or user/get was refused with \
                     {w} {why}. The staff table keeps what the 通讯录 callbacks and user/get jobs wrote; follows, \
                     tags and chats were synced",
                    runs::DIRECTORY_SKIPPED
                );
                tracing::warn!(app = self.app, run = self.run.id, "{e}");
                self.run.progress.record_error(e);
                self.run.progress.drift.skipped += 1;
                self.save().await?;
                Ok(())
            }
            other => other,
        }
    }

    /// [`Walk::attempt`], with a directory refusal turned into the error that skips the step.
    async fn directory_call<T, F, Fut>(
        &mut self,
        call: F,
    ) -> Result<Result<T, ApiError>, ResyncError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        match self.attempt(call).await? {
            Err(ApiError::Wecom(w)) if DIRECTORY_REFUSED.contains(&w.errcode) => {
                Err(ApiError::Wecom(w).into())
            }
            other => Ok(other),
        }
    }

    async fn directory_step(&mut self) -> Result<(), ResyncError> {
        let corp = self.creds.corp_id.clone();
        let (api, creds) = (self.api, self.creds);
        // Departments: one call, read again on a resume (it is cheap and a resume wants today's).
        match self.directory_call(|| api.department_list(creds)).await? {
            Ok(list) => {
                let before = store_dir::department_fingerprints(self.pool, &corp).await?;
                store_dir::observe_departments(self.pool, &corp, &list, chrono::Utc::now()).await?;
                let after = store_dir::department_fingerprints(self.pool, &corp).await?;
                let d = &mut self.run.progress.drift;
                for (id, fp) in &after {
                    match before.get(id) {
                        None => d.departments_created += 1,
                        Some(b) if b != fp => d.departments_updated += 1,
                        Some(_) => {}
                    }
                }
            }
            Err(e) => self.skip("department/list; departments were not refreshed", &e),
        }
        self.save().await?;
        let stale_before = chrono::Utc::now()
            - chrono::Duration::from_std(self.options.staff_detail_max_age)
                .unwrap_or(chrono::Duration::MAX);
        self.done_at_start = 0;
        self.started = Instant::now();
        while !self.run.progress.directory_complete {
            let cursor = self.run.progress.directory_cursor.clone();
            let page = match self
                .directory_call(|| api.user_list_id(creds, &cursor))
                .await?
            {
                Ok(page) => page,
                Err(e) => {
                    // The listing is incomplete: nobody is swept (the next run lists again).
                    self.skip(
                        "user/list_id; the rest of the directory was not listed and no member was swept",
                        &e,
                    );
                    self.save().await?;
                    return Ok(());
                }
            };
            let mut userids: Vec<String> = page
                .dept_user
                .into_iter()
                .map(|u| u.userid)
                .filter(|u| !u.is_empty())
                .collect();
            userids.sort();
            userids.dedup();
            let before = store_dir::staff_fingerprints(self.pool, &corp).await?;
            let created = store_dir::mark_listed(
                self.pool,
                &corp,
                self.run.id,
                self.run.started_at,
                &userids,
            )
            .await?;
            // `user/get` only where the row is missing, never fetched, stale, or says `left`.
            for userid in
                store_dir::needing_detail(self.pool, &corp, &userids, stale_before).await?
            {
                match self.directory_call(|| api.user_get(creds, &userid)).await? {
                    Ok(member) => {
                        // Some answers omit the userid asked for; the member asked for is the subject.
                        let member = StaffMember { userid, ..member };
                        store_dir::observe_member(self.pool, &corp, &member, chrono::Utc::now())
                            .await?;
                    }
                    // Listed a moment ago, gone now: the next run's listing decides.
                    Err(ApiError::Wecom(w)) if w.errcode == 60111 => {}
                    Err(e) => self.skip(&format!("user/get {userid}"), &e),
                }
            }
            let after = store_dir::staff_fingerprints(self.pool, &corp).await?;
            let updated = userids
                .iter()
                .filter(|u| {
                    before
                        .get(*u)
                        .is_some_and(|b| after.get(*u).is_some_and(|a| a != b))
                })
                .count() as u64;
            let p = &mut self.run.progress;
            p.drift.staff_created += created;
            p.drift.staff_updated += updated;
            p.directory_listed += userids.len() as u64;
            p.directory_complete = page.next_cursor.is_empty();
            p.directory_cursor = page.next_cursor;
            self.save().await?;
            let listed = usize::try_from(self.run.progress.directory_listed).unwrap_or(usize::MAX);
            self.report_of(listed, listed);
        }
        self.sweep_staff().await
    }

    /// The staff sweep over a complete listing, behind the same mass-removal guard as the follow sweep.
    async fn sweep_staff(&mut self) -> Result<(), ResyncError> {
        let corp = &self.creds.corp_id;
        let present = sweeps::present_staff(self.pool, corp).await?;
        if self.run.progress.directory_listed == 0 {
            // Never swept after an empty listing; worth an error only when there was someone to sweep.
            if present > 0 {
                let e = format!(
                    "user/list_id listed nobody although {present} members are known: the secret sees no \
                     member (check the app's 可见范围); no member was swept"
                );
                tracing::warn!(app = self.app, run = self.run.id, "{e}");
                self.run.progress.record_error(e);
                self.save().await?;
            }
            return Ok(());
        }
        let candidates = sweeps::sweep_staff(self.pool, corp, self.run, true).await?;
        let share = self.options.max_removal_share;
        let limit = (share * present as f64).floor() as u64;
        if candidates > MASS_REMOVAL_FLOOR && candidates > limit && !self.options.allow_mass_removal
        {
            let e = format!(
                "the staff sweep was refused: it would mark {candidates} of the corp's {present} members \
                 left (more than {pct} %, api.resync_max_removal_share). user/list_id not listing that many \
                 usually means the secret sees less of the directory (a narrowed 可见范围, another secret), \
                 not that they left. Check the app's visible range; if they really left, run \
                 `wecom-callback resync --allow-mass-removal`",
                pct = share * 100.0
            );
            tracing::warn!(app = self.app, run = self.run.id, "{e}");
            self.run.progress.record_error(e);
            self.run.progress.drift.staff_removal_refused = candidates;
            self.save().await?;
            return Ok(());
        }
        let left = sweeps::sweep_staff(self.pool, corp, self.run, false).await?;
        self.run.progress.drift.staff_left += left;
        self.save().await?;
        Ok(())
    }
}

/// How one staff chunk failed.
enum ChunkError {
    /// Stop the run (it is resumed at the saved cursor).
    Stop(ResyncError),
    /// Retry the chunk from the saved cursor, then skip it.
    Item(ApiError),
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
