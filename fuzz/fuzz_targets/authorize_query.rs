//! The authorization request (OAuth 2.1 section 4.1.1) as the authorization
//! endpoint reads a `GET`: the query bytes, form-urlencoded-decoded
//! (`form_urlencoded::parse`, as the endpoint does), then `authorize::client_id`,
//! the client looked up among a fixed set (as `clients::find` looks up declared
//! ones; an unknown id ends there, as it ends the endpoint with a page), then
//! `authorize::check`. Checks, besides never panicking, against an independent
//! reading of the parameters:
//!
//! - `client_id` is accepted exactly when it is present once and not empty;
//! - no open redirector: a refusal sent to a redirect URI, and an accepted
//!   request's redirect URI, are a URI the client registered, or one that
//!   `redirect::matches` one (a loopback URI on another port), and then the
//!   request's own `redirect_uri`; a refusal is a page (sent nowhere) exactly when
//!   `redirect_uri` is repeated, or presented and matching none, or absent while
//!   the client registered several;
//! - a presented URI that matches a registered one other than itself is a
//!   loopback `http` URI, as is the registered one;
//! - an accepted request has `response_type=code`, an S256 challenge of 43
//!   base64url characters, no parameter but `resource` twice, no `request` or
//!   `request_uri`, a resource this server serves, only scopes the client may
//!   have, and its own `state`;
//! - a redirected refusal's location is the redirect URI with `error`,
//!   `error_description`, `state` (when there was one) and `iss` appended, which
//!   a URL parser reads back as exactly those values, last, in that order.
#![no_main]

use std::sync::OnceLock;

use authmd_proxy::config::Config;
use authmd_proxy::oauth::authorize::{Refusal, check, client_id};
use authmd_proxy::oauth::clients::{Client, ClientKind};
use authmd_proxy::protocol::redirect::{RedirectKind, classify, matches};
use authmd_proxy_fuzz::example_config;
use libfuzzer_sys::fuzz_target;

/// The issuer put in redirected refusals.
const ISSUER: &str = "http://127.0.0.1:8080";

struct Harness {
    config: Config,
    clients: Vec<Client>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let config = example_config();
        let client = |id: &str, redirects: &[&str], scopes: &[&str]| Client {
            client_id: id.to_owned(),
            name: Some(format!("The {id} app")),
            uri: None,
            redirect_uris: redirects.iter().map(|r| (*r).to_owned()).collect(),
            scopes: config
                .scopes
                .granted(scopes.iter().copied())
                .expect("example scopes"),
            secret_hash: None,
            kind: ClientKind::Declared,
        };
        let clients = vec![
            // One loopback redirect: it may be left out, and any port matches.
            client("cli", &["http://127.0.0.1/callback"], &["offers:read", "offers:write"]),
            // Several: the request must say which.
            client(
                "web",
                &["https://app.example.com/cb", "https://app.example.com/cb?x=1"],
                &["offers:read"],
            ),
            client(
                "native",
                &[
                    "com.example.app:/oauth2redirect",
                    "http://[::1]/cb",
                    "http://localhost:8123/cb?q",
                ],
                &["offers:read", "offers:delete", "contacts:reveal"],
            ),
        ];
        for c in &clients {
            for r in &c.redirect_uris {
                classify(r).expect("the harness's redirects are registrable");
            }
        }
        Harness { config, clients }
    })
}

/// Every value of `name`.
fn values<'a>(params: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    params
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The one non-empty value of `name`, when it is there once.
fn once<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    match values(params, name).as_slice() {
        [one] if !one.is_empty() => Some(one),
        _ => None,
    }
}

/// True when `to` is a redirect of `client`: registered, or matching one.
fn is_redirect_of(client: &Client, to: &str) -> bool {
    client
        .redirect_uris
        .iter()
        .any(|r| r == to || matches(r, to))
}

