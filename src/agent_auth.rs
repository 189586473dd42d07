//! The credential lifecycle endpoints: agent registration, claims, revocation, and
//! key management.
//!
//! Every write follows one order: validate everything (body, scopes, ownership,
//! assertion), write the store, and only once the store has acknowledged (durably),
//! apply the change to the in-memory [`KeyTable`] and answer. A refusal at any step
//! before the store write changes nothing; a revocation is in the table before its
//! answer leaves, so the next request in this process is refused.
//!
//! [`registration`] has register; [`claims`] the claim and the human claim page;
//! [`keys`] key create / list / rotate / revoke and the scope list. Every JSON body
//! is read by [`members`]: members an endpoint does not know are ignored and named in
//! the answer's `ignored_members` (RFC 7591 section 2), the known ones checked
//! strictly, each refusal naming the member.

pub mod claims;
pub mod keys;
mod members;
pub mod operator;
pub mod registration;

#[doc(hidden)]
pub use members::Understood;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Serialize;

use crate::assertion::AssertionVerifier;
use crate::body::Body;
use crate::clock::unix_now;
use crate::config::Config;
use crate::credentials::{
    CredentialError, KeyEntry, KeyHash, KeyTable, Presented, Principal, api_key,
};
use crate::limits::AddressLimiter;
use crate::policy::MethodSet;
use crate::rejection::{LifecycleError, Rejection};
use crate::store::sync::Compiler;
use crate::store::{KeyRecord, Store, StoreError};
use crate::tokens::Tokens;
use members::{JsonBody, Members, Names};

/// Largest request body the endpoints read.
const MAX_BODY: usize = 16 * 1024;

/// What the lifecycle endpoints share.
#[derive(Debug)]
pub struct AgentAuth {
    store: Store,
    keys: Arc<KeyTable>,
    compiler: Arc<Compiler>,
    verifier: Arc<AssertionVerifier>,
    tokens: Arc<Tokens>,
    anonymous_limit: Option<Arc<AddressLimiter>>,
    identity_limit: Option<Arc<AddressLimiter>>,
}

/// A refusal, with an optional detail appended to its message. The detail names
/// what is wrong (a field, a declared scope) and never repeats client input that
/// could be a secret.
#[derive(Debug)]
pub struct Failure {
    /// The refusal.
    pub rejection: Rejection,
    /// What exactly.
    pub detail: Option<String>,
}

impl From<Rejection> for Failure {
    fn from(rejection: Rejection) -> Self {
        Failure {
            rejection,
            detail: None,
        }
    }
}

impl From<CredentialError> for Failure {
    fn from(error: CredentialError) -> Self {
        Rejection::from(error).into()
    }
}

impl From<LifecycleError> for Failure {
    fn from(error: LifecycleError) -> Self {
        Rejection::Lifecycle(error).into()
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        tracing::warn!(%error, "credential store write refused");
        LifecycleError::StoreUnavailable.into()
    }
}

impl Failure {
    fn with(error: LifecycleError, detail: impl Into<String>) -> Failure {
        Failure {
            rejection: Rejection::Lifecycle(error),
            detail: Some(detail.into()),
        }
    }
}

/// The result of a lifecycle endpoint.
pub type Answer = Result<Response<Body>, Failure>;

impl AgentAuth {
    /// Builds the endpoints over an open store, the table it feeds, the compiler
    /// of its records, the identity-assertion verifier, and the token signer.
    #[must_use]
    pub fn new(
        config: &Config,
        store: Store,
        keys: Arc<KeyTable>,
        compiler: Arc<Compiler>,
        verifier: Arc<AssertionVerifier>,
        tokens: Arc<Tokens>,
        previous: Option<&AgentAuth>,
    ) -> AgentAuth {
        let registration = &config.lifecycle.registration;
        let hour = Duration::from_secs(3600);
        AgentAuth {
            store,
            keys,
            compiler,
            verifier,
            tokens,
            anonymous_limit: AddressLimiter::carried(
                previous.and_then(|p| p.anonymous_limit.as_ref()),
                registration.per_hour,
                hour,
            ),
            identity_limit: AddressLimiter::carried(
                previous.and_then(|p| p.identity_limit.as_ref()),
                registration.identity_per_hour,
                hour,
            ),
        }
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Writes a record's new state into the table.
    async fn apply(&self, record: &KeyRecord) {
        self.compiler.apply(&self.keys, record).await;
    }

    /// Revokes the stored key whose secret is `credential`: `Ok(1)` when revoked,
    /// `Ok(0)` when no stored key has it. A key declared in the config cannot be.
    pub async fn revoke_credential(
        &self,
        config: &Config,
        credential: &str,
    ) -> Result<u32, Failure> {
        let Presented::Key(key) = config.credentials.classify(credential.trim()) else {
            return Ok(0);
        };
        let Some(entry) = self.keys.get(&KeyHash::of(key)) else {
            return Ok(0);
        };
        if entry.is_static() {
            return Err(LifecycleError::KeyNotManaged.into());
        }
        match self.store.revoke_key(entry.id(), unix_now()).await? {
            Some(record) => {
                self.apply(&record).await;
                tracing::info!(key = %record.id, "key revoked by its holder");
                Ok(1)
            }
            None => Ok(0),
        }
    }

    /// `POST agent_revoke` with `{"credential": "..."}` (or `{"key": "..."}`).
    pub async fn agent_revoke(&self, config: &Config, request: Request<Incoming>) -> Answer {
        let body: RevokeBody = read_json(request, &Method::POST).await?;
        let revoked = self.revoke_credential(config, &body.credential).await?;
        let mut answer = serde_json::json!({ "revoked": revoked });
        note_ignored(&mut answer, &body.ignored);
        Ok(json(StatusCode::OK, &answer))
    }
}

/// The body of `POST agent_revoke`: the key's secret as `credential`, or as `key`,
/// the key management API's former name for it.
#[derive(Debug)]
struct RevokeBody {
    credential: String,
    ignored: Vec<String>,
}

impl JsonBody for RevokeBody {
    const MEMBERS: &'static [Names] = &[CREDENTIAL];

