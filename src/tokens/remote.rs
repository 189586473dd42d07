//! The signing keys of a trusted issuer, fetched from its JWKS.
//!
//! A background task fetches the key set at start and then every
//! [`REFRESH_EVERY`]; a failed fetch is retried with backoff and the last good key
//! set stays in use meanwhile, so an identity provider that is down does not take
//! this API down with it. Verification reads the current set without a lock (it is
//! swapped whole). A token naming a `kid` the set lacks asks for a refetch, which
//! happens at most once per refetch interval ([`REFETCH_INTERVAL`] unless
//! configured) per issuer and by one task at a
//! time: forged `kid`s cannot turn the proxy into an amplifier against the issuer.
//!
//! Keys are filtered on arrival: symmetric keys (an HMAC "public key" is the classic
//! confusion attack), keys not for signatures, RSA keys under 2048 bits, and keys
//! whose algorithm the operator did not accept are dropped. The algorithm is the
//! key's, never the token's. A key set with no usable key left counts as a failed
//! fetch: an issuer serving junk never takes away the last good keys.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use http::Uri;
use http_body_util::{BodyExt, Limited};
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::time::Instant;

use crate::http_client::HttpsClient;

/// How often a key set is refetched when nothing asks sooner.
pub const REFRESH_EVERY: Duration = Duration::from_secs(600);
/// The default shortest time between two fetches of one issuer's keys caused by
/// unknown `kid`s.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Longest wait for a JWKS answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS read.
const MAX_JWKS: usize = 256 * 1024;
/// Smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS: usize = 256;
/// The first retry after a failed background fetch; it doubles up to
/// [`REFRESH_EVERY`].
const FIRST_RETRY: Duration = Duration::from_secs(5);

/// One usable key.
#[derive(Debug)]
pub struct RemoteKey {
    /// Its `kid`, if it has one.
    pub kid: Option<String>,
    /// The algorithm it verifies.
    pub algorithm: Algorithm,
    /// The key.
    pub key: DecodingKey,
}

/// What is known of the key set.
#[derive(Debug, Default)]
struct Snapshot {
    keys: Vec<Arc<RemoteKey>>,
    /// True once a fetch has succeeded.
    loaded: bool,
}

/// Outcome of [`RemoteKeys::refetch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refetch {
    /// A new key set is in place.
    Fetched,
    /// A fetch ran too recently; nothing was done.
    Throttled,
    /// The issuer could not be reached or answered garbage; the old set stays.
    Failed,
}

/// When the last fetch ended, how it went, and how many there have been.
#[derive(Debug, Clone, Copy)]
struct LastFetch {
    ended: Option<Instant>,
    outcome: Refetch,
    count: u64,
}

/// One issuer's keys.
#[derive(Debug)]
pub struct RemoteKeys {
    uri: Uri,
    accepted: Vec<Algorithm>,
    refetch_interval: Duration,
    client: HttpsClient,
    current: ArcSwap<Snapshot>,
    /// The last fetch; held while fetching, so fetches never overlap.
    last_fetch: tokio::sync::Mutex<LastFetch>,
    /// [`LastFetch::count`], readable without the lock: a caller that saw it change
    /// while it waited for the lock takes that fetch's outcome as its own.
    fetches: std::sync::atomic::AtomicU64,
    /// Where fetch outcomes are counted, once the gateway's metrics are known.
    counters: std::sync::OnceLock<crate::metrics::FetchCounters>,
}

impl RemoteKeys {
    /// The keys published at `uri`, of which those for `accepted` algorithms are
    /// used, refetched on demand at most once per `refetch_interval`.
    #[must_use]
    pub fn new(
        uri: Uri,
        accepted: Vec<Algorithm>,
        refetch_interval: Duration,
        client: HttpsClient,
    ) -> RemoteKeys {
        RemoteKeys {
            uri,
            accepted,
            refetch_interval,
            client,
            current: ArcSwap::from_pointee(Snapshot::default()),
            last_fetch: tokio::sync::Mutex::new(LastFetch {
                ended: None,
                outcome: Refetch::Failed,
                count: 0,
            }),
            fetches: std::sync::atomic::AtomicU64::new(0),
            counters: std::sync::OnceLock::new(),
        }
    }

    /// Counts every fetch's outcome in `counters` from now on.
    pub fn count_fetches(&self, counters: crate::metrics::FetchCounters) {
        let _ = self.counters.set(counters);
    }

    /// The key a token names: by `kid`, or the only key when it names none.
    #[must_use]
    pub fn find(&self, kid: Option<&str>) -> Option<Arc<RemoteKey>> {
        let snapshot = self.current.load();
        match kid {
            Some(kid) => snapshot
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .cloned(),
            None if snapshot.keys.len() == 1 => snapshot.keys.first().cloned(),
            None => None,
        }
    }

    /// True once a key set has been fetched.
    #[must_use]
    pub fn is_loaded(&self) -> bool {
        self.current.load().loaded
    }

    /// Fetches the key set now, unless a fetch ended less than the refetch interval
    /// ago. Concurrent callers wait for one fetch and share its outcome, however
    /// long it took.
    pub async fn refetch(&self) -> Refetch {
        self.fetch_unless(true).await
    }

