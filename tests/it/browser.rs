//! A real browser through the sign-in and consent pages: Chromium (the system's
//! build), driven by Playwright for Python with JavaScript disabled, runs
//! `tests/browser/login_consent.py` against a running proxy with a static
//! account and a declared public client. The client's redirect URI is a real
//! listener on a loopback port that records what the browser brings it. The
//! script checks that the pages cannot be framed, that a wrong password shows the
//! form again with an error, that the consent page says who asks for what and
//! where the answer goes, and that Deny and Allow send the browser back to the
//! client; this test then checks the listener saw the same answers, exchanges the
//! code with its PKCE verifier, and calls a protected route with the token: the
//! person's principal reaches the upstream.
//!
//! `tests/browser/operator_page.py` takes the same browser to the operator page:
//! signed in from it, the person claims a registered agent, finds it listed with
//! its key, and clicks Revoke; this test then checks the key is refused.
//!
//! Needs Chromium (`AUTHMD_CHROMIUM`, default `/usr/bin/chromium`) and a Python
//! with the `playwright` package (`AUTHMD_PLAYWRIGHT_PYTHON`, default `python3`).
//! Without them the test says "skipped" and passes, unless
//! `AUTHMD_REQUIRE_BROWSER=1` (as CI sets), where it fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "tests: a failed step fails the test; skips and summaries are reported"
)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use authmd_proxy::body::Body;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::Response;
use serde_json::Value;
use tokio::process::Command;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::login::{PASSWORD, static_demo, yaml};
use crate::support::{self, TestProxy};

const REQUIRE: &str = "AUTHMD_REQUIRE_BROWSER";
const SCRIPT: &str = "tests/browser/login_consent.py";
const VERIFIER: &str = "bR0wS3r-cL1ck5-tHr0uGh-l0g1n-aNd-c0nS3nT-pKcE";

/// The Python interpreter with Playwright, and the Chromium it drives.
fn tools() -> (String, PathBuf) {
    let python = std::env::var("AUTHMD_PLAYWRIGHT_PYTHON").unwrap_or_else(|_| "python3".into());
    let chromium = std::env::var_os("AUTHMD_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    (python, chromium)
}

/// Why the browser cannot run here, if it cannot.
async fn missing_prerequisite(python: &str, chromium: &Path) -> Option<String> {
    if !chromium.is_file() {
        return Some(format!(
            "no Chromium at {} (set AUTHMD_CHROMIUM)",
            chromium.display()
        ));
    }
    let probe = Command::new(python)
        .args(["-c", "import playwright.sync_api"])
        .stdin(Stdio::null())
        .output()
        .await;
    match probe {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!(
            "`{python}` cannot import playwright ({}): {} (set AUTHMD_PLAYWRIGHT_PYTHON \
             to a Python with `pip install playwright`)",
            output.status,
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        )),
        Err(e) => Some(format!(
            "`{python}` is not runnable ({e}) (set AUTHMD_PLAYWRIGHT_PYTHON)"
        )),
    }
}

/// True when the browser can run; otherwise says the test is skipped (or fails
/// it, when `AUTHMD_REQUIRE_BROWSER` is set).
async fn ready(python: &str, chromium: &Path) -> bool {
    let Some(why) = missing_prerequisite(python, chromium).await else {
        return true;
    };
    assert!(
        std::env::var_os(REQUIRE).is_none(),
        "{REQUIRE} is set but {why}"
    );
    eprintln!("skipped: {why}");
    false
}

/// Runs the browser script and returns its one-line JSON summary, asserting that
/// it says ok.
async fn run_script(python: &str, args: &[String]) -> Value {
    run_named(python, SCRIPT, args).await
}

/// Runs the browser script `script` (see [`run_script`]).
async fn run_named(python: &str, script: &str, args: &[String]) -> Value {
    let mut command = Command::new(python);
    command.arg(script).args(args);
    support::script::run_json(command, script, Duration::from_secs(180)).await
}

/// The client's redirect URI: a listener on a loopback port that answers every
/// request with a small page and sends its path and query to the receiver.
async fn redirect_listener() -> (String, UnboundedReceiver<String>) {
    let (record, seen) = tokio::sync::mpsc::unbounded_channel();
    let addr = support::upstream(move |request| {
        let record = record.clone();
        async move {
            let target = request
                .uri()
                .path_and_query()
                .map_or_else(|| request.uri().path().to_owned(), ToString::to_string);
            // After the test, nobody listens any more: nothing to record.
            record.send(target).ok();
            let mut response = Response::new(Body::full(
                "<!doctype html><title>Back in the application</title><p>Received.",
            ));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
    })
    .await;
    (format!("http://{addr}/callback"), seen)
}

fn config() -> String {
    format!(
        "{}oauth:\n  clients:\n    - client_id: my-cli\n      client_name: My CLI\n      redirect_uris: [http://127.0.0.1/callback]\n      scopes: [offers:read, offers:write]\n",
        yaml(&static_demo())
    )
}

fn authorize_url(proxy: &TestProxy, redirect_uri: &str, state: &str) -> String {
    let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        VERIFIER.as_bytes(),
    ));
    let resource = proxy.url("/mcp");
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", "my-cli"),
            ("redirect_uri", redirect_uri),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", state),
            ("scope", "offers:read offers:write"),
            ("resource", resource.as_str()),
        ])
        .finish();
    proxy.url(&format!("/oauth2/authorize?{query}"))
}

