//! Exhaustive small-scope explorer over the real core (`cohort-sim check`).
//!
//! The cluster is the simulator's own [`World`] (real `cohort_core::Node`s,
//! the corosync model, the kernel and fence device, the invariant checkers
//! P1-P9 run inside every step). The explorer replaces the seeded clock and
//! random delays with enumerated choices:
//!
//! * **Timing** is fixed: every delay range of the model is zero-width (zero
//!   except `boot_delay` 1 ms), so the only nondeterminism left is the
//!   order of events due at the same instant. The clock advances (to the
//!   next core timer, e.g. a fence retry) only when nothing is due at the
//!   current instant: timers never race messages here.
//! * **Events**: at every state, each FIFO channel's first event due at the
//!   earliest queued time is a choice: a node's CPG stream (confchg, ring,
//!   agreed messages), a node's quorum stream, the sequencing of a ring's
//!   messages, the membership reconfiguration, and every other event on its
//!   own (kernel mount/replay results, fence device results, timers,
//!   daemon starts, power-ons, merge kills). So CPG vs quorum vs kernel vs
//!   fence vs ring change interleave in every order; one stream's FIFO order
//!   (corosync's agreed order) is kept.
//! * **Operator requests**: `mount fs1` (rw) on each node at most once and
//!   `unmount fs1` on each node at most once, after its mount request (the
//!   host's order: kernel first, then the leave).
//!   `unmount-early` (the operator's leave before `umount`; the host
//!   refuses it while the kernel has the fs) counts as that node's unmount.
//!   With `--no-early-unmount` an unmount is offered only once the kernel
//!   has the filesystem mounted (workaround for CORE-BUG-23).
//! * **Faults**, at most `faults` of them: crash (power off) of a powered
//!   node, pause of a running node, partition of a healed network into any
//!   shape (every set partition with >= 2 blocks). Free recoveries: heal
//!   (merge) of a partitioned network, resume of a paused node, power-on of
//!   a node that is off (crashed or fenced).
//! * **Fixed**: the start state (cluster booted and settled, one filesystem
//!   `fs1` with 8 journals, nothing mounted), majority quorum, fences
//!   succeed (power off), kernels never fail, ring seqs as corosync.
//!
//! States are deduplicated by [`World::state_hash`] plus the explorer's
//! budgets. The core's `Node` is covered by the hash of its whole input
//! history (time and input), which determines it: the core is sans-IO and
//! deterministic, so two states with equal hashes have equal futures (up to
//! a 64-bit hash collision). `World` cannot be cloned (neither can `Node`),
//! so a state is rebuilt by replaying its path from the start; the last
//! child of every state reuses the parent's world.

use crate::invariants::{liveness, Property, Violation};
use crate::kernel::KPhase;
use crate::scenario::{Report as ScReport, ScenarioError};
use crate::world::{Range, SimConfig, World};
use cohort_core::gcs::QuorumMode;
use cohort_core::node::Request;
use cohort_core::wire::{self, Mode};
use std::collections::HashMap;
use std::time::Instant;

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

pub fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: u32,
    pub faults: u32,
    pub depth: u32,
    /// Stop after this many distinct states (0 = no limit).
    pub max_states: u64,
    /// Stop after this many counterexamples.
    pub max_cex: usize,
    /// Operator requests (mount/unmount) enumerated.
    pub ops: bool,
    /// Unmount also before the kernel has mounted (the contract's "give up
    /// a mount request whose kernel mount has not started yet"). Off
    /// (`--no-early-unmount`): unmount only once the kernel has the fs
    /// mounted, a workaround for CORE-BUG-23 (see tests/CORE_BUGS.md).
    pub early_unmount: bool,
    /// Quorum two_node (corosync's `two_node: 1`) instead of majority.
    pub two_node: bool,
    /// Failing outcomes (each one fault): a fence device that reports
    /// failure, a kernel mount or a journal replay that fails, a kernel
    /// that withdraws the filesystem.
    pub kernel_faults: bool,
    /// At every leaf (depth bound or nothing left to do): heal everything
    /// and run on; the liveness condition (P6) must then hold.
    pub liveness: bool,
    /// Start with `fs1` mounted everywhere (see [`Setup::mounted`]).
    pub mounted: bool,
    /// Also a fault: a daemon dies while its node and kernel live on
    /// (`--kill-daemon`; off by default, CI's bounds stay as measured).
    pub kill_daemon: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            nodes: 3,
            faults: 2,
            depth: 30,
            max_states: 0,
            max_cex: 1,
            ops: true,
            early_unmount: true,
            two_node: false,
            kernel_faults: true,
            kill_daemon: false,
            liveness: true,
            mounted: false,
        }
    }
}

