//! The discovery documents an agent walks from a single 401: protected-resource
//! metadata (RFC 9728, also path-inserted), authorization-server metadata (RFC 8414,
//! with the `agent_auth` block), the api-catalog (RFC 9727), `/auth.md`, and the
//! optional MCP server card and A2A agent card.
//!
//! Every document is generated from the same config as the policy, so prose, metadata
//! and enforcement cannot disagree. Documents are rendered once per config load and
//! per public origin, and served as bytes with `ETag`, `Cache-Control` and CORS; a
//! request's `Host` picks the origin's documents only when it is a configured origin.

pub mod auth_md;

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, CACHE_CONTROL, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, LINK, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::body::Body;
use crate::config::{Claims, Config};
use crate::policy::{HostId, MethodSet};
use crate::protocol::{
    AGENT_CARD, API_CATALOG, AUTH_MD, AUTHORIZATION_SERVER, JWT_BEARER, MCP_SERVER_CARD,
    OPENID_CONFIGURATION, PROTECTED_RESOURCE,
};
use crate::rejection::Rejection;

const API_CATALOG_TYPE: &str =
    "application/linkset+json; profile=\"https://www.rfc-editor.org/info/rfc9727\"";

/// One rendered document.
#[derive(Debug, Clone)]
pub struct Document {
    body: Bytes,
    content_type: HeaderValue,
    etag: HeaderValue,
    link: Option<HeaderValue>,
}

impl Document {
    fn new(body: impl Into<Bytes>, content_type: &'static str) -> Document {
        let body = body.into();
        let digest = blake3::hash(&body);
        let etag = format!("\"{}\"", &digest.to_hex()[..32]);
        Document {
            body,
            content_type: HeaderValue::from_static(content_type),
            etag: HeaderValue::from_str(&etag)
                .unwrap_or_else(|_| HeaderValue::from_static("\"0\"")),
            link: None,
        }
    }

    fn json(value: &Value) -> Document {
        let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
        text.push('\n');
        Document::new(text, "application/json")
    }

    /// The document's bytes.
    #[must_use]
    pub fn body(&self) -> &Bytes {
        &self.body
    }
}

/// The documents of one public origin.
#[derive(Debug)]
struct HostDocuments {
    protected_resource: Document,
    /// Path-inserted protected-resource metadata, by resource prefix.
    resources: Vec<(String, Document)>,
    authorization_server: Document,
    api_catalog: Document,
    auth_md: Document,
}

/// Every discovery document of a config.
#[derive(Debug)]
pub struct Documents {
    hosts: Vec<HostDocuments>,
    mcp_server_card: Option<Document>,
    agent_card: Option<Document>,
    openid_configuration: bool,
    cache_control: HeaderValue,
}

impl Documents {
    /// Renders every document of a config.
    #[must_use]
    pub fn build(config: &Config) -> Documents {
        let hosts = config
            .discovery
            .origins
            .iter()
            .map(|origin| HostDocuments {
                protected_resource: Document::json(&protected_resource(config, origin, "")),
                resources: config
                    .discovery
                    .resources
                    .iter()
                    .map(|prefix| {
                        (
                            prefix.clone(),
                            Document::json(&protected_resource(config, origin, prefix)),
                        )
                    })
                    .collect(),
                authorization_server: Document::json(&authorization_server(config, origin)),
                api_catalog: {
                    let mut doc = Document::new(
                        serde_json::to_string_pretty(&api_catalog(config, origin))
                            .unwrap_or_default()
                            + "\n",
                        API_CATALOG_TYPE,
                    );
                    doc.link = HeaderValue::from_str(&format!(
                        "<{origin}{API_CATALOG}>; rel=\"api-catalog\""
                    ))
                    .ok();
                    doc
                },
                auth_md: Document::new(
                    config
                        .discovery
                        .auth_md
                        .clone()
                        .unwrap_or_else(|| auth_md::render(config, origin)),
                    "text/markdown; charset=utf-8",
                ),
            })
            .collect();
        let card = |value: &Option<Value>| value.as_ref().map(Document::json);
        Documents {
            hosts,
            mcp_server_card: card(&config.discovery.mcp_server_card),
            agent_card: card(&config.discovery.agent_card),
            openid_configuration: config.discovery.openid_configuration,
            cache_control: HeaderValue::from_str(&format!(
                "public, max-age={}",
                config.discovery.max_age.as_secs()
            ))
            .unwrap_or_else(|_| HeaderValue::from_static("no-cache")),
        }
    }

