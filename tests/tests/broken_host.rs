//! Property 9 (the unmount contract) bites: built with `--features
//! broken-host` the simulated host passes an operator's early leave to the
//! daemon although the kernel still has the filesystem, and the checker
//! must catch the clean leave.
//!
//! Run: `cargo test -p cohort-sim --features broken-host --test broken_host`.

use cohort_sim::Property;

#[test]
fn an_early_leave_is_caught() {
    let path = format!("{}/scenarios/31-unmount-early-refused.txt", env!("CARGO_MANIFEST_DIR"));
    let e = match cohort_sim::scenario::run_file(&path, 1, false) {
        Ok(_) => panic!("the early leave passed: property 9 does not bite"),
        Err(e) => e,
    };
    let v = e.violation.as_ref().unwrap_or_else(|| panic!("failed without a violation: {e}"));
    assert_eq!(v.property, Property::UnmountContract, "{e}");
    println!("{v}");
}
