//! The spool's writer thread: appends to the active segment, one fsync for every append waiting at that
//! moment, and seals segments for the drainer.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

use crate::ingest::spool::{SpoolError, segments};

pub(super) type AppendReply = oneshot::Sender<Result<(), SpoolError>>;

pub(super) enum Cmd {
    Append(Vec<u8>, AppendReply),
    Seal(oneshot::Sender<io::Result<Vec<PathBuf>>>),
    /// End the thread (after the commands before it).
    Stop,
}

fn segment_name(seq: u64) -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{ms:013}-{seq:06}.spool")
}

pub(super) struct Writer {
    pub(super) dir: PathBuf,
    pub(super) active: Option<(PathBuf, File)>,
    pub(super) seq: u64,
    pub(super) bytes: Arc<AtomicU64>,
    pub(super) max_bytes: u64,
}

impl Writer {
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut pending_seal = None;
        let mut stop = false;
        while let Some(cmd) = rx.blocking_recv() {
            match cmd {
                Cmd::Stop => return,
                Cmd::Seal(reply) => {
                    let _ = reply.send(self.seal());
                }
                Cmd::Append(line, reply) => {
                    let mut batch = vec![(line, reply)];
                    // Everything already waiting shares one fsync.
                    while batch.len() < 1024 {
                        match rx.try_recv() {
                            Ok(Cmd::Append(l, r)) => batch.push((l, r)),
                            Ok(Cmd::Seal(r)) => {
                                pending_seal = Some(r);
                                break;
                            }
                            Ok(Cmd::Stop) => {
                                stop = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.write_batch(batch);
                    if let Some(r) = pending_seal.take() {
                        let _ = r.send(self.seal());
                    }
                    if stop {
                        return;
                    }
                }
            }
        }
    }

    fn write_batch(&mut self, batch: Vec<(Vec<u8>, AppendReply)>) {
        let mut accepted = Vec::with_capacity(batch.len());
        let mut buf = Vec::new();
        for (line, reply) in batch {
            let used = self.bytes.load(Ordering::Relaxed) + buf.len() as u64;
            if used + line.len() as u64 > self.max_bytes {
                let _ = reply.send(Err(SpoolError::Full {
                    used,
                    max: self.max_bytes,
                }));
                continue;
            }
            buf.extend_from_slice(&line);
            accepted.push(reply);
        }
        if accepted.is_empty() {
            return;
        }
        match self.append_durably(&buf) {
            Ok(()) => {
                self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
                for r in accepted {
                    let _ = r.send(Ok(()));
                }
            }
            Err(e) => {
                // The segment may now end in a partial line; start a fresh one so later appends stay parseable.
                self.active = None;
                let kind = e.kind();
                let msg = e.to_string();
                for r in accepted {
                    let _ = r.send(Err(SpoolError::Io(io::Error::new(kind, msg.clone()))));
                }
            }
        }
    }

    fn append_durably(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.active.is_none() {
            self.seq += 1;
            let path = self.dir.join(segment_name(self.seq));
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .mode(0o600)
                .open(&path)?;
            // The new directory entry must survive a crash as well as the data.
            File::open(&self.dir)?.sync_all()?;
            self.active = Some((path, file));
        }
        let Some((_, file)) = self.active.as_mut() else {
            return Err(io::Error::other("no active segment"));
        };
        file.write_all(buf)?;
        file.sync_data()
    }

    fn seal(&mut self) -> io::Result<Vec<PathBuf>> {
        self.active = None;
        segments(&self.dir)
    }
}
