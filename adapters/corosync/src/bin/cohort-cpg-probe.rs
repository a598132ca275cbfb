//! cohort-cpg-probe: connect to the local corosync through cohort-corosync,
//! print every event as one JSON line on stdout, optionally multicast
//! messages, exit after a time limit.
//!
//! ```text
//! cohort-cpg-probe [--group NAME (default cohort-probe, not the daemon's group)] [--duration SECS] [--send N]
//!                  [--send-when-members M] [--size BYTES] [--gap-us US]
//! ```
//!
//! `--send N` multicasts N messages `n<node>-<index:06>` (padded with dots to
//! `--size`) once a confchg shows at least `--send-when-members` members,
//! pausing `--gap-us` between messages (while still dispatching).
//!
//! Lines (all carry `mono_ms`, CLOCK_MONOTONIC in ms, comparable across
//! processes on the host):
//! `{"ev":"connected","node":1,"group":"cohort-probe",...}`,
//! `{"ev":"ring","ring":13,"members":[1,2,3],...}`,
//! `{"ev":"confchg","members":[1,2],"joined":[],"left":[[3,"NodeDown"]],...}`,
//! `{"ev":"quorum","ring":13,"quorate":true,"members":[1,2,3],...}`,
//! `{"ev":"deliver","from":1,"pid":42,"payload":"n1-000001",...}`,
//! `{"ev":"sent","count":N,...}`, `{"ev":"error","stage":..,"kind":..,"msg":..}`,
//! `{"ev":"exit","reason":"time limit",...}`.
//!
//! Exit codes: 0 time limit, 1 usage, 2 lost corosync, 3 connect failed,
//! 4 send failed. Logs (tracing) go to stderr; `COHORT_PROBE_LOG=debug`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::exit;
use std::time::{Duration, Instant};

use cohort_core::gcs::MemberReason;
use cohort_corosync::{Corosync, CorosyncEvent, Error};

struct Args {
    group: String,
    duration: Duration,
    send: u64,
    send_when_members: usize,
    size: usize,
    gap: Duration,
}

fn usage(msg: &str) -> ! {
    eprintln!("cohort-cpg-probe: {msg}");
    eprintln!("usage: cohort-cpg-probe [--group NAME (default cohort-probe)] [--duration SECS] [--send N] [--send-when-members M] [--size BYTES] [--gap-us US]");
    exit(1)
}

fn parse_args() -> Args {
    let mut a = Args {
        group: "cohort-probe".into(),
        duration: Duration::from_secs(30),
        send: 0,
        send_when_members: 0,
        size: 0,
        gap: Duration::ZERO,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage(&format!("{k} needs a value")));
        match k.as_str() {
            "--group" => a.group = val(),
            "--duration" => {
                let s: f64 = val().parse().unwrap_or_else(|_| usage("bad --duration"));
                a.duration = Duration::from_secs_f64(s);
            }
            "--send" => a.send = val().parse().unwrap_or_else(|_| usage("bad --send")),
            "--send-when-members" => {
                a.send_when_members = val().parse().unwrap_or_else(|_| usage("bad --send-when-members"))
            }
            "--size" => a.size = val().parse().unwrap_or_else(|_| usage("bad --size")),
            "--gap-us" => a.gap = Duration::from_micros(val().parse().unwrap_or_else(|_| usage("bad --gap-us"))),
            "-h" | "--help" => usage("help"),
            _ => usage(&format!("unknown argument {k}")),
        }
    }
    a
}

fn mono_ms() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn ids<'a>(l: impl IntoIterator<Item = &'a cohort_core::ids::NodeId>) -> String {
    let v: Vec<String> = l.into_iter().map(|n| n.0.to_string()).collect();
    format!("[{}]", v.join(","))
}

fn reasons(l: &[MemberReason]) -> String {
    let v: Vec<String> = l.iter().map(|m| format!("[{},\"{:?}\"]", m.node.0, m.reason)).collect();
    format!("[{}]", v.join(","))
}

fn emit(body: &str) {
    let line = format!("{{{body},\"mono_ms\":{:.3}}}\n", mono_ms());
    let mut out = std::io::stdout().lock();
    // A closed stdout means nobody listens any more: stop.
    if out.write_all(line.as_bytes()).and_then(|_| out.flush()).is_err() {
        exit(0);
    }
}

