//! The pieces every fault-injection scenario shares: the service (a real process, or in-process for the
//! checker's own check), a WeCom-like driver, and the checker.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use secrecy::SecretString;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use wecom_callback::app::{AppConfig, AppKind};
use wecom_callback::config::Settings;
use wecom_callback::store::{self, NewEvent, projections};
use wecom_callback::wecom::crypto::{self, AesKey};

pub const TOKEN: &str = "QDG6eK";
pub const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
pub const CORP: &str = "wx5823bf96d3bd56c7";
/// A string put in every plaintext, which must never show up in logs.
pub const CANARY: &str = "CANARY-7f3a9c";
const BIN: &str = env!("CARGO_BIN_EXE_wecom-callback");

/// Scale factor for the scenario sizes (`WECOM_FAULT_SCALE`, default 1; scripts/faults raises it).
pub fn scale() -> usize {
    std::env::var("WECOM_FAULT_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One distinct callback as WeCom would send it.
pub struct Callback {
    pub key: String,
    pub query: String,
    pub body: String,
}

const CHANGES: [&str; 5] = [
    "add_external_contact",
    "edit_external_contact",
    "del_follow_user",
    "add_half_external_contact",
    "del_external_contact",
];

/// `n` distinct contact callbacks over a few staff and customers, with event times spread over minutes.
pub fn callbacks(n: usize) -> Vec<Callback> {
    let key = AesKey::from_encoding_aes_key(KEY).expect("key");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    (0..n)
        .map(|i| {
            let xml = format!(
                "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
                 <CreateTime>{t}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
                 <Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[{ct}]]></ChangeType>\
                 <UserID><![CDATA[staff{s}]]></UserID><ExternalUserID><![CDATA[wm{c}]]></ExternalUserID>\
                 <State><![CDATA[{CANARY}-{i}]]></State></xml>",
                t = 1_700_000_000 + (i as u64 * 7) % 600,
                ct = CHANGES[i % CHANGES.len()],
                s = i % 5,
                c = (i / 3) % 40,
            );
            let encrypt = crypto::encrypt(&key, &mut rand::rng(), xml.as_bytes(), CORP.as_bytes());
            let nonce = format!("{}", rand::random::<u32>());
            let sig = crypto::signature(TOKEN, &now.to_string(), &nonce, &encrypt);
            Callback {
                key: hex::encode(Sha256::digest(xml.as_bytes())),
                query: format!("msg_signature={sig}&timestamp={now}&nonce={nonce}"),
                body: format!(
                    "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[1]]></AgentID></xml>"
                ),
            }
        })
        .collect()
}

/// The final answer WeCom got for one callback.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub key: String,
    /// The HTTP status of the answer WeCom accepted, or None if it gave up.
    pub status: Option<u16>,
    /// The slowest answered attempt.
    pub slowest: Duration,
    pub attempts: u32,
}

/// Sends every callback like WeCom: 5 s timeout per attempt, retries on timeout or connection error (not
/// on an HTTP error answer), paced so the whole run takes about `spread`.
pub async fn drive(
    port: u16,
    callbacks: &[Callback],
    connections: usize,
    spread: Duration,
) -> Vec<Outcome> {
    drive_with(port, callbacks, connections, spread, true).await
}

/// Like [`drive`]; without `keep_alive` every request opens its own connection (so a TCP load balancer in
/// front spreads requests, not connections).
pub async fn drive_with(
    port: u16,
    callbacks: &[Callback],
    connections: usize,
    spread: Duration,
    keep_alive: bool,
) -> Vec<Outcome> {
    let client = wecom_callback::tls::client_builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(if keep_alive { connections } else { 0 })
        .build()
        .expect("client");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let interval = spread / callbacks.len().max(1) as u32;
    let shared: Arc<Vec<(String, String, String)>> = Arc::new(
        callbacks
            .iter()
            .map(|c| (c.key.clone(), c.query.clone(), c.body.clone()))
            .collect(),
    );
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let client = client.clone();
            let next = next.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((key, query, body)) = shared.get(i) else {
                        return out;
                    };
                    tokio::time::sleep_until((started + interval * i as u32).into()).await;
                    let give_up = Instant::now() + Duration::from_secs(60);
                    let mut outcome = Outcome {
                        key: key.clone(),
                        status: None,
                        slowest: Duration::ZERO,
                        attempts: 0,
                    };
                    while Instant::now() < give_up {
                        outcome.attempts += 1;
                        let t = Instant::now();
                        let r = client
                            .post(format!("http://127.0.0.1:{port}/callback/main?{query}"))
                            .body(body.clone())
                            .send()
                            .await;
                        match r {
                            Ok(resp) => {
                                let status = resp.status().as_u16();
                                let _ = resp.bytes().await;
                                outcome.slowest = outcome.slowest.max(t.elapsed());
                                outcome.status = Some(status);
                                break;
                            }
                            // Timeout or connection failure: WeCom retries.
                            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                        }
                    }
                    out.push(outcome);
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("driver worker"));
    }
    all
}

