//! Issue 15, "hostile peer": a key holder floods a running three-node
//! cluster with every kind of datagram the protocol must drop, as fast as
//! the nodes read them, while the nodes exchange messages:
//!
//! * oversized datagrams (larger than `MAX_DATAGRAM`);
//! * out-of-range frames: authentic (sealed with the cluster key) frames of
//!   every kind that names a view, from node 4 (configured, never running,
//!   sent from node 4's configured address), naming view seqs near
//!   `u64::MAX`, the old `u32::MAX` seq, and just past the jump bound
//!   (`MAX_VIEW_JUMP`);
//! * replays: honest datagrams the cluster sent to node 4's address, sent
//!   again to the other nodes from a raw socket with the original sender's
//!   source address (an on-path replay);
//! * impersonation of a member from node 4's address.
//!
//! Checked: no view change (every node keeps the view it had when the
//! flood started), every honest message is delivered by every node, in one
//! order, each sender's in its order; every hostile datagram a node read is
//! dropped and counted in the class it belongs to (exact counts per node).
//!
//! The key holder never has more than `WINDOW` unread datagrams queued at a
//! node, so the kernel never drops a datagram for lack of buffer room (that
//! would be flooding the network, which any attacker can do, with or
//! without the key, and which looks like a partition) and the counts are
//! exact. Within that it sends as fast as it can.
//!
//! Plain sockets on 127.0.0.1 in unicast mode plus a raw socket for the
//! replays: needs root (CAP_NET_RAW); it fails, never skips, without it.
//! Duration: `COHORT_HOSTILE_SECS` (default 5 s in `cargo test`; the issue's
//! 30 s run: `COHORT_HOSTILE_SECS=30 cargo test -p cohort-udp --test
//! hostile_peer -- --nocapture`). The nodes run with a 1.5 s failure
//! timeout: the flood keeps a 2-core machine busy, and a node starved of CPU
//! would be failed for that, not for anything the key holder sent.
//!
//! Results (2026-12-04, 2 cores shared with other jobs, load average ~9,
//! debug build), two 30 s runs: 162,330 and 196,983 hostile datagrams
//! (5,407/s and 6,565/s), every one counted in its class at the node it
//! was sent to (e.g. node 1: 17,546 oversize, 16,460 out of range, 17,479
//! replayed, 16,466 impersonating); 9,008 and 8,999 honest messages, all
//! delivered by all three nodes in one order; no view change. A 5 s run:
//! 23,170 hostile datagrams, 1,496 messages.

use std::collections::{BTreeMap, VecDeque};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cohort_core::ids::{Incarnation, NodeId};
use cohort_udp::{Config, Net, Stats, Udp, UdpEvent, UnicastConfig};
use cohort_vs::craft::{self, Kind};
use cohort_vs::{MAX_DATAGRAM, MAX_VIEW_JUMP};

const KEY: [u8; 32] = [0x15; 32];
/// Unread hostile datagrams at most queued at one node.
const WINDOW: u64 = 48;
/// Failure timeout of the nodes (heartbeats every 50 ms, the default).
const FAIL_TIMEOUT_MS: u64 = 1500;
/// Honest messages: one per node every this many milliseconds.
const SEND_EVERY_MS: u64 = 10;

fn flood_secs() -> u64 {
    std::env::var("COHORT_HOSTILE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5)
}

fn free_addrs(n: usize) -> Vec<SocketAddrV4> {
    let s: Vec<UdpSocket> = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    s.iter()
        .map(|s| match s.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            a => panic!("not IPv4: {a}"),
        })
        .collect()
}

