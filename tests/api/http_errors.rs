//! The exact answers of refusals, as clients and WeCom's console see them.

use serde_json::{Value, json};

use crate::helpers::{
    API_TOKEN, MAIN, TestApp, sign_callback, spawn_app, spawn_app_with, unix_now,
};

async fn api_get(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app
        .client
        .get(format!("{}/api/v1{path}", app.address))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("reply");
    (r.status().as_u16(), r.json().await.expect("json"))
}

#[tokio::test]
async fn read_api_errors_are_json_with_a_code_and_a_message() {
    let app = spawn_app().await;
    let bad_cursor =
        json!({"error": "bad_cursor", "message": "cursor is not one this API returned"});
    let cases = [
        (
            "/corps/c/staff/alice/customers?status=gone",
            400,
            json!({"error": "bad_status", "message": "status must be active, pending, deleted_by_staff, deleted_by_customer or removed"}),
        ),
        (
            "/corps/c/staff/alice/customers?limit=0",
            400,
            json!({"error": "bad_limit", "message": "limit must be at least 1"}),
        ),
        (
            "/corps/c/staff/alice/customers?cursor=!!",
            400,
            bad_cursor.clone(),
        ),
        // Valid base64 of "nope", which is not a timeline position.
        (
            "/corps/c/customers/wmX/timeline?cursor=bm9wZQ",
            400,
            bad_cursor,
        ),
        (
            "/corps/c/customers/wmX",
            404,
            json!({"error": "not_found", "message": "no such customer in this corp"}),
        ),
    ];
    for (path, status, body) in cases {
        assert_eq!(api_get(&app, path).await, (status, body), "{path}");
    }
}

#[tokio::test]
async fn the_token_is_checked_before_the_body_is_read() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(format!("{}/api/v1/miniprogram/session", app.address))
        .header("content-type", "application/json")
        .body("not json")
        .send()
        .await
        .expect("reply");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        r.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"error": "unauthorized"})
    );
}

#[tokio::test]
async fn callback_paths_without_an_app_answer_404_with_the_reason() {
    let app = spawn_app().await;
    let query = "msg_signature=x&timestamp=1&nonce=1&echostr=a";
    for (method, path, body) in [
        (
            "GET",
            "/callback",
            "not found: several apps are configured; use /callback/{app}",
        ),
        (
            "POST",
            "/callback",
            "not found: several apps are configured; use /callback/{app}",
        ),
        (
            "GET",
            "/callback/nope",
            "not found: no app is configured under this path",
        ),
        (
            "POST",
            "/callback/nope",
            "not found: no app is configured under this path",
        ),
    ] {
        let url = format!("{}{path}?{query}", app.address);
        let req = match method {
            "GET" => app.client.get(url),
            _ => app.client.post(url).body("<xml/>"),
        };
        let r = req.send().await.expect("reply");
        assert_eq!(r.status().as_u16(), 404, "{method} {path}");
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(r.text().await.expect("body"), body, "{method} {path}");
    }
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    // Only the POST to an unknown app is counted, as before.
    assert!(
        metrics.contains(r#"wecom_callbacks_total{app="-",outcome="unknown_app"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn callback_serves_the_only_app() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let xml = "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>change_external_contact</Event><ChangeType>edit_external_contact</ChangeType><UserID>u</UserID><ExternalUserID>wmONLY</ExternalUserID></xml>";
    let cb = sign_callback(&MAIN, xml, unix_now());
    let r = app
        .client
        .post(format!("{}/callback?{}", app.address, cb.query))
        .body(cb.body.clone())
        .send()
        .await
        .expect("reply");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(app.event_count().await, 1);
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains(r#"wecom_callbacks_total{app="main",outcome="stored"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"wecom_callback_duration_seconds_count{app="main",method="POST"} 1"#),
        "{metrics}"
    );
}