impl Options {
    /// The smallest search around one failure of a mounted journal: two
    /// nodes under two_node quorum, fs1 mounted on both, no operator
    /// requests and no failing fence/kernel outcomes, `faults` faults up to
    /// `depth` (how the planted and broken-core tests find their bugs).
    pub fn mounted_pair(faults: u32, depth: u32) -> Options {
        Options {
            nodes: 2,
            two_node: true,
            mounted: true,
            ops: false,
            kernel_faults: false,
            kill_daemon: false,
            faults,
            depth,
            ..Options::default()
        }
    }
}

/// Simulated time the liveness continuation may take (as the swarm's).
pub const LIVENESS_MS: u64 = 60_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// A queued event (time, queue seq: stable under replay).
    Event(u64, u64),
    Mount(u32),
    Unmount(u32),
    /// The operator's leave request sent to the host before `umount`
    /// (`unmount-early`): the host refuses it while the kernel has the fs.
    UnmountEarly(u32),
    Crash(u32),
    /// Only the daemon dies; the kernel keeps its mounts (CORE-BUG-26).
    KillDaemon(u32),
    Pause(u32),
    Resume(u32),
    PowerOn(u32),
    Partition(Vec<Vec<u32>>),
    Heal,
    /// A queued event with its failing outcome (fence device failure,
    /// kernel mount error, failed journal replay).
    Fail(u64, u64),
    /// The node's kernel withdraws the filesystem.
    Withdraw(u32),
}

impl std::fmt::Display for Choice {
    /// The scenario-file form (`step ...`, see [`run_text`]).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Choice::Event(a, s) => write!(f, "event {a} {s}"),
            Choice::Fail(a, s) => write!(f, "fail {a} {s}"),
            Choice::Mount(n) => write!(f, "mount {n}"),
            Choice::Unmount(n) => write!(f, "unmount {n}"),
            Choice::UnmountEarly(n) => write!(f, "unmount-early {n}"),
            Choice::Crash(n) => write!(f, "crash {n}"),
            Choice::KillDaemon(n) => write!(f, "kill-daemon {n}"),
            Choice::Pause(n) => write!(f, "pause {n}"),
            Choice::Resume(n) => write!(f, "resume {n}"),
            Choice::PowerOn(n) => write!(f, "power-on {n}"),
            Choice::Withdraw(n) => write!(f, "withdraw {n}"),
            Choice::Heal => write!(f, "heal"),
            Choice::Partition(p) => {
                let blocks: Vec<String> =
                    p.iter().map(|b| b.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",")).collect();
                write!(f, "partition {}", blocks.join(" | "))
            }
        }
    }
}

impl std::str::FromStr for Choice {
    type Err = String;
    fn from_str(t: &str) -> Result<Choice, String> {
        let w: Vec<&str> = t.split_whitespace().collect();
        let num = |i: usize| -> Result<u64, String> {
            w.get(i).ok_or_else(|| format!("'{t}': missing number"))?.parse::<u64>().map_err(|e| format!("'{t}': {e}"))
        };
        let node = |i: usize| num(i).map(|n| n as u32);
        Ok(match w.first().copied() {
            Some("event") => Choice::Event(num(1)?, num(2)?),
            Some("fail") => Choice::Fail(num(1)?, num(2)?),
            Some("mount") => Choice::Mount(node(1)?),
            Some("unmount") => Choice::Unmount(node(1)?),
            Some("unmount-early") => Choice::UnmountEarly(node(1)?),
            Some("crash") => Choice::Crash(node(1)?),
            Some("kill-daemon") => Choice::KillDaemon(node(1)?),
            Some("pause") => Choice::Pause(node(1)?),
            Some("resume") => Choice::Resume(node(1)?),
            Some("power-on") => Choice::PowerOn(node(1)?),
            Some("withdraw") => Choice::Withdraw(node(1)?),
            Some("heal") => Choice::Heal,
            Some("partition") => {
                let rest = t.trim_start().strip_prefix("partition").unwrap_or("");
                let mut p = Vec::new();
                for b in rest.split('|') {
                    let mut block = Vec::new();
                    for n in b.split(',').map(str::trim).filter(|x| !x.is_empty()) {
                        block.push(n.parse::<u32>().map_err(|e| format!("'{t}': {e}"))?);
                    }
                    p.push(block);
                }
                Choice::Partition(p)
            }
            _ => return Err(format!("unknown step '{t}'")),
        })
    }
}

