//! The operator's tools against a real server and database: gen-key, send-test, events, replay.

use std::process::Command;

use crate::helpers::{MAIN, database_url_for, spawn_app_with};

const BIN: &str = env!("CARGO_BIN_EXE_wecom-callback");

fn tool(args: &[&str], db_url: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("WECOM_CONFIG")
        .env("WECOM_TOKEN", MAIN.token)
        .env("WECOM_ENCODING_AES_KEY", MAIN.encoding_aes_key)
        .env("WECOM_CORP_ID", MAIN.receive_id)
        .env("WECOM_APP_NAME", "main")
        .env("RUST_LOG", "warn");
    if let Some(u) = db_url {
        cmd.env("DATABASE_URL", u);
    }
    let out = cmd.output().expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn gen_key_prints_a_valid_token_and_key() {
    let (ok, out, _) = tool(&["gen-key"], None);
    assert!(ok);
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("WECOM_TOKEN="))
        .expect("token");
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("WECOM_ENCODING_AES_KEY="))
        .expect("key");
    assert_eq!(token.len(), 32);
    assert!(token.chars().all(|c| c.is_ascii_alphanumeric()));
    wecom_callback::wecom::crypto::AesKey::from_encoding_aes_key(key)
        .expect("a key the service accepts");
    let (_, again, _) = tool(&["gen-key"], None);
    assert_ne!(out, again, "fresh every time");
    // WeCom's console refuses '+' and '/' in an EncodingAESKey; three random keys in four would have one.
    for _ in 0..8 {
        let (_, out, _) = tool(&["gen-key"], None);
        let key = out
            .lines()
            .find_map(|l| l.strip_prefix("WECOM_ENCODING_AES_KEY="))
            .expect("key");
        assert_eq!(key.len(), 43);
        assert!(
            key.bytes().all(|b| b.is_ascii_alphanumeric()),
            "the console would refuse {key}"
        );
    }
}

#[tokio::test]
async fn send_test_passes_against_a_correct_receiver_and_fails_against_a_wrong_one() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let url = format!("{}/callback/main", app.address);
    let out = tokio::task::spawn_blocking(move || {
        tool(
            &[
                "send-test",
                "--url",
                &url,
                "--event",
                "add_external_contact",
                "--event",
                "change_external_tag",
            ],
            None,
        )
    })
    .await
    .expect("join");
    assert!(out.0, "{}{}", out.1, out.2);
    assert!(out.1.contains("All 3 requests passed"), "{}", out.1);
    assert_eq!(app.event_count().await, 2);

    // Signed with another Token: the tool says it failed and why it could not pass.
    let url = format!("{}/callback/main", app.address);
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(BIN);
        cmd.args(["send-test", "--url", &url])
            .env("WECOM_TOKEN", "SomeOtherToken")
            .env("WECOM_ENCODING_AES_KEY", MAIN.encoding_aes_key)
            .env("WECOM_CORP_ID", MAIN.receive_id);
        cmd.output().expect("runs")
    })
    .await
    .expect("join");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL"));
}

#[tokio::test]
async fn events_lists_and_replay_reapplies() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let url = format!("{}/callback/main", app.address);
    let db_name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&app.pool)
        .await
        .expect("db");
    let db_url = database_url_for(&db_name);
    let (u, d) = (url.clone(), db_url.clone());
    let sent = tokio::task::spawn_blocking(move || {
        tool(
            &[
                "send-test",
                "--url",
                &u,
                "--no-verify",
                "--event",
                "add_external_contact",
                "--event",
                "del_follow_user",
                "--event",
                "change_contact",
            ],
            Some(&d),
        )
    })
    .await
    .expect("join");
    assert!(sent.0, "{}", sent.1);
    crate::helpers::wait_applied(&app.pool).await;
    // send-test's events are stored (the point of the test) but leave the synced tables alone: it is safe to
    // run against production.
    let (follows, contacts, history, staff): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM external_contact_follows), (SELECT count(*) FROM external_contacts), \
                (SELECT count(*) FROM external_contact_history), (SELECT count(*) FROM staff)",
    )
    .fetch_one(&app.pool)
    .await
    .expect("counts");
    assert_eq!((follows, contacts, history, staff), (0, 0, 0, 0));
    // Real events, for the replay below.
    let now = crate::helpers::unix_now();
    for (t, change) in [
        (now - 10, "add_external_contact"),
        (now - 5, "del_follow_user"),
    ] {
        let xml = crate::sync::contact_event(t, change, "alice", "wmREAL", "");
        let r = app
            .post("main", &crate::helpers::sign_callback(&MAIN, &xml, now))
            .await;
        assert_eq!(r.status().as_u16(), 200);
    }
    crate::helpers::wait_applied(&app.pool).await;

    let d = db_url.clone();
    let (ok, out, _) = tokio::task::spawn_blocking(move || {
        tool(
            &[
                "events",
                "--app",
                "main",
                "--change-type",
                "del_follow_user",
                "--json",
            ],
            Some(&d),
        )
    })
    .await
    .expect("join");
    assert!(ok);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(rows.len(), 2, "send-test's and the real one");
    assert_eq!(rows[0]["change_type"], "del_follow_user");

    // A projection damaged by hand (a bug, say) is repaired by replaying.
    sqlx::query("DELETE FROM external_contact_follows")
        .execute(&app.pool)
        .await
        .expect("damage");
    let d = db_url.clone();
    let (ok, _, err) =
        tokio::task::spawn_blocking(move || tool(&["replay", "--app", "main"], Some(&d)))
            .await
            .expect("join");
    assert!(ok, "{err}");
    let status: String = sqlx::query_scalar("SELECT status FROM external_contact_follows")
        .fetch_one(&app.pool)
        .await
        .expect("repaired");
    assert_eq!(status, "deleted_by_customer");

    let d = db_url.clone();
    let (ok, _, err) = tokio::task::spawn_blocking(move || tool(&["replay"], Some(&d)))
        .await
        .expect("join");
    assert!(!ok, "replay without a filter or --all is refused");
    assert!(err.contains("--all"), "{err}");
}
