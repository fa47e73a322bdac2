//! A loopback TCP proxy between agencies and a central: a stable address across central
//! restarts, and a way to lose one reply on purpose.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use lottery::protocol::{ClientCodec, ServerCodec, ServerMessage};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

type Cut = Box<dyn FnMut(&ServerMessage) -> bool + Send>;

#[derive(Default)]
struct State {
    backend: Option<SocketAddr>,
    cut: Option<Cut>,
    cuts: usize,
}

pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, shared.clone()));
            }
        });
        Self { addr, state, task }
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

    /// Replies cut so far.
    pub fn cuts(&self) -> usize {
        self.state.lock().unwrap().cuts
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, state: Arc<Mutex<State>>) {
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
    while let Some(Ok(reply)) = replies.next().await {
        let cut = {
            let mut state = state.lock().unwrap();
            let cut = state.cut.as_mut().is_some_and(|cut| cut(&reply));
            if cut {
                state.cut = None;
                state.cuts += 1;
            }
            cut
        };
        if cut || to_client.send(reply).await.is_err() {
            break;
        }
    }
    upstream.abort();
}
