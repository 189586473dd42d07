//! The authorization request's checks, in the order the specs set.

use super::*;
use crate::config::{Config, Overrides};

const CONFIG: &str = r#"
public_url: https://api.example.com
upstream: {url: "builtin:echo"}
discovery: {resources: [/mcp]}
scopes:
  offers:read: Read offers
  offers:write: Write offers
  admin:users: Manage users
tiers: [{name: anonymous}, {name: free}]
routes:
  - {path: /api/v1/offers, methods: [GET], scopes: [offers:read]}
  - {path: "/mcp/{*rest}", methods: [POST], scopes: [offers:read]}
oauth:
  clients:
    - client_id: cli
      redirect_uris: [http://127.0.0.1/callback]
      scopes: [offers:read, offers:write]
    - client_id: web
      redirect_uris: [https://app.example.com/a, https://app.example.com/b]
"#;

const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn config() -> Config {
    Config::from_yaml_str(CONFIG, "test.yaml", &Overrides::default(), &|_| None).unwrap()
}

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn good() -> Vec<(String, String)> {
    params(&[
        ("response_type", "code"),
        ("client_id", "cli"),
        ("redirect_uri", "http://127.0.0.1:51234/callback"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
        ("state", "xyz"),
        ("scope", "offers:read"),
        ("resource", "https://api.example.com/mcp"),
    ])
}

fn without(mut p: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    p.retain(|(n, _)| n != name);
    p
}

fn with(mut p: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    p.retain(|(n, _)| n != name);
    p.push((name.to_owned(), value.to_owned()));
    p
}

fn run(p: &[(String, String)]) -> Result<Pending, Refusal> {
    let config = config();
    let id = client_id(p)?;
    let client = crate::oauth::clients::declared(&config, id).ok_or(Refusal::Page {
        message: "unknown".into(),
    })?;
    check(p, &client, &config)
}

fn error_of(p: &[(String, String)]) -> &'static str {
    match run(p) {
        Err(Refusal::Redirect {
            error, state, to, ..
        }) => {
            assert_eq!(to, "http://127.0.0.1:51234/callback");
            assert_eq!(state.as_deref(), Some("xyz"));
            error
        }
        other => panic!("expected a redirected refusal, got {other:?}"),
    }
}

#[test]
fn a_good_request_is_pending_with_everything_it_binds() {
    let pending = run(&good()).unwrap();
    assert_eq!(
        pending,
        Pending {
            client_id: "cli".into(),
            redirect_uri: "http://127.0.0.1:51234/callback".into(),
            redirect_given: true,
            scope: "offers:read".into(),
            state: Some("xyz".into()),
            code_challenge: CHALLENGE.into(),
            resource: "https://api.example.com/mcp".into(),
        }
    );
    let defaults = run(&without(without(good(), "resource"), "scope")).unwrap();
    assert_eq!(defaults.resource, "https://api.example.com");
    assert_eq!(defaults.scope, "");
}

#[test]
fn an_unknown_client_or_a_foreign_redirect_is_a_page_never_a_redirect() {
    for p in [
        without(good(), "client_id"),
        with(good(), "client_id", "nobody"),
        with(good(), "redirect_uri", "https://evil.example.com/callback"),
        with(good(), "redirect_uri", "http://127.0.0.1:51234/other"),
        with(good(), "redirect_uri", "http://localhost:51234/callback"),
        {
            let mut p = good();
            p.push(("client_id".into(), "cli".into()));
            p
        },
    ] {
        assert!(matches!(run(&p), Err(Refusal::Page { .. })), "{p:?}");
    }
    // Several registered redirects and none named: nowhere safe to send an error.
    let p = with(without(good(), "redirect_uri"), "client_id", "web");
    assert!(matches!(run(&p), Err(Refusal::Page { .. })));
}

#[test]
fn the_other_problems_go_back_to_the_client_with_state() {
    assert_eq!(
        error_of(&without(good(), "code_challenge")),
        "invalid_request"
    );
    assert_eq!(
        error_of(&without(good(), "code_challenge_method")),
        "invalid_request"
    );
    assert_eq!(
        error_of(&with(good(), "code_challenge_method", "plain")),
        "invalid_request"
    );
    assert_eq!(
        error_of(&with(good(), "response_type", "token")),
        "unsupported_response_type"
    );
    assert_eq!(
        error_of(&without(good(), "response_type")),
        "invalid_request"
    );
    assert_eq!(
        error_of(&with(good(), "resource", "https://evil.example.com/mcp")),
        "invalid_target"
    );
    assert_eq!(
        error_of(&with(good(), "scope", "offers:nope")),
        "invalid_scope"
    );
    assert_eq!(
        error_of(&with(good(), "scope", "admin:users")),
        "invalid_scope"
    );
    assert_eq!(
        error_of(&with(good(), "request", "eyJ...")),
        "request_not_supported"
    );
    let mut twice = good();
    twice.push(("code_challenge".into(), CHALLENGE.into()));
    assert_eq!(error_of(&twice), "invalid_request");
}

#[test]
fn a_redirected_refusal_carries_the_issuer() {
    let refusal = run(&with(good(), "response_type", "token")).unwrap_err();
    let location = refusal.location("https://api.example.com").unwrap();
    assert!(
        location.starts_with("http://127.0.0.1:51234/callback?error=unsupported_response_type&")
    );
    assert!(location.contains("&state=xyz&iss=https%3A%2F%2Fapi.example.com"));
}
