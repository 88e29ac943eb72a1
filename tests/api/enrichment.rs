//! Events queue WeCom API jobs durably; the worker fills in details; failures end dead and an operator
//! retries them.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{MAIN, TestApp, ok, spawn_app_with, unix_now, wait_applied, wait_for_count};
use crate::sync::contact_event;

async fn app_with_api(server: &MockServer, max_attempts: i32) -> TestApp {
    let uri = server.uri();
    spawn_app_with(&[MAIN], move |s| {
        s.apps[0].secret = Some(SecretString::from("app-secret"));
        s.api.base_url = uri;
        s.api.worker_concurrency = 1;
        s.api.max_attempts = max_attempts;
    })
    .await
}

/// WeCom's `gettoken` answers with the token `T`.
async fn mount_token(server: &MockServer) {
    Mock::given(path("/cgi-bin/gettoken"))
        .respond_with(ok(json!({"access_token": "T", "expires_in": 7200})))
        .mount(server)
        .await;
}

/// A fake WeCom that grants tokens; each test mounts the rest.
async fn fake_wecom() -> MockServer {
    let server = MockServer::start().await;
    mount_token(&server).await;
    server
}

fn detail() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "errcode": 0, "errmsg": "ok",
        "external_contact": {"external_userid": "wmE1", "name": "李雷", "type": 1, "gender": 1, "unionid": "u1",
                             "corp_name": "腾讯", "external_profile": {"external_attr": []}},
        "follow_user": [{"userid": "alice", "remark": "老客户", "description": "VIP", "createtime": 1700000000,
                         "tags": [{"group_name": "等级", "tag_name": "A", "type": 1, "tag_id": "et1"}],
                         "remark_mobiles": ["13800000000"], "oper_userid": "alice", "add_way": 1, "state": "qr"}],
        "next_cursor": ""
    }))
}

#[tokio::test]
async fn an_add_event_fills_in_the_contact_from_the_api() {
    let server = fake_wecom().await;
    Mock::given(path("/cgi-bin/externalcontact/get"))
        .and(query_param("external_userid", "wmE1"))
        .respond_with(detail())
        .mount(&server)
        .await;
    let app = app_with_api(&server, 3).await;
    let xml = contact_event(
        1_700_000_000,
        "add_external_contact",
        "alice",
        "wmE1",
        "<State>qr</State>",
    );
    app.deliver(&xml).await;

    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_jobs WHERE status = 'done'",
        1,
    )
    .await;
    let (name, corp_name, synced): (Option<String>, Option<String>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT name, corp_name, detail_synced_at FROM external_contacts WHERE external_userid = 'wmE1'")
            .fetch_one(&app.pool)
            .await
            .expect("contact");
    assert_eq!(name.as_deref(), Some("李雷"));
    assert_eq!(corp_name.as_deref(), Some("腾讯"));
    assert!(synced.is_some());
    let (status, remark, mobiles, tags): (String, Option<String>, Option<Vec<String>>, Option<serde_json::Value>) =
        sqlx::query_as("SELECT status, remark, remark_mobiles, tags FROM external_contact_follows WHERE userid = 'alice'")
            .fetch_one(&app.pool)
            .await
            .expect("follow");
    assert_eq!(status, "active");
    assert_eq!(remark.as_deref(), Some("老客户"));
    assert_eq!(mobiles, Some(vec!["13800000000".to_owned()]));
    assert_eq!(tags.expect("tags")[0]["tag_id"], "et1");
    // The API's view never revives a follow deleted by a newer event.
    let del = contact_event(unix_now() + 10, "del_follow_user", "alice", "wmE1", "");
    app.deliver(&del).await;
    wait_applied(&app.pool).await;
    wecom_callback::store::enrichment::contact_detail(
        &app.pool,
        MAIN.receive_id,
        &serde_json::from_value(serde_json::json!({"external_contact": {"external_userid": "wmE1"}, "follow_user": [{"userid": "alice"}]}))
            .expect("a typed answer"),
        chrono::Utc::now(),
    )
    .await
    .expect("stale API answer");
    let status: String =
        sqlx::query_scalar("SELECT status FROM external_contact_follows WHERE userid = 'alice'")
            .fetch_one(&app.pool)
            .await
            .expect("follow");
    assert_eq!(status, "deleted_by_customer");
}

