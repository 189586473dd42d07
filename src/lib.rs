//! # authmd-proxy
//!
//! An authenticating reverse proxy that makes an existing HTTP API agent-ready from
//! one YAML file: it verifies API keys against an in-memory table of BLAKE3 hashes,
//! enforces a route -> scope policy, and forwards what is allowed to the upstream,
//! streaming, with the verified identity attached.
//!
//! ## Layers
//!
//! Each line imports only from the lines below it: no import cycle, no arrow back up
//! (`tests/it/layers.rs` reads this picture and holds the code to it).
//!
//! ```text
//! main, cli/                 the commands: run, check, keys, tokens, inject, render
//! injector                   the sidecar injector as an admission webhook
//! server, reload             listeners and the accept loop; config hot reload
//! gateway                    generations: built from a config, swapped, ready or not
//! pipeline                   one request's way through the checks, in order
//! oauth, discovery           token and revocation endpoints; documents and auth.md
//! agent_auth                 registration, claims, key management
//! config, rejection          YAML -> typed settings; every refusal -> its answer
//! store, policy              durable records and their follower; routes and scopes
//! credentials, assertion, login  who the caller is: keys, tokens, ID-JAGs; people signed in
//! tokens, proxy              access tokens and issuers' keys; forwarding upstream
//! tier                       trust tiers
//! limits                     rate buckets, quotas, x402 payments; fleet-wide limits on Redis
//! web                        server-rendered pages for people: layout, CSP, CSRF tokens
//! http_client                the proxy's own outbound calls; public-only fetches
//! clock, protocol, random, scope, body, metrics, tls, inject
//! ```
//!
//! ## The request path
//!
//! ```text
//!  client ──► server (accept, TLS, HTTP/1.1 + HTTP/2) ──► gateway (current generation)
//!               │
//!  pipeline::Generation::handle ────────────────────────────────────┐
//!    size limits, framing      too large / ambiguous  -> 413/414/431/400
//!    policy::normalize_path    ambiguous path         -> 400        │
//!    local endpoints           documents, token, register, keys (answered here)
//!    RouteTable::find          no route / method      -> 404/405    │ Rejection
//!    CredentialRules::extract  conflicting creds      -> 400        │   │
//!    ...::authenticate         bad key / token        -> 401 (503: issuer keys)
//!    Route::authorize          resource, scope, tier  -> 401/403    │   ▼
//!    Limiter / Global check    rate window, quota     -> 429 / 402  │ Responder
//!    x402 pay (over quota)     no / bad payment       -> 402/400/503│ (JSON envelope,
//!    Upstream::forward         refused / slow         -> 502/504    │  WWW-Authenticate)
//!    x402 settle               not settled            -> 402/503 ───┘
//!    + RateLimit headers, metrics, access log
//!               │
//!  upstream (HTTP/1.1 or HTTP/2 pool, or builtin:echo)
//! ```
//!
//! Forwarding strips hop-by-hop headers, the consumed credential and any spoofed
//! `X-Authmd-*`, adds `X-Forwarded-*` and the verified identity, and streams both ways.
//!
//! ## Modules
//!
//! - [`config`]: YAML -> raw structs -> validated [`config::Config`], all errors at once.
//! - [`policy`]: path normalisation, templates, the route table, authorization.
//! - [`credentials`]: credential extraction, API key format, the lock-free key table.
//! - [`scope`] and [`tier`]: scope bit sets and trust tiers.
//! - [`gateway`]: the current [`pipeline::Generation`], built and swapped on reload;
//!   readiness, metrics and the access log of each request.
//! - [`pipeline`]: the ordered checks of one request.
//! - [`rejection`]: the closed [`rejection::Rejection`] enum and its one responder.
//! - [`proxy`]: upstream pool, header hygiene, streaming, upgrades, the echo upstream.
//! - [`server`]: listeners, the accept loop, admin endpoints, graceful shutdown.
//! - [`body`]: the response body type.
//! - [`store`]: the durable credential store (SQLite, PostgreSQL), the follower that
//!   keeps the key table in step with it, and the quota sync; never on the request
//!   path.
//! - [`agent_auth`]: registration, claims, revocation and key management endpoints.
//! - [`assertion`]: ID-JAG identity assertions verified against trusted JWKS.
//! - [`tokens`]: access tokens: the proxy's own (signing keys, issue, verify,
//!   revocation deny-list) and those of trusted issuers (background JWKS refresh),
//!   with a cache of verified tokens for the request path.
//! - [`oauth`]: the token endpoint (client_credentials, jwt-bearer), revocation
//!   (RFC 7009) and the authorization endpoint.
//! - [`discovery`]: the well-known documents and auth.md, rendered once per config.
//! - [`limits`]: lock-free GCRA rate limits, quotas, and x402 payments for used-up
//!   quotas; with `limits.global`, one limit for the whole fleet, leased from Redis.
//! - [`metrics`]: the Prometheus registry and what the request path records.
//! - [`reload`]: config hot reload (content-hash polling and SIGHUP).
//! - [`tls`]: HTTPS on the listener (certificates reloaded in place) and to the
//!   upstream; [`http_client`]: the client for other services (JWKS, facilitator).
//! - [`clock`], [`protocol`], [`random`]: unix time, protocol constants, public ids.
//! - [`login`]: a person's sign-in through `login.providers` (static accounts,
//!   OpenID Connect, GitHub), kept in a sealed session cookie; [`web`]: the
//!   server-rendered pages people see.
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
pub mod login;
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
pub mod web;
