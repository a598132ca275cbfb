//! The bounded event log (`cohortctl log`): effects, notices, membership
//! changes and operator requests, each stamped with the generation the node
//! was at and the daemon's clock.

use std::collections::VecDeque;

use crate::api::{Gen, LogEntry, LogKind};

pub struct EventLog {
    node: u32,
    cap: usize,
    next: u64,
    ring: VecDeque<LogEntry>,
}

impl EventLog {
    pub fn new(node: u32, cap: usize) -> EventLog {
        EventLog { node, cap: cap.max(1), next: 1, ring: VecDeque::new() }
    }

    pub fn set_node(&mut self, node: u32) {
        self.node = node;
    }

    pub fn push(&mut self, t_ms: u64, generation: Gen, kind: LogKind, text: String) -> u64 {
        let seq = self.next;
        self.next += 1;
        if self.ring.len() == self.cap {
            self.ring.pop_front();
        }
        self.ring.push_back(LogEntry { seq, t_ms, node: self.node, generation, kind, text });
        seq
    }

    /// Entries with `seq > after`, oldest first.
    pub fn since(&self, after: u64) -> Vec<LogEntry> {
        self.ring.iter().filter(|e| e.seq > after).cloned().collect()
    }

    /// Last `n` entries.
    pub fn tail(&self, n: usize) -> Vec<LogEntry> {
        self.ring.iter().skip(self.ring.len().saturating_sub(n)).cloned().collect()
    }

    /// Sequence number of the newest entry (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.next - 1
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_ring_keeps_newest() {
        let mut l = EventLog::new(1, 3);
        for i in 0..5 {
            l.push(i, Gen::default(), LogKind::Info, format!("e{i}"));
        }
        assert_eq!(l.len(), 3);
        assert_eq!(l.since(0).iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(l.since(4).len(), 1);
        assert_eq!(l.tail(2)[0].text, "e3");
        assert_eq!(l.last_seq(), 5);
    }
}
