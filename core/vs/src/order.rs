//! Agreed (total) order inside a view: a fixed sequencer.
//!
//! The sequencer of a view is its leader, the member with the lowest node id
//! (the same node that coordinated the view's installation). A member hands
//! each message to the sequencer in a unicast `DATA` frame numbered with a
//! per-view sender sequence; the sequencer accepts a sender's messages
//! strictly in that order (duplicates and gaps are dropped, the sender
//! retransmits after a timeout), gives each one the next global sequence
//! number `gseq` and broadcasts it in a `SEQ` frame. Every member delivers
//! `SEQ` frames in `gseq` order, so all members of a view deliver prefixes of
//! one sequence.
//!
//! Loss is repaired by NAKs: a member that sees a gap (a later `gseq`, or the
//! sequencer's heartbeat announcing a higher one) asks for the missing range;
//! retransmissions are broadcast so one repair serves everyone. Messages are
//! kept until *stable*: acknowledged (contiguously received) by every member
//! of the view. Members ack in heartbeats and, under load, every
//! `ORDER_WINDOW / 4` messages. The sequencer never assigns more than
//! `ORDER_WINDOW` messages past the stability point, which is the
//! back-pressure that ends in [`super::VsSendError::WindowFull`]. A `DATA`
//! the sequencer cannot take for lack of window room is dropped, and the
//! sender is told with a `RESEND` frame as soon as there is room again (so
//! a full window costs a round trip, not the sender's retransmission
//! timeout). Members apply the stability point a `SEQ` frame carries before
//! storing it (it may free the slot the frame needs), and a NAK whose gap
//! was filled before it could be sent is not sent.
//!
//! Keeping messages until they are stable is also what makes the flush of a
//! view change possible: whichever member holds the most messages can serve
//! every other member of its old view (see [`super::view`]).
//!
//! # Stability from every member
//!
//! The stability point is a fact about the view ("every member holds
//! `1..=stable`"), so a member learns it from the heartbeats and `SEQ`
//! frames of *every* member of its view, not only the sequencer's. This is
//! what keeps a flush live at any window size: a member stores unit `g` only
//! while `g < base + ORDER_WINDOW`, `base <= stable + 1`, so the flush target
//! (the contiguous point of the most advanced member, the holder) is at most
//! `ORDER_WINDOW` past the holder's stability point, and the holder's
//! heartbeats bring every lagging member's window that far. Learned from the
//! sequencer only, a member that missed the sequencer's last frames before
//! it died knew an older point than the holder, could not even NAK the
//! target (it lay past its window), never finished the flush and was
//! excluded (issue 19, finding 2; test
//! `a_member_whose_stability_point_lags_still_reaches_the_flush_target`).

use super::frag::{Admit, CHUNK_HDR, MAX_UNIT, PACKED, PACKED_HDR};
use super::wire::SeqFrame;
use super::{Life, Vs, ORDER_WINDOW, SEND_WINDOW};
use crate::gcs::MAX_NODES;
use crate::ids::{Instant, Member, NodeId};

const W: u64 = ORDER_WINDOW as u64;

/// One sequenced unit (a chunk of a message, see [`super::frag`]).
#[derive(Clone)]
pub(super) struct Slot {
    used: bool,
    pub gseq: u64,
    pub origin: NodeId,
    pub sender_seq: u64,
    len: u16,
    data: [u8; MAX_UNIT],
}

impl Slot {
    const EMPTY: Slot = Slot { used: false, gseq: 0, origin: NodeId(0), sender_seq: 0, len: 0, data: [0; MAX_UNIT] };

