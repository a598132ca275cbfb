//! Stateful merges through real nodes: detection, the deterministic verdict
//! in every case the issue names, and the generation rule.

mod common;
use cohort_core::wire::{self, Body, Mode};
use common::Cluster;

#[test]
fn quorate_side_wins_and_the_isolated_stale_node_resets() {
    let mut c = Cluster::mounted(3);
    c.fence_hold = true; // heal before fencing completes
    c.partition(&[&[1, 2], &[3]]);
    assert_eq!(c.held.len(), 1, "node 1 asked to fence 3: {:?}", c.log);
    assert!(c.node(1).status().group("fs1").unwrap().blocked);
    c.heal();
    assert_eq!(c.reset, vec![3], "{:?}", c.log);
    assert_eq!(c.killed, vec![3], "the lowest winner kills the loser as a backup");
    assert!(!c.alive(3));
    // The stale node's messages were never applied: node 1's view of fs1 never
    // got node 3 back.
    assert_eq!(c.jids("fs1", 1), vec![(1, Some(0)), (2, Some(1))]);
    c.release_fences(true);
    assert!(c.all_stable(), "{}", c.status_dump());
    // Restart with a new incarnation: clean rejoin, gets a journal.
    c.start(3, 2);
    c.pump();
    c.mount("fs1", &[3], Mode::Rw);
    c.pump();
    assert!(c.reset == vec![3], "a clean restart is never reset");
    assert_eq!(c.jids("fs1", 3), vec![(1, Some(0)), (2, Some(1)), (3, Some(2))], "{:?}", c.log);
    assert!(c.all_stable(), "{}", c.status_dump());
}

#[test]
fn even_two_two_split_resolves_to_the_lowest_node_side_only() {
    let mut c = Cluster::mounted(4);
    c.fence_hold = true;
    c.partition(&[&[1, 2], &[3, 4]]);
    // Neither half is quorate: nobody fences, nobody recovers.
    assert!(c.held.is_empty(), "{:?}", c.log);
    assert!(!c.log.iter().any(|l| l.contains("RecoverJournal")));
    c.heal();
    let mut reset = c.reset.clone();
    reset.sort();
    assert_eq!(reset, vec![3, 4], "exactly one half resets: {:?}", c.log);
    assert!(c.alive(1) && c.alive(2));
    c.fence_hold = false;
    c.release_fences(true);
    // Two of four nodes are not quorate: nothing is recovered until the reset
    // nodes come back with new incarnations.
    assert!(!c.log.iter().any(|l| l.contains("RecoverJournal")), "{:?}", c.log);
    c.start(3, 2);
    c.start(4, 2);
    c.pump();
    assert!(c.all_stable(), "{}", c.status_dump());
    assert_eq!(c.jids("fs1", 1), vec![(1, Some(0)), (2, Some(1))]);
    assert!(c.log.iter().any(|l| l.contains("RecoverJournal(Jid(2))")));
    assert!(c.log.iter().any(|l| l.contains("RecoverJournal(Jid(3))")));
}

#[test]
fn three_way_merge_keeps_one_partition() {
    let mut c = Cluster::mounted(5);
    c.fence_hold = true;
    c.partition(&[&[1, 2], &[3], &[4, 5]]);
    c.heal();
    let mut reset = c.reset.clone();
    reset.sort();
    assert_eq!(reset, vec![3, 4, 5], "{:?}", c.log);
    assert_eq!(c.node(1).status().last_merge_partitions, 3);
    c.fence_hold = false;
    c.release_fences(true);
    for n in 3..=5 {
        c.start(n, 2);
    }
    c.pump();
    assert!(c.all_stable(), "{}", c.status_dump());
}

#[test]
fn bigger_quorate_side_wins_over_lower_node_ids() {
    let mut c = Cluster::mounted(5);
    c.fence_hold = true;
    c.partition(&[&[1, 2], &[3, 4, 5]]);
    c.heal();
    let mut reset = c.reset.clone();
    reset.sort();
    assert_eq!(reset, vec![1, 2], "{:?}", c.log);
}

