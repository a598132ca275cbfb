//! Daemon-wide membership (dlm_controld's part): protocol negotiation,
//! incarnations, the daemon start/sync cycle, stateful-merge detection and
//! verdict, fencing, the quorum gate and the logical membership of every
//! mount group.
//!
//! ## The daemon cycle
//!
//! Every change released by the barrier starts a cycle: each member
//! multicasts a [`DaemonStart`] stamped with the change's generation; when
//! a start from every member of *this* generation has arrived, every member
//! computes the same outcome from the same starts (negotiated version,
//! merge verdict, fencing set), and the lowest eligible member (the
//! *leader*) multicasts a [`crate::wire::DaemonSync`] carrying the
//! authoritative logical membership of every mount group. Applying it
//! completes the cycle. Mount/unmount/remount/withdraw requests are
//! messages in the same agreed stream; they are applied only when the cycle
//! is complete and only if stamped with the current generation, and each
//! applied one advances the epoch. Since every synced member applies the
//! same messages in the same order, all agree on every generation.
//!
//! ## Joining mid-ring
//!
//! A process that joins inside a ring cannot know how many events the group
//! applied since the ring started. It counts its own, sends *unanchored*
//! starts (pure self-descriptions, valid for any generation), and learns
//! the offset from the first anchored start that lists it in `joiners`.
//! The oldest member is always anchored (a founder is; a member whose elders
//! all left becomes the reference), so every cycle has an anchored start.

pub mod fence;
pub mod merge;

use crate::gcs::{self, Change, NodeList, MAX_NODES};
use crate::ids::{Generation, GroupId, Incarnation, Member, NodeId};
use crate::node::Node;
use crate::vocab::{DropReason, Effect, MountError, Notice, Out};
use crate::wire::{DaemonStart, DaemonSync, FsName, GroupSnap, Header, Mode, PendingFence, MAX_GROUPS};
use cohort_types::bounded::PushBounded;
use fence::FenceRec;

/// What a member's matched start told us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PeerStart {
    pub inc: Incarnation,
    pub proto_min: u16,
    pub proto_max: u16,
    pub has_state: bool,
    pub anchored: bool,
    pub old: bool,
    pub lineage: merge::Lineage,
    pub quorate_synced: Option<Generation>,
    pub failed_mask: u32,
    pub fenced_mask: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Peer {
    pub node: NodeId,
    /// Learned from its starts' headers.
    pub inc: Option<Incarnation>,
    /// Was already a member when this node joined.
    pub older: bool,
    /// It joined after our last completed sync; its join generation in our
    /// numbering (relative while we are unanchored).
    pub joined_at: Option<Generation>,
    pub has_state: bool,
    /// It was an old member (synced before) in the last completed cycle:
    /// eligible as fence actor.
    pub old: bool,
    pub start: Option<PeerStart>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DaemonPhase {
    /// Not yet in the daemon group.
    Joining,
    /// Waiting for daemon starts of the current generation.
    WaitStarts,
    /// All starts in; waiting for the leader's sync.
    WaitSync {
        leader: NodeId,
    },
    Complete,
}

/// One mount group's logical membership (every daemon tracks every group).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Logical {
    pub gid: GroupId,
    pub fs: FsName,
    pub journals: u16,
    pub members: heapless::Vec<(NodeId, Mode), MAX_NODES>,
}