    fn read(members: &Members) -> Result<Self, Failure> {
        let Some(credential) = members.text(CREDENTIAL)? else {
            return Err(members::invalid(
                "`credential` is missing: send the key to revoke as `credential`",
            ));
        };
        Ok(RevokeBody {
            credential,
            ignored: members.ignored(),
        })
    }

    fn ignored(&self) -> &[String] {
        &self.ignored
    }

    fn understood(&self) -> Vec<(&'static str, Understood)> {
        vec![(CREDENTIAL[0], Understood::Text(self.credential.clone()))]
    }
}

const CREDENTIAL: Names = &["credential", "key"];

/// The request bodies of the lifecycle endpoints, by endpoint.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `POST register`.
    Register,
    /// `POST claim`.
    Claim,
    /// `POST` on the key collection.
    CreateKey,
    /// `POST agent_revoke`.
    Revoke,
}

/// What [`parse_body`] made of a body: the members the endpoint understood, each
/// under its first name with the value it takes, and the names of the members it
/// ignored (sorted, each once), as its answer lists them in `ignored_members`.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedBody {
    /// The understood members, in the endpoint's order.
    pub members: Vec<(&'static str, Understood)>,
    /// The ignored members' names.
    pub ignored: Vec<String>,
}

/// Parses `bytes` as the endpoint of `kind` parses its body: what it understood, or
/// the envelope's message. For the fuzz targets, which cannot make the
/// `Request<Incoming>` the endpoints take; not part of the API.
#[doc(hidden)]
pub fn parse_body(kind: BodyKind, bytes: &[u8]) -> Result<ParsedBody, String> {
    fn view<T: JsonBody>(bytes: &[u8]) -> Result<ParsedBody, String> {
        parse_json::<T>(bytes)
            .map(|body| ParsedBody {
                members: body.understood(),
                ignored: body.ignored().to_vec(),
            })
            .map_err(|failure| failure.detail.unwrap_or_default())
    }
    match kind {
        BodyKind::Register => view::<registration::RegisterBody>(bytes),
        BodyKind::Claim => view::<claims::ClaimBody>(bytes),
        BodyKind::CreateKey => view::<keys::CreateBody>(bytes),
        BodyKind::Revoke => view::<RevokeBody>(bytes),
    }
}

/// The names of the members a body ignored, in an answer: `ignored_members`, only
/// when there are some.
fn note_ignored(answer: &mut serde_json::Value, ignored: &[String]) {
    if !ignored.is_empty() {
        answer["ignored_members"] = ignored.into();
    }
}

/// The key principal of a request to a key endpoint, or the 401 to answer.
fn authenticate(
    config: &Config,
    keys: &KeyTable,
    headers: &HeaderMap,
) -> Result<Arc<KeyEntry>, Failure> {
    let presented = config.credentials.extract(headers)?;
    if let Presented::Token(_) = presented {
        return Err(Failure {
            rejection: Rejection::MissingCredential,
            detail: Some("the key endpoints take an API key, not an access token".into()),
        });
    }
    match config.credentials.authenticate(presented, keys, None)? {
        Principal::Key(entry) => Ok(entry),
        Principal::Anonymous(_) | Principal::Token(_) => Err(Rejection::MissingCredential.into()),
    }
}

/// Reads a JSON body of at most 16 KiB into `T`.
async fn read_json<T: JsonBody>(request: Request<Incoming>, method: &Method) -> Result<T, Failure> {
    let bytes = read_body(request, method, "application/json").await?;
    parse_json(&bytes)
}