#[test]
fn two_node_cluster_side_that_fenced_wins() {
    let mut c = Cluster::empty(2);
    c.quorum_majority = false; // two_node: each side stays quorate
    c.start(1, 1);
    c.start(2, 1);
    c.pump();
    c.mount("fs1", &[1, 2], Mode::Rw);
    c.pump();
    assert!(c.all_stable(), "{}", c.status_dump());
    // Both sides ask to fence; only node 2's device works but lies (the target
    // survives), node 1's request stays pending.
    c.fence_hold = true;
    c.partition(&[&[1], &[2]]);
    assert_eq!(c.held.len(), 2);
    c.fence_lies = true;
    let held = std::mem::take(&mut c.held);
    for (actor, target) in held {
        if actor == 2 {
            c.held.push((actor, target));
        }
    }
    c.release_fences(true);
    c.heal();
    assert_eq!(c.reset, vec![1], "node 2 fenced node 1, so node 1 resets: {:?}", c.log);
}

#[test]
fn merge_after_clean_restart_is_not_reset() {
    let mut c = Cluster::mounted(3);
    c.fence_hold = true;
    c.partition(&[&[1, 2], &[3]]);
    c.crash(3);
    c.start(3, 2); // alone in its partition, fresh incarnation, no state
    c.pump();
    c.heal();
    assert!(c.reset.is_empty(), "{:?}", c.log);
    // Its old incarnation's fencing is cancelled by the clean restart.
    assert!(c.node(1).status().fencing.is_empty(), "{}", c.status_dump());
    c.fence_hold = false;
    c.held.clear();
    c.pump();
    c.mount("fs1", &[3], Mode::Rw);
    c.pump();
    assert!(c.all_stable(), "{}", c.status_dump());
    assert_eq!(c.jids("fs1", 3), vec![(1, Some(0)), (2, Some(1)), (3, Some(2))]);
}

#[test]
fn identical_member_sets_are_told_apart_by_generation() {
    // {1,2,3} -> 3 dies -> {1,2} -> 3 restarts and mounts -> {1,2,3} again.
    // A START node 3 sent for the first {1,2,3} change must never be applied
    // to the second one.
    let mut c = Cluster::new(3);
    c.mount("fs1", &[1, 2, 3], Mode::Rw);
    // Capture node 3's first mount START before delivery.
    let mut buf = [0u8; wire::MAX_MESSAGE];
    let mut old_start = None;
    for _ in 0..200 {
        c.pump_once();
        if old_start.is_none() {
            if let Some(b) = c.bus.iter().find(|(f, b)| {
                *f == 3 && wire::decode(b).map(|m| matches!(m.body, Body::MountStart(_))).unwrap_or(false)
            }) {
                old_start = Some(b.1.clone());
            }
        }
    }
    let _ = &mut buf;
    c.pump();
    let old_start = old_start.expect("captured node 3's START");
    let old_gen = wire::decode(&old_start).unwrap().header.generation;
    c.crash(3);
    c.pump();
    c.start(3, 1); // even the same incarnation number: the generation differs
    c.pump();
    c.mount("fs1", &[3], Mode::Rw);
    c.pump();
    let st = c.node(1).status();
    let g = st.group("fs1").unwrap();
    assert_ne!(g.generation, old_gen);
    assert_eq!(g.members.len(), 3);
    let before = c.node(1).stats();
    let status_before = c.node(1).status();
    c.inject(3, &old_start);
    let after = c.node(1).stats();
    assert_eq!(
        after.dropped_old_generation + after.dropped_other_view + after.dropped_stale_sender,
        before.dropped_old_generation + before.dropped_other_view + before.dropped_stale_sender + 1
    );
    assert_eq!(after.applied, before.applied);
    assert_eq!(c.node(1).status(), status_before, "nothing changed");
}

#[test]
fn a_node_that_cannot_speak_the_cluster_protocol_is_told_and_stops() {
    use cohort_core::{Config, Incarnation, NodeId};
    let mut c = Cluster::mounted(3);
    c.crash(3);
    let mut cfg = Config::new(NodeId(3), Incarnation(2));
    cfg.proto_min = 2;
    cfg.proto_max = 3;
    c.start_with(3, cfg);
    c.pump();
    assert!(
        c.log.iter().any(|l| l.starts_with("3: Incompatible { ours_min: 2, ours_max: 3, cluster: 1 }")),
        "{:?}",
        c.log
    );
    assert!(c.node(3).is_stopped());
    // The running cluster carries on (issue 17: `is_stopped` -> `true`
    // survived, no test asked a running node), and nothing of node 3 is
    // synced in.
    assert!(!c.node(1).is_stopped() && !c.node(2).is_stopped());
    assert_eq!(c.node(1).status().protocol, 1);
    c.mount("fs1", &[3], Mode::Rw);
    c.pump();
    assert_eq!(c.jids("fs1", 1), vec![(1, Some(0)), (2, Some(1))]);
}

