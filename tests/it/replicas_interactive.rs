//! The interactive flow across two replicas behind a round-robin balancer: two
//! `authmd-proxy` processes on one PostgreSQL schema, with the same login cookie
//! key, signing key and public URL, and a TCP relay in front that hands each new
//! connection to the other replica. The browser and the client open a connection
//! per request, so every request of a flow lands on the other replica from the one
//! before: the authorization request on A, the sign-in page on B, the sign-in on A,
//! the consent page on B, the approval on A, the token exchange on B, the refresh
//! on A, and so on. What one replica revokes (a refresh token at `/oauth2/revoke`,
//! the grant of a replayed code) the other refuses; a client registered on one is
//! authorized on the other, and its use is recorded in the shared store. An
//! operator's claim by sign-in goes across the replicas the same way, and a GitHub
//! sign-in started on one completes at the callback on the other.
//!
//! Needs `AUTHMD_TEST_POSTGRES_URL`; without it the test says it is skipped.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "tests: a failed step fails the test"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use authmd_proxy::clock::unix_now;
use authmd_proxy::store::{Store, StoreSettings};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::cookie::Jar;
use reqwest::header::LOCATION;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

use crate::login::{PASSWORD, assert_page, csrf_of, static_demo, yaml};
use crate::support::github_api::{self, GithubApi};
use crate::support::{self, Binary, eventually};

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const REDIRECT: &str = "http://127.0.0.1:51004/callback";
const A: usize = 0;
const B: usize = 1;
/// How long a revocation may take to reach the other replica's deny-list (through
/// the store's `NOTIFY`).
const PROPAGATION: Duration = Duration::from_secs(2);

/// A TCP relay that hands each new connection to the next backend in turn, and
/// counts them.
struct RoundRobin {
    url: String,
    backends: usize,
    /// Connections accepted so far: the `n`th (from 0) went to backend `n % backends`.
    accepted: Arc<AtomicUsize>,
}

impl RoundRobin {
    /// Relays `listener`'s connections to `backends`, in turn.
    fn start(listener: TcpListener, backends: Vec<SocketAddr>) -> RoundRobin {
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let n = backends.len();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = backends[count.fetch_add(1, Ordering::SeqCst) % n];
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        RoundRobin {
            url,
            backends: n,
            accepted,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// How many connections it has relayed.
    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The backend that got the latest connection.
    fn last(&self) -> usize {
        (self.connections() - 1) % self.backends
    }
}

/// A browser (cookies kept, no redirect followed) or an OAuth client that opens a
/// new connection for every request, so that a round-robin balancer alternates
/// its requests.
struct Agent {
    client: reqwest::Client,
}

impl Agent {
    fn new() -> Agent {
        let client = reqwest::Client::builder()
            .no_proxy()
            .cookie_provider(Arc::new(Jar::default()))
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        Agent { client }
    }

    async fn get(&self, url: &str) -> reqwest::Response {
        self.client.get(url).send().await.unwrap()
    }

    async fn post(&self, url: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        self.client.post(url).form(fields).send().await.unwrap()
    }
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ))
}

fn location(response: &reqwest::Response) -> String {
    assert_eq!(response.status().as_u16(), 303, "{:?}", response.url());
    response.headers()[LOCATION].to_str().unwrap().to_owned()
}

