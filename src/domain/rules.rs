//! The rules a bet's text fields must pass, on both sides: the birthdate rule (one for the agency
//! and the central), dates, names, digits-only numbers. `bet.rs` builds its types on them.

use std::str::FromStr;

use jiff::civil::Date;

use super::error::BetError;

/// The longest first or last name accepted, in characters (not bytes).
pub const NAME_MAX_CHARS: usize = 100;

/// Who checks a birthdate: the two sides apply one rule, the central with a day of grace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checker {
    /// The agency, before sending a row.
    Agency,
    /// The central, before storing a bet.
    Central,
}

/// The latest birthdate `checker` accepts when today's date in UTC is `today_utc`.
///
/// The rule: a birthdate may not be after today's date in UTC plus one day. No time zone's
/// "today" is later than that (UTC+14 is the furthest ahead), so a bet dated today wherever the
/// agency is passes, whatever zone either machine runs in. The central allows one day more, so
/// an agency whose clock runs ahead of the central's (by less than a day) never has a row it
/// accepted refused by the central.
pub fn latest_birthdate_on(today_utc: Date, checker: Checker) -> Date {
    let days = match checker {
        Checker::Agency => 1,
        Checker::Central => 2,
    };
    today_utc.checked_add(jiff::Span::new().days(days)).unwrap_or(Date::MAX)
}

/// [`latest_birthdate_on`] today, by this machine's clock.
pub fn latest_birthdate(checker: Checker) -> Date {
    let today_utc = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    latest_birthdate_on(today_utc, checker)
}

/// Parses a whole number written with ASCII digits only. Rust's `parse` also takes a leading
/// `+`, which no file or setting of this project means to allow.
pub fn parse_digits<T: FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// What the birthdate rule asks for.
const BIRTHDATE_EXPECTED: &str =
    "a date from 0001-01-01 to today (at most a day after today in UTC)";

pub(super) fn check_birthdate(birthdate: Date, latest_birthdate: Date) -> Result<(), BetError> {
    // Year 1 is Python's `date.min`: the bets file must stay readable by the original helpers.
    if birthdate > latest_birthdate || birthdate.year() < 1 {
        let (year, month, day) = (birthdate.year(), birthdate.month(), birthdate.day());
        let shown = show_date(year.into(), month.unsigned_abs(), day.unsigned_abs());
        return Err(BetError::new("birthdate", shown, BIRTHDATE_EXPECTED));
    }
    Ok(())
}

/// A date as error messages have always shown it: `YYYY-MM-DD` for years 0 to 9999, else the
/// year signed and at least four digits (`-0005-03-01`, `+12000-01-01`; ISO 8601's expanded
/// years as chrono wrote them, where jiff writes six digits).
fn show_date(year: i32, month: u8, day: u8) -> String {
    if (0..=9999).contains(&year) {
        format!("{year:04}-{month:02}-{day:02}")
    } else {
        format!("{year:+05}-{month:02}-{day:02}")
    }
}

/// The years the central has always read as dates on the wire (chrono's range, before jiff);
/// jiff's dates stop at ±9999.
const WIRE_YEARS: std::ops::RangeInclusive<i32> = -262_143..=262_142;

/// A birthdate from the wire, once it is known to be a real day of the (proleptic Gregorian)
/// calendar: one jiff holds, or one beyond its years, which no birthdate rule accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireDay {
    /// Years -9999 to 9999.
    Date(Date),
    /// A real day of a year in [`WIRE_YEARS`] beyond ±9999: refused by the birthdate rule, in
    /// its turn (after the other fields' checks), as it always was.
    Beyond { year: i32, month: u8, day: u8 },
}

/// `year-month-day` from the wire as a [`WireDay`].
///
/// # Errors
/// `BetError` ("a real calendar date") when no such day exists, or its year is beyond
/// [`WIRE_YEARS`].
pub fn wire_day(year: i32, month: u8, day: u8) -> Result<WireDay, BetError> {
    let small = i16::try_from(year).ok().zip(i8::try_from(month).ok()).zip(i8::try_from(day).ok());
    if let Some(date) = small.and_then(|((y, m), d)| Date::new(y, m, d).ok()) {
        return Ok(WireDay::Date(date));
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => 0,
    };
    if !(-9999..=9999).contains(&year) && WIRE_YEARS.contains(&year) && (1..=days).contains(&day) {
        return Ok(WireDay::Beyond { year, month, day });
    }
    Err(BetError::new(
        "birthdate",
        format!("{year:04}-{month:02}-{day:02}"),
        "a real calendar date",
    ))
}

