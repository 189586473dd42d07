//! The proxy's OAuth endpoints: the token endpoint (RFC 6749 `client_credentials`,
//! RFC 7523 jwt-bearer with ID-JAG assertions, RFC 8707 `resource`), the revocation
//! endpoint (RFC 7009), and, where people sign in (`login.providers`), the
//! interactive flow of OAuth 2.1: the authorization request's checks
//! ([`authorize`]), the sign-in and consent (`consent`), the `authorization_code`
//! and `refresh_token` grants (`grants`), its clients ([`clients`]) and RFC 7591
//! registration (`registration`). Without sign-in the authorization endpoint
//! answers `unsupported_response_type`.
//!
//! The token endpoint answers exactly as RFC 6749 section 5 says: `200` with
//! `{access_token, token_type, expires_in, scope}`, every answer `Cache-Control:
//! no-store` and `Pragma: no-cache`, errors in the section 5.2 format (plus this
//! API's `code`, `message` and `docs`), `invalid_client` as `401` with a `Basic`
//! challenge when the client used HTTP Basic. A client secret is an API key this API
//! issued, and its `client_id` the key's id.

pub mod authorize;
mod client;
pub mod clients;
mod consent;
mod grants;
pub mod pkce;
mod registration;
pub mod resource;

use std::sync::Arc;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::agent_auth::AgentAuth;
use crate::assertion::{AssertionError, AssertionVerifier, VerifiedAssertion};
use crate::body::Body;
use crate::clock::unix_now;
use crate::config::Config;
use crate::credentials::{KeyEntry, KeyHash, KeyTable, Presented};
use crate::limits::AddressLimiter;
use crate::login::Login;
use crate::policy::MethodSet;
use crate::protocol::JWT_BEARER;
use crate::rejection::{GrantError, LifecycleError, OAuthError, Rejection};
use crate::scope::ScopeSet;
use crate::store::Store;
use crate::tier::TierId;
use crate::tokens::{Issue, Tokens};
use client::ClientAuth;

/// Largest request body an OAuth endpoint reads.
const MAX_FORM: usize = 16 * 1024;

/// What the token and revocation endpoints share.
#[derive(Debug)]
pub struct OAuth {
    tokens: Arc<Tokens>,
    assertions: Arc<AssertionVerifier>,
    keys: Arc<KeyTable>,
    store: Option<Store>,
    anonymous_limit: Option<Arc<AddressLimiter>>,
    /// Client registrations per address (RFC 7591).
    registration_limit: Option<Arc<AddressLimiter>>,
    /// Used assertion ids when there is no store (one process: memory is enough;
    /// shared with the next config generation on reload).
    used: Arc<papaya::HashMap<String, i64>>,
    /// Fetches and caches Client ID Metadata Documents, where people sign in.
    documents: Option<Arc<clients::metadata_document::MetadataDocuments>>,
}

/// Where the request came from and which origin it addressed.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The client's address.
    pub peer: std::net::IpAddr,
    /// The public origin the request was addressed to.
    pub origin: &'a str,
}

type Form = Vec<(String, String)>;

impl OAuth {
    /// The endpoints over the proxy's token machinery and, when there is one, its
    /// store (for assertion replay and revocation across replicas).
    #[must_use]
    pub fn new(
        config: &Config,
        tokens: Arc<Tokens>,
        assertions: Arc<AssertionVerifier>,
        keys: Arc<KeyTable>,
        store: Option<Store>,
        previous: Option<&OAuth>,
    ) -> OAuth {
        OAuth {
            tokens,
            assertions,
            keys,
            store,
            anonymous_limit: config.tokens.anonymous.and_then(|a| {
                AddressLimiter::carried(
                    previous.and_then(|p| p.anonymous_limit.as_ref()),
                    a.per_hour,
                    std::time::Duration::from_secs(3600),
                )
            }),
            registration_limit: config
                .interactive
                .registration
                .enabled
                .then_some(config.interactive.registration.per_hour)
                .and_then(|per_hour| {
                    AddressLimiter::carried(
                        previous.and_then(|p| p.registration_limit.as_ref()),
                        per_hour,
                        std::time::Duration::from_secs(3600),
                    )
                }),
            used: previous.map(|p| p.used.clone()).unwrap_or_default(),
            documents: config
                .login
                .enabled()
                .then(|| {
                    clients::metadata_document::MetadataDocuments::new(
                        &config.interactive.metadata_documents,
                    )
                })
                .flatten()
                .map(Arc::new),
        }
    }

