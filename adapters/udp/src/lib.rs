//! UDP transport for cohort: the core's datagram virtual-synchrony protocol
//! ([`cohort_vs`]) over real sockets, with the same event shape as the
//! corosync adapter (`cohort-corosync`), so a host daemon can use either.
//!
//! Two network modes:
//!
//! * **Multicast** ([`Net::Multicast`], default group `239.192.71.1:5405`,
//!   TTL 1, `IP_MULTICAST_LOOP` on so several nodes can share one machine):
//!   a receive socket bound to the group (`SO_REUSEADDR`, joined on the
//!   configured interface) plus a unicast socket that sends everything.
//!   Every datagram leaves from the unicast socket, so a peer's unicast
//!   address is learned from its authenticated traffic (a datagram counts
//!   only after [`Vs::handle_datagram`] accepted it) and
//!   [`Dest::Node`] datagrams go straight to it (before that, to the group:
//!   the datagram names its receiver, the others drop it).
//! * **Unicast** ([`Net::Unicast`]): one socket, a configured address per
//!   node; a datagram for all goes to every other node. A datagram whose
//!   source address is not a configured peer's is dropped before the
//!   protocol sees it (counted in [`Stats::rx_unknown_source`]); the node of
//!   a configured source is handed to the protocol as a hint, so a datagram
//!   claiming another node's id is rejected.
//!
//! The loop is single-threaded and nonblocking: poll [`Udp::fds`] for
//! readability with a timeout of [`Udp::next_timeout`], then call
//! [`Udp::handle_readable`] / [`Udp::handle_timeout`] (or just
//! [`Udp::dispatch`]) and drain [`Udp::next_event`]. [`Udp::send`] takes core
//! messages of up to [`MAX_MESSAGE`] (4096) bytes, fragmented by the
//! protocol; messages wait in a bounded queue in the adapter while the
//! protocol's send window is full. [`Udp::poll_event`] is the blocking
//! convenience that corosync's adapter also has.
//!
//! Events follow the transport contract of [`cohort_core::gcs`]: a process
//! starts in a singleton ring (`Ring`, `Quorum`, `Confchg` with its own
//! `Join`); every view change is `Confchg`s (`Leave`/`ProcDown`, `NodeDown`,
//! `NodeUp`), then `Ring` (view id), `Quorum`, then a `Confchg` of fresh
//! `Join`s; `Deliver` in agreed order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cohort_core::gcs::{Confchg, NodeList, QuorumEvent, QuorumMode, RingEvent};
use cohort_core::ids::{Incarnation, NodeId};
use cohort_vs::{self as vs, Dest, Vs, VsConfig, VsConfigError, VsEvent, VsSendError, VsStats, VsView, MAX_DATAGRAM};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, info, trace, warn};

pub mod incarnation;
mod key;

pub use cohort_vs::{MAX_MESSAGE, MAX_PAYLOAD};
pub use key::{key_to_hex, load_key, parse_key, KeyError};

/// Default multicast group and port.
pub const DEFAULT_GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 192, 71, 1), 5405);
/// Default number of messages [`Udp::send`] queues beyond the protocol's
/// send window.
pub const DEFAULT_SEND_QUEUE: usize = 4096;
/// Default socket buffer size requested (`SO_RCVBUF`/`SO_SNDBUF`; the
/// kernel caps it at `net.core.rmem_max`/`wmem_max`).
pub const DEFAULT_SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams read per [`Udp::handle_readable`] at most (so timers are not
/// starved under a flood).
const READ_BUDGET: usize = 256;

/// One event, in the order of its stream (the same shape as
/// `cohort_corosync::CorosyncEvent`, without the pid).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UdpEvent {
    /// A new view (ring id = VS view id); on the ordered stream.
    Ring(RingEvent),
    /// A membership change of the group; on the ordered stream.
    Confchg(Confchg),
    /// Quorum of a view, computed from the configured node count.
    Quorum(QuorumEvent),
    /// A message in agreed order.
    Deliver { from: NodeId, payload: Vec<u8> },
}

