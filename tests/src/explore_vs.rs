//! Exhaustive small-scope explorer over the real `Vs` transports of the udp
//! model's members (`cohort-sim check --model udp`): the view-change
//! protocol under loss, duplication and reordering of its datagrams.
//!
//! The members are real `cohort_vs::Vs` state machines (no re-model,
//! no daemon above them: the explorer is the application and polls every
//! event right away). The network and the clock are enumerated choices:
//!
//! * **Start** (fixed): `nodes` members boot at t=0 on a clean network
//!   (every datagram delivered at once, in order) and run until all of them
//!   are in one view of everybody. Timings: heartbeat 10 ms, failure
//!   timeout 20 ms (the smallest ratio `Vs` takes), so a failure is
//!   detected within a few timer firings.
//! * **The network** is a multiset of in-flight datagrams, one entry per
//!   (datagram, receiver). A datagram that carries a view-change or ordering
//!   frame (PROPOSE, FLUSH_OK, SYNC, SYNC_DONE, INSTALL, DATA, SEQ, NAK,
//!   RESEND) is *enumerated*: at every state each distinct in-flight one is a
//!   choice to **deliver** (any of them, so every reordering), to **drop**
//!   (loss, at most `loss` in a run) or to **duplicate** (deliver a copy and
//!   keep it in flight, at most `dup`). The rest (heartbeats, acks, leaves)
//!   are *background*: delivered at once, in order, to every connected live
//!   receiver (with `--all-datagrams` they are enumerated too).
//! * **Time** only advances by the **tick** choice: time moves to the
//!   earliest `next_timeout` of the live members (not before now) and every
//!   member due by then handles its timeout, in node order. A second tick
//!   at the same instant moves to the next millisecond. Timers are
//!   punctual; datagrams may stay in flight across ticks, but a tick taken
//!   while an enumerated datagram could be delivered counts against `late`.
//! * **Messages**: `send N` (member N broadcasts a fresh small message), at
//!   most `msgs` in a run, so view changes have message streams to flush.
//! * **Faults** (the view-change triggers), at most `faults`: crash of a live
//!   member (its process stops; datagrams it already sent stay in flight,
//!   those to it are gone), partition of a healed network into any shape
//!   (in-flight datagrams across a cut wait; background ones are lost).
//!   Restart of a crashed member (a new incarnation, booting into its
//!   singleton view) counts as a fault too; heal is free. The *trigger
//!   phase*: nothing moves on the network (no delivery, drop, dup or tick)
//!   before the first fault; sends may come first. Later faults and sends
//!   may strike at any point (unless `late_faults` / `late_sends` is off).
//!
//! After every transition the virtual-synchrony checker of the simulator
//! (`invariants/virtual_synchrony.rs`: view ids increase per process, total
//! order, virtual synchrony, delivery only from members and of messages
//! really sent) runs on the events, plus: a process is in every view it
//! installs, no process delivers a message twice in a view, a view's quorum
//! event matches its member count, and no genuine datagram is refused (a
//! replayed duplicate, a dead incarnation's datagram are fine).
//!
//! **Liveness at leaves** (states at the depth bound): faults stop, the
//! network heals, every in-flight datagram is delivered in send order, and
//! the clock runs (clean network) for at most `100 * fail_timeout`; the
//! live members must then be in one view of exactly them, stable for
//! `4 * fail_timeout`.
//!
//! States are deduplicated by a hash of: the time, each member's
//! incarnation and the hash of its whole input history (`Vs` is sans-IO and
//! deterministic: equal configuration and inputs give equal states), the
//! network multiset, the partition and the budgets used. `Vs` is cloned
//! (cohort-vs's test-only `explore` feature) to branch.

