//! Driver for instruction counts: `valgrind --tool=callgrind
//! --toggle-collect='cohort_bench::measure*' target/release/cohort-bench
//! <scenario>` counts only the measured part. Without valgrind it prints
//! wall-clock times (a rough figure; BENCHMARKS.md uses criterion for time).

use cohort_bench::*;
use std::hint::black_box;
use std::time::Instant as T;

#[inline(never)]
fn measure_deliver(node: &mut cohort_core::Node, bytes: &[u8], out: &mut [u8], n: usize) -> usize {
    let mut k = 0;
    for _ in 0..n {
        k += deliver_once(node, black_box(bytes), out);
    }
    k
}

#[inline(never)]
fn measure_change(c: &mut common::Cluster) {
    big_group_change(c);
}

#[inline(never)]
fn measure_merge(c: &mut common::Cluster) {
    resolve_merge(c);
}

fn main() {
    // With COHORT_BENCH_SETUP_ONLY=1 the measured part is skipped: the
    // difference between two callgrind runs is the cost of the measured part
    // alone (bench/run does this).
    let skip = std::env::var_os("COHORT_BENCH_SETUP_ONLY").is_some();
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let iters: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    if what == "deliver" || what == "all" {
        let (mut c, bytes) = delivered_message_setup();
        let mut out = vec![0u8; cohort_core::wire::MAX_MESSAGE];
        let node = c.nodes[1].as_mut().expect("node 1");
        let n = iters.max(1) * 1000;
        let t = T::now();
        if !skip {
            black_box(measure_deliver(node, &bytes, &mut out, n));
        }
        println!("deliver: {n} messages, {:.1} ns/message", t.elapsed().as_nanos() as f64 / n as f64);
    }
    if what == "change" || what == "all" {
        for _ in 0..iters {
            let mut c = big_group();
            let t = T::now();
            if !skip {
                measure_change(&mut c);
            }
            println!("change32: {:.1} us (all 32 nodes, incl. test driver)", t.elapsed().as_nanos() as f64 / 1e3);
        }
    }
    if what == "merge" || what == "all" {
        for _ in 0..iters {
            let mut c = four_partitions();
            let t = T::now();
            if !skip {
                measure_merge(&mut c);
            }
            println!("merge4x8: {:.1} us (all 32 nodes, incl. test driver)", t.elapsed().as_nanos() as f64 / 1e3);
        }
    }
}
