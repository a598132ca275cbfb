//! cohortd on a real 3-node corosync cluster (network namespaces on this
//! machine, `tests/corosync-lab/cluster.sh`, token 1000), checked through
//! `cohortctl status --json`.
//!
//! Needs root, corosync 3, iproute2 and iptables. It FAILS (never skips)
//! when the cluster cannot be started. One cohortd per node namespace with
//! the memory kernel backend; the fence agent is a script of this test that
//! records every call and SIGKILLs the target node's cohortd (only PIDs this
//! test started), or fails on purpose while `fence.mode` says `fail`.
//!
//! Phases:
//! 1. all three mount fs1: journals 0, 1, 2 and node 1 is the first mounter;
//! 2. node 3 is cut off (iptables) with its cohortd running: nodes 1-2 fence
//!    it (the agent kills node 3's cohortd), replay journal 2, unblock; then
//!    node 3 is healed, its cohortd restarted (new incarnation), mounts again;
//! 3. stateful merge: the agent fails, node 3 is cut off and healed before
//!    any fencing succeeds: node 3 is found stale and resets (exit code 75),
//!    the test restarts it (new incarnation), it rejoins cleanly and gets a
//!    journal;
//! 4. corosync is killed on node 2: its cohortd blocks fs1 and exits with
//!    `corosync connection lost: ...` (exit code 2); nodes 1 and 3 treat node
//!    2 as failed, fence it and replay its journal;
//!    Then (4b) `cohortctl unmount fs1` on node 3 is refused (the memory
//!    kernel still has it mounted); SIGTERM on node 3 does not leave cleanly
//!    (exit 1, no Unmount): node 1 fences it and recovers its journal; node
//!    1 stops on SIGTERM with fs1 mounted the same way (exit 1);
//! 5. teardown kills only the processes this test started and removes its
//!    namespaces (also on failure, from a Drop guard).
//!
//! A file lock (`$TMPDIR/cohort-corosync-lab.lock`, shared with the corosync
//! adapter's lab test) keeps the two lab tests from running at once.

#![allow(clippy::needless_range_loop)]

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

mod common;
use common::{is_our_cohortd, jids, members, seq_of, settled, Ctl, COHORTD};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/corosync-lab/cluster.sh");
const DIR_PREFIX: &str = "cohortd-lab-";

