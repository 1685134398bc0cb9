//! `tally demo`: a local two-data-node + witness cluster with realistic sample traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tally_raft::now_ms;

use anyhow::{Context, Result};
use clap::Args;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};

use tally_raft::{BatcherConfig, NodeOptions, RaftTiming, Role, SinkConfig};

use crate::config::{NodeConfig, DEFAULT_LOG_KEEP, DEFAULT_SNAPSHOT_THRESHOLD};
use crate::serve::{shutdown_signal, RunningNode};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// First HTTP port; the nodes use this and the next two.
    #[arg(long, default_value_t = 7101)]
    pub base_port: u16,
    /// Where the nodes keep their logs and snapshots (default: a temporary directory,
    /// removed on exit).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Sample events per second.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
}

/// (resource template, method) pairs of one API.
type Resources = &'static [(&'static str, &'static str)];

const APIS: &[(&str, &str, Resources)] = &[
    (
        "PizzaShackAPI",
        "1.0.0",
        &[
            ("/menu", "GET"),
            ("/order", "POST"),
            ("/order/{orderId}", "GET"),
            ("/order/{orderId}", "DELETE"),
        ],
    ),
    (
        "WeatherAPI",
        "2.1.0",
        &[("/forecast/{city}", "GET"), ("/current/{city}", "GET")],
    ),
    (
        "PaymentsAPI",
        "3.0.0",
        &[
            ("/payments", "POST"),
            ("/payments/{id}", "GET"),
            ("/refunds", "POST"),
        ],
    ),
];
const APPS: &[(&str, &str, &str)] = &[
    ("a1b2c3", "MobileShop", "alice"),
    ("d4e5f6", "PartnerPortal", "bob"),
    ("0f9e8d", "BatchReports", "carol"),
];
const TENANTS: &[&str] = &["carbon.super", "acme.com"];

