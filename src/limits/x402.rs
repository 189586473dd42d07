//! x402 payments: the way past a used-up quota.
//!
//! A request over its quota is answered 402 with the payment requirements in both
//! protocol generations: the v2 `PAYMENT-REQUIRED` header (base64 JSON
//! `PaymentRequired`) and a v1 body (`x402Version: 1` and `accepts`, beside the
//! usual error envelope). A retry carrying `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT`
//! (v1) is checked against the requirements, verified by the configured
//! facilitator (`POST /verify`), forwarded, and settled (`POST /settle`) once the
//! upstream has answered successfully; the answer then carries `PAYMENT-RESPONSE`
//! (or `X-PAYMENT-RESPONSE`). Nothing is charged for a request that was not served,
//! and nothing is served for a payment that was not verified: a facilitator that
//! cannot be reached is a 503, never a free pass. A payment header is accepted once:
//! a replay is refused before the facilitator is asked.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};

use crate::http_client::{HttpsClient, https_client};

/// `PAYMENT-REQUIRED`: the v2 requirements of a 402.
pub const PAYMENT_REQUIRED: HeaderName = HeaderName::from_static("payment-required");
/// `PAYMENT-SIGNATURE`: a v2 payment.
pub const PAYMENT_SIGNATURE: HeaderName = HeaderName::from_static("payment-signature");
/// `X-PAYMENT`: a v1 payment.
pub const X_PAYMENT: HeaderName = HeaderName::from_static("x-payment");
/// The headers that carry a payment; never forwarded upstream.
pub const PAYMENT_HEADERS: [HeaderName; 2] = [PAYMENT_SIGNATURE, X_PAYMENT];
/// `PAYMENT-RESPONSE`: the v2 settlement.
pub const PAYMENT_RESPONSE: HeaderName = HeaderName::from_static("payment-response");
/// `X-PAYMENT-RESPONSE`: the v1 settlement.
pub const X_PAYMENT_RESPONSE: HeaderName = HeaderName::from_static("x-payment-response");

/// Why a request that needs (or offers) an x402 payment was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentError {
    /// The quota is used up; the 402 carries the payment requirements.
    Required,
    /// The `PAYMENT-SIGNATURE` / `X-PAYMENT` header is not base64 JSON of a payment
    /// payload for this API.
    Malformed,
    /// The facilitator found the payment invalid (402 with the requirements again).
    Rejected,
    /// The facilitator could not be reached or did not settle: nothing was charged
    /// and nothing was served.
    Unavailable,
}

/// Largest payment header or facilitator answer read.
const MAX_MESSAGE: usize = 64 * 1024;
/// Payment headers remembered (for replay refusal) before expired ones are swept.
const SWEEP_AT: usize = 10_000;

/// One way to pay, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Accept {
    /// `exact`.
    pub scheme: String,
    /// CAIP-2 network (v2), e.g. `eip155:84532`.
    pub network: String,
    /// The v1 name of the network, e.g. `base-sepolia`.
    pub network_v1: String,
    /// Amount in the asset's atomic units.
    pub amount: String,
    /// Token contract address.
    pub asset: String,
    /// Recipient address.
    pub pay_to: String,
    /// How long a payment authorization may take.
    pub max_timeout_seconds: u64,
    /// Scheme extras (the EIP-712 domain of the token for EVM `exact`).
    pub extra: Option<Value>,
}

/// The `payments:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Payments {
    /// Base URL of the facilitator (`/verify` and `/settle` are appended).
    pub facilitator: String,
    /// Requests one payment buys (the paid request included).
    pub requests_per_payment: u64,
    /// What is being paid for.
    pub description: String,
    /// The media type of the paid responses.
    pub mime_type: String,
    /// Longest wait for the facilitator.
    pub timeout: Duration,
    /// Accepted ways to pay.
    pub accepts: Vec<Accept>,
}

impl Accept {
    fn v2(&self) -> Value {
        json!({
            "scheme": self.scheme,
            "network": self.network,
            "amount": self.amount,
            "asset": self.asset,
            "payTo": self.pay_to,
            "maxTimeoutSeconds": self.max_timeout_seconds,
            "extra": self.extra,
        })
    }

    fn v1(&self, resource: &str, payments: &Payments) -> Value {
        json!({
            "scheme": self.scheme,
            "network": self.network_v1,
            "maxAmountRequired": self.amount,
            "asset": self.asset,
            "payTo": self.pay_to,
            "resource": resource,
            "description": payments.description,
            "mimeType": payments.mime_type,
            "outputSchema": null,
            "maxTimeoutSeconds": self.max_timeout_seconds,
            "extra": self.extra,
        })
    }

