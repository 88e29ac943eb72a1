//! The operator's view: `/status`, `/status.json` and `wecom-callback status`, checked against the database
//! and rendered in headless Chromium (a screenshot is kept under `target/status-page/`).

use std::path::PathBuf;
use std::process::Command;

use secrecy::SecretString;

use crate::helpers::{
    API_TOKEN, MAIN, SUITE, TestApp, encode, sign_callback, spawn_app_with, unix_now,
};

fn text_message(i: usize) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[u{i}]]></FromUserName>\
         <CreateTime>{}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hello {i}]]></Content>\
         <MsgId>{}</MsgId><AgentID>1</AgentID></xml>",
        MAIN.receive_id,
        unix_now(),
        1000 + i
    )
}

/// A URL verification of `app` signed with `token` (the app's own, or a wrong one).
fn verification_path(app: &crate::helpers::TestAppConfig, token: &str) -> String {
    let encrypted = wecom_callback::wecom::crypto::encrypt(
        &app.key(),
        &mut rand::rng(),
        b"1234567890",
        app.receive_id.as_bytes(),
    );
    let ts = unix_now().to_string();
    let sig = wecom_callback::wecom::crypto::signature(token, &ts, "n1", &encrypted);
    format!(
        "/callback/{}?msg_signature={sig}&timestamp={ts}&nonce=n1&echostr={}",
        app.name,
        encode(&encrypted)
    )
}

/// MAIN with a secret (so its token state shows), a refused and a passed verification, three stored
/// callbacks, one refused one, and a dead job whose 60020 names the egress IP.
async fn scenario() -> TestApp {
    let app = spawn_app_with(&[MAIN, SUITE], |s| {
        s.apps[0].secret = Some(SecretString::from("main-secret-for-tests"));
        s.api.worker_concurrency = 0;
    })
    .await;
    assert_eq!(
        app.get(&verification_path(&SUITE, SUITE.token))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.get(&verification_path(&MAIN, MAIN.token))
            .await
            .status(),
        200
    );
    // The last attempt for MAIN is the refused one (wrong Token): the page must say so and how to fix it.
    assert_eq!(
        app.get(&verification_path(&MAIN, "wrongToken"))
            .await
            .status(),
        403
    );
    for i in 0..3 {
        let r = app
            .post("main", &sign_callback(&MAIN, &text_message(i), unix_now()))
            .await;
        assert_eq!(r.status(), 200);
    }
    let wrong = crate::helpers::TestAppConfig {
        token: "wrongToken",
        ..MAIN
    };
    let bad = sign_callback(&wrong, &text_message(9), unix_now());
    assert_eq!(app.post("main", &bad).await.status(), 403);
    sqlx::query(
        "INSERT INTO wecom_jobs (kind, app, corp_id, subject, status, attempts, last_error, last_errcode) \
         VALUES ('contact_detail', 'main', $1, 'wmX', 'dead', 8, \
         'WeCom refused externalcontact/get: errcode 60020 (not allow to access from your ip, hint: [1], from ip: 203.0.113.7, more info at https://open.work.weixin.qq.com/devtool/query?e=60020). Add this server''s egress IP.', 60020)",
    )
    .bind(MAIN.receive_id)
    .execute(&app.pool)
    .await
    .expect("dead job");
    app
}

