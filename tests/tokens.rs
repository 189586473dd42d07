//! The token endpoint and the proxy's own access tokens, over real sockets: each
//! grant (client_credentials with client_secret_basic, client_secret_post and no
//! client authentication; RFC 8707 `resource`), each refusal in the RFC 6749 section
//! 5.2 format, revocation (RFC 7009), signing-key rotation, and every verification
//! rule for tokens this proxy signed (forged here with a key the test configures).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{READER_KEY, TestProxy, WRITER_KEY, client, json};

use authmd_proxy::tokens::signing::{SigningAlgorithm, SigningKey};

const EXAMPLE: &str = include_str!("../config.example.yaml");

fn now() -> i64 {
    authmd_proxy::store::unix_now()
}

/// The example config, with `edit` applied to its text.
async fn proxy_with(edit: impl FnOnce(String) -> String) -> TestProxy {
    TestProxy::start(&edit(EXAMPLE.to_owned()), None).await
}

/// A form POST to the token endpoint.
async fn token_request(proxy: &TestProxy, form: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(proxy.url("/oauth2/token"))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// Asserts an OAuth error answer (RFC 6749 section 5.2 plus this API's envelope).
async fn assert_oauth_error(response: reqwest::Response, status: u16, error: &str, code: &str) {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let body = json(response).await;
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
}

/// The claims of a JWT, read without verification.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn header(token: &str) -> Value {
    let part = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Status of `POST /api/v1/offers` (needs `offers:write`) with a bearer token, and the
/// echoed request the upstream saw.
async fn write_offer(proxy: &TestProxy, token: &str) -> (u16, Value) {
    let response = client()
        .post(proxy.url("/api/v1/offers"))
        .bearer_auth(token)
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let www = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut body = json(response).await;
    if let Some(www) = www {
        body["www-authenticate"] = json!(www);
    }
    (status, body)
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

#[tokio::test]
async fn client_secret_basic_issues_a_token_that_calls_the_api() {
    let proxy = proxy_with(|t| t).await;
    let response = client()
        .post(proxy.url("/oauth2/token"))
        // RFC 6749 2.3.1: the id is form-urlencoded before Basic; `%2D` is `-`.
        .header("authorization", basic("example%2Dwriter", WRITER_KEY))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
    let body = json(response).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "offers:read offers:write");
    let token = body["access_token"].as_str().unwrap();

    let claims = claims(token);
    assert_eq!(claims["iss"], proxy.url);
    assert_eq!(claims["aud"], proxy.url);
    assert_eq!(claims["sub"], "key:example-writer");
    assert_eq!(claims["client_id"], "example-writer");
    assert_eq!(claims["tier"], "free");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() > 16));
    let head = header(token);
    assert_eq!(head["typ"], "at+jwt");
    assert_eq!(head["alg"], "EdDSA");

    // The kid is a key published at jwks_uri.
    let metadata = json(
        client()
            .get(proxy.url("/.well-known/oauth-authorization-server"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(metadata["jwks_uri"], proxy.url("/.well-known/jwks.json"));
    let jwks_response = client()
        .get(proxy.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        jwks_response.headers()["content-type"],
        "application/jwk-set+json"
    );
    let jwks = json(jwks_response).await;
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == head["kid"] && k["kty"] == "OKP" && k.get("d").is_none()),
        "{jwks}"
    );

    let (status, echoed) = write_offer(&proxy, token).await;
    assert_eq!(status, 200, "{echoed}");
    assert_eq!(
        echoed["headers"]["x-authmd-principal"],
        "key:example-writer"
    );
    assert_eq!(echoed["headers"]["x-authmd-tier"], "free");
    assert!(echoed["headers"].get("authorization").is_none());
}

#[tokio::test]
async fn client_secret_post_works_and_two_methods_at_once_do_not() {
    let proxy = proxy_with(|t| t).await;
    let response = token_request(
        &proxy,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "example-writer"),
            ("client_secret", WRITER_KEY),
            ("scope", "offers:read"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["scope"], "offers:read");
    let token = body["access_token"].as_str().unwrap();
    let (status, echoed) = write_offer(&proxy, token).await;
    assert_eq!(status, 403, "a narrower token cannot write: {echoed}");
    assert!(
        echoed["www-authenticate"]
            .as_str()
            .unwrap()
            .contains("insufficient_scope")
    );

    let both = client()
        .post(proxy.url("/oauth2/token"))
        .header("authorization", basic("example-writer", WRITER_KEY))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_secret", WRITER_KEY),
        ])
        .send()
        .await
        .unwrap();
    assert_oauth_error(both, 400, "invalid_request", "INVALID_REQUEST").await;
}

