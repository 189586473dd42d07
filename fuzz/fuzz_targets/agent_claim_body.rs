//! The body of a claim (`POST claim`), as agents write it: the input as the body,
//! through `agent_auth::parse_body`, the parsing the endpoint does once the body is
//! read. Checked against the reference reading of `authmd_proxy_fuzz::agent_bodies`:
//! accepted exactly when every known member is of its kind and its names agree;
//! what is understood and what is ignored (named, its value never kept); a refusal
//! names a member that is wrong and never quotes a value.
#![no_main]

use authmd_proxy::agent_auth::BodyKind;
use authmd_proxy_fuzz::agent_bodies::check;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| check(BodyKind::Claim, data));
