//! The local spool for callbacks the database could not take in time.
//!
//! Environment variables (read through clap): `WECOM_SPOOL_DIR` ([`SpoolArgs`]); for the default directory,
//! `STATE_DIRECTORY` (set by systemd), `XDG_STATE_HOME` and `HOME` ([`PlatformDirs`](super::dirs::PlatformDirs)).

use std::path::PathBuf;
use std::time::Duration;

use super::dirs::{PlatformDirs, non_empty};
use super::file::FileConfig;

/// The local spool for callbacks the database could not take in time.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    /// Directory of the spool; `None` = no spool (answer 503 when the database is down).
    pub dir: Option<PathBuf>,
    /// Largest spool; past it callbacks get 503.
    pub max_bytes: u64,
    /// How long a callback waits for the database before it is spooled instead.
    pub after: Duration,
}

/// `serve`'s spool flag.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SpoolArgs {
    /// Spool directory for callbacks the database cannot take in time
    /// [default: $STATE_DIRECTORY/spool, $XDG_STATE_HOME/wecom-callback/spool or ~/.local/state/wecom-callback/spool].
    #[arg(long, env = "WECOM_SPOOL_DIR", value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
}

/// The default spool directory: systemd's `$STATE_DIRECTORY`, else `$XDG_STATE_HOME/wecom-callback/spool`,
/// else `~/.local/state/wecom-callback/spool`, else `./spool`.
pub fn default_spool_dir(dirs: &PlatformDirs) -> PathBuf {
    if let Some(d) = non_empty(&dirs.state_directory) {
        return d.join("spool");
    }
    if let Some(d) = non_empty(&dirs.xdg_state_home) {
        return d.join("wecom-callback").join("spool");
    }
    if let Some(h) = non_empty(&dirs.home) {
        return h.join(".local/state/wecom-callback/spool");
    }
    PathBuf::from("spool")
}

pub(super) fn build(
    file: &FileConfig,
    args: &SpoolArgs,
    dirs: &PlatformDirs,
    request_deadline: Duration,
    problems: &mut Vec<String>,
) -> SpoolSettings {
    let sp = &file.spool;
    let after = Duration::from_millis(sp.after_ms);
    if after + Duration::from_millis(500) > request_deadline {
        problems.push(format!(
            "spool.after_ms = {} leaves no time to write the spool within http.request_deadline_ms = {}; \
             keep it at least 500 ms below",
            after.as_millis(),
            request_deadline.as_millis()
        ));
    }
    SpoolSettings {
        dir: sp.enabled.then(|| {
            args.spool_dir
                .clone()
                .or_else(|| sp.dir.clone())
                .unwrap_or_else(|| default_spool_dir(dirs))
        }),
        max_bytes: sp.max_bytes,
        after,
    }
}
