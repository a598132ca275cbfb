//! Fencing edge cases: who fences after repeated failures when a node
//! joined meanwhile, answers for fences never asked, and results for one
//! of several pending targets. Written against mutants that survived
//! cargo-mutants (issue 17).

mod common;
use cohort_core::node::{FenceInputError, Input, Request};
use cohort_core::wire::{fs_name, Mode};
use cohort_core::{HandleError, Instant};
use common::Cluster;

fn pending(c: &Cluster, at: u32) -> Vec<u32> {
    c.node(at).status().fencing.iter().map(|f| f.target.node.0).collect()
}

#[test]
fn a_node_that_joined_after_the_failure_never_fences_it() {
    let mut c = Cluster::mounted_of(4, 3);
    c.fence_hold = true;
    c.crash(3);
    c.start(4, 1);
    c.pump();
    // Actors: the old members 1 and 2, by failed attempts; never node 4.
    let mut actors = vec![];
    for _ in 0..4 {
        assert_eq!(c.held.len(), 1, "{:?}", c.log);
        actors.push(c.held[0].0);
        c.release_fences(false);
    }
    assert_eq!(actors, vec![1, 2, 1, 2], "{:?}", c.log);
    c.release_fences(true);
}

#[test]
fn an_answer_for_a_fence_never_asked_for_is_refused() {
    let mut c = Cluster::new(3);
    c.mount("fs1", &[1, 2, 3], Mode::Rw);
    c.pump();
    c.fence_hold = true;
    c.crash(3);
    c.pump();
    assert_eq!(c.held.len(), 1);
    let (actor, target) = c.held[0];
    assert_eq!((actor, target.node.0), (1, 3));
    // The adapter answers for node 2, which nobody asked to fence.
    let other = c.node(2).me();
    let now = Instant(c.now);
    let r = c.nodes[1].as_mut().unwrap().handle(now, Input::Fenced { target: other, ok: true });
    assert_eq!(r, Err(HandleError::Fence(FenceInputError::NotRequested)));
    c.pump();
    assert_eq!(pending(&c, 1), vec![3], "node 3 is still to be fenced");
    assert!(c.fenced.is_empty());
    assert!(!c.log.iter().any(|l| l.contains("RecoverJournal")), "{:?}", c.log);
    c.release_fences(true);
    assert_eq!(pending(&c, 1), Vec::<u32>::new());
    assert!(c.all_stable(), "{}", c.status_dump());
}

#[test]
fn a_fence_result_settles_only_its_own_target() {
    let mut c = Cluster::new(5);
    c.mount("fs1", &[1, 2, 3, 4, 5], Mode::Rw);
    c.pump();
    c.fence_hold = true;
    c.crash(4);
    c.crash(5);
    c.pump();
    let held = std::mem::take(&mut c.held);
    assert_eq!(held.iter().map(|h| h.1.node.0).collect::<Vec<_>>(), vec![4, 5], "{:?}", c.log);
    // Only node 5's fencing succeeds.
    c.held = held.iter().filter(|h| h.1.node.0 == 5).copied().collect();
    c.release_fences(true);
    for n in 1..=3 {
        assert_eq!(pending(&c, n), vec![4], "node {n}");
    }
    assert!(!c.log.iter().any(|l| l.contains("RecoverJournal")), "node 4's journal waits: {:?}", c.log);
    c.held = held.iter().filter(|h| h.1.node.0 == 4).copied().collect();
    c.release_fences(true);
    assert_eq!(pending(&c, 1), Vec::<u32>::new());
    assert!(c.all_stable(), "{}", c.status_dump());
}

