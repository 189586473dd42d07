//! CSRF tokens for the pages' forms, bound to a value only the browser's own
//! cookie carries (the sign-in round trip's random binding, or the session's id):
//! the token is an HMAC of that value, so a page on another site, which can make
//! the browser post but can read neither the cookie nor this site's pages, cannot
//! produce it. Verification is constant-time.

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Domain separation: a CSRF token is never the MAC of anything else.
const LABEL: &[u8] = b"authmd-proxy csrf v1\0";

/// The key CSRF tokens are made with (derived from the cookie key, never the
/// cookie key itself).
pub struct CsrfKey(hmac::Key);

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey(..)")
    }
}

impl CsrfKey {
    /// Tokens made with `key` (HMAC-SHA256).
    #[must_use]
    pub fn new(key: hmac::Key) -> CsrfKey {
        CsrfKey(key)
    }

    /// The token of a form shown to the browser whose cookie carries `binding`.
    #[must_use]
    pub fn token(&self, binding: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.tag(binding).as_ref())
    }

    /// True when `token` is the token for `binding`.
    #[must_use]
    pub fn verify(&self, binding: &str, token: &str) -> bool {
        let Ok(presented) = URL_SAFE_NO_PAD.decode(token.trim()) else {
            return false;
        };
        let mut message = Vec::with_capacity(LABEL.len() + binding.len());
        message.extend_from_slice(LABEL);
        message.extend_from_slice(binding.as_bytes());
        hmac::verify(&self.0, &message, &presented).is_ok()
    }

    fn tag(&self, binding: &str) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(LABEL);
        context.update(binding.as_bytes());
        context.sign()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_for_its_binding_only() {
        let key = CsrfKey::new(hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]));
        let token = key.token("binding-a");
        assert!(key.verify("binding-a", &token));
        assert!(!key.verify("binding-b", &token));
        assert!(!key.verify("binding-a", "not-base64!"));
        assert!(!key.verify("binding-a", ""));
        let other = CsrfKey::new(hmac::Key::new(hmac::HMAC_SHA256, &[8; 32]));
        assert!(!other.verify("binding-a", &token));
    }
}
