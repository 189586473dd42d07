//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document): a
//! client names itself by an https URL, and the metadata a registration would
//! have given is fetched from that URL when the client first shows up.
//!
//! The fetch reaches public addresses only (checked after DNS resolution, see
//! [`crate::http_client::public`]), follows no redirect, accepts only a 200, reads
//! at most `max_bytes` within `timeout`, and at most [`MAX_FETCHES`] run at once.
//! The document must name itself: its `client_id` equals the URL, compared as
//! strings. A client known this way is public: it has no secret, and a document
//! that carries one, or names a secret-based authentication method, is refused.
//! A good document is cached for what its `Cache-Control` allows, never longer
//! than `max_cache`; errors and bad documents are not cached.

use std::time::Duration;

use http::Uri;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::dynamic;
use super::{Client, ClientKind};
use crate::config::MetadataDocuments as Settings;
use crate::http_client::public::{FetchError, PublicClient};
use crate::scope::ScopeRegistry;

/// Most fetches in flight at once; more wait (within their timeout).
pub const MAX_FETCHES: usize = 16;
/// Most documents kept in the cache.
const MAX_CACHED: usize = 4096;
/// Longest `client_id` URL accepted.
const MAX_URL: usize = 2048;

/// Why a `client_id` URL gave no client. The texts name what was wrong and
/// quote nothing from the document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// The URL breaks the rules of a Client Identifier URL.
    #[error("the client_id is not a usable client URL: {0}")]
    BadUrl(&'static str),
    /// The fetch gave no answer.
    #[error("its metadata document could not be fetched: {0}")]
    Fetch(FetchError),
    /// The answer was not a 200.
    #[error(
        "its metadata document was answered with HTTP {0}; only 200 is accepted, and redirects are not followed"
    )]
    Status(u16),
    /// The document is not acceptable.
    #[error("its metadata document is not acceptable: {0}")]
    Invalid(String),
}

/// The fetcher and the cache of one config generation.
#[derive(Debug)]
pub struct MetadataDocuments {
    client: PublicClient,
    max_bytes: usize,
    timeout: Duration,
    max_cache: Duration,
    cache: papaya::HashMap<String, Cached>,
    fetches: Semaphore,
}

#[derive(Debug, Clone)]
struct Cached {
    client: Client,
    until: Instant,
}

impl MetadataDocuments {
    /// The fetcher of `settings`, or `None` when they turn documents off (or the
    /// TLS settings cannot be built, which is logged).
    #[must_use]
    pub fn new(settings: &Settings) -> Option<MetadataDocuments> {
        if !settings.enabled {
            return None;
        }
        let tls = match crate::tls::outbound_config(settings.extra_roots.as_deref()) {
            Ok(tls) => tls,
            Err(error) => {
                tracing::error!(%error, "client metadata documents are off: no TLS settings");
                return None;
            }
        };
        Some(MetadataDocuments {
            client: PublicClient::new(tls, &settings.allow_networks),
            max_bytes: settings.max_bytes,
            timeout: settings.timeout,
            max_cache: settings.max_cache,
            cache: papaya::HashMap::new(),
            fetches: Semaphore::new(MAX_FETCHES),
        })
    }

    /// The client whose `client_id` is the URL `url`, from the cache or fetched.
    ///
    /// # Errors
    ///
    /// The URL, the fetch or the document is not acceptable.
    pub async fn client(
        &self,
        url: &str,
        registry: &ScopeRegistry,
    ) -> Result<Client, DocumentError> {
        let uri = client_url(url)?;
        let now = Instant::now();
        if let Some(cached) = self.cache.pin().get(url) {
            if cached.until > now {
                return Ok(cached.client.clone());
            }
        }
        let fetched = {
            let Ok(_permit) = tokio::time::timeout(self.timeout, self.fetches.acquire()).await
            else {
                return Err(DocumentError::Fetch(FetchError::Timeout));
            };
            self.client
                .get(&uri, "application/json", self.max_bytes, self.timeout)
                .await
                .map_err(DocumentError::Fetch)?
        };
        if fetched.status != http::StatusCode::OK {
            return Err(DocumentError::Status(fetched.status.as_u16()));
        }
        let client = document(url, &fetched.body, registry)?;
        let lifetime = lifetime(&fetched.headers, self.max_cache);
        if !lifetime.is_zero() {
            let cache = self.cache.pin();
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, cached| cached.until > now);
            }
            if cache.len() < MAX_CACHED {
                cache.insert(
                    url.to_owned(),
                    Cached {
                        client: client.clone(),
                        until: now + lifetime,
                    },
                );
            }
        }
        Ok(client)
    }
}

