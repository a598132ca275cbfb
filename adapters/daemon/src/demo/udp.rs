//! `cohortd demo --transport udp`: the demo story of [`crate::demo`] over
//! real UDP sockets on loopback, in real time. Three engines in one process,
//! each with its own `cohort-udp` transport (unicast mode, the daemon's
//! [`Link`]), memory kernel backends and a simulated fence device.
//!
//! The transports talk through the demo's loopback switch
//! ([`super::udpnet::Switch`]): node j's `[udp.peers]` entry for node i is a
//! switch socket, which forwards to node i's real socket. A network cut is
//! the switch dropping datagrams between the cut node and the others; a
//! power loss is the switch detaching the node (nothing in or out, not even
//! its LEAVE announcements) before its transport is dropped. No root, no
//! namespaces, no fixed ports (everything binds 127.0.0.1:0).
//!
//! The story is the same as the simulated demo's, driven by conditions
//! rather than a fixed schedule (each step waits, with a generous timeout,
//! until the cluster reached the state the next step needs):
//! 1. nodes 1-3 start; fs1 is mounted on 1, then 2, then 3 (node 1 first
//!    mounter; journals 0, 1, 2);
//! 2. node 3 loses power: nodes 1-2 detect it after the failure timeout,
//!    fence it, replay journal 2, unblock;
//! 3. node 3 boots (incarnation 2), rejoins, mounts again (journal 2);
//! 4. node 2 is cut off, the fence device becomes unreachable: nodes 1 and 3
//!    fail to fence it;
//! 5. the network heals first: node 2 is found stale and resets (exit code
//!    75), is restarted (incarnation 2), its journal 1 is replayed and it
//!    mounts again with journal 1.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use cohort_core::wire::Mode;
use cohort_core::{Member, NodeId};
use cohort_udp::{Net, Udp, UnicastConfig};

use super::udpnet::Switch;
use super::{check, DemoReport, FS};
use crate::api::{self, LogKind, StatusJson};
use crate::backend::memory::MemoryBackend;
use crate::config::{BackendConfig, FsConfig, MemoryConfig};
use crate::engine::{Engine, Env, FsRuntime, RequestKind, Stop, Timings};
use crate::fence::FenceWhy;
use crate::transport::{Link, TransportEvent};

const NODES: u32 = 3;
/// The transports' heartbeat interval.
pub const HEARTBEAT_MS: u64 = 50;
/// The transports' failure timeout: generous, so a loaded machine (tests
/// running in parallel on two cores) does not see false failures.
pub const FAIL_TIMEOUT_MS: u64 = 1000;
/// How long the simulated fence device takes.
const FENCE_MS: u64 = 300;
/// systemd's restart delay after a reset.
const RESTART_MS: u64 = 500;
/// Upper bound of every step of the story.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

enum Action {
    FenceDone { actor: u32, actor_inc: u64, target: Member, why: FenceWhy, victim_inc: Option<u64> },
    Restart(u32),
    Mount(u32),
}

struct Running {
    engine: Engine,
    link: Link,
}

struct UdpEnv<'a> {
    link: &'a mut Link,
    me: u32,
    my_inc: u64,
    now: u64,
    sched: &'a mut Vec<(u64, Action)>,
    incs: &'a [Option<u64>],
}

impl Env for UdpEnv<'_> {
    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.link.send(bytes)
    }

    fn fence(&mut self, target: Member, _known_inc: bool, why: FenceWhy) {
        let victim_inc = self.incs[target.node.0 as usize];
        self.sched.push((
            self.now + FENCE_MS,
            Action::FenceDone { actor: self.me, actor_inc: self.my_inc, target, why, victim_inc },
        ));
    }
}

pub struct UdpDemo {
    t0: Instant,
    key: [u8; 32],
    switch: Switch,
    nodes: Vec<Option<Running>>,
    incs: Vec<Option<u64>>,
    next_inc: Vec<u64>,
    powered: Vec<bool>,
    printed: Vec<u64>,
    sched: Vec<(u64, Action)>,
    /// The fence device (a PDU) is reachable.
    pdu_ok: bool,
    delivered: u64,
    out: String,
    echo: bool,
}

