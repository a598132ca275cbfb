//! `cohortd --config FILE`: the host daemon's main loop.
//!
//! Single-threaded poll(2) over the corosync fds (CPG + quorum), the control
//! socket and its clients, a self-pipe that worker threads (fence agent,
//! exec hooks) and signal handlers write to, and the backends' uevent fds.
//! Timers from `SetTimer` effects live in the engine's min-heap and bound
//! the poll timeout.
//!
//! Stopping:
//! * corosync lost (`Disconnected`/`NotRunning`, or a send fails): block every
//!   mounted filesystem, exit [`exit::TRANSPORT_LOST`] with
//!   `corosync connection lost: ...`;
//! * `ResetSelf`: release everything, exit [`exit::RESET`] (systemd restarts
//!   the daemon, the new start gets a new incarnation);
//! * `Incompatible`: block, exit [`exit::INCOMPATIBLE`] naming the versions;
//! * SIGTERM/SIGINT: exit 0 at once if nothing is mounted, else unmount
//!   everything first (a second signal blocks and exits 1).

use std::fs::{self, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant as StdInstant};

use cohort_core::Member;
use cohort_corosync::Corosync;
use serde_json::json;

use crate::api::{self, Request};
use crate::backend;
use crate::config::{Config, Transport};
use crate::control::ControlServer;
use crate::engine::{Engine, Env, FsRuntime, RequestKind, Stop, Timings};
use crate::exit::Fatal;
use crate::fence::{FenceAgent, FenceWhy};
use crate::incarnation;
use crate::proc::{mounted_at, wake_pair, Wake, Waker};

static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);
static SIGNALS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(_sig: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::SeqCst);
    let fd = SIGNAL_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = 2u8;
        // SAFETY: write(2) is async-signal-safe.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
}

fn install_signals(fd: RawFd) {
    SIGNAL_FD.store(fd, Ordering::SeqCst);
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: installing a handler that only touches atomics and write(2).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

struct CorosyncEnv<'a> {
    cs: &'a Corosync,
    fencer: &'a FenceAgent,
    waker: &'a Waker,
}

impl Env for CorosyncEnv<'_> {
    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.cs.send(bytes).map_err(|e| e.to_string())
    }

    fn fence(&mut self, target: Member, known_inc: bool, why: FenceWhy) {
        self.fencer.spawn(target, known_inc, why, self.waker.clone());
    }
}

/// Create the state directory (0700) and take its lock (one daemon per dir).
fn lock_state_dir(cfg: &Config) -> Result<fs::File, Fatal> {
    let dir = &cfg.state_dir;
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Fatal::Startup(format!("cannot create state_dir {}: {e}", dir.display())))?;
    }
    let path = dir.join("cohortd.lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Fatal::Startup(format!("cannot open {}: {e}", path.display())))?;
    let _ = f.set_permissions(fs::Permissions::from_mode(0o600));
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(Fatal::Startup(format!(
            "another cohortd is already running with state_dir {} (lock {} is held)",
            dir.display(),
            path.display()
        )));
    }
    Ok(f)
}

/// Refuse to join if a managed filesystem is still mounted from a previous run.
pub fn startup_safety(cfg: &Config, fs: &[FsRuntime]) -> Result<(), Fatal> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    for f in fs {
        if let Some(mp) = &f.cfg.mount_point {
            if let Some(ty) = mounted_at(&mounts, mp) {
                return Err(Fatal::Startup(format!(
                    "refusing to join: filesystem {} is still mounted at {} ({ty}, in /proc/mounts) from a previous \
                     run; unmount it (or reboot) before starting cohortd",
                    f.cfg.name,
                    mp.display()
                )));
            }
        }
        match f.backend.leftover() {
            Ok(Some(why)) => {
                return Err(Fatal::Startup(format!(
                    "refusing to join: filesystem {} is still mounted from a previous run: {why}; unmount it (or \
                     reboot) before starting cohortd",
                    f.cfg.name
                )))
            }
            Ok(None) => {}
            Err(e) => {
                return Err(Fatal::Startup(format!(
                    "filesystem {}: cannot check for a leftover mount: {e}",
                    f.cfg.name
                )))
            }
        }
    }
    let _ = cfg;
    Ok(())
}

