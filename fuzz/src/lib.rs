//! Fuzz harnesses for `cohort-core`, as plain functions.
//!
//! * [`wire`]: `wire::decode` never panics, agrees with `decode_into`, gives
//!   the documented error for short and oversize input, and everything it
//!   accepts re-encodes canonically and decodes to the same message.
//! * [`node`]: the bytes are a little program (see [`node`]) driving one
//!   node, or two nodes that hear each other's multicasts, through every
//!   kind of input. Nothing may panic (in debug builds the core's own
//!   `invariant!`s run), `Backpressure` is always cured by draining,
//!   everything a node transmits decodes and names it as sender, and every
//!   `status()` stays consistent.
//!
//! The `cargo fuzz` targets in `fuzz_targets/` call these; so does the
//! stable replay test in `tests/replay.rs`, over the checked-in corpora
//! and a few thousand seeded pseudo-random inputs.

use cohort_core::gcs::{Confchg, MemberReason, NodeList, QuorumEvent, Reason, ReasonList, RingEvent};
use cohort_core::ids::{Generation, GroupId, Incarnation, Instant, Jid, Member, NodeId};
use cohort_core::node::{Effect, HandleError, Input, KernelEvent, KernelOp, Request, TimerToken};
use cohort_core::wire::{
    decode, decode_into, encode, fs_name, Body, DaemonStart, DaemonSync, FenceResult, FsName, GroupSnap, Header,
    MemberDesc, Message, Mode, MountReq, MountStart, MountState, MsgKind, PendingFence, Recovery, RecoveryResult,
    WireError, HEADER_LEN, MAX_JOURNALS, MAX_MESSAGE,
};
use cohort_core::{Config, Node};
use cohort_vs::{self as vs, craft, Dest, Vs, VsConfig, VsEvent, MAX_DATAGRAM, MAX_VIEW_JUMP};
use std::collections::VecDeque;

// ------------------------------------------------------------------- wire

/// Decode arbitrary bytes; check everything that must hold of the result.
/// The same bytes are also decoded as the plaintext of a datagram of the
/// core's VS transport ([`vs_frames`]).
pub fn wire(data: &[u8]) {
    vs_frames(data);
    let r = decode(data);
    let mut out = Message::placeholder();
    assert_eq!(decode_into(data, &mut out), r.as_ref().map(|_| ()).map_err(|e| *e), "decode_into disagrees");
    if data.len() > MAX_MESSAGE {
        assert_eq!(r, Err(WireError::Oversize));
        return;
    }
    if data.len() < HEADER_LEN {
        assert_eq!(r, Err(WireError::Truncated));
        return;
    }
    let Ok(m) = r else { return };
    assert_eq!(out, m, "decode_into produced another message");
    assert_eq!(m.header.kind, m.body.kind());
    assert_eq!(m.body.validate(), Ok(()), "decode accepted an invalid body");
    let mut buf = [0u8; MAX_MESSAGE];
    let n = encode(&m, &mut buf).expect("a decoded message re-encodes");
    // The canonical encoding is never longer than any accepted one.
    assert!(n <= data.len(), "re-encoding grew: {} > {}", n, data.len());
    assert_eq!(decode(&buf[..n]).as_ref(), Ok(&m), "round trip changed the message");
    let mut again = [0u8; MAX_MESSAGE];
    let n2 = encode(&m, &mut again).expect("encodes twice");
    assert_eq!(&again[..n2], &buf[..n], "encoding is not deterministic");
    if n > HEADER_LEN {
        assert!(decode(&buf[..n - 1]).is_err(), "a strict prefix decoded");
    }
    let mut longer = buf[..n].to_vec();
    longer.push(0);
    assert_eq!(decode(&longer), Err(WireError::Trailing));
}

// -------------------------------------------------------- byte reader

/// Reads the fuzz input; past its end every read is 0.
pub struct Rd<'a> {
    d: &'a [u8],
    i: usize,
}

