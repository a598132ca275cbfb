//! C ABI for cohort-core: embed the node in a C daemon.
//!
//! * **No allocation.** The host provides the node's memory:
//!   [`cohort_node_size`] bytes aligned to [`cohort_node_align`], then
//!   [`cohort_node_init`]. Everything else is fixed-size out-structs the host
//!   owns ([`CohortEffect`], [`CohortStatus`]) and caller buffers.
//! * **Every function returns a [`CohortResult`]** (0 = ok, 1 = nothing to
//!   poll, negative = error). Nothing unwinds across the boundary: every body
//!   runs under `catch_unwind`; a panic returns `COHORT_RESULT_ERR_PANIC` and
//!   poisons the node (every later call returns `COHORT_RESULT_ERR_POISONED`).
//! * **Checked inputs.** Null and misaligned pointers, short buffers,
//!   oversize arrays, unknown enum values and node id 0 are rejected before
//!   the node sees anything. Enum-valued inputs are plain integers, never
//!   Rust enums, so a bad value from C is an error code, not UB.
//!
//! Time is an input: every `cohort_handle_*`/`cohort_request_*` takes the
//! host's monotonic milliseconds. A `handle` call that returns
//! `COHORT_RESULT_ERR_BACKPRESSURE` changed nothing: drain `cohort_poll_effect` and
//! `cohort_poll_transmit`, then call again.
//!
//! The generated header is `include/cohort.h` (cbindgen, see
//! `cbindgen.toml` and `check-header.sh`).
#![deny(unsafe_op_in_unsafe_fn)]

use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use cohort_core::barrier::BarrierError;
use cohort_core::gcs::{self, Confchg, MemberReason, NodeList, QuorumEvent, Reason, ReasonList, RingEvent};
use cohort_core::mount::GroupWait;
use cohort_core::node::DropReason;
use cohort_core::node::{
    DeliverError, Effect, FenceInputError, HandleError, Input, KernelError, KernelEvent, KernelOp, MountError, Notice,
    Request, RequestError, TimerToken,
};
use cohort_core::status::DaemonWait;
use cohort_core::wire::{self, FsName, Mode};
use cohort_core::{Config, Incarnation, Instant, Jid, Member, Node, NodeId};

/// Largest message `cohort_poll_transmit` produces; a buffer of this size is
/// always enough.
pub const COHORT_MAX_MESSAGE: usize = 4096;
/// Most nodes in a cluster (and members in any list).
pub const COHORT_MAX_NODES: usize = 32;
/// Most mount groups (filesystems) per node.
pub const COHORT_MAX_GROUPS: usize = 16;
/// Most pending journal recoveries per group.
pub const COHORT_MAX_RECOVERIES: usize = 64;
/// Longest filesystem name in bytes (without the terminating NUL).
pub const COHORT_FS_NAME_LEN: usize = 32;
/// Size of the NUL-terminated filesystem name arrays in the out-structs.
pub const COHORT_FS_NAME_CAP: usize = 33;

const _: () = assert!(COHORT_MAX_MESSAGE == wire::MAX_MESSAGE);
const _: () = assert!(COHORT_MAX_NODES == gcs::MAX_NODES);
const _: () = assert!(COHORT_MAX_GROUPS == wire::MAX_GROUPS);
const _: () = assert!(COHORT_MAX_RECOVERIES == wire::MAX_RECOVERIES);
const _: () = assert!(COHORT_FS_NAME_LEN == wire::FS_NAME_LEN);
const _: () = assert!(COHORT_FS_NAME_CAP == COHORT_FS_NAME_LEN + 1);

/// Result of every call. `COHORT_RESULT_OK` and `COHORT_RESULT_EMPTY` are successes.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CohortResult {
    Ok = 0,
    /// A poll found nothing.
    Empty = 1,
    /// A required pointer was NULL.
    ErrNull = -1,
    /// A pointer was not aligned for its type.
    ErrMisaligned = -2,
    /// A size or capacity given by the host is too small.
    ErrBufferTooSmall = -3,
    /// The node memory was never initialised (or was finalised).
    ErrNotInitialized = -4,
    /// An argument is out of range (unknown enum value, node id 0...).
    ErrInvalidArgument = -5,
    /// More list entries than `COHORT_MAX_NODES`.
    ErrTooManyEntries = -6,
    /// A message longer than `COHORT_MAX_MESSAGE`.
    ErrMessageTooLong = -7,
    /// Not a valid filesystem name (empty, too long, not UTF-8, bad bytes).
    ErrInvalidName = -8,
    /// Drain effects and transmits first; nothing was changed.
    ErrBackpressure = -10,
    /// The node stopped (reset itself or is incompatible): start a new one
    /// with a higher incarnation.
    ErrStopped = -11,
    /// A confchg arrived before the current ring was known.
    ErrNoRingYet = -12,
    /// A ring id went backwards.
    ErrRingWentBack = -13,
    /// A delivered message did not decode.
    ErrMalformedMessage = -14,
    /// A delivered message names another sender than the transport.
    ErrSenderMismatch = -15,
    ErrInvalidJournals = -16,
    ErrAlreadyMounted = -17,
    ErrNotMounted = -18,
    ErrTooManyGroups = -19,
    /// A request for this filesystem is already in flight.
    ErrBusy = -20,
    /// A kernel event for a filesystem the node does not know.
    ErrUnknownFs = -21,
    /// A kernel event the group did not ask for.
    ErrUnexpectedKernelEvent = -22,
    /// A fence result for a fencing the node did not request.
    ErrFenceNotRequested = -23,
    /// A confchg left this node out of the members without a left entry.
    ErrDroppedSelf = -24,
    /// Another filesystem this node knows of has the same group id (a
    /// 31-bit hash of the name): rename one.
    ErrNameCollision = -25,
    /// An error of a newer core this version of the C ABI has no code for
    /// (the core's error enums are `#[non_exhaustive]`).
    ErrOther = -97,
    /// A Rust panic was caught; the node is poisoned.
    ErrPanic = -98,
    /// An earlier call panicked: this node must be re-initialised.
    ErrPoisoned = -99,
}

/// Membership change reasons (corosync's numbering).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CohortReason {
    Join = 1,
    Leave = 2,
    NodeDown = 3,
    NodeUp = 4,
    ProcDown = 5,
}

/// One joined or left entry of a confchg. `reason` is a `CohortReason`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CohortMemberReason {
    pub node: u32,
    pub reason: u32,
}

