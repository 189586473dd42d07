//! Access tokens: those the proxy signs itself, and those of trusted issuers.
//!
//! [`Tokens::verify`] is on the request path. A token seen before costs one probe
//! of a lock-free map of verified grants keyed by the token's text, plus a probe of
//! the revocation list when it is not empty; a token seen for the first time is verified
//! in full and then cached until it expires (the cache is bounded). Verification
//! follows one set of rules for every issuer:
//!
//! - the issuer is matched exactly first (an unknown issuer causes no work);
//! - the key is found by `kid` in the issuer's key set, and the algorithm is the
//!   key's: a header naming another algorithm, `none` or HMAC is refused;
//! - `typ` must be that of an access token (`at+jwt`; an ID-JAG or other JWT is not
//!   an access token);
//! - `iss`, `aud` (this API, RFC 8707), `exp` and `nbf` are checked; own tokens with
//!   no leeway (the proxy is their clock), others with a minute;
//! - the grant keeps which resources of this API `aud` names ([`ResourceId`]s), and
//!   a route of another resource refuses it
//!   ([`Route::authorize`](crate::policy::Route::authorize)).
//!
//! Own tokens are revocable: their `jti` goes on a deny-list, kept in the store
//! and followed by every replica, until the token would have expired anyway. A
//! token minted from an API key also ends when the key is revoked or expires (one
//! more probe, of the key table by id).

pub mod remote;
pub mod signing;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderValue, Uri};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::http_client::HttpsClient;
use crate::protocol::ACCESS_TOKEN_TYPE;
use crate::scope::{ScopeHeaders, ScopeRegistry, ScopeSet};
use crate::tier::{TierId, Tiers};
use remote::RemoteKeys;
use signing::{KeyError, LiveKeys};

/// Clock skew allowed for other issuers' tokens.
const LEEWAY: i64 = 60;
/// Verified tokens kept in the cache at most.
const MAX_CACHED: usize = 100_000;

/// What a verified token grants: compiled once, shared by every request that
/// presents the token.
#[derive(Debug)]
pub struct TokenGrant {
    /// `X-Authmd-Principal`: the token's subject.
    pub principal_header: HeaderValue,
    /// The scopes it grants.
    pub scopes: ScopeSet,
    /// `X-Authmd-Scopes`.
    pub scopes_header: HeaderValue,
    /// The tier.
    pub tier: TierId,
    /// Unix time after which it is refused (leeway included).
    pub valid_until: i64,
    /// `jti` of a token this proxy signed (others cannot be revoked here).
    pub jti: Option<Box<str>>,
    /// The API key it was minted from: revoking the key ends the token too.
    pub key_id: Option<Box<str>>,
    /// `X-Authmd-Operator`: who claimed the key it was minted from.
    pub operator: Option<HeaderValue>,
    /// The resources of this API its `aud` names. Empty when it names none of them
    /// (a trusted issuer's token for an audience the operator configured), and then
    /// it is not bound to a resource here.
    pub resources: Box<[ResourceId]>,
}

impl TokenGrant {
    /// True when the token may be used on a route of `resource`: its `aud` names
    /// that resource, or none of this API's (RFC 8707: a token for the MCP server is
    /// no key to the rest of the API).
    #[must_use]
    pub fn opens(&self, resource: ResourceId) -> bool {
        self.resources.is_empty() || self.resources.contains(&resource)
    }
}

/// A resource of this API, as its position in the resource identifiers
/// ([`OwnTokens::audiences`]): one per public origin and protected-resource prefix.
/// Routes and tokens compare these, never the identifiers' text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceId(pub u32);

