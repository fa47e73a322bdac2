use std::sync::Arc;

use super::journal::{self, Record};
use super::{BetStore, MAX_GROUP_BYTES, Recovery};
use crate::domain::{Bet, Document};
use crate::fixtures::{agency, named_bet};
use crate::storage::{
    Ack, AgencyProgress, StorageError, StoreOptions, StoreStats, Stored, load_bets, rows,
};

fn docs(list: &[&str]) -> Vec<Document> {
    list.iter().map(|d| Document::parse(d).unwrap()).collect()
}
use std::fs;

fn bet(agency: u32, document: &str, number: u32) -> Bet {
    named_bet(agency, "Ana, \"la\"", "Núñez", document, number)
}

async fn open(dir: &tempfile::TempDir) -> (BetStore, Recovery) {
    BetStore::open(dir.path().join("bets.csv"), true).await.unwrap()
}

fn loaded(store: &BetStore) -> Vec<Bet> {
    load_bets(store.path()).unwrap().collect::<Result<_, _>>().unwrap()
}

#[tokio::test]
async fn stored_batches_load_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (store, recovery) = open(&dir).await;
    assert_eq!(recovery, Recovery::default());
    let one = [bet(1, "11", 7574), bet(1, "12", 1)];
    let two = [bet(2, "21", 5)];
    assert_eq!(store.store_batch(agency(1), 1, &one).await.unwrap(), Stored::New);
    assert_eq!(store.store_batch(agency(2), 1, &two).await.unwrap(), Stored::New);
    assert_eq!(loaded(&store), [&one[..], &two[..]].concat());
    let journal = fs::read_to_string(store.journal_path()).unwrap();
    let len = fs::metadata(store.path()).unwrap().len();
    let last = journal.lines().last().unwrap();
    assert!(last.starts_with(&format!("batch 2 1 1 {len} - #")), "{journal}");
}

#[tokio::test]
async fn batches_follow_the_sequence_and_retries_are_not_stored_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir).await;
    let batch = [bet(1, "1", 1), bet(1, "2", 2)];
    assert_eq!(store.progress(agency(1)).await, AgencyProgress::default());
    assert_eq!(store.store_batch(agency(1), 1, &batch).await.unwrap(), Stored::New);
    let len = store.committed_len().await;
    assert_eq!(store.store_batch(agency(1), 1, &batch).await.unwrap(), Stored::Duplicate);
    assert_eq!(store.committed_len().await, len, "a retry writes nothing");
    let gap = store.store_batch(agency(1), 3, &batch).await.unwrap_err();
    assert!(matches!(gap, StorageError::SequenceGap { expected: 2, got: 3, .. }), "{gap}");
    let progress = store.progress(agency(1)).await;
    assert_eq!(progress, AgencyProgress { last_seq: 1, stored_bets: 2, ready: false });
    assert_eq!(store.progress(agency(2)).await.last_seq, 0, "sequences are per agency");
}

#[tokio::test]
async fn a_ready_agency_cannot_add_bets_and_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir).await;
    assert!(store.mark_ready(agency(1)).await.unwrap(), "newly ready");
    assert!(!store.mark_ready(agency(1)).await.unwrap(), "ready again");
    assert!(store.mark_ready(agency(2)).await.unwrap(), "newly ready");
    let closed = store.store_batch(agency(1), 1, &[bet(1, "1", 1)]).await.unwrap_err();
    assert!(matches!(closed, StorageError::AgencyClosed { .. }), "{closed}");
    assert_eq!(store.committed_len().await, 0);
    assert_eq!(store.ready_agencies().await, [agency(1), agency(2)]);
}

