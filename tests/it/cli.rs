//! The command line, driven as a user would: `check`, `keys`, and `run` serving
//! `config.example.yaml` (the README's first command).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers of the tests: a failed step fails the test"
)]

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support;
use crate::support::{Binary, READER_KEY, WRITER_KEY, assert_envelope, client, json};

const BIN: &str = env!("CARGO_BIN_EXE_authmd-proxy");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml");

/// `check` on a config that must pass; what it printed.
fn check_passes(config: &str) -> String {
    let out = Command::new(BIN)
        .args(["check", "--config", config])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn check_accepts_the_example_config() {
    assert!(check_passes(EXAMPLE).contains("ok (8 routes"));
}

/// The load benchmark's config is valid, and the key its anchors compare with
/// (`API_KEY` in `benches/e2e/run.sh`) is the one whose hash it declares.
#[test]
fn the_benchmark_config_is_valid_and_matches_its_script() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/e2e");
    let config = format!("{dir}/authmd.yaml");
    check_passes(&config);
    let yaml = std::fs::read_to_string(&config).unwrap();
    let secret = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("# secret: "))
        .unwrap();
    let hash = authmd_proxy::credentials::KeyHash::of(secret);
    let declared = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("hash: "))
        .unwrap();
    assert_eq!(
        authmd_proxy::credentials::KeyHash::parse(declared),
        Some(hash)
    );
    let script = std::fs::read_to_string(format!("{dir}/run.sh")).unwrap();
    assert!(
        script.lines().any(|l| l == format!("API_KEY={secret}")),
        "run.sh's API_KEY is not the config's key"
    );
}

const BROKEN: &str = "\
listen: 127.0.0.1:8080
upstream:
  url: builtin:echo
scopes:
  offers:read: Read offers
routes:
  - path: /api/v1/offers
    scopes: [ofers:read]
  - path: /api/v1/offers/{id}
    methods: [GET, YEET]
  - path: /x
    access: sometimes
keys:
  - id: k
    hash: ${KEY_HASH_THAT_IS_NOT_SET}
";

#[test]
fn check_lists_every_problem_with_its_line_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, BROKEN).unwrap();
    for command in ["check", "run"] {
        let out = Command::new(BIN)
            .args([command, "--config", path.to_str().unwrap()])
            .env_remove("KEY_HASH_THAT_IS_NOT_SET")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let file = path.display().to_string();
        for expected in [
            format!(
                "{file}:8:14: routes[0].scopes[0]: unknown scope `ofers:read`; did you mean `offers:read`?"
            ),
            format!("{file}:10:20: routes[1].methods[1]: `YEET` is not an HTTP method"),
            format!("{file}:12:5: routes[2].access: unknown variant `sometimes`"),
            format!(
                "{file}:15:5: keys[0].hash: environment variable `KEY_HASH_THAT_IS_NOT_SET` is not set"
            ),
            "4 problem(s)".to_owned(),
        ] {
            assert!(
                stderr.contains(&expected),
                "{command}: missing {expected:?} in\n{stderr}"
            );
        }
    }
}

