//! A running proxy picks up, by itself, what the operator's commands change beside
//! it: a key created or revoked with `keys create` / `keys revoke` on SQLite works or
//! dies well within a second, though the periodic resync is an hour away (the proxy
//! watches the file's `PRAGMA data_version`). Through the real binary, on real
//! sockets.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step should fail loudly"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli_store::{ROOT, command, field, run, succeeds};
use crate::support::{eventually, write_status};

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
