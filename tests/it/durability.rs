//! What the store promises across processes: nothing acknowledged is lost when the
//! proxy is killed, and replicas sharing PostgreSQL see each other's changes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "tests: a failed step fails the test"
)]

use std::time::Duration;

use crate::support;
use crate::support::relay::Relay;
use crate::support::{Binary, WRITER_KEY, client, eventually, json, write_status};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml");

async fn start(config: &str, data_dir: Option<&str>) -> Binary {
    let mut args = vec![
        "run",
        "--config",
        config,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ];
    if let Some(dir) = data_dir {
        args.extend(["--data-dir", dir]);
    }
    Binary::start(&args).await
}

/// Creates a key through `proxy` with the example writer key; returns (id, secret).
async fn create_key(proxy: &Binary) -> (String, String) {
    let response = client()
        .post(format!("{}/api/v1/auth/keys", proxy.url))
        .header("authorization", format!("Bearer {WRITER_KEY}"))
        .json(&serde_json::json!({"name": "durable", "scopes": ["offers:write"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body = json(response).await;
    (
        body["id"].as_str().unwrap().to_owned(),
        body["key"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_key_acknowledged_before_sigkill_works_after_restart() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let mut proxy = start(EXAMPLE, Some(dir)).await;
    let (_, created) = create_key(&proxy).await;
    let registered = client()
        .post(format!("{}/agent/auth/register", proxy.url))
        .json(&serde_json::json!({"type": "anonymous"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);
    let registered = json(registered).await["credential"]
        .as_str()
        .unwrap()
        .to_owned();
    // Killed the moment the answers arrived: no shutdown, no flush.
    proxy.kill();

    let proxy = start(EXAMPLE, Some(dir)).await;
    assert_eq!(write_status(&proxy.url, &created).await, 200);
    assert_eq!(write_status(&proxy.url, &registered).await, 200);
    assert_eq!(write_status(&proxy.url, "ak_live_unknown").await, 401);
}

#[tokio::test]
async fn a_revocation_survives_sigkill() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let mut proxy = start(EXAMPLE, Some(dir)).await;
    let (id, secret) = create_key(&proxy).await;
    let revoked = client()
        .delete(format!("{}/api/v1/auth/keys/{id}", proxy.url))
        .header("authorization", format!("Bearer {WRITER_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(write_status(&proxy.url, &secret).await, 401);
    proxy.kill();
    let proxy = start(EXAMPLE, Some(dir)).await;
    // The writer key (from the config) works as soon as the proxy listens; the
    // revoked one must never work again.
    assert_eq!(write_status(&proxy.url, WRITER_KEY).await, 200);
    assert_eq!(write_status(&proxy.url, &secret).await, 401);
}

/// A config for PostgreSQL replicas, in a schema of its own; `None` (skipped) when
/// no server is configured.
fn postgres_config(dir: &std::path::Path) -> Option<(std::path::PathBuf, String)> {
    let Ok(url) = std::env::var("AUTHMD_TEST_POSTGRES_URL") else {
        eprintln!("skipped: AUTHMD_TEST_POSTGRES_URL is not set");
        return None;
    };
    let schema = format!(
        "replicas_{}",
        &authmd_proxy::credentials::KeyHash::of(&format!("{:?}", std::time::SystemTime::now()))
            .to_string()["blake3:".len()..][..12]
    );
    // Without the demo sign-in: replicas on PostgreSQL would need a shared cookie key.
    let example = crate::support::example_without("login");
    // A long resync interval: propagation within a second must come from NOTIFY.
    let yaml = example.replace(
        "store:\n  kind: sqlite",
        &format!("store:\n  kind: postgres\n  url: {url}\n  schema: {schema}\n  resync_interval: 1h\n  # was: sqlite"),
    );
    let yaml = yaml.replace("  data_dir: data ", "  # data_dir: data ");
    let yaml = yaml.replace("  resync_interval: 10s", "");
    let yaml = support::shared_signing_key(&yaml, dir);
    // Replicas behind one load balancer share one public URL (the token issuer).
    let yaml = yaml.replace(
        "# public_url: https://api.example.com",
        "public_url: https://api.replicas.test",
    );
    let path = dir.join("replicas.yaml");
    std::fs::write(&path, yaml).unwrap();
    Some((path, schema))
}

#[tokio::test]
async fn two_replicas_on_postgres_see_each_others_changes_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let Some((config, schema)) = postgres_config(dir.path()) else {
        return;
    };
    let config = config.to_str().unwrap();
    let a = start(config, None).await;
    let b = start(config, None).await;

    let (id, secret) = create_key(&a).await;
    assert_eq!(
        write_status(&a.url, &secret).await,
        200,
        "at once on the writer"
    );
    let seen = eventually(Duration::from_secs(1), || async {
        write_status(&b.url, &secret).await == 200
    })
    .await;
    eprintln!("creation reached the other replica in {seen:?}");

    let revoked = client()
        .delete(format!("{}/api/v1/auth/keys/{id}", a.url))
        .header("authorization", format!("Bearer {WRITER_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(
        write_status(&a.url, &secret).await,
        401,
        "at once on the writer"
    );
    let gone = eventually(Duration::from_secs(1), || async {
        write_status(&b.url, &secret).await == 401
    })
    .await;
    eprintln!("revocation reached the other replica in {gone:?}");

    // An access token signed by one replica (they share the signing key) works on
    // the other, and its revocation reaches the other through the store.
    let issued: serde_json::Value = client()
        .post(format!("{}/oauth2/token", a.url))
        .basic_auth("example-writer", Some(WRITER_KEY))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = issued["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        write_status(&b.url, &token).await,
        200,
        "the other replica verifies it"
    );
    let revoked = client()
        .post(format!("{}/oauth2/revoke", a.url))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(
        write_status(&a.url, &token).await,
        401,
        "at once on the revoker"
    );
    let denied = eventually(Duration::from_secs(1), || async {
        write_status(&b.url, &token).await == 401
    })
    .await;
    eprintln!("token revocation reached the other replica in {denied:?}");

    drop((a, b));
    let url = std::env::var("AUTHMD_TEST_POSTGRES_URL").unwrap();
    if let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await;
    }
}

#[tokio::test]
async fn while_the_store_is_down_keys_verify_from_memory_and_writes_get_503() {
    let Ok(url) = std::env::var("AUTHMD_TEST_POSTGRES_URL") else {
        eprintln!("skipped: AUTHMD_TEST_POSTGRES_URL is not set");
        return;
    };
    let parsed: tokio_postgres::Config = url.parse().unwrap();
    let host = match parsed.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = parsed.get_ports().first().copied().unwrap_or(5432);
    let relay = Relay::start(&format!("{host}:{port}")).await;
    let user = parsed.get_user().unwrap_or("postgres");
    let db = parsed.get_dbname().unwrap_or("test");
    let schema = format!("down_{}", std::process::id());
    // Without the demo sign-in: replicas on PostgreSQL would need a shared cookie key.
    let example = crate::support::example_without("login");
    let yaml = example.replace(
        "store:\n  kind: sqlite",
        &format!(
            "store:\n  url: postgres://{user}@127.0.0.1:{}/{db}\n  schema: {schema}\n  kind: postgres",
            relay.port
        ),
    )
    .replace("  data_dir: data ", "  # data_dir: data ");
    let keys = tempfile::tempdir().unwrap();
    let yaml = support::shared_signing_key(&yaml, keys.path());
    let proxy = support::TestProxy::start(&yaml, None).await;
    let create = || async {
        client()
            .post(proxy.url("/api/v1/auth/keys"))
            .bearer_auth(WRITER_KEY)
            .json(&serde_json::json!({"name": "k", "scopes": ["offers:write"]}))
            .send()
            .await
            .unwrap()
    };
    let created = json(create().await).await;
    let secret = created["key"].as_str().unwrap().to_owned();
    let write = |key: String| {
        let url = proxy.url("/api/v1/offers");
        async move {
            client()
                .post(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(write(secret.clone()).await, 200);

    relay.cut();
    assert_eq!(write(secret.clone()).await, 200, "verified from memory");
    let refused = create().await;
    assert!(refused.headers().get("retry-after").is_some());
    support::assert_envelope(refused, 503, "temporarily_unavailable", "STORE_UNAVAILABLE").await;

    relay.restore();
    let recovered = eventually(Duration::from_secs(10), || async {
        create().await.status() == 201
    })
    .await;
    eprintln!("writes recovered {recovered:?} after the store returned");
    assert_eq!(write(secret).await, 200);

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let _ = client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await;
}
