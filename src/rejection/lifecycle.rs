//! Refusals of the credential lifecycle endpoints (registration, claims, key
//! management): their statuses, codes and messages, in one table.

use http::StatusCode;

use crate::assertion::AssertionError;

/// Why a lifecycle endpoint refused a request. Nothing is written to the store when
/// one of these is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleError {
    /// The body is not the JSON this endpoint takes (detail: what is wrong).
    InvalidBody,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// The body is larger than the endpoint reads.
    BodyTooLarge,
    /// A requested scope is not declared.
    InvalidScope,
    /// A key asked for scopes it does not hold itself.
    ScopeEscalation,
    /// No key with this id.
    KeyNotFound,
    /// The key belongs to someone else.
    NotKeyOwner,
    /// The key is declared in the configuration and cannot be changed here.
    KeyNotManaged,
    /// The owner holds as many keys as allowed.
    KeyLimitReached,
    /// The credential store cannot be reached; nothing was changed.
    StoreUnavailable,
    /// Anonymous registration is turned off.
    AnonymousNotEnabled,
    /// No identity issuer is configured.
    IdentityAssertionNotEnabled,
    /// The requested credential type is not offered.
    UnsupportedCredentialType,
    /// The assertion type is not offered.
    UnsupportedAssertionType,
    /// The identity assertion failed verification.
    Assertion(AssertionError),
    /// The identity assertion was used before.
    ReplayDetected,
    /// The claim token is unknown.
    InvalidClaimToken,
    /// The registration is unknown.
    RegistrationNotFound,
    /// The claim token has expired.
    ClaimExpired,
    /// The registration was claimed already.
    PreviouslyClaimed,
    /// A claim needs an identity assertion.
    IdentityRequired,
    /// The registration's key was revoked.
    RegistrationRevoked,
    /// The person is not among those `registration.claim.allowed` lets claim.
    ClaimNotAllowed,
    /// The `user_code` is not the one the claim page showed (detail: tries left).
    UserCodeInvalid,
    /// Too many wrong `user_code`s: the operator must confirm again on the page.
    UserCodeLocked,
    /// The `user_code` expired: the operator must confirm again on the page.
    UserCodeExpired,
    /// No `user_code` is pending: the operator has not confirmed on the page yet.
    UserCodeNotIssued,
    /// Too many registrations from this address; retry after the given seconds.
    RateLimited {
        /// Seconds until a registration is allowed again.
        retry_after: u32,
    },
}

impl LifecycleError {
    /// The refusals `/auth.md` documents (assertion failures are represented by one
    /// row per kind of fix, not one per check).
    pub const DOCUMENTED: &[LifecycleError] = &[
        LifecycleError::InvalidBody,
        LifecycleError::UnsupportedMediaType,
        LifecycleError::BodyTooLarge,
        LifecycleError::InvalidScope,
        LifecycleError::ScopeEscalation,
        LifecycleError::KeyNotFound,
        LifecycleError::NotKeyOwner,
        LifecycleError::KeyNotManaged,
        LifecycleError::KeyLimitReached,
        LifecycleError::AnonymousNotEnabled,
        LifecycleError::IdentityAssertionNotEnabled,
        LifecycleError::UnsupportedCredentialType,
        LifecycleError::UnsupportedAssertionType,
        LifecycleError::Assertion(AssertionError::Expired),
        LifecycleError::ReplayDetected,
        LifecycleError::InvalidClaimToken,
        LifecycleError::RegistrationNotFound,
        LifecycleError::ClaimExpired,
        LifecycleError::PreviouslyClaimed,
        LifecycleError::IdentityRequired,
        LifecycleError::RegistrationRevoked,
        LifecycleError::ClaimNotAllowed,
        LifecycleError::UserCodeInvalid,
        LifecycleError::UserCodeLocked,
        LifecycleError::UserCodeExpired,
        LifecycleError::UserCodeNotIssued,
        LifecycleError::RateLimited { retry_after: 0 },
        LifecycleError::StoreUnavailable,
    ];

