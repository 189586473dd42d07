//! `registration.claim.user_code`: a claim confirmed on the page is finished by
//! the agent with a short code (RFC 8628's device flow, reversed).
//!
//! When the signed-in person confirms on the claim page, nothing is claimed yet:
//! the page shows an 8-character code from RFC 8628 §6.1's alphabet
//! (`BCDFGHJKLMNPQRSTVWXZ`, no vowels, shown `XXXX-XXXX`), and the person gives
//! it to their agent, which sends it with `POST claim` (`user_code`, with its
//! `claim_token` or `registration_id`). The right code claims through the same
//! path as a claim on the page, for the person who confirmed; the agent receives
//! the answer (and, with `issue_credential: at_claim`, its key) itself.
//!
//! The store keeps only the code's keyed hash, the person, the expiry and the
//! count of wrong tries. Each wrong code is counted in the store (atomically,
//! across replicas); after [`USER_CODE_TRIES`] the confirmation is locked and the
//! person must confirm again on the page, which shows a new code and starts a new
//! count. The registration itself is never locked by wrong codes: its id is no
//! secret, and locking it would let anyone who saw the id stop the claim for good.
//! The code is never logged.

use maud::html;
use zeroize::Zeroizing;

use super::{Claimant, allowed};
use crate::agent_auth::{AgentAuth, Failure};
use crate::config::Config;
use crate::login::Person;
use crate::rejection::LifecycleError;
use crate::store::{
    KeyRecord, Operator, PendingUserCode, RegistrationRecord, USER_CODE_TRIES, UserCodeCheck,
};
use crate::web;

/// RFC 8628 §6.1: 20 consonants, unambiguous when read aloud or typed.
const ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";

/// Characters in a code (20^8, about 2^34.6, with five tries per code).
const LENGTH: usize = 8;

/// A new code, 8 characters of [`ALPHABET`], without the dash.
fn generate() -> Result<Zeroizing<String>, getrandom::Error> {
    let mut code = Zeroizing::new(String::with_capacity(LENGTH));
    let mut bytes = Zeroizing::new([0u8; 32]);
    while code.len() < LENGTH {
        getrandom::fill(bytes.as_mut())?;
        // 240 = 12 * 20: bytes at or above it would favour the first letters.
        for &b in bytes.iter().filter(|&&b| b < 240) {
            if code.len() < LENGTH {
                code.push(char::from(ALPHABET[usize::from(b % 20)]));
            }
        }
    }
    Ok(code)
}

/// `XXXX-XXXX`.
fn display(code: &str) -> String {
    let (a, b) = code.split_at(code.len().min(LENGTH / 2));
    format!("{a}-{b}")
}

/// What an agent sent, as stored codes are hashed: without dashes and spaces, in
/// capitals.
fn normalize(input: &str) -> Zeroizing<String> {
    Zeroizing::new(
        input
            .chars()
            .filter(|c| *c != '-' && !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect(),
    )
}

/// The stored hash of a (normalized) code, keyed by the registration: a code is
/// worth nothing for another registration, and the same code for two
/// registrations hashes differently.
fn code_hash(registration_id: &str, code: &str) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key("authmd-proxy 2025 claim user_code");
    hasher.update(registration_id.as_bytes());
    hasher.update(&[0]);
    hasher.update(code.as_bytes());
    *hasher.finalize().as_bytes()
}

