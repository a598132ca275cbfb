//! Swarm testing: every seed draws a cluster (size, quorum mode, timing,
//! transport quirks), a workload (mounts in every mode) and a fault
//! schedule, runs it, then heals everything and checks liveness. A seed's
//! whole program can be printed as a scenario file (`--emit`) and replayed
//! with `cohort-sim scenario FILE --seed SEED`, giving the identical run.
//!
//! Generation rules that keep the checkers honest:
//! * two_node and none quorum modes are split-brain by construction for
//!   *fresh* state (both sides may create a filesystem as first mounter);
//!   with them, mounts happen only before the faults, and `none` gets no
//!   network partitions (pauses, crashes and dead transports are fine).

use crate::invariants::liveness;
use crate::invariants::Violation;
use crate::rng::Rng;
use crate::scenario::{Cmd, Runner};
use crate::world::{Model, Range, SeqMode, SimConfig};
use cohort_core::gcs::QuorumMode;
use cohort_core::wire::Mode;
use std::fmt::Write as _;

/// Seconds of fault schedule, then the liveness phase.
pub const FAULT_START_MS: u64 = 8_000;
pub const FAULT_WINDOW_MS: u64 = 35_000;
pub const LIVENESS_MS: u64 = 60_000;

pub struct Plan {
    pub seed: u64,
    pub cfg: SimConfig,
    /// (time, command, text)
    pub cmds: Vec<(u64, Cmd, String)>,
}

fn range_text(r: Range) -> String {
    if r.0 == r.1 {
        format!("{}", r.0)
    } else {
        format!("{}..{}", r.0, r.1)
    }
}

impl Plan {
    /// The plan as a scenario file.
    pub fn to_scenario(&self) -> String {
        let c = &self.cfg;
        let mut s = format!("# swarm seed {} (replay: cohort-sim scenario FILE --seed {})\n", self.seed, self.seed);
        let _ = writeln!(s, "nodes {}", c.nodes);
        if c.model == Model::Udp {
            let _ = writeln!(s, "model udp");
            let _ = writeln!(s, "drop {}%", c.loss_pct);
            let _ = writeln!(s, "dup {}%", c.dup_pct);
            let _ = writeln!(s, "reorder {}", if c.reorder { "on" } else { "off" });
            let _ = writeln!(s, "set heartbeat_ms {}", c.vs_heartbeat_ms);
            let _ = writeln!(s, "set fail_timeout_ms {}", c.vs_fail_ms);
        }
        let q = match c.quorum {
            QuorumMode::Majority => "majority",
            QuorumMode::TwoNode => "two_node",
            QuorumMode::None => "none",
        };
        let _ = writeln!(s, "set quorum {q}");
        let _ = writeln!(s, "set journals {}", c.journals);
        let _ = writeln!(s, "set ring_seq {}", if c.seq_mode == SeqMode::Corosync { "corosync" } else { "global" });
        let _ = writeln!(s, "set carryover {}", if c.carryover { "on" } else { "off" });
        for (k, r) in [
            ("net_delay_ms", c.net_delay),
            ("jitter_ms", c.jitter),
            ("quorum_delay_ms", c.quorum_delay),
            ("ring_delay_ms", c.ring_delay),
            ("mount_delay_ms", c.mount_delay),
            ("first_recovery_delay_ms", c.first_recovery_delay),
            ("recovery_delay_ms", c.recovery_delay),
            ("fence_delay_ms", c.fence_delay),
            ("restart_delay_ms", c.restart_delay),
            ("boot_delay_ms", c.boot_delay),
            ("kill_delay_ms", c.kill_delay),
        ] {
            let _ = writeln!(s, "set {k} {}", range_text(r));
        }
        let _ = writeln!(s, "set fence_retry_ms {}", c.fence_retry_ms);
        let _ = writeln!(s, "set recovery_retry_ms {}", c.recovery_retry_ms);
        let _ = writeln!(s, "set lenient on");
        let mut t = 0;
        for (at, _, text) in self.cmds.iter() {
            if *at > t {
                let _ = writeln!(s, "run {}ms", at - t);
                t = *at;
            }
            let _ = writeln!(s, "{text}");
        }
        s
    }
}

