//! The acknowledgement policy (`Ingest::accept`) without HTTP: stored, duplicate, spooled after
//! `spool_after`, 503-worthy errors near the deadline.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use wecom_callback::ingest::spool::{Spool, read_segment};
use wecom_callback::ingest::writer::EventWriter;
use wecom_callback::ingest::{Ack, Arrival, Ingest, IngestError, Outcome, RawCallback};
use wecom_callback::tasks::{Faults, Tasks};
use wecom_callback::wecom::verify::{self, VerifiedCallback};

use crate::helpers::{
    MAIN, SignedCallback, sign_callback, spawn_app_with, test_settings, unix_now,
};

const CONTACT: &str = "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><CreateTime>1700000000</CreateTime><MsgType>event</MsgType><Event>change_external_contact</Event><ChangeType>add_external_contact</ChangeType><UserID>u</UserID><ExternalUserID>wmINGEST</ExternalUserID></xml>";

/// Signs, encrypts and verifies `xml` for MAIN, as the handler would before calling `accept`.
fn verified(xml: &str) -> (VerifiedCallback, SignedCallback) {
    let cb = sign_callback(&MAIN, xml, unix_now());
    let app = test_settings(&[MAIN], "postgres://x@127.0.0.1/x")
        .apps
        .remove(0);
    let query = verify::parse_query(&cb.query, false).expect("query");
    let v = verify::verify_callback(&app, query, cb.body.as_bytes(), unix_now(), 300)
        .expect("verified");
    (v, cb)
}

/// Background tasks for a writer outside a service; dropped with the test.
fn tasks() -> Tasks {
    Tasks::new(CancellationToken::new(), None, Faults::default())
}

fn writer(pool: PgPool) -> EventWriter {
    EventWriter::spawn(
        pool,
        &test_settings(&[MAIN], "postgres://x@127.0.0.1/x").store,
        &tasks(),
    )
}

/// A writer whose database refuses every connection.
fn dead_writer() -> EventWriter {
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let settings = test_settings(
        &[MAIN],
        &format!("postgres://postgres@127.0.0.1:{port}/nothing"),
    );
    writer(wecom_callback::store::pool(&settings.database).expect("pool"))
}

fn spool_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("wecom-ingest-{}", uuid::Uuid::new_v4()))
}

/// Accepts `xml` and says how long it took.
async fn accept(
    ingest: &Ingest,
    xml: &str,
) -> (Result<Ack, IngestError>, Duration, SignedCallback) {
    let (v, cb) = verified(xml);
    let raw = RawCallback {
        app: "main",
        query: &cb.query,
        body: cb.body.as_bytes(),
    };
    let started = Instant::now();
    let result = ingest.accept(&v, raw, Arrival::now()).await;
    (result, started.elapsed(), cb)
}

#[tokio::test]
async fn ingest_stores_then_acknowledges_duplicates_and_flags_unknown_types() {
    let app = spawn_app_with(&[MAIN], |_| {}).await;
    let ingest = Ingest::new(
        writer(app.pool.clone()),
        None,
        Duration::from_millis(2_500),
        Duration::from_millis(4_000),
    );
    let (first, ..) = accept(&ingest, CONTACT).await;
    assert_eq!(
        first.expect("stored"),
        Ack::Stored {
            unknown_type: false
        }
    );
    // WeCom's retry: the same plaintext, freshly encrypted.
    let (again, ..) = accept(&ingest, CONTACT).await;
    let again = again.expect("duplicate");
    assert_eq!(again, Ack::Duplicate);
    assert_eq!(again.outcome().as_str(), "duplicate");

    let novel = "<xml><ToUserName>wx5823bf96d3bd56c7</ToUserName><CreateTime>1</CreateTime><MsgType>event</MsgType><Event>brand_new_event</Event></xml>";
    let (novel, ..) = accept(&ingest, novel).await;
    let novel = novel.expect("stored");
    assert_eq!(novel, Ack::Stored { unknown_type: true });
    assert_eq!(novel.outcome(), Outcome::UnknownType);
    assert_eq!(app.event_count().await, 2);
}

#[tokio::test]
async fn ingest_spools_after_spool_after_when_the_database_is_down() {
    let dir = spool_dir();
    let spool = Spool::open(&dir, 1 << 20).expect("spool");
    let ingest = Ingest::new(
        dead_writer(),
        Some(spool.clone()),
        Duration::from_millis(1_000),
        Duration::from_millis(4_000),
    );
    let (result, elapsed, cb) = accept(&ingest, CONTACT).await;
    assert_eq!(result.expect("spooled"), Ack::Spooled);
    assert!(
        elapsed >= Duration::from_millis(1_000),
        "spooled early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(2_000),
        "spooled late: {elapsed:?}"
    );
    assert!(spool.bytes() > 0);
    // What the drain will verify again: the request exactly as it arrived.
    let segments = spool.seal().await.expect("seal");
    let (requests, torn) = read_segment(&segments[0]).expect("read");
    assert_eq!(torn, 0);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].app, "main");
    assert_eq!(requests[0].query, cb.query);
    assert_eq!(requests[0].body, cb.body);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn ingest_keeps_time_before_the_deadline_to_fsync() {
    let dir = spool_dir();
    let spool = Spool::open(&dir, 1 << 20).expect("spool");
    // spool_after past the deadline: the database gets until 500 ms before it, then the spool.
    let ingest = Ingest::new(
        dead_writer(),
        Some(spool),
        Duration::from_secs(10),
        Duration::from_millis(1_500),
    );
    let (result, elapsed, _) = accept(&ingest, CONTACT).await;
    assert_eq!(result.expect("spooled"), Ack::Spooled);
    assert!(elapsed >= Duration::from_millis(1_000), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1_500), "{elapsed:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn ingest_without_a_spool_is_unavailable_near_the_deadline() {
    let ingest = Ingest::new(
        dead_writer(),
        None,
        Duration::from_millis(300),
        Duration::from_millis(1_500),
    );
    let (result, elapsed, _) = accept(&ingest, CONTACT).await;
    let e = result.expect_err("no spool, no database");
    assert!(matches!(e, IngestError::Unavailable), "{e:?}");
    assert_eq!(e.outcome().as_str(), "db_unavailable");
    // The full deadline, not spool_after: there is nothing else to try.
    assert!(
        elapsed >= Duration::from_millis(1_400),
        "gave up early: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_millis(2_000), "{elapsed:?}");
}

#[tokio::test]
async fn ingest_with_a_full_spool_is_spool_full() {
    let dir = spool_dir();
    let spool = Spool::open(&dir, 10).expect("spool");
    let ingest = Ingest::new(
        dead_writer(),
        Some(spool.clone()),
        Duration::from_millis(100),
        Duration::from_millis(4_000),
    );
    let (result, elapsed, _) = accept(&ingest, CONTACT).await;
    let e = result.expect_err("over the cap");
    assert!(matches!(e, IngestError::SpoolFull(_)), "{e:?}");
    assert_eq!(e.outcome().as_str(), "spool_full");
    // Even with a short spool_after the database gets 500 ms.
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert_eq!(spool.bytes(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
