//! Full resync against a fake WeCom: paging across cursors, mark-and-sweep, drift report, resuming.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;
use wecom_callback::sync::client::{Credentials, WecomApi};
use wiremock::matchers::{body_partial_json, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    MAIN, POLL_TIMEOUT, apply_all_pending, poll, sign_callback, spawn_app_with, unix_now,
    wait_applied,
};
use crate::sync::contact_event;

fn ok(body: serde_json::Value) -> ResponseTemplate {
    let mut b = body;
    b["errcode"] = json!(0);
    b["errmsg"] = json!("ok");
    ResponseTemplate::new(200).set_body_json(b)
}

fn entry(user: &str, ext: &str) -> serde_json::Value {
    json!({"external_contact": {"external_userid": ext, "name": format!("name-{ext}"), "type": 1},
           "follow_info": {"userid": user, "remark": "r", "createtime": 1700000000, "tag_id": ["et1"], "state": "s"}})
}

async fn mount_wecom(server: &MockServer) {
    Mock::given(path("/cgi-bin/gettoken"))
        .respond_with(ok(json!({"access_token": "T", "expires_in": 7200})))
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_follow_user_list"))
        .respond_with(ok(json!({"follow_user": ["alice", "bob"]})))
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/groupchat/list"))
        .respond_with(ok(
            json!({"group_chat_list": [{"chat_id": "wrNEW", "status": 0}], "next_cursor": ""}),
        ))
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/groupchat/get"))
        .and(body_partial_json(json!({"chat_id": "wrGONE"})))
        .respond_with(
            ok(json!({})).set_body_json(json!({"errcode": 40050, "errmsg": "chatid not exist"})),
        )
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/groupchat/get"))
        .respond_with(ok(json!({"group_chat": {"chat_id": "wrNEW", "name": "VIP群", "owner": "alice", "member_version": "v9",
            "member_list": [{"userid": "wmC1", "type": 2}]}})))
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_corp_tag_list"))
        .respond_with(ok(json!({"tag_group": [{"group_id": "g1", "group_name": "等级", "order": 1, "deleted": false,
            "tag": [{"id": "et1", "name": "A", "order": 1, "deleted": false}]}]})))
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_strategy_tag_list"))
        .respond_with(ok(json!({"tag_group": []})))
        .mount(server)
        .await;
}

fn creds() -> Credentials {
    Credentials {
        corp_id: MAIN.receive_id.into(),
        secret: SecretString::from("s"),
    }
}

