//! Property: random event histories over a few contacts, chats and tags, applied in batches of any size, in
//! any arrival order and with duplicates, give the same tables as applying them one at a time in time order;
//! and so does rebuilding them, in batches of any size.

use std::collections::HashSet;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use wecom_callback::store::{self, NewEvent, projections};

use crate::helpers::{MAIN, spawn_app_with};
use crate::sync::{chat_event, contact_event, snapshot, tag_event};

const CHANGES: [&str; 14] = [
    "add_external_contact",
    "add_half_external_contact",
    "edit_external_contact",
    "del_external_contact",
    "del_follow_user",
    "transfer_fail",
    "chat_create",
    "chat_add_member",
    "chat_del_member",
    "chat_change_name",
    "chat_dismiss",
    "tag_create",
    "tag_delete",
    "tag_shuffle",
];

/// (seconds after the start, change, staff, customer, variant)
type Step = (i64, usize, usize, usize, usize);

fn xml_of(step: &Step) -> String {
    let (t, change, staff, customer, variant) = *step;
    let t = 1_700_000_000 + t;
    let chat = format!("wr{staff}");
    let members = format!(
        "<MemChangeList><Item>wm{customer}</Item><Item>staff{variant}</Item></MemChangeList>\
         <LastMemVer>v{variant}</LastMemVer><CurMemVer>v{}</CurMemVer>",
        variant + 1
    );
    match CHANGES[change] {
        "chat_create" => return chat_event(t, "create", &chat, ""),
        "chat_add_member" => {
            return chat_event(
                t,
                "update",
                &chat,
                &format!(
                    "<UpdateDetail>add_member</UpdateDetail><JoinScene>{variant}</JoinScene>{members}"
                ),
            );
        }
        "chat_del_member" => {
            return chat_event(
                t,
                "update",
                &chat,
                &format!(
                    "<UpdateDetail>del_member</UpdateDetail><QuitScene>{variant}</QuitScene>{members}"
                ),
            );
        }
        "chat_change_name" => {
            return chat_event(
                t,
                "update",
                &chat,
                "<UpdateDetail>change_name</UpdateDetail>",
            );
        }
        "chat_dismiss" => return chat_event(t, "dismiss", &chat, ""),
        "tag_create" => {
            return tag_event(
                t,
                "create",
                &format!("et{customer}"),
                &format!(
                    "<TagType>{}</TagType><StrategyId>{variant}</StrategyId>",
                    ["tag", "tag_group", "tag"][variant]
                ),
            );
        }
        "tag_delete" => {
            return tag_event(
                t,
                "delete",
                &format!("et{customer}"),
                "<TagType>tag</TagType>",
            );
        }
        "tag_shuffle" => return tag_event(t, "shuffle", &format!("et{customer}"), ""),
        _ => {}
    }
    let extra = match CHANGES[change] {
        "add_external_contact" | "add_half_external_contact" => {
            format!("<State>s{variant}</State><WelcomeCode>w{variant}</WelcomeCode>")
        }
        "del_external_contact" if variant == 1 => "<Source>DELETE_BY_TRANSFER</Source>".to_owned(),
        "transfer_fail" => format!("<FailReason>r{variant}</FailReason>"),
        _ => String::new(),
    };
    contact_event(
        t,
        CHANGES[change],
        &format!("staff{staff}"),
        &format!("wm{customer}"),
        &extra,
    )
}

fn new_event(xml: &str, n: usize) -> NewEvent {
    let m = wecom_callback::wecom::message::parse_message(xml.as_bytes()).expect("valid");
    NewEvent {
        app: "main".into(),
        dedupe_key: hex::encode(Sha256::digest(xml.as_bytes())),
        receive_id: MAIN.receive_id.into(),
        corp_id: m.corp_id().map(str::to_owned),
        event_time: m
            .event_time()
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0)),
        msg_type: m.msg_type().map(str::to_owned),
        event: m.event().map(str::to_owned),
        info_type: None,
        change_type: m.change_type().map(str::to_owned),
        message: xml.to_owned(),
        fields: serde_json::Value::Object(m.fields().clone()),
        req_timestamp: "0".into(),
        req_nonce: format!("n{n}"),
        msg_signature: "0".repeat(40),
        received_at: None,
    }
}

async fn reset(pool: &PgPool) {
    sqlx::query(
        "TRUNCATE wecom_events, external_contact_history, external_group_chat_members, external_group_chats, \
         external_corp_tags, external_contact_follows, external_contacts RESTART IDENTITY CASCADE",
    )
    .execute(pool)
    .await
    .expect("truncate");
}

