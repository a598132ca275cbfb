//! Fragmentation: messages of up to [`MAX_MESSAGE`] bytes over
//! [`MAX_PAYLOAD`]-byte sequenced units.
//!
//! # Units
//!
//! Every sequenced unit (the payload of a `DATA`/`SEQ` frame) starts with a
//! 4-byte chunk header, also for messages that fit in one unit:
//!
//! ```text
//! +-------------+-------+-------+--------------------------------+
//! | msg id u16  | index | count | chunk data (<= MAX_PAYLOAD)    |
//! +-------------+-------+-------+--------------------------------+
//! ```
//!
//! `msg id` counts the sender's messages (wrapping), `count` is the number
//! of chunks of the message (`1..=MAX_CHUNKS`), `index` this chunk's
//! position. Every chunk but the last carries exactly [`MAX_PAYLOAD`] bytes,
//! so a message's length is implied. [`super::Vs::broadcast_message`] queues
//! all chunks of a message in the send window at once or refuses the whole
//! message (`WindowFull`): a message is never partly queued.
//!
//! # Packed units
//!
//! A unit may carry several whole small messages (records), so a window
//! slot holds up to ~14 messages of 64 bytes rather than one: a record
//! followed by another one has the [`PACKED`] bit set in its count byte and
//! a 2-byte little-endian data length after its header; the last record of
//! the unit has neither (its data is the rest of the unit):
//!
//! ```text
//! +----+---+---------+-----+------+----+---+---------+------+
//! | id | 0 | 1|PACKED| len | data | id | 0 | 1       | data |  ...
//! +----+---+---------+-----+------+----+---+---------+------+
//! ```
//!
//! Only single-unit messages are packed (every record of a packed unit has
//! `count == 1`), so reassembly never sees a packed chunk of a larger
//! message. The sender packs a message into its last queued unit only while
//! that unit was neither sent to the sequencer nor sequenced (see
//! `SendWindow::append`): a unit's bytes never change once anyone else may
//! hold them, and nothing waits for packing (a unit is sent as soon as the
//! transmit path gets to it). Receivers deliver the records of a unit one by
//! one, in order, at the unit's place in the agreed order.
//!
//! # Reassembly
//!
//! Chunks are delivered in agreed order. Per-sender FIFO and the atomic
//! queueing mean a sender's chunks follow each other in its own stream;
//! other senders' chunks may be interleaved. A message is delivered at the
//! position of its **last** chunk, so all members deliver reassembled
//! messages in one total order. Chunks but the last are copied into
//! reassembly pages (one page per chunk, [`REASSEMBLY_PAGES`] in all, shared
//! by all senders); the last chunk is copied straight from the order buffer.
//!
//! The reassembly state is a deterministic function of the agreed stream
//! since the view was installed ([`Tracker`]), so every member makes the
//! same decisions. The sequencer runs a second copy of the same [`Tracker`]
//! over the stream *as it assigns it* and only assigns the first chunk of a
//! message when its pages are free at that point of the stream: receivers
//! therefore never run out of pages. A message that does not fit yet is
//! deferred, not dropped: the sequencer does not take its first chunk and
//! asks the sender to send it again (a `RESEND` frame) once pages are freed
//! (counted in `VsStats::frag_deferred`); the first deferred sender is
//! served before any later one (a reservation), so no sender starves.
//!
//! # View changes
//!
//! Reassembly is per view. When a view is installed, every incomplete
//! message of the old view is dropped (counted in
//! `VsStats::frag_dropped_view_change`). Members moving together delivered
//! the same chunks of the old view (virtual synchrony), so they drop exactly
//! the same messages. The sender keeps every chunk of a message in its send
//! window until it delivered the message's last chunk itself, so a message
//! cut by a view change is sent again, whole, in the next view (like any
//! message not delivered in the view it was sent in). A surviving sender's
//! message is thus never lost; it is delivered in the new view.
//!
//! Chunks that do not fit the state (a chunk of no open message, a bad
//! header, no pages free: only a faulty peer produces them) are discarded
//! identically everywhere and counted in `VsStats::frag_discarded` with a
//! [`FragDiscard`] reason in the log.

