//! Memory per loaded key: loads N store keys into the in-memory table the way the
//! store follower does (records compiled into entries, with their writer state) and
//! reports the growth of the process's resident memory per key.
//!
//! `cargo bench --bench key_memory` (N defaults to 1,000,000; set KEYS to change it).

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    missing_docs,
    reason = "a benchmark harness: a failure is a bug to see at once, and its report is its output"
)]

use authmd_proxy::config::{Config, Overrides};
use authmd_proxy::credentials::{KeyHash, KeyTable};
use authmd_proxy::store::KeyRecord;
use authmd_proxy::store::sync::Compiler;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn main() {
    let n: usize = std::env::var("KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
        .unwrap();
    let config =
        Config::from_yaml_str(&text, "config.example.yaml", &Overrides::default(), &|_| {
            None
        })
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let table = KeyTable::default();
    let compiler = Compiler::new(config.scopes, config.tiers);
    let before = resident_bytes();
    runtime.block_on(async {
        for i in 0..n {
            let record = KeyRecord {
                id: format!("key_{i:022}"),
                hash: KeyHash::of(&format!("secret {i}")),
                prefix: "ak_live".into(),
                name: "registered agent".into(),
                owner: format!("reg:reg_{i:022}"),
                scopes: vec!["offers:read".into(), "offers:write".into()],
                tier: "free".into(),
                created_at: 1_800_000_000,
                expires_at: None,
                revoked_at: None,
                last_used_at: None,
                previous_hash: None,
                previous_expires_at: None,
                registration_id: Some(format!("reg_{i:022}")),
                updated_at: 1,
                limits: None,
                operator: None,
            };
            let change = compiler.change_of(&record, 1_800_000_000);
            table.apply(&record.id, change).await;
        }
    });
    let after = resident_bytes();
    println!(
        "{n} keys: resident memory +{:.1} MiB, {} bytes per key",
        (after - before) as f64 / (1024.0 * 1024.0),
        (after - before) / n as u64
    );
}
