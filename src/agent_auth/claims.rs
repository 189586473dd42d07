//! Claims (`POST claim`) and the human claim page (`GET claim?token=...`).
//!
//! A claim binds a registration to a verified identity and raises the same key's
//! tier and scopes in place. Two proofs of who claims are accepted, as
//! `registration.claim.accept` says: an identity assertion (ID-JAG) in a JSON
//! claim, or a person signed in through `login.providers` on the claim page.
//!
//! The claim page, with sign-in: a browser without a session is sent to the
//! sign-in page and comes back (`return_to` is the claim page itself); a signed-in
//! person sees the agent and what the claim changes, and confirms with a form whose
//! CSRF token is bound to their session. The claim records the person (provider,
//! stable subject, handle) on the registration and the key; forwarded requests of
//! the key then carry `X-Authmd-Operator`. The store's claim is conditional on the
//! registration being unclaimed, so of two people racing one wins and the other
//! is answered 409.
//!
//! With `registration.claim.user_code`, the person's confirmation does not claim
//! yet: the page shows a short code and the agent finishes the claim with it
//! (see the `user_code` module).

mod user_code;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use maud::{Markup, html};

use super::members::{JsonBody, Members, Names, Understood};
use super::registration::{claim_hash, names_of, narrow, subject};
use super::{AgentAuth, Answer, Failure, json, mint, note_ignored, parse_json, read_body, rfc3339};
use crate::assertion::VerifiedAssertion;
use crate::body::Body;
use crate::clock::unix_now;
use crate::config::{Claims, Config, IssueCredential};
use crate::login::{Login, Person, email_domain};
use crate::policy::MethodSet;
use crate::rejection::{LifecycleError, Rejection};
use crate::store::{
    Claim, ClaimOutcome, KeyRecord, Operator, RegistrationKind, RegistrationRecord,
};
use crate::web;

/// The body of `POST claim`. Members not among its `MEMBERS` are
/// ignored and named in the answer's `ignored_members`.
#[derive(Debug)]
pub(super) struct ClaimBody {
    claim_token: Option<String>,
    registration_id: Option<String>,
    identity_assertion: Option<String>,
    assertion_type: Option<String>,
    user_code: Option<String>,
    ignored: Vec<String>,
}

const CLAIM_TOKEN: Names = &["claim_token"];
const REGISTRATION_ID: Names = &["registration_id"];
const IDENTITY_ASSERTION: Names = &["identity_assertion", "assertion"];
const ASSERTION_TYPE: Names = &["assertion_type"];
const USER_CODE: Names = &["user_code"];

impl JsonBody for ClaimBody {
    const MEMBERS: &'static [Names] = &[
        CLAIM_TOKEN,
        REGISTRATION_ID,
        IDENTITY_ASSERTION,
        ASSERTION_TYPE,
        USER_CODE,
    ];

    fn read(members: &Members) -> Result<Self, Failure> {
        Ok(ClaimBody {
            claim_token: members.text(CLAIM_TOKEN)?,
            registration_id: members.text(REGISTRATION_ID)?,
            identity_assertion: members.text(IDENTITY_ASSERTION)?,
            assertion_type: members.text(ASSERTION_TYPE)?,
            user_code: members.text(USER_CODE)?,
            ignored: members.ignored(),
        })
    }

    fn ignored(&self) -> &[String] {
        &self.ignored
    }

    fn understood(&self) -> Vec<(&'static str, Understood)> {
        [
            (CLAIM_TOKEN, &self.claim_token),
            (REGISTRATION_ID, &self.registration_id),
            (IDENTITY_ASSERTION, &self.identity_assertion),
            (ASSERTION_TYPE, &self.assertion_type),
            (USER_CODE, &self.user_code),
        ]
        .into_iter()
        .filter_map(|(names, value)| {
            value
                .clone()
                .map(|value| (names[0], Understood::Text(value)))
        })
        .collect()
    }
}

