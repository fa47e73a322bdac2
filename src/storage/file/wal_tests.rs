//! The journal that carries the rows (format 4): what a crash that loses the bets file's unsynced
//! tail leaves, recovered from the journal's copy; a torn journal write at every byte; and
//! compaction, whole or interrupted.

use std::fs;
use std::path::Path;

use super::journal;
use super::{BetStore, Recovery, inspect};
use crate::domain::Bet;
use crate::fixtures::{agency, named_bet};
use crate::storage::{AgencyProgress, StoreOptions, load_bets};

fn bet(agency: u32, document: &str, number: u32) -> Bet {
    named_bet(agency, "Ana", "Paz", document, number)
}

/// Three groups of one batch each, stored and left as a crash leaves them: the store dropped,
/// not closed (no compaction, the bets file not synced since it was created). Returns the bets
/// file's and the journal's bytes, and where each group's rows start and end.
async fn three_groups(dir: &Path) -> (Vec<u8>, Vec<u8>, Vec<u64>) {
    let (store, _) = BetStore::open(dir.join("bets.csv"), true).await.unwrap();
    let mut ends = vec![0];
    for (a, seq) in [(1, 1), (2, 1), (1, 2)] {
        let batch: Vec<Bet> = (0..20)
            .map(|i| bet(a, &format!("{a}{seq}{i}"), if i == 3 { 7574 } else { i }))
            .collect();
        store.store_batch(agency(a), seq, &batch).await.unwrap();
        ends.push(store.committed_len().await);
    }
    drop(store);
    let bets = fs::read(dir.join("bets.csv")).unwrap();
    let journal = fs::read(dir.join("bets.csv.journal")).unwrap();
    assert_eq!(bets.len() as u64, ends[3]);
    (bets, journal, ends)
}

async fn reopen(dir: &Path) -> (BetStore, Recovery) {
    BetStore::open(dir.join("bets.csv"), true).await.unwrap()
}

/// Every way the bets file's unsynced tail can be lost (cut back to any length, zeros over it,
/// a byte of it wrong): `verify` and `export` change nothing and export the acknowledged rows
/// from the journal's copy; a start rewrites them, and every acknowledged batch is there once.
#[tokio::test]
async fn a_lost_unsynced_tail_of_the_bets_file_is_rewritten_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (bets, journal, ends) = three_groups(dir.path()).await;
    assert!(String::from_utf8_lossy(&journal).contains(" rows #"), "the journal carries the rows");
    let path = dir.path().join("bets.csv");
    let mut damaged: Vec<(String, Vec<u8>)> = Vec::new();
    for len in [0, ends[1] / 2, ends[1], ends[2] + 7, bets.len() as u64 - 1] {
        damaged.push((format!("cut to {len}"), bets[..len as usize].to_vec()));
        let mut zeros = bets.clone();
        zeros[len as usize..].fill(0);
        damaged.push((format!("zeros from {len}"), zeros));
    }
    let mut wrong = bets.clone();
    wrong[ends[1] as usize + 3] ^= 0x01;
    damaged.push(("a byte of the second group wrong".into(), wrong));
    for (what, bytes) in damaged {
        fs::write(&path, &bytes).unwrap();
        fs::write(dir.path().join("bets.csv.journal"), &journal).unwrap();
        let inspection = inspect(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
        let lost = inspection.verified.rewritten_bets_bytes;
        assert!(lost > 0, "{what}");
        let mut exported = Vec::new();
        inspection.export(&mut exported).unwrap();
        assert!(exported == bets, "{what}: export takes the journal's copy");
        drop(inspection);
        assert_eq!(fs::read(&path).unwrap(), bytes, "{what}: verify changed nothing");
        let (store, recovery) = reopen(dir.path()).await;
        assert_eq!(recovery.rewritten_bets_bytes, lost, "{what}");
        assert_eq!((recovery.cut_bets_bytes, recovery.cut_journal_bytes), (0, 0), "{what}");
        assert!(fs::read(&path).unwrap() == bets, "{what}: rewritten");
        let progress = store.progress(agency(1)).await;
        assert_eq!(progress, AgencyProgress { last_seq: 2, stored_bets: 40, ready: false });
        assert_eq!(load_bets(&path).unwrap().count(), 60, "{what}");
        drop(store);
    }
}

