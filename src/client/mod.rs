//! The agency side: connect, upload bets in batches, declare readiness, receive winners.
//!
//! [`Connection`] speaks the protocol on one socket; [`run`] is the whole agency session the
//! `lottery-client` binary performs. The agency file is read on a blocking thread and handed over
//! in ready-made batches through a small channel, so reading overlaps sending and memory holds a
//! few batches, never the file (see `reader.rs`).
//!
//! Every wait on the central has a deadline (`CLI_READ_TIMEOUT`): the TCP connection, `Welcome`,
//! each acknowledgement, each send and flush, and — while the agency waits for the draw — the
//! `Pong` to the `Ping` it sends every [`PING_EVERY`]. A missed deadline is a broken connection:
//! reconnect with jittered backoff, to the next central of the list when there are several, and
//! resume from the new `Welcome`.
//!
//! # Layout
//! - `connection.rs`: [`Connection`] (the session with the central, its deadlines, connecting
//!   with retries, [`PING_EVERY`]) and [`ping`];
//! - `failover.rs`: which of `CLI_SERVER_ADDRESS`'s centrals the next attempt goes to (round
//!   robin after a transient failure) and the backoff between attempts;
//! - `upload.rs`: [`run`], reading and batching the file, the pipelined upload, resuming;
//! - `reader.rs`: the agency-file reader and `--check`; `pacer.rs`: `loop.period`;
//!   `progress.rs`: the upload's progress lines and bar;
//! - `error.rs`: [`ClientError`], and which errors a reconnect may cure.

mod connection;
mod error;
mod failover;
mod pacer;
mod progress;
mod reader;
mod upload;

pub use connection::{Connection, PING_EVERY, ping};
pub use error::ClientError;
pub use reader::{CHECK_REPORTED_ROWS, CheckReport, Whole, check_file, read_batches};
pub use upload::{Outcome, run, run_with_progress};
