//! A tiny deterministic cluster driver for the core's own tests: a perfect
//! network, auto-answering kernel and fence device. The simulator crate in
//! `tests/` is the real test bench with faults.
#![allow(dead_code)]

use cohort_core::gcs::{Confchg, MemberReason, NodeList, QuorumEvent, Reason, RingEvent};
use cohort_core::node::{Effect, Input, KernelEvent, KernelOp, Request};
use cohort_core::wire::{fs_name, Mode, MAX_MESSAGE};
use cohort_core::{Config, Incarnation, Instant, Member, Node, NodeId};
use std::collections::VecDeque;

pub struct Cluster {
    pub nodes: Vec<Option<Node>>,
    pub ring: u64,
    pub members: Vec<u32>,
    pub bus: VecDeque<(u32, Vec<u8>)>,
    pub kernel: VecDeque<(u32, KernelEvent)>,
    pub fenced: Vec<Member>,
    pub log: Vec<String>,
    pub timers: Vec<(u64, u32, cohort_core::node::TimerToken)>,
    pub now: u64,
    pub fence_ok: bool,
    pub recover_ok: bool,
    /// Called with `true` right before and `false` right after every call
    /// into a node (the allocation counter uses it).
    pub probe: fn(bool),
}

fn list(v: &[u32]) -> NodeList {
    let mut l = NodeList::new();
    for n in v {
        l.push(NodeId(*n)).unwrap();
    }
    l
}

impl Cluster {
    pub fn new(n: u32) -> Cluster {
        let mut c = Cluster {
            nodes: (0..=n).map(|_| None).collect(),
            ring: 10,
            members: vec![],
            bus: VecDeque::new(),
            kernel: VecDeque::new(),
            fenced: vec![],
            log: vec![],
            timers: vec![],
            now: 0,
            fence_ok: true,
            recover_ok: true,
            probe: |_| {},
        };
        for i in 1..=n {
            c.start(i, 1);
        }
        c.pump();
        c
    }

    pub fn node(&self, i: u32) -> &Node {
        self.nodes[i as usize].as_ref().unwrap()
    }

    fn input(&mut self, i: u32, input: Input<'_>) {
        let now = Instant(self.now);
        let probe = self.probe;
        if let Some(n) = self.nodes[i as usize].as_mut() {
            probe(true);
            let r = n.handle(now, input);
            probe(false);
            match r {
                Ok(()) => {}
                Err(e) => self.log.push(format!("node {i}: {e:?}")),
            }
        }
    }

    pub fn start(&mut self, i: u32, inc: u64) {
        self.nodes[i as usize] = Some(Node::new(Config::new(NodeId(i), Incarnation(inc))));
        let ring = self.ring;
        let mem = self.members.clone();
        self.input(i, Input::Ring(RingEvent { ring, members: list(&mem) }));
        self.input(i, Input::Quorum(QuorumEvent { ring, quorate: true, members: list(&mem) }));
        self.members.push(i);
        self.members.sort();
        let mut cc = Confchg { members: list(&self.members), ..Default::default() };
        cc.joined.push(MemberReason { node: NodeId(i), reason: Reason::Join }).unwrap();
        for m in self.members.clone() {
            self.input(m, Input::Confchg(cc.clone()));
        }
    }

    /// A node dies: ring change with NodeDown at the survivors.
    pub fn node_down(&mut self, i: u32) {
        self.pump();
        self.nodes[i as usize] = None;
        self.members.retain(|m| *m != i);
        self.ring += 4;
        let mut cc = Confchg { members: list(&self.members), ..Default::default() };
        cc.left.push(MemberReason { node: NodeId(i), reason: Reason::NodeDown }).unwrap();
        let ring = self.ring;
        for m in self.members.clone() {
            self.input(m, Input::Confchg(cc.clone()));
            self.input(m, Input::Ring(RingEvent { ring, members: list(&self.members) }));
            self.input(m, Input::Quorum(QuorumEvent { ring, quorate: true, members: list(&self.members) }));
        }
    }

    pub fn request(&mut self, i: u32, r: Request) {
        self.input(i, Input::Request(r));
    }

    pub fn mount(&mut self, fs: &str, nodes: &[u32], mode: Mode) {
        for &n in nodes {
            self.request(n, Request::Mount { fs: fs_name(fs).unwrap(), mode, journals: 8 });
        }
    }

    /// Run until nothing moves (timers fire in time order).
    pub fn pump(&mut self) {
        for _round in 0..10_000 {
            let mut moved = false;
            for i in 1..self.nodes.len() as u32 {
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
            }
            if let Some((from, bytes)) = self.bus.pop_front() {
                moved = true;
                for m in self.members.clone() {
                    self.input(m, Input::Deliver { from: NodeId(from), bytes: &bytes });
                }
            }
            if let Some((i, ev)) = self.kernel.pop_front() {
                moved = true;
                self.input(i, Input::Kernel(ev));
            }
            if !moved {
                self.timers.sort();
                if self.timers.is_empty() {
                    return;
                }
                let (at, i, t) = self.timers.remove(0);
                self.now = self.now.max(at);
                self.input(i, Input::Timer(t));
            }
        }
        panic!("no quiescence");
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
                let ok = self.fence_ok;
                self.fence_ok = true;
                if ok {
                    self.fenced.push(target);
                }
                self.input(i, Input::Fenced { target, ok });
            }
            Effect::SetTimer { token, at } => self.timers.push((at.0, i, token)),
            _ => {}
        }
    }

    pub fn jids(&self, fs: &str, at: u32) -> Vec<(u32, Option<u16>)> {
        let st = self.node(at).status();
        st.group(fs).map_or(vec![], |g| g.members.iter().map(|m| (m.node.0, m.jid.map(|j| j.0))).collect())
    }

    pub fn all_stable(&self) -> bool {
        self.members.iter().all(|m| self.node(*m).status().is_stable())
    }
}
