//! The read-only JSON API over the synced tables (`/api/v1/...`), for services that prefer HTTP to SQL.
//! Enabled only when an API token is configured; every request must carry it as a bearer token.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::http::AppState;
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

fn error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": code, "message": message}))
}

/// Checks the bearer token in constant time. The 401 says nothing about why.
fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), HttpResponse> {
    let unauthorized = || {
        HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", "Bearer"))
            .json(json!({"error": "unauthorized"}))
    };
    let Some(expected) = state.api_token.as_ref() else {
        return Err(unauthorized());
    };
    let provided = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(
        provided
            .as_bytes()
            .ct_eq(expected.expose_secret().as_bytes()),
    ) {
        Ok(())
    } else {
        Err(unauthorized())
    }
}

fn limit(page: &Page) -> Result<i64, HttpResponse> {
    match page.limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if n >= 1 => Ok(n.min(MAX_LIMIT)),
        Some(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_limit",
            "limit must be at least 1",
        )),
    }
}

fn encode_cursor(raw: &str) -> String {
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode_cursor(cursor: Option<&str>) -> Result<Option<String>, HttpResponse> {
    cursor
        .map(|c| {
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    error(
                        StatusCode::BAD_REQUEST,
                        "bad_cursor",
                        "cursor is not one this API returned",
                    )
                })
        })
        .transpose()
}

fn unavailable(e: sqlx::Error) -> HttpResponse {
    tracing::error!(error = %e, "API query failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the database is unavailable; retry",
    )
}

/// `GET /api/v1/corps/{corp}/staff/{userid}/customers`: a staff member's customers (active by default).
pub async fn staff_customers(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    page: web::Query<Page>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = authorize(&req, &state) {
        return r;
    }
    let (corp, userid) = path.into_inner();
    let status = page.status.as_deref().unwrap_or("active");
    if !matches!(
        status,
        "active" | "pending" | "deleted_by_staff" | "deleted_by_customer" | "removed"
    ) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_status",
            "status must be active, pending, deleted_by_staff, deleted_by_customer or removed",
        );
    }
    let limit = match limit(&page) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let after = match decode_cursor(page.cursor.as_deref()) {
        Ok(a) => a,
        Err(r) => return r,
    };
    match read::staff_customers(&state.pool, &corp, &userid, status, after.as_deref(), limit).await
    {
        Ok(rows) => {
            let next = (rows.len() as i64 == limit)
                .then(|| rows.last().map(|r| encode_cursor(&r.external_userid)))
                .flatten();
            HttpResponse::Ok().json(json!({"data": rows, "next_cursor": next}))
        }
        Err(e) => unavailable(e),
    }
}

/// `GET /api/v1/corps/{corp}/customers/{external_userid}`: a customer and every follow relation.
pub async fn customer(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = authorize(&req, &state) {
        return r;
    }
    let (corp, external_userid) = path.into_inner();
    match read::customer(&state.pool, &corp, &external_userid).await {
        Ok(Some((contact, follows))) => {
            HttpResponse::Ok().json(json!({"contact": contact, "follows": follows}))
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such customer in this corp",
        ),
        Err(e) => unavailable(e),
    }
}

/// `GET /api/v1/corps/{corp}/customers/{external_userid}/timeline`: every applied change, oldest first.
pub async fn timeline(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    page: web::Query<Page>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = authorize(&req, &state) {
        return r;
    }
    let (corp, external_userid) = path.into_inner();
    let limit = match limit(&page) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let after = match decode_cursor(page.cursor.as_deref()) {
        Ok(None) => None,
        Ok(Some(raw)) => match parse_timeline_cursor(&raw) {
            Some(a) => Some(a),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_cursor",
                    "cursor is not one this API returned",
                );
            }
        },
        Err(r) => return r,
    };
    match read::timeline(&state.pool, &corp, &external_userid, after, limit).await {
        Ok(rows) => {
            let next = (rows.len() as i64 == limit)
                .then(|| {
                    rows.last().map(|e| {
                        encode_cursor(&format!("{}:{}", e.event_time.timestamp_micros(), e.id))
                    })
                })
                .flatten();
            HttpResponse::Ok().json(json!({"data": rows, "next_cursor": next}))
        }
        Err(e) => unavailable(e),
    }
}

fn parse_timeline_cursor(raw: &str) -> Option<(DateTime<Utc>, i64)> {
    let (t, id) = raw.split_once(':')?;
    let t = DateTime::from_timestamp_micros(t.parse().ok()?)?;
    Some((t, id.parse().ok()?))
}

/// `GET /api/v1/openapi.yaml`.
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
    req: HttpRequest,
    body: web::Json<SessionRequest>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = authorize(&req, &state) {
        return r;
    }
    let (Some(api), Some(creds)) = (&state.api, state.credentials.get(&body.app)) else {
        return error(
            StatusCode::BAD_REQUEST,
            "no_secret",
            "this app has no secret configured (WECOM_SECRET or secret in [[apps]]): it cannot call jscode2session",
        );
    };
    if body.code.is_empty() || body.code.len() > 512 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_code",
            "code must be the wx.qy.login code",
        );
    }
    match api.jscode2session(creds, &body.code).await {
        // The session_key stays in `session` and is dropped here.
        Ok(session) => {
            let (corpid, userid) = (session.corpid.as_str(), session.userid.as_str());
            if !corpid.is_empty() && corpid != creds.corp_id {
                tracing::warn!(app = %body.app, "jscode2session returned another corp");
                return error(
                    StatusCode::BAD_GATEWAY,
                    "cross_corp",
                    "the code belongs to another corp than this app's (a multi-corp mini-program must use that corp's app)",
                );
            }
            HttpResponse::Ok().json(json!({"corpid": corpid, "userid": userid}))
        }
        Err(crate::sync::client::ApiError::Wecom(e)) if e.errcode == 40029 => error(
            StatusCode::BAD_REQUEST,
            "invalid_code",
            "the code is wrong, already used, or older than 5 minutes: call wx.qy.login again",
        ),
        Err(crate::sync::client::ApiError::Wecom(e)) => {
            tracing::warn!(app = %body.app, errcode = e.errcode, error = %e, "jscode2session refused");
            HttpResponse::BadGateway().json(json!({
                "error": "wecom_refused",
                "errcode": e.errcode,
                "message": format!(
                    "{e} — the classic cause: the access_token must come from the secret of the app linked to the \
                     mini-program (app {:?} here), not another app's secret nor the mini-program's appid",
                    body.app
                ),
            }))
        }
        Err(e) => {
            tracing::warn!(error = %e, "jscode2session failed");
            error(StatusCode::BAD_GATEWAY, "wecom_unavailable", &e.to_string())
        }
    }
}
