//! A private PostgreSQL cluster for the first run on a fresh machine: when no database is configured and
//! nothing listens on the local PostgreSQL port, `serve` initdb's a cluster from the machine's PostgreSQL
//! binaries into a data directory, runs it on a Unix socket only (no TCP port to clash with or expose), and
//! stops it on shutdown. Production deployments set DATABASE_URL instead.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Why the private cluster could not be started. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no database is configured and no PostgreSQL binaries were found (looked for initdb and pg_ctl in {looked}). \
         Either install PostgreSQL (Debian/Ubuntu: apt-get install postgresql) so wecom-callback can run a private \
         cluster, or point it at a server with DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/wecom_callback"
    )]
    NoBinaries { looked: String },
    #[error("{step} failed for the private PostgreSQL cluster in {dir}: {detail}")]
    Command {
        step: &'static str,
        dir: String,
        detail: String,
    },
    #[error(
        "cannot prepare the data directory {dir}: {source}; set WECOM_EMBEDDED_DATA_DIR to a writable directory"
    )]
    Io { dir: String, source: std::io::Error },
}

/// The file in the private cluster's data directory that holds its URL (written by `serve`).
pub const URL_FILE: &str = "database_url";

/// Why another command cannot use the private cluster `serve` runs. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error(
        "no database is configured (DATABASE_URL, --database-url or database_url in the file), nothing listens on \
         {probe}, and there is no private cluster either ({file} does not exist: serve writes it when it runs \
         one). Set DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/wecom_callback, start PostgreSQL on {probe}, \
         or run `wecom-callback serve` once; if serve uses another data directory, give the same \
         WECOM_EMBEDDED_DATA_DIR here"
    )]
    NoCluster { probe: SocketAddr, file: String },
    #[error(
        "no database is configured and nothing listens on {probe}; the private cluster in {dir} (the one serve \
         runs) is not running: serve stops it on exit. Start `wecom-callback serve` (it starts the cluster), \
         or set DATABASE_URL to a server that is up"
    )]
    NotRunning { probe: SocketAddr, dir: String },
    #[error(
        "cannot read the private cluster's URL in {file}: {source}; check its permissions (mode 0600, owned by the user serve runs as)"
    )]
    Unreadable {
        file: String,
        source: std::io::Error,
    },
}

/// The URL of the private cluster `serve` runs in `data` (read from [`URL_FILE`]), for the other commands.
/// `probe` is only for the messages: the caller found nothing listening there.
pub fn find_running(data: &Path, probe: SocketAddr) -> Result<String, FindError> {
    let file = data.join(URL_FILE);
    let url = match std::fs::read_to_string(&file) {
        Ok(u) => u.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FindError::NoCluster {
                probe,
                file: file.display().to_string(),
            });
        }
        Err(source) => {
            return Err(FindError::Unreadable {
                file: file.display().to_string(),
                source,
            });
        }
    };
    match postmaster_state(&data.join("cluster")) {
        Postmaster::Running(_) if !url.is_empty() => Ok(url),
        _ => Err(FindError::NotRunning {
            probe,
            dir: data.display().to_string(),
        }),
    }
}