/// Who proved they claim.
enum Claimant {
    /// The claim token alone (`require_identity_to_claim: false`, no sign-in).
    Token,
    /// An identity assertion.
    Assertion(VerifiedAssertion),
    /// A person signed in on the claim page.
    Person(Person),
    /// A person who confirmed on the claim page, by the `user_code` the agent
    /// sent (`registration.claim.allowed` was checked at the confirmation).
    Confirmed(Operator),
}

/// True when the claim page signs people in: someone can, and a sign-in counts.
fn signs_in(config: &Config, login: Option<&Login>) -> bool {
    login.is_some() && config.login.enabled() && config.lifecycle.registration.claim.sign_in
}

/// True when `registration.claim.allowed` lets this claimant claim: an empty list
/// lets everyone; an assertion matches by its email's domain only.
fn allowed(config: &Config, claimant: &Claimant) -> bool {
    let rules = &config.lifecycle.registration.claim.allowed;
    if rules.is_empty() {
        return true;
    }
    match claimant {
        Claimant::Token => false,
        Claimant::Person(person) => rules.iter().any(|rule| person.matches(rule)),
        Claimant::Confirmed(_) => true,
        Claimant::Assertion(verified) => {
            let domain = email_domain(verified.email.as_deref());
            rules.iter().any(|rule| match rule {
                crate::login::TierMatch::EmailDomain(d) => domain.as_deref() == Some(d),
                crate::login::TierMatch::Org(_) | crate::login::TierMatch::Team(_) => false,
            })
        }
    }
}

impl AgentAuth {
    /// `POST claim`: JSON `{claim_token}` / `{registration_id, identity_assertion}`,
    /// or the claim page's form.
    pub async fn claim(
        &self,
        config: &Config,
        request: Request<Incoming>,
        login: Option<&Login>,
    ) -> Answer {
        let form = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if form {
            return self.claim_form(config, request, login).await;
        }
        let bytes = read_body(request, &Method::POST, "application/json").await?;
        let body: ClaimBody = parse_json(&bytes)?;
        self.claim_body(config, body, login).await
    }

    /// The claim page's form: with sign-in, the signed-in person's confirmation.
    async fn claim_form(
        &self,
        config: &Config,
        request: Request<Incoming>,
        login: Option<&Login>,
    ) -> Answer {
        let (parts, body) = request.into_parts();
        let Some(form) = web::form::read(&parts.headers, body).await else {
            return Ok(web::error_page(
                StatusCode::BAD_REQUEST,
                "This claim cannot continue",
                "The claim must come from the claim page's form.",
            ));
        };
        let token = form.get("claim_token").unwrap_or_default().to_owned();
        let now = unix_now();
        let claimant = match login.filter(|_| signs_in(config, login)) {
            None => {
                // No sign-in here: the token alone, as a JSON claim would.
                let body = ClaimBody {
                    claim_token: Some(token),
                    registration_id: None,
                    identity_assertion: None,
                    assertion_type: None,
                    user_code: None,
                    ignored: Vec::new(),
                };
                let answer = self.claim_answer(config, body, login).await?;
                let secret = answer["credential"].as_str();
                return Ok(claimed_page(config, None, secret));
            }
            Some(login) => {
                let Some(person) = login.session(&parts.headers, now) else {
                    return Ok(web::error_page(
                        StatusCode::UNAUTHORIZED,
                        "You are not signed in",
                        "Your sign-in has ended. Open the claim link again to sign in; nothing was claimed.",
                    ));
                };
                if !form
                    .get("csrf")
                    .is_some_and(|t| login.csrf_ok(&parts.headers, t, now))
                {
                    return Ok(web::error_page(
                        StatusCode::FORBIDDEN,
                        "This form is not valid",
                        "The claim form did not come from this page (its security token is missing or wrong). Nothing was claimed.",
                    ));
                }
                Claimant::Person(person)
            }
        };
        let registration = match self
            .store
            .registration_by_claim(&claim_hash(&token))
            .await?
        {
            Some(registration) => registration,
            None => {
                return Ok(web::error_page(
                    StatusCode::NOT_FOUND,
                    "Unknown claim link",
                    "This claim link is not valid. Nothing was claimed.",
                ));
            }
        };
        if let (true, Claimant::Person(person)) =
            (config.lifecycle.registration.claim.user_code, &claimant)
        {
            return match self
                .issue_user_code(config, &registration, person.clone(), now)
                .await
            {
                Ok(page) => Ok(page),
                Err(failure) => Ok(refusal_page(&failure)),
            };
        }
        match self.complete(config, &registration, &claimant, now).await {
            Ok((_, secret)) => Ok(claimed_page(
                config,
                Some(&claimant),
                secret.as_deref().map(String::as_str),
            )),
            Err(failure) => Ok(refusal_page(&failure)),
        }
    }

