//! cohortd (work in progress)
