//! The udp model: every daemon runs the core's own datagram transport
//! ([`cohort_vs::Vs`]) next to its [`cohort_core::Node`], over a
//! simulated lossy network.
//!
//! * A daemon start creates a `Vs` with the daemon's incarnation (shared
//!   [`super::SIM_KEY`], the configured nodes, the sim's quorum mode,
//!   `vs_heartbeat_ms`/`vs_fail_ms`). Its events go straight to the node
//!   (`Ring`, `Confchg`, `Quorum`, `Deliver`), in the order `poll_event`
//!   gives them; the node's messages go to `broadcast_message`, through a
//!   per-node FIFO (`outq`) while the send window is full (never dropped).
//! * Datagrams: `Dest::All` to every other configured node, `Dest::Node`
//!   to one. Per receiver: delivered only while sender and receiver have
//!   the same network label and the link is not cut one way (`cut A>B`;
//!   checked when sent and when arriving), lost with
//!   `loss_pct`, duplicated with `dup_pct` (the copy gets its own delay),
//!   delayed by `net_delay`; FIFO per link unless `reorder` is on.
//! * Timers: one pending `Ev::VsTimer` per node at `vs.next_timeout()`
//!   (re-armed after every interaction, stale ones ignored by token).
//! * Rings: every view a node's `Ring` event reports is a sim ring (view id
//!   = ring seq; the same id reported with the same members by another
//!   instance is the same ring, unless that instance's node already reported
//!   it with another incarnation: boot singletons and the views of a
//!   completely restarted cluster repeat ids). Its quorum is computed by
//!   the simulator from the member count. `SimNode::ring` and
//!   `Daemon::ring` are the view the node last processed, so the checkers
//!   of the corosync model apply unchanged.
//! * Faults: pause = the node's `Vs` and `Node` stop (datagrams to it are
//!   lost, timers do not fire; resume processes the node's backlog, then the
//!   overdue transport timers, with stale state). kill-transport = the `Vs`
//!   is dropped (nothing in or out), the `Node` keeps running without any
//!   transport event and its messages are discarded; the others see it
//!   fail. kill-daemon = `Node` and `Vs` die (one process), the kernel
//!   mounts stay. crash/fence/reset = power off.

use super::*;
use crate::invariants::virtual_synchrony;

impl World {
    pub fn udp(&self) -> bool {
        self.cfg.model == Model::Udp
    }

    /// Datagrams from `a` reach `b` (same network label, no one-way cut).
    fn connected(&self, a: u32, b: u32) -> bool {
        self.net.get(a as usize) == self.net.get(b as usize) && (self.cuts.is_empty() || !self.cuts.contains(&(a, b)))
    }

    /// Both directions work.
    fn linked(&self, a: u32, b: u32) -> bool {
        self.connected(a, b) && self.connected(b, a)
    }

    /// `cut A>B`: datagrams from `a` no longer reach `b` (udp model).
    pub fn cut(&mut self, a: u32, b: u32) {
        if a != b {
            self.cuts.insert((a, b));
        }
    }

    /// A daemon with a working transport, not paused.
    fn udp_running(&self, n: u32) -> bool {
        let node = &self.nodes[n as usize];
        node.powered && !node.paused && !node.transport_dead && node.vs.is_some() && node.daemon.is_some()
    }

    pub(super) fn udp_daemon_start(&mut self, n: u32, boot: u64) {
        if self.nodes[n as usize].paused {
            self.schedule(self.now + 50, Ev::DaemonStart { node: n, boot });
            return;
        }
        let Some(inc) = self.new_daemon(n) else { return };
        if self.halted || self.nodes[n as usize].inst() != Some((n, inc)) {
            return;
        }
        let all: Vec<u32> = (1..=self.cfg.nodes).collect();
        let cfg = VsConfig {
            node: NodeId(n),
            incarnation: Incarnation(inc),
            nodes: node_list(&all),
            quorum: self.cfg.quorum,
            heartbeat_ms: self.cfg.vs_heartbeat_ms,
            fail_timeout_ms: self.cfg.vs_fail_ms,
            key: SIM_KEY,
        };
        match invariants::robustness::guarded(|| Vs::new(cfg).map(Box::new)) {
            Ok(Ok(v)) => self.nodes[n as usize].vs = Some(v),
            Ok(Err(e)) => {
                self.violate(Property::Robustness, format!("node {n}: Vs::new refused the configuration: {e:?}"));
                return;
            }
            Err(p) => {
                self.violate(Property::Robustness, format!("node {n} panicked in Vs::new: {p}"));
                return;
            }
        }
        self.vs_pump(n);
    }

