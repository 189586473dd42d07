//! Interactive OAuth's records (registered clients, authorization codes, refresh
//! families, consents), one conformance suite run against every store
//! implementation: SQLite always, PostgreSQL when `AUTHMD_TEST_POSTGRES_URL` names a
//! server (without it, the PostgreSQL half says it is skipped).
//!
//! "Replicas" are several handles opened on the same data: on PostgreSQL each has
//! its own connection, on SQLite its own connection and thread.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    clippy::panic,
    reason = "tests: a failed step fails the test"
)]

use std::time::Duration;

use authmd_proxy::store::{
    CLIENT_TOUCH_SECS, ClientRecord, CodeRecord, CodeUse, GRANT_KEEP_SECS, GrantSweep,
    RefreshRecord, RefreshUse, Store, StoreError,
};

use crate::support::store_place::Place;

const NOW: i64 = 1_800_000_000;

/// A hash as the endpoints store it (hex BLAKE3 of the secret).
fn hash(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

fn client(id: &str, fingerprint: &str, created_at: i64) -> ClientRecord {
    ClientRecord {
        client_id: id.to_owned(),
        secret_hash: Some(hash(&format!("secret-of-{id}"))),
        metadata: r#"{"client_name":"Test","redirect_uris":["http://127.0.0.1/cb"]}"#.into(),
        fingerprint: fingerprint.to_owned(),
        created_at,
        last_used_at: created_at,
    }
}

fn code(secret: &str, expires_at: i64) -> CodeRecord {
    CodeRecord {
        hash: hash(secret),
        client_id: "dcr_1".into(),
        redirect_uri: "http://127.0.0.1:8123/callback".into(),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        resource: "https://api.example".into(),
        scopes: vec!["offers:read".into(), "offers:write".into()],
        subject: "user:demo:alice".into(),
        person: r#"{"provider":"demo","subject":"alice","tier":"free"}"#.into(),
        tier: "free".into(),
        expires_at,
    }
}

fn refresh(secret: &str, family: &str, family_expires_at: i64) -> RefreshRecord {
    RefreshRecord {
        hash: hash(secret),
        family: family.to_owned(),
        client_id: "dcr_1".into(),
        resource: "https://api.example".into(),
        scopes: vec!["offers:read".into()],
        subject: "user:demo:alice".into(),
        person: r#"{"provider":"demo","subject":"alice","tier":"free"}"#.into(),
        tier: "free".into(),
        created_at: NOW,
        family_expires_at,
    }
}

async fn clients_are_stored_found_by_fingerprint_touched_and_deleted(place: &Place) {
    let store = place.open().await;
    let first = client("dcr_a", "fp-1", NOW);
    let mut public = client("dcr_b", "fp-1", NOW + 30);
    public.secret_hash = None;
    let other = client("dcr_c", "fp-2", NOW + 30);
    for c in [&first, &public, &other] {
        store.insert_client(c).await.unwrap();
    }
    assert_eq!(store.client("dcr_a").await.unwrap(), Some(first.clone()));
    assert_eq!(store.client("dcr_b").await.unwrap(), Some(public.clone()));
    assert_eq!(store.client("dcr_nope").await.unwrap(), None);
    assert_eq!(
        store.insert_client(&client("dcr_a", "fp-9", NOW)).await,
        Err(StoreError::Duplicate)
    );

    // The same registration within the window: the newest such client.
    assert_eq!(
        store.client_by_fingerprint("fp-1", NOW - 60).await.unwrap(),
        Some(public.clone())
    );
    assert_eq!(
        store.client_by_fingerprint("fp-1", NOW + 30).await.unwrap(),
        Some(public.clone()),
        "created exactly at `since` counts"
    );
    assert_eq!(
        store.client_by_fingerprint("fp-1", NOW + 31).await.unwrap(),
        None,
        "none registered since"
    );
    assert_eq!(
        store.client_by_fingerprint("fp-3", NOW).await.unwrap(),
        None
    );

    // A use moves the last use forward (written at most once an hour: see below).
    assert!(store.touch_client("dcr_a", NOW + 5000).await.unwrap());
    assert!(store.touch_client("dcr_b", NOW + 4000).await.unwrap());
    let last_used = |c: Option<ClientRecord>| c.unwrap().last_used_at;
    assert_eq!(last_used(store.client("dcr_a").await.unwrap()), NOW + 5000);
    assert_eq!(last_used(store.client("dcr_b").await.unwrap()), NOW + 4000);
    assert_eq!(last_used(store.client("dcr_c").await.unwrap()), NOW + 30);

    // Unused since NOW + 100: only the one last used before then.
    assert_eq!(
        store.delete_clients_unused_since(NOW + 100).await.unwrap(),
        1
    );
    assert_eq!(store.client("dcr_c").await.unwrap(), None);
    assert!(store.client("dcr_b").await.unwrap().is_some());
    assert_eq!(
        store.delete_clients_unused_since(NOW + 100).await.unwrap(),
        0
    );
}

async fn a_use_is_written_at_most_once_an_hour_per_client(place: &Place) {
    let store = place.open().await;
    store
        .insert_client(&client("dcr_t", "fp-t", NOW))
        .await
        .unwrap();
    let last_used = async || store.client("dcr_t").await.unwrap().unwrap().last_used_at;
    // Within the hour after the stored use: nothing is written.
    for at in [NOW, NOW + 10, NOW + CLIENT_TOUCH_SECS - 1] {
        assert!(!store.touch_client("dcr_t", at).await.unwrap(), "{at}");
    }
    assert_eq!(last_used().await, NOW);
    // An hour after it: written, and the next hour counts from there.
    assert!(
        store
            .touch_client("dcr_t", NOW + CLIENT_TOUCH_SECS)
            .await
            .unwrap()
    );
    assert_eq!(last_used().await, NOW + CLIENT_TOUCH_SECS);
    assert!(
        !store
            .touch_client("dcr_t", NOW + CLIENT_TOUCH_SECS + 5)
            .await
            .unwrap()
    );
    assert!(
        !store.touch_client("dcr_t", NOW).await.unwrap(),
        "never backwards"
    );
    assert_eq!(last_used().await, NOW + CLIENT_TOUCH_SECS);
    assert!(
        !store
            .touch_client("dcr_unknown", NOW + 10 * CLIENT_TOUCH_SECS)
            .await
            .unwrap(),
        "an unknown client is left alone"
    );
    assert_eq!(store.client("dcr_unknown").await.unwrap(), None);
}

async fn unused_clients_are_swept_with_their_consents_and_refresh_tokens(place: &Place) {
    let store = place.open().await;
    let ttl = 30 * 86_400;
    // Last used at NOW (its stored time may lag the real last use by up to an
    // hour), and one used two hours later.
    store
        .insert_client(&client("dcr_old", "fp-o", NOW - 86_400))
        .await
        .unwrap();
    assert!(store.touch_client("dcr_old", NOW).await.unwrap());
    store
        .insert_client(&client("dcr_recent", "fp-r", NOW + 2 * CLIENT_TOUCH_SECS))
        .await
        .unwrap();
    let scopes = vec!["offers:read".to_owned()];
    let far = NOW + 10 * ttl;
    for id in ["dcr_old", "dcr_recent", "my-cli"] {
        store
            .remember_consent("user:demo:alice", id, &scopes, far)
            .await
            .unwrap();
    }
    let token_of = |secret: &str, family: &str, client_id: &str| {
        let mut token = refresh(secret, family, far);
        client_id.clone_into(&mut token.client_id);
        token
    };
    let old_token = token_of("rt-old", "fam_old", "dcr_old");
    let recent_token = token_of("rt-recent", "fam_recent", "dcr_recent");
    let declared_token = token_of("rt-declared", "fam_declared", "my-cli");
    for token in [&old_token, &recent_token, &declared_token] {
        store.insert_refresh(token).await.unwrap();
    }

    // Exactly `ttl` + the touch lag after the stored use: not yet.
    let due = NOW + ttl + CLIENT_TOUCH_SECS;
    assert_eq!(store.sweep_clients(due - 1000, ttl).await.unwrap(), 0);
    assert_eq!(store.sweep_clients(due, ttl).await.unwrap(), 0);
    assert!(store.client("dcr_old").await.unwrap().is_some());
    // A second later: the client goes, with its consent and refresh token.
    assert_eq!(store.sweep_clients(due + 1, ttl).await.unwrap(), 1);
    assert_eq!(store.sweep_clients(due + 1, ttl).await.unwrap(), 0);
    assert_eq!(store.client("dcr_old").await.unwrap(), None);
    assert!(store.client("dcr_recent").await.unwrap().is_some());
    let consent = async |id: &str| store.consent("user:demo:alice", id, NOW).await.unwrap();
    assert_eq!(consent("dcr_old").await, None);
    assert_eq!(consent("dcr_recent").await, Some(scopes.clone()));
    assert_eq!(
        consent("my-cli").await,
        Some(scopes.clone()),
        "a declared client's consents are not the sweep's"
    );
    assert_eq!(
        store.use_refresh(&old_token.hash, NOW, 10).await.unwrap(),
        RefreshUse::Unknown
    );
    assert!(matches!(
        store
            .use_refresh(&recent_token.hash, NOW, 10)
            .await
            .unwrap(),
        RefreshUse::Fresh(_)
    ));
    assert!(matches!(
        store
            .use_refresh(&declared_token.hash, NOW, 10)
            .await
            .unwrap(),
        RefreshUse::Fresh(_)
    ));
    // The other one, unused from two hours later on, goes two hours later.
    assert_eq!(
        store
            .sweep_clients(due + 2 * CLIENT_TOUCH_SECS, ttl)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .sweep_clients(due + 2 * CLIENT_TOUCH_SECS + 1, ttl)
            .await
            .unwrap(),
        1
    );
    assert_eq!(consent("dcr_recent").await, None);
}

async fn a_code_is_taken_once_and_a_replay_names_the_family(place: &Place) {
    let store = place.open().await;
    let issued = code("code-1", NOW + 60);
    store.insert_code(&issued).await.unwrap();
    assert_eq!(store.insert_code(&issued).await, Err(StoreError::Duplicate));

    assert_eq!(
        store.take_code(&issued.hash, NOW + 5).await.unwrap(),
        CodeUse::Fresh(issued.clone())
    );
    assert_eq!(
        store.take_code(&issued.hash, NOW + 6).await.unwrap(),
        CodeUse::Replayed { family: None },
        "replayed before the family is recorded"
    );
    store.set_code_family(&issued.hash, "fam_1").await.unwrap();
    let replayed = CodeUse::Replayed {
        family: Some("fam_1".into()),
    };
    assert_eq!(
        store.take_code(&issued.hash, NOW + 7).await.unwrap(),
        replayed
    );
    // A replay after the code's lifetime is still one, for a while.
    assert_eq!(
        store.take_code(&issued.hash, NOW + 120).await.unwrap(),
        replayed
    );
    assert_eq!(
        store
            .take_code(&issued.hash, NOW + 60 + GRANT_KEEP_SECS)
            .await
            .unwrap(),
        CodeUse::Unknown,
        "forgotten once the replay window is over"
    );

    assert_eq!(
        store.take_code(&hash("never issued"), NOW).await.unwrap(),
        CodeUse::Unknown
    );
    store
        .set_code_family(&hash("never issued"), "fam_x")
        .await
        .unwrap();
    assert_eq!(
        store.take_code(&hash("never issued"), NOW).await.unwrap(),
        CodeUse::Unknown
    );

    // An expired code is unknown, and stays so: it was never used.
    let late = code("code-2", NOW + 60);
    store.insert_code(&late).await.unwrap();
    assert_eq!(
        store.take_code(&late.hash, NOW + 60).await.unwrap(),
        CodeUse::Unknown
    );
    assert_eq!(
        store.take_code(&late.hash, NOW + 61).await.unwrap(),
        CodeUse::Unknown
    );
}

/// Several replicas take the same codes at the same moment: for each code exactly
/// one take is fresh, and every other one is a replay.
async fn replicas_taking_a_code_at_once_get_one_fresh(place: &Place) {
    const REPLICAS: usize = 8;
    let stores = place.replicas(REPLICAS).await;
    for round in 0..5 {
        let issued = code(&format!("raced-{round}"), NOW + 60);
        stores[0].insert_code(&issued).await.unwrap();
        let takes = stores.iter().map(|store| {
            let store = store.clone();
            let hash = issued.hash.clone();
            tokio::spawn(async move { store.take_code(&hash, NOW + 1).await.unwrap() })
        });
        let outcomes: Vec<CodeUse> = futures_util::future::join_all(takes)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let fresh = outcomes
            .iter()
            .filter(|o| matches!(o, CodeUse::Fresh(_)))
            .count();
        assert_eq!(fresh, 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, CodeUse::Fresh(_) | CodeUse::Replayed { family: None })),
            "round {round}: {outcomes:?}"
        );
    }
}