use crate::explore::{fnv, FNV_OFFSET};
use crate::explore::{set_partitions, Seen, Visit};
use crate::invariants::{robustness, virtual_synchrony};
use crate::world::Inst;
use cohort_core::gcs::{NodeList, QuorumMode};
use cohort_core::ids::{Incarnation, Instant, NodeId};
use cohort_vs::craft::{self, kinds};
use cohort_vs::{Dest, Vs, VsConfig, VsEvent, VsRecvError, MAX_DATAGRAM, MAX_MESSAGE};
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Instant as WallClock;

const KEY: [u8; 32] = [0x5a; 32];
pub const HB_MS: u64 = 10;
pub const FAIL_MS: u64 = 20;

/// Frames whose datagrams are enumerated (the rest is background).
const ENUMERATED: u16 = kinds::PROPOSE
    | kinds::FLUSH_OK
    | kinds::SYNC
    | kinds::SYNC_DONE
    | kinds::INSTALL
    | kinds::DATA
    | kinds::SEQ
    | kinds::NAK
    | kinds::RESEND;

#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: u32,
    pub faults: u32,
    pub depth: u32,
    pub loss: u32,
    pub dup: u32,
    pub msgs: u32,
    /// Ticks taken while an enumerated datagram could be delivered (a
    /// datagram overtaken by a timer).
    pub late: u32,
    /// Stop after this many distinct states (0 = no limit).
    pub max_states: u64,
    pub max_cex: usize,
    pub liveness: bool,
    /// Enumerate heartbeat/ack datagrams too.
    pub all_datagrams: bool,
    /// Offer restarts of crashed members.
    pub restart: bool,
    /// Faults after the first may also strike once the network moves
    /// (else all faults happen in the trigger phase).
    pub late_faults: bool,
    /// Messages may also be sent once the network moves.
    pub late_sends: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            nodes: 3,
            faults: 1,
            depth: 8,
            loss: 1,
            dup: 1,
            msgs: 1,
            late: 3,
            max_states: 0,
            max_cex: 1,
            liveness: true,
            all_datagrams: false,
            restart: true,
            late_faults: true,
            late_sends: true,
        }
    }
}

/// A datagram in flight: identified by (from, to, content hash).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dg {
    pub from: u32,
    pub to: u32,
    pub hash: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    Deliver(Dg),
    Drop(Dg),
    Dup(Dg),
    Tick,
    Send(u32),
    Crash(u32),
    Restart(u32),
    Partition(Vec<Vec<u32>>),
    Heal,
}

#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
struct Budget {
    faults: u32,
    loss: u32,
    dup: u32,
    msgs: u32,
    late: u32,
    /// A network or timer step was taken (the trigger phase is over).
    started: bool,
}

#[derive(Clone)]
struct Pkt {
    dg: Dg,
    seq: u64,
    kinds: u16,
    bytes: Rc<[u8]>,
}

#[derive(Clone)]
struct Member {
    /// Shared between states until one of them changes it.
    vs: Option<Rc<Vs>>,
    inc: u64,
    /// Hash of this process's whole input history.
    hist: u64,
    /// Sim ring of its current view, and what it delivered there.
    ring: Option<usize>,
    seen: BTreeSet<(u32, u64)>,
}

#[derive(Clone)]
struct Ring {
    id: u64,
    members: Vec<u32>,
    reporters: Vec<Inst>,
}

#[derive(Clone)]
struct W {
    n: u32,
    now: u64,
    ticked_at: Option<u64>,
    m: Vec<Member>,
    net: Vec<Pkt>,
    /// Block of each member (all equal: healed).
    cut: Vec<u32>,
    seq: u64,
    b: Budget,
    vsync: virtual_synchrony::State,
    rings: Vec<Ring>,
    violation: Option<String>,
    all_datagrams: bool,
}

fn node_list(n: u32) -> NodeList {
    (1..=n).map(NodeId).collect()
}

fn config(id: u32, inc: u64, n: u32) -> VsConfig {
    let mut c = VsConfig::new(NodeId(id), Incarnation(inc), node_list(n), KEY);
    c.heartbeat_ms = HB_MS;
    c.fail_timeout_ms = FAIL_MS;
    c.quorum = QuorumMode::Majority;
    c
}

