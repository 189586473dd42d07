//! PostgreSQL, the store for several replicas.
//!
//! Behaves like [`SqliteStore`](super::sqlite::SqliteStore), method for method, and
//! adds what several replicas need:
//!
//! - **Announcements.** Every write that changes a key also runs `pg_notify` in the
//!   same transaction (so it is delivered on commit only) on the channel
//!   `authmd_keys_<schema>`, with the key id as payload; [`PostgresStore::listen`]
//!   turns them into [`Notice`]s on a dedicated `LISTEN` connection.
//! - **One clock.** `updated_at` and the clock [`changed_since`] returns come from
//!   the database (`clock_timestamp()`, milliseconds), so replicas whose clocks
//!   disagree still agree on the order of changes.
//! - **Safe concurrent start.** Migrations are numbered in `schema_migrations` and
//!   applied in one transaction that first takes an advisory lock derived from the
//!   schema name: replicas starting together wait for the first, then find nothing
//!   left to do.
//!
//! The connection is made lazily, by the first call, and remade by the first call
//! after it is lost; while the server is down every call fails quickly with
//! [`StoreError::Unavailable`] and the store works again once it returns. Writes are
//! rare (key management), so one connection serves all queries, behind a mutex held
//! only for the round trips themselves.
//!
//! The connection string may hold a password: it is parsed once and never formatted
//! into an error, a log line or `Debug` output. TLS is not supported yet (`NoTls`).
//!
//! [`changed_since`]: super::Store::changed_since

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::{Mutex, MutexGuard, mpsc};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{AsyncMessage, Client, Config, GenericClient, NoTls, Row};

use super::rows::{
    self, Columns, KEY_COLUMNS, QUOTA_USAGE_COLUMNS, REGISTRATION_COLUMNS, REVOKED_TOKEN_COLUMNS,
    USED_ASSERTION_COLUMNS, Value,
};
use super::{
    Claim, ClaimOutcome, KeyRecord, MeterSlot, Notice, RegistrationRecord, Rotation, StoreError,
};
use crate::limits::quota::Usage;

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
];

/// The database clock in unix milliseconds: every replica stamps with the same clock.
const DB_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Bound on establishing a connection (TCP, startup, authentication, `SET`), unless
/// the connection string sets its own `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Bound on one operation's round trips (including waiting for the migration lock or
/// a row lock held by another replica). Past it the connection is dropped: its state
/// is unknown, and closing it rolls back whatever it had open.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Reconnection backoff of the `LISTEN` connection.
const LISTEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How often the idle `LISTEN` connection proves it is still alive, so that a
/// silently dead one (a network partition) is noticed and remade.
const LISTEN_HEARTBEAT: Duration = Duration::from_secs(30);

/// Room for announcements not yet taken by the receiver; past it they are dropped and
/// a [`Notice::Resync`] follows instead.
const NOTICE_CAPACITY: usize = 1024;

/// PostgreSQL's identifier length limit (`NAMEDATALEN - 1`).
const MAX_IDENTIFIER_BYTES: usize = 63;

/// A handle to a PostgreSQL store; cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
    pub(super) meter: MeterSlot,
}

struct Inner {
    /// Parsed connection settings (may hold a password: never formatted).
    config: Config,
    /// Overall bound on making a connection.
    connect_timeout: Duration,
    /// The schema, as configured, and quoted for SQL.
    schema: String,
    quoted_schema: String,
    /// The `NOTIFY` channel of this schema.
    channel: String,
    /// The advisory lock that serialises migrations of this schema.
    migration_lock: i64,
    /// The query connection.
    state: Mutex<State>,
    /// Failed connection attempts so far: a call that waited for the lock while an
    /// attempt failed reports that failure rather than making another attempt, so a
    /// queue of calls fails within one connect timeout, not one each.
    failures: AtomicU64,
}

