//! The sidecar injector: [`crate::inject`]'s transformation served as a Kubernetes
//! mutating admission webhook (`authmd-proxy injector`).
//!
//! The API server POSTs an `AdmissionReview` (`admission.k8s.io/v1`) for each pod
//! it is about to create to `/inject` over HTTPS; the answer allows the pod, with a
//! JSON Patch adding the sidecar when the pod is annotated `authmd.dev/inject:
//! enabled` and does not have it yet. The patch replaces whole members (`/spec/
//! initContainers`, `/spec/volumes`, one annotation) rather than array elements, so
//! it reads as what it does.
//!
//! Failures, two kinds:
//!
//! - A request that is not an `AdmissionReview` v1 (not JSON, another version, no
//!   `uid` or `object`, larger than 4 MiB, or not sent within 10 s) is answered with
//!   an HTTP error and a JSON envelope. The API server treats that as a failed call, and the webhook
//!   configuration's own `failurePolicy` decides: `Fail` refuses the pod, `Ignore`
//!   creates it unchanged.
//! - A review of a pod whose annotations cannot be used (`authmd.dev/port: http`)
//!   is answered by [`FailurePolicy`]: `fail` (the default) denies the pod with the
//!   reason, so a pod that asked for the proxy never runs without it; `ignore`
//!   allows it unchanged with a warning that `kubectl` prints.
//!
//! `GET /healthz` answers 200 for the Deployment's probes. The certificate files
//! are re-read when they change, so a renewed certificate needs no restart.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation};
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};

use crate::body::Body;
use crate::inject::{Defaults, inject_document};
use crate::server::accept::{Handshake, Serving, accept_loop};
use crate::tls::ServerTls;

/// Where the API server sends reviews.
pub const PATH: &str = "/inject";

/// The largest review read; the API server's own request limit is 3 MiB.
const MAX_BODY: usize = 4 << 20;

/// How long a client may take to finish the TLS handshake, to send its request
/// headers, and to send its body.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long in-flight reviews get on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Where an error envelope points.
const DOCS: &str = "README.md#the-injector-webhook";

/// What a review of a pod that cannot be injected answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Deny the pod, with the reason.
    Fail,
    /// Allow it unchanged, with a warning.
    Ignore,
}

impl FromStr for FailurePolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "fail" => Ok(FailurePolicy::Fail),
            "ignore" => Ok(FailurePolicy::Ignore),
            _ => Err(format!("failure policy `{text}`: use fail or ignore")),
        }
    }
}

/// Why a request got no admission response.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The body is not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// The JSON is not an `AdmissionReview` v1 with a request.
    #[error("not an admission.k8s.io/v1 AdmissionReview: {0}")]
    NotReview(String),
    /// The body is larger than [`MAX_BODY`].
    #[error("the review is larger than {MAX_BODY} bytes")]
    TooLarge,
    /// The body could not be read.
    #[error("the body could not be read: {0}")]
    Unreadable(String),
    /// The body did not arrive within [`CLIENT_TIMEOUT`].
    #[error("the review did not arrive within {CLIENT_TIMEOUT:?}")]
    TimedOut,
    /// No such endpoint.
    #[error("no such endpoint; reviews go to POST {PATH}")]
    NotFound,
    /// The endpoint exists, but not for this method.
    #[error("this endpoint answers {allow} only")]
    MethodNotAllowed {
        /// The methods it answers.
        allow: &'static str,
    },
}

