//! The grants of the interactive flow at the token endpoint: `authorization_code`
//! (OAuth 2.1 section 4.1.3, with PKCE) and `refresh_token` (section 4.3, rotated
//! on every use, RFC 9700 section 4.14).
//!
//! - A code is single-use and bound to its client, redirect URI, PKCE challenge
//!   and resource. A code presented a second time revokes the refresh family (and
//!   so the access tokens) issued from its first use.
//! - A refresh token is opaque, stored as a hash, bound to its client and
//!   resource, and replaced by a successor on each use. The successor is derived
//!   from the token it replaces (an HMAC under a key of the proxy's), so a client
//!   that refreshes twice within the reuse grace gets the same successor; a use
//!   after the grace revokes the whole family.
//!
//! Either grant, when it succeeds for a registered client, records that the
//! client was used (written at most once an hour per client): a registered client
//! unused for `oauth.registration.unused_ttl` is deleted by the store's sweep.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::Response;

use super::clients::{Client, ClientKind};
use super::{Form, OAuth, field, pkce, resource, token_answer};
use crate::body::Body;
use crate::clock::unix_now;
use crate::config::Config;
use crate::credentials::KeyHash;
use crate::rejection::{GrantError, LifecycleError, OAuthError, Rejection};
use crate::store::{CodeUse, RefreshRecord, RefreshUse, Store, StoreError};
use crate::tokens::Issue;

/// Prefix of refresh tokens.
const REFRESH_PREFIX: &str = "rt";

