//! Captured rejections: the last refused requests of each app (query, the headers that matter, body) as one
//! JSON file each, so `wecom-callback decrypt --last` can diagnose the most recent one without a proxy log.
//!
//! Bounded: at most `per_app` files per app (the oldest are deleted after each write), each no larger than
//! the body limit. The directory is mode 0700 and the files 0600: a body is ciphertext, but a request that
//! decrypted and was refused later (receive id, unreadable XML) is still the sender's data.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The request headers kept: what tells who sent it and through which proxy.
const KEPT_HEADERS: &[&str] = &[
    "host",
    "user-agent",
    "content-type",
    "content-length",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "forwarded",
];

/// One refused request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capture {
    pub app: String,
    pub at: DateTime<Utc>,
    /// `GET` (URL verification) or `POST` (callback).
    pub method: String,
    pub path: String,
    /// The query string exactly as received.
    pub query: String,
    /// The kept headers ([`KEPT_HEADERS`]), lower-case names.
    pub headers: BTreeMap<String, String>,
    /// The body as received (lossy UTF-8; WeCom's bodies are ASCII XML); `None` for a GET or a body never read.
    pub body: Option<String>,
    /// The rejection class (`bad_signature`, ...).
    pub class: String,
    /// What failed, in words.
    pub reason: String,
}

impl Capture {
    /// Keeps the headers that matter out of `headers`.
    pub fn kept_headers<'a>(
        headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> BTreeMap<String, String> {
        headers
            .filter(|(name, _)| KEPT_HEADERS.contains(&name.to_ascii_lowercase().as_str()))
            .map(|(name, value)| {
                (
                    name.to_ascii_lowercase(),
                    String::from_utf8_lossy(value).into_owned(),
                )
            })
            .collect()
    }
}

/// Where captures go, and how many are kept per app.
#[derive(Debug, Clone)]
pub struct Captures {
    dir: PathBuf,
    per_app: usize,
}

/// The subdirectory of an app: its name when it is a plain word, else its hex (an app name never escapes
/// the directory).
fn app_dir(dir: &Path, app: &str) -> PathBuf {
    if !app.is_empty()
        && app
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        dir.join(app)
    } else {
        dir.join(format!("x{}", hex::encode(app)))
    }
}

#[cfg(unix)]
fn private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn private_dir(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path)
}

impl Captures {
    /// Captures under `dir` (created, mode 0700), keeping `per_app` per app.
    pub fn open(dir: &Path, per_app: usize) -> io::Result<Captures> {
        private_dir(dir)?;
        Ok(Captures {
            dir: dir.to_path_buf(),
            per_app: per_app.max(1),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `capture` (mode 0600) and deletes the app's oldest beyond the bound. Returns the file.
    pub fn write(&self, capture: &Capture) -> io::Result<PathBuf> {
        let dir = app_dir(&self.dir, &capture.app);
        private_dir(&dir)?;
        // Millisecond time first: names sort in arrival order.
        let name = format!(
            "{:013}-{}.json",
            capture.at.timestamp_millis().max(0),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let path = dir.join(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&path)?;
        file.write_all(&serde_json::to_vec_pretty(capture).map_err(io::Error::other)?)?;
        let mut files = list(&dir)?;
        while files.len() > self.per_app {
            let oldest = files.remove(0);
            // Another request may have deleted it already.
            let _ = std::fs::remove_file(oldest);
        }
        Ok(path)
    }
}

/// The capture files of one app directory, oldest first.
fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    files.sort();
    Ok(files)
}

/// The most recent capture of `app` (or of any app), with its file.
pub fn latest(dir: &Path, app: Option<&str>) -> io::Result<Option<(PathBuf, Capture)>> {
    let dirs: Vec<PathBuf> = match app {
        Some(a) => vec![app_dir(dir, a)],
        None => match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        },
    };
    let mut newest: Option<PathBuf> = None;
    for d in dirs {
        if let Some(last) = list(&d)?.pop() {
            // Compare by file name: the arrival time.
            if newest
                .as_ref()
                .is_none_or(|n| n.file_name() < last.file_name())
            {
                newest = Some(last);
            }
        }
    }
    match newest {
        None => Ok(None),
        Some(path) => {
            let bytes = std::fs::read(&path)?;
            let capture = serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a capture: {e}", path.display()),
                )
            })?;
            Ok(Some((path, capture)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(app: &str, at_ms: i64) -> Capture {
        Capture {
            app: app.into(),
            at: DateTime::from_timestamp_millis(at_ms).expect("time"),
            method: "POST".into(),
            path: format!("/callback/{app}"),
            query: "msg_signature=x&timestamp=1&nonce=2".into(),
            headers: BTreeMap::new(),
            body: Some("<xml/>".into()),
            class: "bad_signature".into(),
            reason: "msg_signature does not match".into(),
        }
    }

    #[test]
    fn bounded_private_and_newest_first() {
        let dir =
            std::env::temp_dir().join(format!("wecom-capture-{}", uuid::Uuid::new_v4().simple()));
        let c = Captures::open(&dir, 3).expect("open");
        for i in 0..5 {
            c.write(&capture("main", 1_000 + i)).expect("write");
        }
        let path = c.write(&capture("other", 500)).expect("write");
        assert_eq!(
            list(&dir.join("main")).expect("list").len(),
            3,
            "bounded per app"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let mode = std::fs::metadata(&dir).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o700);
        }
        let (_, last) = latest(&dir, None).expect("latest").expect("some");
        assert_eq!(last.at.timestamp_millis(), 1_004);
        let (_, last) = latest(&dir, Some("other")).expect("latest").expect("some");
        assert_eq!(last.app, "other");
        assert!(latest(&dir, Some("none")).expect("latest").is_none());
        // A name that is not a plain word stays inside the directory.
        assert!(app_dir(&dir, "../x").starts_with(&dir));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
