//! Randomness from the operating system, for what is public but must not be
//! guessable: identifiers of keys, registrations, tokens and anonymous clients.
//!
//! API keys are minted in `credentials::api_key`, which zeroes its buffers; the
//! bearer secrets of the interactive flow (codes, refresh tokens) by [`secret`].

/// A public id such as `key_...` or `at_...`: 128 bits from the OS random source,
/// in base58. Not a secret; unguessable so that ids reveal nothing.
pub fn public_id(prefix: &str) -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{prefix}_{}", bs58::encode(bytes).into_string()))
}

/// A bearer secret such as an authorization code or a refresh token: 256 bits
/// from the OS random source, base64url, after `prefix` and `_`. Only its hash is
/// ever stored.
pub fn secret(prefix: &str) -> Result<zeroize::Zeroizing<String>, getrandom::Error> {
    use base64::Engine;
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut())?;
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref());
    Ok(zeroize::Zeroizing::new(format!("{prefix}_{encoded}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_long_distinct_and_url_safe() {
        let a = super::secret("ac").unwrap();
        let b = super::secret("ac").unwrap();
        assert_ne!(*a, *b);
        assert_eq!(a.len(), "ac_".len() + 43);
        assert!(
            a[3..]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }
}
