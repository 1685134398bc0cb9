//! Cluster status and operations: `/v1/cluster`, `/v1/cluster/init`, health, readiness and
//! Prometheus metrics.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use tally_raft::types::LogId;

use crate::error::ApiError;
use crate::AppState;

fn index(l: &Option<LogId>) -> Option<u64> {
    l.as_ref().map(|l| l.index)
}

pub async fn get_cluster(State(app): State<AppState>) -> Response {
    let node = &app.node;
    let m = node.metrics();
    let replication = m.replication.clone().unwrap_or_default();
    let membership = m.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let members: Vec<Value> = membership
        .nodes()
        .map(|(id, n)| {
            json!({
                "id": id,
                "addr": n.addr,
                "role": n.role().as_str(),
                "voter": voters.contains(id),
                "matched_index": replication.get(id).map(index).unwrap_or(None),
            })
        })
        .collect();
    let (applied_index, stats, snapshot_floor) = {
        let applied = node.state.read();
        (
            applied.applied_index(),
            applied.state.stats(),
            applied.snapshot_floor,
        )
    };
    let sync = node.log.sync_stats();
    let log = node.log.log_stats();
    let snapshots: Vec<Value> = node
        .snapshot_files()
        .into_iter()
        .map(|s| json!({"index": s.order, "id": s.id, "bytes": s.size}))
        .collect();
    let ingest = node.ingest.stats();
    axum::Json(json!({
        "node_id": node.id,
        "role": node.role.as_str(),
        "raft_state": format!("{:?}", m.state),
        "leader_id": m.current_leader,
        "term": m.current_term,
        "last_log_index": m.last_log_index,
        "committed_index": index(&m.local_committed),
        "cluster_committed_index": index(&m.cluster_committed),
        "applied_index": applied_index,
        "snapshot_index": index(&m.snapshot),
        "purged_index": index(&m.purged),
        "members": members,
        "log": {
            "first_index": log.first_index,
            "last_index": log.last_index,
            "entries": log.entries,
            "fsyncs": sync.fsyncs,
            "synced_index": sync.synced_last_index,
        },
        "snapshots": snapshots,
        "retention": {
            // What every data member holds in a snapshot: the witness purges up to here.
            "snapshot_floor": snapshot_floor,
            "witness_max_log_entries": node.options.witness_max_log_entries,
        },
        "state": {
            "buckets_minute": stats.buckets_minute,
            "buckets_hour": stats.buckets_hour,
            "buckets_day": stats.buckets_day,
            "dedup_ids": stats.dedup_ids,
            "events_applied": stats.events_applied,
        },
        "ingest": {
            "requests": ingest.requests.load(Ordering::Relaxed),
            "events": ingest.events.load(Ordering::Relaxed),
            "entries": ingest.entries.load(Ordering::Relaxed),
            "rejected_overload": ingest.rejected_overload.load(Ordering::Relaxed),
        },
        "sink": sink_json(node),
    }))
    .into_response()
}

