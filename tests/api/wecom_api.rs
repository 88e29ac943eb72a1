//! The WeCom API client against a fake WeCom (wiremock) and a real PostgreSQL token cache.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;
use wecom_callback::sync::client::{ApiError, Credentials, WecomApi};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{MAIN, spawn_app_with};

const SECRET: &str = "the-app-secret-never-logged";

fn creds() -> Credentials {
    Credentials {
        corp_id: "ww_corp".into(),
        secret: SecretString::from(SECRET),
        source: Default::default(),
    }
}

fn token_ok(token: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(
        json!({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200}),
    )
}

fn follow_ok() -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({"errcode": 0, "errmsg": "ok", "follow_user": ["zhangsan", "lisi"]}))
}

fn err(code: i64, msg: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"errcode": code, "errmsg": msg}))
}

async fn client(server: &MockServer, pool: &sqlx::PgPool) -> WecomApi {
    WecomApi::new(&server.uri(), pool.clone())
        .expect("client")
        .with_backoff(Duration::from_millis(10))
}

#[tokio::test]
async fn the_token_is_fetched_once_and_shared_by_two_replicas() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/cgi-bin/gettoken"))
        .and(query_param("corpid", "ww_corp"))
        .and(query_param("corpsecret", SECRET))
        .respond_with(token_ok("TOKEN1").set_delay(Duration::from_millis(300)))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/cgi-bin/externalcontact/get_follow_user_list"))
        .and(query_param("access_token", "TOKEN1"))
        .respond_with(follow_ok())
        .expect(8)
        .mount(&server)
        .await;
    // Two instances of the service (separate clients, separate pools) at once.
    let other_pool = sqlx::PgPool::connect_with((*app.pool.connect_options()).clone())
        .await
        .expect("second pool");
    let a = client(&server, &app.pool).await;
    let b = client(&server, &other_pool).await;
    let calls = (0..8).map(|i| {
        let c = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { c.follow_user_list(&creds()).await }
    });
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.expect("ok"), vec!["zhangsan", "lisi"]);
    }
    // The secret is not stored, only its hash.
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT row_to_json(t)::text FROM wecom_access_tokens t")
            .fetch_all(&app.pool)
            .await
            .expect("rows");
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].contains(SECRET));
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_call_retried_once() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let server = MockServer::start().await;
    Mock::given(path("/cgi-bin/gettoken"))
        .respond_with(token_ok("OLD"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/gettoken"))
        .respond_with(token_ok("NEW"))
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_follow_user_list"))
        .and(query_param("access_token", "OLD"))
        .respond_with(err(40014, "invalid access_token"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_follow_user_list"))
        .and(query_param("access_token", "NEW"))
        .respond_with(follow_ok())
        .expect(2)
        .mount(&server)
        .await;
    let c = client(&server, &app.pool).await;
    assert_eq!(c.follow_user_list(&creds()).await.expect("ok").len(), 2);

    // Expiry mid-run (the cached one is past its time): fetched again before use.
    sqlx::query("UPDATE wecom_access_tokens SET expires_at = now() - interval '1 minute'")
        .execute(&app.pool)
        .await
        .expect("expire");
    assert_eq!(c.follow_user_list(&creds()).await.expect("ok").len(), 2);
    let token: String = sqlx::query_scalar("SELECT access_token FROM wecom_access_tokens")
        .fetch_one(&app.pool)
        .await
        .expect("token");
    assert_eq!(token, "NEW");
}

#[tokio::test]
async fn a_token_refused_twice_is_an_error_not_a_loop() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let server = MockServer::start().await;
    Mock::given(path("/cgi-bin/gettoken"))
        .respond_with(token_ok("T"))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_follow_user_list"))
        .respond_with(err(42001, "access_token expired, hint: [abc]"))
        .expect(2)
        .mount(&server)
        .await;
    let e = client(&server, &app.pool)
        .await
        .follow_user_list(&creds())
        .await
        .expect_err("fails");
    assert_eq!(e.errcode(), Some(42001));
}

#[tokio::test]
async fn busy_and_rate_limited_answers_are_retried_with_backoff() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let server = MockServer::start().await;
    Mock::given(path("/cgi-bin/gettoken"))
        .respond_with(token_ok("T"))
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_follow_user_list"))
        .respond_with(err(45009, "api freq out of limit"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_follow_user_list"))
        .respond_with(err(-1, "system busy"))
        .up_to_n_times(2)
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_follow_user_list"))
        .respond_with(follow_ok())
        .with_priority(3)
        .mount(&server)
        .await;
    let c = client(&server, &app.pool).await;
    assert_eq!(
        c.follow_user_list(&creds())
            .await
            .expect("after 3 retries")
            .len(),
        2
    );

    // Busy for longer than the retries allow: the error comes back.
    server.reset().await;
    Mock::given(path("/cgi-bin/gettoken"))
        .respond_with(token_ok("T"))
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_follow_user_list"))
        .respond_with(err(-1, "system busy"))
        .expect(4)
        .mount(&server)
        .await;
    assert_eq!(
        c.follow_user_list(&creds())
            .await
            .expect_err("busy")
            .errcode(),
        Some(-1)
    );
}

#[tokio::test]
async fn permission_errors_are_explained_and_never_retried() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let server = MockServer::start().await;
    Mock::given(path("/cgi-bin/gettoken"))
        .respond_with(token_ok("T"))
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_follow_user_list"))
        .respond_with(err(
            60020,
            "not allow to access from your ip, hint: [1576065934_28_e0fae], from ip: 203.0.113.7, more info at https://open.work.weixin.qq.com/devtool/query?e=60020",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let e = client(&server, &app.pool)
        .await
        .follow_user_list(&creds())
        .await
        .expect_err("60020");
    let text = e.to_string();
    assert!(text.contains("203.0.113.7"), "{text}");
    assert!(text.contains("企业可信IP"), "{text}");
    assert!(
        text.contains("1576065934_28_e0fae"),
        "the hint for support: {text}"
    );
}

#[tokio::test]
async fn a_wrong_secret_is_not_retried_and_the_secret_never_shows() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let server = MockServer::start().await;
    Mock::given(path("/cgi-bin/gettoken"))
        .respond_with(err(40001, "invalid credential"))
        .expect(1)
        .mount(&server)
        .await;
    let e = client(&server, &app.pool)
        .await
        .follow_user_list(&creds())
        .await
        .expect_err("40001");
    let text = e.to_string();
    assert!(text.contains("secret"), "{text}");
    assert!(!text.contains(SECRET));

    // WeCom unreachable: the error names the base URL, never the query with the secret.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let c = WecomApi::new(&format!("http://127.0.0.1:{closed}"), app.pool.clone()).expect("client");
    let e = c.follow_user_list(&creds()).await.expect_err("unreachable");
    assert!(matches!(e, ApiError::Unreachable { .. }));
    assert!(!e.to_string().contains(SECRET), "{e}");
}

#[test]
fn explain_works_offline() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wecom-callback"))
        .args(["explain", "48002"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("可调用接口的应用"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wecom-callback"))
        .args(["explain", "123456"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
}

#[tokio::test]
async fn a_contact_with_followers_on_several_pages_comes_back_merged() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let server = MockServer::start().await;
    Mock::given(path("/cgi-bin/gettoken"))
        .respond_with(token_ok("T"))
        .mount(&server)
        .await;
    // The first page is asked for without a cursor, the next ones with WeCom's next_cursor.
    Mock::given(method("GET"))
        .and(path("/cgi-bin/externalcontact/get"))
        .and(query_param("external_userid", "wmE1"))
        .and(query_param("cursor", "P2"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({
                    "errcode": 0, "errmsg": "ok",
                    "external_contact": {"external_userid": "wmE1", "name": "second page copy"},
                    "follow_user": [{"userid": "bob"}, {"userid": "carol"}], "next_cursor": ""
                }))
                .set_delay(Duration::from_millis(400)),
        )
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/cgi-bin/externalcontact/get"))
        .and(query_param("external_userid", "wmE1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "errcode": 0, "errmsg": "ok",
            "external_contact": {"external_userid": "wmE1", "name": "李雷", "future_field": 1},
            "follow_user": [{"userid": "alice", "remark": "r"}], "next_cursor": "P2"
        })))
        .expect(1)
        .with_priority(2)
        .mount(&server)
        .await;
    let c = client(&server, &app.pool).await;
    let before = chrono::Utc::now();
    let fetched = c.external_contact(&creds(), "wmE1").await.expect("detail");
    let after = chrono::Utc::now();
    // As of the first page's request: the second page's 400 ms come after it.
    assert!(
        fetched.at >= before && fetched.at <= after - chrono::Duration::milliseconds(390),
        "fetched at {} for a call from {before} to {after}",
        fetched.at
    );
    let d = fetched.value;
    let c = d.external_contact.expect("contact");
    assert_eq!(c.name.as_deref(), Some("李雷"), "the first page's contact");
    let users: Vec<_> = d
        .follow_user
        .iter()
        .filter_map(|f| f.userid.as_deref())
        .collect();
    assert_eq!(users, vec!["alice", "bob", "carol"]);
    assert_eq!(d.next_cursor, "");
}

#[tokio::test]
async fn an_answer_that_is_not_json_is_a_bad_response() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let server = MockServer::start().await;
    Mock::given(path("/cgi-bin/gettoken"))
        .respond_with(token_ok("T"))
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_corp_tag_list"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>gateway</html>"))
        .mount(&server)
        .await;
    let e = client(&server, &app.pool)
        .await
        .corp_tag_list(&creds())
        .await
        .expect_err("not JSON");
    assert!(matches!(e, ApiError::BadResponse(_)), "{e}");
    assert!(e.to_string().contains("not its JSON"), "{e}");
}

#[tokio::test]
async fn concurrent_callers_make_one_gettoken() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let server = MockServer::start().await;
    Mock::given(path("/cgi-bin/gettoken"))
        .respond_with(token_ok("ONE").set_delay(Duration::from_millis(500)))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server, &app.pool).await;
    let calls = (0..10).map(|_| {
        let c = c.clone();
        async move { c.access_token(&creds()).await }
    });
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.expect("token"), "ONE");
    }
    let leases: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_token_leases")
        .fetch_one(&app.pool)
        .await
        .expect("leases");
    assert_eq!(leases, 0, "the lease is given back");
}