#[tokio::test]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(&dir).await;
        store.store_batch(agency(1), 1, &[bet(1, "11", 7574)]).await.unwrap();
        store.store_batch(agency(1), 2, &[bet(1, "12", 7574), bet(1, "13", 3)]).await.unwrap();
        store.store_batch(agency(2), 1, &[bet(2, "21", 7574)]).await.unwrap();
        store.mark_ready(agency(1)).await.unwrap();
        store.mark_ready(agency(2)).await.unwrap();
        store.draw().await.unwrap();
    }
    let (store, recovery) = open(&dir).await;
    assert_eq!((recovery.batches, recovery.drawn), (3, true));
    assert_eq!(recovery.ready, [agency(1), agency(2)]);
    assert_eq!(
        store.progress(agency(1)).await,
        AgencyProgress { last_seq: 2, stored_bets: 3, ready: true }
    );
    let draw = store.draw().await.unwrap();
    let docs: Vec<&str> = draw.winners_for(agency(1)).iter().map(Document::as_str).collect();
    assert_eq!(docs, ["11", "12"], "the same winners after a restart");
    let journal = fs::read_to_string(store.journal_path()).unwrap();
    assert_eq!(journal.matches("draw ").count(), 1, "the draw is recorded once: {journal}");
}

#[tokio::test]
async fn a_bets_file_without_journal_is_adopted_only_when_every_row_is_a_bet() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    let rows =
        "3,Ana,Paz,1,2000-01-01,7574\r\n1,Ana,Paz,2,2000-01-01,5\r\n3,Ana,Paz,3,2000-01-01,6\r\n";
    // A row that is not a bet: refused, naming it, and nothing is changed or created.
    let bad = format!("{rows}3,Ana\r\n");
    fs::write(&path, &bad).unwrap();
    let err = BetStore::open(&path, true).await.unwrap_err();
    assert!(matches!(err, StorageError::BadRow { line: 4, .. }), "{err}");
    assert_eq!(fs::read_to_string(&path).unwrap(), bad);
    assert!(!dir.path().join("bets.csv.journal").exists());

    // Whole rows are adopted, counted per agency, and the store goes on from them. (A last row
    // without its line end is cut: see recovery's tests.)
    fs::write(&path, rows).unwrap();
    let (store, recovery) = BetStore::open(&path, true).await.unwrap();
    assert!(recovery.adopted);
    assert_eq!(loaded(&store).len(), 3);
    assert_eq!(
        store.progress(agency(3)).await,
        AgencyProgress { last_seq: 0, stored_bets: 2, ready: false }
    );
    assert_eq!(store.progress(agency(1)).await.stored_bets, 1);
    assert_eq!(store.store_batch(agency(3), 1, &[bet(3, "9", 1)]).await.unwrap(), Stored::New);
    drop(store);
    let (store, recovery) = BetStore::open(&path, true).await.unwrap();
    assert!(!recovery.adopted, "adopted once; the journal now exists");
    assert_eq!(loaded(&store).len(), 4);
    assert_eq!(
        store.progress(agency(3)).await,
        AgencyProgress { last_seq: 1, stored_bets: 3, ready: false }
    );
    let draw = store.draw().await.unwrap();
    let docs: Vec<&str> = draw.winners_for(agency(3)).iter().map(Document::as_str).collect();
    assert_eq!(docs, ["1"], "adopted rows win too");
}

