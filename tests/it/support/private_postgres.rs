//! A PostgreSQL server of the test's own, with TLS: `initdb` into a temporary
//! directory, a server certificate from a [`TestCa`], `ssl = on`, listening on
//! `127.0.0.1` at a free port and on a Unix socket in the same directory. Password
//! (SCRAM) authentication over TCP, trust over the socket (for the test's own
//! inspection). Stopped when dropped.
//!
//! The server's binaries are looked for in `AUTHMD_TEST_PG_BINDIR`, then in the
//! newest `/usr/lib/postgresql/*/bin` (Debian's layout), then on `PATH`; without
//! them [`PrivatePostgres::start`] says why and returns `None` (the test skips),
//! unless `AUTHMD_REQUIRE_POSTGRES_TLS` is set (CI), where that is a failure. As root
//! (`initdb` refuses root), the server runs as the `postgres` user, via `runuser`.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::tls::TestCa;

/// The password of the `postgres` role over TCP.
pub const PASSWORD: &str = "pg-tls-s3cret-password";

/// A running private PostgreSQL; stopped (and its directory removed) when dropped.
pub struct PrivatePostgres {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    /// Holds `data/` and the Unix socket.
    dir: tempfile::TempDir,
    /// Run the server's programs as this user (`None`: as ourselves).
    user: Option<&'static str>,
}

impl PrivatePostgres {
    /// Starts a server whose certificate `ca` issued (for `localhost` and
    /// `127.0.0.1`); `None` when the binaries are not there.
    pub fn start(ca: &TestCa) -> Option<PrivatePostgres> {
        let Some(bin) = bin_dir() else {
            let why = "no PostgreSQL server binaries (initdb): set AUTHMD_TEST_PG_BINDIR or install postgresql";
            assert!(
                std::env::var_os("AUTHMD_REQUIRE_POSTGRES_TLS").is_none(),
                "AUTHMD_REQUIRE_POSTGRES_TLS is set but there are {why}"
            );
            eprintln!("skipped: {why}");
            return None;
        };
        let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
        let user = root.then_some("postgres");
        let dir = tempfile::tempdir().unwrap();
        let server = PrivatePostgres {
            port: 0,
            bin,
            dir,
            user,
        };
        std::fs::write(server.dir.path().join("pwfile"), PASSWORD).unwrap();
        if let Some(user) = user {
            run(Command::new("chown")
                .arg("-R")
                .arg(user)
                .arg(server.dir.path()));
        }
        let data = server.data();
        run(server
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!(
                "--pwfile={}",
                server.dir.path().join("pwfile").display()
            )));

        let identity = ca.server_cert();
        let (cert, key) = identity.write(&data, "server.crt", "server.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if let Some(user) = user {
            run(Command::new("chown").arg(user).arg(&cert).arg(&key));
        }
        // Password authentication over TCP, with TLS or without; trust on the socket.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str(&format!(
            "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             listen_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nmax_connections = 40\n",
            server.dir.path().display()
        ));
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        server.listen()
    }

    /// Starts the server on a free port: one the OS gave and this process let go
    /// of just before; if another process took it meanwhile, the start fails and
    /// another port is tried.
    fn listen(mut self) -> Option<PrivatePostgres> {
        for _ in 0..5 {
            self.port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            // `-w`: pg_ctl polls until the server accepts connections (or has
            // exited), at most `-t` seconds.
            let started = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.path().join("server.log"))
                .args(["-o", &format!("-p {}", self.port)])
                .args(["-w", "-t", "60", "start"])
                .output()
                .unwrap();
            if started.status.success() {
                return Some(self);
            }
            eprintln!(
                "the private PostgreSQL did not start on port {}: {}\n{}",
                self.port,
                describe(&started),
                self.log()
            );
        }
        panic!("the private PostgreSQL did not start on any of 5 ports");
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A URL for the proxy: the `postgres` role with its password, over TCP to
    /// `host` (`127.0.0.1` or `localhost`), with `query` appended.
    pub fn url(&self, host: &str, query: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@{host}:{}/postgres?{query}",
            self.port
        )
    }

    /// A connection over the Unix socket (trust, no TLS), for inspecting.
    pub async fn admin(&self) -> tokio_postgres::Client {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.dir.path())
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .application_name("authmd_test_admin");
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// One of the server's programs, run as the server's user.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = match self.user {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        };
        command.current_dir(self.dir.path());
        command
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Where `initdb`, `pg_ctl` and `postgres` are.
fn bin_dir() -> Option<PathBuf> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("AUTHMD_TEST_PG_BINDIR") {
        return Some(PathBuf::from(dir)).filter(|d| has_initdb(d));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_initdb(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|dir| has_initdb(dir))
}

/// Runs a setup command; fails the test with its output when it fails.
fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        describe(&output)
    );
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
