//! The invariant macro (the logging macros come from `cohort-types`).
//! Declared first in `lib.rs` so every module can use it.
#![allow(unused_macros)]

#[cfg(all(feature = "defmt", feature = "log"))]
compile_error!("features `defmt` and `log` are mutually exclusive");

/// Invariant assertion: checked in debug builds (the tests and the
/// simulator), compiled out in release so no datagram can panic a
/// production node.
macro_rules! invariant {
    ($cond:expr, $($arg:tt)+) => {
        debug_assert!($cond, $($arg)+)
    };
}