impl<'a> Rd<'a> {
    pub fn new(d: &'a [u8]) -> Rd<'a> {
        Rd { d, i: 0 }
    }
    pub fn is_empty(&self) -> bool {
        self.i >= self.d.len()
    }
    pub fn u8(&mut self) -> u8 {
        let v = self.d.get(self.i).copied().unwrap_or(0);
        self.i = self.i.saturating_add(1);
        v
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.i.min(self.d.len());
        let end = start.saturating_add(n).min(self.d.len());
        self.i = self.i.saturating_add(n);
        &self.d[start..end]
    }
}

// ------------------------------------------------------ message builder

/// Every message kind, in wire order.
pub const KINDS: [MsgKind; 12] = [
    MsgKind::DaemonStart,
    MsgKind::DaemonSync,
    MsgKind::Mount,
    MsgKind::Unmount,
    MsgKind::Remount,
    MsgKind::Withdraw,
    MsgKind::FenceResult,
    MsgKind::MountStart,
    MsgKind::MountDone,
    MsgKind::FirstDone,
    MsgKind::RecoveryResult,
    MsgKind::MountState,
];

/// Fails to compile when `Body` gains a variant: extend [`KINDS`] and
/// [`build_message`] first.
#[allow(dead_code)]
fn every_body_is_built(b: &Body) {
    match b {
        Body::DaemonStart(_)
        | Body::DaemonSync(_)
        | Body::Mount(_)
        | Body::Unmount
        | Body::Remount(_)
        | Body::Withdraw
        | Body::FenceResult(_)
        | Body::MountStart(_)
        | Body::MountState(_)
        | Body::MountDone { .. }
        | Body::FirstDone
        | Body::RecoveryResult(_) => {}
    }
}

/// What a built message may borrow to look plausible.
#[derive(Clone, Debug)]
pub struct Hints {
    /// The driven nodes as they are now.
    pub members: Vec<Member>,
    pub generation: Generation,
    /// Mount groups the receiver has, with their change generation.
    pub groups: Vec<(GroupId, FsName, Generation)>,
}

impl Default for Hints {
    fn default() -> Hints {
        Hints {
            members: vec![
                Member { node: NodeId(1), inc: Incarnation(1) },
                Member { node: NodeId(2), inc: Incarnation(1) },
            ],
            generation: Generation { ring: 8, epoch: 2 },
            groups: vec![],
        }
    }
}

const FS_POOL: [&str; 3] = ["fs1", "fs2", "fs3"];
const FS_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:";

fn any_fs(r: &mut Rd) -> FsName {
    let sel = r.u8();
    if let Some(n) = FS_POOL.get(usize::from(sel % 4)) {
        return fs_name(n).expect("valid");
    }
    let len = 1 + usize::from(r.u8() % 32);
    let mut s = FsName::new();
    for _ in 0..len {
        let c = FS_CHARS[usize::from(r.u8()) % FS_CHARS.len()];
        let _ = s.push(char::from(c));
    }
    s
}

fn small_node(r: &mut Rd) -> NodeId {
    NodeId(1 + u32::from(r.u8() % 8))
}

fn any_node(r: &mut Rd) -> NodeId {
    if r.u8() % 8 == 0 {
        NodeId(r.u32().max(1))
    } else {
        small_node(r)
    }
}

fn any_member(r: &mut Rd, h: &Hints) -> Member {
    match r.u8() % 4 {
        k @ 0..=1 => h.members.get(usize::from(k)).copied().unwrap_or(Member { node: NodeId(1), inc: Incarnation(1) }),
        2 => Member { node: small_node(r), inc: Incarnation(u64::from(r.u8() % 4)) },
        _ => Member { node: any_node(r), inc: Incarnation(r.u64()) },
    }
}

fn any_generation(r: &mut Rd, h: &Hints) -> Generation {
    let cur = h.generation;
    match r.u8() % 6 {
        0 | 1 => cur,
        2 => cur.next_epoch(),
        3 => Generation { ring: cur.ring, epoch: cur.epoch.saturating_sub(1) },
        4 => Generation::ring_start(cur.ring.saturating_add(1 + u64::from(r.u8() % 8))),
        _ => Generation { ring: r.u64(), epoch: r.u32() },
    }
}

fn any_mode(r: &mut Rd) -> Mode {
    match r.u8() % 3 {
        0 => Mode::Rw,
        1 => Mode::Ro,
        _ => Mode::Spectator,
    }
}

fn any_journals(r: &mut Rd) -> u16 {
    if r.u8() % 4 == 0 {
        1 + r.u16() % MAX_JOURNALS as u16
    } else {
        1 + u16::from(r.u8() % 8)
    }
}

/// Sorted, unique node ids from a bit mask over 1..=8 (plus, sometimes, a
/// large id at the end).
fn node_set(r: &mut Rd) -> Vec<NodeId> {
    let mask = r.u8();
    let mut v: Vec<NodeId> = (0..8).filter(|b| mask & (1 << b) != 0).map(|b| NodeId(b + 1)).collect();
    if r.u8() % 8 == 0 {
        v.push(NodeId(r.u32().max(9)));
    }
    v
}

fn hv<T, const N: usize>(v: impl IntoIterator<Item = T>) -> heapless::Vec<T, N> {
    let mut out = heapless::Vec::new();
    for x in v {
        if out.push(x).is_err() {
            break;
        }
    }
    out
}

/// A valid message of any kind, built from the bytes, made plausible with
/// `h` (senders that exist, generations near the current one, groups the
/// receiver has).
pub fn build_message(r: &mut Rd, h: &Hints) -> Message {
    let kind = KINDS[usize::from(r.u8()) % KINDS.len()];
    let sender = any_member(r, h);
    let mut generation = any_generation(r, h);
    let group = match r.u8() % 4 {
        0 if !h.groups.is_empty() => {
            let (gid, _, gen) = h.groups[usize::from(r.u8()) % h.groups.len()];
            // A group's own messages carry its change generation.
            if r.bool() {
                generation = gen;
            }
            gid
        }
        3 => GroupId(r.u32().max(1)),
        _ => GroupId::of_fs(&any_fs(r)),
    };
    let body = match kind {
        MsgKind::DaemonStart => {
            let proto_min = 1 + u16::from(r.u8() % 2);
            let proto_max = proto_min + u16::from(r.u8() % 2);
            let flags = r.u8();
            let joiners: Vec<(NodeId, Generation)> =
                (0..r.u8() % 4).map(|_| (small_node(r), any_generation(r, h))).collect();
            let pending: Vec<PendingFence> = (0..r.u8() % 3)
                .map(|_| PendingFence { target: any_member(r, h), attempts: u16::from(r.u8() % 4) })
                .collect();
            let fenced: Vec<Member> = (0..r.u8() % 2).map(|_| any_member(r, h)).collect();
            Body::DaemonStart(DaemonStart {
                proto_min,
                proto_max,
                has_state: flags & 1 != 0,
                anchored: flags & 2 != 0,
                last_synced: any_generation(r, h),
                last_leader: if flags & 32 != 0 { NodeId(0) } else { small_node(r) },
                acted: u64::from(flags & 64),
                quorate_synced: if flags & 4 != 0 { Some(any_generation(r, h)) } else { None },
                failed_mask: if flags & 8 != 0 { r.u32() } else { 0 },
                fenced_mask: if flags & 16 != 0 { r.u32() } else { 0 },
                joiners: hv(joiners),
                fence_pending: hv(pending),
                fenced: hv(fenced),
            })
        }
        MsgKind::DaemonSync => {
            let groups: Vec<GroupSnap> = (0..r.u8() % 4)
                .map(|_| {
                    let fs = any_fs(r);
                    let journals = any_journals(r);
                    let nodes = node_set(r);
                    let members: Vec<(NodeId, Mode)> = nodes.into_iter().map(|n| (n, any_mode(r))).collect();
                    GroupSnap { fs, journals, members: hv(members) }
                })
                .collect();
            Body::DaemonSync(DaemonSync { groups: hv(groups) })
        }
        MsgKind::Mount => Body::Mount(MountReq { fs: any_fs(r), mode: any_mode(r), journals: any_journals(r) }),
        MsgKind::Unmount => Body::Unmount,
        MsgKind::Remount => Body::Remount(any_mode(r)),
        MsgKind::Withdraw => Body::Withdraw,
        MsgKind::FenceResult => {
            Body::FenceResult(FenceResult { target: any_member(r, h), attempt: u16::from(r.u8() % 4), ok: r.bool() })
        }
        MsgKind::MountStart => Body::MountStart(MountStart {
            mode: any_mode(r),
            journals: any_journals(r),
            old: r.bool(),
            first_done: r.bool(),
            digest: r.u64(),
        }),
        MsgKind::MountState => {
            let journals = any_journals(r);
            let members: Vec<MemberDesc> = node_set(r)
                .into_iter()
                .map(|node| {
                    let mode = any_mode(r);
                    let jid = r.u16();
                    MemberDesc {
                        member: Member { node, inc: Incarnation(u64::from(r.u8() % 4)) },
                        mode,
                        jid: (mode.needs_journal() && jid & 0x8000 == 0).then_some(Jid(jid % journals)),
                        mounted: r.bool(),
                    }
                })
                .collect();
            let mut members = members;
            let mut recoveries: Vec<Recovery> = (0..r.u8() % 4)
                .map(|_| Recovery {
                    jid: Jid(r.u16() % journals),
                    owner: any_member(r, h),
                    attempts: u16::from(r.u8()),
                    actor: NodeId(u32::from(r.u8() % 4)),
                })
                .collect();
            // Journal exclusivity, as `validate` requires.
            let mut seen = std::collections::BTreeSet::new();
            for m in members.iter_mut() {
                if let Some(j) = m.jid {
                    if !seen.insert(j.0) {
                        m.jid = None;
                    }
                }
            }
            recoveries.retain(|x| seen.insert(x.jid.0));
            let first_mounter = match r.u8() % 4 {
                0 => None,
                1 => Some(NodeId(0)),
                _ => Some(small_node(r)),
            };
            Body::MountState(MountState {
                journals,
                first_done: r.bool(),
                first_mounter,
                members: hv(members),
                recoveries: hv(recoveries),
            })
        }
        MsgKind::MountDone => Body::MountDone { ok: r.bool() },
        MsgKind::FirstDone => Body::FirstDone,
        MsgKind::RecoveryResult => Body::RecoveryResult(RecoveryResult {
            jid: Jid(r.u16() % MAX_JOURNALS as u16),
            attempt: u16::from(r.u8() % 4),
            ok: r.bool(),
        }),
    };
    let group = match &body {
        Body::DaemonStart(_) | Body::DaemonSync(_) | Body::FenceResult(_) => GroupId::DAEMON,
        Body::Mount(m) => GroupId::of_fs(&m.fs),
        _ => group,
    };
    let m = Message { header: Header { kind, sender, generation, group, view: generation.ring }, body };
    debug_assert_eq!(m.body.validate(), Ok(()), "the builder made an invalid body: {m:?}");
    m
}

/// Encode a message (always fits: the builder keeps them small).
pub fn encode_vec(m: &Message) -> Vec<u8> {
    let mut buf = [0u8; MAX_MESSAGE];
    let n = encode(m, &mut buf).expect("built messages fit");
    buf[..n].to_vec()
}

// -------------------------------------------------------------- status

/// What must hold of any node's status, whatever it was fed.
pub fn check_status(node: &Node) {
    let st = node.status();
    assert_eq!(st.node, node.config().node);
    assert_eq!(st.incarnation, node.config().incarnation);
    assert_eq!(st.generation, node.generation());
    assert!(st.members.windows(2).all(|w| w[0].node < w[1].node), "peers not sorted: {st:#?}");
    for (i, f) in st.fencing.iter().enumerate() {
        assert!(!st.fencing.iter().skip(i + 1).any(|g| g.target.node == f.target.node), "fenced twice: {st:#?}");
    }
    for (i, g) in st.groups.iter().enumerate() {
        assert!(!st.groups.iter().skip(i + 1).any(|o| o.group == g.group), "one group twice: {st:#?}");
        assert_eq!(g.group, GroupId::of_fs(&g.fs), "group id does not fit its name: {st:#?}");
        assert!(g.journals >= 1 && usize::from(g.journals) <= MAX_JOURNALS, "journals: {st:#?}");
        assert!(g.members.windows(2).all(|w| w[0].node < w[1].node), "group members not sorted: {st:#?}");
        for (k, m) in g.members.iter().enumerate() {
            if let Some(j) = m.jid {
                assert!(j.0 < g.journals, "jid out of range: {st:#?}");
                assert!(m.mode.needs_journal(), "spectator with a journal: {st:#?}");
                assert!(!g.members.iter().skip(k + 1).any(|o| o.jid == Some(j)), "journal held twice: {st:#?}");
            }
        }
        for r in g.recoveries.iter() {
            assert!(r.0 .0 < g.journals, "recovery jid out of range: {st:#?}");
        }
    }
}

// ---------------------------------------------------------------- node

/// `COHORT_FUZZ_TRACE=1`: print every input fed to a node (to read a
/// crash's story).
fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("COHORT_FUZZ_TRACE").is_some_and(|v| v != "0"))
}

