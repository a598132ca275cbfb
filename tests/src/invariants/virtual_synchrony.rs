//! Property 8, virtual synchrony and total order of the transport (udp
//! model: the core's `vs` protocol), checked on the events the simulator
//! feeds the nodes:
//!
//! * every daemon instance's views have strictly increasing ids and contain
//!   the instance itself;
//! * total order: all members of a view that deliver messages in it deliver
//!   the same sequence (each one's sequence is a prefix of the longest);
//! * virtual synchrony: instances that install the same next view after
//!   the same view delivered the same messages in the old one;
//! * integrity: a message is delivered only from a member of the view, and
//!   only if that node's daemon really handed those bytes to its transport;
//! * the `Quorum` event of a view matches the simulator's own computation
//!   from the member count (checked in `world/udp.rs`).
//!
//! Messages are compared as (sender, FNV-1a of the bytes). A sim ring is one
//! view (see `world/udp.rs` for how view ids map to rings).

use crate::world::Inst;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Default, Debug)]
pub struct State {
    /// Per sim ring: the longest delivered sequence any member reported.
    canon: BTreeMap<usize, Vec<(u32, u64)>>,
    /// Per live instance: (ring, view id, messages delivered in it).
    cur: BTreeMap<Inst, (usize, u64, usize)>,
    /// (old ring, new ring) -> (first instance to move, its delivered count).
    moves: BTreeMap<(usize, usize), (Inst, usize)>,
    /// (node, hash) of every message a daemon handed to its transport.
    sent: BTreeSet<(u32, u64)>,
}

/// A daemon handed a message to its transport.
pub fn on_send(st: &mut State, node: u32, hash: u64) {
    st.sent.insert((node, hash));
}

/// `inst` installs the view `view_id` (sim ring `ri`).
pub fn on_ring(st: &mut State, inst: Inst, ri: usize, view_id: u64) -> Result<(), String> {
    if let Some(&(old, old_id, count)) = st.cur.get(&inst) {
        if view_id <= old_id {
            return Err(format!("view id {view_id:#x} does not increase (previous view {old_id:#x})"));
        }
        match st.moves.get(&(old, ri)) {
            None => {
                st.moves.insert((old, ri), (inst, count));
            }
            Some(&(first, c)) if c != count => {
                return Err(format!(
                    "coming from view {old_id:#x}, node {} (inc {}) delivered {c} messages in it, node {} (inc {}) {count}",
                    first.0, first.1, inst.0, inst.1
                ));
            }
            Some(_) => {}
        }
    }
    st.cur.insert(inst, (ri, view_id, 0));
    Ok(())
}

/// `inst`, in ring `ri` with `members`, delivers a message of `from`.
pub fn on_deliver(st: &mut State, inst: Inst, ri: usize, members: &[u32], from: u32, hash: u64) -> Result<(), String> {
    let Some(cur) = st.cur.get_mut(&inst) else {
        return Err(format!("node {} (inc {}) delivers before installing a view", inst.0, inst.1));
    };
    if cur.0 != ri {
        return Err(format!("node {} delivers in a ring it is not in", inst.0));
    }
    if !members.contains(&from) {
        return Err(format!("node {} delivers a message of node {from}, not a member {members:?}", inst.0));
    }
    if !st.sent.contains(&(from, hash)) {
        return Err(format!("node {} delivers a message node {from} never sent (hash {hash:016x})", inst.0));
    }
    let k = cur.2;
    cur.2 += 1;
    let canon = st.canon.entry(ri).or_default();
    match canon.get(k) {
        None => canon.push((from, hash)),
        Some(&(f, h)) if (f, h) == (from, hash) => {}
        Some(&(f, h)) => {
            return Err(format!(
                "total order: node {} (inc {}) delivers message #{k} from node {from} ({hash:016x}), another member delivered #{k} from node {f} ({h:016x})",
                inst.0, inst.1
            ));
        }
    }
    Ok(())
}

/// How many messages of its current view others delivered and `inst` did
/// not (yet).
pub fn lagging(st: &State, inst: Inst) -> usize {
    let Some(&(ri, _, count)) = st.cur.get(&inst) else { return 0 };
    st.canon.get(&ri).map_or(0, |c| c.len().saturating_sub(count))
}

/// Every instance of node `n` is gone.
pub fn forget_node(st: &mut State, n: u32) {
    st.cur.retain(|i, _| i.0 != n);
}
