//! A running proxy picks up, by itself, what the operator's commands change beside
//! it: a key created or revoked with `keys create` / `keys revoke` on SQLite works or
//! dies well within a second, though the periodic resync is an hour away (the proxy
//! watches the file's `PRAGMA data_version`); a key written by `tokens rotate-key`
//! signs the next token, and a changed `tokens.signing_keys` file is read again,
//! at the config's next poll, with no SIGHUP, while tokens signed by the old key keep
//! working. All through the real binary, on real sockets.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step should fail loudly"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::cli_store::{ROOT, command, field, run, succeeds};
use crate::support::{Binary, client, eventually, write_status};

/// A bound on how long the proxy may take to see the change: generous for a loaded
/// machine, yet far below the hour the periodic resync is set to.
const PICKUP_BOUND: Duration = Duration::from_secs(10);

/// The example config in `dir` (its store in `dir/data`), with each `(from, to)`
/// replacement made; each `from` must be in the example.
fn config(dir: &Path, replacements: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(format!("{ROOT}/config.example.yaml")).unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "the example has `{from}`");
        text = text.replace(from, to);
    }
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The resync an hour away: only the data-version watch can pick a change up in time.
const RESYNC_HOURLY: (&str, &str) = ("  resync_interval: 10s", "  resync_interval: 1h");

/// The config polled every 100 ms.
const WATCH_FAST: (&str, &str) = ("  watch_interval: 2s", "  watch_interval: 100ms");

#[tokio::test]
async fn keys_revoked_and_created_from_the_cli_on_sqlite_are_seen_within_the_hourly_resync() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &[RESYNC_HOURLY]);
    let c = config.to_str().unwrap();
    let create = |name: &str| {
        let created = succeeds(&mut command(&[
            "keys",
            "create",
            "--config",
            c,
            "--name",
            name,
            "--scopes",
            "offers:write",
        ]));
        (field(&created, "id:"), field(&created, "key:"))
    };
    let (id, leaked) = create("leaked");
    let proxy = run(&config, &[], &[]).await;
    assert_eq!(write_status(&proxy.url, &leaked).await, 200);

    let revoked = succeeds(&mut command(&["keys", "revoke", "--config", c, &id]));
    assert!(revoked.contains("revoked"), "{revoked}");
    eventually(PICKUP_BOUND, || async {
        write_status(&proxy.url, &leaked).await == 401
    })
    .await;

    // A key created while the proxy runs works as soon, the same way.
    let (_, fresh) = create("fresh");
    eventually(PICKUP_BOUND, || async {
        write_status(&proxy.url, &fresh).await == 200
    })
    .await;
    assert_eq!(write_status(&proxy.url, &leaked).await, 401);
}

/// The proxy's authorization server metadata.
async fn metadata(proxy: &Binary) -> Value {
    let url = format!("{}/.well-known/oauth-authorization-server", proxy.url);
    let response = client().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The kids published at `jwks_uri`.
async fn published(jwks_uri: &str) -> Vec<String> {
    let response = client().get(jwks_uri).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let jwks: Value = response.json().await.unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// An anonymous `client_credentials` token for `offers:read`, and the `kid` it was
/// signed with.
async fn token(proxy: &Binary, token_endpoint: &str) -> (String, String) {
    let response = client()
        .post(token_endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&scope=offers:read")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", proxy.url);
    let body: Value = response.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    let kid = header["kid"].as_str().unwrap().to_owned();
    (token, kid)
}

/// The status of `GET /api/v1/offers` (an `offers:read` route) with `token`.
async fn read_with(proxy: &Binary, token: &str) -> u16 {
    client()
        .get(format!("{}/api/v1/offers", proxy.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Waits until `jwks_uri` publishes a key not in `before`, then asserts that a new
/// token is signed with it (the published set and the signing key change together);
/// the new token's kid. (It polls the JWKS, not the token endpoint: anonymous tokens
/// are rate-limited.)
async fn signed_with_a_new_key(
    proxy: &Binary,
    (jwks_uri, token_endpoint): (&str, &str),
    before: &[String],
) -> String {
    eventually(PICKUP_BOUND, || async {
        published(jwks_uri)
            .await
            .iter()
            .any(|kid| !before.contains(kid))
    })
    .await;
    let (_, kid) = token(proxy, token_endpoint).await;
    assert!(
        !before.contains(&kid),
        "a new token is signed with the new key"
    );
    assert!(published(jwks_uri).await.contains(&kid));
    kid
}

#[tokio::test]
async fn tokens_rotate_key_reaches_a_running_proxy_without_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &[WATCH_FAST]);
    let c = config.to_str().unwrap();
    let proxy = run(&config, &[], &[]).await;
    let doc = metadata(&proxy).await;
    let jwks_uri = doc["jwks_uri"].as_str().unwrap();
    let token_endpoint = doc["token_endpoint"].as_str().unwrap();
    let (old_token, old_kid) = token(&proxy, token_endpoint).await;
    let before = published(jwks_uri).await;
    assert_eq!(before, vec![old_kid.clone()]);
    assert_eq!(read_with(&proxy, &old_token).await, 200);

    let rotated = succeeds(&mut command(&["tokens", "rotate-key", "--config", c]));
    let new_kid = signed_with_a_new_key(&proxy, (jwks_uri, token_endpoint), &before).await;
    assert!(rotated.contains(&new_kid), "{rotated}");
    let kids = published(jwks_uri).await;
    assert!(
        kids.contains(&old_kid),
        "the old key still verifies: {kids:?}"
    );
    assert_eq!(read_with(&proxy, &old_token).await, 200);
}

/// Writes `pem` to `path` as a Secret update would: a new file renamed over it.
fn replace(path: &Path, pem: &str) {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, pem).unwrap();
    std::fs::rename(&partial, path).unwrap();
}

#[tokio::test]
async fn changed_signing_key_files_reach_a_running_proxy_without_a_signal() {
    use authmd_proxy::tokens::signing::{SigningAlgorithm, SigningKey};
    let dir = tempfile::tempdir().unwrap();
    let generate = || SigningKey::generate(SigningAlgorithm::EdDsa).unwrap();
    let (current, previous) = (
        dir.path().join("current.pem"),
        dir.path().join("previous.pem"),
    );
    let ((_, first), (_, zeroth)) = (generate(), generate());
    replace(&current, &first);
    replace(&previous, &zeroth);
    let list = format!(
        "\ntokens:\n  signing_keys: [\"{}\", \"{}\"]\n",
        current.display(),
        previous.display()
    );
    let config = config(dir.path(), &[WATCH_FAST, ("\ntokens:\n", &list)]);
    let proxy = run(&config, &[], &[]).await;
    let doc = metadata(&proxy).await;
    let jwks_uri = doc["jwks_uri"].as_str().unwrap();
    let token_endpoint = doc["token_endpoint"].as_str().unwrap();
    let (old_token, old_kid) = token(&proxy, token_endpoint).await;
    let before = published(jwks_uri).await;
    assert_eq!(before.len(), 2, "{before:?}");
    assert_eq!(before[0], old_kid);
    assert_eq!(read_with(&proxy, &old_token).await, 200);

    // The Secret moves on: a new current key, the old one kept to verify.
    let (next, second) = generate();
    replace(&previous, &first);
    replace(&current, &second);
    let new_kid = signed_with_a_new_key(&proxy, (jwks_uri, token_endpoint), &before).await;
    assert_eq!(new_kid, next.kid());
    assert_eq!(published(jwks_uri).await, vec![new_kid, old_kid]);
    assert_eq!(read_with(&proxy, &old_token).await, 200);
}
