//! The YAML file as written: serde structs that mirror it one to one, with
//! `deny_unknown_fields` so a typo is an error, not a silently ignored setting.
//! Nothing here is validated beyond its YAML type; that is the job of the section
//! modules beside this one.

use serde::Deserialize;

/// `service:`: how the API presents itself in documents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub(crate) name: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) documentation_url: Option<String>,
    pub(crate) contact: Option<String>,
    pub(crate) terms_url: Option<String>,
    pub(crate) privacy_url: Option<String>,
}

/// `discovery:`: the well-known documents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDiscovery {
    #[serde(default)]
    pub(crate) hosts: Vec<String>,
    #[serde(default)]
    pub(crate) resources: Vec<String>,
    #[serde(default)]
    pub(crate) openid_configuration: bool,
    pub(crate) openapi_url: Option<String>,
    pub(crate) auth_md_file: Option<String>,
    pub(crate) max_age: Option<String>,
    pub(crate) mcp_server_card: Option<serde_norway::Value>,
    pub(crate) agent_card: Option<serde_norway::Value>,
}

/// `endpoints:`: where the proxy's own endpoints live.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpoints {
    pub(crate) authorize: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) revoke: Option<String>,
    pub(crate) register: Option<String>,
    pub(crate) claim: Option<String>,
    pub(crate) agent_revoke: Option<String>,
    pub(crate) keys: Option<String>,
    pub(crate) scopes: Option<String>,
    pub(crate) jwks: Option<String>,
    pub(crate) login: Option<String>,
    pub(crate) login_callback: Option<String>,
    pub(crate) consent: Option<String>,
    pub(crate) oauth_register: Option<String>,
    pub(crate) operator: Option<String>,
}

/// `server:`: the listener's own settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub(crate) worker_threads: Option<usize>,
    pub(crate) header_read_timeout: Option<String>,
    pub(crate) shutdown_grace: Option<String>,
    pub(crate) shutdown_delay: Option<String>,
    pub(crate) watch_interval: Option<String>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_streams: Option<u32>,
    pub(crate) max_uri: Option<RawSize>,
    pub(crate) max_headers: Option<usize>,
    pub(crate) max_header_bytes: Option<RawSize>,
    pub(crate) max_body: Option<RawSize>,
}

/// A size: a number of bytes, or text such as `64KiB`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawSize {
    Bytes(u64),
    Text(String),
}

/// `tls:`: HTTPS on the proxy listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub(crate) cert_file: String,
    pub(crate) key_file: String,
    pub(crate) client_ca_file: Option<String>,
    pub(crate) reload_interval: Option<String>,
}

/// `upstream.tls:`: how the proxy trusts (and presents itself to) an `https://`
/// upstream.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamTls {
    pub(crate) ca_file: Option<String>,
    pub(crate) cert_file: Option<String>,
    pub(crate) key_file: Option<String>,
}

/// `upstream:`: where allowed requests go.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub(crate) url: String,
    pub(crate) connect_timeout: Option<String>,
    pub(crate) response_timeout: Option<String>,
    pub(crate) idle_timeout: Option<String>,
    #[serde(default)]
    pub(crate) preserve_host: bool,
    #[serde(default)]
    pub(crate) http2: bool,
    pub(crate) tls: Option<RawUpstreamTls>,
    pub(crate) health_check: Option<String>,
}

impl RawUpstream {
    /// An upstream given only by its URL (`--upstream`).
    pub(crate) fn at(url: &str) -> RawUpstream {
        RawUpstream {
            url: url.to_owned(),
            connect_timeout: None,
            response_timeout: None,
            idle_timeout: None,
            preserve_host: false,
            http2: false,
            tls: None,
            health_check: None,
        }
    }
}

/// `credentials:`: where credentials arrive and what keys look like.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCredentials {
    #[serde(default = "yes")]
    pub(crate) bearer: bool,
    #[serde(default)]
    pub(crate) headers: Vec<RawCredentialHeader>,
    #[serde(default)]
    pub(crate) key_prefixes: Vec<String>,
    #[serde(default = "yes")]
    pub(crate) require_checksum: bool,
}

impl Default for RawCredentials {
    fn default() -> Self {
        RawCredentials {
            bearer: true,
            headers: Vec::new(),
            key_prefixes: Vec::new(),
            require_checksum: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// One extra credential header.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCredentialHeader {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) anonymous: bool,
}

/// One tier.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTier {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    #[serde(default)]
    pub(crate) rate_limits: Vec<String>,
    pub(crate) quota: Option<String>,
}

/// `payments:`: x402 payment past a used-up quota.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPayments {
    pub(crate) facilitator: String,
    pub(crate) requests_per_payment: Option<u64>,
    pub(crate) description: Option<String>,
    pub(crate) mime_type: Option<String>,
    pub(crate) timeout: Option<String>,
    #[serde(default)]
    pub(crate) accepts: Vec<RawAccept>,
}

