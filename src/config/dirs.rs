//! The platform's standard directories, from which default paths are derived (the spool, the private
//! PostgreSQL cluster's data).
//!
//! Environment variables (read through clap, hidden from `--help` since they are the platform's, not ours):
//! `STATE_DIRECTORY` (systemd's `StateDirectory=`), `XDG_STATE_HOME`, `XDG_DATA_HOME`, `HOME`.

use std::path::PathBuf;

/// The platform's directories, from the standard environment variables. Only defaults are derived from them,
/// so they are hidden from `--help`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PlatformDirs {
    /// systemd's `StateDirectory=`.
    #[arg(long, env = "STATE_DIRECTORY", global = true, hide = true)]
    pub state_directory: Option<PathBuf>,
    /// XDG base directory for state.
    #[arg(long, env = "XDG_STATE_HOME", global = true, hide = true)]
    pub xdg_state_home: Option<PathBuf>,
    /// XDG base directory for data.
    #[arg(long, env = "XDG_DATA_HOME", global = true, hide = true)]
    pub xdg_data_home: Option<PathBuf>,
    /// The user's home directory.
    #[arg(long, env = "HOME", global = true, hide = true)]
    pub home: Option<PathBuf>,
}

/// An empty variable counts as unset, as the XDG spec says.
pub(super) fn non_empty(p: &Option<PathBuf>) -> Option<&PathBuf> {
    p.as_ref().filter(|p| !p.as_os_str().is_empty())
}

/// The default data directory of the private PostgreSQL cluster: `$XDG_DATA_HOME/wecom-callback/postgres`, else
/// `~/.local/share/wecom-callback/postgres`, else `./wecom-callback-postgres` (root: see
/// [`crate::tools::embedded::default_data_dir`]).
pub fn default_user_data_dir(dirs: &PlatformDirs) -> PathBuf {
    if let Some(d) = non_empty(&dirs.xdg_data_home) {
        return d.join("wecom-callback/postgres");
    }
    if let Some(h) = non_empty(&dirs.home) {
        return h.join(".local/share/wecom-callback/postgres");
    }
    PathBuf::from("wecom-callback-postgres")
}
