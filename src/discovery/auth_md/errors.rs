//! The auth.md's `## Errors` section: every code an agent can meet here, with what it
//! means and what to do, from the same table the answers are built from.

use std::fmt::Write as _;

use crate::config::Config;
use crate::rejection::error_codes;

/// The `## Errors` section; `(rated, quota)` say whether any tier has rate windows
/// or a quota.
pub(super) fn errors(md: &mut String, config: &Config, (rated, quota): (bool, bool)) {
    let _ = writeln!(
        md,
        "## Errors\n\nEvery error is JSON: `{{\"error\", \"code\", \"message\", \"docs\"}}`; OAuth endpoints add \
         `error_description`.\n\n| Status | Code | Meaning | What to do |\n|---|---|---|---|"
    );
    let pays = config.limits.payments.is_some();
    // Every trusted issuer is trusted for access tokens, identity assertions or
    // both (the config refuses one trusted for nothing); both answer this code.
    let issuers = !config.trusted_issuers.is_empty();
    let issuer_tokens = config.trusted_issuers.iter().any(|i| i.access_tokens);
    for e in error_codes() {
        let applies = match e.code {
            "RATE_LIMIT_EXCEEDED" => rated,
            "RATE_LIMIT_UNAVAILABLE" => {
                rated
                    && config.limits.global.as_ref().is_some_and(|g| {
                        g.on_unavailable == crate::limits::global::OnUnavailable::Closed
                    })
            }
            "ISSUER_JWKS_UNAVAILABLE" => issuers,
            "QUOTA_EXCEEDED" => quota && !pays,
            c if c.starts_with("PAYMENT_") => quota && pays,
            _ => true,
        };
        if !applies {
            continue;
        }
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} |",
            e.status, e.code, e.meaning, e.action
        );
    }
    if config.tokens.enabled || issuer_tokens {
        for e in crate::tokens::TokenError::ALL {
            let _ = writeln!(
                md,
                "| 401 | `{}` | {} | Get a new token; do not retry with this one. |",
                e.code(),
                e.message()
            );
        }
    }
    if config.tokens.enabled {
        let people = config.login.enabled();
        for e in crate::rejection::OAuthError::DOCUMENTED
            .iter()
            .filter(|e| people || !e.interactive())
        {
            let keyless_client = matches!(e, crate::rejection::OAuthError::InvalidClient { .. })
                && !config.tokens.api_keys;
            let description = if keyless_client {
                "client authentication failed: this API issues tokens without client credentials"
            } else {
                e.description()
            };
            let _ = writeln!(
                md,
                "| {} | `{}` (`{}`) | {description} | Fix the request as the message says. |",
                e.status().as_u16(),
                e.code(),
                e.name(),
            );
        }
    }
    if config.lifecycle.issues_keys() {
        use crate::rejection::LifecycleError as L;
        let user_code = config.lifecycle.registration.claim.user_code;
        for e in L::DOCUMENTED.iter().filter(|e| {
            user_code
                || !matches!(
                    e,
                    L::UserCodeInvalid
                        | L::UserCodeLocked
                        | L::UserCodeExpired
                        | L::UserCodeNotIssued
                )
        }) {
            let (status, _, code, message) = e.describe();
            let action = match e.retry_after() {
                Some(_) => "Wait `Retry-After` seconds, then retry.",
                None => "Fix the request as the message says; do not repeat it unchanged.",
            };
            let _ = writeln!(
                md,
                "| {} | `{code}` | {message} | {action} |",
                status.as_u16()
            );
        }
    }
    let _ = writeln!(
        md,
        "\nRetry policy: on `5xx`, back off exponentially and retry; on `4xx`, do not repeat the same request \
         unchanged; on a `401` with a credential that used to work, start again at Discover.\n"
    );
}
