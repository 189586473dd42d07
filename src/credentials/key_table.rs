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
//!
//! Memory is per key what a million of them make it matter: an entry holds its id
//! inside its `X-Authmd-Principal` value and shares everything its scopes and tier
//! decide (a [`KeyProfile`]) with the other keys of that kind; what the writers need
//! of a plain live key (its version and secret) is read off its entry, so only
//! revoked keys and keys in a rotation grace period keep state of their own.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use http::HeaderValue;

use super::api_key::KeyHash;
use crate::limits::LimitSet;
use crate::scope::ScopeSet;
use crate::tier::TierId;

/// What keys of one kind have in common: one allocation shared by every key with
/// the same scopes and tier (a key with limits of its own, or declared in the
/// config, has its own).
#[derive(Debug)]
pub struct KeyProfile {
    /// The compiled scopes, wildcards expanded.
    pub scopes: ScopeSet,
    /// Trust tier.
    pub tier: TierId,
    /// Space-separated scopes, ready for `X-Authmd-Scopes`.
    pub scopes_header: HeaderValue,
    /// Rate limits and quota of its own, replacing its tier's.
    pub limits: Option<Arc<LimitSet>>,
    /// Declared in the config (not in the store): cannot be rotated or revoked
    /// through the API.
    pub is_static: bool,
}

/// What the proxy knows about one secret of one key.
#[derive(Debug)]
pub struct KeyEntry {
    /// `key:<id>`, ready for `X-Authmd-Principal`; the id is read from it.
    pub principal_header: HeaderValue,
    /// Scopes, tier and limits.
    pub profile: Arc<KeyProfile>,
    /// The secret's hash, under which the entry is in the table.
    pub hash: KeyHash,
    /// Store clock of the record it was compiled from (0 for config keys).
    pub updated_at: i64,
    /// Unix time at which the entry stops working (`i64::MAX`: never).
    expires_at: i64,
    /// Unix seconds of the last request it authenticated (coarse; flushed to the
    /// store in batches).
    pub last_used: AtomicI64,
    /// `X-Authmd-Operator`: who claimed the key's registration by signing in.
    pub operator: Option<HeaderValue>,
}

/// What precedes the id in `X-Authmd-Principal`.
const PRINCIPAL_PREFIX: &str = "key:";

impl KeyEntry {
    /// An entry of the key `id` for the secret hashing to `hash`; `None` when the id
    /// cannot appear in a header (config ids are checked, stored ones generated, so
    /// only a tampered store has such an id).
    #[must_use]
    pub fn new(id: &str, hash: KeyHash, profile: Arc<KeyProfile>) -> Option<KeyEntry> {
        let principal = format!("{PRINCIPAL_PREFIX}{id}");
        let principal_header =
            HeaderValue::from_maybe_shared(bytes::Bytes::from(principal)).ok()?;
        Some(KeyEntry {
            principal_header,
            profile,
            hash,
            updated_at: 0,
            expires_at: i64::MAX,
            last_used: AtomicI64::new(0),
            operator: None,
        })
    }

    /// The entry, stopping to work at unix time `at` (`None`: never).
    #[must_use]
    pub fn expiring(mut self, at: Option<i64>) -> KeyEntry {
        self.expires_at = at.unwrap_or(i64::MAX);
        self
    }

    /// The key's public id.
    #[must_use]
    pub fn id(&self) -> &str {
        let principal = self.principal_header.as_bytes();
        std::str::from_utf8(principal.get(PRINCIPAL_PREFIX.len()..).unwrap_or_default())
            .unwrap_or_default()
    }

    /// The unix time at which the entry stops working, if it does.
    #[must_use]
    pub fn expires_at(&self) -> Option<i64> {
        (self.expires_at != i64::MAX).then_some(self.expires_at)
    }

    /// True when the entry may authenticate now. Costs a clock read only for keys
    /// that expire.
    #[must_use]
    pub fn is_live(&self) -> bool {
        self.expires_at == i64::MAX || crate::clock::unix_now() < self.expires_at
    }

