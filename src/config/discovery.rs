//! The `discovery:` and `service:` sections: the public origins and protected
//! resources the well-known documents are built for, and how the API presents
//! itself in them.

use std::time::Duration;

use http::Uri;
use http::uri::Authority;
use serde_norway::Value;

use super::load::Loader;
use super::raw;
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
    /// path-inserted metadata.
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
    /// MCP server card, served at `/.well-known/mcp/server-card.json`.
    pub mcp_server_card: Option<serde_json::Value>,
    /// A2A agent card, served at `/.well-known/agent-card.json`.
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
        let literal = template.literal_prefix();
        self.resources
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
}

fn strip_default_port(host: &str) -> &str {
    host.strip_suffix(":443")
        .or_else(|| host.strip_suffix(":80"))
        .unwrap_or(host)
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
        let authorities = origins
            .iter()
            .map(|o| {
                let authority = o.split_once("://").map_or(o.as_str(), |(_, a)| a);
                strip_default_port(&authority.to_ascii_lowercase()).to_owned()
            })
            .collect();
        let mut resources: Vec<String> = Vec::new();
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
                    if resources.iter().any(|r| r == trimmed) {
                        self.error(&path, format!("`{trimmed}` is listed twice"));
                    } else {
                        resources.push(trimmed.to_owned());
                    }
                }
                _ => self.error(
                    &path,
                    format!("`{prefix}` is not a plain path prefix such as `/mcp`"),
                ),
            }
        }
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
        let mcp_server_card = raw
            .mcp_server_card
            .and_then(|v| self.card(v, "discovery.mcp_server_card"));
        let agent_card = raw
            .agent_card
            .and_then(|v| self.card(v, "discovery.agent_card"));
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
