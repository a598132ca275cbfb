//! `cohortd demo`: three daemons' engines in one process over the simulated
//! transport of [`simnet`], memory kernel backends, a simulated fence device
//! and simulated time. It prints a timeline of everything the engines log
//! (with generations) and checks the end state.
//!
//! Story:
//! 1. nodes 1-3 start; an operator mounts fs1 on 1, 2, 3 (node 1 mounts
//!    first and replays every journal; journals 0, 1, 2);
//! 2. node 3 loses power: after the token timeout nodes 1-2 block fs1,
//!    fence node 3, replay its journal, unblock;
//! 3. node 3 reboots (new incarnation), rejoins and mounts again;
//! 4. node 2 is cut off while its daemon runs; nodes 1 and 3 (quorate) try to
//!    fence it but the fence device is unreachable from the partition;
//! 5. the network heals before fencing succeeds: node 2 comes back with
//!    state (a stateful merge), is found stale and resets; systemd restarts
//!    it with a new incarnation; it rejoins, its old journal is replayed and
//!    it gets a journal again.
//!
//! `cohortd demo --transport udp` ([`udp`]) tells the same story over real
//! UDP sockets on loopback, in real time.

pub mod simnet;
pub mod udp;
pub mod udpnet;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;

use cohort_core::wire::Mode;
use cohort_core::{Member, NodeId};

use crate::api::{self, LogKind, StatusJson};
use crate::backend::memory::MemoryBackend;
use crate::config::{BackendConfig, FsConfig, MemoryConfig};
use crate::engine::{Engine, Env, FsRuntime, RequestKind, Stop, Timings};
use crate::fence::FenceWhy;
use simnet::SimNet;

const NODES: u32 = 3;
pub(crate) const FS: &str = "fs1";
/// Corosync's effective token timeout for 3 nodes with token 1000.
const TOKEN_TIMEOUT_MS: u64 = 1650;
/// Time a merge takes to form once the network heals.
const MERGE_MS: u64 = 1800;
const FENCE_MS: u64 = 400;
const RESTART_MS: u64 = 1000;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    Start(u32),
    Mount(u32),
    PowerOff(u32),
    PowerOn(u32),
    Cut(u32),
    Heal,
    Reconfigure(&'static str),
    FenceDone { actor: u32, target: Member, why: FenceWhy, victim_inc: Option<u64> },
    Restart(u32),
    Say(&'static str),
    End,
}

struct Sched {
    seq: u64,
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    actions: Vec<Option<Action>>,
}

impl Sched {
    fn at(&mut self, t: u64, a: Action) {
        self.seq += 1;
        self.actions.push(Some(a));
        self.heap.push(Reverse((t, (self.actions.len() - 1) as u64)));
    }

    fn next_time(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    fn pop_due(&mut self, now: u64) -> Option<Action> {
        let Reverse((t, i)) = *self.heap.peek()?;
        if t > now {
            return None;
        }
        self.heap.pop();
        self.actions[i as usize].take()
    }
}

struct DemoEnv<'a> {
    net: &'a mut SimNet,
    me: u32,
    now: u64,
    sched: &'a mut Sched,
    incs: &'a [Option<u64>],
}

impl Env for DemoEnv<'_> {
    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.net.send(self.me, bytes)
    }

    fn fence(&mut self, target: Member, _known_inc: bool, why: FenceWhy) {
        // The device acts on whatever runs on the target when it completes;
        // a kill only hits the incarnation that was running when asked.
        let victim_inc = self.incs[target.node.0 as usize];
        self.sched.at(self.now + FENCE_MS, Action::FenceDone { actor: self.me, target, why, victim_inc });
    }
}

/// Result of a demo run.
pub struct DemoReport {
    pub timeline: String,
    pub final_status: Vec<StatusJson>,
    /// Duration of the story: simulated (simnet) or real (udp) milliseconds.
    pub sim_ms: u64,
}

pub struct Demo {
    now: u64,
    net: SimNet,
    nodes: Vec<Option<Engine>>,
    incs: Vec<Option<u64>>,
    next_inc: Vec<u64>,
    printed: Vec<u64>,
    sched: Sched,
    /// The fence device (a PDU) is reachable.
    pdu_ok: bool,
    out: String,
    echo: bool,
    done: bool,
}

