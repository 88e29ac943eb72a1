//! Full resync against a fake WeCom: paging across cursors, mark-and-sweep, drift report, resuming.

use std::time::Duration;

use secrecy::SecretString;
use serde_json::json;
use wecom_callback::sync::client::WecomApi;
use wiremock::matchers::{body_partial_json, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    MAIN, POLL_TIMEOUT, apply_all_pending, creds, ok, poll, spawn_app_with, unix_now, wait_applied,
};
use crate::sync::contact_event;

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
        .respond_with(wecom_error(40050, "chatid not exist"))
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
    Mock::given(path("/cgi-bin/externalcontact/get_unassigned_list"))
        .respond_with(ok(json!({"info": [], "is_last": true, "next_cursor": ""})))
        .mount(server)
        .await;
    // An empty directory: the directory step reads it and changes nothing.
    Mock::given(path("/cgi-bin/department/list"))
        .respond_with(ok(json!({"department": []})))
        .mount(server)
        .await;
    Mock::given(path("/cgi-bin/user/list_id"))
        .respond_with(ok(json!({"dept_user": [], "next_cursor": ""})))
        .mount(server)
        .await;
    // The sweep confirms each removal: by default WeCom knows no such relation (a test's own answer wins).
    Mock::given(path("/cgi-bin/externalcontact/get"))
        .respond_with(wecom_error(84061, "not external contact"))
        .with_priority(10)
        .mount(server)
        .await;
}

/// A fake WeCom answering every call of a resync ([`mount_wecom`]) except `batch/get_by_user`, which each test
/// mounts (see [`answer_batch`]).
async fn fake_wecom() -> MockServer {
    let server = MockServer::start().await;
    mount_wecom(&server).await;
    server
}

/// `batch/get_by_user` answers every call with `answer`.
async fn answer_batch(server: &MockServer, answer: impl wiremock::Respond + 'static) {
    Mock::given(path("/cgi-bin/externalcontact/batch/get_by_user"))
        .respond_with(answer)
        .mount(server)
        .await;
}