/// What the test and the node threads share.
#[derive(Default)]
struct Shared {
    /// Per node: the view id it is in while it holds a view of 1, 2, 3.
    view: [AtomicU64; 3],
    /// Honest messages may be sent.
    sending: AtomicBool,
    /// Per node: took its snapshot at the start of the flood.
    ready: [AtomicBool; 3],
    /// Per node: messages it sent (once `sending` is off, final).
    sent: [AtomicU64; 3],
    /// Per node: messages delivered.
    delivered: [AtomicU64; 3],
    /// Per node: datagrams the protocol rejected so far.
    rejected: [AtomicU64; 3],
    stop: AtomicBool,
    /// Per node: its result is taken (it no longer reads its socket).
    finished: [AtomicBool; 3],
    /// The nodes may go (dropping a `Udp` announces a clean leave, which
    /// must not reach a node still taking its result).
    release: AtomicBool,
}

struct NodeResult {
    /// Ring events after the flood started.
    /// (ms since the flood started, ring, members).
    rings_during: Vec<(u128, u64, Vec<u32>)>,
    /// (sender, message number) in delivery order, of the flood's messages.
    delivered: Vec<(u32, u64)>,
    view_at_start: u64,
    views_at_start: u64,
    stats_at_start: Stats,
    view_at_end: u64,
    stats: Stats,
}

fn honest_node(me: u32, addrs: Vec<SocketAddrV4>, shared: Arc<Shared>) -> NodeResult {
    let peers: BTreeMap<NodeId, SocketAddr> =
        addrs.iter().enumerate().map(|(i, a)| (NodeId(i as u32 + 1), SocketAddr::V4(*a))).collect();
    let mut cfg = Config::new(
        NodeId(me),
        (1..=4).map(NodeId).collect(),
        KEY,
        Net::Unicast(UnicastConfig { peers, bind: Some(SocketAddr::V4(addrs[me as usize - 1])) }),
    );
    // The flood keeps both cores of a CI machine busy (debug build, AEAD
    // on both sides): a node starved of CPU for the default 300 ms would be
    // failed, which is not what this test is about.
    cfg.fail_timeout_ms = FAIL_TIMEOUT_MS;
    let mut u = Udp::new(cfg).unwrap();
    let i = me as usize - 1;
    let mut started: Option<(u64, u64, Stats)> = None;
    let mut rings_during = Vec::new();
    let mut delivered = Vec::new();
    let mut next_send = Instant::now();
    let mut seq = 0u64;
    let mut t0 = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        if let Some(ev) = u.poll_event(Duration::from_millis(1)).unwrap() {
            match ev {
                UdpEvent::Ring(r) if started.is_some() => {
                    let ms = t0.elapsed().as_millis();
                    rings_during.push((ms, r.ring, r.members.iter().map(|n| n.0).collect()));
                }
                UdpEvent::Deliver { from, payload } if payload.len() == 9 && payload[0] == 0xF1 => {
                    let n = u64::from_le_bytes(payload[1..9].try_into().unwrap());
                    delivered.push((from.0, n));
                    shared.delivered[i].fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
        }
        let v = u.view();
        let full = v.members.iter().map(|n| n.0).collect::<Vec<_>>() == [1, 2, 3];
        shared.view[i].store(if full { v.id } else { 0 }, Ordering::SeqCst);
        shared.rejected[i].store(u.stats().rx_rejected, Ordering::SeqCst);
        if shared.sending.load(Ordering::SeqCst) {
            if started.is_none() {
                let st = u.stats();
                started = Some((v.id, st.vs.views_installed, st));
                shared.ready[i].store(true, Ordering::SeqCst);
                next_send = Instant::now();
                t0 = next_send;
            }
            if Instant::now() >= next_send {
                let mut m = vec![0xF1];
                m.extend_from_slice(&seq.to_le_bytes());
                u.send(&m).expect("the send queue takes one message every 10 ms");
                seq += 1;
                shared.sent[i].store(seq, Ordering::SeqCst);
                next_send += Duration::from_millis(SEND_EVERY_MS);
            }
        }
    }
    // Events still queued (a view installed in the last dispatch).
    while let Some(ev) = u.next_event() {
        if let UdpEvent::Ring(r) = ev {
            rings_during.push((t0.elapsed().as_millis(), r.ring, r.members.iter().map(|n| n.0).collect()));
        }
    }
    let (view_at_start, views_at_start, stats_at_start) = started.expect("the flood started");
    let result = NodeResult {
        rings_during,
        delivered,
        view_at_start,
        views_at_start,
        stats_at_start,
        view_at_end: u.view().id,
        stats: u.stats(),
    };
    shared.finished[i].store(true, Ordering::SeqCst);
    while !shared.release.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(1));
    }
    drop(u);
    result
}

