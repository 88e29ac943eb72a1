//! WeCom message crypto: signature, AES-256-CBC with the EncodingAESKey, and the plaintext layout.
//! Pure functions, no I/O (docs/protocol.md §3).
//!
//! ```text
//! plaintext   = random(16) || msg_len (4 bytes, big-endian) || msg || receive_id
//! ciphertext  = AES-256-CBC(key, iv = key[..16], PKCS#7 padding to a multiple of 32 bytes)
//! Encrypt     = base64(ciphertext)
//! signature   = hex(sha1(sort([token, timestamp, nonce, Encrypt]).concat()))
//! ```

use std::fmt;

use aes::Aes256;
use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// WeCom pads to a multiple of 32 bytes, not AES's 16 (docs/protocol.md §3.2).
const PAD_BLOCK: usize = 32;
const RANDOM_LEN: usize = 16;
const LEN_LEN: usize = 4;

/// The EncodingAESKey's last character usually carries non-zero trailing bits, which a strict decoder
/// rejects; WeCom's own samples decode leniently (docs/protocol.md §3.1).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The 32-byte AES key behind an EncodingAESKey.
#[derive(Clone)]
pub struct AesKey([u8; 32]);

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey(<redacted>)")
    }
}

/// Why an EncodingAESKey was refused. The messages never repeat the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "EncodingAESKey must be 43 characters; you gave {got} — drop the trailing '=' (WeCom shows the key without it)"
    )]
    TrailingEquals { got: usize },
    #[error(
        "EncodingAESKey must be 43 characters; you gave {got} — copy it again from the WeCom admin console \
         (应用 → 接收消息 → 设置API接收 → EncodingAESKey), or generate one with `wecom-callback gen-key`"
    )]
    WrongLength { got: usize },
    #[error(
        "EncodingAESKey has an invalid character {ch:?} at position {position}; it may only contain letters, digits, \
         '+' and '/' — copy it again from the WeCom admin console"
    )]
    InvalidCharacter { position: usize, ch: char },
    #[error(
        "EncodingAESKey does not decode to a 32-byte AES key; copy it again from the WeCom admin console"
    )]
    Undecodable,
}

impl AesKey {
    /// Decodes the 43-character EncodingAESKey (`AESKey = Base64_Decode(EncodingAESKey + "=")`).
    pub fn from_encoding_aes_key(encoding_aes_key: &str) -> Result<AesKey, KeyError> {
        let got = encoding_aes_key.chars().count();
        if got != 43 {
            if got == 44 && encoding_aes_key.ends_with('=') {
                return Err(KeyError::TrailingEquals { got });
            }
            return Err(KeyError::WrongLength { got });
        }
        if let Some((position, ch)) = encoding_aes_key
            .chars()
            .enumerate()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '+' || *c == '/'))
        {
            return Err(KeyError::InvalidCharacter {
                position: position + 1,
                ch,
            });
        }
        let bytes = LENIENT
            .decode(format!("{encoding_aes_key}="))
            .map_err(|_| KeyError::Undecodable)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Undecodable)?;
        Ok(AesKey(key))
    }

    /// A key from raw bytes (e.g. freshly generated).
    pub fn from_bytes(bytes: [u8; 32]) -> AesKey {
        AesKey(bytes)
    }

    /// The 43-character EncodingAESKey for this key, as the admin console shows it.
    pub fn to_encoding_aes_key(&self) -> String {
        let mut s = STANDARD.encode(self.0);
        s.truncate(43);
        s
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.0[..16]);
        iv
    }
}

