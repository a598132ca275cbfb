//! Property 9 (the unmount contract) bites: built with `--features
//! broken-host` the simulated host passes an operator's early leave to the
//! daemon although the kernel still has the filesystem, and the checker
//! must catch the clean leave.
//!
//! Run: `cargo test -p cohort-sim --features broken-host --test broken_host`.

use cohort_sim::scenario::must_violate;
use cohort_sim::Property;

#[test]
fn an_early_leave_is_caught() {
    must_violate("31-unmount-early-refused.txt", 1, &[Property::UnmountContract]);
}

/// The explorer finds it too, from the booted cluster, within 12 steps.
#[test]
fn the_explorer_finds_an_early_leave() {
    use cohort_sim::explore::{check, Options};
    let o = Options { nodes: 3, faults: 0, depth: 12, early_unmount: false, ..Options::default() };
    let r = check(&o);
    let c = r.counterexamples.first().expect("the explorer must find the early leave");
    assert_eq!(c.violation.property, Property::UnmountContract, "{}", c.render());
}
