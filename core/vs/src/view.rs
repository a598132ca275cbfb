//! View agreement: who is in the group, and the flush that makes view
//! changes virtually synchronous.
//!
//! # Coordinator
//!
//! Every node computes its *alive set* (itself plus the peers the
//! [`super::detector`] considers alive). The lowest node id of that set is
//! the node's *candidate* coordinator. A node that is its own candidate
//! proposes a new view when its alive set differs from its current view, when
//! it is frozen on a proposal that went nowhere, or when a member of its view
//! reports (in heartbeats) a different, newer view. Additions wait for the
//! alive set to settle for one heartbeat interval (at most four), so a boot
//! storm or a multi-partition merge gives one view, not a cascade; removals
//! go ahead at once.
//!
//! # Three rounds
//!
//! 1. `PROPOSE(counter, members)`: a member accepts it when the proposer is
//!    its own candidate and is the lowest proposed member. Accepting
//!    *freezes* the member: it stops sending, sequencing and delivering
//!    beyond its freeze point `cf` (everything it holds contiguously), and
//!    answers `FLUSH_OK(old view, cf, max view seq, fresh?, leavers)`.
//! 2. `SYNC`: once every proposed member answered, the coordinator groups
//!    them by old view and fixes, per group, `target = max cf` and a
//!    `holder` that has it all, the new view id, which joiners are fresh and
//!    which leavers left cleanly. Members NAK the holder for what they miss
//!    up to `target` (the holder still has it: messages are kept until
//!    stable, and stability never passes a member's contiguous point), then
//!    answer `SYNC_DONE`.
//! 3. `INSTALL`: once every member is done. Each member delivers exactly
//!    `1..=target` of its old view, then installs the new view.
//!
//! Members that move together from V to V' therefore deliver the same set
//! of V's messages. A member never delivers past its reported freeze point
//! before the agreed target is known, so no delivered message can be missing
//! from the target. Missing answers within `fail_timeout` make the
//! coordinator suspect the silent members and start over without them; a
//! member stuck behind its candidate for `3 * fail_timeout` (the candidate
//! neither has it in its view nor completes the proposal that froze it:
//! an asymmetric link, a wedged node) suspects it and moves on to the next
//! candidate. Suspicions last `4 * fail_timeout`. An `INSTALL` lost on the way is
//! resent when the straggler's heartbeat shows it still frozen on it.
//!
//! # View ids and reasons
//!
//! A view id is its *seq*, a `u64`: one more than the highest view seq any
//! proposed member is in (members report their view in `FLUSH_OK`), so
//! strictly greater than the view of every member of the new view. Two
//! partitions can install the same seq (as corosync gives both sides of a
//! split the same ring seq); internally a view is identified by its
//! [`ViewKey`]: seq, leader (the coordinator that installed it, its lowest
//! member) and the leader's incarnation, which stays unique across
//! partitions and whole-cluster restarts (seqs start at 1 again).
//!
//! # Bounded jumps (issue 15)
//!
//! A seq only ever comes from a view some member installed: there is no
//! "highest seq seen" learned from heartbeats, and the coordinator takes
//! one more than the highest old view of the proposal's members. A datagram
//! that names a view seq more than [`MAX_VIEW_JUMP`] past our own view's
//! (in any frame: heartbeat, data, flush, sync, install, ...) is dropped
//! whole before it has any effect (not even liveness) and counted in
//! `VsStats::out_of_range`. So one heartbeat or one flush answer cannot
//! carry the group near the end of the seq space: each installed view moves
//! the seq by at most `MAX_VIEW_JUMP + 1`, and getting from 1 to
//! `u64::MAX` takes about 2^32 view changes, which no honest cluster makes
//! (136 years at one per second) and a key holder has to force one by one,
//! each a visible view change. Honest values are always within the bound: a partition would have
//! to install 2^32 views apart from us (a fresh process starts at seq 1, so
//! the same holds for a cluster's total number of views since its oldest
//! member started). Even at the end of the space nothing wraps: the
//! coordinator refuses to propose past `u64::MAX` and says so.
//!
//! Reasons are decided once, by the coordinator, so every member agrees on
//! them: a joiner is `Join` if it is a *fresh* process (it never installed a
//! view with others since it started), else `NodeUp` (it comes from another
//! partition); a member lost from an old view is `Leave` if any member saw its
//! clean leave announcement, `ProcDown` if the same node is in the new view
//! with a new incarnation, else `NodeDown`.

