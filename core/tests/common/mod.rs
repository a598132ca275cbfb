//! A tiny deterministic cluster driver for the core's own tests: an
//! in-order network with partitions that behaves like corosync (NodeDown /
//! NodeUp confchgs, then the ring event; one ring seq shared by all sides of
//! a split, as corosync does), an auto-answering kernel and fence device.
//! The simulator crate in `tests/` is the real test bench with faults.
#![allow(dead_code)]

use cohort_core::gcs::{Confchg, MemberReason, NodeList, QuorumEvent, Reason, RingEvent};
use cohort_core::node::{Effect, Input, KernelEvent, KernelOp, Request, TimerToken};
use cohort_core::wire::{fs_name, Mode, MAX_MESSAGE};
use cohort_core::{Config, Incarnation, Instant, Member, Node, NodeId};
use std::collections::VecDeque;

pub struct Cluster {
    pub nodes: Vec<Option<Node>>,
    pub total: u32,
    pub ring: u64,
    /// Partition label per node (same label = connected).
    pub net: Vec<u32>,
    /// Daemon membership each node was last told.
    pub view: Vec<Vec<u32>>,
    pub bus: VecDeque<(u32, Vec<u8>)>,
    pub kernel: VecDeque<(u32, KernelEvent)>,
    pub fenced: Vec<Member>,
    pub log: Vec<String>,
    pub timers: Vec<(u64, u32, TimerToken)>,
    pub now: u64,
    pub fence_ok: bool,
    /// Fence requests are kept unanswered.
    pub fence_hold: bool,
    /// Successful fencing does not power the target off (a lying device).
    pub fence_lies: bool,
    pub held: Vec<(u32, Member)>,
    pub recover_ok: bool,
    pub quorum_majority: bool,
    pub reset: Vec<u32>,
    pub killed: Vec<u32>,
    /// The adapter ignores ResetSelf and Kill (a stuck or paused node).
    pub ignore_resets: bool,
    crash_queue: Vec<u32>,
    /// Powered off.
    pub off: Vec<bool>,
    /// Called with `true` right before and `false` right after every call
    /// into a node (the allocation counter uses it).
    pub probe: fn(bool),
    /// Membership changes name no departed members (`Confchg.left` empty):
    /// a GCS that only reports the new member list.
    pub omit_left: bool,
}

pub fn list(v: &[u32]) -> NodeList {
    let mut l = NodeList::new();
    for n in v {
        l.push(NodeId(*n)).unwrap();
    }
    l
}

impl Cluster {
    /// `n` nodes, all started with incarnation 1 in one partition.
    pub fn new(n: u32) -> Cluster {
        let mut c = Cluster::empty(n);
        for i in 1..=n {
            c.start(i, 1);
        }
        c.pump();
        c
    }

    /// `total` configured nodes, the first `running` started (incarnation
    /// 1) with `fs1` mounted rw on all of them.
    pub fn mounted_of(total: u32, running: u32) -> Cluster {
        let mut c = Cluster::empty(total);
        for i in 1..=running {
            c.start(i, 1);
        }
        c.pump();
        let on: Vec<u32> = (1..=running).collect();
        c.mount("fs1", &on, Mode::Rw);
        c.pump();
        c
    }

    /// `n` nodes, `fs1` mounted rw on every one, everything stable.
    pub fn mounted(n: u32) -> Cluster {
        let c = Cluster::mounted_of(n, n);
        assert!(c.all_stable(), "{}", c.status_dump());
        c
    }

    pub fn empty(n: u32) -> Cluster {
        Cluster {
            nodes: (0..=n).map(|_| None).collect(),
            total: n,
            ring: 8,
            net: vec![0; n as usize + 1],
            view: vec![vec![]; n as usize + 1],
            bus: VecDeque::new(),
            kernel: VecDeque::new(),
            fenced: vec![],
            log: vec![],
            timers: vec![],
            now: 0,
            fence_ok: true,
            fence_hold: false,
            fence_lies: false,
            held: vec![],
            recover_ok: true,
            quorum_majority: true,
            reset: vec![],
            killed: vec![],
            ignore_resets: false,
            crash_queue: vec![],
            off: vec![false; n as usize + 1],
            probe: |_| {},
            omit_left: false,
        }
    }

