//! The simulated cluster: nodes running the real `cohort-core`, a
//! corosync-like membership/transport, a simulated kernel per node, shared
//! disks, a fence device, simulated time and an event queue.
//!
//! Everything is single-threaded and driven by one seeded [`Rng`], so a seed
//! gives exactly one run (see [`World::trace_hash`]).
//!
//! ## The corosync model
//!
//! * A node is *visible* when it is powered, not paused and its transport is
//!   alive. Visible nodes with the same network label form a component.
//! * A change of the components (after `ring_delay`, the token timeout) forms
//!   new rings. Ring seqs follow corosync: the new seq is the largest seq any
//!   member has seen plus 4 (so both sides of a split may share a seq, and a
//!   merge exceeds both); `set ring_seq global` makes them globally unique.
//! * Each member's daemon gets, in its ordered stream: a confchg with the
//!   lost processes (NodeDown), a confchg with the new ones (NodeUp), then the
//!   ring event. Who is "lost" follows EVS's transitional configuration: the
//!   processes that came from the same old ring stay, everybody else leaves
//!   and (if present) re-joins as NodeUp. A paused node that resumes therefore
//!   sees everybody leave and come back, like a corosync that missed tokens.
//! * A daemon start is a ring event (the current ring) and a Join confchg to
//!   every group member; a daemon that dies while its node stays up is a
//!   ProcDown confchg.
//! * Messages: a multicast is sequenced in the sender's current ring after a
//!   network delay, then appended to every group member's ordered stream
//!   (the sender's too), each with its own small processing delay. Streams
//!   are FIFO, so all members see one total order. At a ring change the
//!   pending messages of the old ring are flushed first (virtual synchrony),
//!   unless `carryover` is on: then the not-yet-sequenced ones are sent again
//!   in the sender's new ring, like totem's send queue.
//! * Quorum events travel on their own per-node stream with their own delay.
//!
//! ## The udp model
//!
//! With `Model::Udp` there is no simulated membership service: every daemon
//! runs the core's own datagram transport (`cohort_vs::Vs`) over a
//! simulated lossy network, and the views it installs are the sim's rings.
//! See `world/udp.rs`.
//!
//! ## Faults and their ground truth
//!
//! * crash / fence: power off; daemon and kernel state are gone.
//! * ResetSelf (and `Kill` from a merge winner): the node reboots; it powers
//!   on again after `restart_delay` and its daemon starts with a new
//!   incarnation (incarnations are persisted per node, like the adapter).
//! * pause: the node stops processing anything (its inputs queue up) and
//!   drops out of the ring; resume processes the backlog with stale state and
//!   merges back.
//! * kill-transport: the node's corosync dies; it drops out of the ring and
//!   its daemon stops (the adapter exits on a dead transport), but the node
//!   stays powered with its kernel mounts: it must be fenced before its
//!   journal may be replayed. `restart` reboots it.

use crate::invariants::{self, Invariants, Property, Violation};
use crate::kernel::{Disk, Inject, KFs, KPhase, Writer};
use crate::rng::Rng;
use crate::trace::{self, mask, Trace, TraceRec, What};
use cohort_core::gcs::{Confchg, MemberReason, NodeList, QuorumEvent, QuorumMode, Reason, RingEvent};
use cohort_core::node::{Effect, HandleError, Input, KernelEvent, KernelOp, MountError, Notice, Request, TimerToken};
use cohort_core::status::Status;
use cohort_core::wire::{self, Mode, MAX_MESSAGE};
use cohort_core::{Config, Generation, GroupId, Incarnation, Instant, Member, Node, NodeId};
use cohort_vs::{self as vs, Dest, Vs, VsConfig, VsEvent, VsRecvError, VsSendError, MAX_DATAGRAM, SEND_WINDOW};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

mod udp;

pub const MAX_SIM_NODES: u32 = 32;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Model {
    #[default]
    Corosync,
    Udp,
}

/// The cluster key every simulated `Vs` shares (udp model).
pub const SIM_KEY: [u8; 32] = [0x5a; 32];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqMode {
    /// New seq = largest seq of the members + 4 (corosync).
    Corosync,
    /// One global counter.
    Global,
}

/// An inclusive range of milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range(pub u64, pub u64);

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: u32,
    pub model: Model,
    pub quorum: QuorumMode,
    /// Journals given with mount requests.
    pub journals: u16,
    pub seq_mode: SeqMode,
    pub carryover: bool,
    /// Sender to sequencing.
    pub net_delay: Range,
    /// Sequencing to processing, per receiver.
    pub jitter: Range,
    pub quorum_delay: Range,
    /// Fault to ring change (token timeout).
    pub ring_delay: Range,
    pub mount_delay: Range,
    pub first_recovery_delay: Range,
    pub recovery_delay: Range,
    pub fence_delay: Range,
    /// Reset/kill to power on.
    pub restart_delay: Range,
    /// Power on to daemon start.
    pub boot_delay: Range,
    pub kill_delay: Range,
    pub fence_retry_ms: u64,
    pub recovery_retry_ms: u64,
    /// A successful fence powers the target off (`false`) or power-cycles
    /// it (`true`, `set fence_action reboot`).
    pub fence_reboot: bool,
    pub trace_keep: usize,
    pub live_trace: bool,
    /// Upper bound of processed events (a message storm is a violation).
    pub event_budget: u64,
    /// udp model: datagrams lost (`drop N%`), duplicated (`dup N%`), in
    /// percent; `reorder on` gives every datagram its own delay from
    /// `net_delay` (off: FIFO per link).
    pub loss_pct: u32,
    pub dup_pct: u32,
    pub reorder: bool,
    /// udp model: the `Vs` heartbeat interval and failure timeout.
    pub vs_heartbeat_ms: u64,
    pub vs_fail_ms: u64,
}

impl SimConfig {
    pub fn new(nodes: u32) -> SimConfig {
        SimConfig {
            nodes,
            model: Model::Corosync,
            quorum: QuorumMode::Majority,
            journals: 8,
            seq_mode: SeqMode::Corosync,
            carryover: false,
            net_delay: Range(1, 3),
            jitter: Range(0, 1),
            quorum_delay: Range(0, 3),
            ring_delay: Range(100, 100),
            mount_delay: Range(20, 50),
            first_recovery_delay: Range(50, 100),
            recovery_delay: Range(50, 100),
            fence_delay: Range(200, 300),
            restart_delay: Range(1000, 1000),
            boot_delay: Range(200, 200),
            kill_delay: Range(10, 10),
            fence_retry_ms: 1000,
            recovery_retry_ms: 1000,
            fence_reboot: false,
            trace_keep: 50,
            live_trace: false,
            event_budget: 20_000_000,
            loss_pct: 0,
            dup_pct: 0,
            reorder: false,
            vs_heartbeat_ms: vs::DEFAULT_HEARTBEAT_MS,
            vs_fail_ms: vs::DEFAULT_FAIL_TIMEOUT_MS,
        }
    }
}

/// A daemon instance: node and incarnation.
pub type Inst = (u32, u64);

#[derive(Debug)]
pub enum KDone {
    MountResult,
    FirstRecoveryDone,
    RecoveryDone(u16),
}

#[derive(Debug)]
pub enum CpgItem {
    /// (sim ring, group lifetime in that ring, event)
    Ring(usize, u64, Box<RingEvent>),
    Confchg(Box<Confchg>),
    Msg(u32, Rc<[u8]>),
}

/// An input waiting in a node's inbox (processed in arrival order, frozen
/// while the node is paused).
#[derive(Debug)]
pub enum NodeIn {
    Cpg(u64, CpgItem),
    Quorum(u64, Box<QuorumEvent>),
    Timer(u64, TimerToken),
    Fenced(u64, Member, bool),
    KernelDone { boot: u64, fs: Rc<str>, op: u64, done: KDone },
    Withdraw { boot: u64, fs: Rc<str> },
}

/// Scheduled events. udp model: `Datagram` arrives at `to`; `VsTimer` is a
/// node's transport timer (valid while `tok` is current).
#[derive(Debug)]
enum Ev {
    Node(u32, NodeIn),
    Sequence(usize),
    Reconfigure,
    DaemonStart { node: u32, boot: u64 },
    PowerOn { node: u32 },
    FenceExec { actor: u32, actor_boot: u64, actor_inc: u64, target: Member, ok: bool },
    KillExec { node: u32, inc: u64 },
    Datagram { to: u32, from: u32, bytes: Rc<[u8]> },
    VsTimer { node: u32, tok: u64 },
}

impl Ev {
    /// Timers and (udp model) datagrams and transport timers: background
    /// activity that never stops, not counted as "in flight".
    fn is_timer(&self) -> bool {
        matches!(self, Ev::Node(_, NodeIn::Timer(..)) | Ev::Datagram { .. } | Ev::VsTimer { .. })
    }
}

pub struct Daemon {
    pub node: Box<Node>,
    pub inc: u64,
    /// Completed a mount-group sync (emitted GroupSynced).
    pub stateful: bool,
    /// Sim ring of the last ring event it processed.
    pub ring: Option<usize>,
    /// Ring seqs it processed, with their sim ring and the daemon group's
    /// lifetime in that ring (a group that emptied and was founded again in
    /// the same ring restarts its epochs).
    pub seq_rings: Vec<(u64, (usize, u64))>,
    pub last_gen: Generation,
    pub last_anchored: Option<Generation>,
    pub group_gens: Vec<(GroupId, Generation)>,
    status: Option<std::rc::Rc<Status>>,
    /// FNV-1a chain over every `(now, input)` this daemon's `Node` handled
    /// (the explorer's stand-in for the core's state: `Node` is sans-IO and
    /// deterministic, so equal config + equal input history = equal state).
    pub hist: u64,
}

impl Daemon {
    pub fn ring_of_seq(&self, seq: u64) -> Option<(usize, u64)> {
        self.seq_rings.iter().rev().find(|(s, _)| *s == seq).map(|(_, r)| *r)
    }
}

pub struct SimNode {
    pub id: u32,
    pub powered: bool,
    pub paused: bool,
    pub transport_dead: bool,
    pub boot: u64,
    /// Persisted incarnation counter (the adapter's state file).
    pub inc_store: u64,
    /// Persisted largest ring seq (corosync's ringid file).
    pub max_seq: u64,
    pub ring: Option<usize>,
    pub daemon: Option<Daemon>,
    pub inbox: VecDeque<NodeIn>,
    /// corosync model: what the daemon sent while its ring was dead (see
    /// `RingInfo::dead`), with its incarnation: sent in its next ring.
    held: Vec<(u64, Rc<[u8]>)>,
    pub kernel: BTreeMap<String, KFs>,
    /// Mode of the last mount/remount request per fs (what the host mounts).
    pub modes: BTreeMap<String, Mode>,
    pub inj: Inject,
    last_cpg_t: u64,
    last_q_t: u64,
    /// udp model: the daemon's transport (same incarnation as the daemon;
    /// `None` when the daemon is down or its transport was killed).
    pub vs: Option<Box<Vs>>,
    /// udp model: core messages waiting for room in the `Vs` send window
    /// (FIFO, never dropped).
    pub outq: VecDeque<Rc<[u8]>>,
    vs_tok: u64,
    vs_timer_at: Option<u64>,
    vs_fired_at: Option<u64>,
    vs_pumping: bool,
}

