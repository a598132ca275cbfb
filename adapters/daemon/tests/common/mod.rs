//! What the multi-process cohortd tests share: finding our own cohortd
//! processes and talking to a daemon through `cohortctl`.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use cohortd::api::{LogEntry, StatusJson};

pub const COHORTD: &str = env!("CARGO_BIN_EXE_cohortd");
pub const COHORTCTL: &str = env!("CARGO_BIN_EXE_cohortctl");

/// Is `pid` a live cohortd whose command line names `dir` (one of ours)?
pub fn is_our_cohortd(pid: i32, dir: &Path) -> bool {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat.rsplit(')').next().is_some_and(|s| s.trim_start().starts_with('Z'));
    comm.trim() == "cohortd" && !zombie && String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy())
}

/// A test cluster whose daemons answer on control sockets.
pub trait Ctl {
    fn socket(&self, k: u32) -> PathBuf;
    /// The test fence agent's record (shown when a wait times out).
    fn fence_log(&self) -> String;

    fn ctl(&self, k: u32, args: &[&str]) -> Result<String, String> {
        let out = Command::new(COHORTCTL)
            .arg("--socket")
            .arg(self.socket(k))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run cohortctl");
        let so = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(so)
        } else {
            Err(format!("cohortctl {args:?} on node {k}: {}{so}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    fn status(&self, k: u32) -> StatusJson {
        let s = self.ctl(k, &["status", "--json"]).unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("node {k}: status --json does not parse ({e}):\n{s}"))
    }

    fn log(&self, k: u32) -> Vec<LogEntry> {
        let s = self.ctl(k, &["log", "--json"]).unwrap_or_else(|e| panic!("{e}"));
        s.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}"))).collect()
    }

    /// Poll node `k`'s status until `pred` holds.
    fn wait_status(&self, k: u32, what: &str, timeout: Duration, pred: impl Fn(&StatusJson) -> bool) -> StatusJson {
        let t = Instant::now();
        loop {
            let s = self.status(k);
            if pred(&s) {
                return s;
            }
            if t.elapsed() > timeout {
                let log: Vec<String> = self.log(k).iter().rev().take(40).rev().map(|e| format!("{e:?}")).collect();
                panic!(
                    "node {k}: timed out after {timeout:?} waiting for {what}\nstatus: {}\nlog:\n{}\nfence log:\n{}",
                    serde_json::to_string_pretty(&s).unwrap(),
                    log.join("\n"),
                    self.fence_log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn jids(s: &StatusJson) -> Vec<(u32, Option<u16>)> {
    s.groups.iter().find(|g| g.fs == "fs1").map_or(vec![], |g| g.members.iter().map(|m| (m.node, m.jid)).collect())
}

pub fn members(s: &StatusJson) -> Vec<u32> {
    s.members.iter().map(|m| m.node).collect()
}

/// fs1 settled on exactly `nodes` (daemon group too): synced, unblocked,
/// everyone mounted, nothing to recover or fence, and this node's kernel
/// mounted and unblocked.
pub fn settled(s: &StatusJson, nodes: &[u32]) -> bool {
    let Some(g) = s.groups.iter().find(|g| g.fs == "fs1") else { return false };
    s.stable
        && members(s) == nodes
        && g.members.iter().map(|m| m.node).collect::<Vec<_>>() == nodes
        && g.members.iter().all(|m| m.mounted && m.jid.is_some())
        && g.recoveries.is_empty()
        && !g.blocked
        && s.fencing.is_empty()
        && g.kernel.is_mounted()
        && !g.kernel.blocked
}

/// Sequence number of the first event-log entry containing `pat`.
pub fn seq_of(log: &[LogEntry], pat: &str) -> Option<u64> {
    log.iter().find(|e| e.text.contains(pat)).map(|e| e.seq)
}
