//! Every rejection's status, code, headers and envelope.

use super::*;
use crate::scope::ScopeRegistry;
use crate::tier::Tier;
use http_body_util::BodyExt;

fn responder() -> Responder {
    let mut scopes = ScopeRegistry::default();
    scopes.declare("a:read", "");
    let tier = |name: &'static str| Tier {
        name: name.into(),
        scopes: ScopeSet::EMPTY,
        header: HeaderValue::from_static(name),
        scopes_header: HeaderValue::from_static(""),
        limits: Arc::default(),
    };
    let tiers = Tiers(vec![tier("anonymous"), tier("gold")]);
    Responder::new("https://api.example.com", Arc::new(scopes), Arc::new(tiers))
}

/// Every variant: its status, its code, and the one header it must carry.
#[tokio::test]
async fn every_rejection_has_its_status_code_and_headers() {
    let r = responder();
    let missing = r.scopes.required(["a:read"]).unwrap();
    type Case = (
        Rejection,
        u16,
        &'static str,
        Option<(&'static str, &'static str)>,
    );
    let cases: Vec<Case> = vec![
        (
            Rejection::InvalidPath(PathError::Semicolon),
            400,
            "INVALID_PATH",
            None,
        ),
        (Rejection::RouteNotFound, 404, "NOT_FOUND", None),
        (
            Rejection::MethodNotAllowed(MethodSet::parse("POST").unwrap()),
            405,
            "METHOD_NOT_ALLOWED",
            Some(("allow", "POST")),
        ),
        (
            Rejection::AmbiguousCredentials,
            400,
            "INVALID_REQUEST",
            Some(("www-authenticate", "error=\"invalid_request\"")),
        ),
        (
            Rejection::MalformedCredential,
            400,
            "INVALID_REQUEST",
            Some(("www-authenticate", "error=\"invalid_request\"")),
        ),
        (
            Rejection::MissingCredential,
            401,
            "UNAUTHORIZED",
            Some((
                "www-authenticate",
                "Bearer resource_metadata=\"https://api.example.com/.well-known/oauth-protected-resource\"",
            )),
        ),
        (
            Rejection::InvalidApiKey,
            401,
            "INVALID_API_KEY",
            Some(("www-authenticate", "error=\"invalid_token\"")),
        ),
        (
            Rejection::InvalidToken(TokenError::Expired),
            401,
            "TOKEN_EXPIRED",
            Some(("www-authenticate", "error=\"invalid_token\"")),
        ),
        (
            Rejection::InsufficientScope { missing },
            403,
            "FORBIDDEN",
            Some(("www-authenticate", "error=\"insufficient_scope\"")),
        ),
        (
            Rejection::InsufficientTier(TierId(1)),
            403,
            "INSUFFICIENT_TIER",
            None,
        ),
        (
            Rejection::UpstreamUnavailable,
            502,
            "UPSTREAM_UNAVAILABLE",
            None,
        ),
        (Rejection::UpstreamTimeout, 504, "UPSTREAM_TIMEOUT", None),
        (Rejection::ClientBody, 400, "MALFORMED_BODY", None),
        (
            Rejection::IssuerKeysUnavailable,
            503,
            "ISSUER_JWKS_UNAVAILABLE",
            Some(("retry-after", "5")),
        ),
        (
            Rejection::Ambiguous(Ambiguity::TransferCoding),
            400,
            "AMBIGUOUS_FRAMING",
            None,
        ),
        (
            Rejection::Ambiguous(Ambiguity::Host),
            400,
            "AMBIGUOUS_HOST",
            None,
        ),
        (
            Rejection::TooLarge(Oversize::Uri),
            414,
            "URI_TOO_LONG",
            None,
        ),
        (
            Rejection::TooLarge(Oversize::Headers),
            431,
            "HEADERS_TOO_LARGE",
            None,
        ),
        (
            Rejection::TooLarge(Oversize::Body),
            413,
            "BODY_TOO_LARGE",
            None,
        ),
        (
            Rejection::RateLimited { retry_after: 7 },
            429,
            "RATE_LIMIT_EXCEEDED",
            Some(("retry-after", "7")),
        ),
        (Rejection::QuotaExceeded, 402, "QUOTA_EXCEEDED", None),
        (
            Rejection::Payment(PaymentError::Required),
            402,
            "PAYMENT_REQUIRED",
            None,
        ),
        (
            Rejection::Payment(PaymentError::Malformed),
            400,
            "PAYMENT_MALFORMED",
            None,
        ),
        (
            Rejection::Payment(PaymentError::Rejected),
            402,
            "PAYMENT_REJECTED",
            None,
        ),
        (
            Rejection::Payment(PaymentError::Unavailable),
            503,
            "PAYMENT_UNAVAILABLE",
            Some(("retry-after", "5")),
        ),
    ];
    let cases = cases.into_iter().chain([
        (
            Rejection::OAuth(OAuthError::InvalidRequest("x")),
            400,
            "INVALID_REQUEST",
            Some(("pragma", "no-cache")),
        ),
        (
            Rejection::OAuth(OAuthError::UnsupportedGrantType),
            400,
            "UNSUPPORTED_GRANT_TYPE",
            None,
        ),
        (
            Rejection::OAuth(OAuthError::UnsupportedResponseType),
            400,
            "UNSUPPORTED_RESPONSE_TYPE",
            None,
        ),
        (
            Rejection::OAuth(OAuthError::UnsupportedTokenType),
            400,
            "UNSUPPORTED_TOKEN_TYPE",
            None,
        ),
        (
            Rejection::OAuth(OAuthError::InvalidClient { basic: true }),
            401,
            "INVALID_CLIENT",
            Some(("www-authenticate", "Basic realm=")),
        ),
        (
            Rejection::OAuth(OAuthError::InvalidScope),
            400,
            "INVALID_SCOPE",
            Some(("pragma", "no-cache")),
        ),
        (
            Rejection::OAuth(OAuthError::InvalidTarget),
            400,
            "INVALID_TARGET",
            None,
        ),
        (
            Rejection::OAuth(OAuthError::InvalidGrant(GrantError::Replayed)),
            400,
            "ASSERTION_REPLAYED",
            None,
        ),
    ]);
    for (rejection, status, code, header) in cases {
        let documented = error_codes().any(|d| d.code == code && d.status == status)
            || OAuthError::DOCUMENTED
                .iter()
                .any(|e| e.code() == code && e.status().as_u16() == status)
            || TokenError::ALL
                .iter()
                .any(|e| e.code() == code && status == 401);
        assert!(documented, "{code} is not documented");
        let response = r.respond(rejection, None);
        assert_eq!(response.status().as_u16(), status, "{code}");
        if let Some((name, contains)) = header {
            let value = response.headers()[name].to_str().unwrap();
            assert!(value.contains(contains), "{code}: {name}: {value}");
        }
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["code"], code);
        assert!(
            json["docs"]
                .as_str()
                .unwrap()
                .starts_with("https://api.example.com/auth.md#")
        );
        assert!(!json["message"].as_str().unwrap().is_empty());
    }
}
