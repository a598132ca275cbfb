//! Three cohortd processes with `transport = "udp"` (unicast on 127.0.0.1,
//! distinct ports, memory kernel backend), checked through
//! `cohortctl status --json`. No root, no corosync, no namespaces.
//!
//! The fence agent is a script of this test: it records every call and
//! SIGKILLs the target node's cohortd (only PIDs this test started and
//! whose command line names this test's directory), or fails on purpose
//! while `fence.mode` says `fail`.
//!
//! Phases:
//! 0. startup fencing: nodes 1 and 2 start (configured nodes 1-3, node 3
//!    never started); a mount on node 1 waits until node 3 was fenced
//!    (incarnation unknown) after `startup_fence_delay_ms`, then node 1
//!    mounts first;
//! 1. node 3 starts; fs1 mounted on 1, 2, 3 with journals 0, 1, 2;
//! 2. node 3's cohortd is paused (SIGSTOP): after the failure timeout nodes
//!    1-2 fence it (the agent SIGKILLs the stopped process), replay journal
//!    2 and unblock; the SIGCONT that ends the pause comes after the kill
//!    (a no-op), so the outcome does not depend on timing;
//! 3. node 3 restarts (incarnation 2) and mounts again;
//! 4. pause with the agent failing: SIGSTOP node 3 until a fencing attempt
//!    has failed, then SIGCONT: node 3 merges back with diverged state, is
//!    found stale and exits with the reset code 75; restarted
//!    (incarnation 3), it rejoins and gets a journal;
//! 5. SIGTERM while the memory kernel still has fs1 mounted: node 3 does
//!    not send Unmount (the others would free its journal without replay)
//!    and exits 1; nodes 1-2 fence it and replay its journal; then nodes 2
//!    and 1 (exit 1 as well). The clean leave (kernel unmounted first) is
//!    in `tests/kernel_contract.rs`.
//!
//! Teardown (a Drop guard, also on failure) kills only the processes this
//! test started. Timings: heartbeat 50 ms, failure timeout 1000 ms; about
//! 15 s in all.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

mod common;
use common::{is_our_cohortd, jids, members, seq_of, settled, Ctl, COHORTD};

struct Daemon {
    child: Child,
    exited: Option<ExitStatus>,
}

struct Cluster {
    dir: tempfile::TempDir,
    daemons: Vec<Option<Daemon>>,
    t0: Instant,
}

