//! Fencing: a failed member that had state is fenced before any of its
//! journals is touched.
//!
//! The actor for a target is chosen from agreed data only: the members that
//! were old members in the last daemon cycle (the survivors that were
//! members before the failure), sorted by node id, indexed by the number of
//! failed attempts so far. A failure is broadcast; the next actor retries
//! after a backoff timer. Nothing is fenced without quorum at the current
//! generation, and only once the daemon cycle is complete. A target that
//! comes back with a new incarnation has restarted cleanly: its fencing is
//! cancelled.

use crate::gcs::MAX_NODES;
use crate::ids::{Member, NodeId};
use crate::node::Node;
use crate::vocab::{Effect, FenceInputError, Notice, Out, TimerToken, TIMER_FENCE};
use crate::wire::{FenceResult, Header, PendingFence};
use cohort_types::bounded::PushBounded;

use super::DaemonPhase;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FenceRec {
    pub target: Member,
    /// Failed attempts so far (agreed).
    pub attempts: u16,
    /// We asked the adapter to fence and wait for its answer.
    pub in_flight: bool,
    /// Our adapter's answer, broadcast until applied.
    pub outcome: Option<bool>,
    /// Backoff before our retry.
    pub timer: Option<TimerToken>,
}

impl Node {
    pub(crate) fn fence_add(&mut self, m: Member) {
        if let Some(r) = self.d.fence.iter_mut().find(|r| r.target.node == m.node) {
            if m.inc > r.target.inc {
                *r = FenceRec { target: m, attempts: 0, in_flight: false, outcome: None, timer: None };
            }
            return;
        }
        let rec = FenceRec { target: m, attempts: 0, in_flight: false, outcome: None, timer: None };
        if self.d.fence.push(rec).is_err() {
            warn!("fence list full: node {} not recorded, replays halted", m.node.0);
            self.d.fence_table_full = true;
        }
    }

    /// Forget fenced records of nodes that are neither configured (when a
    /// nodelist is known) nor members: a node removed from the cluster can
    /// only come back configured again, with a new incarnation. Without
    /// this the records of replaced nodes would fill the table (one entry
    /// per node id) over a long life (tests/CORE_BUGS.md, "node-keyed
    /// tables"). Its merge evidence (`fenced_mask`) is only about current
    /// members, which are kept.
    pub(crate) fn prune_fenced(&mut self) {
        if self.d.configured.is_empty() {
            return;
        }
        let keep = |d: &crate::daemon::DaemonState, n: NodeId| d.configured.contains(&n) || d.peer(n).is_some();
        let fenced: heapless::Vec<Member, MAX_NODES> =
            self.d.fenced.iter().filter(|m| keep(&self.d, m.node)).copied().collect();
        self.d.fenced = fenced;
        let pre: crate::gcs::NodeList = self.d.fenced_pre_gap.iter().filter(|n| keep(&self.d, **n)).copied().collect();
        self.d.fenced_pre_gap = pre;
    }

    /// Replace the pending set with the agreed one, keeping our own progress
    /// on targets that stay.
    pub(crate) fn fence_replace(&mut self, keep: &[PendingFence]) {
        let mut next: heapless::Vec<FenceRec, MAX_NODES> = heapless::Vec::new();
        for p in keep {
            let fresh =
                FenceRec { target: p.target, attempts: p.attempts, in_flight: false, outcome: None, timer: None };
            let rec = match self.d.fence.iter().find(|r| r.target == p.target).copied() {
                // Our own progress stays valid for the agreed attempt only.
                Some(r) if r.attempts == p.attempts => r,
                Some(r) => FenceRec { in_flight: r.in_flight, timer: r.timer, ..fresh },
                None => fresh,
            };
            next.push_bounded(rec);
        }
        crate::gcs::sort_small_by_key(&mut next, |r| r.target.node);
        self.d.fence = next;
    }

    /// Is `m` safe to recover (not waiting for fencing)?
    pub fn fence_clear(&self, m: Member) -> bool {
        crate::planted::on(crate::planted::Bug::SkipFenceWait)
            || (!self.d.fence_table_full
                && !self.d.fence.iter().any(|r| r.target.node == m.node && r.target.inc <= m.inc))
    }

