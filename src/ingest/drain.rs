//! Draining the spool into `wecom_events`: at start-up (what a crash or an outage left) and then every half
//! second while anything is spooled. A spooled request is verified again (without the replay window: it is
//! old by now, and it was fresh when it arrived), so a tampered spool file cannot inject events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::app::AppConfig;
use crate::ingest::spool::{self, Spool, SpooledRequest};
use crate::store::{self, NewEvent};
use crate::wecom::verify;

/// Rows per INSERT while draining.
const CHUNK: usize = 500;

/// Why a drain pass stopped early (the rest is retried on the next pass).
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("the database is still unavailable: {0}")]
    Database(#[from] sqlx::Error),
    #[error("reading the spool failed: {0}")]
    Io(#[from] std::io::Error),
}

/// `authorised`: every corp authorising a suite, which the data callback URLs (kinds `suite_data`, `agency`)
/// accept as receive ids (the request passed the per-suite check when it was received and spooled).
fn to_event(
    apps: &HashMap<String, AppConfig>,
    r: &SpooledRequest,
    authorised: &std::collections::HashSet<String>,
) -> Result<NewEvent, String> {
    let app = apps
        .get(&r.app)
        .ok_or_else(|| format!("app {:?} is no longer configured", r.app))?;
    let query = verify::parse_query(&r.query, false).map_err(|e| e.to_string())?;
    let none = std::collections::HashSet::new();
    let authorised = match app.kind {
        crate::app::AppKind::SuiteData | crate::app::AppKind::Agency => authorised,
        crate::app::AppKind::SelfBuilt | crate::app::AppKind::SuiteInstruction => &none,
    };
    let verified = verify::verify_callback_for(app, query, r.body.as_bytes(), 0, 0, authorised)
        .map_err(|e| format!("{} ({})", e.label(), e))?;
    let mut event = NewEvent::from(&verified);
    event.received_at = DateTime::from_timestamp_micros(r.received_at_us);
    Ok(event)
}

/// What one drain pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Segments read, stored and deleted.
    pub segments: usize,
    /// Requests re-verified and written (new plus already stored).
    pub written: usize,
    /// Of those, the ones not in `wecom_events` before.
    pub new: usize,
    /// Unreadable lines skipped (a write cut short by a crash: never acknowledged).
    pub torn: usize,
    /// Requests that no longer verify, kept in `rejected.jsonl`.
    pub rejected: usize,
}

/// Drains every sealed segment once (see [`drain_once_report`]). Returns how many requests were written (new or
/// duplicate).
pub async fn drain_once(
    spool: &Spool,
    pool: &PgPool,
    apps: &HashMap<String, AppConfig>,
) -> Result<usize, DrainError> {
    Ok(drain_once_report(spool, pool, apps).await?.written)
}

/// Drains every sealed segment once and says what it did. A segment is deleted only after its rows are
/// committed, so a pass cut short by an error repeats at most that segment's inserts (deduplicated).
pub async fn drain_once_report(
    spool: &Spool,
    pool: &PgPool,
    apps: &HashMap<String, AppConfig>,
) -> Result<DrainReport, DrainError> {
    let mut report = DrainReport::default();
    for segment in spool.seal().await? {
        // File I/O off the async runtime: a segment may be megabytes, and every fsync waits for the disk.
        let (requests, torn) = {
            let segment = segment.clone();
            blocking(move || spool::read_segment(&segment)).await?
        };
        report.torn += torn;
        if torn > 0 {
            tracing::warn!(segment = %segment.display(), lines = torn, "skipping unreadable spool lines (a write cut short by a crash; such requests were never acknowledged)");
        }
        let mut events = Vec::with_capacity(requests.len());
        let mut rejected = Vec::new();
        let authorised = if requests.iter().any(|r| {
            apps.get(&r.app).is_some_and(|a| {
                matches!(
                    a.kind,
                    crate::app::AppKind::SuiteData | crate::app::AppKind::Agency
                )
            })
        }) {
            store::corps::authorised_ids(pool, None).await?
        } else {
            std::collections::HashSet::new()
        };
        for r in requests {
            match to_event(apps, &r, &authorised) {
                Ok(e) => events.push(e),
                Err(why) => {
                    tracing::error!(segment = %segment.display(), app = %r.app, %why, "a spooled callback cannot be stored; kept in rejected.jsonl");
                    rejected.push(r);
                }
            }
        }
        for chunk in events.chunks(CHUNK) {
            let refs: Vec<&NewEvent> = chunk.iter().collect();
            let inserted = store::insert_events(pool, &refs).await?;
            report.new += inserted.iter().filter(|new| **new).count();
        }
        report.written += events.len();
        report.rejected += rejected.len();
        report.segments += 1;
        // Only once the rows are committed: a pass that stops above repeats the whole segment, and would
        // keep its rejected requests a second time. Keep them, then delete the segment.
        let (spool, segment) = (spool.clone(), segment.clone());
        blocking(move || {
            keep_rejected(&spool, &rejected)?;
            spool.remove(&segment)
        })
        .await?;
    }
    Ok(report)
}

/// Runs blocking file I/O on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, DrainError> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)??)
}

/// Appends `requests` to `rejected.jsonl` (mode 0600), leaving out lines it holds already: a crash between
/// keeping them and deleting their segment repeats the segment on the next pass.
fn keep_rejected(spool: &Spool, requests: &[SpooledRequest]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if requests.is_empty() {
        return Ok(());
    }
    let path = spool.dir().join("rejected.jsonl");
    let kept: std::collections::HashSet<Vec<u8>> = match std::fs::read(&path) {
        Ok(text) => text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for r in requests {
        let line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
        if !kept.contains(&line) {
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
    }
    if out.is_empty() {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(&out)?;
    f.sync_data()
}

/// Runs until `token` is cancelled: drains at start-up, then whenever something is spooled. A pass under way
/// is finished first (each segment is deleted only after its rows are committed, so a cut pass would only
/// repeat work, but finishing is cheap).
pub async fn run(
    spool: Spool,
    pool: PgPool,
    apps: HashMap<String, AppConfig>,
    committed: Arc<Notify>,
    token: CancellationToken,
) {
    let mut failures = 0u32;
    while !token.is_cancelled() {
        if spool.bytes() > 0 {
            match drain_once(&spool, &pool, &apps).await {
                Ok(0) => failures = 0,
                Ok(n) => {
                    failures = 0;
                    committed.notify_one();
                    tracing::info!(events = n, "spooled callbacks drained into the database");
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 || failures.is_multiple_of(120) {
                        tracing::warn!(error = %e, spooled_bytes = spool.bytes(), "spool not drained yet; retrying");
                    }
                }
            }
        }
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
