//! What a transport hands the engine: the core's `gcs` vocabulary plus
//! delivered messages. Corosync and UDP events convert 1:1; the demo's
//! simulated network ([`crate::demo::simnet`]) produces the same events.
//!
//! [`Link`] is the transport the daemon's main loop (and the UDP demo)
//! drives: poll its [`Link::fds`] for readability with a timeout bounded by
//! [`Link::next_timeout`], then [`Link::dispatch`] and drain
//! [`Link::next_event`]; [`Link::send`] multicasts in agreed order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use cohort_core::gcs::{Confchg, NodeList, QuorumEvent, QuorumMode, ReasonList, RingEvent};
use cohort_core::NodeId;
#[cfg(feature = "corosync")]
use cohort_corosync::{Corosync, CorosyncEvent};
use cohort_udp::{MulticastConfig, Net, UdpEvent, UnicastConfig};

use crate::config::{UdpConfig, UdpNet, UdpQuorum};

#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportEvent {
    Ring(RingEvent),
    Confchg(Confchg),
    Quorum(QuorumEvent),
    Deliver { from: NodeId, payload: Vec<u8> },
}

#[cfg(feature = "corosync")]
impl From<CorosyncEvent> for TransportEvent {
    fn from(e: CorosyncEvent) -> TransportEvent {
        match e {
            CorosyncEvent::Ring(r) => TransportEvent::Ring(r),
            CorosyncEvent::Confchg(c) => TransportEvent::Confchg(c),
            CorosyncEvent::Quorum(q) => TransportEvent::Quorum(q),
            CorosyncEvent::Deliver { from, payload, .. } => TransportEvent::Deliver { from, payload },
        }
    }
}

impl From<UdpEvent> for TransportEvent {
    fn from(e: UdpEvent) -> TransportEvent {
        match e {
            UdpEvent::Ring(r) => TransportEvent::Ring(r),
            UdpEvent::Confchg(c) => TransportEvent::Confchg(c),
            UdpEvent::Quorum(q) => TransportEvent::Quorum(q),
            UdpEvent::Deliver { from, payload } => TransportEvent::Deliver { from, payload },
        }
    }
}

/// The UDP transport.
pub struct UdpLink {
    pub udp: cohort_udp::Udp,
    /// A view with other nodes has been reported (see [`Link::found_peers`]).
    pub peers_seen: bool,
    /// `stale_incarnation` drops already reported, and when.
    pub stale_reported: u64,
    pub stale_reported_at: Option<Instant>,
}

/// A transport failure seen by [`Link::dispatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkError {
    pub text: String,
    /// The transport is gone (corosync stopped), as opposed to failing.
    pub disconnected: bool,
}

/// The transport of one daemon: corosync CPG + quorum, or cohort's UDP
/// transport (corosync only in a build with the `corosync` feature). Both
/// produce the same [`TransportEvent`]s. (One long-lived value per daemon:
/// the variants' size difference does not matter.)
#[allow(clippy::large_enum_variant)]
pub enum Link {
    /// Only in a build with the `corosync` feature.
    #[cfg(feature = "corosync")]
    Corosync(Corosync),
    Udp(Box<UdpLink>),
}

impl Link {
    /// A UDP link.
    pub fn udp(udp: cohort_udp::Udp) -> Link {
        Link::Udp(Box::new(UdpLink { udp, peers_seen: false, stale_reported: 0, stale_reported_at: None }))
    }

    /// The link view of `cohortctl status` (`None` over corosync).
    pub fn link_json(&self) -> Option<crate::api::LinkJson> {
        match self {
            #[cfg(feature = "corosync")]
            Link::Corosync(_) => None,
            Link::Udp(u) => {
                let now = std::time::Instant::now();
                let peers = u
                    .udp
                    .links(now)
                    .into_iter()
                    .map(|l| crate::api::PeerLinkJson {
                        node: l.node.0,
                        address: l.addr.map(|a| a.to_string()),
                        transport_incarnation: l.incarnation,
                        last_heard_ms: l.last_heard.map(|d| d.as_millis() as u64),
                        link: if l.up { "up" } else { "down" }.into(),
                        left: l.left,
                        suspected: l.suspected,
                    })
                    .collect();
                Some(crate::api::LinkJson {
                    view_members: u.udp.view().members.iter().map(|n| n.0).collect(),
                    view_age_ms: now.saturating_duration_since(u.udp.view_since()).as_millis() as u64,
                    peers,
                })
            }
        }
    }

    /// The UDP transport's counters (`None` over corosync).
    pub fn udp_stats(&self) -> Option<cohort_udp::Stats> {
        match self {
            #[cfg(feature = "corosync")]
            Link::Corosync(_) => None,
            Link::Udp(u) => Some(u.udp.stats()),
        }
    }

