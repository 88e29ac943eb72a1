//! Customer identity (issue 13) through HTTP and a fake WeCom API: a unionid conversion hit, a miss answered
//! with a pending id, the pending id resolved when the customer is added later (and NOTIFY saying so), the
//! quota error explained, no second conversion of a cached unionid, and the unionid `externalcontact/get`
//! answers filling the mapping.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::postgres::PgListener;
use wecom_callback::app::AppKind;
use wiremock::matchers::{body_partial_json, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    API_TOKEN, MAIN, TestApp, sign_callback, spawn_app_with, unix_now, wait_for_count,
};
use crate::sync::contact_event;

const SELF_BUILT_CONVERT: &str = "/cgi-bin/externalcontact/unionid_to_external_userid";
const IDCONVERT: &str = "/cgi-bin/idconvert/unionid_to_external_userid";
const PENDING_LOOKUP: &str = "/cgi-bin/idconvert/batch/external_userid_to_pending_id";

async fn app_with_api(server: &MockServer, kind: AppKind) -> TestApp {
    let uri = server.uri();
    spawn_app_with(&[MAIN], move |s| {
        s.apps[0].secret = Some(SecretString::from("app-secret"));
        s.apps[0].kind = kind;
        s.api.base_url = uri;
        s.api.worker_concurrency = 1;
        s.api.max_attempts = 3;
        // No scheduled resync: its calls would hit the fake API too.
        s.api.resync_interval = Duration::ZERO;
    })
    .await
}

async fn mount_token(server: &MockServer) {
    Mock::given(path("/cgi-bin/gettoken"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"errcode": 0, "errmsg": "ok", "access_token": "T", "expires_in": 7200}),
        ))
        .mount(server)
        .await;
}

async fn mount_convert(server: &MockServer, at: &str, unionid: &str, answer: Value) {
    Mock::given(method("POST"))
        .and(path(at))
        .and(query_param("access_token", "T"))
        .and(body_partial_json(json!({"unionid": unionid})))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(server)
        .await;
}

async fn mount_detail(server: &MockServer, external_userid: &str, unionid: Option<&str>) {
    let mut contact = json!({"external_userid": external_userid, "name": "客户", "type": 1});
    if let Some(u) = unionid {
        contact["unionid"] = json!(u);
    }
    Mock::given(path("/cgi-bin/externalcontact/get"))
        .and(query_param("external_userid", external_userid))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "errcode": 0, "errmsg": "ok", "external_contact": contact,
            "follow_user": [{"userid": "alice", "createtime": 1_700_000_000}], "next_cursor": ""
        })))
        .mount(server)
        .await;
}

async fn convert(app: &TestApp, unionid: &str) -> (u16, Option<String>, Value) {
    let r = app
        .client
        .post(format!(
            "{}/api/v1/corps/{}/customers/by-unionid",
            app.address, MAIN.receive_id
        ))
        .bearer_auth(API_TOKEN)
        .json(&json!({"unionid": unionid, "openid": format!("o-{unionid}")}))
        .send()
        .await
        .expect("reply");
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, retry_after, r.json().await.unwrap_or(Value::Null))
}

async fn add(app: &TestApp, external_userid: &str) {
    let xml = contact_event(
        unix_now(),
        "add_external_contact",
        "alice",
        external_userid,
        "",
    );
    let status = app
        .post("main", &sign_callback(&MAIN, &xml, unix_now()))
        .await
        .status()
        .as_u16();
    assert_eq!(status, 200);
}

async fn conversions(server: &MockServer, at: &str) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == at)
        .count()
}

