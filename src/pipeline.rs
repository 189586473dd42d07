//! The request pipeline: the only place that knows the order of the steps.
//!
//! ```text
//! normalise path ─► local endpoint? ─► find route ─► credential ─► authorize ─► forward
//!      400        (discovery, OAuth)     404/405      400/401       401/403     502/504
//! ```
//!
//! Each step is a plain function returning `Result<_, Rejection>`; the first rejection
//! short-circuits and is answered by the origin's
//! [`Responder`](crate::rejection::Responder), with the challenges of the route the
//! request matched.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use http::{HeaderName, HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::agent_auth::{self, AgentAuth, Answer, Failure};
use crate::assertion::AssertionVerifier;
use crate::body::Body;
use crate::config::{Config, HealthCheck, SigningSource};
use crate::credentials::{KeyTable, Presented, Principal};
use crate::discovery::{self, Documents};
use crate::limits::x402::{self, Payment, Refused, X402};
use crate::limits::{self, Exceeded, Limiter, Subject, Verdict};
use crate::metrics::{self, LocalEndpoint, MeterId, Meters, Metrics, PaymentEvent};
use crate::oauth::{self, Caller, OAuth};
use crate::policy::{Access, HostId, Route, normalize_path};
use crate::proxy::{ClientConn, Identity, Outbound, Upstream};
use crate::rejection::PaymentError;
use crate::rejection::{LifecycleError, Rejection};
use crate::store::sync::{self, Compiler, Follower, SyncState};
use crate::store::{Store, unix_now};
use crate::tier::TierId;
use crate::tokens::signing::{KeyError, SigningKeys};
use crate::tokens::{self, TokenError, Tokens};

/// The proxy: the active config generation, swapped atomically on reload, and the
/// state that outlives every generation (rate buckets and quota counters, the
/// store, the metrics).
#[derive(Debug)]
pub struct Gateway {
    current: ArcSwap<Generation>,
    shared: Arc<Shared>,
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
    /// The limiter's sweeper and the quota sync.
    background: Vec<JoinHandle<()>>,
    /// The limits of routes that are not metered: none.
    unmetered: limits::LimitSet,
}

impl Drop for Shared {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
}

/// Everything built from one config: its documents, the key table, the token
/// verifier, the upstream, the endpoints. A request uses the generation that was
/// current when it arrived until it is answered.
#[derive(Debug)]
pub struct Generation {
    config: Arc<Config>,
    shared: Arc<Shared>,
    documents: Documents,
    keys: Arc<KeyTable>,
    tokens: Arc<Tokens>,
    upstream: Upstream,
    /// Credential headers removed from requests the proxy authenticates.
    consumed: Vec<HeaderName>,
    /// The same, and the payment headers, when payments are configured: a signed
    /// transfer is the proxy's to settle, never the upstream's to submit.
    consumed_paid: Vec<HeaderName>,
    /// The token and revocation endpoints.
    oauth: OAuth,
    /// The credential lifecycle endpoints, when a store is open.
    agent_auth: Option<AgentAuth>,
    /// The store follower's state, when a store is open.
    sync: Option<Arc<SyncState>>,
    /// x402 payment past a used-up quota, when configured.
    x402: Option<X402>,
    /// Per-route and per-tier meters.
    meters: Meters,
    /// The last upstream health check passed (always true without one).
    upstream_healthy: Arc<AtomicBool>,
    /// Tasks that live as long as the generation: the store follower, the trusted
    /// issuers' key refreshers.
    background: Vec<JoinHandle<()>>,
}

impl Drop for Generation {
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
    /// The upstream's TLS settings cannot be used.
    #[error("upstream TLS: {0}")]
    UpstreamTls(#[from] crate::tls::TlsError),
    /// A reload needs the store's keys before it can serve, and the store did not
    /// give them.
    #[error("the credential store did not answer; the running config stays")]
    StoreUnavailable,
}

/// How a request was answered, for its metrics and access log line.
#[derive(Debug, Default)]
struct Trace {
    meter: MeterId,
    upstream: Option<Duration>,
    /// Who it was, when the access log wants to say.
    principal: Option<Principal>,
}

/// A request that passed every check.
#[derive(Debug)]
pub struct Grant<'c> {
    /// The route it matched.
    pub route: &'c Route,
    /// Who it is; `None` on public routes, where credentials are not looked at.
    pub principal: Option<Principal>,
}

