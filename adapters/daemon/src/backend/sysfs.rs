//! `gfs2-sysfs`: GFS2's lock_module interface (the one gfs_controld used
//! before Linux 3.3), under `<root>/<cluster>:<fs>/lock_module/`.
//!
//! | operation            | what is written / awaited                                              |
//! |----------------------|------------------------------------------------------------------------|
//! | `Block` / `Unblock`  | `block` ← `1` / `0`                                                    |
//! | `SetJid(j)`          | remembered, written by the mount                                       |
//! | `MountFirst(j)`      | wait for the directory (mount(2) in progress), `first` ← `1`, `jid` ← j; mount result ok; then `first_done` = 1 → first recovery done |
//! | `Mount(j)`           | same with `first` ← `0`                                                |
//! | `MountSpectator`     | same with `first` ← `0`, `jid` ← `0` (the kernel: a negative jid fails the mount, a spectator mount says ok with 0) |
//! | `RecoverJournal(j)`  | `recover` ← j; done when a `change` uevent says `RECOVERY=Done|Failed JID=j`, or `recover_done`/`recover_status` change to j and a final status |
//! | `Release`            | `withdraw` ← `1`                                                       |
//! | `Unmounted`, `MountError` | nothing (the mount helper owns the mount itself)                  |
//!
//! `recover_status`: `309` (LM_RD_SUCCESS) or `success`/`done` is success,
//! `308` (LM_RD_GAVEUP) or `failed`/`gaveup` is failure, anything else means
//! still running. An `offline` uevent for the filesystem while mounted is a
//! withdraw. Uevents come from the kernel's netlink socket (only datagrams
//! whose sender is the kernel, netlink port id 0, count), or from a FIFO
//! carrying one record per line (`ACTION@DEVPATH KEY=VALUE ...`, the same
//! fields as the netlink message, separated by spaces or NULs), which is how
//! tests drive a fake tree. The state files are re-read every `poll_ms`
//! while anything is awaited, so a missed uevent only costs time.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cohort_core::node::{KernelEvent, KernelOp};
use cohort_core::wire::{fs_name, FsName};
use cohort_core::Jid;

use super::Backend;
use crate::config::{SysfsConfig, UeventSource};

/// One uevent record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uevent {
    pub action: String,
    pub devpath: String,
    pub env: Vec<(String, String)>,
}

impl Uevent {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.env.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
    }
}

/// Parse `action@devpath` followed by `KEY=VALUE` fields separated by NUL,
/// space or newline (netlink messages and FIFO lines alike).
pub fn parse_uevent(bytes: &[u8]) -> Option<Uevent> {
    let text = String::from_utf8_lossy(bytes);
    let mut fields = text.split(['\0', ' ', '\n', '\t']).filter(|s| !s.is_empty());
    let head = fields.next()?;
    let (mut action, mut devpath) = match head.split_once('@') {
        Some((a, d)) => (a.to_owned(), d.to_owned()),
        None => (String::new(), String::new()),
    };
    let mut env = Vec::new();
    let rest: Vec<&str> =
        if head.contains('@') { fields.collect() } else { std::iter::once(head).chain(fields).collect() };
    for f in rest {
        if let Some((k, v)) = f.split_once('=') {
            match k {
                "ACTION" if action.is_empty() => action = v.to_owned(),
                "DEVPATH" if devpath.is_empty() => devpath = v.to_owned(),
                _ => {}
            }
            env.push((k.to_owned(), v.to_owned()));
        }
    }
    (!action.is_empty() && !devpath.is_empty()).then_some(Uevent { action, devpath, env })
}

enum Source {
    Netlink(RawFd),
    Fifo { fd: RawFd, partial: Vec<u8> },
}

impl Source {
    fn fd(&self) -> RawFd {
        match self {
            Source::Netlink(fd) | Source::Fifo { fd, .. } => *fd,
        }
    }

