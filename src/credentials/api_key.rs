//! API key format: minting, the checksum, and hashing.
//!
//! A key reads `<prefix>_<body><check>`: `body` is 24 bytes (192 bits) from the OS
//! random source in base58, and `check` is six base58 digits of the CRC-32 of
//! everything before it (as GitHub's token format does; CRC-32 costs a few
//! nanoseconds, so checking it before the lookup is almost free). The checksum lets the proxy refuse a
//! mistyped or made-up key without a table probe, and lets secret scanners recognise
//! leaked keys. Only the BLAKE3 hash of the whole key is ever stored.

use std::fmt;

use zeroize::Zeroizing;

/// Bytes of randomness in a key.
const RANDOM_BYTES: usize = 24;
/// Base58 digits of the checksum.
const CHECK_LEN: usize = 6;
/// Base58 of 24 bytes is 31 to 33 digits; allow a little slack either side.
const BODY_LEN: std::ops::RangeInclusive<usize> = 28..=34;
const BASE58: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// `IS_BASE58[b]`: `b` is a base58 digit (a table, so checking a key's alphabet is
/// one load per byte).
const IS_BASE58: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < BASE58.len() {
        table[BASE58[i] as usize] = true;
        i += 1;
    }
    table
};

/// The BLAKE3 hash of a key: what the table and the store hold.
///
/// Compared in constant time (as `blake3::Hash` is): a table probe that matched
/// more leading bytes of a stored hash takes no longer than one that matched fewer.
/// Such a leak would reveal only digests, which BLAKE3 does not let anyone invert,
/// but costs nothing to close.
#[derive(Clone, Copy, Default, Eq, PartialOrd, Ord)]
pub struct KeyHash(pub [u8; 32]);

impl PartialEq for KeyHash {
    fn eq(&self, other: &KeyHash) -> bool {
        blake3::Hash::from_bytes(self.0) == blake3::Hash::from_bytes(other.0)
    }
}

impl std::hash::Hash for KeyHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.0);
    }
}

impl KeyHash {
    /// Hashes a presented key.
    #[must_use]
    pub fn of(key: &str) -> KeyHash {
        KeyHash(*blake3::hash(key.as_bytes()).as_bytes())
    }

