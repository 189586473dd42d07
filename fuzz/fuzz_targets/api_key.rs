//! API key format: checksum, hash text, classification.
//!
//! Feeds any UTF-8 string to `credentials::api_key::checksum_ok` (prefix
//! `ak_live`, `gsk`, and the input's own text before its last `_`),
//! `credentials::KeyHash::parse`, `CredentialRules::classify` of
//! `config.example.yaml`, and, when the input is a valid key prefix,
//! `api_key::mint`. Checks that none panics, and:
//!
//! - `checksum_ok(s, prefix)` implies `s` is `<prefix>_` followed by 34 to 40
//!   base58 digits, and that `classify` calls it a key when the prefix is
//!   configured; every single-character change of such a key breaks the checksum;
//! - a parsed `KeyHash` prints as text that parses back to itself;
//! - `classify` says `Key` only for a configured prefix and `_`, and `Token` only
//!   for the JWT shape (`eyJ`, two dots);
//! - a key minted with a valid prefix passes `checksum_ok` with it.
#![no_main]

use authmd_proxy::credentials::{KeyHash, Presented, api_key};
use authmd_proxy_fuzz::fixture;
use libfuzzer_sys::fuzz_target;

const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

fn check_key_shape(s: &str, prefix: &str) {
    let rest = s
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .unwrap_or_else(|| panic!("checksum_ok({s:?}, {prefix:?}) without the prefix"));
    assert!(
        (34..=40).contains(&rest.len()) && rest.bytes().all(|b| BASE58.contains(&b)),
        "checksum_ok({s:?}, {prefix:?}) with a malformed body"
    );
    // Any one character changed (to another base58 digit) breaks the checksum.
    let start = s.len() - rest.len();
    let mut bytes = s.as_bytes().to_vec();
    for i in start..bytes.len() {
        let original = bytes[i];
        bytes[i] = if original == b'2' { b'3' } else { b'2' };
        let changed = std::str::from_utf8(&bytes).unwrap_or_default();
        assert!(
            !api_key::checksum_ok(changed, prefix),
            "{changed:?} still passes"
        );
        bytes[i] = original;
    }
}

fuzz_target!(|s: &str| {
    let rules = &fixture().config.credentials;
    let class = rules.classify(s);

    if api_key::checksum_ok(s, "ak_live") {
        check_key_shape(s, "ak_live");
        assert_eq!(
            class,
            Presented::Key(s),
            "a valid ak_live key not classified a key"
        );
    }
    if api_key::checksum_ok(s, "gsk") {
        check_key_shape(s, "gsk");
    }
    if let Some((prefix, _)) = s.rsplit_once('_') {
        if api_key::checksum_ok(s, prefix) {
            check_key_shape(s, prefix);
        }
    }

    if let Some(hash) = KeyHash::parse(s) {
        let text = hash.to_string();
        assert_eq!(KeyHash::parse(&text), Some(hash), "{text}");
    }

    match class {
        Presented::Key(value) => {
            assert_eq!(value, s);
            assert!(s.starts_with("ak_live_"), "classified a key: {s:?}");
        }
        Presented::Token(value) => {
            assert_eq!(value, s);
            assert!(
                s.starts_with("eyJ") && s.matches('.').count() == 2,
                "classified a token: {s:?}"
            );
        }
        Presented::Unrecognised => {}
        other => panic!("classify({s:?}) = {other:?}"),
    }

    if api_key::is_valid_prefix(s) {
        let minted = api_key::mint(s).unwrap_or_else(|e| panic!("mint({s:?}): {e}"));
        assert!(
            api_key::checksum_ok(&minted.secret, s),
            "minted key fails its checksum"
        );
        assert_eq!(minted.hash, KeyHash::of(&minted.secret));
    }
});