use super::events::Record;
use super::wire::{FlushOk, Heartbeat, MemberList, SyncGroup, SyncMsg, ViewKey};
use super::{Life, Vs};
use crate::gcs::{NodeList, MAX_NODES};
use crate::ids::{Incarnation, Instant, Member, NodeId};
use cohort_types::bounded::PushBounded;

/// How far past our own view's seq a received view seq may be (see the
/// module docs, "Bounded jumps"); a datagram naming a larger one is dropped
/// and counted (`VsStats::out_of_range`).
pub const MAX_VIEW_JUMP: u64 = 1 << 32;

/// An installed view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct View {
    pub key: ViewKey,
    /// Sorted by node id; always contains ourselves.
    pub members: MemberList,
}

impl View {
    /// The boot view of a new process: itself alone, seq 1.
    pub fn singleton(me: Member) -> View {
        let mut members = MemberList::new();
        members.push_bounded(me);
        View { key: ViewKey { id: 1, leader: me.node, leader_inc: me.inc }, members }
    }

    /// The view's seq (its id).
    pub fn seq(&self) -> u64 {
        self.key.id
    }

    /// Leader and sequencer: the coordinator that installed the view, which
    /// is its lowest member.
    pub fn leader(&self) -> NodeId {
        self.key.leader
    }

    /// The highest view seq a received datagram may name.
    pub fn seq_limit(&self) -> u64 {
        self.seq().saturating_add(MAX_VIEW_JUMP)
    }

    /// Index of `node` in the member list.
    pub fn index_of(&self, node: NodeId) -> Option<usize> {
        self.members.binary_search_by(|m| m.node.cmp(&node)).ok()
    }

    /// Index of this exact member (node and incarnation).
    pub fn position(&self, m: Member) -> Option<usize> {
        self.index_of(m.node).filter(|&i| self.members.get(i) == Some(&m))
    }

    pub fn nodes(&self) -> NodeList {
        self.members.iter().map(|m| m.node).collect()
    }
}

/// A proposal: coordinator (node + incarnation) and its attempt counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ProposalId {
    pub coord: NodeId,
    pub inc: Incarnation,
    pub counter: u32,
}

/// What a member learned from `SYNC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SyncState {
    pub new_view: u64,
    pub target: u64,
    pub holder: NodeId,
    /// Over the proposal's members.
    pub fresh_mask: u32,
    /// Over our old view's members.
    pub leaver_mask: u32,
    /// Over the proposal's members: who comes from our old view (our
    /// transitional set, ourselves included).
    pub trans_mask: u32,
    pub done_sent: bool,
}

/// Member side: the proposal we are frozen on.
#[derive(Clone, Debug)]
pub(super) struct Flush {
    pub pid: ProposalId,
    pub members: MemberList,
    /// Freeze point: we deliver nothing of the old view past it until SYNC.
    pub cf: u64,
    pub sync: Option<SyncState>,
    /// INSTALL received; installing as soon as the application drained the
    /// old view's messages.
    pub install: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Idle,
    Proposing,
    Syncing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct OkInfo {
    old: ViewKey,
    cf: u64,
    fresh: bool,
}

/// Coordinator side.
#[cfg_attr(feature = "explore", derive(Clone))]
pub(super) struct Coord {
    pub phase: Phase,
    pub counter: u32,
    pub members: MemberList,
    started: Instant,
    resend_at: Instant,
    oks: [Option<OkInfo>; MAX_NODES],
    leavers: MemberList,
    pub sync: Option<SyncMsg>,
    done_mask: u32,
    /// Last view we installed as coordinator: (counter, view id).
    pub last_install: Option<(u32, u64)>,
}

impl Coord {
    pub const fn new() -> Self {
        Coord {
            phase: Phase::Idle,
            counter: 0,
            members: MemberList::new(),
            started: Instant(0),
            resend_at: Instant(0),
            oks: [None; MAX_NODES],
            leavers: MemberList::new(),
            sync: None,
            done_mask: 0,
            last_install: None,
        }
    }

