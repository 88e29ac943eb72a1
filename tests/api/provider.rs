//! Service providers (issue 14), through HTTP and a fake WeCom provider API: suite tickets per suite, the
//! AuthCode exchange, per-corp tokens for every API feature, cancellation, and the 代开发 flow.

use std::time::{Duration, Instant};

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use wecom_callback::app::AppKind;
use wecom_callback::sync::provider::{Provider, SecretKey, Suite, SuiteKind};
use wiremock::matchers::{body_partial_json, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use wecom_callback::store::read::EventFilter;
use wecom_callback::store::rebuild;

use crate::helpers::{
    TestApp, TestAppConfig, poll, sign_callback, spawn_app_with, unix_now, wait_applied,
    wait_for_count,
};

/// A third-party suite's instruction URL.
const CRM: TestAppConfig = TestAppConfig {
    name: "crm",
    kind: AppKind::SuiteInstruction,
    token: "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo",
    encoding_aes_key: "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt",
    receive_id: "wwSUITECRM",
};

/// A second suite, with its own token and key.
const SHOP: TestAppConfig = TestAppConfig {
    name: "shop",
    kind: AppKind::SuiteInstruction,
    token: "QDG6eK",
    encoding_aes_key: "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
    receive_id: "wwSUITESHOP",
};

/// A 代开发 template's callback URL.
const DK: TestAppConfig = TestAppConfig {
    name: "dk",
    kind: AppKind::SuiteInstruction,
    token: "dkToken123",
    encoding_aes_key: "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt",
    receive_id: "dkTEMPLATE1",
};

/// The 代开发 app's own callback URL (its data callbacks), linked to the template by `data_apps`.
const DK_DATA: TestAppConfig = TestAppConfig {
    name: "dkdata",
    kind: AppKind::Agency,
    token: "dkData456",
    encoding_aes_key: "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
    receive_id: "wwDKCORP",
};

const CORP: &str = "wwAUTHCORP1";
const CODE: &str = "PERMANENT-CODE-1";

fn key() -> SecretKey {
    SecretKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([42u8; 32]))
        .expect("key")
}

fn suite(app: &TestAppConfig, kind: SuiteKind) -> Suite {
    Suite {
        name: app.name.to_owned(),
        kind,
        suite_id: app.receive_id.to_owned(),
        secret: SecretString::from(format!("secret-of-{}", app.name)),
        data_apps: Vec::new(),
    }
}

async fn provider_app(
    server: &MockServer,
    apps: &[TestAppConfig],
    suites: Vec<Suite>,
    tweak: impl FnOnce(&mut Provider),
) -> TestApp {
    provider_app_with(server, apps, suites, tweak, |_| {}).await
}

/// [`provider_app`], with the rest of the settings tweaked too.
async fn provider_app_with(
    server: &MockServer,
    apps: &[TestAppConfig],
    suites: Vec<Suite>,
    tweak: impl FnOnce(&mut Provider),
    settings: impl FnOnce(&mut wecom_callback::config::Settings),
) -> TestApp {
    let uri = server.uri();
    let mut provider = Provider {
        suites,
        key: Some(key()),
        ..Provider::default()
    };
    tweak(&mut provider);
    spawn_app_with(apps, move |s| {
        s.api.base_url = uri;
        s.api.worker_concurrency = 2;
        s.api.max_attempts = 3;
        s.provider = provider;
        settings(s);
    })
    .await
}

fn ok(body: serde_json::Value) -> ResponseTemplate {
    let mut body = body;
    body["errcode"] = json!(0);
    body["errmsg"] = json!("ok");
    ResponseTemplate::new(200).set_body_json(body)
}

fn ticket_xml(suite_id: &str, ticket: &str, t: i64) -> String {
    format!(
        "<xml><SuiteId><![CDATA[{suite_id}]]></SuiteId><InfoType> <![CDATA[suite_ticket]]></InfoType><TimeStamp>{t}</TimeStamp><SuiteTicket><![CDATA[{ticket}]]></SuiteTicket></xml>"
    )
}

fn auth_xml(suite_id: &str, info: &str, inner: &str) -> String {
    format!(
        "<xml><SuiteId><![CDATA[{suite_id}]]></SuiteId><InfoType><![CDATA[{info}]]></InfoType><TimeStamp>{}</TimeStamp>{inner}</xml>",
        unix_now()
    )
}

/// Posts a suite push and checks WeCom gets `success` within its 1 s auth-event deadline.
async fn push(app: &TestApp, to: &TestAppConfig, xml: &str) {
    let started = Instant::now();
    let resp = app.post(to.name, &sign_callback(to, xml, unix_now())).await;
    let elapsed = started.elapsed();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.expect("body"), "success");
    assert!(
        elapsed < Duration::from_secs(1),
        "auth events must be answered within 1 s; took {elapsed:?}"
    );
}

/// The provider endpoints for one suite with ticket `ticket`, authorising [`CORP`] with [`CODE`]; the corp
/// token is `CORP-TOKEN`.
async fn mount_provider(server: &MockServer, suite_id: &str, ticket: &str) {
    Mock::given(path("/cgi-bin/service/get_suite_token"))
        .and(body_partial_json(
            json!({"suite_id": suite_id, "suite_ticket": ticket}),
        ))
        .respond_with(ok(
            json!({"suite_access_token": format!("SUITE-TOKEN-{suite_id}"), "expires_in": 7200}),
        ))
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/service/get_permanent_code"))
        .and(query_param(
            "suite_access_token",
            format!("SUITE-TOKEN-{suite_id}"),
        ))
        .and(body_partial_json(json!({"auth_code": "AUTH-1"})))
        .respond_with(ok(json!({
            "access_token": "IGNORED", "expires_in": 7200, "permanent_code": CODE,
            "auth_corp_info": {"corpid": CORP, "corp_name": "客户公司"},
            "auth_info": {"agent": [{"agentid": 1000005, "name": "CRM"}]}
        })))
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/service/get_corp_token"))
        .and(query_param(
            "suite_access_token",
            format!("SUITE-TOKEN-{suite_id}"),
        ))
        .and(body_partial_json(
            json!({"auth_corpid": CORP, "permanent_code": CODE}),
        ))
        .respond_with(ok(
            json!({"access_token": "CORP-TOKEN", "expires_in": 7200}),
        ))
        .mount(server)
        .await;
}

/// An empty corp's resync answers, for calls made with `token` only.
async fn mount_empty_corp(server: &MockServer, token: &str) {
    for (p, body) in [
        (
            "/cgi-bin/externalcontact/get_follow_user_list",
            json!({"follow_user": []}),
        ),
        (
            "/cgi-bin/externalcontact/get_corp_tag_list",
            json!({"tag_group": []}),
        ),
        (
            "/cgi-bin/externalcontact/get_strategy_tag_list",
            json!({"tag_group": []}),
        ),
        (
            "/cgi-bin/externalcontact/get_unassigned_list",
            json!({"info": [], "is_last": true, "next_cursor": ""}),
        ),
        (
            "/cgi-bin/externalcontact/groupchat/list",
            json!({"group_chat_list": [], "next_cursor": ""}),
        ),
    ] {
        Mock::given(path(p))
            .and(query_param("access_token", token))
            .respond_with(ok(body))
            .mount(server)
            .await;
    }
}

