//! cohort-sim (work in progress)
