//! Property 1, agreement: all members that complete the same change of a
//! group agree on its member set (with modes), journal map, mounted flags,
//! first-mount state and recovery set. A change is identified by the group,
//! the *simulator's* ring the generation's seq refers to (two partitions can
//! carry the same corosync seq), the daemon group's lifetime in that ring (a
//! group that emptied and was founded again restarts its epochs) and the
//! epoch. The same for the daemon
//! group: every member completing one daemon sync sees the same peers (node,
//! incarnation, stale verdict).

use cohort_core::status::GroupStatus;
use cohort_core::wire::Mode;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey {
    pub group: u32,
    /// (simulator ring, daemon-group lifetime in that ring)
    pub ring: (usize, u64),
    pub epoch: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSnap {
    /// (node, mode, jid, mounted)
    pub members: Vec<(u32, Mode, Option<u16>, bool)>,
    pub journals: u16,
    pub first_done: bool,
    /// (jid, attempts)
    pub recoveries: Vec<(u16, u16)>,
}

impl GroupSnap {
    pub fn of(g: &GroupStatus) -> GroupSnap {
        GroupSnap {
            members: g.members.iter().map(|m| (m.node.0, m.mode, m.jid.map(|j| j.0), m.mounted)).collect(),
            journals: g.journals,
            first_done: g.first_done,
            recoveries: g.recoveries.iter().map(|(j, a)| (j.0, *a)).collect(),
        }
    }
}

pub type Peers = Vec<(u32, Option<u64>, bool)>;

#[derive(Default, Debug)]
pub struct State {
    groups: BTreeMap<GroupKey, (u32, GroupSnap)>,
    daemons: BTreeMap<((usize, u64), u32), (u32, Peers)>,
}

pub fn group_synced(st: &mut State, key: GroupKey, node: u32, snap: GroupSnap) -> Result<(), String> {
    if !snap.members.iter().any(|m| m.0 == node) {
        return Err(format!("node {node} completed a change it is not a member of: {:?}", snap.members));
    }
    match st.groups.get(&key) {
        None => {
            st.groups.insert(key, (node, snap));
            Ok(())
        }
        Some((first, s)) if *s == snap => {
            let _ = first;
            Ok(())
        }
        Some((first, s)) => Err(format!("node {first} completed it with {s:?}, node {node} with {snap:?}")),
    }
}

pub fn daemon_synced(
    st: &mut State,
    key: ((usize, u64), u32),
    node: u32,
    peers: &[(u32, Option<u64>, bool)],
) -> Result<(), String> {
    match st.daemons.get(&key) {
        None => {
            st.daemons.insert(key, (node, peers.to_vec()));
            Ok(())
        }
        Some((_, p)) if p.as_slice() == peers => Ok(()),
        Some((first, p)) => {
            Err(format!("node {first} completed it with peers (node, inc, stale) {p:?}, node {node} with {peers:?}"))
        }
    }
}
