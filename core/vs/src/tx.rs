//! Assembling outgoing datagrams.
//!
//! Nothing is queued as bytes: the state machine only records *intents*
//! ([`super::TxState`], the sequencer's broadcast cursor, the send window's
//! transmit cursor) and [`Vs::poll_transmit`] renders frames from the current
//! state when asked. One datagram carries as many frames for the same
//! destination as fit (batching), highest priority first: view-change
//! control, heartbeat/ack, retransmissions, new messages. An intent is only
//! cleared once its frame was written; whatever did not fit goes in the next
//! datagram.

use super::view::Phase;
use super::wire::{Frame, Header, Heartbeat, SeqFrame, Writer, HEADER_LEN, MAX_PLAIN, TAG_LEN};
use super::{Dest, Life, Transmit, Vs, MAX_DATAGRAM};
use crate::ids::NodeId;

/// Write `frame` if it fits entirely.
fn put(w: &mut Writer<'_>, frame: &Frame<'_>) -> bool {
    w.remaining() >= frame.encoded_len() && frame.encode(w).is_ok()
}

impl Vs {
    /// The next datagram to send, written to `buf` (which must hold
    /// [`MAX_DATAGRAM`] bytes, else nothing is produced). Call until `None`
    /// after every input.
    #[must_use]
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        if buf.len() < MAX_DATAGRAM {
            return None;
        }
        // An intent that turned out to have nothing to send is cleared by
        // `fill`, so a few rounds always reach a real datagram or `None`.
        for _ in 0..8 {
            if self.tx_counter == u64::MAX {
                return None; // nonce space exhausted: never reuse one
            }
            let dest = self.pick_dest()?;
            let plain_len = {
                let region = buf.get_mut(HEADER_LEN..HEADER_LEN + MAX_PLAIN)?;
                let mut w = Writer::new(region);
                self.fill(dest, &mut w);
                w.pos()
            };
            if plain_len == 0 {
                continue;
            }
            self.tx_counter += 1;
            let header = Header {
                sender: self.me.node,
                inc: self.me.inc,
                counter: self.tx_counter,
                dest: match dest {
                    Dest::All => 0,
                    Dest::Node(n) => n.0,
                },
            };
            buf.get_mut(..HEADER_LEN)?.copy_from_slice(&header.encode());
            let tag = self.auth.seal(&header, buf.get_mut(HEADER_LEN..HEADER_LEN + plain_len)?).ok()?;
            let end = HEADER_LEN + plain_len + TAG_LEN;
            buf.get_mut(HEADER_LEN + plain_len..end)?.copy_from_slice(&tag);
            self.stats.datagrams_out += 1;
            return Some(Transmit { dest, len: end });
        }
        None
    }

    fn bcast_pending(&self) -> bool {
        let t = &self.tx;
        t.heartbeat
            || t.propose
            || t.sync
            || t.install
            || t.ack
            || t.rtx.is_some()
            || (self.is_sequencer() && self.view.members.len() > 1 && self.order.bcast_next < self.order.next_gseq)
    }

    /// Destination of the next datagram, by priority.
    fn pick_dest(&mut self) -> Option<Dest> {
        if matches!(self.life, Life::Left) {
            return (self.tx.leave > 0 && self.now >= self.tx.leave_at).then_some(Dest::All);
        }
        if self.bcast_pending() {
            return Some(Dest::All);
        }
        if self.tx.flush_ok || self.tx.sync_done {
            match &self.flush {
                Some(f) if f.pid.coord != self.me.node => return Some(Dest::Node(f.pid.coord)),
                _ => {
                    self.tx.flush_ok = false;
                    self.tx.sync_done = false;
                }
            }
        }
        while self.tx.install_to != 0 {
            let idx = self.tx.install_to.trailing_zeros() as usize;
            match self.detector.get(idx) {
                Some(p) => return Some(Dest::Node(p.node)),
                None => self.tx.install_to &= !(1u32 << idx),
            }
        }
        if let Some((d, ..)) = self.tx.nak {
            return Some(Dest::Node(d));
        }
        while self.tx.resend != 0 {
            if !self.is_sequencer() || self.flush.is_some() {
                self.tx.resend = 0;
                break;
            }
            if !self.order.can_assign() {
                break; // told once there is room
            }
            let idx = self.tx.resend.trailing_zeros() as usize;
            match self.view.members.get(idx) {
                Some(m) if m.node != self.me.node => return Some(Dest::Node(m.node)),
                _ => self.tx.resend &= !(1u32 << idx),
            }
        }
        self.data_dest().map(Dest::Node)
    }

    fn fill(&mut self, dest: Dest, w: &mut Writer<'_>) {
        match dest {
            Dest::All => self.fill_all(w),
            Dest::Node(n) => self.fill_node(n, w),
        }
    }

    fn heartbeat(&self) -> Heartbeat {
        let (acc_coord, acc_counter) = self.flush.as_ref().map_or((0, 0), |f| (f.pid.coord.0, f.pid.counter));
        let high = if self.is_sequencer() { self.order.next_gseq.saturating_sub(1) } else { self.order.high };
        Heartbeat {
            view: self.view.key,
            acc_coord,
            acc_counter,
            contig: self.order.contig,
            high,
            stable: self.order.stable,
            flags: u8::from(self.fresh),
        }
    }

    fn fill_all(&mut self, w: &mut Writer<'_>) {
        if matches!(self.life, Life::Left) {
            if self.tx.leave > 0 && put(w, &Frame::Leave) {
                self.tx.leave -= 1;
                self.tx.leave_at = self.now.plus_ms(self.hb_ms);
            }
            return;
        }
        if self.tx.install {
            match self.coord.last_install {
                Some((counter, view)) => {
                    if put(w, &Frame::Install { counter, view }) {
                        self.tx.install = false;
                    }
                }
                None => self.tx.install = false,
            }
        }
        if self.tx.sync {
            match (&self.coord.sync, self.coord.phase) {
                (Some(s), Phase::Syncing) => {
                    if put(w, &Frame::Sync(s.clone())) {
                        self.tx.sync = false;
                    }
                }
                _ => self.tx.sync = false,
            }
        }
        if self.tx.propose {
            if self.coord.phase == Phase::Proposing {
                let f = Frame::Propose { counter: self.coord.counter, members: self.coord.members.clone() };
                if put(w, &f) {
                    self.tx.propose = false;
                }
            } else {
                self.tx.propose = false;
            }
        }
        if self.tx.heartbeat && put(w, &Frame::Heartbeat(self.heartbeat())) {
            self.tx.heartbeat = false;
            // The heartbeat carries our contiguous point: it is an ack.
            self.tx.ack = false;
            self.order.last_ack_sent = self.order.contig;
        }
        if self.tx.ack && put(w, &Frame::Ack { view: self.view.key.id, contig: self.order.contig }) {
            self.tx.ack = false;
            self.order.last_ack_sent = self.order.contig;
        }
        if let Some((lo, hi)) = self.tx.rtx {
            let mut rest = None;
            let mut g = lo.max(self.order.base);
            while g <= hi {
                if let Some(f) = self.seq_frame(g) {
                    if !put(w, &f) {
                        rest = Some((g, hi));
                        break;
                    }
                    self.stats.retransmits += 1;
                }
                let Some(next) = g.checked_add(1) else { break };
                g = next;
            }
            self.tx.rtx = rest;
        }
        if self.is_sequencer() && self.view.members.len() <= 1 {
            // Nobody to tell.
            self.order.bcast_next = self.order.next_gseq;
        }
        if self.is_sequencer() {
            while self.order.bcast_next < self.order.next_gseq {
                let g = self.order.bcast_next;
                if let Some(f) = self.seq_frame(g) {
                    if !put(w, &f) {
                        break;
                    }
                }
                self.order.bcast_next += 1;
            }
        }
    }

    /// The `SEQ` frame of held unit `g`, if we hold it.
    fn seq_frame(&self, g: u64) -> Option<Frame<'_>> {
        let slot = self.order.get(g)?;
        Some(Frame::Seq(SeqFrame {
            view: self.view.key.id,
            gseq: g,
            stable: self.order.stable,
            origin: slot.origin,
            sender_seq: slot.sender_seq,
            payload: slot.payload(),
        }))
    }

    fn fill_node(&mut self, n: NodeId, w: &mut Writer<'_>) {
        let coord = self.flush.as_ref().map(|f| (f.pid.coord, f.pid.counter));
        if self.tx.flush_ok && coord.is_some_and(|(c, _)| c == n) {
            match self.flush_ok() {
                Some(ok) => {
                    if put(w, &Frame::FlushOk(ok)) {
                        self.tx.flush_ok = false;
                    }
                }
                None => self.tx.flush_ok = false,
            }
        }
        if self.tx.sync_done {
            if let Some((c, counter)) = coord.filter(|(c, _)| *c == n) {
                let _ = c;
                if put(w, &Frame::SyncDone { counter }) {
                    self.tx.sync_done = false;
                }
            }
        }
        if let Some(idx) = self.detector.find(n) {
            if idx < 32 && self.tx.install_to & (1u32 << idx) != 0 {
                match self.coord.last_install {
                    Some((counter, view)) => {
                        if put(w, &Frame::Install { counter, view }) {
                            self.tx.install_to &= !(1u32 << idx);
                        }
                    }
                    None => self.tx.install_to = 0,
                }
            }
        }
        if let Some((d, view, lo, hi)) = self.tx.nak {
            if view != self.view.key.id || self.order.contig >= hi {
                // Repaired meanwhile (the rest of a batch arrived): not sent.
                self.tx.nak = None;
            } else if d == n && put(w, &Frame::Nak { view, lo: lo.max(self.order.contig.saturating_add(1)), hi }) {
                self.tx.nak = None;
            }
        }
        if let Some(idx) = self.view.index_of(n) {
            let bit = 1u32.checked_shl(idx as u32).unwrap_or(0);
            if self.tx.resend & bit != 0 && self.is_sequencer() && self.order.can_assign() {
                let f = Frame::Resend { view: self.view.key.id, next: self.order.expect(idx) };
                if put(w, &f) {
                    self.tx.resend &= !bit;
                }
            }
        }
        if self.data_dest() == Some(n) {
            let mut sent = false;
            while let Some(m) = self.send.get(self.send.tx_next) {
                let f = Frame::Data { view: self.view.key.id, sender_seq: m.seq, payload: m.payload() };
                if !put(w, &f) {
                    break;
                }
                let seq = m.seq;
                self.send.seal(seq);
                self.send.tx_next += 1;
                sent = true;
            }
            if sent && self.send.rto_at.is_none() {
                self.send.rto_at = Some(self.now.plus_ms(self.rto_ms()));
            }
        }
    }
}