fn sink_json(node: &tally_raft::Node) -> Value {
    if !node.has_record_store() {
        return json!({"enabled": false});
    }
    let (status, applied) = {
        let a = node.state.read();
        (a.state.pending_status(), a.applied_index())
    };
    let watermark = status
        .oldest_pending_index
        .map_or(applied, |o| o.saturating_sub(1));
    let report = node.sink.report();
    json!({
        "enabled": true,
        "active": report.active,
        "connected": node.records().is_some(),
        "replicated_cursor": status.cursor,
        "store_cursor": report.store_cursor,
        "watermark": watermark,
        "lag_entries": applied.saturating_sub(watermark),
        "pending_events": status.pending_events,
        "oldest_pending_index": status.oldest_pending_index,
        "dropped_events": status.dropped_events,
        "max_backlog_events": node.options.sink.max_backlog_events,
        "events_written": report.events_written,
        "events_already_present": report.events_already_present,
        "transactions": report.transactions,
        "last_write_ms": report.last_write_ms,
        "last_error": report.last_error,
        "last_error_ms": report.last_error_ms,
        "consecutive_errors": report.consecutive_errors,
    })
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

pub async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Ready: a leader is known and this node has applied everything it knows committed.
pub async fn readyz(State(app): State<AppState>) -> Response {
    let m = app.node.metrics();
    let applied = app.node.state.read().applied_index();
    // Caught up with what the cluster committed, not just with what reached this node.
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
    let node = &app.node;
    let m = node.metrics();
    let applied = node.state.read();
    let stats = applied.state.stats();
    let sync = node.log.sync_stats();
    let log = node.log.log_stats();
    let ingest = node.ingest.stats();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    gauge(
        "tally_raft_is_leader",
        "1 if this node is the Raft leader.",
        "gauge",
        u64::from(node.is_leader()),
    );
    gauge(
        "tally_raft_term",
        "Current Raft term.",
        "gauge",
        m.current_term,
    );
    gauge(
        "tally_raft_last_log_index",
        "Last index in the local log.",
        "gauge",
        m.last_log_index.unwrap_or(0),
    );
    gauge(
        "tally_raft_committed_index",
        "Committed index known here.",
        "gauge",
        index(&m.local_committed).unwrap_or(0),
    );
    gauge(
        "tally_raft_applied_index",
        "Index applied to the state machine.",
        "gauge",
        applied.applied_index(),
    );
    gauge(
        "tally_log_entries",
        "Entries held in the local Raft log.",
        "gauge",
        log.entries,
    );
    gauge(
        "tally_log_first_index",
        "First index held in the local Raft log.",
        "gauge",
        log.first_index.unwrap_or(0),
    );
    gauge(
        "tally_raft_snapshot_floor",
        "Index every data member holds in a snapshot (the witness purges up to it).",
        "gauge",
        applied.snapshot_floor,
    );
    gauge(
        "tally_log_fsyncs_total",
        "fsync calls made by the Raft log store.",
        "counter",
        sync.fsyncs,
    );
    gauge(
        "tally_log_synced_index",
        "Highest log index known durable on disk.",
        "gauge",
        sync.synced_last_index.unwrap_or(0),
    );
    gauge(
        "tally_ingest_requests_total",
        "Ingest requests proposed by this node as leader.",
        "counter",
        ingest.requests.load(Ordering::Relaxed),
    );
    gauge(
        "tally_ingest_events_total",
        "Events proposed by this node as leader.",
        "counter",
        ingest.events.load(Ordering::Relaxed),
    );
    gauge(
        "tally_ingest_entries_total",
        "Raft entries proposed for ingest (group commits).",
        "counter",
        ingest.entries.load(Ordering::Relaxed),
    );
    gauge(
        "tally_ingest_rejected_overload_total",
        "Ingest requests refused because the queue was full.",
        "counter",
        ingest.rejected_overload.load(Ordering::Relaxed),
    );
    gauge(
        "tally_state_events_applied_total",
        "Distinct events counted by this node's state.",
        "counter",
        stats.events_applied,
    );
    gauge(
        "tally_state_dedup_ids",
        "Event ids remembered in the dedup window.",
        "gauge",
        stats.dedup_ids as u64,
    );
    gauge(
        "tally_state_buckets_minute",
        "Minute buckets held in memory.",
        "gauge",
        stats.buckets_minute as u64,
    );
    gauge(
        "tally_state_buckets_hour",
        "Hour buckets held in memory.",
        "gauge",
        stats.buckets_hour as u64,
    );
    gauge(
        "tally_state_buckets_day",
        "Day buckets held in memory.",
        "gauge",
        stats.buckets_day as u64,
    );
    let sink_status = applied.state.pending_status();
    let report = node.sink.report();
    gauge(
        "tally_sink_pending_events",
        "Counted events not yet confirmed in the record store.",
        "gauge",
        sink_status.pending_events as u64,
    );
    gauge(
        "tally_sink_replicated_cursor",
        "Log index up to which the record store holds every event (replicated).",
        "gauge",
        sink_status.cursor,
    );
    gauge(
        "tally_sink_active",
        "1 while this node's sink writes (leader with a record store).",
        "gauge",
        u64::from(report.active),
    );
    gauge(
        "tally_sink_events_written_total",
        "Events this node's sink inserted into the record store.",
        "counter",
        report.events_written,
    );
    gauge(
        "tally_sink_consecutive_errors",
        "Record-store errors since the last success.",
        "gauge",
        report.consecutive_errors,
    );
    gauge(
        "tally_sink_dropped_events_total",
        "Events dropped from the sink queue at its cap (no record store draining it).",
        "counter",
        sink_status.dropped_events,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
