//! Turning an installed view into the [`crate::gcs`] event vocabulary.
//!
//! Every view installation is stored as one compact [`Record`] and expanded
//! lazily, one event per [`super::Vs::poll_event`] call, in this fixed order:
//!
//! 1. `Confchg` with the `left` members whose reason is process-level
//!    (`Leave`, `ProcDown`): these happened inside the old ring;
//! 2. `Confchg` with the `left` members lost by failure (`NodeDown`);
//! 3. `Confchg` with the `joined` members coming from another partition
//!    (`NodeUp`);
//! 4. `Ring` of the new view (always, even when nothing above was emitted);
//! 5. `Quorum` of the new view;
//! 6. `Confchg` with the `joined` fresh processes (`Join`): a process join
//!    happens inside the new ring.
//!
//! A fresh process (one never in a view with others since it started) that
//! joins an existing group sees, like a process joining a corosync CPG, only
//! the ring event and then one `Join` confchg whose members are the whole
//! new view ([`Record::install_for`]); the others see the same `Join`. So
//! both count the same epochs in the new ring.
//!
//! Empty confchgs are skipped. Each confchg's `members` is the daemon group
//! after applying that confchg, starting from the old view's members, so the
//! lists always chain. The order is what [`crate::gcs`] asks of a transport
//! (ring-level confchgs, then the ring event; process-level changes inside a
//! ring) and what corosync does for a node booting on its own (ring event,
//! then its own join). It also keeps generations agreed: every member of the
//! new view that came from the same old view emits the same confchgs before
//! the ring event, and every member emits the same `Join` confchg after it,
//! because all reasons are decided by the coordinator (see [`super::view`]).

use super::wire::MemberList;
use super::VsEvent;
use crate::gcs::{self, Confchg, MemberReason, NodeList, QuorumEvent, Reason, ReasonList, RingEvent, MAX_NODES};
use crate::ids::{Member, NodeId};
use cohort_types::bounded::PushBounded;

/// How many installed-but-unpolled views may be buffered. A further install
/// waits (locally) until the application polls.
pub(super) const EVENT_RECORDS: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    node: NodeId,
    reason: Reason,
    joined: bool,
}

/// One view installation (or our own leave), expanded stage by stage.
#[derive(Clone, Debug)]
pub(super) struct Record {
    view_id: u64,
    quorate: bool,
    /// Daemon-group members as of the last emitted confchg.
    cur: NodeList,
    /// Members of the new view.
    ring: NodeList,
    entries: heapless::Vec<Entry, { 2 * MAX_NODES }>,
    stage: u8,
    /// Our own leave: one confchg, no ring or quorum event.
    self_leave: bool,
}

fn nodes_of(l: &MemberList) -> NodeList {
    let mut n = NodeList::new();
    for m in l {
        n.push_bounded(m.node);
    }
    n
}

fn bit(mask: u32, i: usize) -> bool {
    i < 32 && mask & (1u32 << i) != 0
}

impl Record {
    /// The view change `old` -> `new`. `fresh_mask` flags members of `new`
    /// that are fresh processes, `leaver_mask` members of `old` that left
    /// cleanly.
    #[cfg(test)]
    pub fn install(
        old: &MemberList,
        new: &MemberList,
        view_id: u64,
        quorate: bool,
        fresh_mask: u32,
        leaver_mask: u32,
    ) -> Record {
        // Without a transitional set: whoever is in both lists moved with us.
        let mut trans_mask = 0u32;
        for (i, m) in new.iter().enumerate() {
            if old.contains(m) && i < 32 {
                trans_mask |= 1 << i;
            }
        }
        Record::install_for(None, old, new, view_id, quorate, fresh_mask, leaver_mask, trans_mask)
    }

