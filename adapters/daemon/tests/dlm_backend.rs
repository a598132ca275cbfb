//! The `dlm` backend against a fake kernel tree in a temp dir: configfs,
//! the DLM's sysfs, GFS2's lock_module, uevents through a FIFO, and mount(8)
//! and umount(8) replaced by scripts that play the kernel's part. Checks the
//! protocol's order: a lockspace joins only when its group is synced, stops
//! at every change before anything is sent, restarts only once the gate
//! (fencing, quorum) is open, answers `event_done` 0 (never positive), and
//! leaves the mount group only after the kernel released the lockspace.
//! The same backend on real kernels: tests/uml-lab/gfs2-test.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cohort_core::node::{KernelEvent, KernelOp};
use cohort_core::wire::fs_name;
use cohort_core::{Generation, Jid};
use cohortd::backend::dlm::DlmBackend;
use cohortd::backend::{Ask, AuxState, Backend};
use cohortd::config::{DlmConfig, SysfsConfig, UeventSource};

struct Fake {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    fifo: PathBuf,
}

impl Fake {
    fn new() -> Fake {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_owned();
        // configfs makes `comms/` and `spaces/` with `cluster/`; plain dirs do not.
        for d in ["configfs/cluster/comms", "configfs/cluster/spaces", "dlm/fs1", "gfs2"] {
            fs::create_dir_all(base.join(d)).unwrap();
        }
        for f in ["control", "event_done", "id"] {
            fs::write(base.join("dlm/fs1").join(f), "").unwrap();
        }
        // mount(8): the kernel's lock_module appears (at once, with its
        // files, as a kobject does); the mount completes once `jid` was written.
        let lm = base.join("gfs2/lab:fs1/lock_module");
        fs::create_dir_all(base.join("gfs2/lab:fs1")).unwrap();
        script(
            &base.join("mount"),
            &format!(
                "mkdir -p {lm}.new\nfor f in first jid block recover withdraw; do : > {lm}.new/$f; done\n\
                 mv {lm}.new {lm}\necho \"$@\" > {b}/mount.args\n\
                 for i in $(seq 3000); do [ -s {lm}/jid ] && exit 0; sleep 0.01; done\nexit 1\n",
                lm = lm.display(),
                b = base.display()
            ),
        );
        script(&base.join("umount"), &format!("echo \"$@\" > {}/umount.args\n", base.display()));
        let fifo = base.join("uevents");
        Fake { fifo, base, _tmp: tmp }
    }

    fn cfg(&self) -> DlmConfig {
        DlmConfig {
            lm: SysfsConfig {
                root: self.base.join("gfs2"),
                cluster: "lab".into(),
                uevents: UeventSource::Fifo(self.fifo.clone()),
                poll_ms: 20,
                mount_timeout_ms: 5000,
            },
            device: "/dev/fake".into(),
            mount_point: "/mnt/fake".into(),
            options: Some("noatime".into()),
            configfs: self.base.join("configfs"),
            dlm_sysfs: self.base.join("dlm"),
            monitor: None,
            addresses: [(1, "192.0.2.11".parse().unwrap()), (2, "192.0.2.12".parse().unwrap())].into_iter().collect(),
            mount_cmd: self.base.join("mount"),
            umount_cmd: self.base.join("umount"),
        }
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.base.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}")).trim().to_owned()
    }

    fn ls(&self, file: &str) -> String {
        self.read(&format!("dlm/fs1/{file}"))
    }

    fn uevent(&self, line: &str) {
        let mut f = fs::OpenOptions::new().write(true).open(&self.fifo).unwrap();
        writeln!(f, "{line}").unwrap();
    }
}

fn script(p: &std::path::Path, body: &str) {
    fs::write(p, format!("#!/bin/sh\n{body}")).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
}

fn gen(epoch: u32) -> Generation {
    Generation { ring: 7, epoch }
}

