//! Credentials: where they arrive, what kind they are, and who they prove.
//!
//! [`CredentialRules::extract`] reads the request headers once and classifies what it
//! finds: an API key (a configured prefix), a token (JWT shape), an anonymous
//! identifier (any other value on a header the config marks anonymous), or nothing.
//! [`CredentialRules::authenticate`] turns that into a [`Principal`]: a key costs one
//! BLAKE3 hash and one probe of the lock-free [`KeyTable`]; a token is verified by
//! [`Tokens`] (a cached one costs about as much as a key).

pub mod api_key;
pub mod key_table;

use std::net::IpAddr;
use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::limits::{LimitSet, Subject};
use crate::proxy::Identity;
use crate::scope::ScopeSet;
use crate::tier::{TierId, Tiers};
use crate::tokens::{TokenError, TokenGrant, Tokens};
pub use api_key::KeyHash;
pub use key_table::{KeyEntry, KeyTable};

/// Why the credentials of a request were refused. Carries nothing the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialError {
    /// Several different credentials, or one credential header sent twice.
    Ambiguous,
    /// A credential header that is not visible ASCII.
    Malformed,
    /// The API key is malformed, unknown or revoked (or the value is of no known
    /// kind).
    InvalidApiKey,
    /// The token cannot be verified, and why.
    InvalidToken(TokenError),
}

/// A header that may carry a credential, besides `Authorization: Bearer`.
#[derive(Debug, Clone)]
pub struct CredentialHeader {
    /// Header name, e.g. `x-agent-key`.
    pub name: HeaderName,
    /// The name as the config spells it (`X-Agent-Key`), for documents.
    pub display: String,
    /// A value that is neither a key nor a token identifies an anonymous agent.
    pub anonymous: bool,
}

/// The credential rules of a config.
#[derive(Debug, Clone)]
pub struct CredentialRules {
    /// Accept `Authorization: Bearer <credential>`.
    pub bearer: bool,
    /// Other headers, in config order.
    pub headers: Vec<CredentialHeader>,
    /// Key prefixes without the trailing `_` (`ak_live`, `gsk`).
    pub key_prefixes: Vec<String>,
    /// Refuse keys whose checksum is wrong before any lookup.
    pub require_checksum: bool,
}

