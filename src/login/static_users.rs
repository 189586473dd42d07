//! `kind: static`: accounts written in the config, with argon2 password hashes
//! (PHC strings).
//!
//! An unknown username costs as much as a wrong password: it is checked against a
//! dummy hash made with the first account's parameters, so the answer's timing
//! does not tell which usernames exist (and the answer's text never does). Hashing
//! runs on the blocking pool, a few at a time: a flood of sign-ins cannot take the
//! request path's threads nor all the memory (argon2 uses tens of MiB per hash).
//! Failed attempts are limited per client address by the caller.

use std::sync::{Arc, OnceLock};

use argon2::{Argon2, CustomizedPasswordHasher, Params, PasswordHash, PasswordVerifier};
use zeroize::Zeroizing;

use super::Person;
use super::settings::StaticUser;
use crate::tier::TierId;

/// The longest password looked at: longer ones fail without hashing.
const MAX_PASSWORD: usize = 1024;
/// Hashes computed at once.
const AT_ONCE: usize = 4;

/// A static provider's accounts.
#[derive(Debug)]
pub(crate) struct StaticProvider {
    id: String,
    users: Vec<StaticUser>,
    /// A hash of no one's password with the first account's parameters, made on
    /// first need.
    dummy: Arc<OnceLock<Option<String>>>,
    slots: tokio::sync::Semaphore,
}

/// Why a PHC string is not an argon2 hash this provider can check.
pub fn check_hash(phc: &str) -> Result<(), &'static str> {
    let hash = PasswordHash::new(phc).map_err(|_| "is not a PHC string")?;
    if !matches!(hash.algorithm.as_str(), "argon2id" | "argon2i" | "argon2d") {
        return Err("is not an argon2 hash (`$argon2id$...`)");
    }
    Params::try_from(&hash).map_err(|_| "has argon2 parameters out of range")?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err("lacks its salt or its hash");
    }
    Ok(())
}

/// An argon2id PHC string of `password` for a static account, with argon2's
/// default parameters (19 MiB, 2 passes, 1 lane: OWASP's recommendation) and a
/// random salt; `None` when the OS random source fails.
#[must_use]
pub fn hash_password(password: &str) -> Option<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).ok()?;
    Argon2::default()
        .hash_password_customized(password.as_bytes(), &salt, None, None, Params::default())
        .ok()
        .map(|hash| hash.to_string())
}

impl StaticProvider {
    pub(crate) fn new(id: &str, users: Vec<StaticUser>) -> StaticProvider {
        StaticProvider {
            id: id.to_owned(),
            users,
            dummy: Arc::new(OnceLock::new()),
            slots: tokio::sync::Semaphore::new(AT_ONCE),
        }
    }

    /// The person whose username and password these are; `None` for a wrong
    /// password and an unknown username alike, after the same work.
    pub(crate) async fn verify(&self, username: &str, password: &str) -> Option<Person> {
        if password.len() > MAX_PASSWORD || username.len() > MAX_PASSWORD {
            return None;
        }
        let user = self.users.iter().find(|u| u.username == username);
        let hash = user.map(|u| u.password_hash.clone());
        let template = self.users.first()?.password_hash.clone();
        let dummy = self.dummy.clone();
        let password = Zeroizing::new(password.to_owned());
        let _slot = self.slots.acquire().await.ok()?;
        let verified = tokio::task::spawn_blocking(move || match hash {
            Some(hash) => check(&hash, &password),
            None => {
                // The same work as a wrong password, then refused whatever it says.
                if let Some(dummy) = dummy.get_or_init(|| dummy_hash(&template)) {
                    let _ = check(dummy, &password);
                }
                false
            }
        })
        .await
        .unwrap_or(false);
        let user = user.filter(|_| verified)?;
        Some(Person {
            provider: self.id.clone(),
            subject: user.username.clone(),
            username: Some(user.username.clone()),
            name: user.name.clone(),
            email: user.email.clone(),
            groups: Vec::new(),
            tier: TierId::ANONYMOUS,
        })
    }
}

fn check(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// A hash of a random password with `template`'s algorithm, version and
/// parameters.
fn dummy_hash(template: &str) -> Option<String> {
    let parsed = PasswordHash::new(template).ok()?;
    let params = Params::try_from(&parsed).ok()?;
    let mut salt = [0u8; 16];
    let mut password = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut salt).ok()?;
    getrandom::fill(password.as_mut_slice()).ok()?;
    let hash = Argon2::default()
        .hash_password_customized(
            password.as_slice(),
            &salt,
            Some(parsed.algorithm.as_str()),
            parsed.version,
            params,
        )
        .ok()?;
    Some(hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordHasher;

    fn hash(password: &str) -> String {
        let params = Params::new(256, 1, 1, None).unwrap();
        Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password_with_salt(password.as_bytes(), b"saltsaltsaltsalt")
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn the_right_password_signs_in_and_nothing_else_does() {
        let users = vec![StaticUser {
            username: "ada".into(),
            password_hash: hash("correct horse"),
            email: Some("ada@example.com".into()),
            name: Some("Ada".into()),
        }];
        let provider = StaticProvider::new("demo", users);
        let person = provider.verify("ada", "correct horse").await.unwrap();
        assert_eq!(person.subject, "ada");
        assert_eq!(person.principal(), "user:demo:ada");
        assert!(provider.verify("ada", "wrong").await.is_none());
        assert!(provider.verify("bob", "correct horse").await.is_none());
        assert!(provider.dummy.get().cloned().flatten().is_some());
        assert!(provider.verify("ada", &"x".repeat(2000)).await.is_none());
    }

    #[test]
    fn a_hashed_password_is_a_checkable_argon2id_hash_of_it() {
        let phc = hash_password("demo password").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_eq!(check_hash(&phc), Ok(()));
        assert!(check(&phc, "demo password"));
        assert!(!check(&phc, "demo passwore"));
        assert_ne!(phc, hash_password("demo password").unwrap(), "salted");
    }

    #[test]
    fn hashes_are_checked() {
        assert!(check_hash(&hash("x")).is_ok());
        assert!(check_hash("plain").is_err());
        assert!(check_hash("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ").is_err());
        assert!(check_hash("$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E").is_err());
    }
}