    fn open(src: &UeventSource) -> Result<Option<Source>, String> {
        match src {
            UeventSource::None => Ok(None),
            UeventSource::Netlink => {
                // SAFETY: plain socket/bind calls with a zeroed sockaddr_nl.
                unsafe {
                    let fd = libc::socket(
                        libc::AF_NETLINK,
                        libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        libc::NETLINK_KOBJECT_UEVENT,
                    );
                    if fd < 0 {
                        return Err(format!("uevent netlink socket: {}", std::io::Error::last_os_error()));
                    }
                    let mut sa: libc::sockaddr_nl = std::mem::zeroed();
                    sa.nl_family = libc::AF_NETLINK as u16;
                    sa.nl_groups = 1; // kernel uevents
                    if libc::bind(
                        fd,
                        (&sa as *const libc::sockaddr_nl).cast(),
                        std::mem::size_of::<libc::sockaddr_nl>() as u32,
                    ) != 0
                    {
                        let e = std::io::Error::last_os_error();
                        libc::close(fd);
                        return Err(format!("uevent netlink bind: {e}"));
                    }
                    Ok(Some(Source::Netlink(fd)))
                }
            }
            UeventSource::Fifo(path) => {
                use std::os::unix::ffi::OsStrExt;
                let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| "FIFO path with NUL")?;
                // SAFETY: mkfifo/open with a valid C string.
                unsafe {
                    if !path.exists() && libc::mkfifo(c.as_ptr(), 0o600) != 0 {
                        return Err(format!("mkfifo {}: {}", path.display(), std::io::Error::last_os_error()));
                    }
                    // O_RDWR: we hold a writer ourselves, so the FIFO never reports hang-up.
                    let fd = libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(format!(
                            "open uevent FIFO {}: {}",
                            path.display(),
                            std::io::Error::last_os_error()
                        ));
                    }
                    Ok(Some(Source::Fifo { fd, partial: Vec::new() }))
                }
            }
        }
    }

    fn read(&mut self) -> Vec<Uevent> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            // The sender of a netlink datagram: only the kernel's (port id 0)
            // are uevents; any process with CAP_NET_ADMIN can multicast to
            // the uevent group, and a forged `RECOVERY=Done` would let the
            // cluster unblock before the journal was replayed.
            // SAFETY: sockaddr_nl is plain data; all zeros is a valid value.
            let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut sa_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: recvfrom(2)/read(2) into our buffer (and address) on a non-blocking fd.
            let n = unsafe {
                match self {
                    Source::Netlink(fd) => libc::recvfrom(
                        *fd,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&mut sa as *mut libc::sockaddr_nl).cast(),
                        &mut sa_len,
                    ),
                    Source::Fifo { fd, .. } => libc::read(*fd, buf.as_mut_ptr().cast(), buf.len()),
                }
            };
            if n <= 0 {
                break;
            }
            let data = &buf[..n as usize];
            match self {
                Source::Netlink(_) if !from_kernel(&sa, sa_len) => {
                    tracing::warn!(
                        sender_portid = sa.nl_pid,
                        "uevent not sent by the kernel (netlink port id {}) ignored",
                        sa.nl_pid
                    );
                }
                Source::Netlink(_) => out.extend(parse_uevent(data)),
                Source::Fifo { partial, .. } => {
                    partial.extend_from_slice(data);
                    while let Some(pos) = partial.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = partial.drain(..=pos).collect();
                        out.extend(parse_uevent(&line));
                    }
                }
            }
        }
        out
    }
}

/// A netlink datagram's source address is the kernel's: port id 0.
fn from_kernel(sa: &libc::sockaddr_nl, len: libc::socklen_t) -> bool {
    len as usize >= std::mem::size_of::<libc::sockaddr_nl>()
        && sa.nl_family == libc::AF_NETLINK as libc::sa_family_t
        && sa.nl_pid == 0
}

impl Drop for Source {
    fn drop(&mut self) {
        // SAFETY: closing an fd we own.
        unsafe { libc::close(self.fd()) };
    }
}

struct PendingMount {
    first: bool,
    jid: Option<u16>,
    deadline: Instant,
}

pub struct SysfsBackend {
    fs: FsName,
    cfg: SysfsConfig,
    /// `<root>/<cluster>:<fs>`
    fsdir: PathBuf,
    /// `<fsdir>/lock_module`
    dir: PathBuf,
    /// The table name `<cluster>:<fs>` (devpath suffix).
    table: String,
    source: Option<Source>,
    jid: Option<u16>,
    mount: Option<PendingMount>,
    await_first: bool,
    recovery: Option<(u16, (String, String))>,
    mounted: bool,
    withdraw_reported: bool,
}