    /// `POST token_endpoint`.
    pub async fn token(
        &self,
        config: &Config,
        request: Request<Incoming>,
        caller: Caller<'_>,
        login: Option<&Login>,
    ) -> Result<Response<Body>, Rejection> {
        let (auth, form) = read(request).await?;
        let settings = &config.tokens;
        let grant = field(&form, "grant_type").ok_or(Rejection::OAuth(
            OAuthError::InvalidRequest("`grant_type` is required"),
        ))?;
        if !settings.enabled || !self.tokens.issues() {
            return Err(Rejection::OAuth(OAuthError::UnsupportedGrantType));
        }
        if let (Some(login), "authorization_code" | "refresh_token") = (login, grant) {
            let store = self
                .store
                .as_ref()
                .ok_or(Rejection::Lifecycle(LifecycleError::StoreUnavailable))?;
            let client = self.interactive_client(config, &auth).await?;
            return if grant == "authorization_code" {
                self.authorization_code(config, store, &client, &form).await
            } else {
                self.refresh_token(config, store, &client, &form, login.refresh_key())
                    .await
            };
        }
        let audience = self.audience(&form, caller.origin)?;
        let now = unix_now();
        let (subject, client_id, scopes, tier, operator) = match grant {
            "client_credentials" => self.client_credentials(config, &auth, &form, caller)?,
            JWT_BEARER if settings.jwt_bearer => self.jwt_bearer(config, &auth, &form, now).await?,
            _ => return Err(Rejection::OAuth(OAuthError::UnsupportedGrantType)),
        };
        let issue = Issue {
            subject: &subject,
            audience: &audience,
            scopes,
            tier,
            client_id: client_id.as_deref(),
            family: None,
            operator: operator.as_deref(),
        };
        let issued = self
            .tokens
            .issue(&issue, now)
            .ok_or(Rejection::Lifecycle(LifecycleError::StoreUnavailable))?;
        tracing::debug!(grant, principal = %subject, "token issued");
        Ok(token_answer(&issued, None))
    }

    /// The token's `aud`: the `resource` asked for (RFC 8707), which must be this
    /// API, or the origin the request addressed.
    fn audience(&self, form: &Form, origin: &str) -> Result<String, Rejection> {
        let mut resources = form.iter().filter(|(n, _)| n == "resource");
        let Some((_, resource)) = resources.next() else {
            return Ok(origin.to_owned());
        };
        if resources.next().is_some() {
            return Err(Rejection::OAuth(OAuthError::InvalidTarget));
        }
        resource::find(resource, self.tokens.audiences())
            .cloned()
            .ok_or(Rejection::OAuth(OAuthError::InvalidTarget))
    }

    /// `client_credentials`: with an API key as the client secret, or anonymous
    /// where the config offers it.
    fn client_credentials(
        &self,
        config: &Config,
        auth: &ClientAuth,
        form: &Form,
        caller: Caller<'_>,
    ) -> Result<Grant, Rejection> {
        let settings = &config.tokens;
        match auth {
            ClientAuth::Secret { id, secret, basic } => {
                if !settings.api_keys {
                    return Err(Rejection::OAuth(OAuthError::UnauthorizedClient(
                        "client_credentials with a client secret is not offered here",
                    )));
                }
                let entry = self.client(config, id, secret, *basic)?;
                let scopes = requested(config, form, entry.scopes())?;
                Ok((
                    entry
                        .principal_header
                        .to_str()
                        .unwrap_or_default()
                        .to_owned(),
                    Some(entry.id().to_string()),
                    scopes,
                    entry.tier(),
                    entry
                        .operator
                        .as_ref()
                        .and_then(|o| o.to_str().ok())
                        .map(str::to_owned),
                ))
            }
            ClientAuth::IdOnly(_) => {
                Err(Rejection::OAuth(OAuthError::InvalidClient { basic: false }))
            }
            ClientAuth::None => {
                let Some(anonymous) = settings.anonymous else {
                    return Err(Rejection::OAuth(OAuthError::InvalidClient { basic: false }));
                };
                if let Some(limit) = &self.anonymous_limit {
                    limit.check(caller.peer).map_err(|retry_after| {
                        Rejection::Lifecycle(LifecycleError::RateLimited { retry_after })
                    })?;
                }
                let scopes = requested(config, form, anonymous.scopes)?;
                let id = crate::credentials::api_key::public_id("anon")
                    .map_err(|_| Rejection::Lifecycle(LifecycleError::StoreUnavailable))?;
                Ok((
                    format!("anonymous:{id}"),
                    None,
                    scopes,
                    anonymous.tier,
                    None,
                ))
            }
        }
    }

