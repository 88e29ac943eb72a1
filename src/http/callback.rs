//! `GET /callback[/{app}]` (URL verification) and `POST /callback[/{app}]` (callbacks): resolve the app,
//! parse the query, read the body, verify, hand to [`Ingest::accept`](crate::ingest::Ingest::accept), reply.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use tracing::Instrument;

use crate::app::AppConfig;
use crate::http::AppState;
use crate::http::error::CallbackError;
use crate::ingest::{Ack, Arrival, Outcome, RawCallback};
use crate::wecom::verify::{self, Rejection};

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn request_span(app: &str) -> tracing::Span {
    tracing::info_span!("callback", request_id = %uuid::Uuid::new_v4(), app)
}

/// The app a request is for: the one named in the path, or at `/callback` the only one configured.
fn resolve<'a>(req: &HttpRequest, state: &'a AppState) -> Result<&'a AppConfig, CallbackError> {
    match req.match_info().get("app") {
        Some(name) => state.app(name).ok_or_else(|| {
            request_span(name).in_scope(|| {
                tracing::warn!(
                    app = name,
                    class = Outcome::UnknownApp.as_str(),
                    "callback for an app that is not configured"
                );
            });
            CallbackError::UnknownApp
        }),
        None => state.default_app().ok_or(CallbackError::SeveralApps),
    }
}

/// `GET /callback/{app}` and `GET /callback`: WeCom's URL verification (answer the decrypted echostr, bare).
pub async fn verify_url(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, CallbackError> {
    let app = resolve(&req, &state)?;
    request_span(&app.name).in_scope(|| {
        let verified = verify::parse_query(req.query_string(), true)
            .map_err(Rejection::from)
            .and_then(|q| {
                verify::verify_url(
                    app,
                    &q,
                    unix_now(),
                    state.http.timestamp_tolerance.as_secs(),
                )
            });
        match verified {
            Ok(echo) => {
                state.metrics.outcome(&app.name, Outcome::UrlVerified);
                state.status.outcome(&app.name, Outcome::UrlVerified);
                state
                    .status
                    .verification(&app.name, Outcome::UrlVerified, None, None);
                tracing::info!("URL verification passed");
                // Exactly the plaintext: no quotes, newline or BOM (docs/protocol.md §2.3).
                Ok(HttpResponse::Ok()
                    .content_type("text/plain")
                    .body(echo.plaintext().to_vec()))
            }
            Err(r) => {
                let e = CallbackError::from(r);
                let diagnose = capture(&req, app, None, &e, &state);
                state.metrics.outcome(&app.name, e.outcome());
                state.status.outcome(&app.name, e.outcome());
                state
                    .status
                    .verification(&app.name, e.outcome(), e.wecom_code(), Some(e.reason()));
                e.log(&app.name, diagnose.as_deref());
                Err(e)
            }
        }
    })
}

/// `POST /callback/{app}` and `POST /callback`: verify, decrypt, store, then answer.
pub async fn receive_callback(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, CallbackError> {
    let arrived = Arrival::now();
    let app = resolve(&req, &state).inspect_err(|e| {
        if matches!(e, CallbackError::UnknownApp) {
            state.metrics.outcome("-", Outcome::UnknownApp);
            state.status.outcome("-", Outcome::UnknownApp);
        }
    })?;
    let result = async {
        let mut body = None;
        let acked = receive(&req, app, payload, &state, arrived, &mut body).await;
        if let Err(e) = &acked {
            let diagnose = capture(&req, app, body.as_deref(), e, &state);
            e.log(&app.name, diagnose.as_deref());
        }
        acked
    }
    .instrument(request_span(&app.name))
    .await;
    let outcome = match &result {
        Ok(ack) => ack.outcome(),
        Err(e) => e.outcome(),
    };
    state.metrics.outcome(&app.name, outcome);
    state.status.outcome(&app.name, outcome);
    state
        .metrics
        .latency
        .with_label_values(&[&app.name, "POST"])
        .observe(arrived.elapsed().as_secs_f64());
    result?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(app.kind.success_body()))
}

async fn receive(
    req: &HttpRequest,
    app: &AppConfig,
    payload: web::Payload,
    state: &AppState,
    arrived: Arrival,
    read: &mut Option<Vec<u8>>,
) -> Result<Ack, CallbackError> {
    let query = verify::parse_query(req.query_string(), false).map_err(Rejection::from)?;
    let body: &[u8] = read.insert(
        read_body(
            req,
            payload,
            state.http.max_body_bytes,
            state.http.body_read_timeout,
        )
        .await?,
    );
    let (now, tolerance) = (unix_now(), state.http.timestamp_tolerance.as_secs());
    let suite = state
        .suites
        .iter()
        .find(|s| s.data_apps.contains(&app.name));
    let verified = match suite {
        None => verify::verify_callback(app, query, body, now, tolerance)?,
        // A suite's data callback URL: the authorising corps are receive ids too.
        Some(suite) => {
            let corps = state
                .suite_corps
                .get(&state.pool, &suite.suite_id, false)
                .await;
            match verify::verify_callback_for(app, query.clone(), body, now, tolerance, &corps) {
                Err(e) if e.is_receive_id_mismatch() => {
                    // Perhaps a corp that authorised since the list was read.
                    let corps = state
                        .suite_corps
                        .get(&state.pool, &suite.suite_id, true)
                        .await;
                    verify::verify_callback_for(app, query, body, now, tolerance, &corps)?
                }
                other => other?,
            }
        }
    };
    tracing::debug!(message = %verified.raw_message(), "decrypted");
    let raw = RawCallback {
        app: &app.name,
        query: req.query_string(),
        body,
    };
    Ok(state
        .ingest
        .accept_for(app.kind, &verified, raw, arrived)
        .await?)
}

/// Keeps a refused request for `decrypt --last` (written off the request's thread) when captures are on and
/// `decrypt` can explain the refusal; returns the command to run, for the log line.
fn capture(
    req: &HttpRequest,
    app: &AppConfig,
    body: Option<&[u8]>,
    e: &CallbackError,
    state: &AppState,
) -> Option<String> {
    let captures = state.captures.as_ref().filter(|_| e.capturable())?;
    let capture = crate::tools::capture::Capture {
        app: app.name.clone(),
        at: chrono::Utc::now(),
        method: req.method().to_string(),
        path: req.path().to_owned(),
        query: req.query_string().to_owned(),
        headers: crate::tools::capture::Capture::kept_headers(
            req.headers()
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes())),
        ),
        body: body.map(|b| String::from_utf8_lossy(b).into_owned()),
        class: e.outcome().as_str().to_owned(),
        reason: e.reason(),
    };
    let captures = captures.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = captures.write(&capture) {
            tracing::warn!(error = %e, dir = %captures.dir().display(), "cannot keep the refused request");
        }
    });
    Some(format!("wecom-callback decrypt --last --app {}", app.name))
}

/// Reads the body under a size cap and a time limit. actix has no body timer of its own, and a client that
/// trickles bytes must not hold a worker for longer than WeCom would wait anyway.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, CallbackError> {
    if let Some(len) = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        // Refuse before reading a byte.
        if len > limit as u64 {
            return Err(CallbackError::TooLarge { limit });
        }
    }
    let read = async {
        let mut body = Vec::with_capacity(1024);
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|_| CallbackError::BodyUnreadable)?;
            if body.len() + chunk.len() > limit {
                return Err(CallbackError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(CallbackError::BodyTimeout))
}