impl SimNode {
    pub fn visible(&self) -> bool {
        self.powered && !self.paused && !self.transport_dead
    }
    pub fn inst(&self) -> Option<Inst> {
        self.daemon.as_ref().map(|d| (self.id, d.inc))
    }
}

pub struct RingInfo {
    pub seq: u64,
    pub members: Vec<u32>,
    /// Nodes whose daemon is in the CPG group in this ring.
    pub group: BTreeSet<u32>,
    /// Bumped when the group is founded again after it emptied.
    pub lifetime: u64,
    pub quorate: bool,
    pending: VecDeque<(u64, u32, u64, Rc<[u8]>)>,
    last_ts: u64,
    /// Other members formed newer rings without the ones still here (a
    /// paused node's old ring): its token is gone, nothing sent in it any
    /// more is ordered; it waits for the sender's next ring.
    dead: bool,
    /// udp model: the daemon instances that installed this view.
    pub reporters: Vec<Inst>,
}

/// Facts the scenario expectations look at (since start or the last
/// matching `expect`).
#[derive(Default, Debug)]
pub struct Log {
    pub resets: BTreeSet<u32>,
    pub fenced: BTreeSet<u32>,
    pub mount_errors: Vec<(u32, String, MountError)>,
    pub first_mounters: BTreeMap<String, Vec<u32>>,
    pub recovered: Vec<(String, u16, u32)>,
    pub merge_partitions_max: u8,
    pub stale_merge_notices: BTreeSet<u32>,
    pub handle_notes: u64,
    /// Totals for coverage statistics (never cleared by expectations).
    pub totals: Totals,
}

/// How often the interesting things happened in a run.
#[derive(Default, Debug, Clone, Copy)]
pub struct Totals {
    pub rings: u64,
    pub resets: u64,
    pub fences_ok: u64,
    pub fences_failed: u64,
    pub replays_ok: u64,
    pub replays_failed: u64,
    pub first_mounts: u64,
    pub mount_errors: u64,
    pub stale_merge_verdicts: u64,
    pub group_syncs: u64,
    /// udp model: views seen (distinct sim rings).
    pub views: u64,
}

impl Totals {
    pub fn add(&mut self, o: &Totals) {
        self.rings += o.rings;
        self.resets += o.resets;
        self.fences_ok += o.fences_ok;
        self.fences_failed += o.fences_failed;
        self.replays_ok += o.replays_ok;
        self.replays_failed += o.replays_failed;
        self.first_mounts += o.first_mounts;
        self.mount_errors += o.mount_errors;
        self.stale_merge_verdicts += o.stale_merge_verdicts;
        self.group_syncs += o.group_syncs;
        self.views += o.views;
    }
}

/// FIFO channel of a queued event for the explorer: events of one channel
/// happen in queue order; `Some(seq)` = a channel of its own.
fn explore_channel(seq: u64, ev: &Ev) -> (u8, u64, Option<u64>) {
    match ev {
        Ev::Node(n, NodeIn::Cpg(..)) => (0, u64::from(*n), None),
        Ev::Node(n, NodeIn::Quorum(..)) => (1, u64::from(*n), None),
        Ev::Sequence(r) => (2, *r as u64, None),
        Ev::Reconfigure => (3, 0, None),
        Ev::Datagram { to, from, .. } => (4, u64::from(*to) << 32 | u64::from(*from), None),
        _ => (9, 0, Some(seq)),
    }
}

pub struct World {
    pub cfg: SimConfig,
    pub rng: Rng,
    pub now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    /// Queued events that are not timers (for "settled").
    busy: u64,
    pub nodes: Vec<SimNode>,
    pub rings: Vec<RingInfo>,
    global_seq: u64,
    pub net: Vec<u32>,
    next_label: u32,
    pub disks: BTreeMap<String, Disk>,
    pub fs_names: Vec<String>,
    pub trace: Trace,
    pub inv: Invariants,
    pub violations: Vec<Violation>,
    pub halted: bool,
    /// Liveness phase: every node that goes down (fenced, crashed) is
    /// powered on again after `restart_delay`, like an operator would.
    pub auto_restart: bool,
    pub log: Log,
    pub events: u64,
    pub steps: u64,
    pending_notices: Vec<Notice>,
    reset_pending: Option<u32>,
    next_mount_id: u64,
    buf: Vec<u8>,
    /// udp model: datagram and delivery buffers.
    dgram: Vec<u8>,
    payload: Vec<u8>,
    /// udp model: view id -> sim rings with that id (ids of boot
    /// singletons, and of views of a completely restarted cluster, repeat).
    view_rings: BTreeMap<u64, Vec<usize>>,
    /// udp model: last arrival time per link (FIFO unless `reorder`).
    link_t: Vec<u64>,
    /// udp model: one-way cuts (from, to): datagrams from `from` do not
    /// reach `to` (`cut A>B`; `heal` clears them).
    pub cuts: BTreeSet<(u32, u32)>,
    /// Explorer: keep every daemon's input-history hash (`Daemon::hist`).
    pub hash_inputs: bool,
}

fn node_list(v: &[u32]) -> NodeList {
    let mut l = NodeList::new();
    for n in v {
        let _ = l.push(NodeId(*n));
    }
    l
}

fn reasons(l: &[(u32, Reason)]) -> cohort_core::gcs::ReasonList {
    let mut r = cohort_core::gcs::ReasonList::new();
    for (n, why) in l {
        let _ = r.push(MemberReason { node: NodeId(*n), reason: *why });
    }
    r
}

impl World {
    pub fn new(cfg: SimConfig, seed: u64) -> World {
        invariants::robustness::install_panic_hook();
        let n = cfg.nodes.clamp(1, MAX_SIM_NODES);
        let mut nodes = Vec::with_capacity(n as usize + 1);
        for id in 0..=n {
            nodes.push(SimNode {
                id,
                powered: false,
                paused: false,
                transport_dead: false,
                boot: 0,
                inc_store: 0,
                max_seq: 0,
                ring: None,
                daemon: None,
                inbox: VecDeque::new(),
                held: Vec::new(),
                kernel: BTreeMap::new(),
                modes: BTreeMap::new(),
                inj: Inject::default(),
                last_cpg_t: 0,
                last_q_t: 0,
                vs: None,
                outq: VecDeque::new(),
                vs_tok: 0,
                vs_timer_at: None,
                vs_fired_at: None,
                vs_pumping: false,
            });
        }
        let trace = Trace::new(cfg.trace_keep, cfg.live_trace);
        let mut w = World {
            cfg,
            rng: Rng::new(seed),
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            busy: 0,
            nodes,
            rings: Vec::new(),
            global_seq: 0,
            net: vec![0; n as usize + 1],
            next_label: 1000,
            disks: BTreeMap::new(),
            fs_names: Vec::new(),
            trace,
            inv: Invariants::default(),
            violations: Vec::new(),
            halted: false,
            auto_restart: false,
            log: Log::default(),
            events: 0,
            steps: 0,
            pending_notices: Vec::new(),
            reset_pending: None,
            next_mount_id: 0,
            buf: vec![0u8; MAX_MESSAGE],
            dgram: vec![0u8; MAX_DATAGRAM],
            payload: vec![0u8; vs::MAX_MESSAGE.max(MAX_MESSAGE)],
            view_rings: BTreeMap::new(),
            link_t: vec![0; (n as usize + 1) * (n as usize + 1)],
            cuts: BTreeSet::new(),
            hash_inputs: false,
        };
        w.cfg.nodes = n;
        w
    }

    /// Power every node on (the daemons start after the first ring forms).
    pub fn boot(&mut self) {
        for n in 1..=self.cfg.nodes {
            self.power_on(n);
        }
    }

    pub fn node_ids(&self) -> impl Iterator<Item = u32> {
        1..=self.cfg.nodes
    }

    pub fn trace_hash(&self) -> u64 {
        self.trace.hash()
    }

    // ------------------------------------------------------------------
    // Event queue

    fn schedule(&mut self, at: u64, ev: Ev) {
        let at = at.max(self.now);
        self.seq += 1;
        if !ev.is_timer() {
            self.busy += 1;
        }
        self.queue.insert((at, self.seq), ev);
    }

    fn delay(&mut self, r: Range) -> u64 {
        self.rng.range(r.0, r.1)
    }

    /// Process events up to and including time `t`, then set the clock to `t`.
    pub fn run_until(&mut self, t: u64) {
        while !self.halted {
            let Some((&(at, _), _)) = self.queue.first_key_value() else { break };
            if at > t {
                break;
            }
            self.pop_one();
        }
        if !self.halted {
            self.now = self.now.max(t);
        }
    }

    /// Run until `pred` holds (checked every `every` ms) or `max` ms passed.
    /// Returns whether it held.
    pub fn run_until_pred(&mut self, max: u64, every: u64, mut pred: impl FnMut(&mut World) -> bool) -> bool {
        let deadline = self.now + max;
        loop {
            if self.halted {
                return false;
            }
            if pred(self) {
                return true;
            }
            if self.now >= deadline {
                return false;
            }
            let next = (self.now + every).min(deadline);
            self.run_until(next);
        }
    }

    fn pop_one(&mut self) {
        let Some(((at, _), ev)) = self.queue.pop_first() else { return };
        self.fire(at, ev);
    }

    /// The explorer's choice points among queued events (see
    /// `explore.rs`): the head of every FIFO channel among the events due
    /// at the earliest queued time.
    pub fn explore_enabled(&self) -> Vec<(u64, u64)> {
        let Some((&(t0, _), _)) = self.queue.first_key_value() else { return Vec::new() };
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (&(at, seq), ev) in self.queue.range((t0, 0)..=(t0, u64::MAX)) {
            if seen.insert(explore_channel(seq, ev)) {
                out.push((at, seq));
            }
        }
        out
    }

    /// Describe a queued event (explorer step lists).
    pub fn explore_describe(&self, key: (u64, u64)) -> String {
        self.queue.get(&key).map_or_else(|| "?".into(), |ev| format!("{ev:?}"))
    }

    /// Process one queued event chosen by the explorer.
    pub fn explore_fire(&mut self, key: (u64, u64)) {
        if let Some(ev) = self.queue.remove(&key) {
            self.fire(key.0, ev);
        }
    }

