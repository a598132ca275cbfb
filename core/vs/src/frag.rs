//! Fragmentation and packing: messages of up to [`MAX_MESSAGE`] bytes as a
//! stream of records over sequenced units of at most `MAX_UNIT` bytes.
//!
//! # Records
//!
//! A sequenced unit (the payload of a `DATA`/`SEQ` frame) holds one or more
//! records. A record is a whole message (a *single*, `count == 1`) or one
//! chunk of a larger message:
//!
//! ```text
//! +-------------+-------+----------------+------------+---------------+------+
//! | msg id u16  | index | count [|PACKED]| [len u16]  | [stored u16]  | data |
//! +-------------+-------+----------------+------------+---------------+------+
//!                         len: only with PACKED   stored: only in a first chunk
//! ```
//!
//! `msg id` counts the sender's messages (wrapping), `count` is the number
//! of chunks of the message (`1..=MAX_CHUNKS`), `index` this chunk's
//! position. A record followed by another one in the same unit has the
//! [`PACKED`] bit set in its count byte and a 2-byte data length; the last
//! record of a unit has neither (its data is the rest of the unit). The first
//! chunk of a larger message carries `stored`, the number of bytes of all its
//! chunks but the last (what receivers keep in reassembly pages).
//!
//! # The sender's stream
//!
//! The sender writes its messages into its units as one stream
//! ([`super::Vs::broadcast_message`]), so units are full and a datagram
//! carries as much as it can:
//!
//! * a message that fits a unit of its own is a single, appended to the
//!   last queued unit if it fits there, else in a new unit;
//! * a larger message starts in the room left in the last queued unit (if
//!   there are at least `MIN_FIRST` bytes), else in a new unit, and goes on
//!   in new units; every chunk but the last ends its unit, the last chunk
//!   may be followed by later messages.
//!
//! Records are only appended to a unit that is still ours alone: neither
//! sent to the sequencer nor sequenced (see `SendWindow::append`). A unit's
//! bytes never change once anyone else may hold them, and nothing waits to
//! be packed: a unit is sent as soon as the transmit path gets to it.
//! [`super::Vs::broadcast_message`] queues all chunks of a message at once
//! or refuses the whole message (`WindowFull`): a message is never partly
//! queued. A message of 64 bytes takes 70 bytes of a unit, so a unit
//! carries ~18 of them; a stream of 1400-byte messages takes ~1.1 units per
//! message rather than 2.
//!
//! # Reassembly
//!
//! Records are delivered in agreed order, one by one within a unit.
//! Per-sender FIFO and the atomic queueing mean a sender's chunks follow each
//! other in its own stream; other senders' units may be interleaved. A
//! message is delivered at the position of its **last** chunk, so all members
//! deliver reassembled messages in one total order. Chunks but the last are
//! copied into reassembly pages of [`MAX_PAYLOAD`] bytes
//! (`ceil(stored / MAX_PAYLOAD)` pages per message, [`REASSEMBLY_PAGES`] in
//! all, shared by all senders); the last chunk is copied straight from the
//! order buffer.
//!
//! The reassembly state is a deterministic function of the agreed stream
//! since the view was installed ([`Tracker`]), so every member makes the
//! same decisions. The sequencer runs a second copy of the same [`Tracker`]
//! over the stream *as it assigns it* and only assigns a unit holding the
//! first chunk of a message when its pages are free at that point of the
//! stream: receivers therefore never run out of pages. A unit that does not
//! fit yet is deferred, not dropped: the sequencer does not take it and asks
//! the sender to send it again (a `RESEND` frame) once pages are freed
//! (counted in `VsStats::frag_deferred`); the first deferred sender is
//! served before any later one (a reservation), so no sender starves.
//!
//! # View changes
//!
//! Reassembly is per view. When a view is installed, every incomplete
//! message of the old view is dropped (counted in
//! `VsStats::frag_dropped_view_change`). Members moving together delivered
//! the same records of the old view (virtual synchrony), so they drop exactly
//! the same messages. The sender keeps every unit until it delivered, itself,
//! the end of every message the unit holds records of; when a view is
//! installed it strips from its first kept unit the records of messages that
//! were delivered (`SendWindow::renumber`), so a message cut by a view change
//! is sent again, whole, in the next view (like any message not delivered in
//! the view it was sent in), and no message is delivered twice. A surviving
//! sender's message is thus never lost; it is delivered in the new view.
//!
//! Records that do not fit the state (a chunk of no open message, a bad
//! header or length, no pages free: only a faulty peer produces them) are
//! discarded identically everywhere and counted in `VsStats::frag_discarded`
//! with a [`FragDiscard`] reason in the log; a record that cannot be framed
//! ends its unit.

use super::MAX_PAYLOAD;
use crate::gcs::MAX_NODES;