/// One way to pay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccept {
    pub(crate) scheme: Option<String>,
    pub(crate) network: String,
    pub(crate) network_v1: Option<String>,
    pub(crate) amount: String,
    pub(crate) asset: String,
    pub(crate) pay_to: String,
    pub(crate) max_timeout_seconds: Option<u64>,
    pub(crate) extra: Option<serde_norway::Value>,
}

/// `limits:`: how subjects are told apart and what responses say.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<String>,
    pub(crate) max_principals: Option<usize>,
    pub(crate) headers: Option<Vec<String>>,
    pub(crate) quota_flush: Option<String>,
    /// How many identifiers' worth of the anonymous tier's windows the anonymous
    /// identifiers from one address share; 0 turns the budget off.
    pub(crate) anonymous_per_address: Option<u32>,
    /// Fleet-wide limits, on Redis.
    pub(crate) global: Option<RawGlobalLimits>,
}

/// `limits.global:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGlobalLimits {
    pub(crate) backend: Option<String>,
    pub(crate) url: Option<String>,
    #[serde(default)]
    pub(crate) nodes: Vec<String>,
    #[serde(default)]
    pub(crate) cluster: bool,
    pub(crate) ca_file: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) mode: Option<String>,
    pub(crate) max_lease: Option<u32>,
    pub(crate) lease_ttl: Option<String>,
    pub(crate) on_unavailable: Option<String>,
    pub(crate) breaker: Option<RawBreaker>,
    pub(crate) heartbeat: Option<String>,
    pub(crate) key_prefix: Option<String>,
    #[serde(default)]
    pub(crate) quotas: bool,
    pub(crate) quota_batch: Option<String>,
}

/// `limits.global.breaker:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBreaker {
    pub(crate) failures: Option<u32>,
    pub(crate) cooldown: Option<String>,
}

/// One statically declared key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKey {
    pub(crate) id: String,
    pub(crate) hash: String,
    #[expect(
        dead_code,
        reason = "a label for the operator's own reading of the file"
    )]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    pub(crate) tier: Option<String>,
    pub(crate) rate_limits: Option<Vec<String>>,
    pub(crate) quota: Option<String>,
}

/// One route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub(crate) id: Option<String>,
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) methods: Vec<String>,
    #[serde(default)]
    pub(crate) access: RawAccess,
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    pub(crate) min_tier: Option<String>,
    pub(crate) metered: Option<bool>,
}

/// `access:` of a route.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawAccess {
    Public,
    Anonymous,
    #[default]
    Credential,
}

/// `default:`: what happens to a request no route matches.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawDefault {
    #[default]
    Deny,
    Public,
}

/// `paths:`: how request paths are compared.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPaths {
    #[serde(default)]
    pub(crate) case_insensitive: bool,
}

/// `log:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub(crate) level: Option<String>,
    pub(crate) format: Option<RawLogFormat>,
    pub(crate) access: Option<String>,
}

/// `log.format:`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawLogFormat {
    Text,
    Json,
}

/// `store:`: where issued keys and registrations are kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    pub(crate) kind: Option<RawStoreKind>,
    pub(crate) data_dir: Option<String>,
    pub(crate) url: Option<String>,
    pub(crate) schema: Option<String>,
    pub(crate) resync_interval: Option<String>,
    pub(crate) ca_file: Option<String>,
}

/// `store.kind:`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawStoreKind {
    Sqlite,
    Postgres,
    None,
}

/// `registration:`: agent self-registration and claims.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegistration {
    pub(crate) enabled: Option<bool>,
    pub(crate) anonymous: Option<bool>,
    pub(crate) tier: Option<String>,
    pub(crate) scopes: Option<Vec<String>>,
    pub(crate) claimed_tier: Option<String>,
    pub(crate) claimed_scopes: Option<Vec<String>>,
    pub(crate) claim_ttl: Option<String>,
    pub(crate) require_identity_to_claim: Option<bool>,
    pub(crate) per_hour: Option<u32>,
    pub(crate) identity_per_hour: Option<u32>,
    #[serde(default)]
    pub(crate) accept_resource_audience: bool,
    #[serde(default)]
    pub(crate) access_token: bool,
    pub(crate) claim: Option<RawClaim>,
    pub(crate) issue_credential: Option<String>,
}

/// `registration.claim:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClaim {
    pub(crate) accept: Option<Vec<RawClaimProof>>,
    #[serde(default)]
    pub(crate) allowed: Vec<RawClaimAllowed>,
    pub(crate) user_code: Option<bool>,
    pub(crate) user_code_ttl: Option<String>,
    pub(crate) by_registration_id: Option<bool>,
}

/// What may prove who claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawClaimProof {
    IdentityAssertion,
    SignIn,
}

/// One entry of `registration.claim.allowed`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClaimAllowed {
    pub(crate) email_domain: Option<String>,
    pub(crate) org: Option<String>,
    pub(crate) team: Option<String>,
}

