//! PostgreSQL, the store for several replicas.
//!
//! Behaves like [`SqliteStore`](super::sqlite::SqliteStore), method for method, and
//! adds what several replicas need:
//!
//! - **Announcements.** Every write that changes a key also runs `pg_notify` in the
//!   same transaction (so it is delivered on commit only) on the channel
//!   `authmd_keys_<schema>`, with the key id as payload; [`PostgresStore::listen`]
//!   turns them into [`Notice`]s on a dedicated `LISTEN` connection. Both halves
//!   live in the `notify` module.
//! - **One clock.** `updated_at` and the clock [`changed_since`] returns come from
//!   the database (`clock_timestamp()`, milliseconds), so replicas whose clocks
//!   disagree still agree on the order of changes.
//! - **Safe concurrent start.** Migrations are numbered in `schema_migrations` and
//!   applied in one transaction that first takes an advisory lock derived from the
//!   schema name: replicas starting together wait for the first, then find nothing
//!   left to do. The schema and this procedure live in the `migrations` module.
//!
//! The connection is made lazily, by the first call, and remade by the first call
//! after it is lost; while the server is down every call fails quickly with
//! [`StoreError::Unavailable`] and the store works again once it returns. Writes are
//! rare (key management), so one connection serves all queries, behind a mutex held
//! only for the round trips themselves.
//!
//! The connection string may hold a password: it is parsed once and never formatted
//! into an error, a log line or `Debug` output.
//!
//! **TLS** follows libpq's `sslmode` (`disable`, `prefer`, the default, `require`,
//! `verify-ca`, `verify-full`) and `sslrootcert`, read from the URL by the `sslmode`
//! module ([`split_url`], [`PostgresTls`]) since the driver knows only the first
//! three; the `tls` module is the rustls glue (aws-lc-rs, with SCRAM channel
//! binding). A connection that fails says which mode and CA it used.
//!
//! [`changed_since`]: super::Store::changed_since

mod failure;
mod grants;
mod migrations;
mod notify;
mod sslmode;
mod tls;
mod user_codes;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::{Mutex, MutexGuard, mpsc};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Config, GenericClient, Row};

use super::rows::{
    self, Columns, KEY_COLUMNS, QUOTA_USAGE_COLUMNS, REGISTRATION_COLUMNS, REVOKED_TOKEN_COLUMNS,
    USED_ASSERTION_COLUMNS, Value,
};
use super::{
    Claim, ClaimOutcome, KeyRecord, MeterSlot, Notice, RegistrationRecord, Rotation, StoreError,
};
use crate::limits::quota::Usage;
use failure::{Failure, bounded, column, describe};
use notify::{NOTICE_CAPACITY, TOKEN_REVOKED, announce, channel_of};
pub use sslmode::{PostgresTls, SSL_MODES, SslMode, TlsSettingError, UrlTls, split_url};
use tls::Connector;

/// The database clock in unix milliseconds: every replica stamps with the same clock.
const DB_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Bound on establishing a connection (TCP, startup, authentication, `SET`), unless
/// the connection string sets its own `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Bound on one operation's round trips (including waiting for the migration lock or
/// a row lock held by another replica). Past it the connection is dropped: its state
/// is unknown, and closing it rolls back whatever it had open.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle to a PostgreSQL store; cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
    pub(super) meter: MeterSlot,
}

struct Inner {
    /// Parsed connection settings (may hold a password: never formatted).
    config: Config,
    /// The TLS handshake of each connection.
    tls: Connector,
    /// Overall bound on making a connection.
    connect_timeout: Duration,
    /// The schema, as configured, and quoted for SQL.
    schema: String,
    quoted_schema: String,
    /// The `NOTIFY` channel of this schema.
    channel: String,
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

/// Parses a connection string, without echoing it.
fn parse(url: &str) -> Result<Config, StoreError> {
    Config::from_str(url)
        .map_err(|_| StoreError::Unavailable("the PostgreSQL URL is not valid".into()))
}

fn tls_setting_error(error: &TlsSettingError) -> StoreError {
    StoreError::Unavailable(format!("the PostgreSQL URL's TLS settings: {error}"))
}

/// The mode the driver read from a `key=value` string.
fn driver_mode(config: &Config) -> SslMode {
    match config.get_ssl_mode() {
        tokio_postgres::config::SslMode::Disable => SslMode::Disable,
        tokio_postgres::config::SslMode::Prefer => SslMode::Prefer,
        _ => SslMode::Require,
    }
}

/// Quotes an SQL identifier.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl PostgresStore {
    /// Parses the connection string and remembers the schema; makes no connection
    /// (the first call does). TLS is as the URL's `sslmode` and `sslrootcert` say
    /// (a relative `sslrootcert` is read from the working directory, as libpq does);
    /// a string in the `key=value` form keeps the driver's reading of its `sslmode`
    /// (`disable`, `prefer` or `require`).
    ///
    /// A string that does not parse is refused without being echoed: it may hold a
    /// password.
    pub fn new(url: &str, schema: &str) -> Result<PostgresStore, StoreError> {
        let parts = split_url(url).map_err(|e| tls_setting_error(&e))?;
        let tls = PostgresTls::from_parts(parts.mode, parts.root_cert.as_deref(), |file| {
            PathBuf::from(file)
        })
        .map_err(|e| tls_setting_error(&e))?;
        let config = parse(&parts.url)?;
        let tls = if sslmode::url_body(url).is_none() {
            PostgresTls {
                mode: driver_mode(&config),
                ..tls
            }
        } else {
            tls
        };
        PostgresStore::build(config, schema, &tls)
    }