/// A crash at every byte of the last group's journal write (cut short, or zeros from there),
/// with the bets file's unsynced tail lost too (it never holds the group's rows: they are
/// written after the journal's sync): the group is cut from the journal, the earlier groups'
/// rows are rewritten from it, and the agency resends the cut batch.
#[tokio::test]
async fn a_torn_last_journal_write_is_cut_and_earlier_groups_are_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let (bets, journal, ends) = three_groups(dir.path()).await;
    let path = dir.path().join("bets.csv");
    let read = journal::replay(&journal, bets.len() as u64).unwrap();
    let last_write = read.offsets[read.offsets.len() - 2] as usize;
    for cut in (last_write..journal.len()).step_by(7) {
        for zeros in [false, true] {
            let mut torn = journal[..cut].to_vec();
            if zeros {
                torn.resize(journal.len(), 0);
            }
            // The bets file as a power loss may leave it: anywhere from nothing to the end of
            // the second group.
            for len in [0, ends[1], ends[2]] {
                let what = format!("journal cut at {cut} (zeros: {zeros}), bets file at {len}");
                fs::write(&path, &bets[..len as usize]).unwrap();
                fs::write(dir.path().join("bets.csv.journal"), &torn).unwrap();
                let (store, recovery) =
                    BetStore::open(&path, true).await.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(recovery.cut_journal_bytes, (torn.len() - last_write) as u64, "{what}");
                assert_eq!(recovery.rewritten_bets_bytes, ends[2] - len, "{what}");
                assert!(fs::read(&path).unwrap() == bets[..ends[2] as usize], "{what}");
                assert_eq!(store.progress(agency(1)).await.last_seq, 1, "{what}");
                assert_eq!(store.progress(agency(2)).await.last_seq, 1, "{what}");
                drop(store);
            }
        }
    }
    // Rows past the last record are still refused.
    fs::write(&path, [&bets[..], b"1,Ana,Paz,9,2000-01-01,1\r\n"].concat()).unwrap();
    fs::write(dir.path().join("bets.csv.journal"), &journal).unwrap();
    let err = BetStore::open(&path, true).await.unwrap_err().to_string();
    assert!(err.contains("the journal lacks records"), "{err}");
}

/// Past `journal_compact_bytes` the bets file is synced and the journal rewritten without its
/// rows; at close too. A crash in the middle of a compaction (the new journal written as
/// `.tmp`, not yet renamed; or renamed) leaves a journal a start reads whole.
#[tokio::test]
async fn compaction_drops_the_rows_from_the_journal_and_a_crash_inside_it_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    let journal_path = dir.path().join("bets.csv.journal");
    let options = StoreOptions { journal_compact_bytes: 2000, ..StoreOptions::default() };
    let (store, _) = BetStore::open_with(&path, options).await.unwrap();
    for seq in 1..=6 {
        let batch: Vec<Bet> = (0..30).map(|i| bet(1, &format!("{seq}0{i}"), i)).collect();
        store.store_batch(agency(1), seq, &batch).await.unwrap();
        let journal = fs::read(&journal_path).unwrap();
        assert!(journal.len() <= 2000 + 2 * 30 * 40, "compacted past its bound: {}", journal.len());
    }
    let carried = fs::read_to_string(&journal_path).unwrap();
    store.close().await;
    drop(store);
    let compacted = fs::read_to_string(&journal_path).unwrap();
    assert!(!compacted.contains(" rows #") && !compacted.contains("\r\n"), "{compacted}");
    assert!(compacted.starts_with("journal 4 #"), "{compacted}");
    let bets = fs::read(&path).unwrap();
    assert_eq!(load_bets(&path).unwrap().count(), 180);

    // A crash after the `.tmp` was written: the journal is the old one, the `.tmp` ignored.
    fs::write(dir.path().join("bets.csv.journal.tmp"), &compacted).unwrap();
    fs::write(&journal_path, &carried).unwrap();
    let (store, recovery) = BetStore::open_with(&path, options).await.unwrap();
    assert_eq!((recovery.rewritten_bets_bytes, recovery.batches), (0, 6));
    assert_eq!(store.progress(agency(1)).await.last_seq, 6);
    drop(store);
    // After the rename: the compacted journal, the bets file synced before it.
    fs::write(&journal_path, &compacted).unwrap();
    let (store, recovery) = BetStore::open_with(&path, options).await.unwrap();
    assert_eq!((recovery.cut_bets_bytes, recovery.batches), (0, 6));
    assert_eq!(store.progress(agency(1)).await.stored_bets, 180);
    drop(store);
    // A compacted journal carries nothing: a bets file that lost rows is refused, unchanged.
    fs::write(&path, &bets[..bets.len() - 10]).unwrap();
    let err = BetStore::open(&path, true).await.unwrap_err().to_string();
    assert!(err.contains("acknowledged bets"), "{err}");
}

