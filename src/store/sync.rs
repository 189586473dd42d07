//! Following the store: the in-memory key table is loaded from it at start and kept
//! in step afterwards.
//!
//! One task per process ([`spawn_follower`]) applies, in order of the store's own
//! clock, every change it learns of: announcements (PostgreSQL `NOTIFY`; for SQLite,
//! a resync whenever another connection has committed to the file), a periodic
//! resync (`changed_since`, overlapping the previous one so a transaction that
//! committed late is not missed), it flushes last-used times in batches, and it
//! sweeps expired OAuth grants and long-unused registered clients from the store
//! ([`Store::sweep_grants`], [`Store::sweep_clients`]). Writes
//! this process makes are applied by the writer itself, before it answers; the
//! follower seeing them again later is harmless (the table ignores stale versions).

use http::HeaderValue;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{KeyRecord, Notice, Store, StoreError};
use crate::clock::unix_now;

use crate::credentials::key_table::{Change, KeyProfile};
use crate::credentials::{KeyEntry, KeyHash, KeyTable};
use crate::scope::{ScopeHeaders, ScopeRegistry, ScopeSet};
use crate::tier::{TierId, Tiers};
use crate::tokens::Tokens;

/// How far back each resync looks beyond the previous one: longer than any write
/// transaction takes between reading the clock and committing.
const RESYNC_OVERLAP_MS: i64 = 10_000;

/// How often last-used times are written back.
const LAST_USED_FLUSH: Duration = Duration::from_secs(30);

/// How often expired revocations and cached tokens are forgotten, and expired OAuth
/// grants (codes, refresh tokens, consents) and unused registered clients deleted
/// from the store.
const SWEEP: Duration = Duration::from_secs(60);

/// The config's view of stored records: what scopes and tiers mean. Keys with the
/// same scopes and tier share one profile, and everything with the same scopes one
/// `X-Authmd-Scopes` value.
#[derive(Debug)]
pub struct Compiler {
    scopes: Arc<ScopeRegistry>,
    tiers: Arc<Tiers>,
    headers: Arc<ScopeHeaders>,
    profiles: papaya::HashMap<(ScopeSet, TierId), Arc<KeyProfile>>,
}

impl Compiler {
    /// A compiler for the config's scopes and tiers.
    #[must_use]
    pub fn new(scopes: Arc<ScopeRegistry>, tiers: Arc<Tiers>) -> Compiler {
        Compiler {
            headers: Arc::new(ScopeHeaders::new(scopes.clone())),
            scopes,
            tiers,
            profiles: papaya::HashMap::new(),
        }
    }

    /// The `X-Authmd-Scopes` values it gives keys, to share with the tokens.
    #[must_use]
    pub fn scope_headers(&self) -> &Arc<ScopeHeaders> {
        &self.headers
    }

    /// The profile of stored keys with these scopes and tier and no limits of their
    /// own, shared by all of them.
    fn profile(&self, scopes: ScopeSet, tier: TierId) -> Arc<KeyProfile> {
        self.profiles
            .pin()
            .get_or_insert_with((scopes, tier), || {
                Arc::new(KeyProfile {
                    scopes,
                    tier,
                    scopes_header: self.headers.get(scopes),
                    limits: None,
                    is_static: false,
                })
            })
            .clone()
    }