#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
struct Budget {
    faults: u32,
    mounted: u64,
    unmounted: u64,
}

#[derive(Clone, Debug)]
pub struct Counterexample {
    pub violation: Violation,
    pub setup: Setup,
    /// (choice, description) from the start state.
    pub steps: Vec<(Choice, String)>,
    /// A liveness counterexample: the failure shows after `heal-all`.
    pub live: bool,
    pub trace: String,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub explored: u64,
    pub distinct: u64,
    pub max_depth: u32,
    pub terminal: u64,
    /// Leaves whose liveness continuation ran.
    pub live_checked: u64,
    /// Heals of a network split in three or more components (3-way merges).
    pub merges3: u64,
    pub truncated: bool,
    pub secs: f64,
    pub counterexamples: Vec<Counterexample>,
}

const FS: &str = "fs1";

fn config(nodes: u32, two_node: bool) -> SimConfig {
    let mut c = SimConfig::new(nodes);
    if two_node {
        c.quorum = QuorumMode::TwoNode;
    }
    let z = Range(0, 0);
    c.net_delay = z;
    c.jitter = z;
    c.quorum_delay = z;
    c.ring_delay = z;
    c.mount_delay = z;
    c.first_recovery_delay = z;
    c.recovery_delay = z;
    c.fence_delay = z;
    c.restart_delay = z;
    c.boot_delay = Range(1, 1);
    c.kill_delay = z;
    c.trace_keep = 200;
    c
}

/// The fixed start state: booted, settled, nothing mounted.
pub fn start(nodes: u32) -> World {
    start_with(nodes, false)
}

/// The start state, with quorum two_node when `two_node`.
pub fn start_with(nodes: u32, two_node: bool) -> World {
    start_of(&Setup { nodes, two_node, mounted: false })
}

/// What the search starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    pub nodes: u32,
    pub two_node: bool,
    /// `fs1` mounted rw on every node and the cluster live (the faults
    /// then hit mounted journals at once, instead of after the ~10 steps
    /// a mount takes).
    pub mounted: bool,
}

impl Setup {
    fn of(o: &Options) -> Setup {
        Setup { nodes: o.nodes, two_node: o.two_node, mounted: o.mounted }
    }

    fn budget(&self) -> Budget {
        let all = if self.mounted { (1u64 << (self.nodes + 1)) - 2 } else { 0 };
        Budget { faults: 0, mounted: all, unmounted: 0 }
    }
}

pub fn start_of(su: &Setup) -> World {
    let mut w = World::new(config(su.nodes, su.two_node), 1);
    w.hash_inputs = true;
    w.boot();
    w.run_until_pred(10_000, 1, |w| w.settled());
    if su.mounted {
        let journals = w.cfg.journals;
        for n in 1..=su.nodes {
            let fs = wire::fs_name(FS).expect("fs name");
            w.request(n, Request::Mount { fs, mode: Mode::Rw, journals }).expect("mount at start");
            w.run_until_pred(10_000, 1, |w| w.in_flight() == 0);
        }
        let live = w.run_until_pred(LIVENESS_MS, 1, |w| liveness::check(w).is_ok());
        assert!(live, "the mounted start state is not live: {:?}", liveness::check(&mut w));
    }
    w
}

/// Every set partition of `items` (each block in ascending order).
pub(crate) fn set_partitions(items: &[u32]) -> Vec<Vec<Vec<u32>>> {
    let Some((first, rest)) = items.split_first() else { return vec![Vec::new()] };
    let mut out = Vec::new();
    for p in set_partitions(rest) {
        for i in 0..p.len() {
            let mut q = p.clone();
            q[i].insert(0, *first);
            out.push(q);
        }
        let mut q = p.clone();
        q.insert(0, vec![*first]);
        out.push(q);
    }
    out
}

