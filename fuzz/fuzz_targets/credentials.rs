//! Credential extraction and authentication from request headers.
//!
//! Feeds header fields, one `name: value` per line (invalid names or values are
//! skipped; `{token}` in a value becomes a token the harness issued at start-up),
//! to `CredentialRules::extract` of `config.example.yaml` (Bearer, `X-Agent-Key`
//! anonymous, `X-API-Key`; prefix `ak_live`, checksums required), then what it finds
//! to `CredentialRules::authenticate` with the example key table and a token
//! verifier. Checks that neither panics, and that authentication is earned:
//!
//! - a key principal comes only from presenting `example-writer`'s or
//!   `example-reader`'s secret, and is that key;
//! - a token principal comes only from a token whose signature verifies under the
//!   harness's key (checked outside the JWT library);
//! - nothing, an anonymous identifier, or an unrecognised value never yields an
//!   authenticated principal.
#![no_main]

use authmd_proxy::credentials::{Presented, Principal};
use authmd_proxy_fuzz::{READER_KEY, WRITER_KEY, fixture, header_lines};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let headers = header_lines(data.split(|b| *b == b'\n'), &f.fresh_token);
    let rules = &f.config.credentials;
    let Ok(presented) = rules.extract(&headers) else {
        return;
    };
    // What was found is what its shape says it is.
    match presented {
        Presented::Key(value) | Presented::Token(value) => {
            assert_eq!(rules.classify(value), presented, "{value:?}");
        }
        Presented::Anonymous(value) => {
            assert_eq!(rules.classify(value), Presented::Unrecognised, "{value:?}");
        }
        Presented::Nothing | Presented::Unrecognised => {}
    }
    let Ok(principal) = rules.authenticate(presented, &f.keys, Some(&f.tokens)) else {
        return;
    };
    match (presented, &principal) {
        (Presented::Key(key), Principal::Key(entry)) => {
            let expected = match key {
                WRITER_KEY => "example-writer",
                READER_KEY => "example-reader",
                other => panic!("an unknown key authenticated: {other:?}"),
            };
            assert_eq!(entry.id(), expected);
        }
        (Presented::Token(token), Principal::Token(_)) => {
            assert!(
                f.signed_by_harness(token),
                "a forged token authenticated: {token:?}"
            );
        }
        (Presented::Nothing | Presented::Anonymous(_), Principal::Anonymous(_)) => {}
        (presented, principal) => {
            panic!("{presented:?} authenticated as {principal:?}")
        }
    }
});
