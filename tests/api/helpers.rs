//! Test harness: every test gets its own database (dropped afterwards) and its own server on a random
//! loopback port, and talks to it over real HTTP.

use std::net::TcpListener;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::SecretString;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, PgPool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wecom_callback::app::{AppConfig, AppKind};
use wecom_callback::config::{LogFormat, Settings};
use wecom_callback::http::server::Application;
use wecom_callback::sync::client::Credentials;
use wecom_callback::wecom::crypto::{self, AesKey};

/// The server every test talks to, and its database.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub pool: PgPool,
    pub client: reqwest::Client,
    db_name: String,
    admin_options: PgConnectOptions,
}

/// One configured app as the tests know it (with its secrets in clear, to sign and encrypt like WeCom).
#[derive(Clone)]
pub struct TestAppConfig {
    pub name: &'static str,
    pub kind: AppKind,
    pub token: &'static str,
    pub encoding_aes_key: &'static str,
    pub receive_id: &'static str,
}

impl TestAppConfig {
    pub fn key(&self) -> AesKey {
        AesKey::from_encoding_aes_key(self.encoding_aes_key).expect("valid test key")
    }

    fn to_config(&self) -> AppConfig {
        AppConfig {
            name: self.name.to_owned(),
            kind: self.kind,
            token: SecretString::from(self.token),
            aes_key: self.key(),
            receive_ids: vec![self.receive_id.to_owned()],
            secret: None,
        }
    }
}

/// A self-built app with the key, token and corpid of WeCom's own worked example (vector official-qdg6ek).
pub const MAIN: TestAppConfig = TestAppConfig {
    name: "main",
    kind: AppKind::SelfBuilt,
    token: "QDG6eK",
    encoding_aes_key: "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
    receive_id: "wx5823bf96d3bd56c7",
};

/// A third-party suite's instruction URL (answers `success`).
pub const SUITE: TestAppConfig = TestAppConfig {
    name: "suite",
    kind: AppKind::SuiteInstruction,
    token: "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo",
    encoding_aes_key: "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt",
    receive_id: "ww4asffe99e54c0f4c",
};

/// The read API's bearer token in tests.
/// A fake WeCom API's successful answer: `body` with `errcode` 0 and `errmsg` "ok".
pub fn ok(body: serde_json::Value) -> wiremock::ResponseTemplate {
    let mut b = body;
    b["errcode"] = serde_json::json!(0);
    b["errmsg"] = serde_json::json!("ok");
    wiremock::ResponseTemplate::new(200).set_body_json(b)
}

/// The API credentials of [`MAIN`]'s corp, with the secret `s`.
pub fn creds() -> Credentials {
    Credentials {
        corp_id: MAIN.receive_id.into(),
        secret: SecretString::from("s"),
        source: Default::default(),
    }
}

pub const API_TOKEN: &str = "test-api-token-0123456789";

/// Base URL of the PostgreSQL server the tests use (any database on it; tests create their own).
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Settings as `serve` would build them from the defaults, for the given apps and database, with what the
/// tests need different: a small pool (many test databases share one server), the read API on, no spool, a
/// WeCom API that refuses connections, and jobs that die fast without background resyncs.
pub fn test_settings(apps: &[TestAppConfig], database_url: &str) -> Settings {
    let mut s = Settings::defaults(
        apps.iter().map(TestAppConfig::to_config).collect(),
        database_url,
    )
    .expect("the defaults are valid");
    s.http.listen = "127.0.0.1:0".parse().expect("addr");
    s.database.max_connections = 8;
    s.http.workers = 2;
    s.store.max_in_flight_batches = 2;
    s.store.queue_capacity = 4096;
    s.api_token = Some(SecretString::from(API_TOKEN));
    s.spool.max_bytes = 1 << 20;
    s.api.base_url = "http://127.0.0.1:9".into();
    s.api.worker_concurrency = 1;
    s.api.max_attempts = 3;
    s.api.resync_interval = Duration::ZERO;
    s.api.resync_pause = Duration::ZERO;
    s
}

fn init_logs() {
    if std::env::var("TEST_LOG").is_ok() {
        wecom_callback::telemetry::init(LogFormat::Text);
    }
}

/// Spawns the service with MAIN and SUITE configured and the default settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[MAIN, SUITE], |_| {}).await
}

/// Spawns the service with the given apps; `tweak` may change any setting before start.
pub async fn spawn_app_with(apps: &[TestAppConfig], tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let (test_app, app) = build_app_with(apps, tweak).await;
    tokio::spawn(app.run_until_stopped());
    test_app
}

