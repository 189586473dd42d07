//! The proxy's own signing keys: Ed25519 (`EdDSA`) or P-256 (`ES256`), named by
//! their RFC 7638 thumbprint (`kid`), published at `jwks_uri`.
//!
//! Keys come from PKCS#8 PEM files the operator names (a Kubernetes Secret, say: the
//! first signs, the others only verify), or from a directory the proxy manages in
//! its data directory. There every key is a file `key-<unix time>.pem` written with
//! mode 0600: the newest signs; an older one still verifies the tokens it signed
//! until they have expired (its successor's age exceeds the token lifetime), and is
//! ignored after that. Rotation is `authmd-proxy tokens rotate-key`, which writes a
//! new key and prunes the ones no token can need any more.
//!
//! A running proxy follows the files ([`LiveKeys`]): each poll compares their names,
//! sizes, modification times and inodes (never their content) with what it last
//! read, and reads the keys again when they changed, so a rotation or an updated
//! Secret signs the next token without a restart.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::{ArcSwap, Guard};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use zeroize::Zeroizing;

/// Which algorithm new keys use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    /// Ed25519 signatures (`EdDSA`): small, fast, deterministic.
    EdDsa,
    /// ECDSA over P-256 with SHA-256 (`ES256`), for verifiers without Ed25519.
    Es256,
}

impl SigningAlgorithm {
    /// The JOSE algorithm.
    #[must_use]
    pub fn jose(self) -> Algorithm {
        match self {
            SigningAlgorithm::EdDsa => Algorithm::EdDSA,
            SigningAlgorithm::Es256 => Algorithm::ES256,
        }
    }

    /// The JOSE name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            SigningAlgorithm::EdDsa => "EdDSA",
            SigningAlgorithm::Es256 => "ES256",
        }
    }
}

/// Why keys could not be loaded or made. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: String,
        /// What failed.
        error: std::io::Error,
    },
    /// A file is not a PKCS#8 Ed25519 or P-256 private key in PEM.
    #[error("{0}: not a PKCS#8 PEM private key for Ed25519 or P-256")]
    NotAKey(String),
    /// The random source or the key library failed.
    #[error("cannot generate a signing key")]
    Generate,
}

/// One key pair.
pub struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: serde_json::Value,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a PKCS#8 private key (Ed25519 or P-256) from PEM text.
    pub fn from_pem(pem: &[u8], label: &str) -> Result<SigningKey, KeyError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem)
            .map_err(|_| KeyError::NotAKey(label.to_owned()))?;
        SigningKey::from_pkcs8(der.secret_pkcs8_der())
            .ok_or_else(|| KeyError::NotAKey(label.to_owned()))
    }

    /// Generates a key and returns it with its PEM encoding.
    /// (The DER is zeroed here; the PEM is the caller's to write out, and to zero.)
    pub fn generate(algorithm: SigningAlgorithm) -> Result<(SigningKey, String), KeyError> {
        let rng = SystemRandom::new();
        let der = Zeroizing::new(match algorithm {
            SigningAlgorithm::EdDsa => Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| KeyError::Generate)?
                .as_ref()
                .to_vec(),
            SigningAlgorithm::Es256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| KeyError::Generate)?
                    .as_ref()
                    .to_vec()
            }
        });
        let key = SigningKey::from_pkcs8(&der).ok_or(KeyError::Generate)?;
        Ok((key, pem("PRIVATE KEY", &der)))
    }

    fn from_pkcs8(der: &[u8]) -> Option<SigningKey> {
        if let Ok(pair) = Ed25519KeyPair::from_pkcs8(der) {
            let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
            // RFC 7638: the required members, in lexicographic order, no spaces.
            let kid = thumbprint(&format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#));
            let decoding = DecodingKey::from_ed_components(&x).ok()?;
            let jwk = serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "x": x,
                "kid": kid, "use": "sig", "alg": "EdDSA",
            });
            return Some(SigningKey {
                kid,
                algorithm: Algorithm::EdDSA,
                encoding: EncodingKey::from_ed_der(der),
                decoding,
                jwk,
            });
        }
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).ok()?;
        let point = pair.public_key().as_ref();
        // An uncompressed point: 0x04, then x and y, 32 bytes each.
        if point.len() != 65 || point[0] != 4 {
            return None;
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..]);
        let kid = thumbprint(&format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#
        ));
        let decoding = DecodingKey::from_ec_components(&x, &y).ok()?;
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": x, "y": y,
            "kid": kid, "use": "sig", "alg": "ES256",
        });
        Some(SigningKey {
            kid,
            algorithm: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(der),
            decoding,
            jwk,
        })
    }

    /// The key id.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm it signs with.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The public key, for verification.
    #[must_use]
    pub fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    /// Signs `claims` as a JWT of type `typ`.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, KeyError> {
        let mut header = Header::new(self.algorithm);
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|_| KeyError::Generate)
    }
}

