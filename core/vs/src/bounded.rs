//! Pushes whose room is guaranteed by construction (one entry per member of
//! a view or per configured node, at most `MAX_NODES`). A failure would be
//! a bug: caught by `invariant!` in debug builds (the tests and the
//! simulator) instead of a silent `let _ = v.push(..)`.

pub(crate) trait PushBounded<T> {
    fn push_bounded(&mut self, x: T);
}

impl<T, const N: usize> PushBounded<T> for heapless::Vec<T, N> {
    fn push_bounded(&mut self, x: T) {
        let r = self.push(x);
        invariant!(r.is_ok(), "a bounded push overflowed its capacity {}", N);
    }
}