/// Length of the chunk header (msg id, index, count).
pub(super) const CHUNK_HDR: usize = 4;
/// Count-byte flag: another record follows this one in the unit (and a
/// 2-byte data length follows this header).
pub(super) const PACKED: u8 = 0x80;
/// Length of a packed record's header (chunk header + data length).
pub(super) const PACKED_HDR: usize = CHUNK_HDR + 2;
/// Length of a first chunk's header (chunk header + stored length); a first
/// chunk always ends its unit, so it is never packed.
pub(super) const FIRST_HDR: usize = CHUNK_HDR + 2;
/// Largest sequenced unit: what fills a datagram in one `SEQ` frame
/// (checked in `src/wire.rs`).
pub(super) const MAX_UNIT: usize = 1312;
/// Size of a reassembly page.
const PAGE: usize = MAX_PAYLOAD;
/// Data of a chunk that fills a unit of its own.
const CONT_DATA: usize = MAX_UNIT - CHUNK_HDR;
/// A larger message starts in the last queued unit only with at least this
/// much data there (else in a new unit).
pub(super) const MIN_FIRST: usize = 64;
/// Largest message [`super::Vs::broadcast_message`] takes: a core message
/// ([`cohort_types::MAX_MESSAGE`], set by the capacity profile).
pub const MAX_MESSAGE: usize = cohort_types::MAX_MESSAGE;
/// Chunks a message has at most (a message of [`MAX_MESSAGE`] bytes
/// started in the last 64 bytes of a unit); it takes one unit
/// fewer than that then, see [`chunks_for`].
pub const MAX_CHUNKS: usize = 1 + (MAX_MESSAGE - MIN_FIRST).div_ceil(CONT_DATA);
/// Reassembly pages (of [`MAX_PAYLOAD`] bytes) shared by all senders
/// ([`cohort_types::profile::REASSEMBLY_PAGES`]; host: 8, two maximum-size
/// messages of four pages each in reassembly at once, or eight messages of
/// up to two units).
pub const REASSEMBLY_PAGES: usize = cohort_types::profile::REASSEMBLY_PAGES;
/// Pages one message holds at most.
const MAX_PAGES: usize = MAX_MESSAGE.div_ceil(PAGE);

const _: () = assert!(MAX_MESSAGE >= MAX_PAYLOAD, "a one-page message is always accepted");
const _: () = assert!(MAX_CHUNKS >= 2 && MAX_CHUNKS < PACKED as usize, "the count byte keeps a flag bit");
const _: () = assert!(REASSEMBLY_PAGES >= MAX_PAGES, "a maximum-size message must fit");
const _: () = assert!(REASSEMBLY_PAGES <= 16, "free pages are a u16 bitmask");
const _: () = assert!(MAX_MESSAGE <= u16::MAX as usize, "stored lengths are u16");
const _: () = assert!(MIN_FIRST + FIRST_HDR < MAX_UNIT);
const _: () = assert!(MIN_FIRST == 64, "MAX_CHUNKS documents 64");
const _: () = assert!(match chunks_for(MAX_MESSAGE) {
    Some(n) => n <= MAX_CHUNKS,
    None => false,
});

/// Number of units a message of `len` bytes takes at most (when it starts
/// in a new unit), if it is not too large.
pub const fn chunks_for(len: usize) -> Option<usize> {
    if len > MAX_MESSAGE {
        None
    } else if len <= CONT_DATA {
        Some(1)
    } else {
        Some(1 + (len - (MAX_UNIT - FIRST_HDR)).div_ceil(CONT_DATA))
    }
}

/// How a message is cut into chunks: `first` data bytes in the first chunk,
/// then `CONT_DATA` per chunk, the rest in the last one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cut {
    pub first: usize,
    pub count: usize,
    /// Bytes of all chunks but the last.
    pub stored: usize,
}

impl Cut {
    /// Cut a message of more than a unit's data whose first chunk has room
    /// for `first_room` data bytes.
    pub fn new(len: usize, first_room: usize) -> Cut {
        let first = first_room.min(len.saturating_sub(1)).max(1);
        let rest = len - first;
        let cont = rest.div_ceil(CONT_DATA).max(1);
        let last = rest - (cont - 1) * CONT_DATA;
        Cut { first, count: 1 + cont, stored: len - last }
    }

    /// Data range of chunk `index` in the message.
    pub fn range(&self, index: usize, len: usize) -> (usize, usize) {
        if index == 0 {
            (0, self.first)
        } else {
            let a = self.first + (index - 1) * CONT_DATA;
            (a, (a + CONT_DATA).min(len))
        }
    }
}

/// Why a chunk was discarded at reassembly (never with correct peers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FragDiscard {
    /// Bad record header or length.
    Malformed,
    /// A continuation chunk of no open message (or of another one).
    Orphan,
    /// No reassembly pages left (the sequencer admits nothing that does not
    /// fit, so only a faulty sequencer causes this).
    Overflow,
    /// The message would be longer than [`MAX_MESSAGE`] (its stored part
    /// plus its last chunk): only a faulty or hostile key holder builds one.
    /// Every member drops it at the same place and moves on (a receive
    /// buffer of `MAX_MESSAGE` bytes always suffices).
    Oversize,
}

/// A parsed chunk header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ChunkHdr {
    pub msg_id: u16,
    pub index: u8,
    pub count: u8,
}

impl ChunkHdr {
    pub fn encode(&self) -> [u8; CHUNK_HDR] {
        let id = self.msg_id.to_le_bytes();
        [id[0], id[1], self.index, self.count]
    }

    /// Header of a first chunk: the chunk header + the stored length.
    pub fn encode_first(&self, stored: u16) -> [u8; FIRST_HDR] {
        let h = self.encode();
        let s = stored.to_le_bytes();
        [h[0], h[1], h[2], h[3], s[0], s[1]]
    }

    pub fn is_last(&self) -> bool {
        usize::from(self.index) + 1 >= usize::from(self.count)
    }

    fn is_first_of_many(&self) -> bool {
        self.index == 0 && self.count > 1
    }
}

/// One record of a unit (see "Records" above).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Record<'a> {
    pub hdr: ChunkHdr,
    /// First chunk of a larger message: bytes of all its chunks but the last.
    pub stored: u16,
    pub data: &'a [u8],
    /// Offset of the next record in the unit, if one follows.
    pub next: Option<usize>,
}

