//! Scenario files: plain text, one command per line, `#` starts a comment.
//!
//! ```text
//! # cluster (before the first action)
//! nodes 5                        model corosync|udp
//! set journals 4                 set quorum majority|two_node|none
//! set fence_delay_ms 200..300    set <knob> N | A..B   (see `set_knob`)
//! # operator requests
//! mount fs1 1 2 3 [rw|ro|spectator]   unmount fs1 2   remount fs1 2 ro|rw
//! # faults
//! partition 1,2 | 3,4 | 5        isolate 3       heal
//! cut 3>1 [2>1 ...]              (one-way: datagrams from 3 do not reach 1; udp model; heal clears)
//! crash 2      restart 2         pause 3         resume 3
//! kill-transport 2               kill-daemon 2
//! fence-fail 3 2                 fence-delay 1 3000
//! recovery-fail fs1 1 1          mount-error fs1 4 [K]     withdraw fs1 2
//! drop 20%  dup 5%  reorder on   delay 1ms..50ms   (network knobs: udp model;
//!                                 corosync uses only `delay`)
//! set heartbeat_ms 50            set fail_timeout_ms 300   (udp model transport)
//! heal-all                       (heal, resume, restart everything, stop faults)
//! # time
//! run 10s                        run-until-stable [max 60s]     run-until-live [max 60s]
//! # expectations
//! expect stable                  expect members fs1 1 2 4
//! expect jid fs1 4 2             expect reset 3 5      expect alive 1 2 4
//! expect waiting fs1 fencing [N] expect mounted fs1 1 2
//! expect error fs1 4 no-free-journal                   expect fenced 3
//! expect first-mounter fs1 1     expect recovered fs1 2 [by 1]
//! expect merge-partitions 3      expect blocked fs1 1 2  expect live
//! expect replays fs1 2           (successful RecoverJournal replays of fs1 so far)
//! expect vs-settled              (udp: every transport in its component's view, nothing pending)
//! ```
//!
//! The cluster boots (every node powered on, daemons started) and settles
//! before the first command that is not `nodes`/`model`/`set`.
//! `expect reset` and `expect fenced` compare the set of nodes reset/fenced
//! since the start or the previous such `expect` (no nodes = none).
//! `expect live` runs the liveness check of property 6.
//! A file whose first command is `explore nodes N` is a step list of the
//! exhaustive explorer (a `cohort-sim check` counterexample, see
//! `explore::run_text`).
//! `xfail BUG-ID expect ...` marks an expectation that a known core bug
//! (tests/CORE_BUGS.md) breaks: it is evaluated and reported, not fatal.
//! Unlisted nodes in `partition` are isolated, each on its own.

use crate::invariants::{self, Violation};
use crate::trace::What;
use crate::world::{Model, Range, SeqMode, SimConfig, World};
use cohort_core::gcs::QuorumMode;
use cohort_core::mount::GroupWait;
use cohort_core::node::{MountError, Request};
use cohort_core::wire::{self, Mode};
use std::collections::BTreeSet;
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum Cmd {
    Nodes(u32),
    Model(Model),
    Set(String, String),
    Mount {
        fs: String,
        nodes: Vec<u32>,
        mode: Mode,
    },
    Unmount {
        fs: String,
        nodes: Vec<u32>,
    },
    /// The operator asks the daemon to leave without unmounting the kernel
    /// first (`cohortctl unmount` before `umount`): the host must refuse
    /// while the kernel has the filesystem.
    UnmountEarly {
        fs: String,
        nodes: Vec<u32>,
    },
    Remount {
        fs: String,
        nodes: Vec<u32>,
        mode: Mode,
    },
    Partition(Vec<Vec<u32>>),
    Isolate(Vec<u32>),
    /// `cut 3>1 2>1`: one-way cuts (udp model).
    Cut(Vec<(u32, u32)>),
    Heal,
    HealAll,
    Crash(Vec<u32>),
    Restart(Vec<u32>),
    Pause(Vec<u32>),
    Resume(Vec<u32>),
    KillTransport(Vec<u32>),
    KillDaemon(Vec<u32>),
    FenceFail {
        node: u32,
        times: u32,
    },
    FenceDelay {
        node: u32,
        ms: u64,
    },
    RecoveryFail {
        fs: String,
        node: u32,
        times: u32,
    },
    MountErrorInj {
        fs: String,
        node: u32,
        times: u32,
    },
    Withdraw {
        fs: String,
        node: u32,
    },
    NetKnob(String),
    Delay(Range),
    Run(u64),
    RunUntilStable(u64),
    /// Run until the liveness condition of property 6 holds.
    RunUntilLive(u64),
    Expect(Expect),
    /// `xfail BUG-ID expect ...`: an expectation a known core bug breaks
    /// (see tests/CORE_BUGS.md). A failure is reported as a note, a pass as
    /// "BUG-ID looks fixed"; neither fails the scenario.
    Xfail(String, Expect),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expect {
    Stable,
    Live,
    Members { fs: String, nodes: Vec<u32> },
    Jid { fs: String, node: u32, jid: u16 },
    Reset(Vec<u32>),
    Alive(Vec<u32>),
    Waiting { fs: String, what: String, arg: Option<u32> },
    Mounted { fs: String, nodes: Vec<u32> },
    Blocked { fs: String, nodes: Vec<u32> },
    Error { fs: String, node: u32, kind: String },
    Fenced(Vec<u32>),
    FirstMounter { fs: String, nodes: Vec<u32> },
    Recovered { fs: String, jid: u16, by: Option<u32> },
    Replays { fs: String, count: usize },
    MergePartitions(u8),
    VsSettled,
}

#[derive(Clone, Debug)]
pub struct Line {
    pub no: usize,
    pub text: String,
    pub cmd: Cmd,
}

/// Parse `10s`, `500ms`, `1.5s`, `200` (ms).
pub fn parse_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = if let Some(x) = s.strip_suffix("ms") {
        (x, 1.0)
    } else if let Some(x) = s.strip_suffix('s') {
        (x, 1000.0)
    } else if let Some(x) = s.strip_suffix('m') {
        (x, 60_000.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.parse().map_err(|_| format!("bad duration '{s}'"))?;
    if v < 0.0 {
        return Err(format!("negative duration '{s}'"));
    }
    Ok((v * mult).round() as u64)
}

/// `A..B` or `N` (milliseconds, with optional units).
pub fn parse_range(s: &str) -> Result<Range, String> {
    match s.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (parse_ms(a)?, parse_ms(b)?);
            if b < a {
                return Err(format!("empty range '{s}'"));
            }
            Ok(Range(a, b))
        }
        None => {
            let v = parse_ms(s)?;
            Ok(Range(v, v))
        }
    }
}

