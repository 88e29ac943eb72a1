//! [`Outcome`]: what became of one callback request, as counted in `wecom_callbacks_total{outcome}`.

use crate::wecom::crypto::CryptoError;
use crate::wecom::envelope::EnvelopeError;
use crate::wecom::verify::{AuthFailure, QueryError, Rejection};
use crate::wecom::xml::XmlError;

/// What became of one callback request. A closed set, so the metric's label values are known in advance;
/// [`Outcome::as_str`] gives the label (also the `class` of the log line, where there is one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A URL verification (GET) passed.
    UrlVerified,
    /// Committed to PostgreSQL.
    Stored,
    /// Committed, but of an event type this version does not interpret (counted apart for dashboards).
    UnknownType,
    /// Already stored: acknowledged, nothing added.
    Duplicate,
    /// The database could not take it in time: fsynced to the spool and acknowledged.
    Spooled,
    /// Not stored in time and no spool: answered 503.
    DbUnavailable,
    /// Not stored in time and the spool is at its cap: answered 503.
    SpoolFull,
    /// Not stored in time and the spool write failed or was too slow: answered 503.
    SpoolError,
    /// The body was over `http.max_body_bytes`.
    TooLarge,
    /// The body did not arrive within `http.body_read_timeout`.
    BodyTimeout,
    /// The body could not be read (the connection broke).
    BodyError,
    /// No app is configured under the path.
    UnknownApp,
    /// The query string was refused.
    BadQuery,
    /// The body is not UTF-8.
    NotUtf8,
    /// The body has a DOCTYPE.
    Doctype,
    /// The body uses an entity other than the predefined ones.
    Entity,
    /// The body is nested too deep or has too many elements.
    TooComplex,
    /// The body is not well-formed XML.
    Malformed,
    /// The body has no `Encrypt` element.
    MissingEncrypt,
    /// The body has more than one `Encrypt` element.
    DuplicateEncrypt,
    /// The `Encrypt` element is empty.
    EmptyEncrypt,
    /// The msg_signature does not match.
    BadSignature,
    /// The timestamp is outside the replay window.
    StaleTimestamp,
    /// The ciphertext does not decrypt with the app's key.
    DecryptError,
    /// The message is for another corp or suite.
    ReceiveIdMismatch,
    /// The decrypted message is not XML we can read.
    BadMessage,
}

