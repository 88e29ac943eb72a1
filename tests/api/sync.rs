//! External-contact sync: callbacks → wecom_events → projections, notifications and the read API.

use std::time::Duration;

use rand::seq::SliceRandom;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::helpers::{
    API_TOKEN, MAIN, SUITE, TestApp, apply_all_pending, sign_callback, spawn_app, spawn_app_with,
    unix_now, wait_applied,
};

const CORP: &str = "wx5823bf96d3bd56c7";
const T: i64 = 1_700_000_000;

fn header(t: i64, event: &str, change: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>{t}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event><ChangeType><![CDATA[{change}]]></ChangeType>"
    )
}

pub fn contact_event(t: i64, change: &str, user: &str, ext: &str, extra: &str) -> String {
    format!(
        "{}<UserID><![CDATA[{user}]]></UserID><ExternalUserID><![CDATA[{ext}]]></ExternalUserID>{extra}</xml>",
        header(t, "change_external_contact", change)
    )
}

pub fn chat_event(t: i64, change: &str, chat: &str, extra: &str) -> String {
    format!(
        "{}<ChatId><![CDATA[{chat}]]></ChatId>{extra}</xml>",
        header(t, "change_external_chat", change)
    )
}

pub fn tag_event(t: i64, change: &str, id: &str, extra: &str) -> String {
    format!(
        "{}<Id><![CDATA[{id}]]></Id>{extra}</xml>",
        header(t, "change_external_tag", change)
    )
}

fn state(s: &str) -> String {
    format!("<State><![CDATA[{s}]]></State><WelcomeCode><![CDATA[W-{s}]]></WelcomeCode>")
}

/// A day of one corp: adds, edits, half-adds, deletes both ways, a transfer failure, a same-second add and
/// delete, a delete followed by a genuine re-add, chat and tag changes.
fn a_day() -> Vec<String> {
    vec![
        contact_event(
            T + 10,
            "add_external_contact",
            "alice",
            "wmC1",
            &state("ad_campaign"),
        ),
        contact_event(
            T + 20,
            "add_external_contact",
            "bob",
            "wmC1",
            &state("qr_store"),
        ),
        contact_event(T + 30, "edit_external_contact", "alice", "wmC1", ""),
        contact_event(
            T + 40,
            "add_half_external_contact",
            "alice",
            "wmC2",
            &state("h5"),
        ),
        contact_event(
            T + 50,
            "add_external_contact",
            "alice",
            "wmC2",
            &state("h5"),
        ),
        contact_event(
            T + 60,
            "add_external_contact",
            "alice",
            "wmC3",
            &state("fair"),
        ),
        contact_event(T + 70, "del_external_contact", "alice", "wmC3", ""),
        contact_event(T + 80, "del_follow_user", "bob", "wmC1", ""),
        contact_event(
            T + 90,
            "transfer_fail",
            "alice",
            "wmC1",
            "<FailReason><![CDATA[customer_refused]]></FailReason>",
        ),
        contact_event(T + 100, "add_external_contact", "bob", "wmC4", &state("x")),
        contact_event(
            T + 100,
            "del_external_contact",
            "bob",
            "wmC4",
            "<Source><![CDATA[DELETE_BY_TRANSFER]]></Source>",
        ),
        contact_event(
            T + 110,
            "add_external_contact",
            "alice",
            "wmC5",
            &state("first"),
        ),
        contact_event(T + 120, "del_follow_user", "alice", "wmC5", ""),
        contact_event(
            T + 130,
            "add_external_contact",
            "alice",
            "wmC5",
            &state("readd"),
        ),
        chat_event(T + 15, "create", "wrR1", ""),
        chat_event(
            T + 25,
            "update",
            "wrR1",
            "<UpdateDetail>add_member</UpdateDetail><JoinScene>0</JoinScene><MemChangeCnt>2</MemChangeCnt><MemChangeList><Item>wmC1</Item><Item>wmC2</Item></MemChangeList><LastMemVer>v0</LastMemVer><CurMemVer>v1</CurMemVer>",
        ),
        chat_event(
            T + 35,
            "update",
            "wrR1",
            "<UpdateDetail>del_member</UpdateDetail><QuitScene>0</QuitScene><MemChangeCnt>1</MemChangeCnt><MemChangeList><Item>wmC2</Item></MemChangeList><LastMemVer>v1</LastMemVer><CurMemVer>v2</CurMemVer>",
        ),
        chat_event(
            T + 45,
            "update",
            "wrR1",
            "<UpdateDetail>change_name</UpdateDetail><LastMemVer>v2</LastMemVer><CurMemVer>v2</CurMemVer>",
        ),
        chat_event(T + 50, "create", "wrR2", ""),
        chat_event(T + 140, "dismiss", "wrR2", ""),
        tag_event(T + 5, "create", "TG1", "<TagType>tag</TagType>"),
        tag_event(T + 6, "create", "GR1", "<TagType>tag_group</TagType>"),
        tag_event(T + 150, "delete", "TG1", "<TagType>tag</TagType>"),
        tag_event(T + 160, "shuffle", "GR1", "<StrategyId>1</StrategyId>"),
    ]
}

