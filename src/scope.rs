//! Scope inventory and scope sets.
//!
//! Every scope the config declares gets one bit; a principal's grants and a route's
//! requirements are fixed-size bit sets, so the authorization check on the request path
//! is a handful of AND/NOT operations with no allocation. A granted wildcard such as
//! `admin:*` expands, when the grant is compiled, to every declared scope under its prefix.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use http::HeaderValue;

/// The most scopes one config may declare (the width of [`ScopeSet`]).
pub const MAX_SCOPES: usize = 256;

const WORDS: usize = MAX_SCOPES / 64;

/// A set of scopes, as bits indexed by the [`ScopeRegistry`] that made it.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet([u64; WORDS]);

impl ScopeSet {
    /// The empty set.
    pub const EMPTY: ScopeSet = ScopeSet([0; WORDS]);

    fn insert(&mut self, bit: usize) {
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    fn contains_bit(&self, bit: usize) -> bool {
        self.0[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// The scopes of `self` that `granted` does not cover.
    #[must_use]
    pub fn missing_from(&self, granted: &ScopeSet) -> ScopeSet {
        let mut out = [0; WORDS];
        for (i, word) in out.iter_mut().enumerate() {
            *word = self.0[i] & !granted.0[i];
        }
        ScopeSet(out)
    }

    /// True when the set holds no scope.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// The union of two sets.
    #[must_use]
    pub fn union(&self, other: &ScopeSet) -> ScopeSet {
        let mut out = self.0;
        for (i, word) in out.iter_mut().enumerate() {
            *word |= other.0[i];
        }
        ScopeSet(out)
    }

    /// The scopes in both sets.
    #[must_use]
    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        let mut out = self.0;
        for (i, word) in out.iter_mut().enumerate() {
            *word &= other.0[i];
        }
        ScopeSet(out)
    }

    /// True when every scope of `self` is also in `other`.
    #[must_use]
    pub fn is_subset_of(&self, other: &ScopeSet) -> bool {
        self.missing_from(other).is_empty()
    }

    fn bits(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MAX_SCOPES).filter(|bit| self.contains_bit(*bit))
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.bits()).finish()
    }
}

/// One declared scope.
#[derive(Debug, Clone)]
pub struct ScopeInfo {
    /// The scope's name, e.g. `offers:read` or `admin:*`.
    pub name: String,
    /// What it grants, for `/auth.md` and the scope list endpoint.
    pub description: String,
}

/// The scopes a config declares, in declaration order.
#[derive(Debug, Clone, Default)]
pub struct ScopeRegistry {
    scopes: Vec<ScopeInfo>,
    index: HashMap<String, usize>,
}

/// Why a scope name could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeError {
    /// The name is not declared; carries the closest declared name, if any is close.
    Unknown {
        /// The closest declared scope, if one is close enough to be a likely typo.
        suggestion: Option<String>,
    },
}

impl ScopeRegistry {
    /// Declares a scope. Returns false when the registry is full or the name is taken.
    pub fn declare(&mut self, name: &str, description: &str) -> bool {
        if self.scopes.len() >= MAX_SCOPES || self.index.contains_key(name) {
            return false;
        }
        self.index.insert(name.to_owned(), self.scopes.len());
        self.scopes.push(ScopeInfo {
            name: name.to_owned(),
            description: description.to_owned(),
        });
        true
    }

    /// All declared scopes, in declaration order.
    #[must_use]
    pub fn all(&self) -> &[ScopeInfo] {
        &self.scopes
    }

    /// Number of declared scopes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.scopes.len()
    }

    /// True when no scope is declared.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty()
    }

    /// The set a route requires: exactly the named scopes.
    pub fn required<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<ScopeSet, (&'a str, ScopeError)> {
        let mut set = ScopeSet::EMPTY;
        for name in names {
            set.insert(self.bit(name).map_err(|e| (name, e))?);
        }
        Ok(set)
    }

    /// The set a credential holds: the named scopes, with each wildcard (`admin:*`)
    /// expanded to every declared scope under its prefix.
    pub fn granted<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<ScopeSet, (&'a str, ScopeError)> {
        let mut set = ScopeSet::EMPTY;
        for name in names {
            set.insert(self.bit(name).map_err(|e| (name, e))?);
            if let Some(prefix) = name.strip_suffix('*') {
                for (bit, info) in self.scopes.iter().enumerate() {
                    if info.name.starts_with(prefix) {
                        set.insert(bit);
                    }
                }
            }
        }
        Ok(set)
    }

    /// Like [`granted`](Self::granted), skipping names this config does not declare
    /// (a stored key may name a scope a later config removed: it simply no longer
    /// grants it).
    #[must_use]
    pub fn granted_known<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> ScopeSet {
        let mut set = ScopeSet::EMPTY;
        for name in names {
            if let Ok(granted) = self.granted([name]) {
                set = set.union(&granted);
            }
        }
        set
    }

    fn bit(&self, name: &str) -> Result<usize, ScopeError> {
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| ScopeError::Unknown {
                suggestion: self.closest(name),
            })
    }

    /// The declared scope most like `name`, when it is close enough to be a typo.
    #[must_use]
    pub fn closest(&self, name: &str) -> Option<String> {
        closest(name, self.scopes.iter().map(|s| s.name.as_str()))
    }

    /// The names in a set, space-separated (the OAuth `scope` syntax).
    #[must_use]
    pub fn names(&self, set: &ScopeSet) -> String {
        let mut out = String::new();
        for bit in set.bits() {
            if let Some(info) = self.scopes.get(bit) {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(&info.name);
            }
        }
        out
    }
}

