//! The `store:`, `registration:` and `key_management:` sections: where issued
//! credentials live and who may get, claim and manage them.

use std::path::PathBuf;
use std::time::Duration;

use super::load::Loader;
use super::raw;
use super::values::{DAY, HOUR, MILLISECOND, MINUTE};
use crate::credentials::CredentialRules;
use crate::login::TierMatch;
use crate::scope::{ScopeRegistry, ScopeSet};
use crate::store::StoreSettings;
use crate::store::postgres::{self, PostgresTls};
use crate::tier::{TierId, Tiers};
use crate::tls::ServerCheck;

/// The credential lifecycle settings.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    /// Where issued keys live.
    pub store: StoreSettings,
    /// Agent registration.
    pub registration: Registration,
    /// The key endpoints.
    pub keys: KeyManagement,
}

impl Lifecycle {
    /// True when the proxy issues credentials (a store and a key prefix exist).
    #[must_use]
    pub fn issues_keys(&self) -> bool {
        self.store != StoreSettings::None && !self.keys.prefix.is_empty()
    }

    /// True when agents get or manage keys by themselves (registration or key
    /// management); only then can they revoke a key themselves too. Otherwise keys
    /// are the operator's to issue and revoke.
    #[must_use]
    pub fn self_service(&self) -> bool {
        self.issues_keys() && (self.registration.enabled || self.keys.enabled)
    }

    /// True when agents can register (and claim) by themselves.
    #[must_use]
    pub fn registers(&self) -> bool {
        self.issues_keys() && self.registration.enabled
    }
}

/// `registration:`.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The register and claim endpoints are served (`false`: keys come only from
    /// the operator and key management).
    pub enabled: bool,
    /// Anonymous registration is offered.
    pub anonymous: bool,
    /// Tier of an anonymous registration's key until it is claimed.
    pub tier: TierId,
    /// Its scopes until claimed.
    pub scopes: ScopeSet,
    /// Tier after a claim, and of identity-assertion registrations.
    pub claimed_tier: TierId,
    /// Scopes after a claim.
    pub claimed_scopes: ScopeSet,
    /// How long a registration can be claimed (and its claim token works).
    pub claim_ttl: Duration,
    /// A claim must present an identity assertion. Otherwise the claim token alone
    /// is enough: the claim URL is meant for the operator, but the agent holds the
    /// token too and can claim itself (`check` warns).
    pub require_identity_to_claim: bool,
    /// Anonymous registrations per client address per hour.
    pub per_hour: u32,
    /// Identity-assertion registrations per client address per hour.
    pub identity_per_hour: u32,
    /// Also accept assertions whose `aud` is the resource URL (WorkOS-style), not
    /// only the authorization server's issuer.
    pub accept_resource_audience: bool,
    /// The registration answer also carries an access token minted from the new key
    /// (Toromarket-style "a token back immediately"); needs `tokens:`.
    pub access_token: bool,
    /// `registration.claim`: what proves who claims, and who may.
    pub claim: ClaimRules,
    /// When an anonymous registration's key secret is handed out.
    pub issue_credential: IssueCredential,
}

/// `registration.claim:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRules {
    /// An identity assertion (ID-JAG) from a trusted issuer may prove who claims.
    pub identity_assertion: bool,
    /// A person signed in through `login.providers` may claim on the claim page.
    pub sign_in: bool,
    /// Who may claim (a signed-in person, or an assertion's verified email): one of
    /// these must match; none: anyone who proved who they are.
    pub allowed: Vec<TierMatch>,
    /// A signed-in person's confirmation does not claim yet: the page shows a
    /// short code, and the agent finishes the claim with it (`POST claim` with
    /// `user_code`).
    pub user_code: bool,
    /// How long such a code works.
    pub user_code_ttl: Duration,
    /// With `require_identity_to_claim: false`, `POST claim {registration_id}`
    /// claims as the claim token does (GetScaled's shape): the agent holds both.
    pub by_registration_id: bool,
}

/// How long a claim page's `user_code` works, unless configured.
const USER_CODE_TTL: Duration = Duration::from_secs(600);

impl Default for ClaimRules {
    fn default() -> Self {
        ClaimRules {
            identity_assertion: true,
            sign_in: true,
            allowed: Vec::new(),
            user_code: false,
            user_code_ttl: USER_CODE_TTL,
            by_registration_id: false,
        }
    }
}

