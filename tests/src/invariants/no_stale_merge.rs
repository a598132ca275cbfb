//! Property 4, no stale merge, on the simulator's partition history.
//!
//! For every pair of live daemon instances (node, incarnation) the
//! simulator remembers whether they were ever in one ring together, whether
//! they were later in different rings while both kept running (partition,
//! pause), whether during that time one of them *moved on* (completed a
//! daemon sync in a ring the other was not part of: only then can state
//! change, since group changes, fencing and requests all wait for a
//! completed daemon cycle), and, when they meet again in one ring, whether
//! *both* had state (had completed a mount-group sync) at that moment: then
//! they *diverged* and DOMAIN.md says one of them must reset before the
//! other trusts it.
//!
//! Checked: a node never completes a group sync with a diverged peer in the
//! group, and never completes a daemon sync with a diverged peer that it did
//! not mark stale. Liveness checks that no diverged pair survives.

use crate::world::Inst;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, Default)]
struct Pair {
    together: bool,
    apart: bool,
    moved: bool,
    diverged: bool,
}

#[derive(Default, Debug)]
pub struct State {
    pairs: BTreeMap<(Inst, Inst), Pair>,
}

fn key(a: Inst, b: Inst) -> (Inst, Inst) {
    if a < b {
        (a, b)
    } else {
        (b, a)
    }
}

impl State {
    /// After every ring change or daemon start: (instance, its node's ring,
    /// stateful) of every live daemon.
    pub fn on_topology(&mut self, insts: &[(Inst, Option<usize>, bool)]) {
        for (i, (a, ra, sa)) in insts.iter().enumerate() {
            for (b, rb, sb) in insts.iter().skip(i + 1) {
                let p = self.pairs.entry(key(*a, *b)).or_default();
                let same = ra.is_some() && ra == rb;
                if same {
                    if p.apart {
                        p.apart = false;
                        if p.moved && *sa && *sb {
                            p.diverged = true;
                        }
                        p.moved = false;
                    }
                    p.together = true;
                } else if p.together {
                    p.apart = true;
                }
            }
        }
    }

    /// `me` completed a daemon sync in a ring whose members are `ring`:
    /// every instance it was together with that is not in that ring now
    /// has moved apart from it.
    pub fn on_sync_in_ring(&mut self, me: Inst, ring: &[u32]) {
        for ((a, b), p) in self.pairs.iter_mut() {
            let other = if *a == me {
                b
            } else if *b == me {
                a
            } else {
                continue;
            };
            if p.together && !ring.contains(&other.0) {
                p.moved = true;
            }
        }
    }

    /// All instances of this node are dead.
    pub fn forget_node(&mut self, n: u32) {
        self.pairs.retain(|(a, b), _| a.0 != n && b.0 != n);
    }

    pub fn diverged(&self, a: Inst, b: Inst) -> bool {
        self.pairs.get(&key(a, b)).is_some_and(|p| p.diverged)
    }

    pub fn live_diverged(&self) -> Vec<(Inst, Inst)> {
        self.pairs.iter().filter(|(_, p)| p.diverged).map(|(k, _)| *k).collect()
    }
}

pub fn on_group_synced(st: &State, me: Inst, members: &[Inst]) -> Result<(), String> {
    for m in members {
        if st.diverged(me, *m) {
            return Err(format!(
                "node {} (inc {}) synced a group with node {} (inc {}) although both kept running with state while partitioned apart and neither reset",
                me.0, me.1, m.0, m.1
            ));
        }
    }
    Ok(())
}

pub fn on_daemon_synced(st: &State, me: Inst, fresh_peers: &[Inst]) -> Result<(), String> {
    for m in fresh_peers {
        if st.diverged(me, *m) {
            return Err(format!(
                "node {} (inc {}) completed a daemon sync trusting node {} (inc {}): both kept running with state while partitioned apart, neither was marked stale",
                me.0, me.1, m.0, m.1
            ));
        }
    }
    Ok(())
}
