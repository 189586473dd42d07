//! The durable credential store: key records, agent registrations, used
//! assertion ids and revoked access-token ids, and interactive OAuth's records
//! (registered clients, authorization codes, refresh-token families, consents: see
//! the `grants` module), behind one interface with two implementations.
//!
//! - [`sqlite::SqliteStore`], the embedded default: one file in the data directory,
//!   WAL, `synchronous=FULL`, so a write returns only once it is on disk; a commit
//!   by another process (the operator's CLI) is noticed within 250 ms through
//!   `PRAGMA data_version`;
//! - [`postgres::PostgresStore`], for several replicas: every write also sends a
//!   `NOTIFY`, so each replica's in-memory key table follows within moments.
//!
//! The store is never on the request path. The in-memory
//! [`KeyTable`](crate::credentials::KeyTable) is; the store is written through on
//! every change (and the change is acknowledged only after the store has it), read
//! in full at start-up, and followed afterwards (see [`sync`]).
//!
//! Only BLAKE3 hashes of secrets are stored: key hashes, claim-token hashes, and the
//! hashes of codes, refresh tokens and client secrets.
//! Times are unix seconds, passed in by the caller so that behaviour is testable;
//! `updated_at` (milliseconds) is the store's own clock and only drives resync.
//!
//! The same conformance suites (`tests/it/store_conformance.rs`, and
//! `tests/it/store_grants.rs` for OAuth's records) run against both implementations.

pub mod postgres;
pub mod quotas;
mod rows;
pub mod sqlite;
pub mod sync;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use crate::credentials::KeyHash;
use crate::metrics::{Metrics, StoreMeter};

/// One API key as stored. A new key comes from [`KeyRecord::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Public id (`key_...`), used in URLs and as the principal id.
    pub id: String,
    /// BLAKE3 hash of the current secret.
    pub hash: KeyHash,
    /// The key's prefix (`ak_live`), so an operator can tell keys apart.
    pub prefix: String,
    /// Human-readable name.
    pub name: String,
    /// The account that owns the key: every key it creates belongs to it too, and only
    /// keys of the same owner may rotate, revoke or list it.
    pub owner: String,
    /// Granted scope names.
    pub scopes: Vec<String>,
    /// Trust tier name.
    pub tier: String,
    /// Creation time.
    pub created_at: i64,
    /// After this time the key no longer works.
    pub expires_at: Option<i64>,
    /// When it was revoked; a revoked key never works again.
    pub revoked_at: Option<i64>,
    /// Last time it authenticated a request (recorded in batches, not per request).
    pub last_used_at: Option<i64>,
    /// The secret before the last rotation, accepted until `previous_expires_at`.
    pub previous_hash: Option<KeyHash>,
    /// End of the rotation grace period.
    pub previous_expires_at: Option<i64>,
    /// The registration that created it, if any.
    pub registration_id: Option<String>,
    /// Store clock (unix milliseconds) of the last change; set by the store.
    pub updated_at: i64,
    /// Limits of its own, replacing its tier's: JSON
    /// `{"rate_limits": ["10/s", "300/min"], "quota": "5000/month"}` (either member
    /// may be left out to keep the tier's).
    pub limits: Option<String>,
    /// Who claimed it by signing in, as `X-Authmd-Operator` names them
    /// (`<provider>:<handle>`); `None` when unclaimed or claimed otherwise.
    pub operator: Option<String>,
}

impl KeyRecord {
    /// A new key: what it is and who has it, created at `created_at`. It does not
    /// expire, was never used or revoked, has no previous secret and no registration,
    /// and keeps its tier's limits; `updated_at` is the store's to set.
    #[expect(
        clippy::too_many_arguments,
        reason = "each is something only the caller knows about a new key"
    )]
    #[must_use]
    pub fn new(
        id: String,
        hash: KeyHash,
        prefix: String,
        name: String,
        owner: String,
        scopes: Vec<String>,
        tier: String,
        created_at: i64,
    ) -> KeyRecord {
        KeyRecord {
            id,
            hash,
            prefix,
            name,
            owner,
            scopes,
            tier,
            created_at,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            previous_hash: None,
            previous_expires_at: None,
            registration_id: None,
            updated_at: 0,
            limits: None,
            operator: None,
        }
    }

    /// True when the key can authenticate at `now`.
    #[must_use]
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }
}

/// How an agent registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationKind {
    /// No identity: the key has the pre-claim tier until claimed.
    Anonymous,
    /// With a verified identity assertion: claimed from the start.
    IdentityAssertion,
}

