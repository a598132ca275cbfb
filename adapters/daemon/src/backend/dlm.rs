//! `dlm`: cohortd as the cluster's only control daemon for the kernel DLM
//! and GFS2 (no dlm_controld, no gfs_controld). Linux ≥ 3.3 kernels; checked
//! on 6.1 (tests/uml-lab, FINDINGS.md there).
//!
//! **Cluster setup** ([`Backend::start`], once the node id is known): under
//! configfs `<configfs>/cluster` (the only directory ever made there: a
//! second one re-points the DLM's globals), `cluster_name`, one `comms/<id>`
//! per configured node (`nodeid`, `addr` as one 128-byte `sockaddr_storage`
//! write, `local` for this node). `/dev/dlm-monitor` is held open for the
//! daemon's life: when it closes the kernel stops every lockspace.
//!
//! **GFS2** through its lock_module interface with the DLM recovery
//! callbacks off (`recover_callbacks` 0, the default): the mount group picks
//! journal ids, the first mounter and the replayer, as gfs_controld did.
//!
//! | operation            | what happens |
//! |----------------------|--------------|
//! | `MountFirst(j)`/`Mount(j)`/`MountSpectator` | a worker runs `mount -t gfs2 [-o OPTIONS[,spectator]] DEVICE MOUNT_POINT`; once `lock_module/` exists it writes `first` (1 for the first mounter) and `jid` (j; 0 for a spectator), which the kernel takes after its lockspace joined; mount(8)'s exit status is the mount result (a first mount returns after replaying every journal: first recovery done too) |
//! | `Block`/`Unblock`, `RecoverJournal(j)`, `Release` | as `gfs2-sysfs`: `block`, `recover` (done on the `change` uevent `RECOVERY=Done|Failed`), `withdraw` |
//!
//! **The DLM lockspace** (named like the filesystem) has its own membership,
//! agreed in cohort's stream like everything else: an auxiliary group
//! `dlm:<fs>` ([`Backend::aux_group`]). The kernel's `online` uevent (the
//! lockspace is created by mount(2) and waits) makes this node ask to join
//! it; `offline` (released) to leave it. After every step, before anything
//! is sent, the engine hands the group's agreed state to
//! [`Backend::aux_state`]:
//!
//! * a change in progress (not synced, or synced at a generation the
//!   lockspace was not started at): `control` ← 0, so every member stopped
//!   its lockspace before its START for that generation goes out;
//! * synced, no fencing pending, quorate: the lockspace's members in
//!   configfs (`spaces/<ls>/nodes/<id>`) become the group's, `id` (a hash
//!   of the name, the same everywhere), `control` ← 1, and for a joining
//!   lockspace `event_done` ← 0 (never a positive value: that panics 6.1).
//!
//! So the DLM restarts after a failure only once the failed node is fenced
//! and the cluster is quorate (the gate dlm_controld provides), and GFS2,
//! blocked by the mount group at the change, replays before it unblocks.
//!
//! **Unmount** (`cohortctl unmount`): a worker runs `umount MOUNT_POINT`.
//! GFS2 flushes its journal and then releases the lockspace (`offline`
//! uevent, answered with `event_done` 0): from then on the journal is clean
//! and the filesystem does no more I/O, so the daemon leaves the mount group
//! (the others free the journal without replay) and the lockspace group (the
//! others remove this node, which lets umount(2) finish).
//!
//! A lockspace that comes online while cohortd did not start a mount (a
//! mount(8) by hand) is refused (`event_done` ← -1: mount fails with EPERM).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cohort_core::node::{KernelEvent, KernelOp};
use cohort_core::wire::{fs_name, FsName};
use cohort_core::Generation;

use super::sysfs::{SysfsBackend, Uevent};
use super::{Ask, AuxState, Backend};
use crate::config::DlmConfig;
use crate::proc::{Wake, Waker};

/// The auxiliary group that carries a lockspace's membership.
pub fn aux_group_name(fs: &str) -> String {
    format!("dlm:{fs}")
}

