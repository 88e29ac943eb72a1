//! WeCom's URL verification (GET), through HTTP, with the public vectors.

use wecom_callback::app::AppKind;

use crate::helpers::{MAIN, SUITE, TestAppConfig, encode, spawn_app, spawn_app_with, unix_now};

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

/// The public WeCom vectors in `tests/data/vectors.json` (provenance in `tests/data/README.md`).
pub fn vectors() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/vectors.json"
    ))
    .expect("tests/data/vectors.json");
    serde_json::from_str(&text).expect("vectors.json")
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

#[tokio::test]
async fn every_official_verify_url_vector_passes_over_http() {
    let vectors: Vec<Vector> = vectors()
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("vector"))
        .filter(|v: &Vector| v.kind == "verify_url")
        .collect();
    assert!(vectors.len() >= 3, "expected the three verify_url vectors");
    let apps: Vec<TestAppConfig> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| TestAppConfig {
            name: leak(&format!("v{i}")),
            kind: AppKind::SelfBuilt,
            token: leak(&v.token),
            encoding_aes_key: leak(&v.encoding_aes_key),
            receive_id: leak(&v.receive_id),
        })
        .collect();
    // The vectors were signed years ago: disable the replay window for them.
    let app = spawn_app_with(&apps, |s| {
        s.http.timestamp_tolerance = std::time::Duration::ZERO
    })
    .await;
    for (i, v) in vectors.iter().enumerate() {
        // Percent-encoded exactly as WeCom sends it ('+' as %2B, '/' as %2F, '=' as %3D).
        let path = format!(
            "/callback/v{i}?msg_signature={}&timestamp={}&nonce={}&echostr={}",
            v.msg_signature,
            v.timestamp,
            v.nonce,
            encode(&v.encrypted)
        );
        let started = std::time::Instant::now();
        let r = app.get(&path).await;
        let elapsed = started.elapsed();
        assert_eq!(r.status().as_u16(), 200, "{}", v.name);
        let body = r.bytes().await.expect("body");
        // Byte for byte: no quotes, newline or BOM.
        assert_eq!(&body[..], v.expected_plaintext.as_bytes(), "{}", v.name);
        assert!(elapsed.as_millis() < 1000, "{}: WeCom allows 1 s", v.name);
    }
    assert_eq!(app.event_count().await, 0, "verification stores nothing");
}

#[tokio::test]
async fn the_official_request_line_works_as_written_in_the_docs() {
    let app = spawn_app_with(&[MAIN], |s| {
        s.http.timestamp_tolerance = std::time::Duration::ZERO
    })
    .await;
    // The request line from WeCom's sample, verbatim, on the single-app route /callback.
    let r = app
        .get("/callback?msg_signature=5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3&timestamp=1409659589&nonce=263014780&echostr=P9nAzCzyDtyTWESHep1vC5X9xho%2FqYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp%2B4RPcs8TgAE7OaBO%2BFZXvnaqQ%3D%3D")
        .await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.expect("body"), "1616140317555161061");
}

#[tokio::test]
async fn a_fresh_verification_with_the_replay_window_on() {
    let app = spawn_app().await;
    let echo = "4471590214384710183";
    let encrypted = wecom_callback::wecom::crypto::encrypt(
        &SUITE.key(),
        &mut rand::rng(),
        echo.as_bytes(),
        SUITE.receive_id.as_bytes(),
    );
    let ts = unix_now().to_string();
    let sig = wecom_callback::wecom::crypto::signature(SUITE.token, &ts, "n1", &encrypted);
    let r = app
        .get(&format!(
            "/callback/suite?msg_signature={sig}&timestamp={ts}&nonce=n1&echostr={}",
            encode(&encrypted)
        ))
        .await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.expect("body"), echo);

    // The same request decoded twice (a '+' turned into a space) is refused, never misread.
    if encrypted.contains('+') {
        let mangled = encrypted.replace('+', " ");
        let r = app
            .get(&format!(
                "/callback/suite?msg_signature={sig}&timestamp={ts}&nonce=n1&echostr={}",
                encode(&mangled)
            ))
            .await;
        assert_eq!(r.status().as_u16(), 400);
    }

    // The wrong token: refused with the uniform answer.
    let bad = wecom_callback::wecom::crypto::signature("otherToken", &ts, "n1", &encrypted);
    let r = app
        .get(&format!(
            "/callback/suite?msg_signature={bad}&timestamp={ts}&nonce=n1&echostr={}",
            encode(&encrypted)
        ))
        .await;
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test]
async fn several_apps_need_the_app_in_the_path() {
    let app = spawn_app().await;
    let r = app
        .get("/callback?msg_signature=x&timestamp=1&nonce=1&echostr=a")
        .await;
    assert_eq!(r.status().as_u16(), 404);
    let r = app
        .get("/callback/nope?msg_signature=x&timestamp=1&nonce=1&echostr=a")
        .await;
    assert_eq!(r.status().as_u16(), 404);
}
