//! cohort-udp-bench: one benchmark client, the same logic over either
//! transport (cohort UDP or corosync CPG through `cohort-corosync`), driven
//! by `bench/transport.sh` (its own crate under bench/transport: it links corosync).
//!
//! ```text
//! cohort-udp-bench mono                     print CLOCK_MONOTONIC in ms
//! cohort-udp-bench --transport udp|corosync|raw --node K [--nodes 1,2,3 --key FILE --iface ADDR [--group ADDR:PORT]]
//!     [--cpg-group NAME] --members M --stop-file PATH [--limit SECS]
//!     [--throughput --senders S --count N --size BYTES [--rate MSGS_PER_S --lat-file PATH]]
//! ```
//!
//! Every client waits for a view of `--members` nodes. With `--throughput`,
//! nodes `1..=S` then multicast `N` messages of `BYTES` each as fast as the
//! transport takes them (UDP: while the adapter queue has room; corosync:
//! until TRY_AGAIN, dispatching in between) and every node counts the
//! deliveries. `raw` is the ceiling: plain UDP multicast of the same
//! messages between the same namespaces, no order, no crypto, no
//! retransmission (`--group`'s port + 1). Its "view" is the node list at
//! once; a receiver that stops hearing datagrams for a second after the
//! senders started reports `done` with what it got (a lossy count, marked
//! `lossy`). Without `--throughput`, the client only reports views (failure
//! detection and merge timing). It exits when `--stop-file` exists or after
//! `--limit` seconds. Output lines (times are CLOCK_MONOTONIC ms, the same
//! clock in every namespace):
//!
//! ```text
//! ring <ms> <ring id> <m1,m2,..>
//! ready <ms> <members>
//! send_start <ms>
//! sent <ms> <count>
//! done <ms> <delivered> <bytes> <first delivery ms> <last delivery ms>
//! cpu <user ms> <system ms>          (this process, at exit)
//! ```
//!
//! With `--rate`, each sender paces its messages at that rate (a fixed
//! offered load) and every receiver writes one line per delivered message
//! to `--lat-file`.K (K: its node): `<sender> <seq> <latency ms>` (send to delivery, the
//! send time carried in the message; CLOCK_MONOTONIC is one clock for all
//! namespaces of the host), so the script can take the slowest node's.
//!
//! ```text
//! error <text>
//! ```

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::process::exit;
use std::time::{Duration, Instant};

use cohort_core::gcs::NodeList;
use cohort_core::ids::NodeId;
use cohort_corosync::{Corosync, CorosyncEvent, Options};
use cohort_udp::{load_key, Config, MulticastConfig, Net, SendError, Udp, UdpEvent};

fn mono_ms() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

/// User and system CPU time of this process so far, in ms.
fn cpu_ms() -> (f64, f64) {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    (ms(ru.ru_utime), ms(ru.ru_stime))
}

fn out(line: String) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

fn die(msg: String) -> ! {
    out(format!("error {msg}"));
    eprintln!("cohort-udp-bench: {msg}");
    exit(2)
}

/// What the client needs from a transport.
enum Ev {
    Ring(u64, NodeList),
    Members(usize),
    Deliver(Vec<u8>),
    Other,
}

trait Bus {
    fn fds(&self) -> Vec<RawFd>;
    /// Nonblocking: read what is there, run timers.
    fn dispatch(&mut self);
    fn next_event(&mut self) -> Option<Ev>;
    /// Ok(false): the transport is busy, retry after dispatching.
    fn try_send(&mut self, payload: &[u8]) -> Result<bool, String>;
    fn wake(&self) -> Option<Instant>;
    /// Transport counters worth a look, as one line.
    fn stats(&self) -> String;
}

struct UdpBus(Udp);

