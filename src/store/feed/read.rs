//! Reading the feed by cursor, and retention.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;

use crate::domain::{ChangeKind, ChangeSource};

/// One entry of the feed, as the API and webhooks show it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Entry {
    /// The cursor of this entry: pass it as `after` to read what follows.
    pub position: i64,
    /// The entry's stable id (the same across redeliveries; `change_id` in the NOTIFY payload).
    pub id: i64,
    pub corp_id: String,
    pub kind: ChangeKind,
    /// The changed thing within the kind (external_userid, chat_id, tag id, unionid, userid, department id).
    pub subject: String,
    /// The change type (WeCom's `ChangeType`, or `resync`, `pending_resolved`, …).
    pub change: String,
    pub source: ChangeSource,
    /// The stored event that caused it; `None` for an API observation.
    pub event_id: Option<i64>,
    /// What changed: the NOTIFY payload.
    pub data: Value,
    /// The changed row after the change; `None` when there is no row.
    pub state: Option<Value>,
    /// When the change was committed (staged) and when it entered the feed.
    pub staged_at: chrono::DateTime<chrono::Utc>,
    pub sequenced_at: chrono::DateTime<chrono::Utc>,
}

impl Entry {
    /// The key changes are ordered by for delivery: one subject's entries are delivered in feed order.
    pub fn subject_key(&self) -> (String, ChangeKind, String) {
        (self.corp_id.clone(), self.kind, self.subject.clone())
    }
}

/// Which entries a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only these corps (all when empty).
    pub corps: Vec<String>,
    /// Only these kinds (all when empty).
    pub kinds: Vec<ChangeKind>,
}

/// A page of the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// The cursor to continue from: the last entry's position, or the head when the page is not full (the
    /// entries up to it did not match the filter).
    pub next: i64,
    /// The feed's head when the page was read.
    pub head: i64,
}

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Entries after the cursor were pruned (retention): the consumer missed changes.
    #[error(
        "cursor {cursor} is older than the feed's retention (entries up to {pruned_through} were pruned): \
         resync from the tables, then continue from cursor {head} / 游标早于保留期，请先从同步表全量同步，再从 {head} 继续"
    )]
    Expired {
        cursor: i64,
        pruned_through: i64,
        head: i64,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The head and the pruned watermark.
pub async fn bounds(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as("SELECT head, pruned_through FROM wecom_change_feed_state WHERE singleton")
        .fetch_one(pool)
        .await
}

/// Up to `limit` entries after `after` matching `filter`, in position order (see the module doc).
pub async fn read(
    pool: &PgPool,
    after: i64,
    limit: i64,
    filter: &Filter,
) -> Result<Page, ReadError> {
    let mut tx = pool.begin().await?;
    let (head, pruned_through): (i64, i64) =
        sqlx::query_as("SELECT head, pruned_through FROM wecom_change_feed_state WHERE singleton")
            .fetch_one(&mut *tx)
            .await?;
    if after < pruned_through {
        return Err(ReadError::Expired {
            cursor: after,
            pruned_through,
            head,
        });
    }
    let kinds: Vec<&str> = filter.kinds.iter().map(|k| k.as_str()).collect();
    let entries: Vec<Entry> = sqlx::query_as(
        "SELECT position, id, corp_id, kind, subject, change, source, event_id, data, state, staged_at, \
             sequenced_at \
         FROM wecom_changes \
         WHERE position > $1 AND position <= $2 \
           AND (cardinality($3::text[]) = 0 OR corp_id = ANY($3)) \
           AND (cardinality($4::text[]) = 0 OR kind = ANY($4)) \
         ORDER BY position LIMIT $5",
    )
    .bind(after)
    .bind(head)
    .bind(&filter.corps)
    .bind(&kinds)
    .bind(limit.max(1))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let full = entries.len() as i64 >= limit.max(1);
    let next = match entries.last() {
        Some(last) if full => last.position,
        _ => head.max(after),
    };
    Ok(Page {
        entries,
        next,
        head,
    })
}

/// Deletes the entries sequenced more than `retention` ago; returns how many.
pub async fn prune(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let cutoff: Option<i64> = sqlx::query_scalar(
        "SELECT max(position) FROM wecom_change_positions \
         WHERE sequenced_at < now() - make_interval(secs => $1)",
    )
    .bind(retention.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    let Some(cutoff) = cutoff else {
        tx.rollback().await?;
        return Ok(0);
    };
    let deleted = sqlx::query(
        "WITH gone AS (DELETE FROM wecom_change_positions WHERE position <= $1 RETURNING id) \
         DELETE FROM wecom_change_entries WHERE id IN (SELECT id FROM gone)",
    )
    .bind(cutoff)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(
        "UPDATE wecom_change_feed_state SET pruned_through = GREATEST(pruned_through, $1) WHERE singleton",
    )
    .bind(cutoff)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(deleted)
}

/// How many entries after `position` are in the feed (a subscriber's lag, before its filters).
pub async fn lag(pool: &PgPool, position: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM wecom_change_positions WHERE position > $1")
        .bind(position)
        .fetch_one(pool)
        .await
}
