//! One process per spool directory: an exclusive `flock` on its lock file, naming the holder, so a second
//! process refuses to start instead of draining another's segments.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::ingest::spool::OpenError;

/// The lock file in the spool directory; it holds `pid {pid} on host {host}` of the process that uses it.
pub const LOCK_FILE: &str = "lock.pid";

/// Takes the directory's lock: an exclusive `flock` on [`LOCK_FILE`], kept for as long as the returned file is
/// open. Refuses (naming the holder) when another open file description holds it, in this or another process.
pub(super) fn lock_dir(dir: &Path) -> Result<File, OpenError> {
    let io_err = |source| OpenError::Io {
        dir: dir.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join(LOCK_FILE))
        .map_err(io_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let text = text.trim();
            return Err(OpenError::Locked {
                dir: dir.to_owned(),
                holder: if text.is_empty() {
                    "another process".to_owned()
                } else {
                    text.to_owned()
                },
            });
        }
        Err(TryLockError::Error(e)) => return Err(io_err(e)),
    }
    // Ours now: say who we are, for the message a second process prints.
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let holder = format!("pid {} on host {}\n", std::process::id(), host.trim());
    file.set_len(0).map_err(io_err)?;
    file.rewind().map_err(io_err)?;
    file.write_all(holder.as_bytes()).map_err(io_err)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use crate::ingest::spool::{OpenError, Spool};

    #[tokio::test]
    async fn a_second_open_of_the_same_directory_is_refused_naming_the_holder() {
        let dir = std::env::temp_dir().join(format!("spool-test-{}", uuid::Uuid::new_v4()));
        let spool = Spool::open(&dir, 1 << 20).expect("open");
        // flock is per open file: a second open in this process conflicts just as another process would.
        let Err(e) = Spool::open(&dir, 1 << 20) else {
            panic!("a second open of a locked spool succeeded");
        };
        let msg = e.to_string();
        assert!(matches!(e, OpenError::Locked { .. }), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("drain --spool-dir"), "{msg}");
        // The clone keeps it locked; the last drop releases it.
        let clone = spool.clone();
        drop(spool);
        assert!(
            Spool::open(&dir, 1 << 20).is_err(),
            "a clone still holds it"
        );
        drop(clone);
        let again = Spool::open(&dir, 1 << 20).expect("released with the last handle");
        // The lock file is not a segment.
        assert!(again.seal().await.expect("seal").is_empty());
        assert_eq!(again.bytes(), 0);
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