    /// What a record means for the table at `now`: its live secrets, or nothing.
    #[must_use]
    pub fn change_of(&self, record: &KeyRecord, now: i64) -> Change {
        if !record.is_live(now) {
            return Change::Gone {
                updated_at: record.updated_at,
            };
        }
        let granted = self
            .scopes
            .granted_known(record.scopes.iter().map(String::as_str));
        // A tier the config no longer declares falls back to the lowest keyed tier.
        let tier = self
            .tiers
            .find(&record.tier)
            .filter(|t| *t != TierId::ANONYMOUS)
            .unwrap_or(TierId(1));
        let limits = record.limits.as_deref().and_then(|text| {
            match crate::limits::stored_limits(&record.id, text, &self.tiers.get(tier).limits) {
                Ok(set) => Some(Arc::new(set)),
                Err(error) => {
                    // The key keeps its tier's limits rather than none.
                    tracing::warn!(key = %record.id, %error, "a stored key's limits are invalid; using its tier's");
                    None
                }
            }
        });
        let profile = match limits {
            None => self.profile(granted, tier),
            Some(limits) => Arc::new(KeyProfile {
                scopes: granted,
                tier,
                scopes_header: self.headers.get(granted),
                limits: Some(limits),
                is_static: false,
            }),
        };
        let entry = |hash: KeyHash, expires_at: Option<i64>| {
            let mut entry = KeyEntry::new(&record.id, hash, profile.clone())?.expiring(expires_at);
            entry.updated_at = record.updated_at;
            entry.operator = record
                .operator
                .as_deref()
                .and_then(|o| HeaderValue::from_str(o).ok());
            if let Some(at) = record.last_used_at {
                entry.last_used = at.into();
            }
            Some(Arc::new(entry))
        };
        let Some(current) = entry(record.hash, record.expires_at) else {
            tracing::warn!(key = %record.id, "a stored key's id cannot be a header value; the key is not loaded");
            return Change::Gone {
                updated_at: record.updated_at,
            };
        };
        let previous = match (record.previous_hash, record.previous_expires_at) {
            (Some(previous), Some(until)) if now < until => {
                let until = record.expires_at.map_or(until, |at| at.min(until));
                entry(previous, Some(until))
            }
            _ => None,
        };
        Change::Live { current, previous }
    }

    /// Applies one record to the table.
    pub async fn apply(&self, table: &KeyTable, record: &KeyRecord) -> bool {
        table
            .apply(&record.id, self.change_of(record, unix_now()))
            .await
    }
}

/// The follower's state, shared with the readiness check.
#[derive(Debug, Default)]
pub struct SyncState {
    loaded: AtomicBool,
}

impl SyncState {
    /// True once the first full load has completed.
    #[must_use]
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }
}

/// Everything the follower needs.
#[derive(Debug)]
pub struct Follower {
    /// The store.
    pub store: Store,
    /// The table it keeps in step.
    pub table: Arc<KeyTable>,
    /// How records are compiled.
    pub compiler: Arc<Compiler>,
    /// Resync interval.
    pub resync: Duration,
    /// Announcements, when the store makes them.
    pub notices: Option<mpsc::Receiver<Notice>>,
    /// Shared state.
    pub state: Arc<SyncState>,
    /// The store clock of a load already done before the follower started.
    pub loaded_at: Option<i64>,
    /// The token verifier, whose deny-list follows the store's revocations.
    pub tokens: Arc<Tokens>,
    /// A registered OAuth client unused this long is deleted
    /// (`oauth.registration.unused_ttl`).
    pub clients_unused_ttl: Duration,
}

/// Loads every key once; returns the store clock to resync from.
pub async fn load_all(
    store: &Store,
    table: &KeyTable,
    compiler: &Compiler,
) -> Result<i64, StoreError> {
    let mut after = String::new();
    let mut clock = None;
    loop {
        let (records, at) = store.keys_after(&after, LOAD_PAGE).await?;
        // The first page's clock: whatever changed while the later pages were read
        // is read again by the first resync, which starts from it.
        let clock = *clock.get_or_insert(at);
        for record in &records {
            compiler.apply(table, record).await;
        }
        match records.last() {
            Some(last) if records.len() == LOAD_PAGE as usize => after.clone_from(&last.id),
            _ => return Ok(clock),
        }
    }
}

/// Keys read per query by the first full load.
const LOAD_PAGE: u32 = 10_000;

/// Starts the follower. It first loads every key (retrying with backoff while the
/// store is unreachable), then follows.
#[must_use]
pub fn spawn_follower(follower: Follower) -> JoinHandle<()> {
    tokio::spawn(follow(follower))
}

