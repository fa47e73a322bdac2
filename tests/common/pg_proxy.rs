//! A loopback proxy between a central and PostgreSQL that loses one group commit's `COMMIT`
//! result: once armed, on the first connection that has just ended a `COPY`, it either forwards
//! the `COMMIT` and then cuts the connection (the transaction committed; the central never hears
//! so) or cuts it without forwarding (the server rolls back). Either way the central's `COMMIT`
//! fails with a broken connection: the group is in doubt. Or, holding a `COPY`: the first
//! `CopyData` of a connection is held back (the group's transaction waits inside its `COPY`)
//! until the test releases it, then forwarded. The central must connect with
//! `sslmode=disable` (the proxy reads the frontend's messages).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What happens to the `COMMIT` the proxy catches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lose {
    /// Forwarded, then the connection cut before its answer: committed.
    Answer,
    /// Not forwarded, the connection cut: rolled back.
    Commit,
}

pub struct PgProxy {
    pub port: u16,
    armed: Arc<Mutex<Option<Lose>>>,
    /// Whether the next `CopyData` is held.
    hold: Arc<Mutex<bool>>,
    release: Arc<tokio::sync::Notify>,
    /// Set once the proxy caught a `COMMIT`, or holds a `COPY`.
    pub caught: Arc<tokio::sync::Notify>,
}

impl PgProxy {
    /// A proxy on a free loopback port to the server on `backend`.
    pub async fn start(backend: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(Mutex::new(None));
        let hold = Arc::new(Mutex::new(false));
        let release = Arc::new(tokio::sync::Notify::new());
        let caught = Arc::new(tokio::sync::Notify::new());
        let traps = Traps { armed: armed.clone(), hold: hold.clone(), release: release.clone() };
        let notify = caught.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(backend).await else { continue };
                tokio::spawn(relay(client, server, traps.clone(), notify.clone()));
            }
        });
        Self { port, armed, hold, release, caught }
    }

    /// The next `CopyData` (of any connection) is held until [`release`](Self::release) (once).
    pub fn hold_copy(&self) {
        *self.hold.lock().unwrap() = true;
    }

    /// Forwards the held `CopyData`, and everything after it.
    pub fn release(&self) {
        self.release.notify_one();
    }

    /// The next group commit's `COMMIT` is lost as `lose` says (once).
    pub fn arm(&self, lose: Lose) {
        *self.armed.lock().unwrap() = Some(lose);
    }
}

/// What a connection's relay looks for.
#[derive(Clone)]
struct Traps {
    armed: Arc<Mutex<Option<Lose>>>,
    hold: Arc<Mutex<bool>>,
    release: Arc<tokio::sync::Notify>,
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    traps: Traps,
    caught: Arc<tokio::sync::Notify>,
) {
    let Traps { armed, hold, release } = traps;
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    // Set before a caught `COMMIT` goes on: nothing the server says after it reaches the central
    // (each chunk is checked after it is read, so its answer never is).
    let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = cut.clone();
    let back = tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match from_server.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if stop.load(std::sync::atomic::Ordering::SeqCst)
                || to_client.write_all(&buffer[..n]).await.is_err()
            {
                break;
            }
        }
    });
    // The start-up message has no type byte: its length, then the rest.
    let mut length = [0u8; 4];
    if from_client.read_exact(&mut length).await.is_err() {
        return back.abort();
    }
    let mut body = vec![0u8; (u32::from_be_bytes(length) as usize).saturating_sub(4)];
    if from_client.read_exact(&mut body).await.is_err()
        || to_server.write_all(&length).await.is_err()
        || to_server.write_all(&body).await.is_err()
    {
        return back.abort();
    }
    let mut copied = false;
    loop {
        let mut head = [0u8; 5];
        if from_client.read_exact(&mut head).await.is_err() {
            break;
        }
        let length = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; length.saturating_sub(4)];
        if from_client.read_exact(&mut body).await.is_err() {
            break;
        }
        let (kind, commit) = (head[0], body.starts_with(b"COMMIT\0"));
        if kind == b'd' && std::mem::take(&mut *hold.lock().unwrap()) {
            caught.notify_one();
            release.notified().await;
        }
        let lose =
            if kind == b'Q' && commit && copied { armed.lock().unwrap().take() } else { None };
        copied = match kind {
            b'c' => true,
            b'Q' => false,
            _ => copied,
        };
        if lose.is_some() {
            cut.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if lose != Some(Lose::Commit)
            && (to_server.write_all(&head).await.is_err()
                || to_server.write_all(&body).await.is_err())
        {
            break;
        }
        if lose.is_some() {
            caught.notify_one();
            break;
        }
    }
    // Cut both ways: the central sees its connection break.
    back.abort();
}
