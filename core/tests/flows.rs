//! Small deterministic end-to-end flows through real `Node`s on a perfect
//! network (the simulator in `tests/` does the faults).

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
        if let Some(n) = self.nodes[i as usize].as_mut() {
            match n.handle(now, input) {
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
                while let Some(n) = self.nodes[i as usize].as_mut() {
                    if let Some(e) = n.poll_effect() {
                        moved = true;
                        self.effect(i, e);
                        continue;
                    }
                    if let Some(len) = n.poll_transmit(&mut buf) {
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

#[test]
fn three_nodes_mount_get_jids_in_node_order() {
    let mut c = Cluster::new(3);
    assert!(c.all_stable(), "{:#?}\n{:?}", c.node(1).status(), c.log);
    c.mount("fs1", &[1, 2, 3], Mode::Rw);
    c.pump();
    for n in 1..=3 {
        assert_eq!(c.jids("fs1", n), vec![(1, Some(0)), (2, Some(1)), (3, Some(2))], "node {n}: {:?}", c.log);
    }
    assert!(c.all_stable(), "{:#?}", c.node(2).status());
    // node 1 was first mounter
    assert!(c.log.iter().any(|l| l.starts_with("1: Kernel") && l.contains("MountFirst")), "{:?}", c.log);
    assert!(!c.log.iter().any(|l| !l.starts_with("1:") && l.contains("MountFirst")));
}

#[test]
fn failed_node_is_fenced_then_its_journal_recovered() {
    let mut c = Cluster::new(3);
    c.mount("fs1", &[1, 2, 3], Mode::Rw);
    c.pump();
    c.log.clear();
    c.node_down(3);
    c.pump();
    assert_eq!(c.fenced.iter().map(|m| m.node.0).collect::<Vec<_>>(), vec![3], "{:?}", c.log);
    let fence_at = c.log.iter().position(|l| l.contains("Fence {")).unwrap();
    let recover_at = c.log.iter().position(|l| l.contains("RecoverJournal(Jid(2))")).expect("recovered");
    assert!(fence_at < recover_at);
    assert!(c.log.iter().any(|l| l.contains("Unblock")));
    assert!(c.all_stable(), "{:#?}\n{:?}", c.node(1).status(), c.log);
    assert_eq!(c.jids("fs1", 1), vec![(1, Some(0)), (2, Some(1))]);
}

#[test]
fn recovery_failure_is_retried_by_another_member() {
    let mut c = Cluster::new(3);
    c.mount("fs1", &[1, 2, 3], Mode::Rw);
    c.pump();
    c.log.clear();
    c.recover_ok = false;
    c.node_down(3);
    c.pump();
    let recs: Vec<&String> = c.log.iter().filter(|l| l.contains("RecoverJournal")).collect();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_ne!(recs[0].split(':').next(), recs[1].split(':').next(), "retried by another node");
    assert!(c.all_stable());
}

#[test]
fn fence_failure_is_retried_by_the_next_actor() {
    let mut c = Cluster::new(3);
    c.mount("fs1", &[1, 2, 3], Mode::Rw);
    c.pump();
    c.log.clear();
    c.fence_ok = false;
    c.node_down(3);
    c.pump();
    let f: Vec<&String> = c.log.iter().filter(|l| l.contains("Fence {")).collect();
    assert_eq!(f.len(), 2, "{:?}", c.log);
    assert!(f[0].starts_with("1:") && f[1].starts_with("2:"), "{f:?}");
    assert!(c.all_stable());
}

#[test]
fn restart_with_new_incarnation_rejoins_and_gets_a_journal() {
    let mut c = Cluster::new(3);
    c.mount("fs1", &[1, 2, 3], Mode::Rw);
    c.pump();
    c.node_down(3);
    c.pump();
    c.start(3, 2);
    c.pump();
    c.mount("fs1", &[3], Mode::Rw);
    c.pump();
    assert!(c.all_stable(), "{:#?}\n{:?}", c.node(3).status(), c.log);
    assert_eq!(c.jids("fs1", 3), vec![(1, Some(0)), (2, Some(1)), (3, Some(2))]);
}

#[test]
fn unmount_frees_the_journal_without_recovery() {
    let mut c = Cluster::new(3);
    c.mount("fs1", &[1, 2, 3], Mode::Rw);
    c.pump();
    c.log.clear();
    c.request(2, Request::Unmount { fs: fs_name("fs1").unwrap() });
    c.pump();
    assert!(!c.log.iter().any(|l| l.contains("RecoverJournal") || l.contains("Fence")), "{:?}", c.log);
    assert_eq!(c.jids("fs1", 1), vec![(1, Some(0)), (3, Some(2))]);
    assert!(c.all_stable());
}