/// Mount modes (inputs take them as `uint32_t`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CohortMode {
    Rw = 0,
    Ro = 1,
    Spectator = 2,
}

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CohortEffectKind {
    None = 0,
    /// Call `cohort_handle_timer(timer_token)` at `timer_at_ms`.
    SetTimer = 1,
    /// Do `kernel_op` on `fs` (group `group`); see `jid`/`mount_error`.
    Kernel = 2,
    /// Fence `node`/`incarnation`, then `cohort_handle_fenced`.
    Fence = 3,
    /// Make sure `node` resets (kill its daemon, or fence it).
    Kill = 4,
    /// This node lost a merge: drop all state, restart with a new
    /// incarnation.
    ResetSelf = 5,
    /// No common protocol version (`proto_*`).
    Incompatible = 6,
    /// Something an operator should see (`notice` and its fields).
    Notify = 7,
}

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CohortKernelOp {
    None = 0,
    Block = 1,
    Unblock = 2,
    /// `jid` is ours.
    SetJid = 3,
    /// Mount with journal `jid` as first mounter: replay every journal, then
    /// `cohort_handle_kernel_first_recovery_done`.
    MountFirst = 4,
    /// Mount with journal `jid`, then `cohort_handle_kernel_mount_result`.
    Mount = 5,
    MountSpectator = 6,
    /// Replay journal `jid`, then `cohort_handle_kernel_recovery_done`.
    RecoverJournal = 7,
    /// Withdraw finished on the cluster side: release the filesystem.
    Release = 8,
    /// The filesystem left the group: finish the unmount.
    Unmounted = 9,
    /// The mount cannot proceed (`mount_error`).
    MountError = 10,
}

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CohortMountError {
    None = 0,
    NoFreeJournal = 1,
    TooManyGroups = 2,
    KernelFailed = 3,
    Incompatible = 4,
    /// The membership was not kept when partitions merged: mount again.
    LostInMerge = 5,
    /// Another filesystem of the cluster has the same group id: rename one.
    NameCollision = 6,
    /// Too many journals wait for replay: mount again once they are replayed.
    ReplaysPending = 7,
}

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CohortNotice {
    None = 0,
    /// `generation_*`, `members`.
    DaemonSynced = 1,
    /// `group`, `generation_*`, `members`.
    GroupSynced = 2,
    /// `node`, `partitions`.
    StaleMerge = 3,
    /// `group`, `jid`.
    JournalRecovered = 4,
    /// `group`, `jid`, `attempt`.
    JournalRecoveryFailed = 5,
    /// `node`, `incarnation`.
    Fenced = 6,
    /// `node`, `incarnation`, `attempt`.
    FenceFailed = 7,
    /// `drop_reason`.
    Dropped = 8,
    /// A notice of a newer core this version of the C ABI has no code for.
    Other = 255,
}

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CohortDropReason {
    None = 0,
    OldGeneration = 1,
    StaleSender = 2,
    NotMember = 3,
    NotSynced = 4,
    /// A peer's description of a group differs from ours.
    Disagreement = 5,
    /// Sent in another transport view than the one it was delivered in.
    OtherView = 6,
    /// A mount of a filesystem whose group id is another filesystem's.
    NameCollision = 7,
    /// A mount from a member the group already has.
    AlreadyMember = 8,
    /// The group's member table (or the cluster's group table) is full.
    TableFull = 9,
    /// The message does not apply to what it names.
    Inapplicable = 10,
    /// A reason of a newer core this version of the C ABI has no code for.
    Other = 255,
}

