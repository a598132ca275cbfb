//! Wire format of the datagram transport.
//!
//! A datagram is a cleartext [`Header`] (authenticated as associated data),
//! followed by the encrypted *plaintext*, followed by the 16-byte
//! Poly1305 tag:
//!
//! ```text
//! +---------+-----------+-----------+-----------+---------+-----------------+-----+
//! | version | sender u32| inc u64   | counter u64| dest u32| frames (sealed) | tag |
//! +---------+-----------+-----------+-----------+---------+-----------------+-----+
//!   1         4           8           8            4        <= MAX_PLAIN       16
//! ```
//!
//! All integers are little endian. `dest` is 0 for a datagram meant for every
//! node, or the node id of the single intended receiver (so a captured
//! unicast cannot be replayed to another node). The plaintext is a
//! concatenation of one or more [`Frame`]s, each a type byte followed by its
//! fixed or counted body; several small frames share one datagram (batching).
//! The payload of `DATA` and `SEQ` frames is a *unit*: a 4-byte chunk header
//! and up to `MAX_PAYLOAD` bytes of message (see [`super::frag`]).
//!
//! Decoding validates everything a peer could get wrong (counts, lengths,
//! sortedness, node id zero) and never panics; the encoder sizes every frame
//! exactly ([`Frame::encoded_len`]) so the transmit path can pack datagrams
//! without partial writes.

use super::frag::MAX_UNIT;
use super::MAX_DATAGRAM;
use crate::gcs::MAX_NODES;
use crate::ids::{Incarnation, Member, NodeId};

/// Protocol version byte, first byte of every datagram.
/// (0xC2: 64-bit view seqs, views named by seq + leader + its incarnation,
/// no `max_seq` fields; issue 15.)
pub(super) const VERSION: u8 = 0xC2;
/// Length of the cleartext header.
pub(super) const HEADER_LEN: usize = 25;
/// Length of the Poly1305 tag.
pub(super) const TAG_LEN: usize = 16;
/// Largest plaintext (frames) a datagram can carry.
pub(super) const MAX_PLAIN: usize = MAX_DATAGRAM - HEADER_LEN - TAG_LEN;

/// A list of members (node + incarnation), sorted by node id, one entry per
/// node.
pub(super) type MemberList = heapless::Vec<Member, MAX_NODES>;

/// Malformed input. Only reported as a count: the details are not useful to
/// the adapter and must not be attacker-amplifiable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Malformed;

/// The writer ran out of room (the caller checked `encoded_len` first, so
/// this only guards against bugs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Full;

/// Cleartext datagram header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub sender: NodeId,
    pub inc: Incarnation,
    /// Per (sender, incarnation) datagram counter, starting at 1.
    pub counter: u64,
    /// 0 = all nodes, else the only intended receiver.
    pub dest: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let mut w = Writer::new(&mut out);
        // Infallible: the array is exactly HEADER_LEN long.
        let _ = w.u8(VERSION);
        let _ = w.u32(self.sender.0);
        let _ = w.u64(self.inc.0);
        let _ = w.u64(self.counter);
        let _ = w.u32(self.dest);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Header, Malformed> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return Err(Malformed);
        }
        let sender = NodeId(r.u32()?);
        let inc = Incarnation(r.u64()?);
        let counter = r.u64()?;
        let dest = r.u32()?;
        if !sender.is_valid() || counter == 0 {
            return Err(Malformed);
        }
        Ok(Header { sender, inc, counter, dest })
    }

    /// The 24-byte XChaCha20 nonce: sender, incarnation, counter, zero pad.
    /// Unique as long as a (node, incarnation) pair is never reused and the
    /// counter never repeats (it is a u64 that only grows).
    pub fn nonce(&self) -> [u8; 24] {
        let mut n = [0u8; 24];
        let mut w = Writer::new(&mut n);
        let _ = w.u32(self.sender.0);
        let _ = w.u64(self.inc.0);
        let _ = w.u64(self.counter);
        n
    }
}