fn param(url: &str, name: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

/// The config of both replicas: sign-in with the static demo accounts and the
/// tests' cookie key, the declared client `my-cli`, the PostgreSQL store in
/// `schema`, a signing key written into `dir`, and `public_url`.
fn config(
    dir: &std::path::Path,
    url: &str,
    schema: &str,
    public_url: &str,
    providers: &str,
) -> std::path::PathBuf {
    let yaml = format!(
        "{}oauth:\n  refresh_reuse_grace: 0s\n  clients:\n    - client_id: my-cli\n      client_name: My CLI\n      redirect_uris: [http://127.0.0.1/callback]\n      scopes: [offers:read, offers:write]\n",
        yaml(&format!("{}{providers}", static_demo()))
    );
    let yaml = yaml
        .replace(
            "store:\n  kind: sqlite",
            &format!("store:\n  kind: postgres\n  url: {url}\n  schema: {schema}\n  # was: sqlite"),
        )
        .replace("  data_dir: data ", "  # data_dir: data ")
        .replace(
            "# public_url: https://api.example.com",
            &format!("public_url: {public_url}"),
        );
    assert!(yaml.contains(&format!("public_url: {public_url}")));
    let yaml = support::shared_signing_key(&yaml, dir);
    let path = dir.join("replicas.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn addr_of(binary: &Binary) -> SocketAddr {
    binary.url.trim_start_matches("http://").parse().unwrap()
}

/// The two replicas behind the balancer, and what the test needs to look into
/// their store.
struct Replicas {
    relay: RoundRobin,
    _a: Binary,
    _b: Binary,
    _dir: tempfile::TempDir,
    url: String,
    schema: String,
}

impl Replicas {
    async fn start() -> Option<Replicas> {
        Replicas::with_providers("").await
    }

    /// The replicas with `providers` (YAML list items) besides the static accounts.
    async fn with_providers(providers: &str) -> Option<Replicas> {
        let Ok(url) = std::env::var("AUTHMD_TEST_POSTGRES_URL") else {
            eprintln!("skipped: AUTHMD_TEST_POSTGRES_URL is not set");
            return None;
        };
        let schema = format!(
            "rr_{}",
            &authmd_proxy::credentials::KeyHash::of(&format!(
                "{}-{:?}",
                std::process::id(),
                std::time::SystemTime::now()
            ))
            .to_string()["blake3:".len()..][..12]
        );
        // The balancer's address is the public URL of both, so it is bound first.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let public_url = format!("http://{}", listener.local_addr().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = config(dir.path(), &url, &schema, &public_url, providers);
        let config = path.to_str().unwrap();
        let args = [
            "run",
            "--config",
            config,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ];
        let a = Binary::start(&args).await;
        let b = Binary::start(&args).await;
        let relay = RoundRobin::start(listener, vec![addr_of(&a), addr_of(&b)]);
        Some(Replicas {
            relay,
            _a: a,
            _b: b,
            _dir: dir,
            url,
            schema,
        })
    }

    /// A store handle of the test's own on the replicas' schema.
    async fn store(&self) -> Store {
        let settings = StoreSettings::Postgres {
            url: self.url.clone(),
            schema: self.schema.clone(),
            resync: Duration::from_secs(5),
            tls: authmd_proxy::store::postgres::PostgresTls::default(),
        };
        Store::open(&settings).await.unwrap().unwrap()
    }

    async fn sql(&self, statement: &str) {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "SET search_path TO \"{}\"; {statement}",
                self.schema
            ))
            .await
            .unwrap();
    }

    async fn cleanup(self) {
        let schema = self.schema.clone();
        let url = self.url.clone();
        drop(self);
        if let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await;
        }
    }

    /// An authorization request of `client_id` (PKCE S256, `state`, the API's
    /// `/mcp` as the resource).
    fn authorize_url(&self, client_id: &str, redirect_uri: &str) -> String {
        let resource = self.relay.url("/mcp");
        let challenge = challenge(VERIFIER);
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", redirect_uri),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
                ("state", "xyz"),
                ("scope", "offers:read"),
                ("resource", resource.as_str()),
            ])
            .finish();
        self.relay.url(&format!("/oauth2/authorize?{query}"))
    }

    /// One request: asserts it landed on `replica`, for the record of the flow.
    fn landed_on(&self, replica: usize, step: &str) {
        assert_eq!(self.relay.last(), replica, "{step}");
    }

    /// From the authorization request to the consent page's approval, five
    /// requests, the first on `first`: returns the redirect to the client.
    async fn sign_in_and_approve(
        &self,
        browser: &Agent,
        authorize: &str,
        first: usize,
        client_name: &str,
    ) -> String {
        let other = 1 - first;
        let to_login = location(&browser.get(authorize).await);
        self.landed_on(first, "the authorization request");
        assert!(
            to_login.starts_with("/oauth2/login?return_to="),
            "{to_login}"
        );
        let page = browser.get(&self.relay.url(&to_login)).await;
        self.landed_on(other, "the sign-in page");
        assert_page(&page, 200);
        let csrf = csrf_of(&page.text().await.unwrap());
        let return_to = param(&self.relay.url(&to_login), "return_to").unwrap();
        let fields = [
            ("provider", "demo"),
            ("username", "ada"),
            ("password", PASSWORD),
            ("csrf", csrf.as_str()),
            ("return_to", return_to.as_str()),
        ];
        let back = location(
            &browser
                .post(&self.relay.url("/oauth2/login"), &fields)
                .await,
        );
        self.landed_on(first, "the sign-in, with the other replica's CSRF token");
        assert!(back.starts_with("/oauth2/authorize?"), "{back}");
        let page = browser.get(&self.relay.url(&back)).await;
        self.landed_on(other, "the consent page, with the other replica's session");
        assert_page(&page, 200);
        let html = page.text().await.unwrap();
        assert!(html.contains(client_name), "{html}");
        let start = html
            .find("name=\"request\" value=\"")
            .expect("a request field")
            + 22;
        let request = html[start..].split('"').next().unwrap().to_owned();
        let csrf = csrf_of(&html);
        let fields = [
            ("request", request.as_str()),
            ("csrf", csrf.as_str()),
            ("decision", "approve"),
        ];
        let redirect = location(
            &browser
                .post(&self.relay.url("/oauth2/consent"), &fields)
                .await,
        );
        self.landed_on(first, "the approval of the other replica's consent page");
        assert_eq!(
            param(&redirect, "iss").as_deref(),
            Some(self.relay.url.as_str()),
            "one issuer, whichever replica answered"
        );
        assert_eq!(param(&redirect, "state").as_deref(), Some("xyz"));
        redirect
    }

    async fn token(&self, client: &Agent, fields: &[(&str, &str)]) -> (u16, Value) {
        let response = client.post(&self.relay.url("/oauth2/token"), fields).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn exchange(&self, client: &Agent, client_id: &str, code: &str) -> (u16, Value) {
        self.token(
            client,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("client_id", client_id),
                ("code_verifier", VERIFIER),
            ],
        )
        .await
    }

    async fn refresh(&self, client: &Agent, client_id: &str, token: &str) -> (u16, Value) {
        self.token(
            client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", token),
                ("client_id", client_id),
            ],
        )
        .await
    }

    /// The status of a call to the protected `/mcp` with `access_token`.
    async fn call_mcp(&self, client: &Agent, access_token: &str) -> u16 {
        client
            .client
            .post(self.relay.url("/mcp/tools"))
            .bearer_auth(access_token)
            .body("{}")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

fn text(value: &Value, name: &str) -> String {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {value}"))
        .to_owned()
}

#[tokio::test]
async fn two_replicas_behind_round_robin_complete_flows_and_honour_each_others_revocations() {
    let Some(replicas) = Replicas::start().await else {
        return;
    };
    let browser = Agent::new();
    let client = Agent::new();

    // One flow, every request on the other replica from the one before.
    let authorize = replicas.authorize_url("my-cli", REDIRECT);
    let redirect = replicas
        .sign_in_and_approve(&browser, &authorize, A, "My CLI")
        .await;
    let code = param(&redirect, "code").unwrap();
    let (status, first) = replicas.exchange(&client, "my-cli", &code).await;
    replicas.landed_on(B, "the code exchange of a code issued by the other replica");
    assert_eq!(status, 200, "{first}");
    let (status, second) = replicas
        .refresh(&client, "my-cli", &text(&first, "refresh_token"))
        .await;
    replicas.landed_on(A, "the refresh of a token issued by the other replica");
    assert_eq!(status, 200, "{second}");
    let access = text(&second, "access_token");
    assert_eq!(replicas.call_mcp(&client, &access).await, 200);
    replicas.landed_on(B, "a call with the other replica's access token");

    // Revoked on A (RFC 7009): B refuses the refresh token, and the family's
    // access token stops working on both.
    let current = text(&second, "refresh_token");
    let revoked = client
        .post(
            &replicas.relay.url("/oauth2/revoke"),
            &[("token", current.as_str()), ("client_id", "my-cli")],
        )
        .await;
    replicas.landed_on(A, "the revocation");
    assert_eq!(revoked.status().as_u16(), 200);
    let (status, refused) = replicas.refresh(&client, "my-cli", &current).await;
    replicas.landed_on(B, "the refresh of the token the other replica revoked");
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"], "invalid_grant");
    let denied = eventually(PROPAGATION, || async {
        // Two calls, one on each replica.
        replicas.call_mcp(&client, &access).await == 401
            && replicas.call_mcp(&client, &access).await == 401
    })
    .await;
    eprintln!("the revoked family's access token was refused by both within {denied:?}");

    // A second code (the consent is remembered: straight back with it), exchanged
    // on one replica and replayed on the other: refused, and what the first
    // exchange issued is revoked on both.
    let redirect = location(&browser.get(&authorize).await);
    let first_replica = replicas.relay.last();
    let code = param(&redirect, "code").expect("a remembered consent gives a code at once");
    let (status, tokens) = replicas.exchange(&client, "my-cli", &code).await;
    assert_eq!(status, 200, "{tokens}");
    replicas.landed_on(1 - first_replica, "the exchange");
    let (status, replay) = replicas.exchange(&client, "my-cli", &code).await;
    replicas.landed_on(first_replica, "the replay, on the other replica");
    assert_eq!(status, 400, "{replay}");
    assert_eq!(replay["code"], "CODE_REPLAYED");
    let (status, refused) = replicas
        .refresh(&client, "my-cli", &text(&tokens, "refresh_token"))
        .await;
    replicas.landed_on(
        1 - first_replica,
        "the refresh on the replica that issued it",
    );
    assert_eq!(status, 400, "{refused}");
    let access = text(&tokens, "access_token");
    let denied = eventually(PROPAGATION, || async {
        replicas.call_mcp(&client, &access).await == 401
            && replicas.call_mcp(&client, &access).await == 401
    })
    .await;
    eprintln!("the replayed code's access token was refused by both within {denied:?}");

    // Each request was one connection (else a step above would have landed on
    // the same replica as the one before), so each replica served half of them.
    let served = replicas.relay.connections();
    assert!(served >= 18, "{served} requests");
    replicas.cleanup().await;
}

#[tokio::test]
async fn a_client_registered_on_one_replica_is_authorized_on_the_other_and_its_use_recorded() {
    let Some(replicas) = Replicas::start().await else {
        return;
    };
    let browser = Agent::new();
    let client = Agent::new();
    let redirect_uri = "http://127.0.0.1:33418/oauth/callback";
    let registered = client
        .client
        .post(replicas.relay.url("/oauth2/register"))
        .json(&serde_json::json!({
            "client_name": "An MCP client",
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        }))
        .send()
        .await
        .unwrap();
    replicas.landed_on(A, "the registration");
    assert_eq!(registered.status().as_u16(), 201);
    let registered: Value = registered.json().await.unwrap();
    let client_id = text(&registered, "client_id");

    // As if registered two hours ago: the first grant records its use.
    replicas
        .sql(&format!(
            "UPDATE oauth_clients SET last_used_at = last_used_at - 7200 WHERE client_id = '{client_id}'"
        ))
        .await;
    let store = replicas.store().await;
    let last_used = async || {
        store
            .client(&client_id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at
    };
    let backdated = last_used().await;
    assert!(backdated <= unix_now() - 7200);

    let authorize = replicas.authorize_url(&client_id, redirect_uri);
    let redirect = replicas
        .sign_in_and_approve(&browser, &authorize, B, "An MCP client")
        .await;
    assert!(redirect.starts_with(redirect_uri), "{redirect}");
    let code = param(&redirect, "code").unwrap();
    let (status, tokens) = replicas
        .token(
            &client,
            &[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", redirect_uri),
                ("client_id", client_id.as_str()),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;
    replicas.landed_on(A, "the exchange");
    assert_eq!(status, 200, "{tokens}");
    let used = last_used().await;
    assert!(
        used > backdated && used >= unix_now() - 60,
        "the exchange recorded the client's use: {backdated} -> {used}"
    );
    // A refresh within the hour, on the other replica, works and writes nothing.
    let (status, refreshed) = replicas
        .refresh(&client, &client_id, &text(&tokens, "refresh_token"))
        .await;
    replicas.landed_on(B, "the refresh");
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(last_used().await, used, "at most one write an hour");
    drop(store);
    replicas.cleanup().await;
}

/// A claim by sign-in across the replicas: the agent registers on one, its
/// operator opens the claim URL, is sent to sign in, signs in, sees the claim page
/// and confirms, each step on the other replica from the one before; the same key
/// then has the claimed tier on both, with the operator named.
#[tokio::test]
async fn an_operator_signs_in_and_claims_across_the_replicas() {
    let Some(replicas) = Replicas::start().await else {
        return;
    };
    let relay = &replicas.relay;
    let agent = Agent::new();
    let registered = agent
        .client
        .post(relay.url("/agent/auth/register"))
        .json(&serde_json::json!({"type": "anonymous", "client_name": "replica bot"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);
    let registered: Value = registered.json().await.unwrap();
    let key = registered["credential"].as_str().unwrap().to_owned();
    let claim_url = registered["claim_url"]
        .as_str()
        .expect("a claim by sign-in is offered")
        .to_owned();
    assert!(claim_url.starts_with(&relay.url("/agent/auth/claim?token=")));

    let operator = Agent::new();
    let mut seen = Vec::new();
    let to_login = location(&operator.get(&claim_url).await);
    seen.push(relay.last());
    let chooser = operator.get(&relay.url(&to_login)).await;
    seen.push(relay.last());
    assert_page(&chooser, 200);
    let csrf = csrf_of(&chooser.text().await.unwrap());
    let return_to = claim_url.strip_prefix(&relay.url("")).unwrap().to_owned();
    let signed_in = operator
        .post(
            &relay.url("/oauth2/login"),
            &[
                ("provider", "demo"),
                ("username", "ada"),
                ("password", PASSWORD),
                ("csrf", &csrf),
                ("return_to", &return_to),
            ],
        )
        .await;
    seen.push(relay.last());
    assert_eq!(location(&signed_in), return_to);
    let page = operator.get(&claim_url).await;
    seen.push(relay.last());
    assert_page(&page, 200);
    let page = page.text().await.unwrap();
    let token = page
        .split("name=\"claim_token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a claim form")
        .to_owned();
    let csrf = csrf_of(&page);
    let claimed = operator
        .post(
            &relay.url("/agent/auth/claim"),
            &[("claim_token", token.as_str()), ("csrf", csrf.as_str())],
        )
        .await;
    seen.push(relay.last());
    assert_eq!(claimed.status(), 200, "{}", claimed.text().await.unwrap());
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "each step on the other replica: {seen:?}");
    }

    // The same key, raised in place, on both replicas (each hears of the claim
    // through the store), with its operator named upstream.
    raised_on_both(relay, &agent, &key, "demo:ada").await;
    replicas.cleanup().await;
}

/// A sign-in through GitHub across the replicas: the sign-in starts on one, GitHub
/// sends the person back to the callback on the other (the login state lives in
/// the sealed cookie, not in either process), and the claim that follows lands on
/// the first.
#[tokio::test]
async fn a_github_callback_completes_on_the_other_replica() {
    let gh = GithubApi::start(crate::login::octocat()).await;
    let providers = format!(
        "    - id: gh\n      kind: github\n      client_id: {}\n      client_secret: \"{}\"\n      web_url: {}\n      api_url: {}\n",
        github_api::CLIENT_ID,
        github_api::CLIENT_SECRET,
        gh.web_url,
        gh.api_url
    );
    let Some(replicas) = Replicas::with_providers(&providers).await else {
        return;
    };
    let relay = &replicas.relay;
    let agent = Agent::new();
    let registered: Value = agent
        .client
        .post(relay.url("/agent/auth/register"))
        .json(&serde_json::json!({"type": "anonymous", "client_name": "gh bot"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = registered["credential"].as_str().unwrap().to_owned();
    let claim_url = registered["claim_url"].as_str().unwrap().to_owned();
    let return_to = claim_url.strip_prefix(&relay.url("")).unwrap().to_owned();

    // Start at the proxy, through GitHub, back to the callback: follow by hand,
    // noting which replica answered each proxy request.
    let operator = Agent::new();
    let mut url = format!(
        "{}?provider=gh&return_to={}",
        relay.url("/oauth2/login"),
        crate::login::urlencode(&return_to)
    );
    let mut replicas_seen = Vec::new();
    let page = loop {
        let response = operator.get(&url).await;
        if url.starts_with(&relay.url("")) {
            replicas_seen.push((url.clone(), relay.last()));
        }
        if !response.status().is_redirection() {
            break response;
        }
        let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
        url = response.url().join(&location).unwrap().to_string();
    };
    assert_page(&page, 200);
    let callback = replicas_seen
        .iter()
        .position(|(u, _)| u.contains("/oauth2/callback/gh"))
        .expect("GitHub sent the person back to the callback");
    assert_ne!(
        replicas_seen[0].1, replicas_seen[callback].1,
        "the callback on the other replica: {replicas_seen:?}"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("octocat"), "{html}");
    let token = html
        .split("name=\"claim_token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a claim form")
        .to_owned();
    let csrf = csrf_of(&html);
    let claimed = operator
        .post(
            &relay.url("/agent/auth/claim"),
            &[("claim_token", token.as_str()), ("csrf", csrf.as_str())],
        )
        .await;
    assert_eq!(claimed.status(), 200);
    raised_on_both(relay, &agent, &key, "gh:octocat").await;
    replicas.cleanup().await;
}

/// Waits until `key` opens a route of the claimed tier on both replicas (two
/// requests in a row land on the two), with `operator` named upstream.
async fn raised_on_both(relay: &RoundRobin, agent: &Agent, key: &str, operator: &str) {
    eventually(PROPAGATION, || async {
        let mut both = true;
        for _ in 0..2 {
            let response = agent
                .client
                .delete(relay.url("/api/v1/offers/1"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            let ok = response.status() == 200;
            let echoed: Value = response.json().await.unwrap_or(Value::Null);
            both &= ok && echoed["headers"]["x-authmd-operator"] == operator;
        }
        both
    })
    .await;
}
