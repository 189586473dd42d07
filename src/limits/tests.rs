//! Unit tests of the limiter: parsing, buckets on the paused clock, client
//! addresses, subject names, and the address budget of anonymous identifiers.

use super::*;

#[test]
fn rates_and_quotas_parse() {
    let r = parse_rate("10/s").unwrap();
    assert_eq!((r.limit, r.window), (10, Duration::from_secs(1)));
    assert_eq!(
        parse_rate("300/min").unwrap().window,
        Duration::from_secs(60)
    );
    assert_eq!(
        parse_rate("100 / 10s").unwrap().window,
        Duration::from_secs(10)
    );
    assert!(parse_rate("0/s").is_err());
    assert!(parse_rate("10/ms").is_err());
    assert!(parse_rate("10/month").is_err());
    assert!(parse_rate("ten/s").is_err());
    assert_eq!(
        parse_quota("5000/month").unwrap(),
        Quota {
            limit: 5000,
            period: quota::Period::Month
        }
    );
    assert_eq!(parse_quota("1/day").unwrap().period, quota::Period::Day);
    assert!(parse_quota("5/week").is_err());
    assert!(parse_quota("0/day").is_err());
}

#[test]
fn rate_lists_are_sorted_and_checked_whole() {
    let rates = parse_rates(&["300/min", "10/s"]).unwrap();
    assert_eq!(rates[0].window, Duration::from_secs(1));
    let errors = parse_rates(&["1/s", "2/1s", "x", "1/m", "1/h", "1/d", "1/10s"]).unwrap_err();
    assert_eq!(errors[0].0, Some(1), "{errors:?}");
    assert!(errors[0].1.contains("same window"));
    assert_eq!(errors[1].0, Some(2));
    assert_eq!(errors[2], (None, "at most 4 rates per tier or key".into()));
}

#[tokio::test(start_paused = true)]
async fn address_limiter_burst_then_one_per_interval() {
    let limiter = AddressLimiter::new(5, Duration::from_secs(3600)).unwrap();
    let a: IpAddr = "192.0.2.1".parse().unwrap();
    let b: IpAddr = "192.0.2.2".parse().unwrap();
    for _ in 0..5 {
        assert_eq!(limiter.check(a), Ok(()));
    }
    assert_eq!(
        limiter.check(a),
        Err(720),
        "the next one is 12 minutes away"
    );
    assert_eq!(limiter.check(b), Ok(()), "addresses are independent");
    tokio::time::advance(Duration::from_secs(719)).await;
    assert_eq!(limiter.check(a), Err(1));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(limiter.check(a), Ok(()));
    assert_eq!(limiter.check(a), Err(720));
    assert!(AddressLimiter::new(0, Duration::from_secs(1)).is_none());
}

#[tokio::test(start_paused = true)]
async fn address_limiter_counts_only_what_is_not_given_back() {
    let limiter = AddressLimiter::new(2, Duration::from_secs(3600)).unwrap();
    let a: IpAddr = "192.0.2.1".parse().unwrap();
    for _ in 0..10 {
        assert_eq!(limiter.check(a), Ok(()));
        limiter.give_back(a);
    }
    assert_eq!(limiter.check(a), Ok(()));
    assert_eq!(limiter.check(a), Ok(()));
    assert!(limiter.check(a).is_err());
}

