//! Faults of what the proxy depends on, while requests flow: the store's disk (a
//! SQLite file that becomes unwritable, a full data directory), PostgreSQL (restarted,
//! partitioned) and the upstream (answering garbage). For each: what the client
//! receives, that nothing acknowledged is lost, and that the proxy recovers by itself
//! once the fault clears.
//!
//! The disk faults need root: `chattr +i` (an immutable file, which even root cannot
//! write, through descriptors already open too) and a small tmpfs mounted as the data
//! directory. Without those rights they say so and are skipped. The PostgreSQL faults
//! need `AUTHMD_TEST_POSTGRES_URL`; a relay between the proxy and the server plays the
//! restart and the partition.
//!
//! Third-party faults (a trusted issuer's JWKS, the x402 facilitator) are in
//! `tests/it/faults_dependencies.rs`; the upstream refusing, resetting and hanging in
//! `tests/it/forward.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "tests: a failed step should fail the test loudly"
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support;
use crate::support::relay::Relay;
use crate::support::{Binary, WRITER_KEY, assert_envelope, client, eventually, json, write_status};

/// The example config with room for many keys per owner, written into `dir`
/// (without the demo sign-in: on PostgreSQL it would need a shared cookie key).
fn config_in(dir: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    let yaml = crate::support::example_without("login")
        .replace("max_keys_per_owner: 25", "max_keys_per_owner: 10000");
    let path = dir.join("config.yaml");
    std::fs::write(&path, edit(yaml)).unwrap();
    path
}

async fn start(config: &Path, data_dir: &Path) -> Binary {
    Binary::start(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ])
    .await
}

/// `POST /api/v1/auth/keys` with the writer key.
async fn create(url: &str) -> reqwest::Response {
    client()
        .post(format!("{url}/api/v1/auth/keys"))
        .bearer_auth(WRITER_KEY)
        .json(&serde_json::json!({"name": "fault", "scopes": ["offers:write"]}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap()
}

/// The secret of a key `create` was answered 201 for.
async fn created(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 201);
    json(response).await["key"].as_str().unwrap().to_owned()
}

/// The ids of the writer's keys, as the list endpoint gives them.
async fn listed(url: &str) -> BTreeSet<String> {
    let response = client()
        .get(format!("{url}/api/v1/auth/keys"))
        .bearer_auth(WRITER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    json(response).await["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The refusal every write gets while the store cannot take it.
async fn assert_store_unavailable(response: reqwest::Response) {
    let retry = response.headers().get("retry-after").cloned();
    assert!(retry.is_some(), "a 503 says when to retry");
    assert_envelope(
        response,
        503,
        "temporarily_unavailable",
        "STORE_UNAVAILABLE",
    )
    .await;
}

/// Creates a key, retrying while the store refuses with 503 (each refusal checked),
/// for at most ten seconds; returns the secret and how long recovery took.
async fn create_once_recovered(url: &str) -> (String, Duration) {
    let start = tokio::time::Instant::now();
    loop {
        let response = create(url).await;
        if response.status() == 201 {
            return (created(response).await, start.elapsed());
        }
        assert_store_unavailable(response).await;
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "writes did not recover within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a command, true when it succeeded.
fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Makes the SQLite database and its write-ahead log immutable (`chattr +i`) until
/// dropped.
///
/// Not the `-shm` index: SQLite maps it into memory, and a write to a mapped page of
/// a file turned immutable under it is a SIGBUS, which kills the process (as any
/// program with a shared mapping would be). A supervisor restarts it and nothing
/// acknowledged is lost (`tests/it/durability.rs` kills the proxy with SIGKILL); that
/// fault is in SECURITY.md's list of what the proxy does not survive in place.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    /// `None` when this machine cannot (not root, or a file system without the flag).
    fn files_of(dir: &Path) -> Option<Immutable> {
        let files: Vec<PathBuf> = ["authmd.sqlite3", "authmd.sqlite3-wal"]
            .iter()
            .map(|name| dir.join(name))
            .collect();
        let mut done = Immutable(Vec::new());
        for file in files {
            if !run("chattr", &["+i", file.to_str().unwrap()]) {
                return None;
            }
            done.0.push(file);
        }
        Some(done)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for file in &self.0 {
            run("chattr", &["-i", file.to_str().unwrap()]);
        }
    }
}

#[tokio::test]
async fn an_unwritable_sqlite_file_refuses_writes_with_503_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let config = config_in(dir.path(), |yaml| yaml);
    let mut proxy = start(&config, &data).await;
    let mut acknowledged = vec![created(create(&proxy.url).await).await];

    let Some(frozen) = Immutable::files_of(&data) else {
        eprintln!("skipped: `chattr +i` is not available here (needs root on ext4 or similar)");
        return;
    };
    for _ in 0..3 {
        assert_store_unavailable(create(&proxy.url).await).await;
    }
    assert_eq!(
        write_status(&proxy.url, &acknowledged[0]).await,
        200,
        "keys already issued verify from memory"
    );
    let before = listed(&proxy.url).await;

    drop(frozen);
    let (key, took) = create_once_recovered(&proxy.url).await;
    acknowledged.push(key);
    eprintln!("writes recovered {took:?} after the file became writable");
    assert_eq!(listed(&proxy.url).await.len(), before.len() + 1);

    // Every acknowledged key outlives the process, and nothing refused appeared.
    proxy.kill();
    let proxy = start(&config, &data).await;
    for key in &acknowledged {
        assert_eq!(write_status(&proxy.url, key).await, 200);
    }
    assert_eq!(listed(&proxy.url).await.len(), acknowledged.len());
}

/// A tmpfs of a few MiB mounted on a fresh directory until dropped.
struct SmallDisk {
    mount: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let mount = tempfile::tempdir().unwrap();
        let options = format!("size={size}");
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &options,
                "tmpfs",
                mount.path().to_str().unwrap(),
            ],
        )
        .then_some(SmallDisk { mount })
    }

    /// Fills the disk with a ballast file until the file system says it is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.mount.path().join("ballast");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0x5a_u8; 64 * 1024];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) if error.raw_os_error() == Some(28) => break, // ENOSPC
                Err(error) => panic!("filling the disk: {error}"),
            }
        }
        // Byte-sized leftovers too, so that not even a page remains.
        while file.write(&[0]).is_ok_and(|n| n == 1) {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        run("umount", &["-l", self.mount.path().to_str().unwrap()]);
    }
}