impl SysfsBackend {
    pub fn new(fs: &str, cfg: SysfsConfig) -> Result<SysfsBackend, String> {
        let table = format!("{}:{}", cfg.cluster, fs);
        let fsdir = cfg.root.join(&table);
        let source = Source::open(&cfg.uevents)?;
        Ok(SysfsBackend {
            fs: fs_name(fs).map_err(|_| format!("invalid filesystem name {fs:?}"))?,
            dir: fsdir.join("lock_module"),
            fsdir,
            table,
            cfg,
            source,
            jid: None,
            mount: None,
            await_first: false,
            recovery: None,
            mounted: false,
            withdraw_reported: false,
        })
    }

    pub fn lock_module_dir(&self) -> &Path {
        &self.dir
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        let p = self.dir.join(file);
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&p)
            .map_err(|e| format!("open {} for writing: {e}", p.display()))?;
        f.write_all(format!("{value}\n").as_bytes()).map_err(|e| format!("write {value:?} to {}: {e}", p.display()))
    }

    fn read(&self, file: &str) -> Option<String> {
        fs::read_to_string(self.dir.join(file)).ok().map(|s| s.trim().to_owned())
    }

    fn recovery_files(&self) -> (String, String) {
        (self.read("recover_done").unwrap_or_default(), self.read("recover_status").unwrap_or_default())
    }

    fn mount_progress(&mut self, out: &mut Vec<KernelEvent>) {
        let Some(m) = &self.mount else { return };
        if self.dir.is_dir() {
            let (first, jid) = (m.first, m.jid);
            self.mount = None;
            let r = self
                .write("first", if first { "1" } else { "0" })
                .and_then(|_| self.write("jid", &jid.map_or("0".to_owned(), |j| j.to_string())));
            match r {
                Ok(()) => {
                    self.mounted = true;
                    self.await_first = first;
                    out.push(KernelEvent::MountResult { fs: self.fs.clone(), ok: true });
                    self.check_first(out);
                }
                Err(e) => {
                    tracing::error!(fs = %self.fs, "mount: {e}");
                    out.push(KernelEvent::MountResult { fs: self.fs.clone(), ok: false });
                }
            }
        } else if Instant::now() >= m.deadline {
            tracing::error!(
                fs = %self.fs,
                "mount: {} did not appear within {} ms (is the filesystem being mounted?)",
                self.dir.display(),
                self.cfg.mount_timeout_ms
            );
            self.mount = None;
            out.push(KernelEvent::MountResult { fs: self.fs.clone(), ok: false });
        }
    }

    /// Read every pending uevent (the `dlm` backend routes its own ones and
    /// hands the rest to [`SysfsBackend::handle_uevent`]).
    pub(crate) fn read_uevents(&mut self) -> Vec<Uevent> {
        self.source.as_mut().map(|s| s.read()).unwrap_or_default()
    }

    /// A uevent about this filesystem (others are ignored).
    pub(crate) fn handle_uevent(&mut self, ev: &Uevent, out: &mut Vec<KernelEvent>) {
        self.on_uevent(ev, out);
    }

    /// Re-read the state files of what is awaited (first recovery, journal recovery).
    pub(crate) fn progress(&mut self, out: &mut Vec<KernelEvent>) {
        self.check_first(out);
        self.check_recovery_files(out);
    }

    /// The mount was done by someone else (the `dlm` backend's mount(8)):
    /// from now on an `offline` uevent is a withdraw.
    pub(crate) fn set_mounted(&mut self) {
        self.mount = None;
        self.mounted = true;
        self.withdraw_reported = false;
    }

    /// Something awaits a uevent or a state file.
    pub(crate) fn awaiting(&self) -> bool {
        self.mount.is_some() || self.await_first || self.recovery.is_some()
    }

    /// `<root>/<cluster>:<fs>`: exists from mount(2) until the unmount finished.
    pub(crate) fn fs_dir(&self) -> &Path {
        &self.fsdir
    }

    fn check_first(&mut self, out: &mut Vec<KernelEvent>) {
        if self.await_first && self.read("first_done").as_deref() == Some("1") {
            self.await_first = false;
            out.push(KernelEvent::FirstRecoveryDone { fs: self.fs.clone() });
        }
    }

    fn finish_recovery(&mut self, jid: u16, ok: bool, out: &mut Vec<KernelEvent>) {
        if self.recovery.as_ref().is_some_and(|(j, _)| *j == jid) {
            self.recovery = None;
            out.push(KernelEvent::RecoveryDone { fs: self.fs.clone(), jid: Jid(jid), ok });
        }
    }

    fn check_recovery_files(&mut self, out: &mut Vec<KernelEvent>) {
        let Some((jid, baseline)) = self.recovery.clone() else { return };
        let now = self.recovery_files();
        if now == baseline || now.0 != jid.to_string() {
            return;
        }
        if let Some(ok) = status_outcome(&now.1) {
            self.finish_recovery(jid, ok, out);
        }
    }

    fn on_uevent(&mut self, ev: &Uevent, out: &mut Vec<KernelEvent>) {
        let ours = ev.devpath.rsplit('/').next() == Some(self.table.as_str());
        if !ours {
            return;
        }
        tracing::debug!(fs = %self.fs, action = %ev.action, env = ?ev.env, "uevent");
        match ev.action.as_str() {
            "change" => {
                if let (Some(r), Some(j)) = (ev.get("RECOVERY"), ev.get("JID").and_then(|j| j.parse::<u16>().ok())) {
                    let ok = match r {
                        "Done" => true,
                        "Failed" => false,
                        _ => return,
                    };
                    self.finish_recovery(j, ok, out);
                }
                if ev.get("FIRSTMOUNT") == Some("Done") && self.await_first {
                    self.await_first = false;
                    out.push(KernelEvent::FirstRecoveryDone { fs: self.fs.clone() });
                }
            }
            "offline" if self.mounted && !self.withdraw_reported => {
                self.withdraw_reported = true;
                out.push(KernelEvent::Withdraw { fs: self.fs.clone() });
            }
            "remove" if self.mounted => {
                tracing::warn!(fs = %self.fs, "the kernel removed the filesystem's sysfs directory");
            }
            _ => {}
        }
    }
}