/// Datagrams the key holder sent to one node, by the class it must be
/// dropped as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sent {
    oversize: u64,
    out_of_range: u64,
    replayed: u64,
    addr_mismatch: u64,
}

impl Sent {
    fn total(&self) -> u64 {
        self.oversize + self.out_of_range + self.replayed + self.addr_mismatch
    }
}

/// A UDP datagram from `src` to `dst` through a raw socket (any source).
fn raw_udp(raw: &socket2::Socket, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> bool {
    let total = 20 + 8 + payload.len();
    let mut p = Vec::with_capacity(total);
    // IPv4 header; the kernel fills in the checksum (IP_HDRINCL).
    p.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.ip().octets());
    p.extend_from_slice(&dst.ip().octets());
    // UDP header, no checksum (allowed over IPv4).
    let ulen = 8 + payload.len();
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&[(ulen >> 8) as u8, ulen as u8, 0, 0]);
    p.extend_from_slice(payload);
    raw.send_to(&p, &SocketAddr::V4(dst).into()).is_ok_and(|n| n == total)
}

/// The key holder: node 4's address and identity, plus a raw socket.
fn hostile(addrs: Vec<SocketAddrV4>, base_view: u64, secs: u64, shared: Arc<Shared>) -> ([Sent; 3], u64) {
    let sock = UdpSocket::bind(SocketAddr::V4(addrs[3])).expect("node 4's address");
    sock.set_nonblocking(true).unwrap();
    let raw = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::from(libc::SOCK_RAW),
        Some(libc::IPPROTO_RAW.into()),
    )
    .expect("a raw socket for the replays: this test needs root (CAP_NET_RAW)");
    let mut sent = [Sent::default(); 3];
    let mut captured: VecDeque<(Instant, SocketAddrV4, Vec<u8>)> = VecDeque::new();
    let mut buf = [0u8; 2048];
    let mut plain = [0u8; craft::MAX_FRAMES];
    let mut out = [0u8; MAX_DATAGRAM];
    // Past the bound of the view the flood starts in, with a margin (a view
    // change caused by something else must not bring them in range).
    let views = [u64::MAX, u64::MAX - 1, u64::from(u32::MAX) << 32 | 1, 1 << 63, base_view + MAX_VIEW_JUMP + 1000];
    let members = [NodeId(1), NodeId(2), NodeId(3), NodeId(4)];
    let (mut counter, mut step, mut captured_total) = (0u64, 0u64, 0u64);
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        // What the cluster sends to node 4: material for replays.
        while let Ok((n, SocketAddr::V4(src))) = sock.recv_from(&mut buf) {
            captured_total += 1;
            captured.push_back((Instant::now(), src, buf[..n].to_vec()));
            if captured.len() > 512 {
                captured.pop_front();
            }
        }
        let mut any = false;
        for v in 0..3usize {
            let read = shared.rejected[v].load(Ordering::SeqCst);
            if sent[v].total() >= read + WINDOW {
                continue;
            }
            any = true;
            step += 1;
            let to = addrs[v];
            match step % 4 {
                0 => {
                    let len = MAX_DATAGRAM + 1 + (step as usize % 600);
                    sock.send_to(&vec![0xC2; len], SocketAddr::V4(to)).unwrap();
                    sent[v].oversize += 1;
                }
                1 => {
                    let kind = Kind::ALL[(step / 4) as usize % Kind::ALL.len()];
                    let view = views[(step / 4 / 9) as usize % views.len()];
                    let n = craft::frame(kind, view, NodeId(4), Incarnation(44), &members, &mut plain).unwrap();
                    counter += 1;
                    let len = craft::seal(&KEY, NodeId(4), Incarnation(44), counter, 0, &plain[..n], &mut out).unwrap();
                    sock.send_to(&out[..len], SocketAddr::V4(to)).unwrap();
                    sent[v].out_of_range += 1;
                }
                2 => {
                    // An honest datagram of another node, at least 100 ms old
                    // (its original has arrived), from its sender's address.
                    let old = Instant::now() - Duration::from_millis(100);
                    let pick = captured.iter().rev().find(|(t, src, _)| *t <= old && *src != to);
                    if let Some((_, src, d)) = pick {
                        assert!(raw_udp(&raw, *src, to, d), "raw send failed");
                        sent[v].replayed += 1;
                    }
                }
                _ => {
                    // As another member, from node 4's address.
                    let as_ = NodeId((v as u32 + 1) % 3 + 1);
                    let n = craft::frame(Kind::Heartbeat, 3, as_, Incarnation(1), &members, &mut plain).unwrap();
                    let len = craft::seal(&KEY, as_, Incarnation(1), step, 0, &plain[..n], &mut out).unwrap();
                    sock.send_to(&out[..len], SocketAddr::V4(to)).unwrap();
                    sent[v].addr_mismatch += 1;
                }
            }
        }
        if !any {
            thread::sleep(Duration::from_micros(200));
        }
    }
    (sent, captured_total)
}

