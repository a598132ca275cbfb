//! Kernel backends: what a `KernelOp` does on this host. One backend
//! instance per configured filesystem, behind one trait.
//!
//! * [`sysfs::SysfsBackend`] (`gfs2-sysfs`): GFS2's lock_module sysfs files
//!   plus uevents (the pre-3.3 gfs_controld interface).
//! * [`exec::ExecBackend`] (`exec`): runs hook commands (env `FS`, `JID`,
//!   `OP`), exit status 0 = success.
//! * [`memory::MemoryBackend`] (`memory`): immediate success, with failure
//!   injection; for the demo and tests.
//! * [`dlm::DlmBackend`] (`dlm`): cohortd as the only control daemon of the
//!   kernel DLM and GFS2 (configfs, sysfs, uevents, mount(8)); the DLM
//!   lockspace's membership is an auxiliary group (see [`Backend::aux_group`]).
//!
//! Completions ([`KernelEvent`]s) are pushed into `out` when they are known
//! at once, or arrive later (exec: through the main loop's waker; sysfs:
//! from [`Backend::poll`] after a uevent or the periodic re-read).

pub mod dlm;
pub mod exec;
pub mod memory;
pub mod sysfs;

use std::os::fd::RawFd;
use std::time::Duration;

use cohort_core::node::{KernelEvent, KernelOp};
use cohort_core::wire::Mode;
use cohort_core::Generation;

use crate::config::{BackendConfig, FsConfig};
use crate::proc::Waker;

pub trait Backend {
    /// `gfs2-sysfs`, `exec` or `memory`.
    fn kind(&self) -> &'static str;

    /// Carry out one operation, in the order the core emitted them.
    /// Completions known now go into `out`. An `Err` means the operation
    /// could not even be started (the engine turns it into a failed result
    /// where the core expects one).
    fn apply(&mut self, op: KernelOp, out: &mut Vec<KernelEvent>) -> Result<(), String>;

    /// An fd to poll for readability (uevents); then call [`Backend::poll`].
    fn poll_fd(&self) -> Option<RawFd> {
        None
    }

    /// Collect completions after the fd was readable or the interval passed.
    fn poll(&mut self, _out: &mut Vec<KernelEvent>) {}

    /// Call [`Backend::poll`] at least this often while something is awaited.
    fn poll_interval(&self) -> Option<Duration> {
        None
    }

    /// Is the filesystem still mounted from a previous run? `Some(why)`.
    /// Checked at start, before joining (with the configured `mount_point`,
    /// which the daemon checks for every backend).
    fn leftover(&self) -> Result<Option<String>, String> {
        Ok(None)
    }

    /// Does the kernel have the filesystem mounted now? `Some(why)`: yes,
    /// and how that is known; `Err`: cannot tell (callers treat it as
    /// mounted). The core's contract: `Request::Unmount` only after the
    /// kernel unmounted (the others then free the journal without replay),
    /// so the daemon asks this before every clean leave. Called on the main
    /// loop: must be quick.
    fn kernel_mounted(&self) -> Result<Option<String>, String>;

    /// Once the daemon knows its node id (after connecting the transport),
    /// before anything is joined: host setup (the DLM's configfs). Returns
    /// what was done, for the log.
    fn start(&mut self, _me: u32) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }

    /// The name of an auxiliary membership group this backend needs (the
    /// DLM lockspace: `dlm:<fs>`). Its members join and leave through
    /// [`Ask`]s; its kernel operations are ignored.
    fn aux_group(&self) -> Option<&str> {
        None
    }

    /// The agreed state of the auxiliary group, after every step of the
    /// node and before anything it queued is sent (a lockspace stops before
    /// this node's START for a change goes out).
    fn aux_state(&mut self, _st: &AuxState) {}

    /// For `cohortctl status`: the auxiliary group's kernel object (state,
    /// and what it waits for, if anything).
    fn aux_status(&self) -> Option<(String, Option<String>)> {
        None
    }

    /// The daemon group's members changed (node ids, ascending; called
    /// before anything queued with the change is sent).
    fn cluster_members(&mut self, _members: &[u32]) {}

    /// This node's leave of the auxiliary group was applied (agreed), or
    /// could not be asked for.
    fn aux_left(&mut self) {}

    /// What the backend asks of the daemon since the last call.
    fn take_asks(&mut self) -> Vec<Ask> {
        Vec::new()
    }

    /// Lines for the daemon's event log since the last call.
    fn take_notes(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// `cohortctl unmount` for backends that own the kernel mount: start
    /// unmounting and answer `Ok(what)`; the backend asks to leave the group
    /// ([`Ask::LeaveFs`]) once the kernel is done with the journal. `None`:
    /// not this backend's job (the daemon leaves the group once the kernel
    /// has nothing mounted).
    fn unmount(&mut self) -> Option<Result<String, String>> {
        None
    }

    /// `cohortctl remount`: remount the kernel's filesystem `mode` (ro or
    /// rw; the engine orders it against the cluster's agreement: rw -> ro
    /// remounts the kernel first, ro -> rw once the change is agreed).
    /// [`Remounted::Pending`]: the result comes later as
    /// [`crate::proc::Wake::Remounted`]. `Err`: it could not be done or
    /// started (the kernel keeps its mode).
    fn remount(&mut self, _mode: Mode) -> Result<Remounted, String> {
        Err(format!(
            "the {} backend cannot remount a filesystem: umount it and mount it again with the other mode",
            self.kind()
        ))
    }
}