impl Logical {
    pub fn contains(&self, n: NodeId) -> bool {
        self.members.iter().any(|m| m.0 == n)
    }
    pub fn nodes(&self) -> NodeList {
        let mut l = NodeList::new();
        for m in self.members.iter() {
            l.push_bounded(m.0);
        }
        l
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum OpKind {
    Mount { mode: Mode, journals: u16 },
    Unmount,
    Remount(Mode),
    Withdraw,
}

impl OpKind {
    /// The message type that carries this request.
    pub fn msg_kind(&self) -> crate::wire::MsgKind {
        use crate::wire::MsgKind;
        match self {
            OpKind::Mount { .. } => MsgKind::Mount,
            OpKind::Unmount => MsgKind::Unmount,
            OpKind::Remount(_) => MsgKind::Remount,
            OpKind::Withdraw => MsgKind::Withdraw,
        }
    }
}

/// A membership request of ours not yet applied; re-sent at every new
/// generation until it is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PendingOp {
    pub gid: GroupId,
    pub fs: FsName,
    pub kind: OpKind,
    pub sent_at: Option<Generation>,
}

#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DaemonState {
    pub phase: DaemonPhase,
    pub peers: heapless::Vec<Peer, MAX_NODES>,
    pub last_synced: Generation,
    pub last_leader: NodeId,
    /// Digest of the messages applied since the last completed cycle.
    pub acted: u64,
    /// `acted` when this cycle began (what our start reports).
    pub start_acted: u64,
    pub has_state: bool,
    /// Latest completed cycle in a ring known to be quorate.
    pub quorate_synced: Option<Generation>,
    /// Members our partition fenced successfully.
    pub fenced: heapless::Vec<Member, MAX_NODES>,
    pub fence: heapless::Vec<FenceRec, MAX_NODES>,
    /// Members that lost a merge verdict or cannot speak our protocol: none
    /// of their messages is ever applied.
    pub stale: heapless::Vec<Member, MAX_NODES>,
    pub proto: u16,
    /// Union of the fence_pending lists of this cycle's anchored starts
    /// (max attempts per target).
    pub union: heapless::Vec<PendingFence, MAX_NODES>,
    /// Union of the fenced lists of this cycle's anchored starts.
    pub fenced_union: heapless::Vec<Member, MAX_NODES>,
    pub logical: heapless::Vec<Logical, MAX_GROUPS>,
    pub ops: heapless::Vec<PendingOp, MAX_GROUPS>,
    /// Configured cluster nodes (empty: unknown).
    pub configured: NodeList,
    /// Members that departed since the last completed cycle, with the
    /// incarnation we knew.
    pub departed: heapless::Vec<Member, MAX_NODES>,
    /// Last merge verdict, for status.
    pub last_merge_partitions: u8,
    /// A *gap* (CORE-BUG-26): after a quorate cycle of ours, a ring of ours
    /// was not quorate, so another partition may have been quorate without
    /// us and done things we never heard of (mounted, taken journals). Until
    /// a change has been processed in a quorate ring, every configured node
    /// that is not here is fenced before anything replays every journal.
    pub gap: bool,
    /// Ring of the last change whose cycle added the gap's fences.
    pub gap_ring: Option<u64>,
    /// Fences we saw succeed before our latest gap. They no longer prove the
    /// node is down (it may have restarted and joined the other side), so
    /// they do not satisfy a pending fence; they still count as evidence in
    /// a merge verdict (`fenced_mask`) until the node is accepted again.
    pub fenced_pre_gap: NodeList,
    /// A pending fence could not be recorded: its table (one entry per
    /// node id, `MAX_NODES`) was full, which takes more distinct failed
    /// node ids than one configuration has (tests/CORE_BUGS.md, "node-keyed
    /// tables"). The node whose record was lost may still be writing, so no
    /// journal is replayed any more in this incarnation (`fence_clear` is
    /// false for everyone): a halt the operator sees, never an unfenced
    /// replay.
    pub fence_table_full: bool,
}

impl DaemonState {
    pub fn new() -> DaemonState {
        DaemonState {
            phase: DaemonPhase::Joining,
            peers: heapless::Vec::new(),
            last_synced: Generation::ZERO,
            last_leader: NodeId(0),
            acted: 0,
            start_acted: 0,
            has_state: false,
            quorate_synced: None,
            fenced: heapless::Vec::new(),
            fence: heapless::Vec::new(),
            stale: heapless::Vec::new(),
            proto: 0,
            union: heapless::Vec::new(),
            fenced_union: heapless::Vec::new(),
            logical: heapless::Vec::new(),
            ops: heapless::Vec::new(),
            configured: NodeList::new(),
            departed: heapless::Vec::new(),
            last_merge_partitions: 0,
            gap: false,
            gap_ring: None,
            fenced_pre_gap: NodeList::new(),
            fence_table_full: false,
        }
    }

    pub fn peer(&self, n: NodeId) -> Option<&Peer> {
        self.peers.iter().find(|p| p.node == n)
    }

    pub fn peer_mut(&mut self, n: NodeId) -> Option<&mut Peer> {
        self.peers.iter_mut().find(|p| p.node == n)
    }

    pub fn is_stale(&self, m: Member) -> bool {
        self.stale.contains(&m)
    }

    pub fn members(&self) -> NodeList {
        let mut l = NodeList::new();
        for p in self.peers.iter() {
            l.push_bounded(p.node);
        }
        l
    }

    pub fn logical(&self, gid: GroupId) -> Option<&Logical> {
        self.logical.iter().find(|g| g.gid == gid)
    }

    pub fn in_any_group(&self, n: NodeId) -> bool {
        self.logical.iter().any(|g| g.contains(n))
    }

    pub fn check_invariants(&self) {
        invariant!(self.peers.windows(2).all(|w| w[0].node < w[1].node), "peers not sorted");
        for g in self.logical.iter() {
            invariant!(g.members.windows(2).all(|w| w[0].0 < w[1].0), "logical members not sorted");
            invariant!(!g.members.is_empty(), "empty logical group kept");
        }
        for (i, a) in self.logical.iter().enumerate() {
            for b in self.logical.iter().skip(i + 1) {
                invariant!(a.gid != b.gid, "two logical groups with one id");
            }
        }
        for (i, f) in self.fence.iter().enumerate() {
            invariant!(!self.fence.iter().skip(i + 1).any(|g| g.target.node == f.target.node), "node fenced twice");
        }
    }
}

impl Default for DaemonState {
    fn default() -> Self {
        Self::new()
    }
}

/// Record `p` in a pending set; false if the set was full and `p` could
/// not be recorded (the caller halts replays: `fence_table_full`).
#[must_use]
fn upsert_pending(list: &mut heapless::Vec<PendingFence, MAX_NODES>, p: PendingFence) -> bool {
    match list.iter_mut().find(|x| x.target.node == p.target.node) {
        Some(e) if p.target.inc > e.target.inc => *e = p,
        Some(e) if p.target.inc == e.target.inc => e.attempts = e.attempts.max(p.attempts),
        Some(_) => {}
        None => {
            if list.push(p).is_err() {
                warn!("pending fence set full: node {} not recorded, replays halted", p.target.node.0);
                return false;
            }
        }
    }
    true
}

