//! Each seed config runs as it is written, with the real binary: `authmd-proxy check`
//! passes, and `authmd-proxy run --config tests/seeds/<seed>.yaml` serves it in front
//! of the echo API its `upstream.url` names (the other tests put their recording
//! upstream there instead), answering the admin `/healthz`, its own `/auth.md`, and
//! a request that reaches the echo API.

use std::process::Command;

use serde_json::Value;

use super::common::ECHO_UPSTREAM;
use crate::support::{Binary, client};

const BIN: &str = env!("CARGO_BIN_EXE_authmd-proxy");

/// A request that passes the proxy without a credential: a public route, with an
/// anonymous agent's header when it needs one.
type Open = Option<(&'static str, Option<(&'static str, &'static str)>)>;

/// Each seed config: its file name, the service it reproduces, and an [`Open`]
/// request, when the seed has one.
const SEEDS: &[(&str, &str, Open)] = &[
    (
        "anygett",
        "AnyGett",
        Some(("/api/v1/offers", Some(("X-Agent-Key", "my-agent-7")))),
    ),
    ("botvisibility", "BotVisibility", None),
    ("getscaled", "GetScaled", None),
    ("jobspipe", "JobsPipe", None),
    ("toromarket", "Toromarket", Some(("/api/v1/markets", None))),
];

fn path_of(seed: &str) -> String {
    format!("{}/tests/seeds/{seed}.yaml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_seed_config_passes_check_as_written() {
    for (seed, _, _) in SEEDS {
        let path = path_of(seed);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.matches(ECHO_UPSTREAM).count(),
            1,
            "{seed}: the config names the echo API as its upstream"
        );
        let out = Command::new(BIN)
            .args(["check", "--config", &path])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{seed}: check refused it:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(": ok ("), "{seed}: {stdout}");
    }
}

#[tokio::test]
async fn every_seed_config_runs_in_front_of_the_echo_api_as_written() {
    let http = client();
    for (seed, service, open) in SEEDS {
        let path = path_of(seed);
        let proxy = Binary::start(&[
            "run",
            "--config",
            &path,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .await;
        let admin = proxy.admin.clone().unwrap_or_else(|| {
            panic!("{seed}: no admin listener in {:?}", proxy.startup);
        });
        let health = http.get(format!("{admin}/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200, "{seed}: /healthz");
        let auth_md = http
            .get(format!("{}/auth.md", proxy.url))
            .send()
            .await
            .unwrap();
        assert_eq!(auth_md.status(), 200, "{seed}: /auth.md");
        let text = auth_md.text().await.unwrap();
        assert!(text.contains(service), "{seed}: /auth.md names {service}");
        if let Some((route, header)) = open {
            let mut request = http.get(format!("{}{route}", proxy.url));
            if let Some((name, value)) = header {
                request = request.header(*name, *value);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{seed}: GET {route}");
            // The echo API answers with the request it received.
            let echo: Value = response.json().await.unwrap();
            assert_eq!(
                echo["path"], *route,
                "{seed}: the echo API answered: {echo}"
            );
        }
    }
}