    /// Whether a queued event has a failing outcome the explorer can choose
    /// instead (a fence device that reports failure, a kernel mount that
    /// fails, a journal replay that fails).
    pub fn explore_failable(&self, key: (u64, u64)) -> bool {
        match self.queue.get(&key) {
            Some(Ev::FenceExec { ok, .. }) => *ok,
            Some(Ev::Node(_, NodeIn::KernelDone { done, .. })) => {
                matches!(done, KDone::MountResult | KDone::RecoveryDone(_))
            }
            _ => false,
        }
    }

    /// Process a queued event with its failing outcome (see
    /// [`World::explore_failable`]).
    pub fn explore_fire_failed(&mut self, key: (u64, u64)) {
        let Some(mut ev) = self.queue.remove(&key) else { return };
        let mut armed = None;
        match &mut ev {
            Ev::FenceExec { ok, .. } => *ok = false,
            Ev::Node(n, NodeIn::KernelDone { fs, done, .. }) => {
                let recovery = matches!(done, KDone::RecoveryDone(_));
                let inj = &mut self.nodes[*n as usize].inj;
                let map = if recovery { &mut inj.recovery_fail } else { &mut inj.mount_error };
                *map.entry(fs.to_string()).or_default() += 1;
                armed = Some((*n, fs.to_string(), recovery));
            }
            _ => {}
        }
        self.fire(key.0, ev);
        // An injection the event did not consume (a stale result) must not
        // fail a later operation.
        if let Some((n, fs, recovery)) = armed {
            let inj = &mut self.nodes[n as usize].inj;
            let map = if recovery { &mut inj.recovery_fail } else { &mut inj.mount_error };
            if map.get(&fs).is_some_and(|k| *k > 0) {
                Inject::take(map, &fs);
            }
        }
    }

    /// A hash of everything in the world that affects its future (see
    /// `explore.rs`): nodes (the core by its input history), rings, the
    /// queue per FIFO channel (relative order across channels is not a
    /// choice the explorer depends on), disks, network, checker state.
    pub fn state_hash(&self) -> u64 {
        use std::fmt::Write;
        let mut s = String::with_capacity(4096);
        let _ = write!(
            s,
            "now={} gs={} nl={} rp={:?} pn={:?} nm={} fs={:?} net={:?} cuts={:?} halted={} v={};",
            self.now,
            self.global_seq,
            self.next_label,
            self.reset_pending,
            self.pending_notices,
            self.next_mount_id,
            self.fs_names,
            self.net,
            self.cuts,
            self.halted,
            self.violations.len()
        );
        for nd in &self.nodes {
            let _ = write!(
                s,
                "N{} p={} pa={} td={} b={} is={} ms={} r={:?} ib={:?} h={:?} k={:?} m={:?} inj={:?} ",
                nd.id,
                nd.powered,
                nd.paused,
                nd.transport_dead,
                nd.boot,
                nd.inc_store,
                nd.max_seq,
                nd.ring,
                nd.inbox,
                nd.held,
                nd.kernel,
                nd.modes,
                nd.inj
            );
            if let Some(d) = &nd.daemon {
                let _ = write!(
                    s,
                    "D inc={} st={} r={:?} sr={:?} lg={:?} la={:?} gg={:?} h={:x};",
                    d.inc, d.stateful, d.ring, d.seq_rings, d.last_gen, d.last_anchored, d.group_gens, d.hist
                );
            }
        }
        for r in &self.rings {
            let _ = write!(
                s,
                "R{} {:?} {:?} {} {} {:?} {} {};",
                r.seq, r.members, r.group, r.lifetime, r.quorate, r.pending, r.dead, r.last_ts
            );
        }
        let mut chans: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (&(at, seq), ev) in &self.queue {
            let c = explore_channel(seq, ev);
            let key = match c {
                (_, _, Some(_)) => format!("u{at}:{ev:?}"),
                (k, n, None) => format!("c{k}/{n}"),
            };
            chans.entry(key).or_default().push(format!("{at}:{ev:?}"));
        }
        let _ = write!(s, "Q{chans:?};D{:?};I{:?}", self.disks, self.inv);
        crate::explore::fnv(crate::explore::FNV_OFFSET, s.as_bytes())
    }

    fn fire(&mut self, at: u64, ev: Ev) {
        self.now = at;
        if !ev.is_timer() {
            self.busy -= 1;
        }
        self.events += 1;
        if self.events > self.cfg.event_budget {
            self.violate(
                Property::Robustness,
                format!("event budget of {} exhausted (message storm?)", self.cfg.event_budget),
            );
            return;
        }
        if self.queue.len() > 2_000_000 {
            self.violate(Property::Robustness, format!("simulator event queue grew to {}", self.queue.len()));
            return;
        }
        match ev {
            Ev::Node(n, item) => {
                let node = &mut self.nodes[n as usize];
                if !node.powered {
                    return;
                }
                node.inbox.push_back(item);
                if node.inbox.len() > 200_000 {
                    self.violate(Property::Robustness, format!("node {n} inbox grew to 200000 inputs"));
                    return;
                }
                self.process_inbox(n);
            }
            Ev::Sequence(r) => self.sequence(r),
            Ev::Reconfigure => self.reconfigure(),
            Ev::DaemonStart { node, boot } => self.daemon_start(node, boot),
            Ev::PowerOn { node } => self.power_on(node),
            Ev::FenceExec { actor, actor_boot, actor_inc, target, ok } => {
                self.fence_exec(actor, actor_boot, actor_inc, target, ok)
            }
            Ev::KillExec { node, inc } => {
                if self.nodes[node as usize].inst() == Some((node, inc)) {
                    self.log.resets.insert(node);
                    self.log.totals.resets += 1;
                    self.reboot(node, "killed by merge winner");
                }
            }
            Ev::Datagram { to, from, bytes } => self.vs_receive(to, from, &bytes),
            Ev::VsTimer { node, tok } => {
                let nd = &mut self.nodes[node as usize];
                if nd.vs_tok != tok || nd.vs_timer_at.is_none() {
                    return;
                }
                nd.vs_timer_at = None;
                // A paused node's timers do not fire; `resume` catches up.
                if nd.powered && !nd.paused && nd.vs.is_some() {
                    self.vs_kick(node);
                }
            }
        }
    }

    /// Nothing in flight but timers, every powered node has its daemon, and
    /// every running, unpaused daemon is stable.
    pub fn settled(&mut self) -> bool {
        if self.busy > 0 {
            return false;
        }
        if self.udp() && !self.udp_settled() {
            return false;
        }
        for n in 1..=self.cfg.nodes {
            let node = &self.nodes[n as usize];
            if node.powered && !node.transport_dead && node.daemon.is_none() {
                return false;
            }
            if node.paused || node.daemon.is_none() {
                continue;
            }
            // udp model: a daemon whose transport died keeps running, cut
            // off (like a paused one).
            if node.transport_dead {
                continue;
            }
            if !self.status(n).is_some_and(|s| s.is_stable() || s.waits_only_for_quorum()) {
                return false;
            }
        }
        true
    }

    /// Events in flight (timers excluded); in the udp model also core
    /// messages not yet delivered everywhere (see [`World::udp_pending`]).
    pub fn in_flight(&self) -> u64 {
        if self.udp() {
            self.busy + self.udp_pending()
        } else {
            self.busy
        }
    }

    // ------------------------------------------------------------------
    // Tracing and violations

    pub fn trace(&mut self, node: u32, what: What) {
        let gen = self.nodes.get(node as usize).and_then(|n| n.daemon.as_ref()).map(|d| {
            let g = d.node.generation();
            (g.ring, g.epoch)
        });
        let rec = TraceRec { t: self.now, node, gen, what };
        self.trace.push(rec, &self.fs_names);
    }

    pub fn violate(&mut self, property: Property, msg: String) {
        if self.halted {
            return;
        }
        self.trace(0, What::Violation(format!("{}: {msg}", property.name()).into()));
        self.violations.push(Violation { property, msg, time: self.now });
        self.halted = true;
    }

    pub fn fs_idx(&mut self, fs: &str) -> u8 {
        if let Some(i) = self.fs_names.iter().position(|f| f == fs) {
            return i as u8;
        }
        self.fs_names.push(fs.to_string());
        (self.fs_names.len() - 1).min(255) as u8
    }

    // ------------------------------------------------------------------
    // Status

    /// The node's status (cached until its next step).
    pub fn status(&mut self, n: u32) -> Option<&Status> {
        let d = self.nodes.get_mut(n as usize)?.daemon.as_mut()?;
        if d.status.is_none() {
            let node = &d.node;
            match invariants::robustness::guarded(|| std::rc::Rc::new(node.status())) {
                Ok(s) => d.status = Some(s),
                Err(p) => {
                    self.violate(Property::Robustness, format!("node {n} panicked in status(): {p}"));
                    return None;
                }
            }
        }
        self.nodes[n as usize].daemon.as_ref().and_then(|d| d.status.as_deref())
    }

    /// The cached status, shared (not copied: it is large).
    pub fn status_clone(&mut self, n: u32) -> Option<std::rc::Rc<Status>> {
        self.status(n)?;
        self.nodes[n as usize].daemon.as_ref().and_then(|d| d.status.clone())
    }

    /// Live daemons (node ids), paused ones included.
    pub fn alive(&self) -> Vec<u32> {
        (1..=self.cfg.nodes).filter(|n| self.nodes[*n as usize].daemon.is_some()).collect()
    }

    /// Is this writer's kernel still doing I/O on the filesystem?
    pub fn writer_alive(&self, fs: &str, w: Writer) -> bool {
        let node = &self.nodes[w.node as usize];
        node.powered && node.boot == w.boot && node.kernel.get(fs).is_some_and(|k| k.id == w.mount && k.active())
    }

    // ------------------------------------------------------------------
    // Node inputs

    fn process_inbox(&mut self, n: u32) {
        loop {
            if self.halted {
                return;
            }
            let node = &mut self.nodes[n as usize];
            if !node.powered {
                node.inbox.clear();
                return;
            }
            if node.paused {
                return;
            }
            let Some(item) = node.inbox.pop_front() else { return };
            self.node_input(n, item);
        }
    }

    fn daemon_is(&self, n: u32, inc: u64) -> bool {
        self.nodes[n as usize].daemon.as_ref().is_some_and(|d| d.inc == inc)
    }

