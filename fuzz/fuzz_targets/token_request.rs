//! The token and revocation endpoints' requests: client authentication and
//! parameters.
//!
//! The input is header lines (`name: value`, as the `credentials` target reads
//! them) up to the first empty line, then the body, parsed by
//! `oauth::parse_request` exactly as `POST token` and `POST revoke` parse a request
//! once its body is read (form-urlencoded, or a JSON object when `Content-Type` says
//! so). Checks, besides never panicking, against an independent reading:
//!
//! - HTTP Basic (RFC 6749 section 2.3.1): the id and secret are the header's
//!   base64, split at the first `:`, each form-urlencoded-decoded; the id is not
//!   empty; the body then carries no `client_secret`, and a `client_id` in the body
//!   is the same id;
//! - without Basic, the id and secret are the body's `client_id` and
//!   `client_secret`, and a secret never comes without an id;
//! - no parameter but `resource` is accepted twice (section 3.2).
//!
//! (A refusal cannot repeat what the client sent: its texts are `&'static str` by
//! type.)
#![no_main]

use authmd_proxy::oauth::parse_request;
use authmd_proxy_fuzz::header_lines;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::AUTHORIZATION;
use libfuzzer_sys::fuzz_target;

/// The first `name` parameter of the body as the endpoint read it.
fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `application/x-www-form-urlencoded` decoding of one value: `+` is a space, `%XX`
/// a byte (only called on what the proxy accepted, so every escape is complete).
fn form_decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    let mut out = Vec::new();
    let mut rest = spaced.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' && tail.len() >= 2 {
            let hex = std::str::from_utf8(&tail[..2]).expect("an escape that is not text");
            out.push(u8::from_str_radix(hex, 16).expect("an escape that is not hex"));
            rest = &tail[2..];
        } else {
            out.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(out).expect("a decoded value that is not UTF-8")
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let headers = header_lines(head.split(|b| *b == b'\n'), "");
    let parsed = match parse_request(&headers, body) {
        Ok(parsed) => parsed,
        // A refusal cannot repeat what the client sent: its texts are `&'static str`
        // by type (`OAuthError`), so there is nothing to check at run time.
        Err(_) => return,
    };
    for (i, (name, _)) in parsed.form.iter().enumerate() {
        assert!(
            name == "resource" || !parsed.form[..i].iter().any(|(n, _)| n == name),
            "the repeated parameter {name:?} was accepted"
        );
    }
    if parsed.basic {
        let value = headers
            .get(AUTHORIZATION)
            .expect("Basic without an Authorization header")
            .to_str()
            .expect("a Basic header that is not text");
        let (scheme, encoded) = value.trim().split_once(' ').expect("a Basic header without a space");
        assert!(scheme.eq_ignore_ascii_case("basic"), "scheme {scheme:?} read as Basic");
        let decoded = STANDARD.decode(encoded.trim()).expect("Basic that is not base64");
        let decoded = String::from_utf8(decoded).expect("Basic that is not UTF-8");
        let (id, secret) = decoded.split_once(':').expect("Basic without a colon");
        let (id, secret) = (form_decode(id), form_decode(secret));
        assert!(!id.is_empty(), "an empty Basic id was accepted");
        assert_eq!(parsed.client_id.as_deref(), Some(id.as_str()));
        assert_eq!(parsed.client_secret.as_deref(), Some(secret.as_str()));
        assert!(
            param(&parsed.form, "client_secret").is_none(),
            "Basic and a body secret were both accepted"
        );
        if let Some(body_id) = param(&parsed.form, "client_id") {
            assert_eq!(body_id, id, "a body client_id other than the Basic id was accepted");
        }
    } else {
        assert_eq!(parsed.client_id.as_deref(), param(&parsed.form, "client_id"));
        assert_eq!(parsed.client_secret.as_deref(), param(&parsed.form, "client_secret"));
        assert!(
            parsed.client_secret.is_none() || parsed.client_id.is_some(),
            "a secret without an id was accepted"
        );
    }
});
