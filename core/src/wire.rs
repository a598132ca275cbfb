//! Wire format: a fixed, versioned header followed by a postcard body.
//!
//! ```text
//! offset size field
//!   0     2   magic  b"CH"
//!   2     1   wire version (1)
//!   3     1   message type
//!   4     4   sender nodeid (LE)
//!   8     8   sender incarnation (LE)
//!  16     8   generation.ring (LE)
//!  24     4   generation.epoch (LE)
//!  28     4   group id (LE)
//!  32     8   view: the sender's transport ring when it sent (LE)
//!  40   ...   body (postcard), must be consumed exactly
//! ```
//!
//! [`decode`] turns bytes into a validated [`Message`] (the smoltcp
//! Packet/Repr split): the header is checked field by field, the body must
//! match the type, be fully consumed and pass [`Body::validate`]. Nothing is
//! applied by decoding; a decode error changes no state anywhere.

use crate::gcs::{NodeList, MAX_NODES};
use crate::ids::{Generation, GroupId, Incarnation, Jid, Member, NodeId};
use serde::{Deserialize, Serialize};

pub const MAGIC: [u8; 2] = *b"CH";
pub const WIRE_VERSION: u8 = 2;
pub const HEADER_LEN: usize = 40;
/// Largest encoded message ([`cohort_types::profile::MESSAGE`]). The
/// largest message of every kind fits (checked by
/// `core/tests/wire_props.rs`, `the_largest_message_of_every_kind_fits`).
pub const MAX_MESSAGE: usize = cohort_types::MAX_MESSAGE;
/// Longest filesystem name.
pub const FS_NAME_LEN: usize = 32;
/// Most journals a filesystem may have.
pub const MAX_JOURNALS: usize = cohort_types::profile::JOURNALS;
/// Most journal recoveries one group tracks at once.
pub const MAX_RECOVERIES: usize = 2 * MAX_NODES;
/// Most mount groups.
pub const MAX_GROUPS: usize = cohort_types::profile::GROUPS;

pub type FsName = heapless::String<FS_NAME_LEN>;

/// Protocol versions this build speaks.
pub const PROTO_MIN: u16 = 1;
pub const PROTO_MAX: u16 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    pub kind: MsgKind,
    pub sender: Member,
    pub generation: Generation,
    pub group: GroupId,
    /// The transport view (ring id) the sender was in when it sent: a
    /// message is applied only in the view it was sent in (a transport may
    /// deliver a message in a later view than the one it was sent in; what
    /// crossed a view change is dropped by everyone, the sender included,
    /// and sent again if still needed).
    pub view: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum MsgKind {
    DaemonStart = 1,
    DaemonSync = 2,
    Mount = 3,
    Unmount = 4,
    Remount = 5,
    Withdraw = 6,
    FenceResult = 7,
    MountStart = 8,
    MountDone = 9,
    FirstDone = 10,
    RecoveryResult = 11,
    MountState = 12,
}

impl MsgKind {
    pub const fn from_u8(v: u8) -> Option<MsgKind> {
        Some(match v {
            1 => MsgKind::DaemonStart,
            2 => MsgKind::DaemonSync,
            3 => MsgKind::Mount,
            4 => MsgKind::Unmount,
            5 => MsgKind::Remount,
            6 => MsgKind::Withdraw,
            7 => MsgKind::FenceResult,
            8 => MsgKind::MountStart,
            9 => MsgKind::MountDone,
            10 => MsgKind::FirstDone,
            11 => MsgKind::RecoveryResult,
            12 => MsgKind::MountState,
            _ => return None,
        })
    }
}

/// How a member mounts a filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Mode {
    /// Read-write: holds a journal, may be first mounter, recovers journals.
    Rw,
    /// Read-only: holds a journal (so it can remount rw), never writes it,
    /// never recovers others' journals; its failure needs no replay.
    Ro,
    /// Spectator: no journal, never recovers, never first mounter.
    Spectator,
}

impl Mode {
    pub const fn needs_journal(self) -> bool {
        !matches!(self, Mode::Spectator)
    }
    pub const fn writes(self) -> bool {
        matches!(self, Mode::Rw)
    }
}

/// A fence outcome known to some member, broadcast and applied in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FenceResult {
    pub target: Member,
    pub attempt: u16,
    pub ok: bool,
}

