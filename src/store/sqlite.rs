//! SQLite, the embedded default store.
//!
//! One connection, owned by one dedicated thread: SQLite serialises writers anyway,
//! and a thread of its own keeps blocking file I/O off the runtime's workers. Calls
//! are closures sent to that thread, each answered through a oneshot channel.
//!
//! Durability: WAL with `synchronous=FULL`, so a commit returns only after the WAL
//! is fsynced; a write acknowledged to a client survives a crash or a power cut.
//! Migrations are numbered by `PRAGMA user_version` and applied in an `IMMEDIATE`
//! transaction, so two processes opening the same new file cannot both apply them.
//!
//! Commits by other processes (the operator's CLI) are noticed through `PRAGMA
//! data_version` on a connection of their own ([`SqliteStore::watch`]).

mod watch;

mod grants;
mod user_codes;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use rusqlite::types::{ToSqlOutput, Type, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, ToSql, params};
use tokio::sync::oneshot;

use super::rows::{
    self, Columns, KEY_COLUMNS, QUOTA_USAGE_COLUMNS, REGISTRATION_COLUMNS, REVOKED_TOKEN_COLUMNS,
    USED_ASSERTION_COLUMNS, Value,
};
use super::{
    Claim, ClaimOutcome, KeyRecord, MeterSlot, Notice, RegistrationRecord, Rotation, StoreError,
};
use crate::clock::unix_now_ms;
use crate::limits::quota::Usage;