/// Node ids of the driven nodes (index 0 and 1).
pub const IDS: [u32; 2] = [1, 2];
/// Bound on messages delivered while settling after one input.
const SETTLE_LIMIT: usize = 512;
const KEEP: usize = 64;

/// One or two nodes, a bus between them, and the adapter-side bookkeeping
/// (timers set, fences and kernel operations asked for).
pub struct Sim {
    pub nodes: Vec<Option<Box<Node>>>,
    incs: Vec<u64>,
    pub now: u64,
    ring: u64,
    bus: VecDeque<(NodeId, Vec<u8>)>,
    history: VecDeque<(NodeId, Vec<u8>)>,
    timers: Vec<(u64, usize, TimerToken)>,
    fences: Vec<(usize, Member)>,
    kernel: Vec<(usize, FsName, KernelOp)>,
    first_pending: Vec<(usize, FsName)>,
    /// Every message transmitted, when recording (corpus generation).
    pub transmitted: Option<Vec<Vec<u8>>>,
}

fn list(v: &[NodeId]) -> NodeList {
    hv(v.iter().copied())
}

fn push_bounded<T>(v: &mut Vec<T>, x: T) {
    if v.len() >= KEEP {
        v.remove(0);
    }
    v.push(x);
}

impl Sim {
    pub fn new(two: bool) -> Sim {
        let n = if two { 2 } else { 1 };
        Sim {
            nodes: (0..n).map(|i| Some(Box::new(Node::new(Config::new(NodeId(IDS[i]), Incarnation(1)))))).collect(),
            incs: vec![1; n],
            now: 0,
            ring: 8,
            bus: VecDeque::new(),
            history: VecDeque::new(),
            timers: Vec::new(),
            fences: Vec::new(),
            kernel: Vec::new(),
            first_pending: Vec::new(),
            transmitted: None,
        }
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].is_some()).collect()
    }

    /// Feed one input; `Backpressure` is cured by draining.
    pub fn input(&mut self, i: usize, input: Input<'_>) -> Option<Result<(), HandleError>> {
        let now = Instant(self.now);
        let node = self.nodes.get_mut(i)?.as_mut()?;
        if tracing() {
            eprintln!("node {} at {:?} {:?}: {input:?}", IDS[i], node.generation(), node.status().daemon);
        }
        let mut r = node.handle(now, input.clone());
        if r == Err(HandleError::Backpressure) {
            self.drain(i);
            let node = self.nodes[i].as_mut().expect("still there");
            r = node.handle(now, input);
            assert_ne!(r, Err(HandleError::Backpressure), "draining did not cure backpressure");
        }
        check_status(self.nodes[i].as_ref().expect("still there"));
        Some(r)
    }

    /// Take a node's effects and messages.
    pub fn drain(&mut self, i: usize) {
        let mut buf = [0u8; MAX_MESSAGE];
        loop {
            let Some(node) = self.nodes[i].as_mut() else { return };
            if let Some(e) = node.poll_effect() {
                self.effect(i, e);
                continue;
            }
            let Some(n) = node.poll_transmit(&mut buf) else { return };
            let me = node.me();
            let m = decode(&buf[..n]).unwrap_or_else(|e| panic!("node {} transmitted garbage: {e:?}", me.node.0));
            assert_eq!(m.header.sender, me, "a node transmitted under another name");
            let bytes = buf[..n].to_vec();
            if let Some(t) = self.transmitted.as_mut() {
                t.push(bytes.clone());
            }
            if self.history.len() >= KEEP {
                self.history.pop_front();
            }
            self.history.push_back((me.node, bytes.clone()));
            self.bus.push_back((me.node, bytes));
        }
    }

    fn effect(&mut self, i: usize, e: Effect) {
        match e {
            Effect::SetTimer { token, at } => push_bounded(&mut self.timers, (at.0, i, token)),
            Effect::Kernel { fs, op, .. } => {
                // The operations that the kernel answers.
                if matches!(
                    op,
                    KernelOp::MountFirst(_)
                        | KernelOp::Mount(_)
                        | KernelOp::MountSpectator
                        | KernelOp::RecoverJournal(_)
                ) {
                    push_bounded(&mut self.kernel, (i, fs, op));
                }
            }
            Effect::Fence { target } => push_bounded(&mut self.fences, (i, target)),
            Effect::Kill { .. } | Effect::ResetSelf | Effect::Incompatible { .. } | Effect::Notify(_) => {}
        }
    }

    /// Drain everything and deliver the bus, in order, to every live node
    /// (the sender included, as an agreed-order transport does).
    pub fn settle(&mut self) {
        for _ in 0..SETTLE_LIMIT {
            for i in 0..self.nodes.len() {
                self.drain(i);
            }
            let Some((from, bytes)) = self.bus.pop_front() else { return };
            for i in self.live() {
                self.input(i, Input::Deliver { from, bytes: &bytes });
            }
        }
    }

    fn hints(&self, i: usize) -> Hints {
        let members = (0..IDS.len())
            .map(|k| match self.nodes.get(k).and_then(|n| n.as_ref()) {
                Some(n) => n.me(),
                None => Member { node: NodeId(IDS[k]), inc: Incarnation(*self.incs.get(k).unwrap_or(&1)) },
            })
            .collect();
        match self.nodes.get(i).and_then(|n| n.as_ref()) {
            Some(n) => Hints {
                members,
                generation: n.generation(),
                groups: n.status().groups.iter().map(|g| (g.group, g.fs.clone(), g.generation)).collect(),
            },
            None => Hints { members, ..Hints::default() },
        }
    }

    /// The two nodes join one ring one after the other, as daemons
    /// starting on a healthy cluster do.
    pub fn bootstrap(&mut self) {
        let ring = self.ring;
        let all: Vec<NodeId> = IDS[..self.nodes.len()].iter().map(|n| NodeId(*n)).collect();
        // A daemon that has not started hears nothing.
        let mut waiting: Vec<Option<Box<Node>>> = self.nodes.iter_mut().skip(1).map(Option::take).collect();
        let mut up: Vec<NodeId> = Vec::new();
        for (i, &me) in all.iter().enumerate() {
            if i > 0 {
                self.nodes[i] = waiting[i - 1].take();
            }
            up.push(me);
            self.input(i, Input::Ring(RingEvent { ring, members: list(&all) }));
            self.input(i, Input::Quorum(QuorumEvent { ring, quorate: true, members: list(&all) }));
            let mut cc = Confchg { members: list(&up), ..Default::default() };
            let _ = cc.joined.push(MemberReason { node: me, reason: Reason::Join });
            for k in 0..=i {
                self.input(k, Input::Confchg(cc.clone()));
            }
            self.settle();
        }
    }

    /// Answer everything outstanding with success, fire every timer, until
    /// quiet (bounded).
    pub fn auto(&mut self) {
        for _ in 0..32 {
            self.settle();
            let mut moved = false;
            for (i, fs, op) in std::mem::take(&mut self.kernel) {
                moved = true;
                self.answer_kernel(i, fs, op, true);
            }
            for (i, fs) in std::mem::take(&mut self.first_pending) {
                moved = true;
                self.input(i, Input::Kernel(KernelEvent::FirstRecoveryDone { fs }));
            }
            for (i, target) in std::mem::take(&mut self.fences) {
                moved = true;
                self.input(i, Input::Fenced { target, ok: true });
            }
            self.settle();
            if !moved {
                if self.timers.is_empty() {
                    return;
                }
                self.timers.sort();
                let (at, i, t) = self.timers.remove(0);
                self.now = self.now.max(at);
                self.input(i, Input::Timer(t));
            }
        }
    }

    fn answer_kernel(&mut self, i: usize, fs: FsName, op: KernelOp, ok: bool) {
        let ev = match op {
            KernelOp::MountFirst(_) => {
                if ok {
                    push_bounded(&mut self.first_pending, (i, fs.clone()));
                }
                KernelEvent::MountResult { fs, ok }
            }
            KernelOp::Mount(_) | KernelOp::MountSpectator => KernelEvent::MountResult { fs, ok },
            KernelOp::RecoverJournal(jid) => KernelEvent::RecoveryDone { fs, jid, ok },
            _ => return,
        };
        self.input(i, Input::Kernel(ev));
    }

    fn ring_pick(&mut self, r: &mut Rd) -> u64 {
        let v = r.u8();
        match v % 4 {
            0 => self.ring,
            1 => {
                self.ring = self.ring.saturating_add(1 + u64::from(v >> 2));
                self.ring
            }
            2 => self.ring.saturating_sub(u64::from(v >> 2)),
            _ => r.u64(),
        }
    }

    fn reasons(r: &mut Rd) -> ReasonList {
        let n = r.u8() % 4;
        hv((0..n).map(|_| MemberReason {
            node: small_node(r),
            reason: Reason::from_u8(1 + r.u8() % 5).expect("1..=5 are reasons"),
        }))
    }

    /// One step of the program.
    pub fn step(&mut self, r: &mut Rd) {
        let b = r.u8();
        let target = if b & 0x80 != 0 && self.nodes.len() > 1 { 1 } else { 0 };
        let to: Vec<usize> = if b & 0x40 != 0 { self.live() } else { vec![target] };
        match b & 0x0f {
            0 => {
                let ring = self.ring_pick(r);
                let members = list(&node_set(r));
                for i in to {
                    self.input(i, Input::Ring(RingEvent { ring, members: members.clone() }));
                }
            }
            1 => {
                let members = list(&node_set(r));
                let cc = Confchg { members, joined: Self::reasons(r), left: Self::reasons(r) };
                for i in to {
                    self.input(i, Input::Confchg(cc.clone()));
                }
            }
            2 => {
                let ring = self.ring_pick(r);
                let quorate = r.bool();
                let members = list(&node_set(r));
                for i in to {
                    self.input(i, Input::Quorum(QuorumEvent { ring, quorate, members: members.clone() }));
                }
            }
            3 => {
                let from = if r.u8() % 16 == 0 { NodeId(r.u32()) } else { small_node(r) };
                let len = usize::from(r.u16()) % (MAX_MESSAGE + 64);
                let bytes = r.take(len);
                for i in to {
                    self.input(i, Input::Deliver { from, bytes });
                }
            }
            4 => {
                let m = build_message(r, &self.hints(target));
                let bytes = encode_vec(&m);
                // Mostly the true sender (past the sender check), sometimes
                // another transport sender.
                let from = if r.u8() % 8 == 0 { small_node(r) } else { m.header.sender.node };
                if b & 0x20 != 0 {
                    // Multicast: every node, in agreed order with the rest.
                    self.bus.push_back((from, bytes));
                } else {
                    for i in to {
                        self.input(i, Input::Deliver { from, bytes: &bytes });
                    }
                }
            }
            5 => {
                let sel = r.u8();
                let (i, t) = if sel & 1 == 0 && !self.timers.is_empty() {
                    let (_, i, t) = self.timers.remove(usize::from(sel >> 1) % self.timers.len());
                    (i, t)
                } else {
                    (target, TimerToken(r.u64()))
                };
                self.input(i, Input::Timer(t));
            }
            6 => {
                let sel = r.u8();
                let ok = r.bool();
                let (i, target) = if sel & 1 == 0 && !self.fences.is_empty() {
                    self.fences.remove(usize::from(sel >> 1) % self.fences.len())
                } else {
                    (target, any_member(r, &self.hints(target)))
                };
                self.input(i, Input::Fenced { target, ok });
            }
            7 => {
                let sel = r.u8();
                let ok = r.u8() % 4 != 0;
                if sel & 1 == 0 && !self.first_pending.is_empty() {
                    let (i, fs) = self.first_pending.remove(usize::from(sel >> 1) % self.first_pending.len());
                    self.input(i, Input::Kernel(KernelEvent::FirstRecoveryDone { fs }));
                } else if !self.kernel.is_empty() {
                    let (i, fs, op) = self.kernel.remove(usize::from(sel >> 1) % self.kernel.len());
                    self.answer_kernel(i, fs, op, ok);
                }
            }
            8 => {
                let fs = any_fs(r);
                let ev = match r.u8() % 4 {
                    0 => KernelEvent::MountResult { fs, ok: r.bool() },
                    1 => KernelEvent::FirstRecoveryDone { fs },
                    2 => KernelEvent::RecoveryDone { fs, jid: Jid(r.u16() % 300), ok: r.bool() },
                    _ => KernelEvent::Withdraw { fs },
                };
                for i in to {
                    self.input(i, Input::Kernel(ev.clone()));
                }
            }
            9 => {
                let fs = any_fs(r);
                let req = match r.u8() % 4 {
                    0 | 1 => {
                        let mode = any_mode(r);
                        let journals = if r.u8() % 8 == 0 { r.u16() } else { any_journals(r) };
                        Request::Mount { fs, mode, journals }
                    }
                    2 => Request::Unmount { fs },
                    _ => Request::Remount { fs, mode: any_mode(r) },
                };
                for i in to {
                    self.input(i, Input::Request(req.clone()));
                }
            }
            10 => self.now = self.now.saturating_add(u64::from(r.u16()) * 10),
            11 => {
                self.timers.sort();
                let due: Vec<(u64, usize, TimerToken)> =
                    self.timers.iter().copied().filter(|t| t.0 <= self.now).collect();
                self.timers.retain(|t| t.0 > self.now);
                for (_, i, t) in due {
                    self.input(i, Input::Timer(t));
                }
            }
            12 => self.auto(),
            13 | 14 => {
                if self.history.is_empty() {
                    return;
                }
                let k = usize::from(r.u8()) % self.history.len();
                let (from, mut bytes) = self.history[k].clone();
                if b & 0x0f == 14 {
                    for _ in 0..1 + r.u8() % 4 {
                        let at = usize::from(r.u16()) % bytes.len();
                        bytes[at] = r.u8();
                    }
                }
                for i in to {
                    self.input(i, Input::Deliver { from, bytes: &bytes });
                }
            }
            _ => {
                // The daemon restarts with a new incarnation (the transport
                // tells nobody: later confchgs in the program may).
                if let Some(inc) = self.incs.get_mut(target) {
                    *inc += 1;
                    let cfg = Config::new(NodeId(IDS[target]), Incarnation(*inc));
                    self.nodes[target] = Some(Box::new(Node::new(cfg)));
                }
            }
        }
        self.settle();
    }
}

