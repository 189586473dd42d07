//! Fixtures shared by the fuzz targets of authmd-proxy, built once per process.
//!
//! Everything here goes through the library's public API, as `benches/hot_path.rs`
//! does: the validated [`Config`] of `config.example.yaml`, a [`KeyTable`] holding its
//! two example keys, and a [`Tokens`] verifier that signs with a fixed Ed25519 key
//! (derived from [`SIGNING_SEED`], a constant that is obviously not a secret), so that
//! tokens written into the seed corpus verify in every later process.
//!
//! [`Fixture::signed_by_harness`] is the oracle for "no forged token is accepted": it
//! checks a token's Ed25519 signature over its signing input with aws-lc-rs directly,
//! not through `jsonwebtoken`. Only this harness holds the private key, so a token
//! that passes it was signed here.
//!
//! [`agent_bodies`] is the oracle of the lifecycle body targets.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "fuzz fixtures: a broken fixture must stop the run loudly"
)]

pub mod agent_bodies;

use std::sync::{Arc, OnceLock};

use authmd_proxy::config::{Config, Overrides};
use authmd_proxy::credentials::KeyTable;
use authmd_proxy::scope::ScopeHeaders;
use authmd_proxy::tier::TierId;
use authmd_proxy::tokens::signing::{SigningKey, SigningKeys};
use authmd_proxy::protocol::ACCESS_TOKEN_TYPE;
use authmd_proxy::tokens::{Issue, OwnClaims, Tokens};
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};

/// The example configuration, as the README and the benches use it.
pub const EXAMPLE: &str = include_str!("../../config.example.yaml");
/// The secret of `example-writer` (offers:read, offers:write; tier free).
pub const WRITER_KEY: &str = "ak_live_ELG2kKEXEd3Ty98ZgEKCTBzmD28tyKbnV2vJrzG";
/// The secret of `example-reader` (offers:read; tier free).
pub const READER_KEY: &str = "ak_live_DDcBQJSrJbWiKASfUDw4yG5dJy5usFd9Y1ss7XU";
/// "Now" for the `jwt` target: 2096-10-02. Tokens issued at this time stay valid
/// for `jsonwebtoken`'s own `exp` check (against the real clock) for decades, so
/// seed tokens keep reaching the success path.
pub const FUTURE: i64 = 4_000_000_000;
/// The seed of the harness's Ed25519 signing key. Not a secret: it only signs the
/// tokens of the fuzz corpus.
pub const SIGNING_SEED: [u8; 32] = *b"authmd-proxy fuzz harness only!!";
/// In a header value, replaced by [`Fixture::fresh_token`] (a token issued at the
/// real time the process started), so the corpus can reach token success paths.
pub const TOKEN_MARKER: &[u8] = b"{token}";

/// The validated example config.
#[must_use]
pub fn example_config() -> Config {
    config_from(EXAMPLE)
}

/// A config from YAML text that must be valid.
#[must_use]
pub fn config_from(text: &str) -> Config {
    Config::from_yaml_str(text, "config.example.yaml", &Overrides::default(), &|_| {
        None
    })
    .unwrap_or_else(|e| panic!("the fixture config is invalid:\n{e}"))
}

/// The PKCS#8 DER of the harness's Ed25519 key (RFC 8410 `OneAsymmetricKey`, v1).
#[must_use]
pub fn signing_pkcs8() -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&SIGNING_SEED);
    der
}

/// The same key in PEM, as `tokens.signing_keys` files hold it.
#[must_use]
pub fn signing_pem() -> String {
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(signing_pkcs8())
    )
}

/// The shared state of a fuzz process.
#[derive(Debug)]
pub struct Fixture {
    /// `config.example.yaml`, validated.
    pub config: Config,
    /// The example keys.
    pub keys: Arc<KeyTable>,
    /// The verifier (and issuer) of access tokens, signing with the harness key.
    pub tokens: Tokens,
    /// The `kid` of the harness key.
    pub kid: String,
    /// The raw Ed25519 public key.
    public_key: Vec<u8>,
    /// A token for `example-writer` issued by [`Fixture::tokens`] at the real time
    /// this process started (valid for the config's `tokens.ttl`, one hour).
    pub fresh_token: String,
}

/// The fixture of this process.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build)
}

