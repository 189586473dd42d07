//! The proxy's generations: what one config builds, swapped atomically on reload,
//! and whether the proxy is ready for traffic.
//!
//! A [`Gateway`] holds the current [`Generation`] (documents, key table, token
//! verifier, upstream, endpoints) and the state that outlives every generation
//! (rate buckets and quota counters, the store, the metrics). Each request runs
//! through the [`pipeline`](crate::pipeline) under the generation that was current
//! when it arrived, and is counted and logged here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::agent_auth::AgentAuth;
use crate::assertion::AssertionVerifier;
use crate::body::Body;
use crate::clock::unix_now;
use crate::config::{Config, HealthCheck, SigningSource};
use crate::credentials::{KeyTable, Principal};
use crate::discovery::Documents;
use crate::limits::global::{Global, GlobalError, OnUnavailable};
use crate::limits::x402::{self, X402};
use crate::limits::{self, LimitSet, Limiter};
use crate::login::{Login, LoginError};
use crate::metrics::{self, Meters, Metrics};
use crate::oauth::OAuth;
use crate::pipeline::{Generation, Trace};
use crate::proxy::{ClientConn, Upstream};
use crate::rejection::Responder;
use crate::store::sync::{self, Compiler, Follower, SyncState};
use crate::store::{Store, StoreSettings};
use crate::tokens::signing::{KeyError, KeySource, LiveKeys};
use crate::tokens::{self, Tokens};

/// How long a start or reload waits for the store before going on without it
/// (start) or giving up (reload).
const PRELOAD: Duration = Duration::from_secs(5);

/// How often the upstream's health is checked.
const HEALTH_EVERY: Duration = Duration::from_secs(5);

/// The proxy: the active config generation, swapped atomically on reload, and the
/// state that outlives every generation (rate buckets and quota counters, the
/// store, the metrics).
#[derive(Debug)]
pub struct Gateway {
    current: ArcSwap<Generation>,
    shared: Shared,
}

/// What outlives a config generation.
#[derive(Debug)]
struct Shared {
    /// Rate buckets and quota counters: a reload keeps every subject's standing.
    limiter: Arc<Limiter>,
    /// The store, opened once at start (a changed `store:` needs a restart).
    store: Option<Store>,
    metrics: Arc<Metrics>,
    /// Set when shutdown begins: `/readyz` answers 503 so that load balancers stop
    /// sending new requests while in-flight ones finish.
    draining: AtomicBool,
    /// The fleet-wide limits on Redis, when configured (a changed
    /// `limits.global` needs a restart).
    global: Option<Arc<Global>>,
    /// The limiter's sweeper and the quota sync.
    background: Vec<JoinHandle<()>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
}

