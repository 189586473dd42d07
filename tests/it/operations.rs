//! Operations, against the real binary: the metrics endpoint (Prometheus text and
//! OpenMetrics, counters moving), hot reload under continuous load (zero failed
//! requests, a bad config refused), graceful shutdown with a request in flight,
//! and the access log.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "tests: a failed step should fail loudly"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{Binary, READER_KEY, TestProxy, WRITER_KEY, client};

/// A config with two scoped routes and a public one; `{upstream}` and `{extra}`
/// are filled in by the test.
const CONFIG: &str = r#"
admin_listen: 127.0.0.1:0
service: {name: Operations test}
upstream: {url: "{upstream}"}
server: {watch_interval: 50ms, shutdown_grace: 20s}
log: {access: info, format: json}
store: {kind: none}
credentials:
  key_prefixes: [ak_live]
scopes:
  offers:read: Read offers
  offers:write: Write offers
tiers:
  - name: anonymous
    scopes: []
  - name: free
    scopes: [offers:read, offers:write]
keys:
  - id: writer
    hash: blake3:5e3badb54234fb3ed212ad03431ec29d20925e7e39e421d1a4fd63d269624e14
    scopes: [offers:read, offers:write]
    tier: free
  - id: reader
    hash: blake3:3002225b1a30aefeed4ac8e020b60bf3a476dbb26802044570a85ddf52efc19e
    scopes: [offers:read]
    tier: free
routes:
  - {id: health, path: /health, methods: [GET], access: public}
  - {id: list-offers, path: /offers, methods: [GET], scopes: [offers:read]}
{extra}
"#;

fn write_config(dir: &Path, upstream: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("authmd.yaml");
    let text = CONFIG
        .replace("{upstream}", upstream)
        .replace("{extra}", extra);
    // Written to a temporary name and renamed over, as an editor or a ConfigMap
    // update does: the proxy never reads a half-written file.
    let temporary = dir.join(".authmd.yaml.tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, &path).unwrap();
    path
}

/// One exposition, parsed strictly: every line is a `# HELP` or `# TYPE` line or a
/// sample of the family its `# TYPE` announced, with a numeric value; returns the
/// samples by their full text (`name{labels}`).
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut family: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(rest.split_once(' ').is_some(), "HELP without text: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "unknown type: {line}"
            );
            assert!(name.starts_with("authmd_"), "unprefixed metric: {name}");
            family = Some((name.to_owned(), kind.to_owned()));
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment: {line}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let name = series.split('{').next().unwrap();
        let (family_name, kind) = family.as_ref().expect("a sample before any TYPE");
        let belongs = match kind.as_str() {
            "histogram" => [
                format!("{family_name}_bucket"),
                format!("{family_name}_sum"),
                format!("{family_name}_count"),
            ]
            .contains(&name.to_owned()),
            _ => name == family_name,
        };
        assert!(belongs, "sample {name} outside its family {family_name}");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(
                    labels.starts_with('{') && labels.ends_with('}'),
                    "bad labels: {line}"
                );
            }
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        samples.insert(series.to_owned(), value);
    }
    samples
}

async fn scrape(admin: &str) -> HashMap<String, f64> {
    let response = client()
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    parse_prometheus(&response.text().await.unwrap())
}

