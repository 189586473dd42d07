//! Header hygiene between client and upstream: hop-by-hop headers (RFC 9110 section
//! 7.6.1), `X-Forwarded-*`, consumed credentials and the identity headers; and what
//! makes a request too large or ambiguous to forward.

use http::header::{CONNECTION, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers that never cross the proxy.
static HOP_BY_HOP: [HeaderName; 7] = [
    CONNECTION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// `X-Authmd-Principal`.
pub static PRINCIPAL: HeaderName = HeaderName::from_static("x-authmd-principal");
/// `X-Authmd-Scopes`.
pub static SCOPES: HeaderName = HeaderName::from_static("x-authmd-scopes");
/// `X-Authmd-Tier`.
pub static TIER: HeaderName = HeaderName::from_static("x-authmd-tier");
/// `X-Authmd-Operator`: `<provider>:<handle>` of the person who claimed the key.
pub static OPERATOR: HeaderName = HeaderName::from_static("x-authmd-operator");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What makes a request ambiguous: a front end and a back end could each read it
/// differently, so it is refused rather than forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguity {
    /// A `Transfer-Encoding` other than exactly one `chunked`: a coding the proxy
    /// does not decode, or chunked applied twice.
    TransferCoding,
    /// An HTTP/2 request whose `Host` names another host than its `:authority`.
    Host,
}

/// Which part of a request is beyond its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// The request target (`server.max_uri`): 414.
    Uri,
    /// The header fields, by count or bytes (`server.max_headers`,
    /// `server.max_header_bytes`): 431.
    Headers,
    /// The declared body (`server.max_body`): 413.
    Body,
}

/// What makes a request ambiguous, if anything: a `Transfer-Encoding` other than
/// exactly one `chunked` (hyper decodes a final `chunked` and would pass any other
/// coding, or a second `chunked`, on undecoded), or an HTTP/2 `Host` that disagrees
/// with `:authority` (RFC 9113 section 8.3.1).
#[must_use]
pub fn ambiguity<B>(request: &http::Request<B>) -> Option<Ambiguity> {
    let headers = request.headers();
    let mut codings = headers.get_all(http::header::TRANSFER_ENCODING).iter();
    if let Some(first) = codings.next() {
        let only_chunked = first
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        if !only_chunked || codings.next().is_some() {
            return Some(Ambiguity::TransferCoding);
        }
    }
    if request.version() == http::Version::HTTP_2 {
        if let (Some(authority), Some(host)) = (request.uri().authority(), headers.get(HOST)) {
            if !host
                .as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes())
            {
                return Some(Ambiguity::Host);
            }
        }
    }
    None
}

/// True when the request asks to switch to WebSocket (HTTP/1.1 `Upgrade`), the one
/// protocol the proxy tunnels. Any other upgrade (`h2c` above all: a tunnel the proxy
/// could not see into) is not one: its `Upgrade` header is dropped as hop-by-hop and
/// the request is served as a plain one.
#[must_use]
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let mut upgrades = headers.get_all(UPGRADE).iter();
    let websocket = upgrades.next().is_some_and(|value| {
        value
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
    });
    websocket && upgrades.next().is_none() && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers and those the `Connection` header names. With
/// `keep_upgrade`, `Connection: upgrade` and `Upgrade` are kept for the next hop.
/// `Host` is never removed this way: a client listing it in `Connection` must not
/// be able to choose what the upstream is told about the host.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none: one pass over the few names present is cheaper than
    // hashing each of the seven for a lookup.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::try_from(t.trim()).ok())
            .filter(|name| *name != HOST)
            .collect();
        for name in named {
            if !(keep_upgrade && name == UPGRADE) {
                headers.remove(name);
            }
        }
    }
    let upgrade = keep_upgrade.then(|| headers.remove(UPGRADE)).flatten();
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(upgrade) = upgrade {
        headers.insert(UPGRADE, upgrade);
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Removes every `X-Authmd-*` header: only the proxy may set them.
pub fn strip_identity(headers: &mut HeaderMap) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-authmd-"))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
}

/// Sets `X-Forwarded-For` (appending the peer to the chain the client sent), and
/// replaces `-Proto` and `-Host` with what this hop saw: a client never chooses them.
pub fn set_forwarded(headers: &mut HeaderMap, peer_ip: &HeaderValue, proto: &'static str) {
    let forwarded_for = if headers.contains_key(&X_FORWARDED_FOR) {
        let mut chain: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        chain.push(peer_ip.to_str().unwrap_or(""));
        HeaderValue::from_str(&chain.join(", ")).unwrap_or_else(|_| peer_ip.clone())
    } else {
        peer_ip.clone()
    };
    headers.insert(X_FORWARDED_FOR.clone(), forwarded_for);
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    match headers.get(HOST).cloned() {
        Some(host) => headers.insert(X_FORWARDED_HOST.clone(), host),
        None => headers.remove(&X_FORWARDED_HOST),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn a_client_cannot_choose_the_forwarded_host() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("close, host"));
        h.insert(HOST, HeaderValue::from_static("api.example.com"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        strip_hop_by_hop(&mut h, false);
        set_forwarded(&mut h, &HeaderValue::from_static("127.0.0.1"), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "api.example.com");
        h.remove(HOST);
        set_forwarded(&mut h, &HeaderValue::from_static("127.0.0.1"), "http");
        assert!(h.get("x-forwarded-host").is_none());
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn forwarded_for_appends_and_identity_is_stripped() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x-authmd-principal", HeaderValue::from_static("key:admin"));
        h.insert("X-Authmd-Anything", HeaderValue::from_static("x"));
        h.insert(HOST, HeaderValue::from_static("api.example.com"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        strip_identity(&mut h);
        set_forwarded(&mut h, &HeaderValue::from_static("127.0.0.1"), "http");
        assert_eq!(
            h.get("x-forwarded-for").unwrap(),
            "10.0.0.1, 10.0.0.2, 127.0.0.1"
        );
        assert_eq!(h.get("x-forwarded-host").unwrap(), "api.example.com");
        assert!(!h.keys().any(|k| k.as_str().starts_with("x-authmd-")));
    }
}