#[tokio::test]
async fn unionids_convert_once_pending_ids_resolve_on_add_and_the_quota_is_explained() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    mount_convert(
        &server,
        SELF_BUILT_CONVERT,
        "u-hit",
        json!({"errcode": 0, "errmsg": "ok", "external_userid": "wmHit"}),
    )
    .await;
    mount_convert(
        &server,
        SELF_BUILT_CONVERT,
        "u-miss",
        json!({"errcode": 0, "errmsg": "ok", "pending_id": "p-miss"}),
    )
    .await;
    mount_convert(
        &server,
        SELF_BUILT_CONVERT,
        "u-quota",
        json!({"errcode": 45009, "errmsg": "api freq out of limit"}),
    )
    .await;
    mount_detail(&server, "wmNew", None).await;
    mount_detail(&server, "wmE2", Some("u-detail")).await;
    Mock::given(path(PENDING_LOOKUP))
        .and(body_partial_json(json!({"external_userid": ["wmNew"]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "errcode": 0, "errmsg": "ok", "result": [{"external_userid": "wmNew", "pending_id": "p-miss"}]
        })))
        .mount(&server)
        .await;
    let app = app_with_api(&server, AppKind::SelfBuilt).await;

    // Hit: the customer's external_userid; asked again, it comes from the cache.
    let (status, _, body) = convert(&app, "u-hit").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["external_userid"], "wmHit");
    assert_eq!(body["pending_id"], Value::Null);
    assert_eq!(body["cached"], false);
    let (status, _, again) = convert(&app, "u-hit").await;
    assert_eq!(status, 200);
    assert_eq!(again["external_userid"], "wmHit");
    assert_eq!(again["cached"], true);

    // Miss: a pending id, valid about 90 days.
    let (status, _, body) = convert(&app, "u-miss").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["external_userid"], Value::Null);
    assert_eq!(body["pending_id"], "p-miss");
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(body["expires_at"].clone()).expect("expires_at");
    let days = (expires - chrono::Utc::now()).num_days();
    assert!(
        (89..=90).contains(&days),
        "pending ids live 90 days: {days}"
    );

    // Quota: 45009 answered 429 with the explanation, asked of WeCom once (no retry loop), not cached.
    let (status, retry_after, body) = convert(&app, "u-quota").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "wecom_quota");
    assert_eq!(body["errcode"], 45009);
    let message = body["message"].as_str().unwrap_or("");
    assert!(message.contains("100,000 conversions an hour"), "{message}");
    assert!(message.contains("shared"), "{message}");
    assert_eq!(retry_after.as_deref(), Some("3600"));
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM customer_identities WHERE unionid = 'u-quota'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(n, 0, "a refusal is not an answer to cache");

    // Later the person becomes a customer: the add resolves the pending id, and NOTIFY says so.
    let mut listener = PgListener::connect_with(&app.pool).await.expect("listener");
    listener
        .listen("wecom_contact_changed")
        .await
        .expect("listen");
    add(&app, "wmNew").await;
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM customer_identities WHERE unionid = 'u-miss' AND external_userid = 'wmNew' \
         AND pending_id = 'p-miss' AND resolved_at IS NOT NULL AND source = 'pending_resolved'",
        1,
    )
    .await;
    let resolved = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = listener.recv().await.expect("notification");
            let p: Value = serde_json::from_str(n.payload()).expect("JSON");
            if p["kind"] == "identity" {
                return p;
            }
        }
    })
    .await
    .expect("an identity notification in time");
    assert_eq!(resolved["change"], "pending_resolved");
    assert_eq!(resolved["pending_id"], "p-miss");
    assert_eq!(resolved["external_userid"], "wmNew");
    assert_eq!(resolved["unionid"], "u-miss");
    assert_eq!(resolved["corp_id"], MAIN.receive_id);
    let (status, _, body) = convert(&app, "u-miss").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            &body["external_userid"],
            &body["pending_id"],
            &body["cached"]
        ),
        (&json!("wmNew"), &json!("p-miss"), &json!(true))
    );
    assert!(body["resolved_at"].is_string(), "{body}");
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM customer_identity_checks",
        0,
    )
    .await;

    // The unionid externalcontact/get answers fills the mapping: no conversion is needed for it.
    add(&app, "wmE2").await;
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM customer_identities WHERE unionid = 'u-detail' AND external_userid = 'wmE2' \
         AND source = 'contact_detail'",
        1,
    )
    .await;
    let (status, _, body) = convert(&app, "u-detail").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["external_userid"], "wmE2");
    assert_eq!(body["cached"], true);

    // hit, miss, quota: one conversion each, none for the cached answers.
    assert_eq!(conversions(&server, SELF_BUILT_CONVERT).await, 3);
    assert_eq!(conversions(&server, IDCONVERT).await, 0);
    // Only the add that came while a pending id was open asked for pending ids.
    assert_eq!(conversions(&server, PENDING_LOOKUP).await, 1);
}

/// A 代开发 (agency) app converts through `idconvert/`; an unknown corp and a malformed body are refused
/// with what to do.
#[tokio::test]
async fn an_agency_app_converts_through_idconvert_and_bad_requests_say_why() {
    let server = MockServer::start().await;
    mount_token(&server).await;
    mount_convert(
        &server,
        IDCONVERT,
        "u-agency",
        json!({"errcode": 0, "errmsg": "ok", "external_userid": "wmA", "pending_id": ""}),
    )
    .await;
    let app = app_with_api(&server, AppKind::Agency).await;
    let (status, _, body) = convert(&app, "u-agency").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["external_userid"], "wmA");
    assert_eq!(
        body["pending_id"],
        Value::Null,
        "an empty pending_id is none"
    );
    assert_eq!(conversions(&server, IDCONVERT).await, 1);
    assert_eq!(conversions(&server, SELF_BUILT_CONVERT).await, 0);

    let r = app
        .client
        .post(format!(
            "{}/api/v1/corps/wwOTHER/customers/by-unionid",
            app.address
        ))
        .bearer_auth(API_TOKEN)
        .json(&json!({"unionid": "u1", "openid": "o1"}))
        .send()
        .await
        .expect("reply");
    assert_eq!(r.status().as_u16(), 404);
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(body["error"], "no_app");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("WECOM_SECRET"),
        "{body}"
    );

    let r = app
        .client
        .post(format!(
            "{}/api/v1/corps/{}/customers/by-unionid",
            app.address, MAIN.receive_id
        ))
        .bearer_auth(API_TOKEN)
        .json(&json!({"unionid": "u1", "openid": ""}))
        .send()
        .await
        .expect("reply");
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.expect("JSON");
    assert!(
        body["message"].as_str().unwrap_or("").contains("openid"),
        "{body}"
    );

    let r = app
        .client
        .post(format!(
            "{}/api/v1/corps/{}/customers/by-unionid",
            app.address, MAIN.receive_id
        ))
        .json(&json!({"unionid": "u1", "openid": "o1"}))
        .send()
        .await
        .expect("reply");
    assert_eq!(r.status().as_u16(), 401, "the bearer token is required");
    assert_eq!(conversions(&server, IDCONVERT).await, 1);
}
