//! Commands that talk to a running node over HTTP: `tally cluster …` and `tally post`.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;
use tally_protocol::NodeStatus;

/// Where to reach a node.
#[derive(Debug, Args, Clone)]
pub struct NodeArg {
    /// Base URL of any cluster member (`https://…` for a node with `[tls]`).
    #[arg(long, env = "TALLY_NODE", default_value = "http://127.0.0.1:7101")]
    pub node: String,
    /// CA certificate (PEM) an `https://` node's certificate is verified against; without
    /// it, only the system's usual roots would do, and this build has none: give it.
    #[arg(long, env = "TALLY_CA")]
    pub ca: Option<PathBuf>,
    /// The cluster secret: cluster operations (init, add, remove, leader) need it.
    #[arg(long, env = "TALLY_CLUSTER_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// An access token (`tally token new`), sent as `Authorization: Bearer`: posting needs
    /// the ingest role, `sql` and `cluster status` the read role.
    #[arg(long, env = "TALLY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Which credential a command presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Credential {
    /// The cluster secret (cluster operations).
    Secret,
    /// The access token (posting, SQL).
    Token,
    /// The token when given, else the secret (status: either one may read it).
    TokenOrSecret,
}

impl NodeArg {
    /// An HTTP client that presents `credential` with every request.
    fn client(&self, credential: Credential) -> Result<reqwest::Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        let sensitive = |text: &str, what: &str| {
            let mut value = reqwest::header::HeaderValue::from_str(text)
                .with_context(|| format!("the {what} must be printable ASCII"))?;
            value.set_sensitive(true);
            anyhow::Ok(value)
        };
        let token = match credential {
            Credential::Secret => None,
            Credential::Token | Credential::TokenOrSecret => self.token.as_deref(),
        };
        if let Some(token) = token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                sensitive(&format!("Bearer {token}"), "token")?,
            );
        } else if credential != Credential::Token {
            if let Some(secret) = &self.secret {
                headers.insert("x-tally-secret", sensitive(secret, "cluster secret")?);
            }
        }
        Ok(builder(self.ca.as_deref())?
            .default_headers(headers)
            .build()?)
    }
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Form the cluster from the node's cluster.members (a no-op on a formed cluster).
    Init(NodeArg),
    /// Show the node's view of the cluster (GET /v1/cluster).
    Status {
        #[command(flatten)]
        node: NodeArg,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a node (POST /v1/cluster/members): as a learner until it has caught up with the
    /// leader, then as a voter. Start the new node first, with its own id, address, role and
    /// an empty data directory; it must not run `cluster init`.
    Add(AddArgs),
    /// Remove a voter or a learner (DELETE /v1/cluster/members/ID). Refused when it would
    /// leave no data voter, or no live majority.
    Remove {
        #[command(flatten)]
        node: NodeArg,
        /// Id of the node to remove.
        #[arg(long)]
        id: u64,
    },
    /// Hand leadership to another data voter (POST /v1/cluster/leader).
    Leader {
        #[command(flatten)]
        node: NodeArg,
        /// The data voter to hand over to; by default the one whose log reaches furthest.
        #[arg(long)]
        to: Option<u64>,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub node: NodeArg,
    /// Id of the node to add (a positive integer never used before in this cluster, or the
    /// id of a member whose address changes).
    #[arg(long)]
    pub id: u64,
    /// Its `host:port`, as the other members reach it.
    #[arg(long)]
    pub addr: String,
    /// The node is a witness (stores the log and votes, holds no analytic state).
    #[arg(long)]
    pub witness: bool,
    /// Keep it a learner (replicated to, but not voting).
    #[arg(long, conflicts_with = "replaces")]
    pub learner: bool,
    /// A voter to remove in the same membership change that promotes the new node (replace
    /// a dead data node, or move the witness).
    #[arg(long)]
    pub replaces: Option<u64>,
    /// Seconds to keep waiting while the new node catches up before it is promoted.
    #[arg(long, default_value_t = 300)]
    pub wait: u64,
}

#[derive(Debug, Args)]
pub struct PostArgs {
    #[command(flatten)]
    pub node: NodeArg,
    /// NDJSON file of events; reads stdin when absent or "-".
    pub file: Option<PathBuf>,
    /// Events per request (each request is accepted or rejected as a whole).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Attempts per request when the cluster answers 429/503 (the retry reuses the same
    /// event ids, so it never double-counts).
    #[arg(long, default_value_t = 30)]
    pub retries: u32,
}

/// A client builder that trusts `ca` (PEM) for `https://` nodes.
fn builder(ca: Option<&std::path::Path>) -> Result<reqwest::ClientBuilder> {
    // No redirects: requests carry the cluster secret or a token in headers.
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60));
    if let Some(path) = ca {
        let pem =
            std::fs::read(path).with_context(|| format!("reading --ca {}", path.display()))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--ca {}: not a PEM certificate file", path.display()))?;
        if roots.is_empty() {
            bail!("--ca {}: holds no PEM certificate", path.display());
        }
        b = b.use_rustls_tls().tls_built_in_root_certs(false);
        for root in roots {
            b = b.add_root_certificate(root);
        }
    }
    Ok(b)
}

