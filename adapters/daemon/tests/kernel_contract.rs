//! The core's Unmount contract as cohortd keeps it, with real processes
//! (`transport = "udp"`, unicast on 127.0.0.1; no root, no corosync):
//! `Request::Unmount` goes out only after the kernel unmounted the
//! filesystem (the others then free its journal without replay), and a
//! node that cannot keep its promises to the cluster stops as a failure
//! (the others fence it and replay its journal).
//!
//! Kernels: a fake gfs2 sysfs tree that the test creates and removes as
//! mount(2)/umount(2) would, or exec hooks whose "kernel mount" is a marker
//! file per node (`mount*` hooks create it, the test removes it as umount
//! would, `hooks.mounted` reports it; `block` fails while a `block-fails`
//! file exists). The fence agent only records its calls.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

mod common;
use common::{is_our_cohortd, jids, settled, Ctl, COHORTD};

const T: Duration = Duration::from_secs(20);

struct Cluster {
    dir: tempfile::TempDir,
    kids: Vec<Option<(Child, Option<ExitStatus>)>>,
}

fn free_ports(n: usize) -> Vec<u16> {
    let s: Vec<std::net::UdpSocket> = (0..n).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    s.iter().map(|s| s.local_addr().unwrap().port()).collect()
}

fn executable(p: &Path, body: &str) {
    fs::write(p, body).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
}

impl Cluster {
    /// `n` nodes; `fs_toml(k, dir)` is node k's `[[filesystem]]` section.
    fn new(n: u32, fs_toml: impl Fn(u32, &Path) -> String) -> Cluster {
        let dir = tempfile::Builder::new().prefix("cohortd-contract-").tempdir().unwrap();
        let d = dir.path();
        let key = d.join("cohort.key");
        fs::write(&key, "5a".repeat(32)).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        let agent = d.join("fence.sh");
        executable(
            &agent,
            &format!(
                "#!/bin/sh\necho \"target=$1 inc=$COHORT_TARGET_INCARNATION\" >> '{}/fence.log'\nexit 0\n",
                d.display()
            ),
        );
        let ports = free_ports(n as usize);
        // Two nodes: one alone stays quorate (it can fence the other).
        let quorum = if n == 2 { "quorum = \"two-node\"\n" } else { "" };
        for k in 1..=n {
            let peers: String = (1..=n).map(|i| format!("{i} = \"127.0.0.1:{}\"\n", ports[i as usize - 1])).collect();
            let text = format!(
                "node_id = {k}\ntransport = \"udp\"\nstate_dir = \"{state}\"\nstartup_fence_delay_ms = 5000\n\
                 recovery_retry_ms = 200\n\n[udp]\nmode = \"unicast\"\nkey_file = \"{key}\"\nheartbeat_ms = 50\n\
                 fail_timeout_ms = 600\n{quorum}\n[udp.peers]\n{peers}\n[fence]\nagent = \"{agent}\"\ntimeout_ms = 5000\n\
                 retry_ms = 300\n\n{fs}",
                state = d.join(format!("state{k}")).display(),
                key = key.display(),
                agent = agent.display(),
                fs = fs_toml(k, d),
            );
            fs::write(d.join(format!("cohort{k}.toml")), text).unwrap();
        }
        Cluster { dir, kids: (0..=n).map(|_| None).collect() }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self, k: u32) -> PathBuf {
        self.path().join(format!("cohortd{k}.log"))
    }

    fn log_text(&self, k: u32) -> String {
        fs::read_to_string(self.log_path(k)).unwrap_or_default()
    }

    fn last_line(&self, k: u32) -> String {
        self.log_text(k).lines().last().unwrap_or("").to_owned()
    }

