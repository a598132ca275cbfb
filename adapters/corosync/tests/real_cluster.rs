//! A real 3-node corosync cluster (network namespaces on this machine,
//! `tests/corosync-lab/cluster.sh`) driven through `cohort-cpg-probe`.
//!
//! Needs root, corosync 3 and iproute2/iptables. It FAILS (never skips) when
//! the cluster cannot be started. Everything it starts is torn down by a
//! Drop guard, also on failure. All phases live in one test fn, and a file
//! lock (`$TMPDIR/cohort-corosync-lab.lock`, flock) keeps it from running at
//! the same time as any other test taking that lock, in any process.
//!
//! Phases: cluster up; one probe per node (agreed-order multicast from all
//! three); cut node 3 (NODEDOWN + new ring); heal (NODEUP + larger ring);
//! SIGKILL node 3's corosync (its client gets a disconnect error, the others
//! NODEDOWN); connect without corosync (clear error); a second process of
//! node 2 in the group is not node 2 (no change when it joins, sends or
//! dies; node 2 leaves when its first process dies).

#![allow(clippy::needless_range_loop)] // nodes are indexed 0..3 in several parallel arrays

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/corosync-lab/cluster.sh");
const PROBE: &str = env!("CARGO_BIN_EXE_cohort-cpg-probe");
const DIR_PREFIX: &str = "cohort-corosync-lab-";
const MSGS_PER_NODE: usize = 300;

fn mono_ms() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