/// A request that did not pass, and the route it matched, if any (whose challenges
/// the answer carries).
#[derive(Debug)]
pub struct Refusal<'c> {
    /// Why.
    pub rejection: Rejection,
    /// The matched route.
    pub route: Option<&'c Route>,
}

impl From<Rejection> for Refusal<'_> {
    fn from(rejection: Rejection) -> Self {
        Refusal {
            rejection,
            route: None,
        }
    }
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
        if let Some(store) = &store {
            store.observe(&metrics);
            // Quota usage is read before the first request: a restart must not give
            // a used-up quota back.
            let read =
                tokio::time::timeout(PRELOAD, limits::read_quotas(limiter.quotas(), store, 0))
                    .await;
            let since = match read {
                Ok(Ok(clock)) => clock,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "could not read quota usage; counting from zero until the store answers");
                    0
                }
                Err(_) => 0,
            };
            background.push(tokio::spawn(limits::sync_quotas_forever(
                limiter.clone(),
                store.clone(),
                config.limits.quota_flush,
                since,
            )));
        }
        let shared = Arc::new(Shared {
            limiter,
            store,
            metrics,
            draining: AtomicBool::new(false),
            background,
            unmetered: limits::LimitSet::default(),
        });
        let generation = Generation::build(config, &shared, None).await?;
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
        let generation = Generation::build(config, &self.shared, Some(&previous)).await?;
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
        if let Some(store) = &self.shared.store {
            limits::flush_quotas(self.shared.limiter.quotas(), store).await;
        }
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
        if !generation.is_loaded() {
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
        generation.access_log(&method, conn, &trace, response.status(), code, elapsed);
        response
    }
}

/// How often the upstream's health is checked.
const HEALTH_EVERY: Duration = Duration::from_secs(5);

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

/// How long a start or reload waits for the store before going on without it
/// (start) or giving up (reload).
const PRELOAD: Duration = Duration::from_secs(5);

