//! The in-memory key table: BLAKE3 hash -> key entry.
//!
//! It is the only thing the request path consults to verify a key: one hash of the
//! presented key, one probe here. Reads take no lock (papaya is a lock-free map with
//! epoch-based reclamation), so keys can be added and revoked at run time while
//! requests are verified, without a restart and without readers waiting on writers.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use http::HeaderValue;

use super::api_key::KeyHash;
use crate::scope::ScopeSet;
use crate::tier::TierId;

/// What the proxy knows about one key.
#[derive(Debug)]
pub struct KeyEntry {
    /// Public id, used in URLs and as the principal id.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Scope names as recorded (kept so the set can be recompiled for a new config).
    pub scope_names: Vec<String>,
    /// The compiled scopes, wildcards expanded.
    pub scopes: ScopeSet,
    /// Trust tier.
    pub tier: TierId,
    /// `key:<id>`, ready for `X-Authmd-Principal`.
    pub principal_header: HeaderValue,
    /// Space-separated scopes, ready for `X-Authmd-Scopes`.
    pub scopes_header: HeaderValue,
}

/// Concurrent map from key hash to entry.
#[derive(Debug, Default)]
pub struct KeyTable {
    map: papaya::HashMap<KeyHash, Arc<KeyEntry>, PrefixHasher>,
}

impl KeyTable {
    /// The entry for a hash, if the key is known.
    #[must_use]
    pub fn get(&self, hash: &KeyHash) -> Option<Arc<KeyEntry>> {
        self.map.pin().get(hash).cloned()
    }

    /// Adds or replaces a key.
    pub fn insert(&self, hash: KeyHash, entry: Arc<KeyEntry>) {
        self.map.pin().insert(hash, entry);
    }

    /// Removes a key; true when it was present.
    pub fn remove(&self, hash: &KeyHash) -> bool {
        self.map.pin().remove(hash).is_some()
    }

    /// Number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no key is loaded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Key hashes are BLAKE3 outputs, already uniform: the map's hash is their first
/// eight bytes, which saves a SipHash round per lookup. Entries are never chosen by
/// an attacker (their secrets come from the OS random source), so no probe sequence
/// can be made long.
#[derive(Debug, Clone, Copy, Default)]
pub struct PrefixHasher;

impl BuildHasher for PrefixHasher {
    type Hasher = PrefixState;
    fn build_hasher(&self) -> PrefixState {
        PrefixState(0)
    }
}

/// Hasher state of [`PrefixHasher`].
#[derive(Debug)]
pub struct PrefixState(u64);

impl Hasher for PrefixState {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `KeyHash` hashes as one 32-byte array write (plus nothing else).
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(word);
    }
}

impl KeyEntry {
    /// Builds an entry and its ready-made header values.
    #[must_use]
    pub fn new(
        id: String,
        name: String,
        scope_names: Vec<String>,
        scopes: ScopeSet,
        tier: TierId,
        registry: &crate::scope::ScopeRegistry,
    ) -> KeyEntry {
        let principal_header = HeaderValue::from_str(&format!("key:{id}"))
            .unwrap_or_else(|_| HeaderValue::from_static("key"));
        let scopes_header = HeaderValue::from_str(&registry.names(&scopes))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        KeyEntry {
            id,
            name,
            scope_names,
            scopes,
            tier,
            principal_header,
            scopes_header,
        }
    }
}
