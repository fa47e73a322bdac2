//! Upload progress: a log line at a modest rate, and a bar when stderr is a terminal.
//!
//! ```text
//! action: upload | result: in_progress | sent: 48000 | acked: 47250 | total: 157400
//! ```

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

/// Longest quiet spell between two progress lines.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Reports an agency's upload: every tenth of the file, or every few seconds.
pub(super) struct UploadProgress {
    total: u64,
    tenths_logged: u64,
    last_log: Instant,
    bar: Option<ProgressBar>,
}

impl UploadProgress {
    pub(super) fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{bar:40} {pos}/{len} bets acknowledged ({percent}%), {per_sec}, {eta} left",
            );
            if let Ok(style) = style {
                bar.set_style(style);
            }
            bar
        });
        Self { total, tenths_logged: 0, last_log: Instant::now(), bar }
    }

    /// `sent` bets have gone out (acknowledged or in flight), `acked` are stored.
    pub(super) fn update(&mut self, sent: u64, acked: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(acked);
        }
        let tenths = acked.saturating_mul(10).checked_div(self.total).unwrap_or(10);
        if tenths > self.tenths_logged || self.last_log.elapsed() >= LOG_EVERY {
            self.tenths_logged = tenths;
            self.last_log = Instant::now();
            let total = self.total;
            info!(action = "upload", result = "in_progress", sent, acked, total);
        }
    }

    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Rows of an agency file: its lines, counting a last one without a line break. 0 if unreadable
/// (the upload itself then reports why).
pub(super) fn count_rows(path: &Path) -> u64 {
    use std::io::Read;
    let Ok(mut file) = std::fs::File::open(path) else { return 0 };
    let mut buf = vec![0; 1 << 16];
    let (mut lines, mut last) = (0, b'\n');
    loop {
        match file.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
                last = buf[n - 1];
            }
        }
    }
    lines + u64::from(last != b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_counted_with_or_without_a_final_line_break() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agency.csv");
        for (text, rows) in [("", 0), ("a\n", 1), ("a\nb", 2), ("a\r\nb\r\n", 2)] {
            std::fs::write(&path, text).unwrap();
            assert_eq!(count_rows(&path), rows, "{text:?}");
        }
        assert_eq!(count_rows(&dir.path().join("missing")), 0);
    }
}