impl RegistrationKind {
    /// The stored and wire name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RegistrationKind::Anonymous => "anonymous",
            RegistrationKind::IdentityAssertion => "identity_assertion",
        }
    }

    /// Parses a stored name.
    #[must_use]
    pub fn parse(text: &str) -> Option<RegistrationKind> {
        match text {
            "anonymous" => Some(RegistrationKind::Anonymous),
            "identity_assertion" => Some(RegistrationKind::IdentityAssertion),
            _ => None,
        }
    }
}

/// One agent registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationRecord {
    /// Public id (`reg_...`).
    pub id: String,
    /// How the agent registered.
    pub kind: RegistrationKind,
    /// The name the agent gave.
    pub client_name: Option<String>,
    /// The key issued to it.
    pub key_id: String,
    /// BLAKE3 hash of the one-time claim token (anonymous registrations that were
    /// offered a claim).
    pub claim_hash: Option<[u8; 32]>,
    /// The registration can be claimed (and its claim token works) until this time.
    pub claim_expires_at: Option<i64>,
    /// When it was claimed.
    pub claimed_at: Option<i64>,
    /// The verified identity it is bound to: `<issuer> <subject>`.
    pub subject: Option<String>,
    /// Creation time.
    pub created_at: i64,
    /// The person who claimed it by signing in.
    pub operator: Option<Operator>,
    /// The e-mail address the agent gave as its contact at registration (for the
    /// person who claims it), if any.
    pub contact_email: Option<String>,
    /// The user name the agent gave as its contact at registration, if any.
    pub contact_username: Option<String>,
}

/// A person who claimed a registration by signing in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// The sign-in provider's id (`github`).
    pub provider: String,
    /// Their stable id there (the OIDC `sub`, the GitHub numeric id).
    pub subject: String,
    /// What people call them: a login, a name or an email (`octocat`).
    pub handle: String,
}

impl Operator {
    /// `<provider>:<handle>`, the value of `X-Authmd-Operator`.
    #[must_use]
    pub fn header(&self) -> String {
        format!("{}:{}", self.provider, self.handle)
    }
}

/// A registration a person claimed by signing in, with its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operated {
    /// The registration.
    pub registration: RegistrationRecord,
    /// Every key of its owner (the key issued at registration and those it
    /// created), revoked ones included, oldest first.
    pub keys: Vec<KeyRecord>,
}

/// Groups `keys` under the registrations whose issued key shares their owner.
fn operated(registrations: Vec<RegistrationRecord>, keys: &[KeyRecord]) -> Vec<Operated> {
    registrations
        .into_iter()
        .map(|registration| {
            let owner = keys
                .iter()
                .find(|k| k.id == registration.key_id)
                .map(|k| k.owner.as_str());
            let keys = keys
                .iter()
                .filter(|k| Some(k.owner.as_str()) == owner)
                .cloned()
                .collect();
            Operated { registration, keys }
        })
        .collect()
}

/// The outcome of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Claimed: the key as it is now (new tier and scopes).
    Claimed(Box<KeyRecord>),
    /// No such registration (or no such claim token).
    NotFound,
    /// The claim token has expired.
    Expired,
    /// It was claimed before.
    AlreadyClaimed,
    /// Its key was revoked; there is nothing left to claim.
    KeyRevoked,
}

/// What a claim changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim<'a> {
    /// The registration.
    pub registration_id: &'a str,
    /// The verified identity, `<issuer> <subject>`.
    pub subject: &'a str,
    /// The key's tier after the claim.
    pub tier: &'a str,
    /// The key's scopes after the claim.
    pub scopes: &'a [String],
    /// The claim time.
    pub now: i64,
    /// The person who claimed it by signing in, if one did.
    pub operator: Option<&'a Operator>,
    /// The key's secret is issued with the claim (`issue_credential: at_claim`):
    /// the hash of the new secret, stored with the claim or not at all.
    pub new_hash: Option<KeyHash>,
}

/// What a rotation changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation<'a> {
    /// The key.
    pub id: &'a str,
    /// Hash of the new secret.
    pub new_hash: KeyHash,
    /// Keep the old secret working until then (`None`: it stops at once).
    pub grace_until: Option<i64>,
    /// The rotation time.
    pub now: i64,
}

/// Why a store operation failed. Messages never contain a secret: the store only
/// ever sees hashes, and connection strings are never formatted into errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or failed; nothing was written.
    #[error("the credential store is unavailable: {0}")]
    Unavailable(String),
    /// A record with this id or secret hash exists already.
    #[error("a record with this id or hash already exists")]
    Duplicate,
}