    /// The document at `path` (normalised) for an origin, if there is one.
    #[must_use]
    pub fn find(&self, path: &str, host: HostId) -> Option<&Document> {
        let docs = self.hosts.get(host.0).or_else(|| self.hosts.first())?;
        match path {
            PROTECTED_RESOURCE => Some(&docs.protected_resource),
            AUTHORIZATION_SERVER => Some(&docs.authorization_server),
            OPENID_CONFIGURATION if self.openid_configuration => Some(&docs.authorization_server),
            API_CATALOG => Some(&docs.api_catalog),
            AUTH_MD => Some(&docs.auth_md),
            AGENT_CARD => self.agent_card.as_ref(),
            p if MCP_SERVER_CARD.contains(&p) => self.mcp_server_card.as_ref(),
            p => {
                let inserted = p.strip_prefix(PROTECTED_RESOURCE)?;
                docs.resources
                    .iter()
                    .find(|(prefix, _)| prefix == inserted.trim_end_matches('/'))
                    .map(|(_, doc)| doc)
            }
        }
    }

    /// Serves a document: `GET`/`HEAD` (304 on a matching `If-None-Match`), a CORS
    /// preflight for `OPTIONS`, 405 for anything else.
    pub fn serve(
        &self,
        doc: &Document,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<Response<Body>, Rejection> {
        let mut response = Response::new(Body::empty());
        let out = response.headers_mut();
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        if *method == Method::OPTIONS {
            *response.status_mut() = StatusCode::NO_CONTENT;
            let out = response.headers_mut();
            out.insert(
                ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            out.insert(
                ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(
                    "Authorization, Content-Type, If-None-Match, MCP-Protocol-Version",
                ),
            );
            out.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
            return Ok(response);
        }
        if *method != Method::GET && *method != Method::HEAD {
            return Err(Rejection::MethodNotAllowed(MethodSet::of(&[
                "GET", "OPTIONS",
            ])));
        }
        out.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("ETag, Link"),
        );
        out.insert(CACHE_CONTROL, self.cache_control.clone());
        out.insert(ETAG, doc.etag.clone());
        out.insert(VARY, HeaderValue::from_static("Host"));
        if let Some(link) = &doc.link {
            out.insert(LINK, link.clone());
        }
        if etag_matches(headers, &doc.etag) {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return Ok(response);
        }
        response
            .headers_mut()
            .insert(CONTENT_TYPE, doc.content_type.clone());
        if *method == Method::GET {
            *response.body_mut() = Body::full(doc.body.clone());
        } else if let Ok(length) = HeaderValue::from_str(&doc.body.len().to_string()) {
            response
                .headers_mut()
                .insert(http::header::CONTENT_LENGTH, length);
        }
        Ok(response)
    }

    /// The auth.md served for an origin.
    #[must_use]
    pub fn auth_md(&self, host: HostId) -> Option<&Bytes> {
        self.hosts.get(host.0).map(|h| h.auth_md.body())
    }
}

/// Serves the proxy's JWKS (`GET`/`HEAD`), cacheable for five minutes: a rotated-in
/// key is published before it signs anything a cached copy would need.
pub fn serve_jwks(jwks: &Bytes, method: &Method) -> Result<Response<Body>, Rejection> {
    if *method != Method::GET && *method != Method::HEAD {
        return Err(Rejection::MethodNotAllowed(MethodSet::of(&["GET"])));
    }
    let mut response = Response::new(if *method == Method::GET {
        Body::full(jwks.clone())
    } else {
        Body::empty()
    });
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    Ok(response)
}

/// `If-None-Match` lists the entity tag, or is `*` (weak comparison, RFC 9110 13.1.2).
fn etag_matches(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(ours) = etag.to_str() else {
        return false;
    };
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == ours)
}

/// RFC 9728 metadata of the resource at `origin` + `prefix`.
fn protected_resource(config: &Config, origin: &str, prefix: &str) -> Value {
    let mut doc = json!({
        "resource": format!("{origin}{prefix}"),
        "authorization_servers": [origin],
        "scopes_supported": scope_names(config),
        "bearer_methods_supported": ["header"],
        "resource_name": config.service.name,
        "resource_documentation": format!("{origin}{AUTH_MD}"),
    });
    if let Some(map) = doc.as_object_mut() {
        if let Some(url) = &config.service.privacy_url {
            map.insert("resource_policy_uri".into(), json!(url));
        }
        if let Some(url) = &config.service.terms_url {
            map.insert("resource_tos_uri".into(), json!(url));
        }
    }
    doc
}