#[tokio::test]
async fn status_json_matches_the_database_and_explains_the_refusal() {
    let app = scenario().await;
    let r = app.get("/status.json").await;
    assert_eq!(r.status(), 401, "no token, no status");
    let r = app
        .client
        .get(format!("{}/status.json", app.address))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("status.json");
    assert_eq!(r.status(), 200);
    let report: serde_json::Value = r.json().await.expect("json");
    let main = report["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .find(|a| a["name"] == "main")
        .expect("main");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_events WHERE app = 'main'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(stored, 3);
    assert_eq!(main["events_total"], stored);
    let outcome = |name: &str| {
        main["outcomes"]
            .as_array()
            .expect("outcomes")
            .iter()
            .find(|o| o["outcome"] == name)
            .map(|o| {
                (
                    o["last_hour"].as_i64().expect("n"),
                    o["last_day"].as_i64().expect("n"),
                )
            })
    };
    // Text messages are stored and counted apart as an event type the projector does not interpret.
    assert_eq!(outcome("unknown_type"), Some((3, 3)), "{main}");
    let acknowledged: i64 = main["hourly"]
        .as_array()
        .expect("hourly")
        .iter()
        .map(|h| h["acknowledged"].as_i64().expect("n"))
        .sum();
    assert_eq!(acknowledged, stored, "the chart counts what was stored");
    assert_eq!(
        outcome("bad_signature"),
        Some((2, 2)),
        "the refused GET and the refused POST"
    );
    assert_eq!(outcome("url_verified"), Some((1, 1)));
    // The counts in the database are what the page shows.
    let in_db: i64 = sqlx::query_scalar(
        "SELECT sum(count)::bigint FROM wecom_callback_outcomes WHERE app = 'main' AND outcome = 'unknown_type'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("outcomes");
    assert_eq!(in_db, 3);
    assert_eq!(main["verification"]["outcome"], "bad_signature");
    assert_eq!(main["verification"]["wecom_code"], -40001);
    assert!(main["verification"]["last_ok_at"].is_string(), "{main}");
    let fix = main["verification_fix"].as_str().expect("fix");
    assert!(fix.contains("Token differs"), "{fix}");
    assert_eq!(main["jobs"]["dead"], 1);
    assert_eq!(main["token"]["refused_ip"], "203.0.113.7");
    assert_eq!(main["token"]["valid"], false);
    let suite = report["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .find(|a| a["name"] == "suite")
        .expect("suite");
    assert_eq!(suite["verification"]["outcome"], "url_verified");
    assert!(suite["verification_fix"].is_null());
    // Nothing secret is in the report.
    let text = report.to_string();
    for secret in [
        MAIN.token,
        MAIN.encoding_aes_key,
        "main-secret-for-tests",
        API_TOKEN,
        "hello 1",
    ] {
        assert!(!text.contains(secret), "the report leaks {secret}");
    }
}

#[tokio::test]
async fn a_token_in_the_query_becomes_a_cookie_and_is_dropped_from_the_url() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let client = wecom_callback::tls::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = client
        .get(format!("{}/status?token=wrong", app.address))
        .send()
        .await
        .expect("status");
    assert_eq!(r.status(), 401);
    assert!(r.text().await.expect("body").contains("/status?token="));
    let r = client
        .get(format!("{}/status?token={API_TOKEN}&lang=zh", app.address))
        .send()
        .await
        .expect("status");
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/status?lang=zh");
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(API_TOKEN),
        "the cookie holds the token hex-encoded: {cookie}"
    );
    let pair = cookie.split(';').next().expect("pair").to_owned();
    let r = client
        .get(format!("{}/status?lang=zh", app.address))
        .header("cookie", pair)
        .send()
        .await
        .expect("status");
    assert_eq!(r.status(), 200);
    let html = r.text().await.expect("html");
    assert!(
        html.contains("lang=\"zh-CN\"") && html.contains("URL 验证"),
        "{html}"
    );
}

#[tokio::test]
async fn without_an_api_token_the_page_says_how_to_turn_it_on() {
    let app = spawn_app_with(&[MAIN], |s| s.api_token = None).await;
    let r = app.get("/status").await;
    assert_eq!(r.status(), 404);
    assert!(
        r.text()
            .await
            .expect("body")
            .contains("set WECOM_API_TOKEN")
    );
}

/// Chromium's path: `WECOM_CHROMIUM`, else `chromium` or `chromium-browser` on PATH.
fn chromium() -> PathBuf {
    if let Ok(p) = std::env::var("WECOM_CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser"] {
        if let Ok(out) = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
        {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if out.status.success() && !path.is_empty() {
                return PathBuf::from(path);
            }
        }
    }
    panic!(
        "headless Chromium is needed for the status page test: run scripts/test (it installs Debian's \
         chromium package), or set WECOM_CHROMIUM to a Chromium binary"
    );
}

/// Runs headless Chromium on `url` with `extra` arguments (`--dump-dom`, `--screenshot=…`); returns stdout.
fn headless(url: &str, lang: &str, extra: &[String]) -> String {
    // A fresh profile each run: a reused one makes Chromium wait for the first instance.
    let profile =
        std::env::temp_dir().join(format!("wecom-chromium-{}", uuid::Uuid::new_v4().simple()));
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1600",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--lang={lang}"))
    .arg(format!("--accept-lang={lang}"))
    .args(extra)
    .arg(url);
    let out = cmd.output().expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text a reader sees in a dumped DOM: no markup, styles or titles, no `<code>` (commands, setting
/// names and labels are not prose), no closed `<details>` (folded away).
fn visible_text(dom: &str) -> String {
    let mut s = dom.to_owned();
    for (open, close) in [
        ("<style>", "</style>"),
        ("<head>", "</head>"),
        ("<title>", "</title>"),
        ("<code>", "</code>"),
        ("<details", "</details>"),
    ] {
        while let Some(start) = s.find(open) {
            let end = s[start..]
                .find(close)
                .map_or(s.len(), |e| start + e + close.len());
            s.replace_range(start..end, " ");
        }
    }
    let mut out = String::new();
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
}

/// Runs of three or more English words (letters only, separated by single spaces): sentences, not the
/// odd name (URL, Token, secret, UTC) a Chinese text carries.
fn english_sentences(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.split(|c: char| !(c.is_ascii_alphabetic() || c == ' ' || c == '\'')) {
        let words: Vec<&str> = line.split(' ').collect();
        let mut run: Vec<&str> = Vec::new();
        for w in words.iter().chain(std::iter::once(&"")) {
            if w.len() >= 2 && w.chars().all(|c| c.is_ascii_alphabetic() || c == '\'') {
                run.push(w);
            } else {
                if run.len() >= 3 {
                    found.push(run.join(" "));
                }
                run.clear();
            }
        }
    }
    found
}

#[test]
fn english_sentences_are_found_and_names_are_not() {
    assert_eq!(
        english_sentences("失败：the last resync failed（见下方）"),
        vec!["the last resync failed"]
    );
    assert!(english_sentences("URL 验证 · 企业 wx123 · 12 秒前 · Token 不一致").is_empty());
    let text = visible_text(
        "<p>见<code>wecom-callback jobs list --status dead</code>，<details><summary>x</summary>a b c d</details></p>",
    );
    assert_eq!(text.split_whitespace().collect::<Vec<_>>(), ["见", "，"]);
}

#[tokio::test]
async fn the_page_renders_in_chromium_with_the_database_numbers() {
    let app = scenario().await;
    let url = format!("{}/status?token={API_TOKEN}", app.address);
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || headless(&url, "en-US", &["--dump-dom".into()])
    })
    .await
    .expect("chromium");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_events WHERE app = 'main'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert!(
        dom.contains("<html lang=\"en\">"),
        "English by Accept-Language: {dom}"
    );
    assert!(
        dom.contains(&format!("data-events-total=\"\">{stored}</b>"))
            || dom.contains(&format!("data-events-total>{stored}</b>")),
        "stored events {stored} on the page: {dom}"
    );
    assert!(dom.contains("data-verification=\"bad_signature\""), "{dom}");
    assert!(dom.contains("The Token differs"), "{dom}");
    assert!(dom.contains("data-refused-ip=\"203.0.113.7\""), "{dom}");
    assert!(
        dom.contains("data-jobs-dead=\"\">1</b>") || dom.contains("data-jobs-dead>1</b>"),
        "{dom}"
    );
    assert!(!dom.contains(API_TOKEN), "the token stays out of the page");

    // A failed resync with drift: its error text is English, like the dead job's.
    sqlx::query(
        "INSERT INTO wecom_resync_runs (app, corp_id, status, finished_at, drift, last_error) \
         VALUES ('main', $1, 'failed', now(), '{\"contacts_created\": 2, \"follows_removed\": 1}', \
         'WeCom refused externalcontact/get_follow_user_list: errcode 48002 (api forbidden). The app lacks 客户联系.')",
    )
    .bind(MAIN.receive_id)
    .execute(&app.pool)
    .await
    .expect("resync run");

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/status-page");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    for (lang, file) in [("zh-CN", "status-zh.png"), ("en-US", "status-en.png")] {
        let shot = dir.join(file);
        let _ = std::fs::remove_file(&shot);
        let (url, arg) = (url.clone(), format!("--screenshot={}", shot.display()));
        let dom = tokio::task::spawn_blocking({
            let url = url.clone();
            move || headless(&url, lang, &["--dump-dom".into()])
        })
        .await
        .expect("chromium");
        if lang == "zh-CN" {
            assert!(
                dom.contains("lang=\"zh-CN\"") && dom.contains("Token 不一致"),
                "Chinese page: {dom}"
            );
            // Everything a person reads on the Chinese page is Chinese: no English sentence in the
            // attention list, the job's errcode, the resync, the outcomes (raw English errors are folded
            // away under a Chinese label).
            let text = visible_text(&dom);
            let english = english_sentences(&text);
            assert!(
                english.is_empty(),
                "English on the Chinese page: {english:#?}\n{text}"
            );
            for zh in [
                "需要处理",
                "最近一次 URL 验证",
                "签名错误",
                "个任务已失败",
                "错误码 60020",
                "最近一次全量同步失败",
                "新增客户 2",
            ] {
                assert!(text.contains(zh), "{zh} on the Chinese page:\n{text}");
            }
            // The raw English errors are still there, folded away and labelled.
            assert!(
                dom.contains("原始错误信息（英文）") && dom.contains("errcode 48002"),
                "{dom}"
            );
        } else {
            let text = visible_text(&dom);
            assert!(text.contains("the last resync failed"), "{text}");
            assert!(text.contains("contacts_created 2"), "{text}");
        }
        tokio::task::spawn_blocking(move || headless(&url, lang, &[arg]))
            .await
            .expect("chromium");
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 10_000,
            "a screenshot at {} ({size} bytes)",
            shot.display()
        );
    }
}

