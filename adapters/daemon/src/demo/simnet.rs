//! An in-process simulated transport for the demo: total-order multicast per
//! partition, and membership events that follow the transport contract of
//! `cohort_core::gcs`:
//!
//! * a ring change (power off/on, partition, merge) gives every running
//!   daemon whose ring changed a confchg with the `NodeDown` entries, one
//!   with the `NodeUp` entries (merges), then the [`RingEvent`] of the new
//!   ring (a larger seq; all sides of a split share one seq, as corosync's
//!   do), then a [`QuorumEvent`] (majority of the configured nodes);
//! * a daemon that starts gets the current [`RingEvent`] and quorum, then a
//!   `Join` confchg reaches its whole partition; a daemon that exits gives
//!   its partition a `ProcDown` confchg (no ring change).
//!
//! Messages go through one bus in send order and reach every running daemon
//! of the sender's partition, the sender included. Before any membership
//! change the bus is flushed, so a confchg is ordered after every message
//! sent before it (virtual synchrony). The API is the shape a UDP-on-loopback
//! transport would also have: `send`, per-node event queues, and the
//! membership operations that a real network produces by itself.

use std::collections::VecDeque;

use cohort_core::gcs::{Confchg, MemberReason, NodeList, QuorumEvent, Reason, RingEvent};
use cohort_core::NodeId;

use crate::transport::TransportEvent;

pub struct SimNet {
    n: u32,
    ring: u64,
    label: Vec<u32>,
    powered: Vec<bool>,
    running: Vec<bool>,
    /// Group membership each daemon was last told.
    view: Vec<Vec<u32>>,
    /// Ring membership each powered node was last told.
    ring_view: Vec<Vec<u32>>,
    node_ring: Vec<u64>,
    inbox: Vec<VecDeque<TransportEvent>>,
    bus: VecDeque<(u32, u32, Vec<u8>)>,
    /// Messages carried (for the demo's summary).
    pub delivered: u64,
}

fn list(v: &[u32]) -> NodeList {
    let mut l = NodeList::new();
    for n in v {
        let _ = l.push(NodeId(*n));
    }
    l
}

impl SimNet {
    /// `n` powered nodes in one partition, no daemon running, ring `first_ring`.
    pub fn new(n: u32, first_ring: u64) -> SimNet {
        let k = n as usize + 1;
        let all: Vec<u32> = (1..=n).collect();
        SimNet {
            n,
            ring: first_ring,
            label: vec![0; k],
            powered: vec![true; k],
            running: vec![false; k],
            view: vec![vec![]; k],
            ring_view: vec![all; k],
            node_ring: vec![first_ring; k],
            inbox: vec![VecDeque::new(); k],
            bus: VecDeque::new(),
            delivered: 0,
        }
    }

    pub fn nodes(&self) -> u32 {
        self.n
    }

    pub fn is_running(&self, i: u32) -> bool {
        self.running[i as usize]
    }

    pub fn is_powered(&self, i: u32) -> bool {
        self.powered[i as usize]
    }

    /// Powered nodes that can talk to `i` (its ring).
    pub fn ring_members(&self, i: u32) -> Vec<u32> {
        (1..=self.n)
            .filter(|k| self.powered[*k as usize] && self.label[*k as usize] == self.label[i as usize])
            .collect()
    }

    /// Running daemons that can talk to `i` (its group).
    pub fn component(&self, i: u32) -> Vec<u32> {
        self.ring_members(i).into_iter().filter(|k| self.running[*k as usize]).collect()
    }

    fn quorate(&self, ring_members: &[u32]) -> bool {
        ring_members.len() as u32 * 2 > self.n
    }

    /// Move every message on the bus into the receivers' queues.
    pub fn flush(&mut self) {
        while let Some((from, label, bytes)) = self.bus.pop_front() {
            for k in 1..=self.n {
                let ku = k as usize;
                if self.running[ku] && self.powered[ku] && self.label[ku] == label {
                    self.delivered += 1;
                    self.inbox[ku].push_back(TransportEvent::Deliver { from: NodeId(from), payload: bytes.clone() });
                }
            }
        }
    }

