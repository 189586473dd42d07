//! The PostgreSQL schema and how a store brings a database up to it.
//!
//! Migrations are numbered in `schema_migrations` and applied in one transaction
//! that first takes an advisory lock derived from the schema name: replicas starting
//! together wait for the first, then find nothing left to do.

use tokio_postgres::Client;

use super::failure::{Failure, column};

/// The schema, one entry per version; never edit an entry, append a new one.
/// Statements run with `search_path` set to the store's schema.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE keys (
        id TEXT PRIMARY KEY,
        hash BYTEA NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        name TEXT NOT NULL,
        owner TEXT NOT NULL,
        scopes TEXT NOT NULL,
        tier TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT,
        revoked_at BIGINT,
        last_used_at BIGINT,
        previous_hash BYTEA,
        previous_expires_at BIGINT,
        registration_id TEXT,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX keys_owner ON keys (owner);
    CREATE INDEX keys_updated_at ON keys (updated_at);
    CREATE TABLE registrations (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        client_name TEXT,
        key_id TEXT NOT NULL REFERENCES keys (id),
        claim_hash BYTEA UNIQUE,
        claim_expires_at BIGINT,
        claimed_at BIGINT,
        subject TEXT,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE used_assertions (
        issuer TEXT NOT NULL,
        jti TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (issuer, jti)
    );
    CREATE INDEX used_assertions_expires_at ON used_assertions (expires_at);",
    "CREATE TABLE revoked_tokens (
        jti TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX revoked_tokens_updated_at ON revoked_tokens (updated_at);",
    "CREATE TABLE quota_usage (
        subject TEXT NOT NULL,
        period TEXT NOT NULL,
        used BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (subject, period)
    );
    CREATE INDEX quota_usage_updated_at ON quota_usage (updated_at);",
    "ALTER TABLE keys ADD COLUMN limits TEXT;",
    super::grants::MIGRATION,
    super::grants::CLIENT_SWEEP_MIGRATION,
    // Who claimed a registration by signing in, and the key's `X-Authmd-Operator`.
    "ALTER TABLE registrations ADD COLUMN operator_provider TEXT;
    ALTER TABLE registrations ADD COLUMN operator_subject TEXT;
    ALTER TABLE registrations ADD COLUMN operator_handle TEXT;
    CREATE INDEX registrations_operator ON registrations (operator_provider, operator_subject);
    ALTER TABLE keys ADD COLUMN operator TEXT;",
    // The contact details an agent gives at registration (an e-mail address and a
    // user name), for the person who claims it.
    "ALTER TABLE registrations ADD COLUMN contact_email TEXT;
    ALTER TABLE registrations ADD COLUMN contact_username TEXT;",
    super::user_codes::MIGRATION,
];

/// The advisory lock id that serialises migrations of a schema.
fn migration_lock_of(schema: &str) -> i64 {
    let hash = blake3::hash(format!("authmd-proxy migrations {schema}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.as_bytes()[..8]);
    i64::from_be_bytes(bytes)
}

/// Creates `schema` (quoted for SQL as `quoted_schema`) if needed and applies pending
/// migrations, all in one transaction under an advisory lock: concurrent starters
/// wait, then find nothing pending.
pub(super) async fn migrate(
    client: &mut Client,
    schema: &str,
    quoted_schema: &str,
) -> Result<(), Failure> {
    let lock = migration_lock_of(schema);
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])
        .await?;
    // Created only when missing: `CREATE SCHEMA IF NOT EXISTS` would require the
    // CREATE privilege on the database even when an operator made the schema.
    let exists = tx
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await?
        .is_some();
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA {quoted_schema}"))
            .await?;
    }
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {quoted_schema}.schema_migrations (version INT PRIMARY KEY)"
    ))
    .await?;
    let row = tx
        .query_one(
            &format!("SELECT max(version) FROM {quoted_schema}.schema_migrations"),
            &[],
        )
        .await?;
    let version: Option<i32> = column(&row, 0)?;
    let version = usize::try_from(version.unwrap_or(0))
        .map_err(|_| Failure::Refused("a negative schema version is recorded".into()))?;
    if version > MIGRATIONS.len() {
        return Err(Failure::Refused(format!(
            "the database has schema version {version}, newer than this build knows ({}); upgrade authmd-proxy",
            MIGRATIONS.len()
        )));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.batch_execute(migration).await?;
        let next =
            i32::try_from(i + 1).map_err(|_| Failure::Refused("too many migrations".into()))?;
        tx.execute(
            &format!("INSERT INTO {quoted_schema}.schema_migrations (version) VALUES ($1)"),
            &[&next],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_locks_are_per_schema() {
        assert_ne!(migration_lock_of("a"), migration_lock_of("b"));
        assert_eq!(migration_lock_of("a"), migration_lock_of("a"));
    }
}
