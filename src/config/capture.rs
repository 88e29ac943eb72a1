//! Captured rejections: the last requests refused per app, kept on local disk so `decrypt --last` can say
//! which check failed without a proxy log.
//!
//! Set in the file only (`[capture]`); the default directory is beside the default spool, under the
//! platform's state directory ([`PlatformDirs`](super::dirs::PlatformDirs)).

use std::path::PathBuf;

use super::dirs::PlatformDirs;
use super::file::FileConfig;

/// Where and how many refused requests are kept.
#[derive(Debug, Clone)]
pub struct CaptureSettings {
    /// Directory of the captures (one subdirectory per app); `None` = off.
    pub dir: Option<PathBuf>,
    /// Captures kept per app; older ones are deleted.
    pub per_app: usize,
}

/// The default capture directory: `rejected` beside the default spool directory.
pub fn default_capture_dir(dirs: &PlatformDirs) -> PathBuf {
    let spool = super::spool::default_spool_dir(dirs);
    match spool.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.join("rejected"),
        _ => PathBuf::from("rejected"),
    }
}

pub(super) fn build(
    file: &FileConfig,
    dirs: &PlatformDirs,
    problems: &mut Vec<String>,
) -> CaptureSettings {
    let c = &file.capture;
    if c.enabled && c.per_app == 0 {
        problems.push(
            "capture.per_app = 0 keeps nothing: set it to at least 1, or turn captures off with \
             [capture] enabled = false"
                .to_owned(),
        );
    }
    if c.per_app > 1000 {
        problems.push(format!(
            "capture.per_app = {} is more than 1000: captures are for diagnosing the last few refusals",
            c.per_app
        ));
    }
    CaptureSettings {
        dir: c
            .enabled
            .then(|| c.dir.clone().unwrap_or_else(|| default_capture_dir(dirs))),
        per_app: c.per_app,
    }
}