/// The daemon-group state transfer each member sends after every change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DaemonStart {
    pub proto_min: u16,
    pub proto_max: u16,
    /// Completed a mount-group sync since this incarnation started.
    pub has_state: bool,
    /// The generation in the header is the group's numbering (else the
    /// sender joined mid-ring and counts its own events; its start is then a
    /// pure self-description).
    pub anchored: bool,
    /// Generation of the sender's last completed daemon sync; with
    /// `last_leader` its lineage (corosync gives both sides of a split the
    /// same ring seq, the leaders of their cycles differ).
    pub last_synced: Generation,
    /// Who led (sent the `DaemonSync` of) that cycle.
    pub last_leader: NodeId,
    /// Digest of the messages the sender applied since that cycle.
    pub acted: u64,
    /// The latest generation at which the sender completed a daemon cycle
    /// in a ring it knew to be quorate: pre-merge evidence of quorum that
    /// does not depend on when the merge ring's own quorum report arrives.
    pub quorate_synced: Option<Generation>,
    /// Bit i: the i-th current member (sorted) was recorded failed by the
    /// sender (diagnostic; the merge verdict groups partitions by
    /// `last_synced`).
    pub failed_mask: u32,
    /// Bit i: the sender's partition fenced the i-th current member in its
    /// current incarnation.
    pub fenced_mask: u32,
    /// Join generations of members that have not completed a daemon sync
    /// (anchored senders only): how a joiner learns the numbering.
    pub joiners: heapless::Vec<(NodeId, Generation), MAX_NODES>,
    /// Failed members with state whose fencing the sender still waits
    /// for, with the failed attempts it counted (merged with max at the
    /// cycle, so every member agrees on who acts next).
    pub fence_pending: heapless::Vec<PendingFence, MAX_NODES>,
    /// Members the sender knows were fenced successfully (so a member that
    /// missed the result does not bring the target back).
    pub fenced: heapless::Vec<Member, MAX_NODES>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PendingFence {
    pub target: Member,
    pub attempts: u16,
}

/// One mount group's logical membership, in the daemon sync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GroupSnap {
    pub fs: FsName,
    pub journals: u16,
    pub members: heapless::Vec<(NodeId, Mode), MAX_NODES>,
}

/// Sent by the sync leader once all daemon starts of a generation arrived:
/// the authoritative logical membership of every mount group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DaemonSync {
    pub groups: heapless::Vec<GroupSnap, MAX_GROUPS>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MountReq {
    pub fs: FsName,
    pub mode: Mode,
    pub journals: u16,
}

/// What an old member knows of one old member of a mount group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MemberDesc {
    pub member: Member,
    pub mode: Mode,
    pub jid: Option<Jid>,
    pub mounted: bool,
}

/// A journal waiting for replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Recovery {
    pub jid: Jid,
    /// The failed member that wrote it (fencing of it gates the replay).
    pub owner: Member,
    pub attempts: u16,
    /// The member replaying it in this attempt (`NodeId(0)`: nobody can
    /// yet), fixed when the attempt starts (agreed), so a growing set of
    /// recoverers never starts a second replay of the same journal.
    pub actor: NodeId,
}

impl Recovery {
    pub fn actor(&self) -> Option<NodeId> {
        self.actor.is_valid().then_some(self.actor)
    }
}

/// The mount-group state transfer (gfs_controld's START).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MountStart {
    pub mode: Mode,
    pub journals: u16,
    /// The sender completed a sync of this group before this change.
    pub old: bool,
    /// Old senders: first-mount recovery is done.
    pub first_done: bool,
    /// Old senders: digest of the group state they hold (every old member
    /// holds the same state; receivers check it).
    pub digest: u64,
}

/// The group state, sent by the lowest old member just before its START:
/// one full description plus every new member's START is the whole state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MountState {
    pub journals: u16,
    pub first_done: bool,
    /// The member doing the first mount (agreed; kept until it finishes or
    /// leaves).
    pub first_mounter: Option<NodeId>,
    /// All old members.
    pub members: heapless::Vec<MemberDesc, MAX_NODES>,
    /// Journals needing recovery.
    pub recoveries: heapless::Vec<Recovery, MAX_RECOVERIES>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RecoveryResult {
    pub jid: Jid,
    pub attempt: u16,
    pub ok: bool,
}

