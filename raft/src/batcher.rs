//! Group commit on the leader: many concurrent ingest requests become one Raft entry.
//!
//! Requests queue in a bounded channel. A single loop takes whatever is queued (up to
//! [`BatcherConfig::max_events_per_entry`] events or [`BatcherConfig::max_bytes_per_entry`]
//! bytes), stamps it with the proposer's clock (held near the voters', `crate::clock`) and
//! key caps, and proposes it as one entry; up to [`BatcherConfig::max_inflight`] entries are
//! in flight at once, so while the log is syncing the next group is already forming. A full
//! queue is refused at once ([`IngestError::Overloaded`]) rather than buffered without bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::{ClientWriteError, RaftError};
use tally_analytics::{Event, IngestBatch, KeyCaps};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;

use crate::clock::Stamper;
use crate::error::NotLeader;
use crate::state_machine::Raft;
use crate::tasks::{Cancel, Tasks};
use crate::types::{Request, TypeConfig};

#[derive(Clone, Debug)]
pub struct BatcherConfig {
    /// Requests that may wait for a proposal; beyond this, ingest answers 503.
    pub queue_requests: usize,
    /// A group stops growing once it holds this many events.
    pub max_events_per_entry: usize,
    /// A group also stops growing once its requests' bodies add up to this many bytes, so an
    /// entry (and one append RPC) stays a few MiB however large the events are.
    pub max_bytes_per_entry: usize,
    /// Entries proposed but not yet applied, at most.
    pub max_inflight: usize,
    /// How long a proposal may take before the request is answered with an unknown outcome.
    pub commit_timeout: Duration,
    /// The key caps stamped into every entry this node proposes (every replica applies an
    /// entry with the caps it carries).
    pub key_caps: KeyCaps,
    /// Most an entry's ingest time may differ from the voters' majority clock
    /// (`crate::clock`).
    pub max_clock_skew_ms: u64,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            queue_requests: 4096,
            max_events_per_entry: 20_000,
            max_bytes_per_entry: 4 << 20,
            max_inflight: 4,
            commit_timeout: Duration::from_secs(10),
            key_caps: KeyCaps::default(),
            max_clock_skew_ms: crate::clock::DEFAULT_MAX_CLOCK_SKEW_MS,
        }
    }
}

/// What a committed, applied request returns to its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngestAck {
    pub accepted: u32,
    pub duplicates: u32,
    /// Raft log index of the entry that carried the request.
    pub index: u64,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum IngestError {
    /// This node is not the leader; the caller should forward to `leader` if known.
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
    /// The witness holds leadership; it cannot compute acknowledgements.
    #[error("the witness is leader; writes resume when a data node takes over")]
    WitnessLeader,
    #[error("ingest queue is full")]
    Overloaded,
    /// The record store is behind by more events than the configured bound.
    #[error("{pending} events are waiting for the record store")]
    SinkBacklog { pending: usize },
    /// The entry may or may not commit; retrying with the same event ids is safe.
    #[error("commit outcome unknown: {0}")]
    Unknown(String),
    /// Raft refused the proposal or has stopped.
    #[error("cluster unavailable: {0}")]
    Unavailable(#[source] RaftError<TypeConfig, ClientWriteError<TypeConfig>>),
    #[error("cluster unavailable: node is shutting down")]
    ShuttingDown,
}

struct Job {
    events: Vec<Event>,
    /// Size of the request body the events came from.
    bytes: usize,
    reply: oneshot::Sender<Result<IngestAck, IngestError>>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub requests: AtomicU64,
    pub events: AtomicU64,
    pub entries: AtomicU64,
    pub rejected_overload: AtomicU64,
}

/// The handle request handlers submit to.
#[derive(Clone)]
pub struct IngestQueue {
    tx: mpsc::Sender<Job>,
    stats: Arc<IngestStats>,
    /// Events submitted and not yet answered (queued, proposed or being applied): with the
    /// state's sink queue, what the record store may still have to take.
    outstanding: Arc<AtomicU64>,
}

/// Gives back a request's share of [`IngestQueue::outstanding_events`] however the request
/// ends (answered, refused, or its handler dropped).
struct Outstanding(Arc<AtomicU64>, u64);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::AcqRel);
    }
}