async fn calls_with(server: &MockServer, p: &str, token: &str) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| {
            r.url.path() == p
                && r.url
                    .query_pairs()
                    .any(|(k, v)| (k == "access_token" || k == "suite_access_token") && v == token)
        })
        .count()
}

async fn wait_resynced(app: &TestApp, corp: &str) {
    poll(
        "the authorised corp's first resync",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM wecom_resync_runs WHERE corp_id = $1 AND status = 'done'",
            )
            .bind(corp)
            .fetch_one(&app.pool)
            .await
            .expect("query");
            let jobs: Vec<(String, String, Option<String>)> =
                sqlx::query_as("SELECT kind, status, last_error FROM wecom_jobs ORDER BY id")
                    .fetch_all(&app.pool)
                    .await
                    .expect("jobs");
            if n >= 1 {
                Ok(())
            } else {
                Err(format!("{jobs:?}"))
            }
        },
    )
    .await;
}

/// Ticket, then create_auth: the corp is authorised and resynced.
async fn authorise(app: &TestApp, to: &TestAppConfig) {
    push(app, to, &ticket_xml(to.receive_id, "TICKET-1", unix_now())).await;
    push(
        app,
        to,
        &auth_xml(
            to.receive_id,
            "create_auth",
            "<AuthCode><![CDATA[AUTH-1]]></AuthCode><State><![CDATA[s]]></State>",
        ),
    )
    .await;
    wait_resynced(app, CORP).await;
}

#[tokio::test]
async fn tickets_of_two_suites_never_overwrite_each_other_and_the_newest_push_wins() {
    let server = MockServer::start().await;
    let app = provider_app(
        &server,
        &[CRM, SHOP],
        vec![
            suite(&CRM, SuiteKind::ThirdParty),
            suite(&SHOP, SuiteKind::ThirdParty),
        ],
        |_| {},
    )
    .await;
    let t = unix_now();
    push(&app, &CRM, &ticket_xml(CRM.receive_id, "CRM-NEW", t)).await;
    push(&app, &SHOP, &ticket_xml(SHOP.receive_id, "SHOP-1", t + 5)).await;
    // A late retry of an older push must not replace the newer ticket.
    push(&app, &CRM, &ticket_xml(CRM.receive_id, "CRM-OLD", t - 600)).await;
    wait_for_count(&app.pool, "SELECT count(*) FROM wecom_events_pending", 0).await;
    let tickets: Vec<(String, String)> =
        sqlx::query_as("SELECT suite_id, ticket FROM wecom_suite_tickets ORDER BY suite_id")
            .fetch_all(&app.pool)
            .await
            .expect("tickets");
    assert_eq!(
        tickets,
        vec![
            ("wwSUITECRM".to_owned(), "CRM-NEW".to_owned()),
            ("wwSUITESHOP".to_owned(), "SHOP-1".to_owned())
        ]
    );
}

#[tokio::test]
async fn create_auth_stores_the_sealed_code_and_the_corp_is_resynced_and_enriched_with_its_own_token()
 {
    let server = MockServer::start().await;
    mount_provider(&server, CRM.receive_id, "TICKET-1").await;
    mount_empty_corp(&server, "CORP-TOKEN").await;
    Mock::given(path("/cgi-bin/externalcontact/get"))
        .and(query_param("access_token", "CORP-TOKEN"))
        .and(query_param("external_userid", "wmPROV1"))
        .respond_with(ok(json!({
            "external_contact": {"external_userid": "wmPROV1", "name": "韩梅梅", "type": 1},
            "follow_user": [{"userid": "bob", "createtime": 1700000000, "tags": []}],
            "next_cursor": ""
        })))
        .mount(&server)
        .await;
    let app = provider_app(
        &server,
        &[CRM],
        vec![suite(&CRM, SuiteKind::ThirdParty)],
        |_| {},
    )
    .await;
    authorise(&app, &CRM).await;

    let (state, name, agent, sealed): (String, Option<String>, Option<i64>, Vec<u8>) =
        sqlx::query_as(
            "SELECT state, corp_name, agent_id, permanent_code FROM wecom_provider_corps WHERE corp_id = $1",
        )
        .bind(CORP)
        .fetch_one(&app.pool)
        .await
        .expect("the authorised corp");
    assert_eq!(
        (state.as_str(), name.as_deref(), agent),
        ("authorised", Some("客户公司"), Some(1000005))
    );
    assert!(
        !sealed.windows(CODE.len()).any(|w| w == CODE.as_bytes()),
        "the permanent code is stored sealed"
    );
    assert_eq!(key().open(&sealed).expect("opens").expose_secret(), CODE);
    assert!(
        calls_with(
            &server,
            "/cgi-bin/externalcontact/get_follow_user_list",
            "CORP-TOKEN"
        )
        .await
            >= 1
    );
    let gettoken = server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/cgi-bin/gettoken")
        .count();
    assert_eq!(
        gettoken, 0,
        "a third-party corp's token never comes from gettoken"
    );

    operator_view(&app, &server).await;

    // A contact event in suite form for the corp: projected under that corp, enriched with its token.
    let xml = auth_xml(
        CRM.receive_id,
        "change_external_contact",
        &format!(
            "<AuthCorpId><![CDATA[{CORP}]]></AuthCorpId><ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[bob]]></UserID><ExternalUserID><![CDATA[wmPROV1]]></ExternalUserID>"
        ),
    );
    push(&app, &CRM, &xml).await;
    poll(
        "the contact enriched with the corp's token",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let name: Option<Option<String>> = sqlx::query_scalar(
                "SELECT name FROM external_contacts WHERE corp_id = $1 AND external_userid = 'wmPROV1'",
            )
            .bind(CORP)
            .fetch_optional(&app.pool)
            .await
            .expect("query");
            match name {
                Some(Some(n)) if n == "韩梅梅" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn an_expired_auth_code_is_explained_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(path("/cgi-bin/service/get_suite_token"))
        .respond_with(ok(json!({"suite_access_token": "ST", "expires_in": 7200})))
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/service/get_permanent_code"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"errcode": 40078, "errmsg": "invalid auth_code"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let app = provider_app(
        &server,
        &[CRM],
        vec![suite(&CRM, SuiteKind::ThirdParty)],
        |_| {},
    )
    .await;
    push(&app, &CRM, &ticket_xml(CRM.receive_id, "T", unix_now())).await;
    push(
        &app,
        &CRM,
        &auth_xml(
            CRM.receive_id,
            "create_auth",
            "<AuthCode><![CDATA[OLD-CODE]]></AuthCode>",
        ),
    )
    .await;
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_jobs WHERE kind = 'provider_auth' AND status = 'dead'",
        1,
    )
    .await;
    let error: String =
        sqlx::query_scalar("SELECT last_error FROM wecom_jobs WHERE kind = 'provider_auth'")
            .fetch_one(&app.pool)
            .await
            .expect("job");
    assert!(error.contains("10 minutes"), "{error}");
    assert!(error.contains("authorise the app again"), "{error}");
    assert!(
        !error.contains("OLD-CODE"),
        "the AuthCode is never echoed: {error}"
    );
}