    /// The node's transport is gone (power off, daemon death, killed).
    pub(super) fn vs_stop(&mut self, n: u32) {
        let node = &mut self.nodes[n as usize];
        node.vs = None;
        node.outq.clear();
        node.vs_tok += 1;
        node.vs_timer_at = None;
        node.vs_fired_at = None;
        virtual_synchrony::forget_node(&mut self.inv.vsync, n);
    }

    pub(super) fn udp_mcast(&mut self, from: u32, bytes: Rc<[u8]>) {
        let node = &mut self.nodes[from as usize];
        if !node.powered || node.vs.is_none() {
            // Transport dead: the message goes nowhere.
            return;
        }
        virtual_synchrony::on_send(&mut self.inv.vsync, from, trace::fnv(&bytes));
        node.outq.push_back(bytes);
        if node.outq.len() > 100_000 {
            self.violate(Property::Robustness, format!("node {from}: 100000 core messages wait for the transport"));
            return;
        }
        if !node.vs_pumping && !node.paused {
            self.vs_pump(from);
        }
    }

    /// Overdue timer work, then everything that follows.
    pub(super) fn vs_kick(&mut self, n: u32) {
        let now = self.now;
        let node = &mut self.nodes[n as usize];
        let Some(v) = node.vs.as_mut() else { return };
        if v.next_timeout().is_some_and(|t| t.0 <= now) {
            node.vs_fired_at = Some(now);
            if let Err(p) = invariants::robustness::guarded(|| v.handle_timeout(Instant(now))) {
                self.violate(Property::Robustness, format!("node {n} panicked in Vs::handle_timeout: {p}"));
                return;
            }
        }
        self.vs_pump(n);
    }

    pub(super) fn vs_receive(&mut self, to: u32, from: u32, bytes: &[u8]) {
        let node = &self.nodes[to as usize];
        if !node.powered || node.paused || node.vs.is_none() || !self.connected(from, to) {
            return;
        }
        let now = Instant(self.now);
        let v = self.nodes[to as usize].vs.as_mut().expect("checked");
        match invariants::robustness::guarded(|| v.handle_datagram(now, Some(NodeId(from)), bytes)) {
            Err(p) => {
                self.violate(Property::Robustness, format!("node {to} panicked in Vs::handle_datagram: {p}"));
                return;
            }
            // Duplicates, datagrams of dead incarnations: the protocol's
            // business. Anything else is a datagram an honest peer produced
            // that the protocol could not take.
            Ok(Ok(()) | Err(VsRecvError::Replayed | VsRecvError::StaleIncarnation | VsRecvError::Closed)) => {}
            Ok(Err(e)) => {
                self.violate(
                    Property::Robustness,
                    format!("node {to} rejected a genuine datagram of node {from} ({} B): {e:?}", bytes.len()),
                );
                return;
            }
        }
        self.vs_pump(to);
    }

    /// Put one datagram on the simulated network.
    fn send_datagram(&mut self, from: u32, dest: Dest, bytes: Rc<[u8]>) {
        let n = self.cfg.nodes;
        let (lo, hi) = match dest {
            Dest::All => (1, n),
            Dest::Node(d) => (d.0, d.0),
        };
        for to in lo..=hi.min(n) {
            if to == from || to == 0 || !self.connected(from, to) || !self.nodes[to as usize].powered {
                continue;
            }
            if self.cfg.loss_pct > 0 && self.rng.percent(u64::from(self.cfg.loss_pct)) {
                continue;
            }
            let copies = if self.cfg.dup_pct > 0 && self.rng.percent(u64::from(self.cfg.dup_pct)) { 2 } else { 1 };
            for _ in 0..copies {
                let mut t = self.now + self.delay(self.cfg.net_delay);
                if !self.cfg.reorder {
                    let l = &mut self.link_t[from as usize * (n as usize + 1) + to as usize];
                    t = t.max(*l);
                    *l = t;
                }
                self.schedule(t, Ev::Datagram { to, from, bytes: bytes.clone() });
            }
        }
    }

