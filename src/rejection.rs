//! Every way the proxy can refuse a request, and the one place each is turned into an
//! HTTP answer.
//!
//! Each step of the pipeline returns `Result<_, Rejection>`; [`Responder::respond`]
//! matches the enum exhaustively, so a new variant cannot be added without deciding
//! its status, headers and envelope. Bodies are the JSON envelope
//! `{"error","code","message","docs"}`: `error` is the OAuth-style error name,
//! `code` the upper-case code agents branch on (as the seeds name them), `message` a
//! sentence for a human, `docs` the section of `/auth.md` that explains the recovery.
//! No variant carries a secret, so no answer can echo one.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::body::Body;
use crate::policy::{MethodSet, PathError};
use crate::scope::{ScopeRegistry, ScopeSet};
use crate::tier::{TierId, Tiers};

/// Why a request was not forwarded.
#[derive(Debug, Clone)]
pub enum Rejection {
    /// The path is ambiguous or malformed (see [`PathError`]).
    InvalidPath(PathError),
    /// No route matches and the default rule denies.
    RouteNotFound,
    /// A route matches the path but not the method.
    MethodNotAllowed(MethodSet),
    /// Several different credentials, or one credential header sent twice.
    AmbiguousCredentials,
    /// A credential header that is not visible ASCII.
    MalformedCredential,
    /// The route needs a credential and none was presented. Carries the route's
    /// ready-made challenge (with its `scope`).
    MissingCredential(HeaderValue),
    /// The API key is malformed, unknown or revoked.
    InvalidApiKey,
    /// The token cannot be verified.
    InvalidToken,
    /// The credential lacks scopes the route requires.
    InsufficientScope {
        /// The scopes the credential lacks.
        missing: ScopeSet,
        /// The route's 403 challenge, naming all the scopes it requires.
        challenge: HeaderValue,
    },
    /// The principal's tier is below the route's minimum.
    InsufficientTier(TierId),
    /// The upstream refused or dropped the connection.
    UpstreamUnavailable,
    /// The upstream did not answer in time.
    UpstreamTimeout,
}

/// The JSON envelope.
#[derive(Serialize)]
struct Envelope<'a> {
    error: &'a str,
    code: &'a str,
    message: &'a str,
    docs: &'a str,
}

/// Sections of `/auth.md` that rejections point to.
#[derive(Clone, Copy)]
enum Section {
    Errors,
    UseTheCredential,
    Scopes,
}

impl Section {
    fn anchor(self) -> &'static str {
        match self {
            Section::Errors => "#errors",
            Section::UseTheCredential => "#use-the-credential",
            Section::Scopes => "#scopes",
        }
    }
}

/// Turns rejections into responses; built once per config.
#[derive(Debug, Clone)]
pub struct Responder {
    docs_base: String,
    scopes: Arc<ScopeRegistry>,
    tiers: Arc<Tiers>,
    invalid_token_challenge: HeaderValue,
    invalid_request_challenge: HeaderValue,
    /// Bodies of the rejections whose text never varies, rendered once.
    missing_credential: Bytes,
    invalid_api_key: Bytes,
}

impl Responder {
    /// Builds the responder for a public base URL (no trailing slash).
    pub(crate) fn new(public_url: &str, scopes: Arc<ScopeRegistry>, tiers: Arc<Tiers>) -> Self {
        let mut responder = Responder {
            invalid_token_challenge: Self::challenge(public_url, "", Some("invalid_token")),
            invalid_request_challenge: Self::challenge(public_url, "", Some("invalid_request")),
            docs_base: format!("{public_url}/auth.md"),
            scopes,
            tiers,
            missing_credential: Bytes::new(),
            invalid_api_key: Bytes::new(),
        };
        responder.missing_credential = responder.render(&Rejection::MissingCredential(
            HeaderValue::from_static("Bearer"),
        ));
        responder.invalid_api_key = responder.render(&Rejection::InvalidApiKey);
        responder
    }

    /// The challenge for a route that needs a credential: `Bearer` first (MCP clients
    /// only read a leading Bearer challenge), `resource_metadata`, and the route's
    /// scopes when it has any.
    pub(crate) fn challenge(public_url: &str, scope: &str, error: Option<&str>) -> HeaderValue {
        let mut value = format!(
            "Bearer resource_metadata=\"{public_url}/.well-known/oauth-protected-resource\""
        );
        if let Some(error) = error {
            value.push_str(&format!(", error=\"{error}\""));
        }
        if !scope.is_empty() {
            value.push_str(&format!(", scope=\"{scope}\""));
        }
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }

