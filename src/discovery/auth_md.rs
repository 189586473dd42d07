//! `/auth.md`, rendered from the config in the convention's section order: Discover,
//! Pick a method, Register, Claim, Get an access token, Use the credential, Scopes,
//! Errors, Rate limits,
//! Revocation, Links. Every example request it shows is one the proxy answers as the
//! document says (a test runs them).

mod claim;
mod errors;
mod people;

use std::fmt::Write as _;

use crate::config::Config;
use crate::policy::{Access, Route};
use crate::protocol::{
    AGENT_CARD, API_CATALOG, AUTHORIZATION_SERVER, ID_JAG, JWT_BEARER, MCP_SERVER_CARD,
    PROTECTED_RESOURCE, VERIFIED_EMAIL,
};
use crate::tier::TierId;

/// Renders the auth.md of `config` as seen from `origin`.
#[must_use]
pub fn render(config: &Config, origin: &str) -> String {
    let mut md = String::new();
    let name = &config.service.name;
    let host = origin.split_once("://").map_or(origin, |(_, h)| h);
    let _ = writeln!(md, "# {name} auth.md\n");
    let _ = write!(md, "You are an agent. ");
    if let Some(description) = &config.service.description {
        let _ = write!(md, "{} ", description.trim());
    }
    let _ = writeln!(
        md,
        "This document tells you how to discover, authenticate with and use {name} at `{origin}`. \
         The API (the protected resource) and its authorization server are both served by `{host}`.\n"
    );

    discover(&mut md, config, origin);
    methods(&mut md, config);
    register(&mut md, config, origin);
    claim::claim(&mut md, config, origin);
    access_tokens(&mut md, config, origin);
    people::people(&mut md, config, origin);
    use_the_credential(&mut md, config, origin);
    scopes(&mut md, config);
    errors::errors(&mut md, config, limit_kinds(config));
    rate_limits(&mut md, config);
    revocation(&mut md, config, origin);
    links(&mut md, config, origin);
    md
}

fn discover(md: &mut String, config: &Config, origin: &str) {
    let _ = writeln!(md, "## Discover\n");
    let _ = writeln!(
        md,
        "1. A request to a protected endpoint without a credential answers `401` with\n   \
         `WWW-Authenticate: Bearer resource_metadata=\"{origin}{PROTECTED_RESOURCE}\"` (with `scope=\"...\"` naming \
         what that endpoint needs, where it needs scopes).\n\
         2. Protected resource metadata (RFC 9728): `GET {origin}{PROTECTED_RESOURCE}`. It names the scopes, the \
         authorization server and this document."
    );
    for prefix in &config.discovery.resources {
        let _ = writeln!(
            md,
            "   The resource `{origin}{prefix}` has its own: `GET {origin}{PROTECTED_RESOURCE}{prefix}`."
        );
    }
    let _ = writeln!(
        md,
        "3. Authorization server metadata (RFC 8414): `GET {origin}{AUTHORIZATION_SERVER}`, with an `agent_auth` block.\n\
         4. API catalog (RFC 9727): `GET {origin}{API_CATALOG}`.\n"
    );
}

