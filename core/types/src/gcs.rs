//! The group-communication vocabulary shared by every transport.
//!
//! A transport (the corosync adapter, the core's own datagram protocol in
//! [`crate::vs`], or the simulator) feeds a [`crate::Node`] three streams:
//!
//! * [`Confchg`]: a membership change of the daemon group, in agreed order
//!   with delivered messages (CPG `confchg`).
//! * [`RingEvent`]: the transport's configuration id (corosync totem ring id,
//!   VS view id), on the same ordered stream as the confchgs.
//! * [`QuorumEvent`]: quorum state stamped with the ring it belongs to, on a
//!   separate stream with **no** ordering relative to the other two.
//!
//! Transport contract (corosync and [`crate::vs`] both satisfy it):
//! a ring change is delivered as zero or more confchgs carrying
//! [`Reason::NodeDown`]/[`Reason::NodeUp`] entries, **followed** by the
//! [`RingEvent`] of the new ring; process-level changes ([`Reason::Join`],
//! [`Reason::Leave`], [`Reason::ProcDown`]) happen inside a ring and have no
//! ring event. Before its first confchg a node must be told the current ring
//! (corosync: from the quorum `trackstart` callback). The [`crate::barrier`]
//! turns these streams into [`Change`]s, each stamped with the
//! [`Generation`] it belongs to.

use crate::ids::{Generation, NodeId};
use serde::{Deserialize, Serialize};

/// Most nodes a cluster may have ([`crate::profile::NODES`]).
pub const MAX_NODES: usize = crate::profile::NODES;

/// A bounded, sorted, duplicate-free list of node ids.
pub type NodeList = heapless::Vec<NodeId, MAX_NODES>;

/// Why a member joined or left (corosync's numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Reason {
    /// A new process joined the group.
    Join = 1,
    /// A process left the group cleanly.
    Leave = 2,
    /// The node was lost from the ring (failure).
    NodeDown = 3,
    /// A process that was already in the group on a node that just joined
    /// the ring: a merge.
    NodeUp = 4,
    /// The process died, its node is alive (failure).
    ProcDown = 5,
}

impl Reason {
    /// NodeDown and ProcDown are failures, a Leave is not.
    pub const fn is_failure(self) -> bool {
        matches!(self, Reason::NodeDown | Reason::ProcDown)
    }

    /// NodeDown and NodeUp only happen with a ring change.
    pub const fn is_ring_level(self) -> bool {
        matches!(self, Reason::NodeDown | Reason::NodeUp)
    }

    pub const fn from_u8(v: u8) -> Option<Reason> {
        match v {
            1 => Some(Reason::Join),
            2 => Some(Reason::Leave),
            3 => Some(Reason::NodeDown),
            4 => Some(Reason::NodeUp),
            5 => Some(Reason::ProcDown),
            _ => None,
        }
    }
}

/// One joined or left entry of a confchg.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MemberReason {
    pub node: NodeId,
    pub reason: Reason,
}

pub type ReasonList = heapless::Vec<MemberReason, MAX_NODES>;

/// A membership change of the daemon group as the transport reports it
/// (no generation: the barrier assigns it).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Confchg {
    /// Members after the change.
    pub members: NodeList,
    pub joined: ReasonList,
    pub left: ReasonList,
}

impl Confchg {
    /// True when every entry is a process-level change (no ring change).
    pub fn is_process_level(&self) -> bool {
        self.joined.iter().chain(self.left.iter()).all(|m| !m.reason.is_ring_level())
    }
}

/// The transport's configuration id, on the confchg stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RingEvent {
    pub ring: u64,
    pub members: NodeList,
}

/// Quorum state of one ring, on its own unordered stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QuorumEvent {
    pub ring: u64,
    pub quorate: bool,
    pub members: NodeList,
}

/// A membership change stamped with its generation: what the barrier
/// releases to the daemon layer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Change {
    pub generation: Generation,
    /// False while this node joined the group mid-ring and has not yet
    /// learned the group's epoch numbering from an anchored member; the
    /// `epoch` then counts this node's own events since its join.
    pub anchored: bool,
    pub members: NodeList,
    pub joined: ReasonList,
    pub left: ReasonList,
}

