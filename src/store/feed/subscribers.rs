//! Webhook subscribers: each one's stored cursor and delivery state, and the lock that makes one replica
//! deliver to it at a time.

use std::time::Duration;

use sqlx::PgPool;

use crate::store::feed::bounds;

/// A webhook subscriber's stored cursor and delivery state.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Subscriber {
    pub name: String,
    /// Every entry at or below it is delivered (or filtered out).
    pub position: i64,
    /// Since when it is marked failing (retries failed for the whole give-up window).
    pub failing_since: Option<chrono::DateTime<chrono::Utc>>,
    /// When the current run of failures began.
    pub failures_since: Option<chrono::DateTime<chrono::Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_delivered_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The subscriber `name`, created at the feed's head when new (a new subscriber gets what changes from now
/// on; `webhooks replay --from` sends older entries).
pub async fn subscriber(pool: &PgPool, name: &str) -> Result<Subscriber, sqlx::Error> {
    sqlx::query(
        "INSERT INTO wecom_webhook_cursors (name, position) \
         SELECT $1, head FROM wecom_change_feed_state WHERE singleton ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .execute(pool)
    .await?;
    sqlx::query_as(
        "SELECT name, position, failing_since, failures_since, last_error, last_error_at, last_delivered_at \
         FROM wecom_webhook_cursors WHERE name = $1",
    )
    .bind(name)
    .fetch_one(pool)
    .await
}

/// Every stored subscriber, by name.
pub async fn subscribers(pool: &PgPool) -> Result<Vec<Subscriber>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, position, failing_since, failures_since, last_error, last_error_at, last_delivered_at \
         FROM wecom_webhook_cursors ORDER BY name",
    )
    .fetch_all(pool)
    .await
}

/// Records deliveries up to `position`, if the stored cursor is still `from` (what the sender read): a
/// `webhooks replay` meanwhile moved it, and then the replay wins. Failures are cleared either way. Returns
/// whether the cursor moved.
pub async fn delivered(
    pool: &PgPool,
    name: &str,
    from: i64,
    position: i64,
) -> Result<bool, sqlx::Error> {
    let moved: Option<bool> = sqlx::query_scalar(
        "UPDATE wecom_webhook_cursors SET \
           position = CASE WHEN position = $3 THEN GREATEST(position, $2) ELSE position END, \
           failing_since = NULL, failures_since = NULL, last_delivered_at = now(), updated_at = now() \
         WHERE name = $1 RETURNING position = GREATEST($3, $2)",
    )
    .bind(name)
    .bind(position)
    .bind(from)
    .fetch_optional(pool)
    .await?;
    Ok(moved.unwrap_or(false))
}

/// Moves the cursor from `from` up to `position` over entries filtered out or pruned (nothing was sent),
/// unless a replay moved it meanwhile.
pub async fn skipped(
    pool: &PgPool,
    name: &str,
    from: i64,
    position: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE wecom_webhook_cursors SET position = GREATEST(position, $2), updated_at = now() \
         WHERE name = $1 AND position = $3",
    )
    .bind(name)
    .bind(position)
    .bind(from)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a failed delivery attempt; marks the subscriber failing when its failures began more than
/// `give_up` ago. Returns whether it is failing now.
pub async fn failed(
    pool: &PgPool,
    name: &str,
    error: &str,
    give_up: Duration,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE wecom_webhook_cursors SET last_error = $2, last_error_at = now(), \
           failures_since = COALESCE(failures_since, now()), \
           failing_since = CASE WHEN failing_since IS NOT NULL THEN failing_since \
             WHEN COALESCE(failures_since, now()) < now() - make_interval(secs => $3) THEN now() END, \
           updated_at = now() \
         WHERE name = $1 RETURNING failing_since IS NOT NULL",
    )
    .bind(name)
    .bind(error)
    .bind(give_up.as_secs_f64())
    .fetch_one(pool)
    .await
}

/// Sets the subscriber's cursor to `position` (`webhooks replay --from`): entries after it are sent again.
/// Creates the subscriber if new. Returns whether the position is still in the feed (not pruned).
pub async fn replay_from(pool: &PgPool, name: &str, position: i64) -> Result<bool, sqlx::Error> {
    let (_, pruned_through) = bounds(pool).await?;
    sqlx::query(
        "INSERT INTO wecom_webhook_cursors (name, position) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
    )
    .bind(name)
    .bind(position)
    .execute(pool)
    .await?;
    Ok(position >= pruned_through)
}

/// First key of the per-subscriber delivery lock (the second is the name's hash).
const SUBSCRIBER_LOCK: i32 = 0x5745_4315;

/// Takes the cluster-wide lock of subscriber `name` on a connection of its own (detached from the pool, so
/// the lock goes with the connection when it is dropped): `None` when another replica holds it.
pub async fn lock_subscriber(
    pool: &PgPool,
    name: &str,
) -> Result<Option<sqlx::PgConnection>, sqlx::Error> {
    let mut conn = pool.acquire().await?.detach();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
        .bind(SUBSCRIBER_LOCK)
        .bind(name)
        .fetch_one(&mut conn)
        .await?;
    Ok(locked.then_some(conn))
}
