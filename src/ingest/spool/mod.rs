//! The spool: a local, fsynced, append-only log of verified callbacks that could not be committed to
//! PostgreSQL in time. WeCom retries a callback only a few times within seconds (and perhaps not at all after an
//! HTTP error), so answering 503 during a database restart loses events; with the spool, `success` means
//! "committed to PostgreSQL, or fsynced to the spool and drained into PostgreSQL as soon as it is back".
//!
//! Layout: a directory (mode 0700) of segment files (mode 0600) named `{unix_ms}-{seq}.spool`, each holding
//! JSON lines of [`SpooledRequest`]. One writer thread appends and fsyncs (one fsync for all appends waiting at
//! that moment); the drainer seals the active segment, replays sealed segments into `wecom_events` (the dedupe
//! key makes a double delivery harmless) and deletes them. A torn last line from a crash is skipped.
//!
//! One process per directory: opening a spool takes an exclusive OS lock (`flock`) on `lock.pid` in it and writes
//! the holder's pid and host there, so a second process on the same directory (two replicas given the same
//! default, or `drain` run against a live replica's spool) refuses to start instead of draining the other's
//! segments. The kernel releases the lock when the holder dies, however it dies, so a dead replica's spool can
//! be finished by anyone (`wecom-callback drain --spool-dir PATH`).
//!
//! Here: the handle ([`Spool`]) and the segment format; the directory lock is in `lock`, the writer thread
//! (one fsync per group of appends) in `writer`.

mod lock;
mod writer;

pub use lock::LOCK_FILE;

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::ingest::spool::lock::lock_dir;
use crate::ingest::spool::writer::{Cmd, Writer};
use crate::tasks::{Tasks, panic_message};

/// A verified callback request as it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpooledRequest {
    /// The configured app it arrived for.
    pub app: String,
    /// The raw query string (signature, timestamp, nonce).
    pub query: String,
    /// The body (already checked to be UTF-8 XML).
    pub body: String,
    /// Arrival time, unix microseconds.
    pub received_at_us: i64,
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error(
        "the spool is full ({used} of {max} bytes): the database has been unreachable for long; \
         raise spool.max_bytes or bring PostgreSQL back"
    )]
    Full { used: u64, max: u64 },
    #[error("writing the spool failed: {0}")]
    Io(#[from] io::Error),
    #[error("the spool writer has stopped")]
    Stopped,
}

/// Why a spool could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another live process holds the directory's lock.
    #[error(
        "the spool directory {} is in use by {holder}: two processes must never share a spool (each would \
         drain and delete the other's files). Give every replica its own directory (WECOM_SPOOL_DIR / \
         --spool-dir); to finish a dead replica's spool, run `wecom-callback drain --spool-dir {}` once it \
         has stopped (the lock is released when its process ends)",
        dir.display(),
        dir.display()
    )]
    Locked {
        /// The spool directory.
        dir: PathBuf,
        /// Who holds it, as its lock file says (`pid 1234 on host x`), or `another process`.
        holder: String,
    },
    /// The directory or its lock file cannot be created or read.
    #[error(
        "cannot open the spool directory {}: {source}; set WECOM_SPOOL_DIR to a writable directory, or \
         disable the spool with [spool] enabled = false",
        dir.display()
    )]
    Io {
        /// The spool directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The writer thread's name in [`crate::tasks`].
const TASK: &str = "spool";

/// Handle to the spool. Cheap to clone.
#[derive(Clone)]
pub struct Spool {
    tx: mpsc::Sender<Cmd>,
    bytes: Arc<AtomicU64>,
    max_bytes: u64,
    dir: PathBuf,
    /// The directory's lock ([`LOCK_FILE`]), released when the last handle is dropped. Only handles hold it
    /// (not the writer thread): every append waits on a handle, so nothing acknowledged is written after the
    /// release, and a reopen right after the drop succeeds.
    _lock: Arc<File>,
}

fn segments(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "spool"))
        .collect();
    files.sort();
    Ok(files)
}

impl Spool {
    /// Opens (creating) the spool directory, takes its lock (see the module doc) and starts the writer thread,
    /// which ends when every handle is dropped. A panic in it is logged; appends then fail with
    /// [`SpoolError::Stopped`].
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, OpenError> {
        Self::start(dir, max_bytes, None)
    }

    /// Like [`Spool::open`], with the writer thread supervised as the critical task `spool` of `tasks` (see
    /// [`crate::tasks`]): if it panics, the service stops. When the token is cancelled the thread writes the
    /// appends already queued and ends.
    pub fn open_supervised(dir: &Path, max_bytes: u64, tasks: &Tasks) -> Result<Spool, OpenError> {
        Self::start(dir, max_bytes, Some(tasks))
    }

