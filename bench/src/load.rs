//! The write load: `W` writers post small batches of unique events, round-robin to every
//! node, at a fixed total rate, and record what happened to each request.
//!
//! The load is open-loop, like gateways that keep sending whatever the cluster does: each
//! writer starts a request on every tick of its schedule whether or not earlier ones have
//! been answered (at most [`MAX_INFLIGHT_PER_WRITER`] at once; a tick beyond that is counted
//! as skipped). So requests keep starting through a failover, and the first one that
//! started after the signal and was acknowledged tells when the cluster took writes again.
//!
//! A failed attempt (503/429, connection error, timeout) is retried on the next node with
//! the **same** event ids, with a short back-off and within a time budget; the request's
//! record keeps its first start time, its final end time, its attempts and each failure.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tally_jepsen::history::{Batch, Op, OpType, Process, F};
use tally_jepsen::workload;
use tokio::task::JoinSet;

/// Requests one writer may have in flight; more would only queue in the client.
pub const MAX_INFLIGHT_PER_WRITER: usize = 256;

#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub writers: u32,
    /// Events per second, all writers together.
    pub rate: u32,
    pub batch: u32,
    pub attempt_timeout: Duration,
    /// A request is given up ("failed for good") once this much time has passed since its
    /// first attempt.
    pub retry_for: Duration,
}

/// Why one attempt failed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// The connection was refused: nothing reached the node (it was down or not listening).
    Refused,
    /// No answer within the attempt timeout.
    Timeout,
    /// The connection broke after the request was sent (reset, closed early).
    Broken,
    /// An HTTP error status, with the `error.code` of the body.
    Status(u16, String),
}