/// Whether something accepts TCP connections at `addr` (the local PostgreSQL port, normally).
pub fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// Directories searched for `initdb` and `pg_ctl`: `bin` (`WECOM_POSTGRES_BIN`, read by the CLI) if given,
/// else the newest `/usr/lib/postgresql/*/bin`, then every directory on PATH.
fn candidate_dirs(bin: Option<&Path>) -> Vec<PathBuf> {
    if let Some(dir) = bin.filter(|d| !d.as_os_str().is_empty()) {
        return vec![dir.to_owned()];
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.reverse();
    let path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    versions.into_iter().chain(path).collect()
}

/// Finds a directory holding both `initdb` and `pg_ctl` (in `bin` alone when given).
pub fn find_binaries(bin: Option<&Path>) -> Result<PathBuf, EmbeddedError> {
    let dirs = candidate_dirs(bin);
    dirs.iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
        .cloned()
        .ok_or_else(|| EmbeddedError::NoBinaries {
            looked: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The default data directory: as root `/var/lib/wecom-callback/postgres`, else
/// [`crate::config::dirs::default_user_data_dir`] (`$XDG_DATA_HOME/wecom-callback/postgres`, else
/// `~/.local/share/wecom-callback/postgres`).
pub fn default_data_dir(dirs: &crate::config::PlatformDirs) -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/wecom-callback/postgres");
    }
    crate::config::dirs::default_user_data_dir(dirs)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A running private cluster. Stopped by [`EmbeddedPostgres::stop`] or on drop.
pub struct EmbeddedPostgres {
    data: PathBuf,
    bin: PathBuf,
    /// initdb refuses to run as root: as root the cluster runs as user `postgres`.
    run_as: Option<String>,
    running: bool,
}

impl EmbeddedPostgres {
    /// initdb (first time only) and start the cluster in `data` (the socket lives in `data/socket`), with the
    /// binaries in `bin` if given, else found as [`find_binaries`] says.
    pub fn start(data: &Path, bin: Option<&Path>) -> Result<EmbeddedPostgres, EmbeddedError> {
        let bin = find_binaries(bin)?;
        let run_as = is_root().then(|| "postgres".to_owned());
        let io = |source| EmbeddedError::Io {
            dir: data.display().to_string(),
            source,
        };
        std::fs::create_dir_all(data.join("socket")).map_err(io)?;
        let mut pg = EmbeddedPostgres {
            data: data.to_owned(),
            bin,
            run_as,
            running: false,
        };
        if let Some(user) = &pg.run_as {
            pg.run(
                "chown",
                Command::new("chown")
                    .arg("-R")
                    .arg(format!("{user}:{user}"))
                    .arg(data),
            )?;
        }
        let cluster = data.join("cluster");
        if !cluster.join("PG_VERSION").exists() {
            tracing::info!(dir = %cluster.display(), "creating a private PostgreSQL cluster (no DATABASE_URL set)");
            let initdb = pg.bin.join("initdb");
            let mut cmd = pg.as_owner(&initdb);
            cmd.args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-locale",
                "-D",
            ])
            .arg(&cluster);
            pg.run("initdb", &mut cmd)?;
        }
        // A serve killed without its stop (SIGKILL, OOM) leaves its postmaster running, or a stale
        // postmaster.pid that makes pg_ctl refuse ("another server might be running").
        match postmaster_state(&cluster) {
            Postmaster::Running(pid) => {
                tracing::warn!(
                    pid,
                    "the private PostgreSQL cluster is still running from a previous serve that did not stop \
                     it (killed?): using it, and stopping it on exit"
                );
                pg.running = true;
                pg.write_url_file();
                return Ok(pg);
            }
            Postmaster::Stale(pid) => {
                tracing::warn!(
                    pid,
                    "removing the stale postmaster.pid of the private cluster (its process is gone)"
                );
                std::fs::remove_file(cluster.join("postmaster.pid")).map_err(io)?;
            }
            Postmaster::None => {}
        }
        let opts = format!(
            "-c listen_addresses='' -k {} -p 5432",
            data.join("socket").display()
        );
        let pg_ctl = pg.bin.join("pg_ctl");
        let mut cmd = pg.as_owner(&pg_ctl);
        cmd.arg("-D")
            .arg(&cluster)
            .args(["-o", &opts, "-l"])
            .arg(data.join("postgres.log"))
            .args(["-w", "-t", "60", "start"]);
        pg.run("pg_ctl start", &mut cmd)?;
        pg.running = true;
        pg.write_url_file();
        tracing::info!(socket = %data.join("socket").display(), "private PostgreSQL cluster started");
        Ok(pg)
    }

    /// Writes the cluster's URL to `database_url` in the data directory (mode 0600), so an operator or a
    /// script can reach the private cluster (`DATABASE_URL=$(cat …/database_url) wecom-callback jobs list`).
    fn write_url_file(&self) {
        let path = self.data.join(URL_FILE);
        let result =
            std::fs::write(&path, format!("{}\n", self.url("wecom_callback"))).and_then(|()| {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
                }
                Ok(())
            });
        if let Err(e) = result {
            tracing::warn!(file = %path.display(), error = %e, "cannot write the private cluster's URL");
        }
    }

    /// The URL for a database on this cluster (over its Unix socket).
    pub fn url(&self, database: &str) -> String {
        let socket = self.data.join("socket");
        let encoded = percent_encoding::utf8_percent_encode(
            &socket.to_string_lossy(),
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string();
        format!("postgres://postgres@localhost:5432/{database}?host={encoded}")
    }

    /// Stops the cluster (fast shutdown: waits for it to write its data).
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let pg_ctl = self.bin.join("pg_ctl");
        let mut cmd = self.as_owner(&pg_ctl);
        cmd.arg("-D")
            .arg(self.data.join("cluster"))
            .args(["-m", "fast", "-w", "stop"]);
        match self.run("pg_ctl stop", &mut cmd) {
            Ok(()) => tracing::info!("private PostgreSQL cluster stopped"),
            Err(e) => tracing::warn!(error = %e, "stopping the private PostgreSQL cluster failed"),
        }
        self.running = false;
    }

    fn as_owner(&self, program: &Path) -> Command {
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    fn run(&self, step: &'static str, cmd: &mut Command) -> Result<(), EmbeddedError> {
        let out = cmd.output().map_err(|e| EmbeddedError::Command {
            step,
            dir: self.data.display().to_string(),
            detail: e.to_string(),
        })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(EmbeddedError::Command {
                step,
                dir: self.data.display().to_string(),
                detail: format!(
                    "{}{} (see {})",
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim(),
                    self.data.join("postgres.log").display()
                ),
            })
        }
    }
}