fn choices(w: &World, b: &Budget, o: &Options) -> Vec<Choice> {
    if w.halted {
        return Vec::new();
    }
    let mut v = Vec::new();
    let fault_left = b.faults < o.faults;
    for (a, s) in w.explore_enabled() {
        v.push(Choice::Event(a, s));
        if o.kernel_faults && fault_left && w.explore_failable((a, s)) {
            v.push(Choice::Fail(a, s));
        }
    }
    for n in w.node_ids() {
        let nd = &w.nodes[n as usize];
        let bit = 1u64 << n;
        let running = nd.daemon.is_some() && !nd.paused;
        if o.ops && running && b.mounted & bit == 0 {
            v.push(Choice::Mount(n));
        }
        let kernel_ok = o.early_unmount || nd.kernel.get(FS).is_some_and(|k| k.phase == KPhase::Mounted);
        if o.ops && running && b.mounted & bit != 0 && b.unmounted & bit == 0 && kernel_ok {
            v.push(Choice::Unmount(n));
        }
        let held = nd.kernel.get(FS).is_some_and(|k| k.phase != KPhase::Idle);
        if o.ops && running && b.mounted & bit != 0 && b.unmounted & bit == 0 && (o.early_unmount || held) {
            v.push(Choice::UnmountEarly(n));
        }
        if nd.paused {
            v.push(Choice::Resume(n));
        }
        if !nd.powered {
            v.push(Choice::PowerOn(n));
        }
        if fault_left && nd.powered {
            v.push(Choice::Crash(n));
            if !nd.paused {
                v.push(Choice::Pause(n));
            }
            if o.kill_daemon && nd.daemon.is_some() && !nd.paused {
                v.push(Choice::KillDaemon(n));
            }
            let kernel_has = nd.kernel.get(FS).is_some_and(|k| k.phase != KPhase::Idle && !k.withdrawn);
            if o.kernel_faults && kernel_has {
                v.push(Choice::Withdraw(n));
            }
        }
    }
    let now = shape(w);
    if now.len() > 1 {
        v.push(Choice::Heal);
    }
    if fault_left {
        // Any new shape, also from a split network (a 2/1 split that
        // splits again gives the 3-way merge at the heal).
        let ids: Vec<u32> = w.node_ids().collect();
        for mut p in set_partitions(&ids) {
            p.sort();
            if p.len() >= 2 && p != now {
                v.push(Choice::Partition(p));
            }
        }
    }
    v
}

/// The network's components, in the form `set_partitions` yields (blocks
/// ordered by their smallest node, nodes ascending).
fn shape(w: &World) -> Vec<Vec<u32>> {
    let mut blocks: Vec<(u32, Vec<u32>)> = Vec::new();
    for n in w.node_ids() {
        let l = w.net[n as usize];
        match blocks.iter_mut().find(|(x, _)| *x == l) {
            Some((_, b)) => b.push(n),
            None => blocks.push((l, vec![n])),
        }
    }
    blocks.into_iter().map(|(_, b)| b).collect()
}

/// Apply a choice; `Err` when the model refuses it (no transition).
fn apply(w: &mut World, b: &mut Budget, c: &Choice, journals: u16) -> Result<(), String> {
    match c {
        Choice::Event(a, s) => w.explore_fire((*a, *s)),
        Choice::Mount(n) => {
            let fs = wire::fs_name(FS).map_err(|e| format!("{e:?}"))?;
            w.request(*n, Request::Mount { fs, mode: Mode::Rw, journals })?;
            b.mounted |= 1 << n;
        }
        Choice::Unmount(n) => {
            let fs = wire::fs_name(FS).map_err(|e| format!("{e:?}"))?;
            w.request(*n, Request::Unmount { fs })?;
            b.unmounted |= 1 << n;
        }
        Choice::UnmountEarly(n) => {
            w.unmount_early(*n, FS)?;
            b.unmounted |= 1 << n;
        }
        Choice::Crash(n) => {
            w.crash(*n);
            b.faults += 1;
        }
        Choice::KillDaemon(n) => {
            w.kill_daemon(*n, "killed");
            b.faults += 1;
        }
        Choice::Pause(n) => {
            w.pause(*n);
            b.faults += 1;
        }
        Choice::Partition(p) => {
            w.partition(p);
            b.faults += 1;
        }
        Choice::Fail(a, s) => {
            if !w.explore_failable((*a, *s)) {
                return Err("not failable".into());
            }
            w.explore_fire_failed((*a, *s));
            b.faults += 1;
        }
        Choice::Withdraw(n) => {
            w.withdraw(FS, *n)?;
            b.faults += 1;
        }
        Choice::Resume(n) => w.resume(*n),
        Choice::PowerOn(n) => w.power_on(*n),
        Choice::Heal => w.heal(),
    }
    Ok(())
}

