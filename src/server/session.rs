//! `Session`: one connection's protocol state machine, with no I/O.
//!
//! The handler reads a message, asks the session what it means ([`Session::on_message`]) and
//! carries out the [`Step`]: reply, store a batch, wait for the draw, or close. Everything that
//! depends only on the messages (order, limits, validation, authentication) lives here, where it
//! is unit-tested and fuzzed (`fuzz/fuzz_targets/session.rs`) without sockets or files.

use std::num::{NonZeroU32, NonZeroUsize};

use bytes::BytesMut;
use chrono::NaiveDate;

use crate::config::{AgencyTokens, ServerConfig};
use crate::domain::{AgencyId, BetBatch, CheckedBet, check_wire_bet};
use crate::protocol::{
    ClientMessage, ErrorCode, Inbound, MAX_BATCH_BYTES, PROTOCOL_VERSION, ReceivedBatch,
    ReceivedBet, RejectReason, ServerMessage, WireBet, WireDate, batch_end_frame_max_len,
};

/// What the central accepts from an agency.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Agencies are numbered 1..=agencies.
    pub agencies: NonZeroU32,
    /// Most bets in one batch.
    pub batch_max_bets: NonZeroUsize,
    /// When set, `Hello` must carry the agency's token.
    pub tokens: Option<AgencyTokens>,
}

impl Rules {
    /// The rules a central configured by `config` applies.
    pub fn from_config(config: &ServerConfig) -> Self {
        Self {
            agencies: config.agencies,
            batch_max_bets: config.batch_max_bets,
            tokens: config.agency_tokens.clone(),
        }
    }
}

/// What the handler must do about a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing yet (a bet joined the batch being received).
    Continue,
    /// Send this reply.
    Reply(ServerMessage),
    /// `Hello` accepted: take over the agency's session, then answer `Welcome`.
    Welcome(AgencyId),
    /// A whole, valid batch: store it, then acknowledge it.
    Store { agency: AgencyId, seq: u64, bets: BetBatch },
    /// A batch refused whole: nothing of it is stored.
    Reject { agency: AgencyId, seq: u64, count: usize, reason: RejectReason, message: String },
    /// The agency has sent everything: count it in and, after the draw, send its winners.
    Ready(AgencyId),
    /// `Hello` had a missing or wrong token for this agency.
    Unauthorized(u32),
    /// A protocol violation: answer `Error` and close.
    Close { code: ErrorCode, message: String },
}

/// One connection's state.
#[derive(Debug)]
pub struct Session {
    agency: Option<AgencyId>,
    batch: PendingBatch,
}

impl Session {
    pub fn new(rules: &Rules) -> Self {
        Self { agency: None, batch: PendingBatch::new(rules.batch_max_bets.get()) }
    }

    /// The agency this connection speaks for, once `Hello` was accepted.
    pub fn agency(&self) -> Option<AgencyId> {
        self.agency
    }

    /// Bets received of a batch that has not ended (dropped if the connection ends now).
    pub fn pending_bets(&self) -> usize {
        self.batch.count
    }

    /// What `message` (a [`ClientMessage`] or what the central's codec reads) means at this
    /// point of the session.
    pub fn on_message(&mut self, message: impl Into<Inbound>, rules: &Rules) -> Step {
        let message = message.into();
        let Some(agency) = self.agency else {
            return match message {
                Inbound::Message(ClientMessage::Hello { version, agency, token }) => {
                    self.hello(version, agency, token.as_deref(), rules)
                }
                Inbound::Message(ClientMessage::Ping) => Step::Reply(ServerMessage::Pong),
                _ => close(ErrorCode::HelloRequired, "the first message must be Hello"),
            };
        };
        let message = match message {
            Inbound::Batch(batch) => return self.whole_batch(batch, agency),
            Inbound::Message(message) => message,
        };
        match message {
            ClientMessage::Bet(bet) => {
                self.batch.push_bet(&bet);
                Step::Continue
            }
            ClientMessage::BetBatchEnd { seq } => self.end_batch(agency, seq),
            // Built by hand rather than read by the central's codec: checked the same way.
            ClientMessage::Batch { seq, bets } => {
                self.whole_batch(ReceivedBatch::from_bets(seq, &bets), agency)
            }
            ClientMessage::ReadyForLottery if self.batch.count > 0 => {
                close(ErrorCode::AgencyClosed, "ReadyForLottery inside a batch")
            }
            ClientMessage::ReadyForLottery => Step::Ready(agency),
            ClientMessage::Ping => Step::Reply(ServerMessage::Pong),
            ClientMessage::Hello { .. } => {
                close(ErrorCode::HelloRequired, "Hello was already received")
            }
        }
    }

