//! Membership operations on the leader: add a node (learner → caught up → voter), remove one,
//! swap one voter for another in a single change, and hand leadership over.
//!
//! Every change is checked against Tally's rules before anything is written:
//!
//! * **A data voter remains.** A witness holds no analytic state, so a cluster of witnesses
//!   could commit entries that no data node has applied.
//! * **Witnesses stay fewer than data voters** — the only exception is the one witness beside
//!   a single remaining data node (the degraded state while a data node is being replaced).
//!   So two witnesses are never voters at once in the usual two-data-node cluster: a witness is
//!   moved with `replaces`, which swaps the old one out in the same membership change. Together
//!   these rules keep a data node in every quorum.
//! * **The new voters must have a live majority**: the leader itself plus voters that
//!   acknowledge a heartbeat sent *after* the request arrived (a node that died a moment ago
//!   still has a recent acknowledgement). Otherwise the change could never commit and the
//!   cluster would be stuck in a joint configuration that needs the dead node.
//! * **A node id keeps its role**, and a new voter first catches up as a learner.
//!
//! Voter changes go through openraft's joint consensus (`change_membership`), guarded by the
//! membership log id the decision was based on, so a change made in between is refused rather
//! than overwritten. One membership operation runs at a time on a node.
//!
//! Changing a member's address is done by removing it and adding it back under the same id
//! (openraft's `add_learner` keeps the old address of a known node; `SetNodes` can split the
//! cluster if the new address belongs to another node). The same applies to a data node that
//! lost its disk: remove it while it is stopped, start it empty, add it back. (A wiped node
//! restarted while still a voter forgot its log and its votes; openraft treats that as a log
//! reversion, which it does not allow.) Reusing an id is safe only while no historical
//! membership let that node form a quorum alone (see `docs/membership.md`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::errors::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::raft::Precondition;
use openraft::type_config::alias::InstantOf;
use openraft::{ChangeMembers, Instant as _};

use crate::node::{Node, NodeError};
use crate::types::{LogId, NodeId, RaftMetrics, TallyNode};

/// How long a new learner may take to catch up within one request. It keeps catching up after
/// that; the same request, repeated, promotes it once it has.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a proposed membership change may take to commit (joint, then uniform).
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a leadership hand-over may take.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for the nodes a change depends on to acknowledge the leader afresh.
pub const LIVE_CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);
/// A hand-over target may lag the leader's log by at most this many entries.
pub const TRANSFER_MAX_LAG: u64 = 1000;

/// One membership operation at a time on this node (the leader runs them all).
static OPERATION: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A request to add (or re-add) a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddMember {
    pub id: NodeId,
    pub node: TallyNode,
    /// Promote to voter once caught up (otherwise it stays a learner).
    pub voter: bool,
    /// A voter to remove in the same membership change that promotes this node.
    pub replaces: Option<NodeId>,
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The request itself is malformed or names something impossible.
    #[error("{0}")]
    Invalid(String),
    /// The resulting membership would break a safety rule; nothing was changed.
    #[error("{0}")]
    Unsafe(String),
    /// The request contradicts the current membership (e.g. another role for a known id).
    #[error("{0}")]
    Conflict(String),
    #[error("node {0} is not a member of the cluster")]
    UnknownMember(NodeId),
    /// Only the leader changes membership; `leader` is where to go instead.
    #[error("this node is not the leader")]
    NotLeader { leader: Option<(NodeId, TallyNode)> },
    /// Another membership change is running or not yet committed.
    #[error("{0}")]
    InProgress(String),
    /// A learner is still catching up; repeating the request continues where it stopped.
    #[error("{0}")]
    CatchUpPending(String),
    /// The hand-over target cannot take leadership now.
    #[error("{0}")]
    NotReady(String),
    /// Proposed, but not seen committed in time (or leadership was lost meanwhile).
    #[error("{0}")]
    Timeout(String),
    #[error("raft: {0}")]
    Raft(String),
}

/// What an operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub changed: bool,
    pub message: String,
}

impl Outcome {
    fn unchanged(message: impl Into<String>) -> Self {
        Outcome {
            changed: false,
            message: message.into(),
        }
    }
}

// ---- Validation ---------------------------------------------------------------------------

