//! The authorization endpoint for people (OAuth 2.1 section 4.1): the request is
//! checked ([`super::authorize`]), the person signs in (through [`Login`]), sees
//! the consent page (the client's name and host, where the code goes, each scope
//! with its description), and approves or denies. An approval is remembered per
//! person, client and scopes, so the next request for the same scopes goes
//! straight back to the client with a code.
//!
//! The pending request travels sealed in the consent form, so any replica can
//! finish the flow; the form carries a CSRF token bound to the person's session.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use maud::html;
use serde::{Deserialize, Serialize};

use super::OAuth;
use super::authorize::{self, Pending, Refusal};
use super::clients::{self, Client, ClientKind, FindError};
use crate::body::Body;
use crate::clock::unix_now;
use crate::config::Config;
use crate::login::seal::Purpose;
use crate::login::{Login, Person};
use crate::protocol::redirect::with_params;
use crate::scope::ScopeSet;
use crate::store::{CodeRecord, Store};
use crate::web;

/// How long a consent page may be left open.
const CONSENT_WINDOW: i64 = 600;

/// What the consent form carries, sealed.
#[derive(Debug, Serialize, Deserialize)]
struct Sealed {
    pending: Pending,
    /// The scopes shown, space-separated.
    granted: String,
    /// The person who was asked.
    principal: String,
}

fn bad_request(message: &str) -> Response<Body> {
    web::error_page(
        StatusCode::BAD_REQUEST,
        "This sign-in cannot continue",
        message,
    )
}

fn unavailable() -> Response<Body> {
    web::error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again in a moment",
        "The authorization server cannot reach its store right now. Nothing was granted.",
    )
}

impl OAuth {
    /// `GET` or `POST` of the authorization endpoint, with a person's sign-in.
    pub async fn authorize_person(
        &self,
        config: &Config,
        request: Request<Incoming>,
        login: &Login,
        issuer: &str,
    ) -> Response<Body> {
        let now = unix_now();
        let (parts, body) = request.into_parts();
        let params: Vec<(String, String)> = match parts.method {
            Method::GET => form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
            Method::POST => match web::form::read(&parts.headers, body).await {
                Some(form) => form.into_pairs(),
                None => return bad_request("The authorization request must be a form."),
            },
            _ => {
                return web::error_page(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Not allowed",
                    "The authorization endpoint answers GET and POST.",
                );
            }
        };
        let Some(store) = self.store.as_ref() else {
            return unavailable();
        };
        let client_id = match authorize::client_id(&params) {
            Ok(id) => id,
            Err(refusal) => return refused(&refusal, issuer),
        };
        let documents = self.documents.as_deref();
        let client = match clients::find(config, Some(store), documents, client_id).await {
            Ok(Some(client)) => client,
            Ok(None) => {
                return bad_request(
                    "The application that sent you here is not known to this server. Nothing was sent anywhere; close this page.",
                );
            }
            Err(FindError::Document(error)) => {
                tracing::debug!(%error, "a client's metadata document is refused");
                return bad_request(&format!(
                    "The application that sent you here names itself by an address whose description this server cannot use: {error}. Nothing was sent anywhere; close this page."
                ));
            }
            Err(FindError::Store(error)) => {
                tracing::warn!(%error, "cannot read a registered client");
                return unavailable();
            }
        };
        let pending = match authorize::check(&params, &client, config) {
            Ok(pending) => pending,
            Err(refusal) => return refused(&refusal, issuer),
        };
        let Some(person) = login.session(&parts.headers, now) else {
            let query = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params.iter())
                .finish();
            let return_to = format!("{}?{query}", config.endpoints.authorize);
            return web::see_other(&login.login_url(&return_to));
        };
        let granted = grantable(config, &client, &pending, &person);
        if granted.is_empty() {
            return redirect_error(
                &pending,
                "access_denied",
                "you may not grant any of the requested scopes",
                issuer,
            );
        }
        let subject = person.principal();
        match store.consent(&subject, &client.client_id, now).await {
            Ok(Some(remembered)) => {
                let remembered = config
                    .scopes
                    .granted_known(remembered.iter().map(String::as_str));
                if granted.is_subset_of(&remembered) {
                    return self
                        .issue_code(config, store, &pending, &person, granted, issuer, now)
                        .await;
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot read a consent");
                return unavailable();
            }
        }
        let sealed = Sealed {
            pending,
            granted: config.scopes.names(&granted),
            principal: subject,
        };
        let (Ok(token), Some(csrf)) = (
            login
                .sealer()
                .seal(Purpose::AuthzRequest, &sealed, now + CONSENT_WINDOW),
            login.csrf_token(&parts.headers, now),
        ) else {
            return unavailable();
        };
        consent_page(config, &client, &sealed, &person, &token, &csrf)
    }