    fn node_input(&mut self, n: u32, item: NodeIn) {
        match item {
            NodeIn::Cpg(inc, it) => {
                if !self.daemon_is(n, inc) {
                    return;
                }
                match it {
                    CpgItem::Ring(ri, life, ev) => self.feed_ring(n, ri, life, *ev),
                    CpgItem::Confchg(cc) => self.feed_confchg(n, *cc),
                    CpgItem::Msg(from, bytes) => self.feed_msg(n, from, &bytes),
                }
            }
            NodeIn::Quorum(inc, q) => {
                if self.daemon_is(n, inc) {
                    let what = What::InQuorum { seq: q.ring, quorate: q.quorate };
                    self.step(n, Input::Quorum(*q), what);
                }
            }
            NodeIn::Timer(inc, t) => {
                if self.daemon_is(n, inc) {
                    self.step(n, Input::Timer(t), What::InTimer(t.0));
                }
            }
            NodeIn::Fenced(inc, target, ok) => {
                if self.daemon_is(n, inc) {
                    let what = What::InFenced { target: target.node.0, inc: target.inc.0, ok };
                    self.step(n, Input::Fenced { target, ok }, what);
                }
            }
            NodeIn::KernelDone { boot, fs, op, done } => self.kernel_done(n, boot, &fs, op, done),
            NodeIn::Withdraw { boot, fs } => {
                if self.nodes[n as usize].boot == boot && self.nodes[n as usize].daemon.is_some() {
                    let Ok(name) = wire::fs_name(&fs) else { return };
                    let what = What::InKernel { fs: self.fs_idx(&fs), ev: 3, jid: 0, ok: true };
                    self.step(n, Input::Kernel(KernelEvent::Withdraw { fs: name }), what);
                }
            }
        }
    }

    /// A ring event (sim ring `ri`, group lifetime `life`) to node `n`.
    fn feed_ring(&mut self, n: u32, ri: usize, life: u64, ev: RingEvent) {
        if let Some(d) = self.nodes[n as usize].daemon.as_mut() {
            d.ring = Some(ri);
            d.seq_rings.push((ev.ring, (ri, life)));
        }
        let what = What::InRing { seq: ev.ring, members: mask(ev.members.iter().map(|m| m.0)) };
        self.step(n, Input::Ring(ev), what);
    }

    fn feed_confchg(&mut self, n: u32, cc: Confchg) {
        let mut bits = 0u128;
        for j in cc.joined.iter() {
            if j.reason == Reason::NodeUp {
                bits |= 1u128 << (2 * (j.node.0 % 64));
            }
        }
        for l in cc.left.iter() {
            let v: u128 = match l.reason {
                Reason::NodeDown => 1,
                Reason::ProcDown => 2,
                _ => 0,
            };
            bits |= v << (2 * (l.node.0 % 64));
        }
        let what = What::InConfchg {
            members: mask(cc.members.iter().map(|m| m.0)),
            joined: mask(cc.joined.iter().map(|m| m.node.0)),
            left: mask(cc.left.iter().map(|m| m.node.0)),
            reasons: bits,
        };
        self.step(n, Input::Confchg(cc), what);
    }

    fn feed_msg(&mut self, n: u32, from: u32, bytes: &[u8]) {
        let what = msg_what(from, bytes, true);
        self.step(n, Input::Deliver { from: NodeId(from), bytes }, what);
    }

    /// Feed one input to node `n`'s daemon, execute what comes out, run the
    /// per-step checks. Returns the core's error, if any.
    pub fn step(&mut self, n: u32, input: Input<'_>, what: What) -> Option<HandleError> {
        if self.halted {
            return None;
        }
        let now = Instant(self.now);
        self.steps += 1;
        let r = {
            let d = self.nodes[n as usize].daemon.as_mut()?;
            d.status = None;
            if self.hash_inputs {
                d.hist = crate::explore::fnv(d.hist, format!("{now:?}|{input:?}").as_bytes());
            }
            let node = &mut d.node;
            invariants::robustness::guarded(move || node.handle(now, input))
        };
        self.trace(n, what);
        let err = match r {
            Err(p) => {
                self.violate(Property::Robustness, format!("node {n} panicked in handle(): {p}"));
                return None;
            }
            Ok(Err(e)) => {
                if let Some(v) = invariants::robustness::classify(&e) {
                    self.violate(Property::Robustness, format!("node {n}: {v}"));
                    return Some(e);
                }
                self.log.handle_notes += 1;
                self.trace(n, What::HandleErr(format!("{e:?}").into()));
                Some(e)
            }
            Ok(Ok(())) => None,
        };
        self.drain(n);
        if let Err(m) = invariants::blocked::check_node(self, n) {
            self.violate(Property::BlockedDuringRecovery, m);
            return err;
        }
        self.after_step(n);
        err
    }

    fn drain(&mut self, n: u32) {
        let mut effects = Vec::new();
        let mut sends: Vec<Rc<[u8]>> = Vec::new();
        {
            let Some(d) = self.nodes[n as usize].daemon.as_mut() else { return };
            let node = &mut d.node;
            loop {
                match invariants::robustness::guarded(|| node.poll_effect()) {
                    Ok(Some(e)) => effects.push(e),
                    Ok(None) => break,
                    Err(p) => {
                        let msg = format!("node {n} panicked in poll_effect(): {p}");
                        self.violate(Property::Robustness, msg);
                        return;
                    }
                }
            }
            let buf = &mut self.buf;
            loop {
                match invariants::robustness::guarded(|| node.poll_transmit(buf)) {
                    Ok(Some(len)) => sends.push(Rc::from(&buf[..len])),
                    Ok(None) => break,
                    Err(p) => {
                        let msg = format!("node {n} panicked in poll_transmit(): {p}");
                        self.violate(Property::Robustness, msg);
                        return;
                    }
                }
            }
            if node.has_output() {
                self.violate(Property::Robustness, format!("node {n} still has output after a full drain"));
                return;
            }
        }
        let inst = self.nodes[n as usize].inst();
        for e in effects {
            self.effect(n, e);
        }
        for bytes in sends {
            if self.nodes[n as usize].inst() != inst {
                break;
            }
            self.trace(n, msg_what(n, &bytes, false));
            if let Err(m) = invariants::unmount_contract::check_send(self, n, &bytes) {
                self.violate(Property::UnmountContract, m);
                return;
            }
            self.mcast(n, bytes);
        }
        if self.reset_pending.take().is_some() {
            self.log.resets.insert(n);
            self.log.totals.resets += 1;
            self.reboot(n, "reset self");
        }
    }

    fn effect(&mut self, n: u32, e: Effect) {
        let inc = self.nodes[n as usize].daemon.as_ref().map_or(0, |d| d.inc);
        match e {
            Effect::SetTimer { token, at } => self.schedule(at.0, Ev::Node(n, NodeIn::Timer(inc, token))),
            Effect::Kernel { fs, op, .. } => self.kernel_op(n, fs.as_str(), op),
            Effect::Fence { target } => self.fence_request(n, target),
            Effect::Kill { node } => {
                self.trace(n, What::Kill { node: node.0 });
                if let Some((t, tinc)) = self.nodes.get(node.0 as usize).and_then(|x| x.inst()) {
                    let d = self.delay(self.cfg.kill_delay);
                    self.schedule(self.now + d, Ev::KillExec { node: t, inc: tinc });
                }
            }
            Effect::ResetSelf => {
                self.trace(n, What::ResetSelf);
                self.reset_pending = Some(n);
            }
            Effect::Incompatible { ours_min, ours_max, cluster } => {
                self.violate(
                    Property::Robustness,
                    format!("node {n} declared itself incompatible ({ours_min}..{ours_max} vs {cluster}) in a same-version cluster"),
                );
            }
            Effect::Notify(notice) => {
                let what = notice_what(&notice);
                self.trace(n, what);
                match &notice {
                    Notice::StaleMerge { node, .. } => {
                        self.log.stale_merge_notices.insert(node.0);
                        self.log.totals.stale_merge_verdicts += 1;
                    }
                    Notice::GroupSynced { .. } => self.log.totals.group_syncs += 1,
                    Notice::DaemonSynced { .. } => {}
                    _ => return,
                }
                self.pending_notices.push(notice);
            }
        }
    }

    fn after_step(&mut self, n: u32) {
        if self.halted {
            return;
        }
        let notices = std::mem::take(&mut self.pending_notices);
        let Some(d) = self.nodes[n as usize].daemon.as_ref() else { return };
        let gen = d.node.generation();
        let gen_changed = gen != d.last_gen;
        if notices.is_empty() && !gen_changed {
            return;
        }
        let Some(st) = self.status_clone(n) else { return };
        if gen_changed {
            let d = self.nodes[n as usize].daemon.as_mut().expect("checked");
            d.last_gen = gen;
            if st.anchored {
                if let Err(m) = invariants::generations::on_generation(d, gen) {
                    self.violate(Property::Generations, format!("node {n}: {m}"));
                    return;
                }
            }
        }
        for notice in notices {
            match notice {
                Notice::GroupSynced { group, generation, .. } => self.on_group_synced(n, &st, group, generation),
                Notice::DaemonSynced { generation, .. } => self.on_daemon_synced(n, &st, generation),
                _ => {}
            }
            if self.halted {
                return;
            }
        }
    }

    fn on_group_synced(&mut self, n: u32, st: &Status, group: GroupId, generation: Generation) {
        let Some(g) = st.groups.iter().find(|g| g.group == group) else { return };
        let fs = g.fs.as_str().to_string();
        let d = self.nodes[n as usize].daemon.as_mut().expect("stepped");
        d.stateful = true;
        let inst = (n, d.inc);
        if let Err(m) = invariants::generations::on_group_synced(d, group, generation) {
            self.violate(Property::Generations, format!("node {n} fs {fs}: {m}"));
            return;
        }
        let ring = d.ring_of_seq(generation.ring);
        let Some(ring) = ring else {
            self.violate(
                Property::Generations,
                format!(
                    "node {n} synced {fs} at generation {}.{} of a ring it never saw",
                    generation.ring, generation.epoch
                ),
            );
            return;
        };
        // Kernel mode follows the agreed mode (remount).
        if let Some(me) = g.members.iter().find(|m| m.node.0 == n) {
            let mode = me.mode;
            let boot = self.nodes[n as usize].boot;
            if let Some(k) = self.nodes[n as usize].kernel.get_mut(&fs) {
                let writer = Writer { node: n, boot, mount: k.id };
                let became_rw = k.mode != Mode::Rw && mode == Mode::Rw;
                let became_ro = k.mode == Mode::Rw && mode == Mode::Ro;
                k.mode = mode;
                if k.phase == KPhase::Mounted && !k.withdrawn {
                    if let Some(j) = k.jid {
                        let jr = self.disks.entry(fs.clone()).or_default().journal(j);
                        if became_rw {
                            jr.writer = Some(writer);
                        } else if became_ro && jr.writer == Some(writer) {
                            // A remount read-only flushes the journal.
                            jr.writer = None;
                        }
                    }
                }
            }
        }
        let key = invariants::agreement::GroupKey { group: group.0, ring, epoch: generation.epoch };
        let snap = invariants::agreement::GroupSnap::of(g);
        if let Err(m) = invariants::agreement::group_synced(&mut self.inv.agreement, key, n, snap) {
            self.violate(
                Property::Agreement,
                format!("fs {fs} at generation {}.{}: {m}", generation.ring, generation.epoch),
            );
            return;
        }
        let members: Vec<Inst> = g
            .members
            .iter()
            .filter(|m| m.node.0 != n)
            .filter_map(|m| {
                st.members.iter().find(|p| p.node == m.node).and_then(|p| p.inc).map(|inc| (m.node.0, inc.0))
            })
            .collect();
        if let Err(m) = invariants::no_stale_merge::on_group_synced(&self.inv.stale, inst, &members) {
            self.violate(
                Property::NoStaleMerge,
                format!("fs {fs} synced at {}.{}: {m}", generation.ring, generation.epoch),
            );
        }
    }

