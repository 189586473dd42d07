//! The SQL of pending `user_code` confirmations in SQLite (see [`crate::store`]'s
//! `user_codes` module for what they mean). A check runs in an `IMMEDIATE`
//! transaction, so no other process sharing the file interleaves with it.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::super::Operator;
use super::super::user_codes::{PendingUserCode, USER_CODE_TRIES, UserCodeCheck, classify};
use super::{SqliteStore, StoreError, unavailable};

/// The schema: appended to the store's migrations.
pub(super) const MIGRATION: &str = "CREATE TABLE claim_user_codes (
        registration_id TEXT PRIMARY KEY REFERENCES registrations (id),
        code_hash BLOB NOT NULL,
        operator_provider TEXT NOT NULL,
        operator_subject TEXT NOT NULL,
        operator_handle TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        failures INTEGER NOT NULL
    );
    CREATE INDEX claim_user_codes_expires_at ON claim_user_codes (expires_at);";

const COLUMNS: &str = "registration_id, code_hash, operator_provider, operator_subject, \
     operator_handle, expires_at, failures";

fn pending(row: &rusqlite::Row<'_>) -> rusqlite::Result<PendingUserCode> {
    let hash: Vec<u8> = row.get(1)?;
    let code_hash = <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Blob,
            "a user code hash is 32 bytes".into(),
        )
    })?;
    Ok(PendingUserCode {
        registration_id: row.get(0)?,
        code_hash,
        operator: Operator {
            provider: row.get(2)?,
            subject: row.get(3)?,
            handle: row.get(4)?,
        },
        expires_at: row.get(5)?,
        failures: row.get(6)?,
    })
}

fn select(c: &Connection, registration_id: &str) -> Result<Option<PendingUserCode>, StoreError> {
    c.query_row(
        &format!("SELECT {COLUMNS} FROM claim_user_codes WHERE registration_id = ?1"),
        params![registration_id],
        pending,
    )
    .optional()
    .map_err(unavailable)
}

impl SqliteStore {
    pub(in crate::store) async fn put_user_code(
        &self,
        pending: &PendingUserCode,
        now: i64,
    ) -> Result<(), StoreError> {
        let p = pending.clone();
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            tx.execute(
                "DELETE FROM claim_user_codes WHERE expires_at < ?1",
                params![now],
            )
            .map_err(unavailable)?;
            tx.execute(
                &format!(
                    "INSERT OR REPLACE INTO claim_user_codes ({COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ),
                params![
                    p.registration_id,
                    p.code_hash.as_slice(),
                    p.operator.provider,
                    p.operator.subject,
                    p.operator.handle,
                    p.expires_at,
                    p.failures,
                ],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    pub(in crate::store) async fn user_code(
        &self,
        registration_id: &str,
    ) -> Result<Option<PendingUserCode>, StoreError> {
        let registration_id = registration_id.to_owned();
        self.call(move |c| select(c, &registration_id)).await
    }

    pub(in crate::store) async fn check_user_code(
        &self,
        registration_id: &str,
        hash: &[u8; 32],
        now: i64,
    ) -> Result<UserCodeCheck, StoreError> {
        let registration_id = registration_id.to_owned();
        let hash = *hash;
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let Some(pending) = select(&tx, &registration_id)? else {
                return Ok(UserCodeCheck::Missing);
            };
            let outcome = match classify(&pending, &hash, now) {
                Some(UserCodeCheck::Matched(operator)) => {
                    tx.execute(
                        "DELETE FROM claim_user_codes WHERE registration_id = ?1",
                        params![registration_id],
                    )
                    .map_err(unavailable)?;
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
                         WHERE registration_id = ?1",
                        params![registration_id],
                    )
                    .map_err(unavailable)?;
                    UserCodeCheck::Mismatched {
                        remaining: USER_CODE_TRIES
                            .saturating_sub(pending.failures.saturating_add(1))
                            .max(0),
                    }
                }
            };
            tx.commit().map_err(unavailable)?;
            Ok(outcome)
        })
        .await
    }
}