/// Any `Effect`, flattened: `kind` says which fields mean something; the
/// others are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CohortEffect {
    pub kind: CohortEffectKind,
    pub timer_token: u64,
    pub timer_at_ms: u64,
    pub group: u32,
    /// NUL-terminated filesystem name.
    pub fs: [c_char; COHORT_FS_NAME_CAP],
    pub kernel_op: CohortKernelOp,
    pub has_jid: bool,
    pub jid: u16,
    pub mount_error: CohortMountError,
    pub node: u32,
    pub incarnation: u64,
    pub proto_ours_min: u16,
    pub proto_ours_max: u16,
    pub proto_cluster: u16,
    pub notice: CohortNotice,
    pub generation_ring: u64,
    pub generation_epoch: u32,
    pub members: u8,
    pub partitions: u8,
    pub attempt: u16,
    pub drop_reason: CohortDropReason,
}

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CohortDaemonWait {
    Nothing = 0,
    /// Not yet in the daemon group.
    Join = 1,
    /// Daemon starts missing.
    Starts = 2,
    /// The sync leader's snapshot (`daemon_wait_node`).
    Sync = 3,
    Stopped = 4,
}

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CohortGroupWait {
    Nothing = 0,
    DaemonSync = 1,
    Quorum = 2,
    /// Fencing of `wait_node`.
    Fencing = 3,
    /// Starts missing (`wait_mask`: bit i = i-th member).
    Starts = 4,
    /// The first mounter `wait_node`.
    FirstMounter = 5,
    NoFirstMounter = 6,
    /// Recovery of journal `wait_jid`.
    Recovery = 7,
    /// Nobody can recover journal `wait_jid`.
    NoRecoverer = 8,
    Kernel = 9,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CohortPeerStatus {
    pub node: u32,
    pub has_incarnation: bool,
    pub incarnation: u64,
    pub started: bool,
    pub stale: bool,
    pub has_state: bool,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CohortFenceStatus {
    pub node: u32,
    pub incarnation: u64,
    pub attempts: u16,
    /// Who fences now (0: nobody).
    pub actor: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CohortGroupMemberStatus {
    pub node: u32,
    pub mode: CohortMode,
    pub has_jid: bool,
    pub jid: u16,
    pub mounted: bool,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CohortRecoveryStatus {
    pub jid: u16,
    pub attempts: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CohortGroupStatus {
    pub group: u32,
    pub fs: [c_char; COHORT_FS_NAME_CAP],
    pub journals: u16,
    pub generation_ring: u64,
    pub generation_epoch: u32,
    pub synced: bool,
    pub first_done: bool,
    pub blocked: bool,
    pub mounted_here: bool,
    pub wait: CohortGroupWait,
    pub wait_node: u32,
    pub wait_jid: u16,
    pub wait_mask: u32,
    pub n_members: u32,
    pub members: [CohortGroupMemberStatus; COHORT_MAX_NODES],
    pub n_recoveries: u32,
    pub recoveries: [CohortRecoveryStatus; COHORT_MAX_RECOVERIES],
}

/// A fixed-size snapshot of the node (`cohort status`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CohortStatus {
    pub node: u32,
    pub incarnation: u64,
    pub generation_ring: u64,
    pub generation_epoch: u32,
    pub anchored: bool,
    /// -1: no quorum information for the current ring, 0: inquorate, 1: quorate.
    pub quorate: i8,
    pub protocol: u16,
    pub daemon_wait: CohortDaemonWait,
    pub daemon_wait_node: u32,
    /// Nothing waits anywhere.
    pub stable: bool,
    pub last_merge_partitions: u8,
    pub n_members: u32,
    pub members: [CohortPeerStatus; COHORT_MAX_NODES],
    pub n_fencing: u32,
    pub fencing: [CohortFenceStatus; COHORT_MAX_NODES],
    pub n_groups: u32,
    pub groups: [CohortGroupStatus; COHORT_MAX_GROUPS],
    /// A failed node's pending fence could not be recorded (more failed node
    /// ids than the table holds): no journal is replayed until the node is
    /// re-initialised. (Last, so earlier fields keep their offsets.)
    pub fence_table_full: bool,
}

/// Optional tuning for `cohort_node_init_with` (fill with
/// `cohort_config_default`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CohortConfig {
    pub node_id: u32,
    /// Persisted by the host, strictly greater at every start.
    pub incarnation: u64,
    /// Backoff before the next fence actor retries a failed fencing.
    pub fence_retry_ms: u64,
    /// Backoff before the next member retries a failed journal recovery.
    pub recovery_retry_ms: u64,
}

/// The node in host memory (opaque to C).
pub struct CohortNode {
    magic: u64,
    node: Node,
}

const MAGIC: u64 = 0x636f_686f_7274_0001; // "cohort" v1
const POISONED: u64 = 0x636f_686f_7274_dead;

// ------------------------------------------------------------------ helpers

type R<T> = Result<T, CohortResult>;

/// Run `f`, mapping a panic to `ErrPanic`.
fn guard(f: impl FnOnce() -> R<CohortResult>) -> CohortResult {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(r)) | Ok(Err(r)) => r,
        Err(_) => CohortResult::ErrPanic,
    }
}

fn check_ptr<T>(p: *const T) -> R<()> {
    if p.is_null() {
        Err(CohortResult::ErrNull)
    } else if !p.is_aligned() {
        Err(CohortResult::ErrMisaligned)
    } else {
        Ok(())
    }
}

/// Borrow `len` elements at `p` (NULL is fine when `len` is 0).
///
/// # Safety
/// When non-null, `p` must point to `len` readable `T`s.
unsafe fn slice<'a, T>(p: *const T, len: usize) -> R<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    check_ptr(p)?;
    // SAFETY: checked non-null and aligned; the caller promises `len` items.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Run `f` on an initialised node; a panic inside poisons it.
///
/// # Safety
/// `node` must be NULL or point to memory the host passed to
/// `cohort_node_init` (or at least `cohort_node_size()` readable bytes).
unsafe fn with_node(node: *mut CohortNode, f: impl FnOnce(&mut Node) -> R<CohortResult>) -> CohortResult {
    if let Err(e) = check_ptr(node) {
        return e;
    }
    // SAFETY: non-null, aligned, and the host owns this memory for us.
    let h = unsafe { &mut *node };
    match h.magic {
        MAGIC => {}
        POISONED => return CohortResult::ErrPoisoned,
        _ => return CohortResult::ErrNotInitialized,
    }
    let r = guard(|| f(&mut h.node));
    if r == CohortResult::ErrPanic {
        h.magic = POISONED;
    }
    r
}

fn handle(node: &mut Node, now_ms: u64, input: Input<'_>) -> R<CohortResult> {
    node.handle(Instant(now_ms), input).map_err(map_error)?;
    Ok(CohortResult::Ok)
}

fn map_error(e: HandleError) -> CohortResult {
    match e {
        HandleError::Backpressure => CohortResult::ErrBackpressure,
        HandleError::Stopped => CohortResult::ErrStopped,
        HandleError::Barrier(BarrierError::NoRingYet) => CohortResult::ErrNoRingYet,
        HandleError::Barrier(BarrierError::RingWentBack) => CohortResult::ErrRingWentBack,
        HandleError::Barrier(BarrierError::TooManyEntries) => CohortResult::ErrTooManyEntries,
        HandleError::Barrier(BarrierError::DroppedSelf) => CohortResult::ErrDroppedSelf,
        HandleError::Deliver(DeliverError::Wire(_)) => CohortResult::ErrMalformedMessage,
        HandleError::Deliver(DeliverError::SenderMismatch) => CohortResult::ErrSenderMismatch,
        HandleError::Request(r) => match r {
            RequestError::InvalidName => CohortResult::ErrInvalidName,
            RequestError::InvalidJournals => CohortResult::ErrInvalidJournals,
            RequestError::AlreadyMounted => CohortResult::ErrAlreadyMounted,
            RequestError::NotMounted => CohortResult::ErrNotMounted,
            RequestError::TooManyGroups => CohortResult::ErrTooManyGroups,
            RequestError::NameCollision => CohortResult::ErrNameCollision,
            RequestError::Busy => CohortResult::ErrBusy,
            _ => CohortResult::ErrOther,
        },
        HandleError::Kernel(KernelError::UnknownFs) => CohortResult::ErrUnknownFs,
        HandleError::Kernel(KernelError::Unexpected) => CohortResult::ErrUnexpectedKernelEvent,
        HandleError::Fence(FenceInputError::NotRequested) => CohortResult::ErrFenceNotRequested,
        _ => CohortResult::ErrOther,
    }
}

fn node_id(n: u32) -> R<NodeId> {
    let id = NodeId(n);
    if id.is_valid() {
        Ok(id)
    } else {
        Err(CohortResult::ErrInvalidArgument)
    }
}

/// # Safety
/// See [`slice`].
unsafe fn node_list(p: *const u32, n: usize) -> R<NodeList> {
    if n > COHORT_MAX_NODES {
        return Err(CohortResult::ErrTooManyEntries);
    }
    // SAFETY: forwarded contract.
    let ids = unsafe { slice(p, n)? };
    let mut l = NodeList::new();
    for id in ids {
        l.push(node_id(*id)?).map_err(|_| CohortResult::ErrTooManyEntries)?;
    }
    Ok(l)
}

/// # Safety
/// See [`slice`].
unsafe fn reason_list(p: *const CohortMemberReason, n: usize) -> R<ReasonList> {
    if n > COHORT_MAX_NODES {
        return Err(CohortResult::ErrTooManyEntries);
    }
    // SAFETY: forwarded contract.
    let entries = unsafe { slice(p, n)? };
    let mut l = ReasonList::new();
    for e in entries {
        let reason = u8::try_from(e.reason).ok().and_then(Reason::from_u8).ok_or(CohortResult::ErrInvalidArgument)?;
        l.push(MemberReason { node: node_id(e.node)?, reason }).map_err(|_| CohortResult::ErrTooManyEntries)?;
    }
    Ok(l)
}

/// Read a NUL-terminated name, looking at no more than
/// `COHORT_FS_NAME_CAP` bytes.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string (or at least
/// `COHORT_FS_NAME_CAP` readable bytes).
unsafe fn fs_arg(p: *const c_char) -> R<FsName> {
    if p.is_null() {
        return Err(CohortResult::ErrNull);
    }
    let mut bytes = [0u8; COHORT_FS_NAME_CAP];
    let mut len = None;
    for (i, b) in bytes.iter_mut().enumerate() {
        // SAFETY: we stop at the first NUL, within the caller's string.
        *b = unsafe { *p.add(i) } as u8;
        if *b == 0 {
            len = Some(i);
            break;
        }
    }
    let len = len.ok_or(CohortResult::ErrInvalidName)?;
    let s = std::str::from_utf8(&bytes[..len]).map_err(|_| CohortResult::ErrInvalidName)?;
    wire::fs_name(s).map_err(|_| CohortResult::ErrInvalidName)
}

fn mode_arg(m: u32) -> R<Mode> {
    match m {
        0 => Ok(Mode::Rw),
        1 => Ok(Mode::Ro),
        2 => Ok(Mode::Spectator),
        _ => Err(CohortResult::ErrInvalidArgument),
    }
}

fn mode_out(m: Mode) -> CohortMode {
    match m {
        Mode::Rw => CohortMode::Rw,
        Mode::Ro => CohortMode::Ro,
        Mode::Spectator => CohortMode::Spectator,
    }
}

fn fs_out(fs: &FsName) -> [c_char; COHORT_FS_NAME_CAP] {
    let mut out = [0 as c_char; COHORT_FS_NAME_CAP];
    for (o, b) in out.iter_mut().zip(fs.as_bytes().iter().take(COHORT_FS_NAME_LEN)) {
        *o = *b as c_char;
    }
    out
}

const EMPTY_EFFECT: CohortEffect = CohortEffect {
    kind: CohortEffectKind::None,
    timer_token: 0,
    timer_at_ms: 0,
    group: 0,
    fs: [0; COHORT_FS_NAME_CAP],
    kernel_op: CohortKernelOp::None,
    has_jid: false,
    jid: 0,
    mount_error: CohortMountError::None,
    node: 0,
    incarnation: 0,
    proto_ours_min: 0,
    proto_ours_max: 0,
    proto_cluster: 0,
    notice: CohortNotice::None,
    generation_ring: 0,
    generation_epoch: 0,
    members: 0,
    partitions: 0,
    attempt: 0,
    drop_reason: CohortDropReason::None,
};

fn effect_out(e: Effect) -> CohortEffect {
    let mut o = EMPTY_EFFECT;
    match e {
        Effect::SetTimer { token, at } => {
            o.kind = CohortEffectKind::SetTimer;
            o.timer_token = token.0;
            o.timer_at_ms = at.0;
        }
        Effect::Kernel { group, fs, op } => {
            o.kind = CohortEffectKind::Kernel;
            o.group = group.0;
            o.fs = fs_out(&fs);
            let (op, jid) = match op {
                KernelOp::Block => (CohortKernelOp::Block, None),
                KernelOp::Unblock => (CohortKernelOp::Unblock, None),
                KernelOp::SetJid(j) => (CohortKernelOp::SetJid, Some(j)),
                KernelOp::MountFirst(j) => (CohortKernelOp::MountFirst, Some(j)),
                KernelOp::Mount(j) => (CohortKernelOp::Mount, Some(j)),
                KernelOp::MountSpectator => (CohortKernelOp::MountSpectator, None),
                KernelOp::RecoverJournal(j) => (CohortKernelOp::RecoverJournal, Some(j)),
                KernelOp::Release => (CohortKernelOp::Release, None),
                KernelOp::Unmounted => (CohortKernelOp::Unmounted, None),
                KernelOp::MountError(err) => {
                    o.mount_error = match err {
                        MountError::NoFreeJournal => CohortMountError::NoFreeJournal,
                        MountError::TooManyGroups => CohortMountError::TooManyGroups,
                        MountError::KernelFailed => CohortMountError::KernelFailed,
                        MountError::Incompatible => CohortMountError::Incompatible,
                        MountError::LostInMerge => CohortMountError::LostInMerge,
                        MountError::NameCollision => CohortMountError::NameCollision,
                        MountError::ReplaysPending => CohortMountError::ReplaysPending,
                    };
                    (CohortKernelOp::MountError, None)
                }
            };
            o.kernel_op = op;
            o.has_jid = jid.is_some();
            o.jid = jid.map_or(0, |j| j.0);
        }
        Effect::Fence { target } => {
            o.kind = CohortEffectKind::Fence;
            o.node = target.node.0;
            o.incarnation = target.inc.0;
        }
        Effect::Kill { node } => {
            o.kind = CohortEffectKind::Kill;
            o.node = node.0;
        }
        Effect::ResetSelf => o.kind = CohortEffectKind::ResetSelf,
        Effect::Incompatible { ours_min, ours_max, cluster } => {
            o.kind = CohortEffectKind::Incompatible;
            o.proto_ours_min = ours_min;
            o.proto_ours_max = ours_max;
            o.proto_cluster = cluster;
        }
        Effect::Notify(n) => {
            o.kind = CohortEffectKind::Notify;
            match n {
                Notice::DaemonSynced { generation, members } => {
                    o.notice = CohortNotice::DaemonSynced;
                    o.generation_ring = generation.ring;
                    o.generation_epoch = generation.epoch;
                    o.members = members;
                }
                Notice::GroupSynced { group, generation, members } => {
                    o.notice = CohortNotice::GroupSynced;
                    o.group = group.0;
                    o.generation_ring = generation.ring;
                    o.generation_epoch = generation.epoch;
                    o.members = members;
                }
                Notice::StaleMerge { node, partitions } => {
                    o.notice = CohortNotice::StaleMerge;
                    o.node = node.0;
                    o.partitions = partitions;
                }
                Notice::JournalRecovered { group, jid } => {
                    o.notice = CohortNotice::JournalRecovered;
                    o.group = group.0;
                    o.has_jid = true;
                    o.jid = jid.0;
                }
                Notice::JournalRecoveryFailed { group, jid, attempt } => {
                    o.notice = CohortNotice::JournalRecoveryFailed;
                    o.group = group.0;
                    o.has_jid = true;
                    o.jid = jid.0;
                    o.attempt = attempt;
                }
                Notice::Fenced { target } => {
                    o.notice = CohortNotice::Fenced;
                    o.node = target.node.0;
                    o.incarnation = target.inc.0;
                }
                Notice::FenceFailed { target, attempt } => {
                    o.notice = CohortNotice::FenceFailed;
                    o.node = target.node.0;
                    o.incarnation = target.inc.0;
                    o.attempt = attempt;
                }
                Notice::Dropped { reason } => {
                    o.notice = CohortNotice::Dropped;
                    o.drop_reason = match reason {
                        DropReason::OldGeneration => CohortDropReason::OldGeneration,
                        DropReason::StaleSender => CohortDropReason::StaleSender,
                        DropReason::NotMember => CohortDropReason::NotMember,
                        DropReason::NotSynced => CohortDropReason::NotSynced,
                        DropReason::Disagreement => CohortDropReason::Disagreement,
                        DropReason::OtherView => CohortDropReason::OtherView,
                        DropReason::NameCollision => CohortDropReason::NameCollision,
                        DropReason::AlreadyMember => CohortDropReason::AlreadyMember,
                        DropReason::TableFull => CohortDropReason::TableFull,
                        DropReason::Inapplicable => CohortDropReason::Inapplicable,
                        _ => CohortDropReason::Other,
                    };
                }
                _ => o.notice = CohortNotice::Other,
            }
        }
    }
    o
}

const EMPTY_PEER: CohortPeerStatus = CohortPeerStatus {
    node: 0,
    has_incarnation: false,
    incarnation: 0,
    started: false,
    stale: false,
    has_state: false,
};
const EMPTY_FENCE: CohortFenceStatus = CohortFenceStatus { node: 0, incarnation: 0, attempts: 0, actor: 0 };
const EMPTY_GMEMBER: CohortGroupMemberStatus =
    CohortGroupMemberStatus { node: 0, mode: CohortMode::Rw, has_jid: false, jid: 0, mounted: false };
const EMPTY_GROUP: CohortGroupStatus = CohortGroupStatus {
    group: 0,
    fs: [0; COHORT_FS_NAME_CAP],
    journals: 0,
    generation_ring: 0,
    generation_epoch: 0,
    synced: false,
    first_done: false,
    blocked: false,
    mounted_here: false,
    wait: CohortGroupWait::Nothing,
    wait_node: 0,
    wait_jid: 0,
    wait_mask: 0,
    n_members: 0,
    members: [EMPTY_GMEMBER; COHORT_MAX_NODES],
    n_recoveries: 0,
    recoveries: [CohortRecoveryStatus { jid: 0, attempts: 0 }; COHORT_MAX_RECOVERIES],
};

/// Fill `o` (zeroed or reused) from the node's status, in place.
fn status_out(node: &Node, o: &mut CohortStatus) {
    let st = node.status();
    o.node = st.node.0;
    o.incarnation = st.incarnation.0;
    o.generation_ring = st.generation.ring;
    o.generation_epoch = st.generation.epoch;
    o.anchored = st.anchored;
    o.quorate = match st.quorate {
        None => -1,
        Some(false) => 0,
        Some(true) => 1,
    };
    o.protocol = st.protocol;
    (o.daemon_wait, o.daemon_wait_node) = match st.daemon {
        DaemonWait::Nothing => (CohortDaemonWait::Nothing, 0),
        DaemonWait::Join => (CohortDaemonWait::Join, 0),
        DaemonWait::Starts => (CohortDaemonWait::Starts, 0),
        DaemonWait::Sync(n) => (CohortDaemonWait::Sync, n.0),
        DaemonWait::Stopped => (CohortDaemonWait::Stopped, 0),
    };
    o.stable = st.is_stable();
    o.last_merge_partitions = st.last_merge_partitions;
    o.fence_table_full = st.fence_table_full;
    o.n_members = st.members.len() as u32;
    o.members = [EMPTY_PEER; COHORT_MAX_NODES];
    for (o, p) in o.members.iter_mut().zip(st.members.iter()) {
        *o = CohortPeerStatus {
            node: p.node.0,
            has_incarnation: p.inc.is_some(),
            incarnation: p.inc.map_or(0, |i| i.0),
            started: p.started,
            stale: p.stale,
            has_state: p.has_state,
        };
    }
    o.n_fencing = st.fencing.len() as u32;
    o.fencing = [EMPTY_FENCE; COHORT_MAX_NODES];
    for (o, f) in o.fencing.iter_mut().zip(st.fencing.iter()) {
        *o = CohortFenceStatus {
            node: f.target.node.0,
            incarnation: f.target.inc.0,
            attempts: f.attempts,
            actor: f.actor.map_or(0, |n| n.0),
        };
    }
    o.n_groups = st.groups.len() as u32;
    for (i, og) in o.groups.iter_mut().enumerate() {
        *og = EMPTY_GROUP;
        let Some(g) = st.groups.get(i) else { continue };
        og.group = g.group.0;
        og.fs = fs_out(&g.fs);
        og.journals = g.journals;
        og.generation_ring = g.generation.ring;
        og.generation_epoch = g.generation.epoch;
        og.synced = g.synced;
        og.first_done = g.first_done;
        og.blocked = g.blocked;
        og.mounted_here = g.mounted_here;
        (og.wait, og.wait_node, og.wait_jid, og.wait_mask) = match g.wait {
            GroupWait::Nothing => (CohortGroupWait::Nothing, 0, 0, 0),
            GroupWait::DaemonSync => (CohortGroupWait::DaemonSync, 0, 0, 0),
            GroupWait::Quorum => (CohortGroupWait::Quorum, 0, 0, 0),
            GroupWait::Fencing(n) => (CohortGroupWait::Fencing, n.0, 0, 0),
            GroupWait::Starts(mask) => (CohortGroupWait::Starts, 0, 0, mask),
            GroupWait::FirstMounter(n) => (CohortGroupWait::FirstMounter, n.0, 0, 0),
            GroupWait::NoFirstMounter => (CohortGroupWait::NoFirstMounter, 0, 0, 0),
            GroupWait::Recovery(j) => (CohortGroupWait::Recovery, 0, j.0, 0),
            GroupWait::NoRecoverer(j) => (CohortGroupWait::NoRecoverer, 0, j.0, 0),
            GroupWait::Kernel => (CohortGroupWait::Kernel, 0, 0, 0),
        };
        og.n_members = g.members.len() as u32;
        for (om, m) in og.members.iter_mut().zip(g.members.iter()) {
            *om = CohortGroupMemberStatus {
                node: m.node.0,
                mode: mode_out(m.mode),
                has_jid: m.jid.is_some(),
                jid: m.jid.map_or(0, |j| j.0),
                mounted: m.mounted,
            };
        }
        og.n_recoveries = g.recoveries.len() as u32;
        for (or, (jid, attempts)) in og.recoveries.iter_mut().zip(g.recoveries.iter()) {
            *or = CohortRecoveryStatus { jid: jid.0, attempts: *attempts };
        }
    }
}

// ------------------------------------------------------------------ the ABI

/// Bytes of host memory one node needs.
#[no_mangle]
pub extern "C" fn cohort_node_size() -> usize {
    std::mem::size_of::<CohortNode>()
}

/// Alignment that memory needs.
#[no_mangle]
pub extern "C" fn cohort_node_align() -> usize {
    std::mem::align_of::<CohortNode>()
}

/// Default tuning for `node_id`/`incarnation`.
///
/// # Safety
/// `out` must be NULL or point to a writable `CohortConfig`.
#[no_mangle]
pub unsafe extern "C" fn cohort_config_default(node_id: u32, incarnation: u64, out: *mut CohortConfig) -> CohortResult {
    guard(|| {
        check_ptr(out)?;
        let c = Config::new(NodeId(node_id), Incarnation(incarnation));
        let cfg = CohortConfig {
            node_id,
            incarnation,
            fence_retry_ms: c.fence_retry_ms,
            recovery_retry_ms: c.recovery_retry_ms,
        };
        // SAFETY: checked non-null and aligned; the caller owns it.
        unsafe { out.write(cfg) };
        Ok(CohortResult::Ok)
    })
}

/// Build a node in `mem` (`size` bytes, `cohort_node_align()`-aligned);
/// `(CohortNode *)mem` is then the node handle. `incarnation` is persisted by the host
/// and strictly greater at every start.
///
/// # Safety
/// `mem` must be NULL or point to `size` writable bytes that stay valid and
/// unmoved while the node is used.
#[no_mangle]
pub unsafe extern "C" fn cohort_node_init(
    mem: *mut c_void,
    size: usize,
    node_id: u32,
    incarnation: u64,
) -> CohortResult {
    let cfg = CohortConfig { node_id, incarnation, fence_retry_ms: 1000, recovery_retry_ms: 1000 };
    // SAFETY: forwarded contract; `cfg` is a valid local.
    unsafe { cohort_node_init_with(mem, size, &cfg) }
}

/// `cohort_node_init` with explicit tuning.
///
/// # Safety
/// As `cohort_node_init`; `cfg` must be NULL or point to a `CohortConfig`.
#[no_mangle]
pub unsafe extern "C" fn cohort_node_init_with(
    mem: *mut c_void,
    size: usize,
    cfg: *const CohortConfig,
) -> CohortResult {
    guard(|| {
        check_ptr(cfg)?;
        if mem.is_null() {
            return Err(CohortResult::ErrNull);
        }
        if !mem.cast::<CohortNode>().is_aligned() {
            return Err(CohortResult::ErrMisaligned);
        }
        if size < cohort_node_size() {
            return Err(CohortResult::ErrBufferTooSmall);
        }
        // SAFETY: checked non-null and aligned.
        let cfg = unsafe { *cfg };
        let mut c = Config::new(node_id(cfg.node_id)?, Incarnation(cfg.incarnation));
        c.fence_retry_ms = cfg.fence_retry_ms;
        c.recovery_retry_ms = cfg.recovery_retry_ms;
        let h = CohortNode { magic: MAGIC, node: Node::new(c) };
        // SAFETY: `mem` is non-null, aligned for CohortNode and holds at
        // least `size_of::<CohortNode>()` writable bytes; nothing valid is
        // overwritten (the node owns no resources, so no drop is skipped).
        unsafe { mem.cast::<CohortNode>().write(h) };
        Ok(CohortResult::Ok)
    })
}

/// Mark the node memory unused (later calls return
/// `COHORT_RESULT_ERR_NOT_INITIALIZED`). The node owns no resources: the host may
/// also just free the memory.
///
/// # Safety
/// As for every `node` argument: NULL or memory passed to `cohort_node_init`.
#[no_mangle]
pub unsafe extern "C" fn cohort_node_fini(node: *mut CohortNode) -> CohortResult {
    if let Err(e) = check_ptr(node) {
        return e;
    }
    // SAFETY: non-null and aligned; only the header word is written.
    unsafe { (*node).magic = 0 };
    CohortResult::Ok
}

/// The transport's configuration id (corosync ring seq) with its members.
///
/// # Safety
/// `node` as for `cohort_node_fini`; `members` NULL (when `n_members` is 0)
/// or `n_members` readable `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn cohort_handle_ring(
    node: *mut CohortNode,
    now_ms: u64,
    ring: u64,
    members: *const u32,
    n_members: usize,
) -> CohortResult {
    // SAFETY: forwarded contracts.
    unsafe {
        with_node(node, |n| {
            let members = node_list(members, n_members)?;
            handle(n, now_ms, Input::Ring(RingEvent { ring, members }))
        })
    }
}

