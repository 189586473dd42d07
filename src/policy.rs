//! The compiled route table: (method, normalised path) -> [`Route`], and the
//! authorization of a principal against a route.
//!
//! Routes are grouped by path template; groups are kept in an order that extends
//! "at least as specific" (see [`template`]), so the first group whose template
//! matches is the most specific. Within a group the method decides: an explicit
//! method list beats a route without one. A path that matches a group but none of its
//! methods is answered 405 rather than falling through to a less specific rule, so a
//! protected prefix cannot be bypassed with an unlisted method. The config loader
//! refuses any set of routes where some request would have no single most specific
//! route ([`RouteTable::build`]).

mod challenges;
mod path;
mod template;

use std::fmt;

use http::Method;

use crate::credentials::Principal;
use crate::scope::ScopeSet;
use crate::tier::{TierId, Tiers};
use crate::tokens::ResourceId;
pub use challenges::Challenges;
pub use path::{PathError, normalize_path};
pub(crate) use template::Template;

/// Index of a public origin (`public_url` is 0, then `discovery.hosts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostId(pub usize);

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Forwarded without looking at credentials.
    Public,
    /// Anonymous agents allowed (with the anonymous tier's scopes); a presented
    /// credential is still verified, and a bad one refused.
    Anonymous,
    /// A verified credential is required.
    Credential,
}

/// A set of HTTP methods; the standard ones only (others are matched by a route
/// without a method list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MethodSet(u16);

const METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
    Method::CONNECT,
];

impl MethodSet {
    /// Every method, including extension methods.
    pub const ANY: MethodSet = MethodSet(u16::MAX);

    fn bit(method: &Method) -> u16 {
        METHODS
            .iter()
            .position(|m| m == method)
            .map_or(1 << 15, |i| 1 << i)
    }

    /// Parses a method name; only the standard methods are accepted.
    #[must_use]
    pub fn parse(name: &str) -> Option<MethodSet> {
        METHODS
            .iter()
            .position(|m| m.as_str().eq_ignore_ascii_case(name))
            .map(|i| MethodSet(1 << i))
    }

    /// The set of the named standard methods (unknown names are skipped).
    #[must_use]
    pub fn of(names: &[&str]) -> MethodSet {
        let mut set = MethodSet::default();
        for name in names {
            if let Some(m) = MethodSet::parse(name) {
                set.insert(m);
            }
        }
        set
    }

    /// Adds the methods of `other`.
    pub fn insert(&mut self, other: MethodSet) {
        self.0 |= other.0;
        // A route for GET also answers HEAD, as HTTP semantics require.
        if other.0 & 1 != 0 {
            self.0 |= 1 << 1;
        }
    }

    /// True when `method` is in the set.
    #[must_use]
    pub fn contains(&self, method: &Method) -> bool {
        self.0 & Self::bit(method) != 0
    }

    fn intersects(&self, other: &MethodSet) -> bool {
        self.0 & other.0 != 0
    }

    fn is_any(&self) -> bool {
        *self == Self::ANY
    }
}

impl fmt::Display for MethodSet {
    /// The `Allow` header syntax: `GET, HEAD, POST`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (i, method) in METHODS.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                if !first {
                    f.write_str(", ")?;
                }
                f.write_str(method.as_str())?;
                first = false;
            }
        }
        Ok(())
    }
}

/// Why the policy refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyError {
    /// No route matches and the default rule denies.
    RouteNotFound,
    /// A route matches the path but not the method; these are the methods it takes.
    MethodNotAllowed(MethodSet),
    /// The route needs a credential, or more than anonymous agents hold, and none
    /// was presented.
    MissingCredential,
    /// The credential lacks scopes the route requires.
    InsufficientScope {
        /// The scopes the credential lacks.
        missing: ScopeSet,
    },
    /// The principal's tier is below the route's minimum.
    InsufficientTier(TierId),
    /// The token was issued for another resource of this API than the route's.
    WrongResource,
}