#[tokio::test]
async fn repeated_jobs_for_one_contact_collapse() {
    let app = spawn_app_with(&[MAIN], |s| s.run_projector = false).await;
    let mut tx = app.pool.begin().await.expect("tx");
    let ev: i64 = sqlx::query_scalar(
        "INSERT INTO wecom_events (app, dedupe_key, receive_id, message, fields, req_timestamp, req_nonce, msg_signature) \
         VALUES ('main', 'k', 'r', '<xml/>', '{}', '0', '0', '0') RETURNING id",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("event");
    for _ in 0..3 {
        wecom_callback::store::jobs::enqueue(
            &mut tx,
            wecom_callback::domain::JobKind::ContactDetail,
            "main",
            "c",
            "wmX",
            ev,
        )
        .await
        .expect("enqueue");
    }
    wecom_callback::store::jobs::enqueue(
        &mut tx,
        wecom_callback::domain::JobKind::ContactDetail,
        "main",
        "c",
        "wmY",
        ev,
    )
    .await
    .expect("enqueue");
    tx.commit().await.expect("commit");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_jobs")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(n, 2);
}

#[tokio::test]
async fn a_failing_job_goes_dead_and_the_operator_retries_it() {
    let server = fake_wecom().await;
    Mock::given(path("/cgi-bin/externalcontact/get"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"errcode": 48002, "errmsg": "api forbidden"})),
        )
        .mount(&server)
        .await;
    let app = app_with_api(&server, 3).await;
    let xml = contact_event(1_700_000_000, "add_external_contact", "alice", "wmE1", "");
    app.deliver(&xml).await;
    // A permission error is not retried: dead at once, with the explanation.
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_jobs WHERE status = 'dead'",
        1,
    )
    .await;
    let (err, code): (Option<String>, Option<i64>) =
        sqlx::query_as("SELECT last_error, last_errcode FROM wecom_jobs")
            .fetch_one(&app.pool)
            .await
            .expect("job");
    assert_eq!(code, Some(48002));
    assert!(err.expect("error").contains("可调用接口的应用"));

    // The operator fixes the permission in the console, then retries.
    server.reset().await;
    mount_token(&server).await;
    Mock::given(path("/cgi-bin/externalcontact/get"))
        .respond_with(detail())
        .mount(&server)
        .await;
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&app.pool)
        .await
        .expect("db");
    let url = crate::helpers::database_url_for(&db);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_wecom-callback"))
            .args(["jobs", "--retry-all-dead"])
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("runs")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 dead job(s) queued again"));
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_jobs WHERE status = 'done'",
        1,
    )
    .await;
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM external_contacts")
        .fetch_one(&app.pool)
        .await
        .expect("contact");
    assert_eq!(name.as_deref(), Some("李雷"));
}

#[tokio::test]
async fn transient_failures_are_retried_until_the_attempts_cap() {
    let server = fake_wecom().await;
    Mock::given(path("/cgi-bin/externalcontact/get"))
        .respond_with(ResponseTemplate::new(500).set_body_string("gateway error"))
        .mount(&server)
        .await;
    let xml = contact_event(1_700_000_000, "edit_external_contact", "alice", "wmE1", "");
    // Attempts left: queued again with a backoff.
    let app = app_with_api(&server, 3).await;
    app.deliver(&xml).await;
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_jobs WHERE status = 'queued' AND attempts = 1 AND run_after > now() AND last_error LIKE '%HTTP 500%'",
        1,
    )
    .await;
    // No attempts left: the same failure makes it dead.
    let app = app_with_api(&server, 1).await;
    app.deliver(&xml).await;
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_jobs WHERE status = 'dead' AND attempts = 1",
        1,
    )
    .await;
}

