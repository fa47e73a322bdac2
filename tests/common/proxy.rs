//! A loopback TCP proxy between agencies and a central: a stable address across central
//! restarts, a way to lose one reply on purpose, and one to make the proxy die at that moment
//! (a central lost to its agencies: open connections cut, new ones refused).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use lottery::protocol::{ClientCodec, ServerCodec, ServerMessage};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

type Cut = Box<dyn FnMut(&ServerMessage) -> bool + Send>;

#[derive(Default)]
struct State {
    backend: Option<SocketAddr>,
    cut: Option<Cut>,
    cuts: usize,
    /// The cut takes the whole proxy down (see [`Proxy::die_when`]).
    die_on_cut: bool,
    connections: usize,
}

pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
    down: CancellationToken,
}

impl Proxy {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let down = CancellationToken::new();
        let stop = down.clone();
        let task = tokio::spawn(async move {
            // Down: the listener is dropped with this task's loop, so new connections are refused.
            while let Some(Ok((client, _))) = stop.run_until_cancelled(listener.accept()).await {
                shared.lock().unwrap().connections += 1;
                tokio::spawn(relay(client, shared.clone(), stop.clone()));
            }
        });
        Self { addr, state, task, down }
    }

    /// Where new connections go from now on (connections already open keep theirs).
    pub fn set_backend(&self, backend: SocketAddr) {
        self.state.lock().unwrap().backend = Some(backend);
    }

    /// The first central reply for which `cut` returns true is not delivered: the proxy closes
    /// that connection instead, as a network failure would after the central acted.
    pub fn cut_reply_when(&self, cut: impl FnMut(&ServerMessage) -> bool + Send + 'static) {
        self.state.lock().unwrap().cut = Some(Box::new(cut));
    }

    /// As [`Proxy::cut_reply_when`], and at that moment the whole proxy goes down: every
    /// connection through it is closed and new ones are refused, as when a central's machine dies.
    pub fn die_when(&self, cut: impl FnMut(&ServerMessage) -> bool + Send + 'static) {
        let mut state = self.state.lock().unwrap();
        state.cut = Some(Box::new(cut));
        state.die_on_cut = true;
    }

    /// Replies cut so far.
    pub fn cuts(&self) -> usize {
        self.state.lock().unwrap().cuts
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// Whether the proxy went down (see [`Proxy::die_when`]).
    pub fn is_down(&self) -> bool {
        self.down.is_cancelled()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down.cancel();
        self.task.abort();
    }
}

async fn relay(client: TcpStream, state: Arc<Mutex<State>>, down: CancellationToken) {
    let Some(backend) = state.lock().unwrap().backend else { return };
    // A central that is down (being restarted) looks like a dropped connection to the agency.
    let Ok(server) = TcpStream::connect(backend).await else { return };
    let (mut client_read, client_write) = client.into_split();
    let (server_read, mut server_write) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut replies = FramedRead::new(server_read, ClientCodec::new());
    let mut to_client = FramedWrite::new(client_write, ServerCodec::new());
    while let Some(Some(Ok(reply))) = down.run_until_cancelled(replies.next()).await {
        let cut = {
            let mut state = state.lock().unwrap();
            let cut = state.cut.as_mut().is_some_and(|cut| cut(&reply));
            if cut {
                state.cut = None;
                state.cuts += 1;
                if state.die_on_cut {
                    down.cancel();
                }
            }
            cut
        };
        if cut || to_client.send(reply).await.is_err() {
            break;
        }
    }
    upstream.abort();
}
