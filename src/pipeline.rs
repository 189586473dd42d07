//! The request pipeline: the only place that knows the order of the steps.
//!
//! ```text
//! size, framing ─► path ─► local endpoint? ─► route ─► credential ─► authorize
//! 413/414/431/400   400    documents, OAuth,  404/405   400/401/503    401/403
//!                          lifecycle
//!   ─► rate limits, quota ─► payment ─► forward ─► settle ─► RateLimit headers
//!          429 / 402          402/400/503  502/504   402/503
//! ```
//!
//! Each step is a plain function returning its own error, turned into a
//! [`Rejection`]; the first one short-circuits and is answered by the origin's
//! [`Responder`], with the challenges of the route the request matched. A
//! [`Generation`] is everything one config built; [`gateway`](crate::gateway) builds
//! it and swaps it on reload.

mod local;
mod payment;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use http::{HeaderName, Request, Response};
use hyper::body::Incoming;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::agent_auth::AgentAuth;
use crate::body::Body;
use crate::clock::unix_now;
use crate::config::Config;
use crate::credentials::{KeyTable, Presented, Principal};
use crate::discovery::Documents;
use crate::limits::global::Global;
use crate::limits::x402::{self, X402};
use crate::limits::{self, Exceeded, LimitSet, Limiter, Subject};
use crate::login::Login;
use crate::metrics::{MeterId, Meters};
use crate::oauth::{Caller, OAuth};
use crate::policy::{Access, HostId, Route, normalize_path};
use crate::proxy::{ClientConn, Outbound, Upstream};
use crate::rejection::{Rejection, Responder};
use crate::store::sync::SyncState;
use crate::tier::TierId;
use crate::tokens::{TokenError, Tokens};
use local::Local;
use payment::Payments;

/// Everything built from one config: its documents, the key table, the token
/// verifier, the upstream, the endpoints. A request uses the generation that was
/// current when it arrived until it is answered.
#[derive(Debug)]
pub struct Generation {
    pub(crate) config: Arc<Config>,
    pub(crate) documents: Documents,
    /// One per public origin (indexed by [`HostId`]); index 0 always exists.
    pub(crate) responders: Vec<Responder>,
    pub(crate) keys: Arc<KeyTable>,
    pub(crate) tokens: Arc<Tokens>,
    pub(crate) upstream: Upstream,
    /// Credential headers removed from requests the proxy authenticates.
    pub(crate) consumed: Vec<HeaderName>,
    /// The same, and the payment headers, when payments are configured: a signed
    /// transfer is the proxy's to settle, never the upstream's to submit.
    pub(crate) consumed_paid: Vec<HeaderName>,
    /// The token and revocation endpoints.
    pub(crate) oauth: OAuth,
    /// The credential lifecycle endpoints, when a store is open.
    pub(crate) agent_auth: Option<AgentAuth>,
    /// A person's sign-in, when `login.providers` has any.
    pub(crate) login: Option<Arc<Login>>,
    /// x402 payment past a used-up quota, when configured.
    pub(crate) x402: Option<X402>,
    /// Rate buckets and quota counters, shared by every generation.
    pub(crate) limiter: Arc<Limiter>,
    /// The fleet-wide limits, when configured; shared by every generation.
    pub(crate) global: Option<Arc<Global>>,
    /// The limits of routes that are not metered: none.
    pub(crate) unmetered: LimitSet,
    /// Per-route and per-tier meters.
    pub(crate) meters: Meters,
    /// The store follower's state, when a store is open.
    pub(crate) sync: Option<Arc<SyncState>>,
    /// The last upstream health check passed (always true without one).
    pub(crate) upstream_healthy: Arc<AtomicBool>,
    /// Tasks that live as long as the generation: the store follower, the trusted
    /// issuers' key refreshers, the upstream health check.
    pub(crate) background: Vec<JoinHandle<()>>,
}

impl Drop for Generation {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
}