#[tokio::test(start_paused = true)]
async fn several_windows_burst_refill_and_report_on_the_paused_clock() {
    let second = Rate::new(2, Duration::from_secs(1)).unwrap();
    let minute = Rate::new(3, Duration::from_secs(60)).unwrap();
    let limits = LimitSet::new("t", vec![second, minute], None);
    let limiter = Limiter::new(10);
    let subject = Subject::address("192.0.2.1".parse().unwrap(), &limits);
    let check = || {
        let v = limiter.check(&subject, 0);
        let w = |i: usize| {
            let w: Window = v.windows[i].unwrap();
            (w.remaining, w.reset_secs)
        };
        (v.exceeded, w(0), w(1))
    };
    // A burst of two: the second window is the per-second one's limit.
    assert_eq!(check(), (None, (1, 1), (2, 20)));
    assert_eq!(check(), (None, (0, 1), (1, 40)));
    // The third is refused by the second; the minute window is untouched.
    let refused = Some(Exceeded::Rate { retry_after: 1 });
    assert_eq!(check(), (refused, (0, 1), (1, 40)));
    // Half a second refills one request of the per-second window.
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(check(), (None, (0, 1), (0, 20)));
    // A second later the per-second window is full, but the minute window is
    // empty for 18.5 s more: refused, and the per-second window gets its request
    // back (it reports full).
    tokio::time::advance(Duration::from_secs(1)).await;
    let refused = Some(Exceeded::Rate { retry_after: 19 });
    assert_eq!(check(), (refused, (2, 0), (0, 19)));
    tokio::time::advance(Duration::from_millis(18_500)).await;
    assert_eq!(check(), (None, (1, 1), (0, 20)));
}

fn settings(trusted: &[&str]) -> LimitSettings {
    LimitSettings {
        trusted_proxies: trusted.iter().map(|n| n.parse().unwrap()).collect(),
        ..LimitSettings::default()
    }
}

