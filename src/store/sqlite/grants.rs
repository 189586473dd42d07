//! The SQL of interactive OAuth's records in SQLite (see [`crate::store`]'s
//! `grants` module for what they mean).
//!
//! Every call runs on the store thread, one at a time; the read-modify-write ones
//! also run in an `IMMEDIATE` transaction, so another process sharing the file (the
//! CLI, a second proxy) cannot interleave either.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::super::grants::{
    self, CLIENT_COLUMNS, CLIENT_TOUCH_SECS, CODE_COLUMNS, ClientRecord, CodeRecord, CodeUse,
    GRANT_KEEP_SECS, GrantSweep, REFRESH_COLUMNS, RefreshRecord, RefreshUse,
};
use super::super::rows::scopes_text;
use super::{SqliteStore, StoreError, insert, unavailable};

/// The schema of these records: appended to the store's migrations.
pub(super) const MIGRATION: &str = "CREATE TABLE oauth_clients (
        client_id TEXT PRIMARY KEY,
        secret_hash TEXT,
        metadata TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_used_at INTEGER NOT NULL
    );
    CREATE INDEX oauth_clients_fingerprint ON oauth_clients (fingerprint, created_at);
    CREATE INDEX oauth_clients_last_used_at ON oauth_clients (last_used_at);
    CREATE TABLE oauth_codes (
        hash TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        redirect_uri TEXT NOT NULL,
        code_challenge TEXT NOT NULL,
        resource TEXT NOT NULL,
        scopes TEXT NOT NULL,
        subject TEXT NOT NULL,
        person TEXT NOT NULL,
        tier TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER,
        family TEXT
    );
    CREATE INDEX oauth_codes_expires_at ON oauth_codes (expires_at);
    CREATE TABLE oauth_families (
        family TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE INDEX oauth_families_expires_at ON oauth_families (expires_at);
    CREATE INDEX oauth_families_revoked_at ON oauth_families (revoked_at);
    CREATE TABLE oauth_refresh (
        hash TEXT PRIMARY KEY,
        family TEXT NOT NULL,
        client_id TEXT NOT NULL,
        resource TEXT NOT NULL,
        scopes TEXT NOT NULL,
        subject TEXT NOT NULL,
        person TEXT NOT NULL,
        tier TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        family_expires_at INTEGER NOT NULL,
        used_at INTEGER
    );
    CREATE INDEX oauth_refresh_family ON oauth_refresh (family);
    CREATE INDEX oauth_refresh_family_expires_at ON oauth_refresh (family_expires_at);
    CREATE TABLE oauth_consents (
        subject TEXT NOT NULL,
        client_id TEXT NOT NULL,
        scopes TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (subject, client_id)
    );
    CREATE INDEX oauth_consents_expires_at ON oauth_consents (expires_at);";

/// Indexes for deleting an unused client's consents and refresh tokens by its id:
/// appended to the store's migrations after [`MIGRATION`].
pub(super) const CLIENT_SWEEP_MIGRATION: &str =
    "CREATE INDEX oauth_consents_client_id ON oauth_consents (client_id);
    CREATE INDEX oauth_refresh_client_id ON oauth_refresh (client_id);";

/// Counts rows, as the store reports them.
fn count(rows: usize) -> u64 {
    u64::try_from(rows).unwrap_or(u64::MAX)
}

impl SqliteStore {
    pub(in crate::store) async fn insert_client(
        &self,
        client: &ClientRecord,
    ) -> Result<(), StoreError> {
        let client = client.clone();
        self.call(move |c| {
            insert(
                c,
                "oauth_clients",
                CLIENT_COLUMNS,
                &grants::client_values(&client),
            )
        })
        .await
    }

    pub(in crate::store) async fn client(
        &self,
        client_id: &str,
    ) -> Result<Option<ClientRecord>, StoreError> {
        let client_id = client_id.to_owned();
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE client_id = ?1"),
                params![client_id],
                |row| grants::client(row),
            )
            .optional()
            .map_err(unavailable)
        })
        .await
    }

    pub(in crate::store) async fn client_by_fingerprint(
        &self,
        fingerprint: &str,
        since: i64,
    ) -> Result<Option<ClientRecord>, StoreError> {
        let fingerprint = fingerprint.to_owned();
        self.call(move |c| {
            c.query_row(
                &format!(
                    "SELECT {CLIENT_COLUMNS} FROM oauth_clients
                     WHERE fingerprint = ?1 AND created_at >= ?2
                     ORDER BY created_at DESC, client_id DESC LIMIT 1"
                ),
                params![fingerprint, since],
                |row| grants::client(row),
            )
            .optional()
            .map_err(unavailable)
        })
        .await
    }

    pub(in crate::store) async fn touch_client(
        &self,
        client_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let client_id = client_id.to_owned();
        self.call(move |c| {
            c.execute(
                "UPDATE oauth_clients SET last_used_at = ?2
                 WHERE client_id = ?1 AND last_used_at <= ?3",
                params![client_id, now, now.saturating_sub(CLIENT_TOUCH_SECS)],
            )
            .map(|rows| rows > 0)
            .map_err(unavailable)
        })
        .await
    }

    pub(in crate::store) async fn delete_clients_unused_since(
        &self,
        before: i64,
    ) -> Result<u64, StoreError> {
        self.call(move |c| {
            // One IMMEDIATE transaction: no use is recorded between choosing the
            // clients and deleting them, and their records go with them.
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            for dependent in ["oauth_consents", "oauth_refresh"] {
                tx.execute(
                    &format!(
                        "DELETE FROM {dependent} WHERE client_id IN
                         (SELECT client_id FROM oauth_clients WHERE last_used_at < ?1)"
                    ),
                    params![before],
                )
                .map_err(unavailable)?;
            }
            let deleted = tx
                .execute(
                    "DELETE FROM oauth_clients WHERE last_used_at < ?1",
                    params![before],
                )
                .map(count)
                .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(deleted)
        })
        .await
    }

    pub(in crate::store) async fn insert_code(&self, code: &CodeRecord) -> Result<(), StoreError> {
        let code = code.clone();
        self.call(move |c| insert(c, "oauth_codes", CODE_COLUMNS, &grants::code_values(&code)))
            .await
    }

    pub(in crate::store) async fn take_code(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<CodeUse, StoreError> {
        let hash = hash.to_owned();
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let taken = tx
                .query_row(
                    &format!(
                        "UPDATE oauth_codes SET used_at = ?2
                         WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2
                         RETURNING {CODE_COLUMNS}"
                    ),
                    params![hash, now],
                    |row| grants::code(row),
                )
                .optional()
                .map_err(unavailable)?;
            let outcome = match taken {
                Some(code) => CodeUse::Fresh(code),
                None => tx
                    .query_row(
                        "SELECT used_at, family, expires_at FROM oauth_codes WHERE hash = ?1",
                        params![hash],
                        |row| {
                            Ok((
                                row.get::<_, Option<i64>>(0)?,
                                row.get::<_, Option<String>>(1)?,
                                row.get::<_, i64>(2)?,
                            ))
                        },
                    )
                    .optional()
                    .map_err(unavailable)?
                    .map_or(CodeUse::Unknown, |(used_at, family, expires_at)| {
                        replayed(used_at, family, expires_at, now)
                    }),
            };
            tx.commit().map_err(unavailable)?;
            Ok(outcome)
        })
        .await
    }

    pub(in crate::store) async fn set_code_family(
        &self,
        hash: &str,
        family: &str,
    ) -> Result<(), StoreError> {
        let hash = hash.to_owned();
        let family = family.to_owned();
        self.call(move |c| {
            c.execute(
                "UPDATE oauth_codes SET family = ?2 WHERE hash = ?1",
                params![hash, family],
            )
            .map(drop)
            .map_err(unavailable)
        })
        .await
    }

    pub(in crate::store) async fn insert_refresh(
        &self,
        refresh: &RefreshRecord,
    ) -> Result<(), StoreError> {
        let refresh = refresh.clone();
        self.call(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            tx.execute(
                "INSERT INTO oauth_families (family, expires_at, revoked_at) VALUES (?1, ?2, NULL)
                 ON CONFLICT (family) DO UPDATE
                 SET expires_at = max(expires_at, excluded.expires_at)",
                params![refresh.family, refresh.family_expires_at],
            )
            .map_err(unavailable)?;
            insert(
                &tx,
                "oauth_refresh",
                REFRESH_COLUMNS,
                &grants::refresh_values(&refresh),
            )?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    pub(in crate::store) async fn use_refresh(
        &self,
        hash: &str,
        now: i64,
        grace: i64,
    ) -> Result<RefreshUse, StoreError> {
        let hash = hash.to_owned();
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let taken = tx
                .query_row(
                    &format!(
                        "UPDATE oauth_refresh SET used_at = ?2
                         WHERE hash = ?1 AND used_at IS NULL AND family_expires_at > ?2
                         AND NOT EXISTS (SELECT 1 FROM oauth_families f
                             WHERE f.family = oauth_refresh.family AND f.revoked_at IS NOT NULL)
                         RETURNING {REFRESH_COLUMNS}"
                    ),
                    params![hash, now],
                    |row| grants::refresh(row),
                )
                .optional()
                .map_err(unavailable)?;
            let outcome = match taken {
                Some(refresh) => RefreshUse::Fresh(refresh),
                None => tx
                    .query_row(
                        &format!(
                            "SELECT {REFRESH_COLUMNS}, used_at,
                                EXISTS (SELECT 1 FROM oauth_families f
                                    WHERE f.family = r.family AND f.revoked_at IS NOT NULL)
                             FROM oauth_refresh r WHERE hash = ?1"
                        ),
                        params![hash],
                        |row| {
                            Ok((
                                grants::refresh(row)?,
                                row.get::<_, Option<i64>>(10)?,
                                row.get::<_, bool>(11)?,
                            ))
                        },
                    )
                    .optional()
                    .map_err(unavailable)?
                    .map_or(RefreshUse::Unknown, |(refresh, used_at, revoked)| {
                        grants::classify_refresh(refresh, used_at, revoked, now, grace)
                    }),
            };
            tx.commit().map_err(unavailable)?;
            Ok(outcome)
        })
        .await
    }

    pub(in crate::store) async fn revoke_family(
        &self,
        family: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let family = family.to_owned();
        self.call(move |c| {
            // A family not stored (yet) is remembered as revoked for a while, so a
            // token inserted into it a moment later is revoked too.
            c.execute(
                "INSERT INTO oauth_families (family, expires_at, revoked_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (family) DO UPDATE
                 SET revoked_at = coalesce(revoked_at, excluded.revoked_at)",
                params![family, now.saturating_add(GRANT_KEEP_SECS), now],
            )
            .map(drop)
            .map_err(unavailable)
        })
        .await
    }

    pub(in crate::store) async fn family_revoked(&self, family: &str) -> Result<bool, StoreError> {
        let family = family.to_owned();
        self.call(move |c| {
            c.query_row(
                "SELECT 1 FROM oauth_families WHERE family = ?1 AND revoked_at IS NOT NULL",
                params![family],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
            .map_err(unavailable)
        })
        .await
    }

    pub(in crate::store) async fn remember_consent(
        &self,
        subject: &str,
        client_id: &str,
        scopes: &[String],
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let subject = subject.to_owned();
        let client_id = client_id.to_owned();
        let scopes = scopes_text(scopes);
        self.call(move |c| {
            c.execute(
                "INSERT INTO oauth_consents (subject, client_id, scopes, expires_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (subject, client_id) DO UPDATE
                 SET scopes = excluded.scopes, expires_at = excluded.expires_at",
                params![subject, client_id, scopes, expires_at],
            )
            .map(drop)
            .map_err(unavailable)
        })
        .await
    }

    pub(in crate::store) async fn consent(
        &self,
        subject: &str,
        client_id: &str,
        now: i64,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let subject = subject.to_owned();
        let client_id = client_id.to_owned();
        self.call(move |c| {
            c.query_row(
                "SELECT scopes FROM oauth_consents
                 WHERE subject = ?1 AND client_id = ?2 AND expires_at > ?3",
                params![subject, client_id, now],
                |row| row.get::<_, String>(0),
            )
            .optional()
            .map(|scopes| scopes.as_deref().map(grants::scopes))
            .map_err(unavailable)
        })
        .await
    }

    pub(in crate::store) async fn sweep_grants(&self, now: i64) -> Result<GrantSweep, StoreError> {
        self.call(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let swept = sweep(&tx, now)?;
            tx.commit().map_err(unavailable)?;
            Ok(swept)
        })
        .await
    }
}