pub async fn demo(args: DemoArgs) -> Result<()> {
    let (dir, _temp) = match args.data_dir.clone() {
        Some(d) => (d, None),
        None => {
            let t = tempfile::Builder::new().prefix("tally-demo-").tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let ports = [args.base_port, args.base_port + 1, args.base_port + 2];
    let members: BTreeMap<u64, String> = (1..=3u64)
        .map(|id| (id, format!("127.0.0.1:{}", ports[(id - 1) as usize])))
        .collect();
    let witnesses = BTreeSet::from([3u64]);
    let secret = format!("demo-{}", rand::thread_rng().gen::<u64>());
    // Both data nodes write to one SQLite file: the record store is shared, as a MySQL
    // server would be in production, so whichever node leads continues the same tables.
    let records = format!("sqlite://{}", dir.join("records.db").display());

    let mut nodes = Vec::new();
    for (id, addr) in &members {
        let cfg = NodeConfig {
            listen: addr.clone(),
            // Zero setup: anonymous requests on loopback, like a node without [auth].
            auth: tally_api::auth::AuthConfig {
                tokens: Vec::new(),
                anonymous: true,
            },
            max_body_bytes: 8 << 20,
            max_requests_in_flight: tally_api::in_flight::DEFAULT_MAX_REQUESTS,
            max_ingest_bytes_in_flight: tally_api::in_flight::DEFAULT_MAX_INGEST_BYTES,
            sql: tally_api::SqlLimits::default(),
            max_aggregate_rows: tally_api::DEFAULT_MAX_AGGREGATE_ROWS,
            http: tally_api::server::HttpLimits::default(),
            tls: None,
            node: NodeOptions {
                id: *id,
                role: if witnesses.contains(id) {
                    Role::Witness
                } else {
                    Role::Data
                },
                data_dir: dir.join(format!("n{id}")),
                secret: secret.clone(),
                members: members.clone(),
                witnesses: witnesses.clone(),
                timing: RaftTiming::default(),
                snapshot_threshold: DEFAULT_SNAPSHOT_THRESHOLD,
                log_keep_behind_snapshot: DEFAULT_LOG_KEEP,
                batcher: BatcherConfig::default(),
                record_store: Some(records.clone()),
                record_reads: Default::default(),
                sink: SinkConfig::default(),
                source_ip: None,
                snapshot_chunk_bytes: tally_raft::snapshot_transfer::CHUNK_BYTES,
                peer_tls: None,
                witness_max_log_entries: tally_raft::node::DEFAULT_WITNESS_MAX_LOG_ENTRIES,
                witness_max_log_bytes: tally_raft::options::DEFAULT_WITNESS_MAX_LOG_BYTES,
            },
        };
        let node = RunningNode::start(cfg).await.with_context(|| {
            format!("starting demo node {id} on {addr} (is the port free? try --base-port)")
        })?;
        nodes.push(node);
    }
    let formed = nodes[0].node.initialize().await?;
    let leader = wait_for_leader(&nodes).await?;
    let n1 = &members[&1];
    println!(
        "Tally demo: 2 data nodes + 1 witness, data in {}",
        dir.display()
    );
    println!("  node 1 (data)    http://{}", members[&1]);
    println!("  node 2 (data)    http://{}", members[&2]);
    println!("  node 3 (witness) http://{}", members[&3]);
    println!(
        "  cluster {} — leader is node {leader}",
        if formed { "formed" } else { "already formed" }
    );
    println!();
    println!(
        "Sending about {} sample events/s from three API gateways (with some duplicate posts).",
        args.rate
    );
    // The binary as the user can run it from another terminal (e.g. ./target/release/tally).
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| {
            let cwd = std::env::current_dir().ok()?;
            Some(
                p.strip_prefix(&cwd)
                    .map(|r| format!("./{}", r.display()))
                    .unwrap_or_else(|_| p.display().to_string()),
            )
        })
        .unwrap_or_else(|| "tally".to_string());
    println!("Try, in another terminal:");
    println!("  curl -s 'http://{n1}/v1/aggregates?granularity=minute&group_by=api_name' | python3 -m json.tool");
    println!("  curl -s 'http://{}/v1/aggregates?granularity=hour&api=PizzaShackAPI&group_by=resource,method&consistency=linearizable'", members[&3]);
    println!("  {exe} cluster status --node http://{n1}");
    println!("  {exe} sql --node http://{n1} \"SELECT api_name, SUM(requests) AS requests, SUM(errors_5xx) AS errors_5xx FROM usage_hour GROUP BY api_name ORDER BY requests DESC\"");
    println!("  (records are in {})", records);
    println!(
        "  curl -s http://{n1}/v1/state/digest; curl -s http://{}/v1/state/digest",
        members[&2]
    );
    println!("Ctrl-C stops the demo.");
    println!();

    let addrs: Vec<String> = members.values().cloned().collect();
    let traffic = tokio::spawn(traffic(addrs.clone(), args.rate));
    let report = tokio::spawn(report(addrs));
    match args.duration {
        Some(secs) => {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
                _ = shutdown_signal() => {}
            }
        }
        None => shutdown_signal().await,
    }
    println!("\nstopping the demo cluster…");
    traffic.abort();
    report.abort();
    // The whole cluster stops: no point handing leadership from one stopping node to the next.
    for node in nodes {
        node.close().await;
    }
    Ok(())
}