/// The successor of refresh token `presented`: the same for the same token, and
/// unguessable without `key`.
pub(super) fn successor(key: &hmac::Key, presented: &str) -> String {
    let tag = hmac::sign(key, presented.as_bytes());
    format!("{REFRESH_PREFIX}_{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

fn hash(secret: &str) -> String {
    KeyHash::of(secret).to_string()
}

/// The longest an authorization code may live (`oauth.code_ttl` is at most 10
/// minutes).
const MAX_CODE_TTL_SECS: i64 = 600;

/// The refresh family a code starts: derived from the code's hash, so that a
/// replay of the code names the family even before the first exchange has
/// recorded it. Public (it is in the access tokens' `jti`), and tells nothing of
/// the code.
fn family_of(code_hash: &str) -> String {
    let derived = blake3::derive_key(
        "authmd-proxy refresh family of a code v1",
        code_hash.as_bytes(),
    );
    let mut id = [0u8; 16];
    id.copy_from_slice(&derived[..16]);
    format!("fam_{}", bs58::encode(id).into_string())
}

fn store_down(error: impl std::fmt::Display) -> Rejection {
    tracing::warn!(%error, "the store refused an interactive grant");
    Rejection::Lifecycle(LifecycleError::StoreUnavailable)
}

fn invalid_grant(why: GrantError) -> Rejection {
    Rejection::OAuth(OAuthError::InvalidGrant(why))
}

/// Records a use of `client` when it is a registered one (the store writes it at
/// most once per [`crate::store::CLIENT_TOUCH_SECS`]). The grant stands whether or
/// not the store answers: a use not recorded costs at most an hour of the client's
/// unused time.
async fn touch(store: &Store, client: &Client, now: i64) {
    match client.kind {
        ClientKind::Registered => {
            if let Err(error) = store.touch_client(&client.client_id, now).await {
                tracing::debug!(%error, client = %client.client_id, "cannot record a registered client's use");
            }
        }
        ClientKind::Declared | ClientKind::MetadataDocument => {}
    }
}

/// What an interactive grant issues.
struct Grant<'a> {
    subject: &'a str,
    person: &'a str,
    tier: &'a str,
    scopes: &'a [String],
    resource: &'a str,
    family: &'a str,
    family_expires_at: i64,
}

impl OAuth {
    /// `grant_type=authorization_code`.
    pub(super) async fn authorization_code(
        &self,
        config: &Config,
        store: &Store,
        client: &Client,
        form: &Form,
    ) -> Result<Response<Body>, Rejection> {
        let code = field(form, "code").ok_or(Rejection::OAuth(OAuthError::InvalidRequest(
            "`code` is required",
        )))?;
        let verifier = field(form, "code_verifier").ok_or(Rejection::OAuth(
            OAuthError::InvalidRequest("`code_verifier` is required (PKCE)"),
        ))?;
        let now = unix_now();
        let code_hash = hash(code);
        let record = match store.take_code(&code_hash, now).await.map_err(store_down)? {
            CodeUse::Fresh(record) => record,
            CodeUse::Replayed { .. } => {
                // The family is the code's, whether or not the first exchange has
                // stored it yet: a revoked family that is not stored is remembered
                // as revoked, so tokens the first exchange issues later are too.
                let family = family_of(&code_hash);
                self.revoke_family(store, &family, now).await?;
                tracing::info!(family, "authorization code replayed; its grant is revoked");
                return Err(invalid_grant(GrantError::CodeUsed));
            }
            CodeUse::Unknown => return Err(invalid_grant(GrantError::CodeUnknown)),
        };
        if record.client_id != client.client_id {
            return Err(invalid_grant(GrantError::CodeClientMismatch));
        }
        if field(form, "redirect_uri").is_some_and(|r| r != record.redirect_uri) {
            return Err(invalid_grant(GrantError::RedirectMismatch));
        }
        if !pkce::verify(verifier, &record.code_challenge) {
            return Err(invalid_grant(GrantError::VerifierMismatch));
        }
        self.same_resource(form, &record.resource)?;
        let family = family_of(&record.hash);
        let family_expires_at =
            now + i64::try_from(config.interactive.refresh_ttl.as_secs()).unwrap_or(i64::MAX / 4);
        store
            .set_code_family(&record.hash, &family)
            .await
            .map_err(store_down)?;
        let grant = Grant {
            subject: &record.subject,
            person: &record.person,
            tier: &record.tier,
            scopes: &record.scopes,
            resource: &record.resource,
            family: &family,
            family_expires_at,
        };
        let refresh = crate::random::secret(REFRESH_PREFIX).map_err(store_down)?;
        let answer = self
            .answer(config, store, client, &grant, &refresh, now)
            .await?;
        touch(store, client, now).await;
        Ok(answer)
    }

    /// `grant_type=refresh_token`.
    pub(super) async fn refresh_token(
        &self,
        config: &Config,
        store: &Store,
        client: &Client,
        form: &Form,
        key: &hmac::Key,
    ) -> Result<Response<Body>, Rejection> {
        let presented = field(form, "refresh_token").ok_or(Rejection::OAuth(
            OAuthError::InvalidRequest("`refresh_token` is required"),
        ))?;
        let now = unix_now();
        let grace = i64::try_from(config.interactive.refresh_reuse_grace.as_secs()).unwrap_or(0);
        let record: RefreshRecord = match store
            .use_refresh(&hash(presented), now, grace)
            .await
            .map_err(store_down)?
        {
            RefreshUse::Fresh(record) | RefreshUse::Grace(record) => record,
            RefreshUse::Reused { family } => {
                self.revoke_family(store, &family, now).await?;
                tracing::info!(
                    family,
                    "refresh token reused after its grace; the family is revoked"
                );
                return Err(invalid_grant(GrantError::RefreshReused));
            }
            RefreshUse::Revoked | RefreshUse::Unknown => {
                return Err(invalid_grant(GrantError::RefreshUnknown));
            }
        };
        if record.client_id != client.client_id {
            return Err(invalid_grant(GrantError::CodeClientMismatch));
        }
        self.same_resource(form, &record.resource)?;
        // A narrower scope may be asked for (RFC 6749 section 6), never a wider one.
        let scopes = match field(form, "scope") {
            None => record.scopes.clone(),
            Some(asked) => {
                let asked: Vec<String> = asked.split_whitespace().map(str::to_owned).collect();
                if !asked.iter().all(|s| record.scopes.contains(s)) {
                    return Err(Rejection::OAuth(OAuthError::InvalidScope));
                }
                asked
            }
        };
        let grant = Grant {
            subject: &record.subject,
            person: &record.person,
            tier: &record.tier,
            scopes: &scopes,
            resource: &record.resource,
            family: &record.family,
            family_expires_at: record.family_expires_at,
        };
        let next = zeroize::Zeroizing::new(successor(key, presented));
        let answer = self
            .answer(config, store, client, &grant, &next, now)
            .await?;
        touch(store, client, now).await;
        Ok(answer)
    }

    /// RFC 7009 for a refresh token: its whole family is revoked (RFC 9700 section
    /// 4.14), access tokens included. An unknown token changes nothing.
    pub(super) async fn revoke_refresh(&self, store: &Store, token: &str) -> Result<(), Rejection> {
        let now = unix_now();
        // Using it for the revocation spends it; its family goes with it.
        let family = match store
            .use_refresh(&hash(token), now, 0)
            .await
            .map_err(store_down)?
        {
            RefreshUse::Fresh(record) | RefreshUse::Grace(record) => record.family,
            RefreshUse::Reused { family } => family,
            RefreshUse::Revoked | RefreshUse::Unknown => return Ok(()),
        };
        self.revoke_family(store, &family, now).await?;
        tracing::info!(family, "refresh token revoked with its family");
        Ok(())
    }

    /// A `resource` in the token request must name the grant's resource.
    fn same_resource(&self, form: &Form, bound: &str) -> Result<(), Rejection> {
        let mut asked = form.iter().filter(|(n, _)| n == "resource");
        match (asked.next(), asked.next()) {
            (None, _) => Ok(()),
            (Some((_, value)), None)
                if resource::find(value, self.tokens.audiences()).is_some_and(|r| r == bound) =>
            {
                Ok(())
            }
            _ => Err(Rejection::OAuth(OAuthError::InvalidTarget)),
        }
    }

    /// Revokes a refresh family everywhere: its refresh tokens in the store, and
    /// its access tokens through the deny-list every replica follows.
    async fn revoke_family(&self, store: &Store, family: &str, now: i64) -> Result<(), Rejection> {
        store.revoke_family(family, now).await.map_err(store_down)?;
        // Longer than a token's life by the longest a code lives: an exchange in
        // flight when its code is replayed issues its token a moment later.
        let until = now + self.tokens.ttl() + MAX_CODE_TTL_SECS;
        store
            .revoke_token(family, until)
            .await
            .map_err(store_down)?;
        self.tokens.deny(family, until);
        Ok(())
    }

    /// Stores the refresh token `refresh` of `grant` (inserting is idempotent for
    /// a successor given again within the grace) and answers with it and a new
    /// access token.
    async fn answer(
        &self,
        config: &Config,
        store: &Store,
        client: &Client,
        grant: &Grant<'_>,
        refresh: &str,
        now: i64,
    ) -> Result<Response<Body>, Rejection> {
        let tier = config
            .tiers
            .find(grant.tier)
            .unwrap_or(crate::tier::TierId(1));
        let scopes = config
            .scopes
            .granted_known(grant.scopes.iter().map(String::as_str));
        let record = RefreshRecord {
            hash: hash(refresh),
            family: grant.family.to_owned(),
            client_id: client.client_id.clone(),
            resource: grant.resource.to_owned(),
            scopes: grant.scopes.to_vec(),
            subject: grant.subject.to_owned(),
            person: grant.person.to_owned(),
            tier: grant.tier.to_owned(),
            created_at: now,
            family_expires_at: grant.family_expires_at,
        };
        match store.insert_refresh(&record).await {
            // A retry within the grace derives the successor stored by the first.
            Ok(()) | Err(StoreError::Duplicate) => {}
            Err(error) => return Err(store_down(error)),
        }
        let issue = Issue {
            subject: grant.subject,
            audience: grant.resource,
            scopes,
            tier,
            client_id: Some(&client.client_id),
            family: Some(grant.family),
            // The person is the subject; no key was claimed.
            operator: None,
        };
        let issued = self
            .tokens
            .issue(&issue, now)
            .ok_or(Rejection::Lifecycle(LifecycleError::StoreUnavailable))?;
        tracing::debug!(client = %client.client_id, principal = %grant.subject, "interactive grant issued");
        Ok(token_answer(&issued, Some(refresh)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_successor_is_the_same_for_the_same_token_and_differs_otherwise() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]);
        let a = successor(&key, "rt_a");
        assert_eq!(a, successor(&key, "rt_a"));
        assert_ne!(a, successor(&key, "rt_b"));
        assert_ne!(
            a,
            successor(&hmac::Key::new(hmac::HMAC_SHA256, &[8; 32]), "rt_a")
        );
        assert!(a.starts_with("rt_") && a.len() == 3 + 43);
    }

    #[test]
    fn a_codes_family_is_named_by_its_hash_alone() {
        let a = hash("ac_one");
        assert_eq!(family_of(&a), family_of(&a));
        assert_ne!(family_of(&a), family_of(&hash("ac_two")));
        let family = family_of(&a);
        assert!(family.starts_with("fam_") && family.len() > 20, "{family}");
        assert!(!family.contains(&a["blake3:".len()..][..8]));
    }
}
