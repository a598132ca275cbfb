//! Property 8 (blocked during recovery) bites: built with `--features
//! broken-block` the core neither blocks kernels nor holds mounts back while
//! a journal awaits replay, and the recovery scenarios must then fail it.
//!
//! Run: `cargo test -p cohort-sim --features broken-block --test broken_block`.

use cohort_sim::Property;

fn must_fail_p8(file: &str) {
    let path = format!("{}/scenarios/{file}", env!("CARGO_MANIFEST_DIR"));
    let e = match cohort_sim::scenario::run_file(&path, 1, false) {
        Ok(_) => panic!("{file} passed without blocking: property 8 does not bite"),
        Err(e) => e,
    };
    let v = e.violation.as_ref().unwrap_or_else(|| panic!("{file} failed without a violation: {e}"));
    assert_eq!(v.property, Property::BlockedDuringRecovery, "{file}: {e}");
    println!("{file}: {v}");
}

#[test]
fn a_survivor_that_keeps_running_is_caught() {
    must_fail_p8("02-node-failure-fence-recovery.txt");
}

#[test]
fn a_mount_during_recovery_is_caught() {
    must_fail_p8("29-mount-during-recovery.txt");
}