/// A membership change of the daemon group (CPG confchg).
///
/// # Safety
/// `node` as for `cohort_node_fini`; each array NULL (when its count is 0) or
/// holding that many readable entries.
#[no_mangle]
pub unsafe extern "C" fn cohort_handle_confchg(
    node: *mut CohortNode,
    now_ms: u64,
    members: *const u32,
    n_members: usize,
    joined: *const CohortMemberReason,
    n_joined: usize,
    left: *const CohortMemberReason,
    n_left: usize,
) -> CohortResult {
    // SAFETY: forwarded contracts.
    unsafe {
        with_node(node, |n| {
            let cc = Confchg {
                members: node_list(members, n_members)?,
                joined: reason_list(joined, n_joined)?,
                left: reason_list(left, n_left)?,
            };
            handle(n, now_ms, Input::Confchg(cc))
        })
    }
}

/// Quorum state of `ring` (a separate, unordered stream).
///
/// # Safety
/// As `cohort_handle_ring`.
#[no_mangle]
pub unsafe extern "C" fn cohort_handle_quorum(
    node: *mut CohortNode,
    now_ms: u64,
    ring: u64,
    quorate: bool,
    members: *const u32,
    n_members: usize,
) -> CohortResult {
    // SAFETY: forwarded contracts.
    unsafe {
        with_node(node, |n| {
            let members = node_list(members, n_members)?;
            handle(n, now_ms, Input::Quorum(QuorumEvent { ring, quorate, members }))
        })
    }
}

