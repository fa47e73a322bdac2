//! The HTTP listener's accept loop and one connection: a request read under a deadline and a
//! size bound, one response written under a deadline, then the connection is closed. At most
//! [`MAX_CONNECTIONS`] are served at once; past that a connection is answered `503` without
//! waiting for its request. Nothing here waits on the store or the agencies' connections: a
//! slow or silent HTTP client holds only its own task, for [`REQUEST_TIMEOUT`] at most.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::Served;
use super::routes::{Response, respond};

/// Most HTTP connections served at once.
pub(super) const MAX_CONNECTIONS: usize = 32;
/// Most bytes of a request's head (request line and headers); a request has no body here.
pub(super) const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its whole request head.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a response may take to be written to a client that reads slowly or not at all.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves HTTP on `listener` until `token` is cancelled, each connection a tracked task.
pub(super) async fn accept_loop(
    listener: TcpListener,
    served: Arc<Served>,
    tracker: TaskTracker,
    token: CancellationToken,
) {
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            () = token.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                debug!(action = "http", result = "fail", error = %e);
                // Like the agencies' accept loop: out of file descriptors must not spin a core.
                if !super::super::accept::pause_after_accept_error(&e, &token).await {
                    return;
                }
                continue;
            }
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            // Full: a short refusal, written only if the socket takes it at once.
            let _ = stream.try_write(&Response::busy().head_and_body(false));
            continue;
        };
        let (served, token) = (served.clone(), token.clone());
        let connection = Connection { _place: place, stream };
        tracker.spawn(async move {
            token.run_until_cancelled(answer(connection, &served)).await;
        });
    }
}

/// One connection and its place. Fields drop in order: the place is free again before the
/// client sees the connection close, so a client that read its whole answer finds it free.
struct Connection {
    _place: OwnedSemaphorePermit,
    stream: TcpStream,
}

/// Reads one request from the connection and writes its response.
async fn answer(mut connection: Connection, served: &Served) {
    let stream = &mut connection.stream;
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut chunk = [0; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() >= MAX_REQUEST {
                return Some(false);
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        Some(true)
    });
    let response = match read.await {
        Ok(Some(true)) => respond(&head, served),
        Ok(Some(false)) => Response::text(431, "request header fields too large\n"),
        // Gone, or too slow: nothing to answer.
        Ok(None) | Err(_) => return,
    };
    let head_only = head.starts_with(b"HEAD ");
    let bytes = response.head_and_body(head_only);
    let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bytes)).await;
}
