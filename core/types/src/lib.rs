//! The vocabulary under both `cohort-core` (the membership state machine)
//! and `cohort-vs` (the datagram transport): node ids, incarnations,
//! generations, instants ([`ids`]) and the group-communication events a
//! transport hands the core ([`gcs`]). Nothing here has behaviour beyond
//! small constructors and orderings; both crates re-export it.
#![no_std]
#![forbid(unsafe_code)]

pub mod bounded;
mod fmt;
pub mod gcs;
pub mod ids;
pub mod profile;
pub mod rng;

pub use ids::{Generation, GroupId, Incarnation, Instant, Jid, Member, NodeId};

/// The largest encoded core message (header and body), [`profile::MESSAGE`]. The VS transport
/// carries any message up to this size as one agreed message
/// (`cohort-vs` asserts it at compile time).
pub const MAX_MESSAGE: usize = profile::MESSAGE;
