//! The SQL of pending `user_code` confirmations in PostgreSQL (see
//! [`crate::store`]'s `user_codes` module for what they mean). A check locks the
//! row (`FOR UPDATE`): tries from any replica at once queue on it, and each sees
//! the count the one before left.

use tokio_postgres::Row;

use super::super::Operator;
use super::super::user_codes::{PendingUserCode, USER_CODE_TRIES, UserCodeCheck, classify};
use super::failure::{Failure, column};
use super::{PostgresStore, StoreError};

/// The schema: appended to the store's migrations.
pub(super) const MIGRATION: &str = "CREATE TABLE claim_user_codes (
        registration_id TEXT PRIMARY KEY REFERENCES registrations (id),
        code_hash BYTEA NOT NULL,
        operator_provider TEXT NOT NULL,
        operator_subject TEXT NOT NULL,
        operator_handle TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        failures BIGINT NOT NULL
    );
    CREATE INDEX claim_user_codes_expires_at ON claim_user_codes (expires_at);";

const COLUMNS: &str = "registration_id, code_hash, operator_provider, operator_subject, \
     operator_handle, expires_at, failures";

fn pending(row: &Row) -> Result<PendingUserCode, Failure> {
    let hash: Vec<u8> = column(row, 1)?;
    let code_hash = <[u8; 32]>::try_from(hash.as_slice())
        .map_err(|_| Failure::Decode("a user code hash is 32 bytes".into()))?;
    Ok(PendingUserCode {
        registration_id: column(row, 0)?,
        code_hash,
        operator: Operator {
            provider: column(row, 2)?,
            subject: column(row, 3)?,
            handle: column(row, 4)?,
        },
        expires_at: column(row, 5)?,
        failures: column(row, 6)?,
    })
}

impl PostgresStore {
    pub(in crate::store) async fn put_user_code(
        &self,
        pending: &PendingUserCode,
        now: i64,
    ) -> Result<(), StoreError> {
        let p = pending;
        let hash = p.code_hash.as_slice();
        self.run(async |c| {
            let tx = c.transaction().await?;
            tx.execute(
                "DELETE FROM claim_user_codes WHERE expires_at < $1",
                &[&now],
            )
            .await?;
            tx.execute(
                &format!(
                    "INSERT INTO claim_user_codes ({COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (registration_id) DO UPDATE SET
                     code_hash = EXCLUDED.code_hash,
                     operator_provider = EXCLUDED.operator_provider,
                     operator_subject = EXCLUDED.operator_subject,
                     operator_handle = EXCLUDED.operator_handle,
                     expires_at = EXCLUDED.expires_at,
                     failures = EXCLUDED.failures"
                ),
                &[
                    &p.registration_id,
                    &hash,
                    &p.operator.provider,
                    &p.operator.subject,
                    &p.operator.handle,
                    &p.expires_at,
                    &p.failures,
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    pub(in crate::store) async fn user_code(
        &self,
        registration_id: &str,
    ) -> Result<Option<PendingUserCode>, StoreError> {
        self.run(async |c| {
            c.query_opt(
                &format!("SELECT {COLUMNS} FROM claim_user_codes WHERE registration_id = $1"),
                &[&registration_id],
            )
            .await?
            .as_ref()
            .map(pending)
            .transpose()
        })
        .await
    }

    pub(in crate::store) async fn check_user_code(
        &self,
        registration_id: &str,
        hash: &[u8; 32],
        now: i64,
    ) -> Result<UserCodeCheck, StoreError> {
        self.run(async |c| {
            let tx = c.transaction().await?;
            let Some(row) = tx
                .query_opt(
                    &format!(
                        "SELECT {COLUMNS} FROM claim_user_codes WHERE registration_id = $1 \
                         FOR UPDATE"
                    ),
                    &[&registration_id],
                )
                .await?
            else {
                return Ok(UserCodeCheck::Missing);
            };
            let pending = pending(&row)?;
            let outcome = match classify(&pending, hash, now) {
                Some(UserCodeCheck::Matched(operator)) => {
                    tx.execute(
                        "DELETE FROM claim_user_codes WHERE registration_id = $1",
                        &[&registration_id],
                    )
                    .await?;
                    UserCodeCheck::Matched(operator)
                }
                Some(
                    refused @ (UserCodeCheck::Locked
                    | UserCodeCheck::Expired
                    | UserCodeCheck::Mismatched { .. }
                    | UserCodeCheck::Missing),
                ) => return Ok(refused),
                None => {
                    tx.execute(
                        "UPDATE claim_user_codes SET failures = failures + 1
                         WHERE registration_id = $1",
                        &[&registration_id],
                    )
                    .await?;
                    UserCodeCheck::Mismatched {
                        remaining: USER_CODE_TRIES
                            .saturating_sub(pending.failures.saturating_add(1))
                            .max(0),
                    }
                }
            };
            tx.commit().await?;
            Ok(outcome)
        })
        .await
    }
}
