//! Link check: proves that `cohort-core` builds and links for a bare-metal
//! target with **no global allocator**.
//!
//! This crate is a `staticlib` for `thumbv7em-none-eabihf` with a
//! `#[panic_handler]` and no `#[global_allocator]`. If anything in
//! `cohort-core` (or one of its dependencies) pulls in the `alloc` crate, the
//! build fails. `.ci/run` builds it in release and prints the `.text` +
//! `.rodata` size of the result.
//!
//! `cohort_link_check` is exported unmangled so that LTO keeps the core code
//! it reaches alive; its inputs are function arguments so nothing is
//! constant-folded away.
#![no_std]

use cohort_core::gcs::{self, Confchg, MemberReason, NodeList, Reason};
use cohort_core::ids::{Generation, GroupId, NodeId};

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// Builds a node list from `nodes` (any order, duplicates allowed), a
/// confchg, a generation and a mount-group id from `fs_name`, and folds them
/// into one value so none of it is optimized out.
#[no_mangle]
pub extern "C" fn cohort_link_check(nodes: &[u32; 8], ring: u64, fs_name: &[u8; 16]) -> u32 {
    let mut list = NodeList::new();
    for &n in nodes {
        let id = NodeId(n);
        if id.is_valid() {
            // Insert unsorted, then normalize, then insert sorted again.
            let _ = list.push(id);
        }
    }
    gcs::normalize(&mut list);
    let _ = gcs::insert_sorted(&mut list, NodeId(nodes[0] | 1));
    let _ = gcs::remove_sorted(&mut list, NodeId(nodes[1]));

    let generation = Generation::ring_start(ring).next_epoch();
    let mut cc = Confchg { members: list.clone(), ..Confchg::default() };
    if let Some(reason) = Reason::from_u8(nodes[2] as u8) {
        let _ = cc.joined.push(MemberReason { node: NodeId(nodes[3]), reason });
    }
    let process_level = cc.is_process_level();

    let name = match core::str::from_utf8(fs_name) {
        Ok(s) => s.trim_end_matches('\0'),
        Err(_) => "",
    };
    let group = GroupId::of_fs(name);

    let mut acc = group.0 ^ (generation.ring as u32) ^ generation.epoch;
    for n in &list {
        acc = acc.rotate_left(5) ^ n.0;
    }
    acc ^ u32::from(process_level) ^ (cc.joined.len() as u32)
}

/// Drives a whole `Node` through one delivered message, one timer and a
/// status snapshot, so the link check (and its size figure) covers the
/// full state machine, not only the vocabulary types.
#[no_mangle]
pub extern "C" fn cohort_link_drive(node: u32, msg: &[u8; 512], out: &mut [u8; 4096]) -> u32 {
    use cohort_core::node::{Input, TimerToken};
    use cohort_core::{Config, Incarnation, Instant, Node};
    let mut n = Node::new(Config::new(NodeId(node | 1), Incarnation(1)));
    let _ = n.handle(Instant(1), Input::Ring(gcs::RingEvent { ring: 1, members: NodeList::new() }));
    let _ = n.handle(Instant(2), Input::Deliver { from: NodeId(msg[0] as u32), bytes: &msg[..] });
    let _ = n.handle(Instant(3), Input::Timer(TimerToken(u64::from(msg[1]))));
    let mut acc = 0u32;
    while let Some(_e) = n.poll_effect() {
        acc += 1;
    }
    while let Some(len) = n.poll_transmit(&mut out[..]) {
        acc = acc.wrapping_add(len as u32);
    }
    acc.wrapping_add(n.status().generation.epoch)
}

/// Drives a `Vs` (the datagram transport, crate `cohort-vs`) through one
/// received datagram and one timeout, and drains what it produces: proves
/// the transport, its AEAD included, links without an allocator too
/// (feature `vs`; `.ci/run` builds it after measuring the core alone).
#[cfg(feature = "vs")]
#[no_mangle]
pub extern "C" fn cohort_link_vs(node: u32, key: &[u8; 32], dgram: &[u8; 1400], out: &mut [u8; 1500]) -> u32 {
    use cohort_core::{Incarnation, Instant};
    use cohort_vs::{Vs, VsConfig};
    let mut nodes = NodeList::new();
    for n in 1..=3u32 {
        let _ = nodes.push(NodeId(n));
    }
    let Ok(mut vs) = Vs::new(VsConfig::new(NodeId(node % 3 + 1), Incarnation(1), nodes, *key)) else {
        return 0;
    };
    let _ = vs.handle_datagram(Instant(1), None, &dgram[..]);
    vs.handle_timeout(Instant(2));
    let mut acc = 0u32;
    while let Some(t) = vs.poll_transmit(&mut out[..]) {
        acc = acc.wrapping_add(t.len as u32);
    }
    let mut payload = [0u8; 64];
    while vs.poll_event(&mut payload).is_some() {
        acc = acc.wrapping_add(1);
    }
    acc
}
