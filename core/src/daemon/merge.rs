//! Stateful-merge detection and deterministic resolution.
//!
//! Input: the daemon starts of every member of one generation (agreed data:
//! every member receives exactly the same set). Output: which members must
//! reset. Every member computes the same verdict, so there is never an
//! operator wait and never a pair of halves killing each other.
//!
//! **Detection and partitions.** Every start carries the sender's
//! *lineage*: the generation of the last daemon cycle it completed, its
//! leader, and a digest of every message delivered to it since (`acted`,
//! taken when the new cycle began: the membership change's place in the
//! delivered stream). The members of one pre-merge partition completed their
//! cycles and delivered their messages together, so they share it; two sides
//! that completed a cycle after they lost each other, or that delivered
//! different messages since their last common cycle, have different
//! lineages. (Messages are applied between cycles: a recovery result
//! delivered right after a membership change, before the next cycle
//! completes, is applied by the members that got it; a member listed in
//! that view that never installed it comes back without it: CORE-BUG-14.)
//! Stateful members are grouped by lineage; two or more groups means a
//! stateful merge. (Sides that neither completed a cycle nor delivered
//! anything apart share the old lineage and merge back safely. A restarted
//! node has no state and belongs to no partition.)
//!
//! **The rule**, applied in order until one partition is ahead:
//! 1. a partition that fenced (successfully) a member of another partition
//!    wins (the two-node rule: the side that fenced the other);
//! 2. the partition whose members completed a daemon cycle in a quorate
//!    ring most recently wins (`quorate_synced`: the side that stayed
//!    quorate after the split has a later one than a side that lost quorum
//!    or a node that was paused through the split; the merge ring's own
//!    quorum never counts, so callback timing cannot decide);
//! 3. the partition with more stateful members wins;
//! 4. the partition holding the lowest node id wins (even splits, three or
//!    more partitions).
//!
//! Exactly one partition keeps its state; every stateful member of the
//! others resets (`ResetSelf` on itself, `Kill` from the lowest winner as a
//! backup).

use crate::gcs::MAX_NODES;
use crate::ids::{Generation, NodeId};
use cohort_types::bounded::PushBounded;

/// (last completed cycle, its leader, digest of the messages applied since).
pub type Lineage = (Generation, NodeId, u64);

/// Fold one delivered message into an `acted` digest (word-wise FNV-1a
/// style: the same messages in the same order give the same digest).
pub fn fold_acted(mut h: u64, bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    if h == 0 {
        h = 0xcbf2_9ce4_8422_2325;
    }
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(PRIME);
    }
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    (h ^ bytes.len() as u64).wrapping_mul(PRIME)
}

/// What the verdict needs of one member's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MergeInput {
    pub node: NodeId,
    pub has_state: bool,
    /// The last daemon cycle the member completed: its generation and its
    /// leader (both sides of a corosync split share ring seqs).
    pub lineage: Lineage,
    pub quorate_synced: Option<Generation>,
    pub fenced_mask: u32,
}

/// The verdict: bit i set = the i-th member (same order as the inputs)
/// must reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Verdict {
    pub losers: u32,
    /// Bitmask of the winning partition (0 when there was no stateful merge).
    pub winners: u32,
    /// How many stateful partitions met (1 or 0: no merge).
    pub partitions: u8,
}

/// Compute the verdict. `members` must be sorted by node id (the order the
/// masks refer to); at most 32.
pub fn resolve(members: &[MergeInput]) -> Verdict {
    let n = members.len().min(MAX_NODES);
    let members = &members[..n];
    #[cfg(feature = "broken-skip-merge-check")]
    {
        let _ = members;
        return Verdict::default();
    }
    #[allow(unreachable_code)]
    {
        // Partition masks, one per distinct lineage of a stateful member.
        let mut lineages: heapless::Vec<(Lineage, u32), MAX_NODES> = heapless::Vec::new();
        for (i, m) in members.iter().enumerate() {
            if !m.has_state {
                continue;
            }
            match lineages.iter_mut().find(|(g, _)| *g == m.lineage) {
                Some((_, mask)) => *mask |= 1 << i,
                None => {
                    lineages.push_bounded((m.lineage, 1 << i));
                }
            }
        }
        if lineages.len() < 2 {
            return Verdict::default();
        }
        let mut best: Option<(u32, Key)> = None;
        for (_, mask) in lineages.iter() {
            let key = key_of(members, *mask);
            if best.as_ref().is_none_or(|(_, b)| key > *b) {
                best = Some((*mask, key));
            }
        }
        let Some((winners, _)) = best else { return Verdict::default() };
        let mut losers = 0u32;
        for (_, mask) in lineages.iter() {
            if *mask != winners {
                losers |= mask;
            }
        }
        invariant!(winners & losers == 0, "a member both wins and loses");
        invariant!(winners != 0 && losers != 0, "a contested merge without a loser");
        Verdict { losers, winners, partitions: lineages.len() as u8 }
    }
}

/// Ordering key of a partition: larger is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    fenced_other: bool,
    /// Later is better.
    quorate_synced: Option<Generation>,
    size: u32,
    /// Lower node id is better: stored inverted.
    min_node_inv: u32,
}