/// Message bodies (no allocator: large variants stay inline).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Body {
    DaemonStart(DaemonStart),
    DaemonSync(DaemonSync),
    Mount(MountReq),
    Unmount,
    Remount(Mode),
    Withdraw,
    FenceResult(FenceResult),
    MountStart(MountStart),
    MountState(MountState),
    MountDone { ok: bool },
    FirstDone,
    RecoveryResult(RecoveryResult),
}

impl Body {
    pub fn kind(&self) -> MsgKind {
        match self {
            Body::DaemonStart(_) => MsgKind::DaemonStart,
            Body::DaemonSync(_) => MsgKind::DaemonSync,
            Body::Mount(_) => MsgKind::Mount,
            Body::Unmount => MsgKind::Unmount,
            Body::Remount(_) => MsgKind::Remount,
            Body::Withdraw => MsgKind::Withdraw,
            Body::FenceResult(_) => MsgKind::FenceResult,
            Body::MountStart(_) => MsgKind::MountStart,
            Body::MountState(_) => MsgKind::MountState,
            Body::MountDone { .. } => MsgKind::MountDone,
            Body::FirstDone => MsgKind::FirstDone,
            Body::RecoveryResult(_) => MsgKind::RecoveryResult,
        }
    }

    /// Semantic validation beyond what the types enforce.
    pub fn validate(&self) -> Result<(), WireError> {
        match self {
            Body::DaemonStart(s) => {
                if s.proto_min == 0 || s.proto_min > s.proto_max {
                    return Err(WireError::Invalid("protocol range"));
                }
                if s.joiners.iter().any(|(n, _)| !n.is_valid())
                    || s.fence_pending.iter().any(|m| !m.target.node.is_valid())
                    || s.fenced.iter().any(|m| !m.node.is_valid())
                {
                    return Err(WireError::Invalid("node id 0"));
                }
                Ok(())
            }
            Body::DaemonSync(s) => {
                for g in s.groups.iter() {
                    valid_fs(&g.fs)?;
                    valid_journals(g.journals)?;
                    if !strictly_sorted(g.members.iter().map(|m| m.0)) {
                        return Err(WireError::Invalid("group members not sorted"));
                    }
                }
                Ok(())
            }
            Body::Mount(m) => {
                valid_fs(&m.fs)?;
                valid_journals(m.journals)
            }
            Body::MountStart(s) => valid_journals(s.journals),
            Body::MountState(s) => {
                valid_journals(s.journals)?;
                if !strictly_sorted(s.members.iter().map(|m| m.member.node)) {
                    return Err(WireError::Invalid("state members not sorted"));
                }
                for m in s.members.iter() {
                    if let Some(j) = m.jid {
                        if usize::from(j.0) >= usize::from(s.journals) {
                            return Err(WireError::Invalid("jid out of range"));
                        }
                        if !m.mode.needs_journal() {
                            return Err(WireError::Invalid("spectator with journal"));
                        }
                    }
                }
                for r in s.recoveries.iter() {
                    if usize::from(r.jid.0) >= usize::from(s.journals) {
                        return Err(WireError::Invalid("recovery jid out of range"));
                    }
                }
                // Every holder can become a recovery (the core gives out a
                // journal only while this holds).
                if s.members.iter().filter(|m| m.jid.is_some()).count() + s.recoveries.len() > MAX_RECOVERIES {
                    return Err(WireError::Invalid("more journals held and awaiting replay than a group tracks"));
                }
                // Journal exclusivity: each journal held once, and a held
                // journal is not awaiting recovery.
                for (i, a) in s.members.iter().enumerate() {
                    let Some(j) = a.jid else { continue };
                    if s.members.iter().skip(i + 1).any(|b| b.jid == Some(j)) || s.recoveries.iter().any(|r| r.jid == j)
                    {
                        return Err(WireError::Invalid("journal held twice"));
                    }
                }
                for (i, a) in s.recoveries.iter().enumerate() {
                    if s.recoveries.iter().skip(i + 1).any(|b| b.jid == a.jid) {
                        return Err(WireError::Invalid("journal recovered twice"));
                    }
                }
                Ok(())
            }
            Body::RecoveryResult(r) => {
                if usize::from(r.jid.0) >= MAX_JOURNALS {
                    return Err(WireError::Invalid("jid out of range"));
                }
                Ok(())
            }
            Body::FenceResult(f) => {
                if !f.target.node.is_valid() {
                    return Err(WireError::Invalid("node id 0"));
                }
                Ok(())
            }
            Body::Unmount | Body::Remount(_) | Body::Withdraw | Body::MountDone { .. } | Body::FirstDone => Ok(()),
        }
    }
}