/// The schema, one entry per version; never edit an entry, append a new one.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE keys (
        id TEXT PRIMARY KEY,
        hash BLOB NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        name TEXT NOT NULL,
        owner TEXT NOT NULL,
        scopes TEXT NOT NULL,
        tier TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        revoked_at INTEGER,
        last_used_at INTEGER,
        previous_hash BLOB,
        previous_expires_at INTEGER,
        registration_id TEXT,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX keys_owner ON keys (owner);
    CREATE INDEX keys_updated_at ON keys (updated_at);
    CREATE TABLE registrations (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        client_name TEXT,
        key_id TEXT NOT NULL REFERENCES keys (id),
        claim_hash BLOB UNIQUE,
        claim_expires_at INTEGER,
        claimed_at INTEGER,
        subject TEXT,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE used_assertions (
        issuer TEXT NOT NULL,
        jti TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (issuer, jti)
    );
    CREATE INDEX used_assertions_expires_at ON used_assertions (expires_at);",
    "CREATE TABLE revoked_tokens (
        jti TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX revoked_tokens_updated_at ON revoked_tokens (updated_at);",
    "CREATE TABLE quota_usage (
        subject TEXT NOT NULL,
        period TEXT NOT NULL,
        used INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (subject, period)
    );
    CREATE INDEX quota_usage_updated_at ON quota_usage (updated_at);",
    "ALTER TABLE keys ADD COLUMN limits TEXT;",
    grants::MIGRATION,
    grants::CLIENT_SWEEP_MIGRATION,
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
    user_codes::MIGRATION,
];

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A handle to the store thread; cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    /// The database file, for the watching connection.
    path: Arc<PathBuf>,
    pub(super) meter: MeterSlot,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn unavailable(error: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// Maps a driver error: a uniqueness violation is a duplicate, anything else means
/// the store failed.
fn classify(error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Duplicate,
        _ => unavailable(error),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its directory, and migrates.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| unavailable(format!("cannot create `{}`: {e}", dir.display())))?;
        }
        let path = Arc::new(path.to_owned());
        let opened = path.clone();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("authmd-sqlite".into())
            .spawn(move || {
                let mut connection = match open_connection(&opened) {
                    Ok(connection) => {
                        let _ = ready_tx.send(Ok(()));
                        connection
                    }
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                while let Ok(job) = queue.recv() {
                    job(&mut connection);
                }
            })
            .map_err(unavailable)?;
        ready_rx
            .await
            .map_err(|_| unavailable("the store thread stopped"))??;
        Ok(SqliteStore {
            jobs,
            path,
            meter: MeterSlot::default(),
        })
    }

    /// Announcements of commits by other connections to the file (another process,
    /// such as `authmd-proxy keys revoke`; this one's own writes count too): a
    /// [`Notice::Resync`] within 250 ms of each, and one
    /// when the watch starts. A thread of its own reads `PRAGMA data_version` on a
    /// connection of its own, for as long as the receiver is kept. Should the thread
    /// not start, the receiver hears nothing and the periodic resync remains.
    #[must_use]
    pub fn watch(&self) -> tokio::sync::mpsc::Receiver<Notice> {
        let (notices, receiver) = tokio::sync::mpsc::channel(watch::NOTICE_CAPACITY);
        let path = self.path.clone();
        let started = std::thread::Builder::new()
            .name("authmd-sqlite-watch".into())
            .spawn(move || watch::watch_forever(&path, &notices));
        if let Err(error) = started {
            tracing::warn!(%error, "cannot start watching the SQLite file; changes by other processes are seen at the periodic resync");
        }
        receiver
    }

    /// Runs `work` on the store thread.
    async fn call<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |connection| {
            let _ = reply.send(work(connection));
        });
        self.jobs
            .send(job)
            .map_err(|_| unavailable("the store thread stopped"))?;
        answer
            .await
            .map_err(|_| unavailable("the store thread stopped"))?
    }

    pub(super) async fn live_keys(&self, now: i64) -> Result<Vec<KeyRecord>, StoreError> {
        self.call(move |c| {
            query_keys(
                c,
                &format!(
                    "SELECT {KEY_COLUMNS} FROM keys WHERE revoked_at IS NULL \
                     AND (expires_at IS NULL OR expires_at > ?1)"
                ),
                params![now],
            )
        })
        .await
    }

    pub(super) async fn changed_since(
        &self,
        since_ms: i64,
    ) -> Result<(Vec<KeyRecord>, i64), StoreError> {
        self.call(move |c| {
            let clock = unix_now_ms();
            let keys = query_keys(
                c,
                &format!("SELECT {KEY_COLUMNS} FROM keys WHERE updated_at >= ?1"),
                params![since_ms],
            )?;
            Ok((keys, clock))
        })
        .await
    }

    pub(super) async fn keys_after(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<(Vec<KeyRecord>, i64), StoreError> {
        let after = after.to_owned();
        self.call(move |c| {
            let clock = unix_now_ms();
            let keys = query_keys(
                c,
                &format!("SELECT {KEY_COLUMNS} FROM keys WHERE id > ?1 ORDER BY id LIMIT ?2"),
                params![after, limit],
            )?;
            Ok((keys, clock))
        })
        .await
    }

    pub(super) async fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| key_by_id(c, &id)).await
    }

    pub(super) async fn keys_of(&self, owner: &str) -> Result<Vec<KeyRecord>, StoreError> {
        let owner = owner.to_owned();
        self.call(move |c| {
            query_keys(
                c,
                &format!(
                    "SELECT {KEY_COLUMNS} FROM keys WHERE owner = ?1 AND revoked_at IS NULL \
                     ORDER BY created_at, id"
                ),
                params![owner],
            )
        })
        .await
    }

    pub(super) async fn all_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.call(move |c| {
            query_keys(
                c,
                &format!("SELECT {KEY_COLUMNS} FROM keys ORDER BY created_at, id"),
                params![],
            )
        })
        .await
    }

    pub(super) async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let key = key.clone();
        self.call(move |c| insert_key(c, &key)).await
    }

    pub(super) async fn rotate_key(
        &self,
        rotation: &Rotation<'_>,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let id = rotation.id.to_owned();
        let new_hash = rotation.new_hash;
        let grace_until = rotation.grace_until;
        self.call(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let changed = tx
                .execute(
                    "UPDATE keys SET
                        previous_hash = CASE WHEN ?3 IS NULL THEN NULL ELSE hash END,
                        previous_expires_at = ?3,
                        hash = ?2,
                        updated_at = ?4
                     WHERE id = ?1 AND revoked_at IS NULL",
                    params![id, new_hash.0.as_slice(), grace_until, unix_now_ms()],
                )
                .map_err(classify)?;
            if changed == 0 {
                return Ok(None);
            }
            let key = key_by_id(&tx, &id)?;
            tx.commit().map_err(unavailable)?;
            Ok(key)
        })
        .await
    }

    pub(super) async fn revoke_key(
        &self,
        id: &str,
        now: i64,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let changed = tx
                .execute(
                    "UPDATE keys SET revoked_at = ?2, updated_at = ?3
                     WHERE id = ?1 AND revoked_at IS NULL",
                    params![id, now, unix_now_ms()],
                )
                .map_err(unavailable)?;
            if changed == 0 {
                return Ok(None);
            }
            let key = key_by_id(&tx, &id)?;
            tx.commit().map_err(unavailable)?;
            Ok(key)
        })
        .await
    }

    pub(super) async fn record_last_used(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        let uses = uses.to_vec();
        self.call(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            {
                // Not a change the replicas need to hear of: `updated_at` stays.
                let mut statement = tx
                    .prepare_cached(
                        "UPDATE keys SET last_used_at = ?2
                         WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
                    )
                    .map_err(unavailable)?;
                for (id, at) in &uses {
                    statement.execute(params![id, at]).map_err(unavailable)?;
                }
            }
            tx.commit().map_err(unavailable)
        })
        .await
    }

    pub(super) async fn insert_registration(
        &self,
        registration: &RegistrationRecord,
        key: &KeyRecord,
    ) -> Result<(), StoreError> {
        let registration = registration.clone();
        let key = key.clone();
        self.call(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            insert_key(&tx, &key)?;
            insert(
                &tx,
                "registrations",
                REGISTRATION_COLUMNS,
                &rows::registration_values(&registration),
            )?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    pub(super) async fn registration(
        &self,
        id: &str,
    ) -> Result<Option<RegistrationRecord>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {REGISTRATION_COLUMNS} FROM registrations WHERE id = ?1"),
                params![id],
                |row| rows::registration(row),
            )
            .optional()
            .map_err(unavailable)
        })
        .await
    }

    pub(super) async fn registration_by_claim(
        &self,
        claim_hash: &[u8; 32],
    ) -> Result<Option<RegistrationRecord>, StoreError> {
        let claim_hash = *claim_hash;
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {REGISTRATION_COLUMNS} FROM registrations WHERE claim_hash = ?1"),
                params![claim_hash.as_slice()],
                |row| rows::registration(row),
            )
            .optional()
            .map_err(unavailable)
        })
        .await
    }

    pub(super) async fn operated_by(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<(Vec<RegistrationRecord>, Vec<KeyRecord>), StoreError> {
        let provider = provider.to_owned();
        let subject = subject.to_owned();
        self.call(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            let registrations = {
                let mut statement = tx
                    .prepare(&format!(
                        "SELECT {REGISTRATION_COLUMNS} FROM registrations \
                         WHERE operator_provider = ?1 AND operator_subject = ?2 \
                         ORDER BY claimed_at, id"
                    ))
                    .map_err(unavailable)?;
                statement
                    .query_map(params![provider, subject], |row| rows::registration(row))
                    .map_err(unavailable)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(unavailable)?
            };
            // Every key of the owner of each registration's issued key.
            let keys = query_keys(
                &tx,
                &format!(
                    "SELECT {KEY_COLUMNS} FROM keys WHERE owner IN (SELECT k.owner \
                     FROM registrations r JOIN keys k ON k.id = r.key_id \
                     WHERE r.operator_provider = ?1 AND r.operator_subject = ?2) \
                     ORDER BY created_at, id"
                ),
                params![provider, subject],
            )?;
            tx.commit().map_err(unavailable)?;
            Ok((registrations, keys))
        })
        .await
    }

    pub(super) async fn claim(&self, claim: &Claim<'_>) -> Result<ClaimOutcome, StoreError> {
        let registration_id = claim.registration_id.to_owned();
        let subject = claim.subject.to_owned();
        let tier = claim.tier.to_owned();
        let scopes = rows::scopes_text(claim.scopes);
        let now = claim.now;
        let operator = claim.operator.cloned();
        let new_hash = claim.new_hash;
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let Some(registration) = tx
                .query_row(
                    &format!("SELECT {REGISTRATION_COLUMNS} FROM registrations WHERE id = ?1"),
                    params![registration_id],
                    |row| rows::registration(row),
                )
                .optional()
                .map_err(unavailable)?
            else {
                return Ok(ClaimOutcome::NotFound);
            };
            if registration.claimed_at.is_some() {
                return Ok(ClaimOutcome::AlreadyClaimed);
            }
            if registration.claim_expires_at.is_some_and(|at| now >= at) {
                return Ok(ClaimOutcome::Expired);
            }
            // Conditional: only an unclaimed registration is claimed, so of two
            // claims racing exactly one changes a row.
            let operator = operator.as_ref();
            let changed = tx
                .execute(
                    "UPDATE registrations SET claimed_at = ?2, subject = ?3,
                     operator_provider = ?4, operator_subject = ?5, operator_handle = ?6
                     WHERE id = ?1 AND claimed_at IS NULL",
                    params![
                        registration_id,
                        now,
                        subject,
                        operator.map(|o| o.provider.as_str()),
                        operator.map(|o| o.subject.as_str()),
                        operator.map(|o| o.handle.as_str()),
                    ],
                )
                .map_err(unavailable)?;
            if changed == 0 {
                return Ok(ClaimOutcome::AlreadyClaimed);
            }
            let changed = tx
                .execute(
                    "UPDATE keys SET tier = ?2, scopes = ?3, updated_at = ?4, operator = ?5
                     WHERE id = ?1 AND revoked_at IS NULL",
                    params![
                        registration.key_id,
                        tier,
                        scopes,
                        unix_now_ms(),
                        operator.map(super::Operator::header),
                    ],
                )
                .map_err(unavailable)?;
            if changed == 0 {
                // Dropping the transaction rolls the registration's update back.
                return Ok(ClaimOutcome::KeyRevoked);
            }
            if let Some(hash) = &new_hash {
                tx.execute(
                    "UPDATE keys SET hash = ?2, previous_hash = NULL, previous_expires_at = NULL
                     WHERE id = ?1",
                    params![registration.key_id, hash.0.as_slice()],
                )
                .map_err(unavailable)?;
            }
            let key = key_by_id(&tx, &registration.key_id)?;
            tx.commit().map_err(unavailable)?;
            Ok(key.map_or(ClaimOutcome::KeyRevoked, |key| {
                ClaimOutcome::Claimed(Box::new(key))
            }))
        })
        .await
    }

    pub(super) async fn use_assertion(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let issuer = issuer.to_owned();
        let jti = jti.to_owned();
        self.call(move |c| {
            let tx = c.transaction().map_err(unavailable)?;
            tx.execute(
                "DELETE FROM used_assertions WHERE expires_at < ?1",
                params![now],
            )
            .map_err(unavailable)?;
            let inserted = tx
                .execute(
                    &format!(
                        "INSERT INTO used_assertions ({USED_ASSERTION_COLUMNS}) VALUES (?1, ?2, ?3)
                         ON CONFLICT DO NOTHING"
                    ),
                    params![issuer, jti, expires_at],
                )
                .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(inserted == 1)
        })
        .await
    }

    pub(super) async fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        let jti = jti.to_owned();
        self.call(move |c| {
            let now_ms = unix_now_ms();
            let tx = c.transaction().map_err(unavailable)?;
            tx.execute(
                "DELETE FROM revoked_tokens WHERE expires_at < ?1",
                params![now_ms / 1000],
            )
            .map_err(unavailable)?;
            tx.execute(
                &format!(
                    "INSERT INTO revoked_tokens ({REVOKED_TOKEN_COLUMNS}) VALUES (?1, ?2, ?3)
                     ON CONFLICT (jti) DO NOTHING"
                ),
                params![jti, expires_at, now_ms],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)
        })
        .await
    }

    pub(super) async fn revoked_tokens_since(
        &self,
        since_ms: i64,
    ) -> Result<(Vec<(String, i64)>, i64), StoreError> {
        self.call(move |c| {
            let clock = unix_now_ms();
            let mut statement = c
                .prepare("SELECT jti, expires_at FROM revoked_tokens WHERE updated_at >= ?1")
                .map_err(unavailable)?;
            let rows = statement
                .query_map(params![since_ms], |row| Ok((row.get(0)?, row.get(1)?)))
                .map_err(unavailable)?
                .collect::<Result<Vec<(String, i64)>, _>>()
                .map_err(unavailable)?;
            Ok((rows, clock))
        })
        .await
    }

    pub(super) async fn add_quota_usage(&self, usage: Vec<Usage>) -> Result<Vec<i64>, StoreError> {
        self.call(move |c| {
            let now_ms = unix_now_ms();
            let tx = c.transaction().map_err(unavailable)?;
            let mut totals = Vec::with_capacity(usage.len());
            {
                let mut statement = tx
                    .prepare_cached(&format!(
                        "INSERT INTO quota_usage ({QUOTA_USAGE_COLUMNS})
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (subject, period) DO UPDATE
                         SET used = used + excluded.used, updated_at = excluded.updated_at
                         RETURNING used"
                    ))
                    .map_err(unavailable)?;
                for u in &usage {
                    let total = statement
                        .query_row(params![u.name, u.period, u.delta, now_ms], |row| row.get(0))
                        .map_err(unavailable)?;
                    totals.push(total);
                }
            }
            tx.commit().map_err(unavailable)?;
            Ok(totals)
        })
        .await
    }

    pub(super) async fn quota_usage_since(
        &self,
        since_ms: i64,
        periods: Vec<String>,
    ) -> Result<(Vec<(String, String, i64)>, i64), StoreError> {
        self.call(move |c| {
            let clock = unix_now_ms();
            let mut statement = c
                .prepare_cached(
                    "SELECT subject, period, used FROM quota_usage
                     WHERE updated_at >= ?1 AND period IN (?2, ?3)",
                )
                .map_err(unavailable)?;
            let first = periods.first().cloned().unwrap_or_default();
            let second = periods.get(1).cloned().unwrap_or_default();
            let rows = statement
                .query_map(params![since_ms, first, second], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            Ok((rows, clock))
        })
        .await
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        self.call(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(unavailable))
            .await
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let mut connection = Connection::open(path)
        .map_err(|e| unavailable(format!("cannot open `{}`: {e}", path.display())))?;
    connection
        .busy_timeout(std::time::Duration::from_secs(5))
        .map_err(unavailable)?;
    connection
        .pragma_update(None, "journal_mode", "WAL")
        .map_err(unavailable)?;
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(unavailable)?;
    connection
        .pragma_update(None, "foreign_keys", "ON")
        .map_err(unavailable)?;
    migrate(&mut connection)?;
    Ok(connection)
}

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let tx = connection
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(unavailable)?;
    let version = usize::try_from(version).map_err(unavailable)?;
    if version > MIGRATIONS.len() {
        return Err(unavailable(format!(
            "the database has schema version {version}, newer than this build knows ({}); upgrade authmd-proxy",
            MIGRATIONS.len()
        )));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(migration).map_err(unavailable)?;
        let next = i64::try_from(i + 1).map_err(unavailable)?;
        tx.pragma_update(None, "user_version", next)
            .map_err(unavailable)?;
    }
    tx.commit().map_err(unavailable)
}

