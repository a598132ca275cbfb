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
