//! `memory`: a stand-in kernel that succeeds at once (demo, tests), with
//! failure injection: the first `fail_mount` mounts and the first
//! `fail_recover` journal recoveries fail.
//!
//! Its "kernel" has the filesystem mounted from a successful mount until
//! `Unmounted`, `Release` or `MountError`. It has no umount of its own, so
//! a mounted memory filesystem never leaves its group cleanly: `unmount` is
//! refused and a stop is a failure (the others fence and replay), exactly
//! what the daemon does for a real kernel that still has the mount.

use cohort_core::node::{KernelEvent, KernelOp};
use cohort_core::wire::{fs_name, FsName, Mode};

use super::{Backend, Remounted};
use crate::config::MemoryConfig;

pub struct MemoryBackend {
    fs: FsName,
    cfg: MemoryConfig,
    /// Journals replayed so far (for tests and the demo).
    pub recovered: Vec<u16>,
    /// The stand-in kernel has the filesystem mounted.
    pub mounted: bool,
}

impl MemoryBackend {
    pub fn new(fs: &str, cfg: MemoryConfig) -> MemoryBackend {
        MemoryBackend { fs: fs_name(fs).unwrap_or_default(), cfg, recovered: Vec::new(), mounted: false }
    }

    /// Make the next `n` recoveries fail.
    pub fn fail_next_recoveries(&mut self, n: u32) {
        self.cfg.fail_recover = n;
    }
}

impl Backend for MemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn apply(&mut self, op: KernelOp, out: &mut Vec<KernelEvent>) -> Result<(), String> {
        let fs = self.fs.clone();
        match op {
            KernelOp::MountFirst(_) | KernelOp::Mount(_) | KernelOp::MountSpectator => {
                let ok = if self.cfg.fail_mount > 0 {
                    self.cfg.fail_mount -= 1;
                    false
                } else {
                    true
                };
                self.mounted = ok;
                out.push(KernelEvent::MountResult { fs: fs.clone(), ok });
                if ok && matches!(op, KernelOp::MountFirst(_)) {
                    out.push(KernelEvent::FirstRecoveryDone { fs });
                }
            }
            KernelOp::RecoverJournal(jid) => {
                let ok = if self.cfg.fail_recover > 0 {
                    self.cfg.fail_recover -= 1;
                    false
                } else {
                    self.recovered.push(jid.0);
                    true
                };
                out.push(KernelEvent::RecoveryDone { fs, jid, ok });
            }
            KernelOp::Release | KernelOp::Unmounted | KernelOp::MountError(_) => self.mounted = false,
            KernelOp::Block | KernelOp::Unblock | KernelOp::SetJid(_) => {}
        }
        Ok(())
    }

    /// The stand-in kernel changes mode at once.
    fn remount(&mut self, _mode: Mode) -> Result<Remounted, String> {
        if !self.mounted {
            return Err(format!("{} is not mounted by the memory backend", self.fs));
        }
        Ok(Remounted::Done)
    }

    fn kernel_mounted(&self) -> Result<Option<String>, String> {
        Ok(self.mounted.then(|| "the memory backend has it mounted (a stand-in kernel without umount)".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::Jid;

    #[test]
    fn succeeds_and_injects_failures() {
        let mut b = MemoryBackend::new("fs1", MemoryConfig { fail_mount: 1, fail_recover: 1 });
        let mut out = vec![];
        b.apply(KernelOp::MountFirst(Jid(0)), &mut out).unwrap();
        assert_eq!(out, vec![KernelEvent::MountResult { fs: fs_name("fs1").unwrap(), ok: false }]);
        out.clear();
        b.apply(KernelOp::MountFirst(Jid(0)), &mut out).unwrap();
        assert_eq!(out.len(), 2);
        out.clear();
        b.apply(KernelOp::RecoverJournal(Jid(2)), &mut out).unwrap();
        b.apply(KernelOp::RecoverJournal(Jid(2)), &mut out).unwrap();
        let oks: Vec<bool> = out
            .iter()
            .map(|e| match e {
                KernelEvent::RecoveryDone { ok, .. } => *ok,
                _ => panic!(),
            })
            .collect();
        assert_eq!(oks, vec![false, true]);
        assert_eq!(b.recovered, vec![2]);
    }
}
