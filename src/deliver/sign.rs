//! Standard Webhooks signatures (https://www.standardwebhooks.com), pure: `webhook-signature` is
//! `v1,<base64 of HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")>`, one per secret, separated
//! by spaces (two during a secret rotation). Secrets are `whsec_` followed by the base64 of the key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// A webhook signing key. Its `Debug` shows nothing of the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Why a secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "a webhook secret must start with whsec_ followed by base64 (generate one with `wecom-callback webhooks gen-secret`)"
    )]
    Prefix,
    #[error(
        "the webhook secret after whsec_ is not base64; generate one with `wecom-callback webhooks gen-secret`"
    )]
    Base64,
    #[error(
        "the webhook secret is too short: use at least 24 random bytes (`wecom-callback webhooks gen-secret`)"
    )]
    Short,
}

impl Secret {
    /// Parses `whsec_<base64>`.
    pub fn parse(s: &str) -> Result<Secret, SecretError> {
        let b64 = s.trim().strip_prefix("whsec_").ok_or(SecretError::Prefix)?;
        let key = STANDARD.decode(b64).map_err(|_| SecretError::Base64)?;
        if key.len() < 16 {
            return Err(SecretError::Short);
        }
        Ok(Secret { key })
    }

    /// A fresh random secret in `whsec_` form.
    pub fn generate() -> String {
        let key: [u8; 32] = rand::random();
        format!("whsec_{}", STANDARD.encode(key))
    }

    fn sign(&self, content: &[u8]) -> String {
        // Any key length is valid for HMAC; the fallback is unreachable and would only sign with no key.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
        mac.update(content);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header for a message: one `v1,…` per secret, space-separated.
pub fn signature(secrets: &[Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut content = Vec::with_capacity(id.len() + body.len() + 24);
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.to_string().as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    secrets
        .iter()
        .map(|s| s.sign(&content))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_example_signature() {
        // The example of the Standard Webhooks specification and its reference libraries.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let sig = signature(
            &[secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn two_secrets_sign_twice_and_bad_secrets_are_refused() {
        let a = Secret::parse(&Secret::generate()).expect("a");
        let b = Secret::parse(&Secret::generate()).expect("b");
        let both = signature(&[a.clone(), b], "id", 1, b"{}");
        let one = signature(&[a], "id", 1, b"{}");
        assert_eq!(both.split(' ').count(), 2);
        assert!(both.starts_with(&one));
        assert_eq!(Secret::parse("MfKQ9r8G"), Err(SecretError::Prefix));
        assert_eq!(Secret::parse("whsec_!!"), Err(SecretError::Base64));
        assert_eq!(Secret::parse("whsec_AAAA"), Err(SecretError::Short));
    }
}
