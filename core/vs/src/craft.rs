//! Test and fuzz support (feature `craft`, never needed in production):
//! build what only a faulty or hostile key holder sends, and check the
//! frame decoder from outside the crate.
//!
//! * [`seal`]: any plaintext (well-formed frames or not) sealed as a
//!   datagram of any sender, incarnation, counter and destination under a
//!   key, exactly as [`Vs`](super::Vs) seals its own;
//! * [`frame`]: one well-formed frame of a given [`Kind`] naming a given
//!   view seq (the hostile-peer tests use seqs near the end of the space);
//! * [`check_frames`]: decode a plaintext the way a receiver does, and
//!   check that every frame it accepts re-encodes to the same bytes.

use super::auth::Auth;
use super::wire::{
    self, FlushOk, Frame, Header, Heartbeat, MemberList, Reader, SeqFrame, SyncGroup, SyncMsg, ViewKey, Writer,
    HEADER_LEN, MAX_PLAIN, TAG_LEN,
};
use super::MAX_DATAGRAM;
use crate::ids::{Incarnation, Member, NodeId};

/// Largest plaintext a datagram carries.
pub const MAX_FRAMES: usize = MAX_PLAIN;

/// Seal `plain` as a datagram into `out`; returns its length, or `None` if
/// `plain` is longer than [`MAX_FRAMES`] or `out` is too small. Sender 0
/// and counter 0 give datagrams every receiver rejects as malformed.
pub fn seal(
    key: &[u8; 32],
    sender: NodeId,
    inc: Incarnation,
    counter: u64,
    dest: u32,
    plain: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    if plain.len() > MAX_FRAMES {
        return None;
    }
    let len = HEADER_LEN + plain.len() + TAG_LEN;
    let out = out.get_mut(..len)?;
    let h = Header { sender, inc, counter, dest };
    let (head, rest) = out.split_at_mut(HEADER_LEN);
    head.copy_from_slice(&h.encode());
    let (body, tag) = rest.split_at_mut(plain.len());
    body.copy_from_slice(plain);
    tag.copy_from_slice(&Auth::new(key).seal(&h, body).ok()?);
    debug_assert!(len <= MAX_DATAGRAM);
    Some(len)
}

/// Frame kinds [`frame`] builds: every frame that names a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Heartbeat,
    FlushOk,
    Sync,
    Install,
    Data,
    Seq,
    Nak,
    Ack,
    Resend,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Heartbeat,
        Kind::FlushOk,
        Kind::Sync,
        Kind::Install,
        Kind::Data,
        Kind::Seq,
        Kind::Nak,
        Kind::Ack,
        Kind::Resend,
    ];
}

/// One well-formed frame of `kind` naming view seq `view` (led by `leader`
/// of incarnation `leader_inc` where the frame names a whole view; a SYNC
/// moves `members` from that view to `view`), written to `out`; returns its
/// length (`None` if `out` is too small or `view` is 0).
pub fn frame(
    kind: Kind,
    view: u64,
    leader: NodeId,
    leader_inc: Incarnation,
    members: &[NodeId],
    out: &mut [u8],
) -> Option<usize> {
    if view == 0 || !leader.is_valid() {
        return None;
    }
    let key = ViewKey { id: view, leader, leader_inc };
    let payload: &[u8] = b"\x00\x00\x01\x00craft";
    let f = match kind {
        Kind::Heartbeat => Frame::Heartbeat(Heartbeat::bare(key)),
        Kind::FlushOk => {
            Frame::FlushOk(FlushOk { counter: 1, old: key, cf: 0, fresh: false, leavers: MemberList::new() })
        }
        Kind::Sync => {
            let mut groups = heapless::Vec::new();
            groups.push(SyncGroup { old: key, target: 0, holder: 0 }).ok()?;
            let mut group_of = heapless::Vec::new();
            for _ in members.iter().take(crate::gcs::MAX_NODES) {
                group_of.push(0).ok()?;
            }
            if group_of.is_empty() {
                group_of.push(0).ok()?;
            }
            Frame::Sync(SyncMsg {
                counter: 1,
                new_view: view,
                groups,
                leavers: MemberList::new(),
                fresh_mask: 0,
                group_of,
            })
        }
        Kind::Install => Frame::Install { counter: 1, view },
        Kind::Data => Frame::Data { view, sender_seq: 1, payload },
        Kind::Seq => Frame::Seq(SeqFrame { view, gseq: 1, stable: 0, origin: leader, sender_seq: 1, payload }),
        Kind::Nak => Frame::Nak { view, lo: 1, hi: 2 },
        Kind::Ack => Frame::Ack { view, contig: 1 },
        Kind::Resend => Frame::Resend { view, next: 1 },
    };
    let mut w = Writer::new(out);
    f.encode(&mut w).ok()?;
    Some(w.pos())
}

