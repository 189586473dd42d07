//! How records sit in table rows, the same for both stores: each table's column
//! list, the values a record is written as, and the reading of a row back into a
//! record (with the checks on what was stored).
//!
//! The drivers differ in how they bind a value and read a column, not in what the
//! columns are: each store binds [`Value`]s and implements [`Columns`] for its row
//! type, and keeps its own SQL (placeholders, clock, conflict handling).

use std::borrow::Cow;

use super::{KeyRecord, Operator, RegistrationKind, RegistrationRecord};
use crate::credentials::KeyHash;

/// The columns of `keys`, in the order [`key_values`] writes and [`key`] reads them.
pub(super) const KEY_COLUMNS: &str = "id, hash, prefix, name, owner, scopes, tier, created_at, expires_at, \
     revoked_at, last_used_at, previous_hash, previous_expires_at, registration_id, updated_at, limits, operator";

/// The columns of `registrations`, in the order [`registration_values`] writes and
/// [`registration`] reads them.
pub(super) const REGISTRATION_COLUMNS: &str = "id, kind, client_name, key_id, claim_hash, claim_expires_at, claimed_at, subject, created_at, \
     operator_provider, operator_subject, operator_handle, contact_email, contact_username";

/// The columns of `used_assertions`.
pub(super) const USED_ASSERTION_COLUMNS: &str = "issuer, jti, expires_at";

/// The columns of `revoked_tokens`.
pub(super) const REVOKED_TOKEN_COLUMNS: &str = "jti, expires_at, updated_at";

/// The columns of `quota_usage`.
pub(super) const QUOTA_USAGE_COLUMNS: &str = "subject, period, used, updated_at";

