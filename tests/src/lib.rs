//! cohort-sim: a deterministic cluster simulator for `cohort-core`.
//!
//! N nodes run the real core; the simulator plays corosync (rings,
//! confchgs, quorum, agreed multicast), the kernel (mounts, journal replay,
//! withdraw) and the fence device, injects faults, and checks the safety
//! properties of `shared/docs/DOMAIN.md` after every step on its own ground
//! truth. See `world.rs` for the model, `invariants/` for the checkers,
//! `scenario.rs` for the scenario language and `swarm.rs` for random runs.

pub mod explore;
pub mod explore_vs;
pub mod invariants;
pub mod kernel;
pub mod rng;
pub mod scenario;
pub mod swarm;
pub mod trace;
pub mod world;

pub use invariants::{Property, Violation};
pub use world::{SimConfig, World};
