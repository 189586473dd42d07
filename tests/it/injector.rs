//! `authmd-proxy injector`, the mutating admission webhook, run as the real binary
//! over TLS: the golden JSON Patch for a pod (and that it does exactly what
//! `inject` does), idempotency, pods left alone, malformed reviews answered with a
//! clear envelope, and both failure policies for a pod that cannot be injected.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step should fail loudly"
)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::support::Binary;
use crate::support::tls::{TestCa, TlsConn, addr_of, client_config};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/injector/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The injector on 127.0.0.1:<random> with a certificate from a test CA, and a
/// TLS connection to it.
struct Webhook {
    binary: Binary,
    conn: TlsConn,
    _dir: tempfile::TempDir,
}

impl Webhook {
    async fn start(extra: &[&str]) -> Webhook {
        let ca = TestCa::new("injector test CA");
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ca.server_cert().write(dir.path(), "tls.crt", "tls.key");
        let mut args = vec![
            "injector",
            "--listen",
            "127.0.0.1:0",
            "--cert-file",
            cert.to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let binary = Binary::start(&args).await;
        assert!(binary.url.starts_with("https://"), "{}", binary.url);
        let conn = TlsConn::connect(addr_of(&binary.url), client_config(&ca, None, &["h2"]))
            .await
            .unwrap();
        Webhook {
            binary,
            conn,
            _dir: dir,
        }
    }

    /// Sends a review; returns the HTTP status and the JSON answer.
    async fn review(&mut self, body: impl Into<bytes::Bytes>) -> (u16, Value) {
        let response = self.conn.post("/inject", body).await;
        assert_eq!(
            response.headers["content-type"], "application/json",
            "{}",
            response.body
        );
        (response.status, response.json())
    }
}

/// A review of `object` (a pod), as the API server sends it.
fn review_of(object: &Value, operation: &str) -> String {
    let mut review: Value = serde_json::from_str(&fixture("pod.review.json")).unwrap();
    review["request"]["object"] = object.clone();
    review["request"]["operation"] = operation.into();
    review.to_string()
}

fn the_pod() -> Value {
    let review: Value = serde_json::from_str(&fixture("pod.review.json")).unwrap();
    review["request"]["object"].clone()
}

/// The decoded JSON Patch of an allowing response, or None when there is none.
fn patch_of(answer: &Value) -> Option<Value> {
    let response = &answer["response"];
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{answer}");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(
        response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002",
        "the uid is echoed"
    );
    assert_eq!(response["allowed"], true, "{answer}");
    let patch = response.get("patch")?;
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = STANDARD.decode(patch.as_str().unwrap()).unwrap();
    Some(serde_json::from_slice(&bytes).unwrap())
}

fn apply(object: &Value, patch: &Value) -> Value {
    let operations: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &operations).unwrap();
    patched
}

#[tokio::test]
async fn a_pod_gets_the_golden_patch_which_does_what_inject_does_and_only_once() {
    let mut webhook = Webhook::start(&[]).await;
    assert_eq!(webhook.conn.alpn.as_deref(), Some("h2"));
    let pod = the_pod();
    let (status, answer) = webhook.review(fixture("pod.review.json")).await;
    assert_eq!(status, 200, "{answer}");
    let patch = patch_of(&answer).expect("a patch");
    let golden: Value = serde_json::from_str(&fixture("pod.patch.json")).unwrap();
    assert_eq!(
        patch,
        golden,
        "tests/injector/pod.patch.json; got:\n{}",
        serde_json::to_string_pretty(&patch).unwrap()
    );

    // The patched pod is exactly what `authmd-proxy inject` writes for it.
    let patched = apply(&pod, &patch);
    let yaml = serde_norway::to_string(&pod).unwrap();
    let injected = authmd_proxy::inject::inject(&yaml, &Default::default())
        .unwrap()
        .yaml;
    let injected: Value = serde_norway::from_str(&injected).unwrap();
    assert_eq!(patched, injected);
    assert_eq!(patched["spec"]["initContainers"][0]["name"], "authmd-proxy");
    assert_eq!(patched["spec"]["initContainers"][1]["name"], "migrate");

    // A pod that already has the sidecar (a re-invocation) gets no patch.
    let (_, again) = webhook.review(review_of(&patched, "CREATE")).await;
    assert_eq!(patch_of(&again), None, "{again}");
}