impl Bus for UdpBus {
    fn fds(&self) -> Vec<RawFd> {
        self.0.fds().to_vec()
    }
    fn dispatch(&mut self) {
        self.0.dispatch();
    }
    fn next_event(&mut self) -> Option<Ev> {
        Some(match self.0.next_event()? {
            UdpEvent::Ring(r) => Ev::Ring(r.ring, r.members),
            UdpEvent::Confchg(c) => Ev::Members(c.members.len()),
            UdpEvent::Deliver { payload, .. } => Ev::Deliver(payload),
            UdpEvent::Quorum(_) => Ev::Other,
        })
    }
    fn try_send(&mut self, payload: &[u8]) -> Result<bool, String> {
        match self.0.send(payload) {
            Ok(()) => Ok(true),
            Err(SendError::QueueFull { .. }) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
    fn wake(&self) -> Option<Instant> {
        self.0.next_timeout()
    }
    fn stats(&self) -> String {
        let s = self.0.stats();
        format!(
            "window_drops={} data_retransmits={} naks_sent={} retransmits={} duplicates={} frag_deferred={} \
             tx_errors={} rx_datagrams={} tx_datagrams={}",
            s.vs.window_drops,
            s.vs.data_retransmits,
            s.vs.naks_sent,
            s.vs.retransmits,
            s.vs.duplicates,
            s.vs.frag_deferred,
            s.tx_errors,
            s.rx_datagrams,
            s.tx_datagrams
        )
    }
}

struct CpgBus(Corosync);

impl Bus for CpgBus {
    fn fds(&self) -> Vec<RawFd> {
        self.0.fds().to_vec()
    }
    fn dispatch(&mut self) {
        if let Err(e) = self.0.dispatch() {
            die(format!("corosync dispatch: {e}"));
        }
    }
    fn next_event(&mut self) -> Option<Ev> {
        Some(match self.0.next_event()? {
            CorosyncEvent::Ring(r) => Ev::Ring(r.ring, r.members),
            CorosyncEvent::Confchg(c) => Ev::Members(c.members.len()),
            CorosyncEvent::Deliver { payload, .. } => Ev::Deliver(payload),
            CorosyncEvent::Quorum(_) => Ev::Other,
        })
    }
    fn try_send(&mut self, payload: &[u8]) -> Result<bool, String> {
        match self.0.send(payload) {
            Ok(()) => Ok(true),
            Err(cohort_corosync::Error::SendBacklogFull { .. }) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
    fn wake(&self) -> Option<Instant> {
        None
    }
    fn stats(&self) -> String {
        String::new()
    }
}

/// The ceiling: plain UDP multicast, nothing on top.
struct RawBus {
    sock: std::net::UdpSocket,
    group: SocketAddrV4,
    nodes: NodeList,
    started: bool,
    rx: std::collections::VecDeque<Vec<u8>>,
    buf: Vec<u8>,
    rx_datagrams: u64,
    tx_busy: u64,
}

impl RawBus {
    fn new(a: &Args) -> RawBus {
        use std::os::fd::AsRawFd as _;
        let group = SocketAddrV4::new(*a.group.ip(), a.group.port() + 1);
        let sock = std::net::UdpSocket::bind(group).unwrap_or_else(|e| die(format!("raw bind {group}: {e}")));
        sock.join_multicast_v4(group.ip(), &a.iface).unwrap_or_else(|e| die(format!("raw join: {e}")));
        sock.set_multicast_loop_v4(true).unwrap_or_else(|e| die(format!("raw loop: {e}")));
        sock.set_nonblocking(true).unwrap_or_else(|e| die(format!("raw nonblocking: {e}")));
        let fd = sock.as_raw_fd();
        let iface = libc::in_addr { s_addr: u32::from_ne_bytes(a.iface.octets()) };
        let big: libc::c_int = 8 << 20;
        // SAFETY: valid fd, pointers to live values of the sizes given.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_IF,
                (&iface as *const libc::in_addr).cast(),
                std::mem::size_of::<libc::in_addr>() as libc::socklen_t,
            );
            for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&big as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        let nodes = a.nodes.iter().map(|&n| NodeId(n)).collect();
        RawBus {
            sock,
            group,
            nodes,
            started: false,
            rx: Default::default(),
            buf: vec![0; 65536],
            rx_datagrams: 0,
            tx_busy: 0,
        }
    }
}

impl Bus for RawBus {
    fn fds(&self) -> Vec<RawFd> {
        use std::os::fd::AsRawFd as _;
        vec![self.sock.as_raw_fd()]
    }
    fn dispatch(&mut self) {
        loop {
            match self.sock.recv_from(&mut self.buf) {
                Ok((n, _)) => {
                    self.rx_datagrams += 1;
                    self.rx.push_back(self.buf[..n].to_vec());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => die(format!("raw recv: {e}")),
            }
        }
    }
    fn next_event(&mut self) -> Option<Ev> {
        if !self.started {
            self.started = true;
            return Some(Ev::Ring(1, self.nodes.clone()));
        }
        if let Some(p) = self.rx.pop_front() {
            return Some(Ev::Deliver(p));
        }
        None
    }
    fn try_send(&mut self, payload: &[u8]) -> Result<bool, String> {
        match self.sock.send_to(payload, self.group) {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => {
                self.tx_busy += 1;
                Ok(false)
            }
            // The kernel's queue to the device is full: retry later.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                self.tx_busy += 1;
                Ok(false)
            }
            Err(e) => Err(e.to_string()),
        }
    }
    fn wake(&self) -> Option<Instant> {
        None
    }
    fn stats(&self) -> String {
        format!("rx_datagrams={} tx_busy={}", self.rx_datagrams, self.tx_busy)
    }
}

struct Args {
    transport: String,
    node: u32,
    nodes: Vec<u32>,
    key: PathBuf,
    iface: Ipv4Addr,
    group: SocketAddrV4,
    cpg_group: String,
    members: usize,
    stop_file: PathBuf,
    limit: Duration,
    throughput: bool,
    senders: u32,
    /// The senders are nodes `first_sender..first_sender + senders`.
    first_sender: u32,
    count: u64,
    size: usize,
    /// Paced sending, messages per second per sender (0: as fast as taken).
    rate: f64,
    lat_file: Option<PathBuf>,
}

fn usage(msg: &str) -> ! {
    eprintln!("cohort-udp-bench: {msg}");
    eprintln!("usage: cohort-udp-bench mono | --transport udp|corosync|raw --node K [--nodes L --key F --iface A [--group G]] [--cpg-group NAME] --members M --stop-file P [--limit S] [--throughput --senders S [--first-sender K] --count N --size B]");
    exit(1)
}

fn parse<T: std::str::FromStr>(k: &str, v: &str) -> T {
    v.parse().unwrap_or_else(|_| usage(&format!("bad value for {k}: {v:?}")))
}

fn parse_args() -> Args {
    let mut a = Args {
        transport: String::new(),
        node: 0,
        nodes: vec![1, 2, 3],
        key: PathBuf::new(),
        iface: Ipv4Addr::UNSPECIFIED,
        group: cohort_udp::DEFAULT_GROUP,
        cpg_group: "cohort-bench".into(),
        members: 3,
        stop_file: PathBuf::new(),
        limit: Duration::from_secs(120),
        throughput: false,
        senders: 1,
        first_sender: 1,
        count: 0,
        size: 64,
        rate: 0.0,
        lat_file: None,
    };
    let mut it = std::env::args().skip(1).peekable();
    if it.peek().map(String::as_str) == Some("mono") {
        println!("{:.3}", mono_ms());
        exit(0);
    }
    while let Some(k) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage(&format!("{k} needs a value")));
        match k.as_str() {
            "--transport" => a.transport = val(),
            "--node" => a.node = parse(&k, &val()),
            "--nodes" => a.nodes = val().split(',').map(|s| parse(&k, s)).collect(),
            "--key" => a.key = PathBuf::from(val()),
            "--iface" => a.iface = parse(&k, &val()),
            "--group" => a.group = parse(&k, &val()),
            "--cpg-group" => a.cpg_group = val(),
            "--members" => a.members = parse(&k, &val()),
            "--stop-file" => a.stop_file = PathBuf::from(val()),
            "--limit" => a.limit = Duration::from_secs_f64(parse(&k, &val())),
            "--throughput" => a.throughput = true,
            "--senders" => a.senders = parse(&k, &val()),
            "--first-sender" => a.first_sender = parse(&k, &val()),
            "--count" => a.count = parse(&k, &val()),
            "--size" => a.size = parse(&k, &val()),
            "--rate" => a.rate = parse(&k, &val()),
            "--lat-file" => a.lat_file = Some(PathBuf::from(val())),
            _ => usage(&format!("unknown argument {k}")),
        }
    }
    if a.node == 0 || a.stop_file.as_os_str().is_empty() || !matches!(a.transport.as_str(), "udp" | "corosync" | "raw")
    {
        usage("--transport, --node and --stop-file are required");
    }
    if a.size < 24 || a.size > cohort_udp::MAX_MESSAGE {
        usage("--size must be 24..=4096");
    }
    a
}

fn connect(a: &Args) -> Box<dyn Bus> {
    if a.transport == "raw" {
        return Box::new(RawBus::new(a));
    }
    if a.transport == "corosync" {
        let opts = Options {
            // Busy is reported at once: the client dispatches and retries.
            retry_limit: Duration::ZERO,
            ..Options::default()
        };
        let c = Corosync::connect_with(&a.cpg_group, opts).unwrap_or_else(|e| die(format!("corosync connect: {e}")));
        return Box::new(CpgBus(c));
    }
    let key = load_key(&a.key).unwrap_or_else(|e| die(e.to_string()));
    let m = MulticastConfig { group: a.group, interface: a.iface, ..MulticastConfig::default() };
    let nodes = a.nodes.iter().map(|&n| NodeId(n)).collect();
    let u = Udp::new(Config::new(NodeId(a.node), nodes, key, Net::Multicast(m)))
        .unwrap_or_else(|e| die(format!("udp setup: {e}")));
    Box::new(UdpBus(u))
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COHORT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    let a = parse_args();
    let mut bus = connect(&a);
    let fds = bus.fds();
    let start = Instant::now();
    let mut ready = false;
    let mut members = 0usize;
    let mut ring_members = 0usize;
    let sender = a.throughput && a.node >= a.first_sender && a.node < a.first_sender + a.senders;
    let expect = if a.throughput { a.count * u64::from(a.senders) } else { 0 };
    let mut send_at: Option<Instant> = None;
    let mut sent = 0u64;
    let mut delivered = 0u64;
    let mut bytes = 0u64;
    let (mut first, mut last) = (0f64, 0f64);
    let mut done = false;
    let mut payload = vec![b'.'; a.size];
    payload[..2].copy_from_slice(b"BM");
    // [2..10] sequence, [10..18] send time (f64 ms), [18..22] sender node.
    payload[18..22].copy_from_slice(&a.node.to_le_bytes());
    let mut lat: Vec<(u32, u64, f64)> = Vec::new();
    let mut last_stop_check = Instant::now();
    let mut last_rx = Instant::now();
    loop {
        while let Some(ev) = bus.next_event() {
            match ev {
                Ev::Ring(id, m) => {
                    ring_members = m.len();
                    if a.transport == "raw" {
                        members = m.len();
                    }
                    let l: Vec<String> = m.iter().map(|n| n.0.to_string()).collect();
                    out(format!("ring {:.3} {id} {}", mono_ms(), l.join(",")));
                }
                Ev::Members(n) => members = n,
                Ev::Deliver(p) => {
                    if p.starts_with(b"BM") {
                        let t = mono_ms();
                        if a.lat_file.is_some() && p.len() >= 22 {
                            let seq = u64::from_le_bytes(p[2..10].try_into().unwrap_or_default());
                            let at = f64::from_le_bytes(p[10..18].try_into().unwrap_or_default());
                            let from = u32::from_le_bytes(p[18..22].try_into().unwrap_or_default());
                            lat.push((from, seq, t - at));
                        }
                        if delivered == 0 {
                            first = t;
                        }
                        last = t;
                        last_rx = Instant::now();
                        delivered += 1;
                        bytes += p.len() as u64;
                    }
                }
                Ev::Other => {}
            }
        }
        if !ready && members >= a.members && ring_members >= a.members {
            ready = true;
            out(format!("ready {:.3} {members}", mono_ms()));
            // Give the other nodes time to see the full view too.
            send_at = Some(Instant::now() + Duration::from_millis(500));
        }
        if sender && sent < a.count && send_at.is_some_and(|t| Instant::now() >= t) {
            if sent == 0 {
                out(format!("send_start {:.3}", mono_ms()));
            }
            // A burst, then dispatch: deliveries are what frees room.
            // Paced: only what is due by now (a fixed offered load).
            let due = match send_at {
                Some(t0) if a.rate > 0.0 => {
                    (Instant::now().saturating_duration_since(t0).as_secs_f64() * a.rate) as u64 + 1
                }
                _ => u64::MAX,
            };
            for _ in 0..64 {
                if sent >= a.count || sent >= due {
                    break;
                }
                let i = sent.to_le_bytes();
                payload[2..10].copy_from_slice(&i);
                payload[10..18].copy_from_slice(&mono_ms().to_le_bytes());
                match bus.try_send(&payload) {
                    Ok(true) => sent += 1,
                    Ok(false) => break,
                    Err(e) => die(format!("send: {e}")),
                }
            }
            if sent == a.count {
                out(format!("sent {:.3} {sent}", mono_ms()));
            }
        }
        if a.throughput && !done && delivered >= expect {
            done = true;
            out(format!("done {:.3} {delivered} {bytes} {first:.3} {last:.3}", mono_ms()));
        }
        // Raw multicast loses what a receiver's buffer cannot take: once
        // nothing came for a second, what arrived is the count.
        if a.transport == "raw"
            && a.throughput
            && !done
            && delivered > 0
            && (!sender || sent >= a.count)
            && last_rx.elapsed() >= Duration::from_secs(1)
        {
            done = true;
            out(format!("done {:.3} {delivered} {bytes} {first:.3} {last:.3} lossy", mono_ms()));
        }
        if last_stop_check.elapsed() >= Duration::from_millis(50) {
            last_stop_check = Instant::now();
            if a.stop_file.exists() {
                out(format!("stats {:.3} {}", mono_ms(), bus.stats()));
                let (u, s) = cpu_ms();
                out(format!("cpu {u:.1} {s:.1}"));
                if let Some(path) = &a.lat_file {
                    let path = PathBuf::from(format!("{}.{}", path.display(), a.node));
                    let path = &path;
                    let text: String = lat.iter().map(|(f, q, l)| format!("{f} {q} {l:.3}\n")).collect();
                    if let Err(e) = std::fs::write(path, text) {
                        die(format!("{}: {e}", path.display()));
                    }
                }
                break;
            }
            if start.elapsed() >= a.limit {
                if a.throughput && !done {
                    out(format!("done {:.3} {delivered} {bytes} {first:.3} {last:.3} incomplete", mono_ms()));
                }
                break;
            }
        }
        let now = Instant::now();
        let busy = sender && sent < a.count && send_at.is_some();
        let mut wait = if busy { Duration::from_micros(200) } else { Duration::from_millis(50) };
        if let Some(t) = bus.wake() {
            wait = wait.min(t.saturating_duration_since(now));
        }
        if let Err(e) = cohort_udp::wait_readable(&fds, wait) {
            die(e.to_string());
        }
        bus.dispatch();
    }
}