#[test]
fn only_the_failed_node_is_ever_pending_fencing() {
    let mut c = Cluster::new(3);
    c.mount("fs1", &[1, 2, 3], Mode::Rw);
    c.pump();
    c.fence_hold = true;
    c.crash(3);
    let mut steps = 0;
    loop {
        for n in [1, 2] {
            let p = pending(&c, n);
            assert!(p.iter().all(|t| *t == 3), "node {n} step {steps}: {p:?}");
        }
        steps += 1;
        if !c.pump_once() {
            break;
        }
    }
    assert_eq!(pending(&c, 1), vec![3]);
    c.release_fences(true);
    assert!(c.all_stable(), "{}", c.status_dump());
}

#[test]
fn a_later_fence_result_keeps_the_record_of_an_earlier_target() {
    use cohort_core::wire::{self, Body, MsgKind};
    let mut c = Cluster::new(7);
    c.mount("fs1", &[1, 2, 3, 4, 5, 6, 7], Mode::Rw);
    c.pump();
    c.crash(7);
    c.pump();
    c.crash(6);
    c.pump();
    let fenced: Vec<u32> = c.fenced.iter().map(|m| m.node.0).collect();
    assert_eq!(fenced, vec![7, 6], "{:?}", c.log);
    assert!(pending(&c, 1).is_empty(), "{:?}", c.log);
    // The next cycle's start of node 1 still names both fenced members
    // (4 of 7 are left: still quorate, no gap).
    c.crash(5);
    c.drain(1);
    let start = c
        .bus
        .iter()
        .filter(|(f, _)| *f == 1)
        .filter_map(|(_, b)| wire::decode(b).ok())
        .find(|m| m.header.kind == MsgKind::DaemonStart)
        .unwrap_or_else(|| panic!("node 1 sent no start: {:?}", c.log));
    let Body::DaemonStart(s) = start.body else { panic!("{start:?}") };
    let mut names: Vec<u32> = s.fenced.iter().map(|m| m.node.0).collect();
    names.sort();
    assert_eq!(names, vec![6, 7], "{s:?}");
}

/// CORE-BUG-26: after a quorum gap, every configured node that is not a
/// member gets a pending fence (it may have mounted on the other side), in
/// the start, so all members agree on it.
#[test]
fn after_a_quorum_gap_absent_nodes_are_fenced_again() {
    use cohort_core::wire::{self, Body, MsgKind};
    let mut c = Cluster::new(5);
    c.mount("fs1", &[1, 2, 3], Mode::Rw);
    c.pump();
    // Nodes 4 and 5 hold nothing: their failures fence nobody.
    c.crash(5);
    c.pump();
    c.crash(4);
    c.pump();
    assert!(c.fenced.is_empty(), "{:?}", c.log);
    // Node 3 fails with fs1 mounted: 2 of 5 left, not quorate (the gap).
    c.crash(3);
    c.pump();
    assert!(c.fenced.is_empty(), "fenced without quorum: {:?}", c.log);
    // Node 4 restarts: quorate again. Node 5 was away during the gap and
    // may have mounted on the other side: it is fenced too now.
    c.start(4, 2);
    c.drain(1);
    let start = c
        .bus
        .iter()
        .filter(|(f, _)| *f == 1)
        .filter_map(|(_, b)| wire::decode(b).ok())
        .rfind(|m| m.header.kind == MsgKind::DaemonStart)
        .unwrap_or_else(|| panic!("node 1 sent no start: {:?}", c.log));
    let Body::DaemonStart(s) = start.body else { panic!("{start:?}") };
    // (Node 4's own gap fence, from the change where only its corosync was
    // back, is still listed: its start cancels it.)
    let pending_nodes: Vec<u32> = s.fence_pending.iter().map(|p| p.target.node.0).collect();
    assert!(pending_nodes.contains(&3) && pending_nodes.contains(&5), "{s:?}");
    c.pump();
    let mut fenced: Vec<u32> = c.fenced.iter().map(|m| m.node.0).collect();
    fenced.sort();
    assert_eq!(fenced, vec![3, 5], "{:?}", c.log);
}

