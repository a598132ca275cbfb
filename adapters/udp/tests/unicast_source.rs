//! Unicast mode: a datagram whose source address is not one of the
//! configured peers is dropped before the protocol (no AEAD work, no state)
//! and counted in `Stats::rx_unknown_source`. Plain sockets on 127.0.0.1;
//! no root, no namespaces; about 1 s.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use cohort_core::ids::NodeId;
use cohort_udp::{Config, Net, Udp, UnicastConfig};

const KEY: [u8; 32] = [0x5a; 32];

fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let s: Vec<UdpSocket> = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    s.iter().map(|s| s.local_addr().unwrap()).collect()
}

/// Node `me` of {1, 2}: `peers` as configured, bound to `bind`.
fn node(me: u32, peers: [(u32, SocketAddr); 2], bind: SocketAddr) -> Udp {
    let peers: BTreeMap<NodeId, SocketAddr> = peers.iter().map(|(n, a)| (NodeId(*n), *a)).collect();
    let mut c = Config::new(
        NodeId(me),
        vec![NodeId(1), NodeId(2)],
        KEY,
        Net::Unicast(UnicastConfig { peers, bind: Some(bind) }),
    );
    c.heartbeat_ms = 20;
    c.fail_timeout_ms = 200;
    Udp::new(c).unwrap()
}

fn run(nodes: &mut [&mut Udp], for_: Duration, until: impl Fn(&[&mut Udp]) -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < for_ {
        for u in nodes.iter_mut() {
            u.dispatch();
            while u.next_event().is_some() {}
        }
        if until(nodes) {
            return true;
        }
        thread::sleep(Duration::from_millis(2));
    }
    false
}

#[test]
fn unicast_drops_datagrams_from_unconfigured_sources_before_the_protocol() {
    let a = free_addrs(3);
    let (a1, a2, elsewhere) = (a[0], a[1], a[2]);
    let mut n1 = node(1, [(1, a1), (2, a2)], a1);
    // A key holder claiming to be node 2, sending from an address node 1
    // does not have for node 2 (it knows node 1's address).
    let mut impostor = node(2, [(1, a1), (2, elsewhere)], elsewhere);
    run(&mut [&mut n1, &mut impostor], Duration::from_millis(600), |_| false);
    let s = n1.stats();
    assert!(s.rx_datagrams > 5, "node 1 read nothing from the impostor: {s:?}");
    assert_eq!(s.rx_unknown_source, s.rx_datagrams, "every datagram from {elsewhere} is dropped and counted: {s:?}");
    assert_eq!(s.vs.datagrams_in, 0, "the protocol accepted a datagram from an unconfigured source: {s:?}");
    assert_eq!(s.vs.forged + s.vs.addr_mismatch + s.vs.replayed, 0, "dropped before the protocol: {s:?}");
    assert_eq!(s.rx_rejected, 0, "not rejected by the protocol: dropped before it: {s:?}");
    assert_eq!(n1.view().members.len(), 1);
    drop(impostor);

    // Control: node 2 at its configured address is accepted.
    let mut n2 = node(2, [(1, a1), (2, a2)], a2);
    let formed =
        run(&mut [&mut n1, &mut n2], Duration::from_secs(5), |n| n.iter().all(|u| u.view().members.len() == 2));
    assert!(formed, "nodes 1 and 2 at their configured addresses did not form a view");
    assert!(n1.stats().vs.datagrams_in > 0);
}