impl IngestQueue {
    /// Starts the batching loop for `raft` as one of the node's `tasks` and returns the
    /// handle that feeds it. On cancellation the loop stops taking requests and waits for
    /// the entries in flight to be answered.
    pub fn start(
        raft: Raft,
        config: BatcherConfig,
        stamper: Stamper,
        tasks: &Tasks,
    ) -> IngestQueue {
        let (tx, rx) = mpsc::channel(config.queue_requests.max(1));
        let stats = Arc::new(IngestStats::default());
        let cancel = tasks.cancel_signal();
        tasks.spawn_owned(run(raft, config, stamper, rx, stats.clone(), cancel));
        IngestQueue {
            tx,
            stats,
            outstanding: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Events submitted and not yet answered.
    pub fn outstanding_events(&self) -> u64 {
        self.outstanding.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    /// Queues one client request and waits until it is committed and applied.
    ///
    /// `backlog` bounds what the record store may still have to take: `pending` events
    /// already wait in the replicated sink queue, and this request is refused
    /// ([`IngestError::SinkBacklog`]) unless `pending` + every outstanding request + this one
    /// fit under `limit`. The check and the reservation are one atomic step, so concurrent
    /// requests cannot overshoot it together.
    pub async fn submit(
        &self,
        events: Vec<Event>,
        bytes: usize,
        backlog: Option<(usize, usize)>,
    ) -> Result<IngestAck, IngestError> {
        let n = events.len() as u64;
        let before = self.outstanding.fetch_add(n, Ordering::AcqRel);
        let _reservation = Outstanding(self.outstanding.clone(), n);
        if let Some((pending, limit)) = backlog {
            if pending as u64 + before + n > limit as u64 {
                return Err(IngestError::SinkBacklog { pending });
            }
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Job {
                events,
                bytes,
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    self.stats.rejected_overload.fetch_add(1, Ordering::Relaxed);
                    IngestError::Overloaded
                }
                mpsc::error::TrySendError::Closed(_) => IngestError::ShuttingDown,
            })?;
        rx.await
            .unwrap_or_else(|_| Err(IngestError::Unknown("proposal task ended".into())))
    }
}

async fn run(
    raft: Raft,
    config: BatcherConfig,
    stamper: Stamper,
    mut rx: mpsc::Receiver<Job>,
    stats: Arc<IngestStats>,
    cancel: Cancel,
) {
    let inflight = Arc::new(Semaphore::new(config.max_inflight.max(1)));
    let mut commits = JoinSet::new();
    loop {
        while commits.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = inflight.clone().acquire_owned() => permit,
            _ = cancel.cancelled() => break,
        };
        let Ok(permit) = permit else {
            break;
        };
        let first = tokio::select! {
            first = rx.recv() => first,
            _ = cancel.cancelled() => break,
        };
        let Some(first) = first else {
            break;
        };
        let mut events = first.events.len();
        let mut bytes = first.bytes;
        let mut jobs = vec![first];
        while events < config.max_events_per_entry && bytes < config.max_bytes_per_entry {
            match rx.try_recv() {
                Ok(job) => {
                    events += job.events.len();
                    bytes += job.bytes;
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        stats.entries.fetch_add(1, Ordering::Relaxed);
        stats
            .requests
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        stats.events.fetch_add(events as u64, Ordering::Relaxed);
        let raft = raft.clone();
        let timeout = config.commit_timeout;
        let caps = config.key_caps;
        let ingest_ms = stamper.stamp();
        commits.spawn(async move {
            commit(raft, jobs, caps, timeout, ingest_ms).await;
            drop(permit);
        });
    }
    // Requests still queued were never proposed: they are certainly not committed, and say
    // so. Those in flight are answered once their proposal ends (the node stops Raft first,
    // so that is prompt).
    rx.close();
    while let Ok(job) = rx.try_recv() {
        let _ = job.reply.send(Err(IngestError::ShuttingDown));
    }
    while commits.join_next().await.is_some() {}
}

async fn commit(raft: Raft, jobs: Vec<Job>, caps: KeyCaps, timeout: Duration, ingest_ms: i64) {
    let mut requests = Vec::with_capacity(jobs.len());
    let mut replies = Vec::with_capacity(jobs.len());
    for job in jobs {
        requests.push(job.events);
        replies.push(job.reply);
    }
    #[cfg(feature = "chaos")]
    if crate::plant::ack_before_commit() {
        // The planted bug: acknowledge now, commit (or not) later.
        for (reply, events) in replies.drain(..).zip(&requests) {
            let _ = reply.send(Ok(IngestAck {
                accepted: events.len() as u32,
                duplicates: 0,
                index: 0,
            }));
        }
    }
    // The ingest time (`run`, from `crate::clock`) and the key caps are stamped by the
    // proposer, so that every replica applies the same bytes: apply itself never reads a
    // clock or its own config.
    let entry = Request::IngestBudgeted {
        caps,
        batch: IngestBatch {
            ingest_ms,
            requests,
        },
    };
    let err = match tokio::time::timeout(timeout, raft.client_write(entry)).await {
        Err(_) => IngestError::Unknown(format!("not committed within {} ms", timeout.as_millis())),
        Ok(Ok(resp)) if !resp.data.applied_analytics => IngestError::WitnessLeader,
        Ok(Ok(resp)) => {
            let index = resp.log_id.index;
            let outcomes = resp.data.outcomes;
            if outcomes.len() != replies.len() {
                // Cannot happen with a correct state machine; never acknowledge on a guess.
                IngestError::Unknown(format!(
                    "apply returned {} outcomes for {} requests",
                    outcomes.len(),
                    replies.len()
                ))
            } else {
                for (reply, o) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(IngestAck {
                        accepted: o.accepted,
                        duplicates: o.duplicates,
                        index,
                    }));
                }
                return;
            }
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            IngestError::NotLeader(NotLeader::from_forward(f))
        }
        Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)))) => {
            IngestError::Unknown("leadership changed while committing".into())
        }
        Ok(Err(e)) => IngestError::Unavailable(e),
    };
    for reply in replies {
        let _ = reply.send(Err(err.clone()));
    }
}