/// What the workers report.
enum Done {
    Mount { first: bool, result: Result<(), String> },
    Umount { result: Result<(), String> },
    Note(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ls {
    /// No lockspace of ours in the kernel (as far as we know).
    None,
    /// Created by mount(2), waiting for `event_done`; we asked to join the group.
    Joining,
    /// Joined; running at this generation of the group, or stopped.
    Running(Generation),
    Stopped,
    /// Released (`offline` answered); we asked to leave the group.
    Leaving,
}

pub struct DlmBackend {
    fs: FsName,
    ls: String,
    aux: String,
    cfg: DlmConfig,
    lm: SysfsBackend,
    waker: Option<Waker>,
    tx: mpsc::Sender<Done>,
    rx: mpsc::Receiver<Done>,
    monitor: Option<File>,
    /// A mount(8) of ours runs.
    mounting: Option<Instant>,
    slow_mount_warned: bool,
    mounted: bool,
    /// A umount(8) of ours runs.
    unmounting: bool,
    /// The kernel released the lockspace during our umount: the journal is clean.
    clean: bool,
    ls_state: Ls,
    asks: Vec<Ask>,
    notes: Vec<String>,
    /// Nodes seen in the daemon group since their `comms` entry was made.
    seen: Vec<u32>,
    /// Why a stopped or joining lockspace does not start yet.
    waits: Option<String>,
    /// This node is a member of the lockspace group (last agreed state).
    aux_member: bool,
    /// The kernel waits for `event_done` of a release until our leave of
    /// the group is agreed.
    release_pending: bool,
    me: u32,
}

impl DlmBackend {
    pub fn new(fs: &str, cfg: DlmConfig, waker: Option<Waker>) -> Result<DlmBackend, String> {
        let lm = SysfsBackend::new(fs, cfg.lm.clone())?;
        let (tx, rx) = mpsc::channel();
        Ok(DlmBackend {
            fs: fs_name(fs).map_err(|_| format!("invalid filesystem name {fs:?}"))?,
            ls: fs.to_owned(),
            aux: aux_group_name(fs),
            cfg,
            lm,
            waker,
            tx,
            rx,
            monitor: None,
            mounting: None,
            slow_mount_warned: false,
            mounted: false,
            unmounting: false,
            clean: false,
            ls_state: Ls::None,
            asks: Vec::new(),
            notes: Vec::new(),
            seen: Vec::new(),
            waits: None,
            aux_member: false,
            release_pending: false,
            me: 0,
        })
    }

    fn note(&mut self, text: String) {
        tracing::info!(fs = %self.fs, "{text}");
        self.notes.push(text);
    }

    fn cluster_dir(&self) -> PathBuf {
        self.cfg.configfs.join("cluster")
    }

    fn ls_sysfs(&self, file: &str) -> PathBuf {
        self.cfg.dlm_sysfs.join(&self.ls).join(file)
    }

    fn write_ls(&self, file: &str, value: &str) -> Result<(), String> {
        write_file(&self.ls_sysfs(file), value)
    }

    /// Run a worker thread; it reports through the channel and wakes the loop.
    fn spawn(&self, name: &str, job: impl FnOnce() -> Done + Send + 'static) -> Result<(), String> {
        let tx = self.tx.clone();
        let waker = self.waker.clone();
        std::thread::Builder::new()
            .name(format!("{name}-{}", self.ls))
            .spawn(move || {
                let d = job();
                let _ = tx.send(d);
                if let Some(w) = waker {
                    w.wake(Wake::Backend);
                }
            })
            .map(|_| ())
            .map_err(|e| format!("cannot start a worker thread: {e}"))
    }

    fn start_mount(&mut self, first: bool, jid: Option<u16>) -> Result<(), String> {
        let mut opts: Vec<String> = self.cfg.options.iter().cloned().collect();
        if jid.is_none() {
            opts.push("spectator".into());
        }
        let mut cmd = Command::new(&self.cfg.mount_cmd);
        cmd.arg("-t").arg("gfs2");
        if !opts.is_empty() {
            cmd.arg("-o").arg(opts.join(","));
        }
        cmd.arg(&self.cfg.device).arg(&self.cfg.mount_point);
        let shown = format!("{cmd:?}");
        let lm_dir = self.lm.lock_module_dir().to_owned();
        let tx = self.tx.clone();
        let waker = self.waker.clone();
        self.mounting = Some(Instant::now());
        self.slow_mount_warned = false;
        self.clean = false;
        self.note(format!(
            "{}: running {shown} ({})",
            self.fs,
            match (first, jid) {
                (true, Some(j)) => format!("first mounter, journal {j}"),
                (false, Some(j)) => format!("journal {j}"),
                _ => "spectator".into(),
            }
        ));
        self.spawn("mount", move || {
            let note = |t: String| {
                let _ = tx.send(Done::Note(t));
                if let Some(w) = &waker {
                    w.wake(Wake::Backend);
                }
            };
            Done::Mount { first, result: run_mount(cmd, &lm_dir, first, jid, &note) }
        })
    }

    fn on_dlm_uevent(&mut self, ev: &Uevent) {
        tracing::debug!(fs = %self.fs, action = %ev.action, env = ?ev.env, "dlm uevent");
        match ev.action.as_str() {
            "online" => {
                if self.mounting.is_none() {
                    // Not a mount of ours: refuse the join (never positive).
                    let r = self.write_ls("event_done", "-1");
                    self.note(format!(
                        "{}: REFUSED a lockspace join that cohortd did not start (a mount by hand?): mount through \
                         `cohortctl mount {}`{}",
                        self.fs,
                        self.fs,
                        r.err().map(|e| format!(" (answer failed: {e})")).unwrap_or_default()
                    ));
                    return;
                }
                self.ls_state = Ls::Joining;
                self.note(format!("{}: the kernel created lockspace {}; joining group {}", self.fs, self.ls, self.aux));
                self.asks.push(Ask::JoinAux);
            }
            "offline" => {
                // The kernel waits for `event_done` before it releases the
                // lockspace (and shuts its connections down). As dlm_controld
                // does, answer only once this node's leave of the lockspace
                // group is agreed ([`Backend::aux_left`]): the others then
                // drop it from their next lockspace start instead of running
                // a recovery with a member that is going away (seen on 6.1:
                // "reset node 4 because shutdown stuck", a midcomms WARNING
                // and a hung umount on the other node). Not a member: now.
                let was = self.ls_state;
                self.ls_state = Ls::Leaving;
                if self.unmounting && self.mounted {
                    self.clean = true;
                    self.note(format!(
                        "{}: the kernel flushed the journal and releases lockspace {}: leaving the mount group and the \
                         lockspace group",
                        self.fs, self.ls
                    ));
                    self.asks.push(Ask::LeaveFs);
                } else {
                    self.note(format!(
                        "{}: the kernel releases lockspace {}; leaving group {}",
                        self.fs, self.ls, self.aux
                    ));
                }
                if self.aux_member && was != Ls::None {
                    self.release_pending = true;
                    self.asks.push(Ask::LeaveAux);
                } else {
                    self.answer_release();
                }
            }
            _ => {}
        }
    }

    fn on_done(&mut self, d: Done, out: &mut Vec<KernelEvent>) {
        match d {
            Done::Note(t) => self.note(t),
            Done::Mount { first, result } => {
                self.mounting = None;
                match result {
                    Ok(()) => {
                        self.mounted = true;
                        self.lm.set_mounted();
                        self.note(format!("{}: mounted at {}", self.fs, self.cfg.mount_point.display()));
                        out.push(KernelEvent::MountResult { fs: self.fs.clone(), ok: true });
                        if first {
                            // mount(2) of a first mounter returns after every journal was replayed.
                            out.push(KernelEvent::FirstRecoveryDone { fs: self.fs.clone() });
                        }
                    }
                    Err(e) => {
                        self.note(format!("{}: mount FAILED: {e}", self.fs));
                        out.push(KernelEvent::MountResult { fs: self.fs.clone(), ok: false });
                    }
                }
            }
            Done::Umount { result } => {
                self.unmounting = false;
                match result {
                    Ok(()) => {
                        self.mounted = false;
                        self.note(format!("{}: unmounted from {}", self.fs, self.cfg.mount_point.display()));
                    }
                    Err(e) => {
                        self.note(format!("{}: umount FAILED: {e}", self.fs));
                    }
                }
            }
        }
    }

    /// Let the kernel go on with a lockspace release.
    fn answer_release(&mut self) {
        self.release_pending = false;
        if let Err(e) = self.write_ls("event_done", "0") {
            self.note(format!("{}: event_done for the lockspace release: {e}", self.fs));
        }
    }

    /// Make the lockspace's configfs members exactly `members`.
    fn set_members(&self, members: &[u32]) -> Result<(), String> {
        let nodes = self.cluster_dir().join("spaces").join(&self.ls).join("nodes");
        fs::create_dir_all(&nodes).map_err(|e| format!("mkdir {}: {e}", nodes.display()))?;
        let have: Vec<u32> = fs::read_dir(&nodes)
            .map_err(|e| format!("read {}: {e}", nodes.display()))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        for n in have.iter().filter(|n| !members.contains(n)) {
            let d = nodes.join(n.to_string());
            rmdir_item(&d).map_err(|e| format!("rmdir {}: {e}", d.display()))?;
        }
        for n in members.iter().filter(|n| !have.contains(n)) {
            let d = nodes.join(n.to_string());
            fs::create_dir(&d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
            write_file(&d.join("nodeid"), &n.to_string())?;
            write_file(&d.join("weight"), "1")?;
        }
        Ok(())
    }

    fn remove_space(&self) {
        let sp = self.cluster_dir().join("spaces").join(&self.ls);
        if let Ok(rd) = fs::read_dir(sp.join("nodes")) {
            for e in rd.flatten() {
                let _ = rmdir_item(&e.path());
            }
        }
        let _ = fs::remove_dir(&sp);
    }
}

/// mount(8), and the lock_module answers once the kernel asks for them.
fn run_mount(
    mut cmd: Command,
    lm_dir: &Path,
    first: bool,
    jid: Option<u16>,
    note: &dyn Fn(String),
) -> Result<(), String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let mut answered = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for mount: {e}")),
        }
        if !answered && lm_dir.is_dir() {
            answered = true;
            // Both writes wait in the kernel until the lockspace joined.
            let r = write_file(&lm_dir.join("first"), if first { "1" } else { "0" })
                .and_then(|_| write_file(&lm_dir.join("jid"), &jid.unwrap_or(0).to_string()));
            match r {
                Ok(()) => note(format!("journal id {} given to the kernel (first={})", jid.unwrap_or(0), first as u8)),
                Err(e) => note(format!("lock_module answer failed: {e}")),
            }
            continue;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} ({})", err.trim(), status))
    }
}

