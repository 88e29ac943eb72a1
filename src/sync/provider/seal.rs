//! Sealing permanent codes at rest: AES-256-CBC (random IV, PKCS#7) then HMAC-SHA256 over IV and ciphertext
//! (encrypt-then-MAC), with two subkeys derived from the configured `[provider] secret_key`. Pure.
//!
//! The crates already used for WeCom's own AES-CBC are reused, so no second AES implementation is compiled;
//! the MAC makes tampering (or a wrong key) an error instead of garbage.

use aes::Aes256;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// The format byte of a sealed value, so the scheme can change later.
const VERSION: u8 = 1;
const IV_LEN: usize = 16;
const TAG_LEN: usize = 32;

/// The configured key (32 bytes, base64 in `[provider] secret_key` / `WECOM_SECRET_KEY`). Never printed.
#[derive(Clone)]
pub struct SecretKey {
    enc: [u8; 32],
    mac: [u8; 32],
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Why a key or a sealed value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error(
        "must be 32 bytes in base64 (44 characters); generate one with `openssl rand -base64 32` \
         (必须是 32 字节的 base64)"
    )]
    BadKey,
    #[error(
        "a sealed permanent code does not open with this secret_key: the key changed or the row was altered; \
         restore the old WECOM_SECRET_KEY, or have the corp authorise the app again"
    )]
    Tampered,
}

impl SecretKey {
    /// Parses the base64 key and derives the encryption and MAC subkeys from it.
    pub fn from_base64(s: &str) -> Result<SecretKey, SealError> {
        let raw = STANDARD.decode(s.trim()).map_err(|_| SealError::BadKey)?;
        if raw.len() != 32 {
            return Err(SealError::BadKey);
        }
        let derive = |label: &[u8]| -> [u8; 32] {
            let mut h = Sha256::new();
            h.update(label);
            h.update(&raw);
            h.finalize().into()
        };
        Ok(SecretKey {
            enc: derive(b"wecom-callback seal enc\0"),
            mac: derive(b"wecom-callback seal mac\0"),
        })
    }

    fn tag(&self, data: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail; a fresh instance per call.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.mac)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(data);
        mac
    }

    /// Seals `plain` with a fresh random IV: `version ‖ iv ‖ ciphertext ‖ tag`.
    pub fn seal(&self, plain: &SecretString) -> Vec<u8> {
        let mut iv = [0u8; IV_LEN];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut iv);
        self.seal_with_iv(plain, iv)
    }

    fn seal_with_iv(&self, plain: &SecretString, iv: [u8; IV_LEN]) -> Vec<u8> {
        let msg = plain.expose_secret().as_bytes();
        let mut buf = vec![0u8; msg.len() + 16];
        buf[..msg.len()].copy_from_slice(msg);
        let ct = cbc::Encryptor::<Aes256>::new(&self.enc.into(), &iv.into())
            .encrypt_padded::<Pkcs7>(&mut buf, msg.len())
            // The buffer has a whole block of room for the padding, so this cannot fail.
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + IV_LEN + ct.len() + TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&ct);
        let tag = self.tag(&out).finalize().into_bytes();
        out.extend_from_slice(&tag);
        out
    }

    /// Opens a sealed value; the MAC is checked (in constant time) before anything is decrypted.
    pub fn open(&self, sealed: &[u8]) -> Result<SecretString, SealError> {
        if sealed.len() < 1 + IV_LEN + 16 + TAG_LEN || sealed[0] != VERSION {
            return Err(SealError::Tampered);
        }
        let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        self.tag(body)
            .verify_slice(tag)
            .map_err(|_| SealError::Tampered)?;
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&body[1..1 + IV_LEN]);
        let mut buf = body[1 + IV_LEN..].to_vec();
        let plain = cbc::Decryptor::<Aes256>::new(&self.enc.into(), &iv.into())
            .decrypt_padded::<Pkcs7>(&mut buf)
            .map_err(|_| SealError::Tampered)?;
        let s = std::str::from_utf8(plain).map_err(|_| SealError::Tampered)?;
        Ok(SecretString::from(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SecretKey {
        SecretKey::from_base64(&STANDARD.encode([b; 32])).expect("key")
    }

    #[test]
    fn seals_and_opens_and_refuses_tampering_or_another_key() {
        let k = key(7);
        let code = SecretString::from("permanent-code-123");
        let sealed = k.seal(&code);
        assert!(!sealed.windows(9).any(|w| w == b"permanent"));
        assert_eq!(
            k.open(&sealed).expect("open").expose_secret(),
            "permanent-code-123"
        );
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert_eq!(k.open(&bad).err(), Some(SealError::Tampered));
        assert_eq!(key(8).open(&sealed).err(), Some(SealError::Tampered));
        assert_ne!(k.seal(&code), sealed, "a fresh IV each time");
        let same = k.seal_with_iv(&code, [1; 16]);
        assert_eq!(same, k.seal_with_iv(&code, [1; 16]));
    }

    #[test]
    fn a_short_key_is_refused() {
        assert_eq!(
            SecretKey::from_base64("c2hvcnQ=").err(),
            Some(SealError::BadKey)
        );
    }
}