fn status_outcome(s: &str) -> Option<bool> {
    match s {
        "309" | "success" | "done" | "Done" => Some(true),
        "308" | "failed" | "gaveup" | "Failed" => Some(false),
        _ => None,
    }
}

impl Backend for SysfsBackend {
    fn kind(&self) -> &'static str {
        "gfs2-sysfs"
    }

    fn apply(&mut self, op: KernelOp, out: &mut Vec<KernelEvent>) -> Result<(), String> {
        match op {
            KernelOp::Block => self.write("block", "1"),
            KernelOp::Unblock => self.write("block", "0"),
            KernelOp::SetJid(j) => {
                self.jid = Some(j.0);
                Ok(())
            }
            KernelOp::MountFirst(j) | KernelOp::Mount(j) => {
                self.mount = Some(PendingMount {
                    first: matches!(op, KernelOp::MountFirst(_)),
                    jid: Some(j.0),
                    deadline: Instant::now() + Duration::from_millis(self.cfg.mount_timeout_ms),
                });
                self.withdraw_reported = false;
                self.mount_progress(out);
                Ok(())
            }
            KernelOp::MountSpectator => {
                self.mount = Some(PendingMount {
                    first: false,
                    jid: None,
                    deadline: Instant::now() + Duration::from_millis(self.cfg.mount_timeout_ms),
                });
                self.withdraw_reported = false;
                self.mount_progress(out);
                Ok(())
            }
            KernelOp::RecoverJournal(j) => {
                let baseline = self.recovery_files();
                self.write("recover", &j.0.to_string())?;
                self.recovery = Some((j.0, baseline));
                Ok(())
            }
            KernelOp::Release => {
                self.mounted = false;
                self.await_first = false;
                self.recovery = None;
                self.write("withdraw", "1")
            }
            KernelOp::Unmounted | KernelOp::MountError(_) => {
                self.mounted = false;
                self.mount = None;
                self.await_first = false;
                self.recovery = None;
                Ok(())
            }
        }
    }

    fn poll_fd(&self) -> Option<RawFd> {
        self.source.as_ref().map(|s| s.fd())
    }

    fn poll(&mut self, out: &mut Vec<KernelEvent>) {
        for ev in &self.read_uevents() {
            self.on_uevent(ev, out);
        }
        self.mount_progress(out);
        self.progress(out);
    }

    fn poll_interval(&self) -> Option<Duration> {
        self.awaiting().then(|| Duration::from_millis(self.cfg.poll_ms))
    }

    fn leftover(&self) -> Result<Option<String>, String> {
        self.kernel_mounted()
    }

    /// The kernel's `<root>/<cluster>:<fs>` exists from mount(2) until the
    /// unmount finished.
    fn kernel_mounted(&self) -> Result<Option<String>, String> {
        Ok(self
            .fsdir
            .is_dir()
            .then(|| format!("{} exists (the kernel still has the filesystem mounted)", self.fsdir.display())))
    }
}
