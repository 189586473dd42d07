//! Identity assertions: ID-JAG JWTs (draft-ietf-oauth-identity-assertion-authz-grant)
//! from configured trusted issuers, verified against each issuer's JWKS.
//!
//! The issuer is matched exactly before any key is fetched, so an unknown issuer
//! never causes network traffic. The algorithm comes from the issuer's key, never
//! from the token: HMAC and `none` are refused, and a token whose header names
//! another algorithm than its key is refused. Each issuer's JWKS is fetched on first
//! use, cached for an hour, and refetched when a token names an unknown `kid`, at
//! most once per 30 seconds, by one task at a time. The `jti` replay check is the
//! caller's (it needs the durable store).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::time::Instant;

/// The `typ` an ID-JAG carries.
const TYP: &str = "oauth-id-jag+jwt";
/// Clock skew allowed on `exp`, `nbf` and `iat`.
const LEEWAY: u64 = 60;
/// A cached JWKS is refetched after this long.
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// An unknown `kid` refetches at most this often per issuer.
const REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Largest JWKS read.
const MAX_JWKS: usize = 256 * 1024;

/// One trusted identity-assertion issuer (validated by the config loader).
#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    /// The exact `iss` value.
    pub issuer: String,
    /// Where its signing keys are published.
    pub jwks_uri: Uri,
}

/// A verified assertion's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `jti`, for the caller's replay check.
    pub jti: String,
    /// `exp`.
    pub expires_at: i64,
    /// `iat`.
    pub issued_at: i64,
    /// `client_id`, when present.
    pub client_id: Option<String>,
    /// `email`, when present.
    pub email: Option<String>,
    /// Requested scopes (`scope`), in order, without repeats.
    pub scopes: Vec<String>,
}

/// Why an assertion was refused. Carries nothing from the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    /// Not a JWT, or a required claim is missing or malformed.
    #[error("the assertion is malformed")]
    Malformed,
    /// `typ` is not `oauth-id-jag+jwt`.
    #[error("the assertion's typ is wrong")]
    WrongType,
    /// `iss` is not a trusted issuer.
    #[error("the issuer is not trusted")]
    UntrustedIssuer,
    /// `none`, HMAC, or a header algorithm that differs from the key's.
    #[error("the algorithm is not accepted")]
    UnsupportedAlgorithm,
    /// No key of the issuer matches.
    #[error("no issuer key matches")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the signature is invalid")]
    InvalidSignature,
    /// `exp` has passed.
    #[error("the assertion has expired")]
    Expired,
    /// `nbf` or `iat` is in the future.
    #[error("the assertion is not valid yet")]
    NotYetValid,
    /// `exp` is further away than an assertion may live.
    #[error("the assertion lives too long")]
    LifetimeTooLong,
    /// `aud` does not name this server.
    #[error("the audience is wrong")]
    WrongAudience,
    /// The issuer's JWKS could not be fetched or read.
    #[error("the issuer's keys are unavailable")]
    JwksUnavailable,
}

impl AssertionError {
    /// The envelope's `code`.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            AssertionError::Malformed => "INVALID_ASSERTION",
            AssertionError::WrongType => "INVALID_ASSERTION_TYPE",
            AssertionError::UntrustedIssuer => "UNTRUSTED_ISSUER",
            AssertionError::UnsupportedAlgorithm => "UNSUPPORTED_ASSERTION_ALGORITHM",
            AssertionError::UnknownKey => "UNKNOWN_ASSERTION_KEY",
            AssertionError::InvalidSignature => "INVALID_ASSERTION_SIGNATURE",
            AssertionError::Expired => "ASSERTION_EXPIRED",
            AssertionError::NotYetValid => "ASSERTION_NOT_YET_VALID",
            AssertionError::LifetimeTooLong => "ASSERTION_LIFETIME_TOO_LONG",
            AssertionError::WrongAudience => "ASSERTION_AUDIENCE_MISMATCH",
            AssertionError::JwksUnavailable => "ISSUER_JWKS_UNAVAILABLE",
        }
    }

    /// One sentence for a human.
    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            AssertionError::Malformed => {
                "the identity assertion is not a JWT with iss, sub, aud, jti, exp and iat"
            }
            AssertionError::WrongType => "the identity assertion must have `typ: oauth-id-jag+jwt`",
            AssertionError::UntrustedIssuer => {
                "the identity assertion's issuer is not trusted by this API"
            }
            AssertionError::UnsupportedAlgorithm => {
                "the identity assertion's algorithm does not match its issuer's key (none and HMAC are refused)"
            }
            AssertionError::UnknownKey => {
                "no key of the issuer matches the identity assertion's `kid`"
            }
            AssertionError::InvalidSignature => {
                "the identity assertion's signature does not verify"
            }
            AssertionError::Expired => "the identity assertion has expired; get a fresh one",
            AssertionError::NotYetValid => {
                "the identity assertion is not valid yet (nbf or iat in the future)"
            }
            AssertionError::LifetimeTooLong => {
                "the identity assertion lives longer than an assertion may (at most an hour)"
            }
            AssertionError::WrongAudience => {
                "the identity assertion's `aud` must be this server's issuer URL"
            }
            AssertionError::JwksUnavailable => {
                "the issuer's signing keys could not be fetched; retry later"
            }
        }
    }
}

