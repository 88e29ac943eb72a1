//! Webhooks (issue 15): a receiver that fails, times out and is down for a while still gets every change at
//! least once, in order per subject, signed per the Standard Webhooks specification (verified by an
//! independent implementation: Python's hmac); the subscriber is marked failing while down, and recovers.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::Value;
use wecom_callback::config::webhooks::WebhookSettings;
use wecom_callback::deliver::sign::Secret;

use crate::feed::post_events;
use crate::helpers::{MAIN, poll, spawn_app_with};
use crate::sync::contact_event;

const T: i64 = 1_700_000_000;

#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    /// Answered 2xx in time (the sender counts it delivered).
    accepted: bool,
}

#[derive(Clone, Default)]
struct Receiver {
    log: Arc<Mutex<Vec<Delivery>>>,
    requests: Arc<AtomicUsize>,
}

impl Receiver {
    fn accepted(&self) -> Vec<Delivery> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|d| d.accepted)
            .cloned()
            .collect()
    }
}

async fn hook(req: HttpRequest, body: web::Bytes, r: web::Data<Receiver>) -> HttpResponse {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let n = r.requests.fetch_add(1, Ordering::SeqCst);
    let mut d = Delivery {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: String::from_utf8_lossy(&body).into_owned(),
        accepted: false,
    };
    // The first three fail, the fourth answers after the sender's timeout, the rest succeed.
    let answer = match n {
        0..=2 => HttpResponse::InternalServerError().finish(),
        3 => {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            HttpResponse::Ok().finish()
        }
        _ => {
            d.accepted = true;
            HttpResponse::NoContent().finish()
        }
    };
    r.log.lock().expect("log").push(d);
    answer
}