#[test]
fn newcomers_adopt_the_highest_common_version() {
    use cohort_core::{Config, Incarnation, NodeId};
    let mut c = Cluster::empty(2);
    for i in 1..=2 {
        let mut cfg = Config::new(NodeId(i), Incarnation(1));
        cfg.proto_max = 1;
        cfg.proto_min = 1;
        c.start_with(i, cfg);
    }
    c.pump();
    assert_eq!(c.node(1).status().protocol, 1);
    assert_eq!(c.node(2).status().protocol, 1);
}

#[test]
fn a_stale_node_that_does_not_go_away_never_stalls_the_cluster() {
    use cohort_core::status::DaemonWait;
    let mut c = Cluster::mounted(3);
    c.ignore_resets = true;
    c.fence_hold = true;
    c.partition(&[&[1, 2], &[3]]);
    c.heal();
    assert_eq!(c.reset, vec![3]);
    assert!(c.alive(3), "the adapter ignored ResetSelf and Kill");
    // Another change while the stale node is still in the transport group:
    // the daemon cycle completes without waiting for its start.
    c.procdown(2);
    c.start(2, 2);
    c.pump();
    assert_eq!(c.node(1).status().daemon, DaemonWait::Nothing, "{}", c.status_dump());
    assert!(c.node(3).is_stopped(), "the loser's core accepts no input after ResetSelf");
    // Fencing finally powers it off; the survivors recover and settle.
    c.fence_hold = false;
    c.release_fences(true);
    c.pump();
    assert!(!c.alive(3));
    assert!(c.all_stable(), "{}", c.status_dump());
}

#[test]
fn a_member_lost_and_back_before_any_cycle_keeps_its_mounts() {
    // Node 3 drops out and comes back (same process) before any daemon
    // cycle completed without it: nothing was decided without it, so it
    // stays in its groups and its journal is not replayed under it.
    let mut c = Cluster::mounted(4);
    c.log.clear();
    c.net[3] = 1;
    c.reconfigure();
    c.net[3] = 0;
    c.reconfigure();
    c.pump();
    assert!(c.reset.is_empty(), "{:?}", c.log);
    assert!(!c.log.iter().any(|l| l.contains("RecoverJournal")), "{:?}", c.log);
    assert_eq!(c.jids("fs1", 1), vec![(1, Some(0)), (2, Some(1)), (3, Some(2)), (4, Some(3))], "{:?}", c.log);
    assert!(c.all_stable(), "{}", c.status_dump());
}

/// The `acted` digest of the lineage (messages delivered since the last
/// completed cycle): two sides that delivered different messages, or the
/// same ones in another order, must not look alike.
#[test]
fn the_acted_digest_sees_every_message_and_the_order() {
    use cohort_core::daemon::merge::fold_acted;
    let fold = |msgs: &[&[u8]]| msgs.iter().fold(0u64, |h, m| fold_acted(h, m));
    let a: &[u8] = b"mount fs1 from 2";
    let b: &[u8] = b"recovery result jid 3 attempt 0";
    let c: &[u8] = b"recovery result jid 3 attempt 1";
    assert_ne!(fold(&[a]), 0, "nothing delivered is 0; something is not");
    assert_ne!(fold(&[a]), fold(&[b]));
    assert_ne!(fold(&[b]), fold(&[c]));
    assert_ne!(fold(&[a, b]), fold(&[b, a]), "order");
    assert_ne!(fold(&[a, b]), fold(&[c, b]), "history before the last message");
    assert_ne!(fold(&[a]), fold(&[a, a]));
    assert_ne!(fold(&[b"12345678"]), fold(&[b"1234567"]), "length");
    assert_eq!(fold(&[a, b, c]), fold(&[a, b, c]), "deterministic");
    // Every bit of a word counts.
    let mut seen = std::collections::HashSet::new();
    for k in 0..64 {
        assert!(seen.insert(fold(&[&(1u64 << k).to_le_bytes()])), "bit {k}");
    }
}

