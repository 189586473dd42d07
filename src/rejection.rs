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

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use serde::Serialize;

mod lifecycle;

use crate::assertion::AssertionError;
use crate::body::Body;
use crate::credentials::CredentialError;
use crate::limits::x402::PaymentError;
use crate::policy::{MethodSet, PathError, PolicyError};
use crate::proxy::ForwardError;
use crate::proxy::headers::Ambiguity;
// Named here by the config until it names their owners itself.
pub use crate::policy::Challenges;
pub use crate::protocol::PROTECTED_RESOURCE;
pub use crate::proxy::headers::Oversize;
use crate::scope::{ScopeRegistry, ScopeSet};
use crate::tier::{TierId, Tiers};
use crate::tokens::TokenError;
pub use lifecycle::LifecycleError;

/// Why a request was not forwarded.
#[derive(Debug, Clone, Copy)]
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
    /// The route needs a credential and none was presented.
    MissingCredential,
    /// The API key is malformed, unknown or revoked.
    InvalidApiKey,
    /// The token cannot be verified, and why.
    InvalidToken(TokenError),
    /// The credential lacks scopes the route requires.
    InsufficientScope {
        /// The scopes the credential lacks.
        missing: ScopeSet,
    },
    /// The principal's tier is below the route's minimum.
    InsufficientTier(TierId),
    /// An OAuth endpoint refused the request, in the RFC 6749 section 5.2 format.
    OAuth(OAuthError),
    /// A credential lifecycle endpoint (registration, claim, keys) refused it.
    Lifecycle(LifecycleError),
    /// A rate window of the subject is empty.
    RateLimited {
        /// Seconds until every empty window admits a request again.
        retry_after: u64,
    },
    /// The subject's quota for the period is used up, and no payment is offered.
    QuotaExceeded,
    /// Payment (x402) is the way past the quota; see [`PaymentError`].
    Payment(PaymentError),
    /// The upstream refused or dropped the connection.
    UpstreamUnavailable,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The request is larger than `server:` allows.
    TooLarge(Oversize),
    /// The request could be read in more than one way.
    Ambiguous(Ambiguity),
    /// The client's request body broke off or was malformed while it was being
    /// forwarded (the upstream never got a complete request).
    ClientBody,
    /// The token's issuer is trusted, but none of its signing keys could be fetched
    /// yet: the token may be fine, so this is retryable, not a bad token.
    IssuerKeysUnavailable,
}

impl From<PolicyError> for Rejection {
    fn from(error: PolicyError) -> Rejection {
        match error {
            PolicyError::RouteNotFound => Rejection::RouteNotFound,
            PolicyError::MethodNotAllowed(allowed) => Rejection::MethodNotAllowed(allowed),
            PolicyError::MissingCredential => Rejection::MissingCredential,
            PolicyError::InsufficientScope { missing } => Rejection::InsufficientScope { missing },
            PolicyError::InsufficientTier(min) => Rejection::InsufficientTier(min),
        }
    }
}

impl From<CredentialError> for Rejection {
    fn from(error: CredentialError) -> Rejection {
        match error {
            CredentialError::Ambiguous => Rejection::AmbiguousCredentials,
            CredentialError::Malformed => Rejection::MalformedCredential,
            CredentialError::InvalidApiKey => Rejection::InvalidApiKey,
            CredentialError::InvalidToken(error) => Rejection::InvalidToken(error),
        }
    }
}

impl From<ForwardError> for Rejection {
    fn from(error: ForwardError) -> Rejection {
        match error {
            ForwardError::Unavailable => Rejection::UpstreamUnavailable,
            ForwardError::Timeout => Rejection::UpstreamTimeout,
            ForwardError::BodyTooLarge => Rejection::TooLarge(Oversize::Body),
            ForwardError::ClientBody => Rejection::ClientBody,
        }
    }
}

/// One row of the error table in `/auth.md`.
#[derive(Debug, Clone, Copy)]
pub struct ErrorDoc {
    /// HTTP status.
    pub status: u16,
    /// The `code` field.
    pub code: &'static str,
    /// What it means.
    pub meaning: &'static str,
    /// What the agent should do.
    pub action: &'static str,
}