    fn start(&mut self, k: u32) {
        let sock = self.socket(k);
        let _ = fs::remove_file(&sock);
        let out = fs::OpenOptions::new().create(true).append(true).open(self.log_path(k)).unwrap();
        let child = Command::new(COHORTD)
            .arg("--config")
            .arg(self.path().join(format!("cohort{k}.toml")))
            .env("COHORT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        self.kids[k as usize] = Some((child, None));
        let t = Instant::now();
        while !sock.exists() {
            if let Some(st) = self.try_exit(k) {
                panic!("cohortd {k} exited at start ({st}):\n{}", self.log_text(k));
            }
            assert!(t.elapsed() < T, "cohortd {k}: no control socket");
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_exit(&mut self, k: u32) -> Option<ExitStatus> {
        let (child, st) = self.kids[k as usize].as_mut().expect("started");
        if st.is_none() {
            *st = child.try_wait().unwrap();
        }
        *st
    }

    fn signal(&mut self, k: u32, sig: libc::c_int) {
        if self.try_exit(k).is_none() {
            let pid = self.kids[k as usize].as_ref().unwrap().0.id() as i32;
            unsafe { libc::kill(pid, sig) };
        }
    }

    fn wait_exit(&mut self, k: u32, timeout: Duration) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(st) = self.try_exit(k) {
                return st;
            }
            assert!(t.elapsed() < timeout, "cohortd {k} did not exit within {timeout:?}:\n{}", self.log_text(k));
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn mount(&self, k: u32) {
        self.ctl(k, &["mount", "fs1", "--wait", "20"]).unwrap_or_else(|e| panic!("{e}\n{}", self.log_text(k)));
    }
}

impl Ctl for Cluster {
    fn socket(&self, k: u32) -> PathBuf {
        self.path().join(format!("state{k}/cohortd.sock"))
    }
    fn fence_log(&self) -> String {
        fs::read_to_string(self.path().join("fence.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let dir = self.path().to_path_buf();
        for (child, st) in self.kids.iter_mut().flatten() {
            if st.is_none() && is_our_cohortd(child.id() as i32, &dir) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// exec backend whose kernel mount is the file `node<k>.mounted`, reported
/// by `hooks.mounted`.
fn exec_fs(k: u32, d: &Path) -> String {
    exec_hook(k, d);
    format!(
        "[[filesystem]]\nname = \"fs1\"\njournals = 4\nbackend = \"exec\"\n[filesystem.exec]\nhook = \"{h}\"\n\
         timeout_ms = 5000\n[filesystem.exec.hooks]\nmounted = \"{h}\"\n",
        h = d.join(format!("hook{k}.sh")).display()
    )
}

/// The same hooks, with a `mount_point` (never mounted) instead of
/// `hooks.mounted`: a configuration cohortd accepted before `hooks.mounted`.
fn exec_fs_mount_point(k: u32, d: &Path) -> String {
    exec_hook(k, d);
    format!(
        "[[filesystem]]\nname = \"fs1\"\njournals = 4\nbackend = \"exec\"\nmount_point = \"{m}\"\n\
         [filesystem.exec]\nhook = \"{h}\"\ntimeout_ms = 5000\n",
        m = d.join(format!("mnt{k}")).display(),
        h = d.join(format!("hook{k}.sh")).display()
    )
}

fn exec_hook(k: u32, d: &Path) {
    let hook = d.join(format!("hook{k}.sh"));
    let n = d.join(format!("node{k}"));
    executable(
        &hook,
        &format!(
            "#!/bin/sh\nn='{n}'\necho \"$OP $JID\" >> \"$n.hooks\"\ncase \"$OP\" in\n\
             mounted) [ -e \"$n.mounted\" ] && exit 0; exit 1 ;;\n\
             mount_first|mount|mount_spectator) touch \"$n.mounted\" ;;\n\
             block) [ -e \"$n.block-fails\" ] && exit 1 ;;\nesac\nexit 0\n",
            n = n.display()
        ),
    );
}

/// `cohortctl unmount` of a filesystem the kernel still has (gfs2-sysfs:
/// its `<root>/<cluster>:<fs>` directory exists) is refused with what to
/// do; after the kernel unmounted (the directory is gone) it is accepted
/// and the node leaves the group. SIGTERM while the kernel has it mounted
/// exits 1 without leaving the group (no `Unmount`).
#[test]
fn unmount_is_refused_while_the_kernel_has_the_filesystem_sysfs() {
    let mut c = Cluster::new(1, |_, d| {
        fs::create_dir_all(d.join("gfs2")).unwrap();
        format!(
            "[[filesystem]]\nname = \"fs1\"\njournals = 2\nbackend = \"gfs2-sysfs\"\n[filesystem.sysfs]\n\
             root = \"{}\"\ncluster = \"c1\"\nuevents = \"none\"\npoll_ms = 20\n",
            d.join("gfs2").display()
        )
    });
    let table = c.path().join("gfs2/c1:fs1");
    // What mount(2) does: the kobject appears with its files at once (built
    // aside, renamed into place); first_done as the kernel reports it.
    let kernel_mounts = |table: &Path| {
        let stage = table.with_file_name("stage");
        let lm = stage.join("lock_module");
        fs::create_dir_all(&lm).unwrap();
        for f in ["block", "recover", "jid", "first", "withdraw", "recover_done", "recover_status"] {
            fs::write(lm.join(f), "0\n").unwrap();
        }
        fs::write(lm.join("first_done"), "1\n").unwrap();
        fs::rename(&stage, table).unwrap();
    };
    c.start(1);
    c.wait_status(1, "quorate", T, |s| s.quorate == Some(true));
    c.ctl(1, &["mount", "fs1"]).unwrap_or_else(|e| panic!("{e}"));
    kernel_mounts(&table);
    c.wait_status(1, "fs1 mounted", T, |s| settled(s, &[1]));

    let e = c.ctl(1, &["unmount", "fs1"]).expect_err("unmount while the kernel has fs1 mounted must be refused");
    assert!(e.contains("fs1 is still mounted by the kernel"), "{e}");
    assert!(e.contains("c1:fs1 exists"), "{e}");
    assert!(e.contains("umount it first"), "{e}");
    let s = c.status(1);
    assert_eq!(jids(&s), vec![(1, Some(0))], "still a member after the refusal");
    assert!(!c.log_text(1).contains("fs1: unmounted (left the group)"));

    // The kernel unmounted: now the node leaves cleanly.
    fs::remove_dir_all(&table).unwrap();
    c.ctl(1, &["unmount", "fs1", "--wait", "10"]).unwrap_or_else(|e| panic!("{e}\n{}", c.log_text(1)));
    assert!(c.log_text(1).contains("fs1: unmounted (left the group)"));

    // Mounted again, then SIGTERM: no clean leave.
    c.ctl(1, &["mount", "fs1"]).unwrap_or_else(|e| panic!("{e}"));
    kernel_mounts(&table);
    c.wait_status(1, "fs1 mounted again", T, |s| settled(s, &[1]));
    let log = sigterm_is_a_failure(&mut c, 1, "fs1 still mounted by the kernel");
    assert!(log.contains("not leaving the group cleanly; peers will fence this node"), "{log}");
    assert!(c.last_line(1).starts_with("cohortd: stopped by a signal with fs1 still mounted by the kernel"), "{log}");
}

/// SIGTERM to node `k` while its kernel still has fs1: it exits 1 with
/// `why` in its log and sends no `Unmount`. Returns the log.
fn sigterm_is_a_failure(c: &mut Cluster, k: u32, why: &str) -> String {
    let before = c.log_text(k).matches("fs1: unmounted (left the group)").count();
    c.signal(k, libc::SIGTERM);
    let st = c.wait_exit(k, T);
    let log = c.log_text(k);
    assert_eq!(st.code(), Some(1), "SIGTERM with fs1 still mounted by the kernel:\n{log}");
    assert!(log.contains(why), "{log}");
    assert_eq!(log.matches("fs1: unmounted (left the group)").count(), before, "Unmount was sent:\n{log}");
    log
}

/// exec backend with `hooks.mounted`: `unmount` refused while the hook
/// says mounted; after the kernel unmounted, `unmount` and SIGTERM leave
/// cleanly (no fencing). SIGTERM with the kernel mount still there exits 1
/// without `Unmount`: the other node fences it and replays its journal.
#[test]
fn sigterm_with_a_kernel_mount_is_a_failure_not_a_clean_leave_exec() {
    let mut c = two_mounted(exec_fs);
    let e = c.ctl(2, &["unmount", "fs1"]).expect_err("refused while hooks.mounted says mounted");
    assert!(e.contains("fs1 is still mounted by the kernel (hooks.mounted"), "{e}");
    assert!(e.contains("umount it first"), "{e}");

    // clean path: umount, then unmount and SIGTERM: a leave, no fencing
    fs::remove_file(c.path().join("node2.mounted")).unwrap();
    c.ctl(2, &["unmount", "fs1", "--wait", "10"]).unwrap_or_else(|e| panic!("{e}"));
    c.wait_status(1, "fs1 on 1 alone", T, |s| jids(s) == vec![(1, Some(0))]);
    c.signal(2, libc::SIGTERM);
    assert_eq!(c.wait_exit(2, T).code(), Some(0), "{}", c.log_text(2));
    c.wait_status(1, "fs1 on 1 alone", T, |s| settled(s, &[1]));
    assert_eq!(c.fence_log(), "", "a clean leave is not fenced");

    // SIGTERM with the kernel mount: exit 1, no Unmount; node 1 fences node 2 and replays journal 1
    c.start(2);
    c.mount(2);
    let s = c.wait_status(1, "fs1 on 1,2 again", T, |s| settled(s, &[1, 2]));
    assert_eq!(jids(&s), vec![(1, Some(0)), (2, Some(1))]);
    sigterm_is_a_failure(&mut c, 2, "fs1 still mounted by the kernel (hooks.mounted");
    c.wait_status(1, "node 2 fenced, journal 1 replayed", T, |s| settled(s, &[1]));
    assert!(c.fence_log().contains("target=2 inc=2"), "node 2 was not fenced: {:?}", c.fence_log());
    let hooks1 = fs::read_to_string(c.path().join("node1.hooks")).unwrap();
    assert!(hooks1.contains("recover_journal 1"), "journal 1 not replayed by node 1:\n{hooks1}");
}

/// A `block` that fails is fatal: the node stops (exit 1) instead of
/// staying a member the cluster believes blocked; the others fence it and
/// replay its journal.
#[test]
fn failed_block_stops_the_node_and_peers_fence_it() {
    let mut c = Cluster::new(3, exec_fs_mount_point);
    for k in 1..=3 {
        c.start(k);
    }
    for k in 1..=3 {
        c.mount(k);
    }
    for k in 1..=3 {
        c.wait_status(k, "fs1 on 1,2,3", T, |s| settled(s, &[1, 2, 3]));
    }
    fs::write(c.path().join("node2.block-fails"), "").unwrap();
    // node 3 fails: nodes 1 and 2 block; node 2's block fails
    c.signal(3, libc::SIGKILL);
    let st = c.wait_exit(2, T);
    let log2 = c.log_text(2);
    assert_eq!(st.code(), Some(1), "node 2 must stop after its block failed:\n{log2}");
    assert!(c.last_line(2).contains("fs1: block FAILED"), "{log2}");
    assert!(log2.contains("stopping without leaving the group cleanly"), "{log2}");
    // Node 1 alone is 1 of 3 (no quorum): node 3 restarts, then node 1
    // fences node 2 and replays journals 1 and 2.
    c.start(3);
    c.wait_status(1, "nodes 2 and 3 fenced, journals replayed", T, |s| {
        let g = s.groups.iter().find(|g| g.fs == "fs1");
        s.fencing.is_empty()
            && jids(s) == vec![(1, Some(0))]
            && g.is_some_and(|g| g.recoveries.is_empty() && !g.blocked && !g.kernel.blocked)
    });
    let fences = c.fence_log();
    assert!(fences.contains("target=2 ") && fences.contains("target=3 "), "{fences}");
    let hooks1 = fs::read_to_string(c.path().join("node1.hooks")).unwrap();
    assert!(hooks1.contains("recover_journal 1") && hooks1.contains("recover_journal 2"), "{hooks1}");
}

/// Two nodes with `fs_toml`, both started, fs1 mounted and settled on both.
fn two_mounted(fs_toml: impl Fn(u32, &Path) -> String) -> Cluster {
    let mut c = Cluster::new(2, fs_toml);
    c.start(1);
    c.start(2);
    c.mount(1);
    c.mount(2);
    for k in 1..=2 {
        c.wait_status(k, "fs1 on 1,2", T, |s| settled(s, &[1, 2]));
    }
    c
}

/// exec backend with a `withdraw_file` per node (`node<k>.withdraw`).
fn exec_fs_withdraw(k: u32, d: &Path) -> String {
    let wf = format!("withdraw_file = \"{}\"\n", d.join(format!("node{k}.withdraw")).display());
    exec_fs(k, d).replace(
        "timeout_ms = 5000\n[filesystem.exec.hooks]",
        &format!("timeout_ms = 5000\n{wf}[filesystem.exec.hooks]"),
    )
}

/// The kernel withdrew fs1 and the operator unmounted right away (before
/// cohortd's next look at `withdraw_file`): cohortd passes the withdraw to
/// the core before the leave, so the leave is not taken as clean and node
/// 1 replays node 2's journal (found as a class by `cohort-sim check`).
#[test]
fn a_withdraw_reported_before_an_unmount_goes_first() {
    let c = two_mounted(exec_fs_withdraw);
    // The kernel withdraws, the operator umounts and asks to leave at once.
    fs::write(c.path().join("node2.withdraw"), "").unwrap();
    fs::remove_file(c.path().join("node2.mounted")).unwrap();
    let _ = c.ctl(2, &["unmount", "fs1"]);
    c.wait_status(1, "node 2 gone from fs1, nothing to recover", T, |s| {
        jids(s) == vec![(1, Some(0))] && s.groups.iter().any(|g| g.fs == "fs1" && g.recoveries.is_empty() && !g.blocked)
    });
    let hooks1 = fs::read_to_string(c.path().join("node1.hooks")).unwrap();
    assert!(hooks1.contains("recover_journal 1"), "the withdrawn journal 1 was not replayed by node 1:\n{hooks1}");
    assert!(c.log_text(2).contains("the host reports a kernel withdraw"), "{}", c.log_text(2));
}