/// Why a config could not be put in service.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The token signing keys could not be loaded.
    #[error("cannot load the token signing keys: {0}")]
    SigningKeys(#[from] KeyError),
    /// The metrics could not be registered.
    #[error("cannot register the metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The sign-in's cookie key could not be had.
    #[error("sign-in: {0}")]
    Login(#[from] LoginError),
    /// The fleet-wide limits could not be set up.
    #[error("{0}")]
    Global(#[from] GlobalError),
    /// The upstream's TLS settings cannot be used.
    #[error("upstream TLS: {0}")]
    UpstreamTls(#[from] crate::tls::TlsError),
    /// A reload needs the store's keys before it can serve, and the store did not
    /// give them.
    #[error("the credential store did not answer; the running config stays")]
    StoreUnavailable,
}

impl Gateway {
    /// Builds the gateway from its first config: see [`Generation`]. With a store,
    /// the store's keys and quota usage are loaded before this returns when the
    /// store answers within a few seconds (so a restarted proxy never refuses a key
    /// it acknowledged, nor gives a used-up quota back); otherwise the follower
    /// keeps trying and `/readyz` says so. Must run inside a Tokio runtime.
    pub async fn start(config: Config, store: Option<Store>) -> Result<Gateway, StartError> {
        Gateway::start_with(config, store, Arc::new(Metrics::new()?)).await
    }

    /// [`Gateway::start`], counting in `metrics`.
    pub async fn start_with(
        config: Config,
        store: Option<Store>,
        metrics: Arc<Metrics>,
    ) -> Result<Gateway, StartError> {
        let limiter = Arc::new(Limiter::new(config.limits.max_principals));
        let mut background = vec![tokio::spawn(limits::sweep_forever(
            limiter.clone(),
            Duration::from_secs(10),
        ))];
        let global = match config.limits.global.clone() {
            Some(settings) => {
                let (global, tasks) = Global::start(
                    settings,
                    limiter.clone(),
                    &metrics,
                    config.limits.max_principals,
                )?;
                background.extend(tasks);
                Some(global)
            }
            None => None,
        };
        let quotas_in_redis = global.as_ref().is_some_and(|g| g.settings().quotas);
        if let Some(store) = store.as_ref().filter(|_| !quotas_in_redis) {
            store.observe(&metrics);
            // Quota usage is read before the first request: a restart must not give
            // a used-up quota back.
            let quotas = limiter.quotas();
            let read = crate::store::quotas::read_quotas(quotas, store, 0);
            let since = match tokio::time::timeout(PRELOAD, read).await {
                Ok(Ok(clock)) => clock,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "could not read quota usage; counting from zero until the store answers");
                    0
                }
                Err(_) => 0,
            };
            background.push(tokio::spawn(crate::store::quotas::sync_quotas_forever(
                limiter.clone(),
                store.clone(),
                config.limits.quota_flush,
                since,
            )));
        }
        if let (Some(store), true) = (&store, quotas_in_redis) {
            store.observe(&metrics);
        }
        let shared = Shared {
            limiter,
            global,
            store,
            metrics,
            draining: AtomicBool::new(false),
            background,
        };
        let generation = build(config, &shared, None).await?;
        Ok(Gateway {
            current: ArcSwap::from_pointee(generation),
            shared,
        })
    }

    /// Puts a new config in service: in-flight requests finish under the old one,
    /// new requests see the new one. Rate buckets, quota counters, the token
    /// deny-list, used payments and assertions carry over; the keys are reloaded
    /// from the config and the store before the swap (a store that does not answer
    /// refuses the reload, so no acknowledged key is ever refused).
    pub async fn reload(&self, config: Config) -> Result<(), StartError> {
        let previous = self.current.load_full();
        let generation = build(config, &self.shared, Some(&previous)).await?;
        self.current.store(Arc::new(generation));
        Ok(())
    }

    /// The active config.
    #[must_use]
    pub fn config(&self) -> Arc<Config> {
        self.current.load().config.clone()
    }

    /// The process's metrics.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// A handle on the process's metrics, for tasks that outlive a borrow.
    #[must_use]
    pub fn metrics_handle(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// The metrics exposition for a scrape that sent `headers`: the content type
    /// and the text.
    #[must_use]
    pub fn scrape(&self, headers: &http::HeaderMap) -> (&'static str, String) {
        let generation = self.current.load();
        let metrics = &self.shared.metrics;
        metrics.set_keys(generation.keys.len());
        metrics.encode(headers)
    }

    /// Writes what is only in memory to the store (quota usage); called once the
    /// listeners have drained, so that a restart loses nothing.
    pub async fn flush(&self) {
        let limiter = &self.shared.limiter;
        if let Some(global) = &self.shared.global {
            // Gives back the leases, so the other replicas may use them at once.
            global.shutdown(limiter).await;
            if global.settings().quotas {
                return;
            }
        }
        if let Some(store) = &self.shared.store {
            crate::store::quotas::flush_quotas(limiter.quotas(), store).await;
        }
    }

    /// What the proxy serves with less than its config asks for, without being
    /// unready: the fleet-wide limits' fallback while Redis is unavailable.
    #[must_use]
    pub fn degraded(&self) -> Vec<&'static str> {
        let mut notes = Vec::new();
        if let Some(global) = &self.shared.global {
            if global.unavailable() {
                notes.push(match global.settings().on_unavailable {
                    OnUnavailable::Local => "limits.global: redis is unavailable; each replica enforces its share of the limits",
                    OnUnavailable::Open => "limits.global: redis is unavailable; rate limits are not enforced",
                    OnUnavailable::Closed => "limits.global: redis is unavailable; limited routes answer 503",
                });
            }
        }
        notes
    }

    /// Reads the token signing keys again if their files changed since the current
    /// generation read them (a `tokens rotate-key`, an updated Secret), off the
    /// runtime's workers. `Some(kid)` of the key that signs from now on when they
    /// changed; on an error the keys in use stay.
    pub async fn refresh_signing_keys(&self) -> Result<Option<String>, KeyError> {
        let tokens = self.current.load().tokens.clone();
        tokio::task::spawn_blocking(move || tokens.refresh_signing_keys(unix_now()))
            .await
            // The blocking pool is shutting down: so is the proxy.
            .unwrap_or(Ok(None))
    }

    /// Marks the proxy as shutting down: `/readyz` fails from now on.
    pub fn drain(&self) {
        self.shared.draining.store(true, Ordering::Release);
    }

    /// Why the proxy should not receive traffic now; empty when it should. It
    /// should not while shutting down, before it can verify every key (the store's
    /// keys are loaded), and while the upstream health check fails.
    #[must_use]
    pub fn readiness(&self) -> Vec<&'static str> {
        let generation = self.current.load();
        let mut problems = Vec::new();
        if self.shared.draining.load(Ordering::Acquire) {
            problems.push("shutting down");
        }
        if !generation.sync.as_ref().is_none_or(|s| s.is_loaded()) {
            problems.push("the keys are not loaded from the store yet");
        }
        if !generation.upstream_healthy.load(Ordering::Acquire) {
            problems.push("the upstream does not pass its health check");
        }
        problems
    }

    /// Answers one request under the current generation, and counts it.
    pub async fn handle(&self, request: Request<Incoming>, conn: &ClientConn) -> Response<Body> {
        let generation = self.current.load_full();
        let started = Instant::now();
        let method = request.method().clone();
        let mut trace = Trace::default();
        let response = generation.handle(request, conn, &mut trace).await;
        let elapsed = started.elapsed();
        let code = response.body().refusal_code();
        generation.meters.request(
            trace.meter,
            &method,
            response.status(),
            code,
            elapsed,
            trace.upstream,
        );
        let answer = (response.status(), code, elapsed);
        access_log(&generation, &method, conn, &trace, answer);
        response
    }
}

