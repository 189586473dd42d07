//! The errors of the proxy's OAuth endpoints (RFC 6749 section 5.2, RFC 7009, RFC
//! 8707): their `error` names, statuses, codes and descriptions.

use http::StatusCode;

use crate::assertion::AssertionError;

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
    /// RFC 7591 `invalid_redirect_uri`.
    InvalidRedirectUri,
    /// RFC 7591 `invalid_client_metadata`.
    InvalidClientMetadata,
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
    /// An authorization code was presented a second time (what it gave is revoked).
    CodeUsed,
    /// An authorization code is unknown or expired.
    CodeUnknown,
    /// The code was issued to another client.
    CodeClientMismatch,
    /// The `redirect_uri` is not the one the code was issued for.
    RedirectMismatch,
    /// The PKCE `code_verifier` does not match the code's challenge.
    VerifierMismatch,
    /// A refresh token was used again after its reuse grace (its family is revoked).
    RefreshReused,
    /// A refresh token is unknown, expired or revoked.
    RefreshUnknown,
}

impl OAuthError {
    /// Every variant the token and revocation endpoints can answer, for the
    /// documentation (assertion failures once, as one row).
    pub const DOCUMENTED: &[OAuthError] = &[
        OAuthError::InvalidRequest("the request is malformed"),
        OAuthError::InvalidClient { basic: false },
        OAuthError::InvalidGrant(GrantError::Replayed),
        OAuthError::InvalidGrant(GrantError::ClientMismatch),
        OAuthError::InvalidGrant(GrantError::CodeUsed),
        OAuthError::InvalidGrant(GrantError::CodeUnknown),
        OAuthError::InvalidGrant(GrantError::CodeClientMismatch),
        OAuthError::InvalidGrant(GrantError::RedirectMismatch),
        OAuthError::InvalidGrant(GrantError::VerifierMismatch),
        OAuthError::InvalidGrant(GrantError::RefreshReused),
        OAuthError::InvalidGrant(GrantError::RefreshUnknown),
        OAuthError::InvalidScope,
        OAuthError::InvalidTarget,
        OAuthError::UnauthorizedClient("this grant is not offered"),
        OAuthError::UnsupportedGrantType,
        OAuthError::UnsupportedResponseType,
        OAuthError::UnsupportedTokenType,
        OAuthError::InvalidRedirectUri,
        OAuthError::InvalidClientMetadata,
    ];

    /// True for the errors only the interactive flow answers with (codes, refresh
    /// tokens, client registration): documented only where people sign in.
    #[must_use]
    pub fn interactive(self) -> bool {
        matches!(
            self,
            OAuthError::InvalidGrant(
                GrantError::CodeUsed
                    | GrantError::CodeUnknown
                    | GrantError::CodeClientMismatch
                    | GrantError::RedirectMismatch
                    | GrantError::VerifierMismatch
                    | GrantError::RefreshReused
                    | GrantError::RefreshUnknown
            ) | OAuthError::InvalidRedirectUri
                | OAuthError::InvalidClientMetadata
        )
    }

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
            OAuthError::InvalidRedirectUri => "invalid_redirect_uri",
            OAuthError::InvalidClientMetadata => "invalid_client_metadata",
        }
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(self) -> StatusCode {
        match self {
            OAuthError::InvalidClient { .. } => StatusCode::UNAUTHORIZED,
            OAuthError::InvalidRequest(_)
            | OAuthError::InvalidGrant(_)
            | OAuthError::InvalidScope
            | OAuthError::InvalidTarget
            | OAuthError::UnauthorizedClient(_)
            | OAuthError::UnsupportedGrantType
            | OAuthError::UnsupportedResponseType
            | OAuthError::UnsupportedTokenType
            | OAuthError::InvalidRedirectUri
            | OAuthError::InvalidClientMetadata => StatusCode::BAD_REQUEST,
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
            OAuthError::InvalidGrant(GrantError::CodeUsed) => "CODE_REPLAYED",
            OAuthError::InvalidGrant(GrantError::CodeUnknown) => "CODE_UNKNOWN",
            OAuthError::InvalidGrant(GrantError::CodeClientMismatch) => "CODE_CLIENT_MISMATCH",
            OAuthError::InvalidGrant(GrantError::RedirectMismatch) => "REDIRECT_URI_MISMATCH",
            OAuthError::InvalidGrant(GrantError::VerifierMismatch) => "PKCE_VERIFIER_MISMATCH",
            OAuthError::InvalidGrant(GrantError::RefreshReused) => "REFRESH_TOKEN_REUSED",
            OAuthError::InvalidGrant(GrantError::RefreshUnknown) => "REFRESH_TOKEN_UNKNOWN",
            OAuthError::InvalidScope => "INVALID_SCOPE",
            OAuthError::InvalidTarget => "INVALID_TARGET",
            OAuthError::UnauthorizedClient(_) => "UNAUTHORIZED_CLIENT",
            OAuthError::UnsupportedGrantType => "UNSUPPORTED_GRANT_TYPE",
            OAuthError::UnsupportedResponseType => "UNSUPPORTED_RESPONSE_TYPE",
            OAuthError::UnsupportedTokenType => "UNSUPPORTED_TOKEN_TYPE",
            OAuthError::InvalidRedirectUri => "INVALID_REDIRECT_URI",
            OAuthError::InvalidClientMetadata => "INVALID_CLIENT_METADATA",
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
            OAuthError::InvalidGrant(GrantError::CodeUsed) => {
                "this authorization code was used before; what it gave is revoked: start the authorization again"
            }
            OAuthError::InvalidGrant(GrantError::CodeUnknown) => {
                "this authorization code is unknown or expired (codes live 60 seconds): start the authorization again"
            }
            OAuthError::InvalidGrant(GrantError::CodeClientMismatch) => {
                "this authorization code was issued to another client"
            }
            OAuthError::InvalidGrant(GrantError::RedirectMismatch) => {
                "redirect_uri is not the one this code was issued for"
            }
            OAuthError::InvalidGrant(GrantError::VerifierMismatch) => {
                "code_verifier does not match the code_challenge of the authorization request (PKCE, S256)"
            }
            OAuthError::InvalidGrant(GrantError::RefreshReused) => {
                "this refresh token was used before; every token of its grant is revoked: sign in again"
            }
            OAuthError::InvalidGrant(GrantError::RefreshUnknown) => {
                "this refresh token is unknown, expired or revoked: sign in again"
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
            OAuthError::InvalidRedirectUri => {
                "a redirect URI must be https, loopback http (any port) or an app's private-use scheme, without a fragment"
            }
            OAuthError::InvalidClientMetadata => {
                "the client metadata is not acceptable; see the registration rules in auth.md"
            }
        }
    }
}