#[tokio::test]
async fn pods_without_the_annotation_and_updates_are_allowed_unchanged() {
    let mut webhook = Webhook::start(&[]).await;
    let mut plain = the_pod();
    plain["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("authmd.dev/inject");
    let (status, answer) = webhook.review(review_of(&plain, "CREATE")).await;
    assert_eq!(status, 200);
    assert_eq!(patch_of(&answer), None, "{answer}");
    let mut disabled = the_pod();
    disabled["metadata"]["annotations"]["authmd.dev/inject"] = "disabled".into();
    let (_, answer) = webhook.review(review_of(&disabled, "CREATE")).await;
    assert_eq!(patch_of(&answer), None, "{answer}");
    // Containers cannot change after creation: an UPDATE is never patched.
    let (_, answer) = webhook.review(review_of(&the_pod(), "UPDATE")).await;
    assert_eq!(patch_of(&answer), None, "{answer}");
}

#[tokio::test]
async fn malformed_reviews_get_a_clear_envelope_and_no_admission_answer() {
    let mut webhook = Webhook::start(&[]).await;
    let v1beta1 =
        fixture("pod.review.json").replace("admission.k8s.io/v1", "admission.k8s.io/v1beta1");
    let mut no_uid: Value = serde_json::from_str(&fixture("pod.review.json")).unwrap();
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let mut no_object: Value = serde_json::from_str(&fixture("pod.review.json")).unwrap();
    no_object["request"]["object"] = Value::Null;
    for (body, status, code, says) in [
        ("{not json".to_owned(), 400, "INVALID_REVIEW", "not JSON"),
        (
            v1beta1,
            400,
            "INVALID_REVIEW",
            "admissionReviewVersions: [v1]",
        ),
        (no_uid.to_string(), 400, "INVALID_REVIEW", "request.uid"),
        (
            no_object.to_string(),
            400,
            "INVALID_REVIEW",
            "request.object",
        ),
        ("x".repeat(5 << 20), 413, "REVIEW_TOO_LARGE", "larger than"),
    ] {
        let (got, envelope) = webhook.review(body).await;
        assert_eq!(got, status, "{envelope}");
        assert_eq!(envelope["code"], code, "{envelope}");
        assert!(
            envelope["message"].as_str().unwrap().contains(says),
            "{envelope}"
        );
        assert!(envelope["docs"].is_string(), "{envelope}");
        assert_eq!(envelope.as_object().unwrap().len(), 4, "{envelope}");
    }

    let wrong_method = webhook.conn.get("/inject").await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.headers["allow"], "POST");
    assert_eq!(wrong_method.json()["code"], "METHOD_NOT_ALLOWED");
    assert_eq!(webhook.conn.get("/mutate").await.status, 404);
    let health = webhook.conn.get("/healthz").await;
    assert_eq!(health.status, 200);

    // The connection survived every refusal, and the webhook still injects.
    let (_, answer) = webhook.review(fixture("pod.review.json")).await;
    assert!(patch_of(&answer).is_some());
}

#[tokio::test]
async fn an_unusable_annotation_denies_the_pod_or_warns_by_the_failure_policy() {
    let mut bad = the_pod();
    bad["metadata"]["annotations"]["authmd.dev/port"] = "http".into();
    let review = review_of(&bad, "CREATE");

    let mut failing = Webhook::start(&[]).await;
    let (status, answer) = failing.review(review.clone()).await;
    assert_eq!(status, 200);
    let response = &answer["response"];
    assert_eq!(response["allowed"], false, "{answer}");
    assert_eq!(response["status"]["code"], 400);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("authmd.dev/port"), "{message}");
    assert!(
        message.contains("offers-api-5f7b9c-*"),
        "names the pod: {message}"
    );
    assert!(response.get("patch").is_none());

    let mut ignoring = Webhook::start(&["--failure-policy", "ignore"]).await;
    let (_, answer) = ignoring.review(review).await;
    assert_eq!(patch_of(&answer), None, "{answer}");
    let warning = answer["response"]["warnings"][0].as_str().unwrap();
    assert!(warning.contains("authmd.dev/port"), "{warning}");
}

#[tokio::test]
async fn the_injector_stops_cleanly_on_sigterm() {
    let mut webhook = Webhook::start(&[]).await;
    let (status, _) = webhook.review(fixture("pod.review.json")).await;
    assert_eq!(status, 200);
    webhook.binary.signal("TERM");
    let status = webhook.binary.wait().await;
    assert!(status.success(), "exit status {status}");
}

#[test]
fn an_unknown_failure_policy_is_a_usage_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authmd-proxy"))
        .args(["injector", "--failure-policy", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap's usage status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("use fail or ignore"), "{stderr}");
}

#[test]
fn the_golden_patch_is_valid_json_patch() {
    let golden: Value = serde_json::from_str(&fixture("pod.patch.json")).unwrap();
    assert!(golden.as_array().is_some_and(|ops| !ops.is_empty()));
    let _: json_patch::Patch = serde_json::from_value(golden.clone()).unwrap();
    assert_eq!(
        apply(&the_pod(), &golden)["metadata"]["annotations"]["authmd.dev/status"],
        json!("injected")
    );
}