/// What is cached of one issuer's keys.
#[derive(Debug, Default)]
struct Cached {
    keys: Option<Arc<JwkSet>>,
    fetched: Option<Instant>,
}

#[derive(Debug)]
struct Issuer {
    trusted: TrustedIssuer,
    /// Read briefly to clone the `Arc`; never held across I/O.
    cache: tokio::sync::RwLock<Cached>,
    /// Held while fetching, so concurrent verifications fetch once.
    fetching: tokio::sync::Mutex<()>,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Verifies identity assertions.
#[derive(Debug)]
pub struct AssertionVerifier {
    issuers: Vec<Issuer>,
    audiences: Vec<String>,
    max_lifetime: Duration,
    client: HttpsClient,
}

#[derive(Deserialize)]
struct Peek {
    iss: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    jti: String,
    exp: i64,
    iat: i64,
    client_id: Option<String>,
    email: Option<String>,
    scope: Option<String>,
}

impl AssertionVerifier {
    /// A verifier for `issuers`, accepting `aud` values in `audiences`. Must be
    /// called inside a Tokio runtime.
    #[must_use]
    pub fn new(issuers: Vec<TrustedIssuer>, audiences: Vec<String>) -> AssertionVerifier {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        AssertionVerifier {
            issuers: issuers
                .into_iter()
                .map(|trusted| Issuer {
                    trusted,
                    cache: tokio::sync::RwLock::new(Cached::default()),
                    fetching: tokio::sync::Mutex::new(()),
                })
                .collect(),
            audiences,
            max_lifetime: Duration::from_secs(3600),
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// The same, with another longest accepted assertion lifetime.
    #[must_use]
    pub fn with_max_lifetime(mut self, max: Duration) -> AssertionVerifier {
        self.max_lifetime = max;
        self
    }

    /// True when at least one issuer is trusted.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        !self.issuers.is_empty()
    }

    /// Verifies an assertion at unix time `now`.
    pub async fn verify(&self, jwt: &str, now: i64) -> Result<VerifiedAssertion, AssertionError> {
        let header = jsonwebtoken::decode_header(jwt).map_err(|_| AssertionError::Malformed)?;
        let typ = header
            .typ
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if typ != TYP && typ != format!("application/{TYP}") {
            return Err(AssertionError::WrongType);
        }
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(AssertionError::UnsupportedAlgorithm);
        }
        let peek: Peek = jsonwebtoken::dangerous::insecure_decode_claims(jwt)
            .map_err(|_| AssertionError::Malformed)?;
        let iss = peek.iss.ok_or(AssertionError::Malformed)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.trusted.issuer == iss)
            .ok_or(AssertionError::UntrustedIssuer)?;
        let jwk = self.key(issuer, header.kid.as_deref()).await?;
        let algorithm = algorithm_of(&jwk).ok_or(AssertionError::UnsupportedAlgorithm)?;
        if algorithm != header.alg {
            return Err(AssertionError::UnsupportedAlgorithm);
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| AssertionError::UnknownKey)?;
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY;
        validation.validate_nbf = true;
        validation.set_audience(&self.audiences);
        validation.set_issuer(&[&issuer.trusted.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let data = jsonwebtoken::decode::<Claims>(jwt, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => AssertionError::InvalidSignature,
                K::ExpiredSignature => AssertionError::Expired,
                K::ImmatureSignature => AssertionError::NotYetValid,
                K::InvalidAudience => AssertionError::WrongAudience,
                K::InvalidIssuer => AssertionError::UntrustedIssuer,
                K::InvalidAlgorithm | K::UnsupportedAlgorithm => {
                    AssertionError::UnsupportedAlgorithm
                }
                _ => AssertionError::Malformed,
            }
        })?;
        let claims = data.claims;
        let leeway = i64::try_from(LEEWAY).unwrap_or(60);
        if claims.exp + leeway <= now {
            return Err(AssertionError::Expired);
        }
        if claims.iat > now + leeway {
            return Err(AssertionError::NotYetValid);
        }
        let max = i64::try_from(self.max_lifetime.as_secs()).unwrap_or(i64::MAX / 2);
        if claims.exp - now > max + leeway {
            return Err(AssertionError::LifetimeTooLong);
        }
        let mut scopes: Vec<String> = Vec::new();
        for scope in claims
            .scope
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
        {
            if !scopes.iter().any(|s| s == scope) {
                scopes.push(scope.to_owned());
            }
        }
        Ok(VerifiedAssertion {
            issuer: claims.iss,
            subject: claims.sub,
            jti: claims.jti,
            expires_at: claims.exp,
            issued_at: claims.iat,
            client_id: claims.client_id,
            email: claims.email,
            scopes,
        })
    }