fn node(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|_| format!("bad node id '{s}'"))?;
    if n == 0 || n > crate::world::MAX_SIM_NODES {
        return Err(format!("node id {n} out of range 1..=32"));
    }
    Ok(n)
}

fn nodes(args: &[&str]) -> Result<Vec<u32>, String> {
    let mut v = Vec::new();
    for a in args {
        for part in a.split(',').filter(|p| !p.is_empty()) {
            v.push(node(part)?);
        }
    }
    Ok(v)
}

fn mode(s: &str) -> Result<Mode, String> {
    match s {
        "rw" => Ok(Mode::Rw),
        "ro" => Ok(Mode::Ro),
        "spectator" => Ok(Mode::Spectator),
        _ => Err(format!("bad mode '{s}' (rw|ro|spectator)")),
    }
}

fn fs_arg(s: Option<&&str>) -> Result<String, String> {
    let s = s.ok_or("missing filesystem name")?;
    wire::fs_name(s).map_err(|e| format!("bad filesystem name '{s}': {e:?}"))?;
    Ok(s.to_string())
}

fn num<T: std::str::FromStr>(s: Option<&&str>, what: &str) -> Result<T, String> {
    let s = s.ok_or(format!("missing {what}"))?;
    s.parse().map_err(|_| format!("bad {what} '{s}'"))
}

fn opt_node_list(args: &[&str]) -> Result<Vec<u32>, String> {
    if args.len() == 1 && (args[0] == "none" || args[0] == "-") {
        return Ok(vec![]);
    }
    nodes(args)
}