fn stop_to_fatal(engine: &mut Engine, now: u64, s: Stop) -> Fatal {
    match s {
        Stop::Reset => {
            let names = engine.release_all(now, "reset");
            Fatal::Reset(format!(
                "reset: this node lost a stale-merge verdict and must restart with a new incarnation (released: {})",
                if names.is_empty() { "nothing".to_owned() } else { names.join(", ") }
            ))
        }
        Stop::Incompatible { ours_min, ours_max, cluster } => {
            engine.block_all(now, "incompatible protocol");
            Fatal::Incompatible(format!(
                "incompatible protocol: this daemon speaks versions {ours_min}..={ours_max}, the cluster runs version \
                 {cluster}"
            ))
        }
        Stop::Transport(e) => {
            let names = engine.block_all(now, "corosync connection lost");
            Fatal::TransportLost(format!("corosync connection lost: {e}{}", blocked_suffix(&names)))
        }
    }
}

fn blocked_suffix(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" (blocked: {})", names.join(", "))
    }
}

/// Run the daemon until it stops. `Ok(())` is a clean stop.
pub fn run(cfg: Config) -> Result<(), Fatal> {
    if cfg.transport == Transport::Udp {
        return Err(Fatal::Config(
            "transport = \"udp\" is not yet available in this build; use transport = \"corosync\"".into(),
        ));
    }
    let _lock = lock_state_dir(&cfg)?;
    let (waker, wake_rx) = wake_pair().map_err(|e| Fatal::Startup(format!("cannot create the wake pipe: {e}")))?;
    let mut fs_rt = Vec::new();
    for f in &cfg.filesystems {
        let b = backend::build(f, Some(waker.clone()))
            .map_err(|e| Fatal::Startup(format!("filesystem {}: backend {}: {e}", f.name, f.backend.kind())))?;
        fs_rt.push(FsRuntime::new(f.clone(), b).map_err(Fatal::Startup)?);
    }
    startup_safety(&cfg, &fs_rt)?;
    let inc = incarnation::bump(&cfg.state_dir).map_err(|e| Fatal::Startup(e.to_string()))?;

    let cs = Corosync::connect(&cfg.group).map_err(|e| {
        if e.is_disconnected() {
            Fatal::TransportLost(format!("cannot connect: {e}"))
        } else {
            Fatal::Startup(format!("cannot connect to corosync: {e}"))
        }
    })?;
    let local = cs.local_nodeid();
    let node = match cfg.node_id {
        Some(n) if n != local.0 => {
            return Err(Fatal::Config(format!("node_id = {n}, but corosync says this node is {}", local.0)));
        }
        _ => local,
    };
    let control = ControlServer::bind(&cfg.socket_path()).map_err(|e| {
        Fatal::Startup(format!("cannot create the control socket {}: {e}", cfg.socket_path().display()))
    })?;
    install_signals(waker.raw_fd());
    let fencer =
        FenceAgent { agent: cfg.fence.agent.clone(), timeout: Duration::from_millis(cfg.fence.timeout_ms), me: node.0 };
    let t0 = StdInstant::now();
    let clock = move || t0.elapsed().as_millis() as u64;
    let mut engine = Engine::new(
        node,
        inc,
        Timings { fence_retry_ms: cfg.fence.retry_ms, recovery_retry_ms: cfg.recovery_retry_ms },
        fs_rt,
        cfg.log_entries,
        "corosync",
        clock(),
    );
    engine.note(
        "info",
        format!(
            "cohortd started: node {} incarnation {inc}, corosync group {:?}, {} filesystem(s) configured",
            node.0,
            cfg.group,
            cfg.filesystems.len()
        ),
    );
    tracing::info!(node = node.0, incarnation = inc, socket = %cfg.socket_path().display(), "cohortd running");
    let mut lp =
        Loop { cs, engine, control, wake_rx, waker, fencer, clock: Box::new(clock), stopping: false, seen_signals: 0 };
    lp.startup();
    let r = lp.run();
    if matches!(r, Err(Fatal::TransportLost(_))) {
        // Closing a corosync handle whose daemon died can block for seconds
        // inside libqb (seen with corosync 3.1.7); we are exiting anyway.
        let Loop { cs, .. } = lp;
        std::mem::forget(cs);
    }
    r
}