/// One value written to a column; each store binds it its own way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value<'a> {
    /// SQL `NULL`.
    Null,
    /// An integer (times, counts).
    Integer(i64),
    /// Text.
    Text(Cow<'a, str>),
    /// Bytes (hashes).
    Bytes(&'a [u8]),
    /// The store's clock, in unix milliseconds: SQLite reads this process's clock,
    /// PostgreSQL the database's, so it is left to each store.
    Clock,
}

impl From<i64> for Value<'_> {
    fn from(value: i64) -> Self {
        Value::Integer(value)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(value: &'a str) -> Self {
        Value::Text(Cow::Borrowed(value))
    }
}

impl From<String> for Value<'_> {
    fn from(value: String) -> Self {
        Value::Text(Cow::Owned(value))
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(value: &'a [u8]) -> Self {
        Value::Bytes(value)
    }
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

/// Reads the columns of one result row by position; each store implements it for
/// its driver's row type.
pub(super) trait Columns {
    /// The driver's error.
    type Error;
    /// A text column.
    fn text(&self, index: usize) -> Result<String, Self::Error>;
    /// A text column that may be `NULL`.
    fn optional_text(&self, index: usize) -> Result<Option<String>, Self::Error>;
    /// An integer column.
    fn integer(&self, index: usize) -> Result<i64, Self::Error>;
    /// An integer column that may be `NULL`.
    fn optional_integer(&self, index: usize) -> Result<Option<i64>, Self::Error>;
    /// A bytes column that may be `NULL`.
    fn optional_bytes(&self, index: usize) -> Result<Option<Vec<u8>>, Self::Error>;
    /// The error for a column that was read but holds nothing this build can use;
    /// `problem` says why (it never quotes the value).
    fn invalid(&self, index: usize, problem: String) -> Self::Error;
}

/// Scopes as stored: their names, separated by spaces.
pub(super) fn scopes_text(scopes: &[String]) -> String {
    scopes.join(" ")
}

fn scopes(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// A key's values, in [`KEY_COLUMNS`] order; `updated_at` is the store's clock.
pub(super) fn key_values(key: &KeyRecord) -> [Value<'_>; 17] {
    [
        key.id.as_str().into(),
        key.hash.0.as_slice().into(),
        key.prefix.as_str().into(),
        key.name.as_str().into(),
        key.owner.as_str().into(),
        scopes_text(&key.scopes).into(),
        key.tier.as_str().into(),
        key.created_at.into(),
        key.expires_at.into(),
        key.revoked_at.into(),
        key.last_used_at.into(),
        key.previous_hash.as_ref().map(|h| h.0.as_slice()).into(),
        key.previous_expires_at.into(),
        key.registration_id.as_deref().into(),
        Value::Clock,
        key.limits.as_deref().into(),
        key.operator.as_deref().into(),
    ]
}

/// A registration's values, in [`REGISTRATION_COLUMNS`] order.
pub(super) fn registration_values(registration: &RegistrationRecord) -> [Value<'_>; 14] {
    let operator = registration.operator.as_ref();
    [
        registration.id.as_str().into(),
        registration.kind.as_str().into(),
        registration.client_name.as_deref().into(),
        registration.key_id.as_str().into(),
        registration
            .claim_hash
            .as_ref()
            .map(<[u8; 32]>::as_slice)
            .into(),
        registration.claim_expires_at.into(),
        registration.claimed_at.into(),
        registration.subject.as_deref().into(),
        registration.created_at.into(),
        operator.map(|o| o.provider.as_str()).into(),
        operator.map(|o| o.subject.as_str()).into(),
        operator.map(|o| o.handle.as_str()).into(),
        registration.contact_email.as_deref().into(),
        registration.contact_username.as_deref().into(),
    ]
}

/// A hash column: `NULL`, or exactly 32 bytes.
fn hash<R: Columns>(row: &R, index: usize) -> Result<Option<KeyHash>, R::Error> {
    row.optional_bytes(index)?
        .map(|bytes| {
            <[u8; 32]>::try_from(bytes.as_slice())
                .map(KeyHash)
                .map_err(|_| row.invalid(index, format!("column {index} is not a 32-byte hash")))
        })
        .transpose()
}

/// A key from a row of [`KEY_COLUMNS`].
pub(super) fn key<R: Columns>(row: &R) -> Result<KeyRecord, R::Error> {
    Ok(KeyRecord {
        id: row.text(0)?,
        hash: hash(row, 1)?.ok_or_else(|| row.invalid(1, "a key has no hash".into()))?,
        prefix: row.text(2)?,
        name: row.text(3)?,
        owner: row.text(4)?,
        scopes: scopes(&row.text(5)?),
        tier: row.text(6)?,
        created_at: row.integer(7)?,
        expires_at: row.optional_integer(8)?,
        revoked_at: row.optional_integer(9)?,
        last_used_at: row.optional_integer(10)?,
        previous_hash: hash(row, 11)?,
        previous_expires_at: row.optional_integer(12)?,
        registration_id: row.optional_text(13)?,
        updated_at: row.integer(14)?,
        limits: row.optional_text(15)?,
        operator: row.optional_text(16)?,
    })
}

/// A registration from a row of [`REGISTRATION_COLUMNS`].
pub(super) fn registration<R: Columns>(row: &R) -> Result<RegistrationRecord, R::Error> {
    let kind = row.text(1)?;
    Ok(RegistrationRecord {
        id: row.text(0)?,
        kind: RegistrationKind::parse(&kind)
            .ok_or_else(|| row.invalid(1, format!("unknown registration kind `{kind}`")))?,
        client_name: row.optional_text(2)?,
        key_id: row.text(3)?,
        // A claim hash of another length matches no claim token: read as none.
        claim_hash: row
            .optional_bytes(4)?
            .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok()),
        claim_expires_at: row.optional_integer(5)?,
        claimed_at: row.optional_integer(6)?,
        subject: row.optional_text(7)?,
        created_at: row.integer(8)?,
        operator: match (
            row.optional_text(9)?,
            row.optional_text(10)?,
            row.optional_text(11)?,
        ) {
            (Some(provider), Some(subject), Some(handle)) => Some(Operator {
                provider,
                subject,
                handle,
            }),
            _ => None,
        },
        contact_email: row.optional_text(12)?,
        contact_username: row.optional_text(13)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row held in memory, as a driver would hand it over.
    struct Stored<'a>(&'a [Value<'a>]);

    impl Columns for Stored<'_> {
        type Error = String;

        fn text(&self, index: usize) -> Result<String, String> {
            self.optional_text(index)?
                .ok_or_else(|| format!("{index} is NULL"))
        }

        fn optional_text(&self, index: usize) -> Result<Option<String>, String> {
            match &self.0[index] {
                Value::Null => Ok(None),
                Value::Text(text) => Ok(Some(text.to_string())),
                other => Err(format!("{index} is {other:?}")),
            }
        }

        fn integer(&self, index: usize) -> Result<i64, String> {
            self.optional_integer(index)?
                .ok_or_else(|| format!("{index} is NULL"))
        }

        fn optional_integer(&self, index: usize) -> Result<Option<i64>, String> {
            match &self.0[index] {
                Value::Null => Ok(None),
                Value::Integer(n) => Ok(Some(*n)),
                Value::Clock => Ok(Some(7)),
                other => Err(format!("{index} is {other:?}")),
            }
        }

        fn optional_bytes(&self, index: usize) -> Result<Option<Vec<u8>>, String> {
            match &self.0[index] {
                Value::Null => Ok(None),
                Value::Bytes(bytes) => Ok(Some(bytes.to_vec())),
                other => Err(format!("{index} is {other:?}")),
            }
        }

        fn invalid(&self, index: usize, problem: String) -> String {
            format!("{index}: {problem}")
        }
    }

    fn columns(list: &str) -> usize {
        list.split(", ").count()
    }

    #[test]
    fn a_key_reads_back_as_it_was_written() {
        let key = KeyRecord {
            registration_id: Some("reg_1".into()),
            limits: Some(r#"{"quota":"10/day"}"#.into()),
            previous_hash: Some(KeyHash::of("old")),
            previous_expires_at: Some(20),
            expires_at: Some(30),
            operator: Some("github:octocat".into()),
            ..KeyRecord::new(
                "key_1".into(),
                KeyHash::of("secret"),
                "ak_live".into(),
                "a key".into(),
                "owner".into(),
                vec!["offers:read".into(), "offers:write".into()],
                "free".into(),
                10,
            )
        };
        let values = key_values(&key);
        assert_eq!(values.len(), columns(KEY_COLUMNS));
        assert_eq!(
            super::key(&Stored(&values)),
            Ok(KeyRecord {
                updated_at: 7,
                ..key.clone()
            })
        );
    }

    #[test]
    fn a_registration_reads_back_as_it_was_written() {
        let registration = RegistrationRecord {
            id: "reg_1".into(),
            kind: RegistrationKind::Anonymous,
            client_name: Some("agent".into()),
            key_id: "key_1".into(),
            claim_hash: Some(KeyHash::of("claim").0),
            claim_expires_at: Some(40),
            claimed_at: None,
            subject: None,
            created_at: 10,
            operator: Some(Operator {
                provider: "github".into(),
                subject: "583231".into(),
                handle: "octocat".into(),
            }),
            contact_email: Some("ops@example.com".into()),
            contact_username: Some("ops".into()),
        };
        let values = registration_values(&registration);
        assert_eq!(values.len(), columns(REGISTRATION_COLUMNS));
        assert_eq!(super::registration(&Stored(&values)), Ok(registration));
    }

    #[test]
    fn stored_values_are_checked() {
        let key = KeyRecord::new(
            "key_1".into(),
            KeyHash::of("secret"),
            "ak_live".into(),
            "a key".into(),
            "owner".into(),
            Vec::new(),
            "free".into(),
            10,
        );
        let mut values = key_values(&key);
        values[1] = Value::Bytes(b"short");
        assert_eq!(
            super::key(&Stored(&values)),
            Err("1: column 1 is not a 32-byte hash".into())
        );
        values[1] = Value::Null;
        assert_eq!(
            super::key(&Stored(&values)),
            Err("1: a key has no hash".into())
        );

        let registration = RegistrationRecord {
            id: "reg_1".into(),
            kind: RegistrationKind::IdentityAssertion,
            client_name: None,
            key_id: "key_1".into(),
            claim_hash: None,
            claim_expires_at: None,
            claimed_at: Some(10),
            subject: Some("https://issuer sub".into()),
            created_at: 10,
            operator: None,
            contact_email: None,
            contact_username: None,
        };
        let mut values = registration_values(&registration);
        values[1] = "robot".into();
        assert_eq!(
            super::registration(&Stored(&values)),
            Err("1: unknown registration kind `robot`".into())
        );
    }
}
