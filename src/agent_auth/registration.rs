//! Agent registration (`POST register`), claims (`POST claim`), and the human claim
//! page (`GET claim?token=...`).
//!
//! Anonymous registration answers at once with a key holding the pre-claim scopes
//! (never more than requested and allowed), a `registration_id`, and, where a claim
//! can be completed ([`Claims::offered`]), a one-time `claim_token` with its
//! `claim_url`. Where a claim needs an identity assertion and no trusted issuer
//! carries one, no claim token is made at all. Registration with an identity assertion
//! (an ID-JAG from a trusted issuer) answers with a key at the claimed tier. A claim
//! binds the registration to a verified identity and raises the same key's tier
//! and scopes in place. Field names follow both auth.md generations and the seeds
//! (`type` or `identity_type`; `assertion` or `identity_assertion`).

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::keys::valid_name;
use super::{
    AgentAuth, Answer, Failure, ScopeNames, json, limit, mint, parse_json, random_id, read_body,
    read_json, requested_scopes, rfc3339,
};
use crate::assertion::VerifiedAssertion;
use crate::body::Body;
use crate::clock::unix_now;
use crate::config::{Claims, Config};
use crate::policy::MethodSet;
use crate::protocol::ID_JAG;
use crate::rejection::{LifecycleError, Rejection};
use crate::scope::ScopeSet;
use crate::store::{Claim, ClaimOutcome, KeyRecord, RegistrationKind, RegistrationRecord};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RegisterBody {
    #[serde(rename = "type", alias = "identity_type")]
    kind: Option<String>,
    client_name: Option<String>,
    scopes: Option<ScopeNames>,
    #[serde(alias = "scope")]
    requested_scopes: Option<ScopeNames>,
    requested_credential_type: Option<String>,
    assertion_type: Option<String>,
    #[serde(alias = "identity_assertion")]
    assertion: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClaimBody {
    claim_token: Option<String>,
    registration_id: Option<String>,
    #[serde(alias = "assertion")]
    identity_assertion: Option<String>,
    assertion_type: Option<String>,
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
            Some(_) => return Err(LifecycleError::UnsupportedCredentialType.into()),
        }
        if let Some(name) = &body.client_name {
            if !valid_name(name) {
                return Err(Failure::with(
                    LifecycleError::InvalidBody,
                    "`client_name` must be 1 to 128 printable characters",
                ));
            }
        }
        let requested = body.scopes.as_ref().or(body.requested_scopes.as_ref());
        let requested = match requested {
            Some(names) => Some(requested_scopes(config, &names.names())?),
            None => None,
        };
        let kind = match body.kind.as_deref() {
            Some("anonymous") => RegistrationKind::Anonymous,
            Some("identity_assertion") => RegistrationKind::IdentityAssertion,
            None if body.assertion.is_some() => RegistrationKind::IdentityAssertion,
            None => RegistrationKind::Anonymous,
            Some(_) => {
                return Err(Failure::with(
                    LifecycleError::InvalidBody,
                    "`type` must be `anonymous` or `identity_assertion`",
                ));
            }
        };
        let settings = &config.lifecycle.registration;
        // Where the operator hands out keys, a refused registration says where.
        let elsewhere = |error: LifecycleError, detail: &str| match &config.service.contact {
            Some(contact) => Failure::with(error, format!("{detail}get a key at {contact}")),
            None if detail.is_empty() => error.into(),
            None => Failure::with(error, detail.trim_end_matches("; ")),
        };
        match kind {
            RegistrationKind::Anonymous => {
                if !settings.anonymous {
                    return Err(elsewhere(LifecycleError::AnonymousNotEnabled, ""));
                }
                if body.assertion.is_some() || body.assertion_type.is_some() {
                    return Err(Failure::with(
                        LifecycleError::InvalidBody,
                        "an anonymous registration carries no assertion",
                    ));
                }
                limit(self.anonymous_limit.as_deref(), address)?;
                self.register_anonymous(config, body.client_name, requested, origin)
                    .await
            }
            RegistrationKind::IdentityAssertion => {
                if !self.verifier.is_enabled() {
                    return Err(elsewhere(LifecycleError::IdentityAssertionNotEnabled, ""));
                }
                check_assertion_type(body.assertion_type.as_deref())?;
                let Some(assertion) = body.assertion else {
                    return Err(elsewhere(
                        LifecycleError::InvalidBody,
                        "missing field `assertion`; ",
                    ));
                };
                limit(self.identity_limit.as_deref(), address)?;
                let verified = self.verify(&assertion).await?;
                let requested = match requested {
                    Some(set) => Some(set),
                    None if !verified.scopes.is_empty() => {
                        let names: Vec<&str> = verified.scopes.iter().map(String::as_str).collect();
                        Some(config.scopes.granted_known(names))
                    }
                    None => None,
                };
                self.register_identity(config, body.client_name, requested, &verified, origin)
                    .await
            }
        }
    }

    async fn register_anonymous(
        &self,
        config: &Config,
        client_name: Option<String>,
        requested: Option<ScopeSet>,
        origin: &str,
    ) -> Answer {
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
            &client_name,
        )?;
        let registration = RegistrationRecord {
            id: registration_id.clone(),
            kind: RegistrationKind::Anonymous,
            client_name,
            key_id: key.id.clone(),
            claim_hash: claim_token.as_deref().map(|token| claim_hash(token)),
            claim_expires_at: Some(claim_expires_at),
            claimed_at: None,
            subject: None,
            created_at: now,
        };
        self.store.insert_registration(&registration, &key).await?;
        self.apply(&key).await;
        tracing::info!(registration = %registration_id, key = %key.id, "anonymous agent registered");
        let mut answer = issued(&registration_id, "anonymous", &new.secret, &key);
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
        self.add_access_token(config, &mut answer, &key, granted, origin);
        Ok(json(StatusCode::OK, &answer))
    }

    async fn register_identity(
        &self,
        config: &Config,
        client_name: Option<String>,
        requested: Option<ScopeSet>,
        verified: &VerifiedAssertion,
        origin: &str,
    ) -> Answer {
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
            &client_name,
        )?;
        key.owner = identity_owner(verified);
        let registration = RegistrationRecord {
            id: registration_id.clone(),
            kind: RegistrationKind::IdentityAssertion,
            client_name,
            key_id: key.id.clone(),
            claim_hash: None,
            claim_expires_at: None,
            claimed_at: Some(now),
            subject: Some(subject(verified)),
            created_at: now,
        };
        self.consume(verified, now).await?;
        self.store.insert_registration(&registration, &key).await?;
        self.apply(&key).await;
        tracing::info!(registration = %registration_id, key = %key.id, issuer = %verified.issuer, "agent registered with an identity assertion");
        let mut answer = issued(&registration_id, "agent-provider", &new.secret, &key);
        self.add_access_token(config, &mut answer, &key, granted, origin);
        Ok(json(StatusCode::OK, &answer))
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

    async fn verify(&self, assertion: &str) -> Result<VerifiedAssertion, Failure> {
        self.verifier
            .verify(assertion, unix_now())
            .await
            .map_err(|e| LifecycleError::Assertion(e).into())
    }

    /// Records the assertion's `jti`; a second use is a replay.
    async fn consume(&self, verified: &VerifiedAssertion, now: i64) -> Result<(), Failure> {
        if self
            .store
            .use_assertion(&verified.issuer, &verified.jti, verified.expires_at, now)
            .await?
        {
            Ok(())
        } else {
            Err(LifecycleError::ReplayDetected.into())
        }
    }

    /// `POST claim`: JSON `{claim_token}` / `{registration_id, identity_assertion}`,
    /// or the claim page's form.
    pub async fn claim(&self, config: &Config, request: Request<Incoming>) -> Answer {
        let form = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if form {
            let bytes =
                read_body(request, &Method::POST, "application/x-www-form-urlencoded").await?;
            let token = form_urlencoded::parse(&bytes)
                .find(|(k, _)| k == "claim_token")
                .map(|(_, v)| v.into_owned());
            let body = ClaimBody {
                claim_token: token,
                registration_id: None,
                identity_assertion: None,
                assertion_type: None,
            };
            return match self.claim_body(config, body).await {
                Ok(_) => Ok(page(
                    StatusCode::OK,
                    config,
                    "Claimed",
                    "<p>The agent's registration is now claimed: its key has the claimed tier and scopes.</p>",
                )),
                Err(failure) => Err(failure),
            };
        }
        let bytes = read_body(request, &Method::POST, "application/json").await?;
        let body: ClaimBody = parse_json(&bytes)?;
        self.claim_body(config, body).await
    }

    async fn claim_body(&self, config: &Config, body: ClaimBody) -> Answer {
        let settings = &config.lifecycle.registration;
        let registration = match (&body.claim_token, &body.registration_id) {
            (Some(token), _) => self
                .store
                .registration_by_claim(&claim_hash(token))
                .await?
                .ok_or(LifecycleError::InvalidClaimToken)?,
            (None, Some(id)) => {
                if body.identity_assertion.is_none() {
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
        let verified = match &body.identity_assertion {
            Some(assertion) => {
                if !self.verifier.is_enabled() {
                    return Err(LifecycleError::IdentityAssertionNotEnabled.into());
                }
                check_assertion_type(body.assertion_type.as_deref())?;
                Some(self.verify(assertion).await?)
            }
            None if settings.require_identity_to_claim => {
                return Err(LifecycleError::IdentityRequired.into());
            }
            None => None,
        };
        let now = unix_now();
        if registration.claimed_at.is_some() {
            return Err(LifecycleError::PreviouslyClaimed.into());
        }
        if registration.claim_expires_at.is_some_and(|at| now >= at) {
            return Err(LifecycleError::ClaimExpired.into());
        }
        let subject = match &verified {
            Some(verified) => {
                self.consume(verified, now).await?;
                subject(verified)
            }
            None => "claim-token".to_owned(),
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
        let claim = Claim {
            registration_id: &registration.id,
            subject: &subject,
            tier,
            scopes: &scope_names,
            now,
        };
        match self.store.claim(&claim).await? {
            ClaimOutcome::Claimed(key) => {
                self.apply(&key).await;
                tracing::info!(registration = %registration.id, key = %key.id, "registration claimed");
                Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "registration_id": registration.id,
                        "status": "claimed",
                        "key_id": key.id,
                        "scopes": key.scopes,
                        "tier": key.tier,
                    }),
                ))
            }
            ClaimOutcome::NotFound => Err(LifecycleError::RegistrationNotFound.into()),
            ClaimOutcome::Expired => Err(LifecycleError::ClaimExpired.into()),
            ClaimOutcome::AlreadyClaimed => Err(LifecycleError::PreviouslyClaimed.into()),
            ClaimOutcome::KeyRevoked => Err(LifecycleError::RegistrationRevoked.into()),
        }
    }

    /// `GET claim?token=...`: the page a human operator opens from the claim URL.
    pub async fn claim_page(&self, config: &Config, request: &Request<Incoming>) -> Answer {
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
            return Ok(page(
                StatusCode::BAD_REQUEST,
                config,
                "No claim token",
                "<p>This link is missing its claim token. Ask the agent for the full <code>claim_url</code> it received when it registered.</p>",
            ));
        };
        let Some(registration) = self
            .store
            .registration_by_claim(&claim_hash(&token))
            .await?
        else {
            return Ok(page(
                StatusCode::NOT_FOUND,
                config,
                "Unknown claim link",
                "<p>This claim link is not valid. It may have been mistyped, or the registration may not exist.</p>",
            ));
        };
        let now = unix_now();
        let settings = &config.lifecycle.registration;
        let key = self.store.key(&registration.key_id).await?;
        let name = escape(
            registration
                .client_name
                .as_deref()
                .unwrap_or("an unnamed agent"),
        );
        let current = key.as_ref().map(|k| k.scopes.join(" ")).unwrap_or_default();
        let claimed = config.scopes.names(&settings.claimed_scopes);
        let facts = format!(
            "<dl><dt>Agent</dt><dd>{name}</dd><dt>Registration</dt><dd><code>{}</code>, {}</dd>\
             <dt>Now</dt><dd>tier <code>{}</code>, scopes <code>{}</code></dd>\
             <dt>After the claim</dt><dd>tier <code>{}</code>, scopes <code>{}</code></dd></dl>",
            escape(&registration.id),
            rfc3339(registration.created_at),
            escape(key.as_ref().map_or("", |k| k.tier.as_str())),
            escape(&current),
            escape(&config.tiers.get(settings.claimed_tier).name),
            escape(&claimed),
        );
        let (status, title, action) = if registration.claimed_at.is_some() {
            (
                StatusCode::CONFLICT,
                "Already claimed",
                "<p>This registration has been claimed already.</p>".to_owned(),
            )
        } else if key.as_ref().is_none_or(|k| k.revoked_at.is_some()) {
            (
                StatusCode::GONE,
                "Registration revoked",
                "<p>The agent's credential was revoked; there is nothing left to claim.</p>"
                    .to_owned(),
            )
        } else if registration.claim_expires_at.is_some_and(|at| now >= at) {
            (StatusCode::GONE, "Claim link expired", "<p>This claim link has expired. The agent can register again to get a new one.</p>".to_owned())
        } else if settings.require_identity_to_claim {
            let how = match config.claims() {
                Claims::ByIdentity => format!(
                    "the agent completes it by sending <code>POST {}</code> with the registration id above and an <code>identity_assertion</code> naming you",
                    escape(&config.endpoints.claim),
                ),
                Claims::Nothing | Claims::Unavailable | Claims::ByToken => {
                    "this server trusts no identity provider for that, so the claim cannot be completed here".to_owned()
                }
            };
            (
                StatusCode::OK,
                "Claim this agent",
                format!(
                    "<p>Claiming links this agent to a verified identity. This API requires the claim to carry an identity assertion from a trusted identity provider: {how}. The link expires at {}.</p>",
                    rfc3339(registration.claim_expires_at.unwrap_or(now)),
                ),
            )
        } else {
            (
                StatusCode::OK,
                "Claim this agent",
                format!(
                    "<p>Claim this agent if you operate it. The link expires at {}.</p>\
                 <form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"claim_token\" value=\"{}\"><button type=\"submit\">Claim</button></form>",
                    rfc3339(registration.claim_expires_at.unwrap_or(now)),
                    escape(&config.endpoints.claim),
                    escape(&token),
                ),
            )
        };
        Ok(page(status, config, title, &format!("{facts}{action}")))
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

fn check_assertion_type(assertion_type: Option<&str>) -> Result<(), Failure> {
    match assertion_type {
        None | Some(ID_JAG) => Ok(()),
        Some(_) => Err(LifecycleError::UnsupportedAssertionType.into()),
    }
}

/// `allowed`, narrowed to `requested` when the client asked for specific scopes.
fn narrow(allowed: ScopeSet, requested: Option<ScopeSet>) -> ScopeSet {
    match requested {
        Some(requested) => allowed.intersection(&requested),
        None => allowed,
    }
}

fn names_of(config: &Config, scopes: &ScopeSet) -> Vec<String> {
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

fn subject(verified: &VerifiedAssertion) -> String {
    format!("{} {}", verified.issuer, verified.subject)
}

fn claim_hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// A small HTML page; never cached, never sent as a referrer.
fn page(status: StatusCode, config: &Config, title: &str, body: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} - {service}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head><body><h1>{title}</h1>\
         <p>{service}</p>{body}</body></html>",
        service = escape(&config.service.name),
    );
    let mut response = Response::new(Body::full(html));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; form-action 'self'"),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
