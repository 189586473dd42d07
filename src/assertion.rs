//! Identity assertions: ID-JAG JWTs (draft-ietf-oauth-identity-assertion-authz-grant)
//! and, as `verified_email`, OpenID Connect `id_token`s with a verified e-mail address
//! ([`email`]), from configured trusted issuers, verified against each issuer's JWKS.
//!
//! The issuer is matched exactly before any key is looked at, so an unknown issuer
//! never causes network traffic. The algorithm comes from the issuer's key, never
//! from the token: HMAC and `none` are refused, and a token whose header names
//! another algorithm than its key is refused. The keys are the issuer's
//! [`RemoteKeys`], kept fresh in the background; a token naming an unknown `kid`
//! asks for a (throttled) refetch. The `jti` replay check is the caller's (it needs
//! the durable store).

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use crate::protocol::{ID_JAG, ID_TOKEN, VERIFIED_EMAIL};
use crate::tokens::Issuer;
use crate::tokens::remote::RemoteKey;

mod email;

/// The `typ` an ID-JAG carries.
const TYP: &str = "oauth-id-jag+jwt";
/// Clock skew allowed on `exp`, `nbf` and `iat`.
const LEEWAY: u64 = 60;

/// What an identity assertion is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionKind {
    /// An ID-JAG (`typ: oauth-id-jag+jwt`, `aud` this server).
    IdJag,
    /// An OpenID Connect `id_token` with `email_verified: true` (`aud` the client id
    /// this API has at the issuer).
    VerifiedEmail,
}

impl AssertionKind {
    /// The kind an `assertion_type` value names: the ID-JAG URN, or
    /// `verified_email` (also spelled as the RFC 8693 `id_token` token type).
    #[must_use]
    pub fn parse(assertion_type: &str) -> Option<AssertionKind> {
        match assertion_type {
            ID_JAG => Some(AssertionKind::IdJag),
            VERIFIED_EMAIL | ID_TOKEN => Some(AssertionKind::VerifiedEmail),
            _ => None,
        }
    }

    /// Its `assertion_type`, as advertised.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            AssertionKind::IdJag => ID_JAG,
            AssertionKind::VerifiedEmail => VERIFIED_EMAIL,
        }
    }
}

/// A verified assertion's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    /// What it was.
    pub kind: AssertionKind,
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `jti`, for the caller's replay check (an `id_token` without one: a digest of
    /// the token).
    pub jti: String,
    /// `exp` (an `id_token`: the earlier of `exp` and the end of its `max_age`).
    pub expires_at: i64,
    /// `iat`.
    pub issued_at: i64,
    /// `client_id`, when present.
    pub client_id: Option<String>,
    /// `email`, when present: verified for [`AssertionKind::VerifiedEmail`], only
    /// what the issuer says for an ID-JAG.
    pub email: Option<String>,
    /// Requested scopes (`scope`), in order, without repeats.
    pub scopes: Vec<String>,
}

impl VerifiedAssertion {
    /// Until when its use must be remembered: past its acceptance, clock skew
    /// included.
    #[must_use]
    pub fn remember_until(&self) -> i64 {
        self.expires_at
            .saturating_add(i64::try_from(LEEWAY).unwrap_or(60))
    }
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
    /// `verified_email`: not an `id_token` with iss, sub, aud, exp, iat and email.
    #[error("the id_token is malformed")]
    IdTokenMalformed,
    /// `verified_email`: the `typ` is neither `JWT` nor absent.
    #[error("the id_token's typ is wrong")]
    IdTokenWrongType,
    /// `verified_email`: `aud` (or `azp`) is not this API's client id.
    #[error("the id_token's audience is wrong")]
    IdTokenAudience,
    /// `verified_email`: issued longer ago than `max_age`.
    #[error("the id_token is too old")]
    IdTokenTooOld,
    /// `verified_email`: `email_verified` is not true.
    #[error("the e-mail address is not verified")]
    EmailNotVerified,
    /// `verified_email`: the address is outside `email_domains`.
    #[error("the e-mail domain is not accepted")]
    EmailDomainNotAllowed,
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
            AssertionError::IdTokenMalformed => "INVALID_ASSERTION",
            AssertionError::IdTokenWrongType => "INVALID_ASSERTION_TYPE",
            AssertionError::IdTokenAudience => "ASSERTION_AUDIENCE_MISMATCH",
            AssertionError::IdTokenTooOld => "ASSERTION_TOO_OLD",
            AssertionError::EmailNotVerified => "EMAIL_NOT_VERIFIED",
            AssertionError::EmailDomainNotAllowed => "EMAIL_DOMAIN_NOT_ALLOWED",
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
            AssertionError::IdTokenMalformed => {
                "the verified_email assertion is not an OpenID Connect id_token with iss, sub, aud, exp, iat and an e-mail address"
            }
            AssertionError::IdTokenWrongType => {
                "a verified_email assertion is an OpenID Connect id_token (`typ` JWT or none); send an ID-JAG with `assertion_type: urn:ietf:params:oauth:token-type:id-jag`"
            }
            AssertionError::IdTokenAudience => {
                "the id_token's `aud` (and `azp`) must be the client id this API is registered with at the issuer"
            }
            AssertionError::IdTokenTooOld => {
                "the id_token was issued too long ago; sign in at the issuer again for a fresh one"
            }
            AssertionError::EmailNotVerified => {
                "the id_token's `email_verified` is not true: only a verified e-mail address identifies a person here"
            }
            AssertionError::EmailDomainNotAllowed => {
                "the id_token's e-mail address is not in a domain this API accepts"
            }
        }
    }
}

