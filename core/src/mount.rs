//! Mount groups (gfs_controld's part): one per filesystem.
//!
//! Every change of a group's logical membership (applied in the daemon
//! group's agreed order, so it carries a generation all members share) is
//! worked on like this:
//!
//! 1. **Removals apply at once**: a member that failed (or withdrew) leaves
//!    its journal in the recovery set, a member that left cleanly frees its
//!    journal. Nothing an older change found is lost when a newer one comes.
//! 2. **Wait for conditions**: the daemon cycle is complete (failures are
//!    acknowledged), quorum at the current ring, fencing done for every
//!    journal owner that needs it; a mounted member blocks its kernel first.
//! 3. **START** stamped with the change's generation: old members describe
//!    the group (members, journals, recovery set, first-mount state), a new
//!    member describes itself. A start of another generation is never
//!    matched to this change.
//! 4. **sync** when a start from every member arrived: every member applies
//!    the same additions to the same state. New members, in ascending node
//!    id, take the lowest free journal (spectators none, no free journal →
//!    a mount error for that node only).
//!
//! After sync: the first mounter (lowest rw member, when no member has ever
//! finished the first mount) mounts with `first`, replays every journal and
//! announces it; the others then mount. Journals in the recovery set are
//! replayed by one mounted rw member (rotation by attempt count, so a
//! failure is retried by *another* member after a backoff); results are
//! broadcast; when the set is empty everyone unblocks.
//!
//! ro members hold a journal (so they can remount rw) and never recover
//! others' journals; their own journal is still replayed when they fail (it
//! may have been written before a remount to ro). Spectators hold no
//! journal and never recover.

use crate::daemon::{DaemonPhase, Logical, OpKind};
use crate::gcs::MAX_NODES;
use crate::ids::{Generation, GroupId, Incarnation, Jid, Member, NodeId};
use crate::node::Node;
use crate::vocab::{Effect, KernelError, KernelEvent, KernelOp, MountError, Notice, Out, TimerToken, TIMER_RECOVERY};
use crate::wire::{
    FsName, Header, MemberDesc, Mode, MountStart, MountState, Recovery, RecoveryResult, MAX_JOURNALS, MAX_RECOVERIES,
};
use cohort_types::bounded::PushBounded;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GMember {
    pub node: NodeId,
    pub inc: Incarnation,
    pub mode: Mode,
    pub jid: Option<Jid>,
    pub mounted: bool,
    /// Joined in a change not yet synced.
    pub new: bool,
    /// Its start for the current change arrived.
    pub started: bool,
    /// No journal was free for it.
    pub no_journal: bool,
}

impl GMember {
    /// A member of a change not synced yet: no journal, not mounted.
    pub fn joining(node: NodeId, inc: Incarnation, mode: Mode) -> GMember {
        GMember { node, inc, mode, jid: None, mounted: false, new: true, started: false, no_journal: false }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Removal {
    Left,
    Failed,
    Withdrawn,
}

/// What this node's kernel side is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum KState {
    Idle,
    MountingFirst,
    Mounting,
    Mounted,
}

#[derive(Clone, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MountGroup {
    pub gid: GroupId,
    pub fs: FsName,
    pub journals: u16,
    pub members: heapless::Vec<GMember, MAX_NODES>,
    pub change_gen: Generation,
    pub synced_gen: Option<Generation>,
    /// We sent our start for `change_gen`.
    pub start_sent: bool,
    /// We adopted an old member's state for `change_gen` (new members).
    pub adopted: bool,
    /// An old member's START arrived for `change_gen`.
    pub saw_old: bool,
    /// `digest()` of the current START phase (cleared whenever the
    /// described state may change).
    pub digest_cache: Option<u64>,
    pub first_done: bool,
    pub first_mounter: Option<NodeId>,
    pub recoveries: heapless::Vec<Recovery, MAX_RECOVERIES>,
    pub kstate: KState,
    pub blocked: bool,
    /// Facts of ours to broadcast until applied.
    pub local_first_done: bool,
    pub local_mount_ok: bool,
    pub recovering: Option<(Jid, u16)>,
    pub recovery_outcome: Option<(Jid, u16, bool)>,
    pub recovery_timer: Option<(TimerToken, Jid)>,
    pub error: Option<MountError>,
    /// Our kernel withdrew the filesystem: no kernel operation but the
    /// release any more. The `Withdraw` request goes out only once no
    /// replay of ours is running (the others must not hand our replay to
    /// another member while our kernel may still be in it).
    pub withdrawn: bool,
}

