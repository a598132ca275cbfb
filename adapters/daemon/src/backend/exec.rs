//! `exec`: every operation runs a hook command, one at a time and in order,
//! on a worker thread per filesystem (never blocking the main loop).
//!
//! The hook is `hooks.<op>` if configured, else `hook`. Environment: `FS`
//! (filesystem name), `JID` (journal id, empty when the operation names
//! none), `OP` (one of `block`, `unblock`, `set_jid`, `mount_first`,
//! `mount`, `mount_spectator`, `recover_journal`, `release`, `unmounted`,
//! `mount_error`), and `MOUNT_ERROR` for `mount_error`. Exit status 0 is
//! success. Results: `mount*` → mount result (`mount_first` success also
//! means every journal was replayed), `recover_journal` → recovery result;
//! the others are only logged, except a failed `block`, which stops the
//! daemon (see `Engine::hook_failed`). A hook exceeding `timeout_ms` is
//! killed (failure).
//!
//! `hooks.mounted` (never the default `hook`; `OP=mounted`) answers whether
//! the kernel still has the filesystem mounted: exit 0 = mounted, 1 = not,
//! anything else (or a timeout) = cannot tell, treated as mounted. It runs
//! on the main loop (at start, on `unmount`, at stop), bounded by
//! `timeout_ms` and at most [`MOUNTED_TIMEOUT`]: it must be quick (e.g.
//! `mountpoint -q /mnt/fs1`). The configuration requires it unless
//! `mount_point` is set.
//!
//! `cohortctl remount` runs `hooks.remount` (else `hook`) with
//! `OP=remount` and `MODE=ro|rw` (exit 0 = the kernel has the new mode),
//! in order after the operations before it.
//!
//! `withdraw_file` (optional): a path the host creates when the kernel
//! withdrew the filesystem; cohortd looks every [`WITHDRAW_POLL`], reports
//! `Withdraw` once and removes the file.

use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use cohort_core::node::{KernelEvent, KernelOp};
use cohort_core::wire::{fs_name, FsName, Mode};

use super::{op_jid, op_name, Backend, Remounted};
use crate::config::{mode_name, ExecConfig, EXEC_MOUNTED, EXEC_REMOUNT};
use crate::proc::{run_status_with_timeout, run_with_timeout, Wake, Waker};

/// Upper bound of the `mounted` hook's run time (it blocks the main loop).
pub const MOUNTED_TIMEOUT: Duration = Duration::from_secs(5);

/// How often `withdraw_file` is looked for.
pub const WITHDRAW_POLL: Duration = Duration::from_millis(200);

pub struct ExecBackend {
    jobs: mpsc::Sender<Job>,
    name: String,
    cfg: ExecConfig,
}

/// What the worker runs, in order.
enum Job {
    Op(KernelOp),
    /// `OP=remount`, `MODE=ro|rw`.
    Remount(Mode),
}

