//! Key management: `POST keys` (create), `GET keys` (list own),
//! `POST keys/{key_id}/rotate`, `DELETE keys/{key_id}` (revoke), and `GET scopes`.
//!
//! A key manages the keys of its own owner (the account it belongs to): it can
//! create keys with a subset of its own scopes, list them, rotate and revoke them.
//! A secret appears in exactly one answer: the one that created (or rotated) it.
//!
//! Answers name the secret `credential` and its id `key_id`, as registration does
//! (the auth.md spec's names); `key` and `id`, the names of earlier versions, are
//! kept beside them with the same values, as deprecated aliases.

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use std::net::IpAddr;
use std::sync::Arc;

use super::members::{JsonBody, Members, Names, Understood};
use super::{
    AgentAuth, Answer, Failure, ScopeNames, authenticate, json, limit, mint, random_id, read_json,
    requested_scopes, rfc3339,
};
use crate::clock::unix_now;
use crate::config::Config;
use crate::credentials::{KeyEntry, KeyTable, Presented};
use crate::policy::MethodSet;
use crate::rejection::{LifecycleError, Rejection};
use crate::scope::ScopeSet;
use crate::store::{KeyRecord, Rotation};
use crate::tier::TierId;

/// A key as the API shows it; `credential` (and its alias `key`) only when it
/// was just minted.
#[derive(Debug, Serialize)]
pub(super) struct KeyView<'a> {
    key_id: &'a str,
    /// Deprecated alias of `key_id`.
    id: &'a str,
    name: &'a str,
    prefix: &'a str,
    scopes: &'a [String],
    tier: &'a str,
    created_at: String,
    expires_at: Option<String>,
    last_used_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<&'a str>,
    /// Deprecated alias of `credential`.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    /// The members of the request body that were ignored (creation only).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    ignored_members: &'a [String],
}

impl<'a> KeyView<'a> {
    pub(super) fn of(record: &'a KeyRecord, secret: Option<&'a str>) -> KeyView<'a> {
        KeyView {
            key_id: &record.id,
            id: &record.id,
            name: &record.name,
            prefix: &record.prefix,
            scopes: &record.scopes,
            tier: &record.tier,
            created_at: rfc3339(record.created_at),
            expires_at: record.expires_at.map(rfc3339),
            last_used_at: record.last_used_at.map(rfc3339),
            revoked_at: record.revoked_at.map(rfc3339),
            credential: secret,
            key: secret,
            ignored_members: &[],
        }
    }
}

/// The body of `POST keys`. Members not among its `MEMBERS` are
/// ignored and named in the answer's `ignored_members`.
#[derive(Debug)]
pub(super) struct CreateBody {
    name: Option<String>,
    scopes: Option<ScopeNames>,
    ignored: Vec<String>,
}

const NAME: Names = &["name"];
const SCOPES: Names = &["scopes"];

impl JsonBody for CreateBody {
    const MEMBERS: &'static [Names] = &[NAME, SCOPES];

    fn read(members: &Members) -> Result<Self, Failure> {
        Ok(CreateBody {
            name: members.checked_text(NAME, valid_name, "1 to 128 printable characters")?,
            scopes: members.scopes(SCOPES)?,
            ignored: members.ignored(),
        })
    }

    fn ignored(&self) -> &[String] {
        &self.ignored
    }

    fn understood(&self) -> Vec<(&'static str, Understood)> {
        let name = self
            .name
            .clone()
            .map(|name| (NAME[0], Understood::Text(name)));
        let scopes = self.scopes.as_ref().map(|scopes| {
            let names = scopes.names().into_iter().map(str::to_owned).collect();
            (SCOPES[0], Understood::Scopes(names))
        });
        name.into_iter().chain(scopes).collect()
    }
}

/// Who calls a key endpoint.
#[derive(Debug)]
enum Caller {
    /// An API key: it manages the keys of its owner, up to its own scopes.
    Key(Arc<KeyEntry>),
    /// An anonymous agent, where `key_management.anonymous_tier` lets one: it manages
    /// the keys created under its identifier, in that tier, up to its scopes.
    Anonymous {
        /// `anonymous:<digest of the identifier>`: the identifier is not stored.
        owner: String,
        /// The tier of the keys it creates.
        tier: TierId,
    },
}