impl Outcome {
    /// The metric label (and log class): stable, dashboards depend on it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::UrlVerified => "url_verified",
            Outcome::Stored => "stored",
            Outcome::UnknownType => "unknown_type",
            Outcome::Duplicate => "duplicate",
            Outcome::Spooled => "spooled",
            Outcome::DbUnavailable => "db_unavailable",
            Outcome::SpoolFull => "spool_full",
            Outcome::SpoolError => "spool_error",
            Outcome::TooLarge => "too_large",
            Outcome::BodyTimeout => "body_timeout",
            Outcome::BodyError => "body_error",
            Outcome::UnknownApp => "unknown_app",
            Outcome::BadQuery => "bad_query",
            Outcome::NotUtf8 => "not_utf8",
            Outcome::Doctype => "doctype",
            Outcome::Entity => "entity",
            Outcome::TooComplex => "too_complex",
            Outcome::Malformed => "malformed",
            Outcome::MissingEncrypt => "missing_encrypt",
            Outcome::DuplicateEncrypt => "duplicate_encrypt",
            Outcome::EmptyEncrypt => "empty_encrypt",
            Outcome::BadSignature => "bad_signature",
            Outcome::StaleTimestamp => "stale_timestamp",
            Outcome::DecryptError => "decrypt_error",
            Outcome::ReceiveIdMismatch => "receive_id_mismatch",
            Outcome::BadMessage => "bad_message",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// The conversions below mirror the `label()` methods of the protocol errors (which stay strings: wecom/ knows
// nothing of metrics); the `labels_agree` test keeps the two in step.

impl From<&QueryError> for Outcome {
    fn from(_: &QueryError) -> Self {
        Outcome::BadQuery
    }
}

impl From<&XmlError> for Outcome {
    fn from(e: &XmlError) -> Self {
        match e {
            XmlError::NotUtf8 => Outcome::NotUtf8,
            XmlError::DocType => Outcome::Doctype,
            XmlError::UnknownEntity => Outcome::Entity,
            XmlError::TooDeep | XmlError::TooManyElements => Outcome::TooComplex,
            _ => Outcome::Malformed,
        }
    }
}

impl From<&EnvelopeError> for Outcome {
    fn from(e: &EnvelopeError) -> Self {
        match e {
            EnvelopeError::Xml(x) => x.into(),
            EnvelopeError::MissingEncrypt => Outcome::MissingEncrypt,
            EnvelopeError::DuplicateEncrypt => Outcome::DuplicateEncrypt,
            EnvelopeError::EmptyEncrypt => Outcome::EmptyEncrypt,
        }
    }
}

impl From<&CryptoError> for Outcome {
    fn from(e: &CryptoError) -> Self {
        match e {
            CryptoError::SignatureMismatch => Outcome::BadSignature,
            CryptoError::ReceiveIdMismatch { .. } => Outcome::ReceiveIdMismatch,
            _ => Outcome::DecryptError,
        }
    }
}

impl From<&AuthFailure> for Outcome {
    fn from(e: &AuthFailure) -> Self {
        match e {
            AuthFailure::Signature => Outcome::BadSignature,
            AuthFailure::StaleTimestamp { .. } => Outcome::StaleTimestamp,
            AuthFailure::Crypto(c) => c.into(),
        }
    }
}

impl From<&Rejection> for Outcome {
    fn from(r: &Rejection) -> Self {
        match r {
            Rejection::Query(e) => e.into(),
            Rejection::Envelope(e) => e.into(),
            Rejection::Auth(e) => e.into(),
            Rejection::Message(_) => Outcome::BadMessage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_agree() {
        let xml = [
            XmlError::NotUtf8,
            XmlError::Empty,
            XmlError::DocType,
            XmlError::UnknownEntity,
            XmlError::ProcessingInstruction,
            XmlError::TooDeep,
            XmlError::TooManyElements,
            XmlError::TrailingContent,
            XmlError::NoRoot,
            XmlError::Malformed("x".into()),
        ];
        let crypto = [
            CryptoError::SignatureMismatch,
            CryptoError::InvalidBase64,
            CryptoError::CiphertextLength(3),
            CryptoError::BadPadding,
            CryptoError::BufferTooShort(3),
            CryptoError::MessageLengthOutOfBounds {
                msg_len: 9,
                available: 1,
            },
            CryptoError::ReceiveIdMismatch {
                found: "a".into(),
                expected: vec!["b".into()],
            },
        ];
        let mut rejections: Vec<Rejection> = vec![
            QueryError::Missing("nonce").into(),
            QueryError::Duplicated("nonce").into(),
            QueryError::BadEncoding("nonce").into(),
            QueryError::Malformed {
                name: "nonce",
                why: "x",
            }
            .into(),
            EnvelopeError::MissingEncrypt.into(),
            EnvelopeError::DuplicateEncrypt.into(),
            EnvelopeError::EmptyEncrypt.into(),
            AuthFailure::Signature.into(),
            AuthFailure::StaleTimestamp {
                skew_secs: 999,
                tolerance_secs: 300,
            }
            .into(),
            Rejection::Message(XmlError::NotUtf8),
        ];
        rejections.extend(xml.into_iter().map(|x| EnvelopeError::Xml(x).into()));
        rejections.extend(crypto.into_iter().map(|c| AuthFailure::Crypto(c).into()));
        for r in &rejections {
            assert_eq!(Outcome::from(r).as_str(), r.label(), "{r:?}");
        }
    }
}
