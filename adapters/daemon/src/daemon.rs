//! `cohortd --config FILE`: the host daemon's main loop.
//!
//! Single-threaded poll(2) over the transport's fds ([`Link`]: corosync CPG +
//! quorum, or the UDP transport's sockets), the control socket and its
//! clients, a self-pipe that worker threads (fence agent, exec hooks) and
//! signal handlers write to, and the backends' uevent fds. Timers from
//! `SetTimer` effects live in the engine's min-heap and, with the UDP
//! transport's protocol timers, bound the poll timeout.
//!
//! Stopping:
//! * transport lost (corosync `Disconnected`/`NotRunning`, or a send fails,
//!   for UDP too): block every mounted filesystem, exit
//!   [`crate::exit::TRANSPORT_LOST`] with `corosync connection lost: ...` (UDP:
//!   `udp transport failed: ...`);
//! * `ResetSelf`: release everything, exit [`crate::exit::RESET`] (systemd restarts
//!   the daemon, the new start gets a new incarnation);
//! * `Incompatible`: block, exit [`crate::exit::INCOMPATIBLE`] naming the versions;
//! * a `Block` that fails ([`Stop::BlockFailed`]): the cluster believes this
//!   node's kernel is blocked while it may not be; block what else is
//!   mounted, exit [`crate::exit::FATAL`] without sending anything more and
//!   without `Unmount`: the others see a failure, fence this node and
//!   replay its journal;
//! * SIGTERM/SIGINT: exit 0 at once if nothing is mounted. If the kernel
//!   still has a filesystem mounted (the backend's or `mount_point`'s
//!   check), the daemon must not send `Unmount` (the others would free the
//!   journal without replay while the kernel may still write to it), so it
//!   does not leave cleanly: it blocks those filesystems and exits
//!   [`crate::exit::FATAL`] without `Unmount`; the others fence this node
//!   and replay its journal. (Staying up instead would only end in
//!   systemd's SIGKILL, without the block.) Otherwise (memberships whose
//!   kernel side has nothing mounted: mounts in progress, withdrawn) it
//!   unmounts them first and exits 0 (a second signal blocks and exits 1).
//! * SIGHUP never stops the daemon: [`Loop::reload`]. SIGPIPE is ignored.

use std::fs::{self, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant as StdInstant};

use cohort_core::wire::Mode;
use cohort_core::Member;
#[cfg(feature = "corosync")]
use cohort_corosync::Corosync;
use serde_json::json;

use crate::api::{self, LogKind, Request};
use crate::backend;
use crate::config::{Config, Transport};
use crate::control::ControlServer;
use crate::engine::{Engine, Env, FsRuntime, RequestKind, Stop, Timings};
use crate::exit::Fatal;
use crate::fence::{FenceAgent, FenceWhy};
use crate::incarnation;
use crate::nodelist;
use crate::notify::Notifier;
use crate::proc::{mounted_at, wake_pair, Wake, Waker};
use crate::transport::{udp_adapter_config, Link, LinkError};

static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);
/// SIGTERM/SIGINT received.
static SIGNALS: AtomicU32 = AtomicU32::new(0);
/// SIGHUP received.
static HANGUPS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGHUP {
        HANGUPS.fetch_add(1, Ordering::SeqCst);
    } else {
        SIGNALS.fetch_add(1, Ordering::SeqCst);
    }
    let fd = SIGNAL_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = 2u8;
        // SAFETY: write(2) is async-signal-safe.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
}

/// SIGTERM/SIGINT stop the daemon, SIGHUP re-reads the configuration
/// (never stops it), SIGPIPE is ignored (a control client that hung up is
/// an EPIPE on its socket, nothing more).
fn install_signals(fd: RawFd) {
    SIGNAL_FD.store(fd, Ordering::SeqCst);
    // SAFETY: setting SIGPIPE's disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
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

struct LinkEnv<'a> {
    link: &'a mut Link,
    fencer: &'a FenceAgent,
    waker: &'a Waker,
}