/// The keys in use: the first signs, all verify.
#[derive(Debug)]
pub struct SigningKeys {
    keys: Vec<SigningKey>,
    jwks: bytes::Bytes,
}

impl SigningKeys {
    /// A set from keys, the signing one first. `None` when empty.
    #[must_use]
    pub fn new(keys: Vec<SigningKey>) -> Option<SigningKeys> {
        if keys.is_empty() {
            return None;
        }
        let document = serde_json::json!({
            "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>(),
        });
        Some(SigningKeys {
            jwks: serde_json::to_vec(&document).unwrap_or_default().into(),
            keys,
        })
    }

    /// Reads the operator's PEM files, the signing key first.
    pub fn from_files(files: &[PathBuf]) -> Result<SigningKeys, KeyError> {
        let mut keys = Vec::with_capacity(files.len());
        for file in files {
            let label = file.display().to_string();
            keys.push(SigningKey::from_pem(&read_private(file, &label)?, &label)?);
        }
        SigningKeys::new(keys).ok_or_else(|| KeyError::NotAKey("tokens.signing_keys".into()))
    }

    /// The keys of a managed directory that can still matter at `now` for tokens
    /// living `ttl` seconds, creating the directory and a first key when there is
    /// none.
    pub fn from_dir(
        dir: &Path,
        algorithm: SigningAlgorithm,
        ttl: i64,
        now: i64,
    ) -> Result<SigningKeys, KeyError> {
        let mut found = read_dir(dir)?;
        if found.is_empty() {
            write_key(dir, algorithm, now)?;
            found = read_dir(dir)?;
        }
        let keys = current(found, ttl, now)
            .into_iter()
            .map(|(_, key, _)| key)
            .collect();
        SigningKeys::new(keys).ok_or(KeyError::Generate)
    }

    /// Writes a new signing key into a managed directory and deletes the keys no
    /// token can need any more. Returns the new key's id and the ids deleted.
    pub fn rotate_dir(
        dir: &Path,
        algorithm: SigningAlgorithm,
        ttl: i64,
        now: i64,
    ) -> Result<(String, Vec<String>), KeyError> {
        let kid = write_key(dir, algorithm, now)?;
        let found = read_dir(dir)?;
        let keep: Vec<String> = current(found.clone(), ttl, now)
            .into_iter()
            .map(|(_, key, _)| key.kid)
            .collect();
        let mut pruned = Vec::new();
        for (_, key, path) in found {
            if !keep.contains(&key.kid) {
                std::fs::remove_file(&path).map_err(|error| KeyError::Io {
                    path: path.display().to_string(),
                    error,
                })?;
                pruned.push(key.kid);
            }
        }
        Ok((kid, pruned))
    }

    /// The key that signs.
    #[must_use]
    pub fn active(&self) -> &SigningKey {
        // `new` refuses an empty set.
        &self.keys[0]
    }

    /// The key named `kid`.
    #[must_use]
    pub fn find(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// Every key, signing one first.
    pub fn all(&self) -> impl Iterator<Item = &SigningKey> {
        self.keys.iter()
    }

    /// The JWKS document (`{"keys":[...]}`) of the public keys.
    #[must_use]
    pub fn jwks(&self) -> &bytes::Bytes {
        &self.jwks
    }
}

/// Where the proxy's own keys are read from, so that they can be read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The operator's PEM files (`tokens.signing_keys`), the signing key first.
    Files(Vec<PathBuf>),
    /// A managed directory: the newest `key-<unix time>.pem` signs.
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The algorithm of a first key made in an empty directory.
        algorithm: SigningAlgorithm,
        /// The tokens' lifetime, in seconds: how long an older key keeps verifying.
        ttl: i64,
    },
}