/// Builds a generation: renders the documents, loads the config's static keys into
/// a new table and the signing keys (generating a first one in a managed
/// directory), and starts fetching the trusted issuers' keys. With a store, the
/// lifecycle endpoints are served and a follower keeps the key table and the token
/// deny-list in step with the store. `previous` is the generation being replaced,
/// whose carried-over state this one continues.
async fn build(
    config: Config,
    shared: &Shared,
    previous: Option<&Generation>,
) -> Result<Generation, StartError> {
    let keys = Arc::new(KeyTable::default());
    for entry in &config.keys {
        keys.insert_static(entry.clone());
    }
    let compiler = Arc::new(Compiler::new(config.scopes.clone(), config.tiers.clone()));
    let settings = &config.tokens;
    let own = if settings.enabled {
        let ttl = i64::try_from(settings.ttl.as_secs()).unwrap_or(3600);
        let source = match &settings.signing {
            SigningSource::Files(files) => KeySource::Files(files.clone()),
            SigningSource::Dir(dir) => KeySource::Dir {
                dir: dir.clone(),
                algorithm: settings.algorithm,
                ttl,
            },
        };
        Some(LiveKeys::load(source, unix_now())?)
    } else {
        None
    };
    let metrics = &shared.metrics;
    let client = crate::http_client::https_client();
    let issuers = tokens::issuers(&config.trusted_issuers, &client);
    for issuer in &issuers {
        if let Some(counters) = metrics.jwks_counters(&issuer.settings.issuer) {
            issuer.keys.count_fetches(counters);
        }
    }
    let mut background: Vec<_> = issuers
        .iter()
        .map(|issuer| tokio::spawn(issuer.keys.clone().refresh_forever()))
        .collect();
    let scope_headers = compiler.scope_headers().clone();
    let mut tokens = Tokens::new(
        config.own_tokens(),
        own,
        &issuers,
        config.tiers.clone(),
        scope_headers,
    );
    if let Some(previous) = previous {
        tokens.share_revocations(&previous.tokens);
    }
    let tokens = Arc::new(tokens);
    let mut audiences: Vec<String> = config.discovery.origins.clone();
    if config.lifecycle.registration.accept_resource_audience {
        audiences.extend(config.discovery.origins.iter().map(|o| format!("{o}/")));
    }
    let assertions = Arc::new(AssertionVerifier::new(&issuers, audiences));
    let oauth = OAuth::new(
        &config,
        tokens.clone(),
        assertions.clone(),
        keys.clone(),
        shared.store.clone(),
        previous.map(|p| &p.oauth),
    );
    let x402 = config.limits.payments.clone().map(|payments| {
        let mut x402 = X402::new(payments);
        if let Some(old) = previous.and_then(|p| p.x402.as_ref()) {
            x402.share_replays(old);
        }
        x402
    });
    let meters = Meters::new(
        metrics.clone(),
        config.policy.ids(),
        config.tiers.all().iter().map(|t| t.name.as_str()),
    )?;
    let consumed: Vec<_> = config.credentials.consumed_headers().cloned().collect();
    let consumed_paid = consumed
        .iter()
        .cloned()
        .chain(x402::PAYMENT_HEADERS)
        .collect();
    let responders = config
        .discovery
        .origins
        .iter()
        .map(|origin| Responder::new(origin, config.scopes.clone(), config.tiers.clone()))
        .collect();
    let upstream = Upstream::new(&config.upstream)?;
    let login = login(&config, &client, previous)?;
    let mut generation = Generation {
        documents: Documents::build(&config),
        responders,
        upstream,
        consumed,
        consumed_paid,
        config: Arc::new(config),
        keys,
        tokens,
        oauth,
        agent_auth: None,
        login,
        x402,
        limiter: shared.limiter.clone(),
        global: shared.global.clone(),
        unmetered: LimitSet::default(),
        meters,
        sync: None,
        upstream_healthy: Arc::new(AtomicBool::new(true)),
        background: Vec::new(),
    };
    match &shared.store {
        Some(store) => {
            let follower = follow(&mut generation, store, compiler, assertions, previous).await?;
            background.push(follower);
        }
        None => {
            let tokens = generation.tokens.clone();
            background.push(tokio::spawn(async move {
                let mut sweep = tokio::time::interval(Duration::from_secs(60));
                loop {
                    sweep.tick().await;
                    tokens.sweep(unix_now());
                }
            }));
        }
    }
    let health = &generation.config.upstream.health_check;
    if *health != HealthCheck::None {
        let healthy = generation.upstream.probe(health).await;
        generation
            .upstream_healthy
            .store(healthy, Ordering::Release);
        background.push(tokio::spawn(check_upstream_forever(
            generation.config.clone(),
            generation.upstream_healthy.clone(),
        )));
    }
    generation.background.extend(background);
    Ok(generation)
}

