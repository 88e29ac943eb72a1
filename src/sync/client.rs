//! The WeCom server API client: access tokens shared through PostgreSQL, retries where WeCom advises them,
//! and every failure explained (see [`crate::wecom::errcode`]).
//!
//! The base URL is configurable (default `https://qyapi.weixin.qq.com`), so tests point it at a fake.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::metrics::Metrics;
use crate::store::tokens::{self, RefreshError};
use crate::wecom::errcode::WecomError;

/// WeCom's production API.
pub const DEFAULT_BASE_URL: &str = "https://qyapi.weixin.qq.com";
/// Refresh a token this long before WeCom says it expires.
const REFRESH_MARGIN_SECS: i64 = 300;
/// Calls made again after -1 / 45009 / 45033, at most.
const MAX_RETRIES: u32 = 3;

/// A corp and one of its secrets (each secret has its own token).
#[derive(Clone)]
pub struct Credentials {
    pub corp_id: String,
    pub secret: SecretString,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("corp_id", &self.corp_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// The cache key for the secret: its SHA-256, never the secret itself.
    fn secret_hash(&self) -> String {
        hex::encode(Sha256::digest(self.secret.expose_secret().as_bytes()))
    }
}

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Wecom(WecomError),
    #[error(
        "cannot reach WeCom's API at {base}: {detail}. Check DNS and outbound HTTPS from this server \
         (WECOM_API_BASE_URL overrides the address)"
    )]
    Unreachable { base: String, detail: String },
    #[error("WeCom's API answered HTTP {0}; retrying later")]
    HttpStatus(u16),
    #[error("WeCom's API answered something that is not its JSON: {0}")]
    BadResponse(String),
    #[error("the token cache in PostgreSQL failed: {0}")]
    Database(#[from] sqlx::Error),
}

impl ApiError {
    /// The WeCom errcode, if WeCom answered with one.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            ApiError::Wecom(e) => Some(e.errcode),
            _ => None,
        }
    }
}

/// The client. Cheap to clone.
#[derive(Clone)]
pub struct WecomApi {
    http: reqwest::Client,
    base: String,
    pool: PgPool,
    backoff: Duration,
    metrics: Option<Metrics>,
}