/// What a code's row says about a take at `now` that did not find it unused and live.
fn replayed(used_at: Option<i64>, family: Option<String>, expires_at: i64, now: i64) -> CodeUse {
    match used_at {
        Some(_) if now < expires_at.saturating_add(GRANT_KEEP_SECS) => CodeUse::Replayed { family },
        Some(_) | None => CodeUse::Unknown,
    }
}

fn sweep(c: &Connection, now: i64) -> Result<GrantSweep, StoreError> {
    let forgotten = now.saturating_sub(GRANT_KEEP_SECS);
    let delete = |sql: &str, at: i64| c.execute(sql, params![at]).map(count).map_err(unavailable);
    Ok(GrantSweep {
        codes: delete("DELETE FROM oauth_codes WHERE expires_at <= ?1", forgotten)?,
        refresh_tokens: c
            .execute(
                "DELETE FROM oauth_refresh WHERE family_expires_at <= ?1
                 OR family IN (SELECT family FROM oauth_families WHERE revoked_at <= ?2)",
                params![now, forgotten],
            )
            .map(count)
            .map_err(unavailable)?,
        families: delete("DELETE FROM oauth_families WHERE expires_at <= ?1", now)?,
        consents: delete("DELETE FROM oauth_consents WHERE expires_at <= ?1", now)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_column_lists_are_the_migrated_tables() {
        let connection = Connection::open_in_memory().unwrap();
        connection.execute_batch(MIGRATION).unwrap();
        connection.execute_batch(CLIENT_SWEEP_MIGRATION).unwrap();
        for (table, columns) in [
            ("oauth_clients", CLIENT_COLUMNS.to_owned()),
            ("oauth_codes", format!("{CODE_COLUMNS}, used_at, family")),
            ("oauth_refresh", format!("{REFRESH_COLUMNS}, used_at")),
        ] {
            let mut statement = connection
                .prepare(&format!(
                    "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
                ))
                .unwrap();
            let names: Vec<String> = statement
                .query_map([], |row| row.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(names.join(", "), columns, "{table}");
        }
    }
}