impl ExecBackend {
    pub fn new(fs: &str, cfg: ExecConfig, waker: Waker) -> ExecBackend {
        let (tx, rx) = mpsc::channel::<Job>();
        let name = fs.to_owned();
        let (own_name, own_cfg) = (name.clone(), cfg.clone());
        let fsn: FsName = fs_name(fs).unwrap_or_default();
        let spawned = std::thread::Builder::new().name(format!("exec-{fs}")).spawn(move || {
            for job in rx {
                let op = match job {
                    Job::Op(op) => op,
                    Job::Remount(mode) => {
                        let result = run_remount(&cfg, &name, mode);
                        waker.wake(Wake::Remounted { fs: name.clone(), mode, result });
                        continue;
                    }
                };
                let result = run_hook(&cfg, &name, &op);
                match (&op, &result) {
                    (KernelOp::MountFirst(_), Ok(())) => {
                        waker.wake(Wake::Kernel(KernelEvent::MountResult { fs: fsn.clone(), ok: true }));
                        waker.wake(Wake::Kernel(KernelEvent::FirstRecoveryDone { fs: fsn.clone() }));
                    }
                    (KernelOp::MountFirst(_) | KernelOp::Mount(_) | KernelOp::MountSpectator, r) => {
                        if let Err(e) = r {
                            waker.wake(Wake::Hook { fs: name.clone(), op: op_name(&op), result: Err(e.clone()) });
                        }
                        waker.wake(Wake::Kernel(KernelEvent::MountResult { fs: fsn.clone(), ok: r.is_ok() }));
                    }
                    (KernelOp::RecoverJournal(j), r) => {
                        if let Err(e) = r {
                            waker.wake(Wake::Hook { fs: name.clone(), op: op_name(&op), result: Err(e.clone()) });
                        }
                        waker.wake(Wake::Kernel(KernelEvent::RecoveryDone { fs: fsn.clone(), jid: *j, ok: r.is_ok() }));
                    }
                    _ => waker.wake(Wake::Hook { fs: name.clone(), op: op_name(&op), result }),
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start the exec worker for {fs}: {e}");
        }
        ExecBackend { jobs: tx, name: own_name, cfg: own_cfg }
    }
}

/// Run `hooks.mounted` (if configured): `Some(why)` if the kernel still has
/// the filesystem mounted.
fn run_mounted(cfg: &ExecConfig, fs: &str) -> Result<Option<String>, String> {
    let Some(hook) = cfg.hooks.get(EXEC_MOUNTED) else { return Ok(None) };
    let mut cmd = Command::new(hook);
    cmd.env("FS", fs).env("OP", EXEC_MOUNTED).env("JID", "");
    let timeout = Duration::from_millis(cfg.timeout_ms).min(MOUNTED_TIMEOUT);
    match run_status_with_timeout(&mut cmd, timeout) {
        Ok(0) => Ok(Some(format!("hooks.mounted {} says it is mounted (exit 0)", hook.display()))),
        Ok(1) => Ok(None),
        Ok(c) => Err(format!("hooks.mounted {} exited with status {c} (0 = mounted, 1 = not)", hook.display())),
        Err(e) => Err(format!("hooks.mounted {}: {e}", hook.display())),
    }
}

fn hook_for(cfg: &ExecConfig, op: &str) -> Option<PathBuf> {
    cfg.hooks.get(op).cloned().or_else(|| cfg.hook.clone())
}

fn run_hook(cfg: &ExecConfig, fs: &str, op: &KernelOp) -> Result<(), String> {
    let name = op_name(op);
    let Some(hook) = hook_for(cfg, name) else { return Err(format!("no hook configured for {name}")) };
    let mut cmd = Command::new(&hook);
    cmd.env("FS", fs).env("OP", name).env("JID", op_jid(op).map(|j| j.to_string()).unwrap_or_default());
    if let KernelOp::MountError(e) = op {
        cmd.env("MOUNT_ERROR", format!("{e:?}"));
    }
    run_with_timeout(&mut cmd, Duration::from_millis(cfg.timeout_ms))
        .map_err(|e| format!("hook {} (OP={name}): {e}", hook.display()))
}

/// `hooks.remount` (else `hook`) with `OP=remount`, `MODE=ro|rw`.
fn run_remount(cfg: &ExecConfig, fs: &str, mode: Mode) -> Result<(), String> {
    let Some(hook) = hook_for(cfg, EXEC_REMOUNT) else { return Err(format!("no hook configured for {EXEC_REMOUNT}")) };
    let mut cmd = Command::new(&hook);
    cmd.env("FS", fs).env("OP", EXEC_REMOUNT).env("JID", "").env("MODE", mode_name(mode));
    run_with_timeout(&mut cmd, Duration::from_millis(cfg.timeout_ms))
        .map_err(|e| format!("hook {} (OP={EXEC_REMOUNT} MODE={}): {e}", hook.display(), mode_name(mode)))
}

impl Backend for ExecBackend {
    fn kind(&self) -> &'static str {
        "exec"
    }

    fn apply(&mut self, op: KernelOp, _out: &mut Vec<KernelEvent>) -> Result<(), String> {
        self.jobs.send(Job::Op(op)).map_err(|_| "the exec worker thread is gone".to_owned())
    }

    /// Runs after the operations queued before it; the result comes as
    /// `Wake::Remounted`.
    fn remount(&mut self, mode: Mode) -> Result<Remounted, String> {
        if hook_for(&self.cfg, EXEC_REMOUNT).is_none() {
            return Err(format!("no hook configured for {EXEC_REMOUNT} (exec.hooks.{EXEC_REMOUNT} or exec.hook)"));
        }
        self.jobs.send(Job::Remount(mode)).map_err(|_| "the exec worker thread is gone".to_owned())?;
        Ok(Remounted::Pending)
    }

    /// `hooks.mounted`; without it (then `mount_point` is configured, which
    /// the daemon checks) nothing to add.
    fn leftover(&self) -> Result<Option<String>, String> {
        run_mounted(&self.cfg, &self.name)
    }

    fn kernel_mounted(&self) -> Result<Option<String>, String> {
        run_mounted(&self.cfg, &self.name)
    }

    fn poll_interval(&self) -> Option<Duration> {
        self.cfg.withdraw_file.as_ref().map(|_| WITHDRAW_POLL)
    }

    /// `withdraw_file`: the host says the kernel withdrew the filesystem.
    fn poll(&mut self, out: &mut Vec<KernelEvent>) {
        let Some(p) = &self.cfg.withdraw_file else { return };
        if p.exists() {
            match std::fs::remove_file(p) {
                Ok(()) => {
                    tracing::error!(fs = %self.name, file = %p.display(), "the host reports a kernel withdraw");
                    if let Ok(fs) = fs_name(&self.name) {
                        out.push(KernelEvent::Withdraw { fs });
                    }
                }
                Err(e) => tracing::error!(fs = %self.name, file = %p.display(), "cannot remove withdraw_file: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::Jid;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    #[test]
    fn withdraw_file_is_reported_once_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let wf = d.path().join("withdrawn");
        let (w, _r) = crate::proc::wake_pair().unwrap();
        let cfg = ExecConfig {
            hook: Some(PathBuf::from("/bin/true")),
            hooks: Default::default(),
            timeout_ms: 5000,
            withdraw_file: Some(wf.clone()),
        };
        let mut b = ExecBackend::new("fs1", cfg, w);
        assert_eq!(b.poll_interval(), Some(WITHDRAW_POLL));
        let mut out = vec![];
        b.poll(&mut out);
        assert!(out.is_empty());
        std::fs::write(&wf, "").unwrap();
        b.poll(&mut out);
        assert_eq!(out, vec![KernelEvent::Withdraw { fs: fs_name("fs1").unwrap() }]);
        assert!(!wf.exists());
        b.poll(&mut out);
        assert_eq!(out.len(), 1, "reported once");
    }

    /// An exec backend for fs1 whose default hook runs `body` (sh, with
    /// `$LOG` naming a log file; exit 0 after it): the temp dir (keep it),
    /// the log path, the backend and its wake receiver.
    fn backend_with_hook(body: &str) -> (tempfile::TempDir, PathBuf, ExecBackend, crate::proc::WakeReceiver) {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let hook = d.path().join("hook.sh");
        std::fs::write(&hook, format!("#!/bin/sh\nLOG={}\n{body}\nexit 0\n", log.display())).unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (w, r) = crate::proc::wake_pair().unwrap();
        let cfg = ExecConfig { hook: Some(hook), hooks: Default::default(), timeout_ms: 5000, withdraw_file: None };
        (d, log, ExecBackend::new("fs1", cfg, w), r)
    }

    #[test]
    fn hooks_get_env_and_results_come_back_in_order() {
        let (_d, log, mut b, r) = backend_with_hook(
            "echo \"$OP $FS $JID\" >> \"$LOG\"\n[ \"$OP\" = recover_journal ] && [ \"$JID\" = 5 ] && exit 1",
        );
        let mut out = vec![];
        for op in [
            KernelOp::SetJid(Jid(0)),
            KernelOp::MountFirst(Jid(0)),
            KernelOp::RecoverJournal(Jid(2)),
            KernelOp::RecoverJournal(Jid(5)),
        ] {
            b.apply(op, &mut out).unwrap();
        }
        assert!(out.is_empty(), "exec results are asynchronous");
        let t = Instant::now();
        let mut got = vec![];
        while got.len() < 6 && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
            got.extend(r.drain());
        }
        let fs = fs_name("fs1").unwrap();
        let kernel: Vec<&KernelEvent> = got
            .iter()
            .filter_map(|w| match w {
                Wake::Kernel(k) => Some(k),
                _ => None,
            })
            .collect();
        assert_eq!(
            kernel,
            vec![
                &KernelEvent::MountResult { fs: fs.clone(), ok: true },
                &KernelEvent::FirstRecoveryDone { fs: fs.clone() },
                &KernelEvent::RecoveryDone { fs: fs.clone(), jid: Jid(2), ok: true },
                &KernelEvent::RecoveryDone { fs, jid: Jid(5), ok: false },
            ]
        );
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "set_jid fs1 0\nmount_first fs1 0\nrecover_journal fs1 2\nrecover_journal fs1 5\n"
        );
    }

    #[test]
    fn remount_runs_the_hook_in_order_with_mode() {
        let (_d, log, mut b, r) = backend_with_hook("echo \"$OP $MODE\" >> \"$LOG\"\n[ \"$MODE\" = rw ] && exit 3");
        let mut out = vec![];
        b.apply(KernelOp::Unblock, &mut out).unwrap();
        assert_eq!(b.remount(Mode::Ro), Ok(Remounted::Pending));
        assert_eq!(b.remount(Mode::Rw), Ok(Remounted::Pending));
        let t = Instant::now();
        let mut got = vec![];
        while got.len() < 2 && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
            got.extend(r.drain().into_iter().filter_map(|w| match w {
                Wake::Remounted { fs, mode, result } => Some((fs, mode, result.is_ok())),
                _ => None,
            }));
        }
        assert_eq!(got, vec![("fs1".to_owned(), Mode::Ro, true), ("fs1".to_owned(), Mode::Rw, false)]);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "unblock \nremount ro\nremount rw\n");
    }
}