#[test]
fn forwarded_for_is_read_only_from_trusted_proxies() {
    let mut headers = HeaderMap::new();
    headers.append("x-forwarded-for", "203.0.113.9, 10.0.0.7".parse().unwrap());
    let peer: IpAddr = "10.0.0.1".parse().unwrap();
    let untrusted = settings(&[]);
    assert_eq!(untrusted.client_address(peer, &headers), peer);
    let trusted = settings(&["10.0.0.0/8"]);
    assert_eq!(
        trusted.client_address(peer, &headers),
        "203.0.113.9".parse::<IpAddr>().unwrap(),
        "the rightmost address that is not a trusted proxy"
    );
    // A client cannot hide behind a forged entry to the left of its own.
    headers.insert(
        "x-forwarded-for",
        "198.51.100.1, 203.0.113.9".parse().unwrap(),
    );
    assert_eq!(
        trusted.client_address(peer, &headers),
        "203.0.113.9".parse::<IpAddr>().unwrap()
    );
    // Garbage stops the walk at the last good hop.
    headers.insert("x-forwarded-for", "nonsense, 10.0.0.8".parse().unwrap());
    assert_eq!(
        trusted.client_address(peer, &headers),
        "10.0.0.8".parse::<IpAddr>().unwrap()
    );
    // An IPv4-mapped peer matches an IPv4 network.
    let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
    headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
    assert_eq!(
        trusted.client_address(mapped, &headers),
        "203.0.113.9".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn subject_names_hash_to_their_keys() {
    let limits = LimitSet::default();
    let address: IpAddr = "192.0.2.7".parse().unwrap();
    let subject = Subject::address(address, &limits);
    assert_eq!(subject.name(), "addr:192.0.2.7");
    assert_eq!(key_of_name(&subject.name()), subject.key);
    let subject = Subject::anonymous(0xabc, &limits);
    assert_eq!(subject.name(), "anonymous:0000000000000abc");
    assert_eq!(key_of_name(&subject.name()), subject.key);
}

/// The anonymous tier of the budget tests: 5 a minute, and 5 from one address
/// shared by all its identifiers at `factor` times that.
fn anonymous(factor: u32) -> (LimitSet, Option<LimitSet>) {
    let tier = LimitSet::new(
        "anonymous",
        vec![Rate::new(5, Duration::from_secs(60)).unwrap()],
        None,
    );
    let budget = LimitSet::per_address(&tier, factor);
    (tier, budget)
}

#[test]
fn the_address_budget_multiplies_every_window_and_can_be_off() {
    let tier = LimitSet::new(
        "anonymous",
        vec![
            Rate::new(2, Duration::from_secs(1)).unwrap(),
            Rate::new(60, Duration::from_secs(60)).unwrap(),
        ],
        Some(Quota {
            limit: 100,
            period: quota::Period::Day,
        }),
    );
    let budget = LimitSet::per_address(&tier, 4).unwrap();
    let windows: Vec<_> = budget.rates.iter().map(|r| (r.limit, r.window)).collect();
    assert_eq!(
        windows,
        [(8, Duration::from_secs(1)), (240, Duration::from_secs(60))]
    );
    assert_eq!(budget.quota, None, "the budget is of rates only");
    assert_eq!(budget.name, "anonymous-per-address");
    assert!(LimitSet::per_address(&tier, 0).is_none());
    assert!(LimitSet::per_address(&LimitSet::default(), 4).is_none());
    let huge = LimitSet::per_address(&tier, u32::MAX).unwrap();
    assert_eq!(huge.rates[0].limit, u32::MAX, "saturates");
}

#[tokio::test(start_paused = true)]
async fn made_up_identifiers_share_the_budget_of_their_address() {
    let (tier, budget) = anonymous(4);
    let limiter = Limiter::new(1000);
    let address: IpAddr = "192.0.2.1".parse().unwrap();
    let other: IpAddr = "192.0.2.2".parse().unwrap();
    let check = |id: u64, from: IpAddr| {
        let subject = Subject::anonymous(id, &tier).sharing_address_budget(from, budget.as_ref());
        limiter.check(&subject, 0)
    };
    let admitted = (0..20u64)
        .flat_map(|id| [id; 5])
        .filter(|&id| check(id, address).exceeded.is_none())
        .count();
    assert_eq!(admitted, 20, "four identifiers' worth, not a hundred");
    // A fresh identifier is refused by the budget, and the verdict says so.
    let refused = check(99, address);
    assert_eq!(refused.exceeded, Some(Exceeded::Rate { retry_after: 3 }));
    assert_eq!(refused.limits.name, "anonymous-per-address");
    let tightest = refused.tightest().unwrap();
    assert_eq!((tightest.limit, tightest.remaining), (20, 0));
    // The refusal took nothing from the identifier's own window...
    let own = Subject::anonymous(99, &tier);
    let standing = limiter.buckets.bucket(own.key, |b| {
        tier.rates[0].standing(b.0[0].load(Ordering::Relaxed), limiter.clock.now())
    });
    assert_eq!(standing.remaining, 5);
    // ...and another address has a budget of its own.
    assert!(check(99, other).exceeded.is_none());
    // Three seconds refill one request of the budget (20 a minute).
    tokio::time::advance(Duration::from_secs(3)).await;
    assert!(check(99, address).exceeded.is_none());
    assert!(check(98, address).exceeded.is_some());
}

#[tokio::test(start_paused = true)]
async fn the_budget_leaves_keys_and_address_subjects_alone_and_reports_when_tighter() {
    let (tier, budget) = anonymous(2);
    let limiter = Limiter::new(1000);
    let address: IpAddr = "192.0.2.1".parse().unwrap();
    // Only anonymous identifiers share the budget.
    let key = Subject::named(b"key:writer", &tier).sharing_address_budget(address, budget.as_ref());
    let bare = Subject::address(address, &tier).sharing_address_budget(address, budget.as_ref());
    for _ in 0..5 {
        assert!(limiter.check(&key, 0).exceeded.is_none());
        assert!(limiter.check(&bare, 0).exceeded.is_none());
    }
    let check = |id: u64| {
        let subject =
            Subject::anonymous(id, &tier).sharing_address_budget(address, budget.as_ref());
        limiter.check(&subject, 0)
    };
    // The budget (10) is whole: the first identifier is told its own window.
    let first = check(1);
    assert_eq!(first.limits.name, "anonymous");
    assert_eq!(first.tightest().unwrap().remaining, 4);
    for _ in 0..4 {
        check(1);
    }
    assert!(check(2).exceeded.is_none());
    // After 7 of 10, a third identifier has 4 of its own left but the budget 3:
    // the headers tell the budget.
    let second = check(3);
    assert!(second.exceeded.is_none());
    assert_eq!(second.limits.name, "anonymous-per-address");
    let tightest = second.tightest().unwrap();
    assert_eq!((tightest.limit, tightest.remaining), (10, 3));
}

#[tokio::test(start_paused = true)]
async fn a_used_up_quota_gives_the_budget_back_its_request() {
    let tier = LimitSet::new(
        "anonymous",
        vec![Rate::new(5, Duration::from_secs(60)).unwrap()],
        Some(Quota {
            limit: 1,
            period: quota::Period::Day,
        }),
    );
    let budget = LimitSet::per_address(&tier, 1);
    let limiter = Limiter::new(1000);
    let address: IpAddr = "192.0.2.1".parse().unwrap();
    let check = |id: u64| {
        let subject =
            Subject::anonymous(id, &tier).sharing_address_budget(address, budget.as_ref());
        limiter.check(&subject, 1_795_428_000)
    };
    assert!(check(1).exceeded.is_none());
    for _ in 0..10 {
        assert_eq!(check(1).exceeded, Some(Exceeded::Quota));
    }
    // The budget of 5 lost only the one request that passed.
    let passed = (2..10u64)
        .filter(|&id| check(id).exceeded.is_none())
        .count();
    assert_eq!(passed, 4);
}

#[test]
fn the_budget_buckets_stay_under_the_ceiling() {
    let (tier, budget) = anonymous(4);
    let limiter = Limiter::new(100);
    for n in 0..10_000u64 {
        let address = IpAddr::from(std::net::Ipv4Addr::from(u32::try_from(n).unwrap()));
        let subject = Subject::anonymous(n, &tier).sharing_address_budget(address, budget.as_ref());
        limiter.check(&subject, 0);
    }
    assert!(limiter.tracked() <= 100, "{}", limiter.tracked());
}

#[tokio::test(start_paused = true)]
async fn own_rates_divided_skipped_or_decided_elsewhere() {
    let limits = LimitSet::new(
        "free",
        vec![parse_rate("30/min").unwrap()],
        Some(parse_quota("100/day").unwrap()),
    );
    let limiter = Limiter::new(100);
    let subject = Subject::named(b"key:a", &limits);
    // A third of the fleet's limit, on this replica's own buckets.
    let share = (0..40)
        .take_while(|_| {
            let verdict = limiter.check_with(&subject, 0, OwnRates::Local { divisor: 3 });
            verdict.exceeded.is_none()
        })
        .count();
    assert_eq!(share, 10);
    let refused = limiter.check_with(&subject, 0, OwnRates::Local { divisor: 3 });
    assert_eq!(
        refused.windows[0].unwrap().limit,
        10,
        "the share is what the window says"
    );
    // Skipped: only the quota counts (10 taken so far).
    let open = limiter.check_with(&subject, 0, OwnRates::Skipped);
    assert_eq!(open.exceeded, None);
    assert_eq!(open.windows[0], None);
    assert_eq!(open.windows[MAX_WINDOWS].unwrap().remaining, 100 - 11);
    // Decided elsewhere: the windows stand as given, and a refusal takes no quota.
    let given = Window {
        limit: 30,
        window_secs: 60,
        remaining: 0,
        reset_secs: 2,
    };
    let mut windows = [None; MAX_WINDOWS + 1];
    windows[0] = Some(given);
    let refused = limiter.check_with(&subject, 0, OwnRates::Refused(&windows));
    assert_eq!(refused.exceeded, Some(Exceeded::Rate { retry_after: 2 }));
    assert_eq!(refused.windows[MAX_WINDOWS].unwrap().remaining, 100 - 11);
    let admitted = limiter.check_with(&subject, 0, OwnRates::Admitted(&windows));
    assert_eq!(admitted.exceeded, None);
    assert_eq!(admitted.windows[0], Some(given));
    assert_eq!(admitted.windows[MAX_WINDOWS].unwrap().remaining, 100 - 12);
}