    /// As [`Record::install`], seen by `me`. A fresh process (`me` flagged
    /// in `fresh_mask`) joins the existing group the way a process joins a
    /// corosync CPG: the ring event, then one `Join` confchg whose members
    /// are the whole new view. It must not see the group's old members as
    /// `NodeUp` (a merge) while they see it as a `Join`: both sides must
    /// count the same epochs in the new ring.
    ///
    /// `trans_mask` flags the members of `new` that come from our old view
    /// (our transitional set, EVS). Everybody else left our partition and
    /// joins it again now, even if it is in `old` too (it went through
    /// another view, or missed the INSTALL of ours): the members moving
    /// together see the same confchgs before the ring event, and every
    /// member sees every fresh process `Join` after it.
    #[allow(clippy::too_many_arguments)]
    pub fn install_for(
        me: Option<NodeId>,
        old: &MemberList,
        new: &MemberList,
        view_id: u64,
        quorate: bool,
        fresh_mask: u32,
        leaver_mask: u32,
        trans_mask: u32,
    ) -> Record {
        let fresh_me = me.is_some_and(|me| new.iter().enumerate().any(|(i, m)| m.node == me && bit(fresh_mask, i)));
        if fresh_me {
            let mut entries = heapless::Vec::new();
            let mut cur = NodeList::new();
            for (i, m) in new.iter().enumerate() {
                if bit(fresh_mask, i) {
                    entries.push_bounded(Entry { node: m.node, reason: Reason::Join, joined: true });
                } else {
                    cur.push_bounded(m.node);
                }
            }
            return Record { view_id, quorate, cur, ring: nodes_of(new), entries, stage: 0, self_leave: false };
        }
        let trans = |m: &Member| new.iter().position(|x| x == m).is_some_and(|i| bit(trans_mask, i));
        let mut entries = heapless::Vec::new();
        for (i, m) in old.iter().enumerate() {
            if trans(m) {
                continue;
            }
            let reason = if bit(leaver_mask, i) {
                Reason::Leave
            } else if new.iter().any(|n| n.node == m.node && n.inc != m.inc) {
                Reason::ProcDown
            } else {
                Reason::NodeDown
            };
            entries.push_bounded(Entry { node: m.node, reason, joined: false });
        }
        for (i, m) in new.iter().enumerate() {
            if bit(trans_mask, i) && !bit(fresh_mask, i) {
                continue;
            }
            let reason = if bit(fresh_mask, i) { Reason::Join } else { Reason::NodeUp };
            entries.push_bounded(Entry { node: m.node, reason, joined: true });
        }
        Record { view_id, quorate, cur: nodes_of(old), ring: nodes_of(new), entries, stage: 0, self_leave: false }
    }

    /// The first, singleton view of a new process: ring, quorum, own join.
    pub fn initial(me: NodeId, view_id: u64, quorate: bool) -> Record {
        let mut ring = NodeList::new();
        ring.push_bounded(me);
        let mut entries = heapless::Vec::new();
        entries.push_bounded(Entry { node: me, reason: Reason::Join, joined: true });
        Record { view_id, quorate, cur: NodeList::new(), ring, entries, stage: 0, self_leave: false }
    }

    /// Our own clean leave, as seen by ourselves.
    pub fn self_leave(view: &MemberList, me: NodeId) -> Record {
        let mut entries = heapless::Vec::new();
        entries.push_bounded(Entry { node: me, reason: Reason::Leave, joined: false });
        Record {
            view_id: 0,
            quorate: false,
            cur: nodes_of(view),
            ring: NodeList::new(),
            entries,
            stage: 0,
            self_leave: true,
        }
    }

    fn confchg(&mut self, joined: bool, pick: impl Fn(Reason) -> bool) -> Option<VsEvent> {
        let mut list = ReasonList::new();
        for e in self.entries.iter().filter(|e| e.joined == joined && pick(e.reason)) {
            list.push_bounded(MemberReason { node: e.node, reason: e.reason });
            if joined {
                gcs::insert_sorted(&mut self.cur, e.node);
            } else {
                gcs::remove_sorted(&mut self.cur, e.node);
            }
        }
        if list.is_empty() {
            return None;
        }
        let (joined, left) = if joined { (list, ReasonList::new()) } else { (ReasonList::new(), list) };
        Some(VsEvent::Confchg(Confchg { members: self.cur.clone(), joined, left }))
    }

