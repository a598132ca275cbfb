//! Proof that the core does not allocate: a counting global allocator wraps
//! the system one and counts, per thread, every allocation made while a
//! measured closure runs.
//!
//! This file is its own test binary, so the allocator only sees this file's
//! tests. Counting is thread-local, so the test harness (or another test
//! thread) allocating at the same time never shows up in a measurement.
//!
//! To add a scenario: build its inputs outside `count_allocs`, drive the core
//! inside it, and assert the count is 0.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use cohort_core::gcs::{self, Confchg, MemberReason, NodeList, Reason};
use cohort_core::ids::{Generation, GroupId, NodeId};

struct CountingAlloc;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc() {
    // `try_with`: never panic inside the allocator, even while a thread's
    // locals are being torn down.
    let counting = COUNTING.try_with(Cell::get).unwrap_or(false);
    if counting {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: every method forwards to `System` unchanged; the bookkeeping only
// touches const-initialized thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Runs `f` and returns its result with the number of allocations
/// (`alloc`, `alloc_zeroed` and `realloc` calls) it made on this thread.
fn count_allocs<R>(f: impl FnOnce() -> R) -> (R, usize) {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, COUNT.with(Cell::get))
}

#[test]
fn counting_allocator_counts() {
    let (v, n) = count_allocs(|| black_box(Vec::<u64>::with_capacity(10)));
    assert!(n >= 1, "the counting allocator saw no allocation for a Vec");
    drop(v);
    let ((), n) = count_allocs(|| {
        black_box(1u32 + 1);
    });
    assert_eq!(n, 0);
}

#[test]
fn core_vocabulary_does_not_allocate() {
    // Inputs are prepared outside the measured section.
    // At most 8 valid ids (the appliance profile's MAX_NODES) before dedup.
    let raw: Vec<u32> = vec![7, 3, 3, 0, 12, 1, 31, 5, 2];
    let fs_names = ["fs1", "gfs2-home", "", "a-much-longer-filesystem-name"];

    let (out, n) = count_allocs(|| {
        let mut list = NodeList::new();
        for &r in black_box(&raw) {
            let id = NodeId(r);
            if id.is_valid() {
                list.push(id).unwrap();
            }
        }
        gcs::normalize(&mut list);
        assert!(gcs::insert_sorted(&mut list, NodeId(4)));
        assert!(gcs::insert_sorted(&mut list, NodeId(4)));
        assert!(gcs::remove_sorted(&mut list, NodeId(31)));

        // Fill to capacity: the bounded list must refuse, not grow.
        let mut full = NodeList::new();
        for i in 1..=gcs::MAX_NODES as u32 {
            assert!(gcs::insert_sorted(&mut full, NodeId(i)));
        }
        assert!(!gcs::insert_sorted(&mut full, NodeId(1000)));

        let mut groups = [GroupId::DAEMON; 4];
        for (g, name) in groups.iter_mut().zip(black_box(fs_names)) {
            *g = GroupId::of_fs(name);
        }

        let generation = Generation::ring_start(black_box(42)).next_epoch();
        let mut cc = Confchg { members: list.clone(), ..Confchg::default() };
        cc.joined.push(MemberReason { node: NodeId(4), reason: Reason::Join }).unwrap();
        cc.left.push(MemberReason { node: NodeId(31), reason: Reason::from_u8(5).unwrap() }).unwrap();
        let process_level = cc.is_process_level();
        (list, groups, generation, process_level)
    });
    assert_eq!(n, 0, "the core allocated {n} times");

    let (list, groups, generation, process_level) = out;
    let ids: Vec<u32> = list.iter().map(|n| n.0).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 7, 12]);
    assert!(groups.iter().all(|g| *g != GroupId::DAEMON));
    assert_eq!(generation, Generation { ring: 42, epoch: 1 });
    assert!(process_level);
}

mod common;

fn probe(on: bool) {
    COUNTING.with(|c| c.set(on));
}

/// A full scenario through real nodes: three daemons join, all mount, one
/// node dies, is fenced, its journal is recovered, it restarts with a new
/// incarnation and mounts again. Only the calls into the nodes are counted.
#[test]
fn full_scenario_allocates_nothing_in_the_core() {
    use cohort_core::node::Request;
    use cohort_core::wire::{fs_name, Mode};
    COUNT.with(|c| c.set(0));
    let mut c = common::Cluster::new(3);
    c.probe = probe;
    c.mount("fs1", &[1, 2, 3], Mode::Rw);
    c.pump();
    c.crash(3);
    c.pump();
    c.start(3, 2);
    c.pump();
    c.request(3, Request::Mount { fs: fs_name("fs1").unwrap(), mode: Mode::Rw, journals: 8 });
    c.pump();
    assert!(c.all_stable());
    assert_eq!(c.jids("fs1", 1).len(), 3);
    let n = COUNT.with(|c| c.get());
    assert_eq!(n, 0, "the core allocated {n} times");
}

#[test]
fn size_of_default_node_is_reported_and_small() {
    let size = std::mem::size_of::<cohort_core::Node>();
    let profile = cohort_core::profile::NAME;
    println!("size_of::<cohort_core::Node>() = {size} bytes (profile {profile})");
    // The goals per capacity profile (BENCHMARKS.md, "Footprint").
    let goal = if profile == "appliance" { 24 * 1024 } else { 64 * 1024 };
    assert!(size <= goal, "Node is {size} bytes, over the {goal}-byte goal of the {profile} profile");
}