impl Failure {
    pub fn label(&self) -> String {
        match self {
            Failure::Refused => "connection refused".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Broken => "connection broken".into(),
            Failure::Status(s, code) => format!("{s} {code}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 200, with the Raft log index that carried it.
    Acked(u64),
    /// Never acknowledged within the retry budget.
    FailedForGood,
    /// A 4xx other than 429: a bench bug, reported as such.
    Rejected(u16, String),
}

#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub writer: u32,
    pub seq: u64,
    /// Since the bench's epoch.
    pub start: Duration,
    pub end: Duration,
    pub attempts: u32,
    pub outcome: Outcome,
    /// (node index tried, why it failed), in order.
    pub failures: Vec<(usize, Failure)>,
}

impl RequestRecord {
    pub fn acked(&self) -> bool {
        matches!(self.outcome, Outcome::Acked(_))
    }
}

/// The running load. Records are appended as requests finish.
pub struct Load {
    stop: Arc<AtomicBool>,
    writers: JoinSet<()>,
    shared: Arc<Shared>,
}

struct Shared {
    epoch: Instant,
    records: Mutex<Vec<RequestRecord>>,
    skipped: AtomicU64,
    /// Since the epoch, in µs; `u64::MAX` when none yet.
    last_failure_us: AtomicU64,
    last_ack_us: AtomicU64,
}

impl Load {
    pub fn start(cfg: LoadConfig, urls: Vec<String>, epoch: Instant) -> anyhow::Result<Load> {
        anyhow::ensure!(cfg.writers > 0 && cfg.rate > 0 && cfg.batch > 0);
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_millis(500))
            .pool_max_idle_per_host(64)
            .build()?;
        let shared = Arc::new(Shared {
            epoch,
            records: Mutex::new(Vec::new()),
            skipped: AtomicU64::new(0),
            last_failure_us: AtomicU64::new(u64::MAX),
            last_ack_us: AtomicU64::new(u64::MAX),
        });
        let stop = Arc::new(AtomicBool::new(false));
        // Each writer ticks every writers*batch/rate seconds: together, `rate` events/s.
        let period = Duration::from_secs_f64(
            f64::from(cfg.writers) * f64::from(cfg.batch) / f64::from(cfg.rate),
        );
        let urls: Arc<[String]> = urls.into();
        let mut writers = JoinSet::new();
        for w in 0..cfg.writers {
            writers.spawn(writer(
                w,
                period,
                cfg.clone(),
                http.clone(),
                urls.clone(),
                shared.clone(),
                stop.clone(),
            ));
        }
        Ok(Load {
            stop,
            writers,
            shared,
        })
    }

    pub fn now(&self) -> Duration {
        self.shared.epoch.elapsed()
    }

    /// Records of the requests finished so far, from position `from` on (they are appended
    /// in the order they finish).
    pub fn records_since(&self, from: usize) -> Vec<RequestRecord> {
        let records = self.shared.records.lock().expect("records lock");
        records.get(from..).map(<[_]>::to_vec).unwrap_or_default()
    }

    pub fn finished(&self) -> usize {
        self.shared.records.lock().expect("records lock").len()
    }

    pub fn skipped(&self) -> u64 {
        self.shared.skipped.load(Ordering::Relaxed)
    }

    /// Time since the last failed attempt, if any failed.
    pub fn since_last_failure(&self) -> Option<Duration> {
        since(&self.shared, &self.shared.last_failure_us)
    }

    /// Time since the last acknowledgement, if any.
    pub fn since_last_ack(&self) -> Option<Duration> {
        since(&self.shared, &self.shared.last_ack_us)
    }

    /// Stops starting requests, lets those in flight finish (each is bounded by its retry
    /// budget), and returns every record.
    pub async fn stop(mut self, within: Duration) -> (Vec<RequestRecord>, bool) {
        self.stop.store(true, Ordering::Release);
        let drained = tokio::time::timeout(within, async {
            while self.writers.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !drained {
            self.writers.abort_all();
        }
        let records = std::mem::take(&mut *self.shared.records.lock().expect("records lock"));
        (records, drained)
    }
}

fn since(shared: &Shared, at: &AtomicU64) -> Option<Duration> {
    match at.load(Ordering::Acquire) {
        u64::MAX => None,
        us => Some(
            shared
                .epoch
                .elapsed()
                .saturating_sub(Duration::from_micros(us)),
        ),
    }
}

/// The run tag of the chaos suite's workload ([`tally_jepsen::workload`]) that the bench's
/// events use: their `api_name` (the verification filters on it) and the prefix of their ids.
pub const BENCH_API: &str = "FailoverBench";

/// The events of request `seq` of writer `w`, as a chaos-suite batch: ids
/// `FailoverBench-c<w>-<n>` for the `batch` consecutive `n` from `seq * batch`.
pub fn request_batch(w: u32, seq: u64, batch: u32) -> Batch {
    Batch {
        client: w,
        first: seq * u64::from(batch),
        count: batch,
        attempt: 0,
        replay: false,
    }
}

fn batch_body(w: u32, seq: u64, batch: u32) -> bytes::Bytes {
    workload::batch_body(
        BENCH_API,
        &request_batch(w, seq, batch),
        tally_jepsen::now_ms(),
    )
    .into()
}

/// The records as a chaos-suite history (an invoke and a completion per attempt: `ok`,
/// `info` for a retried failure whose outcome is unknown, `fail` for a 4xx), for its
/// checkers.
pub fn history(records: &[RequestRecord], batch: u32) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut push = |kind: OpType, r: &RequestRecord, attempt: u32, at: Duration| {
        let mut op = Op::new(Process::Client(r.writer), kind, F::Write);
        op.index = ops.len() as u64;
        op.time_ms = at.as_secs_f64() * 1000.0;
        op.batch = Some(Batch {
            attempt,
            ..request_batch(r.writer, r.seq, batch)
        });
        if let (OpType::Ok, Outcome::Acked(index)) = (kind, &r.outcome) {
            op.log_index = Some(*index);
        }
        ops.push(op);
    };
    for r in records {
        for (attempt, _) in r.failures.iter().enumerate() {
            push(OpType::Invoke, r, attempt as u32, r.start);
            push(OpType::Info, r, attempt as u32, r.start);
        }
        let last = r.failures.len() as u32;
        match r.outcome {
            Outcome::Acked(_) => {
                push(OpType::Invoke, r, last, r.start);
                push(OpType::Ok, r, last, r.end);
            }
            Outcome::Rejected(..) => {
                push(OpType::Invoke, r, last, r.start);
                push(OpType::Fail, r, last, r.end);
            }
            // Every attempt failed with an unknown outcome, each recorded above.
            Outcome::FailedForGood => {}
        }
    }
    ops
}

async fn writer(
    w: u32,
    period: Duration,
    cfg: LoadConfig,
    http: reqwest::Client,
    urls: Arc<[String]>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(period);
    // After a stall, go on at the normal pace rather than firing a burst.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inflight = JoinSet::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Acquire) {
        tick.tick().await;
        while inflight.try_join_next().is_some() {}
        if inflight.len() >= MAX_INFLIGHT_PER_WRITER {
            shared.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let first_node = (seq as usize * cfg.writers as usize + w as usize) % urls.len();
        inflight.spawn(request(
            w,
            seq,
            first_node,
            cfg.clone(),
            http.clone(),
            urls.clone(),
            shared.clone(),
        ));
        seq += 1;
    }
    while inflight.join_next().await.is_some() {}
}

async fn request(
    w: u32,
    seq: u64,
    first_node: usize,
    cfg: LoadConfig,
    http: reqwest::Client,
    urls: Arc<[String]>,
    shared: Arc<Shared>,
) {
    let body = batch_body(w, seq, cfg.batch);
    let start = shared.epoch.elapsed();
    let mut failures = Vec::new();
    let mut attempts = 0u32;
    let outcome = loop {
        let node = (first_node + attempts as usize) % urls.len();
        attempts += 1;
        let failure = match attempt(&http, &urls[node], body.clone(), cfg.attempt_timeout).await {
            Ok(index) => break Outcome::Acked(index),
            Err(AttemptError::Rejected(status, code)) => break Outcome::Rejected(status, code),
            Err(AttemptError::Retry(f)) => f,
        };
        shared
            .last_failure_us
            .store(shared.epoch.elapsed().as_micros() as u64, Ordering::Release);
        // A refused connection reached no node: try the next one at once. Anything else
        // backs off a little (not `Retry-After: 1`, which would blur the gap being
        // measured; the bench's rate is low).
        let pause = match failure {
            Failure::Refused => Duration::from_millis(10),
            _ => Duration::from_millis(25 * u64::from(attempts.min(10))),
        };
        failures.push((node, failure));
        if shared.epoch.elapsed() + pause >= start + cfg.retry_for {
            break Outcome::FailedForGood;
        }
        tokio::time::sleep(pause).await;
    };
    let end = shared.epoch.elapsed();
    if matches!(outcome, Outcome::Acked(_)) {
        shared
            .last_ack_us
            .store(end.as_micros() as u64, Ordering::Release);
    }
    shared
        .records
        .lock()
        .expect("records lock")
        .push(RequestRecord {
            writer: w,
            seq,
            start,
            end,
            attempts,
            outcome,
            failures,
        });
}

enum AttemptError {
    Retry(Failure),
    Rejected(u16, String),
}

async fn attempt(
    http: &reqwest::Client,
    base: &str,
    body: bytes::Bytes,
    timeout: Duration,
) -> Result<u64, AttemptError> {
    let resp = http
        .post(format!("{base}/v1/events"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| AttemptError::Retry(classify(&e)))?;
    let status = resp.status().as_u16();
    let answer: Value = match resp.bytes().await {
        Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
        Err(e) => return Err(AttemptError::Retry(classify(&e))),
    };
    let code = || answer["error"]["code"].as_str().unwrap_or("").to_string();
    match status {
        200 => Ok(answer["index"].as_u64().unwrap_or(0)),
        429 | 500..=599 => Err(AttemptError::Retry(Failure::Status(status, code()))),
        _ => Err(AttemptError::Rejected(
            status,
            format!("{}: {answer}", code()),
        )),
    }
}

fn classify(e: &reqwest::Error) -> Failure {
    if e.is_timeout() {
        Failure::Timeout
    } else if e.is_connect() {
        Failure::Refused
    } else {
        Failure::Broken
    }
}

/// How many failed attempts of each kind `records` hold, by the node that was tried
/// ("503 no_leader @n2": node 2 answered 503 `no_leader`).
pub fn failure_histogram<'a>(
    records: impl IntoIterator<Item = &'a RequestRecord>,
) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in records {
        for (node, f) in &r.failures {
            // Node ids are 1, 2, 3 in the order of the URLs the load was given.
            *out.entry(format!("{} @n{}", f.label(), node + 1))
                .or_insert(0) += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_jepsen::checker::{set_full_counted, WriteFacts};

    fn record(writer: u32, seq: u64, outcome: Outcome, failures: usize) -> RequestRecord {
        RequestRecord {
            writer,
            seq,
            start: Duration::from_millis(seq),
            end: Duration::from_millis(seq + 5),
            attempts: failures as u32 + 1,
            outcome,
            failures: vec![(0, Failure::Refused); failures],
        }
    }

    #[test]
    fn request_ids_are_the_chaos_suites_and_do_not_overlap() {
        let b = request_batch(3, 4, 10);
        assert_eq!((b.client, b.first, b.count), (3, 40, 10));
        let next = request_batch(3, 5, 10);
        assert_eq!(b.first + u64::from(b.count), next.first);
        assert_eq!(
            workload::parse_event_id(BENCH_API, &workload::event_id(BENCH_API, 3, 41)),
            Some((3, 41))
        );
    }

    #[test]
    fn bench_events_are_valid() {
        let body = batch_body(1, 2, 10);
        let events =
            tally_analytics::parse_events(&body, tally_analytics::BodyFormat::Json).unwrap();
        assert_eq!(events.len(), 10);
        assert!(events.iter().all(|e| e.api_name == BENCH_API));
    }

    #[test]
    fn the_history_feeds_the_set_full_checker() {
        let records = vec![
            record(0, 0, Outcome::Acked(7), 2),
            record(0, 1, Outcome::FailedForGood, 3),
            record(1, 0, Outcome::Acked(9), 0),
        ];
        let h = history(&records, 2);
        assert_eq!(h.len(), 2 * (3 + 3 + 1));
        let facts = WriteFacts::from_history(&h);
        assert_eq!((facts.attempted(), facts.acked()), (6, 4));
        let id = |c, s| workload::event_id(BENCH_API, c, s);
        // Writer 0's request 1 (ids 2, 3) may have been applied: present is allowed.
        let (ok, c) = set_full_counted(
            BENCH_API,
            &facts,
            &[id(0, 0), id(0, 1), id(0, 2), id(1, 0), id(1, 1)],
        );
        assert!(ok.valid, "{ok:?}");
        assert_eq!((c.present, c.recovered, c.lost), (5, 1, 0));
        let (lost, c) = set_full_counted(BENCH_API, &facts, &[id(0, 0), id(1, 0), id(1, 1)]);
        assert!(!lost.valid);
        assert_eq!(c.lost, 1);
    }
}
