//! The texts a first-time operator reads when something is wrong: each says what failed and the fix for
//! that failure, once.

use std::process::Command;

use crate::helpers::{MAIN, fresh_database};

const BIN: &str = env!("CARGO_BIN_EXE_wecom-callback");

fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    for var in [
        "WECOM_CONFIG",
        "WECOM_TOKEN",
        "WECOM_ENCODING_AES_KEY",
        "WECOM_CORP_ID",
        "WECOM_LISTEN",
        "WECOM_API_TOKEN",
        "WECOM_SECRET",
        "DATABASE_URL",
        "WECOM_LOCAL_PG_ADDR",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_port_in_use_is_not_called_a_database_problem() {
    let (_guard, url) = fresh_database();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (ok, out) = run(
        &["serve"],
        &[
            ("DATABASE_URL", &url),
            ("WECOM_LISTEN", &addr),
            ("WECOM_TOKEN", MAIN.token),
            ("WECOM_ENCODING_AES_KEY", MAIN.encoding_aes_key),
            ("WECOM_CORP_ID", MAIN.receive_id),
        ],
    );
    assert!(!ok);
    let error = out.lines().find(|l| l.starts_with("error:")).unwrap_or(&out);
    assert!(error.contains("port in use") && error.contains(&addr), "{out}");
    assert!(!error.contains("PostgreSQL"), "not a database problem: {error}");
}

#[test]
fn a_missing_role_is_said_once_with_its_fix() {
    let (ok, out) = run(
        &["migrate"],
        &[("DATABASE_URL", "postgres://nosuchrole@127.0.0.1:5432/wecom_nosuch")],
    );
    assert!(!ok);
    assert!(out.contains("refused the login") && out.contains("createuser"), "{out}");
    assert_eq!(out.matches("does not exist").count(), 1, "the cause once: {out}");
    assert!(!out.contains("apt-get install"), "PostgreSQL is running; installing it is not the fix: {out}");
}

#[test]
fn nothing_listening_says_start_postgresql() {
    let (ok, out) = run(
        &["migrate"],
        &[("DATABASE_URL", "postgres://postgres@127.0.0.1:9/wecom_x")],
    );
    assert!(!ok);
    assert!(out.contains("connection refused") && out.contains("start PostgreSQL"), "{out}");
    assert_eq!(out.matches("refused").count(), 1, "the cause once: {out}");
}