fn event_line(ev: &CorosyncEvent) -> String {
    match ev {
        CorosyncEvent::Ring(r) => format!("\"ev\":\"ring\",\"ring\":{},\"members\":{}", r.ring, ids(&r.members)),
        CorosyncEvent::Confchg(c) => format!(
            "\"ev\":\"confchg\",\"members\":{},\"joined\":{},\"left\":{}",
            ids(&c.members),
            reasons(&c.joined),
            reasons(&c.left)
        ),
        CorosyncEvent::Quorum(q) => {
            format!("\"ev\":\"quorum\",\"ring\":{},\"quorate\":{},\"members\":{}", q.ring, q.quorate, ids(&q.members))
        }
        CorosyncEvent::Deliver { from, pid, payload } => {
            let mut s = format!(
                "\"ev\":\"deliver\",\"from\":{},\"pid\":{},\"len\":{},\"payload\":",
                from.0,
                pid,
                payload.len()
            );
            json_str(&mut s, &String::from_utf8_lossy(payload));
            s
        }
    }
}

fn show(ev: &CorosyncEvent, members: &mut usize) {
    if let CorosyncEvent::Confchg(cc) = ev {
        *members = cc.members.len();
    }
    emit(&event_line(ev));
}

fn error_line(stage: &str, e: &Error) -> String {
    let kind = if e.is_disconnected() { "disconnected" } else { "other" };
    let mut s = format!("\"ev\":\"error\",\"stage\":\"{stage}\",\"kind\":\"{kind}\",\"msg\":");
    json_str(&mut s, &e.to_string());
    s
}

fn main() {
    let level = match std::env::var("COHORT_PROBE_LOG").as_deref() {
        Ok("trace") => tracing::Level::TRACE,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("info") => tracing::Level::INFO,
        _ => tracing::Level::WARN,
    };
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(level).init();

    let args = parse_args();
    let start = Instant::now();
    let end = start + args.duration;

    let mut c = match Corosync::connect(&args.group) {
        Ok(c) => c,
        Err(e) => {
            emit(&error_line("connect", &e));
            eprintln!("cohort-cpg-probe: {e}");
            exit(3);
        }
    };
    let node = c.local_nodeid().0;
    let pid = std::process::id();
    {
        let mut s = format!("\"ev\":\"connected\",\"node\":{node},\"pid\":{pid},\"group\":");
        json_str(&mut s, c.group());
        emit(&s);
    }

    let mut members = 0usize;
    let mut sent = args.send == 0;
    loop {
        let now = Instant::now();
        if now >= end {
            emit("\"ev\":\"exit\",\"reason\":\"time limit\"");
            drop(c);
            exit(0);
        }
        if !sent && members >= args.send_when_members {
            sent = true;
            let t0 = Instant::now();
            for i in 0..args.send {
                let mut p = format!("n{node}-{i:06}");
                while p.len() < args.size {
                    p.push('.');
                }
                if let Err(e) = c.send(p.as_bytes()) {
                    emit(&error_line("send", &e));
                    exit(if e.is_disconnected() { 2 } else { 4 });
                }
                // Keep reading while sending so our own queue never fills.
                if i % 32 == 31 || !args.gap.is_zero() {
                    if let Err(e) = c.dispatch() {
                        emit(&error_line("dispatch", &e));
                        exit(2);
                    }
                    while let Some(ev) = c.next_event() {
                        show(&ev, &mut members);
                    }
                }
                if !args.gap.is_zero() {
                    std::thread::sleep(args.gap);
                }
            }
            emit(&format!("\"ev\":\"sent\",\"count\":{},\"ms\":{:.3}", args.send, t0.elapsed().as_secs_f64() * 1e3));
            continue;
        }
        match c.poll_event((end - now).min(Duration::from_millis(200))) {
            Ok(Some(ev)) => show(&ev, &mut members),
            Ok(None) => {}
            Err(e) => {
                emit(&error_line("dispatch", &e));
                eprintln!("cohort-cpg-probe: {e}");
                exit(if e.is_disconnected() { 2 } else { 4 });
            }
        }
    }
}
