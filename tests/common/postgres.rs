//! A real PostgreSQL server for tests: Debian's `postgresql` package, `initdb` in a temp
//! dir, started on a free 127.0.0.1 port with its socket in the temp dir, stopped (fast
//! shutdown) when the handle drops.
//!
//! As root (CI and the dev machines), PostgreSQL refuses to run: the cluster belongs to
//! the `postgres` system user the package creates, and every server command runs through
//! `runuser -u postgres --`. The temp dir is handed to that user.
//!
//! Without the binaries the tests skip with a message, except under CI (`CI` set), where
//! `.ci/run` installs the package and a missing server is a failure.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct TempPostgres {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    _dir: tempfile::TempDir,
}

fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").is_file() && p.join("pg_ctl").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn check(what: &str, out: std::io::Result<Output>) {
    let out = out.unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TempPostgres {
    /// Starts a server, or `None` (with a message) when PostgreSQL is not installed and
    /// this is not CI.
    pub fn start() -> Option<TempPostgres> {
        let Some(bin) = bin_dir() else {
            if std::env::var_os("CI").is_some() {
                panic!("PostgreSQL is not installed under /usr/lib/postgresql, and CI must run the PostgreSQL tests (.ci/run installs the `postgresql` package)");
            }
            eprintln!(
                "SKIPPED: PostgreSQL tests need Debian's `postgresql` package \
                 (apt-get install postgresql); none under /usr/lib/postgresql"
            );
            return None;
        };
        let root = is_root();
        let dir = tempfile::tempdir().expect("temp dir");
        if root {
            check(
                "chown the temp dir to postgres",
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(dir.path())
                    .output(),
            );
        }
        let data = dir.path().join("data");
        let run = |program: &str| {
            let mut c = if root {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(bin.join(program));
                c
            } else {
                Command::new(bin.join(program))
            };
            c.current_dir(dir.path());
            c
        };
        check(
            "initdb",
            run("initdb")
                .args([
                    "-U",
                    "kefu",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                    "-D",
                ])
                .arg(&data)
                .output(),
        );
        // A free port: bind port 0, read it, let it go. Another process could take it in
        // between; then pg_ctl fails loudly, it does not connect elsewhere.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        // fsync off: these tests check semantics, not the disk; kefu itself still asks
        // for synchronous_commit on its connections.
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c max_connections=200",
            dir.path().display()
        );
        check(
            "pg_ctl start",
            run("pg_ctl")
                .args(["-w", "-t", "60", "-D"])
                .arg(&data)
                .args(["-l"])
                .arg(dir.path().join("server.log"))
                .args(["-o", &options, "start"])
                .output(),
        );
        Some(TempPostgres {
            bin,
            data,
            port,
            _dir: dir,
        })
    }

    /// A new, empty database on this server; returns its URL.
    pub fn database(&self) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("kefu_test_{}", N.fetch_add(1, Ordering::Relaxed));
        check(
            "createdb",
            Command::new(self.bin.join("createdb"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "kefu",
                    &name,
                ])
                .output(),
        );
        self.url(&name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://kefu@127.0.0.1:{}/{db}", self.port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = c
            .args(["-w", "-t", "30", "-m", "fast", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output();
    }
}
