//! The simulator's RNG is the test kit's one (`cohort_types::rng`, the
//! SplitMix64 that was defined here).

pub use cohort_core::rng::Rng;