    /// `"corosync"` or `"udp"` (the `transport` of `status`).
    pub fn name(&self) -> &'static str {
        match self {
            #[cfg(feature = "corosync")]
            Link::Corosync(_) => "corosync",
            Link::Udp(_) => "udp",
        }
    }

    /// The fds to poll for readability.
    pub fn fds(&self) -> Vec<RawFd> {
        match self {
            #[cfg(feature = "corosync")]
            Link::Corosync(c) => c.fds().to_vec(),
            Link::Udp(u) => u.udp.fds().to_vec(),
        }
    }

    /// How long until the transport's own timers are due (UDP heartbeats,
    /// failure detection, retransmission); corosync: only while its send backlog waits on TRY_AGAIN.
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        match self {
            // the send backlog (TRY_AGAIN) is retried from this loop
            #[cfg(feature = "corosync")]
            Link::Corosync(c) => c.next_retry().map(|t| t.saturating_duration_since(now)),
            Link::Udp(u) => u.udp.next_timeout().map(|t| t.saturating_duration_since(now)),
        }
    }

    /// Events queued and not yet taken (poll must not sleep while > 0).
    pub fn pending(&self) -> usize {
        match self {
            #[cfg(feature = "corosync")]
            Link::Corosync(c) => c.pending(),
            Link::Udp(u) => u.udp.pending(),
        }
    }

    /// Run the transport after poll(2): `ready` is true when one of its fds
    /// was reported. Events are then taken with [`Link::next_event`].
    pub fn dispatch(&mut self, ready: bool, now: Instant) -> Result<(), LinkError> {
        match self {
            #[cfg(feature = "corosync")]
            Link::Corosync(c) => {
                if ready || c.pending() > 0 || c.send_backlog() > 0 {
                    c.dispatch().map_err(|e| LinkError { text: e.to_string(), disconnected: e.is_disconnected() })?;
                }
                Ok(())
            }
            Link::Udp(u) => {
                if ready {
                    u.udp.handle_readable(now);
                }
                u.udp.handle_timeout(now);
                // A node that lost its state directory comes back with an
                // older incarnation than the one known here: every datagram
                // of it is dropped, silently for the protocol. Say so (at
                // most every 30 s while it goes on).
                let stale = u.udp.stats().vs.stale_incarnation;
                let due = u.stale_reported_at.is_none_or(|t| now.saturating_duration_since(t).as_secs() >= 30);
                if stale > u.stale_reported && due {
                    tracing::warn!(
                        dropped = stale - u.stale_reported,
                        "udp: datagrams from a node with an OLDER incarnation than it had before were dropped: a \
                         node whose state_dir (incarnation file) was lost or restored from a backup cannot rejoin; \
                         give it back its incarnation file or a larger one"
                    );
                    u.stale_reported = stale;
                    u.stale_reported_at = Some(now);
                }
                Ok(())
            }
        }
    }

    pub fn next_event(&mut self) -> Option<TransportEvent> {
        match self {
            #[cfg(feature = "corosync")]
            Link::Corosync(c) => c.next_event().map(Into::into),
            Link::Udp(u) => {
                let e: TransportEvent = u.udp.next_event()?.into();
                if matches!(&e, TransportEvent::Ring(r) if r.members.len() > 1) {
                    u.peers_seen = true;
                }
                Some(e)
            }
        }
    }

    /// Has the transport put us in a view with other nodes yet? Corosync:
    /// always (the daemon joins the existing ring). UDP: a process starts
    /// alone in a boot view and merges with its peers a heartbeat or two
    /// later; see `daemon` for why requests wait for that.
    pub fn found_peers(&self) -> bool {
        match self {
            #[cfg(feature = "corosync")]
            Link::Corosync(_) => true,
            Link::Udp(u) => u.peers_seen,
        }
    }

    /// Multicast to the daemon group in agreed order.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        match self {
            #[cfg(feature = "corosync")]
            Link::Corosync(c) => c.send(bytes).map_err(|e| e.to_string()),
            // QueueFull means 4096 messages waited for the protocol's window:
            // the group has not made progress for a long time; like a lost
            // corosync connection, the daemon stops (blocking first).
            Link::Udp(u) => u.udp.send(bytes).map_err(|e| format!("udp send: {e}")),
        }
    }

    /// Leave the group cleanly before exiting. Corosync leaves on drop; the
    /// UDP transport announces its leave over a few heartbeat intervals
    /// (waits at most `max`), so the others see `Leave`, not a failure.
    pub fn leave(&mut self, max: Duration) {
        #[allow(irrefutable_let_patterns)] // without the `corosync` feature
        let Link::Udp(u) = self
        else {
            return;
        };
        let u = &mut u.udp;
        u.leave();
        let deadline = Instant::now() + max;
        while let Some(t) = u.next_timeout() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let _ = cohort_udp::wait_readable(u.fds(), t.min(deadline).saturating_duration_since(now));
            u.dispatch();
        }
    }
}

