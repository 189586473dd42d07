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

use crate::body::Body;
use crate::config::Config;
use crate::credentials::{KeyTable, Principal};
use crate::discovery::Documents;
use crate::oauth;
use crate::policy::{Access, HostId, Route, normalize_path};
use crate::proxy::{ClientConn, Identity, Outbound, Upstream};
use crate::rejection::Rejection;
use crate::tier::TierId;

/// Everything a request needs: the config, its documents, the key table and the
/// upstream.
#[derive(Debug)]
pub struct Gateway {
    config: Arc<Config>,
    documents: Documents,
    keys: Arc<KeyTable>,
    upstream: Upstream,
    /// Credential headers removed from requests the proxy authenticates.
    consumed: Vec<HeaderName>,
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
    /// Builds the gateway: renders the documents and loads the config's static keys
    /// into the table. Must run inside a Tokio runtime (the upstream pool needs one).
    #[must_use]
    pub fn new(config: Config) -> Gateway {
        let keys = KeyTable::default();
        for (hash, entry) in &config.keys {
            keys.insert(*hash, entry.clone());
        }
        let consumed = config.credentials.consumed_headers().cloned().collect();
        Gateway {
            documents: Documents::build(&config),
            upstream: Upstream::new(&config.upstream),
            config: Arc::new(config),
            keys: Arc::new(keys),
            consumed,
        }
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
                Local::Token => self.finish(oauth::token(request).await, host),
                Local::Revoke => self.finish(
                    oauth::revoke(request, &config.credentials, &self.keys).await,
                    host,
                ),
            };
        }
        let grant = match admit(config, &self.keys, &request, &path) {
            Ok(grant) => grant,
            Err(refusal) => return respond(refusal),
        };
        let identity = grant.principal.as_ref().map(|p| self.identity(p));
        let rewritten = match &path {
            Cow::Owned(path) => Some(path.clone()),
            Cow::Borrowed(_) => None,
        };
        let outbound = Outbound {
            path: rewritten.as_deref(),
            identity,
            consumed: if grant.principal.is_some() {
                &self.consumed
            } else {
                &[]
            },
        };
        match self.upstream.forward(request, outbound, conn).await {
            Ok(response) => response,
            Err(rejection) => responder(config, host).respond(rejection, None),
        }
    }

    fn finish(&self, answer: Result<Response<Body>, Rejection>, host: HostId) -> Response<Body> {
        answer.unwrap_or_else(|rejection| responder(&self.config, host).respond(rejection, None))
    }

    /// The proxy's own endpoints, which no route can shadow.
    fn local<B>(&self, request: &Request<B>, path: &str, host: HostId) -> Option<Local> {
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
        .authenticate(presented, keys)
        .map_err(refuse)?;
    route.authorize(&principal, &config.tiers).map_err(refuse)?;
    Ok(Grant {
        route,
        principal: Some(principal),
    })
}
