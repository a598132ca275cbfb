//! Property 8 (blocked during recovery) bites: built with `--features
//! broken-block` the core neither blocks kernels nor holds mounts back while
//! a journal awaits replay, and the recovery scenarios must then fail it.
//!
//! Run: `cargo test -p cohort-sim --features broken-block --test broken_block`.

use cohort_sim::scenario::must_violate;
use cohort_sim::Property;

#[test]
fn a_survivor_that_keeps_running_is_caught() {
    must_violate("02-node-failure-fence-recovery.txt", 1, &[Property::BlockedDuringRecovery]);
}

#[test]
fn a_mount_during_recovery_is_caught() {
    must_violate("29-mount-during-recovery.txt", 1, &[Property::BlockedDuringRecovery]);
}

/// The exhaustive explorer finds it within a few states: two nodes
/// (two_node), fs1 mounted, one crash.
#[test]
fn the_explorer_finds_the_unblocked_survivor() {
    use cohort_sim::explore::{check, Options};
    let o = Options::mounted_pair(1, 6);
    let r = check(&o);
    let c = r.counterexamples.first().unwrap_or_else(|| panic!("not found in {} distinct states", r.distinct));
    assert_eq!(c.violation.property, Property::BlockedDuringRecovery, "{}", c.render());
    println!("{} after {} distinct states", c.violation, r.distinct);
}