fuzz_target!(|data: &[u8]| {
    let harness = harness();
    let params: Vec<(String, String)> = form_urlencoded::parse(data).into_owned().collect();

    let named = client_id(&params);
    let ids = values(&params, "client_id");
    let expected = match ids.as_slice() {
        [one] if !one.is_empty() => Some(*one),
        _ => None,
    };
    match (&named, expected) {
        (Ok(id), Some(want)) => assert_eq!(*id, want),
        (Err(Refusal::Page { .. }), None) => {}
        (other, want) => panic!("client_id {other:?}, expected {want:?} from {ids:?}"),
    }
    let Ok(id) = named else { return };
    let Some(client) = harness.clients.iter().find(|c| c.client_id == id) else {
        return;
    };

    // The redirect, as an independent reading of section 4.1.1 and RFC 8252.
    let presented = values(&params, "redirect_uri");
    let redirect: Option<String> = match presented.as_slice() {
        [] | [""] => match client.redirect_uris.as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        },
        [one] => is_redirect_of(client, one).then(|| (*one).to_owned()),
        _ => None,
    };
    if let [one] = presented.as_slice() {
        for registered in &client.redirect_uris {
            if registered != one && matches(registered, one) {
                assert_eq!(classify(registered), Ok(RedirectKind::Loopback));
                assert_eq!(
                    classify(one),
                    Ok(RedirectKind::Loopback),
                    "{one:?} matched {registered:?}"
                );
            }
        }
    }

    match &check(&params, client, &harness.config) {
        Ok(pending) => {
            let redirect = redirect.expect("accepted without a redirect of the client's");
            assert_eq!(pending.redirect_uri, redirect);
            assert!(is_redirect_of(client, &pending.redirect_uri));
            assert_eq!(pending.redirect_given, once(&params, "redirect_uri").is_some());
            assert_eq!(pending.client_id, client.client_id);
            assert_eq!(once(&params, "response_type"), Some("code"));
            assert_eq!(once(&params, "code_challenge_method"), Some("S256"));
            assert_eq!(once(&params, "code_challenge"), Some(pending.code_challenge.as_str()));
            assert!(
                pending.code_challenge.len() == 43
                    && pending
                        .code_challenge
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "challenge {:?}",
                pending.code_challenge
            );
            for (name, _) in &params {
                assert!(
                    name == "resource" || values(&params, name).len() == 1,
                    "the repeated parameter {name:?} was accepted"
                );
            }
            for refused in ["request", "request_uri"] {
                assert!(once(&params, refused).is_none(), "{refused} was accepted");
            }
            assert!(
                values(&params, "resource").len() <= 1,
                "two resources were accepted"
            );
            assert!(
                harness
                    .config
                    .resource_identifiers()
                    .contains(&pending.resource),
                "the resource {:?} is not served here",
                pending.resource
            );
            let granted = harness
                .config
                .scopes
                .granted(pending.scope.split_whitespace())
                .expect("an accepted scope this server does not know");
            assert!(granted.is_subset_of(&client.scopes), "scope {:?}", pending.scope);
            assert_eq!(pending.state.as_deref(), once(&params, "state"));
        }
        Err(Refusal::Page { message }) => {
            assert!(!message.is_empty());
            assert!(
                redirect.is_none(),
                "a page for a request with the redirect {redirect:?}: {message}"
            );
        }
        Err(
            refusal @ Refusal::Redirect {
                to,
                error,
                description,
                state,
            },
        ) => {
            let redirect = redirect.expect("a refusal redirected without a redirect of the client's");
            assert_eq!(*to, redirect, "refused to another redirect");
            assert!(is_redirect_of(client, to), "an open redirect to {to:?}");
            assert!(!description.is_empty());
            assert!(
                [
                    "invalid_request",
                    "request_not_supported",
                    "request_uri_not_supported",
                    "unsupported_response_type",
                    "invalid_target",
                    "invalid_scope",
                ]
                .contains(error),
                "error {error}"
            );
            assert_eq!(state.as_deref(), once(&params, "state"));
            let location = refusal.location(ISSUER).expect("a redirected refusal's location");
            assert!(location.starts_with(to.as_str()), "{location:?} is not under {to:?}");
            let mut expected = vec![("error", *error), ("error_description", description.as_str())];
            if let Some(state) = state {
                expected.push(("state", state.as_str()));
            }
            expected.push(("iss", ISSUER));
            // Read back by a URL parser where the redirect is a URL with a query of
            // its own (a private-use redirect is too, whatever its form).
            let parsed = url::Url::parse(&location).expect("the location is not a URL");
            let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
            assert!(pairs.len() >= expected.len(), "{location:?}");
            let tail = &pairs[pairs.len() - expected.len()..];
            for ((name, value), (want_name, want_value)) in tail.iter().zip(&expected) {
                assert_eq!((name.as_str(), value.as_str()), (*want_name, *want_value), "{location:?}");
            }
        }
    }
});
