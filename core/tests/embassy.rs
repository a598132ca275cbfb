//! The embassy driver on the host: 3 `Driver`s, each with its own `run`
//! loop, a message-passing router in the same `block_on` (the idea of
//! `tests/common/mod.rs`, but every input goes through the driver's inbox and
//! every effect and message comes out of its channels), a virtual clock, and
//! `critical-section`'s std implementation behind `CriticalSectionRawMutex`.

use core::cell::{Cell, RefCell};
use core::future::{poll_fn, Future};
use core::task::Poll;
use std::collections::VecDeque;

use cohort_core::embassy::{Clock, Driver, Event, Exit, Inbound, TrySendError};
use cohort_core::gcs::{Confchg, MemberReason, NodeList, QuorumEvent, Reason, RingEvent};
use cohort_core::node::{Effect, KernelEvent, KernelOp, Request};
use cohort_core::wire::{fs_name, Mode, MAX_MESSAGE};
use cohort_core::{Config, Incarnation, Instant, NodeId};
use embassy_futures::join::join_array;
use embassy_futures::select::{select, select3, Either, Either3};
use embassy_futures::{block_on, yield_now};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;

use critical_section as _;

struct TestClock {
    now: Cell<u64>,
}

impl Clock for TestClock {
    fn now(&self) -> Instant {
        Instant(self.now.get())
    }

    fn sleep_until(&self, at: Instant) -> impl Future<Output = ()> {
        // `block_on` polls in a busy loop, so no waker is needed.
        poll_fn(move |_| if self.now.get() >= at.0 { Poll::Ready(()) } else { Poll::Pending })
    }
}

fn list(v: &[u32]) -> NodeList {
    v.iter().map(|n| NodeId(*n)).collect()
}

/// The cluster around the drivers: which nodes are up, the per-node backlog
/// of inputs that did not fit the inbox yet, and what happened.
struct Net<'a, const IN: usize, const EV: usize, const TX: usize> {
    d: Vec<&'a Driver<CriticalSectionRawMutex, IN, EV, TX>>,
    clock: &'a TestClock,
    up: RefCell<Vec<bool>>,
    backlog: RefCell<Vec<VecDeque<Inbound>>>,
    log: RefCell<Vec<String>>,
    ring: Cell<u64>,
    /// Fence answers to give, in order (default: success).
    fence_answers: RefCell<VecDeque<bool>>,
    inbox_full_seen: Cell<u64>,
}

impl<'a, const IN: usize, const EV: usize, const TX: usize> Net<'a, IN, EV, TX> {
    fn new(d: Vec<&'a Driver<CriticalSectionRawMutex, IN, EV, TX>>, clock: &'a TestClock) -> Self {
        let n = d.len();
        Net {
            d,
            clock,
            up: RefCell::new(vec![false; n]),
            backlog: RefCell::new((0..n).map(|_| VecDeque::new()).collect()),
            log: RefCell::new(vec![]),
            ring: Cell::new(8),
            fence_answers: RefCell::new(VecDeque::new()),
            inbox_full_seen: Cell::new(0),
        }
    }