    /// The compiled scopes.
    #[must_use]
    pub fn scopes(&self) -> ScopeSet {
        self.profile.scopes
    }

    /// The trust tier.
    #[must_use]
    pub fn tier(&self) -> TierId {
        self.profile.tier
    }

    /// True for a key declared in the config.
    #[must_use]
    pub fn is_static(&self) -> bool {
        self.profile.is_static
    }
}

/// One change to the table.
#[derive(Debug)]
pub enum Change {
    /// The key now works with these secrets: its current one and, in its rotation
    /// grace period, the one it replaced.
    Live {
        /// The current secret's entry (its `updated_at` is the change's version).
        current: Arc<KeyEntry>,
        /// The rotated-out secret's entry, while it still works.
        previous: Option<Arc<KeyEntry>>,
    },
    /// The key no longer works (revoked, expired, deleted).
    Gone {
        /// Store clock of the change.
        updated_at: i64,
    },
}

impl Change {
    fn updated_at(&self) -> i64 {
        match self {
            Change::Live { current, .. } => current.updated_at,
            Change::Gone { updated_at } => *updated_at,
        }
    }
}

/// What the writers know of one key id: the version of the last change applied and
/// the secrets it made valid. Kept only for ids a live entry does not describe
/// (revoked, or with a second secret); a plain live key's is read off its entry.
#[derive(Debug, Clone, Copy)]
struct IdState {
    updated_at: i64,
    current: Option<KeyHash>,
    previous: Option<KeyHash>,
}

impl IdState {
    fn hashes(&self) -> impl Iterator<Item = &KeyHash> {
        self.current.iter().chain(&self.previous)
    }
}

/// A live entry as a member of the set of live keys, found by its id.
#[derive(Debug, Clone)]
struct ById(Arc<KeyEntry>);

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        self.0.id()
    }
}

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id().hash(state);
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &ById) -> bool {
        self.0.id() == other.0.id()
    }
}

impl Eq for ById {}

/// Concurrent map from key hash to entry.
#[derive(Debug, Default)]
pub struct KeyTable {
    map: papaya::HashMap<KeyHash, Arc<KeyEntry>, PrefixHasher>,
    /// The entry of the current secret of every key that works, found by id: what
    /// access tokens minted from a key check, so that revoking the key ends them
    /// too, and what the writers read a plain live key's state from.
    live: papaya::HashSet<ById, foldhash::fast::RandomState>,
    /// Writer state of the ids `live` does not describe (see [`IdState`]); the lock
    /// serialises the writers.
    exceptions: tokio::sync::Mutex<HashMap<Box<str>, IdState>>,
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
    pub fn insert_static(&self, entry: Arc<KeyEntry>) {
        self.live.pin().insert(ById(entry.clone()));
        self.map.pin().insert(entry.hash, entry);
    }

    /// True when the key `id` exists, is not revoked and has not expired.
    #[must_use]
    pub fn is_live_id(&self, id: &str) -> bool {
        self.live
            .pin()
            .get(id)
            .is_some_and(|ById(entry)| entry.is_live())
    }

