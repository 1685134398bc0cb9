//! Unit tests of the log store's own semantics. openraft's conformance `Suite` runs in
//! `tests/openraft_suite.rs`; the syscall-level fsync proof is `tests/fsync_strace.rs`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use openraft::testing::{blank_ent, log_id};
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::type_config::TypeConfigExt;

use super::*;

openraft::declare_raft_types!(pub(crate) TestConfig: D = String, R = String);

type Store = LogStore<TestConfig>;

fn lid(term: u64, index: u64) -> LogIdOf<TestConfig> {
    log_id::<TestConfig>(term, 1, index)
}

fn entries(term: u64, range: std::ops::RangeInclusive<u64>) -> Vec<EntryOf<TestConfig>> {
    range.map(|i| blank_ent::<TestConfig>(term, 1, i)).collect()
}

/// Appends and waits for the flush callback, returning the callback's result.
async fn append_and_wait(store: &mut Store, ents: Vec<EntryOf<TestConfig>>) {
    let (tx, rx) = TestConfig::oneshot();
    store.append(ents, IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().unwrap();
}

async fn indexes(store: &mut Store) -> Vec<u64> {
    store
        .try_get_log_entries(..)
        .await
        .unwrap()
        .iter()
        .map(|e| e.index())
        .collect()
}

#[tokio::test]
async fn reopen_keeps_vote_entries_committed_and_purged() {
    let dir = tempfile::tempdir().unwrap();
    let vote = VoteOf::<TestConfig>::new(3, 1);
    {
        let mut store = Store::open(dir.path()).unwrap();
        store.save_vote(&vote).await.unwrap();
        append_and_wait(&mut store, entries(3, 1..=5)).await;
        store.save_committed(Some(lid(3, 4))).await.unwrap();
        store.purge(lid(3, 2)).await.unwrap();
        let _reader_clone_dropped_too = store.get_log_reader().await;
    }
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    assert_eq!(store.read_committed().await.unwrap(), Some(lid(3, 4)));
    assert_eq!(indexes(&mut store).await, vec![3, 4, 5]);
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(lid(3, 2)));
    assert_eq!(state.last_log_id, Some(lid(3, 5)));
}

#[tokio::test]
async fn fresh_store_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.read_vote().await.unwrap(), None);
    assert_eq!(store.read_committed().await.unwrap(), None);
    let state = store.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (None, None));
    assert_eq!(store.log_stats(), LogStats::default());
}

#[tokio::test]
async fn second_open_of_the_same_dir_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(dir.path()).unwrap();
    assert!(
        Store::open(dir.path()).is_err(),
        "sled's lock keeps two stores off one log"
    );
}

#[tokio::test]
async fn truncate_after_removes_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    append_and_wait(&mut store, entries(1, 1..=10)).await;

    store.truncate_after(Some(lid(1, 5))).await.unwrap();
    assert_eq!(indexes(&mut store).await, vec![1, 2, 3, 4, 5]);
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(lid(1, 5))
    );

    // A new leader's entries go after the truncation point.
    append_and_wait(&mut store, entries(2, 6..=7)).await;
    let tail = store.try_get_log_entries(5..).await.unwrap();
    let ids: Vec<_> = tail.iter().map(|e| e.log_id()).collect();
    assert_eq!(ids, vec![lid(1, 5), lid(2, 6), lid(2, 7)]);

    store.truncate_after(None).await.unwrap();
    assert!(indexes(&mut store).await.is_empty());
    assert_eq!(store.get_log_state().await.unwrap().last_log_id, None);
}

#[tokio::test]
async fn purge_removes_the_head_and_is_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    append_and_wait(&mut store, entries(1, 1..=10)).await;

    store.purge(lid(1, 4)).await.unwrap();
    assert_eq!(indexes(&mut store).await, (5..=10).collect::<Vec<_>>());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(lid(1, 4)));
    assert_eq!(state.last_log_id, Some(lid(1, 10)));
    assert_eq!(
        store.log_stats(),
        LogStats {
            first_index: Some(5),
            last_index: Some(10),
            entries: 6,
            bytes: store.log_stats().bytes,
        }
    );

    // The purge point never moves back.
    store.purge(lid(1, 2)).await.unwrap();
    assert_eq!(
        store.get_log_state().await.unwrap().last_purged_log_id,
        Some(lid(1, 4))
    );

    // Purging past the end (a snapshot installed ahead of the log) empties it, and the last
    // log id falls back to the purge point.
    store.purge(lid(2, 15)).await.unwrap();
    assert!(indexes(&mut store).await.is_empty());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(lid(2, 15)));
    assert_eq!(state.last_log_id, Some(lid(2, 15)));

    append_and_wait(&mut store, entries(2, 16..=16)).await;
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(lid(2, 16))
    );
}

#[tokio::test]
async fn leftovers_below_the_purge_point_do_not_hide_it() {
    // Simulates a crash between recording a purge and deleting the entries.
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    append_and_wait(&mut store, entries(1, 1..=3)).await;
    let bytes = crate::codec::encode("t", &lid(1, 9)).unwrap();
    store
        .inner
        .meta
        .insert(meta_key::LAST_PURGED, bytes)
        .unwrap();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(lid(1, 9)));
}

