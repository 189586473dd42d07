//! Sealing small values into cookies and form fields: AES-256-GCM under a key
//! derived for one purpose, with the purpose as associated data and the expiry
//! inside, as base64url(nonce ‖ ciphertext ‖ tag).
//!
//! One cookie key (`login.cookie_key`, `cookie_key_file`, or generated into
//! `<data_dir>/cookie.key`) is never used directly: HKDF-SHA256 derives a key per
//! purpose (sealing sessions, login round trips, pending authorization requests;
//! MACing CSRF tokens and refresh-token successors), so no key ever serves two
//! purposes and a value sealed for one is never accepted as another. Every replica
//! with the same cookie key opens what any other sealed.

use std::io::Write as _;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{hkdf, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use super::settings::{CookieKeySource, SecretBytes};

/// The shortest cookie key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// HKDF's salt: fixed, so every replica derives the same keys.
const SALT: &[u8] = b"authmd-proxy cookie key v1";

/// What a sealed value is for; sealed for one, it never opens as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The signed-in person (`__Host-authmd-session`).
    Session,
    /// A sign-in round trip through a provider (`__Host-authmd-login`).
    Login,
    /// A pending authorization request, carried through the sign-in and consent
    /// pages.
    AuthzRequest,
}

impl Purpose {
    /// The associated data and HKDF info of the purpose.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Purpose::Session => "session",
            Purpose::Login => "login",
            Purpose::AuthzRequest => "authz-request",
        }
    }
}

/// A sealed value could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The value does not serialize.
    #[error("cannot serialize the value")]
    Serialize,
    /// The operating system's random source failed.
    #[error("no randomness for a nonce")]
    Random,
    /// The cipher refused (never happens with a valid key).
    #[error("cannot seal")]
    Cipher,
}

/// The cookie key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The generated key file could not be read or written.
    #[error("cookie key file {path}: {error}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        error: std::io::Error,
    },
    /// The key file holds no base64 key of at least 32 bytes.
    #[error("cookie key file {0} does not hold a base64 key of at least 32 bytes")]
    Malformed(String),
    /// No randomness to generate a key with.
    #[error("no randomness to generate a cookie key")]
    Random,
    /// HKDF refused to derive a key (never happens with SHA-256's lengths).
    #[error("cannot derive keys from the cookie key")]
    Derive,
}

/// The keys derived from one cookie key.
pub struct Sealer {
    session: LessSafeKey,
    login: LessSafeKey,
    authz: LessSafeKey,
    csrf: hmac::Key,
    refresh: hmac::Key,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// The seal's inside: the value and when it stops opening.
#[derive(Serialize, serde::Deserialize)]
struct Envelope<T> {
    exp: i64,
    v: T,
}

impl Sealer {
    /// The keys derived from `master` (at least [`MIN_KEY_LEN`] bytes).
    pub fn new(master: &[u8]) -> Result<Sealer, KeyError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(master);
        let aead = |purpose: Purpose| {
            let info = [purpose.label().as_bytes()];
            let okm = prk
                .expand(&info, &AES_256_GCM)
                .map_err(|_| KeyError::Derive)?;
            Ok::<_, KeyError>(LessSafeKey::new(UnboundKey::from(okm)))
        };
        let mac = |label: &'static [u8]| {
            let info = [label];
            let okm = prk
                .expand(&info, hmac::HMAC_SHA256)
                .map_err(|_| KeyError::Derive)?;
            Ok::<_, KeyError>(hmac::Key::from(okm))
        };
        Ok(Sealer {
            session: aead(Purpose::Session)?,
            login: aead(Purpose::Login)?,
            authz: aead(Purpose::AuthzRequest)?,
            csrf: mac(b"csrf")?,
            refresh: mac(b"refresh")?,
        })
    }

    fn key(&self, purpose: Purpose) -> &LessSafeKey {
        match purpose {
            Purpose::Session => &self.session,
            Purpose::Login => &self.login,
            Purpose::AuthzRequest => &self.authz,
        }
    }

    /// `value`, sealed for `purpose` until unix time `expires_at`.
    pub fn seal<T: Serialize>(
        &self,
        purpose: Purpose,
        value: &T,
        expires_at: i64,
    ) -> Result<String, SealError> {
        let envelope = Envelope {
            exp: expires_at,
            v: value,
        };
        let mut plain =
            Zeroizing::new(serde_json::to_vec(&envelope).map_err(|_| SealError::Serialize)?);
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(&nonce);
        let tag = self
            .key(purpose)
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.label().as_bytes()),
                plain.as_mut_slice(),
            )
            .map_err(|_| SealError::Cipher)?;
        out.extend_from_slice(&plain);
        out.extend_from_slice(tag.as_ref());
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// The value sealed in `text` for `purpose`, unless it was sealed for
    /// another purpose or under another key, was altered, or expired at or before
    /// unix time `now`.
    #[must_use]
    pub fn open<T: DeserializeOwned>(&self, purpose: Purpose, text: &str, now: i64) -> Option<T> {
        let mut bytes = Zeroizing::new(URL_SAFE_NO_PAD.decode(text.trim()).ok()?);
        if bytes.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, sealed) = bytes.split_at_mut(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = self
            .key(purpose)
            .open_in_place(nonce, Aad::from(purpose.label().as_bytes()), sealed)
            .ok()?;
        let envelope: Envelope<T> = serde_json::from_slice(plain).ok()?;
        (envelope.exp > now).then_some(envelope.v)
    }

    /// The key CSRF tokens are MACed with.
    #[must_use]
    pub fn csrf_key(&self) -> &hmac::Key {
        &self.csrf
    }

    /// The key refresh-token successors are derived with (HMAC-SHA256): the same on
    /// every replica, never the cookie key itself.
    #[must_use]
    pub fn refresh_key(&self) -> &hmac::Key {
        &self.refresh
    }
}