/// Swarm options that change what is generated.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// WORKAROUND for CORE-BUG-2 (tests/CORE_BUGS.md): each filesystem is
    /// first mounted by one node alone; the other initial mounts come 6 s
    /// later, after the first mount finished. Lets the swarm explore past
    /// that bug; off by default.
    pub stagger_mounts: bool,
    /// The membership/transport model (`--model`).
    pub model: Model,
    /// `--tables`: drive the core's bounded tables to their capacity (the
    /// class of CORE-BUG-28) instead of the usual workload. One filesystem
    /// with the profile's most journals; node 1 mounts rw and remounts ro,
    /// so nobody can replay; the other nodes mount ro and churn (crash,
    /// restart, mount again) until the recovery table is full and mounts
    /// are refused with `ReplaysPending`; before the end node 1 remounts rw
    /// and replays everything.
    pub tables: bool,
}

pub fn plan(seed: u64, nodes: (u32, u32)) -> Plan {
    plan_with(seed, nodes, Options::default())
}

pub fn plan_with(seed: u64, nodes: (u32, u32), opts: Options) -> Plan {
    if opts.tables {
        return plan_tables(seed, nodes, opts);
    }
    let mut g = Rng::new(seed ^ 0x5357_4152_4d5f_504c);
    let n = g.range(u64::from(nodes.0), u64::from(nodes.1)) as u32;
    let mut c = SimConfig::new(n);
    c.quorum = if n <= 2 {
        QuorumMode::TwoNode
    } else if g.percent(10) {
        QuorumMode::None
    } else {
        QuorumMode::Majority
    };
    c.seq_mode = if g.percent(50) { SeqMode::Corosync } else { SeqMode::Global };
    c.carryover = g.percent(25);
    c.net_delay = *g.pick(&[Range(0, 1), Range(1, 3), Range(1, 20), Range(5, 60)]);
    c.jitter = *g.pick(&[Range(0, 0), Range(0, 2), Range(0, 15)]);
    c.quorum_delay = *g.pick(&[Range(0, 3), Range(0, 60), Range(0, 400)]);
    let rd = *g.pick(&[20, 100, 400, 1500]);
    c.ring_delay = Range(rd, rd);
    c.mount_delay = *g.pick(&[Range(1, 5), Range(20, 80), Range(100, 1200)]);
    c.first_recovery_delay = *g.pick(&[Range(1, 5), Range(50, 150), Range(300, 2500)]);
    c.recovery_delay = *g.pick(&[Range(1, 5), Range(50, 150), Range(300, 2500)]);
    c.fence_delay = *g.pick(&[Range(10, 50), Range(200, 400), Range(500, 3000)]);
    let r = *g.pick(&[300, 1000, 3000]);
    c.restart_delay = Range(r, 2 * r);
    c.boot_delay = *g.pick(&[Range(50, 100), Range(100, 500)]);
    c.kill_delay = Range(5, 50);
    c.fence_retry_ms = *g.pick(&[200, 1000, 3000]);
    c.recovery_retry_ms = *g.pick(&[200, 1000, 3000]);
    c.journals = if g.percent(10) { (n as u16).saturating_sub(1).max(1) } else { n as u16 + g.range(0, 2) as u16 };
    let nfs = g.range(1, 3) as usize;
    let fss: Vec<String> = (1..=nfs).map(|i| format!("fs{i}")).collect();
    let mut cmds: Vec<(u64, Cmd, String)> = Vec::new();
    let pick_mode = |g: &mut Rng| match g.below(10) {
        0 => Mode::Ro,
        1 => Mode::Spectator,
        _ => Mode::Rw,
    };
    let mode_text = |m: Mode| match m {
        Mode::Rw => "rw",
        Mode::Ro => "ro",
        Mode::Spectator => "spectator",
    };
    // Workload: daemons are up after ring_delay + boot_delay (< 2.1 s).
    for fs in &fss {
        let mut first = true;
        for node in 1..=n {
            if g.percent(70) {
                let mut t = 2_500 + g.below(4_000);
                let mut m = pick_mode(&mut g);
                if opts.stagger_mounts {
                    t = if first { 2_000 } else { 8_000 + g.below(500) };
                    if first {
                        m = Mode::Rw;
                    }
                    first = false;
                }
                cmds.push((
                    t,
                    Cmd::Mount { fs: fs.clone(), nodes: vec![node], mode: m },
                    format!("mount {fs} {node} {}", mode_text(m)),
                ));
            }
        }
    }
    let majority = c.quorum == QuorumMode::Majority;
    let partitions_ok = c.quorum != QuorumMode::None;
    let mut start = if majority { FAULT_START_MS } else { FAULT_START_MS + 4_000 };
    if opts.stagger_mounts {
        start += 4_000;
    }
    let k = g.range(1, 10);
    let all: Vec<u32> = (1..=n).collect();
    for _ in 0..k {
        let t = start + g.below(FAULT_WINDOW_MS - 6_000);
        let node = g.range(1, u64::from(n)) as u32;
        let fs = g.pick(&fss).clone();
        let later = t + g.range(300, 12_000);
        match g.below(17) {
            0 | 1 => {
                cmds.push((t, Cmd::Crash(vec![node]), format!("crash {node}")));
                if g.percent(60) {
                    cmds.push((later, Cmd::Restart(vec![node]), format!("restart {node}")));
                }
            }
            2 => cmds.push((t, Cmd::Restart(vec![node]), format!("restart {node}"))),
            3 | 4 if partitions_ok => {
                let mut v = all.clone();
                g.shuffle(&mut v);
                let parts = if n >= 3 && g.percent(40) { 3 } else { 2 }.min(n as usize);
                let mut groups: Vec<Vec<u32>> = vec![Vec::new(); parts];
                for (i, x) in v.iter().enumerate() {
                    let slot = if i < parts { i } else { g.below(parts as u64) as usize };
                    groups[slot].push(*x);
                }
                for gr in groups.iter_mut() {
                    gr.sort();
                }
                let text = groups
                    .iter()
                    .map(|gr| gr.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(","))
                    .collect::<Vec<_>>()
                    .join(" | ");
                cmds.push((t, Cmd::Partition(groups), format!("partition {text}")));
                if g.percent(70) {
                    cmds.push((later, Cmd::Heal, "heal".into()));
                }
            }
            5 if partitions_ok => {
                cmds.push((t, Cmd::Isolate(vec![node]), format!("isolate {node}")));
                if g.percent(70) {
                    cmds.push((later, Cmd::Heal, "heal".into()));
                }
            }
            6 => {
                cmds.push((t, Cmd::Pause(vec![node]), format!("pause {node}")));
                cmds.push((later, Cmd::Resume(vec![node]), format!("resume {node}")));
            }
            7 => {
                cmds.push((t, Cmd::KillTransport(vec![node]), format!("kill-transport {node}")));
                if g.percent(50) {
                    cmds.push((later, Cmd::Restart(vec![node]), format!("restart {node}")));
                }
            }
            8 => {
                cmds.push((t, Cmd::KillDaemon(vec![node]), format!("kill-daemon {node}")));
                if g.percent(50) {
                    cmds.push((later, Cmd::Restart(vec![node]), format!("restart {node}")));
                }
            }
            9 => {
                let times = g.range(1, 3) as u32;
                cmds.push((t, Cmd::FenceFail { node, times }, format!("fence-fail {node} {times}")));
            }
            10 => {
                let times = g.range(1, 2) as u32;
                cmds.push((
                    t,
                    Cmd::RecoveryFail { fs: fs.clone(), node, times },
                    format!("recovery-fail {fs} {node} {times}"),
                ));
            }
            11 => cmds.push((
                t,
                Cmd::MountErrorInj { fs: fs.clone(), node, times: 1 },
                format!("mount-error {fs} {node} 1"),
            )),
            12 => cmds.push((t, Cmd::Withdraw { fs: fs.clone(), node }, format!("withdraw {fs} {node}"))),
            // Every third unmount (by time, so the draws stay as they
            // were) is an operator asking before `umount`: refused.
            13 if t.is_multiple_of(3) => cmds.push((
                t,
                Cmd::UnmountEarly { fs: fs.clone(), nodes: vec![node] },
                format!("unmount-early {fs} {node}"),
            )),
            13 => cmds.push((t, Cmd::Unmount { fs: fs.clone(), nodes: vec![node] }, format!("unmount {fs} {node}"))),
            14 => {
                let m = if g.percent(50) { Mode::Ro } else { Mode::Rw };
                cmds.push((
                    t,
                    Cmd::Remount { fs: fs.clone(), nodes: vec![node], mode: m },
                    format!("remount {fs} {node} {}", mode_text(m)),
                ));
            }
            15 | 16 if majority => {
                let m = pick_mode(&mut g);
                cmds.push((
                    t,
                    Cmd::Mount { fs: fs.clone(), nodes: vec![node], mode: m },
                    format!("mount {fs} {node} {}", mode_text(m)),
                ));
            }
            _ => {
                cmds.push((t, Cmd::Crash(vec![node]), format!("crash {node}")));
                cmds.push((later, Cmd::Restart(vec![node]), format!("restart {node}")));
            }
        }
    }
    if opts.model == Model::Udp {
        // The udp model's network, drawn last so the workload and faults
        // are those of the same seed under corosync. Moderate: the
        // liveness phase runs with the same network.
        c.model = Model::Udp;
        // One-way cuts (asymmetric links), healed later or by heal-all.
        if partitions_ok && n >= 2 && g.percent(30) {
            let t = start + g.below(FAULT_WINDOW_MS - 6_000);
            let a = g.range(1, u64::from(n)) as u32;
            let b = (a + g.range(0, u64::from(n) - 2) as u32) % n + 1;
            cmds.push((t, Cmd::Cut(vec![(a, b)]), format!("cut {a}>{b}")));
            if g.percent(70) {
                cmds.push((t + g.range(200, 8_000), Cmd::Heal, "heal".into()));
            }
        }
        c.loss_pct = *g.pick(&[0, 0, 1, 3, 5, 10]);
        c.dup_pct = *g.pick(&[0, 0, 1, 5]);
        c.reorder = g.percent(50);
        c.net_delay = *g.pick(&[Range(0, 1), Range(1, 3), Range(1, 10), Range(2, 40)]);
    }
    let end = start + FAULT_WINDOW_MS;
    cmds.retain(|(t, _, _)| *t < end);
    cmds.sort_by_key(|(t, _, _)| *t);
    cmds.push((end, Cmd::HealAll, "heal-all".into()));
    cmds.push((end, Cmd::RunUntilLive(LIVENESS_MS), format!("run-until-live max {}ms", LIVENESS_MS)));
    Plan { seed, cfg: c, cmds }
}