    /// Multicast from `from` (agreed order with everything else sent).
    pub fn send(&mut self, from: u32, bytes: &[u8]) -> Result<(), String> {
        let f = from as usize;
        if !self.running[f] || !self.powered[f] {
            return Err(format!("node {from} is not connected"));
        }
        self.bus.push_back((from, self.label[f], bytes.to_vec()));
        Ok(())
    }

    /// Next event for node `i`'s daemon.
    pub fn take(&mut self, i: u32) -> Option<TransportEvent> {
        self.inbox[i as usize].pop_front()
    }

    pub fn has_pending(&self) -> bool {
        !self.bus.is_empty() || self.inbox.iter().any(|q| !q.is_empty())
    }

    /// Node `i`'s daemon starts: the current ring, quorum, then its Join.
    pub fn start_daemon(&mut self, i: u32) {
        self.flush();
        let iu = i as usize;
        self.running[iu] = true;
        let rm = self.ring_members(i);
        let ring = self.node_ring[iu];
        self.inbox[iu].push_back(TransportEvent::Ring(RingEvent { ring, members: list(&rm) }));
        let q = self.quorate(&rm);
        self.inbox[iu].push_back(TransportEvent::Quorum(QuorumEvent { ring, quorate: q, members: list(&rm) }));
        let comp = self.component(i);
        let mut cc = Confchg { members: list(&comp), ..Default::default() };
        let _ = cc.joined.push(MemberReason { node: NodeId(i), reason: Reason::Join });
        for k in &comp {
            self.view[*k as usize] = comp.clone();
            self.inbox[*k as usize].push_back(TransportEvent::Confchg(cc.clone()));
        }
    }

    /// Node `i`'s daemon exits (the node stays up): ProcDown at the others.
    pub fn stop_daemon(&mut self, i: u32) {
        self.flush();
        let iu = i as usize;
        self.running[iu] = false;
        self.view[iu].clear();
        self.inbox[iu].clear();
        let comp = self.component(i);
        let mut cc = Confchg { members: list(&comp), ..Default::default() };
        let _ = cc.left.push(MemberReason { node: NodeId(i), reason: Reason::ProcDown });
        for k in &comp {
            self.view[*k as usize] = comp.clone();
            self.inbox[*k as usize].push_back(TransportEvent::Confchg(cc.clone()));
        }
    }

    /// The node loses power: its daemon is gone at once; the others notice
    /// at the next [`SimNet::reconfigure`] (after the token timeout).
    pub fn power_off(&mut self, i: u32) {
        self.flush();
        let iu = i as usize;
        self.powered[iu] = false;
        self.running[iu] = false;
        self.view[iu].clear();
        self.inbox[iu].clear();
    }

    pub fn power_on(&mut self, i: u32) {
        let iu = i as usize;
        self.powered[iu] = true;
        self.ring_view[iu].clear();
    }

    /// Change who can talk to whom (`(node, label)`: same label, same
    /// partition). Takes effect at the next [`SimNet::reconfigure`].
    pub fn set_labels(&mut self, labels: &[(u32, u32)]) {
        self.flush();
        for (n, l) in labels {
            self.label[*n as usize] = *l;
        }
    }

