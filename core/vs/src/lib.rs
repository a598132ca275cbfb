//! Datagram group communication with plain virtual synchrony: the transport
//! that replaces corosync CPG on appliance nodes.
//!
//! [`Vs`] is a sans-IO state machine (in the style of quinn-proto or foca):
//! the adapter feeds it datagrams ([`Vs::handle_datagram`]) and timer expiry
//! ([`Vs::handle_timeout`], [`Vs::next_timeout`]), sends what
//! [`Vs::poll_transmit`] produces to one node or to all configured nodes, and
//! hands what [`Vs::poll_event`] produces to the barrier. Time is always an
//! input. No heap, no panics on any input, fixed-size buffers throughout.
//!
//! # What it produces
//!
//! Exactly the [`crate::gcs`] vocabulary, so the layers above cannot tell it
//! from corosync:
//!
//! * a new process starts in a singleton view of itself: `Ring`, `Quorum`,
//!   then a `Confchg` with itself joined (`Join`), like corosync's first join;
//! * every later view change: confchgs for members that left (`Leave` /
//!   `ProcDown` first, then `NodeDown`) and joined from other partitions
//!   (`NodeUp`), then `Ring` of the new view, then its `Quorum`, then a
//!   `Confchg` for fresh processes that joined (`Join`). See
//!   `src/events.rs` for the exact order and why process joins come
//!   after the ring event. A ring event is emitted for every view change,
//!   also when the daemon group's membership does not change;
//! * `Deliver` in agreed order: all members of a view deliver the same
//!   sequence, and members moving together from one view to the next deliver
//!   the same set of messages before the change (virtual synchrony);
//! * a process seen with a new incarnation replaces the old one as
//!   `left(ProcDown)` + `joined(Join)`;
//! * our own [`Vs::leave`] ends with a confchg with ourselves `left(Leave)`.
//!
//! # Protocol in brief
//!
//! 1. **Failure detection** (`src/detector.rs`): every node
//!    broadcasts a heartbeat every `heartbeat_ms`; a peer not heard for
//!    `fail_timeout_ms` is dead. Defaults 50 ms / 300 ms: a failed node is
//!    out of the view in about 300-350 ms on a LAN.
//! 2. **Coordinator**: the lowest node id a node considers alive. It proposes
//!    a view of everyone alive when that differs from its view; additions
//!    wait one heartbeat interval to settle, so any number of partitions
//!    that hear each other merge in *one* view change.
//! 3. **View change** (`src/view.rs`) in three rounds: PROPOSE (members
//!    freeze and report how far they hold the old view's stream), SYNC (per
//!    old view, a target = the furthest point any member holds, and a holder
//!    that lagging members fetch from), INSTALL once all hold the target.
//!    Members moving together deliver exactly the same old-view messages.
//! 4. **Agreed order** (`src/order.rs`): a fixed sequencer per view
//!    (its lowest member, also the coordinator that installed it) numbers
//!    every message; NAK-based repair, duplicate suppression, stability
//!    tracking, window-based back-pressure.
//! 5. **Security** (`src/auth.rs`): every datagram sealed with
//!    XChaCha20-Poly1305 under the cluster key, nonce = sender node id +
//!    incarnation + datagram counter; a 64-datagram replay window per
//!    sender; bad datagrams are counted in [`VsStats`] and never applied.
//!    An authentic datagram naming a view seq more than [`MAX_VIEW_JUMP`]
//!    past ours is dropped whole too (`src/view.rs`, "Bounded jumps").
//! 6. **Wire** (`src/wire.rs`): small frames batched into datagrams of
//!    at most [`MAX_DATAGRAM`] bytes; transmissions are rendered from state
//!    when polled (`src/tx.rs`), so nothing is ever dropped from a full
//!    byte queue.
//! 7. **Fragmentation and packing** (`src/frag.rs`): [`Vs::broadcast_message`]
//!    takes messages of up to [`MAX_MESSAGE`] bytes (a core message). A
//!    sender writes its messages into its units as one stream of records:
//!    small messages share a unit, a larger message is cut into chunks that
//!    fill the rest of the last queued unit and the next ones (at most
//!    [`MAX_CHUNKS`] units), queued all-or-nothing, reassembled in agreed
//!    order and delivered at the position of their last chunk. Units are
//!    only filled while nobody else holds them yet, so nothing waits to be
//!    packed. Reassembly pages are bounded ([`REASSEMBLY_PAGES`]); the
//!    sequencer only admits a message whose pages are free, so nothing is
//!    dropped for lack of room. At a view change incomplete messages are
//!    dropped identically by all members moving together, and their senders
//!    send them again, whole, in the new view.
//!
//! Reasons are decided by the coordinator so every member agrees on them
//! (and therefore on epoch numbering above): `Join` for a *fresh* process
//! (one that never installed a view with others since it started), `NodeUp`
//! for a process coming from another partition (it may carry group state,
//! even if we never saw its incarnation before), `Leave` when any member saw
//! its clean leave, `ProcDown` when its node is back with a new incarnation,
//! `NodeDown` otherwise.
//!
//! # Limits
//!
//! [`MAX_MESSAGE`] bytes per message (a unit holds up to 1,308 bytes of
//! data, a datagram's worth; a message takes at most [`chunks_for`]`(len)`
//! units, and small messages share units, ~18 messages of 64 bytes in one),
//! [`SEND_WINDOW`] own units in flight, [`ORDER_WINDOW`] sequenced units per
//! view not yet stable, [`REASSEMBLY_PAGES`] reassembly pages, at most
//! [`MAX_NODES`] nodes. `size_of::<Vs>()` is about 64 KiB (dominated by the
//! unit buffers and the reassembly pages; a test keeps it at most 64 KiB);
//! stack use per call is a few KiB.
//!
//! # View ids
//!
//! A view id is a 64-bit *seq*, one more than the highest view any member
//! of the new view is in. Ids are strictly increasing along every node's
//! history; like corosync ring seqs, two partitions may install the same
//! one (the view is named internally by seq, leader and the leader's
//! incarnation). A process starts with seq 1 (nothing is persisted), so a
//! restarted node's boot view id is small; it only ever appears in that
//! node's own history. A datagram naming a view seq more than
//! [`MAX_VIEW_JUMP`] past ours is dropped and counted
//! ([`VsStats::out_of_range`]), so no value a peer sends can bring the seq
//! near the end of its space (`src/view.rs`, "Bounded jumps").
//!
//! # Driving it
//!
//! ```text
//! loop {
//!     wait for a datagram or next_timeout()
//!     vs.handle_datagram(now, hint, bytes) / vs.handle_timeout(now)
//!     while let Some(t) = vs.poll_transmit(&mut buf) { send(t.dest, &buf[..t.len]) }
//!     while let Some(e) = vs.poll_event(&mut payload) { barrier.push(e) }
//! }
//! ```
//!
//! The application must keep polling events: a view change is only applied
//! locally once the old view's messages were consumed.

