//! The vocabulary at the bottom of the core: what goes in (inputs,
//! requests, kernel events), what comes out (effects, kernel operations,
//! notices, timer tokens, send descriptors) and the errors of `handle`.
//! Nothing here has behaviour; every state machine above speaks it.

use crate::barrier::BarrierError;
use crate::gcs::{Confchg, NodeList, QuorumEvent, RingEvent};
use crate::ids::{Generation, GroupId, Instant, Jid, Member, NodeId};
use crate::wire::{FenceResult, FsName, Mode, RecoveryResult, WireError};

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
    /// So many journals of the filesystem wait for replay that one more
    /// holder could not be tracked if it failed (every holder and every
    /// journal awaiting replay must fit the group's recovery table,
    /// [`crate::wire::MAX_RECOVERIES`]): mount again once replays are done.
    ReplaysPending,
}

/// Things an operator should see.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
pub enum DeliverError {
    Wire(WireError),
    /// The header names another sender than the transport.
    SenderMismatch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
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
#[non_exhaustive]
pub enum KernelError {
    UnknownFs,
    /// The event does not fit what the group asked the kernel to do.
    Unexpected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
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
