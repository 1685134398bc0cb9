//! Cluster status and operations: `/v1/cluster`, `/v1/cluster/init`, health, readiness and
//! Prometheus metrics.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tally_protocol::{NodeStatus, OverflowStatus};

use crate::error::ApiError;
use crate::AppState;

/// The status lists the snapshot files, which reads the data directory: on a blocking
/// thread, so a slow disk does not hold an async worker (and the Raft RPC it serves).
pub async fn get_cluster(State(app): State<AppState>) -> Response {
    let node = app.node.clone();
    match tokio::task::spawn_blocking(move || node.status()).await {
        Ok(status) => axum::Json(status).into_response(),
        Err(e) => ApiError::internal(format!("gathering the status failed: {e}")).into_response(),
    }
}

pub async fn post_init(State(app): State<AppState>) -> Response {
    match app.node.initialize().await {
        Ok(formed) => axum::Json(json!({
            "initialized": true,
            "formed_now": formed,
            "message": if formed { "cluster formed from cluster.members" } else { "already a member of a formed cluster; nothing changed" },
        }))
        .into_response(),
        Err(tally_raft::NodeError::Invalid(m)) => ApiError::bad_request(m).into_response(),
        Err(e) => ApiError::unavailable("init_failed", e.to_string()).into_response(),
    }
}

/// Alive: the process runs and so does Raft. A node whose Raft stopped on a fatal error
/// (it then exits at once, see `tally serve`) says so rather than "ok".
pub async fn healthz(State(app): State<AppState>) -> Response {
    match app.node.stopped_reason() {
        None => axum::Json(json!({"status": "ok"})).into_response(),
        Some(reason) => raft_stopped(&reason),
    }
}

fn raft_stopped(reason: &str) -> Response {
    let mut e = ApiError::unavailable(
        "raft_stopped",
        format!("raft stopped on a fatal error ({reason}); this node is exiting to be restarted"),
    );
    e.retry_after = None;
    e.into_response()
}

/// Ready: a leader is known and this node has applied everything it knows committed.
pub async fn readyz(State(app): State<AppState>) -> Response {
    if let Some(reason) = app.node.stopped_reason() {
        return raft_stopped(&reason);
    }
    let m = app.node.metrics();
    let applied = app.node.state.read().applied_index();
    // Caught up with what the cluster committed, not just with what reached this node.
    let index = |l: &Option<tally_raft::types::LogId>| l.as_ref().map(|l| l.index);
    let committed = index(&m.cluster_committed)
        .max(index(&m.local_committed))
        .unwrap_or(0);
    let problem = if !app.node.recovered() {
        Some(
            "recovering: waiting for the cluster's commit index to cover the local log".to_string(),
        )
    } else if m.current_leader.is_none() {
        Some("no leader known".to_string())
    } else if applied < committed {
        Some(format!(
            "applying: {applied} of {committed} committed entries"
        ))
    } else {
        None
    };
    match problem {
        None => {
            axum::Json(json!({"status": "ready", "leader_id": m.current_leader})).into_response()
        }
        Some(p) => {
            let mut e = ApiError::unavailable("not_ready", p);
            e.status = StatusCode::SERVICE_UNAVAILABLE;
            e.into_response()
        }
    }
}

