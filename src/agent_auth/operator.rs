//! The operator page (`GET`/`POST <endpoints.operator>`): a signed-in person's
//! agents, their keys, and a revoke button per key.
//!
//! The page lists the registrations this person claimed by signing in, matched by
//! the sign-in provider and its stable subject id (never by e-mail, which a person
//! may change or another provider may also claim), each with its name, the times
//! of its registration and claim, its key's tier and scopes, and every key of the
//! agent: id, name, creation, last use (the store's, or this process's newer one
//! from the key table, which reaches the store in batches), never a secret.
//!
//! It is server-rendered HTML and works without JavaScript: each key has a form
//! that posts its id with a CSRF token bound to the person's session. A
//! revocation goes the way every other one goes (store first, then the key
//! table; the store announces it to every replica), and is refused with a 403
//! page for a key of an agent this person did not claim. The answer is a 303 back
//! to the page (POST-redirect-GET), which then says which key was revoked.
//!
//! A browser without a session is sent to sign in and comes back here: the
//! sign-in accepts exactly this path as its `return_to`.

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use maud::{Markup, html};

use super::{AgentAuth, Answer, rfc3339};
use crate::clock::unix_now;
use crate::config::Config;
use crate::login::{Login, Person};
use crate::policy::MethodSet;
use crate::rejection::Rejection;
use crate::store::{KeyRecord, Operated};
use crate::web;

/// The query parameter that names the key just revoked.
const REVOKED: &str = "revoked";