/// Decodes a cookie key written in base64 (standard or url-safe, padded or not);
/// `None` unless it is at least [`MIN_KEY_LEN`] bytes.
#[must_use]
pub fn decode_key(text: &str) -> Option<SecretBytes> {
    let text = text.trim();
    let trimmed = text.trim_end_matches('=');
    let bytes = URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| STANDARD.decode(text))
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .ok()?;
    (bytes.len() >= MIN_KEY_LEN).then(|| SecretBytes(Zeroizing::new(bytes)))
}

/// The cookie key `source` names: given, read from (or generated once into) its
/// file, or for an ephemeral key `previous` (the running one) or a new random one.
pub fn load_key(
    source: &CookieKeySource,
    previous: Option<&SecretBytes>,
) -> Result<SecretBytes, KeyError> {
    match source {
        CookieKeySource::Given(key) => Ok(key.clone()),
        CookieKeySource::Ephemeral => match previous {
            Some(key) => Ok(key.clone()),
            None => random_key(),
        },
        CookieKeySource::Generated(path) => read_or_generate(path),
    }
}

fn random_key() -> Result<SecretBytes, KeyError> {
    let mut bytes = Zeroizing::new(vec![0u8; MIN_KEY_LEN]);
    getrandom::fill(&mut bytes).map_err(|_| KeyError::Random)?;
    Ok(SecretBytes(bytes))
}

/// Reads the key file; creates it (mode 0600, with its directory) when missing.
/// Two processes starting at once agree: only one creates it, the other reads it.
fn read_or_generate(path: &Path) -> Result<SecretBytes, KeyError> {
    let file_error = |error| KeyError::File {
        path: path.display().to_string(),
        error,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => return decode_key(&text).ok_or_else(|| malformed(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(file_error(e)),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(file_error)?;
    }
    let key = random_key()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            let text = Zeroizing::new(format!("{}\n", URL_SAFE_NO_PAD.encode(key.0.as_slice())));
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(file_error)?;
            tracing::info!(path = %path.display(), "generated the cookie key");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path).map_err(file_error)?;
            decode_key(&text).ok_or_else(|| malformed(path))
        }
        Err(e) => Err(file_error(e)),
    }
}

fn malformed(path: &Path) -> KeyError {
    KeyError::Malformed(path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(byte: u8) -> Sealer {
        Sealer::new(&[byte; 32]).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_for_its_purpose_until_it_expires() {
        let s = sealer(1);
        let text = s.seal(Purpose::Session, &"hello", 100).unwrap();
        assert!(!text.contains("hello"));
        assert_eq!(
            s.open::<String>(Purpose::Session, &text, 99).as_deref(),
            Some("hello")
        );
        assert_eq!(s.open::<String>(Purpose::Session, &text, 100), None);
        assert_eq!(s.open::<String>(Purpose::Login, &text, 0), None);
        assert_eq!(s.open::<String>(Purpose::AuthzRequest, &text, 0), None);
        assert_eq!(sealer(2).open::<String>(Purpose::Session, &text, 0), None);
        // Two seals of one value differ (fresh nonce).
        assert_ne!(text, s.seal(Purpose::Session, &"hello", 100).unwrap());
    }

    #[test]
    fn an_altered_seal_does_not_open() {
        let s = sealer(1);
        let text = s.seal(Purpose::Login, &42u32, i64::MAX).unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
        for at in [0, NONCE_LEN, bytes.len() - 1] {
            bytes[at] ^= 1;
            let altered = URL_SAFE_NO_PAD.encode(&bytes);
            assert_eq!(s.open::<u32>(Purpose::Login, &altered, 0), None);
            bytes[at] ^= 1;
        }
        assert_eq!(s.open::<u32>(Purpose::Login, "", 0), None);
        assert_eq!(s.open::<u32>(Purpose::Login, "not base64 !", 0), None);
    }

    #[test]
    fn derived_keys_differ_by_purpose_and_master() {
        let a = sealer(1);
        let b = sealer(2);
        let tag = |key: &hmac::Key| hmac::sign(key, b"x").as_ref().to_vec();
        assert_ne!(tag(a.refresh_key()), tag(a.csrf_key()));
        assert_ne!(tag(a.refresh_key()), tag(b.refresh_key()));
        assert_eq!(tag(a.refresh_key()), tag(sealer(1).refresh_key()));
    }

    #[test]
    fn keys_decode_from_any_base64_of_32_bytes_or_more() {
        let raw = [9u8; 32];
        for text in [
            STANDARD.encode(raw),
            URL_SAFE_NO_PAD.encode(raw),
            format!("  {}\n", STANDARD.encode([0xfb; 40])),
        ] {
            assert!(decode_key(&text).is_some(), "{text}");
        }
        assert!(decode_key(&STANDARD.encode([1u8; 31])).is_none());
        assert!(decode_key("!!").is_none());
    }

    #[test]
    fn a_generated_key_file_is_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("cookie.key");
        let source = CookieKeySource::Generated(path.clone());
        let first = load_key(&source, None).unwrap();
        let again = load_key(&source, None).unwrap();
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(
            load_key(&source, None),
            Err(KeyError::Malformed(_))
        ));
    }
}
