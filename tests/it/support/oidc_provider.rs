//! A small OpenID Connect provider on 127.0.0.1:<random>, following the published
//! protocols: discovery (OpenID Connect Discovery 1.0), a JWKS, an authorization
//! endpoint that signs its one person in at once and redirects back with `code`
//! and `state` (or `error=access_denied`), and a token endpoint that takes
//! `client_secret_basic`, checks the code's redirect URI and its PKCE S256
//! verifier, and issues an EdDSA-signed ID token. A test can make it misbehave:
//! the wrong nonce, another audience, a signature by a key it does not publish.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use authmd_proxy::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http_body_util::BodyExt;
use hyper::{Request, Response, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::IssuerKey;

/// The client the provider knows.
pub const CLIENT_ID: &str = "authmd-test";
/// Its secret.
pub const CLIENT_SECRET: &str = "oidc client s3cret:with/odd&chars";

/// How the provider answers the next sign-ins.
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub subject: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub email_verified: bool,
    /// The person declines at the provider.
    pub deny: bool,
    /// An ID token `nonce` other than the one the request carried.
    pub nonce: Option<String>,
    /// An ID token `aud` other than the client id.
    pub audience: Option<Value>,
    /// Signed with a key the JWKS does not have (under the published `kid`).
    pub bad_signature: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            subject: "248289761001".into(),
            name: Some("Jane Doe".into()),
            email: Some("jane@example.com".into()),
            email_verified: true,
            deny: false,
            nonce: None,
            audience: None,
            bad_signature: false,
        }
    }
}

/// What an issued code stands for.
#[derive(Debug, Clone)]
struct Grant {
    redirect_uri: String,
    nonce: String,
    challenge: String,
    behaviour: Behaviour,
}

/// The provider.
pub struct OidcProvider {
    /// Its issuer identifier (`http://127.0.0.1:<port>`).
    pub issuer: String,
    behaviour: Arc<ArcSwap<Behaviour>>,
    /// ID tokens issued.
    pub issued: Arc<AtomicUsize>,
    /// The query of the last authorization request.
    last_authorize: Arc<ArcSwap<HashMap<String, String>>>,
}

impl OidcProvider {
    pub async fn start() -> OidcProvider {
        let key = Arc::new(IssuerKey::new("k1"));
        let other = Arc::new(IssuerKey::new("k1"));
        let behaviour = Arc::new(ArcSwap::from_pointee(Behaviour::default()));
        let issued = Arc::new(AtomicUsize::new(0));
        let last_authorize = Arc::new(ArcSwap::from_pointee(HashMap::new()));
        let codes: Arc<tokio::sync::Mutex<HashMap<String, Grant>>> = Arc::default();
        let issuer = Arc::new(std::sync::OnceLock::<String>::new());
        let state = (
            key,
            other,
            behaviour.clone(),
            issued.clone(),
            last_authorize.clone(),
            codes,
            issuer.clone(),
        );
        let addr = super::upstream(move |request| {
            let (key, other, behaviour, issued, last, codes, issuer) = state.clone();
            async move {
                let issuer = issuer.get().cloned().unwrap_or_default();
                let path = request.uri().path().to_owned();
                match path.as_str() {
                    "/.well-known/openid-configuration" => json_response(
                        StatusCode::OK,
                        &json!({
                            "issuer": issuer,
                            "authorization_endpoint": format!("{issuer}/authorize"),
                            "token_endpoint": format!("{issuer}/token"),
                            "jwks_uri": format!("{issuer}/jwks"),
                            "response_types_supported": ["code"],
                            "subject_types_supported": ["public"],
                            "id_token_signing_alg_values_supported": ["EdDSA"],
                            "code_challenge_methods_supported": ["S256"],
                            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                        }),
                    ),
                    "/jwks" => json_response(StatusCode::OK, &json!({ "keys": [key.jwk] })),
                    "/authorize" => {
                        let query = query_of(&request);
                        last.store(Arc::new(query.clone()));
                        authorize(&query, &behaviour.load(), &codes).await
                    }
                    "/token" => {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let form: HashMap<String, String> =
                            form_urlencoded::parse(&body).into_owned().collect();
                        let grant = match check_token_request(&parts.headers, &form, &codes).await {
                            Ok(grant) => grant,
                            Err(response) => return response,
                        };
                        issued.fetch_add(1, Ordering::SeqCst);
                        let signer = if grant.behaviour.bad_signature {
                            &other
                        } else {
                            &key
                        };
                        let id_token = id_token(&issuer, &grant, signer);
                        json_response(
                            StatusCode::OK,
                            &json!({
                                "access_token": "opaque-access-token",
                                "token_type": "Bearer",
                                "expires_in": 300,
                                "id_token": id_token,
                            }),
                        )
                    }
                    _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
                }
            }
        })
        .await;
        let url = format!("http://{addr}");
        issuer.set(url.clone()).unwrap();
        OidcProvider {
            issuer: url,
            behaviour,
            issued,
            last_authorize,
        }
    }

