//! Every scenario under `tests/scenarios/` must pass (all expectations and
//! every invariant), with a few seeds each. Runs in the debug profile, so
//! the core's `debug_assert!` invariants are on (a panic is a P7 violation).

use std::path::PathBuf;

fn scenario_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_scenario_passes_with_several_seeds() {
    let files = scenario_files();
    assert!(files.len() >= 15, "expected at least 15 scenarios, found {}", files.len());
    let mut failures = Vec::new();
    for f in &files {
        for seed in [1u64, 2, 3] {
            match cohort_sim::scenario::run_file(f.to_str().expect("utf-8 path"), seed, false) {
                Ok(r) => {
                    for n in r.notes.iter().filter(|n| n.starts_with("known core bug")) {
                        println!("{} seed {seed}: {n}", f.display());
                    }
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    assert!(failures.is_empty(), "{} scenario run(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn parse_errors_name_the_line() {
    let e = cohort_sim::scenario::run_text("inline", "nodes 3\n# fine\nmount fs1 1 2 sideways\n", 1, false)
        .err()
        .expect("bad mode must fail");
    assert_eq!(e.line, 3, "{e}");
    let e =
        cohort_sim::scenario::run_text("inline", "nodes 3\nfrobnicate 2\n", 1, false).err().expect("unknown command");
    assert_eq!(e.line, 2);
    assert!(e.msg.contains("unknown command"), "{e}");
}

#[test]
fn a_failed_expectation_names_file_line_and_difference() {
    let text =
        "nodes 3\nset net_delay_ms 1\nset jitter_ms 0\nmount fs1 1 2 3\nrun-until-stable\nexpect members fs1 1 2\n";
    let e = cohort_sim::scenario::run_text("inline.txt", text, 1, false).err().expect("wrong members must fail");
    assert_eq!(e.line, 6);
    assert!(e.to_string().starts_with("inline.txt:6:"), "{e}");
    assert!(e.msg.contains("expected {1, 2}, got {1, 2, 3}"), "{e}");
}

#[test]
fn udp_model_forms_one_view_and_mounts() {
    let text = "nodes 3\nmodel udp\ndrop 10%\ndup 5%\nreorder on\nmount fs1 1 2 3\nrun-until-stable\nexpect members fs1 1 2 3\nexpect mounted fs1 1 2 3\nexpect stable\n";
    let r = cohort_sim::scenario::run_text("udp.txt", text, 1, false).unwrap_or_else(|e| panic!("{e}"));
    assert!(r.notes.is_empty(), "the udp model uses the network knobs: {:?}", r.notes);
}

#[test]
fn one_way_cut_needs_the_udp_model() {
    let e = cohort_sim::scenario::run_text("cut.txt", "nodes 3\ncut 3>1\n", 1, false).err().expect("corosync");
    assert_eq!(e.line, 2);
    assert!(e.msg.contains("needs model udp"), "{e}");
    let e = cohort_sim::scenario::run_text("cut.txt", "nodes 3\nmodel udp\ncut 3\n", 1, false).err().expect("syntax");
    assert!(e.msg.contains("cut A>B"), "{e}");
}

#[test]
fn network_knobs_are_accepted_under_corosync() {
    let text = "nodes 3\ndrop 20%\ndup 5%\nreorder on\ndelay 1ms..50ms\nmount fs1 1 2 3\nrun-until-stable\nexpect members fs1 1 2 3\n";
    let r = cohort_sim::scenario::run_text("knobs.txt", text, 1, false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.notes.len(), 3, "{:?}", r.notes);
}
