//! Verifying a callback request: the query string, the signature, the replay window, decryption and the
//! receive id. Pure: the caller passes the current time, nothing here does I/O.
//!
//! The only ways to obtain a [`VerifiedCallback`] or a [`VerifiedEcho`] are [`verify_callback`] and
//! [`verify_url`], so code that stores an event cannot forget a check.

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::app::AppConfig;
use crate::wecom::crypto::{self, CryptoError};
use crate::wecom::envelope::{self, EnvelopeError};
use crate::wecom::message::{self, Message};
use crate::wecom::xml::XmlError;

/// The signed query parameters of a callback request, URL-decoded exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackQuery {
    pub msg_signature: String,
    pub timestamp: String,
    pub nonce: String,
    /// Present on URL verification (GET) only.
    pub echostr: Option<String>,
}

/// Why the query string was refused (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("query parameter {0} is missing")]
    Missing(&'static str),
    #[error("query parameter {0} appears more than once")]
    Duplicated(&'static str),
    #[error("query parameter {0} is not valid percent-encoded UTF-8")]
    BadEncoding(&'static str),
    #[error("query parameter {name} is malformed: {why}")]
    Malformed {
        name: &'static str,
        why: &'static str,
    },
}

impl QueryError {
    /// Short class name for logs and metrics.
    pub fn label(&self) -> &'static str {
        "bad_query"
    }
}

/// Parses `msg_signature`, `timestamp`, `nonce` and (for GET) `echostr`.
///
/// Percent-decoding happens exactly once and `+` stays `+`: echostr is standard base64, and form-decoding
/// would turn its `+` into a space (docs/protocol.md §2.2). Unknown parameters are ignored.
pub fn parse_query(query: &str, want_echostr: bool) -> Result<CallbackQuery, QueryError> {
    let mut msg_signature = None;
    let mut timestamp = None;
    let mut nonce = None;
    let mut echostr = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, slot): (&'static str, &mut Option<String>) = match raw_name {
            "msg_signature" => ("msg_signature", &mut msg_signature),
            "timestamp" => ("timestamp", &mut timestamp),
            "nonce" => ("nonce", &mut nonce),
            "echostr" if want_echostr => ("echostr", &mut echostr),
            _ => continue,
        };
        if slot.is_some() {
            return Err(QueryError::Duplicated(name));
        }
        let value = percent_encoding::percent_decode_str(raw_value)
            .decode_utf8()
            .map_err(|_| QueryError::BadEncoding(name))?;
        *slot = Some(value.into_owned());
    }

    let msg_signature = msg_signature.ok_or(QueryError::Missing("msg_signature"))?;
    let timestamp = timestamp.ok_or(QueryError::Missing("timestamp"))?;
    let nonce = nonce.ok_or(QueryError::Missing("nonce"))?;

    // Strict shapes are cheap and keep odd bytes out of the signature input (docs/protocol.md §3.4).
    if msg_signature.len() != 40 || !msg_signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(QueryError::Malformed {
            name: "msg_signature",
            why: "expected 40 hexadecimal characters",
        });
    }
    if timestamp.is_empty()
        || timestamp.len() > 12
        || !timestamp.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(QueryError::Malformed {
            name: "timestamp",
            why: "expected unix seconds",
        });
    }
    if nonce.is_empty() || nonce.len() > 64 || !nonce.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(QueryError::Malformed {
            name: "nonce",
            why: "expected 1 to 64 printable ASCII characters",
        });
    }
    let echostr = if want_echostr {
        let e = echostr.ok_or(QueryError::Missing("echostr"))?;
        if e.is_empty() || !is_base64_text(&e) {
            return Err(QueryError::Malformed {
                name: "echostr",
                why: "expected base64 (a space usually means it was URL-decoded twice)",
            });
        }
        Some(e)
    } else {
        None
    };
    Ok(CallbackQuery {
        msg_signature,
        timestamp,
        nonce,
        echostr,
    })
}

fn is_base64_text(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
}

/// Why an authenticated step failed. All of these get the same HTTP status and body, so a prober cannot tell
/// which step failed; the log line carries the detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error(
        "msg_signature does not match: the Token configured for this app differs from the one in the WeCom \
         admin console, or the request was altered"
    )]
    Signature,
    #[error(
        "timestamp is {skew_secs} s away from this server's clock (tolerance {tolerance_secs} s): a replayed \
         request, or this server's clock is wrong (check NTP)"
    )]
    StaleTimestamp { skew_secs: i64, tolerance_secs: u64 },
    #[error("{0}")]
    Crypto(CryptoError),
}

