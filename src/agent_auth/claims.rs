//! Claims (`POST claim`) and the human claim page (`GET claim?token=...`).
//!
//! A claim binds a registration to a verified identity and raises the same key's
//! tier and scopes in place. The claim page shows the agent to the person who holds
//! its claim URL and posts the claim back as a form.

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::members::{JsonBody, Members, Names, Understood};
use super::registration::{check_assertion_type, names_of, narrow, subject};
use super::{AgentAuth, Answer, Failure, json, note_ignored, parse_json, read_body, rfc3339};
use crate::body::Body;
use crate::clock::unix_now;
use crate::config::{Claims, Config};
use crate::policy::MethodSet;
use crate::rejection::{LifecycleError, Rejection};
use crate::store::{Claim, ClaimOutcome};

/// The body of `POST claim`. Members not among its `MEMBERS` are
/// ignored and named in the answer's `ignored_members`.
#[derive(Debug)]
pub(super) struct ClaimBody {
    claim_token: Option<String>,
    registration_id: Option<String>,
    identity_assertion: Option<String>,
    assertion_type: Option<String>,
    ignored: Vec<String>,
}

const CLAIM_TOKEN: Names = &["claim_token"];
const REGISTRATION_ID: Names = &["registration_id"];
const IDENTITY_ASSERTION: Names = &["identity_assertion", "assertion"];
const ASSERTION_TYPE: Names = &["assertion_type"];

impl JsonBody for ClaimBody {
    const MEMBERS: &'static [Names] = &[
        CLAIM_TOKEN,
        REGISTRATION_ID,
        IDENTITY_ASSERTION,
        ASSERTION_TYPE,
    ];

    fn read(members: &Members) -> Result<Self, Failure> {
        Ok(ClaimBody {
            claim_token: members.text(CLAIM_TOKEN)?,
            registration_id: members.text(REGISTRATION_ID)?,
            identity_assertion: members.text(IDENTITY_ASSERTION)?,
            assertion_type: members.text(ASSERTION_TYPE)?,
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

impl AgentAuth {
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
                ignored: Vec::new(),
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
                let mut answer = serde_json::json!({
                    "registration_id": registration.id,
                    "status": "claimed",
                    "key_id": key.id,
                    "scopes": key.scopes,
                    "tier": key.tier,
                });
                note_ignored(&mut answer, &body.ignored);
                Ok(json(StatusCode::OK, &answer))
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

pub(super) fn claim_hash(token: &str) -> [u8; 32] {
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