#[tokio::test]
async fn rows_first_journals_are_rewritten_in_the_current_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    let journal_path = dir.path().join("bets.csv.journal");
    let rows = "1,Ana,Paz,1,2000-01-01,7574\r\n1,Ana,Paz,2,2000-01-01,5\r\n";
    // More than 1 MiB: the versions that wrote rows first did not bound a group commit.
    let unacknowledged = "1,Ana,Paz,3,2000-01-01,6\r\n".repeat((1 << 20) / 24 + 1);
    let format_two = {
        let mut text = String::new();
        Record::Header { version: journal::FORMAT_ROWS_FIRST }.write_to(&mut text);
        let batch = Record::Batch {
            agency: agency(1),
            seq: 1,
            bets: 2,
            end: rows.len() as u64,
            winners: Some(docs(&["1"])),
        };
        batch.write_to(&mut text);
        Record::Ready { agency: agency(1) }.write_to(&mut text);
        text
    };
    for (what, journal, winners) in [
        // As main wrote it: no header, no check fields, no winners, a torn tail.
        ("legacy", format!("batch 1 1 2 {}\nready 1\nbatch 2 1", rows.len()), "?"),
        ("format 2", format!("{format_two}batch 2 1"), "1"),
    ] {
        // Rows past the last record (written first, never acknowledged): cut, as before.
        fs::write(&path, format!("{rows}{unacknowledged}")).unwrap();
        fs::write(&journal_path, &journal).unwrap();
        let (store, recovery) = BetStore::open(&path, true).await.unwrap();
        assert!(recovery.journal_converted, "{what}");
        assert_eq!(recovery.cut_journal_bytes, 9, "{what}");
        assert_eq!(recovery.cut_bets_bytes, unacknowledged.len() as u64, "{what}");
        assert_eq!(
            store.progress(agency(1)).await,
            AgencyProgress { last_seq: 1, stored_bets: 2, ready: true },
            "{what}"
        );
        let text = fs::read_to_string(&journal_path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{what}: {text}");
        assert!(lines[0].starts_with("journal 4 #"), "{what}: {text}");
        let crc = crc32fast::hash(rows.as_bytes());
        let group = format!("group 0 {} {crc:08x} #", rows.len());
        assert!(lines[1].starts_with(&group), "{what}: {text}");
        let batch = format!("batch 1 1 2 {} {winners} #", rows.len());
        assert!(lines[2].starts_with(&batch), "{what}: {text}");
        drop(store);
        let (store, recovery) = BetStore::open(&path, true).await.unwrap();
        assert!(!recovery.journal_converted, "{what}");
        assert_eq!(store.progress(agency(1)).await.stored_bets, 2, "{what}");
        let draw = store.draw().await.unwrap();
        let docs: Vec<&str> = draw.winners_for(agency(1)).iter().map(Document::as_str).collect();
        assert_eq!(docs, ["1"], "{what}: winners read from the file when not recorded");
        assert!(!dir.path().join("bets.csv.journal.tmp").exists());
    }
}

#[tokio::test]
async fn a_second_store_on_the_same_files_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = open(&dir).await;
    let err = BetStore::open(first.path(), true).await.unwrap_err();
    let StorageError::Locked { holder, .. } = &err else { panic!("{err}") };
    assert_eq!(*holder, Some(std::process::id()), "{err}");
    assert!(err.to_string().contains("locked by another central"), "{err}");
    first.close().await;
    let closed = first.store_batch(agency(1), 1, &[bet(1, "1", 1)]).await.unwrap_err();
    assert!(matches!(closed, StorageError::Interrupted { .. }), "{closed}");
    let (second, _) = open(&dir).await;
    assert_eq!(second.store_batch(agency(1), 1, &[bet(1, "1", 1)]).await.unwrap(), Stored::New);
}

#[tokio::test]
async fn limits_refuse_a_batch_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bets.csv");
    let options = StoreOptions { max_bets_per_agency: 3, ..StoreOptions::default() };
    let (store, _) = BetStore::open_with(&path, options).await.unwrap();
    let two = [bet(1, "1", 1), bet(1, "2", 2)];
    store.store_batch(agency(1), 1, &two).await.unwrap();
    let len = store.committed_len().await;
    let err = store.store_batch(agency(1), 2, &two).await.unwrap_err();
    assert!(matches!(err, StorageError::AgencyLimit { stored: 2, bets: 2, limit: 3, .. }), "{err}");
    assert_eq!(fs::metadata(&path).unwrap().len(), len);
    assert_eq!(store.store_batch(agency(1), 2, &two[..1]).await.unwrap(), Stored::New);
    assert_eq!(store.store_batch(agency(2), 1, &[bet(2, "3", 3)]).await.unwrap(), Stored::New);
    for (seq, bets) in [(1, &[][..]), (0, &two[..1])] {
        let err = store.store_batch(agency(2), seq, bets).await.unwrap_err();
        assert!(matches!(err, StorageError::BadBatch { .. }), "{err}");
    }
    drop(store);

    let options = StoreOptions { min_free_bytes: u64::MAX / 2, ..StoreOptions::default() };
    let (store, _) = BetStore::open_with(&path, options).await.unwrap();
    let len = fs::metadata(&path).unwrap().len();
    let journal = fs::read(store.journal_path()).unwrap();
    let err = store.store_batch(agency(2), 2, &[bet(2, "4", 4)]).await.unwrap_err();
    assert!(matches!(err, StorageError::LowDiskSpace { .. }), "{err}");
    assert_eq!(store.stats(), StoreStats { groups: 0, syncs: 0 }, "a refused group is no commit");
    assert_eq!(fs::metadata(&path).unwrap().len(), len);
    assert_eq!(fs::read(store.journal_path()).unwrap(), journal);
    // A retry of a batch of the same failed group (a takeover can send it again while the first
    // copy is still queued) is not acknowledged as stored either: nothing of the group was.
    let first = store.submit(agency(2), 2, &[bet(2, "4", 4)]);
    let retry = store.submit(agency(2), 2, &[bet(2, "4", 4)]);
    store.commit_queued().await;
    for ack in [first, retry] {
        let err = ack.await.unwrap_err();
        assert!(matches!(err, StorageError::LowDiskSpace { .. }), "{err}");
    }
}