/// Verifies identity assertions.
#[derive(Debug)]
pub struct AssertionVerifier {
    issuers: Vec<Arc<Issuer>>,
    audiences: Vec<String>,
    max_lifetime: Duration,
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
    /// A verifier for those of `issuers` trusted for identity assertions (ID-JAGs,
    /// `verified_email` `id_token`s or both), accepting ID-JAG `aud` values in
    /// `audiences`.
    #[must_use]
    pub fn new(issuers: &[Arc<Issuer>], audiences: Vec<String>) -> AssertionVerifier {
        AssertionVerifier {
            issuers: issuers
                .iter()
                .filter(|i| i.settings.vouches_for_people())
                .cloned()
                .collect(),
            audiences,
            max_lifetime: Duration::from_secs(3600),
        }
    }

    /// The same, with another longest accepted assertion lifetime.
    #[must_use]
    pub fn with_max_lifetime(mut self, max: Duration) -> AssertionVerifier {
        self.max_lifetime = max;
        self
    }

    /// True when at least one issuer is trusted for identity assertions.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        !self.issuers.is_empty()
    }

    /// True when at least one issuer is trusted for assertions of `kind`.
    #[must_use]
    pub fn accepts(&self, kind: AssertionKind) -> bool {
        self.issuers.iter().any(|i| match kind {
            AssertionKind::IdJag => i.settings.identity_assertions,
            AssertionKind::VerifiedEmail => i.settings.verified_email.is_some(),
        })
    }

    /// The kind of an assertion sent without `assertion_type`: an ID-JAG when its
    /// `typ` says so or when no issuer is trusted for `id_token`s, else an
    /// `id_token`. Each kind is then verified by its own rules, so a guess that is
    /// wrong is refused, never accepted as the other kind.
    #[must_use]
    pub fn kind_of(&self, jwt: &str) -> AssertionKind {
        let id_jag = jsonwebtoken::decode_header(jwt)
            .ok()
            .and_then(|h| h.typ)
            .is_some_and(|typ| {
                let typ = typ.to_ascii_lowercase();
                typ == TYP || typ == format!("application/{TYP}")
            });
        if id_jag || !self.accepts(AssertionKind::VerifiedEmail) {
            AssertionKind::IdJag
        } else {
            AssertionKind::VerifiedEmail
        }
    }

    /// Verifies an identity assertion of `kind` at unix time `now`.
    pub async fn verify_kind(
        &self,
        kind: AssertionKind,
        jwt: &str,
        now: i64,
    ) -> Result<VerifiedAssertion, AssertionError> {
        match kind {
            AssertionKind::IdJag => self.verify(jwt, now).await,
            AssertionKind::VerifiedEmail => self.verify_id_token(jwt, now).await,
        }
    }

    /// Verifies an ID-JAG at unix time `now` (the jwt-bearer grant takes only these).
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
            .find(|i| i.settings.identity_assertions && i.settings.issuer == iss)
            .ok_or(AssertionError::UntrustedIssuer)?;
        let key = key(issuer, header.kid.as_deref()).await?;
        let algorithm = key.algorithm;
        if algorithm != header.alg {
            return Err(AssertionError::UnsupportedAlgorithm);
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY;
        validation.validate_nbf = true;
        validation.set_audience(&self.audiences);
        validation.set_issuer(&[&issuer.settings.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let data = jsonwebtoken::decode::<Claims>(jwt, &key.key, &validation).map_err(|e| {
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
            kind: AssertionKind::IdJag,
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
}

/// The issuer key named `kid` (or its only key), refetching the issuer's keys once
/// (throttled) when it has none such.
async fn key(issuer: &Issuer, kid: Option<&str>) -> Result<Arc<RemoteKey>, AssertionError> {
    if let Some(key) = issuer.keys.find(kid) {
        return Ok(key);
    }
    issuer.keys.refetch().await;
    match issuer.keys.find(kid) {
        Some(key) => Ok(key),
        None if !issuer.keys.is_loaded() => Err(AssertionError::JwksUnavailable),
        None => Err(AssertionError::UnknownKey),
    }
}