impl Env for LinkEnv<'_> {
    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.link.send(bytes)
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

/// What losing the transport is called in logs and the fatal line.
fn lost_what(transport: Transport) -> &'static str {
    match transport {
        Transport::Corosync => "corosync connection lost",
        Transport::Udp => "udp transport failed",
    }
}

fn stop_to_fatal(engine: &mut Engine, now: u64, s: Stop, transport: Transport) -> Fatal {
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
            let what = lost_what(transport);
            let names = engine.block_all(now, what);
            Fatal::TransportLost(format!("{what}: {e}{}", blocked_suffix(&names)))
        }
        Stop::BlockFailed(text) => {
            let names = engine.block_all(now, "a block failed");
            Fatal::Other(format!("{text}{}", blocked_suffix(&names)))
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

/// The configured cluster for `Input::Nodelist`: `nodes`/`[udp.peers]`, or
/// corosync's nodelist. `Err`: why startup fencing is off (warned once).
fn cluster_nodes(cfg: &Config) -> Result<Vec<u32>, String> {
    if let Some(n) = &cfg.nodes {
        return Ok(n.clone());
    }
    let Some(tool) = nodelist::find_cmapctl() else {
        return Err(format!(
            "{} not found and no `nodes` in the configuration: cannot read corosync's nodelist",
            nodelist::CMAPCTL
        ));
    };
    nodelist::corosync_nodelist(&tool, Duration::from_secs(10))
}

/// The node list for startup fencing: `Some(nodes)`, `None` when the
/// configuration turned startup fencing off (`startup_fencing = false`).
/// Without a node list and without that opt-out the start fails: running
/// without startup fencing would let a first mount happen while a node
/// that has not joined still has the filesystem mounted.
pub fn startup_fencing_nodes(
    cfg: &Config,
    cluster: Result<Vec<u32>, String>,
    path: &Path,
) -> Result<Option<Vec<u32>>, Fatal> {
    if !cfg.startup_fencing {
        return Ok(None);
    }
    match cluster {
        Ok(n) => Ok(Some(n)),
        Err(why) => Err(Fatal::Startup(format!(
            "startup fencing needs the list of cluster nodes: {why}; set `nodes = [...]` in {} (or make \
             `corosync-cmapctl -b nodelist.node` work), or set `startup_fencing = false` there to run without it (a \
             first mount may then happen while a node that has not joined still writes to the filesystem)",
            path.display()
        ))),
    }
}

/// Open the configured transport; returns it and this node's id.
fn open_link(cfg: &Config, inc: u64) -> Result<(Link, u32), Fatal> {
    cfg.check_build().map_err(Fatal::Config)?;
    match cfg.transport {
        #[cfg(not(feature = "corosync"))]
        Transport::Corosync => unreachable!("refused by check_build"),
        #[cfg(feature = "corosync")]
        Transport::Corosync => {
            let cs = Corosync::connect(&cfg.group).map_err(|e| {
                if e.is_disconnected() {
                    Fatal::TransportLost(format!("cannot connect: {e}"))
                } else {
                    Fatal::Startup(format!("cannot connect to corosync: {e}"))
                }
            })?;
            let local = cs.local_nodeid();
            if let Some(n) = cfg.node_id.filter(|n| *n != local.0) {
                return Err(Fatal::Config(format!("node_id = {n}, but corosync says this node is {}", local.0)));
            }
            Ok((Link::Corosync(cs), local.0))
        }
        Transport::Udp => {
            let (Some(me), Some(nodes), Some(u)) = (cfg.node_id, cfg.nodes.as_ref(), cfg.udp.as_ref()) else {
                return Err(Fatal::Config("transport = \"udp\" needs node_id and a [udp] table".into()));
            };
            let key = cohort_udp::load_key(&u.key_file).map_err(|e| Fatal::Config(format!("udp.key_file: {e}")))?;
            let ucfg = udp_adapter_config(me, nodes, u, key, inc).map_err(|e| Fatal::Startup(format!("udp: {e}")))?;
            let udp = cohort_udp::Udp::new(ucfg).map_err(|e| match e {
                cohort_udp::Error::Config(m) => Fatal::Config(format!("udp: {m}")),
                e => Fatal::Startup(format!("cannot start the udp transport: {e}")),
            })?;
            Ok((Link::udp(udp), me))
        }
    }
}

fn describe_link(cfg: &Config, link: &Link) -> String {
    match (link, cfg.udp.as_ref()) {
        (Link::Udp(u), Some(c)) => format!(
            "udp {} on {} (heartbeat {} ms, failure timeout {} ms)",
            c.net.mode(),
            u.udp.local_addr().map_or_else(|e| format!("? ({e})"), |a| a.to_string()),
            c.heartbeat_ms,
            c.fail_timeout_ms
        ),
        _ => format!("corosync group {:?}", cfg.group),
    }
}

/// Applies a `log_level` (`None`: the default); `Ok(what was done)`.
pub type SetLogLevel = Box<dyn Fn(Option<&str>) -> Result<String, String>>;

/// What `run` needs beyond the configuration: where to re-read it on
/// SIGHUP and how to change the log level.
pub struct RunOptions {
    pub config_path: PathBuf,
    /// Apply a `log_level` (`None`: the default); `Ok(what was done)`.
    pub set_log_level: SetLogLevel,
}

/// Run the daemon until it stops. `Ok(())` is a clean stop.
pub fn run(cfg: Config, opts: RunOptions) -> Result<(), Fatal> {
    // Before any thread starts: it takes the variables out of the environment.
    let notify = Notifier::from_env();
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

    let (link, me) = open_link(&cfg, inc)?;
    let node = cohort_core::NodeId(me);
    // After connecting: corosync-cmapctl needs a running corosync.
    let cluster = if cfg.startup_fencing { cluster_nodes(&cfg) } else { Ok(Vec::new()) };
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
        Timings {
            fence_retry_ms: cfg.fence.retry_ms,
            recovery_retry_ms: cfg.recovery_retry_ms,
            startup_fence_delay_ms: cfg.startup_fence_delay_ms,
        },
        fs_rt,
        cfg.log_entries,
        link.name(),
        clock(),
    );
    engine.start_backends().map_err(Fatal::Startup)?;
    match startup_fencing_nodes(&cfg, cluster, &opts.config_path) {
        Ok(Some(nodes)) => {
            engine.set_nodelist(&nodes);
            if !nodes.contains(&me) {
                tracing::warn!(node = me, nodes = ?nodes, "this node is not in the configured cluster nodes");
            }
        }
        Ok(None) => engine.note_at(
            tracing::Level::WARN,
            LogKind::Info,
            "startup fencing is OFF (startup_fencing = false in the configuration): a first mount does not wait for \
             configured nodes that have not joined"
                .into(),
        ),
        Err(f) => return Err(f),
    }
    engine.note(
        LogKind::Info,
        format!(
            "cohortd started: node {} incarnation {inc}, {}, {} filesystem(s) configured",
            node.0,
            describe_link(&cfg, &link),
            cfg.filesystems.len()
        ),
    );
    tracing::info!(node = node.0, incarnation = inc, socket = %cfg.socket_path().display(), "cohortd running");
    // UDP: operator requests (and auto_mount) wait until the transport has
    // merged our boot view with the peers, or the failure timeout passed
    // (nobody else is up). A mount requested in the boot view would be
    // applied in a one-node daemon group and then dropped by the core when
    // the merge brings the cluster's snapshot ("mount error Incompatible").
    let hold_until = cfg.udp.as_ref().map(|u| clock() + u.fail_timeout_ms + 2 * u.heartbeat_ms);
    let mut lp = Loop {
        hold_until,
        held: Vec::new(),
        link,
        transport: cfg.transport,
        engine,
        control,
        wake_rx,
        waker,
        fencer,
        clock: Box::new(clock),
        stopping: false,
        seen_signals: 0,
        seen_hangups: 0,
        cfg: cfg.clone(),
        opts,
        requests: Default::default(),
        notify,
        status_at: None,
    };
    lp.startup();
    let r = lp.run();
    match &r {
        // Closing a corosync handle whose daemon died can block for seconds
        // inside libqb (seen with corosync 3.1.7); we are exiting anyway.
        Err(Fatal::TransportLost(_)) if cfg.transport == Transport::Corosync => {
            let Loop { link, .. } = lp;
            std::mem::forget(link);
        }
        // A clean stop leaves the group (UDP: LEAVE announcements over a
        // few heartbeats), so the others see a leave, not a failure.
        Ok(()) => lp.link.leave(Duration::from_secs(1)),
        _ => {}
    }
    r
}