    /// Fetches now, or shares the outcome of a fetch that ended while this caller
    /// waited for the lock; `throttled`: not within the refetch interval of the last.
    async fn fetch_unless(&self, throttled: bool) -> Refetch {
        use std::sync::atomic::Ordering;
        let seen = self.fetches.load(Ordering::Acquire);
        let mut last = self.last_fetch.lock().await;
        if last.count != seen {
            return last.outcome;
        }
        if throttled
            && last
                .ended
                .is_some_and(|at| at.elapsed() < self.refetch_interval)
        {
            return Refetch::Throttled;
        }
        let outcome = self.fetch().await;
        *last = LastFetch {
            ended: Some(Instant::now()),
            outcome,
            count: last.count + 1,
        };
        self.fetches.store(last.count, Ordering::Release);
        outcome
    }

    async fn fetch(&self) -> Refetch {
        let request = async {
            let response = self.client.get(self.uri.clone()).await.ok()?;
            if response.status() != http::StatusCode::OK {
                return None;
            }
            let body = Limited::new(response.into_body(), MAX_JWKS)
                .collect()
                .await
                .ok()?
                .to_bytes();
            serde_json::from_slice::<JwkSet>(&body).ok()
        };
        let keys: Option<Vec<Arc<RemoteKey>>> =
            match tokio::time::timeout(FETCH_TIMEOUT, request).await {
                Ok(Some(set)) => Some(
                    set.keys
                        .iter()
                        .filter_map(|jwk| self.usable(jwk))
                        .map(Arc::new)
                        .collect(),
                ),
                _ => None,
            };
        match keys {
            Some(keys) if !keys.is_empty() => {
                tracing::debug!(jwks_uri = %self.uri, keys = keys.len(), "fetched an issuer's keys");
                self.current
                    .store(Arc::new(Snapshot { keys, loaded: true }));
                if let Some(counters) = self.counters.get() {
                    counters.record(true);
                }
                Refetch::Fetched
            }
            _ => {
                tracing::warn!(jwks_uri = %self.uri, "cannot fetch a trusted issuer's JWKS, or it has no usable key; keeping the last good keys");
                if let Some(counters) = self.counters.get() {
                    counters.record(false);
                }
                Refetch::Failed
            }
        }
    }

    fn usable(&self, jwk: &Jwk) -> Option<RemoteKey> {
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            return None;
        }
        let algorithm = algorithm_of(jwk)?;
        if !self.accepted.contains(&algorithm) {
            return None;
        }
        if let AlgorithmParameters::RSA(rsa) = &jwk.algorithm {
            let modulus = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(rsa.n.trim_end_matches('='))
                .ok()?;
            let significant = modulus.iter().skip_while(|b| **b == 0).count();
            if significant < MIN_RSA_MODULUS {
                return None;
            }
        }
        Some(RemoteKey {
            kid: jwk.common.key_id.clone(),
            algorithm,
            key: DecodingKey::from_jwk(jwk).ok()?,
        })
    }

    /// Keeps the key set fresh: fetches now, then every [`REFRESH_EVERY`]; after a
    /// failure, retries sooner ([`FIRST_RETRY`], doubling). These fetches are not
    /// throttled by the refetch interval, which bounds only those that tokens cause.
    pub async fn refresh_forever(self: Arc<Self>) {
        let mut retry = FIRST_RETRY;
        loop {
            let wait = match self.fetch_unless(false).await {
                Refetch::Fetched | Refetch::Throttled => {
                    retry = FIRST_RETRY;
                    REFRESH_EVERY
                }
                Refetch::Failed => {
                    let wait = retry;
                    retry = (retry * 2).min(REFRESH_EVERY);
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// The algorithm a key is for: its `alg`, or what its type and curve imply. A
/// symmetric key has none.
#[must_use]
pub fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    if let AlgorithmParameters::OctetKey(_) = jwk.algorithm {
        return None;
    }
    if let Some(alg) = &jwk.common.key_algorithm {
        let algorithm = match alg {
            KeyAlgorithm::EdDSA => Algorithm::EdDSA,
            KeyAlgorithm::ES256 => Algorithm::ES256,
            KeyAlgorithm::ES384 => Algorithm::ES384,
            KeyAlgorithm::RS256 => Algorithm::RS256,
            KeyAlgorithm::RS384 => Algorithm::RS384,
            KeyAlgorithm::RS512 => Algorithm::RS512,
            KeyAlgorithm::PS256 => Algorithm::PS256,
            KeyAlgorithm::PS384 => Algorithm::PS384,
            KeyAlgorithm::PS512 => Algorithm::PS512,
            _ => return None,
        };
        // The declared algorithm must fit the key type.
        let fits = match (&jwk.algorithm, algorithm) {
            (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA) => {
                okp.curve == EllipticCurve::Ed25519
            }
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
        return fits.then_some(algorithm);
    }
    match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Some(Algorithm::EdDSA)
        }
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        _ => None,
    }
}

/// Parses an algorithm name as the config spells it.
#[must_use]
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "EdDSA" => Algorithm::EdDSA,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        _ => return None,
    })
}