/// Why a token was refused. Carries nothing from the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or a required claim is missing or malformed.
    #[error("the token is malformed")]
    Malformed,
    /// `typ` is not that of an access token.
    #[error("the token is not an access token")]
    WrongType,
    /// `iss` is not this server or a trusted issuer.
    #[error("the token's issuer is not trusted")]
    UntrustedIssuer,
    /// `none`, HMAC, or an algorithm other than the key's.
    #[error("the token's algorithm is refused")]
    AlgorithmRefused,
    /// No key of the issuer has the token's `kid`.
    #[error("no key of the issuer matches")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the signature is invalid")]
    InvalidSignature,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` or `iat` is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `aud` does not name this API.
    #[error("the token is for another audience")]
    WrongAudience,
    /// `aud` names another resource of this API than the one the route belongs to.
    #[error("the token is for another resource of this API")]
    WrongResource,
    /// Revoked through the revocation endpoint.
    #[error("the token has been revoked")]
    Revoked,
}

impl TokenError {
    /// Every variant, for the documentation.
    pub const ALL: &[TokenError] = &[
        TokenError::Malformed,
        TokenError::WrongType,
        TokenError::UntrustedIssuer,
        TokenError::AlgorithmRefused,
        TokenError::UnknownKey,
        TokenError::InvalidSignature,
        TokenError::Expired,
        TokenError::NotYetValid,
        TokenError::WrongAudience,
        TokenError::WrongResource,
        TokenError::Revoked,
    ];

    /// The envelope's `code`.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            TokenError::Malformed => "INVALID_TOKEN",
            TokenError::WrongType => "INVALID_TOKEN_TYPE",
            TokenError::UntrustedIssuer => "UNTRUSTED_TOKEN_ISSUER",
            TokenError::AlgorithmRefused => "TOKEN_ALGORITHM_REFUSED",
            TokenError::UnknownKey => "UNKNOWN_TOKEN_KEY",
            TokenError::InvalidSignature => "INVALID_TOKEN_SIGNATURE",
            TokenError::Expired => "TOKEN_EXPIRED",
            TokenError::NotYetValid => "TOKEN_NOT_YET_VALID",
            TokenError::WrongAudience => "TOKEN_AUDIENCE_MISMATCH",
            TokenError::WrongResource => "TOKEN_WRONG_RESOURCE",
            TokenError::Revoked => "TOKEN_REVOKED",
        }
    }

    /// One sentence for the agent.
    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            TokenError::Malformed => {
                "the token cannot be verified by this server; get a new credential"
            }
            TokenError::WrongType => {
                "the token is not an access token (`typ` must be `at+jwt`); exchange an assertion at the token endpoint first"
            }
            TokenError::UntrustedIssuer => {
                "the token's issuer is not trusted by this API; get a token from this API's token endpoint"
            }
            TokenError::AlgorithmRefused => {
                "the token's algorithm does not match its issuer's key (none and HMAC are refused)"
            }
            TokenError::UnknownKey => {
                "no signing key of the issuer matches the token's `kid`; get a new token"
            }
            TokenError::InvalidSignature => "the token's signature does not verify",
            TokenError::Expired => "the token has expired; get a new one from the token endpoint",
            TokenError::NotYetValid => "the token is not valid yet (nbf or iat in the future)",
            TokenError::WrongAudience => {
                "the token was issued for another resource; request one with `resource` set to this API"
            }
            TokenError::WrongResource => {
                "the token was issued for another resource of this API; request one with `resource` set to the `resource` of the document at `resource_metadata`"
            }
            TokenError::Revoked => "the token has been revoked; get a new one",
        }
    }
}

/// One trusted issuer.
#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    /// The exact `iss` value.
    pub issuer: String,
    /// Where its signing keys are published.
    pub jwks_uri: Uri,
    /// Prefix of `X-Authmd-Principal` for its subjects (`<name>:<sub>`).
    pub name: String,
    /// Its ID-JAG assertions register, claim and redeem at the token endpoint.
    pub identity_assertions: bool,
    /// Its access tokens are accepted as Bearer credentials.
    pub access_tokens: bool,
    /// Algorithms its keys may use.
    pub algorithms: Vec<Algorithm>,
    /// `aud` values its access tokens must carry one of (empty: this API's
    /// resource identifiers).
    pub audiences: Vec<String>,
    /// `typ` values its access tokens may have (lower-case); `None` accepts `at+jwt`,
    /// `jwt` and none.
    pub token_types: Option<Vec<String>>,
    /// The claim that carries scopes (`scope` string or `scp` array).
    pub scope_claim: String,
    /// Issuer scope -> this API's scopes; empty: issuer scopes that name declared
    /// scopes are taken as they are.
    pub scope_map: Vec<(String, ScopeSet)>,
    /// Scopes every access token of this issuer has.
    pub scopes: ScopeSet,
    /// Tier of its principals (`None`: the lowest keyed tier for access tokens,
    /// `registration.claimed_tier` for identity assertions).
    pub tier: Option<TierId>,
    /// Shortest time between two fetches of its JWKS caused by unknown `kid`s.
    pub refetch_interval: Duration,
    /// Its OpenID Connect `id_token`s with a verified e-mail address register and
    /// claim (`assertion_type: verified_email`), when set.
    pub verified_email: Option<VerifiedEmail>,
}

impl TrustedIssuer {
    /// Its assertions identify people: ID-JAGs, `id_token`s, or both.
    #[must_use]
    pub fn vouches_for_people(&self) -> bool {
        self.identity_assertions || self.verified_email.is_some()
    }
}

/// `trusted_issuers[].verified_email`: what an `id_token` of the issuer must be to
/// identify a person by e-mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEmail {
    /// The client id this API has at the issuer: the `id_token`'s `aud` (and `azp`).
    pub client_id: String,
    /// E-mail domains accepted (lower-case, exact); empty: any.
    pub email_domains: Vec<String>,
    /// How long after its `iat` an `id_token` is accepted.
    pub max_age: Duration,
}

/// What the proxy's own tokens say: who issues them, for which resources, and for
/// how long.
#[derive(Debug, Clone)]
pub struct OwnTokens {
    /// The `iss` (the public URL).
    pub issuer: String,
    /// The resource identifiers they may name in `aud`.
    pub audiences: Vec<String>,
    /// Their lifetime.
    pub ttl: Duration,
}

/// A trusted issuer, with its keys.
#[derive(Debug)]
pub struct Issuer {
    /// Its settings.
    pub settings: TrustedIssuer,
    /// Its keys.
    pub keys: Arc<RemoteKeys>,
}

/// The claims of an access token this proxy signs.
#[derive(Debug, Serialize, Deserialize)]
pub struct OwnClaims {
    /// This server.
    pub iss: String,
    /// The principal (`key:<id>`, `anonymous:<id>`, `idp:<digest>`).
    pub sub: String,
    /// The resource it is for.
    pub aud: String,
    /// Space-separated scopes.
    pub scope: String,
    /// Expiry.
    pub exp: i64,
    /// Issue time.
    pub iat: i64,
    /// Unique id, for revocation.
    pub jti: String,
    /// The client it was issued to, when the client authenticated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The tier's name.
    pub tier: String,
    /// The person who claimed the key it was minted from (`<provider>:<handle>`),
    /// sent upstream as `X-Authmd-Operator`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
}

/// A token to sign.
#[derive(Debug)]
pub struct Issue<'a> {
    /// The principal.
    pub subject: &'a str,
    /// The resource (`aud`).
    pub audience: &'a str,
    /// Granted scopes.
    pub scopes: ScopeSet,
    /// Tier.
    pub tier: TierId,
    /// The authenticated client, if any.
    pub client_id: Option<&'a str>,
    /// The refresh family it was issued from (interactive grants): its `jti` is
    /// `<family>.<id>`, so that revoking the family denies it too.
    pub family: Option<&'a str>,
    /// The operator of the claimed key it is minted from, if any.
    pub operator: Option<&'a str>,
}

/// A signed token.
#[derive(Debug)]
pub struct Issued {
    /// The JWT.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// Its scopes, space-separated.
    pub scope: String,
}

/// Verifies (and, with signing keys, issues) access tokens.
#[derive(Debug)]
pub struct Tokens {
    /// This server's issuer identifier (the public URL).
    issuer: String,
    /// The resource identifiers own tokens may name in `aud`.
    audiences: Vec<String>,
    ttl: i64,
    /// The proxy's own keys, following their files.
    own: Option<LiveKeys>,
    /// Issuers whose access tokens are accepted.
    trusted: Vec<Arc<Issuer>>,
    scopes: Arc<ScopeRegistry>,
    tiers: Arc<Tiers>,
    /// The `X-Authmd-Scopes` values, shared with the keys.
    scope_headers: Arc<ScopeHeaders>,
    /// Verified tokens by their full text (a fast seeded hash; only verified tokens
    /// are ever inserted, so the keys are not the attacker's to choose).
    cache: papaya::HashMap<Box<str>, Arc<TokenGrant>, foldhash::fast::RandomState>,
    revoked: Arc<papaya::HashMap<Box<str>, i64>>,
    /// True while the deny-list may be non-empty (one load instead of summing the
    /// map's per-CPU counters on every request).
    any_revoked: Arc<AtomicBool>,
}

#[derive(Deserialize)]
struct Peek {
    iss: Option<String>,
}

impl Tokens {
    /// Builds the verifier for a config: `own` are the proxy's signing keys (when it
    /// issues tokens; `Some(keys.into())` for keys that never change); `issuers`
    /// every trusted issuer with its keys; `scope_headers` the scope header values
    /// shared with the keys.
    #[must_use]
    pub fn new(
        settings: OwnTokens,
        own: Option<LiveKeys>,
        issuers: &[Arc<Issuer>],
        tiers: Arc<Tiers>,
        scope_headers: Arc<ScopeHeaders>,
    ) -> Tokens {
        Tokens {
            issuer: settings.issuer,
            audiences: settings.audiences,
            ttl: i64::try_from(settings.ttl.as_secs()).unwrap_or(3600),
            own,
            trusted: issuers
                .iter()
                .filter(|i| i.settings.access_tokens)
                .cloned()
                .collect(),
            scopes: scope_headers.registry().clone(),
            tiers,
            scope_headers,
            cache: papaya::HashMap::with_hasher(foldhash::fast::RandomState::default()),
            revoked: Arc::default(),
            any_revoked: Arc::default(),
        }
    }

    /// True when the proxy signs tokens.
    #[must_use]
    pub fn issues(&self) -> bool {
        self.own.is_some()
    }

    /// The JWKS document of the proxy's keys, when it signs tokens.
    #[must_use]
    pub fn jwks(&self) -> Option<bytes::Bytes> {
        self.own.as_ref().map(|own| own.current().jwks().clone())
    }

    /// Reads the proxy's signing keys again if their files changed (blocking file
    /// I/O: call it off the runtime's workers). `Some(kid)` of the new signing key
    /// when the keys changed: new tokens are signed with it, tokens of a key still in
    /// the files keep verifying, and the cache forgets every verified token, so a
    /// key that is gone verifies nothing any more.
    pub fn refresh_signing_keys(&self, now: i64) -> Result<Option<String>, KeyError> {
        let Some(own) = &self.own else {
            return Ok(None);
        };
        let changed = own.refresh(now)?;
        if changed.is_some() {
            self.cache.pin().clear();
        }
        Ok(changed)
    }

    /// The lifetime of the access tokens this proxy signs, in seconds.
    #[must_use]
    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// The resource identifiers this API answers to (valid `resource` / `aud`).
    #[must_use]
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// Verifies a token at unix time `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Arc<TokenGrant>, TokenError> {
        let cache = self.cache.pin();
        let grant = match cache.get(token) {
            Some(grant) => grant.clone(),
            None => {
                let grant = Arc::new(self.verify_fresh(token, now)?);
                // When full, new tokens are verified each time until the periodic
                // sweep makes room: never an O(n) sweep on the request path.
                if cache.len() < MAX_CACHED {
                    cache.insert(token.into(), grant.clone());
                }
                grant
            }
        };
        if grant.valid_until <= now {
            cache.remove(token);
            return Err(TokenError::Expired);
        }
        if let Some(jti) = &grant.jti {
            if self.any_revoked.load(Ordering::Acquire) {
                let revoked = self.revoked.pin();
                // A token of a refresh family is denied with its family, too.
                let family = jti.split_once('.').map(|(family, _)| family);
                if revoked.contains_key(jti) || family.is_some_and(|f| revoked.contains_key(f)) {
                    return Err(TokenError::Revoked);
                }
            }
        }
        Ok(grant)
    }

    /// Asks the issuer of `token` for its current keys (throttled); true when the
    /// keys may have changed since the token was refused, so verifying again may
    /// succeed: a fetch of ours succeeded, or we waited out another caller's fetch.
    pub async fn refetch_keys_for(&self, token: &str) -> bool {
        let Some(issuer) = peek_issuer(token) else {
            return false;
        };
        match self.trusted.iter().find(|i| i.settings.issuer == issuer) {
            Some(issuer) => issuer.keys.refetch().await != remote::Refetch::Failed,
            None => false,
        }
    }

    /// True when `token` names a trusted issuer none of whose keys has been fetched
    /// yet: its "unknown key" then says nothing about the token.
    #[must_use]
    pub fn issuer_keys_missing(&self, token: &str) -> bool {
        peek_issuer(token).is_some_and(|issuer| {
            self.trusted
                .iter()
                .find(|i| i.settings.issuer == issuer)
                .is_some_and(|i| !i.keys.is_loaded())
        })
    }

    fn verify_fresh(&self, token: &str, now: i64) -> Result<TokenGrant, TokenError> {
        let header = header_of(token)?;
        let issuer = peek_issuer(token).ok_or(TokenError::Malformed)?;
        if self.own.is_some() && issuer == self.issuer {
            return self.verify_own(token, &header, now);
        }
        let trusted = self
            .trusted
            .iter()
            .find(|i| i.settings.issuer == issuer)
            .ok_or(TokenError::UntrustedIssuer)?;
        self.verify_trusted(trusted, token, &header, now)
    }

    fn verify_own(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
        now: i64,
    ) -> Result<TokenGrant, TokenError> {
        let keys = self
            .own
            .as_ref()
            .ok_or(TokenError::UntrustedIssuer)?
            .current();
        if !typ_is(header, &[ACCESS_TOKEN_TYPE]) {
            return Err(TokenError::WrongType);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| keys.find(kid))
            .ok_or(TokenError::UnknownKey)?;
        if header.alg != key.algorithm() {
            return Err(TokenError::AlgorithmRefused);
        }
        let mut validation = Validation::new(key.algorithm());
        validation.leeway = 0;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let claims: OwnClaims = decode(token, key.decoding(), &validation)?;
        if claims.iat > now + LEEWAY {
            return Err(TokenError::NotYetValid);
        }
        let resource = self
            .resource_named(&claims.aud)
            .ok_or(TokenError::WrongAudience)?;
        let scopes = self.scopes.granted_known(claims.scope.split_whitespace());
        let tier = self.tiers.find(&claims.tier).unwrap_or(TierId::ANONYMOUS);
        Ok(TokenGrant {
            principal_header: HeaderValue::from_str(&claims.sub)
                .map_err(|_| TokenError::Malformed)?,
            scopes_header: self.scope_headers.get(scopes),
            scopes,
            tier,
            valid_until: claims.exp,
            jti: Some(claims.jti.into_boxed_str()),
            key_id: claims
                .sub
                .starts_with("key:")
                .then_some(claims.client_id)
                .flatten()
                .map(String::into_boxed_str),
            operator: claims
                .operator
                .as_deref()
                .and_then(|o| HeaderValue::from_str(o).ok()),
            resources: Box::new([resource]),
        })
    }

    fn verify_trusted(
        &self,
        issuer: &Issuer,
        token: &str,
        header: &jsonwebtoken::Header,
        now: i64,
    ) -> Result<TokenGrant, TokenError> {
        let settings = &issuer.settings;
        let typ_ok = match &settings.token_types {
            Some(types) => {
                let types: Vec<&str> = types.iter().map(String::as_str).collect();
                typ_is(header, &types)
            }
            None => header.typ.is_none() || typ_is(header, &[ACCESS_TOKEN_TYPE, "jwt"]),
        };
        if !typ_ok {
            return Err(TokenError::WrongType);
        }
        let key = issuer
            .keys
            .find(header.kid.as_deref())
            .ok_or(TokenError::UnknownKey)?;
        if header.alg != key.algorithm {
            return Err(TokenError::AlgorithmRefused);
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = u64::try_from(LEEWAY).unwrap_or(60);
        validation.validate_nbf = true;
        validation.set_issuer(&[&settings.issuer]);
        if settings.audiences.is_empty() {
            validation.set_audience(&self.audiences);
        } else {
            validation.set_audience(&settings.audiences);
        }
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let claims: serde_json::Map<String, serde_json::Value> =
            decode(token, &key.key, &validation)?;
        if claims
            .get("iat")
            .and_then(serde_json::Value::as_i64)
            .is_some_and(|iat| iat > now + LEEWAY)
        {
            return Err(TokenError::NotYetValid);
        }
        let subject = claims
            .get("sub")
            .and_then(serde_json::Value::as_str)
            .ok_or(TokenError::Malformed)?;
        let exp = claims
            .get("exp")
            .and_then(serde_json::Value::as_i64)
            .ok_or(TokenError::Malformed)?;
        let resources = match claims.get("aud") {
            Some(serde_json::Value::String(aud)) => self.resource_named(aud).into_iter().collect(),
            Some(serde_json::Value::Array(auds)) => auds
                .iter()
                .filter_map(serde_json::Value::as_str)
                .filter_map(|aud| self.resource_named(aud))
                .collect(),
            _ => Box::default(),
        };
        let named: Vec<&str> = match claims.get(&settings.scope_claim) {
            Some(serde_json::Value::String(s)) => s.split_whitespace().collect(),
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(serde_json::Value::as_str).collect()
            }
            _ => Vec::new(),
        };
        let mut scopes = settings.scopes;
        if settings.scope_map.is_empty() {
            scopes = scopes.union(&self.scopes.granted_known(named.iter().copied()));
        } else {
            for name in named {
                if let Some((_, set)) = settings.scope_map.iter().find(|(n, _)| n == name) {
                    scopes = scopes.union(set);
                }
            }
        }
        Ok(TokenGrant {
            principal_header: HeaderValue::from_str(&format!("{}:{subject}", settings.name))
                .map_err(|_| TokenError::Malformed)?,
            scopes_header: self.scope_headers.get(scopes),
            scopes,
            tier: settings.tier.unwrap_or(TierId(1)),
            valid_until: exp + LEEWAY,
            jti: None,
            key_id: None,
            operator: None,
            resources,
        })
    }

    /// The resource of this API an `aud` value names, if any.
    fn resource_named(&self, aud: &str) -> Option<ResourceId> {
        let at = self.audiences.iter().position(|a| a == aud)?;
        u32::try_from(at).ok().map(ResourceId)
    }

    /// Signs a token for `issue` at `now`.
    pub fn issue(&self, issue: &Issue<'_>, now: i64) -> Option<Issued> {
        let keys = self.own.as_ref()?.current();
        let scope = self.scopes.names(&issue.scopes);
        let claims = OwnClaims {
            iss: self.issuer.clone(),
            sub: issue.subject.to_owned(),
            aud: issue.audience.to_owned(),
            scope: scope.clone(),
            exp: now + self.ttl,
            iat: now,
            jti: match issue.family {
                Some(family) => format!("{family}.{}", crate::random::public_id("at").ok()?),
                None => crate::random::public_id("at").ok()?,
            },
            client_id: issue.client_id.map(str::to_owned),
            tier: self.tiers.get(issue.tier).name.clone(),
            operator: issue.operator.map(str::to_owned),
        };
        let token = keys.active().sign(ACCESS_TOKEN_TYPE, &claims).ok()?;
        Some(Issued {
            token,
            expires_in: self.ttl,
            scope,
        })
    }

    /// The `(jti, exp)` of a token this proxy signed whose signature verifies,
    /// expired or not; `None` for anything else (RFC 7009: not an error).
    #[must_use]
    pub fn own_token_id(&self, token: &str) -> Option<(String, i64)> {
        let keys = self.own.as_ref()?.current();
        let header = header_of(token).ok()?;
        let key = keys.find(header.kid.as_deref()?)?;
        if header.alg != key.algorithm() || peek_issuer(token)? != self.issuer {
            return None;
        }
        let mut validation = Validation::new(key.algorithm());
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_issuer(&[&self.issuer]);
        validation.required_spec_claims.clear();
        let claims: OwnClaims = decode(token, key.decoding(), &validation).ok()?;
        Some((claims.jti, claims.exp))
    }

    /// Puts a token id on the deny-list until `expires_at`.
    pub fn deny(&self, jti: &str, expires_at: i64) {
        self.revoked.pin().insert(jti.into(), expires_at);
        self.any_revoked.store(true, Ordering::Release);
    }

    /// Forgets deny-list entries of tokens that have expired anyway.
    pub fn sweep(&self, now: i64) {
        let revoked = self.revoked.pin();
        revoked.retain(|_, exp| *exp >= now);
        if revoked.is_empty() {
            // A `deny` racing with this sweep sets the flag again after its insert.
            self.any_revoked.store(false, Ordering::Release);
            if !revoked.is_empty() {
                self.any_revoked.store(true, Ordering::Release);
            }
        }
        self.cache.pin().retain(|_, g| g.valid_until > now);
    }

    /// Number of deny-list entries.
    #[must_use]
    pub fn revoked_len(&self) -> usize {
        self.revoked.len()
    }
}

