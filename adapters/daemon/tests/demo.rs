//! `cohortd demo` end to end: in-process (the library) and as the binary,
//! with the simulated transport and over UDP on loopback.

use std::time::{Duration, Instant};

use cohortd::demo::Demo;

#[test]
fn demo_story_runs_and_ends_in_the_expected_state() {
    let t = Instant::now();
    let report = Demo::new(false).run().unwrap_or_else(|(e, timeline)| panic!("{timeline}\ndemo failed: {e}"));
    assert!(t.elapsed() < Duration::from_secs(20), "demo took {:?}", t.elapsed());
    let tl = &report.timeline;
    let has = |s: &str| tl.lines().any(|l| l.contains(s));
    // node 1 was the first mounter, jids 0, 1, 2 in node order
    assert!(has("n1 gen 8.4     kernel       fs1: mount as FIRST MOUNTER with journal 0"), "{tl}");
    assert!(has("n2 gen 8.5     kernel       fs1: mount with journal 1"), "{tl}");
    assert!(has("n3 gen 8.6     kernel       fs1: mount with journal 2"), "{tl}");
    // node 3's power loss: fenced, then its journal replayed
    let fenced = tl.find("node 3 (incarnation 1) fenced").expect("node 3 fenced");
    let recovered = tl.find("fs1: recover journal 2").expect("journal 2 recovered");
    assert!(fenced < recovered, "recovery before fencing:\n{tl}");
    // node 2's stateful merge: stale, reset, restarted with incarnation 2
    assert!(has("n2 gen 24.0    notice       STALE MERGE: node 2"), "{tl}");
    assert!(has("node 2: cohortd exits with code 75 (reset)"), "{tl}");
    assert!(has("node 2: cohortd starts (incarnation 2)"), "{tl}");
    assert!(has("fs1: journal 1 recovered"), "{tl}");
    assert!(tl.contains("demo OK"), "{tl}");
    assert_eq!(report.final_status.len(), 3);
    for s in &report.final_status {
        let g = &s.groups[0];
        let jids: Vec<(u32, Option<u16>)> = g.members.iter().map(|m| (m.node, m.jid)).collect();
        assert_eq!(jids, vec![(1, Some(0)), (2, Some(1)), (3, Some(2))], "node {}", s.node);
    }
}

#[test]
fn demo_binary_prints_a_timeline_and_exits_zero() {
    let t = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cohortd")).arg("demo").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().last().unwrap().starts_with("demo OK"), "{stdout}");
    assert!(stdout.contains("STALE MERGE"));
    assert!(t.elapsed() < Duration::from_secs(30));
}

/// `cohortd demo --transport udp`: the same story over real UDP sockets on
/// loopback, in real time (about 5 s; every step has a 30 s timeout).
#[test]
fn udp_demo_story_runs_over_loopback_and_ends_in_the_expected_state() {
    let t = Instant::now();
    let demo = cohortd::demo::udp::UdpDemo::new(false).expect("demo sockets");
    let report = demo.run().unwrap_or_else(|(e, timeline)| panic!("{timeline}\nudp demo failed: {e}"));
    let took = t.elapsed();
    println!("udp demo: {took:?}");
    assert!(took < Duration::from_secs(60), "udp demo took {took:?}");
    let tl = &report.timeline;
    let has = |s: &str| tl.lines().any(|l| l.contains(s));
    assert!(has("n1 gen ") && has("fs1: mount as FIRST MOUNTER with journal 0"), "{tl}");
    assert!(has("n2 gen ") && has("fs1: mount with journal 1"), "{tl}");
    assert!(has("n3 gen ") && has("fs1: mount with journal 2"), "{tl}");
    // generations are printed as view seq.epoch
    assert!(tl.lines().any(|l| l.contains(" n1 gen 3.")), "{tl}");
    let fenced = tl.find("node 3 (incarnation 1) fenced").expect("node 3 fenced");
    let recovered = tl.find("fs1: recover journal 2").expect("journal 2 recovered");
    assert!(fenced < recovered, "recovery before fencing:\n{tl}");
    assert!(has("fence agent FAILED for node 2 (incarnation 1)"), "{tl}");
    assert!(has("STALE MERGE: node 2"), "{tl}");
    assert!(has("node 2: cohortd exits with code 75 (reset)"), "{tl}");
    assert!(has("node 2: cohortd starts (incarnation 2)"), "{tl}");
    assert!(has("fs1: journal 1 recovered"), "{tl}");
    assert!(tl.lines().last().unwrap().starts_with("demo OK (udp)"), "{tl}");
    assert_eq!(report.final_status.len(), 3);
    for s in &report.final_status {
        assert_eq!(s.transport, "udp");
        let g = &s.groups[0];
        let jids: Vec<(u32, Option<u16>)> = g.members.iter().map(|m| (m.node, m.jid)).collect();
        assert_eq!(jids, vec![(1, Some(0)), (2, Some(1)), (3, Some(2))], "node {}", s.node);
    }
}

#[test]
fn udp_demo_binary_exits_zero() {
    let t = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cohortd"))
        .args(["demo", "--transport", "udp"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().last().unwrap().starts_with("demo OK (udp)"), "{stdout}");
    assert!(t.elapsed() < Duration::from_secs(60));
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_cohortd"))
        .args(["demo", "--transport", "tcp"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("invalid value 'tcp' for '--transport") && err.contains("possible values: sim, udp"), "{err}");
}