/// Multicast mode settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MulticastConfig {
    /// Group address and port (default [`DEFAULT_GROUP`]).
    pub group: SocketAddrV4,
    /// Address of the local interface to join and send on
    /// (`0.0.0.0`: let the routing table pick).
    pub interface: Ipv4Addr,
    /// Local address of the unicast socket (port 0: any free port).
    /// Default: `interface:0`.
    pub bind: Option<SocketAddrV4>,
    /// `IP_MULTICAST_TTL` (default 1: the local link only).
    pub ttl: u32,
    /// `IP_MULTICAST_LOOP` (default on: nodes on one machine hear each other).
    pub loopback: bool,
}

impl Default for MulticastConfig {
    fn default() -> Self {
        MulticastConfig { group: DEFAULT_GROUP, interface: Ipv4Addr::UNSPECIFIED, bind: None, ttl: 1, loopback: true }
    }
}

/// Unicast mode settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnicastConfig {
    /// The address of every node; ours is also where we bind, unless
    /// `bind` says otherwise.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    pub bind: Option<SocketAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Net {
    Multicast(MulticastConfig),
    Unicast(UnicastConfig),
}

/// Configuration of one node.
#[derive(Clone, Debug)]
pub struct Config {
    pub node: NodeId,
    /// Every node of the cluster (the quorum denominator). In unicast mode
    /// each of them needs an address.
    pub nodes: Vec<NodeId>,
    /// Must grow at every process start and never repeat under the key (it
    /// is part of every nonce). A daemon passes
    /// [`incarnation::from_persisted`] of its persisted, per-start
    /// incarnation (cohortd does): clock-free. `None` is for tools and tests
    /// without state: the wall clock in microseconds with the low 16 bits
    /// random, so restarts order by the clock (a clock stepped back makes
    /// peers refuse the process as stale) and a repeated clock value repeats
    /// the incarnation only with probability 2^-16.
    pub incarnation: Option<Incarnation>,
    /// The cluster key ([`load_key`]).
    pub key: [u8; 32],
    pub net: Net,
    pub quorum: QuorumMode,
    pub heartbeat_ms: u64,
    pub fail_timeout_ms: u64,
    /// Messages [`Udp::send`] queues while the protocol's window is full.
    pub send_queue: usize,
    /// Requested socket buffer size.
    pub socket_buffer: usize,
}

impl Config {
    /// Majority quorum, default timings (50 ms heartbeat, 300 ms failure
    /// timeout), default queue and buffers.
    pub fn new(node: NodeId, nodes: Vec<NodeId>, key: [u8; 32], net: Net) -> Config {
        Config {
            node,
            nodes,
            incarnation: None,
            key,
            net,
            quorum: QuorumMode::Majority,
            heartbeat_ms: vs::DEFAULT_HEARTBEAT_MS,
            fail_timeout_ms: vs::DEFAULT_FAIL_TIMEOUT_MS,
            send_queue: DEFAULT_SEND_QUEUE,
            socket_buffer: DEFAULT_SOCKET_BUFFER,
        }
    }
}

/// Errors of the UDP adapter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A socket could not be set up.
    #[error("{op}: {source}")]
    Socket {
        op: String,
        #[source]
        source: io::Error,
    },
    /// poll(2) failed.
    #[error("poll on the UDP sockets failed: {0}")]
    Poll(#[source] io::Error),
}

/// Why [`Udp::send`] refused a message (nothing was queued).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("message of {len} bytes is larger than {max}")]
    TooLarge { len: usize, max: usize },
    /// The adapter's queue is full: dispatch (deliveries free room) and retry.
    #[error("send queue full ({queued} messages waiting)")]
    QueueFull { queued: usize },
    /// [`Udp::leave`] was called.
    #[error("the transport left the group")]
    Closed,
}

/// Counters: the protocol's plus the adapter's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub vs: VsStats,
    /// Datagrams handed to the kernel.
    pub tx_datagrams: u64,
    /// Datagrams the kernel refused (buffer full, unreachable, filtered);
    /// the protocol repairs the loss.
    pub tx_errors: u64,
    /// Datagrams read from the sockets.
    pub rx_datagrams: u64,
    /// Datagrams the protocol rejected (also counted by reason in `vs`).
    pub rx_rejected: u64,
    /// Unicast mode: datagrams whose source address is not a configured
    /// peer's, dropped before the protocol (never decrypted).
    pub rx_unknown_source: u64,
    /// `Dest::Node` datagrams sent to the group because the node's address
    /// was not known yet (multicast mode).
    pub unicast_via_group: u64,
    /// Peer addresses learned or changed (multicast mode).
    pub addresses_learned: u64,
    /// Messages waiting in the adapter's queue now.
    pub queued: u64,
}

