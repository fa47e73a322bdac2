//! The connection state machine under any sequence of well-formed messages, built from the
//! fuzzer's bytes: it never panics, and its steps keep the protocol's promises: nothing is stored
//! or counted before an accepted `Hello`, only for that agency, only agencies with their own token,
//! and never a batch over the count or byte limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lottery::config::AgencyTokens;
use lottery::protocol::{
    ClientMessage, MAX_BATCH_BYTES, PROTOCOL_VERSION, WireBet, WireBetRef, WireDate,
    batch_end_frame_max_len,
};
use lottery::server::session::{Rules, Session, Step};

const NAMES: [&str; 6] = ["Ana", "", "José María", "a\u{7}b", "ñandú, \"el\"", "x"];
const DOCUMENTS: [&str; 5] = ["30904465", "", "12345678901", "12a", "0"];
const TOKENS: [Option<&str>; 4] = [None, Some("one"), Some("two"), Some("wrong")];

struct Bytes<'a>(std::slice::Iter<'a, u8>);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        self.0.next().copied().unwrap_or(0)
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.byte()) % from.len()]
    }
    fn long_name(&mut self) -> String {
        let n = usize::from(self.byte());
        if n > 200 { "ñ".repeat(n - 100) } else { self.pick(&NAMES).to_owned() }
    }
}

fuzz_target!(|data: &[u8]| {
    let tokens = AgencyTokens::parse("1:one\n2:two\n", 3).expect("valid tokens");
    let rules = Rules {
        agencies: 3.try_into().unwrap(),
        batch_max_bets: 6.try_into().unwrap(),
        tokens: Some(tokens.clone()),
    };
    let mut session = Session::new(&rules);
    let mut bytes = Bytes(data.iter());
    while bytes.0.len() > 0 {
        let message = match bytes.byte() % 6 {
            0 => ClientMessage::Hello {
                version: if bytes.byte() % 4 == 0 { 1 } else { PROTOCOL_VERSION },
                agency: u32::from(bytes.byte() % 5),
                token: bytes.pick(&TOKENS).map(str::to_owned),
            },
            1 => ClientMessage::Bet(WireBet {
                first_name: bytes.long_name(),
                last_name: bytes.long_name(),
                document: bytes.pick(&DOCUMENTS).to_owned(),
                birthdate: WireDate {
                    year: 1900 + i32::from(bytes.byte()) * 2,
                    month: bytes.byte() % 14,
                    day: bytes.byte() % 33,
                },
                number: u16::from_le_bytes([bytes.byte(), bytes.byte() % 40]),
            }),
            2 => ClientMessage::BetBatchEnd { seq: u64::from(bytes.byte() % 8) },
            3 => ClientMessage::ReadyForLottery,
            4 => ClientMessage::Ping,
            _ => {
                let bets = (0..bytes.byte() % 12)
                    .map(|_| WireBet {
                        first_name: bytes.long_name(),
                        last_name: bytes.pick(&NAMES).to_owned(),
                        document: bytes.pick(&DOCUMENTS).to_owned(),
                        birthdate: WireDate { year: 1990, month: 1 + bytes.byte() % 12, day: 1 },
                        number: u16::from(bytes.byte()) * 40,
                    })
                    .collect();
                ClientMessage::Batch { seq: u64::from(bytes.byte() % 8), bets }
            }
        };
        let hello = match &message {
            ClientMessage::Hello { agency, token, .. } => Some((*agency, token.clone())),
            _ => None,
        };
        let before = session.agency();
        let step = session.on_message(message, &rules);
        match step {
            Step::Welcome(agency) => {
                assert!(before.is_none(), "one Hello per session");
                let (asked, token) = hello.expect("Welcome answers Hello");
                assert_eq!(agency.get(), asked);
                assert!(tokens.check(asked, token.as_deref()), "only with the agency's own token");
            }
            Step::Store { agency, seq, bets } => {
                assert_eq!(Some(agency), before, "stored only for the session's agency");
                assert!(seq >= 1 && !bets.is_empty(), "batches are numbered from 1 and hold bets");
                assert!(bets.len() <= rules.batch_max_bets.get());
                assert_eq!(bets.agency(), agency);
                let wire: usize = bets.iter().map(|b| WireBetRef::from_text(&b).frame_len()).sum();
                assert!(wire + batch_end_frame_max_len() <= MAX_BATCH_BYTES);
            }
            Step::Reject { agency, .. } | Step::Ready(agency) => {
                assert_eq!(Some(agency), before);
            }
            Step::Unauthorized(_) => {
                assert!(before.is_none());
                session = Session::new(&rules);
            }
            Step::Continue => assert!(before.is_some()),
            Step::Reply(_) => {}
            Step::Close { .. } => session = Session::new(&rules),
        }
    }
});