impl Caller {
    /// The caller of a request to a key endpoint, or the 401 to answer.
    fn of(config: &Config, keys: &KeyTable, headers: &http::HeaderMap) -> Result<Caller, Failure> {
        if let Some(tier) = config.lifecycle.keys.anonymous_tier {
            if let Presented::Anonymous(identifier) = config.credentials.extract(headers)? {
                let owner = format!("anonymous:{}", blake3::hash(identifier.as_bytes()).to_hex());
                return Ok(Caller::Anonymous { owner, tier });
            }
        }
        authenticate(config, keys, headers).map(Caller::Key)
    }

    /// The scopes the keys it creates may hold.
    fn scopes(&self, config: &Config) -> ScopeSet {
        match self {
            Caller::Key(entry) => entry.scopes(),
            Caller::Anonymous { tier, .. } => config.tiers.get(*tier).scopes,
        }
    }

    /// The tier of the keys it creates.
    fn tier(&self) -> TierId {
        match self {
            Caller::Key(entry) => entry.tier(),
            Caller::Anonymous { tier, .. } => *tier,
        }
    }

    /// Who it is in logs: a key id, or the digest.
    fn name(&self) -> &str {
        match self {
            Caller::Key(entry) => entry.id(),
            Caller::Anonymous { owner, .. } => owner,
        }
    }
}

impl AgentAuth {
    /// The owner account of the caller: a key's is in the store (the table does not
    /// keep it, to stay small with a million keys), or `static:<id>` for a config key.
    async fn owner_of(&self, caller: &Caller) -> Result<String, Failure> {
        let entry = match caller {
            Caller::Anonymous { owner, .. } => return Ok(owner.clone()),
            Caller::Key(entry) => entry,
        };
        if entry.is_static() {
            return Ok(format!("static:{}", entry.id()));
        }
        match self.store.key(entry.id()).await? {
            Some(record) => Ok(record.owner),
            None => Err(Rejection::InvalidApiKey.into()),
        }
    }

    /// `GET keys` and `POST keys`.
    pub async fn keys(
        &self,
        config: &Config,
        request: Request<Incoming>,
        address: IpAddr,
    ) -> Answer {
        match *request.method() {
            Method::GET => self.list(config, &request).await,
            Method::POST => self.create(config, request, address).await,
            _ => Err(Rejection::MethodNotAllowed(MethodSet::of(&["GET", "POST"])).into()),
        }
    }

    /// `DELETE keys/{key_id}` and `POST keys/{key_id}/rotate`.
    pub async fn key(
        &self,
        config: &Config,
        request: Request<Incoming>,
        id: &str,
        rotate: bool,
    ) -> Answer {
        let allowed = if rotate { Method::POST } else { Method::DELETE };
        if *request.method() != allowed {
            return Err(Rejection::MethodNotAllowed(MethodSet::of(&[allowed.as_str()])).into());
        }
        let caller = Caller::of(config, &self.keys, request.headers())?;
        let record = match self.store.key(id).await? {
            Some(record) if record.revoked_at.is_none() => record,
            _ if config.keys.iter().any(|k| k.id() == id) => {
                return Err(LifecycleError::KeyNotManaged.into());
            }
            _ => return Err(LifecycleError::KeyNotFound.into()),
        };
        if record.owner != self.owner_of(&caller).await? {
            return Err(LifecycleError::NotKeyOwner.into());
        }
        if rotate {
            self.rotate(config, &record).await
        } else {
            let Some(revoked) = self.store.revoke_key(&record.id, unix_now()).await? else {
                return Err(LifecycleError::KeyNotFound.into());
            };
            self.apply(&revoked).await;
            tracing::info!(key = %revoked.id, by = %caller.name(), "key revoked");
            Ok(json(StatusCode::OK, &KeyView::of(&revoked, None)))
        }
    }