/// Checks a `host:port` address: a non-empty host without spaces or a path, and a port 1–65535.
pub fn validate_addr(addr: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "addr {addr:?} {why}: expected host:port, e.g. \"10.0.0.4:7101\""
        ))
    };
    if addr.contains("://") {
        return bad("has a scheme");
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return bad("has no port");
    };
    if host.is_empty() || host == "[]" {
        return bad("has no host");
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c == '/' || c == '@')
    {
        return bad("has an invalid host");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return bad("has an IPv6 host without brackets");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => bad("has an invalid port"),
    }
}

/// Tally's rules for a set of voters (module docs). `nodes` must describe every voter.
pub fn check_voters(
    voters: &BTreeSet<NodeId>,
    nodes: &BTreeMap<NodeId, TallyNode>,
) -> Result<(), String> {
    let witnesses: BTreeSet<NodeId> = voters
        .iter()
        .copied()
        .filter(|id| nodes.get(id).is_some_and(|n| n.witness))
        .collect();
    let data = voters.len() - witnesses.len();
    if data == 0 {
        return Err(format!(
            "at least one data node must remain a voter (the voters would be {}): a witness \
             holds no analytic state",
            describe(voters, nodes)
        ));
    }
    if witnesses.len() >= data && witnesses.len() > 1 {
        return Err(format!(
            "witnesses must be fewer than data voters (the voters would be {}); to move the \
             witness, add the new one with \"replaces\" naming the old one so they swap in one \
             change",
            describe(voters, nodes)
        ));
    }
    Ok(())
}

/// `{1 data, 3 witness}` style description.
fn describe(voters: &BTreeSet<NodeId>, nodes: &BTreeMap<NodeId, TallyNode>) -> String {
    let parts: Vec<String> = voters
        .iter()
        .map(|id| match nodes.get(id) {
            Some(n) => format!("{id} {}", n.role().as_str()),
            None => id.to_string(),
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// The membership as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// The voters of the last configuration (the target of an unfinished joint change).
    pub voters: BTreeSet<NodeId>,
    /// An earlier change stopped half-way: the configuration is still joint.
    pub joint: bool,
    pub nodes: BTreeMap<NodeId, TallyNode>,
    pub log_id: Option<LogId>,
}

impl View {
    pub fn of(m: &RaftMetrics) -> View {
        let stored = &m.membership_config;
        let configs = stored.membership().get_joint_config();
        View {
            voters: configs.last().cloned().unwrap_or_default(),
            joint: configs.len() > 1,
            nodes: stored
                .membership()
                .nodes()
                .map(|(id, n)| (*id, n.clone()))
                .collect(),
            log_id: *stored.log_id(),
        }
    }
}

/// The next step of an add request, given the current membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddStep {
    /// Nothing left to do.
    Done,
    /// The target is reached but the configuration is still joint: flatten it.
    Finish,
    /// The id is known under another address: remove it first, then add it back.
    RemoveOld { was_voter: bool },
    /// Add the node as a learner.
    AddLearner,
    /// Change the voters to this set (promoting the node, removing `replaces`).
    SetVoters(BTreeSet<NodeId>),
}

/// Decides the next step towards `req`, refusing unsafe or contradictory requests.
pub fn next_add_step(view: &View, req: &AddMember) -> Result<AddStep, MembershipError> {
    let id = req.id;
    if id == 0 {
        return Err(MembershipError::Invalid(
            "id must be a positive integer".into(),
        ));
    }
    validate_addr(&req.node.addr).map_err(MembershipError::Invalid)?;
    if let Some(old) = req.replaces {
        if old == id {
            return Err(MembershipError::Invalid(format!(
                "node {id} cannot replace itself"
            )));
        }
        if !req.voter {
            return Err(MembershipError::Invalid(
                "\"replaces\" swaps voters: it needs \"voter\": true".into(),
            ));
        }
    }
    let existing = view.nodes.get(&id);
    let is_voter = view.voters.contains(&id);
    if let Some(n) = existing {
        if n.witness != req.node.witness {
            return Err(MembershipError::Conflict(format!(
                "node {id} is a {} member; a node id keeps its role for life: remove it and \
                 add the new node under a new id",
                n.role().as_str()
            )));
        }
        if is_voter && !req.voter {
            return Err(MembershipError::Conflict(format!(
                "node {id} is a voter; \"voter\": false would demote it: remove it with \
                 DELETE /v1/cluster/members/{id} instead"
            )));
        }
    }
    // `replaces` is checked against the voters as they are now. Once the swap is done (the
    // old node gone, this one a voter), repeating the request is a no-op.
    let replaces = match req.replaces {
        Some(old) if view.voters.contains(&old) => Some(old),
        Some(old) if view.nodes.contains_key(&old) => {
            return Err(MembershipError::Invalid(format!(
                "node {old} is a learner, not a voter: remove it with DELETE \
                 /v1/cluster/members/{old}"
            )))
        }
        Some(_) if is_voter => None,
        Some(old) => return Err(MembershipError::UnknownMember(old)),
        None => None,
    };
    let mut target = view.voters.clone();
    if let Some(old) = replaces {
        target.remove(&old);
    }
    if req.voter {
        target.insert(id);
    }
    let mut target_nodes = view.nodes.clone();
    target_nodes.insert(id, req.node.clone());
    check_voters(&target, &target_nodes).map_err(MembershipError::Unsafe)?;

    match existing {
        Some(n) if n.addr != req.node.addr => {
            if is_voter {
                let mut without = view.voters.clone();
                without.remove(&id);
                check_voters(&without, &view.nodes).map_err(|why| {
                    MembershipError::Unsafe(format!(
                        "changing node {id}'s address means removing it and adding it back, \
                         and without it {why}"
                    ))
                })?;
            }
            Ok(AddStep::RemoveOld {
                was_voter: is_voter,
            })
        }
        None => Ok(AddStep::AddLearner),
        Some(_) if target != view.voters => Ok(AddStep::SetVoters(target)),
        Some(_) if view.joint => Ok(AddStep::Finish),
        Some(_) => Ok(AddStep::Done),
    }
}

// ---- Operations -----------------------------------------------------------------------------

fn lock() -> Result<tokio::sync::MutexGuard<'static, ()>, MembershipError> {
    OPERATION.try_lock().map_err(|_| {
        MembershipError::InProgress(
            "another membership operation is running on the leader; retry when it has finished"
                .into(),
        )
    })
}