/// Decodes a JWT's header, telling `none` apart from garbage.
fn header_of(token: &str) -> Result<jsonwebtoken::Header, TokenError> {
    match jsonwebtoken::decode_header(token) {
        Ok(header) => {
            if matches!(
                header.alg,
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
            ) {
                return Err(TokenError::AlgorithmRefused);
            }
            Ok(header)
        }
        Err(_) => {
            // jsonwebtoken has no `none`: look for it, to say so precisely.
            let first = token.split('.').next().unwrap_or_default();
            let alg = URL_SAFE_NO_PAD
                .decode(first)
                .ok()
                .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
                .and_then(|v| v.get("alg").and_then(|a| a.as_str().map(str::to_owned)));
            match alg {
                Some(_) => Err(TokenError::AlgorithmRefused),
                None => Err(TokenError::Malformed),
            }
        }
    }
}

/// The `iss` claim, read without verifying anything (only to pick the keys).
fn peek_issuer(token: &str) -> Option<String> {
    jsonwebtoken::dangerous::insecure_decode_claims::<Peek>(token)
        .ok()?
        .iss
}

/// True when the header's `typ` is one of `types` (case-insensitive, with or
/// without `application/`).
fn typ_is(header: &jsonwebtoken::Header, types: &[&str]) -> bool {
    let Some(typ) = header.typ.as_deref() else {
        return false;
    };
    let typ = typ.to_ascii_lowercase();
    let typ = typ.strip_prefix("application/").unwrap_or(&typ);
    types.contains(&typ)
}

