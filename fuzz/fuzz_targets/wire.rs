//! `cargo fuzz run wire`: the wire decoder never panics and round-trips.
//!
//! Without `--cfg fuzzing` (a plain `cargo build`) this is a replayer:
//! `cargo run --bin wire -- FILE_OR_DIR...`.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cohort_fuzz::fuzz_entry(data, cohort_fuzz::wire));

#[cfg(not(fuzzing))]
fn main() {
    cohort_fuzz::replay_main(cohort_fuzz::wire);
}