/// A decryption or verification failure. `code()` gives WeCom's official crypto-library code for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error(
        "msg_signature does not match: the Token differs from the one in the WeCom admin console, or the request was altered"
    )]
    SignatureMismatch,
    #[error(
        "the encrypted text is not valid base64 (was it URL-decoded twice, turning '+' into ' '?)"
    )]
    InvalidBase64,
    #[error("the ciphertext length {0} is not a non-zero multiple of 16 bytes")]
    CiphertextLength(usize),
    #[error(
        "the decrypted padding is invalid: the EncodingAESKey does not match the one in the WeCom admin console"
    )]
    BadPadding,
    #[error("the decrypted buffer is too short ({0} bytes) to hold the random prefix and length")]
    BufferTooShort(usize),
    #[error("the decrypted msg_len {msg_len} exceeds the {available} bytes available")]
    MessageLengthOutOfBounds { msg_len: usize, available: usize },
    #[error(
        "receive id mismatch: the message is for {found:?}, this app accepts {expected:?} — check the corpid / suite id \
         configured for this app (WECOM_CORP_ID or receive_ids)"
    )]
    ReceiveIdMismatch {
        found: String,
        expected: Vec<String>,
    },
}

impl CryptoError {
    /// WeCom's official code (加解密库的返回码), for logs only.
    pub fn code(&self) -> i32 {
        match self {
            CryptoError::SignatureMismatch => -40001,
            CryptoError::InvalidBase64 => -40010,
            CryptoError::CiphertextLength(_) => -40007,
            CryptoError::BadPadding
            | CryptoError::BufferTooShort(_)
            | CryptoError::MessageLengthOutOfBounds { .. } => -40008,
            CryptoError::ReceiveIdMismatch { .. } => -40005,
        }
    }

    /// Short class name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            CryptoError::SignatureMismatch => "bad_signature",
            CryptoError::ReceiveIdMismatch { .. } => "receive_id_mismatch",
            _ => "decrypt_error",
        }
    }
}

/// WeCom's msg_signature: lowercase hex SHA-1 of the four values sorted byte-wise and concatenated.
pub fn signature(token: &str, timestamp: &str, nonce: &str, encrypted: &str) -> String {
    let mut parts = [token, timestamp, nonce, encrypted];
    parts.sort_unstable();
    let mut h = Sha1::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Checks a provided msg_signature in constant time.
pub fn verify_signature(
    token: &str,
    timestamp: &str,
    nonce: &str,
    encrypted: &str,
    provided: &str,
) -> Result<(), CryptoError> {
    let expected = signature(token, timestamp, nonce, encrypted);
    // ct_eq on slices of different lengths is false without comparing contents.
    if bool::from(expected.as_bytes().ct_eq(provided.as_bytes())) {
        Ok(())
    } else {
        Err(CryptoError::SignatureMismatch)
    }
}

/// The content of a decrypted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    /// The message (XML for callbacks, the echo string for URL verification).
    pub message: Vec<u8>,
    /// The receive id appended after the message (corpid, suite id, ...).
    pub receive_id: Vec<u8>,
}

/// Decrypts an `Encrypt` / `echostr` value. Never panics, whatever the input.
pub fn decrypt(key: &AesKey, encrypted_base64: &str) -> Result<Decrypted, CryptoError> {
    let mut buf = STANDARD
        .decode(encrypted_base64)
        .map_err(|_| CryptoError::InvalidBase64)?;
    if buf.is_empty() || buf.len() % 16 != 0 {
        return Err(CryptoError::CiphertextLength(buf.len()));
    }
    let plain = cbc::Decryptor::<Aes256>::new(&key.0.into(), &key.iv().into())
        .decrypt_padded::<NoPadding>(&mut buf)
        .map_err(|_| CryptoError::CiphertextLength(encrypted_base64.len()))?;
    let plain = unpad(plain)?;
    if plain.len() < RANDOM_LEN + LEN_LEN {
        return Err(CryptoError::BufferTooShort(plain.len()));
    }
    let rest = &plain[RANDOM_LEN..];
    let (len_bytes, rest) = rest.split_at(LEN_LEN);
    let mut len = [0u8; 4];
    len.copy_from_slice(len_bytes);
    let msg_len = u32::from_be_bytes(len) as usize;
    if msg_len > rest.len() {
        return Err(CryptoError::MessageLengthOutOfBounds {
            msg_len,
            available: rest.len(),
        });
    }
    let (message, receive_id) = rest.split_at(msg_len);
    Ok(Decrypted {
        message: message.to_vec(),
        receive_id: receive_id.to_vec(),
    })
}

