//! The read-only JSON API over the synced tables (`/api/v1/...`), for services that prefer HTTP to SQL.
//! Enabled only when an API token is configured; every request must carry it as a bearer token.

use actix_web::{HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::FollowStatus;
use crate::http::AppState;
use crate::http::auth::BearerAuth;
use crate::http::error::ApiError;
use crate::store::read;

/// The OpenAPI document describing this API.
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

/// Default and largest page sizes.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

/// Query parameters shared by the list endpoints.
#[derive(Debug, Deserialize)]
pub struct Page {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    pub status: Option<String>,
}

pub(crate) fn limit(page: &Page) -> Result<i64, ApiError> {
    match page.limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if n >= 1 => Ok(n.min(MAX_LIMIT)),
        Some(_) => Err(ApiError::BadLimit),
    }
}

pub(crate) fn encode_cursor(raw: &str) -> String {
    URL_SAFE_NO_PAD.encode(raw)
}

pub(crate) fn decode_cursor(cursor: Option<&str>) -> Result<Option<String>, ApiError> {
    cursor
        .map(|c| {
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or(ApiError::BadCursor)
        })
        .transpose()
}

/// `GET /api/v1/corps/{corp}/staff/{userid}/customers`: a staff member's customers (active by default).
pub async fn staff_customers(
    _: BearerAuth,
    path: web::Path<(String, String)>,
    page: web::Query<Page>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (corp, userid) = path.into_inner();
    let status = match page.status.as_deref() {
        None => FollowStatus::Active,
        Some(s) => s.parse().map_err(|_| ApiError::BadStatus)?,
    };
    let limit = limit(&page)?;
    let after = decode_cursor(page.cursor.as_deref())?;
    let mut rows =
        read::staff_customers(&state.pool, &corp, &userid, status, after.as_deref(), limit).await?;
    // A member who left follows nobody any more, whatever the follows say until the transfer.
    let staff = crate::http::directory::staff_json(&state.pool, &corp, &userid).await?;
    let left = staff.as_ref().and_then(|s| s["status"].as_str()) == Some("left");
    if left && status == FollowStatus::Active {
        rows.clear();
    }
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| encode_cursor(&r.external_userid)))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({"data": rows, "next_cursor": next, "staff": staff})))
}

/// `GET /api/v1/corps/{corp}/customers/{external_userid}`: a customer and every follow relation.
pub async fn customer(
    _: BearerAuth,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (corp, external_userid) = path.into_inner();
    let (contact, follows) = read::customer(&state.pool, &corp, &external_userid)
        .await?
        .ok_or(ApiError::CustomerNotFound)?;
    Ok(HttpResponse::Ok().json(json!({"contact": contact, "follows": follows})))
}

/// `GET /api/v1/corps/{corp}/customers/{external_userid}/timeline`: every applied change, oldest first.
pub async fn timeline(
    _: BearerAuth,
    path: web::Path<(String, String)>,
    page: web::Query<Page>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (corp, external_userid) = path.into_inner();
    let limit = limit(&page)?;
    let after = decode_cursor(page.cursor.as_deref())?
        .map(|raw| parse_timeline_cursor(&raw).ok_or(ApiError::BadCursor))
        .transpose()?;
    let rows = read::timeline(&state.pool, &corp, &external_userid, after, limit).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| {
            rows.last()
                .map(|e| encode_cursor(&format!("{}:{}", e.event_time.timestamp_micros(), e.id)))
        })
        .flatten();
    Ok(HttpResponse::Ok().json(json!({"data": rows, "next_cursor": next})))
}

fn parse_timeline_cursor(raw: &str) -> Option<(DateTime<Utc>, i64)> {
    let (t, id) = raw.split_once(':')?;
    let t = DateTime::from_timestamp_micros(t.parse().ok()?)?;
    Some((t, id.parse().ok()?))
}

/// `GET /api/v1/openapi.yaml` (public: it holds no data).
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/yaml")
        .body(OPENAPI_YAML)
}

/// Body of `POST /api/v1/miniprogram/session`.
#[derive(Debug, Deserialize)]
pub struct SessionRequest {
    /// The configured app linked to the mini-program (its secret signs the exchange).
    pub app: String,
    /// The code from `wx.qy.login` (valid five minutes, once).
    pub code: String,
}

/// `POST /api/v1/miniprogram/session`: exchanges a `wx.qy.login` code through `miniprogram/jscode2session`
/// and returns the corp and user. The session_key stays here: it must never reach a client.
pub async fn miniprogram_session(
    _: BearerAuth,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // Parsed here rather than by actix's extractor, whose refusals are plain text.
    let body: SessionRequest = serde_json::from_slice(&raw).map_err(|e| {
        ApiError::BadBody(format!(
            "the body must be JSON {{\"app\": \"<configured app>\", \"code\": \"<wx.qy.login code>\"}}: {e}"
        ))
    })?;
    if let Some(suite) = state
        .suites
        .iter()
        .find(|s| s.name == body.app && s.kind == crate::sync::provider::SuiteKind::ThirdParty)
    {
        return suite_session(&state, suite, &body).await;
    }
    let (Some(api), Some(creds)) = (&state.api, state.credentials.get(&body.app)) else {
        return Err(ApiError::NoSecret);
    };
    if body.code.is_empty() || body.code.len() > 512 {
        return Err(ApiError::MalformedCode);
    }
    match api.jscode2session(creds, &body.code).await {
        // The session_key stays in `session` and is dropped here.
        Ok(session) => {
            let (corpid, userid) = (session.corpid.as_str(), session.userid.as_str());
            if !corpid.is_empty() && corpid != creds.corp_id {
                tracing::warn!(app = %body.app, "jscode2session returned another corp");
                return Err(ApiError::CrossCorp);
            }
            // The directory's view of the member, when it knows them (null fields otherwise).
            // The login itself succeeded: a directory lookup failure only leaves the staff fields null.
            let staff = crate::http::directory::staff_json(&state.pool, &creds.corp_id, userid)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "staff lookup for the mini-program session failed");
                    None
                });
            let field = |k: &str| staff.as_ref().map(|s| s[k].clone()).unwrap_or(Value::Null);
            Ok(HttpResponse::Ok().json(json!({
                "corpid": corpid, "userid": userid,
                "name": field("name"), "departments": field("departments"), "status": field("status"),
            })))
        }
        Err(crate::sync::client::ApiError::Wecom(e)) if e.errcode == 40029 => {
            Err(ApiError::CodeRefused)
        }
        Err(crate::sync::client::ApiError::Wecom(e)) => {
            tracing::warn!(app = %body.app, errcode = e.errcode, error = %e, "jscode2session refused");
            Err(ApiError::WecomRefused {
                errcode: e.errcode,
                message: format!("{e}{}", miniprogram_hint(e.errcode, &body.app)),
            })
        }
        Err(e) => {
            tracing::warn!(error = %e, "jscode2session failed");
            Err(ApiError::WecomUnavailable(e.to_string()))
        }
    }
}