#[tokio::test]
async fn a_missing_suite_ticket_is_explained_and_retried() {
    let server = MockServer::start().await;
    let app = provider_app(
        &server,
        &[CRM],
        vec![suite(&CRM, SuiteKind::ThirdParty)],
        |_| {},
    )
    .await;
    push(
        &app,
        &CRM,
        &auth_xml(
            CRM.receive_id,
            "create_auth",
            "<AuthCode><![CDATA[AUTH-1]]></AuthCode>",
        ),
    )
    .await;
    let error: String = poll(
        "the provider_auth job failing on the missing ticket",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let row: Option<(String, Option<String>)> = sqlx::query_as(
                "SELECT status, last_error FROM wecom_jobs WHERE kind = 'provider_auth'",
            )
            .fetch_optional(&app.pool)
            .await
            .expect("query");
            match row {
                Some((status, Some(e))) if status == "queued" => Ok(e),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert!(
        error.contains("no suite_ticket has arrived for suite wwSUITECRM"),
        "{error}"
    );
    assert!(error.contains("刷新Ticket"), "{error}");
    assert!(
        server
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
async fn reset_permanent_code_stores_the_new_code() {
    let server = MockServer::start().await;
    mount_provider(&server, CRM.receive_id, "TICKET-1").await;
    mount_empty_corp(&server, "CORP-TOKEN").await;
    Mock::given(path("/cgi-bin/service/get_permanent_code"))
        .and(body_partial_json(json!({"auth_code": "AUTH-RESET"})))
        .respond_with(ok(json!({
            "permanent_code": "PERMANENT-CODE-2",
            "auth_corp_info": {"corpid": CORP, "corp_name": "客户公司"}, "auth_info": {}
        })))
        .mount(&server)
        .await;
    let app = provider_app(
        &server,
        &[CRM],
        vec![suite(&CRM, SuiteKind::ThirdParty)],
        |_| {},
    )
    .await;
    authorise(&app, &CRM).await;
    push(
        &app,
        &CRM,
        &auth_xml(
            CRM.receive_id,
            "reset_permanent_code",
            "<AuthCode><![CDATA[AUTH-RESET]]></AuthCode>",
        ),
    )
    .await;
    poll(
        "the new permanent code",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let sealed: Vec<u8> = sqlx::query_scalar(
                "SELECT permanent_code FROM wecom_provider_corps WHERE corp_id = $1",
            )
            .bind(CORP)
            .fetch_one(&app.pool)
            .await
            .expect("corp");
            let code = key().open(&sealed).expect("opens");
            if code.expose_secret() == "PERMANENT-CODE-2" {
                Ok(())
            } else {
                Err("still the old code".to_owned())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn cancel_auth_deletes_the_corps_rows_at_once_keeps_its_events_and_stops_its_work() {
    let server = MockServer::start().await;
    mount_provider(&server, CRM.receive_id, "TICKET-1").await;
    mount_empty_corp(&server, "CORP-TOKEN").await;
    Mock::given(path("/cgi-bin/externalcontact/get"))
        .respond_with(ok(json!({
            "external_contact": {"external_userid": "wmPROV1", "name": "韩梅梅", "type": 1},
            "follow_user": [{"userid": "bob", "createtime": 1700000000, "tags": []}], "next_cursor": ""
        })))
        .mount(&server)
        .await;
    let app = provider_app(
        &server,
        &[CRM],
        vec![suite(&CRM, SuiteKind::ThirdParty)],
        |_| {},
    )
    .await;
    authorise(&app, &CRM).await;
    let contact = |ext: &str| {
        auth_xml(
            CRM.receive_id,
            "change_external_contact",
            &format!(
                "<AuthCorpId><![CDATA[{CORP}]]></AuthCorpId><ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[bob]]></UserID><ExternalUserID><![CDATA[{ext}]]></ExternalUserID>"
            ),
        )
    };
    push(&app, &CRM, &contact("wmPROV1")).await;
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM external_contact_follows WHERE corp_id = 'wwAUTHCORP1'",
        1,
    )
    .await;

    push(&app, &CRM, &cancel_xml()).await;
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_provider_corps WHERE state = 'cancelled' AND rows_deleted_at IS NOT NULL",
        1,
    )
    .await;
    for table in [
        "external_contacts",
        "external_contact_follows",
        "external_contact_history",
        "wecom_resync_runs",
        "wecom_access_tokens",
    ] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE corp_id = $1"
        )))
        .bind(CORP)
        .fetch_one(&app.pool)
        .await
        .expect("count");
        assert_eq!(n, 0, "{table} still has the cancelled corp's rows");
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_events WHERE corp_id = $1")
        .bind(CORP)
        .fetch_one(&app.pool)
        .await
        .expect("events");
    assert!(events >= 1, "events are kept for the audit period");

    // A straggler event for the cancelled corp: stored, but it re-creates no row and nothing is called for it.
    let before = server.received_requests().await.unwrap_or_default().len();
    push(&app, &CRM, &contact("wmPROV2")).await;
    wait_applied(&app.pool).await;
    assert_no_rows_of(&app, CORP, "after a late event").await;
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_jobs WHERE subject = 'wmPROV2'")
        .fetch_one(&app.pool)
        .await
        .expect("jobs");
    assert_eq!(jobs, 0, "no enrichment is queued for a cancelled corp");
    let after = server.received_requests().await.unwrap_or_default().len();
    assert_eq!(after, before, "nothing is called for a cancelled corp");

    // Its events are kept for audit, but neither a rebuild nor a replay resurrects its rows.
    rebuild::rebuild(&app.pool).await.expect("rebuild");
    assert_no_rows_of(&app, CORP, "after a rebuild").await;
    rebuild::replay(&app.pool, &EventFilter::default(), 2, |_| {})
        .await
        .expect("replay");
    assert_no_rows_of(&app, CORP, "after a replay").await;
}

/// No synced row of `corp` in the tables its events feed.
async fn assert_no_rows_of(app: &TestApp, corp: &str, when: &str) {
    for table in [
        "external_contacts",
        "external_contact_follows",
        "external_contact_history",
        "external_group_chats",
        "external_corp_tags",
        "staff",
    ] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE corp_id = $1"
        )))
        .bind(corp)
        .fetch_one(&app.pool)
        .await
        .expect("count");
        assert_eq!(n, 0, "{table} has rows of the cancelled corp {when}");
    }
}

