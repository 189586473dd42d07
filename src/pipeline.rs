//! The request pipeline: the only place that knows the order of the checks.
//!
//! ```text
//! normalise path -> find route -> extract + authenticate credential -> authorize -> forward
//!      400             404/405           400 / 401                     401/403     502/504
//! ```
//!
//! Each step is a plain function returning `Result<_, Rejection>`; the first rejection
//! short-circuits and is answered by the config's [`Responder`](crate::rejection::Responder).

use std::sync::Arc;

use http::{HeaderName, HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::body::Body;
use crate::config::Config;
use crate::credentials::{KeyTable, Principal};
use crate::policy::{Access, Route, normalize_path};
use crate::proxy::{ClientConn, Identity, Outbound, Upstream};
use crate::rejection::Rejection;

/// Everything a request needs: the config, the key table and the upstream.
#[derive(Debug)]
pub struct Gateway {
    config: Arc<Config>,
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
    /// The normalised path, when it differs from the request's.
    pub path: Option<String>,
}

impl Gateway {
    /// Builds the gateway, loading the config's static keys into the table. Must run
    /// inside a Tokio runtime (the upstream pool needs one).
    #[must_use]
    pub fn new(config: Config) -> Gateway {
        let keys = KeyTable::default();
        for (hash, entry) in &config.keys {
            keys.insert(*hash, entry.clone());
        }
        let consumed = config.credentials.consumed_headers().cloned().collect();
        Gateway {
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

    /// The key table.
    #[must_use]
    pub fn keys(&self) -> &KeyTable {
        &self.keys
    }

    /// Answers one request.
    pub async fn handle(&self, request: Request<Incoming>, conn: &ClientConn) -> Response<Body> {
        let grant = match self.admit(&request) {
            Ok(grant) => grant,
            Err(rejection) => {
                tracing::debug!(?rejection, path = request.uri().path(), "rejected");
                return self.config.responder.respond(rejection);
            }
        };
        let identity = grant.principal.as_ref().map(|p| self.identity(p));
        let outbound = Outbound {
            path: grant.path.as_deref(),
            identity,
            consumed: if grant.principal.is_some() {
                &self.consumed
            } else {
                &[]
            },
        };
        match self.upstream.forward(request, outbound, conn).await {
            Ok(response) => response,
            Err(rejection) => self.config.responder.respond(rejection),
        }
    }

    /// Runs the checks in order.
    pub fn admit(&self, request: &Request<Incoming>) -> Result<Grant<'_>, Rejection> {
        admit(&self.config, &self.keys, request)
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
                let anonymous = tiers.get(crate::tier::TierId::ANONYMOUS);
                Identity {
                    principal,
                    scopes: anonymous.scopes_header.clone(),
                    tier: anonymous.header.clone(),
                }
            }
        }
    }
}

/// The admission decision for a request, over plain data: what the benchmarks time.
pub fn admit<'c, B>(
    config: &'c Config,
    keys: &KeyTable,
    request: &Request<B>,
) -> Result<Grant<'c>, Rejection> {
    let raw_path = request.uri().path();
    let path = normalize_path(raw_path).map_err(Rejection::InvalidPath)?;
    let route = config.policy.find(request.method(), &path)?;
    let path = match path {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(normal) => Some(normal),
    };
    if route.access == Access::Public {
        return Ok(Grant {
            route,
            principal: None,
            path,
        });
    }
    let presented = config.credentials.extract(request.headers())?;
    let principal = config.credentials.authenticate(presented, keys)?;
    route.authorize(&principal, &config.tiers)?;
    Ok(Grant {
        route,
        principal: Some(principal),
        path,
    })
}