    fn start(dir: &Path, max_bytes: u64, tasks: Option<&Tasks>) -> Result<Spool, OpenError> {
        let io_err = |source| OpenError::Io {
            dir: dir.to_owned(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_err)?;
        // Before anything is read: a directory in use by another process is not ours to count or drain.
        let lock = Arc::new(lock_dir(dir)?);
        // Callbacks hold personal data: only the service user may read them.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err)?;
        let used: u64 = segments(dir)
            .map_err(io_err)?
            .iter()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        let bytes = Arc::new(AtomicU64::new(used));
        let (tx, rx) = mpsc::channel(4096);
        let writer = Writer {
            dir: dir.to_owned(),
            active: None,
            seq: 0,
            bytes: bytes.clone(),
            max_bytes,
        };
        let faults = tasks.map(Tasks::faults).unwrap_or_default();
        let supervised = tasks.is_some();
        let (done, thread_ended) = oneshot::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || {
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(move || {
                    faults.fire(TASK);
                    writer.run(rx)
                }))
                .map_err(|panic| format!("panicked: {}", panic_message(&*panic)));
                if let (Err(why), false) = (&outcome, supervised) {
                    tracing::error!(task = TASK, %why, "the spool writer thread failed; spooling is off");
                }
                let _ = done.send(outcome);
            })
            .map_err(io_err)?;
        if let Some(tasks) = tasks {
            let token = tasks.token();
            let stop = tx.clone();
            tasks.spawn_critical(TASK, async move {
                let mut thread_ended = thread_ended;
                let ended = tokio::select! {
                    ended = &mut thread_ended => ended,
                    () = token.cancelled() => {
                        // Queued after every append already accepted, so those are written first.
                        let _ = stop.send(Cmd::Stop).await;
                        thread_ended.await
                    }
                };
                ended.unwrap_or_else(|_| Err("the spool writer thread vanished".to_owned()))
            });
        }
        Ok(Spool {
            tx,
            bytes,
            max_bytes,
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    /// Appends one request and returns once it is fsynced.
    pub async fn append(&self, request: &SpooledRequest) -> Result<(), SpoolError> {
        let mut line = serde_json::to_vec(request).map_err(io::Error::other)?;
        line.push(b'\n');
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Append(line, reply))
            .await
            .map_err(|_| SpoolError::Stopped)?;
        rx.await.map_err(|_| SpoolError::Stopped)?
    }

    /// Closes the active segment and returns every sealed segment, oldest first.
    pub async fn seal(&self) -> io::Result<Vec<PathBuf>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Seal(reply))
            .await
            .map_err(|_| io::Error::other("spool writer stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("spool writer stopped"))?
    }

    /// Deletes a drained segment.
    pub fn remove(&self, segment: &Path) -> io::Result<()> {
        let len = fs::metadata(segment).map(|m| m.len()).unwrap_or(0);
        fs::remove_file(segment)?;
        self.bytes.fetch_sub(
            len.min(self.bytes.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        // Make the deletion durable too, so a crash cannot resurrect a drained segment... which would be
        // harmless anyway (deduplicated), only slower.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Bytes held in the spool now.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The configured cap.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Reads a sealed segment. Lines that do not parse (a torn write at a crash) are counted, not returned.
pub fn read_segment(path: &Path) -> io::Result<(Vec<SpooledRequest>, usize)> {
    let reader = BufReader::new(File::open(path)?);
    let mut ok = Vec::new();
    let mut bad = 0;
    for line in reader.split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice(&line) {
            Ok(r) => ok.push(r),
            Err(_) => bad += 1,
        }
    }
    Ok((ok, bad))
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use super::*;

    fn req(n: i64) -> SpooledRequest {
        SpooledRequest {
            app: "main".into(),
            query: format!("msg_signature=x&timestamp={n}&nonce=1"),
            body: format!("<xml><Encrypt>{n}\n</Encrypt></xml>"),
            received_at_us: n,
        }
    }

    #[tokio::test]
    async fn appends_seal_read_and_remove() {
        let dir = std::env::temp_dir().join(format!("spool-test-{}", uuid::Uuid::new_v4()));
        let spool = Spool::open(&dir, 1 << 20).expect("open");
        let appends = futures_util::future::join_all((0..50).map(|n| {
            let s = spool.clone();
            async move { s.append(&req(n)).await }
        }))
        .await;
        assert!(appends.iter().all(Result::is_ok));
        let mode = fs::metadata(&dir).expect("dir").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let segs = spool.seal().await.expect("seal");
        assert!(!segs.is_empty());
        let mut all = Vec::new();
        for s in &segs {
            assert_eq!(
                fs::metadata(s).expect("seg").permissions().mode() & 0o777,
                0o600
            );
            let (ok, bad) = read_segment(s).expect("read");
            assert_eq!(bad, 0);
            all.extend(ok);
        }
        all.sort_by_key(|r| r.received_at_us);
        assert_eq!(all, (0..50).map(req).collect::<Vec<_>>());
        for s in &segs {
            spool.remove(s).expect("remove");
        }
        assert_eq!(spool.bytes(), 0);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[tokio::test]
    async fn refuses_past_the_cap_and_survives_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("spool-test-{}", uuid::Uuid::new_v4()));
        let spool = Spool::open(&dir, 300).expect("open");
        spool.append(&req(1)).await.expect("fits");
        let mut full = false;
        for n in 2..10 {
            if let Err(SpoolError::Full { .. }) = spool.append(&req(n)).await {
                full = true;
                break;
            }
        }
        assert!(full, "the cap is enforced");
        let segs = spool.seal().await.expect("seal");
        // A crash mid-write leaves a partial last line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(&segs[0])
            .expect("open");
        f.write_all(b"{\"app\":\"ma").expect("write");
        drop(f);
        let (ok, bad) = read_segment(&segs[0]).expect("read");
        assert!(!ok.is_empty());
        assert_eq!(bad, 1);
        // Reopening counts what is on disk.
        drop(spool);
        let again = Spool::open(&dir, 300).expect("reopen");
        assert!(again.bytes() > 0);
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
