//! How a PostgreSQL step fails, and what the caller is told.
//!
//! A [`Failure`] says whether the connection is still usable before it becomes a
//! [`StoreError`]. A driver error becomes text only through [`describe`], which
//! leaves out anything secret (the row a constraint quotes, the host, the password).

use std::time::Duration;

use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::FromSql;

use crate::store::StoreError;

/// Why an operation failed, before it is mapped to a [`StoreError`].
pub(in crate::store) enum Failure {
    /// From the driver: the server refused it, or the connection failed.
    Db(tokio_postgres::Error),
    /// A stored value could not be read back (the connection is fine).
    Decode(String),
    /// A clear, prepared message (the connection is fine).
    Refused(String),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Failure {
        Failure::Db(error)
    }
}

impl Failure {
    /// True when the connection can no longer be trusted: the server went away, an
    /// I/O error, a protocol error. A statement the server merely refused (a
    /// constraint, a syntax error) leaves the connection usable.
    pub(super) fn breaks_connection(&self) -> bool {
        match self {
            Failure::Db(error) => error.as_db_error().is_none_or(|db| {
                let code = db.code().code();
                // 08: connection exception; 57P: operator intervention (shutdown,
                // terminated backend); XX: internal error.
                code.starts_with("08") || code.starts_with("57P") || code.starts_with("XX")
            }),
            Failure::Decode(_) | Failure::Refused(_) => false,
        }
    }

    pub(super) fn into_store_error(self) -> StoreError {
        match self {
            Failure::Db(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                StoreError::Duplicate
            }
            Failure::Db(error) => StoreError::Unavailable(describe(&error)),
            Failure::Decode(message) | Failure::Refused(message) => {
                StoreError::Unavailable(message)
            }
        }
    }
}

/// Runs one PostgreSQL step within `limit`; a failure or a timeout becomes
/// `Unavailable`, prefixed with `what`.
pub(super) async fn bounded<T>(
    limit: Duration,
    what: &str,
    step: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, step).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(StoreError::Unavailable(format!(
            "{what}: {}",
            describe(&error)
        ))),
        Err(_) => Err(StoreError::Unavailable(format!(
            "{what}: no answer within {limit:?}"
        ))),
    }
}

/// An error's text without anything secret: for a server error its message and
/// SQLSTATE only (its DETAIL may quote the row, e.g. a hash); for any other its kind
/// and cause (an I/O error says what failed, never the host or the password; a
/// certificate that is not for the host names the host and the certificate's names,
/// which are what the operator needs to see, and no secret).
pub(super) fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

fn decode(error: &tokio_postgres::Error) -> Failure {
    Failure::Decode(format!(
        "a stored value cannot be read: {}",
        describe(error)
    ))
}

/// One column of a row.
pub(super) fn column<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, Failure> {
    row.try_get(index).map_err(|e| decode(&e))
}