/// The sign-in of a config: the running one when its settings did not change (its
/// providers' discovery documents and keys stay cached), else a new one that
/// continues the old one's in-memory cookie key and failed-attempt counts.
fn login(
    config: &Config,
    client: &crate::http_client::HttpsClient,
    previous: Option<&Generation>,
) -> Result<Option<Arc<Login>>, StartError> {
    if !config.login.enabled() {
        return Ok(None);
    }
    let old = previous.and_then(|p| p.login.as_ref());
    if let Some(old) = old.filter(|old| *old.settings() == config.login) {
        return Ok(Some(old.clone()));
    }
    let login = Login::new(&config.login, client, old.map(|old| &**old))?;
    Ok(Some(Arc::new(login)))
}

/// Loads the store's keys into a new generation (within [`PRELOAD`]) and starts the
/// follower that keeps them in step; serves the lifecycle endpoints from the store.
/// A reload (`previous` is set) whose store does not answer is refused.
async fn follow(
    generation: &mut Generation,
    store: &Store,
    compiler: Arc<Compiler>,
    assertions: Arc<AssertionVerifier>,
    previous: Option<&Generation>,
) -> Result<JoinHandle<()>, StartError> {
    let keys = &generation.keys;
    let preload = tokio::time::timeout(PRELOAD, sync::load_all(store, keys, &compiler)).await;
    let loaded_at = match preload {
        Ok(Ok(clock)) => Some(clock),
        _ if previous.is_some() => return Err(StartError::StoreUnavailable),
        Ok(Err(error)) => {
            tracing::warn!(%error, "the credential store is unavailable; serving config keys until it returns");
            None
        }
        Err(_) => {
            tracing::warn!(
                "the credential store is slow to answer; serving config keys until it does"
            );
            None
        }
    };
    let config = &generation.config;
    let notices = match store {
        Store::Postgres(postgres) => Some(postgres.listen()),
        Store::Sqlite(sqlite) => Some(sqlite.watch()),
    };
    let resync = match &config.lifecycle.store {
        StoreSettings::Sqlite { resync, .. } | StoreSettings::Postgres { resync, .. } => *resync,
        StoreSettings::None => Duration::from_secs(10),
    };
    let state = Arc::new(SyncState::default());
    let follower = sync::spawn_follower(Follower {
        store: store.clone(),
        table: keys.clone(),
        compiler: compiler.clone(),
        resync,
        notices,
        state: state.clone(),
        loaded_at,
        tokens: generation.tokens.clone(),
        clients_unused_ttl: config.interactive.registration.unused_ttl,
    });
    generation.agent_auth = Some(AgentAuth::new(
        config,
        store.clone(),
        keys.clone(),
        compiler,
        assertions,
        generation.tokens.clone(),
        previous.and_then(|p| p.agent_auth.as_ref()),
    ));
    generation.sync = Some(state);
    Ok(follower)
}

