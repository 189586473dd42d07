//! The `routes:`, `default:` and `paths:` sections: the compiled route table,
//! each route with the scopes and tier it needs, the resource it belongs to and
//! the challenges its rejections carry.

use std::collections::HashSet;

use super::discovery::Discovery;
use super::load::Loader;
use super::locate::join;
use super::raw::{self, RawAccess, RawDefault};
use crate::policy::Challenges;
use crate::policy::{Access, DefaultRule, MethodSet, Route, RouteSpec, RouteTable, Template};
use crate::protocol::PROTECTED_RESOURCE;
use crate::scope::{ScopeRegistry, ScopeSet};
use crate::tier::Tiers;

impl Loader {
    pub(super) fn policy(
        &mut self,
        raw: Vec<(String, raw::RawRoute)>,
        default: RawDefault,
        ignore_case: bool,
        registry: &ScopeRegistry,
        tiers: &Tiers,
        discovery: &Discovery,
    ) -> Option<RouteTable> {
        let mut specs = Vec::new();
        let mut paths = Vec::new();
        let mut ids: HashSet<String> = HashSet::new();
        for (path, route) in raw {
            // Every field of the route is checked before a bad one drops it, so that
            // one mistake does not hide the next in the same route.
            let before = self.errors.len();
            let template = match Template::parse(&route.path, ignore_case) {
                Ok(t) => Some(t),
                Err(message) => {
                    self.error(&join(&path, "path"), format!("`{}` {message}", route.path));
                    None
                }
            };
            let mut methods = MethodSet::default();
            for (i, name) in route.methods.iter().enumerate() {
                match MethodSet::parse(name) {
                    Some(m) => methods.insert(m),
                    None => self.error(
                        &format!("{path}.methods[{i}]"),
                        format!("`{name}` is not an HTTP method"),
                    ),
                }
            }
            if route.methods.is_empty() {
                methods = MethodSet::ANY;
            }
            let required = self.required_scopes(&join(&path, "scopes"), &route.scopes, registry);
            let access = match route.access {
                RawAccess::Public => Access::Public,
                RawAccess::Anonymous => Access::Anonymous,
                RawAccess::Credential => Access::Credential,
            };
            if access == Access::Public && (!route.scopes.is_empty() || route.min_tier.is_some()) {
                self.error(&join(&path, "access"), "a public route cannot require scopes or a tier; use `anonymous` or `credential`");
            }
            let min_tier = match &route.min_tier {
                None => Some(None),
                Some(name) => match tiers.find(name) {
                    Some(id) => Some(Some(id)),
                    None => {
                        self.unknown_tier(&join(&path, "min_tier"), name, tiers);
                        None
                    }
                },
            };
            let id = route.id.clone().unwrap_or_else(|| {
                if route.methods.is_empty() {
                    route.path.clone()
                } else {
                    format!("{} {}", route.methods.join(","), route.path)
                }
            });
            if id.starts_with("authmd.") {
                self.error(
                    &join(&path, "id"),
                    format!("route id `{id}`: ids starting with `authmd.` name the proxy's own endpoints in metrics"),
                );
            } else if !ids.insert(id.clone()) {
                self.error(&join(&path, "id"), format!("route id `{id}` is used twice"));
            }
            let (Some(template), Some(required), Some(min_tier)) = (template, required, min_tier)
            else {
                continue;
            };
            if self.errors.len() != before {
                continue;
            }
            let resources = discovery.resource_ids_of(&template);
            let scope_names = registry.names(&required);
            let resource = discovery.resource_of(&template);
            let challenges = discovery
                .origins
                .iter()
                .map(|origin| {
                    Challenges::new(
                        &format!("{origin}{PROTECTED_RESOURCE}{resource}"),
                        &scope_names,
                    )
                })
                .collect();
            specs.push(RouteSpec {
                template,
                route: Route {
                    id,
                    index: 0,
                    path: route.path.clone(),
                    methods,
                    access,
                    scopes: required,
                    min_tier,
                    metered: route.metered.unwrap_or(true),
                    challenges,
                    resources,
                },
            });
            paths.push(path);
        }
        let default = match default {
            RawDefault::Deny => DefaultRule::Deny,
            RawDefault::Public => DefaultRule::Public(Box::new(Route {
                id: "default".into(),
                index: 0,
                path: "/{*rest}".into(),
                methods: MethodSet::ANY,
                access: Access::Public,
                scopes: ScopeSet::EMPTY,
                min_tier: None,
                metered: true,
                challenges: Box::new([]),
                resources: Box::new([]),
            })),
        };
        match RouteTable::build(specs, default) {
            Ok(table) => Some(table),
            Err(conflicts) => {
                for conflict in conflicts {
                    let path = paths
                        .get(conflict.index)
                        .cloned()
                        .unwrap_or_else(|| "routes".into());
                    self.error(&join(&path, "path"), conflict.message);
                }
                None
            }
        }
    }
}