    /// `POST consent`: the person's decision.
    pub async fn consent(
        &self,
        config: &Config,
        request: Request<Incoming>,
        login: &Login,
        issuer: &str,
    ) -> Response<Body> {
        let now = unix_now();
        if request.method() != Method::POST {
            return web::error_page(
                StatusCode::METHOD_NOT_ALLOWED,
                "Not allowed",
                "Decisions are posted from the consent page.",
            );
        }
        let (parts, body) = request.into_parts();
        let Some(form) = web::form::read(&parts.headers, body).await else {
            return bad_request("The decision must come from the consent form.");
        };
        let Some(person) = login.session(&parts.headers, now) else {
            return bad_request(
                "You are not signed in any more. Go back to the application and start again.",
            );
        };
        if !form
            .get("csrf")
            .is_some_and(|t| login.csrf_ok(&parts.headers, t, now))
        {
            return web::error_page(
                StatusCode::FORBIDDEN,
                "This form is not valid",
                "The consent form did not come from this page (its security token is missing or wrong). Nothing was granted.",
            );
        }
        let Some(sealed) = form
            .get("request")
            .and_then(|t| login.sealer().open::<Sealed>(Purpose::AuthzRequest, t, now))
        else {
            return bad_request(
                "This consent page has expired. Go back to the application and start again.",
            );
        };
        if sealed.principal != person.principal() {
            return web::error_page(
                StatusCode::FORBIDDEN,
                "Another person is signed in",
                "The consent page was shown to someone else. Nothing was granted.",
            );
        }
        let Some(store) = self.store.as_ref() else {
            return unavailable();
        };
        if form.get("decision") != Some("approve") {
            return redirect_error(
                &sealed.pending,
                "access_denied",
                "the person declined",
                issuer,
            );
        }
        let granted = config
            .scopes
            .granted_known(sealed.granted.split_whitespace());
        let ttl = i64::try_from(config.interactive.consent_ttl.as_secs()).unwrap_or(0);
        if ttl > 0 {
            let names: Vec<String> = sealed
                .granted
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            let subject = person.principal();
            if let Err(error) = store
                .remember_consent(&subject, &sealed.pending.client_id, &names, now + ttl)
                .await
            {
                tracing::warn!(%error, "cannot remember a consent");
                return unavailable();
            }
        }
        self.issue_code(
            config,
            store,
            &sealed.pending,
            &person,
            granted,
            issuer,
            now,
        )
        .await
    }

    /// Stores a new code for `pending` and sends the browser back to the client
    /// with it.
    #[expect(
        clippy::too_many_arguments,
        reason = "the flow's parts, each one argument"
    )]
    async fn issue_code(
        &self,
        config: &Config,
        store: &Store,
        pending: &Pending,
        person: &Person,
        granted: ScopeSet,
        issuer: &str,
        now: i64,
    ) -> Response<Body> {
        let Ok(code) = crate::random::secret("ac") else {
            return unavailable();
        };
        let ttl = i64::try_from(config.interactive.code_ttl.as_secs()).unwrap_or(60);
        let record = CodeRecord {
            hash: crate::credentials::KeyHash::of(&code).to_string(),
            client_id: pending.client_id.clone(),
            redirect_uri: pending.redirect_uri.clone(),
            code_challenge: pending.code_challenge.clone(),
            resource: pending.resource.clone(),
            scopes: config
                .scopes
                .names(&granted)
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            subject: person.principal(),
            person: serde_json::to_string(person).unwrap_or_default(),
            tier: config.tiers.get(person.tier).name.clone(),
            expires_at: now + ttl,
        };
        if let Err(error) = store.insert_code(&record).await {
            tracing::warn!(%error, "cannot store an authorization code");
            return unavailable();
        }
        tracing::debug!(client = %pending.client_id, principal = %record.subject, "authorization code issued");
        let mut params = vec![("code", code.as_str())];
        if let Some(state) = &pending.state {
            params.push(("state", state));
        }
        params.push(("iss", issuer));
        web::see_other(&with_params(&pending.redirect_uri, &params))
    }
}