#[tokio::test]
async fn a_cancelled_corps_events_go_after_their_retention() {
    let server = MockServer::start().await;
    mount_provider(&server, CRM.receive_id, "TICKET-1").await;
    mount_empty_corp(&server, "CORP-TOKEN").await;
    let app = provider_app(
        &server,
        &[CRM],
        vec![suite(&CRM, SuiteKind::ThirdParty)],
        |p| p.delete_events_after = Duration::ZERO,
    )
    .await;
    authorise(&app, &CRM).await;
    push(&app, &CRM, &cancel_xml()).await;
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_events WHERE corp_id = 'wwAUTHCORP1'",
        0,
    )
    .await;
}

/// A suite-form contact event of [`CORP`] for `ext` (added by bob).
fn contact_event(ext: &str) -> String {
    auth_xml(
        CRM.receive_id,
        "change_external_contact",
        &format!(
            "<AuthCorpId><![CDATA[{CORP}]]></AuthCorpId><ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[bob]]></UserID><ExternalUserID><![CDATA[{ext}]]></ExternalUserID>"
        ),
    )
}

fn cancel_xml() -> String {
    auth_xml(
        CRM.receive_id,
        "cancel_auth",
        &format!("<AuthCorpId><![CDATA[{CORP}]]></AuthCorpId>"),
    )
}

/// Pushes [`cancel_xml`] and waits until the corp's rows are deleted.
async fn cancel_and_wait_for_purge(app: &TestApp) {
    push(app, &CRM, &cancel_xml()).await;
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_provider_corps WHERE rows_deleted_at IS NOT NULL",
        1,
    )
    .await;
}

/// Waits until WeCom's fake has been asked for `api_path` (`what`: what the test waits for, for the failure).
async fn wait_until_asked(server: &MockServer, what: &str, api_path: &str) {
    poll(
        what,
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let asked = server
                .received_requests()
                .await
                .unwrap_or_default()
                .iter()
                .any(|r| r.url.path() == api_path);
            if asked {
                Ok(())
            } else {
                Err("not yet".to_owned())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn an_event_arriving_after_the_corps_events_were_purged_is_acknowledged_projects_nothing_and_is_deleted()
 {
    let server = MockServer::start().await;
    mount_provider(&server, CRM.receive_id, "TICKET-1").await;
    mount_empty_corp(&server, "CORP-TOKEN").await;
    let app = provider_app_with(
        &server,
        &[CRM],
        vec![suite(&CRM, SuiteKind::ThirdParty)],
        |p| p.delete_events_after = Duration::ZERO,
        // The purge sweep runs in the prune loop: often, so the test sees it.
        |s| s.api.jobs_prune_interval = Duration::from_millis(200),
    )
    .await;
    authorise(&app, &CRM).await;
    push(&app, &CRM, &cancel_xml()).await;
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_provider_corps WHERE events_deleted_at IS NOT NULL",
        1,
    )
    .await;
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_events WHERE corp_id = 'wwAUTHCORP1'",
        0,
    )
    .await;
    let calls_before = server.received_requests().await.unwrap_or_default().len();

    // WeCom still delivers a straggler: it is acknowledged (else WeCom retries it), never projected, and
    // the sweep deletes it as it deleted the corp's other events.
    push(&app, &CRM, &contact_event("wmAFTER")).await;
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_events WHERE corp_id = 'wwAUTHCORP1'",
        0,
    )
    .await;
    wait_applied(&app.pool).await;
    assert_no_rows_of(&app, CORP, "after an event that came after the purge").await;
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_jobs WHERE subject = 'wmAFTER'")
        .fetch_one(&app.pool)
        .await
        .expect("jobs");
    assert_eq!(jobs, 0, "no enrichment is queued for a purged corp");
    assert_eq!(
        server.received_requests().await.unwrap_or_default().len(),
        calls_before,
        "nothing is called for a purged corp"
    );
}

#[tokio::test]
async fn a_rebuild_while_a_cancelled_corps_data_is_kept_replays_neither_its_events_nor_its_api_observations()
 {
    let server = MockServer::start().await;
    mount_provider(&server, CRM.receive_id, "TICKET-1").await;
    mount_empty_corp(&server, "CORP-TOKEN").await;
    Mock::given(path("/cgi-bin/externalcontact/get"))
        .respond_with(ok(json!({
            "external_contact": {"external_userid": "wmOBS", "name": "观察", "type": 1},
            "follow_user": [{"userid": "bob", "createtime": 1700000000, "tags": []}], "next_cursor": ""
        })))
        .mount(&server)
        .await;
    // Rows kept an hour after cancel_auth, events the default 30 days: the corp's API observations are
    // still in the log when the rebuild runs.
    let app = provider_app(
        &server,
        &[CRM],
        vec![suite(&CRM, SuiteKind::ThirdParty)],
        |p| p.delete_rows_after = Duration::from_secs(3600),
    )
    .await;
    authorise(&app, &CRM).await;
    push(&app, &CRM, &contact_event("wmOBS")).await;
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM external_contacts WHERE corp_id = 'wwAUTHCORP1' AND name = '观察'",
        1,
    )
    .await;
    push(&app, &CRM, &cancel_xml()).await;
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_provider_corps WHERE state = 'cancelled'",
        1,
    )
    .await;
    let observations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM wecom_api_observations WHERE corp_id = $1")
            .bind(CORP)
            .fetch_one(&app.pool)
            .await
            .expect("observations");
    assert!(
        observations >= 1,
        "the enrichment's answer is in the observation log"
    );

    let rebuilt = rebuild::rebuild_all(&app.pool, 2, |_| {})
        .await
        .expect("rebuild");
    assert_eq!(
        rebuilt.observations_total(),
        0,
        "the cancelled corp's observations are not replayed: {rebuilt:?}"
    );
    assert_no_rows_of(&app, CORP, "after a rebuild inside the grace period").await;
}