/// The record at byte offset `off` of `unit`, checking the header and the
/// chunk length against it: a record after the first of a unit is a single
/// or a first chunk (continuations open their unit); only singles and last
/// chunks are packed; chunks of larger messages are not empty; a first
/// chunk's stored length is at least its data and at most [`MAX_MESSAGE`].
/// Any error ends the unit (what follows cannot be framed).
pub(super) fn record(unit: &[u8], off: usize) -> Result<Record<'_>, FragDiscard> {
    let rest = unit.get(off..).ok_or(FragDiscard::Malformed)?;
    let (h, mut after) = rest.split_at_checked(CHUNK_HDR).ok_or(FragDiscard::Malformed)?;
    let packed = h[3] & PACKED != 0;
    let hdr = ChunkHdr { msg_id: u16::from_le_bytes([h[0], h[1]]), index: h[2], count: h[3] & !PACKED };
    let count = usize::from(hdr.count);
    let index = usize::from(hdr.index);
    if count == 0 || count > MAX_CHUNKS || index >= count || (off > 0 && index > 0) || (packed && !hdr.is_last()) {
        return Err(FragDiscard::Malformed);
    }
    let mut hdr_len = CHUNK_HDR;
    let mut len = None;
    if packed {
        let (l, body) = after.split_at_checked(2).ok_or(FragDiscard::Malformed)?;
        len = Some(usize::from(u16::from_le_bytes([l[0], l[1]])));
        after = body;
        hdr_len += 2;
    }
    let mut stored = 0u16;
    if hdr.is_first_of_many() {
        let (st, body) = after.split_at_checked(2).ok_or(FragDiscard::Malformed)?;
        stored = u16::from_le_bytes([st[0], st[1]]);
        after = body;
        hdr_len += 2;
    }
    let (data, next) = match len {
        Some(len) => {
            let data = after.get(..len).ok_or(FragDiscard::Malformed)?;
            let end = off + hdr_len + len;
            (data, (end < unit.len()).then_some(end))
        }
        None => (after, None),
    };
    if data.len() > CONT_DATA
        || (count > 1 && data.is_empty())
        || (hdr.is_first_of_many() && (data.len() > usize::from(stored) || usize::from(stored) > MAX_MESSAGE))
    {
        return Err(FragDiscard::Malformed);
    }
    Ok(Record { hdr, stored, data, next })
}

/// A message in reassembly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Open {
    msg_id: u16,
    count: u8,
    /// Next chunk index expected.
    next: u8,
    /// Pages, in message order.
    pages: [u8; MAX_PAGES],
    npages: u8,
    /// Bytes of all chunks but the last (declared by the first chunk).
    stored: u16,
    /// Bytes received so far.
    filled: u16,
}

/// Reassembly pages a message holds whose chunks but the last have
/// `stored` bytes.
pub(super) fn pages_for(stored: u16) -> usize {
    usize::from(stored).div_ceil(PAGE)
}

/// What one record does to the reassembly state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// A whole message in one record: deliver it.
    Single,
    /// First chunk of a message: store it (pages are allocated by `apply`).
    Start,
    /// A middle chunk: store it.
    Store,
    /// The last chunk: deliver the message.
    Complete,
    Discard(FragDiscard),
}

/// A step, plus whether the sender's open message is abandoned first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Plan {
    pub step: Step,
    pub abort: bool,
}

/// Sequencer admission verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Admit {
    Yes,
    /// Not now; `first` is true the first time this sender's message is
    /// deferred (so a wait is counted once).
    Defer {
        first: bool,
    },
}

/// Reassembly accounting of one view: which sender has a message open and
/// which pages it holds. Deterministic: the same stream gives the same
/// state on every member. Indexed by the sender's position in the view.
#[derive(Clone, Copy)]
pub(super) struct Tracker {
    open: [Option<Open>; MAX_NODES],
    /// Bit i: page i is free.
    free: u16,
    /// Sequencer only: the first sender deferred for lack of pages, and how
    /// many pages it needs.
    waiter: Option<(u8, u8)>,
    /// Sequencer only: bit i: sender i's next message was deferred.
    deferred: u32,
}

const ALL_PAGES: u16 = if REASSEMBLY_PAGES >= 16 { u16::MAX } else { (1u16 << REASSEMBLY_PAGES) - 1 };

impl Tracker {
    pub const fn new() -> Self {
        Tracker { open: [None; MAX_NODES], free: ALL_PAGES, waiter: None, deferred: 0 }
    }

    /// New view: forget everything. Returns how many open messages were
    /// dropped.
    pub fn reset(&mut self) -> u64 {
        let n = self.open.iter().filter(|o| o.is_some()).count() as u64;
        *self = Tracker::new();
        n
    }

    /// Messages in reassembly.
    #[cfg(test)]
    pub fn open_count(&self) -> usize {
        self.open.iter().filter(|o| o.is_some()).count()
    }

    pub fn free_pages(&self) -> usize {
        self.free.count_ones() as usize
    }

    fn open_of(&self, idx: usize) -> Option<Open> {
        self.open.get(idx).copied().flatten()
    }

    fn held(&self, idx: usize) -> usize {
        self.open_of(idx).map_or(0, |o| usize::from(o.npages))
    }