impl Demo {
    pub fn new(echo: bool) -> Demo {
        let k = NODES as usize + 1;
        Demo {
            now: 0,
            net: SimNet::new(NODES, 8),
            nodes: (0..k).map(|_| None).collect(),
            incs: vec![None; k],
            next_inc: vec![1; k],
            printed: vec![0; k],
            sched: Sched { seq: 0, heap: BinaryHeap::new(), actions: Vec::new() },
            pdu_ok: true,
            out: String::new(),
            echo,
            done: false,
        }
    }

    fn line(&mut self, s: String) {
        if self.echo {
            println!("{s}");
        }
        self.out.push_str(&s);
        self.out.push('\n');
    }

    fn say(&mut self, s: &str) {
        let t = self.now as f64 / 1000.0;
        self.line(format!("[{t:>7.3}s] ==== {s}"));
    }

    /// Print log entries the engines added since last time.
    fn print_new(&mut self) {
        for i in 1..=NODES as usize {
            let Some(e) = &self.nodes[i] else { continue };
            let entries = e.log().since(self.printed[i]);
            if let Some(last) = entries.last() {
                self.printed[i] = last.seq;
            }
            for en in entries {
                if en.kind == LogKind::Change && en.text.starts_with("quorum") {
                    continue; // every ring change is followed by one; shown in the ring line's generation
                }
                let t = en.t_ms as f64 / 1000.0;
                let l = format!(
                    "[{t:>7.3}s] n{} gen {:<7} {:<12} {}",
                    en.node,
                    en.generation.to_string(),
                    en.kind,
                    en.text
                );
                self.line(l);
            }
        }
    }

    fn fs_config() -> FsConfig {
        FsConfig {
            name: FS.into(),
            journals: 8,
            backend: BackendConfig::Memory(MemoryConfig::default()),
            mount_point: None,
            auto_mount: false,
            mode: Mode::Rw,
        }
    }

    fn start(&mut self, i: u32) {
        let iu = i as usize;
        let inc = self.next_inc[iu];
        self.next_inc[iu] += 1;
        let cfg = Self::fs_config();
        let be = Box::new(MemoryBackend::new(FS, MemoryConfig::default()));
        let rt = match FsRuntime::new(cfg, be) {
            Ok(r) => r,
            Err(e) => {
                self.say(&format!("cannot build node {i}: {e}"));
                return;
            }
        };
        let e = Engine::new(
            NodeId(i),
            inc,
            Timings { fence_retry_ms: 1000, recovery_retry_ms: 1000, startup_fence_delay_ms: 3000 },
            vec![rt],
            10_000,
            "simnet",
            self.now,
        );
        self.nodes[iu] = Some(e);
        self.incs[iu] = Some(inc);
        self.printed[iu] = 0;
        self.say(&format!("node {i}: cohortd starts (incarnation {inc})"));
        self.net.start_daemon(i);
    }