/// The birthdate rule ([`check_birthdate`]) on a day from the wire.
pub(crate) fn check_wire_day(day: WireDay, latest_birthdate: Date) -> Result<Date, BetError> {
    match day {
        WireDay::Date(date) => check_birthdate(date, latest_birthdate).map(|()| date),
        WireDay::Beyond { year, month, day } => {
            Err(BetError::new("birthdate", show_date(year, month, day), BIRTHDATE_EXPECTED))
        }
    }
}

/// Parses a `YYYY-MM-DD` calendar date.
///
/// # Errors
/// `BetError` for anything else, or a day that does not exist (2023-02-29).
pub fn parse_date(text: &str) -> Result<Date, BetError> {
    date_from_bytes(text.as_bytes())
        .ok_or_else(|| BetError::new("birthdate", text, "a real calendar date as YYYY-MM-DD"))
}

/// [`parse_date`]'s rule on bytes: `None` for anything it refuses.
#[inline]
pub(super) fn date_from_bytes(bytes: &[u8]) -> Option<Date> {
    // By hand: on the hot path of every row, a format parser costs several times more.
    let digits = |range: std::ops::Range<usize>| {
        let part = bytes.get(range)?;
        part.iter().try_fold(0i16, |n, b| b.is_ascii_digit().then(|| n * 10 + i16::from(b - b'0')))
    };
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    Date::new(year, i8::try_from(month).ok()?, i8::try_from(day).ok()?).ok()
}

/// Writes `date` as `YYYY-MM-DD` (years 0..=9999, as every valid birthdate has).
pub(crate) fn write_date(date: Date, out: &mut [u8; 10]) -> &str {
    let two = |n: u16, at: &mut [u8]| {
        at[0] = b'0' + (n / 10 % 10) as u8;
        at[1] = b'0' + (n % 10) as u8;
    };
    let year = date.year().clamp(0, 9999).unsigned_abs();
    two(year / 100, &mut out[0..2]);
    two(year % 100, &mut out[2..4]);
    out[4] = b'-';
    two(date.month().unsigned_abs().into(), &mut out[5..7]);
    out[7] = b'-';
    two(date.day().unsigned_abs().into(), &mut out[8..10]);
    // Only ASCII digits and dashes were written.
    std::str::from_utf8(out).unwrap_or_default()
}

pub(super) fn check_name(field: &'static str, name: &str) -> Result<(), BetError> {
    if !name_is_valid(name) {
        let expected = "1 to 100 characters, none of them control characters";
        return Err(BetError::new(field, name.escape_debug(), expected));
    }
    Ok(())
}

/// Whether `name` is UTF-8 and, as text, passes [`name_is_valid`]: one pass over its bytes,
/// validating UTF-8 as `str::from_utf8` does (RFC 3629: no overlong forms, surrogates or
/// code points past U+10FFFF), counting the characters and finding control characters.
#[inline]
pub(super) fn utf8_name_is_valid(name: &[u8]) -> bool {
    let mut chars = 0;
    let mut bytes = name.iter();
    while let Some(&first) = bytes.next() {
        chars += 1;
        // Printable ASCII, nearly every byte: one step.
        if (0x20..0x7F).contains(&first) {
            continue;
        }
        // The range of the second byte depends on the first; the others are 0x80..=0xBF.
        let (more, second) = match first {
            0xC2..=0xDF => (0, 0x80..=0xBF),
            0xE0 => (1, 0xA0..=0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => (1, 0x80..=0xBF),
            0xED => (1, 0x80..=0x9F),
            0xF0 => (2, 0x90..=0xBF),
            0xF1..=0xF3 => (2, 0x80..=0xBF),
            0xF4 => (2, 0x80..=0x8F),
            // C0 controls and DEL, continuation bytes, and bytes UTF-8 never has.
            _ => return false,
        };
        let Some(&next) = bytes.next() else { return false };
        // C1 controls, U+0080..=U+009F, are 0xC2 then 0x80..=0x9F.
        let c1 = first == 0xC2 && next < 0xA0;
        let continued = bytes.by_ref().take(more).filter(|b| (0x80..=0xBF).contains(*b)).count();
        if c1 || !second.contains(&next) || continued != more {
            return false;
        }
    }
    (1..=NAME_MAX_CHARS).contains(&chars)
}

/// What each byte of a name adds up to in [`name_is_valid`]: 1 for a byte that starts a
/// character (any but a UTF-8 continuation byte, 0x80..=0xBF), plus `CONTROL` for a control
/// character of one byte (C0 or DEL), plus `MAYBE_C1` for 0xC2, which starts U+0080..=U+00BF.
const NAME_BYTES: [u32; 256] = {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b {
            0x00..=0x1F | 0x7F => 1 + CONTROL,
            0x80..=0xBF => 0,
            0xC2 => 1 + MAYBE_C1,
            _ => 1,
        };
        b += 1;
    }
    table
};
// 400 bytes make at most 400 characters (< MAYBE_C1) and 200 0xC2 (< CONTROL / MAYBE_C1).
const MAYBE_C1: u32 = 1 << 10;
const CONTROL: u32 = 1 << 20;

