//! The records of interactive OAuth (the authorization-code flow): dynamically
//! registered clients, authorization codes, refresh tokens and their families, and
//! remembered consents; and the [`Store`] methods that keep them, in both backends.
//!
//! Only hashes of secrets are stored (codes, refresh tokens, client secrets), as the
//! caller hands them over; times are unix seconds passed in by the caller.
//!
//! What must happen once happens once, across replicas:
//!
//! - [`Store::take_code`] marks a code used in the same statement that finds it
//!   unused (`UPDATE ... WHERE used_at IS NULL RETURNING`): of any number of takes
//!   at once, on any number of replicas, exactly one is [`CodeUse::Fresh`].
//! - [`Store::use_refresh`] does the same for a refresh token; the uses after the
//!   first are told apart by how long after the first they came
//!   ([`RefreshUse::Grace`] or [`RefreshUse::Reused`]).
//!
//! A refresh family's revocation is a row of its own (`oauth_families`), not a mark
//! on the family's tokens, so a token inserted into a family after it was revoked
//! (a rotation racing with a reuse on another replica) is revoked too.
//!
//! [`Store::sweep_grants`] forgets what can no longer be used, and
//! [`Store::sweep_clients`] the registered clients no one used for a while (with
//! their consents and refresh tokens): both run in the follower's periodic sweep.
//! A client's use is recorded by [`Store::touch_client`] at most once per
//! [`CLIENT_TOUCH_SECS`], so that a busy client costs no write per grant.

use super::rows::{Columns, Value, scopes_text};
use super::{Store, StoreError};

/// How long a used or expired code is kept after its expiry, so that a replay a
/// little after the code's lifetime is still recognised as one; and how long a
/// revoked family's tokens are kept after the revocation, so that their use is
/// answered [`RefreshUse::Revoked`] rather than [`RefreshUse::Unknown`].
pub const GRANT_KEEP_SECS: i64 = 600;

/// A registered client's last use is written only when the stored one is at least
/// this old ([`Store::touch_client`]): one write per client per hour rather than
/// one per grant. The stored time so lags the real last use by less than this, and
/// [`Store::sweep_clients`] waits this much longer before deleting.
pub const CLIENT_TOUCH_SECS: i64 = 3600;

/// A dynamically registered client (RFC 7591). Declared clients live in the config
/// and metadata-document clients in a cache: neither is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// `dcr_<random>`.
    pub client_id: String,
    /// Hash of its secret, for `client_secret_basic` / `client_secret_post`.
    pub secret_hash: Option<String>,
    /// The registered metadata as JSON (`redirect_uris`, `client_name`, ...).
    pub metadata: String,
    /// Hash of (client address, canonical metadata): the same registration again
    /// soon after returns the same client.
    pub fingerprint: String,
    /// Registration time.
    pub created_at: i64,
    /// Last time it was used (registration, then a code exchange or a refresh,
    /// written at most once per [`CLIENT_TOUCH_SECS`]); unused clients are deleted.
    pub last_used_at: i64,
}

/// An authorization code, as issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRecord {
    /// Hash of the code.
    pub hash: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The redirect URI of the request, which the token request must repeat.
    pub redirect_uri: String,
    /// The PKCE challenge (S256).
    pub code_challenge: String,
    /// The resource (audience) the tokens are for.
    pub resource: String,
    /// Granted scope names.
    pub scopes: Vec<String>,
    /// The person's principal (`user:<provider>:<subject>`).
    pub subject: String,
    /// The person, as JSON.
    pub person: String,
    /// The person's tier.
    pub tier: String,
    /// The code stops working at this time.
    pub expires_at: i64,
}

/// What taking a code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeUse {
    /// Its first use: the code, now marked used.
    Fresh(CodeRecord),
    /// It was used before: the refresh family issued from its first use, if that is
    /// recorded yet (see [`Store::set_code_family`]), so the caller can revoke it.
    Replayed {
        /// The family issued from the first use.
        family: Option<String>,
    },
    /// No such code, or it expired unused.
    Unknown,
}