#[tokio::test]
async fn a_full_data_directory_refuses_writes_with_503_and_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount("4m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path(), |yaml| yaml);
    let data = disk.mount.path();
    let mut proxy = start(&config, data).await;
    let mut acknowledged = vec![created(create(&proxy.url).await).await];

    let ballast = disk.fill();
    let mut refused = 0;
    for _ in 0..20 {
        // The WAL may still have room for a few pages: writes are refused once it
        // has none, and never acknowledged without being stored.
        let response = create(&proxy.url).await;
        if response.status() == 201 {
            acknowledged.push(created(response).await);
        } else {
            assert_store_unavailable(response).await;
            refused += 1;
        }
    }
    assert!(
        refused >= 10,
        "a full disk refused only {refused} of 20 writes"
    );
    assert_eq!(write_status(&proxy.url, &acknowledged[0]).await, 200);
    assert_eq!(
        client()
            .get(format!("{}/api/v1/offers", proxy.url))
            .bearer_auth(WRITER_KEY)
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "reads and forwarding are unaffected"
    );

    std::fs::remove_file(ballast).unwrap();
    let (key, took) = create_once_recovered(&proxy.url).await;
    acknowledged.push(key);
    eprintln!("writes recovered {took:?} after space returned ({refused} refused)");

    proxy.kill();
    let mut proxy = start(&config, data).await;
    for key in &acknowledged {
        assert_eq!(
            write_status(&proxy.url, key).await,
            200,
            "acknowledged, then lost"
        );
    }
    assert_eq!(listed(&proxy.url).await.len(), acknowledged.len());
    proxy.kill();
    drop(disk);
}

/// A PostgreSQL config through `relay`, in a schema of its own; `None` without a
/// server to test against.
fn postgres_config(dir: &Path, relay: &Relay, schema: &str) -> PathBuf {
    let url = std::env::var("AUTHMD_TEST_POSTGRES_URL").unwrap();
    let parsed: tokio_postgres::Config = url.parse().unwrap();
    let user = parsed.get_user().unwrap_or("postgres").to_owned();
    let db = parsed.get_dbname().unwrap_or("test").to_owned();
    config_in(dir, |yaml| {
        let yaml = support::shared_signing_key(&yaml, dir);
        yaml.replace(
            "store:\n  kind: sqlite",
            &format!(
                "store:\n  url: postgres://{user}@127.0.0.1:{}/{db}?connect_timeout=2\n  schema: {schema}\n  kind: postgres",
                relay.port
            ),
        )
    })
}

/// The relay to the test server, or `None` (skip) without one.
async fn postgres_relay() -> Option<(Relay, String)> {
    let Ok(url) = std::env::var("AUTHMD_TEST_POSTGRES_URL") else {
        eprintln!("skipped: AUTHMD_TEST_POSTGRES_URL is not set");
        return None;
    };
    let parsed: tokio_postgres::Config = url.parse().unwrap();
    let host = match parsed.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = parsed.get_ports().first().copied().unwrap_or(5432);
    Some((Relay::start(&format!("{host}:{port}")).await, url))
}

async fn drop_schema(url: &str, schema: &str) {
    if let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await;
    }
}