/// How a request was answered, for its metrics and access log line.
#[derive(Debug, Default)]
pub struct Trace {
    /// The route or local endpoint it is counted under.
    pub meter: MeterId,
    /// How long the upstream took, when it was forwarded.
    pub upstream: Option<Duration>,
    /// Who it was, when the access log wants to say.
    pub principal: Option<Principal>,
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

impl Generation {
    /// Answers one request, noting in `trace` how. The rare branches (the OAuth and
    /// lifecycle endpoints, payments, a JWKS refetch) are boxed: their futures would
    /// otherwise make this one several kilobytes, copied on every request.
    pub(crate) async fn handle(
        &self,
        request: Request<Incoming>,
        conn: &ClientConn,
        trace: &mut Trace,
    ) -> Response<Body> {
        let config = &*self.config;
        let host = config.discovery.host_of(&request);
        let responder = self.responder(host);
        let respond = |refusal: Refusal<'_>| {
            tracing::debug!(rejection = ?refusal.rejection, path = request.uri().path(), "rejected");
            let challenges = refusal.route.and_then(|r| r.challenges(host));
            responder.respond(refusal.rejection, challenges)
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
        let local = local::find(config, &self.documents, &self.tokens, &request, &path, host);
        if let Some((endpoint, answer)) = local {
            trace.meter = MeterId::Local(endpoint);
            let address = config
                .limits
                .client_address(conn.peer.ip(), request.headers());
            let finish = |answer: Result<_, Rejection>| {
                answer.unwrap_or_else(|rejection| responder.respond(rejection, None))
            };
            return match answer {
                Local::Ready(answer) => finish(answer),
                Local::Token => {
                    let origin = local::origin(config, host);
                    let caller = Caller {
                        peer: address,
                        origin,
                    };
                    let token = self
                        .oauth
                        .token(config, request, caller, self.login.as_deref());
                    finish(Box::pin(token).await)
                }
                Local::Authorize | Local::Consent => {
                    let origin = local::origin(config, host);
                    match &self.login {
                        Some(login) if matches!(answer, Local::Authorize) => {
                            let flow = self.oauth.authorize_person(config, request, login, origin);
                            Box::pin(flow).await
                        }
                        Some(login) => {
                            Box::pin(self.oauth.consent(config, request, login, origin)).await
                        }
                        None => finish(Err(Rejection::RouteNotFound)),
                    }
                }
                Local::ClientRegistration => {
                    let origin = local::origin(config, host);
                    let caller = Caller {
                        peer: address,
                        origin,
                    };
                    let registration = self.oauth.register_client(config, request, caller);
                    match Box::pin(registration).await {
                        Ok(response) => response,
                        Err((rejection, detail)) => {
                            responder.respond_with(rejection, None, detail.as_deref())
                        }
                    }
                }
                Local::Revoke => {
                    let revoke = self.oauth.revoke(config, request, self.agent_auth.as_ref());
                    finish(Box::pin(revoke).await)
                }
                Local::Lifecycle(endpoint) => {
                    let agent_auth = self.agent_auth.as_ref();
                    let origin = local::origin(config, host);
                    let answer = local::lifecycle(
                        agent_auth,
                        self.login.as_deref(),
                        config,
                        endpoint,
                        request,
                        address,
                        origin,
                        responder,
                    );
                    Box::pin(answer).await
                }
                Local::Login => match &self.login {
                    Some(login) => {
                        let origin = local::origin(config, host);
                        Box::pin(login.handle(request, origin, address, unix_now())).await
                    }
                    None => crate::web::error_page(
                        http::StatusCode::NOT_FOUND,
                        "Not found",
                        "People do not sign in here.",
                    ),
                },
            };
        }
        let grant = match self.admit_refetching(&request, &path, host).await {
            Ok(grant) => grant,
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
        let address = config
            .limits
            .client_address(conn.peer.ip(), request.headers());
        let subject = self.subject(&grant, address);
        let verdict = match (&self.global, grant.route.metered) {
            (Some(global), true) => match global.check_local(&self.limiter, &subject, unix) {
                Some(verdict) => verdict,
                None => Box::pin(global.check_remote(&self.limiter, &subject, unix)).await,
            },
            _ => self.limiter.check(&subject, unix),
        };
        let limited = |mut response: Response<Body>| {
            let styles = config.limits.headers;
            limits::headers::write(response.headers_mut(), &verdict, styles, unix);
            response
        };
        let tier = usize::from(tier_of(&grant).0);
        let payment = match (verdict.exceeded, &self.x402) {
            (None, _) => None,
            (Some(Exceeded::Quota), Some(x402)) => {
                self.meters.quota_exceeded(tier);
                let payments = self.payments(x402, responder);
                let resource = format!("{}{}", local::origin(config, host), request.uri().path());
                match Box::pin(payments.pay(&request, &resource, unix)).await {
                    Ok(payment) => Some((payments, payment, resource)),
                    Err(response) => return limited(response),
                }
            }
            (Some(exceeded), _) => {
                let rejection = match exceeded {
                    Exceeded::Rate { retry_after } => {
                        self.meters.rate_limited(tier);
                        Rejection::RateLimited { retry_after }
                    }
                    Exceeded::Quota => {
                        self.meters.quota_exceeded(tier);
                        Rejection::QuotaExceeded
                    }
                    Exceeded::Unavailable { retry_after } => {
                        Rejection::RateLimitUnavailable { retry_after }
                    }
                };
                let route = Some(grant.route);
                return limited(respond(Refusal { rejection, route }));
            }
        };
        let rewritten = match &path {
            Cow::Owned(path) => Some(path.as_str()),
            Cow::Borrowed(_) => None,
        };
        let outbound = Outbound {
            path: rewritten,
            identity: grant.principal.as_ref().map(|p| p.identity(&config.tiers)),
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
            Err(error) => responder.respond(error.into(), None),
        };
        trace.upstream = Some(forwarded.elapsed());
        if let Some((payments, payment, resource)) = payment {
            let charged = (&subject, self.limiter.quotas());
            let settle = payments.settle(&payment, &resource, charged, response, unix);
            response = Box::pin(settle).await;
        }
        limited(response)
    }

    /// [`admit`], and once more after refetching the issuer's keys when a token was
    /// signed with a key the proxy does not know (a trusted issuer may have rotated
    /// its keys; refetches are throttled). A token whose issuer's keys were never
    /// fetched is `IssuerKeysUnavailable`, not a bad token.
    async fn admit_refetching<'c>(
        &'c self,
        request: &Request<Incoming>,
        path: &str,
        host: HostId,
    ) -> Result<Grant<'c>, Refusal<'c>> {
        let unknown_key = |refusal: &Refusal<'_>| {
            matches!(
                refusal.rejection,
                Rejection::InvalidToken(TokenError::UnknownKey)
            )
        };
        let config = &*self.config;
        let refusal = match admit_at(config, &self.keys, &self.tokens, request, path, host) {
            Err(refusal) if unknown_key(&refusal) => refusal,
            admitted => return admitted,
        };
        let Ok(Presented::Token(token)) = config.credentials.extract(request.headers()) else {
            return Err(refusal);
        };
        let again = if Box::pin(self.tokens.refetch_keys_for(token)).await {
            admit_at(config, &self.keys, &self.tokens, request, path, host)
        } else {
            Err(refusal)
        };
        again.map_err(|mut refusal| {
            if unknown_key(&refusal) && self.tokens.issuer_keys_missing(token) {
                refusal.rejection = Rejection::IssuerKeysUnavailable;
            }
            refusal
        })
    }

