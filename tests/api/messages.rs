//! The texts a first-time operator reads when something is wrong: each says what failed and the fix for
//! that failure, once.

use std::process::Command;

use crate::helpers::{MAIN, fresh_database};

const BIN: &str = env!("CARGO_BIN_EXE_wecom-callback");

fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    for var in [
        "WECOM_CONFIG",
        "WECOM_TOKEN",
        "WECOM_ENCODING_AES_KEY",
        "WECOM_CORP_ID",
        "WECOM_LISTEN",
        "WECOM_API_TOKEN",
        "WECOM_SECRET",
        "DATABASE_URL",
        "WECOM_LOCAL_PG_ADDR",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_port_in_use_is_not_called_a_database_problem() {
    let (_guard, url) = fresh_database();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (ok, out) = run(
        &["serve"],
        &[
            ("DATABASE_URL", &url),
            ("WECOM_LISTEN", &addr),
            ("WECOM_TOKEN", MAIN.token),
            ("WECOM_ENCODING_AES_KEY", MAIN.encoding_aes_key),
            ("WECOM_CORP_ID", MAIN.receive_id),
        ],
    );
    assert!(!ok);
    let error = out
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or(&out);
    assert!(
        error.contains("port in use") && error.contains(&addr),
        "{out}"
    );
    assert!(
        !error.contains("PostgreSQL"),
        "not a database problem: {error}"
    );
}

#[test]
fn a_missing_role_is_said_once_with_its_fix() {
    let (ok, out) = run(
        &["migrate"],
        &[(
            "DATABASE_URL",
            "postgres://nosuchrole@127.0.0.1:5432/wecom_nosuch",
        )],
    );
    assert!(!ok);
    assert!(
        out.contains("refused the login") && out.contains("createuser"),
        "{out}"
    );
    assert_eq!(
        out.matches("does not exist").count(),
        1,
        "the cause once: {out}"
    );
    assert!(
        !out.contains("apt-get install"),
        "PostgreSQL is running; installing it is not the fix: {out}"
    );
}

#[test]
fn nothing_listening_says_start_postgresql() {
    let (ok, out) = run(
        &["migrate"],
        &[("DATABASE_URL", "postgres://postgres@127.0.0.1:9/wecom_x")],
    );
    assert!(!ok);
    assert!(
        out.contains("connection refused") && out.contains("start PostgreSQL"),
        "{out}"
    );
    assert_eq!(out.matches("refused").count(), 1, "the cause once: {out}");
}

/// A missing database the role may not create is called missing, with the command that creates it.
#[test]
fn a_missing_database_the_role_cannot_create_says_so() {
    let admin = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-qc"])
        .arg(
            "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'wecom_nocreate') THEN \
             CREATE ROLE wecom_nocreate LOGIN NOCREATEDB; END IF; END$$",
        )
        .status()
        .expect("psql");
    assert!(admin.success());
    let (ok, out) = run(
        &["migrate"],
        &[(
            "DATABASE_URL",
            "postgres://wecom_nocreate@127.0.0.1:5432/wecom_never_created",
        )],
    );
    assert!(!ok);
    assert!(
        out.contains("does not exist") && out.contains("createdb -O") && out.contains("CREATEDB"),
        "{out}"
    );
    assert_eq!(
        out.matches("permission denied").count(),
        1,
        "the cause once: {out}"
    );
}

mod miniprogram {
    use secrecy::SecretString;
    use serde_json::{Value, json};
    use wiremock::matchers::path;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use crate::helpers::{API_TOKEN, MAIN, spawn_app_with};

    async fn app_with(server: &MockServer) -> crate::helpers::TestApp {
        Mock::given(path("/cgi-bin/gettoken"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"errcode": 0, "access_token": "T", "expires_in": 7200})),
            )
            .mount(server)
            .await;
        let uri = server.uri();
        spawn_app_with(&[MAIN], move |s| {
            s.apps[0].secret = Some(SecretString::from("mini-secret"));
            s.api.base_url = uri;
        })
        .await
    }

    async fn post(app: &crate::helpers::TestApp, body: &str) -> (u16, Value) {
        // Longer than the service's own 10 s limit on WeCom.
        let client = wecom_callback::tls::client_builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("client");
        let r = client
            .post(format!("{}/api/v1/miniprogram/session", app.address))
            .bearer_auth(API_TOKEN)
            .header("content-type", "text/plain")
            .body(body.to_owned())
            .send()
            .await
            .expect("reply");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
        )
    }

    #[tokio::test]
    async fn each_errcode_gets_its_own_advice_and_bad_json_is_answered_as_json() {
        let server = MockServer::start().await;
        Mock::given(path("/cgi-bin/miniprogram/jscode2session"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "errcode": 60020, "errmsg": "not allow to access from your ip, hint: [h1], from ip: 198.51.100.4"
            })))
            .mount(&server)
            .await;
        let app = app_with(&server).await;
        let (status, body) = post(&app, r#"{"app": "main", "code": "c"}"#).await;
        assert_eq!(status, 502);
        let message = body["message"].as_str().expect("message");
        assert!(
            message.contains("198.51.100.4") && message.contains("企业可信IP"),
            "{message}"
        );
        assert!(
            !message.contains("linked to the mini-program"),
            "60020 is not a link problem: {message}"
        );

        let (status, body) = post(&app, "{not json").await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "bad_request");
        assert!(
            body["message"]
                .as_str()
                .expect("message")
                .contains("\"code\""),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_hanging_wecom_is_called_a_timeout() {
        let server = MockServer::start().await;
        Mock::given(path("/cgi-bin/miniprogram/jscode2session"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"errcode": 0}))
                    .set_delay(std::time::Duration::from_secs(12)),
            )
            .mount(&server)
            .await;
        let app = app_with(&server).await;
        let (status, body) = post(&app, r#"{"app": "main", "code": "c"}"#).await;
        assert_eq!(status, 502);
        let message = body["message"].as_str().expect("message");
        assert!(
            message.contains("timed out") && message.contains("10 s"),
            "{message}"
        );
        assert!(
            !message.contains("access_token=") && !message.contains("error sending request"),
            "{message}"
        );
    }
}