fn base(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

pub async fn cluster(cmd: ClusterCommand) -> Result<()> {
    let node = match &cmd {
        ClusterCommand::Init(node)
        | ClusterCommand::Status { node, .. }
        | ClusterCommand::Remove { node, .. }
        | ClusterCommand::Leader { node, .. } => node,
        ClusterCommand::Add(args) => &args.node,
    };
    let credential = match &cmd {
        ClusterCommand::Status { .. } => Credential::TokenOrSecret,
        _ => Credential::Secret,
    };
    let client = node.client(credential)?;
    match cmd {
        ClusterCommand::Init(node) => {
            let url = format!("{}/v1/cluster/init", base(&node.node));
            let resp = client
                .post(&url)
                .send()
                .await
                .with_context(|| format!("POST {url}"))?;
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("{url} answered {status}: {body}");
            }
            println!("{}", body["message"].as_str().unwrap_or("ok"));
        }
        ClusterCommand::Status { node, json } => {
            let url = format!("{}/v1/cluster", base(&node.node));
            let resp = client
                .get(&url)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            let status = resp.status();
            let text = resp.text().await.context("reading /v1/cluster")?;
            if !status.is_success() {
                bail!("{url} answered {status}: {text}");
            }
            if json {
                // As the node sent it (a newer node's fields included).
                let body: Value = serde_json::from_str(&text).context("reading /v1/cluster")?;
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                let s: NodeStatus = serde_json::from_str(&text).context("reading /v1/cluster")?;
                print!("{}", render_status(&s));
            }
        }
        ClusterCommand::Add(args) => {
            let url = format!("{}/v1/cluster/members", base(&args.node.node));
            let mut body = serde_json::json!({
                "id": args.id,
                "addr": args.addr,
                "role": if args.witness { "witness" } else { "data" },
                "voter": !args.learner,
            });
            if let Some(old) = args.replaces {
                body["replaces"] = serde_json::json!(old);
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(args.wait);
            let answer = loop {
                let (status, answer) =
                    membership_call(&client, reqwest::Method::POST, &url, Some(&body)).await?;
                // The learner keeps catching up on the leader; the same request continues.
                let pending = status.as_u16() == 503
                    && answer["error"]["code"].as_str() == Some("catch_up_pending");
                if pending && std::time::Instant::now() < deadline {
                    eprintln!("{}", answer["error"]["message"].as_str().unwrap_or(""));
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
                break check_answer(&url, status, answer)?;
            };
            print_membership_result(&client, &args.node, &answer).await?;
        }
        ClusterCommand::Remove { node, id } => {
            let url = format!("{}/v1/cluster/members/{id}", base(&node.node));
            let (status, answer) =
                membership_call(&client, reqwest::Method::DELETE, &url, None).await?;
            let answer = check_answer(&url, status, answer)?;
            print_membership_result(&client, &node, &answer).await?;
        }
        ClusterCommand::Leader { node, to } => {
            let url = format!("{}/v1/cluster/leader", base(&node.node));
            let body = match to {
                Some(to) => serde_json::json!({ "to": to }),
                None => serde_json::json!({}),
            };
            let (status, answer) =
                membership_call(&client, reqwest::Method::POST, &url, Some(&body)).await?;
            let answer = check_answer(&url, status, answer)?;
            print_membership_result(&client, &node, &answer).await?;
        }
    }
    Ok(())
}

/// Sends a membership request; returns the status and the JSON answer.
async fn membership_call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
) -> Result<(reqwest::StatusCode, Value)> {
    let mut req = client.request(method.clone(), url);
    if let Some(body) = body {
        req = req.json(body);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    Ok((status, answer))
}

/// The answer of a successful request, or an error carrying the server's code and message.
fn check_answer(url: &str, status: reqwest::StatusCode, answer: Value) -> Result<Value> {
    if status.is_success() {
        return Ok(answer);
    }
    match (
        answer["error"]["code"].as_str(),
        answer["error"]["message"].as_str(),
    ) {
        (Some(code), Some(message)) => bail!("{message} ({status}, {code})"),
        _ => bail!("{url} answered {status}: {answer}"),
    }
}

/// Prints what a membership request did, then the cluster as the node now sees it.
async fn print_membership_result(
    client: &reqwest::Client,
    node: &NodeArg,
    answer: &Value,
) -> Result<()> {
    println!("{}", answer["message"].as_str().unwrap_or("done"));
    let url = format!("{}/v1/cluster", base(&node.node));
    let status: NodeStatus = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .json()
        .await
        .context("reading /v1/cluster")?;
    println!();
    print!("{}", render_status(&status));
    Ok(())
}

/// `tally cluster status`: the node, its Raft view, its log, and the members.
fn render_status(s: &NodeStatus) -> String {
    use std::fmt::Write as _;
    // An absent index or leader shows as `null`, as in the JSON.
    let opt = |v: Option<u64>| v.map_or_else(|| "null".to_string(), |v| v.to_string());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {} ({}) — {} — leader {} — term {}",
        s.node_id,
        s.role,
        s.raft_state,
        opt(s.leader_id),
        s.term
    );
    let _ = writeln!(
        out,
        "log: last {} committed {} applied {} snapshot {} purged {}",
        opt(s.last_log_index),
        opt(s.committed_index),
        s.applied_index,
        opt(s.snapshot_index),
        opt(s.purged_index)
    );
    let _ = writeln!(
        out,
        "{:<4} {:<22} {:<8} {:<6} matched",
        "id", "address", "role", "voter"
    );
    for m in &s.members {
        let _ = writeln!(
            out,
            "{:<4} {:<22} {:<8} {:<6} {}",
            m.id,
            m.addr,
            m.role.as_str(),
            m.voter,
            opt(m.matched_index)
        );
    }
    // Only nodes that sample their voters' clocks (data nodes of this version) say more.
    let c = &s.clock;
    if !c.peers.is_empty() {
        let signed = |v: Option<i64>| v.map_or_else(|| "null".to_string(), |v| format!("{v:+}"));
        let peers: Vec<String> = c
            .peers
            .iter()
            .map(|p| format!("{} {}", p.id, signed(p.skew_ms)))
            .collect();
        let _ = writeln!(
            out,
            "clock: ahead of the voters' majority by {} ms (bound {}, tolerance {} ms){}; peers' skew ms: {}",
            signed(c.ahead_ms),
            c.bound.as_str(),
            c.max_skew_ms,
            if c.clamping { ", CLAMPING ingest time" } else { "" },
            peers.join(", ")
        );
    }
    out
}

pub async fn post(args: PostArgs) -> Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let reader: Box<dyn Read> = match &args.file {
        None => Box::new(std::io::stdin()),
        Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdin()),
        Some(p) => {
            Box::new(std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?)
        }
    };
    let client = args.node.client(Credential::Token)?;
    let url = format!("{}/v1/events", base(&args.node.node));
    let (mut accepted, mut duplicates, mut requests) = (0u64, 0u64, 0u64);
    let mut chunk = String::new();
    let mut in_chunk = 0usize;
    let mut first_line = 1usize;
    let mut line_no = 0usize;
    let mut lines = BufReader::new(reader).lines();
    loop {
        let line = lines.next().transpose().context("reading events")?;
        let done = line.is_none();
        if let Some(line) = line {
            line_no += 1;
            if line.trim().is_empty() {
                continue;
            }
            if in_chunk == 0 {
                first_line = line_no;
            }
            chunk.push_str(&line);
            chunk.push('\n');
            in_chunk += 1;
        }
        if in_chunk > 0 && (in_chunk >= args.batch || done) {
            let body: Value =
                send_with_retry(&client, &url, &chunk, args.retries, first_line).await?;
            accepted += body["accepted"].as_u64().unwrap_or(0);
            duplicates += body["duplicates"].as_u64().unwrap_or(0);
            requests += 1;
            chunk.clear();
            in_chunk = 0;
        }
        if done {
            break;
        }
    }
    println!(
        "posted {requests} requests: {accepted} events accepted, {duplicates} of them duplicates"
    );
    Ok(())
}

