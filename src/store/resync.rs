//! Full resync bookkeeping: runs, progress for resuming, and mark-and-sweep of what WeCom no longer lists.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;

use crate::store::observations::{self, KnownTagRecord, Observation};
use crate::store::projections;
use crate::sync::client::types::{ExternalContact, FollowInfo};
use crate::sync::plan;

/// A resync run in progress.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: i64,
    pub started_at: DateTime<Utc>,
    pub progress: Progress,
    /// True when this run continues an interrupted one.
    pub resumed: bool,
    /// How many times this run was started (the first start and every resume).
    pub attempts: i32,
}

/// Which part of the run is under way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// `get_corp_tag_list` and `get_strategy_tag_list`: first, so the follows of the same run are stored
    /// with their tags' names.
    #[default]
    Tags,
    /// `batch/get_by_user` per chunk of follow users.
    Follows,
    /// `groupchat/list` per chunk of owners, then `groupchat/get` per chat.
    Chats,
    /// The staff directory: `department/list`, `user/list_id` (paged), `user/get` where the row is missing
    /// or stale, then the staff sweep.
    Directory,
}

/// Where a run is, saved after every page and every staff chunk so an interrupted run resumes there. Staff
/// members are remembered by userid (not by an index into the follow-user list, which may change between
/// attempts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    /// The step under way.
    pub step: Step,
    /// Follow users in the last follow-user list.
    pub users_total: usize,
    /// Follow users whose follows were listed completely (the sweep covers only these).
    pub users_done: BTreeSet<String>,
    /// Follow users whose chunk failed after retries (skipped; their follows are not swept).
    pub users_failed: BTreeSet<String>,
    /// Follow users WeCom did not answer for (`fail_info.unlicensed_userid_list`): never swept.
    pub unlicensed: BTreeSet<String>,
    /// The chunk of follow users under way (its `batch/get_by_user` cursor is `cursor`).
    pub chunk_users: Vec<String>,
    /// The `batch/get_by_user` cursor within `chunk_users`.
    pub cursor: String,
    /// Owners whose chats were listed completely (the chat sweep covers only their chats).
    pub owners_done: BTreeSet<String>,
    /// Owners whose `groupchat/list` chunk failed after retries.
    pub owners_failed: BTreeSet<String>,
    /// The `user/list_id` cursor of the next page (the directory step; empty: the first page).
    pub directory_cursor: String,
    /// Members `user/list_id` listed so far (one page after another).
    pub directory_listed: u64,
    /// Whether `user/list_id` was read to its last page (only then are members swept).
    pub directory_complete: bool,
    /// Whether `get_unassigned_list` was read to its last page in this run (only then do the follows of
    /// members gone from the directory end, see `sweeps::follows_listed_nowhere`).
    pub unassigned_listed: bool,
    /// API calls made by this run so far.
    pub calls: u64,
    /// The errors of skipped items, newest last (at most [`MAX_ERRORS`] kept).
    pub errors: Vec<String>,
    /// Every skipped item's error, counted.
    pub error_count: u64,
    /// What changed so far (kept across a resume for the drift report).
    pub drift: Drift,
}

/// Errors kept in a run's progress (the count goes on).
pub const MAX_ERRORS: usize = 50;

impl Progress {
    /// Records a skipped item's error.
    pub fn record_error(&mut self, error: String) {
        self.error_count += 1;
        if self.errors.len() >= MAX_ERRORS {
            self.errors.remove(0);
        }
        self.errors.push(error);
    }
}

/// What the resync changed, per table: rows whose values changed, not rows seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Drift {
    pub contacts_created: u64,
    pub follows_created: u64,
    pub follows_updated: u64,
    pub follows_removed: u64,
    /// Follows the sweep would have removed but did not: more than the allowed share (see the run's errors).
    pub follows_removal_refused: u64,
    /// Follows `batch/get_by_user` left out that `externalcontact/get` still listed: kept, not swept (the
    /// listing skipped them while the corp changed).
    pub follows_unlisted_kept: u64,
    pub chats_created: u64,
    pub chats_updated: u64,
    pub chats_dismissed: u64,
    /// Active chats `groupchat/list` did not list (no known owner, or its paging skipped them while the
    /// corp changed) that `groupchat/get` still found: kept, not dismissed.
    pub chats_unlisted_kept: u64,
    pub tags_created: u64,
    pub tags_updated: u64,
    pub tags_deleted: u64,
    /// Members the directory did not know (`user/list_id`).
    pub staff_created: u64,
    /// Members whose row `user/get` changed.
    pub staff_updated: u64,
    /// Members gone from `user/list_id`, marked `left` by the staff sweep.
    pub staff_left: u64,
    /// Members the staff sweep would have marked `left` but did not: more than the allowed share.
    pub staff_removal_refused: u64,
    /// Members `user/list_id` did not list that `user/get` still had: kept, not marked `left`.
    pub staff_unlisted_kept: u64,
    pub departments_created: u64,
    pub departments_updated: u64,
    /// Items skipped after errors (staff chunks, owner chunks, chats, tag lists, directory pages, members).
    pub skipped: u64,
}

