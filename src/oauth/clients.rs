//! The clients of the interactive flow, in three kinds: declared in the config,
//! registered at the registration endpoint (RFC 7591), and named by the URL of
//! their Client ID Metadata Document. Whatever its kind, the authorization and
//! token endpoints see one [`Client`].

pub mod dynamic;
pub mod metadata_document;

use crate::config::{Config, DeclaredClient};
use crate::credentials::KeyHash;
use crate::scope::ScopeSet;
use crate::store::{ClientRecord, Store, StoreError};
use metadata_document::{DocumentError, MetadataDocuments, is_document_url};

/// Where a client's registration comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// `oauth.clients` in the config.
    Declared,
    /// RFC 7591 dynamic registration.
    Registered,
    /// A Client ID Metadata Document at the `client_id` URL.
    MetadataDocument,
}

/// A client of the interactive flow.
#[derive(Debug, Clone)]
pub struct Client {
    /// Its `client_id`.
    pub client_id: String,
    /// The name it gave, shown on the consent page beside its host.
    pub name: Option<String>,
    /// Its home page (`client_uri`), when it gave one.
    pub uri: Option<String>,
    /// Where it may be redirected.
    pub redirect_uris: Vec<String>,
    /// The most it may be granted.
    pub scopes: ScopeSet,
    /// A confidential client's secret, hashed; `None` for a public client.
    pub secret_hash: Option<KeyHash>,
    /// Its kind.
    pub kind: ClientKind,
}

impl Client {
    /// A client declared in the config.
    #[must_use]
    pub fn declared(declared: &DeclaredClient) -> Client {
        Client {
            client_id: declared.client_id.clone(),
            name: declared.client_name.clone(),
            uri: None,
            redirect_uris: declared.redirect_uris.clone(),
            scopes: declared.scopes,
            secret_hash: declared.secret_hash,
            kind: ClientKind::Declared,
        }
    }

    /// A client registered at the registration endpoint, from its stored
    /// metadata; `None` when the record does not parse (it was written by this
    /// server, so that is a bug or a foreign write, and the client is unknown).
    #[must_use]
    pub fn registered(record: &ClientRecord, config: &Config) -> Option<Client> {
        let document: serde_json::Value = serde_json::from_str(&record.metadata).ok()?;
        let text = |name: &str| {
            document
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let redirect_uris = document
            .get("redirect_uris")?
            .as_array()?
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?;
        let scope = text("scope").unwrap_or_default();
        Some(Client {
            client_id: record.client_id.clone(),
            name: text("client_name"),
            uri: text("client_uri"),
            redirect_uris,
            scopes: config.scopes.granted_known(scope.split_whitespace()),
            secret_hash: record.secret_hash.as_deref().and_then(KeyHash::parse),
            kind: ClientKind::Registered,
        })
    }

    /// The registered redirect URI that `presented` matches, or, when none was
    /// presented and exactly one is registered, that one (OAuth 2.1 section
    /// 4.1.1).
    #[must_use]
    pub fn redirect<'a>(&'a self, presented: Option<&'a str>) -> Option<&'a str> {
        match presented {
            Some(uri) => self
                .redirect_uris
                .iter()
                .any(|r| crate::protocol::redirect::matches(r, uri))
                .then_some(uri),
            None => match self.redirect_uris.as_slice() {
                [only] => Some(only.as_str()),
                _ => None,
            },
        }
    }

    /// True when every registered redirect is to the loopback interface: the
    /// client runs on the person's own machine, and the consent page says so.
    #[must_use]
    pub fn is_local_only(&self) -> bool {
        self.redirect_uris.iter().all(|r| {
            crate::protocol::redirect::classify(r)
                == Ok(crate::protocol::redirect::RedirectKind::Loopback)
        })
    }
}

/// The declared client `client_id`, if there is one.
#[must_use]
pub fn declared(config: &Config, client_id: &str) -> Option<Client> {
    config
        .interactive
        .clients
        .iter()
        .find(|c| c.client_id == client_id)
        .map(Client::declared)
}

/// Why a client could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// The store did not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The client's metadata document was not acceptable.
    #[error(transparent)]
    Document(#[from] DocumentError),
}

/// The client `client_id`, of whatever kind: declared, registered, or named by
/// the URL of its metadata document (when `documents` are fetched).
///
/// # Errors
///
/// The store did not answer, or the metadata document was not acceptable.
pub async fn find(
    config: &Config,
    store: Option<&Store>,
    documents: Option<&MetadataDocuments>,
    client_id: &str,
) -> Result<Option<Client>, FindError> {
    if let Some(client) = declared(config, client_id) {
        return Ok(Some(client));
    }
    if is_document_url(client_id) {
        return match documents {
            Some(documents) => Ok(Some(documents.client(client_id, &config.scopes).await?)),
            None => Ok(None),
        };
    }
    let Some(store) = store else {
        return Ok(None);
    };
    if !client_id.starts_with("dcr_") {
        return Ok(None);
    }
    Ok(store
        .client(client_id)
        .await?
        .and_then(|record| Client::registered(&record, config)))
}