/// Run a node program. A first byte with both top bits set ([`VS_PROGRAM`])
/// makes the rest a [`vs_node`] program instead. Otherwise the first byte
/// selects the setup: bit 0 starts two
/// nodes already joined in one ring, bit 1 runs two nodes at all, bit 2
/// (with bit 0) mounts `fs1` rw on both first. Every following step is one
/// byte selecting an input (low nibble), its receiver (bit 7: the second
/// node; bit 6: every node) and, for built messages, multicast (bit 5),
/// followed by that input's own bytes.
pub fn node(data: &[u8]) {
    if data.first().is_some_and(|f| f & VS_PROGRAM == VS_PROGRAM) {
        return vs_node(&data[1..]);
    }
    let mut r = Rd::new(data);
    let flags = r.u8();
    let mut sim = Sim::new(flags & 3 != 0);
    run(&mut sim, flags, &mut r);
}

/// [`node`] on a given simulation (corpus generation records its
/// transmissions).
pub fn run(sim: &mut Sim, flags: u8, r: &mut Rd) {
    if flags & 1 != 0 {
        sim.bootstrap();
        if flags & 4 != 0 {
            for i in 0..sim.nodes.len() {
                let fs = fs_name("fs1").expect("valid");
                sim.input(i, Input::Request(Request::Mount { fs, mode: Mode::Rw, journals: 4 }));
                sim.auto();
            }
        }
    }
    let mut steps = 0;
    while !r.is_empty() && steps < 2048 {
        steps += 1;
        sim.step(r);
    }
    sim.settle();
    for n in sim.nodes.iter().flatten() {
        check_status(n);
    }
}