/// States seen (by hash) with the smallest depth each was reached at: a
/// state is explored again only when reached at a smaller depth (its
/// subtree then reaches deeper).
#[derive(Default)]
pub(crate) struct Seen(HashMap<u64, u32>);

/// What [`Seen::visit`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Visit {
    /// A distinct state, never reached before.
    New,
    /// Reached before, deeper: explore it again.
    Shallower,
    /// Reached before at this depth or less: nothing new below.
    Old,
}

impl Seen {
    pub(crate) fn visit(&mut self, key: u64, depth: u32) -> Visit {
        let v = match self.0.get(&key) {
            Some(&seen) if seen <= depth => return Visit::Old,
            Some(_) => Visit::Shallower,
            None => Visit::New,
        };
        self.0.insert(key, depth);
        v
    }
}

struct Explorer {
    o: Options,
    journals: u16,
    visited: Seen,
    r: Report,
    path: Vec<Choice>,
}

/// Apply a choice; a panic (a core `debug_assert!`, a simulator check) is
/// returned as a P7 violation instead of taking the search down.
fn apply_caught(w: &mut World, b: &mut Budget, c: &Choice, journals: u16) -> Result<Result<(), String>, Violation> {
    let now = w.now;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply(w, b, c, journals))).map_err(|e| Violation {
        property: Property::Robustness,
        msg: format!("panic: {}", panic_text(&e)),
        time: now,
    })
}

fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// The liveness continuation at a leaf: heal the network, resume, power on
/// and restart everything, stop injecting faults, and run (timers and all,
/// in queue order) until property 6 holds or `LIVENESS_MS` pass.
pub fn run_live(w: &mut World) -> Result<(), Violation> {
    w.heal_all();
    let mut last = String::new();
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        w.run_until_pred(LIVENESS_MS, 100, |w| match liveness::check(w) {
            Ok(()) => true,
            Err(e) => {
                last = e;
                false
            }
        })
    }));
    match ok {
        Err(e) => {
            Err(Violation { property: Property::Robustness, msg: format!("panic: {}", panic_text(&e)), time: w.now })
        }
        Ok(_) if w.halted => Err(w.violations.first().cloned().unwrap_or_else(|| Violation {
            property: Property::Robustness,
            msg: "halted".into(),
            time: w.now,
        })),
        Ok(true) => Ok(()),
        Ok(false) => Err(Violation {
            property: Property::Liveness,
            msg: format!("not live {LIVENESS_MS} ms after heal-all: {last}"),
            time: w.now,
        }),
    }
}

impl Explorer {
    fn replay(&self) -> (World, Budget) {
        let su = Setup::of(&self.o);
        let mut w = start_of(&su);
        let mut b = su.budget();
        for c in &self.path {
            let _ = apply(&mut w, &mut b, c, self.journals);
        }
        (w, b)
    }

    fn key(w: &World, b: &Budget) -> u64 {
        let h = w.state_hash();
        fnv(h, format!("{b:?}").as_bytes())
    }

    fn done(&self) -> bool {
        self.r.counterexamples.len() >= self.o.max_cex || self.r.truncated
    }

    /// A leaf: check that the cluster can still complete.
    fn leaf(&mut self, mut w: World) {
        if !self.o.liveness {
            return;
        }
        self.r.live_checked += 1;
        if let Err(v) = run_live(&mut w) {
            self.counterexample(v, true);
        }
    }

