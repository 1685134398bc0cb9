//! The recorded history: every operation a client or the nemesis performed, as Jepsen
//! records it: an `invoke` when it starts, then exactly one completion — `ok` (it happened),
//! `fail` (it certainly did not happen) or `info` (unknown: it may or may not have happened).
//!
//! Written as JSON lines to `history.jsonl`, one [`Op`] per line, in the order recorded.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Who performed an operation: a client (numbered from 0) or the nemesis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Process {
    Client(u32),
    Nemesis(NemesisTag),
}

/// Serializes as the string `"nemesis"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NemesisTag {
    Nemesis,
}

pub const NEMESIS: Process = Process::Nemesis(NemesisTag::Nemesis);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum F {
    /// `POST /v1/events` of one batch.
    Write,
    /// `GET /v1/aggregates?consistency=linearizable`: how many events are counted.
    Read,
    /// `POST /v1/sql` with `consistency: strong`: how many events are in `events`.
    Sql,
    /// The nemesis starts a fault (invoke, then info once it is in place).
    StartFault,
    /// The nemesis heals a fault (invoke, then info once it is healed).
    StopFault,
}

/// A batch of events: ids `<run>-c<client>-<seq>` for `seq` in `first .. first + count`.
/// A retry or a replay sends the very same ids again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub client: u32,
    pub first: u64,
    pub count: u32,
    /// 0 for the first send, 1.. for retries after a failed or unknown outcome.
    pub attempt: u32,
    /// A deliberate re-send of a batch already acknowledged (gateways deliver at least once).
    pub replay: bool,
}

/// A fault the nemesis injects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Pairs the start with its stop.
    pub id: u32,
    /// `kill`, `pause`, `partition`, `sink` or `clock`.
    pub kind: String,
    /// Nodes it affects (empty for a record-store outage).
    pub nodes: Vec<u64>,
    /// Human-readable, e.g. "isolate leader 2 from 1, 3".
    pub description: String,
}

/// One line of `history.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history, from 0.
    pub index: u64,
    /// Milliseconds since the run started.
    pub time_ms: f64,
    pub process: Process,
    #[serde(rename = "type")]
    pub kind: OpType,
    pub f: F,
    /// The node a client operation was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Batch>,
    /// Read result: events counted (`read`) or rows in `events` (`sql`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Log index in the answer (write: the entry's index; read: the applied index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_index: Option<u64>,
    /// Write answer: how many of the batch the cluster reported as duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// Why an operation failed or is unknown (HTTP status and error code, or transport error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// On a completion: milliseconds since its invoke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

impl Op {
    /// A bare operation; the recorder fills in `index` and `time_ms`.
    pub fn new(process: Process, kind: OpType, f: F) -> Op {
        Op {
            index: 0,
            time_ms: 0.0,
            process,
            kind,
            f,
            node: None,
            batch: None,
            count: None,
            log_index: None,
            duplicates: None,
            fault: None,
            error: None,
            latency_ms: None,
        }
    }
}

/// Appends operations to memory and to `history.jsonl` as they happen, so a run that is
/// interrupted still leaves the history it recorded.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
    start: Instant,
}

struct Inner {
    ops: Vec<Op>,
    file: std::io::BufWriter<std::fs::File>,
}

impl Recorder {
    pub fn create(path: &Path, start: Instant) -> anyhow::Result<Recorder> {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Recorder {
            inner: Arc::new(Mutex::new(Inner {
                ops: Vec::new(),
                file: std::io::BufWriter::new(file),
            })),
            start,
        })
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// Records `op` now and returns it as recorded.
    pub fn record(&self, mut op: Op) -> Op {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        op.index = inner.ops.len() as u64;
        op.time_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        if let Ok(line) = serde_json::to_string(&op) {
            let _ = writeln!(inner.file, "{line}");
        }
        inner.ops.push(op.clone());
        op
    }

    /// Progress figures so far: events acknowledged, writes with unknown outcome, faults.
    pub fn tally(&self) -> (u64, u64, u64) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut t = (0, 0, 0);
        for op in &inner.ops {
            match (op.f, op.kind) {
                (F::Write, OpType::Ok) => {
                    t.0 += op
                        .batch
                        .map_or(0, |b| u64::from(b.count) * u64::from(!b.replay))
                }
                (F::Write, OpType::Info) => t.1 += 1,
                (F::StartFault, OpType::Info) => t.2 += 1,
                _ => {}
            }
        }
        t
    }

    /// The first batch a client got acknowledged (not a replay), if any yet.
    pub fn first_acked_batch(&self) -> Option<Batch> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .ops
            .iter()
            .filter(|op| op.f == F::Write && op.kind == OpType::Ok && op.process != NEMESIS)
            .find_map(|op| op.batch.filter(|b| !b.replay))
    }

    /// Flushes the file and returns everything recorded so far.
    pub fn finish(&self) -> anyhow::Result<Vec<Op>> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.file.flush().context("writing history.jsonl")?;
        Ok(inner.ops.clone())
    }
}

/// Reads a `history.jsonl` back.
pub fn load(path: &Path) -> anyhow::Result<Vec<Op>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {}: not a history op", path.display(), i + 1))
        })
        .collect()
}
