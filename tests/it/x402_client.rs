//! The x402 TypeScript client (`@x402/core` and `@x402/evm` from npm, with a viem
//! account) against a running proxy whose quota is used up:
//! `tests/clients/x402.mjs` reads the 402 (the v2 `PAYMENT-REQUIRED` header and the
//! v1 body) with the library, signs an `exact` EIP-3009 payment, retries with
//! `PAYMENT-SIGNATURE`, decodes the `PAYMENT-RESPONSE` of the 200, and sees the same
//! payment refused when presented again. A local facilitator here (`POST /verify`,
//! `POST /settle`) records what the proxy asks it.
//!
//! Needs `node` and `npm ci --prefix tests/clients`. Without them the test says
//! "skipped" and passes, unless `AUTHMD_REQUIRE_NODE_CLIENTS` is set (as CI does),
//! where it fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "test helpers: a failed step fails the test; skips and summaries are reported"
)]

use std::net::SocketAddr;
use std::sync::Arc;

use authmd_proxy::body::Body;
use http_body_util::BodyExt;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::support;
use crate::support::{TestProxy, WRITER_KEY, client};

const SCRIPT: &str = "tests/clients/x402.mjs";
const PACKAGES: [&str; 3] = ["@x402/core", "@x402/evm", "viem"];

/// The transaction hash the facilitator reports for every settlement.
const TRANSACTION: &str = "0x5e771ed000000000000000000000000000000000000000000000000000000001";

const CONFIG: &str = concat!(
    support::metered_api!(),
    r#"payments:
  facilitator: {facilitator}
  requests_per_payment: 1
  description: Offer search
  mime_type: application/json
  accepts:
    - scheme: exact
      network: eip155:84532
      network_v1: base-sepolia
      amount: "10000"
      asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
      pay_to: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
      max_timeout_seconds: 60
      extra: {name: USDC, version: "2"}
"#
);

/// The configured requirement, as x402 v2 writes it.
fn requirement() -> Value {
    json!({
        "scheme": "exact",
        "network": "eip155:84532",
        "amount": "10000",
        "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
        "maxTimeoutSeconds": 60,
        "extra": {"name": "USDC", "version": "2"},
    })
}

/// What the facilitator was asked: endpoint (`verify` or `settle`) and body.
type Calls = Arc<Mutex<Vec<(String, Value)>>>;

/// A facilitator following the x402 HTTP protocol: `/verify` finds a v2 payment
/// valid when its `accepted` requirement is the one it is asked to verify against
/// and it carries a signature (it checks nothing on chain); `/settle` reports
/// success with [`TRANSACTION`]. The payer is the authorization's `from`.
async fn facilitator() -> (SocketAddr, Calls) {
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let addr = support::upstream(move |request| {
        let seen = seen.clone();
        async move {
            let endpoint = request.uri().path().trim_start_matches('/').to_owned();
            let bytes = request.into_body().collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            seen.lock().await.push((endpoint.clone(), body.clone()));
            let payload = &body["paymentPayload"];
            let payer = payload["payload"]["authorization"]["from"].clone();
            let valid = body["x402Version"] == 2
                && payload["x402Version"] == 2
                && payload["accepted"] == body["paymentRequirements"]
                && payload["payload"]["signature"].is_string();
            let (status, answer) = match (endpoint.as_str(), valid) {
                ("verify", true) => (StatusCode::OK, json!({"isValid": true, "payer": payer})),
                ("verify", false) => (
                    StatusCode::BAD_REQUEST,
                    json!({"isValid": false, "invalidReason": "invalid_payload", "payer": payer}),
                ),
                ("settle", true) => (
                    StatusCode::OK,
                    json!({"success": true, "payer": payer, "transaction": TRANSACTION,
                        "network": "eip155:84532"}),
                ),
                ("settle", false) => (
                    StatusCode::BAD_REQUEST,
                    json!({"success": false, "errorReason": "invalid_payload", "transaction": "",
                        "network": "eip155:84532"}),
                ),
                _ => (StatusCode::NOT_FOUND, json!({"error": "not found"})),
            };
            let mut response = Response::new(Body::full(answer.to_string()));
            *response.status_mut() = status;
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        }
    })
    .await;
    (addr, calls)
}

/// The x402 client reads the 402 of a used-up quota, pays it, and gets the
/// resource with the settlement; the facilitator is asked to verify and to settle
/// exactly that payment against exactly the configured requirement, once each.
#[tokio::test]
async fn the_x402_client_pays_a_used_up_quota_through_the_facilitator() {
    if !support::node::ready(&PACKAGES).await {
        return;
    }

    let (facilitator, calls) = facilitator().await;
    let config = CONFIG.replace("{facilitator}", &format!("http://{facilitator}"));
    let proxy = TestProxy::start(&config, None).await;
    let url = proxy.url("/offers");

    // Use up the quota of the day.
    let response = client()
        .get(&url)
        .header("x-agent-key", WRITER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the first request is within quota");

    let summary = support::node::run(SCRIPT, &[&url, WRITER_KEY]).await;
    proxy.shutdown().await;

    // What the client read and paid.
    assert_eq!(summary["payment_required"]["x402Version"], 2, "{summary}");
    assert_eq!(
        summary["payment_required"]["accepts"],
        json!([requirement()]),
        "{summary}"
    );
    assert_eq!(
        summary["payment_required"]["resource"]["url"], url,
        "{summary}"
    );
    assert_eq!(
        summary["payment_required_v1"]["x402Version"], 1,
        "{summary}"
    );
    assert_eq!(
        summary["payment_required_v1"]["accepts"][0]["network"], "base-sepolia",
        "{summary}"
    );
    assert_eq!(summary["payment"]["accepted"], requirement(), "{summary}");
    assert_eq!(summary["paid"]["status"], 200, "{summary}");
    assert_eq!(
        summary["paid"]["upstream"]["payment_signature_forwarded"], false,
        "the signed transfer is the proxy's to settle, not the upstream's: {summary}"
    );
    assert_eq!(summary["settlement"]["success"], true, "{summary}");
    assert_eq!(
        summary["settlement"]["transaction"], TRANSACTION,
        "{summary}"
    );
    assert_eq!(
        summary["settlement"]["payer"], summary["payer"],
        "{summary}"
    );
    assert_eq!(summary["replay"]["status"], 402, "{summary}");

    // What the facilitator was asked: one verify, then one settle (the replay was
    // refused without asking), each with the client's payment as it sent it and
    // the configured requirement.
    let calls = calls.lock().await.clone();
    let endpoints: Vec<&str> = calls.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(endpoints, ["verify", "settle"], "{calls:?}");
    for (endpoint, body) in &calls {
        assert_eq!(body["x402Version"], 2, "{endpoint}: {body}");
        assert_eq!(
            body["paymentRequirements"],
            requirement(),
            "{endpoint}: {body}"
        );
        assert_eq!(
            body["paymentPayload"], summary["payment"],
            "{endpoint}: the payload is not the one the client sent"
        );
        assert_eq!(
            body.as_object().map(serde_json::Map::len),
            Some(3),
            "{endpoint}: x402Version, paymentPayload and paymentRequirements only: {body}"
        );
    }
}