    /// The next event of this record, or None when it is exhausted.
    pub fn step(&mut self) -> Option<VsEvent> {
        if self.self_leave {
            if self.stage > 0 {
                return None;
            }
            self.stage = 1;
            return self.confchg(false, |_| true);
        }
        while self.stage < 6 {
            let stage = self.stage;
            self.stage += 1;
            let ev = match stage {
                0 => self.confchg(false, |r| matches!(r, Reason::Leave | Reason::ProcDown)),
                1 => self.confchg(false, |r| r == Reason::NodeDown),
                2 => self.confchg(true, |r| r == Reason::NodeUp),
                3 => Some(VsEvent::Ring(RingEvent { ring: self.view_id, members: self.ring.clone() })),
                4 => Some(VsEvent::Quorum(QuorumEvent {
                    ring: self.view_id,
                    quorate: self.quorate,
                    members: self.ring.clone(),
                })),
                _ => self.confchg(true, |r| r == Reason::Join),
            };
            if ev.is_some() {
                return ev;
            }
        }
        None
    }
}

/// FIFO of installed-but-unpolled views.
#[cfg_attr(feature = "explore", derive(Clone))]
pub(super) struct EventQueue {
    q: heapless::Deque<Record, EVENT_RECORDS>,
}

impl EventQueue {
    pub const fn new() -> Self {
        EventQueue { q: heapless::Deque::new() }
    }