fn kind_names(k: u16) -> String {
    let v: Vec<&str> = (0..kinds::NAMES.len()).filter(|i| k & (1 << i) != 0).map(|i| kinds::NAMES[i]).collect();
    v.join(",")
}

impl W {
    fn new(n: u32, all_datagrams: bool) -> W {
        let m = (1..=n)
            .map(|id| Member {
                vs: Some(Rc::new(Vs::new(config(id, 1, n)).expect("valid config"))),
                inc: 1,
                hist: fnv(FNV_OFFSET, &1u64.to_le_bytes()),
                ring: None,
                seen: BTreeSet::new(),
            })
            .collect();
        let mut w = W {
            n,
            now: 0,
            ticked_at: None,
            m,
            net: Vec::new(),
            cut: vec![0; n as usize],
            seq: 0,
            b: Budget::default(),
            vsync: virtual_synchrony::State::default(),
            rings: Vec::new(),
            violation: None,
            all_datagrams,
        };
        for id in 1..=n {
            w.pump(id);
        }
        w.drain_background();
        w
    }

    fn alive(&self, id: u32) -> bool {
        self.m[id as usize - 1].vs.is_some()
    }

    fn connected(&self, a: u32, b: u32) -> bool {
        self.cut[a as usize - 1] == self.cut[b as usize - 1]
    }

    fn healed(&self) -> bool {
        self.cut.iter().all(|c| *c == self.cut[0])
    }

    fn violate(&mut self, msg: String) {
        if self.violation.is_none() {
            self.violation = Some(msg);
        }
    }

    fn input(&mut self, id: u32, tag: u8, bytes: &[u8]) {
        let now = self.now;
        let mem = &mut self.m[id as usize - 1];
        let mut h = fnv(mem.hist, &[tag]);
        h = fnv(h, &now.to_le_bytes());
        mem.hist = fnv(h, bytes);
    }

    /// Everything the member has to say, then its events.
    fn pump(&mut self, id: u32) {
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut payload = vec![0u8; MAX_MESSAGE];
        let i = id as usize - 1;
        loop {
            let Some(vs) = self.m[i].vs.as_mut().map(Rc::make_mut) else { return };
            let t = match robustness::guarded(|| vs.poll_transmit(&mut buf)) {
                Ok(t) => t,
                Err(p) => return self.violate(format!("node {id} panicked in poll_transmit: {p}")),
            };
            let Some(t) = t else { break };
            let bytes: Rc<[u8]> = Rc::from(&buf[..t.len]);
            let k = craft::open_kinds(&KEY, &bytes).unwrap_or(0);
            let hash = fnv(FNV_OFFSET, &bytes);
            for to in 1..=self.n {
                let addressed = match t.dest {
                    Dest::All => to != id,
                    Dest::Node(d) => d.0 == to,
                };
                if !addressed || !self.alive(to) {
                    continue;
                }
                let enumerated = self.all_datagrams || k & ENUMERATED != 0;
                if !enumerated && !self.connected(id, to) {
                    continue;
                }
                self.seq += 1;
                let dg = Dg { from: id, to, hash };
                // Background ones carry no kinds bit 15: see drain_background.
                let kinds = if enumerated { k } else { k | 1 << 15 };
                self.net.push(Pkt { dg, seq: self.seq, kinds, bytes: bytes.clone() });
            }
        }
        loop {
            let Some(vs) = self.m[i].vs.as_mut().map(Rc::make_mut) else { return };
            let ev = match robustness::guarded(|| vs.poll_event(&mut payload)) {
                Ok(e) => e,
                Err(p) => return self.violate(format!("node {id} panicked in poll_event: {p}")),
            };
            let Some(ev) = ev else { break };
            self.on_event(id, ev, &payload);
        }
    }

