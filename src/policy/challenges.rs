//! The `WWW-Authenticate` challenges a route's refusals carry: where its protected
//! resource's metadata is, and which scopes it requires.

use http::HeaderValue;

/// The `WWW-Authenticate` values of one protected resource as seen from one host,
/// built once per config. `Bearer` comes first (MCP clients only read a leading
/// Bearer challenge), then `resource_metadata`, then the error and the resource's
/// `scope` where they apply.
#[derive(Debug, Clone)]
pub struct Challenges {
    /// 401 without a credential: `resource_metadata` and `scope`.
    pub missing: HeaderValue,
    /// 401 with a bad credential: `error="invalid_token"`.
    pub invalid_token: HeaderValue,
    /// 400: `error="invalid_request"`.
    pub invalid_request: HeaderValue,
    /// 403: `error="insufficient_scope"` and `scope`.
    pub insufficient_scope: HeaderValue,
}

impl Challenges {
    /// The challenges for a resource whose metadata is at `metadata_url`, with the
    /// space-separated `scope` it requires (may be empty).
    #[must_use]
    pub fn new(metadata_url: &str, scope: &str) -> Challenges {
        let build = |error: Option<&str>, with_scope: bool| {
            let mut value = format!("Bearer resource_metadata=\"{metadata_url}\"");
            if let Some(error) = error {
                value.push_str(&format!(", error=\"{error}\""));
            }
            if with_scope && !scope.is_empty() {
                value.push_str(&format!(", scope=\"{scope}\""));
            }
            HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
        };
        Challenges {
            missing: build(None, true),
            invalid_token: build(Some("invalid_token"), false),
            invalid_request: build(Some("invalid_request"), false),
            insufficient_scope: build(Some("insufficient_scope"), true),
        }
    }
}