/// One route of the policy.
#[derive(Debug, Clone)]
pub struct Route {
    /// Stable id, used in logs and metric labels.
    pub id: String,
    /// Its position in the compiled table (the default route's is the number of
    /// routes), for per-route meters.
    pub index: usize,
    /// The path template as written in the config.
    pub path: String,
    /// The methods it covers.
    pub methods: MethodSet,
    /// Who may use it.
    pub access: Access,
    /// Scopes required, all of them.
    pub scopes: ScopeSet,
    /// The lowest tier allowed, if any.
    pub min_tier: Option<TierId>,
    /// Requests count against rate limits and quotas (`false`: documentation,
    /// health and pricing pages that should never use up an allowance).
    pub metered: bool,
    /// `WWW-Authenticate` values for refusals on this route, one set per public
    /// origin (indexed by [`HostId`]): they name the protected resource the route
    /// belongs to and the scopes it requires.
    pub challenges: Box<[Challenges]>,
    /// The resource it belongs to, one per public origin (indexed by [`HostId`]):
    /// a token whose `aud` names another resource of this API is refused here.
    pub resources: Box<[ResourceId]>,
}

impl Route {
    /// Checks a principal, on a request to the origin `host`, against the route. A
    /// token for another resource is refused (401) before anything else; an
    /// anonymous principal that falls short is told to authenticate (401); an
    /// authenticated one is refused (403).
    pub fn authorize(
        &self,
        principal: &Principal,
        tiers: &Tiers,
        host: HostId,
    ) -> Result<(), PolicyError> {
        if let Principal::Token(grant) = principal {
            if let Some(resource) = self.resources.get(host.0) {
                if !grant.opens(*resource) {
                    return Err(PolicyError::WrongResource);
                }
            }
        }
        let authenticated = principal.is_authenticated();
        if self.access == Access::Credential && !authenticated {
            return Err(PolicyError::MissingCredential);
        }
        let missing = self.scopes.missing_from(&principal.scopes(tiers));
        if !missing.is_empty() {
            return Err(if authenticated {
                PolicyError::InsufficientScope { missing }
            } else {
                PolicyError::MissingCredential
            });
        }
        if let Some(min) = self.min_tier {
            if principal.tier() < min {
                return Err(if authenticated {
                    PolicyError::InsufficientTier(min)
                } else {
                    PolicyError::MissingCredential
                });
            }
        }
        Ok(())
    }

    /// The challenges of this route as seen from one public origin.
    #[must_use]
    pub fn challenges(&self, host: HostId) -> Option<&Challenges> {
        self.challenges.get(host.0)
    }
}

/// A route before compilation into the table.
#[derive(Debug, Clone)]
pub(crate) struct RouteSpec {
    pub(crate) template: Template,
    pub(crate) route: Route,
}

/// Routes that share one path template, explicit method lists first.
#[derive(Debug)]
struct Group {
    template: Template,
    routes: Vec<Route>,
}

/// What happens to a request no route matches.
#[derive(Debug, Clone)]
pub enum DefaultRule {
    /// Answer 404.
    Deny,
    /// Forward as public.
    Public(Box<Route>),
}

/// The compiled policy.
#[derive(Debug)]
pub struct RouteTable {
    groups: Vec<Group>,
    default: DefaultRule,
}

/// A problem with the route list, naming the routes by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteConflict {
    /// The route the error is reported on.
    pub(crate) index: usize,
    pub(crate) message: String,
}