    /// What record `r` from the sender at view index `idx` would do (no
    /// change).
    pub fn classify(&self, idx: usize, r: &Record<'_>) -> Plan {
        let open = self.open_of(idx);
        let hdr = &r.hdr;
        if idx >= MAX_NODES {
            return Plan { step: Step::Discard(FragDiscard::Orphan), abort: false };
        }
        if hdr.count == 1 {
            return Plan { step: Step::Single, abort: open.is_some() };
        }
        if hdr.index == 0 {
            let step = if self.free_pages() + self.held(idx) >= pages_for(r.stored) {
                Step::Start
            } else {
                Step::Discard(FragDiscard::Overflow)
            };
            return Plan { step, abort: open.is_some() };
        }
        match open {
            Some(o) if o.msg_id == hdr.msg_id && o.count == hdr.count && o.next == hdr.index => {
                let filled = usize::from(o.filled);
                let stored = usize::from(o.stored);
                let step = if hdr.is_last() {
                    if filled != stored {
                        Step::Discard(FragDiscard::Malformed)
                    } else if stored + r.data.len() > MAX_MESSAGE {
                        Step::Discard(FragDiscard::Oversize)
                    } else {
                        Step::Complete
                    }
                } else if filled + r.data.len() <= stored {
                    Step::Store
                } else {
                    Step::Discard(FragDiscard::Malformed)
                };
                Plan { step, abort: matches!(step, Step::Discard(_)) }
            }
            _ => Plan { step: Step::Discard(FragDiscard::Orphan), abort: open.is_some() },
        }
    }

    /// Apply a plan made by [`Tracker::classify`] for the same record.
    /// Returns the byte offset in the message where the record's data goes
    /// (`Start`, `Store`).
    pub fn apply(&mut self, idx: usize, r: &Record<'_>, plan: Plan) -> Option<usize> {
        if plan.abort {
            self.close(idx);
        }
        match plan.step {
            Step::Start => {
                let need = pages_for(r.stored);
                let mut o = Open {
                    msg_id: r.hdr.msg_id,
                    count: r.hdr.count,
                    next: 1,
                    pages: [0; MAX_PAGES],
                    npages: 0,
                    stored: r.stored,
                    filled: r.data.len() as u16, // <= stored (checked by `record`)
                };
                for slot in o.pages.iter_mut().take(need) {
                    // classify checked that enough are free
                    let p = self.free.trailing_zeros() as u8;
                    self.free &= !(1u16 << (p % 16));
                    *slot = p;
                    o.npages += 1;
                }
                if let Some(s) = self.open.get_mut(idx) {
                    *s = Some(o);
                }
                Some(0)
            }
            Step::Store => {
                let Some(Some(o)) = self.open.get_mut(idx) else { return None };
                o.next += 1;
                let at = usize::from(o.filled);
                o.filled += r.data.len() as u16; // <= stored (checked by classify)
                Some(at)
            }
            Step::Complete => {
                self.close(idx);
                None
            }
            Step::Single | Step::Discard(_) => None,
        }
    }

    /// The open message of `idx`: (pages in order, number of them, stored).
    pub fn pages_of(&self, idx: usize) -> ([u8; MAX_PAGES], usize, usize) {
        match self.open_of(idx) {
            Some(o) => (o.pages, usize::from(o.npages), usize::from(o.stored)),
            None => ([0; MAX_PAGES], 0, 0),
        }
    }

    fn close(&mut self, idx: usize) {
        if let Some(slot) = self.open.get_mut(idx) {
            if let Some(o) = slot.take() {
                for &p in o.pages.iter().take(usize::from(o.npages)) {
                    self.free |= 1u16 << (p % 16);
                }
            }
        }
    }

    /// Sequencer: may the unit from view index `idx` be assigned now? Only
    /// a unit holding the first chunk of a larger message can be deferred
    /// (when its pages are not free once the unit's earlier records are
    /// applied); anything else is admitted (bad records are discarded
    /// identically by everyone).
    pub fn admit(&mut self, idx: usize, unit: &[u8]) -> Admit {
        let mut t = *self;
        let before = self.free_pages();
        let mut off = Some(0);
        while let Some(at) = off {
            let Ok(r) = record(unit, at) else { break };
            let plan = t.classify(idx, &r);
            // Pages the unit's earlier records free (a completion opening
            // the unit): a start within them never takes anyone's pages.
            let freed_here = t.free_pages().saturating_sub(before);
            if r.hdr.is_first_of_many() && !self.may_start(&t, idx, &r, plan, freed_here) {
                return self.defer(idx, pages_for(r.stored));
            }
            t.apply(idx, &r, plan);
            off = r.next;
        }
        Admit::Yes
    }

    /// Sequencer: may this first chunk start at this point (state `t`),
    /// given the reservation of the first deferred sender? A start that
    /// takes no more than `freed_here` (pages freed by the same unit) always
    /// may: the unit then leaves at least as many pages free as before, and
    /// deferring it would hold back the completion that freed them (two
    /// senders could wait for each other's pages forever).
    fn may_start(&mut self, t: &Tracker, idx: usize, r: &Record<'_>, plan: Plan, freed_here: usize) -> bool {
        let need = pages_for(r.stored);
        let avail = t.free_pages() + t.held(idx);
        let fits = plan.step == Step::Start;
        let me = idx as u8; // idx < MAX_NODES <= 32
        let ok = match self.waiter {
            _ if fits && need <= freed_here => true,
            Some((w, _)) if w == me => fits,
            // Someone else waits: only take what leaves its pages.
            Some((_, wneed)) => fits && avail >= need + usize::from(wneed),
            None => fits,
        };
        if ok {
            if self.waiter.is_some_and(|(w, _)| w == me) {
                self.waiter = None;
            }
            self.deferred &= !(1u32 << (idx % 32));
        }
        ok
    }

    fn defer(&mut self, idx: usize, need: usize) -> Admit {
        if self.waiter.is_none() {
            self.waiter = Some((idx as u8, need as u8)); // idx < 32, need <= MAX_PAGES
        }
        let bit = 1u32 << (idx % 32);
        let first = self.deferred & bit == 0;
        self.deferred |= bit;
        Admit::Defer { first }
    }

