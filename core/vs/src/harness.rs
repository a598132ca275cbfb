//! A tiny deterministic network for testing [`Vs`]: N nodes, a seeded
//! the test kit's RNG, per-datagram loss, duplication and random delay (which
//! reorders), partitions, crashes and restarts. Time is simulated in
//! milliseconds; every run with the same seed is identical.

extern crate std;

use super::{Dest, Vs, VsConfig, VsEvent, MAX_DATAGRAM, MAX_MESSAGE};
use crate::gcs::NodeList;
use crate::ids::{Incarnation, Instant, NodeId};
use std::boxed::Box;
use std::collections::BTreeMap;
use std::vec::Vec;

pub const KEY: [u8; 32] = [0x42; 32];

/// The test kit's RNG (`cohort_types::rng`).
pub use crate::rng::Rng;

/// Network behaviour.
#[derive(Clone, Copy, Debug)]
pub struct Net {
    pub loss_per_mille: u64,
    pub dup_per_mille: u64,
    pub min_delay_ms: u64,
    /// Extra random delay in `0..=jitter_ms` (reordering).
    pub jitter_ms: u64,
}

impl Net {
    pub const CLEAN: Net = Net { loss_per_mille: 0, dup_per_mille: 0, min_delay_ms: 1, jitter_ms: 0 };
    pub const LOSSY: Net = Net { loss_per_mille: 100, dup_per_mille: 50, min_delay_ms: 1, jitter_ms: 4 };
}

#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Logged {
    Ev(VsEvent),
    Msg { from: NodeId, payload: Vec<u8> },
}

pub struct SimNode {
    pub id: NodeId,
    pub vs: Box<Vs>,
    pub up: bool,
    pub inc: u64,
    /// Everything this process (incarnation) emitted, with the time.
    pub log: Vec<(u64, Logged)>,
    /// Logs of earlier incarnations.
    pub old_logs: Vec<Vec<(u64, Logged)>>,
    pub recv_errors: BTreeMap<std::string::String, u64>,
    /// The application does not poll events (its deliveries wait).
    pub hold_events: bool,
}

struct Packet {
    at: u64,
    seq: u64,
    from: NodeId,
    to: NodeId,
    bytes: Vec<u8>,
}

pub struct Sim {
    pub now: u64,
    pub nodes: Vec<SimNode>,
    pub net: Net,
    pub rng: Rng,
    /// connected[a][b]: datagrams from node a+1 reach node b+1.
    connected: Vec<Vec<bool>>,
    in_flight: Vec<Packet>,
    pkt_seq: u64,
    /// Optional observer of every datagram put on the wire.
    pub tap: Option<Vec<(NodeId, Dest, Vec<u8>)>>,
    /// Optional per-datagram filter `(from, to, len) -> drop?`.
    pub filter: Option<Filter>,
}

/// See [`Sim::filter`].
pub type Filter = Box<dyn FnMut(NodeId, NodeId, usize) -> bool>;

fn node_list(n: u32) -> NodeList {
    (1..=n).map(NodeId).collect()
}

pub fn config(id: u32, inc: u64, n: u32) -> VsConfig {
    VsConfig::new(NodeId(id), Incarnation(inc), node_list(n), KEY)
}

impl Sim {
    pub fn new(n: u32, seed: u64, net: Net) -> Sim {
        let nodes = (1..=n)
            .map(|id| SimNode {
                id: NodeId(id),
                vs: Box::new(Vs::new(config(id, 1, n)).unwrap()),
                up: true,
                inc: 1,
                log: Vec::new(),
                old_logs: Vec::new(),
                recv_errors: BTreeMap::new(),
                hold_events: false,
            })
            .collect();
        let n = n as usize;
        Sim {
            now: 0,
            nodes,
            net,
            rng: Rng::new(seed),
            connected: std::vec![std::vec![true; n]; n],
            in_flight: Vec::new(),
            pkt_seq: 0,
            tap: None,
            filter: None,
        }
    }

    pub fn node(&mut self, id: u32) -> &mut SimNode {
        &mut self.nodes[id as usize - 1]
    }

    pub fn n(&self) -> u32 {
        self.nodes.len() as u32
    }

    /// Split the network into the given groups (nodes in no group are
    /// isolated).
    pub fn partition(&mut self, groups: &[&[u32]]) {
        let n = self.nodes.len();
        for a in 0..n {
            for b in 0..n {
                self.connected[a][b] = false;
            }
        }
        for g in groups {
            for &a in g.iter() {
                for &b in g.iter() {
                    self.connected[a as usize - 1][b as usize - 1] = true;
                }
            }
        }
    }

    pub fn heal(&mut self) {
        for row in self.connected.iter_mut() {
            for c in row.iter_mut() {
                *c = true;
            }
        }
    }

    /// One-way link control.
    pub fn set_link(&mut self, from: u32, to: u32, up: bool) {
        self.connected[from as usize - 1][to as usize - 1] = up;
    }

