//! Process hardening of cohortd (issue 15): signals, the control socket,
//! log levels. Real cohortd processes over UDP on 127.0.0.1 (no root, no
//! corosync); a daemon alone waits for a peer that never comes, which is
//! enough for signals and the control socket. Each test takes seconds.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

mod common;
use common::{settled, Ctl, COHORTCTL, COHORTD};

const T: Duration = Duration::from_secs(20);

fn free_ports(n: usize) -> Vec<u16> {
    let s: Vec<std::net::UdpSocket> = (0..n).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    s.iter().map(|s| s.local_addr().unwrap().port()).collect()
}

struct Cluster {
    dir: tempfile::TempDir,
    kids: Vec<Option<Child>>,
}

impl Cluster {
    /// `n` configured nodes (none started); `extra` goes to the top of every config.
    fn new(n: u32, extra: &str) -> Cluster {
        let dir = tempfile::Builder::new().prefix("cohortd-hard-").tempdir().unwrap();
        let d = dir.path();
        let key = d.join("cohort.key");
        fs::write(&key, "5a".repeat(32)).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        let agent = d.join("fence.sh");
        fs::write(
            &agent,
            format!(
                "#!/bin/sh\necho \"target=$1\" >> '{}/fence.log'\necho \"agent-stderr: cannot reach the PDU of node $1\" >&2\nexit 0\n",
                d.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&agent, fs::Permissions::from_mode(0o755)).unwrap();
        let ports = free_ports(n as usize);
        for k in 1..=n {
            let peers: String = (1..=n).map(|i| format!("{i} = \"127.0.0.1:{}\"\n", ports[i as usize - 1])).collect();
            let text = format!(
                "{extra}node_id = {k}\ntransport = \"udp\"\nstate_dir = \"{state}\"\nstartup_fence_delay_ms = 60000\n\n\
                 [udp]\nmode = \"unicast\"\nkey_file = \"{key}\"\nheartbeat_ms = 50\nfail_timeout_ms = 600\n\n\
                 [udp.peers]\n{peers}\n[fence]\nagent = \"{agent}\"\ntimeout_ms = 5000\nretry_ms = 300\n\n\
                 [[filesystem]]\nname = \"fs1\"\njournals = 8\nbackend = \"memory\"\n",
                state = d.join(format!("state{k}")).display(),
                key = key.display(),
                agent = agent.display(),
            );
            fs::write(d.join(format!("cohort{k}.toml")), text).unwrap();
        }
        Cluster { dir, kids: (0..=n).map(|_| None).collect() }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self, k: u32) -> PathBuf {
        self.path().join(format!("cohort{k}.toml"))
    }

    fn log_path(&self, k: u32) -> PathBuf {
        self.path().join(format!("cohortd{k}.log"))
    }

    fn log_text(&self, k: u32) -> String {
        fs::read_to_string(self.log_path(k)).unwrap_or_default()
    }

    /// Start node k with `log` as COHORT_LOG (`None`: neither COHORT_LOG nor RUST_LOG set).
    fn start(&mut self, k: u32, log: Option<&str>) {
        let sock = self.socket(k);
        let out = fs::OpenOptions::new().create(true).append(true).open(self.log_path(k)).unwrap();
        let mut cmd = Command::new(COHORTD);
        cmd.arg("--config").arg(self.config(k)).env_remove("RUST_LOG").env_remove("COHORT_LOG");
        if let Some(l) = log {
            cmd.env("COHORT_LOG", l);
        }
        let child = cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap();
        self.kids[k as usize] = Some(child);
        let t = Instant::now();
        while !sock.exists() {
            assert!(self.alive(k), "cohortd {k} exited at start:\n{}", self.log_text(k));
            assert!(t.elapsed() < T, "cohortd {k}: no control socket");
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn child(&mut self, k: u32) -> &mut Child {
        self.kids[k as usize].as_mut().expect("started")
    }

    fn alive(&mut self, k: u32) -> bool {
        self.child(k).try_wait().unwrap().is_none()
    }

    fn signal(&mut self, k: u32, sig: libc::c_int) {
        if self.alive(k) {
            let pid = self.child(k).id() as i32;
            unsafe { libc::kill(pid, sig) };
        }
    }

    fn wait_log(&self, k: u32, what: &str) {
        let t = Instant::now();
        while !self.log_text(k).contains(what) {
            assert!(t.elapsed() < T, "node {k}: no {what:?} in its log:\n{}", self.log_text(k));
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn fence_log(&self) -> String {
        fs::read_to_string(self.path().join("fence.log")).unwrap_or_default()
    }
}

impl Ctl for Cluster {
    fn socket(&self, k: u32) -> PathBuf {
        self.path().join(format!("state{k}/cohortd.sock"))
    }
    fn fence_log(&self) -> String {
        Cluster::fence_log(self)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.kids.iter_mut().flatten() {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

// ---- item 1: signals -------------------------------------------------------

/// SIGHUP never stops the daemon: it re-reads the configuration, applies
/// what can change at run time (`log_level`, the fence agent and its
/// timeout), logs the keys that need a restart, and keeps running on a
/// configuration that does not validate. SIGPIPE is ignored.
#[test]
fn sighup_rereads_the_config_and_sigpipe_is_ignored() {
    let mut c = Cluster::new(2, "");
    c.start(1, None);
    c.signal(1, libc::SIGPIPE);
    c.signal(1, libc::SIGHUP);
    c.wait_log(1, "SIGHUP: configuration");
    thread::sleep(Duration::from_millis(200));
    assert!(c.alive(1), "cohortd died on SIGHUP/SIGPIPE:\n{}", c.log_text(1));
    c.status(1);

    // A change that applies (log level, fence timeout) and one that needs a restart.
    let cfg = fs::read_to_string(c.config(1)).unwrap();
    let changed =
        format!("log_level = \"warn\"\nlog_entries = 500\n{}", cfg.replace("timeout_ms = 5000", "timeout_ms = 7000"));
    fs::write(c.config(1), changed).unwrap();
    c.signal(1, libc::SIGHUP);
    c.wait_log(1, "needs a restart");
    let log = c.log_text(1);
    assert!(log.contains(" WARN ") && log.contains("log_entries"), "{log}");
    let ev: Vec<String> = c.log(1).into_iter().map(|e| e.text).collect();
    assert!(ev.iter().any(|t| t.contains("applied") && t.contains("fence.timeout_ms = 7000")), "{ev:?}");
    assert!(ev.iter().any(|t| t.contains("needs a restart") && t.contains("log_entries")), "{ev:?}");
    // log_level = "warn" is in force: an INFO event is not printed any more.
    let before = c.log_text(1).len();
    c.ctl(1, &["mount", "fs1"]).unwrap();
    thread::sleep(Duration::from_millis(300));
    let after = c.log_text(1)[before..].to_owned();
    assert!(!after.contains("mount of fs1"), "INFO still printed after log_level = \"warn\":\n{after}");

    // A configuration that does not validate: logged, the daemon keeps running.
    fs::write(c.config(1), "node_id = \"x\"\n").unwrap();
    c.signal(1, libc::SIGHUP);
    c.wait_log(1, "configuration reload failed");
    thread::sleep(Duration::from_millis(200));
    assert!(c.alive(1), "{}", c.log_text(1));
    c.status(1);

    // SIGTERM as before: nothing mounted by the kernel here (memory fs
    // mount is held while alone) -> clean stop.
    c.signal(1, libc::SIGTERM);
    let t = Instant::now();
    let st = loop {
        if let Some(st) = c.child(1).try_wait().unwrap() {
            break st;
        }
        assert!(t.elapsed() < T);
        thread::sleep(Duration::from_millis(20));
    };
    assert!(st.code().is_some(), "{st}");
}

// ---- item 6: control socket ------------------------------------------------

fn read_line(r: &mut BufReader<UnixStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l
}

/// The rest of an oversized request line is skipped, never executed as a
/// request of its own; the connection then works as before.
#[test]
fn control_oversized_line_is_skipped_not_executed() {
    let mut c = Cluster::new(2, "");
    c.start(1, Some("info"));
    let s = UnixStream::connect(c.socket(1)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(&vec![b'x'; 70_000]).unwrap();
    thread::sleep(Duration::from_millis(300)); // the daemon has read the 70,000 bytes
    w.write_all(b"{\"cmd\":\"mount\",\"fs\":\"fs1\"}\n").unwrap();
    w.write_all(b"{\"cmd\":\"members\"}\n").unwrap();
    let first = read_line(&mut r);
    assert!(first.contains("request line longer than"), "{first}");
    let second = read_line(&mut r);
    assert!(second.contains("\"members\""), "the tail of the oversized line was answered as a request: {second}");
    let log: Vec<String> = c.log(1).into_iter().map(|e| e.text).collect();
    assert!(!log.iter().any(|t| t.contains("mount of fs1")), "the tail was executed: {log:?}");
}

/// Idle connections never lock the operator out: with 64 connections
/// open and silent, `cohortctl status` is answered at once.
#[test]
fn control_idle_connections_do_not_lock_out_cohortctl() {
    let mut c = Cluster::new(2, "");
    c.start(1, Some("info"));
    let idle: Vec<UnixStream> = (0..80).map(|_| UnixStream::connect(c.socket(1)).unwrap()).collect();
    thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let out = Command::new(COHORTCTL).arg("--socket").arg(c.socket(1)).args(["status", "--json"]).output().unwrap();
    assert!(out.status.success(), "cohortctl locked out by idle connections: {out:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    drop(idle);
}

/// A client that writes without end (no newline) does not hold up the
/// event loop: other clients are answered meanwhile.
#[test]
fn control_flooding_client_does_not_stall_the_loop() {
    let mut c = Cluster::new(2, "");
    c.start(1, Some("info"));
    let mut flood = UnixStream::connect(c.socket(1)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let h = thread::spawn(move || {
        let chunk = vec![b'y'; 1 << 20];
        while !s2.load(std::sync::atomic::Ordering::SeqCst) {
            if flood.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        let t = Instant::now();
        c.status(1);
        assert!(t.elapsed() < Duration::from_secs(1), "status took {:?} while a client floods", t.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    h.join().unwrap();
}

// ---- item 2: log levels ----------------------------------------------------

/// With COHORT_LOG=warn an operator still sees a node loss and its fencing
/// (WARN/ERROR), and the fence agent's stderr goes into the event log and
/// the daemon's log lines, not raw onto cohortd's stderr.
#[test]
fn warn_level_shows_node_loss_and_fencing() {
    let mut c = Cluster::new(3, "");
    for k in 1..=3 {
        c.start(k, Some("warn"));
    }
    for k in 1..=3 {
        c.ctl(k, &["mount", "fs1", "--wait", "15"]).unwrap_or_else(|e| panic!("{e}"));
    }
    for k in 1..=3 {
        c.wait_status(k, "fs1 on 1,2,3", T, |s| settled(s, &[1, 2, 3]));
    }
    c.signal(3, libc::SIGKILL);
    for k in 1..=2 {
        c.wait_status(k, "node 3 fenced, fs1 on 1,2", T, |s| settled(s, &[1, 2]));
    }
    assert!(c.fence_log().contains("target=3"), "{}", c.fence_log());
    let both = format!("{}{}", c.log_text(1), c.log_text(2));
    let warn_lines: Vec<&str> = both.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
    let has = |pat: &str| warn_lines.iter().any(|l| l.contains(pat));
    assert!(
        has("node 3") && warn_lines.iter().any(|l| l.contains("node 3") && l.contains("lost")),
        "no WARN for the loss of node 3:\n{both}"
    );
    assert!(
        warn_lines.iter().any(|l| l.contains("fenc") && l.contains("node 3")),
        "no WARN for fencing node 3:\n{both}"
    );
    // The agent's stderr: in the event log and in a log line, never raw.
    assert!(both.lines().all(|l| !l.starts_with("agent-stderr:")), "raw agent stderr on cohortd's stderr:\n{both}");
    assert!(has("agent-stderr: cannot reach the PDU of node 3"), "agent stderr not in the daemon's log:\n{both}");
    let ev: Vec<String> = [1, 2].iter().flat_map(|k| c.log(*k)).map(|e| e.text).collect();
    assert!(ev.iter().any(|t| t.contains("agent-stderr: cannot reach the PDU of node 3")), "{ev:?}");
}
