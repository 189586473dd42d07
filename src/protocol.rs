//! The protocol constants every layer names: well-known paths, grant and token
//! type URNs, token `typ` values.
//!
//! [`redirect`] holds the redirect-URI rules of OAuth 2.1 and RFC 8252, which the
//! config (declared clients), client registration and the authorization endpoint
//! all apply.
//!
//! Kept in one place, below everything else, so that the documents that advertise a
//! name and the endpoints that answer it cannot spell it differently.

pub mod redirect;

/// Path of the protected-resource metadata (RFC 9728), before any path insertion.
pub const PROTECTED_RESOURCE: &str = "/.well-known/oauth-protected-resource";
/// RFC 8414 metadata path.
pub const AUTHORIZATION_SERVER: &str = "/.well-known/oauth-authorization-server";
/// OpenID Connect discovery path (served as an alias when configured).
pub const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";
/// RFC 9727 api-catalog path.
pub const API_CATALOG: &str = "/.well-known/api-catalog";
/// The generated (or operator-supplied) auth.md.
pub const AUTH_MD: &str = "/auth.md";
/// MCP server card (SEP-1649 location, as the seeds use it) and its alias.
pub const MCP_SERVER_CARD: [&str; 2] =
    ["/.well-known/mcp/server-card.json", "/.well-known/mcp.json"];
/// A2A agent card.
pub const AGENT_CARD: &str = "/.well-known/agent-card.json";
/// The proxy's signing keys (`jwks_uri`), when it issues tokens.
pub const JWKS: &str = "/.well-known/jwks.json";

/// The RFC 7523 jwt-bearer grant type.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The ID-JAG token type (draft-ietf-oauth-identity-assertion-authz-grant), the
/// identity assertion of the jwt-bearer grant, registration and claims.
pub const ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";
/// The assertion type of an OpenID Connect `id_token` naming a verified e-mail
/// address (the spelling of the JobsPipe and GetScaled auth.md documents).
pub const VERIFIED_EMAIL: &str = "verified_email";
/// The RFC 8693 token type of an OpenID Connect `id_token`, accepted as another
/// spelling of [`VERIFIED_EMAIL`].
pub const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// `typ` of the access tokens the proxy signs (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