fn upsert_member(list: &mut heapless::Vec<Member, MAX_NODES>, m: Member) {
    if let Some(e) = list.iter_mut().find(|x| x.node == m.node) {
        if m.inc >= e.inc {
            *e = m;
        }
    } else if list.push(m).is_err() {
        warn!("member list full, dropping record of node {}", m.node.0);
    }
}

impl Node {
    pub(crate) fn on_ring(&mut self, ev: &gcs::RingEvent) -> Result<(), crate::barrier::BarrierError> {
        if let Some(change) = self.barrier.on_ring(ev)? {
            self.on_change(change);
        }
        Ok(())
    }

    pub(crate) fn on_confchg(&mut self, cc: &gcs::Confchg) -> Result<(), crate::barrier::BarrierError> {
        if cc.joined.len() > MAX_NODES || cc.left.len() > MAX_NODES {
            return Err(crate::barrier::BarrierError::TooManyEntries);
        }
        if let Some(change) = self.barrier.on_confchg(cc)? {
            self.on_change(change);
        }
        Ok(())
    }

    pub(crate) fn on_quorum(&mut self, q: &gcs::QuorumEvent) {
        self.barrier.on_quorum(q);
        self.update_quorate_synced();
        if !q.quorate && self.d.quorate_synced.is_some_and(|g| q.ring >= g.ring) && !self.d.gap {
            self.gap_begin();
        }
        self.gap_try_close();
        self.kick();
    }

    /// Close the gap once the current ring is known quorate and its change
    /// left nobody unaccounted for: either that change added the gap's
    /// fences, or it needs none (every configured node is a member or has a
    /// pending fence). The second case is a gap learnt late: quorum reports
    /// are not ordered with changes, so a non-quorate report of an older
    /// ring can arrive after the changes of a later, quorate ring, with no
    /// change to come that would add fences and close the gap (swarm seed
    /// 822618: node 1 alone in ring 24, everyone back in ring 28, ring 24's
    /// report after 28's changes; fs3's first mount waited forever).
    fn gap_try_close(&mut self) {
        let current = self.barrier.current().ring;
        if self.d.gap && self.quorate_now() && (self.d.gap_ring == Some(current) || self.gap_needs_no_fences()) {
            debug!("quorum gap closed at ring {}", current);
            self.d.gap = false;
        }
    }

    /// Would `gap_fences` add nothing now?
    fn gap_needs_no_fences(&self) -> bool {
        !self.d.configured.iter().any(|n| self.gap_fence_needed(*n))
    }

    /// Does configured node `n` need a gap fence: not us, not a member of
    /// the current change, no fence of it pending?
    fn gap_fence_needed(&self, n: NodeId) -> bool {
        n != self.cfg.node && self.d.peer(n).is_none() && !self.d.fence.iter().any(|r| r.target.node == n)
    }

    /// We lost quorum after a quorate cycle (see [`DaemonState::gap`]).
    fn gap_begin(&mut self) {
        debug!("quorum gap begins");
        self.d.gap = true;
        self.d.gap_ring = None;
        let fenced = core::mem::take(&mut self.d.fenced);
        for m in fenced {
            if !self.d.fenced_pre_gap.contains(&m.node) {
                self.d.fenced_pre_gap.push_bounded(m.node);
            }
        }
        // The fences are added at the next change, before our start of it
        // is rendered, so every member computes the same pending set from
        // the starts. Until then, `gap` holds first mounts back.
    }

    /// Fence every configured node that is not a member now, unless a fence
    /// of it is already pending. Like startup fencing, after a grace period
    /// (a node of the other side that merges back in time cancels it).
    fn gap_fences(&mut self) {
        for n in self.d.configured.clone().iter() {
            if self.gap_fence_needed(*n) {
                // The grace timer is armed when the cycle's starts are in.
                self.fence_add(Member { node: *n, inc: Incarnation(0) });
            }
        }
        self.d.gap_ring = Some(self.barrier.current().ring);
    }

    /// Record pre-merge quorum evidence: a completed cycle in a ring the
    /// quorum stream reported quorate (whichever came first).
    fn update_quorate_synced(&mut self) {
        if self.d.phase != DaemonPhase::Complete {
            return;
        }
        let g = self.d.last_synced;
        if self.barrier.quorate_at(g.ring) == Some(true) && self.d.quorate_synced.is_none_or(|q| q < g) {
            self.d.quorate_synced = Some(g);
        }
    }

    /// Quorate at exactly the current generation's ring.
    pub(crate) fn quorate_now(&self) -> bool {
        self.barrier.quorate_at(self.barrier.current().ring) == Some(true)
    }