pub fn parse_line(text: &str) -> Result<Option<Cmd>, String> {
    let text = text.split('#').next().unwrap_or("").trim();
    if text.is_empty() {
        return Ok(None);
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let (head, args) = (words[0], &words[1..]);
    let need_nodes = |args: &[&str]| -> Result<Vec<u32>, String> {
        let v = nodes(args)?;
        if v.is_empty() {
            return Err(format!("'{head}' needs node ids"));
        }
        Ok(v)
    };
    let cmd = match head {
        "nodes" => {
            let n: u32 = num(args.first(), "node count")?;
            if n == 0 || n > crate::world::MAX_SIM_NODES {
                return Err(format!("nodes must be 1..=32, not {n}"));
            }
            Cmd::Nodes(n)
        }
        "model" => match args.first().copied() {
            Some("corosync") => Cmd::Model(Model::Corosync),
            Some("udp") => Cmd::Model(Model::Udp),
            _ => return Err("model corosync|udp".into()),
        },
        "set" => {
            let k = args.first().ok_or("set KEY VALUE")?;
            let v = args.get(1).ok_or("set KEY VALUE")?;
            Cmd::Set(k.to_string(), v.to_string())
        }
        "mount" | "unmount" | "unmount-early" | "remount" => {
            let fs = fs_arg(args.first())?;
            let mut rest: Vec<&str> = args[1..].to_vec();
            let m = match rest.last().copied() {
                Some("rw" | "ro" | "spectator") => Some(mode(rest.pop().expect("last"))?),
                _ => None,
            };
            let ns = need_nodes(&rest)?;
            match head {
                "mount" => Cmd::Mount { fs, nodes: ns, mode: m.unwrap_or(Mode::Rw) },
                "unmount" => {
                    if m.is_some() {
                        return Err("unmount takes no mode".into());
                    }
                    Cmd::Unmount { fs, nodes: ns }
                }
                "unmount-early" => {
                    if m.is_some() {
                        return Err("unmount-early takes no mode".into());
                    }
                    Cmd::UnmountEarly { fs, nodes: ns }
                }
                _ => Cmd::Remount { fs, nodes: ns, mode: m.ok_or("remount needs ro|rw")? },
            }
        }
        "partition" => {
            let joined = args.join(" ");
            let mut groups = Vec::new();
            for part in joined.split('|') {
                let ws: Vec<&str> = part.split([',', ' ']).filter(|w| !w.is_empty()).collect();
                groups.push(need_nodes(&ws)?);
            }
            Cmd::Partition(groups)
        }
        "isolate" => Cmd::Isolate(need_nodes(args)?),
        "cut" => {
            let mut v = Vec::new();
            for a in args.iter() {
                let (x, y) = a.split_once('>').ok_or(format!("cut A>B [C>D ...], not '{a}'"))?;
                v.push((node(x)?, node(y)?));
            }
            if v.is_empty() {
                return Err("cut A>B [C>D ...]".into());
            }
            Cmd::Cut(v)
        }
        "heal" => Cmd::Heal,
        "heal-all" => Cmd::HealAll,
        "crash" => Cmd::Crash(need_nodes(args)?),
        "restart" => Cmd::Restart(need_nodes(args)?),
        "pause" => Cmd::Pause(need_nodes(args)?),
        "resume" => Cmd::Resume(need_nodes(args)?),
        "kill-transport" => Cmd::KillTransport(need_nodes(args)?),
        "kill-daemon" => Cmd::KillDaemon(need_nodes(args)?),
        "fence-fail" => {
            Cmd::FenceFail { node: node(args.first().ok_or("fence-fail NODE K")?)?, times: num(args.get(1), "count")? }
        }
        "fence-delay" => Cmd::FenceDelay {
            node: node(args.first().ok_or("fence-delay NODE MS")?)?,
            ms: parse_ms(args.get(1).ok_or("fence-delay NODE MS")?)?,
        },
        "recovery-fail" => Cmd::RecoveryFail {
            fs: fs_arg(args.first())?,
            node: node(args.get(1).ok_or("recovery-fail FS NODE K")?)?,
            times: num(args.get(2), "count")?,
        },
        "mount-error" => Cmd::MountErrorInj {
            fs: fs_arg(args.first())?,
            node: node(args.get(1).ok_or("mount-error FS NODE [K]")?)?,
            times: if args.len() > 2 { num(args.get(2), "count")? } else { 1 },
        },
        "withdraw" => Cmd::Withdraw { fs: fs_arg(args.first())?, node: node(args.get(1).ok_or("withdraw FS NODE")?)? },
        "drop" | "dup" => {
            let p = args.first().ok_or(format!("{head} N%"))?;
            let v: u32 = p.trim_end_matches('%').parse().map_err(|_| format!("bad percentage '{p}'"))?;
            if v > 100 {
                return Err(format!("bad percentage '{p}'"));
            }
            Cmd::NetKnob(text.to_string())
        }
        "reorder" => match args.first().copied() {
            Some("on" | "off") => Cmd::NetKnob(text.to_string()),
            _ => return Err("reorder on|off".into()),
        },
        "delay" => Cmd::Delay(parse_range(args.first().ok_or("delay A..B")?)?),
        "run" => Cmd::Run(parse_ms(args.first().ok_or("run DURATION")?)?),
        "run-until-stable" => {
            let max = match args {
                [] => 60_000,
                ["max", d] => parse_ms(d)?,
                [d] => parse_ms(d)?,
                _ => return Err("run-until-stable [max DURATION]".into()),
            };
            Cmd::RunUntilStable(max)
        }
        "run-until-live" => {
            let max = match args {
                [] => 60_000,
                ["max", d] => parse_ms(d)?,
                [d] => parse_ms(d)?,
                _ => return Err("run-until-live [max DURATION]".into()),
            };
            Cmd::RunUntilLive(max)
        }
        "expect" => Cmd::Expect(parse_expect(args)?),
        "xfail" => {
            let id = args.first().ok_or("xfail BUG-ID expect ...")?;
            if args.get(1) != Some(&"expect") {
                return Err("xfail BUG-ID expect ...".into());
            }
            Cmd::Xfail(id.to_string(), parse_expect(&args[2..])?)
        }
        _ => return Err(format!("unknown command '{head}'")),
    };
    Ok(Some(cmd))
}

fn parse_expect(args: &[&str]) -> Result<Expect, String> {
    let what = args.first().ok_or("expect WHAT ...")?;
    let rest = &args[1..];
    Ok(match *what {
        "stable" => Expect::Stable,
        "live" => Expect::Live,
        "members" => Expect::Members { fs: fs_arg(rest.first())?, nodes: opt_node_list(&rest[1.min(rest.len())..])? },
        "jid" => Expect::Jid {
            fs: fs_arg(rest.first())?,
            node: node(rest.get(1).ok_or("expect jid FS NODE JID")?)?,
            jid: num(rest.get(2), "jid")?,
        },
        "reset" => Expect::Reset(opt_node_list(rest)?),
        "alive" => Expect::Alive(opt_node_list(rest)?),
        "fenced" => Expect::Fenced(opt_node_list(rest)?),
        "waiting" => {
            let fs = fs_arg(rest.first())?;
            let w = rest.get(1).ok_or("expect waiting FS WHAT [N]")?.to_string();
            const KINDS: [&str; 10] = [
                "nothing",
                "daemon",
                "quorum",
                "fencing",
                "starts",
                "first-mounter",
                "no-first-mounter",
                "recovery",
                "no-recoverer",
                "kernel",
            ];
            if !KINDS.contains(&w.as_str()) {
                return Err(format!("unknown wait '{w}' (one of {KINDS:?})"));
            }
            let arg = match rest.get(2) {
                Some(a) => Some(a.parse().map_err(|_| format!("bad argument '{a}'"))?),
                None => None,
            };
            Expect::Waiting { fs, what: w, arg }
        }
        "mounted" => Expect::Mounted { fs: fs_arg(rest.first())?, nodes: opt_node_list(&rest[1.min(rest.len())..])? },
        "blocked" => Expect::Blocked { fs: fs_arg(rest.first())?, nodes: opt_node_list(&rest[1.min(rest.len())..])? },
        "error" => {
            let kind = rest.get(2).ok_or("expect error FS NODE KIND")?.to_string();
            if !["no-free-journal", "kernel-failed", "too-many-groups", "incompatible"].contains(&kind.as_str()) {
                return Err(format!("unknown mount error '{kind}'"));
            }
            Expect::Error {
                fs: fs_arg(rest.first())?,
                node: node(rest.get(1).ok_or("expect error FS NODE KIND")?)?,
                kind,
            }
        }
        "first-mounter" => {
            Expect::FirstMounter { fs: fs_arg(rest.first())?, nodes: opt_node_list(&rest[1.min(rest.len())..])? }
        }
        "recovered" => {
            let fs = fs_arg(rest.first())?;
            let jid = num(rest.get(1), "jid")?;
            let by = match rest.get(2..) {
                Some(["by", n]) => Some(node(n)?),
                Some([]) | None => None,
                _ => return Err("expect recovered FS JID [by NODE]".into()),
            };
            Expect::Recovered { fs, jid, by }
        }
        "replays" => Expect::Replays { fs: fs_arg(rest.first())?, count: num(rest.get(1), "count")? },
        "merge-partitions" => Expect::MergePartitions(num(rest.first(), "count")?),
        // udp model: every running transport is in the view of its
        // connectivity component and has nothing pending.
        "vs-settled" => Expect::VsSettled,
        _ => return Err(format!("unknown expectation '{what}'")),
    })
}

pub fn parse(text: &str) -> Result<Vec<Line>, (usize, String)> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        match parse_line(l) {
            Ok(Some(cmd)) => out.push(Line { no: i + 1, text: l.trim().to_string(), cmd }),
            Ok(None) => {}
            Err(e) => return Err((i + 1, e)),
        }
    }
    Ok(out)
}

