//! Small deterministic end-to-end flows through real `Node`s on a perfect
//! network (the simulator in `tests/` does the faults).

mod common;
use cohort_core::node::Request;
use cohort_core::wire::{fs_name, Mode};
use common::Cluster;

#[test]
fn three_nodes_mount_get_jids_in_node_order() {
    let mut c = Cluster::new(3);
    assert!(c.all_stable(), "{:#?}\n{:?}", c.node(1).status(), c.log);
    c.mount("fs1", &[1, 2, 3], Mode::Rw);
    c.pump();
    for n in 1..=3 {
        assert_eq!(c.jids("fs1", n), vec![(1, Some(0)), (2, Some(1)), (3, Some(2))], "node {n}: {:?}", c.log);
    }
    assert!(c.all_stable(), "{:#?}", c.node(2).status());
    // node 1 was first mounter
    assert!(c.log.iter().any(|l| l.starts_with("1: Kernel") && l.contains("MountFirst")), "{:?}", c.log);
    assert!(!c.log.iter().any(|l| !l.starts_with("1:") && l.contains("MountFirst")));
}

#[test]
fn failed_node_is_fenced_then_its_journal_recovered() {
    let mut c = Cluster::new(3);
    c.mount("fs1", &[1, 2, 3], Mode::Rw);
    c.pump();
    c.log.clear();
    c.crash(3);
    c.pump();
    assert_eq!(c.fenced.iter().map(|m| m.node.0).collect::<Vec<_>>(), vec![3], "{:?}", c.log);
    let fence_at = c.log.iter().position(|l| l.contains("Fence {")).unwrap();
    let recover_at = c.log.iter().position(|l| l.contains("RecoverJournal(Jid(2))")).expect("recovered");
    assert!(fence_at < recover_at);
    assert!(c.log.iter().any(|l| l.contains("Unblock")));
    assert!(c.all_stable(), "{:#?}\n{:?}", c.node(1).status(), c.log);
    assert_eq!(c.jids("fs1", 1), vec![(1, Some(0)), (2, Some(1))]);
}

#[test]
fn recovery_failure_is_retried_by_another_member() {
    let mut c = Cluster::new(3);
    c.mount("fs1", &[1, 2, 3], Mode::Rw);
    c.pump();
    c.log.clear();
    c.recover_ok = false;
    c.crash(3);
    c.pump();
    let recs: Vec<&String> = c.log.iter().filter(|l| l.contains("RecoverJournal")).collect();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_ne!(recs[0].split(':').next(), recs[1].split(':').next(), "retried by another node");
    assert!(c.all_stable());
}

#[test]
fn fence_failure_is_retried_by_the_next_actor() {
    let mut c = Cluster::new(3);
    c.mount("fs1", &[1, 2, 3], Mode::Rw);
    c.pump();
    c.log.clear();
    c.fence_ok = false;
    c.crash(3);
    c.pump();
    let f: Vec<&String> = c.log.iter().filter(|l| l.contains("Fence {")).collect();
    assert_eq!(f.len(), 2, "{:?}", c.log);
    assert!(f[0].starts_with("1:") && f[1].starts_with("2:"), "{f:?}");
    assert!(c.all_stable());
}

#[test]
fn restart_with_new_incarnation_rejoins_and_gets_a_journal() {
    let mut c = Cluster::new(3);
    c.mount("fs1", &[1, 2, 3], Mode::Rw);
    c.pump();
    c.crash(3);
    c.pump();
    c.start(3, 2);
    c.pump();
    c.mount("fs1", &[3], Mode::Rw);
    c.pump();
    assert!(c.all_stable(), "{:#?}\n{:?}", c.node(3).status(), c.log);
    assert_eq!(c.jids("fs1", 3), vec![(1, Some(0)), (2, Some(1)), (3, Some(2))]);
}

#[test]
fn unmount_frees_the_journal_without_recovery() {
    let mut c = Cluster::new(3);
    c.mount("fs1", &[1, 2, 3], Mode::Rw);
    c.pump();
    c.log.clear();
    c.request(2, Request::Unmount { fs: fs_name("fs1").unwrap() });
    c.pump();
    assert!(!c.log.iter().any(|l| l.contains("RecoverJournal") || l.contains("Fence")), "{:?}", c.log);
    assert_eq!(c.jids("fs1", 1), vec![(1, Some(0)), (3, Some(2))]);
    assert!(c.all_stable());
}

#[test]
fn more_mounters_than_journals_fails_only_the_extra_node() {
    let mut c = Cluster::new(3);
    for n in 1..=3 {
        c.request(n, Request::Mount { fs: fs_name("fs1").unwrap(), mode: Mode::Rw, journals: 2 });
    }
    c.pump();
    assert!(c.log.iter().any(|l| l.starts_with("3: Kernel") && l.contains("MountError(NoFreeJournal)")), "{:?}", c.log);
    assert!(!c.log.iter().any(|l| !l.starts_with("3:") && l.contains("MountError")));
    assert_eq!(c.jids("fs1", 1), vec![(1, Some(0)), (2, Some(1))]);
    assert!(c.all_stable(), "{}", c.status_dump());
}

#[test]
fn cold_start_fences_configured_nodes_that_never_joined_before_a_first_mount() {
    let mut c = Cluster::empty(3);
    c.start(1, 1);
    c.start(2, 1);
    c.pump_once();
    c.mount("fs1", &[1], Mode::Rw);
    c.pump();
    // Node 3 is configured but never showed up: it may hold fs1 from before.
    assert_eq!(c.fenced.iter().map(|m| m.node.0).collect::<Vec<_>>(), vec![3], "{:?}", c.log);
    let fence_at = c.log.iter().position(|l| l.contains("Fence {")).unwrap();
    let first_at = c.log.iter().position(|l| l.contains("MountFirst")).expect("first mount");
    assert!(fence_at < first_at, "first mount only after startup fencing");
    assert!(c.all_stable(), "{}", c.status_dump());
}

#[test]
fn a_configured_node_that_joins_in_time_is_not_fenced() {
    let mut c = Cluster::empty(3);
    c.start(1, 1);
    c.start(2, 1);
    c.pump_once();
    c.start(3, 1);
    c.pump();
    assert!(c.fenced.is_empty(), "{:?}", c.log);
    assert!(c.all_stable());
}