/// RFC 8414 metadata of the authorization server at `origin`.
fn authorization_server(config: &Config, origin: &str) -> Value {
    let endpoints = &config.endpoints;
    let mut doc = json!({
        "issuer": origin,
        "authorization_endpoint": format!("{origin}{}", endpoints.authorize),
        "token_endpoint": format!("{origin}{}", endpoints.token),
        "revocation_endpoint": format!("{origin}{}", endpoints.revoke),
        // RFC 8414 requires the member and strict validators a non-empty list. Without
        // `login.providers` the authorization endpoint answers
        // `unsupported_response_type`, and no authorization-code grant is listed.
        "response_types_supported": ["code"],
        "grant_types_supported": grant_types(config),
        "token_endpoint_auth_methods_supported": token_auth_methods(config),
        // Holding a token or key is the authority to revoke it.
        "revocation_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": scope_names(config),
        "service_documentation": format!("{origin}{AUTH_MD}"),
        "agent_auth": agent_auth(config, origin),
    });
    if let Some(map) = doc.as_object_mut() {
        if config.tokens.enabled {
            map.insert(
                "jwks_uri".into(),
                json!(format!("{origin}{}", config.endpoints.jwks)),
            );
            if config.tokens.jwt_bearer {
                map.insert(
                    "authorization_grant_profiles_supported".into(),
                    json!(["urn:ietf:params:oauth:grant-profile:id-jag"]),
                );
            }
        }
        if interactive(config) {
            map.insert("code_challenge_methods_supported".into(), json!(["S256"]));
            map.insert("response_modes_supported".into(), json!(["query"]));
            map.insert(
                "authorization_response_iss_parameter_supported".into(),
                json!(true),
            );
            if config.interactive.registration.enabled {
                map.insert(
                    "registration_endpoint".into(),
                    json!(format!("{origin}{}", endpoints.oauth_register)),
                );
            }
            if config.interactive.metadata_documents.enabled {
                map.insert("client_id_metadata_document_supported".into(), json!(true));
            }
        }
        if config.lifecycle.issues_keys() && config.lifecycle.keys.enabled {
            map.insert(
                "key_management_endpoint".into(),
                json!(format!("{origin}{}", endpoints.keys)),
            );
        }
        map.insert(
            "scopes_endpoint".into(),
            json!(format!("{origin}{}", endpoints.scopes)),
        );
    }
    doc
}

/// People sign in and MCP clients get codes: `login.providers` and a token
/// endpoint to redeem them at.
fn interactive(config: &Config) -> bool {
    config.login.enabled() && config.tokens.enabled
}

/// The grants the token endpoint offers.
fn grant_types(config: &Config) -> Vec<&'static str> {
    let tokens = &config.tokens;
    let mut grants = Vec::new();
    if interactive(config) {
        grants.extend(["authorization_code", "refresh_token"]);
    }
    if tokens.enabled && (tokens.anonymous.is_some() || tokens.api_keys) {
        grants.push("client_credentials");
    }
    if tokens.enabled && tokens.jwt_bearer {
        grants.push(JWT_BEARER);
    }
    grants
}

/// How clients may authenticate at the token endpoint.
fn token_auth_methods(config: &Config) -> Vec<&'static str> {
    let tokens = &config.tokens;
    let mut methods = Vec::new();
    if tokens.enabled && (tokens.api_keys || interactive(config)) {
        methods.extend(["client_secret_basic", "client_secret_post"]);
    }
    if !tokens.enabled || tokens.anonymous.is_some() || tokens.jwt_bearer || interactive(config) {
        methods.push("none");
    }
    methods
}

