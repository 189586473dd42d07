//! The Redis side of the fleet-wide limits: one connection (a single server, or a
//! cluster), and the three scripts every replica runs against it.
//!
//! - [`LEASE`] takes up to `n` requests from every window of a subject at once, or
//!   gives `n` back, in one atomic step: GCRA on Redis's own clock (`TIME`), so the
//!   replicas' clocks never matter, and the windows of one subject are one slot in
//!   a cluster (their keys share the subject's hash tag).
//! - [`HEARTBEAT`] keeps this replica in the set of live ones and counts them.
//! - [`QUOTA`] adds a batch of quota usage and answers the fleet's total.
//!
//! Scripts are sent by `EVALSHA` and loaded once per server (again only after a
//! `NOSCRIPT`, when Redis restarted).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};

use super::super::gcra::Rate;

/// Takes (or gives back) requests from a subject's windows.
///
/// `KEYS`: one per rate window. `ARGV[1]`: requests wanted (`> 0`) or given back
/// (`< 0`); `ARGV[2]`: live replicas; then per window its interval and tolerance in
/// microseconds. The grant is at most `n`, at most what every window has left,
/// and at most that divided among twice the live replicas, but at least one while
/// any is left: far from the limit a replica gets a lease of many, near it one at a
/// time. Answers the grant, then per window how far its TAT is ahead of now (µs).
const LEASE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local replicas = math.max(1, tonumber(ARGV[2]))
local tats = {}
local free = math.huge
for i = 1, #KEYS do
  local interval = tonumber(ARGV[1 + 2 * i])
  local tolerance = tonumber(ARGV[2 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  if tat < now then tat = now end
  tats[i] = tat
  local ahead = tat - now
  local left = 0
  if ahead <= tolerance then left = math.floor((tolerance - ahead) / interval) + 1 end
  if left < free then free = left end
end
local grant = n
if n > 0 then
  grant = 0
  if free > 0 then
    grant = math.max(1, math.min(n, math.floor(free / (2 * replicas))))
  end
end
local out = {grant}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[1 + 2 * i])
  local tat = tats[i] + grant * interval
  if tat <= now then
    redis.call('DEL', KEYS[i])
    out[i + 1] = 0
  else
    if grant ~= 0 then
      redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
    end
    out[i + 1] = tat - now
  end
end
return out
";

/// Notes this replica alive (or gone) and counts the live ones.
///
/// `KEYS[1]`: the set of replicas. `ARGV[1]`: this replica's id; `ARGV[2]`: the
/// heartbeat period in ms; `ARGV[3]`: `1` when it leaves. A replica not heard of
/// for three periods is no longer counted.
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local period = tonumber(ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 3 * period)
redis.call('PEXPIRE', KEYS[1], 10 * period)
return redis.call('ZCARD', KEYS[1])
";

/// Adds `ARGV[1]` to a quota counter that expires at unix time `ARGV[2]`, and
/// answers its total.
const QUOTA: &str = r"
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
return total
";

/// Why Redis did not answer.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// It answered with an error, or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// It did not answer within the timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The cluster is not connected yet.
    #[error("redis cluster: not connected yet")]
    NotConnected,
    /// The answer had a shape the script never returns.
    #[error("redis: unexpected answer to the lease script")]
    Malformed,
}

/// A connection: to one server (reconnecting by itself), or to a cluster.
#[derive(Clone)]
pub enum Connection {
    /// One server (or a managed endpoint in front of several).
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Connection::Single(_) => "Connection::Single",
            Connection::Cluster(_) => "Connection::Cluster",
        })
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// Where to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// `redis://`, `rediss://` or `redis+unix://` URLs: one, or a cluster's seed
    /// nodes. They may hold a password, so they are never shown.
    pub urls: Vec<String>,
    /// Connect to a Redis Cluster.
    pub cluster: bool,
    /// CAs (PEM) that sign the server's certificate, besides the system's roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("urls", &format_args!("({} not shown)", self.urls.len()))
            .field("cluster", &self.cluster)
            .field("ca_pem", &self.ca_pem.is_some())
            .finish()
    }
}

