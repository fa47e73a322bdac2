//! `AgencyTokens`: each agency's secret, from `LOTTERY_AGENCY_TOKENS_FILE`.

use std::collections::HashMap;
use std::fmt;

use super::error::echo;
use crate::domain::parse_digits;

/// Each agency's secret token, from `LOTTERY_AGENCY_TOKENS_FILE`. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AgencyTokens(HashMap<u32, String>);

impl fmt::Debug for AgencyTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgencyTokens({} agencies)", self.0.len())
    }
}

impl AgencyTokens {
    /// Parses `agency:token` lines (blank lines and `#` comments allowed) for agencies 1..=`agencies`.
    ///
    /// # Errors
    /// The first bad line's number and what is wrong with it.
    pub fn parse(text: &str, agencies: u32) -> Result<Self, (usize, String)> {
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fail = |reason: String| (i + 1, reason);
            let (agency, token) =
                line.split_once(':').ok_or_else(|| fail("expected agency:token".into()))?;
            let agency = parse_digits::<u32>(agency.trim())
                .filter(|a| (1..=agencies).contains(a))
                .ok_or_else(|| {
                    fail(format!("agency {} is not in 1..={agencies}", echo(agency.trim())))
                })?;
            let token = token.trim();
            if token.is_empty() || token.chars().any(char::is_whitespace) {
                return Err(fail(format!("agency {agency}'s token is empty or has spaces")));
            }
            if tokens.insert(agency, token.to_owned()).is_some() {
                return Err(fail(format!("agency {agency} appears twice")));
            }
        }
        Ok(Self(tokens))
    }

    /// Whether `token` is `agency`'s, compared in constant time. An agency without a line has no
    /// valid token.
    pub fn check(&self, agency: u32, token: Option<&str>) -> bool {
        use subtle::ConstantTimeEq;
        match (self.0.get(&agency), token) {
            (Some(expected), Some(given)) => expected.as_bytes().ct_eq(given.as_bytes()).into(),
            _ => false,
        }
    }

    /// How many agencies have a token.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the file named no agency.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