/// Strict PKCS#7 over 32-byte blocks: the pad byte is 1..=32 and every pad byte equals it.
fn unpad(plain: &[u8]) -> Result<&[u8], CryptoError> {
    let pad = *plain.last().ok_or(CryptoError::BadPadding)? as usize;
    if pad == 0 || pad > PAD_BLOCK || pad > plain.len() {
        return Err(CryptoError::BadPadding);
    }
    let (body, padding) = plain.split_at(plain.len() - pad);
    if padding.iter().any(|&b| b as usize != pad) {
        return Err(CryptoError::BadPadding);
    }
    Ok(body)
}

/// Encrypts with caller-supplied random prefix bytes (deterministic, for tests and reproducible tools).
pub fn encrypt_with_random(
    key: &AesKey,
    random: [u8; 16],
    message: &[u8],
    receive_id: &[u8],
) -> String {
    let len = RANDOM_LEN + LEN_LEN + message.len() + receive_id.len();
    let pad = PAD_BLOCK - len % PAD_BLOCK;
    let mut buf = Vec::with_capacity(len + pad);
    buf.extend_from_slice(&random);
    // A message over 4 GiB cannot be a WeCom message; saturate rather than wrap.
    buf.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    buf.extend_from_slice(message);
    buf.extend_from_slice(receive_id);
    buf.resize(len + pad, pad as u8);
    let total = buf.len();
    let ciphertext = cbc::Encryptor::<Aes256>::new(&key.0.into(), &key.iv().into())
        .encrypt_padded::<NoPadding>(&mut buf, total)
        // The buffer is a multiple of 32 bytes by construction, so NoPadding cannot fail.
        .map(|c| c.to_vec())
        .unwrap_or_default();
    STANDARD.encode(ciphertext)
}

/// Encrypts with random prefix bytes from `rng`.
pub fn encrypt<R: rand::RngCore + ?Sized>(
    key: &AesKey,
    rng: &mut R,
    message: &[u8],
    receive_id: &[u8],
) -> String {
    let mut random = [0u8; 16];
    rng.fill_bytes(&mut random);
    encrypt_with_random(key, random, message, receive_id)
}

