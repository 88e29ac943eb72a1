//! A scratch PostgreSQL cluster a test owns: initdb into a temp dir, its own port, killable and freezable
//! without disturbing anything else.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub struct Cluster {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

/// The newest PostgreSQL's binaries.
pub fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL binaries under /usr/lib/postgresql (apt-get install postgresql)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("initdb in /usr/lib/postgresql/*/bin")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Cluster {
    /// initdb and start. initdb refuses to run as root, so as root the cluster runs as user postgres.
    pub fn start() -> Cluster {
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!("wecom-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        if as_postgres {
            run(Command::new("chown").args(["postgres:postgres"]).arg(&dir));
        }
        let c = Cluster {
            port: free_port(),
            dir,
            bin: bin_dir(),
            as_postgres,
        };
        c.pg(
            &c.bin.join("initdb"),
            &["-A", "trust", "-U", "postgres", "--no-sync", "-D", c.data()],
        );
        c.pg_ctl_start();
        c
    }

    fn data(&self) -> &str {
        self.dir.to_str().expect("utf-8 path")
    }

    fn pg(&self, program: &Path, args: &[&str]) {
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.args(args);
        run(&mut cmd);
    }

    fn pg_ctl_start(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=on -c synchronous_commit=on -c max_connections=60",
            self.port,
            self.data()
        );
        let log = format!("{}/server.log", self.data());
        self.pg(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.data(),
                "-o",
                &opts,
                "-l",
                &log,
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
    }

    /// postgres://postgres@127.0.0.1:PORT/DB
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// An immediate stop: like a crash, no checkpoint.
    pub fn kill(&self) {
        self.pg(
            &self.bin.join("pg_ctl"),
            &["-D", self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    pub fn restart(&self) {
        self.pg_ctl_start();
    }

    fn pids(&self) -> Vec<String> {
        let pidfile =
            std::fs::read_to_string(self.dir.join("postmaster.pid")).expect("postmaster.pid");
        let main = pidfile.lines().next().expect("pid line").trim().to_owned();
        let children = Command::new("pgrep")
            .args(["-P", &main])
            .output()
            .expect("pgrep");
        let mut pids = vec![main];
        pids.extend(
            String::from_utf8_lossy(&children.stdout)
                .split_whitespace()
                .map(str::to_owned),
        );
        pids
    }

    /// SIGSTOP the postmaster and every backend: connections stay open, nothing answers.
    pub fn freeze(&self) -> Vec<String> {
        let pids = self.pids();
        run(Command::new("kill").arg("-STOP").args(&pids));
        pids
    }

    pub fn thaw(&self, pids: &[String]) {
        run(Command::new("kill").arg("-CONT").args(pids));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .args(self.pids_quiet())
            .status();
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = cmd
            .args(["-D", self.data(), "-m", "immediate", "stop"])
            .output();
        std::thread::sleep(Duration::from_millis(100));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Cluster {
    fn pids_quiet(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().map(|l| vec![l.trim().to_owned()]))
            .unwrap_or_default()
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
