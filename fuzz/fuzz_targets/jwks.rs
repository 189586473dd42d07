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
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
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
        let fits = match (&jwk.algorithm, algorithm) {
            (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA) => true,
            (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
                ec.curve == EllipticCurve::P256
            }
            (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => {
                ec.curve == EllipticCurve::P384
            }
            (
                AlgorithmParameters::RSA(_),
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512,
            ) => true,
            _ => false,
        };
        assert!(
            fits,
            "algorithm_of gave {algorithm:?} to {:?}",
            jwk.algorithm
        );
    }
});