impl KeySource {
    /// Reads the keys ([`SigningKeys::from_files`] or [`SigningKeys::from_dir`]).
    pub fn load(&self, now: i64) -> Result<SigningKeys, KeyError> {
        match self {
            KeySource::Files(files) => SigningKeys::from_files(files),
            KeySource::Dir {
                dir,
                algorithm,
                ttl,
            } => SigningKeys::from_dir(dir, *algorithm, *ttl, now),
        }
    }

    /// What the key files look like now, without reading them.
    fn stamp(&self) -> Stamp {
        let files = match self {
            KeySource::Files(files) => files.clone(),
            KeySource::Dir { dir, .. } => {
                let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                    .into_iter()
                    .flatten()
                    .filter_map(|entry| entry.ok().map(|e| e.path()))
                    .filter(|path| created_of(path).is_some())
                    .collect();
                files.sort();
                files
            }
        };
        Stamp(
            files
                .into_iter()
                .map(|path| {
                    let seen = std::fs::metadata(&path).ok().map(|m| FileStamp {
                        len: m.len(),
                        modified: m.modified().ok(),
                        inode: inode(&m),
                    });
                    (path, seen)
                })
                .collect(),
        )
    }
}

/// Every key file's path and, when it can be read, its size, modification time and
/// inode: an edit in place, a new file renamed over it and a Kubernetes Secret's
/// symlink swap all change it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<(PathBuf, Option<FileStamp>)>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

#[cfg(unix)]
fn inode(metadata: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(metadata)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

/// The proxy's keys, following their files: read once, then read again by
/// [`LiveKeys::refresh`] whenever the files have changed. Tokens signed by a key that
/// is still in the files keep verifying across a refresh.
#[derive(Debug)]
pub struct LiveKeys {
    keys: ArcSwap<SigningKeys>,
    /// Where they come from; `None` for keys given in memory, never refreshed.
    source: Option<KeySource>,
    /// The files as they were when last read (or refused).
    seen: ArcSwap<Stamp>,
}

impl LiveKeys {
    /// Reads the keys of `source` at `now`.
    pub fn load(source: KeySource, now: i64) -> Result<LiveKeys, KeyError> {
        // Stamped before reading: a change made while reading is seen by the next
        // refresh.
        let seen = source.stamp();
        let keys = source.load(now)?;
        Ok(LiveKeys {
            keys: ArcSwap::from_pointee(keys),
            source: Some(source),
            seen: ArcSwap::from_pointee(seen),
        })
    }

    /// The keys in use.
    #[must_use]
    pub fn current(&self) -> Guard<Arc<SigningKeys>> {
        self.keys.load()
    }

    /// Reads the keys again if their files changed since they were last read; blocking
    /// file I/O, a directory listing and a `stat` per file when nothing changed.
    /// `Some(kid)` of the new signing key when the set changed; on an error the keys
    /// in use stay, and the same files are not tried again until they change.
    pub fn refresh(&self, now: i64) -> Result<Option<String>, KeyError> {
        let Some(source) = &self.source else {
            return Ok(None);
        };
        let stamp = source.stamp();
        if **self.seen.load() == stamp {
            return Ok(None);
        }
        self.seen.store(Arc::new(stamp));
        let keys = source.load(now)?;
        if keys.jwks == self.keys.load().jwks {
            // Touched, or rewritten with the same keys.
            return Ok(None);
        }
        let kid = keys.active().kid().to_owned();
        self.keys.store(Arc::new(keys));
        Ok(Some(kid))
    }
}

impl From<SigningKeys> for LiveKeys {
    /// Keys given in memory, that no refresh changes.
    fn from(keys: SigningKeys) -> LiveKeys {
        LiveKeys {
            keys: ArcSwap::from_pointee(keys),
            source: None,
            seen: ArcSwap::from_pointee(Stamp(Vec::new())),
        }
    }
}

impl Clone for SigningKey {
    fn clone(&self) -> Self {
        SigningKey {
            kid: self.kid.clone(),
            algorithm: self.algorithm,
            encoding: self.encoding.clone(),
            decoding: self.decoding.clone(),
            jwk: self.jwk.clone(),
        }
    }
}

/// The keys of a managed directory: (created, key, file), newest first.
fn read_dir(dir: &Path) -> Result<Vec<(i64, SigningKey, PathBuf)>, KeyError> {
    let io = |error| KeyError::Io {
        path: dir.display().to_string(),
        error,
    };
    create_private_dir(dir).map_err(io)?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let Some(created) = created_of(&path) else {
            continue;
        };
        let label = path.display().to_string();
        let key = SigningKey::from_pem(&read_private(&path, &label)?, &label)?;
        found.push((created, key, path));
    }
    found.sort_by_key(|k| std::cmp::Reverse(k.0));
    Ok(found)
}

