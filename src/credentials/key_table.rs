//! The in-memory key table: BLAKE3 hash -> key entry.
//!
//! It is the only thing the request path consults to verify a key: one hash of the
//! presented key, one probe here. Reads take no lock (papaya is a lock-free map with
//! epoch-based reclamation), so keys can be added and revoked at run time while
//! requests are verified, without a restart and without readers waiting on writers.
//!
//! Writers (the credential endpoints and the store follower) are rare and go through
//! [`KeyTable::apply`], which serialises them and orders changes by the store's
//! `updated_at`: a stale copy of a key, read before it was revoked, can never bring
//! it back.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use http::HeaderValue;

use super::api_key::KeyHash;
use crate::scope::ScopeSet;
use crate::tier::TierId;

/// What the proxy knows about one key.
#[derive(Debug)]
pub struct KeyEntry {
    /// Public id, used in URLs and as the principal id; shared with the table's
    /// writer state (one allocation per key, not two).
    pub id: Arc<str>,
    /// The compiled scopes, wildcards expanded.
    pub scopes: ScopeSet,
    /// Trust tier.
    pub tier: TierId,
    /// `key:<id>`, ready for `X-Authmd-Principal`.
    pub principal_header: HeaderValue,
    /// Space-separated scopes, ready for `X-Authmd-Scopes`.
    pub scopes_header: HeaderValue,
    /// The entry stops working at this unix time.
    pub expires_at: Option<i64>,
    /// Declared in the config (not in the store): cannot be rotated or revoked
    /// through the API.
    pub is_static: bool,
    /// Unix seconds of the last request it authenticated (coarse; flushed to the
    /// store in batches).
    pub last_used: AtomicI64,
    /// Rate limits and quota of its own, replacing its tier's.
    pub limits: Option<Arc<crate::limits::LimitSet>>,
}

impl KeyEntry {
    /// True when the entry may authenticate now. Costs a clock read only for keys
    /// that expire.
    #[must_use]
    pub fn is_live(&self) -> bool {
        self.expires_at
            .is_none_or(|at| crate::store::unix_now() < at)
    }
}

/// One change to the table.
#[derive(Debug)]
pub enum Change {
    /// The key now has these secrets (current first, then one still in its rotation
    /// grace period) and this entry.
    Live {
        /// Store clock of the change.
        updated_at: i64,
        /// The secrets that authenticate as this key.
        hashes: Vec<(KeyHash, Arc<KeyEntry>)>,
    },
    /// The key no longer works (revoked, expired, deleted).
    Gone {
        /// Store clock of the change.
        updated_at: i64,
    },
}

/// What the writers know of one key id: the version of the last change applied and
/// the secrets it made valid (a current one, and one in its rotation grace period),
/// inline rather than in a vector of their own: a million keys keep a million.
#[derive(Debug)]
struct IdState {
    updated_at: i64,
    current: Option<KeyHash>,
    previous: Option<Box<KeyHash>>,
}

impl IdState {
    fn hashes(&self) -> impl Iterator<Item = &KeyHash> {
        self.current.iter().chain(self.previous.as_deref())
    }
}

/// Concurrent map from key hash to entry.
#[derive(Debug, Default)]
pub struct KeyTable {
    map: papaya::HashMap<KeyHash, Arc<KeyEntry>, PrefixHasher>,
    /// Id -> the entry of its current secret, for every key that works: what access
    /// tokens minted from a key check, so that revoking the key ends them too.
    /// Keyed by a seeded 64-bit hash of the id (8 bytes instead of a second copy of
    /// every id string); an entry counts only if its id is the one asked for.
    live: papaya::HashMap<u64, Arc<KeyEntry>, PrefixHasher>,
    /// The seed of those id hashes.
    id_hasher: foldhash::fast::RandomState,
    /// Per id: its hashes and the version of the last change applied.
    writers: tokio::sync::Mutex<HashMap<Arc<str>, IdState>>,
    /// Coarse unix seconds for last-used stamps, advanced by the store follower.
    clock: AtomicI64,
}

