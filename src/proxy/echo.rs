//! `upstream: builtin:echo`: answers every forwarded request with JSON describing what
//! it received after the proxy's rewriting, so a newcomer can see the whole behaviour
//! with no API of their own, and tests can assert what an upstream would see.

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, LengthLimitError};
use serde_json::{Map, Value, json};

use super::{ForwardError, Forwarded};
use crate::body::Body;

/// How much of the request body is echoed back as text; the rest is only counted.
const ECHOED_BODY: usize = 64 * 1024;

/// The echo answer for a rewritten request. The body is read frame by frame and
/// counted, never held beyond [`ECHOED_BODY`]; one past `server.max_body` is
/// refused, as a real upstream's request would fail.
pub(super) async fn answer(request: Request<Forwarded>) -> Result<Response<Body>, ForwardError> {
    let (parts, mut body) = request.into_parts();
    let mut headers = Map::new();
    for name in parts.headers.keys() {
        let values: Vec<&str> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<binary>"))
            .collect();
        headers.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    let mut length: u64 = 0;
    let mut kept = Vec::new();
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) if error.is::<LengthLimitError>() => {
                return Err(ForwardError::BodyTooLarge);
            }
            Err(_) => {
                complete = false;
                break;
            }
        };
        if let Ok(data) = frame.into_data() {
            length += data.len() as u64;
            let room = ECHOED_BODY.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    let echo = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": {
            "length": length,
            "complete": complete,
            "text": String::from_utf8_lossy(&kept),
        },
    });
    let mut response = Response::new(Body::full(echo.to_string()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
