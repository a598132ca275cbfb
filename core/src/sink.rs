//! The output sink: the effect queue and the send queue a [`crate::Node`]
//! fills and its host drains, with their capacities and the timer tokens.
//! Every state machine of the core writes its output here and nowhere else.

use crate::gcs::MAX_NODES;
use crate::ids::Instant;
use crate::vocab::{Effect, Notice, Out, TimerToken};
use crate::wire::MAX_GROUPS;

/// Capacity of the effect queue.
pub const EFFECT_CAP: usize = cohort_types::profile::EFFECTS;
/// Capacity of the send queue (message descriptors, encoded on poll).
pub const OUTBOX_CAP: usize = cohort_types::profile::OUTBOX;
/// Worst case of effects one input can produce.
pub const EFFECTS_PER_INPUT: usize = 8 + 5 * MAX_GROUPS + MAX_NODES;
/// Worst case of sends one input can produce.
pub const SENDS_PER_INPUT: usize = 4 + 4 * MAX_GROUPS;

const _: () = assert!(EFFECTS_PER_INPUT <= EFFECT_CAP);
const _: () = assert!(SENDS_PER_INPUT <= OUTBOX_CAP);
const _: () = assert!(MAX_NODES <= 32, "node masks are u32");

pub(crate) struct Sink {
    pub(crate) effects: heapless::Deque<Effect, EFFECT_CAP>,
    pub(crate) outbox: heapless::Deque<Out, OUTBOX_CAP>,
    timer_seq: u64,
}

impl Sink {
    pub(crate) const fn new() -> Sink {
        Sink { effects: heapless::Deque::new(), outbox: heapless::Deque::new(), timer_seq: 0 }
    }

    /// Room for the worst case of one input in both queues.
    pub(crate) fn has_room_for_an_input(&self) -> bool {
        EFFECT_CAP - self.effects.len() >= EFFECTS_PER_INPUT && OUTBOX_CAP - self.outbox.len() >= SENDS_PER_INPUT
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.effects.is_empty() && self.outbox.is_empty()
    }

    pub(crate) fn effect(&mut self, e: Effect) {
        // Capacity was reserved in `handle`; a failure here is a bug in the
        // per-input bound, caught in debug builds.
        let r = self.effects.push_back(e);
        invariant!(r.is_ok(), "effect queue overflow despite reservation");
    }

    pub(crate) fn notify(&mut self, n: Notice) {
        self.effect(Effect::Notify(n));
    }

    pub(crate) fn send(&mut self, o: Out) {
        if self.outbox.iter().any(|x| *x == o) {
            return;
        }
        // A newer descriptor supersedes an older one of the same kind and
        // group (it would render to nothing anyway): this bounds the queue.
        let supersedes = |x: &Out| match (x, &o) {
            (Out::DaemonStart { .. }, Out::DaemonStart { .. }) | (Out::DaemonSync { .. }, Out::DaemonSync { .. }) => {
                true
            }
            (Out::Op { gid: a, .. }, Out::Op { gid: b, .. })
            | (Out::MountStart { gid: a, .. }, Out::MountStart { gid: b, .. })
            | (Out::MountState { gid: a, .. }, Out::MountState { gid: b, .. }) => a == b,
            _ => false,
        };
        if self.outbox.iter().any(supersedes) {
            let mut keep: heapless::Deque<Out, OUTBOX_CAP> = heapless::Deque::new();
            while let Some(x) = self.outbox.pop_front() {
                if !supersedes(&x) {
                    let r = keep.push_back(x);
                    invariant!(r.is_ok(), "a filtered copy fits a queue of the same capacity");
                }
            }
            self.outbox = keep;
        }
        let r = self.outbox.push_back(o);
        invariant!(r.is_ok(), "outbox overflow despite reservation");
    }

    /// Arm a timer of `kind` (the token's high byte) `after_ms` from `now`.
    pub(crate) fn set_timer(&mut self, now: Instant, kind: u64, after_ms: u64) -> TimerToken {
        self.timer_seq = self.timer_seq.wrapping_add(1);
        let token = TimerToken((kind << 56) | (self.timer_seq & ((1 << 56) - 1)));
        let at = now.plus_ms(after_ms);
        self.effect(Effect::SetTimer { token, at });
        token
    }
}
