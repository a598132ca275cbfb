//! cohort-udp-probe: join a cohort UDP group, print every event as one JSON
//! line on stdout, optionally multicast messages, print the counters and
//! exit after a time limit (or when stdin closes, with `--control-stdin`).
//!
//! ```text
//! cohort-udp-probe --node N --nodes 1,2,3 --key FILE
//!     [--group ADDR:PORT] [--iface ADDR] [--bind ADDR:PORT] [--ttl N] [--no-loop]   (multicast, default)
//!     [--peer ID=ADDR:PORT]...                                                       (unicast mode)
//!     [--duration SECS] [--send N] [--sizes B,B,..] [--send-when-members M] [--gap-us US]
//!     [--heartbeat-ms MS] [--fail-ms MS] [--control-stdin]
//! ```
//!
//! `--send N` multicasts N messages once a view has at least
//! `--send-when-members` members; message `i` has the size
//! `sizes[i % len]` and starts with the tag `n<node>-<i:06>|`, followed by
//! a pattern derived from node and index, so every receiver checks it
//! (`"ok"`). Lines (all with `mono_ms`, CLOCK_MONOTONIC in ms):
//! `{"ev":"started","node":1,"local":"127.0.0.1:41234",...}`,
//! `{"ev":"ring","ring":..,"members":[1,2,3]}`,
//! `{"ev":"confchg","members":[..],"joined":[[3,"NodeUp"]],"left":[]}`,
//! `{"ev":"quorum","ring":..,"quorate":true,"members":[..]}`,
//! `{"ev":"deliver","from":2,"tag":"n2-000007","len":1400,"ok":true}`,
//! `{"ev":"sent","count":N}`, `{"ev":"stats",<every counter>}`,
//! `{"ev":"exit","reason":..}`.
//!
//! Exit codes: 0 done, 1 usage, 3 setup failed. Logs go to stderr
//! (`COHORT_LOG=debug`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::exit;
use std::time::{Duration, Instant};

use cohort_core::gcs::MemberReason;
use cohort_core::ids::NodeId;
use cohort_udp::{load_key, Config, MulticastConfig, Net, Stats, Udp, UdpEvent, UnicastConfig};

struct Args {
    node: u32,
    nodes: Vec<u32>,
    key: PathBuf,
    mcast: MulticastConfig,
    peers: BTreeMap<NodeId, SocketAddr>,
    duration: Duration,
    send: u64,
    sizes: Vec<usize>,
    send_when_members: usize,
    gap: Duration,
    heartbeat_ms: Option<u64>,
    fail_ms: Option<u64>,
    control_stdin: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!("cohort-udp-probe: {msg}");
    eprintln!(
        "usage: cohort-udp-probe --node N --nodes 1,2,3 --key FILE [--group ADDR:PORT] [--iface ADDR] \
         [--bind ADDR:PORT] [--ttl N] [--no-loop] [--peer ID=ADDR:PORT]... [--duration SECS] [--send N] \
         [--sizes B,B,..] [--send-when-members M] [--gap-us US] [--heartbeat-ms MS] [--fail-ms MS] [--control-stdin]"
    );
    exit(1)
}

fn parse<T: std::str::FromStr>(k: &str, v: &str) -> T {
    v.parse().unwrap_or_else(|_| usage(&format!("bad value for {k}: {v:?}")))
}

fn parse_args() -> Args {
    let mut a = Args {
        node: 0,
        nodes: Vec::new(),
        key: PathBuf::new(),
        mcast: MulticastConfig::default(),
        peers: BTreeMap::new(),
        duration: Duration::from_secs(30),
        send: 0,
        sizes: vec![64],
        send_when_members: 0,
        gap: Duration::ZERO,
        heartbeat_ms: None,
        fail_ms: None,
        control_stdin: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage(&format!("{k} needs a value")));
        match k.as_str() {
            "--node" => a.node = parse(&k, &val()),
            "--nodes" => a.nodes = val().split(',').map(|s| parse(&k, s)).collect(),
            "--key" => a.key = PathBuf::from(val()),
            "--group" => a.mcast.group = parse::<SocketAddrV4>(&k, &val()),
            "--iface" => a.mcast.interface = parse::<Ipv4Addr>(&k, &val()),
            "--bind" => a.mcast.bind = Some(parse(&k, &val())),
            "--ttl" => a.mcast.ttl = parse(&k, &val()),
            "--no-loop" => a.mcast.loopback = false,
            "--peer" => {
                let v = val();
                let (id, addr) = v.split_once('=').unwrap_or_else(|| usage("--peer wants ID=ADDR:PORT"));
                a.peers.insert(NodeId(parse(&k, id)), parse(&k, addr));
            }
            "--duration" => a.duration = Duration::from_secs_f64(parse(&k, &val())),
            "--send" => a.send = parse(&k, &val()),
            "--sizes" | "--size" => a.sizes = val().split(',').map(|s| parse(&k, s)).collect(),
            "--send-when-members" => a.send_when_members = parse(&k, &val()),
            "--gap-us" => a.gap = Duration::from_micros(parse(&k, &val())),
            "--heartbeat-ms" => a.heartbeat_ms = Some(parse(&k, &val())),
            "--fail-ms" => a.fail_ms = Some(parse(&k, &val())),
            "--control-stdin" => a.control_stdin = true,
            "-h" | "--help" => usage("help"),
            _ => usage(&format!("unknown argument {k}")),
        }
    }
    if a.node == 0 || a.nodes.is_empty() || a.key.as_os_str().is_empty() {
        usage("--node, --nodes and --key are required");
    }
    if a.sizes.is_empty() || a.sizes.iter().any(|&s| s > cohort_udp::MAX_MESSAGE) {
        usage("sizes must be 1..=4096 bytes");
    }
    a
}

