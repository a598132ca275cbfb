//! `cohortctl`: talk to cohortd over its control socket.
//!
//! ```text
//! cohortctl [--socket PATH | --config FILE] COMMAND
//!   status [--json]                     nodes, generation, quorum, groups, journals, what everything waits for
//!   members [--json]                    the daemon group's members
//!   mount FS [--ro|--spectator] [--wait SECS]
//!   unmount FS [--wait SECS]
//!   remount FS ro|rw [--wait SECS]        ro: the kernel first, then the cluster; rw: the cluster agrees first
//!   metrics                             Prometheus text format (node_exporter textfile collector)
//!   log [--follow] [--json] [--since SEQ] [--last N]
//! ```
//!
//! The socket is `--socket`, else `$COHORT_SOCKET`, else `<state_dir>/cohortd.sock`
//! of `--config` (default /etc/cohort/cohort.toml), else /var/lib/cohort/cohortd.sock.
//! Exit status: 0 ok, 1 the daemon refused or a wait failed, 2 usage, 3 cannot reach the daemon.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::exit;
use std::time::{Duration, Instant};

use cohortd::api::{self, LogEntry, Request, StatusJson};
use cohortd::config::{Config, DEFAULT_PATH, DEFAULT_STATE_DIR, SOCKET_NAME};
use serde_json::Value;

const USAGE: &str = "usage: cohortctl [--socket PATH | --config FILE] COMMAND
  status [--json]
  members [--json]
  mount FS [--ro|--spectator] [--wait SECS]
  unmount FS [--wait SECS]
  remount FS ro|rw [--wait SECS]
  metrics
  log [--follow] [--json] [--since SEQ] [--last N]";

fn usage(msg: &str) -> ! {
    eprintln!("cohortctl: {msg}");
    eprintln!("{USAGE}");
    exit(2)
}

fn die(code: i32, msg: &str) -> ! {
    eprintln!("cohortctl: {msg}");
    exit(code)
}

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    path: PathBuf,
}

impl Conn {
    fn open(path: &PathBuf) -> Conn {
        let s = UnixStream::connect(path)
            .unwrap_or_else(|e| die(3, &format!("cannot connect to cohortd at {}: {e}", path.display())));
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let w = s.try_clone().unwrap_or_else(|e| die(3, &format!("socket: {e}")));
        Conn { reader: BufReader::new(s), writer: w, path: path.clone() }
    }

    fn send(&mut self, r: &Request) {
        let line = serde_json::to_string(r).expect("request serializes");
        if let Err(e) = writeln!(self.writer, "{line}") {
            // The daemon may have refused us (and closed) before reading:
            // show its answer if there is one.
            let mut answer = String::new();
            if self.reader.read_line(&mut answer).is_ok() {
                if let Ok(v) = serde_json::from_str::<Value>(&answer) {
                    if let Some(err) = v["error"].as_str() {
                        die(1, err);
                    }
                }
            }
            die(3, &format!("write to {}: {e}", self.path.display()));
        }
    }

    fn recv(&mut self) -> Value {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => die(3, "cohortd closed the connection"),
            Ok(_) => {}
            Err(e) => die(3, &format!("read from {}: {e}", self.path.display())),
        }
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| die(3, &format!("bad response {line:?}: {e}")));
        if v["ok"] != Value::Bool(true) {
            die(1, v["error"].as_str().unwrap_or("request failed"));
        }
        v
    }

    fn call(&mut self, r: &Request) -> Value {
        self.send(r);
        self.recv()
    }
}

fn status(path: &PathBuf) -> StatusJson {
    let v = Conn::open(path).call(&Request::Status);
    serde_json::from_value(v["status"].clone()).unwrap_or_else(|e| die(3, &format!("unexpected status: {e}")))
}