fn strictly_sorted(mut it: impl Iterator<Item = NodeId>) -> bool {
    let Some(mut prev) = it.next() else { return true };
    if !prev.is_valid() {
        return false;
    }
    for n in it {
        if n <= prev {
            return false;
        }
        prev = n;
    }
    true
}

fn valid_fs(fs: &FsName) -> Result<(), WireError> {
    if fs.is_empty()
        || !fs.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.' || b == b':')
    {
        return Err(WireError::Invalid("filesystem name"));
    }
    Ok(())
}

fn valid_journals(j: u16) -> Result<(), WireError> {
    if j == 0 || usize::from(j) > MAX_JOURNALS {
        return Err(WireError::Invalid("journal count"));
    }
    Ok(())
}

/// Check a filesystem name the way the wire does (for operator input).
pub fn fs_name(name: &str) -> Result<FsName, WireError> {
    let mut s = FsName::new();
    s.push_str(name).map_err(|_| WireError::Invalid("filesystem name too long"))?;
    valid_fs(&s)?;
    Ok(s)
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Message {
    pub header: Header,
    pub body: Body,
}

/// Why bytes were rejected. Decoding never changes state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum WireError {
    Truncated,
    Oversize,
    BadMagic,
    UnsupportedVersion(u8),
    UnknownType(u8),
    InvalidSender,
    /// The body did not decode as its type's representation.
    Body,
    /// Bytes left after the body.
    Trailing,
    Invalid(&'static str),
    /// The output buffer is too small.
    BufferTooSmall,
}

/// Decode and validate `bytes` into a new [`Message`].
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    let mut m = Message::placeholder();
    decode_into(bytes, &mut m)?;
    Ok(m)
}

/// Decode and validate into `out` (no large value moves: the core's hot
/// path). On error `out` holds an unspecified valid value; nothing else
/// changed.
pub fn decode_into(bytes: &[u8], out: &mut Message) -> Result<(), WireError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(WireError::Oversize);
    }
    let h = bytes.get(..HEADER_LEN).ok_or(WireError::Truncated)?;
    if h[0..2] != MAGIC {
        return Err(WireError::BadMagic);
    }
    if h[2] != WIRE_VERSION {
        return Err(WireError::UnsupportedVersion(h[2]));
    }
    let kind = MsgKind::from_u8(h[3]).ok_or(WireError::UnknownType(h[3]))?;
    let node = NodeId(le32(&h[4..8]));
    if !node.is_valid() {
        return Err(WireError::InvalidSender);
    }
    let header = Header {
        kind,
        sender: Member { node, inc: Incarnation(le64(&h[8..16])) },
        generation: Generation { ring: le64(&h[16..24]), epoch: le32(&h[24..28]) },
        group: GroupId(le32(&h[28..32])),
        view: le64(&h[32..40]),
    };
    let rest = &bytes[HEADER_LEN..];
    match kind {
        MsgKind::DaemonStart => out.body = Body::DaemonStart(take_all(rest)?),
        MsgKind::DaemonSync => out.body = Body::DaemonSync(take_all(rest)?),
        MsgKind::Mount => out.body = Body::Mount(take_all(rest)?),
        MsgKind::Unmount => out.body = empty(rest, Body::Unmount)?,
        MsgKind::Remount => out.body = Body::Remount(take_all(rest)?),
        MsgKind::Withdraw => out.body = empty(rest, Body::Withdraw)?,
        MsgKind::FenceResult => out.body = Body::FenceResult(take_all(rest)?),
        MsgKind::MountStart => out.body = Body::MountStart(take_all(rest)?),
        MsgKind::MountState => out.body = Body::MountState(take_all(rest)?),
        MsgKind::MountDone => out.body = Body::MountDone { ok: take_all(rest)? },
        MsgKind::FirstDone => out.body = empty(rest, Body::FirstDone)?,
        MsgKind::RecoveryResult => out.body = Body::RecoveryResult(take_all(rest)?),
    }
    out.body.validate()?;
    let daemon_level = matches!(kind, MsgKind::DaemonStart | MsgKind::DaemonSync | MsgKind::FenceResult);
    if daemon_level != (header.group == GroupId::DAEMON) {
        return Err(WireError::Invalid("group id does not fit the message type"));
    }
    if let Body::Mount(m) = &out.body {
        if GroupId::of_fs(&m.fs) != header.group {
            return Err(WireError::Invalid("group id does not match filesystem name"));
        }
    }
    out.header = header;
    Ok(())
}

