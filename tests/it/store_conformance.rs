//! One conformance suite, run against every store implementation: SQLite always,
//! PostgreSQL when `AUTHMD_TEST_POSTGRES_URL` names a server (CI sets it; without
//! it, the PostgreSQL half says it is skipped).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use std::path::PathBuf;
use std::time::Duration;

use authmd_proxy::credentials::KeyHash;
use authmd_proxy::store::{
    Claim, ClaimOutcome, KeyRecord, Operator, PendingUserCode, RegistrationKind,
    RegistrationRecord, Rotation, Store, StoreError, StoreSettings, UserCodeCheck,
};

use crate::support::store_place::Place;

const NOW: i64 = 1_800_000_000;

fn key(id: &str, owner: &str) -> KeyRecord {
    KeyRecord {
        id: id.to_owned(),
        hash: KeyHash::of(&format!("secret-of-{id}")),
        prefix: "ak_live".into(),
        name: format!("name of {id}"),
        owner: owner.to_owned(),
        scopes: vec!["offers:read".into(), "offers:write".into()],
        tier: "free".into(),
        created_at: NOW,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        previous_hash: None,
        previous_expires_at: None,
        registration_id: None,
        updated_at: 0,
        limits: Some(r#"{"quota":"10/day"}"#.into()),
        operator: None,
    }
}

fn registration(id: &str, key_id: &str) -> RegistrationRecord {
    RegistrationRecord {
        id: id.to_owned(),
        kind: RegistrationKind::Anonymous,
        client_name: Some("test agent".into()),
        key_id: key_id.to_owned(),
        claim_hash: Some(*blake3::hash(format!("claim-{id}").as_bytes()).as_bytes()),
        claim_expires_at: Some(NOW + 3600),
        claimed_at: None,
        subject: None,
        created_at: NOW,
        operator: None,
        contact_email: Some("ops@example.com".into()),
        contact_username: Some("ops".into()),
    }
}

/// Equal except for the store-set `updated_at`.
fn same(a: &KeyRecord, b: &KeyRecord) {
    let mut a = a.clone();
    let mut b = b.clone();
    a.updated_at = 0;
    b.updated_at = 0;
    assert_eq!(a, b);
}

async fn insert_then_read_back(place: &Place) {
    let store = place.open().await;
    let a = key("key_a", "acct1");
    let mut b = key("key_b", "acct1");
    b.created_at = NOW + 1;
    b.expires_at = Some(NOW + 100);
    b.registration_id = Some("reg_x".into());
    let c = key("key_c", "acct2");
    for k in [&a, &b, &c] {
        store.insert_key(k).await.unwrap();
    }
    let read = store.key("key_b").await.unwrap().unwrap();
    same(&read, &b);
    assert!(read.updated_at > 0, "the store sets updated_at");
    assert_eq!(store.key("key_nope").await.unwrap(), None);
    let ids = |keys: Vec<KeyRecord>| keys.into_iter().map(|k| k.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.keys_of("acct1").await.unwrap()),
        ["key_a", "key_b"]
    );
    assert_eq!(ids(store.keys_of("acct2").await.unwrap()), ["key_c"]);
    assert_eq!(ids(store.all_keys().await.unwrap()).len(), 3);
    let mut live = ids(store.live_keys(NOW).await.unwrap());
    live.sort();
    assert_eq!(live, ["key_a", "key_b", "key_c"]);
    let mut live = ids(store.live_keys(NOW + 100).await.unwrap());
    live.sort();
    assert_eq!(live, ["key_a", "key_c"], "an expired key is not live");
    store.ping().await.unwrap();
}

async fn duplicates_are_refused_and_change_nothing(place: &Place) {
    let store = place.open().await;
    let a = key("key_a", "acct1");
    store.insert_key(&a).await.unwrap();
    let mut same_id = key("key_a", "acct2");
    same_id.hash = KeyHash::of("another secret");
    assert_eq!(store.insert_key(&same_id).await, Err(StoreError::Duplicate));
    let mut same_hash = key("key_z", "acct2");
    same_hash.hash = a.hash;
    assert_eq!(
        store.insert_key(&same_hash).await,
        Err(StoreError::Duplicate)
    );
    assert_eq!(store.all_keys().await.unwrap().len(), 1);
    same(&store.key("key_a").await.unwrap().unwrap(), &a);
}

