//! The proxy's own endpoints: which one a path names, and the credential lifecycle
//! endpoints' answers. No route can shadow them.

use std::net::IpAddr;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::agent_auth::{self, AgentAuth, Answer, Failure};
use crate::body::Body;
use crate::config::Config;
use crate::discovery::{self, Documents};
use crate::login::Login;
use crate::metrics::LocalEndpoint;
use crate::oauth;
use crate::policy::HostId;
use crate::rejection::{LifecycleError, Rejection, Responder};
use crate::tokens::Tokens;

/// What a local endpoint needs to answer.
pub(super) enum Local {
    /// Answered already (documents, the authorization endpoint's refusal).
    Ready(Result<Response<Body>, Rejection>),
    /// The token endpoint.
    Token,
    /// RFC 7009 revocation.
    Revoke,
    /// The authorization endpoint, with a person's sign-in.
    Authorize,
    /// The consent page's decision.
    Consent,
    /// RFC 7591 client registration.
    ClientRegistration,
    /// Registration, claims, keys.
    Lifecycle(Lifecycle),
    /// A person's sign-in page, or a provider's callback.
    Login,
}

/// The credential lifecycle endpoints.
#[derive(Clone, Copy)]
pub(super) enum Lifecycle {
    Register,
    Claim,
    AgentRevoke,
    Keys,
    Key { rotate: bool },
    Scopes,
    Operator,
}

/// The local endpoint `path` names, if any, with its meter.
pub(super) fn find<B>(
    config: &Config,
    documents: &Documents,
    tokens: &Tokens,
    request: &Request<B>,
    path: &str,
    host: HostId,
) -> Option<(LocalEndpoint, Local)> {
    use LocalEndpoint as E;
    let endpoints = &config.endpoints;
    if path == endpoints.jwks {
        if let Some(jwks) = tokens.jwks() {
            return Some((
                E::Discovery,
                Local::Ready(discovery::serve_jwks(&jwks, request.method())),
            ));
        }
    }
    if let Some(doc) = documents.find(path, host) {
        return Some((
            E::Discovery,
            Local::Ready(documents.serve(doc, request.method(), request.headers())),
        ));
    }
    let lifecycle = |endpoint| Some((E::Lifecycle, Local::Lifecycle(endpoint)));
    let callback = path
        .strip_prefix(endpoints.login_callback.as_str())
        .is_some_and(|rest| rest.starts_with('/'));
    if config.login.enabled() && (path == endpoints.login || callback) {
        Some((E::Login, Local::Login))
    } else if path == endpoints.token {
        Some((E::Token, Local::Token))
    } else if path == endpoints.revoke {
        Some((E::Revoke, Local::Revoke))
    } else if path == endpoints.authorize && config.login.enabled() {
        Some((E::Authorize, Local::Authorize))
    } else if path == endpoints.authorize {
        Some((E::Authorize, Local::Ready(oauth::authorize(request))))
    } else if path == endpoints.consent && config.login.enabled() {
        Some((E::Authorize, Local::Consent))
    } else if path == endpoints.oauth_register
        && config.login.enabled()
        && config.interactive.registration.enabled
    {
        Some((E::ClientRegistration, Local::ClientRegistration))
    } else if path == endpoints.scopes {
        lifecycle(Lifecycle::Scopes)
    } else if !config.lifecycle.issues_keys() {
        None
    } else if path == endpoints.operator && config.login.enabled() {
        lifecycle(Lifecycle::Operator)
    } else if path == endpoints.register && config.lifecycle.registers() {
        lifecycle(Lifecycle::Register)
    } else if path == endpoints.claim && config.lifecycle.registers() {
        lifecycle(Lifecycle::Claim)
    } else if path == endpoints.agent_revoke && config.lifecycle.self_service() {
        lifecycle(Lifecycle::AgentRevoke)
    } else if !config.lifecycle.keys.enabled {
        None
    } else if path == endpoints.keys {
        lifecycle(Lifecycle::Keys)
    } else {
        let rest = path
            .strip_prefix(endpoints.keys.as_str())?
            .strip_prefix('/')?;
        match rest.split_once('/') {
            None if !rest.is_empty() => lifecycle(Lifecycle::Key { rotate: false }),
            Some((id, "rotate")) if !id.is_empty() => lifecycle(Lifecycle::Key { rotate: true }),
            _ => None,
        }
    }
}

/// Answers a credential lifecycle endpoint for a client at `address` that
/// addressed `origin`; `agent_auth` is `None` without a store, `login` without
/// sign-in.
#[expect(
    clippy::too_many_arguments,
    reason = "the request's parts and the generation's services, each one argument"
)]
pub(super) async fn lifecycle(
    agent_auth: Option<&AgentAuth>,
    login: Option<&Login>,
    config: &Config,
    endpoint: Lifecycle,
    request: Request<Incoming>,
    address: IpAddr,
    origin: &str,
    responder: &Responder,
) -> Response<Body> {
    let answer: Answer = match (endpoint, agent_auth) {
        (Lifecycle::Scopes, _) => agent_auth::keys::scopes(config, request.method()),
        (_, None) => Err(Failure::from(LifecycleError::StoreUnavailable)),
        (Lifecycle::Register, Some(a)) => a.register(config, request, address, origin).await,
        (Lifecycle::Claim, Some(a)) if request.method() == http::Method::POST => {
            a.claim(config, request, login).await
        }
        (Lifecycle::Claim, Some(a)) => a.claim_page(config, &request, login).await,
        (Lifecycle::AgentRevoke, Some(a)) => a.agent_revoke(config, request).await,
        (Lifecycle::Operator, Some(a)) => a.operator(config, request, login).await,
        (Lifecycle::Keys, Some(a)) => a.keys(config, request, address).await,
        (Lifecycle::Key { rotate }, Some(a)) => {
            let path = request.uri().path().to_owned();
            let id = key_id(&path, &config.endpoints.keys).unwrap_or_default();
            a.key(config, request, id, rotate).await
        }
    };
    answer.unwrap_or_else(|failure| {
        tracing::debug!(rejection = ?failure.rejection, "lifecycle request refused");
        responder.respond_with(failure.rejection, None, failure.detail.as_deref())
    })
}

/// The `{id}` of `<keys>/{id}` or `<keys>/{id}/rotate`.
fn key_id<'p>(path: &'p str, keys: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(keys)?.strip_prefix('/')?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// The public origin a request addressed.
pub(super) fn origin(config: &Config, host: HostId) -> &str {
    let origins = &config.discovery.origins;
    &origins[host.0.min(origins.len() - 1)]
}