impl MountGroup {
    /// A group we just joined at `gen`: no members yet, nothing synced,
    /// the kernel idle.
    pub fn new(gid: GroupId, fs: FsName, journals: u16, gen: Generation) -> MountGroup {
        MountGroup {
            gid,
            fs,
            journals,
            members: heapless::Vec::new(),
            change_gen: gen,
            synced_gen: None,
            start_sent: false,
            adopted: false,
            saw_old: false,
            digest_cache: None,
            first_done: false,
            first_mounter: None,
            recoveries: heapless::Vec::new(),
            kstate: KState::Idle,
            blocked: false,
            local_first_done: false,
            local_mount_ok: false,
            recovering: None,
            recovery_outcome: None,
            recovery_timer: None,
            error: None,
            withdrawn: false,
        }
    }

    pub fn me(&self, me: NodeId) -> Option<&GMember> {
        self.members.iter().find(|m| m.node == me)
    }

    pub fn is_synced(&self) -> bool {
        self.synced_gen == Some(self.change_gen)
    }

    /// The agreed first mounter.
    pub fn first_mounter(&self) -> Option<NodeId> {
        self.first_mounter
    }

    /// At an agreed point: keep the first mounter while it is a member;
    /// else, while no first mount finished, the lowest rw member holding a
    /// journal takes over.
    fn choose_first_mounter(&mut self) {
        if self.first_done {
            self.first_mounter = None;
            return;
        }
        // Kept while it is a member, whatever it remounts to meanwhile: its
        // first mount may be running.
        let member = |n: NodeId| self.members.iter().any(|m| m.node == n);
        if self.first_mounter.is_some_and(member) {
            return;
        }
        self.first_mounter =
            self.members.iter().find(|m| m.mode == Mode::Rw && m.jid.is_some() && !m.new).map(|m| m.node);
    }

    /// At an agreed point: every journal to replay has a fixed replayer for
    /// its current attempt (rotating by attempt count), as long as someone
    /// can replay.
    ///
    /// A replayer is replaced only once it is known to have stopped: it
    /// reported, left cleanly (its kernel unmounted first), withdrew (it
    /// sends the withdraw only after its replay ended), or failed (its own
    /// journal then awaits replay, and no change syncs before it is fenced).
    fn assign_actors(&mut self) {
        let rec = self.recoverers();
        for r in self.recoveries.iter_mut() {
            // Once chosen, the replayer keeps its attempt while it is a
            // member (even if it remounts ro meanwhile: its replay may be
            // running); it is replaced only when it leaves or reports.
            if r.actor().is_some_and(|a| self.members.iter().any(|m| m.node == a)) {
                continue;
            }
            r.actor = rec.get(usize::from(r.attempts) % rec.len().max(1)).copied().unwrap_or(NodeId(0));
        }
    }

    /// Back to what a member that never completed a change knows: the
    /// logical members, all new, nothing adopted.
    fn forget_adopted(&mut self) {
        self.adopted = false;
        self.first_done = false;
        self.first_mounter = None;
        self.recoveries.clear();
        for m in self.members.iter_mut() {
            m.jid = None;
            m.mounted = false;
            m.new = true;
        }
        self.digest_cache = None;
    }

    /// While journals await replay and no mounted member can replay them:
    /// the rw member (lowest node id) that mounts, blocked, to do it.
    pub fn recovery_mounter(&self) -> Option<NodeId> {
        if !self.recoverers().is_empty() {
            return None;
        }
        self.members.iter().find(|m| m.mode == Mode::Rw && m.jid.is_some() && !m.no_journal).map(|m| m.node)
    }

    /// Members that may replay journals, sorted.
    pub fn recoverers(&self) -> heapless::Vec<NodeId, MAX_NODES> {
        self.members.iter().filter(|m| m.mounted && m.mode == Mode::Rw && m.jid.is_some()).map(|m| m.node).collect()
    }

    fn jid_taken(&self, j: Jid) -> bool {
        self.members.iter().any(|m| m.jid == Some(j)) || self.recoveries.iter().any(|r| r.jid == j)
    }

    /// Journals held plus journals awaiting replay: every holder can become
    /// a recovery, so this never exceeds `MAX_RECOVERIES` (CORE-BUG-28).
    fn tracked_journals(&self) -> usize {
        self.members.iter().filter(|m| m.jid.is_some()).count() + self.recoveries.len()
    }

    pub fn check_invariants(&self) {
        // Every holder can become a recovery: the table never overflows.
        invariant!(self.tracked_journals() <= MAX_RECOVERIES, "holders and recoveries overflow the table");
        // Journal exclusivity.
        for (i, a) in self.members.iter().enumerate() {
            if let Some(j) = a.jid {
                invariant!(usize::from(j.0) < usize::from(self.journals), "jid out of range");
                invariant!(a.mode.needs_journal(), "spectator holds a journal");
                for b in self.members.iter().skip(i + 1) {
                    invariant!(b.jid != Some(j), "two members hold one journal");
                }
                invariant!(!self.recoveries.iter().any(|r| r.jid == j), "a held journal awaits recovery");
            }
        }
        invariant!(self.members.windows(2).all(|w| w[0].node < w[1].node), "group members not sorted");
        invariant!(usize::from(self.journals) <= MAX_JOURNALS, "too many journals");
    }

