//! Our own failure: the database is unreachable. WeCom must get a 5xx (so it may retry), never `success`.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use wecom_callback::http::server::Application;

use wecom_callback::config::Settings;

use crate::helpers::{
    MAIN, SUITE, SignedCallback, TestAppConfig, sign_callback, test_settings, unix_now,
};

/// Starts the service with MAIN against a port nothing listens on (every connection is refused) and
/// returns its HTTP port.
fn spawn_on_dead_database(tweak: impl FnOnce(&mut Settings)) -> u16 {
    spawn_apps_on_dead_database(&[MAIN], tweak)
}

/// Like [`spawn_on_dead_database`], with the given apps.
fn spawn_apps_on_dead_database(apps: &[TestAppConfig], tweak: impl FnOnce(&mut Settings)) -> u16 {
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let mut settings = test_settings(
        apps,
        &format!("postgres://postgres@127.0.0.1:{dead_port}/nothing"),
    );
    tweak(&mut settings);
    let pool = wecom_callback::store::pool(&settings.database).expect("pool");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let app = Application::build_with(settings, pool, listener).expect("build");
    let port = app.port();
    tokio::spawn(app.run_until_stopped());
    port
}

/// A plain HTTP client, as WeCom's.
fn client() -> reqwest::Client {
    wecom_callback::tls::client_builder()
        .build()
        .expect("client")
}

/// POSTs the signed callback `cb` to the app `app` of the service on `port`.
async fn post_callback(
    client: &reqwest::Client,
    port: u16,
    app: &str,
    cb: &SignedCallback,
) -> reqwest::Response {
    client
        .post(format!(
            "http://127.0.0.1:{port}/callback/{app}?{}",
            cb.query
        ))
        .body(cb.body.clone())
        .send()
        .await
        .expect("reply")
}

#[tokio::test]
async fn unreachable_database_gives_503_within_the_deadline() {
    // A port nothing listens on: every connection attempt is refused.
    let port = spawn_on_dead_database(|_| {});

    let client = client();
    let xml = "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>change_external_contact</Event></xml>";
    let cb = sign_callback(&MAIN, xml, unix_now());
    let started = Instant::now();
    let r = post_callback(&client, port, "main", &cb).await;
    let elapsed = started.elapsed();
    assert_eq!(r.status().as_u16(), 503);
    let body = r.text().await.expect("body");
    assert_ne!(body, "success");
    assert!(elapsed < Duration::from_millis(4_500), "took {elapsed:?}");

    let r = client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .expect("reply");
    assert_eq!(r.status().as_u16(), 503);
    let r = client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect("reply");
    assert_eq!(r.status().as_u16(), 200, "the process itself is fine");
}

