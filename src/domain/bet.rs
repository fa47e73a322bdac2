//! `Bet` and its parts, each checked on construction; `BetText`, a checked row borrowed; and the
//! check of a bet as the central received it.
//!
//! # Why a bet has seven types
//! A bet passes three layers (an agency file, the wire, the central's store), and on the two hot
//! paths (the agency reading its file, the central reading a `Batch` frame) no bet becomes a
//! `String`: each form below is the bet at one step, owned or borrowed, checked or not yet.
//!
//! - [`Bet`] (domain; owns its `String`s; checked): a bet as a value: the agency's single bet
//!   from the environment, rows read back from the bets file or the database (the draw,
//!   exports, tests). On no hot path.
//! - [`BetText`] (domain; borrowed from a row, a frame or a `Bet`; checked): the agency's hot
//!   path, a CSV row checked where it lies with no allocation, and what the stores write (what
//!   [`Bets`](super::Bets) yields).
//! - [`WireText`] (domain; borrowed; not checked): an alias, not a type: the three text fields
//!   `[first_name, last_name, document]` as bytes, what the checks take.
//! - [`CheckedBet`](super::CheckedBet) (domain; ranges into its batch's bytes; checked): a bet of
//!   a [`BetBatch`](super::BetBatch), the central's hot path from the session's check to the
//!   store.
//! - [`WireBet`](crate::protocol::WireBet) (protocol; owns its `String`s; not checked): the serde
//!   form inside `ClientMessage::Bet` and `Batch`, for bincode: tools, tests, the single-bet
//!   mode. On no hot path.
//! - [`WireBetRef`](crate::protocol::WireBetRef) (protocol; borrowed; not checked): the one
//!   writer of a bet's wire bytes and of its frame size (the 8 kB rule): the agency's hot path,
//!   a row straight into its batch's buffer.
//! - [`ReceivedBet`](crate::protocol::ReceivedBet) (protocol; ranges into the frame; not
//!   checked): the central's hot path, where a bet is in a `Batch` frame read in place, its date
//!   and number as sent.
//!
//! Each pair differs in layer, ownership or checking. Merging an owned form with a borrowed one
//! would put a `String` per bet back on a hot path (both paths are measured); merging a checked
//! form with an unchecked one would lose what the type promises, that code past it never checks
//! again. So all seven stay. A received bet is checked in one place, [`check_wire_bet`],
//! whichever message it came in: a `WireBet` is first written into a batch's bytes as a
//! `ReceivedBet`, so it has no check of its own.

use std::fmt;
use std::num::NonZeroU32;
use std::ops::Range;

use jiff::civil::Date;

use super::error::BetError;
use super::rules::{
    check_birthdate, check_name, check_wire_day, date_from_bytes, parse_date, parse_digits,
    utf8_name_is_valid, wire_day,
};

/// The longest document accepted, in digits.
const DOCUMENT_MAX_DIGITS: usize = 10;
/// The highest bet number: numbers run 0..=9999.
const NUMBER_MAX: u16 = 9999;

/// An agency's number, 1 or more. Whether it is below the configured count is the server's check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgencyId(NonZeroU32);

impl AgencyId {
    /// # Errors
    /// `BetError` for 0.
    pub fn new(id: u32) -> Result<Self, BetError> {
        NonZeroU32::new(id)
            .map(Self)
            .ok_or_else(|| BetError::new("agency", id, "an agency number of 1 or more"))
    }

    /// Parses a decimal agency number.
    ///
    /// # Errors
    /// `BetError` when `text` is not a whole number of 1 or more, in ASCII digits only.
    pub fn parse(text: &str) -> Result<Self, BetError> {
        let expected = "an agency number from 1 to 4294967295";
        let id =
            parse_digits::<u32>(text).ok_or_else(|| BetError::new("agency", text, expected))?;
        Self::new(id)
    }

    /// The number itself.
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl fmt::Display for AgencyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A national identity document: 1 to 10 ASCII digits, leading zeros kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Document(String);

impl Document {
    /// # Errors
    /// `BetError` unless `text` is 1 to 10 ASCII digits.
    pub fn parse(text: &str) -> Result<Self, BetError> {
        Self::check(text)?;
        Ok(Self(text.to_owned()))
    }

