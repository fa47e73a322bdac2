//! [`Receipt`]: how many of an agency's bets the central holds, and the SHA-256 of exactly those
//! rows in the bets file's encoding, in the order the agency sent them; [`ReceiptHasher`], which
//! computes one as rows go by; and [`Receipts`], every agency's with the draw's digest over them.
//!
//! Both sides compute a receipt the same way: the central from what its store holds
//! (`lottery-server export --agency K - | sha256sum`), the agency from the rows of its file. The
//! draw's digest is the SHA-256 of the agencies' digests (32 bytes each), in agency order, over
//! the agencies that hold bets: one pass over the stored rows gives the receipts and the digest.

use std::collections::BTreeMap;
use std::fmt;

use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest, Sha256};

use super::AgencyId;

/// A count of bets and the SHA-256 of their rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Rows hashed.
    pub bets: u64,
    /// SHA-256 of those rows, bets-file encoded, one after the other.
    pub sha256: [u8; 32],
}

impl Receipt {
    /// The receipt of no rows: 0 bets, the SHA-256 of nothing.
    pub fn empty() -> Self {
        ReceiptHasher::default().finish()
    }

    /// The digest as `sha256sum` prints it: 64 lowercase hexadecimal digits.
    pub fn hex(&self) -> String {
        hex(&self.sha256)
    }
}

impl Default for Receipt {
    fn default() -> Self {
        Self::empty()
    }
}

/// `bytes` as lowercase hexadecimal digits.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A [`Receipt`] being computed: feed it rows (whole, bets-file encoded) in order.
#[derive(Debug, Clone, Default)]
pub struct ReceiptHasher {
    bets: u64,
    sha: Sha256,
}

impl ReceiptHasher {
    /// Adds `rows`, which hold `count` whole rows.
    pub fn update(&mut self, rows: &[u8], count: u64) {
        self.sha.update(rows);
        self.bets += count;
    }

    /// Rows hashed so far.
    pub fn bets(&self) -> u64 {
        self.bets
    }

    /// Its SHA-256's state so far (not the count), to carry on from with [`resume`](Self::resume)
    /// later, in another process: the database store keeps each agency's with its row.
    pub fn state(&self) -> Vec<u8> {
        self.sha.serialize().to_vec()
    }

    /// A hasher that has hashed `bets` rows whose SHA-256 state is `state` (from
    /// [`state`](Self::state)); `None` when `state` is not one (another length, or saved by a
    /// SHA-256 implementation of another layout).
    pub fn resume(bets: u64, state: &[u8]) -> Option<Self> {
        let state = SerializedState::<Sha256>::try_from(state).ok()?;
        Some(Self { bets, sha: Sha256::deserialize(&state).ok()? })
    }

    /// The receipt of every row fed.
    pub fn finish(self) -> Receipt {
        Receipt { bets: self.bets, sha256: self.sha.finalize().into() }
    }
}

/// Every agency's receipt, and the draw's digest over them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipts {
    by_agency: BTreeMap<AgencyId, Receipt>,
}

impl Receipts {
    /// The receipts of these agencies (an agency with no bets may be left out: its receipt is
    /// [`Receipt::empty`]).
    pub fn new(receipts: impl IntoIterator<Item = (AgencyId, Receipt)>) -> Self {
        Self { by_agency: receipts.into_iter().filter(|(_, r)| r.bets > 0).collect() }
    }

    /// `agency`'s receipt ([`Receipt::empty`] when it holds no bets).
    pub fn receipt_for(&self, agency: AgencyId) -> Receipt {
        self.by_agency.get(&agency).copied().unwrap_or_default()
    }

    /// Each agency holding bets, with its receipt, in agency order.
    pub fn iter(&self) -> impl Iterator<Item = (AgencyId, Receipt)> + '_ {
        self.by_agency.iter().map(|(a, r)| (*a, *r))
    }

    /// The draw's digest: every bet, and the SHA-256 of the agencies' digests (32 bytes each, in
    /// agency order, agencies holding bets only). An auditor reproduces it with
    /// `lottery-server export --agency K - | sha256sum` for each agency, the digests' bytes
    /// concatenated, and `sha256sum` over them (docs/protocol.md).
    pub fn digest(&self) -> Receipt {
        let mut sha = Sha256::new();
        let mut bets = 0;
        for receipt in self.by_agency.values() {
            sha.update(receipt.sha256);
            bets += receipt.bets;
        }
        Receipt { bets, sha256: sha.finalize().into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hasher_resumed_from_its_state_finishes_as_if_never_stopped() {
        let rows = b"1,A,B,1,2000-01-01,5\r\n".repeat(7);
        for cut in [0, 1, 63, 64, 65, 100, rows.len()] {
            let mut whole = ReceiptHasher::default();
            whole.update(&rows, 7);
            let mut first = ReceiptHasher::default();
            first.update(&rows[..cut], 3);
            let mut resumed = ReceiptHasher::resume(3, &first.state()).unwrap();
            resumed.update(&rows[cut..], 4);
            assert_eq!(resumed.finish(), whole.clone().finish(), "cut at {cut}");
        }
        assert!(ReceiptHasher::resume(1, b"not a state").is_none());
    }

    #[test]
    fn a_receipt_is_sha256sum_of_its_rows() {
        assert_eq!(
            Receipt::empty().hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut hasher = ReceiptHasher::default();
        hasher.update(b"1,A,B,1,2000-01-01,5\r\n", 1);
        hasher.update(b"", 0);
        let receipt = hasher.finish();
        // printf '1,A,B,1,2000-01-01,5\r\n' | sha256sum
        let expected = "27e89978fae48318f344e97e05faa63a2c5b1068112abb14befdba7bec91f80f";
        assert_eq!((receipt.bets, receipt.hex().as_str()), (1, expected));
    }

    #[test]
    fn the_digest_hashes_the_agencies_digests_in_order() {
        let agency = |n| AgencyId::new(n).unwrap();
        let one = Receipt { bets: 2, sha256: [1; 32] };
        let two = Receipt { bets: 3, sha256: [2; 32] };
        let receipts =
            Receipts::new([(agency(2), two), (agency(1), one), (agency(3), Receipt::empty())]);
        let mut concatenated = [1u8; 64];
        concatenated[32..].fill(2);
        let expected: [u8; 32] = Sha256::digest(concatenated).into();
        assert_eq!(receipts.digest(), Receipt { bets: 5, sha256: expected });
        assert_eq!(receipts.receipt_for(agency(3)), Receipt::empty());
        assert_eq!(receipts.iter().count(), 2);
    }
}