fn query_of(target: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://callback.invalid{target}"))
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

#[tokio::test]
async fn chromium_without_javascript_signs_in_consents_and_the_code_gets_a_working_token() {
    let (python, chromium) = tools();
    if !ready(&python, &chromium).await {
        return;
    }
    let (redirect_uri, mut seen) = redirect_listener().await;
    let proxy = TestProxy::start(&config(), None).await;
    let args: Vec<String> = [
        "--chromium",
        &chromium.to_string_lossy(),
        "--deny",
        &authorize_url(&proxy, &redirect_uri, "state-deny"),
        "--allow",
        &authorize_url(&proxy, &redirect_uri, "state-allow"),
        "--username",
        "ada",
        "--password",
        PASSWORD,
        "--client-name",
        "My CLI",
        "--scope",
        "Read public offers",
        "--scope",
        "Create and update own offers",
    ]
    .map(str::to_owned)
    .to_vec();
    let summary = run_script(&python, &args).await;

    // The browser reached the listener twice, with the answers it reports (and
    // asked it for a favicon on the way, perhaps).
    let seen: Vec<String> = std::iter::from_fn(|| seen.try_recv().ok())
        .filter(|target| target.starts_with("/callback"))
        .collect();
    assert_eq!(seen.len(), 2, "the listener saw {seen:?}");
    for (target, scenario) in seen.iter().zip(["deny", "allow"]) {
        assert!(target.starts_with("/callback?"), "{target}");
        let reported = &summary[scenario]["query"];
        let pairs = query_of(target);
        assert_eq!(
            pairs.len(),
            reported.as_object().unwrap().len(),
            "{target} vs {reported}"
        );
        for (name, value) in &pairs {
            assert_eq!(reported[name], value.as_str(), "{scenario}: {name}");
        }
    }
    let deny = &summary["deny"]["query"];
    assert_eq!(deny["error"], "access_denied", "{deny}");
    assert_eq!(deny["state"], "state-deny");
    assert_eq!(deny["iss"], proxy.url.as_str());
    assert!(deny.get("code").is_none(), "{deny}");
    let allow = &summary["allow"]["query"];
    assert_eq!(allow["state"], "state-allow");
    assert_eq!(allow["iss"], proxy.url.as_str());
    assert!(allow.get("error").is_none(), "{allow}");
    let code = allow["code"].as_str().unwrap();
    assert!(code.starts_with("ac_"), "{allow}");

    // No page broke its own policy (a blocked style or form shows in the console).
    let console = summary["console"].as_array().unwrap();
    assert!(
        console
            .iter()
            .all(|m| !m.as_str().unwrap().contains("Content Security Policy")),
        "{console:?}"
    );
    // Framed by another origin, neither page rendered (where a framable document
    // of the proxy's did), refused by the CSP's frame-ancestors; the proxy did
    // answer with the page (a signed-in person's consent page, not a redirect to
    // the sign-in), and the browser would not show it.
    for framed in ["framed_sign_in", "framed_consent"] {
        let framed = &summary[framed];
        assert_eq!(framed["victim"]["status"], 200, "{framed}");
        assert_eq!(framed["victim"]["has_form"], false, "{framed}");
        assert_eq!(framed["scripts_run"], false, "JavaScript is off: {framed}");
        assert!(
            framed["refusal"]
                .as_str()
                .unwrap()
                .contains("frame-ancestors 'none'"),
            "{framed}"
        );
    }

    let redirect_origin = redirect_uri.trim_end_matches("/callback");
    let csp = summary["framed_consent"]["victim"]["csp"].as_str().unwrap();
    assert!(
        csp.ends_with(&format!("form-action 'self' {redirect_origin}")),
        "the framed answer was the consent page: {csp}"
    );

    // The code the browser brought back works, with the verifier.
    let tokens: Value = support::client()
        .post(proxy.url("/oauth2/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri.as_str()),
            ("client_id", "my-cli"),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tokens["token_type"], "Bearer", "{tokens}");
    assert_eq!(tokens["scope"], "offers:read offers:write", "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let response = support::client()
        .post(proxy.url("/mcp/tools"))
        .bearer_auth(access)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(
        echo["headers"]["x-authmd-principal"], "user:demo:ada",
        "{echo}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn chromium_without_javascript_lists_a_claimed_agent_and_revokes_its_key() {
    let (python, chromium) = tools();
    if !ready(&python, &chromium).await {
        return;
    }
    let proxy = TestProxy::start(&yaml(&static_demo()), None).await;
    let registered: Value = support::client()
        .post(proxy.url("/agent/auth/register"))
        .json(&serde_json::json!({"type": "anonymous", "client_name": "Browser bot"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = registered["credential"].as_str().unwrap();
    let read = async |key: &str| {
        support::client()
            .get(proxy.url("/api/v1/offers"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(read(key).await, 200);
    let args: Vec<String> = [
        "--chromium",
        &chromium.to_string_lossy(),
        "--operator",
        &proxy.url("/agent/auth/operator"),
        "--claim",
        registered["claim_url"].as_str().unwrap(),
        "--username",
        "ada",
        "--password",
        PASSWORD,
        "--agent-name",
        "Browser bot",
        "--key-id",
        registered["key_id"].as_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec();
    let summary = run_named(&python, "tests/browser/operator_page.py", &args).await;
    let console = summary["console"].as_array().unwrap();
    assert!(
        console
            .iter()
            .all(|m| !m.as_str().unwrap().contains("Content Security Policy")),
        "{console:?}"
    );
    assert_eq!(
        read(key).await,
        401,
        "the key the browser revoked is refused"
    );
    proxy.shutdown().await;
}