pub async fn metrics(State(app): State<AppState>) -> Response {
    let out = render_metrics(&app.node.status_in_memory());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The Prometheus text format of a node's status.
fn render_metrics(s: &NodeStatus) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    let sink = s.sink.detail.clone().unwrap_or_default();
    let metrics: &[(&str, &str, &str, u64)] = &[
        (
            "tally_raft_is_leader",
            "1 if this node is the Raft leader.",
            "gauge",
            u64::from(s.is_leader()),
        ),
        ("tally_raft_term", "Current Raft term.", "gauge", s.term),
        (
            "tally_raft_last_log_index",
            "Last index in the local log.",
            "gauge",
            s.last_log_index.unwrap_or(0),
        ),
        (
            "tally_raft_committed_index",
            "Committed index known here.",
            "gauge",
            s.committed_index.unwrap_or(0),
        ),
        (
            "tally_raft_applied_index",
            "Index applied to the state machine.",
            "gauge",
            s.applied_index,
        ),
        (
            "tally_log_entries",
            "Entries held in the local Raft log.",
            "gauge",
            s.log.entries,
        ),
        (
            "tally_log_bytes",
            "Bytes of the entries held in the local Raft log.",
            "gauge",
            s.log.bytes,
        ),
        (
            "tally_log_first_index",
            "First index held in the local Raft log.",
            "gauge",
            s.log.first_index.unwrap_or(0),
        ),
        (
            "tally_raft_snapshot_floor",
            "Index every data member holds in a snapshot (the witness purges up to it).",
            "gauge",
            s.retention.snapshot_floor,
        ),
        (
            "tally_log_fsyncs_total",
            "fsync calls made by the Raft log store.",
            "counter",
            s.log.fsyncs,
        ),
        (
            "tally_log_synced_index",
            "Highest log index known durable on disk.",
            "gauge",
            s.log.synced_index.unwrap_or(0),
        ),
        (
            "tally_ingest_requests_total",
            "Ingest requests proposed by this node as leader.",
            "counter",
            s.ingest.requests,
        ),
        (
            "tally_ingest_events_total",
            "Events proposed by this node as leader.",
            "counter",
            s.ingest.events,
        ),
        (
            "tally_ingest_entries_total",
            "Raft entries proposed for ingest (group commits).",
            "counter",
            s.ingest.entries,
        ),
        (
            "tally_ingest_rejected_overload_total",
            "Ingest requests refused because the queue was full.",
            "counter",
            s.ingest.rejected_overload,
        ),
        (
            "tally_state_events_applied_total",
            "Distinct events counted by this node's state.",
            "counter",
            s.state.events_applied,
        ),
        (
            "tally_state_dedup_ids",
            "Event ids remembered in the dedup window.",
            "gauge",
            s.state.dedup_ids,
        ),
        (
            "tally_state_buckets_minute",
            "Minute buckets held in memory.",
            "gauge",
            s.state.buckets_minute,
        ),
        (
            "tally_state_buckets_hour",
            "Hour buckets held in memory.",
            "gauge",
            s.state.buckets_hour,
        ),
        (
            "tally_state_buckets_day",
            "Day buckets held in memory.",
            "gauge",
            s.state.buckets_day,
        ),
        (
            "tally_sink_pending_events",
            "Counted events not yet confirmed in the record store.",
            "gauge",
            s.sink.pending_events,
        ),
        (
            "tally_sink_replicated_cursor",
            "Log index up to which the record store holds every event (replicated).",
            "gauge",
            s.sink.replicated_cursor,
        ),
        (
            "tally_sink_active",
            "1 while this node's sink writes (leader with a record store).",
            "gauge",
            u64::from(sink.active),
        ),
        (
            "tally_sink_events_written_total",
            "Events this node's sink inserted into the record store.",
            "counter",
            sink.events_written,
        ),
        (
            "tally_sink_consecutive_errors",
            "Record-store errors since the last success.",
            "gauge",
            sink.consecutive_errors,
        ),
        (
            "tally_sink_dropped_events_total",
            "Events dropped from the sink queue at its cap (no record store draining it).",
            "counter",
            s.sink.dropped_events,
        ),
    ];
    for &(name, help, kind, value) in metrics {
        gauge(name, help, kind, value);
    }
    gauge(
        "tally_clock_clamped_total",
        "Ingest entries stamped with a time other than this node's clock (it was more than raft.max_clock_skew_ms off its voters').",
        "counter",
        s.clock.clamped_total,
    );
    gauge(
        "tally_clock_clamping",
        "1 if an ingest entry stamped now would not carry this node's clock.",
        "gauge",
        u64::from(s.clock.clamping),
    );
    render_clock_skew(&mut out, s);
    render_overflow(&mut out, &s.state.overflow);
    out
}

/// `tally_clock_skew_ms{peer}`: each voter's clock minus this node's, where a fresh sample
/// gives one (signed, so outside the unsigned table above).
fn render_clock_skew(out: &mut String, s: &NodeStatus) {
    let name = "tally_clock_skew_ms";
    let _ = writeln!(
        out,
        "# HELP {name} Estimated clock of each voter minus this node's, in ms (fresh samples only).\n# TYPE {name} gauge"
    );
    for peer in &s.clock.peers {
        if let Some(skew) = peer.skew_ms {
            let _ = writeln!(out, "{name}{{peer=\"{}\"}} {skew}", peer.id);
        }
    }
}

/// The distinct-key cap's metrics, one series per granularity.
fn render_overflow(out: &mut String, o: &OverflowStatus) {
    let families: [(&str, &str, &str, [u64; 3]); 2] = [
        (
            "tally_overflow_events_total",
            "Events folded into an __other__ overflow key by the distinct-key cap.",
            "counter",
            [o.events_minute, o.events_hour, o.events_day],
        ),
        (
            "tally_aggregate_overflow_keys",
            "Aggregate rows held in memory whose key is an __other__ overflow key.",
            "gauge",
            [o.keys_minute, o.keys_hour, o.keys_day],
        ),
    ];
    for (name, help, kind, values) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (granularity, value) in ["minute", "hour", "day"].iter().zip(values) {
            let _ = writeln!(out, "{name}{{granularity=\"{granularity}\"}} {value}");
        }
    }
    for (name, help, value) in [
        (
            "tally_key_cap_max_keys_per_tenant_bucket",
            "Distinct keys per tenant and bucket this node stamps into entries it proposes.",
            o.max_keys_per_tenant_bucket,
        ),
        (
            "tally_key_cap_max_tenants_per_bucket",
            "Distinct tenants per bucket this node stamps into entries it proposes.",
            o.max_tenants_per_bucket,
        ),
        (
            "tally_row_budget_max_rows_per_granularity",
            "Aggregate rows per granularity this node stamps into entries it proposes.",
            o.max_rows_per_granularity,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_metrics_have_one_series_per_granularity() {
        let mut out = String::new();
        render_overflow(
            &mut out,
            &OverflowStatus {
                events_minute: 5,
                events_hour: 6,
                events_day: 7,
                keys_minute: 1,
                keys_hour: 2,
                keys_day: 3,
                max_keys_per_tenant_bucket: 200,
                max_tenants_per_bucket: 10,
                max_rows_per_granularity: 250_000,
            },
        );
        for line in [
            "# TYPE tally_overflow_events_total counter",
            "tally_overflow_events_total{granularity=\"minute\"} 5",
            "tally_overflow_events_total{granularity=\"day\"} 7",
            "tally_aggregate_overflow_keys{granularity=\"hour\"} 2",
            "tally_key_cap_max_keys_per_tenant_bucket 200",
            "tally_key_cap_max_tenants_per_bucket 10",
            "tally_row_budget_max_rows_per_granularity 250000",
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "{line:?} missing in:\n{out}"
            );
        }
    }
}
