//! The `discovery:` and `service:` sections: the public origins and protected
//! resources the well-known documents are built for, and how the API presents
//! itself in them.
//!
//! Documents only name what the policy serves: a `discovery.resources` prefix no
//! route is under, and a card whose endpoint no route (nor `default: public`)
//! serves, are left out of every document with a warning, not refused, so that a
//! config whose `/mcp` route was removed still starts (or reloads) and simply stops
//! advertising `/mcp`.

use std::time::Duration;

use http::Uri;
use http::uri::Authority;
use serde_norway::Value;

use super::load::Loader;
use super::raw::{self, RawDefault, RawRoute};
use super::values::DAY;
use crate::policy::{HostId, Template, normalize_path};
use crate::tokens::ResourceId;

/// `discovery:`.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// Public origins, `public_url` first, then `discovery.hosts`. Documents are built
    /// for each; a request's `Host` selects one only when it is in this list.
    pub origins: Vec<String>,
    /// `host[:port]` of each origin, lower-case, default port omitted.
    authorities: Vec<String>,
    /// Path prefixes that are protected resources of their own (such as `/mcp`), with
    /// path-inserted metadata: those of `discovery.resources` that some route is
    /// under (the others are left out, with a warning).
    pub resources: Vec<String>,
    /// Also serve the authorization-server metadata at
    /// `/.well-known/openid-configuration`.
    pub openid_configuration: bool,
    /// The API's OpenAPI description (`service-desc` in the api-catalog).
    pub openapi_url: Option<String>,
    /// An operator-written auth.md, served unchanged instead of the generated one.
    pub auth_md: Option<String>,
    /// `Cache-Control: max-age` of the documents.
    pub max_age: Duration,
    /// MCP server card, served at `/.well-known/mcp/server-card.json`; left out
    /// (with a warning) when no route serves its `transport.endpoint`.
    pub mcp_server_card: Option<serde_json::Value>,
    /// A2A agent card, served at `/.well-known/agent-card.json`; left out (with a
    /// warning) when no route serves its `url`.
    pub agent_card: Option<serde_json::Value>,
}

impl Discovery {
    /// The origin a request addressed, by its `Host` (or HTTP/2 `:authority`); the
    /// primary origin when the host is not one of ours, so a forged `Host` cannot
    /// change any URL the proxy publishes.
    #[must_use]
    pub fn host_of<B>(&self, request: &http::Request<B>) -> HostId {
        if self.authorities.len() == 1 {
            return HostId(0);
        }
        let host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().authority().map(Authority::as_str));
        host.and_then(|host| {
            self.authorities.iter().position(|a| {
                a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(strip_default_port(host))
            })
        })
        .map_or(HostId(0), HostId)
    }
}

impl Discovery {
    /// The resource identifiers of this API: each public origin, and each origin with
    /// each protected-resource prefix (`https://api.example.com/mcp`). A token's
    /// [`ResourceId`] is a position in this list.
    #[must_use]
    pub fn resource_identifiers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for origin in &self.origins {
            out.push(origin.clone());
            for prefix in &self.resources {
                out.push(format!("{origin}{prefix}"));
            }
        }
        out
    }

    /// The resource a route of `template` belongs to, as seen from each public
    /// origin (indexed by [`HostId`]): its position in
    /// [`resource_identifiers`](Discovery::resource_identifiers).
    pub(super) fn resource_ids_of(&self, template: &Template) -> Box<[ResourceId]> {
        let per_origin = 1 + self.resources.len();
        let within = self.prefix_of(template).map_or(0, |i| i + 1);
        (0..self.origins.len())
            .map(|origin| {
                // Past u32::MAX no token names it: refused, never opened.
                ResourceId(u32::try_from(origin * per_origin + within).unwrap_or(u32::MAX))
            })
            .collect()
    }

    /// The protected resource a route belongs to: the longest configured resource
    /// prefix its literal prefix starts with (`""` for the root resource).
    pub(super) fn resource_of(&self, template: &Template) -> &str {
        self.prefix_of(template)
            .and_then(|i| self.resources.get(i))
            .map_or("", String::as_str)
    }

    /// The index in `resources` of the longest prefix `template`'s literal prefix
    /// starts with; `None` for the root resource.
    fn prefix_of(&self, template: &Template) -> Option<usize> {
        longest_prefix(&self.resources, &template.literal_prefix())
    }
}

