//! Fault injection: each scenario owns a scratch PostgreSQL cluster, runs the real service, drives it like
//! WeCom (retrying on timeouts and connection errors) while breaking things, and then runs the checker.
//! Sizes here are CI's; `scripts/faults` runs them larger (WECOM_FAULT_SCALE).

mod cluster;
#[path = "../common/fake_wecom.rs"]
mod fake_wecom;
mod harness;
mod hostile;
mod replicas;
#[path = "../common/snapshot.rs"]
mod snapshot;

use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use sqlx::PgPool;

use cluster::Cluster;
use harness::{Service, assert_fast, callbacks, check, drive, scale, summary};

/// Scenarios run one at a time: each one's timing bound must not depend on another's load.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn scratch_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("wecom-fault-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

/// No secret and no plaintext in an info-level log (every plaintext carries a canary).
pub fn assert_log_clean(log: &std::path::Path) {
    let text = std::fs::read_to_string(log).expect("service log");
    assert!(text.contains("INFO"), "the log was written at info level");
    for secret in [harness::TOKEN, harness::KEY, harness::CANARY] {
        assert!(!text.contains(secret), "the log contains {secret:?}");
    }
}

async fn finish(
    name: &str,
    pg: &Cluster,
    cbs: &[harness::Callback],
    outcomes: &[harness::Outcome],
    log: &std::path::Path,
) {
    eprintln!("{}", summary(name, outcomes));
    let pool = PgPool::connect(&pg.url("wecom")).await.expect("connect");
    check(
        &pool,
        &pg.url("wecom_reference"),
        cbs,
        outcomes,
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("{name}: checker failed: {e}"));
    assert_fast(outcomes);
    assert!(
        outcomes.iter().all(|o| o.status == Some(200)),
        "{name}: with the spool every callback is acknowledged"
    );
    pool.close().await;
    assert_log_clean(log);
}

/// R1's load and faults: 2,000 callbacks (× scale) at 16 connections over 15 s while PostgreSQL is killed
/// (immediate stop) for 2 s and then for 6 s.
async fn r1_run(
    pg: &std::sync::Arc<Cluster>,
    port: u16,
) -> (Vec<harness::Callback>, Vec<harness::Outcome>) {
    let cbs = callbacks(2_000 * scale());
    let faults = {
        let pg = pg.clone();
        std::thread::spawn(move || {
            sleep(Duration::from_secs(2));
            pg.kill();
            sleep(Duration::from_secs(2));
            pg.restart();
            sleep(Duration::from_secs(3));
            pg.kill();
            sleep(Duration::from_secs(6));
            pg.restart();
        })
    };
    let outcomes = drive(port, &cbs, 16, Duration::from_secs(15)).await;
    faults.join().expect("fault schedule");
    (cbs, outcomes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_database_killed_twice() {
    let _serial = SERIAL.lock().await;
    let pg = std::sync::Arc::new(Cluster::start());
    let dir = scratch_dir();
    let svc = Service::spawn(
        &pg.url("wecom"),
        &dir.join("spool"),
        &dir.join("service.log"),
    );
    let (cbs, outcomes) = r1_run(&pg, svc.port()).await;
    finish("R1", &pg, &cbs, &outcomes, &dir.join("service.log")).await;
    drop(svc);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_database_frozen() {
    let _serial = SERIAL.lock().await;
    let pg = std::sync::Arc::new(Cluster::start());
    let dir = scratch_dir();
    let svc = Service::spawn(
        &pg.url("wecom"),
        &dir.join("spool"),
        &dir.join("service.log"),
    );
    let cbs = callbacks(1_500 * scale());
    let faults = {
        let pg = pg.clone();
        std::thread::spawn(move || {
            sleep(Duration::from_secs(2));
            let pids = pg.freeze();
            sleep(Duration::from_secs(8));
            pg.thaw(&pids);
        })
    };
    let outcomes = drive(svc.port(), &cbs, 16, Duration::from_secs(13)).await;
    faults.join().expect("fault schedule");
    finish("R2", &pg, &cbs, &outcomes, &dir.join("service.log")).await;
    drop(svc);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_service_killed_and_stopped() {
    let _serial = SERIAL.lock().await;
    let pg = Cluster::start();
    let dir = scratch_dir();
    let mut svc = Service::spawn(
        &pg.url("wecom"),
        &dir.join("spool"),
        &dir.join("service.log"),
    );
    let port = svc.port();
    let cbs = callbacks(1_500 * scale());
    let faults = std::thread::spawn(move || {
        sleep(Duration::from_secs(3));
        svc.stop("-KILL");
        sleep(Duration::from_secs(1));
        svc.restart();
        sleep(Duration::from_secs(3));
        svc.stop("-TERM");
        sleep(Duration::from_millis(500));
        svc.restart();
        svc
    });
    let outcomes = drive(port, &cbs, 16, Duration::from_secs(12)).await;
    let svc = faults.join().expect("fault schedule");
    finish("R3", &pg, &cbs, &outcomes, &dir.join("service.log")).await;
    drop(svc);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_connections_terminated_every_500ms() {
    let _serial = SERIAL.lock().await;
    let pg = Cluster::start();
    let dir = scratch_dir();
    let svc = Service::spawn(
        &pg.url("wecom"),
        &dir.join("spool"),
        &dir.join("service.log"),
    );
    let cbs = callbacks(2_000 * scale());
    let port = pg.port;
    let faults = std::thread::spawn(move || {
        let mut terminated = 0;
        for _ in 0..40 {
            sleep(Duration::from_millis(500));
            let out = Command::new(cluster::bin_dir().join("psql"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-d", "postgres", "-Atc"])
                .arg("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'wecom-callback'")
                .output()
                .expect("psql");
            terminated += String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u32>()
                .unwrap_or(0);
        }
        terminated
    });
    let outcomes = drive(svc.port(), &cbs, 16, Duration::from_secs(20)).await;
    let terminated = faults.join().expect("fault schedule");
    assert!(
        terminated > 20,
        "the fault really cut connections ({terminated})"
    );
    finish("R4", &pg, &cbs, &outcomes, &dir.join("service.log")).await;
    drop(svc);
    let _ = std::fs::remove_dir_all(dir);
}

/// The checker's own check: R1 against a service that answers success before committing must fail it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_success_before_commit() {
    let _serial = SERIAL.lock().await;
    let pg = std::sync::Arc::new(Cluster::start());
    let dir = scratch_dir();
    let svc = Service::in_process(&pg.url("wecom"), &dir.join("spool"), true).await;
    let (cbs, outcomes) = r1_run(&pg, svc.port()).await;
    let pool = PgPool::connect(&pg.url("wecom")).await.expect("connect");
    let verdict = check(
        &pool,
        &pg.url("wecom_reference"),
        &cbs,
        &outcomes,
        Duration::from_secs(8),
    )
    .await;
    let why = verdict.expect_err("the checker must catch an acknowledgement without a commit");
    assert!(why.contains("lost"), "{why}");
    pool.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
