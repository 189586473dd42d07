//! Randomness from the operating system, for what is public but must not be
//! guessable: identifiers of keys, registrations, tokens and anonymous clients.
//!
//! Secrets (API keys) are minted in `credentials::api_key`, which zeroes its buffers.

/// A public id such as `key_...` or `at_...`: 128 bits from the OS random source,
/// in base58. Not a secret; unguessable so that ids reveal nothing.
pub fn public_id(prefix: &str) -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{prefix}_{}", bs58::encode(bytes).into_string()))
}