fn build() -> Fixture {
    let config = example_config();
    let keys = Arc::new(KeyTable::default());
    for entry in &config.keys {
        keys.insert_static(entry.clone());
    }
    let signer = SigningKey::from_pem(signing_pem().as_bytes(), "fuzz harness key")
        .expect("the harness key parses");
    let kid = signer.kid().to_owned();
    let own = SigningKeys::new(vec![signer]).expect("one key");
    let jwks: serde_json::Value = serde_json::from_slice(own.jwks()).expect("JWKS is JSON");
    let public_key = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().expect("an OKP key has x"))
        .expect("x is base64url");
    let headers = Arc::new(ScopeHeaders::new(config.scopes.clone()));
    let tokens = Tokens::new(config.own_tokens(), Some(own.into()), &[], config.tiers.clone(), headers);
    let now = authmd_proxy::clock::unix_now();
    let fresh_token = issue_writer(&config, &tokens, now);
    let fixture = Fixture {
        config,
        keys,
        tokens,
        kid,
        public_key,
        fresh_token,
    };
    // The harness must be able to reach the success paths it guards.
    fixture
        .tokens
        .verify(&fixture.fresh_token, now)
        .expect("a freshly issued token verifies");
    assert!(fixture.signed_by_harness(&fixture.fresh_token));
    fixture
}

/// Issues a token for `example-writer` at `at`, the way the token endpoint does
/// for a client_credentials grant with that key.
pub fn issue_writer(config: &Config, tokens: &Tokens, at: i64) -> String {
    let scopes = config
        .scopes
        .granted(["offers:read", "offers:write"])
        .expect("example scopes");
    let issue = Issue {
        subject: "key:example-writer",
        audience: &config.public_url,
        scopes,
        tier: TierId(1),
        client_id: Some("example-writer"),
        family: None,
        operator: None,
    };
    tokens.issue(&issue, at).expect("the harness signs").token
}

impl Fixture {
    /// True when `token`'s last `.`-separated part is a valid Ed25519 signature of
    /// everything before it under the harness key (checked with aws-lc-rs, not
    /// through the JWT library under test).
    #[must_use]
    pub fn signed_by_harness(&self, token: &str) -> bool {
        let Some((input, signature)) = token.rsplit_once('.') else {
            return false;
        };
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(input.as_bytes(), &signature)
            .is_ok()
    }