    async fn claim_body(&self, config: &Config, body: ClaimBody, login: Option<&Login>) -> Answer {
        let answer = self.claim_answer(config, body, login).await?;
        Ok(json(StatusCode::OK, &answer))
    }

    /// Completes a claim a JSON body (or the token-only form) asks for; the claim
    /// answer, with the key's secret where it comes with the claim.
    async fn claim_answer(
        &self,
        config: &Config,
        body: ClaimBody,
        login: Option<&Login>,
    ) -> Result<serde_json::Value, Failure> {
        let settings = &config.lifecycle.registration;
        let sign_in = signs_in(config, login);
        let registration = match (&body.claim_token, &body.registration_id) {
            (Some(token), _) => self
                .store
                .registration_by_claim(&claim_hash(token))
                .await?
                .ok_or(LifecycleError::InvalidClaimToken)?,
            (None, Some(id)) => {
                let by_id =
                    settings.claim.by_registration_id && !settings.require_identity_to_claim;
                if body.identity_assertion.is_none() && body.user_code.is_none() && !by_id {
                    if !settings.require_identity_to_claim {
                        // The registration id is no secret (the claim page shows it).
                        return Err(Failure::with(
                            LifecycleError::InvalidBody,
                            "send `claim_token` (from the registration answer), or `registration_id` with `identity_assertion`",
                        ));
                    }
                    return Err(LifecycleError::IdentityRequired.into());
                }
                self.store
                    .registration(id)
                    .await?
                    .ok_or(LifecycleError::RegistrationNotFound)?
            }
            (None, None) => {
                return Err(Failure::with(
                    LifecycleError::InvalidBody,
                    "send `claim_token`, or `registration_id` with `identity_assertion`",
                ));
            }
        };
        if registration.claimed_at.is_some() {
            return Err(LifecycleError::PreviouslyClaimed.into());
        }
        let (key, secret) = match &body.user_code {
            Some(code) => {
                if !(settings.claim.user_code && sign_in) {
                    return Err(Failure::with(
                        LifecycleError::InvalidBody,
                        "`user_code` is not used here: this server shows no codes on its claim page",
                    ));
                }
                if body.identity_assertion.is_some() {
                    return Err(Failure::with(
                        LifecycleError::InvalidBody,
                        "send `user_code` or `identity_assertion`, not both",
                    ));
                }
                self.finish_user_code(config, &registration, code, unix_now())
                    .await?
            }
            None => {
                self.claim_proven(config, &body, &registration, sign_in)
                    .await?
            }
        };
        let mut answer = serde_json::json!({
            "registration_id": registration.id,
            "status": "claimed",
            "key_id": key.id,
            "scopes": key.scopes,
            "tier": key.tier,
        });
        if let Some(operator) = &key.operator {
            answer["operator"] = operator.as_str().into();
        }
        if let Some(secret) = &secret {
            answer["credential_type"] = "api_key".into();
            answer["credential"] = secret.as_str().into();
            answer["credential_expires"] = serde_json::Value::Null;
        }
        note_ignored(&mut answer, &body.ignored);
        Ok(answer)
    }