fn mono_ms() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

fn emit(body: &str) {
    let line = format!("{{{body},\"mono_ms\":{:.3}}}\n", mono_ms());
    let mut out = std::io::stdout().lock();
    if out.write_all(line.as_bytes()).and_then(|_| out.flush()).is_err() {
        exit(0);
    }
}

fn ids<'a>(l: impl IntoIterator<Item = &'a NodeId>) -> String {
    let v: Vec<String> = l.into_iter().map(|n| n.0.to_string()).collect();
    format!("[{}]", v.join(","))
}

fn reasons(l: &[MemberReason]) -> String {
    let v: Vec<String> = l.iter().map(|m| format!("[{},\"{:?}\"]", m.node.0, m.reason)).collect();
    format!("[{}]", v.join(","))
}

/// Message `i` of `node`, `len` bytes: the tag, then a checkable pattern.
fn payload(node: u32, i: u64, len: usize) -> Vec<u8> {
    let mut p = format!("n{node}-{i:06}|").into_bytes();
    let start = p.len();
    p.extend((start..len.max(start)).map(|j| b'a' + ((j as u64 * 7 + i * 3 + u64::from(node)) % 26) as u8));
    p.truncate(len.max(1));
    p
}

/// The tag of a payload and whether the rest matches the pattern.
fn check(from: u32, p: &[u8]) -> (String, bool) {
    let end = p.iter().position(|&b| b == b'|').unwrap_or(p.len());
    let tag = String::from_utf8_lossy(&p[..end]).into_owned();
    let idx = tag.strip_prefix(&format!("n{from}-")).and_then(|s| s.parse::<u64>().ok());
    let ok = idx.is_some_and(|i| payload(from, i, p.len()) == p);
    (tag, ok)
}

fn show(ev: &UdpEvent, members: &mut usize) {
    let body = match ev {
        UdpEvent::Ring(r) => {
            *members = r.members.len();
            format!("\"ev\":\"ring\",\"ring\":{},\"members\":{}", r.ring, ids(&r.members))
        }
        UdpEvent::Confchg(c) => {
            *members = c.members.len();
            format!(
                "\"ev\":\"confchg\",\"members\":{},\"joined\":{},\"left\":{}",
                ids(&c.members),
                reasons(&c.joined),
                reasons(&c.left)
            )
        }
        UdpEvent::Quorum(q) => {
            format!("\"ev\":\"quorum\",\"ring\":{},\"quorate\":{},\"members\":{}", q.ring, q.quorate, ids(&q.members))
        }
        UdpEvent::Deliver { from, payload } => {
            let (tag, ok) = check(from.0, payload);
            format!(
                "\"ev\":\"deliver\",\"from\":{},\"tag\":\"{}\",\"len\":{},\"ok\":{ok}",
                from.0,
                tag.escape_default(),
                payload.len()
            )
        }
    };
    emit(&body);
}

fn stats_line(s: &Stats) -> String {
    let v = &s.vs;
    format!(
        "\"ev\":\"stats\",\"forged\":{},\"replayed\":{},\"malformed\":{},\"oversize\":{},\"misdirected\":{},\
         \"stale_incarnation\":{},\"unknown_sender\":{},\"addr_mismatch\":{},\"loopback\":{},\"out_of_range\":{},\"datagrams_in\":{},\
         \"datagrams_out\":{},\"retransmits\":{},\"data_retransmits\":{},\"naks_sent\":{},\"flush_repairs\":{},\
         \"duplicates\":{},\"delivered\":{},\"views_installed\":{},\"backpressure\":{},\"frag_deferred\":{},\
         \"frag_dropped_view_change\":{},\"frag_discarded\":{},\"frag_own_lost\":{},\"tx_datagrams\":{},\
         \"tx_errors\":{},\"rx_datagrams\":{},\"rx_rejected\":{},\"rx_unknown_source\":{},\"unicast_via_group\":{},\"addresses_learned\":{},\
         \"queued\":{}",
        v.forged,
        v.replayed,
        v.malformed,
        v.oversize,
        v.misdirected,
        v.stale_incarnation,
        v.unknown_sender,
        v.addr_mismatch,
        v.loopback,
        v.out_of_range,
        v.datagrams_in,
        v.datagrams_out,
        v.retransmits,
        v.data_retransmits,
        v.naks_sent,
        v.flush_repairs,
        v.duplicates,
        v.delivered,
        v.views_installed,
        v.backpressure,
        v.frag_deferred,
        v.frag_dropped_view_change,
        v.frag_discarded,
        v.frag_own_lost,
        s.tx_datagrams,
        s.tx_errors,
        s.rx_datagrams,
        s.rx_rejected,
        s.rx_unknown_source,
        s.unicast_via_group,
        s.addresses_learned,
        s.queued
    )
}

