//! Cluster-wide WeCom API limits (see [`crate::sync::client::limiter`]): concurrency slots leased per corp and
//! API, a shared rate schedule (GCRA), and the slowdown every replica applies to a corp after WeCom said 45033
//! or 45009. Every statement is short and autocommitted: no connection is held across a WeCom call.

use std::time::Duration;

use sqlx::PgPool;

/// Takes a free concurrency slot of `corp_id`'s `api` (one of `slots`), leased to `holder` for `lease`.
/// `None`: every slot is taken (by any replica); try again shortly. Two replicas racing for one free slot:
/// the loser's `ON CONFLICT` re-checks the winner's committed lease and takes nothing.
pub async fn try_acquire_slot(
    pool: &PgPool,
    corp_id: &str,
    api: &str,
    slots: u32,
    holder: &str,
    lease: Duration,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO wecom_api_slots AS w (corp_id, api, slot, holder, expires_at) \
         SELECT $1, $2, s, $3, now() + make_interval(secs => $5) \
         FROM generate_series(0, $4 - 1) AS s \
         WHERE NOT EXISTS (SELECT 1 FROM wecom_api_slots x \
                           WHERE x.corp_id = $1 AND x.api = $2 AND x.slot = s AND x.expires_at > now()) \
         ORDER BY random() LIMIT 1 \
         ON CONFLICT (corp_id, api, slot) DO UPDATE \
           SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
           WHERE w.expires_at <= now() \
         RETURNING slot",
    )
    .bind(corp_id)
    .bind(api)
    .bind(holder)
    .bind(slots.max(1) as i32)
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// Gives a slot back (only if `holder` still has it: an expired lease may have been taken over).
pub async fn release_slot(
    pool: &PgPool,
    corp_id: &str,
    api: &str,
    slot: i32,
    holder: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM wecom_api_slots WHERE corp_id = $1 AND api = $2 AND slot = $3 AND holder = $4",
    )
    .bind(corp_id)
    .bind(api)
    .bind(slot)
    .bind(holder)
    .execute(pool)
    .await?;
    Ok(())
}

/// Reserves the next call of `corp_id`'s `api` on the shared schedule and returns how long to wait before
/// making it: `per_minute` calls a minute with bursts of `burst`, or `per_minute / slow_factor` without burst
/// while the corp is slowed down (see [`slow_down`]). GCRA: the row's `tat` moves on by one emission interval
/// per call; a call waits until `tat` minus the burst allowance is reached.
pub async fn reserve_rate(
    pool: &PgPool,
    corp_id: &str,
    api: &str,
    per_minute: u32,
    burst: u32,
    slow_factor: u32,
) -> Result<Duration, sqlx::Error> {
    let interval_ms = 60_000.0 / f64::from(per_minute.max(1));
    let wait_ms: f64 = sqlx::query_scalar(
        "WITH p AS ( \
           SELECT CASE WHEN slow THEN $3::float8 * $5::float8 ELSE $3::float8 END AS t, CASE WHEN slow THEN 1.0::float8 ELSE $4::float8 END AS b \
           FROM (SELECT EXISTS (SELECT 1 FROM wecom_api_slowdowns WHERE corp_id = $1 AND until > now()) \
                 AS slow) s) \
         INSERT INTO wecom_api_rates AS r (corp_id, api, tat) \
         SELECT $1, $2, now() + make_interval(secs => p.t / 1000.0) FROM p \
         ON CONFLICT (corp_id, api) DO UPDATE \
           SET tat = GREATEST(r.tat, now()) + make_interval(secs => (SELECT t FROM p) / 1000.0) \
         RETURNING GREATEST(0.0::float8, EXTRACT(EPOCH FROM (r.tat - now()))::float8 * 1000.0::float8 \
                               - (SELECT t * b FROM p))",
    )
    .bind(corp_id)
    .bind(api)
    .bind(interval_ms)
    .bind(f64::from(burst.max(1)))
    .bind(f64::from(slow_factor.max(1)))
    .fetch_one(pool)
    .await?;
    Ok(Duration::from_secs_f64(wait_ms.max(0.0) / 1000.0))
}

/// WeCom said `errcode` (45033 or 45009) for `corp_id`: every replica calls it more slowly for `duration`
/// (extended, never shortened, by further hits).
pub async fn slow_down(
    pool: &PgPool,
    corp_id: &str,
    errcode: i64,
    duration: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO wecom_api_slowdowns AS s (corp_id, until, errcode) \
         VALUES ($1, now() + make_interval(secs => $3), $2) \
         ON CONFLICT (corp_id) DO UPDATE \
           SET until = GREATEST(s.until, EXCLUDED.until), errcode = EXCLUDED.errcode, hits = s.hits + 1",
    )
    .bind(corp_id)
    .bind(errcode)
    .bind(duration.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether `corp_id` is slowed down now.
pub async fn is_slowed(pool: &PgPool, corp_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM wecom_api_slowdowns WHERE corp_id = $1 AND until > now())",
    )
    .bind(corp_id)
    .fetch_one(pool)
    .await
}