/// Bounds-checked little-endian writer over a byte slice.
pub(super) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn bytes(&mut self, b: &[u8]) -> Result<(), Full> {
        let end = self.pos.checked_add(b.len()).ok_or(Full)?;
        let dst = self.buf.get_mut(self.pos..end).ok_or(Full)?;
        dst.copy_from_slice(b);
        self.pos = end;
        Ok(())
    }

    pub fn u8(&mut self, v: u8) -> Result<(), Full> {
        self.bytes(&[v])
    }

    pub fn u16(&mut self, v: u16) -> Result<(), Full> {
        self.bytes(&v.to_le_bytes())
    }

    pub fn u32(&mut self, v: u32) -> Result<(), Full> {
        self.bytes(&v.to_le_bytes())
    }

    pub fn u64(&mut self, v: u64) -> Result<(), Full> {
        self.bytes(&v.to_le_bytes())
    }
}

/// Bounds-checked little-endian reader.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[cfg(feature = "craft")]
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self.pos.checked_add(n).ok_or(Malformed)?;
        let s = self.buf.get(self.pos..end).ok_or(Malformed)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let s = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn node(&mut self) -> Result<NodeId, Malformed> {
        let n = NodeId(self.u32()?);
        if n.is_valid() {
            Ok(n)
        } else {
            Err(Malformed)
        }
    }

    fn member(&mut self) -> Result<Member, Malformed> {
        Ok(Member { node: self.node()?, inc: Incarnation(self.u64()?) })
    }

    fn count(&mut self) -> Result<usize, Malformed> {
        let n = usize::from(self.u8()?);
        if n > MAX_NODES {
            return Err(Malformed);
        }
        Ok(n)
    }

    /// A counted member list; strictly increasing node ids when `sorted`.
    fn members(&mut self, sorted: bool) -> Result<MemberList, Malformed> {
        let n = self.count()?;
        let mut l = MemberList::new();
        for _ in 0..n {
            let m = self.member()?;
            if sorted {
                if let Some(last) = l.last() {
                    if last.node >= m.node {
                        return Err(Malformed);
                    }
                }
            }
            l.push(m).map_err(|_| Malformed)?;
        }
        Ok(l)
    }

    fn payload(&mut self) -> Result<&'a [u8], Malformed> {
        let len = usize::from(self.u16()?);
        if len > MAX_UNIT {
            return Err(Malformed);
        }
        self.bytes(len)
    }
}

/// Identity of an installed view: its id (the view seq, see the module docs
/// of `vs::view`) plus the leader (coordinator and sequencer) that installed
/// it and the leader's incarnation. Two partitions can install the same seq
/// (with different leaders), and a whole-cluster restart reuses seqs (with
/// new incarnations); the key tells them all apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ViewKey {
    pub id: u64,
    pub leader: NodeId,
    pub leader_inc: Incarnation,
}

impl ViewKey {
    fn encode(&self, w: &mut Writer<'_>) -> Result<(), Full> {
        w.u64(self.id)?;
        w.u32(self.leader.0)?;
        w.u64(self.leader_inc.0)
    }

    fn decode(r: &mut Reader<'_>) -> Result<ViewKey, Malformed> {
        let id = r.u64()?;
        let leader = r.node()?;
        if id == 0 {
            return Err(Malformed);
        }
        Ok(ViewKey { id, leader, leader_inc: Incarnation(r.u64()?) })
    }
}

/// Periodic liveness + state beacon (broadcast).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Heartbeat {
    /// The sender's installed view.
    pub view: ViewKey,
    /// Coordinator of the proposal the sender is frozen on (0 = none).
    pub acc_coord: u32,
    pub acc_counter: u32,
    /// Highest contiguously received sequence number in `view` (an ack).
    pub contig: u64,
    /// Highest sequence number the sender knows of in `view` (the
    /// sequencer's last assigned one, so receivers detect tail loss).
    pub high: u64,
    /// Stability point the sender knows of.
    pub stable: u64,
    /// Bit 0: never installed a view with others (fresh process).
    pub flags: u8,
}

impl Heartbeat {
    /// A heartbeat in `view` that knows nothing more (tests, crafted frames).
    #[cfg(any(test, feature = "craft"))]
    pub(super) fn bare(view: ViewKey) -> Heartbeat {
        Heartbeat { view, acc_coord: 0, acc_counter: 0, contig: 0, high: 0, stable: 0, flags: 0 }
    }
}

/// A message sequenced in a view (sequencer broadcast or retransmission).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SeqFrame<'a> {
    pub view: u64,
    pub gseq: u64,
    pub stable: u64,
    pub origin: NodeId,
    pub sender_seq: u64,
    pub payload: &'a [u8],
}