#[tokio::test]
async fn doctor_fails_on_what_the_status_page_flags() {
    let app = scenario().await;
    // The verification records are flushed by the page (or every few seconds).
    let r = app
        .client
        .get(format!("{}/status.json", app.address))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("status.json");
    assert_eq!(r.status(), 200);
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&app.pool)
        .await
        .expect("db");
    let url = crate::helpers::database_url_for(&db);
    let service = app.address.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_wecom-callback"))
            .args(["doctor", "--service-url", &service])
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
    assert!(
        text.contains("ok   service") && text.contains("/readyz: ready"),
        "{text}"
    );
    assert!(text.contains("1 dead job(s)"), "{text}");
    assert!(
        text.contains("the last URL verification") && text.contains("bad_signature"),
        "{text}"
    );
    assert!(!text.contains("Every check passed"), "{text}");
    assert!(!text.contains("Some("), "no Debug output: {text}");
}

/// The `[[suites]]` of the suite scenario: `crm` (third-party, the helpers' SUITE app) with a ticket and a
/// suite token, `dk` (代开发) with neither.
mod suites {
    use super::*;
    use base64::Engine;
    use serde_json::json;
    use wecom_callback::sync::provider::{Provider, SecretKey, Suite, SuiteKind};
    use wiremock::matchers::path;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const DK: crate::helpers::TestAppConfig = crate::helpers::TestAppConfig {
        name: "dk",
        kind: wecom_callback::app::AppKind::SuiteInstruction,
        token: "dkToken123",
        encoding_aes_key: "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
        receive_id: "dkTEMPLATE1",
    };