    /// Deliver the ring changes the last power/partition changes caused.
    pub fn reconfigure(&mut self) {
        self.flush();
        self.ring += 4;
        let ring = self.ring;
        for i in 1..=self.n {
            let iu = i as usize;
            if !self.powered[iu] {
                continue;
            }
            let rm = self.ring_members(i);
            if rm == self.ring_view[iu] {
                continue;
            }
            self.ring_view[iu] = rm.clone();
            self.node_ring[iu] = ring;
            if !self.running[iu] {
                continue;
            }
            let comp = self.component(i);
            let old = self.view[iu].clone();
            let left: Vec<u32> = old.iter().copied().filter(|n| !comp.contains(n)).collect();
            let joined: Vec<u32> = comp.iter().copied().filter(|n| !old.contains(n)).collect();
            if !left.is_empty() {
                let members: Vec<u32> = old.iter().copied().filter(|n| !left.contains(n)).collect();
                let mut cc = Confchg { members: list(&members), ..Default::default() };
                for n in left {
                    let _ = cc.left.push(MemberReason { node: NodeId(n), reason: Reason::NodeDown });
                }
                self.inbox[iu].push_back(TransportEvent::Confchg(cc));
            }
            if !joined.is_empty() {
                let mut cc = Confchg { members: list(&comp), ..Default::default() };
                for n in joined {
                    let _ = cc.joined.push(MemberReason { node: NodeId(n), reason: Reason::NodeUp });
                }
                self.inbox[iu].push_back(TransportEvent::Confchg(cc));
            }
            self.view[iu] = comp;
            self.inbox[iu].push_back(TransportEvent::Ring(RingEvent { ring, members: list(&rm) }));
            let q = self.quorate(&rm);
            self.inbox[iu].push_back(TransportEvent::Quorum(QuorumEvent { ring, quorate: q, members: list(&rm) }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(net: &mut SimNet, i: u32) -> Vec<String> {
        let mut v = vec![];
        while let Some(e) = net.take(i) {
            v.push(match e {
                TransportEvent::Ring(r) => format!("ring {}", r.ring),
                TransportEvent::Quorum(q) => format!("quorum {}", q.quorate),
                TransportEvent::Confchg(c) => format!(
                    "confchg {:?} +{:?} -{:?}",
                    c.members.iter().map(|n| n.0).collect::<Vec<_>>(),
                    c.joined.iter().map(|m| (m.node.0, m.reason)).collect::<Vec<_>>(),
                    c.left.iter().map(|m| (m.node.0, m.reason)).collect::<Vec<_>>()
                ),
                TransportEvent::Deliver { from, payload } => format!("deliver {} {:?}", from.0, payload),
            });
        }
        v
    }

    #[test]
    fn contract_join_partition_merge() {
        let mut net = SimNet::new(3, 8);
        net.start_daemon(1);
        assert_eq!(kinds(&mut net, 1), vec!["ring 8", "quorum true", "confchg [1] +[(1, Join)] -[]"]);
        net.start_daemon(2);
        net.send(2, b"a").unwrap();
        net.flush();
        assert_eq!(kinds(&mut net, 1), vec!["confchg [1, 2] +[(2, Join)] -[]", "deliver 2 [97]"]);
        assert_eq!(
            kinds(&mut net, 2),
            vec!["ring 8", "quorum true", "confchg [1, 2] +[(2, Join)] -[]", "deliver 2 [97]"]
        );
        net.set_labels(&[(2, 1)]);
        net.reconfigure();
        // node 3 is up (no daemon): node 1's ring [1,3] is a majority
        assert_eq!(kinds(&mut net, 1), vec!["confchg [1] +[] -[(2, NodeDown)]", "ring 12", "quorum true"]);
        assert_eq!(kinds(&mut net, 2), vec!["confchg [2] +[] -[(1, NodeDown)]", "ring 12", "quorum false"]);
        net.set_labels(&[(2, 0)]);
        net.reconfigure();
        assert_eq!(kinds(&mut net, 1), vec!["confchg [1, 2] +[(2, NodeUp)] -[]", "ring 16", "quorum true"]);
        net.stop_daemon(2);
        assert_eq!(kinds(&mut net, 1), vec!["confchg [1] +[] -[(2, ProcDown)]"]);
        net.power_off(3);
        net.reconfigure();
        assert_eq!(kinds(&mut net, 1), vec!["ring 20", "quorum true"], "no daemon on 3: ring change only");
    }
}
