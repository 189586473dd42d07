//! A person's sign-in through the configured identity providers (`login:`): the
//! browser round trip that ends in a verified [`Person`] kept in a sealed session
//! cookie.
//!
//! ```text
//! GET  <login>?return_to=<authorize…>   the sign-in page: a button per provider,
//!                                        a form per static provider (or, with one
//!                                        provider that is not static, straight to it)
//! GET  <login>?provider=<id>&return_to=… login cookie (state, nonce, PKCE) -> 303 provider
//! GET  <callback>/<id>?code&state        code -> verified person -> session cookie
//!                                        -> 303 return_to
//! POST <login>                           username, password, CSRF token (static)
//!                                        -> session cookie -> 303 return_to
//! ```
//!
//! `return_to` is always the authorization endpoint or the agents' claim page (an
//! exact local path, with a query), or exactly the operator page: the sign-in never
//! sends a browser anywhere else. Everything a flow needs between requests is
//! sealed into cookies ([`seal`], [`cookies`]), so any replica with the same cookie
//! key finishes what another started. This module knows nothing of OAuth clients
//! or agents; the authorization endpoint asks [`Login::session`] who is signed in.

pub mod cookies;
mod fetch;
mod flow;
mod github;
mod oidc;
mod pages;
pub mod seal;
pub mod settings;
mod static_users;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{ALLOW, RETRY_AFTER, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::body::Body;
use crate::http_client::HttpsClient;
use crate::limits::AddressLimiter;
use crate::tier::TierId;
use crate::web::{self, csrf::CsrfKey};
use flow::LoginState;
use seal::{Purpose, Sealer};
pub use settings::{
    CookieKeySource, GithubSettings, LoginPaths, LoginSettings, OidcSettings, ProviderKind,
    ProviderSettings, SecretBytes, SecretString, StaticSettings, StaticUser, TierMatch, TierRule,
    TierRules,
};
pub use static_users::{check_hash, hash_password};

/// Failed password sign-ins allowed per client address per [`FAILURE_WINDOW`].
const FAILURES: u32 = 10;
/// The window of [`FAILURES`].
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// A signed-in person, as a provider vouched for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// The provider's id.
    pub provider: String,
    /// Their stable id there: the OIDC `sub`, the GitHub numeric id, the static
    /// username.
    pub subject: String,
    /// Their login or username there (GitHub's login, OIDC `preferred_username`,
    /// the static username), when the provider gave one.
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Their name, when the provider gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Their email, only when the provider verified it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// GitHub: the configured organizations (`acme`) and teams (`acme/platform`)
    /// they are in; none for other providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Their tier under `login.tiers`. Not serialized: a tier is an index into the
    /// config's tiers, which a reload may change; [`Login::tier_of`] works it out
    /// again (and [`Login::session`] does).
    #[serde(skip, default = "anonymous")]
    pub tier: TierId,
}

/// The domain of an email, lowercase.
#[must_use]
pub fn email_domain(email: Option<&str>) -> Option<String> {
    email
        .and_then(|e| e.rsplit_once('@'))
        .map(|(_, domain)| domain.to_ascii_lowercase())
}

fn anonymous() -> TierId {
    TierId::ANONYMOUS
}

impl Person {
    /// True when the person has what `rule` asks for: a verified email at its
    /// domain, or membership of its organization or team.
    #[must_use]
    pub fn matches(&self, rule: &TierMatch) -> bool {
        match rule {
            TierMatch::EmailDomain(d) => email_domain(self.email.as_deref()).as_deref() == Some(d),
            TierMatch::Org(name) | TierMatch::Team(name) => self.groups.contains(name),
        }
    }

    /// What people call them: their login, else their email, else their name,
    /// else their subject.
    #[must_use]
    pub fn handle(&self) -> &str {
        self.username
            .as_deref()
            .or(self.email.as_deref())
            .or(self.name.as_deref())
            .unwrap_or(&self.subject)
    }

    /// `user:<provider>:<subject>`: the principal a grant is made to.
    #[must_use]
    pub fn principal(&self) -> String {
        format!("user:{}:{}", self.provider, self.subject)
    }
}