    /// The client of an interactive grant: a public client names itself, a
    /// confidential one authenticates with its secret.
    async fn interactive_client(
        &self,
        config: &Config,
        auth: &ClientAuth,
    ) -> Result<clients::Client, Rejection> {
        let (id, secret, basic) = match auth {
            ClientAuth::None => {
                return Err(Rejection::OAuth(OAuthError::InvalidRequest(
                    "`client_id` is required",
                )));
            }
            ClientAuth::IdOnly(id) => (id, None, false),
            ClientAuth::Secret { id, secret, basic } => (id, Some(secret), *basic),
        };
        let refused = Rejection::OAuth(OAuthError::InvalidClient { basic });
        let client =
            match clients::find(config, self.store.as_ref(), self.documents.as_deref(), id).await {
                Ok(client) => client.ok_or(refused)?,
                Err(clients::FindError::Document(error)) => {
                    tracing::debug!(%error, "a client's metadata document is refused");
                    return Err(refused);
                }
                Err(clients::FindError::Store(error)) => {
                    tracing::warn!(%error, "cannot read a registered client");
                    return Err(Rejection::Lifecycle(LifecycleError::StoreUnavailable));
                }
            };
        match (&client.secret_hash, secret) {
            (None, None) => Ok(client),
            (Some(hash), Some(secret)) if KeyHash::of(secret) == *hash => Ok(client),
            _ => Err(refused),
        }
    }

    /// The API key a client authenticated with, whose id is `client_id`.
    fn client(
        &self,
        config: &Config,
        id: &str,
        secret: &str,
        basic: bool,
    ) -> Result<Arc<KeyEntry>, Rejection> {
        let refused = Rejection::OAuth(OAuthError::InvalidClient { basic });
        let Presented::Key(key) = config.credentials.classify(secret) else {
            return Err(refused);
        };
        let checksum_ok = !config.credentials.require_checksum
            || config
                .credentials
                .key_prefixes
                .iter()
                .any(|p| crate::credentials::api_key::checksum_ok(key, p));
        let entry = checksum_ok
            .then(|| self.keys.get(&KeyHash::of(key)))
            .flatten()
            .filter(|e| e.is_live() && e.id() == id)
            .ok_or(refused)?;
        self.keys.touch(&entry);
        Ok(entry)
    }

    /// The jwt-bearer grant with an ID-JAG.
    async fn jwt_bearer(
        &self,
        config: &Config,
        auth: &ClientAuth,
        form: &Form,
        now: i64,
    ) -> Result<Grant, Rejection> {
        let assertion = field(form, "assertion").ok_or(Rejection::OAuth(
            OAuthError::InvalidRequest("`assertion` is required"),
        ))?;
        let verified = self.assertions.verify(assertion, now).await.map_err(|e| {
            // A retryable outage of the issuer's keys, not a bad grant.
            if e == AssertionError::JwksUnavailable {
                Rejection::Lifecycle(LifecycleError::Assertion(e))
            } else {
                Rejection::OAuth(OAuthError::InvalidGrant(GrantError::Assertion(e)))
            }
        })?;
        let client = match auth {
            ClientAuth::Secret { id, secret, basic } => {
                Some(self.client(config, id, secret, *basic)?.id().to_string())
            }
            ClientAuth::IdOnly(id) => Some(id.clone()),
            ClientAuth::None => None,
        };
        if client.is_some() && client != verified.client_id {
            return Err(Rejection::OAuth(OAuthError::InvalidGrant(
                GrantError::ClientMismatch,
            )));
        }
        let (tier, most) = self.identity_tier(config, &verified);
        let scopes = match field(form, "scope") {
            Some(_) => requested(config, form, most)?,
            None if !verified.scopes.is_empty() => config
                .scopes
                .granted_known(verified.scopes.iter().map(String::as_str))
                .intersection(&most),
            None => most,
        };
        if !self.first_use(&verified, now).await? {
            return Err(Rejection::OAuth(OAuthError::InvalidGrant(
                GrantError::Replayed,
            )));
        }
        Ok((
            crate::agent_auth::registration::identity_owner(&verified),
            verified.client_id.clone(),
            scopes,
            tier,
            None,
        ))
    }

