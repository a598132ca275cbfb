//! An async driver for [`Node`] on top of `embassy-sync` (feature `embassy`).
//!
//! The node stays sans-IO; this module only moves things between it and
//! fixed-capacity channels so that embassy tasks (or any executor) can drive
//! it:
//!
//! ```text
//!   transport / kernel / fence tasks           host tasks
//!        │  Inbound (owned)                       ▲ Event (effects, rejections)
//!        ▼                                        │ Frame (messages to multicast)
//!   ┌─ inbox: Channel<Inbound, IN> ─┐   ┌─ events: Channel<Event, EV> ─┐
//!   │                 Driver::run(&clock): handle → poll_effect/transmit │
//!   └────── Mutex<M, RefCell<{Node, timer table}>> ──── transmits: Channel<Frame, TX>
//! ```
//!
//! * **Back-pressure, never drops.** Every channel is bounded. `send(..).await`
//!   waits for room; `try_send` returns [`TrySendError::Full`] with the value
//!   handed back. The run loop itself waits for room in `events`/`transmits`
//!   before it takes the next input, so a slow consumer slows the node down
//!   instead of losing effects.
//! * **Timers** never leave the driver: `Effect::SetTimer` goes into a fixed
//!   timer table, [`Driver::next_deadline`] tells the earliest deadline, and
//!   the run loop waits on "an input or that deadline" with the [`Clock`] it
//!   is given, so the core stays clock-free.
//! * **Owned inputs.** [`Inbound`] is the owned form of [`Input`] (a delivered
//!   message is copied into a [`Frame`], a `heapless::Vec<u8, MAX_MESSAGE>`),
//!   which makes one `Inbound` about 4.1 KiB ([`INBOUND_SIZE`]): size the
//!   inbox for that (4 slots ≈ 16.5 KiB).
//!
//! **One rule for the host.** The task that drains `events` must not wait on
//! [`Driver::send`] into the same driver: if the inbox is full while the run
//! loop waits for room in `events`, both wait forever. Answer kernel and fence
//! effects with [`Driver::try_send`] and keep what did not fit (the number of
//! outstanding answers is bounded by the number of groups and nodes), or hand
//! them to another task.
//!
//! Choosing `M`: the node is handled *inside* the blocking mutex, so with
//! `CriticalSectionRawMutex` every `handle` runs with interrupts masked. When
//! all users of the driver run in one thread-mode executor, prefer
//! `ThreadModeRawMutex` (or `NoopRawMutex` when nothing is shared across
//! executors).

use core::cell::RefCell;
use core::future::Future;

use embassy_futures::select::{select, Either};
/// The `embassy-sync` this driver was built with (pick `M` from here).
pub use embassy_sync;
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_sync::blocking_mutex::Mutex;
pub use embassy_sync::channel::TrySendError;
use embassy_sync::channel::{Channel, Receiver, Sender, TryReceiveError};

use crate::gcs::{Confchg, QuorumEvent, RingEvent, MAX_NODES};
use crate::ids::{Instant, Member, NodeId};
use crate::node::{Config, Node, EFFECT_CAP};
use crate::status::Status;
use crate::vocab::{Effect, HandleError, Input, KernelEvent, Request, TimerToken};
use crate::wire::{MAX_GROUPS, MAX_MESSAGE};

/// An owned message buffer: a delivered message, or one to multicast.
pub type Frame = heapless::Vec<u8, MAX_MESSAGE>;

/// Pending timers the driver keeps. The node has at most one live timer per
/// fence record and per mount group (`MAX_NODES + MAX_GROUPS`); the rest is
/// room for stale tokens (the node ignores them when they fire).
pub const TIMER_CAP: usize = 2 * (MAX_NODES + MAX_GROUPS);

/// `size_of::<Inbound>()`: what one inbox slot costs.
pub const INBOUND_SIZE: usize = core::mem::size_of::<Inbound>();

/// The owned form of [`Input`] that travels through the inbox. Timers are
/// not here: the driver fires them itself.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Inbound {
    Ring(RingEvent),
    Confchg(Confchg),
    Quorum(QuorumEvent),
    /// A message the transport delivered in agreed order.
    Deliver {
        from: NodeId,
        bytes: Frame,
    },
    Fenced {
        target: Member,
        ok: bool,
    },
    Kernel(KernelEvent),
    Request(Request),
}

/// A delivered message longer than [`MAX_MESSAGE`] (the node would reject it
/// anyway).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FrameTooLong {
    pub len: usize,
}