async fn refresh_rotation_grace_reuse_and_revocation(place: &Place) {
    let store = place.open().await;
    let expires = NOW + 30 * 86_400;
    let first = refresh("rt-1", "fam_1", expires);
    store.insert_refresh(&first).await.unwrap();
    assert_eq!(
        store.insert_refresh(&first).await,
        Err(StoreError::Duplicate)
    );
    assert!(!store.family_revoked("fam_1").await.unwrap());

    // Grace is counted from the first use, not the latest.
    let grace = 10;
    assert_eq!(
        store
            .use_refresh(&first.hash, NOW + 100, grace)
            .await
            .unwrap(),
        RefreshUse::Fresh(first.clone())
    );
    assert_eq!(
        store
            .use_refresh(&first.hash, NOW + 100, grace)
            .await
            .unwrap(),
        RefreshUse::Grace(first.clone())
    );
    assert_eq!(
        store
            .use_refresh(&first.hash, NOW + 109, grace)
            .await
            .unwrap(),
        RefreshUse::Grace(first.clone())
    );
    let reused = RefreshUse::Reused {
        family: "fam_1".into(),
    };
    assert_eq!(
        store
            .use_refresh(&first.hash, NOW + 110, grace)
            .await
            .unwrap(),
        reused
    );
    assert_eq!(
        store
            .use_refresh(&first.hash, NOW + 105, grace)
            .await
            .unwrap(),
        RefreshUse::Grace(first.clone()),
        "a late use did not move the first"
    );
    // No grace: every use after the first is a reuse.
    let strict = refresh("rt-strict", "fam_1", expires);
    store.insert_refresh(&strict).await.unwrap();
    assert!(matches!(
        store.use_refresh(&strict.hash, NOW, 0).await.unwrap(),
        RefreshUse::Fresh(_)
    ));
    assert_eq!(
        store.use_refresh(&strict.hash, NOW, 0).await.unwrap(),
        reused
    );

    // The successor, then the family's revocation: every token of it, used or not,
    // and one added after, is revoked.
    let second = refresh("rt-2", "fam_1", expires);
    store.insert_refresh(&second).await.unwrap();
    let other = refresh("rt-other", "fam_2", expires);
    store.insert_refresh(&other).await.unwrap();
    store.revoke_family("fam_1", NOW + 200).await.unwrap();
    store.revoke_family("fam_1", NOW + 300).await.unwrap();
    assert!(store.family_revoked("fam_1").await.unwrap());
    assert!(!store.family_revoked("fam_2").await.unwrap());
    for token in [&first, &second] {
        assert_eq!(
            store
                .use_refresh(&token.hash, NOW + 201, grace)
                .await
                .unwrap(),
            RefreshUse::Revoked
        );
    }
    let after = refresh("rt-3", "fam_1", expires);
    store.insert_refresh(&after).await.unwrap();
    assert_eq!(
        store
            .use_refresh(&after.hash, NOW + 202, grace)
            .await
            .unwrap(),
        RefreshUse::Revoked
    );
    assert!(store.family_revoked("fam_1").await.unwrap());
    assert_eq!(
        store
            .use_refresh(&other.hash, NOW + 202, grace)
            .await
            .unwrap(),
        RefreshUse::Fresh(other.clone()),
        "other families are untouched"
    );

    // A family revoked before any of its tokens is stored (a code replay racing the
    // first rotation) stays revoked when its first token arrives.
    store.revoke_family("fam_early", NOW).await.unwrap();
    let early = refresh("rt-early", "fam_early", expires);
    store.insert_refresh(&early).await.unwrap();
    assert_eq!(
        store
            .use_refresh(&early.hash, NOW + 1, grace)
            .await
            .unwrap(),
        RefreshUse::Revoked
    );

    // Unknown: never issued, or past the family's end (used or not).
    assert_eq!(
        store.use_refresh(&hash("nope"), NOW, grace).await.unwrap(),
        RefreshUse::Unknown
    );
    let short = refresh("rt-short", "fam_3", NOW + 50);
    store.insert_refresh(&short).await.unwrap();
    assert_eq!(
        store
            .use_refresh(&short.hash, NOW + 50, grace)
            .await
            .unwrap(),
        RefreshUse::Unknown
    );
    assert_eq!(
        store
            .use_refresh(&other.hash, expires, grace)
            .await
            .unwrap(),
        RefreshUse::Unknown
    );
}