/// Every code the proxy can answer, for the documentation. A unit test checks that
/// each rejection's code is listed, so the document cannot fall behind the code.
pub const ERROR_CODES: &[ErrorDoc] = &[
    ErrorDoc {
        status: 400,
        code: "INVALID_PATH",
        meaning: "The path has an encoded separator, a `;` parameter, a backslash or a malformed escape.",
        action: "Send the plain path.",
    },
    ErrorDoc {
        status: 503,
        code: "ISSUER_JWKS_UNAVAILABLE",
        meaning: "The issuer of the token or identity assertion is trusted, but its signing keys could not be fetched yet.",
        action: "Wait `Retry-After` seconds, then retry with the same token or assertion.",
    },
    ErrorDoc {
        status: 400,
        code: "MALFORMED_BODY",
        meaning: "The request body ended early or its chunked framing is malformed.",
        action: "Send the whole body, correctly framed.",
    },
    ErrorDoc {
        status: 400,
        code: "AMBIGUOUS_FRAMING",
        meaning: "A `Transfer-Encoding` other than exactly one `chunked`.",
        action: "Send `Content-Length`, or `Transfer-Encoding: chunked` alone.",
    },
    ErrorDoc {
        status: 400,
        code: "AMBIGUOUS_HOST",
        meaning: "An HTTP/2 request whose `Host` differs from its `:authority`.",
        action: "Send the same host in both, or only `:authority`.",
    },
    ErrorDoc {
        status: 414,
        code: "URI_TOO_LONG",
        meaning: "The request target is longer than this API accepts.",
        action: "Send large input in the body.",
    },
    ErrorDoc {
        status: 431,
        code: "HEADERS_TOO_LARGE",
        meaning: "More or larger header fields than this API accepts.",
        action: "Send fewer or smaller headers.",
    },
    ErrorDoc {
        status: 413,
        code: "BODY_TOO_LARGE",
        meaning: "The declared body is larger than this API accepts.",
        action: "Send a smaller body.",
    },
    ErrorDoc {
        status: 400,
        code: "INVALID_REQUEST",
        meaning: "More than one credential, or a credential header sent twice.",
        action: "Send exactly one credential, once.",
    },
    ErrorDoc {
        status: 401,
        code: "UNAUTHORIZED",
        meaning: "This route needs a credential and none was sent.",
        action: "Follow `resource_metadata` in `WWW-Authenticate`, get a credential, retry with it.",
    },
    ErrorDoc {
        status: 401,
        code: "INVALID_API_KEY",
        meaning: "The API key is malformed, unknown or revoked.",
        action: "Do not retry with this key; get a new one.",
    },
    ErrorDoc {
        status: 403,
        code: "FORBIDDEN",
        meaning: "The credential lacks a scope this route requires (named in the message and in `WWW-Authenticate`).",
        action: "Use a credential that has the scope.",
    },
    ErrorDoc {
        status: 403,
        code: "INSUFFICIENT_TIER",
        meaning: "The credential's tier is below what this route requires.",
        action: "Use a credential of a higher tier.",
    },
    ErrorDoc {
        status: 404,
        code: "NOT_FOUND",
        meaning: "No route matches this path.",
        action: "Check the path against the API's documentation.",
    },
    ErrorDoc {
        status: 405,
        code: "METHOD_NOT_ALLOWED",
        meaning: "The path exists but not with this method.",
        action: "Use a method listed in `Allow`.",
    },
    ErrorDoc {
        status: 429,
        code: "RATE_LIMIT_EXCEEDED",
        meaning: "Too many requests in a rate window (`RateLimit-*` headers say which, and when it refills).",
        action: "Wait `Retry-After` seconds, then retry; or use a credential of a higher tier.",
    },
    ErrorDoc {
        status: 402,
        code: "QUOTA_EXCEEDED",
        meaning: "The request quota of the period is used up.",
        action: "Wait for the period to end (`RateLimit-Reset`), or use a credential of a higher tier.",
    },
    ErrorDoc {
        status: 402,
        code: "PAYMENT_REQUIRED",
        meaning: "The quota is used up; the response carries x402 payment requirements (`PAYMENT-REQUIRED` header, v1 `accepts` in the body).",
        action: "Pay with an x402 client: retry with `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT` (v1).",
    },
    ErrorDoc {
        status: 400,
        code: "PAYMENT_MALFORMED",
        meaning: "The payment header is not base64 JSON of an x402 payment payload matching one of the offered requirements.",
        action: "Build the payment from the requirements of the last 402.",
    },
    ErrorDoc {
        status: 402,
        code: "PAYMENT_REJECTED",
        meaning: "The facilitator found the payment invalid (reason in the message and in `error`).",
        action: "Fix what the reason names (funds, signature, network) and pay again.",
    },
    ErrorDoc {
        status: 503,
        code: "PAYMENT_UNAVAILABLE",
        meaning: "The payment could not be verified or settled; nothing was charged.",
        action: "Wait `Retry-After` seconds, then retry with a fresh payment.",
    },
    ErrorDoc {
        status: 502,
        code: "UPSTREAM_UNAVAILABLE",
        meaning: "The API behind this server could not be reached.",
        action: "Retry with exponential backoff.",
    },
    ErrorDoc {
        status: 504,
        code: "UPSTREAM_TIMEOUT",
        meaning: "The API behind this server did not answer in time.",
        action: "Retry with exponential backoff.",
    },
];