    fn on_event(&mut self, id: u32, ev: VsEvent, payload: &[u8]) {
        let i = id as usize - 1;
        let inst: Inst = (id, self.m[i].inc);
        match ev {
            VsEvent::Ring(r) => {
                let members: Vec<u32> = r.members.iter().map(|x| x.0).collect();
                if !members.contains(&id) {
                    return self
                        .violate(format!("node {id} installs view {:#x} of {members:?} without itself", r.ring));
                }
                let ri = match self.rings.iter().rposition(|g| {
                    g.id == r.ring && g.members == members && !g.reporters.iter().any(|x| x.0 == id && x.1 != inst.1)
                }) {
                    Some(ri) => ri,
                    None => {
                        self.rings.push(Ring { id: r.ring, members, reporters: Vec::new() });
                        self.rings.len() - 1
                    }
                };
                self.rings[ri].reporters.push(inst);
                if let Err(e) = virtual_synchrony::on_ring(&mut self.vsync, inst, ri, r.ring) {
                    return self.violate(format!("node {id} installs view {:#x}: {e}", r.ring));
                }
                self.m[i].ring = Some(ri);
                self.m[i].seen.clear();
            }
            VsEvent::Quorum(q) => {
                let want = QuorumMode::Majority.is_quorate(q.members.len(), self.n as usize);
                let cur = self.m[i].ring.map(|r| self.rings[r].id);
                if q.quorate != want || cur != Some(q.ring) {
                    self.violate(format!(
                        "node {id}: quorum event (view {:#x}, quorate {}) does not match its view {cur:?} of {} members",
                        q.ring,
                        q.quorate,
                        q.members.len()
                    ));
                }
            }
            VsEvent::Confchg(_) => {}
            VsEvent::Deliver { from, len } => {
                let h = fnv(FNV_OFFSET, &payload[..len]);
                let Some(ri) = self.m[i].ring else {
                    return self.violate(format!("node {id} delivers before any view"));
                };
                if !self.m[i].seen.insert((from.0, h)) {
                    let v = self.rings[ri].id;
                    return self.violate(format!("view {v:#x}: node {id} delivers a message of node {} twice", from.0));
                }
                let members = self.rings[ri].members.clone();
                if let Err(e) = virtual_synchrony::on_deliver(&mut self.vsync, inst, ri, &members, from.0, h) {
                    let v = self.rings[ri].id;
                    self.violate(format!("view {v:#x}: {e}"));
                }
            }
        }
    }

    fn receive(&mut self, p: &Pkt) {
        let id = p.dg.to;
        if !self.alive(id) {
            return;
        }
        self.input(id, 1, &p.bytes);
        let now = Instant(self.now);
        let vs = Rc::make_mut(self.m[id as usize - 1].vs.as_mut().expect("alive"));
        let from = NodeId(p.dg.from);
        match robustness::guarded(|| vs.handle_datagram(now, Some(from), &p.bytes)) {
            Err(e) => return self.violate(format!("node {id} panicked in handle_datagram: {e}")),
            Ok(Ok(()) | Err(VsRecvError::Replayed | VsRecvError::StaleIncarnation | VsRecvError::Closed)) => {}
            Ok(Err(e)) => {
                return self.violate(format!("node {id} rejected a genuine datagram of node {}: {e:?}", p.dg.from))
            }
        }
        self.pump(id);
    }

    /// Deliver background datagrams at once, in order.
    fn drain_background(&mut self) {
        let mut rounds = 0u32;
        while let Some(k) = self.net.iter().position(|p| p.kinds & 1 << 15 != 0) {
            let p = self.net.remove(k);
            if self.connected(p.dg.from, p.dg.to) {
                self.receive(&p);
            }
            rounds += 1;
            if rounds > 100_000 {
                self.violate("100000 background datagrams at one instant".into());
                return;
            }
        }
    }

    fn deadline(&self) -> Option<u64> {
        let d = self.m.iter().filter_map(|m| m.vs.as_ref()).filter_map(|v| v.next_timeout()).map(|t| t.0).min()?;
        let mut t = d.max(self.now);
        if t == self.now && self.ticked_at == Some(self.now) {
            t += 1;
        }
        Some(t)
    }

