//! Failure detection by heartbeats, plus per-peer security state.
//!
//! Every configured peer has one [`Peer`] entry holding the incarnation it was
//! last seen with, its replay window, when it was last heard (any
//! authenticated datagram counts), its latest heartbeat, whether that
//! incarnation left cleanly, and a local suspicion deadline.
//!
//! A peer is *alive* when it was heard within `fail_timeout`, has not left,
//! and is not suspected. Suspicion is how the membership layer excludes a
//! peer that is heard but does not take part in view agreement (asymmetric
//! links, a stuck coordinator): it expires by itself, after which the peer
//! is considered again.

use super::auth::ReplayWindow;
use super::wire::{Heartbeat, MemberList};
use super::VsRecvError;
use crate::gcs::{NodeList, MAX_NODES};
use crate::ids::{Incarnation, Instant, Member, NodeId};
use cohort_types::bounded::PushBounded;

/// What we know about one configured peer.
#[derive(Clone, Debug)]
pub(super) struct Peer {
    pub node: NodeId,
    /// Incarnation of the newest datagram authenticated from this node.
    pub inc: Option<Incarnation>,
    pub replay: ReplayWindow,
    pub last_heard: Instant,
    /// This incarnation announced a clean leave.
    pub left: bool,
    /// Excluded from the alive set until this instant.
    pub suspect_until: Instant,
    /// Newest heartbeat of this incarnation: arrival time, datagram
    /// counter, contents.
    pub hb: Option<(Instant, u64, Heartbeat)>,
}

/// The peer table (every configured node except ourselves).
#[cfg_attr(feature = "explore", derive(Clone))]
pub(super) struct Detector {
    peers: heapless::Vec<Peer, MAX_NODES>,
    fail_ms: u64,
}

impl Detector {
    pub fn new(nodes: &NodeList, me: NodeId, fail_ms: u64) -> Self {
        let mut peers = heapless::Vec::new();
        for &node in nodes.iter().filter(|n| **n != me) {
            let p = Peer {
                node,
                inc: None,
                replay: ReplayWindow::new(),
                last_heard: Instant(0),
                left: false,
                suspect_until: Instant(0),
                hb: None,
            };
            // Cannot fail: `nodes` has at most MAX_NODES entries.
            peers.push_bounded(p);
        }
        Detector { peers, fail_ms }
    }

    pub fn find(&self, node: NodeId) -> Option<usize> {
        self.peers.binary_search_by(|p| p.node.cmp(&node)).ok()
    }

    pub fn get(&self, idx: usize) -> Option<&Peer> {
        self.peers.get(idx)
    }

    pub fn peer(&self, node: NodeId) -> Option<&Peer> {
        self.find(node).and_then(|i| self.peers.get(i))
    }

    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// Pre-authentication check of a datagram's (incarnation, counter).
    pub fn admit(&self, idx: usize, inc: Incarnation, counter: u64) -> Result<(), VsRecvError> {
        let p = self.peers.get(idx).ok_or(VsRecvError::UnknownSender)?;
        match p.inc {
            Some(known) if inc < known => Err(VsRecvError::StaleIncarnation),
            Some(known) if inc == known && !p.replay.check(counter) => Err(VsRecvError::Replayed),
            _ => Ok(()),
        }
    }

    /// Record an authenticated datagram. Returns true when it revealed a new
    /// incarnation of the peer (all per-incarnation state is reset).
    pub fn commit(&mut self, idx: usize, inc: Incarnation, counter: u64, now: Instant) -> bool {
        let Some(p) = self.peers.get_mut(idx) else { return false };
        let new_inc = p.inc != Some(inc);
        if new_inc {
            p.inc = Some(inc);
            p.replay = ReplayWindow::new();
            p.left = false;
            p.suspect_until = Instant(0);
            p.hb = None;
        }
        p.replay.commit(counter);
        if now > p.last_heard || new_inc {
            p.last_heard = now;
        }
        new_inc
    }

    fn alive(&self, p: &Peer, now: Instant) -> bool {
        p.inc.is_some() && !p.left && now < p.last_heard.plus_ms(self.fail_ms) && now >= p.suspect_until
    }

    /// Every configured peer as an operator's link view sees it.
    pub fn links(&self, now: Instant) -> heapless::Vec<super::PeerLink, MAX_NODES> {
        let mut v = heapless::Vec::new();
        for p in self.peers.iter() {
            let l = super::PeerLink {
                node: p.node,
                inc: p.inc,
                last_heard: p.inc.map(|_| p.last_heard),
                alive: self.alive(p, now),
                left: p.left,
                suspected: now < p.suspect_until,
            };
            // Same capacity as the peer table.
            let pushed = v.push(l);
            invariant!(pushed.is_ok(), "a peer list longer than the node table");
        }
        v
    }

    /// Is this exact member (node and incarnation) alive?
    #[cfg(test)]
    pub fn is_alive(&self, m: Member, now: Instant) -> bool {
        self.peer(m.node).is_some_and(|p| p.inc == Some(m.inc) && self.alive(p, now))
    }

    /// Ourselves plus every alive peer, sorted by node id.
    pub fn alive_members(&self, now: Instant, me: Member) -> MemberList {
        let mut l = MemberList::new();
        let mut me_done = false;
        for p in &self.peers {
            if !me_done && me.node < p.node {
                l.push_bounded(me);
                me_done = true;
            }
            if let (true, Some(inc)) = (self.alive(p, now), p.inc) {
                l.push_bounded(Member { node: p.node, inc });
            }
        }
        if !me_done {
            l.push_bounded(me);
        }
        l
    }

