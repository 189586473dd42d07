//! Path normalisation and route matching.
//!
//! Feeds any UTF-8 string, as the path of a request target, to
//! `policy::normalize_path`, and routes what it accepts through the route table of
//! `config.example.yaml` (`RouteTable::find`) for every standard method and one
//! extension method. For an accepted path `p`, checks:
//!
//! 1. normalisation is idempotent: `normalize_path(p) == Ok(p)`;
//! 2. `p` is in normal form: starts with `/`, has no empty, `.` or `..` segment
//!    (only a trailing `/` may follow the last one), no `%2F`/`%5C`, `;`, `\` or
//!    control byte, and every escape left is upper-case hex of a byte that is not
//!    unreserved (those are always decoded);
//! 3. one percent-decoding of `p` (what an upstream that decodes sees) introduces no
//!    structure: no decoded segment contains `/`, `\`, `;` or a control byte, or is
//!    `.` or `..`;
//! 4. normalisation keeps the meaning of the raw path: the decoded segments of `p`
//!    equal those of an independent, naive RFC 3986 reading of the raw input
//!    (decode every escape, drop empty and `.` segments, `..` removes the previous);
//! 5. the route table applies to `p` exactly the rule that a hand-written reference
//!    of the example policy gives its decoded segments (same route id, or 405, or
//!    404). Since the proxy matches and forwards only `p`, 4 and 5 together say that
//!    no encoding of a path reaches a protected route under another (weaker) rule.
#![no_main]

use authmd_proxy::policy::normalize_path;
use authmd_proxy::policy::PolicyError;
use authmd_proxy_fuzz::fixture;
use http::Method;
use libfuzzer_sys::fuzz_target;

/// What the reference policy says for a method and path.
#[derive(Debug, PartialEq, Eq)]
enum Want {
    Route(&'static str),
    MethodNotAllowed,
    NotFound,
}

/// The routes of `config.example.yaml`, by hand (`default: deny`, case-sensitive):
/// a `GET` route also answers `HEAD`; a path that matches a template but none of
/// its methods is a 405.
fn reference(segments: &[Vec<u8>], method: &Method) -> Want {
    let s: Vec<&[u8]> = segments.iter().map(Vec::as_slice).collect();
    let is = |names: &[Method]| {
        names.contains(method) || (names.contains(&Method::GET) && *method == Method::HEAD)
    };
    let pick = |choices: &[(&[Method], &'static str)]| {
        choices
            .iter()
            .find(|(methods, _)| is(methods))
            .map_or(Want::MethodNotAllowed, |(_, id)| Want::Route(id))
    };
    match s.as_slice() {
        [b"health"] => pick(&[(&[Method::GET], "health")]),
        [b"api", b"v1", b"offers"] => pick(&[
            (&[Method::GET], "list-offers"),
            (&[Method::POST], "create-offer"),
        ]),
        [b"api", b"v1", b"offers", _] => pick(&[
            (&[Method::GET], "read-offer"),
            (&[Method::PUT, Method::PATCH], "change-offer"),
            (&[Method::DELETE], "delete-offer"),
        ]),
        [b"api", b"v1", b"offers", _, b"contact"] => pick(&[(&[Method::GET], "reveal-contact")]),
        [b"mcp", ..] => pick(&[(&[Method::GET, Method::POST, Method::DELETE], "mcp")]),
        _ => Want::NotFound,
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes every escape (`None` for a broken one).
fn decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn forbidden(b: u8) -> bool {
    matches!(b, b'/' | b'\\' | b';' | 0..=0x1f | 0x7f)
}

fuzz_target!(|raw: &str| {
    let Ok(normal) = normalize_path(raw) else {
        return;
    };
    let p: &str = &normal;

    // 1. Idempotent.
    assert_eq!(
        normalize_path(p).as_deref(),
        Ok(p),
        "not idempotent: {raw:?} -> {p:?}"
    );

    // 2. Normal form.
    assert!(p.starts_with('/'), "{p:?}");
    let body = &p[1..];
    let body = body.strip_suffix('/').unwrap_or(body);
    if !body.is_empty() {
        for segment in body.split('/') {
            assert!(
                !matches!(segment, "" | "." | ".."),
                "segment {segment:?} left in {p:?} (from {raw:?})"
            );
        }
    }
    assert!(!p.contains(';') && !p.contains('\\'), "{p:?}");
    assert!(!p.bytes().any(|b| b < 0x20 || b == 0x7f), "{p:?}");
    let upper = p.to_ascii_uppercase();
    assert!(!upper.contains("%2F") && !upper.contains("%5C"), "{p:?}");
    let bytes = p.as_bytes();
    for (i, _) in p.match_indices('%') {
        let (Some(&hi), Some(&lo)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
            panic!("broken escape at {i} in {p:?}");
        };
        assert!(
            hi.is_ascii_digit() || (b'A'..=b'F').contains(&hi),
            "escape not upper-case hex in {p:?}"
        );
        assert!(
            lo.is_ascii_digit() || (b'A'..=b'F').contains(&lo),
            "escape not upper-case hex in {p:?}"
        );
        let value = hex(hi).unwrap_or(0) << 4 | hex(lo).unwrap_or(0);
        assert!(
            !is_unreserved(value),
            "unreserved byte left encoded in {p:?}"
        );
    }

    // 3. One decoding by the upstream adds no structure.
    let decoded: Vec<Vec<u8>> = p
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| decode(s).unwrap_or_else(|| panic!("undecodable segment in {p:?}")))
        .collect();
    for segment in &decoded {
        assert!(
            !segment.iter().copied().any(forbidden) && segment != b"." && segment != b"..",
            "decoding {p:?} yields segment {:?}",
            String::from_utf8_lossy(segment)
        );
    }

    // 4. The same resource as a naive RFC 3986 reading of the raw path.
    let mut naive: Vec<Vec<u8>> = Vec::new();
    for part in raw[1..].split('/') {
        let segment = decode(part).unwrap_or_else(|| panic!("accepted a broken escape: {raw:?}"));
        match segment.as_slice() {
            b"" | b"." => {}
            b".." => {
                naive.pop();
            }
            _ => naive.push(segment),
        }
    }
    assert_eq!(
        naive, decoded,
        "{raw:?} normalised to {p:?}, which names another resource"
    );

    // 5. The route is the one the policy gives the decoded path.
    let policy = &fixture().config.policy;
    let methods = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
        Method::from_bytes(b"PURGE").unwrap_or_default(),
    ];
    for method in &methods {
        let got = match policy.find(method, p) {
            Ok(route) => Want::Route(match reference(&decoded, method) {
                Want::Route(id) if id == route.id => id,
                _ => panic!("{method} {p:?} (from {raw:?}) routed to `{}`", route.id),
            }),
            Err(PolicyError::MethodNotAllowed(_)) => Want::MethodNotAllowed,
            Err(PolicyError::RouteNotFound) => Want::NotFound,
            Err(other) => panic!("{method} {p:?}: unexpected refusal {other:?}"),
        };
        assert_eq!(
            got,
            reference(&decoded, method),
            "{method} {p:?} (from {raw:?})"
        );
    }
});