/// Five configured nodes, 1-4 with fs1 mounted; node 4 fails and node 1,
/// its fence actor, has the agent running (held, not answered).
fn node_4_failed_with_its_fence_held() -> Cluster {
    let mut c = Cluster::mounted_of(5, 4);
    c.fence_hold = true;
    c.crash(4);
    c.pump();
    assert_eq!(c.held.iter().map(|h| h.0).collect::<Vec<_>>(), vec![1], "{:?}", c.log);
    c
}

#[test]
fn a_fence_answer_not_yet_agreed_survives_a_daemon_cycle() {
    let mut c = node_4_failed_with_its_fence_held();
    assert_eq!(c.held.len(), 1, "{:?}", c.log);
    let (actor, target) = c.held.remove(0);
    // The agent answers; before the result is agreed, a node joins and a
    // new daemon cycle starts (the result sent in the old view is lost).
    let now = Instant(c.now);
    let r = c.nodes[actor as usize].as_mut().unwrap().handle(now, Input::Fenced { target, ok: true });
    assert_eq!(r, Ok(()));
    c.start(5, 1);
    c.pump();
    // The answer is kept through the cycle and agreed: no second fence.
    assert!(c.held.is_empty(), "fenced again: {:?}", c.held);
    let fences = c.log.iter().filter(|l| l.contains("Fence {") && l.contains("NodeId(4)")).count();
    assert_eq!(fences, 1, "{:?}", c.log);
    for n in 1..=3 {
        assert!(pending(&c, n).is_empty(), "node {n}: {:?}", c.log);
    }
    assert!(c.all_stable(), "{}", c.status_dump());
}

/// Node 4 fails with fs1 mounted and node 1's fence agent hangs. A node
/// joins; node 2's start reports one failed attempt more than nodes 1 and
/// 3 counted (as a member that saw a failure the others did not), sent
/// after the starts of the nodes in `first`. The agreed count is the
/// maximum: attempt 1, whose actor is node 2, while node 1's agent still
/// runs for attempt 0.
fn one_more_attempt_reported_by_node_2(first: &[u32]) -> Cluster {
    let mut c = node_4_failed_with_its_fence_held();
    c.start(5, 1);
    for &n in first {
        c.drain(n);
    }
    c.drain(2);
    edit_start_on_bus(&mut c, 2, |s| {
        assert_eq!(s.fence_pending.len(), 1, "{s:?}");
        s.fence_pending[0].attempts = 1;
    });
    c.pump();
    let mut actors: Vec<u32> = c.held.iter().map(|h| h.0).collect();
    actors.sort();
    assert_eq!(actors, vec![1, 2], "node 2 acts for attempt 1: {:?}", c.log);
    c
}

#[test]
fn an_agreed_attempt_count_above_ours_moves_the_actor_but_keeps_our_running_fence() {
    let mut c = one_more_attempt_reported_by_node_2(&[]);
    // Node 1's answer is still taken (its request stays in flight).
    let before = c.log.len();
    c.release_fences(true);
    assert!(!c.log[before..].iter().any(|l| l.contains("NotRequested")), "{:?}", &c.log[before..]);
    for n in 1..=3 {
        assert!(pending(&c, n).is_empty(), "node {n}: {:?}", c.log);
    }
    assert!(c.all_stable(), "{}", c.status_dump());
}

/// The agreed attempt count is the maximum over the starts whatever order
/// they arrive in: here node 1's start (attempt 0) is delivered before
/// node 2's (attempt 1). (Issue 17, fifth round: the `p.inc == e.inc` guard
/// -> `false` in `upsert_pending` survived, since in the test above the
/// higher count always came first.)
#[test]
fn an_agreed_attempt_count_above_ours_counts_when_its_start_comes_second() {
    let mut c = one_more_attempt_reported_by_node_2(&[1]);
    for n in [1, 2, 3, 5] {
        let f: Vec<u16> = c.node(n).status().fencing.iter().map(|f| f.attempts).collect();
        assert_eq!(f, vec![1], "node {n}");
    }
    c.release_fences(true);
    assert!(c.all_stable(), "{}", c.status_dump());
}