    /// Stop a node: it neither sends nor receives any more.
    pub fn crash(&mut self, id: u32) {
        self.node(id).up = false;
        self.in_flight.retain(|p| p.to.0 != id && p.from.0 != id);
    }

    /// Start a new incarnation of a node.
    pub fn restart(&mut self, id: u32) {
        let n = self.n();
        let node = self.node(id);
        node.inc += 1;
        *node.vs = Vs::new(config(id, node.inc, n)).unwrap();
        node.up = true;
        let old = core::mem::take(&mut node.log);
        node.old_logs.push(old);
    }

    pub fn broadcast(&mut self, id: u32, payload: &[u8]) -> Result<(), super::VsSendError> {
        let now = Instant(self.now);
        self.node(id).vs.broadcast(now, payload)
    }

    pub fn broadcast_message(&mut self, id: u32, message: &[u8]) -> Result<(), super::VsSendError> {
        let now = Instant(self.now);
        self.node(id).vs.broadcast_message(now, message)
    }

    /// Drain transmits and events of every up node.
    fn drain(&mut self) {
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut payload = [0u8; MAX_MESSAGE];
        let n = self.nodes.len();
        for i in 0..n {
            if !self.nodes[i].up {
                continue;
            }
            while let Some(t) = self.nodes[i].vs.poll_transmit(&mut buf) {
                assert!(t.len <= MAX_DATAGRAM);
                let from = self.nodes[i].id;
                let bytes = &buf[..t.len];
                if let Some(tap) = &mut self.tap {
                    tap.push((from, t.dest, bytes.to_vec()));
                }
                for j in 0..n {
                    let to = self.nodes[j].id;
                    let addressed = match t.dest {
                        Dest::All => j != i,
                        Dest::Node(d) => d == to,
                    };
                    if !addressed || !self.connected[i][j] || self.rng.chance(self.net.loss_per_mille) {
                        continue;
                    }
                    if self.filter.as_mut().is_some_and(|f| f(from, to, t.len)) {
                        continue;
                    }
                    let copies = if self.rng.chance(self.net.dup_per_mille) { 2 } else { 1 };
                    for _ in 0..copies {
                        let at = self.now + self.net.min_delay_ms + self.rng.below(self.net.jitter_ms + 1);
                        self.pkt_seq += 1;
                        self.in_flight.push(Packet { at, seq: self.pkt_seq, from, to, bytes: bytes.to_vec() });
                    }
                }
            }
            if self.nodes[i].hold_events {
                continue;
            }
            while let Some(ev) = self.nodes[i].vs.poll_event(&mut payload) {
                let entry = match ev {
                    VsEvent::Deliver { from, len } => Logged::Msg { from, payload: payload[..len].to_vec() },
                    e => Logged::Ev(e),
                };
                self.nodes[i].log.push((self.now, entry));
            }
        }
    }

    /// Advance simulated time to `until`, processing everything on the way.
    pub fn run_until(&mut self, until: u64) {
        let mut spins = 0u32;
        loop {
            self.drain();
            let next_pkt = self.in_flight.iter().map(|p| p.at).min();
            let next_timer = self.nodes.iter().filter(|n| n.up).filter_map(|n| n.vs.next_timeout()).map(|t| t.0).min();
            let next = match (next_pkt, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(u64::MAX),
            };
            if next > until {
                self.now = until;
                return;
            }
            if next <= self.now {
                spins += 1;
                if spins >= 100_000 {
                    for n in self.nodes.iter().filter(|n| n.up) {
                        std::println!("node {}: {}", n.id.0, n.vs.debug_timers());
                    }
                    panic!("no progress at t={}", self.now);
                }
            } else {
                spins = 0;
            }
            self.now = self.now.max(next);
            let now = self.now;
            // Deliver due packets in (time, sequence) order.
            let mut due: Vec<Packet> = Vec::new();
            let mut k = 0;
            while k < self.in_flight.len() {
                if self.in_flight[k].at <= now {
                    due.push(self.in_flight.swap_remove(k));
                } else {
                    k += 1;
                }
            }
            due.sort_by_key(|p| (p.at, p.seq));
            for p in due {
                let node = &mut self.nodes[p.to.0 as usize - 1];
                if !node.up {
                    continue;
                }
                if let Err(e) = node.vs.handle_datagram(Instant(now), Some(p.from), &p.bytes) {
                    *node.recv_errors.entry(std::format!("{e:?}")).or_default() += 1;
                }
            }
            for node in self.nodes.iter_mut().filter(|n| n.up) {
                if node.vs.next_timeout().is_some_and(|t| t.0 <= now) {
                    node.vs.handle_timeout(Instant(now));
                }
            }
        }
    }

    /// Run for `ms` more milliseconds.
    pub fn run_for(&mut self, ms: u64) {
        let t = self.now + ms;
        self.run_until(t);
    }