/// A service under test.
pub enum Service {
    Process {
        child: Child,
        port: u16,
        db_url: String,
        spool: PathBuf,
        log: PathBuf,
    },
    InProcess {
        port: u16,
    },
}

impl Service {
    /// The real binary, as deployed: configuration from the environment, logs at info to `log`.
    pub fn spawn(db_url: &str, spool: &std::path::Path, log: &std::path::Path) -> Service {
        let port = free_port();
        let child = Self::start_process(port, db_url, spool, log);
        let s = Service::Process {
            child,
            port,
            db_url: db_url.to_owned(),
            spool: spool.to_owned(),
            log: log.to_owned(),
        };
        s.wait_ready();
        s
    }

    fn start_process(
        port: u16,
        db_url: &str,
        spool: &std::path::Path,
        log: &std::path::Path,
    ) -> Child {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        Command::new(BIN)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WECOM_TOKEN", TOKEN)
            .env("WECOM_ENCODING_AES_KEY", KEY)
            .env("WECOM_CORP_ID", CORP)
            .env("WECOM_APP_NAME", "main")
            .env("DATABASE_URL", db_url)
            .env("WECOM_LISTEN", format!("127.0.0.1:{port}"))
            .env("WECOM_SPOOL_DIR", spool)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start the service")
    }

    /// In this process, with settings a file cannot give (the test-only fault).
    pub async fn in_process(
        db_url: &str,
        spool: &std::path::Path,
        fault_ack_before_commit: bool,
    ) -> Service {
        // The defaults, plus a spool, a WeCom API that refuses connections and no background resync.
        let mut settings = Settings::defaults(
            vec![AppConfig {
                name: "main".into(),
                kind: AppKind::SelfBuilt,
                token: SecretString::from(TOKEN),
                aes_key: AesKey::from_encoding_aes_key(KEY).expect("key"),
                receive_ids: vec![CORP.into()],
                secret: None,
            }],
            db_url,
        )
        .expect("the defaults are valid");
        settings.http.listen = "127.0.0.1:0".parse().expect("addr");
        settings.http.workers = 2;
        settings.spool.dir = Some(spool.to_owned());
        settings.api.base_url = "http://127.0.0.1:9".into();
        settings.api.worker_concurrency = 1;
        settings.api.max_attempts = 3;
        settings.api.resync_interval = Duration::ZERO;
        settings.api.resync_pause = Duration::ZERO;
        settings.fault_ack_before_commit = fault_ack_before_commit;
        wecom_callback::store::ensure_database_exists(&settings.database)
            .await
            .expect("database");
        let pool = store::pool(&settings.database).expect("pool");
        store::migrate(&pool).await.expect("migrate");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let app = wecom_callback::http::server::Application::build_with(settings, pool, listener)
            .expect("build");
        let port = app.port();
        tokio::spawn(app.run_until_stopped());
        Service::InProcess { port }
    }