/// A success counts whatever attempt it names (it covers every attempt):
/// one result settles the fencing everywhere. (Second mutation sample,
/// issue 17.)
#[test]
fn a_successful_fence_result_counts_whatever_attempt_it_names() {
    use cohort_core::wire::{self, Body, MsgKind};
    let mut c = Cluster::mounted(3);
    c.fence_hold = true;
    c.crash(3);
    c.pump();
    let (actor, target) = c.held.pop().expect("a fence request");
    assert_eq!((actor, target.node.0), (1, 3));
    let now = Instant(c.now);
    c.nodes[1].as_mut().unwrap().handle(now, Input::Fenced { target, ok: true }).unwrap();
    c.drain(1);
    let pos = c
        .bus
        .iter()
        .position(|(f, b)| *f == 1 && wire::decode(b).map(|m| m.header.kind) == Ok(MsgKind::FenceResult))
        .unwrap_or_else(|| panic!("no fence result: {:?}", c.log));
    let mut m = wire::decode(&c.bus[pos].1).unwrap();
    let Body::FenceResult(r) = &mut m.body else { panic!("{m:?}") };
    assert_eq!((r.attempt, r.ok), (0, true));
    r.attempt = 2;
    let mut buf = [0u8; wire::MAX_MESSAGE];
    let n = wire::encode(&m, &mut buf).unwrap();
    c.bus.remove(pos);
    c.inject(1, &buf[..n]);
    for n in [1, 2] {
        assert!(pending(&c, n).is_empty(), "node {n}: {:?}", c.node(n).status().fencing);
    }
    c.fence_hold = false;
    c.pump();
    assert!(c.all_stable(), "{}", c.status_dump());
}

/// A member with a mounted filesystem that leaves the membership without a
/// `left` entry (a GCS that only reports the new member list) is fenced
/// as a failed one (issue 17: `p.node != me` -> `==` in `on_change`'s
/// "vanished" filter survived; no test dropped the left entries).
#[test]
fn a_member_that_vanishes_without_a_left_entry_is_fenced() {
    let mut c = Cluster::new(3);
    c.mount("fs1", &[1, 2, 3], Mode::Rw);
    c.pump();
    c.omit_left = true;
    c.fence_hold = true;
    c.crash(3);
    c.pump();
    assert_eq!(pending(&c, 1), vec![3], "{:?}", c.log);
    assert_eq!(c.held.len(), 1);
    assert_eq!(c.held[0].1.node.0, 3);
    c.release_fences(true);
    assert_eq!(pending(&c, 1), Vec::<u32>::new());
    assert!(c.all_stable(), "{}", c.status_dump());
}

/// So is one that holds no filesystem any more but had state (it mounted
/// and unmounted one): its daemon state counts, as for a failure with a
/// `left` entry (issue 17: `has_state || in_any_group` -> `&&` survived).
#[test]
fn a_member_with_state_but_no_group_that_vanishes_is_fenced() {
    let mut c = Cluster::mounted_of(4, 3);
    // A daemon cycle after the mount: the starts report node 3's state.
    c.start(4, 1);
    c.pump();
    c.request(3, Request::Unmount { fs: fs_name("fs1").unwrap() });
    c.pump();
    assert!(c.node(3).status().group("fs1").is_none(), "{}", c.status_dump());
    c.omit_left = true;
    c.fence_hold = true;
    c.crash(3);
    c.pump();
    assert_eq!(pending(&c, 1), vec![3], "{:?}", c.log);
    c.release_fences(true);
    assert!(c.all_stable(), "{}", c.status_dump());
}