struct Loop {
    /// Requests wait until then (or until the transport found its peers).
    hold_until: Option<u64>,
    held: Vec<(String, RequestKind)>,
    link: Link,
    transport: Transport,
    engine: Engine,
    control: ControlServer,
    wake_rx: crate::proc::WakeReceiver,
    waker: Waker,
    fencer: FenceAgent,
    clock: Box<dyn Fn() -> u64>,
    stopping: bool,
    seen_signals: u32,
    seen_hangups: u32,
    /// The configuration in force (SIGHUP compares the file with it).
    cfg: Config,
    opts: RunOptions,
    /// Control requests answered, by command and outcome (metrics).
    requests: crate::metrics::Requests,
    /// systemd: READY, STATUS, WATCHDOG, STOPPING.
    notify: Notifier,
    status_at: Option<StdInstant>,
}

impl Loop {
    fn startup(&mut self) {
        let now = (self.clock)();
        if self.hold_until.is_some() {
            for f in self.engine.filesystems().iter().filter(|f| f.cfg.auto_mount) {
                self.held.push((f.cfg.name.clone(), RequestKind::Mount(f.cfg.mode)));
            }
            return;
        }
        let Loop { link, engine, fencer, waker, .. } = self;
        let mut env = LinkEnv { link, fencer, waker };
        engine.auto_mount(now, &mut env);
    }