#[derive(Default)]
struct State {
    client: Option<Client>,
    migrated: bool,
    last_failure: Option<StoreError>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

/// Why an operation failed, before it is mapped to a [`StoreError`].
pub(super) enum Failure {
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
    fn breaks_connection(&self) -> bool {
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

    fn into_store_error(self) -> StoreError {
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
async fn bounded<T>(
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
/// and cause (an I/O error says what failed, never the host or the password).
fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

/// Quotes an SQL identifier.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The first `max` bytes of `text`, cut at a character boundary.
fn truncate_bytes(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The `NOTIFY` channel of a schema, so stores in different schemas never hear each
/// other.
fn channel_of(schema: &str) -> String {
    truncate_bytes(&format!("authmd_keys_{schema}"), MAX_IDENTIFIER_BYTES).to_owned()
}

/// The advisory lock id that serialises migrations of a schema.
fn migration_lock_of(schema: &str) -> i64 {
    let hash = blake3::hash(format!("authmd-proxy migrations {schema}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.as_bytes()[..8]);
    i64::from_be_bytes(bytes)
}

impl PostgresStore {
    /// Parses the connection string and remembers the schema; makes no connection
    /// (the first call does).
    ///
    /// A string that does not parse is refused without being echoed: it may hold a
    /// password.
    pub fn new(url: &str, schema: &str) -> Result<PostgresStore, StoreError> {
        let mut config = Config::from_str(url)
            .map_err(|_| StoreError::Unavailable("the PostgreSQL URL is not valid".into()))?;
        if schema.is_empty() {
            return Err(StoreError::Unavailable(
                "the PostgreSQL schema name is empty".into(),
            ));
        }
        let connect_timeout = match config.get_connect_timeout() {
            Some(timeout) => *timeout,
            None => {
                config.connect_timeout(CONNECT_TIMEOUT);
                CONNECT_TIMEOUT
            }
        };
        if config.get_application_name().is_none() {
            config.application_name("authmd-proxy");
        }
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                config,
                connect_timeout,
                schema: schema.to_owned(),
                quoted_schema: quote_identifier(schema),
                channel: channel_of(schema),
                migration_lock: migration_lock_of(schema),
                state: Mutex::new(State::default()),
                failures: AtomicU64::new(0),
            }),
            meter: MeterSlot::default(),
        })
    }

    /// Change announcements from every writer (this process included), on a
    /// dedicated `LISTEN` connection owned by a spawned task: [`Notice::Key`] per
    /// changed key, and [`Notice::Resync`] after every (re)connection, since
    /// announcements made while it was down are lost. It reconnects with capped
    /// exponential backoff (100 ms to 5 s) for as long as the receiver is kept.
    ///
    /// Must be called within a Tokio runtime.
    pub fn listen(&self) -> mpsc::Receiver<Notice> {
        let (notices, receiver) = mpsc::channel(NOTICE_CAPACITY);
        tokio::spawn(listen_forever(Arc::clone(&self.inner), notices));
        receiver
    }

    /// The query connection, connected (and migrated) if it was not; the guard holds
    /// a client.
    async fn connected(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        let inner = &*self.inner;
        let failures_seen = inner.failures.load(Ordering::Acquire);
        let mut state = inner.state.lock().await;
        if state.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(state);
        }
        state.client = None;
        if inner.failures.load(Ordering::Acquire) != failures_seen {
            if let Some(failure) = &state.last_failure {
                return Err(failure.clone());
            }
        }
        match inner.establish(state.migrated).await {
            Ok(client) => {
                state.client = Some(client);
                state.migrated = true;
                state.last_failure = None;
                Ok(state)
            }
            Err(error) => {
                tracing::debug!(%error, "cannot connect to PostgreSQL");
                state.last_failure = Some(error.clone());
                inner.failures.fetch_add(1, Ordering::AcqRel);
                Err(error)
            }
        }
    }

    /// Runs `work` on the query connection, within [`OPERATION_TIMEOUT`]; drops the
    /// connection when it failed in a way that leaves it unusable.
    async fn run<R>(
        &self,
        work: impl AsyncFnOnce(&mut Client) -> Result<R, Failure>,
    ) -> Result<R, StoreError> {
        let mut state = self.connected().await?;
        let Some(client) = state.client.as_mut() else {
            return Err(StoreError::Unavailable(
                "no connection to PostgreSQL".into(),
            ));
        };
        let (outcome, broken) = match tokio::time::timeout(OPERATION_TIMEOUT, work(client)).await {
            Ok(Ok(value)) => (Ok(value), false),
            Ok(Err(failure)) => {
                let broken = failure.breaks_connection();
                (Err(failure.into_store_error()), broken)
            }
            Err(_) => (
                Err(StoreError::Unavailable(
                    "PostgreSQL did not answer in time".into(),
                )),
                true,
            ),
        };
        if broken || state.client.as_ref().is_none_or(Client::is_closed) {
            state.client = None;
        }
        outcome
    }

    pub(super) async fn live_keys(&self, now: i64) -> Result<Vec<KeyRecord>, StoreError> {
        self.run(async |c| {
            query_keys(
                c,
                &format!(
                    "SELECT {KEY_COLUMNS} FROM keys WHERE revoked_at IS NULL \
                     AND (expires_at IS NULL OR expires_at > $1)"
                ),
                &[&now],
            )
            .await
        })
        .await
    }

    pub(super) async fn changed_since(
        &self,
        since_ms: i64,
    ) -> Result<(Vec<KeyRecord>, i64), StoreError> {
        self.run(async |c| {
            let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE updated_at >= $1");
            clocked_keys(c, &sql, &[&since_ms]).await
        })
        .await
    }

    pub(super) async fn keys_after(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<(Vec<KeyRecord>, i64), StoreError> {
        self.run(async |c| {
            let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE id > $1 ORDER BY id LIMIT $2");
            clocked_keys(c, &sql, &[&after, &i64::from(limit)]).await
        })
        .await
    }

    pub(super) async fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.run(async |c| key_by_id(c, id).await).await
    }

    pub(super) async fn keys_of(&self, owner: &str) -> Result<Vec<KeyRecord>, StoreError> {
        self.run(async |c| {
            query_keys(
                c,
                &format!(
                    "SELECT {KEY_COLUMNS} FROM keys WHERE owner = $1 AND revoked_at IS NULL \
                     ORDER BY created_at, id"
                ),
                &[&owner],
            )
            .await
        })
        .await
    }

    pub(super) async fn all_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.run(async |c| {
            query_keys(
                c,
                &format!("SELECT {KEY_COLUMNS} FROM keys ORDER BY created_at, id"),
                &[],
            )
            .await
        })
        .await
    }

    pub(super) async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let channel = &self.inner.channel;
        self.run(async |c| {
            let tx = c.transaction().await?;
            insert_key(&tx, key).await?;
            announce(&tx, channel, &key.id).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    pub(super) async fn rotate_key(
        &self,
        rotation: &Rotation<'_>,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let channel = &self.inner.channel;
        let new_hash = rotation.new_hash.0.as_slice();
        self.run(async |c| {
            let tx = c.transaction().await?;
            let row = tx
                .query_opt(
                    &format!(
                        "UPDATE keys SET
                            previous_hash = CASE WHEN $3::bigint IS NULL THEN NULL ELSE hash END,
                            previous_expires_at = $3::bigint,
                            hash = $2,
                            updated_at = {DB_NOW_MS}
                         WHERE id = $1 AND revoked_at IS NULL
                         RETURNING {KEY_COLUMNS}"
                    ),
                    &[&rotation.id, &new_hash, &rotation.grace_until],
                )
                .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let key = rows::key(&row)?;
            announce(&tx, channel, &key.id).await?;
            tx.commit().await?;
            Ok(Some(key))
        })
        .await
    }

    pub(super) async fn revoke_key(
        &self,
        id: &str,
        now: i64,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let channel = &self.inner.channel;
        self.run(async |c| {
            let tx = c.transaction().await?;
            let row = tx
                .query_opt(
                    &format!(
                        "UPDATE keys SET revoked_at = $2, updated_at = {DB_NOW_MS}
                         WHERE id = $1 AND revoked_at IS NULL
                         RETURNING {KEY_COLUMNS}"
                    ),
                    &[&id, &now],
                )
                .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let key = rows::key(&row)?;
            announce(&tx, channel, &key.id).await?;
            tx.commit().await?;
            Ok(Some(key))
        })
        .await
    }

    pub(super) async fn record_last_used(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        // The latest time per key, so one statement can apply the whole batch.
        let mut latest: BTreeMap<&str, i64> = BTreeMap::new();
        for (id, at) in uses {
            let entry = latest.entry(id.as_str()).or_insert(*at);
            *entry = (*entry).max(*at);
        }
        if latest.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = latest.keys().copied().collect();
        let times: Vec<i64> = latest.values().copied().collect();
        self.run(async |c| {
            // Not a change the replicas need to hear of: `updated_at` stays, and no
            // announcement.
            c.execute(
                "UPDATE keys AS k SET last_used_at = u.at
                 FROM unnest($1::text[], $2::bigint[]) AS u (id, at)
                 WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
                &[&ids, &times],
            )
            .await?;
            Ok(())
        })
        .await
    }

    pub(super) async fn insert_registration(
        &self,
        registration: &RegistrationRecord,
        key: &KeyRecord,
    ) -> Result<(), StoreError> {
        let channel = &self.inner.channel;
        self.run(async |c| {
            let tx = c.transaction().await?;
            insert_key(&tx, key).await?;
            insert(
                &tx,
                "registrations",
                REGISTRATION_COLUMNS,
                &rows::registration_values(registration),
            )
            .await?;
            announce(&tx, channel, &key.id).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    pub(super) async fn registration(
        &self,
        id: &str,
    ) -> Result<Option<RegistrationRecord>, StoreError> {
        self.run(async |c| {
            c.query_opt(
                &format!("SELECT {REGISTRATION_COLUMNS} FROM registrations WHERE id = $1"),
                &[&id],
            )
            .await?
            .as_ref()
            .map(rows::registration)
            .transpose()
        })
        .await
    }

    pub(super) async fn registration_by_claim(
        &self,
        claim_hash: &[u8; 32],
    ) -> Result<Option<RegistrationRecord>, StoreError> {
        let claim_hash = claim_hash.as_slice();
        self.run(async |c| {
            c.query_opt(
                &format!("SELECT {REGISTRATION_COLUMNS} FROM registrations WHERE claim_hash = $1"),
                &[&claim_hash],
            )
            .await?
            .as_ref()
            .map(rows::registration)
            .transpose()
        })
        .await
    }

    pub(super) async fn claim(&self, claim: &Claim<'_>) -> Result<ClaimOutcome, StoreError> {
        let channel = &self.inner.channel;
        let scopes = rows::scopes_text(claim.scopes);
        self.run(async |c| {
            let tx = c.transaction().await?;
            // The row lock makes concurrent claims (from any replica) queue here; the
            // ones after the first see it claimed.
            let row = tx
                .query_opt(
                    &format!(
                        "SELECT {REGISTRATION_COLUMNS} FROM registrations WHERE id = $1 \
                         FOR UPDATE"
                    ),
                    &[&claim.registration_id],
                )
                .await?;
            let Some(row) = row else {
                return Ok(ClaimOutcome::NotFound);
            };
            let registration = rows::registration(&row)?;
            if registration.claimed_at.is_some() {
                return Ok(ClaimOutcome::AlreadyClaimed);
            }
            if registration
                .claim_expires_at
                .is_some_and(|at| claim.now >= at)
            {
                return Ok(ClaimOutcome::Expired);
            }
            let row = tx
                .query_opt(
                    &format!(
                        "UPDATE keys SET tier = $2, scopes = $3, updated_at = {DB_NOW_MS}
                         WHERE id = $1 AND revoked_at IS NULL
                         RETURNING {KEY_COLUMNS}"
                    ),
                    &[&registration.key_id, &claim.tier, &scopes],
                )
                .await?;
            let Some(row) = row else {
                return Ok(ClaimOutcome::KeyRevoked);
            };
            let key = rows::key(&row)?;
            tx.execute(
                "UPDATE registrations SET claimed_at = $2, subject = $3 WHERE id = $1",
                &[&claim.registration_id, &claim.now, &claim.subject],
            )
            .await?;
            announce(&tx, channel, &key.id).await?;
            tx.commit().await?;
            Ok(ClaimOutcome::Claimed(Box::new(key)))
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
        self.run(async |c| {
            let tx = c.transaction().await?;
            tx.execute("DELETE FROM used_assertions WHERE expires_at < $1", &[&now])
                .await?;
            let inserted = tx
                .execute(
                    &format!(
                        "INSERT INTO used_assertions ({USED_ASSERTION_COLUMNS}) VALUES ($1, $2, $3)
                         ON CONFLICT DO NOTHING"
                    ),
                    &[&issuer, &jti, &expires_at],
                )
                .await?;
            tx.commit().await?;
            Ok(inserted == 1)
        })
        .await
    }

    pub(super) async fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        let channel = &self.inner.channel;
        self.run(async |c| {
            let tx = c.transaction().await?;
            tx.execute(
                &format!("DELETE FROM revoked_tokens WHERE expires_at < {DB_NOW_MS} / 1000"),
                &[],
            )
            .await?;
            tx.execute(
                &format!(
                    "INSERT INTO revoked_tokens ({REVOKED_TOKEN_COLUMNS})
                     VALUES ($1, $2, {DB_NOW_MS}) ON CONFLICT (jti) DO NOTHING"
                ),
                &[&jti, &expires_at],
            )
            .await?;
            announce(&tx, channel, TOKEN_REVOKED).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    pub(super) async fn add_quota_usage(&self, usage: Vec<Usage>) -> Result<Vec<i64>, StoreError> {
        self.run(async |c| {
            let tx = c.transaction().await?;
            let statement = tx
                .prepare(&format!(
                    "INSERT INTO quota_usage ({QUOTA_USAGE_COLUMNS})
                     VALUES ($1, $2, $3, {DB_NOW_MS})
                     ON CONFLICT (subject, period) DO UPDATE
                     SET used = quota_usage.used + EXCLUDED.used, updated_at = EXCLUDED.updated_at
                     RETURNING used"
                ))
                .await?;
            let mut totals = Vec::with_capacity(usage.len());
            for u in &usage {
                let row = tx
                    .query_one(&statement, &[&u.name, &u.period, &u.delta])
                    .await?;
                totals.push(column(&row, 0)?);
            }
            tx.commit().await?;
            Ok(totals)
        })
        .await
    }

    pub(super) async fn quota_usage_since(
        &self,
        since_ms: i64,
        periods: Vec<String>,
    ) -> Result<(Vec<(String, String, i64)>, i64), StoreError> {
        self.run(async |c| {
            let clock: i64 = column(&c.query_one(&format!("SELECT {DB_NOW_MS}"), &[]).await?, 0)?;
            let rows = c
                .query(
                    "SELECT subject, period, used FROM quota_usage
                     WHERE updated_at >= $1 AND period = ANY($2)",
                    &[&since_ms, &periods],
                )
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push((column(row, 0)?, column(row, 1)?, column(row, 2)?));
            }
            Ok((out, clock))
        })
        .await
    }

    pub(super) async fn revoked_tokens_since(
        &self,
        since_ms: i64,
    ) -> Result<(Vec<(String, i64)>, i64), StoreError> {
        self.run(async |c| {
            let clock: i64 = column(&c.query_one(&format!("SELECT {DB_NOW_MS}"), &[]).await?, 0)?;
            let rows = c
                .query(
                    "SELECT jti, expires_at FROM revoked_tokens WHERE updated_at >= $1",
                    &[&since_ms],
                )
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push((column(row, 0)?, column(row, 1)?));
            }
            Ok((out, clock))
        })
        .await
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        self.run(async |c| {
            c.simple_query("SELECT 1").await?;
            Ok(())
        })
        .await
    }
}

impl Inner {
    /// Opens a connection whose task runs on the runtime, within the connect timeout.
    async fn open(&self) -> Result<Client, StoreError> {
        let connect = async {
            let (client, connection) = self.config.connect(NoTls).await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(error = %describe(&error), "PostgreSQL connection ended");
                }
            });
            Ok::<_, tokio_postgres::Error>(client)
        };
        bounded(
            self.connect_timeout,
            "cannot connect to PostgreSQL",
            connect,
        )
        .await
    }

    /// A query connection: opened, `search_path` set to the schema, and the schema
    /// migrated unless that was done already.
    async fn establish(&self, migrated: bool) -> Result<Client, StoreError> {
        let mut client = self.open().await?;
        let setup = async {
            client
                .batch_execute(&format!("SET search_path TO {}", self.quoted_schema))
                .await?;
            if !migrated {
                self.migrate(&mut client).await?;
            }
            Ok::<_, Failure>(())
        };
        match tokio::time::timeout(OPERATION_TIMEOUT, setup).await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(failure)) => Err(match failure.into_store_error() {
                StoreError::Unavailable(message) => StoreError::Unavailable(format!(
                    "cannot prepare the PostgreSQL schema: {message}"
                )),
                StoreError::Duplicate => StoreError::Unavailable(
                    "cannot prepare the PostgreSQL schema: a concurrent migration conflicted"
                        .into(),
                ),
            }),
            Err(_) => Err(StoreError::Unavailable(
                "cannot prepare the PostgreSQL schema: no answer in time".into(),
            )),
        }
    }

    /// Creates the schema if needed and applies pending migrations, all in one
    /// transaction under an advisory lock: concurrent starters wait, then find
    /// nothing pending.
    async fn migrate(&self, client: &mut Client) -> Result<(), Failure> {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&self.migration_lock])
            .await?;
        // Created only when missing: `CREATE SCHEMA IF NOT EXISTS` would require the
        // CREATE privilege on the database even when an operator made the schema.
        let exists = tx
            .query_opt(
                "SELECT 1 FROM pg_namespace WHERE nspname = $1",
                &[&self.schema],
            )
            .await?
            .is_some();
        if !exists {
            tx.batch_execute(&format!("CREATE SCHEMA {}", self.quoted_schema))
                .await?;
        }
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {}.schema_migrations (version INT PRIMARY KEY)",
            self.quoted_schema
        ))
        .await?;
        let row = tx
            .query_one(
                &format!(
                    "SELECT max(version) FROM {}.schema_migrations",
                    self.quoted_schema
                ),
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
                &format!(
                    "INSERT INTO {}.schema_migrations (version) VALUES ($1)",
                    self.quoted_schema
                ),
                &[&next],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Keeps a `LISTEN` connection, reconnecting with backoff, until the receiver goes.
async fn listen_forever(inner: Arc<Inner>, notices: mpsc::Sender<Notice>) {
    let mut backoff = LISTEN_BACKOFF_MIN;
    loop {
        match listen_once(&inner, &notices, &mut backoff).await {
            Ok(()) => return,
            // Loud once when announcements stop (the backoff is at its minimum only
            // at the start and after a working session), quiet while retrying.
            Err(error) if backoff == LISTEN_BACKOFF_MIN => {
                tracing::warn!(%error, retry_in = ?backoff, "PostgreSQL change announcements interrupted; resyncs still run");
            }
            Err(error) => {
                tracing::debug!(%error, retry_in = ?backoff, "PostgreSQL change announcements still interrupted");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = notices.closed() => return,
        }
        backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
    }
}

/// One `LISTEN` session: `Ok` when the receiver is gone, `Err` when the connection
/// is lost. Resets `backoff` once listening.
async fn listen_once(
    inner: &Inner,
    notices: &mpsc::Sender<Notice>,
    backoff: &mut Duration,
) -> Result<(), StoreError> {
    let connect = async {
        let (client, mut connection) = inner.config.connect(NoTls).await?;
        // The connection's own task forwards notifications; it ends (closing the
        // channel) when the connection does, or once the client is dropped.
        let (payloads, received) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(notification))) => {
                        if payloads.send(notification.payload().to_owned()).is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        tracing::debug!(error = %describe(&error), "PostgreSQL LISTEN connection ended");
                        return;
                    }
                    None => return,
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {}", quote_identifier(&inner.channel)))
            .await?;
        Ok::<_, tokio_postgres::Error>((client, received))
    };
    let (client, mut received) = tokio::select! {
        connected = bounded(inner.connect_timeout, "cannot listen for changes", connect) => connected?,
        () = notices.closed() => return Ok(()),
    };
    *backoff = LISTEN_BACKOFF_MIN;
    // Listening now: whatever changed while not listening is found by a resync.
    let mut resync_owed = true;
    let mut heartbeat = tokio::time::interval(LISTEN_HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.reset();
    loop {
        tokio::select! {
            permit = notices.reserve(), if resync_owed => match permit {
                Ok(permit) => {
                    permit.send(Notice::Resync);
                    resync_owed = false;
                }
                Err(_) => return Ok(()),
            },
            payload = received.recv() => match payload {
                Some(id) => {
                    if resync_owed {
                        // The resync still to come covers this change.
                        continue;
                    }
                    let notice = if id == TOKEN_REVOKED {
                        Notice::TokenRevoked
                    } else {
                        Notice::Key(id)
                    };
                    match notices.try_send(notice) {
                        Ok(()) => {}
                        // The receiver is behind: drop announcements, resync instead.
                        Err(mpsc::error::TrySendError::Full(_)) => resync_owed = true,
                        Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
                    }
                }
                None => {
                    return Err(StoreError::Unavailable(
                        "the LISTEN connection was lost".into(),
                    ));
                }
            },
            _ = heartbeat.tick() => {
                let ping = client.simple_query("SELECT 1");
                bounded(inner.connect_timeout, "the LISTEN connection failed", ping).await?;
            }
            () = notices.closed() => return Ok(()),
        }
    }
}

/// The announcement of a token revocation (key ids never take this form).
const TOKEN_REVOKED: &str = "revoked-token";

/// Announces a changed key; delivered when the surrounding transaction commits.
async fn announce(
    c: &impl GenericClient,
    channel: &str,
    key_id: &str,
) -> Result<(), tokio_postgres::Error> {
    c.execute("SELECT pg_notify($1, $2)", &[&channel, &key_id])
        .await
        .map(drop)
}

fn decode(error: &tokio_postgres::Error) -> Failure {
    Failure::Decode(format!(
        "a stored value cannot be read: {}",
        describe(error)
    ))
}

/// One column of a row.
fn column<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, Failure> {
    row.try_get(index).map_err(|e| decode(&e))
}

/// Inserts one row of `values` into `table`'s `columns`; the store clock is the
/// database's.
async fn insert(
    c: &impl GenericClient,
    table: &str,
    columns: &str,
    values: &[Value<'_>],
) -> Result<(), Failure> {
    let mut placeholders = Vec::with_capacity(values.len());
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(values.len());
    for value in values {
        if *value == Value::Clock {
            placeholders.push(DB_NOW_MS.to_owned());
        } else {
            params.push(value);
            placeholders.push(format!("${}", params.len()));
        }
    }
    c.execute(
        &format!(
            "INSERT INTO {table} ({columns}) VALUES ({})",
            placeholders.join(", ")
        ),
        &params,
    )
    .await?;
    Ok(())
}

async fn insert_key(c: &impl GenericClient, key: &KeyRecord) -> Result<(), Failure> {
    insert(c, "keys", KEY_COLUMNS, &rows::key_values(key)).await
}

async fn key_by_id(c: &impl GenericClient, id: &str) -> Result<Option<KeyRecord>, Failure> {
    c.query_opt(
        &format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = $1"),
        &[&id],
    )
    .await?
    .as_ref()
    .map(rows::key)
    .transpose()
}

/// The keys a query selects, and the store clock read just before it: a change
/// committed after the clock is found by the next query from (a little before) it.
async fn clocked_keys(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<(Vec<KeyRecord>, i64), Failure> {
    let clock: i64 = column(&c.query_one(&format!("SELECT {DB_NOW_MS}"), &[]).await?, 0)?;
    Ok((query_keys(c, sql, params).await?, clock))
}

async fn query_keys(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<KeyRecord>, Failure> {
    c.query(sql, params).await?.iter().map(rows::key).collect()
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(n) => n.to_sql_checked(ty, out),
            Value::Text(text) => text.as_ref().to_sql_checked(ty, out),
            Value::Bytes(bytes) => bytes.to_sql_checked(ty, out),
            Value::Clock => Err("the store clock is written in the statement, not bound".into()),
        }
    }

    /// Each value checks its column's type as it is written.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl Columns for Row {
    type Error = Failure;

    fn text(&self, index: usize) -> Result<String, Failure> {
        column(self, index)
    }

    fn optional_text(&self, index: usize) -> Result<Option<String>, Failure> {
        column(self, index)
    }

    fn integer(&self, index: usize) -> Result<i64, Failure> {
        column(self, index)
    }

    fn optional_integer(&self, index: usize) -> Result<Option<i64>, Failure> {
        column(self, index)
    }

    fn optional_bytes(&self, index: usize) -> Result<Option<Vec<u8>>, Failure> {
        column(self, index)
    }

    fn invalid(&self, _index: usize, problem: String) -> Failure {
        Failure::Decode(format!("a stored value cannot be read: {problem}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_url_is_refused_without_echoing_it() {
        let error = PostgresStore::new("postgres://u:s3cret@host:notaport/db", "authmd")
            .map(|_| ())
            .unwrap_err();
        assert_eq!(
            error,
            StoreError::Unavailable("the PostgreSQL URL is not valid".into())
        );
    }

    #[test]
    fn debug_never_shows_the_url() {
        let store = PostgresStore::new("postgres://u:s3cret@127.0.0.1:1/x", "authmd").unwrap();
        let text = format!("{store:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("authmd"), "{text}");
    }

    #[test]
    fn channels_and_locks_are_per_schema() {
        assert_eq!(channel_of("authmd"), "authmd_keys_authmd");
        let long = "s".repeat(63);
        assert_eq!(channel_of(&long).len(), MAX_IDENTIFIER_BYTES);
        assert_ne!(migration_lock_of("a"), migration_lock_of("b"));
        assert_eq!(migration_lock_of("a"), migration_lock_of("a"));
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
        assert_eq!(truncate_bytes("aé", 2), "a");
    }
}