    fn drv(&self, i: u32) -> &'a Driver<CriticalSectionRawMutex, IN, EV, TX> {
        self.d[i as usize - 1]
    }

    fn up_nodes(&self) -> Vec<u32> {
        (1..=self.d.len() as u32).filter(|i| self.up.borrow()[*i as usize - 1]).collect()
    }

    fn push(&self, i: u32, input: Inbound) {
        self.backlog.borrow_mut()[i as usize - 1].push_back(input);
    }

    fn log(&self, s: String) {
        self.log.borrow_mut().push(s);
    }

    fn logged(&self, pat: &str) -> Vec<String> {
        self.log.borrow().iter().filter(|l| l.contains(pat)).cloned().collect()
    }

    /// Boot node `i` with incarnation `inc` and let it join.
    fn boot(&self, i: u32, inc: u64) {
        self.boot_with(i, Config::new(NodeId(i), Incarnation(inc)));
    }

    fn boot_with(&self, i: u32, cfg: Config) {
        self.drv(i).start(cfg);
        self.backlog.borrow_mut()[i as usize - 1].clear();
        let others = self.up_nodes();
        self.up.borrow_mut()[i as usize - 1] = true;
        let comp = self.up_nodes();
        let quorate = comp.len() * 2 > self.d.len();
        if !others.is_empty() {
            // The node joins the ring: a ring change without a confchg for us.
            self.ring.set(self.ring.get() + 4);
            for m in &others {
                self.push(*m, Inbound::Ring(RingEvent { ring: self.ring.get(), members: list(&comp) }));
                self.push(*m, Inbound::Quorum(QuorumEvent { ring: self.ring.get(), quorate, members: list(&comp) }));
            }
        }
        self.push(i, Inbound::Ring(RingEvent { ring: self.ring.get(), members: list(&comp) }));
        self.push(i, Inbound::Quorum(QuorumEvent { ring: self.ring.get(), quorate, members: list(&comp) }));
        let mut cc = Confchg { members: list(&comp), ..Default::default() };
        cc.joined.push(MemberReason { node: NodeId(i), reason: Reason::Join }).unwrap();
        for m in &comp {
            self.push(*m, Inbound::Confchg(cc.clone()));
        }
    }

    /// Node `i` loses power: the rest sees NodeDown, a new ring and quorum.
    /// Its driver keeps running, cut off: whatever it emits is discarded.
    fn crash(&self, i: u32) {
        self.up.borrow_mut()[i as usize - 1] = false;
        self.backlog.borrow_mut()[i as usize - 1].clear();
        let comp = self.up_nodes();
        let quorate = comp.len() * 2 > self.d.len();
        self.ring.set(self.ring.get() + 4);
        let mut cc = Confchg { members: list(&comp), ..Default::default() };
        cc.left.push(MemberReason { node: NodeId(i), reason: Reason::NodeDown }).unwrap();
        for m in &comp {
            self.push(*m, Inbound::Confchg(cc.clone()));
            self.push(*m, Inbound::Ring(RingEvent { ring: self.ring.get(), members: list(&comp) }));
            self.push(*m, Inbound::Quorum(QuorumEvent { ring: self.ring.get(), quorate, members: list(&comp) }));
        }
        self.log(format!("-- node {i} crashed"));
    }

    fn mount(&self, fs: &str, nodes: &[u32]) {
        for n in nodes {
            self.push(*n, Inbound::Request(Request::Mount { fs: fs_name(fs).unwrap(), mode: Mode::Rw, journals: 8 }));
        }
    }

    /// Execute one effect the way a host would (auto-answering kernel and
    /// fence device).
    fn on_event(&self, i: u32, ev: Event) {
        self.log(format!("{i}: {ev:?}"));
        let Event::Effect(e) = ev else { return };
        match e {
            Effect::SetTimer { .. } => panic!("the driver keeps timers"),
            Effect::Kernel { fs, op, .. } => match op {
                KernelOp::MountFirst(_) => {
                    self.push(i, Inbound::Kernel(KernelEvent::MountResult { fs: fs.clone(), ok: true }));
                    self.push(i, Inbound::Kernel(KernelEvent::FirstRecoveryDone { fs }));
                }
                KernelOp::Mount(_) | KernelOp::MountSpectator => {
                    self.push(i, Inbound::Kernel(KernelEvent::MountResult { fs, ok: true }))
                }
                KernelOp::RecoverJournal(jid) => {
                    self.push(i, Inbound::Kernel(KernelEvent::RecoveryDone { fs, jid, ok: true }))
                }
                _ => {}
            },
            Effect::Fence { target } => {
                let ok = self.fence_answers.borrow_mut().pop_front().unwrap_or(true);
                self.push(i, Inbound::Fenced { target, ok });
            }
            _ => {}
        }
    }

    /// Move what the drivers produced; true if anything moved.
    fn route(&self) -> bool {
        let mut moved = false;
        for i in 1..=self.d.len() as u32 {
            let d = self.drv(i);
            let up = self.up.borrow()[i as usize - 1];
            while let Ok(ev) = d.try_event() {
                moved = true;
                if up {
                    self.on_event(i, ev);
                }
            }
            while let Ok(frame) = d.try_transmit() {
                moved = true;
                assert!(frame.len() <= MAX_MESSAGE);
                if up {
                    // Agreed order: the router is the only sender, so every
                    // member's FIFO sees the same global order.
                    for m in self.up_nodes() {
                        self.push(m, Inbound::deliver(NodeId(i), &frame).unwrap());
                    }
                }
            }
        }
        for i in 1..=self.d.len() as u32 {
            let mut backlog = self.backlog.borrow_mut();
            let q = &mut backlog[i as usize - 1];
            while let Some(input) = q.pop_front() {
                match self.drv(i).try_send(input) {
                    Ok(()) => moved = true,
                    Err(TrySendError::Full(input)) => {
                        // Back-pressure: the value comes back, nothing lost.
                        self.inbox_full_seen.set(self.inbox_full_seen.get() + 1);
                        q.push_front(input);
                        break;
                    }
                }
            }
        }
        moved
    }

    /// Run until nothing moves, firing timers by advancing the clock.
    async fn settle(&self) {
        let mut idle = 0;
        for _ in 0..1_000_000 {
            let moved = self.route();
            let busy = self.backlog.borrow().iter().any(|q| !q.is_empty()) || self.d.iter().any(|d| d.has_pending());
            if moved || busy {
                idle = 0;
            } else {
                idle += 1;
                if idle > 2 {
                    // Quiet: jump to the earliest timer, if any.
                    let next = self.d.iter().filter_map(|d| d.next_deadline()).min();
                    match next {
                        Some(at) => {
                            self.clock.now.set(self.clock.now.get().max(at.0));
                            idle = 0;
                        }
                        None => return,
                    }
                }
            }
            yield_now().await;
        }
        panic!("no quiescence: {:?}", self.log.borrow());
    }

    fn jids(&self, at: u32, fs: &str) -> Vec<(u32, Option<u16>)> {
        let st = self.drv(at).status().unwrap();
        st.group(fs).map_or(vec![], |g| g.members.iter().map(|m| (m.node.0, m.jid.map(|j| j.0))).collect())
    }

    fn stable(&self) -> bool {
        self.up_nodes().iter().all(|i| self.drv(*i).status().unwrap().is_stable())
    }
}