    /// True when a v2 payload's `accepted` requirements are these.
    fn is_accepted_v2(&self, accepted: &Value) -> bool {
        let field = |name: &str| accepted.get(name).and_then(Value::as_str);
        field("scheme") == Some(&self.scheme)
            && field("network") == Some(&self.network)
            && field("amount") == Some(&self.amount)
            && field("asset").is_some_and(|a| a.eq_ignore_ascii_case(&self.asset))
            && field("payTo").is_some_and(|p| p.eq_ignore_ascii_case(&self.pay_to))
    }
}

/// The body fields and header of a 402 that asks for payment.
#[derive(Debug, Clone)]
pub struct Offer {
    /// `PAYMENT-REQUIRED`.
    pub header: HeaderValue,
    /// `x402Version: 1` body's `accepts`.
    pub accepts_v1: Value,
}

/// A payment presented with a request, matched to one of the requirements.
#[derive(Debug, Clone)]
pub struct Payment {
    /// 1 (`X-PAYMENT`) or 2 (`PAYMENT-SIGNATURE`).
    pub version: u8,
    payload: Value,
    requirements: Value,
    /// Short hash of the header, for replay refusal.
    fingerprint: u64,
    /// When the fingerprint may be forgotten (unix seconds).
    expires_at: i64,
}

/// Why a payment did not go through, with the facilitator's reason if it gave one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The rejection to answer with.
    pub error: PaymentError,
    /// The facilitator's reason (a protocol code such as `insufficient_funds`).
    pub reason: Option<String>,
}

impl Refused {
    fn new(error: PaymentError, reason: Option<String>) -> Refused {
        Refused { error, reason }
    }
}

/// The payment side of the limiter: requirements, the facilitator, replay refusal.
#[derive(Debug)]
pub struct X402 {
    payments: Payments,
    /// The facilitator's host, for log lines (its URL may carry credentials).
    facilitator_host: String,
    client: HttpsClient,
    /// Fingerprints of payment headers already used, with when they expire.
    seen: Arc<papaya::HashMap<u64, i64>>,
}

impl X402 {
    /// Shares `previous`'s record of used payments (the payment side of the config
    /// being replaced), so a reload never lets a payment be replayed.
    pub fn share_replays(&mut self, previous: &X402) {
        self.seen = previous.seen.clone();
    }

    /// The payment side for `payments`.
    #[must_use]
    pub fn new(payments: Payments) -> X402 {
        let facilitator_host = payments
            .facilitator
            .parse::<http::Uri>()
            .ok()
            .and_then(|uri| uri.host().map(str::to_owned))
            .unwrap_or_default();
        X402 {
            facilitator_host,
            payments,
            client: https_client(),
            seen: Arc::default(),
        }
    }

    /// The settings.
    #[must_use]
    pub fn payments(&self) -> &Payments {
        &self.payments
    }

    /// The requirements for `resource` (the URL the agent asked for), with the
    /// `error` that explains why payment is needed.
    #[must_use]
    pub fn offer(&self, resource: &str, error: &str) -> Offer {
        let required = json!({
            "x402Version": 2,
            "error": error,
            "resource": {
                "url": resource,
                "description": self.payments.description,
                "mimeType": self.payments.mime_type,
            },
            "accepts": self.payments.accepts.iter().map(Accept::v2).collect::<Vec<_>>(),
        });
        let encoded = STANDARD.encode(required.to_string());
        Offer {
            header: HeaderValue::from_str(&encoded)
                .unwrap_or_else(|_| HeaderValue::from_static("")),
            accepts_v1: Value::Array(
                self.payments
                    .accepts
                    .iter()
                    .map(|a| a.v1(resource, &self.payments))
                    .collect(),
            ),
        }
    }

