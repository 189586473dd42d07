//! The container image: what `deploy/build-image.sh` builds, run with buildah.
//!
//! CI builds the image and names it in `AUTHMD_TEST_IMAGE`; without it these tests
//! say so and skip. They check the image's configuration and files, then run its
//! own entrypoint and command the way a container runtime would (`buildah run`,
//! chroot isolation, the host's network) in front of a real upstream: the proxy
//! serves `config.example.yaml`, runs as the non-root user, writes only to its data
//! volume, answers its health check, and stops cleanly on SIGTERM.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "tests: a failed step should fail loudly"
)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use authmd_proxy::body::Body;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::support;
use crate::support::{Binary, WRITER_KEY, assert_envelope, client};

/// The user the image runs as.
const USER: u32 = 65532;

fn image() -> Option<String> {
    let image = std::env::var("AUTHMD_TEST_IMAGE").ok();
    if image.is_none() {
        eprintln!(
            "skipped: AUTHMD_TEST_IMAGE names no image (build one with deploy/build-image.sh)"
        );
    }
    image
}

/// `buildah <args>`, in the storage the build script uses; its standard output.
fn buildah(args: &[&str]) -> String {
    let out = buildah_command(args).output().unwrap();
    assert!(
        out.status.success(),
        "buildah {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn buildah_command(args: &[&str]) -> Command {
    let mut command = Command::new("buildah");
    if std::env::var_os("STORAGE_DRIVER").is_none() {
        command.env("STORAGE_DRIVER", "vfs");
    }
    command.args(args);
    command
}

/// The image's configuration: the OCI config, with Docker's `Healthcheck` added.
fn config(image: &str) -> Value {
    let inspect: Value =
        serde_json::from_str(&buildah(&["inspect", "--type", "image", image])).unwrap();
    let mut config = inspect["OCIv1"]["config"].clone();
    config["Healthcheck"] = inspect["Docker"]["config"]["Healthcheck"].clone();
    config
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// A working container of the image, with its root filesystem mounted; removed
/// when dropped.
struct Container {
    name: String,
    root: PathBuf,
}

impl Container {
    fn new(image: &str) -> Container {
        let name = format!("authmd-test-{}-{}", std::process::id(), unique());
        buildah(&["from", "--name", &name, image]);
        let root = PathBuf::from(buildah(&["mount", &name]).trim());
        Container { name, root }
    }

    /// `buildah run` of `command` in this container, with `env` and `volume`.
    fn run(&self, env: &[(&str, String)], volume: Option<&Path>, command: &[String]) -> Command {
        let mut args = vec!["run".to_owned(), "--isolation".into(), "chroot".into()];
        for (name, value) in env {
            args.extend(["--env".into(), format!("{name}={value}")]);
        }
        if let Some(dir) = volume {
            args.extend([
                "--volume".into(),
                format!("{}:/var/lib/authmd", dir.display()),
            ]);
        }
        args.push(self.name.clone());
        args.push("--".into());
        args.extend(command.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        buildah_command(&args)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = buildah_command(&["rm", &self.name]).output();
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What a container runtime itself mounts into the root filesystem.
const RUNTIME_MOUNTS: [&str; 7] = [
    "dev",
    "proc",
    "sys",
    "run",
    "etc/hosts",
    "etc/hostname",
    "etc/resolv.conf",
];

/// Every file under `root` but the runtime's mount points (relative path, size,
/// modification time, owner; directories by owner only), to show that running the
/// image wrote nothing outside its volume.
fn snapshot(root: &Path) -> BTreeMap<String, (u64, i64, u32)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u64, i64, u32)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            if RUNTIME_MOUNTS.contains(&relative.as_str()) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                out.insert(relative, (0, 0, meta.uid()));
                walk(root, &path, out);
            } else {
                out.insert(relative, (meta.len(), meta.mtime(), meta.uid()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The process ids of `authmd-proxy` processes descending from `ancestor`.
fn proxies_under(ancestor: u32) -> Vec<u32> {
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid ...`: comm may hold spaces, so split after ')'.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "authmd-proxy" {
            continue;
        }
        let mut cursor = parent_of(pid);
        while let Some(p) = cursor.filter(|&p| p > 1) {
            if p == ancestor {
                found.push(pid);
                break;
            }
            cursor = parent_of(p);
        }
    }
    found
}

#[test]
fn the_image_holds_the_binary_and_what_it_needs_and_runs_as_a_non_root_user() {
    let Some(image) = image() else { return };
    let config = config(&image);
    assert_eq!(config["User"], "65532:65532", "{config:#}");
    assert_eq!(config["StopSignal"], "SIGTERM");
    assert!(
        config["Volumes"]["/var/lib/authmd"].is_object(),
        "{config:#}"
    );
    assert!(config["ExposedPorts"]["8080/tcp"].is_object());
    assert!(config["ExposedPorts"]["9090/tcp"].is_object());
    assert_eq!(
        strings(&config["Entrypoint"]),
        ["/usr/local/bin/authmd-proxy"]
    );
    assert_eq!(strings(&config["Cmd"]), ["run"]);
    assert_eq!(
        strings(&config["Healthcheck"]["Test"]),
        ["CMD", "/usr/local/bin/authmd-proxy", "health"]
    );
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "authmd-proxy");
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    let revision = labels["org.opencontainers.image.revision"]
        .as_str()
        .unwrap();
    assert!(revision.len() == 40 || revision == "unknown", "{revision}");
    let env = strings(&config["Env"]);
    for setting in [
        "AUTHMD_CONFIG=/etc/authmd/config.yaml",
        "AUTHMD_DATA_DIR=/var/lib/authmd",
        "AUTHMD_LISTEN=0.0.0.0:8080",
        "AUTHMD_ADMIN_LISTEN=0.0.0.0:9090",
    ] {
        assert!(env.iter().any(|e| e == setting), "{setting} in {env:?}");
    }

    let container = Container::new(&image);
    let files = snapshot(&container.root);
    for (path, (_, _, uid)) in &files {
        let allowed = path == "usr/local/bin/authmd-proxy"
            || [
                "etc/passwd",
                "etc/group",
                "etc/nsswitch.conf",
                "etc/authmd/config.yaml",
            ]
            .contains(&path.as_str())
            || (path.starts_with("lib") && path.contains(".so"))
            || (path.starts_with("usr/share/doc/") && path.ends_with("/copyright"))
            || path == "var/lib/authmd"
            || std::fs::symlink_metadata(container.root.join(path))
                .unwrap()
                .is_dir();
        assert!(allowed, "unexpected file in the image: /{path}");
        let owner = if path.starts_with("var/lib/authmd") {
            USER
        } else {
            0
        };
        assert_eq!(*uid, owner, "/{path} is owned by {uid}");
    }
    let binary = std::fs::metadata(container.root.join("usr/local/bin/authmd-proxy")).unwrap();
    assert!(binary.mode() & 0o111 != 0, "the binary is executable");
    let total: u64 = files.values().map(|(len, _, _)| len).sum();
    assert!(total > 1 << 20, "sizes are read: {total}");
    assert!(total < 64 << 20, "the image holds {total} bytes");
    assert_eq!(
        std::fs::read_to_string(container.root.join("etc/authmd/config.yaml")).unwrap(),
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
    );
    let passwd = std::fs::read_to_string(container.root.join("etc/passwd")).unwrap();
    assert!(passwd.contains(":65532:65532:"), "{passwd}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_serves_the_example_config_in_front_of_an_upstream_and_stops_on_sigterm() {
    let Some(image) = image() else { return };
    let upstream = support::upstream(|request| async move {
        let headers: serde_json::Map<String, Value> = request
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), json!(value.to_str().unwrap_or_default())))
            .collect();
        let body = json!({"path": request.uri().path(), "headers": headers});
        Response::new(Body::full(body.to_string()))
    })
    .await;
    let config = config(&image);
    let container = Container::new(&image);
    let before = snapshot(&container.root);
    let volume = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(volume.path(), Some(USER), Some(USER)).unwrap();

    // The image's own entrypoint and command; only the addresses differ (port 0,
    // loopback) and the upstream (a real one instead of the built-in echo).
    let command: Vec<String> = strings(&config["Entrypoint"])
        .into_iter()
        .chain(strings(&config["Cmd"]))
        .collect();
    let env = [
        ("RUST_LOG", "info".to_owned()),
        ("AUTHMD_LISTEN", "127.0.0.1:0".to_owned()),
        ("AUTHMD_ADMIN_LISTEN", "127.0.0.1:0".to_owned()),
        ("AUTHMD_UPSTREAM", format!("http://{upstream}")),
        ("AUTHMD_PUBLIC_URL", "https://api.example.test".to_owned()),
    ];
    let mut proxy = Binary::launch(container.run(&env, Some(volume.path()), &command)).await;
    let http = client();
    let url = |path: &str| format!("{}{path}", proxy.url);

    // A public route and an anonymous one reach the upstream.
    let health = http.get(url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let seen: Value = health.json().await.unwrap();
    assert_eq!(seen["path"], "/health");
    let offers = http.get(url("/api/v1/offers")).send().await.unwrap();
    assert_eq!(offers.status(), StatusCode::OK);

    // A write needs a key: refused without one, forwarded with the example key.
    let refused = http.post(url("/api/v1/offers")).send().await.unwrap();
    assert!(refused.headers().contains_key("www-authenticate"));
    assert_envelope(refused, 401, "unauthorized", "UNAUTHORIZED").await;
    let created = http
        .post(url("/api/v1/offers"))
        .bearer_auth(WRITER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::OK);
    let seen: Value = created.json().await.unwrap();
    assert!(
        !seen["headers"].to_string().contains(WRITER_KEY),
        "the key never reaches the upstream: {seen}"
    );

    // The documents name the public URL; a registration is stored in the volume.
    let auth_md = http.get(url("/auth.md")).send().await.unwrap();
    assert_eq!(auth_md.status(), StatusCode::OK);
    assert!(
        auth_md
            .text()
            .await
            .unwrap()
            .contains("https://api.example.test")
    );
    let registered = http
        .post(url("/agent/auth/register"))
        .json(&json!({"type": "anonymous"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::OK);
    let key = registered.json::<Value>().await.unwrap()["credential"]
        .as_str()
        .unwrap()
        .to_owned();
    let with_new_key = http
        .post(url("/api/v1/offers"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(with_new_key.status(), StatusCode::OK);
    let store = std::fs::metadata(volume.path().join("authmd.sqlite3")).unwrap();
    assert_eq!(
        store.uid(),
        USER,
        "the store is written by the image's user"
    );

    // The image's health check, run inside the container against the admin port.
    let admin = proxy.admin.clone().unwrap();
    let admin_addr = admin.trim_start_matches("http://").to_owned();
    let check: Vec<String> = strings(&config["Healthcheck"]["Test"])[1..].to_vec();
    for ready in [false, true] {
        let mut check = check.clone();
        if ready {
            check.push("--ready".into());
        }
        let env = [("AUTHMD_ADMIN_LISTEN", admin_addr.clone())];
        let out = container.run(&env, None, &check).output().unwrap();
        assert!(
            out.status.success(),
            "{check:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // SIGTERM (the image's STOPSIGNAL) to the proxy: a clean exit, and the root
    // filesystem is as it was: everything went to the volume.
    let pids = proxies_under(proxy.pid());
    assert_eq!(pids.len(), 1, "one proxy process under buildah: {pids:?}");
    let status = Command::new("kill")
        .args(["-TERM", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = proxy.wait().await;
    assert!(status.success(), "exit status {status}");
    assert!(
        proxy
            .log_lines()
            .iter()
            .any(|line| line.contains("stopped")),
        "the proxy logs its clean stop"
    );
    assert_eq!(
        snapshot(&container.root),
        before,
        "the root filesystem was written to"
    );
}