/// What WeCom sent is stored as it was: `external_profile` keeps WeCom's JSON (an explicit `null` included), a
/// field of an unexpected type is stored as missing, and a follow's `tags` take the one documented shape
/// (`{tag_id, type, tag_name, group_name}` objects; no list is SQL NULL).
#[tokio::test]
async fn an_api_answer_is_stored_as_sent() {
    let app = spawn_app_with(&[MAIN], |s| s.run_projector = false).await;
    let answer = serde_json::from_value(json!({
        "errcode": 0, "errmsg": "ok",
        "external_contact": {"external_userid": "wmS1", "name": "n", "type": "1", "gender": 2,
                             "external_profile": null, "brand_new_field": {"a": 1}},
        "follow_user": [
            {"userid": "alice", "createtime": 1700000000, "remark_mobiles": [],
             "tags": [{"group_name": "等级", "tag_name": "A", "type": 1, "tag_id": "et1", "new": [1, 2.5]}]},
            {"userid": "bob", "tags": null, "remark_mobiles": "138"},
            {"remark": "no userid: skipped"}
        ],
        "next_cursor": ""
    }))
    .expect("a typed answer");
    wecom_callback::store::enrichment::contact_detail(
        &app.pool,
        MAIN.receive_id,
        &answer,
        chrono::Utc::now(),
    )
    .await
    .expect("stored");
    let (kind, gender, profile): (Option<i16>, Option<i16>, Option<String>) = sqlx::query_as(
        "SELECT type, gender, external_profile::text FROM external_contacts WHERE external_userid = 'wmS1'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("contact");
    assert_eq!((kind, gender), (None, Some(2)));
    assert_eq!(profile.as_deref(), Some("null"), "JSON null, not SQL NULL");
    type Follow = (
        String,
        Option<String>,
        Option<Vec<String>>,
        Option<chrono::DateTime<chrono::Utc>>,
    );
    let follows: Vec<Follow> = sqlx::query_as(
        "SELECT userid, tags::text, remark_mobiles, added_at FROM external_contact_follows \
             WHERE external_userid = 'wmS1' ORDER BY userid",
    )
    .fetch_all(&app.pool)
    .await
    .expect("follows");
    assert_eq!(follows.len(), 2);
    assert_eq!(
        follows[0].1.as_deref(),
        Some(r#"[{"type": 1, "tag_id": "et1", "tag_name": "A", "group_name": "等级"}]"#)
    );
    assert_eq!(follows[0].2, Some(vec![]));
    assert_eq!(follows[0].3.map(|t| t.timestamp()), Some(1_700_000_000));
    assert_eq!(follows[1].1, None, "no tag list");
    assert_eq!(follows[1].2, None);
}

fn detail_answer(
    remark: &str,
    createtime: i64,
) -> wecom_callback::sync::client::types::ExternalContactDetail {
    serde_json::from_value(json!({
        "external_contact": {"external_userid": "wmN1", "name": "n"},
        "follow_user": [{"userid": "alice", "createtime": createtime, "remark": remark}],
    }))
    .expect("a typed answer")
}

/// A status an API answer changes is notified (`"source": "api"`); an answer that changes no status is not;
/// an older fetch stored after a newer one changes nothing.
#[tokio::test]
async fn api_status_changes_notify_and_an_older_fetch_never_wins() {
    use wecom_callback::store::enrichment::contact_detail;
    let app = spawn_app_with(&[MAIN], |s| s.run_projector = false).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool)
        .await
        .expect("listener");
    listener
        .listen("wecom_contact_changed")
        .await
        .expect("listen");
    let now = chrono::Utc::now();
    contact_detail(
        &app.pool,
        MAIN.receive_id,
        &detail_answer("new", 1_700_000_000),
        now,
    )
    .await
    .expect("stored");
    let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification in time")
        .expect("notification");
    let p: serde_json::Value = serde_json::from_str(n.payload()).expect("JSON");
    assert_eq!(p["kind"], "contact");
    assert_eq!(p["source"], "api");
    assert_eq!(p["userid"], "alice");
    assert_eq!(p["external_userid"], "wmN1");
    assert_eq!(p["status"], "active");
    assert_eq!(p["previous_status"], serde_json::Value::Null);
    // An older fetch, stored late: neither its details nor a notification.
    let older = now - chrono::Duration::seconds(5);
    contact_detail(
        &app.pool,
        MAIN.receive_id,
        &detail_answer("old", 1_700_000_000),
        older,
    )
    .await
    .expect("stored");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), listener.recv())
            .await
            .is_err(),
        "no status changed"
    );
    let remark: Option<String> = sqlx::query_scalar(
        "SELECT remark FROM external_contact_follows WHERE userid = 'alice' AND external_userid = 'wmN1'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("follow");
    assert_eq!(remark.as_deref(), Some("new"));
}