    pub fn node(&self, i: u32) -> &Node {
        self.nodes[i as usize].as_ref().unwrap()
    }

    pub fn alive(&self, i: u32) -> bool {
        self.nodes[i as usize].is_some()
    }

    fn input(&mut self, i: u32, input: Input<'_>) {
        let now = Instant(self.now);
        let probe = self.probe;
        if let Some(n) = self.nodes[i as usize].as_mut() {
            probe(true);
            let mut r = n.handle(now, input.clone());
            probe(false);
            if r == Err(cohort_core::HandleError::Backpressure) {
                self.drain(i);
                let n = self.nodes[i as usize].as_mut().expect("alive");
                probe(true);
                r = n.handle(now, input);
                probe(false);
            }
            if let Err(e) = r {
                self.log.push(format!("node {i}: {e:?}"));
            }
        }
    }

    /// Running daemons connected to `i` (including `i`).
    pub fn component(&self, i: u32) -> Vec<u32> {
        (1..=self.total).filter(|n| self.alive(*n) && self.net[*n as usize] == self.net[i as usize]).collect()
    }

    /// Quorum counts powered nodes in the partition (corosync's view),
    /// whether or not their daemon runs.
    fn quorate(&self, comp: &[u32]) -> bool {
        let Some(&any) = comp.first() else { return false };
        let label = self.net[any as usize];
        let up = (1..=self.total).filter(|n| !self.off[*n as usize] && self.net[*n as usize] == label).count() as u32;
        !self.quorum_majority || up * 2 > self.total
    }

    /// Start a daemon: it learns the ring, then its Join confchg reaches its
    /// whole component.
    pub fn start(&mut self, i: u32, inc: u64) {
        self.start_with(i, Config::new(NodeId(i), Incarnation(inc)));
    }

    pub fn start_with(&mut self, i: u32, cfg: Config) {
        if self.off[i as usize] {
            // The node boots: a ring change (no confchg for our group) that
            // the running daemons see as a new ring and new quorum.
            self.off[i as usize] = false;
            self.ring += 4;
            let ring = self.ring;
            let comp = self.component(i);
            let q = self.quorate(&[i]);
            for m in comp.iter().copied().filter(|m| *m != i) {
                self.input(m, Input::Ring(RingEvent { ring, members: list(&comp) }));
                self.input(m, Input::Quorum(QuorumEvent { ring, quorate: q, members: list(&comp) }));
            }
        }
        self.nodes[i as usize] = Some(Node::new(cfg));
        let all: Vec<u32> = (1..=self.total).collect();
        self.input(i, Input::Nodelist(list(&all)));
        let comp = self.component(i);
        let ring = self.ring;
        let q = self.quorate(&comp);
        self.input(i, Input::Ring(RingEvent { ring, members: list(&comp) }));
        self.input(i, Input::Quorum(QuorumEvent { ring, quorate: q, members: list(&comp) }));
        let mut cc = Confchg { members: list(&comp), ..Default::default() };
        cc.joined.push(MemberReason { node: NodeId(i), reason: Reason::Join }).unwrap();
        for m in comp.clone() {
            self.view[m as usize] = comp.clone();
            self.input(m, Input::Confchg(cc.clone()));
        }
    }

    /// Re-label the network and deliver the ring changes that follow.
    pub fn set_net(&mut self, labels: &[(u32, u32)]) {
        self.pump();
        for (n, l) in labels {
            self.net[*n as usize] = *l;
        }
        self.reconfigure();
        self.pump();
    }

    /// Partition into the given groups (every node must be named).
    pub fn partition(&mut self, groups: &[&[u32]]) {
        let mut labels = vec![];
        for (k, g) in groups.iter().enumerate() {
            for n in g.iter() {
                labels.push((*n, k as u32 + 1));
            }
        }
        self.set_net(&labels);
    }

    pub fn heal(&mut self) {
        let labels: Vec<(u32, u32)> = (1..=self.total).map(|n| (n, 0)).collect();
        self.set_net(&labels);
    }

