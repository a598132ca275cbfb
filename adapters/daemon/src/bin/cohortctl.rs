//! `cohortctl`: talk to cohortd over its control socket. The command line
//! is [`cohortd::cli::Cohortctl`] (`cohortctl --help`, `cohortctl help
//! COMMAND`, man pages cohortctl(8) and cohortctl-COMMAND(8)).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::exit;
use std::time::{Duration, Instant};

use cohortd::api::{self, KernelState, LogEntry, Request, StatusJson};
use cohortd::config::{Config, DEFAULT_PATH, DEFAULT_STATE_DIR, SOCKET_NAME};
use serde_json::Value;

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
    use clap::Parser;
    use cohortd::cli::{Cohortctl, CtlCommand};
    let args = Cohortctl::parse();
    let path = socket_path(args.socket, args.config);
    match args.command {
        CtlCommand::Status { json } => {
            let s = status(&path);
            if json {
                println!("{}", serde_json::to_string_pretty(&s).expect("serializes"));
            } else {
                print!("{}", api::render_status(&s));
            }
        }
        CtlCommand::Members { json } => {
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
        CtlCommand::Mount { fs, ro, spectator, wait } => {
            let mode = if ro {
                "ro"
            } else if spectator {
                "spectator"
            } else {
                "rw"
            };
            let v = Conn::open(&path).call(&Request::Mount { fs: fs.clone(), mode: mode.into() });
            println!("{}", v["message"].as_str().unwrap_or("ok"));
            if let Some(secs) = wait.wait {
                wait_for(&path, secs, &format!("{fs} to be mounted"), |s| match s.groups.iter().find(|g| g.fs == fs) {
                    Some(g) if g.mounted_here && g.kernel.is_mounted() => Ok(true),
                    Some(g) if g.kernel.kernel_state() == Some(KernelState::Failed) => {
                        Err(format!("mount of {fs} failed: {}", g.kernel.last_error.clone().unwrap_or_default()))
                    }
                    _ => Ok(false),
                });
                println!("{fs} mounted");
            }
        }
        CtlCommand::Unmount { fs, wait } => {
            let v = Conn::open(&path).call(&Request::Unmount { fs: fs.clone() });
            println!("{}", v["message"].as_str().unwrap_or("ok"));
            if let Some(secs) = wait.wait {
                wait_for(&path, secs, &format!("{fs} to be unmounted"), |s| Ok(!s.groups.iter().any(|g| g.fs == fs)));
                println!("{fs} unmounted");
            }
        }
        CtlCommand::Remount { fs, mode, wait } => {
            let mode = mode.name();
            let v = Conn::open(&path).call(&Request::Remount { fs: fs.clone(), mode: mode.into() });
            println!("{}", v["message"].as_str().unwrap_or("ok"));
            if let Some(secs) = wait.wait {
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
        CtlCommand::Metrics => {
            let v = Conn::open(&path).call(&Request::Metrics);
            print!("{}", v["text"].as_str().unwrap_or_default());
        }
        CtlCommand::Log { follow, json, since, last } => {
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
    }
}
