//! What the `login:` section of the config says, as the config module builds it:
//! where the cookie key comes from, how long a sign-in lasts, the providers, and
//! which tier a signed-in person gets.

use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::tier::TierId;

/// `login:`. Sign-in is on when [`LoginSettings::providers`] is not empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSettings {
    /// The key the cookies are sealed with.
    pub cookie_key: CookieKeySource,
    /// How long a sign-in lasts.
    pub session_ttl: Duration,
    /// The identity providers, in the order the sign-in page lists them.
    pub providers: Vec<ProviderSettings>,
    /// The tier of a signed-in person.
    pub tiers: TierRules,
    /// Where the sign-in endpoints are.
    pub paths: LoginPaths,
    /// The API's name, for the pages' titles.
    pub service_name: String,
}

impl LoginSettings {
    /// True when people can sign in.
    #[must_use]
    pub fn enabled(&self) -> bool {
        !self.providers.is_empty()
    }
}

impl Default for LoginSettings {
    fn default() -> Self {
        LoginSettings {
            cookie_key: CookieKeySource::Ephemeral,
            session_ttl: Duration::from_secs(12 * 3600),
            providers: Vec::new(),
            tiers: TierRules {
                default: TierId::ANONYMOUS,
                rules: Vec::new(),
            },
            paths: LoginPaths {
                login: "/oauth2/login".into(),
                callback: "/oauth2/callback".into(),
                authorize: "/oauth2/authorize".into(),
                claim: "/agent/auth/claim".into(),
                operator: "/agent/auth/operator".into(),
            },
            service_name: String::new(),
        }
    }
}

/// Where the cookie key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieKeySource {
    /// `cookie_key` or `cookie_key_file`: 32 bytes or more.
    Given(SecretBytes),
    /// Generated once into this file (mode 0600) and read from it afterwards.
    Generated(PathBuf),
    /// Generated in memory at start (no store to keep it in): sign-ins end with the
    /// process. A reload keeps it.
    Ephemeral,
}

/// Key material: never shown, zeroed when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(pub Zeroizing<Vec<u8>>);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.0.len())
    }
}

/// A secret string (a client secret): never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(pub Zeroizing<String>);

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(..)")
    }
}

/// The paths of the sign-in endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginPaths {
    /// The sign-in page (`GET`) and the password form's target (`POST`).
    pub login: String,
    /// Providers redirect back to `<callback>/<provider id>`.
    pub callback: String,
    /// The authorization endpoint: `return_to` may be it, with a query.
    pub authorize: String,
    /// The agents' claim page: `return_to` may be it too, with a query.
    pub claim: String,
    /// The operator page: `return_to` may be exactly it (no query).
    pub operator: String,
}

/// One identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSettings {
    /// `[a-z0-9-]+`, unique; part of the subjects of its people.
    pub id: String,
    /// Shown on the sign-in page.
    pub display_name: String,
    /// What kind of provider, with its settings.
    pub kind: ProviderKind,
}

/// The kinds of provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderKind {
    /// Accounts listed in the config, with argon2 password hashes.
    Static(StaticSettings),
    /// An OpenID Connect provider.
    Oidc(OidcSettings),
    /// GitHub (or GitHub Enterprise Server).
    Github(GithubSettings),
}

/// `kind: static`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticSettings {
    /// The accounts.
    pub users: Vec<StaticUser>,
}

/// One static account.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticUser {
    /// What the person types; the subject of their sign-ins.
    pub username: String,
    /// An argon2 PHC string (checked when the config is loaded).
    pub password_hash: String,
    /// Their email, taken as verified (the operator wrote it).
    pub email: Option<String>,
    /// Their name.
    pub name: Option<String>,
}

impl std::fmt::Debug for StaticUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticUser")
            .field("username", &self.username)
            .field("password_hash", &"(argon2 hash, not shown)")
            .field("email", &self.email)
            .field("name", &self.name)
            .finish()
    }
}

/// `kind: oidc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    /// The issuer; its discovery document is at
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// This API's client id there.
    pub client_id: String,
    /// Its client secret (`client_secret_basic`).
    pub client_secret: SecretString,
    /// The scopes asked for; `openid` among them.
    pub scopes: Vec<String>,
}

/// `kind: github`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubSettings {
    /// The OAuth app's client id.
    pub client_id: String,
    /// Its client secret.
    pub client_secret: SecretString,
    /// A person must be a member of one of these organizations (lowercase logins)
    /// or of one of [`GithubSettings::teams`], when either is given.
    pub orgs: Vec<String>,
    /// `org/team-slug`, lowercase.
    pub teams: Vec<String>,
    /// Where people authorize the app (`https://github.com`).
    pub web_url: String,
    /// The REST API (`https://api.github.com`).
    pub api_url: String,
    /// Organizations that matter (to be allowed in, or for a tier rule): only
    /// these are kept as groups of a person.
    pub wanted_orgs: Vec<String>,
    /// Teams that matter, the same way.
    pub wanted_teams: Vec<String>,
}

/// `login.tiers`: the tier of a signed-in person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierRules {
    /// When no rule matches.
    pub default: TierId,
    /// The first match wins.
    pub rules: Vec<TierRule>,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierRule {
    /// What the person must have.
    pub when: TierMatch,
    /// The tier they then get.
    pub tier: TierId,
}

/// What a tier rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TierMatch {
    /// A verified email at this domain (lowercase).
    EmailDomain(String),
    /// Membership of this GitHub organization (lowercase).
    Org(String),
    /// Membership of this GitHub team, `org/slug` (lowercase).
    Team(String),
}