/// A message the transport delivered in agreed order (ours included).
///
/// # Safety
/// `node` as for `cohort_node_fini`; `bytes` NULL (when `len` is 0) or `len`
/// readable bytes.
#[no_mangle]
pub unsafe extern "C" fn cohort_handle_deliver(
    node: *mut CohortNode,
    now_ms: u64,
    from: u32,
    bytes: *const u8,
    len: usize,
) -> CohortResult {
    // SAFETY: forwarded contracts.
    unsafe {
        with_node(node, |n| {
            if len > COHORT_MAX_MESSAGE {
                return Err(CohortResult::ErrMessageTooLong);
            }
            let bytes = slice(bytes, len)?;
            handle(n, now_ms, Input::Deliver { from: node_id(from)?, bytes })
        })
    }
}

/// A timer set by a `COHORT_EFFECT_KIND_SET_TIMER` effect expired (stale tokens
/// are ignored).
///
/// # Safety
/// `node` as for `cohort_node_fini`.
#[no_mangle]
pub unsafe extern "C" fn cohort_handle_timer(node: *mut CohortNode, now_ms: u64, token: u64) -> CohortResult {
    // SAFETY: forwarded contract.
    unsafe { with_node(node, |n| handle(n, now_ms, Input::Timer(TimerToken(token)))) }
}