impl Inbound {
    /// Copy a delivered message into an owned input.
    pub fn deliver(from: NodeId, bytes: &[u8]) -> Result<Inbound, FrameTooLong> {
        let bytes = Frame::from_slice(bytes).map_err(|_| FrameTooLong { len: bytes.len() })?;
        Ok(Inbound::Deliver { from, bytes })
    }

    /// Borrow it as the node's input.
    pub fn as_input(&self) -> Input<'_> {
        match self {
            Inbound::Ring(r) => Input::Ring(r.clone()),
            Inbound::Confchg(c) => Input::Confchg(c.clone()),
            Inbound::Quorum(q) => Input::Quorum(q.clone()),
            Inbound::Deliver { from, bytes } => Input::Deliver { from: *from, bytes },
            Inbound::Fenced { target, ok } => Input::Fenced { target: *target, ok: *ok },
            Inbound::Kernel(k) => Input::Kernel(k.clone()),
            Inbound::Request(r) => Input::Request(r.clone()),
        }
    }

    pub fn kind(&self) -> InputKind {
        match self {
            Inbound::Ring(_) => InputKind::Ring,
            Inbound::Confchg(_) => InputKind::Confchg,
            Inbound::Quorum(_) => InputKind::Quorum,
            Inbound::Deliver { .. } => InputKind::Deliver,
            Inbound::Fenced { .. } => InputKind::Fenced,
            Inbound::Kernel(_) => InputKind::Kernel,
            Inbound::Request(_) => InputKind::Request,
        }
    }
}

/// Which kind of input a rejection is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum InputKind {
    Ring,
    Confchg,
    Quorum,
    Deliver,
    Fenced,
    Kernel,
    Request,
    Timer,
}

/// What comes out of the `events` channel.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event {
    /// An effect to execute (never `SetTimer`: the driver keeps timers).
    Effect(Effect),
    /// The node refused an input (a request for a filesystem that is
    /// already mounted, a malformed message...). Nothing was changed.
    Rejected { input: InputKind, error: HandleError },
}

/// Why [`Driver::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Exit {
    /// No node is installed ([`Driver::start`]).
    NoNode,
    /// The node stopped (`ResetSelf` or `Incompatible` was forwarded):
    /// start a new one with a higher incarnation and run again.
    Stopped,
}

/// Counters of the driver itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DriverStats {
    pub inputs: u64,
    pub rejected: u64,
    pub effects: u64,
    pub transmits: u64,
    pub timers_set: u64,
    pub timers_fired: u64,
    /// The timer table was full: the entry with the earliest deadline fired
    /// before its time to make room (a stale token is a no-op; a live one
    /// only shortens a retry backoff).
    pub timers_fired_early: u64,
    /// Never expected (see `arm`); a test checks it stays 0.
    pub timers_lost: u64,
}

/// The time source the run loop waits with. Instants are the node's
/// milliseconds: any monotonic origin works as long as it never goes back.
pub trait Clock {
    fn now(&self) -> Instant;
    /// Completes at or after `at` (spurious early completion is harmless:
    /// the loop re-checks).
    fn sleep_until(&self, at: Instant) -> impl Future<Output = ()>;
}

struct State {
    /// At most one node. A `Vec` rather than an `Option`: an empty one is
    /// all zero bytes, so a `static` driver lands in `.bss` instead of
    /// costing ~100 KiB of `.data` initializer in flash (`Option<Node>`'s
    /// `None` is a non-zero niche).
    node: heapless::Vec<Node, 1>,
    timers: heapless::Vec<(Instant, TimerToken), TIMER_CAP>,
    /// Tokens to fire as soon as possible (evicted from a full table).
    due: heapless::Deque<TimerToken, EFFECT_CAP>,
    stats: DriverStats,
}

#[allow(clippy::large_enum_variant)]
enum Out {
    Event(Event),
    Frame(Frame),
}

/// The node shared through a blocking mutex, plus its three channels.
///
/// `IN`, `EV` and `TX` are the capacities of the inbox, the events channel
/// and the transmit channel. `Driver::new` is `const`, so a driver can live
/// in a `static` (no node is built until [`Driver::start`]).
pub struct Driver<M: RawMutex, const IN: usize, const EV: usize, const TX: usize> {
    state: Mutex<M, RefCell<State>>,
    inbox: Channel<M, Inbound, IN>,
    events: Channel<M, Event, EV>,
    transmits: Channel<M, Frame, TX>,
}