/// The OAuth errors the proxy's OAuth endpoints answer with (RFC 6749 section 5.2,
/// RFC 7009, RFC 8707).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthError {
    /// `invalid_request`, with what is wrong.
    InvalidRequest(&'static str),
    /// `invalid_client` (401); `basic` when the client used HTTP Basic, which then
    /// gets a `WWW-Authenticate: Basic` challenge.
    InvalidClient {
        /// The client authenticated with the `Authorization` header.
        basic: bool,
    },
    /// `invalid_grant`: the assertion was refused, and why.
    InvalidGrant(GrantError),
    /// `invalid_scope`: a requested scope is unknown or beyond what the client may
    /// have.
    InvalidScope,
    /// `invalid_target` (RFC 8707): the `resource` is not this API.
    InvalidTarget,
    /// `unauthorized_client`: this grant is not offered to this client.
    UnauthorizedClient(&'static str),
    /// `unsupported_grant_type`.
    UnsupportedGrantType,
    /// `unsupported_response_type`.
    UnsupportedResponseType,
    /// `unsupported_token_type` (RFC 7009).
    UnsupportedTokenType,
}

/// Why an assertion grant was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantError {
    /// The assertion did not verify.
    Assertion(AssertionError),
    /// Its `jti` was used before.
    Replayed,
    /// Its `client_id` is not the client that authenticated.
    ClientMismatch,
}

impl OAuthError {
    /// Every variant the token and revocation endpoints can answer, for the
    /// documentation (assertion failures once, as one row).
    pub const DOCUMENTED: &[OAuthError] = &[
        OAuthError::InvalidRequest("the request is malformed"),
        OAuthError::InvalidClient { basic: false },
        OAuthError::InvalidGrant(GrantError::Replayed),
        OAuthError::InvalidGrant(GrantError::ClientMismatch),
        OAuthError::InvalidScope,
        OAuthError::InvalidTarget,
        OAuthError::UnauthorizedClient("this grant is not offered"),
        OAuthError::UnsupportedGrantType,
        OAuthError::UnsupportedResponseType,
        OAuthError::UnsupportedTokenType,
    ];

