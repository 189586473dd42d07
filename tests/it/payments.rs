//! x402 over real sockets, against a local facilitator that follows the protocol
//! (`POST /verify`, `POST /settle`): the 402 in both generations, a valid payment
//! served and settled, an invalid one refused, a replay refused before the
//! facilitator is asked, a malformed header, a facilitator that is down (503, the
//! upstream never reached), and no charge when the upstream fails.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "helpers of the tests: a failed step fails the test"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use authmd_proxy::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http_body_util::BodyExt;
use hyper::Response;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::support;
use crate::support::{TestProxy, WRITER_KEY, assert_envelope, client};

const CONFIG: &str = concat!(
    support::metered_api!(),
    r#"  - {path: /fail, methods: [GET], scopes: [offers:read]}
payments:
  facilitator: {facilitator}
  requests_per_payment: {per_payment}
  description: Offer search
  accepts:
    - scheme: exact
      network: eip155:84532
      amount: "10000"
      asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
      pay_to: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
      extra: {name: USDC, version: "2"}
"#
);

/// What the facilitator was asked: endpoint and body.
type Calls = Arc<Mutex<Vec<(String, Value)>>>;

/// A facilitator that finds a payment valid unless its signature is `0xbad`, and
/// settles it unless its signature is `0xnosettle`.
async fn facilitator() -> (SocketAddr, Calls) {
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let addr = support::upstream(move |request| {
        let seen = seen.clone();
        async move {
            let endpoint = request.uri().path().trim_start_matches('/').to_owned();
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&body).unwrap();
            let signature = body["paymentPayload"]["payload"]["signature"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            seen.lock().await.push((endpoint.clone(), body));
            let answer = match (endpoint.as_str(), signature.as_str()) {
                ("verify", "0xbad") => json!({"isValid": false, "invalidReason": "insufficient_funds"}),
                ("verify", _) => json!({"isValid": true, "payer": "0xpayer"}),
                ("settle", "0xnosettle") => json!({"success": false,
                    "errorReason": "invalid_transaction_state", "transaction": "", "network": "eip155:84532"}),
                ("settle", _) => json!({"success": true, "payer": "0xpayer",
                    "transaction": "0xtx1", "network": "eip155:84532"}),
                _ => json!({}),
            };
            Response::new(Body::full(answer.to_string()))
        }
    })
    .await;
    (addr, calls)
}

/// An upstream that counts its requests and fails `/fail` with a 500.
async fn counting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let addr = support::upstream(move |request| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut response = Response::new(Body::full("{\"offers\":[]}"));
            if request.uri().path() == "/fail" {
                *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            }
            response
        }
    })
    .await;
    (addr, count)
}

async fn proxy(facilitator: &str, per_payment: u64, upstream: SocketAddr) -> TestProxy {
    let config = CONFIG
        .replace("{facilitator}", facilitator)
        .replace("{per_payment}", &per_payment.to_string());
    let proxy = TestProxy::start(&config, Some(upstream)).await;
    // Use up the quota.
    assert_eq!(get(&proxy, "/offers", None).await.status(), 200);
    proxy
}

async fn get(proxy: &TestProxy, path: &str, payment: Option<(&str, &str)>) -> reqwest::Response {
    let mut request = client()
        .get(proxy.url(path))
        .header("x-agent-key", WRITER_KEY);
    if let Some((name, value)) = payment {
        request = request.header(name, value);
    }
    request.send().await.unwrap()
}

fn requirement() -> Value {
    json!({"scheme": "exact", "network": "eip155:84532", "amount": "10000",
        "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
        "maxTimeoutSeconds": 60, "extra": {"name": "USDC", "version": "2"}})
}

fn payment_v2(signature: &str, nonce: u32) -> String {
    let payload = json!({"x402Version": 2, "accepted": requirement(),
        "payload": {"signature": signature, "authorization": {"nonce": nonce}}});
    STANDARD.encode(payload.to_string())
}