/// A PROPOSE of `members` (node, incarnation), sorted by the caller.
pub fn propose(counter: u32, members: &[(NodeId, Incarnation)], out: &mut [u8]) -> Option<usize> {
    let mut l = MemberList::new();
    for &(node, inc) in members {
        l.push(Member { node, inc }).ok()?;
    }
    let mut w = Writer::new(out);
    Frame::Propose { counter, members: l }.encode(&mut w).ok()?;
    Some(w.pos())
}

/// Decode `plain` as a receiver does. `Ok(max view seq named)` if it is a
/// non-empty sequence of well-formed frames; then every frame re-encodes to
/// exactly its bytes (panics otherwise: a fuzz finding).
#[allow(clippy::result_unit_err)]
pub fn check_frames(plain: &[u8]) -> Result<u64, ()> {
    let verdict = wire::validate(plain).map_err(|_| ());
    let mut r = Reader::new(plain);
    let mut at = 0usize;
    let mut max = 0u64;
    let mut buf = [0u8; MAX_PLAIN];
    while !r.is_empty() {
        let Ok(f) = Frame::decode(&mut r) else {
            assert!(verdict.is_err(), "validate accepted a plaintext with an undecodable frame");
            return verdict;
        };
        let end = plain.len() - r.remaining();
        let mut w = Writer::new(&mut buf);
        f.encode(&mut w).expect("a decoded frame re-encodes");
        let n = w.pos();
        assert_eq!(n, f.encoded_len(), "encoded_len disagrees with encode: {f:?}");
        assert_eq!(&buf[..n], &plain[at..end], "frame does not re-encode to its bytes: {f:?}");
        max = max.max(f.max_view());
        at = end;
    }
    assert_eq!(verdict, if plain.is_empty() { Err(()) } else { Ok(max) }, "validate disagrees with decode");
    verdict
}

/// Frame kinds found by [`open_kinds`], one bit each.
pub mod kinds {
    pub const HEARTBEAT: u16 = 1 << 0;
    pub const LEAVE: u16 = 1 << 1;
    pub const DATA: u16 = 1 << 2;
    pub const SEQ: u16 = 1 << 3;
    pub const NAK: u16 = 1 << 4;
    pub const ACK: u16 = 1 << 5;
    pub const PROPOSE: u16 = 1 << 6;
    pub const FLUSH_OK: u16 = 1 << 7;
    pub const SYNC: u16 = 1 << 8;
    pub const SYNC_DONE: u16 = 1 << 9;
    pub const INSTALL: u16 = 1 << 10;
    pub const RESEND: u16 = 1 << 11;
    /// Names, by bit position.
    pub const NAMES: [&str; 12] =
        ["hb", "leave", "data", "seq", "nak", "ack", "propose", "flush_ok", "sync", "sync_done", "install", "resend"];
}

/// Open a datagram sealed under `key` (as a receiver would, without the
/// replay window) and say which frame kinds it carries ([`kinds`]); `None`
/// if it does not authenticate or does not parse. For test tools that
/// classify or describe datagrams (the simulator's udp explorer).
pub fn open_kinds(key: &[u8; 32], bytes: &[u8]) -> Option<u16> {
    if bytes.len() <= HEADER_LEN + TAG_LEN || bytes.len() > MAX_DATAGRAM {
        return None;
    }
    let hdr = Header::decode(bytes).ok()?;
    let body = bytes.get(HEADER_LEN..)?;
    let plain_len = body.len() - TAG_LEN;
    let (cipher, tag) = body.split_at(plain_len);
    let tag: &[u8; TAG_LEN] = tag.try_into().ok()?;
    let mut buf = [0u8; MAX_PLAIN];
    let plain = buf.get_mut(..plain_len)?;
    plain.copy_from_slice(cipher);
    Auth::new(key).open(&hdr, plain, tag).ok()?;
    let mut r = Reader::new(plain);
    let mut k = 0u16;
    while !r.is_empty() {
        let f = Frame::decode(&mut r).ok()?;
        k |= match f {
            Frame::Heartbeat(_) => kinds::HEARTBEAT,
            Frame::Leave => kinds::LEAVE,
            Frame::Data { .. } => kinds::DATA,
            Frame::Seq(_) => kinds::SEQ,
            Frame::Nak { .. } => kinds::NAK,
            Frame::Ack { .. } => kinds::ACK,
            Frame::Propose { .. } => kinds::PROPOSE,
            Frame::FlushOk(_) => kinds::FLUSH_OK,
            Frame::Sync(_) => kinds::SYNC,
            Frame::SyncDone { .. } => kinds::SYNC_DONE,
            Frame::Install { .. } => kinds::INSTALL,
            Frame::Resend { .. } => kinds::RESEND,
        };
    }
    Some(k)
}
