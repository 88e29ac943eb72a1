//! Group chats: marked when listed, dismissed when an owner's complete listing no longer has them.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use super::commit_sweep;
use crate::store::observations::{self, Observation};
use crate::store::projections;
use crate::store::resync::{Run, run_version, version_at};

/// Marks a chat seen by this run. A chat listed again after a dismissal older than the run is active again
/// (WeCom's list is the newer observation) and its `dismissed_at` is cleared; a dismissal newer than the run
/// keeps it dismissed. Returns whether the chat was new.
pub async fn mark_chat(
    pool: &PgPool,
    corp_id: &str,
    chat_id: &str,
    run: &Run,
) -> Result<bool, sqlx::Error> {
    let mut tx = projections::observation_tx(pool).await?;
    let (created, changed) =
        mark_chat_in(&mut tx, corp_id, chat_id, run.id, run.started_at).await?;
    let obs = Observation::MarkChat {
        chat_id: chat_id.to_owned(),
        run_id: run.id,
        run_started_at: run.started_at,
    };
    // A status it changed matters to a later sweep (which dismisses only active chats): kept.
    observations::record(&mut tx, corp_id, &obs, created || changed, &[]).await?;
    tx.commit().await?;
    Ok(created)
}

/// [`mark_chat`] inside `tx` (also the rebuild's replay): whether the chat was created, and whether its
/// status changed.
pub(crate) async fn mark_chat_in(
    tx: &mut Transaction<'_, Postgres>,
    corp_id: &str,
    chat_id: &str,
    run_id: i64,
    started_at: DateTime<Utc>,
) -> Result<(bool, bool), sqlx::Error> {
    let version = version_at(started_at);
    let before: Option<String> = sqlx::query_scalar(
        "SELECT status FROM external_group_chats WHERE corp_id = $1 AND chat_id = $2 FOR UPDATE",
    )
    .bind(corp_id)
    .bind(chat_id)
    .fetch_optional(&mut **tx)
    .await?;
    let (created, status): (bool, String) = sqlx::query_as(
        "INSERT INTO external_group_chats AS g (corp_id, chat_id, status, status_version, last_event_at, last_version, resync_run) \
         VALUES ($1, $2, 'active', $3, $4, $3, $5) \
         ON CONFLICT (corp_id, chat_id) DO UPDATE SET resync_run = GREATEST(g.resync_run, EXCLUDED.resync_run), \
           status = CASE WHEN EXCLUDED.status_version > g.status_version THEN 'active' ELSE g.status END, \
           dismissed_at = CASE WHEN EXCLUDED.status_version > g.status_version THEN NULL ELSE g.dismissed_at END, \
           status_version = GREATEST(g.status_version, EXCLUDED.status_version) \
         RETURNING (xmax = 0), status",
    )
    .bind(corp_id)
    .bind(chat_id)
    .bind(&version)
    .bind(started_at)
    .bind(run_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok((created, before.is_some_and(|b| b != status)))
}

/// Dismisses the chats `ids` (those of [`unseen_chats`] that `groupchat/get` says do not exist), each only if
/// still active, unseen by this run and not decided by anything newer. Recorded for a rebuild.
pub async fn sweep_chats(
    pool: &PgPool,
    corp_id: &str,
    run: &Run,
    ids: &[String],
) -> Result<u64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut tx = projections::observation_tx(pool).await?;
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT chat_id FROM external_group_chats \
         WHERE corp_id = $1 AND status = 'active' AND (resync_run IS NULL OR resync_run < $2) \
           AND status_version < $3 AND chat_id = ANY($4) ORDER BY chat_id FOR UPDATE",
    )
    .bind(corp_id)
    .bind(run.id)
    .bind(run_version(run))
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    let swept = resweep_chats(&mut tx, corp_id, run.id, run.started_at, &ids).await?;
    commit_sweep(tx, corp_id, swept, |chat_ids| Observation::SweepChats {
        chat_ids,
        run_id: run.id,
        run_started_at: run.started_at,
    })
    .await
}

/// Dismisses the chats `ids` of run `run_id` (as [`sweep_chats`] does), each only if still active, not seen
/// by a later run and not decided by anything newer. Returns the ids it changed; also the rebuild's replay.
pub(crate) async fn resweep_chats(
    tx: &mut Transaction<'_, Postgres>,
    corp_id: &str,
    run_id: i64,
    started_at: DateTime<Utc>,
    ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(
        "UPDATE external_group_chats SET status = 'dismissed', dismissed_at = $3, status_version = $4 \
         WHERE corp_id = $1 AND status = 'active' AND (resync_run IS NULL OR resync_run < $2) \
           AND status_version < $4 AND chat_id = ANY($5) \
         RETURNING chat_id",
    )
    .bind(corp_id)
    .bind(run_id)
    .bind(started_at)
    .bind(version_at(started_at))
    .bind(ids)
    .fetch_all(&mut **tx)
    .await
}

/// The active chats this run has not listed, of `owners` (those it listed completely) or of no known owner
/// (no listing by owner covers those), in id order: each is asked for before [`sweep_chats`] dismisses it.
pub async fn unseen_chats(
    pool: &PgPool,
    corp_id: &str,
    run: &Run,
    owners: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT chat_id FROM external_group_chats WHERE corp_id = $1 AND status = 'active' \
           AND (owner IS NULL OR owner = ANY($3)) AND (resync_run IS NULL OR resync_run < $2) ORDER BY chat_id",
    )
    .bind(corp_id)
    .bind(run.id)
    .bind(owners)
    .fetch_all(pool)
    .await
}