/// How a backend's remount went, as far as it knows at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remounted {
    Done,
    Pending,
}

/// Requests of a backend to the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Join the auxiliary group (the kernel created the lockspace).
    JoinAux,
    /// Leave the auxiliary group (the kernel released the lockspace).
    LeaveAux,
    /// The kernel unmounted far enough that the journal is clean and no
    /// more I/O happens: leave the filesystem's mount group.
    LeaveFs,
}

/// The agreed state of an auxiliary group, as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuxState {
    /// This node is a member at `generation`.
    pub member: bool,
    /// Every member completed the change to `generation`.
    pub synced: bool,
    pub generation: Generation,
    /// Node ids, ascending.
    pub members: Vec<u32>,
    /// May a stopped lockspace start: `Err(why not)` while fencing is
    /// pending, the cluster is not quorate or the daemon group syncs.
    pub gate: Result<(), String>,
}

/// Build the backend of one configured filesystem.
pub fn build(fs: &FsConfig, waker: Option<Waker>) -> Result<Box<dyn Backend>, String> {
    Ok(match &fs.backend {
        BackendConfig::Memory(m) => Box::new(memory::MemoryBackend::new(&fs.name, m.clone())),
        BackendConfig::Exec(e) => {
            let w = waker.ok_or("the exec backend needs the daemon's main loop (not available here)")?;
            Box::new(exec::ExecBackend::new(&fs.name, e.clone(), w))
        }
        BackendConfig::Sysfs(s) => Box::new(sysfs::SysfsBackend::new(&fs.name, s.clone())?),
        BackendConfig::Dlm(d) => Box::new(dlm::DlmBackend::new(&fs.name, (**d).clone(), waker)?),
    })
}

/// `OP` name of an operation (exec hooks, logs).
pub fn op_name(op: &KernelOp) -> &'static str {
    match op {
        KernelOp::Block => "block",
        KernelOp::Unblock => "unblock",
        KernelOp::SetJid(_) => "set_jid",
        KernelOp::MountFirst(_) => "mount_first",
        KernelOp::Mount(_) => "mount",
        KernelOp::MountSpectator => "mount_spectator",
        KernelOp::RecoverJournal(_) => "recover_journal",
        KernelOp::Release => "release",
        KernelOp::Unmounted => "unmounted",
        KernelOp::MountError(_) => "mount_error",
    }
}

/// The journal an operation names, if any.
pub fn op_jid(op: &KernelOp) -> Option<u16> {
    match op {
        KernelOp::SetJid(j) | KernelOp::MountFirst(j) | KernelOp::Mount(j) | KernelOp::RecoverJournal(j) => Some(j.0),
        _ => None,
    }
}

/// The failure event the core expects when an operation cannot run.
pub fn failure_event(fs: &cohort_core::wire::FsName, op: &KernelOp) -> Option<KernelEvent> {
    match op {
        KernelOp::MountFirst(_) | KernelOp::Mount(_) | KernelOp::MountSpectator => {
            Some(KernelEvent::MountResult { fs: fs.clone(), ok: false })
        }
        KernelOp::RecoverJournal(j) => Some(KernelEvent::RecoveryDone { fs: fs.clone(), jid: *j, ok: false }),
        _ => None,
    }
}
