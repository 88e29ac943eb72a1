//! The WeCom server API client: access tokens shared through PostgreSQL, retries where WeCom advises them,
//! and every failure explained (see [`crate::wecom::errcode`]).
//!
//! The base URL is configurable (default `https://qyapi.weixin.qq.com`), so tests point it at a fake.
//!
//! Every `/cgi-bin/…` path lives in this module, one method each in `endpoints`; here is the generic call
//! they share (tokens, limits, retries). Every answer comes back typed ([`types`]): the call decodes WeCom's
//! `errcode`/`errmsg` envelope and then the answer, and [`paging`] follows WeCom's cursors for every paged
//! endpoint. Every exchange goes through the [`limiter`]: WeCom's per-corp limits are shared by every
//! replica through PostgreSQL.

mod de;
mod endpoints;
mod fetched;
pub use endpoints::MAX_PENDING_ID_LOOKUP;
pub use fetched::Fetched;
pub mod limiter;
pub mod paging;
pub mod provider;
pub mod types;

use std::time::Duration;

use chrono::Utc;

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::metrics::Metrics;
use crate::store::tokens::{self, RefreshError};
use crate::wecom::errcode::WecomError;
use limiter::{ApiLimits, Limiter};
use types::AccessToken;

/// WeCom's production API.
pub const DEFAULT_BASE_URL: &str = "https://qyapi.weixin.qq.com";
/// Refresh a token this long before WeCom says it expires, or at half its life when WeCom gave it less (see
/// [`tokens::cached`]): at most one gettoken per token per (corp, secret).
const REFRESH_MARGIN_SECS: i64 = 300;
/// Owners per `groupchat/list` `owner_filter.userid_list` (WeCom's maximum).
pub const MAX_OWNER_FILTER: usize = 100;
/// Calls made again after -1 / 45009 / 45033, at most.
const MAX_RETRIES: u32 = 3;

/// A corp and one of its secrets (each secret has its own token).
#[derive(Clone)]
pub struct Credentials {
    pub corp_id: String,
    /// The app secret; for a corp authorised to a suite, its permanent code.
    pub secret: SecretString,
    /// Where the corp's access token comes from.
    pub source: TokenSource,
}

/// Where an access token comes from (the token kinds must never be mixed: WeCom answers 40014).
#[derive(Clone, Default)]
pub enum TokenSource {
    /// `gettoken` with `secret` as `corpsecret`: a self-built app's secret, or a 代开发 app's permanent code.
    #[default]
    Gettoken,
    /// `service/get_corp_token` with the suite's `suite_access_token` and `secret` as the permanent code: a
    /// corp authorised to a third-party suite.
    Suite {
        suite_id: String,
        suite_secret: SecretString,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("corp_id", &self.corp_id)
            .field("secret", &"<redacted>")
            .field(
                "source",
                &match &self.source {
                    TokenSource::Gettoken => "gettoken".to_owned(),
                    TokenSource::Suite { suite_id, .. } => format!("suite {suite_id}"),
                },
            )
            .finish()
    }
}

impl Credentials {
    /// A self-built app's (or a 代开发 app's) credentials: tokens from `gettoken`.
    pub fn gettoken(corp_id: impl Into<String>, secret: SecretString) -> Credentials {
        Credentials {
            corp_id: corp_id.into(),
            secret,
            source: TokenSource::Gettoken,
        }
    }

