//! The client half of Raft RPC: openraft's network traits over HTTP with bincode bodies.
//!
//! Every request carries the cluster secret in [`rpc::SECRET_HEADER`]; the server half (in
//! the `api` crate) refuses requests without it. Connection failures are reported as
//! `Unreachable` so openraft backs off; other failures as `Network` so it retries.

use std::future::Future;
use std::time::Duration;

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::OptionalSend;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::peer_http::PeerHttp;
use crate::rpc::{self, path};
use crate::types::{NodeId, Snapshot, SnapshotData, TallyNode, TypeConfig, Vote};

/// Least time an append RPC may take (openraft's own TTL is about a heartbeat interval).
const MIN_APPEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Creates one [`PeerClient`] per target node; all share one HTTP connection pool.
#[derive(Clone)]
pub struct HttpNetwork {
    http: reqwest::Client,
    peers: PeerHttp,
    secret: String,
    snapshot_chunk_bytes: usize,
}

impl HttpNetwork {
    /// `peers`: scheme, TLS and source address of connections to peers.
    pub fn new(secret: impl Into<String>, peers: PeerHttp) -> Result<Self, reqwest::Error> {
        let http = peers
            .client(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(HttpNetwork {
            http,
            peers,
            secret: secret.into(),
            snapshot_chunk_bytes: crate::snapshot_transfer::CHUNK_BYTES,
        })
    }
}

impl HttpNetwork {
    /// Snapshot bytes per chunk request (`raft.snapshot_chunk_bytes`).
    pub fn with_snapshot_chunk_bytes(mut self, bytes: usize) -> Self {
        self.snapshot_chunk_bytes = bytes.clamp(1, crate::snapshot_transfer::MAX_CHUNK_BYTES);
        self
    }

    fn peer(&self, target: NodeId, node: &TallyNode) -> PeerClient {
        PeerClient {
            target,
            base: self.peers.url(&node.addr, ""),
            http: self.http.clone(),
            secret: self.secret.clone(),
            snapshot_chunk_bytes: self.snapshot_chunk_bytes,
        }
    }

    /// Asks data member `target` how far its snapshot reaches (Tally's own RPC, with the
    /// cluster secret like every other). `Err` carries why it could not be asked.
    pub async fn snapshot_index(
        &self,
        from: NodeId,
        target: NodeId,
        node: &TallyNode,
        timeout: Duration,
    ) -> Result<rpc::SnapshotIndexReply, String> {
        let req = rpc::SnapshotIndexRequest { from };
        self.peer(target, node)
            .call(path::SNAPSHOT_INDEX, &req, timeout)
            .await
            .map_err(|f| match f {
                Failure::Unreachable(m) | Failure::Network(m) | Failure::NoSuchPath(m) => m,
            })
    }

    /// Asks voter `target` for its wall clock (Tally's own RPC, with the cluster secret).
    pub async fn clock(
        &self,
        from: NodeId,
        target: NodeId,
        node: &TallyNode,
        timeout: Duration,
    ) -> Result<rpc::ClockReply, String> {
        let req = rpc::ClockRequest { from };
        self.peer(target, node)
            .call(path::CLOCK, &req, timeout)
            .await
            .map_err(|f| match f {
                // An older peer without the clock RPC: no sample (`crate::clock` then
                // bounds stamps by the monotonic clock while no majority answers).
                Failure::Unreachable(m) | Failure::Network(m) | Failure::NoSuchPath(m) => m,
            })
    }
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &TallyNode) -> PeerClient {
        self.peer(target, node)
    }
}

/// Sends Raft RPCs to one peer.
pub struct PeerClient {
    target: NodeId,
    base: String,
    http: reqwest::Client,
    secret: String,
    snapshot_chunk_bytes: usize,
}

/// Why one RPC failed, before it is mapped onto the error type a given openraft call wants.
enum Failure {
    Unreachable(String),
    Network(String),
    /// The peer does not serve this path (an older version).
    NoSuchPath(String),
}