    /// Our start for the current change: a self-description, and for old
    /// members the digest of the group state they hold.
    pub fn build_start(&self, me: NodeId, old: bool) -> MountStart {
        let mode = self.me(me).map_or(Mode::Rw, |m| m.mode);
        MountStart {
            mode,
            journals: self.journals,
            old,
            first_done: old && self.first_done,
            digest: if old { self.digest() } else { 0 },
        }
    }

    /// A START-phase message (START or MountState) must be of the current,
    /// unsynced change and from one of its members: its index.
    fn start_sender(&self, h: &Header) -> Result<usize, crate::vocab::DropReason> {
        let gen_ok = h.generation == self.change_gen || crate::planted::on(crate::planted::Bug::NoGenerationCheck);
        if !gen_ok || self.is_synced() {
            return Err(crate::vocab::DropReason::OldGeneration);
        }
        self.members.iter().position(|m| m.node == h.sender.node).ok_or(crate::vocab::DropReason::NotMember)
    }

    /// The lowest old member describes the group once per change.
    pub fn describer(&self) -> Option<NodeId> {
        self.members.iter().find(|m| !m.new).map(|m| m.node)
    }

    pub fn build_state(&self) -> MountState {
        let mut s = MountState {
            journals: self.journals,
            first_done: self.first_done,
            first_mounter: self.first_mounter,
            members: heapless::Vec::new(),
            recoveries: self.recoveries.clone(),
        };
        for m in self.members.iter().filter(|m| !m.new) {
            s.members.push_bounded(MemberDesc {
                member: Member { node: m.node, inc: m.inc },
                mode: m.mode,
                jid: m.jid,
                mounted: m.mounted,
            });
        }
        s
    }

    /// FNV-1a over the agreed state old members describe.
    pub fn digest(&self) -> u64 {
        // Word-wise multiply-xorshift: agreement check, not cryptography.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |v: u64| {
            h = (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            h ^= h >> 29;
        };
        eat(u64::from(self.first_done));
        eat(self.first_mounter.map_or(0, |n| u64::from(n.0)));
        for m in self.members.iter().filter(|m| !m.new) {
            eat(u64::from(m.node.0) | (m.mode as u64) << 32 | u64::from(m.mounted) << 40);
            eat(m.inc.0);
            eat(m.jid.map_or(u64::MAX, |j| u64::from(j.0)));
        }
        for r in self.recoveries.iter() {
            eat(u64::from(r.jid.0) | u64::from(r.attempts) << 16 | u64::from(r.owner.node.0) << 32);
            eat(r.owner.inc.0);
            eat(u64::from(r.actor.0));
        }
        h
    }

    /// The digest, computed once per START phase (the described state does
    /// not change while STARTs arrive).
    fn cached_digest(&mut self) -> u64 {
        match self.digest_cache {
            Some(d) => d,
            None => {
                let d = self.digest();
                self.digest_cache = Some(d);
                d
            }
        }
    }
}

/// What a group waits for (status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum GroupWait {
    Nothing,
    DaemonSync,
    Quorum,
    Fencing(NodeId),
    Starts(u32),
    FirstMounter(NodeId),
    NoFirstMounter,
    Recovery(Jid),
    NoRecoverer(Jid),
    Kernel,
}

impl Node {
    /// Which condition blocks sending our start? `None` = ready.
    pub(crate) fn group_start_blocker(&self, i: usize) -> Option<GroupWait> {
        let g = &self.groups[i];
        if self.d.phase != DaemonPhase::Complete {
            return Some(GroupWait::DaemonSync);
        }
        if !self.quorate_now() {
            return Some(GroupWait::Quorum);
        }
        for r in g.recoveries.iter() {
            if !self.fence_clear(r.owner) {
                return Some(GroupWait::Fencing(r.owner.node));
            }
        }
        None
    }