/// Insert into a sorted node list, keeping it sorted and unique. Returns
/// false if the list is full (the caller decides what that means).
pub fn insert_sorted(list: &mut NodeList, node: NodeId) -> bool {
    match list.binary_search(&node) {
        Ok(_) => true,
        Err(pos) => list.insert(pos, node).is_ok(),
    }
}

/// Remove from a sorted node list; returns whether it was there.
pub fn remove_sorted(list: &mut NodeList, node: NodeId) -> bool {
    match list.binary_search(&node) {
        Ok(pos) => {
            list.remove(pos);
            true
        }
        Err(_) => false,
    }
}

/// Stable insertion sort by key, for the short lists of the core (at most
/// [`MAX_NODES`] entries): a few dozen bytes of code where `sort_unstable`
/// instantiates a generic quicksort per element type (about 1-2 KiB each on
/// a Cortex-M, a tenth of the appliance firmware's flash budget).
pub fn sort_small_by_key<T, K: Ord>(list: &mut [T], key: impl Fn(&T) -> K) {
    for i in 1..list.len() {
        let mut j = i;
        while j > 0 && key(&list[j - 1]) > key(&list[j]) {
            list.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// Sort and dedup a node list in place (transports may hand us any order).
pub fn normalize(list: &mut NodeList) {
    sort_small_by_key(list, |n| *n);
    let mut w = 0;
    for r in 0..list.len() {
        if w == 0 || list[w - 1] != list[r] {
            list[w] = list[r];
            w += 1;
        }
    }
    list.truncate(w);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_classify() {
        assert!(Reason::NodeDown.is_failure());
        assert!(Reason::ProcDown.is_failure());
        assert!(!Reason::Leave.is_failure());
        assert!(Reason::NodeUp.is_ring_level());
        assert!(!Reason::Join.is_ring_level());
        for v in 0..=255u8 {
            if let Some(r) = Reason::from_u8(v) {
                assert_eq!(r as u8, v);
            } else {
                assert!(v == 0 || v > 5);
            }
        }
    }

    #[test]
    fn sorted_lists() {
        let mut l = NodeList::new();
        assert!(insert_sorted(&mut l, NodeId(3)));
        assert!(insert_sorted(&mut l, NodeId(1)));
        assert!(insert_sorted(&mut l, NodeId(3)));
        assert_eq!(l.as_slice(), &[NodeId(1), NodeId(3)]);
        assert!(remove_sorted(&mut l, NodeId(1)));
        assert!(!remove_sorted(&mut l, NodeId(1)));
        let mut m = NodeList::new();
        for n in [5, 2, 5, 1, 2] {
            m.push(NodeId(n)).unwrap();
        }
        normalize(&mut m);
        assert_eq!(m.as_slice(), &[NodeId(1), NodeId(2), NodeId(5)]);
    }

    #[test]
    fn sort_small_by_key_is_stable_and_sorts() {
        let mut v = [(3, 'a'), (1, 'b'), (3, 'c'), (2, 'd'), (1, 'e'), (0, 'f')];
        sort_small_by_key(&mut v, |p| p.0);
        assert_eq!(v, [(0, 'f'), (1, 'b'), (1, 'e'), (2, 'd'), (3, 'a'), (3, 'c')]);
        let mut e: [u8; 0] = [];
        sort_small_by_key(&mut e, |x| *x);
        let mut r: [u32; 32] = core::array::from_fn(|i| 31 - i as u32);
        sort_small_by_key(&mut r, |x| *x);
        assert!(r.windows(2).all(|w| w[0] < w[1]));
    }
}

/// How quorum is computed by transports that compute it themselves (the
/// datagram transport, the simulator). Corosync computes its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum QuorumMode {
    /// More than half of the configured nodes.
    Majority,
    /// Two-node cluster: one node is quorate alone (fencing decides races).
    TwoNode,
    /// Always quorate.
    None,
}

impl QuorumMode {
    pub fn is_quorate(self, present: usize, configured: usize) -> bool {
        match self {
            QuorumMode::Majority => present * 2 > configured,
            QuorumMode::TwoNode => present >= 1,
            QuorumMode::None => true,
        }
    }
}
