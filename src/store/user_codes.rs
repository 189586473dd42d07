//! Pending `user_code` confirmations (`registration.claim.user_code`): a person
//! signed in on the claim page confirmed a claim, and the agent finishes it with
//! the short code the page showed them (RFC 8628's device flow, reversed).
//!
//! One row per registration (`claim_user_codes`): the code's keyed hash (never the
//! code), the person who confirmed, the code's expiry and its count of wrong
//! tries. A new confirmation replaces the row and so resets the count. A check
//! ([`Store::check_user_code`]) reads and updates the row in one transaction: a
//! match deletes it (a code works once), a miss adds one to the count, and from
//! [`USER_CODE_TRIES`] misses on the row is locked.

use super::{Operator, Store, StoreError};

/// Wrong tries after which a pending confirmation is locked: the person must
/// confirm again on the claim page, which issues a new code.
pub const USER_CODE_TRIES: i64 = 5;

/// A pending confirmation, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUserCode {
    /// The registration it claims.
    pub registration_id: String,
    /// The keyed hash of the normalized code (see the caller).
    pub code_hash: [u8; 32],
    /// The person who confirmed, who becomes the operator.
    pub operator: Operator,
    /// The code stops working at this time.
    pub expires_at: i64,
    /// Wrong tries so far.
    pub failures: i64,
}

/// What checking a code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCodeCheck {
    /// The right code: the person who confirmed. The pending row is gone.
    Matched(Operator),
    /// A wrong code, now counted: how many tries are left (0: now locked).
    Mismatched {
        /// Tries left before the confirmation is locked.
        remaining: i64,
    },
    /// Locked by earlier wrong tries; nothing was counted.
    Locked,
    /// The code expired; nothing was counted.
    Expired,
    /// No confirmation is pending for this registration.
    Missing,
}

/// What the stored row says about a try of `hash` at `now`, before counting it.
pub(super) fn classify(
    pending: &PendingUserCode,
    hash: &[u8; 32],
    now: i64,
) -> Option<UserCodeCheck> {
    if pending.failures >= USER_CODE_TRIES {
        Some(UserCodeCheck::Locked)
    } else if now >= pending.expires_at {
        Some(UserCodeCheck::Expired)
    } else if constant_time_eq(&pending.code_hash, hash) {
        Some(UserCodeCheck::Matched(pending.operator.clone()))
    } else {
        None
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Store {
    /// Stores a pending confirmation, replacing the registration's earlier one
    /// (and its count of wrong tries); forgets other registrations' confirmations
    /// that expired before `now`.
    pub async fn put_user_code(
        &self,
        pending: &PendingUserCode,
        now: i64,
    ) -> Result<(), StoreError> {
        write!(self.put_user_code(pending, now))
    }

    /// The registration's pending confirmation, if one is stored.
    pub async fn user_code(
        &self,
        registration_id: &str,
    ) -> Result<Option<PendingUserCode>, StoreError> {
        dispatch!(self.user_code(registration_id))
    }

    /// Tries the code whose hash is `hash` against the registration's pending
    /// confirmation at `now`, atomically: a match takes the confirmation (it works
    /// once); a miss is counted, and the [`USER_CODE_TRIES`]th locks it.
    pub async fn check_user_code(
        &self,
        registration_id: &str,
        hash: &[u8; 32],
        now: i64,
    ) -> Result<UserCodeCheck, StoreError> {
        write!(self.check_user_code(registration_id, hash, now))
    }
}
