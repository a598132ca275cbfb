use cohort_bench::*;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::hint::black_box;

fn deliver(c: &mut Criterion) {
    let (mut cl, bytes) = delivered_message_setup();
    let mut out = vec![0u8; cohort_core::wire::MAX_MESSAGE];
    let node = cl.nodes[1].as_mut().expect("node 1");
    c.bench_function("decode+handle one delivered message", |b| {
        b.iter(|| deliver_once(node, black_box(&bytes), &mut out))
    });
}

fn change(c: &mut Criterion) {
    let mut g = c.benchmark_group("32-member change");
    g.sample_size(20);
    g.bench_function("unmount -> all STARTs -> synced (32 nodes)", |b| {
        b.iter_batched(big_group, |mut cl| big_group_change(&mut cl), BatchSize::LargeInput)
    });
    g.finish();
}

fn merge(c: &mut Criterion) {
    let mut g = c.benchmark_group("merge");
    g.sample_size(10);
    g.bench_function("4 partitions x 8 nodes resolved", |b| {
        b.iter_batched(four_partitions, |mut cl| resolve_merge(&mut cl), BatchSize::LargeInput)
    });
    g.finish();
}

criterion_group!(benches, deliver, change, merge);
criterion_main!(benches);