/// The version API observations at the start of `run` carry (see store::enrichment).
pub fn run_version(run: &Run) -> String {
    version_at(run.started_at)
}

/// When an unfinished run is abandoned instead of resumed.
#[derive(Debug, Clone, Copy)]
pub struct Abandon {
    /// Starts after which an unfinished run is given up (e.g. 3).
    pub max_attempts: i32,
    /// Age after which an unfinished run is given up (e.g. a day): what it saw is stale.
    pub max_age: chrono::Duration,
}

/// Resumes the app's unfinished run, or starts a new one. An unfinished run that was started
/// `abandon.max_attempts` times already or is older than `abandon.max_age` is marked `abandoned` (its
/// progress is kept for the record) and a fresh one starts.
pub async fn start_or_resume(
    pool: &PgPool,
    app: &str,
    corp_id: &str,
    abandon: Abandon,
) -> Result<Run, sqlx::Error> {
    let unfinished: Option<(i64, DateTime<Utc>, Value, i32)> = sqlx::query_as(
        "SELECT id, started_at, progress, attempts FROM wecom_resync_runs \
         WHERE app = $1 AND corp_id = $2 AND status IN ('running', 'failed') ORDER BY id DESC LIMIT 1",
    )
    .bind(app)
    .bind(corp_id)
    .fetch_optional(pool)
    .await?;
    if let Some((id, started_at, progress, attempts)) = unfinished {
        let stale = Utc::now() - started_at > abandon.max_age;
        if attempts >= abandon.max_attempts || stale {
            let why = if stale {
                format!("abandoned: older than {} h", abandon.max_age.num_hours())
            } else {
                format!("abandoned after {attempts} attempts")
            };
            tracing::warn!(app, run = id, attempts, %started_at, "{why}; starting a fresh resync");
            sqlx::query(
                "UPDATE wecom_resync_runs SET status = 'abandoned', finished_at = now(), \
                     last_error = COALESCE(last_error || '; ', '') || $2 WHERE id = $1",
            )
            .bind(id)
            .bind(&why)
            .execute(pool)
            .await?;
        } else {
            sqlx::query(
                "UPDATE wecom_resync_runs SET status = 'running', last_error = NULL, attempts = attempts + 1 \
                 WHERE id = $1",
            )
            .bind(id)
            .execute(pool)
            .await?;
            return Ok(Run {
                id,
                started_at,
                // An older run's progress in another shape: start its steps over (the sweep scope is
                // rebuilt with it, so nothing is swept on a guess).
                progress: serde_json::from_value(progress).unwrap_or_default(),
                resumed: true,
                attempts: attempts + 1,
            });
        }
    }
    let (id, started_at): (i64, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO wecom_resync_runs (app, corp_id) VALUES ($1, $2) RETURNING id, started_at",
    )
    .bind(app)
    .bind(corp_id)
    .fetch_one(pool)
    .await?;
    Ok(Run {
        id,
        started_at,
        progress: Progress::default(),
        resumed: false,
        attempts: 1,
    })
}

/// The per-corp resync lock: a PostgreSQL session advisory lock held on one pooled connection for the whole
/// run, so one run at a time across processes and replicas; a crashed holder's lock ends with its session.
pub struct CorpLock {
    /// `None` once released.
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
    corp_id: String,
}

