//! Several replicas: a spool directory is used by one process at a time (a second `serve` on it refuses to
//! start, naming the holder), and `drain --spool-dir` finishes a stopped replica's spool.

use std::process::{Command, Stdio};
use std::time::Duration;

use wecom_callback::ingest::spool::{Spool, SpooledRequest};

use crate::helpers::{MAIN, fresh_database, sign_callback, unix_now, wait_for_count, wait_ready};

const BIN: &str = env!("CARGO_BIN_EXE_wecom-callback");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The binary with MAIN from the environment, against `url`, and nothing else from this environment.
fn command(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WECOM_TOKEN", MAIN.token)
        .env("WECOM_ENCODING_AES_KEY", MAIN.encoding_aes_key)
        .env("WECOM_CORP_ID", MAIN.receive_id)
        .env("WECOM_APP_NAME", MAIN.name)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "info");
    cmd
}

fn add(external: &str) -> String {
    format!(
        "<xml><ToUserName>{}</ToUserName><CreateTime>1700000000</CreateTime><MsgType>event</MsgType>\
         <Event>change_external_contact</Event><ChangeType>add_external_contact</ChangeType>\
         <UserID>u</UserID><ExternalUserID>{external}</ExternalUserID></xml>",
        MAIN.receive_id
    )
}

fn spooled(plaintext: &str) -> SpooledRequest {
    let cb = sign_callback(&MAIN, plaintext, unix_now() - 3600);
    SpooledRequest {
        app: MAIN.name.into(),
        query: cb.query,
        body: cb.body,
        received_at_us: (unix_now() - 3600) * 1_000_000,
    }
}

#[tokio::test]
async fn a_second_serve_on_the_same_spool_refuses_to_start_naming_the_first() {
    let (_guard, url) = fresh_database();
    let spool = std::env::temp_dir().join(format!("wecom-spool-{}", uuid::Uuid::new_v4()));
    let port = free_port();
    let mut first = command(&url, &["serve"])
        .env("WECOM_LISTEN", format!("127.0.0.1:{port}"))
        .env("WECOM_SPOOL_DIR", &spool)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    wait_ready(&format!("http://127.0.0.1:{port}"), Duration::from_secs(20)).await;

    let second = command(&url, &["serve"])
        .env("WECOM_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("WECOM_SPOOL_DIR", &spool)
        .output()
        .expect("runs");
    let log = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second one started:\n{log}");
    assert!(
        log.contains(&format!("in use by pid {}", first.id())),
        "the holder is named:\n{log}"
    );
    // So is draining a live replica's spool.
    let drain = command(&url, &["drain", "--spool-dir"])
        .arg(&spool)
        .output()
        .expect("runs");
    assert!(!drain.status.success());
    assert!(
        String::from_utf8_lossy(&drain.stderr).contains(&format!("pid {}", first.id())),
        "{}",
        String::from_utf8_lossy(&drain.stderr)
    );

    // Killed, however hard, the first releases it: a new process can take over the directory.
    let _ = first.kill();
    let _ = first.wait();
    let port = free_port();
    let mut third = command(&url, &["serve"])
        .env("WECOM_LISTEN", format!("127.0.0.1:{port}"))
        .env("WECOM_SPOOL_DIR", &spool)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    wait_ready(&format!("http://127.0.0.1:{port}"), Duration::from_secs(20)).await;
    let _ = third.kill();
    let _ = third.wait();
    let _ = std::fs::remove_dir_all(&spool);
}

#[tokio::test]
async fn drain_stores_a_stopped_replicas_spool_once_and_reports_counts() {
    let (_guard, url) = fresh_database();
    let dir = std::env::temp_dir().join(format!("wecom-spool-{}", uuid::Uuid::new_v4()));
    {
        // What a replica acknowledged while PostgreSQL was unreachable, before it died.
        let spool = Spool::open(&dir, 1 << 20).expect("open");
        for ext in ["wmA", "wmB", "wmC"] {
            spool.append(&spooled(&add(ext))).await.expect("append");
        }
        // A retry of wmA that another replica stored already, and one for an app this configuration lacks.
        spool.append(&spooled(&add("wmA"))).await.expect("append");
        let mut foreign = spooled(&add("wmX"));
        foreign.app = "gone".into();
        spool.append(&foreign).await.expect("append");
    }
    // The directory must exist: a mistyped path is not an empty spool.
    let missing = command(&url, &["drain", "--spool-dir"])
        .arg(dir.join("nope"))
        .output()
        .expect("runs");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("is not a directory"));

    let out = command(&url, &["drain", "--spool-dir"])
        .arg(&dir)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("4 callback(s) stored (3 new, 1 already stored)"),
        "{stdout}"
    );
    assert!(stdout.contains("1 rejected"), "{stdout}");
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    wait_for_count(
        &pool,
        "SELECT count(*) FROM wecom_events WHERE received_at < now() - interval '30 minutes'",
        3,
    )
    .await;
    let rejected = std::fs::read_to_string(dir.join("rejected.jsonl")).expect("kept");
    assert!(rejected.contains("\"gone\""), "{rejected}");
    let segments = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "spool"))
        .count();
    assert_eq!(segments, 0, "drained segments are deleted");

    // Again: nothing left, nothing added.
    let again = command(&url, &["drain", "--spool-dir"])
        .arg(&dir)
        .output()
        .expect("runs");
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 segment(s), 0 callback(s)"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_events")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(n, 3);
    pool.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