    /// Completes a JSON claim by what it proves (an assertion, or the token alone).
    async fn claim_proven(
        &self,
        config: &Config,
        body: &ClaimBody,
        registration: &RegistrationRecord,
        sign_in: bool,
    ) -> Result<(KeyRecord, Option<zeroize::Zeroizing<String>>), Failure> {
        let settings = &config.lifecycle.registration;
        let by_sign_in = "the operator claims by signing in on the `claim_url` page";
        let claimant = match &body.identity_assertion {
            Some(assertion) => {
                if !self.verifier.is_enabled() || !settings.claim.identity_assertion {
                    return Err(match sign_in {
                        true => {
                            Failure::with(LifecycleError::IdentityAssertionNotEnabled, by_sign_in)
                        }
                        false => LifecycleError::IdentityAssertionNotEnabled.into(),
                    });
                }
                let kind = self.assertion_kind(body.assertion_type.as_deref(), assertion)?;
                Claimant::Assertion(self.verify(kind, assertion).await?)
            }
            None if settings.require_identity_to_claim && sign_in => {
                return Err(Failure::with(LifecycleError::IdentityRequired, by_sign_in));
            }
            None if settings.require_identity_to_claim => {
                return Err(LifecycleError::IdentityRequired.into());
            }
            None => Claimant::Token,
        };
        self.complete(config, registration, &claimant, unix_now())
            .await
    }

    /// Claims `registration` for `claimant`: checks, the store's conditional
    /// claim, the key table. With `issue_credential: at_claim` the key's secret is
    /// minted here, stored with the claim, and returned (to be shown once) only
    /// once the claim is stored.
    async fn complete(
        &self,
        config: &Config,
        registration: &RegistrationRecord,
        claimant: &Claimant,
        now: i64,
    ) -> Result<(KeyRecord, Option<zeroize::Zeroizing<String>>), Failure> {
        let settings = &config.lifecycle.registration;
        if registration.claimed_at.is_some() {
            return Err(LifecycleError::PreviouslyClaimed.into());
        }
        if registration.claim_expires_at.is_some_and(|at| now >= at) {
            return Err(LifecycleError::ClaimExpired.into());
        }
        if !allowed(config, claimant) {
            return Err(LifecycleError::ClaimNotAllowed.into());
        }
        let (subject, operator) = match claimant {
            Claimant::Assertion(verified) => {
                self.consume(verified, now).await?;
                (subject(verified), None)
            }
            Claimant::Person(person) => (
                person.principal(),
                Some(Operator {
                    provider: person.provider.clone(),
                    subject: person.subject.clone(),
                    handle: person.handle().to_owned(),
                }),
            ),
            Claimant::Confirmed(operator) => (
                format!("user:{}:{}", operator.provider, operator.subject),
                Some(operator.clone()),
            ),
            Claimant::Token => ("claim-token".to_owned(), None),
        };
        let key = self.store.key(&registration.key_id).await?;
        let requested = key.as_ref().map(|k| {
            config
                .scopes
                .granted_known(k.scopes.iter().map(String::as_str))
        });
        // The claimed scopes, narrowed to what the agent asked for at registration
        // when it asked for less than the pre-claim grant.
        let scopes = match requested {
            Some(held) if !settings.scopes.is_subset_of(&held) => {
                narrow(settings.claimed_scopes, Some(held))
            }
            _ => settings.claimed_scopes,
        };
        let scope_names = names_of(config, &scopes);
        let tier = &config.tiers.get(settings.claimed_tier).name;
        let new = match (settings.issue_credential, registration.kind) {
            (IssueCredential::AtClaim, RegistrationKind::Anonymous) => Some(mint(config)?),
            (IssueCredential::AtClaim | IssueCredential::AtRegistration, _) => None,
        };
        let claim = Claim {
            registration_id: &registration.id,
            subject: &subject,
            tier,
            scopes: &scope_names,
            now,
            operator: operator.as_ref(),
            new_hash: new.as_ref().map(|n| n.hash),
        };
        match self.store.claim(&claim).await? {
            ClaimOutcome::Claimed(key) => {
                self.apply(&key).await;
                tracing::info!(registration = %registration.id, key = %key.id, by_sign_in = operator.is_some(), "registration claimed");
                Ok((*key, new.map(|n| n.secret)))
            }
            ClaimOutcome::NotFound => Err(LifecycleError::RegistrationNotFound.into()),
            ClaimOutcome::Expired => Err(LifecycleError::ClaimExpired.into()),
            ClaimOutcome::AlreadyClaimed => Err(LifecycleError::PreviouslyClaimed.into()),
            ClaimOutcome::KeyRevoked => Err(LifecycleError::RegistrationRevoked.into()),
        }
    }

