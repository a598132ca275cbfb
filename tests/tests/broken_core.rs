//! The checkers bite: built with `--features broken-core` the core skips
//! its stale-merge verdict (`cohort-core/broken-skip-merge-check`), and the
//! stale-merge scenarios must then fail an invariant (no stale merge, or the
//! journal/recovery properties), never pass.
//!
//! Run: `cargo test -p cohort-sim --features broken-core --test broken_core`
//! (compiled only with that feature; `cargo test --workspace` skips it).
//! The same by hand, exiting non-zero:
//! `cargo run -p cohort-sim --features broken-core -- scenario tests/scenarios/07-partition-heal-stale-reset.txt`

use cohort_sim::scenario::must_violate;
use cohort_sim::Property;

fn must_fail(file: &str) {
    for seed in 1..=3 {
        must_violate(
            file,
            seed,
            &[Property::NoStaleMerge, Property::JournalExclusivity, Property::RecoveryBeforeReuse],
        );
    }
}

#[test]
fn partition_heal_stale_node_is_caught() {
    must_fail("07-partition-heal-stale-reset.txt");
}

#[test]
fn paused_stale_node_is_caught() {
    must_fail("18-pause-resume-stale.txt");
}

#[test]
fn even_split_merge_is_caught() {
    must_fail("08-even-split-merge.txt");
}

#[test]
fn three_way_merge_is_caught() {
    must_fail("09-three-way-merge.txt");
}

#[test]
fn the_binary_exits_non_zero() {
    let exe = env!("CARGO_BIN_EXE_cohort-sim");
    let path = format!("{}/scenarios/07-partition-heal-stale-reset.txt", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(exe).args(["scenario", &path]).output().expect("run cohort-sim");
    assert!(!out.status.success(), "cohort-sim exited 0:\n{}", String::from_utf8_lossy(&out.stdout));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("P4 no stale merge"), "{stdout}");
}

/// The exhaustive explorer finds it too: two nodes (two_node), fs1
/// mounted, a split whose fence fails, then the merge (6,096 distinct
/// states in release, BENCHMARKS.md "Verification").
#[test]
fn the_explorer_finds_the_stale_merge() {
    use cohort_sim::explore::{check, Options};
    let o = Options { kernel_faults: true, ..Options::mounted_pair(2, 10) };
    let r = check(&o);
    let c = r.counterexamples.first().unwrap_or_else(|| panic!("not found in {} distinct states", r.distinct));
    assert!(
        matches!(
            c.violation.property,
            Property::NoStaleMerge | Property::JournalExclusivity | Property::RecoveryBeforeReuse
        ),
        "{}",
        c.render()
    );
    println!("{} after {} distinct states", c.violation, r.distinct);
}