/// The `--tables` plan (see [`Options::tables`]).
fn plan_tables(seed: u64, nodes: (u32, u32), opts: Options) -> Plan {
    let mut g = Rng::new(seed ^ 0x5441_424c_4553_5f50);
    let n = g.range(u64::from(nodes.0.max(3)), u64::from(nodes.1.max(3))) as u32;
    let mut c = SimConfig::new(n);
    c.quorum = QuorumMode::Majority;
    c.seq_mode = if g.percent(50) { SeqMode::Corosync } else { SeqMode::Global };
    c.net_delay = *g.pick(&[Range(0, 1), Range(1, 3), Range(1, 20)]);
    c.jitter = *g.pick(&[Range(0, 0), Range(0, 2)]);
    c.quorum_delay = *g.pick(&[Range(0, 3), Range(0, 60)]);
    let rd = *g.pick(&[20, 100, 400]);
    c.ring_delay = Range(rd, rd);
    c.mount_delay = Range(1, 5);
    c.first_recovery_delay = Range(1, 5);
    c.recovery_delay = *g.pick(&[Range(1, 5), Range(50, 150)]);
    c.fence_delay = *g.pick(&[Range(10, 50), Range(200, 400)]);
    c.restart_delay = Range(300, 600);
    c.boot_delay = Range(50, 100);
    c.kill_delay = Range(5, 50);
    c.fence_retry_ms = 200;
    c.recovery_retry_ms = 200;
    c.journals = cohort_core::wire::MAX_JOURNALS as u16;
    let mut cmds: Vec<(u64, Cmd, String)> = Vec::new();
    let fs = "fs1".to_string();
    cmds.push((2_500, Cmd::Mount { fs: fs.clone(), nodes: vec![1], mode: Mode::Rw }, "mount fs1 1 rw".into()));
    cmds.push((6_000, Cmd::Remount { fs: fs.clone(), nodes: vec![1], mode: Mode::Ro }, "remount fs1 1 ro".into()));
    let end = FAULT_START_MS + FAULT_WINDOW_MS;
    // Nodes 2..=n churn, each on its own clock: mount ro, lose power,
    // restart, mount again. Every failure leaves a journal to replay.
    for node in 2..=n {
        let mut t = 6_500 + g.below(1_000);
        while t + 4_000 < end - 2_000 {
            cmds.push((
                t,
                Cmd::Mount { fs: fs.clone(), nodes: vec![node], mode: Mode::Ro },
                format!("mount fs1 {node} ro"),
            ));
            let up = t + 600 + g.below(600);
            if g.percent(10) {
                // Now and then a clean leave instead of a failure.
                cmds.push((up, Cmd::Unmount { fs: fs.clone(), nodes: vec![node] }, format!("unmount fs1 {node}")));
                t = up + 400 + g.below(400);
                continue;
            }
            cmds.push((up, Cmd::Crash(vec![node]), format!("crash {node}")));
            cmds.push((up + 1, Cmd::Restart(vec![node]), format!("restart {node}")));
            t = up + 2_500 + g.below(500);
        }
    }
    // The way out: a replayer again.
    cmds.push((
        end - 1_500,
        Cmd::Remount { fs: fs.clone(), nodes: vec![1], mode: Mode::Rw },
        "remount fs1 1 rw".into(),
    ));
    if opts.model == Model::Udp {
        c.model = Model::Udp;
        c.loss_pct = *g.pick(&[0, 1, 3]);
        c.dup_pct = *g.pick(&[0, 1]);
        c.reorder = g.percent(50);
        c.net_delay = *g.pick(&[Range(0, 1), Range(1, 3)]);
    }
    cmds.retain(|(t, _, _)| *t < end);
    cmds.sort_by_key(|(t, _, _)| *t);
    cmds.push((end, Cmd::HealAll, "heal-all".into()));
    cmds.push((end, Cmd::RunUntilLive(LIVENESS_MS), format!("run-until-live max {}ms", LIVENESS_MS)));
    Plan { seed, cfg: c, cmds }
}