impl AgentAuth {
    /// `GET` (the page) and `POST` (a revocation) on the operator page; `login`
    /// is `None` where nobody can sign in.
    pub async fn operator(
        &self,
        config: &Config,
        request: Request<Incoming>,
        login: Option<&Login>,
    ) -> Answer {
        let method = request.method().clone();
        if method != Method::GET && method != Method::HEAD && method != Method::POST {
            return Err(
                Rejection::MethodNotAllowed(MethodSet::of(&["GET", "HEAD", "POST"])).into(),
            );
        }
        let Some(login) = login.filter(|_| config.login.enabled()) else {
            return Ok(web::error_page(
                StatusCode::NOT_FOUND,
                "No sign-in here",
                "This service has no sign-in, so there is no operator page.",
            ));
        };
        let now = unix_now();
        let path = &config.endpoints.operator;
        let Some(person) = login.session(request.headers(), now) else {
            if method == Method::POST {
                return Ok(web::error_page(
                    StatusCode::UNAUTHORIZED,
                    "You are not signed in",
                    "Your sign-in has ended. Open the operator page again to sign in; nothing was revoked.",
                ));
            }
            return Ok(web::see_other(&login.login_url(path)));
        };
        if method == Method::POST {
            return self.revoke_for(config, request, login, &person, now).await;
        }
        let Some(csrf) = login.csrf_token(request.headers(), now) else {
            return Ok(web::see_other(&login.login_url(path)));
        };
        let revoked = request.uri().query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == REVOKED)
                .map(|(_, v)| v.into_owned())
        });
        let agents = self
            .store
            .operated_by(&person.provider, &person.subject)
            .await?;
        // The notice names a key only if it is one of this person's, revoked.
        let notice = revoked.and_then(|id| {
            agents
                .iter()
                .flat_map(|a| a.keys.iter())
                .find(|k| k.id == id && k.revoked_at.is_some())
        });
        let content = self.render(config, &person, &agents, notice, &csrf);
        Ok(web::page(StatusCode::OK, "Your agents", content))
    }

    /// A posted revocation: the session's CSRF token, and a key of one of this
    /// person's agents.
    async fn revoke_for(
        &self,
        config: &Config,
        request: Request<Incoming>,
        login: &Login,
        person: &Person,
        now: i64,
    ) -> Answer {
        let (parts, body) = request.into_parts();
        let Some(form) = web::form::read(&parts.headers, body).await else {
            return Ok(web::error_page(
                StatusCode::BAD_REQUEST,
                "This form is not valid",
                "A revocation must come from the operator page's form. Nothing was revoked.",
            ));
        };
        if !form
            .get("csrf")
            .is_some_and(|t| login.csrf_ok(&parts.headers, t, now))
        {
            return Ok(web::error_page(
                StatusCode::FORBIDDEN,
                "This form is not valid",
                "The form did not come from the operator page (its security token is missing or wrong). Nothing was revoked.",
            ));
        }
        let id = form.get("key_id").unwrap_or_default();
        let agents = self
            .store
            .operated_by(&person.provider, &person.subject)
            .await?;
        let Some(key) = agents
            .iter()
            .flat_map(|a| a.keys.iter())
            .find(|k| k.id == id)
        else {
            return Ok(web::error_page(
                StatusCode::FORBIDDEN,
                "Not your agent's key",
                "This key does not belong to an agent you claimed. Nothing was revoked.",
            ));
        };
        let back = format!(
            "{}?{}",
            config.endpoints.operator,
            form_urlencoded::Serializer::new(String::new())
                .append_pair(REVOKED, &key.id)
                .finish()
        );
        if key.revoked_at.is_some() {
            return Ok(web::see_other(&back));
        }
        // The path of every revocation: the store, then this key table; the
        // store tells the other replicas.
        if let Some(revoked) = self.store.revoke_key(&key.id, now).await? {
            self.apply(&revoked).await;
            tracing::info!(key = %revoked.id, provider = %person.provider, "key revoked by its operator");
        }
        Ok(web::see_other(&back))
    }

    /// The page's content.
    fn render(
        &self,
        config: &Config,
        person: &Person,
        agents: &[Operated],
        notice: Option<&KeyRecord>,
        csrf: &str,
    ) -> Markup {
        let provider = config
            .login
            .providers
            .iter()
            .find(|p| p.id == person.provider)
            .map_or(person.provider.as_str(), |p| p.display_name.as_str());
        html! {
            p { strong { (config.service.name) } }
            p.muted { "Signed in as " strong { (person.handle()) } " through " (provider) "." }
            @if let Some(key) = notice {
                p role="status" { strong { "Revoked: " } "the key " code { (key.id) } " (" (key.name) ") no longer works." }
            }
            @if agents.is_empty() {
                p { "You have not claimed any agent. When an agent registers, it gives you a claim link: open it, signed in, to become its operator." }
            }
            @for agent in agents {
                (self.agent_view(config, agent, csrf))
            }
        }
    }

    /// One agent and its keys.
    fn agent_view(&self, config: &Config, agent: &Operated, csrf: &str) -> Markup {
        let registration = &agent.registration;
        let name = registration
            .client_name
            .as_deref()
            .unwrap_or("an unnamed agent");
        let issued = agent.keys.iter().find(|k| k.id == registration.key_id);
        html! {
            section.agent id=(registration.id) {
                h2 { (name) }
                dl {
                    dt { "Registration" } dd { code { (registration.id) } }
                    dt { "Registered" } dd { (rfc3339(registration.created_at)) }
                    dt { "Claimed" } dd { (registration.claimed_at.map(rfc3339).unwrap_or_default()) }
                    dt { "Tier" } dd { code { (issued.map_or("", |k| k.tier.as_str())) } }
                    dt { "Scopes" } dd { code { (issued.map(|k| k.scopes.join(" ")).unwrap_or_default()) } }
                }
                @for key in &agent.keys {
                    (self.key_view(config, key, csrf))
                }
            }
        }
    }

    /// One key: its facts and, while it works, its revoke button.
    fn key_view(&self, config: &Config, key: &KeyRecord, csrf: &str) -> Markup {
        let last_used = match (key.last_used_at, self.keys.last_used(&key.id)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        html! {
            div.key id=(key.id) {
                h3 { "Key " code { (key.id) } }
                dl {
                    dt { "Name" } dd { (key.name) }
                    dt { "Created" } dd { (rfc3339(key.created_at)) }
                    dt { "Last used" } dd { (last_used.map_or_else(|| "never".to_owned(), rfc3339)) }
                    @if let Some(at) = key.revoked_at {
                        dt { "Revoked" } dd { (rfc3339(at)) }
                    }
                }
                @if key.revoked_at.is_none() {
                    form method="post" action=(config.endpoints.operator) {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="key_id" value=(key.id);
                        button type="submit" { "Revoke " (key.id) }
                    }
                }
            }
        }
    }
}
