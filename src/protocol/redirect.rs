//! Redirect URIs: which ones a client may register (OAuth 2.1 section 2.3, RFC 8252
//! sections 7.1 to 7.3), how a presented one matches a registered one, and the
//! authorization response appended to one (with RFC 9207's `iss`).
//!
//! A presented URI matches a registered one exactly, as a string, except that a
//! loopback redirect (`http` to `127.0.0.1`, `[::1]` or `localhost`) matches on any
//! port: native apps listen on whatever port the system gives them.

use url::{Host, Url};

/// What kind of redirect a registered URI is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectKind {
    /// `https://` to a named or addressed host.
    Https,
    /// `http://` to the loopback interface, on any port.
    Loopback,
    /// A private-use scheme of a native app (`cursor://...`, `com.example.app:/cb`).
    PrivateUse,
}

/// Schemes no client may redirect to: they run code, read files or name no place.
const REFUSED_SCHEMES: [&str; 9] = [
    "javascript",
    "data",
    "file",
    "vbscript",
    "blob",
    "about",
    "filesystem",
    "ws",
    "wss",
];

/// The kind of a redirect URI a client wants to register.
///
/// # Errors
///
/// Why the URI cannot be a redirect URI, in words for `error_description`.
pub fn classify(uri: &str) -> Result<RedirectKind, &'static str> {
    let url = Url::parse(uri).map_err(|_| "a redirect URI is not an absolute URI")?;
    if url.fragment().is_some() {
        return Err("a redirect URI must not have a fragment");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a redirect URI must not carry user information");
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(RedirectKind::Https),
        "https" => Err("an https redirect URI needs a host"),
        "http" if is_loopback(&url) => Ok(RedirectKind::Loopback),
        "http" => Err(
            "an http redirect URI must point to the loopback interface (127.0.0.1, [::1] or localhost); use https",
        ),
        scheme if REFUSED_SCHEMES.contains(&scheme) => Err(
            "a redirect URI's scheme must be https, loopback http, or an app's private-use scheme",
        ),
        _ => Ok(RedirectKind::PrivateUse),
    }
}

/// True when `presented` (from an authorization or token request) matches the
/// registered `registered`.
#[must_use]
pub fn matches(registered: &str, presented: &str) -> bool {
    if registered == presented {
        return true;
    }
    let (Ok(r), Ok(p)) = (Url::parse(registered), Url::parse(presented)) else {
        return false;
    };
    r.scheme() == "http"
        && p.scheme() == "http"
        && is_loopback(&r)
        && r.host() == p.host()
        && r.path() == p.path()
        && r.query() == p.query()
        && p.fragment().is_none()
        && p.username().is_empty()
        && p.password().is_none()
        // The spelling must match too, apart from the port: the client compares
        // the callback it receives with what it listened on.
        && without_port(registered) == without_port(presented)
}

/// The URI with its authority's port removed, for a textual comparison.
fn without_port(uri: &str) -> Option<String> {
    let mut url = Url::parse(uri).ok()?;
    url.set_port(None).ok()?;
    Some(url.into())
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// `redirect` with `params` added to its query, in order: the authorization
/// response. The redirect is the one the client presented, so it is kept as it
/// was sent, apart from the new parameters.
#[must_use]
pub fn with_params(redirect: &str, params: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        query.append_pair(name, value);
    }
    let query = query.finish();
    let separator = match redirect.find('?') {
        None => '?',
        Some(at) if at + 1 == redirect.len() || redirect.ends_with('&') => {
            return format!("{redirect}{query}");
        }
        Some(_) => '&',
    };
    format!("{redirect}{separator}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrable_redirects() {
        assert_eq!(
            classify("https://app.example.com/cb"),
            Ok(RedirectKind::Https)
        );
        assert_eq!(
            classify("http://127.0.0.1/callback"),
            Ok(RedirectKind::Loopback)
        );
        assert_eq!(classify("http://[::1]:8080/cb"), Ok(RedirectKind::Loopback));
        assert_eq!(
            classify("http://localhost:33418/"),
            Ok(RedirectKind::Loopback)
        );
        assert_eq!(
            classify("cursor://anysphere.cursor-retrieval/oauth/callback"),
            Ok(RedirectKind::PrivateUse)
        );
        assert_eq!(
            classify("vscode://vscode.github-authentication/did-authenticate"),
            Ok(RedirectKind::PrivateUse)
        );
        assert_eq!(
            classify("com.example.app:/oauth2redirect"),
            Ok(RedirectKind::PrivateUse)
        );
        for refused in [
            "http://app.example.com/cb",
            "http://127.0.0.2.example.com/cb",
            "https://app.example.com/cb#frag",
            "javascript:alert(1)",
            "data:text/html,hi",
            "file:///etc/passwd",
            "https://user:pw@app.example.com/cb",
            "/relative/cb",
            "",
        ] {
            assert!(classify(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn exact_match_except_the_loopback_port() {
        assert!(matches(
            "https://app.example.com/cb",
            "https://app.example.com/cb"
        ));
        assert!(!matches(
            "https://app.example.com/cb",
            "https://app.example.com/cb/"
        ));
        assert!(!matches(
            "https://app.example.com/cb",
            "https://evil.example.com/cb"
        ));
        assert!(!matches(
            "https://app.example.com:443/cb",
            "https://app.example.com:8443/cb"
        ));
        assert!(matches(
            "http://127.0.0.1/callback",
            "http://127.0.0.1:51004/callback"
        ));
        assert!(matches(
            "http://127.0.0.1:3000/callback",
            "http://127.0.0.1:51004/callback"
        ));
        assert!(matches("http://[::1]/cb", "http://[::1]:9/cb"));
        assert!(matches("http://localhost/cb", "http://localhost:9/cb"));
        assert!(!matches(
            "http://127.0.0.1/callback",
            "http://127.0.0.1:51004/other"
        ));
        assert!(!matches(
            "http://127.0.0.1/callback",
            "http://localhost:51004/callback"
        ));
        assert!(!matches(
            "http://127.0.0.1/callback",
            "http://127.0.0.1:5/callback?x=1"
        ));
        assert!(!matches(
            "http://127.0.0.1/callback",
            "http://127.0.0.1:5/callback#x"
        ));
        assert!(!matches("http://127.0.0.1/cb", "https://127.0.0.1:5/cb"));
        assert!(matches("cursor://x/cb", "cursor://x/cb"));
        assert!(!matches("cursor://x/cb", "cursor://y/cb"));
    }

    #[test]
    fn the_response_is_appended_to_the_query() {
        let params = [
            ("code", "c 1"),
            ("state", "s&t"),
            ("iss", "https://a.example"),
        ];
        assert_eq!(
            with_params("https://app.example.com/cb", &params),
            "https://app.example.com/cb?code=c+1&state=s%26t&iss=https%3A%2F%2Fa.example"
        );
        assert_eq!(
            with_params("https://app.example.com/cb?tenant=7", &params[..1]),
            "https://app.example.com/cb?tenant=7&code=c+1"
        );
        assert_eq!(
            with_params("cursor://x/cb?", &params[..1]),
            "cursor://x/cb?code=c+1"
        );
    }
}
