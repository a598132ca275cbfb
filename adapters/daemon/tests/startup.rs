//! `cohortd` start-up failures (no corosync needed): every one is a single
//! line naming the cause, with the documented exit status; and a UDP
//! daemon's life alone on loopback.
//!
//! The tests whose configuration uses the default transport (corosync) run
//! in a build with the `corosync` feature (the test command, `tests/run`);
//! without it, `corosync_needs_the_feature` checks the refusal instead.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const COHORTD: &str = env!("CARGO_BIN_EXE_cohortd");

fn agent(dir: &Path) -> PathBuf {
    let p = dir.join("fence.sh");
    fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn config(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("cohort.toml");
    let text = format!(
        "state_dir = \"{}\"\n{extra}\n[fence]\nagent = \"{}\"\n",
        dir.join("state").display(),
        agent(dir).display()
    );
    fs::write(&p, text).unwrap();
    p
}

fn run(cfg: &Path) -> Output {
    // A fresh network namespace (root only) guarantees that no corosync is reachable.
    let mut c = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("unshare");
        c.args(["-n", COHORTD]);
        c
    } else {
        Command::new(COHORTD)
    };
    c.arg("--config").arg(cfg).env("COHORT_LOG", "off").output().unwrap()
}

fn last_line(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("").to_owned()
}

#[test]
fn bad_config_names_the_key() {
    let d = tempfile::tempdir().unwrap();
    let o = run(&config(d.path(), "[[filesystem]]\nname = \"fs1\"\njournals = 300\nbackend = \"memory\"\n"));
    assert_eq!(o.status.code(), Some(1));
    let l = last_line(&o);
    assert!(l.starts_with("cohortd: configuration error: "), "{l}");
    assert!(l.ends_with("filesystem[0].journals: must be between 1 and 256 (got 300) (line 4, column 12)"), "{l}");
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1);
    let o = Command::new(COHORTD).args(["--config", "/nonexistent/cohort.toml"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(last_line(&o).contains("/nonexistent/cohort.toml: cannot read"), "{}", last_line(&o));
}

/// Started by systemd with `Type=notify` and `WatchdogSec=`: READY=1 once
/// the daemon group synced, STATUS= in words, WATCHDOG=1 pings at half the
/// interval, STOPPING=1 on SIGTERM; the variables are not passed on.
#[test]
fn systemd_notify_ready_status_watchdog_stopping() {
    use std::os::unix::net::UnixDatagram;
    let d = tempfile::tempdir().unwrap();
    let ports = [free_udp_port(), free_udp_port()];
    let cfg = udp_config(d.path(), 1, &ports);
    let sock_path = d.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
    let mut child = Reaped(Some(
        Command::new(COHORTD)
            .arg("--config")
            .arg(&cfg)
            .env("COHORT_LOG", "off")
            .env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "400000")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let mut got: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let t = std::time::Instant::now();
    let pings = |g: &[String]| g.iter().filter(|m| *m == "WATCHDOG=1").count();
    while t.elapsed() < std::time::Duration::from_secs(20)
        && !(got.iter().any(|m| m.starts_with("READY=1")) && pings(&got) >= 3)
    {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let ready = got.iter().find(|m| m.starts_with("READY=1")).unwrap_or_else(|| panic!("no READY=1: {got:?}"));
    assert!(ready.contains("STATUS=1 members at generation "), "{ready:?}");
    let first_status = got.iter().position(|m| m.starts_with("STATUS=")).unwrap();
    let ready_at = got.iter().position(|m| m.starts_with("READY=1")).unwrap();
    assert!(first_status < ready_at, "a status before READY: {got:?}");
    assert!(got[first_status].contains("daemon group: joining"), "{got:?}");
    assert!(pings(&got) >= 3, "{got:?}");
    // Pinged at about half of 400 ms, not in a busy loop.
    assert!(pings(&got) <= 2 + (t.elapsed().as_millis() / 150) as usize, "{got:?}");
    unsafe { libc::kill(child.child().id() as i32, libc::SIGTERM) };
    let st = child.child().wait().unwrap();
    assert_eq!(st.code(), Some(0));
    let mut rest = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(rest.iter().any(|m| m.starts_with("STOPPING=1")), "{rest:?}");
}

#[cfg(feature = "corosync")] // the config uses the default transport, corosync
#[test]
fn check_mode_validates_only() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "");
    let o = Command::new(COHORTD).arg("--check").arg("--config").arg(&cfg).output().unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(!d.path().join("state").exists(), "--check must not touch the state directory");
}

/// Without the `corosync` feature, a configuration with the corosync
/// transport (given or by default) fails `--check` and the start with what
/// to do, before anything is touched.
#[cfg(not(feature = "corosync"))]
#[test]
fn corosync_needs_the_feature() {
    let d = tempfile::tempdir().unwrap();
    for extra in ["", "transport = \"corosync\"\n"] {
        let cfg = config(d.path(), extra);
        let check = Command::new(COHORTD).arg("--check").arg("--config").arg(&cfg).output().unwrap();
        for o in [check, run(&cfg)] {
            assert_eq!(o.status.code(), Some(1), "{o:?}");
            let l = last_line(&o);
            assert_eq!(
                l,
                format!(
                    "cohortd: configuration error: {}: transport = \"corosync\": this cohortd was built without \
                     corosync support: rebuild with --features corosync, or use transport = \"udp\"",
                    cfg.display()
                )
            );
            assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1, "{o:?}");
        }
        assert!(!d.path().join("state").exists(), "a refused start must not touch the state directory");
    }
}

