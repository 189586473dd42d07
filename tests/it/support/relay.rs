//! A TCP relay to a real server that a test can break and mend: it stands in for a
//! database or upstream that restarts (every connection reset, new ones refused) or
//! is partitioned away (connections held open, nothing delivered either way).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

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
}

impl Relay {
    /// Relays to `target` (`host:port`) until dropped.
    pub async fn start(target: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(AtomicU8::new(UP));
        let (breaks, _) = watch::channel(0u64);
        let target = target.to_owned();
        let (shared, notices) = (state.clone(), breaks.clone());
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
                let (target, state) = (target.clone(), shared.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    relay(client, server, &mut broken, &state).await;
                });
            }
        });
        Relay {
            port,
            state,
            breaks,
        }
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
    /// outlasting TCP's patience).
    pub fn restore(&self) {
        self.state.store(UP, Ordering::SeqCst);
        self.breaks.send_modify(|g| *g += 1);
    }
}

/// Copies both ways until either side closes or the relay breaks; a stall keeps
/// both sockets open, silent, until the next change.
async fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    broken: &mut watch::Receiver<u64>,
    state: &AtomicU8,
) {
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        _ = broken.changed() => {}
    }
    if state.load(Ordering::SeqCst) == STALLED {
        let _ = broken.changed().await;
    }
    // Dropping both ends with data unread makes the kernel send RST.
    let _ = client.set_zero_linger();
    let _ = server.set_zero_linger();
}