impl AgentAuth {
    /// The person confirmed on the claim page: checks what a claim would, stores a
    /// new code's hash for them (replacing an earlier one and its count), and
    /// answers with the page that shows the code.
    pub(super) async fn issue_user_code(
        &self,
        config: &Config,
        registration: &RegistrationRecord,
        person: Person,
        now: i64,
    ) -> Result<http::Response<crate::body::Body>, Failure> {
        if registration.claimed_at.is_some() {
            return Err(LifecycleError::PreviouslyClaimed.into());
        }
        if registration.claim_expires_at.is_some_and(|at| now >= at) {
            return Err(LifecycleError::ClaimExpired.into());
        }
        let claimant = Claimant::Person(person);
        if !allowed(config, &claimant) {
            return Err(LifecycleError::ClaimNotAllowed.into());
        }
        let Claimant::Person(person) = claimant else {
            return Err(LifecycleError::StoreUnavailable.into());
        };
        let key = self.store.key(&registration.key_id).await?;
        if key.is_none_or(|k| k.revoked_at.is_some()) {
            return Err(LifecycleError::RegistrationRevoked.into());
        }
        let code = generate().map_err(|_| Failure::from(LifecycleError::StoreUnavailable))?;
        let ttl = config.lifecycle.registration.claim.user_code_ttl;
        let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(600);
        let pending = PendingUserCode {
            registration_id: registration.id.clone(),
            code_hash: code_hash(&registration.id, &code),
            operator: Operator {
                provider: person.provider.clone(),
                subject: person.subject.clone(),
                handle: person.handle().to_owned(),
            },
            expires_at: now.saturating_add(ttl_secs),
            failures: 0,
        };
        self.store.put_user_code(&pending, now).await?;
        tracing::info!(registration = %registration.id, "claim confirmed on the page; user code issued");
        let minutes = ttl.as_secs().div_ceil(60);
        let shown = Zeroizing::new(display(&code));
        let content = html! {
            p { "You confirmed the claim as " strong { (person.handle()) } ". One step is left: give this code to the agent. It finishes the claim by sending the code to " code { (config.endpoints.claim) } "." }
            p.code { strong { code { (shown.as_str()) } } }
            p.muted {
                "The code works once, for " (minutes) " minutes. After " (USER_CODE_TRIES)
                " wrong tries it stops working; open the claim link again and confirm to get a new one. Nothing is claimed until the agent sends it."
            }
        };
        Ok(web::page(
            http::StatusCode::OK,
            "Give this code to the agent",
            content,
        ))
    }

    /// `POST claim` with `user_code`: the agent finishes a claim confirmed on the
    /// page. The right code claims for the person who confirmed.
    pub(super) async fn finish_user_code(
        &self,
        config: &Config,
        registration: &RegistrationRecord,
        code: &str,
        now: i64,
    ) -> Result<(KeyRecord, Option<Zeroizing<String>>), Failure> {
        let hash = code_hash(&registration.id, &normalize(code));
        match self
            .store
            .check_user_code(&registration.id, &hash, now)
            .await?
        {
            UserCodeCheck::Matched(operator) => {
                self.complete(config, registration, &Claimant::Confirmed(operator), now)
                    .await
            }
            UserCodeCheck::Mismatched { remaining } if remaining > 0 => {
                tracing::info!(registration = %registration.id, remaining, "wrong user code");
                Err(Failure::with(
                    LifecycleError::UserCodeInvalid,
                    format!(
                        "{remaining} {} left",
                        if remaining == 1 { "try" } else { "tries" }
                    ),
                ))
            }
            UserCodeCheck::Mismatched { .. } => {
                tracing::warn!(registration = %registration.id, "wrong user code; the confirmation is locked");
                Err(Failure::with(
                    LifecycleError::UserCodeLocked,
                    "that was the last try",
                ))
            }
            UserCodeCheck::Locked => Err(LifecycleError::UserCodeLocked.into()),
            UserCodeCheck::Expired => Err(LifecycleError::UserCodeExpired.into()),
            UserCodeCheck::Missing => Err(LifecycleError::UserCodeNotIssued.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn codes_are_eight_letters_of_the_alphabet_shown_with_a_dash() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 8);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)), "{}", a.as_str());
        assert_ne!(*a, *b);
        assert_eq!(display("BCDFGHJK"), "BCDF-GHJK");
    }

    #[test]
    fn what_agents_send_is_read_without_case_or_dashes() {
        let code = "BCDFGHJK";
        for sent in ["BCDF-GHJK", "bcdf-ghjk", "bcdfghjk", " BCDF GHJK "] {
            assert_eq!(
                code_hash("reg_1", &normalize(sent)),
                code_hash("reg_1", code)
            );
        }
        assert_ne!(code_hash("reg_2", code), code_hash("reg_1", code));
        assert_ne!(code_hash("reg_1", "BCDFGHJL"), code_hash("reg_1", code));
    }
}