/// Inserts one row of `values` into `table`'s `columns`.
fn insert(
    c: &Connection,
    table: &str,
    columns: &str,
    values: &[Value<'_>],
) -> Result<(), StoreError> {
    let placeholders: Vec<String> = (1..=values.len()).map(|n| format!("?{n}")).collect();
    c.execute(
        &format!(
            "INSERT INTO {table} ({columns}) VALUES ({})",
            placeholders.join(", ")
        ),
        rusqlite::params_from_iter(values),
    )
    .map_err(classify)?;
    Ok(())
}

fn insert_key(c: &Connection, key: &KeyRecord) -> Result<(), StoreError> {
    insert(c, "keys", KEY_COLUMNS, &rows::key_values(key))
}

fn key_by_id(c: &Connection, id: &str) -> Result<Option<KeyRecord>, StoreError> {
    c.query_row(
        &format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = ?1"),
        params![id],
        |row| rows::key(row),
    )
    .optional()
    .map_err(unavailable)
}

fn query_keys(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<KeyRecord>, StoreError> {
    let mut statement = c.prepare_cached(sql).map_err(unavailable)?;
    let rows = statement
        .query_map(params, |row| rows::key(row))
        .map_err(unavailable)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
}

impl ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Integer(n) => ToSqlOutput::from(*n),
            Value::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Value::Bytes(bytes) => ToSqlOutput::Borrowed(ValueRef::Blob(bytes)),
            // This process's clock, read as the statement is bound.
            Value::Clock => ToSqlOutput::from(unix_now_ms()),
        })
    }
}