    pub fn payload(&self) -> &[u8] {
        self.data.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// Result of storing a received `SEQ`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Store {
    New,
    Duplicate,
    /// Outside the receive window (will be NAKed again later).
    NoRoom,
}

/// The sequenced-message buffer of the current view, plus the sequencer's
/// bookkeeping when we are the sequencer.
#[cfg_attr(feature = "explore", derive(Clone))]
pub(super) struct OrderBuf {
    slots: [Slot; ORDER_WINDOW],
    /// Lowest sequence number still held; slots cover `base..base + W`.
    pub base: u64,
    /// Every message `1..=contig` was received.
    pub contig: u64,
    /// Highest sequence number known to exist.
    pub high: u64,
    /// Every member of the view holds `1..=stable`.
    pub stable: u64,
    /// Next sequence number to hand to the application.
    pub app_next: u64,
    /// Offset of the next record to deliver inside unit `app_next` (a unit
    /// may pack several messages, see [`super::frag`]).
    pub app_off: usize,
    /// Delivery bound while a view change is in progress (freeze point,
    /// then the agreed flush target); `u64::MAX` otherwise.
    pub limit: u64,
    /// Contiguous point last reported in an `ACK`.
    pub last_ack_sent: u64,
    /// Highest sender sequence of our own messages seen sequenced.
    pub own_sequenced: u64,
    // Sequencer only.
    /// Next sequence number to assign.
    pub next_gseq: u64,
    /// Next assigned message to broadcast for the first time.
    pub bcast_next: u64,
    /// Per view member (by index): highest contiguous point acked.
    acks: [u64; MAX_NODES],
    /// Per view member: next sender sequence number accepted.
    expect: [u64; MAX_NODES],
}

impl OrderBuf {
    pub fn new() -> Self {
        OrderBuf {
            slots: [Slot::EMPTY; ORDER_WINDOW],
            base: 1,
            contig: 0,
            high: 0,
            stable: 0,
            app_next: 1,
            app_off: 0,
            limit: u64::MAX,
            last_ack_sent: 0,
            own_sequenced: 0,
            next_gseq: 1,
            bcast_next: 1,
            acks: [0; MAX_NODES],
            expect: [1; MAX_NODES],
        }
    }

    /// Start a new view: everything of the old view is gone.
    pub fn reset(&mut self) {
        for s in self.slots.iter_mut() {
            s.used = false;
        }
        self.base = 1;
        self.contig = 0;
        self.high = 0;
        self.stable = 0;
        self.app_next = 1;
        self.app_off = 0;
        self.limit = u64::MAX;
        self.last_ack_sent = 0;
        self.own_sequenced = 0;
        self.next_gseq = 1;
        self.bcast_next = 1;
        self.acks = [0; MAX_NODES];
        self.expect = [1; MAX_NODES];
    }

    fn index(g: u64) -> usize {
        // Lossless: the remainder is below ORDER_WINDOW.
        (g % W) as usize
    }

    fn in_window(&self, g: u64) -> bool {
        g >= self.base && g < self.base.saturating_add(W)
    }

    /// The held message with sequence number `g`.
    pub fn get(&self, g: u64) -> Option<&Slot> {
        if !self.in_window(g) {
            return None;
        }
        self.slots.get(Self::index(g)).filter(|s| s.used && s.gseq == g)
    }

    /// Highest sequence number we could store right now.
    pub fn window_end(&self) -> u64 {
        self.base.saturating_add(W - 1)
    }

    fn put(&mut self, g: u64, origin: NodeId, sender_seq: u64, payload: &[u8]) -> Store {
        if !self.in_window(g) {
            return if g < self.base { Store::Duplicate } else { Store::NoRoom };
        }
        let Some(slot) = self.slots.get_mut(Self::index(g)) else { return Store::NoRoom };
        if slot.used {
            return Store::Duplicate;
        }
        let Some(dst) = slot.data.get_mut(..payload.len()) else { return Store::NoRoom };
        dst.copy_from_slice(payload);
        slot.len = payload.len() as u16; // <= MAX_UNIT <= u16::MAX
        slot.used = true;
        slot.gseq = g;
        slot.origin = origin;
        slot.sender_seq = sender_seq;
        if g > self.high {
            self.high = g;
        }
        while self.get(self.contig.saturating_add(1)).is_some() {
            self.contig += 1;
        }
        Store::New
    }

    /// Store a received `SEQ` frame.
    pub fn store(&mut self, s: &SeqFrame<'_>) -> Store {
        self.put(s.gseq, s.origin, s.sender_seq, s.payload)
    }

    /// Next message the application may have, if any.
    pub fn deliverable(&self) -> Option<&Slot> {
        if self.app_next <= self.contig && self.app_next <= self.limit {
            self.get(self.app_next)
        } else {
            None
        }
    }

    /// The application consumed every record of unit `app_next`.
    pub fn advance_app(&mut self) {
        self.app_next = self.app_next.saturating_add(1);
        self.app_off = 0;
        self.gc();
    }

    /// Learn a stability point (from the sequencer).
    pub fn learn_stable(&mut self, s: u64) {
        let s = s.min(self.contig);
        if s > self.stable {
            self.stable = s;
            self.gc();
        }
    }

    /// Learn that messages up to `h` exist.
    pub fn learn_high(&mut self, h: u64) {
        if h > self.high {
            self.high = h;
        }
    }

    /// Free messages that are stable and delivered locally.
    fn gc(&mut self) {
        let upto = self.stable.min(self.app_next.saturating_sub(1));
        while self.base <= upto {
            if let Some(s) = self.slots.get_mut(Self::index(self.base)) {
                s.used = false;
            }
            self.base += 1;
        }
    }

    // ---- sequencer ----