fn decode(header: &str) -> Value {
    serde_json::from_slice(&STANDARD.decode(header).unwrap()).unwrap()
}

#[tokio::test]
async fn a_used_up_quota_offers_payment_in_both_generations() {
    let (upstream, _) = counting_upstream().await;
    let proxy = proxy("http://127.0.0.1:9", 1, upstream).await;
    let response = get(&proxy, "/offers", None).await;
    let required = decode(response.headers()["payment-required"].to_str().unwrap());
    assert_eq!(response.headers()["ratelimit-remaining"], "0");
    assert_eq!(required["x402Version"], 2);
    assert_eq!(required["resource"]["url"], proxy.url("/offers"));
    assert_eq!(required["resource"]["description"], "Offer search");
    assert_eq!(required["resource"]["mimeType"], "application/json");
    assert_eq!(required["accepts"], json!([requirement()]));
    assert_eq!(response.status(), 402);
    let body = support::json(response).await;
    assert_eq!(body["code"], "PAYMENT_REQUIRED");
    assert_eq!(body["error"], "payment_required");
    assert_eq!(body["x402Version"], 1);
    let v1 = &body["accepts"][0];
    assert_eq!(v1["network"], "base-sepolia", "the v1 name of eip155:84532");
    assert_eq!(v1["maxAmountRequired"], "10000");
    assert_eq!(v1["resource"], proxy.url("/offers"));
    assert_eq!(v1["payTo"], "0x209693Bc6afc0C5328bA36FaF03C514EF312287C");
    assert!(v1["outputSchema"].is_null());
    assert!(
        body["docs"]
            .as_str()
            .unwrap()
            .ends_with("/auth.md#rate-limits")
    );
}

#[tokio::test]
async fn a_valid_payment_is_served_then_settled_and_a_replay_is_refused() {
    let (facilitator, calls) = facilitator().await;
    let (upstream, served) = counting_upstream().await;
    let proxy = proxy(&format!("http://{facilitator}"), 1, upstream).await;
    let payment = payment_v2("0xgood", 1);
    let response = get(&proxy, "/offers", Some(("payment-signature", &payment))).await;
    assert_eq!(response.status(), 200);
    let settled = decode(response.headers()["payment-response"].to_str().unwrap());
    assert_eq!(settled["success"], true);
    assert_eq!(settled["transaction"], "0xtx1");
    assert_eq!(response.text().await.unwrap(), "{\"offers\":[]}");
    assert_eq!(served.load(Ordering::SeqCst), 2);
    {
        let calls = calls.lock().await;
        let endpoints: Vec<&str> = calls.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(endpoints, ["verify", "settle"]);
        for (_, body) in calls.iter() {
            assert_eq!(body["x402Version"], 2);
            assert_eq!(body["paymentRequirements"], requirement());
            assert_eq!(body["paymentPayload"]["payload"]["signature"], "0xgood");
        }
    }
    // The same payment again is refused here, without asking the facilitator.
    let replay = get(&proxy, "/offers", Some(("payment-signature", &payment))).await;
    assert!(replay.headers().contains_key("payment-required"));
    let body = assert_payment_refusal(replay, 402, "PAYMENT_REJECTED").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("payment_already_used"),
        "{body}"
    );
    assert_eq!(calls.lock().await.len(), 2);
    assert_eq!(served.load(Ordering::SeqCst), 2);
    // One payment bought one request: the next is 402 again.
    assert_eq!(get(&proxy, "/offers", None).await.status(), 402);
}

