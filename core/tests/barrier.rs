//! The barrier on hand-made transport streams: quorum reports of an older
//! ring never replace a newer one; process-level confchgs after our join
//! are changes, and only one that drops us without a left entry is
//! refused. Written against mutants that survived cargo-mutants (issue 17).

use cohort_core::barrier::{Barrier, BarrierError};
use cohort_core::gcs::{Confchg, MemberReason, NodeList, QuorumEvent, Reason, RingEvent};
use cohort_core::ids::{Generation, NodeId};

fn list(v: &[u32]) -> NodeList {
    let mut l = NodeList::new();
    for n in v {
        l.push(NodeId(*n)).unwrap();
    }
    l
}

fn cc(members: &[u32], joined: &[(u32, Reason)], left: &[(u32, Reason)]) -> Confchg {
    let mut c = Confchg { members: list(members), ..Default::default() };
    for (n, r) in joined {
        c.joined.push(MemberReason { node: NodeId(*n), reason: *r }).unwrap();
    }
    for (n, r) in left {
        c.left.push(MemberReason { node: NodeId(*n), reason: *r }).unwrap();
    }
    c
}

#[test]
fn an_older_rings_quorum_report_does_not_replace_a_newer_one() {
    let mut b = Barrier::new(NodeId(1));
    b.on_quorum(&QuorumEvent { ring: 12, quorate: true, members: list(&[1, 2]) });
    b.on_quorum(&QuorumEvent { ring: 8, quorate: false, members: list(&[1]) });
    assert_eq!(b.quorum(), Some((12, true)));
    assert_eq!(b.quorate_at(12), Some(true));
    assert_eq!(b.quorate_at(8), None);
    b.on_quorum(&QuorumEvent { ring: 16, quorate: false, members: list(&[1]) });
    assert_eq!(b.quorum(), Some((16, false)));
}

#[test]
fn process_level_confchgs_after_our_join_are_the_next_epochs() {
    let mut b = Barrier::new(NodeId(1));
    assert_eq!(b.on_ring(&RingEvent { ring: 8, members: list(&[1, 2, 3]) }), Ok(None));
    let c = b.on_confchg(&cc(&[1], &[(1, Reason::Join)], &[])).unwrap().expect("our join");
    assert_eq!(c.generation, Generation { ring: 8, epoch: 1 });
    let c = b.on_confchg(&cc(&[1, 2], &[(2, Reason::Join)], &[])).unwrap().expect("2 joins");
    assert_eq!(c.generation, Generation { ring: 8, epoch: 2 });
    assert_eq!(c.members, list(&[1, 2]));
    let c = b.on_confchg(&cc(&[1], &[], &[(2, Reason::ProcDown)])).unwrap().expect("2 leaves");
    assert_eq!(c.generation, Generation { ring: 8, epoch: 3 });
    // Dropping us without a left entry for us breaks the contract.
    assert_eq!(b.on_confchg(&cc(&[2], &[(2, Reason::Join)], &[])), Err(BarrierError::DroppedSelf));
    // With one, it is our leave.
    let c = b.on_confchg(&cc(&[], &[], &[(1, Reason::Leave)])).unwrap().expect("we leave");
    assert_eq!(c.generation, Generation { ring: 8, epoch: 4 });
    assert_eq!(b.members(), &list(&[]));
}

#[test]
fn a_mid_ring_joiner_stays_unanchored_when_the_others_leave() {
    let mut b = Barrier::new(NodeId(1));
    b.on_ring(&RingEvent { ring: 8, members: list(&[1, 2]) }).unwrap();
    // We join a group that already runs in this ring: our epoch is local.
    let c = b.on_confchg(&cc(&[1, 2], &[(1, Reason::Join)], &[])).unwrap().expect("our join");
    assert!(!c.anchored);
    // Being left alone later does not tell us the group's numbering.
    let c = b.on_confchg(&cc(&[1], &[], &[(2, Reason::ProcDown)])).unwrap().expect("2 leaves");
    assert!(!c.anchored);
    assert!(!b.anchored());
    // Founding the group alone does.
    let mut b = Barrier::new(NodeId(1));
    b.on_ring(&RingEvent { ring: 8, members: list(&[1]) }).unwrap();
    assert!(b.on_confchg(&cc(&[1], &[(1, Reason::Join)], &[])).unwrap().expect("join").anchored);
}

#[test]
fn ring_releases_says_whether_the_ring_event_makes_a_change() {
    let mut b = Barrier::new(NodeId(1));
    let ring = |r: u64| RingEvent { ring: r, members: list(&[1, 2]) };
    // The initial ring binds the barrier, it releases nothing.
    assert!(!b.ring_releases(&ring(8)));
    assert_eq!(b.on_ring(&ring(8)), Ok(None));
    b.on_confchg(&cc(&[1, 2], &[(1, Reason::Join), (2, Reason::Join)], &[])).unwrap();
    // The same ring again, or an older one: no change.
    for r in [4, 8] {
        assert!(!b.ring_releases(&ring(r)), "ring {r}");
    }
    assert_eq!(b.on_ring(&ring(8)), Ok(None));
    // A newer ring releases one, whether a confchg preceded it or not.
    b.on_confchg(&cc(&[1], &[], &[(2, Reason::NodeDown)])).unwrap();
    assert!(b.ring_releases(&ring(12)));
    assert!(b.on_ring(&ring(12)).unwrap().is_some());
    assert!(!b.ring_releases(&ring(12)));
    assert!(b.ring_releases(&ring(16)));
    assert!(b.on_ring(&ring(16)).unwrap().is_some());
}

/// A joiner takes an absolute numbering only of its own ring and never
/// below its own count (issue 17: `ring != current.ring || absolute <
/// current` -> `&&` in `anchor` survived: every offer in the tests was of
/// the joiner's ring and ahead of it).
#[test]
fn anchor_refuses_another_rings_numbering_and_going_back() {
    let joined = || {
        let mut b = Barrier::new(NodeId(1));
        b.on_ring(&RingEvent { ring: 8, members: list(&[1, 2]) }).unwrap();
        b.on_confchg(&cc(&[1, 2], &[(1, Reason::Join)], &[])).unwrap().expect("our join");
        b.on_confchg(&cc(&[1, 2, 3], &[(3, Reason::Join)], &[])).unwrap().expect("3 joins");
        assert_eq!(b.current(), Generation { ring: 8, epoch: 2 });
        assert!(!b.anchored());
        b
    };
    // Another ring, ahead or behind: refused, nothing changes.
    for g in [Generation { ring: 12, epoch: 5 }, Generation { ring: 4, epoch: 1 }] {
        let mut b = joined();
        assert!(!b.anchor(g), "{g:?}");
        assert_eq!((b.current(), b.anchored()), (Generation { ring: 8, epoch: 2 }, false), "{g:?}");
    }
    // Our ring, below our own count: refused.
    let mut b = joined();
    assert!(!b.anchor(Generation { ring: 8, epoch: 1 }));
    assert!(!b.anchored());
    // Our ring, at or above it: taken.
    let mut b = joined();
    assert!(b.anchor(Generation { ring: 8, epoch: 2 }));
    assert!(b.anchored());
    let mut b = joined();
    assert!(b.anchor(Generation { ring: 8, epoch: 7 }));
    assert_eq!((b.current(), b.anchored()), (Generation { ring: 8, epoch: 7 }, true));
}