fn ensure_leader(node: &Node) -> Result<(), MembershipError> {
    if node.is_leader() {
        Ok(())
    } else {
        Err(MembershipError::NotLeader {
            leader: node.leader().filter(|(id, _)| *id != node.id),
        })
    }
}

/// Adds (or re-adds) a member: as a learner, waits (bounded) until it has caught up, then, for
/// a voter, promotes it — removing `replaces` in the same change. Repeating a request that has
/// been carried out is a no-op; repeating one that stopped half-way continues it.
pub async fn add_member(node: &Node, req: AddMember) -> Result<Outcome, MembershipError> {
    let _one_at_a_time = lock()?;
    let mut done: Vec<String> = Vec::new();
    // Each round does one step; a request needs at most four (remove the old address, add
    // the learner, change the voters, flatten a joint configuration).
    for _ in 0..6 {
        ensure_leader(node)?;
        let view = View::of(&node.metrics());
        let id = req.id;
        match next_add_step(&view, &req)? {
            AddStep::Done => {
                let what = if req.voter { "a voter" } else { "a learner" };
                let message = if done.is_empty() {
                    format!(
                        "node {id} is already {what} with this address and role; nothing changed"
                    )
                } else {
                    format!("node {id} is {what}: {}", done.join(", "))
                };
                return Ok(Outcome {
                    changed: !done.is_empty(),
                    message,
                });
            }
            AddStep::Finish => {
                change(
                    node,
                    &view,
                    ChangeMembers::ReplaceAllVoters(view.voters.clone()),
                )
                .await?;
                done.push("finished the interrupted membership change".into());
            }
            AddStep::RemoveOld { was_voter } => {
                let old = view
                    .nodes
                    .get(&id)
                    .map(|n| n.addr.clone())
                    .unwrap_or_default();
                if was_voter {
                    let mut without = view.voters.clone();
                    without.remove(&id);
                    check_live_majority(node, &without).await?;
                    change(node, &view, ChangeMembers::ReplaceAllVoters(without)).await?;
                } else {
                    change(node, &view, ChangeMembers::RemoveNodes([id].into())).await?;
                }
                done.push(format!("removed node {id} at its old address {old}"));
            }
            AddStep::AddLearner => {
                let added = tokio::time::timeout(
                    CHANGE_TIMEOUT,
                    node.raft.add_learner(id, req.node.clone(), false),
                )
                .await
                .map_err(|_| timeout_error("adding the learner"))?;
                added.map_err(write_error)?;
                done.push(format!("added node {id} as a learner"));
                wait_caught_up(node, id).await?;
                done.push(format!("node {id} caught up"));
            }
            AddStep::SetVoters(target) => {
                for new in target.difference(&view.voters) {
                    wait_caught_up(node, *new).await?;
                }
                check_live_majority(node, &target).await?;
                let removed: Vec<NodeId> = view.voters.difference(&target).copied().collect();
                change(node, &view, ChangeMembers::ReplaceAllVoters(target.clone())).await?;
                done.push(if removed.is_empty() {
                    format!("promoted node {id} to voter")
                } else {
                    format!(
                        "promoted node {id} to voter and removed node {} in the same change",
                        join(&removed)
                    )
                });
            }
        }
    }
    Err(MembershipError::InProgress(format!(
        "membership kept changing while adding node {}; check GET /v1/cluster and retry",
        req.id
    )))
}

