//! The `login:` section: how people sign in (the cookie key, the session lifetime,
//! the identity providers) and which tier a signed-in person gets.
//!
//! Refused here, so that `check` says so: two providers with one id, a password
//! hash that is not an argon2 PHC string, no cookie key with a shared store
//! (replicas must open each other's cookies), a tier rule naming an unknown tier,
//! and sign-in on a plain-`http` origin that is not loopback (browsers drop the
//! `Secure` cookies there). Static accounts on an origin that is not loopback are
//! turned off with a warning (unless `allow_non_loopback`), so that the example
//! config still starts behind a public URL, without its demo account. Secret
//! values are never echoed.

use std::path::Path;
use std::time::Duration;

use zeroize::Zeroizing;

use super::endpoints::Endpoints;
use super::load::Loader;
use super::locate::join;
use super::raw::{
    RawGithub, RawLogin, RawLoginTiers, RawOidc, RawProvider, RawStatic, RawTierRule, RawUser,
};
use super::values::{DAY, MINUTE};
use crate::login::seal::decode_key;
use crate::login::{
    CookieKeySource, GithubSettings, LoginPaths, LoginSettings, OidcSettings, ProviderKind,
    ProviderSettings, SecretString, StaticSettings, StaticUser, TierMatch, TierRule, TierRules,
    check_hash,
};
use crate::store::StoreSettings;
use crate::tier::{TierId, Tiers};

/// What the `login` section is checked against.
pub(super) struct LoginContext<'a> {
    pub(super) tiers: &'a Tiers,
    pub(super) origins: &'a [String],
    pub(super) store: &'a StoreSettings,
    pub(super) data_dir: &'a Path,
    pub(super) endpoints: &'a Endpoints,
    pub(super) service_name: &'a str,
    /// `registration.claim.allowed`: its organizations and teams matter too.
    pub(super) claim_allowed: &'a [TierMatch],
}

impl Loader {
    pub(super) fn login(&mut self, raw: Option<RawLogin>, cx: &LoginContext<'_>) -> LoginSettings {
        let paths = LoginPaths {
            login: cx.endpoints.login.clone(),
            callback: cx.endpoints.login_callback.clone(),
            authorize: cx.endpoints.authorize.clone(),
            claim: cx.endpoints.claim.clone(),
            operator: cx.endpoints.operator.clone(),
        };
        let raw = raw.unwrap_or_default();
        let mut providers: Vec<ProviderSettings> = Vec::new();
        for (i, value) in raw.providers.into_iter().enumerate() {
            let path = format!("login.providers[{i}]");
            let Some(provider) = self.take::<RawProvider>(value, &path) else {
                continue;
            };
            if let Some(provider) = self.provider(provider, &path, cx) {
                if providers.iter().any(|p| p.id == provider.id) {
                    self.error(
                        &join(&path, "id"),
                        format!("`{}` is the id of another provider", provider.id),
                    );
                    continue;
                }
                providers.push(provider);
            }
        }
        let enabled = !providers.is_empty();
        let session_ttl = self.duration(
            raw.session_ttl,
            "login.session_ttl",
            Duration::from_secs(12 * 3600),
            MINUTE * 5..=DAY * 90,
        );
        let cookie_key = self.cookie_key(raw.cookie_key, raw.cookie_key_file, enabled, cx);
        let tiers = self.login_tiers(raw.tiers, cx.tiers, enabled);
        if enabled {
            for origin in cx.origins {
                if origin.starts_with("http://") && !loopback_url(origin) {
                    self.error(
                        "login",
                        format!("people sign in with `Secure` cookies, which browsers keep only over https (and plain http on loopback): `{origin}` must be an https origin (`public_url`, `discovery.hosts`)"),
                    );
                    break;
                }
            }
        }
        let mut providers = providers;
        let rule_orgs: Vec<String> = tiers
            .rules
            .iter()
            .map(|r| &r.when)
            .chain(cx.claim_allowed)
            .filter_map(|when| match when {
                TierMatch::Org(o) => Some(o.clone()),
                TierMatch::EmailDomain(_) | TierMatch::Team(_) => None,
            })
            .collect();
        let rule_teams: Vec<String> = tiers
            .rules
            .iter()
            .map(|r| &r.when)
            .chain(cx.claim_allowed)
            .filter_map(|when| match when {
                TierMatch::Team(t) => Some(t.clone()),
                TierMatch::EmailDomain(_) | TierMatch::Org(_) => None,
            })
            .collect();
        for provider in &mut providers {
            if let ProviderKind::Github(github) = &mut provider.kind {
                github.wanted_orgs = union(&github.orgs, &rule_orgs);
                github.wanted_teams = union(&github.teams, &rule_teams);
            }
        }
        LoginSettings {
            cookie_key,
            session_ttl,
            providers,
            tiers,
            paths,
            service_name: cx.service_name.to_owned(),
        }
    }