use super::MAX_PAYLOAD;
use crate::gcs::MAX_NODES;

/// Chunks per message at most.
pub const MAX_CHUNKS: usize = 4;
/// Largest message [`super::Vs::broadcast_message`] takes.
pub const MAX_MESSAGE: usize = MAX_CHUNKS * MAX_PAYLOAD;
/// Reassembly pages (of [`MAX_PAYLOAD`] bytes) shared by all senders: three
/// maximum-size messages (three pages each) in reassembly at once, or nine
/// two-chunk ones.
pub const REASSEMBLY_PAGES: usize = 9;
/// Length of the chunk header.
pub(super) const CHUNK_HDR: usize = 4;
/// Count-byte flag: another record follows this one in the unit (and a
/// 2-byte data length follows this header).
pub(super) const PACKED: u8 = 0x80;
/// Length of a packed record's header (chunk header + data length).
pub(super) const PACKED_HDR: usize = CHUNK_HDR + 2;
/// Largest sequenced unit (chunk header + chunk data).
pub(super) const MAX_UNIT: usize = CHUNK_HDR + MAX_PAYLOAD;

const _: () = assert!(MAX_MESSAGE == crate::wire::MAX_MESSAGE, "a core message must fit one VS message");
const _: () = assert!(MAX_CHUNKS >= 1 && MAX_CHUNKS < PACKED as usize, "the count byte keeps a flag bit");
const _: () = assert!(REASSEMBLY_PAGES >= MAX_CHUNKS - 1, "a maximum-size message must fit");
const _: () = assert!(REASSEMBLY_PAGES <= 16, "free pages are a u16 bitmask");

/// Number of chunks (units) a message of `len` bytes needs, if it is not
/// too large.
pub const fn chunks_for(len: usize) -> Option<usize> {
    if len > MAX_MESSAGE {
        None
    } else if len == 0 {
        Some(1)
    } else {
        Some(len.div_ceil(MAX_PAYLOAD))
    }
}

/// Why a chunk was discarded at reassembly (never with correct peers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FragDiscard {
    /// Bad chunk header or chunk length.
    Malformed,
    /// A continuation chunk of no open message (or of another one).
    Orphan,
    /// No reassembly pages left (the sequencer admits nothing that does not
    /// fit, so only a faulty sequencer causes this).
    Overflow,
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

    /// The first record of a unit: its header and chunk data, checked
    /// against each other (see [`record`]).
    pub fn parse(unit: &[u8]) -> Result<(ChunkHdr, &[u8]), FragDiscard> {
        record(unit, 0).map(|r| (r.hdr, r.data))
    }

    pub fn is_last(&self) -> bool {
        usize::from(self.index) + 1 >= usize::from(self.count)
    }
}

/// One record of a unit (see "Packed units" above).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Record<'a> {
    pub hdr: ChunkHdr,
    pub data: &'a [u8],
    /// Offset of the next record in the unit, if one follows.
    pub next: Option<usize>,
}

/// The record at byte offset `off` of `unit`, checking the header and the
/// chunk length against it. A record after the first of a unit must be a
/// whole message (`count == 1`); a packed record's length must lie inside
/// the unit. Any error ends the unit (what follows cannot be framed).
pub(super) fn record(unit: &[u8], off: usize) -> Result<Record<'_>, FragDiscard> {
    let rest = unit.get(off..).ok_or(FragDiscard::Malformed)?;
    let (h, after) = rest.split_at_checked(CHUNK_HDR).ok_or(FragDiscard::Malformed)?;
    let packed = h[3] & PACKED != 0;
    let hdr = ChunkHdr { msg_id: u16::from_le_bytes([h[0], h[1]]), index: h[2], count: h[3] & !PACKED };
    let count = usize::from(hdr.count);
    let index = usize::from(hdr.index);
    if count == 0 || count > MAX_CHUNKS || index >= count || ((packed || off > 0) && count != 1) {
        return Err(FragDiscard::Malformed);
    }
    let (data, next) = if packed {
        let (l, body) = after.split_at_checked(2).ok_or(FragDiscard::Malformed)?;
        let len = usize::from(u16::from_le_bytes([l[0], l[1]]));
        let data = body.get(..len).ok_or(FragDiscard::Malformed)?;
        let end = off + PACKED_HDR + len;
        (data, (end < unit.len()).then_some(end))
    } else {
        (after, None)
    };
    if data.len() > MAX_PAYLOAD {
        return Err(FragDiscard::Malformed);
    }
    let last = index + 1 == count;
    if (!last && data.len() != MAX_PAYLOAD) || (last && count > 1 && data.is_empty()) {
        return Err(FragDiscard::Malformed);
    }
    Ok(Record { hdr, data, next })
}