/// A failed scenario: where, what, and the trace around it.
#[derive(Debug)]
pub struct ScenarioError {
    pub file: String,
    pub line: usize,
    pub text: String,
    pub msg: String,
    pub violation: Option<Violation>,
    pub trace: String,
    pub seed: u64,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}:{}: `{}`: {} (seed {})", self.file, self.line, self.text, self.msg, self.seed)?;
        if let Some(v) = &self.violation {
            writeln!(f, "  {v}")?;
        }
        if !self.trace.is_empty() {
            writeln!(f, "  last events:")?;
            for l in self.trace.lines() {
                writeln!(f, "    {l}")?;
            }
        }
        Ok(())
    }
}

pub struct Report {
    pub notes: Vec<String>,
    pub trace_hash: u64,
    pub events: u64,
    pub steps: u64,
    pub sim_ms: u64,
}

/// Apply `drop N%`, `dup N%`, `reorder on|off` (udp model network).
pub fn net_knob(cfg: &mut SimConfig, text: &str) -> Result<(), String> {
    let words: Vec<&str> = text.split('#').next().unwrap_or("").split_whitespace().collect();
    let pct = |w: Option<&&str>| -> Result<u32, String> {
        let p = w.ok_or("missing percentage")?;
        p.trim_end_matches('%').parse::<u32>().ok().filter(|v| *v <= 100).ok_or(format!("bad percentage '{p}'"))
    };
    match words.first().copied() {
        Some("drop") => cfg.loss_pct = pct(words.get(1))?,
        Some("dup") => cfg.dup_pct = pct(words.get(1))?,
        Some("reorder") => cfg.reorder = words.get(1) == Some(&"on"),
        _ => return Err(format!("unknown network knob '{text}'")),
    }
    Ok(())
}

/// Apply a `set` knob to a configuration.
pub fn set_knob(cfg: &mut SimConfig, key: &str, val: &str, booted: bool) -> Result<(), String> {
    let boot_only = ["quorum", "ring_seq", "fence_retry_ms", "recovery_retry_ms", "heartbeat_ms", "fail_timeout_ms"];
    if booted && boot_only.contains(&key) {
        return Err(format!("'set {key}' must come before the cluster starts"));
    }
    let r = || parse_range(val);
    match key {
        "journals" => {
            let j: u16 = val.parse().map_err(|_| format!("bad journal count '{val}'"))?;
            if j == 0 || usize::from(j) > wire::MAX_JOURNALS {
                return Err(format!("journals must be 1..={}", wire::MAX_JOURNALS));
            }
            cfg.journals = j;
        }
        "quorum" => {
            cfg.quorum = match val {
                "majority" => QuorumMode::Majority,
                "two_node" => QuorumMode::TwoNode,
                "none" => QuorumMode::None,
                _ => return Err(format!("bad quorum mode '{val}' (majority|two_node|none)")),
            }
        }
        "ring_seq" => {
            cfg.seq_mode = match val {
                "corosync" => SeqMode::Corosync,
                "global" => SeqMode::Global,
                _ => return Err("ring_seq corosync|global".into()),
            }
        }
        "fence_action" => {
            cfg.fence_reboot = match val {
                "off" => false,
                "reboot" => true,
                _ => return Err("fence_action off|reboot".into()),
            }
        }
        "carryover" => {
            cfg.carryover = match val {
                "on" => true,
                "off" => false,
                _ => return Err("carryover on|off".into()),
            }
        }
        "fence_delay_ms" => cfg.fence_delay = r()?,
        "mount_delay_ms" => cfg.mount_delay = r()?,
        "recovery_delay_ms" => cfg.recovery_delay = r()?,
        "first_recovery_delay_ms" => cfg.first_recovery_delay = r()?,
        "restart_delay_ms" => cfg.restart_delay = r()?,
        "boot_delay_ms" => cfg.boot_delay = r()?,
        "ring_delay_ms" | "token_ms" => cfg.ring_delay = r()?,
        "quorum_delay_ms" => cfg.quorum_delay = r()?,
        "net_delay_ms" => cfg.net_delay = r()?,
        "jitter_ms" => cfg.jitter = r()?,
        "kill_delay_ms" => cfg.kill_delay = r()?,
        "fence_retry_ms" => cfg.fence_retry_ms = parse_ms(val)?,
        "recovery_retry_ms" => cfg.recovery_retry_ms = parse_ms(val)?,
        // udp model: the transport's heartbeat interval and failure timeout
        // (at least twice the heartbeat).
        "heartbeat_ms" => {
            let v = parse_ms(val)?;
            if v == 0 {
                return Err("heartbeat_ms must be > 0".into());
            }
            cfg.vs_heartbeat_ms = v;
        }
        "fail_timeout_ms" => cfg.vs_fail_ms = parse_ms(val)?,
        _ => return Err(format!("unknown knob '{key}'")),
    }
    Ok(())
}

