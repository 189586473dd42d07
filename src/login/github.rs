//! `kind: github`: sign-in with GitHub's OAuth web flow.
//!
//! The browser is sent to `<web_url>/login/oauth/authorize` with `state` and a
//! PKCE S256 challenge; the callback's code is exchanged at
//! `<web_url>/login/oauth/access_token` (JSON asked for with `Accept`), and the
//! token reads `GET <api_url>/user` (the subject is the numeric `id`, which stays
//! when the login changes), `GET <api_url>/user/emails` (the primary email, when
//! verified) and, when organizations or teams matter, `GET <api_url>/user/orgs` and
//! `GET <api_url>/user/teams`. A person in none of the configured organizations and
//! teams is refused. The token is used for these reads only and then dropped.

use http::StatusCode;
use serde::Deserialize;

use super::flow::{LoginState, with_query};
use super::settings::GithubSettings;
use super::{Person, ProviderError, fetch};
use crate::http_client::HttpsClient;
use crate::tier::TierId;

/// Pages of organizations or teams read (100 each).
const MAX_PAGES: usize = 10;

/// GitHub.
#[derive(Debug)]
pub(crate) struct Github {
    id: String,
    settings: GithubSettings,
    client: HttpsClient,
}

#[derive(Deserialize)]
struct User {
    id: u64,
    login: String,
    name: Option<String>,
}

#[derive(Deserialize)]
struct Email {
    email: String,
    primary: bool,
    verified: bool,
}

#[derive(Deserialize)]
struct Org {
    login: String,
}

#[derive(Deserialize)]
struct Team {
    slug: String,
    organization: Org,
}

impl Github {
    pub(crate) fn new(id: &str, settings: GithubSettings, client: HttpsClient) -> Github {
        Github {
            id: id.to_owned(),
            settings,
            client,
        }
    }

    fn wants_orgs(&self) -> bool {
        !self.settings.wanted_orgs.is_empty()
    }

    fn wants_teams(&self) -> bool {
        !self.settings.wanted_teams.is_empty()
    }

    /// Where to send the browser to sign in for the round trip `state`.
    pub(crate) fn authorization_url(&self, state: &LoginState) -> String {
        let scope = if self.wants_orgs() || self.wants_teams() {
            "read:user user:email read:org"
        } else {
            "read:user user:email"
        };
        let challenge = state.code_challenge();
        with_query(
            &format!("{}/login/oauth/authorize", self.settings.web_url),
            &[
                ("client_id", self.settings.client_id.as_str()),
                ("redirect_uri", &state.redirect_uri),
                ("scope", scope),
                ("state", &state.state),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("allow_signup", "false"),
            ],
        )
    }

    /// The person GitHub says the callback's `code` is for.
    pub(crate) async fn complete(
        &self,
        code: &str,
        state: &LoginState,
    ) -> Result<Person, ProviderError> {
        let answer = fetch::post_form(
            &self.client,
            &format!("{}/login/oauth/access_token", self.settings.web_url),
            &[],
            &[
                ("client_id", self.settings.client_id.as_str()),
                ("client_secret", self.settings.client_secret.0.as_str()),
                ("code", code),
                ("redirect_uri", &state.redirect_uri),
                ("code_verifier", &state.verifier),
            ],
        )
        .await?;
        // GitHub answers its errors with 200 and an `error` field.
        let token = answer
            .json
            .get("access_token")
            .and_then(serde_json::Value::as_str)
            .filter(|_| answer.status == StatusCode::OK);
        let Some(token) = token else {
            let code = fetch::error_code(&answer.json);
            tracing::warn!(provider = %self.id, status = answer.status.as_u16(), error = code.as_deref().unwrap_or(""), "GitHub refused the code");
            return Err(ProviderError::Refused(code));
        };
        let auth = [
            ("authorization", format!("Bearer {token}")),
            ("x-github-api-version", "2022-11-28".to_owned()),
        ];
        let user: User = self.read(&auth, "/user").await?;
        let emails: Vec<Email> = self.read(&auth, "/user/emails").await?;
        let email = emails
            .into_iter()
            .find(|e| e.primary && e.verified)
            .map(|e| e.email);
        let mut groups = Vec::new();
        if self.wants_orgs() {
            for org in self.read_all::<Org>(&auth, "/user/orgs").await? {
                let login = org.login.to_ascii_lowercase();
                if self.settings.wanted_orgs.contains(&login) && !groups.contains(&login) {
                    groups.push(login);
                }
            }
        }
        if self.wants_teams() {
            for team in self.read_all::<Team>(&auth, "/user/teams").await? {
                let name =
                    format!("{}/{}", team.organization.login, team.slug).to_ascii_lowercase();
                if self.settings.wanted_teams.contains(&name) && !groups.contains(&name) {
                    groups.push(name);
                }
            }
        }
        let restricted = !self.settings.orgs.is_empty() || !self.settings.teams.is_empty();
        let member = groups
            .iter()
            .any(|g| self.settings.orgs.contains(g) || self.settings.teams.contains(g));
        if restricted && !member {
            tracing::info!(provider = %self.id, user = user.id, "a GitHub account outside the allowed organizations and teams was refused");
            return Err(ProviderError::NotAllowed(
                "Your GitHub account is not a member of an organization or team allowed to sign in here. Ask for access, or sign in with another account.",
            ));
        }
        Ok(Person {
            provider: self.id.clone(),
            subject: user.id.to_string(),
            username: Some(user.login.clone()),
            name: Some(user.name.filter(|n| !n.is_empty()).unwrap_or(user.login)),
            email,
            groups,
            tier: TierId::ANONYMOUS,
        })
    }