/// The index of the longest of `prefixes` that `literal` (a route's literal prefix)
/// starts with, at a segment boundary.
fn longest_prefix(prefixes: &[String], literal: &str) -> Option<usize> {
    prefixes
        .iter()
        .enumerate()
        .filter(|(_, prefix)| {
            literal
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .max_by_key(|(_, prefix)| prefix.len())
        .map(|(i, _)| i)
}

/// What the policy serves, as far as the documents need to know: the routes' path
/// templates (those that parse; a bad one is the policy's error to report) and
/// whether unmatched requests are forwarded.
pub(super) struct Served {
    templates: Vec<Template>,
    default_public: bool,
}

impl Served {
    /// The paths of `routes:` and the `default:` rule.
    pub(super) fn of(
        routes: &[(String, RawRoute)],
        default: &RawDefault,
        ignore_case: bool,
    ) -> Served {
        Served {
            templates: routes
                .iter()
                .filter_map(|(_, route)| Template::parse(&route.path, ignore_case).ok())
                .collect(),
            default_public: match default {
                RawDefault::Public => true,
                RawDefault::Deny => false,
            },
        }
    }

    /// True when a request to the normalised `path` reaches the upstream through a
    /// route (for some method) or the public default rule.
    fn serves(&self, path: &str) -> bool {
        self.default_public || self.templates.iter().any(|t| t.matches(path))
    }
}

/// The normalised path of a card's endpoint when it is on this API: a path, or an
/// absolute URL on one of its public origins (`authorities`). `None` for another
/// host's URL, or one that is not a URL at all: not this policy's to judge.
fn local_path(endpoint: &str, authorities: &[String]) -> Option<String> {
    if !endpoint.starts_with('/') {
        let uri = endpoint.parse::<Uri>().ok()?;
        let authority = uri.authority()?.as_str().to_ascii_lowercase();
        let ours = uri.scheme().is_some()
            && authorities
                .iter()
                .any(|a| *a == strip_default_port(&authority));
        if !ours {
            return None;
        }
        return normalize_path(uri.path()).ok().map(|p| p.into_owned());
    }
    let path = endpoint.split(['?', '#']).next().unwrap_or(endpoint);
    normalize_path(path).ok().map(|p| p.into_owned())
}

fn strip_default_port(host: &str) -> &str {
    host.strip_suffix(":443")
        .or_else(|| host.strip_suffix(":80"))
        .unwrap_or(host)
}

/// A card of `discovery:` and where its endpoint is.
struct Card<'a> {
    /// Its field in the config.
    path: &'a str,
    /// What it is called in a warning.
    name: &'a str,
    /// The keys that lead to its endpoint in the card.
    endpoint: &'a [&'a str],
    /// It was given as the path of a JSON file.
    from_file: bool,
}

/// `service:`.
#[derive(Debug, Clone)]
pub struct Service {
    /// Display name of the API.
    pub name: String,
    /// One-paragraph description.
    pub description: Option<String>,
    /// Human documentation.
    pub documentation_url: Option<String>,
    /// Where to reach the operator (URL or e-mail address).
    pub contact: Option<String>,
    /// Terms of service.
    pub terms_url: Option<String>,
    /// Privacy policy.
    pub privacy_url: Option<String>,
}

impl Service {
    /// The `service:` section; nothing in it can be wrong beyond its YAML type.
    pub(super) fn new(raw: raw::RawService) -> Service {
        Service {
            name: raw.name.unwrap_or_else(|| "API".into()),
            description: raw.description,
            documentation_url: raw.documentation_url,
            contact: raw.contact,
            terms_url: raw.terms_url,
            privacy_url: raw.privacy_url,
        }
    }
}

impl Loader {
    pub(super) fn discovery(
        &mut self,
        raw: raw::RawDiscovery,
        public_url: Option<&str>,
        served: &Served,
    ) -> Discovery {
        let mut origins: Vec<String> = public_url.map(str::to_owned).into_iter().collect();
        for (i, host) in raw.hosts.iter().enumerate() {
            let path = format!("discovery.hosts[{i}]");
            if let Some(origin) = self.public_url(host, &path) {
                if origins.contains(&origin) {
                    self.error(&path, format!("`{origin}` is listed twice"));
                } else {
                    origins.push(origin);
                }
            }
        }
        let authorities: Vec<String> = origins
            .iter()
            .map(|o| {
                let authority = o.split_once("://").map_or(o.as_str(), |(_, a)| a);
                strip_default_port(&authority.to_ascii_lowercase()).to_owned()
            })
            .collect();
        let mut resources: Vec<(usize, String)> = Vec::new();
        for (i, prefix) in raw.resources.iter().enumerate() {
            let path = format!("discovery.resources[{i}]");
            let trimmed = prefix.trim_end_matches('/');
            match normalize_path(trimmed) {
                Ok(normal)
                    if normal == trimmed
                        && !trimmed.is_empty()
                        && !trimmed.contains(['{', '}', '%']) =>
                {
                    // One resource, one identifier: a token names it by position.
                    if resources.iter().any(|(_, r)| r == trimmed) {
                        self.error(&path, format!("`{trimmed}` is listed twice"));
                    } else {
                        resources.push((i, trimmed.to_owned()));
                    }
                }
                _ => self.error(
                    &path,
                    format!("`{prefix}` is not a plain path prefix such as `/mcp`"),
                ),
            }
        }
        let resources = self.served_resources(resources, served);
        let openapi_url = raw.openapi_url.filter(|url| {
            let ok = url
                .parse::<Uri>()
                .is_ok_and(|u| u.scheme().is_some() && u.authority().is_some());
            if !ok {
                self.error(
                    "discovery.openapi_url",
                    format!("`{url}` is not an absolute URL"),
                );
            }
            ok
        });
        let auth_md = raw.auth_md_file.and_then(|file| {
            let resolved = self.resolve(&file);
            match std::fs::read_to_string(&resolved) {
                Ok(text) => Some(text),
                Err(e) => {
                    self.error(
                        "discovery.auth_md_file",
                        format!("cannot read `{}`: {e}", resolved.display()),
                    );
                    None
                }
            }
        });
        let mcp_server_card = raw.mcp_server_card.and_then(|v| {
            let card = Card {
                path: "discovery.mcp_server_card",
                name: "MCP server card",
                endpoint: &["transport", "endpoint"],
                from_file: matches!(v, Value::String(_)),
            };
            let json = self.card(v, card.path)?;
            self.served_card(json, &card, &authorities, served)
        });
        let agent_card = raw.agent_card.and_then(|v| {
            let card = Card {
                path: "discovery.agent_card",
                name: "agent card",
                endpoint: &["url"],
                from_file: matches!(v, Value::String(_)),
            };
            let json = self.card(v, card.path)?;
            self.served_card(json, &card, &authorities, served)
        });
        Discovery {
            origins,
            authorities,
            resources,
            openid_configuration: raw.openid_configuration,
            openapi_url,
            auth_md,
            // A cache may keep the documents this long after a reload changed them.
            max_age: self.duration(
                raw.max_age,
                "discovery.max_age",
                Duration::from_secs(3600),
                Duration::ZERO..=DAY * 7,
            ),
            mcp_server_card,
            agent_card,
        }
    }