/// `registration.issue_credential`: when an anonymous registration's key secret is
/// handed out. Registrations with an identity assertion are claimed at once and
/// always get theirs in the registration answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueCredential {
    /// In the registration answer (`at_registration`, the default).
    AtRegistration,
    /// In the claim answer (`at_claim`, GetScaled-style): until the claim the key
    /// exists with a secret nobody was given, so it cannot be used.
    AtClaim,
}

/// How an anonymous registration is claimed on this deployment (what its answer
/// offers, what auth.md says, what `check` warns about).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claims {
    /// There is nothing to claim: no registration, or no anonymous one.
    Nothing,
    /// A claim needs an identity assertion, and no trusted issuer carries one: no
    /// claim can be completed, so none is offered.
    Unavailable,
    /// The claim token alone claims (`require_identity_to_claim: false`). It is
    /// meant for the operator, but the agent holds it too: an agent can claim
    /// itself.
    ByToken,
    /// A claim carries an identity assertion (an ID-JAG) from a trusted issuer.
    ByIdentity,
    /// The operator signs in on the claim page (through `login.providers`) and
    /// confirms; an identity assertion may also claim where one is accepted.
    BySignIn,
}

impl Claims {
    /// True when a registration answer offers a claim (`claim_url`, `claim_token`).
    #[must_use]
    pub fn offered(self) -> bool {
        matches!(
            self,
            Claims::ByToken | Claims::ByIdentity | Claims::BySignIn
        )
    }
}

impl Registration {
    /// How anonymous registrations are claimed, when agents can register at all;
    /// `identity_issuer`: a trusted issuer carries identity assertions;
    /// `sign_in`: people can sign in (`login.providers`).
    #[must_use]
    pub fn claims(&self, identity_issuer: bool, sign_in: bool) -> Claims {
        if !self.enabled || !self.anonymous {
            Claims::Nothing
        } else if !self.require_identity_to_claim {
            Claims::ByToken
        } else if sign_in && self.claim.sign_in {
            Claims::BySignIn
        } else if identity_issuer && self.claim.identity_assertion {
            Claims::ByIdentity
        } else {
            Claims::Unavailable
        }
    }

    /// True when an identity assertion may claim, given that a trusted issuer
    /// carries them (`identity_issuer`).
    #[must_use]
    pub fn assertion_claims(&self, identity_issuer: bool) -> bool {
        identity_issuer && self.claim.identity_assertion
    }

    /// True when a claim raises something: a higher tier, or more scopes.
    #[must_use]
    pub fn claim_raises(&self) -> bool {
        self.claimed_tier > self.tier || !self.claimed_scopes.is_subset_of(&self.scopes)
    }
}

/// `key_management:`.
#[derive(Debug, Clone)]
pub struct KeyManagement {
    /// The key endpoints are served.
    pub enabled: bool,
    /// Prefix of issued keys (empty: none configured, nothing is issued).
    pub prefix: String,
    /// Most live keys one owner may hold.
    pub max_keys_per_owner: usize,
    /// How long a rotated-out secret keeps working.
    pub rotation_grace: Duration,
    /// Anonymous agents (an identifier in a credential header marked `anonymous`)
    /// may create keys in this tier, up to its scopes, and manage them with the same
    /// identifier (AnyGett-style); `None`: only a key manages keys.
    pub anonymous_tier: Option<TierId>,
}

