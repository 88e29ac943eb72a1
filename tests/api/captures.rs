//! Captured rejections: the last refused requests per app are kept (bounded, mode 0600), the log line says
//! how to diagnose them, and `wecom-callback decrypt --last` says which check failed.

use std::process::Command;
use std::time::Duration;

use crate::helpers::{MAIN, TestAppConfig, poll, sign_callback, spawn_app_with, unix_now};

const BIN: &str = env!("CARGO_BIN_EXE_wecom-callback");

fn message() -> String {
    format!(
        "<xml><ToUserName><![CDATA[{}]]></ToUserName><FromUserName><![CDATA[u]]></FromUserName>\
         <CreateTime>{}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi]]></Content>\
         <MsgId>1</MsgId><AgentID>1</AgentID></xml>",
        MAIN.receive_id,
        unix_now()
    )
}

fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test]
async fn refused_requests_are_kept_bounded_and_decrypt_last_explains_the_newest() {
    let dir =
        std::env::temp_dir().join(format!("wecom-captures-{}", uuid::Uuid::new_v4().simple()));
    let app = spawn_app_with(&[MAIN], |s| {
        s.capture.dir = Some(dir.clone());
        s.capture.per_app = 2;
    })
    .await;
    let wrong = TestAppConfig {
        token: "wrongToken",
        ..MAIN
    };
    for _ in 0..3 {
        let r = app
            .post("main", &sign_callback(&wrong, &message(), unix_now()))
            .await;
        assert_eq!(r.status(), 403);
    }
    // An accepted callback is not captured.
    assert_eq!(
        app.post("main", &sign_callback(&MAIN, &message(), unix_now()))
            .await
            .status(),
        200
    );
    let main_dir = dir.join("main");
    poll(
        "two captures",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            let n = files(&main_dir).len();
            async move {
                if n == 2 {
                    Ok(())
                } else {
                    Err(format!("{n} files"))
                }
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let kept = files(&main_dir);
    assert_eq!(kept.len(), 2, "bounded to per_app: {kept:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in &kept {
            let mode = std::fs::metadata(f).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
    }
    let capture: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&kept[1]).expect("read")).expect("json");
    assert_eq!(capture["class"], "bad_signature");
    assert_eq!(capture["method"], "POST");
    assert!(
        capture["query"]
            .as_str()
            .expect("query")
            .starts_with("msg_signature=")
    );
    assert!(
        capture["body"]
            .as_str()
            .expect("body")
            .contains("<Encrypt>")
    );
    assert_eq!(capture["headers"]["content-type"], "text/xml");

    // decrypt --last, with the configuration serve had.
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[capture]\ndir = {dir:?}\n\n[[apps]]\nname = \"main\"\ntoken = \"{}\"\nencoding_aes_key = \"{}\"\ncorp_id = \"{}\"\n",
            MAIN.token, MAIN.encoding_aes_key, MAIN.receive_id
        ),
    )
    .expect("config");
    let out = Command::new(BIN)
        .args(["--config"])
        .arg(&config)
        .args(["decrypt", "--last"])
        .env_remove("WECOM_TOKEN")
        .env_remove("WECOM_ENCODING_AES_KEY")
        .env_remove("WECOM_CORP_ID")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "a refused request does not pass: {stdout}"
    );
    assert!(stdout.contains("class bad_signature"), "{stdout}");
    assert!(stdout.contains("FAIL signature"), "{stdout}");
    assert!(
        stdout.contains(&kept[1].display().to_string()),
        "names the newest capture: {stdout}"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[tokio::test]
async fn captures_off_keeps_nothing_and_decrypt_last_says_so() {
    let dir =
        std::env::temp_dir().join(format!("wecom-captures-{}", uuid::Uuid::new_v4().simple()));
    let app = spawn_app_with(&[MAIN], |s| s.capture.dir = None).await;
    let wrong = TestAppConfig {
        token: "wrongToken",
        ..MAIN
    };
    assert_eq!(
        app.post("main", &sign_callback(&wrong, &message(), unix_now()))
            .await
            .status(),
        403
    );
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[capture]\nenabled = false\n\n[[apps]]\nname = \"main\"\ntoken = \"{}\"\nencoding_aes_key = \"{}\"\ncorp_id = \"{}\"\n",
            MAIN.token, MAIN.encoding_aes_key, MAIN.receive_id
        ),
    )
    .expect("config");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["decrypt", "--last"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("[capture] enabled = false"), "{stderr}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