impl Refusal {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Refusal::NotJson(_) | Refusal::NotReview(_) | Refusal::Unreadable(_) => {
                (StatusCode::BAD_REQUEST, "INVALID_REVIEW")
            }
            Refusal::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "REVIEW_TOO_LARGE"),
            Refusal::TimedOut => (StatusCode::REQUEST_TIMEOUT, "REVIEW_TIMEOUT"),
            Refusal::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Refusal::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
            }
        }
    }

    /// The one place a refusal becomes a response: the JSON envelope.
    fn response(&self) -> Response<Body> {
        let (status, code) = self.status_and_code();
        let error = status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
            .replace(' ', "_");
        let body = json!({"error": error, "code": code, "message": self.to_string(), "docs": DOCS});
        let mut response = json_response(status, &body);
        if let Refusal::MethodNotAllowed { allow } = self {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

/// The webhook's decisions: what to add, and what to do when it cannot.
#[derive(Debug, Clone)]
pub struct Injector {
    defaults: Defaults,
    failure: FailurePolicy,
}

impl Injector {
    /// An injector adding `defaults`' sidecar, answering bad annotations by `failure`.
    pub fn new(defaults: Defaults, failure: FailurePolicy) -> Injector {
        Injector { defaults, failure }
    }

    /// Answers one `AdmissionReview` request body with the `AdmissionReview` to send
    /// back.
    pub fn review(&self, body: &[u8]) -> Result<Value, Refusal> {
        let review: Value =
            serde_json::from_slice(body).map_err(|e| Refusal::NotJson(e.to_string()))?;
        let api_version = review.get("apiVersion").and_then(Value::as_str);
        let kind = review.get("kind").and_then(Value::as_str);
        if api_version != Some("admission.k8s.io/v1") || kind != Some("AdmissionReview") {
            return Err(Refusal::NotReview(format!(
                "apiVersion {} and kind {} (the webhook configuration must list \
                 admissionReviewVersions: [v1])",
                api_version.unwrap_or("(none)"),
                kind.unwrap_or("(none)")
            )));
        }
        let request = review
            .get("request")
            .ok_or_else(|| Refusal::NotReview("no `request`".into()))?;
        let uid = request
            .get("uid")
            .and_then(Value::as_str)
            .filter(|uid| !uid.is_empty())
            .ok_or_else(|| Refusal::NotReview("no `request.uid`".into()))?;
        let object = request
            .get("object")
            .filter(|o| o.is_object())
            .ok_or_else(|| Refusal::NotReview("no `request.object`".into()))?;
        let namespace = request
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        // Containers are immutable after creation: only a CREATE can be injected.
        let operation = request.get("operation").and_then(Value::as_str);
        let response = if operation.is_some_and(|op| op != "CREATE") {
            allowed(uid, &[])
        } else {
            match self.patch(object) {
                Ok(patch) => {
                    if !patch.is_empty() {
                        tracing::info!(namespace, pod = %pod_name(object), "sidecar injected");
                    }
                    allowed(uid, &patch)
                }
                Err(message) => self.failed(uid, namespace, &message),
            }
        };
        Ok(json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response,
        }))
    }

    /// The JSON Patch that injects `object`: empty when it is not annotated or
    /// already has the sidecar.
    fn patch(&self, object: &Value) -> Result<Vec<PatchOperation>, String> {
        let mut document = serde_norway::to_value(object).map_err(|e| e.to_string())?;
        if !inject_document(&mut document, &self.defaults).map_err(|e| e.to_string())? {
            return Ok(Vec::new());
        }
        let injected = serde_json::to_value(&document).map_err(|e| e.to_string())?;
        let mut operations = Vec::new();
        member_patch(
            object,
            &injected,
            &mut PointerBuf::new(),
            0,
            &mut operations,
        );
        Ok(operations)
    }

    fn failed(&self, uid: &str, namespace: &str, message: &str) -> Value {
        let message = format!("authmd-proxy sidecar not injected: {message}");
        match self.failure {
            FailurePolicy::Fail => {
                tracing::warn!(namespace, %message, "pod denied");
                json!({
                    "uid": uid,
                    "allowed": false,
                    "status": {"status": "Failure", "code": 400, "reason": "BadRequest", "message": message},
                })
            }
            FailurePolicy::Ignore => {
                tracing::warn!(namespace, %message, "pod allowed without the sidecar");
                json!({"uid": uid, "allowed": true, "warnings": [message]})
            }
        }
    }
}