    /// End the hold of requests once the transport found its peers (or the
    /// hold expired) and run the held ones in order.
    fn release_held(&mut self, now: u64) {
        let Some(until) = self.hold_until else { return };
        let found = self.link.found_peers();
        if !found && now < until {
            return;
        }
        self.hold_until = None;
        let why = if found { "the transport found its peers" } else { "nobody answered within the failure timeout" };
        if !self.held.is_empty() {
            self.engine.note(LogKind::Info, format!("{why}: running {} held request(s)", self.held.len()));
        }
        for (fs, what) in std::mem::take(&mut self.held) {
            let Loop { link, engine, fencer, waker, .. } = self;
            let mut env = LinkEnv { link, fencer, waker };
            if let Err(e) = engine.request(now, &fs, what, &mut env) {
                engine.note(LogKind::Error, format!("held request for {fs}: {e}"));
            }
        }
    }

    fn check_stop(&mut self) -> Result<(), Fatal> {
        if let Some(s) = self.engine.stopped().cloned() {
            let now = (self.clock)();
            return Err(stop_to_fatal(&mut self.engine, now, s, self.transport));
        }
        Ok(())
    }

    fn transport_lost(&mut self, e: LinkError) -> Fatal {
        let now = (self.clock)();
        let what = match (self.transport, e.disconnected) {
            (Transport::Corosync, false) => "corosync failed",
            (t, _) => lost_what(t),
        };
        self.engine.note(LogKind::Error, format!("{what}: {}", e.text));
        let names = self.engine.block_all(now, what);
        Fatal::TransportLost(format!("{what}: {}{}", e.text, blocked_suffix(&names)))
    }