/// What a request presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// No credential at all.
    Nothing,
    /// An API key (has a configured prefix).
    Key(&'a str),
    /// A JSON Web Token.
    Token(&'a str),
    /// An anonymous identifier: not a secret, never trusted for more than the
    /// anonymous tier.
    Anonymous(&'a str),
    /// A bearer value of no known kind.
    Unrecognised,
}

/// Who a request is, once verified.
#[derive(Debug, Clone)]
pub enum Principal {
    /// No verified credential; carries a short hash of the anonymous identifier, if
    /// one was sent.
    Anonymous(Option<AnonymousId>),
    /// A known API key.
    Key(Arc<KeyEntry>),
    /// A verified access token.
    Token(Arc<TokenGrant>),
}

impl Principal {
    /// Who it is, as the upstream's `X-Authmd-Principal` names it: `key:<id>`, a
    /// token's subject, `anonymous:<digest>` or `anonymous`. Never a secret.
    #[must_use]
    pub fn name(&self) -> std::borrow::Cow<'_, str> {
        use std::borrow::Cow;
        match self {
            Principal::Key(entry) => {
                Cow::Borrowed(entry.principal_header.to_str().unwrap_or("key"))
            }
            Principal::Token(grant) => {
                Cow::Borrowed(grant.principal_header.to_str().unwrap_or("token"))
            }
            Principal::Anonymous(Some(id)) => Cow::Owned(format!("anonymous:{:016x}", id.0)),
            Principal::Anonymous(None) => Cow::Borrowed("anonymous"),
        }
    }
}

/// A 64-bit BLAKE3 digest of an anonymous identifier: stable, bounded in size, and
/// never the identifier itself (which could be anything the agent chose).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AnonymousId(pub u64);

impl AnonymousId {
    fn of(value: &str) -> AnonymousId {
        let digest = blake3::hash(value.as_bytes());
        let b = digest.as_bytes();
        AnonymousId(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }
}

impl Principal {
    /// The scopes this principal holds.
    #[must_use]
    pub fn scopes(&self, tiers: &Tiers) -> ScopeSet {
        match self {
            Principal::Anonymous(_) => tiers.get(TierId::ANONYMOUS).scopes,
            Principal::Key(entry) => entry.scopes(),
            Principal::Token(grant) => grant.scopes,
        }
    }

    /// The principal's tier.
    #[must_use]
    pub fn tier(&self) -> TierId {
        match self {
            Principal::Anonymous(_) => TierId::ANONYMOUS,
            Principal::Key(entry) => entry.tier(),
            Principal::Token(grant) => grant.tier,
        }
    }

    /// Who this principal counts against, from `address`, limited by `tier_limits`
    /// unless its key has limits of its own. An anonymous agent that sent no
    /// identifier counts as its address.
    #[must_use]
    pub fn subject<'a>(&'a self, address: IpAddr, tier_limits: &'a LimitSet) -> Subject<'a> {
        match self {
            Principal::Key(entry) => Subject::named(
                entry.principal_header.as_bytes(),
                entry.profile.limits.as_deref().unwrap_or(tier_limits),
            ),
            Principal::Token(grant) => {
                Subject::named(grant.principal_header.as_bytes(), tier_limits)
            }
            Principal::Anonymous(Some(id)) => Subject::anonymous(id.0, tier_limits),
            Principal::Anonymous(None) => Subject::address(address, tier_limits),
        }
    }

    /// The identity headers the upstream receives for this principal.
    #[must_use]
    pub fn identity(&self, tiers: &Tiers) -> Identity {
        match self {
            Principal::Key(entry) => Identity {
                principal: entry.principal_header.clone(),
                scopes: entry.profile.scopes_header.clone(),
                tier: tiers.get(entry.tier()).header.clone(),
                operator: entry.operator.clone(),
            },
            Principal::Token(grant) => Identity {
                principal: grant.principal_header.clone(),
                scopes: grant.scopes_header.clone(),
                tier: tiers.get(grant.tier).header.clone(),
                operator: grant.operator.clone(),
            },
            Principal::Anonymous(id) => {
                let principal = match id {
                    Some(id) => HeaderValue::from_str(&format!("anonymous:{:016x}", id.0))
                        .unwrap_or_else(|_| HeaderValue::from_static("anonymous")),
                    None => HeaderValue::from_static("anonymous"),
                };
                let anonymous = tiers.get(TierId::ANONYMOUS);
                Identity {
                    principal,
                    scopes: anonymous.scopes_header.clone(),
                    tier: anonymous.header.clone(),
                    operator: None,
                }
            }
        }
    }

    /// True when a credential was verified.
    #[must_use]
    pub fn is_authenticated(&self) -> bool {
        matches!(self, Principal::Key(_) | Principal::Token(_))
    }
}

impl CredentialRules {
    /// Reads the credential headers. Several credentials that disagree, or a header
    /// sent twice, are refused: which one would count is exactly what an attacker
    /// wants to be ambiguous.
    pub fn extract<'a>(&self, headers: &'a HeaderMap) -> Result<Presented<'a>, CredentialError> {
        let mut found: Option<&'a str> = None;
        let mut anonymous: Option<&'a str> = None;
        if self.bearer {
            if let Some(value) = single(headers, &AUTHORIZATION)? {
                if let Some(token) = bearer_token(value) {
                    found = Some(token);
                }
            }
        }
        for header in &self.headers {
            let Some(value) = single(headers, &header.name)? else {
                continue;
            };
            let value = value.trim();
            if header.anonymous && self.classify(value) == Presented::Unrecognised {
                if anonymous.is_some_and(|a| a != value) {
                    return Err(CredentialError::Ambiguous);
                }
                anonymous = Some(value);
                continue;
            }
            if found.is_some_and(|f| f != value) {
                return Err(CredentialError::Ambiguous);
            }
            found = Some(value);
        }
        Ok(match (found, anonymous) {
            (Some(value), _) => self.classify(value),
            (None, Some(id)) => Presented::Anonymous(id),
            (None, None) => Presented::Nothing,
        })
    }

    /// What kind of credential a value is, by its shape alone.
    #[must_use]
    pub fn classify<'a>(&self, value: &'a str) -> Presented<'a> {
        for prefix in &self.key_prefixes {
            if value
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.starts_with('_'))
            {
                return Presented::Key(value);
            }
        }
        if looks_like_jwt(value) {
            return Presented::Token(value);
        }
        Presented::Unrecognised
    }

    /// Verifies what was presented: keys against the key table, tokens with
    /// `tokens` (without it, no token is accepted).
    pub fn authenticate(
        &self,
        presented: Presented<'_>,
        keys: &KeyTable,
        tokens: Option<&Tokens>,
    ) -> Result<Principal, CredentialError> {
        match presented {
            Presented::Nothing => Ok(Principal::Anonymous(None)),
            Presented::Anonymous(id) => Ok(Principal::Anonymous(Some(AnonymousId::of(id)))),
            Presented::Key(key) => {
                if self.require_checksum
                    && !self
                        .key_prefixes
                        .iter()
                        .any(|prefix| api_key::checksum_ok(key, prefix))
                {
                    return Err(CredentialError::InvalidApiKey);
                }
                let entry = keys
                    .get(&KeyHash::of(key))
                    .filter(|entry| entry.is_live())
                    .ok_or(CredentialError::InvalidApiKey)?;
                keys.touch(&entry);
                Ok(Principal::Key(entry))
            }
            Presented::Token(token) => {
                let grant = tokens
                    .ok_or(TokenError::UntrustedIssuer)
                    .and_then(|tokens| tokens.verify(token, crate::clock::unix_now()))
                    .map_err(CredentialError::InvalidToken)?;
                // A token minted from a key ends with the key.
                if grant
                    .key_id
                    .as_deref()
                    .is_some_and(|id| !keys.is_live_id(id))
                {
                    return Err(CredentialError::InvalidToken(TokenError::Revoked));
                }
                Ok(Principal::Token(grant))
            }
            Presented::Unrecognised => Err(CredentialError::InvalidApiKey),
        }
    }

    /// The headers that carry credentials: removed before forwarding, so the upstream
    /// never sees a secret the proxy has consumed.
    pub fn consumed_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.bearer
            .then_some(&AUTHORIZATION)
            .into_iter()
            .chain(self.headers.iter().map(|h| &h.name))
    }
}

