//! The `endpoints:` section: where the proxy's own endpoints are, each a
//! normalised absolute path that no other endpoint uses.

use super::load::Loader;
use super::locate::join;
use super::raw;
use crate::policy::normalize_path;

/// `endpoints:`: paths of the proxy's own endpoints.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// OAuth authorization endpoint.
    pub authorize: String,
    /// OAuth token endpoint.
    pub token: String,
    /// OAuth revocation endpoint (RFC 7009).
    pub revoke: String,
    /// Agent registration (`register_uri`).
    pub register: String,
    /// Claim of a registration (`claim_uri`); the human claim page is under it.
    pub claim: String,
    /// Agent-facing revocation with `{credential}` (`revocation_uri`).
    pub agent_revoke: String,
    /// Key management collection; `{id}` and `{id}/rotate` below it.
    pub keys: String,
    /// The scope list.
    pub scopes: String,
    /// The JWKS of the proxy's token-signing keys (`jwks_uri`).
    pub jwks: String,
    /// The sign-in page of people (`login:`).
    pub login: String,
    /// Identity providers send people back to `<login_callback>/<provider id>`.
    pub login_callback: String,
    /// Where the consent page posts a person's decision.
    pub consent: String,
    /// RFC 7591 client registration.
    pub oauth_register: String,
    /// The page where a signed-in person sees and revokes the agents they claimed
    /// (served where `login.providers` is set and keys are stored).
    pub operator: String,
}

impl Loader {
    pub(super) fn endpoints(&mut self, raw: &raw::RawEndpoints) -> Endpoints {
        let mut seen: Vec<String> = Vec::new();
        let mut endpoint =
            |loader: &mut Loader, value: &Option<String>, field: &str, default: &str| {
                let path = value.clone().unwrap_or_else(|| default.to_owned());
                let at = join("endpoints", field);
                if !matches!(normalize_path(&path), Ok(normal) if normal == path)
                    || path.len() < 2
                    || path.ends_with('/')
                {
                    loader.error(
                        &at,
                        format!("`{path}` is not a normalised absolute path such as `{default}`"),
                    );
                } else if seen.contains(&path) {
                    loader.error(&at, format!("`{path}` is used by another endpoint"));
                }
                seen.push(path.clone());
                path
            };
        Endpoints {
            authorize: endpoint(self, &raw.authorize, "authorize", "/oauth2/authorize"),
            token: endpoint(self, &raw.token, "token", "/oauth2/token"),
            revoke: endpoint(self, &raw.revoke, "revoke", "/oauth2/revoke"),
            register: endpoint(self, &raw.register, "register", "/agent/auth/register"),
            claim: endpoint(self, &raw.claim, "claim", "/agent/auth/claim"),
            agent_revoke: endpoint(
                self,
                &raw.agent_revoke,
                "agent_revoke",
                "/agent/auth/revoke",
            ),
            keys: endpoint(self, &raw.keys, "keys", "/api/v1/auth/keys"),
            scopes: endpoint(self, &raw.scopes, "scopes", "/api/v1/auth/scopes"),
            jwks: endpoint(self, &raw.jwks, "jwks", crate::protocol::JWKS),
            login: endpoint(self, &raw.login, "login", "/oauth2/login"),
            login_callback: endpoint(
                self,
                &raw.login_callback,
                "login_callback",
                "/oauth2/callback",
            ),
            consent: endpoint(self, &raw.consent, "consent", "/oauth2/consent"),
            oauth_register: endpoint(
                self,
                &raw.oauth_register,
                "oauth_register",
                "/oauth2/register",
            ),
            operator: endpoint(self, &raw.operator, "operator", "/agent/auth/operator"),
        }
    }
}
