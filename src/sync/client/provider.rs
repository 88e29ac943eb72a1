//! The service-provider endpoints (`/cgi-bin/service/…`): the suite's own `suite_access_token` (from its
//! newest suite_ticket), the permanent-code exchange, the authorisation info, and per-corp tokens. Tokens are
//! cached and refreshed single-flight across replicas exactly like `gettoken`'s ([`crate::store::tokens`]):
//! the suite token under (suite id, hash of the suite secret), a corp's under (corp, hash of suite and code).

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::types::{AccessToken, Jscode2Session};
use super::{ApiError, Credentials, REFRESH_MARGIN_SECS, WecomApi, de};
use crate::store::tokens::{self, RefreshError};

/// A suite_ticket this old is past its 30-minute life; WeCom will refuse it (40085).
pub const TICKET_LIFE_SECS: i64 = 30 * 60;

/// `service/get_permanent_code`: what an authorisation gave.
#[derive(Deserialize)]
pub struct PermanentCode {
    /// Never logged; sealed before it is stored.
    #[serde(default, deserialize_with = "de::opt_secret")]
    pub permanent_code: Option<SecretString>,
    #[serde(default)]
    pub auth_corp_info: AuthCorpInfo,
    /// `auth_info` (agents, privileges) as WeCom sent it.
    #[serde(default)]
    pub auth_info: serde_json::Value,
}

/// `auth_corp_info`: the authorising corp.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct AuthCorpInfo {
    #[serde(default, deserialize_with = "de::str_or_empty")]
    pub corpid: String,
    #[serde(default, deserialize_with = "de::opt_str")]
    pub corp_name: Option<String>,
}

/// `service/get_auth_info`.
#[derive(Deserialize)]
pub struct AuthInfo {
    #[serde(default)]
    pub auth_corp_info: AuthCorpInfo,
    #[serde(default)]
    pub auth_info: serde_json::Value,
}

/// The first agent id in an `auth_info` (the installed app).
pub fn agent_id(auth_info: &serde_json::Value) -> Option<i64> {
    auth_info
        .get("agent")?
        .as_array()?
        .first()?
        .get("agentid")?
        .as_i64()
}

#[derive(Deserialize)]
struct SuiteToken {
    #[serde(default, deserialize_with = "de::opt_str")]
    suite_access_token: Option<String>,
    #[serde(default, deserialize_with = "de::opt_i64")]
    expires_in: Option<i64>,
}

#[derive(Serialize)]
struct SuiteTokenRequest<'a> {
    suite_id: &'a str,
    suite_secret: &'a str,
    suite_ticket: &'a str,
}

#[derive(Serialize)]
struct AuthCodeRequest<'a> {
    auth_code: &'a str,
}

#[derive(Serialize)]
struct CorpRequest<'a> {
    auth_corpid: &'a str,
    permanent_code: &'a str,
}

/// Suite-token errors that a fresh suite token cures (40082 invalid, 42009 expired, 40014 wrong kind).
fn is_suite_token_error(errcode: i64) -> bool {
    matches!(errcode, 40014 | 40082 | 42009)
}

/// The cache key of a suite's `suite_access_token` (with the suite id as its "corp"): the SHA-256 of the
/// secret, never the secret.
pub fn suite_secret_hash(secret: &SecretString) -> String {
    let mut h = Sha256::new();
    h.update(b"suite_access_token\0");
    h.update(secret.expose_secret().as_bytes());
    hex::encode(h.finalize())
}

fn database(e: RefreshError<ApiError>) -> ApiError {
    match e {
        RefreshError::Database(e) => ApiError::Database(e),
        RefreshError::Fetch(e) => e,
    }
}

impl WecomApi {
    /// `service/get_suite_token` with the suite's newest suite_ticket. A missing or stale ticket is explained.
    async fn fetch_suite_token(
        &self,
        suite_id: &str,
        secret: &SecretString,
    ) -> Result<(String, i64), ApiError> {
        let Some(ticket) = crate::store::suites::ticket(&self.pool, suite_id).await? else {
            return Err(ApiError::NoSuiteTicket(format!(
                "no suite_ticket has arrived for suite {suite_id} yet"
            )));
        };
        let answer: Result<SuiteToken, ApiError> = self
            .exchange_with_retries(
                suite_id,
                "/cgi-bin/service/get_suite_token",
                &[],
                Some(&SuiteTokenRequest {
                    suite_id,
                    suite_secret: secret.expose_secret(),
                    suite_ticket: &ticket.ticket,
                }),
            )
            .await
            .map(|f| f.value);
        let answer = match answer {
            Err(ApiError::Wecom(e)) if e.errcode == 40085 => {
                return Err(ApiError::NoSuiteTicket(format!(
                    "WeCom refused suite {suite_id}'s newest suite_ticket (errcode 40085), received {} minutes \
                     ago{}",
                    ticket.age_secs / 60,
                    if ticket.age_secs > TICKET_LIFE_SECS {
                        ": older than its 30-minute life, so pushes stopped arriving"
                    } else {
                        ""
                    }
                )));
            }
            other => other?,
        };
        let token = answer.suite_access_token.ok_or_else(|| {
            ApiError::BadResponse("get_suite_token without suite_access_token".into())
        })?;
        let expires_in = answer.expires_in.unwrap_or(7200);
        tracing::info!(suite_id, expires_in, "fetched a suite_access_token");
        if let Some(m) = &self.metrics {
            m.token_refreshes.inc();
        }
        Ok((token, expires_in))
    }