/// The UDP transport of one node.
pub struct Udp {
    vs: Box<Vs>,
    epoch: Instant,
    /// Sends everything, receives unicast.
    sock: UdpSocket,
    /// Multicast mode: receives the group.
    mcast: Option<UdpSocket>,
    fds: Vec<RawFd>,
    group: Option<SocketAddr>,
    /// Unicast mode: configured addresses; multicast mode: learned ones.
    addrs: HashMap<NodeId, SocketAddr>,
    /// Unicast mode: configured address -> node (the hint).
    by_addr: HashMap<SocketAddr, NodeId>,
    unicast: bool,
    events: VecDeque<UdpEvent>,
    outq: VecDeque<Vec<u8>>,
    max_outq: usize,
    buf: Box<[u8]>,
    payload: Box<[u8]>,
    /// Receive buffers of one `handle_readable` batch.
    rx_pool: Vec<Vec<u8>>,
    stats: Stats,
    last_tx_error: Option<io::ErrorKind>,
    /// When the current view was installed.
    view_since: Instant,
}

/// One configured peer for an operator's link view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    pub node: NodeId,
    /// Unicast: configured; multicast: learned (`None` until heard).
    pub addr: Option<SocketAddr>,
    pub incarnation: Option<u64>,
    /// Time since an authenticated datagram of it arrived (`None`: never).
    pub last_heard: Option<Duration>,
    /// Heard within the failure timeout, not left, not suspected.
    pub up: bool,
    pub left: bool,
    pub suspected: bool,
}

impl std::fmt::Debug for Udp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Udp")
            .field("node", &self.vs.node())
            .field("view", &self.vs.view())
            .field("local", &self.sock.local_addr().ok())
            .field("group", &self.group)
            .finish()
    }
}

fn sock_err(op: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let op = op.into();
    move |source| Error::Socket { op, source }
}

fn udp_socket(domain: Domain, buffer: usize) -> Result<Socket, Error> {
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(sock_err("socket(UDP)"))?;
    s.set_nonblocking(true).map_err(sock_err("set O_NONBLOCK"))?;
    // Best effort: the kernel caps (and may refuse) large buffers.
    if let Err(e) = s.set_recv_buffer_size(buffer) {
        debug!(%e, "SO_RCVBUF not set");
    }
    if let Err(e) = s.set_send_buffer_size(buffer) {
        debug!(%e, "SO_SNDBUF not set");
    }
    Ok(s)
}

/// Tools and tests only (see [`Config::incarnation`]).
fn ephemeral_incarnation() -> Result<Incarnation, Error> {
    let us = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(1);
    let us = u64::try_from(us).unwrap_or(u64::MAX);
    let r = u64::from(incarnation::random_u32()? & 0xffff);
    Ok(Incarnation(((us & !0xffff) | r).max(1)))
}