    pub fn reconfigure(&mut self) {
        self.ring += 4;
        let ring = self.ring;
        for i in 1..=self.total {
            if !self.alive(i) {
                continue;
            }
            let comp = self.component(i);
            let old = self.view[i as usize].clone();
            if old == comp {
                continue;
            }
            let left: Vec<u32> = old.iter().copied().filter(|n| !comp.contains(n)).collect();
            let joined: Vec<u32> = comp.iter().copied().filter(|n| !old.contains(n)).collect();
            if !left.is_empty() {
                let members: Vec<u32> = old.iter().copied().filter(|n| !left.contains(n)).collect();
                let mut cc = Confchg { members: list(&members), ..Default::default() };
                for n in left.into_iter().filter(|_| !self.omit_left) {
                    cc.left.push(MemberReason { node: NodeId(n), reason: Reason::NodeDown }).unwrap();
                }
                self.input(i, Input::Confchg(cc));
            }
            if !joined.is_empty() {
                let mut cc = Confchg { members: list(&comp), ..Default::default() };
                for n in joined {
                    cc.joined.push(MemberReason { node: NodeId(n), reason: Reason::NodeUp }).unwrap();
                }
                self.input(i, Input::Confchg(cc));
            }
            self.view[i as usize] = comp.clone();
            self.input(i, Input::Ring(RingEvent { ring, members: list(&comp) }));
            let q = self.quorate(&comp);
            self.input(i, Input::Quorum(QuorumEvent { ring, quorate: q, members: list(&comp) }));
        }
    }

    /// The node loses power: its daemon and kernel state are gone.
    pub fn crash(&mut self, i: u32) {
        self.pump();
        self.nodes[i as usize] = None;
        self.off[i as usize] = true;
        self.view[i as usize].clear();
        self.kernel.retain(|(n, _)| *n != i);
        self.timers.retain(|(_, n, _)| *n != i);
        self.reconfigure();
    }

    /// Only the daemon dies; the node stays in the ring.
    pub fn procdown(&mut self, i: u32) {
        self.pump();
        self.nodes[i as usize] = None;
        self.view[i as usize].clear();
        let comp = self.component(i);
        let mut cc = Confchg { members: list(&comp), ..Default::default() };
        cc.left.push(MemberReason { node: NodeId(i), reason: Reason::ProcDown }).unwrap();
        for m in comp.clone() {
            self.view[m as usize] = comp.clone();
            self.input(m, Input::Confchg(cc.clone()));
        }
    }

    /// Tell node `i` the configured cluster nodes (a configuration change).
    #[allow(dead_code)]
    pub fn nodelist(&mut self, i: u32, nodes: &[u32]) {
        self.input(i, Input::Nodelist(list(nodes)));
    }

    pub fn request(&mut self, i: u32, r: Request) {
        self.input(i, Input::Request(r));
    }

    pub fn mount(&mut self, fs: &str, nodes: &[u32], mode: Mode) {
        self.mount_with(fs, nodes, mode, 8);
    }

    pub fn mount_with(&mut self, fs: &str, nodes: &[u32], mode: Mode, journals: u16) {
        for &n in nodes {
            self.request(n, Request::Mount { fs: fs_name(fs).unwrap(), mode, journals });
        }
    }

    /// Deliver raw bytes as if `from` had multicast them now.
    pub fn inject(&mut self, from: u32, bytes: &[u8]) {
        for m in self.component(from) {
            self.input(m, Input::Deliver { from: NodeId(from), bytes });
        }
    }

    /// Answer the fence requests kept by `fence_hold`.
    pub fn release_fences(&mut self, ok: bool) {
        let held = std::mem::take(&mut self.held);
        for (actor, target) in held {
            if ok && !self.fence_lies {
                self.crash_queue.push(target.node.0);
            }
            self.input(actor, Input::Fenced { target, ok });
        }
        self.pump();
    }

    /// Run until nothing moves (timers fire in time order).
    pub fn pump(&mut self) {
        for _round in 0..100_000 {
            if !self.pump_once() {
                return;
            }
        }
        panic!("no quiescence: {:?}", &self.log[self.log.len().saturating_sub(40)..]);
    }