/// A message in reassembly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Open {
    msg_id: u16,
    count: u8,
    /// Next chunk index expected.
    next: u8,
    /// Page of chunk `i` (for `i < count - 1`).
    pages: [u8; MAX_CHUNKS - 1],
}

/// What one chunk does to the reassembly state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// A whole message in one unit: deliver it.
    Single,
    /// First chunk of a message: store it (pages are allocated by `apply`).
    Start,
    /// A middle chunk: store it in this page.
    Store(u8),
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

    /// What `hdr` from the sender at view index `idx` would do (no change).
    pub fn classify(&self, idx: usize, hdr: &ChunkHdr) -> Plan {
        let open = self.open_of(idx);
        if idx >= MAX_NODES {
            return Plan { step: Step::Discard(FragDiscard::Orphan), abort: false };
        }
        if hdr.count == 1 {
            return Plan { step: Step::Single, abort: open.is_some() };
        }
        if hdr.index == 0 {
            let reclaimed = open.map_or(0, |o| usize::from(o.count) - 1);
            let need = usize::from(hdr.count) - 1;
            let step =
                if self.free_pages() + reclaimed >= need { Step::Start } else { Step::Discard(FragDiscard::Overflow) };
            return Plan { step, abort: open.is_some() };
        }
        match open {
            Some(o) if o.msg_id == hdr.msg_id && o.count == hdr.count && o.next == hdr.index => {
                let step = if hdr.index + 1 == hdr.count {
                    Step::Complete
                } else {
                    Step::Store(o.pages.get(usize::from(hdr.index)).copied().unwrap_or(0))
                };
                Plan { step, abort: false }
            }
            _ => Plan { step: Step::Discard(FragDiscard::Orphan), abort: open.is_some() },
        }
    }

    /// Apply a plan made by [`Tracker::classify`] for the same chunk.
    /// Returns the page chunk data goes to (`Start`, `Store`).
    pub fn apply(&mut self, idx: usize, hdr: &ChunkHdr, plan: Plan) -> Option<u8> {
        if plan.abort {
            self.close(idx);
        }
        match plan.step {
            Step::Start => {
                let mut o = Open { msg_id: hdr.msg_id, count: hdr.count, next: 1, pages: [0; MAX_CHUNKS - 1] };
                for i in 0..usize::from(hdr.count) - 1 {
                    let p = self.free.trailing_zeros() as u8; // classify checked enough are free
                    self.free &= !(1u16 << p);
                    if let Some(slot) = o.pages.get_mut(i) {
                        *slot = p;
                    }
                }
                let first = o.pages[0];
                if let Some(s) = self.open.get_mut(idx) {
                    *s = Some(o);
                }
                Some(first)
            }
            Step::Store(page) => {
                if let Some(Some(o)) = self.open.get_mut(idx) {
                    o.next += 1;
                }
                Some(page)
            }
            Step::Complete => {
                self.close(idx);
                None
            }
            Step::Single | Step::Discard(_) => None,
        }
    }

    /// The open message of `idx`: (pages in chunk order, number of them).
    pub fn pages_of(&self, idx: usize) -> ([u8; MAX_CHUNKS - 1], usize) {
        match self.open_of(idx) {
            Some(o) => (o.pages, usize::from(o.count) - 1),
            None => ([0; MAX_CHUNKS - 1], 0),
        }
    }

    fn close(&mut self, idx: usize) {
        if let Some(slot) = self.open.get_mut(idx) {
            if let Some(o) = slot.take() {
                for &p in o.pages.iter().take(usize::from(o.count) - 1) {
                    self.free |= 1u16 << p;
                }
            }
        }
    }

    /// Sequencer: may the unit from view index `idx` be assigned now? Only
    /// the first chunk of a multi-chunk message can be deferred; anything
    /// else is admitted (bad units are discarded identically by everyone).
    pub fn admit(&mut self, idx: usize, unit: &[u8]) -> Admit {
        let Ok((hdr, _)) = ChunkHdr::parse(unit) else { return Admit::Yes };
        if hdr.count < 2 || hdr.index != 0 {
            return Admit::Yes;
        }
        let plan = self.classify(idx, &hdr);
        let need = usize::from(hdr.count) - 1;
        let reclaimed = self.open_of(idx).map_or(0, |o| usize::from(o.count) - 1);
        let avail = self.free_pages() + reclaimed;
        let fits = plan.step == Step::Start;
        let me = idx as u8; // idx < MAX_NODES <= 32
        let ok = match self.waiter {
            Some((w, _)) if w == me => fits,
            // Someone else waits: only take what leaves its pages.
            Some((_, wneed)) => fits && avail >= need + usize::from(wneed),
            None => fits,
        };
        let bit = 1u32 << (idx % 32);
        if ok {
            if self.waiter.is_some_and(|(w, _)| w == me) {
                self.waiter = None;
            }
            self.deferred &= !bit;
            return Admit::Yes;
        }
        if self.waiter.is_none() {
            self.waiter = Some((me, need as u8));
        }
        let first = self.deferred & bit == 0;
        self.deferred |= bit;
        Admit::Defer { first }
    }

    /// Sequencer: the unit was assigned; advance the shadow state. Returns
    /// true when pages were freed (a message completed or was abandoned).
    pub fn commit(&mut self, idx: usize, unit: &[u8]) -> bool {
        let Ok((hdr, _)) = ChunkHdr::parse(unit) else { return false };
        let plan = self.classify(idx, &hdr);
        let before = self.free;
        self.apply(idx, &hdr, plan);
        self.free & !before != 0
    }
}