struct Loop {
    cs: Corosync,
    engine: Engine,
    control: ControlServer,
    wake_rx: crate::proc::WakeReceiver,
    waker: Waker,
    fencer: FenceAgent,
    clock: Box<dyn Fn() -> u64>,
    stopping: bool,
    seen_signals: u32,
}

impl Loop {
    fn startup(&mut self) {
        let now = (self.clock)();
        let Loop { cs, engine, fencer, waker, .. } = self;
        let mut env = CorosyncEnv { cs, fencer, waker };
        engine.auto_mount(now, &mut env);
    }

    fn check_stop(&mut self) -> Result<(), Fatal> {
        if let Some(s) = self.engine.stopped().cloned() {
            let now = (self.clock)();
            return Err(stop_to_fatal(&mut self.engine, now, s));
        }
        Ok(())
    }

    fn corosync_lost(&mut self, e: cohort_corosync::Error) -> Fatal {
        let now = (self.clock)();
        let what = if e.is_disconnected() { "corosync connection lost" } else { "corosync failed" };
        self.engine.note("error", format!("{what}: {e}"));
        let names = self.engine.block_all(now, what);
        Fatal::TransportLost(format!("{what}: {e}{}", blocked_suffix(&names)))
    }

    fn run(&mut self) -> Result<(), Fatal> {
        let mut last_backend_poll = 0u64;
        loop {
            let now = (self.clock)();
            {
                let Loop { cs, engine, fencer, waker, .. } = self;
                let mut env = CorosyncEnv { cs, fencer, waker };
                engine.fire_timers(now, &mut env);
            }
            self.check_stop()?;
            if self.stopping && self.engine.busy_filesystems().is_empty() {
                self.engine.note("info", "stopped: nothing mounted any more".into());
                return Ok(());
            }
            self.control.push_log(self.engine.log());
            self.control.flush();

            // ---- poll
            let mut timeout = 1000u64;
            if let Some(t) = self.engine.next_timer() {
                timeout = timeout.min(t.saturating_sub(now));
            }
            let mut backend_interval: Option<u64> = None;
            for f in self.engine.filesystems() {
                if let Some(i) = f.backend.poll_interval() {
                    let i = i.as_millis() as u64;
                    backend_interval = Some(backend_interval.map_or(i, |b: u64| b.min(i)));
                }
            }
            if let Some(i) = backend_interval {
                timeout = timeout.min((last_backend_poll + i).saturating_sub(now));
            }
            let [cpg_fd, q_fd] = self.cs.fds();
            let mut fds: Vec<libc::pollfd> = vec![
                libc::pollfd { fd: cpg_fd, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: q_fd, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.wake_rx.fd(), events: libc::POLLIN, revents: 0 },
            ];
            let ctl = self.control.poll_set();
            let ctl_start = fds.len();
            fds.extend(ctl.iter().map(|(fd, ev)| libc::pollfd { fd: *fd, events: *ev, revents: 0 }));
            let be_start = fds.len();
            for f in self.engine.filesystems() {
                if let Some(fd) = f.backend.poll_fd() {
                    fds.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
                }
            }
            // SAFETY: poll(2) over a valid array of pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout.min(60_000) as i32) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(Fatal::Other(format!("poll failed: {e}")));
                }
            }
            let now = (self.clock)();

            // ---- corosync
            if fds[0].revents != 0 || fds[1].revents != 0 || self.cs.pending() > 0 {
                if let Err(e) = self.cs.dispatch() {
                    return Err(self.corosync_lost(e));
                }
                while let Some(ev) = self.cs.next_event() {
                    let Loop { cs, engine, fencer, waker, .. } = self;
                    let mut env = CorosyncEnv { cs, fencer, waker };
                    engine.transport_event(now, ev.into(), &mut env);
                }
                self.check_stop()?;
            }

