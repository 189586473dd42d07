//! The `credentials:` and `keys:` sections: where a request's credential is
//! read from, and the keys the operator declares by hash.

use std::sync::Arc;

use http::HeaderName;

use super::load::Loader;
use super::locate::join;
use super::raw;
use crate::credentials::key_table::KeyProfile;
use crate::credentials::{CredentialHeader, CredentialRules, KeyEntry, KeyHash, api_key};
use crate::limits::LimitSet;
use crate::scope::ScopeRegistry;
use crate::tier::{TierId, Tiers};

impl Loader {
    pub(super) fn credentials(&mut self, raw: &raw::RawCredentials) -> CredentialRules {
        let mut headers: Vec<CredentialHeader> = Vec::new();
        for (i, header) in raw.headers.iter().enumerate() {
            let path = format!("credentials.headers[{i}].name");
            let Ok(name) = HeaderName::try_from(header.name.as_str()) else {
                self.error(
                    &path,
                    format!("`{}` is not a valid header name", header.name),
                );
                continue;
            };
            if name == http::header::AUTHORIZATION {
                self.error(
                    &path,
                    "`Authorization` is read through `credentials.bearer`",
                );
            } else if name.as_str().starts_with("x-authmd-") {
                self.error(
                    &path,
                    "`X-Authmd-*` headers are set by the proxy; choose another name",
                );
            } else if headers.iter().any(|h| h.name == name) {
                self.error(&path, format!("header `{}` is listed twice", header.name));
            } else {
                headers.push(CredentialHeader {
                    name,
                    display: header.name.clone(),
                    anonymous: header.anonymous,
                });
            }
        }
        let mut key_prefixes = Vec::new();
        for (i, prefix) in raw.key_prefixes.iter().enumerate() {
            let prefix = prefix.strip_suffix('_').unwrap_or(prefix);
            if api_key::is_valid_prefix(prefix) {
                key_prefixes.push(prefix.to_owned());
            } else {
                self.error(
                    &format!("credentials.key_prefixes[{i}]"),
                    format!("`{prefix}` is not a key prefix (lowercase words joined by `_`, e.g. `ak_live`)"),
                );
            }
        }
        CredentialRules {
            bearer: raw.bearer,
            headers,
            key_prefixes,
            require_checksum: raw.require_checksum,
        }
    }

    pub(super) fn keys(
        &mut self,
        raw: Vec<(String, raw::RawKey)>,
        registry: &ScopeRegistry,
        tiers: &Tiers,
    ) -> Vec<Arc<KeyEntry>> {
        let mut keys: Vec<Arc<KeyEntry>> = Vec::new();
        for (path, key) in raw {
            let valid_id = !key.id.is_empty()
                && key.id.len() <= 64
                && key
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_id {
                self.error(
                    &join(&path, "id"),
                    format!("`{}` is not a key id (letters, digits, `_`, `-`)", key.id),
                );
                continue;
            }
            if keys.iter().any(|k| k.id() == key.id) {
                self.error(
                    &join(&path, "id"),
                    format!("key id `{}` is used twice", key.id),
                );
                continue;
            }
            let Some(hash) = KeyHash::parse(&key.hash) else {
                self.error(&join(&path, "hash"), "not a BLAKE3 hash; write `blake3:<64 hex digits>` as printed by `authmd-proxy keys hash`");
                continue;
            };
            if keys.iter().any(|k| k.hash == hash) {
                self.error(&join(&path, "hash"), "this hash belongs to another key too");
                continue;
            }
            let scopes = match registry.granted(key.scopes.iter().map(String::as_str)) {
                Ok(set) => set,
                Err((name, e)) => {
                    let at = key.scopes.iter().position(|s| s == name).unwrap_or(0);
                    self.unknown_scope(&format!("{path}.scopes[{at}]"), name, &e, registry);
                    continue;
                }
            };
            let tier = match &key.tier {
                None => TierId(1),
                Some(name) => match tiers.find(name) {
                    Some(TierId::ANONYMOUS) => {
                        self.error(
                            &join(&path, "tier"),
                            "a key cannot be in the `anonymous` tier",
                        );
                        continue;
                    }
                    Some(id) => id,
                    None => {
                        self.unknown_tier(&join(&path, "tier"), name, tiers);
                        continue;
                    }
                },
            };
            let limits = (key.rate_limits.is_some() || key.quota.is_some()).then(|| {
                let rates = key.rate_limits.as_deref().map(|r| self.rates(r, &path));
                let quota = key.quota.as_deref().and_then(|q| self.quota(q, &path));
                let base = &tiers.get(tier).limits;
                Arc::new(LimitSet::with_own(base, &key.id, rates, quota))
            });
            let profile = Arc::new(KeyProfile {
                scopes,
                tier,
                scopes_header: crate::credentials::key_table::scopes_header(registry, &scopes),
                limits,
                is_static: true,
            });
            // The id was checked above: letters, digits, `_` and `-` make a header value.
            if let Some(entry) = KeyEntry::new(&key.id, hash, profile) {
                keys.push(Arc::new(entry));
            }
        }
        keys
    }
}