fn key_of(members: &[MergeInput], mask: u32) -> Key {
    let mut fenced_other = false;
    let mut quorate_synced: Option<Generation> = None;
    let mut min_node = u32::MAX;
    for (i, m) in members.iter().enumerate() {
        if mask & (1 << i) == 0 {
            continue;
        }
        if m.fenced_mask & !mask != 0 {
            fenced_other = true;
        }
        // Members of one partition synced together; the best evidence any of
        // them holds speaks for the partition.
        quorate_synced = quorate_synced.max(m.quorate_synced);
        min_node = min_node.min(m.node.0);
    }
    Key { fenced_other, quorate_synced, size: mask.count_ones(), min_node_inv: u32::MAX - min_node }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Member `node` of the partition that last synced in ring `lineage`.
    fn m(node: u32, lineage: u64, q: Option<u64>) -> MergeInput {
        MergeInput {
            node: NodeId(node),
            has_state: true,
            lineage: (Generation::ring_start(lineage), NodeId(lineage as u32), 0),
            quorate_synced: q.map(Generation::ring_start),
            fenced_mask: 0,
        }
    }

    #[test]
    fn one_lineage_is_no_merge() {
        let v = resolve(&[m(1, 8, Some(8)), m(2, 8, Some(8)), m(3, 8, Some(8))]);
        assert_eq!(v, Verdict::default());
    }

    #[test]
    fn quorate_side_wins_even_when_smaller_id_is_on_the_other_side() {
        // 1 was cut off alone (its last cycle, ring 12, was not quorate:
        // its evidence is from ring 8), 2,3,4 stayed quorate (ring 12).
        let v = resolve(&[m(1, 12, Some(8)), m(2, 13, Some(13)), m(3, 13, Some(13)), m(4, 13, Some(13))]);
        assert_eq!(v.losers, 0b0001);
        assert_eq!(v.winners, 0b1110);
        assert_eq!(v.partitions, 2);
    }

    #[test]
    fn the_side_quorate_after_the_split_beats_a_paused_node() {
        // 1 and 2 completed a cycle in quorate ring 8 after the split; node 3
        // was paused through it and only has ring 4's evidence.
        let v = resolve(&[m(1, 8, Some(8)), m(2, 8, Some(8)), m(3, 4, Some(4))]);
        assert_eq!(v.losers, 0b100);
    }

    #[test]
    fn a_later_quorate_partition_beats_an_earlier_one_even_if_smaller() {
        let v = resolve(&[m(1, 4, Some(4)), m(2, 4, Some(4)), m(3, 9, Some(9))]);
        assert_eq!(v.losers, 0b011);
    }

    #[test]
    fn two_node_side_that_fenced_wins() {
        // Same ring seq on both sides (corosync), both quorate (two_node).
        let a = m(1, 12, Some(12));
        let mut b = m(2, 16, Some(12));
        b.fenced_mask = 0b01; // node 2 fenced node 1
        assert_eq!(resolve(&[a, b]).losers, 0b01);
        let mut a2 = m(1, 12, Some(12));
        a2.fenced_mask = 0b10;
        assert_eq!(resolve(&[a2, m(2, 16, Some(12))]).losers, 0b10);
    }

    #[test]
    fn even_split_lowest_node_side_wins_and_only_one_side_loses() {
        let v = resolve(&[m(1, 12, Some(8)), m(2, 12, Some(8)), m(3, 13, Some(8)), m(4, 13, Some(8))]);
        assert_eq!(v.winners, 0b0011);
        assert_eq!(v.losers, 0b1100);
    }

    #[test]
    fn three_way_merge_resolves_to_one_partition() {
        // {1,2} {3} {4,5}: sizes 2,1,2 -> tie on size between {1,2} and {4,5}, lowest id wins.
        let v = resolve(&[m(1, 12, None), m(2, 12, None), m(3, 13, None), m(4, 14, None), m(5, 14, None)]);
        assert_eq!(v.partitions, 3);
        assert_eq!(v.winners, 0b00011);
        assert_eq!(v.losers, 0b11100);
    }

    #[test]
    fn bigger_partition_wins_without_quorum_evidence() {
        let v = resolve(&[m(1, 12, None), m(2, 13, None), m(3, 13, None)]);
        assert_eq!(v.losers, 0b001);
    }

    #[test]
    fn stateless_members_never_lose() {
        let mut clean = m(3, 2, None);
        clean.has_state = false;
        let v = resolve(&[m(1, 8, Some(8)), m(2, 8, Some(8)), clean]);
        assert_eq!(v, Verdict::default());
    }

    #[test]
    fn a_contested_merge_always_has_exactly_one_winning_partition() {
        // Exhaustive over small shapes: lineages from {1,2,3} for 1..=6 members.
        for n in 1..=6usize {
            for code in 0..3u32.pow(n as u32) {
                let mut v: heapless::Vec<MergeInput, MAX_NODES> = heapless::Vec::new();
                let mut c = code;
                for i in 0..n {
                    v.push_bounded(m(i as u32 + 1, u64::from(c % 3) + 1, None));
                    c /= 3;
                }
                let r = resolve(&v);
                let distinct = (1..=3u64).filter(|l| v.iter().any(|x| x.lineage.0.ring == *l)).count();
                if distinct >= 2 {
                    assert_ne!(r.winners, 0);
                    assert_ne!(r.losers, 0);
                    assert_eq!(r.winners | r.losers, (1 << n) - 1);
                    // Winners share one lineage.
                    let w: heapless::Vec<u64, 8> =
                        (0..n).filter(|i| r.winners & (1 << i) != 0).map(|i| v[i].lineage.0.ring).collect();
                    assert!(w.iter().all(|l| *l == w[0]));
                } else {
                    assert_eq!(r, Verdict::default());
                }
            }
        }
    }
}
