//! How refusals look over HTTP: [`CallbackError`] for `/callback` (plain text, as WeCom's console shows it)
//! and [`ApiError`] for the read API (JSON `{error, message}`). Handlers return them with `?`.

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, WWW_AUTHENTICATE};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::ingest::{IngestError, Outcome};
use crate::wecom::envelope::EnvelopeError;
use crate::wecom::verify::{AuthFailure, QueryError, Rejection};
use crate::wecom::xml::XmlError;

/// The one body for every authentication or decryption failure, so a prober learns nothing about which
/// step failed. The log line says which.
pub const REJECTED_BODY: &str = "forbidden: the request could not be verified";

/// Why a callback request (GET or POST `/callback...`) was not acknowledged. `Display` is the body sent.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// No app is configured under the path.
    #[error("not found: no app is configured under this path")]
    UnknownApp,
    /// `/callback` without an app name, but several apps are configured.
    #[error("not found: several apps are configured; use /callback/{{app}}")]
    SeveralApps,
    /// The query string was refused.
    #[error("bad request: {0}")]
    BadQuery(QueryError),
    /// The outer XML body was refused.
    #[error("bad request: {0}")]
    BadEnvelope(EnvelopeError),
    /// Signature, replay window, decryption or receive id: one uniform answer whichever step failed.
    #[error("{}", REJECTED_BODY)]
    Unverified(#[source] AuthFailure),
    /// Decrypted and authentic, but not XML we can read. Only a key holder gets here; still the uniform answer.
    #[error("{}", REJECTED_BODY)]
    BadMessage(#[source] XmlError),
    /// The body is over `http.max_body_bytes`.
    #[error("payload too large")]
    TooLarge {
        /// The configured cap.
        limit: usize,
    },
    /// The body did not arrive within `http.body_read_timeout`.
    #[error("request timeout: body too slow")]
    BodyTimeout,
    /// The body could not be read.
    #[error("bad request: unreadable body")]
    BodyUnreadable,
    /// Neither stored nor spooled in time: 503, so WeCom may retry.
    #[error("service unavailable: the event could not be stored; retry")]
    Unavailable(#[from] IngestError),
}

impl From<Rejection> for CallbackError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::Query(e) => CallbackError::BadQuery(e),
            Rejection::Envelope(e) => CallbackError::BadEnvelope(e),
            Rejection::Auth(e) => CallbackError::Unverified(e),
            Rejection::Message(e) => CallbackError::BadMessage(e),
        }
    }
}

impl CallbackError {
    /// The metric label.
    pub fn outcome(&self) -> Outcome {
        match self {
            CallbackError::UnknownApp | CallbackError::SeveralApps => Outcome::UnknownApp,
            CallbackError::BadQuery(e) => e.into(),
            CallbackError::BadEnvelope(e) => e.into(),
            CallbackError::Unverified(e) => e.into(),
            CallbackError::BadMessage(_) => Outcome::BadMessage,
            CallbackError::TooLarge { .. } => Outcome::TooLarge,
            CallbackError::BodyTimeout => Outcome::BodyTimeout,
            CallbackError::BodyUnreadable => Outcome::BodyError,
            CallbackError::Unavailable(e) => e.outcome(),
        }
    }

    /// Logs the refusal with its class and the detail the body withholds. The app is resolved by then;
    /// [`IngestError`]s were logged where they arose, as was an unknown app.
    /// WeCom's callback error code (-40001 ...) of an authentication failure.
    pub fn wecom_code(&self) -> Option<i32> {
        match self {
            CallbackError::Unverified(e) => e.code(),
            _ => None,
        }
    }

    /// What failed, in words for the operator (the log line's `reason`; never a secret or decrypted content).
    pub fn reason(&self) -> String {
        match self {
            CallbackError::Unverified(e) => e.to_string(),
            CallbackError::BadMessage(e) => Rejection::Message(e.clone()).to_string(),
            other => other.to_string(),
        }
    }

    /// Whether the request is worth keeping for `decrypt --last`: refused by a check `decrypt` can explain.
    pub fn capturable(&self) -> bool {
        matches!(
            self,
            CallbackError::BadQuery(_)
                | CallbackError::BadEnvelope(_)
                | CallbackError::Unverified(_)
                | CallbackError::BadMessage(_)
        )
    }

    /// Logs the refusal; `diagnose` is the command that explains a captured request.
    pub(crate) fn log(&self, app: &str, diagnose: Option<&str>) {
        let class = self.outcome().as_str();
        match self {
            CallbackError::BadQuery(e) => {
                tracing::warn!(app, class, reason = %e, diagnose, "callback rejected");
            }
            CallbackError::BadEnvelope(e) => {
                tracing::warn!(app, class, reason = %e, diagnose, "callback rejected");
            }
            CallbackError::Unverified(e) => {
                tracing::warn!(
                    app,
                    class,
                    wecom_code = e.code(),
                    reason = %e,
                    diagnose,
                    "callback rejected"
                );
            }
            CallbackError::BadMessage(e) => {
                let e = Rejection::Message(e.clone());
                tracing::warn!(app, class, reason = %e, diagnose, "callback rejected");
            }
            CallbackError::TooLarge { limit } => {
                tracing::warn!(
                    app = %app,
                    class,
                    limit,
                    "callback rejected: body over the limit (http.max_body_bytes)"
                );
            }
            CallbackError::BodyTimeout => {
                tracing::warn!(
                    app = %app,
                    class,
                    "callback rejected: the body did not arrive in time"
                );
            }
            CallbackError::BodyUnreadable => {
                tracing::warn!(app = %app, class, "callback rejected: the body could not be read");
            }
            CallbackError::UnknownApp
            | CallbackError::SeveralApps
            | CallbackError::Unavailable(_) => {}
        }
    }
}

