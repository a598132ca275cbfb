//! Corosync adapter for cohort: one CPG group plus the quorum service,
//! turned into the event vocabulary of [`cohort_core::gcs`].
//!
//! [`Corosync::connect`] opens a CPG connection, starts quorum tracking,
//! waits for the first quorum callback (which `trackstart(Changes)` fires at
//! once) and only then joins the group. The events come out of
//! [`Corosync::poll_event`] (or [`Corosync::dispatch`] + [`Corosync::next_event`])
//! as [`CorosyncEvent`]s and satisfy the transport contract of
//! [`cohort_core::gcs`]:
//!
//! * The first event is always a [`CorosyncEvent::Ring`] for the current
//!   ring (from the quorum callback), followed by a [`CorosyncEvent::Quorum`];
//!   so a `Ring` precedes the first `Confchg`.
//! * Later rings come from CPG's totem confchg callback, on the CPG stream,
//!   after the confchgs carrying the NODEDOWN/NODEUP entries of that change.
//!   Ring seqs only grow: a totem confchg whose seq is not larger than the
//!   last ring emitted (the initial ring reported twice) is dropped.
//! * CPG members are processes, keyed by (nodeid, pid); a node is a member
//!   while the one process standing for it (the first of that node to join,
//!   or our own) is joined. Any other process of that node in the group (a
//!   probe, a second daemon) changes nothing and its messages are dropped;
//!   when the node's process leaves or dies, the node leaves, whatever else
//!   of that node stays joined.
//! * `Confchg` and `Deliver` keep CPG's agreed order; `Quorum` events come
//!   from a separate stream with no ordering relative to them.
//!
//! The binding's callbacks are plain `fn` pointers invoked while it holds a
//! global lock: they only push raw records into a thread-local buffer, which
//! the dispatching call drains and translates right after the library
//! returns. Nothing is initialized, finalized or dropped inside a callback.
//! A `Corosync` may move between threads; it must not be dispatched from two
//! threads at once (all dispatching methods take `&mut self`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use cohort_core::gcs::{self, Confchg, MemberReason, NodeList, QuorumEvent, Reason, ReasonList, RingEvent};
use cohort_core::ids::NodeId;
use rust_corosync::{cpg, quorum, CsError, DispatchFlags, TrackFlags};
use tracing::{debug, info, trace, warn};

pub use rust_corosync::CsError as CorosyncError;

/// One event from corosync, in the order the callbacks arrived per stream.
///
/// `Confchg` and the `NodeList`s are inline, fixed-capacity (about 0.7 KB per
/// event); the shape follows the core's vocabulary rather than boxing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorosyncEvent {
    /// A (new) totem ring; on the ordered CPG stream.
    Ring(RingEvent),
    /// A membership change of the joined group; on the ordered CPG stream.
    Confchg(Confchg),
    /// Quorum state; on its own, unordered stream.
    Quorum(QuorumEvent),
    /// A message of the joined group, in agreed order.
    Deliver { from: NodeId, pid: u32, payload: Vec<u8> },
}