/// An allowing response, with the patch when there is one.
fn allowed(uid: &str, patch: &[PatchOperation]) -> Value {
    let mut response = Map::new();
    response.insert("uid".into(), uid.into());
    response.insert("allowed".into(), true.into());
    if !patch.is_empty() {
        let bytes = serde_json::to_vec(patch).unwrap_or_default();
        response.insert("patchType".into(), "JSONPatch".into());
        response.insert("patch".into(), STANDARD.encode(bytes).into());
    }
    Value::Object(response)
}

/// `metadata.name`, or the `generateName` prefix a pod under admission often has.
fn pod_name(object: &Value) -> String {
    let metadata = &object["metadata"];
    match (metadata["name"].as_str(), metadata["generateName"].as_str()) {
        (Some(name), _) => name.to_owned(),
        (None, Some(prefix)) => format!("{prefix}*"),
        (None, None) => String::new(),
    }
}

/// Members nested this deep are patched one by one (`/metadata/annotations/<key>`);
/// anything deeper, and every array, is replaced whole.
const PATCH_DEPTH: usize = 3;

/// Appends the operations that turn `before` into `after`, member by member down
/// to [`PATCH_DEPTH`]. `add` on an existing member replaces it (RFC 6902 4.1).
fn member_patch(
    before: &Value,
    after: &Value,
    path: &mut PointerBuf,
    depth: usize,
    operations: &mut Vec<PatchOperation>,
) {
    let (Value::Object(old), Value::Object(new)) = (before, after) else {
        return;
    };
    for (key, value) in new {
        path.push_back(key.as_str());
        match old.get(key) {
            Some(previous) if previous == value => {}
            Some(previous)
                if depth + 1 < PATCH_DEPTH && previous.is_object() && value.is_object() =>
            {
                member_patch(previous, value, path, depth + 1, operations);
            }
            _ => operations.push(PatchOperation::Add(AddOperation {
                path: path.clone(),
                value: value.clone(),
            })),
        }
        path.pop_back();
    }
    for key in old.keys().filter(|key| !new.contains_key(*key)) {
        path.push_back(key.as_str());
        operations.push(PatchOperation::Remove(RemoveOperation {
            path: path.clone(),
        }));
        path.pop_back();
    }
}

/// Serves reviews on `listener` over TLS until `shutdown` completes, then lets
/// in-flight reviews finish.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    injector: Arc<Injector>,
    shutdown: impl Future<Output = ()>,
) {
    let mut protocols = auto::Builder::new(TokioExecutor::new());
    protocols
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(CLIENT_TIMEOUT);
    protocols.http2().timer(TokioTimer::new());
    let serving = Serving {
        protocols,
        upgrades: false,
        tls: Some(Handshake {
            acceptor: tls.acceptor(),
            timeout: CLIENT_TIMEOUT,
            metrics: None,
        }),
        first_bytes: None,
        grace: SHUTDOWN_GRACE,
        log_errors: true,
    };
    let admit = |_: &TcpStream, peer: SocketAddr| {
        let injector = injector.clone();
        let service = service_fn(move |request| {
            let injector = injector.clone();
            async move { Ok::<_, Infallible>(handle(request, &injector, peer).await) }
        });
        Some((service, ()))
    };
    if !accept_loop(listener, serving, admit, shutdown).await {
        tracing::warn!("reviews still in flight after the shutdown grace period");
    }
}

async fn handle(
    request: Request<Incoming>,
    injector: &Injector,
    peer: SocketAddr,
) -> Response<Body> {
    let answer = match (request.uri().path(), request.method()) {
        (PATH, &Method::POST) => review(request, injector).await,
        (PATH, _) => Err(Refusal::MethodNotAllowed { allow: "POST" }),
        ("/healthz", &Method::GET | &Method::HEAD) => Ok(json!({"status": "ok"})),
        ("/healthz", _) => Err(Refusal::MethodNotAllowed { allow: "GET, HEAD" }),
        _ => Err(Refusal::NotFound),
    };
    match answer {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(refusal) => {
            tracing::debug!(%peer, %refusal, "request refused");
            refusal.response()
        }
    }
}