#[tokio::test]
async fn the_agency_flow_runs_end_to_end_with_gettoken_and_the_permanent_code() {
    let server = MockServer::start().await;
    Mock::given(path("/cgi-bin/service/get_suite_token"))
        .and(body_partial_json(
            json!({"suite_id": DK.receive_id, "suite_ticket": "DK-TICKET"}),
        ))
        .respond_with(ok(
            json!({"suite_access_token": "DK-SUITE-TOKEN", "expires_in": 7200}),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/service/get_permanent_code"))
        .and(query_param("suite_access_token", "DK-SUITE-TOKEN"))
        .respond_with(ok(json!({
            "permanent_code": "DK-PERMANENT",
            "auth_corp_info": {"corpid": "wwDKCORP", "corp_name": "代开发客户"},
            "auth_info": {"agent": [{"agentid": 1000009}]}
        })))
        .mount(&server)
        .await;
    // 代开发: the installed app's token comes from gettoken with the permanent code as corpsecret.
    Mock::given(method("GET"))
        .and(path("/cgi-bin/gettoken"))
        .and(query_param("corpid", "wwDKCORP"))
        .and(query_param("corpsecret", "DK-PERMANENT"))
        .respond_with(ok(
            json!({"access_token": "DK-CORP-TOKEN", "expires_in": 7200}),
        ))
        .mount(&server)
        .await;
    mount_empty_corp(&server, "DK-CORP-TOKEN").await;
    Mock::given(path("/cgi-bin/externalcontact/get"))
        .and(query_param("access_token", "DK-CORP-TOKEN"))
        .respond_with(ok(json!({
            "external_contact": {"external_userid": "wmDK1", "name": "代开发客户甲", "type": 1},
            "follow_user": [{"userid": "zhang", "createtime": 1700000000, "tags": []}], "next_cursor": ""
        })))
        .mount(&server)
        .await;
    let mut dk = suite(&DK, SuiteKind::Agency);
    dk.data_apps = vec![DK_DATA.name.to_owned()];
    let app = provider_app(&server, &[DK, DK_DATA], vec![dk], |_| {}).await;
    push(
        &app,
        &DK,
        &ticket_xml(DK.receive_id, "DK-TICKET", unix_now()),
    )
    .await;
    push(
        &app,
        &DK,
        &auth_xml(
            DK.receive_id,
            "create_auth",
            "<AuthCode><![CDATA[DK-AUTH]]></AuthCode>",
        ),
    )
    .await;
    wait_resynced(&app, "wwDKCORP").await;
    assert_eq!(
        calls_with(&server, "/cgi-bin/service/get_corp_token", "DK-SUITE-TOKEN").await,
        0,
        "代开发 never asks get_corp_token"
    );
    assert!(
        calls_with(
            &server,
            "/cgi-bin/externalcontact/get_follow_user_list",
            "DK-CORP-TOKEN"
        )
        .await
            >= 1
    );

    // The installed app's own callback URL: an Event-form contact event, enriched with the corp's token.
    let xml = format!(
        "<xml><ToUserName><![CDATA[wwDKCORP]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[zhang]]></UserID><ExternalUserID><![CDATA[wmDK1]]></ExternalUserID></xml>",
        unix_now()
    );
    let resp = app
        .post(DK_DATA.name, &sign_callback(&DK_DATA, &xml, unix_now()))
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM external_contacts WHERE corp_id = 'wwDKCORP' AND name = '代开发客户甲'",
        1,
    )
    .await;
}

mod replicas {
    use super::*;
    use crate::fake_wecom::FakeWecom;
    use wecom_callback::sync::client::WecomApi;

    /// Two replicas (two clients, as two processes would be) need the suite token at once: WeCom is asked once.
    #[tokio::test]
    async fn two_replicas_fetch_the_suite_token_once() {
        let fake = FakeWecom::start(Duration::from_millis(300), &[]).await;
        let server = MockServer::start().await;
        let app = provider_app(
            &server,
            &[CRM],
            vec![suite(&CRM, SuiteKind::ThirdParty)],
            |_| {},
        )
        .await;
        push(&app, &CRM, &ticket_xml(CRM.receive_id, "T", unix_now())).await;
        wait_for_count(&app.pool, "SELECT count(*) FROM wecom_suite_tickets", 1).await;
        let secret = SecretString::from("secret-of-crm");
        let (a, b) = (
            WecomApi::new(&fake.base_url(), app.pool.clone()).expect("client"),
            WecomApi::new(&fake.base_url(), app.pool.clone()).expect("client"),
        );
        let (ta, tb) = tokio::join!(
            a.suite_access_token(CRM.receive_id, &secret),
            b.suite_access_token(CRM.receive_id, &secret)
        );
        assert_eq!(ta.expect("a"), "FAKE-SUITE-TOKEN");
        assert_eq!(tb.expect("b"), "FAKE-SUITE-TOKEN");
        assert_eq!(fake.calls("/cgi-bin/service/get_suite_token"), 1);
    }
}

/// `corps` lists the corp; `doctor` checks the suite (ticket, token) and the corp, from a `[[suites]]` file.
async fn operator_view(app: &TestApp, server: &MockServer) {
    const BIN: &str = env!("CARGO_BIN_EXE_wecom-callback");
    let dir =
        std::env::temp_dir().join(format!("wecom-provider-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"database_url = "{db}"

[api]
base_url = "{api}"

[provider]
secret_key = "{key}"

[[suites]]
name = "crm"
kind = "third_party"
suite_id = "{suite}"
suite_secret = "secret-of-crm"
token = "{token}"
encoding_aes_key = "{aes}"
provider_corp_id = "wwPROVIDER"
"#,
            db = app.database_url(),
            api = server.uri(),
            key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]),
            suite = CRM.receive_id,
            token = CRM.token,
            aes = CRM.encoding_aes_key,
        ),
    )
    .expect("config");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("WECOM_TOKEN")
            .env_remove("WECOM_ENCODING_AES_KEY")
            .env_remove("WECOM_CORP_ID")
            .env_remove("WECOM_SECRET_KEY")
            .env_remove("DATABASE_URL")
            .env_remove("WECOM_CONFIG")
            .env_remove("WECOM_API_BASE_URL")
            .output()
            .expect("runs");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (out, err) = run(&["corps", "--json"]);
    let line: serde_json::Value = serde_json::from_str(
        out.lines()
            .next()
            .unwrap_or_else(|| panic!("no corp: {err}")),
    )
    .expect("json");
    assert_eq!(line["corp_id"], CORP);
    assert_eq!(line["corp_name"], "客户公司");
    assert_eq!(line["state"], "authorised");
    assert!(
        line["last_token_at"].is_string() && line["last_resync_at"].is_string(),
        "{line}"
    );
    assert!(!out.contains(CODE), "the permanent code is never printed");
    let (out, err) = run(&["doctor", "--service-url", "http://127.0.0.1:9"]);
    assert!(out.contains("ok   suite_ticket"), "{out}{err}");
    assert!(out.contains("ok   suite token"), "{out}{err}");
    assert!(out.contains("ok   authorised corp"), "{out}{err}");
    assert!(!out.contains(CODE) && !err.contains(CODE));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The supervised `provider-resync` task queues a resync of each authorised corp once per resync interval.