    fn run(&mut self) -> Result<(), Fatal> {
        let mut last_backend_poll = 0u64;
        loop {
            self.tell_systemd();
            let now = (self.clock)();
            {
                let Loop { link, engine, fencer, waker, .. } = self;
                let mut env = LinkEnv { link, fencer, waker };
                engine.fire_timers(now, &mut env);
            }
            self.check_stop()?;
            if self.stopping && self.engine.busy_filesystems().is_empty() {
                self.engine.note(LogKind::Info, "stopped: nothing mounted any more".into());
                return Ok(());
            }
            self.control.push_log(self.engine.log());
            self.control.flush();

            // ---- poll
            let mut timeout = 1000u64;
            if let Some(t) = self.engine.next_timer() {
                timeout = timeout.min(t.saturating_sub(now));
            }
            if let Some(d) = self.link.next_timeout(StdInstant::now()) {
                // Round up: a sub-millisecond wait must not spin.
                timeout = timeout.min(d.as_micros().div_ceil(1000) as u64);
            }
            if self.link.pending() > 0 {
                timeout = 0;
            }
            if let Some(h) = self.hold_until {
                timeout = timeout.min(h.saturating_sub(now));
            }
            if let Some(d) = self.notify.next_ping(StdInstant::now()) {
                timeout = timeout.min(d.as_millis() as u64);
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
            let mut fds: Vec<libc::pollfd> =
                vec![libc::pollfd { fd: self.wake_rx.fd(), events: libc::POLLIN, revents: 0 }];
            let link_start = fds.len();
            fds.extend(self.link.fds().into_iter().map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }));
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

            // ---- transport (UDP: also its protocol timers, every round)
            let link_ready = fds[link_start..ctl_start].iter().any(|p| p.revents != 0);
            if let Err(e) = self.link.dispatch(link_ready, StdInstant::now()) {
                return Err(self.transport_lost(e));
            }
            while let Some(ev) = self.link.next_event() {
                let Loop { link, engine, fencer, waker, .. } = self;
                let mut env = LinkEnv { link, fencer, waker };
                engine.transport_event(now, ev, &mut env);
                if engine.stopped().is_some() {
                    break;
                }
            }
            self.check_stop()?;
            self.release_held(now);
            self.check_stop()?;

            // ---- worker results and signals
            if fds[0].revents != 0 {
                for w in self.wake_rx.drain() {
                    let Loop { link, engine, fencer, waker, .. } = self;
                    let mut env = LinkEnv { link, fencer, waker };
                    match w {
                        Wake::Kernel(k) => engine.kernel_event(now, k, &mut env),
                        Wake::Fenced { target, why, result, stderr, took_ms } => {
                            let result = result.map_err(|e| format!("{e} (after {took_ms} ms)"));
                            engine.fenced(now, target, why, result, &stderr, &mut env)
                        }
                        Wake::Backend => engine.poll_backends(now, &mut env),
                        Wake::Remounted { fs, mode, result } => engine.remounted(now, &fs, mode, result, &mut env),
                        Wake::Hook { fs, op, result } => match result {
                            Ok(()) => tracing::debug!(fs, op, "hook done"),
                            Err(e) => engine.hook_failed(now, &fs, op, e),
                        },
                    }
                }
                self.check_stop()?;
            }
            let hup = HANGUPS.load(Ordering::SeqCst);
            if hup != self.seen_hangups {
                self.seen_hangups = hup;
                self.reload();
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
                let Loop { link, engine, fencer, waker, .. } = self;
                let mut env = LinkEnv { link, fencer, waker };
                engine.poll_backends(now, &mut env);
                self.check_stop()?;
            }
            self.control.push_log(self.engine.log());
            self.control.flush();
            self.control.expire_idle();
        }
    }

    /// SIGHUP: re-read and validate the configuration file; apply what can
    /// change at run time (`log_level`, `fence.agent`, `fence.timeout_ms`);
    /// log the changed keys that need a restart. Never stops the daemon.
    fn reload(&mut self) {
        let path = self.opts.config_path.display().to_string();
        let new = match Config::load(&self.opts.config_path) {
            Ok(c) => c,
            Err(e) => {
                let text = format!(
                    "SIGHUP: configuration reload failed: {e}; still running with the configuration in force (fix \
                     the file, check it with `cohortd --check --config {path}`, then send SIGHUP again)"
                );
                tracing::error!("{text}");
                self.engine.log_only(LogKind::Error, text);
                return;
            }
        };
        let mut applied = Vec::new();
        if new.log_level != self.cfg.log_level {
            match (self.opts.set_log_level)(new.log_level.as_deref()) {
                Ok(what) => applied.push(format!("log_level: {what}")),
                Err(e) => applied.push(format!("log_level NOT applied: {e}")),
            }
            self.cfg.log_level = new.log_level.clone();
        }
        if new.fence.agent != self.cfg.fence.agent {
            applied.push(format!("fence.agent = {}", new.fence.agent.display()));
            self.fencer.agent = new.fence.agent.clone();
            self.cfg.fence.agent = new.fence.agent.clone();
        }
        if new.fence.timeout_ms != self.cfg.fence.timeout_ms {
            applied.push(format!("fence.timeout_ms = {}", new.fence.timeout_ms));
            self.fencer.timeout = Duration::from_millis(new.fence.timeout_ms);
            self.cfg.fence.timeout_ms = new.fence.timeout_ms;
        }
        let restart = self.cfg.restart_keys(&new);
        let text = format!(
            "SIGHUP: configuration {path} re-read: {}",
            if applied.is_empty() { "nothing to apply".to_owned() } else { format!("applied {}", applied.join(", ")) }
        );
        self.engine.note(LogKind::Info, text);
        if !restart.is_empty() {
            let text = format!(
                "SIGHUP: changed in {path} but needs a restart to take effect (running with the old values): {}",
                restart.join(", ")
            );
            tracing::warn!("{text}");
            self.engine.log_only(LogKind::Info, text);
        }
    }

    /// systemd: the watchdog ping, and READY/STATUS at most every 100 ms.
    fn tell_systemd(&mut self) {
        if !self.notify.active() {
            return;
        }
        let t = StdInstant::now();
        self.notify.watchdog(t);
        if self.status_at.is_some_and(|a| t.duration_since(a) < Duration::from_millis(100)) {
            return;
        }
        self.status_at = Some(t);
        let s = self.engine.status_json((self.clock)());
        self.notify.update(s.daemon.phase == "complete", &api::status_line(&s));
    }

    fn on_signal(&mut self, now: u64) -> Result<(), Fatal> {
        self.notify.stopping("stop signal");
        let busy = self.engine.busy_filesystems();
        if busy.is_empty() {
            self.engine.note(LogKind::Info, "signal: stopping (nothing mounted)".into());
            // The loop returns at its top; `run` then leaves the group
            // (corosync: on drop; UDP: LEAVE announcements).
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
        // The core's contract: Unmount only after the kernel unmounted. A
        // filesystem the kernel still has cannot leave cleanly: stop as a
        // failure (blocked, no Unmount) so the others fence and replay.
        let kernel = self.engine.kernel_mounts();
        if !kernel.is_empty() {
            for (fs, why) in &kernel {
                let text = format!(
                    "{fs} still mounted by the kernel ({why}): not leaving the group cleanly; peers will fence this \
                     node and replay its journal (to stop cleanly: umount it first, then stop cohortd)"
                );
                tracing::warn!("{text}");
                self.engine.note(LogKind::Error, format!("signal: {text}"));
            }
            let names = self.engine.block_all(now, "stop with filesystems still mounted by the kernel");
            let fs: Vec<&str> = kernel.iter().map(|(f, _)| f.as_str()).collect();
            return Err(Fatal::Other(format!(
                "stopped by a signal with {} still mounted by the kernel: left without unmounting; the other nodes \
                 fence this node and replay its journal{}",
                fs.join(", "),
                blocked_suffix(&names)
            )));
        }
        self.stopping = true;
        self.engine.note(LogKind::Info, format!("signal: stopping, unmounting {} first", busy.join(", ")));
        for fs in busy {
            let Loop { link, engine, fencer, waker, .. } = self;
            let mut env = LinkEnv { link, fencer, waker };
            if let Err(e) = engine.request(now, &fs, RequestKind::Unmount, &mut env) {
                engine.note(LogKind::Error, format!("unmount of {fs} at stop: {e}"));
            }
        }
        Ok(())
    }

    fn answer(&mut self, id: u64, r: Request, now: u64) -> serde_json::Value {
        let cmd = r.command();
        let v = self.answer_inner(id, r, now);
        let ok = v["ok"].as_bool().unwrap_or(false);
        *self.requests.entry((cmd.to_owned(), ok)).or_default() += 1;
        v
    }

    fn answer_inner(&mut self, id: u64, r: Request, now: u64) -> serde_json::Value {
        match r {
            Request::Metrics => {
                let st = self.engine.status_json(now);
                let udp = self.link.udp_stats();
                let text = crate::metrics::render(&st, self.engine.counters(), udp.as_ref(), &self.requests);
                json!({"ok": true, "text": text})
            }
            Request::Status => {
                let mut st = self.engine.status_json(now);
                st.link = self.link.link_json();
                json!({"ok": true, "status": st})
            }
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
            Request::Remount { fs, mode } => match api::parse_mode(&mode) {
                Some(m @ (Mode::Ro | Mode::Rw)) => self.request(now, &fs, RequestKind::Remount(m)),
                _ => json!({"ok": false, "error": format!("remount mode must be ro or rw (got {mode:?})")}),
            },
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
        if self.hold_until.is_some() {
            let known: Vec<&str> = self.engine.filesystems().iter().map(|f| f.cfg.name.as_str()).collect();
            if !known.contains(&fs) {
                let e = format!("filesystem {fs:?} is not configured (configured: {})", known.join(", "));
                return json!({"ok": false, "error": e});
            }
            let text = match what {
                RequestKind::Mount(m) => format!("mount of {fs} ({}) requested", crate::config::mode_name(m)),
                RequestKind::Unmount => format!("unmount of {fs} requested"),
                RequestKind::Remount(_) => {
                    return json!({"ok": false, "error": format!("{fs} is not mounted here (the transport is still finding its peers)")});
                }
            };
            self.engine.note(LogKind::Request, format!("{text} (held until the udp transport has found its peers)"));
            self.held.push((fs.to_owned(), what));
            return json!({"ok": true, "message": format!("{text} (held until the transport has found its peers)")});
        }
        let Loop { link, engine, fencer, waker, .. } = self;
        let mut env = LinkEnv { link, fencer, waker };
        match engine.request(now, fs, what, &mut env) {
            Ok(text) => json!({"ok": true, "message": text}),
            Err(e) => json!({"ok": false, "error": e}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        let text = format!("{extra}\n[fence]\nagent = \"/bin/sh\"\n");
        Config::parse(&text, "cohort.toml").unwrap()
    }

    #[test]
    fn no_nodelist_is_fatal_unless_startup_fencing_is_off() {
        let p = Path::new("/etc/cohort/cohort.toml");
        let no_list = || Err("corosync-cmapctl failed: exit status 1".to_owned());
        let e = startup_fencing_nodes(&cfg(""), no_list(), p).unwrap_err();
        assert_eq!(e.code(), crate::exit::FATAL);
        let t = e.to_string();
        assert!(t.starts_with("startup fencing needs the list of cluster nodes: corosync-cmapctl failed"), "{t}");
        assert!(t.contains("set `nodes = [...]` in /etc/cohort/cohort.toml") && t.contains("startup_fencing = false"));
        assert_eq!(startup_fencing_nodes(&cfg("startup_fencing = false"), no_list(), p), Ok(None));
        assert_eq!(startup_fencing_nodes(&cfg(""), Ok(vec![1, 2]), p), Ok(Some(vec![1, 2])));
        assert_eq!(startup_fencing_nodes(&cfg("startup_fencing = false"), Ok(vec![1, 2]), p), Ok(None));
    }
}
