//! Noticing commits by other processes (the operator's CLI) to the SQLite file.
//!
//! SQLite has no `NOTIFY`; what it has is `PRAGMA data_version`, a number local to
//! one connection that changes whenever *another* connection has committed to the
//! file since the connection last looked. [`watch_forever`] keeps a connection of its
//! own, on a thread of its own, reads the number every [`WATCH_EVERY`] and announces
//! a change as a [`Notice::Resync`], which the follower answers with the same resync
//! as its timer. The read touches the WAL index in shared memory, not the disk, and
//! never runs on the runtime's workers nor on the store thread that writes.
//!
//! Commits by this process's own store connection count as another connection's
//! too: they cause a resync the follower did not need (harmless, and no more than
//! one per [`WATCH_EVERY`], since announcements coalesce in a channel of one).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::mpsc;

use crate::store::Notice;

/// How often the file's data version is read: the bound on how long a revocation
/// from the CLI takes to reach a running proxy (beside the resync itself).
pub(super) const WATCH_EVERY: Duration = Duration::from_millis(250);

/// Room for announcements not yet taken: one, so that a burst of commits while the
/// follower resyncs makes one more resync, not one per commit.
pub(super) const NOTICE_CAPACITY: usize = 1;

/// Watches the file at `path` until the receiver of `notices` goes. Blocking: run it
/// on a thread of its own.
///
/// A [`Notice::Resync`] is sent after every (re)opening of the watching connection
/// (data versions of different connections cannot be compared, so whatever
/// happened in between is found by a resync), and after every change seen.
pub(super) fn watch_forever(path: &Path, notices: &mpsc::Sender<Notice>) {
    let mut watching: Option<(Connection, Option<i64>)> = None;
    let mut failing = false;
    while !notices.is_closed() {
        let (connection, seen) = match &mut watching {
            Some(watching) => watching,
            None => match open(path) {
                Ok(connection) => watching.insert((connection, None)),
                Err(error) => {
                    report(&mut failing, &error);
                    std::thread::sleep(WATCH_EVERY);
                    continue;
                }
            },
        };
        match data_version(connection) {
            Ok(version) => {
                failing = false;
                if *seen != Some(version) {
                    *seen = Some(version);
                    match notices.try_send(Notice::Resync) {
                        // Full: a resync is owed already, and covers this change.
                        Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
            }
            Err(error) => {
                report(&mut failing, &error);
                watching = None;
            }
        }
        std::thread::sleep(WATCH_EVERY);
    }
}

/// The watching connection: read-only, it never writes the file.
fn open(path: &Path) -> Result<Connection, rusqlite::Error> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(Duration::from_secs(1))?;
    Ok(connection)
}

fn data_version(connection: &Connection) -> Result<i64, rusqlite::Error> {
    connection.query_row("PRAGMA data_version", [], |row| row.get(0))
}

/// Logs a failure once until the watch works again (the timer's resync goes on).
fn report(failing: &mut bool, error: &rusqlite::Error) {
    if !*failing {
        tracing::warn!(%error, "cannot watch the SQLite file for changes by other processes; the periodic resync still runs");
        *failing = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_connection_s_commit_changes_the_data_version_and_a_read_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        let watcher = open(&path).unwrap();
        let first = data_version(&watcher).unwrap();
        assert_eq!(data_version(&watcher).unwrap(), first);
        writer
            .query_row("SELECT count(*) FROM t", [], |_| Ok(()))
            .unwrap();
        assert_eq!(
            data_version(&watcher).unwrap(),
            first,
            "a read is no change"
        );
        writer.execute("INSERT INTO t VALUES (1)", []).unwrap();
        assert_ne!(data_version(&watcher).unwrap(), first, "a commit is");
    }

    #[test]
    fn a_change_is_announced_and_the_watch_ends_with_its_receiver() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        let (notices, mut received) = mpsc::channel(NOTICE_CAPACITY);
        let watcher = std::thread::spawn(move || watch_forever(&path, &notices));
        // The first look owes a resync.
        assert_eq!(received.blocking_recv(), Some(Notice::Resync));
        writer.execute("INSERT INTO t VALUES (1)", []).unwrap();
        assert_eq!(received.blocking_recv(), Some(Notice::Resync));
        drop(received);
        watcher.join().unwrap();
    }
}