    fn dfs(&mut self, w: World, b: Budget, depth: u32) {
        let cs = choices(&w, &b, &self.o);
        if cs.is_empty() {
            self.r.terminal += 1;
            self.leaf(w);
            return;
        }
        let mut parent = Some(w);
        let last = cs.len() - 1;
        for (i, c) in cs.into_iter().enumerate() {
            if self.done() {
                return;
            }
            let (mut cw, mut cb) = if i == last { (parent.take().expect("parent world"), b) } else { self.replay() };
            let merge3 = c == Choice::Heal && shape(&cw).len() >= 3;
            let applied = apply_caught(&mut cw, &mut cb, &c, self.journals);
            if matches!(applied, Ok(Err(_))) {
                continue;
            }
            self.r.explored += 1;
            if merge3 {
                self.r.merges3 += 1;
            }
            self.path.push(c);
            let d = depth + 1;
            self.r.max_depth = self.r.max_depth.max(d);
            if let Some(v) = applied.err().or_else(|| cw.violations.first().cloned()) {
                self.counterexample(v, false);
            } else {
                let seen = self.visited.visit(Self::key(&cw, &cb), d);
                if seen == Visit::New {
                    self.r.distinct += 1;
                }
                if seen != Visit::Old {
                    if self.o.max_states > 0 && self.r.distinct >= self.o.max_states {
                        self.r.truncated = true;
                    } else if d < self.o.depth {
                        self.dfs(cw, cb, d);
                    } else {
                        self.leaf(cw);
                    }
                }
            }
            self.path.pop();
        }
    }

    fn counterexample(&mut self, v: Violation, live: bool) {
        let su = Setup::of(&self.o);
        let mut w = start_of(&su);
        let mut b = su.budget();
        let mut steps = Vec::new();
        for c in &self.path {
            let desc = match c {
                Choice::Event(a, s) | Choice::Fail(a, s) => w.explore_describe((*a, *s)),
                _ => String::new(),
            };
            let _ = apply_caught(&mut w, &mut b, c, self.journals);
            steps.push((c.clone(), desc));
        }
        if live {
            let _ = run_live(&mut w);
        }
        let trace = w.trace.dump(&w.fs_names);
        self.r.counterexamples.push(Counterexample { violation: v, setup: su, steps, live, trace });
    }
}

/// Rebuild the world a step list leads to (repro tests).
pub fn replay(nodes: u32, steps: &[Choice]) -> World {
    replay_with(nodes, false, steps)
}

pub fn replay_with(nodes: u32, two_node: bool, steps: &[Choice]) -> World {
    replay_of(&Setup { nodes, two_node, mounted: false }, steps)
}

pub fn replay_of(su: &Setup, steps: &[Choice]) -> World {
    let mut w = start_of(su);
    let mut b = su.budget();
    let journals = w.cfg.journals;
    for c in steps {
        let _ = apply(&mut w, &mut b, c, journals);
    }
    w
}

/// Explore every interleaving within the bounds (see the module docs).
pub fn check(o: &Options) -> Report {
    let t0 = Instant::now();
    let su = Setup::of(o);
    let w = start_of(&su);
    let journals = w.cfg.journals;
    let mut e = Explorer { o: o.clone(), journals, visited: Seen::default(), r: Report::default(), path: Vec::new() };
    if let Some(v) = w.violations.first().cloned() {
        e.counterexample(v, false);
    } else {
        let b = su.budget();
        e.visited.visit(Explorer::key(&w, &b), 0);
        e.r.distinct = 1;
        e.dfs(w, b, 0);
    }
    e.r.secs = t0.elapsed().as_secs_f64();
    e.r
}

impl Counterexample {
    /// The counterexample as a scenario file (`cohort-sim scenario FILE`
    /// replays it, see [`run_text`]), with the last events as comments.
    pub fn render(&self) -> String {
        let mut s = format!("# cohort-sim check counterexample: {}\n", self.violation);
        s += "# replay: cohort-sim scenario THIS_FILE --trace\n";
        let su = &self.setup;
        s += &format!(
            "explore nodes {}{}{}\n",
            su.nodes,
            if su.two_node { " two_node" } else { "" },
            if su.mounted { " mounted" } else { "" }
        );
        for (c, d) in self.steps.iter() {
            if d.is_empty() {
                s += &format!("step {c}\n");
            } else {
                s += &format!("step {c:<24} # {d}\n");
            }
        }
        if self.live {
            s += "expect live\n";
        }
        s += "# last events:\n";
        for l in self.trace.lines() {
            s += &format!("#   {l}\n");
        }
        s
    }
}