async fn send_with_retry(
    client: &reqwest::Client,
    url: &str,
    body: &str,
    retries: u32,
    first_line: usize,
) -> Result<Value> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = client
            .post(url)
            .header("content-type", "application/x-ndjson")
            .body(body.to_string())
            .send()
            .await;
        let retry_reason = match result {
            Ok(resp) => {
                let status = resp.status();
                let json: Value = resp.json().await.unwrap_or(Value::Null);
                if status.is_success() {
                    return Ok(json);
                }
                if status.as_u16() != 429 && status.as_u16() != 503 {
                    bail!(
                        "request starting at input line {first_line} was rejected ({status}): {}",
                        serde_json::to_string_pretty(&json["error"]).unwrap_or_default()
                    );
                }
                format!(
                    "{status}: {}",
                    json["error"]["message"].as_str().unwrap_or("")
                )
            }
            Err(e) => e.to_string(),
        };
        if attempt >= retries {
            bail!("giving up on the request starting at input line {first_line} after {attempt} attempts: {retry_reason}");
        }
        tracing::warn!("retrying request at line {first_line} ({retry_reason})");
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(10)))).await;
    }
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    #[command(flatten)]
    pub node: NodeArg,
    /// The query; read from stdin when absent or "-".
    pub query: Option<String>,
    /// Include every event acknowledged before the query (read-your-writes).
    #[arg(long)]
    pub strong: bool,
    /// Include everything up to this Raft log index.
    #[arg(long)]
    pub min_index: Option<u64>,
    /// Print the raw JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn sql(args: SqlArgs) -> Result<()> {
    let query = match args.query.as_deref() {
        None | Some("-") => {
            let mut q = String::new();
            std::io::stdin()
                .read_to_string(&mut q)
                .context("reading the query from stdin")?;
            q
        }
        Some(q) => q.to_string(),
    };
    if query.trim().is_empty() {
        bail!("no query given (pass it as an argument or on stdin)");
    }
    let mut body = serde_json::json!({
        "sql": query,
        "consistency": if args.strong { "strong" } else { "none" },
    });
    if let Some(i) = args.min_index {
        body["min_index"] = serde_json::json!(i);
    }
    let url = format!("{}/v1/sql", base(&args.node.node));
    let resp = args
        .node
        .client(Credential::Token)?
        .post(&url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let answer: Value = resp.json().await.context("reading the answer")?;
    if !status.is_success() {
        bail!(
            "{} ({status})",
            answer["error"]["message"]
                .as_str()
                .unwrap_or("query failed")
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    print!("{}", render_table(&answer));
    Ok(())
}

/// A plain-text table of a `/v1/sql` answer.
fn render_table(answer: &Value) -> String {
    let names: Vec<String> = answer["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or("?").to_string())
        .collect();
    let rows: Vec<Vec<String>> = answer["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            r.as_array()
                .into_iter()
                .flatten()
                .map(|v| match v {
                    Value::Null => "NULL".to_string(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &[String]| -> String {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", parts.join(" | ").trim_end())
    };
    let mut out = line(&names);
    out.push_str(&format!(
        "{}\n",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-")
    ));
    for row in &rows {
        out.push_str(&line(row));
    }
    out.push_str(&format!(
        "({} row{}; record store complete up to log index {})\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        answer["watermark"]
    ));
    if answer["truncated"].as_bool() == Some(true) {
        if let Some(m) = answer["message"].as_str() {
            out.push_str(&format!("{m}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_a_table_with_nulls_and_a_footer() {
        let answer = serde_json::json!({
            "columns": [{"name": "api_name", "type": "VARCHAR"}, {"name": "n", "type": "BIGINT"}],
            "rows": [["PizzaShackAPI", 12], [null, 3]],
            "watermark": 42,
            "truncated": false
        });
        let table = super::render_table(&answer);
        assert!(table.starts_with("api_name      | n\n"), "{table}");
        assert!(table.contains("PizzaShackAPI | 12"), "{table}");
        assert!(table.contains("NULL          | 3"), "{table}");
        assert!(
            table.contains("(2 rows; record store complete up to log index 42)"),
            "{table}"
        );
    }

    #[test]
    fn status_shows_the_node_its_log_and_aligned_members() {
        let s: super::NodeStatus = serde_json::from_value(serde_json::json!({
            "node_id": 2, "role": "data", "raft_state": "Follower", "leader_id": 1, "term": 7,
            "last_log_index": 120, "committed_index": 120, "cluster_committed_index": 120,
            "applied_index": 119, "snapshot_index": null, "purged_index": null,
            "members": [
                {"id": 1, "addr": "127.0.0.1:7101", "role": "data", "voter": true, "matched_index": null},
                {"id": 3, "addr": "127.0.0.1:7103", "role": "witness", "voter": false, "matched_index": 5}
            ],
            "log": {"first_index": 1, "last_index": 120, "entries": 120, "fsyncs": 9, "synced_index": 120},
            "snapshots": [],
            "retention": {"snapshot_floor": 0, "witness_max_log_entries": 100000},
            "state": {"buckets_minute": 0, "buckets_hour": 0, "buckets_day": 0, "dedup_ids": 0, "events_applied": 0},
            "ingest": {"requests": 0, "events": 0, "entries": 0, "rejected_overload": 0},
            "sink": {"enabled": false, "replicated_cursor": 0, "pending_events": 0,
                     "oldest_pending_index": null, "dropped_events": 0}
        }))
        .unwrap();
        assert_eq!(
            super::render_status(&s),
            "node 2 (data) — Follower — leader 1 — term 7\n\
             log: last 120 committed 120 applied 119 snapshot null purged null\n\
             id   address                role     voter  matched\n\
             1    127.0.0.1:7101         data     true   null\n\
             3    127.0.0.1:7103         witness  false  5\n"
        );
    }

    #[test]
    fn status_shows_the_clock_of_a_node_that_samples_its_voters() {
        let mut s: super::NodeStatus = serde_json::from_value(serde_json::json!({
            "node_id": 1, "role": "data", "raft_state": "Leader", "leader_id": 1, "term": 2,
            "last_log_index": 1, "committed_index": 1, "cluster_committed_index": 1,
            "applied_index": 1, "snapshot_index": null, "purged_index": null, "members": [],
            "log": {"first_index": 1, "last_index": 1, "entries": 1, "fsyncs": 1, "synced_index": 1},
            "snapshots": [],
            "retention": {"snapshot_floor": 0, "witness_max_log_entries": 100000},
            "state": {"buckets_minute": 0, "buckets_hour": 0, "buckets_day": 0, "dedup_ids": 0, "events_applied": 0},
            "ingest": {"requests": 0, "events": 0, "entries": 0, "rejected_overload": 0},
            "sink": {"enabled": false, "replicated_cursor": 0, "pending_events": 0,
                     "oldest_pending_index": null, "dropped_events": 0},
            "clock": {"max_skew_ms": 10000, "local_ms": 5, "majority_ms": 2, "ahead_ms": 3,
                      "bound": "majority", "clamping": false, "clamped_total": 0,
                      "last_stamp_ms": null,
                      "peers": [{"id": 2, "skew_ms": -3, "rtt_ms": 1, "sample_age_ms": 10},
                                {"id": 3, "skew_ms": null, "rtt_ms": null, "sample_age_ms": null}]}
        }))
        .unwrap();
        let clock_line = |s: &super::NodeStatus| {
            super::render_status(s)
                .lines()
                .find(|l| l.starts_with("clock:"))
                .map(str::to_string)
        };
        assert_eq!(
            clock_line(&s).unwrap(),
            "clock: ahead of the voters' majority by +3 ms (bound majority, tolerance 10000 ms); peers' skew ms: 2 -3, 3 null"
        );
        s.clock.clamping = true;
        assert!(clock_line(&s).unwrap().contains("CLAMPING"));
        s.clock.peers.clear();
        assert_eq!(clock_line(&s), None);
    }
}