    /// A change released by the barrier: a new daemon cycle.
    pub(crate) fn on_change(&mut self, change: Change) {
        let me = self.cfg.node;
        let first_join = self.d.phase == DaemonPhase::Joining;
        debug!("change gen {}.{} members {}", change.generation.ring, change.generation.epoch, change.members.len());
        // Departures.
        for l in change.left.iter() {
            if l.node == me {
                continue;
            }
            let Some(pos) = self.d.peers.iter().position(|p| p.node == l.node) else { continue };
            let peer = self.d.peers.remove(pos);
            if !self.d.departed.iter().any(|d| d.node == l.node) {
                self.d.departed.push_bounded(Member { node: l.node, inc: peer.inc.unwrap_or(Incarnation(0)) });
            }
            let in_group = self.d.in_any_group(l.node);
            if let Some(inc) = peer.inc {
                let m = Member { node: l.node, inc };
                if in_group || (peer.has_state && l.reason.is_failure()) {
                    self.fence_add(m);
                }
            }
        }
        // Reconcile with the member list (covers joins and anything missed).
        let mut kept: heapless::Vec<Peer, MAX_NODES> = heapless::Vec::new();
        for n in change.members.iter() {
            let existing = self.d.peers.iter().find(|p| p.node == *n).cloned();
            let peer = match existing {
                Some(mut p) => {
                    p.start = None;
                    p
                }
                None => Peer {
                    node: *n,
                    inc: if *n == me { Some(self.cfg.incarnation) } else { None },
                    older: first_join && *n != me,
                    joined_at: if first_join || *n == me { None } else { Some(change.generation) },
                    has_state: false,
                    old: false,
                    start: None,
                },
            };
            kept.push_bounded(peer);
        }
        // Peers that vanished without a left entry count as failed too.
        let vanished: heapless::Vec<Member, MAX_NODES> = self
            .d
            .peers
            .iter()
            .filter(|p| !change.members.contains(&p.node) && p.node != me)
            .filter(|p| p.has_state || self.d.in_any_group(p.node))
            .filter_map(|p| p.inc.map(|inc| Member { node: p.node, inc }))
            .collect();
        for m in vanished {
            self.fence_add(m);
        }
        // Departures since the last completed cycle (with the incarnation we
        // knew): the leader's snapshot decides at the end of the cycle who
        // stays in the groups (see `build_daemon_sync`).
        for n in change
            .left
            .iter()
            .map(|l| l.node)
            .chain(self.d.peers.iter().filter(|p| !change.members.contains(&p.node)).map(|p| p.node))
        {
            if n == me || self.d.departed.iter().any(|d| d.node == n) {
                continue;
            }
            let inc = self.d.peers.iter().find(|p| p.node == n).and_then(|p| p.inc).unwrap_or(Incarnation(0));
            self.d.departed.push_bounded(Member { node: n, inc });
        }
        self.d.peers = kept;
        // The oldest member is the reference for the numbering.
        if !self.barrier.anchored() && !self.d.peers.iter().any(|p| p.older) {
            let cur = self.barrier.current();
            let _ = self.barrier.anchor(cur);
        }
        self.d.union.clear();
        self.d.fenced_union.clear();
        self.d.phase = DaemonPhase::WaitStarts;
        if self.d.gap {
            self.gap_fences();
            if self.quorate_now() {
                self.d.gap = false;
            }
        }
        if !change.members.contains(&me) {
            // We are not in our own group (left it): nothing to send.
            return;
        }
        let gen = self.barrier.current();
        // The start is rendered later (when polled); what we acted on is
        // taken here, at the change's place in the delivered stream, which
        // is the same for every member that moved with us.
        self.d.start_acted = self.d.acted;
        self.out.send(Out::DaemonStart { gen });
        // Mount groups wait for the cycle to complete.
        for i in 0..self.groups.len() {
            self.group_daemon_changed(i);
        }
    }

    /// Our daemon start, built from current state.
    pub(crate) fn build_daemon_start(&self) -> DaemonStart {
        let members = self.d.members();
        let anchored = self.barrier.anchored();
        let mut joiners = heapless::Vec::new();
        if anchored {
            for p in self.d.peers.iter() {
                if let Some(j) = p.joined_at {
                    joiners.push_bounded((p.node, j));
                }
            }
        }
        // By node id: a member we saw fail that now has state has diverged
        // from us whatever its incarnation (a restart is clean because it
        // has no state, not because of the number).
        let failed_mask = crate::wire::mask_of(&members, |n| self.d.fence.iter().any(|f| f.target.node == n));
        let fenced_mask = crate::wire::mask_of(&members, |n| {
            self.d.fenced.iter().any(|f| f.node == n) || self.d.fenced_pre_gap.contains(&n)
        });
        let mut fence_pending = heapless::Vec::new();
        for f in self.d.fence.iter() {
            fence_pending.push_bounded(PendingFence { target: f.target, attempts: f.attempts });
        }
        let fenced = self.d.fenced.clone();
        DaemonStart {
            proto_min: self.cfg.proto_min,
            proto_max: self.cfg.proto_max,
            has_state: self.d.has_state,
            anchored,
            last_synced: self.d.last_synced,
            last_leader: self.d.last_leader,
            acted: self.d.start_acted,
            quorate_synced: self.d.quorate_synced,
            failed_mask,
            fenced_mask,
            joiners,
            fence_pending,
            fenced,
        }
    }