#[tokio::test]
async fn reads_respect_ranges_and_detect_holes() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    append_and_wait(&mut store, entries(1, 1..=6)).await;

    let idx = |v: Vec<EntryOf<TestConfig>>| v.iter().map(|e| e.index()).collect::<Vec<_>>();
    assert_eq!(
        idx(store.try_get_log_entries(2..4).await.unwrap()),
        vec![2, 3]
    );
    assert_eq!(
        idx(store.try_get_log_entries(2..=4).await.unwrap()),
        vec![2, 3, 4]
    );
    assert_eq!(
        idx(store.try_get_log_entries(5..100).await.unwrap()),
        vec![5, 6]
    );
    assert!(store.try_get_log_entries(4..4).await.unwrap().is_empty());
    #[allow(clippy::reversed_empty_ranges)]
    let inverted = store.try_get_log_entries(5..2).await.unwrap();
    assert!(inverted.is_empty());
    assert_eq!(
        idx(store.limited_get_log_entries(1, 3).await.unwrap()),
        vec![1, 2]
    );

    // A hole (which the store never creates itself) is an error, not a silent short read.
    store.inner.logs.remove(crate::codec::index_key(3)).unwrap();
    let err = store.try_get_log_entries(1..=6).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn save_vote_is_synced_before_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let before = store.sync_stats().fsyncs;
    store
        .save_vote(&VoteOf::<TestConfig>::new(1, 1))
        .await
        .unwrap();
    assert_eq!(store.sync_stats().fsyncs, before + 1);
}

/// The flush callback must not fire before the entries are fsynced. A slow disk (the test hook
/// sleeps inside the sync, before flushing) makes a premature callback observable every time.
#[tokio::test]
async fn append_callback_fires_only_after_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.inner.sync_delay_ms.store(300, Ordering::SeqCst);

    let (tx, rx) = TestConfig::oneshot();
    store
        .append(entries(1, 1..=3), IOFlushed::signal(tx))
        .await
        .unwrap();

    // Readable at once (openraft requires it), but not yet durable.
    assert_eq!(indexes(&mut store).await, vec![1, 2, 3]);
    assert_eq!(
        store.sync_stats(),
        SyncStats {
            fsyncs: 0,
            synced_last_index: None
        }
    );

    let observer = store.clone();
    let observed_at_callback = async move {
        rx.await.unwrap().unwrap();
        observer.sync_stats()
    };
    let stats = tokio::time::timeout(Duration::from_secs(10), observed_at_callback)
        .await
        .unwrap();
    assert_eq!(stats.fsyncs, 1, "callback fired before the fsync completed");
    assert!(
        stats.synced_last_index >= Some(3),
        "callback before entries were durable: {stats:?}"
    );
}

/// Appends that arrive while an fsync is running share the next one (group commit).
#[tokio::test]
async fn concurrent_appends_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.inner.sync_delay_ms.store(200, Ordering::SeqCst);

    let mut receivers = Vec::new();
    for i in 1..=10 {
        let (tx, rx) = TestConfig::oneshot();
        store
            .append(entries(1, i..=i), IOFlushed::signal(tx))
            .await
            .unwrap();
        receivers.push(rx);
    }
    for rx in receivers {
        rx.await.unwrap().unwrap();
    }
    let stats = store.sync_stats();
    assert!(stats.fsyncs <= 2, "10 appends took {} fsyncs", stats.fsyncs);
    assert_eq!(stats.synced_last_index, Some(10));
}

#[tokio::test]
async fn one_fsync_per_append_call_not_per_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    append_and_wait(&mut store, entries(1, 1..=100)).await;
    assert_eq!(
        store.sync_stats(),
        SyncStats {
            fsyncs: 1,
            synced_last_index: Some(100)
        }
    );
}

/// Entries bigger than sled's blob threshold live in their own files; they must survive too.
#[tokio::test]
async fn large_entries_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let big = "x".repeat(300 * 1024);
    {
        let mut store = Store::open(dir.path()).unwrap();
        let entry = EntryOf::<TestConfig>::new_normal(lid(1, 1), big.clone());
        append_and_wait(&mut store, vec![entry]).await;
    }
    assert!(
        std::fs::read_dir(dir.path().join("blobs")).unwrap().count() > 0,
        "test premise: sled stored the entry as a blob file"
    );
    let mut store = Store::open(dir.path()).unwrap();
    let got = store.try_get_log_entries(1..=1).await.unwrap();
    match &got[0].payload {
        openraft::EntryPayload::Normal(data) => assert_eq!(data.len(), big.len()),
        other => panic!("unexpected payload {other:?}"),
    }
}

#[test]
fn works_without_a_tokio_runtime() {
    // openraft may run on another runtime; the store then does its disk work inline.
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    futures::executor::block_on(async {
        store
            .save_vote(&VoteOf::<TestConfig>::new(1, 1))
            .await
            .unwrap();
        let (tx, rx) = TestConfig::oneshot();
        store
            .append(entries(1, 1..=2), IOFlushed::signal(tx))
            .await
            .unwrap();
        rx.await.unwrap().unwrap();
    });
    assert_eq!(store.sync_stats().fsyncs, 2);
}

#[tokio::test]
async fn log_bytes_follow_appends_purges_truncations_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let entry =
        |i: u64, size: usize| EntryOf::<TestConfig>::new_normal(lid(1, i), "x".repeat(size));
    let bytes = {
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.log_stats().bytes, 0);
        append_and_wait(&mut store, (1..=10).map(|i| entry(i, 1000)).collect()).await;
        let full = store.log_stats().bytes;
        assert!((10_000..11_000).contains(&full), "{full}");
        store.purge(lid(1, 4)).await.unwrap();
        let after_purge = store.log_stats().bytes;
        assert_eq!(after_purge, full / 10 * 6, "six equal entries left");
        store.truncate_after(Some(lid(1, 8))).await.unwrap();
        assert_eq!(store.log_stats().bytes, full / 10 * 4);
        store.log_stats().bytes
    };
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.log_stats().bytes, bytes, "counted again at open");
}
