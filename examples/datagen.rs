//! Writes deterministic agency files and prints each agency's expected winners.
//!
//! ```sh
//! cargo run --release --example datagen -- OUT_DIR AGENCIES BETS_PER_AGENCY [SEED]
//! cargo run --release --example datagen -- .data 5 15740 2026   # the default dataset
//! ```
//! Agency K's file is `OUT_DIR/agency-K.csv` (the course's naming). Agency K gets
//! `BETS_PER_AGENCY + 37 × (K - 1)` bets, so the files differ in length as real ones do.

use std::path::PathBuf;
use std::process::ExitCode;

use lottery::datagen::{Row, agency_rows, write_agency_file};

const USAGE: &str = "usage: datagen OUT_DIR AGENCIES BETS_PER_AGENCY [SEED]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("datagen: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, agencies, bets, rest @ ..] = args.as_slice() else {
        return Err("expected 3 or 4 arguments".into());
    };
    let number = |name: &str, text: &str| {
        text.parse::<u64>().map_err(|_| format!("{name} {text:?} is not a whole number"))
    };
    let agencies = number("AGENCIES", agencies)?;
    let bets = number("BETS_PER_AGENCY", bets)?;
    let seed = match rest {
        [] => 2026,
        [seed] => number("SEED", seed)?,
        _ => return Err("expected 3 or 4 arguments".into()),
    };
    if !(1..=100_000).contains(&agencies) {
        return Err(format!("AGENCIES {agencies} must be from 1 to 100000"));
    }
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    for agency in 1..=agencies as u32 {
        let count = (bets + 37 * u64::from(agency - 1)) as usize;
        let rows: Vec<Row> = agency_rows(agency, count, seed).collect();
        let winners = rows.iter().filter(|r| r.wins()).count();
        let path = out.join(format!("agency-{agency}.csv"));
        write_agency_file(&path, rows)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("{}: {count} bets, {winners} winners", path.display());
    }
    Ok(())
}