/// Why a provider did not give a person.
#[derive(Debug)]
pub(crate) enum ProviderError {
    /// The person declined (`access_denied`).
    Denied,
    /// The provider refused, with its error code when it gave a plain one.
    Refused(Option<String>),
    /// The provider could not be reached or did not answer in time.
    Unreachable,
    /// The provider's answer did not verify (an ID token's signature, audience,
    /// nonce…); the reason is logged, not shown.
    Invalid(&'static str),
    /// The person is not allowed in (not in the configured organizations).
    NotAllowed(&'static str),
}

/// What the session cookie holds.
#[derive(Serialize, Deserialize)]
struct Session {
    #[serde(rename = "p")]
    person: Person,
    /// A random id: what CSRF tokens of the signed-in pages are bound to.
    #[serde(rename = "i")]
    id: String,
}

/// The sign-in could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The cookie key could not be had.
    #[error(transparent)]
    Key(#[from] seal::KeyError),
}

/// One provider, ready to use.
#[derive(Debug)]
enum Provider {
    Static(static_users::StaticProvider),
    Oidc(oidc::Oidc),
    Github(github::Github),
}

/// The sign-in: providers, keys, the endpoints' answers.
#[derive(Debug)]
pub struct Login {
    settings: LoginSettings,
    key: SecretBytes,
    sealer: Sealer,
    csrf: CsrfKey,
    providers: Vec<(ProviderSettings, Provider)>,
    failures: Option<Arc<AddressLimiter>>,
}

impl Login {
    /// The sign-in `settings` describe, calling providers with `client`.
    /// `previous` is the sign-in of the config being replaced: an in-memory
    /// cookie key and the failed-attempt counts carry over.
    pub fn new(
        settings: &LoginSettings,
        client: &HttpsClient,
        previous: Option<&Login>,
    ) -> Result<Login, LoginError> {
        let key = seal::load_key(&settings.cookie_key, previous.map(|p| &p.key))?;
        let sealer = Sealer::new(&key.0)?;
        let csrf = CsrfKey::new(sealer.csrf_key().clone());
        let providers = settings
            .providers
            .iter()
            .map(|p| {
                let provider = match &p.kind {
                    ProviderKind::Static(s) => {
                        Provider::Static(static_users::StaticProvider::new(&p.id, s.users.clone()))
                    }
                    ProviderKind::Oidc(o) => {
                        Provider::Oidc(oidc::Oidc::new(&p.id, o.clone(), client.clone()))
                    }
                    ProviderKind::Github(g) => {
                        Provider::Github(github::Github::new(&p.id, g.clone(), client.clone()))
                    }
                };
                (p.clone(), provider)
            })
            .collect();
        let failures = AddressLimiter::carried(
            previous.and_then(|p| p.failures.as_ref()),
            FAILURES,
            FAILURE_WINDOW,
        );
        Ok(Login {
            settings: settings.clone(),
            key,
            sealer,
            csrf,
            providers,
            failures,
        })
    }

    /// The settings it was built from.
    #[must_use]
    pub fn settings(&self) -> &LoginSettings {
        &self.settings
    }

    /// Seals and opens values for the other pages of the flow (a pending
    /// authorization request).
    #[must_use]
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The key refresh-token successors are derived with: the same on every
    /// replica sharing the cookie key.
    #[must_use]
    pub fn refresh_key(&self) -> &aws_lc_rs::hmac::Key {
        self.sealer.refresh_key()
    }

    /// The sign-in page's URL that comes back to `return_to` (a path below the
    /// authorization endpoint).
    #[must_use]
    pub fn login_url(&self, return_to: &str) -> String {
        flow::with_query(&self.settings.paths.login, &[("return_to", return_to)])
    }

    /// The person signed in in the browser that sent `headers`, at unix time `now`,
    /// with their tier under the current rules.
    #[must_use]
    pub fn session(&self, headers: &HeaderMap, now: i64) -> Option<Person> {
        let session = self.open_session(headers, now)?;
        let mut person = session.person;
        person.tier = self.tier_of(&person);
        Some(person)
    }

    /// A CSRF token for a form shown to the signed-in browser that sent `headers`
    /// (bound to its session).
    #[must_use]
    pub fn csrf_token(&self, headers: &HeaderMap, now: i64) -> Option<String> {
        let session = self.open_session(headers, now)?;
        Some(self.csrf.token(&session.id))
    }

    /// True when `token` is a CSRF token of the session of the browser that sent
    /// `headers`.
    #[must_use]
    pub fn csrf_ok(&self, headers: &HeaderMap, token: &str, now: i64) -> bool {
        self.open_session(headers, now)
            .is_some_and(|session| self.csrf.verify(&session.id, token))
    }

    fn open_session(&self, headers: &HeaderMap, now: i64) -> Option<Session> {
        cookies::values(headers, cookies::SESSION)
            .find_map(|value| self.sealer.open::<Session>(Purpose::Session, value, now))
            .filter(|s| {
                self.providers
                    .iter()
                    .any(|(p, _)| p.id == s.person.provider)
            })
    }

    /// The tier of `person` under `login.tiers`: the first rule that matches, or
    /// the default.
    #[must_use]
    pub fn tier_of(&self, person: &Person) -> TierId {
        self.settings
            .tiers
            .rules
            .iter()
            .find(|rule| person.matches(&rule.when))
            .map_or(self.settings.tiers.default, |rule| rule.tier)
    }

    /// Answers a request to the sign-in page or a provider's callback, from a
    /// client at `peer` that addressed the public `origin`, at unix time `now`.
    pub async fn handle<B>(
        &self,
        request: Request<B>,
        origin: &str,
        peer: IpAddr,
        now: i64,
    ) -> Response<Body>
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let paths = &self.settings.paths;
        let path = request.uri().path();
        if path == paths.login {
            if matches!(*request.method(), Method::GET | Method::HEAD) {
                return self.sign_in_page(&request, origin, now).await;
            }
            if request.method() == Method::POST {
                return self.password(request, peer, now).await;
            }
            return not_allowed("GET, POST");
        }
        let callback = path
            .strip_prefix(paths.callback.as_str())
            .and_then(|rest| rest.strip_prefix('/'));
        match callback {
            // GET only: a HEAD (a prefetcher's) must not spend the code.
            Some(id) if request.method() == Method::GET => {
                let id = id.to_owned();
                self.callback(&id, &request, now).await
            }
            Some(_) => not_allowed("GET"),
            None => web::error_page(
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no sign-in page here.",
            ),
        }
    }

    /// `GET <login>`: the chooser, or straight to the provider the query names
    /// (or the only one).
    async fn sign_in_page<B>(
        &self,
        request: &Request<B>,
        origin: &str,
        now: i64,
    ) -> Response<Body> {
        let query = Query::of(request);
        let Ok(return_to) = self.return_to(query.get("return_to")) else {
            return NotAPlace::page();
        };
        // Signed in, and nowhere to go: say so (a sign-in ends here when it had no
        // `return_to`, so starting another would go round in circles).
        let signed_in = self.session(request.headers(), now);
        if let (Some(person), None, None) = (&signed_in, &return_to, query.get("provider")) {
            let provider = self.display_name(&person.provider);
            let content = pages::signed_in(person, provider);
            return web::page(StatusCode::OK, &self.title(), content);
        }
        let wanted = match query.get("provider") {
            Some(id) => match self.provider(id) {
                Some(found) => Some(found),
                None => {
                    return web::error_page(
                        StatusCode::NOT_FOUND,
                        "Unknown sign-in provider",
                        "This sign-in link names a provider this service does not offer. Go back and choose another.",
                    );
                }
            },
            None => match self.providers.as_slice() {
                [only] if !matches!(only.1, Provider::Static(_)) => Some(only),
                _ => None,
            },
        };
        if let Some((settings, provider)) = wanted {
            if !matches!(provider, Provider::Static(_)) {
                return self.start(settings, provider, return_to, origin, now).await;
            }
        }
        // The page's forms are bound to the round trip already open, if any (two
        // tabs share it), else to a new one.
        let (state, fresh) = match self.login_state(request.headers(), now) {
            Some(state) => (state, false),
            None => match LoginState::page(return_to.clone()) {
                Some(state) => (state, true),
                None => return unavailable(),
            },
        };
        let mut response = self.chooser(
            StatusCode::OK,
            &state,
            return_to.as_deref(),
            None,
            signed_in.as_ref(),
            None,
        );
        if fresh {
            self.set_login_cookie(&mut response, &state, now);
        }
        response
    }

    /// Sends the browser to `provider` with a new round trip in the login cookie.
    async fn start(
        &self,
        settings: &ProviderSettings,
        provider: &Provider,
        return_to: Option<String>,
        origin: &str,
        now: i64,
    ) -> Response<Body> {
        let redirect_uri = format!("{origin}{}/{}", self.settings.paths.callback, settings.id);
        let Some(state) = LoginState::round_trip(&settings.id, return_to, redirect_uri) else {
            return unavailable();
        };
        let url = match provider {
            Provider::Oidc(oidc) => oidc.authorization_url(&state).await,
            Provider::Github(github) => Ok(github.authorization_url(&state)),
            Provider::Static(_) => Err(ProviderError::Invalid("a static provider has no redirect")),
        };
        match url {
            Ok(url) => {
                let mut response = web::see_other(&url);
                self.set_login_cookie(&mut response, &state, now);
                response
            }
            Err(error) => self.provider_error(&error, &settings.display_name),
        }
    }

    /// `GET <callback>/<id>`: the provider sent the browser back.
    async fn callback<B>(&self, id: &str, request: &Request<B>, now: i64) -> Response<Body> {
        let Some((settings, provider)) = self.provider(id) else {
            return web::error_page(
                StatusCode::NOT_FOUND,
                "Unknown sign-in provider",
                "This address is not one of this service's sign-in providers.",
            );
        };
        let query = Query::of(request);
        let returned = query.get("state").unwrap_or_default();
        let state = cookies::values(request.headers(), cookies::LOGIN)
            .filter_map(|value| self.sealer.open::<LoginState>(Purpose::Login, value, now))
            .find(|s| s.provider.as_deref() == Some(id) && flow::same(&s.state, returned));
        let Some(state) = state else {
            let mut response = web::error_page(
                StatusCode::BAD_REQUEST,
                "Sign-in expired",
                "This sign-in took too long, or was started in another browser or tab. Go back to the application and start again.",
            );
            clear_login_cookie(&mut response);
            return response;
        };
        let outcome = match (query.get("error"), query.get("code"), provider) {
            (Some("access_denied"), _, _) => Err(ProviderError::Denied),
            (Some(error), _, _) => Err(ProviderError::Refused(
                fetch::plain_code(error).then(|| error.to_owned()),
            )),
            (None, None, _) => Err(ProviderError::Invalid("the callback has no code")),
            (None, Some(code), Provider::Oidc(oidc)) => oidc.complete(code, &state, now).await,
            (None, Some(code), Provider::Github(github)) => github.complete(code, &state).await,
            (None, Some(_), Provider::Static(_)) => {
                Err(ProviderError::Invalid("a static provider has no callback"))
            }
        };
        let mut response = match outcome {
            Ok(person) => self.signed_in(person, state.return_to.as_deref(), now),
            Err(error) => self.provider_error(&error, &settings.display_name),
        };
        clear_login_cookie(&mut response);
        response
    }

    /// `POST <login>`: a static provider's username and password.
    async fn password<B>(&self, request: Request<B>, peer: IpAddr, now: i64) -> Response<Body>
    where
        B: http_body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let Some(form) = web::form::read(&parts.headers, body).await else {
            return web::error_page(
                StatusCode::BAD_REQUEST,
                "Sign-in form not readable",
                "The sign-in form could not be read. Reload the sign-in page and try again.",
            );
        };
        let state = self.login_state(&parts.headers, now);
        let csrf = form.get("csrf").unwrap_or_default();
        let Some(state) = state.filter(|s| self.csrf.verify(&s.state, csrf)) else {
            return web::error_page(
                StatusCode::FORBIDDEN,
                "Sign-in form expired",
                "The sign-in form has expired or was not sent from this site. Reload the sign-in page and try again.",
            );
        };
        let Ok(return_to) = self.return_to(form.get("return_to")) else {
            return NotAPlace::page();
        };
        let provider = form.get("provider").and_then(|id| self.provider(id));
        let Some((settings, Provider::Static(accounts))) = provider else {
            return web::error_page(
                StatusCode::BAD_REQUEST,
                "Unknown sign-in provider",
                "This form names no password sign-in of this service. Reload the sign-in page and try again.",
            );
        };
        if let Some(failures) = &self.failures {
            if let Err(retry) = failures.check(peer) {
                let mut response = web::error_page(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many attempts",
                    "There were too many failed sign-ins from your network. Wait a few minutes and try again.",
                );
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry));
                return response;
            }
        }
        let username = form.get("username").unwrap_or_default();
        let password = form.get("password").unwrap_or_default();
        match accounts.verify(username, password).await {
            Some(person) => {
                if let Some(failures) = &self.failures {
                    failures.give_back(peer);
                }
                let mut response = self.signed_in(person, return_to.as_deref(), now);
                clear_login_cookie(&mut response);
                response
            }
            None => {
                tracing::info!(provider = %settings.id, client = %peer, "a password sign-in failed");
                self.chooser(
                    StatusCode::FORBIDDEN,
                    &state,
                    return_to.as_deref(),
                    Some("Wrong username or password."),
                    None,
                    Some(username),
                )
            }
        }
    }

    /// Puts `person` in a new session cookie and sends the browser to `return_to`
    /// (or to the sign-in page, which then says who is signed in).
    fn signed_in(&self, mut person: Person, return_to: Option<&str>, now: i64) -> Response<Body> {
        person.tier = self.tier_of(&person);
        let Some(id) = flow::random_token() else {
            return unavailable();
        };
        let provider = person.provider.clone();
        let principal = person.principal();
        let ttl = self.settings.session_ttl;
        let expires = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2));
        let session = Session { person, id };
        let cookie = self
            .sealer
            .seal(Purpose::Session, &session, expires)
            .ok()
            .filter(|sealed| sealed.len() <= cookies::MAX_VALUE)
            .and_then(|sealed| cookies::set(cookies::SESSION, &sealed, ttl));
        let Some(cookie) = cookie else {
            tracing::warn!(%provider, "a session does not fit in a cookie");
            return web::error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in failed",
                "Your account's details are too large to keep in a sign-in. Ask the operator of this service.",
            );
        };
        tracing::info!(%provider, %principal, "signed in");
        let mut response = web::see_other(return_to.unwrap_or(&self.settings.paths.login));
        response.headers_mut().append(SET_COOKIE, cookie);
        response
    }

    /// The sign-in page with its forms bound to `state`.
    fn chooser(
        &self,
        status: StatusCode,
        state: &LoginState,
        return_to: Option<&str>,
        error: Option<&str>,
        signed_in: Option<&Person>,
        username: Option<&str>,
    ) -> Response<Body> {
        let csrf = self.csrf.token(&state.state);
        let choices = self
            .providers
            .iter()
            .map(|(settings, provider)| pages::Choice {
                id: &settings.id,
                display_name: &settings.display_name,
                password: matches!(provider, Provider::Static(_)),
            })
            .collect();
        let content = pages::sign_in(&pages::SignIn {
            login_path: &self.settings.paths.login,
            choices,
            return_to,
            csrf: &csrf,
            error,
            username,
            signed_in,
        });
        web::page(status, &self.title(), content)
    }

    /// The page for a provider that gave no person.
    fn provider_error(&self, error: &ProviderError, provider: &str) -> Response<Body> {
        match error {
            ProviderError::Denied => web::error_page(
                StatusCode::FORBIDDEN,
                "Sign-in cancelled",
                &format!(
                    "You did not allow the sign-in at {provider}. Go back to the application to try again."
                ),
            ),
            ProviderError::Refused(code) => web::error_page(
                StatusCode::BAD_GATEWAY,
                "Sign-in refused",
                &match code {
                    Some(code) => format!(
                        "{provider} refused the sign-in ({code}). Go back to the application and start again."
                    ),
                    None => format!(
                        "{provider} refused the sign-in. Go back to the application and start again."
                    ),
                },
            ),
            ProviderError::Unreachable => web::error_page(
                StatusCode::BAD_GATEWAY,
                "Sign-in unavailable",
                &format!("{provider} could not be reached. Try again in a moment."),
            ),
            ProviderError::Invalid(why) => {
                tracing::warn!(provider, why, "a sign-in was refused");
                web::error_page(
                    StatusCode::BAD_GATEWAY,
                    "Sign-in failed",
                    &format!(
                        "The answer from {provider} could not be verified, so you are not signed in. Go back to the application and start again."
                    ),
                )
            }
            ProviderError::NotAllowed(message) => {
                web::error_page(StatusCode::FORBIDDEN, "Not allowed to sign in", message)
            }
        }
    }

    /// The checked `return_to`; `Err` when it is not a place to send people to.
    fn return_to(&self, value: Option<&str>) -> Result<Option<String>, NotAPlace> {
        match value {
            None | Some("") => Ok(None),
            Some(v)
                if flow::return_to_allowed(v, &self.settings.paths.authorize)
                    || flow::return_to_allowed(v, &self.settings.paths.claim)
                    || flow::return_to_is(v, &self.settings.paths.operator) =>
            {
                Ok(Some(v.to_owned()))
            }
            Some(_) => Err(NotAPlace),
        }
    }

    /// The login cookie's round trip, when one is open.
    fn login_state(&self, headers: &HeaderMap, now: i64) -> Option<LoginState> {
        cookies::values(headers, cookies::LOGIN)
            .find_map(|value| self.sealer.open::<LoginState>(Purpose::Login, value, now))
    }

    fn set_login_cookie(&self, response: &mut Response<Body>, state: &LoginState, now: i64) {
        let ttl = cookies::LOGIN_TTL;
        let expires = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(600));
        let cookie = self
            .sealer
            .seal(Purpose::Login, state, expires)
            .ok()
            .filter(|sealed| sealed.len() <= cookies::MAX_VALUE)
            .and_then(|sealed| cookies::set(cookies::LOGIN, &sealed, ttl));
        match cookie {
            Some(cookie) => {
                response.headers_mut().append(SET_COOKIE, cookie);
            }
            None => *response = unavailable(),
        }
    }

    fn provider(&self, id: &str) -> Option<&(ProviderSettings, Provider)> {
        self.providers.iter().find(|(p, _)| p.id == id)
    }

    fn display_name<'a>(&'a self, id: &'a str) -> &'a str {
        self.provider(id)
            .map_or(id, |(p, _)| p.display_name.as_str())
    }

    fn title(&self) -> String {
        if self.settings.service_name.is_empty() {
            "Sign in".to_owned()
        } else {
            format!("Sign in to {}", self.settings.service_name)
        }
    }
}

/// A `return_to` that is neither the authorization endpoint nor the claim page.
struct NotAPlace;

impl NotAPlace {
    fn page() -> Response<Body> {
        web::error_page(
            StatusCode::BAD_REQUEST,
            "Sign-in link not valid",
            "This sign-in link would send you somewhere this service does not send people after signing in. Go back to the application and start again.",
        )
    }
}

/// A request's query parameters.
struct Query(Vec<(String, String)>);

impl Query {
    fn of<B>(request: &Request<B>) -> Query {
        let query = request.uri().query().unwrap_or_default();
        Query(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn clear_login_cookie(response: &mut Response<Body>) {
    response
        .headers_mut()
        .append(SET_COOKIE, cookies::clear(cookies::LOGIN));
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = web::error_page(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed",
        "This page does not answer that method.",
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

fn unavailable() -> Response<Body> {
    web::error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sign-in unavailable",
        "The sign-in cannot be started right now. Try again in a moment.",
    )
}
