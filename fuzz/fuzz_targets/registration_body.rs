//! The body of an RFC 7591 registration request, through
//! `oauth::clients::dynamic::parse` with the example config's scopes, exactly as
//! `POST /oauth2/register` parses it once read. Checks, besides never panicking:
//!
//! - only a JSON object is accepted;
//! - what is accepted is registrable: one to sixteen redirect URIs, each at most
//!   512 bytes and one `redirect::classify` accepts; `authorization_code` among
//!   the grant types and nothing but it and `refresh_token`; `code` the only
//!   response type; only declared scopes; a `client_uri` only over http(s);
//! - the stored document holds only the members this server understands, and says
//!   what the parsed metadata says (redirects, auth method, scope, name, URI);
//! - the stored document is a fixed point: parsed again, it gives the same
//!   metadata; and the client the endpoints later read back from it
//!   (`Client::registered`) has the same redirects, name, URI and scopes;
//! - a refusal is one of RFC 7591's two errors, with a description, and the
//!   description repeats at most a bounded part of the input.
#![no_main]

use std::sync::OnceLock;

use authmd_proxy::config::Config;
use authmd_proxy::oauth::clients::Client;
use authmd_proxy::oauth::clients::dynamic::{AuthMethod, parse};
use authmd_proxy::protocol::redirect::classify;
use authmd_proxy::store::ClientRecord;
use authmd_proxy_fuzz::example_config;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// The members a stored document may have.
const KNOWN: [&str; 13] = [
    "redirect_uris",
    "token_endpoint_auth_method",
    "grant_types",
    "response_types",
    "scope",
    "client_name",
    "client_uri",
    "logo_uri",
    "tos_uri",
    "policy_uri",
    "software_id",
    "software_version",
    "contacts",
];

/// Longest description of a refusal: its own words and at most one member of
/// the input (a member is at most 512 bytes).
const MAX_DESCRIPTION: usize = 1024;

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(example_config)
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .expect("an array member")
        .iter()
        .map(|v| v.as_str().expect("an array of strings"))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let config = config();
    let registry = &config.scopes;
    let object = serde_json::from_slice::<Map<String, Value>>(data).ok();
    let metadata = match parse(data, registry) {
        Ok(metadata) => metadata,
        Err(refused) => {
            assert!(
                ["invalid_redirect_uri", "invalid_client_metadata"].contains(&refused.error),
                "error {}",
                refused.error
            );
            assert!(!refused.description.is_empty());
            assert!(
                refused.description.len() <= MAX_DESCRIPTION,
                "a description of {} bytes",
                refused.description.len()
            );
            if object.is_none() {
                assert_eq!(refused.error, "invalid_client_metadata");
            }
            return;
        }
    };
    assert!(object.is_some(), "a body that is not a JSON object was accepted");

    assert!((1..=16).contains(&metadata.redirect_uris.len()));
    for uri in &metadata.redirect_uris {
        assert!(uri.len() <= 512);
        assert!(classify(uri).is_ok(), "the redirect {uri:?} was accepted");
    }
    let document = &metadata.document;
    for name in document.keys() {
        assert!(KNOWN.contains(&name.as_str()), "the member {name:?} was kept");
    }
    assert_eq!(strings(&document["redirect_uris"]), metadata.redirect_uris);
    assert_eq!(
        document["token_endpoint_auth_method"].as_str(),
        Some(metadata.auth_method.name())
    );
    let grants = strings(&document["grant_types"]);
    assert!(grants.contains(&"authorization_code"));
    assert!(
        grants
            .iter()
            .all(|g| *g == "authorization_code" || *g == "refresh_token"),
        "grant types {grants:?}"
    );
    assert!(strings(&document["response_types"]).iter().all(|r| *r == "code"));
    let scope = document["scope"].as_str().expect("a scope member");
    assert_eq!(scope, registry.names(&metadata.scopes));
    assert_eq!(
        registry.granted(scope.split_whitespace()).ok(),
        Some(metadata.scopes),
        "the stored scope names other scopes"
    );
    assert_eq!(
        document.get("client_name").and_then(Value::as_str),
        metadata.client_name.as_deref()
    );
    assert_eq!(
        document.get("client_uri").and_then(Value::as_str),
        metadata.client_uri.as_deref()
    );
    if let Some(uri) = &metadata.client_uri {
        assert!(uri.starts_with("https://") || uri.starts_with("http://"), "{uri:?}");
    }
    match metadata.auth_method {
        AuthMethod::None | AuthMethod::SecretBasic | AuthMethod::SecretPost => {}
    }

    // What is stored is read back the same, by the parser and by the endpoints.
    let stored = Value::Object(document.clone()).to_string();
    let again = parse(stored.as_bytes(), registry).expect("the stored document is refused");
    assert_eq!(again, metadata, "the stored document parses to other metadata");
    let record = ClientRecord {
        client_id: "dcr_fuzz".into(),
        secret_hash: None,
        metadata: stored,
        fingerprint: String::new(),
        created_at: 0,
        last_used_at: 0,
    };
    let client = Client::registered(&record, config).expect("the stored client is unreadable");
    assert_eq!(client.redirect_uris, metadata.redirect_uris);
    assert_eq!(client.name, metadata.client_name);
    assert_eq!(client.uri, metadata.client_uri);
    assert_eq!(client.scopes, metadata.scopes);
});