// ------------------------------------------------------- known core bugs

/// Core panics that are known bugs, described in tests/CORE_BUGS.md, as
/// (file, message). The fuzz targets and the replay test end an input that
/// hits one quietly (a node is unusable after a panic), so the fuzzer keeps
/// looking for new ones. `COHORT_FUZZ_STRICT=1` reports them like any other
/// panic.
pub const KNOWN_CORE_PANICS: &[(&str, &str)] = &[
    // FUZZ-1..5 are fixed; add an entry here only while a found bug is open.
];

static STRICT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Report known core panics like any other (overrides `COHORT_FUZZ_STRICT`
/// for the whole process).
pub fn set_strict(on: bool) {
    STRICT.store(if on { 1 } else { 2 }, std::sync::atomic::Ordering::Relaxed);
}

fn strict() -> bool {
    match STRICT.load(std::sync::atomic::Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => std::env::var_os("COHORT_FUZZ_STRICT").is_some_and(|v| v != "0"),
    }
}

/// Is a panic at `file` with `msg` a known core bug (and are those
/// tolerated)?
pub fn is_known_panic(file: &str, msg: &str) -> bool {
    !strict() && KNOWN_CORE_PANICS.iter().any(|(f, m)| file.ends_with(f) && msg.contains(m))
}

thread_local! {
    /// Set by the panic hook: the last panic on this thread was a known one.
    static KNOWN_HIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Install (once) a panic hook that recognizes known core panics by
/// location and message, keeps quiet about them, and hands every other
/// one to the hook that was there (libFuzzer's, which reports the crash).
pub fn quiet_known_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            let msg = p.downcast_ref::<String>().map(String::as_str).or_else(|| p.downcast_ref::<&str>().copied());
            let file = info.location().map_or("", |l| l.file());
            let known = is_known_panic(file, msg.unwrap_or(""));
            KNOWN_HIT.with(|k| k.set(known));
            if !known {
                prev(info);
            }
        }));
    });
}