/// Three distinct free UDP ports on 127.0.0.1 (held together while chosen).
fn free_ports() -> [u16; 3] {
    let s: Vec<std::net::UdpSocket> = (0..3).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    let p: Vec<u16> = s.iter().map(|s| s.local_addr().unwrap().port()).collect();
    [p[0], p[1], p[2]]
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::Builder::new().prefix("cohortd-udp-").tempdir().expect("tempdir");
        let c = Cluster { dir, daemons: (0..=3).map(|_| None).collect(), t0: Instant::now() };
        let key = c.path().join("cohort.key");
        fs::write(&key, "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0\n").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        c.write_agent();
        let ports = free_ports();
        for k in 1..=3u32 {
            let peers: String = (1..=3).map(|i| format!("{i} = \"127.0.0.1:{}\"\n", ports[i - 1])).collect();
            let text = format!(
                "node_id = {k}\ntransport = \"udp\"\nstate_dir = \"{state}\"\nstartup_fence_delay_ms = 1500\n\n\
                 [udp]\nmode = \"unicast\"\nkey_file = \"{key}\"\nheartbeat_ms = 50\nfail_timeout_ms = 1000\n\n\
                 [udp.peers]\n{peers}\n\
                 [fence]\nagent = \"{agent}\"\ntimeout_ms = 10000\nretry_ms = 500\n\n\
                 [[filesystem]]\nname = \"fs1\"\njournals = 8\nbackend = \"memory\"\n",
                state = c.state_dir(k).display(),
                key = key.display(),
                agent = c.path().join("fence.sh").display(),
            );
            fs::write(c.path().join(format!("cohort{k}.toml")), text).unwrap();
        }
        c
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn note(&self, what: &str) {
        println!("[{:7.2}s] {what}", self.t0.elapsed().as_secs_f64());
    }

    fn write_agent(&self) {
        let d = self.path().display().to_string();
        let body = format!(
            r#"#!/bin/sh
d='{d}'
mode=$(cat "$d/fence.mode" 2>/dev/null || echo ok)
echo "caller=$COHORT_NODE target=$1 inc=$COHORT_TARGET_INCARNATION reason=$COHORT_FENCE_REASON mode=$mode" >> "$d/fence.log"
if [ "$mode" = fail ]; then sleep 0.1; exit 1; fi
pid=$(cat "$d/cohortd$1.pid" 2>/dev/null || true)
if [ -n "$pid" ] && [ "$(cat /proc/$pid/comm 2>/dev/null)" = cohortd ] && tr '\0' ' ' < /proc/$pid/cmdline | grep -qF "$d/"; then
    kill -KILL "$pid" && echo "killed pid $pid of node $1" >> "$d/fence.log"
fi
exit 0
"#
        );
        let agent = self.path().join("fence.sh");
        fs::write(&agent, body).unwrap();
        fs::set_permissions(&agent, fs::Permissions::from_mode(0o755)).unwrap();
        self.set_fence_mode("ok");
    }

    fn set_fence_mode(&self, mode: &str) {
        fs::write(self.path().join("fence.mode"), format!("{mode}\n")).unwrap();
    }

    fn fence_log(&self) -> String {
        fs::read_to_string(self.path().join("fence.log")).unwrap_or_default()
    }

    fn state_dir(&self, k: u32) -> PathBuf {
        self.path().join(format!("state{k}"))
    }

    fn socket(&self, k: u32) -> PathBuf {
        self.state_dir(k).join("cohortd.sock")
    }

    fn log_path(&self, k: u32) -> PathBuf {
        self.path().join(format!("cohortd{k}.log"))
    }

    fn start(&mut self, k: u32) {
        let _ = fs::remove_file(self.socket(k));
        let out = fs::OpenOptions::new().create(true).append(true).open(self.log_path(k)).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(COHORTD)
            .arg("--config")
            .arg(self.path().join(format!("cohort{k}.toml")))
            .env("COHORT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn cohortd");
        fs::write(self.path().join(format!("cohortd{k}.pid")), child.id().to_string()).unwrap();
        self.daemons[k as usize] = Some(Daemon { child, exited: None });
        let t = Instant::now();
        while !self.socket(k).exists() {
            if let Some(st) = self.daemon(k).child.try_wait().unwrap() {
                panic!("cohortd {k} exited at start ({st}):\n{}", self.log_tail(k, 30));
            }
            assert!(t.elapsed() < Duration::from_secs(20), "cohortd {k}: no control socket:\n{}", self.log_tail(k, 30));
            thread::sleep(Duration::from_millis(20));
        }
        let pid = self.pid(k);
        assert!(is_our_cohortd(pid, self.path()), "pid {pid} of node {k} is not our cohortd");
        self.note(&format!("node {k}: cohortd started (pid {pid})"));
    }

    fn daemon(&mut self, k: u32) -> &mut Daemon {
        self.daemons[k as usize].as_mut().unwrap_or_else(|| panic!("no cohortd started on node {k}"))
    }

    fn pid(&mut self, k: u32) -> i32 {
        self.daemon(k).child.id() as i32
    }

    fn signal(&mut self, k: u32, sig: libc::c_int) {
        let pid = self.pid(k);
        // Only our own child, and only while it has not been reaped.
        if self.daemon(k).exited.is_none() {
            unsafe { libc::kill(pid, sig) };
        }
    }

    fn log_tail(&self, k: u32, n: usize) -> String {
        let s = fs::read_to_string(self.log_path(k)).unwrap_or_default();
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

    fn wait_fence_log(&self, what: &str, timeout: Duration) {
        let t = Instant::now();
        while !self.fence_log().contains(what) {
            assert!(t.elapsed() < timeout, "fence log has no {what:?} after {timeout:?}:\n{}", self.fence_log());
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if thread::panicking() {
            for k in 1..=3 {
                eprintln!("---- cohortd {k} log (tail) ----\n{}", self.log_tail(k, 60));
            }
            eprintln!("---- fence log ----\n{}", self.fence_log());
        }
        for d in self.daemons.iter_mut().flatten() {
            if d.exited.is_none() && d.child.try_wait().ok().flatten().is_none() {
                let _ = d.child.kill();
                let _ = d.child.wait();
            }
        }
    }
}

const T: Duration = Duration::from_secs(25);

#[test]
fn three_cohortd_over_udp_on_loopback() {
    let t_all = Instant::now();
    let timing = |what: &str, t: Instant| println!("timing: {what}: {:.1} s", t.elapsed().as_secs_f64());
    let mut c = Cluster::new();

    // ---- phase 0: startup fencing of the never-started node 3
    let t = Instant::now();
    c.start(1);
    c.start(2);
    c.ctl(1, &["mount", "fs1"]).unwrap_or_else(|e| panic!("{e}"));
    c.wait_fence_log("target=3 inc= reason=fence mode=ok", T);
    let s1 = c.wait_status(1, "fs1 mounted on node 1 after startup fencing", T, |s| {
        s.stable
            && members(s) == [1, 2]
            && jids(s) == [(1, Some(0))]
            && s.groups.first().is_some_and(|g| g.kernel.is_mounted() && !g.blocked)
    });
    assert_eq!(s1.transport, "udp");
    let log1 = c.log(1);
    assert!(seq_of(&log1, "configured cluster nodes [1,2,3] (startup fencing on)").is_some(), "{log1:?}");
    let fenced = seq_of(&log1, "node 3 (never joined: startup fencing) fenced").expect("startup fence notice");
    let first = seq_of(&log1, "fs1: mount as FIRST MOUNTER with journal 0").expect("first mount");
    assert!(fenced < first, "first mount before startup fencing: {log1:?}");
    assert!(!c.fence_log().contains("killed pid"), "nothing to kill: node 3 never ran\n{}", c.fence_log());
    timing("phase 0: startup fencing of node 3, then node 1 first mounter", t);

    // ---- phase 1: node 3 starts, fs1 on all three
    let t = Instant::now();
    c.start(3);
    for k in [2, 3] {
        c.ctl(k, &["mount", "fs1", "--wait", "20"]).unwrap_or_else(|e| panic!("{e}"));
    }
    for k in 1..=3 {
        let s = c.wait_status(k, "fs1 settled on 1,2,3", T, |s| settled(s, &[1, 2, 3]));
        assert_eq!(jids(&s), vec![(1, Some(0)), (2, Some(1)), (3, Some(2))], "node {k}");
        assert_eq!((s.node, s.incarnation, s.transport.as_str(), s.quorate), (k, 1, "udp", Some(true)));
        assert_eq!(s.groups[0].kernel.first, k == 1);
    }
    // The link view: every peer up, with its address and incarnation.
    let link = c.status(1).link.expect("a link view over udp");
    assert_eq!(link.view_members, vec![1, 2, 3]);
    let peers: Vec<(u32, bool, bool, &str)> = link
        .peers
        .iter()
        .map(|p| (p.node, p.address.is_some(), p.transport_incarnation.is_some(), p.link.as_str()))
        .collect();
    assert_eq!(peers, vec![(2, true, true, "up"), (3, true, true, "up")], "{link:?}");
    assert!(link.peers.iter().all(|p| p.last_heard_ms.is_some_and(|ms| ms < 5000)), "{link:?}");
    let text = c.ctl(1, &["status"]).unwrap();
    assert!(text.contains("transport udp: view [1,2,3] installed") && text.contains("LINK: up = "), "{text}");
    timing("phase 1: fs1 mounted on 1,2,3 (jids 0,1,2)", t);
    c.note("phase 1 ok");

    // ---- phase 2: node 3 paused -> fenced (the agent kills the stopped process)
    let t = Instant::now();
    let gen_before = c.status(1).generation;
    let pid3 = c.pid(3);
    c.signal(3, libc::SIGSTOP);
    c.note("node 3 paused (SIGSTOP)");
    c.wait_fence_log(&format!("killed pid {pid3} of node 3"), T);
    c.signal(3, libc::SIGCONT); // ends the pause; the process is already dead
    c.note("node 3 continued (SIGCONT) after the fence agent killed it");
    let st3 = c.wait_exit(3, Duration::from_secs(10));
    assert_eq!(st3.signal(), Some(libc::SIGKILL), "node 3's cohortd should have been killed by the agent: {st3}");
    for k in 1..=2 {
        let s = c.wait_status(k, "node 3 fenced, journal 2 recovered, fs1 unblocked", T, |s| settled(s, &[1, 2]));
        assert!(s.generation > gen_before, "generation did not advance: {gen_before:?} -> {:?}", s.generation);
        assert_eq!(jids(&s), vec![(1, Some(0)), (2, Some(1))]);
        let log = c.log(k);
        let fenced = seq_of(&log, "node 3 (incarnation 1) fenced").expect("fenced notice");
        let recovered = seq_of(&log, "fs1: journal 2 recovered").expect("journal 2 recovered");
        let block = log.iter().rev().find(|e| e.text == "fs1: block").map(|e| e.seq).expect("block");
        let unblock = log.iter().rev().find(|e| e.text == "fs1: unblock").map(|e| e.seq).expect("unblock");
        assert!(block < fenced && fenced < recovered && recovered < unblock, "node {k}: order {log:?}");
    }
    assert!(c.fence_log().contains("target=3 inc=1 reason=fence mode=ok"), "{}", c.fence_log());
    timing("phase 2: pause -> fenced (killed) + journal 2 recovered + unblocked", t);

    // `cohortctl metrics`: what happened so far, in Prometheus text.
    let sample = |text: &str, series: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '));
        line.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(-1.0)
    };
    let m: Vec<String> = (1..=2).map(|k| c.ctl(k, &["metrics"]).unwrap_or_else(|e| panic!("{e}"))).collect();
    let both = |series: &str| sample(&m[0], series) + sample(&m[1], series);
    assert!(both("cohort_fence_attempts_total") >= 2.0, "startup fence of 3, then its pause: {m:?}");
    assert!(both("cohort_journal_recoveries_total{result=\"ok\"}") >= 1.0, "{m:?}");
    assert_eq!(sample(&m[0], "cohort_quorate"), 1.0, "{}", m[0]);
    assert!(sample(&m[0], "cohort_udp_datagrams_received_total") > 0.0, "{}", m[0]);
    assert!(sample(&m[0], "cohort_views_installed_total") >= 2.0, "{}", m[0]);
    assert_eq!(sample(&m[0], "cohort_control_requests_total{command=\"mount\",result=\"ok\"}"), 1.0, "{}", m[0]);

    // ---- phase 3: node 3 restarts (incarnation 2) and mounts again
    let t = Instant::now();
    c.start(3);
    c.ctl(3, &["mount", "fs1", "--wait", "20"]).unwrap_or_else(|e| panic!("{e}"));
    for k in 1..=3 {
        let s = c.wait_status(k, "fs1 settled on 1,2,3 again", T, |s| settled(s, &[1, 2, 3]));
        assert_eq!(jids(&s), vec![(1, Some(0)), (2, Some(1)), (3, Some(2))], "node {k}");
    }
    assert_eq!(c.status(3).incarnation, 2);
    timing("phase 3: node 3 restarted (incarnation 2) and mounted", t);
    c.note("phase 3 ok");

    // ---- phase 4: pause with a failing agent -> stale merge -> reset (75)
    let t = Instant::now();
    c.set_fence_mode("fail");
    c.signal(3, libc::SIGSTOP);
    c.note("node 3 paused (SIGSTOP), fence agent failing");
    c.wait_status(1, "a failed fencing attempt against node 3", T, |s| {
        s.fencing.iter().any(|f| f.node == 3 && f.incarnation == 2 && f.attempts >= 1)
    });
    c.signal(3, libc::SIGCONT);
    c.note("node 3 continued (SIGCONT)");
    let st3 = c.wait_exit(3, T);
    assert_eq!(st3.code(), Some(75), "node 3 should reset with exit code 75: {st3}\n{}", c.log_tail(3, 30));
    let last = c.log_tail(3, 1);
    assert!(last.starts_with("cohortd: reset: this node lost a stale-merge verdict"), "{last}");
    for k in 1..=2 {
        let log = c.log(k);
        assert!(seq_of(&log, "STALE MERGE: node 3").is_some(), "node {k}: no stale-merge notice");
        let s = c.status(k);
        assert!(jids(&s).iter().all(|(n, _)| *n != 3), "node {k}: stale node 3 was synced into fs1: {:?}", jids(&s));
    }
    timing("phase 4: pause + failing agent -> node 3 stale, reset (exit 75)", t);
    let t = Instant::now();
    // The agent keeps failing until node 3's new incarnation has rejoined:
    // a retried fencing of incarnation 2 must not hit the new process.
    c.start(3);
    assert_eq!(c.status(3).incarnation, 3, "restart must get a new incarnation");
    c.ctl(3, &["mount", "fs1", "--wait", "20"]).unwrap_or_else(|e| panic!("{e}"));
    let mut node3_jid = None;
    for k in 1..=3 {
        let s = c.wait_status(k, "fs1 settled on 1,2,3 after the reset", T, |s| settled(s, &[1, 2, 3]));
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
        assert_eq!(m3.incarnation, Some(3));
        assert!(!m3.stale);
    }
    c.set_fence_mode("ok");
    timing("phase 4: node 3 restarted (incarnation 3), rejoined, got a journal", t);
    c.note(&format!("phase 4 ok (node 3 got journal {node3_jid:?})"));

    // ---- phase 5: SIGTERM with fs1 still mounted by the (memory) kernel:
    // no Unmount (the others would free journal 2 without replay), exit 1;
    // nodes 1-2 fence node 3 and replay journal 2.
    let t = Instant::now();
    let fences_before = c.fence_log().lines().count();
    let unmounts_before = c.log_tail(3, 100_000).matches("fs1: unmounted (left the group)").count();
    c.signal(3, libc::SIGTERM);
    let st = c.wait_exit(3, T);
    let log3 = c.log_tail(3, 20);
    assert_eq!(st.code(), Some(1), "SIGTERM with fs1 still mounted by the kernel is not a clean leave:\n{log3}");
    assert!(log3.contains("fs1 still mounted by the kernel"), "{log3}");
    assert!(
        c.log_tail(3, 1).starts_with("cohortd: stopped by a signal with fs1 still mounted by the kernel"),
        "{log3}"
    );
    assert_eq!(
        c.log_tail(3, 100_000).matches("fs1: unmounted (left the group)").count(),
        unmounts_before,
        "node 3 sent Unmount with fs1 still mounted:\n{log3}"
    );
    for k in 1..=2 {
        c.wait_status(k, "fs1 settled on 1,2 after node 3 was fenced", T, |s| settled(s, &[1, 2]));
    }
    let new_fences: Vec<String> = c.fence_log().lines().skip(fences_before).map(str::to_owned).collect();
    assert!(
        new_fences.iter().any(|l| l.contains("target=3 inc=3 ")),
        "node 3 stopped with fs1 mounted must be fenced: {new_fences:?}"
    );
    assert!(
        seq_of(&c.log(1), &format!("recovery of journal {} ok", node3_jid.unwrap())).is_some()
            || seq_of(&c.log(2), &format!("recovery of journal {} ok", node3_jid.unwrap())).is_some(),
        "node 3's journal was not replayed"
    );
    for k in [2, 1] {
        c.signal(k, libc::SIGTERM);
        let st = c.wait_exit(k, T);
        assert_eq!(st.code(), Some(1), "node {k}: {st}\n{}", c.log_tail(k, 20));
    }
    timing("phase 5: SIGTERM with fs1 mounted: exit 1, node 3 fenced, journal replayed", t);
    let dir = c.path().to_path_buf();
    let pids: Vec<i32> = c.daemons.iter().flatten().map(|d| d.child.id() as i32).collect();
    drop(c);
    for p in pids {
        assert!(!is_our_cohortd(p, &dir), "cohortd {p} survived the teardown");
    }
    timing("whole test", t_all);
    assert!(t_all.elapsed() < Duration::from_secs(60), "took {:?}", t_all.elapsed());
}

impl Ctl for Cluster {
    fn socket(&self, k: u32) -> PathBuf {
        Cluster::socket(self, k)
    }
    fn fence_log(&self) -> String {
        Cluster::fence_log(self)
    }
}
