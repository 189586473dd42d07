//! The calls to identity providers: one request, a deadline, a bounded JSON
//! answer. Nothing secret (codes, tokens, client secrets) is ever logged here.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use super::ProviderError;
use crate::http_client::HttpsClient;

/// Longest wait for a provider's answer, body included.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read.
const MAX_ANSWER: usize = 512 * 1024;
/// What the proxy calls itself (GitHub's API refuses requests without one).
const AGENT: &str = concat!("authmd-proxy/", env!("CARGO_PKG_VERSION"));

/// A provider's answer.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) json: serde_json::Value,
}

/// A GET of `url` with `headers`, answered with JSON.
pub(super) async fn get(
    client: &HttpsClient,
    url: &str,
    headers: &[(&'static str, String)],
) -> Result<Answer, ProviderError> {
    send(client, Method::GET, url, headers, None).await
}

/// A POST of the form `fields` to `url` with `headers`, answered with JSON.
pub(super) async fn post_form(
    client: &HttpsClient,
    url: &str,
    headers: &[(&'static str, String)],
    fields: &[(&str, &str)],
) -> Result<Answer, ProviderError> {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    send(client, Method::POST, url, headers, Some(body)).await
}

async fn send(
    client: &HttpsClient,
    method: Method,
    url: &str,
    headers: &[(&'static str, String)],
    form: Option<String>,
) -> Result<Answer, ProviderError> {
    let mut builder = Request::builder()
        .method(method)
        .uri(url)
        .header(ACCEPT, "application/json")
        .header(USER_AGENT, AGENT);
    for (name, value) in headers {
        let value = HeaderValue::try_from(value.as_str())
            .map_err(|_| ProviderError::Invalid("a header value is not valid"))?;
        builder = builder.header(*name, value);
    }
    let body = match form {
        Some(form) => {
            builder = builder.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
            Full::new(Bytes::from(form))
        }
        None => Full::new(Bytes::new()),
    };
    let request = builder
        .body(body)
        .map_err(|_| ProviderError::Invalid("a provider URL is not valid"))?;
    let exchange = async {
        let response = client.request(request).await.map_err(|error| {
            tracing::warn!(%error, "cannot reach an identity provider");
            ProviderError::Unreachable
        })?;
        let (parts, body) = response.into_parts();
        let bytes = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|_| ProviderError::Unreachable)?
            .to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            json,
        })
    };
    match tokio::time::timeout(TIMEOUT, exchange).await {
        Ok(answer) => answer,
        Err(_) => {
            tracing::warn!("an identity provider did not answer in time");
            Err(ProviderError::Unreachable)
        }
    }
}

/// The `error` code of a provider's OAuth error answer, when it is a plain code
/// (safe to show: `[a-z_]`, short).
pub(super) fn error_code(json: &serde_json::Value) -> Option<String> {
    let code = json.get("error")?.as_str()?;
    plain_code(code).then(|| code.to_owned())
}

/// True for an OAuth error code as the specs spell them.
pub(super) fn plain_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
}