#![no_std]
#![forbid(unsafe_code)]

#[macro_use]
extern crate cohort_types;
#[macro_use]
mod fmt;

/// The vocabulary shared with `cohort-core` (crate `cohort-types`).
pub use cohort_types::{gcs, ids, rng};

mod auth;
#[cfg(feature = "craft")]
pub mod craft;
mod detector;
mod events;
mod frag;
mod order;
mod tx;
mod view;
mod wire;

#[cfg(test)]
mod harness;
#[cfg(test)]
mod tests;

use self::auth::Auth;
use self::detector::Detector;
use self::events::{EventQueue, Record};
pub use self::frag::{chunks_for, FragDiscard, MAX_CHUNKS, MAX_MESSAGE, REASSEMBLY_PAGES};
use self::frag::{ChunkHdr, Cut, Reassembly, Step, Tracker, FIRST_HDR, MAX_UNIT, MIN_FIRST};
use self::order::{OrderBuf, SendWindow};
pub use self::view::MAX_VIEW_JUMP;
use self::view::{Coord, Flush, View};
use self::wire::{Frame, Header, Reader, HEADER_LEN, MAX_PLAIN, TAG_LEN};
use crate::gcs::{Confchg, NodeList, QuorumEvent, QuorumMode, RingEvent, MAX_NODES};
use crate::ids::{Incarnation, Instant, Member, NodeId};

/// Largest datagram produced or accepted.
pub const MAX_DATAGRAM: usize = 1400;
/// Largest message [`Vs::broadcast`] takes (one record, never cut), and the
/// size of a reassembly page. A unit carries a little more (a datagram's
/// worth, 1,308 bytes of data), so messages up to that size are never cut.
pub const MAX_PAYLOAD: usize = 1024;
/// Sequenced units held per view (delivery + retransmission buffer).
pub const ORDER_WINDOW: usize = cohort_types::profile::ORDER_WINDOW;
/// Own units queued before [`VsSendError::WindowFull`] (a message of
/// [`MAX_MESSAGE`] bytes takes at most [`chunks_for`]`(MAX_MESSAGE)` new
/// ones).
pub const SEND_WINDOW: usize = cohort_types::profile::SEND_WINDOW;
/// Default heartbeat interval.
pub const DEFAULT_HEARTBEAT_MS: u64 = 50;
/// Default failure timeout.
pub const DEFAULT_FAIL_TIMEOUT_MS: u64 = 300;
/// Number of LEAVE datagrams sent (one per heartbeat interval).
const LEAVE_REPEATS: u8 = 3;

const _: () = assert!(ORDER_WINDOW >= 8);
const _: () = assert!(SEND_WINDOW >= MAX_CHUNKS, "a maximum-size message must fit the send window");
const _: () = assert!(MAX_NODES <= 32, "bitmasks over members are u32");
const _: () = assert!(MAX_PLAIN > 0);

/// The cleartext identity of a datagram: who sent it, and its position in
/// that process's datagram sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DatagramId {
    pub sender: NodeId,
    pub incarnation: Incarnation,
    pub counter: u64,
}

