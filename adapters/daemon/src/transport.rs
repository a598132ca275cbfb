//! What a transport hands the engine: the core's `gcs` vocabulary plus
//! delivered messages. Corosync and UDP events convert 1:1; the demo's
//! simulated network ([`crate::demo::simnet`]) produces the same events.
//!
//! [`Link`] is the transport the daemon's main loop (and the UDP demo)
//! drives: poll its [`Link::fds`] for readability with a timeout bounded by
//! [`Link::next_timeout`], then [`Link::dispatch`] and drain
//! [`Link::next_event`]; [`Link::send`] multicasts in agreed order.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use cohort_core::gcs::{Confchg, MemberReason, NodeList, QuorumEvent, QuorumMode, Reason, ReasonList, RingEvent};
use cohort_core::NodeId;
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

/// Workaround for a bug of the core's UDP transport (`cohort_core::vs`),
/// applied to the events of a UDP [`Link`].
///
/// A process starts in a singleton view (its own `Join`). At its first view
/// change with others, the coordinator marks it *fresh*, so the others
/// report it as a `Join` confchg **after** the ring event: they end at
/// generation `(ring, 1)`. The fresh process itself reports the others as
/// `NodeUp` **before** the ring event (it comes from its own singleton
/// view), so its barrier ends at `(ring, 0)`. The generations never agree,
/// every daemon message is dropped as old, and the daemon group never
/// syncs (reproduced with `cohort-sim`, `model udp`: any restart of a node
/// into a running cluster stalls).
///
/// The rewrite, at the fresh process only, during its first view change:
/// hold back the pre-ring `NodeUp` confchg, pass the ring and quorum
/// events, then report its own `Join` with the new members (merged into the
/// transport's post-ring `Join` confchg of other fresh processes, if there
/// is one). Its barrier then goes `(ring, 0)` -> `(ring, 1)` with the same
/// members as everyone else. Views where every joiner was fresh (a cluster
/// starting) need nothing and pass unchanged.
#[derive(Debug)]
pub struct FreshJoinFix {
    me: NodeId,
    rings: u32,
    held: Option<Confchg>,
    stage: FixStage,
    out: VecDeque<TransportEvent>,
    /// How many times the rewrite was applied (0 or 1 per process).
    pub applied: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum FixStage {
    Idle,
    /// Ring passed: our join comes after the quorum event.
    AwaitQuorum(NodeList),
    /// Quorum passed: our join goes into the next `Join` confchg, or alone.
    AwaitJoin(NodeList),
}

impl FreshJoinFix {
    pub fn new(me: NodeId) -> FreshJoinFix {
        FreshJoinFix { me, rings: 0, held: None, stage: FixStage::Idle, out: VecDeque::new(), applied: 0 }
    }

    fn own_join(&self) -> MemberReason {
        MemberReason { node: self.me, reason: Reason::Join }
    }

    /// Feed the transport's next event.
    pub fn push(&mut self, ev: TransportEvent) {
        if let FixStage::AwaitJoin(members) = &self.stage {
            let members = members.clone();
            self.stage = FixStage::Idle;
            self.applied += 1;
            tracing::debug!(node = self.me.0, "udp: own Join reported after the ring (FreshJoinFix)");
            match ev {
                TransportEvent::Confchg(mut c)
                    if c.left.is_empty()
                        && !c.joined.is_empty()
                        && c.joined.iter().all(|m| m.reason == Reason::Join) =>
                {
                    let at = c.joined.iter().position(|m| m.node > self.me).unwrap_or(c.joined.len());
                    if c.joined.insert(at, self.own_join()).is_ok() {
                        self.out.push_back(TransportEvent::Confchg(c));
                        return;
                    }
                    // Cannot happen (the list has room for every node); fall back.
                    self.out.push_back(TransportEvent::Confchg(self.join_alone(members)));
                    self.out.push_back(TransportEvent::Confchg(c));
                    return;
                }
                other => {
                    self.out.push_back(TransportEvent::Confchg(self.join_alone(members)));
                    self.push(other);
                    return;
                }
            }
        }
        match ev {
            // Only during our first view change (the boot ring was the first).
            TransportEvent::Confchg(c)
                if self.rings == 1
                    && c.left.is_empty()
                    && !c.joined.is_empty()
                    && c.joined.iter().all(|m| m.reason == Reason::NodeUp) =>
            {
                match &mut self.held {
                    Some(h) => {
                        h.members = c.members;
                        for m in c.joined {
                            let _ = h.joined.push(m);
                        }
                    }
                    None => self.held = Some(c),
                }
            }
            TransportEvent::Ring(r) => {
                self.rings = self.rings.saturating_add(1);
                if let Some(h) = self.held.take() {
                    self.stage = FixStage::AwaitQuorum(h.members);
                }
                self.out.push_back(TransportEvent::Ring(r));
            }
            TransportEvent::Quorum(q) => {
                if let FixStage::AwaitQuorum(m) = &self.stage {
                    self.stage = FixStage::AwaitJoin(m.clone());
                }
                self.out.push_back(TransportEvent::Quorum(q));
            }
            other => {
                if let Some(h) = self.held.take() {
                    // Not followed by a ring event: not the pattern; pass it on.
                    self.out.push_back(TransportEvent::Confchg(h));
                }
                self.out.push_back(other);
            }
        }
    }

