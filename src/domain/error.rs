//! [`BetError`]: a bet that failed validation, naming the field, the value and the rule.

use std::fmt;

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
