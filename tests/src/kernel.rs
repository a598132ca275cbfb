//! The simulated kernel side of every node, and the shared disks.
//!
//! This is the simulator's *ground truth* for the journal properties: which
//! node really has which journal mounted, which journals were written by a
//! writer that went away without a clean unmount (dirty), and who replays
//! what. The core never sees any of it except through `KernelOp` effects and
//! `KernelEvent` answers.

use cohort_core::wire::Mode;
use std::collections::BTreeMap;

/// Where a node's mount of one filesystem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KPhase {
    /// Only `SetJid`/`Block` seen so far.
    Idle,
    MountingFirst,
    Mounting,
    Mounted,
}

/// One node's kernel state for one filesystem (gone after power off/reset).
#[derive(Clone, Debug)]
pub struct KFs {
    /// Unique id of this mount instance (a remount in the same boot is a
    /// different writer).
    pub id: u64,
    pub phase: KPhase,
    pub jid: Option<u16>,
    pub mode: Mode,
    pub spectator: bool,
    pub blocked: bool,
    /// Withdrawn: no more I/O, the journal stays as it was.
    pub withdrawn: bool,
    /// The first mounter's replay of every journal is running.
    pub first_pending: bool,
    /// A journal replay (RecoverJournal) is running.
    pub recovering: Option<u16>,
    /// The host unmounted it and told the core (`Request::Unmount`): no
    /// kernel op but the group's end may come for it now (a real node has
    /// no gfs2 sysfs files left to write).
    pub released: bool,
    /// Bumped to cancel in-flight completions.
    pub op: u64,
}

impl KFs {
    pub fn new(id: u64, mode: Mode) -> KFs {
        KFs {
            id,
            phase: KPhase::Idle,
            jid: None,
            mode,
            spectator: false,
            blocked: false,
            withdrawn: false,
            first_pending: false,
            recovering: None,
            released: false,
            op: 0,
        }
    }

    /// Holds its journal (mounting or mounted, doing I/O).
    pub fn holds(&self) -> Option<u16> {
        if self.withdrawn || self.spectator || self.phase == KPhase::Idle {
            return None;
        }
        self.jid
    }

    pub fn active(&self) -> bool {
        !self.withdrawn && self.phase != KPhase::Idle
    }
}

/// A kernel mount that wrote to a journal: node, boot and mount instance
/// (a reboot or a new mount is a new writer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Writer {
    pub node: u32,
    pub boot: u64,
    pub mount: u64,
}

/// One journal on the shared disk.
#[derive(Clone, Debug, Default)]
pub struct Journal {
    /// The last writer, until it unmounted cleanly or the journal was
    /// replayed. `Some` + writer not alive = dirty, needs replay.
    pub writer: Option<Writer>,
    /// Replays running now (by node/boot).
    pub replaying: Vec<Writer>,
    /// Successful replays, total.
    pub replays: u32,
}

#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub journals: BTreeMap<u16, Journal>,
    /// Nodes that mounted this filesystem as first mounter (in order).
    pub first_mounters: Vec<u32>,
}

impl Disk {
    pub fn journal(&mut self, j: u16) -> &mut Journal {
        self.journals.entry(j).or_default()
    }
}

/// Per-node fault injections on the kernel and fence device.
#[derive(Clone, Debug, Default)]
pub struct Inject {
    /// Next mounts of fs fail (count).
    pub mount_error: BTreeMap<String, u32>,
    /// Next journal recoveries of fs fail (count).
    pub recovery_fail: BTreeMap<String, u32>,
    /// Next fence operations targeting this node fail (count).
    pub fence_fail: u32,
    /// Extra delay of a successful fence of this node (pcmk_delay_base).
    pub fence_extra_ms: u64,
}

impl Inject {
    pub fn take(map: &mut BTreeMap<String, u32>, fs: &str) -> bool {
        match map.get_mut(fs) {
            Some(k) if *k > 0 => {
                *k -= 1;
                true
            }
            _ => false,
        }
    }

    pub fn clear(&mut self) {
        self.mount_error.clear();
        self.recovery_fail.clear();
        self.fence_fail = 0;
    }
}