fn methods(md: &mut String, config: &Config) {
    let routes: Vec<&Route> = config.policy.routes().collect();
    let anonymous_tier = config.tiers.get(TierId::ANONYMOUS);
    let anonymous_scopes = config.scopes.names(&anonymous_tier.scopes);
    let _ = writeln!(md, "## Pick a method\n");
    let _ = writeln!(
        md,
        "| Method | When to use | Send | Rate limit |\n|---|---|---|---|"
    );
    if routes.iter().any(|r| r.access == Access::Public) {
        let _ = writeln!(
            md,
            "| No credential | Public endpoints only | nothing | {} |",
            if routes
                .iter()
                .any(|r| r.access == Access::Public && r.metered)
            {
                limits_of(config, &[TierId::ANONYMOUS], "client address")
            } else {
                "none".to_owned()
            }
        );
    }
    if routes.iter().any(|r| r.access == Access::Anonymous) {
        let scopes = if anonymous_scopes.is_empty() {
            "endpoints that need no scope".to_owned()
        } else {
            format!("scopes {}", code_list(&anonymous_scopes))
        };
        let send = match config.credentials.headers.iter().find(|h| h.anonymous) {
            Some(h) => format!(
                "`{}: <a stable name for your agent>`, or nothing",
                h.display
            ),
            None => "nothing".to_owned(),
        };
        let _ = writeln!(
            md,
            "| Anonymous | Quick start, low volume: {scopes} | {send} | {} |",
            limits_of(config, &[TierId::ANONYMOUS], "identifier (or address)")
        );
    }
    let key_tiers = key_tiers(config);
    if !config.credentials.key_prefixes.is_empty() {
        let prefixes: Vec<String> = config
            .credentials
            .key_prefixes
            .iter()
            .map(|p| format!("`{p}_*`"))
            .collect();
        let _ = writeln!(
            md,
            "| API key ({}) | Production agents: whatever the key's scopes allow | {} | {} |",
            prefixes.join(", "),
            credential_headers(config, "<key>").join(" or "),
            limits_of(config, &key_tiers, "key")
        );
    }
    let tokens = &config.tokens;
    if tokens.enabled {
        if let Some(anonymous) = &tokens.anonymous {
            let _ = writeln!(
                md,
                "| Anonymous access token | No setup, more than anonymous requests get: the `{}` tier, {} | `Authorization: Bearer <token>` from client_credentials without a client secret (see Get an access token) | {}; {} tokens per hour per address |",
                config.tiers.get(anonymous.tier).name,
                code_list(&config.scopes.names(&anonymous.scopes)),
                limits_of(config, &[anonymous.tier], "token"),
                anonymous.per_hour
            );
        }
        if tokens.api_keys && !config.credentials.key_prefixes.is_empty() {
            let _ = writeln!(
                md,
                "| Access token for a key | OAuth clients (MCP): a short-lived token with the key's scopes or fewer | `Authorization: Bearer <token>` from client_credentials with the key as client secret | {} |",
                limits_of(config, &key_tiers, "key")
            );
        }
        if tokens.jwt_bearer {
            let _ = writeln!(
                md,
                "| Identity assertion | Agents acting for a user of a trusted identity provider | `Authorization: Bearer <token>` from the jwt-bearer grant with an ID-JAG | {} |",
                limits_of(config, &issuer_tiers(config, false), "user")
            );
        }
    }
    let issuers: Vec<String> = config
        .trusted_issuers
        .iter()
        .filter(|i| i.access_tokens)
        .map(|i| format!("`{}`", i.issuer))
        .collect();
    if !issuers.is_empty() {
        let _ = writeln!(
            md,
            "| Issuer's access token | You already hold a JWT access token from {} for this API | `Authorization: Bearer <token>` | {} |",
            issuers.join(", "),
            limits_of(config, &issuer_tiers(config, true), "subject")
        );
    }
    let _ = writeln!(md);
}

/// The tiers an API key can be in: where registration and key creation put keys,
/// and the config's keys' own.
fn key_tiers(config: &Config) -> Vec<TierId> {
    let lifecycle = &config.lifecycle;
    let mut tiers: Vec<TierId> = config.keys.iter().map(|k| k.tier()).collect();
    if lifecycle.registers() {
        tiers.extend([
            lifecycle.registration.tier,
            lifecycle.registration.claimed_tier,
        ]);
    }
    if lifecycle.issues_keys() && lifecycle.keys.enabled {
        tiers.extend(lifecycle.keys.anonymous_tier);
    }
    tiers.sort_unstable();
    tiers.dedup();
    tiers
}

/// The tiers of trusted issuers' principals: of their access tokens, or of the
/// tokens their identity assertions are exchanged for.
fn issuer_tiers(config: &Config, access_tokens: bool) -> Vec<TierId> {
    let mut tiers: Vec<TierId> = config
        .trusted_issuers
        .iter()
        .filter(|i| {
            if access_tokens {
                i.access_tokens
            } else {
                i.identity_assertions
            }
        })
        .map(|i| {
            i.tier.unwrap_or(if access_tokens {
                TierId(1)
            } else {
                config.lifecycle.registration.claimed_tier
            })
        })
        .collect();
    tiers.sort_unstable();
    tiers.dedup();
    tiers
}