    /// What `message` means while the agency waits for the draw, after `ReadyForLottery`: a
    /// `Ping` (the agency checking the central is alive) is answered; anything else ends the
    /// session, since the agency declared it had sent everything.
    pub fn while_waiting(&self, message: &ClientMessage) -> Step {
        waiting(matches!(message, ClientMessage::Ping))
    }

    /// [`Session::while_waiting`], for what the central's codec reads.
    pub fn while_waiting_for(&self, message: &Inbound) -> Step {
        waiting(matches!(message, Inbound::Message(ClientMessage::Ping)))
    }

    /// A `Batch` message: its bets, then its end.
    fn whole_batch(&mut self, batch: ReceivedBatch, agency: AgencyId) -> Step {
        if self.batch.count > 0 {
            return close(ErrorCode::Malformed, "a Batch inside a batch of Bet messages");
        }
        let seq = self.batch.push_frame(batch);
        self.end_batch(agency, seq)
    }

    fn end_batch(&mut self, agency: AgencyId, seq: u64) -> Step {
        if seq == 0 {
            return close(ErrorCode::Malformed, "batch 0: batch numbers start at 1");
        }
        if self.batch.count == 0 {
            let message = format!("batch {seq} has no bets: a batch holds at least one");
            return close(ErrorCode::Malformed, message);
        }
        let fresh = PendingBatch::new(self.batch.max_bets);
        let batch = std::mem::replace(&mut self.batch, fresh);
        match batch.problem {
            Some((reason, message)) => {
                Step::Reject { agency, seq, count: batch.count, reason, message }
            }
            None => {
                let bets = BetBatch::new(agency, batch.bytes.freeze(), batch.bets);
                Step::Store { agency, seq, bets }
            }
        }
    }

    fn hello(&mut self, version: u16, agency: u32, token: Option<&str>, rules: &Rules) -> Step {
        if version != PROTOCOL_VERSION {
            let message =
                format!("protocol version {version}; this central speaks {PROTOCOL_VERSION}");
            return close(ErrorCode::UnsupportedVersion, message);
        }
        let expected = 1..=rules.agencies.get();
        let Some(id) = AgencyId::new(agency).ok().filter(|a| expected.contains(&a.get())) else {
            let message =
                format!("agency {agency}; this central expects agencies 1 to {}", rules.agencies);
            return close(ErrorCode::UnknownAgency, message);
        };
        if let Some(tokens) = &rules.tokens
            && !tokens.check(agency, token)
        {
            return Step::Unauthorized(agency);
        }
        self.agency = Some(id);
        Step::Welcome(id)
    }
}

fn close(code: ErrorCode, message: impl Into<String>) -> Step {
    Step::Close { code, message: message.into() }
}

fn waiting(ping: bool) -> Step {
    if ping {
        Step::Reply(ServerMessage::Pong)
    } else {
        close(ErrorCode::AgencyClosed, "only Ping is accepted while waiting for the draw")
    }
}

/// The bets of the batch being received. Past the first problem, bets are counted and dropped,
/// so a bad or oversized batch holds no memory; it is rejected whole at its `BetBatchEnd`.
#[derive(Debug)]
struct PendingBatch {
    /// The bytes the bets' text is in: a `Batch` frame's payload, or the bets of `Bet`
    /// messages written one after another.
    bytes: BytesMut,
    /// The valid bets so far, their text in `bytes`.
    bets: Vec<CheckedBet>,
    count: usize,
    /// The bets' size as `Bet` frames, the measure of the 8 kB rule.
    wire_len: usize,
    max_bets: usize,
    problem: Option<(RejectReason, String)>,
    /// The latest birthdate accepted, read from the clock once per batch.
    latest_birthdate: Option<NaiveDate>,
}

impl PendingBatch {
    fn new(max_bets: usize) -> Self {
        Self {
            bytes: BytesMut::new(),
            bets: Vec::new(),
            count: 0,
            wire_len: 0,
            max_bets,
            problem: None,
            latest_birthdate: None,
        }
    }

    /// Takes a whole `Batch` frame's bets (into an empty batch) and returns its `seq`.
    fn push_frame(&mut self, batch: ReceivedBatch) -> u64 {
        let (seq, bytes, bets) = batch.into_parts();
        self.bytes = bytes;
        self.bets.reserve_exact(bets.len().min(self.max_bets));
        for bet in &bets {
            self.push(bet);
        }
        seq
    }

    /// Takes a `Bet` message's bet, writing it after the others.
    fn push_bet(&mut self, bet: &WireBet) {
        if self.problem.is_some() {
            self.count += 1;
            return;
        }
        let bet = ReceivedBet::append(&mut self.bytes, bet);
        self.push(&bet);
    }