    /// The cache key for the secret: its SHA-256, never the secret itself. A suite corp's token is cached
    /// per (corp, suite): the suite id is hashed in.
    pub fn secret_hash(&self) -> String {
        match &self.source {
            TokenSource::Gettoken => {
                hex::encode(Sha256::digest(self.secret.expose_secret().as_bytes()))
            }
            TokenSource::Suite { suite_id, .. } => {
                let mut h = Sha256::new();
                h.update(b"get_corp_token\0");
                h.update(suite_id.as_bytes());
                h.update(b"\0");
                h.update(self.secret.expose_secret().as_bytes());
                hex::encode(h.finalize())
            }
        }
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
    /// Our configuration, not WeCom: the app has no secret to call the API with.
    #[error("no secret is configured for app {app:?} any more; configure it and retry the job")]
    NoSecret { app: String },
    /// A suite has no suite_ticket yet (or only one too old to use): nothing to fetch its token with.
    #[error(
        "{0}. WeCom pushes a suite_ticket to the suite's 指令回调URL every 10 minutes (valid 30); check that \
         the URL is verified and receives callbacks (/status), or push one now in the provider console \
         (服务商后台 → 应用 → 刷新Ticket). 还没有可用的 suite_ticket：企业微信每 10 分钟推送一次"
    )]
    NoSuiteTicket(String),
    /// The corp authorised no configured suite (or the permanent code cannot be read).
    #[error("{0}")]
    NotAuthorised(String),
    #[error("the token cache in PostgreSQL failed: {0}")]
    Database(#[from] sqlx::Error),
    /// Every concurrency slot of this corp's API stayed taken (by this or other replicas) for too long.
    #[error(
        "waited {waited:?} for one of the {concurrency} concurrent {api} calls allowed for corp {corp_id} \
         across every replica; retrying later (raise [api_limits] concurrency for it if WeCom allows more)"
    )]
    Throttled {
        corp_id: String,
        api: String,
        concurrency: u32,
        waited: Duration,
    },
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

/// What went wrong on the way, in words: reqwest's own text ("error sending request") names no cause.
fn transport_detail(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer within 10 s (timed out): WeCom or the network path is hanging"
            .to_owned();
    }
    // reqwest's own Display holds the URL, whose query holds the access_token: say the kind instead.
    let mut detail = if e.is_connect() {
        "cannot connect".to_owned()
    } else if e.is_body() || e.is_decode() {
        "the answer broke off".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    detail
}

/// The client. Cheap to clone.
#[derive(Clone)]
pub struct WecomApi {
    http: reqwest::Client,
    base: String,
    pool: PgPool,
    backoff: Duration,
    metrics: Option<Metrics>,
    limiter: Limiter,
}

