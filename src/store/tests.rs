//! Unit tests of the store interface: where its calls are counted.

use super::*;

fn text(metrics: &Metrics) -> String {
    metrics.encode(&http::HeaderMap::new()).1
}

#[tokio::test]
async fn calls_count_in_the_registry_of_the_proxy_that_observes_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreSettings::Sqlite {
        path: dir.path().join("store.db"),
        resync: Duration::from_secs(1),
    })
    .await
    .unwrap()
    .unwrap();
    let key = KeyRecord::new(
        "key_1".into(),
        KeyHash::of("secret"),
        "ak_live".into(),
        "a key".into(),
        "owner".into(),
        vec!["offers:read".into()],
        "free".into(),
        1_800_000_000,
    );
    // Not observed yet: counted nowhere.
    store.insert_key(&key).await.unwrap();

    let metrics = Metrics::new().unwrap();
    let other = Metrics::new().unwrap();
    store.clone().observe(&metrics);
    // A clone counts in the same registry.
    let clone = store.clone();
    assert_eq!(clone.insert_key(&key).await, Err(StoreError::Duplicate));
    assert!(store.key("key_1").await.unwrap().is_some());

    let text = text(&metrics);
    assert!(
        text.contains("authmd_store_write_duration_seconds_count{operation=\"insert_key\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("authmd_store_errors_total{operation=\"insert_key\"} 1"),
        "{text}"
    );
    assert!(text.contains("authmd_store_up 1"), "{text}");
    assert!(!self::text(&other).contains("authmd_store_"));
}
