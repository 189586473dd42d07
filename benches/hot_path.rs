//! Criterion micro-benchmarks of every hot-path step, so that a regression shows up
//! as a number before it shows up as a slow proxy: path normalisation, route lookup,
//! credential extraction and key verification (10 keys vs 1,000,000), and the whole
//! admission decision for an allowed key, an anonymous agent and a 401; access
//! tokens (EdDSA and ES256), verified cold and from the verified-token cache; the
//! header hygiene of a forwarded request; and the rejection responses. The rate
//! limiter and the metrics have benches of their own (`limits`, `metrics`).
//!
//! `cargo bench --bench hot_path`

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark setup: a failed step should stop the run loudly"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use authmd_proxy::config::{Config, Overrides};
use authmd_proxy::credentials::key_table::KeyProfile;
use authmd_proxy::credentials::{KeyEntry, KeyHash, KeyTable, api_key};
use authmd_proxy::pipeline::admit;
use authmd_proxy::policy::normalize_path;
use authmd_proxy::proxy::headers;
use authmd_proxy::rejection::{Rejection, Responder};
use authmd_proxy::scope::{ScopeHeaders, ScopeSet};
use authmd_proxy::tier::TierId;
use authmd_proxy::tokens::signing::{SigningAlgorithm, SigningKeys};
use authmd_proxy::tokens::{Issue, Tokens};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Method, Request};

const EXAMPLE: &str = include_str!("../config.example.yaml");
const WRITER_KEY: &str = "ak_live_ELG2kKEXEd3Ty98ZgEKCTBzmD28tyKbnV2vJrzG";

fn config() -> Config {
    Config::from_yaml_str(
        EXAMPLE,
        "config.example.yaml",
        &Overrides::default(),
        &|_| None,
    )
    .expect("the example config is valid")
}

/// A token verifier that signs with a fresh key of `algorithm`.
fn tokens(config: &Config, algorithm: SigningAlgorithm) -> (Tokens, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let keys = SigningKeys::from_dir(dir.path(), algorithm, 3600, now()).unwrap();
    let headers = Arc::new(ScopeHeaders::new(config.scopes.clone()));
    (
        Tokens::new(
            config.own_tokens(),
            Some(keys.into()),
            &[],
            config.tiers.clone(),
            headers,
        ),
        dir,
    )
}

fn now() -> i64 {
    authmd_proxy::clock::unix_now()
}

fn token(config: &Config, tokens: &Tokens) -> String {
    let scopes = config
        .scopes
        .granted(["offers:read", "offers:write"])
        .unwrap();
    let issue = Issue {
        subject: "key:example-writer",
        audience: &config.public_url,
        scopes,
        tier: TierId(1),
        client_id: Some("example-writer"),
        family: None,
        operator: None,
    };
    tokens.issue(&issue, now()).unwrap().token
}

fn table_with(config: &Config, extra: usize) -> KeyTable {
    let table = KeyTable::default();
    for entry in &config.keys {
        table.insert_static(entry.clone());
    }
    let profile = Arc::new(KeyProfile {
        scopes: ScopeSet::EMPTY,
        tier: TierId(1),
        scopes_header: http::HeaderValue::from_static(""),
        limits: None,
        is_static: true,
    });
    for i in 0..extra {
        // Random hashes stand in for minted keys: the table only ever sees hashes.
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).unwrap();
        let entry = KeyEntry::new(&format!("k{i}"), KeyHash(bytes), profile.clone()).unwrap();
        table.insert_static(Arc::new(entry));
    }
    table
}

fn request(method: Method, path: &str, header: Option<(&str, &str)>) -> Request<()> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some((name, value)) = header {
        builder = builder.header(name, value);
    }
    builder.body(()).unwrap()
}

fn paths(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize_path");
    group.bench_function("already_normal", |b| {
        b.iter(|| normalize_path(black_box("/api/v1/offers/12345")))
    });
    group.bench_function("needs_rewriting", |b| {
        b.iter(|| normalize_path(black_box("/api/v1/./offers//%31%32/../12345")))
    });
    group.finish();
}

fn routes(c: &mut Criterion) {
    let config = config();
    let mut group = c.benchmark_group("route_find");
    for (name, method, path) in [
        ("literal", Method::GET, "/api/v1/offers"),
        ("template", Method::PATCH, "/api/v1/offers/12345"),
        ("catch_all", Method::POST, "/mcp/tools/call"),
        ("not_found", Method::GET, "/nowhere/at/all"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let _ = black_box(config.policy.find(black_box(&method), black_box(path)));
            })
        });
    }
    group.finish();
}

fn keys(c: &mut Criterion) {
    let config = config();
    let minted = api_key::mint("ak_live").unwrap();
    let mut group = c.benchmark_group("verify_key");
    group.bench_function("checksum_only", |b| {
        b.iter(|| api_key::checksum_ok(black_box(&minted.secret), "ak_live"))
    });
    for (name, extra) in [("10_keys", 8), ("1m_keys", 1_000_000)] {
        let table = table_with(&config, extra);
        let headers = request(Method::GET, "/", Some(("x-api-key", WRITER_KEY)));
        group.bench_function(name, |b| {
            b.iter(|| {
                let presented = config
                    .credentials
                    .extract(black_box(headers.headers()))
                    .unwrap();
                black_box(
                    config
                        .credentials
                        .authenticate(presented, &table, None)
                        .unwrap(),
                );
            })
        });
    }
    group.finish();
}

