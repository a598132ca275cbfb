//! Same seed, same run: identical trace hash (every event, every message
//! byte). Different seeds give different runs.

#[test]
fn same_swarm_seed_twice_gives_the_same_trace_hash() {
    for seed in [0u64, 7, 42, 1234] {
        let a = cohort_sim::swarm::run_seed(seed, (3, 7), false);
        let b = cohort_sim::swarm::run_seed(seed, (3, 7), false);
        assert!(a.events > 100, "seed {seed} did nothing");
        assert_eq!(a.hash, b.hash, "seed {seed}: two runs differ");
        assert_eq!(a.events, b.events);
        assert_eq!(a.steps, b.steps);
    }
}

#[test]
fn same_udp_swarm_seed_twice_gives_the_same_trace_hash() {
    // Loss, duplication, reordering and delays all come from the seed.
    let opts = cohort_sim::swarm::Options { model: cohort_sim::world::Model::Udp, ..Default::default() };
    for seed in [9u64, 14] {
        let a = cohort_sim::swarm::run_seed_with(seed, (3, 4), false, opts);
        let b = cohort_sim::swarm::run_seed_with(seed, (3, 4), false, opts);
        assert!(a.events > 1000, "seed {seed} did nothing");
        assert_eq!(a.hash, b.hash, "seed {seed}: two udp runs differ");
        assert_eq!((a.events, a.steps), (b.events, b.steps));
    }
}

#[test]
fn an_emitted_udp_swarm_plan_replays_identically() {
    // Command times count from the end of the boot phase in both, so the
    // network's randomness lines up: the same events, the same hash.
    let opts = cohort_sim::swarm::Options { model: cohort_sim::world::Model::Udp, ..Default::default() };
    let seed = 7;
    let p = cohort_sim::swarm::plan_with(seed, (3, 4), opts);
    let text = p.to_scenario();
    assert!(text.contains("model udp"), "{text}");
    let direct = cohort_sim::swarm::run_plan(&p, false);
    match cohort_sim::scenario::run_text("emitted", &text, seed, false) {
        Ok(r) => {
            assert!(matches!(direct.outcome, cohort_sim::swarm::Outcome::Ok), "{:?}", direct.outcome);
            assert_eq!((r.events, r.trace_hash), (direct.events, direct.hash), "{text}");
        }
        Err(e) => assert!(!matches!(direct.outcome, cohort_sim::swarm::Outcome::Ok), "replay failed alone: {e}"),
    }
}

#[test]
fn different_seeds_give_different_runs() {
    let hashes: std::collections::BTreeSet<u64> =
        (0..8u64).map(|s| cohort_sim::swarm::run_seed(s, (3, 7), false).hash).collect();
    assert_eq!(hashes.len(), 8);
}

#[test]
fn scenario_replay_is_deterministic_and_seed_sensitive() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/07-partition-heal-stale-reset.txt");
    let a = cohort_sim::scenario::run_file(path, 5, false).unwrap_or_else(|e| panic!("{e}"));
    let b = cohort_sim::scenario::run_file(path, 5, false).unwrap_or_else(|e| panic!("{e}"));
    let c = cohort_sim::scenario::run_file(path, 6, false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_ne!(a.trace_hash, c.trace_hash);
}

#[test]
fn an_emitted_swarm_plan_replays_as_a_scenario() {
    // The swarm's program printed as a scenario file and run through the
    // scenario runner is the same run (same hash up to the liveness poll).
    let seed = 11;
    let p = cohort_sim::swarm::plan(seed, (3, 5));
    let text = p.to_scenario();
    let direct = cohort_sim::swarm::run_plan(&p, false);
    let replay = cohort_sim::scenario::run_text("emitted", &text, seed, false);
    match (&direct.outcome, replay) {
        (cohort_sim::swarm::Outcome::Ok, Ok(r)) => assert_eq!(r.events, direct.events, "{text}"),
        (o, r) => {
            // Failing seeds must fail the same way when replayed.
            assert!(
                !matches!(o, cohort_sim::swarm::Outcome::Ok) && r.is_err(),
                "direct {o:?}, replay ok={}",
                r.is_ok()
            );
        }
    }
}

/// Fold the trace hashes of `seeds` (FNV-1a over the per-seed hashes).
fn folded_hashes(model: cohort_sim::world::Model, seeds: std::ops::Range<u64>) -> u64 {
    let opts = cohort_sim::swarm::Options { model, ..Default::default() };
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for seed in seeds {
        h = (h ^ cohort_sim::swarm::run_seed_with(seed, (3, 7), false, opts).hash).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Pinned: a change that means to keep behaviour keeps these; one that
/// changes it on purpose updates them and says why in its commit (issue 19).
#[test]
fn trace_hashes_of_a_small_fixed_seed_set_are_pinned() {
    use cohort_sim::world::Model;
    assert_eq!(format!("{:016x}", folded_hashes(Model::Corosync, 1..41)), PINNED_COROSYNC);
    assert_eq!(format!("{:016x}", folded_hashes(Model::Udp, 1..4)), PINNED_UDP);
}

const PINNED_COROSYNC: &str = "b9f586479425c728";
const PINNED_UDP: &str = "1c27e482b617e1e6";

/// The trace hashes of a fixed seed set, folded into one line per model:
/// a refactoring that means to change nothing keeps both lines equal
/// (`cargo test --release -p cohort-sim --test determinism -- --ignored
/// --nocapture trace_hashes`).
#[test]
#[ignore]
fn trace_hashes_of_a_fixed_seed_set() {
    for (name, model, seeds) in
        [("corosync", cohort_sim::world::Model::Corosync, 1..301u64), ("udp", cohort_sim::world::Model::Udp, 1..41u64)]
    {
        println!("trace hashes {name} seeds {seeds:?}: {:016x}", folded_hashes(model, seeds.clone()));
    }
}
