//! `Session`: one connection's protocol state machine, with no I/O.
//!
//! The handler reads a message, asks the session what it means ([`Session::on_message`]) and
//! carries out the [`Step`]: reply, store a batch, wait for the draw, or close. Everything that
//! depends only on the messages (order, limits, validation, authentication) lives here, where it
//! is unit-tested and fuzzed (`fuzz/fuzz_targets/session.rs`) without sockets or files.

use std::num::{NonZeroU32, NonZeroUsize};

use bytes::BytesMut;
use jiff::civil::Date;

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

/// One connection's state: before `Hello` (no agency), uploading, or waiting for the draw.
#[derive(Debug)]
pub struct Session {
    agency: Option<AgencyId>,
    batch: PendingBatch,
    /// After `ReadyForLottery`: only `Ping` is accepted (the agency checking the central is
    /// alive while it waits for the draw); the agency declared it had sent everything.
    waiting: bool,
}

impl Session {
    pub fn new(rules: &Rules) -> Self {
        Self { agency: None, batch: PendingBatch::new(rules.batch_max_bets.get()), waiting: false }
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
        if self.waiting {
            return waiting(matches!(message, Inbound::Message(ClientMessage::Ping)));
        }
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
            ClientMessage::ReadyForLottery => {
                self.waiting = true;
                Step::Ready(agency)
            }
            ClientMessage::Ping => Step::Reply(ServerMessage::Pong),
            ClientMessage::Hello { .. } => {
                close(ErrorCode::HelloRequired, "Hello was already received")
            }
        }
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
            let message = format!(
                "the agency speaks protocol version {version}; this central speaks version {PROTOCOL_VERSION}: run an agency and a central of the same version"
            );
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
    latest_birthdate: Option<Date>,
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
        for late in [bet(1), ClientMessage::ReadyForLottery, hello(1)] {
            let mut waiting = Session::new(&rules);
            waiting.on_message(hello(1), &rules);
            waiting.on_message(ClientMessage::ReadyForLottery, &rules);
            assert_eq!(
                waiting.on_message(ClientMessage::Ping, &rules),
                Step::Reply(ServerMessage::Pong)
            );
            assert_eq!(
                code(waiting.on_message(late.clone(), &rules)),
                ErrorCode::AgencyClosed,
                "{late:?}"
            );
        }
    }
}