    /// A valid `suite_access_token`, shared by every replica (fetched once, refreshed before expiry).
    pub async fn suite_access_token(
        &self,
        suite_id: &str,
        secret: &SecretString,
    ) -> Result<String, ApiError> {
        let hash = suite_secret_hash(secret);
        if let Some(t) = tokens::cached(&self.pool, suite_id, &hash, REFRESH_MARGIN_SECS).await? {
            return Ok(t);
        }
        tokens::refresh(&self.pool, suite_id, &hash, REFRESH_MARGIN_SECS, || {
            self.fetch_suite_token(suite_id, secret)
        })
        .await
        .map_err(database)
    }

    /// Calls a `service/…` API with the suite token; a refused suite token is refetched once.
    async fn suite_call<T, B>(
        &self,
        suite_id: &str,
        secret: &SecretString,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> Result<T, ApiError>
    where
        T: DeserializeOwned,
        B: Serialize + ?Sized,
    {
        let mut refreshed = false;
        loop {
            let token = self.suite_access_token(suite_id, secret).await?;
            let mut q: Vec<(&str, &str)> = vec![("suite_access_token", token.as_str())];
            q.extend_from_slice(query);
            match self
                .exchange_with_retries(suite_id, path, &q, body)
                .await
                .map(|f| f.value)
            {
                Err(ApiError::Wecom(e)) if is_suite_token_error(e.errcode) && !refreshed => {
                    tracing::warn!(
                        errcode = e.errcode,
                        path,
                        "suite_access_token refused; fetching a new one"
                    );
                    tokens::invalidate(&self.pool, suite_id, &suite_secret_hash(secret), &token)
                        .await?;
                    refreshed = true;
                }
                other => return other,
            }
        }
    }

    /// `service/get_permanent_code`: exchanges a one-time AuthCode (10 minutes) for the corp's permanent
    /// code and authorisation info. 40078: the code expired or was used.
    pub async fn get_permanent_code(
        &self,
        suite_id: &str,
        secret: &SecretString,
        auth_code: &SecretString,
    ) -> Result<PermanentCode, ApiError> {
        self.suite_call(
            suite_id,
            secret,
            "/cgi-bin/service/get_permanent_code",
            &[],
            Some(&AuthCodeRequest {
                auth_code: auth_code.expose_secret(),
            }),
        )
        .await
    }

    /// `service/get_auth_info`: the corp's current authorisation (after `change_auth`).
    pub async fn get_auth_info(
        &self,
        suite_id: &str,
        secret: &SecretString,
        corp_id: &str,
        permanent_code: &SecretString,
    ) -> Result<AuthInfo, ApiError> {
        self.suite_call(
            suite_id,
            secret,
            "/cgi-bin/service/get_auth_info",
            &[],
            Some(&CorpRequest {
                auth_corpid: corp_id,
                permanent_code: permanent_code.expose_secret(),
            }),
        )
        .await
    }

    async fn fetch_corp_token(
        &self,
        creds: &Credentials,
        suite_id: &str,
        secret: &SecretString,
    ) -> Result<(String, i64), ApiError> {
        let answer: AccessToken = self
            .suite_call(
                suite_id,
                secret,
                "/cgi-bin/service/get_corp_token",
                &[],
                Some(&CorpRequest {
                    auth_corpid: &creds.corp_id,
                    permanent_code: creds.secret.expose_secret(),
                }),
            )
            .await?;
        let token = answer
            .access_token
            .ok_or_else(|| ApiError::BadResponse("get_corp_token without access_token".into()))?;
        let expires_in = answer.expires_in.unwrap_or(7200);
        tracing::info!(corp_id = %creds.corp_id, suite_id, expires_in, "fetched an authorised corp's access token");
        if let Some(m) = &self.metrics {
            m.token_refreshes.inc();
        }
        Ok((token, expires_in))
    }

    /// A third-party corp's access token (`service/get_corp_token`), cached per (corp, suite).
    pub(super) async fn corp_token(
        &self,
        creds: &Credentials,
        suite_id: &str,
        secret: &SecretString,
    ) -> Result<String, ApiError> {
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
            || self.fetch_corp_token(creds, suite_id, secret),
        )
        .await
        .map_err(database)
    }

    /// `service/miniprogram/jscode2session`: a third-party mini-program's login, with the suite token.
    pub async fn suite_jscode2session(
        &self,
        suite_id: &str,
        secret: &SecretString,
        code: &str,
    ) -> Result<Jscode2Session, ApiError> {
        self.suite_call(
            suite_id,
            secret,
            "/cgi-bin/service/miniprogram/jscode2session",
            &[("js_code", code), ("grant_type", "authorization_code")],
            super::NO_BODY,
        )
        .await
    }
}