fn st(synced: bool, epoch: u32, members: &[u32], gate: Result<(), String>) -> AuxState {
    AuxState { member: true, synced, generation: gen(epoch), members: members.to_vec(), gate }
}

/// Poll until `pred` holds on what came out (events) or the backend's asks.
fn poll_until(
    b: &mut DlmBackend,
    what: &str,
    mut pred: impl FnMut(&[KernelEvent], &[Ask]) -> bool,
) -> (Vec<KernelEvent>, Vec<Ask>) {
    let t = Instant::now();
    let (mut out, mut asks) = (vec![], vec![]);
    while t.elapsed() < Duration::from_secs(10) {
        b.poll(&mut out);
        asks.extend(b.take_asks());
        if pred(&out, &asks) {
            return (out, asks);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}: events {out:?}, asks {asks:?}");
}

#[test]
fn lockspace_follows_its_group_and_the_gate() {
    let k = Fake::new();
    let fs = fs_name("fs1").unwrap();
    let mut b = DlmBackend::new("fs1", k.cfg(), None).unwrap();
    assert_eq!(b.aux_group(), Some("dlm:fs1"));

    // Cluster setup: one `cluster` directory, comms for every node.
    b.start(1).unwrap();
    assert_eq!(k.read("configfs/cluster/cluster_name"), "lab");
    assert_eq!(k.read("configfs/cluster/comms/1/nodeid"), "1");
    assert_eq!(k.read("configfs/cluster/comms/1/local"), "1");
    assert!(!k.base.join("configfs/cluster/comms/2/local").exists());
    let addr = fs::read(k.base.join("configfs/cluster/comms/2/addr")).unwrap();
    assert_eq!(addr.len(), 128, "one sockaddr_storage");
    assert_eq!(&addr[4..8], &[192, 0, 2, 12]);

    // A mount: mount(8) runs; the kernel creates the lockspace and waits.
    b.apply(KernelOp::SetJid(Jid(0)), &mut vec![]).unwrap();
    b.apply(KernelOp::MountFirst(Jid(0)), &mut vec![]).unwrap();
    assert!(b.kernel_mounted().unwrap().is_some(), "a running mount counts as mounted");
    k.uevent("online@/kernel/dlm/fs1 LOCKSPACE=fs1");
    poll_until(&mut b, "the join ask", |_, a| a == [Ask::JoinAux]);
    // Not synced yet: nothing answered.
    b.aux_state(&st(false, 1, &[1], Ok(())));
    assert_eq!(k.ls("event_done"), "");
    assert_eq!(k.ls("control"), "");
    // Synced but fencing pending: still waiting.
    b.aux_state(&st(true, 1, &[1], Err("fencing of node(s) 2 pending".into())));
    assert_eq!(k.ls("control"), "");
    // Synced, gate open: members, id, start, then the join answer (0).
    b.aux_state(&st(true, 1, &[1], Ok(())));
    assert_eq!(k.read("configfs/cluster/spaces/fs1/nodes/1/nodeid"), "1");
    assert_eq!(k.read("configfs/cluster/spaces/fs1/nodes/1/weight"), "1");
    assert_ne!(k.ls("id"), "");
    assert_ne!(k.ls("id"), "0");
    assert_eq!(k.ls("control"), "1");
    assert_eq!(k.ls("event_done"), "0");
    // The kernel takes the journal id; mount(8) returns.
    let (out, _) = poll_until(&mut b, "the mount result", |o, _| o.len() >= 2);
    assert_eq!(
        out,
        vec![KernelEvent::MountResult { fs: fs.clone(), ok: true }, KernelEvent::FirstRecoveryDone { fs: fs.clone() }]
    );
    assert_eq!(k.read("gfs2/lab:fs1/lock_module/first"), "1");
    assert_eq!(k.read("gfs2/lab:fs1/lock_module/jid"), "0");
    assert_eq!(k.read("mount.args"), "-t gfs2 -o noatime /dev/fake /mnt/fake");

    // Node 2 joins: the change stops the lockspace before anything is sent.
    fs::write(k.base.join("dlm/fs1/event_done"), "").unwrap();
    b.cluster_members(&[1, 2]);
    b.aux_state(&st(false, 2, &[1], Ok(())));
    assert_eq!(k.ls("control"), "0");
    b.aux_state(&st(true, 2, &[1, 2], Ok(())));
    assert_eq!(k.ls("control"), "1");
    assert_eq!(k.read("configfs/cluster/spaces/fs1/nodes/2/nodeid"), "2");
    assert_eq!(k.ls("event_done"), "", "event_done only answers our own join");

    // Same generation, gate closed (fencing of a node outside the
    // lockspace): a running lockspace is left alone.
    b.aux_state(&st(true, 2, &[1, 2], Err("fencing of node(s) 3 pending".into())));
    assert_eq!(k.ls("control"), "1");

    // Node 2 fails: stop at once; restart without it only once fenced.
    b.cluster_members(&[1]);
    assert!(!k.base.join("configfs/cluster/comms/2").exists(), "a node that left loses its connection state");
    b.aux_state(&st(true, 3, &[1], Err("fencing of node(s) 2 pending".into())));
    assert_eq!(k.ls("control"), "0");
    assert!(k.base.join("configfs/cluster/spaces/fs1/nodes/2").exists(), "members change only with the start");
    b.aux_state(&st(true, 3, &[1], Ok(())));
    assert_eq!(k.ls("control"), "1");
    assert!(!k.base.join("configfs/cluster/spaces/fs1/nodes/2").exists());
    // It comes back: a fresh comms entry before any lockspace has it.
    b.cluster_members(&[1, 2]);
    assert_eq!(k.read("configfs/cluster/comms/2/nodeid"), "2");

    // Unmount: umount(8); the mount group is left only after the kernel
    // released the lockspace (journal clean).
    let r = b.unmount().expect("the dlm backend unmounts itself").unwrap();
    assert!(r.contains("umount"), "{r}");
    assert!(b.kernel_mounted().unwrap().is_some());
    k.uevent("offline@/kernel/dlm/fs1 LOCKSPACE=fs1");
    let (_, asks) = poll_until(&mut b, "the leave asks", |_, a| a.len() >= 2);
    assert_eq!(asks, vec![Ask::LeaveFs, Ask::LeaveAux]);
    // The release is answered only once our leave of the group is agreed:
    // nobody may start a recovery with a member that is going away.
    assert_eq!(k.ls("event_done"), "", "release answered before the leave was agreed");
    b.aux_left();
    assert_eq!(k.ls("event_done"), "0");
    assert_eq!(b.kernel_mounted().unwrap(), None, "journal clean: the daemon may leave the group");
    assert!(b.unmount().is_none(), "the daemon's own leave is not another umount");
    let t = Instant::now();
    while !k.base.join("umount.args").exists() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(k.read("umount.args"), "/mnt/fake");
}

#[test]
fn a_lockspace_cohortd_did_not_start_is_refused_with_a_negative_answer() {
    let k = Fake::new();
    let mut b = DlmBackend::new("fs1", k.cfg(), None).unwrap();
    b.start(1).unwrap();
    k.uevent("online@/kernel/dlm/fs1 LOCKSPACE=fs1");
    let t = Instant::now();
    while k.ls("event_done").is_empty() && t.elapsed() < Duration::from_secs(5) {
        b.poll(&mut vec![]);
        std::thread::sleep(Duration::from_millis(10));
    }
    // Negative: the mount fails with EPERM. Never positive (a 6.1 kernel panics).
    assert_eq!(k.ls("event_done"), "-1");
    assert!(b.take_asks().is_empty(), "no group join for it");
    let notes = b.take_notes().join("\n");
    assert!(notes.contains("REFUSED") && notes.contains("cohortctl mount fs1"), "{notes}");
}