#[derive(Debug)]
pub enum Outcome {
    Ok,
    Violation(Violation),
    Stall(String),
    /// The simulator itself could not run the plan.
    Error(String),
}

pub struct SeedResult {
    pub seed: u64,
    pub outcome: Outcome,
    pub hash: u64,
    pub events: u64,
    pub steps: u64,
    /// Last events (failures only).
    pub trace: String,
    pub totals: crate::world::Totals,
}

pub fn run_seed(seed: u64, nodes: (u32, u32), live_trace: bool) -> SeedResult {
    run_seed_with(seed, nodes, live_trace, Options::default())
}

pub fn run_seed_with(seed: u64, nodes: (u32, u32), live_trace: bool, opts: Options) -> SeedResult {
    let p = plan_with(seed, nodes, opts);
    // A bug in the simulator itself must not take the other seeds down.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_plan(&p, live_trace))) {
        Ok(r) => r,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            SeedResult {
                seed,
                outcome: Outcome::Error(format!("simulator panicked: {msg}")),
                hash: 0,
                events: 0,
                steps: 0,
                trace: String::new(),
                totals: Default::default(),
            }
        }
    }
}

pub fn run_plan(p: &Plan, live_trace: bool) -> SeedResult {
    let mut cfg = p.cfg.clone();
    cfg.live_trace = live_trace;
    let mut r = Runner::with_config(cfg, p.seed);
    let mut outcome = Outcome::Ok;
    // udp model: command times count from the end of the boot phase, as
    // `run` does in the emitted scenario, so a replay is the identical run
    // (the network's randomness depends on the heartbeat phase). The
    // corosync model keeps absolute times (its seeds' traces stay as they were).
    let mut base = None;
    for (at, cmd, text) in p.cmds.iter() {
        let w = match r.world() {
            Ok(w) => w,
            Err(e) => {
                outcome = Outcome::Error(e);
                break;
            }
        };
        let base = *base.get_or_insert(if w.cfg.model == Model::Udp { w.now } else { 0 });
        w.run_until(base + *at);
        if w.halted {
            break;
        }
        if let Err(e) = r.exec(cmd, text) {
            outcome = if matches!(cmd, Cmd::RunUntilLive(_)) { Outcome::Stall(e) } else { Outcome::Error(e) };
            break;
        }
        if r.world.as_ref().is_some_and(|w| w.halted) {
            break;
        }
    }
    let w = r.world.as_ref();
    if let Some(v) = w.and_then(|w| w.violations.first()) {
        outcome = Outcome::Violation(v.clone());
    }
    let failed = !matches!(outcome, Outcome::Ok);
    SeedResult {
        seed: p.seed,
        outcome,
        hash: w.map_or(0, |w| w.trace_hash()),
        events: w.map_or(0, |w| w.events),
        steps: w.map_or(0, |w| w.steps),
        trace: if failed { w.map_or(String::new(), |w| w.trace.dump(&w.fs_names)) } else { String::new() },
        totals: w.map_or_else(Default::default, |w| w.log.totals),
    }
}

/// The liveness condition, for the `run-until-live` command.
pub fn live(w: &mut crate::world::World) -> Result<(), String> {
    liveness::check(w)
}

/// Both models are supported (kept for the CLI's exit status 3).
pub fn model_supported(m: Model) -> Result<(), String> {
    match m {
        Model::Corosync | Model::Udp => Ok(()),
    }
}
