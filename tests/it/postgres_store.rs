//! What only the PostgreSQL store does: concurrent migration by several replicas,
//! change announcements (`LISTEN`/`NOTIFY`), recovery from a lost connection, quick
//! and secret-free failure when the server is unreachable, and race-free claims
//! across replicas. The behaviour both stores share is in `store_conformance.rs`.
//!
//! These run against the server named by `AUTHMD_TEST_POSTGRES_URL` (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`); without it each test says it is
//! skipped. Each test works in a fresh schema of its own, dropped at the end.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "tests: a failed step fails the test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use authmd_proxy::credentials::KeyHash;
use authmd_proxy::store::postgres::PostgresStore;
use authmd_proxy::store::{
    Claim, ClaimOutcome, KeyRecord, Notice, RegistrationKind, RegistrationRecord, Rotation, Store,
    StoreError, StoreSettings,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::timeout;

const NOW: i64 = 1_800_000_000;

/// How long an announcement may take to arrive.
const ANNOUNCED_WITHIN: Duration = Duration::from_secs(1);

/// How long a (re)connection may take, beside backoff.
const CONNECTED_WITHIN: Duration = Duration::from_secs(10);

/// A fresh schema on the test server (and an `application_name` of its own, so that
/// a test kills only its own connections).
struct Place {
    url: String,
    schema: String,
    app: String,
}

impl Place {
    fn new() -> Option<Place> {
        let Ok(base) = std::env::var("AUTHMD_TEST_POSTGRES_URL") else {
            eprintln!("skipped: AUTHMD_TEST_POSTGRES_URL is not set");
            return None;
        };
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let unique = KeyHash::of(&format!(
            "{}-{:?}-{}",
            std::process::id(),
            std::time::SystemTime::now(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let hex = &unique.to_string()["blake3:".len()..][..16];
        let schema = format!("t_{hex}");
        let app = format!("authmd_test_{hex}");
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}application_name={app}");
        Some(Place { url, schema, app })
    }

    fn settings(&self) -> StoreSettings {
        StoreSettings::Postgres {
            url: self.url.clone(),
            schema: self.schema.clone(),
            resync: Duration::from_secs(5),
            tls: authmd_proxy::store::postgres::PostgresTls::default(),
        }
    }

    /// A store handle of its own (its own connections): another replica.
    async fn open(&self) -> Store {
        Store::open(&self.settings()).await.unwrap().unwrap()
    }

    fn replica(&self) -> PostgresStore {
        PostgresStore::new(&self.url, &self.schema).unwrap()
    }

    /// A plain connection for inspecting and sabotaging, outside the store.
    async fn admin(&self) -> tokio_postgres::Client {
        let mut config: tokio_postgres::Config = self.url.parse().unwrap();
        config.application_name("authmd_test_admin");
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    async fn cleanup(self) {
        if let Ok((client, connection)) =
            tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            let _ = client
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                    self.schema
                ))
                .await;
        }
    }
}

fn key(id: &str, owner: &str) -> KeyRecord {
    KeyRecord {
        id: id.to_owned(),
        hash: KeyHash::of(&format!("secret-of-{id}")),
        prefix: "ak_live".into(),
        name: format!("name of {id}"),
        owner: owner.to_owned(),
        scopes: vec!["offers:read".into()],
        tier: "free".into(),
        created_at: NOW,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        previous_hash: None,
        previous_expires_at: None,
        registration_id: None,
        updated_at: 0,
        limits: None,
        operator: None,
    }
}

fn registration(id: &str, key_id: &str) -> RegistrationRecord {
    RegistrationRecord {
        id: id.to_owned(),
        kind: RegistrationKind::Anonymous,
        client_name: Some("test agent".into()),
        key_id: key_id.to_owned(),
        claim_hash: Some(KeyHash::of(&format!("claim-{id}")).0),
        claim_expires_at: Some(NOW + 3600),
        claimed_at: None,
        subject: None,
        created_at: NOW,
        operator: None,
        contact_email: None,
        contact_username: None,
    }
}

fn postgres(store: &Store) -> &PostgresStore {
    match store {
        Store::Postgres(store) => store,
        Store::Sqlite(_) => panic!("expected the PostgreSQL store"),
    }
}

/// The next announcement, which must come within `within`.
async fn next_notice(notices: &mut mpsc::Receiver<Notice>, within: Duration) -> Notice {
    timeout(within, notices.recv())
        .await
        .expect("no announcement in time")
        .expect("the announcement channel closed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_replicas_starting_together_migrate_once() {
    let Some(place) = Place::new() else { return };
    let place = Arc::new(place);
    let start = Arc::new(tokio::sync::Barrier::new(8));
    let mut replicas = JoinSet::new();
    for i in 0..8 {
        let place = Arc::clone(&place);
        let start = Arc::clone(&start);
        replicas.spawn(async move {
            let store = place.open().await;
            start.wait().await;
            // The first call connects and migrates; all eight race for it.
            store.insert_key(&key(&format!("key_{i}"), "acct")).await
        });
    }
    while let Some(outcome) = replicas.join_next().await {
        outcome.unwrap().unwrap();
    }

    let admin = place.admin().await;
    let versions: i64 = admin
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{}\".schema_migrations",
                place.schema
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, 9, "each migration is recorded once");
    let mut tables: Vec<String> = admin
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            &[&place.schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    tables.sort();
    assert_eq!(
        tables,
        [
            "claim_user_codes",
            "keys",
            "oauth_clients",
            "oauth_codes",
            "oauth_consents",
            "oauth_families",
            "oauth_refresh",
            "quota_usage",
            "registrations",
            "revoked_tokens",
            "schema_migrations",
            "used_assertions"
        ]
    );
    let store = place.open().await;
    assert_eq!(store.all_keys().await.unwrap().len(), 8);
    drop(store);
    Arc::try_unwrap(place).ok().unwrap().cleanup().await;
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let Some(place) = Place::new() else { return };
    place.open().await.ping().await.unwrap();
    place
        .admin()
        .await
        .batch_execute(&format!(
            "INSERT INTO \"{}\".schema_migrations (version) VALUES (999)",
            place.schema
        ))
        .await
        .unwrap();
    let error = place.open().await.ping().await.unwrap_err();
    assert!(error.to_string().contains("newer"), "{error}");
    place.cleanup().await;
}

#[tokio::test]
async fn every_key_change_is_announced_to_other_replicas() {
    let Some(place) = Place::new() else { return };
    let a = place.open().await;
    let b = place.open().await;
    let mut notices = postgres(&a).listen();
    assert_eq!(
        next_notice(&mut notices, CONNECTED_WITHIN).await,
        Notice::Resync,
        "the first notice, once listening, is a resync"
    );

    b.insert_key(&key("key_1", "acct")).await.unwrap();
    assert_eq!(
        next_notice(&mut notices, ANNOUNCED_WITHIN).await,
        Notice::Key("key_1".into())
    );

    let rotated = b
        .rotate_key(&Rotation {
            id: "key_1",
            new_hash: KeyHash::of("new-secret"),
            grace_until: Some(NOW + 60),
            now: NOW,
        })
        .await
        .unwrap();
    assert!(rotated.is_some());
    assert_eq!(
        next_notice(&mut notices, ANNOUNCED_WITHIN).await,
        Notice::Key("key_1".into())
    );

    // Last-used times are not announced: the next notice is the revocation.
    b.record_last_used(&[("key_1".into(), NOW + 5)])
        .await
        .unwrap();
    assert!(b.revoke_key("key_1", NOW + 10).await.unwrap().is_some());
    assert_eq!(
        next_notice(&mut notices, ANNOUNCED_WITHIN).await,
        Notice::Key("key_1".into())
    );

    b.insert_registration(&registration("reg_1", "key_r"), &key("key_r", "reg:reg_1"))
        .await
        .unwrap();
    assert_eq!(
        next_notice(&mut notices, ANNOUNCED_WITHIN).await,
        Notice::Key("key_r".into())
    );
    let scopes = ["offers:read".to_owned(), "offers:write".to_owned()];
    let outcome = b
        .claim(&Claim {
            registration_id: "reg_1",
            subject: "https://idp user-1",
            tier: "verified",
            scopes: &scopes,
            now: NOW + 20,
            operator: None,
            new_hash: None,
        })
        .await
        .unwrap();
    assert!(matches!(outcome, ClaimOutcome::Claimed(_)), "{outcome:?}");
    assert_eq!(
        next_notice(&mut notices, ANNOUNCED_WITHIN).await,
        Notice::Key("key_r".into())
    );

    // A failed write announces nothing (its transaction rolled back).
    assert_eq!(
        b.insert_key(&key("key_r", "other")).await,
        Err(StoreError::Duplicate)
    );
    b.insert_key(&key("key_2", "acct")).await.unwrap();
    assert_eq!(
        next_notice(&mut notices, ANNOUNCED_WITHIN).await,
        Notice::Key("key_2".into())
    );

    // Another schema's announcements are not heard.
    let elsewhere = Place::new().unwrap();
    elsewhere
        .open()
        .await
        .insert_key(&key("key_other", "acct"))
        .await
        .unwrap();
    b.insert_key(&key("key_3", "acct")).await.unwrap();
    assert_eq!(
        next_notice(&mut notices, ANNOUNCED_WITHIN).await,
        Notice::Key("key_3".into())
    );

    drop((a, b, notices));
    elsewhere.cleanup().await;
    place.cleanup().await;
}

#[tokio::test]
async fn changed_since_uses_the_database_clock() {
    let Some(place) = Place::new() else { return };
    let store = place.open().await;
    let admin = place.admin().await;
    let db_now = |admin: tokio_postgres::Client| async move {
        let now: i64 = admin
            .query_one(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (admin, now)
    };
    let (admin, before) = db_now(admin).await;
    store.insert_key(&key("key_1", "acct")).await.unwrap();
    let (records, clock) = store.changed_since(0).await.unwrap();
    let (_admin, after) = db_now(admin).await;
    assert_eq!(records.len(), 1);
    let updated_at = records[0].updated_at;
    assert!(before <= updated_at && updated_at <= clock && clock <= after);
    let (records, _) = store.changed_since(clock + 1).await.unwrap();
    assert!(records.is_empty());
    drop(store);
    place.cleanup().await;
}

/// Kills every server connection of this test's `application_name`, and waits until
/// they are gone; returns how many there were.
async fn terminate_connections(place: &Place) -> usize {
    let admin = place.admin().await;
    let terminated = admin
        .query(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND application_name = $1
               AND query NOT ILIKE '%pg_terminate_backend%'",
            &[&place.app],
        )
        .await
        .unwrap();
    assert!(terminated.iter().all(|row| row.get::<_, bool>(0)));
    terminated.len()
}

#[tokio::test]
async fn a_lost_connection_is_remade_by_the_next_calls() {
    let Some(place) = Place::new() else { return };
    let store = place.open().await;
    let writer = place.open().await;
    store.insert_key(&key("key_1", "acct")).await.unwrap();
    let mut notices = postgres(&store).listen();
    assert_eq!(
        next_notice(&mut notices, CONNECTED_WITHIN).await,
        Notice::Resync
    );
    writer.ping().await.unwrap();

    // The query connection, the LISTEN connection and the writer's.
    assert_eq!(terminate_connections(&place).await, 3);

    // The next call may still find the dead connection; the one after succeeds.
    match store.key("key_1").await {
        Ok(found) => assert!(found.is_some()),
        Err(StoreError::Unavailable(_)) => {}
        Err(other) => panic!("unexpected {other:?}"),
    }
    assert!(store.key("key_1").await.unwrap().is_some());

    // The listener reconnects by itself and says announcements may have been missed.
    assert_eq!(
        next_notice(&mut notices, CONNECTED_WITHIN).await,
        Notice::Resync
    );
    let _ = writer.ping().await;
    writer.insert_key(&key("key_2", "acct")).await.unwrap();
    assert_eq!(
        next_notice(&mut notices, ANNOUNCED_WITHIN).await,
        Notice::Key("key_2".into())
    );

    // A write in flight on a connection that dies fails cleanly and writes nothing
    // twice: terminate again, then write from the store whose connection is dead.
    assert_eq!(terminate_connections(&place).await, 3);
    let outcome = store.insert_key(&key("key_3", "acct")).await;
    match outcome {
        Ok(()) | Err(StoreError::Unavailable(_)) => {}
        Err(StoreError::Duplicate) => panic!("a lost connection is not a duplicate"),
    }
    if outcome.is_err() {
        store.insert_key(&key("key_3", "acct")).await.unwrap();
    }
    assert!(store.key("key_3").await.unwrap().is_some());

    drop((store, writer, notices));
    place.cleanup().await;
}

#[tokio::test]
async fn an_unreachable_server_fails_quickly_without_the_password() {
    let url = "postgres://u:s3cret@127.0.0.1:1/x";
    let settings = StoreSettings::Postgres {
        url: url.into(),
        schema: "authmd".into(),
        resync: Duration::from_secs(5),
        tls: authmd_proxy::store::postgres::PostgresTls::default(),
    };
    // Opening makes no connection: it succeeds; the calls fail.
    let store = Store::open(&settings).await.unwrap().unwrap();
    assert!(!format!("{store:?}").contains("s3cret"));
    for _ in 0..3 {
        let error = timeout(Duration::from_secs(5), store.ping())
            .await
            .expect("a call must fail within the connect timeout")
            .unwrap_err();
        let StoreError::Unavailable(message) = &error else {
            panic!("expected Unavailable, got {error:?}");
        };
        assert!(!message.contains("s3cret"), "{message}");
        assert!(!error.to_string().contains("s3cret"), "{error}");
        assert!(!format!("{error:?}").contains("s3cret"), "{error:?}");
    }
    let error = timeout(Duration::from_secs(5), store.key("key_1"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(!error.to_string().contains("s3cret"), "{error}");

    // Many callers at once still all fail within about one connect timeout.
    let mut calls = JoinSet::new();
    for _ in 0..16 {
        let store = store.clone();
        calls.spawn(async move { store.all_keys().await });
    }
    let all = timeout(Duration::from_secs(8), async {
        while let Some(outcome) = calls.join_next().await {
            assert!(matches!(outcome.unwrap(), Err(StoreError::Unavailable(_))));
        }
    });
    all.await
        .expect("queued calls must not each wait a connect timeout");

    // A URL that does not parse is refused without being echoed.
    let error =
        PostgresStore::new("postgres://u:s3cret@127.0.0.1:notaport/x", "authmd").unwrap_err();
    assert!(!error.to_string().contains("s3cret"), "{error}");
}

#[tokio::test]
async fn a_server_that_never_answers_costs_callers_one_connect_timeout() {
    // Accepts connections and never says a word: the startup handshake hangs.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            connections.push(connection);
        }
    });
    let store = PostgresStore::new(
        &format!("postgres://u:s3cret@127.0.0.1:{port}/x?connect_timeout=1"),
        "authmd",
    )
    .unwrap();
    let store = Store::Postgres(store);
    let started = tokio::time::Instant::now();
    let mut calls = JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        calls.spawn(async move { store.ping().await });
    }
    while let Some(outcome) = calls.join_next().await {
        let error = outcome.unwrap().unwrap_err();
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }
    // One attempt times out after 1 s; the callers queued behind it share its
    // failure instead of each making an attempt of their own (which would be 8 s).
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_from_two_replicas_succeed_once() {
    let Some(place) = Place::new() else { return };
    let b = place.replica();
    let c = place.replica();
    let b = Store::Postgres(b);
    let c = Store::Postgres(c);
    let scopes = vec!["offers:read".to_owned(), "offers:write".to_owned()];
    for round in 0..10 {
        let reg_id = format!("reg_{round}");
        let key_id = format!("key_{round}");
        b.insert_registration(
            &registration(&reg_id, &key_id),
            &key(&key_id, &format!("reg:{reg_id}")),
        )
        .await
        .unwrap();
        let claim = |store: Store, subject: &'static str| {
            let reg_id = reg_id.clone();
            let scopes = scopes.clone();
            tokio::spawn(async move {
                store
                    .claim(&Claim {
                        registration_id: &reg_id,
                        subject,
                        tier: "verified",
                        scopes: &scopes,
                        now: NOW + 10,
                        operator: None,
                        new_hash: None,
                    })
                    .await
                    .unwrap()
            })
        };
        let (first, second) = tokio::join!(
            claim(b.clone(), "https://idp user-b"),
            claim(c.clone(), "https://idp user-c")
        );
        let outcomes = [first.unwrap(), second.unwrap()];
        let claimed: Vec<&KeyRecord> = outcomes
            .iter()
            .filter_map(|o| match o {
                ClaimOutcome::Claimed(key) => Some(&**key),
                _ => None,
            })
            .collect();
        assert_eq!(claimed.len(), 1, "{outcomes:?}");
        assert_eq!(claimed[0].tier, "verified");
        assert_eq!(claimed[0].scopes, scopes);
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == ClaimOutcome::AlreadyClaimed)
                .count(),
            1,
            "{outcomes:?}"
        );
        let stored = c.registration(&reg_id).await.unwrap().unwrap();
        assert_eq!(stored.claimed_at, Some(NOW + 10));
        let winner = if matches!(outcomes[0], ClaimOutcome::Claimed(_)) {
            "https://idp user-b"
        } else {
            "https://idp user-c"
        };
        assert_eq!(stored.subject.as_deref(), Some(winner));
    }
    drop((b, c));
    place.cleanup().await;
}