impl RouteTable {
    /// Compiles the routes, or reports every conflict: two routes with the same
    /// template and a shared method, and every pair that can match the same request
    /// with neither more specific and no route for their overlap.
    pub(crate) fn build(
        specs: Vec<RouteSpec>,
        default: DefaultRule,
    ) -> Result<RouteTable, Vec<RouteConflict>> {
        let mut conflicts = Vec::new();
        // Same template: methods must not overlap.
        for (i, a) in specs.iter().enumerate() {
            for (j, b) in specs.iter().enumerate().skip(i + 1) {
                if a.template.is_equivalent(&b.template)
                    && a.route.methods.intersects(&b.route.methods)
                    && (a.route.methods.is_any() == b.route.methods.is_any())
                {
                    conflicts.push(RouteConflict {
                        index: j,
                        message: format!(
                            "route `{}` repeats `{}` ({}) of route `{}`",
                            b.route.id,
                            b.template,
                            describe_methods(b.route.methods),
                            a.route.id
                        ),
                    });
                }
            }
        }
        // Overlapping templates: one must be within the other, or a third route must
        // cover exactly their overlap.
        for (i, a) in specs.iter().enumerate() {
            for (j, b) in specs.iter().enumerate().skip(i + 1) {
                let Some(overlap) = a.template.intersection(&b.template) else {
                    continue;
                };
                if a.template.is_within(&b.template) || b.template.is_within(&a.template) {
                    continue;
                }
                if specs.iter().any(|c| c.template.is_equivalent(&overlap)) {
                    continue;
                }
                conflicts.push(RouteConflict {
                    index: j,
                    message: format!(
                        "route `{}` ({}) and route `{}` ({}) both match `{}` and neither is more specific; add a route for `{}`",
                        a.route.id,
                        a.template,
                        b.route.id,
                        b.template,
                        overlap.example(),
                        overlap,
                    ),
                });
            }
        }
        if !conflicts.is_empty() {
            return Err(conflicts);
        }
        let mut groups: Vec<Group> = Vec::new();
        for spec in specs {
            match groups
                .iter_mut()
                .find(|g| g.template.is_equivalent(&spec.template))
            {
                Some(group) => group.routes.push(spec.route),
                None => groups.push(Group {
                    template: spec.template,
                    routes: vec![spec.route],
                }),
            }
        }
        for group in &mut groups {
            group.routes.sort_by_key(|r| r.methods.is_any());
        }
        groups.sort_by_cached_key(|g| g.template.sort_key());
        let mut index = 0;
        for route in groups.iter_mut().flat_map(|g| g.routes.iter_mut()) {
            route.index = index;
            index += 1;
        }
        let mut default = default;
        if let DefaultRule::Public(route) = &mut default {
            route.index = index;
        }
        Ok(RouteTable { groups, default })
    }

    /// The route for a request, given its normalised path.
    pub fn find(&self, method: &Method, path: &str) -> Result<&Route, PolicyError> {
        let Some(group) = self.groups.iter().find(|g| g.template.matches(path)) else {
            return match &self.default {
                DefaultRule::Deny => Err(PolicyError::RouteNotFound),
                DefaultRule::Public(route) => Ok(route),
            };
        };
        group
            .routes
            .iter()
            .find(|r| r.methods.contains(method))
            .ok_or_else(|| {
                let mut allowed = MethodSet::default();
                for route in &group.routes {
                    allowed.insert(route.methods);
                }
                PolicyError::MethodNotAllowed(allowed)
            })
    }

    /// All routes, most specific first.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.groups.iter().flat_map(|g| g.routes.iter())
    }

    /// Every route's id in [`Route::index`] order, the default route's last.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        let default = match &self.default {
            DefaultRule::Deny => None,
            DefaultRule::Public(route) => Some(route.id.as_str()),
        };
        self.routes().map(|r| r.id.as_str()).chain(default)
    }
}