            // ---- worker results and signals
            if fds[2].revents != 0 {
                for w in self.wake_rx.drain() {
                    let Loop { cs, engine, fencer, waker, .. } = self;
                    let mut env = CorosyncEnv { cs, fencer, waker };
                    match w {
                        Wake::Kernel(k) => engine.kernel_event(now, k, &mut env),
                        Wake::Fenced { target, why, result, took_ms } => {
                            let result = result.map_err(|e| format!("{e} (after {took_ms} ms)"));
                            engine.fenced(now, target, why, result, &mut env)
                        }
                        Wake::Hook { fs, op, result } => match result {
                            Ok(()) => tracing::debug!(fs, op, "hook done"),
                            Err(e) => engine.note("error", format!("{fs}: {op} failed: {e}")),
                        },
                    }
                }
                self.check_stop()?;
            }
            let sig = SIGNALS.load(Ordering::SeqCst);
            if sig != self.seen_signals {
                self.seen_signals = sig;
                self.on_signal(now)?;
            }

            // ---- control socket
            let ctl_ready = fds[ctl_start..be_start].iter().any(|p| p.revents != 0);
            if ctl_ready {
                for (id, req) in self.control.service() {
                    let resp = match req {
                        Ok(r) => self.answer(id, r, now),
                        Err(e) => json!({"ok": false, "error": e}),
                    };
                    self.control.reply(id, &resp);
                }
                self.check_stop()?;
            }

            // ---- backends
            let be_ready = fds[be_start..].iter().any(|p| p.revents != 0);
            let be_due = backend_interval.is_some_and(|i| now >= last_backend_poll + i);
            if be_ready || be_due {
                last_backend_poll = now;
                let Loop { cs, engine, fencer, waker, .. } = self;
                let mut env = CorosyncEnv { cs, fencer, waker };
                engine.poll_backends(now, &mut env);
                self.check_stop()?;
            }
            self.control.push_log(self.engine.log());
            self.control.flush();
        }
    }

    fn on_signal(&mut self, now: u64) -> Result<(), Fatal> {
        let busy = self.engine.busy_filesystems();
        if busy.is_empty() {
            self.engine.note("info", "signal: stopping (nothing mounted)".into());
            // The loop returns at its top; the Corosync handle leaves the
            // CPG group cleanly on drop.
            self.stopping = true;
            return Ok(());
        }
        if self.stopping {
            let names = self.engine.block_all(now, "second stop signal");
            return Err(Fatal::Other(format!(
                "stopped by a second signal with filesystems still mounted{}",
                blocked_suffix(&names)
            )));
        }
        self.stopping = true;
        self.engine.note("info", format!("signal: stopping, unmounting {} first", busy.join(", ")));
        for fs in busy {
            let Loop { cs, engine, fencer, waker, .. } = self;
            let mut env = CorosyncEnv { cs, fencer, waker };
            if let Err(e) = engine.request(now, &fs, RequestKind::Unmount, &mut env) {
                engine.note("error", format!("unmount of {fs} at stop: {e}"));
            }
        }
        Ok(())
    }

    fn answer(&mut self, id: u64, r: Request, now: u64) -> serde_json::Value {
        match r {
            Request::Status => json!({"ok": true, "status": self.engine.status_json(now)}),
            Request::Members => {
                let s = self.engine.status_json(now);
                json!({"ok": true, "node": s.node, "generation": s.generation, "quorate": s.quorate,
                       "members": s.members, "fencing": s.fencing})
            }
            Request::Mount { fs, mode } => {
                let Some(m) = api::parse_mode(&mode) else {
                    return json!({"ok": false, "error": format!("mode must be rw, ro or spectator (got {mode:?})")});
                };
                self.request(now, &fs, RequestKind::Mount(m))
            }
            Request::Unmount { fs } => self.request(now, &fs, RequestKind::Unmount),
            Request::Log { follow, since, limit } => {
                let log = self.engine.log();
                let mut entries = log.since(since);
                if limit > 0 && entries.len() > limit {
                    entries.drain(..entries.len() - limit);
                }
                if follow {
                    self.control.follow(id, log.last_seq());
                }
                json!({"ok": true, "entries": entries})
            }
        }
    }

    fn request(&mut self, now: u64, fs: &str, what: RequestKind) -> serde_json::Value {
        if self.stopping {
            return json!({"ok": false, "error": "the daemon is stopping"});
        }
        let Loop { cs, engine, fencer, waker, .. } = self;
        let mut env = CorosyncEnv { cs, fencer, waker };
        match engine.request(now, fs, what, &mut env) {
            Ok(text) => json!({"ok": true, "message": text}),
            Err(e) => json!({"ok": false, "error": e}),
        }
    }
}