    pub(crate) fn build_daemon_sync(&self) -> DaemonSync {
        let mut groups = heapless::Vec::new();
        for g in self.d.logical.iter() {
            let mut snap = GroupSnap { fs: g.fs.clone(), journals: g.journals, members: heapless::Vec::new() };
            for (n, mode) in g.members.iter() {
                let Some(p) = self.d.peer(*n) else { continue };
                if let Some(inc) = p.inc {
                    if self.d.is_stale(Member { node: *n, inc }) {
                        continue;
                    }
                }
                // A member that departed during this cycle stays only if it
                // came back as the same process and nobody completed a cycle
                // without it (same lineage as ours): nothing was decided
                // without it, so its mounts are still ours to keep. A
                // restart (new incarnation) or a member of another lineage
                // leaves the group; its journal is then replayed after it is
                // fenced or has restarted.
                if let Some(d) = self.d.departed.iter().find(|d| d.node == *n) {
                    let mine = self.d.peer(self.cfg.node).and_then(|me| me.start).map(|s| s.lineage);
                    let same = p.start.is_some_and(|s| s.inc == d.inc && Some(s.lineage) == mine);
                    if !same {
                        continue;
                    }
                }
                snap.members.push_bounded((*n, *mode));
            }
            if !snap.members.is_empty() {
                groups.push_bounded(snap);
            }
        }
        DaemonSync { groups }
    }

    /// A delivered daemon start.
    pub(crate) fn on_daemon_start(&mut self, h: &Header, s: &DaemonStart) -> Result<(), DropReason> {
        let sender = h.sender;
        if self.d.peer(sender.node).is_none() {
            return Err(DropReason::NotMember);
        }
        // Learn the numbering from an anchored start that lists us.
        if !self.barrier.anchored() && s.anchored {
            if let Some((_, j)) = s.joiners.iter().find(|(n, _)| *n == self.cfg.node) {
                let cur = self.barrier.current();
                if j.ring == cur.ring {
                    let offset = j.epoch.saturating_sub(1);
                    let abs = Generation { ring: cur.ring, epoch: cur.epoch.saturating_add(offset) };
                    if !self.barrier.anchor(abs) {
                        return Err(DropReason::OldGeneration);
                    }
                    for p in self.d.peers.iter_mut() {
                        if let Some(ja) = p.joined_at.as_mut() {
                            ja.epoch = ja.epoch.saturating_add(offset);
                        }
                    }
                    // Our start now speaks the group's numbering (a start
                    // queued under the local numbering is dropped at render).
                    if self.d.phase == DaemonPhase::WaitStarts {
                        self.out.send(Out::DaemonStart { gen: abs });
                    }
                }
            }
        }
        if s.anchored && (!self.barrier.anchored() || h.generation != self.barrier.current()) {
            return Err(DropReason::OldGeneration);
        }
        if !matches!(self.d.phase, DaemonPhase::WaitStarts) {
            return Err(DropReason::OldGeneration);
        }
        let members = self.d.members();
        let old = s.anchored && s.last_synced != Generation::ZERO;
        if let Some(p) = self.d.peer_mut(sender.node) {
            if p.inc.is_some_and(|i| i != sender.inc) && p.start.is_some() {
                // A different incarnation of a member we already heard from
                // in this cycle: only the transport can tell us it changed.
                return Err(DropReason::StaleSender);
            }
            p.inc = Some(sender.inc);
            p.has_state = s.has_state;
            p.start = Some(PeerStart {
                inc: sender.inc,
                proto_min: s.proto_min,
                proto_max: s.proto_max,
                has_state: s.has_state,
                anchored: s.anchored,
                old,
                lineage: (s.last_synced, s.last_leader, s.acted),
                quorate_synced: s.quorate_synced,
                failed_mask: s.failed_mask,
                fenced_mask: s.fenced_mask,
            });
        }
        if s.anchored {
            for p in s.fence_pending.iter() {
                if !upsert_pending(&mut self.d.union, *p) {
                    self.d.fence_table_full = true;
                }
            }
            for m in s.fenced.iter() {
                upsert_member(&mut self.d.fenced_union, *m);
            }
        }
        let _ = members;
        if self.barrier.anchored() && self.d.peers.iter().all(|p| p.start.is_some() || self.is_stale_node(p.node)) {
            self.daemon_all_started();
        }
        Ok(())
    }

