//! The central: [`run`] accepts agencies on a bound listener until its token is cancelled.
//!
//! # Layout
//! - `start.rs`: [`bind`], [`run`] (open the store, serve, shut down in order), [`export`] and
//!   [`verify`];
//! - `shared.rs`: `Shared`, the state every connection task shares (configuration, store,
//!   session registry, budgets, lottery);
//! - `listener.rs`: the accept loop and its refusals; `newcomers.rs`: the connections without
//!   `Hello` and the log throttle; `accept.rs`: what an accept loop does after an accept error;
//! - `handler.rs`: one connection's I/O loop under deadlines; `error.rs`: why a connection ends,
//!   and the one mapping of frame and storage errors to protocol codes;
//! - [`session`]: the connection's protocol state machine, without I/O;
//! - `replies.rs`: the replies owed to an agency, and each batch's acknowledgement;
//! - `registry.rs`: one session per agency (a newer connection fences the older one);
//! - `lottery.rs`: ready → barrier → draw → winners;
//! - `activity.rs`: which agencies have a session here, and when each was last heard from;
//! - `http/`: the HTTP listener (`HTTP_ADDR`): the status page, `/status.json`, `/healthz`,
//!   `/readyz` and `/metrics`;
//! - `metrics.rs`: the metrics and their recorder.

mod accept;
mod activity;
#[cfg(test)]
mod batch_oracle;
mod error;
mod handler;
mod http;
mod listener;
mod lottery;
mod metrics;
mod newcomers;
mod registry;
mod replies;
pub mod session;
mod shared;
mod start;

pub use start::{SHUTDOWN_GRACE, ServerError, bind, bind_http, export, run, run_with_http, verify};
