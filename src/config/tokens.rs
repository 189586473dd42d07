//! The `tokens:` and `trusted_issuers:` sections: the proxy as a small OAuth
//! authorization server, and the issuers whose tokens and identity assertions it
//! accepts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;

use super::load::Loader;
use super::locate::join;
use super::raw;
use super::values::{DAY, SECOND};
use crate::scope::{ScopeRegistry, ScopeSet};
use crate::store::StoreSettings;
use crate::tier::{TierId, Tiers};
use crate::tokens::remote::{REFETCH_INTERVAL, parse_algorithm};
use crate::tokens::signing::SigningAlgorithm;
pub use crate::tokens::{TrustedIssuer, VerifiedEmail};

/// Longest access-token lifetime the config accepts.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// `tokens:`.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// The token endpoint issues tokens (otherwise every grant is
    /// `unsupported_grant_type`).
    pub enabled: bool,
    /// Algorithm of generated signing keys.
    pub algorithm: SigningAlgorithm,
    /// Access-token lifetime.
    pub ttl: Duration,
    /// Where the signing keys are.
    pub signing: SigningSource,
    /// `client_credentials` without client authentication, when offered.
    pub anonymous: Option<AnonymousGrant>,
    /// `client_credentials` authenticated with an API key as the client secret.
    pub api_keys: bool,
    /// The jwt-bearer grant (RFC 7523) with ID-JAG assertions.
    pub jwt_bearer: bool,
}

/// Where the signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningSource {
    /// PEM files the operator manages; the first signs.
    Files(Vec<PathBuf>),
    /// A directory the proxy manages (generated keys, `tokens rotate-key`).
    Dir(PathBuf),
}

/// `tokens.anonymous:`.
#[derive(Debug, Clone, Copy)]
pub struct AnonymousGrant {
    /// Tier of the tokens.
    pub tier: TierId,
    /// Most scopes a token may have (the default grant).
    pub scopes: ScopeSet,
    /// Tokens per client address per hour (0: no limit).
    pub per_hour: u32,
}