#[tokio::test]
async fn authorised_corps_are_resynced_on_schedule_by_a_supervised_task() {
    let server = MockServer::start().await;
    let uri = server.uri();
    let (app, service) = crate::helpers::build_app_with(&[CRM], move |s| {
        s.api.base_url = uri;
        s.api.worker_concurrency = 0;
        s.api.resync_interval = Duration::from_secs(3600);
        s.fault_panic_once = vec!["provider-resync".into()];
        s.provider = Provider {
            suites: vec![suite(&CRM, SuiteKind::ThirdParty)],
            key: Some(key()),
            ..Provider::default()
        };
    })
    .await;
    let sealed = key().seal(&SecretString::from(CODE));
    for (corp, state) in [(CORP, "authorised"), ("wwGONE", "cancelled")] {
        sqlx::query(
            "INSERT INTO wecom_provider_corps (corp_id, suite_id, app, state, permanent_code) VALUES ($1, $2, 'crm', $3, $4)",
        )
        .bind(corp)
        .bind(CRM.receive_id)
        .bind(state)
        .bind(&sealed)
        .execute(&app.pool)
        .await
        .expect("corp");
    }
    tokio::spawn(service.run_until_stopped());
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_jobs WHERE kind = 'corp_resync' AND corp_id = 'wwAUTHCORP1' AND app = 'crm'",
        1,
    )
    .await;
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains(r#"wecom_background_task_restarts_total{task="provider-resync"} 1"#),
        "{metrics}"
    );
    let gone: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_jobs WHERE corp_id = 'wwGONE'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(gone, 0, "a cancelled corp is never resynced");
}

/// WeCom refusing the stored ticket (40085) is explained with its age and the fix, and retried.
#[tokio::test]
async fn a_refused_suite_ticket_is_explained() {
    let server = MockServer::start().await;
    Mock::given(path("/cgi-bin/service/get_suite_token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"errcode": 40085, "errmsg": "invalid suite ticket"})),
        )
        .mount(&server)
        .await;
    let app = provider_app(
        &server,
        &[CRM],
        vec![suite(&CRM, SuiteKind::ThirdParty)],
        |_| {},
    )
    .await;
    push(&app, &CRM, &ticket_xml(CRM.receive_id, "STALE", unix_now())).await;
    push(
        &app,
        &CRM,
        &auth_xml(
            CRM.receive_id,
            "create_auth",
            "<AuthCode><![CDATA[AUTH-1]]></AuthCode>",
        ),
    )
    .await;
    let error: String = poll(
        "the provider_auth job failing on the refused ticket",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let row: Option<(String, Option<String>)> = sqlx::query_as(
                "SELECT status, last_error FROM wecom_jobs WHERE kind = 'provider_auth'",
            )
            .fetch_optional(&app.pool)
            .await
            .expect("query");
            match row {
                Some((status, Some(e))) if status == "queued" => Ok(e),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert!(
        error.contains("refused suite wwSUITECRM's newest suite_ticket (errcode 40085)"),
        "{error}"
    );
    assert!(error.contains("every 10 minutes"), "{error}");
}

/// An idle worker starts a queued job at once (LISTEN/NOTIFY), not at its next poll.
#[tokio::test]
async fn a_queued_job_wakes_an_idle_worker() {
    use std::sync::Arc;
    use wecom_callback::sync::worker::{Worker, listen, work};
    let server = MockServer::start().await;
    // No workers of the service's own: the test's worker is the only one.
    let app = spawn_app_with(&[CRM], |s| s.api.worker_concurrency = 0).await;
    let wake = Arc::new(tokio::sync::Notify::new());
    let token = tokio_util::sync::CancellationToken::new();
    let w = Worker {
        pool: app.pool.clone(),
        api: wecom_callback::sync::client::WecomApi::new(&server.uri(), app.pool.clone())
            .expect("client"),
        credentials: Default::default(),
        max_attempts: 1,
        metrics: None,
        // Far longer than the test waits: only the notification can start the job in time.
        idle: Duration::from_secs(60),
        provider: Provider {
            suites: vec![suite(&CRM, SuiteKind::ThirdParty)],
            key: Some(key()),
            ..Provider::default()
        },
        wake: Some(wake.clone()),
    };
    tokio::spawn(listen(app.pool.clone(), wake, token.clone()));
    tokio::spawn(work(w, token.clone()));
    // Let the worker find the queue empty and go idle, and the listener subscribe.
    tokio::time::sleep(Duration::from_millis(500)).await;
    wecom_callback::store::jobs::enqueue_one(
        &app.pool,
        wecom_callback::domain::JobKind::ProviderPurge,
        "crm",
        "wwNOBODY",
        "wwNOBODY",
        None,
    )
    .await
    .expect("enqueue");
    let started = Instant::now();
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_jobs WHERE subject = 'wwNOBODY' AND status = 'done'",
        1,
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    token.cancel();
}

#[tokio::test]
async fn a_resync_running_when_cancel_auth_arrives_stops_and_leaves_nothing_behind() {
    let server = MockServer::start().await;
    mount_provider(&server, CRM.receive_id, "TICKET-1").await;
    // Mounted before the empty corp's answers, so these win: bob's customers come back slowly, long after
    // the cancellation has purged the corp.
    Mock::given(path("/cgi-bin/externalcontact/get_follow_user_list"))
        .and(query_param("access_token", "CORP-TOKEN"))
        .respond_with(ok(json!({"follow_user": ["bob"]})))
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/batch/get_by_user"))
        .respond_with(
            ok(json!({"external_contact_list": [{
                "external_contact": {"external_userid": "wmSLOW", "name": "迟到", "type": 1},
                "follow_info": {"userid": "bob", "remark": "", "createtime": 1700000000, "tag_id": []}
            }], "next_cursor": ""}))
            .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    mount_empty_corp(&server, "CORP-TOKEN").await;
    let app = provider_app(
        &server,
        &[CRM],
        vec![suite(&CRM, SuiteKind::ThirdParty)],
        |_| {},
    )
    .await;
    push(
        &app,
        &CRM,
        &ticket_xml(CRM.receive_id, "TICKET-1", unix_now()),
    )
    .await;
    push(
        &app,
        &CRM,
        &auth_xml(
            CRM.receive_id,
            "create_auth",
            "<AuthCode><![CDATA[AUTH-1]]></AuthCode><State><![CDATA[s]]></State>",
        ),
    )
    .await;
    wait_until_asked(
        &server,
        "the first resync waiting for its customer page",
        "/cgi-bin/externalcontact/batch/get_by_user",
    )
    .await;
    cancel_and_wait_for_purge(&app).await;
    // The resync job ends once the slow page is answered (and would have written it).
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_jobs WHERE kind = 'corp_resync' AND status = 'done'",
        1,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_no_rows_of(
        &app,
        CORP,
        "after a resync that overlapped the cancellation",
    )
    .await;
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_resync_runs WHERE corp_id = $1")
        .bind(CORP)
        .fetch_one(&app.pool)
        .await
        .expect("runs");
    assert_eq!(
        runs, 0,
        "the stopped resync's run is deleted with the corp's data"
    );
    let chats = calls_with(
        &server,
        "/cgi-bin/externalcontact/groupchat/list",
        "CORP-TOKEN",
    )
    .await;
    assert_eq!(
        chats, 0,
        "the resync stopped: no step after the cancellation called WeCom"
    );
}

#[tokio::test]
async fn an_enrichment_answered_after_cancel_auth_leaves_nothing_behind() {
    let server = MockServer::start().await;
    mount_provider(&server, CRM.receive_id, "TICKET-1").await;
    mount_empty_corp(&server, "CORP-TOKEN").await;
    // The customer's detail comes back after the cancellation has purged the corp.
    Mock::given(path("/cgi-bin/externalcontact/get"))
        .respond_with(
            ok(json!({
                "external_contact": {"external_userid": "wmLATE", "name": "迟到", "type": 1},
                "follow_user": [{"userid": "bob", "createtime": 1700000000, "tags": []}], "next_cursor": ""
            }))
            .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let app = provider_app(
        &server,
        &[CRM],
        vec![suite(&CRM, SuiteKind::ThirdParty)],
        |_| {},
    )
    .await;
    authorise(&app, &CRM).await;
    push(
        &app,
        &CRM,
        &auth_xml(
            CRM.receive_id,
            "change_external_contact",
            &format!(
                "<AuthCorpId><![CDATA[{CORP}]]></AuthCorpId><ChangeType><![CDATA[add_external_contact]]></ChangeType><UserID><![CDATA[bob]]></UserID><ExternalUserID><![CDATA[wmLATE]]></ExternalUserID>"
            ),
        ),
    )
    .await;
    wait_until_asked(
        &server,
        "the detail job waiting for WeCom",
        "/cgi-bin/externalcontact/get",
    )
    .await;
    cancel_and_wait_for_purge(&app).await;
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_jobs WHERE subject = 'wmLATE' AND status IN ('queued', 'running')",
        0,
    )
    .await;
    assert_no_rows_of(
        &app,
        CORP,
        "after an enrichment that overlapped the cancellation",
    )
    .await;
}

/// Two appliers: one commits the corp's cancellation (its `cancel_auth`) while the other takes a contact event
/// of the corp. The second must wait for the first and then plan nothing: had it planned from "authorised"
/// and committed after the purge, its rows would outlive the cancellation (seen once in the simulated corp).
#[tokio::test]
async fn a_contact_event_applied_while_the_cancellation_commits_waits_for_it_and_writes_nothing() {
    let server = MockServer::start().await;
    mount_provider(&server, CRM.receive_id, "TICKET-1").await;
    mount_empty_corp(&server, "CORP-TOKEN").await;
    let app = provider_app(
        &server,
        &[CRM],
        vec![suite(&CRM, SuiteKind::ThirdParty)],
        |_| {},
    )
    .await;
    authorise(&app, &CRM).await;
    wait_applied(&app.pool).await;
    let suite_id: String =
        sqlx::query_scalar("SELECT suite_id FROM wecom_provider_corps WHERE corp_id = $1")
            .bind(CORP)
            .fetch_one(&app.pool)
            .await
            .expect("the authorised corp");

    // The other applier's transaction, cancelling, not yet committed.
    let mut cancelling = app.pool.begin().await.expect("begin");
    wecom_callback::store::corps::cancel(&mut cancelling, &suite_id, CORP)
        .await
        .expect("cancel");
    push(&app, &CRM, &contact_event("wmRACE")).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_events_pending")
        .fetch_one(&app.pool)
        .await
        .expect("pending");
    assert_eq!(
        pending, 1,
        "the contact event was applied while its corp's cancellation was being committed"
    );
    cancelling.commit().await.expect("commit the cancellation");
    wait_applied(&app.pool).await;
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM external_contacts WHERE external_userid = 'wmRACE'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("contacts");
    assert_eq!(
        rows, 0,
        "an event applied after the cancellation planned rows"
    );
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_jobs WHERE subject = 'wmRACE'")
        .fetch_one(&app.pool)
        .await
        .expect("jobs");
    assert_eq!(jobs, 0, "an enrichment was queued for a cancelled corp");
}

#[tokio::test]
async fn a_suite_mini_program_login_goes_through_the_suite_token_for_any_authorised_corp() {
    let server = MockServer::start().await;
    mount_provider(&server, CRM.receive_id, "TICKET-1").await;
    mount_empty_corp(&server, "CORP-TOKEN").await;
    let session = |code: &str, body: serde_json::Value| {
        Mock::given(path("/cgi-bin/service/miniprogram/jscode2session"))
            .and(query_param("suite_access_token", "SUITE-TOKEN-wwSUITECRM"))
            .and(query_param("js_code", code))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
    };
    session(
        "good",
        json!({"corpid": CORP, "userid": "bob", "open_userid": "woBOB", "session_key": "kJtdi6RF+Dv67QkbLlPGjw==", "errcode": 0, "errmsg": "ok"}),
    )
    .mount(&server)
    .await;
    session(
        "stranger",
        json!({"corpid": "wwSTRANGER", "userid": "eve", "session_key": "x", "errcode": 0, "errmsg": "ok"}),
    )
    .mount(&server)
    .await;
    session("stale", json!({"errcode": 40029, "errmsg": "invalid code"}))
        .mount(&server)
        .await;
    session(
        "unlinked",
        json!({"errcode": 48002, "errmsg": "api forbidden"}),
    )
    .mount(&server)
    .await;
    let app = provider_app(
        &server,
        &[CRM],
        vec![suite(&CRM, SuiteKind::ThirdParty)],
        |_| {},
    )
    .await;
    authorise(&app, &CRM).await;
    let login = |code: &'static str| {
        let req = app
            .client
            .post(format!("{}/api/v1/miniprogram/session", app.address))
            .bearer_auth(crate::helpers::API_TOKEN)
            .json(&json!({"app": "crm", "code": code}));
        async move {
            let r = req.send().await.expect("reply");
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let (status, body) = login("good").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"corpid": CORP, "userid": "bob", "open_userid": "woBOB", "name": null, "departments": null, "status": null}),
        "never the session_key"
    );
    let (status, body) = login("stranger").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "corp_not_authorised");
    let (status, body) = login("stale").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_code");
    let (status, body) = login("unlinked").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("关联小程序"),
        "{body}"
    );
}

