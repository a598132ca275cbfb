#![no_std]
#![forbid(unsafe_code)]
#![doc = include_str!("../README.md")]

#[macro_use]
mod fmt;

mod apply;
pub mod barrier;
mod bounded;
pub mod daemon;
#[cfg(feature = "embassy")]
pub mod embassy;
pub mod gcs;
pub mod ids;
pub mod mount;
pub mod node;
pub mod planted;
pub mod status;
pub mod vs;
pub mod wire;

pub use ids::{Generation, GroupId, Incarnation, Instant, Jid, Member, NodeId};
pub use node::{Config, Effect, HandleError, Input, KernelEvent, KernelOp, Node, Notice, Request};