fn take_all<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T, WireError> {
    let (v, tail) = take(b)?;
    if !tail.is_empty() {
        return Err(WireError::Trailing);
    }
    Ok(v)
}

fn empty(rest: &[u8], body: Body) -> Result<Body, WireError> {
    if rest.is_empty() {
        Ok(body)
    } else {
        Err(WireError::Trailing)
    }
}

impl Message {
    /// A small valid value to decode into.
    pub fn placeholder() -> Message {
        Message {
            header: Header {
                kind: MsgKind::Unmount,
                sender: Member { node: NodeId(1), inc: Incarnation(0) },
                generation: Generation::ZERO,
                group: GroupId(1),
                view: 0,
            },
            body: Body::Unmount,
        }
    }
}

fn take<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<(T, &'a [u8]), WireError> {
    postcard::take_from_bytes(b).map_err(|_| WireError::Body)
}

fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_le_bytes(a)
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_le_bytes(a)
}

/// Encode into `buf`, returning the length used.
pub fn encode(msg: &Message, buf: &mut [u8]) -> Result<usize, WireError> {
    let h = &msg.header;
    let kind = msg.body.kind();
    match &msg.body {
        Body::DaemonStart(b) => encode_parts(h, kind, Some(b), buf),
        Body::DaemonSync(b) => encode_parts(h, kind, Some(b), buf),
        Body::Mount(b) => encode_parts(h, kind, Some(b), buf),
        Body::Unmount | Body::Withdraw | Body::FirstDone => encode_parts::<()>(h, kind, None, buf),
        Body::Remount(b) => encode_parts(h, kind, Some(b), buf),
        Body::FenceResult(b) => encode_parts(h, kind, Some(b), buf),
        Body::MountStart(b) => encode_parts(h, kind, Some(b), buf),
        Body::MountState(b) => encode_parts(h, kind, Some(b), buf),
        Body::MountDone { ok } => encode_parts(h, kind, Some(ok), buf),
        Body::RecoveryResult(b) => encode_parts(h, kind, Some(b), buf),
    }
}

/// Encode a header (its `kind` is replaced by `kind`) and a body given by
/// reference, without building a [`Message`].
pub fn encode_parts<T: Serialize>(
    h: &Header,
    kind: MsgKind,
    body: Option<&T>,
    buf: &mut [u8],
) -> Result<usize, WireError> {
    if buf.len() < HEADER_LEN {
        return Err(WireError::BufferTooSmall);
    }
    buf[0..2].copy_from_slice(&MAGIC);
    buf[2] = WIRE_VERSION;
    buf[3] = kind as u8;
    buf[4..8].copy_from_slice(&h.sender.node.0.to_le_bytes());
    buf[8..16].copy_from_slice(&h.sender.inc.0.to_le_bytes());
    buf[16..24].copy_from_slice(&h.generation.ring.to_le_bytes());
    buf[24..28].copy_from_slice(&h.generation.epoch.to_le_bytes());
    buf[28..32].copy_from_slice(&h.group.0.to_le_bytes());
    buf[32..40].copy_from_slice(&h.view.to_le_bytes());
    let lim = buf.len().min(MAX_MESSAGE);
    let used = match body {
        Some(b) => put(b, &mut buf[HEADER_LEN..lim])?,
        None => 0,
    };
    Ok(HEADER_LEN + used)
}

fn put<T: Serialize>(v: &T, out: &mut [u8]) -> Result<usize, WireError> {
    postcard::to_slice(v, out).map(|s| s.len()).map_err(|_| WireError::BufferTooSmall)
}

/// Members of a list as a bitmask over `of` (sorted); entries not in `of`
/// are ignored.
pub fn mask_of(of: &NodeList, f: impl Fn(NodeId) -> bool) -> u32 {
    let mut m = 0u32;
    for (i, n) in of.iter().enumerate() {
        if f(*n) {
            m |= 1 << (i as u32);
        }
    }
    m
}
