//! The ready listener: a connection of its own that `LISTEN`s on the ready channel and tells
//! the central (through its ready inbox, see `storage/ready.rs`) of each agency that became ready on any
//! central, reconnecting when it breaks.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::READY_CHANNEL;
use super::connect::{Shared, describe};
use crate::domain::AgencyId;

/// Listens for `lottery_ready` on a connection of its own, reconnecting when it breaks: each
/// notification puts the agency it names into the ready inbox, and every (re)connection, after
/// which one may have been missed, marks the inbox missed.
pub(super) async fn listen(shared: Arc<Shared>, stop: CancellationToken) {
    let mut delay = Duration::from_millis(100);
    let mut failing = false;
    loop {
        let session = async {
            let (client, mut connection) = shared.hosts.connect().await?;
            let messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            let mut messages = std::pin::pin!(messages);
            let statement = format!("LISTEN {READY_CHANNEL}");
            let listen = client.batch_execute(&statement);
            let mut listen = std::pin::pin!(listen);
            let mut listening = false;
            loop {
                tokio::select! {
                    done = &mut listen, if !listening => {
                        done?;
                        listening = true;
                        if failing {
                            info!(action = "database_listen", result = "success", target = %shared.target);
                        }
                        failing = false;
                        delay = Duration::from_millis(100);
                        shared.ready.missed();
                    }
                    message = messages.next() => match message {
                        Some(Ok(AsyncMessage::Notification(note))) => {
                            let agency = note.payload().parse().ok().and_then(|a| AgencyId::new(a).ok());
                            match agency {
                                Some(agency) => shared.ready.ready(agency),
                                None => shared.ready.missed(),
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(e),
                        None => return Ok::<(), tokio_postgres::Error>(()),
                    },
                }
            }
        };
        let ended = tokio::select! {
            () = stop.cancelled() => return,
            ended = session => ended,
        };
        if !failing {
            let error =
                ended.err().map_or_else(|| "the connection closed".to_owned(), |e| describe(&e));
            warn!(action = "database_listen", result = "fail", target = %shared.target, error = %error, retry = "every agency's readiness is also re-read every second");
            failing = true;
        }
        if stop.run_until_cancelled(tokio::time::sleep(delay)).await.is_none() {
            return;
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
