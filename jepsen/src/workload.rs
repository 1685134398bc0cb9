//! The clients: writers post batches of uniquely identified events to random nodes (retrying
//! with the same ids, as a gateway does), now and then re-sends a batch that was already
//! acknowledged; readers read the count back with `consistency=linearizable` and strong SQL.
//! Every operation goes into the history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::history::{Batch, Op, OpType, Process, Recorder, F, NEMESIS};

/// Attempts per batch (the first send plus retries), each on a random node.
pub const MAX_ATTEMPTS: u32 = 6;
/// Events per new batch: 1 ..= this.
pub const MAX_BATCH: u32 = 25;
/// A gateway gives up on a request after this long and retries elsewhere. Commits take
/// milliseconds and a failover about a second, so this is ample; a request to a frozen
/// node ends here as an unknown outcome.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What every client shares.
#[derive(Clone)]
pub struct Workload {
    /// `(node id, client address)` of every node, witness included.
    pub nodes: Vec<(u64, String)>,
    /// The run's tag: the `api_name` of every event and the prefix of every id.
    pub tag: String,
    pub recorder: Recorder,
    pub http: reqwest::Client,
    /// Nodes that recently timed out or refused a connection, and until when they are
    /// avoided: shared by all clients, like a gateway's passive health check.
    suspects: Arc<Mutex<HashMap<u64, Instant>>>,
}

/// How long a node that timed out or refused a connection is avoided.
const SUSPECT_FOR: Duration = Duration::from_secs(4);

/// The event id of `seq` from `client` in the run tagged `tag`.
pub fn event_id(tag: &str, client: u32, seq: u64) -> String {
    format!("{tag}-c{client}-{seq}")
}

/// Inverse of [`event_id`]: `(client, seq)`, or `None` for an id this run never makes.
pub fn parse_event_id(tag: &str, id: &str) -> Option<(u32, u64)> {
    let rest = id.strip_prefix(tag)?.strip_prefix("-c")?;
    let (c, s) = rest.split_once('-')?;
    let (c, s) = (c.parse().ok()?, s.parse().ok()?);
    (event_id(tag, c, s) == id).then_some((c, s))
}

/// The `POST /v1/events` body (a JSON array) of `batch` in the run tagged `tag`: the events'
/// `api_name` is the tag, their content a function of the id, so every re-send of an id is
/// the same event.
pub fn batch_body(tag: &str, batch: &Batch, ts_ms: i64) -> String {
    let events: Vec<Value> = (batch.first..batch.first + u64::from(batch.count))
        .map(|seq| {
            let code = [200, 200, 200, 201, 404, 500][(seq % 6) as usize];
            json!({
                "event_id": event_id(tag, batch.client, seq),
                "timestamp": ts_ms,
                "api_name": tag,
                "api_version": "v1",
                "resource": format!("/r{}", seq % 4),
                "method": if seq % 3 == 0 { "POST" } else { "GET" },
                "response_code": code,
                "response_time_ms": (seq * 7919) % 400 + 1,
                "response_size": (seq * 104_729) % 5000,
            })
        })
        .collect();
    Value::Array(events).to_string()
}