impl Generation {
    /// Builds a generation: renders the documents, loads the config's static keys
    /// into a new table and the signing keys (generating a first one in a managed
    /// directory), and starts fetching the trusted issuers' keys. With a store, the
    /// lifecycle endpoints are served and a follower keeps the key table and the
    /// token deny-list in step with the store. `previous` is the generation being
    /// replaced, whose carried-over state this one continues.
    async fn build(
        config: Config,
        shared: &Arc<Shared>,
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
            Some(match &settings.signing {
                SigningSource::Files(files) => SigningKeys::from_files(files)?,
                SigningSource::Dir(dir) => {
                    SigningKeys::from_dir(dir, settings.algorithm, ttl, unix_now())?
                }
            })
        } else {
            None
        };
        let metrics = &shared.metrics;
        let client = tokens::remote::https_client();
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
        let mut tokens = Tokens::new(&config, own, &issuers, compiler.clone(), keys.clone());
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
        let mut generation = Generation {
            x402,
            shared: shared.clone(),
            documents: Documents::build(&config),
            upstream: Upstream::new(&config.upstream)?,
            consumed: config.credentials.consumed_headers().cloned().collect(),
            consumed_paid: config
                .credentials
                .consumed_headers()
                .cloned()
                .chain(x402::PAYMENT_HEADERS)
                .collect(),
            config: Arc::new(config),
            keys,
            tokens,
            oauth,
            meters,
            upstream_healthy: Arc::new(AtomicBool::new(true)),
            agent_auth: None,
            sync: None,
            background: Vec::new(),
        };
        match &shared.store {
            Some(store) => {
                generation
                    .follow(store.clone(), compiler, assertions, previous)
                    .await?;
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
        if generation.config.upstream.health_check != HealthCheck::None {
            generation.upstream_healthy.store(
                generation
                    .upstream
                    .probe(&generation.config.upstream.health_check)
                    .await,
                Ordering::Release,
            );
            background.push(tokio::spawn(check_upstream_forever(
                generation.config.clone(),
                generation.upstream_healthy.clone(),
            )));
        }
        generation.background.extend(background);
        Ok(generation)
    }

    async fn follow(
        &mut self,
        store: Store,
        compiler: Arc<Compiler>,
        assertions: Arc<AssertionVerifier>,
        previous: Option<&Generation>,
    ) -> Result<(), StartError> {
        let preload =
            tokio::time::timeout(PRELOAD, sync::load_all(&store, &self.keys, &compiler)).await;
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
        let config = &self.config;
        let notices = match &store {
            Store::Postgres(postgres) => Some(postgres.listen()),
            Store::Sqlite(_) => None,
        };
        let resync = match &config.lifecycle.store {
            crate::store::StoreSettings::Sqlite { resync, .. }
            | crate::store::StoreSettings::Postgres { resync, .. } => *resync,
            crate::store::StoreSettings::None => Duration::from_secs(10),
        };
        let state = Arc::new(SyncState::default());
        let follower = sync::spawn_follower(Follower {
            store: store.clone(),
            table: self.keys.clone(),
            compiler: compiler.clone(),
            resync,
            notices,
            state: state.clone(),
            loaded_at,
            tokens: self.tokens.clone(),
        });
        self.agent_auth = Some(AgentAuth::new(
            config,
            store,
            self.keys.clone(),
            compiler,
            assertions,
            self.tokens.clone(),
            previous.and_then(|p| p.agent_auth.as_ref()),
        ));
        self.sync = Some(state);
        self.background.push(follower);
        Ok(())
    }

    /// True when the store's keys are loaded (always true without a store).
    fn is_loaded(&self) -> bool {
        self.sync.as_ref().is_none_or(|state| state.is_loaded())
    }

    /// The config.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The discovery documents.
    #[must_use]
    pub fn documents(&self) -> &Documents {
        &self.documents
    }

    /// The key table.
    #[must_use]
    pub fn keys(&self) -> &KeyTable {
        &self.keys
    }

    /// True when the access log is on and its level passes the subscriber's most
    /// verbose filter (one atomic load: nothing is gathered for a line that would
    /// be dropped).
    fn logs_access(&self) -> bool {
        self.config
            .log
            .access
            .is_some_and(|level| tracing::level_filters::LevelFilter::current() >= level)
    }

    /// Writes the access log line of a request, when the operator asked for one.
    fn access_log(
        &self,
        method: &http::Method,
        conn: &ClientConn,
        trace: &Trace,
        status: http::StatusCode,
        code: Option<&'static str>,
        elapsed: Duration,
    ) {
        let Some(level) = self.config.log.access.filter(|_| self.logs_access()) else {
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
                        route = self.meters.label(trace.meter),
                        status = status.as_u16(),
                        decision = metrics::decision(status, code).label(),
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

    /// Answers one request, noting in `trace` how. The rare branches (the OAuth and
    /// lifecycle endpoints, payments, a JWKS refetch) are boxed: their futures would
    /// otherwise make this one several kilobytes, copied on every request.
    async fn handle(
        &self,
        request: Request<Incoming>,
        conn: &ClientConn,
        trace: &mut Trace,
    ) -> Response<Body> {
        let config = &*self.config;
        let host = config.discovery.host_of(&request);
        let respond = |refusal: Refusal<'_>| {
            tracing::debug!(rejection = ?refusal.rejection, path = request.uri().path(), "rejected");
            let challenges = refusal.route.and_then(|r| r.challenges(host));
            responder(config, host).respond(refusal.rejection, challenges)
        };
        if let Err(oversize) = config.server.request_limits.check(&request) {
            return respond(Rejection::TooLarge(oversize).into());
        }
        if let Some(ambiguity) = crate::proxy::headers::ambiguity(&request) {
            return respond(Rejection::Ambiguous(ambiguity).into());
        }
        let path = match normalize_path(request.uri().path()) {
            Ok(path) => path,
            Err(e) => return respond(Rejection::InvalidPath(e).into()),
        };
        if let Some((endpoint, answer)) = self.local(&request, &path, host) {
            trace.meter = MeterId::Local(endpoint);
            return match answer {
                Local::Ready(Ok(response)) => response,
                Local::Ready(Err(rejection)) => respond(rejection.into()),
                Local::Token => {
                    let caller = Caller {
                        peer: config
                            .limits
                            .client_address(conn.peer.ip(), request.headers()),
                        origin: origin(config, host),
                    };
                    let answer = Box::pin(self.oauth.token(config, request, caller)).await;
                    self.finish(answer, host)
                }
                Local::Revoke => {
                    let revoke = self.oauth.revoke(config, request, self.agent_auth.as_ref());
                    self.finish(Box::pin(revoke).await, host)
                }
                Local::Lifecycle(endpoint) => {
                    Box::pin(self.lifecycle(endpoint, request, conn, host)).await
                }
            };
        }
        let grant = match admit(config, &self.keys, &self.tokens, &request, &path) {
            Ok(grant) => grant,
            Err(refusal)
                if matches!(
                    refusal.rejection,
                    Rejection::InvalidToken(TokenError::UnknownKey)
                ) =>
            {
                // A trusted issuer may have rotated its keys: refetch them (throttled)
                // and try once more.
                let token = match config.credentials.extract(request.headers()) {
                    Ok(Presented::Token(token)) => Some(token),
                    _ => None,
                };
                let refetched = match token {
                    Some(token) => Box::pin(self.tokens.refetch_keys_for(token)).await,
                    None => false,
                };
                let again = if refetched {
                    admit(config, &self.keys, &self.tokens, &request, &path)
                } else {
                    Err(refusal)
                };
                match again {
                    Ok(grant) => grant,
                    Err(mut refusal) => {
                        let unknown_key = matches!(
                            refusal.rejection,
                            Rejection::InvalidToken(TokenError::UnknownKey)
                        );
                        if unknown_key && token.is_some_and(|t| self.tokens.issuer_keys_missing(t))
                        {
                            refusal.rejection = Rejection::IssuerKeysUnavailable;
                        }
                        trace.meter = meter_of(refusal.route);
                        return respond(refusal);
                    }
                }
            }
            Err(refusal) => {
                trace.meter = meter_of(refusal.route);
                return respond(refusal);
            }
        };
        trace.meter = MeterId::Route(grant.route.index);
        if self.logs_access() {
            trace.principal.clone_from(&grant.principal);
        }
        let unix = unix_now();
        let (subject, verdict) = self.limit(&grant, &request, conn, unix);
        let limited = |mut response: Response<Body>| {
            limits::headers::write(
                response.headers_mut(),
                &verdict,
                config.limits.headers,
                unix,
            );
            response
        };
        let payment = match (verdict.exceeded, &self.x402) {
            (None, _) => None,
            (Some(Exceeded::Quota), Some(x402)) => {
                self.meters.quota_exceeded(usize::from(tier_of(&grant).0));
                match Box::pin(self.pay(x402, &request, host, unix)).await {
                    Ok(paid) => Some(paid),
                    Err(response) => return limited(response),
                }
            }
            (Some(exceeded), _) => {
                let rejection = match exceeded {
                    Exceeded::Rate { retry_after } => {
                        self.meters.rate_limited(usize::from(tier_of(&grant).0));
                        Rejection::RateLimited { retry_after }
                    }
                    Exceeded::Quota => {
                        self.meters.quota_exceeded(usize::from(tier_of(&grant).0));
                        Rejection::QuotaExceeded
                    }
                };
                return limited(respond(Refusal {
                    rejection,
                    route: Some(grant.route),
                }));
            }
        };
        let identity = grant.principal.as_ref().map(|p| self.identity(p));
        let rewritten = match &path {
            Cow::Owned(path) => Some(path.clone()),
            Cow::Borrowed(_) => None,
        };
        let outbound = Outbound {
            path: rewritten.as_deref(),
            identity,
            consumed: match (grant.principal.is_some(), self.x402.is_some()) {
                (true, true) => &self.consumed_paid,
                (true, false) => &self.consumed,
                (false, true) => &x402::PAYMENT_HEADERS,
                (false, false) => &[],
            },
            body_limit: config.server.request_limits.body,
        };
        let forwarded = Instant::now();
        let mut response = match self.upstream.forward(request, outbound, conn).await {
            Ok(response) => response,
            Err(rejection) => responder(config, host).respond(rejection, None),
        };
        trace.upstream = Some(forwarded.elapsed());
        if let (Some((payment, resource)), Some(x402)) = (payment, &self.x402) {
            let settle = self.settle(x402, &payment, &resource, &subject, response, host, unix);
            response = Box::pin(settle).await;
        }
        limited(response)
    }

    /// Settles the payment of a request that was served; a payment that does not
    /// settle is not served (the upstream's answer is dropped), and a request the
    /// upstream failed (status 400 or above) is not charged.
    #[expect(
        clippy::too_many_arguments,
        reason = "the one step that needs them all"
    )]
    async fn settle(
        &self,
        x402: &X402,
        payment: &Payment,
        resource: &str,
        subject: &Subject<'_>,
        mut response: Response<Body>,
        host: HostId,
        unix: i64,
    ) -> Response<Body> {
        if response.status().as_u16() >= 400 {
            return response;
        }
        let metrics = self.meters.metrics();
        match x402.settle(payment).await {
            Ok((name, value)) => {
                metrics.payment(PaymentEvent::Settled);
                response.headers_mut().insert(name, value);
                let extra = x402.payments().requests_per_payment - 1;
                if let (Some(quota), true) = (&subject.limits.quota, extra > 0) {
                    self.shared
                        .limiter
                        .quotas()
                        .credit(subject, quota, extra, unix);
                }
                response
            }
            Err(refused) => {
                metrics.payment(PaymentEvent::SettleFailed);
                tracing::debug!(?refused, "an x402 payment did not settle");
                self.refuse_payment(x402, host, resource, &refused)
            }
        }
    }

