//! Several replicas: a spool directory is used by one process at a time (a second `serve` on it refuses to
//! start, naming the holder), and `drain --spool-dir` finishes a stopped replica's spool.

use std::process::{Command, Stdio};
use std::time::Duration;

use wecom_callback::ingest::spool::{Spool, SpooledRequest};

use crate::helpers::{MAIN, fresh_database, sign_callback, unix_now, wait_for_count, wait_ready};

const BIN: &str = env!("CARGO_BIN_EXE_wecom-callback");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The binary with MAIN from the environment, against `url`, and nothing else from this environment.
fn command(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WECOM_TOKEN", MAIN.token)
        .env("WECOM_ENCODING_AES_KEY", MAIN.encoding_aes_key)
        .env("WECOM_CORP_ID", MAIN.receive_id)
        .env("WECOM_APP_NAME", MAIN.name)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "info");
    cmd
}

fn add(external: &str) -> String {
    format!(
        "<xml><ToUserName>{}</ToUserName><CreateTime>1700000000</CreateTime><MsgType>event</MsgType>\
         <Event>change_external_contact</Event><ChangeType>add_external_contact</ChangeType>\
         <UserID>u</UserID><ExternalUserID>{external}</ExternalUserID></xml>",
        MAIN.receive_id
    )
}

fn spooled(plaintext: &str) -> SpooledRequest {
    let cb = sign_callback(&MAIN, plaintext, unix_now() - 3600);
    SpooledRequest {
        app: MAIN.name.into(),
        query: cb.query,
        body: cb.body,
        received_at_us: (unix_now() - 3600) * 1_000_000,
    }
}

#[tokio::test]
async fn a_second_serve_on_the_same_spool_refuses_to_start_naming_the_first() {
    let (_guard, url) = fresh_database();
    let spool = std::env::temp_dir().join(format!("wecom-spool-{}", uuid::Uuid::new_v4()));
    let port = free_port();
    let mut first = command(&url, &["serve"])
        .env("WECOM_LISTEN", format!("127.0.0.1:{port}"))
        .env("WECOM_SPOOL_DIR", &spool)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    wait_ready(&format!("http://127.0.0.1:{port}"), Duration::from_secs(60)).await;

    let second = command(&url, &["serve"])
        .env("WECOM_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("WECOM_SPOOL_DIR", &spool)
        .output()
        .expect("runs");
    let log = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second one started:\n{log}");
    assert!(
        log.contains(&format!("in use by pid {}", first.id())),
        "the holder is named:\n{log}"
    );
    // So is draining a live replica's spool.
    let drain = command(&url, &["drain", "--spool-dir"])
        .arg(&spool)
        .output()
        .expect("runs");
    assert!(!drain.status.success());
    assert!(
        String::from_utf8_lossy(&drain.stderr).contains(&format!("pid {}", first.id())),
        "{}",
        String::from_utf8_lossy(&drain.stderr)
    );

    // Killed, however hard, the first releases it: a new process can take over the directory.
    let _ = first.kill();
    let _ = first.wait();
    let port = free_port();
    let mut third = command(&url, &["serve"])
        .env("WECOM_LISTEN", format!("127.0.0.1:{port}"))
        .env("WECOM_SPOOL_DIR", &spool)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    wait_ready(&format!("http://127.0.0.1:{port}"), Duration::from_secs(60)).await;
    let _ = third.kill();
    let _ = third.wait();
    let _ = std::fs::remove_dir_all(&spool);
}

#[tokio::test]
async fn drain_stores_a_stopped_replicas_spool_once_and_reports_counts() {
    let (_guard, url) = fresh_database();
    let dir = std::env::temp_dir().join(format!("wecom-spool-{}", uuid::Uuid::new_v4()));
    {
        // What a replica acknowledged while PostgreSQL was unreachable, before it died.
        let spool = Spool::open(&dir, 1 << 20).expect("open");
        for ext in ["wmA", "wmB", "wmC"] {
            spool.append(&spooled(&add(ext))).await.expect("append");
        }
        // A retry of wmA that another replica stored already, and one for an app this configuration lacks.
        spool.append(&spooled(&add("wmA"))).await.expect("append");
        let mut foreign = spooled(&add("wmX"));
        foreign.app = "gone".into();
        spool.append(&foreign).await.expect("append");
    }
    // The directory must exist: a mistyped path is not an empty spool.
    let missing = command(&url, &["drain", "--spool-dir"])
        .arg(dir.join("nope"))
        .output()
        .expect("runs");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("is not a directory"));

    let out = command(&url, &["drain", "--spool-dir"])
        .arg(&dir)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("4 callback(s) stored (3 new, 1 already stored)"),
        "{stdout}"
    );
    assert!(stdout.contains("1 rejected"), "{stdout}");
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    wait_for_count(
        &pool,
        "SELECT count(*) FROM wecom_events WHERE received_at < now() - interval '30 minutes'",
        3,
    )
    .await;
    let rejected = std::fs::read_to_string(dir.join("rejected.jsonl")).expect("kept");
    assert!(rejected.contains("\"gone\""), "{rejected}");
    let segments = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "spool"))
        .count();
    assert_eq!(segments, 0, "drained segments are deleted");

    // Again: nothing left, nothing added.
    let again = command(&url, &["drain", "--spool-dir"])
        .arg(&dir)
        .output()
        .expect("runs");
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 segment(s), 0 callback(s)"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_events")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(n, 3);
    pool.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