/// The fence agent finished fencing `target_node`/`target_incarnation`.
///
/// # Safety
/// `node` as for `cohort_node_fini`.
#[no_mangle]
pub unsafe extern "C" fn cohort_handle_fenced(
    node: *mut CohortNode,
    now_ms: u64,
    target_node: u32,
    target_incarnation: u64,
    ok: bool,
) -> CohortResult {
    // SAFETY: forwarded contract.
    unsafe {
        with_node(node, |n| {
            let target = Member { node: node_id(target_node)?, inc: Incarnation(target_incarnation) };
            handle(n, now_ms, Input::Fenced { target, ok })
        })
    }
}

/// The mount asked for by `COHORT_KERNEL_OP_MOUNT`/`_MOUNT_FIRST`/`_MOUNT_SPECTATOR` finished.
///
/// # Safety
/// `node` as for `cohort_node_fini`; `fs` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn cohort_handle_kernel_mount_result(
    node: *mut CohortNode,
    now_ms: u64,
    fs: *const c_char,
    ok: bool,
) -> CohortResult {
    // SAFETY: forwarded contracts.
    unsafe {
        with_node(node, |n| {
            let fs = fs_arg(fs)?;
            handle(n, now_ms, Input::Kernel(KernelEvent::MountResult { fs, ok }))
        })
    }
}