impl AuthFailure {
    /// Short class name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            AuthFailure::Signature => "bad_signature",
            AuthFailure::StaleTimestamp { .. } => "stale_timestamp",
            AuthFailure::Crypto(e) => e.label(),
        }
    }

    /// The official WeCom crypto library code, for logs.
    pub fn code(&self) -> Option<i32> {
        match self {
            AuthFailure::Signature => Some(-40001),
            AuthFailure::StaleTimestamp { .. } => None,
            AuthFailure::Crypto(e) => Some(e.code()),
        }
    }
}

/// Why a callback was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("request body: {0}")]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Auth(#[from] AuthFailure),
    /// The message decrypted and its receive id matched, but it is not XML we can read.
    #[error("the decrypted message is not well-formed XML: {0}")]
    Message(XmlError),
}

impl Rejection {
    /// Whether the message is for another corp or suite than the app accepts.
    pub fn is_receive_id_mismatch(&self) -> bool {
        matches!(
            self,
            Rejection::Auth(AuthFailure::Crypto(
                crate::wecom::crypto::CryptoError::ReceiveIdMismatch { .. }
            ))
        )
    }

    /// Short class name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::Query(e) => e.label(),
            Rejection::Envelope(e) => e.label(),
            Rejection::Auth(e) => e.label(),
            Rejection::Message(_) => "bad_message",
        }
    }
}

/// A URL-verification request that passed every check; holds the plaintext to send back.
#[derive(Debug)]
pub struct VerifiedEcho {
    plaintext: Vec<u8>,
}

impl VerifiedEcho {
    /// The exact bytes WeCom expects as the reply body.
    pub fn plaintext(&self) -> &[u8] {
        &self.plaintext
    }
}

/// A POSTed callback that passed every check. Only [`verify_callback`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedCallback {
    app: String,
    receive_id: String,
    raw_message: String,
    message: Message,
    dedupe_key: String,
    query: CallbackQuery,
}

impl VerifiedCallback {
    /// The configured app that received it.
    pub fn app(&self) -> &str {
        &self.app
    }
    /// The receive id found inside the ciphertext.
    pub fn receive_id(&self) -> &str {
        &self.receive_id
    }
    /// The decrypted message as received.
    pub fn raw_message(&self) -> &str {
        &self.raw_message
    }
    /// The parsed message.
    pub fn message(&self) -> &Message {
        &self.message
    }
    /// Hex SHA-256 of the decrypted message: identical for WeCom's retries, even re-encrypted ones.
    pub fn dedupe_key(&self) -> &str {
        &self.dedupe_key
    }
    /// The request's query parameters.
    pub fn query(&self) -> &CallbackQuery {
        &self.query
    }
}

fn check_timestamp(timestamp: &str, now_unix: i64, tolerance_secs: u64) -> Result<(), AuthFailure> {
    if tolerance_secs == 0 {
        return Ok(());
    }
    // parse_query guarantees at most 12 digits, so this fits an i64.
    let ts: i64 = timestamp.parse().map_err(|_| AuthFailure::StaleTimestamp {
        skew_secs: i64::MAX,
        tolerance_secs,
    })?;
    let skew = ts.saturating_sub(now_unix);
    if skew.unsigned_abs() > tolerance_secs {
        return Err(AuthFailure::StaleTimestamp {
            skew_secs: skew,
            tolerance_secs,
        });
    }
    Ok(())
}

/// Verifies a URL-verification (GET) request: signature over echostr, replay window, decryption, receive id.
pub fn verify_url(
    app: &AppConfig,
    query: &CallbackQuery,
    now_unix: i64,
    tolerance_secs: u64,
) -> Result<VerifiedEcho, Rejection> {
    let echostr = query
        .echostr
        .as_deref()
        .ok_or(QueryError::Missing("echostr"))?;
    crypto::verify_signature(
        app.token.expose_secret(),
        &query.timestamp,
        &query.nonce,
        echostr,
        &query.msg_signature,
    )
    .map_err(|_| AuthFailure::Signature)?;
    check_timestamp(&query.timestamp, now_unix, tolerance_secs)?;
    let decrypted = crypto::decrypt(&app.aes_key, echostr).map_err(AuthFailure::Crypto)?;
    crypto::check_receive_id(&decrypted.receive_id, &app.receive_ids)
        .map_err(AuthFailure::Crypto)?;
    Ok(VerifiedEcho {
        plaintext: decrypted.message,
    })
}

/// Verifies a POSTed callback. The signature is checked over the `Encrypt` text before any base64 or AES work.
pub fn verify_callback(
    app: &AppConfig,
    query: CallbackQuery,
    body: &[u8],
    now_unix: i64,
    tolerance_secs: u64,
) -> Result<VerifiedCallback, Rejection> {
    verify_callback_for(
        app,
        query,
        body,
        now_unix,
        tolerance_secs,
        &std::collections::HashSet::new(),
    )
}

