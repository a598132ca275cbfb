//! `cohort-sim`: run scenario files or a seeded swarm.
//!
//! ```text
//! cohort-sim scenario FILE... [--seed N] [--trace]
//! cohort-sim swarm --seeds A..B [--nodes 3..7] [--model corosync|udp] [--jobs N]
//!                  [--verbose] [--emit] [--trace] [--stagger-mounts] [--tables]
//! ```
//!
//! `--stagger-mounts` is a marked workaround for CORE-BUG-2 (see
//! tests/CORE_BUGS.md): initial mounts of a filesystem are staggered so the
//! first mounter finishes alone, letting the swarm explore past that bug.
//!
//! ```text
//! cohort-sim check [--nodes 3] [--faults 2] [--depth 30] [--max-states N] [--no-ops] [--no-early-unmount] [--two-node] [--mounted] [--no-kernel-faults] [--kill-daemon] [--no-liveness] [--cex K] [--cex-file PATH] [--plant BUG]
//! cohort-sim check --model udp [--nodes 3] [--faults 1] [--depth 8] [--loss 1] [--dup 1] [--msgs 1] [--late 3]
//!                  [--max-states N] [--cex K] [--no-liveness] [--all-datagrams] [--no-restart] [--early-faults] [--early-sends]
//! ```
//!
//! `check` explores every interleaving of the model's choice points within
//! the bounds (see `src/explore.rs`; `--model udp`: the view-change protocol
//! of the real `Vs` transports, see `src/explore_vs.rs`) and exits 1 on a
//! counterexample.
//!
//! Exit status: 0 all good, 1 a scenario/seed failed, 2 usage error,
//! 3 unsupported model.

use cohort_sim::scenario;
use cohort_sim::swarm::{self, Outcome, SeedResult};
use cohort_sim::world::Model;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  cohort-sim scenario FILE... [--seed N] [--trace]\n  cohort-sim swarm --seeds A..B [--nodes 3..7] [--model corosync|udp] [--jobs N] [--verbose] [--emit] [--trace] [--stagger-mounts] [--tables]\n  cohort-sim check [--nodes 3] [--faults 2] [--depth 30] [--max-states N] [--no-ops] [--no-early-unmount] [--two-node] [--mounted] [--no-kernel-faults] [--kill-daemon] [--no-liveness] [--cex K] [--cex-file PATH] [--plant BUG]\n  cohort-sim check --model udp [--nodes 3] [--faults 1] [--depth 8] [--loss 1] [--dup 1] [--msgs 1] [--late 3] [--max-states N] [--cex K] [--no-liveness] [--all-datagrams] [--no-restart] [--early-faults] [--early-sends]"
    );
    ExitCode::from(2)
}

fn parse_span(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once("..")?;
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    (b >= a).then_some((a, b))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("scenario") => scenario_cmd(&args[1..]),
        Some("swarm") => swarm_cmd(&args[1..]),
        Some("check") => check_cmd(&args[1..]),
        _ => usage(),
    }
}

