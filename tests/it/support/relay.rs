//! A TCP relay to a real server that a test can break and mend: it stands in for a
//! database or upstream that restarts (every connection reset, new ones refused),
//! is partitioned away (connections held open, nothing delivered either way), or
//! answers slowly (every chunk held for a while before it is passed on).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const UP: u8 = 0;
const DOWN: u8 = 1;
const STALLED: u8 = 2;

/// A relay on `127.0.0.1:port` to a target address.
pub struct Relay {
    /// The relay's port.
    pub port: u16,
    state: Arc<AtomicU8>,
    /// Bumped on every break: the relayed connections end (reset) or freeze.
    breaks: watch::Sender<u64>,
    /// How long each chunk is held before it is passed on (ns; 0: at once).
    delay: Arc<AtomicU64>,
}

impl Relay {
    /// Relays to `target` (`host:port`) until dropped.
    pub async fn start(target: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(AtomicU8::new(UP));
        let (breaks, _) = watch::channel(0u64);
        let delay = Arc::new(AtomicU64::new(0));
        let target = target.to_owned();
        let (shared, notices, held) = (state.clone(), breaks.clone(), delay.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut broken = notices.subscribe();
                match shared.load(Ordering::SeqCst) {
                    DOWN => continue, // closed at once: the connection is refused
                    STALLED => {
                        // Accepted, then nothing: a peer behind a partition.
                        tokio::spawn(async move {
                            let _held = client;
                            let _ = broken.changed().await;
                        });
                        continue;
                    }
                    _ => {}
                }
                let (target, state, delay) = (target.clone(), shared.clone(), held.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    relay(client, server, &mut broken, &state, &delay).await;
                });
            }
        });
        Relay {
            port,
            state,
            breaks,
            delay,
        }
    }

    /// Holds every chunk, either way, for `by` before passing it on, on the
    /// connections open now and on new ones: a server (or a network) that answers
    /// slowly. [`Relay::restore`] ends it without breaking a connection.
    pub fn delay(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap();
        self.delay.store(nanos, Ordering::SeqCst);
    }

    /// Resets every relayed connection and refuses new ones: a restarting server.
    pub fn cut(&self) {
        self.state.store(DOWN, Ordering::SeqCst);
        self.breaks.send_modify(|g| *g += 1);
    }

    /// Freezes every relayed connection and accepts new ones without answering: a
    /// network partition. Nothing is delivered until [`Relay::restore`].
    pub fn stall(&self) {
        self.state.store(STALLED, Ordering::SeqCst);
        self.breaks.send_modify(|g| *g += 1);
    }

    /// Relays new connections again (frozen ones stay dead, as after a partition
    /// outlasting TCP's patience), and passes chunks on at once again (slowed
    /// connections carry on as they were).
    pub fn restore(&self) {
        self.delay.store(0, Ordering::SeqCst);
        if self.state.swap(UP, Ordering::SeqCst) != UP {
            self.breaks.send_modify(|g| *g += 1);
        }
    }
}

/// Copies both ways until either side closes or the relay breaks; a stall keeps
/// both sockets open, silent, until the next change.
async fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    broken: &mut watch::Receiver<u64>,
    state: &AtomicU8,
    delay: &AtomicU64,
) {
    {
        let (client_in, client_out) = client.split();
        let (server_in, server_out) = server.split();
        let both_ways = async {
            tokio::join!(
                pass_on(client_in, server_out, delay),
                pass_on(server_in, client_out, delay)
            )
        };
        tokio::select! {
            _ = both_ways => return,
            _ = broken.changed() => {}
        }
    }
    if state.load(Ordering::SeqCst) == STALLED {
        let _ = broken.changed().await;
    }
    // Dropping both ends with data unread makes the kernel send RST.
    let _ = client.set_zero_linger();
    let _ = server.set_zero_linger();
}

/// Copies `from` to `to`, holding each chunk for the relay's delay, until `from`
/// ends or either side fails; then closes `to` for writing.
async fn pass_on(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    delay: &AtomicU64,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let held = delay.load(Ordering::SeqCst);
        if held > 0 {
            tokio::time::sleep(Duration::from_nanos(held)).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