/// What the person may grant the client: what it asked for (or all it may
/// have), within the client's scopes and the person's tier.
fn grantable(config: &Config, client: &Client, pending: &Pending, person: &Person) -> ScopeSet {
    let asked = if pending.scope.is_empty() {
        client.scopes
    } else {
        config
            .scopes
            .granted_known(pending.scope.split_whitespace())
    };
    asked
        .intersection(&client.scopes)
        .intersection(&config.tiers.get(person.tier).scopes)
}

fn refused(refusal: &Refusal, issuer: &str) -> Response<Body> {
    match refusal {
        Refusal::Page { message } => bad_request(message),
        Refusal::Redirect { .. } => match refusal.location(issuer) {
            Some(location) => web::see_other(&location),
            None => bad_request("The request cannot be answered."),
        },
    }
}

fn redirect_error(
    pending: &Pending,
    error: &'static str,
    description: &str,
    issuer: &str,
) -> Response<Body> {
    refused(
        &Refusal::Redirect {
            to: pending.redirect_uri.clone(),
            error,
            description: description.to_owned(),
            state: pending.state.clone(),
        },
        issuer,
    )
}

/// The host of a URI, for the person to read.
fn host_of(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(url) => match url.host_str() {
            Some(host) => match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            },
            None => format!("{}:", url.scheme()),
        },
        Err(_) => uri.to_owned(),
    }
}

fn consent_page(
    config: &Config,
    client: &Client,
    sealed: &Sealed,
    person: &Person,
    token: &str,
    csrf: &str,
) -> Response<Body> {
    let name = client.name.as_deref().unwrap_or(&client.client_id);
    let redirect_host = host_of(&sealed.pending.redirect_uri);
    let client_host = client.uri.as_deref().map(host_of);
    let local = client.is_local_only();
    let scopes: Vec<(&str, &str)> = config
        .scopes
        .all()
        .iter()
        .filter(|s| sealed.granted.split_whitespace().any(|n| n == s.name))
        .map(|s| (s.name.as_str(), s.description.as_str()))
        .collect();
    let who = person
        .email
        .as_deref()
        .or(person.name.as_deref())
        .unwrap_or(&person.subject);
    let content = html! {
        p { strong { (name) } " asks for access to " strong { (config.service.name) } " as you (" (who) ")." }
        @if client.kind == ClientKind::MetadataDocument {
            p { "It is identified by its address on " code { (host_of(&client.client_id)) } ", where it publishes its description." }
        } @else if let Some(host) = &client_host { p { "Its home page is on " code { (host) } "." } }
        p { "After you decide, you go back to " code { (redirect_host) } "." }
        @if local {
            p.warning { "This application runs on your own computer (it receives the answer on localhost). Approve only if you just started it yourself." }
        }
        h2 { "It will be able to" }
        ul {
            @for (scope, description) in &scopes {
                li { code { (scope) } " — " (description) }
            }
        }
        form method="post" action=(config.endpoints.consent) {
            input type="hidden" name="request" value=(token);
            input type="hidden" name="csrf" value=(csrf);
            button type="submit" name="decision" value="approve" { "Allow" }
            " "
            button type="submit" name="decision" value="deny" { "Deny" }
        }
    };
    web::page_with_form_target(
        StatusCode::OK,
        &format!("Allow {name}?"),
        content,
        &sealed.pending.redirect_uri,
    )
}