/// The first mounter replayed every journal.
///
/// # Safety
/// As `cohort_handle_kernel_mount_result`.
#[no_mangle]
pub unsafe extern "C" fn cohort_handle_kernel_first_recovery_done(
    node: *mut CohortNode,
    now_ms: u64,
    fs: *const c_char,
) -> CohortResult {
    // SAFETY: forwarded contracts.
    unsafe {
        with_node(node, |n| {
            let fs = fs_arg(fs)?;
            handle(n, now_ms, Input::Kernel(KernelEvent::FirstRecoveryDone { fs }))
        })
    }
}

/// A `COHORT_KERNEL_OP_RECOVER_JOURNAL` of `jid` finished.
///
/// # Safety
/// As `cohort_handle_kernel_mount_result`.
#[no_mangle]
pub unsafe extern "C" fn cohort_handle_kernel_recovery_done(
    node: *mut CohortNode,
    now_ms: u64,
    fs: *const c_char,
    jid: u16,
    ok: bool,
) -> CohortResult {
    // SAFETY: forwarded contracts.
    unsafe {
        with_node(node, |n| {
            let fs = fs_arg(fs)?;
            handle(n, now_ms, Input::Kernel(KernelEvent::RecoveryDone { fs, jid: Jid(jid), ok }))
        })
    }
}

/// The filesystem hit an error and must withdraw.
///
/// # Safety
/// As `cohort_handle_kernel_mount_result`.
#[no_mangle]
pub unsafe extern "C" fn cohort_handle_kernel_withdraw(
    node: *mut CohortNode,
    now_ms: u64,
    fs: *const c_char,
) -> CohortResult {
    // SAFETY: forwarded contracts.
    unsafe {
        with_node(node, |n| {
            let fs = fs_arg(fs)?;
            handle(n, now_ms, Input::Kernel(KernelEvent::Withdraw { fs }))
        })
    }
}

/// Mount `fs` (`mode` is a `CohortMode`) on a filesystem with `journals`
/// journals.
///
/// # Safety
/// As `cohort_handle_kernel_mount_result`.
#[no_mangle]
pub unsafe extern "C" fn cohort_request_mount(
    node: *mut CohortNode,
    now_ms: u64,
    fs: *const c_char,
    mode: u32,
    journals: u16,
) -> CohortResult {
    // SAFETY: forwarded contracts.
    unsafe {
        with_node(node, |n| {
            let fs = fs_arg(fs)?;
            let mode = mode_arg(mode)?;
            handle(n, now_ms, Input::Request(Request::Mount { fs, mode, journals }))
        })
    }
}

/// Unmount `fs`.
///
/// # Safety
/// As `cohort_handle_kernel_mount_result`.
#[no_mangle]
pub unsafe extern "C" fn cohort_request_unmount(node: *mut CohortNode, now_ms: u64, fs: *const c_char) -> CohortResult {
    // SAFETY: forwarded contracts.
    unsafe {
        with_node(node, |n| {
            let fs = fs_arg(fs)?;
            handle(n, now_ms, Input::Request(Request::Unmount { fs }))
        })
    }
}

/// Remount `fs` in `mode` (a `CohortMode`).
///
/// # Safety
/// As `cohort_handle_kernel_mount_result`.
#[no_mangle]
pub unsafe extern "C" fn cohort_request_remount(
    node: *mut CohortNode,
    now_ms: u64,
    fs: *const c_char,
    mode: u32,
) -> CohortResult {
    // SAFETY: forwarded contracts.
    unsafe {
        with_node(node, |n| {
            let fs = fs_arg(fs)?;
            let mode = mode_arg(mode)?;
            handle(n, now_ms, Input::Request(Request::Remount { fs, mode }))
        })
    }
}