/// What the tiers allow, counted per `per`, in words: `60 per minute, per key`, or,
/// when they differ, each one's. Keys with limits of their own are noted.
fn limits_of(config: &Config, tiers: &[TierId], per: &str) -> String {
    let texts: Vec<(String, String)> = tiers
        .iter()
        .map(|t| {
            let tier = config.tiers.get(*t);
            (tier.name.clone(), limit_text(&tier.limits))
        })
        .collect();
    let mut text = match texts.as_slice() {
        [] => "none configured".to_owned(),
        [(_, only)] if only == "none configured" => only.clone(),
        [(_, only)] => format!("{only}, per {per}"),
        [(_, first), rest @ ..] if rest.iter().all(|(_, t)| t == first) => {
            format!("{first}, per {per}")
        }
        all => format!(
            "per {per}, by tier: {}",
            all.iter()
                .map(|(name, t)| format!("`{name}` {t}"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    if tiers.iter().any(|t| *t != TierId::ANONYMOUS)
        && config.keys.iter().any(|k| k.profile.limits.is_some())
    {
        text.push_str(" (some keys have limits of their own)");
    }
    text
}

/// One limit set in words: its rate windows and its quota, or `none configured`.
fn limit_text(limits: &crate::limits::LimitSet) -> String {
    let mut parts = rate_texts(limits);
    parts.extend(limits.quota.map(quota_text));
    if parts.is_empty() {
        "none configured".to_owned()
    } else {
        parts.join(", ")
    }
}

/// Each rate window in words: `300 per minute`.
fn rate_texts(limits: &crate::limits::LimitSet) -> Vec<String> {
    limits
        .rates
        .iter()
        .map(|r| format!("{} per {}", r.limit, window(r.window_secs())))
        .collect()
}

/// A quota in words: `5000 per calendar month (UTC)`.
fn quota_text(quota: crate::limits::quota::Quota) -> String {
    match quota.period {
        crate::limits::quota::Period::Day => format!("{} per UTC day", quota.limit),
        crate::limits::quota::Period::Month => {
            format!("{} per calendar month (UTC)", quota.limit)
        }
    }
}

/// Whether any tier or config key has rate windows, and whether any has a quota.
fn limit_kinds(config: &Config) -> (bool, bool) {
    let sets = config.tiers.all().iter().map(|t| &*t.limits).chain(
        config
            .keys
            .iter()
            .filter_map(|k| k.profile.limits.as_deref()),
    );
    sets.fold((false, false), |(rates, quota), set| {
        (rates || !set.rates.is_empty(), quota || set.quota.is_some())
    })
}

fn access_tokens(md: &mut String, config: &Config, origin: &str) {
    let tokens = &config.tokens;
    if !tokens.enabled {
        return;
    }
    let endpoint = format!("{origin}{}", config.endpoints.token);
    let _ = writeln!(
        md,
        "## Get an access token\n\n`POST {endpoint}` (the `token_endpoint` of the authorization-server metadata) \
         answers `{{\"access_token\", \"token_type\": \"Bearer\", \"expires_in\": {}, \"scope\"}}`. The token is a \
         JWT (`typ: at+jwt`) signed with a key published at `{origin}{}`; it works until it expires. Add \
         `scope=<space-separated scopes>` to ask for fewer scopes, and `resource={origin}` (RFC 8707; any resource \
         named in the protected-resource metadata) to name what it is for.\n",
        tokens.ttl.as_secs(),
        config.endpoints.jwks,
    );
    if let Some(anonymous) = &tokens.anonymous {
        let _ = writeln!(
            md,
            "Without a client secret (anonymous, scopes {} at most):\n\n```sh\ncurl -X POST {endpoint} \
             -H 'Content-Type: application/json' -d '{{\"grant_type\":\"client_credentials\"}}'\n\
             # -> 200 {{\"access_token\": \"eyJ...\", \"token_type\": \"Bearer\", ...}}\n```\n",
            code_list(&config.scopes.names(&anonymous.scopes))
        );
    }
    if tokens.api_keys && !config.credentials.key_prefixes.is_empty() {
        let _ = writeln!(
            md,
            "With an API key: `client_id` is the key's id and `client_secret` the key, in the form body \
             (`client_secret_post`) or with HTTP Basic (`client_secret_basic`, each form-urlencoded first):\n\n\
             ```sh\ncurl -X POST {endpoint} -d 'grant_type=client_credentials&client_id=<key id>&client_secret=<key>'\n\
             # -> 200 {{\"access_token\": \"eyJ...\", \"token_type\": \"Bearer\", ...}}\n```\n"
        );
    }
    if tokens.jwt_bearer {
        let _ = writeln!(
            md,
            "With an identity assertion (RFC 7523): `grant_type={JWT_BEARER}&assertion=<ID-JAG>`. The ID-JAG \
             (`typ: oauth-id-jag+jwt`) comes from a trusted issuer, names `aud` = `{origin}` and your `client_id`, \
             and works once (`jti`).\n"
        );
    }
}

fn register(md: &mut String, config: &Config, origin: &str) {
    let _ = writeln!(md, "## Register\n");
    if let Some(h) = config.credentials.headers.iter().find(|h| h.anonymous) {
        let _ = writeln!(
            md,
            "Anonymous: no registration call is required. Send any stable identifier in `{}`; it is never \
             trusted for more than the anonymous tier.\n",
            h.display
        );
    }
    let contact = contact(config);
    let lifecycle = &config.lifecycle;
    if !lifecycle.registers() {
        let _ = writeln!(
            md,
            "API keys are issued by the operator of this API{contact}. This server offers no self-service registration.\n"
        );
    }
    if !lifecycle.issues_keys() {
        return;
    }
    let register = format!("{origin}{}", config.endpoints.register);
    let registration = &lifecycle.registration;
    let at_claim = registration.issue_credential == crate::config::IssueCredential::AtClaim;
    if lifecycle.registers() && registration.anonymous && at_claim {
        let _ = writeln!(
            md,
            "Register, then have your operator claim the registration: the API key comes with the claim \
             (JSON in, JSON out):\n\n\
             ```sh\ncurl -s -X POST {register} -H 'Content-Type: application/json' \
             -d '{{\"type\": \"anonymous\", \"client_name\": \"my-agent\"}}'\n# -> 200 OK\n```\n\n\
             The answer has `key_id` and `credential_issued: \"at_claim\"` (no key yet){}. \
             The claim answer carries `credential` (the key, shown exactly once: store it), with `scopes` and `tier`. \
             At most {} anonymous registrations per client address per hour.\n",
            claim::offer(config),
            registration.per_hour,
        );
    } else if lifecycle.registers() && registration.anonymous {
        let _ = writeln!(
            md,
            "Register to get an API key at once (JSON in, JSON out; the key is shown exactly once, store it):\n\n\
             ```sh\ncurl -s -X POST {register} -H 'Content-Type: application/json' \
             -d '{{\"type\": \"anonymous\", \"client_name\": \"my-agent\"}}'\n# -> 200 OK\n```\n\n\
             The answer has `credential` (the key), `key_id`, `scopes` ({}), `tier` (`{}`){}. \
             Add `\"scopes\": [...]` to ask for fewer scopes. At most {} anonymous registrations per client address \
             per hour.\n",
            code_list(&config.scopes.names(&registration.scopes)),
            config.tiers.get(registration.tier).name,
            claim::offer(config),
            registration.per_hour,
        );
    }
    if lifecycle.registers() && registration.access_token {
        let _ = writeln!(
            md,
            "Every registration answer also carries an `access_token` (a JWT to send as `Authorization: Bearer`, \
             with `token_type` and `expires_in`) minted from the new key. When it expires, get a new one from the \
             token endpoint with the key (see Tokens); revoking the key ends its tokens too.\n"
        );
    }
    if lifecycle.registers() {
        let _ = writeln!(
            md,
            "The register, claim and key bodies ignore members they do not know (as RFC 7591 does for client \
             metadata) and list them, sorted, in the answer's `ignored_members` (absent when none). `type` and \
             `identity_type` name one member, as do `assertion` and `identity_assertion`, and `scopes`, \
             `requested_scopes` and `scope`: send one name, or several with the same value. A refused body is a \
             `400` whose `message` names the member and what was wrong with it. `email` and `username`, when sent, \
             are kept as the registration's contact details for the person who claims it. This service keeps no \
             passwords: a `password` is ignored, and the answer's `message` says how the agent signs in again \
             (with its key).\n"
        );
    }
    let id_jag_issuers = config
        .trusted_issuers
        .iter()
        .filter(|i| i.identity_assertions);
    if lifecycle.registers() && id_jag_issuers.clone().next().is_some() {
        let issuers: Vec<String> = id_jag_issuers.map(|i| format!("`{}`", i.issuer)).collect();
        let _ = writeln!(
            md,
            "With an identity: `POST {register}` with an ID-JAG (`typ: oauth-id-jag+jwt`, `aud` = `{origin}`) from a \
             trusted issuer ({}) as `{{\"type\": \"identity_assertion\", \"assertion_type\": \"{}\", \"assertion\": \"<JWT>\"}}`. \
             The key comes with the `{}` tier. Each assertion works once (`jti`).\n",
            issuers.join(", "),
            ID_JAG,
            config.tiers.get(registration.claimed_tier).name,
        );
    }
    if lifecycle.registers() {
        if let Some(email) = claim::verified_email(config) {
            let _ = writeln!(
                md,
                "With a verified e-mail address: `POST {register}` with `{{\"type\": \"identity_assertion\", \
                 \"assertion_type\": \"{VERIFIED_EMAIL}\", \"assertion\": \"<id_token>\"}}`, where {email}. The key \
                 comes with the `{}` tier. Each id_token works once.\n",
                config.tiers.get(registration.claimed_tier).name,
            );
        }
    }
    if lifecycle.keys.enabled {
        let keys = format!("{origin}{}", config.endpoints.keys);
        let _ = writeln!(
            md,
            "Manage keys with a key: `POST {keys}` with `{{\"name\", \"scopes\"}}` creates one (only scopes the \
             calling key holds; the secret is shown once), `GET {keys}` lists your keys (no secrets), \
             `POST {keys}/{{key_id}}/rotate` returns a new secret (the old one stops working{}), \
             `DELETE {keys}/{{key_id}}` revokes. `GET {origin}{}` lists every scope.\n\n\
             In these answers a key's secret is `credential` and its id `key_id`, the names registration uses. \
             They also carry `key` (the same secret) and `id` (the same id): deprecated aliases, kept for clients \
             written against earlier versions; read `credential` and `key_id`.\n",
            if lifecycle.keys.rotation_grace.is_zero() {
                " at once".to_owned()
            } else {
                format!(" after {}", span(lifecycle.keys.rotation_grace))
            },
            config.endpoints.scopes,
        );
        if let (Some(tier), Some(h)) = (
            lifecycle.keys.anonymous_tier,
            config.credentials.headers.iter().find(|h| h.anonymous),
        ) {
            let tier = config.tiers.get(tier);
            let _ = writeln!(
                md,
                "Or with no key yet: send your stable identifier in `{}` to `POST {keys}` and you get a key in the                  `{}` tier (scopes: {}); the same identifier lists, rotates and revokes the keys it created. At most                  {} keys created this way per client address per hour.\n",
                h.display,
                tier.name,
                code_list(&config.scopes.names(&tier.scopes)),
                lifecycle.registration.per_hour,
            );
        }
    }
}

/// A duration in words: `24 hours`, `30 minutes`, `1 day`, or `1h 30m` when it is
/// no whole number of one unit.
fn span(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    let whole = [
        (86_400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ]
    .into_iter()
    .find(|(unit, _)| secs > 0 && secs % unit == 0);
    match whole {
        Some((unit, name)) if secs / unit == 1 => format!("1 {name}"),
        Some((unit, name)) => format!("{} {name}s", secs / unit),
        None => humantime::format_duration(duration).to_string(),
    }
}

fn use_the_credential(md: &mut String, config: &Config, origin: &str) {
    let _ = writeln!(md, "## Use the credential\n");
    let headers = credential_headers(config, "<key>");
    if !headers.is_empty() {
        let _ = writeln!(
            md,
            "Send the key on every request, in one of these headers (exactly one, once): {}. \
             Two different credentials in one request are refused with `400`.\n",
            headers.join(", ")
        );
    }
    let _ = writeln!(md, "Each example shows the answer you get:\n");
    let routes: Vec<&Route> = config.policy.routes().collect();
    // The plainest protected route makes the example: a GET, then the fewest path
    // parameters, then the shortest path.
    let plainest = |r: &&&Route| {
        (
            !r.methods.contains(&http::Method::GET),
            r.path.matches('{').count(),
            r.path.len(),
        )
    };
    let protected = routes
        .iter()
        .filter(|r| r.access == Access::Credential && r.min_tier.is_none())
        .min_by_key(plainest);
    if let (Some(route), Some(header)) = (protected, headers.first()) {
        let curl = curl(origin, route);
        let scopes = config.scopes.names(&route.scopes);
        let _ = writeln!(md, "```sh\n{curl}\n# -> 401 Unauthorized\n```\n");
        let header = header.trim_matches('`');
        let need = if scopes.is_empty() {
            String::new()
        } else {
            format!(" (with a key that has {})", code_list(&scopes))
        };
        let _ = writeln!(md, "```sh\n{curl} -H '{header}'\n# -> 200 OK{need}\n```\n");
    }
    let anonymous = routes
        .iter()
        .filter(|r| r.access == Access::Anonymous && r.min_tier.is_none())
        .filter(|r| {
            r.scopes
                .is_subset_of(&config.tiers.get(TierId::ANONYMOUS).scopes)
        })
        .min_by_key(plainest);
    if let Some(route) = anonymous {
        let curl = curl(origin, route);
        let header = config
            .credentials
            .headers
            .iter()
            .find(|h| h.anonymous)
            .map(|h| format!(" -H '{}: my-agent'", h.display))
            .unwrap_or_default();
        let _ = writeln!(md, "```sh\n{curl}{header}\n# -> 200 OK\n```\n");
    }
    let _ = writeln!(
        md,
        "What each endpoint requires:\n\n| Method | Path | Access | Scopes | Minimum tier |\n|---|---|---|---|---|"
    );
    for route in routes {
        let methods = if route.methods == crate::policy::MethodSet::ANY {
            "any".to_owned()
        } else {
            route.methods.to_string()
        };
        let access = match route.access {
            Access::Public => "public",
            Access::Anonymous => "anonymous allowed",
            Access::Credential => "credential",
        };
        let scopes = config.scopes.names(&route.scopes);
        let tier = route.min_tier.map_or_else(
            || "-".to_owned(),
            |t| format!("`{}`", config.tiers.get(t).name),
        );
        let _ = writeln!(
            md,
            "| {methods} | `{}` | {access} | {} | {tier} |",
            route.path,
            if scopes.is_empty() {
                "-".to_owned()
            } else {
                code_list(&scopes)
            }
        );
    }
    let _ = writeln!(md);
}

fn scopes(md: &mut String, config: &Config) {
    let _ = writeln!(md, "## Scopes\n\n| Scope | Grants |\n|---|---|");
    for scope in config.scopes.all() {
        let _ = writeln!(md, "| `{}` | {} |", scope.name, scope.description);
    }
    // The wildcard example is one of this API's own prefixes, never a made-up scope.
    let prefix = config
        .scopes
        .all()
        .iter()
        .find_map(|s| s.name.split_once(':').map(|(prefix, _)| prefix));
    match prefix {
        Some(prefix) => {
            let _ = writeln!(
                md,
                "\nA wildcard such as `{prefix}:*` grants every scope declared under its prefix (a wildcard cannot be \
                 asked for unless it is declared in the table above: an undeclared one is refused with \
                 `INVALID_SCOPE`). A route requires all the scopes it lists.\n"
            );
        }
        None => {
            let _ = writeln!(md, "\nA route requires all the scopes it lists.\n");
        }
    }
}

fn rate_limits(md: &mut String, config: &Config) {
    let _ = writeln!(md, "## Rate limits\n");
    let registration = &config.lifecycle.registration;
    if config.lifecycle.registers() {
        let limit = |n: u32| match n {
            0 => "unlimited".to_owned(),
            n => format!("{n} per hour"),
        };
        let mut kinds = Vec::new();
        if registration.anonymous {
            kinds.push(format!("anonymous {}", limit(registration.per_hour)));
        }
        if config.identity_issuers().next().is_some() {
            kinds.push(format!(
                "with an identity assertion {}",
                limit(registration.identity_per_hour)
            ));
        }
        if !kinds.is_empty() {
            let _ = writeln!(
                md,
                "Registration is limited per client address: {} (`429 RATE_LIMITED` with `Retry-After` beyond \
                 that).",
                kinds.join(", ")
            );
        }
    }
    let limited: Vec<_> = config
        .tiers
        .all()
        .iter()
        .filter(|t| !t.limits.is_unlimited())
        .collect();
    if limited.is_empty() {
        let _ = writeln!(
            md,
            "No other rate limits or quotas are configured for this API. On `429`, wait as long as `Retry-After` \
             says before retrying.\n"
        );
        return;
    }
    let _ = writeln!(
        md,
        "Requests count against the credential that sent them: the API key, the token's subject, the anonymous \
         identifier, or, with none of these, the client address.{}\n\n| Tier | Rate limits | Quota |\n|---|---|---|",
        match (&config.limits.global, config.lifecycle.store.is_shared()) {
            (Some(global), shared) if global.quotas || shared => {
                " Every window and quota is counted once across all instances of this server, however requests \
                 are spread over them; `RateLimit-Remaining` is that shared count, as of at most a few requests \
                 ago."
            }
            (Some(_), _) => {
                " Every rate window is counted once across all instances of this server, however requests \
                 are spread over them; `RateLimit-Remaining` is that shared count, as of at most a few requests \
                 ago."
            }
            (None, true) => {
                " Rate windows are counted by each instance of this server separately (requests spread over \
                 several instances may together pass more than one window allows); quotas are counted across all \
                 of them."
            }
            (None, false) => "",
        }
    );
    for tier in &limited {
        let rates = rate_texts(&tier.limits);
        let quota = tier
            .limits
            .quota
            .map_or_else(|| "none".to_owned(), quota_text);
        let rates = if rates.is_empty() {
            "none".to_owned()
        } else {
            rates.join(", ")
        };
        let _ = writeln!(md, "| `{}` | {rates} | {quota} |", tier.name);
    }
    let styles = config.limits.headers;
    let mut headers = Vec::new();
    if styles.draft {
        headers.push(
            "`RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds) for the tightest window, \
             and `RateLimit-Policy` listing every window (`10;w=1, 300;w=60`)",
        );
    }
    if styles.structured {
        headers.push(
            "`RateLimit-Policy` (`\"free-60s\";q=300;w=60`) and `RateLimit` (`\"free-60s\";r=299;t=1`), one item per window",
        );
    }
    if styles.legacy {
        headers.push("`X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (a unix time in seconds)");
    }
    if !headers.is_empty() {
        let _ = writeln!(
            md,
            "\nEvery response to a limited request carries {}. A reset is the time until the window is full again, \
             or, when nothing is left, until the next request passes.",
            headers.join("; ")
        );
    }
    let (rated, quota) = limit_kinds(config);
    if rated {
        let _ = writeln!(
            md,
            "\n- `429 RATE_LIMIT_EXCEEDED`: wait `Retry-After` seconds (the same moment as the reset), then retry."
        );
    }
    if !quota {
        let _ = writeln!(md);
        return;
    }
    if !rated {
        let _ = writeln!(md);
    }
    match &config.limits.payments {
        None => {
            let _ = writeln!(
                md,
                "- `402 QUOTA_EXCEEDED`: the quota of the period is used up; it renews at the reset, or use a credential \
                 of a higher tier.\n"
            );
        }
        Some(payments) => {
            let prices: Vec<String> = payments
                .accepts
                .iter()
                .map(|a| {
                    format!(
                        "{} atomic units of `{}` on `{}` to `{}`",
                        a.amount, a.asset, a.network, a.pay_to
                    )
                })
                .collect();
            let _ = writeln!(
                md,
                "- `402 PAYMENT_REQUIRED`: the quota of the period is used up. Pay with [x402](https://x402.org): the \
                 `PAYMENT-REQUIRED` header holds the v2 requirements (the body's `accepts`, the v1 form). Retry the \
                 request with `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT` (v1); the answer carries `PAYMENT-RESPONSE` \
                 (or `X-PAYMENT-RESPONSE`) once the payment settles. One payment buys {} request(s). Price: {}. \
                 A payment is settled only when the request was served, and each payment is accepted once.\n",
                payments.requests_per_payment,
                prices.join("; or ")
            );
        }
    }
}

/// A window in words: `second`, `minute`, `hour`, `day`, or `N seconds`.
fn window(secs: u64) -> String {
    match secs {
        1 => "second".into(),
        60 => "minute".into(),
        3600 => "hour".into(),
        86_400 => "day".into(),
        n => format!("{n} seconds"),
    }
}

fn revocation(md: &mut String, config: &Config, origin: &str) {
    let tokens = if config.tokens.enabled {
        format!(
            " An access token is revoked with `POST {origin}{}` and `token=<access token>`: from the next \
             request on it is refused with `401 TOKEN_REVOKED`.",
            config.endpoints.revoke
        )
    } else {
        String::new()
    };
    if config.lifecycle.self_service() {
        let _ = writeln!(
            md,
            "## Revocation\n\nTo give up a key (or if it leaked), `POST {origin}{}` with `{{\"credential\": \"<key>\"}}` \
             (`key` is accepted in its place): the answer is `{{\"revoked\": 1}}` and the key is refused from the next request on. The OAuth revocation \
             endpoint (RFC 7009), `POST {origin}{}` with `token=<key>`, does the same. Keys declared in the server's \
             configuration cannot be revoked this way.{tokens}\n",
            config.endpoints.agent_revoke, config.endpoints.revoke
        );
        return;
    }
    let contact = contact(config);
    let _ = writeln!(
        md,
        "## Revocation\n\nIf a key leaks, ask the operator to revoke it{contact}; a revoked key is refused with \
         `401 INVALID_API_KEY`. The OAuth revocation endpoint (RFC 7009) is `POST {origin}{}` with \
         `token=<credential>`; keys declared in the server's configuration cannot be revoked through it.{tokens}\n",
        config.endpoints.revoke
    );
}

fn links(md: &mut String, config: &Config, origin: &str) {
    let _ = writeln!(md, "## Links\n");
    let _ = writeln!(
        md,
        "- Protected resource metadata: {origin}{PROTECTED_RESOURCE}"
    );
    let _ = writeln!(
        md,
        "- Authorization server metadata: {origin}{AUTHORIZATION_SERVER}"
    );
    let _ = writeln!(md, "- API catalog: {origin}{API_CATALOG}");
    if let Some(url) = &config.discovery.openapi_url {
        let _ = writeln!(md, "- OpenAPI description: {url}");
    }
    if let Some(url) = &config.service.documentation_url {
        let _ = writeln!(md, "- Human documentation: {url}");
    }
    if config.discovery.mcp_server_card.is_some() {
        let _ = writeln!(md, "- MCP server card: {origin}{}", MCP_SERVER_CARD[0]);
    }
    if config.discovery.agent_card.is_some() {
        let _ = writeln!(md, "- Agent card (A2A): {origin}{AGENT_CARD}");
    }
    if let Some(url) = &config.service.terms_url {
        let _ = writeln!(md, "- Terms of service: {url}");
    }
    if let Some(url) = &config.service.privacy_url {
        let _ = writeln!(md, "- Privacy policy: {url}");
    }
    if let Some(contact) = &config.service.contact {
        let _ = writeln!(md, "- Contact: {contact}");
    }
}

/// The ways a credential may be sent, as header lines with `value` as the credential.
fn credential_headers(config: &Config, value: &str) -> Vec<String> {
    let mut out = Vec::new();
    if config.credentials.bearer {
        out.push(format!("`Authorization: Bearer {value}`"));
    }
    for h in &config.credentials.headers {
        out.push(format!("`{}: {value}`", h.display));
    }
    out
}

fn contact(config: &Config) -> String {
    config
        .service
        .contact
        .as_ref()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default()
}

fn code_list(names: &str) -> String {
    names
        .split(' ')
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `curl -i [-X METHOD] <origin><example path>` for a route.
fn curl(origin: &str, route: &Route) -> String {
    let method = example_method(route);
    let path = example_path(route);
    if method == "GET" {
        format!("curl -i {origin}{path}")
    } else {
        format!("curl -i -X {method} {origin}{path}")
    }
}

fn example_method(route: &Route) -> &'static str {
    ["GET", "POST", "PUT", "PATCH", "DELETE"]
        .into_iter()
        .find(|m| {
            http::Method::from_bytes(m.as_bytes())
                .is_ok_and(|method| route.methods.contains(&method))
        })
        .unwrap_or("GET")
}

/// A concrete path for a route's template: parameters become `example`.
fn example_path(route: &Route) -> String {
    let mut path = String::new();
    for segment in route.path.split('/').filter(|s| !s.is_empty()) {
        path.push('/');
        path.push_str(if segment.starts_with('{') {
            "example"
        } else {
            segment
        });
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}