/// Removes a voter or a learner from the cluster.
pub async fn remove_member(node: &Node, id: NodeId) -> Result<Outcome, MembershipError> {
    if id == 0 {
        return Err(MembershipError::Invalid(
            "id must be a positive integer".into(),
        ));
    }
    let _one_at_a_time = lock()?;
    ensure_leader(node)?;
    let view = View::of(&node.metrics());
    let in_any_config = node
        .metrics()
        .membership_config
        .membership()
        .get_joint_config()
        .iter()
        .any(|c| c.contains(&id));
    if !view.nodes.contains_key(&id) {
        return Err(MembershipError::UnknownMember(id));
    }
    if in_any_config {
        let mut target = view.voters.clone();
        target.remove(&id);
        if target.is_empty() {
            return Err(MembershipError::Unsafe(format!(
                "node {id} is the last voter; a cluster cannot remove its last voter"
            )));
        }
        check_voters(&target, &view.nodes)
            .map_err(|why| MembershipError::Unsafe(format!("cannot remove node {id}: {why}")))?;
        check_live_majority(node, &target).await?;
        change(node, &view, ChangeMembers::ReplaceAllVoters(target.clone())).await?;
        Ok(Outcome {
            changed: true,
            message: format!(
                "removed voter {id}; the voters are now {}",
                describe(&target, &view.nodes)
            ),
        })
    } else {
        change(node, &view, ChangeMembers::RemoveNodes([id].into())).await?;
        Ok(Outcome {
            changed: true,
            message: format!("removed learner {id}"),
        })
    }
}

/// Hands leadership to `to`, or to the best other data voter (the one whose log reaches
/// furthest), and waits (bounded) until it leads. Returns the new leader.
pub async fn transfer_leader(
    node: &Node,
    to: Option<NodeId>,
) -> Result<(NodeId, Outcome), MembershipError> {
    let _one_at_a_time = lock()?;
    ensure_leader(node)?;
    let m = node.metrics();
    let view = View::of(&m);
    let to = match to {
        Some(0) => {
            return Err(MembershipError::Invalid(
                "\"to\" must be a positive node id".into(),
            ))
        }
        Some(to) => to,
        None => node.best_successor().ok_or_else(|| {
            MembershipError::Conflict("there is no other data voter to hand leadership to".into())
        })?,
    };
    if to == node.id {
        return Ok((
            to,
            Outcome::unchanged(format!("node {to} already leads; nothing changed")),
        ));
    }
    let Some(target) = view.nodes.get(&to) else {
        return Err(MembershipError::UnknownMember(to));
    };
    if target.witness {
        return Err(MembershipError::Invalid(format!(
            "node {to} is a witness: it holds no analytic state and cannot acknowledge writes, \
             so it never takes leadership on request"
        )));
    }
    if !view.voters.contains(&to) {
        return Err(MembershipError::Invalid(format!(
            "node {to} is a learner, not a voter: only a voter can lead"
        )));
    }
    // A leader that hands over stops accepting writes until the target takes over: never
    // hand over to a node that is not answering right now.
    if let Err(silent) = wait_fresh_acks(node, &[to].into(), 1).await {
        return Err(MembershipError::NotReady(format!(
            "node {} does not answer the leader; it cannot take over now",
            join(&silent)
        )));
    }
    let m = node.metrics();
    let matched = matched_index(&m, to).unwrap_or(0);
    let last = m.last_log_index.unwrap_or(0);
    if last.saturating_sub(matched) > TRANSFER_MAX_LAG {
        return Err(MembershipError::NotReady(format!(
            "node {to} is {} entries behind the leader (more than {TRANSFER_MAX_LAG}); retry \
             once it has caught up",
            last - matched
        )));
    }
    let new = node
        .transfer_leadership(to, TRANSFER_TIMEOUT)
        .await
        .map_err(|e| match e {
            NodeError::Timeout(m) => MembershipError::Timeout(m),
            NodeError::Invalid(m) => MembershipError::Invalid(m),
            other => MembershipError::Raft(other.to_string()),
        })?;
    Ok((
        new,
        Outcome {
            changed: true,
            message: format!("leadership moved from node {} to node {new}", node.id),
        },
    ))
}