/// A spawned cohortd, killed (and reaped) if the test fails before it
/// stops it: no daemon outlives its test.
struct Reaped(Option<std::process::Child>);

impl Reaped {
    fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("still held")
    }

    fn take(mut self) -> std::process::Child {
        self.0.take().expect("still held")
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A free UDP port on 127.0.0.1 (bound, read, released).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn udp_config(dir: &Path, node: u32, ports: &[u16]) -> PathBuf {
    let key = dir.join("cohort.key");
    fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let mut peers = String::new();
    for (i, p) in ports.iter().enumerate() {
        peers.push_str(&format!("{} = \"127.0.0.1:{p}\"\n", i + 1));
    }
    config(
        dir,
        &format!(
            "node_id = {node}\ntransport = \"udp\"\n[udp]\nmode = \"unicast\"\nkey_file = \"{}\"\n[udp.peers]\n{peers}",
            key.display()
        ),
    )
}

#[test]
fn udp_config_errors_are_one_line() {
    let d = tempfile::tempdir().unwrap();
    let o = run(&config(d.path(), "transport = \"udp\"\nnodes = [1, 2]\n[udp]\nkey_file = \"/nonexistent/key\"\n"));
    assert_eq!(o.status.code(), Some(1));
    let l = last_line(&o);
    assert!(l.starts_with("cohortd: configuration error: "), "{l}");
    assert!(
        l.ends_with("node_id: missing: required with transport = \"udp\" (there is no corosync to ask for it)"),
        "{l}"
    );
    let o = run(&config(
        d.path(),
        "node_id = 1\ntransport = \"udp\"\nnodes = [1, 2]\n[udp]\nkey_file = \"/nonexistent/key\"\n",
    ));
    assert_eq!(o.status.code(), Some(1));
    assert!(last_line(&o).contains("udp.key_file: /nonexistent/key cannot be read"), "{}", last_line(&o));
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1);
}

