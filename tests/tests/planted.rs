//! The explorer bites: with `--features planted` the core carries bugs
//! selectable at run time (`cohort_core::planted`), and `cohort-sim check`
//! must find each within a small bound, by the simulator's properties (the
//! core's own assertions are off while a bug is planted). Each
//! counterexample also replays as a scenario file to the same violation.
//!
//! Run: `cargo test -p cohort-sim --features planted --test planted`.
//! By hand: `cohort-sim check --plant SkipFenceWait --nodes 2 --two-node --mounted --no-ops --no-kernel-faults --faults 1 --depth 12`.

use cohort_core::planted::{plant, Bug};
use cohort_sim::explore::{check, Options};
use cohort_sim::Property;

fn opts(bug: Bug) -> (Options, Property) {
    let d = Options::default();
    match bug {
        Bug::JidOffByOne => (Options { nodes: 3, faults: 0, depth: 8, ..d }, Property::JournalExclusivity),
        Bug::NoGenerationCheck => (Options { nodes: 3, faults: 1, depth: 8, ..d }, Property::JournalExclusivity),
        Bug::SkipFenceWait => (Options::mounted_pair(1, 12), Property::RecoveryBeforeReuse),
        Bug::NoUnblock => (Options::mounted_pair(1, 6), Property::Liveness),
    }
}

/// One test: the planted bug is process-wide.
#[test]
fn every_planted_bug_is_found_and_replays() {
    for bug in Bug::ALL {
        let (o, want) = opts(bug);
        plant(Some(bug));
        let r = check(&o);
        plant(None);
        let c = r
            .counterexamples
            .first()
            .unwrap_or_else(|| panic!("{bug:?} not found: {} distinct states, depth {}", r.distinct, r.max_depth));
        assert_eq!(c.violation.property, want, "{bug:?}: {}", c.render());
        println!(
            "{bug:?}: {} after {} transitions, {} distinct states, {:.2}s ({} steps)",
            c.violation.property.name(),
            r.explored,
            r.distinct,
            r.secs,
            c.steps.len()
        );
        // The counterexample as a scenario file fails the same way with the
        // bug, and passes without it.
        let text = c.render();
        plant(Some(bug));
        let e = cohort_sim::scenario::run_text("cex.txt", &text, 1, false).err();
        plant(None);
        let v = e.and_then(|e| e.violation.clone()).unwrap_or_else(|| panic!("{bug:?}: replay did not fail:\n{text}"));
        assert_eq!(v.property, want, "{bug:?} replay: {v}");
        // Without the bug the same steps break no property (a step may be
        // refused: the model differs once the core behaves).
        if let Err(e) = cohort_sim::scenario::run_text("cex.txt", &text, 1, false) {
            assert!(e.violation.is_none(), "{bug:?}: the step list violates without the bug too: {e}");
        }
    }
}