// ---- Helpers --------------------------------------------------------------------------------

/// Proposes `changes` (removed voters leave the cluster), guarded by the membership `view` was
/// read from, and waits (bounded) until the final configuration is committed.
async fn change(
    node: &Node,
    view: &View,
    changes: ChangeMembers<NodeId, TallyNode>,
) -> Result<(), MembershipError> {
    tracing::info!(%changes, "membership change");
    let guard = Precondition::LastMembershipLogId {
        last_membership_log_id: view.log_id,
    };
    let result = tokio::time::timeout(
        CHANGE_TIMEOUT,
        node.raft.change_membership_if(changes, false, [guard]),
    )
    .await
    .map_err(|_| timeout_error("the membership change"))?;
    result.map(|_| ()).map_err(write_error)
}

fn timeout_error(what: &str) -> MembershipError {
    MembershipError::Timeout(format!(
        "{what} was proposed but not seen committed within {} s; check GET /v1/cluster \
         (repeating the request is safe)",
        CHANGE_TIMEOUT.as_secs()
    ))
}

fn write_error(
    e: RaftError<crate::TypeConfig, ClientWriteError<crate::TypeConfig>>,
) -> MembershipError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => MembershipError::NotLeader {
            leader: f.leader_id.zip(f.leader_node),
        },
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => MembershipError::Timeout(
            "leadership changed while the membership change was in flight; its outcome is \
             unknown: check GET /v1/cluster (repeating the request is safe)"
                .into(),
        ),
        RaftError::APIError(ClientWriteError::PreconditionFailed(_)) => {
            MembershipError::InProgress(
                "the membership changed while this request was being carried out; retry".into(),
            )
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => match e {
            ChangeMembershipError::InProgress(_)
            | ChangeMembershipError::UncommittedLeaderLog(_) => MembershipError::InProgress(
                format!("a membership change is still being committed ({e}); retry shortly"),
            ),
            ChangeMembershipError::EmptyMembership(_) => MembershipError::Unsafe(e.to_string()),
            other => MembershipError::Conflict(other.to_string()),
        },
        RaftError::Fatal(f) => MembershipError::Raft(f.to_string()),
    }
}

fn matched_index(m: &RaftMetrics, id: NodeId) -> Option<u64> {
    m.replication
        .as_ref()
        .and_then(|r| r.get(&id).cloned().flatten())
        .map(|l| l.index)
}

/// Waits (up to [`LIVE_CONFIRM_TIMEOUT`]) until at least `need` of `ids` are live: the
/// leader itself, or a node that acknowledged a heartbeat or append the leader sent after
/// this call began. On timeout, returns the ids that stayed silent.
async fn wait_fresh_acks(
    node: &Node,
    ids: &BTreeSet<NodeId>,
    need: usize,
) -> Result<(), Vec<NodeId>> {
    let since = InstantOf::<crate::TypeConfig>::now();
    let me = node.id;
    let live = |m: &RaftMetrics, id: NodeId| {
        id == me
            || m.heartbeat
                .as_ref()
                .and_then(|h| h.get(&id).cloned().flatten())
                .is_some_and(|sent| *sent >= since)
    };
    let waited = node
        .raft
        .wait(Some(LIVE_CONFIRM_TIMEOUT))
        .metrics(
            |m| ids.iter().filter(|id| live(m, **id)).count() >= need,
            "fresh acknowledgements",
        )
        .await;
    match waited {
        Ok(_) => Ok(()),
        Err(_) => {
            let m = node.metrics();
            Err(ids.iter().copied().filter(|id| !live(&m, *id)).collect())
        }
    }
}

