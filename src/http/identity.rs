//! Customer identity (issue 13): `POST /api/v1/corps/{corp}/customers/by-unionid` answers the
//! `external_userid` a WeChat `unionid` is in the corp, or the `pending_id` WeCom hands out while the person is
//! not a customer yet. Answers are cached in PostgreSQL with their expiry ([`crate::store::identity`]), so a
//! unionid is converted at most once while its answer is valid.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use crate::app::AppConfig;
use crate::http::AppState;
use crate::http::auth::BearerAuth;
use crate::http::error::ApiError;
use crate::store::identity;
use crate::sync::client::{ApiError as WecomApiError, Credentials};

/// What 45009 means for a conversion, and what to do.
pub const QUOTA_EXPLANATION: &str = "WeCom refused the conversion with errcode 45009 (接口调用超过限制): the corp's \
     unionid conversion quota (100,000 conversions an hour per corp, shared with every other provider and app \
     converting for it) is used up. Nothing is wrong with this request: ask again after the hour; answers \
     already given are cached here and do not count. If it recurs, look for another service converting the \
     same corp's unionids in a loop.";

/// Longest unionid / openid accepted (WeChat's are 28-ish characters).
const MAX_ID_LEN: usize = 128;

/// Body of `POST /api/v1/corps/{corp}/customers/by-unionid`.
#[derive(Debug, Deserialize)]
pub struct ByUnionidRequest {
    /// The WeChat unionid (from the mini-program's or official account's login).
    pub unionid: String,
    /// The openid that came with it, in the mini-program or official account bound to the corp.
    pub openid: String,
    /// 0 (default): the mini-program's subject is the corp's; 1: a 上下游 / group subject.
    #[serde(default)]
    pub subject_type: Option<u8>,
    /// The app to convert with; default: the first (by name) of the corp's apps with a secret.
    #[serde(default)]
    pub app: Option<String>,
}

/// `POST /api/v1/corps/{corp}/customers/by-unionid`: the cached answer while valid, else one conversion.
pub async fn by_unionid(
    _: BearerAuth,
    path: web::Path<String>,
    body: web::Json<ByUnionidRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let corp = path.into_inner();
    let body = body.into_inner();
    for (value, problem) in [
        (
            &body.unionid,
            "unionid must be the WeChat unionid (1 to 128 characters)",
        ),
        (
            &body.openid,
            "openid must be the openid that came with the unionid (1 to 128 characters)",
        ),
    ] {
        if value.trim().is_empty() || value.len() > MAX_ID_LEN {
            return Err(ApiError::BadIdentityRequest(problem));
        }
    }
    if body.subject_type.is_some_and(|t| t > 1) {
        return Err(ApiError::BadIdentityRequest(
            "subject_type must be 0 (the corp's own subject) or 1 (上下游 / group subject)",
        ));
    }
    let now = chrono::Utc::now();
    if let Some(hit) = identity::cached(&state.pool, &corp, &body.unionid, now).await? {
        return Ok(HttpResponse::Ok().json(answer(&hit, true)));
    }
    let (app, creds) = converting_app(&state, &corp, body.app.as_deref())?;
    let Some(api) = &state.api else {
        return Err(ApiError::NoCorpApp(corp));
    };
    let converted = match api
        .unionid_to_external_userid(
            creds,
            app.kind,
            &body.unionid,
            &body.openid,
            body.subject_type,
        )
        .await
    {
        Ok(c) => c,
        Err(WecomApiError::Wecom(e)) if e.errcode == 45009 => {
            tracing::warn!(corp_id = %corp, app = %app.name, "unionid conversion quota used up (45009)");
            return Err(ApiError::WecomQuota(QUOTA_EXPLANATION.to_owned()));
        }
        Err(WecomApiError::Wecom(e)) => {
            tracing::warn!(corp_id = %corp, app = %app.name, errcode = e.errcode, error = %e, "unionid conversion refused");
            return Err(ApiError::WecomRefused {
                errcode: e.errcode,
                message: format!(
                    "{e} — a conversion needs the app (here {:?}, kind {}) to have 客户联系 permission, and the \
                     mini-program or official account the unionid comes from to be bound to the corp's subject \
                     (or pass subject_type 1 for a 上下游 subject)",
                    app.name,
                    app.kind.as_str()
                ),
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "unionid conversion failed");
            return Err(ApiError::WecomUnavailable(e.to_string()));
        }
    };
    let stored = identity::record_conversion(
        &state.pool,
        &corp,
        &body.unionid,
        &body.openid,
        converted.external_userid.as_deref(),
        converted.pending_id.as_deref(),
        now,
    )
    .await?;
    Ok(HttpResponse::Ok().json(answer(&stored, false)))
}

/// The answer: the ids, where they came from, until when they hold, and whether this call spent quota.
fn answer(i: &identity::Identity, cached: bool) -> serde_json::Value {
    json!({
        "corp_id": i.corp_id,
        "unionid": i.unionid,
        "external_userid": i.external_userid,
        "pending_id": i.pending_id,
        "source": i.source,
        "checked_at": i.checked_at,
        "expires_at": i.expires_at,
        "resolved_at": i.resolved_at,
        "cached": cached,
    })
}

/// The app to convert with: the named one if it serves `corp` and has a secret, else the first by name.
fn converting_app<'a>(
    state: &'a AppState,
    corp: &str,
    wanted: Option<&str>,
) -> Result<(&'a AppConfig, &'a Credentials), ApiError> {
    let mut candidates: Vec<(&AppConfig, &Credentials)> = state
        .credentials
        .iter()
        .filter(|(name, c)| c.corp_id == corp && wanted.is_none_or(|w| w == name.as_str()))
        .filter_map(|(name, c)| Some((state.app(name)?, c)))
        .collect();
    candidates.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    candidates
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::NoCorpApp(corp.to_owned()))
}