    /// Checks `bet`, whose text is in `self.bytes`, against the batch's limits and the rules.
    fn push(&mut self, bet: &ReceivedBet) {
        self.count += 1;
        if self.problem.is_some() {
            return;
        }
        let wire_len = self.wire_len.saturating_add(bet.frame_len(&self.bytes));
        // The batch end frame is a few more bytes; the limit leaves room for it.
        let problem = if self.count > self.max_bets {
            let message = format!("more than {} bets in one batch", self.max_bets);
            Some((RejectReason::TooManyBets, message))
        } else if wire_len + batch_end_frame_max_len() > MAX_BATCH_BYTES {
            let message = format!("batch exceeds {MAX_BATCH_BYTES} bytes on the wire");
            Some((RejectReason::TooLarge, message))
        } else {
            self.wire_len = wire_len;
            let latest = *self.latest_birthdate.get_or_insert_with(|| {
                crate::domain::latest_birthdate(crate::domain::Checker::Central)
            });
            let WireDate { year, month, day } = bet.birthdate();
            let text = bet.text(&self.bytes);
            match check_wire_bet(text, bet.text_passed(), (year, month, day), bet.number(), latest)
            {
                Ok((birthdate, number)) => {
                    let text = bet.text_ranges().clone();
                    self.bets.push(CheckedBet { text, birthdate, number });
                    None
                }
                Err(e) => Some((RejectReason::InvalidBet, format!("bet {}: {e}", self.count))),
            }
        };
        if problem.is_some() {
            self.bets = Vec::new();
            self.bytes = BytesMut::new();
            self.problem = problem;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::wire_bet;

    fn rules(tokens: Option<&str>) -> Rules {
        Rules {
            agencies: NonZeroU32::new(3).unwrap(),
            batch_max_bets: NonZeroUsize::new(4).unwrap(),
            tokens: tokens.map(|t| AgencyTokens::parse(t, 3).unwrap()),
        }
    }

    fn hello(agency: u32) -> ClientMessage {
        ClientMessage::Hello { version: PROTOCOL_VERSION, agency, token: None }
    }

    fn bet(number: u16) -> ClientMessage {
        ClientMessage::Bet(wire_bet("Ana", "Paz", "123", number))
    }

    fn code(step: Step) -> ErrorCode {
        match step {
            Step::Close { code, .. } => code,
            other => panic!("expected Close, got {other:?}"),
        }
    }

    #[test]
    fn hello_comes_first_and_once() {
        let rules = rules(None);
        let mut session = Session::new(&rules);
        assert_eq!(
            session.on_message(ClientMessage::Ping, &rules),
            Step::Reply(ServerMessage::Pong)
        );
        assert_eq!(code(Session::new(&rules).on_message(bet(1), &rules)), ErrorCode::HelloRequired);
        assert_eq!(session.on_message(hello(2), &rules), Step::Welcome(AgencyId::new(2).unwrap()));
        assert_eq!(session.agency(), AgencyId::new(2).ok());
        assert_eq!(code(session.on_message(hello(2), &rules)), ErrorCode::HelloRequired);
    }

    #[test]
    fn hello_checks_version_agency_and_token() {
        let open = rules(None);
        for (message, expected) in [
            (
                ClientMessage::Hello { version: 1, agency: 1, token: None },
                ErrorCode::UnsupportedVersion,
            ),
            (hello(0), ErrorCode::UnknownAgency),
            (hello(4), ErrorCode::UnknownAgency),
        ] {
            assert_eq!(code(Session::new(&open).on_message(message, &open)), expected);
        }
        let locked = rules(Some("1:one\n2:two\n"));
        let with = |agency, token: Option<&str>| ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            agency,
            token: token.map(str::to_owned),
        };
        let step = |m| Session::new(&locked).on_message(m, &locked);
        assert_eq!(step(with(1, Some("one"))), Step::Welcome(AgencyId::new(1).unwrap()));
        assert_eq!(step(with(1, Some("two"))), Step::Unauthorized(1), "another agency's token");
        assert_eq!(step(with(1, None)), Step::Unauthorized(1));
        assert_eq!(step(with(3, Some("one"))), Step::Unauthorized(3), "no token on file");
    }

    #[test]
    fn batches_are_stored_or_rejected_whole() {
        let rules = rules(None);
        let mut session = Session::new(&rules);
        session.on_message(hello(1), &rules);
        assert_eq!(session.on_message(bet(7574), &rules), Step::Continue);
        assert_eq!(session.on_message(bet(1), &rules), Step::Continue);
        let Step::Store { seq: 1, bets, .. } =
            session.on_message(ClientMessage::BetBatchEnd { seq: 1 }, &rules)
        else {
            panic!("a valid batch is stored")
        };
        assert_eq!(bets.len(), 2);

        session.on_message(bet(1), &rules);
        session.on_message(bet(10_000), &rules);
        session.on_message(bet(2), &rules);
        let step = session.on_message(ClientMessage::BetBatchEnd { seq: 2 }, &rules);
        let Step::Reject { seq: 2, count: 3, reason: RejectReason::InvalidBet, message, .. } = step
        else {
            panic!("{step:?}")
        };
        assert!(message.starts_with("bet 2: invalid number"), "{message}");

        for _ in 0..5 {
            session.on_message(bet(1), &rules);
        }
        let step = session.on_message(ClientMessage::BetBatchEnd { seq: 2 }, &rules);
        assert!(matches!(step, Step::Reject { count: 5, reason: RejectReason::TooManyBets, .. }));
        assert_eq!(session.pending_bets(), 0);
    }

    #[test]
    fn a_batch_frame_is_a_whole_batch() {
        let rules = rules(None);
        let mut session = Session::new(&rules);
        session.on_message(hello(1), &rules);
        let wire = |n| match bet(n) {
            ClientMessage::Bet(b) => b,
            _ => unreachable!(),
        };
        let step = session
            .on_message(ClientMessage::Batch { seq: 1, bets: vec![wire(1), wire(2)] }, &rules);
        assert!(
            matches!(step, Step::Store { seq: 1, ref bets, .. } if bets.len() == 2),
            "{step:?}"
        );
        let step =
            session.on_message(ClientMessage::Batch { seq: 2, bets: vec![wire(1); 5] }, &rules);
        assert!(matches!(step, Step::Reject { reason: RejectReason::TooManyBets, .. }), "{step:?}");
        session.on_message(bet(1), &rules);
        let step = session.on_message(ClientMessage::Batch { seq: 2, bets: vec![] }, &rules);
        assert!(matches!(step, Step::Close { .. }), "no Batch inside Bets: {step:?}");
    }

    #[test]
    fn batch_zero_and_empty_batches_end_the_session() {
        let rules = rules(None);
        let wire = |n| match bet(n) {
            ClientMessage::Bet(b) => b,
            _ => unreachable!(),
        };
        let cases = [
            vec![bet(1), ClientMessage::BetBatchEnd { seq: 0 }],
            vec![ClientMessage::Batch { seq: 0, bets: vec![wire(1)] }],
            vec![ClientMessage::BetBatchEnd { seq: 1 }],
            vec![ClientMessage::Batch { seq: 1, bets: vec![] }],
        ];
        for messages in cases {
            let mut session = Session::new(&rules);
            session.on_message(hello(1), &rules);
            let steps: Vec<Step> =
                messages.iter().map(|m| session.on_message(m.clone(), &rules)).collect();
            let last = steps.into_iter().last().unwrap();
            assert!(
                matches!(last, Step::Close { code: ErrorCode::Malformed, .. }),
                "{messages:?}: {last:?}"
            );
        }
    }

    #[test]
    fn ready_is_refused_inside_a_batch() {
        let rules = rules(None);
        let mut session = Session::new(&rules);
        session.on_message(hello(1), &rules);
        session.on_message(bet(1), &rules);
        assert_eq!(session.pending_bets(), 1);
        assert_eq!(
            code(session.on_message(ClientMessage::ReadyForLottery, &rules)),
            ErrorCode::AgencyClosed
        );
        let mut fresh = Session::new(&rules);
        fresh.on_message(hello(1), &rules);
        let ready = fresh.on_message(ClientMessage::ReadyForLottery, &rules);
        assert_eq!(ready, Step::Ready(AgencyId::new(1).unwrap()));
    }

    #[test]
    fn only_ping_is_answered_while_waiting_for_the_draw() {
        let rules = rules(None);
        let mut session = Session::new(&rules);
        session.on_message(hello(1), &rules);
        session.on_message(ClientMessage::ReadyForLottery, &rules);
        assert_eq!(session.while_waiting(&ClientMessage::Ping), Step::Reply(ServerMessage::Pong));
        for late in [bet(1), ClientMessage::ReadyForLottery, hello(1)] {
            assert_eq!(code(session.while_waiting(&late)), ErrorCode::AgencyClosed, "{late:?}");
        }
    }
}

/// The central's in-place `Batch` path against main's: bincode's `ClientMessage`, then each
/// `WireBet` checked as `WireBet::into_bet` did before the in-place reader (its code kept here
/// as the oracle), over hostile and odd frames. Same refusal in the same words, same rows.
#[cfg(test)]
mod against_main {
    use super::*;
    use crate::domain::{Bet, BetError, BetNumber, Checker, Document, latest_birthdate};
    use crate::protocol::codec::FromPayload;
    use crate::protocol::{FRAME_HEADER_LEN, decode};
    use crate::storage::encode_rows;
    use proptest::prelude::*;