impl Loader {
    #[allow(
        clippy::too_many_arguments,
        reason = "the sections it is checked against, each one argument"
    )]
    pub(super) fn lifecycle(
        &mut self,
        store: raw::RawStore,
        registration: raw::RawRegistration,
        keys: raw::RawKeyManagement,
        credentials: &CredentialRules,
        registry: &ScopeRegistry,
        tiers: &Tiers,
        data_dir: &std::path::Path,
    ) -> Lifecycle {
        let store = self.store(store, data_dir);
        let prefix = match keys.prefix {
            Some(prefix) => {
                let prefix = prefix.strip_suffix('_').unwrap_or(&prefix).to_owned();
                if !credentials.key_prefixes.contains(&prefix) {
                    self.error(
                        "key_management.prefix",
                        format!("`{prefix}` is not one of `credentials.key_prefixes`, so keys with it would not be recognised"),
                    );
                }
                prefix
            }
            None => credentials
                .key_prefixes
                .first()
                .cloned()
                .unwrap_or_default(),
        };
        let anonymous_tier = keys.anonymous_tier.as_deref().map(|name| {
            let path = "key_management.anonymous_tier";
            if !credentials.headers.iter().any(|h| h.anonymous) {
                self.error(
                    path,
                    "anonymous agents are told apart by a credential header with `anonymous: true` (e.g. X-Agent-Key); `credentials.headers` has none",
                );
            }
            self.keyed_tier(Some(name), path, tiers, TierId(1))
        });
        let keys = KeyManagement {
            enabled: keys.enabled.unwrap_or(true),
            anonymous_tier,
            prefix,
            max_keys_per_owner: keys.max_keys_per_owner.unwrap_or(25),
            rotation_grace: self.duration(
                keys.rotation_grace,
                "key_management.rotation_grace",
                Duration::ZERO,
                Duration::ZERO..=DAY * 30,
            ),
        };
        let registration = self.registration(registration, registry, tiers);
        Lifecycle {
            store,
            registration,
            keys,
        }
    }

    fn store(&mut self, raw: raw::RawStore, data_dir: &std::path::Path) -> StoreSettings {
        let resync = self.duration(
            raw.resync_interval,
            "store.resync_interval",
            Duration::from_secs(10),
            MILLISECOND * 100..=DAY,
        );
        let kind = raw.kind.unwrap_or(match raw.url {
            Some(_) => raw::RawStoreKind::Postgres,
            None => raw::RawStoreKind::Sqlite,
        });
        match kind {
            raw::RawStoreKind::None => StoreSettings::None,
            raw::RawStoreKind::Sqlite => {
                if raw.url.is_some() {
                    self.error(
                        "store.url",
                        "`url` is for `kind: postgres`; SQLite uses `data_dir`",
                    );
                }
                if raw.ca_file.is_some() {
                    self.error(
                        "store.ca_file",
                        "`ca_file` is for `kind: postgres` (the CA of the database server's certificate)",
                    );
                }
                let path: PathBuf = data_dir.join("authmd.sqlite3");
                StoreSettings::Sqlite { path, resync }
            }
            raw::RawStoreKind::Postgres => {
                let Some(url) = raw.url else {
                    self.error(
                        "store.url",
                        "`kind: postgres` needs `url` (e.g. `url: ${DATABASE_URL}`)",
                    );
                    return StoreSettings::None;
                };
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    self.error("store.url", "not a `postgres://` URL");
                }
                let schema = raw.schema.unwrap_or_else(|| "authmd".into());
                let valid = schema.len() <= 63
                    && schema
                        .bytes()
                        .next()
                        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
                    && schema
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !valid {
                    self.error(
                        "store.schema",
                        format!("`{schema}` is not a schema name (lowercase letters, digits, `_`)"),
                    );
                }
                let (url, tls) = self.postgres_tls(url, raw.ca_file);
                StoreSettings::Postgres {
                    url,
                    schema,
                    resync,
                    tls,
                }
            }
        }
    }

    /// The TLS settings of `store.url` (`sslmode`, `sslrootcert`) and
    /// `store.ca_file`, and the URL without them. A CA file is resolved like every
    /// file of the config (against its directory) and read now, so that `check`
    /// catches one that cannot be read or used. No message quotes the URL.
    fn postgres_tls(&mut self, url: String, ca_file: Option<String>) -> (String, PostgresTls) {
        let parts = match postgres::split_url(&url) {
            Ok(parts) => parts,
            Err(error) => {
                self.error("store.url", error.to_string());
                return (url, PostgresTls::default());
            }
        };
        let (root_cert, path) = match (parts.root_cert, ca_file) {
            (Some(_), Some(file)) => {
                self.error(
                    "store.ca_file",
                    "the URL names a CA already (`sslrootcert`): give it in one place",
                );
                (Some(file), "store.ca_file")
            }
            (Some(file), None) => (Some(file), "store.url"),
            (None, Some(file)) => (Some(file), "store.ca_file"),
            (None, None) => (None, "store.url"),
        };
        let tls =
            PostgresTls::from_parts(parts.mode, root_cert.as_deref(), |file| self.resolve(file));
        let tls = match tls {
            Ok(tls) => tls,
            Err(error) => {
                self.error(path, error.to_string());
                PostgresTls::default()
            }
        };
        if let Some(file) = &tls.ca_file {
            if let Err(error) = crate::tls::checked_client_config(Some(file), ServerCheck::Chain) {
                self.error(path, error.to_string());
            }
        }
        (parts.url, tls)
    }

    fn registration(
        &mut self,
        raw: raw::RawRegistration,
        registry: &ScopeRegistry,
        tiers: &Tiers,
    ) -> Registration {
        let highest = TierId(u8::try_from(tiers.all().len().saturating_sub(1)).unwrap_or(1));
        let tier = self.keyed_tier(raw.tier.as_deref(), "registration.tier", tiers, TierId(1));
        let claimed_tier = self.keyed_tier(
            raw.claimed_tier.as_deref(),
            "registration.claimed_tier",
            tiers,
            highest,
        );
        if claimed_tier < tier {
            self.error(
                "registration.claimed_tier",
                "a claim must not lower the tier: `claimed_tier` is below `tier`",
            );
        }
        let scopes = self
            .scope_list(raw.scopes.as_deref(), "registration.scopes", registry)
            .unwrap_or(tiers.get(tier).scopes);
        let claimed_scopes = self
            .scope_list(
                raw.claimed_scopes.as_deref(),
                "registration.claimed_scopes",
                registry,
            )
            .unwrap_or(tiers.get(claimed_tier).scopes);
        Registration {
            enabled: raw.enabled.unwrap_or(true),
            anonymous: raw.anonymous.unwrap_or(true),
            tier,
            scopes,
            claimed_tier,
            claimed_scopes,
            claim_ttl: self.duration(
                raw.claim_ttl,
                "registration.claim_ttl",
                Duration::from_secs(24 * 3600),
                MINUTE..=DAY * 30,
            ),
            require_identity_to_claim: raw.require_identity_to_claim.unwrap_or(true),
            per_hour: raw.per_hour.unwrap_or(5),
            identity_per_hour: raw.identity_per_hour.unwrap_or(60),
            accept_resource_audience: raw.accept_resource_audience,
            access_token: raw.access_token,
            claim: {
                let rules = self.claim_rules(raw.claim);
                if rules.by_registration_id && raw.require_identity_to_claim.unwrap_or(true) {
                    self.error(
                        "registration.claim.by_registration_id",
                        "a claim by `registration_id` alone proves nothing the agent does not hold; it needs \
                         `require_identity_to_claim: false` (with an identity, send `identity_assertion` too)",
                    );
                }
                rules
            },
            issue_credential: match raw.issue_credential.as_deref() {
                None | Some("at_registration") => IssueCredential::AtRegistration,
                Some("at_claim") => IssueCredential::AtClaim,
                Some(other) => {
                    self.error(
                        "registration.issue_credential",
                        format!("`{other}` is not `at_registration` or `at_claim`"),
                    );
                    IssueCredential::AtRegistration
                }
            },
        }
    }

    /// `registration.claim`.
    fn claim_rules(&mut self, raw: Option<raw::RawClaim>) -> ClaimRules {
        let Some(raw) = raw else {
            return ClaimRules::default();
        };
        let mut rules = ClaimRules {
            user_code: raw.user_code.unwrap_or(false),
            user_code_ttl: self.duration(
                raw.user_code_ttl,
                "registration.claim.user_code_ttl",
                USER_CODE_TTL,
                MINUTE..=HOUR,
            ),
            by_registration_id: raw.by_registration_id.unwrap_or(false),
            ..ClaimRules::default()
        };
        if let Some(accept) = raw.accept {
            if accept.is_empty() {
                self.error(
                    "registration.claim.accept",
                    "name at least one of `identity_assertion`, `sign_in` (or leave `accept` out for both)",
                );
            }
            rules.identity_assertion = accept.contains(&raw::RawClaimProof::IdentityAssertion);
            rules.sign_in = accept.contains(&raw::RawClaimProof::SignIn);
        }
        for (i, allowed) in raw.allowed.into_iter().enumerate() {
            let path = format!("registration.claim.allowed[{i}]");
            let lower = |v: String| v.trim().to_ascii_lowercase();
            match (allowed.email_domain, allowed.org, allowed.team) {
                (Some(domain), None, None) => {
                    let domain = lower(domain);
                    let domain = domain.strip_prefix('@').unwrap_or(&domain).to_owned();
                    rules.allowed.push(TierMatch::EmailDomain(domain));
                }
                (None, Some(org), None) => rules.allowed.push(TierMatch::Org(lower(org))),
                (None, None, Some(team)) if team.contains('/') => {
                    rules.allowed.push(TierMatch::Team(lower(team)));
                }
                (None, None, Some(_)) => {
                    self.error(&format!("{path}.team"), "a team is `org/team-slug`");
                }
                _ => self.error(&path, "give exactly one of `email_domain`, `org`, `team`"),
            }
        }
        rules
    }

    /// Warns where anonymous registrations are claimed in a way an operator may
    /// not expect: by the agent itself, or never.
    pub(super) fn claim_warnings(
        &mut self,
        lifecycle: &Lifecycle,
        identity_issuer: bool,
        sign_in: bool,
        tiers: &Tiers,
    ) {
        let registration = &lifecycle.registration;
        if lifecycle.registers()
            && registration.claim.sign_in
            && !sign_in
            && registration.claim != ClaimRules::default()
        {
            self.warn(
                "registration.claim.accept",
                "`sign_in` needs `login.providers`: no one can sign in on the claim page",
            );
        }
        if lifecycle.registers()
            && registration.claim.user_code
            && !(sign_in && registration.claim.sign_in)
        {
            self.warn(
                "registration.claim.user_code",
                "a `user_code` is shown to a person who signs in on the claim page, and no one signs in there \
                 (`login.providers`, `registration.claim.accept`): the setting changes nothing",
            );
        }
        if !lifecycle.registers() || !registration.claim_raises() {
            return;
        }
        let tier = &tiers.get(registration.tier).name;
        let claimed = &tiers.get(registration.claimed_tier).name;
        match registration.claims(identity_issuer, sign_in) {
            Claims::Nothing | Claims::ByIdentity | Claims::BySignIn => {}
            Claims::ByToken => self.warn(
                "registration.require_identity_to_claim",
                format!(
                    "`false` lets any agent claim itself into the `{claimed}` tier: its registration answer \
                     hands it the claim token, and posting that token back is the claim (two requests). The \
                     claim token alone proves no person claimed: set `true` and let people sign in on the claim \
                     page (`login.providers`) or trust an identity provider under `trusted_issuers` \
                     (`identity_assertions: true`), or let a claim raise nothing (`claimed_tier` and `claimed_scopes` no more than `tier` and \
                     `scopes`)"
                ),
            ),
            Claims::Unavailable => self.warn(
                "registration.require_identity_to_claim",
                format!(
                    "a claim needs an identity assertion or a sign-in, and neither is accepted here (no entry of \
                     `trusted_issuers` carries identity assertions with `identity_assertions: true`, and no one \
                     signs in through `login.providers`; `registration.claim.accept` says which count): no claim \
                     can be completed, so anonymous registrations stay in the `{tier}` tier and their answers \
                     offer no claim. Let people sign in, or trust an identity provider under `trusted_issuers`, \
                     to make the `{claimed}` tier reachable by a claim"
                ),
            ),
        }
    }

    /// A tier a key may have (never `anonymous`).
    pub(super) fn keyed_tier(
        &mut self,
        name: Option<&str>,
        path: &str,
        tiers: &Tiers,
        default: TierId,
    ) -> TierId {
        let Some(name) = name else { return default };
        match tiers.find(name) {
            Some(TierId::ANONYMOUS) => {
                self.error(path, "a key cannot be in the `anonymous` tier");
                default
            }
            Some(id) => id,
            None => {
                self.unknown_tier(path, name, tiers);
                default
            }
        }
    }

    pub(super) fn scope_list(
        &mut self,
        names: Option<&[String]>,
        path: &str,
        registry: &ScopeRegistry,
    ) -> Option<ScopeSet> {
        let names = names?;
        match registry.granted(names.iter().map(String::as_str)) {
            Ok(set) => Some(set),
            Err((name, e)) => {
                let at = names.iter().position(|s| s == name).unwrap_or(0);
                self.unknown_scope(&format!("{path}[{at}]"), name, &e, registry);
                None
            }
        }
    }
}