fn describe_methods(methods: MethodSet) -> String {
    if methods.is_any() {
        "any method".into()
    } else {
        methods.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, methods: &[&str]) -> Route {
        let mut set = MethodSet::default();
        for m in methods {
            set.insert(MethodSet::parse(m).unwrap());
        }
        if methods.is_empty() {
            set = MethodSet::ANY;
        }
        Route {
            index: 0,
            id: id.into(),
            path: String::new(),
            methods: set,
            access: Access::Public,
            scopes: ScopeSet::EMPTY,
            min_tier: None,
            metered: true,
            challenges: Box::new([]),
            resources: Box::new([]),
        }
    }

    fn table(routes: &[(&str, &str, &[&str])]) -> Result<RouteTable, Vec<RouteConflict>> {
        let specs = routes
            .iter()
            .map(|(id, t, m)| RouteSpec {
                template: Template::parse(t, false).unwrap(),
                route: route(id, m),
            })
            .collect();
        RouteTable::build(specs, DefaultRule::Deny)
    }

    fn found(t: &RouteTable, method: &Method, path: &str) -> String {
        match t.find(method, path) {
            Ok(r) => r.id.clone(),
            Err(PolicyError::RouteNotFound) => "404".into(),
            Err(PolicyError::MethodNotAllowed(m)) => format!("405 {m}"),
            Err(other) => format!("{other:?}"),
        }
    }

    #[test]
    fn most_specific_wins_whatever_the_order() {
        let t = table(&[
            ("all", "/{*rest}", &[]),
            ("offers", "/api/v1/offers/{id}", &["GET"]),
            ("mine", "/api/v1/offers/mine", &["GET"]),
            ("api", "/api/{*rest}", &[]),
            ("write", "/api/v1/offers/{id}", &["PUT", "PATCH"]),
        ])
        .unwrap();
        assert_eq!(found(&t, &Method::GET, "/api/v1/offers/42"), "offers");
        assert_eq!(found(&t, &Method::HEAD, "/api/v1/offers/42"), "offers");
        assert_eq!(found(&t, &Method::PATCH, "/api/v1/offers/42"), "write");
        assert_eq!(found(&t, &Method::GET, "/api/v1/offers/mine"), "mine");
        assert_eq!(found(&t, &Method::GET, "/api/v1/offers"), "api");
        assert_eq!(found(&t, &Method::GET, "/api"), "api");
        assert_eq!(found(&t, &Method::GET, "/other"), "all");
        assert_eq!(found(&t, &Method::GET, "/"), "all");
    }

    #[test]
    fn an_unlisted_method_is_405_not_a_fall_through() {
        let t = table(&[
            ("public", "/{*rest}", &[]),
            ("admin", "/admin/{*rest}", &["GET", "POST"]),
        ])
        .unwrap();
        assert_eq!(
            found(&t, &Method::DELETE, "/admin/users"),
            "405 GET, HEAD, POST"
        );
        assert_eq!(found(&t, &Method::DELETE, "/admin"), "405 GET, HEAD, POST");
    }

    #[test]
    fn explicit_methods_beat_any_within_a_template() {
        let t = table(&[("any", "/a", &[]), ("get", "/a", &["GET"])]).unwrap();
        assert_eq!(found(&t, &Method::GET, "/a"), "get");
        assert_eq!(found(&t, &Method::POST, "/a"), "any");
        assert_eq!(found(&t, &Method::GET, "/b"), "404");
    }

    #[test]
    fn ambiguity_is_a_build_error() {
        let err = table(&[("a", "/{x}/b", &["GET"]), ("b", "/a/{y}", &["POST"])]).unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(
            err[0].message.contains("both match `/a/b`"),
            "{}",
            err[0].message
        );
        // A route for the overlap resolves it.
        table(&[
            ("a", "/{x}/b", &[]),
            ("b", "/a/{y}", &[]),
            ("c", "/a/b", &[]),
        ])
        .unwrap();

        let err = table(&[
            ("a", "/x/{id}", &["GET"]),
            ("b", "/x/{name}", &["GET", "POST"]),
        ])
        .unwrap_err();
        assert!(err[0].message.contains("repeats"), "{}", err[0].message);
        let err = table(&[("a", "/x", &[]), ("b", "/x/", &[])]).unwrap_err();
        assert!(err[0].message.contains("repeats"), "{}", err[0].message);
        table(&[("a", "/x/{id}", &["GET"]), ("b", "/x/{name}", &["POST"])]).unwrap();
    }
}
