//! Full resync bookkeeping: runs, progress for resuming, and mark-and-sweep of what WeCom no longer lists.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;

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
}

/// Where a run is, saved after every page so an interrupted run resumes there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Index of the next chunk of (at most 100) follow users.
    pub chunk: usize,
    /// The batch/get_by_user cursor within that chunk.
    pub cursor: String,
    /// Follows written so far (kept across a resume for the drift report).
    pub drift: Drift,
}

/// What the resync changed, per table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub contacts_created: u64,
    pub follows_created: u64,
    pub follows_updated: u64,
    pub follows_removed: u64,
    pub chats_created: u64,
    pub chats_updated: u64,
    pub chats_dismissed: u64,
    pub tags_created: u64,
    pub tags_updated: u64,
    pub tags_deleted: u64,
}

/// The version API observations at the start of `run` carry (see store::enrichment).
pub fn run_version(run: &Run) -> String {
    format!("{:012}:0:api", run.started_at.timestamp().max(0))
}

/// Resumes the app's unfinished run, or starts a new one.
pub async fn start_or_resume(pool: &PgPool, app: &str, corp_id: &str) -> Result<Run, sqlx::Error> {
    let unfinished: Option<(i64, DateTime<Utc>, Value)> = sqlx::query_as(
        "SELECT id, started_at, progress FROM wecom_resync_runs \
         WHERE app = $1 AND corp_id = $2 AND status IN ('running', 'failed') ORDER BY id DESC LIMIT 1",
    )
    .bind(app)
    .bind(corp_id)
    .fetch_optional(pool)
    .await?;
    if let Some((id, started_at, progress)) = unfinished {
        sqlx::query(
            "UPDATE wecom_resync_runs SET status = 'running', last_error = NULL WHERE id = $1",
        )
        .bind(id)
        .execute(pool)
        .await?;
        return Ok(Run {
            id,
            started_at,
            progress: serde_json::from_value(progress).unwrap_or_default(),
            resumed: true,
        });
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
    })
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

/// Marks the run failed (the next run resumes it).
pub async fn fail(pool: &PgPool, run: &Run, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE wecom_resync_runs SET status = 'failed', last_error = $2 WHERE id = $1")
        .bind(run.id)
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

/// Marks the run done with its drift report.
pub async fn finish(pool: &PgPool, run: &Run, drift: &Drift) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE wecom_resync_runs SET status = 'done', finished_at = now(), drift = $2 WHERE id = $1",
    )
    .bind(run.id)
    .bind(serde_json::to_value(drift).unwrap_or_default())
    .execute(pool)
    .await?;
    Ok(())
}

/// Writes one `batch/get_by_user` entry (a contact and one follow), marking the follow seen by this run. The
/// rules are the planner's ([`plan::observe_follow_entry`]); the tag ids are named from `external_corp_tags`.
pub async fn upsert_entry(
    pool: &PgPool,
    corp_id: &str,
    run: &Run,
    contact: &ExternalContact,
    follow: &FollowInfo,
    drift: &mut Drift,
) -> Result<(), sqlx::Error> {
    let known = tag_names(pool, corp_id, follow.tag_id.as_ref()).await?;
    let plan = plan::observe_follow_entry(corp_id, contact, follow, Utc::now(), run.id, &known);
    let observed = crate::store::projections::apply_observation(pool, plan).await?;
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

/// Tombstones the follows WeCom no longer lists (status `removed`, source `resync`), unless an event newer
/// than the run's start said otherwise.
pub async fn sweep_follows(pool: &PgPool, corp_id: &str, run: &Run) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE external_contact_follows SET status = 'removed', delete_source = 'resync', deleted_at = $3, \
             status_version = $4, last_change_type = 'resync_removed', last_event_at = $3, last_version = $4 \
         WHERE corp_id = $1 AND status IN ('active', 'pending') AND resync_run IS DISTINCT FROM $2 \
           AND status_version < $4",
    )
    .bind(corp_id)
    .bind(run.id)
    .bind(run.started_at)
    .bind(run_version(run))
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// Marks a chat seen by this run; returns whether it was new.
pub async fn mark_chat(
    pool: &PgPool,
    corp_id: &str,
    chat_id: &str,
    run: &Run,
) -> Result<bool, sqlx::Error> {
    let version = run_version(run);
    sqlx::query_scalar(
        "INSERT INTO external_group_chats AS g (corp_id, chat_id, status, status_version, last_event_at, last_version, resync_run) \
         VALUES ($1, $2, 'active', $3, $4, $3, $5) \
         ON CONFLICT (corp_id, chat_id) DO UPDATE SET resync_run = EXCLUDED.resync_run, \
           status = CASE WHEN EXCLUDED.status_version > g.status_version THEN 'active' ELSE g.status END, \
           status_version = GREATEST(g.status_version, EXCLUDED.status_version) \
         RETURNING (xmax = 0)",
    )
    .bind(corp_id)
    .bind(chat_id)
    .bind(&version)
    .bind(run.started_at)
    .bind(run.id)
    .fetch_one(pool)
    .await
}

/// Chats WeCom no longer lists become dismissed.
pub async fn sweep_chats(pool: &PgPool, corp_id: &str, run: &Run) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE external_group_chats SET status = 'dismissed', dismissed_at = $3, status_version = $4 \
         WHERE corp_id = $1 AND status = 'active' AND resync_run IS DISTINCT FROM $2 AND status_version < $4",
    )
    .bind(corp_id)
    .bind(run.id)
    .bind(run.started_at)
    .bind(run_version(run))
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// Marks the tags listed in `ids` seen by this run; returns how many were new.
pub async fn mark_tags(
    pool: &PgPool,
    corp_id: &str,
    ids: &[String],
    run: &Run,
) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE external_corp_tags SET resync_run = $3 WHERE corp_id = $1 AND id = ANY($2)",
    )
    .bind(corp_id)
    .bind(ids)
    .bind(run.id)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// Tags WeCom no longer lists become deleted.
pub async fn sweep_tags(pool: &PgPool, corp_id: &str, run: &Run) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE external_corp_tags SET deleted = true, status_version = $3 \
         WHERE corp_id = $1 AND NOT deleted AND resync_run IS DISTINCT FROM $2 AND status_version < $3",
    )
    .bind(corp_id)
    .bind(run.id)
    .bind(run_version(run))
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// Chat and tag counts before a step, to tell created from updated.
pub async fn count(pool: &PgPool, table: &str, corp_id: &str) -> Result<i64, sqlx::Error> {
    // `table` is one of two constants chosen by the caller, never input.
    let sql = match table {
        "chats" => "SELECT count(*) FROM external_group_chats WHERE corp_id = $1",
        _ => "SELECT count(*) FROM external_corp_tags WHERE corp_id = $1",
    };
    sqlx::query_scalar(sql).bind(corp_id).fetch_one(pool).await
}
