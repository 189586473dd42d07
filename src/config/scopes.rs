//! The `scopes:` and `tiers:` sections: what can be granted, and the trust tiers
//! that grant it; and the messages for a scope or tier name that is not declared,
//! which every section that names one shares.

use std::sync::Arc;

use http::HeaderValue;

use super::load::Loader;
use super::locate::join;
use super::raw;
use crate::limits::LimitSet;
use crate::scope::{self, ScopeError, ScopeRegistry, ScopeSet};
use crate::tier::{Tier, Tiers};

impl Loader {
    /// `scopes:`: each name checked, in the order written.
    pub(super) fn scopes(&mut self, raw: &[(String, String)]) -> Arc<ScopeRegistry> {
        let mut registry = ScopeRegistry::default();
        for (name, description) in raw {
            let path = join("scopes", name);
            if !scope::is_valid_name(name) {
                self.error(&path, format!("`{name}` is not a valid scope name (lowercase letters, digits, `_.:-`, optionally ending in `:*`)"));
            } else if !registry.declare(name, description) {
                self.error(
                    &path,
                    format!("too many scopes (at most {})", scope::MAX_SCOPES),
                );
            }
        }
        Arc::new(registry)
    }

    pub(super) fn tiers(
        &mut self,
        raw: &[(String, raw::RawTier)],
        registry: &ScopeRegistry,
    ) -> Tiers {
        let mut tiers: Vec<Tier> = Vec::new();
        for (i, (path, tier)) in raw.iter().enumerate() {
            let name_path = join(path, "name");
            let valid = !tier.name.is_empty()
                && tier.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !valid {
                self.error(
                    &name_path,
                    format!(
                        "`{}` is not a valid tier name (lowercase letters, digits, `_`, `-`)",
                        tier.name
                    ),
                );
                continue;
            }
            if tiers.iter().any(|t| t.name == tier.name) {
                self.error(
                    &name_path,
                    format!("tier `{}` is declared twice", tier.name),
                );
                continue;
            }
            if tier.name == "anonymous" && i != 0 {
                self.error(&name_path, "`anonymous` must be the first (lowest) tier");
                continue;
            }
            let scopes = match registry.granted(tier.scopes.iter().map(String::as_str)) {
                Ok(set) => set,
                Err((name, e)) => {
                    let at = tier.scopes.iter().position(|s| s == name).unwrap_or(0);
                    self.unknown_scope(&format!("{path}.scopes[{at}]"), name, &e, registry);
                    ScopeSet::EMPTY
                }
            };
            let limits = self.limit_set(&tier.name, &tier.rate_limits, tier.quota.as_deref(), path);
            tiers.push(make_tier(&tier.name, scopes, registry, limits));
        }
        if tiers.first().is_none_or(|t| t.name != "anonymous") {
            tiers.insert(
                0,
                make_tier("anonymous", ScopeSet::EMPTY, registry, LimitSet::default()),
            );
        }
        if tiers.len() == 1 {
            tiers.push(make_tier(
                "default",
                ScopeSet::EMPTY,
                registry,
                LimitSet::default(),
            ));
        }
        if tiers.len() > usize::from(u8::MAX) {
            self.error("tiers", "too many tiers (at most 255)");
            tiers.truncate(usize::from(u8::MAX));
        }
        Tiers(tiers)
    }

    /// The scopes a route requires, each unknown one reported at its own place in
    /// the list at `path`; `None` when any is unknown.
    pub(super) fn required_scopes(
        &mut self,
        path: &str,
        names: &[String],
        registry: &ScopeRegistry,
    ) -> Option<ScopeSet> {
        let mut set = Some(ScopeSet::EMPTY);
        for (i, name) in names.iter().enumerate() {
            match registry.required([name.as_str()]) {
                Ok(one) => set = set.map(|s| s.union(&one)),
                Err((name, e)) => {
                    self.unknown_scope(&format!("{path}[{i}]"), name, &e, registry);
                    set = None;
                }
            }
        }
        set
    }

    /// An unknown scope: the closest declared name, and all of them, so that the
    /// right one can be picked without opening the file's `scopes:` section.
    pub(super) fn unknown_scope(
        &mut self,
        path: &str,
        name: &str,
        error: &ScopeError,
        registry: &ScopeRegistry,
    ) {
        let ScopeError::Unknown { suggestion } = error;
        let hint = match suggestion {
            Some(s) => format!("; did you mean `{s}`?"),
            None => String::new(),
        };
        let known = if registry.is_empty() {
            "; declare it under `scopes:`".to_owned()
        } else {
            format!(
                " (declared: {})",
                listed(registry.all().iter().map(|s| s.name.as_str()))
            )
        };
        self.error(path, format!("unknown scope `{name}`{hint}{known}"));
    }

    /// An unknown tier: the closest name, and every tier there is.
    pub(super) fn unknown_tier(&mut self, path: &str, name: &str, tiers: &Tiers) {
        let names = || tiers.all().iter().map(|t| t.name.as_str());
        let hint = scope::closest(name, names())
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        self.error(
            path,
            format!("unknown tier `{name}`{hint} (known: {})", listed(names())),
        );
    }
}

/// The most names a message lists before it says how many more there are.
const LISTED: usize = 20;

/// `` `a`, `b`, `c` ``, and "and N more" past [`LISTED`].
fn listed<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    let total = names.len();
    let mut out = names
        .take(LISTED)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if total > LISTED {
        out.push_str(&format!(" and {} more", total - LISTED));
    }
    out
}

fn make_tier(name: &str, scopes: ScopeSet, registry: &ScopeRegistry, limits: LimitSet) -> Tier {
    Tier {
        limits: Arc::new(limits),
        name: name.to_owned(),
        scopes,
        header: HeaderValue::from_str(name).unwrap_or_else(|_| HeaderValue::from_static("unknown")),
        scopes_header: HeaderValue::from_str(&registry.names(&scopes))
            .unwrap_or_else(|_| HeaderValue::from_static("")),
    }
}