/// A refresh token, as issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    /// Hash of the token.
    pub hash: String,
    /// Its family (`fam_<random>`): every token rotated from one code's grant.
    pub family: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The resource (audience) the tokens are for.
    pub resource: String,
    /// Granted scope names.
    pub scopes: Vec<String>,
    /// The person's principal.
    pub subject: String,
    /// The person, as JSON.
    pub person: String,
    /// The person's tier.
    pub tier: String,
    /// Issue time.
    pub created_at: i64,
    /// The family's absolute end: no token of it works from then on.
    pub family_expires_at: i64,
}

/// What using a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// Its first use: the token, now marked used.
    Fresh(RefreshRecord),
    /// A use less than `grace` seconds after the first (a client's retry): the token.
    Grace(RefreshRecord),
    /// A use later than that: the token leaked; the caller revokes the family.
    Reused {
        /// The token's family.
        family: String,
    },
    /// Its family was revoked.
    Revoked,
    /// No such token, or its family has expired.
    Unknown,
}

/// What [`Store::sweep_grants`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrantSweep {
    /// Authorization codes.
    pub codes: u64,
    /// Refresh tokens.
    pub refresh_tokens: u64,
    /// Refresh families (their revocation records).
    pub families: u64,
    /// Remembered consents.
    pub consents: u64,
}

/// The columns of `oauth_clients`, in [`client_values`] / [`client`] order.
pub(super) const CLIENT_COLUMNS: &str =
    "client_id, secret_hash, metadata, fingerprint, created_at, last_used_at";

/// The columns of `oauth_codes` a [`CodeRecord`] has, in [`code_values`] / [`code`]
/// order; the table also has `used_at` and `family`.
pub(super) const CODE_COLUMNS: &str = "hash, client_id, redirect_uri, code_challenge, resource, \
     scopes, subject, person, tier, expires_at";

/// The columns of `oauth_refresh` a [`RefreshRecord`] has, in [`refresh_values`] /
/// [`refresh`] order; the table also has `used_at`.
pub(super) const REFRESH_COLUMNS: &str = "hash, family, client_id, resource, scopes, subject, \
     person, tier, created_at, family_expires_at";

/// A client's values, in [`CLIENT_COLUMNS`] order.
pub(super) fn client_values(client: &ClientRecord) -> [Value<'_>; 6] {
    [
        client.client_id.as_str().into(),
        client.secret_hash.as_deref().into(),
        client.metadata.as_str().into(),
        client.fingerprint.as_str().into(),
        client.created_at.into(),
        client.last_used_at.into(),
    ]
}

/// A client from a row of [`CLIENT_COLUMNS`].
pub(super) fn client<R: Columns>(row: &R) -> Result<ClientRecord, R::Error> {
    Ok(ClientRecord {
        client_id: row.text(0)?,
        secret_hash: row.optional_text(1)?,
        metadata: row.text(2)?,
        fingerprint: row.text(3)?,
        created_at: row.integer(4)?,
        last_used_at: row.integer(5)?,
    })
}

/// A code's values, in [`CODE_COLUMNS`] order.
pub(super) fn code_values(code: &CodeRecord) -> [Value<'_>; 10] {
    [
        code.hash.as_str().into(),
        code.client_id.as_str().into(),
        code.redirect_uri.as_str().into(),
        code.code_challenge.as_str().into(),
        code.resource.as_str().into(),
        scopes_text(&code.scopes).into(),
        code.subject.as_str().into(),
        code.person.as_str().into(),
        code.tier.as_str().into(),
        code.expires_at.into(),
    ]
}

/// A code from a row of [`CODE_COLUMNS`].
pub(super) fn code<R: Columns>(row: &R) -> Result<CodeRecord, R::Error> {
    Ok(CodeRecord {
        hash: row.text(0)?,
        client_id: row.text(1)?,
        redirect_uri: row.text(2)?,
        code_challenge: row.text(3)?,
        resource: row.text(4)?,
        scopes: scopes(&row.text(5)?),
        subject: row.text(6)?,
        person: row.text(7)?,
        tier: row.text(8)?,
        expires_at: row.integer(9)?,
    })
}

