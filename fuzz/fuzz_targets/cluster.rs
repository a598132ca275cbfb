//! `cargo fuzz run cluster`: a whole simulated cluster (the simulator's
//! corosync model, the real core on every node) whose size, timing, workload
//! and fault schedule are drawn from the input bytes; every safety property
//! is checked after every step, then liveness after the faults stop.
//!
//! Without `--cfg fuzzing` this is a replayer:
//! `cargo run --bin cluster -- FILE_OR_DIR...`.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cohort_fuzz::fuzz_entry(data, cohort_fuzz::cluster));

#[cfg(not(fuzzing))]
fn main() {
    cohort_fuzz::replay_main(cohort_fuzz::cluster);
}
