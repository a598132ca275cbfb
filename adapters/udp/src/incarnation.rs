//! The VS incarnation of a process, never read from a clock.
//!
//! The incarnation is part of every datagram's nonce (with the sender and
//! its counter) and tells peers a restarted node from a stale one: the core
//! refuses a datagram whose incarnation is lower than the one it knows for
//! that node ([`cohort_vs`], `StaleIncarnation`), and never forgets it.
//! So it must (a) never repeat under the same key, and (b) compare greater
//! than every previous incarnation of the node.
//!
//! It is built as `persisted << 32 | random`: the high 32 bits are the
//! node's persisted incarnation (cohortd's `<state_dir>/incarnation`,
//! incremented and fsynced before every start), so a restart always
//! compares greater, whatever the clock says; the low 32 bits are fresh
//! randomness from the kernel (`getrandom(2)`, which waits until the pool is
//! initialized), so even a persisted value that failed to reach the disk and
//! repeats does not repeat the incarnation (and with it the nonces) except
//! with probability 2^-32.

use cohort_core::ids::Incarnation;

use crate::Error;

/// Largest persisted incarnation that fits the high 32 bits.
pub const MAX_PERSISTED: u64 = u32::MAX as u64;

/// `persisted << 32 | random`; `persisted` must be in `1..=MAX_PERSISTED`.
pub fn compose(persisted: u64, random: u32) -> Result<Incarnation, Error> {
    if persisted == 0 || persisted > MAX_PERSISTED {
        return Err(Error::Config(format!(
            "persisted incarnation {persisted} out of range 1..={MAX_PERSISTED} for the VS incarnation"
        )));
    }
    Ok(Incarnation(persisted << 32 | u64::from(random)))
}

/// The VS incarnation for this process start: [`compose`] with 32 random
/// bits from the kernel.
pub fn from_persisted(persisted: u64) -> Result<Incarnation, Error> {
    compose(persisted, random_u32()?)
}

/// 32 bits from `getrandom(2)` (blocking until the kernel's pool is ready).
pub fn random_u32() -> Result<u32, Error> {
    let mut b = [0u8; 4];
    let mut got = 0;
    while got < b.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `b`.
        let n = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), b.len() - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::Socket { op: "getrandom".into(), source: e });
        }
        got += n as usize;
    }
    Ok(u32::from_ne_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15 item 11. The old default was the wall clock in microseconds:
    /// a clock stepped back gave a smaller incarnation (the node is refused
    /// as `StaleIncarnation` forever), a clock reset to the same value (no
    /// RTC) repeated it exactly (and with it the nonces). Here the clock does
    /// not enter at all: any random low bits of a later start compare
    /// greater than any of an earlier one.
    #[test]
    fn later_start_always_compares_greater() {
        for p in [1u64, 2, 41, 1 << 20, MAX_PERSISTED - 1] {
            let worst_before = compose(p, u32::MAX).unwrap();
            let worst_after = compose(p + 1, 0).unwrap();
            assert!(worst_after > worst_before, "{p}");
        }
        // two starts in the same persisted value (the bump was lost): differ
        // unless the kernel repeats 32 random bits
        let a = from_persisted(7).unwrap();
        let b = from_persisted(7).unwrap();
        assert_eq!(a.0 >> 32, 7);
        assert_eq!(b.0 >> 32, 7);
        assert!(from_persisted(8).unwrap() > a.max(b));
    }

    #[test]
    fn out_of_range_persisted_values_are_refused() {
        assert!(compose(0, 1).is_err());
        assert!(compose(MAX_PERSISTED + 1, 1).is_err());
        assert!(from_persisted(u64::MAX).is_err());
        assert_eq!(compose(MAX_PERSISTED, u32::MAX).unwrap(), Incarnation(u64::MAX));
    }
}
