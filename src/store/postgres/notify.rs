//! Change announcements between replicas: `NOTIFY` on write, `LISTEN` to follow.
//!
//! A write that changes a key runs [`announce`] in its own transaction, so the
//! announcement is delivered on commit only. [`listen_forever`] keeps a dedicated
//! `LISTEN` connection and turns what it hears into [`Notice`]s, with a
//! [`Notice::Resync`] after every (re)connection, since announcements made while
//! it was down are lost.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Config, GenericClient};

use super::failure::{bounded, describe};
use super::tls::Connector;
use crate::store::{Notice, StoreError};

/// Reconnection backoff of the `LISTEN` connection.
const LISTEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How often the idle `LISTEN` connection proves it is still alive, so that a
/// silently dead one (a network partition) is noticed and remade.
const LISTEN_HEARTBEAT: Duration = Duration::from_secs(30);

/// Room for announcements not yet taken by the receiver; past it they are dropped and
/// a [`Notice::Resync`] follows instead.
pub(super) const NOTICE_CAPACITY: usize = 1024;

/// PostgreSQL's identifier length limit (`NAMEDATALEN - 1`).
const MAX_IDENTIFIER_BYTES: usize = 63;

/// The announcement of a token revocation (key ids never take this form).
pub(super) const TOKEN_REVOKED: &str = "revoked-token";

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
pub(super) fn channel_of(schema: &str) -> String {
    truncate_bytes(&format!("authmd_keys_{schema}"), MAX_IDENTIFIER_BYTES).to_owned()
}

/// Keeps a `LISTEN` connection, reconnecting with backoff, until the receiver goes.
///
/// `config` is the store's connection settings (never formatted: it may hold a
/// password), `tls` makes its TLS handshakes, `connect_timeout` bounds each connection attempt and each heartbeat,
/// and `quoted_channel` is the store's channel, quoted for SQL.
pub(super) async fn listen_forever(
    config: Config,
    tls: Connector,
    connect_timeout: Duration,
    quoted_channel: String,
    notices: mpsc::Sender<Notice>,
) {
    let mut backoff = LISTEN_BACKOFF_MIN;
    loop {
        match listen_once(
            &config,
            &tls,
            connect_timeout,
            &quoted_channel,
            &notices,
            &mut backoff,
        )
        .await
        {
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
    config: &Config,
    tls: &Connector,
    connect_timeout: Duration,
    quoted_channel: &str,
    notices: &mpsc::Sender<Notice>,
    backoff: &mut Duration,
) -> Result<(), StoreError> {
    let connect = async {
        let (client, mut connection) = config.connect(tls.clone()).await?;
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
            .batch_execute(&format!("LISTEN {quoted_channel}"))
            .await?;
        Ok::<_, tokio_postgres::Error>((client, received))
    };
    let what = format!("cannot listen for changes ({})", tls.summary());
    let (client, mut received) = tokio::select! {
        connected = bounded(connect_timeout, &what, connect) => connected?,
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
                bounded(connect_timeout, "the LISTEN connection failed", ping).await?;
            }
            () = notices.closed() => return Ok(()),
        }
    }
}

/// Announces a changed key; delivered when the surrounding transaction commits.
pub(super) async fn announce(
    c: &impl GenericClient,
    channel: &str,
    key_id: &str,
) -> Result<(), tokio_postgres::Error> {
    c.execute("SELECT pg_notify($1, $2)", &[&channel, &key_id])
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_per_schema() {
        assert_eq!(channel_of("authmd"), "authmd_keys_authmd");
        let long = "s".repeat(63);
        assert_eq!(channel_of(&long).len(), MAX_IDENTIFIER_BYTES);
        assert_eq!(truncate_bytes("aé", 2), "a");
    }
}