    fn tick(&mut self) {
        let Some(t) = self.deadline() else { return };
        self.now = t;
        self.ticked_at = Some(t);
        for id in 1..=self.n {
            let due = self.m[id as usize - 1].vs.as_ref().and_then(|v| v.next_timeout()).is_some_and(|x| x.0 <= t);
            if !due {
                continue;
            }
            self.input(id, 2, &[]);
            let vs = Rc::make_mut(self.m[id as usize - 1].vs.as_mut().expect("due"));
            if let Err(e) = robustness::guarded(|| vs.handle_timeout(Instant(t))) {
                return self.violate(format!("node {id} panicked in handle_timeout: {e}"));
            }
            self.pump(id);
            self.drain_background();
        }
    }

    /// Some enumerated datagram could be delivered now.
    fn deliverable(&self) -> bool {
        self.net.iter().any(|p| self.connected(p.dg.from, p.dg.to) && self.alive(p.dg.to))
    }

    fn find(&self, dg: &Dg) -> Option<usize> {
        self.net.iter().position(|p| p.dg == *dg)
    }

    fn choices(&self, o: &Options) -> Vec<Choice> {
        let mut v = Vec::new();
        // The trigger phase: sends, then the first fault, before anything
        // moves on the network (see the module docs).
        let network = self.b.started || self.b.faults > 0 || o.faults == 0;
        let faults = self.b.faults < o.faults && (!self.b.started || o.late_faults);
        let sends = self.b.msgs < o.msgs && (!self.b.started || o.late_sends);
        let mut dgs: Vec<Dg> = self.net.iter().map(|p| p.dg).collect();
        dgs.sort();
        dgs.dedup();
        for dg in dgs.into_iter().filter(|_| network) {
            let deliverable = self.connected(dg.from, dg.to) && self.alive(dg.to);
            if deliverable {
                v.push(Choice::Deliver(dg));
            }
            if self.b.loss < o.loss {
                v.push(Choice::Drop(dg));
            }
            if deliverable && self.b.dup < o.dup {
                v.push(Choice::Dup(dg));
            }
        }
        if network && self.deadline().is_some() && (!self.deliverable() || self.b.late < o.late) {
            v.push(Choice::Tick);
        }
        for id in 1..=self.n {
            if self.alive(id) {
                if sends {
                    v.push(Choice::Send(id));
                }
                if faults {
                    v.push(Choice::Crash(id));
                }
            } else if o.restart && faults {
                v.push(Choice::Restart(id));
            }
        }
        if !self.healed() {
            v.push(Choice::Heal);
        } else if faults {
            let ids: Vec<u32> = (1..=self.n).collect();
            for p in set_partitions(&ids) {
                if p.len() >= 2 {
                    v.push(Choice::Partition(p));
                }
            }
        }
        v
    }

    fn describe(&self, c: &Choice) -> String {
        let dg = match c {
            Choice::Deliver(d) | Choice::Drop(d) | Choice::Dup(d) => d,
            Choice::Tick => return format!("t={} -> {:?}", self.now, self.deadline()),
            _ => return String::new(),
        };
        match self.find(dg) {
            Some(k) => {
                let p = &self.net[k];
                format!("{}->{} [{}] {} B at t={}", dg.from, dg.to, kind_names(p.kinds), p.bytes.len(), self.now)
            }
            None => String::new(),
        }
    }