/// Several replicas use the same refresh token at the same moment: exactly one
/// gets it fresh, the others (within the grace) get the grace answer.
async fn replicas_using_a_refresh_token_at_once_get_one_fresh(place: &Place) {
    const REPLICAS: usize = 8;
    let stores = place.replicas(REPLICAS).await;
    for round in 0..5 {
        let token = refresh(&format!("raced-{round}"), "fam_r", NOW + 86_400);
        stores[0].insert_refresh(&token).await.unwrap();
        let uses = stores.iter().map(|store| {
            let store = store.clone();
            let hash = token.hash.clone();
            tokio::spawn(async move { store.use_refresh(&hash, NOW + 1, 10).await.unwrap() })
        });
        let outcomes: Vec<RefreshUse> = futures_util::future::join_all(uses)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let fresh = outcomes
            .iter()
            .filter(|o| matches!(o, RefreshUse::Fresh(_)))
            .count();
        assert_eq!(fresh, 1, "round {round}: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o, RefreshUse::Fresh(_) | RefreshUse::Grace(_))),
            "round {round}: {outcomes:?}"
        );
    }
}

async fn consent_is_remembered_replaced_and_expires(place: &Place) {
    let store = place.open().await;
    let read = vec!["offers:read".to_owned()];
    let both = vec!["offers:read".to_owned(), "offers:write".to_owned()];
    assert_eq!(
        store
            .consent("user:demo:alice", "dcr_1", NOW)
            .await
            .unwrap(),
        None
    );
    store
        .remember_consent("user:demo:alice", "dcr_1", &both, NOW + 100)
        .await
        .unwrap();
    store
        .remember_consent("user:demo:alice", "dcr_2", &read, NOW + 100)
        .await
        .unwrap();
    assert_eq!(
        store
            .consent("user:demo:alice", "dcr_1", NOW)
            .await
            .unwrap(),
        Some(both.clone())
    );
    assert_eq!(
        store.consent("user:demo:bob", "dcr_1", NOW).await.unwrap(),
        None,
        "per person"
    );
    // Remembering again replaces the scopes and the expiry.
    store
        .remember_consent("user:demo:alice", "dcr_1", &read, NOW + 50)
        .await
        .unwrap();
    assert_eq!(
        store
            .consent("user:demo:alice", "dcr_1", NOW)
            .await
            .unwrap(),
        Some(read.clone())
    );
    assert_eq!(
        store
            .consent("user:demo:alice", "dcr_1", NOW + 49)
            .await
            .unwrap(),
        Some(read.clone())
    );
    assert_eq!(
        store
            .consent("user:demo:alice", "dcr_1", NOW + 50)
            .await
            .unwrap(),
        None,
        "expired"
    );
    assert_eq!(
        store
            .consent("user:demo:alice", "dcr_2", NOW + 50)
            .await
            .unwrap(),
        Some(read),
        "per client"
    );
    store
        .remember_consent("user:demo:alice", "dcr_3", &[], NOW + 100)
        .await
        .unwrap();
    assert_eq!(
        store
            .consent("user:demo:alice", "dcr_3", NOW)
            .await
            .unwrap(),
        Some(Vec::new()),
        "consent to no scope is still consent"
    );
}