/// True when `client_id` names a metadata document (rather than a declared or
/// registered client).
#[must_use]
pub fn is_document_url(client_id: &str) -> bool {
    client_id.starts_with("https://")
}

/// `url` checked against the rules of a Client Identifier URL (section 3): https,
/// no user info, a path without dot segments, no fragment.
fn client_url(url: &str) -> Result<Uri, DocumentError> {
    let bad = DocumentError::BadUrl;
    if url.len() > MAX_URL {
        return Err(bad("it is too long"));
    }
    if url.contains('#') {
        return Err(bad("it has a fragment"));
    }
    let uri: Uri = url.parse().map_err(|_| bad("it is not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("it is not https"));
    }
    let authority = uri.authority().ok_or(bad("it has no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("it carries user information"));
    }
    if authority.host().is_empty() {
        return Err(bad("it has no host"));
    }
    let path = uri.path();
    // `Uri` reads `https://host` as the path `/`: ask the text for a real path.
    if !url[url.find("://").map_or(0, |i| i + 3)..].contains('/') {
        return Err(bad("it has no path"));
    }
    let dot = |segment: &str| {
        let lower = segment.to_ascii_lowercase().replace("%2e", ".");
        lower == "." || lower == ".."
    };
    if path.split('/').any(dot) {
        return Err(bad("its path has a `.` or `..` segment"));
    }
    Ok(uri)
}

/// The client a fetched document describes, when it is acceptable.
fn document(url: &str, body: &[u8], registry: &ScopeRegistry) -> Result<Client, DocumentError> {
    let invalid = |why: &str| DocumentError::Invalid(why.to_owned());
    let mut object: Map<String, Value> =
        serde_json::from_slice(body).map_err(|_| invalid("it is not a JSON object"))?;
    match object.get("client_id") {
        Some(Value::String(id)) if id == url => {}
        Some(Value::String(_)) => {
            return Err(invalid(
                "its client_id is not the URL it was fetched from (they must be equal as strings)",
            ));
        }
        _ => return Err(invalid("it has no client_id")),
    }
    if object.contains_key("client_secret") || object.contains_key("client_secret_expires_at") {
        return Err(invalid(
            "it carries a client_secret; a metadata document must not, as it is public",
        ));
    }
    match object.get("token_endpoint_auth_method") {
        None | Some(Value::Null) => {
            object.insert("token_endpoint_auth_method".into(), "none".into());
        }
        Some(Value::String(method)) if method == "none" => {}
        Some(_) => {
            return Err(invalid(
                "its token_endpoint_auth_method is not `none`; this server knows clients of metadata documents as public clients only",
            ));
        }
    }
    // A document serves many servers: scopes this one does not offer are
    // ignored rather than refused.
    let scopes = match object.remove("scope") {
        Some(Value::String(scope)) => Some(registry.granted_known(scope.split_whitespace())),
        None | Some(Value::Null) => None,
        Some(_) => return Err(invalid("its scope is not a string")),
    };
    let metadata = dynamic::checked(&object, registry)
        .map_err(|refused| DocumentError::Invalid(refused.description))?;
    Ok(Client {
        client_id: url.to_owned(),
        name: metadata.client_name,
        uri: metadata.client_uri,
        redirect_uris: metadata.redirect_uris,
        scopes: scopes.unwrap_or(metadata.scopes),
        secret_hash: None,
        kind: ClientKind::MetadataDocument,
    })
}

/// How long an answer may be cached: what its `Cache-Control` says (nothing for
/// `no-store` or `no-cache`), `max_cache` when it says nothing, never more.
fn lifetime(headers: &http::HeaderMap, max_cache: Duration) -> Duration {
    let mut lifetime = max_cache;
    for value in headers.get_all(http::header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else {
            return Duration::ZERO;
        };
        for directive in value.split(',').map(str::trim) {
            let lower = directive.to_ascii_lowercase();
            if lower == "no-store" || lower == "no-cache" {
                return Duration::ZERO;
            }
            if let Some(seconds) = lower.strip_prefix("max-age=") {
                let seconds = seconds.trim_matches('"').parse::<u64>().unwrap_or(0);
                lifetime = lifetime.min(Duration::from_secs(seconds));
            }
        }
    }
    lifetime
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://app.example.com/oauth/client.json";

    fn registry() -> ScopeRegistry {
        let mut registry = ScopeRegistry::default();
        registry.declare("offers:read", "Read");
        registry.declare("offers:write", "Write");
        registry
    }

    #[test]
    fn client_urls_follow_section_3() {
        assert!(client_url(URL).is_ok());
        assert!(client_url("https://app.example.com:8443/c?v=1").is_ok());
        for (bad, why) in [
            ("http://app.example.com/c", "not https"),
            ("https://app.example.com", "no path"),
            ("https://user:pw@app.example.com/c", "user information"),
            ("https://app.example.com/c#f", "fragment"),
            ("https://app.example.com/a/../c", "segment"),
            ("https://app.example.com/a/%2E%2e/c", "segment"),
            ("https://app.example.com/./c", "segment"),
        ] {
            let error = client_url(bad).unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn a_document_must_name_itself_and_be_public() {
        let good = format!(
            r#"{{"client_id":"{URL}","client_name":"Example","redirect_uris":["https://app.example.com/cb"],"scope":"offers:read elsewhere:admin"}}"#
        );
        let client = document(URL, good.as_bytes(), &registry()).unwrap();
        assert_eq!(client.kind, ClientKind::MetadataDocument);
        assert_eq!(client.name.as_deref(), Some("Example"));
        assert!(client.secret_hash.is_none());
        assert_eq!(registry().names(&client.scopes), "offers:read");
        for (bad, why) in [
            (
                r#"{"client_id":"https://other.example.com/c","redirect_uris":["https://a.example/cb"]}"#.to_owned(),
                "not the URL",
            ),
            (
                format!(r#"{{"client_id":"{URL}/","redirect_uris":["https://a.example/cb"]}}"#),
                "not the URL",
            ),
            (r#"{"redirect_uris":["https://a.example/cb"]}"#.to_owned(), "no client_id"),
            (
                format!(r#"{{"client_id":"{URL}","client_secret":"s","redirect_uris":["https://a.example/cb"]}}"#),
                "client_secret",
            ),
            (
                format!(r#"{{"client_id":"{URL}","token_endpoint_auth_method":"client_secret_basic","redirect_uris":["https://a.example/cb"]}}"#),
                "public clients only",
            ),
            (format!(r#"{{"client_id":"{URL}"}}"#), "redirect_uris"),
            ("[1]".to_owned(), "JSON object"),
        ] {
            let error = document(URL, bad.as_bytes(), &registry()).unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn cache_control_bounds_the_cache() {
        let hour = Duration::from_secs(3600);
        let headers = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::CACHE_CONTROL, value.parse().unwrap());
            headers
        };
        assert_eq!(lifetime(&http::HeaderMap::new(), hour), hour);
        assert_eq!(
            lifetime(&headers("public, max-age=60"), hour),
            Duration::from_secs(60)
        );
        assert_eq!(lifetime(&headers("max-age=86400"), hour), hour);
        assert_eq!(lifetime(&headers("no-store"), hour), Duration::ZERO);
        assert_eq!(
            lifetime(&headers("max-age=60, no-cache"), hour),
            Duration::ZERO
        );
    }
}