    /// [`PostgresStore::new`] with TLS settings of their own: `url` must then have
    /// no `sslmode` or `sslrootcert` (see [`split_url`], which takes them out).
    ///
    /// # Errors
    ///
    /// When the URL does not parse or has TLS parameters, the schema name is empty,
    /// or the CA file cannot be read or used.
    pub fn with_tls(
        url: &str,
        schema: &str,
        tls: &PostgresTls,
    ) -> Result<PostgresStore, StoreError> {
        let parts = split_url(url).map_err(|e| tls_setting_error(&e))?;
        if parts.mode.is_some() || parts.root_cert.is_some() {
            return Err(StoreError::Unavailable(
                "the PostgreSQL URL has `sslmode` or `sslrootcert`, and TLS settings are given besides".into(),
            ));
        }
        PostgresStore::build(parse(url)?, schema, tls)
    }

    fn build(
        mut config: Config,
        schema: &str,
        tls: &PostgresTls,
    ) -> Result<PostgresStore, StoreError> {
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
        config.ssl_mode(tls.mode.driver_mode());
        let connector = Connector::new(tls).map_err(|error| {
            StoreError::Unavailable(format!("PostgreSQL TLS cannot be set up: {error}"))
        })?;
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                config,
                tls: connector,
                connect_timeout,
                schema: schema.to_owned(),
                quoted_schema: quote_identifier(schema),
                channel: channel_of(schema),
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
        tokio::spawn(notify::listen_forever(
            self.inner.config.clone(),
            self.inner.tls.clone(),
            self.inner.connect_timeout,
            quote_identifier(&self.inner.channel),
            notices,
        ));
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

    pub(super) async fn operated_by(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<(Vec<RegistrationRecord>, Vec<KeyRecord>), StoreError> {
        self.run(async |c| {
            // One snapshot for both reads.
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let registrations = tx
                .query(
                    &format!(
                        "SELECT {REGISTRATION_COLUMNS} FROM registrations \
                         WHERE operator_provider = $1 AND operator_subject = $2 \
                         ORDER BY claimed_at, id"
                    ),
                    &[&provider, &subject],
                )
                .await?
                .iter()
                .map(rows::registration)
                .collect::<Result<Vec<_>, _>>()?;
            // Every key of the owner of each registration's issued key.
            let keys = query_keys(
                &tx,
                &format!(
                    "SELECT {KEY_COLUMNS} FROM keys WHERE owner IN (SELECT k.owner \
                     FROM registrations r JOIN keys k ON k.id = r.key_id \
                     WHERE r.operator_provider = $1 AND r.operator_subject = $2) \
                     ORDER BY created_at, id"
                ),
                &[&provider, &subject],
            )
            .await?;
            tx.commit().await?;
            Ok((registrations, keys))
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
            let (provider, subject, handle) = match claim.operator {
                Some(o) => (Some(&o.provider), Some(&o.subject), Some(&o.handle)),
                None => (None, None, None),
            };
            // Conditional on still being unclaimed, besides the row lock.
            let changed = tx
                .execute(
                    "UPDATE registrations SET claimed_at = $2, subject = $3, operator_provider = $4,
                     operator_subject = $5, operator_handle = $6 WHERE id = $1 AND claimed_at IS NULL",
                    &[
                        &claim.registration_id,
                        &claim.now,
                        &claim.subject,
                        &provider,
                        &subject,
                        &handle,
                    ],
                )
                .await?;
            if changed == 0 {
                return Ok(ClaimOutcome::AlreadyClaimed);
            }
            let operator = claim.operator.map(crate::store::Operator::header);
            if let Some(hash) = &claim.new_hash {
                tx.execute(
                    "UPDATE keys SET hash = $2, previous_hash = NULL, previous_expires_at = NULL
                     WHERE id = $1 AND revoked_at IS NULL",
                    &[&registration.key_id, &hash.0.as_slice()],
                )
                .await?;
            }
            let row = tx
                .query_opt(
                    &format!(
                        "UPDATE keys SET tier = $2, scopes = $3, operator = $4, updated_at = {DB_NOW_MS}
                         WHERE id = $1 AND revoked_at IS NULL
                         RETURNING {KEY_COLUMNS}"
                    ),
                    &[&registration.key_id, &claim.tier, &scopes, &operator],
                )
                .await?;
            let Some(row) = row else {
                return Ok(ClaimOutcome::KeyRevoked);
            };
            let key = rows::key(&row)?;
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
            let (client, connection) = self.config.connect(self.tls.clone()).await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(error = %describe(&error), "PostgreSQL connection ended");
                }
            });
            Ok::<_, tokio_postgres::Error>(client)
        };
        let what = format!("cannot connect to PostgreSQL ({})", self.tls.summary());
        bounded(self.connect_timeout, &what, connect).await
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
                migrations::migrate(&mut client, &self.schema, &self.quoted_schema).await?;
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
mod tests;
