//! The SQL of interactive OAuth's records in PostgreSQL (see [`crate::store`]'s
//! `grants` module for what they mean).
//!
//! A code or refresh token is taken by one `UPDATE ... WHERE used_at IS NULL
//! RETURNING`: replicas taking the same one at once queue on its row lock, and
//! every one after the first finds `used_at` set and takes nothing; the row is then
//! read again to say why. None of these records is announced: they are read from
//! the store when needed, never held in memory.

use tokio_postgres::GenericClient;

use super::super::grants::{
    self, CLIENT_COLUMNS, CLIENT_TOUCH_SECS, CODE_COLUMNS, ClientRecord, CodeRecord, CodeUse,
    GRANT_KEEP_SECS, GrantSweep, REFRESH_COLUMNS, RefreshRecord, RefreshUse,
};
use super::super::rows::scopes_text;
use super::failure::{Failure, column};
use super::{PostgresStore, StoreError, insert};

/// The schema of these records: appended to the store's migrations.
pub(super) const MIGRATION: &str = "CREATE TABLE oauth_clients (
        client_id TEXT PRIMARY KEY,
        secret_hash TEXT,
        metadata TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        last_used_at BIGINT NOT NULL
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
        expires_at BIGINT NOT NULL,
        used_at BIGINT,
        family TEXT
    );
    CREATE INDEX oauth_codes_expires_at ON oauth_codes (expires_at);
    CREATE TABLE oauth_families (
        family TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL,
        revoked_at BIGINT
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
        created_at BIGINT NOT NULL,
        family_expires_at BIGINT NOT NULL,
        used_at BIGINT
    );
    CREATE INDEX oauth_refresh_family ON oauth_refresh (family);
    CREATE INDEX oauth_refresh_family_expires_at ON oauth_refresh (family_expires_at);
    CREATE TABLE oauth_consents (
        subject TEXT NOT NULL,
        client_id TEXT NOT NULL,
        scopes TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (subject, client_id)
    );
    CREATE INDEX oauth_consents_expires_at ON oauth_consents (expires_at);";

/// Indexes for deleting an unused client's consents and refresh tokens by its id:
/// appended to the store's migrations after [`MIGRATION`].
pub(super) const CLIENT_SWEEP_MIGRATION: &str =
    "CREATE INDEX oauth_consents_client_id ON oauth_consents (client_id);
    CREATE INDEX oauth_refresh_client_id ON oauth_refresh (client_id);";

impl PostgresStore {
    pub(in crate::store) async fn insert_client(
        &self,
        client: &ClientRecord,
    ) -> Result<(), StoreError> {
        self.run(async |c| {
            insert(
                c,
                "oauth_clients",
                CLIENT_COLUMNS,
                &grants::client_values(client),
            )
            .await
        })
        .await
    }

    pub(in crate::store) async fn client(
        &self,
        client_id: &str,
    ) -> Result<Option<ClientRecord>, StoreError> {
        self.run(async |c| {
            c.query_opt(
                &format!("SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE client_id = $1"),
                &[&client_id],
            )
            .await?
            .as_ref()
            .map(grants::client)
            .transpose()
        })
        .await
    }

    pub(in crate::store) async fn client_by_fingerprint(
        &self,
        fingerprint: &str,
        since: i64,
    ) -> Result<Option<ClientRecord>, StoreError> {
        self.run(async |c| {
            c.query_opt(
                &format!(
                    "SELECT {CLIENT_COLUMNS} FROM oauth_clients
                     WHERE fingerprint = $1 AND created_at >= $2
                     ORDER BY created_at DESC, client_id DESC LIMIT 1"
                ),
                &[&fingerprint, &since],
            )
            .await?
            .as_ref()
            .map(grants::client)
            .transpose()
        })
        .await
    }

    pub(in crate::store) async fn touch_client(
        &self,
        client_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let stale = now.saturating_sub(CLIENT_TOUCH_SECS);
        self.run(async |c| {
            Ok(c.execute(
                "UPDATE oauth_clients SET last_used_at = $2
                 WHERE client_id = $1 AND last_used_at <= $3",
                &[&client_id, &now, &stale],
            )
            .await?
                > 0)
        })
        .await
    }