/// The `cohort-udp` configuration of node `me` from `[udp]`, with `nodes`
/// (the configured cluster), the cluster key and this start's persisted
/// incarnation (`incarnation::bump`): the VS incarnation is that value in
/// the high 32 bits and kernel randomness in the low 32, never the clock
/// ([`cohort_udp::incarnation`]).
pub fn udp_adapter_config(
    me: u32,
    nodes: &[u32],
    u: &UdpConfig,
    key: [u8; 32],
    persisted_inc: u64,
) -> Result<cohort_udp::Config, cohort_udp::Error> {
    let net = match &u.net {
        UdpNet::Multicast { group, interface, bind, ttl, loopback } => Net::Multicast(MulticastConfig {
            group: *group,
            interface: *interface,
            bind: *bind,
            ttl: *ttl,
            loopback: *loopback,
        }),
        UdpNet::Unicast { peers, bind } => {
            let peers: BTreeMap<NodeId, SocketAddr> = peers.iter().map(|(n, a)| (NodeId(*n), *a)).collect();
            Net::Unicast(UnicastConfig { peers, bind: *bind })
        }
    };
    let mut c = cohort_udp::Config::new(NodeId(me), nodes.iter().map(|n| NodeId(*n)).collect(), key, net);
    c.heartbeat_ms = u.heartbeat_ms;
    c.fail_timeout_ms = u.fail_timeout_ms;
    c.quorum = match u.quorum {
        UdpQuorum::Majority => QuorumMode::Majority,
        UdpQuorum::TwoNode => QuorumMode::TwoNode,
    };
    c.incarnation = Some(cohort_udp::incarnation::from_persisted(persisted_inc)?);
    Ok(c)
}

pub fn fmt_nodes(l: &NodeList) -> String {
    let v: Vec<String> = l.iter().map(|n| n.0.to_string()).collect();
    format!("[{}]", v.join(","))
}

/// A membership change reason in words (corosync's CPG reasons).
pub fn reason_text(r: cohort_core::gcs::Reason) -> &'static str {
    use cohort_core::gcs::Reason;
    match r {
        Reason::Join => "join",
        Reason::Leave => "clean leave",
        Reason::NodeDown => "node down",
        Reason::NodeUp => "node up (merge)",
        Reason::ProcDown => "process down",
    }
}

pub fn fmt_reasons(l: &ReasonList) -> String {
    let v: Vec<String> = l.iter().map(|m| format!("{} {}", m.node.0, reason_text(m.reason))).collect();
    format!("[{}]", v.join(", "))
}

/// One-line description of a membership event for the event log.
pub fn describe(e: &TransportEvent) -> Option<String> {
    match e {
        TransportEvent::Ring(r) => Some(format!("ring {} members {}", r.ring, fmt_nodes(&r.members))),
        TransportEvent::Confchg(c) => {
            let mut s = format!("confchg members {}", fmt_nodes(&c.members));
            if !c.joined.is_empty() {
                s.push_str(&format!(" joined {}", fmt_reasons(&c.joined)));
            }
            if !c.left.is_empty() {
                s.push_str(&format!(" left {}", fmt_reasons(&c.left)));
            }
            Some(s)
        }
        TransportEvent::Quorum(q) => Some(format!(
            "quorum ring {}: {} members {}",
            q.ring,
            if q.quorate { "quorate" } else { "NOT quorate" },
            fmt_nodes(&q.members)
        )),
        TransportEvent::Deliver { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ucfg() -> UdpConfig {
        UdpConfig {
            net: UdpNet::Unicast { peers: BTreeMap::new(), bind: None },
            key_file: "/nonexistent".into(),
            allow_insecure_key_file: false,
            heartbeat_ms: 50,
            fail_timeout_ms: 300,
            quorum: UdpQuorum::Majority,
        }
    }

    /// Issue 15 item 11: cohortd's VS incarnation comes from the persisted
    /// incarnation, not the clock (on main the daemon left it `None`, so
    /// `cohort-udp` used wall-clock microseconds: a clock stepped back gave
    /// a smaller value, a board without RTC could repeat one). Two starts
    /// (persisted 5, then 6) at the same clock reading, or with the clock
    /// stepped back in between, still give a strictly greater value: nothing
    /// here can read a clock difference, only the persisted value orders them.
    #[test]
    fn vs_incarnation_follows_the_persisted_one() {
        let a = udp_adapter_config(1, &[1, 2], &ucfg(), [7; 32], 5).unwrap().incarnation.expect("set by cohortd");
        let b = udp_adapter_config(1, &[1, 2], &ucfg(), [7; 32], 6).unwrap().incarnation.expect("set by cohortd");
        assert_eq!(a.0 >> 32, 5);
        assert_eq!(b.0 >> 32, 6);
        assert!(b > a);
        // and far from any clock value (µs since 1970 are > 2^50)
        assert!(b.0 < 7 << 32);
        assert!(udp_adapter_config(1, &[1, 2], &ucfg(), [7; 32], u64::from(u32::MAX) + 1).is_err());
    }
}