#[tokio::test]
async fn with_a_spool_an_outage_is_acknowledged_and_drained_later() {
    use std::os::unix::fs::PermissionsExt;

    let spool_dir = std::env::temp_dir().join(format!("wecom-spool-{}", uuid::Uuid::new_v4()));
    let port = spawn_on_dead_database(|s| {
        s.spool.dir = Some(spool_dir.clone());
        s.spool.after = Duration::from_millis(1_000);
    });

    let client = client();
    let xml = "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><CreateTime>1700000000</CreateTime><MsgType>event</MsgType><Event>change_external_contact</Event><ChangeType>del_follow_user</ChangeType><UserID>u</UserID><ExternalUserID>wmSPOOL</ExternalUserID></xml>";
    let cb = sign_callback(&MAIN, xml, unix_now());
    let started = Instant::now();
    let r = post_callback(&client, port, "main", &cb).await;
    assert_eq!(r.status().as_u16(), 200, "spooled, so acknowledged");
    assert!(started.elapsed() < Duration::from_millis(4_500));
    let mode = std::fs::metadata(&spool_dir)
        .expect("dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    // One segment (beside the lock file that keeps other processes out).
    let files: Vec<_> = std::fs::read_dir(&spool_dir)
        .expect("dir")
        .flatten()
        .filter(|f| f.path().extension().is_some_and(|x| x == "spool"))
        .collect();
    assert_eq!(files.len(), 1);
    assert_eq!(
        files[0].metadata().expect("meta").permissions().mode() & 0o777,
        0o600
    );

    // The database comes back (here: a healthy test database): the drain stores it, keeping its arrival time.
    // The service still runs and holds its spool's lock, so the segment is drained from a copy, as from its
    // volume re-attached elsewhere.
    let db = crate::helpers::spawn_app().await;
    assert!(
        wecom_callback::ingest::spool::Spool::open(&spool_dir, 1 << 20).is_err(),
        "a live service's spool is locked"
    );
    let copy_dir = spool_dir.with_extension("copy");
    std::fs::create_dir_all(&copy_dir).expect("copy dir");
    std::fs::copy(files[0].path(), copy_dir.join(files[0].file_name())).expect("copy");
    let spool = wecom_callback::ingest::spool::Spool::open(&copy_dir, 1 << 20).expect("open");
    let apps = [(
        "main".to_owned(),
        test_settings(&[MAIN], "postgres://x@127.0.0.1/x")
            .apps
            .remove(0),
    )]
    .into_iter()
    .collect();
    let n = wecom_callback::ingest::drain::drain_once(&spool, &db.pool, &apps)
        .await
        .expect("drained");
    assert_eq!(n, 1);
    let (ext, received): (String, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT fields->>'ExternalUserID', received_at FROM wecom_events")
            .fetch_one(&db.pool)
            .await
            .expect("row");
    assert_eq!(ext, "wmSPOOL");
    assert!(
        received < chrono::Utc::now() - chrono::Duration::milliseconds(100),
        "arrival time kept"
    );
    assert_eq!(spool.bytes(), 0);
    // Draining again (a crash after insert, before delete) adds nothing.
    assert_eq!(
        wecom_callback::ingest::drain::drain_once(&spool, &db.pool, &apps)
            .await
            .expect("drain"),
        0
    );
    assert_eq!(db.event_count().await, 1);
    let _ = std::fs::remove_dir_all(&spool_dir);
    let _ = std::fs::remove_dir_all(&copy_dir);
}

#[tokio::test]
async fn without_a_spool_or_with_a_full_one_the_answer_is_503() {
    let spool_dir = std::env::temp_dir().join(format!("wecom-spool-{}", uuid::Uuid::new_v4()));
    let port = spawn_on_dead_database(|s| {
        s.spool.dir = Some(spool_dir.clone());
        s.spool.max_bytes = 10; // smaller than any request
        s.spool.after = Duration::from_millis(300);
    });
    let xml = "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>x</Event></xml>";
    let cb = sign_callback(&MAIN, xml, unix_now());
    let r = post_callback(&client(), port, "main", &cb).await;
    assert_eq!(
        r.status().as_u16(),
        503,
        "past the cap: 503, never a false success"
    );
    let _ = std::fs::remove_dir_all(&spool_dir);
}

#[tokio::test]
async fn at_start_up_the_service_drains_what_a_crash_left_in_the_spool() {
    let spool_dir = std::env::temp_dir().join(format!("wecom-spool-{}", uuid::Uuid::new_v4()));
    let xml = "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><CreateTime>1700000000</CreateTime><MsgType>event</MsgType><Event>change_external_contact</Event><ChangeType>add_external_contact</ChangeType><UserID>u</UserID><ExternalUserID>wmLEFT</ExternalUserID></xml>";
    let cb = sign_callback(&MAIN, xml, unix_now() - 3600);
    {
        // A previous process spooled this, acknowledged it, and died.
        let spool = wecom_callback::ingest::spool::Spool::open(&spool_dir, 1 << 20).expect("open");
        spool
            .append(&wecom_callback::ingest::spool::SpooledRequest {
                app: "main".into(),
                query: cb.query.clone(),
                body: cb.body.clone(),
                received_at_us: (unix_now() - 3600) * 1_000_000,
            })
            .await
            .expect("append");
    }
    let dir = spool_dir.clone();
    let app = crate::helpers::spawn_app_with(&[MAIN], move |s| s.spool.dir = Some(dir)).await;
    // Drained at start-up, with the time it was first received.
    crate::helpers::wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_events WHERE fields->>'ExternalUserID' = 'wmLEFT' AND received_at < now() - interval '30 minutes'",
        1,
    )
    .await;
    crate::helpers::wait_applied(&app.pool).await;
    let _ = std::fs::remove_dir_all(&spool_dir);
}

#[tokio::test]
async fn auth_events_of_a_suite_instruction_url_are_answered_within_a_second_while_the_database_is_down()
 {
    let spool_dir = std::env::temp_dir().join(format!("wecom-spool-{}", uuid::Uuid::new_v4()));
    let port = spawn_apps_on_dead_database(&[MAIN, SUITE], |s| {
        s.spool.dir = Some(spool_dir.clone());
    });
    let client = client();
    let t = unix_now();
    for (i, info) in [
        "create_auth",
        "change_auth",
        "cancel_auth",
        "reset_permanent_code",
        "suite_ticket",
    ]
    .into_iter()
    .enumerate()
    {
        let xml = format!(
            "<xml><SuiteId><![CDATA[ww4asffe99e54c0f4c]]></SuiteId><InfoType><![CDATA[{info}]]></InfoType>\
             <TimeStamp>{t}</TimeStamp><AuthCode><![CDATA[code-{i}]]></AuthCode><AuthCorpId><![CDATA[wxCORP]]></AuthCorpId></xml>"
        );
        let cb = sign_callback(&SUITE, &xml, t);
        let started = Instant::now();
        let r = post_callback(&client, port, "suite", &cb).await;
        let elapsed = started.elapsed();
        assert_eq!(r.status().as_u16(), 200, "{info}");
        assert_eq!(r.text().await.expect("body"), "success", "{info}: spooled");
        assert!(
            elapsed < Duration::from_millis(1_000),
            "{info} took {elapsed:?}"
        );
        assert!(
            elapsed >= Duration::from_millis(400),
            "{info} spooled early: {elapsed:?}"
        );
    }

    // The other kinds keep their budget: the database gets the full spool.after first.
    let xml = "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><CreateTime>1700000000</CreateTime><MsgType>event</MsgType><Event>change_external_contact</Event><ChangeType>del_follow_user</ChangeType><UserID>u</UserID><ExternalUserID>wmSLOW</ExternalUserID></xml>";
    let cb = sign_callback(&MAIN, xml, unix_now());
    let started = Instant::now();
    let r = post_callback(&client, port, "main", &cb).await;
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&spool_dir);
}
