//! cohort-corosync (work in progress)
