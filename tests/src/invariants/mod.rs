//! Safety checkers, one file per property of `shared/docs/DOMAIN.md`
//! (openraft style). They run after every step of the simulation, mostly on
//! the simulator's *ground truth* (the simulated kernels and disks, power,
//! the rings the simulator formed), not on what the nodes believe.
//!
//! | file                        | property                                     |
//! |-----------------------------|----------------------------------------------|
//! | `agreement.rs`              | 1 agreement on member set, jids, recoveries  |
//! | `journal_exclusivity.rs`    | 2 no two live kernels on one journal         |
//! | `recovery_before_reuse.rs`  | 3 replay before reuse, only of dead writers, quorate |
//! | `no_stale_merge.rs`         | 4 a diverged node is never synced with the others |
//! | `generations.rs`            | 5 generations never go backwards             |
//! | `liveness.rs`               | 6 liveness after the faults stop             |
//! | `robustness.rs`             | 7 no panic, no backpressure, no bad bytes    |
//! | `blocked.rs`                | 8 blocked during recovery                    |
//! | `unmount_contract.rs`       | 9 the unmount contract                       |
//! | `virtual_synchrony.rs`      | (udp model) the transport's total order and virtual synchrony |

pub mod agreement;
pub mod blocked;
pub mod generations;
pub mod journal_exclusivity;
pub mod liveness;
pub mod no_stale_merge;
pub mod recovery_before_reuse;
pub mod robustness;
pub mod unmount_contract;
pub mod virtual_synchrony;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Property {
    Agreement,
    JournalExclusivity,
    RecoveryBeforeReuse,
    NoStaleMerge,
    Generations,
    Liveness,
    Robustness,
    BlockedDuringRecovery,
    UnmountContract,
    VirtualSynchrony,
}

impl Property {
    pub fn name(self) -> &'static str {
        match self {
            Property::Agreement => "P1 agreement",
            Property::JournalExclusivity => "P2 journal exclusivity",
            Property::RecoveryBeforeReuse => "P3 recovery before reuse",
            Property::NoStaleMerge => "P4 no stale merge",
            Property::Generations => "P5 generations",
            Property::Liveness => "P6 liveness",
            Property::Robustness => "P7 robustness",
            Property::BlockedDuringRecovery => "P8 blocked during recovery",
            Property::UnmountContract => "P9 unmount contract",
            Property::VirtualSynchrony => "VS virtual synchrony",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Violation {
    pub property: Property,
    pub msg: String,
    /// Simulated time (ms).
    pub time: u64,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} violated at {}.{:03}s: {}", self.property.name(), self.time / 1000, self.time % 1000, self.msg)
    }
}

/// Checker state that is not ground truth of the world itself.
#[derive(Default, Debug)]
pub struct Invariants {
    pub agreement: agreement::State,
    pub stale: no_stale_merge::State,
    pub vsync: virtual_synchrony::State,
}