    /// Parses `blake3:<64 hex>` or bare hex.
    pub fn parse(text: &str) -> Option<KeyHash> {
        let hex = text.strip_prefix("blake3:").unwrap_or(text);
        blake3::Hash::from_hex(hex)
            .ok()
            .map(|h| KeyHash(*h.as_bytes()))
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blake3:{}", blake3::Hash::from_bytes(self.0).to_hex())
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A newly minted key. Its `Debug` never shows the secret, and its memory is zeroed
/// when it is dropped.
pub struct NewKey {
    /// The full secret, to be shown to its owner exactly once.
    pub secret: Zeroizing<String>,
    /// Its hash.
    pub hash: KeyHash,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// Why a key could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The prefix is not `[a-z0-9]+(_[a-z0-9]+)*`.
    #[error("key prefix `{0}` must be lowercase letters and digits, words joined by `_`")]
    BadPrefix(String),
    /// The OS random source failed.
    #[error("the operating system's random source failed: {0}")]
    Random(getrandom::Error),
}

/// A public id such as `key_...` or `reg_...` (see [`crate::random::public_id`]).
pub fn public_id(prefix: &str) -> Result<String, MintError> {
    crate::random::public_id(prefix).map_err(MintError::Random)
}

/// Checks a prefix: lowercase ASCII words joined by `_` (`ak_live`, `gsk`).
#[must_use]
pub fn is_valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 32
        && prefix.split('_').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// Mints a key with the given prefix (with or without its trailing `_`).
pub fn mint(prefix: &str) -> Result<NewKey, MintError> {
    let prefix = prefix.strip_suffix('_').unwrap_or(prefix);
    if !is_valid_prefix(prefix) {
        return Err(MintError::BadPrefix(prefix.to_owned()));
    }
    // Every buffer that holds the secret, or the randomness it encodes, is zeroed
    // when dropped; the secret's is sized up front so that no push reallocates it
    // (leaving a copy behind).
    let mut random = Zeroizing::new([0u8; RANDOM_BYTES]);
    getrandom::fill(random.as_mut()).map_err(MintError::Random)?;
    let encoded = Zeroizing::new(bs58::encode(random.as_ref()).into_string());
    let mut secret = Zeroizing::new(String::with_capacity(
        prefix.len() + 1 + encoded.len() + CHECK_LEN,
    ));
    secret.push_str(prefix);
    secret.push('_');
    secret.push_str(&encoded);
    let check = checksum(&secret);
    secret.push_str(std::str::from_utf8(&check).unwrap_or_default());
    let hash = KeyHash::of(&secret);
    Ok(NewKey { secret, hash })
}

/// The six base58 check digits of `text`.
fn checksum(text: &str) -> [u8; CHECK_LEN] {
    let mut value = crc32fast::hash(text.as_bytes());
    let mut out = [BASE58[0]; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE58[(value % 58) as usize];
        value /= 58;
    }
    out
}

/// True when `key` is `<prefix>_<body><check>` with a correct checksum.
#[must_use]
pub fn checksum_ok(key: &str, prefix: &str) -> bool {
    let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('_')) else {
        return false;
    };
    let Some(body_len) = rest.len().checked_sub(CHECK_LEN) else {
        return false;
    };
    if !BODY_LEN.contains(&body_len) || !rest.bytes().all(|b| IS_BASE58[usize::from(b)]) {
        return false;
    }
    let (signed, check) = key.split_at(key.len() - CHECK_LEN);
    checksum(signed) == check.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_secret_is_zeroed_on_drop_and_was_never_reallocated() {
        fn zeroed_on_drop<T: zeroize::ZeroizeOnDrop>(_: &T) {}
        for prefix in ["ak_live", "gsk", "a"] {
            let key = mint(prefix).unwrap();
            zeroed_on_drop(&key.secret);
            // Sized up front: a push that outgrew the buffer would have left a
            // copy of the secret's beginning in freed memory.
            assert_eq!(key.secret.capacity(), key.secret.len(), "{prefix}");
        }
    }

    #[test]
    fn key_hashes_are_equal_only_when_every_byte_is() {
        let a = KeyHash::of("ak_live_a");
        assert_eq!(a, KeyHash(a.0));
        for i in [0, 15, 31] {
            let mut b = a;
            b.0[i] ^= 1;
            assert_ne!(a, b, "byte {i}");
        }
    }

    #[test]
    fn minted_keys_carry_a_valid_checksum_and_enough_entropy() {
        let a = mint("ak_live").unwrap();
        let b = mint("ak_live_").unwrap();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with("ak_live_"));
        assert!(checksum_ok(&a.secret, "ak_live"));
        assert!(!checksum_ok(&a.secret, "gsk"));
        assert_eq!(a.hash, KeyHash::of(&a.secret));
        // 192 bits in base58 is at least 31 digits.
        assert!(a.secret.len() >= "ak_live_".len() + 31 + CHECK_LEN);
    }

    #[test]
    fn any_single_change_breaks_the_checksum() {
        let key = mint("gsk").unwrap().secret;
        for i in "gsk_".len()..key.len() {
            let mut bytes = key.as_bytes().to_vec();
            bytes[i] = if bytes[i] == b'2' { b'3' } else { b'2' };
            let changed = String::from_utf8(bytes).unwrap();
            assert!(!checksum_ok(&changed, "gsk"), "{i}");
        }
        assert!(!checksum_ok(&key[..key.len() - 1], "gsk"));
        assert!(!checksum_ok("gsk_", "gsk"));
        assert!(!checksum_ok(
            "gsk_0OIl0OIl0OIl0OIl0OIl0OIl0OIl0OIl0OIl",
            "gsk"
        ));
    }

    #[test]
    fn prefixes_are_validated() {
        assert!(mint("Bad Prefix").is_err());
        assert!(mint("").is_err());
        assert!(mint("a__b").is_err());
        assert!(is_valid_prefix("jp_live"));
    }

    #[test]
    fn hashes_round_trip_through_text() {
        let h = KeyHash::of("x");
        assert_eq!(KeyHash::parse(&h.to_string()), Some(h));
        assert_eq!(KeyHash::parse(&blake3::hash(b"x").to_hex()), Some(h));
        assert_eq!(KeyHash::parse("blake3:zz"), None);
    }
}
