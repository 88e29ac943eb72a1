//! The cargo-fuzz corpora (fuzz/corpus/*) replayed as ordinary tests on stable Rust: every input the
//! fuzzers kept must still give a value or an error, never a panic. `scripts/fuzz` runs the fuzzers.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use wecom_callback::wecom::crypto::{AesKey, decrypt};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| std::fs::read(e.path()).expect("read"))
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "empty corpus {target}");
    inputs
}

#[test]
fn envelope_corpus() {
    for input in corpus("envelope") {
        let _ = wecom_callback::wecom::envelope::parse_envelope(&input);
    }
}

#[test]
fn decrypt_corpus() {
    let key = AesKey::from_bytes([7u8; 32]);
    for input in corpus("decrypt") {
        if let Ok(text) = std::str::from_utf8(&input) {
            let _ = decrypt(&key, text);
        }
        let _ = decrypt(&key, &STANDARD.encode(&input));
    }
}

#[test]
fn event_corpus() {
    let mut parsed = 0;
    for input in corpus("event") {
        if let Ok(m) = wecom_callback::wecom::message::parse_message(&input) {
            let _ = wecom_callback::wecom::events::interpret(&m);
            parsed += 1;
        }
    }
    assert!(parsed > 0, "the seeds include valid messages");
}
