//! What the metrics cost a request: the admission decision of an allowed key with
//! and without what metrics add to it (two clock reads, the route's two
//! histograms, the request counter's cached child), the recording alone, and the
//! recording from two threads at once (the shared atomics' contention).
//!
//! `cargo bench --bench metrics`

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
use authmd_proxy::credentials::KeyTable;
use authmd_proxy::metrics::{MeterId, Meters, Metrics};
use authmd_proxy::pipeline::admit;
use authmd_proxy::policy::normalize_path;
use authmd_proxy::scope::ScopeHeaders;
use authmd_proxy::tokens::Tokens;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Method, Request, StatusCode};
use tokio::time::Instant;

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

fn meters(config: &Config) -> Meters {
    Meters::new(
        Arc::new(Metrics::new().unwrap()),
        config.policy.ids(),
        config.tiers.all().iter().map(|t| t.name.as_str()),
    )
    .unwrap()
}

fn overhead(c: &mut Criterion) {
    let config = config();
    let table = KeyTable::default();
    for entry in &config.keys {
        table.insert_static(entry.clone());
    }
    let headers = Arc::new(ScopeHeaders::new(config.scopes.clone()));
    let tokens = Tokens::new(
        config.own_tokens(),
        None,
        &[],
        config.tiers.clone(),
        headers,
    );
    let meters = meters(&config);
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/offers")
        .header("x-agent-key", WRITER_KEY)
        .body(())
        .unwrap();
    let mut group = c.benchmark_group("metrics");
    group.bench_function("admit_without_metrics", |b| {
        b.iter(|| {
            let path = normalize_path(request.uri().path()).unwrap();
            let grant = admit(&config, &table, &tokens, black_box(&request), &path);
            black_box(grant.is_ok())
        });
    });
    group.bench_function("admit_with_metrics", |b| {
        b.iter(|| {
            let started = Instant::now();
            let path = normalize_path(request.uri().path()).unwrap();
            let grant = admit(&config, &table, &tokens, black_box(&request), &path);
            let meter = match &grant {
                Ok(grant) => MeterId::Route(grant.route.index),
                Err(_) => MeterId::default(),
            };
            let upstream = Some(Duration::from_micros(40));
            meters.request(
                meter,
                request.method(),
                StatusCode::OK,
                None,
                started.elapsed(),
                upstream,
            );
            black_box(grant.is_ok())
        });
    });
    group.bench_function("record_only", |b| {
        b.iter(|| {
            meters.request(
                black_box(MeterId::Route(1)),
                &Method::GET,
                StatusCode::OK,
                None,
                Duration::from_micros(90),
                Some(Duration::from_micros(40)),
            );
        });
    });
    group.bench_function("record_rejection", |b| {
        b.iter(|| {
            meters.request(
                black_box(MeterId::Route(1)),
                &Method::GET,
                StatusCode::UNAUTHORIZED,
                Some("UNAUTHORIZED"),
                Duration::from_micros(20),
                None,
            );
        });
    });
    group.finish();
}

fn contended(c: &mut Criterion) {
    let config = config();
    let meters = Arc::new(meters(&config));
    let mut group = c.benchmark_group("metrics_contended");
    group.bench_function("record_2_threads_same_route", |b| {
        b.iter_custom(|iters| {
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let meters = meters.clone();
                    std::thread::spawn(move || {
                        let started = Instant::now();
                        for _ in 0..iters {
                            meters.request(
                                MeterId::Route(1),
                                &Method::GET,
                                StatusCode::OK,
                                None,
                                Duration::from_micros(90),
                                Some(Duration::from_micros(40)),
                            );
                        }
                        started.elapsed()
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .max()
                .unwrap_or_default()
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = overhead, contended
}
criterion_main!(benches);
