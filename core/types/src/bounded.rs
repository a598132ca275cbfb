//! Pushes whose room is guaranteed by construction (a copy of an equally
//! or more tightly bounded collection, one entry per node or per group). A
//! failure would be a bug: caught by a debug assertion (the tests and the
//! simulator) instead of a silent `let _ = v.push(..)`. Shared by
//! cohort-core and cohort-vs.

pub trait PushBounded<T> {
    fn push_bounded(&mut self, x: T);
}

impl<T, const N: usize> PushBounded<T> for heapless::Vec<T, N> {
    fn push_bounded(&mut self, x: T) {
        let r = self.push(x);
        debug_assert!(r.is_ok(), "a bounded push overflowed its capacity {}", N);
    }
}
