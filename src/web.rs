//! Server-rendered HTML pages for people (sign-in, consent): one layout, one small
//! stylesheet, no JavaScript, and the same protective headers on every page.
//!
//! Pages are written with [`maud`], which escapes every interpolated value, so a
//! name or an error message from a provider cannot add markup. The stylesheet is
//! inlined and allowed by its hash (`style-src 'sha256-…'`, computed once), and
//! nothing else may load: `default-src 'none'`, no frames (`frame-ancestors
//! 'none'`, `X-Frame-Options: DENY`), no referrer, never cached.
//!
//! `form-action` is set: forms may post to this origin only (`'self'`), so an
//! injected form could not send a password elsewhere. Chromium applies
//! `form-action` to the redirects that answer a form too, so a page whose form is
//! answered with a redirect to another origin (the consent form's 303 to a
//! client's redirect URI, often another origin or a custom scheme) names that
//! target with [`page_with_form_target`]; [`form_action_source`] turns a URI into
//! the source expression that allows it.
//!
//! CSRF tokens bound to a value of the browser's own session live in [`csrf`];
//! reading a posted form in [`form`].

pub mod csrf;
pub mod form;

use std::sync::LazyLock;

use base64::Engine as _;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::body::Body;

/// The one stylesheet: readable on a phone and a desktop, light and dark.
pub const STYLE: &str = "\
:root{color-scheme:light dark;--fg:#1b1f24;--bg:#f3f4f6;--card:#fff;--muted:#5b6470;--accent:#1f4fc4;--on-accent:#fff;--line:#d5d9e0;--bad:#b42318}\
@media (prefers-color-scheme:dark){:root{--fg:#e6e8eb;--bg:#111418;--card:#1a1e24;--muted:#9aa3ad;--accent:#8fb0ff;--on-accent:#0b1020;--line:#333a44;--bad:#ff8a80}}\
*{box-sizing:border-box}\
body{margin:0;font:16px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;color:var(--fg);background:var(--bg)}\
main{max-width:28rem;margin:2rem auto;padding:1.5rem;background:var(--card);border:1px solid var(--line);border-radius:.75rem}\
h1{font-size:1.4rem;margin:0 0 1rem}\
h2{font-size:1.1rem;margin:1.5rem 0 .25rem}\
label{display:block;margin:.75rem 0 .25rem;font-weight:600}\
input{width:100%;padding:.6rem;font:inherit;color:inherit;background:var(--bg);border:1px solid var(--line);border-radius:.4rem}\
button,.button{display:block;width:100%;margin-top:1rem;padding:.7rem;font:inherit;font-weight:600;text-align:center;text-decoration:none;color:var(--on-accent);background:var(--accent);border:0;border-radius:.4rem;cursor:pointer}\
.secondary{color:var(--accent);background:transparent;border:1px solid var(--accent)}\
.error{color:var(--bad);font-weight:600}\
.muted,footer{color:var(--muted);font-size:.875rem}\
footer{text-align:center;margin:1rem}\
@media (max-width:32rem){main{margin:0;border-width:0 0 1px;border-radius:0}}";

/// `'sha256-…'` of [`STYLE`], the one style the pages' CSP allows.
static STYLE_HASH: LazyLock<String> = LazyLock::new(|| {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, STYLE.as_bytes());
    let encoded = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    format!("'sha256-{encoded}'")
});

/// The CSP of a page whose forms post to this origin only.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    HeaderValue::try_from(csp("'self'")).unwrap_or(HeaderValue::from_static("default-src 'none'"))
});

/// The Content-Security-Policy with `form_action` as the `form-action` sources.
fn csp(form_action: &str) -> String {
    format!(
        "default-src 'none'; style-src {}; img-src 'self' data:; base-uri 'none'; \
         frame-ancestors 'none'; form-action {form_action}",
        *STYLE_HASH
    )
}

/// A page: `title` as the document's title and heading, `content` below it, in
/// the one layout, with the headers every page carries. Its forms may post to
/// this origin only.
#[must_use]
pub fn page(status: StatusCode, title: &str, content: Markup) -> Response<Body> {
    respond(status, title, content, CSP.clone())
}

