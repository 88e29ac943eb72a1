//! Replicas: three real `serve` processes against one PostgreSQL behind a round-robin TCP proxy, driven like
//! WeCom. During the run replica A's PostgreSQL is frozen (its own pausable TCP proxy to the database stops
//! forwarding) and then A is SIGKILLed with callbacks in its spool; replica B loses its database connections
//! (pg_terminate_backend of exactly its backends); replica C is stopped and started again. Afterwards a
//! survivor's `wecom-callback drain --spool-dir` stores A's spool. Checked: every acknowledged callback in
//! `wecom_events` exactly once and the synced tables equal a replay (the shared checker), no answer slower
//! than 4.5 s, the resync ran once across the three, and the fake WeCom API never saw more concurrent calls
//! of one API for the corp than configured.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::cluster::Cluster;
use crate::fake_wecom::FakeWecom;
use crate::harness::{
    self, CORP, KEY, TOKEN, assert_fast, callbacks, check, drive_with, scale, summary,
};

const BIN: &str = env!("CARGO_BIN_EXE_wecom-callback");
/// Concurrent calls of one API per corp allowed across the cluster (below the workers: 3 replicas × 3).
const API_CONCURRENCY: u32 = 2;

/// A TCP proxy to PostgreSQL for one replica: it can stop forwarding (the database "frozen" for that replica
/// alone, connections open) and it knows its upstream ports (to terminate exactly that replica's backends).
struct PgProxy {
    port: u16,
    paused: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    upstream_ports: Arc<Mutex<HashSet<u16>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `r` to `w`, holding the bytes while `paused`; once `cut`, a held connection is dropped with what it
/// holds (the frozen database never came back for that replica).
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    paused: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while paused.load(Ordering::SeqCst) {
            if cut.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

impl PgProxy {
    async fn start(pg_port: u16) -> PgProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let paused = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let upstream_ports = Arc::new(Mutex::new(HashSet::new()));
        let (p, x, ports) = (paused.clone(), cut.clone(), upstream_ports.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (p, x, ports) = (p.clone(), x.clone(), ports.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", pg_port)).await else {
                        return;
                    };
                    let local = server.local_addr().map(|a| a.port()).unwrap_or(0);
                    ports.lock().expect("ports").insert(local);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = tokio::spawn(pump(cr, sw, p.clone(), x.clone()));
                    let down = tokio::spawn(pump(sr, cw, p, x));
                    let _ = up.await;
                    let _ = down.await;
                    ports.lock().expect("ports").remove(&local);
                });
            }
        });
        PgProxy {
            port,
            paused,
            cut,
            upstream_ports,
            task,
        }
    }
}

/// The load balancer: a round-robin TCP proxy over the replicas' ports; a replica that refuses the
/// connection (stopped, restarting) is skipped, as a load balancer's health check would.
async fn round_robin(backends: Vec<u16>) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let next = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (backends, next) = (backends.clone(), next.clone());
            tokio::spawn(async move {
                let first = next.fetch_add(1, Ordering::Relaxed);
                for k in 0..backends.len() {
                    let b = backends[(first + k) % backends.len()];
                    let connect = TcpStream::connect(("127.0.0.1", b));
                    if let Ok(Ok(mut server)) =
                        tokio::time::timeout(Duration::from_millis(500), connect).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        return;
                    }
                }
            });
        }
    });
    (port, task)
}

/// One replica: the real binary, configured like production from a file and the environment.
struct Replica {
    name: &'static str,
    child: Option<Child>,
    port: u16,
    db_url: String,
    spool: PathBuf,
    config: PathBuf,
    log: PathBuf,
    api: String,
}