/// The stale side holds the lowest node id and has state: it must not
/// lead the merge cycle (the winners would wait for its snapshot).
#[test]
fn a_stale_lowest_node_never_leads_the_merge_cycle() {
    use cohort_core::status::DaemonWait;
    let mut c = Cluster::mounted(3);
    c.ignore_resets = true;
    c.fence_hold = true;
    c.partition(&[&[1], &[2, 3]]);
    c.heal();
    assert_eq!(c.reset, vec![1], "{:?}", c.log);
    assert!(c.alive(1), "the adapter ignored ResetSelf and Kill");
    for n in [2, 3] {
        assert_eq!(c.node(n).status().daemon, DaemonWait::Nothing, "node {n}: {}", c.status_dump());
    }
    assert_eq!(c.jids("fs1", 2), vec![(2, Some(1)), (3, Some(2))]);
    c.fence_hold = false;
    c.release_fences(true);
    c.pump();
    assert!(!c.alive(1));
    assert!(c.all_stable(), "{}", c.status_dump());
}

/// The length step of the `acted` fold keeps every bit too: two messages
/// of one length whose states before it differ in a bit the length has set
/// do not collide. (Second mutation sample, issue 17.)
#[test]
fn the_acted_digest_length_step_loses_no_bit() {
    use cohort_core::daemon::merge::fold_acted;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    const BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    // PRIME is odd, so invertible modulo 2^64 (Newton's iteration).
    let mut inv = PRIME;
    for _ in 0..6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(PRIME.wrapping_mul(inv)));
    }
    assert_eq!(PRIME.wrapping_mul(inv), 1);
    // A 16-byte message (a zero word, then one chosen word) whose state
    // before the length step is `t`.
    let h1 = BASIS.wrapping_mul(PRIME);
    let msg = |t: u64| {
        let mut m = vec![0u8; 8];
        m.extend_from_slice(&(t.wrapping_mul(inv) ^ h1).to_le_bytes());
        m
    };
    let t = 0x1234_5678_9abc_def0u64 & !16;
    let (a, b) = (msg(t), msg(t | 16));
    assert_ne!(a, b);
    assert_ne!(fold_acted(0, &a), fold_acted(0, &b));
}

/// Rule 2 of the verdict: of two stateful partitions of equal size, the one
/// that completed a daemon cycle in a quorate ring after the split wins,
/// though the other holds the lowest node id. Node 5 runs no daemon but is
/// powered: it makes 3, 4 (and 5) the quorate side. (Second mutation
/// sample, issue 17.)
#[test]
fn of_two_equal_sides_the_one_that_stayed_quorate_wins() {
    let mut c = Cluster::mounted_of(5, 4);
    c.fence_hold = true; // the quorate side's fencing of 1 and 2 never ends
    c.ignore_resets = true;
    c.partition(&[&[1, 2], &[3, 4, 5]]);
    for n in [1, 3] {
        assert_eq!(c.node(n).status().quorate, Some(n == 3), "node {n}");
    }
    c.heal();
    let mut reset = c.reset.clone();
    reset.sort();
    assert_eq!(reset, vec![1, 2], "{:?}", c.log);
}

/// The same with the fenced members behind the lowest one: the fence
/// evidence of every member counts, not only the first's (issue 17:
/// `1 << k` -> `1 >> k` in `daemon_all_started`'s remap of the start masks
/// survived; only node 1's bit was ever set in the merge tests).
#[test]
fn the_side_that_fenced_wins_whichever_members_it_fenced() {
    let mut c = Cluster::empty(3);
    c.quorum_majority = false; // every side stays quorate
    for n in 1..=3 {
        c.start(n, 1);
    }
    c.pump();
    c.mount("fs1", &[1, 2, 3], Mode::Rw);
    c.pump();
    assert!(c.all_stable(), "{}", c.status_dump());
    // Node 1 alone fences nodes 2 and 3 with a lying device; the other
    // side's requests to fence node 1 stay pending.
    c.fence_hold = true;
    c.partition(&[&[1], &[2, 3]]);
    c.fence_lies = true;
    let held = std::mem::take(&mut c.held);
    for (actor, target) in held {
        if actor == 1 {
            c.held.push((actor, target));
        }
    }
    assert!(!c.held.is_empty());
    c.release_fences(true);
    c.heal();
    // The bigger side loses: node 1's side fenced its members.
    assert_eq!(c.reset, vec![2, 3], "{:?}", c.log);
}