#[tokio::test]
async fn a_short_lived_token_is_used_for_its_remaining_life() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let server = MockServer::start().await;
    // 200 s: less than the 300 s refresh margin.
    Mock::given(path("/cgi-bin/gettoken"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"errcode": 0, "errmsg": "ok", "access_token": "SHORT", "expires_in": 200}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server, &app.pool).await;
    for _ in 0..5 {
        assert_eq!(c.access_token(&creds()).await.expect("token"), "SHORT");
    }
}

#[tokio::test]
async fn a_slow_gettoken_holds_no_database_connection() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let server = MockServer::start().await;
    Mock::given(path("/cgi-bin/gettoken"))
        .respond_with(token_ok("SLOW").set_delay(Duration::from_secs(2)))
        .expect(1)
        .mount(&server)
        .await;
    // A pool of two connections shared by four waiting callers and other work.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with((*app.pool.connect_options()).clone())
        .await
        .expect("small pool");
    let c = client(&server, &pool).await;
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.access_token(&creds()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // While gettoken is under way, other queries still get a connection at once.
    for _ in 0..10 {
        let started = std::time::Instant::now();
        sqlx::query("SELECT 1").execute(&pool).await.expect("query");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "waited {:?} for a connection",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for caller in callers {
        assert_eq!(caller.await.expect("join").expect("token"), "SLOW");
    }
}