/// A failure in a cluster that completed cycles but never had a mount is
/// no cold start: the failed node, without state, is not fenced (issue 17:
/// `!old && !has_state` -> `!old || !has_state` in `daemon_all_started`
/// survived; it takes such a cluster for a cold one and fences every
/// configured node that is missing).
#[test]
fn a_failure_in_a_cluster_without_mounts_fences_nobody() {
    let mut c = Cluster::new(3);
    c.pump();
    c.crash(3);
    for _ in 0..20 {
        c.pump();
        c.now += 60_000;
        c.pump();
    }
    assert!(c.held.is_empty() && c.fenced.is_empty(), "{:?}", c.log);
    assert_eq!(pending(&c, 1), Vec::<u32>::new());
}

/// A member that vanishes without a `left` entry and is back, restarted,
/// before the next cycle completed still counts as departed: the leader's
/// snapshot drops the old incarnation from the groups (issue 17:
/// `!change.members.contains` -> `change.members.contains` in `on_change`
/// survived; it recorded the members that stayed instead).
#[test]
fn a_member_that_vanishes_without_a_left_entry_and_restarts_at_once_leaves_its_groups() {
    let mut c = Cluster::mounted(3);
    c.omit_left = true;
    c.fence_hold = true;
    c.crash(3);
    c.start(3, 2);
    c.pump();
    assert_eq!(c.jids("fs1", 1).iter().map(|m| m.0).collect::<Vec<_>>(), vec![1, 2], "{}", c.status_dump());
    assert!(c.node(3).status().group("fs1").is_none(), "{}", c.status_dump());
}

/// `awaits_replay` (the simulator's blocked-kernel checker asks it after
/// every step) is true exactly while the group holds a failed member's
/// journal to replay (issue 17: `awaits_replay -> false` survived; the
/// checker only uses it to excuse a block).
#[test]
fn awaits_replay_holds_while_a_failed_members_journal_waits() {
    let mut c = Cluster::mounted(3);
    assert!(!c.node(1).awaits_replay("fs1"));
    c.fence_hold = true;
    c.crash(3);
    c.pump();
    for n in [1, 2] {
        assert!(c.node(n).awaits_replay("fs1"), "node {n}");
        assert!(!c.node(n).awaits_replay("fs2"), "node {n}");
    }
    c.release_fences(true);
    for n in [1, 2] {
        assert!(!c.node(n).awaits_replay("fs1"), "node {n}");
    }
}

/// Pending fences of one node merge by incarnation: an entry for an older
/// incarnation than the agreed one does not carry its attempt count over
/// (issue 17: the `p.inc == e.inc` guard -> `true` in `upsert_pending`
/// survived; it moved the actor by the older entry's count). Node 2's
/// start is edited on the bus to report node 4 with incarnation 0 and one
/// failed attempt, as a startup fence it counted.
#[test]
fn an_older_incarnations_attempt_count_does_not_move_the_actor() {
    use cohort_core::wire::PendingFence;
    use cohort_core::{Incarnation, Member};
    let mut c = node_4_failed_with_its_fence_held();
    c.start(5, 1);
    // Node 1's start goes first, so node 2's entry merges into its.
    c.drain(1);
    c.drain(2);
    let mut target = None;
    edit_start_on_bus(&mut c, 2, |s| {
        assert_eq!(s.fence_pending.len(), 1, "{s:?}");
        let t = s.fence_pending[0].target;
        assert_eq!(t.node.0, 4);
        assert!(t.inc > Incarnation(0));
        s.fence_pending[0] = PendingFence { target: Member { node: t.node, inc: Incarnation(0) }, attempts: 1 };
        target = Some(t);
    });
    let target = target.expect("edited");
    c.pump();
    // Still attempt 0 of node 4's incarnation: node 1 acts, nobody else.
    assert_eq!(c.held.iter().map(|h| h.0).collect::<Vec<_>>(), vec![1], "{:?}", c.log);
    for n in [1, 2, 3, 5] {
        let f: Vec<_> = c.node(n).status().fencing.iter().map(|f| (f.target, f.attempts)).collect();
        assert_eq!(f, vec![(target, 0)], "node {n}");
    }
    c.release_fences(true);
    assert!(c.all_stable(), "{}", c.status_dump());
}