/// Refuses a voter set whose majority the leader cannot reach right now: the change could
/// not commit, and the cluster would be left in a joint configuration.
async fn check_live_majority(
    node: &Node,
    voters: &BTreeSet<NodeId>,
) -> Result<(), MembershipError> {
    wait_fresh_acks(node, voters, voters.len() / 2 + 1)
        .await
        .map_err(|silent| {
            MembershipError::Unsafe(format!(
                "the new voters {{{}}} would have no live majority: node {} does not answer \
                 the leader; bring it back first",
                join(&voters.iter().copied().collect::<Vec<_>>()),
                join(&silent),
            ))
        })
}

/// Waits (up to [`CATCH_UP_TIMEOUT`]) until the leader has replicated to `id` everything it
/// held when the wait began.
async fn wait_caught_up(node: &Node, id: NodeId) -> Result<(), MembershipError> {
    let goal = node.metrics().last_log_index.unwrap_or(0);
    let me = node.id;
    let waited = node
        .raft
        .wait(Some(CATCH_UP_TIMEOUT))
        .metrics(
            |m| m.current_leader != Some(me) || matched_index(m, id).is_some_and(|i| i >= goal),
            "learner caught up",
        )
        .await;
    match waited {
        Ok(m) if m.current_leader == Some(me) => Ok(()),
        Ok(_) => Err(MembershipError::NotLeader {
            leader: node.leader().filter(|(l, _)| *l != me),
        }),
        Err(openraft::metrics::WaitError::Timeout(..)) => {
            let matched = matched_index(&node.metrics(), id);
            Err(MembershipError::CatchUpPending(format!(
                "node {id} is a learner and has not caught up within {} s (it holds up to \
                 index {} of {goal}); it keeps catching up: repeat the request to continue",
                CATCH_UP_TIMEOUT.as_secs(),
                matched.map_or("none".to_string(), |i| i.to_string()),
            )))
        }
        Err(e) => Err(MembershipError::Raft(e.to_string())),
    }
}