    /// Can the sequencer assign another sequence number?
    pub fn can_assign(&self) -> bool {
        self.in_window(self.next_gseq) && self.next_gseq < u64::MAX
    }

    /// Assign the next sequence number (caller checked `can_assign`).
    pub fn assign(&mut self, origin: NodeId, sender_seq: u64, payload: &[u8]) -> bool {
        if !self.can_assign() || self.put(self.next_gseq, origin, sender_seq, payload) != Store::New {
            return false;
        }
        self.next_gseq += 1;
        true
    }

    pub fn expect(&self, idx: usize) -> u64 {
        self.expect.get(idx).copied().unwrap_or(u64::MAX)
    }

    pub fn bump_expect(&mut self, idx: usize) {
        if let Some(e) = self.expect.get_mut(idx) {
            *e = e.saturating_add(1);
        }
    }

    /// Record member `idx`'s ack (clamped to what was assigned).
    pub fn set_ack(&mut self, idx: usize, contig: u64) {
        let c = contig.min(self.next_gseq.saturating_sub(1));
        if let Some(a) = self.acks.get_mut(idx) {
            if c > *a {
                *a = c;
            }
        }
    }

    /// Sequencer: stability = the minimum ack over the `n` view members
    /// (our own ack, at `me`, is our contiguous point).
    pub fn recompute_stable(&mut self, n: usize, me: usize) {
        let contig = self.contig;
        if let Some(a) = self.acks.get_mut(me) {
            *a = contig;
        }
        let min = self.acks.iter().take(n).copied().min().unwrap_or(0);
        self.learn_stable(min);
    }
}

/// One of our own units (chunks) waiting to be delivered back to us.
#[derive(Clone)]
pub(super) struct OwnMsg {
    pub seq: u64,
    len: u16,
    /// Offset of the unit's last record.
    last_rec: u16,
    /// The last record ends a message: more may be packed in.
    packable: bool,
    /// Records before this offset belong to messages we delivered (see
    /// `renumber`).
    done: u16,
    /// Reassembly pages freed by the last chunk opening this unit (0 if it
    /// opens with none): a message started in this unit must need no more
    /// (see `frag::Tracker::admit`).
    pub frees: u8,
    data: [u8; MAX_UNIT],
}

impl OwnMsg {
    pub fn payload(&self) -> &[u8] {
        self.data.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// Our own units, from `broadcast` until we deliver them ourselves (all
/// chunks of a message until we delivered its last one, see
/// [`super::frag`]). Sender sequence numbers restart at 1 in every view;
/// units not popped in a view are renumbered and resent in the next.
#[cfg_attr(feature = "explore", derive(Clone))]
pub(super) struct SendWindow {
    q: heapless::Deque<OwnMsg, SEND_WINDOW>,
    next_seq: u64,
    /// Units up to this sequence number were sent to the sequencer or
    /// sequenced in this view: their bytes must not change any more.
    sealed: u64,
    /// Next sender sequence number to transmit to the sequencer.
    pub tx_next: u64,
    /// Retransmission deadline for unsequenced messages.
    pub rto_at: Option<Instant>,
}

impl SendWindow {
    pub const fn new() -> Self {
        SendWindow { q: heapless::Deque::new(), next_seq: 1, sealed: 0, tx_next: 1, rto_at: None }
    }

    #[cfg(test)]
    pub fn is_full(&self) -> bool {
        self.q.is_full()
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Queue a unit: chunk header `hdr` + `data` (caller checked size and
    /// room). `packable`: the record ends a message, more may be appended;
    /// `frees`: the pages its message frees if it is a last chunk.
    pub fn push(&mut self, hdr: &[u8], data: &[u8], packable: bool, frees: u8) -> bool {
        let mut m = OwnMsg { seq: self.next_seq, len: 0, last_rec: 0, packable, done: 0, frees, data: [0; MAX_UNIT] };
        let len = hdr.len() + data.len();
        let Some(dst) = m.data.get_mut(..len) else { return false };
        let (h, d) = dst.split_at_mut(hdr.len());
        h.copy_from_slice(hdr);
        d.copy_from_slice(data);
        m.len = len as u16; // <= MAX_UNIT
        if self.q.push_back(m).is_err() {
            return false;
        }
        self.next_seq += 1;
        true
    }

    /// Bytes a record appended to the last queued unit may take (header
    /// included), if that unit takes more: its last record ends a message,
    /// it was not sealed (sent or sequenced), and the flag and length the
    /// current last record then needs leave room.
    pub fn append_room(&self) -> Option<usize> {
        let m = self.q.back()?;
        let used = usize::from(m.len) + (PACKED_HDR - CHUNK_HDR);
        (m.packable && m.seq > self.sealed && used < MAX_UNIT).then(|| MAX_UNIT - used)
    }

    /// Pages freed by the last chunk opening the last queued unit (0: none).
    pub fn back_frees(&self) -> u8 {
        self.q.back().map_or(0, |m| m.frees)
    }

    /// Append a record (header `hdr` + `data`) to the last queued unit if
    /// [`SendWindow::append_room`] allows: the unit's last record gets the
    /// [`PACKED`] flag and its length, the new record becomes the last.
    /// `packable`: the new record ends a message. False (nothing changed)
    /// otherwise.
    pub fn append(&mut self, hdr: &[u8], data: &[u8], packable: bool) -> bool {
        if self.append_room().is_none_or(|room| hdr.len() + data.len() > room) {
            return false;
        }
        let Some(m) = self.q.back_mut() else { return false };
        let len = usize::from(m.len);
        let last = usize::from(m.last_rec);
        let new_len = len + (PACKED_HDR - CHUNK_HDR) + hdr.len() + data.len();
        if len < last + CHUNK_HDR || new_len > MAX_UNIT {
            return false;
        }
        // The last record is a single or a last chunk (packable): its data
        // follows its 4-byte header.
        let last_data = len - last - CHUNK_HDR;
        m.data.copy_within(last + CHUNK_HDR..len, last + PACKED_HDR);
        let Some(h) = m.data.get_mut(last..last + PACKED_HDR) else { return false };
        h[3] |= PACKED;
        // last_data < MAX_UNIT <= u16::MAX
        h[4..6].copy_from_slice(&(last_data as u16).to_le_bytes());
        let at = len + (PACKED_HDR - CHUNK_HDR);
        let Some(dst) = m.data.get_mut(at..new_len) else { return false };
        let (dh, dd) = dst.split_at_mut(hdr.len());
        dh.copy_from_slice(hdr);
        dd.copy_from_slice(data);
        m.last_rec = at as u16; // < MAX_UNIT
        m.len = new_len as u16;
        m.packable = packable;
        true
    }

    /// Unit `seq` left our hands (sent to the sequencer, or sequenced by
    /// us): never append to it.
    pub fn seal(&mut self, seq: u64) {
        if seq > self.sealed {
            self.sealed = seq;
        }
    }

    /// The message with sender sequence `seq`.
    pub fn get(&self, seq: u64) -> Option<&OwnMsg> {
        let front = self.q.front()?.seq;
        let i = usize::try_from(seq.checked_sub(front)?).ok()?;
        self.q.get(i)
    }

    /// Sender sequence of the first unit held (`last_seq() + 1` if none).
    pub fn first_seq(&self) -> u64 {
        self.q.front().map_or(self.next_seq, |m| m.seq)
    }

    pub fn last_seq(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// We delivered the end of one of our messages, in unit `seq`; `next`
    /// is the offset of the next record in that unit, if any. Every message
    /// before it ended too: drop the units before (and the unit itself if
    /// nothing follows), and remember how far the unit is done.
    pub fn delivered(&mut self, seq: u64, next: Option<usize>) {
        while self.q.front().is_some_and(|m| m.seq < seq || (m.seq == seq && next.is_none())) {
            self.q.pop_front();
        }
        // The transmit cursor never points at a dropped unit (see `rewind`).
        self.tx_next = self.tx_next.max(self.first_seq());
        if let (Some(m), Some(off)) = (self.q.front_mut(), next) {
            if m.seq == seq {
                m.done = off as u16; // < MAX_UNIT
            }
        }
    }

    /// Send again from unit `seq` on, at once (a retransmission timeout, or
    /// the sequencer's `RESEND`). Clamped to the units still held: a cursor
    /// below the first one (a unit delivered and dropped meanwhile) would
    /// find nothing to send, so no timer would be armed again and the units
    /// after it would never reach the sequencer (swarm seed 1223 with an
    /// order window of 16: a late `RESEND` rewound past a delivered unit).
    pub fn rewind(&mut self, seq: u64) {
        self.tx_next = seq.max(self.first_seq()).min(self.next_seq);
        self.rto_at = None;
    }

    /// New view: renumber what is left from 1, after stripping from the
    /// first unit the records of messages we already delivered (they must
    /// not be delivered again; what follows them is sent again, whole).
    pub fn renumber(&mut self) {
        if let Some(m) = self.q.front_mut() {
            let done = usize::from(m.done);
            let len = usize::from(m.len);
            if done > 0 && done < len && usize::from(m.last_rec) >= done {
                m.data.copy_within(done..len, 0);
                m.len -= m.done;
                m.last_rec -= m.done;
                // The completion that opened it is gone.
                m.frees = 0;
            }
            m.done = 0;
        }
        let mut s = 1;
        for m in self.q.iter_mut() {
            m.seq = s;
            s += 1;
        }
        self.next_seq = s;
        self.sealed = 0;
        self.tx_next = 1;
        self.rto_at = None;
    }

    /// Drop everything (after leaving).
    pub fn clear(&mut self) {
        self.q.clear();
        self.tx_next = self.next_seq;
        self.rto_at = None;
    }
}

impl Vs {
    /// Are we the sequencer of our current view (its lowest member, which
    /// orders and relays every message)?
    pub(super) fn is_sequencer(&self) -> bool {
        self.view.leader() == self.me.node
    }

    /// May the ordering machinery of the current view run? Not once frozen
    /// by a view change, nor after leaving.
    pub(super) fn ordering_active(&self) -> bool {
        self.flush.is_none() && !matches!(self.life, Life::Left)
    }

    /// Sequencer: assign sequence numbers to our own queued messages.
    pub(super) fn sequence_own(&mut self) {
        if !self.is_sequencer() || !self.ordering_active() {
            return;
        }
        let Some(me) = self.view.index_of(self.me.node) else { return };
        loop {
            let want = self.order.expect(me);
            let Some(msg) = self.send.get(want) else { break };
            if !self.order.can_assign() {
                break;
            }
            if let Admit::Defer { first } = self.frag_seq.admit(me, msg.payload()) {
                self.stats.frag_deferred += u64::from(first);
                break;
            }
            if !self.order.assign(self.me.node, want, msg.payload()) {
                break;
            }
            if self.frag_seq.commit(me, msg.payload()) {
                self.frag_pages_freed();
            }
            self.send.seal(want);
            self.order.bump_expect(me);
            self.order.own_sequenced = want;
        }
        self.order.recompute_stable(self.view.members.len(), me);
    }

    /// Sequencer: a member's message.
    pub(super) fn on_data(&mut self, from: Member, view: u64, sender_seq: u64, payload: &[u8]) {
        if view != self.view.key.id || !self.is_sequencer() || !self.ordering_active() {
            return;
        }
        let Some(idx) = self.view.position(from) else { return };
        if sender_seq != self.order.expect(idx) {
            if sender_seq < self.order.expect(idx) {
                self.stats.duplicates += 1;
            }
            return;
        }
        if !self.order.can_assign() {
            // Window full: dropped; the sender is told to resend once there
            // is room again (rather than waiting for its timeout).
            if idx < 32 {
                self.tx.resend |= 1u32 << idx;
            }
            self.stats.window_drops += 1;
            return;
        }
        if let Admit::Defer { first } = self.frag_seq.admit(idx, payload) {
            // Not enough reassembly pages at this point of the stream: the
            // sender is asked to resend once some are freed (see `frag`).
            self.stats.frag_deferred += u64::from(first);
            if idx < 32 {
                self.tx.frag_wait |= 1u32 << idx;
            }
            return;
        }
        if self.order.assign(from.node, sender_seq, payload) {
            if self.frag_seq.commit(idx, payload) {
                self.frag_pages_freed();
            }
            self.order.bump_expect(idx);
            if let Some(me) = self.view.index_of(self.me.node) {
                self.order.recompute_stable(self.view.members.len(), me);
            }
        }
    }

    /// A sequenced message from the sequencer (or a flush holder).
    pub(super) fn on_seq(&mut self, from: Member, s: &SeqFrame<'_>) {
        if s.view != self.view.key.id
            || self.view.position(from).is_none()
            || self.view.index_of(s.origin).is_none()
            || matches!(self.life, Life::Left)
        {
            return;
        }
        // Stability first: it may free the window slot this frame needs
        // (the sequencer assigns up to ORDER_WINDOW past *its* stability
        // point, which it sends along; `learn_stable` clamps to what we hold).
        // From any member: a flush holder relays what it learned.
        self.order.learn_stable(s.stable);
        let stored = self.order.store(s);
        if stored != Store::NoRoom && s.origin == self.me.node && s.sender_seq > self.order.own_sequenced {
            self.order.own_sequenced = s.sender_seq;
        }
        if self.is_sequencer() {
            if let Some(me) = self.view.index_of(self.me.node) {
                self.order.recompute_stable(self.view.members.len(), me);
            }
        } else if self.order.contig >= self.order.last_ack_sent.saturating_add(W / 4) {
            self.tx.ack = true;
        }
    }

    /// Sequencer: reassembly pages were freed; senders waiting for them may
    /// try again.
    fn frag_pages_freed(&mut self) {
        self.tx.resend |= self.tx.frag_wait;
        self.tx.frag_wait = 0;
    }

    /// The sequencer dropped our `DATA` from `next` on (its window was full)
    /// and has room now: send from there at once.
    pub(super) fn on_resend(&mut self, from: Member, view: u64, next: u64) {
        if view != self.view.key.id
            || from.node != self.view.leader()
            || self.view.position(from).is_none()
            || self.is_sequencer()
            || !self.ordering_active()
        {
            return;
        }
        // The sequencer takes a sender's units strictly in order: all
        // before `next` are sequenced.
        let seq = next.saturating_sub(1).min(self.send.last_seq());
        if seq > self.order.own_sequenced {
            self.order.own_sequenced = seq;
        }
        // A late RESEND may name units sequenced (even delivered) since.
        let next = next.max(self.order.own_sequenced.saturating_add(1));
        if next <= self.send.last_seq() && next < self.send.tx_next {
            self.send.rewind(next);
        }
    }

    /// Someone asks us to retransmit part of our current view's stream.
    pub(super) fn on_nak(&mut self, from: Member, view: u64, lo: u64, hi: u64) {
        if view != self.view.key.id || self.view.position(from).is_none() || matches!(self.life, Life::Left) {
            return;
        }
        let lo = lo.max(self.order.base);
        let hi = hi.min(self.order.contig.max(self.order.next_gseq.saturating_sub(1)));
        if lo > hi {
            return;
        }
        self.tx.rtx = Some(match self.tx.rtx {
            Some((a, b)) => (a.min(lo), b.max(hi)),
            None => (lo, hi),
        });
    }

    /// Sequencer: a member's ack.
    pub(super) fn on_ack(&mut self, from: Member, view: u64, contig: u64) {
        if view != self.view.key.id || !self.is_sequencer() {
            return;
        }
        let (Some(idx), Some(me)) = (self.view.position(from), self.view.index_of(self.me.node)) else { return };
        self.order.set_ack(idx, contig);
        self.order.recompute_stable(self.view.members.len(), me);
    }

    /// Where and up to what we need a repair, if anywhere: the flush holder
    /// during a view change, else the sequencer.
    pub(super) fn repair_needed(&self) -> Option<(NodeId, u64)> {
        if matches!(self.life, Life::Left) {
            return None;
        }
        let (dest, hi) = match &self.flush {
            Some(f) => match &f.sync {
                Some(s) if !f.install && self.order.contig < s.target => (s.holder, s.target),
                _ => return None,
            },
            None if !self.is_sequencer() && self.order.high > self.order.contig => {
                (self.view.leader(), self.order.high)
            }
            None => return None,
        };
        (dest != self.me.node).then_some((dest, hi))
    }

    /// Send a NAK if we have a gap and the NAK timer allows it.
    pub(super) fn gap_tick(&mut self, now: Instant) {
        let Some((dest, hi)) = self.repair_needed() else { return };
        if now < self.nak_at {
            return;
        }
        // Re-armed even when nothing can be asked for yet (receive window
        // full until stability advances), so the timer never spins.
        self.nak_at = now.plus_ms(self.nak_ms());
        let lo = self.order.contig.saturating_add(1);
        let hi = hi.min(self.order.window_end());
        if lo <= hi {
            self.tx.nak = Some((dest, self.view.key.id, lo, hi));
            self.stats.naks_sent += 1;
            if self.flush.is_some() {
                self.stats.flush_repairs += 1;
            }
        }
    }

    /// Our own unsequenced messages must be (re)sent to this node, if any.
    pub(super) fn data_dest(&self) -> Option<NodeId> {
        if !self.ordering_active() || self.is_sequencer() || self.send.get(self.send.tx_next).is_none() {
            return None;
        }
        Some(self.view.leader())
    }

    /// Retransmission timer of our unsequenced messages.
    pub(super) fn rto_tick(&mut self, now: Instant) {
        if self.order.own_sequenced >= self.send.last_seq() {
            self.send.rto_at = None;
            return;
        }
        if let Some(t) = self.send.rto_at {
            if now >= t {
                self.send.rewind(self.order.own_sequenced.saturating_add(1));
                self.stats.data_retransmits += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    fn seq(g: u64, p: &[u8]) -> SeqFrame<'_> {
        SeqFrame { view: 1, gseq: g, stable: 0, origin: NodeId(1), sender_seq: g, payload: p }
    }

    #[test]
    fn order_buffer_contiguity_window_and_gc() {
        let mut o = OrderBuf::new();
        assert_eq!(o.store(&seq(2, b"b")), Store::New);
        assert_eq!(o.contig, 0);
        // `high` is the highest stored seq (the gap below it is NAKed
        // without waiting for a heartbeat's `high`; issue 17: not updating
        // it, or lowering it, survived).
        assert_eq!(o.high, 2);
        assert!(o.deliverable().is_none());
        assert_eq!(o.store(&seq(1, b"a")), Store::New);
        assert_eq!(o.contig, 2);
        assert_eq!(o.high, 2);
        assert_eq!(o.store(&seq(1, b"a")), Store::Duplicate);
        assert_eq!(o.store(&seq(W + 1, b"x")), Store::NoRoom);
        o.limit = 1;
        assert_eq!(o.deliverable().unwrap().payload(), b"a");
        o.advance_app();
        assert!(o.deliverable().is_none());
        o.limit = u64::MAX;
        assert_eq!(o.deliverable().unwrap().payload(), b"b");
        o.advance_app();
        // Not stable yet: still held.
        assert_eq!(o.base, 1);
        o.learn_stable(5);
        assert_eq!(o.stable, 2);
        assert_eq!(o.base, 3);
        assert_eq!(o.store(&seq(1, b"a")), Store::Duplicate);
        assert_eq!(o.store(&seq(W + 1, b"x")), Store::New);
    }

    #[test]
    fn sequencer_window_and_stability() {
        let mut o = OrderBuf::new();
        for i in 0..W {
            assert!(o.assign(NodeId(1), i + 1, b"m"));
        }
        assert!(!o.can_assign());
        assert_eq!(o.contig, W);
        while o.deliverable().is_some() {
            o.advance_app();
        }
        o.recompute_stable(2, 0);
        assert!(!o.can_assign(), "member 1 has not acked");
        o.set_ack(1, 1000);
        o.recompute_stable(2, 0);
        assert_eq!(o.stable, W);
        assert!(o.can_assign());
    }

    #[test]
    fn send_window() {
        let mut s = SendWindow::new();
        for i in 0..SEND_WINDOW {
            assert!(!s.is_full());
            assert!(s.push(&[], &[i as u8], false, 0));
        }
        assert!(s.is_full());
        assert!(!s.push(&[], b"x", false, 0));
        assert_eq!(s.get(3).unwrap().payload(), &[2]);
        s.delivered(2, None);
        assert_eq!(s.len(), SEND_WINDOW - 2);
        assert!(s.get(2).is_none());
        s.renumber();
        assert_eq!(s.get(1).unwrap().payload(), &[2]);
        assert_eq!(s.last_seq(), (SEND_WINDOW - 2) as u64);
    }

    /// `back_frees` is what the last queued unit's opening chunk frees, 0
    /// for an empty window (issue 17: a constant survived; it only bounds
    /// how a chunked message packs after it).
    #[test]
    fn back_frees_is_the_last_units() {
        let mut s = SendWindow::new();
        assert_eq!(s.back_frees(), 0);
        assert!(s.push(&[], b"a", false, 3));
        assert_eq!(s.back_frees(), 3);
        assert!(s.push(&[], b"b", false, 0));
        assert_eq!(s.back_frees(), 0);
        assert!(s.push(&[], b"c", false, 4));
        assert_eq!(s.back_frees(), 4);
    }

    /// A view change renumbers the queue; a unit none of whose records was
    /// delivered keeps the pages its opening chunk frees (issue 17: `done >
    /// 0` -> `>= 0` in `renumber` survived; it clears them for an untouched
    /// unit too, which only lifts the packing limit of the next chunked
    /// message).
    #[test]
    fn renumber_keeps_the_pages_an_untouched_unit_frees() {
        let mut s = SendWindow::new();
        let last = super::super::frag::ChunkHdr { msg_id: 1, index: 1, count: 2 }.encode();
        assert!(s.push(&last, b"end of a larger message", true, 2));
        s.renumber();
        assert_eq!((s.last_seq(), s.back_frees()), (1, 2));
        // Once part of it was delivered, the stripped completion is gone.
        assert!(s.append(&hdr(2, 1), b"single", true));
        let (_, next) = super::super::frag::record(s.get(1).unwrap().payload(), 0).map(|r| (r.hdr, r.next)).unwrap();
        s.delivered(1, next);
        s.renumber();
        assert_eq!((s.last_seq(), s.back_frees()), (1, 0));
        assert_eq!(records(s.get(1).unwrap().payload()), std::vec![(2, b"single".to_vec())]);
    }

    /// `append` refuses a unit whose last record is shorter than a chunk
    /// header (issue 17: `len < last + CHUNK_HDR || new_len > MAX_UNIT` ->
    /// `&&` survived: the window's own callers always write a header).
    #[test]
    fn append_refuses_a_unit_without_a_whole_last_header() {
        let mut s = SendWindow::new();
        assert!(s.push(&[], b"ab", true, 0));
        assert!(!s.append(&hdr(1, 1), b"x", true));
        assert_eq!(s.get(1).unwrap().payload(), b"ab");
    }

    fn records(unit: &[u8]) -> std::vec::Vec<(u16, std::vec::Vec<u8>)> {
        let mut out = std::vec::Vec::new();
        let mut off = Some(0);
        while let Some(o) = off {
            let r = super::super::frag::record(unit, o).unwrap();
            out.push((r.hdr.msg_id, r.data.to_vec()));
            off = r.next;
        }
        out
    }

    fn hdr(id: u16, count: u8) -> [u8; CHUNK_HDR] {
        super::super::frag::ChunkHdr { msg_id: id, index: 0, count }.encode()
    }

    #[test]
    fn send_window_packs_whole_messages_until_sealed() {
        let mut s = SendWindow::new();
        assert!(!s.append(&hdr(0, 1), b"nothing queued", true), "no unit to pack into");
        assert!(s.push(&hdr(0, 1), b"m0", true, 0));
        let mut want = std::vec![(0u16, b"m0".to_vec())];
        // 64-byte messages: as many as fit one unit.
        let mut id = 1u16;
        loop {
            let m = [id as u8; 64];
            if !s.append(&hdr(id, 1), &m, true) {
                break;
            }
            want.push((id, m.to_vec()));
            id += 1;
        }
        assert_eq!(want.len(), 1 + (MAX_UNIT - CHUNK_HDR - 2) / (PACKED_HDR + 64), "packed to the brim");
        assert_eq!(s.len(), 1);
        let unit = s.get(1).unwrap().payload().to_vec();
        assert!(unit.len() <= MAX_UNIT);
        assert_eq!(records(&unit), want);
        // A small one still fits the last few bytes.
        assert!(s.append(&hdr(id, 1), b"z", true));
        want.push((id, b"z".to_vec()));
        assert_eq!(records(s.get(1).unwrap().payload()), want);
        assert_eq!(s.append_room(), Some(MAX_UNIT - unit.len() - 2 - (PACKED_HDR + 1)));

        // Sealed (sent or sequenced): never changed again.
        assert!(s.push(&hdr(90, 1), b"a", true, 0));
        s.seal(2);
        let before = s.get(2).unwrap().payload().to_vec();
        assert!(!s.append(&hdr(91, 1), b"b", true));
        assert_eq!(s.get(2).unwrap().payload(), &before[..]);
        assert_eq!(s.append_room(), None);
        // A unit ending with a chunk that is not a message's last is never
        // packed into.
        assert!(s.push(&hdr(92, 2), &[1u8; 100], false, 0));
        assert!(!s.append(&hdr(93, 1), b"c", true));
        assert_eq!(s.append_room(), None);
        // After a view change nothing was sent in the new view yet.
        s.delivered(1, None);
        s.renumber();
        assert!(s.push(&hdr(94, 1), b"d", true, 0));
        assert!(s.append(&hdr(95, 1), b"e", true));
        assert_eq!(records(s.get(3).unwrap().payload()), std::vec![(94, b"d".to_vec()), (95, b"e".to_vec())]);
    }

    #[test]
    fn renumber_strips_what_was_delivered_from_the_first_unit() {
        let mut s = SendWindow::new();
        let first = super::super::frag::ChunkHdr { msg_id: 2, index: 0, count: 2 }.encode_first(900);
        assert!(s.push(&hdr(1, 1), b"delivered", true, 0));
        assert!(s.append(&first, &[7u8; 900], false));
        assert!(s.push(&super::super::frag::ChunkHdr { msg_id: 2, index: 1, count: 2 }.encode(), b"end", true, 1));
        let unit = s.get(1).unwrap().payload().to_vec();
        let next = super::super::frag::record(&unit, 0).unwrap().next;
        assert!(next.is_some());
        // Message 1 was delivered; message 2 was cut by a view change.
        s.delivered(1, next);
        assert_eq!(s.len(), 2, "unit 1 is kept: message 2 starts there");
        s.renumber();
        let unit = s.get(1).unwrap().payload();
        let r = super::super::frag::record(unit, 0).unwrap();
        assert_eq!((r.hdr.msg_id, r.stored, r.data, r.next), (2, 900, &[7u8; 900][..], None));
        assert_eq!(s.get(2).unwrap().payload()[4..], *b"end");
        // The stripped unit still takes no more (it ends with a first chunk),
        // the last one does.
        assert!(s.append(&hdr(3, 1), b"more", true));
        assert_eq!(records(s.get(2).unwrap().payload()), std::vec![(2, b"end".to_vec()), (3, b"more".to_vec())]);
    }
}