    /// Every start of this generation is in: compute the agreed outcome.
    fn daemon_all_started(&mut self) {
        let gen = self.barrier.current();
        let me = self.cfg.node;
        let n = self.d.peers.len();
        // 1. Protocol negotiation.
        let starts: heapless::Vec<(NodeId, PeerStart), MAX_NODES> =
            self.d.peers.iter().filter_map(|p| p.start.map(|s| (p.node, s))).collect();
        let version = negotiate(&starts);
        let mut excluded = 0u32;
        for (i, (_, s)) in starts.iter().enumerate() {
            if version.is_none_or(|v| v < s.proto_min || v > s.proto_max) {
                excluded |= 1 << i;
            }
        }
        // 2. Merge verdict over the compatible members. Start masks index
        // the change's member list; stale members sent no start, so remap
        // to positions in `starts`.
        let remap = |mask: u32| -> u32 {
            let mut out = 0u32;
            let mut j = 0u32;
            for (k, p) in self.d.peers.iter().enumerate() {
                if p.start.is_some() {
                    if mask & (1 << k) != 0 {
                        out |= 1 << j;
                    }
                    j += 1;
                }
            }
            out
        };
        let mut inputs: heapless::Vec<merge::MergeInput, MAX_NODES> = heapless::Vec::new();
        for (i, (node, s)) in starts.iter().enumerate() {
            let compatible = excluded & (1 << i) == 0;
            inputs.push_bounded(merge::MergeInput {
                node: *node,
                has_state: s.has_state && compatible,
                lineage: s.lineage,
                quorate_synced: s.quorate_synced,
                fenced_mask: remap(s.fenced_mask),
            });
        }
        let verdict = merge::resolve(&inputs);
        if verdict.partitions >= 2 {
            self.d.last_merge_partitions = verdict.partitions;
        }
        let my_idx = starts.iter().position(|(n, _)| *n == me);
        if let (Some(v), Some(i)) = (version, my_idx) {
            if excluded & (1 << i) != 0 {
                self.out.effect(Effect::Incompatible {
                    ours_min: self.cfg.proto_min,
                    ours_max: self.cfg.proto_max,
                    cluster: v,
                });
                self.stop();
                return;
            }
        }
        let Some(version) = version else {
            // Nobody can agree (cannot happen with at least one member).
            return;
        };
        self.d.proto = version;
        // Stale members: losers and incompatible ones.
        let lowest_winner = (0..n).find(|i| verdict.winners & (1 << i) != 0);
        for (i, (node, s)) in starts.iter().enumerate() {
            let bit = 1u32 << i;
            if verdict.losers & bit == 0 && excluded & bit == 0 {
                continue;
            }
            let m = Member { node: *node, inc: s.inc };
            upsert_member(&mut self.d.stale, m);
            if verdict.losers & bit != 0 {
                self.out.notify(Notice::StaleMerge { node: *node, partitions: verdict.partitions });
                if *node == me {
                    self.out.effect(Effect::ResetSelf);
                    self.stop();
                    return;
                }
                if lowest_winner.and_then(|w| starts.get(w)).is_some_and(|(w, _)| *w == me) {
                    self.out.effect(Effect::Kill { node: *node });
                }
            }
        }
        // 3. Fencing: the union of everyone's pending set, minus members
        // that are here and fine, minus nodes that restarted.
        let mut union = self.d.union.clone();
        let mut full = false;
        for f in self.d.fence.iter() {
            full |= !upsert_pending(&mut union, PendingFence { target: f.target, attempts: f.attempts });
        }
        for (i, (node, s)) in starts.iter().enumerate() {
            if verdict.losers & (1 << i) != 0 && s.has_state {
                full |= !upsert_pending(
                    &mut union,
                    PendingFence { target: Member { node: *node, inc: s.inc }, attempts: 0 },
                );
            }
        }
        self.d.fence_table_full |= full;
        let mut keep: heapless::Vec<PendingFence, MAX_NODES> = heapless::Vec::new();
        for p in union.iter() {
            let m = p.target;
            let present = starts.iter().find(|(n, _)| *n == m.node);
            let cancelled = match present {
                Some((_, s)) if s.inc != m.inc => true,
                Some((_, s)) => !self.d.stale.contains(&Member { node: m.node, inc: s.inc }),
                None => false,
            };
            // Somebody saw it fenced: a member that missed the result must
            // not bring it back.
            let done =
                self.d.fenced_union.iter().chain(self.d.fenced.iter()).any(|f| f.node == m.node && f.inc >= m.inc);
            if !cancelled && !done {
                keep.push_bounded(*p);
            }
        }
        // Startup fencing: a group in which nobody completed a cycle before
        // knows nothing of the cluster's past; a configured node that is not
        // here may still have filesystems mounted. It is fenced (after a
        // grace period for it to join) before anything is replayed.
        let cold = starts.iter().all(|(_, s)| !s.old && !s.has_state);
        if cold {
            for n in self.d.configured.clone().iter() {
                if !starts.iter().any(|(m, _)| m == n) && !keep.iter().any(|k| k.target.node == *n) {
                    keep.push_bounded(PendingFence { target: Member { node: *n, inc: Incarnation(0) }, attempts: 0 });
                }
            }
        }
        self.fence_replace(&keep);
        // A fence of "whatever incarnation runs there" (startup and gap
        // fences) waits a grace period for the node to join, counted from
        // the latest change on every member (the actor may not be the member
        // that added it, and a ring that just regained quorum often holds
        // nodes whose daemons are still starting).
        let mut grace = None;
        for i in 0..self.d.fence.len() {
            let r = self.d.fence[i];
            if r.target.inc == Incarnation(0) && !r.in_flight && r.outcome.is_none() {
                let t = *grace.get_or_insert_with(|| {
                    self.out.set_timer(self.now, crate::vocab::TIMER_FENCE, self.cfg.startup_fence_delay_ms)
                });
                self.d.fence[i].timer = Some(t);
            }
        }
        // A member accepted into this cycle (not a loser, compatible) is no
        // longer "failed" or "fenced": those records only describe absent
        // nodes and losers from now on.
        let accepted = |node: NodeId| {
            starts
                .iter()
                .enumerate()
                .any(|(i, (n, _))| *n == node && verdict.losers & (1 << i) == 0 && excluded & (1 << i) == 0)
        };
        let fenced: heapless::Vec<Member, MAX_NODES> =
            self.d.fenced.iter().filter(|m| !accepted(m.node)).copied().collect();
        self.d.fenced = fenced;
        let pre: NodeList = self.d.fenced_pre_gap.iter().filter(|n| !accepted(**n)).copied().collect();
        self.d.fenced_pre_gap = pre;
        // Who is old (fence actor eligibility) is agreed from the starts.
        for p in self.d.peers.iter_mut() {
            p.old = p.start.is_some_and(|s| s.old);
        }
        // 4. The leader sends the authoritative group snapshot.
        let eligible =
            |i: usize, s: &PeerStart| verdict.losers & (1 << i) == 0 && excluded & (1 << i) == 0 && s.anchored;
        let with_state = starts.iter().enumerate().find(|(i, (_, s))| eligible(*i, s) && s.has_state);
        let any = starts.iter().enumerate().find(|(i, (_, s))| eligible(*i, s));
        let Some((_, (leader, _))) = with_state.or(any) else { return };
        let leader = *leader;
        self.d.phase = DaemonPhase::WaitSync { leader };
        if leader == me {
            self.out.send(Out::DaemonSync { gen });
        }
    }

