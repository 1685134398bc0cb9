//! Runs one node: Raft + the HTTP server, until told to stop.

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use tally_api::{AppState, Limits};
use tally_raft::Node;

use crate::config::NodeConfig;

/// A node whose HTTP server is running.
pub struct RunningNode {
    pub node: Arc<Node>,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
}

impl RunningNode {
    /// Binds the listener, starts Raft and serves HTTP.
    pub async fn start(cfg: NodeConfig) -> Result<RunningNode> {
        if let Some(store) = &cfg.node.record_store {
            tracing::info!(record_store = %redact(store), "record store configured");
        }
        if let Some(read) = &cfg.node.record_reads.url {
            tracing::info!(record_store_read = %redact(read), "SQL reads use their own database user");
        }
        crate::fds::check_budget(cfg.http.max_connections, crate::fds::raise_nofile_limit()?)?;
        // Bind first: a node that cannot listen should fail before touching its log.
        let listener = tally_api::server::bind(&cfg.listen)
            .await
            .with_context(|| format!("binding {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        refuse_amnesiac_voter(&cfg).await?;
        let node = Node::start(cfg.node.clone())
            .await
            .with_context(|| format!("starting node {}", cfg.node.id))?;
        let state = AppState::new(
            node.clone(),
            Limits {
                max_body_bytes: cfg.max_body_bytes,
                sql: cfg.sql.clone(),
                max_aggregate_rows: cfg.max_aggregate_rows,
                max_requests_in_flight: cfg.max_requests_in_flight,
                max_ingest_bytes_in_flight: cfg.max_ingest_bytes_in_flight,
            },
            &cfg.auth,
        )?;
        let app = tally_api::router(state);
        let (stop, mut stopped) = watch::channel(false);
        let options = tally_api::server::ServeOptions {
            limits: cfg.http.clone(),
            tls: cfg.tls.clone(),
            secret: cfg.node.secret.clone().into(),
        };
        let server = tokio::spawn(async move {
            tally_api::server::serve(listener, app, options, async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
        });
        let scheme = cfg.node.peer_http().scheme();
        tracing::info!(id = node.id, role = node.role.as_str(), %addr, scheme, "node serving");
        Ok(RunningNode { node, stop, server })
    }

    /// Hands leadership over (if this node leads), stops accepting requests, lets
    /// in-flight ones finish, then stops Raft.
    pub async fn stop(self) {
        // While the server still runs: requests arriving during the hand-over are
        // forwarded to the new leader instead of failing.
        self.node.step_down(std::time::Duration::from_secs(3)).await;
        self.close().await;
    }

    /// Stops without handing leadership over: for stopping a whole cluster at once.
    pub async fn close(self) {
        let _ = self.stop.send(true);
        match tokio::time::timeout(std::time::Duration::from_secs(10), self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("http server: {e}"),
            Ok(Err(e)) => tracing::warn!("http server task: {e}"),
            Err(_) => tracing::warn!("http server did not drain within 10 s"),
        }
        self.node.shutdown().await;
    }
}

/// A node whose data directory is empty but which the running cluster still lists as a
/// voter has forgotten its log *and its votes*: letting it vote again could elect a node
/// that lacks acknowledged entries. It must be removed and added back instead.
async fn refuse_amnesiac_voter(cfg: &NodeConfig) -> Result<()> {
    if cfg.node.data_dir.join("raft").join("log").exists() {
        return Ok(());
    }
    let id = cfg.node.id;
    // Peers reach a voter at its listed address: only there can this node's lost votes
    // matter (a node coming back at a new address is re-added there by one request).
    let own_addr = cfg.node.members.get(&id).unwrap_or(&cfg.listen).clone();
    let peers = cfg.node.peer_http();
    let http = peers
        .client(std::time::Duration::from_secs(1))
        .timeout(std::time::Duration::from_secs(1))
        .build()?;
    for (peer, addr) in cfg.node.members.iter().filter(|(p, _)| **p != id) {
        let request = http
            .get(peers.url(addr, "/v1/cluster"))
            .header(tally_raft::rpc::SECRET_HEADER, &cfg.node.secret);
        let Ok(resp) = request.send().await else {
            continue;
        };
        // Only the membership is needed: a peer of another version may differ elsewhere.
        #[derive(serde::Deserialize)]
        struct Membership {
            members: Vec<tally_protocol::MemberStatus>,
        }
        let status = match resp.json::<Membership>().await {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!(
                    peer,
                    "could not read the membership of node {peer} at {addr} ({e}); \
                     starting with an empty data_dir without its confirmation"
                );
                continue;
            }
        };
        let listed_as_voter = status
            .members
            .iter()
            .any(|m| m.id == id && m.voter && m.addr == own_addr);
        if listed_as_voter {
            anyhow::bail!(
                "node {id} starts with an empty data_dir, but the cluster (asked node {peer} at {addr}) \
                 still lists it as a voter: its log and votes are lost, and voting again could elect a \
                 node that lacks acknowledged writes. Remove it first (`tally cluster remove --node \
                 {}://{addr} --id {id}`), then start it and add it back (`tally cluster add … --id {id}`).",
                peers.scheme()
            );
        }
    }
    Ok(())
}

/// The password removed from a URL before it is logged (the record store's rule, so logs
/// and error messages agree).
fn redact(url: &str) -> String {
    tally_storage::records::redact_url(url)
}

/// Waits for SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// `tally serve`.
pub async fn serve(cfg: NodeConfig) -> Result<()> {
    activate_plants()?;
    let running = RunningNode::start(cfg).await?;
    let node = running.node.clone();
    tokio::select! {
        _ = shutdown_signal() => {}
        reason = node.stopped() => exit_on_fatal(&reason).await,
    }
    tracing::info!("stopping");
    running.stop().await;
    Ok(())
}

/// Exit status of a node whose Raft stopped on a fatal error (`EX_IOERR`): a supervisor
/// restarts it, and on restart it recovers from what its disk really holds.
pub const EXIT_FATAL: i32 = 74;

/// Raft stopped on a fatal error (a failed fsync, a storage error): the log store refuses
/// every write after it, so the node could never again vote, append or acknowledge. Staying
/// up would leave a zombie that looks alive; exit instead. `/healthz` and `/readyz` already
/// answer 503 (they read the same state); the short pause lets a probe see that.
async fn exit_on_fatal(reason: &str) -> ! {
    tracing::error!(
        reason,
        exit_status = EXIT_FATAL,
        "raft stopped on a fatal error; exiting so that a supervisor restarts this node"
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // No graceful shutdown: handing leadership over or flushing needs the storage that
    // just failed. Whatever was acknowledged is durable on a majority already.
    std::process::exit(EXIT_FATAL)
}

/// `TALLY_PLANT`: planted bugs for the chaos suite (docs/chaos.md). Only a build with the
/// `chaos` feature has them; any other build refuses to start rather than ignore the request.
fn activate_plants() -> Result<()> {
    let list = std::env::var("TALLY_PLANT").unwrap_or_default();
    if list.trim().is_empty() {
        return Ok(());
    }
    #[cfg(feature = "chaos")]
    {
        let names = tally_raft::plant::activate(&list).map_err(anyhow::Error::msg)?;
        tracing::warn!(plants = ?names, "PLANTED BUGS ACTIVE: this node is deliberately broken for the chaos suite");
        Ok(())
    }
    #[cfg(not(feature = "chaos"))]
    {
        anyhow::bail!(
            "TALLY_PLANT={list:?} is set, but this tally was built without the `chaos` feature \
             (build with `cargo build --release --features chaos`)"
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_credentials() {
        assert_eq!(
            super::redact("mysql://u:p@h:3306/db"),
            "mysql://u:***@h:3306/db"
        );
        assert_eq!(super::redact("sqlite:///x.db"), "sqlite:///x.db");
        for (url, password) in [
            ("mysql://u:p?a@h/db", "p?a"),
            ("mysql://u:p@ss@h/db", "p@ss"),
            ("mysql://u:p%40@h/db?socket=/x@y", "p%40"),
        ] {
            assert!(!super::redact(url).contains(password), "{url}");
        }
    }
}
