//! RFC 7591 dynamic client registration: the metadata a client sends, checked.
//! Unknown members are ignored, as section 2 requires; what is kept is echoed in
//! the answer and stored with the client.

use serde_json::{Map, Value};

use crate::protocol::redirect::classify;
use crate::scope::{ScopeRegistry, ScopeSet};

/// How a registered client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A public client (`none`): PKCE alone binds the code to it.
    None,
    /// `client_secret_basic`.
    SecretBasic,
    /// `client_secret_post`.
    SecretPost,
}

impl AuthMethod {
    /// The RFC 7591 name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::SecretBasic => "client_secret_basic",
            AuthMethod::SecretPost => "client_secret_post",
        }
    }
}

/// Registration metadata that passed the checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// The redirect URIs.
    pub redirect_uris: Vec<String>,
    /// How it authenticates.
    pub auth_method: AuthMethod,
    /// `client_name`.
    pub client_name: Option<String>,
    /// `client_uri`.
    pub client_uri: Option<String>,
    /// The scopes it registered for; all declared scopes when it named none.
    pub scopes: ScopeSet,
    /// What is stored and echoed: the members this server understood, in a
    /// fixed order, with the defaults filled in.
    pub document: Map<String, Value>,
}

/// A refused registration: the RFC 7591 section 3.2.2 error and its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `invalid_redirect_uri` or `invalid_client_metadata`.
    pub error: &'static str,
    /// What was wrong.
    pub description: String,
}

fn metadata_error(description: impl Into<String>) -> Refused {
    Refused {
        error: "invalid_client_metadata",
        description: description.into(),
    }
}

/// Longest text member kept (names, URIs).
const MAX_TEXT: usize = 512;
/// Most redirect URIs one client may register.
const MAX_REDIRECTS: usize = 16;

/// Checks a registration request's body.
///
/// # Errors
///
/// The RFC 7591 error for the first problem found.
pub fn parse(body: &[u8], registry: &ScopeRegistry) -> Result<Metadata, Refused> {
    let object: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|_| metadata_error("the body must be a JSON object of client metadata"))?;
    checked(&object, registry)
}

/// Checks client metadata already parsed as a JSON object (a registration's
/// body, or a Client ID Metadata Document).
///
/// # Errors
///
/// The RFC 7591 error for the first problem found.
pub fn checked(object: &Map<String, Value>, registry: &ScopeRegistry) -> Result<Metadata, Refused> {
    let redirect_uris = strings(object, "redirect_uris")?.unwrap_or_default();
    if redirect_uris.is_empty() {
        return Err(Refused {
            error: "invalid_redirect_uri",
            description: "redirect_uris is required for the authorization code flow".into(),
        });
    }
    if redirect_uris.len() > MAX_REDIRECTS {
        return Err(Refused {
            error: "invalid_redirect_uri",
            description: format!("at most {MAX_REDIRECTS} redirect URIs"),
        });
    }
    for uri in &redirect_uris {
        if uri.len() > MAX_TEXT {
            return Err(Refused {
                error: "invalid_redirect_uri",
                description: "a redirect URI is too long".into(),
            });
        }
        classify(uri).map_err(|why| Refused {
            error: "invalid_redirect_uri",
            description: why.into(),
        })?;
    }
    let auth_method = match text(object, "token_endpoint_auth_method")? {
        // RFC 7591 section 2: the default is client_secret_basic.
        None | Some("client_secret_basic") => AuthMethod::SecretBasic,
        Some("none") => AuthMethod::None,
        Some("client_secret_post") => AuthMethod::SecretPost,
        Some(other) => {
            return Err(metadata_error(format!(
                "token_endpoint_auth_method `{other}` is not supported: use none, client_secret_basic or client_secret_post"
            )));
        }
    };
    let grant_types =
        strings(object, "grant_types")?.unwrap_or_else(|| vec!["authorization_code".to_owned()]);
    if let Some(other) = grant_types
        .iter()
        .find(|g| *g != "authorization_code" && *g != "refresh_token")
    {
        return Err(metadata_error(format!(
            "grant type `{other}` is not offered to registered clients: use authorization_code and refresh_token"
        )));
    }
    if !grant_types.iter().any(|g| g == "authorization_code") {
        return Err(metadata_error(
            "grant_types must include authorization_code",
        ));
    }
    let response_types =
        strings(object, "response_types")?.unwrap_or_else(|| vec!["code".to_owned()]);
    if response_types.iter().any(|r| r != "code") {
        return Err(metadata_error("only the response type code is supported"));
    }
    let scopes = match text(object, "scope")? {
        None => registry.granted_known(registry.all().iter().map(|s| s.name.as_str())),
        Some(scope) => registry
            .granted(scope.split_whitespace())
            .map_err(|(name, _)| {
                metadata_error(format!("the scope `{name}` is not offered here"))
            })?,
    };
    let client_name = text(object, "client_name")?.map(str::to_owned);
    let client_uri = text(object, "client_uri")?.map(str::to_owned);
    if let Some(uri) = &client_uri {
        if !uri.starts_with("https://") && !uri.starts_with("http://") {
            return Err(metadata_error("client_uri must be an http(s) URL"));
        }
    }
    let mut document = Map::new();
    document.insert("redirect_uris".into(), redirect_uris.clone().into());
    document.insert(
        "token_endpoint_auth_method".into(),
        auth_method.name().into(),
    );
    document.insert("grant_types".into(), grant_types.into());
    document.insert("response_types".into(), response_types.into());
    document.insert("scope".into(), registry.names(&scopes).into());
    for name in [
        "client_name",
        "client_uri",
        "logo_uri",
        "tos_uri",
        "policy_uri",
        "software_id",
        "software_version",
    ] {
        if let Some(value) = text(object, name)? {
            document.insert(name.into(), value.into());
        }
    }
    if let Some(contacts) = strings(object, "contacts")? {
        document.insert("contacts".into(), contacts.into());
    }
    Ok(Metadata {
        redirect_uris,
        auth_method,
        client_name,
        client_uri,
        scopes,
        document,
    })
}