/// The 代开发 template [`DK`] authorised by `wwDKCORP` (permanent code `DK-PERMANENT`, corp token
/// `DK-CORP-TOKEN` from gettoken), with an empty corp behind it.
async fn mount_agency(server: &MockServer) {
    Mock::given(path("/cgi-bin/service/get_suite_token"))
        .and(body_partial_json(
            json!({"suite_id": DK.receive_id, "suite_ticket": "DK-TICKET"}),
        ))
        .respond_with(ok(
            json!({"suite_access_token": "DK-SUITE-TOKEN", "expires_in": 7200}),
        ))
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/service/get_permanent_code"))
        .and(query_param("suite_access_token", "DK-SUITE-TOKEN"))
        .respond_with(ok(json!({
            "permanent_code": "DK-PERMANENT",
            "auth_corp_info": {"corpid": "wwDKCORP", "corp_name": "代开发客户"},
            "auth_info": {"agent": [{"agentid": 1000009}]}
        })))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/cgi-bin/gettoken"))
        .and(query_param("corpid", "wwDKCORP"))
        .and(query_param("corpsecret", "DK-PERMANENT"))
        .respond_with(ok(
            json!({"access_token": "DK-CORP-TOKEN", "expires_in": 7200}),
        ))
        .mount(server)
        .await;
    mount_empty_corp(server, "DK-CORP-TOKEN").await;
}