/// send-test calls the URL exactly as given: a trailing slash the service refuses fails here as it would for
/// WeCom, and the plain URL passes.
#[tokio::test]
async fn send_test_keeps_the_url_as_given() {
    let app = crate::helpers::spawn_app_with(&[MAIN], |_| {}).await;
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&app.pool)
        .await
        .expect("db");
    let url = crate::helpers::database_url_for(&db);
    let base = app.address.clone();
    let (ok_slash, out_slash, ok_plain, out_plain) = tokio::task::spawn_blocking(move || {
        let env = [
            ("DATABASE_URL", url.as_str()),
            ("WECOM_TOKEN", MAIN.token),
            ("WECOM_ENCODING_AES_KEY", MAIN.encoding_aes_key),
            ("WECOM_CORP_ID", MAIN.receive_id),
            ("WECOM_APP_NAME", "main"),
        ];
        let slash = format!("{base}/callback/main/");
        let plain = format!("{base}/callback/main");
        let (a, b) = run(&["send-test", "--url", &slash, "--no-verify"], &env);
        let (c, d) = run(&["send-test", "--url", &plain, "--no-verify"], &env);
        (a, b, c, d)
    })
    .await
    .expect("join");
    assert!(!ok_slash, "{out_slash}");
    assert!(out_slash.contains("status 404"), "{out_slash}");
    assert!(ok_plain, "{out_plain}");
}

/// send-test is safe against production: its events are stored (the receiver did its job) but no synced
/// table gets a row and no API job is queued, even for an app with a secret.
#[tokio::test]
async fn send_test_events_touch_no_synced_table_and_queue_no_job() {
    let app = crate::helpers::spawn_app_with(&[MAIN], |s| {
        s.apps[0].secret = Some(secrecy::SecretString::from("send-test-secret"));
        // Nothing may be called; an unreachable WeCom makes any job fail visibly instead.
        s.api.base_url = "http://127.0.0.1:9".into();
        s.api.worker_concurrency = 0;
    })
    .await;
    let url = format!("{}/callback/main", app.address);
    let out = tokio::task::spawn_blocking(move || {
        let mut args = vec!["send-test", "--url", url.as_str(), "--no-verify"];
        for e in wecom_callback::tools::send_test::EVENTS
            .iter()
            .filter(|e| **e != "suite_ticket")
        {
            args.extend(["--event", e]);
        }
        run(
            &args,
            &[
                ("WECOM_TOKEN", MAIN.token),
                ("WECOM_ENCODING_AES_KEY", MAIN.encoding_aes_key),
                ("WECOM_CORP_ID", MAIN.receive_id),
                ("WECOM_APP_NAME", "main"),
            ],
        )
    })
    .await
    .expect("join");
    assert!(out.0, "{}", out.1);
    assert_eq!(app.event_count().await, 9, "{}", out.1);
    crate::helpers::wait_applied(&app.pool).await;
    for sql in [
        "SELECT count(*) FROM external_contacts",
        "SELECT count(*) FROM external_contact_follows",
        "SELECT count(*) FROM external_group_chats",
        "SELECT count(*) FROM external_corp_tags",
        "SELECT count(*) FROM staff",
        "SELECT count(*) FROM wecom_jobs",
    ] {
        let n: i64 = sqlx::query_scalar(sql)
            .fetch_one(&app.pool)
            .await
            .expect("count");
        assert_eq!(n, 0, "{sql} after send-test");
    }
}

