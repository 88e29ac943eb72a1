//! The change feed (issue 15): every committed change once, in cursor order, with no gap for a polling
//! reader even under concurrent appliers and a slow transaction; NOTIFY carries the entry's id; a cursor
//! older than the retention gets 410.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{API_TOKEN, MAIN, TestApp, poll, sign_callback, spawn_app_with};
use crate::sync::{contact_event, tag_event};

const T: i64 = 1_700_000_000;

/// Reads one page after `after`; returns the entries and the next cursor.
pub async fn page(app: &TestApp, after: i64, query: &str) -> (Vec<Value>, i64) {
    let r = app
        .client
        .get(format!(
            "{}/api/v1/changes?after={after}&limit=50{query}",
            app.address
        ))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("JSON");
    let entries = body["changes"].as_array().expect("changes").clone();
    (entries, body["next_cursor"].as_i64().expect("next_cursor"))
}

pub async fn post_events(app: &TestApp, events: &[String]) {
    for (i, e) in events.iter().enumerate() {
        let cb = sign_callback(&MAIN, e, crate::helpers::unix_now() + i as i64 % 3);
        assert_eq!(app.post("main", &cb).await.status(), 200);
    }
}

/// Two concurrent appliers and a transaction that staged an entry and stays open while later entries are
/// committed: a reader polling with its cursor never gets a later entry before the earlier one and then
/// the earlier one below its cursor; it gets every entry exactly once, in increasing positions.
#[tokio::test]
async fn a_polling_reader_sees_no_gap_under_concurrent_appliers_and_a_slow_transaction() {
    let app = spawn_app_with(&[MAIN], |s| {
        s.run_projector = false;
        s.api.worker_concurrency = 0;
    })
    .await;
    // The slow transaction: it stages an entry (taking a lower id than everything after it) and commits
    // only after the appliers have committed many later entries.
    let mut slow = app.pool.begin().await.expect("begin");
    let slow_id: i64 = sqlx::query_scalar(
        "WITH e AS (INSERT INTO wecom_change_entries (corp_id, kind, subject, change, source, data) \
           VALUES ($1, 'tag', 'slow-tag', 'create', 'event', '{\"kind\":\"tag\"}') RETURNING id), \
         q AS (INSERT INTO wecom_change_unsequenced (id) SELECT id FROM e) \
         SELECT id FROM e",
    )
    .bind(MAIN.receive_id)
    .fetch_one(&mut *slow)
    .await
    .expect("stage");

    let events: Vec<String> = (0..40)
        .map(|i| {
            contact_event(
                T + i,
                "add_external_contact",
                &format!("u{}", i % 4),
                &format!("wm{i}"),
                "",
            )
        })
        .collect();
    post_events(&app, &events).await;
    // Two appliers at once, in small batches, so their transactions interleave.
    let appliers: Vec<_> = (0..2)
        .map(|_| {
            let pool = app.pool.clone();
            tokio::spawn(async move {
                loop {
                    let n = wecom_callback::store::projections::apply_pending(&pool, 3)
                        .await
                        .expect("apply");
                    if n == 0 {
                        break;
                    }
                }
            })
        })
        .collect();

    let mut cursor = 0;
    let mut seen: Vec<(i64, i64)> = Vec::new();
    let read = |cursor: i64, seen: &mut Vec<(i64, i64)>, entries: Vec<Value>| {
        for e in entries {
            let (pos, id) = (
                e["position"].as_i64().expect("pos"),
                e["id"].as_i64().expect("id"),
            );
            assert!(
                pos > cursor,
                "entry {id} at {pos} came at or below the cursor {cursor}"
            );
            seen.push((pos, id));
        }
    };
    for a in appliers {
        a.await.expect("applier");
    }
    // Poll until the appliers' 40 entries are through, the slow transaction still open.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 40 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} entries",
            seen.len()
        );
        let (entries, next) = page(&app, cursor, "").await;
        read(cursor, &mut seen, entries);
        cursor = next;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.len(), 40);
    assert!(
        seen.iter().all(|(_, id)| *id > slow_id),
        "the appliers' ids are all above the slow one's"
    );
    slow.commit().await.expect("commit the slow transaction");
    while !seen.iter().any(|(_, id)| *id == slow_id) {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow entry never came"
        );
        let (entries, next) = page(&app, cursor, "").await;
        read(cursor, &mut seen, entries);
        cursor = next;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let positions: Vec<i64> = seen.iter().map(|(p, _)| *p).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let ids: HashSet<i64> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids.len(), 41, "every entry exactly once");
    let last = seen.last().expect("last");
    assert_eq!(
        last.1, slow_id,
        "the late commit comes after the cursor, not below it"
    );
}

