//! Real sockets: several `cohort-udp-probe` processes.
//!
//! * loopback (a private network namespace with only `lo`, multicast
//!   enabled on it, so nothing can leave the machine): multicast-with-loop
//!   and unicast mode; a view of all forms, every delivery log is identical
//!   (total order, payloads intact, fragmentation for the large ones), a
//!   SIGKILLed process is out of the survivors' view within ~0.5 s;
//! * forged, replayed, unknown-sender and garbage datagrams injected from a
//!   raw socket are rejected, counted, and change nothing;
//! * three namespaces on a bridge: iptables cuts one node off (split views),
//!   healing merges them again with `NodeUp`.
//!
//! Needs root, iproute2 and iptables; it FAILS (never skips) when it cannot
//! set up its namespaces. The tests run one at a time (a lock). Every namespace is named `cohu<pid>x...` and
//! deleted by a Drop guard, also on failure; namespaces of earlier runs
//! whose process is gone are deleted first.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

const PROBE: &str = env!("CARGO_BIN_EXE_cohort-udp-probe");

/// One test at a time: a dozen debug-build processes flooding each other on
/// two cores could starve one past the 300 ms failure timeout.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
const GROUP: &str = "239.192.71.1:5405";

fn mono_ms() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e} (this test needs root, iproute2 and iptables)"));
    assert!(
        out.status.success(),
        "{cmd} {} failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(args: &[&str]) {
    run("ip", args);
}