impl Udp {
    /// Set up the sockets and the protocol. The first events (the singleton
    /// ring, its quorum, our own join) are queued at once.
    pub fn new(cfg: Config) -> Result<Udp, Error> {
        let mut nodes = NodeList::new();
        for n in &cfg.nodes {
            if nodes.push(*n).is_err() {
                return Err(Error::Config(format!("more than {} nodes", cohort_core::gcs::MAX_NODES)));
            }
        }
        let inc = match cfg.incarnation {
            Some(i) => i,
            None => ephemeral_incarnation()?,
        };
        let mut vcfg = VsConfig::new(cfg.node, inc, nodes.clone(), cfg.key);
        vcfg.quorum = cfg.quorum;
        vcfg.heartbeat_ms = cfg.heartbeat_ms;
        vcfg.fail_timeout_ms = cfg.fail_timeout_ms;
        let vs = Vs::new(vcfg).map_err(|e| {
            Error::Config(match e {
                VsConfigError::InvalidNode => "node id 0".to_string(),
                VsConfigError::NotInNodeList => format!("node {} is not in the node list", cfg.node.0),
                VsConfigError::BadTiming => format!(
                    "heartbeat {} ms / failure timeout {} ms: the timeout must be at least twice the heartbeat",
                    cfg.heartbeat_ms, cfg.fail_timeout_ms
                ),
                other => format!("the transport refused its configuration: {other:?}"),
            })
        })?;
        let mut addrs = HashMap::new();
        let mut by_addr = HashMap::new();
        let (sock, mcast, group, unicast) = match &cfg.net {
            Net::Multicast(m) => {
                if !m.group.ip().is_multicast() {
                    return Err(Error::Config(format!("{} is not a multicast address", m.group.ip())));
                }
                // Receive socket: bound to the group address, so it sees
                // only group traffic; shared by every node on this host.
                let r = udp_socket(Domain::IPV4, cfg.socket_buffer)?;
                r.set_reuse_address(true).map_err(sock_err("set SO_REUSEADDR"))?;
                r.bind(&SocketAddr::V4(m.group).into()).map_err(sock_err(format!("bind {}", m.group)))?;
                r.join_multicast_v4(m.group.ip(), &m.interface).map_err(sock_err(format!(
                    "join {} on interface {}",
                    m.group.ip(),
                    m.interface
                )))?;
                // Send (and unicast receive) socket.
                let bind = m.bind.unwrap_or(SocketAddrV4::new(m.interface, 0));
                let s = udp_socket(Domain::IPV4, cfg.socket_buffer)?;
                s.bind(&SocketAddr::V4(bind).into()).map_err(sock_err(format!("bind {bind}")))?;
                if !m.interface.is_unspecified() {
                    s.set_multicast_if_v4(&m.interface)
                        .map_err(sock_err(format!("IP_MULTICAST_IF {}", m.interface)))?;
                }
                s.set_multicast_ttl_v4(m.ttl).map_err(sock_err("IP_MULTICAST_TTL"))?;
                s.set_multicast_loop_v4(m.loopback).map_err(sock_err("IP_MULTICAST_LOOP"))?;
                (UdpSocket::from(s), Some(UdpSocket::from(r)), Some(SocketAddr::V4(m.group)), false)
            }
            Net::Unicast(u) => {
                for n in &cfg.nodes {
                    match u.peers.get(n) {
                        Some(a) => {
                            if by_addr.insert(canonical(*a), *n).is_some() {
                                return Err(Error::Config(format!("address {a} is given to two nodes")));
                            }
                            if *n != cfg.node {
                                addrs.insert(*n, *a);
                            }
                        }
                        None if *n == cfg.node && u.bind.is_some() => {}
                        None => return Err(Error::Config(format!("node {} has no address", n.0))),
                    }
                }
                let bind = u
                    .bind
                    .or_else(|| u.peers.get(&cfg.node).copied())
                    .ok_or_else(|| Error::Config(format!("node {} has no address to bind", cfg.node.0)))?;
                let s = udp_socket(Domain::for_address(bind), cfg.socket_buffer)?;
                s.bind(&bind.into()).map_err(sock_err(format!("bind {bind}")))?;
                (UdpSocket::from(s), None, None, true)
            }
        };
        let mut fds = vec![sock.as_raw_fd()];
        if let Some(m) = &mcast {
            fds.push(m.as_raw_fd());
        }
        info!(
            node = cfg.node.0,
            local = ?sock.local_addr().ok(),
            group = ?group,
            mode = if unicast { "unicast" } else { "multicast" },
            "cohort-udp started"
        );
        let mut me = Udp {
            vs: Box::new(vs),
            epoch: Instant::now(),
            sock,
            mcast,
            fds,
            group,
            addrs,
            by_addr,
            unicast,
            events: VecDeque::new(),
            outq: VecDeque::new(),
            max_outq: cfg.send_queue,
            buf: vec![0u8; MAX_DATAGRAM + 1].into_boxed_slice(),
            payload: vec![0u8; MAX_MESSAGE].into_boxed_slice(),
            rx_pool: Vec::new(),
            stats: Stats::default(),
            last_tx_error: None,
            view_since: Instant::now(),
        };
        let now = Instant::now();
        me.vs.handle_timeout(me.core_now(now));
        me.flush(now);
        Ok(me)
    }