struct LabLock(#[allow(dead_code)] File);

impl LabLock {
    fn take() -> LabLock {
        let path = std::env::temp_dir().join("cohort-corosync-lab.lock");
        let f = File::create(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            panic!("flock {}: {}", path.display(), std::io::Error::last_os_error());
        }
        LabLock(f)
    }
}

fn run_script(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new("bash")
        .arg(SCRIPT)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {SCRIPT}: {e}"));
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Tear down labs of earlier runs killed before their Drop guard ran.
fn reap_stale_labs() {
    let Ok(rd) = fs::read_dir(std::env::temp_dir()) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = e.path();
        let owner: Option<i32> = fs::read_to_string(dir.join("owner.pid")).ok().and_then(|s| s.trim().parse().ok());
        if owner.is_some_and(|p| unsafe { libc::kill(p, 0) } == 0) {
            continue;
        }
        eprintln!("tearing down stale lab {}", dir.display());
        for k in 1..=3 {
            if let Some(pid) =
                fs::read_to_string(dir.join(format!("cohortd{k}.pid"))).ok().and_then(|s| s.trim().parse().ok())
            {
                if is_our_cohortd(pid, &dir) {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = run_script(&["down", &dir.to_string_lossy()]);
        let _ = fs::remove_dir_all(&dir);
    }
}

struct Daemon {
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

/// The Drop guard: kills our cohortds, then `cluster.sh down`.
struct Lab {
    dir: tempfile::TempDir,
    daemons: Vec<Option<Daemon>>,
    t0: Instant,
}

impl Lab {
    fn up() -> Lab {
        let dir = tempfile::Builder::new().prefix(DIR_PREFIX).tempdir().expect("tempdir");
        fs::write(dir.path().join("owner.pid"), std::process::id().to_string()).unwrap();
        let lab = Lab { dir, daemons: (0..=3).map(|_| None).collect(), t0: Instant::now() };
        let (st, out, err) = run_script(&["up", "3", &lab.dir_str()]);
        assert!(st.success(), "could not start a 3-node corosync cluster ({st}):\n{out}\n{err}");
        lab.write_agent();
        for k in 1..=3 {
            lab.write_config(k);
        }
        lab
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn dir_str(&self) -> String {
        self.path().to_string_lossy().into_owned()
    }

    fn sh(&self, args: &[&str]) {
        let d = self.dir_str();
        let mut a = vec!["-d", d.as_str()];
        a.extend_from_slice(args);
        let (st, out, err) = run_script(&a);
        assert!(st.success(), "cluster.sh {args:?} failed ({st}):\n{out}\n{err}");
    }

    fn note(&self, what: &str) {
        println!("[{:7.2}s] {what}", self.t0.elapsed().as_secs_f64());
    }

    fn write_agent(&self) {
        let d = self.dir_str();
        let agent = self.path().join("fence.sh");
        // Kills only a PID this test recorded, and only if it still is one of
        // this lab's cohortds.
        let body = format!(
            r#"#!/bin/sh
d='{d}'
mode=$(cat "$d/fence.mode" 2>/dev/null || echo ok)
echo "caller=$COHORT_NODE target=$1 inc=$COHORT_TARGET_INCARNATION reason=$COHORT_FENCE_REASON mode=$mode" >> "$d/fence.log"
if [ "$mode" = fail ]; then sleep 0.2; exit 1; fi
pid=$(cat "$d/cohortd$1.pid" 2>/dev/null || true)
if [ -n "$pid" ] && [ "$(cat /proc/$pid/comm 2>/dev/null)" = cohortd ] && tr '\0' ' ' < /proc/$pid/cmdline | grep -qF "$d/"; then
    kill -KILL "$pid" && echo "killed pid $pid of node $1" >> "$d/fence.log"
fi
exit 0
"#
        );
        fs::write(&agent, body).unwrap();
        fs::set_permissions(&agent, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(self.path().join("fence.mode"), "ok\n").unwrap();
    }

    fn write_config(&self, k: u32) {
        // node 2 takes its node id from corosync (node_id omitted)
        let node_id = if k == 2 { String::new() } else { format!("node_id = {k}\n") };
        let text = format!(
            "{node_id}transport = \"corosync\"\nstate_dir = \"{}\"\n\n[fence]\nagent = \"{}\"\ntimeout_ms = 10000\nretry_ms = 1000\n\n[[filesystem]]\nname = \"fs1\"\njournals = 8\nbackend = \"memory\"\n",
            self.state_dir(k).display(),
            self.path().join("fence.sh").display()
        );
        fs::write(self.path().join(format!("cohort{k}.toml")), text).unwrap();
    }

    fn state_dir(&self, k: u32) -> PathBuf {
        self.path().join(format!("state{k}"))
    }

    fn socket(&self, k: u32) -> PathBuf {
        self.state_dir(k).join("cohortd.sock")
    }

    fn set_fence_mode(&self, mode: &str) {
        fs::write(self.path().join("fence.mode"), format!("{mode}\n")).unwrap();
    }

    fn fence_log(&self) -> String {
        fs::read_to_string(self.path().join("fence.log")).unwrap_or_default()
    }

    /// Start node `k`'s cohortd in its namespace (the PID stays cohortd's:
    /// cluster.sh and `ip netns exec` exec).
    fn start(&mut self, k: u32) {
        let _ = fs::remove_file(self.socket(k));
        let log = self.path().join(format!("cohortd{k}.log"));
        let out = fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let err = out.try_clone().unwrap();
        let d = self.dir_str();
        let cfg = self.path().join(format!("cohort{k}.toml"));
        let child = Command::new("bash")
            .arg(SCRIPT)
            .args(["-d", &d, "exec", &k.to_string(), COHORTD, "--config"])
            .arg(&cfg)
            .env("COHORT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn cohortd");
        fs::write(self.path().join(format!("cohortd{k}.pid")), child.id().to_string()).unwrap();
        self.daemons[k as usize] = Some(Daemon { child, log, exited: None });
        // wait for its control socket
        let t = Instant::now();
        while !self.socket(k).exists() {
            if let Some(st) = self.daemon(k).child.try_wait().unwrap() {
                panic!("cohortd {k} exited at start ({st}):\n{}", self.log_tail(k, 30));
            }
            assert!(t.elapsed() < Duration::from_secs(15), "cohortd {k}: no control socket:\n{}", self.log_tail(k, 30));
            thread::sleep(Duration::from_millis(20));
        }
        let pid = self.daemon(k).child.id() as i32;
        assert!(is_our_cohortd(pid, self.path()), "pid {pid} of node {k} is not cohortd");
    }

    fn daemon(&mut self, k: u32) -> &mut Daemon {
        self.daemons[k as usize].as_mut().unwrap_or_else(|| panic!("no cohortd started on node {k}"))
    }

    fn log_tail(&self, k: u32, n: usize) -> String {
        let p = self.path().join(format!("cohortd{k}.log"));
        let s = fs::read_to_string(p).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn wait_exit(&mut self, k: u32, timeout: Duration) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(st) = self.daemon(k).exited {
                return st;
            }
            if let Some(st) = self.daemon(k).child.try_wait().unwrap() {
                self.daemon(k).exited = Some(st);
                return st;
            }
            if t.elapsed() > timeout {
                let tail = self.log_tail(k, 40);
                panic!("cohortd {k} did not exit within {timeout:?}:\n{tail}\nfence log:\n{}", self.fence_log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn last_stderr_line(&mut self, k: u32) -> String {
        let log = self.daemon(k).log.clone();
        fs::read_to_string(log).unwrap_or_default().lines().last().unwrap_or("").to_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for d in self.daemons.iter_mut().flatten() {
            if d.exited.is_none() && d.child.try_wait().ok().flatten().is_none() {
                let _ = d.child.kill();
                let _ = d.child.wait();
            }
        }
        let (st, out, err) = run_script(&["down", &self.dir_str()]);
        if !st.success() {
            eprintln!("cluster.sh down {} failed ({st}):\n{out}\n{err}", self.dir_str());
        }
    }
}

#[test]
fn cohortd_on_a_real_three_node_cluster() {
    let t_all = Instant::now();
    assert_eq!(unsafe { libc::geteuid() }, 0, "the cohortd lab test must run as root (it creates network namespaces)");
    let _lock = LabLock::take();
    reap_stale_labs();
    let timing = |what: &str, t: Instant| println!("timing: {what}: {:.1} s", t.elapsed().as_secs_f64());

    // ---- phase 1: cluster, daemons, mounts
    let t = Instant::now();
    let mut lab = Lab::up();
    timing("corosync cluster up", t);
    let t = Instant::now();
    for k in 1..=3 {
        lab.start(k);
    }
    for k in 1..=3 {
        lab.wait_status(k, "a synced 3-member daemon group", Duration::from_secs(20), |s| {
            s.daemon.phase == "complete" && members(s) == [1, 2, 3]
        });
    }
    let mode = fs::metadata(lab.socket(1)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode");
    let s2 = lab.status(2);
    assert_eq!((s2.node, s2.incarnation, s2.schema, s2.transport.as_str()), (2, 1, 1, "corosync"));
    for k in 1..=3 {
        lab.ctl(k, &["mount", "fs1", "--wait", "20"]).unwrap_or_else(|e| panic!("{e}"));
    }
    for k in 1..=3 {
        let s = lab.wait_status(k, "fs1 settled on 1,2,3", Duration::from_secs(20), |s| settled(s, &[1, 2, 3]));
        assert_eq!(jids(&s), vec![(1, Some(0)), (2, Some(1)), (3, Some(2))], "node {k}");
        let g = &s.groups[0];
        assert!(g.first_done);
        assert_eq!(g.kernel.first, k == 1, "node {k}: first mounter flag {:?}", g.kernel);
        assert_eq!(g.kernel.jid, Some(k as u16 - 1));
    }
    let log1 = lab.log(1);
    assert!(seq_of(&log1, "fs1: mount as FIRST MOUNTER with journal 0").is_some(), "{log1:?}");
    let human = lab.ctl(1, &["status"]).unwrap();
    assert!(human.contains("fs1  ") && human.contains("running"), "{human}");
    timing("phase 1: 3 daemons up, fs1 mounted on all (jids 0,1,2, node 1 first)", t);
    lab.note("phase 1 ok");

    // ---- phase 2: node 3 cut off with its daemon running
    let t = Instant::now();
    let gen_before = lab.status(1).generation;
    lab.sh(&["cut", "3"]);
    for k in 1..=2 {
        lab.wait_status(k, "node 3 fenced, journal 2 recovered, fs1 unblocked", Duration::from_secs(25), |s| {
            settled(s, &[1, 2])
        });
    }
    let st3 = lab.wait_exit(3, Duration::from_secs(10));
    assert_eq!(st3.signal(), Some(libc::SIGKILL), "node 3's cohortd should have been killed by the fence agent: {st3}");
    let fl = lab.fence_log();
    assert!(fl.contains("caller=1 target=3 inc=1 reason=fence mode=ok"), "{fl}");
    assert!(fl.contains("killed pid"), "{fl}");
    let s1 = lab.status(1);
    assert!(s1.generation > gen_before, "generation did not advance: {:?} -> {:?}", gen_before, s1.generation);
    assert_eq!(jids(&s1), vec![(1, Some(0)), (2, Some(1))]);
    for k in 1..=2 {
        let log = lab.log(k);
        let fenced = seq_of(&log, "node 3 (incarnation 1) fenced").expect("fenced notice");
        let recovered = seq_of(&log, "fs1: journal 2 recovered").expect("journal 2 recovered");
        let block = log.iter().rev().find(|e| e.text == "fs1: block").map(|e| e.seq).expect("block");
        let unblock = log.iter().rev().find(|e| e.text == "fs1: unblock").map(|e| e.seq).expect("unblock");
        assert!(block < fenced && fenced < recovered && recovered < unblock, "node {k}: order {log:?}");
    }
    timing("phase 2: cut -> fenced + journal recovered + unblocked", t);
    // heal, restart node 3 (new incarnation), mount again
    let t = Instant::now();
    lab.sh(&["heal", "3"]);
    lab.sh(&["wait-members", "3", "3", "20"]);
    lab.start(3);
    lab.ctl(3, &["mount", "fs1", "--wait", "20"]).unwrap_or_else(|e| panic!("{e}"));
    for k in 1..=3 {
        let s = lab.wait_status(k, "fs1 settled on 1,2,3 again", Duration::from_secs(20), |s| settled(s, &[1, 2, 3]));
        assert_eq!(jids(&s), vec![(1, Some(0)), (2, Some(1)), (3, Some(2))], "node {k}");
    }
    assert_eq!(lab.status(3).incarnation, 2);
    timing("phase 2: heal, node 3 restarted (incarnation 2) and mounted", t);
    lab.note("phase 2 ok");

    // ---- phase 3: stateful merge (heal before fencing succeeds)
    let t = Instant::now();
    lab.set_fence_mode("fail");
    lab.sh(&["cut", "3"]);
    lab.wait_status(1, "a failed fencing attempt against node 3", Duration::from_secs(25), |s| {
        s.fencing.iter().any(|f| f.node == 3 && f.incarnation == 2 && f.attempts >= 1)
    });
    let s3 = lab.status(3);
    assert_eq!(s3.quorate, Some(false), "isolated node 3 must not be quorate");
    assert!(s3.groups[0].blocked, "isolated node 3 blocks fs1: {:?}", s3.groups[0]);
    assert!(!lab.fence_log().contains("caller=3"), "node 3 fenced without quorum:\n{}", lab.fence_log());
    lab.sh(&["heal", "3"]);
    let st3 = lab.wait_exit(3, Duration::from_secs(20));
    assert_eq!(st3.code(), Some(75), "node 3 should reset with exit code 75: {st3}\n{}", lab.log_tail(3, 30));
    let last = lab.last_stderr_line(3);
    assert!(last.starts_with("cohortd: reset: this node lost a stale-merge verdict"), "{last}");
    for k in 1..=2 {
        let s = lab.status(k);
        assert!(jids(&s).iter().all(|(n, _)| *n != 3), "node {k}: stale node 3 was synced into fs1: {:?}", jids(&s));
        let log = lab.log(k);
        assert!(seq_of(&log, "STALE MERGE: node 3").is_some(), "node {k}: no stale-merge notice");
    }
    let fl = lab.fence_log();
    assert!(fl.contains("caller=1 target=3 inc= reason=kill"), "the lowest winner runs the kill backup:\n{fl}");
    timing("phase 3: cut + heal before fencing -> node 3 stale, reset (exit 75)", t);
    let t = Instant::now();
    lab.start(3);
    let s3 = lab.status(3);
    assert_eq!(s3.incarnation, 3, "restart must get a new incarnation");
    lab.ctl(3, &["mount", "fs1", "--wait", "20"]).unwrap_or_else(|e| panic!("{e}"));
    let mut node3_jid = None;
    for k in 1..=3 {
        let s = lab.wait_status(k, "fs1 settled on 1,2,3 after the reset", Duration::from_secs(20), |s| {
            settled(s, &[1, 2, 3])
        });
        let j = jids(&s);
        let mut uniq: Vec<u16> = j.iter().filter_map(|(_, j)| *j).collect();
        uniq.sort_unstable();
        uniq.dedup();
        assert_eq!(uniq.len(), 3, "node {k}: journals not distinct: {j:?}");
        assert_eq!(&j[..2], &[(1, Some(0)), (2, Some(1))]);
        match node3_jid {
            None => node3_jid = j[2].1,
            Some(x) => assert_eq!(j[2].1, Some(x), "node {k} disagrees on node 3's journal"),
        }
        let m3 = s.members.iter().find(|m| m.node == 3).unwrap();
        assert_eq!(m3.incarnation, Some(3), "node {k} sees node 3 in incarnation {:?}", m3.incarnation);
        assert!(!m3.stale);
    }
    let log1 = lab.log(1);
    assert!(seq_of(&log1, "fs1: journal 2 recovered").is_some());
    lab.set_fence_mode("ok");
    timing("phase 3: node 3 restarted (incarnation 3), rejoined, got a journal", t);
    lab.note(&format!("phase 3 ok (node 3 got journal {node3_jid:?})"));

    // ---- phase 4: corosync dies under node 2's cohortd
    let t = Instant::now();
    lab.sh(&["kill-corosync", "2"]);
    let st2 = lab.wait_exit(2, Duration::from_secs(10));
    assert_eq!(st2.code(), Some(2), "node 2's cohortd: {st2}\n{}", lab.log_tail(2, 20));
    let last = lab.last_stderr_line(2);
    assert!(last.starts_with("cohortd: corosync connection lost: "), "{last}");
    assert!(last.ends_with("(blocked: fs1)"), "{last}");
    assert!(lab.log_tail(2, 10).contains("fs1: block (corosync connection lost)"), "{}", lab.log_tail(2, 10));
    timing("phase 4: corosync SIGKILL -> cohortd blocked and exited", t);
    for k in [1, 3] {
        let s =
            lab.wait_status(k, "node 2 fenced, journal 1 recovered", Duration::from_secs(25), |s| settled(s, &[1, 3]));
        assert_eq!(jids(&s)[0], (1, Some(0)));
        let log = lab.log(k);
        let fenced = seq_of(&log, "node 2 (incarnation 1) fenced").expect("node 2 fenced");
        let rec = seq_of(&log, "fs1: journal 1 recovered").expect("journal 1 recovered");
        assert!(fenced < rec);
    }
    assert!(lab.fence_log().contains("caller=1 target=2 inc=1 reason=fence mode=ok"), "{}", lab.fence_log());
    timing("phase 4: nodes 1,3 fenced node 2 and recovered its journal", t);
    lab.note("phase 4 ok");

    // ---- phase 4b: the memory kernel still has fs1 mounted: `unmount` is
    // refused, and SIGTERM does not leave cleanly (no Unmount, exit 1): the
    // others fence the node and replay its journal.
    let t = Instant::now();
    let e = lab.ctl(3, &["unmount", "fs1"]).expect_err("unmount with fs1 still mounted by the kernel");
    assert!(e.contains("fs1 is still mounted by the kernel") && e.contains("umount it first"), "{e}");
    let jid3 = jids(&lab.status(1)).iter().find(|(n, _)| *n == 3).and_then(|(_, j)| *j).expect("node 3's journal");
    let pid3 = lab.daemon(3).child.id() as i32;
    unsafe { libc::kill(pid3, libc::SIGTERM) };
    let st3 = lab.wait_exit(3, Duration::from_secs(10));
    assert_eq!(st3.code(), Some(1), "SIGTERM with fs1 mounted is not a clean leave:\n{}", lab.log_tail(3, 20));
    assert!(lab.log_tail(3, 20).contains("fs1 still mounted by the kernel"), "{}", lab.log_tail(3, 20));
    assert!(!lab.log_tail(3, 20).contains("fs1: unmounted (left the group)"), "{}", lab.log_tail(3, 20));
    let s = lab.wait_status(1, "node 3 fenced, its journal recovered", Duration::from_secs(25), |s| {
        s.groups.first().is_some_and(|g| g.members.len() == 1 && !g.blocked && g.recoveries.is_empty()) && s.stable
    });
    assert_eq!(jids(&s), vec![(1, Some(0))]);
    assert!(lab.fence_log().contains("target=3 inc=3"), "node 3 was not fenced:\n{}", lab.fence_log());
    assert!(seq_of(&lab.log(1), &format!("fs1: journal {jid3} recovered")).is_some(), "journal {jid3} not recovered");
    let pid1 = lab.daemon(1).child.id() as i32;
    unsafe { libc::kill(pid1, libc::SIGTERM) };
    let st1 = lab.wait_exit(1, Duration::from_secs(20));
    assert_eq!(st1.code(), Some(1), "SIGTERM with fs1 mounted:\n{}", lab.log_tail(1, 20));
    timing("phase 4b: unmount refused, SIGTERM with fs1 mounted -> fenced, journal recovered", t);

    // ---- phase 5: teardown, timed
    let dir: PathBuf = fs::canonicalize(lab.path()).unwrap();
    let pids: Vec<i32> = lab.daemons.iter().flatten().map(|d| d.child.id() as i32).collect();
    let prefix = {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s '{}' | sha256sum | cut -c1-6", dir.display()))
            .output()
            .unwrap();
        format!("ch-{}-", String::from_utf8_lossy(&o.stdout).trim())
    };
    let t = Instant::now();
    drop(lab);
    timing("teardown", t);
    assert!(!dir.join("cluster.env").exists());
    for p in pids {
        assert!(!is_our_cohortd(p, &dir), "cohortd {p} survived the teardown");
    }
    let out =
        String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).into_owned();
    assert!(!out.contains(&prefix), "namespaces {prefix}* left behind:\n{out}");
    timing("whole test", t_all);
}

impl Ctl for Lab {
    fn socket(&self, k: u32) -> PathBuf {
        Lab::socket(self, k)
    }
    fn fence_log(&self) -> String {
        Lab::fence_log(self)
    }
}