    fn on_daemon_synced(&mut self, n: u32, st: &Status, generation: Generation) {
        let d = self.nodes[n as usize].daemon.as_ref().expect("stepped");
        let inst = (n, d.inc);
        self.log.merge_partitions_max = self.log.merge_partitions_max.max(st.last_merge_partitions);
        let Some(ring) = d.ring_of_seq(generation.ring) else {
            self.violate(
                Property::Generations,
                format!(
                    "node {n} completed a daemon sync at {}.{} of a ring it never saw",
                    generation.ring, generation.epoch
                ),
            );
            return;
        };
        let ring_members = self.rings[ring.0].members.clone();
        self.inv.stale.on_sync_in_ring(inst, &ring_members);
        let peers: Vec<(u32, Option<u64>, bool)> =
            st.members.iter().map(|p| (p.node.0, p.inc.map(|i| i.0), p.stale)).collect();
        let key = (ring, generation.epoch);
        if let Err(m) = invariants::agreement::daemon_synced(&mut self.inv.agreement, key, n, &peers) {
            self.violate(Property::Agreement, format!("daemon group at {}.{}: {m}", generation.ring, generation.epoch));
            return;
        }
        let fresh: Vec<Inst> = peers
            .iter()
            .filter(|(p, _, stale)| *p != n && !stale)
            .filter_map(|(p, inc, _)| inc.map(|i| (*p, i)))
            .collect();
        if let Err(m) = invariants::no_stale_merge::on_daemon_synced(&self.inv.stale, inst, &fresh) {
            self.violate(
                Property::NoStaleMerge,
                format!("daemon sync at {}.{}: {m}", generation.ring, generation.epoch),
            );
        }
    }

    // ------------------------------------------------------------------
    // Requests (operator) and kernel injections

    pub fn request(&mut self, n: u32, r: Request) -> Result<(), String> {
        let node = self.nodes.get(n as usize).ok_or(format!("no node {n}"))?;
        if node.daemon.is_none() {
            return Err(format!("node {n} has no running daemon"));
        }
        if node.paused {
            return Err(format!("node {n} is paused"));
        }
        let (fs, kind) = match &r {
            Request::Mount { fs, mode, .. } => {
                self.nodes[n as usize].modes.insert(fs.to_string(), *mode);
                // Mounting again: the host holds the kernel's mount again.
                if let Some(k) = self.nodes[n as usize].kernel.get_mut(fs.as_str()) {
                    k.released = false;
                }
                (fs.to_string(), 0)
            }
            Request::Unmount { fs } => {
                // The host's order (core contract, `Request::Unmount`): the
                // kernel unmounts first, which flushes its journal clean,
                // and only then tells the cluster. A crash after this point
                // leaves a clean journal behind. A mount still running
                // cannot be unmounted yet: the host refuses.
                let boot = node.boot;
                // A withdraw the kernel reported before the umount reaches
                // the daemon first: cohortd reads the gfs2 `offline`
                // (withdraw) uevent before the lockspace's `offline` that
                // ends its umount, on the same netlink socket. Otherwise the
                // leave would count as clean and the withdrawn journal
                // would never be replayed (found by `cohort-sim check`).
                self.deliver_withdraw_first(n, fs.as_str());
                if let Some(k) = self.nodes[n as usize].kernel.get_mut(fs.as_str()) {
                    if matches!(k.phase, KPhase::Mounting | KPhase::MountingFirst) && !k.withdrawn {
                        return Err(format!("node {n} refuses to unmount {fs}: the kernel is still mounting it"));
                    }
                    // An unmounted kernel does no I/O: a replay it was
                    // running ends with the unmount (unfinished: the journal
                    // stays dirty), and it never reports.
                    let me = Writer { node: n, boot, mount: k.id };
                    if k.recovering.take().is_some() {
                        for jr in self.disks.entry(fs.to_string()).or_default().journals.values_mut() {
                            jr.replaying.retain(|w| *w != me);
                        }
                    }
                    k.first_pending = false;
                    if k.phase == KPhase::Mounted && !k.withdrawn {
                        if let Some(j) = k.jid {
                            let jr = self.disks.entry(fs.to_string()).or_default().journal(j);
                            if jr.writer == Some(me) {
                                jr.writer = None;
                            }
                        }
                    }
                    if !k.withdrawn {
                        k.phase = KPhase::Idle;
                        k.released = true;
                    }
                }
                (fs.to_string(), 1)
            }
            Request::Remount { fs, mode } => {
                // The host's order (the core has no kernel op for remount):
                // rw -> ro remounts the kernel first (the journal is flushed
                // clean) and then tells the cluster; ro -> rw waits for the
                // agreed change (applied at the next group sync).
                let boot = node.boot;
                if *mode != Mode::Rw {
                    if let Some(k) = self.nodes[n as usize].kernel.get_mut(fs.as_str()) {
                        if k.mode == Mode::Rw {
                            k.mode = *mode;
                            if let Some(j) = k.jid {
                                let jr = self.disks.entry(fs.to_string()).or_default().journal(j);
                                if jr.writer == Some(Writer { node: n, boot, mount: k.id }) {
                                    jr.writer = None;
                                }
                            }
                        }
                    }
                }
                (fs.to_string(), 2)
            }
        };
        let what = What::InRequest { fs: self.fs_idx(&fs), kind };
        match self.step(n, Input::Request(r), what) {
            None => Ok(()),
            Some(e) => Err(format!("node {n} rejected the request: {e:?}")),
        }
    }