impl<M: RawMutex, const IN: usize, const EV: usize, const TX: usize> Default for Driver<M, IN, EV, TX> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: RawMutex, const IN: usize, const EV: usize, const TX: usize> Driver<M, IN, EV, TX> {
    pub const fn new() -> Self {
        Driver {
            state: Mutex::new(RefCell::new(State {
                node: heapless::Vec::new(),
                timers: heapless::Vec::new(),
                due: heapless::Deque::new(),
                stats: DriverStats {
                    inputs: 0,
                    rejected: 0,
                    effects: 0,
                    transmits: 0,
                    timers_set: 0,
                    timers_fired: 0,
                    timers_fired_early: 0,
                    timers_lost: 0,
                },
            })),
            inbox: Channel::new(),
            events: Channel::new(),
            transmits: Channel::new(),
        }
    }

    /// Install a new node (replacing any previous one, e.g. after
    /// `ResetSelf`). Pending timers and queued inputs belong to the old node
    /// and are discarded; call this before feeding the new node's first
    /// `Ring`/`Quorum`/`Confchg`.
    pub fn start(&self, cfg: Config) {
        self.state.lock(|s| {
            let mut s = s.borrow_mut();
            s.node.clear();
            let _ = s.node.push(Node::new(cfg));
            s.timers.clear();
            s.due.clear();
        });
        self.inbox.clear();
    }

    /// Queue an input, waiting for room.
    pub async fn send(&self, input: Inbound) {
        self.inbox.send(input).await
    }

    /// Queue an input, or get it back if the inbox is full (the error is as
    /// large as an `Inbound` on purpose: nothing is boxed or dropped).
    #[allow(clippy::result_large_err)]
    pub fn try_send(&self, input: Inbound) -> Result<(), TrySendError<Inbound>> {
        self.inbox.try_send(input)
    }

    /// Next effect or rejection, waiting for one.
    pub async fn event(&self) -> Event {
        self.events.receive().await
    }

    pub fn try_event(&self) -> Result<Event, TryReceiveError> {
        self.events.try_receive()
    }

    /// Next message to multicast in agreed order, waiting for one.
    pub async fn transmit(&self) -> Frame {
        self.transmits.receive().await
    }

    pub fn try_transmit(&self) -> Result<Frame, TryReceiveError> {
        self.transmits.try_receive()
    }

    pub fn inbox(&self) -> Sender<'_, M, Inbound, IN> {
        self.inbox.sender()
    }

    pub fn events(&self) -> Receiver<'_, M, Event, EV> {
        self.events.receiver()
    }

    pub fn transmits(&self) -> Receiver<'_, M, Frame, TX> {
        self.transmits.receiver()
    }

    /// The earliest pending timer deadline (`Instant(0)` if a timer is due
    /// now because the table overflowed).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.state.lock(|s| {
            let s = s.borrow();
            if !s.due.is_empty() {
                return Some(Instant(0));
            }
            s.timers.iter().map(|(at, _)| *at).min()
        })
    }

    /// A snapshot of the node, if one is installed.
    pub fn status(&self) -> Option<Status> {
        self.with_node(Node::status)
    }

    /// Read the node (inside the mutex: keep it short).
    pub fn with_node<R>(&self, f: impl FnOnce(&Node) -> R) -> Option<R> {
        self.state.lock(|s| s.borrow().node.first().map(f))
    }

    pub fn stats(&self) -> DriverStats {
        self.state.lock(|s| s.borrow().stats)
    }

    /// Drive the node until it stops: take an input (or fire a timer), hand
    /// it to the node, and move every effect and message into the output
    /// channels (waiting for room). Never holds the mutex across an await.
    pub async fn run<C: Clock>(&self, clock: &C) -> Exit {
        loop {
            self.flush().await;
            match self.with_node(Node::is_stopped) {
                None => return Exit::NoNode,
                Some(true) => return Exit::Stopped,
                Some(false) => {}
            }
            if let Some(token) = self.take_due(clock.now()) {
                self.feed(clock.now(), InputKind::Timer, Input::Timer(token)).await;
                continue;
            }
            let input = match self.next_deadline() {
                None => self.inbox.receive().await,
                Some(at) => match select(self.inbox.receive(), clock.sleep_until(at)).await {
                    Either::First(input) => input,
                    Either::Second(()) => continue,
                },
            };
            self.feed(clock.now(), input.kind(), input.as_input()).await;
        }
    }

    /// Hand one input to the node; a rejection goes out as an event.
    async fn feed(&self, now: Instant, kind: InputKind, input: Input<'_>) {
        loop {
            let r = self.state.lock(|s| {
                let mut s = s.borrow_mut();
                let s = &mut *s;
                let Some(node) = s.node.first_mut() else { return Ok(()) };
                let r = node.handle(now, input.clone());
                if r != Err(HandleError::Backpressure) {
                    s.stats.inputs += 1;
                }
                r
            });
            match r {
                Ok(()) | Err(HandleError::Stopped) => return,
                // Cannot happen after a full flush; flush and retry anyway.
                Err(HandleError::Backpressure) => self.flush().await,
                Err(error) => {
                    self.state.lock(|s| s.borrow_mut().stats.rejected += 1);
                    self.events.send(Event::Rejected { input: kind, error }).await;
                    return;
                }
            }
        }
    }

    /// Pop the next due timer: an evicted one, or the earliest expired.
    fn take_due(&self, now: Instant) -> Option<TimerToken> {
        self.state.lock(|s| {
            let mut s = s.borrow_mut();
            let s = &mut *s;
            let token = match s.due.pop_front() {
                Some(t) => t,
                None => {
                    let (i, _) =
                        s.timers.iter().enumerate().filter(|(_, (at, _))| *at <= now).min_by_key(|(_, e)| *e)?;
                    s.timers.swap_remove(i).1
                }
            };
            s.stats.timers_fired += 1;
            Some(token)
        })
    }

    /// Move everything the node has into the channels, waiting for room.
    async fn flush(&self) {
        loop {
            let out = self.state.lock(|s| {
                let mut s = s.borrow_mut();
                let s = &mut *s;
                let node = s.node.first_mut()?;
                while let Some(e) = node.poll_effect() {
                    if let Effect::SetTimer { token, at } = e {
                        s.stats.timers_set += 1;
                        arm(&mut s.timers, &mut s.due, &mut s.stats, at, token);
                        continue;
                    }
                    s.stats.effects += 1;
                    return Some(Out::Event(Event::Effect(e)));
                }
                let mut frame = Frame::new();
                let _ = frame.resize(MAX_MESSAGE, 0);
                let n = node.poll_transmit(&mut frame)?;
                frame.truncate(n);
                s.stats.transmits += 1;
                Some(Out::Frame(frame))
            });
            match out {
                None => return,
                Some(Out::Event(e)) => self.events.send(e).await,
                Some(Out::Frame(f)) => self.transmits.send(f).await,
            }
        }
    }
}

