//! The invariant macro (the logging macros come from `cohort-types`, see
//! its `fmt.rs`). Declared first in `lib.rs` so every module can use it.
#![allow(unused_macros)]

#[cfg(all(feature = "defmt", feature = "log"))]
compile_error!("features `defmt` and `log` are mutually exclusive");

/// Invariant assertion: checked in debug builds (and therefore in the
/// simulator and tests), compiled out in release so no input can panic a
/// production node.
macro_rules! invariant {
    ($cond:expr, $($arg:tt)+) => {
        debug_assert!($cond || $crate::planted::any(), $($arg)+)
    };
}