/// Two stateful sides meet, one of them (node 3, alone) speaking only
/// protocol versions the others do not: `node3_mounts` says whether node 3
/// mounted (has state) in its partition, `others_mount` whether nodes 1
/// and 2 did.
fn incompatible_side_merges(others_mount: bool, node3_mounts: bool) -> Cluster {
    use cohort_core::{Config, Incarnation, NodeId};
    let mut c = Cluster::empty(3);
    c.quorum_majority = false; // every side may mount
    c.fence_hold = true; // nobody is powered off
    c.start(1, 1);
    c.start(2, 1);
    c.pump();
    if others_mount {
        c.mount("fs1", &[1, 2], Mode::Rw);
        c.pump();
    }
    c.partition(&[&[1, 2], &[3]]);
    let mut cfg = Config::new(NodeId(3), Incarnation(1));
    cfg.proto_min = 2;
    cfg.proto_max = 3;
    c.start_with(3, cfg);
    c.pump();
    if node3_mounts {
        c.mount("fs1", &[3], Mode::Rw);
        c.pump();
        assert!(c.node(3).status().group("fs1").is_some_and(|g| g.synced), "{}", c.status_dump());
    }
    c.heal();
    assert!(
        c.log.iter().any(|l| l.starts_with("3: Incompatible { ours_min: 2, ours_max: 3, cluster: 1 }")),
        "{:?}",
        c.log
    );
    c
}

/// The merge verdict is over the compatible members: a member told it
/// cannot speak the cluster's protocol is ignored (core/README.md, "Daemon
/// cycle"), even with state: no partition of the merge, and not fenced as
/// a merge loser (issue 17: `1 << i` -> `1 >> i` in the `compatible` mask
/// of `daemon_all_started` survived, only node 1's bit was ever tested;
/// so did `losers & bit != 0 && has_state` -> `||` in its fence set,
/// which fences every member with state that is not cancelled, and only
/// an ignored one is not).
#[test]
fn an_incompatible_member_with_state_is_no_merge_partition() {
    let c = incompatible_side_merges(true, true);
    assert_eq!(c.node(1).status().last_merge_partitions, 0, "{:?}", c.log);
    assert!(!c.log.iter().any(|l| l.contains("StaleMerge")), "{:?}", c.log);
    assert!(c.reset.is_empty(), "{:?}", c.reset);
    for n in 1..=2 {
        let fencing: Vec<_> = c.node(n).status().fencing.iter().map(|f| f.target).collect();
        assert!(fencing.iter().all(|t| t.node.0 != 3), "node {n} fences {fencing:?}");
    }
}

/// Nor does it lead the cycle's snapshot, though it is the only member
/// with state: the cycle completes without it (issue 17: `1 << i` ->
/// `1 >> i` in `eligible` survived; with it the stopped member is chosen
/// as the leader and the cycle waits for its snapshot forever).
#[test]
fn an_incompatible_member_with_state_never_leads_the_snapshot() {
    use cohort_core::status::DaemonWait;
    let c = incompatible_side_merges(false, true);
    for n in 1..=2 {
        assert_eq!(c.node(n).status().daemon, DaemonWait::Nothing, "node {n}: {}", c.status_dump());
    }
}

/// Two members cut off and back before any cycle completed (a blip) are
/// the same processes of the same lineage: both keep their journals, each
/// recorded as departed with the incarnation it had (issue 17, fifth round:
/// with `==` -> `!=` in `on_change`'s departed check only the first of two
/// leavers was recorded with its incarnation, and the second was dropped
/// from the group when it came back).
#[test]
fn two_members_back_from_a_blip_keep_their_journals() {
    let mut c = Cluster::mounted(5);
    c.fence_hold = true;
    let before: Vec<_> = (1..=5).map(|n| c.jids("fs1", n)).collect();
    c.net[4] = 1;
    c.net[5] = 1;
    c.reconfigure();
    c.net[4] = 0;
    c.net[5] = 0;
    c.reconfigure();
    c.pump();
    for n in 1..=5 {
        assert_eq!(c.jids("fs1", n), before[n as usize - 1], "node {n}: {:?}", c.log);
    }
    assert!(c.reset.is_empty() && c.killed.is_empty(), "{:?}", c.log);
}
