//! Fixtures the library's unit tests share (integration tests have theirs in `tests/common`).

use jiff::civil::Date;
use proptest::prelude::*;

use crate::domain::{AgencyId, Bet, BetNumber, Document};
use crate::protocol::{WireBet, WireDate};

/// Agency `n`, which must be valid (1 or more).
pub(crate) fn agency(n: u32) -> AgencyId {
    AgencyId::new(n).unwrap()
}

/// A valid bet of `agency` by `first last` (born 1985-12-01) on `number`.
pub(crate) fn named_bet(agency: u32, first: &str, last: &str, document: &str, number: u32) -> Bet {
    Bet::new(
        self::agency(agency),
        first.into(),
        last.into(),
        Document::parse(document).unwrap(),
        jiff::civil::date(1985, 12, 1),
        BetNumber::parse(number).unwrap(),
        Date::MAX,
    )
    .unwrap()
}

/// A valid bet on the wire by `first last` (born 1990-02-28) on `number`.
pub(crate) fn wire_bet(first: &str, last: &str, document: &str, number: u16) -> WireBet {
    WireBet {
        first_name: first.into(),
        last_name: last.into(),
        document: document.into(),
        birthdate: WireDate { year: 1990, month: 2, day: 28 },
        number,
    }
}

/// Bets on the wire from a strategy for each part: `name()` (one for the first name, one for the
/// last), the `document` pattern, `year` and `number`; month and day are any bytes. Each property
/// test chooses the parts' distributions it needs and shares how a bet is put together.
pub(crate) fn wire_bets<N: Strategy<Value = String>>(
    name: impl Fn() -> N,
    document: &'static str,
    year: impl Strategy<Value = i32>,
    number: impl Strategy<Value = u16>,
) -> impl Strategy<Value = WireBet> {
    (name(), name(), document, year, any::<(u8, u8)>(), number).prop_map(
        |(first_name, last_name, document, year, (month, day), number)| WireBet {
            first_name,
            last_name,
            document,
            birthdate: WireDate { year, month, day },
            number,
        },
    )
}