impl KeyTable {
    /// The entry for a hash, if the key is known.
    #[must_use]
    pub fn get(&self, hash: &KeyHash) -> Option<Arc<KeyEntry>> {
        self.map.pin().get(hash).cloned()
    }

    /// Adds a key declared in the config (at start, before any writer runs).
    pub fn insert_static(&self, hash: KeyHash, entry: Arc<KeyEntry>) {
        self.live
            .pin()
            .insert(self.id_key(&entry.id), entry.clone());
        self.map.pin().insert(hash, entry);
    }

    /// True when the key `id` exists, is not revoked and has not expired.
    #[must_use]
    pub fn is_live_id(&self, id: &str) -> bool {
        self.live
            .pin()
            .get(&self.id_key(id))
            .is_some_and(|entry| &*entry.id == id && entry.is_live())
    }

    fn id_key(&self, id: &str) -> u64 {
        self.id_hasher.hash_one(id)
    }

    /// Applies a change to the key `id`, unless a newer one was applied already.
    /// Returns true when the table changed.
    pub async fn apply(&self, id: &str, change: Change) -> bool {
        let mut writers = self.writers.lock().await;
        let updated_at = match &change {
            Change::Live { updated_at, .. } | Change::Gone { updated_at } => *updated_at,
        };
        if let Some(state) = writers.get(id) {
            // A change of the same age applies only if it removes a live key: ties go
            // to removal, so a revocation is never undone by a copy of equal age.
            let newer = updated_at > state.updated_at;
            let removes = updated_at == state.updated_at
                && matches!(change, Change::Gone { .. })
                && state.current.is_some();
            if !newer && !removes {
                return false;
            }
        }
        let map = self.map.pin();
        let live: &[(KeyHash, Arc<KeyEntry>)] = match &change {
            Change::Live { hashes, .. } => hashes,
            Change::Gone { .. } => &[],
        };
        let mut hashes = live.iter().map(|(h, _)| *h);
        let state = IdState {
            updated_at,
            current: hashes.next(),
            previous: hashes.next().map(Box::new),
        };
        if let Some(old) = writers.get(id) {
            for hash in old.hashes().filter(|h| !state.hashes().any(|n| n == *h)) {
                map.remove(hash);
            }
        }
        let name = match change {
            Change::Live { hashes, .. } => {
                let name = hashes.first().map(|(_, current)| {
                    self.live.pin().insert(self.id_key(id), current.clone());
                    current.id.clone()
                });
                for (hash, entry) in hashes {
                    map.insert(hash, entry);
                }
                name
            }
            Change::Gone { .. } => {
                self.live.pin().remove(&self.id_key(id));
                None
            }
        };
        match writers.get_mut(id) {
            Some(known) => *known = state,
            None => {
                writers.insert(name.unwrap_or_else(|| Arc::from(id)), state);
            }
        }
        true
    }

    /// Advances the coarse clock used for last-used stamps.
    pub fn tick(&self, now: i64) {
        self.clock.fetch_max(now, Ordering::Relaxed);
    }

    /// Stamps an entry as used now: one relaxed load on the request path, and a store
    /// at most once per second per key.
    pub fn touch(&self, entry: &KeyEntry) {
        let now = self.clock.load(Ordering::Relaxed);
        if entry.last_used.load(Ordering::Relaxed) < now {
            entry.last_used.store(now, Ordering::Relaxed);
        }
    }