#[tokio::test]
async fn a_daikaifa_mini_program_logs_in_with_its_corps_own_token_and_no_per_corp_configuration() {
    let server = MockServer::start().await;
    mount_agency(&server).await;
    let session = |code: &str, body: serde_json::Value| {
        Mock::given(path("/cgi-bin/miniprogram/jscode2session"))
            .and(query_param("access_token", "DK-CORP-TOKEN"))
            .and(query_param("js_code", code))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
    };
    session(
        "good",
        json!({"corpid": "wwDKCORP", "userid": "zhang", "session_key": "kJtdi6RF+Dv67QkbLlPGjw==", "errcode": 0, "errmsg": "ok"}),
    )
    .mount(&server)
    .await;
    session(
        "elsewhere",
        json!({"corpid": "wwOTHER", "userid": "li", "session_key": "x", "errcode": 0, "errmsg": "ok"}),
    )
    .mount(&server)
    .await;
    session("stale", json!({"errcode": 40029, "errmsg": "invalid code"}))
        .mount(&server)
        .await;
    session(
        "unlinked",
        json!({"errcode": 48002, "errmsg": "api forbidden"}),
    )
    .mount(&server)
    .await;
    // No [[apps]] entry for the corp: only the template.
    let app = provider_app(&server, &[DK], vec![suite(&DK, SuiteKind::Agency)], |_| {}).await;
    push(
        &app,
        &DK,
        &ticket_xml(DK.receive_id, "DK-TICKET", unix_now()),
    )
    .await;
    push(
        &app,
        &DK,
        &auth_xml(
            DK.receive_id,
            "create_auth",
            "<AuthCode><![CDATA[DK-AUTH]]></AuthCode>",
        ),
    )
    .await;
    wait_resynced(&app, "wwDKCORP").await;
    let login = |body: serde_json::Value| {
        let req = app
            .client
            .post(format!("{}/api/v1/miniprogram/session", app.address))
            .bearer_auth(crate::helpers::API_TOKEN)
            .json(&body);
        async move {
            let r = req.send().await.expect("reply");
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let (status, body) = login(json!({"app": "dk", "corpid": "wwDKCORP", "code": "good"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"corpid": "wwDKCORP", "userid": "zhang", "name": null, "departments": null, "status": null}),
        "never the session_key"
    );
    assert!(
        calls_with(
            &server,
            "/cgi-bin/miniprogram/jscode2session",
            "DK-CORP-TOKEN"
        )
        .await
            >= 1,
        "the corp's own token (gettoken with its permanent code) signs the exchange"
    );

    // Without the corp, the template cannot tell whose token to use: the body is refused with the fix.
    let (status, body) = login(json!({"app": "dk", "code": "good"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "bad_request");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("\"corpid\""),
        "{body}"
    );
    let asked = calls_with(
        &server,
        "/cgi-bin/miniprogram/jscode2session",
        "DK-CORP-TOKEN",
    )
    .await;
    let (status, body) = login(json!({"app": "dk", "corpid": "wwSTRANGER", "code": "good"})).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "corp_not_authorised");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("wwSTRANGER"),
        "{body}"
    );
    let (status, body) =
        login(json!({"app": "dk", "corpid": "wwDKCORP", "code": "elsewhere"})).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "cross_corp");
    let (status, body) = login(json!({"app": "dk", "corpid": "wwDKCORP", "code": "stale"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_code");
    let (status, body) =
        login(json!({"app": "dk", "corpid": "wwDKCORP", "code": "unlinked"})).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("代开发应用模板 → 关联小程序"),
        "{body}"
    );
    assert_eq!(
        calls_with(
            &server,
            "/cgi-bin/miniprogram/jscode2session",
            "DK-CORP-TOKEN"
        )
        .await,
        asked + 3,
        "a stranger corp's login never reached WeCom"
    );

    // Once the corp cancels, its logins are refused.
    push(
        &app,
        &DK,
        &auth_xml(
            DK.receive_id,
            "cancel_auth",
            "<AuthCorpId><![CDATA[wwDKCORP]]></AuthCorpId>",
        ),
    )
    .await;
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_provider_corps WHERE state = 'cancelled'",
        1,
    )
    .await;
    let (status, body) = login(json!({"app": "dk", "corpid": "wwDKCORP", "code": "good"})).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "corp_not_authorised");
}

/// A third-party suite's data callback URL (数据回调URL); its configured receive id is the provider corp's.
const CRM_DATA: TestAppConfig = TestAppConfig {
    name: "crmdata",
    kind: AppKind::SuiteData,
    token: "crmDataToken9",
    encoding_aes_key: "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
    receive_id: "wwPROVIDERCORP",
};

#[tokio::test]
async fn a_suites_data_url_accepts_its_authorised_corps_as_receive_ids_and_refuses_strangers() {
    let server = MockServer::start().await;
    mount_provider(&server, CRM.receive_id, "TICKET-1").await;
    mount_empty_corp(&server, "CORP-TOKEN").await;
    let mut crm = suite(&CRM, SuiteKind::ThirdParty);
    crm.data_apps = vec![CRM_DATA.name.to_owned()];
    let app = provider_app(&server, &[CRM, CRM_DATA], vec![crm], |_| {}).await;
    let event = |corp: &str| {
        format!(
            "<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_contact]]></Event><ChangeType><![CDATA[update_user]]></ChangeType><UserID><![CDATA[bob]]></UserID></xml>",
            unix_now()
        )
    };
    let post_as = |corp: &'static str| {
        let signed = TestAppConfig {
            receive_id: corp,
            ..CRM_DATA
        };
        let cb = sign_callback(&signed, &event(corp), unix_now());
        let app = &app;
        async move { app.post(CRM_DATA.name, &cb).await.status().as_u16() }
    };
    // Before the corp authorised the suite, its receive id is unknown here.
    assert_ne!(post_as(CORP).await, 200, "an unknown corp is refused");
    authorise(&app, &CRM).await;
    assert_eq!(
        post_as(CORP).await,
        200,
        "an authorised corp's data callback is accepted"
    );
    assert_ne!(
        post_as("wwSTRANGER").await,
        200,
        "a stranger corp is still refused"
    );
    assert_eq!(
        post_as("wwPROVIDERCORP").await,
        200,
        "the configured receive id still works"
    );
    let stored: Vec<Option<String>> =
        sqlx::query_scalar("SELECT corp_id FROM wecom_events WHERE app = 'crmdata' ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .expect("events");
    assert_eq!(
        stored,
        vec![Some(CORP.to_owned()), Some("wwPROVIDERCORP".to_owned())],
        "only the accepted callbacks are stored"
    );
}