    /// Sequencer: the unit was assigned; advance the shadow state. Returns
    /// true when pages were freed (a message completed or was abandoned).
    pub fn commit(&mut self, idx: usize, unit: &[u8]) -> bool {
        let before = self.free;
        let mut off = Some(0);
        while let Some(at) = off {
            let Ok(r) = record(unit, at) else { break };
            let plan = self.classify(idx, &r);
            self.apply(idx, &r, plan);
            off = r.next;
        }
        self.free & !before != 0
    }
}

/// Receiver side: the tracker plus the page contents.
#[cfg_attr(feature = "explore", derive(Clone))]
pub(super) struct Reassembly {
    pub tracker: Tracker,
    pages: [[u8; PAGE]; REASSEMBLY_PAGES],
}

impl Reassembly {
    pub const fn new() -> Self {
        Reassembly { tracker: Tracker::new(), pages: [[0; PAGE]; REASSEMBLY_PAGES] }
    }

    /// Apply `plan` (from `tracker.classify`) for record `r` of the sender
    /// at `idx`, storing its data if it is a first or middle chunk.
    pub fn apply(&mut self, idx: usize, r: &Record<'_>, plan: Plan) {
        let Some(mut at) = self.tracker.apply(idx, r, plan) else { return };
        let (pages, n, _) = self.tracker.pages_of(idx);
        let mut data = r.data;
        while !data.is_empty() {
            let Some(&p) = pages.get(at / PAGE).filter(|_| at / PAGE < n) else { return };
            let Some(page) = self.pages.get_mut(usize::from(p)) else { return };
            let within = at % PAGE;
            let k = (PAGE - within).min(data.len());
            let (now, later) = data.split_at(k);
            if let Some(dst) = page.get_mut(within..within + k) {
                dst.copy_from_slice(now);
            }
            data = later;
            at += k;
        }
    }

