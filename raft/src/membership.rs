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

use std::fmt;

use openraft::errors::{ChangeMembershipError, ClientWriteError, Fatal, RaftError};
use openraft::metrics::WaitError;
use openraft::raft::Precondition;
use openraft::type_config::alias::{ChangeMembershipErrorOf, InstantOf};
use openraft::{ChangeMembers, Instant as _};

use crate::error::NotLeader;
use crate::node::{Node, NodeError};
use crate::types::{LogId, NodeId, RaftMetrics, Role, TallyNode, TypeConfig};

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

/// Why a membership operation was refused or did not finish. Each kind (the variants) maps
/// to one HTTP status and code in the API; the typed reasons inside carry the data and
/// produce the message.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The request itself is malformed or names something impossible.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// The resulting membership would break a safety rule; nothing was changed.
    #[error(transparent)]
    Unsafe(#[from] UnsafeChange),
    /// The request contradicts the current membership (e.g. another role for a known id).
    #[error(transparent)]
    Conflict(#[from] MemberConflict),
    #[error("node {0} is not a member of the cluster")]
    UnknownMember(NodeId),
    /// Only the leader changes membership; `leader` is where to go instead.
    #[error(transparent)]
    NotLeader(#[from] NotLeader),
    /// Another membership change is running or not yet committed.
    #[error(transparent)]
    InProgress(#[from] InProgress),
    /// A learner is still catching up; repeating the request continues where it stopped.
    #[error(
        "node {id} is a learner and has not caught up within {} s (it holds up to index {} of \
         {goal}); it keeps catching up: repeat the request to continue",
        .timeout.as_secs(),
        OrNone(*.matched)
    )]
    CatchUpPending {
        id: NodeId,
        timeout: Duration,
        /// What the leader has replicated to it.
        matched: Option<u64>,
        /// What the leader held when the wait began.
        goal: u64,
    },
    /// The hand-over target cannot take leadership now.
    #[error(transparent)]
    NotReady(#[from] NotReady),
    /// Proposed, but not seen committed in time (or leadership was lost meanwhile).
    #[error(transparent)]
    Timeout(#[from] OutcomeUnknown),
    #[error("raft: {0}")]
    Raft(#[source] RaftFailure),
}

/// Kinds of [`MembershipError::Invalid`].
#[derive(Debug, thiserror::Error)]
pub enum InvalidRequest {
    #[error("id must be a positive integer")]
    ZeroId,
    #[error(transparent)]
    Addr(#[from] BadAddr),
    #[error("node {0} cannot replace itself")]
    ReplacesItself(NodeId),
    #[error("\"replaces\" swaps voters: it needs \"voter\": true")]
    ReplacesNeedsVoter,
    #[error("node {0} is a learner, not a voter: remove it with DELETE /v1/cluster/members/{0}")]
    ReplacesLearner(NodeId),
    #[error("\"to\" must be a positive node id")]
    ZeroTarget,
    #[error(
        "node {0} is a witness: it holds no analytic state and cannot acknowledge writes, so \
         it never takes leadership on request"
    )]
    WitnessTarget(NodeId),
    #[error("node {0} is a learner, not a voter: only a voter can lead")]
    LearnerTarget(NodeId),
    /// The node refused the hand-over (the membership changed since it was checked).
    #[error(transparent)]
    Refused(Box<NodeError>),
}

/// An address that is not `host:port`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("addr {addr:?} {why}: expected host:port, e.g. \"10.0.0.4:7101\"")]
pub struct BadAddr {
    pub addr: String,
    pub why: &'static str,
}

/// Kinds of [`MembershipError::Unsafe`].
#[derive(Debug, thiserror::Error)]
pub enum UnsafeChange {
    #[error(transparent)]
    Voters(#[from] VoterRule),
    #[error(
        "changing node {id}'s address means removing it and adding it back, and without it \
         {why}"
    )]
    AddressChange { id: NodeId, why: VoterRule },
    #[error("node {0} is the last voter; a cluster cannot remove its last voter")]
    LastVoter(NodeId),
    #[error("cannot remove node {id}: {why}")]
    Removal { id: NodeId, why: VoterRule },
    #[error(
        "the new voters {{{}}} would have no live majority: node {} does not answer the \
         leader; bring it back first",
        Ids(.voters),
        Ids(.silent)
    )]
    NoLiveMajority {
        voters: Vec<NodeId>,
        silent: Vec<NodeId>,
    },
    /// openraft refused the change as an empty membership.
    #[error("{0}")]
    Empty(#[source] ChangeMembershipErrorOf<TypeConfig>),
}

/// A voter set that breaks Tally's rules (module docs).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VoterRule {
    #[error(
        "at least one data node must remain a voter (the voters would be {0}): a witness \
         holds no analytic state"
    )]
    NoDataVoter(Voters),
    #[error(
        "witnesses must be fewer than data voters (the voters would be {0}); to move the \
         witness, add the new one with \"replaces\" naming the old one so they swap in one \
         change"
    )]
    TooManyWitnesses(Voters),
}