/// Member -> coordinator: "frozen on your proposal; here is my state".
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FlushOk {
    pub counter: u32,
    /// The view the member is leaving.
    pub old: ViewKey,
    /// Highest message of `old` the member holds contiguously and may have
    /// delivered (its freeze point).
    pub cf: u64,
    /// The member never installed a view with others.
    pub fresh: bool,
    /// Members of `old` known to have left cleanly.
    pub leavers: MemberList,
}

/// One old-view group in a [`SyncMsg`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SyncGroup {
    pub old: ViewKey,
    /// Every member of the group delivers exactly the messages 1..=target.
    pub target: u64,
    /// A member of the group holding all of them: its index in the
    /// proposal's members (on the wire a flag of its `group_of` entry).
    pub holder: u8,
}

/// Coordinator -> all: the agreed outcome of the flush.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SyncMsg {
    pub counter: u32,
    pub new_view: u64,
    pub groups: heapless::Vec<SyncGroup, MAX_NODES>,
    /// Processes that left cleanly (reason `Leave` rather than `NodeDown`).
    pub leavers: MemberList,
    /// Bit i: member i of the proposal is fresh (reason `Join`, not `NodeUp`).
    /// On the wire a flag of its `group_of` entry.
    pub fresh_mask: u32,
    /// Per member of the proposal: the index in `groups` of the old view it
    /// comes from, so every member knows its transitional set (who moves
    /// with it from its old view).
    pub group_of: heapless::Vec<u8, MAX_NODES>,
}

/// `group_of` entry on the wire: group index in the low bits, and flags.
const GROUP_INDEX: u8 = 0x3f;
const GROUP_HOLDER: u8 = 0x40;
const GROUP_FRESH: u8 = 0x80;
const _: () = assert!(MAX_NODES <= GROUP_INDEX as usize);

const T_HEARTBEAT: u8 = 1;
const T_LEAVE: u8 = 2;
const T_DATA: u8 = 3;
const T_SEQ: u8 = 4;
const T_NAK: u8 = 5;
const T_ACK: u8 = 6;
const T_PROPOSE: u8 = 7;
const T_FLUSH_OK: u8 = 8;
const T_SYNC: u8 = 9;
const T_SYNC_DONE: u8 = 10;
const T_INSTALL: u8 = 11;
const T_RESEND: u8 = 12;

/// Encoded sizes, for the compile-time checks below.
const VIEW_KEY_LEN: usize = 8 + 4 + 8;
const HEARTBEAT_LEN: usize = 1 + VIEW_KEY_LEN + 4 + 4 + 8 + 8 + 8 + 1;
const MEMBER_LEN: usize = 12;
const SEQ_OVERHEAD: usize = 1 + 8 + 8 + 8 + 4 + 8 + 2;
const DATA_OVERHEAD: usize = 1 + 8 + 8 + 2;
const PROPOSE_MAX: usize = 1 + 4 + 1 + MAX_NODES * MEMBER_LEN;
const FLUSH_OK_MAX: usize = 1 + 4 + VIEW_KEY_LEN + 8 + 1 + 1 + MAX_NODES * MEMBER_LEN;
const SYNC_GROUP_LEN: usize = VIEW_KEY_LEN + 8;
const SYNC_MAX: usize = 1 + 4 + 8 + 1 + MAX_NODES * SYNC_GROUP_LEN + 1 + MAX_NODES * MEMBER_LEN + 1 + MAX_NODES;

// Every frame fits in an empty datagram, so the transmit path always makes
// progress, and the fresh bitmask covers every possible member.
const _: () = assert!(SEQ_OVERHEAD + MAX_UNIT <= MAX_PLAIN);
const _: () = assert!(DATA_OVERHEAD + MAX_UNIT <= MAX_PLAIN);
const _: () = assert!(PROPOSE_MAX <= MAX_PLAIN);
const _: () = assert!(FLUSH_OK_MAX <= MAX_PLAIN);
const _: () = assert!(SYNC_MAX <= MAX_PLAIN);
const _: () = assert!(HEARTBEAT_LEN <= MAX_PLAIN);
const _: () = assert!(MAX_NODES <= 32);
const _: () = assert!(MAX_UNIT <= u16::MAX as usize);