async fn the_sweep_forgets_only_what_can_no_longer_be_used(place: &Place) {
    let store = place.open().await;
    let at = NOW + 10_000;
    // Codes: one expired long ago (used), one expired recently (replays still
    // recognised), one live.
    let old = code("old", at - GRANT_KEEP_SECS);
    let recent = code("recent", at - 1);
    let live = code("live", at + 60);
    for c in [&old, &recent, &live] {
        store.insert_code(c).await.unwrap();
    }
    store.take_code(&old.hash, NOW).await.unwrap();
    store.take_code(&recent.hash, NOW).await.unwrap();
    // Refresh tokens: an expired family, a family revoked long ago, one revoked
    // recently, a live one.
    let expired = refresh("expired", "fam_expired", at);
    let revoked_long_ago = refresh("revoked-old", "fam_revoked_old", at + 86_400);
    let revoked_recently = refresh("revoked-new", "fam_revoked_new", at + 86_400);
    let kept = refresh("kept", "fam_kept", at + 86_400);
    for r in [&expired, &revoked_long_ago, &revoked_recently, &kept] {
        store.insert_refresh(r).await.unwrap();
    }
    store
        .revoke_family("fam_revoked_old", at - GRANT_KEEP_SECS)
        .await
        .unwrap();
    store
        .revoke_family("fam_revoked_new", at - 1)
        .await
        .unwrap();
    // A revocation of a family that never had a token is kept only a while.
    store
        .revoke_family("fam_never", at - GRANT_KEEP_SECS)
        .await
        .unwrap();
    // Consents: one expired, one live.
    let scopes = vec!["offers:read".to_owned()];
    store
        .remember_consent("user:demo:alice", "dcr_old", &scopes, at)
        .await
        .unwrap();
    store
        .remember_consent("user:demo:alice", "dcr_live", &scopes, at + 1)
        .await
        .unwrap();

    let swept = store.sweep_grants(at).await.unwrap();
    assert_eq!(
        swept,
        GrantSweep {
            codes: 1,
            refresh_tokens: 2,
            families: 2,
            consents: 1,
        }
    );
    assert_eq!(
        store.sweep_grants(at).await.unwrap(),
        GrantSweep::default(),
        "nothing left to sweep"
    );

    // Asked as of earlier, what was swept is gone and what was kept is still there.
    let before = NOW + 1;
    assert_eq!(
        store.take_code(&old.hash, before).await.unwrap(),
        CodeUse::Unknown
    );
    assert_eq!(
        store.take_code(&recent.hash, before).await.unwrap(),
        CodeUse::Replayed { family: None }
    );
    assert!(matches!(
        store.take_code(&live.hash, before).await.unwrap(),
        CodeUse::Fresh(_)
    ));
    assert_eq!(
        store.use_refresh(&expired.hash, before, 10).await.unwrap(),
        RefreshUse::Unknown
    );
    assert_eq!(
        store
            .use_refresh(&revoked_long_ago.hash, before, 10)
            .await
            .unwrap(),
        RefreshUse::Unknown
    );
    assert!(
        store.family_revoked("fam_revoked_old").await.unwrap(),
        "the family's revocation outlives its tokens"
    );
    assert!(!store.family_revoked("fam_never").await.unwrap());
    assert_eq!(
        store
            .use_refresh(&revoked_recently.hash, before, 10)
            .await
            .unwrap(),
        RefreshUse::Revoked
    );
    assert!(matches!(
        store.use_refresh(&kept.hash, before, 10).await.unwrap(),
        RefreshUse::Fresh(_)
    ));
    assert_eq!(
        store
            .consent("user:demo:alice", "dcr_old", before)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .consent("user:demo:alice", "dcr_live", before)
            .await
            .unwrap(),
        Some(scopes)
    );
}