impl ResponseError for CallbackError {
    fn status_code(&self) -> StatusCode {
        match self {
            CallbackError::UnknownApp | CallbackError::SeveralApps => StatusCode::NOT_FOUND,
            CallbackError::BadQuery(_)
            | CallbackError::BadEnvelope(_)
            | CallbackError::BodyUnreadable => StatusCode::BAD_REQUEST,
            CallbackError::Unverified(_) | CallbackError::BadMessage(_) => StatusCode::FORBIDDEN,
            CallbackError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            CallbackError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            CallbackError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .content_type("text/plain; charset=utf-8")
            .body(self.to_string())
    }
}

/// Why a read-API request failed. Answered as JSON `{"error": code, "message": ...}`; `Display` is the
/// message.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong bearer token. The answer says nothing about which.
    #[error("unauthorized")]
    Unauthorized,
    /// `status` is not a follow status.
    #[error("status must be active, pending, deleted_by_staff, deleted_by_customer or removed")]
    BadStatus,
    /// `limit` below 1.
    #[error("limit must be at least 1")]
    BadLimit,
    /// A cursor this API did not hand out.
    #[error("cursor is not one this API returned")]
    BadCursor,
    /// No such customer.
    #[error("no such customer in this corp")]
    CustomerNotFound,
    /// No such staff member in the directory.
    #[error(
        "no such staff member in this corp's directory (it fills from 通讯录 change_contact events and the directory resync; check the userid, or run `wecom-callback resync`)"
    )]
    StaffNotFound,
    /// No such department in the directory.
    #[error(
        "no such department in this corp's directory: the id must be WeCom's integer department id (通讯录 create_party events and the directory resync fill the table)"
    )]
    DepartmentNotFound,
    /// A query failed (logged when converted).
    #[error("the database is unavailable; retry")]
    Unavailable(#[source] sqlx::Error),
    /// The app has no secret, so it cannot call the WeCom API.
    #[error(
        "this app has no secret configured (WECOM_SECRET or secret in [[apps]]): it cannot call jscode2session"
    )]
    NoSecret,
    /// The request body is not the JSON the endpoint takes.
    #[error("{0}")]
    BadBody(String),
    /// The mini-program login code is not shaped like one.
    #[error("code must be the wx.qy.login code")]
    MalformedCode,
    /// WeCom refused the login code (errcode 40029).
    #[error("the code is wrong, already used, or older than 5 minutes: call wx.qy.login again")]
    CodeRefused,
    /// The login code belongs to another corp than the app's.
    #[error(
        "the code belongs to another corp than this app's (a multi-corp mini-program must use that corp's app)"
    )]
    CrossCorp,
    /// A third-party suite's login code belongs to a corp that has not authorised the suite (or cancelled).
    #[error("{0}")]
    CorpNotAuthorised(String),
    /// WeCom answered with an error code; the message carries the errcode's explanation.
    #[error("{message}")]
    WecomRefused {
        /// WeCom's errcode.
        errcode: i64,
        /// What it means and the usual fix.
        message: String,
    },
    /// The WeCom API could not be reached or answered nonsense.
    #[error("{0}")]
    WecomUnavailable(String),
    /// Customer identity: no app of this corp has a secret to convert with.
    #[error(
        "no app with a secret is configured for corp {0:?} (or the named app is not one of its apps): \
         configure the app's secret (WECOM_SECRET or secret in [[apps]]) or pass the right \"app\""
    )]
    NoCorpApp(String),
    /// Customer identity: a request field is missing or malformed; the message names it.
    #[error("{0}")]
    BadIdentityRequest(&'static str),
    /// WeCom's conversion quota (errcode 45009) is used up; the message explains it.
    #[error("{0}")]
    WecomQuota(String),
    /// `kind` is not a change feed kind.
    #[error(
        "kind {0:?} is not a change kind: use contact, chat, tag, identity, staff or department"
    )]
    BadKind(String),
    /// The change feed cursor is older than the retention (entries after it were pruned).
    #[error(
        "cursor {cursor} is older than the change feed's retention (entries up to {pruned_through} were pruned): \
         resync from the tables, then continue with after={head} / 游标早于变更流保留期：请先从同步表全量同步，再用 after={head} 继续"
    )]
    CursorExpired {
        cursor: i64,
        pruned_through: i64,
        head: i64,
    },
}