pub use crate::snapshot::snapshot;

async fn follow(pool: &PgPool, user: &str, ext: &str) -> Value {
    sqlx::query_scalar(
        "SELECT row_to_json(f) FROM external_contact_follows f WHERE corp_id = $1 AND userid = $2 AND external_userid = $3",
    )
    .bind(CORP)
    .bind(user)
    .bind(ext)
    .fetch_one(pool)
    .await
    .expect("follow row")
}

async fn api(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app
        .client
        .get(format!("{}/api/v1{path}", app.address))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("reply");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_day_of_callbacks_shuffled_with_duplicates_gives_the_expected_tables() {
    // About what the projection computes, not the background loop: apply in the test, deterministically.
    let app = spawn_app_with(&[MAIN, SUITE], |s| s.run_projector = false).await;
    let mut listener = PgListener::connect_with(&app.pool).await.expect("listener");
    listener
        .listen("wecom_contact_changed")
        .await
        .expect("listen");

    let day = a_day();
    let mut deliveries: Vec<&String> = day.iter().collect();
    // WeCom retries: a third of the callbacks arrive twice (re-encrypted, new nonce).
    deliveries.extend(day.iter().step_by(3));
    deliveries.shuffle(&mut rand::rng());
    for chunk in deliveries.chunks(8) {
        let signed: Vec<_> = chunk
            .iter()
            .map(|xml| sign_callback(&MAIN, xml, unix_now()))
            .collect();
        let replies =
            futures_util::future::join_all(signed.iter().map(|cb| app.post("main", cb))).await;
        assert!(replies.iter().all(|r| r.status().as_u16() == 200));
    }
    assert_eq!(app.event_count().await, day.len() as i64);
    assert_eq!(apply_all_pending(&app.pool).await, day.len());
    let pool = &app.pool;

    let f = follow(pool, "alice", "wmC1").await;
    assert_eq!(f["status"], "active");
    assert_eq!(f["state"], "ad_campaign");
    assert_eq!(f["welcome_code"], "W-ad_campaign");
    // transfer_fail names the takeover member: recorded as an attempt, the follow untouched.
    assert_eq!(f["transfer_fail_reason"], Value::Null, "no longer written");
    assert_eq!(f["last_change_type"], "edit_external_contact");
    let attempts: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT takeover_userid, reason FROM v_customer_transfers WHERE corp_id = $1 AND external_userid = 'wmC1'",
    )
    .bind(CORP)
    .fetch_all(pool)
    .await
    .expect("view");
    assert_eq!(
        attempts,
        vec![("alice".into(), Some("customer_refused".into()))]
    );
    let f = follow(pool, "bob", "wmC1").await;
    assert_eq!(f["status"], "deleted_by_customer");
    assert_eq!(f["state"], "qr_store");
    assert!(f["deleted_at"].is_string());
    let f = follow(pool, "alice", "wmC2").await;
    assert_eq!(
        f["status"], "active",
        "the confirmation outranks the half-add"
    );
    let f = follow(pool, "alice", "wmC3").await;
    assert_eq!(f["status"], "deleted_by_staff");
    assert_eq!(f["delete_source"], Value::Null);
    let f = follow(pool, "bob", "wmC4").await;
    assert_eq!(
        f["status"], "deleted_by_staff",
        "in the same second a delete outranks an add"
    );
    assert_eq!(f["delete_source"], "DELETE_BY_TRANSFER");
    let f = follow(pool, "alice", "wmC5").await;
    assert_eq!(
        f["status"], "active",
        "a genuinely newer re-add revives the follow"
    );
    assert_eq!(f["state"], "readd");
    assert_eq!(f["deleted_at"], Value::Null);

    let contacts: i64 = sqlx::query_scalar("SELECT count(*) FROM external_contacts")
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(contacts, 5);
    let (first, last): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT first_seen_at, last_event_at FROM external_contacts WHERE external_userid = 'wmC1'",
    )
    .fetch_one(pool)
    .await
    .expect("contact");
    assert_eq!((first.timestamp(), last.timestamp()), (T + 10, T + 90));

    let chats: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT chat_id, status, last_update_detail, member_version FROM external_group_chats ORDER BY chat_id",
    )
    .fetch_all(pool)
    .await
    .expect("chats");
    assert_eq!(
        chats,
        vec![
            (
                "wrR1".into(),
                "active".into(),
                Some("change_name".into()),
                Some("v2".into())
            ),
            ("wrR2".into(), "dismissed".into(), None, None),
        ]
    );
    let members: Vec<(String, String, Option<i32>, Option<i32>)> = sqlx::query_as(
        "SELECT member_id, status, join_scene, quit_scene FROM external_group_chat_members ORDER BY member_id",
    )
    .fetch_all(pool)
    .await
    .expect("members");
    assert_eq!(
        members,
        vec![
            ("wmC1".into(), "joined".into(), Some(0), None),
            ("wmC2".into(), "left".into(), None, Some(0)),
        ]
    );
    let tags: Vec<(String, Option<String>, bool)> =
        sqlx::query_as("SELECT id, type, deleted FROM external_corp_tags ORDER BY id")
            .fetch_all(pool)
            .await
            .expect("tags");
    assert_eq!(
        tags,
        vec![
            ("GR1".into(), Some("tag_group".into()), false),
            ("TG1".into(), Some("tag".into()), true),
        ]
    );

    // The documented views.
    let active: Vec<String> = sqlx::query_scalar(
        "SELECT external_userid FROM v_staff_active_customers WHERE corp_id = $1 AND userid = 'alice' ORDER BY 1",
    )
    .bind(CORP)
    .fetch_all(pool)
    .await
    .expect("view");
    assert_eq!(active, vec!["wmC1", "wmC2", "wmC5"]);
    let followers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM v_customer_followers WHERE corp_id = $1 AND external_userid = 'wmC1'",
    )
    .bind(CORP)
    .fetch_one(pool)
    .await
    .expect("view");
    assert_eq!(followers, 2);
    let timeline: Vec<String> = sqlx::query_scalar(
        "SELECT change_type FROM v_customer_timeline WHERE corp_id = $1 AND external_userid = 'wmC1' ORDER BY event_time",
    )
    .bind(CORP)
    .fetch_all(pool)
    .await
    .expect("view");
    assert_eq!(
        timeline,
        vec![
            "add_external_contact",
            "add_external_contact",
            "edit_external_contact",
            "del_follow_user",
            "transfer_fail"
        ]
    );

    // One notification per applied contact, chat or tag change (duplicates apply nothing), each with its kind.
    let count = |what: &str| day.iter().filter(|x| x.contains(what)).count();
    let contact_events = count("change_external_contact");
    let changes = contact_events + count("change_external_chat") + count("change_external_tag");
    let mut seen = Vec::new();
    while seen.len() < changes {
        let n = tokio::time::timeout(Duration::from_secs(5), listener.recv())
            .await
            .expect("a notification in time")
            .expect("notification");
        seen.push(serde_json::from_str::<Value>(n.payload()).expect("JSON payload"));
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), listener.recv())
            .await
            .is_err(),
        "no more notifications than changes"
    );
    assert_eq!(
        seen.iter()
            .filter(|p| p["kind"] == "contact" && p["source"] == "event")
            .count(),
        contact_events
    );
    assert!(seen.iter().any(|p| p["corp_id"] == CORP
        && p["external_userid"] == "wmC4"
        && p["userid"] == "bob"
        && p["change"] == "del_external_contact"));

    // The HTTP API answers the same.
    let (status, page) = api(
        &app,
        &format!("/corps/{CORP}/staff/alice/customers?limit=2"),
    )
    .await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|f| f["external_userid"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, vec!["wmC1", "wmC2"]);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, page) = api(
        &app,
        &format!("/corps/{CORP}/staff/alice/customers?limit=2&cursor={cursor}"),
    )
    .await;
    let ids: Vec<&str> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|f| f["external_userid"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, vec!["wmC5"]);
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, page) = api(
        &app,
        &format!("/corps/{CORP}/staff/alice/customers?status=deleted_by_staff&limit=1000"),
    )
    .await;
    assert_eq!(
        page["data"].as_array().map(Vec::len),
        Some(1),
        "limit capped, filter applied"
    );

    let (status, c) = api(&app, &format!("/corps/{CORP}/customers/wmC1")).await;
    assert_eq!(status, 200);
    assert_eq!(c["contact"]["external_userid"], "wmC1");
    assert_eq!(c["follows"].as_array().map(Vec::len), Some(2));
    let (status, _) = api(&app, &format!("/corps/{CORP}/customers/wmNOBODY")).await;
    assert_eq!(status, 404);
    let (_, t) = api(
        &app,
        &format!("/corps/{CORP}/customers/wmC1/timeline?limit=3"),
    )
    .await;
    assert_eq!(t["data"].as_array().map(Vec::len), Some(3));
    let cursor = t["next_cursor"].as_str().expect("more").to_owned();
    let (_, t) = api(
        &app,
        &format!("/corps/{CORP}/customers/wmC1/timeline?cursor={cursor}"),
    )
    .await;
    let rest: Vec<&str> = t["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["change_type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(rest, vec!["del_follow_user", "transfer_fail"]);
    let (status, _) = api(
        &app,
        &format!("/corps/{CORP}/staff/alice/customers?cursor=!!"),
    )
    .await;
    assert_eq!(status, 400);

    // Rebuilding from the event log gives exactly the incrementally maintained tables.
    let before = snapshot(pool).await;
    let applied = wecom_callback::store::rebuild::rebuild(pool)
        .await
        .expect("rebuild");
    assert_eq!(applied, day.len() as u64);
    assert_eq!(snapshot(pool).await, before);
}