/// Kinds of [`MembershipError::Conflict`].
#[derive(Debug, thiserror::Error)]
pub enum MemberConflict {
    #[error(
        "node {id} is a {} member; a node id keeps its role for life: remove it and add the \
         new node under a new id",
        .role.as_str()
    )]
    RoleForLife { id: NodeId, role: Role },
    #[error(
        "node {0} is a voter; \"voter\": false would demote it: remove it with DELETE \
         /v1/cluster/members/{0} instead"
    )]
    Demotion(NodeId),
    #[error("there is no other data voter to hand leadership to")]
    NoSuccessor,
    /// openraft refused the change for another reason.
    #[error("{0}")]
    Refused(#[source] ChangeMembershipErrorOf<TypeConfig>),
}

/// Kinds of [`MembershipError::InProgress`].
#[derive(Debug, thiserror::Error)]
pub enum InProgress {
    #[error("another membership operation is running on the leader; retry when it has finished")]
    OperationRunning,
    #[error("membership kept changing while adding node {0}; check GET /v1/cluster and retry")]
    KeptChanging(NodeId),
    #[error("the membership changed while this request was being carried out; retry")]
    MembershipMoved,
    #[error("a membership change is still being committed ({0}); retry shortly")]
    Uncommitted(#[source] ChangeMembershipErrorOf<TypeConfig>),
}

/// Kinds of [`MembershipError::NotReady`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error(
        "node {} does not answer the leader; it cannot take over now",
        Ids(.0)
    )]
    Silent(Vec<NodeId>),
    #[error(
        "node {id} is {lag} entries behind the leader (more than {max}); retry once it has \
         caught up"
    )]
    Behind { id: NodeId, lag: u64, max: u64 },
}

/// Kinds of [`MembershipError::Timeout`]: the outcome is unknown.
#[derive(Debug, thiserror::Error)]
pub enum OutcomeUnknown {
    #[error(
        "{what} was proposed but not seen committed within {} s; check GET /v1/cluster \
         (repeating the request is safe)",
        .within.as_secs()
    )]
    NotCommitted {
        what: &'static str,
        within: Duration,
    },
    #[error(
        "leadership changed while the membership change was in flight; its outcome is \
         unknown: check GET /v1/cluster (repeating the request is safe)"
    )]
    LeaderChanged,
    #[error("leadership did not move to node {to}: {source}")]
    Transfer {
        to: NodeId,
        #[source]
        source: WaitError,
    },
}

/// What failed inside Raft ([`MembershipError::Raft`]).
#[derive(Debug, thiserror::Error)]
pub enum RaftFailure {
    #[error(transparent)]
    Fatal(#[from] Fatal<TypeConfig>),
    #[error(transparent)]
    Wait(#[from] WaitError),
    #[error(transparent)]
    Node(Box<NodeError>),
}

/// Node ids, shown as `1, 2`.
struct Ids<'a>(&'a [NodeId]);

impl fmt::Display for Ids<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&join(self.0))
    }
}

/// An index, or `none`.
struct OrNone(Option<u64>);

impl fmt::Display for OrNone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(i) => write!(f, "{i}"),
            None => f.write_str("none"),
        }
    }
}

/// A set of voters with their roles, shown as `{1 data, 3 witness}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voters(pub Vec<(NodeId, Option<Role>)>);