    /// Reads and verifies the x402 payment of a request over its quota; the
    /// answer to send instead when there is none or it does not verify.
    async fn pay<B>(
        &self,
        x402: &X402,
        request: &Request<B>,
        host: HostId,
        unix: i64,
    ) -> Result<(Payment, String), Response<Body>> {
        let resource = resource_of(&self.config, host, request.uri().path());
        let refused = match x402.read(request.headers(), &resource, unix) {
            Ok(Some(payment)) => match x402.verify(&payment, unix).await {
                Ok(()) => {
                    self.meters.metrics().payment(PaymentEvent::Verified);
                    return Ok((payment, resource));
                }
                Err(refused) => refused,
            },
            Ok(None) => Refused {
                error: PaymentError::Required,
                reason: None,
            },
            Err(error) => Refused {
                error,
                reason: None,
            },
        };
        self.meters.metrics().payment(match refused.error {
            PaymentError::Required => PaymentEvent::Required,
            PaymentError::Malformed | PaymentError::Rejected => PaymentEvent::Rejected,
            PaymentError::Unavailable => PaymentEvent::Unavailable,
        });
        Err(self.refuse_payment(x402, host, &resource, &refused))
    }

    /// The answer to a payment that is missing or did not go through: the
    /// requirements again with a 402, or a 400 / 503 envelope.
    fn refuse_payment(
        &self,
        x402: &X402,
        host: HostId,
        resource: &str,
        refused: &Refused,
    ) -> Response<Body> {
        let responder = responder(&self.config, host);
        let reason = refused.reason.as_deref();
        match refused.error {
            PaymentError::Required | PaymentError::Rejected => {
                let offer = x402.offer(
                    resource,
                    reason.unwrap_or("the request quota of this period is used up"),
                );
                responder.respond_payment(
                    refused.error,
                    Some((&offer.header, &offer.accepts_v1)),
                    reason,
                )
            }
            PaymentError::Malformed | PaymentError::Unavailable => {
                responder.respond_payment(refused.error, None, reason)
            }
        }
    }

