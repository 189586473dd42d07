//! PKCE (RFC 7636) with `S256` only, as OAuth 2.1 and the MCP authorization rules
//! require: the challenge an authorization request carries, and the verifier the
//! token request proves it with.

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Why a challenge is refused at the authorization endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeError {
    /// No `code_challenge`.
    Missing,
    /// `code_challenge_method` is `plain`, or absent (which means `plain`).
    Plain,
    /// A method other than `S256` or `plain`.
    UnknownMethod,
    /// Not the 43 base64url characters of a SHA-256 digest.
    Malformed,
}

impl ChallengeError {
    /// The `error_description` of the authorization response.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            ChallengeError::Missing => {
                "PKCE is required: send code_challenge with code_challenge_method=S256"
            }
            ChallengeError::Plain => {
                "PKCE method plain is not accepted: use code_challenge_method=S256"
            }
            ChallengeError::UnknownMethod => "code_challenge_method must be S256",
            ChallengeError::Malformed => {
                "code_challenge must be the base64url SHA-256 of the code verifier (43 characters)"
            }
        }
    }
}

/// Checks an authorization request's `code_challenge` and `code_challenge_method`.
///
/// # Errors
///
/// What is wrong with them; an absent method means `plain` (RFC 7636 section 4.3),
/// which is refused.
pub fn challenge<'a>(
    challenge: Option<&'a str>,
    method: Option<&str>,
) -> Result<&'a str, ChallengeError> {
    let challenge = challenge.ok_or(ChallengeError::Missing)?;
    match method {
        Some("S256") => {}
        None | Some("plain") => return Err(ChallengeError::Plain),
        Some(_) => return Err(ChallengeError::UnknownMethod),
    }
    let well_formed = challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if well_formed {
        Ok(challenge)
    } else {
        Err(ChallengeError::Malformed)
    }
}

/// True when `verifier` is a well-formed code verifier (43 to 128 unreserved
/// characters) whose S256 transform is `challenge`.
#[must_use]
pub fn verify(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    well_formed && URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes())) == challenge
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn the_rfc_example_verifies() {
        assert_eq!(challenge(Some(CHALLENGE), Some("S256")), Ok(CHALLENGE));
        assert!(verify(VERIFIER, CHALLENGE));
    }

    #[test]
    fn plain_absent_and_malformed_challenges_are_refused() {
        assert_eq!(challenge(None, Some("S256")), Err(ChallengeError::Missing));
        assert_eq!(challenge(Some(CHALLENGE), None), Err(ChallengeError::Plain));
        assert_eq!(
            challenge(Some(CHALLENGE), Some("plain")),
            Err(ChallengeError::Plain)
        );
        assert_eq!(
            challenge(Some(CHALLENGE), Some("s256")),
            Err(ChallengeError::UnknownMethod)
        );
        assert_eq!(
            challenge(Some("short"), Some("S256")),
            Err(ChallengeError::Malformed)
        );
        let padded = format!("{}=", &CHALLENGE[..42]);
        assert_eq!(
            challenge(Some(&padded), Some("S256")),
            Err(ChallengeError::Malformed)
        );
    }

    #[test]
    fn a_wrong_or_malformed_verifier_fails() {
        assert!(!verify(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj",
            CHALLENGE
        ));
        assert!(!verify("short", CHALLENGE));
        assert!(!verify(&format!("{VERIFIER} "), CHALLENGE));
        assert!(!verify(&"a".repeat(129), CHALLENGE));
    }
}