/// One trusted issuer (`trusted_issuers:`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrustedIssuer {
    pub(crate) issuer: String,
    pub(crate) jwks_uri: String,
    pub(crate) name: Option<String>,
    pub(crate) identity_assertions: Option<bool>,
    #[serde(default)]
    pub(crate) access_tokens: bool,
    pub(crate) algorithms: Option<Vec<String>>,
    pub(crate) audiences: Option<Vec<String>>,
    pub(crate) token_types: Option<Vec<String>>,
    pub(crate) scope_claim: Option<String>,
    #[serde(default)]
    pub(crate) scope_map: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    pub(crate) tier: Option<String>,
    pub(crate) refetch_interval: Option<String>,
    pub(crate) verified_email: Option<RawVerifiedEmail>,
}

/// `trusted_issuers[].verified_email:`: the issuer's OpenID Connect `id_token`s
/// identify people by their verified e-mail address.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVerifiedEmail {
    pub(crate) client_id: String,
    #[serde(default)]
    pub(crate) email_domains: Vec<String>,
    pub(crate) max_age: Option<String>,
}

/// `tokens:`: the proxy as an OAuth authorization server.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTokens {
    pub(crate) enabled: Option<bool>,
    pub(crate) algorithm: Option<String>,
    pub(crate) ttl: Option<String>,
    #[serde(default)]
    pub(crate) signing_keys: Vec<String>,
    pub(crate) anonymous: Option<RawAnonymousGrant>,
    pub(crate) api_keys: Option<bool>,
    pub(crate) jwt_bearer: Option<bool>,
}

/// `tokens.anonymous:`: client credentials without client authentication.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAnonymousGrant {
    pub(crate) tier: Option<String>,
    pub(crate) scopes: Option<Vec<String>>,
    pub(crate) per_hour: Option<u32>,
}

/// `key_management:`: the key endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKeyManagement {
    pub(crate) enabled: Option<bool>,
    pub(crate) prefix: Option<String>,
    pub(crate) max_keys_per_owner: Option<usize>,
    pub(crate) rotation_grace: Option<String>,
    pub(crate) anonymous_tier: Option<String>,
}

/// `oauth:`: the interactive flow (authorization code with PKCE) for people and
/// MCP clients.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInteractive {
    pub(crate) code_ttl: Option<String>,
    pub(crate) refresh_ttl: Option<String>,
    pub(crate) refresh_reuse_grace: Option<String>,
    pub(crate) consent_ttl: Option<String>,
    #[serde(default)]
    pub(crate) clients: Vec<RawDeclaredClient>,
    #[serde(default)]
    pub(crate) registration: RawClientRegistration,
    #[serde(default)]
    pub(crate) client_id_metadata_documents: RawMetadataDocuments,
}

/// `oauth.client_id_metadata_documents`: clients named by an https URL.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetadataDocuments {
    pub(crate) enabled: Option<bool>,
    pub(crate) max_bytes: Option<RawSize>,
    pub(crate) timeout: Option<String>,
    pub(crate) max_cache: Option<String>,
    pub(crate) ca_file: Option<String>,
    #[serde(default)]
    pub(crate) allow_networks: Vec<String>,
}

/// One of `oauth.clients`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDeclaredClient {
    pub(crate) client_id: Option<String>,
    pub(crate) client_name: Option<String>,
    #[serde(default)]
    pub(crate) redirect_uris: Vec<String>,
    pub(crate) scopes: Option<Vec<String>>,
    pub(crate) client_secret_hash: Option<String>,
}

/// `oauth.registration`: RFC 7591 dynamic client registration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClientRegistration {
    pub(crate) enabled: Option<bool>,
    pub(crate) per_hour: Option<u32>,
    pub(crate) unused_ttl: Option<String>,
}

/// `login:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLogin {
    pub(crate) cookie_key: Option<String>,
    pub(crate) cookie_key_file: Option<String>,
    pub(crate) session_ttl: Option<String>,
    #[serde(default)]
    pub(crate) providers: Vec<serde_norway::Value>,
    #[serde(default)]
    pub(crate) tiers: RawLoginTiers,
}

/// `login.tiers:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLoginTiers {
    pub(crate) default: Option<String>,
    #[serde(default)]
    pub(crate) rules: Vec<serde_norway::Value>,
}

/// One tier rule: one condition and a tier.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTierRule {
    pub(crate) email_domain: Option<String>,
    pub(crate) org: Option<String>,
    pub(crate) team: Option<String>,
    pub(crate) tier: String,
}

/// One provider, by its `kind`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum RawProvider {
    Static(RawStatic),
    Oidc(RawOidc),
    Github(RawGithub),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStatic {
    pub(crate) id: String,
    pub(crate) display_name: Option<String>,
    #[serde(default)]
    pub(crate) allow_non_loopback: bool,
    #[serde(default)]
    pub(crate) users: Vec<serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUser {
    pub(crate) username: String,
    pub(crate) password_hash: String,
    pub(crate) email: Option<String>,
    pub(crate) name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOidc {
    pub(crate) id: String,
    pub(crate) display_name: Option<String>,
    pub(crate) issuer: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) scopes: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGithub {
    pub(crate) id: String,
    pub(crate) display_name: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    #[serde(default)]
    pub(crate) orgs: Vec<String>,
    #[serde(default)]
    pub(crate) teams: Vec<String>,
    pub(crate) web_url: Option<String>,
    pub(crate) api_url: Option<String>,
}