    /// The payment a request carries, if any: `Err(Malformed)` when a payment
    /// header is not base64 JSON of a payload for one of the requirements.
    pub fn read(
        &self,
        headers: &HeaderMap,
        resource: &str,
        now: i64,
    ) -> Result<Option<Payment>, PaymentError> {
        let (version, value) = match (headers.get(&PAYMENT_SIGNATURE), headers.get(&X_PAYMENT)) {
            (None, None) => return Ok(None),
            (Some(v), None) => (2, v),
            (None, Some(v)) => (1, v),
            (Some(_), Some(_)) => return Err(PaymentError::Malformed),
        };
        if value.len() > MAX_MESSAGE {
            return Err(PaymentError::Malformed);
        }
        let decoded = STANDARD
            .decode(value.as_bytes())
            .map_err(|_| PaymentError::Malformed)?;
        let payload: Value =
            serde_json::from_slice(&decoded).map_err(|_| PaymentError::Malformed)?;
        if payload.get("x402Version").and_then(Value::as_u64) != Some(u64::from(version))
            || !payload.get("payload").is_some_and(Value::is_object)
        {
            return Err(PaymentError::Malformed);
        }
        let accept = if version == 2 {
            let accepted = payload.get("accepted").ok_or(PaymentError::Malformed)?;
            self.payments
                .accepts
                .iter()
                .find(|a| a.is_accepted_v2(accepted))
        } else {
            let field = |name: &str| payload.get(name).and_then(Value::as_str);
            self.payments.accepts.iter().find(|a| {
                field("scheme") == Some(&a.scheme) && field("network") == Some(&a.network_v1)
            })
        }
        .ok_or(PaymentError::Malformed)?;
        let requirements = if version == 2 {
            accept.v2()
        } else {
            accept.v1(resource, &self.payments)
        };
        let digest = blake3::hash(value.as_bytes());
        let mut fingerprint = [0u8; 8];
        fingerprint.copy_from_slice(&digest.as_bytes()[..8]);
        Ok(Some(Payment {
            version,
            payload,
            requirements,
            fingerprint: u64::from_le_bytes(fingerprint),
            expires_at: now
                + i64::try_from(accept.max_timeout_seconds.max(60)).unwrap_or(i64::MAX / 2) * 2,
        }))
    }

    /// Verifies `payment` with the facilitator. A payment header is used once: a
    /// second presentation is refused without asking anyone.
    pub async fn verify(&self, payment: &Payment, now: i64) -> Result<(), Refused> {
        if !self.first_use(payment, now) {
            return Err(Refused::new(
                PaymentError::Rejected,
                Some("payment_already_used".into()),
            ));
        }
        let answer = self.call("verify", payment).await;
        let outcome = match answer {
            Some(body) if body.get("isValid").and_then(Value::as_bool) == Some(true) => Ok(()),
            Some(body) if body.get("isValid").and_then(Value::as_bool) == Some(false) => Err(
                Refused::new(PaymentError::Rejected, reason(&body, "invalidReason")),
            ),
            _ => Err(Refused::new(PaymentError::Unavailable, None)),
        };
        if matches!(&outcome, Err(r) if r.error == PaymentError::Unavailable) {
            // Nothing happened: the agent may present the same payment again.
            self.seen.pin().remove(&payment.fingerprint);
        }
        outcome
    }

    /// Records the payment's header as used; false when it already was.
    fn first_use(&self, payment: &Payment, now: i64) -> bool {
        let seen = self.seen.pin();
        if seen.len() >= SWEEP_AT {
            seen.retain(|_, expires| *expires > now);
        }
        seen.try_insert(payment.fingerprint, payment.expires_at)
            .is_ok()
    }

    /// Settles a verified payment once its request was served; returns the
    /// response header to add.
    pub async fn settle(&self, payment: &Payment) -> Result<(HeaderName, HeaderValue), Refused> {
        let Some(body) = self.call("settle", payment).await else {
            // Nothing was charged: the agent may present the same payment again.
            self.seen.pin().remove(&payment.fingerprint);
            return Err(Refused::new(PaymentError::Unavailable, None));
        };
        if body.get("success").and_then(Value::as_bool) != Some(true) {
            return Err(Refused::new(
                PaymentError::Rejected,
                reason(&body, "errorReason"),
            ));
        }
        let value = HeaderValue::from_str(&STANDARD.encode(body.to_string()))
            .map_err(|_| Refused::new(PaymentError::Unavailable, None))?;
        let name = if payment.version == 2 {
            PAYMENT_RESPONSE
        } else {
            X_PAYMENT_RESPONSE
        };
        Ok((name, value))
    }

    /// POSTs the payment to the facilitator's `endpoint`; `None` when it cannot be
    /// reached, answers with an error status, or does not answer JSON in time.
    async fn call(&self, endpoint: &str, payment: &Payment) -> Option<Value> {
        let body = json!({
            "x402Version": payment.version,
            "paymentPayload": payment.payload,
            "paymentRequirements": payment.requirements,
        });
        let uri = format!("{}/{endpoint}", self.payments.facilitator);
        let request = Request::builder()
            .method(Method::POST)
            .uri(&uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .ok()?;
        let exchange = async {
            let response = self.client.request(request).await.ok()?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_MESSAGE)
                .collect()
                .await
                .ok()?
                .to_bytes();
            // A facilitator answers a refused payment with 400 and the reason in
            // the body; anything else that is not 200 is an outage.
            if status != StatusCode::OK && status != StatusCode::BAD_REQUEST {
                return None;
            }
            serde_json::from_slice::<Value>(&bytes).ok()
        };
        match tokio::time::timeout(self.payments.timeout, exchange).await {
            Ok(Some(value)) => Some(value),
            _ => {
                tracing::warn!(facilitator = %self.facilitator_host, endpoint, "the x402 facilitator did not answer");
                None
            }
        }
    }
}

