//! `kind: oidc`: sign-in through an OpenID Connect provider with the
//! authorization code flow, as a confidential client.
//!
//! The provider's discovery document (`<issuer>/.well-known/openid-configuration`)
//! is fetched on first need and kept for an hour (the last good one stays in use
//! while the provider cannot be reached); its `issuer` must be the configured one,
//! character for character. The browser is sent to the authorization endpoint with
//! `state`, `nonce` and a PKCE S256 challenge; the callback's code is exchanged at
//! the token endpoint with `client_secret_basic`, and the ID token is verified:
//! its signature against the provider's JWKS (fetched and refetched as for trusted
//! issuers, [`RemoteKeys`]), `iss`, `aud` containing the client id, `azp` when
//! present (and required with several audiences), `exp`, and `nonce` equal to the
//! one sealed in the login cookie. The email is kept only when `email_verified`
//! is true.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::StatusCode;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use tokio::time::Instant;

use super::flow::{LoginState, same, with_query};
use super::settings::OidcSettings;
use super::{Person, ProviderError, fetch};
use crate::http_client::HttpsClient;
use crate::tier::TierId;
use crate::tokens::remote::{REFETCH_INTERVAL, RemoteKey, RemoteKeys};

/// How long a discovery document is used before it is fetched again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// Clock skew allowed on `exp` and `iat`.
const LEEWAY: u64 = 60;
/// The signature algorithms an ID token may use (never HMAC, never `none`).
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::EdDSA,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// An OpenID Connect provider.
#[derive(Debug)]
pub(crate) struct Oidc {
    id: String,
    settings: OidcSettings,
    client: HttpsClient,
    discovered: tokio::sync::Mutex<Option<Discovered>>,
}

/// What the discovery document said.
#[derive(Debug, Clone)]
struct Discovered {
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    keys: Arc<RemoteKeys>,
    at: Instant,
}

#[derive(Deserialize)]
struct Document {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    aud: serde_json::Value,
    iat: Option<i64>,
    nonce: Option<String>,
    azp: Option<String>,
    email: Option<String>,
    email_verified: Option<serde_json::Value>,
    name: Option<String>,
    preferred_username: Option<String>,
}

impl Oidc {
    pub(crate) fn new(id: &str, settings: OidcSettings, client: HttpsClient) -> Oidc {
        Oidc {
            id: id.to_owned(),
            settings,
            client,
            discovered: tokio::sync::Mutex::new(None),
        }
    }

