//! A loopback "switch" for `cohortd demo --transport udp`: the daemons' UDP
//! transports (`cohort-udp`, unicast mode, unmodified) talk to each other
//! through it, so the demo can cut the network and power nodes off without
//! network namespaces or root.
//!
//! For every ordered pair of nodes (i, j) the switch binds one socket
//! `port[i][j]` on 127.0.0.1: it is *node i's address in node j's
//! configuration* (`[udp.peers]` of node j). Node j's transport itself binds
//! an ephemeral port ([`Switch::attach`] records it). A datagram that node j
//! sends to node i arrives at `port[i][j]`; the switch forwards it to node
//! i's transport from `port[j][i]`, which is exactly node j's address in node
//! i's configuration, so node i's transport sees the datagram come from
//! where it expects node j (`cohort-udp` checks the sender's configured
//! address against the node id in the datagram).
//!
//! Cutting the network is a filter in this forwarding: every node has a
//! label, and a datagram is forwarded only between attached nodes with the
//! same label ([`Switch::set_label`]); otherwise it is dropped (counted).
//! Powering a node off is [`Switch::detach`]: nothing reaches it and
//! nothing it still sends (the transport's LEAVE announcements on drop) is
//! forwarded, so the others detect a failure, not a clean leave.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use cohort_core::NodeId;

pub struct Switch {
    n: u32,
    /// `port[i][j]`: node i as node j's configuration names it (`None` on the diagonal).
    port: Vec<Vec<Option<UdpSocket>>>,
    /// Where node i's transport is bound; `None`: powered off / not running.
    real: Vec<Option<SocketAddr>>,
    label: Vec<u32>,
    buf: Vec<u8>,
    /// Datagrams forwarded.
    pub forwarded: u64,
    /// Datagrams dropped (cut, powered off, unknown sender).
    pub dropped: u64,
}

impl Switch {
    /// Nodes `1..=n`, all in one partition, none attached.
    pub fn new(n: u32) -> io::Result<Switch> {
        let k = n as usize + 1;
        let bind = || -> io::Result<UdpSocket> {
            let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
            s.set_nonblocking(true)?;
            Ok(s)
        };
        let mut port: Vec<Vec<Option<UdpSocket>>> = Vec::with_capacity(k);
        for i in 0..k {
            let row = (0..k).map(|j| if i == 0 || j == 0 || i == j { Ok(None) } else { bind().map(Some) });
            port.push(row.collect::<io::Result<_>>()?);
        }
        Ok(Switch { n, port, real: vec![None; k], label: vec![0; k], buf: vec![0u8; 65536], forwarded: 0, dropped: 0 })
    }

    /// The `[udp.peers]` of node `j`: every other node's address as `j` sees it.
    pub fn peers_for(&self, j: u32) -> BTreeMap<NodeId, SocketAddr> {
        let mut m = BTreeMap::new();
        for i in 1..=self.n {
            if let Some(s) = &self.port[i as usize][j as usize] {
                if let Ok(a) = s.local_addr() {
                    m.insert(NodeId(i), a);
                }
            }
        }
        m
    }

    /// Node `i`'s transport runs at `addr`.
    pub fn attach(&mut self, i: u32, addr: SocketAddr) {
        self.real[i as usize] = Some(addr);
    }

    /// Node `i` is gone (power off, process killed): nothing to or from it.
    pub fn detach(&mut self, i: u32) {
        self.real[i as usize] = None;
    }

    /// Same label, same partition (takes effect for the next datagram).
    pub fn set_label(&mut self, i: u32, label: u32) {
        self.label[i as usize] = label;
    }

    /// Can `a` and `b` talk?
    pub fn connected(&self, a: u32, b: u32) -> bool {
        let (a, b) = (a as usize, b as usize);
        self.real[a].is_some() && self.real[b].is_some() && self.label[a] == self.label[b]
    }

    /// The switch's sockets, to poll for readability.
    pub fn fds(&self) -> Vec<RawFd> {
        self.port.iter().flatten().flatten().map(|s| s.as_raw_fd()).collect()
    }

    /// Forward (or drop) every datagram waiting. Returns how many were read.
    pub fn pump(&mut self) -> usize {
        let mut read = 0;
        let n = self.n as usize;
        for i in 1..=n {
            for j in 1..=n {
                if i == j {
                    continue;
                }
                while let Some(sock) = &self.port[i][j] {
                    let (len, src) = match sock.recv_from(&mut self.buf) {
                        Ok(x) => x,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break, // WouldBlock (or an ICMP error): done with this socket
                    };
                    read += 1;
                    // From node j (to node i)? Anything else is a dead or unknown sender.
                    let to = match self.real[i] {
                        Some(to) if self.real[j] == Some(src) && self.connected(i as u32, j as u32) => to,
                        _ => {
                            self.dropped += 1;
                            continue;
                        }
                    };
                    let Some(out) = &self.port[j][i] else { continue };
                    match out.send_to(&self.buf[..len], to) {
                        Ok(_) => self.forwarded += 1,
                        Err(_) => self.dropped += 1,
                    }
                }
            }
        }
        read
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn node() -> UdpSocket {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        s.set_nonblocking(true).unwrap();
        s
    }

    /// Pump until `sock` has a datagram (or give up).
    fn recv(sw: &mut Switch, sock: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = [0u8; 64];
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            sw.pump();
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                return Some((buf[..n].to_vec(), from));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }

    #[test]
    fn forwards_with_the_configured_source_and_filters() {
        let mut sw = Switch::new(3).unwrap();
        let (a, b) = (node(), node());
        sw.attach(1, a.local_addr().unwrap());
        sw.attach(2, b.local_addr().unwrap());
        let p1 = sw.peers_for(1);
        let p2 = sw.peers_for(2);
        assert_eq!(p1.keys().map(|n| n.0).collect::<Vec<_>>(), vec![2, 3]);
        // node 1 sends to "node 2" (as node 1's config names it)
        a.send_to(b"hello", p1[&NodeId(2)]).unwrap();
        let (data, from) = recv(&mut sw, &b).expect("forwarded");
        assert_eq!(data, b"hello");
        assert_eq!(from, p2[&NodeId(1)], "arrives from node 1's address in node 2's config");
        // cut: dropped
        sw.set_label(2, 1);
        a.send_to(b"lost", p1[&NodeId(2)]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        sw.pump();
        let mut buf = [0u8; 16];
        assert!(b.recv_from(&mut buf).is_err());
        assert_eq!(sw.dropped, 1);
        // healed
        sw.set_label(2, 0);
        b.send_to(b"back", p2[&NodeId(1)]).unwrap();
        assert_eq!(recv(&mut sw, &a).unwrap().0, b"back");
        // a detached sender is not forwarded; an unknown sender neither
        sw.detach(2);
        b.send_to(b"ghost", p2[&NodeId(1)]).unwrap();
        node().send_to(b"stranger", p2[&NodeId(1)]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        sw.pump();
        assert!(a.recv_from(&mut buf).is_err());
        assert_eq!(sw.forwarded, 2);
        assert_eq!(sw.dropped, 3);
    }
}
