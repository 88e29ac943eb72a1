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
    /// The configured app linked to the mini-program (its secret signs the exchange), or a `[[suites]]`
    /// name.
    pub app: String,
    /// The code from `wx.qy.login` (valid five minutes, once).
    pub code: String,
    /// The corp the mini-program runs in: required for a 代开发 suite (its token is per corp), checked
    /// against WeCom's answer otherwise.
    #[serde(default)]
    pub corpid: Option<String>,
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
            "the body must be JSON {{\"app\": \"<configured app or [[suites]] name>\", \"code\": \"<wx.qy.login code>\", \
             \"corpid\": \"<the corp; required for a 代开发 template>\"}}: {e}"
        ))
    })?;
    if let Some(suite) = state.suites.iter().find(|s| s.name == body.app) {
        return match suite.kind {
            crate::sync::provider::SuiteKind::ThirdParty => {
                suite_session(&state, suite, &body).await
            }
            crate::sync::provider::SuiteKind::Agency => agency_session(&state, suite, &body).await,
        };
    }
    let Some(creds) = state.credentials.get(&body.app) else {
        return Err(ApiError::NoSecret);
    };
    session_with(&state, creds, &body, miniprogram_hint).await
}

/// `miniprogram/jscode2session` with `creds` (a self-built app's secret, or a 代开发 corp's permanent code),
/// the answer checked to be of `creds`' corp.
async fn session_with(
    state: &AppState,
    creds: &crate::sync::client::Credentials,
    body: &SessionRequest,
    hint: fn(i64, &str) -> String,
) -> Result<HttpResponse, ApiError> {
    let Some(api) = &state.api else {
        return Err(ApiError::NoSecret);
    };
    if body.code.is_empty() || body.code.len() > 512 {
        return Err(ApiError::MalformedCode);
    }
    match api.jscode2session(creds, &body.code).await {
        // The session_key stays in `session` and is dropped here.
        Ok(session) => {
            let (corpid, userid) = (session.corpid.as_str(), session.userid.as_str());
            let asked = body.corpid.as_deref().filter(|c| !c.is_empty());
            if (!corpid.is_empty() && corpid != creds.corp_id)
                || asked.is_some_and(|a| a != creds.corp_id)
            {
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
                message: format!("{e}{}", hint(e.errcode, &body.app)),
            })
        }
        Err(e) => {
            tracing::warn!(error = %e, "jscode2session failed");
            Err(ApiError::WecomUnavailable(e.to_string()))
        }
    }
}

/// A 代开发 app's mini-program login (`app` is the template's `[[suites]]` name, `corpid` the corp it is
/// installed in): `miniprogram/jscode2session` with that corp's own token (`gettoken` with its permanent code
/// as the secret), for any corp that authorised the template; no per-corp configuration.
async fn agency_session(
    state: &AppState,
    suite: &crate::sync::provider::Suite,
    body: &SessionRequest,
) -> Result<HttpResponse, ApiError> {
    let Some(corp_id) = body
        .corpid
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    else {
        return Err(ApiError::BadBody(format!(
            "{:?} is a 代开发 template: its login needs the corp the mini-program runs in, as \
             {{\"app\": {:?}, \"corpid\": \"<the corp's corpid>\", \"code\": \"<wx.qy.login code>\"}} \
             (`wecom-callback corps` lists the authorised corps); 代开发应用的小程序登录需要传入企业的 corpid",
            body.app, body.app
        )));
    };
    if corp_id.len() > 128 {
        return Err(ApiError::BadBody(
            "corpid must be a corpid (at most 128 characters)".to_owned(),
        ));
    }
    let corp = crate::store::corps::get(&state.pool, &suite.suite_id, corp_id)
        .await?
        .filter(|c| c.state == crate::domain::CorpState::Authorised);
    let Some(corp) = corp else {
        tracing::warn!(app = %body.app, "a 代开发 mini-program login for a corp that has not authorised the template");
        return Err(ApiError::CorpNotAuthorised(format!(
            "corp {corp_id:?} has not authorised 代开发 template {:?} (or cancelled its authorisation): the \
             corp's admin must install the app first; check the corpid against `wecom-callback corps` \
             (该企业未授权此代开发应用或已取消授权，请企业管理员先安装应用)",
            body.app
        )));
    };
    let code = state
        .provider_key
        .as_ref()
        .ok_or_else(|| {
            ApiError::WecomUnavailable(
                "no [provider] secret_key / WECOM_SECRET_KEY is configured to open the corp's permanent code"
                    .to_owned(),
            )
        })?
        .open(&corp.permanent_code)
        .map_err(|e| {
            tracing::warn!(app = %body.app, error = %e, "a 代开发 corp's permanent code does not open");
            ApiError::WecomUnavailable(format!(
                "corp {corp_id:?}'s permanent code cannot be opened: {e}"
            ))
        })?;
    // 代开发: the installed app's token comes from gettoken with the permanent code as its secret.
    let creds = crate::sync::client::Credentials::gettoken(corp.corp_id, code);
    session_with(state, &creds, body, agency_miniprogram_hint).await
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
    if body
        .corpid
        .as_deref()
        .is_some_and(|asked| !asked.is_empty() && asked != corpid)
    {
        tracing::warn!(app = %body.app, "service/miniprogram/jscode2session returned another corp than asked");
        return Err(ApiError::CrossCorp);
    }
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

/// What jscode2session's errcode means for a 代开发 app's mini-program login.
pub fn agency_miniprogram_hint(errcode: i64, app: &str) -> String {
    match errcode {
        40001 | 40014 | 42001 | 40091 => format!(
            " — gettoken refused the corp's permanent code for 代开发 template {app:?}: the code was reset \
             (a reset_permanent_code push the service missed) or the app was disabled; the corp's admin can \
             authorise again (`wecom-callback corps` shows the corp); 企业的永久授权码被拒绝"
        ),
        48002 | 50001 | 50002 => format!(
            " — the mini-program is not linked to the 代开发 app of template {app:?}: link it in the provider \
             console (服务商后台 → 代开发应用模板 → 关联小程序) and have the corp's app updated"
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

#[cfg(test)]
mod tests {
    /// Every route of the `/api/v1` scope (except the document itself) is a path of the OpenAPI document.
    #[test]
    fn the_openapi_document_describes_every_api_route() {
        let server = include_str!("server.rs");
        let start = server
            .find("web::scope(\"/api/v1\")")
            .expect("the API scope");
        let scope = &server[start..];
        let scope = &scope[..scope
            .find("App::new()")
            .expect("the scope ends before the app")];
        let mut routes = Vec::new();
        for piece in scope.split(".route(").skip(1) {
            let path = piece.trim_start().trim_start_matches('"');
            if let Some(end) = path.find('"') {
                routes.push(&path[..end]);
            }
        }
        assert!(routes.len() >= 9, "{routes:?}");
        for r in routes.into_iter().filter(|r| *r != "/openapi.yaml") {
            assert!(
                super::OPENAPI_YAML.contains(&format!("\n  {r}:\n")),
                "openapi.yaml has no path {r}"
            );
        }
    }
}