impl PeerClient {
    async fn call<Req, Resp>(
        &self,
        rpc_path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, Failure>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let body = rpc::encode(req).map_err(|e| Failure::Network(e.to_string()))?;
        let url = format!("{}{}", self.base, rpc_path);
        let resp = self
            .http
            .post(&url)
            .header(rpc::SECRET_HEADER, &self.secret)
            .header("content-type", "application/octet-stream")
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                let msg = format!("node {} at {url}: {e}", self.target);
                if e.is_connect() || e.is_timeout() {
                    Failure::Unreachable(msg)
                } else {
                    Failure::Network(msg)
                }
            })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| {
            Failure::Network(format!("node {}: reading response: {e}", self.target))
        })?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            let msg = format!("node {} answered {status}: {}", self.target, text.trim());
            if status == reqwest::StatusCode::NOT_FOUND {
                return Err(Failure::NoSuchPath(msg));
            }
            // A node that is shutting down or refuses our secret will not get better by
            // hammering it: back off.
            return Err(Failure::Unreachable(msg));
        }
        rpc::decode(&bytes).map_err(|e| Failure::Network(format!("node {}: {e}", self.target)))
    }
}

impl PeerClient {
    /// Posts `snapshot` chunk by chunk (`crate::snapshot_transfer`); towards a peer without
    /// the chunked path (an older version), as one body when it fits in one.
    async fn send_snapshot_in_chunks(
        &self,
        vote: Vote,
        snapshot: Snapshot,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, Failure> {
        use crate::snapshot_transfer::{chunk_ranges, ChunkReply, SnapshotChunk};
        // Each chunk is a few MiB: the hard TTL, but at least half a minute per chunk.
        let timeout = option.hard_ttl().max(Duration::from_secs(30));
        let data = snapshot.snapshot;
        let total_len = data.len() as u64;
        for range in chunk_ranges(data.len(), self.snapshot_chunk_bytes) {
            let chunk = SnapshotChunk {
                vote,
                meta: snapshot.meta.clone(),
                total_len,
                offset: range.start as u64,
                data: data[range.clone()].to_vec(),
            };
            match self.call(path::SNAPSHOT_CHUNK, &chunk, timeout).await {
                Ok(ChunkReply::Installed(resp)) => return Ok(resp),
                Ok(ChunkReply::Received { next_offset }) if next_offset == range.end as u64 => {}
                Ok(ChunkReply::Received { next_offset }) => {
                    return Err(Failure::Network(format!(
                        "node {} expects the snapshot from offset {next_offset}, not {}",
                        self.target, range.end
                    )))
                }
                Err(Failure::NoSuchPath(m))
                    if range.start == 0 && data.len() <= rpc::MAX_BODY_BYTES =>
                {
                    tracing::info!(
                        target = self.target,
                        "{m}: sending the snapshot in one request"
                    );
                    let req = (vote, snapshot.meta, data);
                    let timeout = option.hard_ttl().max(Duration::from_secs(60));
                    return self.call(path::SNAPSHOT, &req, timeout).await;
                }
                Err(f) => return Err(f),
            }
        }
        Err(Failure::Network(format!(
            "node {} took every chunk of the snapshot but did not install it",
            self.target
        )))
    }
}

fn rpc_error(f: Failure) -> RPCError<TypeConfig> {
    match f {
        Failure::Unreachable(m) | Failure::NoSuchPath(m) => {
            RPCError::Unreachable(Unreachable::from_string(m))
        }
        Failure::Network(m) => RPCError::Network(NetworkError::from_string(m)),
    }
}

fn streaming_error(f: Failure) -> StreamingError<TypeConfig> {
    match f {
        Failure::Unreachable(m) | Failure::NoSuchPath(m) => {
            StreamingError::Unreachable(Unreachable::from_string(m))
        }
        Failure::Network(m) => StreamingError::Network(NetworkError::from_string(m)),
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        // An append carries up to a few MiB and the follower fsyncs before answering: give
        // it more than a heartbeat interval.
        let timeout = option.hard_ttl().max(MIN_APPEND_TIMEOUT);
        self.call(path::APPEND, &rpc, timeout)
            .await
            .map_err(rpc_error)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(path::VOTE, &rpc, option.hard_ttl())
            .await
            .map_err(rpc_error)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(path::PRE_VOTE, &rpc, option.hard_ttl())
            .await
            .map_err(rpc_error)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        if crate::state_machine::is_witness_payload(&snapshot.snapshot) {
            // Invariant: a witness never ships analytic state it does not have. The data
            // node stays behind (and writes unavailable) until a data node can send it a
            // real snapshot.
            return Err(StreamingError::Unreachable(Unreachable::from_string(
                format!(
                    "node {}: needs a snapshot, and a witness holds no analytic state to send; \
                 waiting for a data node to lead",
                    self.target
                ),
            )));
        }
        let send = self.send_snapshot_in_chunks(vote, snapshot, option);
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = send => res.map_err(streaming_error),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(path::TRANSFER_LEADER, &req, option.hard_ttl())
            .await
            .map_err(rpc_error)
    }
}
