//! `Node`: wires the barrier, the daemon membership and the mount groups.
//!
//! Drive it like this (sans-IO, quinn-proto style):
//!
//! ```text
//! loop {
//!     node.handle(now, input)?;               // one input at a time
//!     while let Some(e) = node.poll_effect() { execute(e) }
//!     while let Some(n) = node.poll_transmit(&mut buf) { multicast(&buf[..n]) }
//! }
//! ```
//!
//! `handle` first checks that the effect and send queues have room for the
//! worst case of one input; if not it returns [`HandleError::Backpressure`]
//! and changes nothing, so a full queue is never a drop and never half
//! applied.

use crate::barrier::{Barrier, BarrierError};
use crate::daemon::DaemonState;
use crate::gcs::{Confchg, NodeList, QuorumEvent, RingEvent, MAX_NODES};
use crate::ids::{Generation, GroupId, Incarnation, Instant, Jid, Member, NodeId};
use crate::mount::MountGroup;
use crate::wire::{FenceResult, FsName, Mode, RecoveryResult, WireError, MAX_GROUPS, PROTO_MAX, PROTO_MIN};

/// Capacity of the effect queue.
pub const EFFECT_CAP: usize = 128;
/// Capacity of the send queue (message descriptors, encoded on poll).
pub const OUTBOX_CAP: usize = 96;
/// Worst case of effects one input can produce.
pub const EFFECTS_PER_INPUT: usize = 8 + 5 * MAX_GROUPS + MAX_NODES;
/// Worst case of sends one input can produce.
pub const SENDS_PER_INPUT: usize = 4 + 4 * MAX_GROUPS;

const _: () = assert!(EFFECTS_PER_INPUT <= EFFECT_CAP);
const _: () = assert!(SENDS_PER_INPUT <= OUTBOX_CAP);
const _: () = assert!(MAX_NODES <= 32, "node masks are u32");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    pub node: NodeId,
    /// Persisted by the adapter, strictly greater at every start.
    pub incarnation: Incarnation,
    pub proto_min: u16,
    pub proto_max: u16,
    /// Backoff before the next fence actor retries a failed fencing.
    pub fence_retry_ms: u64,
    /// Backoff before the next member retries a failed journal recovery.
    pub recovery_retry_ms: u64,
    /// Startup fencing grace (dlm's post_join_delay): when the daemon group
    /// forms with nobody who knows the cluster's past, configured nodes
    /// (see [`Input::Nodelist`]) that have not joined within this time are
    /// fenced before any first mount.
    pub startup_fence_delay_ms: u64,
}

impl Config {
    pub fn new(node: NodeId, incarnation: Incarnation) -> Config {
        Config {
            node,
            incarnation,
            proto_min: PROTO_MIN,
            proto_max: PROTO_MAX,
            fence_retry_ms: 1000,
            recovery_retry_ms: 1000,
            startup_fence_delay_ms: 3000,
        }
    }
}

/// Operator and host requests.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Request {
    Mount {
        fs: FsName,
        mode: Mode,
        journals: u16,
    },
    /// Leave the group cleanly. Contract (DOMAIN P9): the host sends this
    /// only after the kernel unmounted the filesystem (its journal is
    /// flushed clean and it does no more I/O, a replay it ran included);
    /// the others then free the journal without replaying it, and
    /// `Unmounted` confirms. A node that fails before this is a failure
    /// (fenced, journal replayed). To give up a mount request whose kernel
    /// mount has not started yet (no `Mount`/`MountFirst` effect, or it
    /// failed), send it as well; a kernel that is mounting must finish and
    /// be unmounted first. A host that cannot tell must not send it.
    Unmount {
        fs: FsName,
    },
    Remount {
        fs: FsName,
        mode: Mode,
    },
}

/// What the kernel (or its stand-in) reports.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum KernelEvent {
    /// The mount asked for by `Mount`/`MountFirst` finished.
    MountResult { fs: FsName, ok: bool },
    /// The first mounter replayed every journal.
    FirstRecoveryDone { fs: FsName },
    /// A `RecoverJournal` finished.
    RecoveryDone { fs: FsName, jid: Jid, ok: bool },
    /// The filesystem hit an error and must withdraw.
    Withdraw { fs: FsName },
}

/// Timer tokens: a stale token is a no-op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TimerToken(pub u64);

