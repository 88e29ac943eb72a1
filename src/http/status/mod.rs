//! The operator's view: `GET /status` (HTML, Chinese or English by `Accept-Language` or `?lang=`) and
//! `GET /status.json`, both behind the API token.
//!
//! A browser cannot send a bearer header, so the token is also accepted once as `?token=`: the answer sets it
//! as an HttpOnly, SameSite=Strict cookie and redirects to the same page without it, so the token does not stay
//! in the address bar or the history. Scripts send `Authorization: Bearer …` as for the read API.

pub mod advice;
pub mod recorder;
pub mod render;
pub mod report;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::http::AppState;

pub use advice::Lang;
pub use recorder::StatusRecorder;
pub use report::Report;

/// The cookie that carries the token after a `?token=` visit.
const COOKIE: &str = "wecom_status_token";

/// Query of the status pages.
#[derive(Debug, Deserialize)]
pub struct StatusQuery {
    token: Option<String>,
    lang: Option<String>,
}

/// `GET /status`: the page.
pub async fn page(
    req: HttpRequest,
    query: web::Query<StatusQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let lang = Lang::negotiate(
        query.lang.as_deref(),
        req.headers()
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    );
    if let Some(refusal) = authorize(&req, &query, &state, "/status", lang) {
        return refusal;
    }
    match gather(&state, lang).await {
        Ok(report) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(render::page(&report, lang)),
        Err(e) => unavailable(&e),
    }
}

/// `GET /status.json`: the same report as JSON (English fix texts).
pub async fn json(
    req: HttpRequest,
    query: web::Query<StatusQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Some(refusal) = authorize(&req, &query, &state, "/status.json", Lang::En) {
        return refusal;
    }
    match gather(&state, Lang::En).await {
        Ok(report) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(report),
        Err(e) => unavailable(&e),
    }
}

fn unavailable(e: &sqlx::Error) -> HttpResponse {
    tracing::warn!(error = %e, "status page: the database did not answer");
    HttpResponse::ServiceUnavailable()
        .content_type("text/plain; charset=utf-8")
        .body(format!(
            "the status page needs the database, which did not answer: {e}; run `wecom-callback doctor`"
        ))
}

async fn gather(state: &AppState, lang: Lang) -> Result<Report, sqlx::Error> {
    // What this replica counted but has not written yet, so the page is current.
    if let Err(e) = state.status.flush(&state.pool).await {
        tracing::debug!(error = %e, "status counts not flushed before the page");
    }
    let mut apps: Vec<_> = state.apps.values().collect();
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    let spool = state.ingest.spool().map(|s| report::SpoolStatus {
        dir: s.dir().to_path_buf(),
        bytes: s.bytes(),
        max_bytes: s.max_bytes(),
    });
    report::gather(
        &state.pool,
        &apps,
        &state.credentials,
        &state.suites,
        spool,
        lang,
    )
    .await
}

/// `None` when the request carries the token (header or cookie); otherwise the answer to send: the cookie and
/// a redirect for a right `?token=`, 404 when no token is configured, 401 else.
fn authorize(
    req: &HttpRequest,
    query: &StatusQuery,
    state: &AppState,
    path: &str,
    lang: Lang,
) -> Option<HttpResponse> {
    if state.api_token.is_none() {
        return Some(
            HttpResponse::NotFound()
                .content_type("text/plain; charset=utf-8")
                .body(
                    "the status page is off: set WECOM_API_TOKEN (or api_token in the file), restart, then \
                     open /status?token=<that token>",
                ),
        );
    }
    if let Some(token) = query.token.as_deref() {
        if !crate::http::auth::token_matches(state, token) {
            return Some(unauthorized(lang));
        }
        // Hex, so any token is a valid cookie value.
        let cookie = format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200",
            hex::encode(token)
        );
        let location = match query.lang.as_deref() {
            Some(l) if l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => {
                format!("{path}?lang={l}")
            }
            _ => path.to_owned(),
        };
        return Some(
            HttpResponse::SeeOther()
                .insert_header((header::SET_COOKIE, cookie))
                .insert_header((header::LOCATION, location))
                .finish(),
        );
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = cookie_token(req);
    let provided = bearer.or(cookie.as_deref());
    match provided {
        Some(p) if crate::http::auth::token_matches(state, p) => None,
        _ => Some(unauthorized(lang)),
    }
}

/// The token in the status cookie (hex-encoded by the redirect above).
fn cookie_token(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .and_then(|(_, value)| hex::decode(value).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

fn unauthorized(lang: Lang) -> HttpResponse {
    let body = match lang {
        Lang::En => {
            "401: open /status?token=<WECOM_API_TOKEN> once in this browser (a cookie keeps it), or send \
             Authorization: Bearer <token>."
        }
        Lang::Zh => {
            "401：请在浏览器中打开一次 /status?token=<WECOM_API_TOKEN>（之后由 cookie 保存），\
             或发送 Authorization: Bearer <token>。"
        }
    };
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
        .content_type("text/plain; charset=utf-8")
        .body(body)
}