    /// Signs `header.claims` (both JSON) with the harness key, whatever they say;
    /// `sign: false` leaves the signature empty (as `alg: none` does).
    #[must_use]
    pub fn craft(
        &self,
        header: &serde_json::Value,
        claims: &serde_json::Value,
        sign: bool,
    ) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = if sign {
            let pair = Ed25519KeyPair::from_pkcs8(&signing_pkcs8()).expect("harness key");
            URL_SAFE_NO_PAD.encode(pair.sign(input.as_bytes()).as_ref())
        } else {
            String::new()
        };
        format!("{input}.{signature}")
    }

    /// The seed tokens of the `jwt` target: one of each outcome of
    /// [`Tokens::verify`] at [`FUTURE`], named for their file.
    #[must_use]
    pub fn seed_tokens(&self) -> Vec<(&'static str, String)> {
        use serde_json::json;
        let config = &self.config;
        let origin = config.public_url.clone();
        let writer = issue_writer(config, &self.tokens, FUTURE);
        let issue_as = |subject: &str, audience: &str, scopes: &[&str], tier: u8, at: i64| {
            let issue = Issue {
                subject,
                audience,
                scopes: config
                    .scopes
                    .granted(scopes.iter().copied())
                    .expect("scopes"),
                tier: TierId(tier),
                client_id: None,
                family: None,
                operator: None,
            };
            self.tokens.issue(&issue, at).expect("signs").token
        };
        let claims = |iss: &str, aud: &str| OwnClaims {
            iss: iss.to_owned(),
            sub: "key:example-writer".into(),
            aud: aud.to_owned(),
            scope: "offers:read offers:write".into(),
            exp: FUTURE + 3600,
            iat: FUTURE,
            jti: "at_fuzzseed".into(),
            client_id: Some("example-writer".into()),
            tier: "free".into(),
            operator: None,
        };
        let good_claims = serde_json::to_value(claims(&origin, &origin)).expect("claims");
        let header = |alg: &str, typ: &str, kid: &str| json!({"alg": alg, "typ": typ, "kid": kid});
        let hs256 = {
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            h.typ = Some(ACCESS_TOKEN_TYPE.into());
            h.kid = Some(self.kid.clone());
            jsonwebtoken::encode(
                &h,
                &good_claims,
                &jsonwebtoken::EncodingKey::from_secret(&self.public_key),
            )
            .expect("HS256 signs")
        };
        let mut missing_exp = good_claims.clone();
        missing_exp.as_object_mut().expect("object").remove("exp");
        let mut string_exp = good_claims.clone();
        string_exp["exp"] = json!("4000003600");
        vec![
            ("issued-writer.jwt", writer.clone()),
            (
                "issued-anonymous-mcp.jwt",
                issue_as(
                    "anonymous:0123456789abcdef",
                    &format!("{origin}/mcp"),
                    &["offers:read"],
                    0,
                    FUTURE,
                ),
            ),
            (
                "issued-expired.jwt",
                issue_as(
                    "key:example-reader",
                    &origin,
                    &["offers:read"],
                    1,
                    FUTURE - 7200,
                ),
            ),
            (
                "issued-not-yet-valid.jwt",
                issue_as(
                    "key:example-reader",
                    &origin,
                    &["offers:read"],
                    1,
                    FUTURE + 600,
                ),
            ),
            (
                "issued-wrong-audience.jwt",
                issue_as(
                    "key:example-writer",
                    "https://elsewhere.example",
                    &["offers:read"],
                    1,
                    FUTURE,
                ),
            ),
            (
                "wrong-issuer.jwt",
                self.craft(
                    &header("EdDSA", ACCESS_TOKEN_TYPE, &self.kid),
                    &serde_json::to_value(claims("https://evil.example", &origin)).expect("claims"),
                    true,
                ),
            ),
            (
                "wrong-type.jwt",
                self.craft(&header("EdDSA", "JWT", &self.kid), &good_claims, true),
            ),
            (
                "unknown-kid.jwt",
                self.craft(
                    &header("EdDSA", ACCESS_TOKEN_TYPE, "not-a-kid"),
                    &good_claims,
                    true,
                ),
            ),
            (
                "alg-es256-header.jwt",
                self.craft(
                    &header("ES256", ACCESS_TOKEN_TYPE, &self.kid),
                    &good_claims,
                    true,
                ),
            ),
            (
                "alg-none.jwt",
                self.craft(
                    &json!({"alg": "none", "typ": ACCESS_TOKEN_TYPE}),
                    &good_claims,
                    false,
                ),
            ),
            ("alg-hs256-public-key-as-secret.jwt", hs256),
            (
                "missing-exp.jwt",
                self.craft(
                    &header("EdDSA", ACCESS_TOKEN_TYPE, &self.kid),
                    &missing_exp,
                    true,
                ),
            ),
            (
                "string-exp.jwt",
                self.craft(
                    &header("EdDSA", ACCESS_TOKEN_TYPE, &self.kid),
                    &string_exp,
                    true,
                ),
            ),
            ("tampered-signature.jwt", {
                // One signature character changed (not the last, whose low bits
                // must stay zero for the base64url to decode).
                let mut bytes = writer.into_bytes();
                let at = bytes.len() - 10;
                bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
                String::from_utf8(bytes).expect("ASCII")
            }),
        ]
    }
}

/// Replaces every [`TOKEN_MARKER`] in `value` with `token`.
fn substitute(value: &[u8], token: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest
        .windows(TOKEN_MARKER.len())
        .position(|w| w == TOKEN_MARKER)
    {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(token.as_bytes());
        rest = &rest[at + TOKEN_MARKER.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Header fields from `name: value` lines (`\n` or `\r\n`); lines whose name or
/// value `http` refuses are skipped, repeated names are appended, and
/// [`TOKEN_MARKER`] in a value becomes `token`.
#[must_use]
pub fn header_lines<'a>(lines: impl Iterator<Item = &'a [u8]>, token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let Ok(name) = HeaderName::from_bytes(line[..colon].trim_ascii()) else {
            continue;
        };
        let value = substitute(line[colon + 1..].trim_ascii_start(), token);
        let Ok(value) = HeaderValue::from_bytes(&value) else {
            continue;
        };
        headers.append(name, value);
    }
    headers
}

/// A request head: `METHOD target` on the first line (anything after a second
/// space, such as `HTTP/1.1`, is ignored), then header lines as [`header_lines`]
/// reads them. `None` when the method or the target does not parse.
#[must_use]
pub fn request_head(data: &[u8], token: &str) -> Option<Request<()>> {
    let mut lines = data.split(|b| *b == b'\n');
    let first = lines.next()?;
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let mut parts = first.splitn(3, |b| *b == b' ');
    let method = Method::from_bytes(parts.next()?).ok()?;
    let uri = Uri::try_from(parts.next()?).ok()?;
    let mut request = Request::builder().method(method).uri(uri).body(()).ok()?;
    *request.headers_mut() = header_lines(lines, token);
    Some(request)
}
