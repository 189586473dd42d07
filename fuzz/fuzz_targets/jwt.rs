//! Access-token verification (JWT) of the proxy's own tokens.
//!
//! Feeds any UTF-8 string to `Tokens::verify` (at a fixed time, [`FUTURE`], so the
//! seed tokens, issued at that time, stay valid) and to `Tokens::own_token_id`
//! (what the revocation endpoint uses), with a verifier configured from
//! `config.example.yaml` that signs with the harness's fixed Ed25519 key. Checks
//! that neither panics, and that neither can be forged: whenever `verify` accepts a
//! token or `own_token_id` returns its id, the token's signature verifies under the
//! harness key, checked with aws-lc-rs outside the JWT library (only the harness
//! holds that key, so it signed the token). An accepted token's grant is still
//! valid at the time asked, and asking twice gives the same answer (the second
//! answer comes from the verified-token cache).
//!
//! With `AUTHMD_FUZZ_WRITE_SEEDS=<dir>` set, the process first writes the seed
//! tokens (one per outcome: issued by the verifier's own `Tokens::issue`, expired,
//! not yet valid, wrong audience, issuer or type, unknown `kid`, `alg` none,
//! ES256 or HS256 with the public key as secret, bad claims, tampered signature)
//! into `<dir>`.
#![no_main]

use authmd_proxy_fuzz::{FUTURE, fixture};
use libfuzzer_sys::fuzz_target;

fn write_seeds() {
    let Ok(dir) = std::env::var("AUTHMD_FUZZ_WRITE_SEEDS") else {
        return;
    };
    let dir = std::path::Path::new(&dir);
    if let Err(e) = std::fs::create_dir_all(dir) {
        panic!("{}: {e}", dir.display());
    }
    let f = fixture();
    for (name, token) in f.seed_tokens() {
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, &token) {
            panic!("{}: {e}", path.display());
        }
        let outcome = f.tokens.verify(&token, FUTURE).map(|_| "accepted");
        eprintln!("wrote {}: {outcome:?}", path.display());
    }
}

fuzz_target!(init: write_seeds(), |token: &str| {
    let f = fixture();
    let first = f.tokens.verify(token, FUTURE);
    if let Ok(grant) = &first {
        assert!(f.signed_by_harness(token), "verify accepted a forged token: {token:?}");
        assert!(grant.valid_until > FUTURE, "accepted past its validity: {token:?}");
    }
    let second = f.tokens.verify(token, FUTURE);
    assert_eq!(
        first.as_ref().map(|_| ()).map_err(|e| *e),
        second.as_ref().map(|_| ()).map_err(|e| *e),
        "verify changed its answer on a second call: {token:?}"
    );
    if f.tokens.own_token_id(token).is_some() {
        assert!(f.signed_by_harness(token), "own_token_id accepted a forged token: {token:?}");
    }
});
