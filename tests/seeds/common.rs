//! What the seed reproductions share: assertion messages that name the seed line
//! they check, the envelope check, the comparison of a generated `/auth.md` with the
//! original document, and a plain upstream that records what reaches it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use authmd_proxy::body::Body;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// One seed document, by its service's name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seed(pub &'static str);

impl Seed {
    /// "AnyGett auth.md line 42 (`...`)": what an assertion message starts with.
    pub(crate) fn at(self, line: u32, text: &str) -> String {
        format!("{} auth.md line {line} (`{text}`)", self.0)
    }

    /// Asserts the JSON rejection envelope the document promises (status and code),
    /// naming the seed line; returns the body.
    pub(crate) async fn envelope(
        self,
        response: reqwest::Response,
        status: u16,
        code: &str,
        line: u32,
        text: &str,
    ) -> Value {
        let at = self.at(line, text);
        assert_eq!(response.status().as_u16(), status, "{at}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{at}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], code, "{at}: {body}");
        for field in ["error", "message", "docs"] {
            assert!(
                body[field].as_str().is_some_and(|v| !v.is_empty()),
                "{at}: `{field}` in {body}"
            );
        }
        body
    }

    /// Asserts that the generated document names everything the original names
    /// (`terms`, each with its line), every scope of the original, and, when the
    /// original lists scopes, no scope it lacks.
    pub(crate) fn same_document<'a>(
        self,
        generated: &str,
        terms: &[(u32, &str)],
        scopes: impl IntoIterator<Item = (u32, &'a str)> + Clone,
    ) {
        for (line, term) in terms {
            assert!(
                generated.contains(term),
                "{}: the generated auth.md does not name it:\n{generated}",
                self.at(*line, term)
            );
        }
        let original: Vec<&str> = scopes.clone().into_iter().map(|(_, s)| s).collect();
        for (line, scope) in scopes {
            assert!(
                generated.contains(&format!("`{scope}`")),
                "{}: scope missing from the generated auth.md:\n{generated}",
                self.at(line, scope)
            );
        }
        // Every `a:b` code span of the generated document that looks like a scope is
        // one of the original's.
        let spans = generated.split('`').skip(1).step_by(2);
        for span in spans.filter(|_| !original.is_empty()) {
            let looks_like_scope = span.contains(':')
                && !span.contains(' ')
                && !span.contains('/')
                && !span.contains('"')
                && span.split(':').count() == 2
                && span
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_:*-".contains(c));
            // A wildcard over one of the original's prefixes is a way to ask for them.
            let wildcard_of_known = span
                .strip_suffix(":*")
                .is_some_and(|prefix| original.iter().any(|s| s.split(':').next() == Some(prefix)));
            if looks_like_scope && !span.ends_with(':') && !wildcard_of_known {
                assert!(
                    original.contains(&span),
                    "{} names no scope `{span}`:\n{generated}",
                    self.0
                );
            }
        }
    }
}

/// A plain upstream that knows nothing about auth: it answers every request 200 with
/// `{"ok": true}` and records what reached it.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    seen: Arc<Mutex<Vec<Value>>>,
    count: Arc<AtomicUsize>,
}

impl Upstream {
    pub(crate) async fn start() -> Upstream {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let (log, counter) = (seen.clone(), count.clone());
        let addr = super::support::upstream(move |request| {
            let (log, counter) = (log.clone(), counter.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                let headers: serde_json::Map<String, Value> = parts
                    .headers
                    .iter()
                    .map(|(name, value)| {
                        (
                            name.as_str().to_owned(),
                            json!(value.to_str().unwrap_or_default()),
                        )
                    })
                    .collect();
                let record = json!({
                    "method": parts.method.as_str(),
                    "path": parts.uri.path(),
                    "query": parts.uri.query(),
                    "headers": headers,
                    "body": String::from_utf8_lossy(&body),
                });
                log.lock().await.push(record);
                counter.fetch_add(1, Ordering::SeqCst);
                http::Response::builder()
                    .header("content-type", "application/json")
                    .body(Body::full(r#"{"ok":true}"#))
                    .unwrap()
            }
        })
        .await;
        Upstream { addr, seen, count }
    }

    /// How many requests reached it.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// The last request that reached it.
    pub(crate) async fn last(&self) -> Value {
        self.seen
            .lock()
            .await
            .last()
            .cloned()
            .unwrap_or(Value::Null)
    }
}