    /// Move queued messages into the transport, send its datagrams, feed
    /// its events to the node, until nothing moves; then re-arm its timer.
    pub(super) fn vs_pump(&mut self, n: u32) {
        let Some(inst) = self.nodes[n as usize].inst() else { return };
        if self.nodes[n as usize].vs_pumping {
            return;
        }
        self.nodes[n as usize].vs_pumping = true;
        let mut txs: Vec<(Dest, Rc<[u8]>)> = Vec::new();
        loop {
            if self.halted || self.nodes[n as usize].inst() != Some(inst) || self.nodes[n as usize].paused {
                break;
            }
            let now = Instant(self.now);
            let SimNode { vs: Some(v), outq, .. } = &mut self.nodes[n as usize] else { break };
            let mut progress = false;
            let mut err = None;
            while let Some(m) = outq.front() {
                match invariants::robustness::guarded(|| v.broadcast_message(now, m)) {
                    Ok(Ok(())) => {
                        outq.pop_front();
                        progress = true;
                    }
                    Ok(Err(VsSendError::WindowFull)) => break,
                    Ok(Err(e)) => {
                        err = Some(format!("Vs::broadcast_message refused a {} B core message: {e:?}", m.len()));
                        break;
                    }
                    Err(p) => {
                        err = Some(format!("panicked in Vs::broadcast_message: {p}"));
                        break;
                    }
                }
            }
            while err.is_none() {
                let buf = &mut self.dgram;
                match invariants::robustness::guarded(|| v.poll_transmit(buf)) {
                    Ok(Some(t)) if t.len <= MAX_DATAGRAM => txs.push((t.dest, Rc::from(&buf[..t.len]))),
                    Ok(Some(t)) => err = Some(format!("Vs produced a datagram of {} B", t.len)),
                    Ok(None) => break,
                    Err(p) => err = Some(format!("panicked in Vs::poll_transmit: {p}")),
                }
            }
            let mut ev = None;
            if err.is_none() {
                let buf = &mut self.payload;
                match invariants::robustness::guarded(|| v.poll_event(buf)) {
                    Ok(Some(VsEvent::Deliver { from, len })) => {
                        ev = Some(Fed::Deliver(from.0, Rc::from(&buf[..len])));
                    }
                    Ok(Some(e)) => ev = Some(Fed::Other(Box::new(e))),
                    Ok(None) => {}
                    Err(p) => err = Some(format!("panicked in Vs::poll_event: {p}")),
                }
            }
            if let Some(e) = err {
                self.violate(Property::Robustness, format!("node {n}: {e}"));
                break;
            }
            for (dest, bytes) in txs.drain(..) {
                progress = true;
                self.send_datagram(n, dest, bytes);
            }
            if let Some(ev) = ev {
                progress = true;
                self.feed_vs_event(n, inst.1, ev);
            }
            if !progress {
                break;
            }
        }
        let node = &mut self.nodes[n as usize];
        node.vs_pumping = false;
        if node.inst() == Some(inst) {
            self.vs_arm(n);
        }
    }

    /// Schedule the transport's next timeout (unless an earlier one is
    /// pending).
    fn vs_arm(&mut self, n: u32) {
        let now = self.now;
        let node = &mut self.nodes[n as usize];
        if !node.powered || node.paused {
            return;
        }
        let Some(t) = node.vs.as_ref().and_then(|v| v.next_timeout()) else { return };
        let mut t = t.0.max(now);
        if t == now && node.vs_fired_at == Some(now) {
            // Handled at this instant already: next millisecond.
            t = now + 1;
        }
        if node.vs_timer_at.is_some_and(|at| at <= t) {
            return;
        }
        node.vs_tok += 1;
        node.vs_timer_at = Some(t);
        let tok = node.vs_tok;
        self.schedule(t, Ev::VsTimer { node: n, tok });
    }

    fn feed_vs_event(&mut self, n: u32, inc: u64, ev: Fed) {
        let inst = (n, inc);
        match ev {
            Fed::Deliver(from, bytes) => {
                let Some(ri) = self.nodes[n as usize].ring else {
                    self.violate(Property::VirtualSynchrony, format!("node {n} got a delivery before any view"));
                    return;
                };
                let h = trace::fnv(&bytes);
                let members = &self.rings[ri].members;
                if let Err(m) = virtual_synchrony::on_deliver(&mut self.inv.vsync, inst, ri, members, from, h) {
                    let seq = self.rings[ri].seq;
                    self.violate(Property::VirtualSynchrony, format!("view {seq:#x}: {m}"));
                    return;
                }
                self.feed_msg(n, from, &bytes);
            }
            Fed::Other(e) => match *e {
                VsEvent::Ring(r) => {
                    let ri = self.view_ring(inst, &r);
                    if let Err(m) = virtual_synchrony::on_ring(&mut self.inv.vsync, inst, ri, r.ring) {
                        self.violate(Property::VirtualSynchrony, format!("node {n} installs view {:#x}: {m}", r.ring));
                        return;
                    }
                    self.nodes[n as usize].ring = Some(ri);
                    self.feed_ring(n, ri, 0, r);
                    if !self.halted {
                        self.track_separation();
                    }
                }
                VsEvent::Confchg(cc) => self.feed_confchg(n, cc),
                VsEvent::Quorum(q) => {
                    let ri = self.nodes[n as usize].ring;
                    let truth = ri.map(|r| (self.rings[r].seq, self.rings[r].quorate));
                    if truth != Some((q.ring, q.quorate)) {
                        self.violate(
                            Property::VirtualSynchrony,
                            format!(
                                "node {n}: quorum event (view {:#x}, quorate {}) does not match its view {:?}",
                                q.ring, q.quorate, truth
                            ),
                        );
                        return;
                    }
                    let what = What::InQuorum { seq: q.ring, quorate: q.quorate };
                    self.step(n, Input::Quorum(q), what);
                }
                VsEvent::Deliver { .. } => unreachable!("converted above"),
            },
        }
    }

