//! Trust tiers: an ordered list (lowest first) from the config. Tier 0 is always
//! `anonymous`, the tier of every request without a verified credential.

use std::sync::Arc;

use http::HeaderValue;

use crate::limits::LimitSet;

use crate::scope::ScopeSet;

/// Index of a tier in [`Tiers`]; a higher index is a higher tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TierId(pub u8);

impl TierId {
    /// The anonymous tier.
    pub const ANONYMOUS: TierId = TierId(0);
}

/// One tier.
#[derive(Debug, Clone)]
pub struct Tier {
    /// Its name, e.g. `anonymous`, `free`, `verified`.
    pub name: String,
    /// The scopes a principal of this tier holds when nothing else grants any: for the
    /// anonymous tier, what every anonymous request may do.
    pub scopes: ScopeSet,
    /// Its name as a ready header value for `X-Authmd-Tier`.
    pub header: HeaderValue,
    /// Its scopes, space-separated, ready for `X-Authmd-Scopes`.
    pub scopes_header: HeaderValue,
    /// Its rate limits and quota.
    pub limits: Arc<LimitSet>,
}

/// The configured tiers, lowest first.
#[derive(Debug, Clone)]
pub struct Tiers(pub(crate) Vec<Tier>);

impl Tiers {
    /// The tier with this id.
    #[must_use]
    pub fn get(&self, id: TierId) -> &Tier {
        // Ids are only made by `find` on this same list, so they are always in range;
        // fall back to the anonymous tier rather than panic.
        self.0.get(usize::from(id.0)).unwrap_or(&self.0[0])
    }

    /// The tier with this name.
    #[must_use]
    pub fn find(&self, name: &str) -> Option<TierId> {
        self.0
            .iter()
            .position(|t| t.name == name)
            .and_then(|i| u8::try_from(i).ok())
            .map(TierId)
    }

    /// All tiers, lowest first.
    #[must_use]
    pub fn all(&self) -> &[Tier] {
        &self.0
    }
}