    /// Where to send the browser to sign in for the round trip `state`.
    pub(crate) async fn authorization_url(
        &self,
        state: &LoginState,
    ) -> Result<String, ProviderError> {
        let discovered = self.discover().await?;
        let scope = self.settings.scopes.join(" ");
        let challenge = state.code_challenge();
        Ok(with_query(
            &discovered.authorization_endpoint,
            &[
                ("response_type", "code"),
                ("client_id", &self.settings.client_id),
                ("redirect_uri", &state.redirect_uri),
                ("scope", &scope),
                ("state", &state.state),
                ("nonce", &state.nonce),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        ))
    }

    /// The person the provider vouches for, from the callback's `code`.
    pub(crate) async fn complete(
        &self,
        code: &str,
        state: &LoginState,
        now: i64,
    ) -> Result<Person, ProviderError> {
        let discovered = self.discover().await?;
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                urlencoded(&self.settings.client_id),
                urlencoded(&self.settings.client_secret.0)
            ))
        );
        let answer = fetch::post_form(
            &self.client,
            &discovered.token_endpoint,
            &[("authorization", basic)],
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &state.redirect_uri),
                ("code_verifier", &state.verifier),
            ],
        )
        .await?;
        if answer.status != StatusCode::OK {
            let code = fetch::error_code(&answer.json);
            tracing::warn!(provider = %self.id, status = answer.status.as_u16(), error = code.as_deref().unwrap_or(""), "the token endpoint refused the code");
            return Err(ProviderError::Refused(code));
        }
        let id_token = answer
            .json
            .get("id_token")
            .and_then(serde_json::Value::as_str)
            .ok_or(ProviderError::Invalid("the token answer has no id_token"))?;
        let claims = self
            .verify(&discovered, id_token, &state.nonce, now)
            .await?;
        let verified = match &claims.email_verified {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s == "true",
            _ => false,
        };
        Ok(Person {
            provider: self.id.clone(),
            subject: claims.sub,
            username: claims.preferred_username.clone(),
            name: claims.name.or(claims.preferred_username),
            email: claims.email.filter(|_| verified),
            groups: Vec::new(),
            tier: TierId::ANONYMOUS,
        })
    }

    /// The claims of a valid ID token for this client and `nonce`.
    async fn verify(
        &self,
        discovered: &Discovered,
        jwt: &str,
        nonce: &str,
        now: i64,
    ) -> Result<Claims, ProviderError> {
        let invalid = ProviderError::Invalid;
        let header = jsonwebtoken::decode_header(jwt).map_err(|_| invalid("malformed"))?;
        let key = key(&discovered.keys, header.kid.as_deref())
            .await
            .ok_or_else(|| invalid("signed with a key the provider does not publish"))?;
        if key.algorithm != header.alg {
            return Err(invalid("its algorithm is not its key's"));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(jwt, &key.key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            invalid(match e.kind() {
                K::InvalidSignature => "bad signature",
                K::ExpiredSignature => "expired",
                K::ImmatureSignature => "not valid yet",
                K::InvalidAudience => "not for this client (aud)",
                K::InvalidIssuer => "from another issuer (iss)",
                _ => "malformed claims",
            })
        })?;
        let claims = data.claims;
        let leeway = i64::try_from(LEEWAY).unwrap_or(60);
        if claims.iat.is_some_and(|iat| iat > now + leeway) {
            return Err(invalid("issued in the future (iat)"));
        }
        if !claims.nonce.as_deref().is_some_and(|n| same(n, nonce)) {
            return Err(invalid("not for this sign-in (nonce)"));
        }
        let several = claims.aud.as_array().is_some_and(|a| a.len() > 1);
        match claims.azp.as_deref() {
            Some(azp) if azp != self.settings.client_id => {
                return Err(invalid("authorized for another client (azp)"));
            }
            None if several => return Err(invalid("several audiences and no azp")),
            _ => {}
        }
        if claims.sub.is_empty() || claims.sub.len() > 255 {
            return Err(invalid("its subject is empty or too long"));
        }
        Ok(claims)
    }

    /// The discovery document, fetched when missing or older than
    /// [`DISCOVERY_TTL`]; an old one stays in use while a new one cannot be had.
    async fn discover(&self) -> Result<Discovered, ProviderError> {
        let mut cached = self.discovered.lock().await;
        if let Some(known) = cached.as_ref().filter(|d| d.at.elapsed() < DISCOVERY_TTL) {
            return Ok(known.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let fetched = match fetch::get(&self.client, &url, &[]).await {
            Ok(answer) if answer.status == StatusCode::OK => {
                serde_json::from_value::<Document>(answer.json).ok()
            }
            _ => None,
        };
        let Some(document) = fetched else {
            tracing::warn!(provider = %self.id, "cannot fetch the provider's discovery document");
            return cached.clone().ok_or(ProviderError::Unreachable);
        };
        if document.issuer != self.settings.issuer {
            tracing::warn!(provider = %self.id, issuer = %document.issuer, "the discovery document names another issuer");
            return Err(ProviderError::Invalid(
                "the discovery document names another issuer",
            ));
        }
        let jwks: http::Uri = document.jwks_uri.parse().map_err(|_| {
            ProviderError::Invalid("the discovery document's jwks_uri is not a URL")
        })?;
        let keys = match cached.as_ref() {
            Some(old) if old.jwks_uri == document.jwks_uri => old.keys.clone(),
            _ => Arc::new(RemoteKeys::new(
                jwks,
                ALGORITHMS.to_vec(),
                REFETCH_INTERVAL,
                self.client.clone(),
            )),
        };
        let discovered = Discovered {
            authorization_endpoint: document.authorization_endpoint,
            token_endpoint: document.token_endpoint,
            jwks_uri: document.jwks_uri,
            keys,
            at: Instant::now(),
        };
        *cached = Some(discovered.clone());
        Ok(discovered)
    }
}

/// The key named `kid` (or the only key), fetching the key set once (throttled)
/// when it has none such.
async fn key(keys: &RemoteKeys, kid: Option<&str>) -> Option<Arc<RemoteKey>> {
    if let Some(key) = keys.find(kid) {
        return Some(key);
    }
    keys.refetch().await;
    keys.find(kid)
}

/// `application/x-www-form-urlencoded` encoding, as client_secret_basic wants
/// the id and secret (RFC 6749, section 2.3.1).
fn urlencoded(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
