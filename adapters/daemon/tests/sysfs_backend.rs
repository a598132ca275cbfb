//! The gfs2-sysfs backend against a fake sysfs tree in a temp dir. The test
//! plays the kernel: it creates the lock_module directory (as mount(2) would),
//! checks what the backend wrote, sets `first_done`/`recover_done`/
//! `recover_status`, and sends uevents through the FIFO.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cohort_core::node::{KernelEvent, KernelOp};
use cohort_core::wire::fs_name;
use cohort_core::Jid;
use cohortd::backend::sysfs::{parse_uevent, SysfsBackend};
use cohortd::backend::Backend;
use cohortd::config::{SysfsConfig, UeventSource};

struct FakeKernel {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    fifo: PathBuf,
}

impl FakeKernel {
    fn new() -> FakeKernel {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("gfs2");
        fs::create_dir(&root).unwrap();
        let fifo = tmp.path().join("uevents");
        FakeKernel { root, fifo, _tmp: tmp }
    }

    fn cfg(&self, uevents: UeventSource) -> SysfsConfig {
        SysfsConfig { root: self.root.clone(), cluster: "c1".into(), uevents, poll_ms: 50, mount_timeout_ms: 2000 }
    }

    fn dir(&self) -> PathBuf {
        self.root.join("c1:fs1/lock_module")
    }

    /// What mount(2) does: the kobject with its attribute files appears.
    fn appear(&self) {
        let d = self.dir();
        fs::create_dir_all(&d).unwrap();
        for f in ["block", "recover", "jid", "first", "withdraw"] {
            fs::write(d.join(f), "").unwrap();
        }
        for (f, v) in [("first_done", "0"), ("recover_done", "0"), ("recover_status", "0")] {
            fs::write(d.join(f), format!("{v}\n")).unwrap();
        }
    }

    fn read(&self, f: &str) -> String {
        fs::read_to_string(self.dir().join(f)).unwrap().trim().to_owned()
    }

    fn set(&self, f: &str, v: &str) {
        fs::write(self.dir().join(f), format!("{v}\n")).unwrap();
    }

    fn uevent(&self, line: &str) {
        let mut f = fs::OpenOptions::new().write(true).open(&self.fifo).unwrap();
        writeln!(f, "{line}").unwrap();
    }
}