/// The creation time a managed key file's name (`key-<unix time>.pem`) gives;
/// `None` for any other file.
fn created_of(path: &Path) -> Option<i64> {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("key-"))
        .and_then(|n| n.strip_suffix(".pem"))
        .and_then(|n| n.parse::<i64>().ok())
}

/// The newest key and every older one whose successor is younger than `ttl`
/// (plus a minute of clock skew): tokens it signed may still be alive.
fn current(
    found: Vec<(i64, SigningKey, PathBuf)>,
    ttl: i64,
    now: i64,
) -> Vec<(i64, SigningKey, PathBuf)> {
    let mut keep = Vec::new();
    let mut successor: Option<i64> = None;
    for (created, key, path) in found {
        if successor.is_none_or(|next| now - next <= ttl + 60) {
            keep.push((created, key, path));
        }
        successor = Some(created);
    }
    keep
}

/// Reads a private key file (named `label` in errors); its bytes are zeroed when
/// dropped.
fn read_private(path: &Path, label: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|error| KeyError::Io {
            path: label.to_owned(),
            error,
        })
}

/// Generates a key and writes it as `key-<now>.pem` (mode 0600), durably.
fn write_key(dir: &Path, algorithm: SigningAlgorithm, now: i64) -> Result<String, KeyError> {
    let (key, pem) = SigningKey::generate(algorithm)?;
    let pem = Zeroizing::new(pem);
    create_private_dir(dir).map_err(|error| KeyError::Io {
        path: dir.display().to_string(),
        error,
    })?;
    // Two rotations within a second get distinct, still ordered names.
    let mut created = now;
    let mut path = dir.join(format!("key-{created}.pem"));
    while path.exists() {
        created += 1;
        path = dir.join(format!("key-{created}.pem"));
    }
    let io = |error| KeyError::Io {
        path: path.display().to_string(),
        error,
    };
    let partial = dir.join(format!(".key-{created}.pem.partial"));
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&partial).map_err(io)?;
        file.write_all(pem.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&partial, &path).map_err(io)?;
    // The rename is durable once the directory is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(key.kid)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// RFC 7638 thumbprint: base64url of the SHA-256 of the canonical JWK.