/// Run a scenario file in the explorer's form: `explore nodes N
/// [two_node] [mounted]`, then `step CHOICE` lines (the [`Choice`] text), then an
/// optional `expect live` (heal everything, property 6 must hold) or
/// `expect violation P` (the steps must violate property `P`, e.g. `P9`).
/// Every step must apply (the model accepts it); every checker runs as in
/// the search.
pub fn run_text(file: &str, text: &str, seed: u64) -> Result<ScReport, Box<ScenarioError>> {
    let err = |line: usize, text: &str, msg: String, violation: Option<Violation>, trace: String| {
        Box::new(ScenarioError { file: file.into(), line, text: text.into(), msg, violation, trace, seed })
    };
    let mut w: Option<World> = None;
    let mut b = Budget::default();
    let mut want: Option<String> = None;
    let mut last_line = (0, String::new());
    for (no, raw) in text.lines().enumerate() {
        let no = no + 1;
        let l = raw.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        last_line = (no, l.to_string());
        let words: Vec<&str> = l.split_whitespace().collect();
        match words.as_slice() {
            ["explore", "nodes", n, rest @ ..] => {
                let n: u32 = n.parse().map_err(|e| err(no, l, format!("{e}"), None, String::new()))?;
                if !(1..=6).contains(&n) || w.is_some() {
                    return Err(err(no, l, "explore nodes 1..6, once, first".into(), None, String::new()));
                }
                let mut su = Setup { nodes: n, two_node: false, mounted: false };
                for r in rest {
                    match *r {
                        "two_node" => su.two_node = true,
                        "mounted" => su.mounted = true,
                        _ => {
                            return Err(err(no, l, "explore nodes N [two_node] [mounted]".into(), None, String::new()))
                        }
                    }
                }
                b = su.budget();
                w = Some(start_of(&su));
            }
            ["step", ..] => {
                let Some(world) = w.as_mut() else {
                    return Err(err(no, l, "'explore nodes N' must come first".into(), None, String::new()));
                };
                let c: Choice = l["step".len()..].trim().parse().map_err(|e| err(no, l, e, None, String::new()))?;
                let nodes = world.cfg.nodes;
                let named = match &c {
                    Choice::Mount(n)
                    | Choice::Unmount(n)
                    | Choice::UnmountEarly(n)
                    | Choice::Crash(n)
                    | Choice::KillDaemon(n)
                    | Choice::Pause(n)
                    | Choice::Resume(n)
                    | Choice::PowerOn(n)
                    | Choice::Withdraw(n) => vec![*n],
                    Choice::Partition(p) => p.iter().flatten().copied().collect(),
                    _ => Vec::new(),
                };
                if let Some(n) = named.iter().find(|n| !(1..=nodes).contains(*n)) {
                    return Err(err(no, l, format!("no node {n} (nodes 1..{nodes})"), None, String::new()));
                }
                let journals = world.cfg.journals;
                match apply_caught(world, &mut b, &c, journals) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(err(no, l, format!("step refused: {e}"), None, String::new())),
                    Err(v) => {
                        if want.is_none() {
                            return Err(err(
                                no,
                                l,
                                format!("safety violation: {}", v.property.name()),
                                Some(v),
                                String::new(),
                            ));
                        }
                        world.violations.push(v);
                    }
                }
                if want.is_none() {
                    if let Some(v) = world.violations.first().cloned() {
                        let trace = world.trace.dump(&world.fs_names);
                        return Err(err(no, l, format!("safety violation: {}", v.property.name()), Some(v), trace));
                    }
                }
            }
            ["expect", "live"] => {
                let Some(world) = w.as_mut() else { return Err(err(no, l, "no cluster".into(), None, String::new())) };
                if let Err(v) = run_live(world) {
                    let trace = world.trace.dump(&world.fs_names);
                    return Err(err(no, l, format!("{}: {}", v.property.name(), v.msg), Some(v), trace));
                }
            }
            ["expect", "violation", p] => {
                if want.is_some() {
                    return Err(err(no, l, "one 'expect violation' line".into(), None, String::new()));
                }
                want = Some(p.to_string());
            }
            _ => return Err(err(no, l, format!("unknown explore command '{l}'"), None, String::new())),
        }
    }
    let Some(w) = w else { return Err(err(0, "", "no 'explore nodes N' line".into(), None, String::new())) };
    if let Some(p) = want {
        let (no, l) = last_line;
        match w.violations.first() {
            Some(v) if v.property.name().starts_with(&format!("{p} ")) => {}
            Some(v) => {
                return Err(err(no, &l, format!("expected a {p} violation, got: {v}"), Some(v.clone()), String::new()))
            }
            None => return Err(err(no, &l, format!("expected a {p} violation, none happened"), None, String::new())),
        }
    }
    Ok(ScReport { notes: Vec::new(), trace_hash: w.trace_hash(), events: w.events, steps: w.steps, sim_ms: w.now })
}