fn wait_events(b: &mut SysfsBackend, n: usize, timeout: Duration) -> Vec<KernelEvent> {
    let t = Instant::now();
    let mut out = vec![];
    while out.len() < n && t.elapsed() < timeout {
        if let Some(fd) = b.poll_fd() {
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            unsafe { libc::poll(&mut p, 1, 20) };
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
        b.poll(&mut out);
    }
    out
}

#[test]
fn uevent_records_parse_like_netlink() {
    let e = parse_uevent(b"change@/fs/gfs2/c1:fs1\0ACTION=change\0DEVPATH=/fs/gfs2/c1:fs1\0RECOVERY=Done\0JID=2\0")
        .unwrap();
    assert_eq!(e.action, "change");
    assert_eq!(e.devpath, "/fs/gfs2/c1:fs1");
    assert_eq!(e.get("RECOVERY"), Some("Done"));
    assert_eq!(e.get("JID"), Some("2"));
    let e = parse_uevent(b"ACTION=offline DEVPATH=/fs/gfs2/c1:fs1\n").unwrap();
    assert_eq!((e.action.as_str(), e.devpath.as_str()), ("offline", "/fs/gfs2/c1:fs1"));
    assert!(parse_uevent(b"garbage").is_none());
}

#[test]
fn full_cycle_against_a_fake_tree_with_uevents() {
    let k = FakeKernel::new();
    let mut b = SysfsBackend::new("fs1", k.cfg(UeventSource::Fifo(k.fifo.clone()))).unwrap();
    assert!(b.leftover().unwrap().is_none());
    let fs = fs_name("fs1").unwrap();
    let mut out = vec![];

    // Mount as first mounter: waits for the directory (mount(2) in progress).
    b.apply(KernelOp::SetJid(Jid(0)), &mut out).unwrap();
    b.apply(KernelOp::MountFirst(Jid(0)), &mut out).unwrap();
    assert!(out.is_empty(), "no directory yet: the mount waits");
    assert!(b.poll_interval().is_some());
    k.appear();
    k.uevent("add@/fs/gfs2/c1:fs1 ACTION=add");
    let ev = wait_events(&mut b, 1, Duration::from_secs(5));
    assert_eq!(ev, vec![KernelEvent::MountResult { fs: fs.clone(), ok: true }]);
    assert_eq!(k.read("first"), "1");
    assert_eq!(k.read("jid"), "0");
    assert!(b.leftover().unwrap().unwrap().contains("c1:fs1"), "a mounted fs is a leftover for the next start");

    // The kernel replays every journal, then says so.
    k.set("first_done", "1");
    k.uevent("change@/fs/gfs2/c1:fs1 ACTION=change FIRSTMOUNT=Done");
    let ev = wait_events(&mut b, 1, Duration::from_secs(5));
    assert_eq!(ev, vec![KernelEvent::FirstRecoveryDone { fs: fs.clone() }]);

    // Block, recover journal 2 (fails), again (succeeds), unblock.
    b.apply(KernelOp::Block, &mut out).unwrap();
    assert_eq!(k.read("block"), "1");
    b.apply(KernelOp::RecoverJournal(Jid(2)), &mut out).unwrap();
    assert_eq!(k.read("recover"), "2");
    k.set("recover_done", "2");
    k.set("recover_status", "308");
    k.uevent("change@/fs/gfs2/c1:fs1 ACTION=change RECOVERY=Failed JID=2");
    let ev = wait_events(&mut b, 1, Duration::from_secs(5));
    assert_eq!(ev, vec![KernelEvent::RecoveryDone { fs: fs.clone(), jid: Jid(2), ok: false }]);
    b.apply(KernelOp::RecoverJournal(Jid(2)), &mut out).unwrap();
    // Same jid again: only the uevent can tell this one finished.
    k.set("recover_status", "309");
    k.uevent("change@/fs/gfs2/c1:fs1 ACTION=change RECOVERY=Done JID=2");
    let ev = wait_events(&mut b, 1, Duration::from_secs(5));
    assert_eq!(ev, vec![KernelEvent::RecoveryDone { fs: fs.clone(), jid: Jid(2), ok: true }]);
    b.apply(KernelOp::Unblock, &mut out).unwrap();
    assert_eq!(k.read("block"), "0");

    // Another filesystem's uevent is ignored; an offline uevent is a withdraw.
    k.uevent("offline@/fs/gfs2/c1:other ACTION=offline");
    k.uevent("offline@/fs/gfs2/c1:fs1 ACTION=offline");
    let ev = wait_events(&mut b, 1, Duration::from_secs(5));
    assert_eq!(ev, vec![KernelEvent::Withdraw { fs: fs.clone() }]);
    b.apply(KernelOp::Release, &mut out).unwrap();
    assert_eq!(k.read("withdraw"), "1");
    assert!(out.is_empty());
}

#[test]
fn without_uevents_the_files_are_polled() {
    let k = FakeKernel::new();
    k.appear();
    let mut b = SysfsBackend::new("fs1", k.cfg(UeventSource::None)).unwrap();
    let fs = fs_name("fs1").unwrap();
    let mut out = vec![];
    b.apply(KernelOp::SetJid(Jid(1)), &mut out).unwrap();
    b.apply(KernelOp::Mount(Jid(1)), &mut out).unwrap();
    assert_eq!(out, vec![KernelEvent::MountResult { fs: fs.clone(), ok: true }], "directory exists: mounts at once");
    assert_eq!((k.read("first").as_str(), k.read("jid").as_str()), ("0", "1"));
    out.clear();
    b.apply(KernelOp::RecoverJournal(Jid(3)), &mut out).unwrap();
    assert_eq!(wait_events(&mut b, 1, Duration::from_millis(200)), vec![], "still running");
    k.set("recover_status", "0");
    k.set("recover_done", "3");
    assert_eq!(wait_events(&mut b, 1, Duration::from_millis(200)), vec![], "status not final yet");
    k.set("recover_status", "309");
    let ev = wait_events(&mut b, 1, Duration::from_secs(5));
    assert_eq!(ev, vec![KernelEvent::RecoveryDone { fs, jid: Jid(3), ok: true }]);
    assert!(b.poll_interval().is_none(), "nothing awaited any more");
}

#[test]
fn mount_times_out_when_the_kernel_never_shows_up() {
    let k = FakeKernel::new();
    let mut cfg = k.cfg(UeventSource::None);
    cfg.mount_timeout_ms = 100;
    let mut b = SysfsBackend::new("fs1", cfg).unwrap();
    let mut out = vec![];
    b.apply(KernelOp::MountSpectator, &mut out).unwrap();
    let ev = wait_events(&mut b, 1, Duration::from_secs(5));
    assert_eq!(ev, vec![KernelEvent::MountResult { fs: fs_name("fs1").unwrap(), ok: false }]);
    assert!(!Path::new(&k.dir()).exists());
}

#[test]
fn writes_fail_cleanly_without_the_tree() {
    let k = FakeKernel::new();
    let mut b = SysfsBackend::new("fs1", k.cfg(UeventSource::None)).unwrap();
    let e = b.apply(KernelOp::Block, &mut vec![]).unwrap_err();
    assert!(e.contains("c1:fs1/lock_module/block"), "{e}");
}

/// Send one uevent-shaped datagram to the kernel uevent multicast group
/// (group 1) from a userspace netlink socket (port id != 0): what any
/// process with CAP_NET_ADMIN can do.
fn send_forged_uevent(payload: &[u8]) {
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::NETLINK_KOBJECT_UEVENT);
        assert!(fd >= 0, "netlink socket: {}", std::io::Error::last_os_error());
        let mut dst: libc::sockaddr_nl = std::mem::zeroed();
        dst.nl_family = libc::AF_NETLINK as u16;
        dst.nl_groups = 1;
        let n = libc::sendto(
            fd,
            payload.as_ptr().cast(),
            payload.len(),
            0,
            (&dst as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        );
        let e = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(n, payload.len() as isize, "sendto the uevent group: {e}");
    }
}