    /// The RFC 6749 `error` value.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient { .. } => "invalid_client",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::InvalidScope => "invalid_scope",
            OAuthError::InvalidTarget => "invalid_target",
            OAuthError::UnauthorizedClient(_) => "unauthorized_client",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
            OAuthError::UnsupportedResponseType => "unsupported_response_type",
            OAuthError::UnsupportedTokenType => "unsupported_token_type",
        }
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(self) -> StatusCode {
        match self {
            OAuthError::InvalidClient { .. } => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The envelope's `code`.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "INVALID_REQUEST",
            OAuthError::InvalidClient { .. } => "INVALID_CLIENT",
            OAuthError::InvalidGrant(GrantError::Assertion(e)) => e.code(),
            OAuthError::InvalidGrant(GrantError::Replayed) => "ASSERTION_REPLAYED",
            OAuthError::InvalidGrant(GrantError::ClientMismatch) => "ASSERTION_CLIENT_MISMATCH",
            OAuthError::InvalidScope => "INVALID_SCOPE",
            OAuthError::InvalidTarget => "INVALID_TARGET",
            OAuthError::UnauthorizedClient(_) => "UNAUTHORIZED_CLIENT",
            OAuthError::UnsupportedGrantType => "UNSUPPORTED_GRANT_TYPE",
            OAuthError::UnsupportedResponseType => "UNSUPPORTED_RESPONSE_TYPE",
            OAuthError::UnsupportedTokenType => "UNSUPPORTED_TOKEN_TYPE",
        }
    }

    /// The `error_description`.
    #[must_use]
    pub fn description(self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(what) | OAuthError::UnauthorizedClient(what) => what,
            OAuthError::InvalidClient { .. } => {
                "client authentication failed: the client_id must be the id of an API key of this API and the client_secret that key"
            }
            OAuthError::InvalidGrant(GrantError::Assertion(e)) => e.message(),
            OAuthError::InvalidGrant(GrantError::Replayed) => {
                "this assertion was used before (its jti); get a fresh one from the identity provider"
            }
            OAuthError::InvalidGrant(GrantError::ClientMismatch) => {
                "the assertion's client_id is not the authenticated client"
            }
            OAuthError::InvalidScope => {
                "a requested scope is unknown or beyond what this client may have; see scopes_supported"
            }
            OAuthError::InvalidTarget => {
                "`resource` must be this API's resource identifier (the `resource` of its protected-resource metadata)"
            }
            OAuthError::UnsupportedGrantType => {
                "this grant_type is not offered; see grant_types_supported in the authorization-server metadata"
            }
            OAuthError::UnsupportedResponseType => {
                "interactive authorization is not offered; see the auth.md for the methods this API supports"
            }
            OAuthError::UnsupportedTokenType => {
                "this credential is declared in the server's configuration and cannot be revoked here; ask the operator"
            }
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_description: Option<&'a str>,
    code: &'a str,
    message: &'a str,
    docs: &'a str,
    /// x402 v1 fields of a 402 that offers payment, so v1 clients find the
    /// requirements in the same body.
    #[serde(rename = "x402Version", skip_serializing_if = "Option::is_none")]
    x402_version: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accepts: Option<&'a serde_json::Value>,
}

/// Sections of `/auth.md` that rejections point to.
#[derive(Clone, Copy)]
enum Section {
    Errors,
    UseTheCredential,
    Scopes,
    RateLimits,
}

impl Section {
    fn anchor(self) -> &'static str {
        match self {
            Section::Errors => "#errors",
            Section::UseTheCredential => "#use-the-credential",
            Section::Scopes => "#scopes",
            Section::RateLimits => "#rate-limits",
        }
    }
}

/// Turns rejections into responses for one public origin; built once per config.
#[derive(Debug, Clone)]
pub struct Responder {
    docs_base: String,
    scopes: Arc<ScopeRegistry>,
    tiers: Arc<Tiers>,
    /// Challenges of the root resource, for answers outside any route.
    challenges: Challenges,
    /// Bodies of the rejections whose text never varies, rendered once.
    missing_credential: Bytes,
    invalid_api_key: Bytes,
}

impl Responder {
    /// Builds the responder for a public origin (no trailing slash).
    pub(crate) fn new(public_url: &str, scopes: Arc<ScopeRegistry>, tiers: Arc<Tiers>) -> Self {
        let mut responder = Responder {
            challenges: Challenges::new(&format!("{public_url}{PROTECTED_RESOURCE}"), ""),
            docs_base: format!("{public_url}/auth.md"),
            scopes,
            tiers,
            missing_credential: Bytes::new(),
            invalid_api_key: Bytes::new(),
        };
        responder.missing_credential = responder.render(&Rejection::MissingCredential, None, None);
        responder.invalid_api_key = responder.render(&Rejection::InvalidApiKey, None, None);
        responder
    }

    /// The answer for a rejection. `challenges` are those of the route the request
    /// matched, if it matched one.
    #[must_use]
    pub fn respond(&self, rejection: Rejection, challenges: Option<&Challenges>) -> Response<Body> {
        self.respond_with(rejection, challenges, None)
    }

    /// The answer for a rejection, its message followed by `detail` (which must say
    /// what is wrong without repeating anything the client sent).
    #[must_use]
    pub fn respond_with(
        &self,
        rejection: Rejection,
        challenges: Option<&Challenges>,
        detail: Option<&str>,
    ) -> Response<Body> {
        self.answer(rejection, challenges, detail, None)
    }

