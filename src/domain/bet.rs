//! `Bet` and its parts, each checked on construction.

use std::fmt;
use std::num::NonZeroU32;

use chrono::{Datelike, NaiveDate};

/// The longest first or last name accepted, in characters (not bytes).
pub const NAME_MAX_CHARS: usize = 100;
/// The longest document accepted, in digits.
const DOCUMENT_MAX_DIGITS: usize = 10;
/// The highest bet number: numbers run 0..=9999.
const NUMBER_MAX: u16 = 9999;
/// How much of an offending value an error message quotes.
const QUOTED_VALUE_MAX_CHARS: usize = 40;

/// A bet that failed validation: which field, the value given, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {value:?}: expected {expected}")]
pub struct BetError {
    /// The field's name, as in the bets file header (`first_name`, `document`, …).
    pub field: &'static str,
    /// The offending value, cut to a readable length.
    pub value: String,
    /// What the field must be.
    pub expected: &'static str,
}

impl BetError {
    pub(crate) fn new(
        field: &'static str,
        value: impl fmt::Display,
        expected: &'static str,
    ) -> Self {
        let value = value.to_string();
        let value = match value.char_indices().nth(QUOTED_VALUE_MAX_CHARS) {
            Some((cut, _)) => format!("{}…", &value[..cut]),
            None => value,
        };
        Self { field, value, expected }
    }
}

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
    /// `BetError` when `text` is not a whole number of 1 or more.
    pub fn parse(text: &str) -> Result<Self, BetError> {
        let id = text
            .parse::<u32>()
            .map_err(|_| BetError::new("agency", text, "an agency number of 1 or more"))?;
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
        let digits_only = text.bytes().all(|b| b.is_ascii_digit());
        if text.is_empty() || text.len() > DOCUMENT_MAX_DIGITS || !digits_only {
            return Err(BetError::new("document", text, "1 to 10 ASCII digits"));
        }
        Ok(Self(text.to_owned()))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
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
    /// `BetError` unless `text` is an integer from 0 to 9999.
    pub fn parse_text(text: &str) -> Result<Self, BetError> {
        let expected = "an integer from 0 to 9999";
        let number = text.parse::<u32>().map_err(|_| BetError::new("number", text, expected))?;
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
    pub birthdate: NaiveDate,
    pub number: BetNumber,
}

impl Bet {
    /// Builds a bet, checking the names and that `birthdate` is not after `today`.
    ///
    /// # Errors
    /// `BetError` naming the first field that is wrong.
    pub fn new(
        agency: AgencyId,
        first_name: String,
        last_name: String,
        document: Document,
        birthdate: NaiveDate,
        number: BetNumber,
        today: NaiveDate,
    ) -> Result<Self, BetError> {
        check_name("first_name", &first_name)?;
        check_name("last_name", &last_name)?;
        // Year 1 is Python's `date.min`: the bets file must stay readable by the original helpers.
        if birthdate > today || birthdate.year() < 1 {
            return Err(BetError::new("birthdate", birthdate, "a date from 0001-01-01 to today"));
        }
        Ok(Self { agency, first_name, last_name, document, birthdate, number })
    }

    /// Builds a bet from the text fields of a CSV row (agency file or bets file).
    ///
    /// # Errors
    /// `BetError` naming the first field that is wrong.
    pub fn from_text(
        agency: AgencyId,
        [first_name, last_name, document, birthdate, number]: [&str; 5],
        today: NaiveDate,
    ) -> Result<Self, BetError> {
        let document = Document::parse(document)?;
        let birthdate = parse_date(birthdate)?;
        let number = BetNumber::parse_text(number)?;
        Self::new(agency, first_name.into(), last_name.into(), document, birthdate, number, today)
    }
}

/// Parses a `YYYY-MM-DD` calendar date.
///
/// # Errors
/// `BetError` for anything else, or a day that does not exist (2023-02-29).
pub fn parse_date(text: &str) -> Result<NaiveDate, BetError> {
    let shaped = text.len() == 10 && text.as_bytes().get(4) == Some(&b'-');
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .filter(|_| shaped)
        .ok_or_else(|| BetError::new("birthdate", text, "a real calendar date as YYYY-MM-DD"))
}

fn check_name(field: &'static str, name: &str) -> Result<(), BetError> {
    let expected = "1 to 100 characters, none of them control characters";
    let chars = name.chars().count();
    if chars == 0 || chars > NAME_MAX_CHARS || name.chars().any(char::is_control) {
        return Err(BetError::new(field, name.escape_debug(), expected));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
    }

    fn row(fields: [&str; 5]) -> Result<Bet, BetError> {
        Bet::from_text(AgencyId::new(3).unwrap(), fields, today())
    }

    #[test]
    fn accepts_a_typical_row() {
        let bet = row(["Santiago Lionel", "Lorca", "30904465", "1999-03-17", "7574"]).unwrap();
        assert_eq!(bet.agency.get(), 3);
        assert_eq!(bet.document.as_str(), "30904465");
        assert_eq!(bet.birthdate, NaiveDate::from_ymd_opt(1999, 3, 17).unwrap());
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

    #[test]
    fn agency_zero_is_refused() {
        assert_eq!(AgencyId::new(0).unwrap_err().field, "agency");
        assert_eq!(AgencyId::parse("x").unwrap_err().value, "x");
        assert_eq!(AgencyId::parse("7").unwrap().get(), 7);
    }
}