impl Columns for Row<'_> {
    type Error = rusqlite::Error;

    fn text(&self, index: usize) -> rusqlite::Result<String> {
        self.get(index)
    }

    fn optional_text(&self, index: usize) -> rusqlite::Result<Option<String>> {
        self.get(index)
    }

    fn integer(&self, index: usize) -> rusqlite::Result<i64> {
        self.get(index)
    }

    fn optional_integer(&self, index: usize) -> rusqlite::Result<Option<i64>> {
        self.get(index)
    }

    fn optional_bytes(&self, index: usize) -> rusqlite::Result<Option<Vec<u8>>> {
        self.get(index)
    }

    fn invalid(&self, index: usize, problem: String) -> rusqlite::Error {
        let stored = self
            .get_ref(index)
            .map_or(Type::Null, |value| value.data_type());
        rusqlite::Error::FromSqlConversionFailure(index, stored, problem.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_column_lists_are_the_migrated_tables() {
        let mut connection = Connection::open_in_memory().unwrap();
        migrate(&mut connection).unwrap();
        for (table, columns) in [
            ("keys", KEY_COLUMNS),
            ("registrations", REGISTRATION_COLUMNS),
            ("used_assertions", USED_ASSERTION_COLUMNS),
            ("revoked_tokens", REVOKED_TOKEN_COLUMNS),
            ("quota_usage", QUOTA_USAGE_COLUMNS),
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