trait Pending {
    fn has_pending(&self) -> bool;
}

impl<const IN: usize, const EV: usize, const TX: usize> Pending for Driver<CriticalSectionRawMutex, IN, EV, TX> {
    fn has_pending(&self) -> bool {
        !self.inbox().is_empty() || !self.events().is_empty() || !self.transmits().is_empty()
    }
}

/// Run `scenario` next to the three run loops; returns when it finishes.
fn drive<const IN: usize, const EV: usize, const TX: usize>(
    net: &Net<'_, IN, EV, TX>,
    scenario: impl Future<Output = ()>,
) {
    // `run` returns `NoNode` without a node: install one before booting.
    for (i, d) in net.d.iter().enumerate() {
        if d.status().is_none() {
            d.start(Config::new(NodeId(i as u32 + 1), Incarnation(1)));
        }
    }
    let runs: [_; 3] = core::array::from_fn(|i| net.d[i].run(net.clock));
    match block_on(select(join_array(runs), scenario)) {
        Either::First(exits) => panic!("run loops returned early: {exits:?}"),
        Either::Second(()) => {}
    }
}

fn mount_fail_recover<const IN: usize, const EV: usize, const TX: usize>(
    d: [&Driver<CriticalSectionRawMutex, IN, EV, TX>; 3],
) -> Net<'_, IN, EV, TX> {
    // Leaked so the clock outlives the returned net (test only).
    let clock: &'static TestClock = Box::leak(Box::new(TestClock { now: Cell::new(0) }));
    let net = Net::new(d.to_vec(), clock);
    drive(&net, async {
        for i in 1..=3 {
            net.boot(i, 1);
            net.settle().await;
        }
        assert!(net.stable(), "{:?}", net.log.borrow());

        net.mount("fs1", &[1, 2, 3]);
        net.settle().await;
        for n in 1..=3 {
            assert_eq!(net.jids(n, "fs1"), vec![(1, Some(0)), (2, Some(1)), (3, Some(2))], "{:?}", net.log.borrow());
        }
        assert_eq!(net.logged("MountFirst").len(), 1);
        assert!(net.logged("MountFirst")[0].starts_with("1:"));
        assert!(net.stable());

        net.log.borrow_mut().clear();
        net.crash(3);
        net.settle().await;
        let log = net.log.borrow().clone();
        let fence = log.iter().position(|l| l.contains("Fence { target: Member { node: NodeId(3)")).expect("fenced");
        let recover = log.iter().position(|l| l.contains("RecoverJournal(Jid(2))")).expect("recovered");
        let unblock = log.iter().rposition(|l| l.contains("Unblock")).expect("unblocked");
        assert!(fence < recover && recover < unblock, "{log:#?}");
        assert!(net.stable(), "{log:#?}");
        assert_eq!(net.jids(1, "fs1"), vec![(1, Some(0)), (2, Some(1))]);

        // Node 3 comes back with a new incarnation and gets a journal again.
        net.boot(3, 2);
        net.settle().await;
        net.mount("fs1", &[3]);
        net.settle().await;
        for n in 1..=3 {
            assert_eq!(net.jids(n, "fs1"), vec![(1, Some(0)), (2, Some(1)), (3, Some(2))], "{:?}", net.log.borrow());
        }
        assert!(net.stable());
    });
    net
}

type Roomy = Driver<CriticalSectionRawMutex, 8, 32, 8>;
type Tight = Driver<CriticalSectionRawMutex, 1, 1, 1>;

#[test]
fn three_nodes_mount_fail_fence_recover_rejoin() {
    let d: Vec<Box<Roomy>> = (0..3).map(|_| Box::new(Roomy::new())).collect();
    let net = mount_fail_recover([&*d[0], &*d[1], &*d[2]]);
    for d in &d {
        let s = d.stats();
        assert_eq!(s.timers_lost, 0);
        assert!(s.inputs > 0 && s.effects > 0 && s.transmits > 0, "{s:?}");
    }
    assert!(net.logged("Rejected").is_empty(), "{:?}", net.logged("Rejected"));
}