/// The auth.md `agent_auth` block, in both naming generations (`register_uri` /
/// `claim_uri` / `revocation_uri` of v0.1 and the seeds; `identity_endpoint` /
/// `claim_endpoint` of later versions, which the WorkOS client requires).
fn agent_auth(config: &Config, origin: &str) -> Value {
    let lifecycle = &config.lifecycle;
    let endpoints = &config.endpoints;
    let mut block = json!({ "skill": format!("{origin}{AUTH_MD}") });
    let Some(map) = block.as_object_mut() else {
        return block;
    };
    let mut types: Vec<&str> = Vec::new();
    if lifecycle.self_service() {
        map.insert(
            "revocation_uri".into(),
            json!(format!("{origin}{}", endpoints.agent_revoke)),
        );
    }
    if lifecycle.registers() {
        let register = format!("{origin}{}", endpoints.register);
        map.insert("register_uri".into(), json!(register));
        map.insert("identity_endpoint".into(), json!(register));
        // A claim endpoint where no claim can be completed would be a dead end.
        if config.claims() != Claims::Unavailable {
            let claim = format!("{origin}{}", endpoints.claim);
            map.insert("claim_uri".into(), json!(claim));
            map.insert("claim_endpoint".into(), json!(claim));
        }
        if lifecycle.registration.anonymous {
            types.push("anonymous");
            map.insert(
                "anonymous".into(),
                json!({ "credential_types_supported": ["api_key"] }),
            );
        }
        if config.identity_issuers().next().is_some() {
            types.push("identity_assertion");
            map.insert(
                "identity_assertion".into(),
                json!({
                    "assertion_types_supported": config.assertion_types(),
                    "credential_types_supported": ["api_key"],
                }),
            );
        }
    }
    map.insert("identity_types_supported".into(), json!(types));
    if let Some(limits) = limits(config) {
        map.insert("limits".into(), limits);
    }
    block
}

/// The `limits` member of the `agent_auth` block (an extension): each tier's rate
/// windows and quota, the header families responses carry, and the x402 payment
/// that lifts a used-up quota. `None` when nothing is limited.
fn limits(config: &Config) -> Option<Value> {
    let tiers: Vec<Value> = config
        .tiers
        .all()
        .iter()
        .filter(|tier| !tier.limits.is_unlimited())
        .map(|tier| {
            let set = &tier.limits;
            let mut entry = json!({
                "tier": tier.name,
                "rate_limits": set.rates.iter().map(|r| json!({
                    "requests": r.limit,
                    "window_seconds": r.window_secs(),
                })).collect::<Vec<_>>(),
            });
            if let (Some(quota), Some(map)) = (&set.quota, entry.as_object_mut()) {
                let period = match quota.period {
                    crate::limits::quota::Period::Day => "day",
                    crate::limits::quota::Period::Month => "month",
                };
                map.insert(
                    "quota".into(),
                    json!({ "requests": quota.limit, "period": period }),
                );
            }
            entry
        })
        .collect();
    if tiers.is_empty() {
        return None;
    }
    let styles = config.limits.headers;
    let mut headers = Vec::new();
    if styles.draft {
        headers.push("draft-06");
    }
    if styles.structured {
        headers.push("structured");
    }
    if styles.legacy {
        headers.push("x-ratelimit");
    }
    let mut doc = json!({ "tiers": tiers, "headers": headers, "over_quota": "402" });
    if let (Some(payments), Some(map)) = (&config.limits.payments, doc.as_object_mut()) {
        map.insert(
            "payment".into(),
            json!({
                "protocol": "x402",
                "x402_versions": [1, 2],
                "requests_per_payment": payments.requests_per_payment,
                "accepts": payments.accepts.iter().map(|a| json!({
                    "scheme": a.scheme,
                    "network": a.network,
                    "amount": a.amount,
                    "asset": a.asset,
                    "payTo": a.pay_to,
                })).collect::<Vec<_>>(),
            }),
        );
    }
    Some(doc)
}

/// RFC 9727 api-catalog of the API at `origin`.
fn api_catalog(config: &Config, origin: &str) -> Value {
    let mut entry = json!({
        "anchor": origin,
        "service-doc": [{"href": format!("{origin}{AUTH_MD}"), "type": "text/markdown"}],
        "service-meta": [{"href": format!("{origin}{PROTECTED_RESOURCE}"), "type": "application/json"}],
    });
    if let Some(map) = entry.as_object_mut() {
        if let Some(url) = &config.discovery.openapi_url {
            map.insert(
                "service-desc".into(),
                json!([{"href": url, "type": "application/openapi+json"}]),
            );
        }
        if let (Some(url), Some(Value::Array(docs))) = (
            &config.service.documentation_url,
            map.get_mut("service-doc"),
        ) {
            docs.push(json!({"href": url, "type": "text/html"}));
        }
    }
    json!({ "linkset": [entry] })
}

fn scope_names(config: &Config) -> Vec<&str> {
    config
        .scopes
        .all()
        .iter()
        .map(|s| s.name.as_str())
        .collect()
}
