//! `cargo fuzz run node`: one or two `Node`s driven by a byte program
//! (see `cohort_fuzz::node`) never panic and keep a consistent status.
//!
//! Without `--cfg fuzzing` (a plain `cargo build`) this is a replayer:
//! `cargo run --bin node -- FILE_OR_DIR...`.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cohort_fuzz::fuzz_entry(data, cohort_fuzz::node));

#[cfg(not(fuzzing))]
fn main() {
    cohort_fuzz::replay_main(cohort_fuzz::node);
}
