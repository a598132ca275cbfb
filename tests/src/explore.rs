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

use crate::invariants::Violation;
use crate::kernel::KPhase;
use crate::world::{Range, SimConfig, World};
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
}

impl Default for Options {
    fn default() -> Options {
        Options { nodes: 3, faults: 2, depth: 30, max_states: 0, max_cex: 1, ops: true, early_unmount: true }
    }
}

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
    Pause(u32),
    Resume(u32),
    PowerOn(u32),
    Partition(Vec<Vec<u32>>),
    Heal,
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
    /// (choice, description) from the start state.
    pub steps: Vec<(Choice, String)>,
    pub trace: String,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub explored: u64,
    pub distinct: u64,
    pub max_depth: u32,
    pub terminal: u64,
    pub truncated: bool,
    pub secs: f64,
    pub counterexamples: Vec<Counterexample>,
}

const FS: &str = "fs1";

fn config(nodes: u32) -> SimConfig {
    let mut c = SimConfig::new(nodes);
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
    let mut w = World::new(config(nodes), 1);
    w.hash_inputs = true;
    w.boot();
    w.run_until_pred(10_000, 1, |w| w.settled());
    w
}

fn set_partitions(items: &[u32]) -> Vec<Vec<Vec<u32>>> {
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
    let mut v: Vec<Choice> = w.explore_enabled().into_iter().map(|(a, s)| Choice::Event(a, s)).collect();
    if w.halted {
        return Vec::new();
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
        if b.faults < o.faults && nd.powered {
            v.push(Choice::Crash(n));
            if !nd.paused {
                v.push(Choice::Pause(n));
            }
        }
    }
    let healed = w.net.iter().skip(1).all(|l| *l == w.net[1]);
    if !healed {
        v.push(Choice::Heal);
    } else if b.faults < o.faults {
        let ids: Vec<u32> = w.node_ids().collect();
        for p in set_partitions(&ids) {
            if p.len() >= 2 {
                v.push(Choice::Partition(p));
            }
        }
    }
    v
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
        Choice::Pause(n) => {
            w.pause(*n);
            b.faults += 1;
        }
        Choice::Partition(p) => {
            w.partition(p);
            b.faults += 1;
        }
        Choice::Resume(n) => w.resume(*n),
        Choice::PowerOn(n) => w.power_on(*n),
        Choice::Heal => w.heal(),
    }
    Ok(())
}

struct Explorer {
    o: Options,
    journals: u16,
    visited: HashMap<u64, u32>,
    r: Report,
    path: Vec<Choice>,
}

impl Explorer {
    fn replay(&self) -> (World, Budget) {
        let mut w = start(self.o.nodes);
        let mut b = Budget::default();
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

    fn dfs(&mut self, w: World, b: Budget, depth: u32) {
        let cs = choices(&w, &b, &self.o);
        if cs.is_empty() {
            self.r.terminal += 1;
            return;
        }
        let mut parent = Some(w);
        let last = cs.len() - 1;
        for (i, c) in cs.into_iter().enumerate() {
            if self.done() {
                return;
            }
            let (mut cw, mut cb) = if i == last { (parent.take().expect("parent world"), b) } else { self.replay() };
            if apply(&mut cw, &mut cb, &c, self.journals).is_err() {
                continue;
            }
            self.r.explored += 1;
            self.path.push(c);
            let d = depth + 1;
            self.r.max_depth = self.r.max_depth.max(d);
            if let Some(v) = cw.violations.first().cloned() {
                self.counterexample(v);
            } else {
                let k = Self::key(&cw, &cb);
                let fresh = match self.visited.get(&k) {
                    Some(&seen) => seen > d,
                    None => {
                        self.r.distinct += 1;
                        true
                    }
                };
                if fresh {
                    self.visited.insert(k, d);
                    if self.o.max_states > 0 && self.r.distinct >= self.o.max_states {
                        self.r.truncated = true;
                    } else if d < self.o.depth {
                        self.dfs(cw, cb, d);
                    }
                }
            }
            self.path.pop();
        }
    }

    fn counterexample(&mut self, v: Violation) {
        let mut w = start(self.o.nodes);
        let mut b = Budget::default();
        let mut steps = Vec::new();
        for c in &self.path {
            let desc = match c {
                Choice::Event(a, s) => w.explore_describe((*a, *s)),
                _ => String::new(),
            };
            let _ = apply(&mut w, &mut b, c, self.journals);
            steps.push((c.clone(), desc));
        }
        let trace = w.trace.dump(&w.fs_names);
        self.r.counterexamples.push(Counterexample { violation: v, steps, trace });
    }
}

/// Rebuild the world a step list leads to (repro tests).
pub fn replay(nodes: u32, steps: &[Choice]) -> World {
    let mut w = start(nodes);
    let mut b = Budget::default();
    let journals = w.cfg.journals;
    for c in steps {
        let _ = apply(&mut w, &mut b, c, journals);
    }
    w
}

/// Explore every interleaving within the bounds (see the module docs).
pub fn check(o: &Options) -> Report {
    let t0 = Instant::now();
    let w = start(o.nodes);
    let journals = w.cfg.journals;
    let mut e = Explorer { o: o.clone(), journals, visited: HashMap::new(), r: Report::default(), path: Vec::new() };
    if let Some(v) = w.violations.first().cloned() {
        e.counterexample(v);
    } else {
        let b = Budget::default();
        e.visited.insert(Explorer::key(&w, &b), 0);
        e.r.distinct = 1;
        e.dfs(w, b, 0);
    }
    e.r.secs = t0.elapsed().as_secs_f64();
    e.r
}

impl Counterexample {
    pub fn render(&self) -> String {
        let mut s =
            format!("counterexample: {}\nsteps from the start state (3 nodes booted, settled):\n", self.violation);
        for (i, (c, d)) in self.steps.iter().enumerate() {
            if d.is_empty() {
                s += &format!("  {:3}. {c:?}\n", i + 1);
            } else {
                s += &format!("  {:3}. {c:?} {d}\n", i + 1);
            }
        }
        s += "last events:\n";
        for l in self.trace.lines() {
            s += &format!("    {l}\n");
        }
        s
    }
}