    fn core_now(&self, now: Instant) -> cohort_core::Instant {
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        cohort_core::Instant(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.vs.node()
    }

    /// The installed view.
    pub fn view(&self) -> VsView {
        self.vs.view()
    }

    /// When the installed view was installed.
    pub fn view_since(&self) -> Instant {
        self.view_since
    }

    /// Every configured peer: address, incarnation, last heard, up.
    pub fn links(&self, now: Instant) -> Vec<LinkStatus> {
        let cnow = self.core_now(now);
        self.vs
            .peer_links(cnow)
            .iter()
            .map(|l| LinkStatus {
                node: l.node,
                addr: self.addrs.get(&l.node).copied(),
                incarnation: l.inc.map(|i| i.0),
                last_heard: l.last_heard.map(|t| Duration::from_millis(cnow.0.saturating_sub(t.0))),
                up: l.alive,
                left: l.left,
                suspected: l.suspected,
            })
            .collect()
    }

    /// The address of the sending/unicast socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// The fds to poll for readability (one or two).
    pub fn fds(&self) -> &[RawFd] {
        &self.fds
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.vs = self.vs.stats();
        s.queued = self.outq.len() as u64;
        s
    }

    /// Number of events queued and not yet taken.
    pub fn pending(&self) -> usize {
        self.events.len()
    }

    /// Take the next queued event.
    pub fn next_event(&mut self) -> Option<UdpEvent> {
        self.events.pop_front()
    }

    /// When [`Udp::handle_timeout`] wants to be called; `None` once the
    /// transport left and said so.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.vs.next_timeout().map(|t| self.epoch + Duration::from_millis(t.0))
    }

    /// True once [`Udp::leave`] completed (nothing more is sent or received
    /// except the remaining leave announcements).
    pub fn is_closed(&self) -> bool {
        self.vs.is_closed()
    }

    /// Read the datagrams waiting on the sockets (up to a budget) and run
    /// the protocol. Returns the number of datagrams read.
    ///
    /// In multicast mode a sender's datagrams arrive on two sockets (group
    /// and unicast); they are read as one batch and handed to the protocol
    /// in each sender's datagram order, so its replay window (64
    /// datagrams) does not mistake a datagram read late for a replay.
    pub fn handle_readable(&mut self, now: Instant) -> usize {
        let mut pool = std::mem::take(&mut self.rx_pool);
        let mut batch: Vec<(Option<vs::DatagramId>, usize, usize, SocketAddr)> = Vec::new();
        let mut open = [true, self.mcast.is_some()];
        while batch.len() < READ_BUDGET && open.iter().any(|&o| o) {
            for (i, still) in open.iter_mut().enumerate() {
                if !*still || batch.len() >= READ_BUDGET {
                    continue;
                }
                let sock = if i == 0 { Some(&self.sock) } else { self.mcast.as_ref() };
                let Some(sock) = sock else {
                    *still = false;
                    continue;
                };
                let slot = batch.len();
                if pool.len() <= slot {
                    pool.push(vec![0u8; MAX_DATAGRAM + 1]);
                }
                match sock.recv_from(&mut pool[slot]) {
                    Ok((len, src)) => batch.push((vs::datagram_id(&pool[slot][..len]), slot, len, src)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // WouldBlock, or an ICMP error (ECONNREFUSED ...): not fatal.
                        if e.kind() != io::ErrorKind::WouldBlock {
                            trace!(%e, "recv_from");
                        }
                        *still = false;
                    }
                }
            }
        }
        // Unparsable ones first (they are rejected anyway), then by sender
        // and datagram counter.
        batch.sort_by_key(|(id, ..)| *id);
        for &(_, slot, len, src) in &batch {
            self.on_datagram(now, &pool[slot][..len], src);
            // Consume deliveries (they free the protocol's receive window)
            // and send acks before going on.
            self.flush(now);
        }
        self.rx_pool = pool;
        self.flush(now);
        batch.len()
    }