/// WeCom calls back about a deleted tag group, not about its tags. A tag no list ever placed in its group
/// (created and deleted with the group between two lists) would stay live until a resync: instead, a tag job
/// that read both complete lists deletes every tag neither names that is older than the lists (and takes it
/// off the relations that carry it). A tag created after the lists were asked for is not theirs to judge.
#[tokio::test]
async fn a_tag_job_deletes_the_tags_neither_list_names() {
    let server = fake_wecom().await;
    Mock::given(path("/cgi-bin/externalcontact/get"))
        .respond_with(ok(json!({
            "external_contact": {"external_userid": "wmE1", "name": "李雷", "type": 1},
            "follow_user": [{"userid": "alice", "remark": "r", "createtime": 1600000000,
                "tags": [{"group_name": "意向", "tag_name": "高", "type": 1, "tag_id": "etKEEP"},
                         {"group_name": "活动", "tag_name": "幽灵", "type": 1, "tag_id": "etGHOST"}]}],
            "next_cursor": ""})))
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_corp_tag_list"))
        .respond_with(ok(
            json!({"tag_group": [{"group_id": "etG", "group_name": "意向", "order": 1,
            "tag": [{"id": "etKEEP", "name": "高", "order": 1}]}]}),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_strategy_tag_list"))
        .respond_with(ok(json!({"tag_group": []})))
        .mount(&server)
        .await;
    let app = app_with_api(&server, 3).await;
    app.deliver(&contact_event(
        1_600_000_000,
        "add_external_contact",
        "alice",
        "wmE1",
        "",
    ))
    .await;
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM external_contact_follows WHERE jsonb_array_length(tags) = 2",
        1,
    )
    .await;
    let tag_event = |t: i64, id: &str| {
        format!(
            "<xml><ToUserName>{}</ToUserName><CreateTime>{t}</CreateTime><MsgType>event</MsgType>\
             <Event>change_external_tag</Event><Id>{id}</Id><TagType>tag</TagType><ChangeType>create</ChangeType></xml>",
            MAIN.receive_id
        )
    };
    // etGHOST's group went before any list placed it there; etNEW is created after the lists are asked for.
    app.deliver(&tag_event(1_600_000_000, "etGHOST")).await;
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM external_corp_tags WHERE id = 'etGHOST' AND deleted",
        1,
    )
    .await;
    let future = unix_now() + 3600;
    app.deliver(&tag_event(future, "etNEW")).await;
    // Applied (its tag job queued in the same transaction), then every tag job done.
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM external_corp_tags WHERE id = 'etNEW'",
        1,
    )
    .await;
    wait_for_count(
        &app.pool,
        "SELECT count(*) FROM wecom_jobs WHERE kind = 'corp_tags' AND status <> 'done'",
        0,
    )
    .await;
    let tags: Vec<(String, bool)> =
        sqlx::query_as("SELECT id, deleted FROM external_corp_tags ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .expect("tags");
    let tags: Vec<(&str, bool)> = tags.iter().map(|(i, d)| (i.as_str(), *d)).collect();
    assert_eq!(
        tags,
        [
            ("etG", false),
            ("etGHOST", true),
            ("etKEEP", false),
            ("etNEW", false)
        ]
    );
    let on_relation: Vec<String> = sqlx::query_scalar(
        "SELECT e->>'tag_id' FROM external_contact_follows f, jsonb_array_elements(f.tags) e ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .expect("relation tags");
    assert_eq!(on_relation, ["etKEEP"], "etGHOST taken off the relation");
    let logged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM wecom_api_observations WHERE kind = 'unlisted_tags'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("log");
    assert_eq!(logged, 1, "recorded for a rebuild");
}