    pub(crate) fn group_wait(&self, i: usize) -> GroupWait {
        let Some(g) = self.groups.get(i) else { return GroupWait::Nothing };
        if !g.is_synced() {
            if !g.start_sent {
                return self.group_start_blocker(i).unwrap_or(GroupWait::Nothing);
            }
            let mut missing = 0u32;
            for (k, m) in g.members.iter().enumerate() {
                if !m.started {
                    missing |= 1 << k;
                }
            }
            return GroupWait::Starts(missing);
        }
        if !g.first_done {
            if let Some(f) = self.d.fence.first() {
                return GroupWait::Fencing(f.target.node);
            }
            if self.d.gap {
                return GroupWait::Quorum;
            }
            return match g.first_mounter() {
                Some(n) => GroupWait::FirstMounter(n),
                None => GroupWait::NoFirstMounter,
            };
        }
        if let Some(r) = g.recoveries.first() {
            if !self.quorate_now() {
                return GroupWait::Quorum;
            }
            if !self.fence_clear(r.owner) {
                return GroupWait::Fencing(r.owner.node);
            }
            return match r.actor() {
                Some(_) => GroupWait::Recovery(r.jid),
                None => GroupWait::NoRecoverer(r.jid),
            };
        }
        if matches!(g.kstate, KState::Mounting | KState::MountingFirst) {
            return GroupWait::Kernel;
        }
        GroupWait::Nothing
    }

    /// The daemon cycle restarted or completed: re-evaluate.
    pub(crate) fn group_daemon_changed(&mut self, i: usize) {
        self.group_kick(i);
    }

    /// Create our local group once our mount request was applied.
    pub(crate) fn group_create(&mut self, l: &Logical, gen: Generation) {
        let me = self.cfg.node;
        let mut g = MountGroup::new(l.gid, l.fs.clone(), l.journals, gen);
        for (n, mode) in l.members.iter() {
            let inc = if *n == me { self.cfg.incarnation } else { self.peer_inc(*n) };
            g.members.push_bounded(GMember::joining(*n, inc, *mode));
        }
        if self.groups.push(g).is_err() {
            return;
        }
        let i = self.groups.len() - 1;
        self.group_kick(i);
    }

    fn peer_inc(&self, n: NodeId) -> Incarnation {
        self.d.peer(n).and_then(|p| p.inc).unwrap_or(Incarnation(0))
    }

    /// Apply a new logical membership at generation `gen`. `cause` names the
    /// reason for one removal (unmount/withdraw); other removals are
    /// failures.
    pub(crate) fn group_membership(
        &mut self,
        i: usize,
        gen: Generation,
        l: &Logical,
        cause: Option<(NodeId, Removal)>,
    ) {
        let me = self.cfg.node;
        // A START phase never outlives a daemon cycle: an unsynced change
        // starts over at every agreed membership point (every member of the
        // group passes the same ones), so the STARTs that count were all
        // sent and delivered in the current view.
        let mut changed = !self.groups[i].is_synced();
        if self.groups[i].synced_gen.is_none() {
            // We never completed a change of this group: what we hold beyond
            // our own request was adopted from an old member's description
            // of a change that did not complete. It is not ours to carry
            // into the next change (the old members describe the group
            // again; with none left the group starts fresh, and its first
            // mounter replays every journal once every fencing is done).
            self.groups[i].forget_adopted();
        }
        let mut need_block = false;
        // Removals, applied at once.
        let mut k = 0;
        while k < self.groups[i].members.len() {
            let m = self.groups[i].members[k];
            if l.contains(m.node) {
                k += 1;
                continue;
            }
            changed = true;
            let why = match cause {
                Some((n, why)) if n == m.node => why,
                _ => Removal::Failed,
            };
            let g = &mut self.groups[i];
            g.members.remove(k);
            if let Some(j) = m.jid {
                // A failed member holding a journal may have written it,
                // whether or not its mount was agreed yet, and an ro member
                // may have been rw until a remount the kernel did not finish:
                // always replay (replaying a clean journal is cheap).
                let dirty = why != Removal::Left;
                if dirty {
                    // A withdrawn member released its locks itself: no fencing.
                    let owner = Member {
                        node: m.node,
                        inc: if why == Removal::Withdrawn { Incarnation(u64::MAX) } else { m.inc },
                    };
                    // Room holds: a journal is given out only while every
                    // holder and every journal awaiting replay fit (group_sync).
                    g.recoveries.push_bounded(Recovery { jid: j, owner, attempts: 0, actor: NodeId(0) });
                    need_block = true;
                }
            }
            if g.first_mounter == Some(m.node) {
                g.first_mounter = None;
            }
            for r in g.recoveries.iter_mut() {
                if r.actor == m.node {
                    r.actor = NodeId(0);
                }
            }
        }
        // Additions and mode changes.
        for (n, mode) in l.members.iter() {
            let inc = if *n == me { self.cfg.incarnation } else { self.peer_inc(*n) };
            let g = &mut self.groups[i];
            match g.members.iter_mut().find(|m| m.node == *n) {
                Some(m) => {
                    // Only ro <-> rw is a remount; a snapshot that would turn
                    // a journal holder into a spectator (or back) is ignored.
                    if m.mode != *mode && m.mode.needs_journal() == mode.needs_journal() {
                        m.mode = *mode;
                        changed = true;
                    }
                }
                None => {
                    changed = true;
                    let pos = g.members.iter().position(|m| m.node > *n).unwrap_or(g.members.len());
                    let _ = g.members.insert(pos, GMember::joining(*n, inc, *mode));
                }
            }
        }
        if !changed {
            self.group_kick(i);
            return;
        }
        let g = &mut self.groups[i];
        g.change_gen = gen;
        g.start_sent = false;
        g.adopted = false;
        g.saw_old = false;
        g.digest_cache = None;
        for m in g.members.iter_mut() {
            m.started = false;
        }
        // Every kernel that is in the filesystem (mounted, or with a mount
        // in flight) stops until the failed members' journals are replayed.
        if need_block && matches!(g.kstate, KState::Mounting | KState::Mounted) {
            self.group_block(i);
        }
        self.group_kick(i);
    }

