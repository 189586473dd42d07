//! A person's sign-in (`login:`), driven as a browser would: a cookie-keeping
//! client that follows each redirect by hand, against the proxy and small local
//! identity providers that follow the published protocols (an OpenID Connect
//! provider, a GitHub). Covered: static accounts (success, one answer for a wrong
//! password and an unknown user, failures limited per address, CSRF), OpenID
//! Connect (success, the person's claims, ID tokens with the wrong nonce,
//! audience or signature refused, a declined sign-in, a login state that expired),
//! GitHub (success, organizations and teams, refusal), `return_to` never leading
//! anywhere but the authorization endpoint, no secret in the log, a sign-in across
//! reloads. A later request's `Login::session` reads the person back from the
//! cookie. The config's refusals are in `login_config`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use argon2::{Argon2, Params, PasswordHasher};
use authmd_proxy::clock::unix_now;
use authmd_proxy::config::{Config, Overrides};
use authmd_proxy::login::{Login, Person};
use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::{LOCATION, SET_COOKIE};

use crate::support::github_api::{self, Account, GithubApi};
use crate::support::oidc_provider::{self, Behaviour, OidcProvider};
use crate::support::{self, TestProxy};

/// 32 bytes, base64: the tests' cookie key (so a test can read a session back).
pub(crate) const COOKIE_KEY: &str = "YXV0aG1kLXByb3h5IHRlc3QgY29va2llIGtleSAzMmI=";
/// Where an authorization request sends a person to sign in from.
const RETURN_TO: &str = "/oauth2/authorize?client_id=my-cli&state=af0ifjsldkj&scope=offers%3Aread";
pub(crate) const PASSWORD: &str = "correct horse battery staple";

/// An argon2id PHC string of `password`, with small parameters (tests only).
fn hash(password: &str) -> String {
    let params = Params::new(256, 1, 1, None).unwrap();
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_with_salt(password.as_bytes(), b"0123456789abcdef")
        .unwrap()
        .to_string()
}

/// The example config with a `login:` section of `providers` (YAML list items,
/// indented four spaces).
pub(crate) fn yaml(providers: &str) -> String {
    let example = support::example_without("login");
    format!(
        "{example}
login:
  cookie_key: {COOKIE_KEY}
  session_ttl: 12h
  providers:
{providers}
  tiers:
    default: free
    rules:
      - {{email_domain: example.com, tier: verified}}
      - {{org: acme, tier: verified}}
      - {{team: acme/platform, tier: verified}}
"
    )
}

pub(crate) fn static_demo() -> String {
    format!(
        "    - id: demo
      kind: static
      display_name: Demo accounts
      users:
        - username: ada
          password_hash: \"{}\"
          email: ada@example.com
          name: Ada Lovelace
        - username: bob
          password_hash: \"{}\"
",
        hash(PASSWORD),
        hash("bob's own password")
    )
}

pub(crate) fn oidc(idp: &OidcProvider) -> String {
    format!(
        "    - id: corp
      kind: oidc
      display_name: Corp SSO
      issuer: {}
      client_id: {}
      client_secret: \"{}\"
",
        idp.issuer,
        oidc_provider::CLIENT_ID,
        oidc_provider::CLIENT_SECRET
    )
}

fn github(gh: &GithubApi) -> String {
    format!(
        "    - id: gh
      kind: github
      client_id: {}
      client_secret: \"{}\"
      orgs: [acme]
      teams: [acme/platform]
      web_url: {}
      api_url: {}
",
        github_api::CLIENT_ID,
        github_api::CLIENT_SECRET,
        gh.web_url,
        gh.api_url
    )
}

/// A browser: keeps cookies, follows no redirect by itself.
pub(crate) struct Browser {
    client: reqwest::Client,
    jar: Arc<Jar>,
}

impl Browser {
    pub(crate) fn new() -> Browser {
        let jar = Arc::new(Jar::default());
        let client = reqwest::Client::builder()
            .no_proxy()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Browser { client, jar }
    }

    pub(crate) async fn get(&self, url: &str) -> reqwest::Response {
        self.client.get(url).send().await.unwrap()
    }