    fn provider(
        &mut self,
        raw: RawProvider,
        path: &str,
        cx: &LoginContext<'_>,
    ) -> Option<ProviderSettings> {
        let (id, display_name) = match &raw {
            RawProvider::Static(s) => (&s.id, &s.display_name),
            RawProvider::Oidc(o) => (&o.id, &o.display_name),
            RawProvider::Github(g) => (&g.id, &g.display_name),
        };
        let id_ok = !id.is_empty()
            && id.len() <= 40
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            self.error(
                &join(path, "id"),
                format!("`{id}` is not an id of lowercase letters, digits and `-` (at most 40)"),
            );
            return None;
        }
        let id = id.clone();
        let display_name = display_name.clone();
        let (kind, default_name) = match raw {
            RawProvider::Static(s) => (self.static_provider(s, path, cx)?, "a password".to_owned()),
            RawProvider::Oidc(o) => {
                let host = o
                    .issuer
                    .parse::<http::Uri>()
                    .ok()
                    .and_then(|u| u.host().map(str::to_owned))
                    .unwrap_or_else(|| id.clone());
                (self.oidc_provider(o, path)?, host)
            }
            RawProvider::Github(g) => (self.github_provider(g, path)?, "GitHub".to_owned()),
        };
        Some(ProviderSettings {
            id,
            display_name: display_name.unwrap_or(default_name),
            kind,
        })
    }

    fn static_provider(
        &mut self,
        raw: RawStatic,
        path: &str,
        cx: &LoginContext<'_>,
    ) -> Option<ProviderKind> {
        if !raw.allow_non_loopback {
            // A warning, not an error: the example config (and the image that
            // carries it) keeps starting behind a public URL, without its demo.
            if let Some(origin) = cx.origins.iter().find(|o| !loopback_url(o)) {
                self.warn(
                    &join(path, "kind"),
                    format!("static accounts are for trying things out on loopback, and `{origin}` is not loopback, so this provider is off: sign people in through an identity provider, or set `allow_non_loopback: true` if you mean it"),
                );
                return None;
            }
        }
        let mut users: Vec<StaticUser> = Vec::new();
        let mut ok = true;
        for (i, value) in raw.users.into_iter().enumerate() {
            let at = format!("{path}.users[{i}]");
            let Some(user) = self.take::<RawUser>(value, &at) else {
                ok = false;
                continue;
            };
            if user.username.is_empty() || user.username.len() > 200 {
                self.error(&join(&at, "username"), "must be 1 to 200 characters");
                ok = false;
                continue;
            }
            if users.iter().any(|u| u.username == user.username) {
                self.error(
                    &join(&at, "username"),
                    format!("`{}` is listed twice", user.username),
                );
                ok = false;
                continue;
            }
            if let Err(why) = check_hash(&user.password_hash) {
                // Reported at the account, not the field: a field named like a
                // password has its messages masked, and this one says nothing secret.
                self.error(
                    &at,
                    format!("`password_hash` {why}; write an argon2 PHC string such as `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`"),
                );
                ok = false;
                continue;
            }
            users.push(StaticUser {
                username: user.username,
                password_hash: user.password_hash,
                email: user.email.map(|e| e.trim().to_owned()),
                name: user.name,
            });
        }
        if users.is_empty() && ok {
            self.error(
                &join(path, "users"),
                "a static provider needs at least one account",
            );
            return None;
        }
        ok.then_some(ProviderKind::Static(StaticSettings { users }))
    }

    fn oidc_provider(&mut self, raw: RawOidc, path: &str) -> Option<ProviderKind> {
        if !self.provider_url(&raw.issuer, &join(path, "issuer")) {
            return None;
        }
        if raw.client_id.is_empty() {
            self.error(&join(path, "client_id"), "must not be empty");
            return None;
        }
        let scopes = raw
            .scopes
            .unwrap_or_else(|| ["openid", "email", "profile"].map(str::to_owned).to_vec());
        if !scopes.iter().any(|s| s == "openid") {
            self.error(&join(path, "scopes"), "must include `openid`");
            return None;
        }
        Some(ProviderKind::Oidc(OidcSettings {
            issuer: raw.issuer,
            client_id: raw.client_id,
            client_secret: SecretString(Zeroizing::new(raw.client_secret)),
            scopes,
        }))
    }

    fn github_provider(&mut self, raw: RawGithub, path: &str) -> Option<ProviderKind> {
        let web_url = raw
            .web_url
            .unwrap_or_else(|| "https://github.com".into())
            .trim_end_matches('/')
            .to_owned();
        let api_url = raw
            .api_url
            .unwrap_or_else(|| "https://api.github.com".into())
            .trim_end_matches('/')
            .to_owned();
        let urls_ok = self.provider_url(&web_url, &join(path, "web_url"))
            & self.provider_url(&api_url, &join(path, "api_url"));
        if raw.client_id.is_empty() {
            self.error(&join(path, "client_id"), "must not be empty");
            return None;
        }
        let orgs: Vec<String> = raw.orgs.iter().map(|o| o.to_ascii_lowercase()).collect();
        let mut teams = Vec::new();
        for (i, team) in raw.teams.iter().enumerate() {
            match team.split_once('/') {
                Some((org, slug)) if !org.is_empty() && !slug.is_empty() && !slug.contains('/') => {
                    teams.push(team.to_ascii_lowercase());
                }
                _ => self.error(
                    &format!("{path}.teams[{i}]"),
                    format!("`{team}` is not `organization/team-slug`"),
                ),
            }
        }
        urls_ok.then_some(ProviderKind::Github(GithubSettings {
            client_id: raw.client_id,
            client_secret: SecretString(Zeroizing::new(raw.client_secret)),
            orgs,
            teams,
            web_url,
            api_url,
            wanted_orgs: Vec::new(),
            wanted_teams: Vec::new(),
        }))
    }

    /// True when `url` is an absolute https URL (http on loopback, for tests and
    /// local providers) with no query or fragment.
    fn provider_url(&mut self, url: &str, path: &str) -> bool {
        let parsed = url.parse::<http::Uri>().ok().filter(|u| {
            u.authority().is_some()
                && u.query().is_none()
                && !url.contains('#')
                && match u.scheme_str() {
                    Some("https") => true,
                    Some("http") => loopback_url(url),
                    _ => false,
                }
        });
        if parsed.is_none() {
            self.error(
                path,
                format!("`{url}` is not an https URL (plain http only on loopback) without query"),
            );
        }
        parsed.is_some()
    }

    fn cookie_key(
        &mut self,
        inline: Option<String>,
        file: Option<String>,
        enabled: bool,
        cx: &LoginContext<'_>,
    ) -> CookieKeySource {
        const HOW: &str = "a base64 key of at least 32 bytes (`openssl rand -base64 32` makes one)";
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.error(
                    "login.cookie_key_file",
                    "give `cookie_key` or `cookie_key_file`, not both",
                );
                CookieKeySource::Ephemeral
            }
            (Some(text), None) => match decode_key(&Zeroizing::new(text)) {
                Some(key) => CookieKeySource::Given(key),
                None => {
                    self.error("login.cookie_key", format!("is not {HOW}"));
                    CookieKeySource::Ephemeral
                }
            },
            (None, Some(file)) => {
                let path = self.resolve(&file);
                match std::fs::read_to_string(&path).map(Zeroizing::new) {
                    Ok(text) => match decode_key(&text) {
                        Some(key) => CookieKeySource::Given(key),
                        None => {
                            self.error(
                                "login.cookie_key_file",
                                format!("`{}` does not hold {HOW}", path.display()),
                            );
                            CookieKeySource::Ephemeral
                        }
                    },
                    Err(e) => {
                        self.error(
                            "login.cookie_key_file",
                            format!("cannot read `{}`: {e}", path.display()),
                        );
                        CookieKeySource::Ephemeral
                    }
                }
            }
            (None, None) => match cx.store {
                StoreSettings::Sqlite { .. } => {
                    CookieKeySource::Generated(cx.data_dir.join("cookie.key"))
                }
                StoreSettings::Postgres { .. } => {
                    if enabled {
                        self.error(
                            "login.cookie_key",
                            format!("with `store.kind: postgres` the replicas must share one cookie key, to open each other's sign-in cookies: set `cookie_key` (e.g. `${{AUTHMD_COOKIE_KEY}}`) or `cookie_key_file` to {HOW}"),
                        );
                    }
                    CookieKeySource::Ephemeral
                }
                StoreSettings::None => CookieKeySource::Ephemeral,
            },
        }
    }

    fn login_tiers(&mut self, raw: RawLoginTiers, tiers: &Tiers, enabled: bool) -> TierRules {
        let person_tier = |loader: &mut Loader, name: &str, path: &str| match tiers.find(name) {
            Some(TierId::ANONYMOUS) => {
                loader.error(path, "a signed-in person cannot be in the `anonymous` tier");
                None
            }
            Some(id) => Some(id),
            None => {
                loader.unknown_tier(path, name, tiers);
                None
            }
        };
        let default = match raw.default.as_deref() {
            Some(name) => person_tier(self, name, "login.tiers.default").unwrap_or(TierId(1)),
            None if tiers.all().len() > 1 => TierId(1),
            None => {
                if enabled {
                    self.error(
                        "login.tiers.default",
                        "signed-in people need a tier other than `anonymous`: declare one under `tiers`",
                    );
                }
                TierId::ANONYMOUS
            }
        };
        let mut rules = Vec::new();
        for (i, value) in raw.rules.into_iter().enumerate() {
            let path = format!("login.tiers.rules[{i}]");
            let Some(rule) = self.take::<RawTierRule>(value, &path) else {
                continue;
            };
            let when = match (rule.email_domain, rule.org, rule.team) {
                (Some(domain), None, None) => {
                    let domain = domain.trim().trim_start_matches('@').to_ascii_lowercase();
                    if domain.is_empty() || domain.contains('@') {
                        self.error(
                            &join(&path, "email_domain"),
                            "is not a domain such as `example.com`",
                        );
                        continue;
                    }
                    TierMatch::EmailDomain(domain)
                }
                (None, Some(org), None) => TierMatch::Org(org.to_ascii_lowercase()),
                (None, None, Some(team))
                    if team
                        .split_once('/')
                        .is_some_and(|(o, s)| !o.is_empty() && !s.is_empty()) =>
                {
                    TierMatch::Team(team.to_ascii_lowercase())
                }
                (None, None, Some(team)) => {
                    self.error(
                        &join(&path, "team"),
                        format!("`{team}` is not `organization/team-slug`"),
                    );
                    continue;
                }
                _ => {
                    self.error(&path, "give exactly one of `email_domain`, `org` or `team`");
                    continue;
                }
            };
            if let Some(tier) = person_tier(self, &rule.tier, &join(&path, "tier")) {
                rules.push(TierRule { when, tier });
            }
        }
        TierRules { default, rules }
    }
}

/// True when `url`'s host is loopback: `localhost`, `127.0.0.0/8` or `[::1]`.
fn loopback_url(url: &str) -> bool {
    let Some(host) = url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_owned))
    else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn union(a: &[String], b: &[String]) -> Vec<String> {
    let mut all = a.to_vec();
    for item in b {
        if !all.contains(item) {
            all.push(item.clone());
        }
    }
    all
}