/// Receiver side: the tracker plus the page contents.
pub(super) struct Reassembly {
    pub tracker: Tracker,
    pages: [[u8; MAX_PAYLOAD]; REASSEMBLY_PAGES],
}

impl Reassembly {
    pub const fn new() -> Self {
        Reassembly { tracker: Tracker::new(), pages: [[0; MAX_PAYLOAD]; REASSEMBLY_PAGES] }
    }

    pub fn store(&mut self, page: u8, data: &[u8]) {
        if let Some(dst) = self.pages.get_mut(usize::from(page)).and_then(|p| p.get_mut(..data.len())) {
            dst.copy_from_slice(data);
        }
    }

    /// Copy the open message of `idx` plus its `last` chunk into `out`;
    /// returns the message length, or None if `out` is too small (nothing
    /// changes then).
    pub fn assemble(&self, idx: usize, last: &[u8], out: &mut [u8]) -> Option<usize> {
        let (pages, n) = self.tracker.pages_of(idx);
        let len = n * MAX_PAYLOAD + last.len();
        let out = out.get_mut(..len)?;
        for (i, &p) in pages.iter().take(n).enumerate() {
            let src = self.pages.get(usize::from(p))?;
            out.get_mut(i * MAX_PAYLOAD..(i + 1) * MAX_PAYLOAD)?.copy_from_slice(src);
        }
        out.get_mut(n * MAX_PAYLOAD..)?.copy_from_slice(last);
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    fn unit(msg_id: u16, index: u8, count: u8, data: &[u8]) -> ([u8; MAX_UNIT], usize) {
        let mut u = [0u8; MAX_UNIT];
        u[..CHUNK_HDR].copy_from_slice(&ChunkHdr { msg_id, index, count }.encode());
        u[CHUNK_HDR..CHUNK_HDR + data.len()].copy_from_slice(data);
        (u, CHUNK_HDR + data.len())
    }

    #[test]
    fn chunk_counts() {
        assert_eq!(chunks_for(0), Some(1));
        assert_eq!(chunks_for(1), Some(1));
        assert_eq!(chunks_for(MAX_PAYLOAD), Some(1));
        assert_eq!(chunks_for(MAX_PAYLOAD + 1), Some(2));
        assert_eq!(chunks_for(1400), Some(2));
        assert_eq!(chunks_for(MAX_MESSAGE), Some(MAX_CHUNKS));
        assert_eq!(chunks_for(MAX_MESSAGE + 1), None);
    }

    #[test]
    fn headers_are_checked() {
        let full = [7u8; MAX_PAYLOAD];
        let (u, n) = unit(5, 0, 2, &full);
        assert_eq!(ChunkHdr::parse(&u[..n]).unwrap().0, ChunkHdr { msg_id: 5, index: 0, count: 2 });
        // Non-last chunks must be full.
        let (u, n) = unit(5, 0, 2, &full[..10]);
        assert_eq!(ChunkHdr::parse(&u[..n]), Err(FragDiscard::Malformed));
        // Last chunk of a multi-chunk message not empty; a single may be.
        let (u, n) = unit(5, 1, 2, &[]);
        assert_eq!(ChunkHdr::parse(&u[..n]), Err(FragDiscard::Malformed));
        let (u, n) = unit(5, 0, 1, &[]);
        assert!(ChunkHdr::parse(&u[..n]).is_ok());
        for (i, c) in [(0, 0), (2, 2), (0, MAX_CHUNKS as u8 + 1)] {
            let (u, n) = unit(1, i, c, b"x");
            assert_eq!(ChunkHdr::parse(&u[..n]), Err(FragDiscard::Malformed));
        }
        assert_eq!(ChunkHdr::parse(&[1, 2, 3]), Err(FragDiscard::Malformed));
    }

    #[test]
    fn packed_records_are_framed_and_checked() {
        // "ab" packed, then "cde" as the last record.
        let unit = [1, 0, 0, 1 | PACKED, 2, 0, b'a', b'b', 2, 0, 0, 1, b'c', b'd', b'e'];
        let r = record(&unit, 0).unwrap();
        assert_eq!((r.hdr, r.data, r.next), (ChunkHdr { msg_id: 1, index: 0, count: 1 }, &b"ab"[..], Some(8)));
        let r = record(&unit, 8).unwrap();
        assert_eq!((r.hdr.msg_id, r.data, r.next), (2, &b"cde"[..], None));
        assert_eq!(ChunkHdr::parse(&unit).unwrap().1, b"ab");
        // A packed length past the end of the unit.
        let mut bad = unit;
        bad[4] = 200;
        assert_eq!(record(&bad, 0), Err(FragDiscard::Malformed));
        // Only whole messages are packed: a packed chunk of a larger message,
        // or a chunk of one after a packed record, is malformed.
        let mut bad = unit;
        bad[3] = 2 | PACKED;
        assert_eq!(record(&bad, 0), Err(FragDiscard::Malformed));
        let mut bad = unit;
        bad[11] = 2;
        assert_eq!(record(&bad, 8), Err(FragDiscard::Malformed));
        // A packed header cut short.
        assert_eq!(record(&unit[..5], 0), Err(FragDiscard::Malformed));
        assert_eq!(record(&unit, unit.len()), Err(FragDiscard::Malformed));
        assert_eq!(record(&unit, 99), Err(FragDiscard::Malformed));
        // A packed record that ends the unit is the last one.
        let r = record(&unit[..8], 0).unwrap();
        assert_eq!(r.next, None);
    }

    fn feed(r: &mut Reassembly, idx: usize, u: &[u8], out: &mut [u8]) -> Result<Option<usize>, FragDiscard> {
        let (hdr, data) = ChunkHdr::parse(u)?;
        let plan = r.tracker.classify(idx, &hdr);
        let res = match plan.step {
            Step::Single => {
                out[..data.len()].copy_from_slice(data);
                Ok(Some(data.len()))
            }
            Step::Complete => Ok(Some(r.assemble(idx, data, out).unwrap())),
            Step::Discard(d) => Err(d),
            Step::Start | Step::Store(_) => Ok(None),
        };
        if let Some(p) = r.tracker.apply(idx, &hdr, plan) {
            r.store(p, data);
        }
        res
    }

    #[test]
    fn interleaved_reassembly_and_page_accounting() {
        let mut r = Reassembly::new();
        let mut out = [0u8; MAX_MESSAGE];
        let a: std::vec::Vec<u8> = (0..MAX_MESSAGE).map(|i| i as u8).collect();
        let b: std::vec::Vec<u8> = (0..2000).map(|i| (i * 7) as u8).collect();
        let ca: std::vec::Vec<_> = a.chunks(MAX_PAYLOAD).enumerate().map(|(i, c)| unit(1, i as u8, 4, c)).collect();
        let cb: std::vec::Vec<_> = b.chunks(MAX_PAYLOAD).enumerate().map(|(i, c)| unit(9, i as u8, 2, c)).collect();
        assert_eq!(feed(&mut r, 0, &ca[0].0[..ca[0].1], &mut out), Ok(None));
        assert_eq!(feed(&mut r, 2, &cb[0].0[..cb[0].1], &mut out), Ok(None));
        assert_eq!(r.tracker.free_pages(), REASSEMBLY_PAGES - 4);
        assert_eq!(feed(&mut r, 0, &ca[1].0[..ca[1].1], &mut out), Ok(None));
        assert_eq!(feed(&mut r, 2, &cb[1].0[..cb[1].1], &mut out), Ok(Some(2000)));
        assert_eq!(&out[..2000], &b[..]);
        // A chunk out of order is an orphan and abandons the open message.
        assert_eq!(feed(&mut r, 0, &ca[3].0[..ca[3].1], &mut out), Err(FragDiscard::Orphan));
        assert_eq!(r.tracker.free_pages(), REASSEMBLY_PAGES);
        for c in &ca {
            let got = feed(&mut r, 0, &c.0[..c.1], &mut out);
            if c.0[2] == 3 {
                assert_eq!(got, Ok(Some(MAX_MESSAGE)));
            }
        }
        assert_eq!(&out[..], &a[..]);
        assert_eq!(r.tracker.free_pages(), REASSEMBLY_PAGES);
    }

    #[test]
    fn sequencer_defers_and_reserves() {
        let mut t = Tracker::new();
        let big = |id| unit(id, 0, 4, &[0u8; MAX_PAYLOAD]);
        // Three senders fill the nine pages.
        for idx in 0..3 {
            let (u, n) = big(1);
            assert_eq!(t.admit(idx, &u[..n]), Admit::Yes);
            t.commit(idx, &u[..n]);
        }
        let (u, n) = big(1);
        assert_eq!(t.admit(3, &u[..n]), Admit::Defer { first: true });
        assert_eq!(t.admit(3, &u[..n]), Admit::Defer { first: false });
        // Singles always pass.
        let (s, sn) = unit(2, 0, 1, b"hi");
        assert_eq!(t.admit(4, &s[..sn]), Admit::Yes);
        // Sender 0 completes: three pages free, reserved for the waiter.
        for i in 1..4u8 {
            let (u, n) = unit(1, i, 4, &[0u8; MAX_PAYLOAD]);
            assert_eq!(t.admit(0, &u[..n]), Admit::Yes);
            t.commit(0, &u[..n]);
        }
        let (u2, n2) = unit(7, 0, 2, &[0u8; MAX_PAYLOAD]);
        assert_eq!(t.admit(5, &u2[..n2]), Admit::Defer { first: true }, "reserved for the waiter");
        assert_eq!(t.admit(5, &u2[..n2]), Admit::Defer { first: false });
        assert_eq!(t.admit(3, &u[..n]), Admit::Yes);
        assert_eq!(t.waiter, None);
        assert_eq!(t.reset(), 2);
    }
}