#[tokio::test]
async fn a_bad_client_is_invalid_client_with_a_basic_challenge_only_for_basic() {
    let proxy = proxy_with(|t| t).await;
    for (id, secret) in [
        ("example-writer", READER_KEY),
        ("example-reader", WRITER_KEY),
        ("example-writer", "ak_live_nope"),
        ("example-writer", "not-a-key"),
    ] {
        let response = client()
            .post(proxy.url("/oauth2/token"))
            .header("authorization", basic(id, secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(challenge.starts_with("Basic realm="), "{challenge}");
        assert_oauth_error(response, 401, "invalid_client", "INVALID_CLIENT").await;
    }
    let response = token_request(
        &proxy,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "example-writer"),
            ("client_secret", READER_KEY),
        ],
    )
    .await;
    assert!(response.headers().get("www-authenticate").is_none());
    assert_oauth_error(response, 401, "invalid_client", "INVALID_CLIENT").await;
    // A public client naming itself has no secret to check: not for client_credentials.
    let response = token_request(
        &proxy,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "example-writer"),
        ],
    )
    .await;
    assert_oauth_error(response, 401, "invalid_client", "INVALID_CLIENT").await;
}

#[tokio::test]
async fn scopes_beyond_the_client_or_unknown_are_invalid_scope() {
    let proxy = proxy_with(|t| t).await;
    for scope in ["offers:delete", "offers:read nonsense", "offers:*"] {
        let response = client()
            .post(proxy.url("/oauth2/token"))
            .header("authorization", basic("example-writer", WRITER_KEY))
            .form(&[("grant_type", "client_credentials"), ("scope", scope)])
            .send()
            .await
            .unwrap();
        assert_oauth_error(response, 400, "invalid_scope", "INVALID_SCOPE").await;
    }
    let response = token_request(
        &proxy,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "offers:write"),
        ],
    )
    .await;
    assert_oauth_error(response, 400, "invalid_scope", "INVALID_SCOPE").await;
}