#[test]
fn hostile_key_holder_changes_no_view_loses_no_message_and_every_datagram_is_counted() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root (a raw socket for the replays)");
    let secs = flood_secs();
    let addrs = free_addrs(4);
    let shared = Arc::new(Shared::default());
    let nodes: Vec<_> = (1..=3u32)
        .map(|me| {
            let (a, s) = (addrs.clone(), shared.clone());
            thread::spawn(move || honest_node(me, a, s))
        })
        .collect();
    // A view of 1, 2, 3 at all three.
    let t = Instant::now();
    let base_view = loop {
        let v: Vec<u64> = shared.view.iter().map(|v| v.load(Ordering::SeqCst)).collect();
        if v[0] != 0 && v.iter().all(|x| *x == v[0]) {
            break v[0];
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no view of 1, 2, 3 within 10 s: {v:?}");
        thread::sleep(Duration::from_millis(10));
    };
    // Let it settle (a second view change could still be under way).
    thread::sleep(Duration::from_millis(500));
    let settled: Vec<u64> = shared.view.iter().map(|v| v.load(Ordering::SeqCst)).collect();
    assert!(settled.iter().all(|x| *x == base_view), "the view moved on: {base_view:#x} -> {settled:?}");

    shared.sending.store(true, Ordering::SeqCst);
    while !shared.ready.iter().all(|r| r.load(Ordering::SeqCst)) {
        thread::sleep(Duration::from_millis(1));
    }
    let flood = Instant::now();
    let h = {
        let (a, s) = (addrs.clone(), shared.clone());
        thread::spawn(move || hostile(a, base_view, secs, s))
    };
    let (sent, captured) = h.join().expect("the key holder thread");
    let flood_time = flood.elapsed();
    shared.sending.store(false, Ordering::SeqCst);
    // Every honest message delivered everywhere (and every hostile datagram
    // read), then stop.
    let t = Instant::now();
    loop {
        let total: u64 = shared.sent.iter().map(|s| s.load(Ordering::SeqCst)).sum();
        let done = shared.delivered.iter().all(|d| d.load(Ordering::SeqCst) == total)
            && (0..3).all(|v| shared.rejected[v].load(Ordering::SeqCst) >= sent[v].total());
        if done || t.elapsed() > Duration::from_secs(20) {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(200));
    shared.stop.store(true, Ordering::SeqCst);
    while !shared.finished.iter().all(|f| f.load(Ordering::SeqCst)) {
        thread::sleep(Duration::from_millis(1));
    }
    shared.release.store(true, Ordering::SeqCst);
    let results: Vec<NodeResult> = nodes.into_iter().map(|n| n.join().expect("node thread")).collect();

    let msgs: Vec<u64> = shared.sent.iter().map(|s| s.load(Ordering::SeqCst)).collect();
    let hostile_total: u64 = sent.iter().map(Sent::total).sum();
    println!(
        "flood of {:.1} s: {hostile_total} hostile datagrams ({:.0}/s; per node {:?}), {captured} honest datagrams \
         captured for replays; {} honest messages sent {msgs:?}",
        flood_time.as_secs_f64(),
        hostile_total as f64 / flood_time.as_secs_f64(),
        sent,
        msgs.iter().sum::<u64>(),
    );
    for (i, r) in results.iter().enumerate() {
        let (s, s0) = (&r.stats.vs, &r.stats_at_start.vs);
        println!(
            "node {}: view {:#x} -> {:#x}, rejected {} (oversize {}, out_of_range {}, replayed {}, addr_mismatch {}), \
             accepted {}, delivered {}",
            i + 1,
            r.view_at_start,
            r.view_at_end,
            r.stats.rx_rejected - r.stats_at_start.rx_rejected,
            s.oversize - s0.oversize,
            s.out_of_range - s0.out_of_range,
            s.replayed - s0.replayed,
            s.addr_mismatch - s0.addr_mismatch,
            s.datagrams_in - s0.datagrams_in,
            r.delivered.len()
        );
    }
    assert!(flood_time >= Duration::from_secs(secs), "the flood was cut short");
    for (i, r) in results.iter().enumerate() {
        let node = i + 1;
        // The view held.
        assert_eq!(r.view_at_start, base_view, "node {node} started the flood in another view");
        assert!(r.rings_during.is_empty(), "node {node}: view changes during the flood: {:?}", r.rings_during);
        assert_eq!(r.view_at_end, base_view, "node {node} left the view");
        assert_eq!(r.stats.vs.views_installed, r.views_at_start, "node {node} installed a view");
        // Every hostile datagram read, dropped and counted in its class.
        let (s, s0) = (&r.stats.vs, &r.stats_at_start.vs);
        let got = Sent {
            oversize: s.oversize - s0.oversize,
            out_of_range: s.out_of_range - s0.out_of_range,
            replayed: s.replayed - s0.replayed,
            addr_mismatch: s.addr_mismatch - s0.addr_mismatch,
        };
        assert_eq!(got, sent[i], "node {node}: hostile datagrams by class, counted vs sent");
        assert_eq!(r.stats.rx_rejected - r.stats_at_start.rx_rejected, sent[i].total(), "node {node}: {s:?}");
        assert_eq!(s.forged + s.malformed + s.stale_incarnation + s.unknown_sender + s.misdirected, 0, "{s:?}");
        assert_eq!(r.stats.rx_unknown_source, 0);
        assert!(sent[i].oversize > 0 && sent[i].out_of_range > 0 && sent[i].replayed > 0, "{:?}", sent[i]);
        // Every honest message, each sender's in order.
        for (sender, &n) in msgs.iter().enumerate() {
            let mine: Vec<u64> = r.delivered.iter().filter(|(f, _)| *f == sender as u32 + 1).map(|d| d.1).collect();
            assert_eq!(mine, (0..n).collect::<Vec<_>>(), "node {node}: messages of node {}", sender + 1);
        }
    }
    // One order.
    for r in &results[1..] {
        assert_eq!(r.delivered, results[0].delivered, "delivery order differs between nodes");
    }
}