/// [`verify_callback`], accepting as receive id also one of `authorised` (a suite's data callback URL:
/// the corps that authorised the suite, which the caller looks up; any other id is still refused as
/// `receive_id_mismatch`).
pub fn verify_callback_for(
    app: &AppConfig,
    query: CallbackQuery,
    body: &[u8],
    now_unix: i64,
    tolerance_secs: u64,
    authorised: &std::collections::HashSet<String>,
) -> Result<VerifiedCallback, Rejection> {
    let envelope = envelope::parse_envelope(body)?;
    crypto::verify_signature(
        app.token.expose_secret(),
        &query.timestamp,
        &query.nonce,
        &envelope.encrypt,
        &query.msg_signature,
    )
    .map_err(|_| AuthFailure::Signature)?;
    check_timestamp(&query.timestamp, now_unix, tolerance_secs)?;
    let decrypted =
        crypto::decrypt(&app.aes_key, &envelope.encrypt).map_err(AuthFailure::Crypto)?;
    let authorised_corp =
        std::str::from_utf8(&decrypted.receive_id).is_ok_and(|id| authorised.contains(id));
    if !authorised_corp {
        crypto::check_receive_id(&decrypted.receive_id, &app.receive_ids)
            .map_err(AuthFailure::Crypto)?;
    }
    // check_receive_id only accepts ids equal to a configured (UTF-8) string.
    let receive_id = String::from_utf8_lossy(&decrypted.receive_id).into_owned();
    let message = message::parse_message(&decrypted.message).map_err(Rejection::Message)?;
    let raw_message =
        String::from_utf8(decrypted.message).map_err(|_| Rejection::Message(XmlError::NotUtf8))?;
    let dedupe_key = hex::encode(Sha256::digest(raw_message.as_bytes()));
    Ok(VerifiedCallback {
        app: app.name.clone(),
        receive_id,
        raw_message,
        message,
        dedupe_key,
        query,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_once_and_keeps_plus() {
        let q = parse_query(
            "msg_signature=5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3&timestamp=1409659589&nonce=263014780&echostr=P9nA%2Bq%2F%3D%3D+x",
            true,
        );
        // A literal '+' stays '+', it is not a space.
        assert_eq!(q.expect("parsed").echostr.as_deref(), Some("P9nA+q/==+x"));
    }

    #[test]
    fn double_encoded_echostr_is_refused() {
        // %2520 decodes once to "%20", not a space: '%' is not base64, so it is refused.
        let q = parse_query(
            "msg_signature=5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3&timestamp=1&nonce=2&echostr=ab%2520cd",
            true,
        );
        assert!(matches!(
            q,
            Err(QueryError::Malformed {
                name: "echostr",
                ..
            })
        ));
        let q = parse_query(
            "msg_signature=5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3&timestamp=1&nonce=2&echostr=ab%20cd",
            true,
        );
        assert!(q.is_err());
    }

    #[test]
    fn missing_duplicated_and_malformed_parameters() {
        let sig = "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3";
        assert_eq!(
            parse_query(&format!("msg_signature={sig}&nonce=1"), false),
            Err(QueryError::Missing("timestamp"))
        );
        assert_eq!(
            parse_query(
                &format!("msg_signature={sig}&timestamp=1&timestamp=2&nonce=1"),
                false
            ),
            Err(QueryError::Duplicated("timestamp"))
        );
        assert!(matches!(
            parse_query("msg_signature=xyz&timestamp=1&nonce=1", false),
            Err(QueryError::Malformed {
                name: "msg_signature",
                ..
            })
        ));
        assert!(matches!(
            parse_query(&format!("msg_signature={sig}&timestamp=-1&nonce=1"), false),
            Err(QueryError::Malformed {
                name: "timestamp",
                ..
            })
        ));
        assert!(matches!(
            parse_query(
                &format!("msg_signature={sig}&timestamp=1&nonce=a%00b"),
                false
            ),
            Err(QueryError::Malformed { name: "nonce", .. })
        ));
        assert_eq!(
            parse_query(&format!("msg_signature={sig}&timestamp=1&nonce=1"), true),
            Err(QueryError::Missing("echostr"))
        );
    }

    #[test]
    fn timestamp_window_edges() {
        let now = 1_700_000_000;
        for (offset, ok) in [
            (0, true),
            (299, true),
            (-299, true),
            (300, true),
            (-300, true),
            (301, false),
            (-301, false),
        ] {
            let ts = (now + offset).to_string();
            assert_eq!(
                check_timestamp(&ts, now, 300).is_ok(),
                ok,
                "offset {offset}"
            );
        }
        assert!(
            check_timestamp("1", now, 0).is_ok(),
            "0 disables the window"
        );
    }
}
