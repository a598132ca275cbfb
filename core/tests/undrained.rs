//! A host may call `handle` several times before it drains (the
//! Backpressure contract and the C ABI allow it). Nothing queued for a
//! group or a request may be lost or land on another one when an input in
//! between removes a group or a request (issue 19: descriptors are keyed by
//! group id, not by a position that shifts).

mod common;

use cohort_core::node::{Input, Request};
use cohort_core::wire::{fs_name, Mode};
use cohort_core::{Instant, NodeId};
use common::Cluster;

/// Deliver everything on the bus to every running node, `undrained` taking
/// all of it before it is drained once.
fn deliver_all(c: &mut Cluster, undrained: u32) {
    let msgs: Vec<(u32, Vec<u8>)> = c.bus.drain(..).collect();
    let now = Instant(c.now);
    for (from, bytes) in &msgs {
        for m in c.running() {
            let n = c.nodes[m as usize].as_mut().unwrap();
            n.handle(now, Input::Deliver { from: NodeId(*from), bytes }).unwrap();
            if m != undrained {
                c.drain(m);
            }
        }
    }
}

fn synced_groups(c: &Cluster, i: u32) -> Vec<(String, bool)> {
    c.node(i).status().groups.iter().map(|g| (g.fs.as_str().to_owned(), g.synced && !g.blocked)).collect()
}

#[test]
fn a_start_queued_before_an_earlier_group_left_still_goes_out() {
    let mut c = Cluster::new(2);
    c.mount("a", &[1, 2], Mode::Rw);
    c.pump();
    c.mount("b", &[1, 2], Mode::Rw);
    c.pump();
    assert!(c.all_stable(), "{}", c.status_dump());
    // x is held before y in node 1's table.
    let order = synced_groups(&c, 1);
    let (x, y) = (order[0].0.clone(), order[1].0.clone());
    // Node 2 leaves y, then node 1 leaves x, in that agreed order. Node 1
    // takes both before draining: y's change queues its START, then x's
    // removal moves y to x's place.
    c.request(2, Request::Unmount { fs: fs_name(&y).unwrap() });
    c.drain(2);
    c.request(1, Request::Unmount { fs: fs_name(&x).unwrap() });
    c.drain(1);
    assert_eq!(c.bus.len(), 2);
    deliver_all(&mut c, 1);
    c.pump();
    assert_eq!(synced_groups(&c, 1), vec![(y, true)], "{}", c.status_dump());
    assert_eq!(synced_groups(&c, 2), vec![(x, true)], "{}", c.status_dump());
    assert!(c.all_stable(), "{}", c.status_dump());
}

#[test]
fn a_request_queued_behind_one_that_was_applied_still_goes_out() {
    let mut c = Cluster::new(2);
    c.mount("a", &[1, 2], Mode::Rw);
    c.mount("b", &[1, 2], Mode::Rw);
    c.pump();
    assert!(c.all_stable(), "{}", c.status_dump());
    // Node 1 asks to unmount a; that request is sent and agreed. Before
    // node 1 drains its delivery, it asks to unmount b: the second request
    // must go out once the first is done, whatever the position it had.
    c.request(1, Request::Unmount { fs: fs_name("a").unwrap() });
    c.drain(1);
    let msgs: Vec<(u32, Vec<u8>)> = c.bus.drain(..).collect();
    let now = Instant(c.now);
    c.nodes[1].as_mut().unwrap().handle(now, Input::Request(Request::Unmount { fs: fs_name("b").unwrap() })).unwrap();
    for (from, bytes) in &msgs {
        for m in c.running() {
            c.nodes[m as usize].as_mut().unwrap().handle(now, Input::Deliver { from: NodeId(*from), bytes }).unwrap();
        }
    }
    c.pump();
    assert!(synced_groups(&c, 1).is_empty(), "node 1 left both: {}", c.status_dump());
    assert!(c.all_stable(), "{}", c.status_dump());
}