async fn rotation_replaces_the_secret(place: &Place) {
    let store = place.open().await;
    let a = key("key_a", "acct1");
    store.insert_key(&a).await.unwrap();
    let before = store.key("key_a").await.unwrap().unwrap();

    let new_hash = KeyHash::of("rotated once");
    let rotated = store
        .rotate_key(&Rotation {
            id: "key_a",
            new_hash,
            grace_until: None,
            now: NOW + 10,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.hash, new_hash);
    assert_eq!(rotated.previous_hash, None);
    assert!(rotated.updated_at >= before.updated_at);
    assert_eq!(rotated.scopes, a.scopes);

    let newer = KeyHash::of("rotated twice");
    let rotated = store
        .rotate_key(&Rotation {
            id: "key_a",
            new_hash: newer,
            grace_until: Some(NOW + 70),
            now: NOW + 20,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.hash, newer);
    assert_eq!(
        rotated.previous_hash,
        Some(new_hash),
        "grace keeps the old secret"
    );
    assert_eq!(rotated.previous_expires_at, Some(NOW + 70));
    same(&store.key("key_a").await.unwrap().unwrap(), &rotated);

    let unknown = Rotation {
        id: "key_unknown",
        new_hash: KeyHash::of("x"),
        grace_until: None,
        now: NOW,
    };
    assert_eq!(store.rotate_key(&unknown).await.unwrap(), None);
    store.revoke_key("key_a", NOW + 30).await.unwrap().unwrap();
    let revoked = Rotation {
        id: "key_a",
        new_hash: KeyHash::of("y"),
        grace_until: None,
        now: NOW + 40,
    };
    assert_eq!(
        store.rotate_key(&revoked).await.unwrap(),
        None,
        "a revoked key cannot be rotated back to life"
    );
    assert_eq!(store.key("key_a").await.unwrap().unwrap().hash, newer);
}

async fn revocation_is_final(place: &Place) {
    let store = place.open().await;
    store.insert_key(&key("key_a", "acct1")).await.unwrap();
    store.insert_key(&key("key_b", "acct1")).await.unwrap();
    let (_, mark) = store.changed_since(0).await.unwrap();
    let revoked = store.revoke_key("key_a", NOW + 5).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(NOW + 5));
    assert!(!revoked.is_live(NOW + 6));
    assert_eq!(store.revoke_key("key_a", NOW + 6).await.unwrap(), None);
    assert_eq!(store.revoke_key("key_nope", NOW).await.unwrap(), None);
    let owned: Vec<_> = store
        .keys_of("acct1")
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(owned, ["key_b"]);
    assert!(
        store
            .live_keys(NOW)
            .await
            .unwrap()
            .iter()
            .all(|k| k.id != "key_a")
    );
    let (changed, _) = store.changed_since(mark).await.unwrap();
    assert!(
        changed
            .iter()
            .any(|k| k.id == "key_a" && k.revoked_at.is_some()),
        "a resync from before the revocation sees it"
    );
}

async fn changed_since_follows_the_store_clock(place: &Place) {
    let store = place.open().await;
    store.insert_key(&key("key_a", "acct1")).await.unwrap();
    let (all, mark) = store.changed_since(0).await.unwrap();
    assert_eq!(all.len(), 1);
    assert!(mark >= all[0].updated_at);
    store.insert_key(&key("key_b", "acct1")).await.unwrap();
    let (changed, later) = store.changed_since(mark).await.unwrap();
    assert!(
        changed.iter().any(|k| k.id == "key_b"),
        "a later write is seen"
    );
    assert!(
        changed.iter().all(|k| k.updated_at >= mark),
        "nothing older is"
    );
    assert!(later >= mark, "the store clock does not run back");
    let (nothing, _) = store.changed_since(later + 60_000).await.unwrap();
    assert!(nothing.is_empty());
}

/// The first full load reads every key page by page, revoked ones included.
async fn keys_come_in_pages_in_id_order(place: &Place) {
    let store = place.open().await;
    for id in ["key_c", "key_a", "key_e", "key_b", "key_d"] {
        store.insert_key(&key(id, "acct1")).await.unwrap();
    }
    store.revoke_key("key_d", NOW).await.unwrap();
    let mut pages = Vec::new();
    let mut after = String::new();
    loop {
        let (page, _) = store.keys_after(&after, 2).await.unwrap();
        let ids: Vec<String> = page.into_iter().map(|k| k.id).collect();
        let Some(last) = ids.last().cloned() else {
            break;
        };
        pages.push(ids);
        after = last;
    }
    assert_eq!(
        pages,
        [
            vec!["key_a", "key_b"],
            vec!["key_c", "key_d"],
            vec!["key_e"]
        ]
    );
}

async fn last_used_is_recorded_in_batches_and_never_moves_back(place: &Place) {
    let store = place.open().await;
    store.insert_key(&key("key_a", "acct1")).await.unwrap();
    store.insert_key(&key("key_b", "acct1")).await.unwrap();
    let before = store.key("key_a").await.unwrap().unwrap();
    store
        .record_last_used(&[("key_a".into(), NOW + 50), ("key_b".into(), NOW + 7)])
        .await
        .unwrap();
    store
        .record_last_used(&[("key_a".into(), NOW + 20), ("key_gone".into(), NOW)])
        .await
        .unwrap();
    let a = store.key("key_a").await.unwrap().unwrap();
    assert_eq!(a.last_used_at, Some(NOW + 50));
    assert_eq!(
        a.updated_at, before.updated_at,
        "usage is not a change to announce"
    );
    assert_eq!(
        store.key("key_b").await.unwrap().unwrap().last_used_at,
        Some(NOW + 7)
    );
    store.record_last_used(&[]).await.unwrap();
}

async fn registration_is_stored_with_its_key_atomically(place: &Place) {
    let store = place.open().await;
    let mut k = key("key_r1", "reg:reg_1");
    k.registration_id = Some("reg_1".into());
    let r = registration("reg_1", "key_r1");
    store.insert_registration(&r, &k).await.unwrap();
    assert_eq!(store.registration("reg_1").await.unwrap(), Some(r.clone()));
    assert_eq!(
        store
            .registration_by_claim(r.claim_hash.as_ref().unwrap())
            .await
            .unwrap(),
        Some(r.clone())
    );
    assert_eq!(store.registration_by_claim(&[7; 32]).await.unwrap(), None);
    assert!(store.key("key_r1").await.unwrap().is_some());

    // Same registration id, new key: refused, and the key is not stored either.
    let k2 = key("key_r2", "reg:reg_1");
    let r2 = registration("reg_1", "key_r2");
    assert_eq!(
        store.insert_registration(&r2, &k2).await,
        Err(StoreError::Duplicate)
    );
    assert_eq!(store.key("key_r2").await.unwrap(), None, "all or nothing");
}

async fn a_claim_raises_the_key_in_place_once(place: &Place) {
    let store = place.open().await;
    let k = key("key_r1", "reg:reg_1");
    store
        .insert_registration(&registration("reg_1", "key_r1"), &k)
        .await
        .unwrap();
    let scopes = vec!["offers:read".to_owned(), "offers:delete".to_owned()];
    let claim = Claim {
        registration_id: "reg_1",
        subject: "https://idp.example alice",
        tier: "verified",
        scopes: &scopes,
        now: NOW + 60,
        operator: None,
        new_hash: None,
    };
    let ClaimOutcome::Claimed(claimed) = store.claim(&claim).await.unwrap() else {
        panic!("the first claim succeeds");
    };
    assert_eq!(claimed.id, "key_r1");
    assert_eq!(claimed.hash, k.hash, "the same secret keeps working");
    assert_eq!(claimed.tier, "verified");
    assert_eq!(claimed.scopes, scopes);
    let stored = store.registration("reg_1").await.unwrap().unwrap();
    assert_eq!(stored.claimed_at, Some(NOW + 60));
    assert_eq!(stored.subject.as_deref(), Some("https://idp.example alice"));
    assert_eq!(
        store.claim(&claim).await.unwrap(),
        ClaimOutcome::AlreadyClaimed
    );
    let missing = Claim {
        registration_id: "reg_nope",
        ..claim.clone()
    };
    assert_eq!(store.claim(&missing).await.unwrap(), ClaimOutcome::NotFound);
}

async fn a_persons_claimed_registrations_come_with_their_keys(place: &Place) {
    let store = place.open().await;
    let person = |provider: &str, subject: &str, handle: &str| Operator {
        provider: provider.into(),
        subject: subject.into(),
        handle: handle.into(),
    };
    let ada = person("demo", "ada", "ada");
    // The same subject at another provider is another person; so is another
    // subject with ada's handle.
    let others = [person("gh", "ada", "ada"), person("demo", "ada2", "ada")];
    let scopes = vec!["offers:read".to_owned()];
    let ids = ["reg_o1", "reg_o2", "reg_o3", "reg_o4", "reg_o5"];
    for (i, reg) in ids.iter().enumerate() {
        let key_id = format!("key_{reg}");
        let mut k = key(&key_id, &format!("reg:{reg}"));
        k.created_at = NOW + i64::try_from(i).unwrap();
        store
            .insert_registration(&registration(reg, &key_id), &k)
            .await
            .unwrap();
        let operator = match i {
            0 | 2 => Some(&ada),
            1 => Some(&others[0]),
            3 => Some(&others[1]),
            _ => None,
        };
        let claim = Claim {
            registration_id: reg,
            subject: "someone",
            tier: "verified",
            scopes: &scopes,
            now: NOW + 100 - i64::try_from(i).unwrap(),
            operator,
            new_hash: None,
        };
        assert!(matches!(
            store.claim(&claim).await.unwrap(),
            ClaimOutcome::Claimed(_)
        ));
    }
    // reg_o1's key made another key of its owner, and one of them was revoked.
    let mut extra = key("key_extra", "reg:reg_o1");
    extra.created_at = NOW + 50;
    store.insert_key(&extra).await.unwrap();
    store.revoke_key("key_reg_o1", NOW + 60).await.unwrap();
    store
        .insert_key(&key("key_unrelated", "acct9"))
        .await
        .unwrap();

    let operated = store.operated_by("demo", "ada").await.unwrap();
    let found: Vec<(&str, Vec<&str>)> = operated
        .iter()
        .map(|o| {
            (
                o.registration.id.as_str(),
                o.keys.iter().map(|k| k.id.as_str()).collect(),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            ("reg_o3", vec!["key_reg_o3"]),
            ("reg_o1", vec!["key_reg_o1", "key_extra"]),
        ],
        "oldest claim first; every key of each, revoked ones included"
    );
    assert_eq!(operated[0].registration.operator.as_ref(), Some(&ada));
    assert_eq!(operated[1].keys[0].revoked_at, Some(NOW + 60));
    assert!(
        store
            .operated_by("demo", "nobody")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.operated_by("gh", "ada").await.unwrap().len(), 1);
}

async fn a_claim_fails_cleanly_when_expired_or_revoked(place: &Place) {
    let store = place.open().await;
    store
        .insert_registration(&registration("reg_1", "key_1"), &key("key_1", "reg:reg_1"))
        .await
        .unwrap();
    store
        .insert_registration(&registration("reg_2", "key_2"), &key("key_2", "reg:reg_2"))
        .await
        .unwrap();
    let scopes = vec!["offers:read".to_owned()];
    let late = Claim {
        registration_id: "reg_1",
        subject: "iss sub",
        tier: "verified",
        scopes: &scopes,
        now: NOW + 3600,
        operator: None,
        new_hash: None,
    };
    assert_eq!(store.claim(&late).await.unwrap(), ClaimOutcome::Expired);
    let untouched = store.key("key_1").await.unwrap().unwrap();
    assert_eq!(untouched.tier, "free");
    assert_eq!(
        store
            .registration("reg_1")
            .await
            .unwrap()
            .unwrap()
            .claimed_at,
        None
    );

    store.revoke_key("key_2", NOW + 1).await.unwrap();
    let revoked = Claim {
        registration_id: "reg_2",
        now: NOW + 2,
        new_hash: None,
        ..late.clone()
    };
    assert_eq!(
        store.claim(&revoked).await.unwrap(),
        ClaimOutcome::KeyRevoked
    );
    assert_eq!(
        store
            .registration("reg_2")
            .await
            .unwrap()
            .unwrap()
            .claimed_at,
        None
    );
}

async fn an_assertion_id_is_used_once(place: &Place) {
    let store = place.open().await;
    assert!(
        store
            .use_assertion("https://idp", "jti-1", NOW + 60, NOW)
            .await
            .unwrap()
    );
    assert!(
        !store
            .use_assertion("https://idp", "jti-1", NOW + 60, NOW + 1)
            .await
            .unwrap()
    );
    assert!(
        store
            .use_assertion("https://other", "jti-1", NOW + 60, NOW + 1)
            .await
            .unwrap(),
        "ids are per issuer"
    );
    // Once past its expiry the assertion itself is refused anyway, so the id may be
    // forgotten: the table does not grow without bound.
    assert!(
        store
            .use_assertion("https://idp", "jti-1", NOW + 500, NOW + 120)
            .await
            .unwrap()
    );
}

async fn data_survives_reopening(place: &Place) {
    {
        let store = place.open().await;
        store.insert_key(&key("key_a", "acct1")).await.unwrap();
        store
            .insert_registration(&registration("reg_1", "key_r"), &key("key_r", "reg:reg_1"))
            .await
            .unwrap();
    }
    let store = place.open().await;
    assert!(store.key("key_a").await.unwrap().is_some());
    assert!(store.registration("reg_1").await.unwrap().is_some());
}

async fn quota_usage_adds_up_across_replicas(place: &Place) {
    use authmd_proxy::limits::quota::Usage;
    let usage = |name: &str, period: &str, delta: i64| Usage {
        name: name.into(),
        period: period.into(),
        delta,
    };
    let one = place.open().await;
    let two = place.open().await;
    let (_, start) = one.quota_usage_since(0, vec![]).await.unwrap();
    let totals = one
        .add_quota_usage(vec![
            usage("key:a", "2026-11", 5),
            usage("key:a", "2026-11-23", 2),
        ])
        .await
        .unwrap();
    assert_eq!(totals, [5, 2]);
    // A second replica adds to the same rows; a bought credit is negative usage.
    let totals = two
        .add_quota_usage(vec![
            usage("key:a", "2026-11", 3),
            usage("key:b", "2026-11", -4),
        ])
        .await
        .unwrap();
    assert_eq!(totals, [8, -4]);
    let (mut rows, clock) = one
        .quota_usage_since(start, vec!["2026-11".into(), "2026-11-23".into()])
        .await
        .unwrap();
    rows.sort();
    assert_eq!(
        rows,
        [
            ("key:a".to_owned(), "2026-11".to_owned(), 8),
            ("key:a".to_owned(), "2026-11-23".to_owned(), 2),
            ("key:b".to_owned(), "2026-11".to_owned(), -4),
        ]
    );
    // Only the asked periods, and only rows changed since.
    let (rows, _) = one
        .quota_usage_since(start, vec!["2026-11-23".into()])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let (rows, _) = one
        .quota_usage_since(clock + 1, vec!["2026-11".into()])
        .await
        .unwrap();
    assert!(rows.is_empty(), "{rows:?}");
}

async fn a_user_code_is_counted_locked_and_taken_once(place: &Place) {
    let store = place.open().await;
    let other = place.open().await;
    for (r, k) in [("reg_u1", "key_u1"), ("reg_u2", "key_u2")] {
        store
            .insert_registration(&registration(r, k), &key(k, &format!("reg:{r}")))
            .await
            .unwrap();
    }
    let ada = Operator {
        provider: "demo".into(),
        subject: "ada".into(),
        handle: "ada".into(),
    };
    let pending = |id: &str| PendingUserCode {
        registration_id: id.to_owned(),
        code_hash: [1; 32],
        operator: ada.clone(),
        expires_at: NOW + 600,
        failures: 0,
    };
    assert_eq!(
        store
            .check_user_code("reg_u1", &[1; 32], NOW)
            .await
            .unwrap(),
        UserCodeCheck::Missing
    );
    store.put_user_code(&pending("reg_u1"), NOW).await.unwrap();
    assert_eq!(
        other.user_code("reg_u1").await.unwrap(),
        Some(pending("reg_u1"))
    );

    // Wrong tries from two handles at once: exactly five are counted.
    let tries = (0..8).map(|i| {
        let handle = if i % 2 == 0 { &store } else { &other };
        handle.check_user_code("reg_u1", &[2; 32], NOW)
    });
    let outcomes = futures_util::future::join_all(tries).await;
    let mut remaining: Vec<i64> = outcomes
        .iter()
        .filter_map(|o| match o.as_ref().unwrap() {
            UserCodeCheck::Mismatched { remaining } => Some(*remaining),
            UserCodeCheck::Locked => None,
            other => panic!("{other:?}"),
        })
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, [0, 1, 2, 3, 4]);
    assert_eq!(
        store
            .check_user_code("reg_u1", &[1; 32], NOW)
            .await
            .unwrap(),
        UserCodeCheck::Locked,
        "locked: the right code no longer works"
    );

    // A new confirmation replaces the locked one; its code works once.
    store.put_user_code(&pending("reg_u1"), NOW).await.unwrap();
    assert_eq!(
        other
            .check_user_code("reg_u1", &[1; 32], NOW)
            .await
            .unwrap(),
        UserCodeCheck::Matched(ada.clone())
    );
    assert_eq!(
        store
            .check_user_code("reg_u1", &[1; 32], NOW)
            .await
            .unwrap(),
        UserCodeCheck::Missing
    );

    // Expired: refused, not counted; forgotten once another confirmation is stored.
    store.put_user_code(&pending("reg_u2"), NOW).await.unwrap();
    assert_eq!(
        store
            .check_user_code("reg_u2", &[2; 32], NOW + 600)
            .await
            .unwrap(),
        UserCodeCheck::Expired
    );
    assert_eq!(
        store.user_code("reg_u2").await.unwrap().unwrap().failures,
        0
    );
    store
        .put_user_code(&pending("reg_u1"), NOW + 601)
        .await
        .unwrap();
    assert_eq!(store.user_code("reg_u2").await.unwrap(), None);
}

crate::support::store_place::on_both_stores!(
    "conf";
    insert_then_read_back,
    duplicates_are_refused_and_change_nothing,
    rotation_replaces_the_secret,
    revocation_is_final,
    changed_since_follows_the_store_clock,
    keys_come_in_pages_in_id_order,
    last_used_is_recorded_in_batches_and_never_moves_back,
    registration_is_stored_with_its_key_atomically,
    a_claim_raises_the_key_in_place_once,
    a_claim_fails_cleanly_when_expired_or_revoked,
    a_persons_claimed_registrations_come_with_their_keys,
    an_assertion_id_is_used_once,
    data_survives_reopening,
    quota_usage_adds_up_across_replicas,
    a_user_code_is_counted_locked_and_taken_once,
);

#[tokio::test]
async fn sqlite_creates_its_directory_and_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("a").join("b").join("store.sqlite3");
    let settings = StoreSettings::Sqlite {
        path: path.clone(),
        resync: Duration::from_secs(5),
    };
    drop(Store::open(&settings).await.unwrap());
    assert!(path.exists());
    {
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection.pragma_update(None, "user_version", 999).unwrap();
    }
    let error = Store::open(&settings).await.unwrap_err();
    assert!(error.to_string().contains("newer"), "{error}");
}
