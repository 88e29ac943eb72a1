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
//!    chunk), never after an empty follow-user list, never more than `max_removal_share` of the corp's
//!    active follows unless the operator allows it, and each confirmed with `externalcontact/get` (a list's
//!    cursor is opaque: were it an offset, a change between two pages would make the walk skip an entry).
//! 5. `groupchat/list` with `owner_filter` per chunk of ≤ 100 owners (without it WeCom answers 81017 when
//!    the app sees more than 1000 members), then `groupchat/get` per chat (members and admins reconciled);
//!    chats of the owners listed completely (or of no known owner) that WeCom no longer lists are asked for
//!    with `groupchat/get`, and dismissed on 40050. When the app may not
//!    call the 客户群 APIs (48002) the step is recorded as skipped, with what to do, and the run finishes.
//!
//! 6. The directory (通讯录): `department/list`, then `user/list_id` page by page (its cursor saved after every
//!    page), each page's members marked listed and `user/get` asked for those whose row is missing, never
//!    fetched, older than [`Options::staff_detail_max_age`] or `left`; after the last page, members no longer
//!    listed become `left` (the staff sweep, never after an empty listing, behind the same mass-removal
//!    guard, each confirmed with `user/get`). When WeCom refuses the secret the directory (48002, 60011, 48009) the step is recorded as
//!    skipped, with what to do, and the run finishes. Last, when both the listing and `get_unassigned_list`
//!    were read to the end, the follows of members now `left` that WeCom lists nowhere (not under a
//!    follow user, not as unassigned: reassigned away, or under a userid renamed without a callback) become
//!    `removed`.
//!
//! A failing item (a staff chunk, an owner chunk, one chat, one tag list) is retried, then recorded in the
//! run's progress (`errors`) and skipped; errors that fail every call (the IP is not trusted, the secret or
//! token is refused, the network or the database is down) stop the run, which the next start resumes. A run
//! started [`ABANDON_AFTER_ATTEMPTS`] times or older than a day is abandoned and a fresh one starts.
//!
//! By concern: `schedule` (when runs start, and the retry after a failure), `walk` (one run: its bookkeeping,
//! the order of the steps, and the retry and progress rules every step shares), then one module per step:
//! `tags`, `follows`, `chats` and `directory`.

mod chats;
mod directory;
mod follows;
mod schedule;
mod tags;
mod walk;

pub use schedule::{RETRY_BASE, retry_backoff, schedule};

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use crate::store::resync::{self as runs, Abandon, Drift, Step};
use crate::sync::client::{ApiError, Credentials, WecomApi};
use crate::sync::resync::walk::locked;

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
