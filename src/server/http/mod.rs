//! The central's one HTTP listener (`HTTP_ADDR`): the status page, `/status.json`, `/healthz`,
//! `/readyz` and `/metrics`.
//!
//! # Layout
//! - `connection.rs`: the accept loop and one connection, bounded (request size, deadlines,
//!   connections at once);
//! - `routes.rs`: the routes and their responses;
//! - `board.rs`: [`Board`], the status last published and whether the central can store,
//!   rebuilt once a second by a task of its own;
//! - `status.rs`: the status's model (what `/status.json` holds), built from the store's record;
//! - `page.html`: the page, style and script inline, served from the binary.

mod board;
mod connection;
mod routes;
mod status;

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use board::{Board, Sources};

/// What the routes serve from.
pub(super) struct Served {
    board: Arc<Board>,
    metrics: Option<PrometheusHandle>,
}

/// Serves `board` and the `metrics` recorder's rendering on `listener` until `token` is
/// cancelled.
pub(super) async fn serve(
    listener: TcpListener,
    board: Arc<Board>,
    metrics: Option<PrometheusHandle>,
    tracker: TaskTracker,
    token: CancellationToken,
) {
    let served = Arc::new(Served { board, metrics });
    connection::accept_loop(listener, served, tracker, token).await;
}