#[tokio::test]
async fn a_group_commit_writes_at_most_max_group_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir).await;
    let batch: Vec<Bet> = (0..400).map(|i| bet(1, &i.to_string(), i)).collect();
    let batches = MAX_GROUP_BYTES as usize / encode(&batch) + 2;
    let acks: Vec<Ack> =
        (1..=batches as u64).map(|seq| store.submit(agency(1), seq, &batch)).collect();
    store.commit_queued().await;
    for ack in acks {
        assert_eq!(ack.await.unwrap(), Stored::New);
    }
    assert_eq!(store.stats().groups, 2, "split at {MAX_GROUP_BYTES} bytes");
}

fn encode(bets: &[Bet]) -> usize {
    rows::encode_rows(bets).len()
}

#[tokio::test]
async fn concurrent_batches_share_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir).await;
    let store = Arc::new(store);
    let mut tasks = tokio::task::JoinSet::new();
    for a in 1..=50 {
        let store = store.clone();
        tasks.spawn(async move {
            let batch = [bet(a, &a.to_string(), a)];
            store.store_batch(agency(a), 1, &batch).await.unwrap()
        });
    }
    while let Some(stored) = tasks.join_next().await {
        assert_eq!(stored.unwrap(), Stored::New);
    }
    assert_eq!(loaded(&store).len(), 50);
    let stats = store.stats();
    assert!(stats.groups < 50, "batches waiting for a sync share the next one: {stats:?}");
    // One sync per group: the journal's (it carries the rows; the bets file is synced later).
    assert_eq!(stats.syncs, stats.groups);
}

#[tokio::test]
async fn the_draw_reads_the_stored_bets() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(&dir).await;
    store.store_batch(agency(1), 1, &[bet(1, "11", 7574), bet(1, "12", 1)]).await.unwrap();
    store.store_batch(agency(5), 1, &[bet(5, "7", 7574)]).await.unwrap();
    let draw = store.draw().await.unwrap();
    assert_eq!(draw.bets(), 3);
    assert_eq!(draw.winners_for(agency(1)), [Document::parse("11").unwrap()]);
    assert_eq!(draw.winners_for(agency(5)), [Document::parse("7").unwrap()]);
    let late = store.store_batch(agency(2), 1, &[bet(2, "21", 1)]).await.unwrap_err();
    assert!(matches!(late, StorageError::AgencyClosed { .. }), "no bets after the draw: {late}");
}

/// The table of batches `storage::decide` owns, through the file store's committer: the same
/// answers as the rule itself (and as the database's, in `tests/postgres.rs`).
#[tokio::test]
async fn the_file_store_decides_the_table_of_batches() {
    use crate::storage::decide::{Answer, TABLE, TABLE_LIMIT};
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { max_bets_per_agency: TABLE_LIMIT, ..StoreOptions::default() };
    let (store, _) = BetStore::open_with(dir.path().join("bets.csv"), options).await.unwrap();
    for (i, &((seq, count), expected)) in TABLE.iter().enumerate() {
        let bets: Vec<Bet> = (0..count).map(|n| bet(1, &format!("{i}{n}"), 1)).collect();
        let answer = store.store_batch(agency(1), seq, &bets[..]).await;
        assert_eq!(Answer::of(&answer), expected, "batch {seq} of {count} bets");
    }
    let progress = store.progress(agency(1)).await;
    assert_eq!((progress.last_seq, progress.stored_bets), (3, 10));
}
