//! CI bound of the udp explorer (`cohort-sim check --model udp`): the
//! view-change protocol of three real `Vs` transports under loss,
//! duplication and reordering of its datagrams, with liveness at the
//! leaves. Larger bounds: tests/README.md, BENCHMARKS.md.

use cohort_sim::explore_vs::{self, Choice, Dg, Options, Replay};

fn run(o: &Options) -> explore_vs::Report {
    let r = explore_vs::check(o);
    for c in &r.counterexamples {
        println!("{}", c.render());
    }
    println!(
        "{o:?}: {} transitions, {} distinct states, {} leaves, {} view installs, {:.1}s",
        r.explored, r.distinct, r.leaves, r.views, r.secs
    );
    assert!(r.counterexamples.is_empty());
    assert!(!r.truncated);
    assert!(r.views > 0, "some view change completed");
    r
}

#[test]
fn vs_view_change_small_scope() {
    // Safety only (the liveness runs are slow in a debug build).
    let r = run(&Options { depth: 5, liveness: false, ..Options::default() });
    assert!(r.distinct > 1000, "{} distinct states", r.distinct);
    assert_eq!(r.max_depth, 5);
}

#[test]
fn vs_view_change_converges_from_every_leaf() {
    let r = run(&Options { depth: 4, ..Options::default() });
    assert!(r.leaves > 100, "{} leaves", r.leaves);
    assert!(r.settle_ms_max > 0);
}

#[test]
fn replay_of_the_planted_bug_path_is_clean() {
    // The counterexample `broken-vs-flush` gives (tests/broken_vs.rs): 1
    // sends, 1 crashes with its SEQ in flight, 2 proposes {2, 3}, 3 freezes
    // and only then gets the SEQ. With the real flush 3 holds it back, the
    // view change completes and nothing is violated.
    let dg = |from, to, hash| Dg { from, to, hash };
    let steps = [
        Choice::Send(1),
        Choice::Crash(1),
        Choice::Tick,
        Choice::Tick,
        Choice::Deliver(dg(2, 3, 9117437749825847279)),
        Choice::Deliver(dg(1, 3, 10156743053075394335)),
        Choice::Deliver(dg(3, 2, 3339889600391101296)),
        Choice::Deliver(dg(2, 3, 399736230254397340)),
        Choice::Deliver(dg(3, 2, 13686317632729039440)),
        Choice::Deliver(dg(2, 3, 6603670773663969544)),
    ];
    assert_eq!(explore_vs::replay(&Options::default(), &steps), Replay::Clean);
}
