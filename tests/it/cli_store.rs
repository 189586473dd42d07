//! The operator's commands find the store and the settings `run` uses, driven
//! through the real binary: `keys create`, `list` and `revoke` under `--data-dir`
//! and `AUTHMD_DATA_DIR` reach the running proxy's store; a key created without
//! `--scopes` holds its tier's scopes; `keys hash` refuses what the proxy would
//! refuse; `tokens generate-key --out` writes a file only its owner can read;
//! `run` reads `AUTHMD_WORKERS`; `deploy/build-image.sh` takes the binary from
//! `CARGO_TARGET_DIR`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step should fail loudly"
)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::{Binary, client, eventually, write_status};

const BIN: &str = env!("CARGO_BIN_EXE_authmd-proxy");
pub(crate) const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// How long a revocation may take to reach the proxy: its resync is every 100 ms.
const RESYNC_BOUND: Duration = Duration::from_secs(10);

/// The example config in `dir`, its store left at `data` (relative to the file:
/// `dir/data`) and resynced every 100 ms; the commands under test are pointed at
/// another directory, so a command that ignored the flag would miss the store.
fn example_config(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(format!("{ROOT}/config.example.yaml")).unwrap();
    assert!(text.contains("  data_dir: data "), "the example's data_dir");
    let text = text.replace("  resync_interval: 10s", "  resync_interval: 100ms");
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The binary with `args`, none of the variables under test inherited.
pub(crate) fn command(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("AUTHMD_DATA_DIR")
        .env_remove("AUTHMD_CONFIG")
        .env_remove("AUTHMD_WORKERS");
    command
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `command` and asserts it succeeded; its standard output.
pub(crate) fn succeeds(command: &mut Command) -> String {
    let out = command.output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{command:?}: {stderr}");
    stdout
}

/// A field (`id:`, `key:`, `scopes:`) of `keys create`'s output.
pub(crate) fn field(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no `{name}` in {out}"))
        .trim()
        .to_owned()
}

/// The status of `GET /api/v1/offers` (an anonymous route needing `offers:read`)
/// with `key`, or with no credential.
async fn read_status(base: &str, key: Option<&str>) -> u16 {
    let mut request = client().get(format!("{base}/api/v1/offers"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap().status().as_u16()
}

/// `run` on free ports, with `env` set on its process.
pub(crate) async fn run(config: &Path, extra: &[&str], env: &[(&str, &str)]) -> Binary {
    let mut command = command(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    command.args(extra).env("RUST_LOG", "info");
    for (name, value) in env {
        command.env(name, value);
    }
    Binary::launch(command).await
}

#[tokio::test]
async fn keys_commands_under_data_dir_reach_the_store_run_serves_from() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let data = dir.path().join("elsewhere");
    let flag = ["--data-dir", data.to_str().unwrap()];
    let c = config.to_str().unwrap();

    let created = succeeds(
        command(&["keys", "create", "--config", c, "--name", "ops"])
            .args(["--scopes", "offers:write"])
            .args(flag),
    );
    let (id, secret) = (field(&created, "id:"), field(&created, "key:"));
    let listed = succeeds(command(&["keys", "list", "--config", c]).args(flag));
    assert!(listed.contains(&id), "{listed}");

    let proxy = run(&config, &flag, &[]).await;
    assert_eq!(write_status(&proxy.url, &secret).await, 200);

    let revoked = succeeds(command(&["keys", "revoke", "--config", c, &id]).args(flag));
    assert!(revoked.contains("revoked"), "{revoked}");
    eventually(RESYNC_BOUND, || async {
        write_status(&proxy.url, &secret).await == 401
    })
    .await;
    assert!(
        !dir.path().join("data").exists(),
        "nothing went to the config's own data_dir"
    );
}

#[tokio::test]
async fn keys_commands_under_authmd_data_dir_reach_the_store_run_serves_from() {
    // The container image sets AUTHMD_DATA_DIR, and so does a sidecar made from it.
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let data = dir.path().join("volume");
    let c = config.to_str().unwrap();
    let keys = |args: &[&str]| {
        let mut command = command(&["keys"]);
        command
            .args(args)
            .args(["--config", c])
            .env("AUTHMD_DATA_DIR", &data);
        succeeds(&mut command)
    };

    let created = keys(&["create", "--name", "ops", "--scopes", "offers:write"]);
    let (id, secret) = (field(&created, "id:"), field(&created, "key:"));
    let proxy = run(&config, &[], &[("AUTHMD_DATA_DIR", data.to_str().unwrap())]).await;
    assert_eq!(write_status(&proxy.url, &secret).await, 200);
    assert!(keys(&["list"]).contains(&id));

    assert!(keys(&["revoke", &id]).contains("revoked"));
    eventually(RESYNC_BOUND, || async {
        write_status(&proxy.url, &secret).await == 401
    })
    .await;
    assert!(!dir.path().join("data").exists());
}

#[tokio::test]
async fn a_key_created_without_scopes_holds_its_tier_s_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let c = config.to_str().unwrap();
    let created = succeeds(&mut command(&[
        "keys", "create", "--config", c, "--name", "plain",
    ]));
    assert_eq!(
        field(&created, "scopes:"),
        "offers:read offers:write (the `free` tier's, as no `--scopes` was given)"
    );
    let secret = field(&created, "key:");
    let verified = succeeds(&mut command(&[
        "keys", "create", "--config", c, "--name", "v", "--tier", "verified",
    ]));
    assert!(
        field(&verified, "scopes:").starts_with(
            "offers:read offers:write offers:delete contacts:reveal (the `verified` tier's"
        ),
        "{verified}"
    );
    // An explicitly empty list is refused rather than making a key of no scopes.
    let out = command(&[
        "keys", "create", "--config", c, "--name", "x", "--scopes", "",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", text(&out).1);

    let proxy = run(&config, &[], &[]).await;
    // Where an anonymous caller gets 200, the key does too; and it may write.
    assert_eq!(read_status(&proxy.url, None).await, 200);
    assert_eq!(read_status(&proxy.url, Some(&secret)).await, 200);
    assert_eq!(write_status(&proxy.url, &secret).await, 200);
}

/// `keys hash` with `args`, `value` on its standard input.
fn hash(args: &[&str], value: &str) -> Output {
    let mut child = command(&["keys", "hash"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{value}").unwrap();
    child.wait_with_output().unwrap()
}

/// Asserts `keys hash` refused `value` with exit 64, saying `why` and never
/// repeating the value.
fn refused(args: &[&str], value: &str, why: &str) {
    let out = hash(args, value);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains(why), "{args:?}: {stderr}");
    assert!(
        !stderr.contains(value),
        "the value is never echoed: {stderr}"
    );
}

#[test]
fn keys_hash_refuses_what_the_proxy_would_refuse() {
    let example = format!("{ROOT}/config.example.yaml");
    let example = example.as_str();
    let key = authmd_proxy::credentials::api_key::mint("ak_live").unwrap();
    let key = key.secret.as_str();
    refused(&[], "notakey", "is not an API key");
    refused(
        &["--config", example],
        "notakey",
        "known key prefix (`ak_live_`)",
    );
    // One character changed: the checksum no longer matches.
    let last = if key.ends_with('2') { '3' } else { '2' };
    let mistyped = format!("{}{last}", &key[..key.len() - 1]);
    refused(&[], &mistyped, "checksum is wrong");
    refused(&["--config", example], &mistyped, "checksum is wrong");
    refused(&["--prefix", "gsk"], key, "known key prefix (`gsk_`)");

    for args in [&[][..], &["--config", example], &["--prefix", "ak_live"]] {
        let out = hash(args, key);
        assert!(out.status.success(), "{args:?}: {}", text(&out).1);
        assert_eq!(
            text(&out).0.trim(),
            authmd_proxy::credentials::KeyHash::of(key).to_string()
        );
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn tokens_generate_key_out_writes_a_file_only_its_owner_reads() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("signing.pem");
    let f = file.to_str().unwrap();
    succeeds(&mut command(&["tokens", "generate-key", "--out", f]));
    assert_eq!(mode(&file), 0o600);
    let first = std::fs::read_to_string(&file).unwrap();
    assert!(first.starts_with("-----BEGIN PRIVATE KEY-----"), "{first}");

    // Never over an existing file, unless told to.
    let out = command(&["tokens", "generate-key", "--out", f])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), first);

    // Replaced, and 0600 even where the old file was readable by all.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    succeeds(&mut command(&[
        "tokens",
        "generate-key",
        "--algorithm",
        "ES256",
        "--out",
        f,
        "--force",
    ]));
    assert_eq!(mode(&file), 0o600);
    assert_ne!(std::fs::read_to_string(&file).unwrap(), first);

    // On standard output the key comes with a warning about the file's mode.
    let out = command(&["tokens", "generate-key"]).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success());
    assert!(stdout.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(
        stderr.contains("0600") && stderr.contains("--out"),
        "{stderr}"
    );
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
}

#[tokio::test]
async fn run_reads_its_worker_count_from_authmd_workers() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let mut child = command(&["run", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("AUTHMD_DATA_DIR", dir.path())
        .env("AUTHMD_WORKERS", "many")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Refused at once; a proxy that ignored the variable would be serving instead.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`run` ignored AUTHMD_WORKERS=many and kept serving");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let out = child.wait_with_output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--workers"), "{stderr}");

    let proxy = run(&config, &[], &[("AUTHMD_WORKERS", "1")]).await;
    assert_eq!(read_status(&proxy.url, None).await, 200);
}

/// `deploy/build-image.sh` with `CARGO_TARGET_DIR` set: the release binary is
/// taken from there and the build context assembled there. `cargo` and `buildah`
/// are stand-ins on `PATH` (a release build and an image build are CI's work, see
/// `image.rs`); the stand-in binary is a copy of `/bin/true`, which `ldd` and
/// `strip` treat as they treat the proxy.
#[test]
fn build_image_takes_the_binary_from_cargo_target_dir() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let target = dir.path().join("target");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::fs::copy("/bin/true", target.join("release/authmd-proxy")).unwrap();
    let log = dir.path().join("buildah.log");
    let stand_in = |name: &str, body: &str| {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    stand_in("cargo", "exit 0");
    stand_in(
        "buildah",
        &format!(
            "for a in \"$@\"; do last=$a; done\necho \"$last\" > {}\n\
             test -x \"$last/rootfs/usr/local/bin/authmd-proxy\"",
            log.display()
        ),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(format!("{ROOT}/deploy/build-image.sh"))
        .arg("authmd-proxy:test")
        .env("PATH", path)
        .env("BUILDER", "buildah")
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("built authmd-proxy:test"), "{stdout}");
    let context = std::fs::read_to_string(&log).unwrap();
    assert_eq!(Path::new(context.trim()), target.join("image"));
    assert!(target.join("image/rootfs/etc/authmd/config.yaml").is_file());
}