mod limits {
    use std::time::{Duration, Instant};

    use secrecy::SecretString;
    use wecom_callback::store::limits as store_limits;
    use wecom_callback::sync::client::limiter::{ApiLimits, Limit};
    use wecom_callback::sync::client::{Credentials, WecomApi};

    use crate::fake_wecom::FakeWecom;

    const GET: &str = "/cgi-bin/externalcontact/get";

    fn creds() -> Credentials {
        Credentials {
            corp_id: "wwLIMITS".into(),
            secret: SecretString::from("s"),
            source: Default::default(),
        }
    }

    fn limits(concurrency: u32, per_minute: u32, burst: u32) -> ApiLimits {
        ApiLimits {
            default: Limit {
                concurrency,
                per_minute,
                burst,
            },
            ..ApiLimits::default()
        }
    }

    /// `replicas` clients (each its own HTTP client, as separate processes would be) call `externalcontact/get`
    /// `calls` times each, all at once.
    async fn storm(
        pool: &sqlx::PgPool,
        base: &str,
        limits: &ApiLimits,
        replicas: usize,
        calls: usize,
    ) {
        let apis: Vec<WecomApi> = (0..replicas)
            .map(|_| {
                WecomApi::new(base, pool.clone())
                    .expect("client")
                    .with_limits(limits.clone())
            })
            .collect();
        let creds = creds();
        let all = apis.iter().flat_map(|api| {
            (0..calls).map({
                let creds = creds.clone();
                move |i| {
                    let creds = creds.clone();
                    async move { api.external_contact(&creds, &format!("wm{i}")).await }
                }
            })
        });
        for r in futures_util::future::join_all(all).await {
            // The fake says 84061 (no relation): the call went through the limiter and reached it.
            assert_eq!(r.expect_err("84061").errcode(), Some(84061));
        }
    }

    #[tokio::test]
    async fn concurrent_calls_per_corp_and_api_are_capped_across_clients() {
        let app = crate::helpers::spawn_app().await;
        let fake = FakeWecom::start(Duration::from_millis(150), &[]).await;
        storm(&app.pool, &fake.base_url(), &limits(2, 10_000, 1_000), 3, 6).await;
        assert_eq!(fake.calls(GET), 18);
        assert_eq!(
            fake.max_in_flight(GET),
            2,
            "three clients, 18 calls at once, at most 2 in flight (and the cap was reached)"
        );
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM wecom_api_slots")
            .fetch_one(&app.pool)
            .await
            .expect("slots");
        assert_eq!(left, 0, "every slot was given back");

        // The same storm without limits overlaps: the fake can tell.
        let free = FakeWecom::start(Duration::from_millis(150), &[]).await;
        storm(&app.pool, &free.base_url(), &ApiLimits::unlimited(), 3, 6).await;
        assert!(free.max_in_flight(GET) > 2, "{}", free.max_in_flight(GET));
    }

    #[tokio::test]
    async fn the_rate_is_shared_and_a_slowdown_lowers_it_for_every_client() {
        let app = crate::helpers::spawn_app().await;
        let fake = FakeWecom::start(Duration::ZERO, &[]).await;
        // 600 a minute, no burst: 10 calls over two clients take about 0.9 s, whoever makes them.
        let started = Instant::now();
        storm(&app.pool, &fake.base_url(), &limits(5, 600, 1), 2, 5).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(800), "{took:?}");
        assert!(took < Duration::from_secs(4), "{took:?}");