    pub(in crate::store) async fn delete_clients_unused_since(
        &self,
        before: i64,
    ) -> Result<u64, StoreError> {
        self.run(async |c| {
            // One statement: the consents and refresh tokens of exactly the clients
            // deleted go with them. A use recorded meanwhile on another replica
            // holds the client's row; the delete waits for it, then finds the row
            // used recently and keeps it.
            let row = c
                .query_one(
                    "WITH gone AS (
                         DELETE FROM oauth_clients WHERE last_used_at < $1 RETURNING client_id
                     ), consents AS (
                         DELETE FROM oauth_consents WHERE client_id IN (SELECT client_id FROM gone)
                     ), tokens AS (
                         DELETE FROM oauth_refresh WHERE client_id IN (SELECT client_id FROM gone)
                     )
                     SELECT count(*) FROM gone",
                    &[&before],
                )
                .await?;
            let deleted: i64 = column(&row, 0)?;
            Ok(u64::try_from(deleted).unwrap_or(0))
        })
        .await
    }

    pub(in crate::store) async fn insert_code(&self, code: &CodeRecord) -> Result<(), StoreError> {
        self.run(async |c| insert(c, "oauth_codes", CODE_COLUMNS, &grants::code_values(code)).await)
            .await
    }

    pub(in crate::store) async fn take_code(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<CodeUse, StoreError> {
        self.run(async |c| {
            let taken = c
                .query_opt(
                    &format!(
                        "UPDATE oauth_codes SET used_at = $2
                         WHERE hash = $1 AND used_at IS NULL AND expires_at > $2
                         RETURNING {CODE_COLUMNS}"
                    ),
                    &[&hash, &now],
                )
                .await?;
            if let Some(row) = taken {
                return Ok(CodeUse::Fresh(grants::code(&row)?));
            }
            let Some(row) = c
                .query_opt(
                    "SELECT used_at, family, expires_at FROM oauth_codes WHERE hash = $1",
                    &[&hash],
                )
                .await?
            else {
                return Ok(CodeUse::Unknown);
            };
            let used_at: Option<i64> = column(&row, 0)?;
            let expires_at: i64 = column(&row, 2)?;
            Ok(match used_at {
                Some(_) if now < expires_at.saturating_add(GRANT_KEEP_SECS) => CodeUse::Replayed {
                    family: column(&row, 1)?,
                },
                Some(_) | None => CodeUse::Unknown,
            })
        })
        .await
    }

    pub(in crate::store) async fn set_code_family(
        &self,
        hash: &str,
        family: &str,
    ) -> Result<(), StoreError> {
        self.run(async |c| {
            c.execute(
                "UPDATE oauth_codes SET family = $2 WHERE hash = $1",
                &[&hash, &family],
            )
            .await?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn insert_refresh(
        &self,
        refresh: &RefreshRecord,
    ) -> Result<(), StoreError> {
        self.run(async |c| {
            let tx = c.transaction().await?;
            tx.execute(
                "INSERT INTO oauth_families (family, expires_at, revoked_at) VALUES ($1, $2, NULL)
                 ON CONFLICT (family) DO UPDATE
                 SET expires_at = GREATEST(oauth_families.expires_at, EXCLUDED.expires_at)",
                &[&refresh.family, &refresh.family_expires_at],
            )
            .await?;
            insert(
                &tx,
                "oauth_refresh",
                REFRESH_COLUMNS,
                &grants::refresh_values(refresh),
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn use_refresh(
        &self,
        hash: &str,
        now: i64,
        grace: i64,
    ) -> Result<RefreshUse, StoreError> {
        self.run(async |c| {
            let taken = c
                .query_opt(
                    &format!(
                        "UPDATE oauth_refresh SET used_at = $2
                         WHERE hash = $1 AND used_at IS NULL AND family_expires_at > $2
                         AND NOT EXISTS (SELECT 1 FROM oauth_families f
                             WHERE f.family = oauth_refresh.family AND f.revoked_at IS NOT NULL)
                         RETURNING {REFRESH_COLUMNS}"
                    ),
                    &[&hash, &now],
                )
                .await?;
            if let Some(row) = taken {
                return Ok(RefreshUse::Fresh(grants::refresh(&row)?));
            }
            let Some(row) = c
                .query_opt(
                    &format!(
                        "SELECT {REFRESH_COLUMNS}, used_at,
                            EXISTS (SELECT 1 FROM oauth_families f
                                WHERE f.family = r.family AND f.revoked_at IS NOT NULL)
                         FROM oauth_refresh r WHERE hash = $1"
                    ),
                    &[&hash],
                )
                .await?
            else {
                return Ok(RefreshUse::Unknown);
            };
            Ok(grants::classify_refresh(
                grants::refresh(&row)?,
                column(&row, 10)?,
                column(&row, 11)?,
                now,
                grace,
            ))
        })
        .await
    }

    pub(in crate::store) async fn revoke_family(
        &self,
        family: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let keep_until = now.saturating_add(GRANT_KEEP_SECS);
        self.run(async |c| {
            // A family not stored (yet) is remembered as revoked for a while, so a
            // token inserted into it a moment later is revoked too.
            c.execute(
                "INSERT INTO oauth_families (family, expires_at, revoked_at) VALUES ($1, $2, $3)
                 ON CONFLICT (family) DO UPDATE
                 SET revoked_at = COALESCE(oauth_families.revoked_at, EXCLUDED.revoked_at)",
                &[&family, &keep_until, &now],
            )
            .await?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn family_revoked(&self, family: &str) -> Result<bool, StoreError> {
        self.run(async |c| {
            Ok(c.query_opt(
                "SELECT 1 FROM oauth_families WHERE family = $1 AND revoked_at IS NOT NULL",
                &[&family],
            )
            .await?
            .is_some())
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
        let scopes = scopes_text(scopes);
        self.run(async |c| {
            c.execute(
                "INSERT INTO oauth_consents (subject, client_id, scopes, expires_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (subject, client_id) DO UPDATE
                 SET scopes = EXCLUDED.scopes, expires_at = EXCLUDED.expires_at",
                &[&subject, &client_id, &scopes, &expires_at],
            )
            .await?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn consent(
        &self,
        subject: &str,
        client_id: &str,
        now: i64,
    ) -> Result<Option<Vec<String>>, StoreError> {
        self.run(async |c| {
            let Some(row) = c
                .query_opt(
                    "SELECT scopes FROM oauth_consents
                     WHERE subject = $1 AND client_id = $2 AND expires_at > $3",
                    &[&subject, &client_id, &now],
                )
                .await?
            else {
                return Ok(None);
            };
            let scopes: String = column(&row, 0)?;
            Ok(Some(grants::scopes(&scopes)))
        })
        .await
    }

    pub(in crate::store) async fn sweep_grants(&self, now: i64) -> Result<GrantSweep, StoreError> {
        let forgotten = now.saturating_sub(GRANT_KEEP_SECS);
        self.run(async |c| {
            let tx = c.transaction().await?;
            let swept = sweep(&tx, now, forgotten).await?;
            tx.commit().await?;
            Ok(swept)
        })
        .await
    }
}

async fn sweep(c: &impl GenericClient, now: i64, forgotten: i64) -> Result<GrantSweep, Failure> {
    Ok(GrantSweep {
        codes: c
            .execute(
                "DELETE FROM oauth_codes WHERE expires_at <= $1",
                &[&forgotten],
            )
            .await?,
        refresh_tokens: c
            .execute(
                "DELETE FROM oauth_refresh WHERE family_expires_at <= $1
                 OR family IN (SELECT family FROM oauth_families WHERE revoked_at <= $2)",
                &[&now, &forgotten],
            )
            .await?,
        families: c
            .execute("DELETE FROM oauth_families WHERE expires_at <= $1", &[&now])
            .await?,
        consents: c
            .execute("DELETE FROM oauth_consents WHERE expires_at <= $1", &[&now])
            .await?,
    })
}
