//! An HTTPS host for Client ID Metadata Documents: a server on 127.0.0.1 with a
//! certificate from a test CA, answering each path with what the test set for it
//! (status, headers, body) and counting the requests per path. The CA's PEM is
//! written for the proxy's `client_id_metadata_documents.ca_file`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject as _;
use tokio::net::TcpListener;

use super::tls::TestCa;

/// What a path answers.
#[derive(Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Answer {
    /// A 200 with `body` as JSON.
    pub fn json(body: String) -> Answer {
        Answer {
            status: 200,
            headers: vec![("content-type", "application/json".to_owned())],
            body,
        }
    }
}

#[derive(Default)]
struct State {
    answers: papaya::HashMap<String, Answer>,
    hits: papaya::HashMap<String, AtomicUsize>,
}

/// The host; dropped with the test's runtime.
pub struct DocumentHost {
    pub addr: SocketAddr,
    /// The CA that issued its certificate, as a PEM file.
    pub ca_file: PathBuf,
    state: Arc<State>,
    _dir: tempfile::TempDir,
}

impl DocumentHost {
    pub async fn start() -> DocumentHost {
        let ca = TestCa::new("metadata documents test CA");
        let dir = tempfile::tempdir().unwrap();
        let ca_file = ca.write(dir.path(), "ca.pem");
        let identity = ca.server_cert();
        let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).unwrap();
        let mut config = ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![identity.der.clone()], key)
        .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let state = shared.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |request: Request<Incoming>| {
                        let path = request.uri().path().to_owned();
                        state
                            .hits
                            .pin()
                            .get_or_insert_with(path.clone(), AtomicUsize::default)
                            .fetch_add(1, Ordering::Relaxed);
                        let answer = state.answers.pin().get(&path).cloned();
                        async move {
                            let answer = answer.unwrap_or(Answer {
                                status: 404,
                                headers: Vec::new(),
                                body: String::new(),
                            });
                            let mut response = Response::new(Full::new(Bytes::from(answer.body)));
                            *response.status_mut() = StatusCode::from_u16(answer.status).unwrap();
                            for (name, value) in answer.headers {
                                response.headers_mut().insert(name, value.parse().unwrap());
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        DocumentHost {
            addr,
            ca_file,
            state,
            _dir: dir,
        }
    }

    /// The https URL of `path` on the host, by address.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    /// Answers `path` with `answer` from now on.
    pub fn serve(&self, path: &str, answer: Answer) {
        self.state.answers.pin().insert(path.to_owned(), answer);
    }

    /// How many requests `path` has had.
    pub fn hits(&self, path: &str) -> usize {
        self.state
            .hits
            .pin()
            .get(path)
            .map_or(0, |hits| hits.load(Ordering::Relaxed))
    }
}