/// Run `f`; `Some` if it returned, `None` if it hit a known core panic.
/// Any other panic goes on.
pub fn tolerate_known<R>(f: impl FnOnce() -> R) -> Option<R> {
    quiet_known_panics();
    KNOWN_HIT.with(|k| k.set(false));
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(p) if KNOWN_HIT.with(|k| k.replace(false)) => {
            drop(p);
            None
        }
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// What a `cargo fuzz` target runs.
pub fn fuzz_entry(data: &[u8], f: fn(&[u8])) {
    let _ = tolerate_known(|| f(data));
}

/// The fuzz targets built without `--cfg fuzzing`: run every file named
/// on the command line (directories: every file in them).
pub fn replay_main(f: fn(&[u8])) {
    let mut files = Vec::new();
    for arg in std::env::args_os().skip(1) {
        let p = std::path::PathBuf::from(arg);
        if p.is_dir() {
            let mut v: Vec<_> =
                std::fs::read_dir(&p).expect("readable dir").map(|e| e.expect("dir entry").path()).collect();
            v.sort();
            files.extend(v);
        } else {
            files.push(p);
        }
    }
    let mut known = 0;
    for p in &files {
        let data = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        if tolerate_known(|| f(&data)).is_none() {
            known += 1;
            eprintln!("{}: known core panic", p.display());
        }
    }
    eprintln!("{} inputs replayed, {} hit known core panics", files.len(), known);
}

/// The `cluster` target: the input picks a simulator plan (cluster of 2 to
/// 9 nodes, quorum mode, delays, workload, fault schedule: all drawn from a
/// seed made of the first 8 bytes, the node range from the 9th); the run
/// must end with no violated invariant and no stall. The simulator checks
/// every safety property of DOMAIN.md after every step.
pub fn cluster(data: &[u8]) {
    let mut seed = [0u8; 8];
    for (i, b) in data.iter().take(8).enumerate() {
        seed[i] = *b;
    }
    let seed = u64::from_le_bytes(seed);
    let lo = 2 + u32::from(data.get(8).copied().unwrap_or(1) % 4);
    let hi = lo + u32::from(data.get(9).copied().unwrap_or(2) % 4);
    let r = cohort_sim::swarm::run_seed(seed, (lo, hi), false);
    if !matches!(r.outcome, cohort_sim::swarm::Outcome::Ok) {
        panic!("cluster seed {seed} nodes {lo}..{hi}: {:?}\n{}", r.outcome, r.trace);
    }
}

// ------------------------------------------------- vs (datagram transport)

/// The VS plaintext decoder (`cohort_vs::craft::check_frames`): never
/// panics, agrees with the receiver's validation, and every frame it accepts
/// re-encodes to exactly its bytes.
pub fn vs_frames(data: &[u8]) {
    let _ = craft::check_frames(data);
}

/// First byte of a [`node`] input that runs a [`vs_node`] program.
pub const VS_PROGRAM: u8 = 0xC0;

const VS_KEY: [u8; 32] = [0x15; 32];
/// Nodes 1..=3 run; node 4 is configured but never runs: the key holder
/// speaks as node 4 (any incarnation), so what it can do is bounded by what
/// the protocol accepts from a non-member (impersonating a running member
/// can break agreement, which is a key holder's power, not a bug).
const VS_RUNNING: u32 = 3;
const VS_HOSTILE: u32 = 4;

/// Three `Vs` nodes on an instant, lossless in-process network.
pub struct VsNet {
    pub nodes: Vec<Vs>,
    now: u64,
    queue: VecDeque<(u32, Dest, Vec<u8>)>,
    payload: Vec<u8>,
    /// Delivered (from, bytes) per node, in order.
    pub delivered: Vec<Vec<(u32, Vec<u8>)>>,
}

impl VsNet {
    pub fn new() -> VsNet {
        let all: NodeList = (1..=VS_HOSTILE).map(NodeId).collect();
        let nodes = (1..=VS_RUNNING)
            .map(|n| {
                let mut c = VsConfig::new(NodeId(n), Incarnation(100 + u64::from(n)), all.clone(), VS_KEY);
                c.heartbeat_ms = 20;
                c.fail_timeout_ms = 100;
                Vs::new(c).expect("valid config")
            })
            .collect();
        VsNet {
            nodes,
            now: 0,
            queue: VecDeque::new(),
            payload: vec![0u8; vs::MAX_MESSAGE],
            delivered: vec![Vec::new(); VS_RUNNING as usize],
        }
    }

    fn flush(&mut self) {
        let mut buf = [0u8; MAX_DATAGRAM];
        loop {
            for (i, v) in self.nodes.iter_mut().enumerate() {
                while let Some(t) = v.poll_transmit(&mut buf) {
                    self.queue.push_back((i as u32 + 1, t.dest, buf[..t.len].to_vec()));
                }
                while let Some(e) = v.poll_event(&mut self.payload) {
                    if let VsEvent::Deliver { from, len } = e {
                        self.delivered[i].push((from.0, self.payload[..len].to_vec()));
                    }
                }
            }
            let Some((from, dest, bytes)) = self.queue.pop_front() else { break };
            let now = Instant(self.now);
            for (i, v) in self.nodes.iter_mut().enumerate() {
                let to = i as u32 + 1;
                if to != from && matches!(dest, Dest::All) || dest == Dest::Node(NodeId(to)) {
                    let _ = v.handle_datagram(now, Some(NodeId(from)), &bytes);
                }
            }
        }
    }

    /// Run every timer up to `ms` from now.
    pub fn run_ms(&mut self, ms: u64) {
        let end = self.now.saturating_add(ms);
        loop {
            self.flush();
            let next = self.nodes.iter().filter_map(|v| v.next_timeout()).map(|t| t.0).min().unwrap_or(end);
            if next > end {
                self.now = end;
                break;
            }
            self.now = self.now.max(next);
            let now = Instant(self.now);
            for v in &mut self.nodes {
                if v.next_timeout().is_some_and(|t| t <= now) {
                    v.handle_timeout(now);
                }
            }
        }
        self.flush();
    }

    /// Hand one datagram of the key holder to node `to` (1-based).
    pub fn inject(&mut self, to: u32, bytes: &[u8]) {
        let now = Instant(self.now);
        if let Some(v) = self.nodes.get_mut(to as usize - 1) {
            let _ = v.handle_datagram(now, Some(NodeId(VS_HOSTILE)), bytes);
        }
        self.flush();
    }

    /// The three running nodes share one view of all three.
    pub fn agreed(&self) -> bool {
        let v = self.nodes[0].view();
        v.members.len() == VS_RUNNING as usize && self.nodes.iter().all(|n| n.view() == v)
    }
}

impl Default for VsNet {
    fn default() -> Self {
        VsNet::new()
    }
}

/// A program for three `Vs` nodes and a key holder speaking as node 4 (see
/// [`VS_RUNNING`]). Each step is one byte, low two bits:
///
/// * 0: raw plaintext from the input (incarnation byte, counter byte,
///   receiver byte, length byte, then the bytes), sealed as node 4;
/// * 1: one well-formed frame naming a chosen view seq (kind byte, then a
///   selector byte: near `u64::MAX`, just past the receiver's jump bound,
///   just inside it, or 8 raw bytes), sealed as node 4;
/// * 2: let time pass (a byte of milliseconds);
/// * 3: node (byte % 3) + 1 broadcasts a message.
///
/// Checked: no panic; every view seq stays within the jump bound of each
/// installed view (`seq <= 1 + views_installed * (MAX_VIEW_JUMP + 1)`); once
/// the key holder stops, the three nodes agree on a view of all three again
/// and deliver every message broadcast in the final view, in one order.
pub fn vs_node(data: &[u8]) {
    let mut r = Rd::new(data);
    let mut net = VsNet::new();
    net.run_ms(400);
    assert!(net.agreed(), "three honest nodes did not form a view: {:?}", net.nodes[0].view());
    let mut counter = 1u64;
    let mut steps = 0;
    let mut out = [0u8; MAX_DATAGRAM];
    let mut plain = [0u8; craft::MAX_FRAMES];
    while !r.is_empty() && steps < 256 {
        steps += 1;
        let op = r.u8();
        match op & 3 {
            0 | 1 => {
                let inc = Incarnation(u64::from(r.u8() % 4));
                // Mostly fresh counters, sometimes an old one (a replay).
                let c = r.u8();
                if c < 200 {
                    counter += 1;
                }
                let to = 1 + u32::from(r.u8()) % VS_RUNNING;
                let len = if op & 3 == 0 {
                    let want = usize::from(r.u8()) * 4;
                    let bytes = r.take(want.min(craft::MAX_FRAMES));
                    plain[..bytes.len()].copy_from_slice(bytes);
                    bytes.len()
                } else {
                    let kind = craft::Kind::ALL[usize::from(r.u8()) % craft::Kind::ALL.len()];
                    let base = net.nodes[to as usize - 1].view().id;
                    let k = u64::from(r.u8());
                    let view = match r.u8() % 4 {
                        0 => u64::MAX - k,
                        1 => base.saturating_add(MAX_VIEW_JUMP).saturating_add(1 + k),
                        2 => base.saturating_add(k),
                        _ => r.u64(),
                    };
                    let members: Vec<NodeId> = (1..=VS_HOSTILE).map(NodeId).collect();
                    match craft::frame(kind, view, NodeId(VS_HOSTILE), inc, &members, &mut plain) {
                        Some(n) => n,
                        None => continue,
                    }
                };
                let n = craft::seal(&VS_KEY, NodeId(VS_HOSTILE), inc, counter, 0, &plain[..len], &mut out)
                    .expect("fits a datagram");
                net.inject(to, &out[..n]);
            }
            2 => net.run_ms(u64::from(r.u8())),
            _ => {
                let n = 1 + usize::from(r.u8()) % VS_RUNNING as usize;
                let now = Instant(net.now);
                let _ = net.nodes[n - 1].broadcast(now, &[n as u8, steps as u8]);
                net.flush();
            }
        }
        check_vs_bound(&net);
    }
    // The key holder stops: node 4 times out, suspicions expire.
    let mut waited = 0;
    while !net.agreed() && waited < 10_000 {
        net.run_ms(50);
        waited += 50;
    }
    assert!(
        net.agreed(),
        "no agreed view of 1..=3 10 s after the key holder stopped: {:?}",
        net.nodes.iter().map(|n| n.view()).collect::<Vec<_>>()
    );
    check_vs_bound(&net);
    // Honest traffic flows in that view, in one order.
    for v in &mut net.delivered {
        v.clear();
    }
    for k in 0..6u8 {
        let n = usize::from(k) % VS_RUNNING as usize;
        let now = Instant(net.now);
        net.nodes[n].broadcast(now, &[0xEE, k]).expect("room for a message");
        net.run_ms(5);
    }
    net.run_ms(500);
    if net.agreed() {
        let want: Vec<_> = net.delivered[0].iter().filter(|(_, p)| p.first() == Some(&0xEE)).cloned().collect();
        assert_eq!(want.len(), 6, "messages lost: {:?}", net.delivered[0]);
        for d in &net.delivered {
            let got: Vec<_> = d.iter().filter(|(_, p)| p.first() == Some(&0xEE)).cloned().collect();
            assert_eq!(got, want, "delivery order differs");
        }
    }
}

fn check_vs_bound(net: &VsNet) {
    for v in &net.nodes {
        let views = v.stats().views_installed;
        let bound = views.saturating_mul(MAX_VIEW_JUMP + 1).saturating_add(1);
        assert!(v.view().id <= bound, "view seq {:#x} after {views} views: past the jump bound", v.view().id);
    }
}