    /// Like [`Document::parse`], keeping `text`'s allocation.
    ///
    /// # Errors
    /// `BetError` unless `text` is 1 to 10 ASCII digits.
    pub fn from_string(text: String) -> Result<Self, BetError> {
        Self::check(&text)?;
        Ok(Self(text))
    }

    fn check(text: &str) -> Result<(), BetError> {
        if !Self::is_valid(text.as_bytes()) {
            return Err(BetError::new("document", text, "1 to 10 ASCII digits"));
        }
        Ok(())
    }

    /// The rule on bytes: 1 to 10 ASCII digits (so UTF-8 too).
    fn is_valid(text: &[u8]) -> bool {
        (1..=DOCUMENT_MAX_DIGITS).contains(&text.len()) && text.iter().all(u8::is_ascii_digit)
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits, as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The number bet on, 0..=9999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BetNumber(u16);

impl BetNumber {
    pub(crate) const fn new_const(number: u16) -> Self {
        assert!(number <= NUMBER_MAX);
        Self(number)
    }

    /// # Errors
    /// `BetError` above 9999.
    pub fn parse(number: u32) -> Result<Self, BetError> {
        u16::try_from(number)
            .ok()
            .filter(|n| *n <= NUMBER_MAX)
            .map(Self)
            .ok_or_else(|| BetError::new("number", number, "an integer from 0 to 9999"))
    }

    /// Parses a decimal number as written in a CSV file.
    ///
    /// # Errors
    /// `BetError` unless `text` is an integer from 0 to 9999 in ASCII digits only (no sign).
    pub fn parse_text(text: &str) -> Result<Self, BetError> {
        let expected = "an integer from 0 to 9999, digits only";
        let number =
            parse_digits::<u32>(text).ok_or_else(|| BetError::new("number", text, expected))?;
        Self::parse(number)
    }

    /// The number itself.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for BetNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One validated bet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bet {
    pub agency: AgencyId,
    pub first_name: String,
    pub last_name: String,
    pub document: Document,
    pub birthdate: Date,
    pub number: BetNumber,
}

impl Bet {
    /// Builds a bet, checking the names and that `birthdate` is not after `latest_birthdate`
    /// (see [`latest_birthdate`](super::latest_birthdate) for the rule both sides apply).
    ///
    /// # Errors
    /// `BetError` naming the first field that is wrong.
    pub fn new(
        agency: AgencyId,
        first_name: String,
        last_name: String,
        document: Document,
        birthdate: Date,
        number: BetNumber,
        latest_birthdate: Date,
    ) -> Result<Self, BetError> {
        check_name("first_name", &first_name)?;
        check_name("last_name", &last_name)?;
        check_birthdate(birthdate, latest_birthdate)?;
        Ok(Self { agency, first_name, last_name, document, birthdate, number })
    }

    /// Builds a bet from the text fields of a CSV row (agency file or bets file).
    ///
    /// # Errors
    /// `BetError` naming the first field that is wrong.
    pub fn from_text(
        agency: AgencyId,
        [first_name, last_name, document, birthdate, number]: [&str; 5],
        latest_birthdate: Date,
    ) -> Result<Self, BetError> {
        let text =
            BetText::parse([first_name, last_name, document, birthdate, number], latest_birthdate)?;
        Ok(Self {
            agency,
            first_name: first_name.to_owned(),
            last_name: last_name.to_owned(),
            document: Document(document.to_owned()),
            birthdate: text.birthdate,
            number: text.number,
        })
    }
}

impl Bet {
    /// The bet's fields, borrowed, as the stores write them.
    pub fn as_text(&self) -> BetText<'_> {
        BetText {
            first_name: self.first_name.as_bytes(),
            last_name: self.last_name.as_bytes(),
            document: self.document.as_str().as_bytes(),
            birthdate: self.birthdate,
            number: self.number,
        }
    }
}

/// A bet's text fields as an agency sent them: `[first_name, last_name, document]`, UTF-8.
pub type WireText<'a> = [&'a [u8]; 3];

/// Whether a received bet's text passes every rule on it: each name UTF-8 and valid, the
/// document 1 to 10 digits. One pass over each field's bytes, UTF-8 included: what the central's
/// decoder asks of every bet, so that a valid bet's text is looked at once (see
/// [`check_wire_bet`] for the errors of a bet that does not pass).
pub fn wire_text_is_valid([first_name, last_name, document]: WireText<'_>) -> bool {
    utf8_name_is_valid(first_name) && utf8_name_is_valid(last_name) && Document::is_valid(document)
}

/// Checks a bet as received by the central, its text `text` (UTF-8) and its date and number as
/// sent, and returns its birthdate and number. `text_passed` says the text already passed
/// [`wire_text_is_valid`], so only the date and number are left to check.
///
/// # Errors
/// `BetError` naming the first wrong field, in this order: the date as a calendar date, the
/// document, the number, the first name, the last name, the birthdate against
/// `latest_birthdate`.
pub fn check_wire_bet(
    text: WireText<'_>,
    text_passed: bool,
    (year, month, day): (i32, u8, u8),
    number: u16,
    latest_birthdate: Date,
) -> Result<(Date, BetNumber), BetError> {
    let birthdate = wire_day(year, month, day)?;
    let number = if text_passed {
        BetNumber::parse(number.into())?
    } else {
        // The text is UTF-8 (the caller's promise), so the default is never taken.
        let [first_name, last_name, document] =
            text.map(|t| std::str::from_utf8(t).unwrap_or_default());
        Document::check(document)?;
        let number = BetNumber::parse(number.into())?;
        check_name("first_name", first_name)?;
        check_name("last_name", last_name)?;
        number
    };
    let birthdate = check_wire_day(birthdate, latest_birthdate)?;
    Ok((birthdate, number))
}

/// A bet's fields as read from a CSV row, every check of [`Bet::from_text`] passed, the text
/// borrowed from the row: validating a file needs no allocation per row, and its text fields
/// are known to be UTF-8 without making `&str`s of them (see [`BetText::from_line`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BetText<'a> {
    first_name: &'a [u8],
    last_name: &'a [u8],
    /// 1 to 10 ASCII digits.
    document: &'a [u8],
    pub birthdate: Date,
    pub number: BetNumber,
}