async fn grants_survive_reopening(place: &Place) {
    let issued = code("code-r", NOW + 60);
    let used = code("code-used", NOW + 60);
    let token = refresh("rt-r", "fam_r", NOW + 86_400);
    let registered = client("dcr_r", "fp-r", NOW);
    let scopes = vec!["offers:read".to_owned()];
    {
        let store = place.open().await;
        store.insert_client(&registered).await.unwrap();
        store.insert_code(&issued).await.unwrap();
        store.insert_code(&used).await.unwrap();
        store.take_code(&used.hash, NOW).await.unwrap();
        store.set_code_family(&used.hash, "fam_r").await.unwrap();
        store.insert_refresh(&token).await.unwrap();
        store
            .remember_consent("user:demo:alice", "dcr_r", &scopes, NOW + 100)
            .await
            .unwrap();
        store.revoke_family("fam_gone", NOW).await.unwrap();
    }
    let store = place.open().await;
    assert_eq!(store.client("dcr_r").await.unwrap(), Some(registered));
    assert_eq!(
        store.take_code(&issued.hash, NOW + 1).await.unwrap(),
        CodeUse::Fresh(issued)
    );
    assert_eq!(
        store.take_code(&used.hash, NOW + 1).await.unwrap(),
        CodeUse::Replayed {
            family: Some("fam_r".into())
        }
    );
    assert_eq!(
        store.use_refresh(&token.hash, NOW + 1, 10).await.unwrap(),
        RefreshUse::Fresh(token)
    );
    assert_eq!(
        store
            .consent("user:demo:alice", "dcr_r", NOW)
            .await
            .unwrap(),
        Some(scopes)
    );
    assert!(store.family_revoked("fam_gone").await.unwrap());
}

