//! The auth.md's `## People and MCP clients` section, where people sign in: how
//! an interactive client (an MCP client, an app acting for a person) gets a
//! token through the authorization-code flow with PKCE.

use std::fmt::Write as _;

use crate::config::Config;

/// The section, when `login.providers` has any and the proxy issues tokens.
pub(super) fn people(md: &mut String, config: &Config, origin: &str) {
    if !config.login.enabled() || !config.tokens.enabled {
        return;
    }
    let endpoints = &config.endpoints;
    let _ = writeln!(md, "## People and MCP clients\n");
    let _ = writeln!(
        md,
        "If you act for a person (an MCP client, an app), get a token they approve with the OAuth 2.1 \
         authorization-code flow and PKCE:\n"
    );
    let mut step = 1;
    let documents = config.interactive.metadata_documents.enabled;
    if documents {
        let _ = writeln!(
            md,
            "{step}. If your client publishes a Client ID Metadata Document, its https URL is your \
             `client_id`: no registration. The document's `client_id` must equal that URL, it is \
             fetched without following redirects and must be at most {} bytes, and the client is public \
             (`\"token_endpoint_auth_method\": \"none\"`, no secret).",
            config.interactive.metadata_documents.max_bytes
        );
        step += 1;
    }
    if config.interactive.registration.enabled {
        let _ = writeln!(
            md,
            "{step}. {} once: `POST {origin}{}` with JSON client metadata (RFC 7591), at least \
             `redirect_uris` and `\"token_endpoint_auth_method\": \"none\"` for a public client; the \
             answer's `client_id` is yours. Redirect URIs are https, loopback http (any port) or your \
             app's own scheme.",
            if documents {
                "Otherwise, register"
            } else {
                "Register"
            },
            endpoints.oauth_register
        );
        step += 1;
    }
    let _ = writeln!(
        md,
        "{step}. Send the person's browser to `{origin}{}` with `response_type=code`, `client_id`, \
         `redirect_uri`, `state`, `code_challenge` (base64url SHA-256 of a random `code_verifier`) and \
         `code_challenge_method=S256`, `scope`, and `resource` (the protected resource's URL, e.g. \
         `{origin}`). They sign in and approve; the browser comes back to your `redirect_uri` with \
         `code`, your `state` and `iss` (check it is `{origin}`).",
        endpoints.authorize
    );
    let _ = writeln!(
        md,
        "{}. Within {} seconds, `POST {origin}{}` with `grant_type=authorization_code`, `code`, \
         `redirect_uri`, `client_id` and `code_verifier`. The answer has `access_token` and \
         `refresh_token`.",
        step + 1,
        config.interactive.code_ttl.as_secs(),
        endpoints.token
    );
    let _ = writeln!(
        md,
        "{}. Refresh with `grant_type=refresh_token`, `refresh_token` and `client_id`. Each refresh \
         gives a new `refresh_token`: keep only the newest; an old one used again ends the whole grant.\n",
        step + 2
    );
}