/// Errors of the corosync adapter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The library could not reach the corosync daemon at connect time.
    #[error("corosync is not running ({op}: {err})")]
    NotRunning { op: &'static str, err: CsError },
    /// The connection to corosync broke (corosync died or dropped us). The
    /// handle is unusable; reconnect once corosync is back.
    #[error("lost the connection to corosync ({op}: {err})")]
    Disconnected { op: &'static str, err: CsError },
    /// A corosync call failed for another reason.
    #[error("corosync call failed ({op}: {err})")]
    Call { op: &'static str, err: CsError },
    /// `mcast_joined` answered TRY_AGAIN (flow control) and the send backlog
    /// already holds [`Options::send_backlog_msgs`] messages or
    /// [`Options::send_backlog_bytes`] bytes: corosync has not taken a
    /// message for a long time. The message was not queued.
    #[error("corosync send backlog full ({queued} messages, {bytes} bytes waiting on TRY_AGAIN for {waited:?}); message not sent")]
    SendBacklogFull { queued: usize, bytes: usize, waited: Duration },
    /// A call kept answering TRY_AGAIN past the bound.
    #[error("{op} kept returning TRY_AGAIN for {waited:?}")]
    Busy { op: &'static str, waited: Duration },
    /// The quorum service did not report the current ring in time.
    #[error("no quorum callback within {0:?} after trackstart (cannot learn the initial ring)")]
    NoInitialRing(Duration),
    /// The group name cannot be used as a CPG name.
    #[error("invalid CPG group name {0:?} (1..=127 bytes, no NUL)")]
    InvalidGroup(String),
    /// Corosync reported more nodes than [`gcs::MAX_NODES`].
    #[error("{what} lists more than {max} nodes", max = gcs::MAX_NODES)]
    TooManyNodes { what: &'static str },
    /// Corosync reported node id 0.
    #[error("{what} contains the invalid node id 0")]
    InvalidNode { what: &'static str },
    /// poll(2) failed.
    #[error("poll on the corosync fds failed: {0}")]
    Poll(#[source] std::io::Error),
}

impl Error {
    /// True when the connection to corosync is gone and the handle must be
    /// dropped (corosync died or was restarted).
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Error::Disconnected { .. } | Error::NotRunning { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Tunables of [`Corosync::connect_with`].
#[derive(Clone, Debug)]
pub struct Options {
    /// How long `connect` waits for the first quorum callback.
    pub initial_ring_timeout: Duration,
    /// How long `join` and `leave` keep retrying on TRY_AGAIN (they block;
    /// `send` never does, it queues).
    pub retry_limit: Duration,
    /// First backoff between retries; doubles up to `max_backoff`. For
    /// `send`, the delay before the event loop retries the backlog
    /// ([`Corosync::next_retry`]).
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Most messages `send` queues while corosync answers TRY_AGAIN.
    pub send_backlog_msgs: usize,
    /// Most payload bytes `send` queues while corosync answers TRY_AGAIN.
    pub send_backlog_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            initial_ring_timeout: Duration::from_secs(10),
            retry_limit: Duration::from_secs(5),
            first_backoff: Duration::from_micros(500),
            max_backoff: Duration::from_millis(50),
            send_backlog_msgs: 1024,
            send_backlog_bytes: 4 << 20,
        }
    }
}

/// Raw callback records, pushed by the `fn` callbacks.
enum Raw {
    Deliver {
        group: String,
        nodeid: u32,
        pid: u32,
        payload: Vec<u8>,
    },
    Confchg {
        group: String,
        members: Vec<(u32, u32)>,
        left: Vec<(u32, u32, Option<Reason>)>,
        joined: Vec<(u32, u32, Option<Reason>)>,
    },
    Totem {
        seq: u64,
        rep: u32,
        members: Vec<u32>,
    },
    Quorum {
        quorate: bool,
        seq: u64,
        rep: u32,
        members: Vec<u32>,
    },
    Nodelist {
        seq: u64,
        members: Vec<u32>,
        joined: Vec<u32>,
        left: Vec<u32>,
    },
}

thread_local! {
    static RAW: RefCell<Vec<Raw>> = const { RefCell::new(Vec::new()) };
}

fn push_raw(r: Raw) {
    RAW.with(|q| q.borrow_mut().push(r));
}

fn take_raw() -> Vec<Raw> {
    RAW.with(|q| std::mem::take(&mut *q.borrow_mut()))
}

fn map_reason(r: &cpg::Reason) -> Option<Reason> {
    // cpg::Reason has no PartialEq/Debug: match on it.
    match r {
        cpg::Reason::Join => Some(Reason::Join),
        cpg::Reason::Leave => Some(Reason::Leave),
        cpg::Reason::NodeDown => Some(Reason::NodeDown),
        cpg::Reason::NodeUp => Some(Reason::NodeUp),
        cpg::Reason::ProcDown => Some(Reason::ProcDown),
        cpg::Reason::Undefined => None,
    }
}

fn cb_deliver(_h: &cpg::Handle, group: String, nodeid: rust_corosync::NodeId, pid: u32, msg: &[u8], msg_len: usize) {
    let n = msg_len.min(msg.len());
    push_raw(Raw::Deliver { group, nodeid: u32::from(nodeid), pid, payload: msg[..n].to_vec() });
}

fn cb_confchg(
    _h: &cpg::Handle,
    group: &str,
    members: Vec<cpg::Address>,
    left: Vec<cpg::Address>,
    joined: Vec<cpg::Address>,
) {
    let tri = |v: &[cpg::Address]| v.iter().map(|a| (u32::from(a.nodeid), a.pid, map_reason(&a.reason))).collect();
    push_raw(Raw::Confchg {
        group: group.to_owned(),
        members: members.iter().map(|a| (u32::from(a.nodeid), a.pid)).collect(),
        left: tri(&left),
        joined: tri(&joined),
    });
}

fn cb_totem(_h: &cpg::Handle, ring: cpg::RingId, members: Vec<rust_corosync::NodeId>) {
    push_raw(Raw::Totem {
        seq: ring.seq,
        rep: u32::from(ring.nodeid),
        members: members.into_iter().map(u32::from).collect(),
    });
}

fn cb_quorum(_h: &quorum::Handle, quorate: bool, ring: quorum::RingId, members: Vec<rust_corosync::NodeId>) {
    push_raw(Raw::Quorum {
        quorate,
        seq: ring.seq,
        rep: u32::from(ring.nodeid),
        members: members.into_iter().map(u32::from).collect(),
    });
}

fn cb_nodelist(
    _h: &quorum::Handle,
    ring: quorum::RingId,
    members: Vec<rust_corosync::NodeId>,
    joined: Vec<rust_corosync::NodeId>,
    left: Vec<rust_corosync::NodeId>,
) {
    let v = |l: Vec<rust_corosync::NodeId>| l.into_iter().map(u32::from).collect();
    push_raw(Raw::Nodelist { seq: ring.seq, members: v(members), joined: v(joined), left: v(left) });
}

fn node_list(what: &'static str, ids: impl IntoIterator<Item = u32>) -> Result<NodeList> {
    let mut l = NodeList::new();
    for id in ids {
        if id == 0 {
            return Err(Error::InvalidNode { what });
        }
        if !gcs::insert_sorted(&mut l, NodeId(id)) {
            return Err(Error::TooManyNodes { what });
        }
    }
    Ok(l)
}

/// The group's processes, keyed by (nodeid, pid), and which process stands
/// for each node (its *owner*).
///
/// CPG reports processes; the core's [`Confchg`] speaks of nodes. A node is a
/// member while its owner process is joined: the first process of that node
/// seen joining, in CPG's agreed confchg order (every member sees the same
/// order), or our own process for the local node. Any other process of the
/// same node in the group (a `cohort-cpg-probe --group` pointed at the
/// daemon's group, a second daemon) is an *extra*: its joins and leaves
/// produce no node change, its messages are dropped, and it is never
/// promoted. When the owner leaves, the node leaves, even if extras remain;
/// the next process of that node to join becomes the new owner.
///
/// Limitation: a process joining a group that already holds two processes of
/// one node has no history to tell which one came first; it takes the lowest
/// pid and warns.
#[derive(Debug, Default)]
struct CpgMembers {
    /// Our own pid (as corosync reports it: same pid namespace assumed; only
    /// a preference for the local node's owner).
    own_pid: u32,
    local: u32,
    /// nodeid -> owner pid.
    owners: std::collections::BTreeMap<u32, u32>,
    /// Every (nodeid, pid) currently in the group.
    procs: std::collections::BTreeSet<(u32, u32)>,
    /// Messages dropped because they came from an extra process.
    dropped_extra: u64,
}

impl CpgMembers {
    fn new(local: u32, own_pid: u32) -> CpgMembers {
        CpgMembers { own_pid, local, ..Default::default() }
    }

    /// Is `(nodeid, pid)` the process standing for its node?
    fn is_owner(&self, nodeid: u32, pid: u32) -> bool {
        self.owners.get(&nodeid) == Some(&pid)
    }

    /// Turn one CPG confchg (process level) into the node-level [`Confchg`];
    /// `None` when no node changed (only extras joined or left).
    fn apply(
        &mut self,
        members: &[(u32, u32)],
        left: &[(u32, u32, Option<Reason>)],
        joined: &[(u32, u32, Option<Reason>)],
    ) -> Result<Option<Confchg>> {
        for &(node, _) in members {
            if node == 0 {
                return Err(Error::InvalidNode { what: "confchg members" });
            }
        }
        for &(node, _, _) in left.iter().chain(joined) {
            if node == 0 {
                return Err(Error::InvalidNode { what: "confchg entries" });
            }
        }
        let mut out_left = ReasonList::new();
        let mut out_joined = ReasonList::new();
        // Owners that left (any reason) vacate their node.
        for &(node, pid, reason) in left {
            if !self.is_owner(node, pid) {
                if self.procs.contains(&(node, pid)) {
                    info!(node, pid, "an extra CPG process of this node left the group (no node change)");
                }
                continue;
            }
            self.owners.remove(&node);
            let Some(reason) = reason else {
                warn!(node, pid, "confchg left entry without a reason, taken as ProcDown");
                push_reason(&mut out_left, node, Reason::ProcDown, "confchg left")?;
                continue;
            };
            push_reason(&mut out_left, node, reason, "confchg left")?;
        }
        let first = self.procs.is_empty();
        self.procs = members.iter().copied().collect();
        // Owners CPG no longer lists without a left entry: gone as well.
        let stale: Vec<u32> =
            self.owners.iter().filter(|(n, p)| !self.procs.contains(&(**n, **p))).map(|(n, _)| *n).collect();
        for node in stale {
            warn!(node, "owner process vanished from the CPG member list without a left entry");
            self.owners.remove(&node);
            push_reason(&mut out_left, node, Reason::ProcDown, "confchg left")?;
        }
        // Nodes without an owner take a joining process of theirs.
        for &(node, pid, reason) in joined {
            if self.owners.contains_key(&node) || !self.procs.contains(&(node, pid)) {
                if self.owners.get(&node) != Some(&pid) {
                    warn!(
                        node,
                        pid, "another CPG process of an existing member node joined; ignored (not that node's daemon)"
                    );
                }
                continue;
            }
            let rival = joined.iter().filter(|j| j.0 == node && j.1 != pid).map(|j| j.1).min();
            let pid = match rival {
                // Several processes of one node joined in one change: ours, else the lowest pid.
                Some(r) if node == self.local && (pid == self.own_pid || r == self.own_pid) => self.own_pid,
                Some(r) => pid.min(r),
                None => pid,
            };
            self.owners.insert(node, pid);
            let reason = reason.unwrap_or_else(|| {
                warn!(node, pid, "confchg joined entry without a reason, taken as Join");
                Reason::Join
            });
            push_reason(&mut out_joined, node, reason, "confchg joined")?;
        }
        // Our first confchg: the group as it was before we joined. (Later,
        // an extra left without an owner is never promoted.)
        for &(node, pid) in members {
            if !first || self.owners.contains_key(&node) {
                continue;
            }
            let all: Vec<u32> = members.iter().filter(|m| m.0 == node).map(|m| m.1).collect();
            let pick = if node == self.local && all.contains(&self.own_pid) {
                self.own_pid
            } else {
                *all.iter().min().unwrap_or(&pid)
            };
            if all.len() > 1 && node != self.local {
                warn!(
                    node,
                    ?all,
                    pick,
                    "several CPG processes of one node already in the group; taking the lowest pid as its daemon"
                );
            }
            self.owners.insert(node, pick);
        }
        let members = node_list("confchg members", self.owners.keys().copied())?;
        if out_left.is_empty() && out_joined.is_empty() && !first {
            return Ok(None);
        }
        out_left.sort_by_key(|m| m.node);
        out_joined.sort_by_key(|m| m.node);
        Ok(Some(Confchg { members, joined: out_joined, left: out_left }))
    }
}

fn push_reason(l: &mut ReasonList, node: u32, reason: Reason, what: &'static str) -> Result<()> {
    let m = MemberReason { node: NodeId(node), reason };
    if !l.contains(&m) {
        l.push(m).map_err(|_| Error::TooManyNodes { what })?;
    }
    Ok(())
}

/// Messages `mcast_joined` refused with TRY_AGAIN, in send order, retried
/// from the event loop ([`Corosync::flush`]) with a backoff, never by
/// sleeping. Bounded by message count and bytes.
#[derive(Debug)]
struct SendQueue {
    backlog: VecDeque<Vec<u8>>,
    bytes: usize,
    max_msgs: usize,
    max_bytes: usize,
    first_backoff: Duration,
    max_backoff: Duration,
    backoff: Duration,
    /// When the oldest queued message was first refused.
    since: Option<Instant>,
    /// Earliest time of the next retry.
    retry_at: Option<Instant>,
}

impl SendQueue {
    fn new(opts: &Options) -> SendQueue {
        SendQueue {
            backlog: VecDeque::new(),
            bytes: 0,
            max_msgs: opts.send_backlog_msgs.max(1),
            max_bytes: opts.send_backlog_bytes,
            first_backoff: opts.first_backoff,
            max_backoff: opts.max_backoff,
            backoff: opts.first_backoff,
            since: None,
            retry_at: None,
        }
    }

    /// Send what is queued, in order, until `mcast` answers TRY_AGAIN.
    /// Returns how many went out.
    fn flush(&mut self, now: Instant, mut mcast: impl FnMut(&[u8]) -> rust_corosync::Result<()>) -> Result<usize> {
        let mut sent = 0;
        while let Some(m) = self.backlog.front() {
            match mcast(m) {
                Ok(()) => {
                    self.bytes -= m.len();
                    self.backlog.pop_front();
                    sent += 1;
                }
                Err(CsError::CsErrTryAgain) => {
                    self.retry_at = Some(now + self.backoff);
                    self.backoff = (self.backoff * 2).min(self.max_backoff);
                    if sent > 0 {
                        self.since = Some(now);
                    }
                    return Ok(sent);
                }
                Err(e) => return Err(classify("cpg mcast_joined", e)),
            }
        }
        if sent > 0 {
            trace!(sent, "send backlog drained");
        }
        self.backoff = self.first_backoff;
        self.since = None;
        self.retry_at = None;
        Ok(sent)
    }

    /// Send `payload` after whatever is queued; queue it on TRY_AGAIN, or
    /// fail with [`Error::SendBacklogFull`] when the backlog is at its bound.
    fn send(
        &mut self,
        now: Instant,
        payload: &[u8],
        mut mcast: impl FnMut(&[u8]) -> rust_corosync::Result<()>,
    ) -> Result<()> {
        if !self.backlog.is_empty() {
            self.flush(now, &mut mcast)?;
        }
        if self.backlog.is_empty() {
            match mcast(payload) {
                Ok(()) => return Ok(()),
                Err(CsError::CsErrTryAgain) => {}
                Err(e) => return Err(classify("cpg mcast_joined", e)),
            }
            self.since = Some(now);
            self.retry_at = Some(now + self.backoff);
        }
        if self.backlog.len() >= self.max_msgs || self.bytes + payload.len() > self.max_bytes {
            let waited = now.saturating_duration_since(self.since.unwrap_or(now));
            return Err(Error::SendBacklogFull { queued: self.backlog.len(), bytes: self.bytes, waited });
        }
        if self.backlog.is_empty() {
            debug!("mcast: TRY_AGAIN, queueing");
        }
        self.bytes += payload.len();
        self.backlog.push_back(payload.to_vec());
        Ok(())
    }
}

fn classify(op: &'static str, err: CsError) -> Error {
    match err {
        CsError::CsErrLibrary | CsError::CsErrBadHandle => Error::Disconnected { op, err },
        _ => Error::Call { op, err },
    }
}

/// A connection to the local corosync: one joined CPG group and quorum
/// tracking.
pub struct Corosync {
    group: String,
    local: NodeId,
    opts: Options,
    // Handles finalize on drop (the binding's Drop), never inside a callback.
    /// `ManuallyDrop`: once corosync is gone, finalizing can block for
    /// seconds, so a broken handle is leaked instead (the process exits).
    cpg: std::mem::ManuallyDrop<cpg::Handle>,
    quorum: std::mem::ManuallyDrop<quorum::Handle>,
    cpg_fd: RawFd,
    quorum_fd: RawFd,
    queue: VecDeque<CorosyncEvent>,
    members: CpgMembers,
    sendq: SendQueue,
    last_ring: Option<u64>,
    joined: bool,
    broken: bool,
}

impl std::fmt::Debug for Corosync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Corosync")
            .field("group", &self.group)
            .field("local", &self.local)
            .field("last_ring", &self.last_ring)
            .field("queued", &self.queue.len())
            .finish()
    }
}

impl Corosync {
    /// Connect with default [`Options`] and join `group`.
    pub fn connect(group: &str) -> Result<Corosync> {
        Self::connect_with(group, Options::default())
    }

    /// Connect to the local corosync, learn the current ring from the quorum
    /// service, then join `group`. The first queued event is the `Ring` of
    /// the current ring.
    pub fn connect_with(group: &str, opts: Options) -> Result<Corosync> {
        if group.is_empty() || group.len() > 127 || group.contains('\0') {
            return Err(Error::InvalidGroup(group.to_owned()));
        }
        let not_running = |op: &'static str| {
            move |err: CsError| match err {
                CsError::CsErrLibrary => Error::NotRunning { op, err },
                _ => Error::Call { op, err },
            }
        };
        // CPG first: totem confchgs of ring changes after this point reach us,
        // so no ring change between the quorum snapshot and the join is lost.
        let model = cpg::ModelData::ModelV1(cpg::Model1Data {
            flags: cpg::Model1Flags::None,
            deliver_fn: Some(cb_deliver),
            confchg_fn: Some(cb_confchg),
            totem_confchg_fn: Some(cb_totem),
        });
        let cpg_h = cpg::initialize(&model, 0).map_err(not_running("cpg initialize"))?;
        let cpg_fd = cpg::fd_get(&cpg_h).map_err(|e| classify("cpg fd_get", e))?;
        let local = u32::from(cpg::local_get(&cpg_h).map_err(|e| classify("cpg local_get", e))?);
        if local == 0 {
            return Err(Error::InvalidNode { what: "cpg local_get" });
        }

        let qmodel = quorum::ModelData::ModelV1(quorum::Model1Data {
            flags: quorum::Model1Flags::None,
            quorum_notification_fn: Some(cb_quorum),
            nodelist_notification_fn: Some(cb_nodelist),
        });
        let (q_h, _qtype) = quorum::initialize(&qmodel, 0).map_err(not_running("quorum initialize"))?;
        let quorum_fd = quorum::fd_get(&q_h).map_err(|e| classify("quorum fd_get", e))?;

        let sendq = SendQueue::new(&opts);
        let mut me = Corosync {
            group: group.to_owned(),
            local: NodeId(local),
            opts,
            cpg: std::mem::ManuallyDrop::new(cpg_h),
            quorum: std::mem::ManuallyDrop::new(q_h),
            cpg_fd,
            quorum_fd,
            queue: VecDeque::new(),
            members: CpgMembers::new(local, std::process::id()),
            sendq,
            last_ring: None,
            joined: false,
            broken: false,
        };
        // Drop any leftovers of a handle that failed mid-dispatch on this thread.
        let _ = take_raw();

        quorum::trackstart(&me.quorum, TrackFlags::Changes).map_err(|e| classify("quorum trackstart", e))?;
        let deadline = Instant::now() + me.opts.initial_ring_timeout;
        while me.last_ring.is_none() {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::NoInitialRing(me.opts.initial_ring_timeout));
            }
            me.pump(deadline - now)?;
        }
        debug!(ring = me.last_ring, "initial ring known, joining");

        me.retry("cpg join", |h| cpg::join(h, group))?;
        me.joined = true;
        info!(node = local, group, ring = me.last_ring, "joined CPG group");
        Ok(me)
    }

    /// This node's corosync node id.
    pub fn local_nodeid(&self) -> NodeId {
        self.local
    }

    /// The joined CPG group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The last ring seq announced by a `Ring` event.
    pub fn current_ring(&self) -> Option<u64> {
        self.last_ring
    }

    /// The CPG fd (readable when CPG callbacks are pending).
    pub fn cpg_fd(&self) -> RawFd {
        self.cpg_fd
    }

    /// The quorum fd (readable when quorum callbacks are pending).
    pub fn quorum_fd(&self) -> RawFd {
        self.quorum_fd
    }

    /// Both fds, to poll for readability; then call [`Corosync::dispatch`].
    pub fn fds(&self) -> [RawFd; 2] {
        [self.cpg_fd, self.quorum_fd]
    }

    /// Largest payload CPG sends without fragmenting.
    pub fn max_atomic_message_size(&self) -> Result<u32> {
        cpg::max_atomic_msgsize_get(&self.cpg).map_err(|e| classify("cpg max_atomic_msgsize_get", e))
    }

    /// Messages dropped because their sender was a second CPG process of a
    /// node (not the process standing for that node, see the crate docs).
    pub fn dropped_from_extra_processes(&self) -> u64 {
        self.members.dropped_extra
    }

    /// Number of events queued and not yet taken.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Non-blocking: run the callbacks of every stream that has something
    /// pending and queue their events. Returns how many events were queued.
    pub fn dispatch(&mut self) -> Result<usize> {
        let n = self.pump(Duration::ZERO)?;
        self.flush()?;
        Ok(n)
    }

    /// Take the next queued event without touching corosync.
    pub fn next_event(&mut self) -> Option<CorosyncEvent> {
        self.queue.pop_front()
    }

    /// Return the next event, waiting up to `timeout` for one.
    /// `Ok(None)` on timeout; `Err` with [`Error::is_disconnected`] when
    /// corosync went away.
    pub fn poll_event(&mut self, timeout: Duration) -> Result<Option<CorosyncEvent>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Ok(Some(ev));
            }
            let now = Instant::now();
            let mut left = deadline.saturating_duration_since(now);
            if let Some(t) = self.next_retry() {
                left = left.min(t.saturating_duration_since(now));
            }
            self.pump(left)?;
            self.flush()?;
            if self.queue.is_empty() && Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// Multicast `payload` to the group in agreed order, never blocking.
    /// When corosync answers TRY_AGAIN (flow control) the message is queued
    /// behind any earlier ones and retried by [`Corosync::flush`] (which
    /// [`Corosync::dispatch`] and [`Corosync::poll_event`] call); poll no
    /// longer than [`Corosync::next_retry`]. [`Error::SendBacklogFull`] when
    /// the bounded backlog is full.
    pub fn send(&mut self, payload: &[u8]) -> Result<()> {
        if self.broken {
            return Err(Error::Disconnected { op: "cpg mcast_joined", err: CsError::CsErrLibrary });
        }
        let cpg = &self.cpg;
        let r = self.sendq.send(Instant::now(), payload, |m| cpg::mcast_joined(cpg, cpg::Guarantee::TypeAgreed, m));
        if let Err(e) = &r {
            warn!(%e, "mcast failed");
        }
        r
    }

    /// Retry the send backlog now. Returns how many queued messages went out.
    pub fn flush(&mut self) -> Result<usize> {
        if self.broken || self.sendq.backlog.is_empty() {
            return Ok(0);
        }
        let cpg = &self.cpg;
        self.sendq.flush(Instant::now(), |m| cpg::mcast_joined(cpg, cpg::Guarantee::TypeAgreed, m))
    }

    /// Messages waiting in the send backlog (TRY_AGAIN).
    pub fn send_backlog(&self) -> usize {
        self.sendq.backlog.len()
    }

    /// When the send backlog should be retried (`None`: it is empty). The
    /// event loop polls no longer than this, then calls [`Corosync::dispatch`]
    /// or [`Corosync::flush`].
    pub fn next_retry(&self) -> Option<Instant> {
        if self.sendq.backlog.is_empty() {
            None
        } else {
            self.sendq.retry_at
        }
    }

    /// Leave the group cleanly (others see LEAVE). Also done on drop.
    pub fn leave(&mut self) -> Result<()> {
        if !self.joined {
            return Ok(());
        }
        self.joined = false;
        let group = self.group.clone();
        self.retry("cpg leave", |h| cpg::leave(h, &group))
    }

    fn retry(&self, op: &'static str, f: impl Fn(&cpg::Handle) -> rust_corosync::Result<()>) -> Result<()> {
        let start = Instant::now();
        let mut backoff = self.opts.first_backoff;
        loop {
            match f(&self.cpg) {
                Ok(()) => return Ok(()),
                Err(CsError::CsErrTryAgain) => {
                    let waited = start.elapsed();
                    if waited >= self.opts.retry_limit {
                        return Err(Error::Busy { op, waited });
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(self.opts.max_backoff);
                }
                Err(e) => return Err(classify(op, e)),
            }
        }
    }

    /// Poll both fds for up to `timeout`, dispatch the ready ones, translate
    /// the callbacks into queued events. Returns the number queued.
    fn pump(&mut self, timeout: Duration) -> Result<usize> {
        if self.broken {
            return Err(Error::Disconnected { op: "dispatch", err: CsError::CsErrLibrary });
        }
        let mut fds = [
            libc::pollfd { fd: self.cpg_fd, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: self.quorum_fd, events: libc::POLLIN, revents: 0 },
        ];
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // Round a sub-millisecond wait up so a timeout loop cannot spin.
        let ms = if ms == 0 && !timeout.is_zero() { 1 } else { ms };
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(Error::Poll(e));
        }
        if n > 0 {
            trace!(cpg = fds[0].revents, quorum = fds[1].revents, "poll: ready");
        }
        let before = self.queue.len();
        // Quorum first: its first callback must precede CPG's first confchg
        // (only relevant at connect, where nothing is joined yet).
        for (i, stream) in [(1usize, Stream::Quorum), (0, Stream::Cpg)] {
            let rev = fds[i].revents;
            if rev == 0 {
                continue;
            }
            let got = self.dispatch_stream(stream)?;
            if got == 0 && rev & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                self.broken = true;
                let op = match stream {
                    Stream::Cpg => "cpg dispatch",
                    Stream::Quorum => "quorum dispatch",
                };
                warn!(op, revents = rev, "corosync connection hung up");
                return Err(Error::Disconnected { op, err: CsError::CsErrLibrary });
            }
        }
        Ok(self.queue.len() - before)
    }

    /// Dispatch one stream, translate its callbacks. Returns how many raw
    /// callbacks ran.
    fn dispatch_stream(&mut self, stream: Stream) -> Result<usize> {
        let (op, res) = match stream {
            Stream::Cpg => ("cpg dispatch", cpg::dispatch(&self.cpg, DispatchFlags::All)),
            Stream::Quorum => ("quorum dispatch", quorum::dispatch(&self.quorum, DispatchFlags::All)),
        };
        let raws = take_raw();
        let count = raws.len();
        // Translate what did arrive even if the dispatch then failed.
        let translated = raws.into_iter().try_for_each(|r| self.translate(r));
        match res {
            Ok(()) | Err(CsError::CsErrTryAgain) => {}
            Err(err) => {
                let e = classify(op, err);
                if e.is_disconnected() {
                    self.broken = true;
                    warn!(op, %err, "corosync connection lost");
                }
                return Err(e);
            }
        }
        translated?;
        Ok(count)
    }

    fn translate(&mut self, raw: Raw) -> Result<()> {
        match raw {
            Raw::Deliver { group, nodeid, pid, payload } => {
                if group != self.group {
                    warn!(group, "message for a group we did not join, ignored");
                    return Ok(());
                }
                if nodeid == 0 {
                    return Err(Error::InvalidNode { what: "deliver" });
                }
                if !self.members.is_owner(nodeid, pid) {
                    self.members.dropped_extra += 1;
                    debug!(
                        from = nodeid,
                        pid,
                        dropped = self.members.dropped_extra,
                        "message from a CPG process that is not its node's daemon, dropped"
                    );
                    return Ok(());
                }
                trace!(from = nodeid, pid, len = payload.len(), "deliver");
                self.queue.push_back(CorosyncEvent::Deliver { from: NodeId(nodeid), pid, payload });
            }
            Raw::Confchg { group, members, left, joined } => {
                if group != self.group {
                    warn!(group, "confchg for a group we did not join, ignored");
                    return Ok(());
                }
                debug!(?members, ?left, ?joined, "cpg confchg (nodeid, pid[, reason])");
                if let Some(c) = self.members.apply(&members, &left, &joined)? {
                    self.queue.push_back(CorosyncEvent::Confchg(c));
                }
            }
            Raw::Totem { seq, rep, members } => {
                if let Some(last) = self.last_ring {
                    if seq <= last {
                        debug!(seq, last, "totem confchg of a ring already announced, dropped");
                        return Ok(());
                    }
                }
                debug!(seq, rep, ?members, "totem confchg");
                let members = node_list("totem confchg members", members)?;
                self.last_ring = Some(seq);
                self.queue.push_back(CorosyncEvent::Ring(RingEvent { ring: seq, members }));
            }
            Raw::Quorum { quorate, seq, rep, members } => {
                debug!(quorate, seq, rep, ?members, "quorum notification");
                let members = node_list("quorum members", members)?;
                if self.last_ring.is_none() {
                    // The initial ring, from trackstart's immediate callback.
                    self.last_ring = Some(seq);
                    self.queue.push_back(CorosyncEvent::Ring(RingEvent { ring: seq, members: members.clone() }));
                }
                self.queue.push_back(CorosyncEvent::Quorum(QuorumEvent { ring: seq, quorate, members }));
            }
            Raw::Nodelist { seq, members, joined, left } => {
                debug!(seq, ?members, ?joined, ?left, "quorum nodelist notification (not forwarded)");
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Cpg,
    Quorum,
}

impl Drop for Corosync {
    fn drop(&mut self) {
        if self.joined && !self.broken {
            let group = self.group.clone();
            if let Err(e) = cpg::leave(&self.cpg, &group) {
                debug!(%e, "cpg leave on drop failed");
            }
        }
        if self.broken {
            // corosync died under us: trackstop/finalize could block; leave
            // the handles to the process exit.
            return;
        }
        let _ = quorum::trackstop(&self.quorum);
        // SAFETY: each handle is dropped exactly once, here, and the fields
        // are never used again (this is `Drop`).
        unsafe {
            std::mem::ManuallyDrop::drop(&mut self.cpg);
            std::mem::ManuallyDrop::drop(&mut self.quorum);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_map() {
        assert_eq!(map_reason(&cpg::Reason::Join), Some(Reason::Join));
        assert_eq!(map_reason(&cpg::Reason::Leave), Some(Reason::Leave));
        assert_eq!(map_reason(&cpg::Reason::NodeDown), Some(Reason::NodeDown));
        assert_eq!(map_reason(&cpg::Reason::NodeUp), Some(Reason::NodeUp));
        assert_eq!(map_reason(&cpg::Reason::ProcDown), Some(Reason::ProcDown));
        assert_eq!(map_reason(&cpg::Reason::Undefined), None);
        for v in 1..=5u32 {
            assert_eq!(map_reason(&cpg::Reason::new(v)).map(|r| r as u8 as u32), Some(v));
        }
    }

    #[test]
    fn lists_are_sorted_and_checked() {
        let l = node_list("t", [3, 1, 3, 2]).unwrap();
        assert_eq!(l.as_slice(), &[NodeId(1), NodeId(2), NodeId(3)]);
        assert!(matches!(node_list("t", [1, 0]), Err(Error::InvalidNode { .. })));
        assert!(matches!(node_list("t", 1..=(gcs::MAX_NODES as u32 + 1)), Err(Error::TooManyNodes { .. })));
    }

    use Reason::{Join, Leave, NodeDown, NodeUp, ProcDown};

    fn mr(node: u32, reason: Reason) -> MemberReason {
        MemberReason { node: NodeId(node), reason }
    }

    fn cc(members: &[u32], joined: &[(u32, Reason)], left: &[(u32, Reason)]) -> Option<Confchg> {
        Some(Confchg {
            members: node_list("t", members.iter().copied()).unwrap(),
            joined: joined.iter().map(|&(n, r)| mr(n, r)).collect(),
            left: left.iter().map(|&(n, r)| mr(n, r)).collect(),
        })
    }

    /// Node 1 (us, pid 100) joins a group holding node 2's daemon (pid 200).
    fn joined_two() -> CpgMembers {
        let mut m = CpgMembers::new(1, 100);
        let c = m.apply(&[(1, 100), (2, 200)], &[], &[(1, 100, Some(Join))]).unwrap();
        assert_eq!(c, cc(&[1, 2], &[(1, Join)], &[]));
        m
    }

    #[test]
    fn entries_are_sorted_and_checked() {
        let mut m = CpgMembers::new(1, 4);
        let c = m
            .apply(
                &[(3, 5), (2, 10), (1, 4)],
                &[],
                &[(2, 10, Some(NodeUp)), (1, 4, Some(NodeUp)), (3, 5, Some(NodeUp))],
            )
            .unwrap();
        assert_eq!(c, cc(&[1, 2, 3], &[(1, NodeUp), (2, NodeUp), (3, NodeUp)], &[]));
        assert!(matches!(CpgMembers::new(1, 4).apply(&[(0, 1)], &[], &[]), Err(Error::InvalidNode { .. })));
    }

    /// Issue 15 item 4: a second process of node 2 in the group (a probe)
    /// is not node 2's daemon. On main its leave was reported as node 2
    /// leaving while node 2 stayed in `members`, and the daemon's death was
    /// hidden behind the probe (node 2 kept in `members`).
    #[test]
    fn second_process_of_a_node_is_not_its_daemon() {
        let mut m = joined_two();
        // a probe joins on node 2: no node change, its messages are not node 2's
        assert_eq!(m.apply(&[(1, 100), (2, 200), (2, 250)], &[], &[(2, 250, Some(Join))]).unwrap(), None);
        assert!(m.is_owner(2, 200) && !m.is_owner(2, 250));
        // the probe leaves: nothing to report
        assert_eq!(m.apply(&[(1, 100), (2, 200)], &[(2, 250, Some(Leave))], &[]).unwrap(), None);
        // it comes back, then the daemon dies while the probe stays: node 2 is gone
        assert_eq!(m.apply(&[(1, 100), (2, 200), (2, 250)], &[], &[(2, 250, Some(Join))]).unwrap(), None);
        let c = m.apply(&[(1, 100), (2, 250)], &[(2, 200, Some(ProcDown))], &[]).unwrap();
        assert_eq!(c, cc(&[1], &[], &[(2, ProcDown)]));
        // the probe is not promoted; the restarted daemon is node 2 again
        assert!(!m.is_owner(2, 250));
        let c = m.apply(&[(1, 100), (2, 250), (2, 300)], &[], &[(2, 300, Some(Join))]).unwrap();
        assert_eq!(c, cc(&[1, 2], &[(2, Join)], &[]));
        assert!(m.is_owner(2, 300));
        // node 2 goes down with both processes: one NodeDown
        let c = m.apply(&[(1, 100)], &[(2, 250, Some(NodeDown)), (2, 300, Some(NodeDown))], &[]).unwrap();
        assert_eq!(c, cc(&[1], &[], &[(2, NodeDown)]));
    }

    /// A second process on our own node never replaces us, even if it joined
    /// together with us or has a lower pid.
    #[test]
    fn local_owner_is_our_own_process() {
        let mut m = CpgMembers::new(1, 500);
        let c = m.apply(&[(1, 40), (1, 500)], &[], &[(1, 500, Some(Join)), (1, 40, Some(Join))]).unwrap();
        assert_eq!(c, cc(&[1], &[(1, Join)], &[]));
        assert!(m.is_owner(1, 500) && !m.is_owner(1, 40));
    }

    fn small_queue(msgs: usize, bytes: usize) -> SendQueue {
        SendQueue::new(&Options { send_backlog_msgs: msgs, send_backlog_bytes: bytes, ..Options::default() })
    }

    /// Issue 15 item 5: TRY_AGAIN queues instead of blocking. On main,
    /// `send` slept and retried for up to `retry_limit` (5 s) inside the
    /// event loop; here a fake `mcast_joined` answering TRY_AGAIN forever
    /// must not cost more than a few milliseconds per call.
    #[test]
    fn try_again_queues_without_blocking_and_keeps_order() {
        let mut q = small_queue(3, 1 << 20);
        let t0 = Instant::now();
        let busy = |_: &[u8]| Err(CsError::CsErrTryAgain);
        q.send(t0, b"a", busy).unwrap();
        q.send(t0, b"b", busy).unwrap();
        q.send(t0, b"c", busy).unwrap();
        assert!(t0.elapsed() < Duration::from_millis(100), "send blocked for {:?}", t0.elapsed());
        assert_eq!(q.backlog.len(), 3);
        assert!(q.retry_at.is_some_and(|t| t > t0));
        // full: a clear, typed error, and the message is not queued
        let later = t0 + Duration::from_secs(2);
        match q.send(later, b"d", busy) {
            Err(Error::SendBacklogFull { queued: 3, bytes: 3, waited }) => assert_eq!(waited, Duration::from_secs(2)),
            other => panic!("{other:?}"),
        }
        assert_eq!(q.backlog.len(), 3);
        // corosync takes one message, then is busy again: order kept
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut budget = 1;
        let n = q
            .flush(later, |m| {
                if budget == 0 {
                    return Err(CsError::CsErrTryAgain);
                }
                budget -= 1;
                out.push(m.to_vec());
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 1);
        // a new message goes behind the queued ones, never ahead
        let mut ok = |m: &[u8]| -> rust_corosync::Result<()> {
            out.push(m.to_vec());
            Ok(())
        };
        q.send(later, b"e", &mut ok).unwrap();
        assert_eq!(out, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"e".to_vec()]);
        assert!(q.backlog.is_empty() && q.bytes == 0 && q.retry_at.is_none());
    }

    #[test]
    fn backlog_bounded_by_bytes_and_other_errors_pass_through() {
        let mut q = small_queue(100, 10);
        let t0 = Instant::now();
        let busy = |_: &[u8]| Err(CsError::CsErrTryAgain);
        q.send(t0, &[0; 6], busy).unwrap();
        assert!(matches!(q.send(t0, &[0; 5], busy), Err(Error::SendBacklogFull { queued: 1, bytes: 6, .. })));
        q.send(t0, &[0; 4], busy).unwrap();
        // backoff grows on repeated TRY_AGAIN, bounded by max_backoff
        let b0 = q.backoff;
        q.flush(t0, busy).unwrap();
        assert!(q.backoff > b0 && q.backoff <= Options::default().max_backoff);
        // a broken connection is reported, not queued
        let mut q = small_queue(100, 100);
        assert!(q.send(t0, b"x", |_| Err(CsError::CsErrLibrary)).unwrap_err().is_disconnected());
        assert!(q.backlog.is_empty());
    }

    #[test]
    fn not_running_error_text() {
        let e = Error::NotRunning { op: "cpg initialize", err: CsError::CsErrLibrary };
        assert_eq!(e.to_string(), "corosync is not running (cpg initialize: ErrLibrary)");
        assert!(e.is_disconnected());
    }
}
