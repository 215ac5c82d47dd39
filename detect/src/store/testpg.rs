//! A private PostgreSQL server for tests: `initdb` into a temporary directory, the server on a
//! free loopback port, trust authentication for the `kvwatch` role, stopped (immediate
//! shutdown) and removed on drop. Shared by the store's unit tests and the command-line
//! integration tests (`#[path]`-included there), so it depends on nothing but std and
//! `tempfile`.
//!
//! The binaries come from `KVWATCH_PG_BIN` (a directory), else the newest
//! `/usr/lib/postgresql/*/bin` (Debian's packages, which `scripts/test.sh` installs). As root,
//! the server runs as the `postgres` user, since PostgreSQL refuses to run as root.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PgServer {
    dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
}

/// The directory of the PostgreSQL binaries.
pub fn pg_bin() -> PathBuf {
    if let Some(d) = std::env::var_os("KVWATCH_PG_BIN") {
        return PathBuf::from(d);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server binaries were not found: install Debian's postgresql package \
             (scripts/test.sh does) or set KVWATCH_PG_BIN"
        )
    })
}

/// (uid, gid) of `user` from /etc/passwd.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user) && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

fn is_root() -> bool {
    // The owner of a file this process just created is this process's user.
    let probe = tempfile::NamedTempFile::new().expect("a temporary file");
    std::os::unix::fs::MetadataExt::uid(&probe.as_file().metadata().unwrap()) == 0
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl PgServer {
    /// Starts a new server (about a second: initdb without fsync, then the server).
    pub fn start() -> PgServer {
        Self::start_with(false)
    }

    /// A server that also takes TLS, with a certificate for `127.0.0.1` and `localhost`
    /// signed by its own CA, at [`PgServer::ca`] (made with the openssl command).
    pub fn start_tls() -> PgServer {
        Self::start_with(true)
    }

    /// The CA certificate of a [`PgServer::start_tls`] server.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn start_with(tls: bool) -> PgServer {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("kvwatch-pg-")
            .tempdir()
            .expect("a temporary directory");
        let run_as = if is_root() {
            Some(
                user_ids("postgres")
                    .or_else(|| user_ids("nobody"))
                    .expect("a user to run PostgreSQL as"),
            )
        } else {
            None
        };
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let cmd = |name: &str| {
            let mut c = Command::new(bin.join(name));
            if let Some((uid, gid)) = run_as {
                std::os::unix::process::CommandExt::uid(&mut c, uid);
                std::os::unix::process::CommandExt::gid(&mut c, gid);
            }
            c.env_remove("PGDATA").env("LC_ALL", "C");
            c
        };
        run_ok(
            cmd("initdb").arg("-D").arg(&data).args([
                "-U",
                "kvwatch",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]),
            "initdb",
        );
        let mut ssl: Vec<String> = Vec::new();
        if tls {
            let d = dir.path();
            let openssl = |args: &[&str]| {
                run_ok(
                    Command::new("openssl").args(args).current_dir(d),
                    &format!("openssl {args:?}"),
                );
            };
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=kvwatch test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ]);
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ]);
            std::fs::write(
                d.join("san.ext"),
                "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
            )
            .unwrap();
            openssl(&[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                "server.pem",
            ]);
            let key = d.join("server.key");
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            if let Some((uid, gid)) = run_as {
                for f in ["server.key", "server.pem"] {
                    std::os::unix::fs::chown(d.join(f), Some(uid), Some(gid)).unwrap();
                }
            }
            ssl = vec![
                "-c".into(),
                "ssl=on".into(),
                "-c".into(),
                format!("ssl_cert_file={}", d.join("server.pem").display()),
                "-c".into(),
                format!("ssl_key_file={}", key.display()),
            ];
        }
        let log_path = dir.path().join("server.log");
        for _ in 0..4 {
            let port = free_port();
            let log = std::fs::File::create(&log_path).unwrap();
            if let Some((uid, gid)) = run_as {
                std::os::unix::fs::chown(&log_path, Some(uid), Some(gid)).unwrap();
            }
            let mut child = cmd("postgres")
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(dir.path())
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=300",
                ])
                .args(&ssl)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("starting postgres");
            if wait_ready(&mut child, &bin, port, Duration::from_secs(30)) {
                return PgServer {
                    dir,
                    child,
                    port,
                    bin,
                    run_as,
                };
            }
            // Most likely another process took the port between the probe and the bind.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "postgres did not start:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A URL of database `db` on this server, without TLS.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://kvwatch@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// Runs client program `tool` (createdb, psql…) against this server as `kvwatch`,
    /// asserting success; its standard output.
    fn client(&self, tool: &str, args: &[&str]) -> String {
        let port = self.port.to_string();
        let out = run_ok(
            Command::new(self.bin.join(tool))
                .args(["-h", "127.0.0.1", "-p", &port, "-U", "kvwatch"])
                .args(args),
            &format!("{tool} {args:?}"),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Creates database `db` and returns its URL.
    pub fn create_db(&self, db: &str) -> String {
        self.client("createdb", &[db]);
        self.url(db)
    }

    /// Runs `sql` through psql on database `db`; its output, unaligned without headers.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.client(
            "psql",
            &[
                "-d",
                db,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        )
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Waits until the server on `port` accepts connections; false if it exited or took too long.
fn wait_ready(child: &mut Child, bin: &Path, port: u16, limit: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        let ok = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown, the server's children included.
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `c` to completion, panicking with `what` and its standard error unless it succeeds.
fn run_ok(c: &mut Command, what: &str) -> std::process::Output {
    let out = c.output().unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