    /// The sim ring of a view a node installs (made on first sight).
    fn view_ring(&mut self, inst: Inst, r: &RingEvent) -> usize {
        let members: Vec<u32> = r.members.iter().map(|m| m.0).collect();
        let cands = self.view_rings.entry(r.ring).or_default();
        let found = cands.iter().rev().copied().find(|ri| {
            let ring = &self.rings[*ri];
            ring.members == members && !ring.reporters.iter().any(|(rn, rinc)| *rn == inst.0 && *rinc != inst.1)
        });
        if let Some(ri) = found {
            self.rings[ri].reporters.push(inst);
            return ri;
        }
        let ri = self.rings.len();
        cands.push(ri);
        let quorate = self.cfg.quorum.is_quorate(members.len(), self.cfg.nodes as usize);
        self.trace(0, What::RingFormed { seq: r.ring, members: mask(members.iter().copied()), quorate });
        self.log.totals.rings += 1;
        self.log.totals.views += 1;
        self.rings.push(RingInfo {
            seq: r.ring,
            group: members.iter().copied().collect(),
            members,
            lifetime: 0,
            quorate,
            pending: VecDeque::new(),
            last_ts: self.now,
            dead: false,
            reporters: vec![inst],
        });
        ri
    }

    /// Transport work not yet done: queued core messages, own units not yet
    /// delivered back to their sender, deliveries a view member still lacks
    /// (udp model; part of "in flight").
    pub fn udp_pending(&self) -> u64 {
        let mut p = 0u64;
        for n in 1..=self.cfg.nodes {
            if !self.udp_running(n) {
                continue;
            }
            let node = &self.nodes[n as usize];
            let v = node.vs.as_ref().expect("running");
            p += node.outq.len() as u64 + (SEND_WINDOW - v.send_capacity()) as u64;
            if let Some(inst) = node.inst() {
                p += virtual_synchrony::lagging(&self.inv.vsync, inst) as u64;
            }
        }
        p
    }

    /// Every running transport is quiet and in the view its connectivity
    /// component should form (all of its running members, one view id, the
    /// one its node processed).
    pub(super) fn udp_settled(&self) -> bool {
        self.udp_check_settled().is_ok()
    }

    /// [`World::udp_settled`], saying what is not.
    pub fn udp_check_settled(&self) -> Result<(), String> {
        let p = self.udp_pending();
        if p > 0 {
            return Err(format!("{p} core messages queued, unacknowledged or not delivered everywhere"));
        }
        for n in 1..=self.cfg.nodes {
            if !self.udp_running(n) {
                continue;
            }
            let view = self.nodes[n as usize].vs.as_ref().expect("running").view();
            let comp: Vec<u32> = (1..=self.cfg.nodes).filter(|m| self.udp_running(*m) && self.linked(n, *m)).collect();
            let members: Vec<u32> = view.members.iter().map(|m| m.0).collect();
            if members != comp {
                return Err(format!("node {n} is in view {:#x} of {members:?}, its component is {comp:?}", view.id));
            }
            if let Some(m) =
                comp.iter().find(|m| self.nodes[**m as usize].vs.as_ref().is_none_or(|v| v.view().id != view.id))
            {
                return Err(format!("nodes {n} and {m} are connected but in different views"));
            }
            if self.nodes[n as usize].ring.map(|r| self.rings[r].seq) != Some(view.id) {
                return Err(format!("node {n}'s daemon has not processed view {:#x}", view.id));
            }
        }
        Ok(())
    }
}

/// A transport event on its way to the node.
pub(super) enum Fed {
    Deliver(u32, Rc<[u8]>),
    Other(Box<VsEvent>),
}