#[tokio::test]
async fn an_invalid_payment_is_402_with_the_reason_and_nothing_is_served() {
    let (facilitator, calls) = facilitator().await;
    let (upstream, served) = counting_upstream().await;
    let proxy = proxy(&format!("http://{facilitator}"), 1, upstream).await;
    let response = get(
        &proxy,
        "/offers",
        Some(("payment-signature", &payment_v2("0xbad", 2))),
    )
    .await;
    assert!(response.headers().contains_key("payment-required"));
    let body = assert_payment_refusal(response, 402, "PAYMENT_REJECTED").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("insufficient_funds"),
        "{body}"
    );
    assert!(body["accepts"].is_array());
    assert_eq!(served.load(Ordering::SeqCst), 1);
    assert_eq!(calls.lock().await.len(), 1, "verified, never settled");
    // A payment that verifies but does not settle is not served either.
    let response = get(
        &proxy,
        "/offers",
        Some(("payment-signature", &payment_v2("0xnosettle", 3))),
    )
    .await;
    let body = assert_payment_refusal(response, 402, "PAYMENT_REJECTED").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("invalid_transaction_state"),
        "{body}"
    );
}

#[tokio::test]
async fn a_malformed_payment_is_400() {
    let (facilitator, calls) = facilitator().await;
    let (upstream, _) = counting_upstream().await;
    let proxy = proxy(&format!("http://{facilitator}"), 1, upstream).await;
    let mut cheaper = requirement();
    cheaper["amount"] = json!("1");
    let cheaper = STANDARD.encode(
        json!({"x402Version": 2, "accepted": cheaper, "payload": {"signature": "0x"}}).to_string(),
    );
    for (name, value) in [
        ("payment-signature", "%%% not base64"),
        ("payment-signature", &*STANDARD.encode("not json")),
        ("payment-signature", &*cheaper),
        ("x-payment", &*payment_v2("0xgood", 4)),
    ] {
        let response = get(&proxy, "/offers", Some((name, value))).await;
        assert_payment_refusal(response, 400, "PAYMENT_MALFORMED").await;
    }
    assert!(calls.lock().await.is_empty());
}

#[tokio::test]
async fn a_facilitator_that_is_down_is_503_and_never_a_free_pass() {
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let (upstream, served) = counting_upstream().await;
    let proxy = proxy(&format!("http://{closed}"), 1, upstream).await;
    let payment = payment_v2("0xgood", 5);
    let response = get(&proxy, "/offers", Some(("payment-signature", &payment))).await;
    assert_eq!(response.headers()["retry-after"], "5");
    assert_payment_refusal(response, 503, "PAYMENT_UNAVAILABLE").await;
    assert_eq!(
        served.load(Ordering::SeqCst),
        1,
        "the upstream was not reached"
    );
    // Nothing was used up: the same payment may be presented again (and is still
    // not a free pass while the facilitator is down).
    let again = get(&proxy, "/offers", Some(("payment-signature", &payment))).await;
    assert_eq!(again.status(), 503);
}

#[tokio::test]
async fn a_failed_upstream_is_not_charged_and_a_payment_can_buy_several_requests() {
    let (facilitator, calls) = facilitator().await;
    let (upstream, _) = counting_upstream().await;
    let proxy = proxy(&format!("http://{facilitator}"), 3, upstream).await;
    let response = get(
        &proxy,
        "/fail",
        Some(("payment-signature", &payment_v2("0xgood", 6))),
    )
    .await;
    assert_eq!(response.status(), 500);
    assert!(response.headers().get("payment-response").is_none());
    assert_eq!(calls.lock().await.len(), 1, "verified, not settled");
    // A v1 payment that buys three requests: this one and two more.
    let v1 = STANDARD.encode(
        json!({"x402Version": 1, "scheme": "exact", "network": "base-sepolia",
            "payload": {"signature": "0xgood", "authorization": {"nonce": 7}}})
        .to_string(),
    );
    let response = get(&proxy, "/offers", Some(("x-payment", &v1))).await;
    assert_eq!(response.status(), 200);
    let settled = decode(response.headers()["x-payment-response"].to_str().unwrap());
    assert_eq!(settled["success"], true);
    let calls = calls.lock().await;
    assert_eq!(calls[1].1["x402Version"], 1);
    assert_eq!(calls[1].1["paymentRequirements"]["network"], "base-sepolia");
    assert_eq!(
        calls[1].1["paymentRequirements"]["resource"],
        proxy.url("/offers")
    );
    drop(calls);
    assert_eq!(get(&proxy, "/offers", None).await.status(), 200);
    assert_eq!(get(&proxy, "/offers", None).await.status(), 200);
    assert_eq!(get(&proxy, "/offers", None).await.status(), 402);
}

