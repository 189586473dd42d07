//! The `oauth:` section: the interactive flow (authorization code with PKCE, OAuth
//! 2.1) through which people and MCP clients get tokens: how long codes, refresh
//! families and consents last, the declared clients, RFC 7591 registration, and
//! Client ID Metadata Documents.

use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use rustls::RootCertStore;

use super::load::Loader;
use super::locate::join;
use super::raw;
use super::values::{DAY, HOUR, MINUTE, SECOND};
use crate::credentials::KeyHash;
use crate::protocol::redirect::classify;
use crate::scope::{ScopeRegistry, ScopeSet};

/// `oauth:`.
#[derive(Debug, Clone)]
pub struct Interactive {
    /// An authorization code's lifetime.
    pub code_ttl: Duration,
    /// A refresh-token family's absolute lifetime.
    pub refresh_ttl: Duration,
    /// How long a used refresh token still yields the same successor.
    pub refresh_reuse_grace: Duration,
    /// How long a person's consent to a client is remembered.
    pub consent_ttl: Duration,
    /// Clients declared here.
    pub clients: Vec<DeclaredClient>,
    /// RFC 7591 dynamic registration.
    pub registration: ClientRegistration,
    /// Clients whose `client_id` is the URL of their metadata document.
    pub metadata_documents: MetadataDocuments,
}

/// `oauth.client_id_metadata_documents`.
#[derive(Debug, Clone)]
pub struct MetadataDocuments {
    /// An https `client_id` is fetched as a metadata document.
    pub enabled: bool,
    /// Largest document read.
    pub max_bytes: usize,
    /// How long a fetch may take, connection and body included.
    pub timeout: Duration,
    /// Longest a fetched document is cached, whatever its headers say.
    pub max_cache: Duration,
    /// Certificate authorities trusted besides the public (webpki) roots.
    pub extra_roots: Option<Arc<RootCertStore>>,
    /// Networks that may be fetched although they are not public (loopback,
    /// private, link-local ...): a private PKI's clients, or tests.
    pub allow_networks: Vec<IpNet>,
}

/// One of `oauth.clients`.
#[derive(Debug, Clone)]
pub struct DeclaredClient {
    /// Its `client_id`.
    pub client_id: String,
    /// The name shown on the consent page.
    pub client_name: Option<String>,
    /// Where it may be redirected.
    pub redirect_uris: Vec<String>,
    /// The most it may be granted.
    pub scopes: ScopeSet,
    /// A confidential client's secret, hashed; `None` for a public client.
    pub secret_hash: Option<KeyHash>,
}

/// `oauth.registration`.
#[derive(Debug, Clone, Copy)]
pub struct ClientRegistration {
    /// The registration endpoint is served.
    pub enabled: bool,
    /// Registrations per client address per hour.
    pub per_hour: u32,
    /// A registered client unused this long is deleted.
    pub unused_ttl: Duration,
}

impl Loader {
    /// Validates `oauth:` against the declared scopes.
    pub(super) fn interactive(
        &mut self,
        raw: raw::RawInteractive,
        registry: &ScopeRegistry,
    ) -> Interactive {
        let code_ttl = self.duration(
            raw.code_ttl,
            "oauth.code_ttl",
            MINUTE,
            SECOND * 5..=MINUTE * 10,
        );
        let refresh_ttl = self.duration(
            raw.refresh_ttl,
            "oauth.refresh_ttl",
            DAY * 30,
            MINUTE..=DAY * 365,
        );
        let refresh_reuse_grace = self.duration(
            raw.refresh_reuse_grace,
            "oauth.refresh_reuse_grace",
            SECOND * 10,
            Duration::ZERO..=MINUTE * 5,
        );
        let consent_ttl = self.duration(
            raw.consent_ttl,
            "oauth.consent_ttl",
            DAY * 90,
            Duration::ZERO..=DAY * 365,
        );
        let mut clients: Vec<DeclaredClient> = Vec::with_capacity(raw.clients.len());
        for (i, client) in raw.clients.into_iter().enumerate() {
            let path = format!("oauth.clients[{i}]");
            if let Some(client) = self.declared_client(client, &path, registry) {
                if clients.iter().any(|c| c.client_id == client.client_id) {
                    self.error(
                        &join(&path, "client_id"),
                        format!("`{}` is declared twice", client.client_id),
                    );
                } else {
                    clients.push(client);
                }
            }
        }
        let registration = ClientRegistration {
            enabled: raw.registration.enabled.unwrap_or(true),
            per_hour: raw.registration.per_hour.unwrap_or(20),
            unused_ttl: self.duration(
                raw.registration.unused_ttl,
                "oauth.registration.unused_ttl",
                DAY * 30,
                HOUR..=DAY * 365,
            ),
        };
        let metadata_documents = self.metadata_documents(raw.client_id_metadata_documents);
        Interactive {
            code_ttl,
            refresh_ttl,
            refresh_reuse_grace,
            consent_ttl,
            clients,
            registration,
            metadata_documents,
        }
    }