async fn review(request: Request<Incoming>, injector: &Injector) -> Result<Value, Refusal> {
    let body = read_body(request.into_body()).await?;
    injector.review(&body)
}

/// The whole body, at most [`MAX_BODY`] bytes and within [`CLIENT_TIMEOUT`]: a
/// client that stops sending holds no connection past it.
async fn read_body<B>(body: B) -> Result<Bytes, Refusal>
where
    B: http_body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let collected = tokio::time::timeout(CLIENT_TIMEOUT, Limited::new(body, MAX_BODY).collect())
        .await
        .map_err(|_| Refusal::TimedOut)?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(Refusal::TooLarge),
        Err(error) => Err(Refusal::Unreadable(error.to_string())),
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn patch(before: Value, after: &Value) -> Value {
        let mut operations = Vec::new();
        member_patch(&before, after, &mut PointerBuf::new(), 0, &mut operations);
        let mut patched = before;
        json_patch::patch(&mut patched, &operations).unwrap();
        assert_eq!(&patched, after, "the patch turns before into after");
        serde_json::to_value(&operations).unwrap()
    }

    #[test]
    fn members_are_patched_whole_below_the_depth_and_keys_are_escaped() {
        let ops = patch(
            json!({"metadata": {"annotations": {"a/b": "1"}}, "spec": {"containers": [{"name": "x"}], "gone": 1}}),
            &json!({"metadata": {"annotations": {"a/b": "1", "c~d/e": "2"}}, "spec": {"containers": [{"name": "x"}, {"name": "y"}], "volumes": []}}),
        );
        assert_eq!(
            ops,
            json!([
                {"op": "add", "path": "/metadata/annotations/c~0d~1e", "value": "2"},
                {"op": "add", "path": "/spec/containers", "value": [{"name": "x"}, {"name": "y"}]},
                {"op": "add", "path": "/spec/volumes", "value": []},
                {"op": "remove", "path": "/spec/gone"},
            ])
        );
        assert_eq!(patch(json!({"a": 1}), &json!({"a": 1})), json!([]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_is_refused_after_the_timeout_and_a_large_one_at_once() {
        use futures_util::{StreamExt as _, stream};
        use http_body_util::StreamBody;

        type Frame = Result<http_body::Frame<Bytes>, std::io::Error>;
        let started = tokio::time::Instant::now();
        let stalled = StreamBody::new(
            stream::iter([Ok::<_, std::io::Error>(http_body::Frame::data(
                Bytes::from_static(b"{"),
            ))])
            .chain(stream::pending::<Frame>()),
        );
        assert!(matches!(read_body(stalled).await, Err(Refusal::TimedOut)));
        assert_eq!(started.elapsed(), CLIENT_TIMEOUT);
        assert_eq!(
            Refusal::TimedOut.status_and_code().0,
            StatusCode::REQUEST_TIMEOUT
        );

        let large = http_body_util::Full::new(Bytes::from(vec![b'x'; MAX_BODY + 1]));
        assert!(matches!(read_body(large).await, Err(Refusal::TooLarge)));
        let small = http_body_util::Full::new(Bytes::from_static(b"{}"));
        assert_eq!(read_body(small).await.unwrap(), Bytes::from_static(b"{}"));
    }

    #[test]
    fn failure_policies_parse() {
        assert_eq!("Fail".parse(), Ok(FailurePolicy::Fail));
        assert_eq!("ignore".parse(), Ok(FailurePolicy::Ignore));
        assert!("sometimes".parse::<FailurePolicy>().is_err());
    }
}