/// Runs scenario commands against a lazily booted world (also used by the
/// swarm with generated commands).
pub struct Runner {
    pub cfg: SimConfig,
    pub world: Option<World>,
    pub seed: u64,
    pub live_trace: bool,
    /// Ignore commands that do not fit the current state (swarm).
    pub lenient: bool,
    pub notes: Vec<String>,
}

impl Runner {
    pub fn new(seed: u64, live_trace: bool) -> Runner {
        Runner { cfg: SimConfig::new(3), world: None, seed, live_trace, lenient: false, notes: Vec::new() }
    }

    pub fn with_config(cfg: SimConfig, seed: u64) -> Runner {
        Runner { cfg, world: None, seed, live_trace: false, lenient: true, notes: Vec::new() }
    }

    pub fn world(&mut self) -> Result<&mut World, String> {
        if self.world.is_none() {
            if self.cfg.model == Model::Udp
                && (self.cfg.vs_heartbeat_ms == 0 || self.cfg.vs_fail_ms < 2 * self.cfg.vs_heartbeat_ms)
            {
                return Err(format!(
                    "udp model: fail_timeout_ms ({}) must be at least twice heartbeat_ms ({})",
                    self.cfg.vs_fail_ms, self.cfg.vs_heartbeat_ms
                ));
            }
            let mut cfg = self.cfg.clone();
            cfg.live_trace = cfg.live_trace || self.live_trace;
            let mut w = World::new(cfg, self.seed);
            w.boot();
            // The cluster boots and settles before the first action.
            if !w.run_until_pred(60_000, 50, |w| w.settled()) && !w.halted {
                return Err(format!("the cluster did not come up within 60 s:\n{}", status_dump(&mut w)));
            }
            self.world = Some(w);
        }
        Ok(self.world.as_mut().expect("just made"))
    }

    fn check_nodes(&self, ns: &[u32]) -> Result<(), String> {
        for n in ns {
            if *n > self.cfg.nodes {
                return Err(format!("node {n} does not exist (nodes {})", self.cfg.nodes));
            }
        }
        Ok(())
    }

    /// Execute one command. `Err` = the scenario fails here.
    pub fn exec(&mut self, cmd: &Cmd, text: &str) -> Result<(), String> {
        match cmd {
            Cmd::Nodes(n) => {
                if self.world.is_some() {
                    return Err("'nodes' must come before the cluster starts".into());
                }
                self.cfg.nodes = *n;
                return Ok(());
            }
            Cmd::Model(m) => {
                if self.world.is_some() {
                    return Err("'model' must come before the cluster starts".into());
                }
                self.cfg.model = *m;
                return Ok(());
            }
            Cmd::Set(k, v) if k == "lenient" => {
                self.lenient = v == "on";
                return Ok(());
            }
            Cmd::Set(k, v) => {
                let booted = self.world.is_some();
                set_knob(&mut self.cfg, k, v, booted)?;
                if let Some(w) = self.world.as_mut() {
                    set_knob(&mut w.cfg, k, v, true)?;
                }
                return Ok(());
            }
            Cmd::NetKnob(t) => {
                // Kept in both models; only the udp model's network uses them.
                net_knob(&mut self.cfg, t)?;
                if let Some(w) = self.world.as_mut() {
                    net_knob(&mut w.cfg, t)?;
                }
                if self.cfg.model == Model::Corosync {
                    self.notes
                        .push(format!("'{t}' ignored: the corosync model delivers every message, in agreed order"));
                }
                return Ok(());
            }
            _ => {}
        }
        let lenient = self.lenient;
        let nodes_of = match cmd {
            Cmd::Mount { nodes, .. }
            | Cmd::Unmount { nodes, .. }
            | Cmd::UnmountEarly { nodes, .. }
            | Cmd::Remount { nodes, .. }
            | Cmd::Isolate(nodes)
            | Cmd::Crash(nodes)
            | Cmd::Restart(nodes)
            | Cmd::Pause(nodes)
            | Cmd::Resume(nodes)
            | Cmd::KillTransport(nodes)
            | Cmd::KillDaemon(nodes) => nodes.clone(),
            Cmd::Partition(g) => g.iter().flatten().copied().collect(),
            Cmd::Cut(v) => v.iter().flat_map(|(a, b)| [*a, *b]).collect(),
            Cmd::FenceFail { node, .. }
            | Cmd::FenceDelay { node, .. }
            | Cmd::RecoveryFail { node, .. }
            | Cmd::MountErrorInj { node, .. }
            | Cmd::Withdraw { node, .. } => vec![*node],
            _ => vec![],
        };
        self.check_nodes(&nodes_of)?;
        let journals = self.cfg.journals;
        let w = self.world()?;
        if !matches!(cmd, Cmd::Expect(_) | Cmd::Xfail(..) | Cmd::Run(_) | Cmd::RunUntilStable(_) | Cmd::RunUntilLive(_))
        {
            w.trace(0, What::Cmd(text.into()));
        }
        let soft = |r: Result<(), String>| if lenient { Ok(()) } else { r };
        match cmd {
            Cmd::Mount { fs, nodes, mode } => {
                for n in nodes {
                    let name = wire::fs_name(fs).map_err(|e| format!("{e:?}"))?;
                    soft(w.request(*n, Request::Mount { fs: name, mode: *mode, journals }))?;
                }
            }
            Cmd::Unmount { fs, nodes } => {
                for n in nodes {
                    let name = wire::fs_name(fs).map_err(|e| format!("{e:?}"))?;
                    soft(w.request(*n, Request::Unmount { fs: name }))?;
                }
            }
            Cmd::UnmountEarly { fs, nodes } => {
                for n in nodes {
                    soft(w.unmount_early(*n, fs))?;
                }
            }
            Cmd::Remount { fs, nodes, mode } => {
                for n in nodes {
                    let name = wire::fs_name(fs).map_err(|e| format!("{e:?}"))?;
                    soft(w.request(*n, Request::Remount { fs: name, mode: *mode }))?;
                }
            }
            Cmd::Partition(groups) => w.partition(groups),
            Cmd::Isolate(ns) => {
                for n in ns {
                    w.isolate(*n);
                }
            }
            Cmd::Cut(v) => {
                if w.cfg.model != Model::Udp {
                    return Err("'cut' (one-way) needs model udp".into());
                }
                for (a, b) in v {
                    w.cut(*a, *b);
                }
            }
            Cmd::Heal => w.heal(),
            Cmd::HealAll => w.heal_all(),
            Cmd::Crash(ns) => ns.iter().for_each(|n| w.crash(*n)),
            Cmd::Restart(ns) => ns.iter().for_each(|n| w.restart(*n)),
            Cmd::Pause(ns) => ns.iter().for_each(|n| w.pause(*n)),
            Cmd::Resume(ns) => ns.iter().for_each(|n| w.resume(*n)),
            Cmd::KillTransport(ns) => ns.iter().for_each(|n| w.kill_transport(*n)),
            Cmd::KillDaemon(ns) => ns.iter().for_each(|n| w.kill_daemon(*n, "killed by operator")),
            Cmd::FenceFail { node, times } => w.nodes[*node as usize].inj.fence_fail = *times,
            Cmd::FenceDelay { node, ms } => w.nodes[*node as usize].inj.fence_extra_ms = *ms,
            Cmd::RecoveryFail { fs, node, times } => {
                w.nodes[*node as usize].inj.recovery_fail.insert(fs.clone(), *times);
            }
            Cmd::MountErrorInj { fs, node, times } => {
                w.nodes[*node as usize].inj.mount_error.insert(fs.clone(), *times);
            }
            Cmd::Withdraw { fs, node } => soft(w.withdraw(fs, *node))?,
            Cmd::Delay(r) => w.cfg.net_delay = *r,
            Cmd::Run(ms) => {
                let t = w.now + ms;
                w.run_until(t);
            }
            Cmd::RunUntilStable(max) => {
                let ok = w.run_until_pred(*max, 50, |w| w.settled());
                if !ok && !w.halted {
                    return Err(format!("not stable after {} ms:\n{}", max, status_dump(w)));
                }
            }
            Cmd::RunUntilLive(max) => {
                let mut last = String::new();
                let ok = w.run_until_pred(*max, 100, |w| match invariants::liveness::check(w) {
                    Ok(()) => true,
                    Err(e) => {
                        last = e;
                        false
                    }
                });
                if !ok && !w.halted {
                    return Err(format!("not live after {max} ms: {last}\n{}", status_dump(w)));
                }
            }
            Cmd::Expect(e) => expect(w, e)?,
            Cmd::Xfail(id, e) => {
                let note = match expect(w, e) {
                    Ok(()) => format!(
                        "`{text}` holds with this seed ({id} may be seed-dependent; remove the xfail once it is fixed)"
                    ),
                    Err(m) => {
                        format!("known core bug {id}: `{text}` does not hold: {}", m.lines().next().unwrap_or(""))
                    }
                };
                self.notes.push(note);
            }
            Cmd::Nodes(_) | Cmd::Model(_) | Cmd::Set(..) | Cmd::NetKnob(_) => unreachable!("handled above"),
        }
        Ok(())
    }
}