/// Delete namespaces of earlier runs whose test process is gone.
fn reap_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("cohu") else { continue };
        let Some(pid) = rest.split('x').next().and_then(|p| p.parse::<i32>().ok()) else { continue };
        // SAFETY: kill with signal 0 only checks existence.
        if pid != std::process::id() as i32 && unsafe { libc::kill(pid, 0) } != 0 {
            eprintln!("deleting stale namespace {name}");
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Namespaces, deleted on drop.
struct Netns {
    names: Vec<String>,
}

impl Netns {
    fn name(tag: &str, suffix: &str) -> String {
        format!("cohu{}x{tag}-{suffix}", std::process::id())
    }

    /// One namespace with only `lo`, multicast enabled on it.
    fn loopback(tag: &str) -> (Netns, String) {
        reap_stale();
        let ns = Netns::name(tag, "lo");
        ip(&["netns", "add", &ns]);
        let guard = Netns { names: vec![ns.clone()] };
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "multicast", "on"]);
        ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "lo"]);
        (guard, ns)
    }

    /// A bridge namespace and `n` node namespaces with `eth0` =
    /// 192.0.2.K/24 (documentation range, only inside these namespaces).
    fn bridge(tag: &str, n: u32) -> (Netns, Vec<String>) {
        reap_stale();
        let br = Netns::name(tag, "br");
        ip(&["netns", "add", &br]);
        let mut guard = Netns { names: vec![br.clone()] };
        ip(&["-n", &br, "link", "set", "lo", "up"]);
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        let mut nodes = Vec::new();
        for k in 1..=n {
            let ns = Netns::name(tag, &format!("n{k}"));
            ip(&["netns", "add", &ns]);
            guard.names.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            let v = format!("v{k}");
            ip(&["-n", &br, "link", "add", &v, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            ip(&["-n", &br, "link", "set", &v, "master", "br0"]);
            ip(&["-n", &br, "link", "set", &v, "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("192.0.2.{k}/24"), "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"]);
            nodes.push(ns);
        }
        (guard, nodes)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in self.names.iter().rev() {
            if let Ok(st) = Command::new("ip").args(["netns", "del", ns]).status() {
                if !st.success() {
                    eprintln!("could not delete namespace {ns}");
                }
            }
        }
    }
}

fn iptables_cut(ns: &str, on: bool) {
    let op = if on { "-I" } else { "-D" };
    run("ip", &["netns", "exec", ns, "iptables", "-w", op, "INPUT", "-i", "eth0", "-j", "DROP"]);
    run("ip", &["netns", "exec", ns, "iptables", "-w", op, "OUTPUT", "-o", "eth0", "-j", "DROP"]);
}

struct Probe {
    node: u32,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Probe {
    fn spawn(ns: &str, node: u32, args: &[String]) -> Probe {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, PROBE, "--node", &node.to_string(), "--control-stdin"])
            .args(args)
            .env("COHORT_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PROBE}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let l2 = lines.clone();
        let e2 = stderr.clone();
        let readers = vec![
            thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
                    l2.lock().unwrap().push(v);
                }
            }),
            thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut s = e2.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            }),
        ];
        Probe { node, stdin: child.stdin.take(), child, lines, stderr, readers }
    }

    fn snapshot(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    fn dump(&self) -> String {
        let lines: Vec<String> =
            self.snapshot().iter().filter(|v| v["ev"] != "deliver").map(|v| v.to_string()).collect();
        let err = self.stderr.lock().unwrap();
        let tail: Vec<&str> = err.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        format!("--- node {} events:\n{}\n--- stderr tail:\n{}", self.node, lines.join("\n"), tail.join("\n"))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Close stdin (the probe leaves, prints its counters and exits) and
    /// return everything it printed.
    fn finish(&mut self) -> Vec<Value> {
        self.stdin.take();
        let t = Instant::now();
        loop {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(5), "node {} does not exit:\n{}", self.node, self.dump());
            thread::sleep(Duration::from_millis(10));
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        self.snapshot()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Wait until `cond` holds for every probe in `which`, or panic with their
/// events.
fn wait_all(probes: &[Probe], which: &[usize], what: &str, secs: u64, cond: impl Fn(&[Value]) -> bool) {
    let t = Instant::now();
    loop {
        if which.iter().all(|&i| cond(&probes[i].snapshot())) {
            return;
        }
        if t.elapsed() > Duration::from_secs(secs) {
            let dumps: Vec<String> = which.iter().map(|&i| probes[i].dump()).collect();
            panic!("timed out after {secs}s waiting for {what}\n{}", dumps.join("\n"));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn members(v: &Value) -> Vec<u64> {
    v["members"].as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default()
}

/// Ring events: (ring, members, mono_ms).
fn rings(lines: &[Value]) -> Vec<(u64, Vec<u64>, f64)> {
    lines
        .iter()
        .filter(|v| v["ev"] == "ring")
        .map(|v| (v["ring"].as_u64().unwrap(), members(v), v["mono_ms"].as_f64().unwrap()))
        .collect()
}

fn last_ring_is(lines: &[Value], want: &[u64]) -> bool {
    rings(lines).last().is_some_and(|r| r.1 == want)
}

/// First ring with exactly `want` after time `after`.
fn ring_time(lines: &[Value], want: &[u64], after: f64) -> Option<f64> {
    rings(lines).into_iter().find(|r| r.1 == want && r.2 >= after).map(|r| r.2)
}

/// Deliveries: (from, tag, len, ok).
fn deliveries(lines: &[Value]) -> Vec<(u64, String, u64, bool)> {
    lines
        .iter()
        .filter(|v| v["ev"] == "deliver")
        .map(|v| {
            (
                v["from"].as_u64().unwrap(),
                v["tag"].as_str().unwrap().to_string(),
                v["len"].as_u64().unwrap(),
                v["ok"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn stats(lines: &[Value], node: u32) -> Value {
    lines.iter().find(|v| v["ev"] == "stats").cloned().unwrap_or_else(|| panic!("node {node} printed no stats"))
}

fn key_file(dir: &tempfile::TempDir) -> String {
    let mut key = [0u8; 32];
    let mut f = fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut f, &mut key).unwrap();
    let path = dir.path().join("cohort.key");
    fs::write(&path, format!("{}\n", cohort_udp::key_to_hex(&key))).unwrap();
    let mut perm = fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o600);
    fs::set_permissions(&path, perm).unwrap();
    path.to_string_lossy().into_owned()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

const SIZES: &str = "64,1400,4096,700,2049";

/// Several processes on loopback: a view of all, identical delivery logs,
/// then SIGKILL the last one and time the survivors' new view.
fn total_order_and_kill(tag: &str, n: u32, unicast: bool) {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(&dir);
    let (_ns_guard, ns) = Netns::loopback(tag);
    let nodes: Vec<String> = (1..=n).map(|k| k.to_string()).collect();
    let per_node = 120u64;
    let mut common = s(&["--nodes", &nodes.join(","), "--key", &key, "--duration", "40"]);
    common.extend(s(&["--send", &per_node.to_string(), "--sizes", SIZES, "--send-when-members", &n.to_string()]));
    if unicast {
        for k in 1..=n {
            common.extend(s(&["--peer", &format!("{k}=127.0.0.1:{}", 5500 + k)]));
        }
    } else {
        common.extend(s(&["--group", GROUP, "--iface", "127.0.0.1"]));
    }
    let mut probes: Vec<Probe> = (1..=n).map(|k| Probe::spawn(&ns, k, &common)).collect();
    let all: Vec<usize> = (0..n as usize).collect();
    let everyone: Vec<u64> = (1..=u64::from(n)).collect();
    let t0 = Instant::now();
    wait_all(&probes, &all, "a view of all", 10, |l| rings(l).iter().any(|r| r.1 == everyone));
    println!("[{tag}] view of {n} formed in {:?}", t0.elapsed());
    let total = per_node as usize * n as usize;
    wait_all(&probes, &all, "all deliveries", 30, |l| deliveries(l).len() >= total);
    println!("[{tag}] {total} messages delivered everywhere {:?} after start", t0.elapsed());
    let logs: Vec<_> = probes.iter().map(|p| deliveries(&p.snapshot())).collect();
    for (i, l) in logs.iter().enumerate() {
        assert_eq!(l.len(), total, "node {}: exactly once", i + 1);
        assert!(l.iter().all(|d| d.3), "node {}: a corrupted payload", i + 1);
        assert_eq!(l, &logs[0], "node {} delivered a different sequence than node 1", i + 1);
    }
    let big = logs[0].iter().filter(|d| d.2 > 1024).count();
    assert!(big > 0);

    // Kill the last node.
    let victim = n as usize - 1;
    let survivors: Vec<usize> = (0..victim).collect();
    let rest: Vec<u64> = (1..u64::from(n)).collect();
    let t_kill = mono_ms();
    probes[victim].kill();
    wait_all(&probes, &survivors, "the survivors' view", 5, |l| last_ring_is(l, &rest));
    let mut worst: f64 = 0.0;
    for &i in &survivors {
        let t = ring_time(&probes[i].snapshot(), &rest, t_kill).unwrap();
        worst = worst.max(t - t_kill);
    }
    println!("[{tag}] SIGKILL of node {n} -> survivors' view without it after {worst:.0} ms (worst of {})", n - 1);
    assert!(worst < 1000.0, "failure detection took {worst:.0} ms");
    for i in survivors {
        let lines = probes[i].finish();
        let left: Vec<&Value> = lines.iter().filter(|v| v["ev"] == "confchg" && v["left"][0][0] == n).collect();
        assert_eq!(left.len(), 1, "node {}: {:?}", i + 1, left);
        assert_eq!(left[0]["left"][0][1], "NodeDown");
        let st = stats(&lines, i as u32 + 1);
        for k in ["forged", "replayed", "malformed", "frag_discarded", "frag_own_lost", "addr_mismatch"] {
            assert_eq!(st[k], 0, "node {}: {k} in {st}", i + 1);
        }
        println!("[{tag}] node {} stats: {st}", i + 1);
    }
}

#[test]
fn multicast_loopback_total_order_and_failure_detection() {
    total_order_and_kill("a", 4, false);
}

#[test]
fn unicast_loopback_total_order_and_failure_detection() {
    total_order_and_kill("b", 3, true);
}

/// Run `f` in a thread that entered network namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    thread::spawn(move || {
        let file = fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on a valid namespace fd affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("injector thread")
}

#[test]
fn forged_and_replayed_datagrams_are_rejected() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(&dir);
    let (_ns_guard, ns) = Netns::loopback("c");
    let mut common = s(&["--nodes", "1,2,3", "--key", &key, "--duration", "30", "--group", GROUP]);
    common.extend(s(&["--iface", "127.0.0.1", "--send", "40", "--sizes", "100,3000", "--send-when-members", "3"]));
    common.extend(s(&["--gap-us", "10000"]));
    let mut probes: Vec<Probe> = (1..=3).map(|k| Probe::spawn(&ns, k, &common)).collect();
    wait_all(&probes, &[0, 1, 2], "a view of all", 10, |l| last_ring_is(l, &[1, 2, 3]));
    let rings_before: Vec<usize> = probes.iter().map(|p| rings(&p.snapshot()).len()).collect();

    // A raw socket in the namespace: capture the group's traffic while the
    // probes send, then replay node 1's datagrams and inject forgeries.
    const FORGED: u64 = 30;
    const GARBAGE: u64 = 10;
    const UNKNOWN: u64 = 5;
    let replayed = in_netns(&ns, move || {
        let group: SocketAddrV4 = GROUP.parse().unwrap();
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        sock.set_reuse_address(true).unwrap();
        sock.bind(&SocketAddr::V4(group).into()).unwrap();
        sock.join_multicast_v4(group.ip(), &Ipv4Addr::LOCALHOST).unwrap();
        sock.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
        sock.set_multicast_loop_v4(true).unwrap();
        let sock = std::net::UdpSocket::from(sock);
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut captured: Vec<Vec<u8>> = Vec::new();
        let mut buf = [0u8; 2048];
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(400) || captured.len() < 20 {
            assert!(t.elapsed() < Duration::from_secs(5), "captured only {} datagrams of node 1", captured.len());
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                // Header: version 0xC2, sender u32 LE.
                if n > 25 && buf[0] == 0xC2 && buf[1..5] == 1u32.to_le_bytes() {
                    captured.push(buf[..n].to_vec());
                }
            }
        }
        captured.truncate(40);
        let to = SocketAddr::V4(group);
        for d in &captured {
            sock.send_to(d, to).unwrap();
        }
        for i in 0..FORGED {
            // A fresh counter (header bytes 13..21: version, sender, incarnation
            // come first) in the authenticated header: the tag fails.
            let mut d = captured[i as usize % captured.len()].clone();
            d[13..21].copy_from_slice(&((1u64 << 40) + i).to_le_bytes());
            sock.send_to(&d, to).unwrap();
        }
        for i in 0..GARBAGE {
            sock.send_to(&[0xC2, i as u8, 0, 0, 0, 1, 2, 3], to).unwrap();
        }
        for i in 0..UNKNOWN {
            let mut d = captured[0].clone();
            d[1..5].copy_from_slice(&77u32.to_le_bytes());
            d[13..21].copy_from_slice(&((1u64 << 41) + i).to_le_bytes());
            sock.send_to(&d, to).unwrap();
        }
        captured.len() as u64
    });
    println!("injected {replayed} replays, {FORGED} forged, {GARBAGE} garbage, {UNKNOWN} unknown-sender datagrams");
    wait_all(&probes, &[0, 1, 2], "all deliveries", 20, |l| deliveries(l).len() >= 120);
    thread::sleep(Duration::from_millis(300));
    let lines: Vec<Vec<Value>> = probes.iter_mut().map(|p| p.finish()).collect();
    let logs: Vec<_> = lines.iter().map(|l| deliveries(l)).collect();
    for (i, l) in logs.iter().enumerate() {
        assert_eq!(l.len(), 120, "node {}: nothing but the 120 real messages", i + 1);
        assert!(l.iter().all(|d| d.3));
        assert_eq!(l, &logs[0]);
        // No view change from the injected datagrams (only the final leaves).
        let r = rings(&lines[i]);
        assert_eq!(r[rings_before[i] - 1].1, [1, 2, 3]);
        assert!(r.iter().skip(rings_before[i]).all(|x| x.1.len() < 3), "node {}: unexpected view {r:?}", i + 1);
    }
    for node in [2u32, 3] {
        let st = stats(&lines[node as usize - 1], node);
        println!("node {node} stats: {st}");
        assert_eq!(st["forged"], FORGED, "node {node}");
        assert_eq!(st["replayed"], replayed, "node {node}");
        assert_eq!(st["malformed"], GARBAGE, "node {node}");
        assert_eq!(st["unknown_sender"], UNKNOWN, "node {node}");
        assert_eq!(st["frag_discarded"], 0);
    }
    // Node 1 sees datagrams claiming to be its own: loopback.
    let st1 = stats(&lines[0], 1);
    println!("node 1 stats: {st1}");
    assert!(st1["loopback"].as_u64().unwrap() >= replayed + FORGED);
    assert_eq!(st1["unknown_sender"], UNKNOWN);
}

#[test]
fn bridge_partition_splits_and_heals_with_node_up() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(&dir);
    let (_ns_guard, nss) = Netns::bridge("d", 3);
    let mut probes: Vec<Probe> = (1..=3u32)
        .map(|k| {
            let mut a = s(&["--nodes", "1,2,3", "--key", &key, "--duration", "40", "--group", GROUP]);
            a.extend(s(&["--iface", &format!("192.0.2.{k}")]));
            Probe::spawn(&nss[k as usize - 1], k, &a)
        })
        .collect();
    let t0 = Instant::now();
    wait_all(&probes, &[0, 1, 2], "a view of all", 10, |l| last_ring_is(l, &[1, 2, 3]));
    println!("view of 3 over the bridge formed in {:?}", t0.elapsed());

    // Cut node 3 off.
    let t_cut = mono_ms();
    iptables_cut(&nss[2], true);
    wait_all(&probes, &[0, 1], "view [1,2]", 5, |l| last_ring_is(l, &[1, 2]));
    wait_all(&probes, &[2], "view [3]", 5, |l| last_ring_is(l, &[3]));
    let det: Vec<f64> = [(0usize, &[1u64, 2][..]), (1, &[1, 2]), (2, &[3])]
        .iter()
        .map(|(i, w)| ring_time(&probes[*i].snapshot(), w, t_cut).unwrap() - t_cut)
        .collect();
    println!(
        "partition: views [1,2] at nodes 1, 2 after {:.0} / {:.0} ms, [3] at node 3 after {:.0} ms",
        det[0], det[1], det[2]
    );
    for (i, d) in det.iter().enumerate() {
        assert!(*d < 1500.0, "node {}: split view after {d:.0} ms", i + 1);
    }
    let lines = probes[0].snapshot();
    assert!(lines.iter().any(|v| v["ev"] == "confchg" && v["left"] == serde_json::json!([[3, "NodeDown"]])));
    // The minority is not quorate, the majority is.
    let q3 = probes[2].snapshot().into_iter().rev().find(|v| v["ev"] == "quorum").unwrap();
    assert_eq!(q3["quorate"], false);

    // Heal.
    let t_heal = mono_ms();
    iptables_cut(&nss[2], false);
    wait_all(&probes, &[0, 1, 2], "the merged view", 5, |l| last_ring_is(l, &[1, 2, 3]));
    let merge: Vec<f64> =
        (0..3).map(|i| ring_time(&probes[i].snapshot(), &[1, 2, 3], t_heal).unwrap() - t_heal).collect();
    println!("heal: merged view after {:.0} / {:.0} / {:.0} ms", merge[0], merge[1], merge[2]);
    let rid: Vec<u64> = probes.iter().map(|p| rings(&p.snapshot()).last().unwrap().0).collect();
    assert!(rid.iter().all(|&r| r == rid[0]), "one merged view: {rid:?}");
    for (i, p) in probes.iter_mut().enumerate() {
        let lines = p.finish();
        let after: Vec<&Value> =
            lines.iter().filter(|v| v["ev"] == "confchg" && v["mono_ms"].as_f64().unwrap() >= t_heal).collect();
        let joined: Vec<Value> = after.iter().flat_map(|v| v["joined"].as_array().unwrap().clone()).collect();
        let want =
            if i == 2 { serde_json::json!([[1, "NodeUp"], [2, "NodeUp"]]) } else { serde_json::json!([[3, "NodeUp"]]) };
        assert_eq!(Value::Array(joined), want, "node {}", i + 1);
    }
}