/// Stores events one by one in the given order. `batches[i]` says what happens after the i-th: 0 = nothing
/// yet (the projector is behind), n = apply with batch size n (the projector racing the receiver). Whatever is
/// left is applied at the end in batches of 3.
async fn replay(pool: &PgPool, xmls: &[&String], batches: &[i64]) -> Vec<String> {
    reset(pool).await;
    for (n, xml) in xmls.iter().enumerate() {
        let ev = new_event(xml, n);
        store::insert_events(pool, &[&ev]).await.expect("insert");
        match batches.get(n).copied().unwrap_or(0) {
            0 => {}
            size => {
                projections::apply_pending(pool, size).await.expect("apply");
            }
        }
    }
    while projections::apply_pending(pool, 3).await.expect("apply") > 0 {}
    snapshot(pool).await
}

#[test]
fn any_order_with_duplicates_equals_time_order() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let app = rt.block_on(spawn_app_with(&[MAIN], |s| s.run_projector = false));
    let pool = app.pool.clone();

    let step = (
        0i64..6,
        0usize..CHANGES.len(),
        0usize..2,
        0usize..3,
        0usize..3,
    );
    let strategy = (
        prop::collection::vec(step, 1..32),
        any::<u64>(),
        prop::collection::vec(prop::sample::select(vec![0i64, 0, 1, 2, 5, 500]), 48),
        // The rebuild's batch size: it merges ten batches' worth of rows before writing them.
        prop::sample::select(vec![1i64, 2, 3, 7, 500]),
    );
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(steps, seed, batches, rebuild_batch)| {
            let xmls: Vec<String> = steps.iter().map(xml_of).collect();
            // Time order (ties in generation order).
            let mut by_time: Vec<(i64, &String)> =
                steps.iter().map(|s| s.0).zip(xmls.iter()).collect();
            by_time.sort_by_key(|(t, _)| *t);
            let in_time_order: Vec<&String> = by_time.into_iter().map(|(_, x)| x).collect();
            // Any order, with every third event delivered again.
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut shuffled: Vec<&String> = xmls.iter().collect();
            shuffled.extend(xmls.iter().step_by(3));
            shuffled.shuffle(&mut rng);

            // One at a time, in time order.
            let expected = rt.block_on(replay(&pool, &in_time_order, &[1; 64]));
            let got = rt.block_on(replay(&pool, &shuffled, &batches));
            // Only the rows that differ, so a failure is readable.
            let missing: Vec<&String> = expected.iter().filter(|r| !got.contains(r)).collect();
            let extra: Vec<&String> = got.iter().filter(|r| !expected.contains(r)).collect();
            prop_assert!(
                missing.is_empty() && extra.is_empty() && got.len() == expected.len(),
                "rows expected but missing: {missing:#?}\nrows present but not expected: {extra:#?}"
            );
            // The rebuild of that shuffled log, with its own batches (planned ahead, merged across
            // batches), gives the same tables again.
            let rebuilt = rt.block_on(async {
                store::rebuild::rebuild_with(&pool, rebuild_batch, |_| {})
                    .await
                    .expect("rebuild");
                snapshot(&pool).await
            });
            let missing: Vec<&String> = expected.iter().filter(|r| !rebuilt.contains(r)).collect();
            let extra: Vec<&String> = rebuilt.iter().filter(|r| !expected.contains(r)).collect();
            prop_assert!(
                missing.is_empty() && extra.is_empty() && rebuilt.len() == expected.len(),
                "after a rebuild in batches of {rebuild_batch}: rows expected but missing: {missing:#?}\n\
                 rows present but not expected: {extra:#?}"
            );
            Ok(())
        })
        .expect("same tables whatever the order");
    drop(app);
}

