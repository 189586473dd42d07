//! One sign-in round trip: what the login cookie carries between the sign-in page,
//! the provider and the callback, the random values it is made of, and where the
//! browser may be sent back to.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// The longest `return_to` accepted: it travels in the login cookie.
pub(crate) const MAX_RETURN_TO: usize = 2048;

/// A sign-in in progress, sealed into the login cookie.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LoginState {
    /// The provider the browser was sent to; `None` while it is on the sign-in page
    /// (the state then binds the password form's CSRF token).
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub(crate) provider: Option<String>,
    /// OAuth `state`, and the CSRF binding of the sign-in page's forms.
    #[serde(rename = "s")]
    pub(crate) state: String,
    /// The OIDC `nonce` the ID token must carry.
    #[serde(rename = "n", default, skip_serializing_if = "String::is_empty")]
    pub(crate) nonce: String,
    /// The PKCE code verifier.
    #[serde(rename = "v", default, skip_serializing_if = "String::is_empty")]
    pub(crate) verifier: String,
    /// Where to send the browser once signed in (a checked local path).
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub(crate) return_to: Option<String>,
    /// The redirect URI the provider was given (the token request repeats it).
    #[serde(rename = "u", default, skip_serializing_if = "String::is_empty")]
    pub(crate) redirect_uri: String,
}

impl LoginState {
    /// A state that only binds the sign-in page's forms.
    pub(crate) fn page(return_to: Option<String>) -> Option<LoginState> {
        Some(LoginState {
            provider: None,
            state: random_token()?,
            nonce: String::new(),
            verifier: String::new(),
            return_to,
            redirect_uri: String::new(),
        })
    }

    /// A round trip through `provider`, coming back to `redirect_uri`.
    pub(crate) fn round_trip(
        provider: &str,
        return_to: Option<String>,
        redirect_uri: String,
    ) -> Option<LoginState> {
        Some(LoginState {
            provider: Some(provider.to_owned()),
            state: random_token()?,
            nonce: random_token()?,
            verifier: random_token()?,
            return_to,
            redirect_uri,
        })
    }

    /// The PKCE `code_challenge` (S256) of the verifier.
    pub(crate) fn code_challenge(&self) -> String {
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.verifier.as_bytes());
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    }
}

/// 256 random bits, base64url (43 characters); `None` when the OS has no
/// randomness to give.
pub(crate) fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// True when `value` is a place on this origin the browser may be sent back to:
/// the local path `authorize` (the authorization endpoint's, or the claim page's:
/// the caller asks once per allowed path), alone or with a query. Nothing
/// else (another path, another origin, `//host`, a scheme, a backslash, a
/// fragment, a space or control character) — no open redirect.
pub(crate) fn return_to_allowed(value: &str, authorize: &str) -> bool {
    let Some(rest) = value.strip_prefix(authorize) else {
        return false;
    };
    authorize.starts_with('/')
        && !authorize.starts_with("//")
        && value.len() <= MAX_RETURN_TO
        && (rest.is_empty() || rest.starts_with('?'))
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'\\' && b != b'#')
}

/// True when `value` is exactly the local path `path` (the operator page): no
/// query, nothing before or after it.
pub(crate) fn return_to_is(value: &str, path: &str) -> bool {
    value == path
        && path.starts_with('/')
        && !path.starts_with("//")
        && path.len() <= MAX_RETURN_TO
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'\\' && b != b'#' && b != b'?')
}

/// `base` with `params` added to its query.
pub(crate) fn with_query(base: &str, params: &[(&str, &str)]) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let separator = match base.split_once('?') {
        None => '?',
        Some((_, "")) => return format!("{base}{query}"),
        Some(_) => '&',
    };
    format!("{base}{separator}{query}")
}

/// Constant-time equality of two strings (a state, a nonce).
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_authorization_endpoint_is_a_place_to_return_to() {
        let ok = |v| return_to_allowed(v, "/oauth2/authorize");
        assert!(ok("/oauth2/authorize"));
        assert!(ok("/oauth2/authorize?client_id=a&state=b%20c"));
        for bad in [
            "",
            "/",
            "/oauth2/authorizeX",
            "/oauth2/authorize/../../admin",
            "//evil.example/oauth2/authorize",
            "https://evil.example/oauth2/authorize",
            "/oauth2/authorize?x=1#frag",
            "/oauth2/authorize?x=\\evil",
            "/oauth2/authorize?x= y",
            "/oauth2/authorize?x=\r\nSet-Cookie:a=b",
            "/other",
        ] {
            assert!(!ok(bad), "{bad:?}");
        }
        let long = format!("/oauth2/authorize?x={}", "a".repeat(MAX_RETURN_TO));
        assert!(!ok(&long));
        let claim = |v| return_to_allowed(v, "/agent/auth/claim");
        assert!(claim("/agent/auth/claim?token=clm_abc"));
        for bad in [
            "/agent/auth/claimX?token=a",
            "/agent/auth/claim/../keys",
            "//evil.example/agent/auth/claim",
            "/agent/auth/claim?token=a#x",
        ] {
            assert!(!claim(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_operator_page_is_a_place_to_return_to_exactly() {
        let ok = |v| return_to_is(v, "/agent/auth/operator");
        assert!(ok("/agent/auth/operator"));
        for bad in [
            "",
            "/",
            "/agent/auth/operator?x=1",
            "/agent/auth/operator/",
            "/agent/auth/operatorX",
            "/agent/auth/operator#x",
            "/agent/auth/operator/../keys",
            "//evil.example/agent/auth/operator",
            "https://evil.example/agent/auth/operator",
            "/agent/auth/OPERATOR",
        ] {
            assert!(!ok(bad), "{bad:?}");
        }
        assert!(!return_to_is("//evil.example", "//evil.example"));
    }

    #[test]
    fn queries_are_appended() {
        assert_eq!(
            with_query("https://a/b", &[("x", "1 2")]),
            "https://a/b?x=1+2"
        );
        assert_eq!(
            with_query("https://a/b?y=2", &[("x", "1")]),
            "https://a/b?y=2&x=1"
        );
        assert_eq!(with_query("https://a/b?", &[("x", "1")]), "https://a/b?x=1");
    }

    #[test]
    fn states_are_random_and_challenges_are_s256() {
        let a = LoginState::round_trip("p", None, "u".into()).unwrap();
        let b = LoginState::round_trip("p", None, "u".into()).unwrap();
        assert_ne!(a.state, b.state);
        assert_ne!(a.nonce, a.verifier);
        assert_eq!(a.state.len(), 43);
        // RFC 7636 appendix B.
        let rfc = LoginState {
            verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
            ..a
        };
        assert_eq!(
            rfc.code_challenge(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
