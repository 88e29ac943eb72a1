//! Captured rejections: the last requests refused per app, kept on local disk so `decrypt --last` can say
//! which check failed without a proxy log.
//!
//! Set in the file only (`[capture]`); the default directory is `rejected` beside the spool directory (the
//! configured one, else the default under the platform's state directory,
//! [`PlatformDirs`](super::dirs::PlatformDirs)).

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

/// `spool_dir` is the spool's directory when it is on: captures then go beside it (`rejected` in its parent),
/// so a spool moved with WECOM_SPOOL_DIR takes its captures along.
pub(super) fn build(
    file: &FileConfig,
    dirs: &PlatformDirs,
    spool_dir: Option<&std::path::Path>,
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
        dir: c.enabled.then(|| {
            c.dir.clone().unwrap_or_else(|| {
                spool_dir
                    .and_then(std::path::Path::parent)
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(|p| p.join("rejected"))
                    .unwrap_or_else(|| default_capture_dir(dirs))
            })
        }),
        per_app: c.per_app,
    }
}
