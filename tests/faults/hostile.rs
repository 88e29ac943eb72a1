//! Hostile input against the real service process: more than a thousand malformed requests across classes,
//! slow clients beside legitimate traffic, memory and log hygiene.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wecom_callback::wecom::crypto::{self, AesKey};

use crate::cluster::Cluster;
use crate::harness::{CANARY, CORP, KEY, Service, TOKEN, callbacks};

struct Bad {
    class: &'static str,
    query: String,
    body: Vec<u8>,
    chunked: bool,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn signed(encrypt: &str, ts: i64) -> String {
    let nonce = format!("{}", rand::random::<u32>());
    let sig = crypto::signature(TOKEN, &ts.to_string(), &nonce, encrypt);
    format!("msg_signature={sig}&timestamp={ts}&nonce={nonce}")
}

fn envelope(encrypt: &str) -> Vec<u8> {
    format!("<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>").into_bytes()
}

fn plaintext(i: usize) -> String {
    format!(
        "<xml><ToUserName>{CORP}</ToUserName><CreateTime>1700000000</CreateTime><MsgType>event</MsgType><Event>change_external_contact</Event><ChangeType>edit_external_contact</ChangeType><UserID>u</UserID><ExternalUserID>wmHOSTILE{i}</ExternalUserID><State>{CANARY}</State></xml>"
    )
}

/// At least `n` malformed requests, cycling through every class.
fn hostile(n: usize) -> Vec<Bad> {
    let key = AesKey::from_encoding_aes_key(KEY).expect("key");
    let other = AesKey::from_bytes([9u8; 32]);
    let mut rng = rand::rng();
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < n {
        i += 1;
        let good = crypto::encrypt(&key, &mut rng, plaintext(i).as_bytes(), CORP.as_bytes());
        let q = signed(&good, now());
        let sig = q
            .split('&')
            .next()
            .unwrap_or("")
            .trim_start_matches("msg_signature=")
            .to_owned();
        let rest = q
            .split_once('&')
            .map(|(_, r)| r.to_owned())
            .unwrap_or_default();
        let mut add = |class, query: String, body: Vec<u8>, chunked| {
            out.push(Bad {
                class,
                query,
                body,
                chunked,
            })
        };
        // Signature defects.
        add(
            "signature",
            format!("msg_signature={}&{rest}", "0".repeat(40)),
            envelope(&good),
            false,
        );
        add(
            "signature",
            format!("msg_signature={}&{rest}", sig.to_uppercase()),
            envelope(&good),
            false,
        );
        add(
            "signature",
            format!("msg_signature={}&{rest}", &sig[..39]),
            envelope(&good),
            false,
        );
        add("signature", rest.clone(), envelope(&good), false);
        add(
            "signature",
            format!("msg_signature={sig}&msg_signature={sig}&{rest}"),
            envelope(&good),
            false,
        );
        add(
            "signature",
            q.clone(),
            envelope(&format!("{}A", &good[..good.len() - 1])),
            false,
        );
        // Outside the window both ways, by a margin: the list is built before sending. The exact ±299/±301
        // edges are in tests/api/bad_input.rs, sent the moment they are signed.
        add(
            "timestamp",
            signed(&good, now() - 400),
            envelope(&good),
            false,
        );
        add(
            "timestamp",
            signed(&good, now() + 400),
            envelope(&good),
            false,
        );
        add(
            "timestamp",
            q.replace("timestamp=", "timestamp=x"),
            envelope(&good),
            false,
        );
        add(
            "timestamp",
            signed(&good, 99_999_999_999_999),
            envelope(&good),
            false,
        );
        // Sizes, by length and chunked.
        let huge = format!("<xml><Encrypt>{}</Encrypt></xml>", "A".repeat(70 * 1024)).into_bytes();
        add("size", q.clone(), huge.clone(), false);
        add("size", q.clone(), huge, true);
        // XML attacks and odd encodings.
        add("xml", q.clone(), format!("<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY l2 \"&lol;&lol;&lol;&lol;&lol;&lol;\"><!ENTITY l3 \"&l2;&l2;&l2;&l2;&l2;\">]><xml><Encrypt>{good}</Encrypt><A>&l3;</A></xml>").into_bytes(), false);
        add("xml", q.clone(), format!("<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><xml><Encrypt>{good}</Encrypt><A>&e;</A></xml>").into_bytes(), false);
        add(
            "xml",
            q.clone(),
            format!(
                "{}<Encrypt>{good}</Encrypt>{}",
                "<a>".repeat(200),
                "</a>".repeat(200)
            )
            .into_bytes(),
            false,
        );
        add(
            "xml",
            q.clone(),
            format!("<xml><Encrypt>{good}</Encrypt><Encrypt>{good}</Encrypt></xml>").into_bytes(),
            false,
        );
        add(
            "xml",
            q.clone(),
            {
                let mut b = vec![0xff, 0xfe];
                for u in format!("<xml><Encrypt>{good}</Encrypt></xml>").encode_utf16() {
                    b.extend_from_slice(&u.to_le_bytes());
                }
                b
            },
            false,
        );
        add(
            "xml",
            q.clone(),
            b"<xml><Encrypt>\xe9\xe8</Encrypt></xml>".to_vec(),
            false,
        );
        add(
            "xml",
            q.clone(),
            format!("<xml><?php system('id'); ?><Encrypt>{good}</Encrypt></xml>").into_bytes(),
            false,
        );
        add(
            "xml",
            q.clone(),
            format!("<xml><Encrypt>{good}</Encrypt>").into_bytes(),
            false,
        );
        // Base64 and padding defects, correctly signed so they reach the decryptor.
        for bad in [
            "!!!!".to_owned(),
            format!("{good} "),
            STANDARD.encode([0u8; 17]),
            STANDARD.encode((0..64).map(|_| rand::random::<u8>()).collect::<Vec<u8>>()),
            crypto::encrypt(&other, &mut rng, plaintext(i).as_bytes(), CORP.as_bytes()),
        ] {
            add("decrypt", signed(&bad, now()), envelope(&bad), false);
        }
        // The wrong receive id inside the ciphertext.
        let wrong = crypto::encrypt(&key, &mut rng, plaintext(i).as_bytes(), b"wwSOMEBODYELSE");
        add("receive_id", signed(&wrong, now()), envelope(&wrong), false);
    }
    out
}

async fn send(port: u16, b: &Bad) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut req = format!("POST /callback/main?{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: text/xml\r\n", b.query).into_bytes();
    if b.chunked {
        req.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        for c in b.body.chunks(4096) {
            req.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            req.extend_from_slice(c);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
    } else {
        req.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.body.len()).as_bytes());
        req.extend_from_slice(&b.body);
    }
    let _ = s.write_all(&req).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_hostile_requests_get_4xx_store_nothing_and_leak_nothing() {
    let _serial = crate::SERIAL.lock().await;
    let pg = Cluster::start();
    let dir = crate::scratch_dir();
    let log = dir.join("service.log");
    // trust auth accepts any password: this one must never reach a log.
    let db_url = pg
        .url("wecom")
        .replace("postgres@", "postgres:DBPASS-do-not-log@");
    let svc = Service::spawn(&db_url, &dir.join("spool"), &log);
    let port = svc.port();
    let client = wecom_callback::tls::client_builder()
        .build()
        .expect("client");

    // Warm up with legitimate traffic, then take the memory baseline.
    let legit = callbacks(300);
    for c in &legit[..100] {
        let r = client
            .post(format!("http://127.0.0.1:{port}/callback/main?{}", c.query))
            .body(c.body.clone())
            .send()
            .await
            .expect("reply");
        assert_eq!(r.status().as_u16(), 200);
    }
    let rss_before = svc.rss_kb().expect("rss");

    let bad = hostile(1_000);
    assert!(bad.len() >= 1_000);
    let mut by_class = std::collections::BTreeMap::<&str, usize>::new();
    for chunk in bad.chunks(16) {
        let statuses = futures_util::future::join_all(chunk.iter().map(|b| send(port, b))).await;
        for (b, status) in chunk.iter().zip(statuses) {
            assert!((400..500).contains(&status), "{} got {status}", b.class);
            *by_class.entry(b.class).or_default() += 1;
        }
    }
    eprintln!("hostile requests by class: {by_class:?}");

    // Slow clients: heads and bodies that trickle, while legitimate callbacks keep flowing.
    let mut slow = Vec::new();
    for k in 0..16 {
        slow.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let head = if k % 2 == 0 {
                "POST /callback/main?msg_signature=".to_owned()
            } else {
                "POST /callback/main?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n<xml>"
                    .to_owned()
            };
            let _ = s.write_all(head.as_bytes()).await;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(8) {
                tokio::time::sleep(Duration::from_millis(400)).await;
                if s.write_all(b"a").await.is_err() {
                    break;
                }
            }
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
            String::from_utf8_lossy(&buf)
                .split_whitespace()
                .nth(1)
                .map(str::to_owned)
        }));
    }
    let mut latencies = Vec::new();
    for c in &legit[100..] {
        let t = Instant::now();
        let r = client
            .post(format!("http://127.0.0.1:{port}/callback/main?{}", c.query))
            .body(c.body.clone())
            .send()
            .await
            .expect("reply");
        latencies.push(t.elapsed());
        assert_eq!(r.status().as_u16(), 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    assert!(
        p99 < Duration::from_millis(250),
        "legitimate traffic slowed to p99 {p99:?} by slow clients"
    );
    for s in slow {
        let status = s.await.expect("slow client");
        // Cut off by the server: 408, or the connection closed.
        assert!(
            matches!(status.as_deref(), None | Some("408") | Some("400")),
            "slow client got {status:?}"
        );
    }

    // Nothing stored but the legitimate callbacks.
    let pool = PgPool::connect(&pg.url("wecom")).await.expect("connect");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_events")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(rows, legit.len() as i64);
    let hostile_rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM wecom_events WHERE fields->>'ExternalUserID' LIKE 'wmHOSTILE%'",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(hostile_rows, 0);
    pool.close().await;

    // Healthy, and memory flat.
    let r = client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status().as_u16(), 200);
    let rss_after = svc.rss_kb().expect("rss");
    assert!(
        rss_after < rss_before + 16 * 1024,
        "memory grew from {rss_before} kB to {rss_after} kB"
    );
    eprintln!("RSS {rss_before} kB → {rss_after} kB");
    drop(svc);

    // Log hygiene at info level.
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("callback rejected"), "rejections are logged");
    for secret in [TOKEN, KEY, CANARY, "DBPASS-do-not-log"] {
        assert!(!text.contains(secret), "the log contains {secret:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
