//! Fencing through an external agent: `AGENT <nodeid>`, run on a worker
//! thread (never on the main loop), killed (with its process group) when it
//! exceeds the timeout, which counts as a failure. The outcome comes back
//! through the [`Waker`] and becomes `Input::Fenced`.
//!
//! Environment given to the agent:
//! `COHORT_TARGET_NODE`, `COHORT_TARGET_INCARNATION` (empty when unknown),
//! `COHORT_FENCE_REASON` (`fence`: a failed member must be fenced before its
//! journal is replayed; `kill`: backup for a stale-merge verdict, make sure
//! that node's daemon resets), `COHORT_NODE` (the node running the agent).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cohort_core::Member;

use crate::proc::{run_capturing_stderr, Wake, Waker};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceWhy {
    Fence,
    Kill,
}

impl FenceWhy {
    pub fn as_str(self) -> &'static str {
        match self {
            FenceWhy::Fence => "fence",
            FenceWhy::Kill => "kill",
        }
    }
}

#[derive(Clone, Debug)]
pub struct FenceAgent {
    pub agent: PathBuf,
    pub timeout: Duration,
    pub me: u32,
}

impl FenceAgent {
    /// Start the agent for `target` on a worker thread; the result arrives
    /// as [`Wake::Fenced`]. `known_inc`: false when the incarnation is not
    /// known (kill requests name only the node).
    pub fn spawn(&self, target: Member, known_inc: bool, why: FenceWhy, waker: Waker) {
        let agent = self.clone();
        let name = format!("fence-{}", target.node.0);
        let r = std::thread::Builder::new().name(name).spawn(move || {
            let t = Instant::now();
            let (result, stderr) = agent.run(target, known_inc, why);
            waker.wake(Wake::Fenced { target, why, result, stderr, took_ms: t.elapsed().as_millis() as u64 });
        });
        if let Err(e) = r {
            tracing::error!("cannot start a fence thread: {e}");
        }
    }

    /// Run the agent synchronously (the worker thread's body). Returns the
    /// outcome and what the agent wrote to stderr (for the event log, not
    /// our own stderr).
    pub fn run(&self, target: Member, known_inc: bool, why: FenceWhy) -> (Result<(), String>, String) {
        let mut cmd = Command::new(&self.agent);
        cmd.arg(target.node.0.to_string())
            .env("COHORT_TARGET_NODE", target.node.0.to_string())
            .env("COHORT_TARGET_INCARNATION", if known_inc { target.inc.0.to_string() } else { String::new() })
            .env("COHORT_FENCE_REASON", why.as_str())
            .env("COHORT_NODE", self.me.to_string());
        let (r, stderr) = run_capturing_stderr(&mut cmd, self.timeout);
        (r.map_err(|e| format!("fence agent {}: {e}", self.agent.display())), stderr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_core::{Incarnation, NodeId};
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &std::path::Path, body: &str) -> PathBuf {
        let p = dir.join("agent.sh");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn agent_gets_node_and_env_and_times_out() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let agent = script(
            d.path(),
            &format!(
                "echo \"$1 $COHORT_TARGET_NODE $COHORT_TARGET_INCARNATION $COHORT_FENCE_REASON $COHORT_NODE\" > {}",
                out.display()
            ),
        );
        let a = FenceAgent { agent, timeout: Duration::from_secs(5), me: 1 };
        let m = Member { node: NodeId(3), inc: Incarnation(7) };
        a.run(m, true, FenceWhy::Fence).0.unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "3 3 7 fence 1\n");
        a.run(m, false, FenceWhy::Kill).0.unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "3 3  kill 1\n");

        let slow = FenceAgent { agent: script(d.path(), "sleep 20"), timeout: Duration::from_millis(150), me: 1 };
        let (w, r) = crate::proc::wake_pair().unwrap();
        let t = Instant::now();
        slow.spawn(m, true, FenceWhy::Fence, w);
        let mut got = vec![];
        while got.is_empty() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
            got = r.drain();
        }
        match &got[..] {
            [Wake::Fenced { target, result: Err(e), .. }] => {
                assert_eq!(*target, m);
                assert!(e.contains("timed out after 150 ms"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