impl Workload {
    pub fn new(nodes: Vec<(u64, String)>, tag: String, recorder: Recorder) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(1))
            .pool_max_idle_per_host(4)
            .build()?;
        Ok(Workload {
            nodes,
            tag,
            recorder,
            http,
            suspects: Arc::default(),
        })
    }

    fn body(&self, batch: &Batch, ts_ms: i64) -> String {
        batch_body(&self.tag, batch, ts_ms)
    }

    /// A writer's loop until `deadline`: new batches, and now and then a replay of a batch
    /// already acknowledged (gateways deliver at least once). `rate`: this writer's share
    /// of the events per second.
    pub async fn writer(self, client: u32, seed: u64, deadline: Instant, rate: f64) {
        let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(client) << 32 | 0x5eed));
        let mut next_seq = 0u64;
        // Recently acknowledged batches and their bodies, for replays (bounded).
        let mut acked: Vec<(Batch, String)> = Vec::new();
        let started = Instant::now();
        while Instant::now() < deadline {
            // Keep to the rate: new events so far may not run ahead of the schedule.
            let due = started + Duration::from_secs_f64(next_seq as f64 / rate.max(1e-3));
            if due > Instant::now() {
                tokio::time::sleep_until(due.min(deadline).into()).await;
                continue;
            }
            if rng.gen_range(0..100) < 6 && !acked.is_empty() {
                let (batch, body) = acked[rng.gen_range(0..acked.len())].clone();
                let batch = Batch {
                    replay: true,
                    ..batch
                };
                self.write_with_retries(&mut rng, batch, &body).await;
            } else {
                let count = rng.gen_range(1..=MAX_BATCH);
                let batch = Batch {
                    client,
                    first: next_seq,
                    count,
                    attempt: 0,
                    replay: false,
                };
                next_seq += u64::from(count);
                let body = self.body(&batch, crate::now_ms());
                if self.write_with_retries(&mut rng, batch, &body).await {
                    if acked.len() < 1000 {
                        acked.push((batch, body));
                    } else {
                        let slot = rng.gen_range(0..acked.len());
                        acked[slot] = (batch, body);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..5))).await;
        }
    }

    /// A reader's loop until `deadline`: linearizable aggregate reads and strong SQL counts,
    /// each through a random node. Readers are separate processes from writers, so a read
    /// stuck behind a frozen record store does not hold writes back.
    pub async fn reader(self, process: u32, seed: u64, deadline: Instant) {
        let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(process) << 32 | 0x4ead));
        while Instant::now() < deadline {
            let node = self.pick(&mut rng);
            if rng.gen_range(0..100) < 65 {
                self.read(process, node).await;
            } else {
                self.sql(process, node).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(5..25))).await;
        }
    }

    /// A random node, avoiding suspects while any other node is left.
    fn pick(&self, rng: &mut StdRng) -> (u64, String) {
        let now = Instant::now();
        let healthy: Vec<&(u64, String)> = {
            let suspects = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
            self.nodes
                .iter()
                .filter(|(id, _)| suspects.get(id).is_none_or(|until| *until <= now))
                .collect()
        };
        if healthy.is_empty() {
            self.nodes[rng.gen_range(0..self.nodes.len())].clone()
        } else {
            healthy[rng.gen_range(0..healthy.len())].clone()
        }
    }

    /// Avoids `node` for `how_long`.
    fn suspect(&self, node: u64, how_long: Duration) {
        self.suspects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node, Instant::now() + how_long);
    }

    fn suspect_after(&self, node: u64, e: &reqwest::Error) {
        if e.is_timeout() || e.is_connect() {
            self.suspect(node, SUSPECT_FOR);
        }
    }

    fn all_suspect(&self) -> bool {
        let now = Instant::now();
        let suspects = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
        self.nodes
            .iter()
            .all(|(id, _)| suspects.get(id).is_some_and(|until| *until > now))
    }

    /// Sends `batch` until it is acknowledged or certainly refused, at most
    /// [`MAX_ATTEMPTS`] times. Returns whether it was acknowledged.
    async fn write_with_retries(&self, rng: &mut StdRng, batch: Batch, body: &str) -> bool {
        for attempt in 0..MAX_ATTEMPTS {
            let batch = Batch { attempt, ..batch };
            let (node, addr) = self.pick(rng);
            let mut invoke = Op::new(Process::Client(batch.client), OpType::Invoke, F::Write);
            invoke.node = Some(node);
            invoke.batch = Some(batch);
            let invoked = Instant::now();
            self.recorder.record(invoke.clone());
            let result = self
                .http
                .post(format!("http://{addr}/v1/events"))
                .header("content-type", "application/json")
                .body(body.to_string())
                .timeout(WRITE_TIMEOUT)
                .send()
                .await;
            let mut done = Op {
                kind: OpType::Info,
                latency_ms: None,
                ..invoke
            };
            let mut retry_after = None;
            match result {
                Err(e) => {
                    self.suspect_after(node, &e);
                    done.error = Some(transport_error(&e));
                }
                Ok(resp) => {
                    let status = resp.status();
                    retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    let text = resp.text().await.unwrap_or_default();
                    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if status.is_success() {
                        done.kind = OpType::Ok;
                        done.log_index = v.get("index").and_then(Value::as_u64);
                        done.duplicates = v
                            .get("duplicates")
                            .and_then(Value::as_u64)
                            .map(|d| d as u32);
                    } else {
                        // Only a 4xx other than 429 is a certain refusal; a 5xx may have been
                        // committed before the answer was lost (e.g. a forwarded request).
                        if status.is_client_error() && status.as_u16() != 429 {
                            done.kind = OpType::Fail;
                        } else {
                            // This node cannot take writes right now (no leader known, its
                            // leader changed, ...): try another one first.
                            self.suspect(node, Duration::from_secs(1));
                        }
                        done.error = Some(format!("{} {}", status.as_u16(), error_code(&v)));
                    }
                }
            }
            done.latency_ms = Some(invoked.elapsed().as_secs_f64() * 1000.0);
            let kind = done.kind;
            self.recorder.record(done);
            match kind {
                OpType::Ok => return true,
                OpType::Fail => return false,
                _ => {}
            }
            // Another node may take it at once; with none left, honour Retry-After (≤ 1 s).
            let backoff = if self.all_suspect() {
                retry_after
                    .map(|s| Duration::from_secs(s.min(1)))
                    .unwrap_or(Duration::from_millis(50 * u64::from(attempt + 1)))
            } else {
                Duration::from_millis(10)
            };
            tokio::time::sleep(backoff + Duration::from_millis(rng.gen_range(0..50))).await;
        }
        false
    }

    /// The nemesis's dedup probe: re-sends `batch`, acknowledged earlier, to `node`, recorded
    /// as a replay by the nemesis (`checker::dedup_window` wants every id reported as a
    /// duplicate). Returns the duplicates the answer reported, if it was a 200.
    pub async fn probe(&self, (node, addr): (u64, String), batch: Batch) -> Option<u32> {
        let batch = Batch {
            replay: true,
            ..batch
        };
        let mut invoke = Op::new(NEMESIS, OpType::Invoke, F::Write);
        invoke.node = Some(node);
        invoke.batch = Some(batch);
        let invoked = Instant::now();
        self.recorder.record(invoke.clone());
        let mut done = Op {
            kind: OpType::Info,
            ..invoke
        };
        let result = self
            .http
            .post(format!("http://{addr}/v1/events"))
            .header("content-type", "application/json")
            .body(self.body(&batch, crate::now_ms()))
            .timeout(WRITE_TIMEOUT)
            .send()
            .await;
        match result {
            Err(e) => done.error = Some(transport_error(&e)),
            Ok(resp) => {
                let status = resp.status();
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                if status.is_success() {
                    done.kind = OpType::Ok;
                    done.log_index = v.get("index").and_then(Value::as_u64);
                    done.duplicates = v
                        .get("duplicates")
                        .and_then(Value::as_u64)
                        .map(|d| d as u32);
                } else {
                    done.error = Some(format!("{} {}", status.as_u16(), error_code(&v)));
                }
            }
        }
        done.latency_ms = Some(invoked.elapsed().as_secs_f64() * 1000.0);
        let duplicates = done.duplicates.filter(|_| done.kind == OpType::Ok);
        self.recorder.record(done);
        duplicates
    }

    /// `consistency=linearizable` aggregates: the events of this run counted so far.
    pub async fn read(&self, process: u32, (node, addr): (u64, String)) -> Option<u64> {
        let url = format!(
            "http://{addr}/v1/aggregates?granularity=day&api={}&group_by=api_name&consistency=linearizable",
            self.tag
        );
        let req = self.http.get(url).timeout(READ_TIMEOUT);
        self.read_op(process, node, F::Read, req, |v| {
            let rows = v.get("rows")?.as_array()?;
            let count = rows
                .iter()
                .map(|r| r.get("requests").and_then(Value::as_u64))
                .sum::<Option<u64>>()?;
            Some((count, v.get("applied_index").and_then(Value::as_u64)))
        })
        .await
    }

    /// Strong SQL: the events of this run in the record store.
    pub async fn sql(&self, process: u32, (node, addr): (u64, String)) -> Option<u64> {
        let body = json!({
            "sql": format!("SELECT COUNT(*) AS n FROM events WHERE api_name = '{}'", self.tag),
            "consistency": "strong",
        });
        let req = self
            .http
            .post(format!("http://{addr}/v1/sql"))
            .json(&body)
            .timeout(READ_TIMEOUT);
        self.read_op(process, node, F::Sql, req, |v| {
            let cell = v.get("rows")?.get(0)?.get(0)?;
            let count = cell
                .as_u64()
                .or_else(|| cell.as_str().and_then(|s| s.parse().ok()))?;
            Some((count, v.get("watermark").and_then(Value::as_u64)))
        })
        .await
    }

    async fn read_op(
        &self,
        process: u32,
        node: u64,
        f: F,
        req: reqwest::RequestBuilder,
        parse: impl Fn(&Value) -> Option<(u64, Option<u64>)>,
    ) -> Option<u64> {
        let mut invoke = Op::new(Process::Client(process), OpType::Invoke, f);
        invoke.node = Some(node);
        let invoked = Instant::now();
        self.recorder.record(invoke.clone());
        let mut done = Op {
            kind: OpType::Fail,
            ..invoke
        };
        match req.send().await {
            Err(e) => {
                self.suspect_after(node, &e);
                done.error = Some(transport_error(&e));
            }
            Ok(resp) => {
                let status = resp.status();
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                match (status.is_success(), parse(&v)) {
                    (true, Some((count, index))) => {
                        done.kind = OpType::Ok;
                        done.count = Some(count);
                        done.log_index = index;
                    }
                    (true, None) => done.error = Some(format!("unexpected answer: {v}")),
                    (false, _) => {
                        done.error = Some(format!("{} {}", status.as_u16(), error_code(&v)))
                    }
                }
            }
        }
        done.latency_ms = Some(invoked.elapsed().as_secs_f64() * 1000.0);
        let count = done.count;
        self.recorder.record(done);
        count
    }
}

fn error_code(v: &Value) -> String {
    v.get("error")
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect failed".into()
    } else {
        format!("transport: {e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip_and_foreign_ids_do_not_parse() {
        let id = event_id("jp-s7-1", 3, 41);
        assert_eq!(parse_event_id("jp-s7-1", &id), Some((3, 41)));
        assert_eq!(parse_event_id("jp-s7-1", "jp-s7-1-c3-041"), None);
        assert_eq!(parse_event_id("jp-s7-1", "jp-s7-2-c3-41"), None);
        assert_eq!(parse_event_id("jp-s7-1", "jp-s7-1-c3-"), None);
        assert_eq!(parse_event_id("jp-s7-1", "other"), None);
    }
}