    /// The installed view of each up node (id, members).
    pub fn views(&self) -> Vec<(NodeId, u64, NodeList)> {
        self.nodes
            .iter()
            .filter(|n| n.up)
            .map(|n| {
                let v = n.vs.view();
                (n.id, v.id, v.members)
            })
            .collect()
    }

    /// All up nodes in `ids` share one view whose members are exactly `ids`.
    pub fn agreed_view(&self, ids: &[u32]) -> Option<u64> {
        let want: NodeList = ids.iter().map(|&i| NodeId(i)).collect();
        let mut id = None;
        for &i in ids {
            let n = &self.nodes[i as usize - 1];
            let v = n.vs.view();
            if v.members != want || id.is_some_and(|x| x != v.id) {
                return None;
            }
            id = Some(v.id);
        }
        id
    }

    /// Run until the nodes agree on one view of exactly `ids`, or panic
    /// after `limit_ms`.
    pub fn settle(&mut self, ids: &[u32], limit_ms: u64) -> u64 {
        let end = self.now + limit_ms;
        while self.now < end {
            self.run_for(10);
            if let Some(v) = self.agreed_view(ids) {
                return v;
            }
        }
        panic!("no agreed view of {:?} by t={}: {:?}", ids, self.now, self.views());
    }
}

/// One node's history split by view: (view id, ring members, delivered
/// messages while in that view).
pub type Segments = Vec<(u64, NodeList, Vec<(NodeId, Vec<u8>)>)>;

pub fn segments(log: &[(u64, Logged)]) -> Segments {
    let mut out: Segments = Vec::new();
    for (_, e) in log {
        match e {
            Logged::Ev(VsEvent::Ring(r)) => out.push((r.ring, r.members.clone(), Vec::new())),
            Logged::Msg { from, payload } => {
                let seg = out.last_mut().expect("delivery before the first ring event");
                seg.2.push((*from, payload.clone()));
            }
            _ => {}
        }
    }
    out
}

/// Check virtual synchrony and total order over every pair of processes:
/// in a common view, one delivered sequence is a prefix of the other; if
/// both then installed the same next view, the sequences are equal. Also:
/// view ids strictly increase along each history, and a view's members
/// agree.
pub fn check_vs(histories: &[Segments]) {
    for h in histories {
        for w in h.windows(2) {
            assert!(w[1].0 > w[0].0, "view ids must increase: {:x} then {:x}", w[0].0, w[1].0);
        }
        for seg in h {
            let mut d = seg.2.clone();
            d.sort();
            let n = d.len();
            d.dedup();
            assert_eq!(n, d.len(), "view {:x}: a message was delivered twice", seg.0);
        }
    }
    for (ai, a) in histories.iter().enumerate() {
        for (bi, b) in histories.iter().enumerate().skip(ai + 1) {
            for (ia, sa) in a.iter().enumerate() {
                // A boot singleton's id is reused by the node's next
                // incarnation (seq restarts at 1): not a shared view.
                if sa.1.len() < 2 {
                    continue;
                }
                // A view is its id and members: two partitions may install
                // the same seq (with disjoint members), like corosync rings.
                let Some(ib) = b.iter().position(|sb| sb.0 == sa.0 && sb.1 == sa.1) else { continue };
                let sb = &b[ib];
                let (x, y) = (&sa.2, &sb.2);
                let n = x.len().min(y.len());
                assert_eq!(&x[..n], &y[..n], "view {:x}: order differs between histories {ai} and {bi}", sa.0);
                let next_a = a.get(ia + 1).map(|s| (s.0, &s.1));
                let next_b = b.get(ib + 1).map(|s| (s.0, &s.1));
                if next_a.is_some() && next_a == next_b {
                    assert_eq!(
                        x.len(),
                        y.len(),
                        "view {:x} -> {:x}: histories {ai} and {bi} delivered different sets",
                        sa.0,
                        next_a.map_or(0, |n| n.0)
                    );
                }
            }
        }
    }
}

/// Every history of every process the simulation ran.
pub fn all_histories(sim: &Sim) -> Vec<Segments> {
    let mut v = Vec::new();
    for n in &sim.nodes {
        for l in &n.old_logs {
            v.push(segments(l));
        }
        v.push(segments(&n.log));
    }
    v
}

impl Vs {
    /// Test-only: the deadlines `next_timeout` considers.
    pub fn debug_timers(&self) -> std::string::String {
        std::format!(
            "now={:?} hb={:?} det={:?} coord={:?} change={:?} settle={:?} stall={:?} nak={:?}/{:?} rto={:?} life={:?} flush={:?} contig={} high={} base={} app={} limit={}",
            self.now,
            self.next_hb,
            self.detector.next_change(self.now),
            self.coord.deadlines(self.phase_ms()),
            self.change_since,
            self.desired_changed_at,
            self.stall_since,
            self.repair_needed(),
            self.nak_at,
            self.send.rto_at,
            self.life,
            self.flush,
            self.order.contig,
            self.order.high,
            self.order.base,
            self.order.app_next,
            self.order.limit,
        )
    }
}