#[test]
fn one_slot_channels_slow_down_but_lose_nothing() {
    let d: Vec<Box<Tight>> = (0..3).map(|_| Box::new(Tight::new())).collect();
    let net = mount_fail_recover([&*d[0], &*d[1], &*d[2]]);
    assert!(net.inbox_full_seen.get() > 0, "the inbox pushed back");
}

#[test]
fn failed_fencing_is_retried_by_the_next_actor_after_the_timer() {
    let d: Vec<Box<Roomy>> = (0..3).map(|_| Box::new(Roomy::new())).collect();
    let clock = TestClock { now: Cell::new(0) };
    let net = Net::new(vec![&*d[0], &*d[1], &*d[2]], &clock);
    drive(&net, async {
        for i in 1..=3 {
            net.boot(i, 1);
        }
        net.settle().await;
        net.mount("fs1", &[1, 2, 3]);
        net.settle().await;
        net.log.borrow_mut().clear();
        let t0 = clock.now.get();
        net.fence_answers.borrow_mut().push_back(false);
        net.crash(3);
        net.settle().await;
        let fences = net.logged("Effect(Fence {");
        assert_eq!(fences.len(), 2, "{:?}", net.log.borrow());
        assert!(fences[0].starts_with("1:") && fences[1].starts_with("2:"), "{fences:?}");
        // The retry waited for the backoff timer through the Clock.
        assert!(clock.now.get() >= t0 + 1000, "now {}", clock.now.get());
        assert!(!net.logged("RecoverJournal(Jid(2))").is_empty());
        assert!(net.stable());
    });
    assert!(d[1].stats().timers_fired >= 1, "{:?}", d[1].stats());
}

#[test]
fn rejected_requests_come_back_as_events() {
    let d: Vec<Box<Roomy>> = (0..3).map(|_| Box::new(Roomy::new())).collect();
    let clock = TestClock { now: Cell::new(0) };
    let net = Net::new(vec![&*d[0], &*d[1], &*d[2]], &clock);
    drive(&net, async {
        for i in 1..=3 {
            net.boot(i, 1);
        }
        net.settle().await;
        net.push(1, Inbound::Request(Request::Unmount { fs: fs_name("nope").unwrap() }));
        net.settle().await;
    });
    let rejected = net.logged("Rejected");
    assert_eq!(rejected.len(), 1, "{:?}", net.log.borrow());
    assert!(rejected[0].contains("input: Request") && rejected[0].contains("NotMounted"), "{rejected:?}");
}

#[test]
fn try_send_hands_the_value_back_when_full() {
    let d = Box::new(Driver::<CriticalSectionRawMutex, 1, 1, 1>::new());
    let a = Inbound::deliver(NodeId(2), b"first").unwrap();
    let b = Inbound::deliver(NodeId(2), b"second").unwrap();
    d.try_send(a).unwrap();
    match d.try_send(b.clone()) {
        Err(TrySendError::Full(back)) => assert_eq!(back, b),
        Ok(()) => panic!("a one-slot inbox took two inputs"),
    }
    // Without a node the run loop says so instead of spinning.
    let clock = TestClock { now: Cell::new(0) };
    assert_eq!(block_on(d.run(&clock)), Exit::NoNode);
}

#[test]
fn a_stopped_node_ends_the_run_loop() {
    // An incompatible protocol range stops the node; `run` returns `Stopped`
    // after forwarding the `Incompatible` effect.
    let d1 = Box::new(Roomy::new());
    let d2 = Box::new(Roomy::new());
    let clock = TestClock { now: Cell::new(0) };
    d1.start(Config::new(NodeId(1), Incarnation(1)));
    d2.start(Config::new(NodeId(2), Incarnation(1)));
    let net = Net::new(vec![&*d1, &*d2], &clock);
    let scenario = async {
        net.boot(1, 1);
        net.settle().await;
        let mut cfg2 = Config::new(NodeId(2), Incarnation(1));
        cfg2.proto_min = 7;
        cfg2.proto_max = 7;
        net.boot_with(2, cfg2);
        loop {
            net.route();
            yield_now().await;
        }
    };
    let exit = match block_on(select3(d1.run(&clock), d2.run(&clock), scenario)) {
        Either3::First(e) | Either3::Second(e) => e,
        Either3::Third(()) => unreachable!(),
    };
    net.route();
    assert_eq!(exit, Exit::Stopped);
    assert!(d2.with_node(|n| n.is_stopped()).unwrap());
    assert!(!net.logged("Incompatible").is_empty(), "{:?}", net.log.borrow());
}