/// Take the next effect into `*out`: `COHORT_RESULT_OK`, or `COHORT_RESULT_EMPTY`
/// (and `out->kind == COHORT_EFFECT_KIND_NONE`) when there is none.
///
/// # Safety
/// `node` as for `cohort_node_fini`; `out` NULL or a writable `CohortEffect`.
#[no_mangle]
pub unsafe extern "C" fn cohort_poll_effect(node: *mut CohortNode, out: *mut CohortEffect) -> CohortResult {
    if let Err(e) = check_ptr(out) {
        return e;
    }
    // SAFETY: forwarded contract.
    unsafe {
        with_node(node, |n| {
            let (r, e) = match n.poll_effect() {
                Some(e) => (CohortResult::Ok, effect_out(e)),
                None => (CohortResult::Empty, EMPTY_EFFECT),
            };
            // SAFETY: checked non-null and aligned; the caller owns it.
            out.write(e);
            Ok(r)
        })
    }
}

/// Encode the next message to multicast (agreed order) into `buf`: `*len`
/// is its length. `cap` must be at least `COHORT_MAX_MESSAGE` (checked:
/// `COHORT_RESULT_ERR_BUFFER_TOO_SMALL` and nothing taken). `COHORT_RESULT_EMPTY` when
/// there is nothing to send.
///
/// # Safety
/// `node` as for `cohort_node_fini`; `buf` NULL or `cap` writable bytes;
/// `len` NULL or a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn cohort_poll_transmit(
    node: *mut CohortNode,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
) -> CohortResult {
    if buf.is_null() {
        return CohortResult::ErrNull;
    }
    if let Err(e) = check_ptr(len) {
        return e;
    }
    if cap < COHORT_MAX_MESSAGE {
        return CohortResult::ErrBufferTooSmall;
    }
    // SAFETY: forwarded contract.
    unsafe {
        with_node(node, |n| {
            // SAFETY: non-null; the caller promises `cap` writable bytes.
            let buf = std::slice::from_raw_parts_mut(buf, cap);
            let (r, l) = match n.poll_transmit(buf) {
                Some(l) => (CohortResult::Ok, l),
                None => (CohortResult::Empty, 0),
            };
            // SAFETY: checked non-null and aligned.
            len.write(l);
            Ok(r)
        })
    }
}

/// A fixed-size snapshot of the node into `*out` (about 15 KiB: keep it
/// static or on a thread with a normal stack).
///
/// # Safety
/// `node` as for `cohort_node_fini`; `out` NULL or a writable `CohortStatus`.
#[no_mangle]
pub unsafe extern "C" fn cohort_status(node: *mut CohortNode, out: *mut CohortStatus) -> CohortResult {
    if let Err(e) = check_ptr(out) {
        return e;
    }
    // SAFETY: forwarded contract.
    unsafe {
        with_node(node, |n| {
            // Zero first so the in-place fill below only ever reads valid
            // values (every enum here has a 0 variant, bools are 0).
            std::ptr::write_bytes(out, 0, 1);
            // SAFETY: non-null, aligned, all-zero is a valid CohortStatus.
            status_out(n, &mut *out);
            Ok(CohortResult::Ok)
        })
    }
}

/// Is the node stopped (after `COHORT_EFFECT_KIND_RESET_SELF` or `_INCOMPATIBLE`)? Writes 0/1.
///
/// # Safety
/// `node` as for `cohort_node_fini`; `out` NULL or a writable `bool`.
#[no_mangle]
pub unsafe extern "C" fn cohort_is_stopped(node: *mut CohortNode, out: *mut bool) -> CohortResult {
    if let Err(e) = check_ptr(out) {
        return e;
    }
    // SAFETY: forwarded contracts.
    unsafe {
        with_node(node, |n| {
            out.write(n.is_stopped());
            Ok(CohortResult::Ok)
        })
    }
}

/// A static, NUL-terminated name for a result code (for logs).
#[no_mangle]
pub extern "C" fn cohort_result_str(code: i32) -> *const c_char {
    let s: &'static [u8] = match code {
        0 => b"ok\0",
        1 => b"empty\0",
        -1 => b"null pointer\0",
        -2 => b"misaligned pointer\0",
        -3 => b"buffer too small\0",
        -4 => b"node not initialized\0",
        -5 => b"invalid argument\0",
        -6 => b"too many entries\0",
        -7 => b"message too long\0",
        -8 => b"invalid filesystem name\0",
        -10 => b"backpressure: drain effects and transmits\0",
        -11 => b"node stopped\0",
        -12 => b"no ring yet\0",
        -13 => b"ring went back\0",
        -14 => b"malformed message\0",
        -15 => b"sender mismatch\0",
        -16 => b"invalid journal count\0",
        -17 => b"already mounted\0",
        -18 => b"not mounted\0",
        -19 => b"too many groups\0",
        -20 => b"busy\0",
        -21 => b"unknown filesystem\0",
        -22 => b"unexpected kernel event\0",
        -23 => b"fence not requested\0",
        -24 => b"confchg dropped this node\0",
        -98 => b"panic (node poisoned)\0",
        -99 => b"node poisoned\0",
        _ => b"unknown result\0",
    };
    s.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_caught_and_poisons_the_node() {
        let mut mem = vec![0u64; cohort_node_size().div_ceil(8)];
        let node: *mut CohortNode = mem.as_mut_ptr().cast();
        unsafe {
            assert_eq!(cohort_node_init(node.cast(), mem.len() * 8, 1, 1), CohortResult::Ok);
            let quiet = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            let r = with_node(node, |_| panic!("boom"));
            std::panic::set_hook(quiet);
            assert_eq!(r, CohortResult::ErrPanic);
            assert_eq!(cohort_handle_timer(node, 0, 1), CohortResult::ErrPoisoned);
            // Re-initialising the memory gives a fresh node.
            assert_eq!(cohort_node_init(node.cast(), mem.len() * 8, 1, 2), CohortResult::Ok);
            assert_eq!(cohort_handle_timer(node, 0, 1), CohortResult::Ok);
        }
    }

    #[test]
    fn out_struct_sizes() {
        // Documented in README.md ("Status").
        let st = std::mem::size_of::<CohortStatus>();
        assert!(st < 16 * 1024, "CohortStatus is {st} bytes");
        assert!(std::mem::size_of::<CohortEffect>() <= 128, "{}", std::mem::size_of::<CohortEffect>());
    }
}