/// [`page`] for a form whose answer redirects the browser to `target` (a URI on
/// another origin, or with a custom scheme): the CSP's `form-action` allows this
/// origin and `target`'s. A target with no usable source expression is left out
/// (the redirect is then refused by the browser rather than anything being
/// allowed that was not meant to be).
#[must_use]
pub fn page_with_form_target(
    status: StatusCode,
    title: &str,
    content: Markup,
    target: &str,
) -> Response<Body> {
    let policy = match form_action_source(target) {
        Some(source) => HeaderValue::try_from(csp(&format!("'self' {source}"))).ok(),
        None => {
            tracing::debug!("a form target has no CSP source expression; form-action stays 'self'");
            None
        }
    };
    respond(
        status,
        title,
        content,
        policy.unwrap_or_else(|| CSP.clone()),
    )
}

/// The CSP source expression that allows navigating to `target`: its origin
/// (`https://app.example.com`, `http://127.0.0.1:8400`) for http(s), or its scheme
/// (`com.example.app:`) for a custom scheme. `None` when `target` is not an
/// absolute URI whose parts can be written in a CSP without changing its meaning.
#[must_use]
pub fn form_action_source(target: &str) -> Option<String> {
    let (scheme, rest) = target.split_once(':')?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || rest.is_empty() {
        return None;
    }
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" => {
            let uri: http::Uri = target.parse().ok()?;
            let authority = uri.authority()?;
            let host = authority.host();
            let host_ok = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
            if !host_ok || authority.as_str().contains('@') {
                return None;
            }
            let port = authority
                .port_u16()
                .map(|p| format!(":{p}"))
                .unwrap_or_default();
            Some(format!("{scheme}://{host}{port}"))
        }
        // Never a place a form should lead to.
        "javascript" | "data" | "vbscript" | "file" | "blob" | "filesystem" => None,
        _ => Some(format!("{scheme}:")),
    }
}

/// An error page: `title`, and `message` saying what happened and what to do.
#[must_use]
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response<Body> {
    page(status, title, html! { p.error { (message) } })
}

/// A `303 See Other` to `location` (a path on this origin, or a provider's
/// authorization URL), never cached, sending no referrer.
#[must_use]
pub fn see_other(location: &str) -> Response<Body> {
    let Ok(location) = HeaderValue::try_from(location) else {
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The next page's address is not valid.",
        );
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    headers.insert(LOCATION, location);
    protect(headers);
    response
}

fn respond(
    status: StatusCode,
    title: &str,
    content: Markup,
    policy: HeaderValue,
) -> Response<Body> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                main {
                    h1 { (title) }
                    (PreEscaped(content.into_string()))
                }
                footer { "authmd-proxy" }
            }
        }
    };
    let mut response = Response::new(Body::full(markup.into_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CONTENT_SECURITY_POLICY, policy);
    protect(headers);
    response
}

/// The headers every answer to a browser carries.
fn protect(headers: &mut HeaderMap) {
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_inlined_style() {
        let response = page(StatusCode::OK, "Hi <there>", html! { p { "x & y" } });
        let policy = response.headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, STYLE.as_bytes());
        let hash = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
        assert!(
            policy.contains(&format!("style-src 'sha256-{hash}';")),
            "{policy}"
        );
        assert!(policy.starts_with("default-src 'none';"), "{policy}");
        assert!(policy.ends_with("form-action 'self'"), "{policy}");
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        assert_eq!(response.headers()[X_FRAME_OPTIONS], "DENY");
        let Body::Full(Some(bytes)) = response.into_body() else {
            panic!("no body")
        };
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(text.contains(&format!("<style>{STYLE}</style>")));
        assert!(text.contains("<h1>Hi &lt;there&gt;</h1>"), "{text}");
        assert!(text.contains("x &amp; y"));
        assert!(!text.contains("<script"));
    }

    #[test]
    fn form_targets_become_origins_or_schemes() {
        let source = |t| form_action_source(t);
        assert_eq!(
            source("http://127.0.0.1:8400/cb?x=1").as_deref(),
            Some("http://127.0.0.1:8400")
        );
        assert_eq!(
            source("https://app.example.com/cb").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            source("com.example.app:/oauth").as_deref(),
            Some("com.example.app:")
        );
        assert_eq!(source("/relative"), None);
        assert_eq!(source("javascript:alert(1)"), None);
        assert_eq!(source("https://user@evil.example/"), None);
        let response =
            page_with_form_target(StatusCode::OK, "t", html! {}, "http://127.0.0.1:8400/cb");
        let policy = response.headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(
            policy.ends_with("form-action 'self' http://127.0.0.1:8400"),
            "{policy}"
        );
    }
}