impl Replica {
    fn start(name: &'static str, db_url: String, dir: &Path, api: &str) -> Replica {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[database]\nmax_connections = 8\n\
                 [api]\nworker_concurrency = 3\nmax_attempts = 3\nresync_interval_hours = 24\nresync_pause_ms = 0\n\
                 [api_limits]\nconcurrency = {API_CONCURRENCY}\nper_minute = 6000\nburst = 50\n"
            ),
        )
        .expect("config");
        let mut r = Replica {
            name,
            child: None,
            port: harness::free_port(),
            db_url,
            spool: dir.join(format!("{name}-spool")),
            config,
            log: dir.join(format!("{name}.log")),
            api: api.to_owned(),
        };
        r.spawn();
        r
    }

    fn command(&self, args: &[&str], db_url: &str) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WECOM_CONFIG", &self.config)
            .env("WECOM_TOKEN", TOKEN)
            .env("WECOM_ENCODING_AES_KEY", KEY)
            .env("WECOM_CORP_ID", CORP)
            .env("WECOM_APP_NAME", "main")
            .env("WECOM_SECRET", "fake-secret")
            .env("WECOM_API_BASE_URL", &self.api)
            .env("DATABASE_URL", db_url)
            .env("RUST_LOG", "info");
        cmd
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = self
            .command(&["serve"], &self.db_url)
            .env("WECOM_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("WECOM_SPOOL_DIR", &self.spool)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a replica");
        self.child = Some(child);
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ =
                    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "replica {} did not start; log:\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&mut self, signal: &str) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let _ = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        let started = Instant::now();
        while !matches!(child.try_wait(), Ok(Some(_))) {
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("replica {} did not exit within 30 s of {signal}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = None;
    }

    fn spool_bytes(&self) -> u64 {
        std::fs::read_dir(&self.spool)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "spool"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Terminates the backends whose client ports are `ports` (one replica's connections); returns how many.
async fn terminate(admin: &PgPool, ports: &[i32]) -> i64 {
    sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE client_port = ANY($1) AND pid <> pg_backend_pid()",
    )
    .bind(ports)
    .fetch_one(admin)
    .await
    .expect("terminate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_three_replicas_lose_one_lose_nothing() {
    let _serial = crate::SERIAL.lock().await;
    let pg = Cluster::start();
    let dir = crate::scratch_dir();
    // A resync's first call answers slowly, so the three start-up schedules overlap on the corp's lock.
    let fake = FakeWecom::start(
        Duration::from_millis(30),
        &[("get_follow_user_list", Duration::from_secs(2))],
    )
    .await;
    let proxies = [
        PgProxy::start(pg.port).await,
        PgProxy::start(pg.port).await,
        PgProxy::start(pg.port).await,
    ];
    // Migrations first, so three replicas starting at once do not race to create the database.
    let direct = pg.url("wecom");
    let out = Command::new(BIN)
        .args(["migrate"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &direct)
        .output()
        .expect("migrate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let via = |p: &PgProxy| format!("postgres://postgres@127.0.0.1:{}/wecom", p.port);
    let mut a = Replica::start("a", via(&proxies[0]), &dir, &fake.base_url());
    let b = Replica::start("b", via(&proxies[1]), &dir, &fake.base_url());
    let mut c = Replica::start("c", via(&proxies[2]), &dir, &fake.base_url());
    for r in [&a, &b, &c] {
        r.wait_ready();
    }
    let (lb, lb_task) = round_robin(vec![a.port, b.port, c.port]).await;
    let admin = PgPool::connect(&pg.url("postgres")).await.expect("admin");

    let cbs = callbacks(1_500 * scale());
    let spread = Duration::from_secs(20);
    let b_ports = Arc::new(Mutex::new(Vec::new()));
    let faults = {
        let b_ports = b_ports.clone();
        let (pause_a, cut_a) = (proxies[0].paused.clone(), proxies[0].cut.clone());
        let ports_b = proxies[1].upstream_ports.clone();
        let admin = admin.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            // A's PostgreSQL freezes: A spools what it acknowledges from now on.
            pause_a.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(4)).await;
            let killed_a = tokio::task::spawn_blocking(move || {
                a.signal("-KILL");
                a
            })
            .await
            .expect("kill a");
            // Its connections end without what they held, as if its database never answered again.
            cut_a.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(2)).await;
            // B loses its database connections, three times.
            let mut terminated = 0;
            for _ in 0..3 {
                let ports: Vec<i32> = ports_b
                    .lock()
                    .expect("ports")
                    .iter()
                    .map(|p| i32::from(*p))
                    .collect();
                terminated += terminate(&admin, &ports).await;
                b_ports.lock().expect("ports").extend(ports);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // C is stopped and started again on the same port and spool.
            let restarted_c = tokio::task::spawn_blocking(move || {
                c.signal("-TERM");
                c.spawn();
                c.wait_ready();
                c
            })
            .await
            .expect("restart c");
            (killed_a, restarted_c, terminated)
        })
    };
    let started = Instant::now();
    // No keep-alive: each callback its own connection, so the round robin spreads callbacks over replicas.
    let outcomes = drive_with(lb, &cbs, 32, spread, false).await;
    let elapsed = started.elapsed();
    let (a, c, terminated) = faults.await.expect("fault schedule");
    eprintln!("{}", summary("R5 (replicas)", &outcomes));
    assert!(terminated > 0, "B's backends were really terminated");

    // A died with acknowledged callbacks in its spool; a survivor drains it.
    let stranded = a.spool_bytes();
    assert!(stranded > 0, "A was killed with a non-empty spool");
    let drain = b
        .command(&["drain", "--spool-dir"], &direct)
        .arg(&a.spool)
        .output()
        .expect("drain");
    let report = String::from_utf8_lossy(&drain.stdout).to_string();
    assert!(
        drain.status.success(),
        "drain failed: {report}{}",
        String::from_utf8_lossy(&drain.stderr)
    );
    eprintln!(
        "R5: A was killed with {stranded} spooled bytes; {}",
        report.trim()
    );
    assert_eq!(a.spool_bytes(), 0, "the drain emptied A's spool");

    let pool = PgPool::connect(&direct).await.expect("connect");
    check(
        &pool,
        &pg.url("wecom_reference"),
        &cbs,
        &outcomes,
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("R5: checker failed: {e}"));
    assert_fast(&outcomes);
    assert!(
        outcomes.iter().all(|o| o.status == Some(200)),
        "R5: with the spool every callback is acknowledged"
    );
    let acked = outcomes.iter().filter(|o| o.status == Some(200)).count();
    eprintln!(
        "R5: {acked} acknowledged in {elapsed:.1?} ({:.0}/s) through 3 replicas",
        acked as f64 / elapsed.as_secs_f64()
    );

    // One resync for the corp across the three replicas and C's restart.
    let runs: Vec<(String,)> =
        sqlx::query_as("SELECT status FROM wecom_resync_runs WHERE corp_id = $1")
            .bind(CORP)
            .fetch_all(&pool)
            .await
            .expect("runs");
    assert_eq!(runs, vec![("done".to_owned(),)], "exactly one resync ran");
    assert_eq!(
        fake.calls("/cgi-bin/externalcontact/get_follow_user_list"),
        1,
        "only the one resync listed the follow users"
    );
    // The limiter held across the replicas: 9 workers, never more than the cap in flight per API.
    let details = fake.calls("/cgi-bin/externalcontact/get");
    assert!(details > 0, "the enrichment jobs called WeCom");
    let (api, most) = fake.max_in_flight_any();
    eprintln!(
        "R5: {details} externalcontact/get calls; at most {most} in flight at once ({api}), cap {API_CONCURRENCY}"
    );
    assert!(most <= API_CONCURRENCY, "{most} concurrent calls of {api}");
    for r in [&b, &c] {
        crate::assert_log_clean(&r.log);
    }
    // Three projectors applied the same backlog (A's drained callbacks among it) without a deadlock.
    for r in [&a, &b, &c] {
        let log = std::fs::read_to_string(&r.log).expect("log");
        assert!(
            !log.contains("deadlock detected"),
            "replica {} hit a deadlock",
            r.name
        );
    }
    lb_task.abort();
    pool.close().await;
    admin.close().await;
    drop((a, b, c, proxies));
    let _ = b_ports;
    let _ = std::fs::remove_dir_all(dir);
}