    /// Take a node's effects and messages; true if there were any.
    pub fn drain(&mut self, i: u32) -> bool {
        let mut moved = false;
        let mut buf = [0u8; MAX_MESSAGE];
        let probe = self.probe;
        while let Some(n) = self.nodes[i as usize].as_mut() {
            probe(true);
            let e = n.poll_effect();
            let t = if e.is_none() { n.poll_transmit(&mut buf) } else { None };
            probe(false);
            if let Some(e) = e {
                moved = true;
                self.effect(i, e);
                continue;
            }
            if let Some(len) = t {
                moved = true;
                self.bus.push_back((i, buf[..len].to_vec()));
                continue;
            }
            break;
        }
        moved
    }

    /// One step; false when nothing is left to do.
    pub fn pump_once(&mut self) -> bool {
        {
            if let Some(n) = self.crash_queue.pop() {
                if self.alive(n) {
                    self.off[n as usize] = true;
                    self.nodes[n as usize] = None;
                    self.view[n as usize].clear();
                    self.kernel.retain(|(k, _)| *k != n);
                    self.reconfigure();
                }
                return true;
            }
            let mut moved = false;
            for i in 1..self.nodes.len() as u32 {
                moved |= self.drain(i);
            }
            if let Some((from, bytes)) = self.bus.pop_front() {
                moved = true;
                if self.alive(from) {
                    for m in self.component(from) {
                        self.input(m, Input::Deliver { from: NodeId(from), bytes: &bytes });
                    }
                }
            }
            if let Some((i, ev)) = self.kernel.pop_front() {
                moved = true;
                self.input(i, Input::Kernel(ev));
            }
            if !moved && self.crash_queue.is_empty() {
                self.timers.sort();
                if self.timers.is_empty() {
                    return false;
                }
                let (at, i, t) = self.timers.remove(0);
                self.now = self.now.max(at);
                self.input(i, Input::Timer(t));
            }
        }
        true
    }

    fn effect(&mut self, i: u32, e: Effect) {
        self.log.push(format!("{i}: {e:?}"));
        match e {
            Effect::Kernel { fs, op, .. } => match op {
                KernelOp::MountFirst(_) => {
                    self.kernel.push_back((i, KernelEvent::MountResult { fs: fs.clone(), ok: true }));
                    self.kernel.push_back((i, KernelEvent::FirstRecoveryDone { fs }));
                }
                KernelOp::Mount(_) | KernelOp::MountSpectator => {
                    self.kernel.push_back((i, KernelEvent::MountResult { fs, ok: true }))
                }
                KernelOp::RecoverJournal(jid) => {
                    let ok = self.recover_ok;
                    self.recover_ok = true;
                    self.kernel.push_back((i, KernelEvent::RecoveryDone { fs, jid, ok }))
                }
                _ => {}
            },
            Effect::Fence { target } => {
                if self.fence_hold {
                    self.held.push((i, target));
                    return;
                }
                let ok = self.fence_ok;
                self.fence_ok = true;
                if ok {
                    self.fenced.push(target);
                    if !self.fence_lies {
                        self.crash_queue.push(target.node.0);
                    }
                }
                self.input(i, Input::Fenced { target, ok });
            }
            Effect::SetTimer { token, at } => self.timers.push((at.0, i, token)),
            Effect::ResetSelf => {
                self.reset.push(i);
                if !self.ignore_resets {
                    self.crash_queue.push(i);
                }
            }
            Effect::Kill { node } => {
                self.killed.push(node.0);
                if !self.ignore_resets {
                    self.crash_queue.push(node.0);
                }
            }
            _ => {}
        }
    }

    pub fn jids(&self, fs: &str, at: u32) -> Vec<(u32, Option<u16>)> {
        let st = self.node(at).status();
        st.group(fs).map_or(vec![], |g| g.members.iter().map(|m| (m.node.0, m.jid.map(|j| j.0))).collect())
    }

    pub fn running(&self) -> Vec<u32> {
        (1..=self.total).filter(|n| self.alive(*n)).collect()
    }

    pub fn all_stable(&self) -> bool {
        self.running().iter().all(|m| self.node(*m).status().is_stable())
    }

    pub fn status_dump(&self) -> String {
        self.running().iter().map(|n| format!("{:#?}\n", self.node(*n).status())).collect()
    }
}
