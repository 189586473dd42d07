//! Where a store under test lives, for the store suites that run each case on
//! SQLite and on PostgreSQL: a temporary directory, or a schema of its own in
//! the machine's PostgreSQL (`AUTHMD_TEST_POSTGRES_URL`; skipped without it).

use std::time::Duration;

use authmd_proxy::credentials::KeyHash;
use authmd_proxy::store::{Store, StoreSettings};

/// Where a store under test lives; opening it twice gives two handles on the same
/// data (a restart, or a second replica).
pub enum Place {
    Sqlite(tempfile::TempDir),
    Postgres { url: String, schema: String },
}

impl Place {
    pub fn sqlite() -> Place {
        Place::Sqlite(tempfile::tempdir().unwrap())
    }

    /// A schema named `<prefix>_<random>`.
    pub fn postgres(prefix: &str) -> Option<Place> {
        let Ok(url) = std::env::var("AUTHMD_TEST_POSTGRES_URL") else {
            eprintln!("skipped: AUTHMD_TEST_POSTGRES_URL is not set");
            return None;
        };
        let unique = KeyHash::of(&format!(
            "{}-{:?}-{:?}",
            std::process::id(),
            std::time::SystemTime::now(),
            std::thread::current().id()
        ));
        let schema = format!("{prefix}_{}", &unique.to_string()["blake3:".len()..][..16]);
        Some(Place::Postgres { url, schema })
    }

    pub fn settings(&self) -> StoreSettings {
        match self {
            Place::Sqlite(dir) => StoreSettings::Sqlite {
                path: dir.path().join("data").join("authmd.sqlite3"),
                resync: Duration::from_secs(5),
            },
            Place::Postgres { url, schema } => StoreSettings::Postgres {
                url: url.clone(),
                schema: schema.clone(),
                resync: Duration::from_secs(5),
                tls: authmd_proxy::store::postgres::PostgresTls::default(),
            },
        }
    }

    pub async fn open(&self) -> Store {
        Store::open(&self.settings()).await.unwrap().unwrap()
    }

    /// `n` handles on the same data, each connected (and the schema migrated), so
    /// that what they do next they do at once.
    pub async fn replicas(&self, n: usize) -> Vec<Store> {
        let mut stores = Vec::with_capacity(n);
        for _ in 0..n {
            let store = self.open().await;
            store.ping().await.unwrap();
            stores.push(store);
        }
        stores
    }

    pub async fn cleanup(self) {
        if let Place::Postgres { url, schema } = self {
            if let Ok((client, connection)) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await
            {
                tokio::spawn(connection);
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .await;
            }
        }
    }
}

/// A test module per backend, `sqlite` and `postgres`, each with one test per
/// case: `case(&Place)` run against a fresh store (PostgreSQL in a schema named
/// after `prefix`), then cleaned up.
macro_rules! on_both_stores {
    ($prefix:literal; $($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let place = $crate::support::store_place::Place::sqlite();
                    super::$case(&place).await;
                    place.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(place) = $crate::support::store_place::Place::postgres($prefix) else {
                        return;
                    };
                    super::$case(&place).await;
                    place.cleanup().await;
                }
            )*
        }
    };
}
pub(crate) use on_both_stores;