#[test]
fn keys_generate_and_hash_agree() {
    let out = Command::new(BIN)
        .args(["keys", "generate", "--prefix", "ak_live"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let key = text.lines().find_map(|l| l.strip_prefix("key:  ")).unwrap();
    let hash = text.lines().find_map(|l| l.strip_prefix("hash: ")).unwrap();
    assert!(key.starts_with("ak_live_") && key.len() >= 45, "{key}");
    assert!(authmd_proxy::credentials::api_key::checksum_ok(
        key, "ak_live"
    ));

    let mut child = Command::new(BIN)
        .args(["keys", "hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{key}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), hash);

    let out = Command::new(BIN)
        .args(["keys", "generate", "--prefix", "Not A Prefix"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

/// `login hash-password` prints an argon2id hash that signs the person in, and
/// the example's demo hash is one of `authmd-demo`, as its comment says.
#[tokio::test]
async fn login_hash_password_makes_a_hash_that_signs_in() {
    let hash_of = |input: &str| {
        let mut child = Command::new(BIN)
            .args(["login", "hash-password"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        write!(child.stdin.take().unwrap(), "{input}").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = hash_of("a long passphrase\n");
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    assert_eq!(authmd_proxy::login::check_hash(&hash), Ok(()));
    let empty = hash_of("");
    assert_eq!(empty.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&empty.stderr).contains("no password"));

    // The hash signs in: a proxy whose demo account has it; and the example's own
    // demo account is `authmd-demo`.
    let example = std::fs::read_to_string(EXAMPLE).unwrap();
    let demo = example
        .lines()
        .find_map(|l| l.trim().strip_prefix("password_hash: "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    for (yaml, password) in [
        (example.replace(&demo, &hash), "a long passphrase"),
        (example.clone(), "authmd-demo"),
    ] {
        let proxy = crate::support::TestProxy::start(&yaml, None).await;
        let browser = crate::login::Browser::new();
        let page = browser.get(&proxy.url("/oauth2/login")).await;
        let csrf = crate::login::csrf_of(&page.text().await.unwrap());
        let fields = [
            ("provider", "demo"),
            ("username", "demo"),
            ("password", password),
            ("csrf", csrf.as_str()),
            ("return_to", "/oauth2/authorize"),
        ];
        let answer = browser.post(&proxy.url("/oauth2/login"), &fields).await;
        assert_eq!(answer.status().as_u16(), 303, "{password}");
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn the_readme_walkthrough_works_against_the_example_config() {
    let proxy = Binary::start(&[
        "run",
        "--config",
        EXAMPLE,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ])
    .await;
    let url = proxy.url.clone();
    let http = client();
    // 401 with the discovery challenge, derived from the real (random) port.
    let response = http
        .post(format!("{url}/api/v1/offers"))
        .send()
        .await
        .unwrap();
    let www = support::www(&response);
    assert_eq!(
        www,
        format!(
            "Bearer resource_metadata=\"{url}/.well-known/oauth-protected-resource\", scope=\"offers:write\""
        )
    );
    assert_envelope(response, 401, "unauthorized", "UNAUTHORIZED").await;
    // The example key: 200, identity in the echo, no credential header.
    let response = http
        .post(format!("{url}/api/v1/offers"))
        .header("X-Agent-Key", WRITER_KEY)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo = json(response).await;
    assert_eq!(echo["headers"]["x-authmd-principal"], "key:example-writer");
    assert!(echo["headers"].get("x-agent-key").is_none());
    // The read-only key: 403 naming the scope.
    let response = http
        .post(format!("{url}/api/v1/offers"))
        .header("X-Agent-Key", READER_KEY)
        .send()
        .await
        .unwrap();
    assert_envelope(response, 403, "insufficient_scope", "FORBIDDEN").await;
}

/// The example config with its store in `dir` and a quick resync.
fn config_in(dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let text = text
        .replace(
            "  data_dir: data ",
            &format!("  data_dir: {} ", dir.display()),
        )
        .replace("  resync_interval: 10s", "  resync_interval: 100ms");
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The proxy binary serving `config` with its store in `dir`, on free ports.
async fn run_in(dir: &std::path::Path, config: &str) -> Binary {
    let data = dir.to_str().unwrap();
    Binary::start(&[
        "run",
        "--config",
        config,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--data-dir",
        data,
    ])
    .await
}

/// The `key:` line of `keys create`'s output.
fn created_secret(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("key:"))
        .unwrap()
        .trim()
        .to_owned()
}

fn keys(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).arg("keys").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn operator_keys_create_list_revoke_share_the_store_with_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let config = config.to_str().unwrap();
    let (ok, out, err) = keys(&[
        "create",
        "--config",
        config,
        "--name",
        "ops",
        "--scopes",
        "offers:read,offers:write",
    ]);
    assert!(ok, "{err}");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    let (id, secret) = (field("id:"), field("key:"));
    assert!(secret.starts_with("ak_live_"));

    let (ok, listed, _) = keys(&["list", "--config", config]);
    assert!(ok);
    assert!(listed.contains(&id) && listed.contains("live"), "{listed}");
    assert!(!listed.contains(&secret), "list never shows a secret");

    let (ok, _, err) = keys(&[
        "create",
        "--config",
        config,
        "--name",
        "x",
        "--scopes",
        "ofers:read",
    ]);
    assert!(!ok && err.contains("unknown scope `ofers:read`"), "{err}");

    let proxy = run_in(dir.path(), config).await;
    let write = || async {
        client()
            .post(format!("{}/api/v1/offers", proxy.url))
            .bearer_auth(&secret)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(write().await, 200, "loaded before the proxy listens");

    let (ok, out, err) = keys(&["revoke", "--config", config, &id]);
    assert!(ok && out.contains("revoked"), "{err}");
    // The proxy picks up another process's revocation at its next resync (100 ms).
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while write().await != 401 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the revocation reached the running proxy");
    let (ok, _, err) = keys(&["revoke", "--config", config, &id]);
    assert!(!ok && err.contains("no live key"), "{err}");
}

#[tokio::test]
async fn a_stored_key_s_own_limits_replace_its_tier_s() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let config = config.to_str().unwrap();
    let (ok, _, err) = keys(&[
        "create",
        "--config",
        config,
        "--name",
        "x",
        "--rate-limits",
        "2/fortnight",
    ]);
    assert!(!ok && err.contains("`2/fortnight` is not a rate"), "{err}");
    let (ok, out, err) = keys(&[
        "create",
        "--config",
        config,
        "--name",
        "metered",
        "--scopes",
        "offers:read",
        "--rate-limits",
        "2/hour",
        "--quota",
        "100/day",
    ]);
    assert!(ok, "{err}");
    let secret = created_secret(&out);
    let proxy = run_in(dir.path(), config).await;
    let get = || async {
        client()
            .get(format!("{}/api/v1/offers", proxy.url))
            .bearer_auth(&secret)
            .send()
            .await
            .unwrap()
    };
    let first = get().await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["ratelimit-policy"], "2;w=3600, 100;w=86400");
    assert_eq!(first.headers()["ratelimit-limit"], "2");
    assert_eq!(first.headers()["ratelimit-remaining"], "1");
    assert_eq!(get().await.status(), 200);
    assert_eq!(
        get().await.status(),
        429,
        "the key's 2/hour, not its tier's 10/s"
    );
}

#[tokio::test]
async fn upstream_on_the_command_line_overrides_the_config() {
    // What an injected sidecar does: the config says `builtin:echo`, the flag
    // names the API next to it.
    let upstream = support::upstream(
        |request: hyper::Request<hyper::body::Incoming>| async move {
            let mut response = hyper::Response::new(authmd_proxy::body::Body::full(format!(
                "api saw {}",
                request.uri().path()
            )));
            *response.status_mut() = hyper::StatusCode::OK;
            response
        },
    )
    .await;
    let proxy = Binary::start(&[
        "run",
        "--config",
        EXAMPLE,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--upstream",
        &format!("http://{upstream}"),
    ])
    .await;
    let response = client()
        .get(format!("{}/api/v1/offers", proxy.url))
        .header("x-agent-key", READER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "api saw /api/v1/offers");
}

/// The README's "Connect Claude, VS Code or Cursor" config passes `check`, with
/// its certificate files and secrets supplied.
#[test]
fn the_readme_config_for_mcp_clients_checks() {
    let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
    let section = &readme[readme
        .find("### Connect Claude, VS Code or Cursor")
        .expect("the README has the section")..];
    let start = section.find("```yaml\n").unwrap() + "```yaml\n".len();
    let yaml = &section[start..start + section[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let ca = support::tls::TestCa::new("readme");
    let (cert, key) = ca.server_cert().write(dir.path(), "tls.crt", "tls.key");
    let yaml = yaml
        .replace("/etc/authmd/tls.crt", cert.to_str().unwrap())
        .replace("/etc/authmd/tls.key", key.to_str().unwrap());
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", config.to_str().unwrap()])
        .env("AUTHMD_COOKIE_KEY", crate::login::COOKIE_KEY)
        .env("OIDC_CLIENT_SECRET", "not-a-real-secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
