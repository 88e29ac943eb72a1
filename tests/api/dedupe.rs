//! Exactly once, however often WeCom retries.

use crate::helpers::{MAIN, sign_callback, spawn_app, unix_now};

const XML: &str = "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[wmDUPLICATE]]></ExternalUserID></xml>";

#[tokio::test]
async fn one_callback_sent_fifty_times_concurrently_is_stored_once() {
    let app = spawn_app().await;
    let cb = sign_callback(&MAIN, XML, unix_now());
    let replies = futures_util::future::join_all((0..50).map(|_| app.post("main", &cb))).await;
    for r in replies {
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.text().await.expect("body"), "");
    }
    assert_eq!(app.event_count().await, 1);
}

#[tokio::test]
async fn a_re_encrypted_retry_with_new_nonce_and_timestamp_is_still_one_row() {
    let app = spawn_app().await;
    let first = sign_callback(&MAIN, XML, unix_now());
    let second = sign_callback(&MAIN, XML, unix_now() - 7);
    assert_ne!(first.encrypt, second.encrypt, "a fresh random prefix");
    assert_ne!(first.nonce, second.nonce);
    assert_eq!(app.post("main", &first).await.status().as_u16(), 200);
    assert_eq!(app.post("main", &second).await.status().as_u16(), 200);
    assert_eq!(app.event_count().await, 1);
    // The forensic columns are those of the first delivery.
    let nonce: String = sqlx::query_scalar("SELECT req_nonce FROM wecom_events")
        .fetch_one(&app.pool)
        .await
        .expect("row");
    assert_eq!(nonce, first.nonce);
}

#[tokio::test]
async fn distinct_events_in_the_same_second_are_not_merged() {
    // FromUserName + CreateTime (the official advice) would merge these (docs/protocol.md §5.5).
    let app = spawn_app().await;
    let a = XML.to_owned();
    let b = XML.replace("wmDUPLICATE", "wmOTHER");
    let r = futures_util::future::join_all([
        app.post("main", &sign_callback(&MAIN, &a, unix_now())),
        app.post("main", &sign_callback(&MAIN, &b, unix_now())),
    ])
    .await;
    assert!(r.iter().all(|r| r.status().as_u16() == 200));
    assert_eq!(app.event_count().await, 2);
}

#[tokio::test]
async fn dedupe_is_scoped_by_app() {
    use crate::helpers::{TestAppConfig, spawn_app_with};
    let other = TestAppConfig {
        name: "other",
        ..MAIN
    };
    let app = spawn_app_with(&[MAIN, other.clone()], |_| {}).await;
    assert_eq!(
        app.post("main", &sign_callback(&MAIN, XML, unix_now()))
            .await
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        app.post("other", &sign_callback(&other, XML, unix_now()))
            .await
            .status()
            .as_u16(),
        200
    );
    assert_eq!(app.event_count().await, 2);
}