/// Checks the upstream every [`HEALTH_EVERY`] with its own client (a probe must
/// not ride a request's connection).
async fn check_upstream_forever(config: Arc<Config>, healthy: Arc<AtomicBool>) {
    let Ok(upstream) = Upstream::new(&config.upstream) else {
        return;
    };
    let mut tick = tokio::time::interval(HEALTH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let ok = upstream.probe(&config.upstream.health_check).await;
        if healthy.swap(ok, Ordering::AcqRel) != ok {
            if ok {
                tracing::info!("the upstream passes its health check again");
            } else {
                tracing::warn!("the upstream fails its health check; /readyz reports not ready");
            }
        }
    }
}

/// Writes the access log line of a request, when the operator asked for one:
/// `answer` is its status, refusal code and duration.
fn access_log(
    generation: &Generation,
    method: &http::Method,
    conn: &ClientConn,
    trace: &Trace,
    (status, code, elapsed): (http::StatusCode, Option<&'static str>, Duration),
) {
    let Some(level) = generation.access_level() else {
        return;
    };
    macro_rules! line {
        ($level:expr) => {
            if tracing::enabled!(target: "authmd_proxy::access", $level) {
                let principal = trace.principal.as_ref().map(Principal::name);
                tracing::event!(
                    target: "authmd_proxy::access",
                    $level,
                    client = %conn.peer.ip(),
                    method = %method,
                    route = generation.meters.label(trace.meter),
                    status = status.as_u16(),
                    decision = metrics::decision(trace.meter, status, code).label(),
                    code = code.unwrap_or(""),
                    principal = principal.as_deref().unwrap_or(""),
                    duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                    upstream_us = trace.upstream.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
                    "request"
                );
            }
        };
    }
    match level {
        tracing::Level::ERROR => line!(tracing::Level::ERROR),
        tracing::Level::WARN => line!(tracing::Level::WARN),
        tracing::Level::INFO => line!(tracing::Level::INFO),
        tracing::Level::DEBUG => line!(tracing::Level::DEBUG),
        _ => line!(tracing::Level::TRACE),
    }
}
