//! The first run on a fresh machine: no DATABASE_URL and nothing on the local PostgreSQL port, so `serve`
//! runs a private cluster on a Unix socket and stops it on shutdown.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{MAIN, sign_callback, unix_now, wait_ready};

const BIN: &str = env!("CARGO_BIN_EXE_wecom-callback");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn serve(data: &std::path::Path, port: u16, closed: u16) -> std::process::Child {
    Command::new(BIN)
        .arg("serve")
        .env_remove("DATABASE_URL")
        .env_remove("WECOM_CONFIG")
        .env("WECOM_TOKEN", MAIN.token)
        .env("WECOM_ENCODING_AES_KEY", MAIN.encoding_aes_key)
        .env("WECOM_CORP_ID", MAIN.receive_id)
        .env("WECOM_LISTEN", format!("127.0.0.1:{port}"))
        .env("WECOM_LOCAL_PG_ADDR", format!("127.0.0.1:{closed}"))
        .env("WECOM_EMBEDDED_DATA_DIR", data.join("pg"))
        .env("WECOM_SPOOL_DIR", data.join("spool"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts")
}

async fn stop(mut child: std::process::Child) -> String {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    tokio::task::spawn_blocking(move || {
        let status = crate::helpers::wait_exit(&mut child, 30);
        let mut log = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut log);
        }
        assert!(status.success(), "exit {status:?}: {log}");
        log
    })
    .await
    .expect("join")
}

fn socket_url(data: &std::path::Path) -> String {
    let socket = data.join("pg/socket");
    format!(
        "postgres://postgres@localhost:5432/wecom_callback?host={}",
        percent_encoding::utf8_percent_encode(
            &socket.to_string_lossy(),
            percent_encoding::NON_ALPHANUMERIC
        )
    )
}

