//! The admission decision of a request: `pipeline::admit`.
//!
//! Feeds a request head: `METHOD target` on the first line, then `name: value`
//! header lines (`{token}` in a value becomes a token the harness issued at
//! start-up). The target's path goes through `policy::normalize_path`, as the
//! gateway does, and the request through `admit` with `config.example.yaml`, its
//! key table and a token verifier. Checks that nothing panics, and that a grant is
//! earned:
//!
//! - the granted (or refused) route is the one `RouteTable::find` gives;
//! - a public route is granted without looking at credentials; any other grant
//!   carries a principal that holds every scope and the tier the route requires,
//!   and a `credential` route is never granted to an anonymous principal;
//! - a key principal comes only from an example key's secret, a token principal
//!   only from a token signed with the harness key (checked outside the JWT
//!   library).
#![no_main]

use authmd_proxy::credentials::{Presented, Principal};
use authmd_proxy::pipeline::admit;
use authmd_proxy::policy::{Access, normalize_path};
use authmd_proxy_fuzz::{READER_KEY, WRITER_KEY, fixture, request_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some(request) = request_head(data, &f.fresh_token) else {
        return;
    };
    let Ok(path) = normalize_path(request.uri().path()) else {
        return;
    };
    let config = &f.config;
    let found = config
        .policy
        .find(request.method(), &path)
        .map(|r| r.id.as_str());
    match admit(config, &f.keys, &f.tokens, &request, &path) {
        Err(refusal) => {
            if let Some(route) = refusal.route {
                assert_eq!(
                    found.ok(),
                    Some(route.id.as_str()),
                    "refused on another route"
                );
            }
        }
        Ok(grant) => {
            let route = grant.route;
            assert_eq!(
                found.ok(),
                Some(route.id.as_str()),
                "granted on another route"
            );
            if route.access == Access::Public {
                assert!(
                    grant.principal.is_none(),
                    "a public route looked at credentials"
                );
                return;
            }
            let Some(principal) = &grant.principal else {
                panic!("`{}` granted without a principal", route.id);
            };
            let held = principal.scopes(&config.tiers);
            assert!(
                route.scopes.missing_from(&held).is_empty(),
                "`{}` granted without its scopes to {principal:?}",
                route.id
            );
            if let Some(min) = route.min_tier {
                assert!(
                    principal.tier() >= min,
                    "`{}` granted below its tier",
                    route.id
                );
            }
            if route.access == Access::Credential {
                assert!(
                    principal.is_authenticated(),
                    "`{}` granted anonymously",
                    route.id
                );
            }
            let presented = config.credentials.extract(request.headers());
            match (principal, presented) {
                (Principal::Anonymous(_), _) => {}
                (Principal::Key(_), Ok(Presented::Key(key))) => {
                    assert!(
                        key == WRITER_KEY || key == READER_KEY,
                        "unknown key admitted: {key:?}"
                    );
                }
                (Principal::Token(_), Ok(Presented::Token(token))) => {
                    assert!(
                        f.signed_by_harness(token),
                        "forged token admitted: {token:?}"
                    );
                }
                (principal, presented) => {
                    panic!("{principal:?} admitted, but the request presents {presented:?}")
                }
            }
        }
    }
});