/// One protocol frame. Borrowed payloads point into the decrypted datagram.
/// (`SYNC` is much larger than the rest; frames only live on the stack.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Frame<'a> {
    Heartbeat(Heartbeat),
    /// The sender leaves the group cleanly.
    Leave,
    /// Member -> sequencer: a message to be ordered.
    Data {
        view: u64,
        sender_seq: u64,
        payload: &'a [u8],
    },
    Seq(SeqFrame<'a>),
    /// Please retransmit `lo..=hi` of `view`.
    Nak {
        view: u64,
        lo: u64,
        hi: u64,
    },
    /// Member's contiguous point in `view` (stability tracking).
    Ack {
        view: u64,
        contig: u64,
    },
    Propose {
        counter: u32,
        members: MemberList,
    },
    FlushOk(FlushOk),
    Sync(SyncMsg),
    SyncDone {
        counter: u32,
    },
    Install {
        counter: u32,
        view: u64,
    },
    /// Sequencer -> member: "I had to drop your `DATA` (my window was full);
    /// send again from sender sequence `next`, there is room now".
    Resend {
        view: u64,
        next: u64,
    },
}

impl Frame<'_> {
    /// Exact number of bytes [`Frame::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Frame::Heartbeat(_) => HEARTBEAT_LEN,
            Frame::Leave => 1,
            Frame::Data { payload, .. } => DATA_OVERHEAD + payload.len(),
            Frame::Seq(s) => SEQ_OVERHEAD + s.payload.len(),
            Frame::Nak { .. } => 1 + 8 + 8 + 8,
            Frame::Ack { .. } => 1 + 8 + 8,
            Frame::Propose { members, .. } => 1 + 4 + 1 + members.len() * MEMBER_LEN,
            Frame::FlushOk(f) => 1 + 4 + VIEW_KEY_LEN + 8 + 1 + 1 + f.leavers.len() * MEMBER_LEN,
            Frame::Sync(s) => {
                1 + 4
                    + 8
                    + 1
                    + s.groups.len() * SYNC_GROUP_LEN
                    + 1
                    + s.leavers.len() * MEMBER_LEN
                    + 1
                    + s.group_of.len()
            }
            Frame::SyncDone { .. } => 1 + 4,
            Frame::Install { .. } => 1 + 4 + 8,
            Frame::Resend { .. } => 1 + 8 + 8,
        }
    }

    pub fn encode(&self, w: &mut Writer<'_>) -> Result<(), Full> {
        if w.remaining() < self.encoded_len() {
            return Err(Full);
        }
        match self {
            Frame::Heartbeat(h) => {
                w.u8(T_HEARTBEAT)?;
                h.view.encode(w)?;
                w.u32(h.acc_coord)?;
                w.u32(h.acc_counter)?;
                w.u64(h.contig)?;
                w.u64(h.high)?;
                w.u64(h.stable)?;
                w.u8(h.flags)
            }
            Frame::Leave => w.u8(T_LEAVE),
            Frame::Data { view, sender_seq, payload } => {
                w.u8(T_DATA)?;
                w.u64(*view)?;
                w.u64(*sender_seq)?;
                put_payload(w, payload)
            }
            Frame::Seq(s) => {
                w.u8(T_SEQ)?;
                w.u64(s.view)?;
                w.u64(s.gseq)?;
                w.u64(s.stable)?;
                w.u32(s.origin.0)?;
                w.u64(s.sender_seq)?;
                put_payload(w, s.payload)
            }
            Frame::Nak { view, lo, hi } => {
                w.u8(T_NAK)?;
                w.u64(*view)?;
                w.u64(*lo)?;
                w.u64(*hi)
            }
            Frame::Ack { view, contig } => {
                w.u8(T_ACK)?;
                w.u64(*view)?;
                w.u64(*contig)
            }
            Frame::Propose { counter, members } => {
                w.u8(T_PROPOSE)?;
                w.u32(*counter)?;
                put_members(w, members)
            }
            Frame::FlushOk(f) => {
                w.u8(T_FLUSH_OK)?;
                w.u32(f.counter)?;
                f.old.encode(w)?;
                w.u64(f.cf)?;
                w.u8(u8::from(f.fresh))?;
                put_members(w, &f.leavers)
            }
            Frame::Sync(s) => {
                w.u8(T_SYNC)?;
                w.u32(s.counter)?;
                w.u64(s.new_view)?;
                w.u8(count_u8(s.groups.len())?)?;
                for g in &s.groups {
                    g.old.encode(w)?;
                    w.u64(g.target)?;
                }
                put_members(w, &s.leavers)?;
                w.u8(count_u8(s.group_of.len())?)?;
                for (i, g) in s.group_of.iter().enumerate() {
                    let mut b = *g & GROUP_INDEX;
                    if s.groups.get(usize::from(*g)).is_some_and(|x| usize::from(x.holder) == i) {
                        b |= GROUP_HOLDER;
                    }
                    if i < 32 && s.fresh_mask & (1 << i) != 0 {
                        b |= GROUP_FRESH;
                    }
                    w.u8(b)?;
                }
                Ok(())
            }
            Frame::SyncDone { counter } => {
                w.u8(T_SYNC_DONE)?;
                w.u32(*counter)
            }
            Frame::Install { counter, view } => {
                w.u8(T_INSTALL)?;
                w.u32(*counter)?;
                w.u64(*view)
            }
            Frame::Resend { view, next } => {
                w.u8(T_RESEND)?;
                w.u64(*view)?;
                w.u64(*next)
            }
        }
    }

    /// Decode one frame; the reader is left after it.
    pub fn decode<'b>(r: &mut Reader<'b>) -> Result<Frame<'b>, Malformed> {
        let t = r.u8()?;
        Ok(match t {
            T_HEARTBEAT => Frame::Heartbeat(Heartbeat {
                view: ViewKey::decode(r)?,
                acc_coord: r.u32()?,
                acc_counter: r.u32()?,
                contig: r.u64()?,
                high: r.u64()?,
                stable: r.u64()?,
                flags: r.u8()?,
            }),
            T_LEAVE => Frame::Leave,
            T_DATA => {
                let view = r.u64()?;
                let sender_seq = r.u64()?;
                let payload = r.payload()?;
                if sender_seq == 0 {
                    return Err(Malformed);
                }
                Frame::Data { view, sender_seq, payload }
            }
            T_SEQ => {
                let s = SeqFrame {
                    view: r.u64()?,
                    gseq: r.u64()?,
                    stable: r.u64()?,
                    origin: r.node()?,
                    sender_seq: r.u64()?,
                    payload: r.payload()?,
                };
                if s.gseq == 0 || s.sender_seq == 0 {
                    return Err(Malformed);
                }
                Frame::Seq(s)
            }
            T_NAK => {
                let (view, lo, hi) = (r.u64()?, r.u64()?, r.u64()?);
                if lo == 0 || lo > hi {
                    return Err(Malformed);
                }
                Frame::Nak { view, lo, hi }
            }
            T_ACK => Frame::Ack { view: r.u64()?, contig: r.u64()? },
            T_PROPOSE => {
                let counter = r.u32()?;
                let members = r.members(true)?;
                if members.is_empty() {
                    return Err(Malformed);
                }
                Frame::Propose { counter, members }
            }
            T_FLUSH_OK => Frame::FlushOk(FlushOk {
                counter: r.u32()?,
                old: ViewKey::decode(r)?,
                cf: r.u64()?,
                fresh: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(Malformed),
                },
                leavers: r.members(false)?,
            }),
            T_SYNC => {
                let counter = r.u32()?;
                let new_view = r.u64()?;
                let n = r.count()?;
                let mut groups: heapless::Vec<SyncGroup, MAX_NODES> = heapless::Vec::new();
                for _ in 0..n {
                    // The holder is filled in from `group_of` below.
                    let g = SyncGroup { old: ViewKey::decode(r)?, target: r.u64()?, holder: u8::MAX };
                    groups.push(g).map_err(|_| Malformed)?;
                }
                let leavers = r.members(false)?;
                let k = r.count()?;
                let mut group_of = heapless::Vec::new();
                let mut fresh_mask = 0u32;
                for i in 0..k {
                    let b = r.u8()?;
                    let gi = b & GROUP_INDEX;
                    let g = groups.get_mut(usize::from(gi)).ok_or(Malformed)?;
                    if b & GROUP_HOLDER != 0 {
                        // Exactly one holder per group.
                        if g.holder != u8::MAX {
                            return Err(Malformed);
                        }
                        g.holder = i as u8; // i < k <= MAX_NODES
                    }
                    if b & GROUP_FRESH != 0 {
                        fresh_mask |= 1 << i; // i < MAX_NODES <= 32
                    }
                    group_of.push(gi).map_err(|_| Malformed)?;
                }
                if groups.iter().any(|g| g.holder == u8::MAX) {
                    return Err(Malformed);
                }
                Frame::Sync(SyncMsg { counter, new_view, groups, leavers, fresh_mask, group_of })
            }
            T_SYNC_DONE => Frame::SyncDone { counter: r.u32()? },
            T_INSTALL => Frame::Install { counter: r.u32()?, view: r.u64()? },
            T_RESEND => {
                let (view, next) = (r.u64()?, r.u64()?);
                if next == 0 {
                    return Err(Malformed);
                }
                Frame::Resend { view, next }
            }
            _ => return Err(Malformed),
        })
    }
}