    /// Copy the open message of `idx` plus its `last` chunk into `out`;
    /// returns the message length, or None if `out` is too small (nothing
    /// changes then).
    pub fn assemble(&self, idx: usize, last: &[u8], out: &mut [u8]) -> Option<usize> {
        let (pages, n, stored) = self.tracker.pages_of(idx);
        let len = stored + last.len();
        let out = out.get_mut(..len)?;
        let mut at = 0;
        for &p in pages.iter().take(n) {
            let src = self.pages.get(usize::from(p))?;
            let k = (stored - at).min(PAGE);
            out.get_mut(at..at + k)?.copy_from_slice(src.get(..k)?);
            at += k;
        }
        out.get_mut(stored..)?.copy_from_slice(last);
        Some(len)
    }
}
#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::vec::Vec;

    /// A unit holding one record (not packed).
    fn unit(msg_id: u16, index: u8, count: u8, stored: Option<u16>, data: &[u8]) -> Vec<u8> {
        let hdr = ChunkHdr { msg_id, index, count };
        let mut u = match stored {
            Some(st) => hdr.encode_first(st).to_vec(),
            None => hdr.encode().to_vec(),
        };
        u.extend_from_slice(data);
        u
    }

    /// The units of a message of `len` bytes started in a new unit.
    fn cut_units(msg_id: u16, msg: &[u8]) -> Vec<Vec<u8>> {
        let c = Cut::new(msg.len(), MAX_UNIT - FIRST_HDR);
        (0..c.count)
            .map(|i| {
                let (a, b) = c.range(i, msg.len());
                unit(msg_id, i as u8, c.count as u8, (i == 0).then_some(c.stored as u16), &msg[a..b])
            })
            .collect()
    }

    #[cfg_attr(feature = "appliance", ignore = "host-profile message sizes")]
    #[test]
    fn chunk_counts_and_cuts() {
        assert_eq!(chunks_for(0), Some(1));
        assert_eq!(chunks_for(MAX_PAYLOAD), Some(1));
        assert_eq!(chunks_for(CONT_DATA), Some(1));
        assert_eq!(chunks_for(CONT_DATA + 1), Some(2));
        assert_eq!(chunks_for(1400), Some(2));
        assert!(chunks_for(MAX_MESSAGE).is_some_and(|n| n < MAX_CHUNKS));
        assert_eq!(Cut::new(MAX_MESSAGE, MIN_FIRST).count, MAX_CHUNKS);
        assert_eq!(chunks_for(MAX_MESSAGE + 1), None);
        for len in [CONT_DATA + 1, 1400, 2 * CONT_DATA, 2 * CONT_DATA + 1, 3000, MAX_MESSAGE] {
            for room in [MIN_FIRST, 100, 500, MAX_UNIT - FIRST_HDR] {
                let c = Cut::new(len, room);
                assert!(c.count <= MAX_CHUNKS, "{len} in {room}: {c:?}");
                let mut at = 0;
                for i in 0..c.count {
                    let (a, b) = c.range(i, len);
                    assert_eq!(a, at, "chunks are contiguous");
                    assert!(b > a && b - a <= CONT_DATA, "{len} in {room}: chunk {i} is {a}..{b}");
                    at = b;
                }
                assert_eq!(at, len);
                assert_eq!(c.range(c.count - 1, len).0, c.stored);
                assert_eq!(c.range(0, len).1, room.min(len - 1));
            }
        }
    }

    #[test]
    fn records_are_checked() {
        let full = [7u8; 1000];
        let u = unit(5, 0, 2, Some(1000), &full);
        let r = record(&u, 0).unwrap();
        assert_eq!(
            (r.hdr, r.stored, r.data.len(), r.next),
            (ChunkHdr { msg_id: 5, index: 0, count: 2 }, 1000, 1000, None)
        );
        // A first chunk larger than what it declares, or declaring too much.
        assert_eq!(record(&unit(5, 0, 2, Some(999), &full), 0), Err(FragDiscard::Malformed));
        assert_eq!(record(&unit(5, 0, 2, Some(MAX_MESSAGE as u16 + 1), &full), 0), Err(FragDiscard::Malformed));
        // Chunks of larger messages are not empty; a single may be.
        assert_eq!(record(&unit(5, 1, 2, None, &[]), 0), Err(FragDiscard::Malformed));
        assert_eq!(record(&unit(5, 0, 2, Some(0), &[]), 0), Err(FragDiscard::Malformed));
        assert!(record(&unit(5, 0, 1, None, &[]), 0).is_ok());
        for (i, c) in [(0, 0), (2, 2), (0, MAX_CHUNKS as u8 + 1)] {
            assert_eq!(record(&unit(1, i, c, None, b"x"), 0), Err(FragDiscard::Malformed));
        }
        assert_eq!(record(&[1, 2, 3], 0), Err(FragDiscard::Malformed));
        assert_eq!(record(&[1, 0, 0, 2, 9], 0), Err(FragDiscard::Malformed), "first chunk without stored");
    }

    #[test]
    fn packed_records_are_framed_and_checked() {
        // "ab" packed, then "cde" as the last record.
        let unit = [1, 0, 0, 1 | PACKED, 2, 0, b'a', b'b', 2, 0, 0, 1, b'c', b'd', b'e'];
        let r = record(&unit, 0).unwrap();
        assert_eq!((r.hdr, r.data, r.next), (ChunkHdr { msg_id: 1, index: 0, count: 1 }, &b"ab"[..], Some(8)));
        let r = record(&unit, 8).unwrap();
        assert_eq!((r.hdr.msg_id, r.data, r.next), (2, &b"cde"[..], None));
        // A packed length past the end of the unit.
        let mut bad = unit;
        bad[4] = 200;
        assert_eq!(record(&bad, 0), Err(FragDiscard::Malformed));
        // Only singles and last chunks are packed.
        let mut bad = unit;
        bad[3] = 2 | PACKED;
        assert_eq!(record(&bad, 0), Err(FragDiscard::Malformed));
        let mut last = unit;
        last[2] = 1;
        last[3] = 2 | PACKED;
        assert_eq!(record(&last, 0).unwrap().data, b"ab", "a packed last chunk");
        // After the first record: a single or a first chunk, never a
        // continuation.
        let mut bad = unit;
        bad[10] = 1;
        bad[11] = 2;
        assert_eq!(record(&bad, 8), Err(FragDiscard::Malformed));
        let mut first = unit;
        first[11] = 2; // first chunk of 2 storing 1 byte, data "e"
        first[12..14].copy_from_slice(&1u16.to_le_bytes());
        let r = record(&first, 8).unwrap();
        assert_eq!((r.stored, r.data), (1, &b"e"[..]));
        // A packed header cut short; offsets outside the unit.
        assert_eq!(record(&unit[..5], 0), Err(FragDiscard::Malformed));
        assert_eq!(record(&unit, unit.len()), Err(FragDiscard::Malformed));
        assert_eq!(record(&unit, 99), Err(FragDiscard::Malformed));
        // A packed record that ends the unit is the last one.
        assert_eq!(record(&unit[..8], 0).unwrap().next, None);
    }

    fn feed(r: &mut Reassembly, idx: usize, u: &[u8], out: &mut [u8]) -> Result<Option<usize>, FragDiscard> {
        let rec = record(u, 0)?;
        let plan = r.tracker.classify(idx, &rec);
        let res = match plan.step {
            Step::Single => {
                out[..rec.data.len()].copy_from_slice(rec.data);
                Ok(Some(rec.data.len()))
            }
            Step::Complete => Ok(Some(r.assemble(idx, rec.data, out).unwrap())),
            Step::Discard(d) => Err(d),
            Step::Start | Step::Store => Ok(None),
        };
        r.apply(idx, &rec, plan);
        res
    }

    #[cfg(not(feature = "appliance"))] // host-profile page counts
    #[test]
    fn interleaved_reassembly_and_page_accounting() {
        let mut r = Reassembly::new();
        let mut out = [0u8; MAX_MESSAGE];
        let a: Vec<u8> = (0..MAX_MESSAGE).map(|i| i as u8).collect();
        let b: Vec<u8> = (0..2000).map(|i| (i * 7) as u8).collect();
        let ca = cut_units(1, &a);
        let cb = cut_units(9, &b);
        assert_eq!(Some(ca.len()), chunks_for(MAX_MESSAGE));
        assert!(ca.len() >= 4 && cb.len() == 2);
        assert_eq!(feed(&mut r, 0, &ca[0], &mut out), Ok(None));
        assert_eq!(feed(&mut r, 2, &cb[0], &mut out), Ok(None));
        assert_eq!(r.tracker.free_pages(), REASSEMBLY_PAGES - 4 - 2);
        assert_eq!(feed(&mut r, 0, &ca[1], &mut out), Ok(None));
        assert_eq!(feed(&mut r, 2, &cb[1], &mut out), Ok(Some(2000)));
        assert_eq!(&out[..2000], &b[..]);
        // A chunk out of order is an orphan and abandons the open message.
        assert_eq!(feed(&mut r, 0, &ca[3], &mut out), Err(FragDiscard::Orphan));
        assert_eq!(r.tracker.free_pages(), REASSEMBLY_PAGES);
        for (i, c) in ca.iter().enumerate() {
            let got = feed(&mut r, 0, c, &mut out);
            assert_eq!(got, Ok((i + 1 == ca.len()).then_some(MAX_MESSAGE)));
        }
        assert_eq!(&out[..], &a[..]);
        assert_eq!(r.tracker.free_pages(), REASSEMBLY_PAGES);
        // A middle chunk longer than the declared length is malformed and
        // abandons the message.
        let mut long = cut_units(3, &b);
        long[0] = unit(3, 0, 3, Some(1500), &b[..1000]);
        long[1] = unit(3, 1, 3, None, &b[1000..1600]);
        assert_eq!(feed(&mut r, 1, &long[0], &mut out), Ok(None));
        assert_eq!(feed(&mut r, 1, &long[1], &mut out), Err(FragDiscard::Malformed));
        assert_eq!(r.tracker.free_pages(), REASSEMBLY_PAGES);
        assert_eq!(r.tracker.open_count(), 0);
    }

    #[cfg_attr(feature = "appliance", ignore = "host-profile message sizes")]
    #[test]
    fn a_message_longer_than_max_message_is_dropped_not_wedged() {
        // A key holder declares MAX_MESSAGE stored bytes, fills them, and
        // adds a last chunk: the whole message would not fit any receive
        // buffer of MAX_MESSAGE bytes (before, `poll_event` then returned
        // `None` for ever without consuming the unit). Every member drops it
        // (the verdict depends on the bytes only), frees its pages, goes on.
        let mut r = Reassembly::new();
        let mut out = [0u8; MAX_MESSAGE];
        let big: Vec<u8> = (0..MAX_MESSAGE + 100).map(|i| i as u8).collect();
        let mut pieces = std::vec![(0, MAX_UNIT - FIRST_HDR)];
        while pieces.last().unwrap().1 < MAX_MESSAGE {
            let at = pieces.last().unwrap().1;
            pieces.push((at, (at + CONT_DATA).min(MAX_MESSAGE)));
        }
        pieces.push((MAX_MESSAGE, MAX_MESSAGE + 100));
        let count = pieces.len() as u8;
        assert!(usize::from(count) <= MAX_CHUNKS);
        for (i, (a, b)) in pieces.iter().enumerate() {
            let u = unit(4, i as u8, count, (i == 0).then_some(MAX_MESSAGE as u16), &big[*a..*b]);
            let want = if i + 1 == pieces.len() { Err(FragDiscard::Oversize) } else { Ok(None) };
            assert_eq!(feed(&mut r, 0, &u, &mut out), want, "chunk {i}");
        }
        assert_eq!(r.tracker.free_pages(), REASSEMBLY_PAGES);
        assert_eq!(r.tracker.open_count(), 0);
        // The same sender's next message is delivered.
        let ok = cut_units(5, &big[..2000]);
        for (i, u) in ok.iter().enumerate() {
            assert_eq!(feed(&mut r, 0, u, &mut out), Ok((i + 1 == ok.len()).then_some(2000)));
        }
    }

    /// The units of a message of `len` bytes (content irrelevant) whose
    /// first chunk has `room` bytes, and the stored length.
    fn units_of(id: u16, len: usize, room: usize) -> (Vec<Vec<u8>>, usize) {
        let c = Cut::new(len, room);
        let msg = std::vec![0u8; len];
        let units = (0..c.count)
            .map(|i| {
                let (a, b) = c.range(i, len);
                unit(id, i as u8, c.count as u8, (i == 0).then_some(c.stored as u16), &msg[a..b])
            })
            .collect();
        (units, c.stored)
    }

    #[cfg(not(feature = "appliance"))] // host-profile page counts
    #[test]
    fn sequencer_defers_and_reserves() {
        let mut t = Tracker::new();
        let (big, stored) = units_of(1, MAX_MESSAGE, MAX_UNIT - FIRST_HDR);
        assert_eq!(pages_for(stored as u16), 4);
        // Two senders take the eight pages.
        for idx in 0..2 {
            assert_eq!(t.admit(idx, &big[0]), Admit::Yes);
            t.commit(idx, &big[0]);
        }
        assert_eq!(t.free_pages(), REASSEMBLY_PAGES - 8);
        assert_eq!(t.admit(3, &big[0]), Admit::Defer { first: true });
        assert_eq!(t.admit(3, &big[0]), Admit::Defer { first: false });
        // Singles always pass.
        assert_eq!(t.admit(4, &unit(2, 0, 1, None, b"hi")), Admit::Yes);
        // Sender 0 completes: four pages free, reserved for the waiter.
        for u in &big[1..] {
            assert_eq!(t.admit(0, u), Admit::Yes);
            t.commit(0, u);
        }
        assert_eq!(t.free_pages(), 4);
        let (two, _) = units_of(7, 2000, MAX_UNIT - FIRST_HDR);
        assert_eq!(t.admit(5, &two[0]), Admit::Defer { first: true }, "reserved for the waiter");
        assert_eq!(t.admit(5, &two[0]), Admit::Defer { first: false });
        assert_eq!(t.admit(3, &big[0]), Admit::Yes);
        assert_eq!(t.waiter, None);
        assert_eq!(t.reset(), 1);
    }

    /// A start clears only its own sender's "deferred" mark: another
    /// sender still waiting is not counted again, and the started sender's
    /// next wait is counted afresh (issue 17: clearing every other mark,
    /// or none, survived; both only miscount `frag_deferred`).
    #[cfg_attr(feature = "appliance", ignore = "host-profile message sizes")]
    #[test]
    fn a_start_clears_only_its_own_senders_deferred_mark() {
        let mut t = Tracker::new();
        let (big, _) = units_of(1, MAX_MESSAGE, MAX_UNIT - FIRST_HDR);
        t.commit(0, &big[0]);
        t.commit(1, &big[0]);
        assert_eq!(t.free_pages(), 0);
        let (two, _) = units_of(7, 2000, MAX_UNIT - FIRST_HDR);
        assert_eq!(t.admit(3, &two[0]), Admit::Defer { first: true });
        assert_eq!(t.admit(5, &two[0]), Admit::Defer { first: true });
        // Sender 0 completes: four pages free, sender 3 (the waiter) starts.
        for u in &big[1..] {
            t.commit(0, u);
        }
        assert_eq!(t.admit(3, &two[0]), Admit::Yes);
        t.commit(3, &two[0]);
        assert_eq!(t.waiter, None);
        // Sender 5 still waits: not a new wait.
        assert_eq!(t.admit(5, &big[0]), Admit::Defer { first: false });
        // Sender 3 restarts with a message its held pages do not cover
        // while sender 5 waits: a new wait.
        let (again, _) = units_of(9, MAX_MESSAGE, MAX_UNIT - FIRST_HDR);
        assert_eq!(t.admit(3, &again[0]), Admit::Defer { first: true });
    }

    #[cfg_attr(feature = "appliance", ignore = "host-profile message sizes")]
    #[test]
    fn a_restart_counts_the_pages_the_sender_already_holds() {
        // Senders 0 and 1 hold all eight pages with open messages.
        let mut t = Tracker::new();
        let (big, stored) = units_of(1, MAX_MESSAGE, MAX_UNIT - FIRST_HDR);
        let need_big = pages_for(stored as u16);
        assert_eq!(need_big, 4);
        t.commit(0, &big[0]);
        t.commit(1, &big[0]);
        assert_eq!(t.free_pages(), 0);
        // Sender 0 abandons its message for a new one as large: its own four
        // pages are enough (free + held), nobody else's are taken.
        let (again, _) = units_of(2, MAX_MESSAGE, MAX_UNIT - FIRST_HDR);
        let r = record(&again[0], 0).unwrap();
        assert_eq!(t.classify(0, &r), Plan { step: Step::Start, abort: true });
        assert_eq!(t.classify(2, &r), Plan { step: Step::Discard(FragDiscard::Overflow), abort: false });
        // Sequencer: sender 3 waits for two pages; sender 0 restarting with
        // a two-page message still leaves them (0 free + 4 held >= 2 + 2).
        let (two, stored2) = units_of(7, 2000, MAX_UNIT - FIRST_HDR);
        assert_eq!(pages_for(stored2 as u16), 2);
        assert_eq!(t.admit(3, &two[0]), Admit::Defer { first: true });
        assert_eq!(t.waiter, Some((3, 2)));
        let (mine, _) = units_of(8, 2000, MAX_UNIT - FIRST_HDR);
        assert_eq!(t.admit(0, &mine[0]), Admit::Yes, "its own pages leave the waiter's");
        assert_eq!(t.waiter, Some((3, 2)));
        t.commit(0, &mine[0]);
        assert_eq!(t.free_pages(), 2);
        assert_eq!(t.admit(3, &two[0]), Admit::Yes);
    }

    #[cfg(not(feature = "appliance"))] // host-profile page counts
    #[test]
    fn a_unit_is_admitted_with_the_pages_its_earlier_records_free() {
        let mut t = Tracker::new();
        // Senders 0 and 1 hold all eight pages.
        let (big, _) = units_of(1, MAX_MESSAGE, MAX_UNIT - FIRST_HDR);
        t.commit(0, &big[0]);
        for u in &big[..big.len() - 1] {
            t.commit(1, u);
        }
        assert_eq!(t.free_pages(), 0);
        // Sender 1's next unit ends its message and starts another: it only
        // fits because the first record frees four pages.
        let last = &big[big.len() - 1];
        let mut u = last[..CHUNK_HDR].to_vec();
        u[3] |= PACKED;
        u.extend_from_slice(&((last.len() - CHUNK_HDR) as u16).to_le_bytes());
        u.extend_from_slice(&last[CHUNK_HDR..]);
        u.extend_from_slice(&ChunkHdr { msg_id: 2, index: 0, count: 2 }.encode_first(1500));
        u.extend_from_slice(&[1u8; 900]);
        assert!(u.len() <= MAX_UNIT);
        assert_eq!(t.admit(1, &u), Admit::Yes);
        assert!(t.commit(1, &u), "pages were freed");
        assert_eq!(t.free_pages(), REASSEMBLY_PAGES - 4 - 2);
        // The same unit from sender 0 would not fit (nothing freed first).
        let mut t2 = Tracker::new();
        t2.commit(0, &big[0]);
        t2.commit(1, &big[0]);
        assert_eq!(t2.admit(2, &u[last.len() + 2..]), Admit::Defer { first: true });
    }

    /// `commit` says true only when the unit freed pages: a first or middle
    /// chunk (pages taken, none freed) and a single (no pages) say false,
    /// the last chunk of a message says true (issue 17: `free & !before` ->
    /// `free ^ !before` survived; it says true for every unit, which only
    /// wakes the deferred senders more often than needed).
    #[test]
    fn commit_says_whether_pages_were_freed() {
        let mut t = Tracker::new();
        let (big, _) = units_of(1, MAX_MESSAGE, MAX_UNIT - FIRST_HDR);
        assert!(!t.commit(0, &big[0]), "a first chunk takes pages");
        for u in &big[1..big.len() - 1] {
            assert!(!t.commit(0, u), "a middle chunk");
        }
        assert!(!t.commit(2, &unit(2, 0, 1, None, b"hi")), "a single");
        assert!(t.commit(0, &big[big.len() - 1]), "the last chunk frees the message's pages");
        assert_eq!(t.free_pages(), REASSEMBLY_PAGES);
        assert!(!t.commit(2, &unit(2, 0, 1, None, b"hi")));
    }
}
