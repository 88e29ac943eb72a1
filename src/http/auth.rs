//! [`BearerAuth`]: the read API's bearer token, checked as an extractor so a handler cannot forget it.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use crate::http::AppState;
use crate::http::error::ApiError;

/// Proof that the request carries the configured API token. Put it first among a handler's arguments, so an
/// unauthenticated request is refused before anything else is extracted (its body is never read).
#[derive(Debug, Clone, Copy)]
pub struct BearerAuth(());

impl FromRequest for BearerAuth {
    type Error = ApiError;
    type Future = Ready<Result<BearerAuth, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authorize(req).map(|()| BearerAuth(())))
    }
}

/// Checks the bearer token in constant time. The 401 says nothing about why.
fn authorize(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(expected) = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.api_token.as_ref())
    else {
        return Err(ApiError::Unauthorized);
    };
    let provided = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if equal(provided, expected) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

fn equal(provided: &str, expected: &secrecy::SecretString) -> bool {
    bool::from(
        provided
            .as_bytes()
            .ct_eq(expected.expose_secret().as_bytes()),
    )
}

/// Whether `provided` is the configured API token (constant time; false when none is configured).
pub(crate) fn token_matches(state: &AppState, provided: &str) -> bool {
    state
        .api_token
        .as_ref()
        .is_some_and(|expected| equal(provided, expected))
}