async fn assert_payment_refusal(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let body = support::json(response).await;
    assert_eq!(body["code"], code, "{body}");
    for field in ["error", "message", "docs"] {
        assert!(body[field].is_string(), "{field} in {body}");
    }
    body
}

#[tokio::test]
async fn without_payments_a_used_up_quota_is_a_plain_402() {
    let config = CONFIG.split("payments:").next().unwrap().to_owned();
    let proxy = TestProxy::start(&config, None).await;
    assert_eq!(get(&proxy, "/offers", None).await.status(), 200);
    let response = get(&proxy, "/offers", None).await;
    assert!(response.headers().get("payment-required").is_none());
    assert_envelope(response, 402, "quota_exceeded", "QUOTA_EXCEEDED").await;
}

#[tokio::test]
async fn the_documents_state_the_limits_and_the_price() {
    let (upstream, _) = counting_upstream().await;
    let config = CONFIG
        .replace("{facilitator}", "https://x402.org/facilitator")
        .replace("{per_payment}", "10")
        .replace(
            "  - name: anonymous\n",
            "  - name: anonymous\n    rate_limits: [60/min]\n",
        );
    let proxy = TestProxy::start(&config, Some(upstream)).await;
    let metadata = support::json(
        client()
            .get(proxy.url("/.well-known/oauth-authorization-server"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let limits = &metadata["agent_auth"]["limits"];
    assert_eq!(
        limits["tiers"],
        json!([
            {"tier": "anonymous", "rate_limits": [{"requests": 60, "window_seconds": 60}]},
            {"tier": "metered", "rate_limits": [], "quota": {"requests": 1, "period": "day"}},
        ])
    );
    assert_eq!(limits["headers"], json!(["draft-06", "x-ratelimit"]));
    assert_eq!(limits["payment"]["protocol"], "x402");
    assert_eq!(limits["payment"]["requests_per_payment"], 10);
    assert_eq!(limits["payment"]["accepts"][0]["amount"], "10000");
    let auth_md = client()
        .get(proxy.url("/auth.md"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "| `anonymous` | 60 per minute | none |",
        "| `metered` | none | 1 per UTC day |",
        "`429 RATE_LIMIT_EXCEEDED`: wait `Retry-After` seconds",
        "`402 PAYMENT_REQUIRED`",
        "One payment buys 10 request(s). Price: 10000 atomic units of `0x036CbD53842c5426634e7929541eC2318f3dCF7e` on `eip155:84532`",
        "`X-RateLimit-Reset` (a unix time in seconds)",
        "| 429 | `RATE_LIMIT_EXCEEDED` |",
    ] {
        assert!(
            auth_md.contains(expected),
            "missing {expected:?} in:\n{auth_md}"
        );
    }
}

#[tokio::test]
async fn a_payment_header_never_reaches_the_upstream() {
    let config = CONFIG
        .replace("{facilitator}", "http://127.0.0.1:9")
        .replace("{per_payment}", "1")
        .replace("quota: 1/day", "quota: 5/day");
    // The built-in echo upstream answers with the headers it received.
    let proxy = TestProxy::start(&config, None).await;
    for (name, value) in [
        ("payment-signature", payment_v2("0xgood", 8)),
        ("x-payment", payment_v2("0xgood", 9)),
    ] {
        let response = get(&proxy, "/offers", Some((name, &value))).await;
        assert_eq!(
            response.status(),
            200,
            "the quota is not used up: no payment is taken"
        );
        let echo = support::json(response).await;
        assert!(
            echo["headers"].get(name).is_none(),
            "{name} was forwarded: {echo}"
        );
        assert_eq!(echo["headers"]["x-authmd-principal"], "key:writer");
    }
}
