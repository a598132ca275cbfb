//! Cross-stream generation reconciliation.
//!
//! The barrier is the only place that knows the transport's streams are
//! unordered relative to each other. It takes raw confchgs and ring ids (one
//! ordered stream) and quorum events (another stream) and releases
//! [`Change`]s stamped with their [`Generation`]:
//!
//! * ring-level confchgs (NodeDown/NodeUp) are held until the ring event of
//!   the new ring arrives; all confchgs of one ring change collapse into one
//!   change at `(ring, 0)`, so both sides of a merge (which see different
//!   confchgs) agree on its generation;
//! * a ring event without confchgs is a change of its own (the ring moved,
//!   quorum may differ);
//! * a process-level confchg is the next epoch of the current ring.
//!
//! Quorum is tracked per ring: [`Barrier::quorate_at`] answers only for the
//! exact ring of the current generation, so no decision depends on whether
//! the quorum callback came before or after the confchg.

use crate::gcs::{self, Change, Confchg, MemberReason, NodeList, QuorumEvent, ReasonList, RingEvent};
use crate::ids::{Generation, NodeId};

/// Errors of the barrier's inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum BarrierError {
    /// A confchg arrived before the transport told us the current ring.
    NoRingYet,
    /// A ring id went backwards on the ordered stream.
    RingWentBack,
    /// More joined/left entries than the cluster can have nodes.
    TooManyEntries,
    /// A confchg left us out of the members without a left entry for us.
    DroppedSelf,
}

#[derive(Clone, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Barrier {
    me: NodeId,
    /// Ring of the last released change (or the initial ring).
    bound_ring: Option<u64>,
    /// Generation of the last released change.
    current: Generation,
    anchored: bool,
    /// We saw our own join (a second one is just the next epoch).
    joined_once: bool,
    /// Ring-level confchgs waiting for their ring event.
    pending: Option<Confchg>,
    /// Members as of the last released change.
    members: NodeList,
    quorum: Option<(u64, bool)>,
}

impl Barrier {
    pub fn new(me: NodeId) -> Barrier {
        Barrier {
            me,
            bound_ring: None,
            current: Generation::ZERO,
            anchored: false,
            joined_once: false,
            pending: None,
            members: NodeList::new(),
            quorum: None,
        }
    }

    pub fn current(&self) -> Generation {
        self.current
    }

    pub fn anchored(&self) -> bool {
        self.anchored
    }

    pub fn members(&self) -> &NodeList {
        &self.members
    }

    /// Re-number after learning the group's epoch numbering from an anchored
    /// member: our local epoch `local` is the group's `absolute`.
    /// Refused (false) across rings or backwards: a joiner's absolute
    /// numbering is never below its own count, so such an offer is not one
    /// of ours to take.
    pub fn anchor(&mut self, absolute: Generation) -> bool {
        if absolute.ring != self.current.ring || absolute < self.current {
            return false;
        }
        self.current = absolute;
        self.anchored = true;
        true
    }

    /// A daemon group epoch advanced by an applied membership message.
    pub fn bump_epoch(&mut self) -> Generation {
        let before = self.current;
        self.current = self.current.next_epoch();
        invariant!(self.current >= before, "generation went backwards");
        self.current
    }

    /// Quorum at exactly this ring: `Some(q)` once the quorum stream has
    /// reported it, `None` while it has not (or has moved past it).
    pub fn quorate_at(&self, ring: u64) -> Option<bool> {
        match self.quorum {
            Some((r, q)) if r == ring => Some(q),
            _ => None,
        }
    }

    /// Latest quorum report, whatever ring.
    pub fn quorum(&self) -> Option<(u64, bool)> {
        self.quorum
    }

    pub fn on_quorum(&mut self, ev: &QuorumEvent) {
        match self.quorum {
            Some((r, _)) if r > ev.ring => {}
            _ => self.quorum = Some((ev.ring, ev.quorate)),
        }
    }

    /// Would this ring event release a change? (Lets the caller reserve
    /// output capacity before mutating anything.)
    pub fn ring_releases(&self, ev: &RingEvent) -> bool {
        self.bound_ring.is_some_and(|b| ev.ring > b)
    }

    pub fn on_ring(&mut self, ev: &RingEvent) -> Result<Option<Change>, BarrierError> {
        let Some(bound) = self.bound_ring else {
            // The initial ring: no change yet, the first confchg will be ours.
            self.bound_ring = Some(ev.ring);
            self.current = Generation::ring_start(ev.ring);
            return Ok(None);
        };
        if ev.ring < bound {
            return Err(BarrierError::RingWentBack);
        }
        if ev.ring == bound {
            return Ok(None);
        }
        let pending = self.pending.take().unwrap_or_default();
        let mut members = if pending.members.is_empty() && pending.left.is_empty() {
            // No confchg for our group: membership unchanged.
            self.members.clone()
        } else {
            pending.members
        };
        gcs::normalize(&mut members);
        self.bound_ring = Some(ev.ring);
        self.current = Generation::ring_start(ev.ring);
        self.anchored = true;
        self.members = members.clone();
        Ok(Some(Change {
            generation: self.current,
            anchored: true,
            members,
            joined: pending.joined,
            left: pending.left,
        }))
    }

    pub fn on_confchg(&mut self, cc: &Confchg) -> Result<Option<Change>, BarrierError> {
        if self.bound_ring.is_none() {
            return Err(BarrierError::NoRingYet);
        }
        let ring_level = !cc.is_process_level() || self.pending.is_some();
        if ring_level {
            let p = self.pending.get_or_insert_with(Confchg::default);
            p.members = cc.members.clone();
            merge_entries(&mut p.joined, &cc.joined)?;
            merge_entries(&mut p.left, &cc.left)?;
            return Ok(None);
        }
        let mut members = cc.members.clone();
        gcs::normalize(&mut members);
        // A member list that drops us without a left entry breaks the
        // transport contract: refuse it rather than lose our place.
        if self.members.contains(&self.me) && !members.contains(&self.me) && !cc.left.iter().any(|m| m.node == self.me)
        {
            return Err(BarrierError::DroppedSelf);
        }
        // Our first appearance in the member list is our join (whatever the
        // entry lists say): only it starts the local numbering.
        let first_join = !self.joined_once && members.contains(&self.me);
        if first_join {
            // Our own join. If we are alone we founded the group in this
            // ring and our numbering is the group's; otherwise we count our
            // own events until an anchored member tells us the offset.
            // (Before our join the epoch is 0 in this ring, so this is
            // epoch 1; never a step back whatever came before.)
            self.anchored = self.anchored || members.len() == 1;
            self.joined_once = true;
            self.current = self.current.next_epoch();
        } else {
            self.current = self.current.next_epoch();
        }
        self.members = members.clone();
        Ok(Some(Change {
            generation: self.current,
            anchored: self.anchored,
            members,
            joined: cc.joined.clone(),
            left: cc.left.clone(),
        }))
    }
}

fn merge_entries(into: &mut ReasonList, from: &ReasonList) -> Result<(), BarrierError> {
    for e in from.iter() {
        if let Some(existing) = into.iter_mut().find(|x| x.node == e.node) {
            *existing = MemberReason { node: e.node, reason: e.reason };
        } else {
            into.push(*e).map_err(|_| BarrierError::TooManyEntries)?;
        }
    }
    Ok(())
}