fn run_umount(mut cmd: Command) -> Result<(), String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{} ({})", String::from_utf8_lossy(&out.stderr).trim(), out.status))
    }
}

/// rmdir of a configfs item (its attributes go with it). A test tree of
/// plain files is not empty: removed recursively there.
fn rmdir_item(d: &Path) -> std::io::Result<()> {
    match fs::remove_dir(d) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => fs::remove_dir_all(d),
        r => r,
    }
}

fn write_file(p: &Path, value: &str) -> Result<(), String> {
    // O_CREAT|O_TRUNC like a shell redirection: the attribute exists on a
    // real kernel (neither flag changes anything there); a test tree of
    // plain files needs them.
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(p)
        .map_err(|e| format!("open {} for writing: {e}", p.display()))?;
    f.write_all(value.as_bytes()).map_err(|e| format!("write {value:?} to {}: {e}", p.display()))
}

/// The lockspace's global id: the same on every node (FNV-1a of the name,
/// never 0).
pub fn lockspace_id(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

/// `struct sockaddr_storage` (128 bytes) for configfs `comms/<id>/addr`:
/// family in host order, port 0, the address.
pub fn sockaddr_storage(addr: IpAddr) -> [u8; 128] {
    let mut b = [0u8; 128];
    match addr {
        IpAddr::V4(a) => {
            b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[4..8].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[8..24].copy_from_slice(&a.octets());
        }
    }
    b
}

/// Configure the DLM cluster in configfs for this node: idempotent (a
/// restarted daemon finds its entries and leaves them).
pub fn setup_cluster(cfg: &DlmConfig, me: u32) -> Result<Vec<String>, String> {
    let mut notes = Vec::new();
    if !cfg.configfs.is_dir() {
        return Err(format!(
            "{} does not exist: load the dlm module and mount configfs (mount -t configfs none /sys/kernel/config)",
            cfg.configfs.display()
        ));
    }
    let cluster = cfg.configfs.join("cluster");
    if !cluster.is_dir() {
        fs::create_dir(&cluster).map_err(|e| format!("mkdir {}: {e}", cluster.display()))?;
        notes.push(format!("DLM: created {}", cluster.display()));
    }
    let name_file = cluster.join("cluster_name");
    let cur = fs::read_to_string(&name_file).unwrap_or_default();
    if cur.trim() != cfg.lm.cluster {
        write_file(&name_file, &cfg.lm.cluster)?;
    }
    if !cfg.addresses.contains_key(&me) {
        return Err(format!("no DLM address for this node ({me}) in dlm.addresses"));
    }
    for (id, addr) in &cfg.addresses {
        if cluster.join("comms").join(id.to_string()).is_dir() {
            continue;
        }
        add_comm(&cluster, *id, *addr, *id == me)?;
        notes.push(format!("DLM: node {id} at {addr}{}", if *id == me { " (this node)" } else { "" }));
    }
    Ok(notes)
}

/// `comms/<id>`: node id, address (one write of exactly 128 bytes; a second
/// write would add an address), `local` for this node.
fn add_comm(cluster: &Path, id: u32, addr: IpAddr, local: bool) -> Result<(), String> {
    let d = cluster.join("comms").join(id.to_string());
    fs::create_dir(&d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    write_file(&d.join("nodeid"), &id.to_string())?;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(d.join("addr"))
        .map_err(|e| format!("open {}/addr: {e}", d.display()))?;
    f.write_all(&sockaddr_storage(addr)).map_err(|e| format!("write {}/addr: {e}", d.display()))?;
    if local {
        write_file(&d.join("local"), "1")?;
    }
    Ok(())
}

impl Backend for DlmBackend {
    fn kind(&self) -> &'static str {
        "dlm"
    }

    /// A node that left the cluster loses its `comms` entry (the kernel
    /// closes the connection and forgets the node's message sequence
    /// numbers); it gets a fresh one when it is back, before any lockspace
    /// can include it. Without this a rebooted node's DLM ignores the
    /// others' messages ("seq mismatch") and its first lockspace join hangs.
    /// (dlm_controld does the same on cluster membership changes.)
    fn cluster_members(&mut self, members: &[u32]) {
        if self.me == 0 {
            return;
        }
        let gone: Vec<u32> = self.seen.iter().copied().filter(|n| !members.contains(n) && *n != self.me).collect();
        for n in gone {
            self.seen.retain(|x| *x != n);
            let d = self.cluster_dir().join("comms").join(n.to_string());
            match rmdir_item(&d) {
                Ok(()) => self.note(format!("DLM: node {n} left the cluster: its connection is closed and forgotten")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => self.note(format!("DLM: rmdir {}: {e}", d.display())),
            }
        }
        for n in members {
            if self.seen.contains(n) {
                continue;
            }
            self.seen.push(*n);
            let d = self.cluster_dir().join("comms").join(n.to_string());
            if d.is_dir() {
                continue;
            }
            match self.cfg.addresses.get(n).copied() {
                Some(addr) => match add_comm(&self.cluster_dir(), *n, addr, *n == self.me) {
                    Ok(()) => self.note(format!("DLM: node {n} at {addr} is back in the cluster")),
                    Err(e) => self.note(format!("DLM: node {n}: {e}")),
                },
                None => self.note(format!("DLM: node {n} joined but has no address in dlm.addresses")),
            }
        }
    }

    fn start(&mut self, me: u32) -> Result<Vec<String>, String> {
        self.me = me;
        let mut notes = setup_cluster(&self.cfg, me)?;
        if let Some(m) = &self.cfg.monitor {
            let f = File::open(m).map_err(|e| format!("open {}: {e} (is the dlm module loaded?)", m.display()))?;
            self.monitor = Some(f);
            notes.push(format!("DLM: holding {} open (the kernel stops lockspaces if cohortd dies)", m.display()));
        }
        Ok(notes)
    }

    fn apply(&mut self, op: KernelOp, out: &mut Vec<KernelEvent>) -> Result<(), String> {
        match op {
            KernelOp::SetJid(_) => self.lm.apply(op, out),
            KernelOp::MountFirst(j) => self.start_mount(true, Some(j.0)),
            KernelOp::Mount(j) => self.start_mount(false, Some(j.0)),
            KernelOp::MountSpectator => self.start_mount(false, None),
            KernelOp::Block | KernelOp::Unblock | KernelOp::RecoverJournal(_) | KernelOp::Release => {
                self.lm.apply(op, out)
            }
            KernelOp::Unmounted | KernelOp::MountError(_) => {
                self.clean = false;
                if self.ls_state == Ls::Leaving || self.ls_state == Ls::None {
                    self.remove_space();
                }
                self.lm.apply(op, out)
            }
        }
    }

    fn poll_fd(&self) -> Option<RawFd> {
        self.lm.poll_fd()
    }

    fn poll(&mut self, out: &mut Vec<KernelEvent>) {
        let prefix = format!("/kernel/dlm/{}", self.ls);
        for ev in self.lm.read_uevents() {
            if ev.devpath == prefix {
                self.on_dlm_uevent(&ev);
            } else {
                self.lm.handle_uevent(&ev, out);
            }
        }
        while let Ok(d) = self.rx.try_recv() {
            self.on_done(d, out);
        }
        self.lm.progress(out);
        if let Some(t) = self.mounting {
            if !self.slow_mount_warned && t.elapsed() > Duration::from_millis(self.cfg.lm.mount_timeout_ms) {
                self.slow_mount_warned = true;
                let stage = match self.ls_state {
                    Ls::None => "the kernel has not created the lockspace yet",
                    Ls::Joining => "the lockspace waits to join (cohortctl status: group dlm:<fs>)",
                    _ => "the lockspace joined; the kernel mounts",
                };
                let t = format!("{}: mount still running after {} ms: {stage}", self.fs, t.elapsed().as_millis());
                tracing::warn!("{t}");
                self.notes.push(t);
            }
        }
    }

    fn poll_interval(&self) -> Option<Duration> {
        (self.lm.awaiting() || self.mounting.is_some() || self.unmounting)
            .then(|| Duration::from_millis(self.cfg.lm.poll_ms))
    }

    fn leftover(&self) -> Result<Option<String>, String> {
        let d = self.lm.fs_dir();
        Ok(d.is_dir().then(|| format!("{} exists (the kernel still has the filesystem mounted)", d.display())))
    }

    fn kernel_mounted(&self) -> Result<Option<String>, String> {
        if self.clean {
            return Ok(None);
        }
        if self.mounting.is_some() {
            return Ok(Some("cohortd's mount(8) is running".into()));
        }
        if self.unmounting {
            return Ok(Some("cohortd's umount(8) is running; the lockspace is not released yet".into()));
        }
        self.leftover()
    }

    fn aux_group(&self) -> Option<&str> {
        Some(&self.aux)
    }

    fn aux_state(&mut self, st: &AuxState) {
        let running_gen = match self.ls_state {
            Ls::Running(g) => Some(g),
            _ => None,
        };
        self.aux_member = st.member;
        if !st.member {
            return;
        }
        let ready = st.synced && st.gate.is_ok();
        if running_gen == Some(st.generation) && st.synced {
            // Running at the agreed membership. (A closed gate at the same
            // generation, e.g. fencing of a node outside the lockspace,
            // changes nothing: stopping alone, without the others, would
            // let this node recover against running members.)
            return;
        }
        if running_gen.is_some() {
            // A change: stop before our START for it goes out.
            match self.write_ls("control", "0") {
                Ok(()) => self.note(format!(
                    "{}: lockspace {} stopped (group {} changes to generation {}.{})",
                    self.fs, self.ls, self.aux, st.generation.ring, st.generation.epoch
                )),
                Err(e) => self.note(format!("{}: lockspace stop FAILED: {e}", self.fs)),
            }
            self.ls_state = Ls::Stopped;
        }
        if !ready {
            self.waits = Some(match &st.gate {
                _ if !st.synced => format!("every member of {} to stop for the change", self.aux),
                Err(why) => why.clone(),
                Ok(()) => String::new(),
            });
            return;
        }
        self.waits = None;
        if !matches!(self.ls_state, Ls::Stopped | Ls::Joining) {
            return;
        }
        let joining = self.ls_state == Ls::Joining;
        let r = self
            .set_members(&st.members)
            .and_then(|_| if joining { self.write_ls("id", &lockspace_id(&self.ls).to_string()) } else { Ok(()) })
            .and_then(|_| self.write_ls("control", "1"))
            .and_then(|_| if joining { self.write_ls("event_done", "0") } else { Ok(()) });
        let members = st.members.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(",");
        match r {
            Ok(()) => {
                self.ls_state = Ls::Running(st.generation);
                self.note(format!(
                    "{}: lockspace {} {} with members {members} (group {} generation {}.{})",
                    self.fs,
                    self.ls,
                    if joining { "joined" } else { "started" },
                    self.aux,
                    st.generation.ring,
                    st.generation.epoch
                ));
            }
            Err(e) => self.note(format!("{}: lockspace start FAILED: {e}", self.fs)),
        }
    }

    fn aux_status(&self) -> Option<(String, Option<String>)> {
        let state = match self.ls_state {
            Ls::None => "none".to_owned(),
            Ls::Joining => "joining".to_owned(),
            Ls::Running(g) => format!("running at {}.{}", g.ring, g.epoch),
            Ls::Stopped => "stopped".to_owned(),
            Ls::Leaving => "released".to_owned(),
        };
        let waits = match self.ls_state {
            Ls::Joining | Ls::Stopped => self.waits.clone(),
            _ => None,
        };
        Some((state, waits))
    }

    fn aux_left(&mut self) {
        self.aux_member = false;
        if self.release_pending {
            self.answer_release();
        }
    }

    fn take_asks(&mut self) -> Vec<Ask> {
        std::mem::take(&mut self.asks)
    }

    fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    fn unmount(&mut self) -> Option<Result<String, String>> {
        if self.clean {
            // The kernel let go of the journal: the daemon leaves the group.
            return None;
        }
        if self.unmounting {
            return Some(Err(format!("{}: an unmount is already running", self.fs)));
        }
        if self.mounting.is_some() {
            return Some(Err(format!("{}: the mount is still running; unmount once it finished", self.fs)));
        }
        if !self.mounted {
            // Nothing of ours in the kernel: leave the group directly.
            return None;
        }
        let mut cmd = Command::new(&self.cfg.umount_cmd);
        cmd.arg(&self.cfg.mount_point);
        let shown = format!("{cmd:?}");
        self.unmounting = true;
        self.clean = false;
        if let Err(e) = self.spawn("umount", move || Done::Umount { result: run_umount(cmd) }) {
            self.unmounting = false;
            return Some(Err(e));
        }
        Some(Ok(format!(
            "unmounting {}: running {shown}; cohortd leaves the mount group once the kernel released the journal",
            self.fs
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_is_family_then_address() {
        let b = sockaddr_storage("192.0.2.11".parse().unwrap());
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), libc::AF_INET as u16);
        assert_eq!(&b[2..4], &[0, 0], "port 0");
        assert_eq!(&b[4..8], &[192, 0, 2, 11]);
        assert!(b[8..].iter().all(|x| *x == 0));
    }

    #[test]
    fn lockspace_id_is_stable_and_nonzero() {
        assert_eq!(lockspace_id("fs1"), lockspace_id("fs1"));
        assert_ne!(lockspace_id("fs1"), lockspace_id("fs2"));
        assert_ne!(lockspace_id(""), 0);
    }

    #[test]
    fn dlm_writes_are_single_writes_without_newline() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("control");
        fs::write(&p, "").unwrap();
        write_file(&p, "1").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "1");
    }
}