fn access_tokens(c: &mut Criterion) {
    let config = config();
    let mut group = c.benchmark_group("verify_token");
    for (name, algorithm) in [
        ("eddsa", SigningAlgorithm::EdDsa),
        ("es256", SigningAlgorithm::Es256),
    ] {
        let (tokens, _dir) = tokens(&config, algorithm);
        let cached = token(&config, &tokens);
        tokens.verify(&cached, now()).unwrap();
        group.bench_function(format!("{name}_cached"), |b| {
            b.iter(|| black_box(tokens.verify(black_box(&cached), now()).unwrap()))
        });
        // A token never seen: signature, claims, grant compiled and cached.
        group.bench_function(format!("{name}_new"), |b| {
            b.iter_batched(
                || token(&config, &tokens),
                |fresh| black_box(tokens.verify(&fresh, now()).unwrap()),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn admission(c: &mut Criterion) {
    let config = config();
    let table = table_with(&config, 8);
    let (tokens, _dir) = tokens(&config, SigningAlgorithm::EdDsa);
    let bearer = format!("Bearer {}", token(&config, &tokens));
    let mut group = c.benchmark_group("admit");
    let cases = [
        (
            "key_allowed",
            request(
                Method::POST,
                "/api/v1/offers",
                Some(("x-agent-key", WRITER_KEY)),
            ),
        ),
        (
            "anonymous_allowed",
            request(
                Method::GET,
                "/api/v1/offers",
                Some(("x-agent-key", "my-agent")),
            ),
        ),
        (
            "token_allowed",
            request(
                Method::POST,
                "/api/v1/offers",
                Some(("authorization", &bearer)),
            ),
        ),
        (
            "rejected_401",
            request(Method::POST, "/api/v1/offers", None),
        ),
    ];
    for (name, req) in &cases {
        group.bench_function(*name, |b| {
            b.iter_batched_ref(
                || (),
                |()| {
                    let path = normalize_path(req.uri().path()).unwrap();
                    let _ = black_box(admit(&config, &table, &tokens, black_box(req), &path));
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// What `proxy::Upstream::forward` does to a request's headers on its way out.
fn forward_headers(c: &mut Criterion) {
    let typical = {
        let mut r = request(
            Method::GET,
            "/api/v1/offers",
            Some(("x-api-key", WRITER_KEY)),
        );
        let h = r.headers_mut();
        h.insert("host", "api.example.com".parse().unwrap());
        h.insert("user-agent", "agent/1.0".parse().unwrap());
        h.insert("accept", "application/json".parse().unwrap());
        r
    };
    let keep_alive = {
        let mut r = typical.clone();
        r.headers_mut()
            .insert("connection", "keep-alive".parse().unwrap());
        r
    };
    let peer = http::HeaderValue::from_static("10.1.2.3");
    let mut group = c.benchmark_group("forward_headers");
    for (name, req) in [
        ("no_hop_by_hop", &typical),
        ("connection_keep_alive", &keep_alive),
    ] {
        group.bench_function(format!("strip_hop_by_hop_{name}"), |b| {
            b.iter_batched_ref(
                || req.headers().clone(),
                |h| headers::strip_hop_by_hop(black_box(h), false),
                BatchSize::SmallInput,
            )
        });
    }
    group.bench_function("strip_identity", |b| {
        b.iter_batched_ref(
            || typical.headers().clone(),
            |h| headers::strip_identity(black_box(h)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("set_forwarded", |b| {
        b.iter_batched_ref(
            || typical.headers().clone(),
            |h| headers::set_forwarded(black_box(h), &peer, "https"),
            BatchSize::SmallInput,
        )
    });
    group.finish();

    // What every request passes before routing: its size limits, and that it can
    // be read only one way.
    let limits = config().server.request_limits;
    let mut group = c.benchmark_group("request_checks");
    group.bench_function("size_limits", |b| {
        b.iter(|| limits.check(black_box(&typical)))
    });
    group.bench_function("ambiguity", |b| {
        b.iter(|| headers::ambiguity(black_box(&typical)))
    });
    group.finish();
}

/// The JSON envelopes of the common refusals, with their headers.
fn rejections(c: &mut Criterion) {
    let config = config();
    let responder = &Responder::new(
        &config.public_url,
        config.scopes.clone(),
        config.tiers.clone(),
    );
    let missing = config.scopes.granted(["offers:delete"]).unwrap();
    let mut group = c.benchmark_group("respond");
    group.bench_function("invalid_api_key_401", |b| {
        b.iter(|| black_box(responder.respond(Rejection::InvalidApiKey, None)))
    });
    group.bench_function("missing_credential_401", |b| {
        b.iter(|| black_box(responder.respond(Rejection::MissingCredential, None)))
    });
    group.bench_function("insufficient_scope_403", |b| {
        b.iter(|| black_box(responder.respond(Rejection::InsufficientScope { missing }, None)))
    });
    group.bench_function("rate_limited_429", |b| {
        b.iter(|| black_box(responder.respond(Rejection::RateLimited { retry_after: 3 }, None)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = paths, routes, keys, access_tokens, admission, forward_headers, rejections
}
criterion_main!(benches);
