//! The request bodies of the credential lifecycle: register, claim, key creation
//! and agent revocation, in one target.
//!
//! The first byte picks the endpoint; the rest is its body, parsed by
//! `agent_auth::parse_body` exactly as the endpoint parses it once read (the
//! endpoints themselves take a live `Request<Incoming>`), and checked against the
//! reference reading of `authmd_proxy_fuzz::agent_bodies`:
//!
//! - a body is accepted exactly when it is one JSON object whose every known member
//!   is of its kind, with its names agreeing (`type` and `identity_type`, ...) and
//!   the required ones present; members the endpoint does not know are ignored, and
//!   listed, sorted, each once, their values never kept;
//! - what is understood is exactly what was sent under the known names;
//! - a refusal names a member that is wrong, and never quotes a value the client
//!   sent: the same body with every string value replaced by a canary is refused
//!   without the canary in its message (an assertion or claim token must not come
//!   back in an error, where it could be logged).
//!
//! `agent_register_body`, `agent_claim_body` and `agent_key_body` feed one endpoint
//! each, without the selector byte.
#![no_main]

use authmd_proxy::agent_auth::BodyKind;
use authmd_proxy_fuzz::agent_bodies::check;
use libfuzzer_sys::fuzz_target;

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
    check(kind, body);
});