    /// Stop our kernel (once) until every journal awaiting replay is done.
    /// The host unmounted this group's kernel and asked to leave
    /// (`Request::Unmount`, not yet applied): that kernel gets no operation
    /// but the group's end (CORE-BUG-27: a Block to a kernel without the
    /// filesystem fails on a real node, and cohortd stops).
    pub(crate) fn kernel_released(&self, gid: GroupId) -> bool {
        self.d.ops.iter().any(|o| o.gid == gid && o.kind == OpKind::Unmount)
    }

    fn group_block(&mut self, i: usize) {
        if self.kernel_released(self.groups[i].gid) {
            return;
        }
        let g = &mut self.groups[i];
        if g.blocked || cfg!(feature = "broken-skip-block") {
            return;
        }
        g.blocked = true;
        let (gid, fs) = (g.gid, g.fs.clone());
        self.out.effect(Effect::Kernel { group: gid, fs, op: KernelOp::Block });
    }

    /// Leave the group locally (unmount applied, withdraw applied, or lost).
    pub(crate) fn group_remove(&mut self, i: usize, op: KernelOp) {
        let g = self.groups.remove(i);
        self.out.effect(Effect::Kernel { group: g.gid, fs: g.fs, op });
    }

    pub(crate) fn group_abort(&mut self, i: usize, e: MountError) {
        let mounted = self.groups[i].kstate != KState::Idle;
        self.group_remove(i, if mounted { KernelOp::Release } else { KernelOp::MountError(e) });
    }

    /// Move the group forward as far as conditions allow.
    pub(crate) fn group_kick(&mut self, i: usize) {
        if i >= self.groups.len() || self.stopped {
            return;
        }
        let me = self.cfg.node;
        if !self.groups[i].is_synced() {
            if !self.groups[i].start_sent && self.group_start_blocker(i).is_none() {
                let g = &mut self.groups[i];
                g.start_sent = true;
                let gen = g.change_gen;
                let describe = g.synced_gen.is_some() && g.describer() == Some(me);
                if describe {
                    self.out.send(Out::MountState { gid: self.groups[i].gid, gen });
                }
                self.out.send(Out::MountStart { gid: self.groups[i].gid, gen });
            }
            return;
        }
        if self.d.phase != DaemonPhase::Complete {
            return;
        }
        let gen = self.groups[i].change_gen;
        // Re-broadcast facts not applied yet.
        let (local_first_done, first_done, local_mount_ok, mounted_agreed, outcome) = {
            let g = &self.groups[i];
            (
                g.local_first_done,
                g.first_done,
                g.local_mount_ok,
                g.me(me).is_some_and(|m| m.mounted),
                g.recovery_outcome,
            )
        };
        if local_mount_ok && !mounted_agreed {
            self.out.send(Out::MountDone { gid: self.groups[i].gid, gen, ok: true });
        }
        if local_first_done && !first_done {
            self.out.send(Out::FirstDone { gid: self.groups[i].gid, gen });
        }
        if let Some((jid, attempt, ok)) = outcome {
            self.out.send(Out::RecoveryResult {
                gid: self.groups[i].gid,
                gen,
                res: RecoveryResult { jid, attempt, ok },
            });
        }
        if self.groups[i].withdrawn {
            // A withdrawn kernel does nothing more until it is released.
            return;
        }
        // Kernel mounts.
        let (gid, fs) = (self.groups[i].gid, self.groups[i].fs.clone());
        let Some(mine) = self.groups[i].me(me).copied() else { return };
        if self.groups[i].kstate == KState::Idle {
            if mine.no_journal || self.groups[i].error.is_some() {
                // A mount that failed waits for its leave: never again.
                return;
            }
            if self.d.ops.iter().any(|o| o.gid == gid && matches!(o.kind, OpKind::Unmount | OpKind::Withdraw)) {
                // The host gave the mount up before its kernel mount started
                // (CORE-BUG-23): it never starts now, so the leave it asked
                // for stays a leave of a kernel that has nothing mounted.
                return;
            }
            let first = !self.groups[i].first_done;
            if first {
                // A first mount replays every journal: no node that may
                // still have this filesystem mounted (even one this group
                // forgot, e.g. its last member cut off) may be unfenced.
                if self.groups[i].first_mounter() == Some(me)
                    && self.d.fence.is_empty()
                    && !self.d.gap
                    && self.quorate_now()
                {
                    if let Some(j) = mine.jid {
                        self.groups[i].kstate = KState::MountingFirst;
                        self.out.effect(Effect::Kernel { group: gid, fs: fs.clone(), op: KernelOp::SetJid(j) });
                        self.out.effect(Effect::Kernel { group: gid, fs, op: KernelOp::MountFirst(j) });
                    }
                }
                return;
            }
            if !self.groups[i].recoveries.is_empty() && !cfg!(feature = "broken-skip-block") {
                // A journal of a failed member awaits replay: nobody starts
                // a mount now, except the member that must mount to replay
                // it because no mounted member can (it mounts blocked).
                if self.groups[i].recovery_mounter() != Some(me) {
                    return;
                }
                self.group_block(i);
            }
            self.groups[i].kstate = KState::Mounting;
            match mine.jid {
                Some(j) => {
                    self.out.effect(Effect::Kernel { group: gid, fs: fs.clone(), op: KernelOp::SetJid(j) });
                    self.out.effect(Effect::Kernel { group: gid, fs, op: KernelOp::Mount(j) });
                }
                None => self.out.effect(Effect::Kernel { group: gid, fs, op: KernelOp::MountSpectator }),
            }
            return;
        }
        self.recovery_kick(i);
    }

