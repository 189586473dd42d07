//! Secret hygiene of the interactive flow: the real binary, logging everything at
//! debug (its own lines, its dependencies', the access log, as JSON), with a
//! person's sign-in (a static account, a fixed cookie key) and the authorization
//! server for people (`oauth:`), is driven through every step that handles a
//! secret: a wrong and a right password, the sign-in and consent forms (their CSRF
//! tokens, the sealed pending request), the code at the loopback redirect, the
//! token exchange with the PKCE verifier, two refreshes (rotation), a refresh token
//! used again after the grace (the family revoked), a code used again, an RFC 7009
//! revocation, an RFC 7591 registration of a confidential client and its secret at
//! the token endpoint (HTTP Basic), and a wrong verifier.
//!
//! Every secret seen on the way is collected: the passwords, the cookie key, every
//! cookie the proxy set, the codes, the verifiers, every access and refresh token,
//! the client secret (and the Basic header that carried it), the forms' CSRF
//! tokens and the sealed request. Then no log line (startup included) and no metric
//! may contain one, nor its random part without its prefix; and the store's files
//! hold none of them (codes, refresh tokens and client secrets are stored hashed).
//! The scan proves it can see with the canary of `secret_hygiene`.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::SET_COOKIE;
use serde_json::{Value, json};

use crate::authorization_code::{VERIFIER, challenge, consent_fields, location, param, query_of};
use crate::login::{Browser, COOKIE_KEY, PASSWORD, csrf_of, static_demo, urlencode};
use crate::secret_hygiene::{
    Secrets, assert_log_clean, assert_metrics_clean, assert_not_at_rest, ok,
};
use crate::support::{self, Binary, client};

/// The declared public client's redirect: loopback, on a port it did not register.
const REDIRECT: &str = "http://127.0.0.1:51004/callback";
/// The registered confidential client's redirect.
const DCR_REDIRECT: &str = "http://127.0.0.1:33418/oauth/callback";
const WRONG_PASSWORD: &str = "not ada's password, but close";

fn config(upstream: &str) -> String {
    format!(
        r#"
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
upstream: {{url: "{upstream}"}}
log: {{level: debug, format: json, access: info}}
credentials:
  headers:
    - {{name: X-API-Key}}
  key_prefixes: [ak_live]
scopes:
  offers:read: Read
  offers:write: Write
tiers:
  - {{name: free, scopes: [offers:read, offers:write], rate_limits: [1000/min]}}
  - {{name: verified, scopes: [offers:read, offers:write]}}
tokens:
  ttl: 1h
login:
  cookie_key: {COOKIE_KEY}
  session_ttl: 12h
  providers:
{providers}  tiers:
    default: free
oauth:
  refresh_reuse_grace: 0s
  clients:
    - client_id: my-cli
      client_name: My CLI
      redirect_uris: [http://127.0.0.1/callback]
      scopes: [offers:read, offers:write]
routes:
  - {{path: /offers, methods: [GET], scopes: [offers:read]}}
"#,
        providers = static_demo()
    )
}

/// The value of each cookie `response` sets (not the ones it clears): all secrets.
fn record_cookies(secrets: &mut Secrets, response: &reqwest::Response) -> usize {
    let mut set = 0;
    for header in response.headers().get_all(SET_COOKIE) {
        let pair = header.to_str().unwrap().split(';').next().unwrap();
        let (_, value) = pair.split_once('=').unwrap();
        if !value.is_empty() {
            secrets.add(value);
            set += 1;
        }
    }
    set
}

/// The authorization request of `client_id` to `redirect`, with the challenge of
/// `verifier`.
fn authorize_url(base: &str, client_id: &str, redirect: &str, verifier: &str) -> String {
    let challenge = challenge(verifier);
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", redirect),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", "hygiene-state"),
            ("scope", "offers:read"),
        ])
        .finish();
    format!("{base}/oauth2/authorize?{query}")
}

/// Approves the consent page at `authorize`, collecting its CSRF token and sealed
/// request, and returns the code the client gets.
async fn consent(base: &str, browser: &Browser, authorize: &str, secrets: &mut Secrets) -> String {
    let page = browser.get(authorize).await;
    assert_eq!(page.status(), 200, "the consent page");
    record_cookies(secrets, &page);
    let (request, csrf) = consent_fields(&page.text().await.unwrap());
    secrets.add(&request);
    secrets.add(&csrf);
    let fields = [
        ("request", request.as_str()),
        ("csrf", csrf.as_str()),
        ("decision", "approve"),
    ];
    let approved = browser
        .post(&format!("{base}/oauth2/consent"), &fields)
        .await;
    record_cookies(secrets, &approved);
    code_of(&location(&approved), secrets)
}

/// The code in a redirect to the client, collected.
fn code_of(redirect: &str, secrets: &mut Secrets) -> String {
    let code = param(&query_of(redirect), "code").unwrap();
    assert!(code.starts_with("ac_"), "{redirect}");
    secrets.add(&code);
    code
}