fn socket_path(explicit: Option<PathBuf>, config: Option<PathBuf>) -> PathBuf {
    if let Some(p) = explicit {
        return p;
    }
    if let Some(c) = config {
        return match Config::load(&c) {
            Ok(cfg) => cfg.socket_path(),
            Err(e) => die(2, &e.to_string()),
        };
    }
    if let Ok(p) = std::env::var("COHORT_SOCKET") {
        return PathBuf::from(p);
    }
    if let Ok(cfg) = Config::load(std::path::Path::new(DEFAULT_PATH)) {
        return cfg.socket_path();
    }
    PathBuf::from(DEFAULT_STATE_DIR).join(SOCKET_NAME)
}

fn wait_for(path: &PathBuf, secs: u64, what: &str, done: impl Fn(&StatusJson) -> Result<bool, String>) {
    let t = Instant::now();
    loop {
        let s = status(path);
        match done(&s) {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => die(1, &e),
        }
        if t.elapsed() >= Duration::from_secs(secs) {
            let waits: Vec<String> = s
                .groups
                .iter()
                .filter_map(|g| g.waits_for.as_ref().map(|w| format!("{}: waits for {}", g.fs, w.text)))
                .collect();
            die(1, &format!("timed out after {secs}s waiting for {what} ({})", waits.join("; ")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut sock = None;
    let mut config = None;
    while let Some(a) = args.first().cloned() {
        match a.as_str() {
            "--socket" | "-s" => {
                args.remove(0);
                sock =
                    Some(PathBuf::from(if args.is_empty() { usage("--socket needs a PATH") } else { args.remove(0) }));
            }
            "--config" | "-c" => {
                args.remove(0);
                config =
                    Some(PathBuf::from(if args.is_empty() { usage("--config needs a FILE") } else { args.remove(0) }));
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                exit(0)
            }
            _ => break,
        }
    }
    if args.is_empty() {
        usage("no command");
    }
    let cmd = args.remove(0);
    let flag = |name: &str, args: &mut Vec<String>| -> bool {
        if let Some(p) = args.iter().position(|a| a == name) {
            args.remove(p);
            true
        } else {
            false
        }
    };
    let value = |name: &str, args: &mut Vec<String>| -> Option<String> {
        let p = args.iter().position(|a| a == name)?;
        args.remove(p);
        if p >= args.len() {
            usage(&format!("{name} needs a value"));
        }
        Some(args.remove(p))
    };
    let num = |s: Option<String>, name: &str| -> Option<u64> {
        s.map(|v| v.parse().unwrap_or_else(|_| usage(&format!("{name}: not a number: {v:?}"))))
    };
    let path = socket_path(sock, config);
    match cmd.as_str() {
        "status" | "members" => {
            let json = flag("--json", &mut args);
            if let Some(a) = args.first() {
                usage(&format!("unexpected argument {a:?}"));
            }
            if cmd == "status" {
                let s = status(&path);
                if json {
                    println!("{}", serde_json::to_string_pretty(&s).expect("serializes"));
                } else {
                    print!("{}", api::render_status(&s));
                }
            } else {
                let mut v = Conn::open(&path).call(&Request::Members);
                if json {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("ok");
                    }
                    println!("{}", serde_json::to_string_pretty(&v).expect("serializes"));
                } else {
                    let s = status(&path);
                    print!("node {} generation {}\n{}", s.node, s.generation, api::render_members(&s));
                }
            }
        }
        "mount" | "unmount" => {
            let ro = flag("--ro", &mut args);
            let spectator = flag("--spectator", &mut args);
            let wait = num(value("--wait", &mut args), "--wait");
            if args.len() != 1 {
                usage(&format!("{cmd} needs exactly one filesystem name"));
            }
            let fs = args.remove(0);
            if ro && spectator {
                usage("--ro and --spectator exclude each other");
            }
            let req = if cmd == "mount" {
                let mode = if ro {
                    "ro"
                } else if spectator {
                    "spectator"
                } else {
                    "rw"
                };
                Request::Mount { fs: fs.clone(), mode: mode.into() }
            } else {
                if ro || spectator {
                    usage("unmount takes no mode");
                }
                Request::Unmount { fs: fs.clone() }
            };
            let v = Conn::open(&path).call(&req);
            println!("{}", v["message"].as_str().unwrap_or("ok"));
            if let Some(secs) = wait {
                if cmd == "mount" {
                    wait_for(&path, secs, &format!("{fs} to be mounted"), |s| {
                        match s.groups.iter().find(|g| g.fs == fs) {
                            Some(g) if g.mounted_here && g.kernel.state == "mounted" => Ok(true),
                            Some(g) if g.kernel.state == "failed" => Err(format!(
                                "mount of {fs} failed: {}",
                                g.kernel.last_error.clone().unwrap_or_default()
                            )),
                            _ => Ok(false),
                        }
                    });
                    println!("{fs} mounted");
                } else {
                    wait_for(&path, secs, &format!("{fs} to be unmounted"), |s| {
                        Ok(!s.groups.iter().any(|g| g.fs == fs))
                    });
                    println!("{fs} unmounted");
                }
            }
        }
        "metrics" => {
            if let Some(a) = args.first() {
                usage(&format!("unexpected argument {a:?}"));
            }
            let v = Conn::open(&path).call(&Request::Metrics);
            print!("{}", v["text"].as_str().unwrap_or_default());
        }
        "remount" => {
            let wait = num(value("--wait", &mut args), "--wait");
            if args.len() != 2 {
                usage("remount needs a filesystem name and ro or rw");
            }
            let (fs, mode) = (args[0].clone(), args[1].clone());
            if mode != "ro" && mode != "rw" {
                usage(&format!("remount goes to ro or rw (got {mode:?})"));
            }
            let v = Conn::open(&path).call(&Request::Remount { fs: fs.clone(), mode: mode.clone() });
            println!("{}", v["message"].as_str().unwrap_or("ok"));
            if let Some(secs) = wait {
                wait_for(&path, secs, &format!("{fs} to be remounted {mode}"), |s| {
                    let Some(g) = s.groups.iter().find(|g| g.fs == fs) else {
                        return Err(format!("{fs} is no longer mounted here"));
                    };
                    match (&g.kernel.remount, g.kernel.mode.as_deref()) {
                        (Some(_), _) => Ok(false),
                        (None, Some(m)) if m == mode => Ok(true),
                        (None, m) => Err(format!(
                            "the remount did not complete (the kernel has {fs} {}): see `cohortctl log`",
                            m.unwrap_or("not mounted")
                        )),
                    }
                });
                println!("{fs} remounted {mode}");
            }
        }
        "log" => {
            let follow = flag("--follow", &mut args) | flag("-f", &mut args);
            let json = flag("--json", &mut args);
            let since = num(value("--since", &mut args), "--since").unwrap_or(0);
            let last = num(value("--last", &mut args), "--last").unwrap_or(0) as usize;
            if let Some(a) = args.first() {
                usage(&format!("unexpected argument {a:?}"));
            }
            let mut c = Conn::open(&path);
            if follow {
                let _ = c.writer.set_read_timeout(None);
                let _ = c.reader.get_ref().set_read_timeout(None);
            }
            let mut v = c.call(&Request::Log { follow, since, limit: last });
            loop {
                let entries: Vec<LogEntry> = serde_json::from_value(v["entries"].clone()).unwrap_or_default();
                let mut out = std::io::stdout().lock();
                for e in &entries {
                    let line =
                        if json { serde_json::to_string(e).expect("serializes") } else { api::render_log_entry(e) };
                    if writeln!(out, "{line}").is_err() {
                        exit(0);
                    }
                }
                let _ = out.flush();
                if !follow {
                    break;
                }
                v = c.recv();
            }
        }
        _ => usage(&format!("unknown command {cmd:?}")),
    }
}
