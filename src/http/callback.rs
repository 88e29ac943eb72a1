//! `GET /callback/{app}` (URL verification) and `POST /callback/{app}` (callbacks).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use tracing::Instrument;

use crate::app::AppConfig;
use crate::http::AppState;
use crate::ingest::spool::{SpoolError, SpooledRequest};
use crate::store::{NewEvent, StoreOutcome};
use crate::wecom::verify::{self, Rejection};

/// The one body for every authentication or decryption failure, so a prober learns nothing about which
/// step failed. The log line says which.
const REJECTED_BODY: &str = "forbidden: the request could not be verified";

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn text(status: StatusCode, body: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(body.into())
}

fn reject(app: &str, rejection: &Rejection) -> HttpResponse {
    match rejection {
        Rejection::Query(e) => {
            tracing::warn!(app, class = e.label(), reason = %e, "callback rejected");
            text(StatusCode::BAD_REQUEST, format!("bad request: {e}"))
        }
        Rejection::Envelope(e) => {
            tracing::warn!(app, class = e.label(), reason = %e, "callback rejected");
            text(StatusCode::BAD_REQUEST, format!("bad request: {e}"))
        }
        Rejection::Auth(e) => {
            tracing::warn!(
                app,
                class = e.label(),
                wecom_code = e.code(),
                reason = %e,
                "callback rejected"
            );
            text(StatusCode::FORBIDDEN, REJECTED_BODY)
        }
        Rejection::Message(e) => {
            // Only someone holding the key can get here, but keep the uniform answer anyway.
            tracing::warn!(app, class = "bad_message", reason = %e, "callback rejected");
            text(StatusCode::FORBIDDEN, REJECTED_BODY)
        }
    }
}

fn unknown_app(name: &str) -> HttpResponse {
    tracing::warn!(
        app = name,
        class = "unknown_app",
        "callback for an app that is not configured"
    );
    text(
        StatusCode::NOT_FOUND,
        "not found: no app is configured under this path",
    )
}

fn request_span(app: &str) -> tracing::Span {
    tracing::info_span!("callback", request_id = %uuid::Uuid::new_v4(), app)
}

/// `GET /callback/{app}`: WeCom's URL verification (answer the decrypted echostr, bare).
pub async fn verify_url(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let name = path.into_inner();
    let span = request_span(&name);
    match state.app(&name) {
        Some(app) => handle_verify(&req, app, &state).instrument(span).await,
        None => span.in_scope(|| unknown_app(&name)),
    }
}

/// `GET /callback`: URL verification for the only configured app.
pub async fn verify_default_url(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match state.default_app() {
        Some(app) => {
            let span = request_span(&app.name);
            handle_verify(&req, app, &state).instrument(span).await
        }
        None => text(
            StatusCode::NOT_FOUND,
            "not found: several apps are configured; use /callback/{app}",
        ),
    }
}

async fn handle_verify(req: &HttpRequest, app: &AppConfig, state: &AppState) -> HttpResponse {
    let outcome = verify::parse_query(req.query_string(), true)
        .map_err(Rejection::from)
        .and_then(|q| {
            verify::verify_url(
                app,
                &q,
                unix_now(),
                state.http.timestamp_tolerance.as_secs(),
            )
        });
    match outcome {
        Ok(echo) => {
            state.metrics.outcome(&app.name, "url_verified");
            tracing::info!("URL verification passed");
            // Exactly the plaintext: no quotes, newline or BOM (docs/protocol.md §2.3).
            HttpResponse::Ok()
                .content_type("text/plain")
                .body(echo.plaintext().to_vec())
        }
        Err(r) => {
            state.metrics.outcome(&app.name, r.label());
            reject(&app.name, &r)
        }
    }
}

/// `POST /callback/{app}`: verify, decrypt, store, then answer.
pub async fn receive_callback(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let name = path.into_inner();
    let span = request_span(&name);
    match state.app(&name) {
        Some(app) => {
            let started = Instant::now();
            let (response, outcome) = handle_callback(&req, app, payload, &state)
                .instrument(span)
                .await;
            record(&state, &app.name, "POST", outcome, started);
            response
        }
        None => {
            state.metrics.outcome("-", "unknown_app");
            span.in_scope(|| unknown_app(&name))
        }
    }
}

/// `POST /callback`: callbacks for the only configured app.
pub async fn receive_default_callback(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    match state.default_app() {
        Some(app) => {
            let span = request_span(&app.name);
            let started = Instant::now();
            let (response, outcome) = handle_callback(&req, app, payload, &state)
                .instrument(span)
                .await;
            record(&state, &app.name, "POST", outcome, started);
            response
        }
        None => text(
            StatusCode::NOT_FOUND,
            "not found: several apps are configured; use /callback/{app}",
        ),
    }
}

enum BodyError {
    TooLarge,
    TimedOut,
    Broken,
}

/// Reads the body under a size cap and a time limit. actix has no body timer of its own, and a client that
/// trickles bytes must not hold a worker for longer than WeCom would wait anyway.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, BodyError> {
    if let Some(len) = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        // Refuse before reading a byte.
        if len > limit as u64 {
            return Err(BodyError::TooLarge);
        }
    }
    let read = async {
        let mut body = Vec::with_capacity(1024);
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|_| BodyError::Broken)?;
            if body.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(BodyError::TimedOut))
}

