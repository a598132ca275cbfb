#![no_std]
#![forbid(unsafe_code)]
//! cohort-core: see README.md and the module docs.

#[macro_use]
mod fmt;

pub mod gcs;
pub mod ids;