    fn key_b64() -> String {
        base64::engine::general_purpose::STANDARD.encode([42u8; 32])
    }

    fn suite(app: &crate::helpers::TestAppConfig, kind: SuiteKind) -> Suite {
        Suite {
            name: app.name.to_owned(),
            kind,
            suite_id: app.receive_id.to_owned(),
            secret: SecretString::from(format!("secret-of-{}", app.name)),
            data_apps: Vec::new(),
        }
    }

    /// A ticket pushed to `suite`, the suite token fetched from it, two authorised corps (one with a
    /// token) and a cancelled one whose rows are not deleted yet.
    async fn scenario() -> (TestApp, MockServer) {
        let server = MockServer::start().await;
        Mock::given(path("/cgi-bin/service/get_suite_token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "errcode": 0, "errmsg": "ok", "suite_access_token": "SUITE-TOKEN", "expires_in": 7200
            })))
            .mount(&server)
            .await;
        let uri = server.uri();
        let app = spawn_app_with(&[SUITE, DK], move |s| {
            s.api.base_url = uri;
            s.api.worker_concurrency = 0;
            s.provider = Provider {
                suites: vec![
                    suite(&SUITE, SuiteKind::ThirdParty),
                    suite(&DK, SuiteKind::Agency),
                ],
                key: Some(SecretKey::from_base64(&key_b64()).expect("key")),
                // The cancelled corp's rows wait an hour.
                delete_rows_after: std::time::Duration::from_secs(3600),
                ..Provider::default()
            };
        })
        .await;
        let ticket = format!(
            "<xml><SuiteId><![CDATA[{}]]></SuiteId><InfoType><![CDATA[suite_ticket]]></InfoType><TimeStamp>{}</TimeStamp><SuiteTicket><![CDATA[T1]]></SuiteTicket></xml>",
            SUITE.receive_id,
            unix_now()
        );
        let r = app
            .post(SUITE.name, &sign_callback(&SUITE, &ticket, unix_now()))
            .await;
        assert_eq!(r.status(), 200);
        crate::helpers::wait_for_count(&app.pool, "SELECT count(*) FROM wecom_suite_tickets", 1)
            .await;
        let api = wecom_callback::sync::client::WecomApi::new(&server.uri(), app.pool.clone())
            .expect("client");
        api.suite_access_token(SUITE.receive_id, &SecretString::from("secret-of-suite"))
            .await
            .expect("the suite token");
        for (corp, state, rows_deleted) in [
            ("wwCORPA", "authorised", false),
            ("wwCORPB", "authorised", false),
            ("wwCORPC", "cancelled", false),
        ] {
            sqlx::query(
                "INSERT INTO wecom_provider_corps (corp_id, suite_id, app, state, permanent_code, cancelled_at, \
                   rows_deleted_at) \
                 VALUES ($1, $2, 'suite', $3, '\\x00', CASE WHEN $3 = 'cancelled' THEN now() END, \
                   CASE WHEN $4 THEN now() END)",
            )
            .bind(corp)
            .bind(SUITE.receive_id)
            .bind(state)
            .bind(rows_deleted)
            .execute(&app.pool)
            .await
            .expect("corp");
        }
        sqlx::query(
            "INSERT INTO wecom_access_tokens (corp_id, secret_hash, access_token, expires_at) \
             VALUES ('wwCORPA', 'h', 'T', now() + interval '1 hour')",
        )
        .execute(&app.pool)
        .await
        .expect("corp token");
        (app, server)
    }

    #[tokio::test]
    async fn status_json_shows_each_suites_ticket_token_and_corps() {
        let (app, _server) = scenario().await;
        let r = app
            .client
            .get(format!("{}/status.json", app.address))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("status.json");
        assert_eq!(r.status(), 200);
        let report: serde_json::Value = r.json().await.expect("json");
        let suites = report["suites"].as_array().expect("suites");
        assert_eq!(suites.len(), 2, "{report}");
        let crm = &suites[0];
        assert_eq!(crm["name"], "suite");
        assert_eq!(crm["kind"], "third_party");
        assert_eq!(crm["ticket"], "fresh", "{crm}");
        assert!(
            crm["ticket_age_secs"].as_i64().is_some_and(|a| a < 60),
            "{crm}"
        );
        assert_eq!(crm["token"]["valid"], true, "{crm}");
        assert_eq!(
            crm["corps"],
            json!({"suite_id": SUITE.receive_id, "authorised": 2, "authorised_with_token": 1,
                   "cancelled": 1, "rows_pending_deletion": 1, "events_kept": 1}),
        );
        let dk = &suites[1];
        assert_eq!(dk["kind"], "agency");
        assert_eq!(dk["ticket"], "none", "{dk}");
        assert_eq!(dk["token"]["valid"], false, "{dk}");
        assert_eq!(dk["corps"]["authorised"], 0);
        assert!(
            !report.to_string().contains("SUITE-TOKEN"),
            "no token on the page"
        );

        // `status --json` (from the database, serve or not) says the same, and fails on the missing ticket.
        let dir = std::env::temp_dir().join(format!(
            "wecom-status-suites-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let config = dir.join("config.toml");
        let mut toml = format!(
            "database_url = \"{}\"\n\n[provider]\nsecret_key = \"{}\"\n",
            app.database_url(),
            key_b64()
        );
        for (a, kind) in [(&SUITE, "third_party"), (&DK, "agency")] {
            toml.push_str(&format!(
                "\n[[suites]]\nname = \"{}\"\nkind = \"{kind}\"\nsuite_id = \"{}\"\nsuite_secret = \"secret-of-{}\"\n\
                 token = \"{}\"\nencoding_aes_key = \"{}\"\nprovider_corp_id = \"wwPROVIDER\"\n",
                a.name, a.receive_id, a.name, a.token, a.encoding_aes_key
            ));
        }
        std::fs::write(&config, toml).expect("config");
        let out = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_wecom-callback"))
                .args(["status", "--json", "--config"])
                .arg(&config)
                .env_remove("WECOM_CONFIG")
                .env_remove("DATABASE_URL")
                .env_remove("WECOM_TOKEN")
                .env_remove("WECOM_ENCODING_AES_KEY")
                .env_remove("WECOM_CORP_ID")
                .env_remove("WECOM_SECRET_KEY")
                .env("RUST_LOG", "warn")
                .output()
                .expect("runs")
        })
        .await
        .expect("join");
        let _ = std::fs::remove_dir_all(&dir);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "dk has no ticket: {stdout}{stderr}");
        let cli: serde_json::Value = serde_json::from_str(&stdout).expect("the report as JSON");
        assert_eq!(cli["suites"][0]["ticket"], "fresh", "{cli}");
        assert_eq!(cli["suites"][0]["token"]["valid"], true, "{cli}");
        assert_eq!(cli["suites"][0]["corps"]["authorised"], 2, "{cli}");
        assert_eq!(cli["suites"][1]["ticket"], "none", "{cli}");
    }

    #[tokio::test]
    async fn the_page_shows_the_suites_in_both_languages() {
        let (app, _server) = scenario().await;
        let url = format!("{}/status?token={API_TOKEN}", app.address);
        for lang in ["en-US", "zh-CN"] {
            let dom = tokio::task::spawn_blocking({
                let url = url.clone();
                move || headless(&url, lang, &["--dump-dom".into()])
            })
            .await
            .expect("chromium");
            for attr in [
                "data-suite=\"suite\"",
                "data-ticket=\"fresh\"",
                "data-suite-token-valid=\"true\"",
                "data-corps-authorised=\"2\"",
                "data-corps-cancelled=\"1\"",
                "data-corps-rows-pending=\"1\"",
                "data-suite=\"dk\"",
                "data-ticket=\"none\"",
            ] {
                assert!(dom.contains(attr), "{lang}: {attr} on the page: {dom}");
            }
            let text = visible_text(&dom)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            if lang == "zh-CN" {
                let english = english_sentences(&text);
                assert!(
                    english.is_empty(),
                    "English on the Chinese page: {english:#?}\n{text}"
                );
                for zh in [
                    "服务商应用",
                    "已授权 2",
                    "其中 1 个 token 有效",
                    "已取消授权 1",
                    "代开发模板 dk：尚未收到 suite_ticket",
                ] {
                    assert!(text.contains(zh), "{zh} on the Chinese page:\n{text}");
                }
            } else {
                for en in [
                    "Service provider suites",
                    "authorised 2",
                    "(1 with a valid token)",
                    "suite dk: no suite_ticket has arrived yet",
                    "a suite's WeCom API calls use each authorised corp's own token",
                ] {
                    assert!(text.contains(en), "{en} on the English page:\n{text}");
                }
            }
        }
    }
}
