use crate::helpers::spawn_app;

#[tokio::test]
async fn healthz_and_readyz_answer_ok_when_migrated() {
    let app = spawn_app().await;
    let r = app.get("/healthz").await;
    assert_eq!(r.status().as_u16(), 200);
    let r = app.get("/readyz").await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.expect("body"), "ready");
}

#[tokio::test]
async fn readyz_fails_when_migrations_are_missing() {
    let app = spawn_app().await;
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&app.pool)
        .await
        .expect("delete");
    let r = app.get("/readyz").await;
    assert_eq!(r.status().as_u16(), 503);
}

#[tokio::test]
async fn metrics_count_callbacks_by_app_and_outcome() {
    use crate::helpers::{MAIN, sign_callback, unix_now};
    let app = spawn_app().await;
    let xml = "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>change_external_contact</Event><ChangeType>del_follow_user</ChangeType><UserID>u</UserID><ExternalUserID>wm1</ExternalUserID></xml>";
    let unknown = "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>brand_new</Event></xml>";
    app.deliver(unknown).await;
    let cb = sign_callback(&MAIN, xml, unix_now());
    for _ in 0..3 {
        assert_eq!(app.post("main", &cb).await.status().as_u16(), 200);
    }
    let bad = sign_callback(&MAIN, xml, unix_now() - 1000);
    assert_eq!(app.post("main", &bad).await.status().as_u16(), 403);
    let text = app.get("/metrics").await.text().await.expect("body");
    assert!(
        text.contains(r#"wecom_callbacks_total{app="main",outcome="stored"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"wecom_callbacks_total{app="main",outcome="duplicate"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"wecom_callbacks_total{app="main",outcome="stale_timestamp"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("wecom_callback_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("wecom_apply_pending_events"), "{text}");
}

#[tokio::test]
async fn domain_verification_files_are_served_at_the_root() {
    let app = crate::helpers::spawn_app_with(&[crate::helpers::MAIN], |s| {
        s.verification_files
            .insert("WW_verify_AbCd1234.txt".into(), "AbCd1234".into());
    })
    .await;
    let r = app.get("/WW_verify_AbCd1234.txt").await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.expect("body"), "AbCd1234");
    assert_eq!(app.get("/WW_verify_other.txt").await.status().as_u16(), 404);
    assert_eq!(app.get("/etc%2Fpasswd").await.status().as_u16(), 404);
}

#[tokio::test]
async fn metrics_can_live_on_their_own_address() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let app = crate::helpers::spawn_app_with(&[crate::helpers::MAIN], move |s| {
        s.metrics_listen = Some(format!("127.0.0.1:{port}").parse().expect("addr"));
    })
    .await;
    assert_eq!(
        app.get("/metrics").await.status().as_u16(),
        404,
        "not on the public listener"
    );
    let r = wecom_callback::tls::client_builder()
        .build()
        .expect("client")
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("metrics listener");
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.expect("body").contains("wecom_spool_bytes"));
}