/// A text member: absent, or a string no longer than [`MAX_TEXT`].
fn text<'a>(object: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, Refused> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_TEXT => Ok(Some(s)),
        Some(Value::String(_)) => Err(metadata_error(format!("{name} is too long"))),
        Some(_) => Err(metadata_error(format!("{name} must be a string"))),
    }
}

/// An array-of-strings member.
fn strings(object: &Map<String, Value>, name: &str) -> Result<Option<Vec<String>>, Refused> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) if items.len() <= MAX_REDIRECTS => items
            .iter()
            .map(|item| match item {
                Value::String(s) if s.len() <= MAX_TEXT => Ok(s.clone()),
                _ => Err(metadata_error(format!(
                    "{name} must be an array of strings"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(metadata_error(format!(
            "{name} must be an array of strings"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> ScopeRegistry {
        let mut registry = ScopeRegistry::default();
        registry.declare("offers:read", "Read");
        registry.declare("offers:write", "Write");
        registry
    }

    fn refused(body: &str) -> Refused {
        parse(body.as_bytes(), &registry()).unwrap_err()
    }

    #[test]
    fn what_mcp_clients_send_is_accepted_and_unknown_members_ignored() {
        let body = r#"{"client_name":"Claude","redirect_uris":["https://claude.ai/api/mcp/auth_callback"],
            "grant_types":["authorization_code","refresh_token"],"response_types":["code"],
            "token_endpoint_auth_method":"none","scope":"offers:read","x_vendor":{"a":1}}"#;
        let metadata = parse(body.as_bytes(), &registry()).unwrap();
        assert_eq!(metadata.auth_method, AuthMethod::None);
        assert_eq!(metadata.client_name.as_deref(), Some("Claude"));
        assert!(!metadata.document.contains_key("x_vendor"));
        assert_eq!(metadata.document["scope"], "offers:read");
        let minimal = parse(
            br#"{"redirect_uris":["http://127.0.0.1:3000/cb"]}"#,
            &registry(),
        )
        .unwrap();
        assert_eq!(minimal.auth_method, AuthMethod::SecretBasic);
        assert_eq!(
            minimal.document["grant_types"],
            serde_json::json!(["authorization_code"])
        );
        assert_eq!(minimal.document["scope"], "offers:read offers:write");
    }

    #[test]
    fn bad_metadata_gets_the_rfc_7591_errors() {
        assert_eq!(refused("[]").error, "invalid_client_metadata");
        assert_eq!(refused("{}").error, "invalid_redirect_uri");
        assert_eq!(
            refused(r#"{"redirect_uris":["http://evil.example.com/cb"]}"#).error,
            "invalid_redirect_uri"
        );
        assert_eq!(
            refused(r#"{"redirect_uris":["javascript:alert(1)"]}"#).error,
            "invalid_redirect_uri"
        );
        assert_eq!(
            refused(r#"{"redirect_uris":"https://a.example/cb"}"#).error,
            "invalid_client_metadata"
        );
        let base = r#""redirect_uris":["https://a.example/cb"]"#;
        for bad in [
            r#""token_endpoint_auth_method":"private_key_jwt""#,
            r#""grant_types":["client_credentials"]"#,
            r#""grant_types":["refresh_token"]"#,
            r#""response_types":["token"]"#,
            r#""scope":"offers:read nope""#,
            r#""client_name":7"#,
            r#""client_uri":"javascript:x""#,
        ] {
            assert_eq!(
                refused(&format!("{{{base},{bad}}}")).error,
                "invalid_client_metadata",
                "{bad}"
            );
        }
    }
}