fn thumbprint(canonical: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// PEM armour of DER bytes.
fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_pem_and_sign_verifiably() {
        for algorithm in [SigningAlgorithm::EdDsa, SigningAlgorithm::Es256] {
            let (key, pem) = SigningKey::generate(algorithm).unwrap();
            let again = SigningKey::from_pem(pem.as_bytes(), "test").unwrap();
            assert_eq!(key.kid(), again.kid());
            assert_eq!(key.algorithm(), algorithm.jose());
            let token = key
                .sign("at+jwt", &serde_json::json!({"sub": "x"}))
                .unwrap();
            let mut validation = jsonwebtoken::Validation::new(algorithm.jose());
            validation.required_spec_claims.clear();
            validation.validate_exp = false;
            let data =
                jsonwebtoken::decode::<serde_json::Value>(&token, again.decoding(), &validation)
                    .unwrap();
            assert_eq!(data.claims["sub"], "x");
            assert_eq!(data.header.kid.as_deref(), Some(key.kid()));
        }
    }

    #[test]
    fn the_kid_is_the_rfc_7638_thumbprint() {
        // RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
        let kid = thumbprint(
            r#"{"crv":"Ed25519","kty":"OKP","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
        );
        assert_eq!(kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn a_managed_directory_rotates_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let ttl = 3600;
        let first = SigningKeys::from_dir(dir.path(), SigningAlgorithm::EdDsa, ttl, 1_000)
            .unwrap()
            .active()
            .kid()
            .to_owned();
        // Loading again finds the same key rather than making another.
        let again = SigningKeys::from_dir(dir.path(), SigningAlgorithm::EdDsa, ttl, 1_001).unwrap();
        assert_eq!(again.active().kid(), first);

        let (second, pruned) =
            SigningKeys::rotate_dir(dir.path(), SigningAlgorithm::EdDsa, ttl, 2_000).unwrap();
        assert!(pruned.is_empty());
        let keys = SigningKeys::from_dir(dir.path(), SigningAlgorithm::EdDsa, ttl, 2_000).unwrap();
        assert_eq!(keys.active().kid(), second);
        assert!(keys.find(&first).is_some(), "the old key still verifies");

        // Once every token the old key signed has expired, it is no longer loaded,
        // and the next rotation deletes it.
        let later = 2_000 + ttl + 61;
        let keys = SigningKeys::from_dir(dir.path(), SigningAlgorithm::EdDsa, ttl, later).unwrap();
        assert!(keys.find(&first).is_none());
        let (_, pruned) =
            SigningKeys::rotate_dir(dir.path(), SigningAlgorithm::EdDsa, ttl, later).unwrap();
        assert_eq!(pruned, vec![first]);
        #[cfg(unix)]
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            use std::os::unix::fs::PermissionsExt;
            let mode = entry.unwrap().metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "key files are private");
        }
    }

    #[test]
    fn live_keys_follow_a_rotation_and_ignore_what_is_no_change() {
        let dir = tempfile::tempdir().unwrap();
        let source = KeySource::Dir {
            dir: dir.path().to_owned(),
            algorithm: SigningAlgorithm::EdDsa,
            ttl: 3600,
        };
        let live = LiveKeys::load(source, 1_000).unwrap();
        let first = live.current().active().kid().to_owned();
        // The first key was made by the load itself: the same keys, no change.
        assert_eq!(live.refresh(1_000).unwrap(), None);
        assert_eq!(live.refresh(1_001).unwrap(), None);

        let (second, _) =
            SigningKeys::rotate_dir(dir.path(), SigningAlgorithm::EdDsa, 3600, 2_000).unwrap();
        assert_eq!(live.refresh(2_000).unwrap(), Some(second.clone()));
        assert_eq!(live.current().active().kid(), second);
        assert!(
            live.current().find(&first).is_some(),
            "the old key verifies"
        );
        assert_eq!(live.refresh(2_001).unwrap(), None);

        // A file that is not a managed key is not looked at.
        std::fs::write(dir.path().join(".key-3000.pem.partial"), "half").unwrap();
        assert_eq!(live.refresh(3_000).unwrap(), None);
    }

    #[test]
    fn live_keys_follow_replaced_files_and_keep_theirs_when_the_new_ones_are_bad() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("signing.pem");
        let write = |text: &str| {
            let partial = dir.path().join("signing.partial");
            std::fs::write(&partial, text).unwrap();
            std::fs::rename(&partial, &file).unwrap();
        };
        let (first, pem) = SigningKey::generate(SigningAlgorithm::EdDsa).unwrap();
        write(&pem);
        let live = LiveKeys::load(KeySource::Files(vec![file.clone()]), 1_000).unwrap();
        assert_eq!(live.current().active().kid(), first.kid());

        let error = {
            write("-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n");
            live.refresh(1_001).unwrap_err()
        };
        assert!(matches!(error, KeyError::NotAKey(_)), "{error}");
        assert_eq!(live.current().active().kid(), first.kid(), "the keys stay");
        // Refused once: not read again until the file changes again.
        assert_eq!(live.refresh(1_002).unwrap(), None);

        let (second, pem) = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
        write(&pem);
        assert_eq!(live.refresh(1_003).unwrap().as_deref(), Some(second.kid()));
        assert_eq!(live.current().active().kid(), second.kid());
    }

    #[test]
    fn keys_given_in_memory_are_never_refreshed() {
        let (key, _) = SigningKey::generate(SigningAlgorithm::EdDsa).unwrap();
        let live = LiveKeys::from(SigningKeys::new(vec![key]).unwrap());
        assert_eq!(live.refresh(1).unwrap(), None);
    }

    #[test]
    fn a_file_that_is_not_a_key_is_named() {
        let error = SigningKey::from_pem(
            b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
            "x.pem",
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "x.pem: not a PKCS#8 PEM private key for Ed25519 or P-256"
        );
    }
}