    pub(crate) async fn post(&self, url: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        self.client.post(url).form(fields).send().await.unwrap()
    }

    /// Follows redirects from `url` until an answer that is not one, or one back
    /// to the authorization endpoint (which is not this test's business): that
    /// answer, and the URLs visited on the way.
    async fn follow(&self, url: &str) -> (reqwest::Response, Vec<String>) {
        let mut visited = vec![url.to_owned()];
        let mut response = self.get(url).await;
        for _ in 0..10 {
            if !response.status().is_redirection() {
                break;
            }
            let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
            if location.starts_with("/oauth2/authorize") {
                break;
            }
            let next = response.url().join(&location).unwrap().to_string();
            visited.push(next.clone());
            response = self.get(&next).await;
        }
        (response, visited)
    }

    /// The cookies it would send to `url`.
    fn cookies(&self, url: &str) -> String {
        self.jar
            .cookies(&url.parse().unwrap())
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

/// The person a later request from `browser` is signed in as, read by the
/// library's own `Login::session` (another replica's, sharing the cookie key).
fn session_of(yaml: &str, proxy: &TestProxy, browser: &Browser) -> Option<Person> {
    let config = config_of(yaml, &proxy.url);
    let login = Login::new(
        &config.login,
        &authmd_proxy::http_client::https_client(),
        None,
    )
    .unwrap();
    let mut headers = http::HeaderMap::new();
    let cookies = browser.cookies(&proxy.url);
    if !cookies.is_empty() {
        headers.insert(http::header::COOKIE, cookies.parse().unwrap());
    }
    login.session(&headers, unix_now())
}

fn config_of(yaml: &str, public_url: &str) -> Config {
    let overrides = Overrides {
        public_url: Some(public_url.to_owned()),
        data_dir: Some(std::env::temp_dir()),
        ..Overrides::default()
    };
    Config::from_yaml_str(yaml, "test.yaml", &overrides, &|_| None).unwrap()
}

/// The value of the form's hidden CSRF field.
pub(crate) fn csrf_of(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[start..].split('"').next().unwrap().to_owned()
}

fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn sets_session(response: &reqwest::Response) -> bool {
    set_cookies(response)
        .iter()
        .any(|c| c.starts_with("__Host-authmd-session=") && !c.contains("Max-Age=0"))
}

pub(crate) fn assert_page(response: &reqwest::Response, status: u16) {
    assert_eq!(response.status().as_u16(), status, "{:?}", response.url());
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.starts_with("default-src 'none'; style-src 'sha256-"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["x-content-type-options"], "nosniff");
}

/// The sign-in page of `proxy` shown to `browser`, and its CSRF token.
async fn sign_in_page(proxy: &TestProxy, browser: &Browser) -> String {
    let page = browser
        .get(&format!(
            "{}?return_to={}",
            proxy.url("/oauth2/login"),
            urlencode(RETURN_TO)
        ))
        .await;
    assert_page(&page, 200);
    csrf_of(&page.text().await.unwrap())
}

pub(crate) fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn a_static_account_signs_in_and_a_wrong_password_or_unknown_user_get_one_answer() {
    let yaml = yaml(&static_demo());
    let proxy = TestProxy::start(&yaml, None).await;
    let browser = Browser::new();
    let csrf = sign_in_page(&proxy, &browser).await;
    let login = proxy.url("/oauth2/login");
    let attempt = |username: &'static str, password: &'static str| {
        let csrf = csrf.clone();
        let browser = &browser;
        let login = login.clone();
        async move {
            let fields = [
                ("provider", "demo"),
                ("username", username),
                ("password", password),
                ("csrf", csrf.as_str()),
                ("return_to", RETURN_TO),
            ];
            browser.post(&login, &fields).await
        }
    };

    let wrong = attempt("ada", "not her password").await;
    assert_page(&wrong, 403);
    assert!(!sets_session(&wrong));
    let wrong = wrong.text().await.unwrap();
    let unknown = attempt("nobody", "not her password").await;
    assert_page(&unknown, 403);
    assert!(!sets_session(&unknown));
    let unknown = unknown.text().await.unwrap();
    assert!(wrong.contains("Wrong username or password."), "{wrong}");
    // The same page, but for the username typed and the form's fresh CSRF token
    // (which carries its time: on a slow machine the two may differ).
    let same = |page: &str| page.replace(&csrf_of(page), "CSRF");
    assert_eq!(
        same(&wrong).replace("value=\"ada\"", "value=\"nobody\""),
        same(&unknown),
        "the same page for a wrong password and an unknown user"
    );
    assert!(session_of(&yaml, &proxy, &browser).is_none());

    let right = attempt("ada", PASSWORD).await;
    assert_eq!(right.status(), 303);
    assert_eq!(right.headers()[LOCATION], RETURN_TO);
    let cookie = set_cookies(&right)
        .into_iter()
        .find(|c| c.starts_with("__Host-authmd-session="))
        .unwrap();
    for attribute in [
        "HttpOnly",
        "Secure",
        "Path=/",
        "SameSite=Lax",
        "Max-Age=43200",
    ] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("ada"), "the session is sealed: {cookie}");

    let person = session_of(&yaml, &proxy, &browser).expect("signed in");
    assert_eq!(person.provider, "demo");
    assert_eq!(person.subject, "ada");
    assert_eq!(person.principal(), "user:demo:ada");
    assert_eq!(person.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(person.email.as_deref(), Some("ada@example.com"));
    let config = config_of(&yaml, &proxy.url);
    assert_eq!(
        config.tiers.get(person.tier).name,
        "verified",
        "by email domain"
    );

    // The proxy itself reads the session on the next request.
    let again = browser.get(&proxy.url("/oauth2/login")).await;
    assert_page(&again, 200);
    let text = again.text().await.unwrap();
    assert!(
        text.contains("You are signed in as <strong>Ada Lovelace</strong>"),
        "{text}"
    );
    // Another browser is not signed in.
    assert!(session_of(&yaml, &proxy, &Browser::new()).is_none());
}

#[tokio::test]
async fn failed_password_sign_ins_are_limited_per_address() {
    let yaml = yaml(&static_demo());
    let proxy = TestProxy::start(&yaml, None).await;
    let browser = Browser::new();
    let login = proxy.url("/oauth2/login");
    let attempt = |password: &'static str| {
        let (browser, proxy, login) = (&browser, &proxy, login.clone());
        async move {
            // A success ends the round trip: each attempt starts from the page.
            let csrf = sign_in_page(proxy, browser).await;
            let fields = [
                ("provider", "demo"),
                ("username", "bob"),
                ("password", password),
                ("csrf", csrf.as_str()),
            ];
            browser.post(&login, &fields).await
        }
    };
    // Successes do not count.
    for _ in 0..3 {
        assert_eq!(attempt("bob's own password").await.status(), 303);
    }
    for _ in 0..10 {
        assert_eq!(attempt("guess").await.status(), 403);
    }
    let limited = attempt("bob's own password").await;
    assert_page(&limited, 429);
    let retry = limited.headers()["retry-after"].to_str().unwrap();
    assert!(retry.parse::<u32>().unwrap() > 0, "{retry}");
    assert!(!sets_session(&limited));
}

#[tokio::test]
async fn a_password_form_without_its_csrf_token_is_refused() {
    let yaml = yaml(&static_demo());
    let proxy = TestProxy::start(&yaml, None).await;
    let login = proxy.url("/oauth2/login");
    let alice = Browser::new();
    let token = sign_in_page(&proxy, &alice).await;
    let mallory = Browser::new();
    let mallorys = sign_in_page(&proxy, &mallory).await;
    let form = |csrf: &str| {
        vec![
            ("provider", "demo".to_owned()),
            ("username", "ada".to_owned()),
            ("password", PASSWORD.to_owned()),
            ("csrf", csrf.to_owned()),
        ]
    };
    let stranger = Browser::new();
    let cases = [
        ("no token", &alice, form("")[..3].to_vec()),
        ("another browser's token", &alice, form(&mallorys)),
        ("a token without its cookie", &stranger, form(&token)),
        (
            "a forged token",
            &alice,
            form("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ),
    ];
    for (case, browser, fields) in cases {
        let refused = browser
            .client
            .post(&login)
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_page(&refused, 403);
        assert!(!sets_session(&refused), "{case}");
        let text = refused.text().await.unwrap();
        assert!(text.contains("Sign-in form expired"), "{case}: {text}");
    }
    assert!(session_of(&yaml, &proxy, &alice).is_none());
    // The same form with its token signs in.
    let ok = alice
        .client
        .post(&login)
        .form(&form(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 303);
    assert!(sets_session(&ok));
}

#[tokio::test]
async fn return_to_leads_only_to_the_authorization_endpoint() {
    let idp = OidcProvider::start().await;
    let yaml = yaml(&format!("{}{}", static_demo(), oidc(&idp)));
    let proxy = TestProxy::start(&yaml, None).await;
    let browser = Browser::new();
    let login = proxy.url("/oauth2/login");
    for bad in [
        "https://evil.example/oauth2/authorize",
        "//evil.example/oauth2/authorize",
        "/\\evil.example",
        "/oauth2/authorizeX",
        "/oauth2/authorize/../../admin",
        "/api/v1/auth/keys",
        "javascript:alert(1)",
        "/agent/auth/claimX?token=clm_a",
        "/agent/auth/claim/../../admin",
        "//evil.example/agent/auth/claim",
        "/agent/auth/keys",
    ] {
        for provider in ["", "&provider=corp"] {
            let url = format!("{login}?return_to={}{provider}", urlencode(bad));
            let refused = browser.get(&url).await;
            assert_page(&refused, 400);
            assert!(refused.headers().get(LOCATION).is_none(), "{bad}");
            let text = refused.text().await.unwrap();
            assert!(text.contains("Sign-in link not valid"), "{bad}: {text}");
        }
    }
    assert_eq!(
        idp.last_authorize("state"),
        None,
        "never sent to the provider"
    );
    let csrf = sign_in_page(&proxy, &browser).await;
    let posted = browser
        .post(
            &login,
            &[
                ("provider", "demo"),
                ("username", "ada"),
                ("password", PASSWORD),
                ("csrf", &csrf),
                ("return_to", "https://evil.example/"),
            ],
        )
        .await;
    assert_page(&posted, 400);
    assert!(!sets_session(&posted));
    // The claim page is the one other place a sign-in may return to.
    let claim = "/agent/auth/claim?token=clm_abc";
    let posted = browser
        .post(
            &login,
            &[
                ("provider", "demo"),
                ("username", "ada"),
                ("password", PASSWORD),
                ("csrf", &csrf),
                ("return_to", claim),
            ],
        )
        .await;
    assert_eq!(posted.status(), 303);
    assert_eq!(posted.headers()[LOCATION], claim);
}

/// Signs in through the OIDC provider: the answer of the callback.
async fn oidc_round_trip(proxy: &TestProxy, browser: &Browser) -> (reqwest::Response, Vec<String>) {
    let start = format!(
        "{}?provider=corp&return_to={}",
        proxy.url("/oauth2/login"),
        urlencode(RETURN_TO)
    );
    browser.follow(&start).await
}

#[tokio::test]
async fn an_openid_connect_sign_in_sets_the_session_of_the_verified_person() {
    let idp = OidcProvider::start().await;
    let yaml = yaml(&format!("{}{}", static_demo(), oidc(&idp)));
    let proxy = TestProxy::start(&yaml, None).await;
    let browser = Browser::new();

    let (done, visited) = oidc_round_trip(&proxy, &browser).await;
    assert_eq!(done.status(), 303, "{visited:?}");
    assert_eq!(done.headers()[LOCATION], RETURN_TO);
    assert!(sets_session(&done));
    assert!(
        set_cookies(&done)
            .iter()
            .any(|c| c.starts_with("__Host-authmd-login=;") && c.contains("Max-Age=0")),
        "the round trip's cookie is cleared"
    );
    assert!(
        visited[1].starts_with(&format!("{}/authorize?", idp.issuer)),
        "{visited:?}"
    );
    assert!(
        visited[2].starts_with(&proxy.url("/oauth2/callback/corp?code=")),
        "{visited:?}"
    );
    // What the provider was asked.
    assert_eq!(idp.last_authorize("response_type").as_deref(), Some("code"));
    assert_eq!(
        idp.last_authorize("code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        idp.last_authorize("scope").as_deref(),
        Some("openid email profile")
    );
    assert_eq!(
        idp.last_authorize("redirect_uri"),
        Some(proxy.url("/oauth2/callback/corp"))
    );
    assert!(idp.last_authorize("nonce").is_some_and(|n| n.len() >= 43));
    assert!(idp.last_authorize("state").is_some_and(|s| s.len() >= 43));

    let person = session_of(&yaml, &proxy, &browser).expect("signed in");
    assert_eq!(person.principal(), "user:corp:248289761001");
    assert_eq!(person.name.as_deref(), Some("Jane Doe"));
    assert_eq!(person.email.as_deref(), Some("jane@example.com"));
    assert!(person.groups.is_empty());
    let config = config_of(&yaml, &proxy.url);
    assert_eq!(config.tiers.get(person.tier).name, "verified");

    // An email the provider did not verify is not kept (nor earns its tier).
    idp.behave(Behaviour {
        email_verified: false,
        subject: "other".into(),
        ..Behaviour::default()
    });
    let second = Browser::new();
    let (done, _) = oidc_round_trip(&proxy, &second).await;
    assert_eq!(done.status(), 303);
    let person = session_of(&yaml, &proxy, &second).unwrap();
    assert_eq!(person.subject, "other");
    assert_eq!(person.email, None);
    assert_eq!(config.tiers.get(person.tier).name, "free");
}

#[tokio::test]
async fn id_tokens_with_the_wrong_nonce_audience_or_signature_are_refused() {
    let idp = OidcProvider::start().await;
    let yaml = yaml(&oidc(&idp));
    let proxy = TestProxy::start(&yaml, None).await;
    let cases = [
        (
            "wrong nonce",
            Behaviour {
                nonce: Some("a-nonce-from-another-sign-in".into()),
                ..Behaviour::default()
            },
        ),
        (
            "wrong audience",
            Behaviour {
                audience: Some(serde_json::json!("another-client")),
                ..Behaviour::default()
            },
        ),
        (
            "several audiences, no azp",
            Behaviour {
                audience: Some(serde_json::json!([
                    oidc_provider::CLIENT_ID,
                    "another-client"
                ])),
                ..Behaviour::default()
            },
        ),
        (
            "bad signature",
            Behaviour {
                bad_signature: true,
                ..Behaviour::default()
            },
        ),
    ];
    for (case, behaviour) in cases {
        idp.behave(behaviour);
        let browser = Browser::new();
        let issued = idp.issued.load(Ordering::SeqCst);
        let (refused, visited) = oidc_round_trip(&proxy, &browser).await;
        assert_eq!(
            idp.issued.load(Ordering::SeqCst),
            issued + 1,
            "{case}: {visited:?}"
        );
        assert_page(&refused, 502);
        assert!(!sets_session(&refused), "{case}");
        let text = refused.text().await.unwrap();
        assert!(text.contains("could not be verified"), "{case}: {text}");
        assert!(session_of(&yaml, &proxy, &browser).is_none(), "{case}");
    }
    // The person declines at the provider.
    idp.behave(Behaviour {
        deny: true,
        ..Behaviour::default()
    });
    let browser = Browser::new();
    let (declined, _) = oidc_round_trip(&proxy, &browser).await;
    assert_page(&declined, 403);
    assert!(declined.text().await.unwrap().contains("Sign-in cancelled"));
    // And the same provider, behaving, signs people in.
    idp.behave(Behaviour::default());
    let (done, _) = oidc_round_trip(&proxy, &browser).await;
    assert_eq!(done.status(), 303);
    assert!(session_of(&yaml, &proxy, &browser).is_some());
}

/// The library's sign-in on a socket of its own, answering at the unix time of
/// the wall clock plus `offset` seconds.
async fn login_server(yaml: &str, offset: Arc<AtomicI64>) -> String {
    let origin = Arc::new(std::sync::OnceLock::<String>::new());
    let login_origin = origin.clone();
    let login = Arc::new(std::sync::OnceLock::<Login>::new());
    let serving = login.clone();
    let addr = support::upstream(move |request| {
        let (login, origin, offset) = (serving.clone(), login_origin.clone(), offset.clone());
        async move {
            let now = unix_now() + offset.load(Ordering::SeqCst);
            let peer: IpAddr = "127.0.0.1".parse().unwrap();
            let login = login.get().unwrap();
            login
                .handle(request, origin.get().unwrap(), peer, now)
                .await
        }
    })
    .await;
    let url = format!("http://{addr}");
    let config = config_of(yaml, &url);
    let built = Login::new(
        &config.login,
        &authmd_proxy::http_client::https_client(),
        None,
    )
    .unwrap();
    assert!(login.set(built).is_ok());
    origin.set(url.clone()).unwrap();
    url
}

#[tokio::test]
async fn a_login_state_older_than_ten_minutes_is_refused() {
    let idp = OidcProvider::start().await;
    let yaml = yaml(&oidc(&idp));
    let offset = Arc::new(AtomicI64::new(0));
    let url = login_server(&yaml, offset.clone()).await;
    let start = format!("{url}/oauth2/login?return_to={}", urlencode(RETURN_TO));
    for (late, expect) in [(0, 303), (599, 303), (601, 400)] {
        let browser = Browser::new();
        offset.store(0, Ordering::SeqCst);
        // The only provider is not static: the page sends the browser straight to it.
        let to_idp = browser.get(&start).await;
        assert_eq!(to_idp.status(), 303);
        let location = to_idp.headers()[LOCATION].to_str().unwrap().to_owned();
        assert!(location.starts_with(&idp.issuer), "{location}");
        let back = browser.get(&location).await;
        assert_eq!(back.status(), 302);
        let callback = back.headers()[LOCATION].to_str().unwrap().to_owned();
        offset.store(late, Ordering::SeqCst);
        let answer = browser.get(&callback).await;
        assert_eq!(answer.status().as_u16(), expect, "{late} s later");
        if expect == 400 {
            assert_page(&answer, 400);
            assert!(!sets_session(&answer));
            assert!(answer.text().await.unwrap().contains("Sign-in expired"));
        } else {
            assert!(sets_session(&answer));
        }
    }
    // A state for another browser (its cookie missing) is refused the same way.
    let browser = Browser::new();
    offset.store(0, Ordering::SeqCst);
    let to_idp = browser.get(&start).await;
    let location = to_idp.headers()[LOCATION].to_str().unwrap().to_owned();
    let back = browser.get(&location).await;
    let callback = back.headers()[LOCATION].to_str().unwrap().to_owned();
    let stranger = Browser::new().get(&callback).await;
    assert_page(&stranger, 400);
}

pub(crate) fn octocat() -> Account {
    Account {
        id: 583_231,
        login: "octocat".into(),
        name: Some("The Octocat".into()),
        emails: vec![
            ("octocat@users.noreply.github.com".into(), false, true),
            ("octocat@github.com".into(), true, true),
        ],
        orgs: vec!["github".into(), "ACME".into()],
        teams: Vec::new(),
    }
}

#[tokio::test]
async fn a_github_sign_in_keeps_the_allowed_organizations_and_refuses_outsiders() {
    let gh = GithubApi::start(octocat()).await;
    let yaml = yaml(&github(&gh));
    let proxy = TestProxy::start(&yaml, None).await;
    let config = config_of(&yaml, &proxy.url);
    let start = format!(
        "{}?return_to={}",
        proxy.url("/oauth2/login"),
        urlencode(RETURN_TO)
    );

    // The only provider: the sign-in page sends the browser straight to GitHub.
    let browser = Browser::new();
    let (done, visited) = browser.follow(&start).await;
    assert!(
        visited[1].starts_with(&format!("{}/login/oauth/authorize?", gh.web_url)),
        "{visited:?}"
    );
    assert!(
        visited[1].contains("scope=read%3Auser+user%3Aemail+read%3Aorg"),
        "{visited:?}"
    );
    assert!(
        visited[1].contains("code_challenge_method=S256"),
        "{visited:?}"
    );
    assert_eq!(done.status(), 303, "{visited:?}");
    assert_eq!(done.headers()[LOCATION], RETURN_TO);
    let person = session_of(&yaml, &proxy, &browser).expect("signed in");
    assert_eq!(person.principal(), "user:gh:583231");
    assert_eq!(person.name.as_deref(), Some("The Octocat"));
    assert_eq!(
        person.email.as_deref(),
        Some("octocat@github.com"),
        "the verified primary"
    );
    assert_eq!(
        person.groups,
        ["acme"],
        "only the organizations that matter here"
    );
    assert_eq!(config.tiers.get(person.tier).name, "verified");

    // Without a place to return to, the sign-in ends on a page that says who is
    // signed in (and does not start another round trip).
    let browser = Browser::new();
    let (page, visited) = browser.follow(&proxy.url("/oauth2/login")).await;
    assert_page(&page, 200);
    assert_eq!(
        visited.len(),
        4,
        "login, GitHub, callback, login: {visited:?}"
    );
    let text = page.text().await.unwrap();
    assert!(
        text.contains("You are signed in as <strong>The Octocat</strong>"),
        "{text}"
    );

    // A member of the allowed team only, listed on the second page of teams.
    let mut teams: Vec<(String, String)> = (0..120)
        .map(|i| ("elsewhere".to_owned(), format!("team-{i}")))
        .collect();
    teams.push(("acme".into(), "platform".into()));
    gh.sign_in_as(Account {
        id: 1,
        login: "teammate".into(),
        name: None,
        emails: vec![("mate@example.org".into(), true, false)],
        orgs: Vec::new(),
        teams,
    });
    let browser = Browser::new();
    let (done, visited) = browser.follow(&start).await;
    assert_eq!(done.status(), 303, "{visited:?}");
    let person = session_of(&yaml, &proxy, &browser).expect("signed in");
    assert_eq!(person.principal(), "user:gh:1");
    assert_eq!(
        person.name.as_deref(),
        Some("teammate"),
        "the login when no name"
    );
    assert_eq!(person.email, None, "an unverified email is not kept");
    assert_eq!(person.groups, ["acme/platform"]);

    // Someone in neither.
    gh.sign_in_as(Account {
        id: 2,
        login: "outsider".into(),
        orgs: vec!["github".into()],
        teams: vec![("acme".into(), "sales".into())],
        ..octocat()
    });
    let browser = Browser::new();
    let (refused, visited) = browser.follow(&start).await;
    assert_page(&refused, 403);
    assert!(!sets_session(&refused), "{visited:?}");
    let text = refused.text().await.unwrap();
    assert!(
        text.contains("not a member of an organization or team allowed"),
        "{text}"
    );
    assert!(session_of(&yaml, &proxy, &browser).is_none());
}

#[tokio::test]
async fn no_password_cookie_code_or_client_secret_reaches_a_log_line() {
    let idp = OidcProvider::start().await;
    let yaml = yaml(&format!("{}{}", static_demo(), oidc(&idp)))
        .replace("  level: info ", "  level: debug ")
        .replace("  access: debug ", "  access: info ");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_authmd-proxy"));
    command
        .args([
            "run",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("RUST_LOG");
    let proxy = support::Binary::launch(command).await;
    let url = |path: &str| format!("{}{path}", proxy.url);
    let mut secrets: Vec<String> = vec![
        PASSWORD.into(),
        "a wrong password of some length".into(),
        oidc_provider::CLIENT_SECRET.into(),
        urlencode(oidc_provider::CLIENT_SECRET),
        COOKIE_KEY.into(),
    ];

    // A password sign-in, a wrong one first.
    let browser = Browser::new();
    let page = browser
        .get(&format!(
            "{}?return_to={}",
            url("/oauth2/login"),
            urlencode(RETURN_TO)
        ))
        .await;
    let csrf = csrf_of(&page.text().await.unwrap());
    for password in [secrets[1].clone(), PASSWORD.to_owned()] {
        let fields = [
            ("provider", "demo"),
            ("username", "ada"),
            ("password", password.as_str()),
            ("csrf", csrf.as_str()),
        ];
        browser.post(&url("/oauth2/login"), &fields).await;
    }
    // An OpenID Connect sign-in, step by step to see its code and state.
    let oidc_browser = Browser::new();
    let start = format!(
        "{}?provider=corp&return_to={}",
        url("/oauth2/login"),
        urlencode(RETURN_TO)
    );
    let to_idp = oidc_browser.get(&start).await;
    let login_cookie = set_cookies(&to_idp)[0].clone();
    let location = to_idp.headers()[LOCATION].to_str().unwrap().to_owned();
    let back = oidc_browser.get(&location).await;
    let callback = back.headers()[LOCATION].to_str().unwrap().to_owned();
    let done = oidc_browser.get(&callback).await;
    assert_eq!(done.status(), 303);
    let query: Vec<(String, String)> =
        form_urlencoded::parse(callback.split_once('?').unwrap().1.as_bytes())
            .into_owned()
            .collect();
    for (name, value) in &query {
        assert!(name == "code" || name == "state", "{name}");
        secrets.push(value.clone());
    }
    secrets.push(idp.last_authorize("nonce").unwrap());
    secrets.push(idp.last_authorize("code_challenge").unwrap());
    let cookie_value = |set_cookie: &str| {
        set_cookie
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned()
    };
    secrets.push(cookie_value(&login_cookie));
    for response in [&done] {
        for cookie in set_cookies(response) {
            let value = cookie_value(&cookie);
            if !value.is_empty() {
                secrets.push(value);
            }
        }
    }
    for browser in [&browser, &oidc_browser] {
        for pair in browser.cookies(&proxy.url).split("; ") {
            secrets.push(pair.split_once('=').unwrap().1.to_owned());
        }
    }
    // The scan can see: a canary in a refused path is logged at debug.
    let canary = "login-hygiene-canary-7f3a9c";
    browser.get(&url(&format!("/no/such/{canary}"))).await;
    let mut lines = Vec::new();
    for _ in 0..200 {
        lines.extend(proxy.log_lines());
        if lines.iter().any(|l| l.contains(canary)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        lines.iter().any(|l| l.contains(canary)),
        "the canary was not logged"
    );
    assert!(lines.iter().any(|l| l.contains("signed in")), "{lines:#?}");
    for line in &lines {
        for secret in &secrets {
            assert!(secret.len() >= 8, "not a secret: {secret}");
            assert!(
                !line.contains(secret.as_str()),
                "a secret in the log:\n{line}"
            );
        }
    }
}

#[tokio::test]
async fn a_sign_in_outlives_a_reload_and_ends_with_its_provider() {
    let idp = OidcProvider::start().await;
    // No cookie key: with SQLite it is generated once into the data directory.
    let without_key =
        |providers: &str| yaml(providers).replace(&format!("  cookie_key: {COOKIE_KEY}\n"), "");
    let first = without_key(&static_demo());
    let proxy = TestProxy::start(&first, None).await;
    let browser = Browser::new();
    let csrf = sign_in_page(&proxy, &browser).await;
    let fields = [
        ("provider", "demo"),
        ("username", "ada"),
        ("password", PASSWORD),
        ("csrf", csrf.as_str()),
    ];
    assert_eq!(
        browser
            .post(&proxy.url("/oauth2/login"), &fields)
            .await
            .status(),
        303
    );
    let signed_in =
        |text: &str| text.contains("You are signed in as <strong>Ada Lovelace</strong>");
    let page = browser.get(&proxy.url("/oauth2/login")).await;
    assert!(signed_in(&page.text().await.unwrap()));

    // Another provider added: the sign-in stays.
    proxy
        .reload(&without_key(&format!("{}{}", static_demo(), oidc(&idp))))
        .await;
    let page = browser.get(&proxy.url("/oauth2/login")).await;
    assert!(signed_in(&page.text().await.unwrap()));

    // Its provider removed: it ends (and the only provider left is offered).
    proxy.reload(&without_key(&oidc(&idp))).await;
    let page = browser.get(&proxy.url("/oauth2/login")).await;
    assert_eq!(page.status(), 303);
    assert!(
        page.headers()[LOCATION]
            .to_str()
            .unwrap()
            .starts_with(&idp.issuer)
    );
}