fn random_key() -> [u8; 32] {
    use std::io::Read as _;
    let mut k = [0u8; 32];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut k)).is_err() || k == [0u8; 32] {
        // Not secret anyway (a demo on loopback); just never all zeros.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        for (i, b) in k.iter_mut().enumerate() {
            *b = (t >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(37) ^ 0x5a;
        }
    }
    k
}

/// fs1 settled on exactly `nodes` as `s` sees it (and nothing waits).
fn settled(s: &StatusJson, nodes: &[u32]) -> bool {
    let Some(g) = s.groups.iter().find(|g| g.fs == FS) else { return false };
    s.stable
        && g.members.iter().map(|m| m.node).collect::<Vec<_>>() == nodes
        && g.members.iter().all(|m| m.mounted && m.jid.is_some())
        && g.recoveries.is_empty()
        && !g.blocked
        && s.fencing.is_empty()
        && g.kernel.is_mounted()
        && !g.kernel.blocked
}

impl UdpDemo {
    pub fn new(echo: bool) -> Result<UdpDemo, String> {
        let k = NODES as usize + 1;
        let switch = Switch::new(NODES).map_err(|e| format!("cannot bind the loopback switch sockets: {e}"))?;
        Ok(UdpDemo {
            t0: Instant::now(),
            key: random_key(),
            switch,
            nodes: (0..k).map(|_| None).collect(),
            incs: vec![None; k],
            next_inc: vec![1; k],
            powered: vec![true; k],
            printed: vec![0; k],
            sched: Vec::new(),
            pdu_ok: true,
            delivered: 0,
            out: String::new(),
            echo,
        })
    }