// ---- wal-attack findings (an independent review of the `wal` branch) ----

/// wal-attack F1: once the compacted journal (its records without rows) is itself past
/// `journal_compact_bytes`, every later group commit compacts again: a bets-file sync, the whole
/// compacted journal rewritten and synced, a rename and a directory sync per group, inside the
/// commit path, before the group's acknowledgements. A compaction should come once per
/// `journal_compact_bytes` of rows carried, not once per group.
#[tokio::test]
async fn compaction_comes_once_per_bound_of_rows_carried_not_at_every_group() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    let journal_path = dir.path().join("bets.csv.journal");
    let options = StoreOptions { journal_compact_bytes: 1500, ..StoreOptions::default() };
    let (store, _) = BetStore::open_with(&path, options).await.unwrap();
    // One bet per batch, one batch per group: ~100 bytes of records per group, ~30 of rows.
    for seq in 1..=40 {
        store.store_batch(agency(1), seq, &[bet(1, &format!("{seq}"), 1)]).await.unwrap();
    }
    store.close().await;
    drop(store);
    let compacted = fs::metadata(&journal_path).unwrap().len();
    assert!(compacted > 1500, "the records alone pass the threshold: {compacted}");
    let (store, _) = BetStore::open_with(&path, options).await.unwrap();
    let mut inode = fs::metadata(&journal_path).unwrap().ino();
    let mut compactions = 0;
    for seq in 41..=60 {
        store.store_batch(agency(1), seq, &[bet(1, &format!("{seq}"), 1)]).await.unwrap();
        // A compaction runs after the group's acknowledgements, under the store's lock: once
        // the lock is taken again, any is done.
        store.committed_len().await;
        let now = fs::metadata(&journal_path).unwrap().ino();
        compactions += u32::from(now != inode);
        inode = now;
    }
    // 20 groups carry ~20 × 35 bytes of rows: less than the threshold.
    assert!(compactions <= 1, "{compactions} compactions in 20 group commits");
}

/// A compaction that fails (here `<journal>.tmp` is a directory: it cannot be created) leaves the
/// journal as it was, carrying its rows, and is not tried again at every group but only once
/// another bound of rows is carried; then, the obstacle gone, it is done.
#[tokio::test]
async fn a_failed_compaction_is_tried_again_only_after_another_bound_of_rows() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    let journal_path = dir.path().join("bets.csv.journal");
    let temporary = dir.path().join("bets.csv.journal.tmp");
    let options = StoreOptions { journal_compact_bytes: 1500, ..StoreOptions::default() };
    let (store, _) = BetStore::open_with(&path, options).await.unwrap();
    fs::create_dir(&temporary).unwrap();
    let twenty =
        |seq: u64| -> Vec<Bet> { (0..20).map(|i| bet(1, &format!("{seq}{i:02}"), i)).collect() };
    // ~20 × 30 bytes of rows a group: the third passes the bound, its compaction fails.
    let mut seq = 0;
    while store.committed_len().await <= 1500 {
        seq += 1;
        store.store_batch(agency(1), seq, &twenty(seq)).await.unwrap();
    }
    store.committed_len().await;
    let inode = fs::metadata(&journal_path).unwrap().ino();
    let carrying = fs::metadata(&journal_path).unwrap().len();
    assert!(carrying > 1500, "the journal still carries the rows: {carrying} bytes");
    // The obstacle gone, one more group is still under the next bound: no compaction.
    fs::remove_dir(&temporary).unwrap();
    seq += 1;
    store.store_batch(agency(1), seq, &twenty(seq)).await.unwrap();
    store.committed_len().await;
    assert_eq!(
        fs::metadata(&journal_path).unwrap().ino(),
        inode,
        "compacted before the next bound"
    );
    // Past it, the compaction is done: a new journal, without the rows.
    let past = carrying + 1500;
    while fs::metadata(&journal_path).unwrap().ino() == inode {
        assert!(
            fs::metadata(&journal_path).unwrap().len() <= past + 1500,
            "no compaction past the next bound"
        );
        seq += 1;
        store.store_batch(agency(1), seq, &twenty(seq)).await.unwrap();
        store.committed_len().await;
    }
    assert!(fs::metadata(&journal_path).unwrap().len() < carrying);
    store.close().await;
    let stored = load_bets(&path).unwrap().map(Result::unwrap).count();
    assert_eq!(stored as u64, seq * 20, "every bet once");
}