#[tokio::test]
async fn resync_pages_through_cursors_tombstones_what_wecom_no_longer_has_and_reports_drift() {
    let server = fake_wecom().await;
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
        app.deliver(&xml).await;
    }
    apply_all_pending(&app.pool).await;

    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool)
        .await
        .expect("listener");
    listener
        .listen("wecom_contact_changed")
        .await
        .expect("listen");
    let api = WecomApi::new(&server.uri(), app.pool.clone()).expect("client");
    let drift =
        wecom_callback::sync::resync::resync(&app.pool, &api, "main", &creds(), Duration::ZERO)
            .await
            .expect("resync");
    // The sweep's removal is notified like every API status change.
    let mut removed = Vec::new();
    let mut tags_deleted = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), listener.recv()).await {
        let p: serde_json::Value = serde_json::from_str(n.payload()).expect("JSON");
        if p["status"] == "removed" {
            removed.push(p.clone());
        }
        // So is the tag sweep's deletion.
        if p["kind"] == "tag" && p["change"] == "delete" {
            tags_deleted.push((p["id"].clone(), p["source"].clone()));
        }
    }
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(tags_deleted, [(json!("etGONE"), json!("api"))]);
    assert_eq!(removed[0]["external_userid"], "wmOLD");
    assert_eq!(removed[0]["userid"], "alice");
    assert_eq!(removed[0]["source"], "api");
    assert_eq!(removed[0]["change"], "resync");
    assert_eq!(removed[0]["previous_status"], "active");
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
    app.deliver(&del).await;
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
    let server = fake_wecom().await;
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
        .respond_with(untrusted_ip())
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
    let server = fake_wecom().await;
    answer_batch(
        &server,
        ok(json!({"external_contact_list": [entry("alice", "wmC1")], "next_cursor": ""})),
    )
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
    let server = fake_wecom().await;
    answer_batch(
        &server,
        ok(json!({"external_contact_list": [entry("alice", "wmC1")], "next_cursor": ""})),
    )
    .await;
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let first = run_with(&app, &server, &options()).await.expect("first");
    assert_eq!(first.follows_created, 1);
    // The run reads the corp tags before the follows, so batch/get_by_user's bare tag id is named at once.
    let tags: serde_json::Value = sqlx::query_scalar(
        "SELECT tags FROM external_contact_follows WHERE userid = 'alice' AND external_userid = 'wmC1'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("follow");
    assert_eq!(
        tags,
        json!([{"tag_id": "et1", "type": 1, "tag_name": "A", "group_name": "等级"}]),
        "the follow's tag is named by the run that wrote it"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = run_with(&app, &server, &options()).await.expect("second");
    assert_eq!(
        second,
        wecom_callback::store::resync::Drift::default(),
        "nothing changed in WeCom: no drift (the tag name was not left for this run to fill in)"
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
    let server = fake_wecom().await;
    answer_batch(
        &server,
        ok(json!({"external_contact_list": [], "next_cursor": ""})),
    )
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
        app.deliver(&xml).await;
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

/// Not being listed by `batch/get_by_user` is not proof that a relation ended (its opaque cursor may skip an
/// entry while the corp changes): each removal is confirmed with `externalcontact/get`. Listed there: kept.
/// 84061: removed. Unanswerable: skipped, kept until the next run.
#[tokio::test]
async fn the_follow_sweep_removes_only_what_externalcontact_get_confirms() {
    let server = fake_wecom().await;
    answer_batch(
        &server,
        ok(json!({"external_contact_list": [entry("alice", "wmA")], "next_cursor": ""})),
    )
    .await;
    Mock::given(path("/cgi-bin/externalcontact/get"))
        .and(wiremock::matchers::query_param("external_userid", "wmB"))
        .respond_with(ok(json!({
            "external_contact": {"external_userid": "wmB", "name": "仍在", "type": 1},
            "follow_user": [{"userid": "alice", "remark": "still here", "createtime": 1600000000}],
            "next_cursor": ""})))
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get"))
        .and(wiremock::matchers::query_param("external_userid", "wmD"))
        .respond_with(wecom_error(-1, "system busy"))
        .mount(&server)
        .await;
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    for ext in ["wmA", "wmB", "wmC", "wmD"] {
        app.deliver(&contact_event(
            1_600_000_000,
            "add_external_contact",
            "alice",
            ext,
            "",
        ))
        .await;
    }
    wait_applied(&app.pool).await;
    let drift = run_with(&app, &server, &options()).await.expect("run");
    let statuses: Vec<(String, String)> = sqlx::query_as(
        "SELECT external_userid, status::text FROM external_contact_follows ORDER BY external_userid",
    )
    .fetch_all(&app.pool)
    .await
    .expect("follows");
    let expected = [
        ("wmA", "active"),
        ("wmB", "active"),
        ("wmC", "removed"),
        ("wmD", "active"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(e, s)| ((*e).to_owned(), (*s).to_owned()))
        .collect();
    assert_eq!(statuses, expected);
    assert_eq!(drift.follows_removed, 1, "wmC");
    assert_eq!(drift.follows_unlisted_kept, 1, "wmB");
    assert_eq!(drift.skipped, 1, "wmD could not be asked");
    let remark: Option<String> = sqlx::query_scalar(
        "SELECT remark FROM external_contact_follows WHERE external_userid = 'wmB'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("wmB");
    assert_eq!(
        remark.as_deref(),
        Some("still here"),
        "the confirming answer is written"
    );
    let errors: serde_json::Value = sqlx::query_scalar(
        "SELECT progress->'errors' FROM wecom_resync_runs ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .expect("errors");
    assert!(
        errors.to_string().contains("externalcontact/get wmD"),
        "{errors}"
    );
}

#[tokio::test]
async fn two_concurrent_resyncs_of_a_corp_make_the_calls_once() {
    let server = fake_wecom().await;
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
    let server = fake_wecom().await;
    answer_batch(
        &server,
        ok(json!({"external_contact_list": [], "next_cursor": ""})),
    )
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

/// The userids of every `batch/get_by_user` call the fake received, one entry per call and member.
async fn batch_calls_by_user(server: &MockServer) -> std::collections::BTreeMap<String, usize> {
    let mut calls = std::collections::BTreeMap::new();
    for r in server.received_requests().await.unwrap_or_default() {
        if r.url.path() != "/cgi-bin/externalcontact/batch/get_by_user" {
            continue;
        }
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("json body");
        for u in body["userid_list"].as_array().into_iter().flatten() {
            *calls
                .entry(u.as_str().unwrap_or("").to_owned())
                .or_insert(0) += 1;
        }
    }
    calls
}

/// Answers `batch/get_by_user` with one customer `wm-<userid>` per requested member.
fn one_customer_each(req: &wiremock::Request) -> ResponseTemplate {
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
    let list: Vec<serde_json::Value> = body["userid_list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u.as_str())
        .map(|u| entry(u, &format!("wm-{u}")))
        .collect();
    ok(json!({"external_contact_list": list, "next_cursor": ""}))
}

/// WeCom's answer refusing a call with `errcode`.
fn wecom_error(errcode: i64, errmsg: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"errcode": errcode, "errmsg": errmsg}))
}

fn untrusted_ip() -> ResponseTemplate {
    wecom_error(60020, "not allow to access from your ip")
}

#[tokio::test]
async fn a_resume_after_the_staff_list_changed_skips_nobody_and_lists_nobody_twice() {
    let server = fake_wecom().await;
    // The first run sees alice, bob and carol; by the resume bob has left and aaron (sorting before the
    // members done) and dave have joined: a resume by position in the list would skip or repeat someone.
    Mock::given(path("/cgi-bin/externalcontact/get_follow_user_list"))
        .respond_with(ok(json!({"follow_user": ["carol", "alice", "bob"]})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/get_follow_user_list"))
        .respond_with(ok(
            json!({"follow_user": ["dave", "carol", "alice", "aaron"]}),
        ))
        .with_priority(2)
        .mount(&server)
        .await;
    // bob's chunk is interrupted (60020 stops the run) the first time.
    Mock::given(path("/cgi-bin/externalcontact/batch/get_by_user"))
        .and(body_partial_json(json!({"userid_list": ["bob"]})))
        .respond_with(untrusted_ip())
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/batch/get_by_user"))
        .respond_with(one_customer_each)
        .with_priority(2)
        .mount(&server)
        .await;
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let mut o = options();
    o.chunk = 1;
    let first = run_with(&app, &server, &o).await;
    assert!(first.is_err(), "bob's chunk stops the first attempt");
    let (users_done, chunk): (serde_json::Value, serde_json::Value) = sqlx::query_as(
        "SELECT progress->'users_done', progress->'chunk_users' FROM wecom_resync_runs",
    )
    .fetch_one(&app.pool)
    .await
    .expect("run");
    assert_eq!((users_done, chunk), (json!(["alice"]), json!(["bob"])));

    let drift = run_with(&app, &server, &o).await.expect("the resume");
    assert_eq!(
        batch_calls_by_user(&server).await,
        [
            ("aaron", 1),
            ("alice", 1),
            ("bob", 1),
            ("carol", 1),
            ("dave", 1)
        ]
        .into_iter()
        .map(|(u, n)| (u.to_owned(), n))
        .collect(),
        "every member still listed is listed once; bob, gone before the resume, is not asked for again"
    );
    assert_eq!(
        drift.follows_created, 4,
        "alice's, then aaron's, carol's and dave's"
    );
    let (status, attempts, users_done): (String, i32, serde_json::Value) =
        sqlx::query_as("SELECT status, attempts, progress->'users_done' FROM wecom_resync_runs")
            .fetch_one(&app.pool)
            .await
            .expect("run");
    assert_eq!(
        (status.as_str(), attempts, users_done),
        ("done", 2, json!(["aaron", "alice", "carol", "dave"])),
        "one run, resumed once"
    );
}

#[tokio::test]
async fn a_run_that_failed_three_times_is_abandoned_and_a_fresh_run_starts() {
    let server = fake_wecom().await;
    Mock::given(path("/cgi-bin/externalcontact/batch/get_by_user"))
        .and(body_partial_json(json!({"userid_list": ["bob"]})))
        .respond_with(untrusted_ip())
        .up_to_n_times(3)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/externalcontact/batch/get_by_user"))
        .respond_with(one_customer_each)
        .with_priority(2)
        .mount(&server)
        .await;
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let mut o = options();
    o.chunk = 1;
    for attempt in 1..=3 {
        assert!(
            run_with(&app, &server, &o).await.is_err(),
            "attempt {attempt} stops at bob"
        );
    }
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM wecom_resync_runs")
            .fetch_one(&app.pool)
            .await
            .expect("one run so far");
    assert_eq!((status.as_str(), attempts), ("failed", 3));
    assert_eq!(
        batch_calls_by_user(&server).await["alice"],
        1,
        "resumed twice past alice"
    );

    // Bob would pass now, but the run was started three times: it is given up and a fresh one starts over.
    run_with(&app, &server, &o).await.expect("a fresh run");
    let runs: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT status, last_error FROM wecom_resync_runs ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .expect("runs");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].0, "abandoned");
    assert!(
        runs[0]
            .1
            .as_deref()
            .unwrap_or("")
            .contains("abandoned after 3 attempts"),
        "{runs:?}"
    );
    assert_eq!(runs[1].0, "done");
    let calls = batch_calls_by_user(&server).await;
    assert_eq!(
        (calls["alice"], calls["bob"]),
        (2, 4),
        "the fresh run lists alice again instead of trusting the abandoned run's progress"
    );
}

#[tokio::test]
async fn a_failed_scheduled_resync_is_retried_after_the_backoff_not_the_interval() {
    let server = fake_wecom().await;
    // The first two starts fail at once (the IP is not trusted yet), the third succeeds.
    Mock::given(path("/cgi-bin/externalcontact/get_follow_user_list"))
        .respond_with(untrusted_ip())
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    answer_batch(&server, one_customer_each).await;
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let api = WecomApi::new(&server.uri(), app.pool.clone())
        .expect("client")
        .with_backoff(Duration::from_millis(1));
    let mut o = options();
    let base = Duration::from_millis(300);
    o.retry_base = base;
    let token = tokio_util::sync::CancellationToken::new();
    let started = std::time::Instant::now();
    let task = tokio::spawn(wecom_callback::sync::resync::schedule(
        app.pool.clone(),
        api,
        [("main".to_owned(), creds())].into_iter().collect(),
        // A day: only the backoff can bring the retries within the test's time.
        Duration::from_secs(24 * 3600),
        o,
        None,
        token.clone(),
    ));
    poll(
        "the scheduled resync to succeed on a retry",
        POLL_TIMEOUT,
        Duration::from_millis(50),
        || async {
            let done: Option<i32> =
                sqlx::query_scalar("SELECT attempts FROM wecom_resync_runs WHERE status = 'done'")
                    .fetch_optional(&app.pool)
                    .await
                    .expect("runs");
            done.ok_or_else(|| "no run done yet".to_owned())
        },
    )
    .await;
    let elapsed = started.elapsed();
    token.cancel();
    task.await.expect("the schedule stops on cancellation");
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM wecom_resync_runs")
        .fetch_one(&app.pool)
        .await
        .expect("one run, resumed twice");
    assert_eq!(attempts, 3);
    // base after the first failure, twice base after the second.
    assert!(
        elapsed >= base * 3,
        "retried after {elapsed:?}, sooner than the backoff ({:?} in all)",
        base * 3
    );
    let lists = server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/cgi-bin/externalcontact/get_follow_user_list")
        .count();
    assert_eq!(lists, 3, "two failures and the success, no busy loop");
}

#[tokio::test]
async fn without_the_chat_apis_48002_the_chat_step_is_skipped_with_the_reason_and_the_run_finishes()
{
    let server = fake_wecom().await;
    Mock::given(path("/cgi-bin/externalcontact/groupchat/list"))
        .respond_with(wecom_error(
            48002,
            "api forbidden, hint: [1700000000_1_sim]",
        ))
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    answer_batch(&server, one_customer_each).await;
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    // A chat known from an event: with the chat APIs refused nothing may be swept.
    let xml = "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><CreateTime>1600000000</CreateTime><MsgType>event</MsgType><Event>change_external_chat</Event><ChatId>wrKEEP</ChatId><ChangeType>create</ChangeType></xml>";
    app.deliver(xml).await;
    wait_applied(&app.pool).await;

    let drift = run_with(&app, &server, &options())
        .await
        .expect("the run finishes without the chats");
    assert_eq!(drift.skipped, 1, "{drift:?}");
    assert_eq!(drift.follows_created, 2, "the follows were synced");
    assert_eq!(drift.chats_dismissed, 0);
    let (status, errors): (String, serde_json::Value) =
        sqlx::query_as("SELECT status, progress->'errors' FROM wecom_resync_runs")
            .fetch_one(&app.pool)
            .await
            .expect("run");
    assert_eq!(status, "done");
    let errors = errors.to_string();
    assert!(errors.contains("the chat step was skipped"), "{errors}");
    assert!(errors.contains("48002"), "{errors}");
    assert!(
        errors.contains("客户群"),
        "says what permission to grant: {errors}"
    );
    let chat: String =
        sqlx::query_scalar("SELECT status FROM external_group_chats WHERE chat_id = 'wrKEEP'")
            .fetch_one(&app.pool)
            .await
            .expect("chat");
    assert_eq!(chat, "active", "not swept");
    // `expect(1)` on groupchat/list (checked when the server drops): asked once, not retried in a loop.
}

const BIN: &str = env!("CARGO_BIN_EXE_wecom-callback");

#[tokio::test]
async fn the_resync_command_shows_staff_done_of_total_calls_and_eta_on_the_terminal_and_in_the_log()
{
    let server = fake_wecom().await;
    answer_batch(&server, one_customer_each).await;
    let (_guard, url) = crate::helpers::fresh_database();
    let out = tokio::process::Command::new(BIN)
        .arg("resync")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &url)
        .env("WECOM_TOKEN", MAIN.token)
        .env("WECOM_ENCODING_AES_KEY", MAIN.encoding_aes_key)
        .env("WECOM_CORP_ID", MAIN.receive_id)
        .env("WECOM_APP_NAME", "main")
        .env("WECOM_SECRET", "s")
        .env("WECOM_API_BASE_URL", server.uri())
        .env("RUST_LOG", "info")
        .output()
        .await
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(r#""follows_created":2"#),
        "the drift report on stdout: {stdout}"
    );
    // The terminal line (stderr, on its own) and the same report in the log.
    let terminal: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("main: Follows: "))
        .collect();
    assert_eq!(terminal.len(), 1, "one chunk, one progress line: {stderr}");
    let line = terminal[0];
    assert!(line.contains("staff 2/2"), "staff done / total: {line}");
    assert!(line.contains(" calls"), "API calls: {line}");
    assert!(line.contains("ETA 0m00s"), "time left: {line}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("resync progress: main: Follows: staff 2/2")),
        "the log has the progress too: {stderr}"
    );
}

#[tokio::test]
async fn a_secret_refused_the_directory_skips_the_directory_step_with_the_reason_and_the_run_finishes()
 {
    let server = fake_wecom().await;
    // The 通讯录 secret from an IP WeCom does not trust (since 2022): 48009 on every directory call.
    Mock::given(path("/cgi-bin/user/list_id"))
        .respond_with(wecom_error(
            48009,
            "api forbidden for ip, hint: [1700000000_2_sim]",
        ))
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    answer_batch(&server, one_customer_each).await;
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let drift = run_with(&app, &server, &options())
        .await
        .expect("the run finishes without the directory");
    assert_eq!(drift.skipped, 1, "{drift:?}");
    assert_eq!(drift.follows_created, 2, "the follows were synced");
    assert_eq!(drift.staff_left, 0);
    let (status, attempts, errors): (String, i32, serde_json::Value) =
        sqlx::query_as("SELECT status, attempts, progress->'errors' FROM wecom_resync_runs")
            .fetch_one(&app.pool)
            .await
            .expect("run");
    assert_eq!(
        (status.as_str(), attempts),
        ("done", 1),
        "not failed, not retried"
    );
    let errors = errors.to_string();
    assert!(
        errors.contains("the directory step was skipped"),
        "{errors}"
    );
    assert!(
        errors.contains("48009") && errors.contains("企业可信IP"),
        "says what to do: {errors}"
    );
}

#[tokio::test]
async fn members_gone_from_the_directory_are_marked_left_only_behind_the_mass_removal_guard() {
    let server = fake_wecom().await;
    Mock::given(path("/cgi-bin/user/list_id"))
        .respond_with(ok(
            json!({"dept_user": [{"userid": "alice", "department": 1}], "next_cursor": ""}),
        ))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/cgi-bin/user/get"))
        .and(wiremock::matchers::query_param("userid", "alice"))
        .respond_with(ok(json!({"userid": "alice", "name": "Alice", "status": 1})))
        .mount(&server)
        .await;
    // Each departure is confirmed: WeCom has none of the others any more.
    Mock::given(path("/cgi-bin/user/get"))
        .respond_with(wecom_error(60111, "userid not found"))
        .with_priority(10)
        .mount(&server)
        .await;
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    // Twelve members the directory knew from events; WeCom now lists only alice.
    let t = 1_600_000_000;
    for i in 0..12 {
        let xml = format!(
            "<xml><ToUserName>{corp}</ToUserName><CreateTime>{t}</CreateTime><MsgType>event</MsgType>\
             <Event>change_contact</Event><ChangeType>create_user</ChangeType><UserID>m{i:02}</UserID>\
             <Department>1</Department></xml>",
            corp = MAIN.receive_id
        );
        app.deliver(&xml).await;
    }
    wait_applied(&app.pool).await;
    let refused = run_with(&app, &server, &options()).await.expect("run");
    assert_eq!(
        (
            refused.staff_left,
            refused.staff_removal_refused,
            refused.staff_created
        ),
        (0, 12, 1),
        "{refused:?}"
    );
    let present: i64 = sqlx::query_scalar("SELECT count(*) FROM staff WHERE status <> 'left'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(present, 13, "nobody marked left without confirmation");
    let mut allow = options();
    allow.allow_mass_removal = true;
    let allowed = run_with(&app, &server, &allow).await.expect("run");
    assert_eq!(allowed.staff_left, 12, "{allowed:?}");
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM staff WHERE status = 'left' AND left_at IS NOT NULL",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(left, 12);
}

/// A department `department/list` no longer names is marked deleted (its `delete_party` callback may have been
/// lost); an empty list, which says more about the app's 可见范围 than about the corp, deletes nothing.
#[tokio::test]
async fn departments_gone_from_department_list_are_marked_deleted_but_an_empty_list_deletes_nothing()
 {
    let server = fake_wecom().await;
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let t = 1_600_000_000;
    for (id, name) in [(2, "销售"), (3, "客服")] {
        let xml = format!(
            "<xml><ToUserName>{corp}</ToUserName><CreateTime>{t}</CreateTime><MsgType>event</MsgType>\
             <Event>change_contact</Event><ChangeType>create_party</ChangeType><Id>{id}</Id><Name>{name}</Name>\
             <ParentId>1</ParentId><Order>1</Order></xml>",
            corp = MAIN.receive_id
        );
        app.deliver(&xml).await;
    }
    wait_applied(&app.pool).await;
    let deleted = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT id FROM departments WHERE deleted ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("read departments")
    };
    // The default fake answers an empty department/list.
    run_with(&app, &server, &options()).await.expect("run");
    assert!(
        deleted(app.pool.clone()).await.is_empty(),
        "an empty list deletes nothing"
    );

    Mock::given(path("/cgi-bin/department/list"))
        .respond_with(ok(json!({"department": [
            {"id": 1, "name": "总部", "parentid": 0, "order": 1},
            {"id": 2, "name": "销售", "parentid": 1, "order": 1}
        ]})))
        .with_priority(1)
        .mount(&server)
        .await;
    run_with(&app, &server, &options()).await.expect("run");
    assert_eq!(
        deleted(app.pool.clone()).await,
        vec![3],
        "客服 is gone from WeCom"
    );
    let names: Vec<(i64, Option<String>)> =
        sqlx::query_as("SELECT id, name FROM departments WHERE NOT deleted ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .expect("read departments");
    assert_eq!(
        names,
        vec![(1, Some("总部".into())), (2, Some("销售".into()))]
    );
}