/// A facilitator's reason, if it is a short protocol code (it is repeated to the
/// agent, so anything else is dropped).
fn reason(body: &Value, field: &str) -> Option<String> {
    body.get(field)
        .and_then(Value::as_str)
        .filter(|r| r.len() <= 64 && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x402() -> X402 {
        X402::new(Payments {
            facilitator: "http://127.0.0.1:9".into(),
            requests_per_payment: 1,
            description: "Offer search".into(),
            mime_type: "application/json".into(),
            timeout: Duration::from_secs(1),
            accepts: vec![Accept {
                scheme: "exact".into(),
                network: "eip155:84532".into(),
                network_v1: "base-sepolia".into(),
                amount: "10000".into(),
                asset: "0xAsset".into(),
                pay_to: "0xPayTo".into(),
                max_timeout_seconds: 60,
                extra: Some(json!({"name": "USDC", "version": "2"})),
            }],
        })
    }

    fn header(value: &Value) -> HeaderValue {
        HeaderValue::from_str(&STANDARD.encode(value.to_string())).unwrap()
    }

    #[test]
    fn the_offer_speaks_both_generations() {
        let offer = x402().offer("https://api.example.com/offers", "quota used up");
        let v2: Value =
            serde_json::from_slice(&STANDARD.decode(offer.header.as_bytes()).unwrap()).unwrap();
        assert_eq!(v2["x402Version"], 2);
        assert_eq!(v2["resource"]["url"], "https://api.example.com/offers");
        assert_eq!(v2["accepts"][0]["payTo"], "0xPayTo");
        assert_eq!(v2["accepts"][0]["amount"], "10000");
        assert_eq!(offer.accepts_v1[0]["network"], "base-sepolia");
        assert_eq!(offer.accepts_v1[0]["maxAmountRequired"], "10000");
        assert_eq!(
            offer.accepts_v1[0]["resource"],
            "https://api.example.com/offers"
        );
    }

    #[test]
    fn payments_are_read_strictly() {
        let x = x402();
        let read = |name: &'static str, value: HeaderValue| {
            let mut headers = HeaderMap::new();
            headers.insert(name, value);
            x.read(&headers, "https://api.example.com/offers", 0)
        };
        let accepted = json!({"scheme": "exact", "network": "eip155:84532", "amount": "10000",
            "asset": "0xasset", "payTo": "0xpayto", "maxTimeoutSeconds": 60});
        let good = json!({"x402Version": 2, "accepted": accepted, "payload": {"signature": "0x1"}});
        let payment = read("payment-signature", header(&good)).unwrap().unwrap();
        assert_eq!(payment.version, 2);
        assert_eq!(payment.requirements["payTo"], "0xPayTo");
        let v1 = json!({"x402Version": 1, "scheme": "exact", "network": "base-sepolia",
            "payload": {"signature": "0x1"}});
        assert_eq!(read("x-payment", header(&v1)).unwrap().unwrap().version, 1);
        assert!(x.read(&HeaderMap::new(), "", 0).unwrap().is_none());
        let mut cheaper = good;
        cheaper["accepted"]["amount"] = json!("1");
        for bad in [
            HeaderValue::from_static("not base64!"),
            header(&json!("a string")),
            header(&json!({"x402Version": 1, "accepted": accepted, "payload": {}})),
            header(&json!({"x402Version": 2, "accepted": accepted})),
            header(&cheaper),
        ] {
            assert_eq!(
                read("payment-signature", bad).unwrap_err(),
                PaymentError::Malformed
            );
        }
    }

    #[tokio::test]
    async fn an_unreachable_facilitator_is_unavailable_and_forgets_the_payment() {
        let x = x402();
        let good = json!({"x402Version": 2, "payload": {"signature": "0x1"},
            "accepted": {"scheme": "exact", "network": "eip155:84532", "amount": "10000",
                "asset": "0xAsset", "payTo": "0xPayTo"}});
        let mut headers = HeaderMap::new();
        headers.insert("payment-signature", header(&good));
        let payment = x.read(&headers, "u", 0).unwrap().unwrap();
        for _ in 0..2 {
            let refused = x.verify(&payment, 0).await.unwrap_err();
            assert_eq!(refused.error, PaymentError::Unavailable);
        }
    }
}