/// `explain` takes a negative callback code without `--`, and WeCom's answer as pasted (its IP and hint).
#[test]
fn explain_takes_negative_codes_and_pasted_answers() {
    let (ok, out) = run(&["explain", "-40001"], &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("签名验证错误") && out.contains("The Token differs"),
        "{out}"
    );
    let pasted = r#"{"errcode":60020,"errmsg":"not allow to access from your ip, hint: [1700000000_1_abc], from ip: 203.0.113.9, more info at https://open.work.weixin.qq.com/devtool/query?e=60020"}"#;
    let (ok, out) = run(&["explain", pasted], &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("203.0.113.9") && out.contains("企业可信IP"),
        "{out}"
    );
    assert!(out.contains("hint 1700000000_1_abc"), "{out}");
    let (ok, out) = run(&["explain", "-40099"], &[]);
    assert!(!ok, "an unknown code is not explained away: {out}");
}

/// A stand-in PostgreSQL that refuses every login as a server with password authentication does (the local
/// test cluster trusts every connection, so a real wrong password cannot be tried here): it answers the
/// startup message with an ErrorResponse of SQLSTATE 28P01, as PostgreSQL does after a wrong password.
fn refusing_postgres() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let read_packet = |s: &mut std::net::TcpStream| -> Option<Vec<u8>> {
                let mut len = [0u8; 4];
                s.read_exact(&mut len).ok()?;
                let n = u32::from_be_bytes(len) as usize;
                let mut body = vec![0u8; n.saturating_sub(4)];
                s.read_exact(&mut body).ok()?;
                Some(body)
            };
            let Some(first) = read_packet(&mut s) else {
                continue;
            };
            // SSLRequest (code 80877103): "N", no TLS; the startup message follows.
            if first.get(..4) == Some(&80_877_103u32.to_be_bytes()[..]) {
                let _ = s.write_all(b"N");
                if read_packet(&mut s).is_none() {
                    continue;
                }
            }
            let mut fields = Vec::new();
            for (tag, value) in [
                (b'S', "FATAL"),
                (b'V', "FATAL"),
                (b'C', "28P01"),
                (b'M', "password authentication failed for user \"postgres\""),
            ] {
                fields.push(tag);
                fields.extend_from_slice(value.as_bytes());
                fields.push(0);
            }
            fields.push(0);
            let mut msg = vec![b'E'];
            msg.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
            msg.extend_from_slice(&fields);
            let _ = s.write_all(&msg);
        }
    });
    addr
}

#[test]
fn a_wrong_password_says_fix_the_password_once() {
    let addr = refusing_postgres();
    let (ok, out) = run(
        &["migrate"],
        &[(
            "DATABASE_URL",
            &format!("postgres://postgres:wrong@{addr}/wecom_x?sslmode=disable"),
        )],
    );
    assert!(!ok);
    assert!(
        out.contains("refused the password") && out.contains("fix the password in DATABASE_URL"),
        "{out}"
    );
    assert_eq!(
        out.matches("password authentication failed").count(),
        1,
        "the cause once: {out}"
    );
    assert!(
        !out.contains("wrong"),
        "the password is never printed: {out}"
    );
    assert!(
        !out.contains("start PostgreSQL") && !out.contains("apt-get"),
        "PostgreSQL answered; starting or installing it is not the fix: {out}"
    );
}