fn scenario_cmd(args: &[String]) -> ExitCode {
    let mut files = Vec::new();
    let mut seed = 1u64;
    let mut trace = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--seed" => {
                i += 1;
                match args.get(i).and_then(|s| s.parse().ok()) {
                    Some(s) => seed = s,
                    None => return usage(),
                }
            }
            "--trace" => trace = true,
            f if !f.starts_with("--") => files.push(f.to_string()),
            _ => return usage(),
        }
        i += 1;
    }
    if files.is_empty() {
        return usage();
    }
    let mut failed = 0;
    for f in &files {
        match scenario::run_file(f, seed, trace) {
            Ok(r) => {
                println!(
                    "ok   {f} (seed {seed}, {} events, {} steps, {}.{:03}s simulated, trace hash {:016x})",
                    r.events,
                    r.steps,
                    r.sim_ms / 1000,
                    r.sim_ms % 1000,
                    r.trace_hash
                );
                for n in &r.notes {
                    println!("     note: {n}");
                }
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {e}");
                if e.msg.contains("model udp is not supported") {
                    return ExitCode::from(3);
                }
            }
        }
    }
    if failed > 0 {
        println!("{failed} of {} scenario(s) failed", files.len());
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn swarm_cmd(args: &[String]) -> ExitCode {
    let mut seeds = None;
    let mut nodes = (3u32, 7u32);
    let mut jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut verbose, mut emit, mut trace) = (false, false, false);
    let mut opts = swarm::Options::default();
    let mut i = 0;
    while i < args.len() {
        let val = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--seeds" => {
                seeds = parse_span(&val);
                if seeds.is_none() {
                    eprintln!("--seeds wants A..B (B exclusive), e.g. 0..2000");
                    return usage();
                }
                i += 1;
            }
            "--nodes" => {
                match parse_span(&val).or_else(|| val.parse().ok().map(|n| (n, n))) {
                    Some((a, b)) if a >= 1 && b <= 32 => nodes = (a as u32, b as u32),
                    _ => {
                        eprintln!("--nodes wants A..B within 1..32 (inclusive)");
                        return usage();
                    }
                }
                i += 1;
            }
            "--model" => {
                opts.model = match val.as_str() {
                    "corosync" => Model::Corosync,
                    "udp" => Model::Udp,
                    _ => return usage(),
                };
                i += 1;
            }
            "--jobs" => {
                match val.parse() {
                    Ok(j) if j >= 1 => jobs = j,
                    _ => return usage(),
                }
                i += 1;
            }
            "--verbose" => verbose = true,
            "--stagger-mounts" => opts.stagger_mounts = true,
            "--tables" => opts.tables = true,
            "--emit" => emit = true,
            "--trace" => trace = true,
            _ => return usage(),
        }
        i += 1;
    }
    let Some((a, b)) = seeds else { return usage() };
    if let Err(e) = swarm::model_supported(opts.model) {
        eprintln!("{e}");
        return ExitCode::from(3);
    }
    if emit {
        for s in a..b {
            print!("{}", swarm::plan_with(s, nodes, opts).to_scenario());
        }
        return ExitCode::SUCCESS;
    }
    let t0 = Instant::now();
    let next = AtomicU64::new(a);
    let results: Mutex<Vec<SeedResult>> = Mutex::new(Vec::new());
    let jobs = if trace { 1 } else { jobs.min((b - a).max(1) as usize) };
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let s = next.fetch_add(1, Ordering::Relaxed);
                if s >= b {
                    break;
                }
                let r = swarm::run_seed_with(s, nodes, trace, opts);
                results.lock().expect("no poisoning").push(r);
            });
        }
    });
    let mut results = results.into_inner().expect("no poisoning");
    results.sort_by_key(|r| r.seed);
    let (mut violations, mut stalls, mut events, mut steps) = (0u64, 0u64, 0u64, 0u64);
    let mut totals = cohort_sim::world::Totals::default();
    for r in &results {
        events += r.events;
        steps += r.steps;
        totals.add(&r.totals);
        match &r.outcome {
            Outcome::Ok => {}
            Outcome::Violation(v) => {
                violations += 1;
                println!("seed={} violation {}: {}", r.seed, v.property.name(), v.msg);
            }
            Outcome::Stall(m) => {
                stalls += 1;
                let first = m.lines().next().unwrap_or("");
                println!("seed={} stall: {first}", r.seed);
            }
            Outcome::Error(m) => {
                stalls += 1;
                let first = m.lines().next().unwrap_or("");
                println!("seed={} simulator error: {first}", r.seed);
            }
        }
        if verbose && !matches!(r.outcome, Outcome::Ok) {
            if let Outcome::Stall(m) = &r.outcome {
                println!("{m}");
            }
            println!("  last events of seed {}:", r.seed);
            for l in r.trace.lines() {
                println!("    {l}");
            }
            let model = if opts.model == Model::Udp { " --model udp" } else { "" };
            println!("  replay: cohort-sim swarm --seeds {}..{} --nodes {}..{}{model} --emit > s.txt && cohort-sim scenario s.txt --seed {} --trace", r.seed, r.seed + 1, nodes.0, nodes.1, r.seed);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let n = results.len() as u64;
    eprintln!(
        "swarm: {n} seeds in {secs:.1}s = {:.1} seeds/s on {jobs} thread(s); {events} events, {steps} node steps",
        n as f64 / secs.max(1e-9)
    );
    let t = totals;
    eprintln!(
        "coverage: {} rings formed, {} group syncs, {} first mounts, {} replays ok / {} failed, {} fences ok / {} failed, {} stale-merge verdicts, {} resets, {} mount errors",
        t.rings, t.group_syncs, t.first_mounts, t.replays_ok, t.replays_failed, t.fences_ok, t.fences_failed, t.stale_merge_verdicts, t.resets, t.mount_errors
    );
    if opts.model == Model::Udp {
        eprintln!("udp: {} views installed", t.views);
    }
    println!("seeds={n} violations={violations} stalls={stalls}");
    if violations + stalls > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn check_cmd(args: &[String]) -> ExitCode {
    match args.iter().position(|a| a == "--model").map(|i| args.get(i + 1).map(String::as_str)) {
        None | Some(Some("corosync")) => {}
        Some(Some("udp")) => return check_udp_cmd(args),
        _ => return usage(),
    }
    let args: Vec<String> = match args.iter().position(|a| a == "--model") {
        Some(i) => args[..i].iter().chain(&args[i + 2..]).cloned().collect(),
        None => args.to_vec(),
    };
    let args = &args[..];
    let mut o = cohort_sim::explore::Options::default();
    let mut cex_file = None;
    let mut i = 0;
    while i < args.len() {
        // Flags without a value.
        let flag: Option<fn(&mut cohort_sim::explore::Options)> = match args[i].as_str() {
            "--no-ops" => Some(|o| o.ops = false),
            "--no-early-unmount" => Some(|o| o.early_unmount = false),
            "--two-node" => Some(|o| o.two_node = true),
            "--no-kernel-faults" => Some(|o| o.kernel_faults = false),
            "--mounted" => Some(|o| o.mounted = true),
            "--no-liveness" => Some(|o| o.liveness = false),
            "--kill-daemon" => Some(|o| o.kill_daemon = true),
            _ => None,
        };
        if let Some(set) = flag {
            set(&mut o);
            i += 1;
            continue;
        }
        let val = args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (args[i].as_str(), val) {
            ("--nodes", Some(n)) if (1..=6).contains(&n) => o.nodes = n as u32,
            ("--faults", Some(n)) => o.faults = n as u32,
            ("--depth", Some(n)) => o.depth = n as u32,
            ("--max-states", Some(n)) => o.max_states = n,
            ("--cex", Some(n)) if n >= 1 => o.max_cex = n as usize,
            ("--cex-file", _) if i + 1 < args.len() => {
                cex_file = Some(args[i + 1].clone());
            }
            ("--plant", _) if i + 1 < args.len() => {
                if let Err(e) = plant(&args[i + 1]) {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            }
            _ => return usage(),
        }
        i += 2;
    }
    if o.two_node && o.nodes != 2 {
        eprintln!("--two-node needs --nodes 2");
        return ExitCode::from(2);
    }
    let r = cohort_sim::explore::check(&o);
    for c in &r.counterexamples {
        println!("{}", c.render());
    }
    if let (Some(path), Some(c)) = (&cex_file, r.counterexamples.first()) {
        if let Err(e) = std::fs::write(path, c.render()) {
            eprintln!("{path}: {e}");
        } else {
            println!("counterexample written to {path} (replay: cohort-sim scenario {path} --trace)");
        }
    }
    println!(
        "check: nodes={}{}{} faults<={} depth<={}: {} transitions explored, {} distinct states, max depth {}, {} terminal, {} liveness checks, {} 3-way merges, {:.1}s{}",
        o.nodes,
        if o.two_node { " (two_node)" } else { "" },
        if o.mounted { " (start: fs1 mounted)" } else { "" },
        o.faults,
        o.depth,
        r.explored,
        r.distinct,
        r.max_depth,
        r.terminal,
        r.live_checked,
        r.merges3,
        r.secs,
        if r.truncated { " (TRUNCATED at --max-states)" } else { "" }
    );
    verdict(r.counterexamples.len())
}

/// `--plant BUG`: plant one of the core's test-only bugs (feature `planted`).
#[cfg(feature = "planted")]
fn plant(name: &str) -> Result<(), String> {
    use cohort_core::planted::{self, Bug};
    let bug = Bug::ALL
        .into_iter()
        .find(|b| format!("{b:?}").eq_ignore_ascii_case(name))
        .ok_or_else(|| format!("--plant: one of {:?}", Bug::ALL))?;
    planted::plant(Some(bug));
    Ok(())
}

#[cfg(not(feature = "planted"))]
fn plant(_name: &str) -> Result<(), String> {
    Err("--plant needs a build with `--features planted`".into())
}

fn check_udp_cmd(args: &[String]) -> ExitCode {
    let mut o = cohort_sim::explore_vs::Options::default();
    let mut i = 0;
    while i < args.len() {
        let val = args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        let flag = |o: &mut cohort_sim::explore_vs::Options, f: &str| match f {
            "--no-liveness" => o.liveness = false,
            "--all-datagrams" => o.all_datagrams = true,
            "--no-restart" => o.restart = false,
            "--early-faults" => o.late_faults = false,
            "--early-sends" => o.late_sends = false,
            _ => {}
        };
        match (args[i].as_str(), val) {
            ("--model", _) if args.get(i + 1).is_some_and(|m| m == "udp") => {}
            ("--nodes", Some(n)) if (2..=5).contains(&n) => o.nodes = n as u32,
            ("--faults", Some(n)) => o.faults = n as u32,
            ("--depth", Some(n)) => o.depth = n as u32,
            ("--loss", Some(n)) => o.loss = n as u32,
            ("--dup", Some(n)) => o.dup = n as u32,
            ("--msgs", Some(n)) => o.msgs = n as u32,
            ("--late", Some(n)) => o.late = n as u32,
            ("--max-states", Some(n)) => o.max_states = n,
            ("--cex", Some(n)) if n >= 1 => o.max_cex = n as usize,
            (f @ ("--no-liveness" | "--all-datagrams" | "--no-restart" | "--early-faults" | "--early-sends"), _) => {
                flag(&mut o, f);
                i += 1;
                continue;
            }
            _ => return usage(),
        }
        i += 2;
    }
    let r = cohort_sim::explore_vs::check(&o);
    for c in &r.counterexamples {
        println!("{}", c.render());
    }
    println!(
        "check --model udp: nodes={} faults<={} depth<={} loss<={} dup<={} msgs<={} late<={}{}: {} transitions explored, {} distinct states, max depth {}, {} leaves{}, {} view installs, {:.1}s{}",
        o.nodes,
        o.faults,
        o.depth,
        o.loss,
        o.dup,
        o.msgs,
        o.late,
        if o.liveness { "" } else { " (no liveness)" },
        r.explored,
        r.distinct,
        r.max_depth,
        r.leaves,
        if o.liveness { format!(" (each settled within {} ms)", r.settle_ms_max) } else { String::new() },
        r.views,
        r.secs,
        if r.truncated { " (TRUNCATED at --max-states)" } else { "" }
    );
    verdict(r.counterexamples.len())
}

/// The last line of a check and its exit code: 1 with a counterexample.
fn verdict(counterexamples: usize) -> ExitCode {
    println!("counterexamples={counterexamples}");
    if counterexamples == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