/// Every synced-table change is an entry with its cause and the row after it; NOTIFY carries its id;
/// filters work; a rebuild adds nothing; a cursor older than the retention gets 410 and says what to do.
#[tokio::test]
async fn entries_carry_cause_and_state_notify_names_them_and_expired_cursors_get_410() {
    let app = spawn_app_with(&[MAIN], |s| s.api.worker_concurrency = 0).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool)
        .await
        .expect("listener");
    listener
        .listen("wecom_contact_changed")
        .await
        .expect("listen");
    // The tag only once the contact is in the feed: the two concern different keys, so concurrent appliers
    // (sharded by key) could otherwise commit them in either order, and the checks below name positions.
    post_events(
        &app,
        &[contact_event(T, "add_external_contact", "alice", "wmA", "")],
    )
    .await;
    poll(
        "the contact's entry",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            let (e, _) = page(&app, 0, "").await;
            if e.len() == 1 {
                Ok(())
            } else {
                Err(format!("{e:?}"))
            }
        },
    )
    .await;
    post_events(
        &app,
        &[tag_event(
            T + 1,
            "create",
            "tagX",
            "<TagType><![CDATA[tag]]></TagType>",
        )],
    )
    .await;
    let mut notified: BTreeMap<String, i64> = BTreeMap::new();
    while notified.len() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("a notification in time")
            .expect("notification");
        let p: Value = serde_json::from_str(n.payload()).expect("JSON");
        notified.insert(
            p["kind"].as_str().expect("kind").to_owned(),
            p["change_id"].as_i64().expect("change_id in the payload"),
        );
    }
    let entries = poll(
        "two entries",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let (e, _) = page(&app, 0, "").await;
            if e.len() == 2 {
                Ok(e)
            } else {
                Err(format!("{e:?}"))
            }
        },
    )
    .await;
    let contact = &entries[0];
    assert_eq!(contact["kind"], "contact");
    assert_eq!(contact["subject"], "wmA");
    assert_eq!(contact["change"], "add_external_contact");
    assert_eq!(contact["source"], "event");
    assert!(contact["event_id"].as_i64().is_some());
    assert_eq!(contact["state"]["status"], "active");
    assert_eq!(contact["state"]["userid"], "alice");
    assert_eq!(contact["id"].as_i64(), Some(notified["contact"]));
    assert_eq!(entries[1]["kind"], "tag");
    assert_eq!(entries[1]["id"].as_i64(), Some(notified["tag"]));
    assert_eq!(entries[1]["state"]["deleted"], false);
    // Filters; the next cursor passes over what they skipped.
    let (tags, next) = page(&app, 0, "&kind=tag").await;
    assert_eq!(tags.len(), 1);
    assert_eq!(next, entries[1]["position"].as_i64().expect("pos"));
    let (none, next) = page(&app, 0, "&corp=other").await;
    assert!(none.is_empty());
    assert_eq!(next, entries[1]["position"].as_i64().expect("pos"));
    let bad = app
        .client
        .get(format!("{}/api/v1/changes?kind=nope", app.address))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(bad.status(), 400);
    let unauth = app
        .client
        .get(format!("{}/api/v1/changes", app.address))
        .send()
        .await
        .expect("request");
    assert_eq!(unauth.status(), 401);
    // A rebuild recomputes the tables; the feed already has those changes.
    wecom_callback::store::rebuild::rebuild(&app.pool)
        .await
        .expect("rebuild");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // It notifies once, for the whole rebuild, not once per recomputed change.
    let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("the rebuild's notification in time")
        .expect("notification");
    let p: Value = serde_json::from_str(n.payload()).expect("JSON");
    assert_eq!(
        (p["kind"].clone(), p["events"].clone()),
        (json!("rebuild"), json!(2)),
        "{p}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), listener.recv())
            .await
            .is_err(),
        "nothing else was notified"
    );
    // The history index dropped for the rebuild is back, as the migration defined it.
    let index: Option<String> = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'external_contact_history_subject'",
    )
    .fetch_optional(&app.pool)
    .await
    .expect("index");
    assert!(
        index.is_some_and(|d| d.contains("(corp_id, kind, subject_id, event_time)")),
        "the index is rebuilt"
    );
    let (after_rebuild, _) = page(&app, 0, "").await;
    assert_eq!(after_rebuild.len(), 2, "a rebuild adds no entries");
    // Retention: entries older than it are pruned; a cursor below them gets 410.
    sqlx::query(
        "UPDATE wecom_change_positions p SET sequenced_at = now() - interval '31 days' \
         FROM wecom_change_entries e WHERE e.id = p.id AND e.kind = 'contact'",
    )
    .execute(&app.pool)
    .await
    .expect("age");
    let pruned = wecom_callback::store::feed::prune(&app.pool, Duration::from_secs(30 * 86_400))
        .await
        .expect("prune");
    assert_eq!(pruned, 1);
    let gone = app
        .client
        .get(format!("{}/api/v1/changes?after=0", app.address))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("request");
    assert_eq!(gone.status(), 410);
    let body: Value = gone.json().await.expect("JSON");
    assert_eq!(body["error"], "cursor_expired");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("resync")
    );
    assert_eq!(body["head"].as_i64(), entries[1]["position"].as_i64());
    let (rest, _) = page(&app, contact["position"].as_i64().expect("pos"), "").await;
    assert_eq!(
        rest.len(),
        1,
        "a cursor at the pruned watermark still reads"
    );
    // A long poll answers as soon as an entry arrives.
    let head = entries[1]["position"].as_i64().expect("pos");
    let waiting = {
        let (client, address) = (app.client.clone(), app.address.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let r: Value = client
                .get(format!("{address}/api/v1/changes?after={head}&wait=8"))
                .bearer_auth(API_TOKEN)
                .send()
                .await
                .expect("request")
                .json()
                .await
                .expect("JSON");
            (r, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    post_events(
        &app,
        &[contact_event(
            T + 5,
            "edit_external_contact",
            "alice",
            "wmA",
            "",
        )],
    )
    .await;
    let (r, took) = waiting.await.expect("long poll");
    assert_eq!(r["changes"].as_array().expect("changes").len(), 1);
    assert!(
        took < Duration::from_secs(7),
        "answered when the entry came: {took:?}"
    );
}

/// Directory writes are in the feed (and NOTIFYed) with the row after them.
#[tokio::test]
async fn staff_and_department_changes_are_in_the_feed() {
    let app = spawn_app_with(&[MAIN], |s| s.api.worker_concurrency = 0).await;
    let corp = MAIN.receive_id;
    let event = |t: i64, change: &str, body: &str| {
        format!(
            "<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
             <CreateTime>{t}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_contact]]></Event>\
             <ChangeType><![CDATA[{change}]]></ChangeType>{body}</xml>"
        )
    };
    post_events(
        &app,
        &[
            event(T, "create_party", "<Id>7</Id><Name><![CDATA[Sales]]></Name><ParentId>1</ParentId>"),
            event(
                T + 1,
                "create_user",
                "<UserID><![CDATA[zhang]]></UserID><Name><![CDATA[Zhang]]></Name><Department><![CDATA[7]]></Department>",
            ),
            event(T + 2, "delete_user", "<UserID><![CDATA[zhang]]></UserID>"),
        ],
    )
    .await;
    let entries = poll(
        "three directory entries",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let (e, _) = page(&app, 0, "").await;
            if e.len() >= 3 {
                Ok(e)
            } else {
                Err(format!("{e:?}"))
            }
        },
    )
    .await;
    let find = |kind: &str, change: &str| {
        entries
            .iter()
            .find(|e| e["kind"] == kind && e["change"] == change)
            .unwrap_or_else(|| panic!("no {kind} {change} in {entries:#?}"))
    };
    assert_eq!(find("department", "update")["subject"], "7");
    assert_eq!(find("department", "update")["state"]["name"], "Sales");
    assert_eq!(find("staff", "update")["subject"], "zhang");
    assert_eq!(find("staff", "left")["state"]["status"], "left");
    let (staff, _) = page(&app, 0, "&kind=staff").await;
    assert_eq!(staff.len(), 2);
}

