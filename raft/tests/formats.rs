//! The log entry format is kept across versions: entries written by an earlier build (in
//! the sled log, or arriving in AppendEntries from a node not yet upgraded) still decode
//! and mean what they meant.
//!
//! `fixtures/entries-v1.bin` is a bincode `Vec<Entry>` (the codec of the log store and of
//! Raft RPC) written by the build before key caps: one entry of every payload kind and of
//! every `Request` variant that build had. `fixtures/entries-v2.bin` adds the variant of
//! the key cap (`IngestCapped`), `fixtures/entries-v3.bin` the variant of the row budget
//! (`IngestBudgeted`). Write a new fixture only for a new version, never over an old one:
//! `cargo test -p tally-raft --test formats -- --ignored` writes the newest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use openraft::testing::log_id;
use openraft::{EntryPayload, Membership};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use tally_analytics::{Event, IngestBatch, KeyCaps, Kind};
use tally_raft::state_machine::StateMachine;
use tally_raft::types::Entry;
use tally_raft::Role;
use tally_raft::{rpc, KeyCapsV1, Request, TallyNode, TypeConfig};
use tally_storage::SnapshotFiles;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The ingest batch the v1 fixture carries.
fn v1_batch() -> IngestBatch {
    let event = |id: &str, resource: &str| Event {
        event_id: id.into(),
        ts_ms: 1_714_564_800_000,
        kind: Kind::Request,
        api_name: "pets".into(),
        api_version: "v1".into(),
        tenant: "acme.com".into(),
        resource: Some(resource.into()),
        method: Some("GET".into()),
        response_code: Some(200),
        response_time_ms: Some(12),
        ..Event::default()
    };
    IngestBatch {
        ingest_ms: 1_714_564_801_000,
        requests: vec![
            vec![event("e-1", "/pets"), event("e-2", "/pets/{id}")],
            vec![Event {
                kind: Kind::Fault,
                response_code: None,
                error_code: Some("101503".into()),
                ..event("e-3", "/store")
            }],
        ],
    }
}