/// One input.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Input<'a> {
    Ring(RingEvent),
    Confchg(Confchg),
    Quorum(QuorumEvent),
    /// The configured cluster nodes (corosync nodelist, UDP config). Without
    /// it the core cannot know about nodes that are down at a cold start,
    /// and does no startup fencing.
    Nodelist(NodeList),
    /// A message delivered by the transport in agreed order; `from` is the
    /// transport's sender (checked against the header).
    Deliver {
        from: NodeId,
        bytes: &'a [u8],
    },
    Timer(TimerToken),
    /// The adapter's fence agent finished.
    Fenced {
        target: Member,
        ok: bool,
    },
    Kernel(KernelEvent),
    Request(Request),
}

/// Operations on the kernel side of one filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum KernelOp {
    Block,
    Unblock,
    SetJid(Jid),
    /// Mount as first mounter: replay every journal, then report
    /// `FirstRecoveryDone`.
    MountFirst(Jid),
    Mount(Jid),
    MountSpectator,
    RecoverJournal(Jid),
    /// Withdraw finished on the cluster side: release the filesystem.
    Release,
    /// The filesystem left the group: finish the unmount.
    Unmounted,
    /// The mount cannot proceed (e.g. no free journal): fail it.
    MountError(MountError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MountError {
    NoFreeJournal,
    TooManyGroups,
    KernelFailed,
    Incompatible,
    /// This node's membership was not kept by a merge (the side it was on
    /// lost the verdict, or the agreed state no longer lists it): the
    /// filesystem is given back; mount again.
    LostInMerge,
    /// Another filesystem of the cluster has the same group id (a 31-bit
    /// hash of the name, [`crate::GroupId::of_fs`]): rename one.
    NameCollision,
}

/// Things an operator should see.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Notice {
    /// The daemon group completed a sync at this generation.
    DaemonSynced {
        generation: Generation,
        members: u8,
    },
    /// A mount group completed a change.
    GroupSynced {
        group: GroupId,
        generation: Generation,
        members: u8,
    },
    /// These members were found stale after a merge and must reset.
    StaleMerge {
        node: NodeId,
        partitions: u8,
    },
    JournalRecovered {
        group: GroupId,
        jid: Jid,
    },
    JournalRecoveryFailed {
        group: GroupId,
        jid: Jid,
        attempt: u16,
    },
    Fenced {
        target: Member,
    },
    FenceFailed {
        target: Member,
        attempt: u16,
    },
    /// A message was not applied (stale generation, stale sender...).
    Dropped {
        reason: DropReason,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DropReason {
    /// A peer's description of a group differs from ours.
    Disagreement,
    OldGeneration,
    /// Sent in another transport view than the one it was delivered in.
    OtherView,
    StaleSender,
    NotMember,
    NotSynced,
    /// A mount of a filesystem whose group id is another filesystem's.
    NameCollision,
    /// A mount from a member the group already has.
    AlreadyMember,
    /// The group's member table (or the cluster's group table) is full.
    TableFull,
    /// The message does not apply to what it names (a spectator's remount,
    /// a first-done from a member that is not the first mounter).
    Inapplicable,
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use = "an effect the host drops is an action never taken"]
pub enum Effect {
    SetTimer {
        token: TimerToken,
        at: Instant,
    },
    Kernel {
        group: GroupId,
        fs: FsName,
        op: KernelOp,
    },
    Fence {
        target: Member,
    },
    /// Backup for a stale-merge verdict: the adapter should make sure this
    /// node resets (kill its daemon, or fence it).
    Kill {
        node: NodeId,
    },
    /// This node lost a merge verdict: drop all state, restart with a new
    /// incarnation. The node accepts no input afterwards.
    ResetSelf,
    /// No common protocol version: stop with a clear error.
    Incompatible {
        ours_min: u16,
        ours_max: u16,
        cluster: u16,
    },
    Notify(Notice),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum HandleError {
    /// Drain `poll_effect`/`poll_transmit` first; nothing was changed.
    Backpressure,
    /// The node reset itself or stopped (incompatible); start a new one.
    Stopped,
    Barrier(BarrierError),
    Deliver(DeliverError),
    Request(RequestError),
    Kernel(KernelError),
    Fence(FenceInputError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DeliverError {
    Wire(WireError),
    /// The header names another sender than the transport.
    SenderMismatch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RequestError {
    InvalidName,
    InvalidJournals,
    AlreadyMounted,
    NotMounted,
    TooManyGroups,
    /// A request for this filesystem is already in flight (or its kernel
    /// withdrew it: the withdraw leaves the group, nothing else may).
    Busy,
    /// Another filesystem this node knows of has the same group id (a
    /// 31-bit hash of the name): rename one.
    NameCollision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum KernelError {
    UnknownFs,
    /// The event does not fit what the group asked the kernel to do.
    Unexpected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FenceInputError {
    NotRequested,
}

/// A message to multicast, encoded from current state when polled; a
/// descriptor whose generation is no longer current is skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Out {
    DaemonStart { gen: Generation },
    DaemonSync { gen: Generation },
    Op { gid: GroupId, gen: Generation },
    FenceResult { gen: Generation, res: FenceResult },
    MountStart { gid: GroupId, gen: Generation },
    MountState { gid: GroupId, gen: Generation },
    MountDone { gid: GroupId, gen: Generation, ok: bool },
    FirstDone { gid: GroupId, gen: Generation },
    RecoveryResult { gid: GroupId, gen: Generation, res: RecoveryResult },
}

/// Timer kinds (high byte of the token).
pub(crate) const TIMER_FENCE: u64 = 1;
pub(crate) const TIMER_RECOVERY: u64 = 2;

pub struct Node {
    pub(crate) cfg: Config,
    pub(crate) now: Instant,
    pub(crate) barrier: Barrier,
    pub(crate) d: DaemonState,
    pub(crate) groups: heapless::Vec<MountGroup, MAX_GROUPS>,
    pub(crate) effects: heapless::Deque<Effect, EFFECT_CAP>,
    pub(crate) outbox: heapless::Deque<Out, OUTBOX_CAP>,
    pub(crate) timer_seq: u64,
    pub(crate) stopped: bool,
    /// Counters for operators and tests.
    pub(crate) stats: Stats,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stats {
    pub delivered: u64,
    pub applied: u64,
    pub dropped_old_generation: u64,
    /// Sent in an older transport view than the one it was delivered in.
    pub dropped_other_view: u64,
    pub dropped_stale_sender: u64,
    pub dropped_other: u64,
    /// Why the last dropped message was dropped.
    pub last_drop: Option<DropReason>,
    pub wire_errors: u64,
    /// Old members' STARTs whose state digest differed from ours: a peer
    /// disagrees about a group (a bug or a forged message); it is not
    /// counted as agreement.
    pub digest_mismatches: u64,
}

impl Node {
    pub fn new(cfg: Config) -> Node {
        Node {
            cfg,
            now: Instant(0),
            barrier: Barrier::new(cfg.node),
            d: DaemonState::new(),
            groups: heapless::Vec::new(),
            effects: heapless::Deque::new(),
            outbox: heapless::Deque::new(),
            timer_seq: 0,
            stopped: false,
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn me(&self) -> Member {
        Member { node: self.cfg.node, inc: self.cfg.incarnation }
    }

    #[must_use]
    pub fn generation(&self) -> Generation {
        self.barrier.current()
    }

    #[must_use]
    pub fn stats(&self) -> Stats {
        self.stats
    }

    #[must_use]
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Feed one input.
    pub fn handle(&mut self, now: Instant, input: Input<'_>) -> Result<(), HandleError> {
        if self.stopped {
            return Err(HandleError::Stopped);
        }
        if EFFECT_CAP - self.effects.len() < EFFECTS_PER_INPUT || OUTBOX_CAP - self.outbox.len() < SENDS_PER_INPUT {
            return Err(HandleError::Backpressure);
        }
        if now > self.now {
            self.now = now;
        }
        let before = (self.effects.len(), self.outbox.len(), self.barrier.current());
        let r = match input {
            Input::Ring(ev) => self.on_ring(&ev).map_err(HandleError::Barrier),
            Input::Confchg(cc) => self.on_confchg(&cc).map_err(HandleError::Barrier),
            Input::Quorum(q) => {
                self.on_quorum(&q);
                Ok(())
            }
            Input::Nodelist(mut l) => {
                crate::gcs::normalize(&mut l);
                self.d.configured = l;
                Ok(())
            }
            Input::Deliver { from, bytes } => self.on_deliver(from, bytes).map_err(HandleError::Deliver),
            Input::Timer(t) => {
                self.on_timer(t);
                Ok(())
            }
            Input::Fenced { target, ok } => self.on_fenced(target, ok).map_err(HandleError::Fence),
            Input::Kernel(k) => self.on_kernel(k).map_err(HandleError::Kernel),
            Input::Request(r) => self.on_request(r).map_err(HandleError::Request),
        };
        invariant!(
            self.effects.len().saturating_sub(before.0) <= EFFECTS_PER_INPUT,
            "one input produced too many effects"
        );
        invariant!(self.outbox.len().saturating_sub(before.1) <= SENDS_PER_INPUT, "one input produced too many sends");
        invariant!(self.barrier.current() >= before.2 || !self.barrier.anchored(), "generation went backwards");
        self.check_invariants();
        r
    }

    /// Next effect to execute, in order.
    #[must_use]
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// Encode the next message to multicast in the daemon group (agreed
    /// order) into `buf` (at least [`crate::wire::MAX_MESSAGE`] bytes is always
    /// enough). Returns its length.
    #[must_use]
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<usize> {
        while let Some(out) = self.outbox.pop_front() {
            match self.render_into(&out, buf) {
                None => continue,
                Some(Ok(n)) => return Some(n),
                Some(Err(_)) => {
                    // Too small a buffer: keep the message for a bigger one.
                    let _ = self.outbox.push_front(out);
                    return None;
                }
            }
        }
        None
    }

    /// Are there effects or messages waiting?
    #[must_use]
    pub fn has_output(&self) -> bool {
        !self.effects.is_empty() || !self.outbox.is_empty()
    }

    pub(crate) fn effect(&mut self, e: Effect) {
        // Capacity was reserved in `handle`; a failure here is a bug in the
        // per-input bound, caught in debug builds.
        let r = self.effects.push_back(e);
        invariant!(r.is_ok(), "effect queue overflow despite reservation");
    }

    pub(crate) fn send(&mut self, o: Out) {
        if self.outbox.iter().any(|x| *x == o) {
            return;
        }
        // A newer descriptor supersedes an older one of the same kind and
        // group (it would render to nothing anyway): this bounds the queue.
        let supersedes = |x: &Out| match (x, &o) {
            (Out::DaemonStart { .. }, Out::DaemonStart { .. }) | (Out::DaemonSync { .. }, Out::DaemonSync { .. }) => {
                true
            }
            (Out::Op { gid: a, .. }, Out::Op { gid: b, .. })
            | (Out::MountStart { gid: a, .. }, Out::MountStart { gid: b, .. })
            | (Out::MountState { gid: a, .. }, Out::MountState { gid: b, .. }) => a == b,
            _ => false,
        };
        if self.outbox.iter().any(supersedes) {
            let mut keep: heapless::Deque<Out, OUTBOX_CAP> = heapless::Deque::new();
            while let Some(x) = self.outbox.pop_front() {
                if !supersedes(&x) {
                    let _ = keep.push_back(x);
                }
            }
            self.outbox = keep;
        }
        let r = self.outbox.push_back(o);
        invariant!(r.is_ok(), "outbox overflow despite reservation");
    }

    pub(crate) fn notify(&mut self, n: Notice) {
        self.effect(Effect::Notify(n));
    }

    pub(crate) fn set_timer(&mut self, kind: u64, after_ms: u64) -> TimerToken {
        self.timer_seq = self.timer_seq.wrapping_add(1);
        let token = TimerToken((kind << 56) | (self.timer_seq & ((1 << 56) - 1)));
        let at = self.now.plus_ms(after_ms);
        self.effect(Effect::SetTimer { token, at });
        token
    }

    fn on_timer(&mut self, t: TimerToken) {
        match t.0 >> 56 {
            TIMER_FENCE => self.on_fence_timer(t),
            TIMER_RECOVERY => self.on_recovery_timer(t),
            _ => {}
        }
    }

    pub(crate) fn group_slot(&self, gid: GroupId) -> Option<usize> {
        self.groups.iter().position(|g| g.gid == gid)
    }

    /// Assertions over the whole node, in debug builds only.
    fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        for g in self.groups.iter() {
            g.check_invariants();
        }
        self.d.check_invariants();
    }

    pub(crate) fn stop(&mut self) {
        self.stopped = true;
        self.outbox.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The send-queue check pushes back only when fewer than
    /// `SENDS_PER_INPUT` slots are left: with exactly that many, an input is
    /// still taken (issue 17: `<` -> `==` survived; no test filled the
    /// send queue to the bound).
    #[test]
    fn the_send_queue_pushes_back_below_the_room_one_input_needs() {
        let mut n = Node::new(Config::new(NodeId(1), Incarnation(1)));
        let quiet = |n: &mut Node| n.handle(Instant(0), Input::Nodelist(NodeList::new()));
        let filler = Out::FirstDone { gid: GroupId::of_fs("fs1"), gen: Generation::ZERO };
        while OUTBOX_CAP - n.outbox.len() > SENDS_PER_INPUT {
            n.outbox.push_back(filler.clone()).unwrap();
        }
        let queued = n.outbox.len();
        assert_ne!(quiet(&mut n), Err(HandleError::Backpressure), "room for one input left");
        n.outbox.truncate(queued);
        n.outbox.push_back(filler).unwrap();
        assert_eq!(quiet(&mut n), Err(HandleError::Backpressure));
    }

    /// `has_output` holds while an effect or a message waits to be polled,
    /// either one alone, and not once both queues are drained (issue 17:
    /// `has_output` -> `false` survived; no test asked it).
    #[test]
    fn has_output_while_an_effect_or_a_message_waits() {
        let mut n = Node::new(Config::new(NodeId(1), Incarnation(1)));
        assert!(!n.has_output());
        n.notify(Notice::DaemonSynced { generation: Generation::ZERO, members: 1 });
        assert!(n.has_output());
        assert!(n.poll_effect().is_some());
        assert!(!n.has_output());
        n.send(Out::FirstDone { gid: GroupId::of_fs("fs1"), gen: Generation::ZERO });
        assert!(n.has_output());
        n.notify(Notice::DaemonSynced { generation: Generation::ZERO, members: 1 });
        assert!(n.has_output());
        n.outbox.clear();
        assert!(n.has_output());
        assert!(n.poll_effect().is_some());
        assert!(!n.has_output());
    }

    /// A newer descriptor of a kind that renders only its latest copy (the
    /// daemon start or sync; an op, START or state of the same group)
    /// replaces the queued older one, so the send queue stays bounded;
    /// other groups and other kinds stay queued (issue 17: deleting either
    /// arm of `send`'s `supersedes` survived: the older copies render to
    /// nothing, so only the queue's length showed it).
    #[test]
    fn a_newer_descriptor_replaces_the_queued_one_of_its_kind_and_group() {
        extern crate std;
        use std::vec::Vec;
        let mut n = Node::new(Config::new(NodeId(1), Incarnation(1)));
        let g = |epoch| Generation { ring: 8, epoch };
        let (a, b) = (GroupId::of_fs("fs1"), GroupId::of_fs("fs2"));
        let of_group = |gid, gen| [Out::Op { gid, gen }, Out::MountStart { gid, gen }, Out::MountState { gid, gen }];
        n.send(Out::DaemonStart { gen: g(1) });
        n.send(Out::DaemonSync { gen: g(1) });
        for o in of_group(a, g(1)).into_iter().chain(of_group(b, g(1))) {
            n.send(o);
        }
        n.send(Out::FirstDone { gid: a, gen: g(1) });
        assert_eq!(n.outbox.len(), 9);
        n.send(Out::DaemonStart { gen: g(2) });
        n.send(Out::DaemonSync { gen: g(2) });
        for o in of_group(a, g(2)) {
            n.send(o);
        }
        n.send(Out::FirstDone { gid: a, gen: g(2) });
        let mut want: Vec<Out> = of_group(b, g(1)).into();
        want.push(Out::FirstDone { gid: a, gen: g(1) });
        want.extend([Out::DaemonStart { gen: g(2) }, Out::DaemonSync { gen: g(2) }]);
        want.extend(of_group(a, g(2)));
        want.push(Out::FirstDone { gid: a, gen: g(2) });
        assert_eq!(n.outbox.iter().cloned().collect::<Vec<_>>(), want);
    }
}