    fn recovery_kick(&mut self, i: usize) {
        let me = self.cfg.node;
        let g = &self.groups[i];
        if !g.first_done || g.kstate != KState::Mounted {
            return;
        }
        if g.recoveries.is_empty() {
            if g.blocked && !crate::planted::on(crate::planted::Bug::NoUnblock) {
                let (gid, fs) = (g.gid, g.fs.clone());
                self.groups[i].blocked = false;
                // A released kernel's block state ended with its umount.
                if !self.kernel_released(gid) {
                    self.out.effect(Effect::Kernel { group: gid, fs, op: KernelOp::Unblock });
                }
            }
            return;
        }
        if !self.quorate_now() || g.recovering.is_some() || g.recovery_outcome.is_some() || g.recovery_timer.is_some() {
            return;
        }
        if self.kernel_released(g.gid) {
            // Our leave is on its way: the replay goes to whoever stays.
            return;
        }
        let pick = g.recoveries.iter().find(|r| r.actor == me && self.fence_clear(r.owner));
        if let Some(r) = pick.copied() {
            let (gid, fs) = (g.gid, g.fs.clone());
            self.groups[i].recovering = Some((r.jid, r.attempts));
            self.out.effect(Effect::Kernel { group: gid, fs, op: KernelOp::RecoverJournal(r.jid) });
        }
    }

    pub(crate) fn on_recovery_timer(&mut self, t: TimerToken) {
        for i in 0..self.groups.len() {
            if self.groups[i].recovery_timer.is_some_and(|(x, _)| x == t) {
                self.groups[i].recovery_timer = None;
                self.group_kick(i);
            }
        }
    }

    /// A delivered mount start.
    pub(crate) fn on_mount_start(
        &mut self,
        i: usize,
        h: &Header,
        s: &MountStart,
    ) -> Result<(), crate::vocab::DropReason> {
        use crate::vocab::DropReason;
        let me = self.cfg.node;
        let k = self.groups[i].start_sender(h)?;
        let g = &mut self.groups[i];
        if g.members[k].inc != h.sender.inc && g.members[k].inc != Incarnation(0) {
            return Err(DropReason::StaleSender);
        }
        if s.old {
            // Agreement: every old member holds the same state (a new member
            // checks the state it adopted). A START that disagrees is not
            // counted: the change waits (visibly) instead of syncing on
            // different data.
            let i_am_new = g.me(me).is_none_or(|m| m.new);
            if (!i_am_new || g.adopted) && s.digest != g.cached_digest() {
                self.stats.digest_mismatches += 1;
                warn!("group state digest mismatch from node {}", h.sender.node.0);
                return Err(DropReason::Disagreement);
            }
            g.saw_old = true;
        }
        if g.members[k].inc != h.sender.inc {
            g.members[k].inc = h.sender.inc;
            g.digest_cache = None;
        }
        g.members[k].started = true;
        self.group_try_sync(i);
        Ok(())
    }

