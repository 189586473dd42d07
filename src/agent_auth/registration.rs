//! Agent registration (`POST register`); claims are in [`super::claims`].
//!
//! Anonymous registration answers at once with a key holding the pre-claim scopes
//! (never more than requested and allowed), a `registration_id`, and, where a claim
//! can be completed ([`crate::config::Claims::offered`]), a one-time `claim_token` with its
//! `claim_url`. Where a claim needs an identity assertion and no trusted issuer
//! carries one, no claim token is made at all. Registration with an identity assertion
//! (an ID-JAG from a trusted issuer) answers with a key at the claimed tier. A claim
//! binds the registration to a verified identity and raises the same key's tier
//! and scopes in place. Member names follow both auth.md generations and the seeds
//! (`type` or `identity_type`; `assertion` or `identity_assertion`; `scopes`,
//! `requested_scopes` or `scope`), which must agree when both are sent; other
//! members are ignored and listed ([`super::members`]). Toromarket's
//! `{email, username, password}` registers too: the e-mail address and user name are
//! kept with the registration as its contact details, the password is never read.

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use super::keys::valid_name;
use super::members::{JsonBody, Members, Names, Understood, invalid};
use super::{
    AgentAuth, Answer, Failure, ScopeNames, json, limit, mint, note_ignored, random_id, read_json,
    requested_scopes, rfc3339,
};
use crate::assertion::{AssertionKind, VerifiedAssertion};
use crate::clock::unix_now;
use crate::config::{Config, IssueCredential};
use crate::protocol::VERIFIED_EMAIL;
use crate::rejection::LifecycleError;
use crate::scope::ScopeSet;
use crate::store::{KeyRecord, RegistrationKind, RegistrationRecord};

/// The body of `POST register`. Members not listed here are ignored and named in
/// the answer's `ignored_members`; a `password` among them (Toromarket's
/// self-registration sends one) is also answered with a `message` saying that this
/// service keeps no passwords and how the agent signs in again.
#[derive(Debug)]
pub(super) struct RegisterBody {
    kind: Option<RegistrationKind>,
    /// The type as written (`verified_email` also names the assertion's type).
    type_name: Option<String>,
    client_name: Option<String>,
    scopes: Option<ScopeNames>,
    requested_credential_type: Option<String>,
    assertion_type: Option<String>,
    assertion: Option<String>,
    email: Option<String>,
    username: Option<String>,
    ignored: Vec<String>,
}

const TYPE: Names = &["type", "identity_type"];
const CLIENT_NAME: Names = &["client_name"];
const SCOPES: Names = &["scopes", "requested_scopes", "scope"];
const CREDENTIAL_TYPE: Names = &["requested_credential_type"];
const ASSERTION_TYPE: Names = &["assertion_type"];
const ASSERTION: Names = &["assertion", "identity_assertion"];
const EMAIL: Names = &["email"];
const USERNAME: Names = &["username"];

/// The registration types, by their wire names.
const TYPES: &[(&str, RegistrationKind)] = &[
    ("anonymous", RegistrationKind::Anonymous),
    ("identity_assertion", RegistrationKind::IdentityAssertion),
    // `verified_email` names the assertion's type as the identity's (JobsPipe).
    (VERIFIED_EMAIL, RegistrationKind::IdentityAssertion),
];

/// The member a password comes in: never read, never kept.
const PASSWORD: &str = "password";

