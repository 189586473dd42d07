//! The RFC 7591 registration endpoint: a client sends its metadata and gets a
//! `client_id` (and, for a confidential client, a secret, shown once). Limited
//! per client address; a public client that sends the same registration again
//! within a minute gets the same client back, since some clients register twice
//! per connect.

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::clients::dynamic::{self, AuthMethod};
use super::{Caller, MAX_FORM, OAuth, json_no_store};
use crate::body::Body;
use crate::clock::unix_now;
use crate::config::Config;
use crate::credentials::KeyHash;
use crate::policy::MethodSet;
use crate::rejection::{LifecycleError, OAuthError, Rejection};
use crate::store::ClientRecord;

/// How long an identical registration returns the same client.
const SAME_REGISTRATION: i64 = 60;

impl OAuth {
    /// `POST registration_endpoint`. Refusals carry the RFC 7591 error and what
    /// was wrong (the second member).
    pub async fn register_client(
        &self,
        config: &Config,
        request: Request<Incoming>,
        caller: Caller<'_>,
    ) -> Result<Response<Body>, (Rejection, Option<String>)> {
        if request.method() != Method::POST {
            return Err((Rejection::MethodNotAllowed(MethodSet::of(&["POST"])), None));
        }
        let store = self
            .store
            .as_ref()
            .ok_or((Rejection::Lifecycle(LifecycleError::StoreUnavailable), None))?;
        let body = Limited::new(request.into_body(), MAX_FORM)
            .collect()
            .await
            .map_err(|_| {
                let error = OAuthError::InvalidClientMetadata;
                (
                    Rejection::OAuth(error),
                    Some("the body is larger than 16 KiB or was cut off".to_owned()),
                )
            })?
            .to_bytes();
        let metadata = dynamic::parse(&body, &config.scopes).map_err(|refused| {
            let error = match refused.error {
                "invalid_redirect_uri" => OAuthError::InvalidRedirectUri,
                _ => OAuthError::InvalidClientMetadata,
            };
            (Rejection::OAuth(error), Some(refused.description))
        })?;
        if let Some(limit) = &self.registration_limit {
            limit.check(caller.peer).map_err(|retry_after| {
                (
                    Rejection::Lifecycle(LifecycleError::RateLimited { retry_after }),
                    None,
                )
            })?;
        }
        let store_down = |error: crate::store::StoreError| {
            tracing::warn!(%error, "cannot store a client registration");
            (Rejection::Lifecycle(LifecycleError::StoreUnavailable), None)
        };
        let now = unix_now();
        let document = serde_json::Value::Object(metadata.document);
        let canonical = document.to_string();
        let fingerprint = blake3::hash(format!("{}\n{canonical}", caller.peer).as_bytes())
            .to_hex()
            .to_string();
        let public = metadata.auth_method == AuthMethod::None;
        if public {
            if let Some(same) = store
                .client_by_fingerprint(&fingerprint, now - SAME_REGISTRATION)
                .await
                .map_err(store_down)?
            {
                return Ok(answer(&same.client_id, same.created_at, None, document));
            }
        }
        let client_id = crate::random::public_id("dcr")
            .map_err(|_| (Rejection::Lifecycle(LifecycleError::StoreUnavailable), None))?;
        let secret = if public {
            None
        } else {
            Some(
                crate::random::secret("cs")
                    .map_err(|_| (Rejection::Lifecycle(LifecycleError::StoreUnavailable), None))?,
            )
        };
        let record = ClientRecord {
            client_id: client_id.clone(),
            secret_hash: secret.as_ref().map(|s| KeyHash::of(s).to_string()),
            metadata: canonical,
            fingerprint,
            created_at: now,
            last_used_at: now,
        };
        store.insert_client(&record).await.map_err(store_down)?;
        tracing::info!(client = %client_id, "client registered");
        Ok(answer(
            &client_id,
            now,
            secret.as_deref().map(String::as_str),
            document,
        ))
    }
}

/// The 201 answer: the client's id (and secret) with its metadata echoed.
fn answer(
    client_id: &str,
    issued_at: i64,
    secret: Option<&str>,
    mut document: serde_json::Value,
) -> Response<Body> {
    if let Some(map) = document.as_object_mut() {
        map.insert("client_id".into(), client_id.into());
        map.insert("client_id_issued_at".into(), issued_at.into());
        if let Some(secret) = secret {
            map.insert("client_secret".into(), secret.into());
            map.insert("client_secret_expires_at".into(), 0.into());
        }
    }
    json_no_store(StatusCode::CREATED, &document)
}
