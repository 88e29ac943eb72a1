//! Property: random event histories over a few contacts, chats and tags, applied in batches of any size, in
//! any arrival order and with duplicates, give the same tables as applying them one at a time in time order.

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
    );
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(steps, seed, batches)| {
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
            Ok(())
        })
        .expect("same tables whatever the order");
    drop(app);
}