    /// Keep a heartbeat if it is newer than the one we have.
    pub fn record_heartbeat(&mut self, idx: usize, now: Instant, counter: u64, hb: Heartbeat) {
        if let Some(p) = self.peers.get_mut(idx) {
            if p.hb.is_none_or(|(_, c, _)| counter > c) {
                p.hb = Some((now, counter, hb));
            }
        }
    }

    /// Exclude `node` from the alive set until `until`.
    pub fn suspect(&mut self, node: NodeId, until: Instant) {
        if let Some(i) = self.find(node) {
            if let Some(p) = self.peers.get_mut(i) {
                p.suspect_until = until;
            }
        }
    }

    /// Mark this incarnation as having left cleanly.
    pub fn mark_left(&mut self, m: Member) {
        if let Some(i) = self.find(m.node) {
            if let Some(p) = self.peers.get_mut(i) {
                if p.inc == Some(m.inc) {
                    p.left = true;
                }
            }
        }
    }

    /// Did this exact member announce a clean leave?
    pub fn has_left(&self, m: Member) -> bool {
        self.peer(m.node).is_some_and(|p| p.inc == Some(m.inc) && p.left)
    }

    /// Earliest instant at which the alive set can change by itself (a
    /// peer's timeout expiring or a suspicion ending).
    pub fn next_change(&self, now: Instant) -> Option<Instant> {
        let mut best: Option<Instant> = None;
        for p in &self.peers {
            if p.inc.is_none() || p.left {
                continue;
            }
            let expiry = p.last_heard.plus_ms(self.fail_ms);
            if expiry <= now {
                continue;
            }
            let t = if now < p.suspect_until { p.suspect_until.min(expiry) } else { expiry };
            best = Some(best.map_or(t, |b| b.min(t)));
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(ns: &[u32]) -> NodeList {
        let mut l = NodeList::new();
        for &n in ns {
            l.push(NodeId(n)).unwrap();
        }
        l
    }

    #[test]
    fn liveness_incarnations_and_replay() {
        let me = Member { node: NodeId(2), inc: Incarnation(1) };
        let mut d = Detector::new(&list(&[1, 2, 3]), me.node, 300);
        assert_eq!(d.alive_members(Instant(0), me).as_slice(), &[me]);
        let i3 = d.find(NodeId(3)).unwrap();
        assert!(d.find(NodeId(2)).is_none());
        d.admit(i3, Incarnation(5), 1).unwrap();
        assert!(d.commit(i3, Incarnation(5), 1, Instant(100)));
        assert_eq!(d.admit(i3, Incarnation(5), 1), Err(VsRecvError::Replayed));
        assert_eq!(d.admit(i3, Incarnation(4), 9), Err(VsRecvError::StaleIncarnation));
        let m3 = Member { node: NodeId(3), inc: Incarnation(5) };
        assert!(d.is_alive(m3, Instant(399)));
        assert!(!d.is_alive(m3, Instant(400)));
        assert_eq!(d.alive_members(Instant(200), me).as_slice(), &[me, m3]);
        assert_eq!(d.next_change(Instant(200)), Some(Instant(400)));
        d.suspect(NodeId(3), Instant(250));
        assert_eq!(d.alive_members(Instant(200), me).as_slice(), &[me]);
        assert_eq!(d.next_change(Instant(200)), Some(Instant(250)));
        d.mark_left(m3);
        assert!(d.has_left(m3));
        assert!(!d.is_alive(m3, Instant(300)));
        // A new incarnation resets everything.
        d.admit(i3, Incarnation(6), 1).unwrap();
        assert!(d.commit(i3, Incarnation(6), 1, Instant(300)));
        assert!(!d.has_left(m3));
        assert!(d.is_alive(Member { node: NodeId(3), inc: Incarnation(6) }, Instant(300)));
    }

    /// A heartbeat replaces the recorded one only from a newer datagram:
    /// of two in one datagram the first stays, and so it does when an older
    /// datagram's arrives late (issue 17, fifth round: `>` -> `>=` in
    /// `record_heartbeat` survived; a sender puts one heartbeat in a
    /// datagram).
    #[test]
    fn a_heartbeat_replaces_the_recorded_one_only_from_a_newer_datagram() {
        let mut d = Detector::new(&list(&[1, 2]), NodeId(1), 300);
        let i2 = d.find(NodeId(2)).unwrap();
        let hb = |id| Heartbeat {
            view: super::super::wire::ViewKey { id, leader: NodeId(1), leader_inc: Incarnation(1) },
            acc_coord: 0,
            acc_counter: 0,
            contig: 0,
            high: 0,
            stable: 0,
            flags: 0,
        };
        let kept = |d: &Detector| d.get(i2).unwrap().hb.as_ref().map(|(at, c, h)| (*at, *c, h.view.id));
        d.record_heartbeat(i2, Instant(10), 5, hb(7));
        d.record_heartbeat(i2, Instant(10), 5, hb(9));
        d.record_heartbeat(i2, Instant(12), 4, hb(8));
        assert_eq!(kept(&d), Some((Instant(10), 5, 7)));
        d.record_heartbeat(i2, Instant(13), 6, hb(11));
        assert_eq!(kept(&d), Some((Instant(13), 6, 11)));
    }
}