/// A UDP daemon alone (its peer never comes): runs, answers `status`
/// (transport udp, not quorate), refuses a second daemon on its port, and
/// stops on SIGTERM with exit 0. No root, no corosync.
#[test]
fn udp_daemon_runs_alone_and_stops_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let ports = [free_udp_port(), free_udp_port()];
    let cfg = udp_config(d.path(), 1, &ports);
    let mut child = Reaped(Some(
        Command::new(COHORTD)
            .arg("--config")
            .arg(&cfg)
            .env("COHORT_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let sock = d.path().join("state/cohortd.sock");
    let t = std::time::Instant::now();
    while !sock.exists() {
        if let Some(st) = child.child().try_wait().unwrap() {
            panic!("cohortd exited at start: {st}");
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(20), "no control socket");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = || {
        let o = Command::new(env!("CARGO_BIN_EXE_cohortctl"))
            .arg("--socket")
            .arg(&sock)
            .args(["status", "--json"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        serde_json::from_slice::<cohortd::api::StatusJson>(&o.stdout).unwrap()
    };
    let mut s = status();
    while s.quorate.is_none() && t.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        s = status();
    }
    assert_eq!((s.node, s.incarnation, s.transport.as_str()), (1, 1, "udp"));
    assert_eq!(s.quorate, Some(false), "1 of 2 configured nodes is not a majority");
    // a second daemon (another state_dir) on the same address
    let d2 = tempfile::tempdir().unwrap();
    let o = Command::new(COHORTD)
        .arg("--config")
        .arg(udp_config(d2.path(), 1, &ports))
        .env("COHORT_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let l = last_line(&o);
    assert!(l.starts_with("cohortd: cannot start the udp transport: bind 127.0.0.1:"), "{l}");
    unsafe { libc::kill(child.child().id() as i32, libc::SIGTERM) };
    let out = child.take().wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("configured cluster nodes [1,2] (startup fencing on)"), "{err}");
}

#[cfg(feature = "corosync")] // the config uses the default transport, corosync
#[test]
fn refuses_to_join_with_a_leftover_mount() {
    let d = tempfile::tempdir().unwrap();
    // "/" is always in /proc/mounts: stands for a filesystem still mounted from a previous run.
    let o = run(&config(
        d.path(),
        "[[filesystem]]\nname = \"fs1\"\njournals = 2\nbackend = \"memory\"\nmount_point = \"/\"\n",
    ));
    assert_eq!(o.status.code(), Some(1));
    let l = last_line(&o);
    assert!(l.starts_with("cohortd: refusing to join: filesystem fs1 is still mounted at /"), "{l}");
    // nothing consumed: no incarnation was written
    assert!(!d.path().join("state/incarnation").exists());

    // a gfs2-sysfs filesystem whose sysfs directory still exists
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("sys");
    fs::create_dir_all(root.join("c1:g1/lock_module")).unwrap();
    let o = run(&config(
        d.path(),
        &format!(
            "[[filesystem]]\nname = \"g1\"\njournals = 2\nbackend = \"gfs2-sysfs\"\n[filesystem.sysfs]\nroot = \"{}\"\ncluster = \"c1\"\nuevents = \"none\"\n",
            root.display()
        ),
    ));
    assert_eq!(o.status.code(), Some(1));
    assert!(last_line(&o).contains("refusing to join: filesystem g1 is still mounted"), "{}", last_line(&o));
}

#[cfg(feature = "corosync")] // the config uses the default transport, corosync
#[test]
fn corrupt_incarnation_is_an_error_and_left_alone() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "");
    fs::create_dir_all(d.path().join("state")).unwrap();
    fs::write(d.path().join("state/incarnation"), "12x\n").unwrap();
    let o = run(&cfg);
    assert_eq!(o.status.code(), Some(1));
    assert!(last_line(&o).contains("state/incarnation is corrupt"), "{}", last_line(&o));
    assert_eq!(fs::read_to_string(d.path().join("state/incarnation")).unwrap(), "12x\n");
}

#[cfg(feature = "corosync")] // the config uses the default transport, corosync
#[test]
fn no_corosync_is_a_clear_error() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot isolate from a running corosync; covered by the real cluster test");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "");
    let o = run(&cfg);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let l = last_line(&o);
    assert!(l.starts_with("cohortd: cannot connect: corosync is not running"), "{l}");
    // the incarnation was consumed before joining: strictly greater at every start
    assert_eq!(fs::read_to_string(d.path().join("state/incarnation")).unwrap(), "1\n");
    let _ = run(&cfg);
    assert_eq!(fs::read_to_string(d.path().join("state/incarnation")).unwrap(), "2\n");
    // state_dir lock and socket permissions are covered by the real cluster test
}

#[test]
fn packaged_example_config_is_valid() {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../packaging/cohort.toml.example");
    let text = fs::read_to_string(p).unwrap();
    // the example names commands that do not exist here: point them at /bin/sh
    let text = text.replace("/usr/sbin/cohort-fence", "/bin/sh").replace("/usr/libexec/cohort/scratch-hook", "/bin/sh");
    let cfg = cohortd::config::Config::parse(&text, "cohort.toml.example").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.filesystems.len(), 2);
    assert_eq!(cfg.filesystems[0].backend.kind(), "gfs2-sysfs");
    assert_eq!(cfg.transport, cohortd::config::Transport::Corosync);

    // The commented [udp] section, switched on, is valid too.
    let d = tempfile::tempdir().unwrap();
    let key = d.path().join("cohort.key");
    fs::write(&key, "ab".repeat(32)).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let mut udp = String::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.starts_with("# ---- [udp]") {
            in_block = true;
        } else if line.starts_with("# ---- end of [udp]") {
            in_block = false;
        }
        let line = match line {
            "transport = \"corosync\"" => "transport = \"udp\"",
            "# node_id = 1" => "node_id = 1",
            "[corosync]" | "group = \"cohort\"" => continue,
            l if in_block
                && l.starts_with('#')
                && l[1..].starts_with(|c: char| c == '[' || c.is_ascii_alphanumeric()) =>
            {
                &l[1..]
            }
            l => l,
        };
        udp.push_str(&line.replace("/etc/cohort/cohort.key", &key.to_string_lossy()));
        udp.push('\n');
    }
    let cfg =
        cohortd::config::Config::parse(&udp, "cohort.toml.example (udp)").unwrap_or_else(|e| panic!("{e}\n{udp}"));
    assert_eq!(cfg.transport, cohortd::config::Transport::Udp);
    assert_eq!((cfg.node_id, cfg.nodes), (Some(1), Some(vec![1, 2, 3])));
    let u = cfg.udp.unwrap();
    assert_eq!((u.net.mode(), u.heartbeat_ms, u.fail_timeout_ms), ("unicast", 50, 300));
    let unit = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../packaging/cohortd.service")).unwrap();
    assert!(unit.contains("RestartForceExitStatus=75"), "the unit must restart a reset daemon");
}

