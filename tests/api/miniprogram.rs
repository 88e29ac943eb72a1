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
        json!({"corpid": MAIN.receive_id, "userid": "zhangsan"}),
        "never the session_key"
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
