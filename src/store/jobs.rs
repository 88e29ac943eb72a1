//! The durable job queue for WeCom API work.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};

use crate::domain::{JobKind, JobStatus};
use crate::sync::plan::JobRequest;

/// A claimed job.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Job {
    pub id: i64,
    pub kind: JobKind,
    pub app: String,
    pub corp_id: String,
    pub subject: String,
    pub status: JobStatus,
    pub attempts: i32,
    pub run_after: DateTime<Utc>,
    pub last_error: Option<String>,
    pub last_errcode: Option<i64>,
    pub event_id: Option<i64>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, kind, app, corp_id, subject, status, attempts, run_after, last_error, last_errcode, event_id, updated_at";

/// Inserts one job; a job already queued for the same subject absorbs it.
const ENQUEUE: &str = "INSERT INTO wecom_jobs (kind, app, corp_id, subject, event_id) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (kind, app, corp_id, subject) WHERE status = 'queued' DO NOTHING";

/// Queues a job in the caller's transaction; a job already queued for the same subject absorbs it.
pub async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
    kind: JobKind,
    app: &str,
    corp_id: &str,
    subject: &str,
    event_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(ENQUEUE)
        .bind(kind)
        .bind(app)
        .bind(corp_id)
        .bind(subject)
        .bind(event_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The channel a job insert NOTIFYs (at commit), so idle workers of every replica start it at once.
pub const QUEUED_CHANNEL: &str = "wecom_jobs_queued";

/// Notifies [`QUEUED_CHANNEL`] inside `tx` (delivered when it commits).
pub async fn notify_queued(tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(QUEUED_CHANNEL)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Queues a job outside any transaction (a job queuing the next step); absorbed like [`enqueue`].
pub async fn enqueue_one(
    pool: &PgPool,
    kind: JobKind,
    app: &str,
    corp_id: &str,
    subject: &str,
    event_id: Option<i64>,
) -> Result<(), sqlx::Error> {
    sqlx::query(ENQUEUE)
        .bind(kind)
        .bind(app)
        .bind(corp_id)
        .bind(subject)
        .bind(event_id)
        .execute(pool)
        .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(QUEUED_CHANNEL)
        .execute(pool)
        .await?;
    Ok(())
}

/// Queues many jobs in one statement, in the caller's transaction (see [`enqueue`]).
pub async fn enqueue_many<'a>(
    tx: &mut Transaction<'_, Postgres>,
    jobs: impl Iterator<Item = &'a JobRequest> + Clone,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO wecom_jobs (kind, app, corp_id, subject, event_id) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) \
         ON CONFLICT (kind, app, corp_id, subject) WHERE status = 'queued' DO NOTHING",
    )
    .bind(jobs.clone().map(|j| j.kind.as_str()).collect::<Vec<_>>())
    .bind(jobs.clone().map(|j| j.app.as_str()).collect::<Vec<_>>())
    .bind(jobs.clone().map(|j| j.corp_id.as_str()).collect::<Vec<_>>())
    .bind(jobs.clone().map(|j| j.subject.as_str()).collect::<Vec<_>>())
    .bind(jobs.map(|j| j.event_id).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Takes the next due job (or one whose worker's lease expired), leased for `lease`.
pub async fn claim(pool: &PgPool, lease: Duration) -> Result<Option<Job>, sqlx::Error> {
    // Only constant SQL fragments are interpolated; every value is a bind.
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE wecom_jobs SET status = 'running', attempts = attempts + 1, \
             lease_until = now() + make_interval(secs => $1), updated_at = now() \
         WHERE id = (SELECT id FROM wecom_jobs \
                     WHERE (status = 'queued' AND run_after <= now()) OR (status = 'running' AND lease_until < now()) \
                     ORDER BY run_after, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING {COLUMNS}"
    )))
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// Marks a job done.
pub async fn complete(pool: &PgPool, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE wecom_jobs SET status = 'done', lease_until = NULL, last_error = NULL, updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records a failure: queued again after `retry_in`, or dead when `retry_in` is `None`.
pub async fn fail(
    pool: &PgPool,
    id: i64,
    error: &str,
    errcode: Option<i64>,
    retry_in: Option<Duration>,
) -> Result<(), sqlx::Error> {
    let result = match retry_in {
        Some(wait) => {
            sqlx::query(
                "UPDATE wecom_jobs SET status = 'queued', lease_until = NULL, last_error = $2, last_errcode = $3, \
                     run_after = now() + make_interval(secs => $4), updated_at = now() WHERE id = $1",
            )
            .bind(id)
            .bind(error)
            .bind(errcode)
            .bind(wait.as_secs_f64())
            .execute(pool)
            .await
        }
        None => {
            sqlx::query(
                "UPDATE wecom_jobs SET status = 'dead', lease_until = NULL, last_error = $2, last_errcode = $3, \
                     updated_at = now() WHERE id = $1",
            )
            .bind(id)
            .bind(error)
            .bind(errcode)
            .execute(pool)
            .await
        }
    };
    match result {
        Ok(_) => Ok(()),
        // 23505: a newer job for the same subject is already queued; it does this one's work.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            complete(pool, id).await
        }
        Err(e) => Err(e),
    }
}

/// Jobs with the given status, newest first.
pub async fn list(pool: &PgPool, status: JobStatus, limit: i64) -> Result<Vec<Job>, sqlx::Error> {
    // Only constant SQL fragments are interpolated; every value is a bind.
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM wecom_jobs WHERE status = $1 ORDER BY updated_at DESC LIMIT $2"
    )))
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Queues dead jobs again (all, or those with the given ids). Returns how many.
pub async fn retry_dead(pool: &PgPool, ids: Option<&[i64]>) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // A dead job whose subject already has a queued job is covered by it.
    sqlx::query(
        "UPDATE wecom_jobs d SET status = 'done', updated_at = now() \
         WHERE d.status = 'dead' AND ($1::bigint[] IS NULL OR d.id = ANY($1)) \
           AND EXISTS (SELECT 1 FROM wecom_jobs q WHERE q.status = 'queued' AND q.kind = d.kind \
                       AND q.app = d.app AND q.corp_id = d.corp_id AND q.subject = d.subject)",
    )
    .bind(ids)
    .execute(&mut *tx)
    .await?;
    // Several dead jobs for one subject: keep the newest.
    sqlx::query(
        "UPDATE wecom_jobs d SET status = 'done', updated_at = now() \
         WHERE d.status = 'dead' AND ($1::bigint[] IS NULL OR d.id = ANY($1)) \
           AND EXISTS (SELECT 1 FROM wecom_jobs n WHERE n.status = 'dead' AND n.kind = d.kind AND n.app = d.app \
                       AND n.corp_id = d.corp_id AND n.subject = d.subject AND n.id > d.id \
                       AND ($1::bigint[] IS NULL OR n.id = ANY($1)))",
    )
    .bind(ids)
    .execute(&mut *tx)
    .await?;
    let r = sqlx::query(
        "UPDATE wecom_jobs SET status = 'queued', attempts = 0, run_after = now(), updated_at = now() \
         WHERE status = 'dead' AND ($1::bigint[] IS NULL OR id = ANY($1))",
    )
    .bind(ids)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(r.rows_affected())
}

/// Queued and dead job counts, for metrics.
pub async fn depth(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'queued'), count(*) FILTER (WHERE status = 'dead') FROM wecom_jobs",
    )
    .fetch_one(pool)
    .await
}

/// Deletes up to `batch` done jobs last updated more than `older_than` ago. Dead jobs are never deleted (an
/// operator retries or inspects them). Small batches keep each transaction short, so pruning a large
/// backlog never holds locks or trips the statement timeout. Returns how many were deleted.
pub async fn prune_done(
    pool: &PgPool,
    older_than: Duration,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "DELETE FROM wecom_jobs WHERE id IN (SELECT id FROM wecom_jobs \
             WHERE status = 'done' AND updated_at < now() - make_interval(secs => $1) \
             ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
    )
    .bind(older_than.as_secs_f64())
    .bind(batch)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}
