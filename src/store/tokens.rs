//! The shared access-token cache, with single-flight refresh across replicas.

use std::future::Future;

use sqlx::PgPool;

/// A token valid for at least `margin_secs` more seconds, if cached.
pub async fn cached(
    pool: &PgPool,
    corp_id: &str,
    secret_hash: &str,
    margin_secs: i64,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT access_token FROM wecom_access_tokens \
         WHERE corp_id = $1 AND secret_hash = $2 AND expires_at > now() + make_interval(secs => $3)",
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
    Database(sqlx::Error),
    Fetch(E),
}

/// Returns a fresh token, calling `fetch` at most once across every replica at a time: the refresh holds a
/// transaction-scoped advisory lock for this (corp, secret), and whoever gets it second finds the token the
/// first one stored.
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
    let mut tx = pool.begin().await.map_err(RefreshError::Database)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || $2, 7))")
        .bind(corp_id)
        .bind(secret_hash)
        .execute(&mut *tx)
        .await
        .map_err(RefreshError::Database)?;
    let current: Option<String> = sqlx::query_scalar(
        "SELECT access_token FROM wecom_access_tokens \
         WHERE corp_id = $1 AND secret_hash = $2 AND expires_at > now() + make_interval(secs => $3)",
    )
    .bind(corp_id)
    .bind(secret_hash)
    .bind(margin_secs as f64)
    .fetch_optional(&mut *tx)
    .await
    .map_err(RefreshError::Database)?;
    if let Some(token) = current {
        tx.commit().await.map_err(RefreshError::Database)?;
        return Ok(token);
    }
    let (token, expires_in) = fetch().await.map_err(RefreshError::Fetch)?;
    sqlx::query(
        "INSERT INTO wecom_access_tokens (corp_id, secret_hash, access_token, expires_at, refreshed_at) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4), now()) \
         ON CONFLICT (corp_id, secret_hash) DO UPDATE SET access_token = EXCLUDED.access_token, \
           expires_at = EXCLUDED.expires_at, refreshed_at = EXCLUDED.refreshed_at",
    )
    .bind(corp_id)
    .bind(secret_hash)
    .bind(&token)
    .bind(expires_in as f64)
    .execute(&mut *tx)
    .await
    .map_err(RefreshError::Database)?;
    tx.commit().await.map_err(RefreshError::Database)?;
    Ok(token)
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
