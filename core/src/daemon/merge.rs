//! Stateful-merge detection and deterministic resolution.
//!
//! Input: the daemon starts of every member of one generation (agreed data:
//! every member receives exactly the same set). Output: which members must
//! reset. Every member computes the same verdict, so there is never an
//! operator wait and never a pair of halves killing each other.
//!
//! **Detection.** Member `y` says in its start (`failed_mask`) which current
//! members it recorded as failed *in their current incarnation*. A member
//! `x` that has state and is listed as failed by another member `y` that has
//! state came back from a partition with diverged state: `x` and `y` belong
//! to different pre-merge partitions. (A node that restarted has a new
//! incarnation and is never listed; a node without state is harmless.)
//!
//! **Partitions.** Stateful members are grouped by "neither recorded the
//! other as failed" (union-find over sorted node ids, so deterministic).
//! Members without state belong to no partition and never reset.
//!
//! **The rule**, applied in order until one partition is ahead:
//! 1. a partition that fenced (successfully) a member of another partition
//!    wins (the two-node rule: the side that fenced the other);
//! 2. a partition that is quorate wins over one that is not, and between
//!    quorate ones the one quorate since the earlier generation wins (the
//!    continuously quorate side);
//! 3. the partition with more stateful members wins;
//! 4. the partition holding the lowest node id wins (even splits, three or
//!    more partitions).
//!
//! Exactly one partition keeps its state; every stateful member of the
//! others resets (`ResetSelf` on itself, `Kill` from the lowest winner as a
//! backup).

use crate::gcs::MAX_NODES;
use crate::ids::{Generation, NodeId};

/// What the verdict needs of one member's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MergeInput {
    pub node: NodeId,
    pub has_state: bool,
    pub quorate_since: Option<Generation>,
    pub failed_mask: u32,
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
        let stateful = |i: usize| members[i].has_state;
        let listed = |i: usize, j: usize| members[i].failed_mask & (1u32 << j) != 0;
        // union-find, parent indices
        let mut parent = [0u8; MAX_NODES];
        for (i, p) in parent.iter_mut().enumerate().take(n) {
            *p = i as u8;
        }
        fn find(parent: &mut [u8; MAX_NODES], mut i: usize) -> usize {
            while usize::from(parent[i]) != i {
                let p = usize::from(parent[i]);
                parent[i] = parent[p];
                i = p;
            }
            i
        }
        let mut contested = false;
        for i in 0..n {
            for j in (i + 1)..n {
                if !stateful(i) || !stateful(j) {
                    continue;
                }
                if listed(i, j) || listed(j, i) {
                    contested = true;
                    continue;
                }
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                if a != b {
                    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                    parent[hi] = lo as u8;
                }
            }
        }
        if !contested {
            return Verdict::default();
        }
        // Partition masks, keyed by root.
        let mut masks = [0u32; MAX_NODES];
        for i in 0..n {
            if stateful(i) {
                let r = find(&mut parent, i);
                masks[r] |= 1 << i;
            }
        }
        let mut best: Option<(usize, Key)> = None;
        let mut partitions = 0u8;
        for (r, &mask) in masks.iter().enumerate().take(n) {
            if mask == 0 {
                continue;
            }
            partitions += 1;
            let key = key_of(members, mask);
            if best.as_ref().is_none_or(|(_, b)| key > *b) {
                best = Some((r, key));
            }
        }
        let Some((win, _)) = best else { return Verdict::default() };
        let winners = masks[win];
        let mut losers = 0u32;
        for (r, &mask) in masks.iter().enumerate().take(n) {
            if r != win {
                losers |= mask;
            }
        }
        invariant!(winners & losers == 0, "a member both wins and loses");
        invariant!(winners != 0, "a verdict without winners");
        Verdict { losers, winners, partitions }
    }
}

/// Ordering key of a partition: larger is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    fenced_other: bool,
    quorate: bool,
    /// Earlier quorate-since is better: stored inverted.
    quorate_since_inv: (u64, u32),
    size: u32,
    /// Lower node id is better: stored inverted.
    min_node_inv: u32,
}