    /// The answer for a rejection.
    #[must_use]
    pub fn respond(&self, rejection: Rejection) -> Response<Body> {
        let (status, _, _, _) = describe(&rejection, &self.scopes, &self.tiers);
        let body = match &rejection {
            Rejection::MissingCredential(_) => self.missing_credential.clone(),
            Rejection::InvalidApiKey => self.invalid_api_key.clone(),
            _ => self.render(&rejection),
        };
        let mut response = Response::new(Body::full(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match rejection {
            Rejection::MissingCredential(challenge)
            | Rejection::InsufficientScope { challenge, .. } => {
                headers.insert(WWW_AUTHENTICATE, challenge);
            }
            Rejection::InvalidApiKey | Rejection::InvalidToken => {
                headers.insert(WWW_AUTHENTICATE, self.invalid_token_challenge.clone());
            }
            Rejection::AmbiguousCredentials | Rejection::MalformedCredential => {
                headers.insert(WWW_AUTHENTICATE, self.invalid_request_challenge.clone());
            }
            Rejection::MethodNotAllowed(allowed) => {
                if let Ok(value) = HeaderValue::from_str(&allowed.to_string()) {
                    headers.insert(ALLOW, value);
                }
            }
            Rejection::InvalidPath(_)
            | Rejection::RouteNotFound
            | Rejection::InsufficientTier(_)
            | Rejection::UpstreamUnavailable
            | Rejection::UpstreamTimeout => {}
        }
        response
    }

    fn render(&self, rejection: &Rejection) -> Bytes {
        let (_, error, code, (message, section)) = describe(rejection, &self.scopes, &self.tiers);
        let docs = format!("{}{}", self.docs_base, section.anchor());
        let envelope = Envelope {
            error,
            code,
            message: &message,
            docs: &docs,
        };
        serde_json::to_vec(&envelope).map_or_else(|_| Bytes::new(), Bytes::from)
    }
}

/// Status, OAuth error name, code, message and docs section of each rejection.
fn describe(
    rejection: &Rejection,
    scopes: &ScopeRegistry,
    tiers: &Tiers,
) -> (StatusCode, &'static str, &'static str, (String, Section)) {
    use Rejection as R;
    let text = |s: &str, section| (s.to_owned(), section);
    match rejection {
        R::InvalidPath(e) => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "INVALID_PATH",
            text(&format!("{e}; send the path without it"), Section::Errors),
        ),
        R::RouteNotFound => (
            StatusCode::NOT_FOUND,
            "not_found",
            "NOT_FOUND",
            text("no route matches this path", Section::Errors),
        ),
        R::MethodNotAllowed(allowed) => (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "METHOD_NOT_ALLOWED",
            text(
                &format!("this path accepts only {allowed}"),
                Section::Errors,
            ),
        ),
        R::AmbiguousCredentials => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "INVALID_REQUEST",
            text(
                "send exactly one credential, in one header, once",
                Section::UseTheCredential,
            ),
        ),
        R::MalformedCredential => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "INVALID_REQUEST",
            text(
                "the credential header is not printable ASCII",
                Section::UseTheCredential,
            ),
        ),
        R::MissingCredential(_) => (
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "UNAUTHORIZED",
            text(
                "this route needs a credential; follow the resource_metadata link in WWW-Authenticate to get one",
                Section::UseTheCredential,
            ),
        ),
        R::InvalidApiKey => (
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "INVALID_API_KEY",
            text(
                "the API key is malformed, unknown or revoked; get a new one",
                Section::Errors,
            ),
        ),
        R::InvalidToken => (
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "INVALID_TOKEN",
            text(
                "the token cannot be verified by this server; get a new credential",
                Section::Errors,
            ),
        ),
        R::InsufficientScope { missing, .. } => (
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "FORBIDDEN",
            (
                format!(
                    "the credential lacks the scope(s) this route requires: {}",
                    scopes.names(missing)
                ),
                Section::Scopes,
            ),
        ),
        R::InsufficientTier(required) => (
            StatusCode::FORBIDDEN,
            "insufficient_tier",
            "INSUFFICIENT_TIER",
            (
                format!(
                    "this route needs the `{}` tier or higher; claim or upgrade the credential",
                    tiers.get(*required).name
                ),
                Section::Errors,
            ),
        ),
        R::UpstreamUnavailable => (
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            "UPSTREAM_UNAVAILABLE",
            text(
                "the upstream API could not be reached; retry with backoff",
                Section::Errors,
            ),
        ),
        R::UpstreamTimeout => (
            StatusCode::GATEWAY_TIMEOUT,
            "gateway_timeout",
            "UPSTREAM_TIMEOUT",
            text(
                "the upstream API did not answer in time; retry with backoff",
                Section::Errors,
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::ScopeRegistry;
    use crate::tier::Tier;
    use http_body_util::BodyExt;

    fn responder() -> Responder {
        let mut scopes = ScopeRegistry::default();
        scopes.declare("a:read", "");
        let tier = |name: &'static str| Tier {
            name: name.into(),
            scopes: ScopeSet::EMPTY,
            header: HeaderValue::from_static(name),
            scopes_header: HeaderValue::from_static(""),
        };
        let tiers = Tiers(vec![tier("anonymous"), tier("gold")]);
        Responder::new("https://api.example.com", Arc::new(scopes), Arc::new(tiers))
    }

    /// Every variant: its status, its code, and the one header it must carry.
    #[tokio::test]
    async fn every_rejection_has_its_status_code_and_headers() {
        let r = responder();
        let missing = r.scopes.required(["a:read"]).unwrap();
        type Case = (
            Rejection,
            u16,
            &'static str,
            Option<(&'static str, &'static str)>,
        );
        let cases: Vec<Case> = vec![
            (
                Rejection::InvalidPath(PathError::Semicolon),
                400,
                "INVALID_PATH",
                None,
            ),
            (Rejection::RouteNotFound, 404, "NOT_FOUND", None),
            (
                Rejection::MethodNotAllowed(MethodSet::parse("POST").unwrap()),
                405,
                "METHOD_NOT_ALLOWED",
                Some(("allow", "POST")),
            ),
            (
                Rejection::AmbiguousCredentials,
                400,
                "INVALID_REQUEST",
                Some(("www-authenticate", "error=\"invalid_request\"")),
            ),
            (
                Rejection::MalformedCredential,
                400,
                "INVALID_REQUEST",
                Some(("www-authenticate", "error=\"invalid_request\"")),
            ),
            (
                Rejection::MissingCredential(HeaderValue::from_static("Bearer x")),
                401,
                "UNAUTHORIZED",
                Some(("www-authenticate", "Bearer x")),
            ),
            (
                Rejection::InvalidApiKey,
                401,
                "INVALID_API_KEY",
                Some(("www-authenticate", "error=\"invalid_token\"")),
            ),
            (
                Rejection::InvalidToken,
                401,
                "INVALID_TOKEN",
                Some(("www-authenticate", "error=\"invalid_token\"")),
            ),
            (
                Rejection::InsufficientScope {
                    missing,
                    challenge: HeaderValue::from_static("Bearer y"),
                },
                403,
                "FORBIDDEN",
                Some(("www-authenticate", "Bearer y")),
            ),
            (
                Rejection::InsufficientTier(TierId(1)),
                403,
                "INSUFFICIENT_TIER",
                None,
            ),
            (
                Rejection::UpstreamUnavailable,
                502,
                "UPSTREAM_UNAVAILABLE",
                None,
            ),
            (Rejection::UpstreamTimeout, 504, "UPSTREAM_TIMEOUT", None),
        ];
        for (rejection, status, code, header) in cases {
            let response = r.respond(rejection);
            assert_eq!(response.status().as_u16(), status, "{code}");
            if let Some((name, contains)) = header {
                let value = response.headers()[name].to_str().unwrap();
                assert!(value.contains(contains), "{code}: {name}: {value}");
            }
            assert_eq!(response.headers()["cache-control"], "no-store");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["code"], code);
            assert!(
                json["docs"]
                    .as_str()
                    .unwrap()
                    .starts_with("https://api.example.com/auth.md#")
            );
            assert!(!json["message"].as_str().unwrap().is_empty());
        }
    }
}