/// Every live daemon's status, one line per group.
pub fn status_dump(w: &mut World) -> String {
    let mut s = String::new();
    for n in w.node_ids().collect::<Vec<_>>() {
        let node = &w.nodes[n as usize];
        let state = format!(
            "powered={} paused={} transport_dead={} boot={}",
            node.powered, node.paused, node.transport_dead, node.boot
        );
        let kernel: Vec<String> = node
            .kernel
            .iter()
            .map(|(fs, k)| {
                format!("{fs}:{:?}/jid={:?}/blocked={}/withdrawn={}", k.phase, k.jid, k.blocked, k.withdrawn)
            })
            .collect();
        if let Some(v) = w.nodes[n as usize].vs.as_ref() {
            let (view, st) = (v.view(), v.stats());
            s.push_str(&format!(
                "  node {n} vs: view {:#x} members {:?}, send window free {}, queued {}; in {} out {} delivered {} views {} retransmits {} data_retransmits {} naks {} flush_repairs {} window_drops {} backpressure {} replayed {} stale_inc {} frag dropped/deferred {}/{}\n",
                view.id,
                view.members.iter().map(|m| m.0).collect::<Vec<_>>(),
                v.send_capacity(),
                w.nodes[n as usize].outq.len(),
                st.datagrams_in,
                st.datagrams_out,
                st.delivered,
                st.views_installed,
                st.retransmits,
                st.data_retransmits,
                st.naks_sent,
                st.flush_repairs,
                st.window_drops,
                st.backpressure,
                st.replayed,
                st.stale_incarnation,
                st.frag_dropped_view_change,
                st.frag_deferred,
            ));
        }
        match w.status_clone(n) {
            None => s.push_str(&format!("  node {n}: no daemon ({state}) kernel {kernel:?}\n")),
            Some(st) => {
                s.push_str(&format!(
                    "  node {n} inc {} gen {}.{} anchored={} quorate={:?} daemon={:?} fencing={:?} peers={:?} ({state}) kernel {kernel:?}\n",
                    st.incarnation.0,
                    st.generation.ring,
                    st.generation.epoch,
                    st.anchored,
                    st.quorate,
                    st.daemon,
                    st.fencing.iter().map(|f| (f.target.node.0, f.attempts, f.actor.map(|a| a.0))).collect::<Vec<_>>(),
                    st.members.iter().map(|p| (p.node.0, p.inc.map(|i| i.0), p.stale)).collect::<Vec<_>>(),
                ));
                for g in st.groups.iter() {
                    s.push_str(&format!(
                        "    {} gen {}.{} synced={} first_done={} blocked={} wait={:?} members={:?} recoveries={:?}\n",
                        g.fs,
                        g.generation.ring,
                        g.generation.epoch,
                        g.synced,
                        g.first_done,
                        g.blocked,
                        g.wait,
                        g.members.iter().map(|m| (m.node.0, m.jid.map(|j| j.0), m.mounted)).collect::<Vec<_>>(),
                        g.recoveries.iter().map(|(j, a)| (j.0, *a)).collect::<Vec<_>>(),
                    ));
                }
            }
        }
    }
    s
}