/// Where the store lives (from `store:` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    /// No store: only the config's static keys; the lifecycle endpoints are off.
    None,
    /// SQLite file.
    Sqlite {
        /// The database file (created with its directory on first start).
        path: PathBuf,
        /// Safety-net resync interval, beside the watch of the file's data version
        /// (which picks up changes written by another process, such as the CLI).
        resync: Duration,
    },
    /// PostgreSQL.
    Postgres {
        /// Connection string (a secret: never logged).
        url: String,
        /// Schema holding the tables (created if missing).
        schema: String,
        /// Safety-net resync interval, beside LISTEN/NOTIFY.
        resync: Duration,
        /// TLS to the server (`url` has no `sslmode` or `sslrootcert` of its own:
        /// they are here).
        tls: postgres::PostgresTls,
    },
}

impl StoreSettings {
    /// True when several instances of the proxy may share this store (PostgreSQL):
    /// they then share keys and quotas, but each keeps its own rate windows.
    #[must_use]
    pub fn is_shared(&self) -> bool {
        match self {
            StoreSettings::Postgres { .. } => true,
            StoreSettings::None | StoreSettings::Sqlite { .. } => false,
        }
    }
}

/// A change another writer made, as announced by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The key with this id changed.
    Key(String),
    /// An access token was revoked.
    TokenRevoked,
    /// Announcements may have been missed (e.g. a reconnect), or the store cannot
    /// say what changed (another process committed to the SQLite file): resync.
    Resync,
}

/// An open store.
#[derive(Debug, Clone)]
pub enum Store {
    /// SQLite.
    Sqlite(sqlite::SqliteStore),
    /// PostgreSQL.
    Postgres(postgres::PostgresStore),
}

/// Where a store's calls are counted: the [`StoreMeter`] of the proxy that observes
/// it, shared by every clone of the store (the follower's, the lifecycle
/// endpoints'). Until a proxy observes the store, calls are not counted.
#[derive(Debug, Clone, Default)]
struct MeterSlot(Arc<ArcSwapOption<StoreMeter>>);

impl MeterSlot {
    fn record(&self, operation: &str, write: Option<Duration>, ok: bool) {
        if let Some(meter) = &*self.0.load() {
            meter.record(operation, write, ok);
        }
    }
}

macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        $self.observed(stringify!($method), None, match $self {
            Store::Sqlite(store) => store.$method($($arg),*).await,
            Store::Postgres(store) => store.$method($($arg),*).await,
        })
    };
}

/// [`dispatch!`] for a write, timed.
macro_rules! write {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {{
        let started = tokio::time::Instant::now();
        $self.observed(stringify!($method), Some(started), match $self {
            Store::Sqlite(store) => store.$method($($arg),*).await,
            Store::Postgres(store) => store.$method($($arg),*).await,
        })
    }};
}

// After the macros, which its `Store` methods use.
mod grants;
pub use grants::{
    CLIENT_TOUCH_SECS, ClientRecord, CodeRecord, CodeUse, GRANT_KEEP_SECS, GrantSweep,
    RefreshRecord, RefreshUse,
};
mod user_codes;
pub use user_codes::{PendingUserCode, USER_CODE_TRIES, UserCodeCheck};

impl Store {
    /// Opens the configured store and runs its migrations; `None` when the config
    /// asks for no store.
    pub async fn open(settings: &StoreSettings) -> Result<Option<Store>, StoreError> {
        Ok(match settings {
            StoreSettings::None => None,
            StoreSettings::Sqlite { path, .. } => {
                Some(Store::Sqlite(sqlite::SqliteStore::open(path).await?))
            }
            StoreSettings::Postgres {
                url, schema, tls, ..
            } => Some(Store::Postgres(postgres::PostgresStore::with_tls(
                url, schema, tls,
            )?)),
        })
    }

    /// Counts this store's calls, and every clone's, in `metrics`: the registry of
    /// the proxy that serves from it.
    pub fn observe(&self, metrics: &Metrics) {
        self.meter().0.store(Some(Arc::new(metrics.store_meter())));
    }

    fn meter(&self) -> &MeterSlot {
        match self {
            Store::Sqlite(store) => &store.meter,
            Store::Postgres(store) => &store.meter,
        }
    }

    /// Notes the outcome of a store query, and for a write, its time.
    fn observed<T>(
        &self,
        operation: &'static str,
        write: Option<tokio::time::Instant>,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let took = write.map(|started| started.elapsed());
        self.meter().record(operation, took, result.is_ok());
        result
    }

    /// Which implementation, for logs and metrics.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Every key that is live at `now`.
    pub async fn live_keys(&self, now: i64) -> Result<Vec<KeyRecord>, StoreError> {
        dispatch!(self.live_keys(now))
    }

    /// Every key changed at or after `since_ms` (store clock), revoked ones included,
    /// and the store clock when the query ran.
    pub async fn changed_since(&self, since_ms: i64) -> Result<(Vec<KeyRecord>, i64), StoreError> {
        dispatch!(self.changed_since(since_ms))
    }

