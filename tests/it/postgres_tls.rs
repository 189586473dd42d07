//! PostgreSQL over TLS, as libpq's `sslmode` has it, against a private server with
//! a certificate of the test's own CA (`support::private_postgres`): the proxy
//! binary becomes ready and keeps its keys there with `verify-full` (and SCRAM
//! channel binding), `verify-ca`, `require` and the default `prefer`; it stays not
//! ready, saying why in its log, when the certificate is not the CA's or not for
//! the host; and `check` refuses a mode it does not know, or a CA file it cannot
//! read, before anything runs. No log line or message ever shows the password.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "tests: a failed step fails the test"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::private_postgres::{PASSWORD, PrivatePostgres};
use crate::support::tls::TestCa;
use crate::support::{self, Binary, WRITER_KEY, client, json, write_status};

const BIN: &str = env!("CARGO_BIN_EXE_authmd-proxy");

/// A name the server's certificate does not have; the connection goes to
/// 127.0.0.1 all the same (`hostaddr`).
const OTHER_NAME: &str = "db.internal.test";

/// The example config on PostgreSQL at `url`, in `schema`, with `store_extra`
/// (indented lines) added to `store:`; written into `dir` as `name`.
fn config(dir: &Path, name: &str, url: &str, schema: &str, store_extra: &str) -> PathBuf {
    let example = crate::support::example_without("login");
    let yaml = example.replace(
        "store:\n  kind: sqlite",
        &format!(
            "store:\n  kind: postgres\n  url: {url}\n  schema: {schema}\n{store_extra}  # was: sqlite"
        ),
    );
    let yaml = yaml.replace("  data_dir: data ", "  # data_dir: data ");
    let yaml = support::shared_signing_key(&yaml, dir);
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path
}

async fn start(config: &Path) -> Binary {
    Binary::start(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ])
    .await
}