/// Only the kernel's uevents (netlink port id 0) count: a forged
/// `RECOVERY=Done` multicast by a process must not finish a recovery the
/// kernel has not done. Needs root (CAP_NET_ADMIN to send to the group);
/// runs in its own network namespace (a thread's unshare) so nothing else
/// on the host sees the forged uevent.
#[test]
fn netlink_uevents_from_processes_are_ignored() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root (netlink multicast to the uevent group)");
    let k = FakeKernel::new();
    let cfg = k.cfg(UeventSource::Netlink);
    k.appear();
    let got = std::thread::spawn(move || {
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare: {}", std::io::Error::last_os_error());
        let mut b = SysfsBackend::new("fs1", cfg).unwrap();
        let mut out = vec![];
        b.apply(KernelOp::SetJid(Jid(1)), &mut out).unwrap();
        b.apply(KernelOp::Mount(Jid(1)), &mut out).unwrap();
        assert_eq!(out.len(), 1, "mounted at once: {out:?}");
        b.apply(KernelOp::RecoverJournal(Jid(2)), &mut vec![]).unwrap();
        send_forged_uevent(b"change@/fs/gfs2/c1:fs1\0ACTION=change\0DEVPATH=/fs/gfs2/c1:fs1\0RECOVERY=Done\0JID=2\0");
        send_forged_uevent(b"offline@/fs/gfs2/c1:fs1\0ACTION=offline\0DEVPATH=/fs/gfs2/c1:fs1\0");
        wait_events(&mut b, 1, Duration::from_millis(400))
    })
    .join()
    .unwrap();
    assert_eq!(got, vec![], "a uevent from a process (not the kernel) was taken for the kernel's");
}