    /// Who a granted request from `address` counts against: its key, token or
    /// identifier, or the address, with the tier's limits (none on a route that is
    /// not metered).
    fn subject<'g>(&'g self, grant: &'g Grant<'_>, address: IpAddr) -> Subject<'g> {
        if !grant.route.metered {
            // Counted against nothing: the limiter answers at once, and no
            // RateLimit headers are written.
            return Subject::address(address, &self.unmetered);
        }
        let tier_limits = &self.config.tiers.get(tier_of(grant)).limits;
        let subject = match &grant.principal {
            Some(principal) => principal.subject(address, tier_limits),
            None => Subject::address(address, tier_limits),
        };
        // Anonymous identifiers are the caller's to make up: those from one address
        // also share its budget, so a new identifier per request earns nothing.
        let budget = self.config.limits.anonymous_budget.as_ref();
        subject.sharing_address_budget(address, budget)
    }

    fn payments<'g>(&'g self, x402: &'g X402, responder: &'g Responder) -> Payments<'g> {
        Payments {
            x402,
            metrics: self.meters.metrics(),
            responder,
        }
    }

    /// The responder of the origin a request addressed.
    fn responder(&self, host: HostId) -> &Responder {
        self.responders.get(host.0).unwrap_or(&self.responders[0])
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

    /// The level of the access log line, when one is written.
    pub(crate) fn access_level(&self) -> Option<tracing::Level> {
        self.config.log.access.filter(|_| self.logs_access())
    }
}

/// The meter of a refused request: its route's, or the unmatched one.
fn meter_of(route: Option<&Route>) -> MeterId {
    route.map_or(
        MeterId::Local(crate::metrics::LocalEndpoint::Unmatched),
        |r| MeterId::Route(r.index),
    )
}

/// The tier a granted request is charged to.
fn tier_of(grant: &Grant<'_>) -> TierId {
    grant
        .principal
        .as_ref()
        .map_or(TierId::ANONYMOUS, Principal::tier)
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
    let host = config.discovery.host_of(request);
    admit_at(config, keys, tokens, request, path, host)
}

/// [`admit`] for a request addressed to the public origin `host` (the pipeline
/// knows it already).
fn admit_at<'c, B>(
    config: &'c Config,
    keys: &KeyTable,
    tokens: &Tokens,
    request: &Request<B>,
    path: &str,
    host: HostId,
) -> Result<Grant<'c>, Refusal<'c>> {
    let route = config
        .policy
        .find(request.method(), path)
        .map_err(|e| Refusal::from(Rejection::from(e)))?;
    if route.access == Access::Public {
        return Ok(Grant {
            route,
            principal: None,
        });
    }
    let refuse = |rejection: Rejection| Refusal {
        rejection,
        route: Some(route),
    };
    let presented = config
        .credentials
        .extract(request.headers())
        .map_err(|e| refuse(e.into()))?;
    let principal = config
        .credentials
        .authenticate(presented, keys, Some(tokens))
        .map_err(|e| refuse(e.into()))?;
    route
        .authorize(&principal, &config.tiers, host)
        .map_err(|e| refuse(e.into()))?;
    Ok(Grant {
        route,
        principal: Some(principal),
    })
}