impl<'a> BetText<'a> {
    /// Checks the text fields of a CSV row (agency file or bets file).
    ///
    /// # Errors
    /// `BetError` naming the first field that is wrong, in this order: document, birthdate,
    /// number, first name, last name, and the birthdate against `latest_birthdate`.
    pub fn parse(
        [first_name, last_name, document, birthdate, number]: [&'a str; 5],
        latest_birthdate: Date,
    ) -> Result<Self, BetError> {
        Document::check(document)?;
        let birthdate = parse_date(birthdate)?;
        let number = BetNumber::parse_text(number)?;
        check_name("first_name", first_name)?;
        check_name("last_name", last_name)?;
        check_birthdate(birthdate, latest_birthdate)?;
        let (first_name, last_name) = (first_name.as_bytes(), last_name.as_bytes());
        Ok(Self { first_name, last_name, document: document.as_bytes(), birthdate, number })
    }

    /// A bet whose text `text` and values passed [`check_wire_bet`] (or come from a [`Bet`]).
    pub(crate) fn from_checked(text: WireText<'a>, birthdate: Date, number: BetNumber) -> Self {
        let [first_name, last_name, document] = text;
        Self { first_name, last_name, document, birthdate, number }
    }

    /// The document, owned.
    pub fn to_document(&self) -> Document {
        Document(self.document().to_owned())
    }

    pub fn first_name(&self) -> &'a str {
        // Checked to be UTF-8 on construction: never the default.
        std::str::from_utf8(self.first_name).unwrap_or_default()
    }