/// A token request: the form, with HTTP Basic when `basic` names a client and its
/// secret.
async fn token(base: &str, fields: &[(&str, &str)], basic: Option<(&str, &str)>) -> (u16, Value) {
    let mut request = client().post(format!("{base}/oauth2/token")).form(fields);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The access and refresh token of a successful token answer, collected.
fn tokens_of(answer: &(u16, Value), secrets: &mut Secrets) -> (String, String) {
    assert_eq!(answer.0, 200, "{}", answer.1);
    let access = answer.1["access_token"].as_str().unwrap().to_owned();
    let refresh = answer.1["refresh_token"].as_str().unwrap().to_owned();
    secrets.add(&access);
    secrets.add(&refresh);
    (access, refresh)
}

/// The exchange of `code` by the declared public client.
fn exchange<'a>(code: &'a str, verifier: &'a str) -> [(&'a str, &'a str); 5] {
    [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("client_id", "my-cli"),
        ("code_verifier", verifier),
    ]
}

fn refresh(refresh_token: &str) -> [(&str, &str); 3] {
    [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", "my-cli"),
    ]
}

/// The status of `GET /offers` with `access_token`.
async fn offers(base: &str, access_token: &str) -> u16 {
    client()
        .get(format!("{base}/offers"))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn no_secret_of_the_interactive_flow_reaches_a_log_line_or_a_metric() {
    let upstream = support::upstream(|_request| async {
        http::Response::new(authmd_proxy::body::Body::full("{}"))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config(&format!("http://{upstream}"))).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_authmd-proxy"));
    command
        .args(["run", "--config", path.to_str().unwrap(), "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("RUST_LOG");
    let mut proxy = Binary::launch(command).await;
    let base = proxy.url.clone();
    let url = |path: &str| format!("{base}{path}");
    let http = client();
    let mut secrets = Secrets::default();
    for secret in [PASSWORD, WRONG_PASSWORD, COOKIE_KEY] {
        secrets.add(secret);
        // As a form or a query carries it.
        secrets.add(&urlencode(secret));
    }
    // The cookie key's bytes too (this test's key is printable), and as hex.
    let key = STANDARD.decode(COOKIE_KEY).unwrap();
    secrets.add(std::str::from_utf8(&key).unwrap());
    secrets.add(&key.iter().map(|b| format!("{b:02x}")).collect::<String>());

    // The authorization request sends the browser to sign in.
    let browser = Browser::new();
    let authorize = authorize_url(&base, "my-cli", REDIRECT, VERIFIER);
    let to_login = browser.get(&authorize).await;
    record_cookies(&mut secrets, &to_login);
    let to_login = location(&to_login);
    assert!(to_login.starts_with("/oauth2/login?"), "{to_login}");
    let page = browser.get(&url(&to_login)).await;
    assert_eq!(page.status(), 200);
    assert_eq!(
        record_cookies(&mut secrets, &page),
        1,
        "the sign-in page sets the login cookie"
    );
    let csrf = csrf_of(&page.text().await.unwrap());
    secrets.add(&csrf);
    let return_to = param(&query_of(&url(&to_login)), "return_to").unwrap();

    // A wrong password, then the right one.
    for (password, status) in [(WRONG_PASSWORD, 403), (PASSWORD, 303)] {
        let fields = [
            ("provider", "demo"),
            ("username", "ada"),
            ("password", password),
            ("csrf", csrf.as_str()),
            ("return_to", return_to.as_str()),
        ];
        let answer = browser.post(&url("/oauth2/login"), &fields).await;
        assert_eq!(answer.status().as_u16(), status, "{password}");
        let set = record_cookies(&mut secrets, &answer);
        if status == 303 {
            assert_eq!(set, 1, "the session cookie");
        } else {
            let page = answer.text().await.unwrap();
            assert!(page.contains("Wrong username or password."), "{page}");
        }
    }

    // Consent, the code at the loopback redirect, the exchange with the verifier.
    let code = consent(&base, &browser, &authorize, &mut secrets).await;
    secrets.add(VERIFIER);
    let exchanged = token(&base, &exchange(&code, VERIFIER), None).await;
    let (access, first_refresh) = tokens_of(&exchanged, &mut secrets);
    assert_eq!(offers(&base, &access).await, 200);

    // Two refreshes (each rotates), then the first refresh token again: with no
    // grace, the family is revoked.
    let second = token(&base, &refresh(&first_refresh), None).await;
    let (_, second_refresh) = tokens_of(&second, &mut secrets);
    let third = token(&base, &refresh(&second_refresh), None).await;
    let (third_access, third_refresh) = tokens_of(&third, &mut secrets);
    assert_ne!(third_refresh, second_refresh, "rotated");
    assert_eq!(offers(&base, &third_access).await, 200);
    let (status, reused) = token(&base, &refresh(&first_refresh), None).await;
    assert_eq!(status, 400, "{reused}");
    assert_eq!(reused["code"], "REFRESH_TOKEN_REUSED");
    assert_eq!(token(&base, &refresh(&third_refresh), None).await.0, 400);
    assert_eq!(offers(&base, &third_access).await, 401, "revoked");

    // The code again.
    let (status, replayed) = token(&base, &exchange(&code, VERIFIER), None).await;
    assert_eq!(status, 400, "{replayed}");
    assert_eq!(replayed["code"], "CODE_REPLAYED");

    // A new grant (the consent is remembered: straight back with a code), revoked
    // with RFC 7009 by its refresh token.
    let again = browser.get(&authorize).await;
    record_cookies(&mut secrets, &again);
    let code = code_of(&location(&again), &mut secrets);
    let exchanged = token(&base, &exchange(&code, VERIFIER), None).await;
    let (access, refresh_token) = tokens_of(&exchanged, &mut secrets);
    let revoked = http
        .post(url("/oauth2/revoke"))
        .form(&[("token", refresh_token.as_str()), ("client_id", "my-cli")])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(token(&base, &refresh(&refresh_token), None).await.0, 400);
    assert_eq!(offers(&base, &access).await, 401, "revoked with its family");

    // A confidential client registers (RFC 7591), goes through the flow, and
    // authenticates with its secret over HTTP Basic for the code and a refresh.
    let registered = ok(
        http.post(url("/oauth2/register"))
            .json(&json!({
                "client_name": "A confidential client",
                "redirect_uris": [DCR_REDIRECT],
                "grant_types": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_method": "client_secret_basic"
            }))
            .send()
            .await
            .unwrap(),
        "register",
    )
    .await;
    let client_id = registered["client_id"].as_str().unwrap().to_owned();
    let client_secret = registered["client_secret"].as_str().unwrap().to_owned();
    assert!(client_secret.starts_with("cs_"), "{registered}");
    secrets.add(&client_secret);
    secrets.add(&STANDARD.encode(format!("{client_id}:{client_secret}")));
    let dcr_verifier = format!("hygiene-dcr-verifier-{}", "Zq8".repeat(9));
    secrets.add(&dcr_verifier);
    let dcr_authorize = authorize_url(&base, &client_id, DCR_REDIRECT, &dcr_verifier);
    let code = consent(&base, &browser, &dcr_authorize, &mut secrets).await;
    let basic = Some((client_id.as_str(), client_secret.as_str()));
    let dcr_exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", DCR_REDIRECT),
        ("code_verifier", dcr_verifier.as_str()),
    ];
    let mut without_secret = dcr_exchange.to_vec();
    without_secret.push(("client_id", client_id.as_str()));
    let (status, refused) = token(&base, &without_secret, None).await;
    assert_eq!(status, 401, "the client authenticates: {refused}");
    let exchanged = token(&base, &dcr_exchange, basic).await;
    let (access, refresh_token) = tokens_of(&exchanged, &mut secrets);
    assert_eq!(offers(&base, &access).await, 200);
    let refreshed = token(
        &base,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.as_str()),
        ],
        basic,
    )
    .await;
    let (access, _) = tokens_of(&refreshed, &mut secrets);
    assert_eq!(offers(&base, &access).await, 200);
    // A forged secret is refused, and not logged either.
    let forged = format!("cs_{}", "F".repeat(43));
    secrets.add(&forged);
    let (status, refused) = token(
        &base,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.as_str()),
        ],
        Some((&client_id, &forged)),
    )
    .await;
    assert_eq!(status, 401, "{refused}");

    // An authorization whose code comes back with the wrong verifier.
    let code = code_of(&location(&browser.get(&authorize).await), &mut secrets);
    let wrong_verifier = format!("hygiene-wrong-verifier-{}", "Wk4".repeat(9));
    secrets.add(&wrong_verifier);
    let (status, wrong) = token(&base, &exchange(&code, &wrong_verifier), None).await;
    assert_eq!(status, 400, "{wrong}");
    assert_eq!(wrong["code"], "PKCE_VERIFIER_MISMATCH");

    assert!(secrets.len() > 40, "{} secrets collected", secrets.len());
    assert_metrics_clean(&proxy, &http, &secrets).await;
    let lines = assert_log_clean(&mut proxy, &http, &secrets).await;
    // The scan read the lines of the flow, not only the canary's.
    for logged in [
        "a password sign-in failed",
        "signed in",
        "authorization code issued",
        "interactive grant issued",
        "refresh token reused after its grace",
        "authorization code replayed",
        "refresh token revoked with its family",
        "client registered",
        "authmd_proxy::access",
    ] {
        assert!(
            lines.iter().any(|line| line.contains(logged)),
            "no line says `{logged}`"
        );
    }
    // At rest: codes, refresh tokens and client secrets are stored hashed, and
    // nothing else collected here is stored at all.
    assert_not_at_rest(&dir.path().join("data"), &secrets);
}