    fn metadata_documents(&mut self, raw: raw::RawMetadataDocuments) -> MetadataDocuments {
        const PATH: &str = "oauth.client_id_metadata_documents";
        let max_bytes = self.size(raw.max_bytes, &join(PATH, "max_bytes"), 5 * 1024);
        if max_bytes > 64 * 1024 {
            self.error(
                &join(PATH, "max_bytes"),
                "at most 64KiB: a client's metadata is a few hundred bytes",
            );
        }
        let extra_roots =
            raw.ca_file.and_then(
                |file| match crate::tls::read_ca_file(&self.resolve(&file)) {
                    Ok(roots) => Some(Arc::new(roots)),
                    Err(error) => {
                        self.error(&join(PATH, "ca_file"), error.to_string());
                        None
                    }
                },
            );
        let mut allow_networks = Vec::with_capacity(raw.allow_networks.len());
        for (i, text) in raw.allow_networks.iter().enumerate() {
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
            match net {
                Ok(net) => allow_networks.push(net),
                Err(_) => self.error(
                    &format!("{PATH}.allow_networks[{i}]"),
                    format!("`{text}` is not an address or a network (`10.0.0.0/8`, `::1`)"),
                ),
            }
        }
        MetadataDocuments {
            enabled: raw.enabled.unwrap_or(true),
            max_bytes,
            timeout: self.duration(
                raw.timeout,
                &join(PATH, "timeout"),
                SECOND * 5,
                SECOND..=MINUTE,
            ),
            max_cache: self.duration(
                raw.max_cache,
                &join(PATH, "max_cache"),
                HOUR,
                Duration::ZERO..=DAY,
            ),
            extra_roots,
            allow_networks,
        }
    }

    fn declared_client(
        &mut self,
        raw: raw::RawDeclaredClient,
        path: &str,
        registry: &ScopeRegistry,
    ) -> Option<DeclaredClient> {
        let Some(client_id) = raw.client_id.filter(|id| !id.trim().is_empty()) else {
            self.error(
                &join(path, "client_id"),
                "missing: every declared client needs a `client_id`",
            );
            return None;
        };
        if client_id.starts_with("https://") {
            self.error(
                &join(path, "client_id"),
                "an https `client_id` names a Client ID Metadata Document; declare clients with a plain id",
            );
        }
        if raw.redirect_uris.is_empty() {
            self.error(
                &join(path, "redirect_uris"),
                "missing: a client needs at least one redirect URI",
            );
        }
        for (i, uri) in raw.redirect_uris.iter().enumerate() {
            if let Err(why) = classify(uri) {
                self.error(
                    &format!("{path}.redirect_uris[{i}]"),
                    format!("`{uri}`: {why}"),
                );
            }
        }
        let scopes = self
            .scope_list(raw.scopes.as_deref(), &join(path, "scopes"), registry)
            .unwrap_or_else(|| all_scopes(registry));
        let secret_hash = raw.client_secret_hash.and_then(|text| {
            let hash = KeyHash::parse(&text);
            if hash.is_none() {
                self.error(
                    &join(path, "client_secret_hash"),
                    "not a BLAKE3 hash; write `blake3:<64 hex digits>` as printed by `authmd-proxy keys hash`",
                );
            }
            hash
        });
        Some(DeclaredClient {
            client_id,
            client_name: raw.client_name,
            redirect_uris: raw.redirect_uris,
            scopes,
            secret_hash,
        })
    }
}

/// Every declared scope.
fn all_scopes(registry: &ScopeRegistry) -> ScopeSet {
    registry.granted_known(registry.all().iter().map(|s| s.name.as_str()))
}