fn set_eq(label: &str, got: &BTreeSet<u32>, want: &[u32]) -> Result<(), String> {
    let want: BTreeSet<u32> = want.iter().copied().collect();
    if *got != want {
        return Err(format!("{label}: expected {:?}, got {:?}", want, got));
    }
    Ok(())
}

fn wait_matches(w: &GroupWait, what: &str, arg: Option<u32>) -> bool {
    match (w, what) {
        (GroupWait::Nothing, "nothing") => true,
        (GroupWait::DaemonSync, "daemon") => true,
        (GroupWait::Quorum, "quorum") => true,
        (GroupWait::Fencing(n), "fencing") => arg.is_none_or(|a| a == n.0),
        (GroupWait::Starts(_), "starts") => true,
        (GroupWait::FirstMounter(n), "first-mounter") => arg.is_none_or(|a| a == n.0),
        (GroupWait::NoFirstMounter, "no-first-mounter") => true,
        (GroupWait::Recovery(j), "recovery") => arg.is_none_or(|a| a == u32::from(j.0)),
        (GroupWait::NoRecoverer(j), "no-recoverer") => arg.is_none_or(|a| a == u32::from(j.0)),
        (GroupWait::Kernel, "kernel") => true,
        _ => false,
    }
}

pub fn expect(w: &mut World, e: &Expect) -> Result<(), String> {
    let alive: Vec<u32> = w.alive();
    match e {
        Expect::Stable => {
            for n in alive {
                if w.nodes[n as usize].paused {
                    continue;
                }
                let st = w.status_clone(n).ok_or("no status")?;
                if !st.is_stable() {
                    return Err(format!("node {n} is not stable:\n{}", status_dump(w)));
                }
            }
        }
        Expect::Live => invariants::liveness::check(w).map_err(|m| format!("not live: {m}\n{}", status_dump(w)))?,
        Expect::Members { fs, nodes } => {
            let mut holders = BTreeSet::new();
            for n in alive {
                let st = w.status_clone(n).ok_or("no status")?;
                if let Some(g) = st.group(fs) {
                    holders.insert(n);
                    let members: BTreeSet<u32> = g.members.iter().map(|m| m.node.0).collect();
                    set_eq(&format!("members of {fs} as node {n} sees them"), &members, nodes)
                        .map_err(|m| format!("{m}\n{}", status_dump(w)))?;
                }
            }
            set_eq(&format!("nodes with a {fs} group"), &holders, nodes)
                .map_err(|m| format!("{m}\n{}", status_dump(w)))?;
        }
        Expect::Jid { fs, node, jid } => {
            for n in alive {
                let st = w.status_clone(n).ok_or("no status")?;
                if let Some(g) = st.group(fs) {
                    let m = g.members.iter().find(|m| m.node.0 == *node);
                    if m.and_then(|m| m.jid).map(|j| j.0) != Some(*jid) {
                        return Err(format!(
                            "node {n} sees node {node} in {fs} with {:?}, expected jid {jid}",
                            m.map(|m| m.jid)
                        ));
                    }
                }
            }
            let k = w.nodes[*node as usize].kernel.get(fs);
            if k.and_then(|k| k.holds()) != Some(*jid) {
                return Err(format!(
                    "node {node}'s kernel holds {:?} of {fs}, expected jid {jid}",
                    k.and_then(|k| k.holds())
                ));
            }
        }
        Expect::Reset(ns) => {
            let got = std::mem::take(&mut w.log.resets);
            set_eq("nodes reset", &got, ns)?;
        }
        Expect::Fenced(ns) => {
            let got = std::mem::take(&mut w.log.fenced);
            set_eq("nodes fenced", &got, ns)?;
        }
        Expect::Alive(ns) => set_eq("nodes with a running daemon", &alive.into_iter().collect(), ns)?,
        Expect::Waiting { fs, what, arg } => {
            let mut seen = Vec::new();
            for n in alive {
                let st = w.status_clone(n).ok_or("no status")?;
                if let Some(g) = st.group(fs) {
                    if wait_matches(&g.wait, what, *arg) {
                        return Ok(());
                    }
                    seen.push((n, g.wait));
                }
            }
            return Err(format!(
                "no member of {fs} waits for {what}{}; waits: {seen:?}",
                arg.map(|a| format!(" {a}")).unwrap_or_default()
            ));
        }
        Expect::Mounted { fs, nodes } => {
            let got: BTreeSet<u32> = w
                .nodes
                .iter()
                .skip(1)
                .filter(|n| {
                    n.powered
                        && n.kernel.get(fs).is_some_and(|k| k.phase == crate::kernel::KPhase::Mounted && !k.withdrawn)
                })
                .map(|n| n.id)
                .collect();
            set_eq(&format!("nodes with {fs} mounted in the kernel"), &got, nodes)?;
        }
        Expect::Blocked { fs, nodes } => {
            let got: BTreeSet<u32> = w
                .nodes
                .iter()
                .skip(1)
                .filter(|n| n.powered && n.kernel.get(fs).is_some_and(|k| k.blocked))
                .map(|n| n.id)
                .collect();
            set_eq(&format!("nodes with {fs} blocked in the kernel"), &got, nodes)?;
        }
        Expect::Error { fs, node, kind } => {
            let want = match kind.as_str() {
                "no-free-journal" => MountError::NoFreeJournal,
                "kernel-failed" => MountError::KernelFailed,
                "too-many-groups" => MountError::TooManyGroups,
                "lost-in-merge" => MountError::LostInMerge,
                "name-collision" => MountError::NameCollision,
                "replays-pending" => MountError::ReplaysPending,
                _ => MountError::Incompatible,
            };
            if !w.log.mount_errors.iter().any(|(n, f, e)| n == node && f == fs && *e == want) {
                return Err(format!(
                    "node {node} got no {kind} error for {fs}; errors so far: {:?}",
                    w.log.mount_errors
                ));
            }
        }
        Expect::FirstMounter { fs, nodes } => {
            let got = w.log.first_mounters.get(fs).cloned().unwrap_or_default();
            if got != *nodes {
                return Err(format!("first mounters of {fs}: expected {nodes:?}, got {got:?}"));
            }
        }
        Expect::Recovered { fs, jid, by } => {
            if !w.log.recovered.iter().any(|(f, j, b)| f == fs && j == jid && by.is_none_or(|x| x == *b)) {
                return Err(format!(
                    "journal {jid} of {fs} was not replayed{}; replays: {:?}",
                    by.map(|b| format!(" by node {b}")).unwrap_or_default(),
                    w.log.recovered
                ));
            }
        }
        Expect::Replays { fs, count } => {
            let got = w.log.recovered.iter().filter(|(f, _, _)| f == fs).count();
            if got != *count {
                return Err(format!(
                    "successful journal replays of {fs}: expected {count}, got {got}: {:?}",
                    w.log.recovered
                ));
            }
        }
        Expect::VsSettled => {
            if w.cfg.model != Model::Udp {
                return Err("'expect vs-settled' needs model udp".into());
            }
            if let Err(m) = w.udp_check_settled() {
                return Err(format!("transport not settled: {m}\n{}", status_dump(w)));
            }
        }
        Expect::MergePartitions(k) => {
            let got = std::mem::take(&mut w.log.merge_partitions_max);
            if got != *k {
                return Err(format!("largest merge resolved: {got} partitions, expected {k}"));
            }
        }
    }
    Ok(())
}

