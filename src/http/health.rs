//! Liveness and readiness probes.

use actix_web::{HttpResponse, web};

use crate::http::AppState;

/// `GET /healthz`: the process is up and serving.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// `GET /readyz`: no critical background task has failed (see [`crate::tasks`]), the database answers and
/// every migration is applied, so callbacks can be stored.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if let Some(failure) = state.tasks.failure() {
        tracing::warn!(%failure, "not ready");
        return HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("not ready");
    }
    match crate::store::readiness(&state.pool).await {
        Ok(()) => HttpResponse::Ok().content_type("text/plain").body("ready"),
        Err(why) => {
            tracing::warn!(%why, "not ready");
            HttpResponse::ServiceUnavailable()
                .content_type("text/plain")
                .body("not ready")
        }
    }
}

/// `GET /metrics`: Prometheus text exposition; the database-derived gauges are computed now.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state
        .metrics
        .gather(&state.pool, state.ingest.spool())
        .await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// `GET /{file}`: a configured domain ownership file (WeCom's `WW_verify_*.txt`), so no other web server is
/// needed at the domain root.
pub async fn verification_file(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    match state.verification_files.get(path.as_str()) {
        Some(content) => HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(content.clone()),
        None => HttpResponse::NotFound()
            .content_type("text/plain")
            .body("not found"),
    }
}