/// An exec filesystem needs a way to see a leftover mount (`hooks.mounted`
/// or `mount_point`): without one, a restarted daemon (new incarnation)
/// would cancel the pending fencing of its old incarnation while the old
/// mount still writes. `--check` and the start refuse it; with the hook,
/// the start asks it (exit 0 = still mounted: refused, nothing consumed;
/// exit 1 = not mounted).
#[cfg(feature = "corosync")] // the config uses the default transport, corosync
#[test]
fn exec_backend_needs_a_way_to_see_a_leftover_mount() {
    let d = tempfile::tempdir().unwrap();
    let hook = d.path().join("hook.sh");
    let flag = d.path().join("still-mounted");
    fs::write(
        &hook,
        format!(
            "#!/bin/sh\n[ \"$OP\" = mounted ] && [ -e '{}' ] && exit 0\n[ \"$OP\" = mounted ] && exit 1\nexit 0\n",
            flag.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    let exec = |extra: &str, hooks: &str| {
        format!(
            "[[filesystem]]\nname = \"fs1\"\njournals = 2\nbackend = \"exec\"\n{extra}[filesystem.exec]\nhook = \"{}\"\n{hooks}",
            hook.display()
        )
    };
    let check = |cfg: &Path| Command::new(COHORTD).arg("--check").arg("--config").arg(cfg).output().unwrap();

    let cfg = config(d.path(), &exec("", ""));
    for o in [check(&cfg), run(&cfg)] {
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        let l = last_line(&o);
        assert!(l.starts_with("cohortd: configuration error: "), "{l}");
        assert!(
            l.contains("filesystem[0].exec.hooks.mounted: missing: the exec backend needs a way to see whether the kernel still has the filesystem mounted"),
            "{l}"
        );
        assert!(l.contains("set hooks.mounted (exit 0 = mounted, 1 = not mounted) or mount_point"), "{l}");
    }
    assert!(!d.path().join("state").exists());
    // a mount_point is enough
    let o = check(&config(d.path(), &exec("mount_point = \"/mnt/nowhere-cohort-test\"\n", "")));
    assert!(o.status.success(), "{o:?}");

    // hooks.mounted says "still mounted": the start is refused, nothing consumed
    let cfg = config(d.path(), &exec("", &format!("[filesystem.exec.hooks]\nmounted = \"{}\"\n", hook.display())));
    assert!(check(&cfg).status.success());
    fs::write(&flag, "").unwrap();
    let o = run(&cfg);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let l = last_line(&o);
    assert!(
        l.starts_with("cohortd: refusing to join: filesystem fs1 is still mounted from a previous run: hooks.mounted"),
        "{l}"
    );
    assert!(!d.path().join("state/incarnation").exists());
}

/// A cluster key that group or others can read is refused (as ssh refuses
/// such a private key) by `--check` and at start, with what to do; the
/// config can opt out with `udp.allow_insecure_key_file = true`.
#[test]
fn key_file_readable_by_others_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let cfg = udp_config(d.path(), 1, &[free_udp_port(), free_udp_port()]);
    let key = d.path().join("cohort.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
    let check = |cfg: &Path| Command::new(COHORTD).arg("--check").arg("--config").arg(cfg).output().unwrap();
    let want = format!("udp.key_file: {} is accessible by group or others (mode 0640)", key.display());
    for o in [check(&cfg), run(&cfg)] {
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        let l = last_line(&o);
        assert!(l.starts_with("cohortd: configuration error: ") && l.contains(&want), "{l}");
        assert!(l.contains(&format!("chmod 600 {}", key.display())), "{l}");
        assert!(l.contains("udp.allow_insecure_key_file = true"), "{l}");
    }
    assert!(!d.path().join("state").exists(), "a refused start must not touch the state directory");
    // The explicit opt-out.
    let text = fs::read_to_string(&cfg).unwrap().replace("[udp]\n", "[udp]\nallow_insecure_key_file = true\n");
    fs::write(&cfg, text).unwrap();
    let o = check(&cfg);
    assert!(o.status.success(), "{o:?}");
    // 0600 passes without it.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let text = fs::read_to_string(&cfg).unwrap().replace("allow_insecure_key_file = true\n", "");
    fs::write(&cfg, text).unwrap();
    assert!(check(&cfg).status.success());
}

/// `cohortd --check` says whether startup fencing is on and where the node
/// list comes from; `startup_fencing = false` is the explicit opt-out.
#[cfg(feature = "corosync")] // the config uses the default transport, corosync
#[test]
fn check_reports_startup_fencing() {
    let d = tempfile::tempdir().unwrap();
    let check = |extra: &str| {
        let o = Command::new(COHORTD).arg("--check").arg("--config").arg(config(d.path(), extra)).output().unwrap();
        assert!(o.status.success(), "{o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let out = check("");
    assert!(out.contains("startup fencing: on, nodes from corosync's nodelist at start"), "{out}");
    assert!(out.contains("the start fails if it cannot be read"), "{out}");
    let out = check("nodes = [1, 2, 3]\n");
    assert!(out.contains("startup fencing: on (nodes [1, 2, 3])"), "{out}");
    let out = check("startup_fencing = false\n");
    assert!(out.contains("startup fencing: OFF (startup_fencing = false)"), "{out}");
}