    fn with_engine(&mut self, i: u32, f: impl FnOnce(&mut Engine, &mut DemoEnv<'_>)) {
        let Demo { nodes, net, sched, incs, now, .. } = self;
        let Some(e) = nodes[i as usize].as_mut() else { return };
        let mut env = DemoEnv { net, me: i, now: *now, sched, incs };
        f(e, &mut env);
        self.print_new();
        self.check_stop(i);
    }

    fn check_stop(&mut self, i: u32) {
        let iu = i as usize;
        let Some(stop) = self.nodes[iu].as_ref().and_then(|e| e.stopped().cloned()) else { return };
        let now = self.now;
        if let Some(e) = self.nodes[iu].as_mut() {
            if stop == Stop::Reset {
                e.release_all(now, "reset");
            }
        }
        self.print_new();
        self.nodes[iu] = None;
        self.incs[iu] = None;
        self.net.stop_daemon(i);
        match stop {
            Stop::Reset => {
                self.say(&format!(
                    "node {i}: cohortd exits with code {} (reset); systemd restarts it in {:.1}s",
                    crate::exit::RESET,
                    RESTART_MS as f64 / 1000.0
                ));
                self.sched.at(now + RESTART_MS, Action::Restart(i));
            }
            other => self.say(&format!("node {i}: cohortd stopped unexpectedly: {other:?}")),
        }
    }

    /// Deliver everything queued until nothing moves.
    fn quiesce(&mut self) {
        for _ in 0..100_000 {
            self.net.flush();
            let mut moved = false;
            for i in 1..=NODES {
                while let Some(ev) = self.net.take(i) {
                    moved = true;
                    let now = self.now;
                    self.with_engine(i, |e, env| e.transport_event(now, ev, env));
                }
            }
            if !moved && !self.net.has_pending() {
                return;
            }
        }
        self.say("the simulation does not settle (bug)");
    }

    fn act(&mut self, a: Action) {
        let now = self.now;
        match a {
            Action::Start(i) => self.start(i),
            Action::Restart(i) => {
                self.say(&format!("node {i}: systemd restarts cohortd"));
                self.start(i);
                self.sched.at(now + 300, Action::Mount(i));
            }
            Action::Mount(i) => {
                self.say(&format!("operator on node {i}: cohortctl mount {FS}"));
                self.with_engine(i, |e, env| {
                    if let Err(err) = e.request(now, FS, RequestKind::Mount(Mode::Rw), env) {
                        e.note(LogKind::Error, err);
                    }
                });
            }
            Action::PowerOff(i) => {
                self.say(&format!(
                    "node {i} LOSES POWER (the others notice after the {:.2}s token timeout)",
                    TOKEN_TIMEOUT_MS as f64 / 1000.0
                ));
                self.nodes[i as usize] = None;
                self.incs[i as usize] = None;
                self.net.power_off(i);
                self.sched.at(now + TOKEN_TIMEOUT_MS, Action::Reconfigure("token timeout: new ring"));
            }
            Action::PowerOn(i) => {
                self.say(&format!("node {i} boots and joins the ring"));
                self.net.power_on(i);
                self.sched.at(now + MERGE_MS, Action::Reconfigure("node joined the ring"));
                self.sched.at(now + MERGE_MS + 200, Action::Start(i));
                self.sched.at(now + MERGE_MS + 500, Action::Mount(i));
            }
            Action::Cut(i) => {
                self.say(&format!(
                    "node {i} is CUT OFF (its daemon keeps running); the fence device is unreachable from now on"
                ));
                self.pdu_ok = false;
                let labels: Vec<(u32, u32)> = (1..=NODES).map(|k| (k, u32::from(k == i))).collect();
                self.net.set_labels(&labels);
                self.sched.at(now + TOKEN_TIMEOUT_MS, Action::Reconfigure("token timeout: the cluster splits"));
            }
            Action::Heal => {
                self.say("the network HEALS (before any fencing succeeded)");
                let labels: Vec<(u32, u32)> = (1..=NODES).map(|k| (k, 0)).collect();
                self.net.set_labels(&labels);
                self.sched.at(now + MERGE_MS, Action::Reconfigure("the partitions merge"));
            }
            Action::Reconfigure(why) => {
                self.say(why);
                self.net.reconfigure();
            }
            Action::FenceDone { actor, target, why, victim_inc } => {
                let result = if !self.pdu_ok {
                    Err("fence device unreachable (timed out)".to_owned())
                } else {
                    let t = target.node.0;
                    match why {
                        FenceWhy::Fence => {
                            if self.net.is_powered(t) && self.incs[t as usize].is_some() {
                                self.say(&format!("fence device powers node {t} off"));
                                self.nodes[t as usize] = None;
                                self.incs[t as usize] = None;
                                self.net.power_off(t);
                                self.sched.at(now + TOKEN_TIMEOUT_MS, Action::Reconfigure("token timeout: new ring"));
                            }
                            Ok(())
                        }
                        FenceWhy::Kill => {
                            if victim_inc.is_some() && self.incs[t as usize] == victim_inc {
                                self.say(&format!("kill: node {t}'s daemon is killed"));
                                self.nodes[t as usize] = None;
                                self.incs[t as usize] = None;
                                self.net.stop_daemon(t);
                            } else {
                                self.say(&format!("kill: node {t}'s stale daemon is already gone"));
                            }
                            Ok(())
                        }
                    }
                };
                self.with_engine(actor, |e, env| e.fenced(now, target, why, result, "", env));
            }
            Action::Say(s) => self.say(s),
            Action::End => self.done = true,
        }
    }

    /// Run the story; `Err` when the end state is not the expected one.
    pub fn run(mut self) -> Result<DemoReport, (String, String)> {
        use Action::*;
        self.line(format!(
            "cohort demo: {NODES} daemons in one process, simulated transport and time, memory kernel backends"
        ));
        self.line("timeline: [sim time] node  generation(ring.epoch)  kind  what".into());
        let script: Vec<(u64, Action)> = vec![
            (0, Start(1)),
            (50, Start(2)),
            (100, Start(3)),
            (500, Mount(1)),
            (800, Mount(2)),
            (1100, Mount(3)),
            (2500, Say("all three nodes have fs1 mounted")),
            (3000, PowerOff(3)),
            (8000, PowerOn(3)),
            (13000, Cut(2)),
            (17500, Heal),
            (25000, End),
        ];
        for (t, a) in script {
            self.sched.at(t, a);
        }
        let mut guard = 0u64;
        while !self.done {
            guard += 1;
            if guard > 1_000_000 {
                return Err(("the simulation did not finish (bug)".into(), self.out));
            }
            self.quiesce();
            let mut next = self.sched.next_time();
            for e in self.nodes.iter().flatten() {
                if let Some(t) = e.next_timer() {
                    next = Some(next.map_or(t, |n: u64| n.min(t)));
                }
            }
            let Some(t) = next else { break };
            self.now = self.now.max(t);
            let now = self.now;
            for i in 1..=NODES {
                if self.nodes[i as usize].as_ref().and_then(|e| e.next_timer()).is_some_and(|t| t <= now) {
                    self.with_engine(i, |e, env| e.fire_timers(now, env));
                }
            }
            while let Some(a) = self.sched.pop_due(now) {
                self.act(a);
                self.quiesce();
            }
        }
        self.say("end of the story: final state");
        let statuses: Vec<StatusJson> = self.nodes.iter().flatten().map(|e| e.status_json(self.now)).collect();
        for s in &statuses {
            let mut t = String::new();
            let _ = writeln!(t, "---- node {} ----", s.node);
            t.push_str(&api::render_status(s));
            self.line(t);
        }
        let report = DemoReport { timeline: self.out.clone(), final_status: statuses, sim_ms: self.now };
        match check(&report.final_status) {
            Ok(()) => {
                let msg = format!(
                    "demo OK: {:.1}s simulated, {} messages delivered; node 3 and node 2 each restarted once with a \
                     new incarnation and got a journal back",
                    self.now as f64 / 1000.0,
                    self.net.delivered
                );
                let mut report = report;
                report.timeline.push_str(&msg);
                report.timeline.push('\n');
                if self.echo {
                    println!("{msg}");
                }
                Ok(report)
            }
            Err(e) => Err((e, report.timeline)),
        }
    }
}

/// The expected end state: three stable nodes, nodes 2 and 3 in their second
/// incarnation, fs1 mounted everywhere with distinct journals, nothing left
/// to recover or fence.
pub(crate) fn check(st: &[StatusJson]) -> Result<(), String> {
    if st.len() != NODES as usize {
        return Err(format!("expected {NODES} running daemons, found {}", st.len()));
    }
    for s in st {
        let want_inc = if s.node == 1 { 1 } else { 2 };
        if s.incarnation != want_inc {
            return Err(format!("node {} runs incarnation {}, expected {want_inc}", s.node, s.incarnation));
        }
        if !s.stable {
            return Err(format!("node {} is not stable: {s:?}", s.node));
        }
        let Some(g) = s.groups.iter().find(|g| g.fs == FS) else {
            return Err(format!("node {} has no {FS} group", s.node));
        };
        let mut jids: Vec<u16> = g.members.iter().filter_map(|m| m.jid).collect();
        jids.sort_unstable();
        jids.dedup();
        if g.members.len() != 3 || jids.len() != 3 || !g.members.iter().all(|m| m.mounted) {
            return Err(format!("node {}: {FS} members {:?}", s.node, g.members));
        }
        if !g.recoveries.is_empty() || !s.fencing.is_empty() {
            return Err(format!("node {}: recoveries {:?} fencing {:?}", s.node, g.recoveries, s.fencing));
        }
        if !g.kernel.is_mounted() || g.kernel.blocked {
            return Err(format!("node {}: kernel {:?}", s.node, g.kernel));
        }
    }
    Ok(())
}

/// `cohortd demo`: run, print, exit status.
pub fn main(echo: bool) -> i32 {
    match Demo::new(echo).run() {
        Ok(_) => 0,
        Err((e, timeline)) => {
            if !echo {
                eprint!("{timeline}");
            }
            eprintln!("cohortd demo: FAILED: {e}");
            1
        }
    }
}