    /// `GET claim?token=...`: the page a human operator opens from the claim URL.
    pub async fn claim_page(
        &self,
        config: &Config,
        request: &Request<Incoming>,
        login: Option<&Login>,
    ) -> Answer {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return Err(
                Rejection::MethodNotAllowed(MethodSet::of(&["GET", "HEAD", "POST"])).into(),
            );
        }
        let token = request.uri().query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        });
        let Some(token) = token else {
            return Ok(web::error_page(
                StatusCode::BAD_REQUEST,
                "No claim token",
                "This link is missing its claim token. Ask the agent for the full claim_url it received when it registered.",
            ));
        };
        let Some(registration) = self
            .store
            .registration_by_claim(&claim_hash(&token))
            .await?
        else {
            return Ok(web::error_page(
                StatusCode::NOT_FOUND,
                "Unknown claim link",
                "This claim link is not valid. It may have been mistyped, or the registration may not exist.",
            ));
        };
        let now = unix_now();
        let settings = &config.lifecycle.registration;
        let key = self.store.key(&registration.key_id).await?;
        if registration.claimed_at.is_some() {
            return Ok(web::error_page(
                StatusCode::CONFLICT,
                "Already claimed",
                "This registration has been claimed already.",
            ));
        }
        if key.as_ref().is_none_or(|k| k.revoked_at.is_some()) {
            return Ok(web::error_page(
                StatusCode::GONE,
                "Registration revoked",
                "The agent's credential was revoked; there is nothing left to claim.",
            ));
        }
        if registration.claim_expires_at.is_some_and(|at| now >= at) {
            return Ok(web::error_page(
                StatusCode::GONE,
                "Claim link expired",
                "This claim link has expired. The agent can register again to get a new one.",
            ));
        }
        let expires = rfc3339(registration.claim_expires_at.unwrap_or(now));
        let facts = facts(config, &registration, key.as_ref());
        if let Some(login) = login.filter(|_| signs_in(config, login)) {
            let Some(person) = login.session(request.headers(), now) else {
                let return_to = format!(
                    "{}?{}",
                    config.endpoints.claim,
                    form_urlencoded::Serializer::new(String::new())
                        .append_pair("token", &token)
                        .finish()
                );
                return Ok(web::see_other(&login.login_url(&return_to)));
            };
            let claimant = Claimant::Person(person);
            let Claimant::Person(person) = &claimant else {
                return Err(LifecycleError::StoreUnavailable.into());
            };
            if !allowed(config, &claimant) {
                let content = html! {
                    (facts)
                    p.error { "You are signed in as " strong { (person.handle()) } ", who may not claim agents here. Sign in with another account that may, or ask the operator of this API." }
                    a.button.secondary href=(login.login_url(&format!("{}?{}", config.endpoints.claim, form_urlencoded::Serializer::new(String::new()).append_pair("token", &token).finish()))) { "Sign in with another account" }
                };
                return Ok(web::page(
                    StatusCode::FORBIDDEN,
                    "Not allowed to claim",
                    content,
                ));
            }
            let Some(csrf) = login.csrf_token(request.headers(), now) else {
                return Err(LifecycleError::StoreUnavailable.into());
            };
            let provider = config
                .login
                .providers
                .iter()
                .find(|p| p.id == person.provider)
                .map_or(person.provider.as_str(), |p| p.display_name.as_str());
            let content = html! {
                (facts)
                p { "You are signed in as " strong { (person.handle()) } " through " (provider) ". Claiming makes you this agent's operator: the API sees your name on its requests." }
                p.muted { "Claim it only if you run this agent. The link expires at " (expires) "." }
                form method="post" action=(config.endpoints.claim) {
                    input type="hidden" name="claim_token" value=(token);
                    input type="hidden" name="csrf" value=(csrf);
                    button type="submit" { "Claim this agent" }
                }
            };
            return Ok(web::page(StatusCode::OK, "Claim this agent", content));
        }
        let content = if settings.require_identity_to_claim {
            let how = match config.claims() {
                Claims::ByIdentity | Claims::BySignIn => format!(
                    "the agent completes it by sending POST {} with the registration id above and an identity_assertion naming you",
                    config.endpoints.claim,
                ),
                Claims::Nothing | Claims::Unavailable | Claims::ByToken => {
                    "this server trusts no identity provider for that, so the claim cannot be completed here".to_owned()
                }
            };
            html! {
                (facts)
                p { "Claiming links this agent to a verified identity. This API requires the claim to carry an identity assertion from a trusted identity provider: " (how) ". The link expires at " (expires) "." }
            }
        } else {
            html! {
                (facts)
                p { "Claim this agent if you operate it. The link expires at " (expires) "." }
                form method="post" action=(config.endpoints.claim) {
                    input type="hidden" name="claim_token" value=(token);
                    button type="submit" { "Claim" }
                }
            }
        };
        Ok(web::page(StatusCode::OK, "Claim this agent", content))
    }
}