/// Checks the receive id found in a message against the ids an app accepts.
pub fn check_receive_id(found: &[u8], allowed: &[String]) -> Result<(), CryptoError> {
    if allowed.iter().any(|a| a.as_bytes() == found) {
        Ok(())
    } else {
        Err(CryptoError::ReceiveIdMismatch {
            found: String::from_utf8_lossy(found).into_owned(),
            expected: allowed.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

    fn key() -> AesKey {
        AesKey::from_encoding_aes_key(KEY).expect("key")
    }

    /// Encrypts an arbitrary, already padded (or deliberately mis-padded) plaintext.
    fn raw_encrypt(key: &AesKey, mut plain: Vec<u8>) -> String {
        let n = plain.len();
        let c = cbc::Encryptor::<Aes256>::new(&key.0.into(), &key.iv().into())
            .encrypt_padded::<NoPadding>(&mut plain, n)
            .expect("multiple of 16")
            .to_vec();
        STANDARD.encode(c)
    }

    fn layout(msg: &[u8], id: &[u8]) -> Vec<u8> {
        let mut v = b"0123456789abcdef".to_vec();
        v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        v.extend_from_slice(msg);
        v.extend_from_slice(id);
        v
    }

    #[test]
    fn aligned_input_gets_a_full_block_of_padding() {
        // 16 + 4 + 8 + 4 = 32 bytes: PKCS#7/32 adds a whole block of 32.
        let e = encrypt_with_random(&key(), *b"0123456789abcdef", b"12345678", b"corp");
        assert_eq!(STANDARD.decode(&e).expect("b64").len(), 64);
        let d = decrypt(&key(), &e).expect("decrypts");
        assert_eq!(d.message, b"12345678");
        assert_eq!(d.receive_id, b"corp");
    }

    #[test]
    fn padding_edge_cases() {
        let k = key();
        let mut p = layout(b"hello", b"id");
        let pad = 32 - p.len() % 32;
        // Pad byte 0.
        let mut zero = p.clone();
        zero.resize(p.len() + pad, 0);
        assert_eq!(
            decrypt(&k, &raw_encrypt(&k, zero)),
            Err(CryptoError::BadPadding)
        );
        // Pad byte 33 over a 48-byte tail.
        let mut big = p.clone();
        big.resize(64, 33);
        assert_eq!(
            decrypt(&k, &raw_encrypt(&k, big)),
            Err(CryptoError::BadPadding)
        );
        // Unequal pad bytes.
        let mut uneq = p.clone();
        uneq.resize(p.len() + pad, pad as u8);
        let n = uneq.len();
        uneq[n - 2] ^= 1;
        assert_eq!(
            decrypt(&k, &raw_encrypt(&k, uneq)),
            Err(CryptoError::BadPadding)
        );
        // A 16-byte-style pad (pad ≤ 16) is accepted when consistent: WeCom's rule is 1..=32.
        p.resize(p.len() + pad, pad as u8);
        assert!(decrypt(&k, &raw_encrypt(&k, p)).is_ok());
    }

    #[test]
    fn length_and_bounds_checks() {
        let k = key();
        assert!(matches!(
            decrypt(&k, ""),
            Err(CryptoError::CiphertextLength(0))
        ));
        assert!(matches!(
            decrypt(&k, &STANDARD.encode([0u8; 15])),
            Err(CryptoError::CiphertextLength(15))
        ));
        assert!(matches!(
            decrypt(&k, &STANDARD.encode([0u8; 17])),
            Err(CryptoError::CiphertextLength(17))
        ));
        // Fewer than 20 bytes after unpadding.
        let mut short = b"0123456789".to_vec();
        short.resize(32, 22);
        assert_eq!(
            decrypt(&k, &raw_encrypt(&k, short)),
            Err(CryptoError::BufferTooShort(10))
        );
        // msg_len larger than what follows.
        let mut lie = b"0123456789abcdef".to_vec();
        lie.extend_from_slice(&1000u32.to_be_bytes());
        lie.extend_from_slice(b"abc");
        lie.resize(32, 9);
        assert!(matches!(
            decrypt(&k, &raw_encrypt(&k, lie)),
            Err(CryptoError::MessageLengthOutOfBounds {
                msg_len: 1000,
                available: 3
            })
        ));
        assert_eq!(decrypt(&k, "not base64!"), Err(CryptoError::InvalidBase64));
    }

    #[test]
    fn key_round_trips_through_its_text_form() {
        let k = AesKey::from_bytes([7u8; 32]);
        let text = k.to_encoding_aes_key();
        assert_eq!(text.len(), 43);
        assert_eq!(
            AesKey::from_encoding_aes_key(&text).expect("key").0,
            [7u8; 32]
        );
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(format!("{:?}", key()), "AesKey(<redacted>)");
    }

    #[test]
    fn codes_follow_the_official_table() {
        assert_eq!(CryptoError::SignatureMismatch.code(), -40001);
        assert_eq!(CryptoError::InvalidBase64.code(), -40010);
        assert_eq!(CryptoError::BadPadding.code(), -40008);
        assert_eq!(
            CryptoError::ReceiveIdMismatch {
                found: String::new(),
                expected: vec![]
            }
            .code(),
            -40005
        );
    }
}