#[tokio::test]
async fn the_read_api_needs_the_bearer_token() {
    let app = spawn_app().await;
    let url = format!("{}/api/v1/corps/{CORP}/staff/alice/customers", app.address);
    for auth in [
        None,
        Some("Bearer wrong-token-wrong-token"),
        Some("Basic abc"),
        Some(API_TOKEN),
    ] {
        let mut req = app.client.get(&url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.expect("reply");
        assert_eq!(r.status().as_u16(), 401, "{auth:?}");
        assert_eq!(
            r.json::<Value>().await.expect("json"),
            serde_json::json!({"error": "unauthorized"})
        );
    }
    let r = app
        .client
        .get(&url)
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("reply");
    assert_eq!(r.status().as_u16(), 200);
    let r = app.get("/api/v1/openapi.yaml").await;
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.expect("body").starts_with("openapi: 3"));
}

#[tokio::test]
async fn the_api_is_off_without_a_token() {
    let app = crate::helpers::spawn_app_with(&[MAIN], |s| s.api_token = None).await;
    let r = app
        .client
        .get(format!(
            "{}/api/v1/corps/{CORP}/staff/alice/customers",
            app.address
        ))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("reply");
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test]
async fn events_stored_before_a_crash_are_applied_at_start_up() {
    // The receiver committed these, then the process died before applying them.
    let app = crate::helpers::spawn_app_with(&[MAIN], |s| s.run_projector = false).await;
    for xml in a_day().iter().take(5) {
        let r = app
            .post("main", &sign_callback(&MAIN, xml, unix_now()))
            .await;
        assert_eq!(r.status().as_u16(), 200);
    }
    // A 200 means committed (the receiver answers after the commit), so no wait is needed here.
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_events_pending")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(pending, 5);
    // A new process starts its projector on the same database.
    let projector = tokio::spawn(wecom_callback::sync::projector::run(
        app.pool.clone(),
        std::sync::Arc::new(tokio::sync::Notify::new()),
        Default::default(),
        Default::default(),
        Default::default(),
    ));
    wait_applied(&app.pool).await;
    projector.abort();
    let follows: i64 = sqlx::query_scalar("SELECT count(*) FROM external_contact_follows")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(follows, 3, "alice-wmC1, bob-wmC1, alice-wmC2");
}
