//! The binary itself: `migrate` creates and migrates a missing database, `serve` refuses a bad configuration
//! with the fix in the message, runs from environment variables alone, and stops gracefully on SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{MAIN, fresh_database, sign_callback, unix_now, wait_ready};

const BIN: &str = env!("CARGO_BIN_EXE_wecom-callback");

fn clean_env(cmd: &mut Command) -> &mut Command {
    for var in [
        "WECOM_CONFIG",
        "WECOM_TOKEN",
        "WECOM_ENCODING_AES_KEY",
        "WECOM_CORP_ID",
        "WECOM_RECEIVE_IDS",
        "WECOM_APP_NAME",
        "WECOM_APP_KIND",
        "WECOM_LISTEN",
        "WECOM_API_TOKEN",
        "WECOM_SECRET",
        "WECOM_LOG_FORMAT",
        "WECOM_SPOOL_DIR",
        "WECOM_API_BASE_URL",
        "WECOM_LOCAL_PG_ADDR",
        "DATABASE_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[tokio::test]
async fn migrate_creates_a_missing_database_and_applies_every_migration() {
    let (_guard, url) = fresh_database();
    let out = clean_env(&mut Command::new(BIN))
        .args(["migrate"])
        .env("DATABASE_URL", &url)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pool = sqlx::PgPool::connect(&url)
        .await
        .expect("the database exists now");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .expect("migrations table");
    assert_eq!(
        applied as usize,
        wecom_callback::store::MIGRATOR.iter().count()
    );
    pool.close().await;
}

#[test]
fn serve_refuses_a_bad_configuration_and_says_how_to_fix_it() {
    let out = clean_env(&mut Command::new(BIN))
        .args(["serve"])
        .env("WECOM_TOKEN", "QDG6eK")
        .env(
            "WECOM_ENCODING_AES_KEY",
            "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C=",
        )
        .env("WECOM_CORP_ID", "wx5823bf96d3bd56c7")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WECOM_ENCODING_AES_KEY"), "{stderr}");
    assert!(stderr.contains("drop the trailing '='"), "{stderr}");
    assert!(
        !stderr.contains("jWmYm7qr5nMoAUwZ"),
        "the key leaked: {stderr}"
    );

    let out = clean_env(&mut Command::new(BIN))
        .args(["serve"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WECOM_TOKEN"));
}

#[tokio::test]
async fn serve_runs_from_the_environment_alone_and_stops_gracefully() {
    let (_guard, url) = fresh_database();
    // Its own spool: the default (~/.local/state/…) is shared with every other serve on the machine (another
    // test run, a developer's scripts/run), and a second serve on a spool refuses to start.
    let spool = std::env::temp_dir().join(format!("spool-serve-{}", uuid::Uuid::new_v4()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = clean_env(&mut Command::new(BIN))
        .args(["serve"])
        .env("WECOM_TOKEN", MAIN.token)
        .env("WECOM_ENCODING_AES_KEY", MAIN.encoding_aes_key)
        .env("WECOM_CORP_ID", MAIN.receive_id)
        .env("DATABASE_URL", &url)
        .env("WECOM_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .env("WECOM_SPOOL_DIR", &spool)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let client = wecom_callback::tls::client_builder()
        .build()
        .expect("client");
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base, Duration::from_secs(60)).await;
    // The single app answers on /callback as well as /callback/default.
    let xml = "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>change_external_contact</Event><ChangeType>edit_external_contact</ChangeType><UserID>u</UserID><ExternalUserID>wm1</ExternalUserID></xml>";
    for path in ["/callback", "/callback/default"] {
        let cb = sign_callback(&MAIN, xml, unix_now());
        let r = client
            .post(format!("{base}{path}?{}", cb.query))
            .body(cb.body.clone())
            .send()
            .await
            .expect("reply");
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }

    // SIGTERM: stops accepting, finishes, exits 0.
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || {
        let status = crate::helpers::wait_exit(&mut child, 30);
        let mut log = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut log);
        }
        (status, log)
    })
    .await
    .expect("join");
    let _ = std::fs::remove_dir_all(&spool);
    assert!(
        status.0.success(),
        "exit {:?}; log:\n{}",
        status.0,
        status.1
    );
    assert!(status.1.contains("callback stored"), "{}", status.1);
    assert!(status.1.contains("stopped"), "{}", status.1);
    // Secrets stay out of the log.
    assert!(!status.1.contains(MAIN.token));
    assert!(!status.1.contains(MAIN.encoding_aes_key));
}

#[tokio::test]
async fn json_logs_carry_the_request_id_and_no_plaintext() {
    let (_guard, url) = fresh_database();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let spool = std::env::temp_dir().join(format!("spool-{port}"));
    let mut child = clean_env(&mut Command::new(BIN))
        .args(["serve"])
        .env("WECOM_TOKEN", MAIN.token)
        .env("WECOM_ENCODING_AES_KEY", MAIN.encoding_aes_key)
        .env("WECOM_CORP_ID", MAIN.receive_id)
        .env("DATABASE_URL", &url)
        .env("WECOM_LISTEN", format!("127.0.0.1:{port}"))
        .env("WECOM_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("WECOM_SPOOL_DIR", &spool)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let client = wecom_callback::tls::client_builder()
        .build()
        .expect("client");
    wait_ready(&format!("http://127.0.0.1:{port}"), Duration::from_secs(60)).await;
    let xml = "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>change_external_contact</Event><ChangeType>edit_external_contact</ChangeType><UserID>u</UserID><ExternalUserID>wmSECRETPERSON</ExternalUserID></xml>";
    let cb = sign_callback(&MAIN, xml, unix_now());
    let r = client
        .post(format!("http://127.0.0.1:{port}/callback?{}", cb.query))
        .body(cb.body.clone())
        .send()
        .await
        .expect("reply");
    assert_eq!(r.status().as_u16(), 200);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let log = tokio::task::spawn_blocking(move || {
        let _ = crate::helpers::wait_exit(&mut child, 30);
        let mut log = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut log);
        }
        log
    })
    .await
    .expect("join");
    let _ = std::fs::remove_dir_all(&spool);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let stored = lines
        .iter()
        .find(|l| l["message"] == "callback stored")
        .expect("a stored line");
    assert!(stored["span"]["request_id"].is_string(), "{stored}");
    assert_eq!(stored["span"]["app"], "default");
    assert!(
        !log.contains("wmSECRETPERSON"),
        "decrypted content above debug"
    );
    assert!(!log.contains(&cb.query), "query strings above debug");
}

#[test]
fn serve_help_lists_every_environment_variable_the_readme_names() {
    let out = clean_env(&mut Command::new(BIN))
        .args(["serve", "--help"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let readme = include_str!("../../README.md");
    let mut missing: Vec<&str> = readme
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| (w.starts_with("WECOM_") && w.len() > 6) || *w == "DATABASE_URL")
        .filter(|w| !help.contains(&format!("[env: {w}")))
        .collect();
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "README names {missing:?}, which serve --help does not list:\n{help}"
    );
    // Defaults come from the same constants the configuration uses.
    assert!(help.contains("[default: 300]"), "{help}");
    assert!(help.contains("[default: 127.0.0.1:8080]"), "{help}");
}

#[tokio::test]
async fn jobs_list_shows_a_header_and_short_errors_and_jobs_retry_queues_dead_jobs() {
    let (_guard, url) = fresh_database();
    let jobs = |args: &[&str]| {
        clean_env(&mut Command::new(BIN))
            .args(args)
            .env("DATABASE_URL", &url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("runs")
    };
    let out = jobs(&["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let long = format!(
        "60020: not allow to access from your ip {}\nFix: add it",
        "x".repeat(200)
    );
    let ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO wecom_jobs (kind, app, corp_id, subject, status, attempts, last_error) \
         VALUES ('contact_detail', 'main', 'c', 'wmA', 'dead', 8, $1), \
                ('contact_detail', 'main', 'c', 'wmB', 'dead', 8, $1) RETURNING id",
    )
    .bind(&long)
    .fetch_all(&pool)
    .await
    .expect("insert");

    let out = jobs(&["jobs", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "a header and one line per job:\n{stdout}");
    assert!(
        lines[0].contains("attempts") && lines[0].contains("last error"),
        "{stdout}"
    );
    assert!(
        lines[1].contains("60020") && lines[1].ends_with('…'),
        "{stdout}"
    );
    assert!(!stdout.contains("Fix: add it"), "{stdout}");

    let out = jobs(&["jobs", "retry"]);
    assert!(!out.status.success(), "retry needs --id or --all-dead");
    let out = jobs(&["jobs", "retry", "--id", &ids[0].to_string()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 dead job(s) queued again"));
    let out = jobs(&["jobs", "retry", "--all-dead"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 dead job(s) queued again"));
    let out = jobs(&["jobs", "list", "--status", "queued"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    pool.close().await;
}