fn decode<T: serde::de::DeserializeOwned>(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<T, TokenError> {
    use jsonwebtoken::errors::ErrorKind as K;
    jsonwebtoken::decode::<T>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            K::InvalidSignature => TokenError::InvalidSignature,
            K::ExpiredSignature => TokenError::Expired,
            K::ImmatureSignature => TokenError::NotYetValid,
            K::InvalidAudience => TokenError::WrongAudience,
            K::InvalidIssuer => TokenError::UntrustedIssuer,
            K::InvalidAlgorithm | K::UnsupportedAlgorithm => TokenError::AlgorithmRefused,
            _ => TokenError::Malformed,
        })
}

/// Builds each trusted issuer's key set (not fetched yet: see
impl Tokens {
    /// Shares `previous`'s deny-list of revoked tokens (the verifier of the config
    /// being replaced), so a reload never makes a revoked token valid again.
    pub fn share_revocations(&mut self, previous: &Tokens) {
        self.revoked = previous.revoked.clone();
        self.any_revoked = previous.any_revoked.clone();
    }
}

/// [`RemoteKeys::refresh_forever`]).
#[must_use]
pub fn issuers(settings: &[TrustedIssuer], client: &HttpsClient) -> Vec<Arc<Issuer>> {
    settings
        .iter()
        .map(|s| {
            Arc::new(Issuer {
                keys: Arc::new(RemoteKeys::new(
                    s.jwks_uri.clone(),
                    s.algorithms.clone(),
                    s.refetch_interval,
                    client.clone(),
                )),
                settings: s.clone(),
            })
        })
        .collect()
}
