//! CI bound of the udp explorer (`cohort-sim check --model udp`): the
//! view-change protocol of three real `Vs` transports under loss,
//! duplication and reordering of its datagrams, with liveness at the
//! leaves. Larger bounds: tests/README.md, BENCHMARKS.md.

use cohort_sim::explore_vs::{self, Choice, Options};

#[test]
fn vs_view_change_small_scope() {
    let o = Options { depth: 5, ..Options::default() };
    let r = explore_vs::check(&o);
    for c in &r.counterexamples {
        println!("{}", c.render());
    }
    println!(
        "{} transitions, {} distinct states, {} leaves, {} view installs, {:.1}s",
        r.explored, r.distinct, r.leaves, r.views, r.secs
    );
    assert!(r.counterexamples.is_empty());
    assert!(!r.truncated);
    assert!(r.distinct > 100, "{} distinct states", r.distinct);
    assert!(r.views > 0, "some view change completed");
    assert_eq!(r.max_depth, 5);
}

#[test]
fn partition_and_crash_triggers() {
    // Deeper without sends: crash and partition view changes complete and
    // every leaf converges.
    let o = Options { depth: 7, msgs: 0, ..Options::default() };
    let r = explore_vs::check(&o);
    for c in &r.counterexamples {
        println!("{}", c.render());
    }
    assert!(r.counterexamples.is_empty());
    assert!(r.views > 0);
}

#[test]
fn replay_of_the_planted_bug_path_is_clean() {
    // The first steps of the path `broken-vs-flush` fails on (tests/broken_vs.rs):
    // with the real flush nothing is violated.
    let o = Options::default();
    let steps = [Choice::Send(1), Choice::Crash(1), Choice::Tick, Choice::Tick];
    assert_eq!(explore_vs::replay(&o, &steps), None);
}