/// Like [`spawn_app_with`], but leaves running the built service to the caller (to choose its shutdown).
pub async fn build_app_with(
    apps: &[TestAppConfig],
    tweak: impl FnOnce(&mut Settings),
) -> (TestApp, Application) {
    init_logs();
    let admin_options: PgConnectOptions = admin_url().parse().expect("TEST_DATABASE_URL");
    let db_name = format!("wecom_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = admin_options
        .clone()
        .connect()
        .await
        .expect("PostgreSQL must be running for the tests (see README: .ci/run starts it)");
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{db_name}\""
        )))
        .await
        .expect("create test database");
    admin.close().await.expect("close");

    let db_url = database_url_for(&db_name);
    let mut settings = test_settings(apps, &db_url);
    tweak(&mut settings);

    let pool = wecom_callback::store::pool(&settings.database).expect("pool");
    // The test's own view of the database, independent of what the app's settings say.
    let test_pool = PgPool::connect_with(admin_options.clone().database(&db_name))
        .await
        .expect("connect test pool");
    wecom_callback::store::migrate(&test_pool)
        .await
        .expect("migrate");

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let app = Application::build_with(settings, pool, listener).expect("build app");
    let port = app.port();

    let test_app = TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        pool: test_pool,
        // Idle connections are dropped well before the server's keep-alive (5 s) closes them: reusing one
        // the server is closing at that moment fails the request (hyper's IncompleteMessage), a test flake.
        client: wecom_callback::tls::client_builder()
            .timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .expect("client"),
        db_name,
        admin_options,
    };
    (test_app, app)
}

/// URL of database `name` on the test server.
pub fn database_url_for(name: &str) -> String {
    let admin = admin_url();
    match admin.rfind('/') {
        Some(i) if admin[..i].contains("://") && i > admin.find("://").unwrap_or(0) + 2 => {
            format!("{}/{name}", &admin[..i])
        }
        _ => format!("{admin}/{name}"),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        drop_database(&self.db_name, &self.admin_options);
    }
}

/// A request as WeCom would send it.
pub struct SignedCallback {
    pub query: String,
    pub body: String,
    pub encrypt: String,
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
}

/// Encrypts `plaintext` for `app` with a fresh random prefix and signs it, like WeCom.
pub fn sign_callback(app: &TestAppConfig, plaintext: &str, timestamp: i64) -> SignedCallback {
    sign_callback_with(app, plaintext, app.receive_id, timestamp)
}

/// Like [`sign_callback`], with any receive id inside the ciphertext.
pub fn sign_callback_with(
    app: &TestAppConfig,
    plaintext: &str,
    receive_id: &str,
    timestamp: i64,
) -> SignedCallback {
    let encrypt = crypto::encrypt(
        &app.key(),
        &mut rand::rng(),
        plaintext.as_bytes(),
        receive_id.as_bytes(),
    );
    sign_encrypted(app, &encrypt, timestamp)
}

/// Signs an already encrypted text (or anything else) with the app's token.
pub fn sign_encrypted(app: &TestAppConfig, encrypt: &str, timestamp: i64) -> SignedCallback {
    let nonce = format!("{}", rand::random::<u32>());
    let timestamp = timestamp.to_string();
    let signature = crypto::signature(app.token, &timestamp, &nonce, encrypt);
    SignedCallback {
        query: format!("msg_signature={signature}&timestamp={timestamp}&nonce={nonce}"),
        body: envelope(app.receive_id, encrypt),
        encrypt: encrypt.to_owned(),
        timestamp,
        nonce,
        signature,
    }
}

/// The outer XML WeCom POSTs.
pub fn envelope(to_user: &str, encrypt: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{to_user}]]></ToUserName>\n<Encrypt><![CDATA[{encrypt}]]></Encrypt>\n<AgentID><![CDATA[218]]></AgentID>\n</xml>"
    )
}

/// Percent-encodes a query value the way WeCom does (every reserved character, so '+' becomes %2B).
pub fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl TestApp {
    pub fn url(&self, app: &str) -> String {
        format!("{}/callback/{app}", self.address)
    }

    /// POSTs a signed callback to `app`.
    pub async fn post(&self, app: &str, cb: &SignedCallback) -> reqwest::Response {
        self.post_raw(app, &cb.query, cb.body.clone()).await
    }

    /// Delivers `xml` as WeCom would to the app `main` (signed and encrypted for [`MAIN`], timestamped now)
    /// and asserts it was accepted (200).
    pub async fn deliver(&self, xml: &str) {
        let status = self
            .post("main", &sign_callback(&MAIN, xml, unix_now()))
            .await
            .status()
            .as_u16();
        assert_eq!(status, 200, "the callback was accepted");
    }

    pub async fn post_raw(&self, app: &str, query: &str, body: String) -> reqwest::Response {
        self.client
            .post(format!("{}?{query}", self.url(app)))
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path_and_query}", self.address))
            .send()
            .await
            .expect("request")
    }

    /// The URL of this test's database (for the CLI).
    pub fn database_url(&self) -> String {
        database_url_for(&self.db_name)
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM wecom_events")
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    /// Sends raw bytes over TCP and returns the status code and body of the reply.
    pub async fn raw_http(&self, request: &[u8]) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect");
        stream.write_all(request).await.expect("write");
        read_reply(&mut stream).await
    }
}