impl JsonBody for RegisterBody {
    const MEMBERS: &'static [Names] = &[
        TYPE,
        CLIENT_NAME,
        SCOPES,
        CREDENTIAL_TYPE,
        ASSERTION_TYPE,
        ASSERTION,
        EMAIL,
        USERNAME,
    ];

    fn read(members: &Members) -> Result<Self, Failure> {
        Ok(RegisterBody {
            kind: members.choice(TYPE, TYPES)?,
            type_name: members.text(TYPE)?,
            client_name: members.checked_text(
                CLIENT_NAME,
                valid_name,
                "1 to 128 printable characters",
            )?,
            scopes: members.scopes(SCOPES)?,
            requested_credential_type: members.text(CREDENTIAL_TYPE)?,
            assertion_type: members.text(ASSERTION_TYPE)?,
            assertion: members.text(ASSERTION)?,
            email: members.checked_text(
                EMAIL,
                valid_email,
                "an e-mail address (`name@example.com`, at most 254 characters)",
            )?,
            username: members.checked_text(
                USERNAME,
                valid_name,
                "1 to 128 printable characters",
            )?,
            ignored: members.ignored(),
        })
    }

    fn ignored(&self) -> &[String] {
        &self.ignored
    }

    fn understood(&self) -> Vec<(&'static str, Understood)> {
        let text = |names: Names, value: &Option<String>| {
            value.clone().map(|v| (names[0], Understood::Text(v)))
        };
        [
            self.type_name
                .clone()
                .map(|name| (TYPE[0], Understood::Text(name))),
            text(CLIENT_NAME, &self.client_name),
            self.scopes.as_ref().map(|scopes| {
                let names = scopes.names().into_iter().map(str::to_owned).collect();
                (SCOPES[0], Understood::Scopes(names))
            }),
            text(CREDENTIAL_TYPE, &self.requested_credential_type),
            text(ASSERTION_TYPE, &self.assertion_type),
            text(ASSERTION, &self.assertion),
            text(EMAIL, &self.email),
            text(USERNAME, &self.username),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Who registers, as the body says: the name it gave and its contact details.
struct Registrant {
    client_name: Option<String>,
    email: Option<String>,
    username: Option<String>,
}

impl AgentAuth {
    /// `POST register`.
    pub async fn register(
        &self,
        config: &Config,
        request: Request<Incoming>,
        address: std::net::IpAddr,
        origin: &str,
    ) -> Answer {
        let body: RegisterBody = read_json(request, &Method::POST).await?;
        match body.requested_credential_type.as_deref() {
            None | Some("api_key") => {}
            Some(_) => {
                return Err(Failure::with(
                    LifecycleError::UnsupportedCredentialType,
                    "`requested_credential_type` must be `api_key`",
                ));
            }
        }
        let requested = match &body.scopes {
            Some(names) => Some(requested_scopes(config, &names.names())?),
            None => None,
        };
        let kind = match body.kind {
            Some(kind) => kind,
            None if body.assertion.is_some() => RegistrationKind::IdentityAssertion,
            None => RegistrationKind::Anonymous,
        };
        let settings = &config.lifecycle.registration;
        // Where the operator hands out keys, a refused registration says where.
        let elsewhere = |error: LifecycleError, detail: &str| match &config.service.contact {
            Some(contact) => Failure::with(error, format!("{detail}get a key at {contact}")),
            None if detail.is_empty() => error.into(),
            None => Failure::with(error, detail.trim_end_matches("; ")),
        };
        let registrant = Registrant {
            client_name: body.client_name,
            email: body.email,
            username: body.username,
        };
        let mut answer = match kind {
            RegistrationKind::Anonymous => {
                if !settings.anonymous {
                    return Err(elsewhere(LifecycleError::AnonymousNotEnabled, ""));
                }
                if body.assertion.is_some() || body.assertion_type.is_some() {
                    let stray = if body.assertion.is_some() {
                        "assertion"
                    } else {
                        "assertion_type"
                    };
                    return Err(invalid(format!(
                        "`{stray}`: an anonymous registration carries no assertion; \
                         send `\"type\": \"identity_assertion\"` with one, or leave it out"
                    )));
                }
                limit(self.anonymous_limit.as_deref(), address)?;
                self.register_anonymous(config, registrant, requested, origin)
                    .await?
            }
            RegistrationKind::IdentityAssertion => {
                if !self.verifier.is_enabled() {
                    return Err(elsewhere(LifecycleError::IdentityAssertionNotEnabled, ""));
                }
                let named = match (body.type_name.as_deref(), body.assertion_type.as_deref()) {
                    (Some(VERIFIED_EMAIL), Some(other))
                        if AssertionKind::parse(other) != Some(AssertionKind::VerifiedEmail) =>
                    {
                        return Err(Failure::with(
                            LifecycleError::InvalidBody,
                            format!(
                                "`type` is `verified_email` but `assertion_type` is `{other}`: send one of them, or both naming the same type"
                            ),
                        ));
                    }
                    (Some(VERIFIED_EMAIL), None) => Some(VERIFIED_EMAIL),
                    (_, named) => named,
                };
                let Some(assertion) = body.assertion else {
                    return Err(elsewhere(
                        LifecycleError::InvalidBody,
                        "`assertion` is missing: an `identity_assertion` registration carries one; ",
                    ));
                };
                let kind = self.assertion_kind(named, &assertion)?;
                limit(self.identity_limit.as_deref(), address)?;
                let verified = self.verify(kind, &assertion).await?;
                let requested = match requested {
                    Some(set) => Some(set),
                    None if !verified.scopes.is_empty() => {
                        let names: Vec<&str> = verified.scopes.iter().map(String::as_str).collect();
                        Some(config.scopes.granted_known(names))
                    }
                    None => None,
                };
                self.register_identity(config, registrant, requested, &verified, origin)
                    .await?
            }
        };
        note_ignored(&mut answer, &body.ignored);
        if body.ignored.iter().any(|name| name == PASSWORD) {
            let in_answer = answer.get("credential").is_some();
            let message = match answer.get("message").and_then(|m| m.as_str()) {
                // `at_claim` already says where the key comes from.
                Some(before) => format!("{before}; {}", no_passwords(config, origin, in_answer)),
                None => no_passwords(config, origin, in_answer),
            };
            answer["message"] = message.into();
        }
        Ok(json(StatusCode::OK, &answer))
    }

    async fn register_anonymous(
        &self,
        config: &Config,
        registrant: Registrant,
        requested: Option<ScopeSet>,
        origin: &str,
    ) -> Result<serde_json::Value, Failure> {
        let settings = &config.lifecycle.registration;
        let now = unix_now();
        let granted = narrow(settings.scopes, requested);
        let new = mint(config)?;
        let registration_id = random_id("reg")?;
        // No token that nobody could use: without a way to complete a claim, none
        // is made, stored or handed out.
        let claim_token = if config.claims().offered() {
            Some(zeroize::Zeroizing::new(random_id("clm")?))
        } else {
            None
        };
        // The registration can be claimed until then (by its id and an identity
        // assertion too, should an issuer be trusted later).
        let claim_expires_at =
            now + i64::try_from(settings.claim_ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let key = self.issued_key(
            config,
            &registration_id,
            new.hash,
            settings.tier,
            granted,
            &registrant.client_name,
        )?;
        let registration = RegistrationRecord {
            id: registration_id.clone(),
            kind: RegistrationKind::Anonymous,
            client_name: registrant.client_name,
            key_id: key.id.clone(),
            claim_hash: claim_token.as_deref().map(|token| claim_hash(token)),
            claim_expires_at: Some(claim_expires_at),
            claimed_at: None,
            subject: None,
            created_at: now,
            operator: None,
            contact_email: registrant.email,
            contact_username: registrant.username,
        };
        self.store.insert_registration(&registration, &key).await?;
        self.apply(&key).await;
        tracing::info!(registration = %registration_id, key = %key.id, "anonymous agent registered");
        let mut answer = issued(&registration_id, "anonymous", &new.secret, &key);
        // `at_claim`: the key exists with a secret nobody is given (no one can use
        // it); the claim stores a new one and hands it out.
        let at_claim = settings.issue_credential == IssueCredential::AtClaim;
        if at_claim {
            drop(new);
            if let Some(fields) = answer.as_object_mut() {
                fields.remove("credential");
                fields.remove("credential_expires");
            }
            answer["credential_issued"] = "at_claim".into();
            answer["message"] = format!(
                "the credential is issued when this registration is claimed: the answer to `POST {origin}{}` \
                 carries it (shown once); until then no credential works",
                config.endpoints.claim
            )
            .into();
        }
        if let Some(claim_token) = &claim_token {
            let post_claim = narrow(settings.claimed_scopes, requested);
            answer["claim_url"] = format!(
                "{origin}{}?token={}",
                config.endpoints.claim,
                claim_token.as_str()
            )
            .into();
            answer["claim_token"] = claim_token.as_str().into();
            answer["claim_token_expires"] = rfc3339(claim_expires_at).into();
            answer["post_claim_scopes"] = config
                .scopes
                .names(&post_claim)
                .split_whitespace()
                .collect::<Vec<_>>()
                .into();
            answer["post_claim_tier"] = config.tiers.get(settings.claimed_tier).name.clone().into();
        }
        if !at_claim {
            self.add_access_token(config, &mut answer, &key, granted, origin);
        }
        Ok(answer)
    }

    async fn register_identity(
        &self,
        config: &Config,
        registrant: Registrant,
        requested: Option<ScopeSet>,
        verified: &VerifiedAssertion,
        origin: &str,
    ) -> Result<serde_json::Value, Failure> {
        let settings = &config.lifecycle.registration;
        let now = unix_now();
        let granted = narrow(settings.claimed_scopes, requested);
        let new = mint(config)?;
        let registration_id = random_id("reg")?;
        let mut key = self.issued_key(
            config,
            &registration_id,
            new.hash,
            settings.claimed_tier,
            granted,
            &registrant.client_name,
        )?;
        key.owner = identity_owner(verified);
        let registration = RegistrationRecord {
            id: registration_id.clone(),
            kind: RegistrationKind::IdentityAssertion,
            client_name: registrant.client_name,
            key_id: key.id.clone(),
            claim_hash: None,
            claim_expires_at: None,
            claimed_at: Some(now),
            subject: Some(subject(verified)),
            created_at: now,
            operator: None,
            contact_email: registrant.email,
            contact_username: registrant.username,
        };
        self.consume(verified, now).await?;
        self.store.insert_registration(&registration, &key).await?;
        self.apply(&key).await;
        tracing::info!(registration = %registration_id, key = %key.id, issuer = %verified.issuer, "agent registered with an identity assertion");
        let mut answer = issued(&registration_id, "agent-provider", &new.secret, &key);
        self.add_access_token(config, &mut answer, &key, granted, origin);
        Ok(answer)
    }

    /// Where `registration.access_token` asks for it, adds an access token minted
    /// from the new key (as the token endpoint's `client_credentials` would mint it:
    /// revoking the key ends it) to a registration answer.
    fn add_access_token(
        &self,
        config: &Config,
        answer: &mut serde_json::Value,
        key: &KeyRecord,
        scopes: ScopeSet,
        origin: &str,
    ) {
        if !config.lifecycle.registration.access_token {
            return;
        }
        let subject = format!("key:{}", key.id);
        let issue = crate::tokens::Issue {
            subject: &subject,
            audience: origin,
            scopes,
            tier: config
                .tiers
                .find(&key.tier)
                .unwrap_or(crate::tier::TierId(1)),
            client_id: Some(&key.id),
            family: None,
            operator: key.operator.as_deref(),
        };
        // The key is stored already: an answer without a token still gives the agent
        // a working credential, which the token endpoint exchanges for one.
        if let Some(issued) = self.tokens.issue(&issue, unix_now()) {
            answer["access_token"] = issued.token.into();
            answer["token_type"] = "Bearer".into();
            answer["expires_in"] = issued.expires_in.into();
        }
    }

    /// The key record a registration issues.
    fn issued_key(
        &self,
        config: &Config,
        registration_id: &str,
        hash: crate::credentials::KeyHash,
        tier: crate::tier::TierId,
        scopes: ScopeSet,
        client_name: &Option<String>,
    ) -> Result<KeyRecord, Failure> {
        Ok(KeyRecord {
            registration_id: Some(registration_id.to_owned()),
            ..KeyRecord::new(
                random_id("key")?,
                hash,
                config.lifecycle.keys.prefix.clone(),
                client_name
                    .clone()
                    .unwrap_or_else(|| "registered agent".into()),
                format!("reg:{registration_id}"),
                names_of(config, &scopes),
                config.tiers.get(tier).name.clone(),
                unix_now(),
            )
        })
    }

    /// The kind of identity assertion a registration or claim carries: the one its
    /// `assertion_type` names, else the one the assertion's header suggests; refused
    /// when no trusted issuer carries that kind.
    pub(super) fn assertion_kind(
        &self,
        assertion_type: Option<&str>,
        assertion: &str,
    ) -> Result<AssertionKind, Failure> {
        let kind = match assertion_type {
            Some(named) => AssertionKind::parse(named),
            None => Some(self.verifier.kind_of(assertion)),
        };
        match kind {
            Some(kind) if self.verifier.accepts(kind) => Ok(kind),
            Some(_) | None => {
                let accepted: Vec<String> = [AssertionKind::IdJag, AssertionKind::VerifiedEmail]
                    .into_iter()
                    .filter(|k| self.verifier.accepts(*k))
                    .map(|k| format!("`{}`", k.name()))
                    .collect();
                Err(Failure::with(
                    LifecycleError::UnsupportedAssertionType,
                    format!(
                        "`assertion_type` must name an assertion type this API accepts: {}",
                        accepted.join(" or ")
                    ),
                ))
            }
        }
    }

    pub(super) async fn verify(
        &self,
        kind: AssertionKind,
        assertion: &str,
    ) -> Result<VerifiedAssertion, Failure> {
        self.verifier
            .verify_kind(kind, assertion, unix_now())
            .await
            .map_err(|e| LifecycleError::Assertion(e).into())
    }

    /// Records the assertion's `jti`; a second use is a replay.
    pub(super) async fn consume(
        &self,
        verified: &VerifiedAssertion,
        now: i64,
    ) -> Result<(), Failure> {
        if self
            .store
            .use_assertion(
                &verified.issuer,
                &verified.jti,
                verified.remember_until(),
                now,
            )
            .await?
        {
            Ok(())
        } else {
            Err(LifecycleError::ReplayDetected.into())
        }
    }
}

/// The fields every registration answer has: the registration and its new key, with
/// the secret (shown this once).
fn issued(
    registration_id: &str,
    registration_type: &str,
    secret: &str,
    key: &KeyRecord,
) -> serde_json::Value {
    serde_json::json!({
        "registration_id": registration_id,
        "registration_type": registration_type,
        "credential_type": "api_key",
        "credential": secret,
        "credential_expires": null,
        "key_id": key.id,
        "scopes": key.scopes,
        "tier": key.tier,
    })
}

/// What a registration that sent a `password` is told: this service keeps none,
/// and the agent signs in again with its key (at the token endpoint, where it
/// issues tokens for keys).
/// `in_answer`: the key is in this answer (not `at_claim`'s, where it comes with
/// the claim).
fn no_passwords(config: &Config, origin: &str, in_answer: bool) -> String {
    let again = if config.tokens.enabled && config.tokens.api_keys {
        format!(
            "send it with each request, or get a new access token from it at `POST {origin}{}` with \
             `grant_type=client_credentials`, `client_id` = `key_id` and `client_secret` = `credential`",
            config.endpoints.token
        )
    } else {
        "send it with each request".to_owned()
    };
    let key = if in_answer {
        "The key (`credential`, shown only in this answer)"
    } else {
        "The key (the claim answer's `credential`, shown once)"
    };
    format!(
        "this service keeps no passwords: `{PASSWORD}` was ignored, neither stored nor logged. \
         {key} is how this agent signs in again: {again}"
    )
}

/// An e-mail address given as a contact: `local@domain` with a dot in the domain,
/// at most 254 bytes, no space or control character.
fn valid_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    text.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `allowed`, narrowed to `requested` when the client asked for specific scopes.
pub(super) fn narrow(allowed: ScopeSet, requested: Option<ScopeSet>) -> ScopeSet {
    match requested {
        Some(requested) => allowed.intersection(&requested),
        None => allowed,
    }
}

pub(super) fn names_of(config: &Config, scopes: &ScopeSet) -> Vec<String> {
    config
        .scopes
        .names(scopes)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The owner account of keys issued to a verified identity: a digest of the
/// issuer and subject, bounded in length.
pub(crate) fn identity_owner(verified: &VerifiedAssertion) -> String {
    let digest = blake3::hash(format!("{}\0{}", verified.issuer, verified.subject).as_bytes());
    format!("idp:{}", &digest.to_hex()[..32])
}

/// The claimant a registration records: the issuer and subject, and for a
/// `verified_email` assertion the verified address too.
pub(super) fn subject(verified: &VerifiedAssertion) -> String {
    match (verified.kind, &verified.email) {
        (AssertionKind::VerifiedEmail, Some(email)) => {
            format!("{} {} <{email}>", verified.issuer, verified.subject)
        }
        (AssertionKind::VerifiedEmail | AssertionKind::IdJag, _) => {
            format!("{} {}", verified.issuer, verified.subject)
        }
    }
}

/// The stored form of a claim token: its BLAKE3 hash (the token itself is never
/// kept).
pub(super) fn claim_hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}