    pub fn last_name(&self) -> &'a str {
        std::str::from_utf8(self.last_name).unwrap_or_default()
    }

    /// 1 to 10 ASCII digits.
    pub fn document(&self) -> &'a str {
        std::str::from_utf8(self.document).unwrap_or_default()
    }

    /// The first name, last name and document as they are in the row (UTF-8, checked on
    /// construction), for writing them out without checking them again.
    pub fn text_bytes(&self) -> [&'a [u8]; 3] {
        [self.first_name, self.last_name, self.document]
    }

    /// The quick way for the usual row: a line of five fields without quotes, as read (not yet
    /// known to be UTF-8), and where each field is in it (the last may end with the `\r` of a
    /// `\r\n`). The bet, when the row is a valid one; `None` otherwise, and the general path
    /// ([`BetText::parse`] on the row's fields) says why. It never accepts what that path
    /// refuses (a test holds the two side by side).
    #[inline]
    pub fn from_line(
        line: &'a [u8],
        [first_name, last_name, document, birthdate, number]: [Range<usize>; 5],
        latest_birthdate: Date,
    ) -> Option<Self> {
        let digits = |field: &[u8]| !field.is_empty() && field.iter().all(u8::is_ascii_digit);
        let number = line.get(number)?;
        let number = number.strip_suffix(b"\r").unwrap_or(number);
        // Nine digits fit a u32 (leading zeros are allowed): longer ones take the general path.
        let number = (number.len() <= 9 && digits(number))
            .then(|| number.iter().fold(0u32, |n, &b| n * 10 + u32::from(b - b'0')))
            .and_then(|n| BetNumber::parse(n).ok())?;
        let birthdate = date_from_bytes(line.get(birthdate)?)?;
        let (first_name, last_name) = (line.get(first_name)?, line.get(last_name)?);
        let document = line.get(document)?;
        let checks = document.len() <= DOCUMENT_MAX_DIGITS
            && digits(document)
            && utf8_name_is_valid(first_name)
            && utf8_name_is_valid(last_name);
        (checks && check_birthdate(birthdate, latest_birthdate).is_ok()).then_some(Self {
            first_name,
            last_name,
            document,
            birthdate,
            number,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rules::{
        Checker, NAME_MAX_CHARS, latest_birthdate_on, name_is_valid, write_date,
    };

    fn today() -> Date {
        jiff::civil::date(2026, 11, 26)
    }

    fn row(fields: [&str; 5]) -> Result<Bet, BetError> {
        Bet::from_text(AgencyId::new(3).unwrap(), fields, today())
    }

    #[test]
    fn accepts_a_typical_row() {
        let bet = row(["Santiago Lionel", "Lorca", "30904465", "1999-03-17", "7574"]).unwrap();
        assert_eq!(bet.agency.get(), 3);
        assert_eq!(bet.document.as_str(), "30904465");
        assert_eq!(bet.birthdate, jiff::civil::date(1999, 3, 17));
        assert_eq!(bet.number.get(), 7574);
    }

    #[test]
    fn accepts_accents_quotes_and_commas_in_names() {
        assert!(row(["José María, \"Pepe\"", "O'Brien Núñez", "1", "2026-11-26", "0"]).is_ok());
    }

    #[test]
    fn each_bad_field_is_named_with_its_value() {
        let cases = [
            (["", "Paz", "1", "2000-01-01", "1"], "first_name", ""),
            (["Ana", "P\naz", "1", "2000-01-01", "1"], "last_name", "P\\naz"),
            (["Ana", "Paz", "12345678901", "2000-01-01", "1"], "document", "12345678901"),
            (["Ana", "Paz", "12a", "2000-01-01", "1"], "document", "12a"),
            (["Ana", "Paz", "", "2000-01-01", "1"], "document", ""),
            (["Ana", "Paz", "1", "2023-02-29", "1"], "birthdate", "2023-02-29"),
            (["Ana", "Paz", "1", "01/02/2000", "1"], "birthdate", "01/02/2000"),
            (["Ana", "Paz", "1", "2000-1-01", "1"], "birthdate", "2000-1-01"),
            (["Ana", "Paz", "1", "2026-11-27", "1"], "birthdate", "2026-11-27"),
            (["Ana", "Paz", "1", "2000-01-01", "10000"], "number", "10000"),
            (["Ana", "Paz", "1", "2000-01-01", "-1"], "number", "-1"),
            (["Ana", "Paz", "1", "2000-01-01", "x"], "number", "x"),
            (["Ana", "Paz", "1", "2000-01-01", "+5"], "number", "+5"),
            (["Ana", "Paz", "1", "2000-01-01", " 5"], "number", " 5"),
            (["Ana", "Paz", "+1", "2000-01-01", "5"], "document", "+1"),
        ];
        for (fields, field, value) in cases {
            let err = row(fields).unwrap_err();
            assert_eq!((err.field, err.value.as_str()), (field, value), "{fields:?}");
        }
    }

    #[test]
    fn names_are_limited_in_characters_not_bytes() {
        let hundred = "ñ".repeat(100);
        assert!(row([&hundred, "Paz", "1", "2000-01-01", "1"]).is_ok());
        let err = row([&"ñ".repeat(101), "Paz", "1", "2000-01-01", "1"]).unwrap_err();
        assert_eq!(err.field, "first_name");
        assert!(err.value.ends_with('…'), "long values are cut: {}", err.value);
        assert!(err.to_string().contains("1 to 100 characters"));
    }

    proptest::proptest! {
        /// The byte-level name check is `char`-level's: characters counted, `char::is_control`.
        #[test]
        fn names_are_checked_as_chars(
            name in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::char::range('\u{0}', '\u{1ff}'),
                    proptest::char::any(),
                    proptest::strategy::Just('ñ'),
                ],
                0..110,
            )
        ) {
            let name: String = name.into_iter().collect();
            let chars = name.chars().count();
            let by_chars = (1..=NAME_MAX_CHARS).contains(&chars) && !name.chars().any(char::is_control);
            proptest::prop_assert_eq!(check_name("first_name", &name).is_ok(), by_chars, "{:?}", name);
        }
    }

    proptest::proptest! {
        /// The one-pass check of a name's bytes is `str::from_utf8` and then the text's check.
        #[test]
        fn name_bytes_are_checked_as_utf8_then_as_text(
            text in "\\PC{0,8}|[\\x00-\\u{ff}]{0,8}|\\p{Cc}?.{0,3}",
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..3),
            at in proptest::num::usize::ANY,
            long in proptest::bool::weighted(0.05),
            cut in proptest::num::usize::ANY,
        ) {
            let mut bytes = text.into_bytes();
            if long {
                bytes = bytes.repeat(30);
            }
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, noise);
            // Cut, often inside a character.
            bytes.truncate(cut % (bytes.len() + 2));
            let expected = std::str::from_utf8(&bytes).is_ok_and(name_is_valid);
            proptest::prop_assert_eq!(utf8_name_is_valid(&bytes), expected, "{:?}", bytes);
        }
    }

    #[test]
    fn name_bytes_at_the_edges_of_utf8() {
        for (bytes, valid) in [
            (&b"\xC2\xA0"[..], true),
            (b"\xC2\x9F", false),
            (b"\xC1\xBF", false),
            (b"\xE0\x9F\xBF", false),
            (b"\xE0\xA0\x80", true),
            (b"\xED\xA0\x80", false),
            (b"\xED\x9F\xBF", true),
            (b"\xF0\x8F\xBF\xBF", false),
            (b"\xF0\x90\x80\x80", true),
            (b"\xF4\x8F\xBF\xBF", true),
            (b"\xF4\x90\x80\x80", false),
            (b"\xF5\x80\x80\x80", false),
            (b"\xC3", false),
            (b"\xE0\xA0", false),
            (b"\xF0\x90\x80", false),
            (b"\xE1\x80a", false),
            (b"a\xC3\xB1", true),
        ] {
            assert_eq!(utf8_name_is_valid(bytes), valid, "{bytes:?}");
            assert_eq!(std::str::from_utf8(bytes).is_ok_and(name_is_valid), valid, "{bytes:?}");
        }
    }

    #[test]
    fn control_characters_in_names_are_refused_ascii_or_not() {
        for bad in ["\u{0}", "a\u{1f}", "\u{7f}", "ñ\u{80}", "\u{9f}ñ", "Ana\tPaz", ""] {
            assert!(check_name("first_name", bad).is_err(), "{bad:?}");
        }
        for good in ["\u{a0}", "ñ", "\u{feff}Ana", "\u{100}", "Ana Paz", &"ñ".repeat(100)] {
            assert!(check_name("first_name", good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn dates_are_read_and_written_as_yyyy_mm_dd() {
        for text in ["0001-01-01", "1999-03-17", "2024-02-29", "2026-11-26"] {
            let date = parse_date(text).unwrap();
            assert_eq!(date.strftime("%Y-%m-%d").to_string(), text);
            assert_eq!(date.to_string(), text);
            assert_eq!(write_date(date, &mut [0; 10]), text);
        }
        for bad in [
            "1999-3-17",
            "1999/03/17",
            "99-03-17x",
            "1999-02-29",
            "1999-13-01",
            "+999-01-01",
            "1999-03-1a",
            "",
        ] {
            assert_eq!(parse_date(bad).unwrap_err().field, "birthdate", "{bad}");
        }
    }

    #[test]
    fn the_quick_path_reads_numbers_as_the_general_path_does() {
        let mut numbers: Vec<String> =
            ["", "+5", "-1", " 5", "5 ", "x", "1x", "٣"].map(String::from).to_vec();
        for value in [0u64, 1, 7574, 9999, 10_000, 65_535, 65_536, 99_999_999, 4_294_967_296] {
            for zeros in 0..12 {
                numbers.push(format!("{}{value}", "0".repeat(zeros)));
            }
        }
        for number in &numbers {
            let fields = ["Ana", "Paz", "1", "2000-01-01", number.as_str()];
            let line = fields.join(",");
            let mut start = 0;
            let ranges = fields.map(|field| {
                let range = start..start + field.len();
                start = range.end + 1;
                range
            });
            let quick = BetText::from_line(line.as_bytes(), ranges, today());
            let general = BetText::parse(fields, today());
            // Never more than the general path; every number of up to 9 digits it takes.
            if let Some(bet) = quick {
                assert_eq!(general.as_ref().ok(), Some(&bet), "{number:?}");
            }
            if number.len() <= 9 {
                assert_eq!(quick.is_some(), general.is_ok(), "{number:?}");
            }
        }
    }

    #[test]
    fn agency_zero_is_refused() {
        assert_eq!(AgencyId::new(0).unwrap_err().field, "agency");
        assert_eq!(AgencyId::parse("x").unwrap_err().value, "x");
        assert_eq!(AgencyId::parse("7").unwrap().get(), 7);
    }

    #[test]
    fn numbers_are_digits_only() {
        for bad in ["+5", "-5", " 5", "5 ", "", "+", "٣", "0x5"] {
            assert_eq!(parse_digits::<u32>(bad), None, "{bad:?}");
        }
        assert_eq!(parse_digits::<u32>("0042"), Some(42));
        assert_eq!(parse_digits::<u16>("65536"), None, "out of range");
        assert_eq!(AgencyId::parse("+3").unwrap_err().value, "+3");
        assert_eq!(BetNumber::parse_text("+5").unwrap_err().value, "+5");
        assert_eq!(BetNumber::parse_text("0007").unwrap().get(), 7);
    }

    #[test]
    fn a_birthdate_of_today_anywhere_passes_both_sides() {
        let utc = today();
        let (agency, central) =
            (latest_birthdate_on(utc, Checker::Agency), latest_birthdate_on(utc, Checker::Central));
        // "Today" in UTC+14 is at most UTC's date plus one; the agency accepts it.
        assert_eq!(agency, jiff::civil::date(2026, 11, 27));
        // A central whose clock is behind the agency's, across UTC midnight, still accepts it.
        let central_behind = latest_birthdate_on(utc.yesterday().unwrap(), Checker::Central);
        assert!(central_behind >= agency && central > agency);
        let row = |date, latest| {
            let fields = ["Ana", "Paz", "1", date, "5"];
            Bet::from_text(AgencyId::new(1).unwrap(), fields, latest)
        };
        assert!(row("2026-11-27", agency).is_ok());
        let err = row("2026-11-28", agency).unwrap_err();
        assert_eq!((err.field, err.value.as_str()), ("birthdate", "2026-11-28"));
        assert!(err.to_string().contains("a day after today in UTC"), "{err}");
        assert!(row("2026-11-28", central).is_ok());
        assert_eq!(latest_birthdate_on(Date::MAX, Checker::Central), Date::MAX);
    }

    /// The wire's dates read as they always did (before jiff, whose years stop at ±9999): any
    /// real day of a year up to ±262,142 is a date, refused by the birthdate rule after the
    /// other fields, shown as ISO 8601's expanded years; anything else is not a calendar date.
    #[test]
    fn wire_dates_beyond_jiffs_years_keep_their_errors() {
        let latest = today();
        let refused = |(year, month, day): (i32, u8, u8)| {
            let found = crate::domain::wire_day(year, month, day).unwrap();
            let err = check_wire_day(found, latest).unwrap_err();
            assert_eq!(err.field, "birthdate");
            assert!(err.to_string().contains("a date from 0001-01-01 to today"), "{err}");
            err.value
        };
        assert_eq!(refused((12000, 2, 29)), "+12000-02-29");
        assert_eq!(refused((262_142, 12, 31)), "+262142-12-31");
        assert_eq!(refused((-262_143, 1, 1)), "-262143-01-01");
        assert_eq!(refused((-5, 3, 1)), "-0005-03-01");
        assert_eq!(refused((0, 1, 1)), "0000-01-01");
        assert_eq!(refused((2026, 11, 27)), "2026-11-27");
        for (year, month, day, shown) in [
            (262_143, 1, 1, "262143-01-01"),
            (-262_144, 12, 31, "-262144-12-31"),
            (10_001, 2, 29, "10001-02-29"),
            (2023, 2, 29, "2023-02-29"),
            (2024, 13, 1, "2024-13-01"),
            (2024, 0, 1, "2024-00-01"),
            (2024, 1, 0, "2024-01-00"),
            (2024, 200, 1, "2024-200-01"),
        ] {
            let err = crate::domain::wire_day(year, month, day).unwrap_err();
            assert_eq!((err.field, err.value.as_str()), ("birthdate", shown));
            assert!(err.to_string().contains("a real calendar date"), "{err}");
        }
        // After the other fields: a bad document is named first.
        let text = [&b"Ana"[..], b"Paz", b"x"];
        let err = check_wire_bet(text, false, (12000, 1, 1), 5, latest).unwrap_err();
        assert_eq!(err.field, "document");
    }

    fn arb_field() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            ".{0,12}".prop_map(String::into_bytes),
            "[0-9]{0,12}".prop_map(String::into_bytes),
            "[A-Za-z\u{80}-\u{a0}]{0,4}".prop_map(String::into_bytes),
            (".{1,2}", 95..110usize).prop_map(|(s, n)| s.repeat(n).into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..8),
        ]
    }

    proptest::proptest! {
        #[test]
        fn the_one_pass_wire_text_check_is_the_rules(
            first_name in arb_field(),
            last_name in arb_field(),
            document in arb_field(),
            number in proptest::prop_oneof![0..10_000u16, proptest::prelude::any::<u16>()],
        ) {
            let text = [&first_name[..], &last_name[..], &document[..]];
            let passed = wire_text_is_valid(text);
            let utf8 = text.iter().all(|t| std::str::from_utf8(t).is_ok());
            proptest::prop_assume!(utf8 || passed);
            proptest::prop_assert!(utf8, "passing text is UTF-8");
            let check = |text_passed| check_wire_bet(text, text_passed, (1990, 5, 17), number, today());
            let by_rules = check(false);
            if passed {
                proptest::prop_assert_eq!(check(true), by_rules.clone());
                let number_ok = number <= NUMBER_MAX;
                proptest::prop_assert_eq!(by_rules.is_ok(), number_ok);
            } else {
                proptest::prop_assert!(by_rules.is_err(), "text failing the rules is refused");
            }
        }
    }

    #[test]
    fn a_wire_bet_is_checked_field_by_field_in_order() {
        let ok = [&b"Ana"[..], b"Paz", b"123"];
        let check = |text, date, number| check_wire_bet(text, false, date, number, today());
        let field = |r: Result<_, BetError>| r.unwrap_err().field;
        assert!(check(ok, (1990, 5, 17), 7574).is_ok());
        assert_eq!(field(check([b"", b"", b"x"], (1990, 2, 30), 10_000)), "birthdate");
        let err = check(ok, (1990, 2, 30), 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid birthdate \"1990-02-30\": expected a real calendar date"
        );
        assert_eq!(field(check([b"", b"", b"x"], (1990, 2, 3), 10_000)), "document");
        assert_eq!(field(check([b"", b"", b"1"], (1990, 2, 3), 10_000)), "number");
        assert_eq!(field(check([b"", b"", b"1"], (1990, 2, 3), 1)), "first_name");
        assert_eq!(field(check([b"A", b"", b"1"], (1990, 2, 3), 1)), "last_name");
        assert_eq!(field(check([b"A", b"B", b"1"], (2999, 2, 3), 1)), "birthdate");
    }
}
