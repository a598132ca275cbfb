//! The event trace: a bounded ring of compact records (formatted only when
//! printed) and a running FNV-1a hash over every record, so two runs of the
//! same seed can be compared by one number.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};

/// FNV-1a, 64 bit: deterministic on every platform and run.
#[derive(Clone, Copy, Debug)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h = Fnv::default();
    h.write(bytes);
    h.finish()
}

/// Node id list as a bitmask (bit n = node n, nodes 1..=32 fit in u64).
pub fn mask(nodes: impl IntoIterator<Item = u32>) -> u64 {
    nodes.into_iter().fold(0, |m, n| m | (1u64 << (n % 64)))
}

pub fn mask_str(m: u64) -> String {
    let mut s = String::from("[");
    let mut first = true;
    for n in 0..64 {
        if m & (1 << n) != 0 {
            if !first {
                s.push(',');
            }
            first = false;
            let _ = write!(s, "{n}");
        }
    }
    s.push(']');
    s
}

/// What happened (compact; `fs` is an index into the world's fs names).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum What {
    /// A scenario command or a scheduled fault.
    Cmd(Box<str>),
    PowerOff(&'static str),
    PowerOn {
        boot: u64,
    },
    DaemonStart {
        inc: u64,
    },
    DaemonGone(&'static str),
    /// The simulator formed a ring (ground truth).
    RingFormed {
        seq: u64,
        members: u64,
        quorate: bool,
    },
    InRing {
        seq: u64,
        members: u64,
    },
    InConfchg {
        members: u64,
        joined: u64,
        left: u64,
        reasons: u128,
    },
    InQuorum {
        seq: u64,
        quorate: bool,
    },
    InMsg {
        from: u32,
        kind: u8,
        ring: u64,
        epoch: u32,
        group: u32,
        hash: u64,
    },
    InTimer(u64),
    InKernel {
        fs: u8,
        ev: u8,
        jid: u16,
        ok: bool,
    },
    InFenced {
        target: u32,
        inc: u64,
        ok: bool,
    },
    InRequest {
        fs: u8,
        kind: u8,
    },
    Send {
        kind: u8,
        ring: u64,
        epoch: u32,
        len: u32,
        hash: u64,
    },
    KernelOp {
        fs: u8,
        op: u8,
        jid: u16,
    },
    Fence {
        target: u32,
        inc: u64,
    },
    FenceExec {
        target: u32,
        ok: bool,
    },
    Kill {
        node: u32,
    },
    ResetSelf,
    Notice {
        kind: u8,
        a: u64,
        b: u64,
        c: u64,
    },
    HandleErr(Box<str>),
    Violation(Box<str>),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct TraceRec {
    pub t: u64,
    pub node: u32,
    /// The node's generation after the step (ring, epoch), when it has a daemon.
    pub gen: Option<(u64, u32)>,
    pub what: What,
}

/// Message type name (robust to new kinds the core adds).
pub fn msg_kind(k: u8) -> String {
    cohort_core::wire::MsgKind::from_u8(k).map_or_else(|| format!("kind{k}"), |m| format!("{m:?}"))
}

pub const KOPS: [&str; 10] = [
    "Block",
    "Unblock",
    "SetJid",
    "MountFirst",
    "Mount",
    "MountSpectator",
    "RecoverJournal",
    "Release",
    "Unmounted",
    "MountError",
];

pub const KEVS: [&str; 4] = ["MountResult", "FirstRecoveryDone", "RecoveryDone", "Withdraw"];

pub const NOTICES: [&str; 8] = [
    "DaemonSynced",
    "GroupSynced",
    "StaleMerge",
    "JournalRecovered",
    "JournalRecoveryFailed",
    "Fenced",
    "FenceFailed",
    "Dropped",
];

pub const REQS: [&str; 3] = ["mount", "unmount", "remount"];

impl TraceRec {
    pub fn render(&self, fs_names: &[String]) -> String {
        let fs = |i: &u8| fs_names.get(usize::from(*i)).map_or("?", |s| s.as_str()).to_string();
        let mut s = format!("[{:>5}.{:03}s] ", self.t / 1000, self.t % 1000);
        if self.node != 0 {
            let _ = write!(s, "n{:<2} ", self.node);
        } else {
            s.push_str("sim ");
        }
        match self.gen {
            Some((r, e)) => {
                let _ = write!(s, "g={r}.{e:<3} ");
            }
            None => s.push_str("g=-     "),
        }
        let body = match &self.what {
            What::Cmd(c) => format!(">> {c}"),
            What::PowerOff(why) => format!("power off ({why})"),
            What::PowerOn { boot } => format!("power on (boot {boot})"),
            What::DaemonStart { inc } => format!("daemon start inc={inc}"),
            What::DaemonGone(why) => format!("daemon gone ({why})"),
            What::RingFormed { seq, members, quorate } => {
                format!("ring formed seq={seq} members={} quorate={quorate}", mask_str(*members))
            }
            What::InRing { seq, members } => format!("<- ring seq={seq} members={}", mask_str(*members)),
            What::InConfchg { members, joined, left, reasons } => {
                let mut r = String::new();
                for n in 0..=32u64 {
                    let v = (reasons >> (2 * n)) & 3;
                    let name = if joined & (1 << n) != 0 {
                        if v == 0 {
                            "Join"
                        } else {
                            "NodeUp"
                        }
                    } else if left & (1 << n) != 0 {
                        match v {
                            0 => "Leave",
                            1 => "NodeDown",
                            _ => "ProcDown",
                        }
                    } else {
                        continue;
                    };
                    let _ = write!(r, " {n}:{name}");
                }
                format!("<- confchg members={}{}", mask_str(*members), r)
            }
            What::InQuorum { seq, quorate } => format!("<- quorum seq={seq} quorate={quorate}"),
            What::InMsg { from, kind, ring, epoch, group, .. } => {
                format!("<- msg {} from n{from} gen={ring}.{epoch} group={group:#x}", msg_kind(*kind))
            }
            What::InTimer(t) => format!("<- timer {t:#x}"),
            What::InKernel { fs: f, ev, jid, ok } => {
                let name = KEVS.get(usize::from(*ev)).unwrap_or(&"?");
                if *ev == 2 {
                    format!("<- kernel {} {name}({jid}) ok={ok}", fs(f))
                } else {
                    format!("<- kernel {} {name} ok={ok}", fs(f))
                }
            }
            What::InFenced { target, inc, ok } => format!("<- fenced n{target}/{inc} ok={ok}"),
            What::InRequest { fs: f, kind } => {
                format!("<- request {} {}", REQS.get(usize::from(*kind)).unwrap_or(&"?"), fs(f))
            }
            What::Send { kind, ring, epoch, len, .. } => {
                format!("-> mcast {} gen={ring}.{epoch} ({len} B)", msg_kind(*kind))
            }
            What::KernelOp { fs: f, op, jid } => {
                let name = KOPS.get(usize::from(*op)).unwrap_or(&"?");
                if matches!(*op, 2 | 3 | 4 | 6) {
                    format!("-> kernel {} {name}({jid})", fs(f))
                } else {
                    format!("-> kernel {} {name}", fs(f))
                }
            }
            What::Fence { target, inc } => format!("-> fence n{target}/{inc}"),
            What::FenceExec { target, ok } => format!("fence device: n{target} ok={ok}"),
            What::Kill { node } => format!("-> kill n{node}"),
            What::ResetSelf => "-> RESET SELF".to_string(),
            What::Notice { kind, a, b, c } => {
                let name = NOTICES.get(usize::from(*kind)).unwrap_or(&"?");
                match kind {
                    0 => format!("!! {name} gen={}.{} members={c}", a, b),
                    1 => format!("!! {name} group={:#x} gen={}.{} members={}", a >> 8, b >> 32, b & 0xffff_ffff, c),
                    2 => format!("!! {name} node={a} partitions={b}"),
                    3 | 4 => format!("!! {name} group={a:#x} jid={b} attempt={c}"),
                    5 | 6 => format!("!! {name} n{a}/{b} attempt={c}"),
                    _ => format!("!! {name} reason={a}"),
                }
            }
            What::HandleErr(e) => format!("handle error: {e}"),
            What::Violation(v) => format!("VIOLATION {v}"),
        };
        s.push_str(&body);
        s
    }
}

/// Bounded trace with a running hash.
#[derive(Debug)]
pub struct Trace {
    pub keep: usize,
    pub recent: VecDeque<TraceRec>,
    pub hasher: Fnv,
    pub count: u64,
    /// Print every record as it happens (`--trace`).
    pub live: bool,
}

impl Trace {
    pub fn new(keep: usize, live: bool) -> Trace {
        Trace { keep, recent: VecDeque::with_capacity(keep + 1), hasher: Fnv::default(), count: 0, live }
    }

    pub fn push(&mut self, rec: TraceRec, fs_names: &[String]) {
        rec.hash(&mut self.hasher);
        self.count += 1;
        if self.live {
            println!("{}", rec.render(fs_names));
        }
        if self.keep == 0 {
            return;
        }
        if self.recent.len() == self.keep {
            self.recent.pop_front();
        }
        self.recent.push_back(rec);
    }

    pub fn hash(&self) -> u64 {
        self.hasher.finish()
    }

    pub fn dump(&self, fs_names: &[String]) -> String {
        let mut s = String::new();
        for r in self.recent.iter() {
            s.push_str(&r.render(fs_names));
            s.push('\n');
        }
        s
    }
}