    /// Status, OAuth-style error name, code and message.
    #[must_use]
    pub fn describe(self) -> (StatusCode, &'static str, &'static str, &'static str) {
        use LifecycleError as E;
        use StatusCode as S;
        match self {
            E::InvalidBody => (
                S::BAD_REQUEST,
                "invalid_request",
                "INVALID_REQUEST",
                "the request body is not what this endpoint takes",
            ),
            E::UnsupportedMediaType => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request",
                "UNSUPPORTED_MEDIA_TYPE",
                "send the body as `Content-Type: application/json`",
            ),
            E::BodyTooLarge => (
                S::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "BODY_TOO_LARGE",
                "the request body is larger than 16 KiB",
            ),
            E::InvalidScope => (
                S::BAD_REQUEST,
                "invalid_scope",
                "INVALID_SCOPE",
                "a requested scope is not offered by this API; see the scope list",
            ),
            E::ScopeEscalation => (
                S::FORBIDDEN,
                "insufficient_scope",
                "SCOPE_ESCALATION",
                "a key can only grant scopes it holds itself",
            ),
            E::KeyNotFound => (
                S::NOT_FOUND,
                "not_found",
                "KEY_NOT_FOUND",
                "no key has this id",
            ),
            E::NotKeyOwner => (
                S::FORBIDDEN,
                "forbidden",
                "NOT_KEY_OWNER",
                "only keys of the same owner may manage this key",
            ),
            E::KeyNotManaged => (
                S::CONFLICT,
                "invalid_request",
                "KEY_NOT_MANAGED",
                "this key is declared in the server's configuration and cannot be rotated or revoked here; ask the operator",
            ),
            E::KeyLimitReached => (
                S::CONFLICT,
                "invalid_request",
                "KEY_LIMIT_REACHED",
                "the owner holds as many keys as allowed; revoke one first",
            ),
            E::StoreUnavailable => (
                S::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "STORE_UNAVAILABLE",
                "the credential store is unavailable, nothing was changed; retry later (existing keys keep working)",
            ),
            E::AnonymousNotEnabled => (
                S::FORBIDDEN,
                "access_denied",
                "ANONYMOUS_NOT_ENABLED",
                "anonymous registration is not offered; register with an identity assertion",
            ),
            E::IdentityAssertionNotEnabled => (
                S::FORBIDDEN,
                "access_denied",
                "ISSUER_NOT_ENABLED",
                "no identity issuer is trusted by this API",
            ),
            E::UnsupportedCredentialType => (
                S::BAD_REQUEST,
                "invalid_request",
                "UNSUPPORTED_CREDENTIAL_TYPE",
                "only `api_key` credentials are issued",
            ),
            E::UnsupportedAssertionType => (
                S::BAD_REQUEST,
                "invalid_request",
                "UNSUPPORTED_ASSERTION_TYPE",
                "only `urn:ietf:params:oauth:token-type:id-jag` assertions are accepted",
            ),
            E::Assertion(AssertionError::JwksUnavailable) => (
                S::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                AssertionError::JwksUnavailable.code(),
                AssertionError::JwksUnavailable.message(),
            ),
            E::Assertion(e) => (S::UNAUTHORIZED, "invalid_grant", e.code(), e.message()),
            E::ReplayDetected => (
                S::UNAUTHORIZED,
                "invalid_grant",
                "REPLAY_DETECTED",
                "this identity assertion was used before; get a fresh one",
            ),
            E::InvalidClaimToken => (
                S::UNAUTHORIZED,
                "invalid_grant",
                "INVALID_CLAIM_TOKEN",
                "the claim token is not valid",
            ),
            E::RegistrationNotFound => (
                S::NOT_FOUND,
                "not_found",
                "REGISTRATION_NOT_FOUND",
                "no registration has this id",
            ),
            E::ClaimExpired => (
                S::GONE,
                "invalid_grant",
                "CLAIM_EXPIRED",
                "the claim token has expired; register again",
            ),
            E::PreviouslyClaimed => (
                S::CONFLICT,
                "invalid_grant",
                "PREVIOUSLY_CLAIMED",
                "this registration was claimed already",
            ),
            E::IdentityRequired => (
                S::BAD_REQUEST,
                "invalid_request",
                "IDENTITY_ASSERTION_REQUIRED",
                "a claim needs an `identity_assertion` proving who claims it",
            ),
            E::RegistrationRevoked => (
                S::GONE,
                "invalid_grant",
                "REGISTRATION_REVOKED",
                "the registration's credential was revoked; register again",
            ),
            E::ClaimNotAllowed => (
                S::FORBIDDEN,
                "access_denied",
                "CLAIM_NOT_ALLOWED",
                "this person may not claim agents here (not in an allowed email domain, organization or team)",
            ),
            E::UserCodeInvalid => (
                S::BAD_REQUEST,
                "invalid_grant",
                "USER_CODE_INVALID",
                "the `user_code` is not the one the claim page showed your operator; ask them for it again (a few wrong tries lock it)",
            ),
            E::UserCodeLocked => (
                S::FORBIDDEN,
                "access_denied",
                "USER_CODE_LOCKED",
                "too many wrong `user_code`s: your operator must confirm again on the claim page, which shows a new code",
            ),
            E::UserCodeExpired => (
                S::GONE,
                "expired_token",
                "USER_CODE_EXPIRED",
                "the `user_code` has expired: your operator must confirm again on the claim page, which shows a new code",
            ),
            E::UserCodeNotIssued => (
                S::CONFLICT,
                "authorization_pending",
                "USER_CODE_NOT_ISSUED",
                "no `user_code` is pending: your operator has not confirmed on the claim page yet",
            ),
            E::RateLimited { .. } => (
                S::TOO_MANY_REQUESTS,
                "rate_limited",
                "RATE_LIMITED",
                "too many registrations or anonymous tokens from this address; retry after `Retry-After` seconds",
            ),
        }
    }

    /// Seconds for `Retry-After`, where the refusal is temporary.
    #[must_use]
    pub fn retry_after(self) -> Option<u32> {
        match self {
            LifecycleError::RateLimited { retry_after } => Some(retry_after),
            LifecycleError::StoreUnavailable
            | LifecycleError::Assertion(AssertionError::JwksUnavailable) => Some(5),
            LifecycleError::InvalidBody
            | LifecycleError::UnsupportedMediaType
            | LifecycleError::BodyTooLarge
            | LifecycleError::InvalidScope
            | LifecycleError::ScopeEscalation
            | LifecycleError::KeyNotFound
            | LifecycleError::NotKeyOwner
            | LifecycleError::KeyNotManaged
            | LifecycleError::KeyLimitReached
            | LifecycleError::AnonymousNotEnabled
            | LifecycleError::IdentityAssertionNotEnabled
            | LifecycleError::UnsupportedCredentialType
            | LifecycleError::UnsupportedAssertionType
            | LifecycleError::Assertion(_)
            | LifecycleError::ReplayDetected
            | LifecycleError::InvalidClaimToken
            | LifecycleError::RegistrationNotFound
            | LifecycleError::ClaimExpired
            | LifecycleError::PreviouslyClaimed
            | LifecycleError::IdentityRequired
            | LifecycleError::RegistrationRevoked
            | LifecycleError::ClaimNotAllowed
            | LifecycleError::UserCodeInvalid
            | LifecycleError::UserCodeLocked
            | LifecycleError::UserCodeExpired
            | LifecycleError::UserCodeNotIssued => None,
        }
    }
}