    /// From now on, answers as `behaviour` says.
    pub fn behave(&self, behaviour: Behaviour) {
        self.behaviour.store(Arc::new(behaviour));
    }

    /// A parameter of the last authorization request.
    pub fn last_authorize(&self, name: &str) -> Option<String> {
        self.last_authorize.load().get(name).cloned()
    }
}

fn query_of(request: &Request<hyper::body::Incoming>) -> HashMap<String, String> {
    form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// The authorization endpoint: the person is signed in at once (or declines).
async fn authorize(
    query: &HashMap<String, String>,
    behaviour: &Behaviour,
    codes: &tokio::sync::Mutex<HashMap<String, Grant>>,
) -> Response<Body> {
    let get = |name: &str| query.get(name).cloned().unwrap_or_default();
    let redirect_uri = get("redirect_uri");
    if get("client_id") != CLIENT_ID || redirect_uri.is_empty() {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_request"}),
        );
    }
    let state = get("state");
    let back = |params: &[(&str, &str)]| {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::FOUND;
        response.headers_mut().insert(
            "location",
            format!("{redirect_uri}?{query}").parse().unwrap(),
        );
        response
    };
    if behaviour.deny {
        return back(&[("error", "access_denied"), ("state", &state)]);
    }
    let scopes = get("scope");
    if get("response_type") != "code"
        || get("code_challenge_method") != "S256"
        || get("code_challenge").len() != 43
        || !scopes.split(' ').any(|s| s == "openid")
    {
        return back(&[("error", "invalid_request"), ("state", &state)]);
    }
    let code = format!("code-{}", URL_SAFE_NO_PAD.encode(rand_bytes()));
    codes.lock().await.insert(
        code.clone(),
        Grant {
            redirect_uri: redirect_uri.clone(),
            nonce: get("nonce"),
            challenge: get("code_challenge"),
            behaviour: behaviour.clone(),
        },
    );
    back(&[("code", &code), ("state", &state)])
}

/// The token endpoint's checks: client authentication (client_secret_basic, the
/// id and secret form-urlencoded), a code used once, its redirect URI, PKCE.
async fn check_token_request(
    headers: &http::HeaderMap,
    form: &HashMap<String, String>,
    codes: &tokio::sync::Mutex<HashMap<String, Grant>>,
) -> Result<Grant, Response<Body>> {
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!(
            "{}:{}",
            urlencode(CLIENT_ID),
            urlencode(CLIENT_SECRET)
        ))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return Err(json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_client"}),
        ));
    }
    let invalid_grant =
        || json_response(StatusCode::BAD_REQUEST, &json!({"error": "invalid_grant"}));
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return Err(json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "unsupported_grant_type"}),
        ));
    }
    let code = form.get("code").cloned().unwrap_or_default();
    let Some(grant) = codes.lock().await.remove(&code) else {
        return Err(invalid_grant());
    };
    if form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return Err(invalid_grant());
    }
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    if URL_SAFE_NO_PAD.encode(digest.as_ref()) != grant.challenge {
        return Err(invalid_grant());
    }
    Ok(grant)
}

fn id_token(issuer: &str, grant: &Grant, key: &IssuerKey) -> String {
    let b = &grant.behaviour;
    let now = authmd_proxy::clock::unix_now();
    let mut claims = json!({
        "iss": issuer,
        "sub": b.subject,
        "aud": b.audience.clone().unwrap_or_else(|| json!(CLIENT_ID)),
        "exp": now + 300,
        "iat": now,
        "nonce": b.nonce.clone().unwrap_or_else(|| grant.nonce.clone()),
        "email_verified": b.email_verified,
    });
    if let Some(email) = &b.email {
        claims["email"] = json!(email);
    }
    if let Some(name) = &b.name {
        claims["name"] = json!(name);
    }
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    let encoding = EncodingKey::from_ed_pem(key.pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &encoding).unwrap()
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn rand_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).unwrap();
    bytes
}

pub fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::full(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}