    fn on_datagram(&mut self, now: Instant, bytes: &[u8], src: SocketAddr) {
        self.stats.rx_datagrams += 1;
        let t = self.core_now(now);
        let len = bytes.len();
        let hint = if self.unicast {
            // Only configured peers may talk to us: anything else is dropped
            // before the AEAD (no decryption work, no protocol state).
            let Some(n) = self.by_addr.get(&canonical(src)).copied() else {
                self.stats.rx_unknown_source += 1;
                debug!(%src, len, "datagram from an address that is not a configured peer dropped");
                return;
            };
            Some(n)
        } else {
            None
        };
        match self.vs.handle_datagram(t, hint, bytes) {
            Ok(()) => {
                if !self.unicast {
                    if let Some(from) = vs::datagram_id(bytes).map(|d| d.sender) {
                        let old = self.addrs.insert(from, src);
                        if old != Some(src) {
                            self.stats.addresses_learned += 1;
                            info!(node = from.0, addr = %src, previous = ?old, "peer address learned");
                        }
                    }
                }
            }
            Err(e) => {
                self.stats.rx_rejected += 1;
                // Our own multicast looped back is normal.
                if e != vs::VsRecvError::Loopback {
                    debug!(?e, %src, len, "datagram rejected");
                }
            }
        }
    }