/// Creates keys from `writers` concurrent clients until `stop`; returns the secrets
/// acknowledged (201) and how many were refused (503, checked).
async fn create_until(
    url: &str,
    writers: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<String>, usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..writers {
        let (url, stop) = (url.to_owned(), stop.clone());
        tasks.spawn(async move {
            let (mut acknowledged, mut refused) = (Vec::new(), 0);
            while !*stop.borrow() {
                let response = create(&url).await;
                if response.status() == 201 {
                    acknowledged.push(created(response).await);
                } else {
                    assert_store_unavailable(response).await;
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            (acknowledged, refused)
        });
    }
    let (mut acknowledged, mut refused) = (Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        let (a, r) = done.unwrap();
        acknowledged.extend(a);
        refused += r;
    }
    (acknowledged, refused)
}

/// Breaks the store (with `fault`) while four clients create keys, mends it, and
/// checks every acknowledged key on a fresh replica.
async fn store_fault_under_load(name: &str, fault: impl FnOnce(&Relay)) {
    let Some((relay, url)) = postgres_relay().await else {
        return;
    };
    let schema = format!("{name}_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let config = postgres_config(dir.path(), &relay, &schema);
    let data = dir.path().join("data");
    let proxy = start(&config, &data).await;
    let first = created(create(&proxy.url).await).await;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = tokio::spawn({
        let url = proxy.url.clone();
        async move { create_until(&url, 4, stopped).await }
    });
    let progress = || async { listed(&proxy.url).await.len() };
    let start_count = progress().await;
    eventually(Duration::from_secs(10), || async {
        progress().await >= start_count + 20
    })
    .await;

    fault(&relay);
    // While the store is away: issued keys verify from memory, and key writes are
    // refused (each one checked inside the load) instead of hanging or failing 500.
    assert_eq!(write_status(&proxy.url, &first).await, 200);
    assert_store_unavailable(create(&proxy.url).await).await;

    relay.restore();
    let took = eventually(Duration::from_secs(20), || async {
        create(&proxy.url).await.status() == 201
    })
    .await;
    eprintln!("{name}: writes recovered {took:?} after the store returned");
    let resumed = progress().await;
    eventually(Duration::from_secs(10), || async {
        progress().await >= resumed + 20
    })
    .await;
    stop.send(true).unwrap();
    let (acknowledged, refused) = load.await.unwrap();
    eprintln!(
        "{name}: {} keys acknowledged, {refused} writes refused",
        acknowledged.len()
    );
    assert!(refused > 0, "the fault refused no write: it did not happen");

    // A second replica, reading the store afresh, knows every acknowledged key.
    let replica = start(&config, &data).await;
    for key in acknowledged.iter().chain([&first]) {
        assert_eq!(
            write_status(&replica.url, key).await,
            200,
            "acknowledged, then lost"
        );
    }
    drop((proxy, replica));
    drop_schema(&url, &schema).await;
}

#[tokio::test]
async fn postgres_restarting_while_keys_are_created_loses_nothing_acknowledged() {
    store_fault_under_load("restart", Relay::cut).await;
}

#[tokio::test]
async fn postgres_partitioned_while_keys_are_created_loses_nothing_acknowledged() {
    store_fault_under_load("partition", Relay::stall).await;
}

/// An upstream that answers each connection with `garbage` while `broken` holds,
/// and a proper 200 otherwise.
async fn flaky_upstream(
    garbage: &'static [u8],
    broken: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let broken = broken.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0_u8; 64 * 1024];
                loop {
                    // One request per read is enough for these small GETs.
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if broken.load(std::sync::atomic::Ordering::SeqCst) {
                        let _ = socket.write_all(garbage).await;
                        return;
                    }
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if socket.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_answering_garbage_is_502_and_traffic_recovers_with_it() {
    let cases: [(&str, &[u8]); 5] = [
        ("not HTTP", b"SSH-2.0-OpenSSH_9.6\r\n"),
        ("a bad status line", b"HTTP/1.1 two hundred OK\r\n\r\n"),
        (
            "a header without a colon",
            b"HTTP/1.1 200 OK\r\nbroken header\r\ncontent-length: 0\r\n\r\n",
        ),
        (
            "two content lengths",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok!",
        ),
        (
            "binary noise",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x00\x00\x00",
        ),
    ];
    for (what, garbage) in cases {
        let broken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let upstream = flaky_upstream(garbage, broken.clone()).await;
        let proxy = support::TestProxy::example(Some(upstream)).await;
        let get = || async {
            client()
                .get(proxy.url("/api/v1/offers"))
                .bearer_auth(WRITER_KEY)
                .send()
                .await
                .unwrap()
        };
        assert_eq!(get().await.status(), 200, "{what}: healthy first");
        broken.store(true, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..3 {
            let response = get().await;
            assert_eq!(response.status(), 502, "{what}");
            let body = json(response).await;
            assert_eq!(body["code"], "UPSTREAM_UNAVAILABLE", "{what}: {body}");
        }
        broken.store(false, std::sync::atomic::Ordering::SeqCst);
        // The pooled connections that saw garbage are gone: the next request succeeds.
        let response = get().await;
        assert_eq!(response.status(), 200, "{what}: recovered");
        assert_eq!(response.text().await.unwrap(), "ok");
        proxy.shutdown().await;
    }
}