/// The value of a header sent at most once (`None` if absent).
fn single<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a str>, CredentialError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(CredentialError::Ambiguous);
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| CredentialError::Malformed)
}

/// The credential of an `Authorization: Bearer <credential>` value (scheme
/// case-insensitive, RFC 6750 section 2.1); `None` for other schemes.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// Three parts separated by dots, the first opening a JSON object (`eyJ` is
/// base64url of `{"`). The shape only: whatever else is wrong is the verifier's to
/// say, precisely, and one pass over the value keeps a long token cheap.
fn looks_like_jwt(value: &str) -> bool {
    value.starts_with("eyJ") && value.bytes().filter(|b| *b == b'.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn rules() -> CredentialRules {
        CredentialRules {
            bearer: true,
            headers: vec![
                CredentialHeader {
                    name: HeaderName::from_static("x-agent-key"),
                    display: "X-Agent-Key".into(),
                    anonymous: true,
                },
                CredentialHeader {
                    name: HeaderName::from_static("x-api-key"),
                    display: "X-API-Key".into(),
                    anonymous: false,
                },
            ],
            key_prefixes: vec!["ak_live".into()],
            require_checksum: true,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn classification() {
        let r = rules();
        let cases: &[(&[(&str, &str)], Presented<'_>)] = &[
            (&[], Presented::Nothing),
            (
                &[("authorization", "Bearer ak_live_abc")],
                Presented::Key("ak_live_abc"),
            ),
            (
                &[("authorization", "bearer  ak_live_abc ")],
                Presented::Key("ak_live_abc"),
            ),
            (
                &[("authorization", "Basic dXNlcjpwdw==")],
                Presented::Nothing,
            ),
            (
                &[("authorization", "Bearer eyJa.eyJb.c")],
                Presented::Token("eyJa.eyJb.c"),
            ),
            (
                &[("authorization", "Bearer whatever")],
                Presented::Unrecognised,
            ),
            (
                &[("x-agent-key", "my-agent")],
                Presented::Anonymous("my-agent"),
            ),
            (&[("x-agent-key", "ak_live_x")], Presented::Key("ak_live_x")),
            (&[("x-api-key", "my-agent")], Presented::Unrecognised),
            (
                &[
                    ("x-agent-key", "my-agent"),
                    ("authorization", "Bearer ak_live_x"),
                ],
                Presented::Key("ak_live_x"),
            ),
            (
                &[
                    ("x-api-key", "ak_live_x"),
                    ("authorization", "Bearer ak_live_x"),
                ],
                Presented::Key("ak_live_x"),
            ),
        ];
        for (pairs, want) in cases {
            let mut h = HeaderMap::new();
            for (k, v) in *pairs {
                h.append(*k, HeaderValue::from_str(v).unwrap());
            }
            assert_eq!(r.extract(&h).unwrap(), *want, "{pairs:?}");
        }
    }

    #[test]
    fn conflicting_or_repeated_credentials_are_refused() {
        let r = rules();
        for h in [
            headers(&[
                ("x-api-key", "ak_live_a"),
                ("authorization", "Bearer ak_live_b"),
            ]),
            headers(&[
                ("authorization", "Bearer ak_live_a"),
                ("authorization", "Bearer ak_live_a"),
            ]),
            headers(&[("x-agent-key", "one"), ("x-agent-key", "two")]),
        ] {
            assert!(matches!(r.extract(&h), Err(CredentialError::Ambiguous)));
        }
    }

    #[test]
    fn a_key_with_a_bad_checksum_is_refused_without_lookup() {
        let r = rules();
        let table = KeyTable::default();
        let key = api_key::mint("ak_live").unwrap();
        let mut bad = key.secret.clone();
        bad.pop();
        bad.push('z');
        assert!(matches!(
            r.authenticate(Presented::Key(&bad), &table, None),
            Err(CredentialError::InvalidApiKey)
        ));
        assert!(matches!(
            r.authenticate(Presented::Key(&key.secret), &table, None),
            Err(CredentialError::InvalidApiKey)
        ));
    }
}