    fn apply(&mut self, c: &Choice) {
        if matches!(c, Choice::Deliver(_) | Choice::Drop(_) | Choice::Dup(_) | Choice::Tick) {
            self.b.started = true;
        }
        match c {
            Choice::Deliver(dg) => {
                if let Some(k) = self.find(dg) {
                    let p = self.net.remove(k);
                    self.receive(&p);
                }
            }
            Choice::Drop(dg) => {
                if let Some(k) = self.find(dg) {
                    self.net.remove(k);
                }
                self.b.loss += 1;
            }
            Choice::Dup(dg) => {
                if let Some(k) = self.find(dg) {
                    let p = self.net[k].clone();
                    self.receive(&p);
                }
                self.b.dup += 1;
            }
            Choice::Tick => {
                if self.deliverable() {
                    self.b.late += 1;
                }
                self.tick();
            }
            Choice::Send(id) => {
                let k = self.b.msgs;
                self.b.msgs += 1;
                let payload = format!("message {k} from node {id}");
                virtual_synchrony::on_send(&mut self.vsync, *id, fnv(FNV_OFFSET, payload.as_bytes()));
                self.input(*id, 3, payload.as_bytes());
                let now = Instant(self.now);
                let vs = Rc::make_mut(self.m[*id as usize - 1].vs.as_mut().expect("alive"));
                match robustness::guarded(|| vs.broadcast_message(now, payload.as_bytes())) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return self.violate(format!("node {id}: broadcast refused: {e:?}")),
                    Err(e) => return self.violate(format!("node {id} panicked in broadcast: {e}")),
                }
                self.pump(*id);
            }
            Choice::Crash(id) => {
                self.b.faults += 1;
                let m = &mut self.m[*id as usize - 1];
                m.vs = None;
                m.ring = None;
                m.seen.clear();
                self.net.retain(|p| p.dg.to != *id);
                virtual_synchrony::forget_node(&mut self.vsync, *id);
            }
            Choice::Restart(id) => {
                self.b.faults += 1;
                let n = self.n;
                let m = &mut self.m[*id as usize - 1];
                m.inc += 1;
                m.vs = Some(Rc::new(Vs::new(config(*id, m.inc, n)).expect("valid config")));
                m.hist = fnv(FNV_OFFSET, &m.inc.to_le_bytes());
                self.input(*id, 4, &[]);
                self.pump(*id);
            }
            Choice::Partition(p) => {
                self.b.faults += 1;
                for (bi, block) in p.iter().enumerate() {
                    for id in block {
                        self.cut[*id as usize - 1] = bi as u32;
                    }
                }
            }
            Choice::Heal => self.cut = vec![0; self.n as usize],
        }
        self.drain_background();
    }

    fn key(&self) -> u64 {
        let mut h = fnv(FNV_OFFSET, &self.now.to_le_bytes());
        h = fnv(h, &self.ticked_at.map_or(u64::MAX, |t| t).to_le_bytes());
        for m in &self.m {
            h = fnv(h, &[u8::from(m.vs.is_some())]);
            h = fnv(h, &m.inc.to_le_bytes());
            h = fnv(h, &m.hist.to_le_bytes());
        }
        let mut dgs: Vec<Dg> = self.net.iter().map(|p| p.dg).collect();
        dgs.sort();
        for d in dgs {
            h = fnv(h, &d.from.to_le_bytes());
            h = fnv(h, &d.to.to_le_bytes());
            h = fnv(h, &d.hash.to_le_bytes());
        }
        for c in &self.cut {
            h = fnv(h, &c.to_le_bytes());
        }
        fnv(h, format!("{:?}", self.b).as_bytes())
    }

    /// Clean network: deliver everything in flight at once, in send order,
    /// until nothing is.
    fn flush_net(&mut self) -> Result<(), ()> {
        for _ in 0..10_000 {
            if self.net.is_empty() {
                return Ok(());
            }
            let mut net = std::mem::take(&mut self.net);
            net.sort_by_key(|p| p.seq);
            for p in net {
                self.receive(&p);
            }
        }
        Err(())
    }

    /// Live members in one view of exactly them.
    fn agreed(&self) -> Result<u64, String> {
        let live: Vec<u32> = (1..=self.n).filter(|i| self.alive(*i)).collect();
        let mut id = None;
        for &i in &live {
            let v = self.m[i as usize - 1].vs.as_ref().expect("alive").view();
            let members: Vec<u32> = v.members.iter().map(|x| x.0).collect();
            if members != live {
                return Err(format!("node {i} is in view {:#x} of {members:?}, the live members are {live:?}", v.id));
            }
            if id.is_some_and(|x| x != v.id) {
                return Err(format!("live members are in different views ({:#x} and {:#x})", id.unwrap_or(0), v.id));
            }
            id = Some(v.id);
        }
        Ok(id.unwrap_or(0))
    }

    /// The liveness extension of a leaf (see the module docs): `Ok(ms)`
    /// after how many simulated ms the live members were in one view of
    /// them (stable since); `Err` says what did not converge (or what
    /// safety check failed on the way).
    fn liveness(mut self) -> Result<u64, String> {
        let t0 = self.now;
        self.cut = vec![0; self.n as usize];
        self.net.sort_by_key(|p| p.seq);
        for p in std::mem::take(&mut self.net) {
            self.receive(&p);
            self.drain_background();
        }
        self.all_datagrams = false;
        let end = self.now + 100 * FAIL_MS;
        let mut since: Option<(u64, u64)> = None;
        let mut spins = 0u32;
        while self.now < end {
            spins += 1;
            if spins > 1_000_000 {
                return Err("liveness run: no progress".into());
            }
            if let Some(v) = self.violation.take() {
                return Err(format!("during the liveness run: {v}"));
            }
            if self.flush_net().is_err() {
                return Err("liveness run: datagrams without end at one instant".into());
            }
            match (self.agreed(), since) {
                (Ok(v), Some((sv, t))) if v == sv => {
                    if self.now >= t + 4 * FAIL_MS {
                        return Ok(t - t0);
                    }
                }
                (Ok(v), _) => since = Some((v, self.now)),
                (Err(_), _) => since = None,
            }
            self.tick();
        }
        if let Some(v) = self.violation.take() {
            return Err(format!("during the liveness run: {v}"));
        }
        Err(format!(
            "liveness: no stable view of the live members {} ms after faults stopped: {}",
            100 * FAIL_MS,
            self.agreed().err().unwrap_or_else(|| "view still changing".into())
        ))
    }
}