/// Three replicas (three pools) applying one backlog together, with different batch sizes: no deadlock
/// (none reported by any applier, none counted by PostgreSQL for the database), every event applied once (one
/// notification per event), and the tables equal those of one applier alone. 20,000 events; set
/// `WECOM_REPLICA_APPLY_EVENTS` (e.g. 100000) for more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_appliers_on_one_backlog_never_deadlock_and_equal_one() {
    let n: usize = std::env::var("WECOM_REPLICA_APPLY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let app = spawn_app_with(&[MAIN], |s| s.run_projector = false).await;
    let pool = app.pool.clone();
    // A realistic mix over many rows that the three appliers' batches share: 40 staff (and chats), 600
    // customers (and tags), an hour of event times, so batches overlap in rows and lock many of the same ones.
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let events: Vec<NewEvent> = (0..n)
        .map(|i| {
            let step: Step = (
                rand::Rng::random_range(&mut rng, 0..3600),
                rand::Rng::random_range(&mut rng, 0..CHANGES.len()),
                rand::Rng::random_range(&mut rng, 0..40),
                rand::Rng::random_range(&mut rng, 0..600),
                rand::Rng::random_range(&mut rng, 0..3),
            );
            new_event(&xml_of(&step), i)
        })
        .collect();
    for chunk in events.chunks(1000) {
        let refs: Vec<&NewEvent> = chunk.iter().collect();
        store::insert_events(&pool, &refs).await.expect("insert");
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_events")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert!(stored as usize > n * 9 / 10, "the backlog was stored");

    let (alone, alone_notified) = apply_with_appliers(&pool, &[500]).await;
    assert_eq!(
        alone_notified.len(),
        alone_notified.iter().collect::<HashSet<_>>().len(),
        "one applier notifies each event once"
    );

    let deadlocks_before = deadlocks(&pool).await;
    let (together, notified) = apply_with_appliers(&pool, &[500, 1000, 4000]).await;
    let deadlocks_after = deadlocks(&pool).await;
    assert_eq!(
        deadlocks_after, deadlocks_before,
        "PostgreSQL counted deadlocks in the test database"
    );
    let unique: HashSet<i64> = notified.iter().copied().collect();
    assert_eq!(
        unique.len(),
        notified.len(),
        "an event was applied (and notified) more than once"
    );
    assert_eq!(
        unique,
        alone_notified.into_iter().collect::<HashSet<_>>(),
        "the three appliers notified other events than one applier"
    );
    assert!(
        unique.len() as i64 > stored / 2,
        "most events notify (the check above is not vacuous)"
    );
    assert!(
        together == alone,
        "three appliers gave other tables than one ({} rows vs {})",
        together.len(),
        alone.len()
    );
    drop(app);
}

/// Resets the synced tables, marks every event unapplied, and applies the backlog with one applier per batch
/// size, each with a pool of its own (a replica), concurrently. Returns the tables and the event ids of the
/// notifications, in arrival order.
async fn apply_with_appliers(pool: &PgPool, batch_sizes: &[i64]) -> (Vec<String>, Vec<i64>) {
    sqlx::query(
        "TRUNCATE external_contact_history, external_group_chat_members, external_group_chats, \
         external_corp_tags, external_contact_follows, external_contacts, external_contact_transfers",
    )
    .execute(pool)
    .await
    .expect("truncate");
    sqlx::query(
        "INSERT INTO wecom_events_pending SELECT id FROM wecom_events ON CONFLICT DO NOTHING",
    )
    .execute(pool)
    .await
    .expect("mark every event unapplied");
    let mut listener = sqlx::postgres::PgListener::connect_with(pool)
        .await
        .expect("listener");
    listener.listen(projections::CHANNEL).await.expect("listen");
    let opts = pool.connect_options().as_ref().clone();
    let mut appliers = Vec::new();
    for &size in batch_sizes {
        let replica = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(opts.clone())
            .await
            .expect("replica pool");
        appliers.push(tokio::spawn(async move {
            let mut applied = 0usize;
            loop {
                match projections::apply_pending(&replica, size).await {
                    Ok(0) => return Ok(applied),
                    Ok(k) => applied += k,
                    Err(e) => return Err(e.to_string()),
                }
            }
        }));
    }
    let mut applied = 0;
    for a in appliers {
        applied += a
            .await
            .expect("applier task")
            .unwrap_or_else(|e| panic!("an applier failed (a deadlock?): {e}"));
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_events")
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(applied as i64, stored, "every event taken exactly once");
    assert_eq!(
        projections::pending_count(pool).await.expect("pending"),
        0,
        "nothing left unapplied"
    );
    // Notifications are delivered on commit, and every applier has committed; drain what arrived.
    let mut notified = Vec::new();
    while let Ok(Ok(Some(n))) =
        tokio::time::timeout(std::time::Duration::from_secs(2), listener.try_recv()).await
    {
        let v: serde_json::Value = serde_json::from_str(n.payload()).expect("JSON payload");
        if let Some(id) = v["event_id"].as_i64() {
            notified.push(id);
        }
    }
    (snapshot(pool).await, notified)
}

/// Deadlocks PostgreSQL counted for the current database. Backends report their counters within about a
/// second of going idle, so this waits that long first.
async fn deadlocks(pool: &PgPool) -> i64 {
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let mut conn = pool.acquire().await.expect("connection");
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await
        .expect("clear stats snapshot");
    sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(&mut *conn)
        .await
        .expect("pg_stat_database")
}
