//! The control socket without a cluster: a server loop on a thread (as the
//! daemon runs it), driven by the real `cohortctl` binary.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cohortd::api::{Gen, LogKind, Request};
use cohortd::control::ControlServer;
use cohortd::eventlog::EventLog;
use serde_json::json;

const COHORTCTL: &str = env!("CARGO_BIN_EXE_cohortctl");

/// Serve until `stop`: answers `log` (with follow) and refuses the rest;
/// adds a log entry every 50 ms.
fn serve(path: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let mut srv = ControlServer::bind(&path).unwrap();
    std::thread::spawn(move || {
        let mut log = EventLog::new(7, 100);
        log.push(0, Gen { ring: 4, epoch: 1 }, LogKind::Info, "first".into());
        let t = Instant::now();
        let mut last_add = Instant::now();
        while !stop.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(30) {
            let mut fds: Vec<libc::pollfd> =
                srv.poll_set().iter().map(|(fd, ev)| libc::pollfd { fd: *fd, events: *ev, revents: 0 }).collect();
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
            for (id, req) in srv.service() {
                let resp = match req {
                    Ok(Request::Log { follow, since, .. }) => {
                        if follow {
                            srv.follow(id, log.last_seq());
                        }
                        json!({"ok": true, "entries": log.since(since)})
                    }
                    Ok(other) => json!({"ok": false, "error": format!("not here: {other:?}")}),
                    Err(e) => json!({"ok": false, "error": e}),
                };
                srv.reply(id, &resp);
            }
            if last_add.elapsed() > Duration::from_millis(50) {
                last_add = Instant::now();
                let n = log.last_seq();
                log.push(n * 10, Gen { ring: 4, epoch: 2 }, LogKind::Notice, format!("entry {n}"));
            }
            srv.push_log(&log);
            srv.flush();
        }
    })
}

#[test]
fn socket_is_private_and_follow_streams_entries() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("cohortd.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let h = serve(path.clone(), stop.clone());
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

    // one-shot log, human output
    let out = Command::new(COHORTCTL).arg("--socket").arg(&path).arg("log").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.lines().next().unwrap().contains("gen 4.1") && s.contains("first"), "{s}");

    // an error answer is exit status 1 with the daemon's message
    let out = Command::new(COHORTCTL).arg("--socket").arg(&path).arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("cohortctl: not here: Status"));

    // --follow keeps streaming JSON lines
    let mut child = Command::new(COHORTCTL)
        .arg("--socket")
        .arg(&path)
        .args(["log", "--follow", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seqs = vec![];
    while seqs.len() < 4 {
        let l = lines.next().unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        seqs.push(v["seq"].as_u64().unwrap());
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let _ = child.kill();
    let _ = child.wait();

    // usage and connection errors
    let out = Command::new(COHORTCTL).args(["--socket", "/nonexistent.sock", "log"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let out = Command::new(COHORTCTL).arg("--socket").arg(&path).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));

    // a non-root peer is refused even if the file mode would let it in
    if unsafe { libc::geteuid() } == 0 && Command::new("setpriv").arg("--version").output().is_ok() {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", COHORTCTL, "--socket"])
            .arg(&path)
            .arg("log")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains("permission denied: only root may use the control socket (peer uid 65534)"), "{e}");
    }
    stop.store(true, Ordering::SeqCst);
    h.join().unwrap();
    assert!(!path.exists(), "the socket is removed when the server stops");
}
