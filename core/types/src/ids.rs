//! Identifier newtypes. `Generation` is only ever compared and advanced here.

use serde::{Deserialize, Serialize};

/// A cluster node id (corosync nodeid). Zero is never a valid node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NodeId(pub u32);

impl NodeId {
    pub const fn is_valid(self) -> bool {
        self.0 != 0
    }
}

/// One run of a daemon on a node. Persisted and incremented by the adapter at
/// every start, so a restarted daemon is always told apart from a stale one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Incarnation(pub u64);

/// A node in one incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Member {
    pub node: NodeId,
    pub inc: Incarnation,
}

/// The generation an event or message belongs to.
///
/// `ring` is the transport's global, only-growing configuration number (the
/// corosync totem ring seq, or the UDP transport's view id). `epoch` counts
/// the membership events (process joins/leaves and mount-group changes) that
/// the daemon group applied, in agreed order, since that ring was installed.
/// Ordering is lexicographic; a larger generation is always newer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Generation {
    pub ring: u64,
    pub epoch: u32,
}

impl Generation {
    pub const ZERO: Generation = Generation { ring: 0, epoch: 0 };

    /// The first generation of a newly installed ring.
    pub const fn ring_start(ring: u64) -> Generation {
        Generation { ring, epoch: 0 }
    }

    /// The next generation inside the same ring (saturating: a ring that sees
    /// 4 billion process-level events keeps its last epoch, which only makes
    /// the node wait for the next ring change).
    pub const fn next_epoch(self) -> Generation {
        Generation { ring: self.ring, epoch: self.epoch.saturating_add(1) }
    }
}

/// A group on the wire: 0 is the daemon group, a mount group is the FNV-1a
/// hash of its filesystem name with bit 0 forced on (never 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GroupId(pub u32);

impl GroupId {
    pub const DAEMON: GroupId = GroupId(0);

    pub fn of_fs(name: &str) -> GroupId {
        let mut h: u32 = 0x811c_9dc5;
        for b in name.as_bytes() {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
        GroupId(h | 1)
    }
}

/// A journal id inside one filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Jid(pub u16);

/// Simulated or real monotonic time in milliseconds, always an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant(pub u64);

impl Instant {
    pub const fn plus_ms(self, ms: u64) -> Instant {
        Instant(self.0.saturating_add(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_orders_ring_first() {
        let a = Generation { ring: 5, epoch: 9 };
        let b = Generation::ring_start(6);
        assert!(a < b);
        assert!(a.next_epoch() > a);
        assert_eq!(a.next_epoch().ring, 5);
        let max = Generation { ring: 1, epoch: u32::MAX };
        assert_eq!(max.next_epoch(), max);
    }

    #[test]
    fn group_ids_never_collide_with_daemon() {
        assert_ne!(GroupId::of_fs(""), GroupId::DAEMON);
        assert_ne!(GroupId::of_fs("fs1"), GroupId::of_fs("fs2"));
        assert_eq!(GroupId::of_fs("fs1"), GroupId::of_fs("fs1"));
    }

    /// Group ids are odd, so never 0 (`DAEMON`), whatever the hash (issue
    /// 17: `h | 1` -> `h ^ 1` survived; it makes every odd hash even).
    #[test]
    fn group_ids_are_odd_fnv1a_hashes() {
        for name in ["", "a", "b", "fs1", "fs2", "home", "data:0", "x.y-z_1"] {
            let mut h: u32 = 0x811c_9dc5;
            for b in name.as_bytes() {
                h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
            }
            assert_eq!(GroupId::of_fs(name), GroupId(h | 1), "{name}");
            assert_eq!(GroupId::of_fs(name).0 & 1, 1, "{name}");
        }
    }
}
