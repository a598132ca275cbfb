//! What a transport hands the engine: the core's `gcs` vocabulary plus
//! delivered messages. Corosync events convert 1:1; the demo's simulated
//! network ([`crate::demo::simnet`]) produces the same events, and so will the
//! UDP transport.

use cohort_core::gcs::{Confchg, NodeList, QuorumEvent, ReasonList, RingEvent};
use cohort_core::NodeId;
use cohort_corosync::CorosyncEvent;

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
