//! The central's in-place `Batch` path held to a reference, over hostile and odd frames: the
//! frame decoded by bincode (the protocol's own encoding) and each `WireBet` checked by the
//! domain's rules (`Bet::new`), as the central did before it read batches in place. Same refusal
//! in the same words, same rows, same DEBUG fields. The codec's own property tests hold the
//! encoding to bincode; this holds the in-place reader *and* its validation to the reference.

use std::num::{NonZeroU32, NonZeroUsize};

use bytes::BytesMut;
use jiff::civil::Date;

use super::session::{Rules, Session, Step};
use crate::csv_rows::encode_rows;
use crate::domain::AgencyId;
use crate::domain::{
    Bet, BetError, BetNumber, Checker, Document, WireDay, check_wire_day, latest_birthdate,
    wire_day,
};
use crate::protocol::codec::FromPayload;
use crate::protocol::{
    ClientMessage, ErrorCode, Inbound, MAX_BATCH_BYTES, PROTOCOL_VERSION, RejectReason, WireBet,
    WireDate, batch_end_frame_max_len,
};
use crate::protocol::{FRAME_HEADER_LEN, decode};
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

/// What a session's answer to a batch stands for, to compare with the reference's.
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

/// A received bet checked by the domain's rules, as `WireBet::into_bet` did before the in-place
/// reader.
fn reference_bet(bet: WireBet, agency: AgencyId, latest: Date) -> Result<Bet, BetError> {
    let WireDate { year, month, day } = bet.birthdate;
    let day = wire_day(year, month, day)?;
    let document = Document::from_string(bet.document)?;
    let number = BetNumber::parse(bet.number.into())?;
    let birthdate = match day {
        WireDay::Date(date) => date,
        // A real day beyond jiff's years: the names are checked first, as `Bet::new` does,
        // then the birthdate rule refuses it.
        WireDay::Beyond { .. } => {
            Bet::new(agency, bet.first_name, bet.last_name, document, latest, number, latest)?;
            return Err(check_wire_day(day, latest).unwrap_err());
        }
    };
    Bet::new(agency, bet.first_name, bet.last_name, document, birthdate, number, latest)
}

/// The reference: bincode's `ClientMessage`, then each bet checked by the domain's `Bet::new`
/// (what the in-place path must agree with), with the session's batch limits.
fn reference(payload: &[u8], max_bets: usize) -> Outcome {
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
        let len =
            bytes.saturating_add(FRAME_HEADER_LEN + crate::protocol::encoded_len(&(1u32, &bet)));
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
            match reference_bet(bet, agency, latest) {
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
            let logged = stored.iter().map(|b| (b.document.as_str().to_owned(), b.number.get()));
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
    let (got, want) = (central(payload, max_bets), reference(payload, max_bets));
    prop_assert_eq!(got, want, "payload {:02x?}", payload);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn any_batch_frame_meets_the_references_answer_in_the_same_words_and_rows(
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
    fn any_edited_batch_frame_meets_the_references_answer(
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
    fn bet_messages_and_their_end_meet_the_references_answer_for_a_batch_of_the_same_bets(
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
        prop_assert_eq!(got, reference(&payload, max_bets));
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
fn a_batch_frame_of_the_largest_payload_meets_the_references_answer() {
    use crate::protocol::FRAME_LEN_CAP;
    // One bet whose first name fills the payload to the cap bincode is limited to: the
    // largest payload any codec passes on.
    let bet = |name_len: usize| RawBet::named(vec![b'x'; name_len]);
    let overhead = payload(5, 1, &[bet(300)], &mut std::iter::empty()).len() - 300;
    let full = payload(5, 1, &[bet(FRAME_LEN_CAP - overhead)], &mut std::iter::empty());
    assert_eq!(full.len(), FRAME_LEN_CAP);
    let got = central(&full, 100);
    assert!(matches!(got, Outcome::Reject(5, 1, RejectReason::TooLarge, _)), "{got:?}");
    assert_eq!(got, reference(&full, 100));
}

#[test]
fn a_batch_tag_written_long_is_left_to_bincode_and_meets_the_references_answer() {
    let bet = RawBet::named(b"A".to_vec());
    let canonical = payload(5, 1, &[bet], &mut std::iter::empty());
    for tag in [&[251, 5, 0][..], &[252, 5, 0, 0, 0], &[253, 5, 0, 0, 0, 0, 0, 0, 0]] {
        let long: Vec<u8> = tag.iter().chain(&canonical[1..]).copied().collect();
        let got = central(&long, 100);
        assert!(matches!(got, Outcome::Store(5, ..)), "{tag:?}: {got:?}");
        assert_eq!(got, reference(&long, 100), "{tag:?}");
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
        Step::Close {
            code: ErrorCode::Malformed,
            message: "a Batch inside a batch of Bet messages".into(),
        }
    );
}

#[test]
fn a_huge_count_in_a_tiny_frame_is_the_references_error() {
    let bet = RawBet::named(b"A".to_vec());
    for count in [2, 1 << 20, 1 << 32, 1 << 60, u64::MAX] {
        for width in [Width::Short, Width::W64] {
            let payload =
                payload(1, count, std::slice::from_ref(&bet), &mut std::iter::repeat(width));
            assert_eq!(central(&payload, 100), reference(&payload, 100), "{count}");
            assert!(matches!(central(&payload, 100), Outcome::Malformed(_)));
        }
    }
}

#[test]
fn batches_at_the_8_kb_and_count_limits_meet_the_references_answer() {
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
                let payload = payload(3, bets.len() as u64, &bets, &mut std::iter::repeat(width));
                let (got, want) = (central(&payload, 1000), reference(&payload, 1000));
                assert_eq!(got, want, "{} bets of {name_len}", bets.len());
            }
        }
    }
    for max_bets in [1, 2, 5] {
        let bets = vec![bet(3); 5];
        let payload = payload(3, 5, &bets, &mut std::iter::empty());
        assert_eq!(central(&payload, max_bets), reference(&payload, max_bets));
    }
}