/// 1 to 100 characters, none of them a control character (Unicode's `Cc`, what
/// `char::is_control` means: C0, DEL and C1), counted by bytes: this runs on every row.
pub(super) fn name_is_valid(name: &str) -> bool {
    let bytes = name.as_bytes();
    // More than 400 bytes is more than 100 characters; up to there the sum cannot overflow.
    if bytes.is_empty() || bytes.len() > 4 * NAME_MAX_CHARS {
        return false;
    }
    let sum: u32 = bytes.iter().map(|&b| NAME_BYTES[usize::from(b)]).sum();
    let (chars, maybe_c1, controls) = (sum % MAYBE_C1, sum % CONTROL >= MAYBE_C1, sum >= CONTROL);
    // C1 controls are 0xC2 followed by 0x80..=0x9F.
    let c1 = || bytes.windows(2).any(|pair| pair[0] == 0xC2 && pair[1] < 0xA0);
    chars as usize <= NAME_MAX_CHARS && !controls && !(maybe_c1 && c1())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule the one-pass check stands for: UTF-8 (as `str::from_utf8` says), then the
    /// name rule on the text.
    fn by_parts(bytes: &[u8]) -> bool {
        std::str::from_utf8(bytes).is_ok_and(name_is_valid)
    }

    #[test]
    fn the_one_pass_name_check_is_utf8_then_the_name_rule_on_every_short_byte_string() {
        // Every string of up to three bytes, then four bytes around every UTF-8 boundary.
        let mut buf = Vec::with_capacity(4);
        for a in 0..=255u8 {
            assert_eq!(utf8_name_is_valid(&[a]), by_parts(&[a]), "{a:02x}");
            for b in 0..=255u8 {
                assert_eq!(utf8_name_is_valid(&[a, b]), by_parts(&[a, b]), "{a:02x} {b:02x}");
                for c in 0..=255u8 {
                    let s = [a, b, c];
                    assert_eq!(utf8_name_is_valid(&s), by_parts(&s), "{s:02x?}");
                }
            }
        }
        let edges = [
            0x00, 0x1f, 0x20, 0x41, 0x7e, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1,
            0xc2, 0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xff,
        ];
        for a in 0..=255u8 {
            for &b in &edges {
                for &c in &edges {
                    for &d in &edges {
                        buf.clear();
                        buf.extend_from_slice(&[a, b, c, d]);
                        assert_eq!(utf8_name_is_valid(&buf), by_parts(&buf), "{buf:02x?}");
                    }
                }
            }
        }
        // 100 characters of every width, one more, and a bad byte at the end of a long name.
        for c in ["a", "é", "€", "😀"] {
            for (n, valid) in [(100, true), (101, false)] {
                let name = c.repeat(n).into_bytes();
                assert_eq!(utf8_name_is_valid(&name), valid, "{n} × {c}");
                assert_eq!(by_parts(&name), valid, "{n} × {c}");
            }
            let mut cut = c.repeat(99).into_bytes();
            cut.extend_from_slice(&[0xf0, 0x9f, 0x98]);
            assert!(!utf8_name_is_valid(&cut) && !by_parts(&cut), "{c}: cut at the end");
        }
    }
}