    /// Ids of stored keys used at or after `since`, with their last use.
    #[must_use]
    pub fn used_since(&self, since: i64) -> Vec<(String, i64)> {
        // An id appears twice while a rotated-out secret is in its grace period.
        let mut latest: HashMap<&str, i64> = HashMap::new();
        let map = self.map.pin();
        for entry in map.values() {
            let at = entry.last_used.load(Ordering::Relaxed);
            if !entry.is_static && at >= since && at > 0 {
                let seen = latest.entry(&*entry.id).or_insert(at);
                *seen = (*seen).max(at);
            }
        }
        latest
            .into_iter()
            .map(|(id, at)| (id.to_owned(), at))
            .collect()
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
    /// Builds an entry of a key declared in the config; `scopes_header` is the
    /// space-separated scope names (see [`scopes_header`]), which entries with the
    /// same scopes may share.
    #[must_use]
    pub fn new(
        id: impl Into<Arc<str>>,
        scopes: ScopeSet,
        tier: TierId,
        scopes_header: HeaderValue,
    ) -> KeyEntry {
        let id = id.into();
        let principal_header = HeaderValue::from_str(&format!("key:{id}"))
            .unwrap_or_else(|_| HeaderValue::from_static("key"));
        KeyEntry {
            id,
            scopes,
            tier,
            principal_header,
            scopes_header,
            expires_at: None,
            is_static: true,
            last_used: AtomicI64::new(0),
            limits: None,
        }
    }
}

/// The `X-Authmd-Scopes` value of a scope set.
#[must_use]
pub fn scopes_header(registry: &crate::scope::ScopeRegistry, scopes: &ScopeSet) -> HeaderValue {
    HeaderValue::from_str(&registry.names(scopes)).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::ScopeRegistry;

    fn entry(id: &str) -> Arc<KeyEntry> {
        let registry = ScopeRegistry::default();
        let mut entry = KeyEntry::new(
            id,
            ScopeSet::EMPTY,
            TierId(1),
            scopes_header(&registry, &ScopeSet::EMPTY),
        );
        entry.is_static = false;
        Arc::new(entry)
    }

    fn live(updated_at: i64, secrets: &[&str]) -> Change {
        Change::Live {
            updated_at,
            hashes: secrets
                .iter()
                .map(|s| (KeyHash::of(s), entry("key_a")))
                .collect(),
        }
    }

    #[tokio::test]
    async fn a_stale_copy_never_brings_a_revoked_key_back() {
        let table = KeyTable::default();
        assert!(table.apply("key_a", live(10, &["one"])).await);
        assert!(table.get(&KeyHash::of("one")).is_some());
        assert!(table.apply("key_a", Change::Gone { updated_at: 20 }).await);
        assert!(table.get(&KeyHash::of("one")).is_none());
        // A resync that read the key before its revocation arrives late.
        assert!(!table.apply("key_a", live(10, &["one"])).await);
        // Even one of the same age: ties go to removal.
        assert!(!table.apply("key_a", live(20, &["one"])).await);
        assert!(table.get(&KeyHash::of("one")).is_none());
    }

    #[tokio::test]
    async fn a_rotation_replaces_the_secret_and_a_grace_keeps_the_old_one() {
        let table = KeyTable::default();
        table.apply("key_a", live(1, &["one"])).await;
        table.apply("key_a", live(2, &["two", "one"])).await;
        assert!(table.get(&KeyHash::of("one")).is_some());
        assert!(table.get(&KeyHash::of("two")).is_some());
        table.apply("key_a", live(3, &["two"])).await;
        assert!(table.get(&KeyHash::of("one")).is_none());
        assert_eq!(table.len(), 1);
        // Revocation at the same age as the live copy still removes it.
        assert!(table.apply("key_a", Change::Gone { updated_at: 3 }).await);
        assert!(table.is_empty());
    }

    #[tokio::test]
    async fn last_use_is_stamped_once_per_tick_and_collected_per_id() {
        let table = KeyTable::default();
        table.apply("key_a", live(1, &["one", "old"])).await;
        table.tick(100);
        let one = table.get(&KeyHash::of("one")).unwrap();
        table.touch(&one);
        assert_eq!(one.last_used.load(Ordering::Relaxed), 100);
        table.tick(90);
        table.touch(&one);
        assert_eq!(
            one.last_used.load(Ordering::Relaxed),
            100,
            "the clock never runs back"
        );
        let old = table.get(&KeyHash::of("old")).unwrap();
        table.tick(105);
        table.touch(&old);
        assert_eq!(table.used_since(100), vec![("key_a".to_owned(), 105)]);
        assert!(table.used_since(106).is_empty());
    }
}