/// The value of the one sample whose name is `name` and whose labels include
/// every `label="value"` of `labels` (0 when there is none).
fn value(samples: &HashMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            series.split('{').next() == Some(name) && labels.iter().all(|l| series.contains(l))
        })
        .map(|(_, v)| *v)
        .sum()
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_requests() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "builtin:echo", "");
    let proxy = Binary::serve(&config).await;
    let admin = proxy.admin.clone().expect("the admin address is printed");
    let http = client();
    let before = scrape(&admin).await;
    for _ in 0..3 {
        let response = http
            .get(format!("{}/offers", proxy.url))
            .bearer_auth(READER_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let refused = http
        .get(format!("{}/offers", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let missing = http
        .get(format!("{}/nowhere", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let after = scrape(&admin).await;

    let allowed = [
        "route=\"list-offers\"",
        "method=\"GET\"",
        "status=\"200\"",
        "decision=\"allowed\"",
    ];
    assert_eq!(
        value(&after, "authmd_requests_total", &allowed)
            - value(&before, "authmd_requests_total", &allowed),
        3.0
    );
    let rejected = [
        "route=\"list-offers\"",
        "status=\"401\"",
        "decision=\"rejected\"",
        "code=\"UNAUTHORIZED\"",
    ];
    assert_eq!(value(&after, "authmd_requests_total", &rejected), 1.0);
    let unmatched = [
        "route=\"authmd.unmatched\"",
        "status=\"404\"",
        "code=\"NOT_FOUND\"",
    ];
    assert_eq!(value(&after, "authmd_requests_total", &unmatched), 1.0);
    // Latency histograms: four requests matched the route, three went upstream.
    let route = ["route=\"list-offers\""];
    assert_eq!(
        value(&after, "authmd_request_duration_seconds_count", &route),
        4.0
    );
    assert_eq!(
        value(&after, "authmd_upstream_duration_seconds_count", &route),
        3.0
    );
    assert!(value(&after, "authmd_request_duration_seconds_sum", &route) > 0.0);
    // Gauges and info.
    assert_eq!(value(&after, "authmd_keys", &[]), 2.0);
    assert_eq!(
        value(&after, "authmd_open_connections", &["listener=\"admin\""]),
        1.0,
        "the scrape's own connection"
    );
    assert_eq!(value(&after, "authmd_config_info", &[]), 1.0);
    // No label ever carries a key or a raw path.
    let text = client()
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains(READER_KEY) && !text.contains("/nowhere"));
}

#[tokio::test]
async fn metrics_are_openmetrics_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "builtin:echo", "");
    let proxy = Binary::serve(&config).await;
    let admin = proxy.admin.clone().unwrap();
    client()
        .get(format!("{}/health", proxy.url))
        .send()
        .await
        .unwrap();
    let response = client()
        .get(format!("{admin}/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0;q=0.9,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    // A counter family is named without `_total`; its samples keep it.
    assert!(text.contains("# TYPE authmd_requests counter\n"));
    assert!(text.contains("\nauthmd_requests_total{"));
    assert!(!text.contains("# TYPE authmd_requests_total"));
    assert_eq!(text.matches("# EOF").count(), 1);
}

/// Sends requests on `workers` keep-alive connections until `stop`, counting
/// those answered as `expected` and the rest.
fn load(
    url: &str,
    workers: usize,
    stop: &Arc<AtomicBool>,
) -> (
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let tasks = (0..workers)
        .map(|_| {
            let (url, stop, ok, failed) =
                (url.to_owned(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let http = client();
                while !stop.load(Ordering::Relaxed) {
                    let answer = http
                        .get(format!("{url}/offers"))
                        .bearer_auth(WRITER_KEY)
                        .send()
                        .await;
                    match answer {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(r) => {
                            eprintln!("unexpected {}", r.status());
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            eprintln!("request failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    (ok, failed, tasks)
}

const SUCCESS: [&str; 1] = ["outcome=\"success\""];
const FAILURE: [&str; 1] = ["outcome=\"failure\""];

/// Polls the metrics until `name{labels}` reaches `at_least` (a bounded wait on a
/// background reload in another process, not a readiness sleep).
async fn wait_for_metric(admin: &str, name: &str, labels: &[&str], at_least: f64) {
    for _ in 0..500 {
        if value(&scrape(admin).await, name, labels) >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{name}{labels:?} never reached {at_least}");
}

#[tokio::test]
async fn reload_under_load_fails_no_request_and_refuses_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "builtin:echo", "");
    let proxy = Binary::serve(&config).await;
    let admin = proxy.admin.clone().unwrap();
    let initial_hash = scrape(&admin)
        .await
        .keys()
        .find(|k| k.starts_with("authmd_config_info{"))
        .cloned()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, tasks) = load(&proxy.url, 8, &stop);

    // 1. A new route, picked up from the file change.
    while ok.load(Ordering::Relaxed) < 50 {
        tokio::task::yield_now().await;
    }
    let new_route = "  - {id: new-route, path: /new, methods: [GET], access: public}";
    let reload_to = |extra: &str, outcome: &'static [&'static str], count: f64| {
        write_config(dir.path(), "builtin:echo", extra);
        let admin = admin.clone();
        async move { wait_for_metric(&admin, "authmd_config_reloads_total", outcome, count).await }
    };
    let new_is = |expected: u16, why: &'static str| {
        let url = format!("{}/new", proxy.url);
        async move {
            let response = client().get(url).send().await.unwrap();
            assert_eq!(response.status(), expected, "{why}");
        }
    };
    reload_to(new_route, &SUCCESS, 1.0).await;
    new_is(200, "the reloaded route is served").await;

    // 2. An invalid config (an unknown scope) is refused; the old one serves on.
    let broken = "  - {id: broken, path: /broken, methods: [GET], scopes: [offers:nope]}";
    reload_to(broken, &FAILURE, 1.0).await;
    new_is(200, "the last good config keeps serving").await;

    // 3. SIGHUP reloads even an unchanged file.
    reload_to(new_route, &SUCCESS, 2.0).await;
    proxy.signal("HUP");
    wait_for_metric(&admin, "authmd_config_reloads_total", &SUCCESS, 3.0).await;

    let before = ok.load(Ordering::Relaxed);
    while ok.load(Ordering::Relaxed) < before + 50 {
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed");
    assert!(ok.load(Ordering::Relaxed) > 100);
    let samples = scrape(&admin).await;
    assert_eq!(
        value(&samples, "authmd_config_reloads_total", &FAILURE),
        1.0
    );
    let hash = samples
        .keys()
        .find(|k| k.starts_with("authmd_config_info{"))
        .unwrap();
    assert_ne!(hash, &initial_hash, "the active config's hash changed");
    let log = proxy.log_lines().join("\n");
    assert!(log.contains("config reload refused"), "{log}");
    assert!(log.contains("offers:nope"), "the refusal names the problem");
}

/// A raw HTTP/1.1 upstream whose one response streams: headers at once, then one
/// chunk each time `next` is signalled, then the end. It tells `arrived` when the
/// request is in.
async fn streaming_upstream(
    arrived: tokio::sync::mpsc::Sender<()>,
    mut next: tokio::sync::mpsc::Receiver<&'static str>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0);
            head.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n")
            .await
            .unwrap();
        arrived.send(()).await.unwrap();
        while let Some(chunk) = next.recv().await {
            let frame = format!("{:x}\r\n{chunk}\r\n", chunk.len());
            stream.write_all(frame.as_bytes()).await.unwrap();
        }
        stream.write_all(b"0\r\n\r\n").await.unwrap();
        let _ = stream.shutdown().await;
    });
    addr
}

#[tokio::test]
async fn a_stream_in_flight_at_sigterm_completes_and_the_proxy_exits_0() {
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::channel(1);
    let (next, chunks) = tokio::sync::mpsc::channel(4);
    let upstream = streaming_upstream(arrived_tx, chunks).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("http://{upstream}"), "");
    let mut proxy = Binary::serve(&config).await;
    let admin = proxy.admin.clone().unwrap();
    let ready = client()
        .get(format!("{admin}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let mut response = client()
        .get(format!("{}/offers", proxy.url))
        .bearer_auth(READER_KEY)
        .send()
        .await
        .unwrap();
    arrived.recv().await.unwrap();
    assert_eq!(response.status(), 200);
    next.send("first ").await.unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"first ");

    proxy.signal("TERM");
    // Shutting down: not ready (the admin listener answers until the end), and
    // new connections are refused once the listener closes.
    let mut not_ready = false;
    for _ in 0..500 {
        match client().get(format!("{admin}/readyz")).send().await {
            Ok(r) if r.status() == 503 => {
                let body = r.text().await.unwrap();
                assert!(body.contains("shutting down"), "{body}");
                not_ready = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert!(not_ready, "/readyz fails during shutdown");

    // The stream in flight completes.
    next.send("second").await.unwrap();
    drop(next);
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"second");
    let status = proxy.wait().await;
    assert_eq!(status.code(), Some(0), "a graceful shutdown exits 0");
}

#[tokio::test]
async fn the_access_log_has_one_json_line_per_request_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "builtin:echo", "");
    let mut proxy = Binary::serve(&config).await;
    let http = client();
    let ok = http
        .get(format!("{}/offers?q=1", proxy.url))
        .bearer_auth(WRITER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let bad = http
        .get(format!("{}/offers", proxy.url))
        .bearer_auth("ak_live_ELG2kKEXEd3Ty98ZgEKCTBzmD28tyKbnV2vJrzX")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    proxy.signal("TERM");
    assert_eq!(proxy.wait().await.code(), Some(0));
    let raw = proxy.log_lines();
    let lines: Vec<serde_json::Value> = raw
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &serde_json::Value| l["target"] == "authmd_proxy::access")
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let fields = &lines[0]["fields"];
    assert_eq!(fields["route"], "list-offers");
    assert_eq!(fields["status"], 200);
    assert_eq!(fields["decision"], "allowed");
    assert_eq!(fields["principal"], "key:writer");
    assert_eq!(fields["client"], "127.0.0.1");
    assert!(fields["duration_us"].as_u64().is_some());
    assert!(fields["upstream_us"].as_u64().is_some());
    let refused = &lines[1]["fields"];
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["decision"], "rejected");
    assert_eq!(refused["code"], "INVALID_API_KEY");
    assert!(
        !raw.join("\n").contains("ak_live_ELG2"),
        "no key in any log line"
    );
}

const LIMITED: &str = r#"
upstream: {url: "{upstream}"}
credentials: {key_prefixes: [ak_live]}
scopes:
  offers:read: Read offers
tiers:
  - {name: anonymous, scopes: []}
  - {name: free, scopes: [offers:read], rate_limits: [2/min]}
registration: {anonymous: true, tier: free, per_hour: 100}
routes:
  - {path: /offers, methods: [GET], scopes: [offers:read]}
"#;

#[tokio::test]
async fn rate_limit_state_and_stored_keys_survive_a_reload() {
    let proxy = TestProxy::start(LIMITED, None).await;
    let http = client();
    let registered: serde_json::Value = http
        .post(proxy.url("/agent/auth/register"))
        .json(&serde_json::json!({"type": "anonymous"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = registered["credential"].as_str().unwrap().to_owned();
    let get = || http.get(proxy.url("/offers")).bearer_auth(&key).send();
    assert_eq!(get().await.unwrap().status(), 200);
    assert_eq!(get().await.unwrap().status(), 200);
    assert_eq!(get().await.unwrap().status(), 429);

    // A new config (one more route): the stored key still works, and its used-up
    // window is still used up.
    let extended = format!("{LIMITED}  - {{path: /health, methods: [GET], access: public}}\n");
    proxy.reload(&extended).await;
    let health = http.get(proxy.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "the new config serves");
    let after = get().await.unwrap();
    assert_eq!(after.status(), 429, "the reload gave no fresh allowance");
    let anonymous = http.get(proxy.url("/offers")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let other: serde_json::Value = http
        .post(proxy.url("/agent/auth/register"))
        .json(&serde_json::json!({"type": "anonymous"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fresh = http
        .get(proxy.url("/offers"))
        .bearer_auth(other["credential"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 200, "keys registered after the reload work");
}