/// What a cluster's `postmaster.pid` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Postmaster {
    /// No pid file: not running.
    None,
    /// The pid file names a live postgres process.
    Running(u32),
    /// The pid file names a process that is gone, or is not postgres (its pid was reused).
    Stale(u32),
}

/// Reads `cluster/postmaster.pid` and checks its process in /proc.
pub fn postmaster_state(cluster: &Path) -> Postmaster {
    let Ok(text) = std::fs::read_to_string(cluster.join("postmaster.pid")) else {
        return Postmaster::None;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<u32>().ok())
    else {
        // Unreadable first line: a crash while writing it; nothing can be running from it.
        return Postmaster::Stale(0);
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let is_postgres = String::from_utf8_lossy(program)
        .rsplit('/')
        .next()
        .is_some_and(|name| name == "postgres" || name == "postmaster");
    if is_postgres {
        Postmaster::Running(pid)
    } else {
        Postmaster::Stale(pid)
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_whose_process_is_gone_or_not_postgres_is_stale() {
        let dir = std::env::temp_dir().join(format!("wecom-pm-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        assert_eq!(postmaster_state(&dir), Postmaster::None);
        // This test process: alive, but not postgres (a reused pid).
        let me = std::process::id();
        std::fs::write(dir.join("postmaster.pid"), format!("{me}\n/data\n")).expect("write");
        assert_eq!(postmaster_state(&dir), Postmaster::Stale(me));
        // Beyond any pid_max: gone.
        std::fs::write(dir.join("postmaster.pid"), "99999999\n").expect("write");
        assert_eq!(postmaster_state(&dir), Postmaster::Stale(99_999_999));
        std::fs::write(dir.join("postmaster.pid"), "garbage").expect("write");
        assert_eq!(postmaster_state(&dir), Postmaster::Stale(0));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
