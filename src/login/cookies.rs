//! The two cookies of a sign-in, written and read.
//!
//! - `__Host-authmd-session`: the signed-in person, sealed; `Max-Age` the session
//!   lifetime.
//! - `__Host-authmd-login`: one sign-in round trip through a provider (its state,
//!   nonce, PKCE verifier and where to go back to), sealed; ten minutes.
//!
//! Both are `Secure; HttpOnly; Path=/; SameSite=Lax` with the `__Host-` prefix: no
//! subdomain can set or shadow them, scripts cannot read them, and other sites'
//! subresource requests and cross-site POSTs do not carry them (a top-level GET
//! navigation does, which is what a provider's redirect back is). Browsers keep
//! `Secure` cookies over `https://`, and over plain `http://` on loopback
//! (`localhost`, `127.0.0.1`, `[::1]`), which they treat as secure contexts
//! (checked with Chromium); the config refuses sign-in on any other `http://`
//! origin.

use std::time::Duration;

use cookie::{Cookie, SameSite};
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

/// The signed-in person.
pub const SESSION: &str = "__Host-authmd-session";
/// A sign-in round trip.
pub const LOGIN: &str = "__Host-authmd-login";
/// How long a sign-in round trip may take.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// The longest cookie value written: browsers keep 4096 bytes of name and value.
pub const MAX_VALUE: usize = 3900;

/// The values of the cookies called `name` that the request carries (a browser
/// may send several, and several `Cookie` headers over HTTP/2).
pub fn values<'h>(headers: &'h HeaderMap, name: &'h str) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(move |pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key.trim() == name).then(|| value.trim().trim_matches('"'))
        })
}

/// `Set-Cookie` for `name=value`, kept `max_age`.
#[must_use]
pub fn set(name: &str, value: &str, max_age: Duration) -> Option<HeaderValue> {
    let seconds = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
    let cookie = Cookie::build((name, value))
        .secure(true)
        .http_only(true)
        .path("/")
        .same_site(SameSite::Lax)
        .max_age(cookie::time::Duration::seconds(seconds))
        .build();
    HeaderValue::try_from(cookie.to_string()).ok()
}

/// `Set-Cookie` that removes the cookie `name`.
#[must_use]
pub fn clear(name: &str) -> HeaderValue {
    set(name, "", Duration::ZERO).unwrap_or(HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_host_bound_secure_and_lax() {
        let header = set(SESSION, "abc", Duration::from_secs(60)).unwrap();
        let text = header.to_str().unwrap();
        for part in [
            "__Host-authmd-session=abc",
            "HttpOnly",
            "Secure",
            "Path=/",
            "SameSite=Lax",
            "Max-Age=60",
        ] {
            assert!(text.contains(part), "{text} lacks {part}");
        }
        assert!(!text.contains("Domain"));
        assert!(clear(LOGIN).to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn values_are_found_in_every_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_static("a=1; __Host-authmd-login=x"),
        );
        headers.append(
            COOKIE,
            HeaderValue::from_static("__Host-authmd-login=y;b=2"),
        );
        let found: Vec<_> = values(&headers, LOGIN).collect();
        assert_eq!(found, ["x", "y"]);
        assert_eq!(values(&headers, SESSION).count(), 0);
    }
}