#[tokio::test]
async fn serve_runs_a_private_cluster_when_no_database_is_configured() {
    let data =
        std::env::temp_dir().join(format!("wecom-embedded-{}", uuid::Uuid::new_v4().simple()));
    let closed = free_port();
    let port = free_port();

    let child = serve(&data, port, closed);
    wait_ready(&format!("http://127.0.0.1:{port}"), Duration::from_secs(60)).await;
    let xml = "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>change_external_contact</Event><ChangeType>add_external_contact</ChangeType><UserID>u</UserID><ExternalUserID>wmEMB</ExternalUserID></xml>";
    let cb = sign_callback(&MAIN, xml, unix_now());
    let r = wecom_callback::tls::client_builder()
        .build()
        .expect("client")
        .post(format!("http://127.0.0.1:{port}/callback?{}", cb.query))
        .body(cb.body.clone())
        .send()
        .await
        .expect("reply");
    assert_eq!(r.status().as_u16(), 200);
    let log = stop(child).await;
    assert!(log.contains("private PostgreSQL cluster started"), "{log}");
    assert!(log.contains("private PostgreSQL cluster stopped"), "{log}");
    assert!(
        !data.join("pg/cluster/postmaster.pid").exists(),
        "the cluster is stopped with the service"
    );

    // The next start reuses the cluster and its data.
    let child = serve(&data, port, closed);
    wait_ready(&format!("http://127.0.0.1:{port}"), Duration::from_secs(60)).await;
    let pool = sqlx::PgPool::connect(&socket_url(&data))
        .await
        .expect("socket connection");
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM wecom_events WHERE fields->>'ExternalUserID' = 'wmEMB'",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(n, 1);
    pool.close().await;
    stop(child).await;
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn without_postgres_binaries_the_message_says_how_to_get_them() {
    let out = Command::new(BIN)
        .arg("serve")
        .env_remove("DATABASE_URL")
        .env_remove("WECOM_CONFIG")
        .env("WECOM_TOKEN", MAIN.token)
        .env("WECOM_ENCODING_AES_KEY", MAIN.encoding_aes_key)
        .env("WECOM_CORP_ID", MAIN.receive_id)
        .env("WECOM_LOCAL_PG_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("WECOM_POSTGRES_BIN", "/nonexistent/bin")
        .env(
            "WECOM_EMBEDDED_DATA_DIR",
            std::env::temp_dir().join("wecom-never-created"),
        )
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("apt-get install postgresql"), "{err}");
    assert!(err.contains("DATABASE_URL"), "{err}");
}

/// A SIGKILLed serve leaves its private cluster running: the next serve finds it by its postmaster.pid and
/// uses it (instead of failing in pg_ctl with "another server might be running"), then stops it on exit. The
/// cluster's URL is written where other commands and scripts find it.
#[tokio::test]
async fn a_killed_serve_leaves_a_cluster_the_next_serve_adopts() {
    let data =
        std::env::temp_dir().join(format!("wecom-embedded-{}", uuid::Uuid::new_v4().simple()));
    let (closed, port) = (free_port(), free_port());
    let mut child = serve(&data, port, closed);
    wait_ready(&format!("http://127.0.0.1:{port}"), Duration::from_secs(60)).await;
    let url_file =
        std::fs::read_to_string(data.join("pg/database_url")).expect("database_url written");
    assert_eq!(url_file.trim(), socket_url(&data));
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    assert!(
        data.join("pg/cluster/postmaster.pid").exists(),
        "the orphaned cluster is still running"
    );

    let child = serve(&data, port, closed);
    wait_ready(&format!("http://127.0.0.1:{port}"), Duration::from_secs(60)).await;
    let log = stop(child).await;
    assert!(log.contains("still running from a previous serve"), "{log}");
    assert!(log.contains("private PostgreSQL cluster stopped"), "{log}");
    assert!(
        !data.join("pg/cluster/postmaster.pid").exists(),
        "the adopted cluster is stopped with the service"
    );
    let _ = std::fs::remove_dir_all(&data);
}

/// A command other than serve, with no database configured and nothing on the local port, the way
/// `serve` above runs.
fn command(data: &std::path::Path, closed: u16, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("WECOM_CONFIG")
        .env_remove("RUST_LOG")
        .env("WECOM_TOKEN", MAIN.token)
        .env("WECOM_ENCODING_AES_KEY", MAIN.encoding_aes_key)
        .env("WECOM_CORP_ID", MAIN.receive_id)
        .env("WECOM_LOCAL_PG_ADDR", format!("127.0.0.1:{closed}"))
        .env("WECOM_EMBEDDED_DATA_DIR", data.join("pg"))
        .env("WECOM_SPOOL_DIR", data.join("spool"))
        .output()
        .expect("runs")
}

/// While serve runs its private cluster, every other command finds it through the `database_url` file and
/// says so; with no cluster, or a stopped one, the message says what to do.
#[tokio::test]
async fn other_commands_find_the_private_cluster_serve_runs() {
    let data =
        std::env::temp_dir().join(format!("wecom-embedded-{}", uuid::Uuid::new_v4().simple()));
    let (closed, port) = (free_port(), free_port());

    // Before any serve: no cluster to find.
    let out = command(&data, closed, &["jobs", "list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no private cluster either"), "{err}");
    assert!(err.contains("DATABASE_URL="), "{err}");
    assert!(err.contains("wecom-callback serve"), "{err}");

    let child = serve(&data, port, closed);
    wait_ready(&format!("http://127.0.0.1:{port}"), Duration::from_secs(60)).await;
    let xml = "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>change_external_contact</Event><ChangeType>add_external_contact</ChangeType><UserID>u</UserID><ExternalUserID>wmFIND</ExternalUserID></xml>";
    let cb = sign_callback(&MAIN, xml, unix_now());
    let r = wecom_callback::tls::client_builder()
        .build()
        .expect("client")
        .post(format!("http://127.0.0.1:{port}/callback?{}", cb.query))
        .body(cb.body.clone())
        .send()
        .await
        .expect("reply");
    assert_eq!(r.status().as_u16(), 200);

    let d = data.clone();
    let outputs = tokio::task::spawn_blocking(move || {
        [
            vec!["events"],
            vec!["jobs", "list"],
            vec!["status"],
            vec!["migrate"],
        ]
        .map(|args| (args.join(" "), command(&d, closed, &args)))
    })
    .await
    .expect("join");
    for (args, out) in &outputs {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("using the private cluster serve runs")
                && err.contains(&*data.join("pg/database_url").to_string_lossy()),
            "{args}: {err}"
        );
        assert!(
            !err.contains("no private cluster") && !err.contains("connection refused"),
            "{args}: {err}"
        );
    }
    let events = String::from_utf8_lossy(&outputs[0].1.stdout);
    assert!(outputs[0].1.status.success());
    assert!(events.contains("change_external_contact"), "{events}");
    assert!(outputs[1].1.status.success());
    assert!(outputs[3].1.status.success());
    stop(child).await;

    // serve stopped its cluster: the file is still there, and the message says to start serve.
    let out = command(&data, closed, &["events"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("is not running"), "{err}");
    assert!(err.contains("Start `wecom-callback serve`"), "{err}");
    let _ = std::fs::remove_dir_all(&data);
}