    fn now(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    fn line(&mut self, s: String) {
        if self.echo {
            println!("{s}");
        }
        self.out.push_str(&s);
        self.out.push('\n');
    }

    fn say(&mut self, s: &str) {
        let t = self.now() as f64 / 1000.0;
        self.line(format!("[{t:>7.3}s] ==== {s}"));
    }

    /// Print log entries the engines added since last time.
    fn print_new(&mut self) {
        for i in 1..=NODES as usize {
            let Some(r) = &self.nodes[i] else { continue };
            let entries = r.engine.log().since(self.printed[i]);
            if let Some(last) = entries.last() {
                self.printed[i] = last.seq;
            }
            for en in entries {
                if en.kind == LogKind::Change && en.text.starts_with("quorum") {
                    continue;
                }
                let t = en.t_ms as f64 / 1000.0;
                let l = format!("[{t:>7.3}s] n{} gen {:<8} {:<12} {}", en.node, en.generation, en.kind, en.text);
                self.line(l);
            }
        }
    }

    fn status(&self, i: u32) -> Option<StatusJson> {
        let now = self.now();
        self.nodes[i as usize].as_ref().map(|r| r.engine.status_json(now))
    }

    /// Start node `i`'s daemon: a new transport (ephemeral port, attached
    /// to the switch) and engine (next incarnation, the cluster's nodelist).
    fn start(&mut self, i: u32) -> Result<(), String> {
        let iu = i as usize;
        let inc = self.next_inc[iu];
        self.next_inc[iu] += 1;
        let nodes: Vec<NodeId> = (1..=NODES).map(NodeId).collect();
        let net = Net::Unicast(UnicastConfig {
            peers: self.switch.peers_for(i),
            bind: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        });
        let mut cfg = cohort_udp::Config::new(NodeId(i), nodes, self.key, net);
        cfg.heartbeat_ms = HEARTBEAT_MS;
        cfg.fail_timeout_ms = FAIL_TIMEOUT_MS;
        // as cohortd: the persisted incarnation in the high bits, never the clock
        cfg.incarnation =
            Some(cohort_udp::incarnation::from_persisted(inc).map_err(|e| format!("node {i}: vs incarnation: {e}"))?);
        let udp = Udp::new(cfg).map_err(|e| format!("node {i}: cannot start the udp transport: {e}"))?;
        let addr = udp.local_addr().map_err(|e| format!("node {i}: local address: {e}"))?;
        self.switch.attach(i, addr);
        let fs = FsConfig {
            name: FS.into(),
            journals: 8,
            backend: BackendConfig::Memory(MemoryConfig::default()),
            mount_point: None,
            auto_mount: false,
            mode: Mode::Rw,
        };
        let rt = FsRuntime::new(fs, Box::new(MemoryBackend::new(FS, MemoryConfig::default())))?;
        let mut engine = Engine::new(NodeId(i), inc, Timings::default(), vec![rt], 10_000, "udp", self.now());
        engine.set_nodelist(&(1..=NODES).collect::<Vec<u32>>());
        self.nodes[iu] = Some(Running { engine, link: Link::udp(udp) });
        self.incs[iu] = Some(inc);
        self.printed[iu] = 0;
        self.say(&format!("node {i}: cohortd starts (incarnation {inc}), udp on {addr}"));
        self.print_new();
        Ok(())
    }

    /// The process is gone without a word (power loss, SIGKILL): detach
    /// first so not even its LEAVE announcements get out.
    fn vanish(&mut self, i: u32) {
        self.switch.detach(i);
        self.nodes[i as usize] = None;
        self.incs[i as usize] = None;
    }

    fn with_node(&mut self, i: u32, f: impl FnOnce(&mut Engine, &mut UdpEnv<'_>)) {
        let now = self.now();
        let UdpDemo { nodes, sched, incs, .. } = self;
        let Some(r) = nodes[i as usize].as_mut() else { return };
        let my_inc = r.engine.incarnation();
        let mut env = UdpEnv { link: &mut r.link, me: i, my_inc, now, sched, incs };
        f(&mut r.engine, &mut env);
        self.print_new();
        self.check_stop(i);
    }

    fn check_stop(&mut self, i: u32) {
        let iu = i as usize;
        let Some(stop) = self.nodes[iu].as_ref().and_then(|r| r.engine.stopped().cloned()) else { return };
        let now = self.now();
        if let Some(r) = self.nodes[iu].as_mut() {
            if stop == Stop::Reset {
                r.engine.release_all(now, "reset");
            }
        }
        self.print_new();
        // The process exits: dropping the transport announces its leave
        // (as cohortd's exit does).
        self.nodes[iu] = None;
        self.incs[iu] = None;
        self.switch.detach(i);
        match stop {
            Stop::Reset => {
                self.say(&format!(
                    "node {i}: cohortd exits with code {} (reset); systemd restarts it in {:.1}s",
                    crate::exit::RESET,
                    RESTART_MS as f64 / 1000.0
                ));
                self.sched.push((now + RESTART_MS, Action::Restart(i)));
            }
            other => self.say(&format!("node {i}: cohortd stopped unexpectedly: {other:?}")),
        }
    }

    fn act(&mut self, a: Action) -> Result<(), String> {
        let now = self.now();
        match a {
            Action::Restart(i) => {
                self.say(&format!("node {i}: systemd restarts cohortd"));
                self.start(i)?;
                self.sched.push((now + 300, Action::Mount(i)));
            }
            Action::Mount(i) => self.mount(i),
            Action::FenceDone { actor, actor_inc, target, why, victim_inc } => {
                let t = target.node.0;
                let result = if !self.pdu_ok {
                    Err("fence device unreachable (timed out)".to_owned())
                } else {
                    match why {
                        FenceWhy::Fence => {
                            if self.powered[t as usize] {
                                self.say(&format!("fence device powers node {t} off"));
                                self.powered[t as usize] = false;
                                self.vanish(t);
                            }
                            Ok(())
                        }
                        FenceWhy::Kill => {
                            if victim_inc.is_some() && self.incs[t as usize] == victim_inc {
                                self.say(&format!("kill: node {t}'s daemon is killed; systemd restarts it"));
                                self.vanish(t);
                                self.sched.push((now + RESTART_MS, Action::Restart(t)));
                            } else {
                                self.say(&format!("kill: node {t}'s stale daemon is already gone"));
                            }
                            Ok(())
                        }
                    }
                };
                // Only the daemon that asked gets the result.
                if self.incs[actor as usize] == Some(actor_inc) {
                    self.with_node(actor, |e, env| e.fenced(env.now, target, why, result, "", env));
                }
            }
        }
        Ok(())
    }

    fn mount(&mut self, i: u32) {
        self.say(&format!("operator on node {i}: cohortctl mount {FS}"));
        self.with_node(i, |e, env| {
            if let Err(err) = e.request(env.now, FS, RequestKind::Mount(Mode::Rw), env) {
                e.note(LogKind::Error, err);
            }
        });
    }

    /// One round of the event loop: engine timers, due actions, poll(2)
    /// over the switch and every transport (at most `max_wait`), forward,
    /// dispatch, feed the engines.
    fn step(&mut self, max_wait: Duration) -> Result<(), String> {
        let now = self.now();
        for i in 1..=NODES {
            let due = self.nodes[i as usize].as_ref().and_then(|r| r.engine.next_timer()).is_some_and(|t| t <= now);
            if due {
                self.with_node(i, |e, env| e.fire_timers(env.now, env));
            }
        }
        self.sched.sort_by_key(|(t, _)| *t);
        while self.sched.first().is_some_and(|(t, _)| *t <= self.now()) {
            let (_, a) = self.sched.remove(0);
            self.act(a)?;
        }

        let now = self.now();
        let mut wait = max_wait.as_millis() as u64;
        if let Some((t, _)) = self.sched.first() {
            wait = wait.min(t.saturating_sub(now));
        }
        let mut fds: Vec<libc::pollfd> = Vec::new();
        for r in self.nodes.iter().flatten() {
            if let Some(t) = r.engine.next_timer() {
                wait = wait.min(t.saturating_sub(now));
            }
            if let Some(d) = r.link.next_timeout(Instant::now()) {
                wait = wait.min(d.as_micros().div_ceil(1000) as u64);
            }
            if r.link.pending() > 0 {
                wait = 0;
            }
            fds.extend(r.link.fds().into_iter().map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }));
        }
        fds.extend(self.switch.fds().into_iter().map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }));
        // SAFETY: poll(2) over a valid array of pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait as i32) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(format!("poll failed: {e}"));
            }
        }
        self.switch.pump();
        for i in 1..=NODES {
            let iu = i as usize;
            let Some(r) = self.nodes[iu].as_mut() else { continue };
            // Always read: the switch may just have forwarded something.
            if let Err(e) = r.link.dispatch(true, Instant::now()) {
                return Err(format!("node {i}: transport failed: {}", e.text));
            }
            while let Some(ev) = self.nodes[iu].as_mut().and_then(|r| r.link.next_event()) {
                if matches!(ev, TransportEvent::Deliver { .. }) {
                    self.delivered += 1;
                }
                self.with_node(i, |e, env| e.transport_event(env.now, ev, env));
            }
        }
        self.print_new();
        Ok(())
    }

    /// Run the event loop until `pred` holds (checked between rounds).
    fn wait_for(&mut self, what: &str, pred: impl Fn(&UdpDemo) -> bool) -> Result<(), String> {
        let t = Instant::now();
        loop {
            if pred(self) {
                return Ok(());
            }
            if t.elapsed() > STEP_TIMEOUT {
                let mut st = String::new();
                for i in 1..=NODES {
                    if let Some(s) = self.status(i) {
                        let _ = writeln!(st, "---- node {i} ----\n{}", api::render_status(&s));
                    }
                }
                return Err(format!("timed out after {STEP_TIMEOUT:?} waiting for {what}\n{st}"));
            }
            self.step(Duration::from_millis(50))?;
        }
    }

    /// Run the event loop for `d`.
    fn run_for(&mut self, d: Duration) -> Result<(), String> {
        let t = Instant::now();
        while t.elapsed() < d {
            self.step(d.saturating_sub(t.elapsed()).min(Duration::from_millis(50)))?;
        }
        Ok(())
    }

    fn all(&self, nodes: &[u32], pred: impl Fn(&StatusJson) -> bool) -> bool {
        nodes.iter().all(|i| self.status(*i).is_some_and(|s| pred(&s)))
    }

    fn story(&mut self) -> Result<(), String> {
        let all3 = [1, 2, 3];
        for i in 1..=NODES {
            self.start(i)?;
            self.run_for(Duration::from_millis(50))?;
        }
        self.wait_for("a synced daemon group of nodes 1, 2, 3", |d| {
            d.all(&all3, |s| s.daemon.phase == "complete" && s.members.len() == 3 && s.stable)
        })?;
        self.say("the daemon group formed over UDP: nodes 1, 2, 3");
        for i in 1..=NODES {
            self.mount(i);
            let on: Vec<u32> = (1..=i).collect();
            self.wait_for(&format!("{FS} mounted on nodes {on:?}"), |d| d.all(&on, |s| settled(s, &on)))?;
        }
        self.say("all three nodes have fs1 mounted");

        self.say(&format!(
            "node 3 LOSES POWER (the others notice after the {:.1}s failure timeout)",
            FAIL_TIMEOUT_MS as f64 / 1000.0
        ));
        self.powered[3] = false;
        self.vanish(3);
        self.wait_for("nodes 1, 2: node 3 fenced, journal 2 replayed, fs1 unblocked", |d| {
            d.all(&[1, 2], |s| s.members.len() == 2 && settled(s, &[1, 2]))
        })?;

        self.say("node 3 boots and joins again");
        self.powered[3] = true;
        self.start(3)?;
        self.wait_for("a synced daemon group of nodes 1, 2, 3", |d| {
            d.all(&all3, |s| s.daemon.phase == "complete" && s.members.len() == 3)
        })?;
        self.mount(3);
        self.wait_for("fs1 settled on nodes 1, 2, 3", |d| d.all(&all3, |s| settled(s, &all3)))?;

        self.say(
            "node 2 is CUT OFF (the switch drops its datagrams; its daemon keeps running); the fence device is \
             unreachable from now on",
        );
        self.pdu_ok = false;
        self.switch.set_label(2, 1);
        self.wait_for("a failed fencing attempt against node 2", |d| {
            d.status(1).is_some_and(|s| s.fencing.iter().any(|f| f.node == 2 && f.attempts >= 1))
        })?;
        self.say("the network HEALS (before any fencing succeeded)");
        self.switch.set_label(2, 0);
        self.wait_for("node 2 reset, restarted and fs1 settled on nodes 1, 2, 3", |d| {
            d.incs[2] == Some(2) && d.all(&all3, |s| s.members.len() == 3 && settled(s, &all3))
        })?;
        // Leftovers (the kill backup's result) come in.
        self.run_for(Duration::from_millis(2 * FENCE_MS))?;
        Ok(())
    }

    /// Run the story; `Err((why, timeline))` when it does not reach the
    /// expected end state.
    pub fn run(mut self) -> Result<DemoReport, (String, String)> {
        self.line(format!(
            "cohort demo over UDP: {NODES} daemons in one process, real UDP sockets on 127.0.0.1 (unicast, through \
             the demo's switch), real time, heartbeat {HEARTBEAT_MS} ms, failure timeout {FAIL_TIMEOUT_MS} ms, \
             memory kernel backends"
        ));
        self.line("timeline: [time] node  generation(view seq.epoch)  kind  what".into());
        if let Err(e) = self.story() {
            self.print_new();
            return Err((e, self.out));
        }
        self.say("end of the story: final state");
        let now = self.now();
        let statuses: Vec<StatusJson> = self.nodes.iter().flatten().map(|r| r.engine.status_json(now)).collect();
        for s in &statuses {
            let mut t = String::new();
            let _ = writeln!(t, "---- node {} ----", s.node);
            t.push_str(&api::render_status(s));
            self.line(t);
        }
        match check(&statuses) {
            Ok(()) => {
                let msg = format!(
                    "demo OK (udp): {:.1}s real time, {} messages delivered, {} datagrams forwarded, {} dropped by \
                     the switch; node 3 and node 2 each restarted once with a new incarnation and got a journal back",
                    now as f64 / 1000.0,
                    self.delivered,
                    self.switch.forwarded,
                    self.switch.dropped
                );
                self.line(msg);
                Ok(DemoReport { timeline: self.out, final_status: statuses, sim_ms: now })
            }
            Err(e) => Err((e, self.out)),
        }
    }
}

/// `cohortd demo --transport udp`: run, print, exit status.
pub fn main(echo: bool) -> i32 {
    let r = UdpDemo::new(echo).map_err(|e| (e, String::new())).and_then(|d| d.run());
    match r {
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
