//! The auth.md's `## Claim` section, and what its `## Register` section says a
//! registration answer offers to claim. A claim is a person taking responsibility
//! for the agent: the document hands the claim URL to the agent's operator, or has
//! the agent present an identity assertion naming that person; it never tells the
//! agent to claim itself with its own claim token.

use std::fmt::Write as _;

use super::{code_list, contact, span};
use crate::config::{Claims, Config};
use crate::protocol::VERIFIED_EMAIL;

/// What a `verified_email` assertion is on this deployment (the `id_token`, its
/// issuers, client ids, domains and age), when an issuer is trusted for one.
pub(super) fn verified_email(config: &Config) -> Option<String> {
    let issuers: Vec<String> = config
        .trusted_issuers
        .iter()
        .filter_map(|i| {
            let settings = i.verified_email.as_ref()?;
            let domains = if settings.email_domains.is_empty() {
                String::new()
            } else {
                format!(
                    ", for addresses at {}",
                    settings
                        .email_domains
                        .iter()
                        .map(|d| format!("`{d}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            Some(format!(
                "`{}` (`aud` = `{}`, at most {} old{domains})",
                i.issuer,
                settings.client_id,
                span(settings.max_age),
            ))
        })
        .collect();
    if issuers.is_empty() {
        return None;
    }
    Some(format!(
        "the `id_token` is an OpenID Connect ID token with `email_verified: true` from a trusted issuer ({})",
        issuers.join("; ")
    ))
}

/// How the `## Register` section ends its list of what an anonymous registration
/// answer holds: the registration id, and the claim offer where there is one.
pub(super) fn offer(config: &Config) -> &'static str {
    match config.claims() {
        Claims::ByToken => {
            ", `registration_id`, and a one-time `claim_url` (with its `claim_token`) to hand to your operator \
             (see Claim)"
        }
        Claims::ByIdentity => {
            ", `registration_id` (a claim names it, see Claim), and a `claim_url` (with its `claim_token`) for \
             your operator"
        }
        Claims::BySignIn => {
            ", `registration_id`, and a one-time `claim_url` (with its `claim_token`) to hand to your operator, \
             who signs in to claim (see Claim)"
        }
        Claims::Nothing | Claims::Unavailable => " and `registration_id`",
    }
}

/// The `## Claim` section.
pub(super) fn claim(md: &mut String, config: &Config, origin: &str) {
    let registration = &config.lifecycle.registration;
    let tier = &config.tiers.get(registration.tier).name;
    let raised = format!(
        "the `{}` tier with {}",
        config.tiers.get(registration.claimed_tier).name,
        code_list(&config.scopes.names(&registration.claimed_scopes)),
    );
    let endpoint = format!("{origin}{}", config.endpoints.claim);
    let issuers: Vec<String> = config
        .identity_issuers()
        .map(|i| format!("`{}`", i.issuer))
        .collect();
    let id_jag_issuers: Vec<String> = config
        .trusted_issuers
        .iter()
        .filter(|i| i.identity_assertions)
        .map(|i| format!("`{}`", i.issuer))
        .collect();
    let mut with_assertion = if id_jag_issuers.is_empty() {
        String::new()
    } else {
        format!(
            "send `POST {endpoint}` with `{{\"registration_id\": \"...\", \"identity_assertion\": \"<ID-JAG>\"}}`: the \
             ID-JAG (`typ: oauth-id-jag+jwt`, `aud` = `{origin}`) comes from a trusted issuer ({}) and names the \
             person who takes responsibility for you. Each assertion works once (`jti`)",
            id_jag_issuers.join(", "),
        )
    };
    if let Some(email) = verified_email(config) {
        if !with_assertion.is_empty() {
            with_assertion.push_str("; or ");
        }
        let _ = write!(
            with_assertion,
            "send `POST {endpoint}` with `{{\"registration_id\": \"...\", \"assertion_type\": \"{VERIFIED_EMAIL}\", \
             \"identity_assertion\": \"<id_token>\"}}`, where {email}, naming the person who takes responsibility \
             for you. Each id_token works once"
        );
    }
    let ttl = span(registration.claim_ttl);
    let _ = writeln!(md, "## Claim\n");
    match config.claims() {
        Claims::Nothing => {
            let _ = writeln!(
                md,
                "There is no claim step: credentials are issued with their final scopes and tier.\n"
            );
        }
        Claims::Unavailable => {
            let _ = writeln!(
                md,
                "Claiming is not available on this deployment: a claim must carry an identity assertion from a \
                 trusted identity provider, and this server trusts none. A registration keeps the `{tier}` tier; \
                 for more, ask the operator of this API{}.\n",
                contact(config),
            );
        }
        Claims::ByToken => {
            let _ = writeln!(
                md,
                "A claim is your human operator taking responsibility for your registration; it raises the same \
                 key, in place, to {raised}. Give the `claim_url` to your operator, who opens it and confirms. Do \
                 not open it or send its `claim_token` yourself: the claim is theirs to make. The claim URL works \
                 once and expires after {ttl}.\n"
            );
            if !issuers.is_empty() {
                let _ = writeln!(
                    md,
                    "With an identity assertion for your operator, you can claim instead: {with_assertion}.\n"
                );
            }
            if config.lifecycle.registration.claim.by_registration_id {
                let _ = writeln!(
                    md,
                    "Here `POST {endpoint}` with `{{\"registration_id\": \"...\"}}` alone claims as the token \
                     does, once.\n"
                );
            }
        }
        Claims::BySignIn => {
            let providers: Vec<String> = config
                .login
                .providers
                .iter()
                .map(|p| p.display_name.clone())
                .collect();
            let _ = writeln!(
                md,
                "A claim is your human operator taking responsibility for your registration; it raises the same \
                 key, in place, to {raised}, and the upstream then sees who they are (`X-Authmd-Operator`). Give \
                 the `claim_url` to your operator: they open it in a browser, sign in ({}), check what the claim \
                 changes and confirm. Do not open it or send its `claim_token` yourself: only a signed-in person \
                 can claim. Keep using your key meanwhile; once claimed, the same key has the new scopes on its \
                 next request. The claim URL expires after {ttl}.\n",
                providers.join(", "),
            );
            if config.lifecycle.registration.claim.user_code {
                let _ = writeln!(
                    md,
                    "Here the operator's confirmation does not claim yet: the page shows them a short code \
                     (`XXXX-XXXX`) to give you. Finish the claim with `POST {endpoint}` and \
                     `{{\"registration_id\": \"...\", \"user_code\": \"XXXX-XXXX\"}}`; case and the dash do not \
                     matter. The answer is the claim's (`status: \"claimed\"`, \
                     the new `scopes`, `tier` and `operator`). The code works once, for {}; after {} wrong codes \
                     (`USER_CODE_INVALID` says how many tries are left) it is locked (`USER_CODE_LOCKED`), and an \
                     expired one is refused (`USER_CODE_EXPIRED`): either way your operator confirms again on the \
                     page for a new code. `USER_CODE_NOT_ISSUED`: they have not confirmed yet. Never guess a code: \
                     ask your operator.\n",
                    span(config.lifecycle.registration.claim.user_code_ttl),
                    crate::store::USER_CODE_TRIES,
                );
            }
            if config.lifecycle.issues_keys() {
                let _ = writeln!(
                    md,
                    "Once they have claimed it, your operator sees this agent and its keys (never their secrets) \
                     at `{origin}{}` after signing in, and can revoke a key there; a revoked key is answered `401` \
                     from then on.\n",
                    config.endpoints.operator,
                );
            }
            if !config.lifecycle.registration.claim.allowed.is_empty() {
                let _ = writeln!(
                    md,
                    "Only some people may claim here (by email domain or organization); ask the operator of \
                     this API{} if yours cannot.\n",
                    contact(config),
                );
            }
            if config
                .lifecycle
                .registration
                .assertion_claims(!issuers.is_empty())
            {
                let _ = writeln!(
                    md,
                    "With an identity assertion for your operator, you can claim instead: {with_assertion}.\n"
                );
            }
        }
        Claims::ByIdentity => {
            let _ = writeln!(
                md,
                "A claim binds your registration to a verified person who takes responsibility for you; it \
                 raises the same key, in place, to {raised}. To claim, {with_assertion}; a registration can be \
                 claimed for {ttl} after it is made. The `claim_url` shows your operator what the claim \
                 changes.\n"
            );
        }
    }
}