    /// Process a queued kernel withdraw of `fs` on node `n` now (the host
    /// passes kernel events on in the order the kernel gave them).
    fn deliver_withdraw_first(&mut self, n: u32, fs: &str) {
        let keys: Vec<(u64, u64)> = self
            .queue
            .iter()
            .filter(|(_, ev)| matches!(ev, Ev::Node(m, NodeIn::Withdraw { fs: f, .. }) if *m == n && &**f == fs))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(ev) = self.queue.remove(&k) {
                self.fire(self.now, ev);
            }
        }
    }

    /// The operator asks node `n`'s daemon to leave `fs` without unmounting
    /// the kernel first. The host (like cohortd) refuses while the kernel
    /// has the filesystem: a clean leave frees the journal without replay
    /// (property 9). With the `broken-host` feature it does not check.
    pub fn unmount_early(&mut self, n: u32, fs: &str) -> Result<(), String> {
        let node = self.nodes.get(n as usize).ok_or(format!("no node {n}"))?;
        let held = node.kernel.get(fs).is_some_and(|k| k.phase != KPhase::Idle);
        if held && !cfg!(feature = "broken-host") {
            return Err(format!("node {n} refuses to leave {fs}: the kernel still has it mounted (umount it first)"));
        }
        if node.daemon.is_none() {
            return Err(format!("node {n} has no running daemon"));
        }
        let name = wire::fs_name(fs).map_err(|e| format!("{e:?}"))?;
        let what = What::InRequest { fs: self.fs_idx(fs), kind: 1 };
        match self.step(n, Input::Request(Request::Unmount { fs: name }), what) {
            None => Ok(()),
            Some(e) => Err(format!("node {n} rejected the request: {e:?}")),
        }
    }

    /// The kernel of node `n` hits an error on `fs` and withdraws.
    pub fn withdraw(&mut self, fs: &str, n: u32) -> Result<(), String> {
        let node = &mut self.nodes[n as usize];
        let boot = node.boot;
        let Some(k) = node.kernel.get_mut(fs) else { return Err(format!("node {n} has no kernel mount of {fs}")) };
        if k.phase == KPhase::Idle || k.withdrawn {
            return Err(format!("node {n} cannot withdraw {fs} (not mounted or already withdrawn)"));
        }
        k.withdrawn = true;
        k.first_pending = false;
        self.trace(n, What::Cmd(format!("kernel withdraws {fs}").into()));
        self.schedule(self.now, Ev::Node(n, NodeIn::Withdraw { boot, fs: Rc::from(fs) }));
        Ok(())
    }

    // ------------------------------------------------------------------
    // Power, daemons, faults

    pub fn power_on(&mut self, n: u32) {
        let node = &mut self.nodes[n as usize];
        if node.powered {
            return;
        }
        node.powered = true;
        node.paused = false;
        node.transport_dead = false;
        node.boot += 1;
        node.kernel.clear();
        node.inbox.clear();
        node.ring = None;
        let boot = node.boot;
        self.trace(n, What::PowerOn { boot });
        if self.udp() {
            // No membership service of its own: the daemon (with its `Vs`)
            // starts after booting and finds the others by heartbeats.
            let bd = self.delay(self.cfg.boot_delay);
            self.schedule(self.now + bd + 1, Ev::DaemonStart { node: n, boot });
            return;
        }
        let rd = self.delay(self.cfg.ring_delay);
        self.schedule(self.now + rd, Ev::Reconfigure);
        let bd = self.delay(self.cfg.boot_delay);
        self.schedule(self.now + rd + bd + 1, Ev::DaemonStart { node: n, boot });
    }

    /// Power off: daemon and kernel state are gone; the journals it was
    /// writing stay dirty.
    pub fn power_off(&mut self, n: u32, why: &'static str) {
        if !self.nodes[n as usize].powered {
            return;
        }
        self.trace(n, What::PowerOff(why));
        let node = &mut self.nodes[n as usize];
        node.powered = false;
        node.paused = false;
        node.transport_dead = false;
        node.daemon = None;
        node.inbox.clear();
        node.kernel.clear();
        node.ring = None;
        let boot = node.boot;
        self.vs_stop(n);
        for disk in self.disks.values_mut() {
            for j in disk.journals.values_mut() {
                j.replaying.retain(|w| !(w.node == n && w.boot == boot));
            }
        }
        self.inv.stale.forget_node(n);
        if !self.udp() {
            let rd = self.delay(self.cfg.ring_delay);
            self.schedule(self.now + rd, Ev::Reconfigure);
        }
        if self.auto_restart && !self.power_on_pending(n) {
            let d = self.delay(self.cfg.restart_delay);
            self.schedule(self.now + d, Ev::PowerOn { node: n });
        }
    }

    pub fn reboot(&mut self, n: u32, why: &'static str) {
        self.power_off(n, why);
        if !self.power_on_pending(n) {
            let d = self.delay(self.cfg.restart_delay);
            self.schedule(self.now + d, Ev::PowerOn { node: n });
        }
    }

    /// `restart N`: power on if off; reboot if on.
    pub fn restart(&mut self, n: u32) {
        if self.nodes[n as usize].powered {
            self.power_off(n, "restart");
        }
        self.power_on(n);
    }

    pub fn crash(&mut self, n: u32) {
        self.power_off(n, "crash");
    }

    pub fn pause(&mut self, n: u32) {
        let node = &mut self.nodes[n as usize];
        if !node.powered || node.paused {
            return;
        }
        node.paused = true;
        if self.udp() {
            // Its `Vs` stops too: datagrams to it are lost, its timers do
            // not fire (see `vs_receive`, `Ev::VsTimer`).
            return;
        }
        let rd = self.delay(self.cfg.ring_delay);
        self.schedule(self.now + rd, Ev::Reconfigure);
    }

    pub fn resume(&mut self, n: u32) {
        let node = &mut self.nodes[n as usize];
        if !node.paused {
            return;
        }
        node.paused = false;
        if self.udp() {
            // The backlog first (stale state), then the transport catches
            // up with its overdue timers.
            self.process_inbox(n);
            if !self.halted && self.nodes[n as usize].vs.is_some() && !self.nodes[n as usize].paused {
                self.vs_kick(n);
            }
            return;
        }
        let rd = self.delay(self.cfg.ring_delay);
        self.schedule(self.now + rd, Ev::Reconfigure);
        self.process_inbox(n);
    }

    /// The node's corosync dies: it drops out of the ring, its daemon stops
    /// (its kernel mounts stay until it is fenced or restarted).
    pub fn kill_transport(&mut self, n: u32) {
        let node = &mut self.nodes[n as usize];
        if !node.powered || node.transport_dead {
            return;
        }
        node.transport_dead = true;
        if self.cfg.model == Model::Udp {
            // Only the `Vs` stops: no datagrams in or out. The daemon keeps
            // running with whatever it knew, gets no transport events any
            // more, and its messages go nowhere; the others see it fail.
            self.vs_stop(n);
            return;
        }
        node.ring = None;
        node.inbox.clear();
        if node.daemon.take().is_some() {
            self.trace(n, What::DaemonGone("transport died"));
        }
        self.inv.stale.forget_node(n);
        let rd = self.delay(self.cfg.ring_delay);
        self.schedule(self.now + rd, Ev::Reconfigure);
    }

    /// Only the daemon dies (ProcDown); kernel mounts stay.
    pub fn kill_daemon(&mut self, n: u32, why: &'static str) {
        if self.nodes[n as usize].daemon.take().is_none() {
            return;
        }
        self.nodes[n as usize].inbox.clear();
        self.trace(n, What::DaemonGone(why));
        self.inv.stale.forget_node(n);
        if self.udp() {
            // The transport lives in the daemon process: it dies with it,
            // the others notice by its silence (no ProcDown without a
            // successor incarnation).
            self.vs_stop(n);
            return;
        }
        let Some(ri) = self.nodes[n as usize].ring else { return };
        if !self.nodes[n as usize].visible() {
            return;
        }
        self.flush(ri);
        self.rings[ri].group.remove(&n);
        let group: Vec<u32> = self.rings[ri].group.iter().copied().collect();
        let cc = Confchg { members: node_list(&group), joined: reasons(&[]), left: reasons(&[(n, Reason::ProcDown)]) };
        for m in group {
            if self.nodes[m as usize].ring == Some(ri) {
                self.push_cpg_confchg(m, &cc);
            }
        }
    }

    pub fn set_net(&mut self, labels: Vec<u32>) {
        self.net = labels;
        if self.udp() {
            // Datagrams only pass between equal labels (checked at send
            // and at arrival); the protocol notices by itself.
            return;
        }
        let rd = self.delay(self.cfg.ring_delay);
        self.schedule(self.now + rd, Ev::Reconfigure);
    }

    /// `partition 1,2 | 3,4 | 5`: unlisted nodes are isolated each.
    pub fn partition(&mut self, groups: &[Vec<u32>]) {
        let mut labels = vec![0; self.cfg.nodes as usize + 1];
        for (n, l) in labels.iter_mut().enumerate() {
            *l = 10_000 + n as u32;
        }
        for (k, g) in groups.iter().enumerate() {
            for n in g {
                if let Some(l) = labels.get_mut(*n as usize) {
                    *l = k as u32 + 1;
                }
            }
        }
        self.set_net(labels);
    }

    pub fn isolate(&mut self, n: u32) {
        let mut labels = self.net.clone();
        self.next_label += 1;
        labels[n as usize] = self.next_label;
        self.set_net(labels);
    }

    pub fn heal(&mut self) {
        self.cuts.clear();
        self.set_net(vec![0; self.cfg.nodes as usize + 1]);
    }

    fn daemon_start(&mut self, n: u32, boot: u64) {
        let node = &self.nodes[n as usize];
        if !node.powered || node.boot != boot || node.transport_dead || node.daemon.is_some() {
            return;
        }
        if self.udp() {
            self.udp_daemon_start(n, boot);
            return;
        }
        if node.paused || node.ring.is_none() {
            self.schedule(self.now + 50, Ev::DaemonStart { node: n, boot });
            return;
        }
        let ri = node.ring.expect("checked");
        if self.new_daemon(n).is_none() {
            return;
        }
        let (seq, members) = (self.rings[ri].seq, self.rings[ri].members.clone());
        let ev = RingEvent { ring: seq, members: node_list(&members) };
        let alone = !self.rings[ri]
            .group
            .iter()
            .any(|m| *m != n && self.nodes[*m as usize].ring == Some(ri) && self.nodes[*m as usize].daemon.is_some());
        if alone {
            // Founding (again): the group's epoch numbering starts over.
            self.rings[ri].lifetime += 1;
        }
        let life = self.rings[ri].lifetime;
        self.push_cpg(n, CpgItem::Ring(ri, life, Box::new(ev)));
        self.send_quorum(n, ri);
        // Join: a process-level confchg in agreed order with the messages.
        self.rings[ri].group.insert(n);
        let group: Vec<u32> = self.rings[ri].group.iter().copied().collect();
        let cc = Confchg { members: node_list(&group), joined: reasons(&[(n, Reason::Join)]), left: reasons(&[]) };
        for m in group {
            if self.nodes[m as usize].ring == Some(ri) && self.nodes[m as usize].daemon.is_some() {
                self.push_cpg_confchg(m, &cc);
            }
        }
        self.track_separation();
    }

    /// A new daemon instance on node `n` (new incarnation), told the
    /// configured node list. `None` if it could not start (violation).
    fn new_daemon(&mut self, n: u32) -> Option<u64> {
        let node = &mut self.nodes[n as usize];
        node.inc_store += 1;
        let inc = node.inc_store;
        let mut cfg = Config::new(NodeId(n), Incarnation(inc));
        cfg.fence_retry_ms = self.cfg.fence_retry_ms;
        cfg.recovery_retry_ms = self.cfg.recovery_retry_ms;
        let core = invariants::robustness::guarded(|| Box::new(Node::new(cfg)));
        let core = match core {
            Ok(c) => c,
            Err(p) => {
                self.violate(Property::Robustness, format!("node {n} panicked in Node::new: {p}"));
                return None;
            }
        };
        node.daemon = Some(Daemon {
            node: core,
            inc,
            stateful: false,
            ring: None,
            seq_rings: Vec::new(),
            last_gen: Generation::ZERO,
            last_anchored: None,
            group_gens: Vec::new(),
            status: None,
            hist: crate::explore::FNV_OFFSET,
        });
        self.trace(n, What::DaemonStart { inc });
        // The configured cluster (corosync nodelist): enables startup fencing.
        let all: Vec<u32> = (1..=self.cfg.nodes).collect();
        let _ = self.step(n, Input::Nodelist(node_list(&all)), What::Cmd("nodelist".into()));
        Some(inc)
    }

    // ------------------------------------------------------------------
    // Membership and transport

    fn push_cpg(&mut self, m: u32, item: CpgItem) {
        let Some(inc) = self.nodes[m as usize].daemon.as_ref().map(|d| d.inc) else { return };
        let j = self.delay(self.cfg.jitter);
        let node = &mut self.nodes[m as usize];
        let t = (self.now + j).max(node.last_cpg_t);
        node.last_cpg_t = t;
        self.schedule(t, Ev::Node(m, NodeIn::Cpg(inc, item)));
    }

    fn push_cpg_confchg(&mut self, m: u32, cc: &Confchg) {
        self.push_cpg(m, CpgItem::Confchg(Box::new(cc.clone())));
    }

    fn send_quorum(&mut self, m: u32, ri: usize) {
        let Some(inc) = self.nodes[m as usize].daemon.as_ref().map(|d| d.inc) else { return };
        let r = &self.rings[ri];
        let q = QuorumEvent { ring: r.seq, quorate: r.quorate, members: node_list(&r.members) };
        let d = self.delay(self.cfg.quorum_delay);
        let node = &mut self.nodes[m as usize];
        let t = (self.now + d).max(node.last_q_t);
        node.last_q_t = t;
        self.schedule(t, Ev::Node(m, NodeIn::Quorum(inc, Box::new(q))));
    }

    fn mcast(&mut self, from: u32, bytes: Rc<[u8]>) {
        if self.udp() {
            self.udp_mcast(from, bytes);
            return;
        }
        let node = &self.nodes[from as usize];
        let Some(ri) = node.ring else { return };
        if !node.powered || node.transport_dead {
            return;
        }
        let inc = node.daemon.as_ref().map_or(0, |d| d.inc);
        if self.rings[ri].dead {
            // Real corosync: the old ring's token is lost, a message is
            // originated only in the sender's next ring (after its confchg).
            self.nodes[from as usize].held.push((inc, bytes));
            return;
        }
        let d = self.delay(self.cfg.net_delay);
        let r = &mut self.rings[ri];
        let ts = (self.now + d).max(r.last_ts);
        r.last_ts = ts;
        r.pending.push_back((ts, from, inc, bytes));
        self.schedule(ts, Ev::Sequence(ri));
    }

    fn sequence(&mut self, ri: usize) {
        while let Some(&(ts, _, _, _)) = self.rings[ri].pending.front() {
            if ts > self.now {
                break;
            }
            let (_, from, _, bytes) = self.rings[ri].pending.pop_front().expect("front");
            self.deliver_in_ring(ri, from, bytes);
        }
    }

    fn deliver_in_ring(&mut self, ri: usize, from: u32, bytes: Rc<[u8]>) {
        let group: Vec<u32> = self.rings[ri].group.iter().copied().collect();
        for m in group {
            if self.nodes[m as usize].ring == Some(ri) && self.nodes[m as usize].daemon.is_some() {
                self.push_cpg(m, CpgItem::Msg(from, bytes.clone()));
            }
        }
    }

    /// Deliver everything pending in a ring now (virtual synchrony flush).
    fn flush(&mut self, ri: usize) {
        while let Some((_, from, _, bytes)) = self.rings[ri].pending.pop_front() {
            self.deliver_in_ring(ri, from, bytes);
        }
    }

    fn components(&self) -> Vec<Vec<u32>> {
        let mut by_label: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for n in 1..=self.cfg.nodes {
            if self.nodes[n as usize].visible() {
                by_label.entry(self.net[n as usize]).or_default().push(n);
            }
        }
        let mut comps: Vec<Vec<u32>> = by_label.into_values().collect();
        comps.sort();
        comps
    }

    fn reconfigure(&mut self) {
        let comps = self.components();
        let old: Vec<Option<usize>> = self.nodes.iter().map(|n| n.ring).collect();
        let changed: Vec<Vec<u32>> = comps
            .into_iter()
            .filter(|c| {
                let r = old[c[0] as usize];
                !(r.is_some() && c.iter().all(|m| old[*m as usize] == r) && self.rings[r.expect("some")].members == *c)
            })
            .collect();
        if changed.is_empty() {
            return;
        }
        // 1. Old rings: flush (or carry over) what is still pending. They
        // are dead from now on (whoever is still in one is paused or cut
        // off and will move too).
        let old_rings: BTreeSet<usize> = changed.iter().flatten().filter_map(|m| old[*m as usize]).collect();
        for r in old_rings.iter() {
            self.rings[*r].dead = true;
        }
        let mut carried: Vec<(u32, u64, Rc<[u8]>)> = Vec::new();
        for r in old_rings {
            if self.cfg.carryover {
                // Sequenced ones are delivered in the old ring, the others
                // wait in the sender's send queue for the new ring.
                while let Some(&(ts, _, _, _)) = self.rings[r].pending.front() {
                    if ts > self.now {
                        break;
                    }
                    let (_, from, _, bytes) = self.rings[r].pending.pop_front().expect("front");
                    self.deliver_in_ring(r, from, bytes);
                }
                while let Some((_, from, inc, bytes)) = self.rings[r].pending.pop_front() {
                    carried.push((from, inc, bytes));
                }
            } else {
                self.flush(r);
            }
        }
        // 2. New rings.
        for c in changed {
            let seq = match self.cfg.seq_mode {
                SeqMode::Corosync => c.iter().map(|m| self.nodes[*m as usize].max_seq).max().unwrap_or(0) + 4,
                SeqMode::Global => {
                    self.global_seq += 4;
                    self.global_seq
                }
            };
            let quorate = self.cfg.quorum.is_quorate(c.len(), self.cfg.nodes as usize);
            let new_group: BTreeSet<u32> =
                c.iter().copied().filter(|m| self.nodes[*m as usize].daemon.is_some()).collect();
            let ri = self.rings.len();
            self.rings.push(RingInfo {
                seq,
                members: c.clone(),
                group: new_group.clone(),
                lifetime: 0,
                quorate,
                pending: VecDeque::new(),
                last_ts: self.now,
                dead: false,
                reporters: Vec::new(),
            });
            self.trace(0, What::RingFormed { seq, members: mask(c.iter().copied()), quorate });
            self.log.totals.rings += 1;
            let ng: Vec<u32> = new_group.iter().copied().collect();
            for &m in &c {
                if self.nodes[m as usize].daemon.is_some() {
                    let (trans, left, joined) = match old[m as usize] {
                        Some(or) => {
                            let og = &self.rings[or].group;
                            let trans: Vec<u32> = og
                                .iter()
                                .copied()
                                .filter(|p| new_group.contains(p) && old[*p as usize] == Some(or))
                                .collect();
                            let left: Vec<(u32, Reason)> = og
                                .iter()
                                .copied()
                                .filter(|p| !trans.contains(p))
                                .map(|p| (p, Reason::NodeDown))
                                .collect();
                            let joined: Vec<(u32, Reason)> = ng
                                .iter()
                                .copied()
                                .filter(|p| !trans.contains(p))
                                .map(|p| (p, Reason::NodeUp))
                                .collect();
                            (trans, left, joined)
                        }
                        None => (vec![], vec![], vec![]),
                    };
                    if !left.is_empty() {
                        let cc = Confchg { members: node_list(&trans), joined: reasons(&[]), left: reasons(&left) };
                        self.push_cpg_confchg(m, &cc);
                    }
                    if !joined.is_empty() {
                        let cc = Confchg { members: node_list(&ng), joined: reasons(&joined), left: reasons(&[]) };
                        self.push_cpg_confchg(m, &cc);
                    }
                    let ev = RingEvent { ring: seq, members: node_list(&c) };
                    self.push_cpg(m, CpgItem::Ring(ri, 0, Box::new(ev)));
                }
            }
            for &m in &c {
                let node = &mut self.nodes[m as usize];
                node.ring = Some(ri);
                node.max_seq = node.max_seq.max(seq);
            }
            for &m in &c {
                self.send_quorum(m, ri);
            }
        }
        // 3. Carried-over messages go out in their sender's new ring, and
        // so does what was sent into a dead ring.
        for n in 1..=self.cfg.nodes {
            let node = &mut self.nodes[n as usize];
            if node.held.is_empty() || node.ring.is_some_and(|r| self.rings[r].dead) {
                continue;
            }
            for (inc, bytes) in std::mem::take(&mut node.held) {
                carried.push((n, inc, bytes));
            }
        }
        for (from, inc, bytes) in carried {
            if self.nodes[from as usize].inst() == Some((from, inc)) {
                self.mcast(from, bytes);
            }
        }
        self.track_separation();
    }

    /// Ground truth for "no stale merge": which live daemon instances were
    /// apart and met again.
    fn track_separation(&mut self) {
        let insts: Vec<(Inst, Option<usize>, bool)> = (1..=self.cfg.nodes)
            .filter_map(|n| {
                let node = &self.nodes[n as usize];
                node.daemon.as_ref().map(|d| ((n, d.inc), node.ring, d.stateful))
            })
            .collect();
        self.inv.stale.on_topology(&insts);
    }

    // ------------------------------------------------------------------
    // Fence device

    fn fence_request(&mut self, actor: u32, target: Member) {
        self.trace(actor, What::Fence { target: target.node.0, inc: target.inc.0 });
        let t = target.node.0;
        let Some(tn) = self.nodes.get_mut(t as usize) else { return };
        let ok = if tn.inj.fence_fail > 0 {
            tn.inj.fence_fail -= 1;
            false
        } else {
            true
        };
        let extra = if ok { tn.inj.fence_extra_ms } else { 0 };
        let d = self.delay(self.cfg.fence_delay) + extra;
        let a = &self.nodes[actor as usize];
        let actor_inc = a.daemon.as_ref().map_or(0, |d| d.inc);
        let ev = Ev::FenceExec { actor, actor_boot: a.boot, actor_inc, target, ok };
        self.schedule(self.now + d, ev);
    }

    fn fence_exec(&mut self, actor: u32, actor_boot: u64, actor_inc: u64, target: Member, ok: bool) {
        let a = &self.nodes[actor as usize];
        let actor_up = a.powered && a.boot == actor_boot;
        if ok && !actor_up {
            // The actor died before its device acted (fence race lost).
            return;
        }
        self.trace(actor, What::FenceExec { target: target.node.0, ok });
        if ok {
            self.log.totals.fences_ok += 1;
        } else {
            self.log.totals.fences_failed += 1;
        }
        if ok {
            self.log.fenced.insert(target.node.0);
            if self.cfg.fence_reboot {
                self.reboot(target.node.0, "fenced (reboot)");
            } else {
                self.power_off(target.node.0, "fenced");
            }
        }
        if self.daemon_is(actor, actor_inc) {
            self.schedule(self.now, Ev::Node(actor, NodeIn::Fenced(actor_inc, target, ok)));
        }
    }

    // ------------------------------------------------------------------
    // Kernel

    /// The other side of the unmount contract: after the host's umount and
    /// leave, the core sends that kernel nothing but the group's end. (On a
    /// real node the gfs2 sysfs files are gone: a failed Block stops
    /// cohortd, and the node is fenced after a clean umount.)
    fn sent_to_released(&mut self, n: u32, fs: &str, op: &KernelOp) -> bool {
        if !self.nodes[n as usize].kernel.get(fs).is_some_and(|k| k.released) {
            return false;
        }
        self.violate(
            Property::UnmountContract,
            format!("node {n}: {op:?} for {fs}, which its host had unmounted and left"),
        );
        true
    }

    fn kernel_op(&mut self, n: u32, fs: &str, op: KernelOp) {
        let fsi = self.fs_idx(fs);
        let (code, jid) = match op {
            KernelOp::Block => (0, 0),
            KernelOp::Unblock => (1, 0),
            KernelOp::SetJid(j) => (2, j.0),
            KernelOp::MountFirst(j) => (3, j.0),
            KernelOp::Mount(j) => (4, j.0),
            KernelOp::MountSpectator => (5, 0),
            KernelOp::RecoverJournal(j) => (6, j.0),
            KernelOp::Release => (7, 0),
            KernelOp::Unmounted => (8, 0),
            KernelOp::MountError(_) => (9, 0),
        };
        self.trace(n, What::KernelOp { fs: fsi, op: code, jid });
        let boot = self.nodes[n as usize].boot;
        let mode = self.nodes[n as usize].modes.get(fs).copied().unwrap_or(Mode::Rw);
        self.next_mount_id += 1;
        let mid = self.next_mount_id;
        let me = Writer { node: n, boot, mount: self.nodes[n as usize].kernel.get(fs).map_or(mid, |k| k.id) };
        match op {
            KernelOp::Block | KernelOp::Unblock | KernelOp::SetJid(_) => {
                if self.sent_to_released(n, fs, &op) {
                    return;
                }
                let k = self.nodes[n as usize].kernel.entry(fs.to_string()).or_insert_with(|| KFs::new(mid, mode));
                match op {
                    KernelOp::Block => k.blocked = true,
                    KernelOp::Unblock => k.blocked = false,
                    KernelOp::SetJid(j) => k.jid = Some(j.0),
                    _ => {}
                }
            }
            KernelOp::MountFirst(j) | KernelOp::Mount(j) => {
                let first = matches!(op, KernelOp::MountFirst(_));
                if let Err(m) = invariants::journal_exclusivity::check_mount(self, n, fs, j.0, first) {
                    self.violate(Property::JournalExclusivity, m);
                    return;
                }
                if let Err(m) = invariants::recovery_before_reuse::check_mount(self, n, fs, j.0, first) {
                    self.violate(Property::RecoveryBeforeReuse, m);
                    return;
                }
                if !first {
                    if let Err(m) = invariants::blocked::check_mount(self, n, fs) {
                        self.violate(Property::BlockedDuringRecovery, m);
                        return;
                    }
                }
                if first {
                    self.log.totals.first_mounts += 1;
                    self.disks.entry(fs.to_string()).or_default().first_mounters.push(n);
                    self.log.first_mounters.entry(fs.to_string()).or_default().push(n);
                }
                let k = self.nodes[n as usize].kernel.entry(fs.to_string()).or_insert_with(|| KFs::new(mid, mode));
                if k.phase != KPhase::Idle {
                    let msg = format!("node {n} asked to mount {fs} again while its kernel is {:?}", k.phase);
                    self.violate(Property::Robustness, msg);
                    return;
                }
                k.phase = if first { KPhase::MountingFirst } else { KPhase::Mounting };
                k.jid = Some(j.0);
                k.spectator = false;
                k.mode = if first { Mode::Rw } else { mode };
                k.op += 1;
                let opn = k.op;
                let d = self.delay(self.cfg.mount_delay);
                let ev = NodeIn::KernelDone { boot, fs: Rc::from(fs), op: opn, done: KDone::MountResult };
                self.schedule(self.now + d, Ev::Node(n, ev));
            }
            KernelOp::MountSpectator => {
                if let Err(m) = invariants::blocked::check_mount(self, n, fs) {
                    self.violate(Property::BlockedDuringRecovery, m);
                    return;
                }
                let k = self.nodes[n as usize].kernel.entry(fs.to_string()).or_insert_with(|| KFs::new(mid, mode));
                if k.phase != KPhase::Idle {
                    let msg = format!("node {n} asked to mount {fs} again while its kernel is {:?}", k.phase);
                    self.violate(Property::Robustness, msg);
                    return;
                }
                k.phase = KPhase::Mounting;
                k.spectator = true;
                k.jid = None;
                k.mode = Mode::Spectator;
                k.op += 1;
                let opn = k.op;
                let d = self.delay(self.cfg.mount_delay);
                let ev = NodeIn::KernelDone { boot, fs: Rc::from(fs), op: opn, done: KDone::MountResult };
                self.schedule(self.now + d, Ev::Node(n, ev));
            }
            KernelOp::RecoverJournal(j) => {
                if self.sent_to_released(n, fs, &op) {
                    return;
                }
                if let Err(m) = invariants::recovery_before_reuse::check_replay(self, n, fs, j.0) {
                    self.violate(Property::RecoveryBeforeReuse, m);
                    return;
                }
                let Some(k) = self.nodes[n as usize].kernel.get_mut(fs) else {
                    self.violate(
                        Property::Robustness,
                        format!("node {n} asked to recover a journal of {fs} it has not mounted"),
                    );
                    return;
                };
                k.recovering = Some(j.0);
                let opn = k.op;
                self.disks.entry(fs.to_string()).or_default().journal(j.0).replaying.push(me);
                let d = self.delay(self.cfg.recovery_delay);
                let ev = NodeIn::KernelDone { boot, fs: Rc::from(fs), op: opn, done: KDone::RecoveryDone(j.0) };
                self.schedule(self.now + d, Ev::Node(n, ev));
            }
            KernelOp::Release | KernelOp::Unmounted | KernelOp::MountError(_) => {
                if let KernelOp::MountError(e) = op {
                    self.log.totals.mount_errors += 1;
                    self.log.mount_errors.push((n, fs.to_string(), e));
                }
                let clean = matches!(op, KernelOp::Unmounted);
                if let Some(k) = self.nodes[n as usize].kernel.remove(fs) {
                    let disk = self.disks.entry(fs.to_string()).or_default();
                    if let Some(j) = k.jid {
                        let jr = disk.journal(j);
                        if clean && jr.writer == Some(me) && !k.withdrawn {
                            jr.writer = None;
                        }
                    }
                    for jr in disk.journals.values_mut() {
                        jr.replaying.retain(|w| *w != me);
                    }
                }
            }
        }
    }

    fn kernel_done(&mut self, n: u32, boot: u64, fs: &str, op: u64, done: KDone) {
        let node = &mut self.nodes[n as usize];
        if node.boot != boot {
            return;
        }
        let Some(k) = node.kernel.get_mut(fs) else { return };
        if k.op != op {
            return;
        }
        let me = Writer { node: n, boot, mount: k.id };
        let Ok(name) = wire::fs_name(fs) else { return };
        let fsi = self.fs_idx(fs);
        let node = &mut self.nodes[n as usize];
        let k = node.kernel.get_mut(fs).expect("checked");
        let ev = match done {
            KDone::MountResult => {
                if !matches!(k.phase, KPhase::Mounting | KPhase::MountingFirst) {
                    return;
                }
                let injected = Inject::take(&mut node.inj.mount_error, fs);
                let ok = !injected && !k.withdrawn;
                let first = k.phase == KPhase::MountingFirst;
                if ok {
                    k.phase = KPhase::Mounted;
                    if k.mode == Mode::Rw && !k.spectator {
                        if let Some(j) = k.jid {
                            self.disks.entry(fs.to_string()).or_default().journal(j).writer = Some(me);
                        }
                    }
                    if first {
                        let k = self.nodes[n as usize].kernel.get_mut(fs).expect("checked");
                        k.first_pending = true;
                        let opn = k.op;
                        let d = self.delay(self.cfg.first_recovery_delay);
                        let ev = NodeIn::KernelDone { boot, fs: Rc::from(fs), op: opn, done: KDone::FirstRecoveryDone };
                        self.schedule(self.now + d, Ev::Node(n, ev));
                    }
                } else {
                    k.phase = KPhase::Idle;
                }
                (KernelEvent::MountResult { fs: name, ok }, 0, 0, ok)
            }
            KDone::FirstRecoveryDone => {
                if !k.first_pending || k.withdrawn {
                    return;
                }
                k.first_pending = false;
                let own = k.jid;
                let disk = self.disks.entry(fs.to_string()).or_default();
                for (j, jr) in disk.journals.iter_mut() {
                    // Every journal, its own too (gfs2's init_journal: the
                    // first mounter recovers all of them); what it wrote
                    // itself since stays its own.
                    if Some(*j) != own || jr.writer.is_some_and(|w| w != me) {
                        jr.writer = None;
                    }
                }
                (KernelEvent::FirstRecoveryDone { fs: name }, 1, 0, true)
            }
            KDone::RecoveryDone(j) => {
                if k.recovering != Some(j) {
                    return;
                }
                k.recovering = None;
                let failed = Inject::take(&mut node.inj.recovery_fail, fs);
                let k = self.nodes[n as usize].kernel.get_mut(fs).expect("checked");
                let ok = !failed && !k.withdrawn;
                let disk = self.disks.entry(fs.to_string()).or_default();
                let jr = disk.journal(j);
                jr.replaying.retain(|w| *w != me);
                if ok {
                    jr.writer = None;
                    jr.replays += 1;
                    self.log.recovered.push((fs.to_string(), j, n));
                    self.log.totals.replays_ok += 1;
                } else {
                    self.log.totals.replays_failed += 1;
                }
                (KernelEvent::RecoveryDone { fs: name, jid: cohort_core::Jid(j), ok }, 2, j, ok)
            }
        };
        if self.nodes[n as usize].daemon.is_some() {
            let (kev, code, jid, ok) = ev;
            let what = What::InKernel { fs: fsi, ev: code, jid, ok };
            self.step(n, Input::Kernel(kev), what);
        }
    }

    // ------------------------------------------------------------------
    // Liveness phase helpers

    /// Heal the network, resume paused nodes, restart nodes that are off or
    /// cut off, and stop injecting faults.
    pub fn heal_all(&mut self) {
        self.auto_restart = true;
        self.heal();
        for n in 1..=self.cfg.nodes {
            self.nodes[n as usize].inj.clear();
            let node = &self.nodes[n as usize];
            if node.paused {
                self.resume(n);
            }
            let node = &self.nodes[n as usize];
            if node.transport_dead {
                self.restart(n);
            } else if !node.powered && !self.power_on_pending(n) {
                self.power_on(n);
            } else if node.powered && node.daemon.is_none() && !self.daemon_start_pending(n) {
                // Its daemon died (killed, stopped) and nobody fenced it.
                self.restart(n);
            }
        }
    }

    fn daemon_start_pending(&self, n: u32) -> bool {
        self.queue.values().any(|e| matches!(e, Ev::DaemonStart { node, .. } if *node == n))
    }

    fn power_on_pending(&self, n: u32) -> bool {
        self.queue.values().any(|e| matches!(e, Ev::PowerOn { node } if *node == n))
    }

    pub fn ring_quorate(&self, ri: usize) -> bool {
        self.rings.get(ri).is_some_and(|r| r.quorate)
    }
}