    /// What a session makes of one frame after `Hello`, in words and rows.
    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        /// The frame is not a message: the codec's error.
        Malformed(String),
        Close(ErrorCode, String),
        Reject(u64, usize, RejectReason, String),
        /// The bets-file rows, and the DEBUG line's document and number of each bet.
        Store(u64, Vec<u8>, Vec<(String, u16)>),
        Other,
    }

    const AGENCY: u32 = 2;

    fn rules(max_bets: usize) -> Rules {
        Rules {
            agencies: NonZeroU32::new(3).unwrap(),
            batch_max_bets: NonZeroUsize::new(max_bets).unwrap(),
            tokens: None,
        }
    }

    /// The central today: the frame through `CentralCodec`'s reader, then the session.
    fn central(payload: &[u8], max_bets: usize) -> Outcome {
        let rules = rules(max_bets);
        let inbound = match Inbound::from_payload(BytesMut::from(payload)) {
            Ok(inbound) => inbound,
            Err(e) => return Outcome::Malformed(e.to_string()),
        };
        let mut session = Session::new(&rules);
        let hello = ClientMessage::Hello { version: PROTOCOL_VERSION, agency: AGENCY, token: None };
        assert!(matches!(session.on_message(hello, &rules), Step::Welcome(_)));
        outcome(session.on_message(inbound, &rules))
    }