    /// The listed resource prefixes (with their index in the list) that some route
    /// is under, the route's own resource; each other one is warned about and left
    /// out. Leaving one out moves no route to another resource: none was in it.
    fn served_resources(&mut self, listed: Vec<(usize, String)>, served: &Served) -> Vec<String> {
        let prefixes: Vec<String> = listed.iter().map(|(_, p)| p.clone()).collect();
        let mut used = vec![false; prefixes.len()];
        for template in &served.templates {
            if let Some(i) = longest_prefix(&prefixes, &template.literal_prefix()) {
                if let Some(slot) = used.get_mut(i) {
                    *slot = true;
                }
            }
        }
        let mut out = Vec::with_capacity(listed.len());
        for ((i, prefix), used) in listed.into_iter().zip(used) {
            if used {
                out.push(prefix);
            } else {
                self.warn(
                    &format!("discovery.resources[{i}]"),
                    format!(
                        "no route is under `{prefix}`, so no document advertises it (no metadata at \
                         `/.well-known/oauth-protected-resource{prefix}`, no token audience, not in \
                         auth.md); add a route such as `{prefix}/{{*rest}}`, or remove it"
                    ),
                );
            }
        }
        out
    }

    /// The card, unless its endpoint is on this API and no route serves it: then a
    /// warning, and no card (a card naming a dead endpoint is worse than none).
    fn served_card(
        &mut self,
        json: serde_json::Value,
        card: &Card<'_>,
        authorities: &[String],
        served: &Served,
    ) -> Option<serde_json::Value> {
        let endpoint = card
            .endpoint
            .iter()
            .try_fold(&json, |value, key| value.get(key))
            .and_then(serde_json::Value::as_str);
        let Some(endpoint) = endpoint else {
            return Some(json);
        };
        match local_path(endpoint, authorities) {
            Some(path) if !served.serves(&path) => {
                let field = card.endpoint.join(".");
                let at = if card.from_file {
                    card.path.to_owned()
                } else {
                    format!("{}.{field}", card.path)
                };
                self.warn(
                    &at,
                    format!(
                        "no route serves the {}'s `{field}` `{endpoint}`, so the card is not served; \
                         add a route for it, or change or remove the card",
                        card.name
                    ),
                );
                None
            }
            _ => Some(json),
        }
    }

    /// A card given inline (a YAML mapping) or as the path of a JSON file.
    pub(super) fn card(&mut self, value: Value, path: &str) -> Option<serde_json::Value> {
        let json = match value {
            Value::String(file) => {
                let resolved = self.resolve(&file);
                let text = match std::fs::read_to_string(&resolved) {
                    Ok(text) => text,
                    Err(e) => {
                        self.error(path, format!("cannot read `{}`: {e}", resolved.display()));
                        return None;
                    }
                };
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(json) => json,
                    Err(e) => {
                        self.error(path, format!("`{}` is not JSON: {e}", resolved.display()));
                        return None;
                    }
                }
            }
            other => match serde_json::to_value(&other) {
                Ok(json) => json,
                Err(e) => {
                    self.error(path, format!("cannot be written as JSON: {e}"));
                    return None;
                }
            },
        };
        if !json.is_object() {
            self.error(
                path,
                "a card must be a mapping (a JSON object), or the path of a JSON file",
            );
            return None;
        }
        Some(json)
    }
}