impl Drop for CorpLock {
    /// Dropped without [`CorpLock::release`] (a cancelled run): the connection is detached from the pool and
    /// closed, which ends the session and its lock, instead of going back to the pool still holding it.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

/// The advisory lock key of a corp's resync (`hashtext` of a prefixed corp id).
const LOCK_SQL: &str = "SELECT pg_try_advisory_lock(hashtext('wecom_resync:' || $1)::bigint)";
const UNLOCK_SQL: &str = "SELECT pg_advisory_unlock(hashtext('wecom_resync:' || $1)::bigint)";

/// Takes the corp's resync lock; `None` when another session holds it.
pub async fn try_lock(pool: &PgPool, corp_id: &str) -> Result<Option<CorpLock>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar(LOCK_SQL)
        .bind(corp_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(locked.then(|| CorpLock {
        conn: Some(conn),
        corp_id: corp_id.to_owned(),
    }))
}

impl CorpLock {
    /// Releases the lock. If that fails the connection is closed instead (which releases it too), so a
    /// pooled connection never goes back holding it.
    pub async fn release(mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let unlocked = sqlx::query_scalar::<_, bool>(UNLOCK_SQL)
            .bind(&self.corp_id)
            .fetch_one(&mut *conn)
            .await;
        if !matches!(unlocked, Ok(true)) {
            use sqlx::Connection;
            let _ = conn.detach().close().await;
        }
    }
}

/// Saves where the run is.
pub async fn save_progress(pool: &PgPool, run: &Run) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE wecom_resync_runs SET progress = $2 WHERE id = $1")
        .bind(run.id)
        .bind(serde_json::to_value(&run.progress).unwrap_or_default())
        .execute(pool)
        .await?;
    Ok(())
}

/// Marks the run failed (the next run resumes it, unless it is abandoned then).
pub async fn fail(pool: &PgPool, run: &Run, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE wecom_resync_runs SET status = 'failed', last_error = $2, progress = $3 WHERE id = $1",
    )
    .bind(run.id)
    .bind(error)
    .bind(serde_json::to_value(&run.progress).unwrap_or_default())
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks the run done with its drift report (and its progress, which holds the skipped items' errors).
pub async fn finish(pool: &PgPool, run: &Run, drift: &Drift) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE wecom_resync_runs SET status = 'done', finished_at = now(), drift = $2, progress = $3 \
         WHERE id = $1",
    )
    .bind(run.id)
    .bind(serde_json::to_value(drift).unwrap_or_default())
    .bind(serde_json::to_value(&run.progress).unwrap_or_default())
    .execute(pool)
    .await?;
    // The run's observations supersede older ones: keep the observation log bounded. A failure here costs
    // only space, so it does not fail the finished run.
    match observations::compact(pool).await {
        Ok(n) => tracing::debug!(deleted = n, "superseded API observations compacted"),
        Err(e) => {
            tracing::warn!(error = %e, "compacting the API observation log failed; retried after the next run")
        }
    }
    Ok(())
}

/// One `batch/get_by_user` entry: a contact and one follow, as WeCom listed them at `fetched_at` (when the
/// page's request was sent).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub contact: &'a ExternalContact,
    pub follow: &'a FollowInfo,
    pub fetched_at: DateTime<Utc>,
}

/// Writes one `batch/get_by_user` entry, marking the follow seen by this run. The rules are the planner's
/// ([`plan::observe_follow_entry`]); the tag ids are named from `external_corp_tags`.
pub async fn upsert_entry(
    pool: &PgPool,
    corp_id: &str,
    run: &Run,
    entry: Entry<'_>,
    drift: &mut Drift,
) -> Result<(), sqlx::Error> {
    let Entry {
        contact,
        follow,
        fetched_at,
    } = entry;
    let known = tag_names(pool, corp_id, follow.tag_id.as_ref()).await?;
    let plan = plan::observe_follow_entry(corp_id, contact, follow, fetched_at, run.id, &known);
    if plan.contact_details.is_empty() {
        // No customer id: nothing is written.
        return Ok(());
    }
    let mut tx = projections::observation_tx(pool).await?;
    let observed = projections::observe_in(&mut tx, plan, true).await?;
    let obs = Observation::FollowEntry {
        contact: Box::new(contact.clone()),
        follow: Box::new(follow.clone()),
        fetched_at,
        run_id: run.id,
        known: KnownTagRecord::from_names(&known),
    };
    let covers = observations::follow_covers([follow]);
    observations::record(&mut tx, corp_id, &obs, observed.pinned(), &covers).await?;
    tx.commit().await?;
    drift.contacts_created += observed.contacts_created;
    drift.follows_created += observed.follows_created;
    drift.follows_updated += observed.follows_updated;
    Ok(())
}

/// What `external_corp_tags` knows of the tag ids in `tag_id` (names, group names, rule group).
async fn tag_names(
    pool: &PgPool,
    corp_id: &str,
    tag_id: Option<&Value>,
) -> Result<plan::TagNames, sqlx::Error> {
    let ids: Vec<&str> = tag_id
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if ids.is_empty() {
        return Ok(plan::TagNames::new());
    }
    let rows: Vec<(String, Option<String>, Option<String>, bool)> = sqlx::query_as(
        "SELECT t.id, t.name, g.name, t.strategy_id IS NOT NULL OR g.strategy_id IS NOT NULL \
         FROM external_corp_tags t LEFT JOIN external_corp_tags g ON g.corp_id = t.corp_id AND g.id = t.group_id \
         WHERE t.corp_id = $1 AND t.id = ANY($2)",
    )
    .bind(corp_id)
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, tag_name, group_name, rule_group)| {
            (
                id,
                plan::KnownTag {
                    tag_name,
                    group_name,
                    rule_group,
                },
            )
        })
        .collect())
}