    /// The describing old member's state, adopted by new members.
    pub(crate) fn on_mount_state(
        &mut self,
        i: usize,
        h: &Header,
        s: &MountState,
    ) -> Result<(), crate::vocab::DropReason> {
        use crate::vocab::DropReason;
        let me = self.cfg.node;
        self.groups[i].start_sender(h)?;
        let g = &mut self.groups[i];
        if g.adopted || g.me(me).is_some_and(|m| !m.new) || h.sender.node == me {
            // Old members hold the state already; we cannot describe a group
            // we are new to.
            return Ok(());
        }
        // The described old members must be members of this change.
        if s.members.iter().any(|d| !g.members.iter().any(|m| m.node == d.member.node)) {
            return Err(DropReason::NotMember);
        }
        g.adopted = true;
        g.digest_cache = None;
        g.first_done = s.first_done;
        g.first_mounter = s.first_mounter;
        g.recoveries = s.recoveries.clone();
        g.journals = s.journals;
        for d in s.members.iter() {
            if let Some(m) = g.members.iter_mut().find(|m| m.node == d.member.node) {
                m.jid = d.jid;
                m.mounted = d.mounted;
                m.mode = d.mode;
                m.inc = d.member.inc;
                m.new = false;
            }
        }
        self.group_try_sync(i);
        Ok(())
    }

    fn group_try_sync(&mut self, i: usize) {
        let me = self.cfg.node;
        let g = &self.groups[i];
        let need_state = g.saw_old && !g.adopted && g.me(me).is_none_or(|m| m.new);
        if !need_state && g.members.iter().all(|m| m.started) {
            self.group_sync(i);
        }
    }

    /// Every start of this change arrived: the deterministic sync.
    fn group_sync(&mut self, i: usize) {
        let me = self.cfg.node;
        let g = &mut self.groups[i];
        // New members in ascending node id take the lowest free journal. A
        // journal is given out only while every holder and every journal
        // awaiting replay fit the recovery table: a holder that fails must
        // become a recovery, never be dropped (its journal would then look
        // free and be reused before replay).
        let mut tracked = g.tracked_journals();
        for k in 0..g.members.len() {
            let m = g.members[k];
            if !m.new {
                continue;
            }
            if m.mode.needs_journal() && m.jid.is_none() {
                let free = if tracked >= MAX_RECOVERIES {
                    None
                } else if crate::planted::on(crate::planted::Bug::JidOffByOne) {
                    (0..g.journals).map(Jid).find(|j| !g.jid_taken(Jid(j.0 + 1)))
                } else {
                    (0..g.journals).map(Jid).find(|j| !g.jid_taken(*j))
                };
                match free {
                    Some(j) => {
                        g.members[k].jid = Some(j);
                        tracked += 1;
                    }
                    None => g.members[k].no_journal = true,
                }
            }
            g.members[k].new = false;
        }
        g.choose_first_mounter();
        g.assign_actors();
        g.synced_gen = Some(g.change_gen);
        let gen = g.change_gen;
        let (gid, fs, n) = (g.gid, g.fs.clone(), g.members.len() as u8);
        let mine = g.me(me).copied();
        self.d.has_state = true;
        self.out.notify(Notice::GroupSynced { group: gid, generation: gen, members: n });
        if mine.is_some_and(|m| m.no_journal) && self.groups[i].error.is_none() {
            // `tracked` only grows above: full now means full when we were
            // refused (a later member cannot fill it after a refusal).
            let why = if tracked >= MAX_RECOVERIES { MountError::ReplaysPending } else { MountError::NoFreeJournal };
            self.groups[i].error = Some(why);
            self.out.effect(Effect::Kernel { group: gid, fs: fs.clone(), op: KernelOp::MountError(why) });
            self.queue_leave(gid, fs);
        }
        self.group_kick(i);
    }