    /// What a session's answer to a batch stands for, to compare with main's.
    fn outcome(step: Step) -> Outcome {
        match step {
            Step::Close { code, message } => Outcome::Close(code, message),
            Step::Reject { seq, count, reason, message, .. } => {
                Outcome::Reject(seq, count, reason, message)
            }
            Step::Store { seq, bets, .. } => {
                let logged = bets.iter().map(|b| (b.document().to_owned(), b.number.get()));
                Outcome::Store(seq, encode_rows(&bets), logged.collect())
            }
            _ => Outcome::Other,
        }
    }

    /// main's `WireBet::into_bet`, word for word.
    fn main_into_bet(bet: WireBet, agency: AgencyId, latest: NaiveDate) -> Result<Bet, BetError> {
        let WireDate { year, month, day } = bet.birthdate;
        let birthdate =
            NaiveDate::from_ymd_opt(year, month.into(), day.into()).ok_or_else(|| {
                BetError::new(
                    "birthdate",
                    format!("{year:04}-{month:02}-{day:02}"),
                    "a real calendar date",
                )
            })?;
        let document = Document::from_string(bet.document)?;
        let number = BetNumber::parse(bet.number.into())?;
        Bet::new(agency, bet.first_name, bet.last_name, document, birthdate, number, latest)
    }

    /// main: bincode, then main's `PendingBatch::push` for each bet and `end_batch`.
    fn main(payload: &[u8], max_bets: usize) -> Outcome {
        let (seq, bets) = match decode::<ClientMessage>(payload) {
            Ok(ClientMessage::Batch { seq, bets }) => (seq, bets),
            Ok(_) => return Outcome::Other,
            Err(e) => return Outcome::Malformed(e.to_string()),
        };
        let agency = AgencyId::new(AGENCY).unwrap();
        let latest = latest_birthdate(Checker::Central);
        let (mut count, mut bytes, mut stored, mut problem) = (0, 0usize, Vec::new(), None);
        for bet in bets {
            count += 1;
            let len = bytes
                .saturating_add(FRAME_HEADER_LEN + crate::protocol::encoded_len(&(1u32, &bet)));
            if problem.is_some() {
                continue;
            }
            problem = if count > max_bets {
                let message = format!("more than {max_bets} bets in one batch");
                Some((RejectReason::TooManyBets, message))
            } else if len + batch_end_frame_max_len() > MAX_BATCH_BYTES {
                let message = format!("batch exceeds {MAX_BATCH_BYTES} bytes on the wire");
                Some((RejectReason::TooLarge, message))
            } else {
                bytes = len;
                match main_into_bet(bet, agency, latest) {
                    Ok(bet) => {
                        stored.push(bet);
                        None
                    }
                    Err(e) => Some((RejectReason::InvalidBet, format!("bet {count}: {e}"))),
                }
            };
        }
        if seq == 0 {
            let message = "batch 0: batch numbers start at 1".to_owned();
            return Outcome::Close(ErrorCode::Malformed, message);
        }
        if count == 0 {
            let message = format!("batch {seq} has no bets: a batch holds at least one");
            return Outcome::Close(ErrorCode::Malformed, message);
        }
        match problem {
            Some((reason, message)) => Outcome::Reject(seq, count, reason, message),
            None => {
                let logged =
                    stored.iter().map(|b| (b.document.as_str().to_owned(), b.number.get()));
                let logged = logged.collect();
                Outcome::Store(seq, encode_rows(&stored), logged)
            }
        }
    }

