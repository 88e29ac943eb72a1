//! Our own failure: the database is unreachable. WeCom must get a 5xx (so it may retry), never `success`.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use wecom_callback::startup::Application;

use crate::helpers::{MAIN, sign_callback, test_settings, unix_now};

#[tokio::test]
async fn unreachable_database_gives_503_within_the_deadline() {
    // A port nothing listens on: every connection attempt is refused.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let settings = test_settings(
        &[MAIN],
        &format!("postgres://postgres@127.0.0.1:{dead_port}/nothing"),
    );
    let pool = wecom_callback::store::pool(&settings.database).expect("pool");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let app = Application::build_with(settings, pool, listener).expect("build");
    let port = app.port();
    tokio::spawn(app.run_until_stopped());

    let client = reqwest::Client::new();
    let xml = "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>change_external_contact</Event></xml>";
    let cb = sign_callback(&MAIN, xml, unix_now());
    let started = Instant::now();
    let r = client
        .post(format!(
            "http://127.0.0.1:{port}/callback/main?{}",
            cb.query
        ))
        .body(cb.body.clone())
        .send()
        .await
        .expect("reply");
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