/// Put a timer into the table; when it is full, the earliest entry is moved
/// to `due` (fires right away) to make room.
fn arm(
    timers: &mut heapless::Vec<(Instant, TimerToken), TIMER_CAP>,
    due: &mut heapless::Deque<TimerToken, EFFECT_CAP>,
    stats: &mut DriverStats,
    at: Instant,
    token: TimerToken,
) {
    if let Err(entry) = timers.push((at, token)) {
        // Full: the earliest deadline is the one fired least early.
        let i = timers.iter().enumerate().min_by_key(|(_, e)| **e).map_or(0, |(i, _)| i);
        let (_, early) = core::mem::replace(&mut timers[i], entry);
        stats.timers_fired_early += 1;
        // `due` is emptied before the next input is taken, and one input
        // makes at most EFFECTS_PER_INPUT < EFFECT_CAP effects (firing a
        // timer arms none), so this always has room; counted if it had not.
        if due.push_back(early).is_err() {
            stats.timers_lost += 1;
            warn!("embassy driver: due timer queue full");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_table_fires_the_earliest_early() {
        let mut timers = heapless::Vec::new();
        let mut due = heapless::Deque::new();
        let mut stats = DriverStats::default();
        for i in 0..TIMER_CAP as u64 {
            arm(&mut timers, &mut due, &mut stats, Instant(100 + i), TimerToken(i));
        }
        assert!(due.is_empty());
        arm(&mut timers, &mut due, &mut stats, Instant(5000), TimerToken(999));
        assert_eq!(due.pop_front(), Some(TimerToken(0)));
        assert_eq!(stats.timers_fired_early, 1);
        assert!(timers.iter().any(|(_, t)| *t == TimerToken(999)));
    }

    #[test]
    fn deliver_copies_and_bounds() {
        let i = Inbound::deliver(NodeId(2), b"abc").unwrap();
        assert_eq!(i.as_input(), Input::Deliver { from: NodeId(2), bytes: b"abc" });
        let big = [0u8; MAX_MESSAGE + 1];
        assert_eq!(Inbound::deliver(NodeId(2), &big), Err(FrameTooLong { len: MAX_MESSAGE + 1 }));
        assert!(INBOUND_SIZE < MAX_MESSAGE + 256, "{INBOUND_SIZE}");
    }
}
