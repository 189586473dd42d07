//! The proxy's OAuth endpoints, as far as this server supports OAuth today: the
//! token endpoint (no grant is offered yet, so every grant is
//! `unsupported_grant_type`), the revocation endpoint (RFC 7009), and the
//! authorization endpoint (no interactive flow: `unsupported_response_type`). They
//! exist so that clients requiring these metadata fields work, and every URL in the
//! metadata answers as OAuth says rather than 404.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use http::{HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::agent_auth::AgentAuth;
use crate::body::Body;
use crate::config::Config;
use crate::credentials::{KeyHash, KeyTable, Presented};
use crate::policy::MethodSet;
use crate::rejection::{LifecycleError, OAuthError, Rejection};

/// Largest request body an OAuth endpoint reads.
const MAX_FORM: usize = 16 * 1024;

/// `POST token_endpoint`.
pub async fn token(request: Request<Incoming>) -> Result<Response<Body>, Rejection> {
    let form = read_form(request, &Method::POST).await?;
    match field(&form, "grant_type") {
        None => Err(Rejection::OAuth(OAuthError::InvalidRequest(
            "`grant_type` is required",
        ))),
        Some(_) => Err(Rejection::OAuth(OAuthError::UnsupportedGrantType)),
    }
}

/// `POST revocation_endpoint` (RFC 7009): 200 for any token this server did not
/// issue; a key declared in the configuration is `unsupported_token_type`.
pub async fn revoke(
    request: Request<Incoming>,
    config: &Config,
    keys: &KeyTable,
    agent_auth: Option<&AgentAuth>,
) -> Result<Response<Body>, Rejection> {
    let rules = &config.credentials;
    let form = read_form(request, &Method::POST).await?;
    let Some(token) = field(&form, "token") else {
        return Err(Rejection::OAuth(OAuthError::InvalidRequest(
            "`token` is required",
        )));
    };
    if let Presented::Key(key) = rules.classify(token) {
        match (keys.get(&KeyHash::of(key)), agent_auth) {
            (Some(entry), _) if entry.is_static => {
                return Err(Rejection::OAuth(OAuthError::UnsupportedTokenType));
            }
            (Some(_), Some(agent_auth)) => {
                agent_auth
                    .revoke_credential(config, token)
                    .await
                    .map_err(|failure| failure.rejection)?;
            }
            (Some(_), None) => {
                return Err(Rejection::Lifecycle(LifecycleError::StoreUnavailable));
            }
            (None, _) => {}
        }
    }
    let mut response = Response::new(Body::empty());
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// `authorization_endpoint`: no interactive flow is offered.
pub fn authorize<B>(request: &Request<B>) -> Result<Response<Body>, Rejection> {
    if request.method() != Method::GET && request.method() != Method::POST {
        return Err(Rejection::MethodNotAllowed(MethodSet::of(&["GET", "POST"])));
    }
    Err(Rejection::OAuth(OAuthError::UnsupportedResponseType))
}

/// The parameters of a form (or, as some agents send, JSON object) body.
async fn read_form(
    request: Request<Incoming>,
    method: &Method,
) -> Result<Vec<(String, String)>, Rejection> {
    if request.method() != method {
        return Err(Rejection::MethodNotAllowed(MethodSet::of(&[
            method.as_str()
        ])));
    }
    let json = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    let body = Limited::new(request.into_body(), MAX_FORM)
        .collect()
        .await
        .map_err(|_| {
            Rejection::OAuth(OAuthError::InvalidRequest(
                "the request body is larger than 16 KiB or was cut off",
            ))
        })?
        .to_bytes();
    if json {
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&body)
            .map_err(|_| {
                Rejection::OAuth(OAuthError::InvalidRequest("the body is not a JSON object"))
            })?;
        return Ok(object
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned())))
            .collect());
    }
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    // RFC 6749 section 3.2: parameters must not be repeated.
    for (i, (name, _)) in form.iter().enumerate() {
        if form[..i].iter().any(|(n, _)| n == name) {
            return Err(Rejection::OAuth(OAuthError::InvalidRequest(
                "a parameter is repeated",
            )));
        }
    }
    Ok(form)
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(n, v)| n == name && !v.is_empty())
        .map(|(_, v)| v.as_str())
}
