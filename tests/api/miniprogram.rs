//! Mini-program login: a wx.qy.login code exchanged through jscode2session.

use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{API_TOKEN, MAIN, spawn_app_with};

async fn post(app: &crate::helpers::TestApp, body: Value, auth: bool) -> (u16, Value) {
    let mut req = app
        .client
        .post(format!("{}/api/v1/miniprogram/session", app.address))
        .json(&body);
    if auth {
        req = req.bearer_auth(API_TOKEN);
    }
    let r = req.send().await.expect("reply");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_code_becomes_corp_and_user_and_the_session_key_stays_here() {
    let server = MockServer::start().await;
    Mock::given(path("/cgi-bin/gettoken"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"errcode": 0, "access_token": "T", "expires_in": 7200})),
        )
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/miniprogram/jscode2session"))
        .and(query_param("js_code", "good"))
        .and(query_param("grant_type", "authorization_code"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "corpid": MAIN.receive_id, "userid": "zhangsan", "session_key": "kJtdi6RF+Dv67QkbLlPGjw==", "errcode": 0, "errmsg": "ok"
        })))
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/miniprogram/jscode2session"))
        .and(query_param("js_code", "stale"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"errcode": 40029, "errmsg": "invalid code"})),
        )
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/miniprogram/jscode2session"))
        .and(query_param("js_code", "other-app"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"errcode": 48002, "errmsg": "api forbidden"})),
        )
        .mount(&server)
        .await;
    let uri = server.uri();
    let app = spawn_app_with(&[MAIN], move |s| {
        s.apps[0].secret = Some(SecretString::from("mini-secret"));
        s.api.base_url = uri;
    })
    .await;

    let (status, body) = post(&app, json!({"app": "main", "code": "good"}), true).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"corpid": MAIN.receive_id, "userid": "zhangsan", "name": null, "departments": null, "status": null}),
        "never the session_key; the directory does not know zhangsan yet"
    );

    let (status, body) = post(&app, json!({"app": "main", "code": "stale"}), true).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_code");

    let (status, body) = post(&app, json!({"app": "main", "code": "other-app"}), true).await;
    assert_eq!(status, 502);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("linked to the mini-program"),
        "{body}"
    );

    let (status, _) = post(&app, json!({"app": "main", "code": "good"}), false).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn an_app_without_a_secret_says_so() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let (status, body) = post(&app, json!({"app": "main", "code": "x"}), true).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "no_secret");
}

/// `doctor` through the real binary: every check passes against a healthy fake WeCom, and a missing trusted
/// IP is reported with the address to add.
#[tokio::test]
async fn doctor_checks_everything_and_explains_60020() {
    let server = MockServer::start().await;
    Mock::given(path("/cgi-bin/gettoken"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"errcode": 0, "access_token": "T", "expires_in": 7200})),
        )
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_follow_user_list"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"errcode": 0, "follow_user": ["a", "b"]})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_follow_user_list"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"errcode": 60020, "errmsg": "not allow to access from your ip, hint: [x], from ip: 198.51.100.9"})))
        .mount(&server)
        .await;
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&app.pool)
        .await
        .expect("db");
    let url = crate::helpers::database_url_for(&db);
    let public = app.address.clone();
    let base = server.uri();
    let run = move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_wecom-callback"))
            .args(["doctor", "--public-url", &public])
            .env("DATABASE_URL", &url)
            .env("WECOM_API_BASE_URL", &base)
            .env("WECOM_TOKEN", MAIN.token)
            .env("WECOM_ENCODING_AES_KEY", MAIN.encoding_aes_key)
            .env("WECOM_CORP_ID", MAIN.receive_id)
            .env("WECOM_APP_NAME", "main")
            .env("WECOM_SECRET", "s3cret")
            .env("RUST_LOG", "warn")
            .output()
            .expect("runs")
    };
    let first = tokio::task::spawn_blocking(run.clone())
        .await
        .expect("join");
    let text = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        first.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        text.contains("URL verification") && text.contains("2 member(s)"),
        "{text}"
    );
    let second = tokio::task::spawn_blocking(run).await.expect("join");
    let text = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(!second.status.success());
    assert!(
        text.contains("198.51.100.9") && text.contains("企业可信IP"),
        "{text}"
    );
}

/// The served OpenAPI document describes the login: its body (corpid for 代开发) and its refusals.
#[tokio::test]
async fn the_openapi_document_describes_the_mini_program_login() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let r = app.get("/api/v1/openapi.yaml").await;
    assert_eq!(r.status().as_u16(), 200);
    let doc = r.text().await.expect("body");
    let start = doc
        .find("\n  /miniprogram/session:\n")
        .expect("the document has the login path");
    let rest = &doc[start + 1..];
    // Up to the next path (or the components).
    let end = rest[3..]
        .find("\n  /")
        .or_else(|| rest.find("\ncomponents:"))
        .unwrap_or(rest.len());
    let section = &rest[..end];
    assert!(section.contains("post:"), "{section}");
    assert!(section.contains("required: [app, code]"), "{section}");
    for word in [
        "corpid:",
        "'403'",
        "corp_not_authorised",
        "invalid_code",
        "cross_corp",
    ] {
        assert!(
            section.contains(word),
            "the login path lacks {word}: {section}"
        );
    }
}
