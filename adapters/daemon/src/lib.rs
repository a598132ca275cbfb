//! cohortd: the cohort host daemon, and cohortctl, its control tool.
//!
//! The daemon drives one sans-IO [`cohort_core::Node`] (see [`engine`]) over
//! a transport (corosync CPG or cohort's UDP transport, see [`daemon`] and
//! [`transport`]), executes its effects
//! (kernel operations through a [`backend`], fencing through an external
//! agent, see [`fence`]) and answers operators on a unix control socket
//! ([`control`], JSON schema in [`api`] and the crate README).
//!
//! `cohortd demo` runs three engines in one process over an in-process,
//! simulated transport ([`demo::simnet`]) with simulated time;
//! `cohortd demo --transport udp` runs them over real UDP sockets on
//! loopback in real time ([`demo::udp`]).

pub mod api;
pub mod backend;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod engine;
pub mod eventlog;
pub mod exit;
pub mod fence;
pub mod incarnation;
pub mod metrics;
pub mod nodelist;
pub mod notify;
pub mod proc;
pub mod transport;