/// The identity in a datagram's cleartext header, if it parses. Not
/// authenticated by itself: an adapter may use it to order datagrams it
/// read from several sockets (the replay window expects roughly the
/// sender's order), and may trust it (e.g. to learn the sender's address)
/// only after [`Vs::handle_datagram`] accepted the datagram.
pub fn datagram_id(bytes: &[u8]) -> Option<DatagramId> {
    Header::decode(bytes).ok().map(|h| DatagramId { sender: h.sender, incarnation: h.inc, counter: h.counter })
}

/// Configuration of one process.
#[derive(Clone, Debug)]
pub struct VsConfig {
    /// Our node id (non-zero, in `nodes`).
    pub node: NodeId,
    /// Our incarnation: must be new at every process start.
    pub incarnation: Incarnation,
    /// Every node of the cluster (the quorum denominator).
    pub nodes: NodeList,
    pub quorum: QuorumMode,
    pub heartbeat_ms: u64,
    /// At least twice the heartbeat interval.
    pub fail_timeout_ms: u64,
    /// Cluster key shared by all nodes.
    pub key: [u8; 32],
}

impl VsConfig {
    /// A configuration with majority quorum and the default timings.
    pub fn new(node: NodeId, incarnation: Incarnation, nodes: NodeList, key: [u8; 32]) -> Self {
        VsConfig {
            node,
            incarnation,
            nodes,
            quorum: QuorumMode::Majority,
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            fail_timeout_ms: DEFAULT_FAIL_TIMEOUT_MS,
            key,
        }
    }
}

/// Invalid configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum VsConfigError {
    /// Node id 0.
    InvalidNode,
    /// Our node is not in the node list.
    NotInNodeList,
    /// `heartbeat_ms` is 0 or `fail_timeout_ms < 2 * heartbeat_ms`.
    BadTiming,
}

/// Where a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Dest {
    /// Every configured node (multicast or one unicast per node).
    All,
    Node(NodeId),
}

/// A datagram to send: `buf[..len]` to `dest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Transmit {
    pub dest: Dest,
    pub len: usize,
}

/// What the transport tells the layers above. (No heap to box the large
/// `Confchg` variant into; events are short-lived stack values.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[must_use = "an event the host drops is a membership change or a message never delivered"]
pub enum VsEvent {
    Confchg(Confchg),
    Ring(RingEvent),
    Quorum(QuorumEvent),
    /// A message in agreed order; its payload is `payload_buf[..len]`
    /// (reassembled if it was sent in several chunks).
    Deliver {
        from: NodeId,
        len: usize,
    },
}

/// The current view.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct VsView {
    pub id: u64,
    pub members: NodeList,
}

/// One configured peer as this node sees it (an operator's link view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PeerLink {
    pub node: NodeId,
    /// The incarnation of its newest authenticated datagram.
    pub inc: Option<Incarnation>,
    /// When an authenticated datagram of it last arrived (`None`: never).
    pub last_heard: Option<Instant>,
    /// Heard within the failure timeout, not left, not suspected.
    pub alive: bool,
    /// This incarnation announced a clean leave.
    pub left: bool,
    /// Excluded from views for a while (heard, but not taking part).
    pub suspected: bool,
}

/// Counters. Every rejected datagram increments exactly one of the first
/// group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct VsStats {
    /// Failed authentication.
    pub forged: u64,
    /// Counter already seen (or too old for the window).
    pub replayed: u64,
    /// Truncated, bad version, or authenticated but undecodable.
    pub malformed: u64,
    /// Larger than [`MAX_DATAGRAM`].
    pub oversize: u64,
    /// Addressed to another node.
    pub misdirected: u64,
    /// From an older incarnation of a node.
    pub stale_incarnation: u64,
    /// From a node id not in the configuration.
    pub unknown_sender: u64,
    /// Header sender differs from the adapter's address hint.
    pub addr_mismatch: u64,
    /// Our own datagram came back.
    pub loopback: u64,
    /// Authentic, but names a view seq more than [`MAX_VIEW_JUMP`] past
    /// ours (only a faulty or hostile key holder sends one): dropped whole,
    /// before it counts as a sign of life.
    pub out_of_range: u64,
    /// Datagrams accepted.
    pub datagrams_in: u64,
    /// Datagrams produced.
    pub datagrams_out: u64,
    /// Sequenced messages retransmitted.
    pub retransmits: u64,
    /// Own messages resent to the sequencer after a timeout.
    pub data_retransmits: u64,
    /// Sequencer: `DATA` dropped because the order window was full (the
    /// sender is asked to resend as soon as there is room).
    pub window_drops: u64,
    pub naks_sent: u64,
    /// NAKs sent to a flush holder during a view change.
    pub flush_repairs: u64,
    /// Duplicate messages suppressed.
    pub duplicates: u64,
    pub delivered: u64,
    pub views_installed: u64,
    /// `broadcast` refused with `WindowFull`.
    pub backpressure: u64,
    /// Sequencer: a multi-chunk message had to wait for reassembly pages
    /// (counted once per wait; the message is delivered later, not lost).
    pub frag_deferred: u64,
    /// Incomplete multi-chunk messages dropped because a view was installed
    /// (their senders send them again in the new view).
    pub frag_dropped_view_change: u64,
    /// Chunks discarded at reassembly ([`FragDiscard`]: only a faulty peer
    /// causes this).
    pub frag_discarded: u64,
    /// Of those, chunks of our own messages (our message was lost).
    pub frag_own_lost: u64,
}

