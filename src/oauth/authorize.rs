//! The authorization request (OAuth 2.1 section 4.1.1): its parameters checked in
//! the order the specs set, so that a request that cannot be trusted to name its
//! client or redirect is answered on a page of our own (never a redirect: no open
//! redirector), and every other problem goes back to the client's redirect URI
//! with `error`, `state` and `iss` (RFC 9207).

use serde::{Deserialize, Serialize};

use super::clients::Client;
use super::pkce;
use super::resource;
use crate::config::Config;
use crate::protocol::redirect::with_params;
use crate::scope::ScopeSet;

/// An authorization request that passed every check: what the person is asked
/// to approve and what the code will be bound to. It travels sealed between the
/// sign-in and consent pages, so any replica can finish the flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The client.
    pub client_id: String,
    /// The redirect URI the code goes to.
    pub redirect_uri: String,
    /// Whether the request named the redirect URI, which the token request must
    /// then repeat.
    pub redirect_given: bool,
    /// The scopes asked for, space-separated; empty: all the client may have.
    pub scope: String,
    /// The client's `state`, echoed.
    pub state: Option<String>,
    /// The PKCE challenge (S256).
    pub code_challenge: String,
    /// The resource (RFC 8707) the token will be for.
    pub resource: String,
}

/// Why an authorization request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Shown on a page here: the client is unknown or the redirect does not match
    /// one it registered, so nothing is sent anywhere.
    Page {
        /// What went wrong, for the person.
        message: String,
    },
    /// Sent to the client's redirect URI.
    Redirect {
        /// The redirect URI.
        to: String,
        /// The `error` code.
        error: &'static str,
        /// The `error_description`.
        description: String,
        /// The client's `state`, echoed.
        state: Option<String>,
    },
}

impl Refusal {
    /// The location of a redirected refusal, with `iss` as RFC 9207 requires.
    #[must_use]
    pub fn location(&self, issuer: &str) -> Option<String> {
        let Refusal::Redirect {
            to,
            error,
            description,
            state,
        } = self
        else {
            return None;
        };
        let mut params = vec![
            ("error", *error),
            ("error_description", description.as_str()),
        ];
        if let Some(state) = state {
            params.push(("state", state));
        }
        params.push(("iss", issuer));
        Some(with_params(to, &params))
    }
}

/// The parameters of an authorization request (query or form).
pub type Params = [(String, String)];

/// The one value of a parameter: `Ok(None)` when absent or empty, `Err` when
/// repeated (RFC 6749 section 3.1).
fn single<'a>(params: &'a Params, name: &str) -> Result<Option<&'a str>, ()> {
    let mut values = params
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str());
    let first = values.next();
    if values.next().is_some() {
        return Err(());
    }
    Ok(first.filter(|v| !v.is_empty()))
}

/// The client an authorization request names: its `client_id`, once, or a page.
///
/// # Errors
///
/// A page refusal when `client_id` is missing or repeated.
pub fn client_id(params: &Params) -> Result<&str, Refusal> {
    match single(params, "client_id") {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(page(
            "The request does not say which application is asking (no client_id).",
        )),
        Err(()) => Err(page("The request names its application more than once.")),
    }
}

fn page(message: &str) -> Refusal {
    Refusal::Page {
        message: message.to_owned(),
    }
}

/// Checks an authorization request from `client` (already looked up by
/// [`client_id`]) against `config`.
///
/// # Errors
///
/// Why it is refused: a page for a redirect that does not match, a redirect with
/// the OAuth error for everything else.
pub fn check(params: &Params, client: &Client, config: &Config) -> Result<Pending, Refusal> {
    let presented = single(params, "redirect_uri")
        .map_err(|()| page("The request names its redirect address more than once."))?;
    let Some(redirect) = client.redirect(presented) else {
        return Err(page(match presented {
            Some(_) => {
                "The application asked to be sent back to an address it did not register. Nothing was sent; close this page and tell the application's developer."
            }
            None => {
                "The application registered several redirect addresses and did not say which one to use."
            }
        }));
    };
    let state = single(params, "state").ok().flatten().map(str::to_owned);
    let refuse = |error: &'static str, description: &str| Refusal::Redirect {
        to: redirect.to_owned(),
        error,
        description: description.to_owned(),
        state: state.clone(),
    };
    for (name, _) in params.iter() {
        if name != "resource" && params.iter().filter(|(n, _)| n == name).count() > 1 {
            return Err(refuse(
                "invalid_request",
                &format!("the parameter `{name}` is repeated"),
            ));
        }
    }
    if single(params, "request").ok().flatten().is_some() {
        return Err(refuse(
            "request_not_supported",
            "request objects are not supported",
        ));
    }
    if single(params, "request_uri").ok().flatten().is_some() {
        return Err(refuse(
            "request_uri_not_supported",
            "request_uri is not supported",
        ));
    }
    match single(params, "response_type").ok().flatten() {
        Some("code") => {}
        None => {
            return Err(refuse(
                "invalid_request",
                "response_type is required (code)",
            ));
        }
        Some(_) => {
            return Err(refuse(
                "unsupported_response_type",
                "only response_type=code is supported",
            ));
        }
    }
    if single(params, "response_mode")
        .ok()
        .flatten()
        .is_some_and(|m| m != "query")
    {
        return Err(refuse(
            "invalid_request",
            "only response_mode=query is supported",
        ));
    }
    let challenge = pkce::challenge(
        single(params, "code_challenge").ok().flatten(),
        single(params, "code_challenge_method").ok().flatten(),
    )
    .map_err(|e| refuse("invalid_request", e.describe()))?;
    let mut resources = params.iter().filter(|(n, _)| n == "resource");
    let resource = match (resources.next(), resources.next()) {
        (None, _) => config.public_url.clone(),
        (Some((_, value)), None) => resource::find(value, &config.resource_identifiers())
            .cloned()
            .ok_or_else(|| {
                refuse(
                    "invalid_target",
                    "the resource is not served by this authorization server",
                )
            })?,
        (Some(_), Some(_)) => {
            return Err(refuse("invalid_target", "ask for one resource at a time"));
        }
    };
    let scope = match single(params, "scope").ok().flatten() {
        None => String::new(),
        Some(text) => {
            let set: ScopeSet =
                config
                    .scopes
                    .granted(text.split_whitespace())
                    .map_err(|(name, _)| {
                        refuse(
                            "invalid_scope",
                            &format!("the scope `{name}` is not offered here"),
                        )
                    })?;
            if !set.is_subset_of(&client.scopes) {
                return Err(refuse(
                    "invalid_scope",
                    "a requested scope is beyond what this application may have",
                ));
            }
            config.scopes.names(&set)
        }
    };
    Ok(Pending {
        client_id: client.client_id.clone(),
        redirect_uri: redirect.to_owned(),
        redirect_given: presented.is_some(),
        scope,
        state,
        code_challenge: challenge.to_owned(),
        resource,
    })
}

#[cfg(test)]
mod tests;
