//! Benchmark scenarios over real `Node`s, shared by the criterion benches
//! and the callgrind driver (`cohort-bench`).
//!
//! The cluster driver is the core's own test driver (corosync-like
//! partitions, in-order delivery, auto-answering kernel and fence device).

#[path = "../../core/tests/common/mod.rs"]
pub mod common;

use cohort_core::node::{Input, Request};
use cohort_core::wire::{self, fs_name, Body, Mode};
use cohort_core::{Instant, Node, NodeId};
use common::Cluster;

/// A 3-node cluster with fs1 mounted everywhere, plus one encoded message
/// (node 2's MountDone for the current generation) that node 1 applies
/// identically every time: the decode + validate + apply hot path.
pub fn delivered_message_setup() -> (Cluster, Vec<u8>) {
    let mut c = Cluster::new(3);
    c.mount("fs1", &[1, 2, 3], Mode::Rw);
    c.pump();
    assert!(c.all_stable());
    let st = c.node(1).status();
    let g = st.group("fs1").expect("fs1");
    let msg = wire::Message {
        header: wire::Header {
            kind: wire::MsgKind::MountDone,
            sender: cohort_core::Member { node: NodeId(2), inc: cohort_core::Incarnation(1) },
            generation: g.generation,
            group: g.group,
            view: c.node(1).generation().ring,
        },
        body: Body::MountDone { ok: true },
    };
    let mut buf = [0u8; wire::MAX_MESSAGE];
    let n = wire::encode(&msg, &mut buf).expect("encode");
    (c, buf[..n].to_vec())
}

/// Deliver `bytes` from node 2 to `node` and drain its output.
pub fn deliver_once(node: &mut Node, bytes: &[u8], out: &mut [u8]) -> usize {
    node.handle(Instant(1), Input::Deliver { from: NodeId(2), bytes }).expect("handle");
    let mut k = 0;
    while node.poll_effect().is_some() {
        k += 1;
    }
    while node.poll_transmit(out).is_some() {
        k += 1;
    }
    k
}

/// 32 nodes with fs1 mounted by all of them.
pub fn big_group() -> Cluster {
    let mut c = Cluster::new(32);
    let all: Vec<u32> = (1..=32).collect();
    c.mount_with("fs1", &all, Mode::Rw, 32);
    c.pump();
    assert!(c.all_stable(), "{}", c.status_dump());
    c
}

/// One full 32-member mount-group change: node 32 unmounts cleanly; every
/// member sends START, every member syncs (all nodes together).
pub fn big_group_change(c: &mut Cluster) {
    c.request(32, Request::Unmount { fs: fs_name("fs1").expect("name") });
    c.pump();
    debug_assert_eq!(c.jids("fs1", 1).len(), 31);
}

/// 32 nodes with state, split into four partitions of eight.
pub fn four_partitions() -> Cluster {
    let mut c = big_group();
    c.fence_hold = true;
    let p: Vec<Vec<u32>> = (0..4).map(|k| ((k * 8 + 1)..=(k * 8 + 8)).collect()).collect();
    let refs: Vec<&[u32]> = p.iter().map(|v| v.as_slice()).collect();
    c.partition(&refs);
    c
}

/// Heal the four partitions: one merge, one verdict, 24 resets.
pub fn resolve_merge(c: &mut Cluster) {
    c.heal();
    debug_assert_eq!(c.reset.len(), 24);
}