async fn handle_callback(
    req: &HttpRequest,
    app: &AppConfig,
    payload: web::Payload,
    state: &AppState,
) -> (HttpResponse, &'static str) {
    let started = Instant::now();
    let deadline = started + state.http.request_deadline;
    let arrived_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);

    let query = match verify::parse_query(req.query_string(), false) {
        Ok(q) => q,
        Err(e) => {
            let r = Rejection::from(e);
            return (reject(&app.name, &r), r.label());
        }
    };

    let body = match read_body(
        req,
        payload,
        state.http.max_body_bytes,
        state.http.body_read_timeout,
    )
    .await
    {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            tracing::warn!(
                app = %app.name,
                class = "too_large",
                limit = state.http.max_body_bytes,
                "callback rejected: body over the limit (http.max_body_bytes)"
            );
            return (
                text(StatusCode::PAYLOAD_TOO_LARGE, "payload too large"),
                "too_large",
            );
        }
        Err(BodyError::TimedOut) => {
            tracing::warn!(app = %app.name, class = "body_timeout", "callback rejected: the body did not arrive in time");
            return (
                text(
                    StatusCode::REQUEST_TIMEOUT,
                    "request timeout: body too slow",
                ),
                "body_timeout",
            );
        }
        Err(BodyError::Broken) => {
            tracing::warn!(app = %app.name, class = "body_error", "callback rejected: the body could not be read");
            return (
                text(StatusCode::BAD_REQUEST, "bad request: unreadable body"),
                "body_error",
            );
        }
    };

    let verified = match verify::verify_callback(
        app,
        query,
        &body,
        unix_now(),
        state.http.timestamp_tolerance.as_secs(),
    ) {
        Ok(v) => v,
        Err(r) => return (reject(&app.name, &r), r.label()),
    };
    let event = NewEvent::from(&verified);
    tracing::debug!(message = %verified.raw_message(), "decrypted");

    if state.fault_ack_before_commit {
        // Test-only fault (see Settings): the bug the fault-injection checker must catch.
        let writer = state.writer.clone();
        tokio::spawn(async move { writer.write(event).await });
        return (text(StatusCode::OK, app.kind.success_body()), "stored");
    }

    // With a spool, give the database until `spool_after`, then spool: WeCom may never retry a 503.
    // A body that arrived slowly still gets a fair try at the database, and the spool keeps time to fsync.
    let db_deadline = match &state.spool {
        Some(_) => (started + state.spool_after)
            .max(Instant::now() + Duration::from_millis(500))
            .min(
                deadline
                    .checked_sub(Duration::from_millis(500))
                    .unwrap_or(deadline),
            ),
        None => deadline,
    };
    match store_until(state, event, db_deadline).await {
        Some(outcome) => {
            let label = match outcome {
                StoreOutcome::Stored => {
                    tracing::info!(
                        event = verified.message().event().unwrap_or("-"),
                        change_type = verified.message().change_type().unwrap_or("-"),
                        "callback stored"
                    );
                    // Stored like any other; counted apart so a new WeCom event type shows up on a dashboard.
                    match crate::wecom::events::interpret(verified.message()).kind {
                        crate::wecom::events::EventKind::Unknown { .. } => "unknown_type",
                        _ => "stored",
                    }
                }
                StoreOutcome::Duplicate => {
                    tracing::debug!("duplicate callback acknowledged");
                    "duplicate"
                }
            };
            (text(StatusCode::OK, app.kind.success_body()), label)
        }
        None => match &state.spool {
            Some(spool) => {
                let request = SpooledRequest {
                    app: app.name.clone(),
                    query: req.query_string().to_owned(),
                    // The envelope parsed, so the body is UTF-8.
                    body: String::from_utf8_lossy(&body).into_owned(),
                    received_at_us: arrived_us,
                };
                let remaining = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(remaining, spool.append(&request)).await {
                    Ok(Ok(())) => {
                        tracing::warn!(
                            class = "spooled",
                            spooled_bytes = spool.bytes(),
                            "database unavailable: callback fsynced to the spool and acknowledged; it is stored when the database is back"
                        );
                        (text(StatusCode::OK, app.kind.success_body()), "spooled")
                    }
                    Ok(Err(e)) => {
                        let class = match e {
                            SpoolError::Full { .. } => "spool_full",
                            _ => "spool_error",
                        };
                        tracing::error!(class, error = %e, "callback neither stored nor spooled; answered 503");
                        (unavailable(), class)
                    }
                    Err(_) => {
                        tracing::error!(
                            class = "spool_error",
                            "spooling took too long; answered 503"
                        );
                        (unavailable(), "spool_error")
                    }
                }
            }
            None => {
                tracing::error!(
                    class = "db_unavailable",
                    "callback not stored; answered 503 so WeCom may retry (no spool configured)"
                );
                (unavailable(), "db_unavailable")
            }
        },
    }
}

fn record(state: &AppState, app: &str, method: &str, outcome: &str, started: Instant) {
    state.metrics.outcome(app, outcome);
    state
        .metrics
        .latency
        .with_label_values(&[app, method])
        .observe(started.elapsed().as_secs_f64());
}

fn unavailable() -> HttpResponse {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "service unavailable: the event could not be stored; retry",
    )
}

/// Stores the event, retrying within the request's deadline. `None` means it was not committed in time:
/// the caller must not answer success.
async fn store_until(state: &AppState, event: NewEvent, deadline: Instant) -> Option<StoreOutcome> {
    let mut backoff = Duration::from_millis(50);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            tracing::warn!(class = "db_unavailable", "callback not committed in time");
            return None;
        }
        match tokio::time::timeout(remaining, state.writer.write(event.clone())).await {
            Ok(Ok(outcome)) => return Some(outcome),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "storing the callback failed; retrying");
                let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
                backoff = (backoff * 2).min(Duration::from_millis(800));
            }
            Err(_) => {
                tracing::warn!(class = "db_unavailable", "callback not committed in time");
                return None;
            }
        }
    }
}