impl ScopeRegistry {
    /// The `X-Authmd-Scopes` value of a scope set: its names, space-separated.
    #[must_use]
    pub fn header_value(&self, set: &ScopeSet) -> HeaderValue {
        HeaderValue::from_str(&self.names(set)).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The `X-Authmd-Scopes` value of each scope set, rendered once and shared by every
/// key and token that holds the set (a clone of a shared value, never a new string on
/// the request path).
#[derive(Debug)]
pub struct ScopeHeaders {
    registry: Arc<ScopeRegistry>,
    values: papaya::HashMap<ScopeSet, HeaderValue>,
}

impl ScopeHeaders {
    /// The headers of the scopes of `registry`.
    #[must_use]
    pub fn new(registry: Arc<ScopeRegistry>) -> ScopeHeaders {
        ScopeHeaders {
            registry,
            values: papaya::HashMap::new(),
        }
    }

    /// The value for `set`.
    #[must_use]
    pub fn get(&self, set: ScopeSet) -> HeaderValue {
        self.values
            .pin()
            .get_or_insert_with(set, || self.registry.header_value(&set))
            .clone()
    }

    /// The registry the names come from.
    #[must_use]
    pub fn registry(&self) -> &Arc<ScopeRegistry> {
        &self.registry
    }
}

/// The candidate most like `name` (normalised Damerau-Levenshtein >= 0.7), if any.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::normalized_damerau_levenshtein(name, c), c))
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_owned())
}

/// True when `name` is a well-formed scope name: `[a-z0-9_.:-]+`, optionally ending in
/// `*` after a `:` (a wildcard such as `admin:*`).
#[must_use]
pub fn is_valid_name(name: &str) -> bool {
    let body = name.strip_suffix(":*").unwrap_or(name);
    !body.is_empty()
        && name.len() <= 128
        && body
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.:-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> ScopeRegistry {
        let mut r = ScopeRegistry::default();
        for s in [
            "offers:read",
            "offers:write",
            "admin:*",
            "admin:users",
            "admin:billing",
        ] {
            assert!(r.declare(s, ""));
        }
        r
    }

    #[test]
    fn wildcard_grants_every_scope_under_its_prefix() {
        let r = registry();
        let granted = r.granted(["admin:*"]).unwrap();
        let need = r.required(["admin:users", "admin:billing"]).unwrap();
        assert!(need.is_subset_of(&granted));
        let other = r.required(["offers:read"]).unwrap();
        assert!(!other.is_subset_of(&granted));
    }

    #[test]
    fn a_concrete_grant_does_not_imply_the_wildcard() {
        let r = registry();
        let granted = r.granted(["admin:users", "admin:billing"]).unwrap();
        let need = r.required(["admin:*"]).unwrap();
        assert_eq!(r.names(&need.missing_from(&granted)), "admin:*");
    }

    #[test]
    fn unknown_scope_suggests_the_closest() {
        let r = registry();
        let err = r.required(["ofers:read"]).unwrap_err();
        assert_eq!(
            err.1,
            ScopeError::Unknown {
                suggestion: Some("offers:read".into())
            }
        );
        let err = r.required(["zzz"]).unwrap_err();
        assert_eq!(err.1, ScopeError::Unknown { suggestion: None });
    }

    #[test]
    fn names_are_validated() {
        assert!(is_valid_name("offers:read"));
        assert!(is_valid_name("admin:*"));
        assert!(!is_valid_name("Offers"));
        assert!(!is_valid_name("a b"));
        assert!(!is_valid_name("*"));
        assert!(!is_valid_name(""));
    }
}