#[tokio::test]
async fn resync_pages_through_cursors_tombstones_what_wecom_no_longer_has_and_reports_drift() {
    let server = MockServer::start().await;
    mount_wecom(&server).await;
    Mock::given(path("/cgi-bin/externalcontact/batch/get_by_user"))
        .and(body_partial_json(json!({"cursor": ""})))
        .respond_with(ok(json!({"external_contact_list": [entry("alice", "wmC1"), entry("bob", "wmC1")], "next_cursor": "c2"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/batch/get_by_user"))
        .and(body_partial_json(json!({"cursor": "c2"})))
        .respond_with(ok(
            json!({"external_contact_list": [entry("alice", "wmC2")], "next_cursor": ""}),
        ))
        .expect(1)
        .mount(&server)
        .await;

    // The projector is driven by the test: this is about resync against projected state, not the loop.
    let app = spawn_app_with(&[MAIN], |s| s.run_projector = false).await;
    // We hold a follow WeCom no longer has (its deletion callback was missed), and a chat and a tag too.
    for xml in [
        contact_event(1_600_000_000, "add_external_contact", "alice", "wmOLD", ""),
        contact_event(1_600_000_000, "add_external_contact", "alice", "wmC1", ""),
        "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><CreateTime>1600000000</CreateTime><MsgType>event</MsgType><Event>change_external_chat</Event><ChatId>wrGONE</ChatId><ChangeType>create</ChangeType></xml>".to_owned(),
        "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><CreateTime>1600000000</CreateTime><MsgType>event</MsgType><Event>change_external_tag</Event><Id>etGONE</Id><TagType>tag</TagType><ChangeType>create</ChangeType></xml>".to_owned(),
    ] {
        assert_eq!(app.post("main", &sign_callback(&MAIN, &xml, unix_now())).await.status().as_u16(), 200);
    }
    apply_all_pending(&app.pool).await;

    let api = WecomApi::new(&server.uri(), app.pool.clone()).expect("client");
    let drift =
        wecom_callback::sync::resync::resync(&app.pool, &api, "main", &creds(), Duration::ZERO)
            .await
            .expect("resync");
    assert_eq!(drift.follows_created, 2, "bob-wmC1 and alice-wmC2");
    assert_eq!(drift.follows_updated, 1, "alice-wmC1");
    assert_eq!(drift.follows_removed, 1, "alice-wmOLD");
    assert_eq!(drift.contacts_created, 1, "wmC2");
    assert_eq!((drift.chats_created, drift.chats_dismissed), (1, 1));
    assert_eq!((drift.tags_created, drift.tags_deleted), (2, 1));

    let (status, source): (String, Option<String>) = sqlx::query_as(
        "SELECT status, delete_source FROM external_contact_follows WHERE external_userid = 'wmOLD'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("old follow");
    assert_eq!(
        (status.as_str(), source.as_deref()),
        ("removed", Some("resync"))
    );
    let page: serde_json::Value = app
        .client
        .get(format!(
            "{}/api/v1/corps/{}/staff/alice/customers?status=removed",
            app.address, MAIN.receive_id
        ))
        .bearer_auth(crate::helpers::API_TOKEN)
        .send()
        .await
        .expect("api")
        .json()
        .await
        .expect("json");
    assert_eq!(page["data"][0]["external_userid"], "wmOLD", "{page}");
    let remark: Option<String> = sqlx::query_scalar(
        "SELECT remark FROM external_contact_follows WHERE userid = 'alice' AND external_userid = 'wmC1'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("follow");
    assert_eq!(remark.as_deref(), Some("r"));
    let chats: Vec<(String, String)> =
        sqlx::query_as("SELECT chat_id, status FROM external_group_chats ORDER BY chat_id")
            .fetch_all(&app.pool)
            .await
            .expect("chats");
    assert_eq!(
        chats,
        vec![
            ("wrGONE".into(), "dismissed".into()),
            ("wrNEW".into(), "active".into())
        ]
    );
    let stored: serde_json::Value =
        sqlx::query_scalar("SELECT drift FROM wecom_resync_runs WHERE status = 'done'")
            .fetch_one(&app.pool)
            .await
            .expect("run");
    assert_eq!(stored["follows_removed"], 1);

    // An event newer than the run outranks what the resync saw: this deletion wins.
    let del = contact_event(unix_now() + 5, "del_follow_user", "bob", "wmC1", "");
    assert_eq!(
        app.post("main", &sign_callback(&MAIN, &del, unix_now()))
            .await
            .status()
            .as_u16(),
        200
    );
    apply_all_pending(&app.pool).await;
    let status: String =
        sqlx::query_scalar("SELECT status FROM external_contact_follows WHERE userid = 'bob'")
            .fetch_one(&app.pool)
            .await
            .expect("bob");
    assert_eq!(status, "deleted_by_customer");
}

#[tokio::test]
async fn an_interrupted_resync_resumes_where_it_stopped() {
    let server = MockServer::start().await;
    mount_wecom(&server).await;
    Mock::given(path("/cgi-bin/externalcontact/batch/get_by_user"))
        .and(body_partial_json(json!({"cursor": ""})))
        .respond_with(ok(
            json!({"external_contact_list": [entry("alice", "wmC1")], "next_cursor": "c2"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/batch/get_by_user"))
        .and(body_partial_json(json!({"cursor": "c2"})))
        // 60020 fails every call: the run stops (an item-level error would be retried and skipped instead).
        .respond_with(
            ok(json!({})).set_body_json(
                json!({"errcode": 60020, "errmsg": "not allow to access from your ip"}),
            ),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/batch/get_by_user"))
        .and(body_partial_json(json!({"cursor": "c2"})))
        .respond_with(ok(
            json!({"external_contact_list": [entry("bob", "wmC2")], "next_cursor": ""}),
        ))
        .with_priority(2)
        .mount(&server)
        .await;
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let api = WecomApi::new(&server.uri(), app.pool.clone()).expect("client");
    let first =
        wecom_callback::sync::resync::resync(&app.pool, &api, "main", &creds(), Duration::ZERO)
            .await;
    assert!(first.is_err(), "the untrusted IP stops the run");
    let (status, cursor): (String, String) =
        sqlx::query_as("SELECT status, progress->>'cursor' FROM wecom_resync_runs")
            .fetch_one(&app.pool)
            .await
            .expect("run");
    assert_eq!((status.as_str(), cursor.as_str()), ("failed", "c2"));

    let drift =
        wecom_callback::sync::resync::resync(&app.pool, &api, "main", &creds(), Duration::ZERO)
            .await
            .expect("resumed");
    assert_eq!(
        drift.follows_created, 2,
        "both pages counted across the interruption"
    );
    let runs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM wecom_resync_runs WHERE status = 'done'")
            .fetch_one(&app.pool)
            .await
            .expect("runs");
    assert_eq!(runs, 1, "the same run, resumed");
}

#[tokio::test]
async fn serve_runs_the_scheduled_resync_and_exports_its_drift() {
    let server = MockServer::start().await;
    mount_wecom(&server).await;
    Mock::given(path("/cgi-bin/externalcontact/batch/get_by_user"))
        .respond_with(ok(
            json!({"external_contact_list": [entry("alice", "wmC1")], "next_cursor": ""}),
        ))
        .mount(&server)
        .await;
    let uri = server.uri();
    let app = spawn_app_with(&[MAIN], move |s| {
        s.apps[0].secret = Some(SecretString::from("s"));
        s.api.base_url = uri;
        s.api.worker_concurrency = 0;
        s.api.resync_interval = Duration::from_secs(3600);
    })
    .await;
    poll(
        "the scheduled resync's drift in /metrics",
        POLL_TIMEOUT,
        Duration::from_millis(100),
        || async {
            let text = app.get("/metrics").await.text().await.expect("metrics");
            if text.contains(r#"wecom_resync_drift_total{change="created",table="follows"} 1"#) {
                Ok(())
            } else {
                Err(text)
            }
        },
    )
    .await;
}

fn options() -> wecom_callback::sync::resync::Options {
    let mut o = wecom_callback::sync::resync::Options::new(Duration::ZERO);
    o.item_backoff = Duration::from_millis(1);
    o
}

async fn run_with(
    app: &crate::helpers::TestApp,
    server: &MockServer,
    o: &wecom_callback::sync::resync::Options,
) -> Result<wecom_callback::store::resync::Drift, wecom_callback::sync::resync::ResyncError> {
    let api = WecomApi::new(&server.uri(), app.pool.clone())
        .expect("client")
        .with_backoff(Duration::from_millis(1));
    wecom_callback::sync::resync::resync_with(&app.pool, &api, "main", &creds(), o).await
}

#[tokio::test]
async fn a_second_run_with_nothing_changed_reports_no_drift_and_a_failing_chat_is_skipped() {
    let server = MockServer::start().await;
    mount_wecom(&server).await;
    Mock::given(path("/cgi-bin/externalcontact/batch/get_by_user"))
        .respond_with(ok(
            json!({"external_contact_list": [entry("alice", "wmC1")], "next_cursor": ""}),
        ))
        .mount(&server)
        .await;
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let first = run_with(&app, &server, &options()).await.expect("first");
    assert_eq!(first.follows_created, 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The first run reads the corp tags after the follows, so the second one names the follow's tag (a real
    // change); from then on nothing changes.
    let second = run_with(&app, &server, &options()).await.expect("second");
    assert_eq!(second.follows_updated, 1, "the tag name filled in");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = run_with(&app, &server, &options()).await.expect("third");
    assert_eq!(
        second,
        wecom_callback::store::resync::Drift::default(),
        "no-op"
    );

    // One chat's groupchat/get keeps failing: recorded, skipped, the run finishes.
    Mock::given(path("/cgi-bin/externalcontact/groupchat/get"))
        .respond_with(ResponseTemplate::new(502))
        .with_priority(1)
        .mount(&server)
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let third = run_with(&app, &server, &options()).await.expect("third");
    assert_eq!(third.skipped, 1);
    let errors: serde_json::Value = sqlx::query_scalar(
        "SELECT progress->'errors' FROM wecom_resync_runs WHERE status = 'done' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .expect("run");
    assert!(
        errors.to_string().contains("groupchat/get wrNEW"),
        "{errors}"
    );
}

#[tokio::test]
async fn the_sweep_refuses_a_mass_removal_unless_allowed() {
    let server = MockServer::start().await;
    mount_wecom(&server).await;
    Mock::given(path("/cgi-bin/externalcontact/batch/get_by_user"))
        .respond_with(ok(json!({"external_contact_list": [], "next_cursor": ""})))
        .mount(&server)
        .await;
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    for i in 0..12 {
        let xml = contact_event(
            1_600_000_000,
            "add_external_contact",
            "alice",
            &format!("wmM{i}"),
            "",
        );
        assert_eq!(
            app.post("main", &sign_callback(&MAIN, &xml, unix_now()))
                .await
                .status()
                .as_u16(),
            200
        );
    }
    wait_applied(&app.pool).await;
    let refused = run_with(&app, &server, &options()).await.expect("run");
    assert_eq!(
        (refused.follows_removed, refused.follows_removal_refused),
        (0, 12)
    );
    let mut allow = options();
    allow.allow_mass_removal = true;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let allowed = run_with(&app, &server, &allow).await.expect("run");
    assert_eq!(allowed.follows_removed, 12);
}

#[tokio::test]
async fn two_concurrent_resyncs_of_a_corp_make_the_calls_once() {
    let server = MockServer::start().await;
    mount_wecom(&server).await;
    Mock::given(path("/cgi-bin/externalcontact/batch/get_by_user"))
        .respond_with(
            ok(json!({"external_contact_list": [entry("alice", "wmC1")], "next_cursor": ""}))
                .set_delay(Duration::from_millis(300)),
        )
        .expect(1)
        .mount(&server)
        .await;
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let o = options();
    let (a, b) = tokio::join!(run_with(&app, &server, &o), run_with(&app, &server, &o));
    let busy = [&a, &b]
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(wecom_callback::sync::resync::ResyncError::Busy { .. })
            )
        })
        .count();
    assert_eq!(busy, 1, "{a:?} {b:?}");
    assert!(a.is_ok() || b.is_ok());
}

#[tokio::test]
async fn groupchat_list_asks_per_owner_chunk_and_a_stale_run_is_abandoned() {
    let server = MockServer::start().await;
    mount_wecom(&server).await;
    Mock::given(path("/cgi-bin/externalcontact/batch/get_by_user"))
        .respond_with(ok(json!({"external_contact_list": [], "next_cursor": ""})))
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/groupchat/list"))
        .and(body_partial_json(
            json!({"owner_filter": {"userid_list": ["alice"]}}),
        ))
        .respond_with(ok(json!({"group_chat_list": [], "next_cursor": ""})))
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/groupchat/list"))
        .and(body_partial_json(
            json!({"owner_filter": {"userid_list": ["bob"]}}),
        ))
        .respond_with(ok(json!({"group_chat_list": [], "next_cursor": ""})))
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    // A run from two days ago that never finished.
    sqlx::query(
        "INSERT INTO wecom_resync_runs (app, corp_id, started_at, status) VALUES ('main', $1, now() - interval '2 days', 'failed')",
    )
    .bind(MAIN.receive_id)
    .execute(&app.pool)
    .await
    .expect("old run");
    let mut o = options();
    o.chunk = 1;
    run_with(&app, &server, &o).await.expect("run");
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM wecom_resync_runs ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .expect("runs");
    assert_eq!(statuses, vec!["abandoned".to_owned(), "done".to_owned()]);
}
