//! A small GitHub on 127.0.0.1:<random>, laid out as GitHub Enterprise Server is
//! (the web flow at `/login/oauth/...`, the REST API under `/api/v3`), following
//! GitHub's published OAuth web flow and REST API: `authorize` redirects back with
//! `code` and `state` (PKCE S256 taken), `access_token` answers JSON when asked
//! with `Accept: application/json` (errors too, with status 200, as GitHub does),
//! and `/user`, `/user/emails`, `/user/orgs`, `/user/teams` answer for the token's
//! account, with `Link` pagination and `read:org` needed for memberships.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use authmd_proxy::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::BodyExt;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::oidc_provider::json_response;

/// The OAuth app's client id.
pub const CLIENT_ID: &str = "Iv1.testclient";
/// Its secret.
pub const CLIENT_SECRET: &str = "github s3cret";

/// The account that signs in next.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: u64,
    pub login: String,
    pub name: Option<String>,
    /// `(email, primary, verified)`.
    pub emails: Vec<(String, bool, bool)>,
    pub orgs: Vec<String>,
    /// `(org, slug)`.
    pub teams: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
struct Code {
    redirect_uri: String,
    challenge: String,
    scope: String,
    account: Account,
}

#[derive(Debug, Clone)]
struct Token {
    scope: String,
    account: Account,
}

/// The GitHub.
pub struct GithubApi {
    /// `web_url`.
    pub web_url: String,
    /// `api_url`.
    pub api_url: String,
    account: Arc<ArcSwap<Account>>,
}

type Shared<T> = Arc<tokio::sync::Mutex<HashMap<String, T>>>;

impl GithubApi {
    pub async fn start(account: Account) -> GithubApi {
        let account = Arc::new(ArcSwap::from_pointee(account));
        let codes: Shared<Code> = Arc::default();
        let tokens: Shared<Token> = Arc::default();
        let state = (account.clone(), codes, tokens);
        let addr = super::upstream(move |request| {
            let (account, codes, tokens) = state.clone();
            async move {
                let path = request.uri().path().to_owned();
                let query: HashMap<String, String> =
                    form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
                        .into_owned()
                        .collect();
                let get = |name: &str| query.get(name).cloned().unwrap_or_default();
                match path.as_str() {
                    "/login/oauth/authorize" => {
                        let redirect_uri = get("redirect_uri");
                        if get("client_id") != CLIENT_ID
                            || get("code_challenge_method") != "S256"
                            || get("code_challenge").len() != 43
                        {
                            return json_response(StatusCode::BAD_REQUEST, &json!({"error": "bad request"}));
                        }
                        let code = random("gh-code");
                        codes.lock().await.insert(
                            code.clone(),
                            Code {
                                redirect_uri: redirect_uri.clone(),
                                challenge: get("code_challenge"),
                                scope: get("scope").replace(' ', ","),
                                account: (**account.load()).clone(),
                            },
                        );
                        let back = form_urlencoded::Serializer::new(String::new())
                            .append_pair("code", &code)
                            .append_pair("state", &get("state"))
                            .finish();
                        let mut response = Response::new(Body::empty());
                        *response.status_mut() = StatusCode::FOUND;
                        response
                            .headers_mut()
                            .insert("location", format!("{redirect_uri}?{back}").parse().unwrap());
                        response
                    }
                    "/login/oauth/access_token" => {
                        let json = request
                            .headers()
                            .get("accept")
                            .is_some_and(|v| v.to_str().unwrap_or_default().contains("application/json"));
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let form: HashMap<String, String> =
                            form_urlencoded::parse(&body).into_owned().collect();
                        let field = |name: &str| form.get(name).cloned().unwrap_or_default();
                        let error = |code: &str| json_response(
                            StatusCode::OK,
                            &json!({"error": code, "error_description": "refused", "error_uri": "https://docs.github.com"}),
                        );
                        if !json {
                            return json_response(StatusCode::NOT_ACCEPTABLE, &json!({}));
                        }
                        if field("client_id") != CLIENT_ID || field("client_secret") != CLIENT_SECRET {
                            return error("incorrect_client_credentials");
                        }
                        let Some(code) = codes.lock().await.remove(&field("code")) else {
                            return error("bad_verification_code");
                        };
                        if field("redirect_uri") != code.redirect_uri {
                            return error("redirect_uri_mismatch");
                        }
                        let digest = aws_lc_rs::digest::digest(
                            &aws_lc_rs::digest::SHA256,
                            field("code_verifier").as_bytes(),
                        );
                        if URL_SAFE_NO_PAD.encode(digest.as_ref()) != code.challenge {
                            return error("bad_verification_code");
                        }
                        let token = random("gho");
                        tokens.lock().await.insert(
                            token.clone(),
                            Token {
                                scope: code.scope.clone(),
                                account: code.account,
                            },
                        );
                        json_response(
                            StatusCode::OK,
                            &json!({"access_token": token, "token_type": "bearer", "scope": code.scope}),
                        )
                    }
                    api if api.starts_with("/api/v3/") => {
                        let agent = request.headers().get("user-agent").is_some();
                        let presented = request
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("token ")))
                            .map(str::to_owned);
                        if !agent {
                            return json_response(StatusCode::FORBIDDEN, &json!({"message": "User-Agent required"}));
                        }
                        let known = match presented {
                            Some(presented) => tokens.lock().await.get(&presented).cloned(),
                            None => None,
                        };
                        let Some(token) = known else {
                            return json_response(StatusCode::UNAUTHORIZED, &json!({"message": "Bad credentials"}));
                        };
                        let page: usize = get("page").parse().unwrap_or(1);
                        let per_page: usize = get("per_page").parse().unwrap_or(30);
                        let base = format!("http://{}{api}", request.headers()["host"].to_str().unwrap());
                        api_answer(&api["/api/v3".len()..], &token, page, per_page, &base)
                    }
                    _ => json_response(StatusCode::NOT_FOUND, &json!({"message": "Not Found"})),
                }
            }
        })
        .await;
        let web_url = format!("http://{addr}");
        GithubApi {
            api_url: format!("{web_url}/api/v3"),
            web_url,
            account,
        }
    }

    /// The account that signs in from now on.
    pub fn sign_in_as(&self, account: Account) {
        self.account.store(Arc::new(account));
    }
}