    fn join_alone(&self, members: NodeList) -> Confchg {
        let mut joined = ReasonList::new();
        let _ = joined.push(self.own_join());
        Confchg { members, joined, left: ReasonList::new() }
    }

    /// The transport has nothing more queued: a view change's events all
    /// come in one batch, so a join still due has no `Join` confchg to go into.
    pub fn idle(&mut self) {
        if let FixStage::AwaitJoin(m) = &self.stage {
            let c = self.join_alone(m.clone());
            self.stage = FixStage::Idle;
            self.applied += 1;
            tracing::debug!(node = self.me.0, "udp: own Join reported after the ring (FreshJoinFix)");
            self.out.push_back(TransportEvent::Confchg(c));
        }
    }

    pub fn pop(&mut self) -> Option<TransportEvent> {
        self.out.pop_front()
    }

    pub fn ready(&self) -> usize {
        self.out.len()
    }
}

/// The UDP transport with the event rewrite of [`FreshJoinFix`].
pub struct UdpLink {
    pub udp: cohort_udp::Udp,
    pub fix: FreshJoinFix,
    /// A view with other nodes has been reported (see [`Link::found_peers`]).
    pub peers_seen: bool,
}

/// A transport failure seen by [`Link::dispatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkError {
    pub text: String,
    /// The transport is gone (corosync stopped), as opposed to failing.
    pub disconnected: bool,
}

/// The transport of one daemon: corosync CPG + quorum, or cohort's UDP
/// transport. Both produce the same [`TransportEvent`]s. (One long-lived
/// value per daemon: the variants' size difference does not matter.)
#[allow(clippy::large_enum_variant)]
pub enum Link {
    Corosync(Corosync),
    Udp(Box<UdpLink>),
}

impl Link {
    /// A UDP link (its events go through [`FreshJoinFix`]).
    pub fn udp(udp: cohort_udp::Udp) -> Link {
        let fix = FreshJoinFix::new(udp.node());
        Link::Udp(Box::new(UdpLink { udp, fix, peers_seen: false }))
    }

    /// `"corosync"` or `"udp"` (the `transport` of `status`).
    pub fn name(&self) -> &'static str {
        match self {
            Link::Corosync(_) => "corosync",
            Link::Udp(_) => "udp",
        }
    }

    /// The fds to poll for readability.
    pub fn fds(&self) -> Vec<RawFd> {
        match self {
            Link::Corosync(c) => c.fds().to_vec(),
            Link::Udp(u) => u.udp.fds().to_vec(),
        }
    }

    /// How long until the transport's own timers are due (UDP heartbeats,
    /// failure detection, retransmission); `None`: no timer (corosync).
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        match self {
            Link::Corosync(_) => None,
            Link::Udp(u) => u.udp.next_timeout().map(|t| t.saturating_duration_since(now)),
        }
    }

    /// Events queued and not yet taken (poll must not sleep while > 0).
    pub fn pending(&self) -> usize {
        match self {
            Link::Corosync(c) => c.pending(),
            Link::Udp(u) => u.udp.pending() + u.fix.ready(),
        }
    }

    /// Run the transport after poll(2): `ready` is true when one of its fds
    /// was reported. Events are then taken with [`Link::next_event`].
    pub fn dispatch(&mut self, ready: bool, now: Instant) -> Result<(), LinkError> {
        match self {
            Link::Corosync(c) => {
                if ready || c.pending() > 0 {
                    c.dispatch().map_err(|e| LinkError { text: e.to_string(), disconnected: e.is_disconnected() })?;
                }
                Ok(())
            }
            Link::Udp(u) => {
                if ready {
                    u.udp.handle_readable(now);
                }
                u.udp.handle_timeout(now);
                Ok(())
            }
        }
    }

    pub fn next_event(&mut self) -> Option<TransportEvent> {
        match self {
            Link::Corosync(c) => c.next_event().map(Into::into),
            Link::Udp(u) => loop {
                if let Some(e) = u.fix.pop() {
                    if matches!(&e, TransportEvent::Ring(r) if r.members.len() > 1) {
                        u.peers_seen = true;
                    }
                    return Some(e);
                }
                match u.udp.next_event() {
                    Some(e) => u.fix.push(e.into()),
                    None => {
                        u.fix.idle();
                        return u.fix.pop();
                    }
                }
            },
        }
    }

    /// Has the transport put us in a view with other nodes yet? Corosync:
    /// always (the daemon joins the existing ring). UDP: a process starts
    /// alone in a boot view and merges with its peers a heartbeat or two
    /// later; see `daemon` for why requests wait for that.
    pub fn found_peers(&self) -> bool {
        match self {
            Link::Corosync(_) => true,
            Link::Udp(u) => u.peers_seen,
        }
    }

    /// Multicast to the daemon group in agreed order.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        match self {
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
        let Link::Udp(u) = self else { return };
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
/// (the configured cluster) and the cluster key.
pub fn udp_adapter_config(me: u32, nodes: &[u32], u: &UdpConfig, key: [u8; 32]) -> cohort_udp::Config {
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
    c
}