    pub fn has_room(&self) -> bool {
        !self.q.is_full()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Queue a record; false (nothing queued) when full.
    pub fn push(&mut self, r: Record) -> bool {
        self.q.push_back(r).is_ok()
    }

    /// Next event from the oldest record.
    pub fn next_event(&mut self) -> Option<VsEvent> {
        loop {
            let front = self.q.front_mut()?;
            if let Some(ev) = front.step() {
                return Some(ev);
            }
            self.q.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::ids::{Incarnation, Member};

    fn ml(v: &[(u32, u64)]) -> MemberList {
        let mut l = MemberList::new();
        for &(n, i) in v {
            l.push(Member { node: NodeId(n), inc: Incarnation(i) }).unwrap();
        }
        l
    }

    fn drain(r: Record) -> std::vec::Vec<VsEvent> {
        let mut q = EventQueue::new();
        assert!(q.push(r));
        let mut v = std::vec::Vec::new();
        while let Some(e) = q.next_event() {
            v.push(e);
        }
        assert!(q.is_empty());
        v
    }

    fn mr(n: u32, reason: Reason) -> MemberReason {
        MemberReason { node: NodeId(n), reason }
    }

    fn nl(v: &[u32]) -> NodeList {
        v.iter().map(|&n| NodeId(n)).collect()
    }

    #[test]
    fn initial_is_ring_then_join() {
        let ev = drain(Record::initial(NodeId(3), 7, true));
        assert_eq!(ev.len(), 3);
        assert!(matches!(&ev[0], VsEvent::Ring(r) if r.ring == 7 && r.members == nl(&[3])));
        assert!(matches!(&ev[1], VsEvent::Quorum(q) if q.quorate));
        match &ev[2] {
            VsEvent::Confchg(c) => {
                assert_eq!(c.members, nl(&[3]));
                assert_eq!(c.joined.as_slice(), &[mr(3, Reason::Join)]);
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn full_change_order_and_member_chain() {
        // Old: 1,2,3(inc1),4,5. New: 1,3(inc2),6(fresh),7(merge).
        // 2 left cleanly, 4 and 5 failed, 3 restarted.
        let old = ml(&[(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]);
        let new = ml(&[(1, 1), (3, 2), (6, 1), (7, 1)]);
        let fresh = 0b0110; // new[1] = 3(inc2), new[2] = 6
        let leavers = 0b0010; // old[1] = 2
        let ev = drain(Record::install(&old, &new, 99, false, fresh, leavers));
        let kinds: std::vec::Vec<_> = ev
            .iter()
            .map(|e| match e {
                VsEvent::Confchg(c) => (0, c.members.clone(), c.joined.clone(), c.left.clone()),
                VsEvent::Ring(r) => (1, r.members.clone(), ReasonList::new(), ReasonList::new()),
                VsEvent::Quorum(q) => (2, q.members.clone(), ReasonList::new(), ReasonList::new()),
                VsEvent::Deliver { .. } => unreachable!(),
            })
            .collect();
        let rl = |v: &[MemberReason]| -> ReasonList { v.iter().copied().collect() };
        assert_eq!(
            kinds,
            std::vec![
                (0, nl(&[1, 4, 5]), rl(&[]), rl(&[mr(2, Reason::Leave), mr(3, Reason::ProcDown)])),
                (0, nl(&[1]), rl(&[]), rl(&[mr(4, Reason::NodeDown), mr(5, Reason::NodeDown)])),
                (0, nl(&[1, 7]), rl(&[mr(7, Reason::NodeUp)]), rl(&[])),
                (1, nl(&[1, 3, 6, 7]), rl(&[]), rl(&[])),
                (2, nl(&[1, 3, 6, 7]), rl(&[]), rl(&[])),
                (0, nl(&[1, 3, 6, 7]), rl(&[mr(3, Reason::Join), mr(6, Reason::Join)]), rl(&[])),
            ]
        );
    }

    #[test]
    fn unchanged_membership_still_has_ring() {
        let m = ml(&[(1, 1), (2, 1)]);
        let ev = drain(Record::install(&m, &m, 5, true, 0, 0));
        assert_eq!(ev.len(), 2);
        assert!(matches!(ev[0], VsEvent::Ring(_)));
    }

    /// A whole cluster swapped at once (every other member of a full old
    /// view lost, a full new view of other nodes merged in): each of the 62
    /// departures and arrivals is reported (issue 17: a record holding
    /// `2 + MAX_NODES` entries instead of `2 * MAX_NODES` survived; no test
    /// changed more than a few members at once).
    #[test]
    fn a_full_view_swapped_for_another_reports_every_member() {
        let old: std::vec::Vec<(u32, u64)> = (1..=MAX_NODES as u32).map(|n| (n, 1)).collect();
        let new: std::vec::Vec<(u32, u64)> =
            core::iter::once((1, 1)).chain((1..MAX_NODES as u32).map(|k| (100 + k, 1))).collect();
        let ev = drain(Record::install(&ml(&old), &ml(&new), 40, true, 0, 0));
        let (mut down, mut up) = (0, 0);
        for e in &ev {
            if let VsEvent::Confchg(c) = e {
                down += c.left.iter().filter(|m| m.reason == Reason::NodeDown).count();
                up += c.joined.iter().filter(|m| m.reason == Reason::NodeUp).count();
            }
        }
        assert_eq!((down, up), (MAX_NODES - 1, MAX_NODES - 1));
        let last_members = ev.iter().rev().find_map(|e| match e {
            VsEvent::Confchg(c) => Some(c.members.clone()),
            _ => None,
        });
        assert_eq!(last_members, Some(nodes_of(&ml(&new))));
    }

    #[test]
    fn self_leave_is_one_confchg() {
        let ev = drain(Record::self_leave(&ml(&[(1, 1), (2, 1)]), NodeId(2)));
        assert_eq!(ev.len(), 1);
        match &ev[0] {
            VsEvent::Confchg(c) => {
                assert_eq!(c.members, nl(&[1]));
                assert_eq!(c.left.as_slice(), &[mr(2, Reason::Leave)]);
            }
            e => panic!("{e:?}"),
        }
    }
}
