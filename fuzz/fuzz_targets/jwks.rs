//! JWKS handling: which key of a trusted issuer's key set is usable, for what.
//!
//! Feeds any bytes as a JWKS document: parsed as `jsonwebtoken::jwk::JwkSet` (what
//! `tokens::remote::RemoteKeys` does with an issuer's answer), then every key goes
//! through `tokens::remote::algorithm_of` and `DecodingKey::from_jwk`, as
//! `RemoteKeys` does when it builds its usable keys. Checks that nothing panics,
//! and that a key is never given an algorithm its type cannot have: never HMAC
//! (a symmetric `oct` key gets no algorithm at all), EdDSA only for an `OKP` key,
//! ES256/ES384 only for an `EC` key on P-256/P-384, RS*/PS* only for an `RSA` key.
//!
//! (The fetch itself and the filtering by the issuer's `algorithms` are private
//! to `RemoteKeys`; this target covers the public half.)
#![no_main]

use authmd_proxy::tokens::remote::algorithm_of;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(set) = serde_json::from_slice::<JwkSet>(data) else {
        return;
    };
    for jwk in &set.keys {
        let algorithm = algorithm_of(jwk);
        let _ = DecodingKey::from_jwk(jwk);
        let Some(algorithm) = algorithm else {
            continue;
        };
        // An independent, coarser oracle than the proxy's own table: the algorithm's
        // family must be the key's type (the curve check is the proxy's).
        let family = format!("{algorithm:?}");
        let fits = match &jwk.algorithm {
            AlgorithmParameters::OctetKeyPair(_) => family == "EdDSA",
            AlgorithmParameters::EllipticCurve(_) => family.starts_with("ES"),
            AlgorithmParameters::RSA(_) => family.starts_with("RS") || family.starts_with("PS"),
            _ => false,
        };
        assert!(
            fits,
            "algorithm_of gave {algorithm:?} to {:?}",
            jwk.algorithm
        );
    }
});