    /// The agreed fence actors, sorted.
    fn fence_actors(&self) -> heapless::Vec<NodeId, MAX_NODES> {
        let mut v: heapless::Vec<NodeId, MAX_NODES> =
            self.d.peers.iter().filter(|p| p.old && !self.is_stale_node(p.node)).map(|p| p.node).collect();
        if v.is_empty() {
            v = self.d.peers.iter().filter(|p| !self.is_stale_node(p.node)).map(|p| p.node).collect();
        }
        v
    }

    pub(crate) fn is_stale_node(&self, n: NodeId) -> bool {
        self.d.peer(n).and_then(|p| p.inc).is_some_and(|inc| self.d.is_stale(Member { node: n, inc }))
    }

    pub(crate) fn fence_actor(&self, attempts: u16) -> Option<NodeId> {
        let a = self.fence_actors();
        if a.is_empty() {
            return None;
        }
        a.get(usize::from(attempts) % a.len()).copied()
    }

    pub(crate) fn fence_kick(&mut self) {
        if self.d.phase != DaemonPhase::Complete {
            return;
        }
        let gen = self.barrier.current();
        let quorate = self.quorate_now();
        let me = self.cfg.node;
        for i in 0..self.d.fence.len() {
            let rec = self.d.fence[i];
            if let Some(ok) = rec.outcome {
                self.out
                    .send(Out::FenceResult { gen, res: FenceResult { target: rec.target, attempt: rec.attempts, ok } });
                continue;
            }
            if !quorate || rec.in_flight || rec.timer.is_some() {
                continue;
            }
            if self.fence_actor(rec.attempts) == Some(me) {
                self.d.fence[i].in_flight = true;
                self.out.effect(Effect::Fence { target: rec.target });
            }
        }
    }

    /// The adapter's fence agent finished.
    pub(crate) fn on_fenced(&mut self, target: Member, ok: bool) -> Result<(), FenceInputError> {
        let Some(i) = self.d.fence.iter().position(|r| r.target == target && r.in_flight) else {
            return Err(FenceInputError::NotRequested);
        };
        self.d.fence[i].in_flight = false;
        self.d.fence[i].outcome = Some(ok);
        self.fence_kick();
        Ok(())
    }

    /// A broadcast fence result, applied in agreed order.
    pub(crate) fn on_fence_result(&mut self, h: &Header, r: &FenceResult) -> bool {
        // A success counts whatever attempt it was (and covers older
        // incarnations of the node); a failure only for the current attempt.
        let Some(i) = self.d.fence.iter().position(|x| {
            x.target.node == r.target.node && if r.ok { x.target.inc <= r.target.inc } else { x.target == r.target }
        }) else {
            return false;
        };
        if !r.ok && self.d.fence[i].attempts != r.attempt {
            return false;
        }
        let me = self.cfg.node;
        if h.sender.node == me {
            self.d.fence[i].outcome = None;
        }
        if r.ok {
            self.d.fence.remove(i);
            let m = r.target;
            if let Some(e) = self.d.fenced.iter_mut().find(|x| x.node == m.node) {
                *e = m;
            } else {
                if self.d.fenced.is_full() {
                    self.prune_fenced();
                }
                self.d.fenced.push_bounded(m);
            }
            self.out.notify(Notice::Fenced { target: r.target });
            self.kick();
        } else {
            let attempts = r.attempt.saturating_add(1);
            self.d.fence[i].attempts = attempts;
            self.d.fence[i].outcome = None;
            self.out.notify(Notice::FenceFailed { target: r.target, attempt: r.attempt });
            if self.fence_actor(attempts) == Some(me) {
                let t = self.out.set_timer(self.now, TIMER_FENCE, self.cfg.fence_retry_ms);
                self.d.fence[i].timer = Some(t);
            }
        }
        true
    }

    pub(crate) fn on_fence_timer(&mut self, t: TimerToken) {
        // One grace timer may cover several fences (a gap's).
        let mut any = false;
        for r in self.d.fence.iter_mut().filter(|r| r.timer == Some(t)) {
            r.timer = None;
            any = true;
        }
        if any {
            self.fence_kick();
        }
    }
}