    /// Run the protocol's timers if due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_timeout().is_some_and(|t| t <= now) {
            let t = self.core_now(now);
            self.vs.handle_timeout(t);
        }
        self.flush(now);
    }

    /// Nonblocking: read what is waiting, run due timers. Returns how many
    /// events were queued.
    pub fn dispatch(&mut self) -> usize {
        let before = self.events.len();
        let now = Instant::now();
        self.handle_readable(now);
        self.handle_timeout(now);
        self.events.len() - before
    }

    /// Return the next event, waiting up to `timeout` for one while running
    /// the protocol. `Ok(None)` on timeout.
    pub fn poll_event(&mut self, timeout: Duration) -> Result<Option<UdpEvent>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(ev) = self.events.pop_front() {
                return Ok(Some(ev));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let wake = self.next_timeout().map_or(deadline, |t| t.min(deadline));
            wait_readable(&self.fds, wake.saturating_duration_since(now))?;
            self.dispatch();
        }
    }

    /// Multicast `message` (at most [`MAX_MESSAGE`] bytes) to the group in
    /// agreed order. It is queued in the adapter while the protocol's send
    /// window is full; `QueueFull` when that queue is full too.
    pub fn send(&mut self, message: &[u8]) -> Result<(), SendError> {
        if message.len() > MAX_MESSAGE {
            return Err(SendError::TooLarge { len: message.len(), max: MAX_MESSAGE });
        }
        if self.vs.is_closed() {
            return Err(SendError::Closed);
        }
        if self.outq.len() >= self.max_outq {
            return Err(SendError::QueueFull { queued: self.outq.len() });
        }
        self.outq.push_back(message.to_vec());
        self.flush(Instant::now());
        Ok(())
    }

    /// How many more messages [`Udp::send`] takes now.
    pub fn send_room(&self) -> usize {
        self.max_outq.saturating_sub(self.outq.len())
    }

    /// Leave the group cleanly: queued messages are delivered first (for at
    /// most the failure timeout), then the others are told. Keep
    /// dispatching until [`Udp::next_timeout`] is `None` to send all leave
    /// announcements.
    pub fn leave(&mut self) {
        let now = Instant::now();
        // Whatever still waits in the adapter queue goes in if it fits.
        self.flush(now);
        if !self.outq.is_empty() {
            warn!(dropped = self.outq.len(), "leaving with messages still queued in the adapter");
            self.outq.clear();
        }
        let t = self.core_now(now);
        self.vs.leave(t);
        self.flush(now);
    }

    /// Move queued messages into the protocol, send its datagrams, collect
    /// its events, until nothing moves.
    fn flush(&mut self, now: Instant) {
        let t = self.core_now(now);
        loop {
            let mut progress = false;
            while let Some(m) = self.outq.front() {
                match self.vs.broadcast_message(t, m) {
                    Ok(()) => {
                        self.outq.pop_front();
                        progress = true;
                    }
                    Err(VsSendError::WindowFull) => break,
                    Err(VsSendError::TooLarge) => {
                        // Checked in `send`; cannot happen.
                        self.outq.pop_front();
                    }
                    Err(VsSendError::Closed) => {
                        self.outq.clear();
                        break;
                    }
                }
            }
            while let Some(tx) = self.vs.poll_transmit(&mut self.buf) {
                self.transmit(tx.dest, tx.len);
                progress = true;
            }
            while let Some(ev) = self.vs.poll_event(&mut self.payload) {
                let ev = match ev {
                    VsEvent::Ring(r) => {
                        self.view_since = Instant::now();
                        info!(node = self.vs.node().0, ring = format!("{:x}", r.ring), members = ?ids(&r.members), "new view");
                        UdpEvent::Ring(r)
                    }
                    VsEvent::Confchg(c) => {
                        debug!(members = ?ids(&c.members), joined = ?c.joined, left = ?c.left, "confchg");
                        UdpEvent::Confchg(c)
                    }
                    VsEvent::Quorum(q) => {
                        debug!(ring = format!("{:x}", q.ring), quorate = q.quorate, "quorum");
                        UdpEvent::Quorum(q)
                    }
                    VsEvent::Deliver { from, len } => {
                        trace!(from = from.0, len, "deliver");
                        UdpEvent::Deliver { from, payload: self.payload[..len].to_vec() }
                    }
                };
                self.events.push_back(ev);
                progress = true;
            }
            if !progress {
                break;
            }
        }
    }

    fn transmit(&mut self, dest: Dest, len: usize) {
        let bytes = &self.buf[..len];
        let mut errors = 0u64;
        let mut sent = 0u64;
        let mut last_err = None;
        let mut send_to = |sock: &UdpSocket, to: SocketAddr| match sock.send_to(bytes, to) {
            Ok(_) => sent += 1,
            Err(e) => {
                errors += 1;
                last_err = Some((e, to));
            }
        };
        match (dest, self.group) {
            (Dest::All, Some(g)) => send_to(&self.sock, g),
            (Dest::All, None) => {
                for a in self.addrs.values() {
                    send_to(&self.sock, *a);
                }
            }
            (Dest::Node(n), group) => match (self.addrs.get(&n), group) {
                (Some(a), _) => send_to(&self.sock, *a),
                (None, Some(g)) => {
                    self.stats.unicast_via_group += 1;
                    send_to(&self.sock, g);
                }
                (None, None) => {} // unicast mode: every node has an address
            },
        }
        self.stats.tx_datagrams += sent;
        self.stats.tx_errors += errors;
        match last_err {
            Some((e, to)) => {
                if self.last_tx_error != Some(e.kind()) {
                    warn!(%e, %to, "send failed (the protocol repairs losses; further errors of this kind at debug level)");
                    self.last_tx_error = Some(e.kind());
                } else {
                    debug!(%e, %to, "send failed");
                }
            }
            None if sent > 0 => self.last_tx_error = None,
            None => {}
        }
    }
}

impl Drop for Udp {
    /// Best effort: announce a clean leave once (peers then report `Leave`
    /// rather than waiting for the failure timeout).
    fn drop(&mut self) {
        if !self.vs.is_closed() {
            self.outq.clear();
            let now = Instant::now();
            let t = self.core_now(now);
            self.vs.leave(t);
            let t = self.core_now(now + Duration::from_millis(1));
            self.vs.handle_timeout(t);
            while let Some(tx) = self.vs.poll_transmit(&mut self.buf) {
                self.transmit(tx.dest, tx.len);
            }
        }
    }
}

/// An IPv4-mapped IPv6 source (a dual-stack socket) as the IPv4 address
/// it is, so it matches a peer configured as IPv4.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

fn ids(l: &NodeList) -> Vec<u32> {
    l.iter().map(|n| n.0).collect()
}

/// Wait until one of `fds` is readable or `timeout` passed.
pub fn wait_readable(fds: &[RawFd], timeout: Duration) -> Result<(), Error> {
    let mut pfds: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    // Round up so a sub-millisecond wait does not spin.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: pfds is a valid array of pollfd of the given length.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(Error::Poll(e));
        }
    }
    Ok(())
}