fn api_answer(
    path: &str,
    token: &Token,
    page: usize,
    per_page: usize,
    base: &str,
) -> Response<Body> {
    let account = &token.account;
    let read_org = token.scope.split(',').any(|s| s == "read:org");
    let list: Vec<Value> = match path {
        "/user" => {
            return json_response(
                StatusCode::OK,
                &json!({"login": account.login, "id": account.id, "name": account.name, "type": "User"}),
            );
        }
        "/user/emails" => account
            .emails
            .iter()
            .map(|(email, primary, verified)| json!({"email": email, "primary": primary, "verified": verified, "visibility": null}))
            .collect(),
        // Without read:org, only public memberships would show; these are private.
        "/user/orgs" if !read_org => Vec::new(),
        "/user/orgs" => account.orgs.iter().map(|o| json!({"login": o, "id": 1})).collect(),
        "/user/teams" if !read_org => {
            return json_response(StatusCode::FORBIDDEN, &json!({"message": "Resource not accessible"}));
        }
        "/user/teams" => account
            .teams
            .iter()
            .map(|(org, slug)| json!({"slug": slug, "name": slug, "organization": {"login": org, "id": 1}}))
            .collect(),
        _ => return json_response(StatusCode::NOT_FOUND, &json!({"message": "Not Found"})),
    };
    let per_page = per_page.clamp(1, 100);
    let pages = list.len().div_ceil(per_page).max(1);
    let items: Vec<Value> = list
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let mut response = json_response(StatusCode::OK, &Value::Array(items));
    if page < pages {
        let link = format!(
            "<{base}?per_page={per_page}&page={}>; rel=\"next\", <{base}?per_page={per_page}&page={pages}>; rel=\"last\"",
            page + 1
        );
        response.headers_mut().insert("link", link.parse().unwrap());
    }
    response
}

fn random(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).unwrap();
    format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(bytes))
}