    /// One API answer at `path`.
    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        auth: &[(&'static str, String)],
        path: &str,
    ) -> Result<T, ProviderError> {
        let url = format!("{}{path}", self.settings.api_url);
        let answer = fetch::get(&self.client, &url, auth).await?;
        self.parse(answer, path)
    }

    /// Every page of the list at `path` (up to [`MAX_PAGES`] of 100), following
    /// `Link: rel="next"` on the API's own origin only.
    async fn read_all<T: serde::de::DeserializeOwned>(
        &self,
        auth: &[(&'static str, String)],
        path: &str,
    ) -> Result<Vec<T>, ProviderError> {
        let mut url = format!("{}{path}?per_page=100", self.settings.api_url);
        let mut all = Vec::new();
        for _ in 0..MAX_PAGES {
            let answer = fetch::get(&self.client, &url, auth).await?;
            let next = next_page(&answer.headers, &self.settings.api_url);
            all.extend(self.parse::<Vec<T>>(answer, path)?);
            match next {
                Some(next) => url = next,
                None => break,
            }
        }
        Ok(all)
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        answer: fetch::Answer,
        path: &str,
    ) -> Result<T, ProviderError> {
        if answer.status != StatusCode::OK {
            tracing::warn!(provider = %self.id, path, status = answer.status.as_u16(), "the GitHub API refused a read");
            return Err(ProviderError::Invalid("the GitHub API refused a read"));
        }
        serde_json::from_value(answer.json).map_err(|_| {
            tracing::warn!(provider = %self.id, path, "the GitHub API answered something unexpected");
            ProviderError::Invalid("the GitHub API answered something unexpected")
        })
    }
}

/// The `rel="next"` URL of a `Link` header, when it is under `api_url`.
fn next_page(headers: &http::HeaderMap, api_url: &str) -> Option<String> {
    let link = headers.get(http::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        if !params.split(';').any(|p| p.trim() == "rel=\"next\"") {
            return None;
        }
        let url = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        url.strip_prefix(api_url)
            .is_some_and(|rest| rest.starts_with('/'))
            .then(|| url.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_next_pages_on_the_api_are_followed() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::LINK,
            "<https://api.github.com/user/teams?page=2>; rel=\"next\", <https://api.github.com/user/teams?page=5>; rel=\"last\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_page(&headers, "https://api.github.com").as_deref(),
            Some("https://api.github.com/user/teams?page=2")
        );
        assert_eq!(next_page(&headers, "https://api.github.co"), None);
        headers.insert(
            http::header::LINK,
            "<https://evil.example/x>; rel=\"next\"".parse().unwrap(),
        );
        assert_eq!(next_page(&headers, "https://api.github.com"), None);
    }
}
