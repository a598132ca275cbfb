//! Edge cases of message application that the flows and the simulator do
//! not reach: replayed, forged and misaddressed messages, and the counters
//! that say what became of every delivered one. Written against mutants
//! that survived cargo-mutants (issue 17, BENCHMARKS.md "Mutation testing").

mod common;
use cohort_core::node::Request;
use cohort_core::wire::{self, fs_name, Message, Mode, MsgKind};
use cohort_core::{Incarnation, NodeId};
use common::Cluster;

fn mounted(n: u32) -> Cluster {
    let mut c = Cluster::new(n);
    let all: Vec<u32> = (1..=n).collect();
    c.mount("fs1", &all, Mode::Rw);
    c.pump();
    assert!(c.all_stable(), "{}", c.status_dump());
    c
}

/// Let node `i` send what it has queued and take its first message of kind
/// `kind` off the bus (undelivered).
fn take(c: &mut Cluster, i: u32, kind: MsgKind) -> Vec<u8> {
    c.drain(i);
    let pos = c
        .bus
        .iter()
        .position(|(f, b)| *f == i && wire::decode(b).map(|m| m.header.kind) == Ok(kind))
        .unwrap_or_else(|| panic!("node {i} sent no {kind:?}: {:?}", c.log));
    c.bus.remove(pos).expect("present").1
}

/// Re-stamp a message with node `at`'s current generation and view.
fn restamp(c: &Cluster, at: u32, mut m: Message) -> Vec<u8> {
    let g = c.node(at).generation();
    m.header.generation = g;
    m.header.view = g.ring;
    let mut buf = [0u8; wire::MAX_MESSAGE];
    let n = wire::encode(&m, &mut buf).expect("encodes");
    buf[..n].to_vec()
}

fn fs1() -> wire::FsName {
    fs_name("fs1").unwrap()
}

#[test]
fn every_delivered_message_is_counted_by_what_became_of_it() {
    let mut c = mounted(3);
    let s0 = c.node(1).stats();

    // Garbage: a wire error, not a delivery.
    c.inject(2, &[0xde, 0xad, 0xbe, 0xef]);
    let s = c.node(1).stats();
    assert_eq!((s.wire_errors, s.delivered), (s0.wire_errors + 1, s0.delivered), "{s:?}");

    // A valid message delivered as another node's: a wire error too.
    c.request(2, Request::Unmount { fs: fs1() });
    let unmount = take(&mut c, 2, MsgKind::Unmount);
    c.inject(3, &unmount);
    let s = c.node(1).stats();
    assert_eq!((s.wire_errors, s.delivered), (s0.wire_errors + 2, s0.delivered), "{s:?}");

    // Delivered properly: delivered and applied.
    c.inject(2, &unmount);
    let s = c.node(1).stats();
    assert_eq!((s.delivered, s.applied), (s0.delivered + 1, s0.applied + 1), "{s:?}");
    assert_eq!(c.jids("fs1", 1), vec![(1, Some(0)), (3, Some(2))]);

    // Replayed: its generation is gone (the unmount bumped the epoch).
    c.inject(2, &unmount);
    let s = c.node(1).stats();
    assert_eq!((s.delivered, s.applied), (s0.delivered + 2, s0.applied + 1), "{s:?}");
    assert_eq!(s.dropped_old_generation, s0.dropped_old_generation + 1, "{s:?}");
    assert_eq!(s.dropped_other, s0.dropped_other, "{s:?}");

    // Re-stamped with the current generation: node 2 is no member any more.
    let m = wire::decode(&unmount).unwrap();
    let again = restamp(&c, 1, m.clone());
    c.inject(2, &again);
    let s = c.node(1).stats();
    assert_eq!(s.dropped_other, s0.dropped_other + 1, "{s:?}");
    assert_eq!(s.dropped_old_generation, s0.dropped_old_generation + 1, "{s:?}");

    // Sent in another view: dropped as such.
    let mut other = m.clone();
    other.header.generation = c.node(1).generation();
    other.header.view = c.node(1).generation().ring + 4;
    let mut buf = [0u8; wire::MAX_MESSAGE];
    let n = wire::encode(&other, &mut buf).unwrap();
    c.inject(2, &buf[..n]);
    let s = c.node(1).stats();
    assert_eq!(s.dropped_other_view, s0.dropped_other_view + 1, "{s:?}");
    assert_eq!(s.dropped_other, s0.dropped_other + 1, "{s:?}");

    // From an older incarnation of a member: a stale sender, and the
    // adapter is told.
    let mut old = m;
    old.header.sender.inc = Incarnation(0);
    let old = restamp(&c, 1, old);
    let before = c.log.len();
    c.inject(2, &old);
    c.drain(1);
    let s = c.node(1).stats();
    assert_eq!(s.dropped_stale_sender, s0.dropped_stale_sender + 1, "{s:?}");
    assert_eq!(s.dropped_other, s0.dropped_other + 1, "{s:?}");
    assert!(c.log[before..].iter().any(|l| l.starts_with("1:") && l.contains("Dropped")), "{:?}", &c.log[before..]);
    assert_eq!(s.applied, s0.applied + 1);
    assert_eq!(c.node(1).me().node, NodeId(1));
}