/// Edit node `from`'s first daemon start waiting on the bus (as a member
/// that saw something the others did not would have sent it).
fn edit_start_on_bus(c: &mut Cluster, from: u32, edit: impl FnOnce(&mut cohort_core::wire::DaemonStart)) {
    use cohort_core::wire::{self, Body, MsgKind};
    let pos = c
        .bus
        .iter()
        .position(|(f, b)| *f == from && wire::decode(b).map(|m| m.header.kind) == Ok(MsgKind::DaemonStart))
        .unwrap_or_else(|| panic!("node {from} sent no start: {:?}", c.log));
    let mut m = wire::decode(&c.bus[pos].1).unwrap();
    let Body::DaemonStart(s) = &mut m.body else { panic!("{m:?}") };
    edit(s);
    let mut buf = [0u8; wire::MAX_MESSAGE];
    let n = wire::encode(&m, &mut buf).unwrap();
    c.bus[pos].1 = buf[..n].to_vec();
}

/// A journal is given out only while its holder's failure can be tracked:
/// every holder and every journal awaiting replay fit the group's recovery
/// table. Node 1 mounts rw and remounts ro, so nobody can replay; node 2
/// mounts, loses power and comes back, over and over, each time leaving a
/// journal to replay. Before the fix the table (2 x MAX_NODES) filled, the
/// next failure's recovery was dropped with a log line, and its journal was
/// handed out again unreplayed (P2). Now the mount that would overflow it is
/// refused with `ReplaysPending`, and no failed journal is ever reused.
#[test]
fn a_journal_is_given_out_only_while_its_failure_can_be_tracked() {
    use cohort_core::node::{KernelOp, MountError};
    use cohort_core::wire::{MAX_JOURNALS, MAX_RECOVERIES};
    let journals = MAX_JOURNALS as u16;
    let fs1 = || fs_name("fs1").unwrap();
    let mut c = Cluster::new(3);
    c.mount_with("fs1", &[1], Mode::Rw, journals);
    c.pump();
    c.request(1, Request::Remount { fs: fs1(), mode: Mode::Ro });
    c.pump();
    assert!(c.all_stable(), "{}", c.status_dump());
    let refused = format!("{:?}", KernelOp::MountError(MountError::ReplaysPending));
    let mut failed: Vec<u16> = vec![];
    let mut inc = 1;
    for cycle in 0..=MAX_RECOVERIES {
        let from = c.log.len();
        c.mount_with("fs1", &[2], Mode::Ro, journals);
        c.pump();
        if c.log[from..].iter().any(|l| l.starts_with("2: Kernel") && l.contains(&refused)) {
            // Refused exactly when node 1's journal and the ones awaiting
            // replay fill the table.
            assert_eq!(failed.len() + 1, MAX_RECOVERIES, "refused at cycle {cycle}");
            let st = c.node(1).status();
            let g = st.group("fs1").expect("node 1 still has fs1");
            assert_eq!(g.recoveries.len(), failed.len(), "{g:?}");
            assert!(c.jids("fs1", 1).iter().all(|(n, _)| *n == 1), "{:?}", c.jids("fs1", 1));
            return;
        }
        let jid = c.jids("fs1", 1).iter().find(|(n, _)| *n == 2).and_then(|(_, j)| *j).expect("node 2 holds a journal");
        assert!(!failed.contains(&jid), "cycle {cycle}: journal {jid} handed out again before its replay");
        failed.push(jid);
        c.crash(2);
        c.pump();
        inc += 1;
        c.start(2, inc);
        c.pump();
    }
    panic!("the table never filled: {} journals awaiting replay", failed.len());
}
