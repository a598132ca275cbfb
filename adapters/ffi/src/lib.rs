//! cohort-ffi (work in progress)