async fn follow(mut f: Follower) {
    let mut backoff = Duration::from_millis(100);
    f.table.tick(unix_now());
    let mut synced = match f.loaded_at {
        Some(clock) => clock,
        None => loop {
            match load_all(&f.store, &f.table, &f.compiler).await {
                Ok(clock) => break clock,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "cannot load keys from the store");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        },
    };
    let mut revocations = 0;
    follow_revocations(&f, &mut revocations).await;
    f.state.loaded.store(true, Ordering::Release);
    tracing::info!(keys = f.table.len(), store = f.store.kind(), "keys loaded");

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut resync = tokio::time::interval(f.resync);
    let mut flush = tokio::time::interval(LAST_USED_FLUSH);
    let mut sweep = tokio::time::interval(SWEEP);
    for timer in [&mut tick, &mut resync, &mut flush, &mut sweep] {
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    resync.reset();
    flush.reset();
    sweep.reset();
    let mut flushed = 0;
    let mut failing = false;
    loop {
        let notice = async {
            match f.notices.as_mut() {
                Some(notices) => notices.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => f.table.tick(unix_now()),
            _ = resync.tick() => {
                synced = resync_from(&f, synced, &mut failing).await;
                follow_revocations(&f, &mut revocations).await;
            }
            _ = sweep.tick() => {
                let now = unix_now();
                f.tokens.sweep(now);
                if let Err(error) = f.store.sweep_grants(now).await {
                    tracing::debug!(%error, "cannot sweep expired OAuth grants; will retry");
                }
                sweep_clients(&f, now).await;
            }
            _ = flush.tick() => {
                let now = unix_now();
                let uses = f.table.used_since(flushed);
                if uses.is_empty() || f.store.record_last_used(&uses).await.is_ok() {
                    flushed = now;
                }
            }
            notice = notice => match notice {
                Some(Notice::Key(id)) => match f.store.key(&id).await {
                    Ok(Some(record)) => {
                        f.compiler.apply(&f.table, &record).await;
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::debug!(%error, "cannot read an announced key; the resync will");
                    }
                },
                Some(Notice::TokenRevoked) => follow_revocations(&f, &mut revocations).await,
                Some(Notice::Resync) => {
                    synced = resync_from(&f, synced, &mut failing).await;
                    follow_revocations(&f, &mut revocations).await;
                }
                None => f.notices = None,
            },
        }
    }
}

/// Deletes the registered OAuth clients unused for the configured time.
async fn sweep_clients(f: &Follower, now: i64) {
    let unused_for = i64::try_from(f.clients_unused_ttl.as_secs()).unwrap_or(i64::MAX);
    match f.store.sweep_clients(now, unused_for).await {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(
            clients = deleted,
            unused_for_secs = unused_for,
            "deleted registered OAuth clients no one used"
        ),
        Err(error) => tracing::debug!(%error, "cannot sweep unused OAuth clients; will retry"),
    }
}

/// Puts every token revoked since `mark` (minus the overlap) on the deny-list and
/// advances the mark; on failure the next call tries again from the same mark.
async fn follow_revocations(f: &Follower, mark: &mut i64) {
    let since = if *mark == 0 {
        0
    } else {
        mark.saturating_sub(RESYNC_OVERLAP_MS)
    };
    match f.store.revoked_tokens_since(since).await {
        Ok((revoked, clock)) => {
            for (jti, expires_at) in &revoked {
                f.tokens.deny(jti, *expires_at);
            }
            *mark = clock;
        }
        Err(error) => tracing::debug!(%error, "cannot read token revocations; will retry"),
    }
}

/// Applies every change since `synced` (minus the overlap); returns the new mark.
async fn resync_from(f: &Follower, synced: i64, failing: &mut bool) -> i64 {
    match f
        .store
        .changed_since(synced.saturating_sub(RESYNC_OVERLAP_MS))
        .await
    {
        Ok((records, clock)) => {
            for record in &records {
                f.compiler.apply(&f.table, record).await;
            }
            if *failing {
                tracing::info!("the credential store is reachable again");
                *failing = false;
            }
            clock
        }
        Err(error) => {
            if !*failing {
                tracing::warn!(%error, "resync failed; verifying from memory until the store returns");
                *failing = true;
            }
            synced
        }
    }
}