/// The version of the writes of the run started at `started_at` (see [`run_version`]).
pub(crate) fn version_at(started_at: DateTime<Utc>) -> String {
    format!("{:012}:0:api", started_at.timestamp().max(0))
}

/// A fingerprint of what a backend reads of each listed follow and its contact (not bookkeeping such as
/// `detail_synced_at` or `resync_run`), to count the follows a write really changed.
pub async fn follow_fingerprints(
    pool: &PgPool,
    corp_id: &str,
    pairs: &[(String, String)],
) -> Result<HashMap<(String, String), String>, sqlx::Error> {
    let (users, exts): (Vec<&str>, Vec<&str>) =
        pairs.iter().map(|(u, e)| (u.as_str(), e.as_str())).unzip();
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT f.userid, f.external_userid, md5(row(f.status, f.state, f.added_at, f.remark, f.description, \
                 f.remark_mobiles, f.add_way, f.oper_userid, f.tags, c.name, c.avatar, c.type, c.gender, c.unionid, \
                 c.position, c.corp_name, c.corp_full_name, c.external_profile)::text) \
         FROM UNNEST($2::text[], $3::text[]) AS k(userid, external_userid) \
         JOIN external_contact_follows f ON f.corp_id = $1 AND f.userid = k.userid AND f.external_userid = k.external_userid \
         LEFT JOIN external_contacts c ON c.corp_id = f.corp_id AND c.external_userid = f.external_userid",
    )
    .bind(corp_id)
    .bind(&users)
    .bind(&exts)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(u, e, h)| ((u, e), h)).collect())
}

/// A fingerprint of what a backend reads of a chat, its admins and its members; `None` when there is no row.
pub async fn chat_fingerprint(
    pool: &PgPool,
    corp_id: &str,
    chat_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT md5(row(g.status, g.name, g.owner, g.notice, g.created_at, g.admin_list, \
                 (SELECT string_agg(row(m.member_id, m.status, m.member_type, m.join_time, m.api_join_scene, \
                      m.invitor, m.group_nickname, m.name, m.unionid, m.state)::text, ',' ORDER BY m.member_id) \
                  FROM external_group_chat_members m WHERE m.corp_id = g.corp_id AND m.chat_id = g.chat_id))::text) \
         FROM external_group_chats g WHERE g.corp_id = $1 AND g.chat_id = $2",
    )
    .bind(corp_id)
    .bind(chat_id)
    .fetch_optional(pool)
    .await
}

/// A fingerprint per tag and tag group of the corp, of what a backend reads.
pub async fn tag_fingerprints(
    pool: &PgPool,
    corp_id: &str,
) -> Result<HashMap<String, String>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, md5(row(type, strategy_id, deleted, name, group_id, group_name, sort_order, group_order)::text) \
         FROM external_corp_tags WHERE corp_id = $1",
    )
    .bind(corp_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// How long ago the corp's newest completed run finished, if one did: replicas' schedules use it so that a
/// corp is resynced once per interval across the cluster, not once per replica (or per restart).
pub async fn last_done_age(pool: &PgPool, corp_id: &str) -> Result<Option<f64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM now() - max(finished_at))::float8 FROM wecom_resync_runs \
         WHERE corp_id = $1 AND status = 'done'",
    )
    .bind(corp_id)
    .fetch_one(pool)
    .await
}

/// The reason the app's newest finished run skipped its directory step (WeCom refused the secret the
/// directory), if it did: for `doctor`.
pub async fn last_directory_skip(pool: &PgPool, app: &str) -> Result<Option<String>, sqlx::Error> {
    let errors: Option<Value> = sqlx::query_scalar(
        "SELECT progress->'errors' FROM wecom_resync_runs WHERE app = $1 AND status = 'done' \
         ORDER BY id DESC LIMIT 1",
    )
    .bind(app)
    .fetch_optional(pool)
    .await?;
    Ok(errors
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|e| e.starts_with(DIRECTORY_SKIPPED))
        .map(str::to_owned))
}

/// How the error of a skipped directory step starts (see `sync::resync`).
pub const DIRECTORY_SKIPPED: &str = "the directory step was skipped";
