//! x402 payment headers.
//!
//! Builds the payment side (`limits::x402::X402`) from `config.example.yaml` with
//! its commented `payments:` block uncommented, then feeds the input, raw and
//! base64-encoded (so the fuzzer can shape the JSON directly), as the value of
//! `PAYMENT-SIGNATURE` (v2) and of `X-PAYMENT` (v1) to `X402::read`, and also
//! with both headers at once; and, when it is UTF-8, as the resource URL of
//! `X402::offer`. Checks that nothing panics, and:
//!
//! - a payment read from `PAYMENT-SIGNATURE` is version 2, from `X-PAYMENT`
//!   version 1, and a request carrying a payment header never reads as "no
//!   payment";
//! - both headers at once are refused as malformed;
//! - the `PAYMENT-REQUIRED` header of an offer is base64 JSON that names exactly
//!   the resource asked for, as does every v1 requirement.
#![no_main]

use std::sync::OnceLock;

use authmd_proxy::limits::x402::{PAYMENT_REQUIRED, PAYMENT_SIGNATURE, X_PAYMENT, X402};
use authmd_proxy::limits::x402::PaymentError;
use authmd_proxy_fuzz::{EXAMPLE, config_from};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

const RESOURCE: &str = "http://127.0.0.1:8080/api/v1/offers";
const NOW: i64 = 1_800_000_000;

/// `config.example.yaml` with the commented `payments:` block uncommented.
fn with_payments() -> String {
    let mut out = String::with_capacity(EXAMPLE.len());
    let mut inside = false;
    for line in EXAMPLE.lines() {
        if line == "# payments:" {
            inside = true;
        } else if inside && !line.starts_with("#   ") {
            inside = false;
        }
        out.push_str(if inside { &line[2..] } else { line });
        out.push('\n');
    }
    out
}

fn x402() -> &'static X402 {
    static X: OnceLock<X402> = OnceLock::new();
    X.get_or_init(|| {
        let config = config_from(&with_payments());
        let Some(payments) = config.limits.payments.clone() else {
            panic!("the uncommented example has no payments section");
        };
        assert!(!payments.accepts.is_empty());
        X402::new(payments)
    })
}

fuzz_target!(|data: &[u8]| {
    let x = x402();
    let encoded = STANDARD.encode(data);
    for value in [data, encoded.as_bytes()] {
        let Ok(value) = HeaderValue::from_bytes(value) else {
            continue;
        };
        for (name, version) in [(PAYMENT_SIGNATURE, 2), (X_PAYMENT, 1)] {
            let mut headers = HeaderMap::new();
            headers.insert(name.clone(), value.clone());
            match x.read(&headers, RESOURCE, NOW) {
                Ok(Some(payment)) => assert_eq!(payment.version, version, "from {name}"),
                Ok(None) => panic!("a {name} header read as no payment"),
                Err(_) => {}
            }
        }
        let mut both = HeaderMap::new();
        both.insert(PAYMENT_SIGNATURE, value.clone());
        both.insert(X_PAYMENT, value);
        assert!(matches!(
            x.read(&both, RESOURCE, NOW),
            Err(PaymentError::Malformed)
        ));
    }

    if let Ok(resource) = std::str::from_utf8(data) {
        let offer = x.offer(resource, "the quota is used up");
        let Ok(json) = STANDARD.decode(offer.header.as_bytes()) else {
            panic!("{PAYMENT_REQUIRED} is not base64");
        };
        let Ok(required) = serde_json::from_slice::<serde_json::Value>(&json) else {
            panic!("{PAYMENT_REQUIRED} is not JSON");
        };
        assert_eq!(required["resource"]["url"].as_str(), Some(resource));
        let Some(v1) = offer.accepts_v1.as_array() else {
            panic!("accepts_v1 is not an array");
        };
        assert!(!v1.is_empty());
        for accept in v1 {
            assert_eq!(accept["resource"].as_str(), Some(resource));
        }
    }
});
