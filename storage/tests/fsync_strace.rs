//! Syscall-level proof that the log store really fsyncs before it acknowledges.
//!
//! The parent test re-runs this test binary (the `#[ignore]`d child below) under
//! `strace -f -y`, then reads the trace: before each acknowledgement the child reports (a
//! `statx` of a marker path, issued right after the vote returned or the `IOFlushed` callback
//! fired), the data written to sled's `db` file must have been followed by a completed
//! `fdatasync` of that file; a large entry stored as a sled blob must have had its blob file
//! and the `blobs/` directory fsynced. Skips (with a message) where strace is unavailable or
//! not permitted; the always-on equivalent is the `SyncStats` unit tests.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::testing::{blank_ent, log_id};
use openraft::type_config::alias::{EntryOf, VoteOf};
use openraft::type_config::TypeConfigExt;
use tally_storage::LogStore;

openraft::declare_raft_types!(pub TestConfig: D = String, R = String);

const CHILD_ENV: &str = "TALLY_STRACE_CHILD_DIR";
const MARKERS: [&str; 3] = ["ack-vote", "ack-append-small", "ack-append-blob"];

/// Tells the tracer "the caller has just been told this is durable".
fn mark(dir: &Path, name: &str) {
    let _ = std::fs::metadata(dir.join(name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of fsync_happens_before_every_acknowledgement"]
async fn strace_child_workload() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let mut store = LogStore::<TestConfig>::open(&dir.join("log")).unwrap();

    store
        .save_vote(&VoteOf::<TestConfig>::new(1, 1))
        .await
        .unwrap();
    mark(dir, MARKERS[0]);

    let small: Vec<EntryOf<TestConfig>> =
        (1..=3).map(|i| blank_ent::<TestConfig>(1, 1, i)).collect();
    let (tx, rx) = TestConfig::oneshot();
    store.append(small, IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().unwrap();
    mark(dir, MARKERS[1]);

    // Bigger than sled's blob threshold (~128 KiB): stored in its own file under blobs/.
    let big =
        EntryOf::<TestConfig>::new_normal(log_id::<TestConfig>(1, 1, 4), "x".repeat(300 * 1024));
    let (tx, rx) = TestConfig::oneshot();
    store.append([big], IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().unwrap();
    mark(dir, MARKERS[2]);
}

#[derive(Debug, Clone, PartialEq)]
enum Event {
    DbWrite,
    DbSync,
    BlobSync,
    BlobDirSync,
    Marker(&'static str),
}

/// Classifies one syscall by its (pid-prefixed) strace line and the path `-y` printed.
fn classify(call: &str, args: &str, log_dir: &str, root: &str) -> Option<Event> {
    let path = args
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(p, _)| p);
    match (call, path) {
        ("pwrite64", Some(p)) if p == format!("{log_dir}/db") => Some(Event::DbWrite),
        ("fdatasync" | "fsync", Some(p)) if p == format!("{log_dir}/db") => Some(Event::DbSync),
        ("fsync", Some(p)) if p == format!("{log_dir}/blobs") => Some(Event::BlobDirSync),
        ("fsync", Some(p)) if p.starts_with(&format!("{log_dir}/blobs/")) => Some(Event::BlobSync),
        ("statx" | "newfstatat" | "stat" | "lstat", _) => MARKERS
            .iter()
            .find(|m| args.contains(&format!("{root}/{m}")))
            .map(|m| Event::Marker(m)),
        _ => None,
    }
}

/// Completed events in completion order. A call split by `-f` into "<unfinished ...>" and
/// "<... resumed>" counts when it resumes, and only if it returned 0 (or a byte count).
fn parse_trace(trace: &str, log_dir: &str, root: &str) -> Vec<Event> {
    let mut pending: HashMap<String, (String, String)> = HashMap::new();
    let mut events = Vec::new();
    for line in trace.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((call, result)) = resumed.split_once(" resumed>") else {
                continue;
            };
            if let Some((pending_call, args)) = pending.remove(pid) {
                if pending_call == call && succeeded(result) {
                    events.extend(classify(call, &args, log_dir, root));
                }
            }
            continue;
        }
        let Some((call, args)) = rest.split_once('(') else {
            continue;
        };
        if args.ends_with("<unfinished ...>") {
            pending.insert(pid.to_string(), (call.to_string(), args.to_string()));
        } else if succeeded(args) || call.contains("stat") {
            events.extend(classify(call, args, log_dir, root));
        }
    }
    events
}

fn succeeded(tail: &str) -> bool {
    tail.rsplit_once(" = ")
        .is_some_and(|(_, ret)| !ret.trim_start().starts_with('-'))
}

#[test]
fn fsync_happens_before_every_acknowledgement() {
    if Command::new("strace").arg("-V").output().is_err() {
        // Never a silent skip: scripts/test.sh installs strace; without it, say what to do.
        panic!("strace is not installed: run ./scripts/test.sh as root, or apt-get install strace");
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let trace_path = root.join("trace.txt");
    let output = Command::new("strace")
        .args([
            "-f",
            "-y",
            "-qq",
            "-e",
            "trace=pwrite64,fdatasync,fsync,statx,newfstatat,stat,lstat",
            "-o",
        ])
        .arg(&trace_path)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "strace_child_workload",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &root)
        .output()
        .unwrap();
    let trace = std::fs::read_to_string(&trace_path).unwrap_or_default();
    if !output.status.success() && trace.is_empty() {
        eprintln!(
            "SKIP: strace could not trace here (no ptrace permission?): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }
    assert!(
        output.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );

    let root = root.to_str().unwrap();
    let log_dir = format!("{root}/log");
    let events = parse_trace(&trace, &log_dir, root);

    let position = |marker| {
        events
            .iter()
            .position(|e| *e == Event::Marker(marker))
            .unwrap_or_else(|| panic!("marker {marker} missing from trace; events: {events:?}"))
    };
    let mut from = 0;
    for marker in MARKERS {
        let at = position(marker);
        let window = &events[from..at];
        let last_write = window.iter().rposition(|e| *e == Event::DbWrite);
        let last_sync = window.iter().rposition(|e| *e == Event::DbSync);
        assert!(
            last_write.is_some(),
            "{marker}: nothing written to db before it: {window:?}"
        );
        assert!(
            last_sync > last_write,
            "{marker}: acknowledged without an fdatasync of db after the last write: {window:?}"
        );
        if marker == "ack-append-blob" {
            assert!(
                window.contains(&Event::BlobSync),
                "{marker}: blob file never fsynced: {window:?}"
            );
            assert!(
                window.contains(&Event::BlobDirSync),
                "{marker}: blobs/ dir never fsynced: {window:?}"
            );
        }
        from = at + 1;
    }
}

#[test]
fn trace_parser_understands_split_calls() {
    let trace = "\
10 pwrite64(7</r/log/db>, \"x\", 1, 0) = 1
11 fdatasync(7</r/log/db> <unfinished ...>
10 statx(AT_FDCWD, \"/r/ack-vote\", 0, STATX_ALL, 0x1) = -1 ENOENT (No such file)
11 <... fdatasync resumed>) = 0
10 statx(AT_FDCWD, \"/r/ack-append-small\", 0, STATX_ALL, 0x1) = -1 ENOENT (No such file)
";
    let events = parse_trace(trace, "/r/log", "/r");
    assert_eq!(
        events,
        vec![
            Event::DbWrite,
            Event::Marker("ack-vote"),
            Event::DbSync,
            Event::Marker("ack-append-small")
        ]
    );
}
