//! The shared access-token cache, with single-flight refresh across replicas (a lease row, never a
//! transaction held across the HTTP call).

use std::future::Future;
use std::time::Duration;

use sqlx::PgPool;

/// A token valid for longer than the refresh margin, if cached. The margin is `margin_secs`, capped at half
/// the token's lifetime: a token WeCom gave with 200 s to live is used for 100 s rather than refetched on
/// every call.
pub async fn cached(
    pool: &PgPool,
    corp_id: &str,
    secret_hash: &str,
    margin_secs: i64,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT access_token FROM wecom_access_tokens \
         WHERE corp_id = $1 AND secret_hash = $2 \
           AND expires_at > now() + make_interval(secs => LEAST($3, COALESCE(lifetime_secs, 7200) / 2.0))",
    )
    .bind(corp_id)
    .bind(secret_hash)
    .bind(margin_secs as f64)
    .fetch_optional(pool)
    .await
}

/// Why a refresh failed: the database, or the fetch itself.
#[derive(Debug)]
pub enum RefreshError<E> {
    /// The token cache or the lease failed.
    Database(sqlx::Error),
    /// `fetch` failed.
    Fetch(E),
}

/// How long a refresh lease lasts: longer than a gettoken with its retries takes, so a slow WeCom does not
/// let a second replica fetch too; short enough that a crashed holder delays the others only briefly.
const LEASE_SECS: f64 = 30.0;
/// How often a replica waiting on another's refresh looks at the cache.
const POLL: Duration = Duration::from_millis(100);

/// Returns a fresh token, calling `fetch` at most once across every replica at a time. The replica that
/// takes the lease row (a short statement) calls `fetch` holding no database connection, stores the token
/// and drops the lease in one short transaction; the others poll the cache every 100 ms until the token is
/// there or the lease has expired (its holder died), then try to take it themselves.
pub async fn refresh<F, Fut, E>(
    pool: &PgPool,
    corp_id: &str,
    secret_hash: &str,
    margin_secs: i64,
    fetch: F,
) -> Result<String, RefreshError<E>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(String, i64), E>>,
{
    let holder = uuid::Uuid::new_v4().to_string();
    let holder = holder.as_str();
    loop {
        if let Some(token) = cached(pool, corp_id, secret_hash, margin_secs)
            .await
            .map_err(RefreshError::Database)?
        {
            return Ok(token);
        }
        if take_lease(pool, corp_id, secret_hash, holder)
            .await
            .map_err(RefreshError::Database)?
        {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    // Another replica may have stored a token between our look and our lease.
    let fetched = match cached(pool, corp_id, secret_hash, margin_secs).await {
        Ok(Some(token)) => Ok(token),
        Ok(None) => match fetch().await {
            Ok((token, expires_in)) => {
                store(pool, corp_id, secret_hash, holder, &token, expires_in)
                    .await
                    .map(|()| token)
                    .map_err(RefreshError::Database)
            }
            Err(e) => Err(RefreshError::Fetch(e)),
        },
        Err(e) => Err(RefreshError::Database(e)),
    };
    // Always give the lease back (after a failure too), so the next caller need not wait for it to expire.
    // `store` already did on success; deleting again is harmless, and a failure here only delays the next
    // refresh until the lease expires.
    if let Err(e) = release_lease(pool, corp_id, secret_hash, holder).await {
        tracing::warn!(error = %e, "could not release the token refresh lease; it expires by itself");
    }
    fetched
}

/// Takes the refresh lease for (corp, secret) if nobody holds a live one. True when `holder` has it.
async fn take_lease(
    pool: &PgPool,
    corp_id: &str,
    secret_hash: &str,
    holder: &str,
) -> Result<bool, sqlx::Error> {
    let taken: Option<String> = sqlx::query_scalar(
        "INSERT INTO wecom_token_leases AS l (corp_id, secret_hash, holder, until) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4)) \
         ON CONFLICT (corp_id, secret_hash) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until \
           WHERE l.until < now() \
         RETURNING holder",
    )
    .bind(corp_id)
    .bind(secret_hash)
    .bind(holder)
    .bind(LEASE_SECS)
    .fetch_optional(pool)
    .await?;
    Ok(taken.as_deref() == Some(holder))
}

async fn release_lease(
    pool: &PgPool,
    corp_id: &str,
    secret_hash: &str,
    holder: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM wecom_token_leases WHERE corp_id = $1 AND secret_hash = $2 AND holder = $3",
    )
    .bind(corp_id)
    .bind(secret_hash)
    .bind(holder)
    .execute(pool)
    .await?;
    Ok(())
}

/// Stores a fetched token with its lifetime and drops the lease, in one short transaction.
async fn store(
    pool: &PgPool,
    corp_id: &str,
    secret_hash: &str,
    holder: &str,
    token: &str,
    expires_in: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO wecom_access_tokens (corp_id, secret_hash, access_token, expires_at, refreshed_at, lifetime_secs) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4), now(), $5) \
         ON CONFLICT (corp_id, secret_hash) DO UPDATE SET access_token = EXCLUDED.access_token, \
           expires_at = EXCLUDED.expires_at, refreshed_at = EXCLUDED.refreshed_at, \
           lifetime_secs = EXCLUDED.lifetime_secs",
    )
    .bind(corp_id)
    .bind(secret_hash)
    .bind(token)
    .bind(expires_in as f64)
    .bind(expires_in)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM wecom_token_leases WHERE corp_id = $1 AND secret_hash = $2 AND holder = $3",
    )
    .bind(corp_id)
    .bind(secret_hash)
    .bind(holder)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Marks `token` expired, only if it is still the cached one: another replica may already have replaced it.
pub async fn invalidate(
    pool: &PgPool,
    corp_id: &str,
    secret_hash: &str,
    token: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE wecom_access_tokens SET expires_at = now() - interval '1 second' \
         WHERE corp_id = $1 AND secret_hash = $2 AND access_token = $3",
    )
    .bind(corp_id)
    .bind(secret_hash)
    .bind(token)
    .execute(pool)
    .await?;
    Ok(())
}