crate::support::store_place::on_both_stores!(
    "grants";
    clients_are_stored_found_by_fingerprint_touched_and_deleted,
    a_use_is_written_at_most_once_an_hour_per_client,
    unused_clients_are_swept_with_their_consents_and_refresh_tokens,
    a_code_is_taken_once_and_a_replay_names_the_family,
    replicas_taking_a_code_at_once_get_one_fresh,
    refresh_rotation_grace_reuse_and_revocation,
    replicas_using_a_refresh_token_at_once_get_one_fresh,
    consent_is_remembered_replaced_and_expires,
    the_sweep_forgets_only_what_can_no_longer_be_used,
    grants_survive_reopening,
);

/// A running proxy sweeps its store's expired grants in its periodic sweep (every
/// minute, on the follower's clock, which is paused here and moved on by Tokio
/// whenever the proxy waits).
#[tokio::test(start_paused = true)]
async fn a_running_proxy_sweeps_expired_grants() {
    use authmd_proxy::clock::unix_now;
    use authmd_proxy::config::{Config, Overrides};
    use authmd_proxy::gateway::Gateway;

    let data = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
        .unwrap();
    let overrides = Overrides {
        listen: None,
        admin_listen: None,
        public_url: None,
        data_dir: Some(data.path().to_owned()),
        upstream: None,
    };
    let config = Config::from_yaml_str(&yaml, "test.yaml", &overrides, &|_| None).unwrap();
    let store = Store::open(&config.lifecycle.store).await.unwrap().unwrap();
    // A code used and expired long enough ago that even its replays are forgotten.
    let expires_at = unix_now() - GRANT_KEEP_SECS - 5;
    let old = code("swept by the proxy", expires_at);
    store.insert_code(&old).await.unwrap();
    store.take_code(&old.hash, expires_at - 1).await.unwrap();
    let replayed = CodeUse::Replayed { family: None };
    assert_eq!(
        store.take_code(&old.hash, expires_at).await.unwrap(),
        replayed
    );

    let started = tokio::time::Instant::now();
    let gateway = Gateway::start(config, Some(store.clone())).await.unwrap();
    let mut swept_after = None;
    for _ in 0..600 {
        if store.take_code(&old.hash, expires_at).await.unwrap() == CodeUse::Unknown {
            swept_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let swept_after = swept_after.expect("the proxy never swept the expired code");
    assert!(
        swept_after >= Duration::from_secs(60),
        "swept by the periodic sweep, not at start: {swept_after:?}"
    );
    drop(gateway);
}

/// A running proxy deletes the registered clients no one used for
/// `oauth.registration.unused_ttl` (30 days by default) in the same periodic sweep,
/// and keeps the ones used since.
#[tokio::test(start_paused = true)]
async fn a_running_proxy_deletes_registered_clients_no_one_used() {
    use authmd_proxy::clock::unix_now;
    use authmd_proxy::config::{Config, Overrides};
    use authmd_proxy::gateway::Gateway;

    let data = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
        .unwrap();
    let yaml = format!("{yaml}\noauth:\n  registration:\n    unused_ttl: 2d\n");
    let overrides = Overrides {
        listen: None,
        admin_listen: None,
        public_url: None,
        data_dir: Some(data.path().to_owned()),
        upstream: None,
    };
    let config = Config::from_yaml_str(&yaml, "test.yaml", &overrides, &|_| None).unwrap();
    assert_eq!(
        config.interactive.registration.unused_ttl,
        Duration::from_secs(2 * 86_400)
    );
    let store = Store::open(&config.lifecycle.store).await.unwrap().unwrap();
    let now = unix_now();
    let unused = now - 2 * 86_400 - CLIENT_TOUCH_SECS - 5;
    store
        .insert_client(&client("dcr_unused", "fp-u", unused))
        .await
        .unwrap();
    // Used a day ago (as the store has it), within the two days.
    store
        .insert_client(&client("dcr_used", "fp-d", now - 86_400))
        .await
        .unwrap();

    let started = tokio::time::Instant::now();
    let gateway = Gateway::start(config, Some(store.clone())).await.unwrap();
    let mut swept_after = None;
    for _ in 0..600 {
        if store.client("dcr_unused").await.unwrap().is_none() {
            swept_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let swept_after = swept_after.expect("the proxy never deleted the unused client");
    assert!(
        swept_after >= Duration::from_secs(60),
        "deleted by the periodic sweep, not at start: {swept_after:?}"
    );
    assert!(store.client("dcr_used").await.unwrap().is_some());
    drop(gateway);
}