fn count_u8(n: usize) -> Result<u8, Full> {
    u8::try_from(n).map_err(|_| Full)
}

fn put_members(w: &mut Writer<'_>, l: &MemberList) -> Result<(), Full> {
    w.u8(count_u8(l.len())?)?;
    for m in l {
        w.u32(m.node.0)?;
        w.u64(m.inc.0)?;
    }
    Ok(())
}

fn put_payload(w: &mut Writer<'_>, p: &[u8]) -> Result<(), Full> {
    let len = u16::try_from(p.len()).map_err(|_| Full)?;
    w.u16(len)?;
    w.bytes(p)
}

impl Frame<'_> {
    /// The highest view seq this frame names (0 if it names none): what the
    /// receiver's jump bound is checked against (`src/view.rs`, "Bounded
    /// jumps").
    pub fn max_view(&self) -> u64 {
        match self {
            Frame::Heartbeat(h) => h.view.id,
            Frame::Leave | Frame::Propose { .. } | Frame::SyncDone { .. } => 0,
            Frame::Data { view, .. }
            | Frame::Nak { view, .. }
            | Frame::Ack { view, .. }
            | Frame::Install { view, .. }
            | Frame::Resend { view, .. } => *view,
            Frame::Seq(s) => s.view,
            Frame::FlushOk(f) => f.old.id,
            Frame::Sync(s) => s.groups.iter().map(|g| g.old.id).fold(s.new_view, u64::max),
        }
    }
}

