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
mod oauth;

use crate::body::Body;
use crate::credentials::CredentialError;
use crate::limits::x402::PaymentError;
use crate::policy::Challenges;
use crate::policy::{MethodSet, PathError, PolicyError};
use crate::protocol::PROTECTED_RESOURCE;
use crate::proxy::ForwardError;
use crate::proxy::headers::Ambiguity;
use crate::proxy::headers::Oversize;
use crate::scope::{ScopeRegistry, ScopeSet};
use crate::tier::{TierId, Tiers};
use crate::tokens::TokenError;
pub use lifecycle::LifecycleError;
pub use oauth::{GrantError, OAuthError};

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
    /// The fleet-wide rate limits could not be asked, and the config refuses
    /// rather than guess (`limits.global.on_unavailable: closed`).
    RateLimitUnavailable {
        /// Seconds until they are asked again.
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
            PolicyError::WrongResource => Rejection::InvalidToken(TokenError::WrongResource),
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

/// Every code the proxy's own refusals can answer, for `/auth.md`'s error table:
/// status and code from `describe`, the same place the answers take them from.
pub fn error_codes() -> impl Iterator<Item = ErrorDoc> {
    documented()
        .into_iter()
        .map(|(rejection, meaning, action)| {
            let (status, _, code, _) = describe(&rejection);
            ErrorDoc {
                status: status.as_u16(),
                code,
                meaning,
                action,
            }
        })
}

/// One rejection of each code, with what it means and what an agent should do, in
/// the table's order.
fn documented() -> [(Rejection, &'static str, &'static str); 24] {
    use Rejection as R;
    [
        (
            R::InvalidPath(PathError::Semicolon),
            "The path has an encoded separator, a `;` parameter, a backslash or a malformed escape.",
            "Send the plain path.",
        ),
        (
            R::IssuerKeysUnavailable,
            "The issuer of the token or identity assertion is trusted, but its signing keys could not be fetched yet.",
            "Wait `Retry-After` seconds, then retry with the same token or assertion.",
        ),
        (
            R::ClientBody,
            "The request body ended early or its chunked framing is malformed.",
            "Send the whole body, correctly framed.",
        ),
        (
            R::Ambiguous(Ambiguity::TransferCoding),
            "A `Transfer-Encoding` other than exactly one `chunked`.",
            "Send `Content-Length`, or `Transfer-Encoding: chunked` alone.",
        ),
        (
            R::Ambiguous(Ambiguity::Host),
            "An HTTP/2 request whose `Host` differs from its `:authority`.",
            "Send the same host in both, or only `:authority`.",
        ),
        (
            R::TooLarge(Oversize::Uri),
            "The request target is longer than this API accepts.",
            "Send large input in the body.",
        ),
        (
            R::TooLarge(Oversize::Headers),
            "More or larger header fields than this API accepts.",
            "Send fewer or smaller headers.",
        ),
        (
            R::TooLarge(Oversize::Body),
            "The declared body is larger than this API accepts.",
            "Send a smaller body.",
        ),
        (
            R::AmbiguousCredentials,
            "More than one credential, or a credential header sent twice.",
            "Send exactly one credential, once.",
        ),
        (
            R::MissingCredential,
            "This route needs a credential and none was sent.",
            "Follow `resource_metadata` in `WWW-Authenticate`, get a credential, retry with it.",
        ),
        (
            R::InvalidApiKey,
            "The API key is malformed, unknown or revoked.",
            "Do not retry with this key; get a new one.",
        ),
        (
            R::InsufficientScope {
                missing: ScopeSet::EMPTY,
            },
            "The credential lacks a scope this route requires (named in the message and in `WWW-Authenticate`).",
            "Use a credential that has the scope.",
        ),
        (
            R::InsufficientTier(TierId::ANONYMOUS),
            "The credential's tier is below what this route requires.",
            "Use a credential of a higher tier.",
        ),
        (
            R::RouteNotFound,
            "No route matches this path.",
            "Check the path against the API's documentation.",
        ),
        (
            R::MethodNotAllowed(MethodSet::default()),
            "The path exists but not with this method.",
            "Use a method listed in `Allow`.",
        ),
        (
            R::RateLimited { retry_after: 1 },
            "Too many requests in a rate window (`RateLimit-*` headers say which, and when it refills).",
            "Wait `Retry-After` seconds, then retry; or use a credential of a higher tier.",
        ),
        (
            R::RateLimitUnavailable { retry_after: 1 },
            "The fleet-wide rate limits could not be checked (their Redis is down or slow) and this API refuses rather than guess.",
            "Retry after `Retry-After` seconds.",
        ),
        (
            R::QuotaExceeded,
            "The request quota of the period is used up.",
            "Wait for the period to end (`RateLimit-Reset`), or use a credential of a higher tier.",
        ),
        (
            R::Payment(PaymentError::Required),
            "The quota is used up; the response carries x402 payment requirements (`PAYMENT-REQUIRED` header, v1 `accepts` in the body).",
            "Pay with an x402 client: retry with `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT` (v1).",
        ),
        (
            R::Payment(PaymentError::Malformed),
            "The payment header is not base64 JSON of an x402 payment payload matching one of the offered requirements.",
            "Build the payment from the requirements of the last 402.",
        ),
        (
            R::Payment(PaymentError::Rejected),
            "The facilitator found the payment invalid (reason in the message and in `error`).",
            "Fix what the reason names (funds, signature, network) and pay again.",
        ),
        (
            R::Payment(PaymentError::Unavailable),
            "The payment could not be verified or settled; nothing was charged.",
            "Wait `Retry-After` seconds, then retry with a fresh payment.",
        ),
        (
            R::UpstreamUnavailable,
            "The API behind this server could not be reached.",
            "Retry with exponential backoff.",
        ),
        (
            R::UpstreamTimeout,
            "The API behind this server did not answer in time.",
            "Retry with exponential backoff.",
        ),
    ]
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
    #[must_use]
    pub fn new(public_url: &str, scopes: Arc<ScopeRegistry>, tiers: Arc<Tiers>) -> Self {
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
        let (status, _, code, _) = describe(&rejection);
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
            Rejection::RateLimited { retry_after }
            | Rejection::RateLimitUnavailable { retry_after } => {
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
        let (_, error, code, (message, section)) = describe(rejection);
        let mut message = match message {
            Message::Text(text) => text,
            Message::Lacks(missing) => Cow::Owned(format!(
                "the credential lacks the scope(s) this route requires: {}",
                self.scopes.names(&missing)
            )),
            Message::Below(required) => Cow::Owned(format!(
                "this route needs the `{}` tier or higher; claim or upgrade the credential",
                self.tiers.get(required).name
            )),
        };
        if let Some(detail) = detail {
            let message = message.to_mut();
            message.push_str(": ");
            message.push_str(detail);
        }
        let docs = format!("{}{}", self.docs_base, section.anchor());
        let error_description = if let Rejection::OAuth(e) = rejection {
            Some(e.description())
        } else {
            None
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

/// A rejection's message: a text, or one that names what this config calls a
/// scope set or a tier (the responder knows the names).
enum Message {
    Text(Cow<'static, str>),
    /// The route's scopes the credential lacks.
    Lacks(ScopeSet),
    /// The lowest tier the route admits.
    Below(TierId),
}

/// Status, OAuth error name, code, message and docs section of each rejection.
fn describe(rejection: &Rejection) -> (StatusCode, &'static str, &'static str, (Message, Section)) {
    use Rejection as R;
    fn text(s: impl Into<Cow<'static, str>>, section: Section) -> (Message, Section) {
        (Message::Text(s.into()), section)
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
            (Message::Lacks(*missing), Section::Scopes),
        ),
        R::InsufficientTier(required) => (
            StatusCode::FORBIDDEN,
            "insufficient_tier",
            "INSUFFICIENT_TIER",
            (Message::Below(*required), Section::Errors),
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
        R::RateLimitUnavailable { retry_after } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "RATE_LIMIT_UNAVAILABLE",
            text(
                format!("the rate limits cannot be checked right now; retry after {retry_after} s"),
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
mod tests;