/// Run a scenario text. `Err` names the line that failed.
pub fn run_text(file: &str, text: &str, seed: u64, live_trace: bool) -> Result<Report, Box<ScenarioError>> {
    // A counterexample of `cohort-sim check` (explorer steps).
    let first = text.lines().map(|l| l.split('#').next().unwrap_or("").trim()).find(|l| !l.is_empty());
    if first.is_some_and(|l| l.starts_with("explore ")) {
        return crate::explore::run_text(file, text, seed);
    }
    let lines = parse(text).map_err(|(line, msg)| {
        Box::new(ScenarioError {
            file: file.into(),
            line,
            text: text.lines().nth(line - 1).unwrap_or("").trim().into(),
            msg,
            violation: None,
            trace: String::new(),
            seed,
        })
    })?;
    let mut r = Runner::new(seed, live_trace);
    for l in lines.iter() {
        let res = r.exec(&l.cmd, &l.text);
        let (violation, trace) = match r.world.as_ref() {
            Some(w) if w.halted => (w.violations.first().cloned(), w.trace.dump(&w.fs_names)),
            Some(w) if res.is_err() => (None, w.trace.dump(&w.fs_names)),
            _ => (None, String::new()),
        };
        if let Some(v) = violation {
            return Err(Box::new(ScenarioError {
                file: file.into(),
                line: l.no,
                text: l.text.clone(),
                msg: format!("safety violation: {}", v.property.name()),
                violation: Some(v),
                trace,
                seed,
            }));
        }
        if let Err(msg) = res {
            return Err(Box::new(ScenarioError {
                file: file.into(),
                line: l.no,
                text: l.text.clone(),
                msg,
                violation: None,
                trace,
                seed,
            }));
        }
    }
    let w = r.world.as_ref();
    Ok(Report {
        notes: r.notes.clone(),
        trace_hash: w.map_or(0, |w| w.trace_hash()),
        events: w.map_or(0, |w| w.events),
        steps: w.map_or(0, |w| w.steps),
        sim_ms: w.map_or(0, |w| w.now),
    })
}

pub fn run_file(path: &str, seed: u64, live_trace: bool) -> Result<Report, Box<ScenarioError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Box::new(ScenarioError {
            file: path.into(),
            line: 0,
            text: String::new(),
            msg: format!("cannot read: {e}"),
            violation: None,
            trace: String::new(),
            seed,
        })
    })?;
    run_text(path, &text, seed, live_trace)
}

/// For the proofs that the checkers bite: run a scenario of
/// `tests/scenarios/` that must fail with one of `props`; panics otherwise.
pub fn must_violate(file: &str, seed: u64, props: &[crate::Property]) -> crate::Violation {
    let path = format!("{}/scenarios/{file}", env!("CARGO_MANIFEST_DIR"));
    let e = match run_file(&path, seed, false) {
        Ok(_) => panic!("{file} seed {seed} passed: the checkers do not bite"),
        Err(e) => e,
    };
    let v = e.violation.clone().unwrap_or_else(|| panic!("{file} seed {seed} failed without a violation: {e}"));
    assert!(props.contains(&v.property), "{file} seed {seed}: unexpected property {}: {e}", v.property.name());
    println!("{file} seed {seed}: {v}");
    v
}