/// Cross-process lock: only one corosync lab test at a time.
struct LabLock(#[allow(dead_code)] File);

impl LabLock {
    fn take() -> LabLock {
        let path = std::env::temp_dir().join("cohort-corosync-lab.lock");
        let f = File::create(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        let t = Instant::now();
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            panic!("flock {}: {}", path.display(), std::io::Error::last_os_error());
        }
        if t.elapsed() > Duration::from_millis(100) {
            eprintln!("waited {:?} for the corosync lab lock", t.elapsed());
        }
        LabLock(f) // closing the file releases the lock
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

/// Tear down clusters left by earlier runs that were killed before their
/// Drop guard ran (their owner process is gone).
fn reap_stale_labs() {
    let Ok(rd) = fs::read_dir(std::env::temp_dir()) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = e.path();
        let owner: Option<i32> = fs::read_to_string(dir.join("owner.pid")).ok().and_then(|s| s.trim().parse().ok());
        let alive = owner.is_some_and(|p| unsafe { libc::kill(p, 0) } == 0);
        if !alive && dir.join("cluster.env").exists() {
            eprintln!("tearing down stale lab {}", dir.display());
            let _ = run_script(&["down", &dir.to_string_lossy()]);
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

struct Probe {
    node: u32,
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    reader: Option<JoinHandle<()>>,
}

impl Probe {
    fn snapshot(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }
}

/// The Drop guard: kills the probes, then `cluster.sh down`.
struct Lab {
    dir: tempfile::TempDir,
    probes: Vec<Probe>,
}

impl Lab {
    fn up(n: u32) -> Lab {
        let dir = tempfile::Builder::new().prefix(DIR_PREFIX).tempdir().expect("tempdir");
        fs::write(dir.path().join("owner.pid"), std::process::id().to_string()).unwrap();
        let lab = Lab { dir, probes: Vec::new() };
        let (st, out, err) = run_script(&["up", &n.to_string(), &lab.dir_str()]);
        assert!(st.success(), "could not start a {n}-node corosync cluster ({st}):\n{out}\n{err}");
        lab
    }

    fn dir_str(&self) -> String {
        self.dir.path().to_string_lossy().into_owned()
    }

    fn sh(&self, args: &[&str]) {
        let d = self.dir_str();
        let mut a = vec!["-d", d.as_str()];
        a.extend_from_slice(args);
        let (st, out, err) = run_script(&a);
        assert!(st.success(), "cluster.sh {args:?} failed ({st}):\n{out}\n{err}");
    }

    /// Start the probe in node `k`'s namespace; returns its index.
    fn probe(&mut self, k: u32, args: &[&str]) -> usize {
        let d = self.dir_str();
        let mut child = Command::new("bash")
            .arg(SCRIPT)
            .args(["-d", &d, "exec", &k.to_string(), PROBE])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn probe");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => l2.lock().unwrap().push(v),
                    Err(e) => eprintln!("node {k}: unparsable probe line {line:?}: {e}"),
                }
            }
        });
        self.probes.push(Probe { node: k, child, lines, reader: Some(reader) });
        self.probes.len() - 1
    }

    /// Wait until `pred` holds on probe `i`'s lines; panics with the lines on timeout.
    fn wait_for(&self, i: usize, what: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let t = Instant::now();
        loop {
            let lines = self.probes[i].snapshot();
            if pred(&lines) {
                return lines;
            }
            if t.elapsed() > timeout {
                let tail: Vec<String> = lines.iter().filter(|v| v["ev"] != "deliver").map(|v| v.to_string()).collect();
                panic!(
                    "node {}: timed out after {timeout:?} waiting for {what}; non-deliver lines:\n{}",
                    self.probes[i].node,
                    tail.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_exit(&mut self, i: usize, timeout: Duration) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(st) = self.probes[i].child.try_wait().unwrap() {
                if let Some(r) = self.probes[i].reader.take() {
                    let _ = r.join();
                }
                return st;
            }
            assert!(t.elapsed() < timeout, "probe on node {} did not exit within {timeout:?}", self.probes[i].node);
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.probes {
            let _ = p.child.kill();
            let _ = p.child.wait();
            if let Some(r) = p.reader.take() {
                let _ = r.join();
            }
        }
        let (st, out, err) = run_script(&["down", &self.dir_str()]);
        if !st.success() {
            eprintln!("cluster.sh down {} failed ({st}):\n{out}\n{err}", self.dir_str());
        }
    }
}

fn ev<'a>(lines: &'a [Value], kind: &'a str) -> impl Iterator<Item = (usize, &'a Value)> + 'a {
    lines.iter().enumerate().filter(move |(_, v)| v["ev"] == kind)
}

fn deliveries(lines: &[Value]) -> Vec<(u64, String)> {
    ev(lines, "deliver")
        .map(|(_, v)| (v["from"].as_u64().unwrap(), v["payload"].as_str().unwrap().to_owned()))
        .collect()
}

fn last_ring(lines: &[Value]) -> u64 {
    ev(lines, "ring").last().map(|(_, v)| v["ring"].as_u64().unwrap()).expect("no ring event")
}

/// Index of the first confchg after `from` satisfying `pred`, and of the
/// first ring event after it with a seq larger than `min_ring`.
fn change_then_ring(
    lines: &[Value],
    from: usize,
    min_ring: u64,
    pred: impl Fn(&Value) -> bool,
) -> Option<(usize, usize)> {
    let c = lines.iter().enumerate().skip(from).find(|(_, v)| v["ev"] == "confchg" && pred(v))?.0;
    let r = lines
        .iter()
        .enumerate()
        .skip(c + 1)
        .find(|(_, v)| v["ev"] == "ring" && v["ring"].as_u64().unwrap() > min_ring)?
        .0;
    Some((c, r))
}

#[test]
fn three_node_cluster_order_partition_merge_and_crash() {
    let t_all = Instant::now();
    assert_eq!(unsafe { libc::geteuid() }, 0, "the corosync lab test must run as root (it creates network namespaces)");
    let _lock = LabLock::take();
    reap_stale_labs();
    let note = |what: &str, ms: f64| println!("timing: {what}: {ms:.1} ms");

    // ---- cluster up
    let t = Instant::now();
    let mut lab = Lab::up(3);
    note("cluster up (3 nodes, full membership)", t.elapsed().as_secs_f64() * 1e3);

    // ---- one probe per node; each multicasts once it sees all three
    let t = Instant::now();
    let n = MSGS_PER_NODE.to_string();
    for k in 1..=3 {
        lab.probe(
            k,
            &["--duration", "120", "--send", &n, "--send-when-members", "3", "--size", "32", "--gap-us", "100"],
        );
    }
    let total = 3 * MSGS_PER_NODE;
    let mut views = Vec::new();
    for i in 0..3 {
        views
            .push(lab.wait_for(i, "all multicast messages", Duration::from_secs(30), |l| deliveries(l).len() >= total));
    }
    note("probes connect + 3x300 agreed messages delivered everywhere", t.elapsed().as_secs_f64() * 1e3);

    for (i, lines) in views.iter().enumerate() {
        let node = i as u64 + 1;
        assert_eq!(lines[0]["ev"], "connected", "node {node}: first line {}", lines[0]);
        assert_eq!(lines[0]["node"], node);
        let first_ring = ev(lines, "ring").next().map(|(i, _)| i).expect("no ring event");
        let first_conf = ev(lines, "confchg").next().map(|(i, _)| i).expect("no confchg");
        assert!(
            first_ring < first_conf,
            "node {node}: first Ring at line {first_ring} after first Confchg at {first_conf}"
        );
        assert_eq!(first_ring, 1, "node {node}: the initial Ring must be the first event");
        // our own join is the first confchg
        let c = &lines[first_conf];
        assert_eq!(c["joined"], json!([[node, "Join"]]), "node {node}: first confchg {c}");
    }
    let d1 = deliveries(&views[0]);
    for (i, v) in views.iter().enumerate().skip(1) {
        let d = deliveries(v);
        assert_eq!(d.len(), total, "node {}", i + 1);
        if let Some(pos) = d.iter().zip(&d1).position(|(a, b)| a != b) {
            panic!("delivery order differs between node 1 and node {} at #{pos}: {:?} vs {:?}", i + 1, d1[pos], d[pos]);
        }
    }
    // each sender's messages arrive complete and in FIFO order
    for from in 1..=3u64 {
        let mine: Vec<&String> = d1.iter().filter(|(f, _)| *f == from).map(|(_, p)| p).collect();
        assert_eq!(mine.len(), MSGS_PER_NODE);
        for (j, p) in mine.iter().enumerate() {
            assert!(p.starts_with(&format!("n{from}-{j:06}")), "sender {from} message {j} is {p}");
        }
    }
    let interleaved = d1.windows(2).filter(|w| w[0].0 != w[1].0).count();
    println!("delivery order identical on 3 nodes ({total} messages, {interleaved} sender switches)");

    // ---- cut node 3 off
    let before: Vec<usize> = (0..3).map(|i| lab.probes[i].snapshot().len()).collect();
    let ring0 = last_ring(&lab.probes[0].snapshot());
    let t_cut = mono_ms();
    lab.sh(&["cut", "3"]);
    let mut cut_ring = 0;
    for i in 0..2 {
        let lines = lab.wait_for(i, "confchg left=[3 NodeDown] then a larger Ring", Duration::from_secs(20), |l| {
            change_then_ring(l, before[i], ring0, |v| v["left"] == json!([[3, "NodeDown"]])).is_some()
        });
        let (c, r) = change_then_ring(&lines, before[i], ring0, |v| v["left"] == json!([[3, "NodeDown"]])).unwrap();
        // nothing ring-level may sneak in between
        assert_eq!(lines[c]["members"], json!([1, 2]), "node {}: {}", i + 1, lines[c]);
        assert_eq!(lines[c]["joined"], json!([]));
        let first_conf_after = ev(&lines[before[i]..], "confchg").next().map(|(j, _)| j + before[i]);
        assert_eq!(first_conf_after, Some(c), "node {}: an earlier confchg came first", i + 1);
        let ring = lines[r]["ring"].as_u64().unwrap();
        assert!(ring > ring0);
        if i == 0 {
            cut_ring = ring;
        } else {
            assert_eq!(ring, cut_ring, "nodes 1 and 2 disagree on the partition ring");
        }
        note(&format!("cut -> confchg NodeDown at node {}", i + 1), lines[c]["mono_ms"].as_f64().unwrap() - t_cut);
    }
    let lines3 = lab.wait_for(2, "node 3 alone", Duration::from_secs(20), |l| {
        change_then_ring(l, before[2], ring0, |v| v["left"] == json!([[1, "NodeDown"], [2, "NodeDown"]])).is_some()
    });
    let (c3, r3) =
        change_then_ring(&lines3, before[2], ring0, |v| v["left"] == json!([[1, "NodeDown"], [2, "NodeDown"]]))
            .unwrap();
    assert_eq!(lines3[c3]["members"], json!([3]));
    let ring3 = lines3[r3]["ring"].as_u64().unwrap();
    println!("partition rings: nodes 1-2 seq {cut_ring}, node 3 seq {ring3} (before: {ring0})");

    // ---- heal
    let before: Vec<usize> = (0..3).map(|i| lab.probes[i].snapshot().len()).collect();
    let t_heal = mono_ms();
    lab.sh(&["heal", "3"]);
    let mut merged = 0;
    for i in 0..2 {
        let lines = lab.wait_for(i, "confchg joined=[3 NodeUp] then a larger Ring", Duration::from_secs(20), |l| {
            change_then_ring(l, before[i], cut_ring, |v| v["joined"] == json!([[3, "NodeUp"]])).is_some()
        });
        let (c, r) = change_then_ring(&lines, before[i], cut_ring, |v| v["joined"] == json!([[3, "NodeUp"]])).unwrap();
        assert_eq!(lines[c]["members"], json!([1, 2, 3]), "node {}: {}", i + 1, lines[c]);
        assert_eq!(lines[c]["left"], json!([]));
        let ring = lines[r]["ring"].as_u64().unwrap();
        assert!(ring > cut_ring && ring > ring3, "merged ring {ring} not above {cut_ring}/{ring3}");
        if i == 0 {
            merged = ring;
        } else {
            assert_eq!(ring, merged);
        }
        note(&format!("heal -> confchg NodeUp at node {}", i + 1), lines[c]["mono_ms"].as_f64().unwrap() - t_heal);
    }
    let lines3 = lab.wait_for(2, "node 3 merged back", Duration::from_secs(20), |l| {
        change_then_ring(l, before[2], ring3, |v| v["joined"] == json!([[1, "NodeUp"], [2, "NodeUp"]])).is_some()
    });
    let (_, r3) =
        change_then_ring(&lines3, before[2], ring3, |v| v["joined"] == json!([[1, "NodeUp"], [2, "NodeUp"]])).unwrap();
    assert_eq!(lines3[r3]["ring"].as_u64().unwrap(), merged, "node 3 merged into another ring");
    println!("merged ring seq {merged}");

    // ---- corosync of node 3 dies under its client
    let before: Vec<usize> = (0..3).map(|i| lab.probes[i].snapshot().len()).collect();
    let t_kill = mono_ms();
    lab.sh(&["kill-corosync", "3"]);
    let lines3 = lab
        .wait_for(2, "a disconnect error", Duration::from_secs(5), |l| ev(&l[before[2]..], "error").next().is_some());
    let (_, e) = ev(&lines3[before[2]..], "error").next().unwrap();
    assert_eq!(e["kind"], "disconnected", "{e}");
    assert!(e["msg"].as_str().unwrap().starts_with("lost the connection to corosync"), "{e}");
    note("corosync SIGKILL -> client dispatch error", e["mono_ms"].as_f64().unwrap() - t_kill);
    let st = lab.wait_exit(2, Duration::from_secs(5));
    assert_eq!(st.code(), Some(2), "probe 3 exit status {st}");
    for i in 0..2 {
        let lines = lab.wait_for(i, "NodeDown of the crashed node", Duration::from_secs(20), |l| {
            change_then_ring(l, before[i], merged, |v| v["left"] == json!([[3, "NodeDown"]])).is_some()
        });
        let (c, _) = change_then_ring(&lines, before[i], merged, |v| v["left"] == json!([[3, "NodeDown"]])).unwrap();
        note(
            &format!("corosync SIGKILL -> NodeDown at node {}", i + 1),
            lines[c]["mono_ms"].as_f64().unwrap() - t_kill,
        );
    }

    // ---- connecting without a corosync gives the clear error
    let i = lab.probe(3, &["--duration", "5"]);
    let st = lab.wait_exit(i, Duration::from_secs(10));
    assert_eq!(st.code(), Some(3), "probe without corosync: {st}");
    let lines = lab.probes[i].snapshot();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["stage"], "connect");
    assert_eq!(lines[0]["msg"], "corosync is not running (cpg initialize: ErrLibrary)");

    // ---- a second process of node 2 in the group (issue 15 item 4): it is
    // not node 2's daemon. Its join, its messages and its death change
    // nothing at node 1; when node 2's first process dies while the second
    // stays, node 1 sees node 2 leave (ProcDown).
    let quiet = |lines: &[Value], from: usize| -> Vec<Value> {
        lines[from..]
            .iter()
            .filter(|v| v["ev"] == "confchg" || (v["ev"] == "deliver" && v["from"] == 2))
            .cloned()
            .collect()
    };
    let before1 = lab.probes[0].snapshot().len();
    let extra = lab.probe(2, &["--duration", "60", "--send", "3", "--send-when-members", "1", "--size", "16"]);
    lab.wait_for(extra, "the extra probe's messages sent", Duration::from_secs(10), |l| ev(l, "sent").next().is_some());
    let extra_pid = u64::from(lab.probes[extra].child.id());
    lab.wait_for(extra, "its own messages delivered to it", Duration::from_secs(10), |l| {
        ev(l, "deliver").filter(|(_, v)| v["pid"].as_u64() == Some(extra_pid)).count() >= 3
    });
    thread::sleep(Duration::from_millis(500));
    let seen = quiet(&lab.probes[0].snapshot(), before1);
    assert!(seen.is_empty(), "node 1 took a second process of node 2 for node 2: {seen:?}");
    // node 2's first process dies; the extra stays
    let before1 = lab.probes[0].snapshot().len();
    let _ = lab.probes[1].child.kill();
    let lines =
        lab.wait_for(0, "node 2 leaves (ProcDown) though another process of it stays", Duration::from_secs(10), |l| {
            ev(&l[before1..], "confchg").next().is_some()
        });
    let (_, c) = ev(&lines[before1..], "confchg").next().unwrap();
    assert_eq!(c["left"], json!([[2, "ProcDown"]]), "{c}");
    assert_eq!(c["members"], json!([1]), "{c}");
    // the extra leaving afterwards is no change at all
    let before1 = lab.probes[0].snapshot().len();
    let _ = lab.probes[extra].child.kill();
    thread::sleep(Duration::from_millis(500));
    let seen = quiet(&lab.probes[0].snapshot(), before1);
    assert!(seen.is_empty(), "the extra process's death was reported: {seen:?}");

    // ---- teardown (also what Drop does on failure), timed
    let dir: PathBuf = fs::canonicalize(lab.dir.path()).unwrap();
    let prefix = {
        // the harness names namespaces ch-<6 hex of sha256(realpath DIR)>
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s '{}' | sha256sum | cut -c1-6", dir.display()))
            .output()
            .unwrap();
        format!("ch-{}-", String::from_utf8_lossy(&o.stdout).trim())
    };
    let t = Instant::now();
    drop(lab);
    note("teardown", t.elapsed().as_secs_f64() * 1e3);
    assert!(!Path::new(&dir).join("cluster.env").exists());
    let out =
        String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).into_owned();
    assert!(!out.contains(&prefix), "namespaces {prefix}* left behind:\n{out}");
    note("whole test", t_all.elapsed().as_secs_f64() * 1e3);
}
