//! A flood of a million made-up anonymous identifiers against a limiter whose
//! ceiling is 100,000 subjects: memory stays bounded, the flooders earn no fresh
//! allowance past the ceiling, and a subject that was already refused stays
//! refused. Its own test binary, so the resident-set figures are this test's alone.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "helpers of the tests: a failed step fails the test"
)]

use std::net::IpAddr;
use std::time::Duration;

use authmd_proxy::credentials::{AnonymousId, Principal};
use authmd_proxy::limits::gcra::Rate;
use authmd_proxy::limits::{LimitSet, Limiter};

const CEILING: usize = 100_000;
const FLOOD: u64 = 1_000_000;
const NOW: i64 = 1_795_428_000;

/// Resident memory of this process in bytes (Linux), if known.
fn resident() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn a_million_random_identifiers_stay_under_the_ceiling_and_stay_limited() {
    let limits = LimitSet::new(
        "anonymous",
        vec![Rate::new(1, Duration::from_secs(3600)).unwrap()],
        None,
    );
    let limiter = Limiter::new(CEILING);
    let address: IpAddr = "192.0.2.1".parse().unwrap();

    let abuser = Principal::Anonymous(Some(AnonymousId(u64::MAX)));
    let abuser = abuser.subject(address, &limits);
    assert!(limiter.check(&abuser, NOW).exceeded.is_none());
    assert!(limiter.check(&abuser, NOW).exceeded.is_some());

    let before = resident();
    let mut admitted = 0u64;
    for n in 0..FLOOD {
        // Spread like real hashes of random identifiers.
        let id = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let principal = Principal::Anonymous(Some(AnonymousId(id)));
        let subject = principal.subject(address, &limits);
        if limiter.check(&subject, NOW).exceeded.is_none() {
            admitted += 1;
        }
    }
    let after = resident();

    assert!(
        limiter.tracked() <= CEILING,
        "{} tracked",
        limiter.tracked()
    );
    // Each identifier below the ceiling got its one request; past it, flooders
    // share the overflow buckets (1,024 of them, one request each).
    let below = CEILING as u64 - 1;
    assert!(admitted <= below + 1024, "{admitted} admitted");
    assert!(admitted >= below, "{admitted} admitted");
    assert!(
        limiter.check(&abuser, NOW).exceeded.is_some(),
        "the flood reset the abuser's bucket"
    );
    if let (Some(before), Some(after)) = (before, after) {
        let grown = after.saturating_sub(before);
        println!(
            "resident memory grew {} KiB for {} tracked subjects ({} bytes each)",
            grown / 1024,
            limiter.tracked(),
            grown / limiter.tracked() as u64
        );
        assert!(grown < 64 << 20, "resident memory grew {grown} bytes");
    }
}