impl fmt::Display for Voters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(id, role)| match role {
                Some(r) => format!("{id} {}", r.as_str()),
                None => id.to_string(),
            })
            .collect();
        write!(f, "{{{}}}", parts.join(", "))
    }
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
pub fn validate_addr(addr: &str) -> Result<(), BadAddr> {
    let bad = |why: &'static str| {
        Err(BadAddr {
            addr: addr.to_string(),
            why,
        })
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
) -> Result<(), VoterRule> {
    let witnesses: BTreeSet<NodeId> = voters
        .iter()
        .copied()
        .filter(|id| nodes.get(id).is_some_and(|n| n.witness))
        .collect();
    let data = voters.len() - witnesses.len();
    if data == 0 {
        return Err(VoterRule::NoDataVoter(describe(voters, nodes)));
    }
    if witnesses.len() >= data && witnesses.len() > 1 {
        return Err(VoterRule::TooManyWitnesses(describe(voters, nodes)));
    }
    Ok(())
}

/// The voters with their roles, for messages (`{1 data, 3 witness}`).
fn describe(voters: &BTreeSet<NodeId>, nodes: &BTreeMap<NodeId, TallyNode>) -> Voters {
    Voters(
        voters
            .iter()
            .map(|id| (*id, nodes.get(id).map(TallyNode::role)))
            .collect(),
    )
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
        return Err(InvalidRequest::ZeroId.into());
    }
    validate_addr(&req.node.addr).map_err(InvalidRequest::Addr)?;
    if let Some(old) = req.replaces {
        if old == id {
            return Err(InvalidRequest::ReplacesItself(id).into());
        }
        if !req.voter {
            return Err(InvalidRequest::ReplacesNeedsVoter.into());
        }
    }
    let existing = view.nodes.get(&id);
    let is_voter = view.voters.contains(&id);
    if let Some(n) = existing {
        if n.witness != req.node.witness {
            return Err(MemberConflict::RoleForLife { id, role: n.role() }.into());
        }
        if is_voter && !req.voter {
            return Err(MemberConflict::Demotion(id).into());
        }
    }
    // `replaces` is checked against the voters as they are now. Once the swap is done (the
    // old node gone, this one a voter), repeating the request is a no-op.
    let replaces = match req.replaces {
        Some(old) if view.voters.contains(&old) => Some(old),
        Some(old) if view.nodes.contains_key(&old) => {
            return Err(InvalidRequest::ReplacesLearner(old).into())
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
    check_voters(&target, &target_nodes).map_err(UnsafeChange::Voters)?;

    match existing {
        Some(n) if n.addr != req.node.addr => {
            if is_voter {
                let mut without = view.voters.clone();
                without.remove(&id);
                check_voters(&without, &view.nodes)
                    .map_err(|why| UnsafeChange::AddressChange { id, why })?;
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

/// One membership operation at a time on this node (the leader runs them all).
fn lock(node: &Node) -> Result<tokio::sync::MutexGuard<'_, ()>, MembershipError> {
    node.membership_op
        .try_lock()
        .map_err(|_| InProgress::OperationRunning.into())
}

fn ensure_leader(node: &Node) -> Result<(), MembershipError> {
    if node.is_leader() {
        Ok(())
    } else {
        Err(NotLeader {
            leader: node.leader().filter(|(id, _)| *id != node.id),
        }
        .into())
    }
}

/// Adds (or re-adds) a member: as a learner, waits (bounded) until it has caught up, then, for
/// a voter, promotes it — removing `replaces` in the same change. Repeating a request that has
/// been carried out is a no-op; repeating one that stopped half-way continues it.
pub async fn add_member(node: &Node, req: AddMember) -> Result<Outcome, MembershipError> {
    let _one_at_a_time = lock(node)?;
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
    Err(InProgress::KeptChanging(req.id).into())
}

/// Removes a voter or a learner from the cluster.
pub async fn remove_member(node: &Node, id: NodeId) -> Result<Outcome, MembershipError> {
    if id == 0 {
        return Err(InvalidRequest::ZeroId.into());
    }
    let _one_at_a_time = lock(node)?;
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
            return Err(UnsafeChange::LastVoter(id).into());
        }
        check_voters(&target, &view.nodes).map_err(|why| UnsafeChange::Removal { id, why })?;
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
    let _one_at_a_time = lock(node)?;
    ensure_leader(node)?;
    let m = node.metrics();
    let view = View::of(&m);
    let to = match to {
        Some(0) => return Err(InvalidRequest::ZeroTarget.into()),
        Some(to) => to,
        None => node
            .best_successor()
            .ok_or(MembershipError::Conflict(MemberConflict::NoSuccessor))?,
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
        return Err(InvalidRequest::WitnessTarget(to).into());
    }
    if !view.voters.contains(&to) {
        return Err(InvalidRequest::LearnerTarget(to).into());
    }
    // A leader that hands over stops accepting writes until the target takes over: never
    // hand over to a node that is not answering right now.
    if let Err(silent) = wait_fresh_acks(node, &[to].into(), 1).await {
        return Err(NotReady::Silent(silent).into());
    }
    let m = node.metrics();
    let matched = matched_index(&m, to).unwrap_or(0);
    let last = m.last_log_index.unwrap_or(0);
    if last.saturating_sub(matched) > TRANSFER_MAX_LAG {
        return Err(NotReady::Behind {
            id: to,
            lag: last - matched,
            max: TRANSFER_MAX_LAG,
        }
        .into());
    }
    let new = node
        .transfer_leadership(to, TRANSFER_TIMEOUT)
        .await
        .map_err(|e| match e {
            NodeError::TransferTimeout { to, source } => {
                OutcomeUnknown::Transfer { to, source }.into()
            }
            // Leadership moved while the hand-over was being prepared: the request is
            // refused (400), not forwarded; the new leader would pick its own successor,
            // possibly this node again.
            e @ (NodeError::NotLeader(_)
            | NodeError::NotMember(_)
            | NodeError::WitnessTarget(_)) => InvalidRequest::Refused(Box::new(e)).into(),
            other => MembershipError::Raft(RaftFailure::Node(Box::new(other))),
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

fn timeout_error(what: &'static str) -> MembershipError {
    OutcomeUnknown::NotCommitted {
        what,
        within: CHANGE_TIMEOUT,
    }
    .into()
}

fn write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> MembershipError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            NotLeader::from_forward(f).into()
        }
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => {
            OutcomeUnknown::LeaderChanged.into()
        }
        RaftError::APIError(ClientWriteError::PreconditionFailed(_)) => {
            InProgress::MembershipMoved.into()
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => match e {
            ChangeMembershipError::InProgress(_)
            | ChangeMembershipError::UncommittedLeaderLog(_) => InProgress::Uncommitted(e).into(),
            ChangeMembershipError::EmptyMembership(_) => UnsafeChange::Empty(e).into(),
            other => MemberConflict::Refused(other).into(),
        },
        RaftError::Fatal(f) => MembershipError::Raft(f.into()),
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
    let since = InstantOf::<TypeConfig>::now();
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
            UnsafeChange::NoLiveMajority {
                voters: voters.iter().copied().collect(),
                silent,
            }
            .into()
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
        Ok(_) => Err(NotLeader {
            leader: node.leader().filter(|(l, _)| *l != me),
        }
        .into()),
        Err(WaitError::Timeout(..)) => Err(MembershipError::CatchUpPending {
            id,
            timeout: CATCH_UP_TIMEOUT,
            matched: matched_index(&node.metrics(), id),
            goal,
        }),
        Err(e) => Err(MembershipError::Raft(e.into())),
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

    /// The messages users see are the ones they saw when these errors were strings.
    #[test]
    fn messages_are_unchanged() {
        let all = nodes(&[(1, false), (3, true), (5, true)]);
        let msg = |e: MembershipError| e.to_string();
        assert_eq!(
            msg(InvalidRequest::ZeroId.into()),
            "id must be a positive integer"
        );
        assert_eq!(
            msg(InvalidRequest::Addr(validate_addr("host").unwrap_err()).into()),
            "addr \"host\" has no port: expected host:port, e.g. \"10.0.0.4:7101\""
        );
        assert_eq!(
            msg(InvalidRequest::ReplacesItself(4).into()),
            "node 4 cannot replace itself"
        );
        assert_eq!(
            msg(InvalidRequest::ReplacesNeedsVoter.into()),
            "\"replaces\" swaps voters: it needs \"voter\": true"
        );
        assert_eq!(
            msg(InvalidRequest::ReplacesLearner(6).into()),
            "node 6 is a learner, not a voter: remove it with DELETE /v1/cluster/members/6"
        );
        assert_eq!(
            msg(InvalidRequest::ZeroTarget.into()),
            "\"to\" must be a positive node id"
        );
        assert_eq!(
            msg(InvalidRequest::WitnessTarget(3).into()),
            "node 3 is a witness: it holds no analytic state and cannot acknowledge writes, so \
             it never takes leadership on request"
        );
        assert_eq!(
            msg(InvalidRequest::LearnerTarget(4).into()),
            "node 4 is a learner, not a voter: only a voter can lead"
        );
        assert_eq!(
            msg(InvalidRequest::Refused(Box::new(NodeError::NotMember(9))).into()),
            "node 9 is not a member"
        );
        let no_data = check_voters(&set(&[3, 5]), &all).unwrap_err();
        assert_eq!(
            msg(UnsafeChange::Voters(no_data.clone()).into()),
            "at least one data node must remain a voter (the voters would be {3 witness, 5 \
             witness}): a witness holds no analytic state"
        );
        let witnesses = check_voters(&set(&[1, 3, 5]), &all).unwrap_err();
        assert_eq!(
            witnesses.to_string(),
            "witnesses must be fewer than data voters (the voters would be {1 data, 3 witness, \
             5 witness}); to move the witness, add the new one with \"replaces\" naming the old \
             one so they swap in one change"
        );
        assert_eq!(
            msg(UnsafeChange::AddressChange {
                id: 1,
                why: no_data.clone()
            }
            .into()),
            format!(
                "changing node 1's address means removing it and adding it back, and without \
                 it {no_data}"
            )
        );
        assert_eq!(
            msg(UnsafeChange::LastVoter(1).into()),
            "node 1 is the last voter; a cluster cannot remove its last voter"
        );
        assert_eq!(
            msg(UnsafeChange::Removal {
                id: 1,
                why: no_data.clone()
            }
            .into()),
            format!("cannot remove node 1: {no_data}")
        );
        assert_eq!(
            msg(UnsafeChange::NoLiveMajority {
                voters: vec![1, 2, 3],
                silent: vec![2, 3]
            }
            .into()),
            "the new voters {1, 2, 3} would have no live majority: node 2, 3 does not answer \
             the leader; bring it back first"
        );
        assert_eq!(
            msg(MemberConflict::RoleForLife {
                id: 3,
                role: Role::Witness
            }
            .into()),
            "node 3 is a witness member; a node id keeps its role for life: remove it and add \
             the new node under a new id"
        );
        assert_eq!(
            msg(MemberConflict::Demotion(2).into()),
            "node 2 is a voter; \"voter\": false would demote it: remove it with DELETE \
             /v1/cluster/members/2 instead"
        );
        assert_eq!(
            msg(MemberConflict::NoSuccessor.into()),
            "there is no other data voter to hand leadership to"
        );
        assert_eq!(
            msg(MembershipError::UnknownMember(9)),
            "node 9 is not a member of the cluster"
        );
        assert_eq!(
            msg(NotLeader { leader: None }.into()),
            "this node is not the leader"
        );
        assert_eq!(
            msg(InProgress::OperationRunning.into()),
            "another membership operation is running on the leader; retry when it has finished"
        );
        assert_eq!(
            msg(InProgress::KeptChanging(4).into()),
            "membership kept changing while adding node 4; check GET /v1/cluster and retry"
        );
        assert_eq!(
            msg(InProgress::MembershipMoved.into()),
            "the membership changed while this request was being carried out; retry"
        );
        assert_eq!(
            msg(MembershipError::CatchUpPending {
                id: 4,
                timeout: CATCH_UP_TIMEOUT,
                matched: None,
                goal: 120
            }),
            "node 4 is a learner and has not caught up within 20 s (it holds up to index none \
             of 120); it keeps catching up: repeat the request to continue"
        );
        assert_eq!(
            msg(MembershipError::CatchUpPending {
                id: 4,
                timeout: CATCH_UP_TIMEOUT,
                matched: Some(7),
                goal: 120
            }),
            "node 4 is a learner and has not caught up within 20 s (it holds up to index 7 of \
             120); it keeps catching up: repeat the request to continue"
        );
        assert_eq!(
            msg(NotReady::Silent(vec![2]).into()),
            "node 2 does not answer the leader; it cannot take over now"
        );
        assert_eq!(
            msg(NotReady::Behind {
                id: 2,
                lag: 1500,
                max: TRANSFER_MAX_LAG
            }
            .into()),
            "node 2 is 1500 entries behind the leader (more than 1000); retry once it has \
             caught up"
        );
        assert_eq!(
            msg(timeout_error("the membership change")),
            "the membership change was proposed but not seen committed within 10 s; check GET \
             /v1/cluster (repeating the request is safe)"
        );
        assert_eq!(
            msg(OutcomeUnknown::LeaderChanged.into()),
            "leadership changed while the membership change was in flight; its outcome is \
             unknown: check GET /v1/cluster (repeating the request is safe)"
        );
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
