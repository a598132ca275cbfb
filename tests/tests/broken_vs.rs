//! The udp explorer bites: with the core's test-only `broken-vs-flush`
//! (a member frozen by a proposal keeps delivering past the freeze point it
//! reported), `cohort-sim check --model udp` must find a virtual-synchrony
//! violation within its small default bounds.
//!
//! `cargo test -p cohort-sim --features broken-vs-flush --test broken_vs`

use cohort_sim::explore_vs::{self, Options, Replay};

#[test]
fn explorer_catches_a_flush_without_freeze() {
    let o = Options { depth: 10, liveness: false, ..Options::default() };
    let r = explore_vs::check(&o);
    let c = r.counterexamples.first().expect("the planted flush bug must be found within depth 10");
    println!("{}", c.render());
    println!("found after {} transitions, {} distinct states, {:.1}s", r.explored, r.distinct, r.secs);
    assert!(c.violation.contains("delivered"), "a virtual-synchrony violation: {}", c.violation);
    assert!(c.steps.len() <= 10);
    // The step list is a repro.
    let steps: Vec<_> = c.steps.iter().map(|(s, _)| s.clone()).collect();
    assert_eq!(explore_vs::replay(&o, &steps), Replay::Violation(c.violation.clone()));
}