fn v1_entries() -> Vec<Entry> {
    let voters: BTreeSet<u64> = [1, 2, 3].into();
    let nodes: BTreeMap<u64, TallyNode> = [
        (1, TallyNode::data("127.0.0.1:7101")),
        (2, TallyNode::data("127.0.0.1:7102")),
        (3, TallyNode::witness("127.0.0.1:7103")),
    ]
    .into();
    let membership = Membership::<u64, TallyNode>::new(vec![voters], nodes).unwrap();
    vec![
        Entry {
            log_id: log_id::<TypeConfig>(1, 1, 1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id::<TypeConfig>(1, 1, 2),
            payload: EntryPayload::Membership(membership),
        },
        Entry {
            log_id: log_id::<TypeConfig>(1, 1, 3),
            payload: EntryPayload::Normal(Request::Ingest(v1_batch())),
        },
        Entry {
            log_id: log_id::<TypeConfig>(2, 2, 4),
            payload: EntryPayload::Normal(Request::SinkCursor(3)),
        },
        Entry {
            log_id: log_id::<TypeConfig>(2, 2, 5),
            payload: EntryPayload::Normal(Request::SnapshotFloor(4)),
        },
    ]
}

/// The v1 entries and one entry of the variant the key cap added.
fn v2_entries() -> Vec<Entry> {
    let mut entries = v1_entries();
    entries.push(Entry {
        log_id: log_id::<TypeConfig>(2, 2, 6),
        payload: EntryPayload::Normal(Request::IngestCapped {
            caps: KeyCapsV1 {
                max_keys_per_tenant_bucket: 1,
                max_tenants_per_bucket: 7,
            },
            batch: IngestBatch {
                ingest_ms: 1_714_564_802_000,
                requests: vec![v1_batch().requests[0]
                    .iter()
                    .enumerate()
                    .map(|(i, e)| Event {
                        event_id: format!("f-{i}"),
                        resource: Some(format!("/new/{i}")),
                        ..e.clone()
                    })
                    .collect()],
            },
        }),
    });
    entries
}

/// The v2 entries and one entry of the variant the row budget added: two new tenants'
/// keys in a bucket holding four rows, under a budget of five.
fn v3_entries() -> Vec<Entry> {
    let mut entries = v2_entries();
    entries.push(Entry {
        log_id: log_id::<TypeConfig>(3, 1, 7),
        payload: EntryPayload::Normal(Request::IngestBudgeted {
            caps: KeyCaps {
                max_keys_per_tenant_bucket: 100,
                max_tenants_per_bucket: 7,
                max_rows_per_granularity: 5,
            },
            batch: IngestBatch {
                ingest_ms: 1_714_564_803_000,
                requests: vec![["beta.org", "gamma.org"]
                    .iter()
                    .enumerate()
                    .map(|(i, tenant)| Event {
                        event_id: format!("g-{i}"),
                        tenant: tenant.to_string(),
                        ..v1_batch().requests[0][0].clone()
                    })
                    .collect()],
            },
        }),
    });
    entries
}

/// Wrote `fixtures/entries-v1.bin` with the build before key caps, `entries-v2.bin` with
/// the build before the row budget, and now writes `fixtures/entries-v3.bin`. Kept (ignored)
/// so the way fixtures are made stays readable.
#[test]
#[ignore = "writes the committed fixture; run only to create a new fixture version"]
fn write_entries_v3_fixture() {
    let bytes = rpc::encode(&v3_entries()).unwrap();
    std::fs::write(fixture("entries-v3.bin"), bytes).unwrap();
}

#[test]
fn entries_v1_fixture_decodes_to_what_was_written() {
    let bytes = std::fs::read(fixture("entries-v1.bin")).unwrap();
    let entries: Vec<Entry> = rpc::decode(&bytes).unwrap();
    assert_eq!(entries, v1_entries());
    assert!(matches!(
        &entries[2].payload,
        EntryPayload::Normal(Request::Ingest(batch)) if batch.requests.len() == 2
    ));
}

#[test]
fn entries_v2_fixture_decodes_to_what_was_written() {
    let bytes = std::fs::read(fixture("entries-v2.bin")).unwrap();
    let entries: Vec<Entry> = rpc::decode(&bytes).unwrap();
    assert_eq!(entries, v2_entries());
    assert_eq!(rpc::encode(&v2_entries()).unwrap(), bytes);
    // The old fixture is a prefix of the new one's entries: nothing old changed shape.
    let v1 = rpc::encode(&v1_entries()).unwrap();
    assert_eq!(v1[1..], bytes[1..v1.len()]);
}

#[test]
fn entries_v3_fixture_decodes_and_the_current_format_roundtrips() {
    let bytes = std::fs::read(fixture("entries-v3.bin")).unwrap();
    let entries: Vec<Entry> = rpc::decode(&bytes).unwrap();
    assert_eq!(entries, v3_entries());
    assert_eq!(rpc::encode(&v3_entries()).unwrap(), bytes);
    let v2 = std::fs::read(fixture("entries-v2.bin")).unwrap();
    assert_eq!(v2[1..], bytes[1..v2.len()], "v2 entries are unchanged");
    // The v2 entry's caps apply without a row budget, as the build that wrote it did.
    let (_, caps) = entries[5].payload_request().ingest().unwrap();
    assert_eq!(caps.max_keys_per_tenant_bucket, 1);
    assert_eq!(caps.max_rows_per_granularity, u32::MAX);
}

/// Entries of every version applied by this build: the v1 ingest entry unlimited (as the
/// old build applied it), the capped one with the caps it carries and no row budget, the
/// budgeted one with its caps and budget, whatever this node's own configuration says.
#[tokio::test]
async fn old_and_new_ingest_entries_apply_with_their_own_caps() {
    let dir = tempfile::tempdir().unwrap();
    let files = SnapshotFiles::open(dir.path(), 3).unwrap();
    let mut sm = StateMachine::open(Role::Data, Arc::new(files)).unwrap();
    let entries = v3_entries();
    let (old, _) = entries[2].payload_request().ingest().unwrap();
    assert_eq!(old.requests.len(), 2);
    assert_eq!(
        entries[2].payload_request().ingest().unwrap().1,
        KeyCaps::UNLIMITED
    );
    let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
    sm.apply(stream).await.unwrap();
    let shared = sm.shared();
    let applied = shared.read();
    assert_eq!(applied.applied_index(), 7);
    let stats = applied.state.stats();
    // v1: e-1, e-2, e-3 under three keys of their own. v2: two new keys of a tenant that
    // already holds three, cap 1: both fold into the tenant's overflow key. v3: two new
    // tenants' keys in the minute that holds those 4 rows, budget 5: the first gets its
    // own row, the second goes to the all-`__other__` key (a sixth row).
    assert_eq!(stats.events_applied, 7);
    assert_eq!(stats.buckets_minute, 6);
    assert_eq!(stats.overflow_events.minute, 3);
    assert_eq!(stats.overflow_keys_minute, 2);
}

trait PayloadRequest {
    fn payload_request(&self) -> &Request;
}

impl PayloadRequest for Entry {
    fn payload_request(&self) -> &Request {
        match &self.payload {
            EntryPayload::Normal(request) => request,
            other => panic!("not a normal entry: {other:?}"),
        }
    }
}