    /// One page of every key: at most `limit` keys whose id sorts after `after`, in
    /// id order, and the store clock read before them. The first full load goes page
    /// by page, so that a million stored keys are never all held twice.
    pub async fn keys_after(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<(Vec<KeyRecord>, i64), StoreError> {
        dispatch!(self.keys_after(after, limit))
    }

    /// One key by id.
    pub async fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        dispatch!(self.key(id))
    }

    /// The keys of an owner that are not revoked, oldest first.
    pub async fn keys_of(&self, owner: &str) -> Result<Vec<KeyRecord>, StoreError> {
        dispatch!(self.keys_of(owner))
    }

    /// Every key, revoked ones included, oldest first (for the operator CLI).
    pub async fn all_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        dispatch!(self.all_keys())
    }

    /// Stores a new key durably; its `updated_at` is set by the store.
    pub async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        write!(self.insert_key(key))
    }

    /// Replaces a live key's secret; `None` if it is unknown or revoked.
    pub async fn rotate_key(
        &self,
        rotation: &Rotation<'_>,
    ) -> Result<Option<KeyRecord>, StoreError> {
        write!(self.rotate_key(rotation))
    }

    /// Adds each subject's usage to its period's row, in one transaction; returns the
    /// rows' new totals, in order.
    pub async fn add_quota_usage(
        &self,
        usage: Vec<crate::limits::quota::Usage>,
    ) -> Result<Vec<i64>, StoreError> {
        write!(self.add_quota_usage(usage))
    }

    /// The quota rows of `periods` changed at or after `since_ms` (store clock), as
    /// `(subject, period, used)`, and the store clock when the query ran.
    pub async fn quota_usage_since(
        &self,
        since_ms: i64,
        periods: Vec<String>,
    ) -> Result<(Vec<(String, String, i64)>, i64), StoreError> {
        dispatch!(self.quota_usage_since(since_ms, periods))
    }

    /// Revokes a key; `None` if it is unknown or already revoked.
    pub async fn revoke_key(&self, id: &str, now: i64) -> Result<Option<KeyRecord>, StoreError> {
        write!(self.revoke_key(id, now))
    }

    /// Records last-used times (a batch from the in-memory table); a time never moves
    /// backwards.
    pub async fn record_last_used(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        write!(self.record_last_used(uses))
    }

    /// Stores a registration and its key in one transaction.
    pub async fn insert_registration(
        &self,
        registration: &RegistrationRecord,
        key: &KeyRecord,
    ) -> Result<(), StoreError> {
        write!(self.insert_registration(registration, key))
    }

    /// One registration by id.
    pub async fn registration(&self, id: &str) -> Result<Option<RegistrationRecord>, StoreError> {
        dispatch!(self.registration(id))
    }

    /// One registration by the hash of its claim token.
    pub async fn registration_by_claim(
        &self,
        claim_hash: &[u8; 32],
    ) -> Result<Option<RegistrationRecord>, StoreError> {
        dispatch!(self.registration_by_claim(claim_hash))
    }

    /// The registrations the person `provider`/`subject` claimed by signing in
    /// (matched by the provider's stable subject, never by e-mail), oldest claim
    /// first, each with its keys.
    pub async fn operated_by(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Vec<Operated>, StoreError> {
        let (registrations, keys) = dispatch!(self.operated_by(provider, subject))?;
        Ok(operated(registrations, &keys))
    }

    /// Claims a registration: binds it to `subject` and raises its key's tier and
    /// scopes in place, atomically. At most one claim of a registration succeeds.
    pub async fn claim(&self, claim: &Claim<'_>) -> Result<ClaimOutcome, StoreError> {
        write!(self.claim(claim))
    }

    /// Records that the assertion `(issuer, jti)` was used; false when it was used
    /// before (a replay). Entries past `expires_at` may be forgotten.
    pub async fn use_assertion(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        write!(self.use_assertion(issuer, jti, expires_at, now))
    }

    /// Puts an access token's `jti` on the deny-list until `expires_at`, durably;
    /// entries of tokens that have expired anyway are dropped.
    pub async fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        write!(self.revoke_token(jti, expires_at))
    }

    /// Token revocations recorded at or after `since_ms` (store clock), and the
    /// store clock when the query ran.
    pub async fn revoked_tokens_since(
        &self,
        since_ms: i64,
    ) -> Result<(Vec<(String, i64)>, i64), StoreError> {
        dispatch!(self.revoked_tokens_since(since_ms))
    }

    /// A cheap round trip: is the store reachable right now?
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self.ping())
    }
}
