//! Deterministic agency files: realistic Spanish names (accents, ñ, compound and apostrophe
//! names), 8-digit documents, valid birthdates, numbers 0–9999 with extra 7574 winners.
//!
//! The same `(agency, count, seed)` always gives the same rows, so tests, demos and benchmarks
//! can state their expected winners.

use std::io;
use std::path::Path;

use crate::domain::WINNING_NUMBER;

const FIRST_NAMES: &[&str] = &[
    "José",
    "María",
    "Lucía",
    "Martín",
    "Sofía",
    "Ramón",
    "Inés",
    "Agustín",
    "Begoña",
    "Iñaki",
    "Ángel",
    "Nicolás",
    "Valentina",
    "Joaquín",
    "Mónica",
    "Héctor",
    "Camila",
    "Tomás",
    "Julián",
    "Noemí",
    "Juan Pablo",
    "Ana Belén",
    "María José",
    "Santiago Lionel",
    "Raúl",
    "Débora",
];
const LAST_NAMES: &[&str] = &[
    "García",
    "Fernández",
    "González",
    "Rodríguez",
    "López",
    "Martínez",
    "Sánchez",
    "Pérez",
    "Gómez",
    "Jiménez",
    "Ruiz",
    "Hernández",
    "Díaz",
    "Moreno",
    "Muñoz",
    "Álvarez",
    "Romero",
    "Gutiérrez",
    "Núñez",
    "Peña",
    "Ibáñez",
    "O'Connor",
    "de la Fuente",
    "Lorca",
    "Castaño",
];
/// One bet in this many is made a winner on purpose (on top of chance's 1 in 10,000).
const WINNER_EVERY: u64 = 400;

/// One row of an agency file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub first_name: String,
    pub last_name: String,
    pub document: String,
    pub birthdate: String,
    pub number: u16,
}

impl Row {
    /// Whether this row's bet wins the draw.
    pub fn wins(&self) -> bool {
        self.number == WINNING_NUMBER.get()
    }
}

/// `count` rows for `agency`, the same for the same arguments.
pub fn agency_rows(agency: u32, count: usize, seed: u64) -> impl Iterator<Item = Row> {
    let mut rng = SplitMix64::new(seed ^ u64::from(agency).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (0..count).map(move |_| {
        let pick = |rng: &mut SplitMix64, list: &[&str]| {
            list[rng.below(list.len() as u64) as usize].to_owned()
        };
        let first_name = pick(&mut rng, FIRST_NAMES);
        let last_name = pick(&mut rng, LAST_NAMES);
        let document = (10_000_000 + rng.below(90_000_000)).to_string();
        let year = 1940 + rng.below(66);
        let month = 1 + rng.below(12);
        let day = 1 + rng.below(28);
        let birthdate = format!("{year:04}-{month:02}-{day:02}");
        let number = if rng.below(WINNER_EVERY) == 0 {
            WINNING_NUMBER.get()
        } else {
            rng.below(10_000) as u16
        };
        Row { first_name, last_name, document, birthdate, number }
    })
}

/// Writes `rows` as an agency file (CSV, no header, quoted only where needed).
///
/// # Errors
/// Any I/O error creating or writing `path`.
pub fn write_agency_file(path: &Path, rows: impl IntoIterator<Item = Row>) -> io::Result<()> {
    let mut writer = csv::WriterBuilder::new().has_headers(false).from_path(path)?;
    for row in rows {
        let number = row.number.to_string();
        writer.write_record([
            &row.first_name,
            &row.last_name,
            &row.document,
            &row.birthdate,
            &number,
        ])?;
    }
    writer.flush()
}

/// A small, fast, well-mixed generator (Steele, Lea & Flood's SplitMix64); stable forever, unlike
/// a library RNG whose stream may change between versions. Also the tests' seeded schedules.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// The generator whose stream `seed` names.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next number of the stream.
    #[allow(clippy::should_implement_trait)] // not an iterator: the stream never ends
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by Lemire's multiply-shift (bias below 2^-32 for our n).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AgencyId, Bet};

    #[test]
    fn rows_are_deterministic_valid_and_include_winners() {
        let a: Vec<Row> = agency_rows(1, 5000, 7).collect();
        let b: Vec<Row> = agency_rows(1, 5000, 7).collect();
        assert_eq!(a, b);
        assert_ne!(a, agency_rows(2, 5000, 7).collect::<Vec<_>>());
        let today = jiff::civil::date(2026, 1, 1);
        for row in &a {
            let number = row.number.to_string();
            let fields =
                [&*row.first_name, &*row.last_name, &*row.document, &*row.birthdate, &*number];
            Bet::from_text(AgencyId::new(1).unwrap(), fields, today).unwrap();
            assert_eq!(row.document.len(), 8);
        }
        let winners = a.iter().filter(|r| r.wins()).count();
        assert!((5..=30).contains(&winners), "{winners} winners in 5000");
    }
}