#[derive(Clone, Debug)]
pub struct Counterexample {
    pub violation: String,
    /// (choice, description) from the start state.
    pub steps: Vec<(Choice, String)>,
    pub nodes: u32,
    pub start_t: u64,
}

impl Counterexample {
    pub fn render(&self) -> String {
        let mut s = format!(
            "counterexample: {}\nsteps from the start state ({} members in one view at t={} ms):\n",
            self.violation, self.nodes, self.start_t
        );
        for (i, (c, d)) in self.steps.iter().enumerate() {
            s += &format!("  {:3}. {c:?} {d}\n", i + 1);
        }
        s
    }
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub explored: u64,
    pub distinct: u64,
    pub max_depth: u32,
    pub leaves: u64,
    /// Longest time (simulated ms) a leaf's liveness run took to a stable
    /// view of the live members.
    pub settle_ms_max: u64,
    /// View changes completed (a member installed a view) in explored states.
    pub views: u64,
    pub truncated: bool,
    pub secs: f64,
    pub start_t: u64,
    pub counterexamples: Vec<Counterexample>,
}

/// The fixed start state: every member booted and in one view of all.
fn start(o: &Options) -> W {
    let mut w = W::new(o.nodes, false);
    while w.now < 10_000 && w.violation.is_none() {
        if w.flush_net().is_err() {
            w.violate("boot: datagrams without end at one instant".into());
        }
        if w.agreed().is_ok() && w.m.iter().all(|m| m.ring.is_some()) {
            break;
        }
        w.tick();
    }
    w.ticked_at = None;
    w.all_datagrams = o.all_datagrams;
    w
}

struct Explorer {
    o: Options,
    visited: Seen,
    r: Report,
    path: Vec<(Choice, String)>,
}