    /// The tier and most scopes of an identity from a trusted issuer.
    fn identity_tier(&self, config: &Config, verified: &VerifiedAssertion) -> (TierId, ScopeSet) {
        let registration = &config.lifecycle.registration;
        match config
            .trusted_issuers
            .iter()
            .find(|i| i.issuer == verified.issuer)
            .and_then(|i| i.tier)
        {
            Some(tier) => (tier, config.tiers.get(tier).scopes),
            None => (registration.claimed_tier, registration.claimed_scopes),
        }
    }

    /// Records the assertion's `jti`; false when it was used before.
    async fn first_use(&self, verified: &VerifiedAssertion, now: i64) -> Result<bool, Rejection> {
        match &self.store {
            Some(store) => store
                .use_assertion(
                    &verified.issuer,
                    &verified.jti,
                    verified.remember_until(),
                    now,
                )
                .await
                .map_err(|error| {
                    tracing::warn!(%error, "cannot record an assertion's use");
                    Rejection::Lifecycle(LifecycleError::StoreUnavailable)
                }),
            None => {
                let used = self.used.pin();
                if used.len() > 100_000 {
                    used.retain(|_, exp| *exp >= now);
                }
                let key = format!("{}\0{}", verified.issuer, verified.jti);
                Ok(used.try_insert(key, verified.remember_until()).is_ok())
            }
        }
    }

    /// `POST revocation_endpoint` (RFC 7009): 200 for any token this server did not
    /// issue or that is already invalid; a key declared in the configuration is
    /// `unsupported_token_type`.
    pub async fn revoke(
        &self,
        config: &Config,
        request: Request<Incoming>,
        agent_auth: Option<&AgentAuth>,
    ) -> Result<Response<Body>, Rejection> {
        let (_, form) = read(request).await?;
        let Some(token) = field(&form, "token") else {
            return Err(Rejection::OAuth(OAuthError::InvalidRequest(
                "`token` is required",
            )));
        };
        match config.credentials.classify(token) {
            Presented::Key(key) => match (self.keys.get(&KeyHash::of(key)), agent_auth) {
                (Some(entry), _) if entry.is_static() => {
                    return Err(Rejection::OAuth(OAuthError::UnsupportedTokenType));
                }
                (Some(_), Some(agent_auth)) => {
                    agent_auth
                        .revoke_credential(config, token)
                        .await
                        .map_err(|failure| failure.rejection)?;
                }
                (Some(_), None) => {
                    return Err(Rejection::Lifecycle(LifecycleError::StoreUnavailable));
                }
                (None, _) => {}
            },
            Presented::Token(token) => {
                if let Some((jti, expires_at)) = self.tokens.own_token_id(token) {
                    if expires_at > unix_now() {
                        if let Some(store) = &self.store {
                            store
                                .revoke_token(&jti, expires_at)
                                .await
                                .map_err(|error| {
                                    tracing::warn!(%error, "cannot record a token's revocation");
                                    Rejection::Lifecycle(LifecycleError::StoreUnavailable)
                                })?;
                        }
                        self.tokens.deny(&jti, expires_at);
                        tracing::info!(jti, "access token revoked");
                    }
                }
            }
            Presented::Unrecognised if token.starts_with("rt_") => {
                if let Some(store) = &self.store {
                    self.revoke_refresh(store, token).await?;
                }
            }
            Presented::Nothing | Presented::Anonymous(_) | Presented::Unrecognised => {}
        }
        let mut response = Response::new(Body::empty());
        no_store(&mut response);
        Ok(response)
    }
}

/// (subject, client_id, scopes, tier) of a token to issue.
/// A grant's subject, client, scopes, tier, and the operator of the key it is
/// minted from.
type Grant = (String, Option<String>, ScopeSet, TierId, Option<String>);

/// The scopes asked for with `scope` (all of `most` when absent), which must be
/// declared and within `most`.
fn requested(config: &Config, form: &Form, most: ScopeSet) -> Result<ScopeSet, Rejection> {
    let Some(scope) = field(form, "scope") else {
        return Ok(most);
    };
    let set = config
        .scopes
        .granted(scope.split_whitespace())
        .map_err(|_| Rejection::OAuth(OAuthError::InvalidScope))?;
    if !set.is_subset_of(&most) {
        return Err(Rejection::OAuth(OAuthError::InvalidScope));
    }
    Ok(set)
}