/// Reads one HTTP/1.1 reply (status and body) from a stream, however the server frames it.
pub async fn read_reply(stream: &mut tokio::net::TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if reply_complete(&buf) == Some(true) {
                        break;
                    }
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn reply_complete(buf: &[u8]) -> Option<bool> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    Some(body.len() >= len)
}

/// Waits for a child process to exit; kills it and panics if it has not within `secs` (a stop that hangs must
/// fail the test, never hang the suite).
pub fn wait_exit(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if started.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not exit within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// Waiting and cleaning up, shared by every test file (kept together here, apart from the settings code).

/// How long a poll waits before the test fails (generous: two cores shared with other builds).
pub const POLL_TIMEOUT: Duration = Duration::from_secs(15);

/// Calls `check` every `every` until it returns `Ok`, and returns that value; after `timeout` panics with
/// `what` and the last `Err` (what was seen instead). Every wait in the tests goes through here, so none can
/// hang the suite.
pub async fn poll<T, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Fut,
) -> T
where
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let started = std::time::Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(seen) => assert!(
                started.elapsed() < timeout,
                "{what}: not reached within {timeout:?}; last seen: {seen}"
            ),
        }
        tokio::time::sleep(every).await;
    }
}

/// Waits until the count query `sql` returns `want`.
pub async fn wait_for_count(pool: &PgPool, sql: &'static str, want: i64) {
    poll(
        &format!("{sql} = {want}"),
        POLL_TIMEOUT,
        Duration::from_millis(100),
        || async move {
            let n: i64 = sqlx::query_scalar(sql)
                .fetch_one(pool)
                .await
                .expect("query");
            if n == want {
                Ok(())
            } else {
                Err(n.to_string())
            }
        },
    )
    .await;
}

/// Waits until the service's background projector has applied every stored event. For tests about the
/// background work itself (start-up recovery, spool drain, enrichment); a test about what a projection
/// computes calls [`apply_all_pending`] instead.
pub async fn wait_applied(pool: &PgPool) {
    wait_for_count(pool, "SELECT count(*) FROM wecom_events_pending", 0).await;
}

/// Applies every stored event now, in the test's own task, and returns how many it applied. Deterministic
/// where waiting for the background projector is not; the app should run with `run_projector = false` so
/// no concurrent applier holds rows (the applier skips locked rows).
pub async fn apply_all_pending(pool: &PgPool) -> usize {
    let mut total = 0;
    loop {
        let n = wecom_callback::store::projections::apply_pending(pool, 500)
            .await
            .expect("apply pending events");
        if n == 0 {
            return total;
        }
        total += n;
    }
}

/// Waits until `GET {base}/readyz` answers 2xx (a service started as a separate process).
pub async fn wait_ready(base: &str, timeout: Duration) {
    let client = wecom_callback::tls::client_builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let url = format!("{base}/readyz");
    poll("ready", timeout, Duration::from_millis(100), || {
        let (client, url) = (&client, &url);
        async move {
            match client.get(url).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(r.status().to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;
}

/// Drops the named test database when dropped, however the test ends (panics included).
pub struct DropDb {
    name: String,
    admin_options: PgConnectOptions,
}

impl DropDb {
    /// Guards database `name` on the test server ([`admin_url`]).
    pub fn new(name: impl Into<String>) -> DropDb {
        DropDb {
            name: name.into(),
            admin_options: admin_url().parse().expect("TEST_DATABASE_URL"),
        }
    }
}

impl Drop for DropDb {
    fn drop(&mut self) {
        drop_database(&self.name, &self.admin_options);
    }
}

/// Drops database `name`, forcing other sessions out. Drop runs inside a test's runtime, which cannot be
/// blocked on, so this uses a thread with its own runtime; errors are ignored (cleanup is best effort).
fn drop_database(name: &str, options: &PgConnectOptions) {
    let (name, options) = (name.to_owned(), options.clone());
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            if let Ok(mut admin) = options.connect().await {
                let _ = admin
                    .execute(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .await;
                let _ = admin.close().await;
            }
        });
    })
    .join();
}

/// A fresh database name on the test server, not created yet (for commands that create it themselves), with
/// its URL and the guard that drops it.
pub fn fresh_database() -> (DropDb, String) {
    let name = format!("wecom_test_{}", uuid::Uuid::new_v4().simple());
    let url = database_url_for(&name);
    (DropDb::new(name), url)
}