/// A refresh token's values, in [`REFRESH_COLUMNS`] order.
pub(super) fn refresh_values(refresh: &RefreshRecord) -> [Value<'_>; 10] {
    [
        refresh.hash.as_str().into(),
        refresh.family.as_str().into(),
        refresh.client_id.as_str().into(),
        refresh.resource.as_str().into(),
        scopes_text(&refresh.scopes).into(),
        refresh.subject.as_str().into(),
        refresh.person.as_str().into(),
        refresh.tier.as_str().into(),
        refresh.created_at.into(),
        refresh.family_expires_at.into(),
    ]
}

/// A refresh token from a row of [`REFRESH_COLUMNS`].
pub(super) fn refresh<R: Columns>(row: &R) -> Result<RefreshRecord, R::Error> {
    Ok(RefreshRecord {
        hash: row.text(0)?,
        family: row.text(1)?,
        client_id: row.text(2)?,
        resource: row.text(3)?,
        scopes: scopes(&row.text(4)?),
        subject: row.text(5)?,
        person: row.text(6)?,
        tier: row.text(7)?,
        created_at: row.integer(8)?,
        family_expires_at: row.integer(9)?,
    })
}

/// Scope names from their stored form.
pub(super) fn scopes(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// What a refresh token's row says about a use at `now` that did not find it
/// unused and live: `used_at` (`None`: unused), whether its family is revoked.
pub(super) fn classify_refresh(
    record: RefreshRecord,
    used_at: Option<i64>,
    revoked: bool,
    now: i64,
    grace: i64,
) -> RefreshUse {
    if now >= record.family_expires_at {
        RefreshUse::Unknown
    } else if revoked {
        RefreshUse::Revoked
    } else {
        match used_at {
            // Unused, live and not revoked, yet not taken: it was deleted or revoked
            // between the two statements; it is not usable now.
            None => RefreshUse::Unknown,
            Some(first) if now < first.saturating_add(grace) => RefreshUse::Grace(record),
            Some(_) => RefreshUse::Reused {
                family: record.family,
            },
        }
    }
}

impl Store {
    /// Stores a newly registered client; [`StoreError::Duplicate`] if its id exists.
    pub async fn insert_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
        write!(self.insert_client(client))
    }

    /// One registered client by id.
    pub async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        dispatch!(self.client(client_id))
    }

    /// The newest client registered with this fingerprint at or after `since`.
    pub async fn client_by_fingerprint(
        &self,
        fingerprint: &str,
        since: i64,
    ) -> Result<Option<ClientRecord>, StoreError> {
        dispatch!(self.client_by_fingerprint(fingerprint, since))
    }

    /// Records a use of a registered client at `now`, when the stored last use is
    /// [`CLIENT_TOUCH_SECS`] or more before it; true when it was written. An
    /// unknown client is left alone.
    pub async fn touch_client(&self, client_id: &str, now: i64) -> Result<bool, StoreError> {
        write!(self.touch_client(client_id, now))
    }

    /// Deletes the clients last used before `before`, and with them their
    /// remembered consents and their refresh tokens (which no one could use any
    /// more: a refresh names its client, and the client is unknown now); returns
    /// how many clients. Their codes and refresh families' records are left to
    /// [`Store::sweep_grants`], which forgets them when they expire.
    pub async fn delete_clients_unused_since(&self, before: i64) -> Result<u64, StoreError> {
        write!(self.delete_clients_unused_since(before))
    }

    /// Deletes, as [`Store::delete_clients_unused_since`] does, the registered
    /// clients not used for `unused_for` seconds at `now`, allowing for the lag of
    /// [`Store::touch_client`]: a client goes between `unused_for` and
    /// `unused_for` + [`CLIENT_TOUCH_SECS`] after its last use, never sooner.
    pub async fn sweep_clients(&self, now: i64, unused_for: i64) -> Result<u64, StoreError> {
        let before = now
            .saturating_sub(unused_for)
            .saturating_sub(CLIENT_TOUCH_SECS);
        self.delete_clients_unused_since(before).await
    }

    /// Stores a new authorization code; [`StoreError::Duplicate`] if its hash exists.
    pub async fn insert_code(&self, code: &CodeRecord) -> Result<(), StoreError> {
        write!(self.insert_code(code))
    }

    /// Takes a code at `now`, atomically: the first take of an unexpired code marks
    /// it used and is [`CodeUse::Fresh`]; every later one is [`CodeUse::Replayed`]
    /// (for [`GRANT_KEEP_SECS`] after its expiry, then [`CodeUse::Unknown`]); an
    /// unknown code, or one that expired unused, is [`CodeUse::Unknown`].
    pub async fn take_code(&self, hash: &str, now: i64) -> Result<CodeUse, StoreError> {
        write!(self.take_code(hash, now))
    }

    /// Records the refresh family issued from a code's first use, for
    /// [`CodeUse::Replayed`] to name. A code that is not stored is left alone.
    pub async fn set_code_family(&self, hash: &str, family: &str) -> Result<(), StoreError> {
        write!(self.set_code_family(hash, family))
    }

    /// Stores a new refresh token (and its family, the first time);
    /// [`StoreError::Duplicate`] if its hash exists. A token of a revoked family is
    /// stored revoked.
    pub async fn insert_refresh(&self, refresh: &RefreshRecord) -> Result<(), StoreError> {
        write!(self.insert_refresh(refresh))
    }

    /// Uses a refresh token at `now`, atomically: the first use marks it used and is
    /// [`RefreshUse::Fresh`]; a use less than `grace` seconds after the first is
    /// [`RefreshUse::Grace`], a later one [`RefreshUse::Reused`]; a token of a
    /// revoked family is [`RefreshUse::Revoked`]; an unknown token, or one whose
    /// family has expired, is [`RefreshUse::Unknown`].
    pub async fn use_refresh(
        &self,
        hash: &str,
        now: i64,
        grace: i64,
    ) -> Result<RefreshUse, StoreError> {
        write!(self.use_refresh(hash, now, grace))
    }

    /// Revokes a refresh family at `now`: none of its tokens, present or future,
    /// works again. Revoking it again changes nothing.
    pub async fn revoke_family(&self, family: &str, now: i64) -> Result<(), StoreError> {
        write!(self.revoke_family(family, now))
    }

    /// True when the family was revoked (and the revocation not yet forgotten).
    pub async fn family_revoked(&self, family: &str) -> Result<bool, StoreError> {
        dispatch!(self.family_revoked(family))
    }

    /// Remembers that `subject` consented to `scopes` for `client_id` until
    /// `expires_at`, replacing what was remembered before.
    pub async fn remember_consent(
        &self,
        subject: &str,
        client_id: &str,
        scopes: &[String],
        expires_at: i64,
    ) -> Result<(), StoreError> {
        write!(self.remember_consent(subject, client_id, scopes, expires_at))
    }

    /// The scopes `subject` consented to for `client_id`, unless that expired by `now`.
    pub async fn consent(
        &self,
        subject: &str,
        client_id: &str,
        now: i64,
    ) -> Result<Option<Vec<String>>, StoreError> {
        dispatch!(self.consent(subject, client_id, now))
    }

    /// Deletes what can no longer be used at `now`: codes [`GRANT_KEEP_SECS`] past
    /// their expiry, the tokens of expired families and of families revoked more
    /// than [`GRANT_KEEP_SECS`] ago, expired families and expired consents.
    pub async fn sweep_grants(&self, now: i64) -> Result<GrantSweep, StoreError> {
        write!(self.sweep_grants(now))
    }
}