    /// The issuer key named `kid` (or its only key), fetching the JWKS when needed.
    async fn key(&self, issuer: &Issuer, kid: Option<&str>) -> Result<Jwk, AssertionError> {
        let (cached, fetched) = {
            let cache = issuer.cache.read().await;
            (cache.keys.clone(), cache.fetched)
        };
        let fresh = fetched.is_some_and(|at| at.elapsed() < JWKS_MAX_AGE);
        if let (Some(keys), true) = (&cached, fresh) {
            if let Some(jwk) = find(keys, kid) {
                return Ok(jwk);
            }
            if fetched.is_some_and(|at| at.elapsed() < REFRESH_INTERVAL) {
                return Err(AssertionError::UnknownKey);
            }
        }
        let _fetching = issuer.fetching.lock().await;
        // Someone else may have fetched while this task waited.
        {
            let cache = issuer.cache.read().await;
            if let (Some(keys), Some(at)) = (&cache.keys, cache.fetched) {
                if at.elapsed() < REFRESH_INTERVAL {
                    return find(keys, kid).ok_or(AssertionError::UnknownKey);
                }
            }
        }
        let keys = Arc::new(self.fetch(&issuer.trusted.jwks_uri).await?);
        let found = find(&keys, kid);
        let mut cache = issuer.cache.write().await;
        cache.keys = Some(keys);
        cache.fetched = Some(Instant::now());
        found.ok_or(AssertionError::UnknownKey)
    }

    async fn fetch(&self, uri: &Uri) -> Result<JwkSet, AssertionError> {
        let request = async {
            let response = self
                .client
                .get(uri.clone())
                .await
                .map_err(|_| AssertionError::JwksUnavailable)?;
            if response.status() != http::StatusCode::OK {
                return Err(AssertionError::JwksUnavailable);
            }
            let body = Limited::new(response.into_body(), MAX_JWKS)
                .collect()
                .await
                .map_err(|_| AssertionError::JwksUnavailable)?
                .to_bytes();
            serde_json::from_slice::<JwkSet>(&body).map_err(|_| AssertionError::JwksUnavailable)
        };
        let result = tokio::time::timeout(Duration::from_secs(5), request)
            .await
            .unwrap_or(Err(AssertionError::JwksUnavailable));
        if result.is_err() {
            tracing::warn!(jwks_uri = %uri, "cannot fetch an identity issuer's JWKS");
        }
        result
    }
}

/// The key named `kid`, or the only key when the token names none.
fn find(keys: &JwkSet, kid: Option<&str>) -> Option<Jwk> {
    match kid {
        Some(kid) => keys
            .keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .cloned(),
        None if keys.keys.len() == 1 => keys.keys.first().cloned(),
        None => None,
    }
}

/// The algorithm a key is for: its `alg`, or what its type and curve imply.
/// Symmetric keys have none: an HMAC "public key" is a classic confusion attack.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    if let AlgorithmParameters::OctetKey(_) = jwk.algorithm {
        return None;
    }
    if let Some(alg) = &jwk.common.key_algorithm {
        return match alg {
            KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
            KeyAlgorithm::ES256 => Some(Algorithm::ES256),
            KeyAlgorithm::ES384 => Some(Algorithm::ES384),
            KeyAlgorithm::RS256 => Some(Algorithm::RS256),
            KeyAlgorithm::RS384 => Some(Algorithm::RS384),
            KeyAlgorithm::RS512 => Some(Algorithm::RS512),
            KeyAlgorithm::PS256 => Some(Algorithm::PS256),
            KeyAlgorithm::PS384 => Some(Algorithm::PS384),
            KeyAlgorithm::PS512 => Some(Algorithm::PS512),
            _ => None,
        };
    }
    match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        _ => None,
    }
}