#[tokio::test]
async fn anonymous_tokens_take_json_or_forms_and_are_rate_limited_per_address() {
    let proxy = proxy_with(|t| {
        t.replace(
            "per_hour: 60             # anonymous tokens",
            "per_hour: 2              # anonymous tokens",
        )
    })
    .await;
    let json_body = client()
        .post(proxy.url("/oauth2/token"))
        .json(&json!({"grant_type": "client_credentials", "scope": "offers:read"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status(), 200);
    let body = json(json_body).await;
    assert_eq!(body["scope"], "offers:read");
    let token = body["access_token"].as_str().unwrap();
    let claims = claims(token);
    assert!(claims["sub"].as_str().unwrap().starts_with("anonymous:"));
    assert!(claims.get("client_id").is_none());
    assert_eq!(claims["tier"], "anonymous");
    let (status, _) = write_offer(&proxy, token).await;
    assert_eq!(status, 403, "the anonymous scopes do not write");
    let read = client()
        .get(proxy.url("/api/v1/offers"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);

    let form = token_request(&proxy, &[("grant_type", "client_credentials")]).await;
    assert_eq!(form.status(), 200);
    let limited = token_request(&proxy, &[("grant_type", "client_credentials")]).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().get("retry-after").is_some());

    // Without `tokens.anonymous`, a client must authenticate.
    let strict = proxy_with(|t| {
        t.replace(
            "  anonymous:                 # client_credentials",
            "  # anonymous:",
        )
        .replace(
            "    tier: anonymous\n    scopes: [offers:read]\n    per_hour: 60",
            "",
        )
    })
    .await;
    let response = token_request(&strict, &[("grant_type", "client_credentials")]).await;
    assert_oauth_error(response, 401, "invalid_client", "INVALID_CLIENT").await;
}

#[tokio::test]
async fn resource_names_the_audience_and_must_be_this_api() {
    let proxy = proxy_with(|t| t).await;
    for resource in [proxy.url.clone(), proxy.url("/mcp"), proxy.url("/mcp/")] {
        let response = client()
            .post(proxy.url("/oauth2/token"))
            .header("authorization", basic("example-writer", WRITER_KEY))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", resource.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{resource}");
        let token = json(response).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(claims(&token)["aud"], resource.trim_end_matches('/'));
        assert_eq!(write_offer(&proxy, &token).await.0, 200, "{resource}");
    }
    for resource in ["https://elsewhere.example", "http://127.0.0.1:1"] {
        let response = token_request(
            &proxy,
            &[("grant_type", "client_credentials"), ("resource", resource)],
        )
        .await;
        assert_oauth_error(response, 400, "invalid_target", "INVALID_TARGET").await;
    }
    let response = token_request(
        &proxy,
        &[
            ("grant_type", "client_credentials"),
            ("resource", proxy.url.as_str()),
            ("resource", proxy.url("/mcp").as_str()),
        ],
    )
    .await;
    assert_oauth_error(response, 400, "invalid_target", "INVALID_TARGET").await;
}

#[tokio::test]
async fn malformed_token_requests_get_the_oauth_error_they_deserve() {
    let proxy = proxy_with(|t| t).await;
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case<'_>; 4] = [
        (
            &[("grant_type", "password")],
            "unsupported_grant_type",
            "UNSUPPORTED_GRANT_TYPE",
        ),
        (
            &[("scope", "offers:read")],
            "invalid_request",
            "INVALID_REQUEST",
        ),
        (
            &[
                ("grant_type", "client_credentials"),
                ("grant_type", "client_credentials"),
            ],
            "invalid_request",
            "INVALID_REQUEST",
        ),
        (
            // ID-JAGs are redeemed only where a trusted issuer is configured.
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", "eyJ.eyJ.x"),
            ],
            "unsupported_grant_type",
            "UNSUPPORTED_GRANT_TYPE",
        ),
    ];
    for (form, error, code) in cases {
        assert_oauth_error(token_request(&proxy, form).await, 400, error, code).await;
    }
    let get = client()
        .get(proxy.url("/oauth2/token"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
}

#[tokio::test]
async fn a_revoked_token_is_refused_from_the_next_request_on() {
    let proxy = proxy_with(|t| t).await;
    let issue = || async {
        let response = client()
            .post(proxy.url("/oauth2/token"))
            .header("authorization", basic("example-writer", WRITER_KEY))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        json(response).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (first, second) = (issue().await, issue().await);
    assert_eq!(write_offer(&proxy, &first).await.0, 200);
    let revoke = |token: String| {
        let proxy = &proxy;
        async move {
            client()
                .post(proxy.url("/oauth2/revoke"))
                .form(&[
                    ("token", token.as_str()),
                    ("token_type_hint", "access_token"),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let response = revoke(first.clone()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let (status, body) = write_offer(&proxy, &first).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "TOKEN_REVOKED", "{body}");
    assert!(
        body["www-authenticate"]
            .as_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    assert_eq!(write_offer(&proxy, &second).await.0, 200, "only that token");
    // Unknown, garbage and already revoked tokens: 200, as RFC 7009 says.
    for token in [
        first,
        "eyJhbGciOiJFZERTQSJ9.e30.c2ln".to_owned(),
        "garbage".to_owned(),
    ] {
        assert_eq!(revoke(token).await.status(), 200);
    }
}

/// A config whose signing keys are files the test wrote: the first signs.
async fn proxy_with_keys(keys: &[&str]) -> (TestProxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (i, pem) in keys.iter().enumerate() {
        let path = dir.path().join(format!("key{i}.pem"));
        std::fs::write(&path, pem).unwrap();
        paths.push(path.display().to_string());
    }
    let proxy = proxy_with(|t| {
        t.replace(
            "\ntokens:\n",
            &format!("\ntokens:\n  signing_keys: [{}]\n", paths.join(", ")),
        )
    })
    .await;
    (proxy, dir)
}

fn own_claims(proxy: &TestProxy) -> Value {
    json!({
        "iss": proxy.url, "sub": "key:forged", "aud": proxy.url,
        "scope": "offers:read offers:write", "tier": "free",
        "iat": now(), "exp": now() + 300, "jti": format!("jti-{}", now()),
    })
}

fn sign(header: &Header, claims: &Value, pem: &str) -> String {
    let key = EncodingKey::from_ed_pem(pem.as_bytes()).unwrap();
    jsonwebtoken::encode(header, claims, &key).unwrap()
}

#[tokio::test]
async fn every_verification_rule_has_its_own_code() {
    let (key, pem) = SigningKey::generate(SigningAlgorithm::EdDsa).unwrap();
    let (_, other_pem) = SigningKey::generate(SigningAlgorithm::EdDsa).unwrap();
    let (proxy, _dir) = proxy_with_keys(&[&pem]).await;
    let mut head = Header::new(Algorithm::EdDSA);
    head.typ = Some("at+jwt".into());
    head.kid = Some(key.kid().to_owned());

    let good = sign(&head, &own_claims(&proxy), &pem);
    assert_eq!(
        write_offer(&proxy, &good).await.0,
        200,
        "the rules admit a good token"
    );

    let edit = |f: &dyn Fn(&mut Value)| {
        let mut claims = own_claims(&proxy);
        f(&mut claims);
        sign(&head, &claims, &pem)
    };
    let mut wrong_typ = head.clone();
    wrong_typ.typ = Some("JWT".into());
    let mut unknown_kid = head.clone();
    unknown_kid.kid = Some("not-a-kid".into());
    // HS256 "signed" with the public key: the classic confusion attack.
    let jwks = json(
        client()
            .get(proxy.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let public = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.typ = Some("at+jwt".into());
    hs.kid = head.kid.clone();
    let confused =
        jsonwebtoken::encode(&hs, &own_claims(&proxy), &EncodingKey::from_secret(&public)).unwrap();
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt"}"#),
        URL_SAFE_NO_PAD.encode(own_claims(&proxy).to_string())
    );
    // The good token's signature over claims that grant more.
    let mut richer = own_claims(&proxy);
    richer["scope"] = json!("offers:read offers:write offers:delete");
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(richer.to_string()),
        parts[2]
    );
    let cases = [
        (edit(&|c| c["exp"] = json!(now() - 1)), "TOKEN_EXPIRED"),
        (
            edit(&|c| c["aud"] = json!("https://other.example")),
            "TOKEN_AUDIENCE_MISMATCH",
        ),
        (
            edit(&|c| c["iss"] = json!("https://other.example")),
            "UNTRUSTED_TOKEN_ISSUER",
        ),
        (
            edit(&|c| c["iat"] = json!(now() + 3600)),
            "TOKEN_NOT_YET_VALID",
        ),
        (
            sign(&wrong_typ, &own_claims(&proxy), &pem),
            "INVALID_TOKEN_TYPE",
        ),
        (
            sign(&unknown_kid, &own_claims(&proxy), &pem),
            "UNKNOWN_TOKEN_KEY",
        ),
        (
            sign(&head, &own_claims(&proxy), &other_pem),
            "INVALID_TOKEN_SIGNATURE",
        ),
        (confused, "TOKEN_ALGORITHM_REFUSED"),
        (unsigned, "TOKEN_ALGORITHM_REFUSED"),
        (tampered, "INVALID_TOKEN_SIGNATURE"),
        (format!("{good}x"), "INVALID_TOKEN"),
    ];
    for (token, code) in cases {
        let (status, body) = write_offer(&proxy, &token).await;
        assert_eq!(status, 401, "{code}: {body}");
        assert_eq!(body["code"], code, "{body}");
        assert!(
            body["www-authenticate"]
                .as_str()
                .unwrap()
                .starts_with("Bearer resource_metadata="),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_rotated_out_key_still_verifies_while_the_new_one_signs() {
    let (old, old_pem) = SigningKey::generate(SigningAlgorithm::EdDsa).unwrap();
    let (new, new_pem) = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let (proxy, _dir) = proxy_with_keys(&[&new_pem, &old_pem]).await;
    let jwks = json(
        client()
            .get(proxy.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [new.kid(), old.kid()]);

    let mut head = Header::new(Algorithm::EdDSA);
    head.typ = Some("at+jwt".into());
    head.kid = Some(old.kid().to_owned());
    let signed_by_old = sign(&head, &own_claims(&proxy), &old_pem);
    assert_eq!(write_offer(&proxy, &signed_by_old).await.0, 200);

    let response = client()
        .post(proxy.url("/oauth2/token"))
        .header("authorization", basic("example-writer", WRITER_KEY))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let token = json(response).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let head = header(&token);
    assert_eq!(head["kid"], new.kid());
    assert_eq!(head["alg"], "ES256");
    assert_eq!(write_offer(&proxy, &token).await.0, 200);
}
