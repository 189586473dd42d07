//! The request bodies of the credential lifecycle: register, claim, key creation
//! and agent revocation.
//!
//! The first byte picks the endpoint; the rest is its body, parsed by
//! `agent_auth::parse_body` exactly as the endpoint parses it once read (the
//! endpoints themselves take a live `Request<Incoming>`). Checks, besides never
//! panicking:
//!
//! - a body is accepted only if it is one JSON object whose every field is in the
//!   endpoint's schema (a hand-written list here, aliases included): unknown fields
//!   are refused, not ignored;
//! - a refusal never quotes a value the client sent: the same body with every
//!   string value replaced by a canary is refused or accepted alike, and its message
//!   never contains the canary (an assertion or claim token must not come back in
//!   an error, where it could be logged).
#![no_main]

use authmd_proxy::agent_auth::{BodyKind, parse_body};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const CANARY: &str = "zq-canary-value";

fn schema(kind: BodyKind) -> &'static [&'static str] {
    match kind {
        BodyKind::Register => &[
            "type",
            "identity_type",
            "client_name",
            "scopes",
            "requested_scopes",
            "scope",
            "requested_credential_type",
            "assertion_type",
            "assertion",
            "identity_assertion",
        ],
        BodyKind::Claim => &[
            "claim_token",
            "registration_id",
            "identity_assertion",
            "assertion",
            "assertion_type",
        ],
        BodyKind::CreateKey => &["name", "scopes"],
        BodyKind::Revoke => &["credential"],
    }
}

/// `value` with every string (not object keys) replaced by the canary.
fn canaried(value: &Value) -> Value {
    match value {
        Value::String(_) => Value::String(CANARY.to_owned()),
        Value::Array(items) => Value::Array(items.iter().map(canaried).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), canaried(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// True when an object key anywhere in `value` contains the canary.
fn names_hold_canary(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(names_hold_canary),
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.contains(CANARY) || names_hold_canary(v)),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let kind = match selector % 4 {
        0 => BodyKind::Register,
        1 => BodyKind::Claim,
        2 => BodyKind::CreateKey,
        _ => BodyKind::Revoke,
    };
    let outcome = parse_body(kind, body);
    let parsed = serde_json::from_slice::<Value>(body);
    if outcome.is_ok() {
        let Ok(Value::Object(object)) = &parsed else {
            panic!("{kind:?} accepted a body that is not one JSON object: {body:?}");
        };
        for field in object.keys() {
            assert!(
                schema(kind).contains(&field.as_str()),
                "{kind:?} accepted the unknown field {field:?}"
            );
        }
    }
    // serde_json::Value keeps the last of repeated keys, so a body with a repeated
    // key can change meaning when rewritten; the canary check needs a faithful copy.
    let Ok(value) = parsed else {
        return;
    };
    // libFuzzer learns the canary from the comparison below and writes it into
    // inputs, as a field name say, which the check would then blame on the proxy.
    if names_hold_canary(&value) {
        return;
    }
    let rewritten = serde_json::to_vec(&value).expect("a Value serialises");
    let Ok(reparsed) = serde_json::from_slice::<Value>(&rewritten) else {
        return;
    };
    if reparsed != value || parse_body(kind, &rewritten).is_ok() != outcome.is_ok() {
        return;
    }
    let canary_body = serde_json::to_vec(&canaried(&value)).expect("a Value serialises");
    if let Err(message) = parse_body(kind, &canary_body) {
        assert!(
            !message.contains(CANARY),
            "{kind:?} quoted a client value in its refusal: {message:?}"
        );
    }
});