fn start_receiver(r: &Receiver, listener: TcpListener) -> actix_web::dev::ServerHandle {
    let data = web::Data::new(r.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/hook", web::post().to(hook))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("listen")
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    handle
}

/// Verifies every delivery's signatures with Python's hmac (an implementation independent of ours): each
/// secret signs `{id}.{timestamp}.{body}` and its `v1,` signature is in the header.
fn verify_with_python(deliveries: &[Delivery], secrets: &[String]) {
    let input = serde_json::json!({
        "secrets": secrets,
        "deliveries": deliveries.iter().map(|d| serde_json::json!({
            "id": d.id, "timestamp": d.timestamp, "signature": d.signature, "body": d.body,
        })).collect::<Vec<_>>(),
    });
    let script = r#"
import base64, hashlib, hmac, json, sys, time
data = json.load(sys.stdin)
ok = 0
for d in data["deliveries"]:
    sigs = [s.split(",", 1)[1] for s in d["signature"].split(" ")]
    assert abs(time.time() - int(d["timestamp"])) < 300, d["timestamp"]
    for secret in data["secrets"]:
        key = base64.b64decode(secret[len("whsec_"):])
        content = (d["id"] + "." + d["timestamp"] + "." + d["body"]).encode()
        expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
        assert any(hmac.compare_digest(expected, s) for s in sigs), (d["id"], secret[:10])
    ok += 1
print(ok)
"#;
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python3 ends");
    assert!(
        out.status.success(),
        "signature verification failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        deliveries.len().to_string()
    );
}

#[tokio::test]
async fn a_failing_slow_and_down_receiver_gets_every_change_in_order_signed() {
    let receiver = Receiver::default();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut handle = start_receiver(&receiver, listener);
    // Two secrets: a rotation in progress.
    let secrets = vec![Secret::generate(), Secret::generate()];
    let parsed: Vec<Secret> = secrets
        .iter()
        .map(|s| Secret::parse(s).expect("secret"))
        .collect();
    let url = reqwest::Url::parse(&format!("http://127.0.0.1:{port}/hook")).expect("url");
    let app = spawn_app_with(&[MAIN], |s| {
        s.api.worker_concurrency = 0;
        s.webhooks = vec![WebhookSettings {
            allow_private: true,
            timeout: Duration::from_millis(300),
            first_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            give_up_after: Duration::from_secs(1),
            max_in_flight: 3,
            ..WebhookSettings::new("crm", url, parsed)
        }];
    })
    .await;
    let events = |from: i64| -> Vec<String> {
        (from..from + 8)
            .map(|i| {
                let change = if i < 4 {
                    "add_external_contact"
                } else {
                    "edit_external_contact"
                };
                contact_event(T + i, change, "alice", &format!("wm{}", i % 4), "")
            })
            .collect()
    };
    post_events(&app, &events(0)).await;
    poll(
        "the first deliveries are accepted",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let n = receiver.accepted().len();
            if n >= 4 { Ok(()) } else { Err(n.to_string()) }
        },
    )
    .await;
    // Down: connections refused while more changes come.
    handle.stop(false).await;
    post_events(&app, &events(8)).await;
    poll(
        "the subscriber is marked failing while the receiver is down",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let failing: Option<(bool, Option<String>)> = sqlx::query_as(
                "SELECT failing_since IS NOT NULL, last_error FROM wecom_webhook_cursors WHERE name = 'crm'",
            )
            .fetch_optional(&app.pool)
            .await
            .expect("query");
            match failing {
                Some((true, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("rebind the receiver's port");
    handle = start_receiver(&receiver, listener);
    let total: i64 = poll(
        "every change is in the feed",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_changes")
                .fetch_one(&app.pool)
                .await
                .expect("count");
            if n == 16 { Ok(n) } else { Err(n.to_string()) }
        },
    )
    .await;
    poll(
        "every change delivered and the subscriber recovered",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let ids: std::collections::HashSet<String> =
                receiver.accepted().into_iter().map(|d| d.id).collect();
            let (failing, position): (bool, i64) = sqlx::query_as(
                "SELECT failing_since IS NOT NULL, position FROM wecom_webhook_cursors WHERE name = 'crm'",
            )
            .fetch_one(&app.pool)
            .await
            .expect("query");
            if ids.len() as i64 == total && !failing && position == total {
                Ok(())
            } else {
                Err(format!("{} delivered, failing {failing}, cursor {position}", ids.len()))
            }
        },
    )
    .await;
    // The operator's view, and a replay from a cursor.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wecom-callback"))
            .env_clear()
            .env("DATABASE_URL", app.database_url())
            .args(args)
            .output()
            .expect("the CLI runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listing = cli(&["webhooks"]);
    let row = listing
        .lines()
        .find(|l| l.starts_with("crm"))
        .unwrap_or_else(|| panic!("{listing}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[1..4], &["16", "0", "ok"], "{row}");
    let before = receiver.accepted().len();
    assert!(
        cli(&["webhooks", "replay", "--name", "crm", "--from", "12"]).contains("after cursor 12")
    );
    poll(
        "the replayed entries arrive again",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let again: Vec<i64> = receiver.accepted()[before..]
                .iter()
                .map(|d| {
                    let b: Value = serde_json::from_str(&d.body).expect("JSON");
                    b["data"]["position"].as_i64().expect("position")
                })
                .collect();
            if again.len() >= 4 {
                let mut sorted = again.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, vec![13, 14, 15, 16]);
                Ok(())
            } else {
                Err(format!("{again:?}"))
            }
        },
    )
    .await;
    handle.stop(false).await;
    let accepted = receiver.accepted();
    // In order per subject: the first accepted delivery of each entry, per customer, in feed order.
    let mut first_seen = std::collections::HashSet::new();
    let mut last_position: std::collections::HashMap<String, i64> = Default::default();
    for d in &accepted {
        if !first_seen.insert(d.id.clone()) {
            continue;
        }
        let body: Value = serde_json::from_str(&d.body).expect("JSON body");
        assert_eq!(d.id, format!("chg_{}", body["data"]["id"]));
        assert!(body["type"].as_str().expect("type").starts_with("contact."));
        let subject = body["data"]["subject"]
            .as_str()
            .expect("subject")
            .to_owned();
        let position = body["data"]["position"].as_i64().expect("position");
        if let Some(prev) = last_position.insert(subject.clone(), position) {
            assert!(
                prev < position,
                "{subject}: {position} delivered after {prev}"
            );
        }
    }
    assert_eq!(first_seen.len(), 16);
    assert_eq!(accepted.len(), 20, "16 deliveries and the 4 replayed");
    let all = receiver.log.lock().expect("log").clone();
    assert!(
        all.len() > accepted.len(),
        "failures and a timeout happened"
    );
    verify_with_python(&all, &secrets);
}

/// Without `allow_private`, a subscriber pointing at a loopback address is refused before any request: the
/// receiver gets nothing, and the last error says why and what to set.
#[tokio::test]
async fn a_private_address_is_refused_unless_allowed() {
    let receiver = Receiver::default();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = start_receiver(&receiver, listener);
    let secret = Secret::parse(&Secret::generate()).expect("secret");
    let app = spawn_app_with(&[MAIN], |s| {
        s.api.worker_concurrency = 0;
        s.webhooks = vec![
            WebhookSettings {
                first_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
                ..WebhookSettings::new(
                    "literal",
                    reqwest::Url::parse(&format!("http://127.0.0.1:{port}/hook")).expect("url"),
                    vec![secret.clone()],
                )
            },
            WebhookSettings {
                first_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
                ..WebhookSettings::new(
                    "by-name",
                    reqwest::Url::parse(&format!("http://localhost:{port}/hook")).expect("url"),
                    vec![secret],
                )
            },
        ];
    })
    .await;
    post_events(
        &app,
        &[contact_event(T, "add_external_contact", "alice", "wm1", "")],
    )
    .await;
    for name in ["literal", "by-name"] {
        let error: String = poll(
            "the delivery is refused",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || async {
                let e: Option<Option<String>> = sqlx::query_scalar(
                    "SELECT last_error FROM wecom_webhook_cursors WHERE name = $1",
                )
                .bind(name)
                .fetch_optional(&app.pool)
                .await
                .expect("query");
                e.flatten().ok_or_else(|| "no error yet".to_owned())
            },
        )
        .await;
        assert!(
            error.contains("private address") && error.contains("allow_private"),
            "{name}: {error}"
        );
    }
    assert_eq!(
        receiver.requests.load(Ordering::SeqCst),
        0,
        "nothing reached the receiver"
    );
    handle.stop(false).await;
}