    /// Counts a granted request against its subject's rate windows and quota.
    fn limit<'g, B>(
        &'g self,
        grant: &'g Grant<'_>,
        request: &Request<B>,
        conn: &ClientConn,
        unix: i64,
    ) -> (Subject<'g>, Verdict<'g>) {
        let config = &*self.config;
        let address = config
            .limits
            .client_address(conn.peer.ip(), request.headers());
        if !grant.route.metered {
            // Counted against nothing: the limiter answers at once, and no
            // RateLimit headers are written.
            let subject = Subject::of(None, address, &self.shared.unmetered);
            return (subject, self.shared.limiter.check(&subject, unix));
        }
        let tier_limits = &config.tiers.get(tier_of(grant)).limits;
        let subject = Subject::of(grant.principal.as_ref(), address, tier_limits);
        let verdict = self.shared.limiter.check(&subject, unix);
        (subject, verdict)
    }

    /// Answers a credential lifecycle endpoint.
    async fn lifecycle(
        &self,
        endpoint: Lifecycle,
        request: Request<Incoming>,
        conn: &ClientConn,
        host: HostId,
    ) -> Response<Body> {
        let config = &*self.config;
        let answer: Answer = match (endpoint, &self.agent_auth) {
            (Lifecycle::Scopes, _) => agent_auth::keys::scopes(config, request.method()),
            (_, None) => Err(Failure::from(LifecycleError::StoreUnavailable)),
            (Lifecycle::Register, Some(a)) => {
                let address = config
                    .limits
                    .client_address(conn.peer.ip(), request.headers());
                a.register(config, request, address, origin(config, host))
                    .await
            }
            (Lifecycle::Claim, Some(a)) if request.method() == http::Method::POST => {
                a.claim(config, request).await
            }
            (Lifecycle::Claim, Some(a)) => a.claim_page(config, &request).await,
            (Lifecycle::AgentRevoke, Some(a)) => a.agent_revoke(config, request).await,
            (Lifecycle::Keys, Some(a)) => {
                let address = config
                    .limits
                    .client_address(conn.peer.ip(), request.headers());
                a.keys(config, request, address).await
            }
            (Lifecycle::Key { rotate }, Some(a)) => {
                let path = request.uri().path().to_owned();
                let id = key_id(&path, &config.endpoints.keys).unwrap_or_default();
                a.key(config, request, id, rotate).await
            }
        };
        answer.unwrap_or_else(|failure| {
            tracing::debug!(rejection = ?failure.rejection, "lifecycle request refused");
            responder(config, host).respond_with(failure.rejection, None, failure.detail.as_deref())
        })
    }

    fn finish(&self, answer: Result<Response<Body>, Rejection>, host: HostId) -> Response<Body> {
        answer.unwrap_or_else(|rejection| responder(&self.config, host).respond(rejection, None))
    }

    /// The proxy's own endpoints, which no route can shadow.
    fn local<B>(
        &self,
        request: &Request<B>,
        path: &str,
        host: HostId,
    ) -> Option<(LocalEndpoint, Local)> {
        use LocalEndpoint as E;
        if path == self.config.endpoints.jwks {
            if let Some(jwks) = self.tokens.jwks() {
                return Some((
                    E::Discovery,
                    Local::Ready(discovery::serve_jwks(jwks, request.method())),
                ));
            }
        }
        if let Some(doc) = self.documents.find(path, host) {
            return Some((
                E::Discovery,
                Local::Ready(
                    self.documents
                        .serve(doc, request.method(), request.headers()),
                ),
            ));
        }
        let endpoints = &self.config.endpoints;
        if path == endpoints.token {
            Some((E::Token, Local::Token))
        } else if path == endpoints.revoke {
            Some((E::Revoke, Local::Revoke))
        } else if path == endpoints.authorize {
            Some((E::Authorize, Local::Ready(oauth::authorize(request))))
        } else if path == endpoints.scopes {
            Some((E::Lifecycle, Local::Lifecycle(Lifecycle::Scopes)))
        } else if !self.config.lifecycle.issues_keys() {
            None
        } else if path == endpoints.register && self.config.lifecycle.registers() {
            Some((E::Lifecycle, Local::Lifecycle(Lifecycle::Register)))
        } else if path == endpoints.claim && self.config.lifecycle.registers() {
            Some((E::Lifecycle, Local::Lifecycle(Lifecycle::Claim)))
        } else if path == endpoints.agent_revoke && self.config.lifecycle.self_service() {
            Some((E::Lifecycle, Local::Lifecycle(Lifecycle::AgentRevoke)))
        } else if !self.config.lifecycle.keys.enabled {
            None
        } else if path == endpoints.keys {
            Some((E::Lifecycle, Local::Lifecycle(Lifecycle::Keys)))
        } else if let Some(rest) = path
            .strip_prefix(endpoints.keys.as_str())
            .and_then(|r| r.strip_prefix('/'))
        {
            match rest.split_once('/') {
                None if !rest.is_empty() => Some((
                    E::Lifecycle,
                    Local::Lifecycle(Lifecycle::Key { rotate: false }),
                )),
                Some((id, "rotate")) if !id.is_empty() => Some((
                    E::Lifecycle,
                    Local::Lifecycle(Lifecycle::Key { rotate: true }),
                )),
                _ => None,
            }
        } else {
            None
        }
    }

    fn identity(&self, principal: &Principal) -> Identity {
        let tiers = &self.config.tiers;
        match principal {
            Principal::Key(entry) => Identity {
                principal: entry.principal_header.clone(),
                scopes: entry.profile.scopes_header.clone(),
                tier: tiers.get(entry.tier()).header.clone(),
            },
            Principal::Token(grant) => Identity {
                principal: grant.principal_header.clone(),
                scopes: grant.scopes_header.clone(),
                tier: tiers.get(grant.tier).header.clone(),
            },
            Principal::Anonymous(id) => {
                let principal = match id {
                    Some(id) => HeaderValue::from_str(&format!("anonymous:{:016x}", id.0))
                        .unwrap_or_else(|_| HeaderValue::from_static("anonymous")),
                    None => HeaderValue::from_static("anonymous"),
                };
                let anonymous = tiers.get(TierId::ANONYMOUS);
                Identity {
                    principal,
                    scopes: anonymous.scopes_header.clone(),
                    tier: anonymous.header.clone(),
                }
            }
        }
    }
}