    pub fn port(&self) -> u16 {
        match self {
            Service::Process { port, .. } | Service::InProcess { port } => *port,
        }
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port())) {
                use std::io::{Read, Write};
                let _ =
                    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "service did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends a signal to the service process and waits for it to exit.
    pub fn stop(&mut self, signal: &str) {
        if let Service::Process { child, .. } = self {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
            // A stop that hangs fails the scenario instead of hanging the suite.
            let started = Instant::now();
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if started.elapsed() > Duration::from_secs(30) {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the service did not exit within 30 s of {signal}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Starts the process again on the same port, database and spool.
    pub fn restart(&mut self) {
        if let Service::Process {
            child,
            port,
            db_url,
            spool,
            log,
        } = self
        {
            *child = Self::start_process(*port, db_url, spool, log);
        }
        self.wait_ready();
    }

    /// Resident memory of the service process in kB.
    pub fn rss_kb(&self) -> Option<u64> {
        let Service::Process { child, .. } = self else {
            return None;
        };
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop("-KILL");
    }
}

/// The checker: every callback answered success is in `wecom_events` exactly once; nothing is stored that
/// was not sent; the projections equal those of applying all stored events in time order.
pub async fn check(
    pool: &PgPool,
    reference_db_url: &str,
    callbacks: &[Callback],
    outcomes: &[Outcome],
    patience: Duration,
) -> Result<(), String> {
    let sent: HashSet<&str> = callbacks.iter().map(|c| c.key.as_str()).collect();
    let acked: HashSet<&str> = outcomes
        .iter()
        .filter(|o| o.status == Some(200))
        .map(|o| o.key.as_str())
        .collect();
    // The spool drains and the projector applies in the background: give them time.
    let deadline = Instant::now() + patience;
    let rows: Vec<(String, String, bool)> = loop {
        let rows: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT dedupe_key, message, NOT EXISTS (SELECT 1 FROM wecom_events_pending q WHERE q.id = e.id) \
             FROM wecom_events e ORDER BY event_time, dedupe_key",
        )
        .fetch_all(pool)
        .await
        .map_err(|e| e.to_string())?;
        let stored: HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let complete = acked.iter().all(|k| stored.contains(k)) && rows.iter().all(|r| r.2);
        if complete || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let stored: HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    if stored.len() != rows.len() {
        return Err(format!(
            "{} rows for {} keys: a callback stored twice",
            rows.len(),
            stored.len()
        ));
    }
    let lost: Vec<&&str> = acked.iter().filter(|k| !stored.contains(**k)).collect();
    if !lost.is_empty() {
        return Err(format!(
            "{} callbacks answered success are not stored (lost)",
            lost.len()
        ));
    }
    if let Some(extra) = stored.iter().find(|k| !sent.contains(**k)) {
        return Err(format!("stored a callback that was never sent: {extra}"));
    }
    if rows.iter().any(|r| !r.2) {
        return Err("stored events left unapplied".into());
    }

    // Reference: the same events applied in time order into a fresh database.
    let admin = PgPool::connect(&reference_db_url.replace("/wecom_reference", "/postgres"))
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query("DROP DATABASE IF EXISTS wecom_reference")
        .execute(&admin)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query("CREATE DATABASE wecom_reference")
        .execute(&admin)
        .await
        .map_err(|e| e.to_string())?;
    let reference = PgPool::connect(reference_db_url)
        .await
        .map_err(|e| e.to_string())?;
    store::migrate(&reference)
        .await
        .map_err(|e| e.to_string())?;
    for (key, message, _) in &rows {
        let m = wecom_callback::wecom::message::parse_message(message.as_bytes())
            .map_err(|e| e.to_string())?;
        let ev = NewEvent {
            app: "main".into(),
            dedupe_key: key.clone(),
            receive_id: CORP.into(),
            corp_id: m.corp_id().map(str::to_owned),
            event_time: m
                .event_time()
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0)),
            msg_type: m.msg_type().map(str::to_owned),
            event: m.event().map(str::to_owned),
            info_type: None,
            change_type: m.change_type().map(str::to_owned),
            message: message.clone(),
            fields: serde_json::Value::Object(m.fields().clone()),
            req_timestamp: "0".into(),
            req_nonce: "0".into(),
            msg_signature: "0".into(),
            received_at: None,
        };
        store::insert_events(&reference, &[&ev])
            .await
            .map_err(|e| e.to_string())?;
    }
    while projections::apply_pending(&reference, 1000)
        .await
        .map_err(|e| e.to_string())?
        > 0
    {}
    let expected = crate::snapshot::snapshot(&reference).await;
    let got = crate::snapshot::snapshot(pool).await;
    reference.close().await;
    if expected != got {
        return Err("the projections differ from applying every stored event in time order".into());
    }
    Ok(())
}

/// Asserts the latency bound: no answer slower than 4.5 s.
pub fn assert_fast(outcomes: &[Outcome]) {
    let slowest = outcomes.iter().map(|o| o.slowest).max().unwrap_or_default();
    assert!(
        slowest <= Duration::from_millis(4_500),
        "an answer took {slowest:?}"
    );
}

/// Summary line for the test log.
pub fn summary(name: &str, outcomes: &[Outcome]) -> String {
    let ok = outcomes.iter().filter(|o| o.status == Some(200)).count();
    let retried = outcomes.iter().filter(|o| o.attempts > 1).count();
    let slowest = outcomes.iter().map(|o| o.slowest).max().unwrap_or_default();
    format!(
        "{name}: {} callbacks, {ok} success, {retried} needed a retry, slowest answer {slowest:?}",
        outcomes.len()
    )
}