        // After a 45033 (as recorded by the client that saw it), every client goes 4 times slower.
        store_limits::slow_down(&app.pool, "wwLIMITS", 45033, Duration::from_secs(60))
            .await
            .expect("slow down");
        assert!(
            store_limits::is_slowed(&app.pool, "wwLIMITS")
                .await
                .expect("slowed")
        );
        assert!(
            !store_limits::is_slowed(&app.pool, "wwOTHER")
                .await
                .expect("other")
        );
        let mut waits = Vec::new();
        for _ in 0..4 {
            waits.push(
                store_limits::reserve_rate(
                    &app.pool,
                    "wwLIMITS",
                    "externalcontact/list",
                    600,
                    10,
                    4,
                )
                .await
                .expect("reserve"),
            );
        }
        // 100 ms × 4 per call, no burst while slowed: the fourth waits about 1.2 s.
        assert!(waits[3] >= Duration::from_millis(1_100), "{waits:?}");
        assert!(waits[3] <= Duration::from_millis(1_300), "{waits:?}");
        // Another corp is not slowed: its burst of 10 goes at once.
        for _ in 0..4 {
            let w = store_limits::reserve_rate(
                &app.pool,
                "wwOTHER",
                "externalcontact/list",
                600,
                10,
                4,
            )
            .await
            .expect("reserve");
            assert!(w.is_zero(), "{w:?}");
        }
    }

    #[tokio::test]
    async fn a_crashed_holders_slot_frees_itself_when_its_lease_ends() {
        let app = crate::helpers::spawn_app().await;
        let lease = Duration::from_millis(500);
        let a = store_limits::try_acquire_slot(&app.pool, "wwL", "x", 1, "dead", lease)
            .await
            .expect("acquire");
        assert_eq!(a, Some(0));
        let b = store_limits::try_acquire_slot(&app.pool, "wwL", "x", 1, "alive", lease)
            .await
            .expect("acquire");
        assert_eq!(b, None, "the only slot is leased");
        tokio::time::sleep(Duration::from_millis(700)).await;
        let c = store_limits::try_acquire_slot(&app.pool, "wwL", "x", 1, "alive", lease)
            .await
            .expect("acquire");
        assert_eq!(c, Some(0), "taken over after the lease");
        // The dead holder's late release does not free the new holder's slot.
        store_limits::release_slot(&app.pool, "wwL", "x", 0, "dead")
            .await
            .expect("release");
        let d = store_limits::try_acquire_slot(&app.pool, "wwL", "x", 1, "third", lease)
            .await
            .expect("acquire");
        assert_eq!(d, None);
    }
}

/// A drain pass that stops at the database repeats its segment: the requests that no longer verify must be
/// kept in rejected.jsonl once, not once per pass (nor again after a crash between keeping and deleting).
#[tokio::test]
async fn a_drain_retried_after_a_database_failure_keeps_each_rejected_request_once() {
    let app = crate::helpers::spawn_app().await;
    let dir = std::env::temp_dir().join(format!("wecom-spool-{}", uuid::Uuid::new_v4()));
    let spool = Spool::open(&dir, 1 << 20).expect("open");
    let mut foreign = spooled(&add("wmGONE"));
    foreign.app = "gone".into();
    spool
        .append(&spooled(&add("wmKEPT")))
        .await
        .expect("append");
    spool.append(&foreign).await.expect("append");
    let apps: std::collections::HashMap<_, _> = [(
        MAIN.name.to_owned(),
        crate::helpers::test_settings(&[MAIN], "postgres://x@127.0.0.1/x")
            .apps
            .remove(0),
    )]
    .into_iter()
    .collect();
    let rejected_lines = || {
        std::fs::read_to_string(dir.join("rejected.jsonl"))
            .map(|t| {
                t.lines()
                    .filter(|l| l.contains("wmGONE") || l.contains("\"gone\""))
                    .count()
            })
            .unwrap_or(0)
    };

    // PostgreSQL is down: nothing listens where this pool points.
    let down = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy(&format!("postgres://postgres@127.0.0.1:{}/x", free_port()))
        .expect("lazy pool");
    for _ in 0..2 {
        assert!(
            wecom_callback::ingest::drain::drain_once_report(&spool, &down, &apps)
                .await
                .is_err()
        );
    }
    assert_eq!(
        rejected_lines(),
        0,
        "nothing is kept before the segment's rows are committed"
    );

    let report = wecom_callback::ingest::drain::drain_once_report(&spool, &app.pool, &apps)
        .await
        .expect("drained");
    assert_eq!((report.new, report.rejected), (1, 1), "{report:?}");
    assert_eq!(rejected_lines(), 1);

    // A crash after keeping, before deleting the segment: the same request comes again.
    spool.append(&foreign).await.expect("append");
    wecom_callback::ingest::drain::drain_once_report(&spool, &app.pool, &apps)
        .await
        .expect("drained");
    assert_eq!(rejected_lines(), 1, "kept once");
    drop(spool);
    let _ = std::fs::remove_dir_all(&dir);
}