/// Why a datagram was dropped. It was counted in [`VsStats`] and had no
/// effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum VsRecvError {
    Oversize,
    Malformed,
    Forged,
    Replayed,
    StaleIncarnation,
    UnknownSender,
    Misdirected,
    AddrMismatch,
    Loopback,
    OutOfRange,
    /// We left the group; nothing is processed any more (not counted).
    Closed,
}

/// Why `broadcast` refused a message; nothing was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
// Exhaustive on purpose: every host decides what each send error means for
// the message it holds (keep, retry, drop), so a new one must not compile
// into a catch-all.
pub enum VsSendError {
    /// Larger than [`MAX_PAYLOAD`] ([`Vs::broadcast`]) or [`MAX_MESSAGE`]
    /// ([`Vs::broadcast_message`]).
    TooLarge,
    /// The send window cannot take all units of the message now (own units
    /// are still undelivered); retry after polling.
    WindowFull,
    /// `leave` was called.
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Running,
    /// `leave` called: still taking part until our queued messages are
    /// delivered or the deadline passes.
    Leaving {
        deadline: Instant,
    },
    Left,
}

/// Transmit intents: what `poll_transmit` still has to send. Frames are
/// rendered from the current state when polled.
#[derive(Clone, Copy, Debug, Default)]
struct TxState {
    heartbeat: bool,
    propose: bool,
    sync: bool,
    install: bool,
    /// Stragglers to send INSTALL to (bit = detector peer index).
    install_to: u32,
    flush_ok: bool,
    sync_done: bool,
    ack: bool,
    /// (dest, view, lo, hi)
    nak: Option<(NodeId, u64, u64, u64)>,
    /// Range of our view's stream to rebroadcast.
    rtx: Option<(u64, u64)>,
    /// Sequencer: members whose `DATA` was dropped for lack of window room,
    /// to be told to resend (bit = view member index).
    resend: u32,
    /// Sequencer: members whose first chunk was deferred for lack of
    /// reassembly pages; moved to `resend` when pages are freed.
    frag_wait: u32,
    leave: u8,
    leave_at: Instant,
}

/// The datagram VS transport of one process. See the module docs.
#[cfg_attr(feature = "explore", derive(Clone))]
pub struct Vs {
    me: Member,
    configured: usize,
    quorum: QuorumMode,
    hb_ms: u64,
    fail_ms: u64,
    auth: Auth,
    /// Last datagram counter used (nonce uniqueness: never reused).
    tx_counter: u64,
    /// Latest time seen (inputs may not go backwards).
    now: Instant,
    detector: Detector,
    view: View,
    view_installed_at: Instant,
    /// Proposal that installed the current view (coordinator, counter).
    installed_pid: Option<(NodeId, u32)>,
    /// Never installed a view with others.
    fresh: bool,
    flush: Option<Flush>,
    coord: Coord,
    desired_sig: u64,
    desired_changed_at: Instant,
    change_since: Option<Instant>,
    stall_since: Option<Instant>,
    order: OrderBuf,
    send: SendWindow,
    /// Sequencer: reassembly accounting of the stream as assigned.
    frag_seq: Tracker,
    /// Reassembly of the delivered stream.
    frag_rx: Reassembly,
    /// Next message id (chunk header).
    next_msg_id: u16,
    tx: TxState,
    next_hb: Instant,
    nak_at: Instant,
    events: EventQueue,
    left_record: Option<Record>,
    life: Life,
    stats: VsStats,
}

