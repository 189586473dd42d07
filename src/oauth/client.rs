//! Client authentication at the token endpoint (RFC 6749 section 2.3.1): HTTP Basic
//! with the form-urlencoded id and secret, or `client_id` and `client_secret` in the
//! body, never both.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::rejection::{OAuthError, Rejection};

/// How the client authenticated.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ClientAuth {
    /// Not at all.
    None,
    /// A `client_id` without a secret (a public client).
    IdOnly(String),
    /// An id and a secret; `basic` when they came in the `Authorization` header.
    Secret {
        /// `client_id`.
        id: String,
        /// `client_secret`.
        secret: String,
        /// Sent with HTTP Basic.
        basic: bool,
    },
}

/// The id and secret of an `Authorization: Basic` header, if there is one.
pub(super) fn from_header(headers: &HeaderMap) -> Result<Option<(String, String)>, Rejection> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let refused = Rejection::OAuth(OAuthError::InvalidClient { basic: true });
    if values.next().is_some() {
        return Err(Rejection::OAuth(OAuthError::InvalidRequest(
            "the Authorization header is repeated",
        )));
    }
    let value = value.to_str().map_err(|_| refused)?;
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return Err(refused);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Rejection::OAuth(OAuthError::InvalidRequest(
            "authenticate the client with HTTP Basic, or client_id and client_secret in the body",
        )));
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| refused)?;
    let decoded = String::from_utf8(decoded).map_err(|_| refused)?;
    let (id, secret) = decoded.split_once(':').ok_or(refused)?;
    match (form_decode(id), form_decode(secret)) {
        (Some(id), Some(secret)) if !id.is_empty() => Ok(Some((id, secret))),
        _ => Err(refused),
    }
}

/// The client authentication of a request: the header's, or the body's.
pub(super) fn combine(
    header: Option<(String, String)>,
    form: &[(String, String)],
) -> Result<ClientAuth, Rejection> {
    let get = |name: &str| form.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let (id, secret) = (get("client_id"), get("client_secret"));
    match header {
        Some((header_id, secret_in_header)) => {
            if secret.is_some() {
                return Err(Rejection::OAuth(OAuthError::InvalidRequest(
                    "use one client authentication method: HTTP Basic or client_secret in the body",
                )));
            }
            if id.as_ref().is_some_and(|id| *id != header_id) {
                return Err(Rejection::OAuth(OAuthError::InvalidClient { basic: true }));
            }
            Ok(ClientAuth::Secret {
                id: header_id,
                secret: secret_in_header,
                basic: true,
            })
        }
        None => match (id, secret) {
            (Some(id), Some(secret)) => Ok(ClientAuth::Secret {
                id,
                secret,
                basic: false,
            }),
            (Some(id), None) => Ok(ClientAuth::IdOnly(id)),
            (None, Some(_)) => Err(Rejection::OAuth(OAuthError::InvalidRequest(
                "`client_secret` without `client_id`",
            ))),
            (None, None) => Ok(ClientAuth::None),
        },
    }
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space, `%XX` a byte),
/// as RFC 6749 section 2.3.1 asks of the id and secret in a Basic header.
fn form_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                // Two hex digits, exactly: `u8::from_str_radix` alone would also
                // take a sign (`%+1`).
                let [high, low] = *bytes.get(i + 1..i + 3)? else {
                    return None;
                };
                out.push(hex_digit(high)? << 4 | hex_digit(low)?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The value of one hexadecimal digit.
fn hex_digit(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn basic(raw: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Basic {}", STANDARD.encode(raw));
        headers.insert(AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
        headers
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let got = from_header(&basic("key%3A1+x:s%25cret%2B")).unwrap();
        assert_eq!(got, Some(("key:1 x".into(), "s%cret+".into())));
    }

    #[test]
    fn malformed_basic_is_invalid_client_with_a_challenge() {
        for raw in [
            "no-colon",
            ":secret",
            "id:%zz",
            "id:%4",
            "id:%+1",
            "%-1:secret",
        ] {
            let error = from_header(&basic(raw)).unwrap_err();
            assert!(
                matches!(
                    error,
                    Rejection::OAuth(OAuthError::InvalidClient { basic: true })
                ),
                "{raw}"
            );
        }
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert!(from_header(&headers).is_err());
    }

    #[test]
    fn two_methods_at_once_are_refused() {
        let form = vec![("client_secret".to_owned(), "x".to_owned())];
        assert!(combine(Some(("a".into(), "b".into())), &form).is_err());
        let form = vec![("client_id".to_owned(), "other".to_owned())];
        assert!(combine(Some(("a".into(), "b".into())), &form).is_err());
        let form = vec![("client_id".to_owned(), "a".to_owned())];
        assert_eq!(
            combine(None, &form).unwrap(),
            ClientAuth::IdOnly("a".into())
        );
    }
}