/// The agent, and what a claim changes.
fn facts(config: &Config, registration: &RegistrationRecord, key: Option<&KeyRecord>) -> Markup {
    let settings = &config.lifecycle.registration;
    let name = registration
        .client_name
        .as_deref()
        .unwrap_or("an unnamed agent");
    let current = key.map(|k| k.scopes.join(" ")).unwrap_or_default();
    let claimed = config.scopes.names(&settings.claimed_scopes);
    html! {
        p { strong { (config.service.name) } }
        dl {
            dt { "Agent" } dd { (name) }
            dt { "Registration" } dd { code { (registration.id) } ", registered " (rfc3339(registration.created_at)) }
            dt { "Now" } dd { "tier " code { (key.map_or("", |k| k.tier.as_str())) } ", scopes " code { (current) } }
            dt { "After the claim" } dd { "tier " code { (config.tiers.get(settings.claimed_tier).name) } ", scopes " code { (claimed) } }
        }
    }
}

/// The page after a claim through the form; `secret`: the key's secret, minted
/// at the claim (`issue_credential: at_claim`), shown this once.
fn claimed_page(
    config: &Config,
    claimant: Option<&Claimant>,
    secret: Option<&str>,
) -> Response<Body> {
    let who = match claimant {
        Some(Claimant::Person(person)) => Some(person.handle().to_owned()),
        Some(Claimant::Confirmed(operator)) => Some(operator.handle.clone()),
        Some(Claimant::Assertion(_) | Claimant::Token) | None => None,
    };
    let content = html! {
        p { "The agent's registration is now claimed: its key has the claimed tier and scopes." }
        @if let Some(secret) = secret {
            p { "Its key, shown this once: give it to the agent." }
            p { code { (secret) } }
        }
        @if let Some(who) = who {
            p { "You (" strong { (who) } ") are its operator on " (config.service.name) "." }
        }
        p.muted { "You can close this page." }
    };
    web::page(StatusCode::OK, "Claimed", content)
}

/// A page for a claim refused after the form was posted: the refusal's status
/// and message.
fn refusal_page(failure: &Failure) -> Response<Body> {
    let Rejection::Lifecycle(error) = failure.rejection else {
        return web::error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again in a moment",
            "The claim could not be completed right now. Nothing was claimed.",
        );
    };
    let (status, _, _, message) = error.describe();
    let title = if error == LifecycleError::PreviouslyClaimed {
        "Already claimed"
    } else {
        "Not claimed"
    };
    web::error_page(status, title, &format!("Nothing was claimed: {message}."))
}