/// The token endpoint's 200 (RFC 6749 section 5.1), with a refresh token when
/// one was issued.
fn token_answer(issued: &crate::tokens::Issued, refresh: Option<&str>) -> Response<Body> {
    let mut body = serde_json::json!({
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    });
    if let (Some(refresh), Some(map)) = (refresh, body.as_object_mut()) {
        map.insert("refresh_token".into(), refresh.into());
    }
    json_no_store(http::StatusCode::OK, &body)
}

/// A JSON answer that must not be cached (it carries a credential).
fn json_no_store(status: http::StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::full(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    no_store(&mut response);
    response
}

fn no_store(response: &mut Response<Body>) {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(PRAGMA, HeaderValue::from_static("no-cache"));
}

/// `authorization_endpoint` where nobody signs in: no interactive flow is offered.
pub fn authorize<B>(request: &Request<B>) -> Result<Response<Body>, Rejection> {
    if request.method() != Method::GET && request.method() != Method::POST {
        return Err(Rejection::MethodNotAllowed(MethodSet::of(&["GET", "POST"])));
    }
    Err(Rejection::OAuth(OAuthError::UnsupportedResponseType))
}

/// The client authentication and the parameters of a form (or, as some agents
/// send, JSON object) body.
async fn read(request: Request<Incoming>) -> Result<(ClientAuth, Form), Rejection> {
    if request.method() != Method::POST {
        return Err(Rejection::MethodNotAllowed(MethodSet::of(&["POST"])));
    }
    let (parts, body) = request.into_parts();
    let body = Limited::new(body, MAX_FORM)
        .collect()
        .await
        .map_err(|_| {
            Rejection::OAuth(OAuthError::InvalidRequest(
                "the request body is larger than 16 KiB or was cut off",
            ))
        })?
        .to_bytes();
    parse(&parts.headers, &body)
}

/// The client authentication and parameters of a token or revocation request
/// whose body has been read.
fn parse(headers: &HeaderMap, body: &[u8]) -> Result<(ClientAuth, Form), Rejection> {
    let header = client::from_header(headers)?;
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    let form: Form = if json {
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
            .map_err(|_| {
                Rejection::OAuth(OAuthError::InvalidRequest("the body is not a JSON object"))
            })?;
        object
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned())))
            .collect()
    } else {
        form_urlencoded::parse(body).into_owned().collect()
    };
    // RFC 6749 section 3.2: parameters must not be repeated (`resource` may be, by
    // RFC 8707; more than one is refused as `invalid_target` later).
    for (i, (name, _)) in form.iter().enumerate() {
        if name != "resource" && form[..i].iter().any(|(n, _)| n == name) {
            return Err(Rejection::OAuth(OAuthError::InvalidRequest(
                "a parameter is repeated",
            )));
        }
    }
    let auth = client::combine(header, &form)?;
    Ok((auth, form))
}

/// What a token or revocation request said, once parsed (for the fuzz targets).
#[doc(hidden)]
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedRequest {
    /// `client_id`, from HTTP Basic or the body.
    pub client_id: Option<String>,
    /// `client_secret`, from HTTP Basic or the body.
    pub client_secret: Option<String>,
    /// The client authenticated with HTTP Basic.
    pub basic: bool,
    /// The body's parameters, in order.
    pub form: Vec<(String, String)>,
}

/// Parses a token or revocation request as the endpoints do, once its body is
/// read. For the fuzz targets; not part of the API.
#[doc(hidden)]
pub fn parse_request(headers: &HeaderMap, body: &[u8]) -> Result<ParsedRequest, Rejection> {
    let (auth, form) = parse(headers, body)?;
    let (client_id, client_secret, basic) = match auth {
        ClientAuth::None => (None, None, false),
        ClientAuth::IdOnly(id) => (Some(id), None, false),
        ClientAuth::Secret { id, secret, basic } => (Some(id), Some(secret), basic),
    };
    Ok(ParsedRequest {
        client_id,
        client_secret,
        basic,
        form,
    })
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(n, v)| n == name && !v.is_empty())
        .map(|(_, v)| v.as_str())
}
