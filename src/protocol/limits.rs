//! The limits both sides share: frame and batch sizes, winners per frame, batches in flight.

/// Largest payload of one frame by default, either direction, checked before the payload is
/// buffered (the central's `LOTTERY_MAX_FRAME_BYTES` can raise it up to 64 KiB).
/// Every valid message fits: a `Batch` frame is smaller than the 8 kB its batch may take as `Bet`
/// frames (one header and tag instead of one per bet), and [`Winners`] are sent in chunks of
/// [`WINNERS_PER_FRAME`].
///
/// [`Winners`]: super::ServerMessage::Winners
pub const MAX_FRAME_LEN: usize = 8 * 1024;

/// Bytes of the frame header: a big-endian `u32` payload length.
pub const FRAME_HEADER_LEN: usize = 4;

/// Largest batch on the wire (the original exercise's 8 kB rule): every `Bet` frame of the batch
/// plus its `BetBatchEnd` frame, headers included.
pub const MAX_BATCH_BYTES: usize = 8192;

/// Most documents in one `Winners` frame: 500 documents of at most 10 digits stay under 6 kB.
pub const WINNERS_PER_FRAME: usize = 500;

/// Most batches one connection keeps in flight (sent, not yet acknowledged): the central reads
/// no further ahead, and an agency's `CLI_BATCH_WINDOW` may not be larger.
pub const MAX_BATCHES_IN_FLIGHT: usize = 32;

/// Bytes a `BetBatchEnd` frame takes at most, header included (its varint `seq` varies): the
/// header, a one-byte variant index and a nine-byte varint (a test holds it equal to bincode's).
pub const fn batch_end_frame_max_len() -> usize {
    FRAME_HEADER_LEN + 1 + 9
}

/// The largest frame any configuration accepts; bincode never reads or writes more.
pub const FRAME_LEN_CAP: usize = 64 * 1024;