    /// Applies a change to the key `id`, unless a newer one was applied already.
    /// Returns true when the table changed.
    pub async fn apply(&self, id: &str, change: Change) -> bool {
        let mut exceptions = self.exceptions.lock().await;
        let live = self.live.pin();
        let known = exceptions.get(id).copied().or_else(|| {
            live.get(id)
                .filter(|ById(entry)| !entry.is_static())
                .map(|ById(entry)| IdState {
                    updated_at: entry.updated_at,
                    current: Some(entry.hash),
                    previous: None,
                })
        });
        let updated_at = change.updated_at();
        if let Some(known) = &known {
            // A change of the same age applies only if it removes a live key: ties go
            // to removal, so a revocation is never undone by a copy of equal age.
            let newer = updated_at > known.updated_at;
            let removes = updated_at == known.updated_at
                && matches!(change, Change::Gone { .. })
                && known.current.is_some();
            if !newer && !removes {
                return false;
            }
        }
        let state = match &change {
            Change::Live { current, previous } => IdState {
                updated_at,
                current: Some(current.hash),
                previous: previous.as_ref().map(|p| p.hash),
            },
            Change::Gone { .. } => IdState {
                updated_at,
                current: None,
                previous: None,
            },
        };
        let map = self.map.pin();
        if let Some(known) = &known {
            for hash in known.hashes().filter(|h| !state.hashes().any(|n| n == *h)) {
                map.remove(hash);
            }
        }
        match change {
            Change::Live { current, previous } => {
                for entry in previous.iter().chain([&current]) {
                    map.insert(entry.hash, entry.clone());
                }
                live.insert(ById(current));
            }
            Change::Gone { .. } => {
                live.remove(id);
            }
        }
        if state.current.is_some() && state.previous.is_none() {
            exceptions.remove(id);
        } else {
            exceptions.insert(id.into(), state);
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

    /// The last use of the live key `id` this process has seen, not yet
    /// necessarily in the store (uses are flushed in batches).
    #[must_use]
    pub fn last_used(&self, id: &str) -> Option<i64> {
        self.live
            .pin()
            .get(id)
            .map(|ById(entry)| entry.last_used.load(Ordering::Relaxed))
            .filter(|at| *at > 0)
    }

    /// Ids of stored keys used at or after `since`, with their last use.
    #[must_use]
    pub fn used_since(&self, since: i64) -> Vec<(String, i64)> {
        // An id appears twice while a rotated-out secret is in its grace period.
        let mut latest: HashMap<&str, i64> = HashMap::new();
        let map = self.map.pin();
        for entry in map.values() {
            let at = entry.last_used.load(Ordering::Relaxed);
            if !entry.is_static() && at >= since && at > 0 {
                let seen = latest.entry(entry.id()).or_insert(at);
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

/// The `X-Authmd-Scopes` value of a scope set.
#[must_use]
pub fn scopes_header(registry: &crate::scope::ScopeRegistry, scopes: &ScopeSet) -> HeaderValue {
    registry.header_value(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::ScopeRegistry;

    fn entry(id: &str, secret: &str, updated_at: i64) -> Arc<KeyEntry> {
        let registry = ScopeRegistry::default();
        let profile = Arc::new(KeyProfile {
            scopes: ScopeSet::EMPTY,
            tier: TierId(1),
            scopes_header: scopes_header(&registry, &ScopeSet::EMPTY),
            limits: None,
            is_static: false,
        });
        let mut entry = KeyEntry::new(id, KeyHash::of(secret), profile).unwrap();
        entry.updated_at = updated_at;
        Arc::new(entry)
    }

    fn live(updated_at: i64, secrets: &[&str]) -> Change {
        Change::Live {
            current: entry("key_a", secrets[0], updated_at),
            previous: secrets.get(1).map(|s| entry("key_a", s, updated_at)),
        }
    }

    #[test]
    fn the_id_is_read_back_from_the_principal_header() {
        let entry = entry("key_7Yq", "s", 1);
        assert_eq!(entry.id(), "key_7Yq");
        assert_eq!(entry.principal_header, "key:key_7Yq");
        assert_eq!(entry.expires_at(), None);
        let profile = entry.profile.clone();
        assert!(
            KeyEntry::new("bad\nid", KeyHash::of("s"), profile).is_none(),
            "an id that cannot be a header value makes no entry"
        );
    }

    #[tokio::test]
    async fn a_plain_live_key_keeps_no_writer_state_yet_refuses_stale_copies() {
        let table = KeyTable::default();
        assert!(table.apply("key_a", live(5, &["new"])).await);
        assert!(table.exceptions.lock().await.is_empty());
        assert!(!table.apply("key_a", live(4, &["old"])).await);
        assert!(!table.apply("key_a", live(5, &["old"])).await);
        assert!(table.get(&KeyHash::of("old")).is_none());
        assert!(table.is_live_id("key_a"));
        assert!(!table.is_live_id("key_b"));
        assert!(table.apply("key_a", Change::Gone { updated_at: 6 }).await);
        assert!(!table.is_live_id("key_a"));
        assert!(table.is_empty());
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