fn key_of(members: &[MergeInput], mask: u32) -> Key {
    let mut fenced_other = false;
    let mut since: Option<Generation> = None;
    let mut quorate = true;
    let mut min_node = u32::MAX;
    for (i, m) in members.iter().enumerate() {
        if mask & (1 << i) == 0 {
            continue;
        }
        if m.fenced_mask & !mask != 0 {
            fenced_other = true;
        }
        match m.quorate_since {
            None => quorate = false,
            Some(g) => since = Some(since.map_or(g, |s: Generation| s.max(g))),
        }
        min_node = min_node.min(m.node.0);
    }
    let since =
        if quorate { since.unwrap_or(Generation::ZERO) } else { Generation { ring: u64::MAX, epoch: u32::MAX } };
    Key {
        fenced_other,
        quorate,
        quorate_since_inv: (u64::MAX - since.ring, u32::MAX - since.epoch),
        size: mask.count_ones(),
        min_node_inv: u32::MAX - min_node,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(node: u32, failed: &[usize], q: Option<u64>) -> MergeInput {
        let mut mask = 0;
        for &i in failed {
            mask |= 1 << i;
        }
        MergeInput {
            node: NodeId(node),
            has_state: true,
            quorate_since: q.map(Generation::ring_start),
            failed_mask: mask,
            fenced_mask: 0,
        }
    }

    #[test]
    fn no_merge_no_losers() {
        let v = resolve(&[m(1, &[], Some(1)), m(2, &[], Some(1)), m(3, &[], Some(1))]);
        assert_eq!(v, Verdict::default());
    }

    #[test]
    fn quorate_side_wins_even_when_smaller_id_is_on_the_other_side() {
        // 1 was cut off alone (not quorate), 2,3,4 stayed quorate since ring 1.
        let v = resolve(&[m(1, &[1, 2, 3], None), m(2, &[0], Some(1)), m(3, &[0], Some(1)), m(4, &[0], Some(1))]);
        assert_eq!(v.losers, 0b0001);
        assert_eq!(v.winners, 0b1110);
        assert_eq!(v.partitions, 2);
    }

    #[test]
    fn continuously_quorate_beats_recently_quorate() {
        // Both report quorate now (e.g. quorum none), but 3 only since ring 9.
        let v = resolve(&[m(1, &[2], Some(2)), m(2, &[2], Some(2)), m(3, &[0, 1], Some(9))]);
        assert_eq!(v.losers, 0b100);
    }

    #[test]
    fn two_node_side_that_fenced_wins() {
        let mut a = m(1, &[1], Some(1));
        let mut b = m(2, &[0], Some(1));
        b.fenced_mask = 0b01; // node 2 fenced node 1
        a.fenced_mask = 0;
        let v = resolve(&[a, b]);
        assert_eq!(v.losers, 0b01);
        // and the mirror image
        let mut a2 = m(1, &[1], Some(1));
        a2.fenced_mask = 0b10;
        let v2 = resolve(&[a2, m(2, &[0], Some(1))]);
        assert_eq!(v2.losers, 0b10);
    }

    #[test]
    fn even_split_lowest_node_side_wins_and_only_one_side_loses() {
        let v = resolve(&[m(1, &[2, 3], None), m(2, &[2, 3], None), m(3, &[0, 1], None), m(4, &[0, 1], None)]);
        assert_eq!(v.winners, 0b0011);
        assert_eq!(v.losers, 0b1100);
    }

    #[test]
    fn three_way_merge_resolves_to_one_partition() {
        // {1,2} {3} {4,5}: sizes 2,1,2 -> tie on size between {1,2} and {4,5}, lowest id wins.
        let v = resolve(&[
            m(1, &[2, 3, 4], None),
            m(2, &[2, 3, 4], None),
            m(3, &[0, 1, 3, 4], None),
            m(4, &[0, 1, 2], None),
            m(5, &[0, 1, 2], None),
        ]);
        assert_eq!(v.partitions, 3);
        assert_eq!(v.winners, 0b00011);
        assert_eq!(v.losers, 0b11100);
    }

    #[test]
    fn bigger_partition_wins_without_quorum_info() {
        let v = resolve(&[m(1, &[1, 2], None), m(2, &[0], None), m(3, &[0], None)]);
        assert_eq!(v.losers, 0b001);
    }

    #[test]
    fn stateless_members_never_lose() {
        let mut clean = m(3, &[], None);
        clean.has_state = false;
        // 1 lists 3 as failed but 3 has no state: no merge at all.
        let v = resolve(&[m(1, &[2], Some(1)), m(2, &[], Some(1)), clean]);
        assert_eq!(v, Verdict::default());
    }

    #[test]
    fn verdict_is_the_same_whatever_member_computes_it() {
        // resolve() takes only agreed data; this documents that the masks, not
        // the caller, decide: permuting nothing but calling twice is equal.
        let input = [m(1, &[1], None), m(2, &[0], None)];
        assert_eq!(resolve(&input), resolve(&input));
        assert_eq!(resolve(&input).losers, 0b10);
    }
}