/// What a local endpoint needs to answer.
enum Local {
    Ready(Result<Response<Body>, Rejection>),
    Token,
    Revoke,
    Lifecycle(Lifecycle),
}

/// The credential lifecycle endpoints.
#[derive(Clone, Copy)]
enum Lifecycle {
    Register,
    Claim,
    AgentRevoke,
    Keys,
    Key { rotate: bool },
    Scopes,
}

/// The meter of a refused request: its route's, or the unmatched one.
fn meter_of(route: Option<&Route>) -> MeterId {
    route.map_or(MeterId::Local(LocalEndpoint::Unmatched), |r| {
        MeterId::Route(r.index)
    })
}

/// The tier a granted request is charged to.
fn tier_of(grant: &Grant<'_>) -> TierId {
    grant
        .principal
        .as_ref()
        .map_or(TierId::ANONYMOUS, Principal::tier)
}

/// The `{id}` of `<keys>/{id}` or `<keys>/{id}/rotate`.
fn key_id<'p>(path: &'p str, keys: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(keys)?.strip_prefix('/')?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// The URL of the resource a request asked for, as payment requirements name it.
fn resource_of(config: &Config, host: HostId, path: &str) -> String {
    format!("{}{path}", origin(config, host))
}

/// The public origin a request addressed.
fn origin(config: &Config, host: HostId) -> &str {
    let origins = &config.discovery.origins;
    &origins[host.0.min(origins.len() - 1)]
}

fn responder(config: &Config, host: HostId) -> &crate::rejection::Responder {
    // There is one responder per origin; index 0 always exists.
    config
        .responders
        .get(host.0)
        .unwrap_or(&config.responders[0])
}

/// The admission decision for a request whose path is already normalised, over plain
/// data: what the benchmarks time.
pub fn admit<'c, B>(
    config: &'c Config,
    keys: &KeyTable,
    tokens: &Tokens,
    request: &Request<B>,
    path: &str,
) -> Result<Grant<'c>, Refusal<'c>> {
    let route = config.policy.find(request.method(), path)?;
    if route.access == Access::Public {
        return Ok(Grant {
            route,
            principal: None,
        });
    }
    let refuse = |rejection| Refusal {
        rejection,
        route: Some(route),
    };
    let presented = config
        .credentials
        .extract(request.headers())
        .map_err(refuse)?;
    let principal = config
        .credentials
        .authenticate(presented, keys, Some(tokens))
        .map_err(refuse)?;
    route.authorize(&principal, &config.tiers).map_err(refuse)?;
    Ok(Grant {
        route,
        principal: Some(principal),
    })
}