    fn answer(
        &self,
        rejection: Rejection,
        challenges: Option<&Challenges>,
        detail: Option<&str>,
        accepts: Option<&serde_json::Value>,
    ) -> Response<Body> {
        let challenges = challenges.unwrap_or(&self.challenges);
        let (status, _, code, _) = describe(&rejection, &self.scopes, &self.tiers);
        let body = match (&rejection, detail) {
            (Rejection::MissingCredential, None) => self.missing_credential.clone(),
            (Rejection::InvalidApiKey, None) => self.invalid_api_key.clone(),
            _ => self.render(&rejection, detail, accepts),
        };
        let mut response = Response::new(Body::refusal(body, code));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match rejection {
            Rejection::MissingCredential => {
                headers.insert(WWW_AUTHENTICATE, challenges.missing.clone());
            }
            Rejection::InsufficientScope { .. } => {
                headers.insert(WWW_AUTHENTICATE, challenges.insufficient_scope.clone());
            }
            Rejection::InvalidApiKey | Rejection::InvalidToken(_) => {
                headers.insert(WWW_AUTHENTICATE, challenges.invalid_token.clone());
            }
            Rejection::AmbiguousCredentials | Rejection::MalformedCredential => {
                headers.insert(WWW_AUTHENTICATE, challenges.invalid_request.clone());
            }
            Rejection::MethodNotAllowed(allowed) => {
                if let Ok(value) = HeaderValue::from_str(&allowed.to_string()) {
                    headers.insert(ALLOW, value);
                }
            }
            Rejection::OAuth(e) => {
                headers.insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
                if let OAuthError::InvalidClient { basic: true } = e {
                    headers.insert(
                        WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"token\", charset=\"UTF-8\""),
                    );
                }
            }
            Rejection::Lifecycle(e) => {
                if let Some(seconds) = e.retry_after() {
                    headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
                }
            }
            Rejection::RateLimited { retry_after } => {
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            Rejection::Payment(PaymentError::Unavailable) | Rejection::IssuerKeysUnavailable => {
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Rejection::QuotaExceeded | Rejection::Payment(_) => {}
            Rejection::InvalidPath(_)
            | Rejection::TooLarge(_)
            | Rejection::Ambiguous(_)
            | Rejection::ClientBody
            | Rejection::RouteNotFound
            | Rejection::InsufficientTier(_)
            | Rejection::UpstreamUnavailable
            | Rejection::UpstreamTimeout => {}
        }
        response
    }

    /// The answer to a request that needs (or brought) an x402 payment. With
    /// `offer` (the `PAYMENT-REQUIRED` header value and the v1 `accepts`), the
    /// envelope also carries `x402Version: 1` and `accepts`, so v1 and v2 clients
    /// both find the requirements.
    #[must_use]
    pub fn respond_payment(
        &self,
        error: PaymentError,
        offer: Option<(&HeaderValue, &serde_json::Value)>,
        detail: Option<&str>,
    ) -> Response<Body> {
        let rejection = Rejection::Payment(error);
        let Some((header, accepts)) = offer else {
            return self.answer(rejection, None, detail, None);
        };
        let mut response = self.answer(rejection, None, detail, Some(accepts));
        response
            .headers_mut()
            .insert(HeaderName::from_static("payment-required"), header.clone());
        response
    }

    fn render(
        &self,
        rejection: &Rejection,
        detail: Option<&str>,
        accepts: Option<&serde_json::Value>,
    ) -> Bytes {
        let (_, error, code, (mut message, section)) =
            describe(rejection, &self.scopes, &self.tiers);
        if let Some(detail) = detail {
            let message = message.to_mut();
            message.push_str(": ");
            message.push_str(detail);
        }
        let docs = format!("{}{}", self.docs_base, section.anchor());
        let error_description = match rejection {
            Rejection::OAuth(e) => Some(e.description()),
            _ => None,
        };
        let envelope = Envelope {
            error,
            error_description,
            code,
            message: &message,
            docs: &docs,
            x402_version: accepts.map(|_| 1),
            accepts,
        };
        serde_json::to_vec(&envelope).map_or_else(|_| Bytes::new(), Bytes::from)
    }
}

/// Status, OAuth error name, code, message and docs section of each rejection.
fn describe(
    rejection: &Rejection,
    scopes: &ScopeRegistry,
    tiers: &Tiers,
) -> (
    StatusCode,
    &'static str,
    &'static str,
    (Cow<'static, str>, Section),
) {
    use Rejection as R;
    fn text(s: impl Into<Cow<'static, str>>, section: Section) -> (Cow<'static, str>, Section) {
        (s.into(), section)
    }
    match rejection {
        R::InvalidPath(e) => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "INVALID_PATH",
            text(format!("{e}; send the path without it"), Section::Errors),
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
            text(format!("this path accepts only {allowed}"), Section::Errors),
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
        R::MissingCredential => (
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
        R::InvalidToken(e) => (
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            e.code(),
            text(e.message(), Section::Errors),
        ),
        R::InsufficientScope { missing, .. } => (
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "FORBIDDEN",
            text(
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
            text(
                format!(
                    "this route needs the `{}` tier or higher; claim or upgrade the credential",
                    tiers.get(*required).name
                ),
                Section::Errors,
            ),
        ),
        R::OAuth(e) => (
            e.status(),
            e.name(),
            e.code(),
            text(e.description(), Section::Errors),
        ),
        R::Lifecycle(e) => {
            let (status, error, code, message) = e.describe();
            (status, error, code, text(message, Section::Errors))
        }
        R::RateLimited { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            "RATE_LIMIT_EXCEEDED",
            text(
                format!(
                    "too many requests; retry after {retry_after} s (see the RateLimit headers)"
                ),
                Section::RateLimits,
            ),
        ),
        R::QuotaExceeded => (
            StatusCode::PAYMENT_REQUIRED,
            "quota_exceeded",
            "QUOTA_EXCEEDED",
            text(
                "the request quota of this period is used up; it renews when RateLimit-Reset says",
                Section::RateLimits,
            ),
        ),
        R::Payment(e) => {
            let (status, error, code, message) = match e {
                PaymentError::Required => (
                    StatusCode::PAYMENT_REQUIRED,
                    "payment_required",
                    "PAYMENT_REQUIRED",
                    "the request quota of this period is used up; pay per the x402 requirements in PAYMENT-REQUIRED (or `accepts`) to continue",
                ),
                PaymentError::Malformed => (
                    StatusCode::BAD_REQUEST,
                    "invalid_payment",
                    "PAYMENT_MALFORMED",
                    "the payment header is not base64 JSON of an x402 payment payload for one of the offered requirements",
                ),
                PaymentError::Rejected => (
                    StatusCode::PAYMENT_REQUIRED,
                    "payment_rejected",
                    "PAYMENT_REJECTED",
                    "the facilitator refused the payment",
                ),
                PaymentError::Unavailable => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "payment_unavailable",
                    "PAYMENT_UNAVAILABLE",
                    "the payment could not be verified or settled; nothing was charged; retry shortly",
                ),
            };
            (status, error, code, text(message, Section::RateLimits))
        }
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
        R::IssuerKeysUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "ISSUER_JWKS_UNAVAILABLE",
            text(
                "the token's issuer's signing keys could not be fetched yet; retry later with the same token",
                Section::Errors,
            ),
        ),
        R::ClientBody => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "MALFORMED_BODY",
            text(
                "the request body ended early or its chunked framing is malformed; nothing was completed upstream",
                Section::Errors,
            ),
        ),
        R::Ambiguous(Ambiguity::TransferCoding) => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AMBIGUOUS_FRAMING",
            text(
                "`Transfer-Encoding` must be exactly `chunked`, once",
                Section::Errors,
            ),
        ),
        R::Ambiguous(Ambiguity::Host) => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AMBIGUOUS_HOST",
            text(
                "`Host` and `:authority` name different hosts; send one, or the same",
                Section::Errors,
            ),
        ),
        R::TooLarge(Oversize::Uri) => (
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "URI_TOO_LONG",
            text(
                "the request target is longer than this API accepts; send large input in the body",
                Section::Errors,
            ),
        ),
        R::TooLarge(Oversize::Headers) => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request_header_fields_too_large",
            "HEADERS_TOO_LARGE",
            text(
                "the request has more or larger header fields than this API accepts",
                Section::Errors,
            ),
        ),
        R::TooLarge(Oversize::Body) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "BODY_TOO_LARGE",
            text(
                "the request body is larger than this API accepts",
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
            limits: Arc::default(),
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
                Rejection::MissingCredential,
                401,
                "UNAUTHORIZED",
                Some((
                    "www-authenticate",
                    "Bearer resource_metadata=\"https://api.example.com/.well-known/oauth-protected-resource\"",
                )),
            ),
            (
                Rejection::InvalidApiKey,
                401,
                "INVALID_API_KEY",
                Some(("www-authenticate", "error=\"invalid_token\"")),
            ),
            (
                Rejection::InvalidToken(TokenError::Expired),
                401,
                "TOKEN_EXPIRED",
                Some(("www-authenticate", "error=\"invalid_token\"")),
            ),
            (
                Rejection::InsufficientScope { missing },
                403,
                "FORBIDDEN",
                Some(("www-authenticate", "error=\"insufficient_scope\"")),
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
            (Rejection::ClientBody, 400, "MALFORMED_BODY", None),
            (
                Rejection::IssuerKeysUnavailable,
                503,
                "ISSUER_JWKS_UNAVAILABLE",
                Some(("retry-after", "5")),
            ),
            (
                Rejection::Ambiguous(Ambiguity::TransferCoding),
                400,
                "AMBIGUOUS_FRAMING",
                None,
            ),
            (
                Rejection::Ambiguous(Ambiguity::Host),
                400,
                "AMBIGUOUS_HOST",
                None,
            ),
            (
                Rejection::TooLarge(Oversize::Uri),
                414,
                "URI_TOO_LONG",
                None,
            ),
            (
                Rejection::TooLarge(Oversize::Headers),
                431,
                "HEADERS_TOO_LARGE",
                None,
            ),
            (
                Rejection::TooLarge(Oversize::Body),
                413,
                "BODY_TOO_LARGE",
                None,
            ),
            (
                Rejection::RateLimited { retry_after: 7 },
                429,
                "RATE_LIMIT_EXCEEDED",
                Some(("retry-after", "7")),
            ),
            (Rejection::QuotaExceeded, 402, "QUOTA_EXCEEDED", None),
            (
                Rejection::Payment(PaymentError::Required),
                402,
                "PAYMENT_REQUIRED",
                None,
            ),
            (
                Rejection::Payment(PaymentError::Malformed),
                400,
                "PAYMENT_MALFORMED",
                None,
            ),
            (
                Rejection::Payment(PaymentError::Rejected),
                402,
                "PAYMENT_REJECTED",
                None,
            ),
            (
                Rejection::Payment(PaymentError::Unavailable),
                503,
                "PAYMENT_UNAVAILABLE",
                Some(("retry-after", "5")),
            ),
        ];
        let cases = cases.into_iter().chain([
            (
                Rejection::OAuth(OAuthError::InvalidRequest("x")),
                400,
                "INVALID_REQUEST",
                Some(("pragma", "no-cache")),
            ),
            (
                Rejection::OAuth(OAuthError::UnsupportedGrantType),
                400,
                "UNSUPPORTED_GRANT_TYPE",
                None,
            ),
            (
                Rejection::OAuth(OAuthError::UnsupportedResponseType),
                400,
                "UNSUPPORTED_RESPONSE_TYPE",
                None,
            ),
            (
                Rejection::OAuth(OAuthError::UnsupportedTokenType),
                400,
                "UNSUPPORTED_TOKEN_TYPE",
                None,
            ),
            (
                Rejection::OAuth(OAuthError::InvalidClient { basic: true }),
                401,
                "INVALID_CLIENT",
                Some(("www-authenticate", "Basic realm=")),
            ),
            (
                Rejection::OAuth(OAuthError::InvalidScope),
                400,
                "INVALID_SCOPE",
                Some(("pragma", "no-cache")),
            ),
            (
                Rejection::OAuth(OAuthError::InvalidTarget),
                400,
                "INVALID_TARGET",
                None,
            ),
            (
                Rejection::OAuth(OAuthError::InvalidGrant(GrantError::Replayed)),
                400,
                "ASSERTION_REPLAYED",
                None,
            ),
        ]);
        for (rejection, status, code, header) in cases {
            let documented = ERROR_CODES
                .iter()
                .any(|d| d.code == code && d.status == status)
                || OAuthError::DOCUMENTED
                    .iter()
                    .any(|e| e.code() == code && e.status().as_u16() == status)
                || TokenError::ALL
                    .iter()
                    .any(|e| e.code() == code && status == 401);
            assert!(documented, "{code} is not documented");
            let response = r.respond(rejection, None);
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