impl Explorer {
    fn done(&self) -> bool {
        self.r.counterexamples.len() >= self.o.max_cex || self.r.truncated
    }

    fn cex(&mut self, violation: String) {
        self.r.counterexamples.push(Counterexample {
            violation,
            steps: self.path.clone(),
            nodes: self.o.nodes,
            start_t: self.r.start_t,
        });
    }

    fn dfs(&mut self, w: &W, depth: u32) {
        for c in w.choices(&self.o) {
            if self.done() {
                return;
            }
            let desc = w.describe(&c);
            let mut cw = w.clone();
            let views_before = cw.rings.iter().map(|r| r.reporters.len()).sum::<usize>();
            cw.apply(&c);
            self.r.explored += 1;
            let d = depth + 1;
            self.r.max_depth = self.r.max_depth.max(d);
            self.path.push((c, desc));
            if let Some(v) = cw.violation.take() {
                self.cex(v);
            } else {
                let seen = self.visited.visit(cw.key(), d);
                if seen == Visit::New {
                    self.r.distinct += 1;
                    let views = cw.rings.iter().map(|r| r.reporters.len()).sum::<usize>();
                    self.r.views += (views - views_before) as u64;
                }
                if seen != Visit::Old {
                    if self.o.max_states > 0 && self.r.distinct >= self.o.max_states {
                        self.r.truncated = true;
                    } else if d < self.o.depth {
                        self.dfs(&cw, d);
                    } else {
                        self.r.leaves += 1;
                        if self.o.liveness {
                            match cw.liveness() {
                                Ok(ms) => self.r.settle_ms_max = self.r.settle_ms_max.max(ms),
                                Err(e) => self.cex(e),
                            }
                        }
                    }
                }
            }
            self.path.pop();
        }
    }
}

/// Explore every interleaving within the bounds (see the module docs).
pub fn check(o: &Options) -> Report {
    let o = o.clone();
    // Deep recursion over 64 KiB transports: run on a roomy stack.
    std::thread::Builder::new()
        .stack_size(512 << 20)
        .spawn(move || check_here(&o))
        .expect("spawn explorer")
        .join()
        .expect("explorer thread")
}

fn check_here(o: &Options) -> Report {
    let t0 = WallClock::now();
    let mut w = start(o);
    let mut e = Explorer { o: o.clone(), visited: Seen::default(), r: Report::default(), path: Vec::new() };
    e.r.start_t = w.now;
    if let Some(v) = w.violation.take() {
        e.cex(format!("in the start state: {v}"));
    } else if let Err(m) = w.agreed() {
        e.cex(format!("the start state did not settle: {m}"));
    } else {
        e.visited.visit(w.key(), 0);
        e.r.distinct = 1;
        e.dfs(&w, 0);
    }
    e.r.secs = t0.elapsed().as_secs_f64();
    e.r
}

/// What a replayed step list did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replay {
    /// Every step was enabled; no property was violated.
    Clean,
    /// A property was violated (at the last step replayed).
    Violation(String),
    /// Step `k` (0-based) was not enabled (a datagram not in flight).
    NotEnabled(usize),
}

/// Replay a step list from the start state (repro tests).
pub fn replay(o: &Options, steps: &[Choice]) -> Replay {
    let (o, steps) = (o.clone(), steps.to_vec());
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || replay_here(&o, &steps))
        .expect("spawn replay")
        .join()
        .expect("replay thread")
}

fn replay_here(o: &Options, steps: &[Choice]) -> Replay {
    let mut w = start(o);
    for (k, c) in steps.iter().enumerate() {
        if let Choice::Deliver(dg) | Choice::Drop(dg) | Choice::Dup(dg) = c {
            if w.find(dg).is_none() {
                return Replay::NotEnabled(k);
            }
        }
        w.apply(c);
        if let Some(v) = w.violation.take() {
            return Replay::Violation(v);
        }
    }
    Replay::Clean
}
