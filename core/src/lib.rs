#![no_std]
#![forbid(unsafe_code)]
#![doc = include_str!("../README.md")]

#[macro_use]
extern crate cohort_types;
#[macro_use]
mod fmt;

mod apply;
pub mod barrier;
pub mod daemon;
#[cfg(feature = "embassy")]
pub mod embassy;
pub mod mount;
pub mod node;
pub mod planted;
mod sink;
pub mod status;
pub mod vocab;
pub mod wire;

/// The shared vocabulary (crate `cohort-types`), under its old paths.
pub use cohort_types::{gcs, ids, profile, rng};
pub use ids::{Generation, GroupId, Incarnation, Instant, Jid, Member, NodeId};
pub use node::{Config, Effect, HandleError, Input, KernelEvent, KernelOp, Node, Notice, Request};