/// A third-party suite's mini-program login (`app` is the `[[suites]]` name): `service/miniprogram/jscode2session`
/// with the suite token, for any corp that authorised the suite; no per-corp configuration. The answer names
/// the corp, which must be an authorised one.
async fn suite_session(
    state: &AppState,
    suite: &crate::sync::provider::Suite,
    body: &SessionRequest,
) -> Result<HttpResponse, ApiError> {
    let Some(api) = &state.api else {
        return Err(ApiError::NoSecret);
    };
    if body.code.is_empty() || body.code.len() > 512 {
        return Err(ApiError::MalformedCode);
    }
    let session = match api
        .suite_jscode2session(&suite.suite_id, &suite.secret, &body.code)
        .await
    {
        // The session_key stays in `session` and is dropped here.
        Ok(session) => session,
        Err(crate::sync::client::ApiError::Wecom(e)) if e.errcode == 40029 => {
            return Err(ApiError::CodeRefused);
        }
        Err(crate::sync::client::ApiError::Wecom(e)) => {
            tracing::warn!(app = %body.app, errcode = e.errcode, error = %e, "service/miniprogram/jscode2session refused");
            return Err(ApiError::WecomRefused {
                errcode: e.errcode,
                message: format!("{e}{}", suite_miniprogram_hint(e.errcode, &body.app)),
            });
        }
        Err(e) => {
            tracing::warn!(app = %body.app, error = %e, "service/miniprogram/jscode2session failed");
            return Err(ApiError::WecomUnavailable(e.to_string()));
        }
    };
    let (corpid, userid) = (session.corpid.as_str(), session.userid.as_str());
    let authorised = if corpid.is_empty() {
        false
    } else {
        crate::store::corps::get(&state.pool, &suite.suite_id, corpid)
            .await?
            .is_some_and(|c| c.state == crate::domain::CorpState::Authorised)
    };
    if !authorised {
        tracing::warn!(app = %body.app, "a suite mini-program login from a corp that has not authorised the suite");
        return Err(ApiError::CorpNotAuthorised(format!(
            "the code belongs to corp {corpid:?}, which has not authorised suite {:?} (or cancelled its \
             authorisation): the corp's admin must install the app first; see `wecom-callback corps` \
             (该企业未授权此第三方应用或已取消授权，请企业管理员先安装应用)",
            body.app
        )));
    }
    let staff = crate::http::directory::staff_json(&state.pool, corpid, userid)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "staff lookup for the mini-program session failed");
            None
        });
    let field = |k: &str| staff.as_ref().map(|s| s[k].clone()).unwrap_or(Value::Null);
    Ok(HttpResponse::Ok().json(json!({
        "corpid": corpid, "userid": userid, "open_userid": session.open_userid,
        "name": field("name"), "departments": field("departments"), "status": field("status"),
    })))
}

/// What `service/miniprogram/jscode2session`'s errcode means for a third-party suite's login.
pub fn suite_miniprogram_hint(errcode: i64, app: &str) -> String {
    match errcode {
        40001 | 40014 | 42001 | 40082 | 40083 | 40084 => format!(
            " — the suite token of [[suites]] {app:?} was refused: check its suite_id and suite_secret \
             (`wecom-callback doctor` checks each suite); 请检查第三方应用的 SuiteID 与 Secret"
        ),
        40085 => " — the suite_ticket is stale: WeCom re-pushes one within 10 minutes, or push one now with \
                  刷新Ticket in the provider console"
            .to_owned(),
        48002 | 50001 | 50002 | 40091 => format!(
            " — the mini-program is not linked to suite {app:?}: link it to the third-party app in the \
             provider console (服务商后台 → 应用 → 关联小程序)"
        ),
        _ => String::new(),
    }
}

/// What jscode2session's errcode means for a mini-program login, beyond the errcode's general fix: only the
/// codes whose usual cause is the app/mini-program link get that advice.
pub fn miniprogram_hint(errcode: i64, app: &str) -> String {
    match errcode {
        40001 | 40014 | 42001 | 40091 => format!(
            " — for a mini-program login the token must come from the secret of the app linked to the \
             mini-program (app {app:?} here), not another app's secret nor the mini-program's own AppSecret"
        ),
        48002 | 50001 | 50002 => format!(
            " — app {app:?} is not the app linked to the mini-program: link it under 应用管理 → the app → \
             关联小程序, or configure the linked app's secret"
        ),
        _ => String::new(),
    }
}