    /// The leader's snapshot: the cycle completes.
    pub(crate) fn on_daemon_sync(&mut self, h: &Header, s: &DaemonSync) -> Result<(), DropReason> {
        let gen = self.barrier.current();
        match self.d.phase {
            DaemonPhase::WaitSync { leader } if leader == h.sender.node && h.generation == gen => {}
            _ => return Err(DropReason::OldGeneration),
        }
        if self.d.peer(h.sender.node).and_then(|p| p.inc) != Some(h.sender.inc) {
            return Err(DropReason::StaleSender);
        }
        let me = self.cfg.node;
        // Drop stale members from the snapshot (the leader did too).
        let mut logical: heapless::Vec<Logical, MAX_GROUPS> = heapless::Vec::new();
        for g in s.groups.iter() {
            let mut l = Logical {
                gid: GroupId::of_fs(&g.fs),
                fs: g.fs.clone(),
                journals: g.journals,
                members: heapless::Vec::new(),
            };
            for (n, mode) in g.members.iter() {
                if self.d.peer(*n).is_some() {
                    l.members.push_bounded((*n, *mode));
                }
            }
            if !l.members.is_empty() && !logical.iter().any(|x: &Logical| x.gid == l.gid) {
                logical.push_bounded(l);
            }
        }
        self.d.logical = logical;
        for p in self.d.peers.iter_mut() {
            p.joined_at = None;
            p.older = false;
        }
        self.d.last_synced = gen;
        self.d.last_leader = h.sender.node;
        self.d.acted = 0;
        self.d.departed.clear();
        self.d.phase = DaemonPhase::Complete;
        self.update_quorate_synced();
        let members = self.d.peers.len() as u8;
        self.out.notify(Notice::DaemonSynced { generation: gen, members });
        // Local mount groups follow the snapshot.
        let mut i = 0;
        while i < self.groups.len() {
            let gid = self.groups[i].gid;
            let snapshot = self.d.logical(gid).cloned();
            match snapshot {
                Some(l) if l.contains(me) && l.fs == self.groups[i].fs => {
                    self.group_membership(i, gen, &l, None);
                    i += 1;
                }
                _ => {
                    // We are not a member any more (our mount was lost in a
                    // merge): give the filesystem back.
                    self.group_abort(i, MountError::LostInMerge);
                }
            }
        }
        // Requests of ours that were not applied go out again.
        self.resend_ops();
        self.kick();
        Ok(())
    }

    pub(crate) fn resend_ops(&mut self) {
        if self.d.phase != DaemonPhase::Complete {
            return;
        }
        let gen = self.barrier.current();
        for i in 0..self.d.ops.len() {
            if self.d.ops[i].sent_at != Some(gen) {
                self.d.ops[i].sent_at = Some(gen);
                let gid = self.d.ops[i].gid;
                self.out.send(Out::Op { gid, gen });
            }
        }
    }

    /// Queue a membership request (mount/unmount/remount/withdraw).
    pub(crate) fn queue_op(&mut self, gid: GroupId, fs: FsName, kind: OpKind) -> bool {
        if self.d.ops.iter().any(|o| o.gid == gid) {
            // A withdraw is never replaced: the kernel gave the filesystem
            // up, leaving is all that is left to do.
            if self.d.ops.iter().any(|o| o.gid == gid && o.kind == OpKind::Withdraw) {
                return kind == OpKind::Withdraw;
            }
            // Replace an older request for the same group.
            if let Some(o) = self.d.ops.iter_mut().find(|o| o.gid == gid) {
                o.kind = kind;
                o.sent_at = None;
            }
        } else if self.d.ops.push(PendingOp { gid, fs, kind, sent_at: None }).is_err() {
            return false;
        }
        self.resend_ops();
        true
    }

