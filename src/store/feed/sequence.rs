//! Sequencing: numbering committed staged entries into the feed, one sequencer in the cluster at a time (see
//! the [module doc](super)).

use sqlx::PgPool;

/// Advisory lock key of the sequencer (one per cluster at a time).
const SEQUENCER_LOCK: i64 = 0x5745_434f_4d15;
/// What one sequencer pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequenced {
    /// Another session holds the sequencer lock (another replica sequences).
    Busy,
    /// Entries moved into the feed (possibly none), and the head after them.
    Moved { entries: u64, head: i64 },
}

/// One sequencer pass: numbers up to `limit` committed, unsequenced entries after the head, in id order
/// (see the module doc).
pub async fn sequence(pool: &PgPool, limit: i64) -> Result<Sequenced, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The feed is what readers trust: this commit must be durable before it is visible (see the module doc),
    // whatever the session default is.
    let locked: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock($1) FROM set_config('synchronous_commit', 'on', true)",
    )
    .bind(SEQUENCER_LOCK)
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        tx.rollback().await?;
        return Ok(Sequenced::Busy);
    }
    let head: i64 =
        sqlx::query_scalar("SELECT head FROM wecom_change_feed_state WHERE singleton FOR UPDATE")
            .fetch_one(&mut *tx)
            .await?;
    let moved: i64 = sqlx::query_scalar(
        "WITH moved AS ( \
           DELETE FROM wecom_change_unsequenced WHERE id IN \
             (SELECT id FROM wecom_change_unsequenced ORDER BY id LIMIT $2) \
           RETURNING id), \
         ins AS ( \
           INSERT INTO wecom_change_positions (position, id) \
           SELECT $1 + row_number() OVER (ORDER BY id), id FROM moved \
           RETURNING 1) \
         SELECT count(*) FROM ins",
    )
    .bind(head)
    .bind(limit.max(1))
    .fetch_one(&mut *tx)
    .await?;
    let head = head + moved;
    if moved > 0 {
        sqlx::query("UPDATE wecom_change_feed_state SET head = $1 WHERE singleton")
            .bind(head)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Sequenced::Moved {
        entries: u64::try_from(moved).unwrap_or(0),
        head,
    })
}

/// Staged changes not yet sequenced, and the age in seconds of the oldest (a backlog that only grows means no
/// sequencer runs: no `serve` with `[feed] run_sequencer`).
pub async fn staging_backlog(pool: &PgPool) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), COALESCE(extract(epoch FROM now() - min(e.staged_at))::float8, 0) \
         FROM wecom_change_unsequenced u JOIN wecom_change_entries e USING (id)",
    )
    .fetch_one(pool)
    .await
}
