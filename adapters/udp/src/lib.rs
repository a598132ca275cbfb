//! cohort-udp (work in progress)