/// Check that `plain` is a non-empty sequence of well-formed frames; returns
/// the highest view seq any of them names ([`Frame::max_view`]).
pub(super) fn validate(plain: &[u8]) -> Result<u64, Malformed> {
    let mut r = Reader::new(plain);
    if r.is_empty() {
        return Err(Malformed);
    }
    let mut max = 0;
    while !r.is_empty() {
        max = max.max(Frame::decode(&mut r)?.max_view());
    }
    Ok(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(n: u32, i: u64) -> Member {
        Member { node: NodeId(n), inc: Incarnation(i) }
    }

    /// The AEAD nonce is sender, incarnation and counter, little-endian,
    /// zero-padded: distinct datagrams never share one (issue 17: a
    /// constant nonce survived every functional test, since both ends
    /// compute it alike).
    #[test]
    fn nonces_are_sender_incarnation_counter() {
        let h = Header { sender: NodeId(3), inc: Incarnation(7), counter: 9, dest: 0 };
        let mut want = [0u8; 24];
        want[0..4].copy_from_slice(&3u32.to_le_bytes());
        want[4..12].copy_from_slice(&7u64.to_le_bytes());
        want[12..20].copy_from_slice(&9u64.to_le_bytes());
        assert_eq!(h.nonce(), want);
        let other =
            [Header { sender: NodeId(4), ..h }, Header { inc: Incarnation(8), ..h }, Header { counter: 10, ..h }];
        for o in other {
            assert_ne!(o.nonce(), h.nonce(), "{o:?}");
        }
        // The destination is not part of it.
        assert_eq!(Header { dest: 2, ..h }.nonce(), h.nonce());
    }

    fn roundtrip(f: Frame<'_>) {
        let mut buf = [0u8; MAX_PLAIN];
        let mut w = Writer::new(&mut buf);
        f.encode(&mut w).unwrap();
        assert_eq!(w.pos(), f.encoded_len(), "{f:?}");
        let len = w.pos();
        let mut r = Reader::new(&buf[..len]);
        let g = Frame::decode(&mut r).unwrap();
        assert!(r.is_empty());
        assert_eq!(f, g);
        // Every strict prefix is rejected, never a panic.
        for cut in 0..len {
            let mut r = Reader::new(&buf[..cut]);
            assert!(Frame::decode(&mut r).is_err(), "prefix {cut} of {f:?}");
        }
    }

    /// A NAK must ask for a non-empty range starting at 1 or later; a SEQ
    /// numbers from 1 (issue 17: `lo == 0 || lo > hi` -> `&&` survived: no
    /// test decoded an invalid NAK).
    #[test]
    fn a_nak_with_an_empty_or_zero_range_is_malformed() {
        let decode = |f: Frame<'_>| {
            let mut buf = [0u8; MAX_PLAIN];
            let mut w = Writer::new(&mut buf);
            f.encode(&mut w).unwrap();
            let len = w.pos();
            Frame::decode(&mut Reader::new(&buf[..len])).map(|_| ())
        };
        assert_eq!(decode(Frame::Nak { view: 3, lo: 1, hi: 1 }), Ok(()));
        assert_eq!(decode(Frame::Nak { view: 3, lo: 2, hi: 9 }), Ok(()));
        assert_eq!(decode(Frame::Nak { view: 3, lo: 0, hi: 4 }), Err(Malformed), "from 0");
        assert_eq!(decode(Frame::Nak { view: 3, lo: 5, hi: 4 }), Err(Malformed), "empty");
    }

    #[cfg_attr(feature = "appliance", ignore = "host-profile message sizes")]
    #[test]
    fn frames_roundtrip() {
        let key = ViewKey { id: 5, leader: NodeId(1), leader_inc: Incarnation(9) };
        let mut members = MemberList::new();
        for n in 1..=MAX_NODES as u32 {
            members.push(m(n, u64::from(n) * 7)).unwrap();
        }
        let payload = [0xABu8; MAX_UNIT];
        roundtrip(Frame::Heartbeat(Heartbeat {
            view: key,
            acc_coord: 1,
            acc_counter: 3,
            contig: 10,
            high: 12,
            stable: 9,
            flags: 1,
        }));
        roundtrip(Frame::Leave);
        roundtrip(Frame::Data { view: key.id, sender_seq: 1, payload: &payload });
        roundtrip(Frame::Seq(SeqFrame {
            view: key.id,
            gseq: 3,
            stable: 2,
            origin: NodeId(4),
            sender_seq: 8,
            payload: &payload[..10],
        }));
        roundtrip(Frame::Nak { view: key.id, lo: 1, hi: 4 });
        roundtrip(Frame::Ack { view: key.id, contig: 4 });
        roundtrip(Frame::Propose { counter: 2, members: members.clone() });
        // The largest PROPOSE and FLUSH_OK are exactly the bounds the
        // compile-time checks use (issue 17: `FLUSH_OK_MAX` one or two
        // bytes short survived every test).
        assert_eq!(Frame::Propose { counter: 2, members: members.clone() }.encoded_len(), PROPOSE_MAX);
        let full = FlushOk { counter: 2, old: key, cf: 17, fresh: true, leavers: members.clone() };
        assert_eq!(Frame::FlushOk(full).encoded_len(), FLUSH_OK_MAX);
        roundtrip(Frame::FlushOk(FlushOk { counter: 2, old: key, cf: 17, fresh: true, leavers: members.clone() }));
        // Every member its own group (the largest SYNC), and two members
        // sharing one.
        let mut groups = heapless::Vec::new();
        let mut group_of = heapless::Vec::new();
        for n in 0..MAX_NODES as u8 {
            let old = ViewKey { id: 5 + u64::from(n), leader: NodeId(u32::from(n) + 1), leader_inc: Incarnation(9) };
            groups.push(SyncGroup { old, target: u64::from(n), holder: n }).unwrap();
            group_of.push(n).unwrap();
        }
        let big =
            SyncMsg { counter: 2, new_view: 6, groups, leavers: members.clone(), group_of, fresh_mask: 0xdead_beef };
        assert_eq!(Frame::Sync(big.clone()).encoded_len(), SYNC_MAX);
        roundtrip(Frame::Sync(big));
        let mut groups = heapless::Vec::new();
        groups.push(SyncGroup { old: key, target: 3, holder: 1 }).unwrap();
        let mut group_of = heapless::Vec::new();
        group_of.extend_from_slice(&[0, 0]).unwrap();
        roundtrip(Frame::Sync(SyncMsg {
            counter: 2,
            new_view: 6,
            groups,
            leavers: members,
            group_of,
            fresh_mask: 0b10,
        }));
        roundtrip(Frame::SyncDone { counter: 2 });
        roundtrip(Frame::Install { counter: 2, view: 6 });
        roundtrip(Frame::Resend { view: 6, next: 9 });
    }

    #[test]
    fn header_roundtrip_and_rejects() {
        let h = Header { sender: NodeId(3), inc: Incarnation(77), counter: 5, dest: 0 };
        let b = h.encode();
        assert_eq!(Header::decode(&b).unwrap(), h);
        assert!(Header::decode(&b[..HEADER_LEN - 1]).is_err());
        let mut bad = b;
        bad[0] ^= 1;
        assert!(Header::decode(&bad).is_err());
        let zero = Header { sender: NodeId(0), ..h }.encode();
        assert!(Header::decode(&zero).is_err());
    }

    #[test]
    fn view_keys_and_sync_holders_are_validated() {
        // A view key with seq 0 or leader 0 is malformed.
        for (id, leader) in [(0u64, 1u32), (5, 0)] {
            let mut buf = [0u8; 128];
            let mut w = Writer::new(&mut buf);
            w.u8(T_INSTALL).unwrap();
            w.u32(1).unwrap();
            w.u64(1).unwrap();
            w.u8(T_HEARTBEAT).unwrap();
            w.u64(id).unwrap();
            w.u32(leader).unwrap();
            w.bytes(&[0; 8 + 4 + 4 + 8 + 8 + 8 + 1]).unwrap();
            let len = w.pos();
            assert_eq!(len, 1 + 4 + 8 + HEARTBEAT_LEN);
            assert!(validate(&buf[..len]).is_err(), "id {id} leader {leader}");
        }
        // `validate` names the highest view of all frames.
        let key = ViewKey { id: 9, leader: NodeId(2), leader_inc: Incarnation(1) };
        let mut buf = [0u8; MAX_PLAIN];
        let mut w = Writer::new(&mut buf);
        Frame::Ack { view: 4, contig: 1 }.encode(&mut w).unwrap();
        Frame::Heartbeat(Heartbeat::bare(key)).encode(&mut w).unwrap();
        Frame::Leave.encode(&mut w).unwrap();
        let len = w.pos();
        assert_eq!(validate(&buf[..len]), Ok(9));
        // A SYNC group needs exactly one holder among the members.
        let sync = |entries: &[u8]| {
            let mut buf = [0u8; 128];
            let mut w = Writer::new(&mut buf);
            w.u8(T_SYNC).unwrap();
            w.u32(1).unwrap();
            w.u64(10).unwrap();
            w.u8(1).unwrap();
            key.encode(&mut w).unwrap();
            w.u64(3).unwrap();
            w.u8(0).unwrap();
            w.u8(entries.len() as u8).unwrap();
            w.bytes(entries).unwrap();
            let len = w.pos();
            validate(&buf[..len])
        };
        assert_eq!(sync(&[GROUP_HOLDER, GROUP_FRESH]), Ok(10));
        assert!(sync(&[0, 0]).is_err(), "no holder");
        assert!(sync(&[GROUP_HOLDER, GROUP_HOLDER]).is_err(), "two holders");
        assert!(sync(&[GROUP_HOLDER | 1]).is_err(), "no such group");
    }

    #[test]
    fn rejects_unsorted_and_oversize() {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        w.u8(T_PROPOSE).unwrap();
        w.u32(1).unwrap();
        w.u8(2).unwrap();
        for n in [2u32, 1] {
            w.u32(n).unwrap();
            w.u64(1).unwrap();
        }
        let len = w.pos();
        assert!(validate(&buf[..len]).is_err());
        let mut buf = [0u8; 32];
        let mut w = Writer::new(&mut buf);
        w.u8(T_DATA).unwrap();
        w.u64(1).unwrap();
        w.u64(1).unwrap();
        w.u16(MAX_UNIT as u16 + 1).unwrap();
        let len = w.pos();
        assert!(validate(&buf[..len]).is_err());
        assert!(validate(&[]).is_err());
        assert!(validate(&[0xff]).is_err());
    }
}