    /// A bet as raw wire fields: its text may be anything, UTF-8 or not.
    #[derive(Debug, Clone)]
    struct RawBet {
        text: [Vec<u8>; 3],
        year: i32,
        month: u8,
        day: u8,
        number: u64,
    }

    impl RawBet {
        /// A valid bet (`B`, document `1`, born 1990-01-01, number 1) whose first name is
        /// `first_name`.
        fn named(first_name: Vec<u8>) -> Self {
            let text = [first_name, b"B".to_vec(), b"1".to_vec()];
            Self { text, year: 1990, month: 1, day: 1, number: 1 }
        }
    }

    /// How a varint is written: shortest, or widened to a marker's width (what bincode reads).
    #[derive(Debug, Clone, Copy)]
    enum Width {
        Short,
        W16,
        W32,
        W64,
    }

    fn put_varint(out: &mut Vec<u8>, n: u64, width: Width) {
        let width = match width {
            Width::Short if n <= 250 => return out.push(n as u8),
            Width::Short | Width::W16 if n <= 0xffff => Width::W16,
            Width::Short | Width::W16 | Width::W32 if n <= 0xffff_ffff => Width::W32,
            Width::W16 | Width::W32 | Width::Short | Width::W64 => Width::W64,
        };
        match width {
            Width::W16 => {
                out.push(251);
                out.extend_from_slice(&(n as u16).to_le_bytes());
            }
            Width::W32 => {
                out.push(252);
                out.extend_from_slice(&(n as u32).to_le_bytes());
            }
            _ => {
                out.push(253);
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
    }

    fn zigzag(n: i32) -> u64 {
        let n = i64::from(n);
        ((n << 1) ^ (n >> 63)) as u64
    }

    /// A `Batch` payload as bincode reads it, each varint written at the width `widths` picks.
    fn payload(
        seq: u64,
        count: u64,
        bets: &[RawBet],
        widths: &mut impl Iterator<Item = Width>,
    ) -> Vec<u8> {
        let mut w = || widths.next().unwrap_or(Width::Short);
        let mut out = vec![5];
        put_varint(&mut out, seq, w());
        put_varint(&mut out, count, w());
        for bet in bets {
            for text in &bet.text {
                put_varint(&mut out, text.len() as u64, w());
                out.extend_from_slice(text);
            }
            put_varint(&mut out, zigzag(bet.year), w());
            out.push(bet.month);
            out.push(bet.day);
            put_varint(&mut out, bet.number, w());
        }
        out
    }

    fn arb_name() -> impl Strategy<Value = Vec<u8>> {
        const AWKWARD: &[&[u8]] = &[
            b"",
            b"Ana",
            b"a,b",
            b"\"",
            b"O'Brien \"el\"",
            b"\r\n",
            b"line\nbreak",
            b"\t",
            b"\x7f",
            "\u{85}".as_bytes(),
            "\u{9f}".as_bytes(),
            "\u{a0}".as_bytes(),
            "Ñandú".as_bytes(),
            "😀".as_bytes(),
            "\u{feff}".as_bytes(),
            "\u{2028}".as_bytes(),
            b"\xc0\x80",
            b"\xc1\xbf",
            b"\xe0\x80\x80",
            b"\xed\xa0\x80",
            b"\xed\xbf\xbf",
            b"\xf4\x90\x80\x80",
            b"\xf5\x80\x80\x80",
            b"\xe2\x82",
            b"\xff",
            b"\x80",
            b"\x00",
        ];
        prop_oneof![
            12 => "[A-Za-zñÑé ,'\"-]{1,12}".prop_map(String::into_bytes),
            4 => proptest::collection::vec(proptest::sample::select(AWKWARD), 0..4)
                .prop_map(|parts| parts.concat()),
            1 => (proptest::sample::select(&["a", "é", "€", "😀"][..]), 98..103usize)
                .prop_map(|(c, n)| c.repeat(n).into_bytes()),
            1 => proptest::collection::vec(any::<u8>(), 0..6),
        ]
    }

    fn arb_document() -> impl Strategy<Value = Vec<u8>> {
        let odd: &[&str] =
            &["", "0", "0123456789", "12345678901", "１２", "-1", " 1", "1 ", "+1", "1,2", "٣"];
        prop_oneof![
            8 => "[0-9]{1,10}".prop_map(String::into_bytes),
            1 => proptest::sample::select(odd).prop_map(|s| s.as_bytes().to_vec()),
            1 => proptest::collection::vec(any::<u8>(), 0..4),
        ]
    }

    fn arb_bet() -> impl Strategy<Value = RawBet> {
        let date = prop_oneof![
            8 => (1900..2030i32, 1..=12u8, 1..=28u8),
            1 => proptest::sample::select(
                &[
                    (0, 0, 0),
                    (2000, 2, 29),
                    (1900, 2, 29),
                    (2024, 2, 29),
                    (2023, 2, 29),
                    (-1, 1, 1),
                    (0, 1, 1),
                    (1, 1, 1),
                    (0, 12, 31),
                    (i32::MIN, 1, 1),
                    (i32::MAX, 12, 31),
                    (262_143, 12, 31),
                    (9999, 12, 31),
                    (2999, 1, 1),
                    (1990, 13, 1),
                    (1990, 4, 31),
                    (1990, 1, 0),
                    (1990, 255, 255),
                ][..],
            ),
            1 => (any::<i32>(), any::<u8>(), any::<u8>()),
        ];
        let number = prop_oneof![
            8 => 0..10_000u64,
            1 => proptest::sample::select(&[0, 9999, 10_000, 7574, 65_535, 65_536, u64::MAX][..]),
        ];
        (arb_name(), arb_name(), arb_document(), date, number).prop_map(
            |(first, last, document, (year, month, day), number)| RawBet {
                text: [first, last, document],
                year,
                month,
                day,
                number,
            },
        )
    }

    fn arb_width() -> impl Strategy<Value = Width> {
        prop_oneof![
            6 => Just(Width::Short),
            1 => Just(Width::W16),
            1 => Just(Width::W32),
            1 => Just(Width::W64),
        ]
    }

    fn same(payload: &[u8], max_bets: usize) -> Result<(), TestCaseError> {
        let (got, want) = (central(payload, max_bets), main(payload, max_bets));
        prop_assert_eq!(got, want, "payload {:02x?}", payload);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn any_batch_frame_meets_mains_answer_in_the_same_words_and_rows(
            seq in prop_oneof![1..400u64, Just(0u64), any::<u64>()],
            bets in proptest::collection::vec(arb_bet(), 0..5),
            extra in prop_oneof![8 => Just(0i64), 1 => -2..3i64],
            widths in proptest::collection::vec(arb_width(), 0..40),
            max_bets in prop_oneof![Just(3usize), Just(100usize)],
        ) {
            let count = (bets.len() as i64 + extra).max(0) as u64;
            let payload = payload(seq, count, &bets, &mut widths.into_iter());
            same(&payload, max_bets)?;
            // Every cut, and a byte too many.
            for cut in 0..payload.len() {
                same(&payload[..cut], max_bets)?;
            }
            let mut longer = payload.clone();
            longer.push(0);
            same(&longer, max_bets)?;
        }

        #[test]
        fn any_edited_batch_frame_meets_mains_answer(
            bets in proptest::collection::vec(arb_bet(), 1..4),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut payload = payload(7, bets.len() as u64, &bets, &mut std::iter::empty());
            for (at, byte) in edits {
                let at = at.index(payload.len() - 1) + 1;
                payload[at] = byte;
            }
            same(&payload, 100)?;
        }

        #[test]
        fn bet_messages_and_their_end_meet_mains_answer_for_a_batch_of_the_same_bets(
            seq in prop_oneof![1..400u64, Just(0u64)],
            bets in proptest::collection::vec(arb_bet(), 0..6),
            max_bets in prop_oneof![Just(3usize), Just(100usize)],
        ) {
            // Bet messages carry Strings: only bets bincode can decode as one.
            let wire: Vec<WireBet> = bets.iter().filter_map(to_wire_bet).collect();
            let canonical: Vec<RawBet> =
                bets.into_iter().filter(|bet| to_wire_bet(bet).is_some()).collect();
            let payload = payload(seq, canonical.len() as u64, &canonical, &mut std::iter::empty());
            let rules = rules(max_bets);
            let mut session = Session::new(&rules);
            let hello = ClientMessage::Hello { version: PROTOCOL_VERSION, agency: AGENCY, token: None };
            prop_assert!(matches!(session.on_message(hello, &rules), Step::Welcome(_)));
            for bet in wire {
                prop_assert_eq!(session.on_message(ClientMessage::Bet(bet), &rules), Step::Continue);
            }
            let got = outcome(session.on_message(ClientMessage::BetBatchEnd { seq }, &rules));
            prop_assert_eq!(got, main(&payload, max_bets));
        }
    }

    fn to_wire_bet(bet: &RawBet) -> Option<WireBet> {
        let [first_name, last_name, document] = bet.text.clone().map(|t| String::from_utf8(t).ok());
        Some(WireBet {
            first_name: first_name?,
            last_name: last_name?,
            document: document?,
            birthdate: WireDate { year: bet.year, month: bet.month, day: bet.day },
            number: u16::try_from(bet.number).ok()?,
        })
    }

    #[test]
    fn a_batch_frame_of_the_largest_payload_meets_mains_answer() {
        use crate::protocol::FRAME_LEN_CAP;
        // One bet whose first name fills the payload to the cap bincode is limited to: the
        // largest payload any codec passes on.
        let bet = |name_len: usize| RawBet::named(vec![b'x'; name_len]);
        let overhead = payload(5, 1, &[bet(300)], &mut std::iter::empty()).len() - 300;
        let full = payload(5, 1, &[bet(FRAME_LEN_CAP - overhead)], &mut std::iter::empty());
        assert_eq!(full.len(), FRAME_LEN_CAP);
        let got = central(&full, 100);
        assert!(matches!(got, Outcome::Reject(5, 1, RejectReason::TooLarge, _)), "{got:?}");
        assert_eq!(got, main(&full, 100));
    }

    #[test]
    fn a_batch_tag_written_long_is_left_to_bincode_and_meets_mains_answer() {
        let bet = RawBet::named(b"A".to_vec());
        let canonical = payload(5, 1, &[bet], &mut std::iter::empty());
        for tag in [&[251, 5, 0][..], &[252, 5, 0, 0, 0], &[253, 5, 0, 0, 0, 0, 0, 0, 0]] {
            let long: Vec<u8> = tag.iter().chain(&canonical[1..]).copied().collect();
            let got = central(&long, 100);
            assert!(matches!(got, Outcome::Store(5, ..)), "{tag:?}: {got:?}");
            assert_eq!(got, main(&long, 100), "{tag:?}");
            assert_eq!(got, central(&canonical, 100), "{tag:?}");
        }
    }

    #[test]
    fn a_batch_frame_read_in_place_inside_bet_messages_ends_the_session_as_before() {
        let rules = rules(100);
        let mut session = Session::new(&rules);
        let hello = ClientMessage::Hello { version: PROTOCOL_VERSION, agency: AGENCY, token: None };
        assert!(matches!(session.on_message(hello, &rules), Step::Welcome(_)));
        let bet = RawBet::named(b"A".to_vec());
        let wire = to_wire_bet(&bet).unwrap();
        assert_eq!(session.on_message(ClientMessage::Bet(wire), &rules), Step::Continue);
        let frame = payload(5, 1, &[bet], &mut std::iter::empty());
        let inbound = Inbound::from_payload(BytesMut::from(&frame[..])).unwrap();
        assert!(matches!(inbound, Inbound::Batch(_)), "read in place");
        assert_eq!(
            session.on_message(inbound, &rules),
            close(ErrorCode::Malformed, "a Batch inside a batch of Bet messages")
        );
    }

    #[test]
    fn a_huge_count_in_a_tiny_frame_is_mains_error() {
        let bet = RawBet::named(b"A".to_vec());
        for count in [2, 1 << 20, 1 << 32, 1 << 60, u64::MAX] {
            for width in [Width::Short, Width::W64] {
                let payload =
                    payload(1, count, std::slice::from_ref(&bet), &mut std::iter::repeat(width));
                assert_eq!(central(&payload, 100), main(&payload, 100), "{count}");
                assert!(matches!(central(&payload, 100), Outcome::Malformed(_)));
            }
        }
    }

    #[test]
    fn batches_at_the_8_kb_and_count_limits_meet_mains_answer() {
        let bet = |name_len: usize| RawBet {
            text: [vec![b'x'; name_len], b"Paz".to_vec(), b"1".to_vec()],
            year: 1990,
            month: 5,
            day: 17,
            number: 7574,
        };
        // Around the largest batch that fits 8 kB as Bet frames, one bet or many.
        for bets in [1usize, 2, 20, 100] {
            for name_len in (8000 / bets).saturating_sub(30)..(8200 / bets) {
                let bets = vec![bet(name_len.clamp(1, 9000)); bets];
                for width in [Width::Short, Width::W64] {
                    let payload =
                        payload(3, bets.len() as u64, &bets, &mut std::iter::repeat(width));
                    let (got, want) = (central(&payload, 1000), main(&payload, 1000));
                    assert_eq!(got, want, "{} bets of {name_len}", bets.len());
                }
            }
        }
        for max_bets in [1, 2, 5] {
            let bets = vec![bet(3); 5];
            let payload = payload(3, 5, &bets, &mut std::iter::empty());
            assert_eq!(central(&payload, max_bets), main(&payload, max_bets));
        }
    }
}