impl WecomApi {
    /// A client for `base_url`, caching tokens in `pool`.
    pub fn new(base_url: &str, pool: PgPool) -> Result<WecomApi, ApiError> {
        let http = crate::tls::client_builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ApiError::Unreachable {
                base: base_url.to_owned(),
                detail: e.without_url().to_string(),
            })?;
        Ok(WecomApi {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            pool,
            backoff: Duration::from_millis(500),
            metrics: None,
        })
    }

    /// Counts API errors and token refreshes in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> WecomApi {
        self.metrics = Some(metrics);
        self
    }

    /// Shortens the pause between retries (tests).
    pub fn with_backoff(mut self, backoff: Duration) -> WecomApi {
        self.backoff = backoff;
        self
    }

    /// One HTTP exchange; never puts the URL (which may hold a secret or token) into an error.
    async fn exchange(
        &self,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let url = format!("{}{}", self.base, path);
        let req = match body {
            Some(b) => self.http.post(&url).query(query).json(b),
            None => self.http.get(&url).query(query),
        };
        let resp = req.send().await.map_err(|e| ApiError::Unreachable {
            base: self.base.clone(),
            detail: e.without_url().to_string(),
        })?;
        if !resp.status().is_success() {
            return Err(ApiError::HttpStatus(resp.status().as_u16()));
        }
        let value: Value = resp
            .json()
            .await
            .map_err(|e| ApiError::BadResponse(e.without_url().to_string()))?;
        match value.get("errcode").and_then(Value::as_i64).unwrap_or(0) {
            0 => Ok(value),
            code => {
                if let Some(m) = &self.metrics {
                    m.api_errors.with_label_values(&[&code.to_string()]).inc();
                }
                Err(ApiError::Wecom(WecomError::new(
                    code,
                    value.get("errmsg").and_then(Value::as_str).unwrap_or(""),
                )))
            }
        }
    }

    /// An exchange retried with exponential backoff while WeCom says it is busy or rate-limiting.
    async fn exchange_with_retries(
        &self,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let mut attempt = 0;
        loop {
            match self.exchange(path, query, body).await {
                Err(ApiError::Wecom(e))
                    if matches!(e.errcode, -1 | 45009 | 45033) && attempt < MAX_RETRIES =>
                {
                    attempt += 1;
                    tracing::warn!(
                        errcode = e.errcode,
                        attempt,
                        path,
                        "WeCom asks to retry later; backing off"
                    );
                    tokio::time::sleep(self.backoff * 2u32.pow(attempt - 1)).await;
                }
                other => return other,
            }
        }
    }

    async fn gettoken(&self, creds: &Credentials) -> Result<(String, i64), ApiError> {
        let v = self
            .exchange_with_retries(
                "/cgi-bin/gettoken",
                &[
                    ("corpid", creds.corp_id.as_str()),
                    ("corpsecret", creds.secret.expose_secret()),
                ],
                None,
            )
            .await?;
        let token = v
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::BadResponse("gettoken without access_token".into()))?;
        let expires_in = v.get("expires_in").and_then(Value::as_i64).unwrap_or(7200);
        tracing::info!(corp_id = %creds.corp_id, expires_in, "fetched a WeCom access token");
        if let Some(m) = &self.metrics {
            m.token_refreshes.inc();
        }
        Ok((token.to_owned(), expires_in))
    }

    /// A valid access token for these credentials: from the shared cache, or fetched once for every replica.
    pub async fn access_token(&self, creds: &Credentials) -> Result<String, ApiError> {
        let hash = creds.secret_hash();
        if let Some(t) =
            tokens::cached(&self.pool, &creds.corp_id, &hash, REFRESH_MARGIN_SECS).await?
        {
            return Ok(t);
        }
        tokens::refresh(
            &self.pool,
            &creds.corp_id,
            &hash,
            REFRESH_MARGIN_SECS,
            || self.gettoken(creds),
        )
        .await
        .map_err(|e| match e {
            RefreshError::Database(e) => ApiError::Database(e),
            RefreshError::Fetch(e) => e,
        })
    }

    /// Calls an API with a token. On 40014/42001 the token that was used is invalidated (only that one: another
    /// replica may have refreshed it already), fetched again once, and the call retried once.
    pub async fn call(
        &self,
        creds: &Credentials,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let mut refreshed = false;
        loop {
            let token = self.access_token(creds).await?;
            let mut q: Vec<(&str, &str)> = vec![("access_token", token.as_str())];
            q.extend_from_slice(query);
            match self.exchange_with_retries(path, &q, body).await {
                Err(ApiError::Wecom(e)) if e.is_token_error() && !refreshed => {
                    tracing::warn!(
                        errcode = e.errcode,
                        path,
                        "access token refused; fetching a new one"
                    );
                    tokens::invalidate(&self.pool, &creds.corp_id, &creds.secret_hash(), &token)
                        .await?;
                    refreshed = true;
                }
                other => return other,
            }
        }
    }

    /// `externalcontact/get_follow_user_list`: the members with 客户联系 enabled (also a harmless permission check).
    pub async fn follow_user_list(&self, creds: &Credentials) -> Result<Vec<String>, ApiError> {
        let v = self
            .call(
                creds,
                "/cgi-bin/externalcontact/get_follow_user_list",
                &[],
                None,
            )
            .await?;
        Ok(v.get("follow_user")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `externalcontact/get_corp_tag_list`: every tag group and tag.
    pub async fn corp_tag_list(&self, creds: &Credentials) -> Result<Value, ApiError> {
        self.call(
            creds,
            "/cgi-bin/externalcontact/get_corp_tag_list",
            &[],
            Some(&serde_json::json!({})),
        )
        .await
    }

    /// `externalcontact/groupchat/get`: one customer group chat with its members (`group_chat`).
    pub async fn group_chat(&self, creds: &Credentials, chat_id: &str) -> Result<Value, ApiError> {
        self.call(
            creds,
            "/cgi-bin/externalcontact/groupchat/get",
            &[],
            Some(&serde_json::json!({"chat_id": chat_id, "need_name": 1})),
        )
        .await
    }
}