async fn wait_for_leader(nodes: &[RunningNode]) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((id, node)) = nodes[0].node.leader() {
            if !node.witness {
                return Ok(id);
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("no data-node leader elected within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sample_event(rng: &mut impl Rng, seq: u64, gateway: usize) -> Value {
    let (api, version, resources) = APIS[rng.gen_range(0..APIS.len())];
    let (resource, method) = resources[rng.gen_range(0..resources.len())];
    let (app_id, app_name, owner) = APPS[rng.gen_range(0..APPS.len())];
    let roll: f64 = rng.gen();
    let latency = (rng.gen::<f64>().powi(3) * 900.0) as u64 + 5;
    let mut ev = json!({
        "event_id": format!("gw{gateway}-{seq}"),
        "timestamp": now_ms(),
        "api_name": api,
        "api_version": version,
        "tenant": TENANTS.choose(rng).copied().unwrap_or(""),
        "application_id": app_id,
        "application_name": app_name,
        "application_owner": owner,
        "resource": resource,
        "method": method,
        "hostname": format!("gateway-{gateway}"),
        "username": format!("user{}", rng.gen_range(1..50)),
        "user_ip": format!("10.{}.{}.{}", rng.gen_range(0..4), rng.gen_range(0..255), rng.gen_range(1..255)),
        "user_agent": "Mozilla/5.0 (demo)",
    });
    if roll < 0.03 {
        ev["kind"] = json!("fault");
        ev["error_code"] = json!("101503");
        ev["error_message"] = json!("Error connecting to the backend");
    } else if roll < 0.06 {
        ev["kind"] = json!("throttle");
        ev["throttled_reason"] = json!("SUBSCRIPTION_LIMIT_EXCEEDED");
    } else {
        let code = if roll < 0.12 {
            404
        } else if roll < 0.15 {
            500
        } else if method == "POST" {
            201
        } else {
            200
        };
        ev["response_code"] = json!(code);
        ev["response_time_ms"] = json!(latency);
        ev["backend_latency_ms"] = json!(latency.saturating_sub(3));
        ev["response_size"] = json!(rng.gen_range(100..20_000));
        ev["cache_hit"] = json!(rng.gen_bool(0.2));
    }
    ev
}

/// Three "gateways" post batches to random nodes, re-posting some batches as a gateway
/// would after a timeout (the cluster counts them once).
async fn traffic(addrs: Vec<String>, rate: u32) {
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo traffic: {e}");
            return;
        }
    };
    let per_tick = (rate / 10).max(1);
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let (batch, target, resend) = {
            let mut rng = rand::thread_rng();
            let gateway = rng.gen_range(1..=3);
            let batch: Vec<Value> = (0..per_tick)
                .map(|_| {
                    seq += 1;
                    sample_event(&mut rng, seq, gateway)
                })
                .collect();
            (
                batch,
                addrs.choose(&mut rng).cloned().unwrap_or_default(),
                rng.gen_bool(0.05),
            )
        };
        let url = format!("http://{target}/v1/events");
        let sends = if resend { 2 } else { 1 };
        for _ in 0..sends {
            if let Err(e) = client.post(&url).json(&batch).send().await {
                eprintln!("demo traffic: {e}");
            }
        }
    }
}

async fn report(addrs: Vec<String>) {
    let Ok(client) = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
    else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tick.tick().await;
        let url = format!(
            "http://{}/v1/aggregates?granularity=day&group_by=",
            addrs[0]
        );
        let Ok(resp) = client.get(&url).send().await else {
            continue;
        };
        let Ok(body) = resp.json::<Value>().await else {
            continue;
        };
        let rows = body["rows"].as_array().cloned().unwrap_or_default();
        let sum = |k: &str| rows.iter().map(|r| r[k].as_u64().unwrap_or(0)).sum::<u64>();
        let mut digests = Vec::new();
        for a in &addrs[..2] {
            if let Ok(r) = client
                .get(format!("http://{a}/v1/state/digest"))
                .send()
                .await
            {
                if let Ok(v) = r.json::<Value>().await {
                    digests.push((
                        v["applied_index"].as_u64().unwrap_or(0),
                        v["digest"].as_str().unwrap_or("").to_string(),
                    ));
                }
            }
        }
        let same = digests.len() == 2 && digests[0] == digests[1];
        println!(
            "today: {} requests, {} 4xx, {} 5xx, {} faults, {} throttled — data nodes at index {:?}{}",
            sum("requests"), sum("errors_4xx"), sum("errors_5xx"), sum("faults"), sum("throttled"),
            digests.iter().map(|d| d.0).collect::<Vec<_>>(),
            if same { ", digests equal" } else { "" }
        );
    }
}