impl Vs {
    pub fn new(cfg: VsConfig) -> Result<Vs, VsConfigError> {
        if !cfg.node.is_valid() {
            return Err(VsConfigError::InvalidNode);
        }
        let mut nodes = cfg.nodes;
        gcs::normalize(&mut nodes);
        nodes.retain(|n| n.is_valid());
        if nodes.binary_search(&cfg.node).is_err() {
            return Err(VsConfigError::NotInNodeList);
        }
        if cfg.heartbeat_ms == 0 || cfg.fail_timeout_ms < cfg.heartbeat_ms.saturating_mul(2) {
            return Err(VsConfigError::BadTiming);
        }
        let me = Member { node: cfg.node, inc: cfg.incarnation };
        let view = View::singleton(me);
        let quorate = cfg.quorum.is_quorate(1, nodes.len());
        let mut events = EventQueue::new();
        let queued = events.push(Record::initial(me.node, view.key.id, quorate));
        invariant!(queued, "a new event queue has room");
        Ok(Vs {
            me,
            configured: nodes.len(),
            quorum: cfg.quorum,
            hb_ms: cfg.heartbeat_ms,
            fail_ms: cfg.fail_timeout_ms,
            auth: Auth::new(&cfg.key),
            tx_counter: 0,
            now: Instant(0),
            detector: Detector::new(&nodes, me.node, cfg.fail_timeout_ms),
            view,
            view_installed_at: Instant(0),
            installed_pid: None,
            fresh: true,
            flush: None,
            coord: Coord::new(),
            desired_sig: 0,
            desired_changed_at: Instant(0),
            change_since: None,
            stall_since: None,
            order: OrderBuf::new(),
            send: SendWindow::new(),
            frag_seq: Tracker::new(),
            frag_rx: Reassembly::new(),
            next_msg_id: 0,
            tx: TxState::default(),
            next_hb: Instant(0),
            nak_at: Instant(0),
            events,
            left_record: None,
            life: Life::Running,
            stats: VsStats::default(),
        })
    }

    // ---- derived timings ----

    fn phase_ms(&self) -> u64 {
        self.fail_ms
    }

    fn stall_ms(&self) -> u64 {
        self.fail_ms.saturating_mul(3)
    }

    fn suspect_ms(&self) -> u64 {
        self.fail_ms.saturating_mul(4)
    }

    fn nak_ms(&self) -> u64 {
        (self.hb_ms / 2).max(1)
    }

    fn rto_ms(&self) -> u64 {
        self.hb_ms
    }

    fn observe(&mut self, now: Instant) -> Instant {
        if now > self.now {
            self.now = now;
        }
        self.now
    }

    // ---- public API ----

    /// Counters.
    pub fn stats(&self) -> VsStats {
        self.stats
    }

    /// The installed view.
    pub fn view(&self) -> VsView {
        VsView { id: self.view.key.id, members: self.view.nodes() }
    }

    /// Every configured peer: incarnation, last heard, alive.
    pub fn peer_links(&self, now: Instant) -> heapless::Vec<PeerLink, MAX_NODES> {
        self.detector.links(now)
    }

    /// Our node id.
    pub fn node(&self) -> NodeId {
        self.me.node
    }

    /// How many more units the send window takes right now: `broadcast`
    /// needs one, `broadcast_message` [`chunks_for`] its length. A message
    /// of one unit may also be taken at 0, packed into the last queued unit
    /// (see `src/frag.rs`, "Packed units").
    pub fn send_capacity(&self) -> usize {
        SEND_WINDOW.saturating_sub(self.send.len())
    }

    /// True once `leave` completed.
    pub fn is_closed(&self) -> bool {
        matches!(self.life, Life::Left)
    }