/// Checks the method and media type and reads a bounded body.
async fn read_body(
    request: Request<Incoming>,
    method: &Method,
    media_type: &str,
) -> Result<Bytes, Failure> {
    if request.method() != method {
        return Err(Rejection::MethodNotAllowed(MethodSet::of(&[method.as_str()])).into());
    }
    let declared = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if declared.as_deref() != Some(media_type) {
        return Err(Failure::with(
            LifecycleError::UnsupportedMediaType,
            format!("expected `{media_type}`"),
        ));
    }
    let too_large = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_BODY);
    if too_large {
        return Err(LifecycleError::BodyTooLarge.into());
    }
    match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(LifecycleError::BodyTooLarge.into())
        }
        Err(_) => Err(Failure::with(
            LifecycleError::InvalidBody,
            "the body was cut off",
        )),
    }
}

/// Parses one JSON object into `T`: members it does not know are ignored, those
/// it knows are checked, and a refusal names the member and what was wrong with it,
/// never the value ([`members`]).
fn parse_json<T: JsonBody>(bytes: &[u8]) -> Result<T, Failure> {
    let members = Members::parse(bytes, T::MEMBERS)?;
    T::read(&members)
}

/// A JSON answer that must not be cached (it may carry a secret).
fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// A public id such as `key_...` or `reg_...`: 128 random bits in base58.
fn random_id(prefix: &str) -> Result<String, Failure> {
    api_key::public_id(prefix).map_err(|e| StoreError::Unavailable(e.to_string()).into())
}

/// Mints a key with the configured prefix.
fn mint(config: &Config) -> Result<api_key::NewKey, Failure> {
    api_key::mint(&config.lifecycle.keys.prefix)
        .map_err(|e| StoreError::Unavailable(e.to_string()).into())
}

/// RFC 3339 form of a unix time.
fn rfc3339(unix: i64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Checks a registration rate limit for a client address.
fn limit(limiter: Option<&AddressLimiter>, address: IpAddr) -> Result<(), Failure> {
    match limiter.map(|l| l.check(address)) {
        Some(Err(retry_after)) => Err(LifecycleError::RateLimited { retry_after }.into()),
        _ => Ok(()),
    }
}

/// Scope names a client asked for: a JSON array, or an OAuth space-separated string.
#[derive(Debug, Clone)]
enum ScopeNames {
    List(Vec<String>),
    Text(String),
}

impl ScopeNames {
    fn names(&self) -> Vec<&str> {
        match self {
            ScopeNames::List(list) => list.iter().map(String::as_str).collect(),
            ScopeNames::Text(text) => text.split_whitespace().collect(),
        }
    }
}

/// Resolves requested scope names; an undeclared one is `INVALID_SCOPE`, naming it
/// only when it looks like a scope name (never echoing arbitrary input).
fn requested_scopes(config: &Config, names: &[&str]) -> Result<crate::scope::ScopeSet, Failure> {
    config
        .scopes
        .granted(names.iter().copied())
        .map_err(|(name, _)| {
            let detail = if name.len() <= 64 && crate::scope::is_valid_name(name) {
                format!("`{name}` is not declared")
            } else {
                "a requested scope is not declared".to_owned()
            };
            Failure::with(LifecycleError::InvalidScope, detail)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_one_json_object_and_never_an_array_of_its_fields() {
        assert!(parse_body(BodyKind::Revoke, br#" {"credential": "x"} "#).is_ok());
        // The fuzz target `lifecycle_body` found serde filling a struct from an array.
        for body in [&br#"["x"]"#[..], br#"  ["x"]"#, b"\"x\"", b"null", b""] {
            assert_eq!(
                parse_body(BodyKind::Revoke, body),
                Err("the body must be a JSON object".to_owned()),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(parse_body(BodyKind::CreateKey, br#"["name", ["a"]]"#).is_err());
    }

    #[test]
    fn a_refusal_names_the_member_and_never_the_value() {
        let refused = parse_body(BodyKind::Claim, br#"{"claim_token": ["clm_secret_value"]}"#);
        assert_eq!(
            refused,
            Err("`claim_token`: expected a string, got a list".to_owned())
        );
        let refused = parse_body(BodyKind::Revoke, br#"{"key": "k1", "credential": "k2"}"#);
        assert_eq!(
            refused,
            Err("`key` and `credential` differ; both name the same member: send one, or the same value in both".to_owned())
        );
        let refused = parse_body(BodyKind::Revoke, br#"{"extra": "ak_live_x"}"#);
        assert_eq!(
            refused,
            Err("`credential` is missing: send the key to revoke as `credential`".to_owned())
        );
    }

    #[test]
    fn members_not_known_are_ignored_and_named() {
        let parsed = parse_body(
            BodyKind::Revoke,
            br#"{"token_type_hint": "x", "credential": "k", "b": 1}"#,
        );
        assert_eq!(
            parsed,
            Ok(ParsedBody {
                members: vec![("credential", Understood::Text("k".into()))],
                ignored: vec!["b".into(), "token_type_hint".into()],
            })
        );
        let mut answer = serde_json::json!({});
        note_ignored(&mut answer, &[]);
        assert_eq!(answer, serde_json::json!({}));
        note_ignored(&mut answer, &["b".to_owned()]);
        assert_eq!(answer, serde_json::json!({"ignored_members": ["b"]}));
    }
}