    /// A delivered mount-group fact (mount done, first done, recovery).
    pub(crate) fn on_group_fact(
        &mut self,
        i: usize,
        h: &Header,
        body: &crate::wire::Body,
    ) -> Result<(), crate::vocab::DropReason> {
        use crate::vocab::DropReason;
        use crate::wire::Body;
        let me = self.cfg.node;
        let g = &mut self.groups[i];
        if h.generation != g.change_gen || !g.is_synced() {
            return Err(DropReason::OldGeneration);
        }
        let Some(k) = g.members.iter().position(|m| m.node == h.sender.node && m.inc == h.sender.inc) else {
            return Err(DropReason::NotMember);
        };
        let from_me = h.sender.node == me;
        match body {
            Body::MountDone { ok } => {
                if *ok {
                    g.members[k].mounted = true;
                }
                if from_me {
                    g.local_mount_ok = false;
                }
            }
            Body::FirstDone => {
                if g.first_mounter() != Some(h.sender.node) {
                    return Err(DropReason::Inapplicable);
                }
                g.first_done = true;
                g.first_mounter = None;
                g.members[k].mounted = true;
                // The first mount replayed every journal.
                g.recoveries.clear();
                if from_me {
                    g.local_first_done = false;
                    g.local_mount_ok = false;
                }
            }
            Body::RecoveryResult(r) => {
                if from_me {
                    g.recovery_outcome = None;
                }
                let Some(pos) = g.recoveries.iter().position(|x| x.jid == r.jid && x.attempts == r.attempt) else {
                    return Err(DropReason::OldGeneration);
                };
                let gid = g.gid;
                if r.ok {
                    g.recoveries.remove(pos);
                    self.out.notify(Notice::JournalRecovered { group: gid, jid: r.jid });
                } else {
                    g.recoveries[pos].attempts = r.attempt.saturating_add(1);
                    g.recoveries[pos].actor = NodeId(0);
                    g.assign_actors();
                    let next_actor = g.recoveries[pos].actor();
                    self.out.notify(Notice::JournalRecoveryFailed { group: gid, jid: r.jid, attempt: r.attempt });
                    if next_actor == Some(me) {
                        let t = self.out.set_timer(self.now, TIMER_RECOVERY, self.cfg.recovery_retry_ms);
                        self.groups[i].recovery_timer = Some((t, r.jid));
                    }
                }
            }
            _ => return Err(DropReason::Inapplicable),
        }
        self.groups[i].assign_actors();
        self.group_kick(i);
        Ok(())
    }

    /// Our withdrawn kernel does no replay any more: ask to leave.
    pub(crate) fn group_send_withdraw(&mut self, i: usize) -> Result<(), KernelError> {
        let (gid, fs) = (self.groups[i].gid, self.groups[i].fs.clone());
        if !self.queue_op(gid, fs, OpKind::Withdraw) {
            return Err(KernelError::Unexpected);
        }
        Ok(())
    }

    pub(crate) fn on_kernel(&mut self, ev: KernelEvent) -> Result<(), KernelError> {
        let fs = match &ev {
            KernelEvent::MountResult { fs, .. }
            | KernelEvent::FirstRecoveryDone { fs }
            | KernelEvent::RecoveryDone { fs, .. }
            | KernelEvent::Withdraw { fs } => fs.clone(),
        };
        let gid = GroupId::of_fs(&fs);
        let Some(i) = self.group_slot(gid) else { return Err(KernelError::UnknownFs) };
        let g = &mut self.groups[i];
        match ev {
            KernelEvent::MountResult { ok, .. } => {
                if !matches!(g.kstate, KState::Mounting | KState::MountingFirst) {
                    return Err(KernelError::Unexpected);
                }
                if ok {
                    if g.kstate == KState::Mounting {
                        g.local_mount_ok = true;
                    }
                    g.kstate = KState::Mounted;
                } else {
                    g.kstate = KState::Idle;
                    g.error = Some(MountError::KernelFailed);
                    let fs = g.fs.clone();
                    self.out.effect(Effect::Kernel {
                        group: gid,
                        fs: fs.clone(),
                        op: KernelOp::MountError(MountError::KernelFailed),
                    });
                    self.queue_leave(gid, fs);
                    return Ok(());
                }
            }
            KernelEvent::FirstRecoveryDone { .. } => {
                if g.kstate != KState::Mounted || g.first_done {
                    return Err(KernelError::Unexpected);
                }
                g.local_first_done = true;
            }
            KernelEvent::RecoveryDone { jid, ok, .. } => {
                let Some((j, attempt)) = g.recovering else { return Err(KernelError::Unexpected) };
                if j != jid {
                    return Err(KernelError::Unexpected);
                }
                g.recovering = None;
                g.recovery_outcome = Some((jid, attempt, ok));
                if g.withdrawn {
                    // Our replay stopped: now the others may take it over.
                    self.group_send_withdraw(i)?;
                }
            }
            KernelEvent::Withdraw { .. } => {
                if g.withdrawn {
                    return Err(KernelError::Unexpected);
                }
                g.withdrawn = true;
                if g.recovering.is_some() {
                    // Our kernel may still be in a replay: the withdraw
                    // goes out when it reports (`RecoveryDone`).
                    return Ok(());
                }
                return self.group_send_withdraw(i);
            }
        }
        self.group_kick(i);
        Ok(())
    }
}