/// Is stdin at EOF (or has it a line)? Nonblocking.
fn stdin_closed() -> bool {
    let mut p = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut p, 1, 0) } <= 0 {
        return false;
    }
    let mut b = [0u8; 64];
    // SAFETY: reading into a valid buffer.
    let n = unsafe { libc::read(0, b.as_mut_ptr().cast(), b.len()) };
    n <= 0 || b[..n as usize].starts_with(b"quit")
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COHORT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let a = parse_args();
    let key = load_key(&a.key).unwrap_or_else(|e| {
        emit(&format!("\"ev\":\"error\",\"stage\":\"key\",\"msg\":\"{}\"", e.to_string().escape_default()));
        exit(3)
    });
    let net = if a.peers.is_empty() {
        Net::Multicast(a.mcast.clone())
    } else {
        Net::Unicast(UnicastConfig { peers: a.peers.clone(), bind: None })
    };
    let mut cfg = Config::new(NodeId(a.node), a.nodes.iter().map(|&n| NodeId(n)).collect(), key, net);
    if let Some(h) = a.heartbeat_ms {
        cfg.heartbeat_ms = h;
    }
    if let Some(f) = a.fail_ms {
        cfg.fail_timeout_ms = f;
    }
    let mut udp = Udp::new(cfg).unwrap_or_else(|e| {
        emit(&format!("\"ev\":\"error\",\"stage\":\"setup\",\"msg\":\"{}\"", e.to_string().escape_default()));
        exit(3)
    });
    emit(&format!(
        "\"ev\":\"started\",\"node\":{},\"local\":\"{}\",\"mode\":\"{}\"",
        a.node,
        udp.local_addr().map(|s| s.to_string()).unwrap_or_default(),
        if a.peers.is_empty() { "multicast" } else { "unicast" }
    ));
    let start = Instant::now();
    let deadline = start + a.duration;
    let mut members = 0usize;
    let mut sent = 0u64;
    let mut sending = false;
    let mut next_send = Instant::now();
    let mut fds: Vec<i32> = udp.fds().to_vec();
    if a.control_stdin {
        fds.push(0);
    }
    let reason = loop {
        while let Some(ev) = udp.next_event() {
            show(&ev, &mut members);
        }
        let now = Instant::now();
        if now >= deadline {
            break "time limit";
        }
        if a.control_stdin && stdin_closed() {
            break "stdin closed";
        }
        if !sending && sent < a.send && members >= a.send_when_members.max(1) {
            sending = true;
        }
        while sending && sent < a.send && udp.send_room() > 0 && Instant::now() >= next_send {
            let size = a.sizes[(sent % a.sizes.len() as u64) as usize];
            if udp.send(&payload(a.node, sent, size)).is_err() {
                break;
            }
            sent += 1;
            if sent == a.send {
                emit(&format!("\"ev\":\"sent\",\"count\":{sent}"));
            }
            if !a.gap.is_zero() {
                next_send = Instant::now() + a.gap;
                break;
            }
        }
        let mut wake = udp.next_timeout().unwrap_or(deadline).min(deadline);
        if sending && sent < a.send {
            wake = wake.min(if a.gap.is_zero() { now + Duration::from_millis(5) } else { next_send });
        }
        if a.control_stdin {
            wake = wake.min(now + Duration::from_millis(100));
        }
        if let Err(e) = cohort_udp::wait_readable(&fds, wake.saturating_duration_since(Instant::now())) {
            emit(&format!("\"ev\":\"error\",\"stage\":\"poll\",\"msg\":\"{}\"", e.to_string().escape_default()));
            exit(3);
        }
        udp.dispatch();
    };
    udp.leave();
    let end = Instant::now() + Duration::from_millis(300);
    while let Some(t) = udp.next_timeout() {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let _ = cohort_udp::wait_readable(udp.fds(), t.min(end).saturating_duration_since(now));
        udp.dispatch();
        while let Some(ev) = udp.next_event() {
            show(&ev, &mut members);
        }
    }
    emit(&stats_line(&udp.stats()));
    emit(&format!("\"ev\":\"exit\",\"reason\":\"{reason}\""));
}