impl WecomApi {
    /// A client for `base_url`, caching tokens in `pool`, with the default [`ApiLimits`] shared through it (see
    /// [`limiter`]; [`WecomApi::with_limits`] sets the configured ones).
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
            limiter: Limiter::new(pool.clone(), ApiLimits::default()),
            pool,
            backoff: Duration::from_millis(500),
            metrics: None,
        })
    }

    /// Limits calls per corp and API across every replica as `limits` says (`[api_limits]`).
    pub fn with_limits(mut self, limits: ApiLimits) -> WecomApi {
        self.limiter = Limiter::new(self.pool.clone(), limits);
        self
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
    async fn exchange<T, B>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> Result<T, ApiError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        Ok(self.exchange_fetched(path, query, body).await?.value)
    }

    /// One HTTP exchange, with the instant its request was sent.
    async fn exchange_fetched<T, B>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> Result<Fetched<T>, ApiError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        let url = format!("{}{}", self.base, path);
        let req = match body {
            Some(b) => self.http.post(&url).query(query).json(b),
            None => self.http.get(&url).query(query),
        };
        let at = Utc::now();
        let resp = req.send().await.map_err(|e| ApiError::Unreachable {
            base: self.base.clone(),
            detail: transport_detail(&e),
        })?;
        if !resp.status().is_success() {
            return Err(ApiError::HttpStatus(resp.status().as_u16()));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ApiError::BadResponse(e.without_url().to_string()))?;
        // Two steps: the envelope first (an error answer has none of the answer's fields), then the answer.
        let envelope: Envelope =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::BadResponse(e.to_string()))?;
        match envelope.errcode.unwrap_or(0) {
            0 => serde_json::from_slice(&bytes)
                .map(|value| Fetched { value, at })
                .map_err(|e| ApiError::BadResponse(format!("{path}: {e}"))),
            code => {
                if let Some(m) = &self.metrics {
                    m.api_errors.with_label_values(&[&code.to_string()]).inc();
                }
                Err(ApiError::Wecom(WecomError::new(
                    code,
                    envelope.errmsg.as_deref().unwrap_or(""),
                )))
            }
        }
    }

    /// An exchange retried with exponential backoff while WeCom says it is busy or rate-limiting. Every attempt
    /// waits for its turn under `corp_id`'s limits (see [`limiter`]); a 45033 / 45009 slows the corp down.
    async fn exchange_with_retries<T, B>(
        &self,
        corp_id: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> Result<Fetched<T>, ApiError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        let mut attempt = 0;
        loop {
            let permit = self.limiter.acquire(corp_id, path).await?;
            let answer = self.exchange_fetched(path, query, body).await;
            self.limiter.release(permit).await;
            if let Err(ApiError::Wecom(e)) = &answer {
                self.limiter.observed(corp_id, e.errcode).await;
            }
            match answer {
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
        let answer: AccessToken = self
            .exchange_with_retries(
                &creds.corp_id,
                "/cgi-bin/gettoken",
                &[
                    ("corpid", creds.corp_id.as_str()),
                    ("corpsecret", creds.secret.expose_secret()),
                ],
                NO_BODY,
            )
            .await?
            .value;
        let token = answer
            .access_token
            .ok_or_else(|| ApiError::BadResponse("gettoken without access_token".into()))?;
        let expires_in = answer.expires_in.unwrap_or(7200);
        tracing::info!(corp_id = %creds.corp_id, expires_in, "fetched a WeCom access token");
        if let Some(m) = &self.metrics {
            m.token_refreshes.inc();
        }
        Ok((token, expires_in))
    }

    /// A valid access token for these credentials: from the shared cache, or fetched once for every replica
    /// (a lease row decides who; nobody holds a database connection during the HTTP call).
    pub async fn access_token(&self, creds: &Credentials) -> Result<String, ApiError> {
        if let TokenSource::Suite {
            suite_id,
            suite_secret,
        } = &creds.source
        {
            return self.corp_token(creds, suite_id, suite_secret).await;
        }
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

    /// Calls an API with a token and decodes the answer as `T`. On 40014/42001 the token that was used is
    /// invalidated (only that one: another replica may have refreshed it already), fetched again once, and the
    /// call retried once.
    async fn call_json<T, B>(
        &self,
        creds: &Credentials,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> Result<T, ApiError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        Ok(self.call_fetched(creds, path, query, body).await?.value)
    }

    /// [`WecomApi::call_json`], with the instant the answered request was sent (see [`Fetched`]).
    async fn call_fetched<T, B>(
        &self,
        creds: &Credentials,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> Result<Fetched<T>, ApiError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        let mut refreshed = false;
        loop {
            let token = self.access_token(creds).await?;
            let mut q: Vec<(&str, &str)> = vec![("access_token", token.as_str())];
            q.extend_from_slice(query);
            match self
                .exchange_with_retries(&creds.corp_id, path, &q, body)
                .await
            {
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
}

impl WecomApi {
    /// Like `call_json`, but a rate-limit answer (45009, 45033, -1) comes back at once instead of being
    /// retried: for calls a client is waiting on.
    async fn call_json_once<T, B>(
        &self,
        creds: &Credentials,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ApiError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        let mut refreshed = false;
        loop {
            let token = self.access_token(creds).await?;
            let query = [("access_token", token.as_str())];
            let permit = self.limiter.acquire(&creds.corp_id, path).await?;
            let answer = self.exchange(path, &query, body).await;
            self.limiter.release(permit).await;
            match answer {
                Err(ApiError::Wecom(e)) if e.is_token_error() && !refreshed => {
                    tokens::invalidate(&self.pool, &creds.corp_id, &creds.secret_hash(), &token)
                        .await?;
                    refreshed = true;
                }
                Err(ApiError::Wecom(e)) => {
                    self.limiter.observed(&creds.corp_id, e.errcode).await;
                    return Err(ApiError::Wecom(e));
                }
                other => return other,
            }
        }
    }
}

/// For GET calls: no body.
const NO_BODY: Option<&EmptyRequest> = None;

/// Every answer's envelope. Read leniently, as before: no (or a non-integer) `errcode` means success.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default, deserialize_with = "de::opt_i64")]
    errcode: Option<i64>,
    #[serde(default, deserialize_with = "de::opt_str")]
    errmsg: Option<String>,
}

/// `{}`.
#[derive(Serialize)]
struct EmptyRequest {}
