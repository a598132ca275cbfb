//! Property 6, liveness under eventual stability. After the fault schedule
//! the simulator heals the network, resumes paused nodes, restarts nodes
//! that are off or cut off and stops injecting faults; then, within a bounded
//! simulated time, this must hold:
//!
//! * every node runs a daemon, all in one ring, nothing in flight;
//! * every daemon is stable (`Status::is_stable`) and sees every node as a
//!   non-stale peer;
//! * every mount group is complete: all members agree on the member set,
//!   every member is mounted (status and simulated kernel), first mount done,
//!   no recovery pending, nobody blocked;
//! * no dirty journal of a dead writer is left while members could replay it;
//! * the one accepted exception: a group whose members cannot do what it
//!   waits for (`NoRecoverer`/`NoFirstMounter` while no member is rw with a
//!   journal, e.g. only ro members and spectators are left) may stay blocked:
//!   the status names the reason and only an operator (a rw mount) can help;
//! * no two live daemons that diverged while partitioned survive (the stale
//!   side was reset).

use crate::kernel::KPhase;
use crate::world::World;
use cohort_core::mount::GroupWait;
use cohort_core::status::{DaemonWait, GroupStatus};
use cohort_core::wire::Mode;
use std::collections::BTreeMap;

/// Waiting for something no member can do (status says so).
pub fn explained_wait(g: &GroupStatus) -> bool {
    matches!(g.wait, GroupWait::NoRecoverer(_) | GroupWait::NoFirstMounter)
        && !g.members.iter().any(|m| m.mode == Mode::Rw && m.jid.is_some())
}

pub fn check(w: &mut World) -> Result<(), String> {
    let ids: Vec<u32> = w.node_ids().collect();
    for &n in &ids {
        let node = &w.nodes[n as usize];
        if !node.powered || node.paused || node.transport_dead || node.daemon.is_none() {
            return Err(format!(
                "node {n} is not running (powered {}, paused {}, transport dead {}, daemon {})",
                node.powered,
                node.paused,
                node.transport_dead,
                node.daemon.is_some()
            ));
        }
    }
    let r0 = w.nodes[ids[0] as usize].ring;
    if let Some(n) = ids.iter().find(|n| w.nodes[**n as usize].ring != r0) {
        return Err(format!("node {n} is not in the same ring as node {}", ids[0]));
    }
    if w.in_flight() > 0 {
        return Err(format!("{} events still in flight", w.in_flight()));
    }
    let mut groups: BTreeMap<String, Vec<(u32, Vec<u32>)>> = BTreeMap::new();
    for &n in &ids {
        let Some(st) = w.status_clone(n) else { return Err(format!("node {n}: no status")) };
        let stable = st.daemon == DaemonWait::Nothing
            && st.fencing.is_empty()
            && st
                .groups
                .iter()
                .all(|g| g.synced && ((g.wait == GroupWait::Nothing && !g.blocked) || explained_wait(g)));
        if !stable {
            let waits: Vec<String> =
                st.groups.iter().map(|g| format!("{}:{:?}/blocked={}", g.fs, g.wait, g.blocked)).collect();
            return Err(format!(
                "node {n} is not stable: daemon {:?}, fencing {:?}, groups {:?}",
                st.daemon,
                st.fencing.iter().map(|f| (f.target.node.0, f.attempts, f.actor.map(|a| a.0))).collect::<Vec<_>>(),
                waits
            ));
        }
        let peers: Vec<u32> = st.members.iter().filter(|p| !p.stale).map(|p| p.node.0).collect();
        if peers != ids {
            return Err(format!("node {n} sees daemon peers {peers:?} (non-stale), expected {ids:?}"));
        }
        for g in st.groups.iter() {
            let fs = g.fs.as_str().to_string();
            let members: Vec<u32> = g.members.iter().map(|m| m.node.0).collect();
            if explained_wait(g) {
                groups.entry(fs).or_default().push((n, members));
                continue;
            }
            if !g.first_done || !g.recoveries.is_empty() || g.blocked || !g.synced {
                return Err(format!(
                    "node {n} group {fs}: synced {} first_done {} recoveries {:?} blocked {}",
                    g.synced, g.first_done, g.recoveries, g.blocked
                ));
            }
            if let Some(m) = g.members.iter().find(|m| !m.mounted) {
                return Err(format!("node {n} group {fs}: member {} not mounted", m.node.0));
            }
            let k = w.nodes[n as usize].kernel.get(&fs);
            if !k.is_some_and(|k| k.phase == KPhase::Mounted && !k.withdrawn && !k.blocked) {
                return Err(format!("node {n} is a member of {fs} but its kernel is {:?}", k));
            }
            groups.entry(fs).or_default().push((n, members));
        }
    }
    for (fs, views) in groups.iter() {
        let holders: Vec<u32> = views.iter().map(|(n, _)| *n).collect();
        for (n, members) in views {
            if *members != holders {
                return Err(format!(
                    "node {n} sees {fs} members {members:?} but the nodes with the group are {holders:?}"
                ));
            }
        }
    }
    let explained: Vec<String> = ids
        .iter()
        .filter_map(|n| w.nodes[*n as usize].daemon.as_ref().map(|_| *n))
        .collect::<Vec<u32>>()
        .into_iter()
        .flat_map(|n| {
            w.status_clone(n)
                .map(|st| st.groups.iter().filter(|g| explained_wait(g)).map(|g| g.fs.to_string()).collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect();
    for node in w.nodes.iter().skip(1) {
        for (fs, k) in node.kernel.iter() {
            if k.phase != KPhase::Idle && !groups.get(fs).is_some_and(|v| v.iter().any(|(n, _)| *n == node.id)) {
                return Err(format!(
                    "node {}'s kernel has {fs} ({:?}) but it is no member of the group",
                    node.id, k.phase
                ));
            }
        }
    }
    super::journal_exclusivity::check_all(w)?;
    let left = super::recovery_before_reuse::unreplayed(w);
    if let Some((fs, j, by)) = left.iter().find(|(fs, _, _)| !explained.contains(fs)) {
        return Err(format!("journal {j} of {fs} written by dead node {by} was never replayed"));
    }
    if let Some((a, b)) = w.inv.stale.live_diverged().first() {
        return Err(format!(
            "diverged daemons n{}/inc{} and n{}/inc{} both still run (stale node not reset)",
            a.0, a.1, b.0, b.1
        ));
    }
    Ok(())
}