    /// Leave a group whose mount failed. Always fits: the op table holds
    /// one op per group, and mounts being requested count against the
    /// group table (`on_request`); a pending withdraw leaves anyway.
    pub(crate) fn queue_leave(&mut self, gid: GroupId, fs: FsName) {
        let queued = self.queue_op(gid, fs, OpKind::Unmount);
        invariant!(
            queued || self.d.ops.iter().any(|o| o.gid == gid && o.kind == OpKind::Withdraw),
            "a leave after a failed mount did not fit the op table"
        );
    }

    /// Re-evaluate everything that waits for a condition.
    pub(crate) fn kick(&mut self) {
        if self.stopped {
            return;
        }
        self.fence_kick();
        for i in 0..self.groups.len() {
            self.group_kick(i);
        }
    }
}

/// Highest version all members speak; else the highest all *old* members
/// speak (the running cluster keeps going, newcomers that cannot follow are
/// told so); else the highest most members speak.
pub fn negotiate(starts: &[(NodeId, PeerStart)]) -> Option<u16> {
    let common = |it: &mut dyn Iterator<Item = &PeerStart>| -> Option<u16> {
        let mut lo = 0u16;
        let mut hi = u16::MAX;
        let mut any = false;
        for s in it {
            any = true;
            lo = lo.max(s.proto_min);
            hi = hi.min(s.proto_max);
        }
        (any && lo <= hi).then_some(hi)
    };
    if let Some(v) = common(&mut starts.iter().map(|(_, s)| s)) {
        return Some(v);
    }
    if let Some(v) = common(&mut starts.iter().map(|(_, s)| s).filter(|s| s.old)) {
        return Some(v);
    }
    // Highest version spoken by the most members.
    let mut best: Option<(usize, u16)> = None;
    for (_, c) in starts.iter() {
        let v = c.proto_max;
        let count = starts.iter().filter(|(_, s)| s.proto_min <= v && v <= s.proto_max).count();
        if best.is_none_or(|(bc, bv)| count > bc || (count == bc && v > bv)) {
            best = Some((count, v));
        }
    }
    best.map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group's logical member list as node ids, in order (issue 17, fifth
    /// round: `Logical::nodes` -> empty survived; nothing in the workspace
    /// calls it).
    #[test]
    fn logical_nodes_lists_the_members_in_order() {
        let mut fs = FsName::new();
        fs.push_str("fs1").unwrap();
        let mut l = Logical { gid: GroupId::of_fs("fs1"), fs, journals: 4, members: heapless::Vec::new() };
        assert!(l.nodes().is_empty());
        for (n, mode) in [(1, Mode::Rw), (3, Mode::Spectator), (4, Mode::Ro)] {
            l.members.push((NodeId(n), mode)).unwrap();
        }
        assert_eq!(l.nodes().as_slice(), &[NodeId(1), NodeId(3), NodeId(4)]);
    }

    fn s(min: u16, max: u16, old: bool) -> PeerStart {
        PeerStart {
            inc: Incarnation(1),
            proto_min: min,
            proto_max: max,
            has_state: false,
            anchored: true,
            old,
            lineage: (Generation::ZERO, NodeId(0), 0),
            quorate_synced: None,
            failed_mask: 0,
            fenced_mask: 0,
        }
    }

    #[test]
    fn negotiation_adopts_the_highest_common_version() {
        let v = [(NodeId(1), s(1, 3, true)), (NodeId(2), s(2, 5, true)), (NodeId(3), s(1, 4, false))];
        assert_eq!(negotiate(&v), Some(3));
    }

    #[test]
    fn negotiation_keeps_the_running_cluster_when_a_newcomer_cannot_follow() {
        let v = [(NodeId(1), s(1, 2, true)), (NodeId(2), s(1, 2, true)), (NodeId(3), s(3, 4, false))];
        assert_eq!(negotiate(&v), Some(2));
    }

    #[test]
    fn negotiation_without_old_members_takes_the_version_most_speak() {
        let v = [(NodeId(1), s(1, 1, false)), (NodeId(2), s(2, 2, false)), (NodeId(3), s(2, 3, false))];
        assert_eq!(negotiate(&v), Some(2));
        assert_eq!(negotiate(&[]), None);
    }

    /// Of versions spoken by equally many members the highest wins, in
    /// whatever order the starts come (issue 17: `count > bc` ->
    /// `count >= bc` survived; it lets a later, lower version win the tie).
    #[test]
    fn negotiation_ties_go_to_the_higher_version_in_any_order() {
        let v = [(NodeId(1), s(3, 3, false)), (NodeId(2), s(1, 1, false))];
        assert_eq!(negotiate(&v), Some(3));
        let v = [(NodeId(1), s(1, 1, false)), (NodeId(2), s(3, 3, false))];
        assert_eq!(negotiate(&v), Some(3));
    }
}