async fn readyz(proxy: &Binary) -> u16 {
    let admin = proxy.admin.as_ref().expect("the admin address is printed");
    client()
        .get(format!("{admin}/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits (at most 15 s: a bound, each poll a real request) for `/readyz` to say
/// ready; fails with the proxy's log otherwise.
async fn until_ready(proxy: &Binary, log: &mut Vec<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while readyz(proxy).await != 200 {
        log.extend(proxy.log_lines());
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready within 15 s; log:\n{}",
            log.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most 15 s) for a log line about the store holding every one of
/// `words`; returns it.
async fn store_failure(proxy: &Binary, log: &mut Vec<String>, words: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        log.extend(proxy.log_lines());
        if let Some(line) = log
            .iter()
            .find(|line| line.contains("store") && words.iter().all(|w| line.contains(w)))
        {
            return line.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log line with {words:?} within 15 s; log:\n{}",
            log.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A key created through the proxy works through it: the store took the write.
async fn keys_work(proxy: &Binary) {
    let response = client()
        .post(format!("{}/api/v1/auth/keys", proxy.url))
        .header("authorization", format!("Bearer {WRITER_KEY}"))
        .json(&serde_json::json!({"name": "over tls", "scopes": ["offers:write"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let secret = json(response).await["key"].as_str().unwrap().to_owned();
    assert_eq!(write_status(&proxy.url, &secret).await, 200);
}

/// The server's view of the proxy's connections (`application_name` = `app`):
/// how many there are, and how many of them are TLS.
async fn sessions(pg: &PrivatePostgres, app: &str) -> (i64, i64) {
    let row = pg
        .admin()
        .await
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl)
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

fn assert_no_password(log: &[String]) {
    for line in log {
        assert!(!line.contains(PASSWORD), "the password leaked: {line}");
        assert!(!line.contains("s3cret"), "the password leaked: {line}");
    }
}

#[tokio::test]
async fn the_store_connects_over_tls_as_sslmode_says() {
    let ca = TestCa::new("authmd-proxy test database CA");
    let Some(pg) = PrivatePostgres::start(&ca) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path(), "db-ca.pem");
    let other_ca_file = TestCa::new("some other CA").write(dir.path(), "other-ca.pem");
    let other_host = |query: &str| pg.url(OTHER_NAME, &format!("hostaddr=127.0.0.1&{query}"));

    // verify-full with the CA as `store.ca_file`, and channel binding required: a
    // wrong `tls-server-end-point` hash would fail SCRAM.
    let url = pg.url(
        "localhost",
        "sslmode=verify-full&channel_binding=require&application_name=authmd_tls_full",
    );
    let ca_line = format!("  ca_file: {}\n", ca_file.display());
    let proxy = start(&config(dir.path(), "full.yaml", &url, "tls_full", &ca_line)).await;
    let mut log = Vec::new();
    until_ready(&proxy, &mut log).await;
    keys_work(&proxy).await;
    let (all, tls) = sessions(&pg, "authmd_tls_full").await;
    assert!(all >= 1 && tls == all, "{tls} of {all} connections are TLS");
    log.extend(proxy.log_lines());
    assert_no_password(&log);
    drop(proxy);

    // verify-ca, the CA named by the URL (`sslrootcert`, relative to the config
    // file), the host not in the certificate: the chain is enough.
    let url = other_host("sslmode=verify-ca&sslrootcert=db-ca.pem&application_name=authmd_tls_ca");
    let proxy = start(&config(dir.path(), "ca.yaml", &url, "tls_ca", "")).await;
    let mut log = Vec::new();
    until_ready(&proxy, &mut log).await;
    keys_work(&proxy).await;
    let (all, tls) = sessions(&pg, "authmd_tls_ca").await;
    assert!(all >= 1 && tls == all, "{tls} of {all} connections are TLS");
    drop(proxy);

    // require: TLS, whatever the certificate.
    let url = pg.url(
        "127.0.0.1",
        "sslmode=require&application_name=authmd_tls_require",
    );
    let proxy = start(&config(dir.path(), "require.yaml", &url, "tls_require", "")).await;
    let mut log = Vec::new();
    until_ready(&proxy, &mut log).await;
    keys_work(&proxy).await;
    let (all, tls) = sessions(&pg, "authmd_tls_require").await;
    assert!(all >= 1 && tls == all, "{tls} of {all} connections are TLS");
    drop(proxy);

    // No sslmode: libpq's `prefer`, and this server offers TLS.
    let url = pg.url("127.0.0.1", "application_name=authmd_tls_prefer");
    let proxy = start(&config(dir.path(), "prefer.yaml", &url, "tls_prefer", "")).await;
    let mut log = Vec::new();
    until_ready(&proxy, &mut log).await;
    let (all, tls) = sessions(&pg, "authmd_tls_prefer").await;
    assert!(all >= 1 && tls == all, "{tls} of {all} connections are TLS");
    drop(proxy);

    // verify-full with a CA that did not issue the server's certificate: never
    // ready, and the log says what was checked against what.
    let url = pg.url("localhost", "sslmode=verify-full");
    let wrong_ca = format!("  ca_file: {}\n", other_ca_file.display());
    let proxy = start(&config(
        dir.path(),
        "wrong-ca.yaml",
        &url,
        "tls_wrong",
        &wrong_ca,
    ))
    .await;
    let mut log = Vec::new();
    let line = store_failure(
        &proxy,
        &mut log,
        &[
            &format!("sslmode=verify-full, CA file {}", other_ca_file.display()),
            "TLS handshake",
            "UnknownIssuer",
        ],
    )
    .await;
    eprintln!("a wrong CA: {line}");
    assert_eq!(readyz(&proxy).await, 503);
    log.extend(proxy.log_lines());
    assert_no_password(&log);
    drop(proxy);

    // verify-full to a host the certificate does not name (verify-ca took it).
    let url = other_host("sslmode=verify-full");
    let ca_line = format!("  ca_file: {}\n", ca_file.display());
    let proxy = start(&config(
        dir.path(),
        "wrong-name.yaml",
        &url,
        "tls_name",
        &ca_line,
    ))
    .await;
    let mut log = Vec::new();
    let line = store_failure(
        &proxy,
        &mut log,
        &["sslmode=verify-full", "not valid for name"],
    )
    .await;
    eprintln!("a wrong name: {line}");
    assert_eq!(readyz(&proxy).await, 503);
    log.extend(proxy.log_lines());
    assert_no_password(&log);
    drop(proxy);

    let server_log = pg.log();
    assert!(!server_log.contains(PASSWORD), "{server_log}");
}

/// What `check` printed for a config on PostgreSQL at `url`, with `store_extra`
/// added to `store:`, and whether it passed. `env` goes to the child only.
fn check(url: &str, store_extra: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "config.yaml", url, "authmd", store_extra);
    let mut command = Command::new(BIN);
    command.args(["check", "--config", path.to_str().unwrap()]);
    command.envs(env.iter().copied());
    let out = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("s3cret"), "the password leaked:\n{text}");
    match out.status.code() {
        Some(0) => (true, text),
        Some(64) => (false, text),
        other => panic!("check exited with {other:?}:\n{text}"),
    }
}

#[test]
fn check_refuses_what_tls_to_postgres_cannot_do() {
    let url = |query: &str| format!("postgres://authmd:s3cret@db.example/authmd?{query}");
    let modes = "use `disable`, `prefer`, `require`, `verify-ca` or `verify-full`";

    for mode in ["bogus", "verify_full", "VERIFY-FULL"] {
        let (passed, text) = check(&url(&format!("sslmode={mode}")), "", &[]);
        assert!(!passed, "{text}");
        assert!(
            text.contains(&format!(
                "store.url: `sslmode={mode}` is not a mode: {modes}"
            )),
            "{text}"
        );
    }
    let (passed, text) = check(&url("sslmode=allow"), "", &[]);
    assert!(!passed, "{text}");
    assert!(
        text.contains("store.url: `sslmode=allow` is not supported"),
        "{text}"
    );

    // From the environment: the mode is named, the URL is not shown.
    let (passed, text) = check(
        "${DATABASE_URL}",
        "",
        &[("DATABASE_URL", &url("sslmode=verify-fulll"))],
    );
    assert!(!passed, "{text}");
    assert!(
        text.contains("`sslmode=verify-fulll` is not a mode"),
        "{text}"
    );
    assert!(!text.contains("db.example"), "{text}");

    // A CA file that is not there, in either place.
    let (passed, text) = check(
        &url("sslmode=verify-full"),
        "  ca_file: /nonexistent/ca.pem\n",
        &[],
    );
    assert!(!passed, "{text}");
    assert!(
        text.contains("store.ca_file: cannot read /nonexistent/ca.pem"),
        "{text}"
    );
    let (passed, text) = check(
        &url("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
        "",
        &[],
    );
    assert!(!passed, "{text}");
    assert!(
        text.contains("store.url: cannot read /nonexistent/ca.pem"),
        "{text}"
    );

    // `sslrootcert=system` is the public roots, and needs verify-full.
    let (passed, text) = check(&url("sslmode=require&sslrootcert=system"), "", &[]);
    assert!(!passed, "{text}");
    assert!(text.contains("needs `sslmode=verify-full`"), "{text}");
    let (passed, text) = check(&url("sslrootcert=system"), "", &[]);
    assert!(passed, "{text}");

    // Every accepted mode passes, with a CA file that is there.
    let dir = tempfile::tempdir().unwrap();
    let ca_file = TestCa::new("check CA").write(dir.path(), "ca.pem");
    for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
        let extra = if mode == "disable" {
            String::new()
        } else {
            format!("  ca_file: {}\n", ca_file.display())
        };
        let (passed, text) = check(&url(&format!("sslmode={mode}")), &extra, &[]);
        assert!(passed, "sslmode={mode}: {text}");
    }
}