fn join(ids: &[NodeId]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(spec: &[(NodeId, bool)]) -> BTreeMap<NodeId, TallyNode> {
        spec.iter()
            .map(|(id, w)| {
                let addr = format!("127.0.0.1:{}", 7100 + id);
                let n = if *w {
                    TallyNode::witness(addr)
                } else {
                    TallyNode::data(addr)
                };
                (*id, n)
            })
            .collect()
    }

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    /// Two data nodes (1, 2) and witness 3, all voters.
    fn standard() -> View {
        View {
            voters: set(&[1, 2, 3]),
            joint: false,
            nodes: nodes(&[(1, false), (2, false), (3, true)]),
            log_id: None,
        }
    }

    fn add(id: NodeId, witness: bool, replaces: Option<NodeId>) -> AddMember {
        let addr = format!("127.0.0.1:{}", 7100 + id);
        AddMember {
            id,
            node: if witness {
                TallyNode::witness(addr)
            } else {
                TallyNode::data(addr)
            },
            voter: true,
            replaces,
        }
    }

    #[test]
    fn voter_rules() {
        let all = nodes(&[
            (1, false),
            (2, false),
            (3, true),
            (4, false),
            (5, true),
            (6, true),
        ]);
        let ok = |v: &[NodeId]| check_voters(&set(v), &all).is_ok();
        assert!(ok(&[1, 2, 3]));
        assert!(
            ok(&[1, 3]),
            "one data node and one witness (degraded, but safe)"
        );
        assert!(ok(&[1]));
        assert!(ok(&[1, 2]));
        assert!(ok(&[1, 2, 4, 5, 6]), "three data, two witnesses");
        assert!(!ok(&[3]), "no data voter");
        assert!(!ok(&[3, 5]));
        assert!(!ok(&[1, 2, 3, 5]), "two witnesses beside two data nodes");
        assert!(!ok(&[1, 3, 5]), "witness majority");
    }

    #[test]
    fn addresses() {
        for good in ["127.0.0.1:7101", "node-4.example:80", "[::1]:7101"] {
            assert!(validate_addr(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ":7101",
            "host",
            "host:",
            "host:0",
            "host:70000",
            "http://h:1",
            "a b:1",
            "::1:7101",
            "h/x:1",
        ] {
            assert!(validate_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn adding_a_new_node_starts_as_learner_then_promotes() {
        let mut view = standard();
        assert_eq!(
            next_add_step(&view, &add(4, false, None)).unwrap(),
            AddStep::AddLearner
        );
        view.nodes.insert(4, TallyNode::data("127.0.0.1:7104"));
        assert_eq!(
            next_add_step(&view, &add(4, false, None)).unwrap(),
            AddStep::SetVoters(set(&[1, 2, 3, 4]))
        );
        view.voters.insert(4);
        assert_eq!(
            next_add_step(&view, &add(4, false, None)).unwrap(),
            AddStep::Done
        );
    }

    #[test]
    fn replacing_swaps_in_one_change_and_is_idempotent() {
        let mut view = standard();
        view.nodes.insert(5, TallyNode::witness("127.0.0.1:7105"));
        assert_eq!(
            next_add_step(&view, &add(5, true, Some(3))).unwrap(),
            AddStep::SetVoters(set(&[1, 2, 5]))
        );
        // After the swap: 3 is gone, 5 a voter; the same request is a no-op.
        view.voters = set(&[1, 2, 5]);
        view.nodes.remove(&3);
        assert_eq!(
            next_add_step(&view, &add(5, true, Some(3))).unwrap(),
            AddStep::Done
        );
    }

    #[test]
    fn a_second_witness_voter_is_refused() {
        let mut view = standard();
        view.nodes.insert(5, TallyNode::witness("127.0.0.1:7105"));
        let err = next_add_step(&view, &add(5, true, None)).unwrap_err();
        assert!(matches!(err, MembershipError::Unsafe(_)), "{err}");
        // As a learner it is fine.
        let mut learner = add(5, true, None);
        learner.voter = false;
        assert_eq!(next_add_step(&view, &learner).unwrap(), AddStep::Done);
    }

    #[test]
    fn contradictions_and_bad_input_are_refused() {
        let view = standard();
        // A known id under another role.
        let err = next_add_step(&view, &add(3, false, None)).unwrap_err();
        assert!(matches!(err, MembershipError::Conflict(_)), "{err}");
        // Demoting a voter through add.
        let mut demote = add(2, false, None);
        demote.voter = false;
        assert!(matches!(
            next_add_step(&view, &demote).unwrap_err(),
            MembershipError::Conflict(_)
        ));
        // Replacing an unknown node, itself, or without promoting.
        assert!(matches!(
            next_add_step(&view, &add(4, false, Some(9))).unwrap_err(),
            MembershipError::UnknownMember(9)
        ));
        assert!(matches!(
            next_add_step(&view, &add(4, false, Some(4))).unwrap_err(),
            MembershipError::Invalid(_)
        ));
        let mut learner = add(4, false, Some(2));
        learner.voter = false;
        assert!(matches!(
            next_add_step(&view, &learner).unwrap_err(),
            MembershipError::Invalid(_)
        ));
        assert!(matches!(
            next_add_step(&view, &add(0, false, None)).unwrap_err(),
            MembershipError::Invalid(_)
        ));
    }

    #[test]
    fn a_new_address_for_a_known_id_removes_it_first() {
        let view = standard();
        let mut moved = add(2, false, None);
        moved.node.addr = "127.0.0.1:9999".into();
        assert_eq!(
            next_add_step(&view, &moved).unwrap(),
            AddStep::RemoveOld { was_voter: true }
        );
        // Not when the node is the only data voter: removing it would be unsafe.
        let lone = View {
            voters: set(&[1, 3]),
            joint: false,
            nodes: nodes(&[(1, false), (3, true)]),
            log_id: None,
        };
        let mut moved = add(1, false, None);
        moved.node.addr = "127.0.0.1:9999".into();
        assert!(matches!(
            next_add_step(&lone, &moved).unwrap_err(),
            MembershipError::Unsafe(_)
        ));
    }

    #[test]
    fn an_interrupted_change_is_finished() {
        let mut view = standard();
        view.joint = true;
        assert_eq!(
            next_add_step(&view, &add(2, false, None)).unwrap(),
            AddStep::Finish
        );
    }
}