pub fn fmt_nodes(l: &NodeList) -> String {
    let v: Vec<String> = l.iter().map(|n| n.0.to_string()).collect();
    format!("[{}]", v.join(","))
}

pub fn fmt_reasons(l: &ReasonList) -> String {
    let v: Vec<String> = l.iter().map(|m| format!("{} {:?}", m.node.0, m.reason)).collect();
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

    fn nl(v: &[u32]) -> NodeList {
        v.iter().map(|n| NodeId(*n)).collect()
    }

    fn ring(id: u64, m: &[u32]) -> TransportEvent {
        TransportEvent::Ring(RingEvent { ring: id, members: nl(m) })
    }

    fn quorum(id: u64, m: &[u32]) -> TransportEvent {
        TransportEvent::Quorum(QuorumEvent { ring: id, quorate: true, members: nl(m) })
    }

    fn cc(members: &[u32], joined: &[(u32, Reason)], left: &[(u32, Reason)]) -> TransportEvent {
        let rl = |v: &[(u32, Reason)]| -> ReasonList {
            v.iter().map(|(n, r)| MemberReason { node: NodeId(*n), reason: *r }).collect()
        };
        TransportEvent::Confchg(Confchg { members: nl(members), joined: rl(joined), left: rl(left) })
    }

    fn run(me: u32, batches: &[Vec<TransportEvent>]) -> (Vec<TransportEvent>, u32) {
        let mut f = FreshJoinFix::new(NodeId(me));
        let mut out = vec![];
        for b in batches {
            for e in b {
                f.push(e.clone());
            }
            f.idle();
            while let Some(e) = f.pop() {
                out.push(e);
            }
        }
        (out, f.applied)
    }

    const R1: u64 = 1 << 32 | 3;
    const R2: u64 = 4 << 32 | 1;
    const R3: u64 = 5 << 32 | 1;

    #[test]
    fn fresh_process_joining_a_running_group_reports_its_own_join_after_the_ring() {
        use Reason::*;
        let boot = vec![ring(R1, &[3]), quorum(R1, &[3]), cc(&[3], &[(3, Join)], &[])];
        let deliver = TransportEvent::Deliver { from: NodeId(1), payload: vec![1] };
        // what cohort_core::vs emits at the fresh node 3 when it joins [1, 2]
        let merge =
            vec![cc(&[1, 2, 3], &[(1, NodeUp), (2, NodeUp)], &[]), ring(R2, &[1, 2, 3]), quorum(R2, &[1, 2, 3])];
        let mut with_msg = merge.clone();
        with_msg.push(deliver.clone());
        let (out, applied) = run(3, &[boot.clone(), with_msg]);
        let mut want = boot.clone();
        // what nodes 1 and 2 see: ring, quorum, then 3's join (generation (R2, 1) everywhere)
        want.extend([ring(R2, &[1, 2, 3]), quorum(R2, &[1, 2, 3]), cc(&[1, 2, 3], &[(3, Join)], &[]), deliver]);
        assert_eq!(out, want);
        assert_eq!(applied, 1);

        // another fresh process (4) joins in the same view: one Join confchg with both
        let mut merge4 = vec![cc(&[1, 2, 3], &[(1, NodeUp), (2, NodeUp)], &[])];
        merge4.extend([ring(R2, &[1, 2, 3, 4]), quorum(R2, &[1, 2, 3, 4]), cc(&[1, 2, 3, 4], &[(4, Join)], &[])]);
        let (out, _) = run(3, &[boot.clone(), merge4]);
        assert_eq!(&out[3..5], &[ring(R2, &[1, 2, 3, 4]), quorum(R2, &[1, 2, 3, 4])]);
        assert_eq!(out[5], cc(&[1, 2, 3, 4], &[(3, Join), (4, Join)], &[]));
        assert_eq!(out.len(), 6);

        // later view changes pass unchanged (merges are NodeUp on every side)
        let later = vec![
            cc(&[1, 3], &[], &[(2, NodeDown)]),
            ring(R3, &[1, 3]),
            quorum(R3, &[1, 3]),
            cc(&[1, 2, 3], &[(2, NodeUp)], &[]),
        ];
        let (out, applied) = run(3, &[boot.clone(), merge.clone(), later.clone()]);
        assert_eq!(&out[out.len() - 4..], &later[..]);
        assert_eq!(applied, 1);
    }

    #[test]
    fn views_of_fresh_processes_only_pass_unchanged() {
        use Reason::*;
        // nodes 1 and 2 start together: each sees the other as a Join after the ring
        let boot = vec![ring(R1, &[1]), quorum(R1, &[1]), cc(&[1], &[(1, Join)], &[])];
        let merge = vec![ring(R2, &[1, 2]), quorum(R2, &[1, 2]), cc(&[1, 2], &[(2, Join)], &[])];
        let (out, applied) = run(1, &[boot.clone(), merge.clone()]);
        assert_eq!(out, [boot, merge].concat());
        assert_eq!(applied, 0);
    }
}