    /// Queue a message of at most [`MAX_PAYLOAD`] bytes (one unit) for
    /// agreed-order delivery to the view (ourselves included). On error
    /// nothing was queued.
    pub fn broadcast(&mut self, now: Instant, payload: &[u8]) -> Result<(), VsSendError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(VsSendError::TooLarge);
        }
        self.broadcast_message(now, payload)
    }

    /// Queue a message of at most [`MAX_MESSAGE`] bytes for agreed-order
    /// delivery, split into [`chunks_for`]`(len)` units. All or nothing: if
    /// the send window cannot take every unit, nothing is queued
    /// (`WindowFull`). Receivers deliver it whole, once, in total order with
    /// all other messages (see `src/frag.rs` for view changes).
    pub fn broadcast_message(&mut self, now: Instant, message: &[u8]) -> Result<(), VsSendError> {
        let now = self.observe(now);
        let Some(count) = chunks_for(message.len()) else { return Err(VsSendError::TooLarge) };
        if !matches!(self.life, Life::Running) {
            return Err(VsSendError::Closed);
        }
        let msg_id = self.next_msg_id;
        if count == 1 {
            // A single: into the last queued unit if it is still ours alone
            // and has room, else into a new unit.
            let hdr = ChunkHdr { msg_id, index: 0, count: 1 }.encode();
            if !self.send.append(&hdr, message, true) {
                if self.send_capacity() < 1 {
                    self.stats.backpressure += 1;
                    return Err(VsSendError::WindowFull);
                }
                if !self.send.push(&hdr, message, true, 0) {
                    return Err(VsSendError::WindowFull); // unreachable: room checked
                }
            }
        } else {
            // Chunks: the first one in the room left in the last queued unit
            // (if there is enough), the others in new units. If that unit
            // opens with the end of a larger message, the new one may hold
            // no more reassembly pages than that one frees (the sequencer
            // then never holds the unit back, see `frag::Tracker::admit`).
            let frees = usize::from(self.send.back_frees());
            let fits = |c: &Cut| frees == 0 || frag::pages_for(c.stored as u16) <= frees;
            let room = self
                .send
                .append_room()
                .and_then(|r| r.checked_sub(FIRST_HDR))
                .map(|r| if frees > 0 { r.min(frees * MAX_PAYLOAD) } else { r })
                .filter(|&r| r >= MIN_FIRST && fits(&Cut::new(message.len(), r)));
            let cut = Cut::new(message.len(), room.unwrap_or(MAX_UNIT - FIRST_HDR));
            let units = cut.count - usize::from(room.is_some());
            debug_assert!(cut.count <= MAX_CHUNKS && units <= count, "cut {cut:?} of {} bytes", message.len());
            if self.send_capacity() < units || cut.count > MAX_CHUNKS {
                self.stats.backpressure += 1;
                return Err(VsSendError::WindowFull);
            }
            for index in 0..cut.count {
                let (a, b) = cut.range(index, message.len());
                let data = message.get(a..b).unwrap_or(&[]);
                // count <= MAX_CHUNKS < 128, stored <= MAX_MESSAGE <= u16::MAX
                let hdr = ChunkHdr { msg_id, index: index as u8, count: cut.count as u8 };
                let last = index + 1 == cut.count;
                let queued = if index == 0 {
                    let h = hdr.encode_first(cut.stored as u16);
                    (room.is_some() && self.send.append(&h, data, false)) || self.send.push(&h, data, false, 0)
                } else {
                    // A last chunk opens its unit and frees the message's pages.
                    let frees = if last { frag::pages_for(cut.stored as u16) as u8 } else { 0 };
                    self.send.push(&hdr.encode(), data, last, frees)
                };
                if !queued {
                    // Unreachable: the room was checked above.
                    return Err(VsSendError::WindowFull);
                }
            }
        }
        self.next_msg_id = msg_id.wrapping_add(1);
        self.pump(now);
        Ok(())
    }

    /// Leave the group cleanly: our queued messages are delivered first (for
    /// at most `fail_timeout_ms`), then the others are told and we stop.
    pub fn leave(&mut self, now: Instant) {
        let now = self.observe(now);
        if matches!(self.life, Life::Running) {
            self.life = Life::Leaving { deadline: now.plus_ms(self.fail_ms) };
            self.pump(now);
        }
    }

    /// Process one received datagram. `from_addr_hint` is the node the
    /// adapter maps the source address to, if it knows.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from_addr_hint: Option<NodeId>,
        bytes: &[u8],
    ) -> Result<(), VsRecvError> {
        let now = self.observe(now);
        let r = self.receive(now, from_addr_hint, bytes);
        match r {
            Ok(()) => self.stats.datagrams_in += 1,
            Err(e) => {
                let s = &mut self.stats;
                match e {
                    VsRecvError::Oversize => s.oversize += 1,
                    VsRecvError::Malformed => s.malformed += 1,
                    VsRecvError::Forged => s.forged += 1,
                    VsRecvError::Replayed => s.replayed += 1,
                    VsRecvError::StaleIncarnation => s.stale_incarnation += 1,
                    VsRecvError::UnknownSender => s.unknown_sender += 1,
                    VsRecvError::Misdirected => s.misdirected += 1,
                    VsRecvError::AddrMismatch => s.addr_mismatch += 1,
                    VsRecvError::Loopback => s.loopback += 1,
                    VsRecvError::OutOfRange => s.out_of_range += 1,
                    VsRecvError::Closed => {}
                }
                trace!("vs {}: dropped datagram: {:?}", self.me.node.0, e);
            }
        }
        self.pump(now);
        r
    }

    /// Timer expiry: call at (or after) [`Vs::next_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.observe(now);
        if matches!(self.life, Life::Left) {
            return;
        }
        if now >= self.next_hb {
            self.tx.heartbeat = true;
            self.next_hb = now.plus_ms(self.hb_ms);
        }
        self.rto_tick(now);
        self.pump(now);
    }

    /// When `handle_timeout` wants to be called next.
    pub fn next_timeout(&self) -> Option<Instant> {
        if matches!(self.life, Life::Left) {
            return (self.tx.leave > 0).then_some(self.tx.leave_at);
        }
        let mut t = self.next_hb;
        let mut consider = |x: Instant| {
            if x < t {
                t = x;
            }
        };
        if let Some(x) = self.detector.next_change(self.now) {
            consider(x);
        }
        if let Some((deadline, resend)) = self.coord.deadlines(self.phase_ms()) {
            consider(deadline);
            consider(resend);
        }
        if let Some(since) = self.change_since {
            consider(self.desired_changed_at.plus_ms(self.hb_ms).min(since.plus_ms(self.hb_ms.saturating_mul(4))));
        }
        if let Some(since) = self.stall_since {
            consider(since.plus_ms(self.stall_ms()));
        }
        if self.repair_needed().is_some() {
            consider(self.nak_at);
        }
        if let Some(x) = self.send.rto_at {
            consider(x);
        }
        if let Life::Leaving { deadline } = self.life {
            consider(deadline);
        }
        Some(t)
    }

    /// Next event for the layers above. A `Deliver` payload is copied into
    /// `payload_buf`, which must hold [`MAX_MESSAGE`] bytes ([`MAX_PAYLOAD`]
    /// if only [`Vs::broadcast`] is used). With a smaller buffer a larger
    /// message is not lost: this returns `None` until called with a buffer
    /// large enough. No delivered message is ever longer than
    /// [`MAX_MESSAGE`]: a sender that builds one (only a faulty or hostile
    /// key holder can) has it dropped by every member at the same place
    /// (`frag_discarded`), so a `MAX_MESSAGE` buffer never wedges.
    #[must_use]
    pub fn poll_event(&mut self, payload_buf: &mut [u8]) -> Option<VsEvent> {
        loop {
            if let Some(ev) = self.events.next_event() {
                return Some(ev);
            }
            let Some(slot) = self.order.deliverable() else { break };
            let (from, sender_seq) = (slot.origin, slot.sender_seq);
            let idx = self.view.index_of(from).unwrap_or(usize::MAX);
            let rec = frag::record(slot.payload(), self.order.app_off);
            // Another record follows in this unit (none after an error).
            let next = rec.as_ref().ok().and_then(|r| r.next);
            let plan = rec.as_ref().map(|r| self.frag_rx.tracker.classify(idx, r)).map_err(|&e| e);
            // Copy out first: with a too small buffer nothing changes.
            let len = match (&rec, &plan) {
                (Ok(r), Ok(p)) if p.step == Step::Single => {
                    let dst = payload_buf.get_mut(..r.data.len())?;
                    dst.copy_from_slice(r.data);
                    Some(r.data.len())
                }
                (Ok(r), Ok(p)) if p.step == Step::Complete => Some(self.frag_rx.assemble(idx, r.data, payload_buf)?),
                _ => None,
            };
            // One of our messages ended here (or the unit is unreadable).
            let mut own_end = from == self.me.node;
            let discard = match (rec, plan) {
                (Ok(r), Ok(plan)) => {
                    own_end &= r.hdr.is_last();
                    self.frag_rx.apply(idx, &r, plan);
                    match plan.step {
                        Step::Discard(why) => Some(why),
                        _ => None,
                    }
                }
                (Err(why), _) | (_, Err(why)) => Some(why),
            };
            if let Some(why) = discard {
                self.frag_discard(from, why);
            }
            if len.is_some() {
                self.stats.delivered += 1;
            }
            if own_end {
                self.send.delivered(sender_seq, next);
            }
            if let Some(off) = next {
                debug_assert!(off > self.order.app_off, "records move forward");
                self.order.app_off = off;
            } else {
                self.order.advance_app();
                let now = self.now;
                self.try_install(now);
                self.sequence_own();
            }
            if let Some(len) = len {
                return Some(VsEvent::Deliver { from, len });
            }
        }
        if let Some(r) = &mut self.left_record {
            if let Some(ev) = r.step() {
                return Some(ev);
            }
            self.left_record = None;
        }
        None
    }

    // ---- internals ----

    fn frag_discard(&mut self, from: NodeId, why: FragDiscard) {
        self.stats.frag_discarded += 1;
        if from == self.me.node {
            self.stats.frag_own_lost += 1;
            warn!("vs {}: own chunk discarded at reassembly: {:?}", self.me.node.0, why);
        } else {
            debug!("vs {}: chunk of {} discarded at reassembly: {:?}", self.me.node.0, from.0, why);
        }
    }

    /// Run everything that may have become possible.
    fn pump(&mut self, now: Instant) {
        if matches!(self.life, Life::Left) {
            return;
        }
        self.membership_tick(now);
        self.try_install(now);
        self.sequence_own();
        self.check_sync_done(now);
        self.gap_tick(now);
        self.leave_tick(now);
        self.check_invariants();
    }

    /// What must hold after every input (debug builds: tests, simulator).
    fn check_invariants(&self) {
        let m = &self.view.members;
        invariant!(m.windows(2).all(|w| w[0].node < w[1].node), "view members not sorted");
        invariant!(m.contains(&self.me), "our own view does not contain us");
        invariant!(
            m.first().is_some_and(|x| x.node == self.view.leader()),
            "the view's leader is not its lowest member"
        );
        let o = &self.order;
        invariant!(
            o.contig <= o.high || o.high == 0,
            "contiguous point {} past the highest known {}",
            o.contig,
            o.high
        );
        invariant!(o.app_next <= o.contig + 1, "delivering {} past the contiguous point {}", o.app_next, o.contig);
        invariant!(o.base <= o.app_next, "the window base {} passed the delivery point {}", o.base, o.app_next);
        invariant!(self.send.tx_next <= self.send.last_seq() + 1, "sent past the queued sender sequence");
        invariant!(
            self.send.tx_next >= self.send.first_seq(),
            "send cursor {} below the first held unit {}",
            self.send.tx_next,
            self.send.first_seq()
        );
        // Liveness of our own stream: a unit the sequencer has not taken yet
        // is either about to be sent or under a retransmission timer.
        invariant!(
            !self.ordering_active()
                || self.is_sequencer()
                || self.order.own_sequenced >= self.send.last_seq()
                || self.data_dest().is_some()
                || self.send.rto_at.is_some(),
            "own units {}..={} unsequenced, but nothing to send and no timer (cursor {})",
            self.order.own_sequenced + 1,
            self.send.last_seq(),
            self.send.tx_next
        );
    }

    fn leave_tick(&mut self, now: Instant) {
        let Life::Leaving { deadline } = self.life else { return };
        if !self.send.is_empty() && now < deadline {
            return;
        }
        info!("vs {}: left", self.me.node.0);
        self.life = Life::Left;
        self.left_record = Some(Record::self_leave(&self.view.members, self.me.node));
        self.send.clear();
        self.flush = None;
        self.coord = Coord::new();
        // Stop delivering: what was received so far may still be consumed.
        self.order.limit = self.order.limit.min(self.order.contig);
        self.tx = TxState { leave: LEAVE_REPEATS, leave_at: now, ..TxState::default() };
    }

    fn receive(&mut self, now: Instant, hint: Option<NodeId>, bytes: &[u8]) -> Result<(), VsRecvError> {
        if matches!(self.life, Life::Left) {
            return Err(VsRecvError::Closed);
        }
        if bytes.len() > MAX_DATAGRAM {
            return Err(VsRecvError::Oversize);
        }
        if bytes.len() <= HEADER_LEN + TAG_LEN {
            return Err(VsRecvError::Malformed);
        }
        let hdr = Header::decode(bytes).map_err(|_| VsRecvError::Malformed)?;
        if hdr.sender == self.me.node {
            return Err(VsRecvError::Loopback);
        }
        if hint.is_some_and(|h| h != hdr.sender) {
            return Err(VsRecvError::AddrMismatch);
        }
        if hdr.dest != 0 && hdr.dest != self.me.node.0 {
            return Err(VsRecvError::Misdirected);
        }
        let idx = self.detector.find(hdr.sender).ok_or(VsRecvError::UnknownSender)?;
        self.detector.admit(idx, hdr.inc, hdr.counter)?;

        let body = bytes.get(HEADER_LEN..).ok_or(VsRecvError::Malformed)?;
        let plain_len = body.len().saturating_sub(TAG_LEN);
        let (cipher, tag) = body.split_at(plain_len);
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| VsRecvError::Malformed)?;
        let mut plain = [0u8; MAX_PLAIN];
        let plain = plain.get_mut(..plain_len).ok_or(VsRecvError::Malformed)?;
        plain.copy_from_slice(cipher);
        self.auth.open(&hdr, plain, tag).map_err(|_| VsRecvError::Forged)?;

        // Authentic from here on. A malformed (buggy or newer-version)
        // datagram is recorded, so it is not retried. One that names a view
        // seq too far past ours is dropped before it has any effect, not
        // even liveness: values near the end of the seq space could
        // otherwise spread and stop view changes (issue 15; `src/view.rs`,
        // "Bounded jumps"). A replay of it gets the same verdict.
        let checked = wire::validate(plain);
        if checked.is_ok_and(|max_view| max_view > self.view.seq_limit()) {
            return Err(VsRecvError::OutOfRange);
        }
        let new_inc = self.detector.commit(idx, hdr.inc, hdr.counter, now);
        if new_inc {
            debug!("vs {}: node {} incarnation {}", self.me.node.0, hdr.sender.0, hdr.inc.0);
        }
        checked.map_err(|_| VsRecvError::Malformed)?;
        let from = Member { node: hdr.sender, inc: hdr.inc };
        let mut r = Reader::new(plain);
        while !r.is_empty() {
            let Ok(frame) = Frame::decode(&mut r) else { break };
            self.apply(now, from, idx, hdr.counter, frame);
        }
        Ok(())
    }

    fn apply(&mut self, now: Instant, from: Member, idx: usize, counter: u64, frame: Frame<'_>) {
        match frame {
            Frame::Heartbeat(hb) => {
                self.detector.record_heartbeat(idx, now, counter, hb);
                self.on_heartbeat(from, idx, &hb);
            }
            Frame::Leave => self.on_leave(from),
            Frame::Data { view, sender_seq, payload } => self.on_data(from, view, sender_seq, payload),
            Frame::Seq(s) => self.on_seq(from, &s),
            Frame::Nak { view, lo, hi } => self.on_nak(from, view, lo, hi),
            Frame::Ack { view, contig } => self.on_ack(from, view, contig),
            Frame::Propose { counter, members } => self.on_propose(now, from, counter, members),
            Frame::FlushOk(ok) => self.coord_on_flush_ok(now, from, &ok),
            Frame::Sync(s) => self.on_sync(now, from, &s),
            Frame::SyncDone { counter } => self.coord_on_sync_done(now, from, counter),
            Frame::Install { counter, view } => self.on_install(now, from, counter, view),
            Frame::Resend { view, next } => self.on_resend(from, view, next),
        }
    }
}