/// `doctor` fails when staged changes wait for a sequencer that no replica runs.
#[tokio::test]
async fn doctor_flags_changes_no_sequencer_moves() {
    let app = spawn_app_with(&[MAIN], |s| s.feed.run_sequencer = false).await;
    sqlx::query(
        "WITH e AS (INSERT INTO wecom_change_entries (corp_id, kind, subject, change, source, data, staged_at) \
           VALUES ($1, 'tag', 't', 'create', 'event', '{}', now() - interval '2 minutes') RETURNING id) \
         INSERT INTO wecom_change_unsequenced (id) SELECT id FROM e",
    )
    .bind(MAIN.receive_id)
    .execute(&app.pool)
    .await
    .expect("stage");
    let url = app.database_url();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_wecom-callback"))
            .arg("doctor")
            .env_remove("WECOM_CONFIG")
            .env("DATABASE_URL", &url)
            .env("WECOM_TOKEN", MAIN.token)
            .env("WECOM_ENCODING_AES_KEY", MAIN.encoding_aes_key)
            .env("WECOM_CORP_ID", MAIN.receive_id)
            .env("WECOM_APP_NAME", "main")
            .env("RUST_LOG", "warn")
            .output()
            .expect("runs")
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("change feed"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.starts_with("FAIL") && line.contains("run_sequencer"),
        "{line}"
    );
}
