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

use http::{HeaderName, HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::agent_auth::{self, AgentAuth, Answer, Failure};
use crate::assertion::AssertionVerifier;
use crate::body::Body;
use crate::config::{Config, SigningSource};
use crate::credentials::{KeyTable, Presented, Principal};
use crate::discovery::{self, Documents};
use crate::limits::x402::{self, Payment, Refused, X402};
use crate::limits::{self, Exceeded, Limiter, Subject, Verdict};
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

/// Everything a request needs: the config, its documents, the key table, the
/// token verifier and the upstream.
#[derive(Debug)]
pub struct Gateway {
    config: Arc<Config>,
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
    /// Rate buckets and quota counters.
    limiter: Arc<Limiter>,
    /// The store quota usage is written to, when one is open.
    store: Option<Store>,
    /// x402 payment past a used-up quota, when configured.
    x402: Option<X402>,
    /// Tasks that live as long as the gateway: the store follower, the trusted
    /// issuers' key refreshers.
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
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
    /// Builds the gateway: renders the documents, loads the config's static keys
    /// into the table and the signing keys (generating a first one in a managed
    /// directory), and starts fetching the trusted issuers' keys. With a store, the
    /// lifecycle endpoints are served and a follower keeps the key table and the
    /// token deny-list in step with the store. The store's keys are loaded before
    /// this returns when the store answers within a few seconds (so a restarted
    /// proxy never refuses a key it acknowledged); otherwise the follower keeps
    /// trying and `/readyz` says so. Must run inside a Tokio runtime.
    pub async fn start(config: Config, store: Option<Store>) -> Result<Gateway, KeyError> {
        let keys = Arc::new(KeyTable::default());
        for (hash, entry) in &config.keys {
            keys.insert_static(*hash, entry.clone());
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
        let client = tokens::remote::https_client();
        let issuers = tokens::issuers(&config.trusted_issuers, &client);
        let mut background: Vec<_> = issuers
            .iter()
            .map(|issuer| tokio::spawn(issuer.keys.clone().refresh_forever()))
            .collect();
        let tokens = Arc::new(Tokens::new(
            &config,
            own,
            &issuers,
            compiler.clone(),
            keys.clone(),
        ));
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
            store.clone(),
        );
        let limiter = Arc::new(Limiter::new(config.limits.max_principals));
        background.push(tokio::spawn(limits::sweep_forever(
            limiter.clone(),
            std::time::Duration::from_secs(10),
        )));
        let mut gateway = Gateway {
            x402: config.limits.payments.clone().map(X402::new),
            limiter,
            store: store.clone(),
            documents: Documents::build(&config),
            upstream: Upstream::new(&config.upstream),
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
            agent_auth: None,
            sync: None,
            background: Vec::new(),
        };
        match store {
            Some(store) => gateway.follow(store, compiler, assertions).await,
            None => {
                let tokens = gateway.tokens.clone();
                background.push(tokio::spawn(async move {
                    let mut sweep = tokio::time::interval(std::time::Duration::from_secs(60));
                    loop {
                        sweep.tick().await;
                        tokens.sweep(unix_now());
                    }
                }));
            }
        }
        gateway.background.extend(background);
        Ok(gateway)
    }

    async fn follow(
        &mut self,
        store: Store,
        compiler: Arc<Compiler>,
        assertions: Arc<AssertionVerifier>,
    ) {
        let preload = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            sync::load_all(&store, &self.keys, &compiler),
        )
        .await;
        let loaded_at = match preload {
            Ok(Ok(clock)) => Some(clock),
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
            crate::store::StoreSettings::None => std::time::Duration::from_secs(10),
        };
        let state = Arc::new(SyncState::default());
        // Quota usage is read before the first request too: a restart must not give
        // a used-up quota back.
        let quotas_read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            limits::read_quotas(self.limiter.quotas(), &store, 0),
        )
        .await;
        let since = match quotas_read {
            Ok(Ok(clock)) => clock,
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not read quota usage; counting from zero until the store answers");
                0
            }
            Err(_) => 0,
        };
        self.background
            .push(tokio::spawn(limits::sync_quotas_forever(
                self.limiter.clone(),
                store.clone(),
                config.limits.quota_flush,
                since,
            )));
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
        ));
        self.sync = Some(state);
        self.background.push(follower);
    }

    /// Writes what is only in memory to the store (quota usage); called once the
    /// listeners have drained, so that a restart loses nothing.
    pub async fn flush(&self) {
        if let Some(store) = &self.store {
            limits::flush_quotas(self.limiter.quotas(), store).await;
        }
    }

    /// True when the proxy can verify every key it should: the store's keys are
    /// loaded (always true without a store).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.sync.as_ref().is_none_or(|state| state.is_loaded())
    }

    /// The active config.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The discovery documents of the active config.
    #[must_use]
    pub fn documents(&self) -> &Documents {
        &self.documents
    }

    /// The key table.
    #[must_use]
    pub fn keys(&self) -> &KeyTable {
        &self.keys
    }

    /// Answers one request.
    pub async fn handle(&self, request: Request<Incoming>, conn: &ClientConn) -> Response<Body> {
        let config = &*self.config;
        let host = config.discovery.host_of(&request);
        let respond = |refusal: Refusal<'_>| {
            tracing::debug!(rejection = ?refusal.rejection, path = request.uri().path(), "rejected");
            let challenges = refusal.route.and_then(|r| r.challenges(host));
            responder(config, host).respond(refusal.rejection, challenges)
        };
        let path = match normalize_path(request.uri().path()) {
            Ok(path) => path,
            Err(e) => return respond(Rejection::InvalidPath(e).into()),
        };
        if let Some(answer) = self.local(&request, &path, host) {
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
                    self.finish(self.oauth.token(config, request, caller).await, host)
                }
                Local::Revoke => self.finish(
                    self.oauth
                        .revoke(config, request, self.agent_auth.as_ref())
                        .await,
                    host,
                ),
                Local::Lifecycle(endpoint) => self.lifecycle(endpoint, request, conn, host).await,
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
                    Some(token) => self.tokens.refetch_keys_for(token).await,
                    None => false,
                };
                let again = if refetched {
                    admit(config, &self.keys, &self.tokens, &request, &path)
                } else {
                    Err(refusal)
                };
                match again {
                    Ok(grant) => grant,
                    Err(refusal) => return respond(refusal),
                }
            }
            Err(refusal) => return respond(refusal),
        };
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
                match self.pay(x402, &request, host, unix).await {
                    Ok(paid) => Some(paid),
                    Err(response) => return limited(response),
                }
            }
            (Some(exceeded), _) => {
                let rejection = match exceeded {
                    Exceeded::Rate { retry_after } => Rejection::RateLimited { retry_after },
                    Exceeded::Quota => Rejection::QuotaExceeded,
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
        };
        let mut response = match self.upstream.forward(request, outbound, conn).await {
            Ok(response) => response,
            Err(rejection) => responder(config, host).respond(rejection, None),
        };
        if let (Some((payment, resource)), Some(x402)) = (payment, &self.x402) {
            response = self
                .settle(x402, &payment, &resource, &subject, response, host, unix)
                .await;
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
        match x402.settle(payment).await {
            Ok((name, value)) => {
                response.headers_mut().insert(name, value);
                let extra = x402.payments().requests_per_payment - 1;
                if let (Some(quota), true) = (&subject.limits.quota, extra > 0) {
                    self.limiter.quotas().credit(subject, quota, extra, unix);
                }
                response
            }
            Err(refused) => {
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
                Ok(()) => return Ok((payment, resource)),
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
        let tier = grant
            .principal
            .as_ref()
            .map_or(TierId::ANONYMOUS, Principal::tier);
        let tier_limits = &config.tiers.get(tier).limits;
        let address = config
            .limits
            .client_address(conn.peer.ip(), request.headers());
        let subject = Subject::of(grant.principal.as_ref(), address, tier_limits);
        let verdict = self.limiter.check(&subject, unix);
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
            (Lifecycle::Keys, Some(a)) => a.keys(config, request).await,
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
    fn local<B>(&self, request: &Request<B>, path: &str, host: HostId) -> Option<Local> {
        if path == discovery::JWKS {
            if let Some(jwks) = self.tokens.jwks() {
                return Some(Local::Ready(discovery::serve_jwks(jwks, request.method())));
            }
        }
        if let Some(doc) = self.documents.find(path, host) {
            return Some(Local::Ready(self.documents.serve(
                doc,
                request.method(),
                request.headers(),
            )));
        }
        let endpoints = &self.config.endpoints;
        if path == endpoints.token {
            Some(Local::Token)
        } else if path == endpoints.revoke {
            Some(Local::Revoke)
        } else if path == endpoints.authorize {
            Some(Local::Ready(oauth::authorize(request)))
        } else if path == endpoints.scopes {
            Some(Local::Lifecycle(Lifecycle::Scopes))
        } else if !self.config.lifecycle.issues_keys() {
            None
        } else if path == endpoints.register {
            Some(Local::Lifecycle(Lifecycle::Register))
        } else if path == endpoints.claim {
            Some(Local::Lifecycle(Lifecycle::Claim))
        } else if path == endpoints.agent_revoke {
            Some(Local::Lifecycle(Lifecycle::AgentRevoke))
        } else if !self.config.lifecycle.keys.enabled {
            None
        } else if path == endpoints.keys {
            Some(Local::Lifecycle(Lifecycle::Keys))
        } else if let Some(rest) = path
            .strip_prefix(endpoints.keys.as_str())
            .and_then(|r| r.strip_prefix('/'))
        {
            match rest.split_once('/') {
                None if !rest.is_empty() => {
                    Some(Local::Lifecycle(Lifecycle::Key { rotate: false }))
                }
                Some((id, "rotate")) if !id.is_empty() => {
                    Some(Local::Lifecycle(Lifecycle::Key { rotate: true }))
                }
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
                scopes: entry.scopes_header.clone(),
                tier: tiers.get(entry.tier).header.clone(),
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