impl Target {
    /// Checks the URLs and the CA without connecting: what `check` reports.
    pub fn validate(&self) -> Result<(), String> {
        for url in &self.urls {
            redis::Client::open(url.as_str())
                .map_err(|_| {
                    "not a Redis URL: write `redis://host:6379/0`, `rediss://host:6380` (TLS) or `redis+unix:///path/to/socket`".to_owned()
                })?;
        }
        Ok(())
    }

    /// Opens the connection to one server. It connects on first use and
    /// reconnects by itself; a cluster is connected by [`Target::connect_cluster`].
    pub fn single(&self, timeout: Duration) -> Result<Connection, BackendError> {
        let url = self.urls.first().map_or("", String::as_str);
        let client = match &self.ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            )?,
            None => redis::Client::open(url)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        Ok(Connection::Single(ConnectionManager::new_lazy_with_config(
            client, config,
        )?))
    }

    /// Connects to a cluster through its seed nodes.
    pub async fn connect_cluster(&self, timeout: Duration) -> Result<Connection, BackendError> {
        let mut builder = redis::cluster::ClusterClientBuilder::new(self.urls.clone())
            .connection_timeout(timeout.max(Duration::from_millis(200)))
            .response_timeout(timeout);
        if let Some(pem) = &self.ca_pem {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            });
        }
        let client = builder.build()?;
        Ok(Connection::Cluster(client.get_async_connection().await?))
    }
}

/// A subject's answer from [`Scripts::lease`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Answer {
    /// Requests granted (0 when a window is empty; negative for a give-back).
    pub granted: i64,
    /// Per window, how far its TAT is ahead of Redis's now, in microseconds.
    pub ahead_us: [u64; super::super::MAX_WINDOWS],
}

/// The scripts, hashed once.
#[derive(Debug)]
pub struct Scripts {
    lease: Script,
    heartbeat: Script,
    quota: Script,
}

impl Default for Scripts {
    fn default() -> Scripts {
        Scripts {
            lease: Script::new(LEASE),
            heartbeat: Script::new(HEARTBEAT),
            quota: Script::new(QUOTA),
        }
    }
}

/// Microseconds, at least 1: the unit the scripts count in.
fn micros(nanos: u64) -> u64 {
    nanos.div_ceil(1000).max(1)
}

impl Scripts {
    /// Takes up to `n` requests from the windows `keys` (whose rates are `rates`),
    /// or gives `-n` back.
    pub async fn lease(
        &self,
        conn: &mut Connection,
        keys: &[String],
        rates: &[Rate],
        n: i64,
        replicas: u32,
    ) -> Result<Answer, BackendError> {
        let mut invocation = self.lease.prepare_invoke();
        for key in keys {
            invocation.key(key.as_str());
        }
        invocation.arg(n).arg(replicas);
        for rate in rates {
            invocation
                .arg(micros(rate.interval_ns()))
                .arg(rate.tolerance_ns() / 1000);
        }
        let values: Vec<i64> = invocation.invoke_async(conn).await?;
        let (&granted, ahead) = values.split_first().ok_or(BackendError::Malformed)?;
        if ahead.len() != keys.len() {
            return Err(BackendError::Malformed);
        }
        let mut answer = Answer {
            granted,
            ..Answer::default()
        };
        for (slot, &us) in answer.ahead_us.iter_mut().zip(ahead) {
            *slot = u64::try_from(us).unwrap_or(0);
        }
        Ok(answer)
    }

    /// Notes replica `id` alive (or leaving) in `set`; answers how many are live.
    pub async fn heartbeat(
        &self,
        conn: &mut Connection,
        set: &str,
        id: &str,
        period: Duration,
        leaving: bool,
    ) -> Result<u32, BackendError> {
        let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
        let live: i64 = self
            .heartbeat
            .key(set)
            .arg(id)
            .arg(period_ms)
            .arg(if leaving { "1" } else { "0" })
            .invoke_async(conn)
            .await?;
        Ok(u32::try_from(live).unwrap_or(u32::MAX))
    }

    /// Adds `delta` to the quota counter `key`, kept until unix time `expire_at`;
    /// answers the fleet's total.
    pub async fn quota(
        &self,
        conn: &mut Connection,
        key: &str,
        delta: i64,
        expire_at: i64,
    ) -> Result<i64, BackendError> {
        Ok(self
            .quota
            .key(key)
            .arg(delta)
            .arg(expire_at)
            .invoke_async(conn)
            .await?)
    }
}
