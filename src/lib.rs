//! # authmd-proxy
//!
//! An authenticating reverse proxy that makes an existing HTTP API agent-ready from
//! one YAML file: it verifies API keys against an in-memory table of BLAKE3 hashes,
//! enforces a route -> scope policy, and forwards what is allowed to the upstream,
//! streaming, with the verified identity attached.
//!
//! ## The request path
//!
//! ```text
//!  client ──► server (accept, HTTP/1.1 + HTTP/2)
//!               │
//!               ▼
//!  gateway::Gateway::local   discovery documents, OAuth endpoints, and the
//!    credential lifecycle (agent_auth: register / claim / keys), answered here
//!               │
//!  pipeline::admit ─────────────────────────────────────────────┐
//!    1. policy::normalize_path   ambiguous path        -> 400   │
//!    2. RouteTable::find         no route / method     -> 404/405│ Rejection
//!    3. CredentialRules::extract conflicting creds     -> 400   │   │
//!    4. CredentialRules::authenticate  bad key/token   -> 401   │   ▼
//!       (keys: KeyTable; tokens: Tokens::verify, cached)       │
//!    5. Route::authorize         scope / tier          -> 401/403│ Responder::respond
//!               │ Grant { route, principal, path }              │ (JSON envelope,
//!               ▼                                               │  WWW-Authenticate)
//!  proxy::Upstream::forward     refused / slow        -> 502/504┘
//!    strip hop-by-hop, consumed credentials, spoofed X-Authmd-*;
//!    add X-Forwarded-*, X-Authmd-Principal/Scopes/Tier; stream both ways
//!               │
//!               ▼
//!  upstream (HTTP/1.1 or HTTP/2 pool, or builtin:echo)
//! ```
//!
//! ## Modules
//!
//! - [`config`]: YAML -> raw structs -> validated [`config::Config`], all errors at once.
//! - [`policy`]: path normalisation, templates, the route table, authorization.
//! - [`credentials`]: credential extraction, API key format, the lock-free key table.
//! - [`scope`] and [`tier`]: scope bit sets and trust tiers.
//! - [`pipeline`]: the ordered checks ([`gateway::Gateway`]).
//! - [`rejection`]: the closed [`rejection::Rejection`] enum and its one responder.
//! - [`proxy`]: upstream pool, header hygiene, streaming, upgrades, the echo upstream.
//! - [`server`]: listeners, admin endpoints, graceful shutdown.
//! - [`body`]: the response body type.
//! - [`store`]: the durable credential store (SQLite, PostgreSQL) and the follower
//!   that keeps the key table in step with it; never on the request path.
//! - [`agent_auth`]: registration, claims, revocation and key management endpoints.
//! - [`assertion`]: ID-JAG identity assertions verified against trusted JWKS.
//! - [`tokens`]: access tokens: the proxy's own (signing keys, issue, verify,
//!   revocation deny-list) and those of trusted issuers (background JWKS refresh),
//!   with a cache of verified tokens for the request path.
//! - [`oauth`]: the token endpoint (client_credentials, jwt-bearer), revocation
//!   (RFC 7009) and the authorization endpoint.
//! - [`limits`]: lock-free GCRA rate limits, quotas, and x402 payments for used-up
//!   quotas.
//! - [`metrics`]: the Prometheus registry and what the request path records.
//! - [`reload`]: config hot reload (content-hash polling and SIGHUP).
//! - [`tls`]: HTTPS on the listener (certificates reloaded in place) and to the
//!   upstream.
//! - [`inject`]: the Kubernetes sidecar injection of `authmd-proxy inject`, and
//!   [`injector`], the same as a mutating admission webhook.

#![forbid(unsafe_code)]

pub mod agent_auth;
pub mod assertion;
pub mod body;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod discovery;
pub mod gateway;
pub mod http_client;
pub mod inject;
pub mod injector;
pub mod limits;
pub mod metrics;
pub mod oauth;
pub mod pipeline;
pub mod policy;
pub mod protocol;
pub mod proxy;
pub mod random;
pub mod rejection;
pub mod reload;
pub mod scope;
pub mod server;
pub mod store;
pub mod tier;
pub mod tls;
pub mod tokens;