impl Loader {
    pub(super) fn trusted_issuers(
        &mut self,
        raws: Vec<(String, raw::RawTrustedIssuer)>,
        registry: &ScopeRegistry,
        tiers: &Tiers,
        public_url: Option<&str>,
    ) -> Vec<TrustedIssuer> {
        let mut issuers: Vec<TrustedIssuer> = Vec::new();
        for (path, raw) in raws {
            let absolute = |text: &str| {
                text.parse::<Uri>().ok().filter(|u| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
                })
            };
            let Some(issuer_uri) = absolute(&raw.issuer) else {
                self.error(
                    &join(&path, "issuer"),
                    format!("`{}` is not an absolute URL", raw.issuer),
                );
                continue;
            };
            let Some(jwks_uri) = absolute(&raw.jwks_uri) else {
                self.error(
                    &join(&path, "jwks_uri"),
                    format!("`{}` is not an absolute URL", raw.jwks_uri),
                );
                continue;
            };
            if issuers.iter().any(|t| t.issuer == raw.issuer) {
                self.error(
                    &join(&path, "issuer"),
                    format!("`{}` is listed twice", raw.issuer),
                );
                continue;
            }
            if public_url.is_some_and(|own| own == raw.issuer.trim_end_matches('/')) {
                self.error(
                    &join(&path, "issuer"),
                    "this proxy is its own issuer; list only other issuers here",
                );
                continue;
            }
            let mut algorithms = Vec::new();
            let names = raw.algorithms.unwrap_or_else(|| {
                ["EdDSA", "ES256", "ES384", "RS256", "PS256"]
                    .map(String::from)
                    .to_vec()
            });
            for (i, name) in names.iter().enumerate() {
                match parse_algorithm(name) {
                    Some(alg) => algorithms.push(alg),
                    None => self.error(
                        &format!("{path}.algorithms[{i}]"),
                        format!("`{name}` is not an accepted signature algorithm (EdDSA, ES256, ES384, RS256, RS384, RS512, PS256, PS384, PS512; HMAC and `none` are never accepted)"),
                    ),
                }
            }
            let audiences = raw.audiences.unwrap_or_default();
            let mut scope_map = Vec::new();
            for (from, to) in &raw.scope_map {
                let at = join(&join(&path, "scope_map"), from);
                if let Some(set) = self.scope_list(Some(to), &at, registry) {
                    scope_map.push((from.clone(), set));
                }
            }
            let scopes = self
                .scope_list(Some(&raw.scopes), &join(&path, "scopes"), registry)
                .unwrap_or(ScopeSet::EMPTY);
            let tier = raw
                .tier
                .as_deref()
                .map(|name| self.keyed_tier(Some(name), &join(&path, "tier"), tiers, TierId(1)));
            let verified_email = raw
                .verified_email
                .map(|v| self.verified_email(v, &join(&path, "verified_email")));
            // An issuer listed only for `verified_email` is not trusted for ID-JAGs
            // unless it says so.
            let identity_assertions = raw
                .identity_assertions
                .unwrap_or(!raw.access_tokens && verified_email.is_none());
            if !identity_assertions && !raw.access_tokens && verified_email.is_none() {
                self.error(
                    &path,
                    "trusts the issuer for nothing: set `access_tokens: true`, `identity_assertions: true` or `verified_email:`",
                );
            }
            issuers.push(TrustedIssuer {
                issuer: raw.issuer.clone(),
                name: raw
                    .name
                    .unwrap_or_else(|| issuer_uri.host().unwrap_or(raw.issuer.as_str()).to_owned()),
                jwks_uri,
                identity_assertions,
                access_tokens: raw.access_tokens,
                algorithms,
                audiences,
                token_types: raw
                    .token_types
                    .map(|t| t.iter().map(|t| t.to_ascii_lowercase()).collect()),
                scope_claim: raw.scope_claim.unwrap_or_else(|| "scope".into()),
                scope_map,
                scopes,
                tier,
                refetch_interval: self.duration(
                    raw.refetch_interval,
                    &join(&path, "refetch_interval"),
                    REFETCH_INTERVAL,
                    Duration::ZERO..=DAY,
                ),
                verified_email,
            });
        }
        issuers
    }

    /// `trusted_issuers[].verified_email` at `path`.
    fn verified_email(&mut self, raw: raw::RawVerifiedEmail, path: &str) -> VerifiedEmail {
        let client_id = raw.client_id.trim().to_owned();
        if client_id.is_empty() {
            self.error(
                &join(path, "client_id"),
                "must name the client id this API is registered with at the issuer: an `id_token`'s `aud` must be it",
            );
        }
        let mut email_domains: Vec<String> = Vec::new();
        for (i, domain) in raw.email_domains.iter().enumerate() {
            let lower = domain.trim().to_ascii_lowercase();
            let plain = !lower.is_empty()
                && lower.split('.').all(|label| {
                    !label.is_empty()
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !plain {
                self.error(
                    &format!("{}[{i}]", join(path, "email_domains")),
                    format!("`{domain}` is not a domain name (write `example.com`: no `@`, no wildcard; subdomains are listed one by one)"),
                );
            } else if !email_domains.contains(&lower) {
                email_domains.push(lower);
            }
        }
        VerifiedEmail {
            client_id,
            email_domains,
            max_age: self.duration(
                raw.max_age,
                &join(path, "max_age"),
                Duration::from_secs(3600),
                SECOND * 10..=DAY,
            ),
        }
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the sections it is checked against, each one argument"
    )]
    pub(super) fn tokens(
        &mut self,
        raw: Option<raw::RawTokens>,
        registry: &ScopeRegistry,
        tiers: &Tiers,
        issuers: &[TrustedIssuer],
        store: &StoreSettings,
        data_dir: &Path,
    ) -> TokenSettings {
        let present = raw.is_some();
        let raw = raw.unwrap_or_default();
        let enabled = raw.enabled.unwrap_or(present);
        let algorithm = match raw.algorithm.as_deref() {
            None | Some("EdDSA") => SigningAlgorithm::EdDsa,
            Some("ES256") => SigningAlgorithm::Es256,
            Some(other) => {
                self.error(
                    "tokens.algorithm",
                    format!("`{other}` is not `EdDSA` or `ES256`"),
                );
                SigningAlgorithm::EdDsa
            }
        };
        let ttl = self.duration(
            raw.ttl,
            "tokens.ttl",
            Duration::from_secs(3600),
            SECOND * 10..=MAX_TTL,
        );
        let signing = if raw.signing_keys.is_empty() {
            if enabled && matches!(store, StoreSettings::Postgres { .. }) {
                self.error(
                    "tokens.signing_keys",
                    "with `store.kind: postgres` the replicas must share their signing keys: name PEM files here (a mounted secret); `authmd-proxy tokens generate-key` writes one",
                );
            }
            SigningSource::Dir(data_dir.join("signing-keys"))
        } else {
            SigningSource::Files(raw.signing_keys.iter().map(|f| self.resolve(f)).collect())
        };
        let anonymous = raw.anonymous.map(|a| {
            let tier = match a.tier.as_deref() {
                None => TierId::ANONYMOUS,
                Some(name) => tiers.find(name).unwrap_or_else(|| {
                    self.unknown_tier("tokens.anonymous.tier", name, tiers);
                    TierId::ANONYMOUS
                }),
            };
            let most = tiers.get(tier).scopes;
            let scopes =
                match self.scope_list(a.scopes.as_deref(), "tokens.anonymous.scopes", registry) {
                    Some(set) if !set.is_subset_of(&most) => {
                        self.error(
                            "tokens.anonymous.scopes",
                            format!(
                                "must be within the scopes of the `{}` tier",
                                tiers.get(tier).name
                            ),
                        );
                        most
                    }
                    Some(set) => set,
                    None => most,
                };
            AnonymousGrant {
                tier,
                scopes,
                per_hour: a.per_hour.unwrap_or(60),
            }
        });
        let jwt_bearer = raw
            .jwt_bearer
            .unwrap_or_else(|| issuers.iter().any(|i| i.identity_assertions));
        if jwt_bearer
            && raw.jwt_bearer == Some(true)
            && !issuers.iter().any(|i| i.identity_assertions)
        {
            self.error(
                "tokens.jwt_bearer",
                "needs a trusted issuer with `identity_assertions: true`",
            );
        }
        TokenSettings {
            enabled,
            algorithm,
            ttl,
            signing,
            anonymous,
            api_keys: raw.api_keys.unwrap_or(true),
            jwt_bearer,
        }
    }
}