impl ApiError {
    /// The stable `error` code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::BadStatus => "bad_status",
            ApiError::BadLimit => "bad_limit",
            ApiError::BadCursor => "bad_cursor",
            ApiError::CustomerNotFound => "not_found",
            ApiError::StaffNotFound | ApiError::DepartmentNotFound => "not_found",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::NoSecret => "no_secret",
            ApiError::BadBody(_) => "bad_request",
            ApiError::MalformedCode | ApiError::CodeRefused => "invalid_code",
            ApiError::CrossCorp => "cross_corp",
            ApiError::CorpNotAuthorised(_) => "corp_not_authorised",
            ApiError::WecomRefused { .. } => "wecom_refused",
            ApiError::WecomUnavailable(_) => "wecom_unavailable",
            ApiError::NoCorpApp(_) => "no_app",
            ApiError::BadIdentityRequest(_) => "bad_request",
            ApiError::WecomQuota(_) => "wecom_quota",
            ApiError::BadKind(_) => "bad_kind",
            ApiError::CursorExpired { .. } => "cursor_expired",
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        // Logged here because the answer only says "retry".
        tracing::error!(error = %e, "API query failed");
        ApiError::Unavailable(e)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadStatus
            | ApiError::BadLimit
            | ApiError::BadCursor
            | ApiError::NoSecret
            | ApiError::BadBody(_)
            | ApiError::MalformedCode
            | ApiError::CodeRefused
            | ApiError::BadIdentityRequest(_)
            | ApiError::BadKind(_) => StatusCode::BAD_REQUEST,
            ApiError::CursorExpired { .. } => StatusCode::GONE,
            ApiError::CustomerNotFound | ApiError::NoCorpApp(_) => StatusCode::NOT_FOUND,
            ApiError::CorpNotAuthorised(_) => StatusCode::FORBIDDEN,
            ApiError::StaffNotFound | ApiError::DepartmentNotFound => StatusCode::NOT_FOUND,
            ApiError::WecomQuota(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::CrossCorp | ApiError::WecomRefused { .. } | ApiError::WecomUnavailable(_) => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized => response
                .insert_header((WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")))
                .json(json!({"error": self.code()})),
            ApiError::WecomRefused { errcode, message } => response.json(json!({
                "error": self.code(),
                "errcode": errcode,
                "message": message,
            })),
            ApiError::WecomQuota(message) => response
                .insert_header((
                    actix_web::http::header::RETRY_AFTER,
                    HeaderValue::from_static("3600"),
                ))
                .json(json!({"error": self.code(), "errcode": 45009, "message": message})),
            ApiError::CursorExpired {
                pruned_through,
                head,
                ..
            } => response.json(json!({
                "error": self.code(),
                "message": self.to_string(),
                "pruned_through": pruned_through,
                "head": head,
            })),
            _ => response.json(json!({"error": self.code(), "message": self.to_string()})),
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::CONTENT_TYPE;

    use super::*;

    #[test]
    fn the_bad_status_message_names_every_follow_status() {
        let message = ApiError::BadStatus.to_string();
        for s in crate::domain::FollowStatus::ALL {
            assert!(message.contains(s.as_str()), "{message} misses {s}");
        }
    }

    #[test]
    fn every_verification_failure_gets_the_same_body() {
        let forbidden = [
            CallbackError::from(Rejection::Auth(AuthFailure::Signature)),
            CallbackError::from(Rejection::Auth(AuthFailure::StaleTimestamp {
                skew_secs: 1000,
                tolerance_secs: 300,
            })),
            CallbackError::from(Rejection::Auth(AuthFailure::Crypto(
                crate::wecom::crypto::CryptoError::BadPadding,
            ))),
            CallbackError::from(Rejection::Message(XmlError::NotUtf8)),
        ];
        for e in &forbidden {
            assert_eq!(e.status_code(), StatusCode::FORBIDDEN);
            assert_eq!(e.to_string(), REJECTED_BODY);
        }
        let bad = CallbackError::from(Rejection::Query(QueryError::Missing("nonce")));
        assert_eq!(bad.status_code(), StatusCode::BAD_REQUEST);
        assert_eq!(
            bad.to_string(),
            "bad request: query parameter nonce is missing"
        );
        let others = [
            (
                CallbackError::UnknownApp,
                404,
                "not found: no app is configured under this path",
            ),
            (
                CallbackError::SeveralApps,
                404,
                "not found: several apps are configured; use /callback/{app}",
            ),
            (
                CallbackError::TooLarge { limit: 1 },
                413,
                "payload too large",
            ),
            (
                CallbackError::BodyTimeout,
                408,
                "request timeout: body too slow",
            ),
            (
                CallbackError::BodyUnreadable,
                400,
                "bad request: unreadable body",
            ),
            (
                CallbackError::from(IngestError::Unavailable),
                503,
                "service unavailable: the event could not be stored; retry",
            ),
        ];
        for (e, status, body) in others {
            assert_eq!(e.status_code().as_u16(), status, "{e:?}");
            assert_eq!(e.to_string(), body);
        }
        let content_type = bad.error_response().headers().get(CONTENT_TYPE).cloned();
        assert_eq!(
            content_type,
            Some(HeaderValue::from_static("text/plain; charset=utf-8"))
        );
    }
}
