//! The draw's rule, as a pure function.

use std::collections::HashMap;

use super::{AgencyId, Bet, BetNumber, Document, Receipt, Receipts};

/// The winning number of the original exercise (`LOTTERY_WINNER_NUMBER`).
pub const WINNING_NUMBER: BetNumber = BetNumber::new_const(7574);

/// Returns whether `bet` wins the draw.
pub fn has_won(bet: &Bet) -> bool {
    is_winning(bet.number)
}

/// Returns whether a bet on `number` wins the draw: the one rule, for a bet not (yet) a [`Bet`].
pub fn is_winning(number: BetNumber) -> bool {
    number == WINNING_NUMBER
}

/// The outcome of the draw: every agency's winning documents, in the order the bets were stored,
/// and the receipts of what it drew from.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Draw {
    winners: HashMap<AgencyId, Vec<Document>>,
    bets: u64,
    receipts: Receipts,
}

impl Draw {
    /// Runs the draw over every stored bet.
    ///
    /// # Errors
    /// The first error the bets yield.
    pub fn from_bets<E>(bets: impl IntoIterator<Item = Result<Bet, E>>) -> Result<Self, E> {
        let mut draw = Self::default();
        for bet in bets {
            let bet = bet?;
            draw.bets += 1;
            if has_won(&bet) {
                draw.winners.entry(bet.agency).or_default().push(bet.document);
            }
        }
        Ok(draw)
    }

    /// The draw from an index of winners kept as bets were stored, over `bets` bets.
    pub fn from_winners(winners: HashMap<AgencyId, Vec<Document>>, bets: u64) -> Self {
        Self { winners, bets, receipts: Receipts::default() }
    }

    /// The draw with the receipts of the bets it drew from, as the store holds them.
    #[must_use]
    pub fn with_receipts(self, receipts: Receipts) -> Self {
        Self { receipts, ..self }
    }

    /// `agency`'s receipt: its bets the store holds, and their rows' SHA-256.
    pub fn receipt_for(&self, agency: AgencyId) -> Receipt {
        self.receipts.receipt_for(agency)
    }

    /// Every agency's receipt.
    pub fn receipts(&self) -> &Receipts {
        &self.receipts
    }

    /// The draw's digest over every agency's receipt (see [`Receipts::digest`]).
    pub fn digest(&self) -> Receipt {
        self.receipts.digest()
    }

    /// The winning documents of `agency`'s bets, and of no other agency's.
    pub fn winners_for(&self, agency: AgencyId) -> &[Document] {
        self.winners.get(&agency).map_or(&[], Vec::as_slice)
    }

    /// How many bets took part.
    pub fn bets(&self) -> u64 {
        self.bets
    }

    /// How many bets won, over all agencies.
    pub fn total_winners(&self) -> usize {
        self.winners.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bet(number: u32) -> Bet {
        agency_bet(1, "123", number)
    }

    fn agency_bet(agency: u32, document: &str, number: u32) -> Bet {
        crate::fixtures::named_bet(agency, "Ana", "Paz", document, number)
    }

    #[test]
    fn only_the_winning_number_wins() {
        assert!(has_won(&bet(7574)));
        assert!(!has_won(&bet(7573)));
        assert!(!has_won(&bet(0)));
        assert!(!has_won(&bet(9999)));
    }

    #[test]
    fn the_draw_gives_each_agency_only_its_own_winners() {
        let bets = [
            agency_bet(1, "11", 7574),
            agency_bet(2, "21", 7574),
            agency_bet(1, "12", 1),
            agency_bet(1, "13", 7574),
        ];
        let draw = Draw::from_bets(bets.into_iter().map(Ok::<_, ()>)).unwrap();
        let docs = |a| -> Vec<&str> {
            draw.winners_for(AgencyId::new(a).unwrap()).iter().map(Document::as_str).collect()
        };
        assert_eq!(docs(1), ["11", "13"]);
        assert_eq!(docs(2), ["21"]);
        assert!(docs(3).is_empty());
        assert_eq!((draw.bets(), draw.total_winners()), (4, 3));
    }
}