    async fn rotate(&self, config: &Config, record: &KeyRecord) -> Answer {
        let now = unix_now();
        let grace = config.lifecycle.keys.rotation_grace;
        let new = mint(config)?;
        let rotation = Rotation {
            id: &record.id,
            new_hash: new.hash,
            grace_until: (!grace.is_zero())
                .then(|| now + i64::try_from(grace.as_secs()).unwrap_or(i64::MAX / 2)),
            now,
        };
        let Some(rotated) = self.store.rotate_key(&rotation).await? else {
            return Err(LifecycleError::KeyNotFound.into());
        };
        self.apply(&rotated).await;
        tracing::info!(key = %rotated.id, "key rotated");
        Ok(json(
            StatusCode::OK,
            &KeyView::of(&rotated, Some(new.secret.as_str())),
        ))
    }

    async fn list(&self, config: &Config, request: &Request<Incoming>) -> Answer {
        let caller = Caller::of(config, &self.keys, request.headers())?;
        let records = self.store.keys_of(&self.owner_of(&caller).await?).await?;
        let keys: Vec<KeyView<'_>> = records.iter().map(|r| KeyView::of(r, None)).collect();
        Ok(json(StatusCode::OK, &serde_json::json!({ "keys": keys })))
    }

    async fn create(&self, config: &Config, request: Request<Incoming>, address: IpAddr) -> Answer {
        let caller = Caller::of(config, &self.keys, request.headers())?;
        let body: CreateBody = read_json(request, &Method::POST).await?;
        let name = body.name.clone().unwrap_or_else(|| "unnamed".to_owned());
        let scope_names: Vec<String> = match &body.scopes {
            Some(requested) => requested.names().into_iter().map(str::to_owned).collect(),
            None => config
                .scopes
                .names(&caller.scopes(config))
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        };
        let names: Vec<&str> = scope_names.iter().map(String::as_str).collect();
        let requested = requested_scopes(config, &names)?;
        let beyond = requested.missing_from(&caller.scopes(config));
        if !beyond.is_empty() {
            let holder = match caller {
                Caller::Key(_) => "the key lacks",
                Caller::Anonymous { .. } => "keys created anonymously cannot hold",
            };
            return Err(Failure::with(
                LifecycleError::ScopeEscalation,
                format!("{holder} {}", config.scopes.names(&beyond)),
            ));
        }
        if let Caller::Anonymous { .. } = caller {
            // Identifiers cost nothing to make up: creation is limited per address,
            // as anonymous registration is.
            limit(self.anonymous_limit.as_deref(), address)?;
        }
        let owner = self.owner_of(&caller).await?;
        let owned = self.store.keys_of(&owner).await?;
        if owned.len() >= config.lifecycle.keys.max_keys_per_owner {
            return Err(LifecycleError::KeyLimitReached.into());
        }
        let new = mint(config)?;
        let mut unique: Vec<String> = Vec::with_capacity(scope_names.len());
        for scope in scope_names {
            if !unique.contains(&scope) {
                unique.push(scope);
            }
        }
        let record = KeyRecord::new(
            random_id("key")?,
            new.hash,
            config.lifecycle.keys.prefix.clone(),
            name,
            owner,
            unique,
            config.tiers.get(caller.tier()).name.clone(),
            unix_now(),
        );
        self.store.insert_key(&record).await?;
        self.apply(&record).await;
        tracing::info!(key = %record.id, by = %caller.name(), "key created");
        let view = KeyView {
            ignored_members: &body.ignored,
            ..KeyView::of(&record, Some(new.secret.as_str()))
        };
        Ok(json(StatusCode::CREATED, &view))
    }
}

/// `GET scopes`: the scope inventory (public).
pub fn scopes(config: &Config, method: &Method) -> Answer {
    if method != Method::GET && method != Method::HEAD {
        return Err(Rejection::MethodNotAllowed(MethodSet::of(&["GET", "HEAD"])).into());
    }
    let scopes: Vec<_> = config
        .scopes
        .all()
        .iter()
        .map(|s| serde_json::json!({ "name": s.name, "description": s.description }))
        .collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "scopes": scopes }),
    ))
}

/// 1 to 128 characters, none of them control characters.
pub(super) fn valid_name(name: &str) -> bool {
    !name.trim().is_empty() && name.chars().count() <= 128 && !name.chars().any(char::is_control)
}
