//! Crypto against the public vectors in tests/data/vectors.json (from WeCom's official samples and wechatpy;
//! provenance in tests/data/README.md), against an independent implementation
//! (the openssl command-line tool), and by properties.

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use wecom_callback::wecom::crypto::{self, AesKey, CryptoError, KeyError};

#[derive(serde::Deserialize)]
struct Vector {
    name: String,
    kind: String,
    token: String,
    encoding_aes_key: String,
    receive_id: String,
    msg_signature: String,
    timestamp: String,
    nonce: String,
    encrypted: String,
    expected_plaintext: String,
}

fn vectors() -> Vec<Vector> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/vectors.json"
    ))
    .expect("tests/data/vectors.json");
    serde_json::from_str(&text).expect("vectors.json")
}

#[test]
fn every_vector_signature_matches() {
    let vs = vectors();
    assert_eq!(vs.len(), 7, "all seven public vectors");
    for v in &vs {
        let sig = crypto::signature(&v.token, &v.timestamp, &v.nonce, &v.encrypted);
        assert_eq!(sig, v.msg_signature, "{}", v.name);
        crypto::verify_signature(
            &v.token,
            &v.timestamp,
            &v.nonce,
            &v.encrypted,
            &v.msg_signature,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", v.name));
    }
}

#[test]
fn every_vector_key_decodes_although_strict_base64_refuses_it() {
    for v in vectors() {
        let strict = STANDARD.decode(format!("{}=", v.encoding_aes_key));
        assert!(
            strict.is_err(),
            "{}: the vectors' keys have non-zero trailing bits",
            v.name
        );
        AesKey::from_encoding_aes_key(&v.encoding_aes_key).expect("lenient decoding");
    }
}

#[test]
fn every_verify_and_decrypt_vector_decrypts_with_its_receive_id() {
    let mut n = 0;
    for v in vectors()
        .iter()
        .filter(|v| v.kind == "verify_url" || v.kind == "decrypt_msg")
    {
        let key = AesKey::from_encoding_aes_key(&v.encoding_aes_key).expect("key");
        let d = crypto::decrypt(&key, &v.encrypted).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(
            String::from_utf8(d.message).expect("utf-8"),
            v.expected_plaintext,
            "{}",
            v.name
        );
        assert_eq!(d.receive_id, v.receive_id.as_bytes(), "{}", v.name);
        crypto::check_receive_id(&d.receive_id, std::slice::from_ref(&v.receive_id))
            .expect("receive id");
        n += 1;
    }
    assert_eq!(n, 6);
}

#[test]
fn the_fixed_random_encrypt_vector_matches_byte_for_byte() {
    let v = vectors()
        .into_iter()
        .find(|v| v.kind == "encrypt_msg")
        .expect("the encrypt vector");
    let key = AesKey::from_encoding_aes_key(&v.encoding_aes_key).expect("key");
    let e = crypto::encrypt_with_random(
        &key,
        *b"1234567890123456",
        v.expected_plaintext.as_bytes(),
        v.receive_id.as_bytes(),
    );
    assert_eq!(e, v.encrypted);
    assert_eq!(
        crypto::signature(&v.token, &v.timestamp, &v.nonce, &e),
        v.msg_signature
    );
}

#[test]
fn key_errors_name_the_fix_and_never_echo_the_key() {
    let good = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
    let e = AesKey::from_encoding_aes_key(&format!("{good}=")).expect_err("44 with '='");
    assert_eq!(e, KeyError::TrailingEquals { got: 44 });
    assert!(e.to_string().contains("43") && e.to_string().contains("drop the trailing '='"));
    let e = AesKey::from_encoding_aes_key(&good[..42]).expect_err("42");
    assert!(e.to_string().contains("you gave 42"));
    let e = AesKey::from_encoding_aes_key(&format!("{good}A")).expect_err("44");
    assert!(e.to_string().contains("you gave 44"));
    let e = AesKey::from_encoding_aes_key(&format!("{}$", &good[..42])).expect_err("$");
    assert_eq!(
        e,
        KeyError::InvalidCharacter {
            position: 43,
            ch: '$'
        }
    );
    for e in [
        KeyError::TrailingEquals { got: 44 },
        KeyError::WrongLength { got: 1 },
        KeyError::Undecodable,
    ] {
        assert!(!e.to_string().contains(good));
    }
}

// ---- an independent implementation: the openssl command-line tool ----

fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "the openssl command is needed by this test: install openssl (apt-get install openssl)",
        );
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write");
    let out = child.wait_with_output().expect("openssl ran");
    assert!(
        out.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn key_bytes(encoding_aes_key: &str) -> Vec<u8> {
    // Decoded without AesKey: one more zero-valued character makes 44 canonical characters (33 bytes, the
    // last of which is the stray trailing bits); the key is the first 32.
    let mut bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(format!("{encoding_aes_key}A"))
        .expect("decodes");
    bytes.truncate(32);
    bytes
}

#[test]
fn openssl_decrypts_what_we_encrypt_and_we_decrypt_what_it_encrypts() {
    let encoding_aes_key = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
    let key = AesKey::from_encoding_aes_key(encoding_aes_key).expect("key");
    let raw = key_bytes(encoding_aes_key);
    let hex_key = hex::encode(&raw);
    let hex_iv = hex::encode(&raw[..16]);
    let args_d = [
        "enc",
        "-aes-256-cbc",
        "-d",
        "-nopad",
        "-K",
        &hex_key,
        "-iv",
        &hex_iv,
    ];
    let args_e = [
        "enc",
        "-aes-256-cbc",
        "-e",
        "-nopad",
        "-K",
        &hex_key,
        "-iv",
        &hex_iv,
    ];

    for (msg, id) in [
        (&b""[..], &b"wx49f0ab532d5d035a"[..]),
        (b"<xml><A>1</A></xml>", b"ww1"),
        ("你好, 企业微信".as_bytes(), b"corp"),
        (&[7u8; 44][..], b""),
        (&[0xffu8; 1000][..], b"suite"),
    ] {
        // Ours → openssl.
        let ours = crypto::encrypt(&key, &mut rand::rng(), msg, id);
        let plain = openssl(&args_d, &STANDARD.decode(&ours).expect("b64"));
        let pad = *plain.last().expect("non-empty") as usize;
        assert!(
            (1..=32).contains(&pad) && plain.len().is_multiple_of(32),
            "PKCS#7 over 32-byte blocks"
        );
        let body = &plain[..plain.len() - pad];
        let len = u32::from_be_bytes(body[16..20].try_into().expect("4 bytes")) as usize;
        assert_eq!(&body[20..20 + len], msg);
        assert_eq!(&body[20 + len..], id);

        // openssl → ours.
        let mut layout = b"ABCDEFGHIJKLMNOP".to_vec();
        layout.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        layout.extend_from_slice(msg);
        layout.extend_from_slice(id);
        let pad = 32 - layout.len() % 32;
        layout.resize(layout.len() + pad, pad as u8);
        let theirs = STANDARD.encode(openssl(&args_e, &layout));
        let d = crypto::decrypt(&key, &theirs).expect("decrypts openssl's ciphertext");
        assert_eq!(d.message, msg);
        assert_eq!(d.receive_id, id);
    }
}

#[test]
fn openssl_computes_the_same_signature() {
    for v in vectors() {
        let mut parts = [&v.token, &v.timestamp, &v.nonce, &v.encrypted];
        parts.sort();
        let joined: String = parts.iter().map(|s| s.as_str()).collect();
        let out =
            String::from_utf8(openssl(&["dgst", "-sha1", "-r"], joined.as_bytes())).expect("utf-8");
        let digest = out.split_whitespace().next().expect("digest");
        assert_eq!(digest, v.msg_signature, "{}", v.name);
    }
}

// ---- properties ----

fn test_key() -> AesKey {
    AesKey::from_encoding_aes_key("6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt").expect("key")
}

proptest! {
    #[test]
    fn round_trip(msg in prop::collection::vec(any::<u8>(), 0..4096), id in prop::collection::vec(any::<u8>(), 0..64), random in any::<[u8; 16]>()) {
        let key = test_key();
        let e = crypto::encrypt_with_random(&key, random, &msg, &id);
        let d = crypto::decrypt(&key, &e).expect("decrypts");
        prop_assert_eq!(d.message, msg);
        prop_assert_eq!(d.receive_id, id);
    }

    #[test]
    fn any_changed_character_of_the_ciphertext_or_signature_is_rejected(
        msg in "[ -~]{0,200}", pos in any::<prop::sample::Index>(), replacement in "[A-Za-z0-9+/]"
    ) {
        let key = test_key();
        let e = crypto::encrypt(&key, &mut rand::rng(), msg.as_bytes(), b"ww1");
        let sig = crypto::signature("tok", "1700000000", "n", &e);
        // A changed character of the encrypted text.
        let i = pos.index(e.len());
        let mut changed = e.clone().into_bytes();
        if changed[i] == replacement.as_bytes()[0] { return Ok(()); }
        changed[i] = replacement.as_bytes()[0];
        let changed = String::from_utf8(changed).expect("ascii");
        prop_assert_eq!(crypto::verify_signature("tok", "1700000000", "n", &changed, &sig), Err(CryptoError::SignatureMismatch));
        // A changed character of the signature.
        let j = pos.index(sig.len());
        let mut bad = sig.clone().into_bytes();
        bad[j] = if bad[j] == b'0' { b'1' } else { b'0' };
        let bad = String::from_utf8(bad).expect("ascii");
        prop_assert_eq!(crypto::verify_signature("tok", "1700000000", "n", &e, &bad), Err(CryptoError::SignatureMismatch));
        prop_assert!(crypto::verify_signature("tok", "1700000000", "n", &e, &sig).is_ok());
    }

    #[test]
    fn arbitrary_text_never_panics(s in ".{0,300}") {
        let _ = crypto::decrypt(&test_key(), &s);
        let _ = AesKey::from_encoding_aes_key(&s);
        let _ = crypto::verify_signature(&s, &s, &s, &s, &s);
    }

    #[test]
    fn arbitrary_ciphertext_never_panics(blocks in prop::collection::vec(any::<[u8; 16]>(), 0..20)) {
        let bytes: Vec<u8> = blocks.concat();
        let _ = crypto::decrypt(&test_key(), &STANDARD.encode(bytes));
    }
}