    /// The phase deadline and resend time, for `next_timeout`.
    pub fn deadlines(&self, phase_ms: u64) -> Option<(Instant, Instant)> {
        (self.phase != Phase::Idle).then(|| (self.started.plus_ms(phase_ms), self.resend_at))
    }

    fn position(&self, m: Member) -> Option<usize> {
        self.members.iter().position(|x| *x == m)
    }
}

fn all_mask(n: usize) -> u32 {
    if n >= 32 {
        u32::MAX
    } else {
        (1u32 << n) - 1
    }
}

fn set_bit(mask: &mut u32, i: usize) {
    if i < 32 {
        *mask |= 1u32 << i;
    }
}

/// FNV-1a over a member list: cheap change detection for the settle timer.
fn signature(l: &MemberList) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for m in l {
        for b in m.node.0.to_le_bytes().iter().chain(m.inc.0.to_le_bytes().iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

impl Vs {
    fn running(&self) -> bool {
        !matches!(self.life, Life::Left)
    }

    /// Is an INSTALL committed locally but not yet applied?
    pub(super) fn installing(&self) -> bool {
        self.flush.as_ref().is_some_and(|f| f.install)
    }

    /// Does our view need to change, given the alive set?
    fn need_change(&self, desired: &MemberList) -> bool {
        if *desired != self.view.members || self.flush.is_some() {
            return true;
        }
        self.view.members.iter().filter(|m| m.node != self.me.node).any(|m| {
            let Some((_, _, hb)) = self.detector.peer(m.node).and_then(|p| p.hb) else { return false };
            if hb.view == self.view.key {
                return false;
            }
            if hb.view.id >= self.view.key.id {
                // It moved on without us, or an impossible view key.
                return true;
            }
            // Older view: a straggler frozen on the proposal that installed
            // ours is fine (INSTALL is resent), a stale heartbeat too; one
            // frozen on some other proposal needs rescuing.
            let straggler = self.installed_pid.is_some_and(|(c, n)| hb.acc_coord == c.0 && hb.acc_counter == n);
            !straggler && hb.acc_coord != 0
        })
    }

    /// Periodic membership work: coordinator supervision, proposing,
    /// stall detection.
    pub(super) fn membership_tick(&mut self, now: Instant) {
        if !self.running() {
            return;
        }
        let desired = self.detector.alive_members(now, self.me);
        let cand = desired.first().map_or(self.me.node, |m| m.node);
        let sig = signature(&desired);
        if sig != self.desired_sig {
            self.desired_sig = sig;
            self.desired_changed_at = now;
        }

        if self.coord.phase != Phase::Idle {
            let lost = self.coord.members.iter().any(|m| m.node != self.me.node && !desired.contains(m));
            let timed_out = now >= self.coord.started.plus_ms(self.phase_ms());
            if cand != self.me.node || lost || timed_out {
                if timed_out && !lost && cand == self.me.node {
                    self.suspect_silent(now);
                }
                debug!("vs {}: abort proposal {}", self.me.node.0, self.coord.counter);
                self.coord.phase = Phase::Idle;
                self.tx.propose = false;
                self.tx.sync = false;
            } else if now >= self.coord.resend_at {
                self.coord.resend_at = now.plus_ms(self.hb_ms);
                match self.coord.phase {
                    Phase::Proposing => self.tx.propose = true,
                    Phase::Syncing => self.tx.sync = true,
                    Phase::Idle => {}
                }
            }
        }

        let need = self.need_change(&desired);
        let may_propose = need && self.coord.phase == Phase::Idle && cand == self.me.node && !self.installing();
        if !may_propose {
            // The settle timer only runs while we are about to propose.
            self.change_since = None;
        }
        if may_propose {
            let adds = desired.iter().any(|m| self.view.position(*m).is_none());
            let since = *self.change_since.get_or_insert(now);
            let settled = !adds
                || now >= self.desired_changed_at.plus_ms(self.hb_ms)
                || now >= since.plus_ms(self.hb_ms.saturating_mul(4));
            if settled {
                self.start_proposal(now, desired);
            }
        }

        // A member whose candidate neither includes it in its view nor
        // completes the proposal it froze us on is stuck behind it (an
        // asymmetric link, a wedged node): after a while, suspect the
        // candidate. A candidate that shares our view is not blamed for
        // changes it cannot see.
        let cand_shares_view =
            self.detector.peer(cand).and_then(|p| p.hb).is_some_and(|(_, _, hb)| hb.view == self.view.key);
        let stuck = self.flush.is_some() || (need && !cand_shares_view);
        if !stuck || cand == self.me.node {
            self.stall_since = None;
        } else {
            let since = *self.stall_since.get_or_insert(now);
            if now >= since.plus_ms(self.stall_ms()) {
                debug!("vs {}: candidate {} makes no progress, suspecting it", self.me.node.0, cand.0);
                self.detector.suspect(cand, now.plus_ms(self.suspect_ms()));
                self.stall_since = Some(now);
            }
        }
    }

    /// Phase timeout: suspect the members that did not answer.
    fn suspect_silent(&mut self, now: Instant) {
        let until = now.plus_ms(self.suspect_ms());
        for (i, m) in self.coord.members.iter().enumerate() {
            if m.node == self.me.node {
                continue;
            }
            let answered = match self.coord.phase {
                Phase::Proposing => self.coord.oks.get(i).is_some_and(|o| o.is_some()),
                _ => i < 32 && self.coord.done_mask & (1u32 << i) != 0,
            };
            if !answered {
                debug!("vs {}: suspecting silent {}", self.me.node.0, m.node.0);
                self.detector.suspect(m.node, until);
            }
        }
    }

    fn start_proposal(&mut self, now: Instant, members: MemberList) {
        let Some(counter) = self.coord.counter.checked_add(1) else {
            self.change_since = None;
            return;
        };
        debug!("vs {}: propose {} with {} members", self.me.node.0, counter, members.len());
        self.coord.counter = counter;
        self.coord.phase = Phase::Proposing;
        self.coord.members = members.clone();
        self.coord.started = now;
        self.coord.resend_at = now.plus_ms(self.hb_ms);
        self.coord.oks = [None; MAX_NODES];
        self.coord.sync = None;
        self.coord.done_mask = 0;
        self.coord.leavers.clear();
        for p in self.detector.peers() {
            if let (true, Some(inc)) = (p.left, p.inc) {
                self.coord.leavers.push_bounded(Member { node: p.node, inc });
            }
        }
        self.tx.propose = true;
        self.change_since = None;
        let pid = ProposalId { coord: self.me.node, inc: self.me.inc, counter };
        self.accept_proposal(pid, members);
        if let Some(ok) = self.flush_ok() {
            self.coord_on_flush_ok(now, self.me, &ok);
        }
    }

    /// Freeze on a proposal.
    fn accept_proposal(&mut self, pid: ProposalId, members: MemberList) {
        let cf = match &self.flush {
            // Already frozen: we may have delivered up to an aborted
            // round's target, so report at least that much.
            Some(f) => f.cf.max(self.order.contig.min(self.order.limit)),
            None => self.order.contig,
        };
        // The freeze. (Test-only `broken-vs-flush` skips it: the member keeps
        // delivering past the point it reports, which the target may not
        // cover.)
        #[cfg(not(feature = "broken-vs-flush"))]
        {
            self.order.limit = cf;
        }
        self.flush = Some(Flush { pid, members, cf, sync: None, install: false });
        self.stall_since = None;
    }

    /// Our `FLUSH_OK` for the proposal we are frozen on.
    pub(super) fn flush_ok(&self) -> Option<FlushOk> {
        let f = self.flush.as_ref()?;
        let mut leavers = MemberList::new();
        for m in &self.view.members {
            if self.detector.has_left(*m) {
                leavers.push_bounded(*m);
            }
        }
        Some(FlushOk { counter: f.pid.counter, old: self.view.key, cf: f.cf, fresh: self.fresh, leavers })
    }

    pub(super) fn on_propose(&mut self, now: Instant, from: Member, counter: u32, members: MemberList) {
        if !self.running() || self.installing() {
            return;
        }
        // The coordinator is the lowest proposed member, and we are in it.
        if members.first() != Some(&from) || !members.contains(&self.me) {
            return;
        }
        let desired = self.detector.alive_members(now, self.me);
        if desired.first().map(|m| m.node) != Some(from.node) {
            return;
        }
        // A late copy of the proposal that installed our view (a resend
        // overtaken by INSTALL) or an older one of the same coordinator
        // process: already done, freezing on it again would wedge us (our
        // heartbeat shows the current view, so nobody rescues us).
        if self.view.leader() == from.node
            && self.view.key.leader_inc == from.inc
            && self.installed_pid.is_some_and(|(c, n)| c == from.node && counter <= n)
        {
            return;
        }
        let pid = ProposalId { coord: from.node, inc: from.inc, counter };
        if let Some(f) = &self.flush {
            if f.pid == pid {
                self.tx.flush_ok = true;
                return;
            }
            if f.pid.coord == pid.coord && f.pid.inc == pid.inc && pid.counter < f.pid.counter {
                return;
            }
        }
        self.accept_proposal(pid, members);
        self.tx.flush_ok = true;
    }

    pub(super) fn coord_on_flush_ok(&mut self, now: Instant, from: Member, ok: &FlushOk) {
        if self.coord.phase != Phase::Proposing || ok.counter != self.coord.counter {
            return;
        }
        let Some(i) = self.coord.position(from) else { return };
        if let Some(slot) = self.coord.oks.get_mut(i) {
            *slot = Some(OkInfo { old: ok.old, cf: ok.cf, fresh: ok.fresh });
        }
        for l in &ok.leavers {
            if !self.coord.members.contains(l) && !self.coord.leavers.contains(l) {
                self.coord.leavers.push_bounded(*l);
            }
        }
        let n = self.coord.members.len();
        if self.coord.oks.iter().take(n).all(|o| o.is_some()) {
            self.coord_build_sync(now);
        }
    }

    fn coord_build_sync(&mut self, now: Instant) {
        // One more than every member's view (ours included: the coordinator
        // is a member). Every `old.id` passed the jump bound on receipt.
        let mut max_seq = self.view.seq();
        let mut groups: heapless::Vec<SyncGroup, MAX_NODES> = heapless::Vec::new();
        let mut group_of: heapless::Vec<u8, MAX_NODES> = heapless::Vec::new();
        let mut fresh_mask = 0u32;
        for (i, (_, ok)) in self.coord.members.iter().zip(self.coord.oks.iter()).enumerate() {
            let Some(ok) = ok else { return };
            max_seq = max_seq.max(ok.old.id);
            if ok.fresh {
                set_bit(&mut fresh_mask, i);
            }
            match groups.iter().position(|g| g.old == ok.old) {
                Some(k) => {
                    if let Some(g) = groups.get_mut(k) {
                        if ok.cf > g.target {
                            g.target = ok.cf;
                            g.holder = i as u8; // i < MAX_NODES
                        }
                    }
                    group_of.push_bounded(k as u8);
                }
                None => {
                    group_of.push_bounded(groups.len() as u8);
                    groups.push_bounded(SyncGroup { old: ok.old, target: ok.cf, holder: i as u8 });
                }
            }
        }
        let Some(seq) = max_seq.checked_add(1) else {
            // Unreachable in practice (module docs, "Bounded jumps").
            warn!("vs: view sequence space exhausted");
            self.coord.phase = Phase::Idle;
            return;
        };
        let sync = SyncMsg {
            counter: self.coord.counter,
            new_view: seq,
            groups,
            leavers: self.coord.leavers.clone(),
            fresh_mask,
            group_of,
        };
        self.coord.phase = Phase::Syncing;
        self.coord.started = now;
        self.coord.resend_at = now.plus_ms(self.hb_ms);
        self.coord.done_mask = 0;
        self.coord.sync = Some(sync.clone());
        self.tx.propose = false;
        self.tx.sync = true;
        self.on_sync(now, self.me, &sync);
    }

    pub(super) fn on_sync(&mut self, now: Instant, from: Member, msg: &SyncMsg) {
        if !self.running() {
            return;
        }
        let key = self.view.key;
        let Some(f) = &mut self.flush else { return };
        if f.pid != (ProposalId { coord: from.node, inc: from.inc, counter: msg.counter }) {
            return;
        }
        if let Some(s) = &f.sync {
            if s.new_view == msg.new_view && s.done_sent && from != self.me {
                self.tx.sync_done = true;
            }
            return;
        }
        if msg.new_view <= key.id {
            return;
        }
        let Some(gi) = msg.groups.iter().position(|g| g.old == key) else { return };
        let Some(g) = msg.groups.get(gi) else { return };
        let mut trans_mask = 0u32;
        for (i, k) in msg.group_of.iter().enumerate() {
            if usize::from(*k) == gi {
                set_bit(&mut trans_mask, i);
            }
        }
        // The holder is a member of the proposal we are frozen on (the one
        // this SYNC is for).
        let Some(holder) = f.members.get(usize::from(g.holder)).map(|m| m.node) else { return };
        if g.target < f.cf {
            // Only a buggy coordinator sends this: ignore it.
            warn!("vs: flush target below our freeze point");
            return;
        }
        let mut leaver_mask = 0u32;
        for (i, m) in self.view.members.iter().enumerate() {
            if msg.leavers.contains(m) {
                set_bit(&mut leaver_mask, i);
            }
        }
        f.sync = Some(SyncState {
            new_view: msg.new_view,
            target: g.target,
            holder,
            fresh_mask: msg.fresh_mask,
            leaver_mask,
            trans_mask,
            done_sent: false,
        });
        self.order.limit = g.target;
        self.stall_since = None;
        self.check_sync_done(now);
    }

    /// Answer SYNC_DONE once we hold everything up to the target.
    pub(super) fn check_sync_done(&mut self, now: Instant) {
        let contig = self.order.contig;
        let Some(f) = &mut self.flush else { return };
        let Some(s) = &mut f.sync else { return };
        if s.done_sent || contig < s.target {
            return;
        }
        s.done_sent = true;
        let (coord, counter) = (f.pid.coord, f.pid.counter);
        if coord == self.me.node {
            self.coord_on_sync_done(now, self.me, counter);
        } else {
            self.tx.sync_done = true;
        }
    }

    pub(super) fn coord_on_sync_done(&mut self, now: Instant, from: Member, counter: u32) {
        if self.coord.phase != Phase::Syncing || counter != self.coord.counter {
            return;
        }
        let Some(i) = self.coord.position(from) else { return };
        set_bit(&mut self.coord.done_mask, i);
        if self.coord.done_mask != all_mask(self.coord.members.len()) {
            return;
        }
        let Some(new_view) = self.coord.sync.as_ref().map(|s| s.new_view) else { return };
        self.coord.last_install = Some((counter, new_view));
        self.coord.phase = Phase::Idle;
        self.tx.sync = false;
        self.tx.install = true;
        self.on_install(now, self.me, counter, new_view);
    }

    pub(super) fn on_install(&mut self, now: Instant, from: Member, counter: u32, view: u64) {
        if !self.running() {
            return;
        }
        let contig = self.order.contig;
        let Some(f) = &mut self.flush else { return };
        if f.pid != (ProposalId { coord: from.node, inc: from.inc, counter }) {
            return;
        }
        let Some(s) = &f.sync else { return };
        if s.new_view != view || contig < s.target {
            return;
        }
        f.install = true;
        self.try_install(now);
    }

    /// Apply a committed INSTALL once the application has consumed every
    /// message of the old view up to the target and there is room for the
    /// view's events.
    pub(super) fn try_install(&mut self, now: Instant) {
        let Some(f) = &self.flush else { return };
        let Some(s) = &f.sync else { return };
        if !f.install || self.order.app_next <= s.target || !self.events.has_room() {
            return;
        }
        let Some(f) = self.flush.take() else { return };
        let Some(s) = f.sync else { return };
        let quorate = self.quorum.is_quorate(f.members.len(), self.configured);
        let rec = Record::install_for(
            Some(self.me.node),
            &self.view.members,
            &f.members,
            s.new_view,
            quorate,
            s.fresh_mask,
            s.leaver_mask,
            s.trans_mask,
        );
        let queued = self.events.push(rec);
        invariant!(queued, "an install without room for its event record (the install waits for room)");
        info!("vs {}: installed view {:x} with {} members", self.me.node.0, s.new_view, f.members.len());
        self.installed_pid = Some((f.pid.coord, f.pid.counter));
        self.view =
            View { key: ViewKey { id: s.new_view, leader: f.pid.coord, leader_inc: f.pid.inc }, members: f.members };
        self.fresh = false;
        self.view_installed_at = now;
        self.order.reset();
        // Reassembly is per view: incomplete messages are dropped here, the
        // same ones by every member that delivered the same old-view units.
        self.stats.frag_dropped_view_change += self.frag_rx.tracker.reset();
        self.frag_seq.reset();
        self.send.renumber();
        self.stall_since = None;
        self.change_since = None;
        self.tx.flush_ok = false;
        self.tx.sync_done = false;
        self.tx.ack = false;
        self.tx.nak = None;
        self.tx.rtx = None;
        self.tx.install_to = 0;
        self.tx.resend = 0;
        self.tx.frag_wait = 0;
        self.tx.heartbeat = true;
        self.stats.views_installed += 1;
        // The sequencer may already order what we queued meanwhile.
        self.sequence_own();
    }

    /// A heartbeat from a peer (already recorded by the caller).
    pub(super) fn on_heartbeat(&mut self, from: Member, peer_idx: usize, hb: &Heartbeat) {
        if hb.view == self.view.key {
            if let Some(i) = self.view.position(from) {
                if self.is_sequencer() {
                    self.order.set_ack(i, hb.contig);
                    if let Some(me) = self.view.index_of(self.me.node) {
                        self.order.recompute_stable(self.view.members.len(), me);
                    }
                }
                if from.node == self.view.leader() {
                    self.order.learn_high(hb.high);
                }
                // Stability is a fact about the view, whoever reports it:
                // after the sequencer died, the flush target may lie past
                // the receive window of a member that knows an older
                // stability point than the holder (see `order.rs`,
                // "Stability from every member").
                self.order.learn_stable(hb.stable);
            }
        }
        // A member of the view we installed as coordinator that missed the
        // INSTALL: resend it.
        if let Some((counter, vid)) = self.coord.last_install {
            if vid == self.view.key.id
                && hb.view.id < vid
                && hb.acc_coord == self.me.node.0
                && hb.acc_counter == counter
                && self.view.position(from).is_some()
            {
                set_bit(&mut self.tx.install_to, peer_idx);
            }
        }
    }

    /// A peer announced a clean leave.
    pub(super) fn on_leave(&mut self, from: Member) {
        self.detector.mark_left(from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn singleton_view_and_seq_limit() {
        let v = View::singleton(Member { node: NodeId(7), inc: Incarnation(3) });
        assert_eq!(v.leader(), NodeId(7));
        assert_eq!(v.seq(), 1);
        assert_eq!(v.seq_limit(), 1 + MAX_VIEW_JUMP);
        let end = View { key: ViewKey { id: u64::MAX - 1, ..v.key }, members: v.members.clone() };
        assert_eq!(end.seq_limit(), u64::MAX);
        assert_eq!(v.position(Member { node: NodeId(7), inc: Incarnation(3) }), Some(0));
        assert_eq!(v.position(Member { node: NodeId(7), inc: Incarnation(4) }), None);
    }

    #[test]
    fn masks() {
        assert_eq!(all_mask(0), 0);
        assert_eq!(all_mask(3), 0b111);
        assert_eq!(all_mask(32), u32::MAX);
        let mut m = 0;
        set_bit(&mut m, 40);
        assert_eq!(m, 0);
        set_bit(&mut m, 31);
        assert_eq!(m, 1 << 31);
    }
}