fn msg_what(from: u32, bytes: &[u8], incoming: bool) -> What {
    let le64 = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_le_bytes(a)
    };
    let le32 = |b: &[u8]| {
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        u32::from_le_bytes(a)
    };
    let (kind, ring, epoch, group) = if bytes.len() >= wire::HEADER_LEN {
        (bytes[3], le64(&bytes[16..24]), le32(&bytes[24..28]), le32(&bytes[28..32]))
    } else {
        (0, 0, 0, 0)
    };
    let hash = trace::fnv(bytes);
    if incoming {
        What::InMsg { from, kind, ring, epoch, group, hash }
    } else {
        What::Send { kind, ring, epoch, len: bytes.len() as u32, hash }
    }
}

fn notice_what(n: &Notice) -> What {
    let (kind, a, b, c) = match n {
        Notice::DaemonSynced { generation, members } => {
            (0, generation.ring, u64::from(generation.epoch), u64::from(*members))
        }
        Notice::GroupSynced { group, generation, members } => {
            (1, u64::from(group.0) << 8, (generation.ring << 32) | u64::from(generation.epoch), u64::from(*members))
        }
        Notice::StaleMerge { node, partitions } => (2, u64::from(node.0), u64::from(*partitions), 0),
        Notice::JournalRecovered { group, jid } => (3, u64::from(group.0), u64::from(jid.0), 0),
        Notice::JournalRecoveryFailed { group, jid, attempt } => {
            (4, u64::from(group.0), u64::from(jid.0), u64::from(*attempt))
        }
        Notice::Fenced { target } => (5, u64::from(target.node.0), target.inc.0, 0),
        Notice::FenceFailed { target, attempt } => (6, u64::from(target.node.0), target.inc.0, u64::from(*attempt)),
        Notice::Dropped { reason } => (7, *reason as u64, 0, 0),
        other => panic!("notice {other:?} has no trace form yet: give it one in notice_what"),
    };
    What::Notice { kind, a, b, c }
}
