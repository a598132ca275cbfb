//! The engine: one [`Node`] plus everything that executes its effects, with
//! no I/O of its own. The real daemon ([`crate::daemon`]) and the demo
//! ([`crate::demo`]) both drive it: they feed transport events, timer
//! expiries, kernel and fence results with the current time, and provide an
//! [`Env`] that multicasts bytes and starts fence agents.
//!
//! After every input the engine drains the node: effects are executed in
//! order (timers go to a min-heap, kernel operations to the filesystem's
//! backend, fencing to the `Env`), then every queued message is encoded and
//! sent. Kernel completions that a backend knows at once are fed back
//! before the call returns.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use cohort_core::gcs::{NodeList, Reason};
use cohort_core::node::{
    DeliverError, Effect, HandleError, Input, KernelEvent, KernelOp, Notice, Request, RequestError, TimerToken,
};
use cohort_core::status::DaemonWait;
use cohort_core::wire::{fs_name, FsName, Mode, MAX_MESSAGE};
use cohort_core::{Config as CoreConfig, GroupId, Incarnation, Instant, Member, Node, NodeId};
use tracing::Level;

use crate::api::{self, Gen, KernelJson, LogKind, StatsJson, StatusJson};
use crate::backend::{failure_event, op_name, Ask, AuxState, Backend, Remounted};
use crate::config::{mode_name, FsConfig};
use crate::eventlog::EventLog;
use crate::fence::FenceWhy;
use crate::transport::{describe, TransportEvent};

/// What the engine needs from its surroundings.
pub trait Env {
    /// Multicast to the daemon group in agreed order.
    fn send(&mut self, bytes: &[u8]) -> Result<(), String>;
    /// Run the fence agent against `target` (off the caller's thread); the
    /// result comes back through [`Engine::fenced`].
    fn fence(&mut self, target: Member, known_inc: bool, why: FenceWhy);
}

/// Why the engine's node stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Lost a stale-merge verdict: restart with a new incarnation.
    Reset,
    Incompatible {
        ours_min: u16,
        ours_max: u16,
        cluster: u16,
    },
    /// A send failed: the transport is gone.
    Transport(String),
    /// A `Block` failed: the core (and through it the cluster) believes the
    /// kernel is blocked while it may not be. Not a member we can keep: the
    /// daemon stops without leaving cleanly (nothing more is sent), so the
    /// others see a failure, fence this node and replay its journal.
    BlockFailed(String),
}

/// One configured filesystem and its backend.
pub struct FsRuntime {
    pub cfg: FsConfig,
    pub name: FsName,
    pub backend: Box<dyn Backend>,
    pub kernel: KernelJson,
    /// The mode of the last mount request (what the kernel mounts).
    requested: Mode,
    /// The kernel's mode while mounted.
    mode: Option<Mode>,
    remount: Option<RemountStep>,
    /// What the kernel does with the filesystem (`kernel.state` in words).
    state: KernelState,
    /// The kernel withdrew it (until it is released or unmounted).
    withdrawn: bool,
}

pub use crate::api::KernelState;

/// A `cohortctl remount` in progress. The order is the core's contract
/// (and the simulated host's): rw -> ro remounts the kernel first (its
/// journal is flushed clean) and then tells the cluster; ro -> rw tells the
/// cluster first and remounts the kernel once the change is agreed, so the
/// kernel never writes as a member the others still take for read-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RemountStep {
    /// The kernel remounts to this mode; then the cluster is told.
    KernelFirst(Mode),
    /// The cluster was asked; the kernel remounts once it agreed.
    Agreeing(Mode),
    /// Agreed; the kernel remounts.
    KernelAfter(Mode),
}

impl RemountStep {
    fn text(self) -> String {
        match self {
            RemountStep::KernelFirst(m) => format!("the kernel remounts {} before the cluster is told", mode_name(m)),
            RemountStep::Agreeing(m) => format!("the cluster agrees on {}; then the kernel remounts", mode_name(m)),
            RemountStep::KernelAfter(m) => format!("agreed; the kernel remounts {}", mode_name(m)),
        }
    }
}

impl FsRuntime {
    pub fn new(cfg: FsConfig, backend: Box<dyn Backend>) -> Result<FsRuntime, String> {
        let name = fs_name(&cfg.name).map_err(|_| format!("invalid filesystem name {:?}", cfg.name))?;
        let state = KernelState::Idle;
        let kernel =
            KernelJson { backend: backend.kind().to_owned(), state: state.name().into(), ..Default::default() };
        let requested = cfg.mode;
        Ok(FsRuntime { cfg, name, backend, kernel, requested, mode: None, remount: None, state, withdrawn: false })
    }

    pub fn state(&self) -> KernelState {
        self.state
    }

    fn set_state(&mut self, s: KernelState) {
        self.state = s;
        self.kernel.state = s.name().into();
        if matches!(s, KernelState::Idle | KernelState::Released | KernelState::Mounting) {
            self.withdrawn = false;
        }
    }

    fn set_mode(&mut self, mode: Option<Mode>) {
        self.mode = mode;
        self.kernel.mode = mode.map(|m| mode_name(m).to_owned());
    }

    fn set_remount(&mut self, step: Option<RemountStep>) {
        self.remount = step;
        self.kernel.remount = step.map(RemountStep::text);
    }

    /// Mounted (or mounting) from the kernel's point of view.
    pub fn active(&self) -> bool {
        matches!(self.state, KernelState::Mounting | KernelState::Mounted)
    }

    /// Does the kernel still have this filesystem mounted? Asks the host:
    /// the configured `mount_point` in /proc/self/mounts (every backend),
    /// then the backend (gfs2-sysfs: its sysfs directory; exec:
    /// `hooks.mounted`; memory: its own state). `Some(why)`: yes; `Err`:
    /// cannot tell (treat as mounted).
    pub fn kernel_mounted(&self) -> Result<Option<String>, String> {
        if let Some(mp) = &self.cfg.mount_point {
            let mounts = std::fs::read_to_string("/proc/self/mounts")
                .map_err(|e| format!("cannot read /proc/self/mounts to check {}: {e}", mp.display()))?;
            if let Some(ty) = crate::proc::mounted_at(&mounts, mp) {
                return Ok(Some(format!("mounted at {} ({ty}, in /proc/self/mounts)", mp.display())));
            }
        }
        self.backend.kernel_mounted()
    }
}

pub struct Timings {
    pub fence_retry_ms: u64,
    pub recovery_retry_ms: u64,
    /// Startup fencing grace (see `Config::startup_fence_delay_ms`).
    pub startup_fence_delay_ms: u64,
}

impl Default for Timings {
    /// The core's defaults.
    fn default() -> Timings {
        let c = CoreConfig::new(NodeId(1), Incarnation(1));
        Timings {
            fence_retry_ms: c.fence_retry_ms,
            recovery_retry_ms: c.recovery_retry_ms,
            startup_fence_delay_ms: c.startup_fence_delay_ms,
        }
    }
}

pub struct Engine {
    node: Node,
    log: EventLog,
    timers: BinaryHeap<Reverse<(u64, u64)>>,
    fs: Vec<FsRuntime>,
    kq: VecDeque<KernelEvent>,
    stop: Option<Stop>,
    buf: Vec<u8>,
    transport: String,
    started_at: u64,
    now: u64,
    /// The daemon group's members last told to the backends.
    cluster_seen: Vec<u32>,
    counters: crate::metrics::Counters,
    /// Journal replays this node's kernel runs: (fs, jid, started at ms).
    replays: Vec<(FsName, u16, u64)>,
}

fn fmt_member(m: Member) -> String {
    if m.inc.0 == 0 {
        // Startup fencing: a configured node never seen in this cluster's life.
        format!("node {} (never joined: startup fencing)", m.node.0)
    } else {
        format!("node {} (incarnation {})", m.node.0, m.inc.0)
    }
}

impl Engine {
    pub fn new(
        node: NodeId,
        inc: u64,
        timings: Timings,
        fs: Vec<FsRuntime>,
        log_entries: usize,
        transport: &str,
        now: u64,
    ) -> Engine {
        let mut cfg = CoreConfig::new(node, Incarnation(inc));
        cfg.fence_retry_ms = timings.fence_retry_ms;
        cfg.recovery_retry_ms = timings.recovery_retry_ms;
        cfg.startup_fence_delay_ms = timings.startup_fence_delay_ms;
        Engine {
            node: Node::new(cfg),
            log: EventLog::new(node.0, log_entries),
            timers: BinaryHeap::new(),
            fs,
            kq: VecDeque::new(),
            stop: None,
            buf: vec![0u8; MAX_MESSAGE],
            transport: transport.to_owned(),
            started_at: now,
            now,
            cluster_seen: Vec::new(),
            counters: Default::default(),
            replays: Vec::new(),
        }
    }

    /// What `cohortctl metrics` reports.
    pub fn counters(&self) -> &crate::metrics::Counters {
        &self.counters
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Tell the node which nodes make up the cluster (`Input::Nodelist`):
    /// enables startup fencing. Call right after [`Engine::new`], before any
    /// transport event. Produces no effects.
    pub fn set_nodelist(&mut self, nodes: &[u32]) {
        let mut l = NodeList::new();
        for n in nodes {
            if l.push(NodeId(*n)).is_err() {
                self.note(LogKind::Error, format!("nodelist: more than {} nodes, the rest is ignored", l.capacity()));
                break;
            }
        }
        let text = format!("configured cluster nodes {} (startup fencing on)", crate::transport::fmt_nodes(&l));
        match self.node.handle(Instant(self.now), Input::Nodelist(l)) {
            Ok(()) => self.note(LogKind::Info, text),
            Err(e) => self.handle_error(e),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.node.config().node
    }

    pub fn incarnation(&self) -> u64 {
        self.node.config().incarnation.0
    }

    pub fn log(&self) -> &EventLog {
        &self.log
    }

    pub fn stopped(&self) -> Option<&Stop> {
        self.stop.as_ref()
    }

    pub fn filesystems(&self) -> &[FsRuntime] {
        &self.fs
    }

    pub fn filesystem_mut(&mut self, name: &str) -> Option<&mut FsRuntime> {
        self.fs.iter_mut().find(|f| f.cfg.name == name)
    }

    fn gen(&self) -> Gen {
        self.node.generation().into()
    }

    /// Add an event log entry (and a tracing line at the kind's level:
    /// ERROR for `error`, WARN for `fence`, INFO for the rest).
    pub fn note(&mut self, kind: LogKind, text: String) {
        let level = match kind {
            LogKind::Error => Level::ERROR,
            LogKind::Fence => Level::WARN,
            _ => Level::INFO,
        };
        self.note_at(level, kind, text);
    }

    /// Add an event log entry with a tracing line at `level`: WARN/ERROR is
    /// what an operator must see (node loss, fencing, stale merge,
    /// withdraw, failures), INFO membership and mount changes.
    pub fn note_at(&mut self, level: Level, kind: LogKind, text: String) {
        let gen = self.gen();
        match level {
            Level::ERROR => tracing::error!(gen = %gen, kind = kind.name(), "{text}"),
            Level::WARN => tracing::warn!(gen = %gen, kind = kind.name(), "{text}"),
            Level::INFO => tracing::info!(gen = %gen, kind = kind.name(), "{text}"),
            _ => tracing::debug!(gen = %gen, kind = kind.name(), "{text}"),
        }
        self.log.push(self.now, gen, kind, text);
    }

    /// Add an event log entry without a tracing line (the caller logged it
    /// at its own level).
    pub fn log_only(&mut self, kind: LogKind, text: String) {
        let gen = self.gen();
        self.log.push(self.now, gen, kind, text);
    }

    fn fs_of_group(&self, g: GroupId) -> String {
        for f in &self.fs {
            if GroupId::of_fs(&f.cfg.name) == g {
                return f.cfg.name.clone();
            }
            if let Some(aux) = f.backend.aux_group().filter(|a| GroupId::of_fs(a) == g) {
                return aux.to_owned();
            }
        }
        format!("group {:#x}", g.0)
    }

    fn tick(&mut self, now: u64) {
        if now > self.now {
            self.now = now;
        }
    }

    /// Feed one input and run everything it causes. Returns the request
    /// error for `Input::Request` (other errors are logged).
    fn feed(&mut self, now: u64, input: Input<'_>, env: &mut dyn Env) -> Result<(), RequestError> {
        self.tick(now);
        let mut result = Ok(());
        let mut tries = 0;
        loop {
            match self.node.handle(Instant(self.now), input.clone()) {
                Err(HandleError::Backpressure) if tries < 3 => {
                    tries += 1;
                    self.drain(env);
                    continue;
                }
                Ok(()) => {}
                Err(HandleError::Request(e)) => result = Err(e),
                Err(e) => self.handle_error(e),
            }
            break;
        }
        self.drain(env);
        self.run_kq(env);
        self.run_asks(env);
        self.advance_remounts(now, env);
        result
    }

    /// `cohortctl remount FS ro|rw` (see [`RemountStep`] for the order).
    fn request_remount(&mut self, now: u64, i: usize, mode: Mode, env: &mut dyn Env) -> Result<String, String> {
        let fs = self.fs[i].cfg.name.clone();
        let f = &self.fs[i];
        let refuse = if mode == Mode::Spectator {
            Some("remount goes between ro and rw: a spectator holds no journal (umount, then mount --spectator)".into())
        } else if self.stop.is_some() {
            Some("the daemon is stopping".into())
        } else if let Some(step) = f.remount {
            Some(format!("a remount of {fs} is already in progress ({})", step.text()))
        } else if f.state != KernelState::Mounted {
            Some(format!("{fs} is not mounted here (kernel: {})", f.state.name()))
        } else if f.withdrawn {
            Some(format!("{fs} was withdrawn by the kernel: umount it"))
        } else {
            match f.mode {
                Some(Mode::Spectator) => Some(format!(
                    "{fs} is mounted as a spectator (no journal): umount it and mount it {}",
                    mode_name(mode)
                )),
                Some(m) if m == mode => Some(format!("{fs} is already mounted {}", mode_name(mode))),
                None => Some(format!("{fs} is not mounted here")),
                Some(_) => None,
            }
        };
        if let Some(why) = refuse {
            self.note(LogKind::Request, format!("remount of {fs} ({}) rejected: {why}", mode_name(mode)));
            return Err(why);
        }
        let text = format!("remount of {fs} ({}) requested", mode_name(mode));
        self.note(LogKind::Request, text.clone());
        if mode == Mode::Ro {
            match self.fs[i].backend.remount(mode) {
                Err(e) => {
                    self.note(LogKind::Error, format!("remount of {fs} ro: {e}; it stays rw"));
                    Err(e)
                }
                Ok(Remounted::Done) => {
                    self.fs[i].set_mode(Some(mode));
                    self.remount_agree(now, i, mode, env)?;
                    Ok(format!("{fs} remounted ro; the cluster was told"))
                }
                Ok(Remounted::Pending) => {
                    self.fs[i].set_remount(Some(RemountStep::KernelFirst(mode)));
                    Ok(format!("{text}: the kernel remounts ro, then the cluster is told"))
                }
            }
        } else {
            self.remount_agree(now, i, mode, env)?;
            Ok(format!("{text}: the kernel remounts rw once the cluster agreed"))
        }
    }

    /// Ask the cluster for this node's new mode of filesystem `i`.
    fn remount_agree(&mut self, now: u64, i: usize, mode: Mode, env: &mut dyn Env) -> Result<(), String> {
        let fs = self.fs[i].cfg.name.clone();
        let req = Request::Remount { fs: self.fs[i].name.clone(), mode };
        if mode == Mode::Rw {
            // Before the feed: the change may be agreed within it.
            self.fs[i].set_remount(Some(RemountStep::Agreeing(mode)));
        }
        match self.feed(now, Input::Request(req), env) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.fs[i].set_remount(None);
                let why = match e {
                    RequestError::NotMounted => format!("{fs} is not a member of its mount group here"),
                    RequestError::Busy => format!("a request for {fs} is already in progress (or it withdrew)"),
                    e => format!("{e:?}"),
                };
                let kernel = self.fs[i].mode.map(mode_name).unwrap_or("not mounted");
                self.note(
                    LogKind::Error,
                    format!("remount of {fs} ({}): the cluster refused: {why} (kernel: {kernel})", mode_name(mode)),
                );
                Err(why)
            }
        }
    }

    /// Remounts waiting for the cluster's agreement: remount the kernel once
    /// this node's new mode is agreed.
    fn advance_remounts(&mut self, now: u64, env: &mut dyn Env) {
        if !self.fs.iter().any(|f| matches!(f.remount, Some(RemountStep::Agreeing(_)))) {
            return;
        }
        let st = self.node.status();
        for i in 0..self.fs.len() {
            let Some(RemountStep::Agreeing(mode)) = self.fs[i].remount else { continue };
            let fs = self.fs[i].cfg.name.clone();
            let g = st.group(&fs);
            match g.and_then(|g| g.members.iter().find(|m| m.node == st.node).map(|m| (g.synced, m.mode))) {
                Some((true, m)) if m == mode => {}
                Some(_) => continue,
                None => {
                    self.fs[i].set_remount(None);
                    self.note(
                        LogKind::Request,
                        format!("{fs}: remount abandoned: this node is no longer in the group"),
                    );
                    continue;
                }
            }
            self.note(
                LogKind::Request,
                format!("{fs}: the cluster agreed on {}; remounting the kernel", mode_name(mode)),
            );
            self.fs[i].set_remount(Some(RemountStep::KernelAfter(mode)));
            match self.fs[i].backend.remount(mode) {
                Ok(Remounted::Pending) => {}
                Ok(Remounted::Done) => self.remounted(now, &fs, mode, Ok(()), env),
                Err(e) => self.remounted(now, &fs, mode, Err(e), env),
            }
        }
    }

    /// A backend's kernel remount finished.
    pub fn remounted(&mut self, now: u64, fs: &str, mode: Mode, result: Result<(), String>, env: &mut dyn Env) {
        self.tick(now);
        let Some(i) = self.fs.iter().position(|f| f.cfg.name == fs) else { return };
        let step = self.fs[i].remount;
        self.fs[i].set_remount(None);
        let m = mode_name(mode);
        match (step, result) {
            (Some(RemountStep::KernelFirst(_)), Ok(())) => {
                self.fs[i].set_mode(Some(mode));
                self.note(LogKind::Kernel, format!("{fs}: remounted {m}; telling the cluster"));
                let _ = self.remount_agree(now, i, mode, env);
            }
            (Some(RemountStep::KernelFirst(_)), Err(e)) => {
                self.note(
                    LogKind::Error,
                    format!("{fs}: remount {m} FAILED in the kernel: {e}; it stays rw, the cluster was not told"),
                );
            }
            (Some(RemountStep::KernelAfter(_)), Ok(())) => {
                self.fs[i].set_mode(Some(mode));
                self.note(LogKind::Kernel, format!("{fs}: remounted {m}"));
            }
            (Some(RemountStep::KernelAfter(_)), Err(e)) => {
                // The cluster takes this node for rw while its kernel is
                // ro: tell it ro again (an ro member is never asked to
                // replay a journal).
                self.note(
                    LogKind::Error,
                    format!("{fs}: remount {m} FAILED in the kernel: {e}; telling the cluster ro again"),
                );
                let _ = self.remount_agree(now, i, Mode::Ro, env);
            }
            (_, r) => {
                let how = match r {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => format!("failed: {e}"),
                };
                self.log_only(LogKind::Kernel, format!("{fs}: a remount {m} finished after it was abandoned ({how})"));
            }
        }
    }

    /// Hand the auxiliary groups' agreed state to their backends.
    fn update_aux(&mut self) {
        if !self.fs.iter().any(|f| f.backend.aux_group().is_some()) {
            return;
        }
        let st = self.node.status();
        let me = st.node;
        let mut cluster: Vec<u32> = st.members.iter().map(|p| p.node.0).collect();
        cluster.sort_unstable();
        if cluster != self.cluster_seen {
            for f in self.fs.iter_mut() {
                f.backend.cluster_members(&cluster);
            }
            self.cluster_seen = cluster;
        }
        let gate = if st.daemon != DaemonWait::Nothing {
            Err("the daemon group is syncing".to_owned())
        } else if !st.fencing.is_empty() {
            let v: Vec<String> = st.fencing.iter().map(|f| f.target.node.0.to_string()).collect();
            Err(format!("fencing of node(s) {} pending", v.join(",")))
        } else if st.quorate == Some(false) {
            Err("the cluster is not quorate".to_owned())
        } else {
            Ok(())
        };
        let mut notes = Vec::new();
        for f in self.fs.iter_mut() {
            let Some(aux) = f.backend.aux_group() else { continue };
            let Some(g) = st.group(aux) else { continue };
            let mut members: Vec<u32> = g.members.iter().map(|m| m.node.0).collect();
            members.sort_unstable();
            let a = AuxState {
                member: members.contains(&me.0),
                synced: g.synced,
                generation: g.generation,
                members,
                gate: gate.clone(),
            };
            f.backend.aux_state(&a);
            notes.extend(f.backend.take_notes());
        }
        for n in notes {
            self.note(LogKind::Kernel, n);
        }
    }

    /// Carry out what backends asked for (join/leave an auxiliary group,
    /// leave a filesystem's group after the kernel unmounted it).
    fn run_asks(&mut self, env: &mut dyn Env) {
        for _ in 0..8 {
            let mut asks = Vec::new();
            let mut notes = Vec::new();
            for f in self.fs.iter_mut() {
                notes.extend(f.backend.take_notes());
                let aux = f.backend.aux_group().map(str::to_owned);
                for a in f.backend.take_asks() {
                    asks.push((f.cfg.name.clone(), f.name.clone(), aux.clone(), a));
                }
            }
            for n in notes {
                self.note(LogKind::Kernel, n);
            }
            if asks.is_empty() {
                return;
            }
            for (name, fsname, aux, a) in asks {
                match (a, aux.as_deref().and_then(|x| fs_name(x).ok())) {
                    (Ask::JoinAux, Some(g)) => {
                        let r = self.feed(
                            self.now,
                            Input::Request(Request::Mount { fs: g.clone(), mode: Mode::Spectator, journals: 1 }),
                            env,
                        );
                        if let Err(e) = r {
                            self.note(LogKind::Error, format!("{name}: joining {g}: {e:?}"));
                        }
                    }
                    (Ask::LeaveAux, Some(g)) => {
                        let r = self.feed(self.now, Input::Request(Request::Unmount { fs: g.clone() }), env);
                        if let Err(e) = r {
                            tracing::debug!("{name}: leaving {g}: {e:?}");
                            // Nothing to wait for: let the kernel go on.
                            if let Some(f) = self.fs.iter_mut().find(|f| f.cfg.name == name) {
                                f.backend.aux_left();
                            }
                        }
                    }
                    (Ask::LeaveFs, _) => {
                        if let Err(e) = self.request(self.now, &name, RequestKind::Unmount, env) {
                            self.note(
                                LogKind::Error,
                                format!("{fsname}: leaving the mount group after the unmount: {e}"),
                            );
                        }
                    }
                    (a, None) => self.note(LogKind::Error, format!("{name}: {a:?} without an auxiliary group")),
                }
            }
        }
    }

    /// Feed the kernel completions queued by backends.
    fn run_kq(&mut self, env: &mut dyn Env) {
        while let Some(k) = self.kq.pop_front() {
            let level = match &k {
                KernelEvent::MountResult { ok: false, .. }
                | KernelEvent::RecoveryDone { ok: false, .. }
                | KernelEvent::Withdraw { .. } => Level::ERROR,
                _ => Level::INFO,
            };
            self.note_at(level, LogKind::KernelEvent, describe_kernel_event(&k));
            self.apply_kernel_view(&k);
            let mut r = self.node.handle(Instant(self.now), Input::Kernel(k.clone()));
            if r == Err(HandleError::Backpressure) {
                self.drain(env);
                r = self.node.handle(Instant(self.now), Input::Kernel(k));
            }
            if let Err(e) = r {
                self.handle_error(e);
            }
            self.drain(env);
        }
    }

    fn handle_error(&mut self, e: HandleError) {
        match e {
            HandleError::Stopped => tracing::debug!("input after the node stopped, ignored"),
            HandleError::Deliver(DeliverError::Wire(w)) => {
                self.note(LogKind::Error, format!("undecodable message dropped: {}", wire_error_text(w)))
            }
            HandleError::Deliver(DeliverError::SenderMismatch) => {
                self.note(LogKind::Error, "message whose header names another sender dropped".into())
            }
            HandleError::Fence(cohort_core::node::FenceInputError::NotRequested) => {
                self.note(LogKind::Fence, "fence result not applied: that fencing is no longer requested".into())
            }
            HandleError::Kernel(cohort_core::node::KernelError::UnknownFs) => {
                self.note(LogKind::Error, "kernel event not applied: no mount group for that filesystem".into())
            }
            HandleError::Kernel(cohort_core::node::KernelError::Unexpected) => {
                self.note(LogKind::Error, "kernel event not applied: the group did not ask the kernel for it".into())
            }
            HandleError::Barrier(b) => {
                let why = match b {
                    cohort_core::barrier::BarrierError::NoRingYet => "a membership change before the first ring",
                    cohort_core::barrier::BarrierError::RingWentBack => "a ring id went backwards",
                    cohort_core::barrier::BarrierError::TooManyEntries => "more joined/left entries than nodes",
                    cohort_core::barrier::BarrierError::DroppedSelf => {
                        "a membership change that dropped this node without saying it left"
                    }
                    _ => "an event the transport contract does not allow",
                };
                self.note(LogKind::Error, format!("transport event rejected: {why}"))
            }
            HandleError::Backpressure => {
                self.note(LogKind::Error, "input not taken: the node's queues are full (will be retried)".into())
            }
            HandleError::Request(r) => self.note(LogKind::Error, format!("request rejected: {r:?}")),
            other => self.note(LogKind::Error, format!("input rejected: {other:?}")),
        }
    }

    /// Execute every pending effect and send every pending message.
    fn drain(&mut self, env: &mut dyn Env) {
        loop {
            let mut moved = false;
            while let Some(e) = self.node.poll_effect() {
                moved = true;
                self.effect(e, env);
            }
            // Before anything goes out: a lockspace stops before this
            // node's START for a change of its group is sent.
            self.update_aux();
            while let Some(n) = self.node.poll_transmit(&mut self.buf) {
                moved = true;
                // Transport gone, or a failed block: nothing more goes out
                // (after a failed block, not even the START that would tell
                // the others this node is blocked).
                if self.stop.as_ref().is_some_and(|s| matches!(s, Stop::Transport(_) | Stop::BlockFailed(_))) {
                    continue;
                }
                if let Err(e) = env.send(&self.buf[..n]) {
                    self.note(LogKind::Error, format!("send failed: {e}"));
                    self.stop = Some(Stop::Transport(e));
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn effect(&mut self, e: Effect, env: &mut dyn Env) {
        match e {
            Effect::SetTimer { token, at } => self.timers.push(Reverse((at.0, token.0))),
            Effect::Kernel { fs, op, .. } => self.kernel_op(&fs, op),
            Effect::Fence { target } => {
                self.counters.fence_attempts += 1;
                self.note(LogKind::Fence, format!("fencing {}: running the fence agent", fmt_member(target)));
                // Incarnation 0: startup fencing of a node never seen (unknown).
                env.fence(target, target.inc.0 != 0, FenceWhy::Fence);
            }
            Effect::Kill { node } => {
                self.counters.kills += 1;
                self.note(
                    LogKind::Fence,
                    format!("stale-merge backup: making sure node {} resets (fence agent, reason kill)", node.0),
                );
                env.fence(Member { node, inc: Incarnation(0) }, false, FenceWhy::Kill);
            }
            Effect::ResetSelf => {
                self.counters.resets += 1;
                self.note(
                    LogKind::Error,
                    "RESET: this node lost a stale-merge verdict (its state diverged while partitioned); \
                     releasing everything and restarting with a new incarnation"
                        .into(),
                );
                self.stop = Some(Stop::Reset);
            }
            Effect::Incompatible { ours_min, ours_max, cluster } => {
                self.note(
                    LogKind::Error,
                    format!(
                        "INCOMPATIBLE: this daemon speaks protocol {ours_min}..={ours_max}, the cluster uses {cluster}"
                    ),
                );
                self.stop = Some(Stop::Incompatible { ours_min, ours_max, cluster });
            }
            Effect::Notify(n) => {
                match n {
                    Notice::DaemonSynced { .. } => self.counters.daemon_syncs += 1,
                    Notice::GroupSynced { .. } => self.counters.group_syncs += 1,
                    Notice::StaleMerge { .. } => self.counters.stale_merges += 1,
                    _ => {}
                }
                let t = self.describe_notice(&n);
                let level = match n {
                    Notice::StaleMerge { .. }
                    | Notice::Fenced { .. }
                    | Notice::FenceFailed { .. }
                    | Notice::JournalRecoveryFailed { .. } => Level::WARN,
                    Notice::Dropped { .. } => Level::DEBUG,
                    _ => Level::INFO,
                };
                self.note_at(level, LogKind::Notice, t);
            }
        }
    }

    fn kernel_op(&mut self, fs: &FsName, op: KernelOp) {
        if let Some(i) = self.fs.iter().position(|f| f.backend.aux_group() == Some(fs.as_str())) {
            // An auxiliary group (a DLM lockspace's membership): its state
            // goes to the backend in `update_aux`; of its kernel operations
            // only "this node left" means something.
            tracing::debug!(group = %fs, op = op_name(&op), "auxiliary group operation");
            if matches!(op, KernelOp::Unmounted | KernelOp::Release | KernelOp::MountError(_)) {
                self.fs[i].backend.aux_left();
                for n in self.fs[i].backend.take_notes() {
                    self.note(LogKind::Kernel, n);
                }
            }
            return;
        }
        let text = describe_op(fs, &op);
        self.note(LogKind::Kernel, text);
        let Some(i) = self.fs.iter().position(|f| f.name == *fs) else {
            self.note(
                LogKind::Error,
                format!("{fs}: kernel operation {} for a filesystem that is not configured", op_name(&op)),
            );
            if let Some(ev) = failure_event(fs, &op) {
                self.kq.push_back(ev);
            }
            return;
        };
        match op {
            KernelOp::MountFirst(_) | KernelOp::Mount(_) => {
                let m = self.fs[i].requested;
                self.fs[i].set_mode(Some(m));
            }
            KernelOp::MountSpectator => self.fs[i].set_mode(Some(Mode::Spectator)),
            KernelOp::Release | KernelOp::Unmounted | KernelOp::MountError(_) => {
                self.fs[i].set_mode(None);
                if let Some(step) = self.fs[i].remount {
                    self.note(
                        LogKind::Request,
                        format!("{fs}: remount abandoned ({}): the filesystem left", step.text()),
                    );
                    self.fs[i].set_remount(None);
                }
            }
            _ => {}
        }
        match op {
            KernelOp::MountFirst(_) | KernelOp::Mount(_) | KernelOp::MountSpectator => {
                self.fs[i].set_state(KernelState::Mounting)
            }
            KernelOp::Release => self.fs[i].set_state(KernelState::Released),
            KernelOp::Unmounted => self.fs[i].set_state(KernelState::Idle),
            KernelOp::MountError(_) => self.fs[i].set_state(KernelState::Failed),
            _ => {}
        }
        {
            let k = &mut self.fs[i].kernel;
            match op {
                KernelOp::Block => k.blocked = true,
                KernelOp::Unblock => k.blocked = false,
                KernelOp::SetJid(j) => k.jid = Some(j.0),
                KernelOp::MountFirst(j) | KernelOp::Mount(j) => {
                    k.first = matches!(op, KernelOp::MountFirst(_));
                    k.jid = Some(j.0);
                    k.last_error = None;
                }
                KernelOp::MountSpectator => {
                    k.first = false;
                    k.jid = None;
                    k.last_error = None;
                }
                KernelOp::RecoverJournal(_) => {}
                KernelOp::Release => {
                    k.blocked = false;
                }
                KernelOp::Unmounted => {
                    k.blocked = false;
                    k.jid = None;
                    k.first = false;
                }
                KernelOp::MountError(e) => {
                    k.last_error = Some(mount_error_text(e).to_owned());
                }
            }
        }
        if let KernelOp::RecoverJournal(j) = op {
            self.replays.retain(|(f, jid, _)| !(f == fs && *jid == j.0));
            self.replays.push((fs.clone(), j.0, self.now));
        }
        let mut out = Vec::new();
        let r = self.fs[i].backend.apply(op, &mut out);
        if let Err(e) = r {
            if op == KernelOp::Block {
                self.block_failed(fs.as_str(), &e);
                return;
            }
            self.note(LogKind::Error, format!("{fs}: {} failed: {e}", op_name(&op)));
            self.fs[i].kernel.last_error = Some(e);
            if let Some(ev) = failure_event(fs, &op) {
                out.push(ev);
            }
        }
        self.kq.extend(out);
    }

    fn apply_kernel_view(&mut self, k: &KernelEvent) {
        match k {
            KernelEvent::MountResult { ok: false, .. } => self.counters.mount_failures += 1,
            KernelEvent::Withdraw { .. } => self.counters.withdraws += 1,
            KernelEvent::RecoveryDone { fs, jid, ok } => {
                if *ok {
                    self.counters.recoveries_ok += 1;
                } else {
                    self.counters.recoveries_failed += 1;
                }
                if let Some(p) = self.replays.iter().position(|(f, j, _)| f == fs && *j == jid.0) {
                    let took = self.now.saturating_sub(self.replays.remove(p).2);
                    self.counters.recovery_ms_sum += took;
                    self.counters.recovery_ms_max = self.counters.recovery_ms_max.max(took);
                }
            }
            _ => {}
        }
        let (fs, f): (&FsName, fn(&mut FsRuntime)) = match k {
            KernelEvent::MountResult { fs, ok: true } => (fs, |f| f.set_state(KernelState::Mounted)),
            KernelEvent::MountResult { fs, ok: false } => (fs, |f| {
                f.set_state(KernelState::Failed);
                f.kernel.last_error = Some("mount failed".into());
            }),
            KernelEvent::Withdraw { fs } => (fs, |f| {
                f.withdrawn = true;
                f.kernel.last_error = Some("withdrawn".into());
            }),
            _ => return,
        };
        if let Some(r) = self.fs.iter_mut().find(|r| r.name == *fs) {
            f(r);
        }
    }

    fn describe_notice(&self, n: &Notice) -> String {
        match n {
            Notice::DaemonSynced { generation, members } => {
                format!("daemon group synced at generation {} with {members} member(s)", Gen::from(*generation))
            }
            Notice::GroupSynced { group, generation, members } => format!(
                "{}: mount group synced at generation {} with {members} member(s)",
                self.fs_of_group(*group),
                Gen::from(*generation)
            ),
            Notice::StaleMerge { node, partitions } => format!(
                "STALE MERGE: node {} came back with diverged state ({partitions} partitions met); it must reset",
                node.0
            ),
            Notice::JournalRecovered { group, jid } => {
                format!("{}: journal {} recovered", self.fs_of_group(*group), jid.0)
            }
            // Attempts are counted from 0 on the wire, from 1 in words.
            Notice::JournalRecoveryFailed { group, jid, attempt } => format!(
                "{}: recovery of journal {} failed (attempt {}); the next member retries",
                self.fs_of_group(*group),
                jid.0,
                u32::from(*attempt) + 1
            ),
            Notice::Fenced { target } => format!("{} fenced", fmt_member(*target)),
            Notice::FenceFailed { target, attempt } => {
                format!(
                    "fencing {} failed (attempt {}); the next actor retries",
                    fmt_member(*target),
                    u32::from(*attempt) + 1
                )
            }
            Notice::Dropped { reason } => format!("message dropped: {}", api::drop_reason_name(*reason)),
            other => format!("{other:?}"),
        }
    }

    // ---- inputs ------------------------------------------------------------

    pub fn transport_event(&mut self, now: u64, ev: TransportEvent, env: &mut dyn Env) {
        self.tick(now);
        if let Some(t) = describe(&ev) {
            self.note(LogKind::Change, t);
        }
        if matches!(ev, TransportEvent::Ring(_)) {
            self.counters.views += 1;
        }
        // What an operator must see at WARN: nodes lost (not a clean leave)
        // and quorum lost.
        match &ev {
            TransportEvent::Confchg(c) => {
                let lost: Vec<String> = c
                    .left
                    .iter()
                    .filter(|m| m.reason != Reason::Leave)
                    .map(|m| format!("node {} ({})", m.node.0, crate::transport::reason_text(m.reason)))
                    .collect();
                if !lost.is_empty() {
                    self.note_at(
                        Level::WARN,
                        LogKind::Change,
                        format!("lost {}: failed or cut off; it will be fenced if it had a journal", lost.join(", ")),
                    );
                }
            }
            TransportEvent::Quorum(q) if !q.quorate => self.note_at(
                Level::WARN,
                LogKind::Change,
                format!("quorum LOST at ring {} (members {})", q.ring, crate::transport::fmt_nodes(&q.members)),
            ),
            _ => {}
        }
        let _ = match ev {
            TransportEvent::Ring(r) => self.feed(now, Input::Ring(r), env),
            TransportEvent::Confchg(c) => self.feed(now, Input::Confchg(c), env),
            TransportEvent::Quorum(q) => self.feed(now, Input::Quorum(q), env),
            TransportEvent::Deliver { from, payload } => self.feed(now, Input::Deliver { from, bytes: &payload }, env),
        };
    }

    /// A `Block` of `fs` failed (at once, or later in an exec hook): fatal
    /// for safety. The node must not stay a member that the cluster
    /// believes blocked: stop (see [`Stop::BlockFailed`]).
    pub fn block_failed(&mut self, fs: &str, e: &str) {
        if let Some(f) = self.fs.iter_mut().find(|f| f.cfg.name == fs) {
            f.kernel.last_error = Some(format!("block failed: {e}"));
        }
        let text = format!(
            "{fs}: block FAILED: {e}; the cluster believes this node's kernel is blocked: stopping without \
             leaving the group cleanly (the other nodes fence this node and replay its journal)"
        );
        self.note(LogKind::Error, text.clone());
        if self.stop.is_none() {
            self.stop = Some(Stop::BlockFailed(text));
        }
    }

    /// An exec hook without a kernel event finished with an error.
    pub fn hook_failed(&mut self, now: u64, fs: &str, op: &str, e: String) {
        self.tick(now);
        if op == op_name(&KernelOp::Block) {
            self.block_failed(fs, &e);
        } else {
            self.note(LogKind::Error, format!("{fs}: {op} failed: {e}"));
        }
    }

    pub fn kernel_event(&mut self, now: u64, k: KernelEvent, env: &mut dyn Env) {
        self.tick(now);
        self.kq.push_back(k);
        self.run_kq(env);
    }

    /// A fence agent finished.
    /// `output`: what the agent wrote to stderr (logged, one entry per line).
    pub fn fenced(
        &mut self,
        now: u64,
        target: Member,
        why: FenceWhy,
        result: Result<(), String>,
        output: &str,
        env: &mut dyn Env,
    ) {
        self.tick(now);
        let ok = result.is_ok();
        let level = if ok { Level::WARN } else { Level::ERROR };
        for line in output.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
            self.note_at(level, LogKind::Fence, format!("fence agent ({}) stderr: {line}", fmt_member(target)));
        }
        match (&result, why) {
            (Ok(()), FenceWhy::Fence) => {
                self.note_at(Level::WARN, LogKind::Fence, format!("fence agent succeeded for {}", fmt_member(target)))
            }
            (Err(e), FenceWhy::Fence) => self.note_at(
                Level::ERROR,
                LogKind::Fence,
                format!("fence agent FAILED for {}: {e}", fmt_member(target)),
            ),
            (Ok(()), FenceWhy::Kill) => {
                self.note_at(Level::WARN, LogKind::Fence, format!("kill of node {} done", target.node.0))
            }
            (Err(e), FenceWhy::Kill) => {
                self.note_at(Level::ERROR, LogKind::Fence, format!("kill of node {} failed: {e}", target.node.0))
            }
        }
        if why == FenceWhy::Fence {
            if !ok {
                self.counters.fence_failures += 1;
            }
            let _ = self.feed(now, Input::Fenced { target, ok }, env);
        }
    }

    /// Operator request. `Ok(text)` when accepted.
    pub fn request(&mut self, now: u64, fs: &str, what: RequestKind, env: &mut dyn Env) -> Result<String, String> {
        self.tick(now);
        let Some(i) = self.fs.iter().position(|f| f.cfg.name == fs) else {
            let known: Vec<&str> = self.fs.iter().map(|f| f.cfg.name.as_str()).collect();
            return Err(format!("filesystem {fs:?} is not configured (configured: {})", known.join(", ")));
        };
        if let RequestKind::Remount(mode) = what {
            return self.request_remount(now, i, mode, env);
        }
        let name = self.fs[i].name.clone();
        let journals = self.fs[i].cfg.journals;
        if what == RequestKind::Unmount && self.stop.is_none() {
            // Backends that own the kernel mount unmount it first.
            if let Some(r) = self.fs[i].backend.unmount() {
                for n in self.fs[i].backend.take_notes() {
                    self.note(LogKind::Kernel, n);
                }
                match &r {
                    Ok(t) => self.note(LogKind::Request, t.clone()),
                    Err(e) => self.note(LogKind::Request, format!("unmount of {fs} rejected: {e}")),
                }
                return r;
            }
        }
        let f = &self.fs[i];
        if what == RequestKind::Unmount {
            // The core's contract: Unmount only after the kernel unmounted
            // (the others then free the journal without replaying it).
            let refuse = match f.kernel_mounted() {
                Ok(None) => None,
                Ok(Some(why)) => Some(format!(
                    "{fs} is still mounted by the kernel ({why}): umount it first; cohortd leaves the group only \
                     after the kernel unmounted the filesystem"
                )),
                Err(e) => Some(format!(
                    "cannot tell whether the kernel still has {fs} mounted ({e}): not leaving the group; umount it \
                     and fix the check first"
                )),
            };
            if let Some(why) = refuse {
                if self.stop.is_none() {
                    self.note(LogKind::Request, format!("unmount of {fs} rejected: {why}"));
                }
                return Err(why);
            }
            // What the kernel reported before the umount (a withdraw) goes
            // to the core before the leave: a leave counts as clean, and a
            // withdrawn journal must be replayed (found by `cohort-sim
            // check`; the simulated host does the same).
            let mut out = Vec::new();
            self.fs[i].backend.poll(&mut out);
            self.kq.extend(out);
            self.run_kq(env);
        }
        let (req, text) = match what {
            RequestKind::Mount(mode) => {
                (Request::Mount { fs: name, mode, journals }, format!("mount of {fs} ({}) requested", mode_name(mode)))
            }
            RequestKind::Unmount => (Request::Unmount { fs: name }, format!("unmount of {fs} requested")),
            RequestKind::Remount(_) => return Err("internal error: a remount is not a membership request".into()),
        };
        if self.stop.is_some() {
            return Err("the daemon is stopping".into());
        }
        self.note(LogKind::Request, text.clone());
        let before = self.fs[i].requested;
        if let RequestKind::Mount(m) = what {
            self.fs[i].requested = m;
        }
        match self.feed(now, Input::Request(req), env) {
            Ok(()) => Ok(text),
            Err(e) => {
                self.fs[i].requested = before;
                let why = match e {
                    RequestError::AlreadyMounted => format!("{fs} is already mounted (or being mounted) here"),
                    RequestError::NotMounted => format!("{fs} is not mounted here"),
                    RequestError::Busy => format!("a request for {fs} is already in progress"),
                    RequestError::TooManyGroups => "too many mount groups".into(),
                    RequestError::NameCollision => format!(
                        "another filesystem this node knows of has the same group id as {fs} (a 31-bit hash of the \
                         name): rename one"
                    ),
                    RequestError::InvalidName => format!("invalid filesystem name {fs:?}"),
                    RequestError::InvalidJournals => format!("invalid journal count {journals}"),
                    other => format!("{other:?}"),
                };
                self.note(LogKind::Request, format!("rejected: {why}"));
                Err(why)
            }
        }
    }

    /// Ask for the mounts configured with `auto_mount`.
    pub fn auto_mount(&mut self, now: u64, env: &mut dyn Env) {
        let auto: Vec<(String, Mode)> =
            self.fs.iter().filter(|f| f.cfg.auto_mount).map(|f| (f.cfg.name.clone(), f.cfg.mode)).collect();
        for (name, mode) in auto {
            if let Err(e) = self.request(now, &name, RequestKind::Mount(mode), env) {
                self.note(LogKind::Error, format!("automatic mount of {name}: {e}"));
            }
        }
    }

    /// Earliest timer deadline.
    pub fn next_timer(&self) -> Option<u64> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Fire every timer due at `now`.
    pub fn fire_timers(&mut self, now: u64, env: &mut dyn Env) {
        self.tick(now);
        while let Some(Reverse((at, tok))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let _ = self.feed(now, Input::Timer(TimerToken(tok)), env);
        }
    }

    /// Poll every backend (after readiness or its interval) and feed what it reports.
    pub fn poll_backends(&mut self, now: u64, env: &mut dyn Env) {
        self.tick(now);
        for i in 0..self.fs.len() {
            let mut out = Vec::new();
            self.fs[i].backend.poll(&mut out);
            self.kq.extend(out);
        }
        self.run_kq(env);
        self.run_asks(env);
    }

    /// Backend host setup once the node id is known ([`Backend::start`]).
    pub fn start_backends(&mut self) -> Result<(), String> {
        let me = self.node_id().0;
        for i in 0..self.fs.len() {
            let name = self.fs[i].cfg.name.clone();
            let notes = self.fs[i].backend.start(me).map_err(|e| format!("filesystem {name}: {e}"))?;
            for n in notes {
                self.note(LogKind::Kernel, n);
            }
        }
        Ok(())
    }

    // ---- emergencies -------------------------------------------------------

    /// Block every filesystem the kernel has (or is mounting). Returns their names.
    pub fn block_all(&mut self, now: u64, reason: &str) -> Vec<String> {
        self.tick(now);
        let mut names = Vec::new();
        for i in 0..self.fs.len() {
            if !self.fs[i].active() {
                continue;
            }
            let name = self.fs[i].cfg.name.clone();
            names.push(name.clone());
            if self.fs[i].kernel.blocked {
                self.note(LogKind::Kernel, format!("{name}: stays blocked ({reason})"));
                continue;
            }
            self.note(LogKind::Kernel, format!("{name}: block ({reason})"));
            let mut out = Vec::new();
            match self.fs[i].backend.apply(KernelOp::Block, &mut out) {
                Ok(()) => self.fs[i].kernel.blocked = true,
                Err(e) => self.note(LogKind::Error, format!("{name}: block FAILED: {e}")),
            }
        }
        names
    }

    /// Configured filesystems the kernel still has mounted (or whose state
    /// cannot be read), with why: they must not leave their groups cleanly.
    pub fn kernel_mounts(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for f in &self.fs {
            match f.kernel_mounted() {
                Ok(None) => {}
                Ok(Some(why)) => v.push((f.cfg.name.clone(), why)),
                Err(e) => v.push((f.cfg.name.clone(), format!("cannot tell: {e}"))),
            }
        }
        v
    }

    /// Block and release (withdraw) everything: the node resets.
    pub fn release_all(&mut self, now: u64, reason: &str) -> Vec<String> {
        let names = self.block_all(now, reason);
        for name in &names {
            let Some(i) = self.fs.iter().position(|f| &f.cfg.name == name) else { continue };
            self.note(LogKind::Kernel, format!("{name}: release ({reason})"));
            let mut out = Vec::new();
            match self.fs[i].backend.apply(KernelOp::Release, &mut out) {
                Ok(()) => self.fs[i].set_state(KernelState::Released),
                Err(e) => self.note(LogKind::Error, format!("{name}: release FAILED: {e}")),
            }
        }
        names
    }

    /// Filesystems this node is a mount-group member of, or the kernel has.
    pub fn busy_filesystems(&self) -> Vec<String> {
        let st = self.node.status();
        let aux: Vec<&str> = self.fs.iter().filter_map(|f| f.backend.aux_group()).collect();
        let mut v: Vec<String> =
            st.groups.iter().map(|g| g.fs.as_str()).filter(|g| !aux.contains(g)).map(str::to_owned).collect();
        for f in &self.fs {
            if f.active() && !v.contains(&f.cfg.name) {
                v.push(f.cfg.name.clone());
            }
        }
        v
    }

    // ---- status ------------------------------------------------------------

    pub fn status_json(&self, now: u64) -> StatusJson {
        let st = self.node.status();
        let s = self.node.stats();
        let stats = StatsJson {
            delivered: s.delivered,
            applied: s.applied,
            dropped_old_generation: s.dropped_old_generation,
            dropped_other_view: s.dropped_other_view,
            dropped_stale_sender: s.dropped_stale_sender,
            dropped_other: s.dropped_other,
            last_drop: s.last_drop.map(|r| api::drop_reason_name(r).to_owned()),
            wire_errors: s.wire_errors,
        };
        let kernel = |fs: &str| {
            self.fs.iter().find(|f| f.cfg.name == fs).map(|f| f.kernel.clone()).unwrap_or_else(|| KernelJson {
                backend: "none".into(),
                state: "unknown".into(),
                ..Default::default()
            })
        };
        let configured: Vec<String> = self.fs.iter().map(|f| f.cfg.name.clone()).collect();
        let mut j =
            api::status_json(&st, &self.transport, now.saturating_sub(self.started_at), stats, &kernel, &configured);
        // An auxiliary group (a DLM lockspace's membership) has no journals
        // or mounts of its own: show its lockspace instead.
        for g in j.groups.iter_mut() {
            let Some(f) = self.fs.iter().find(|f| f.backend.aux_group() == Some(g.fs.as_str())) else { continue };
            let Some((state, waits)) = f.backend.aux_status() else { continue };
            g.phase = if g.synced { "running".into() } else { "syncing".into() };
            g.kernel = KernelJson { backend: "dlm lockspace".into(), state, ..Default::default() };
            g.waits_for = match (waits, &g.waits_for) {
                (_, Some(w)) if !g.synced => Some(w.clone()),
                (Some(text), _) => Some(api::WaitJson { kind: "lockspace".into(), nodes: vec![], jid: None, text }),
                (None, _) => None,
            };
        }
        j
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Mount(Mode),
    Unmount,
    /// ro <-> rw.
    Remount(Mode),
}

/// A wire decoding error in words.
pub fn wire_error_text(w: cohort_core::wire::WireError) -> String {
    use cohort_core::wire::WireError as W;
    match w {
        W::Truncated => "truncated".into(),
        W::Oversize => "too large".into(),
        W::BadMagic => "not a cohort message (bad magic)".into(),
        W::UnsupportedVersion(v) => format!("unsupported wire version {v}"),
        W::UnknownType(t) => format!("unknown message type {t}"),
        W::InvalidSender => "invalid sender".into(),
        W::Body => "the body does not decode".into(),
        W::Trailing => "bytes after the body".into(),
        W::Invalid(why) => format!("invalid: {why}"),
        W::BufferTooSmall => "buffer too small".into(),
        other => format!("{other:?}"),
    }
}

/// Why the cluster refused a mount, in words.
pub fn mount_error_text(e: cohort_core::node::MountError) -> &'static str {
    use cohort_core::node::MountError;
    match e {
        MountError::NoFreeJournal => "no free journal (every journal of the filesystem is in use)",
        MountError::TooManyGroups => "too many mount groups",
        MountError::KernelFailed => "the kernel mount failed",
        MountError::Incompatible => "the cluster speaks an incompatible protocol",
        MountError::LostInMerge => "the membership was not kept when partitions merged; mount again",
        MountError::NameCollision => {
            "another filesystem of the cluster has the same group id (a 31-bit hash of the name): rename one"
        }
        MountError::ReplaysPending => {
            "too many journals of the filesystem wait for replay (a mount would hold one more journal than a \
             failure could be tracked for): mount again once they are replayed"
        }
    }
}

pub fn describe_op(fs: &FsName, op: &KernelOp) -> String {
    match op {
        KernelOp::Block => format!("{fs}: block"),
        KernelOp::Unblock => format!("{fs}: unblock"),
        KernelOp::SetJid(j) => format!("{fs}: set journal id {}", j.0),
        KernelOp::MountFirst(j) => format!("{fs}: mount as FIRST MOUNTER with journal {} (replays every journal)", j.0),
        KernelOp::Mount(j) => format!("{fs}: mount with journal {}", j.0),
        KernelOp::MountSpectator => format!("{fs}: mount as spectator (no journal)"),
        KernelOp::RecoverJournal(j) => format!("{fs}: recover journal {}", j.0),
        KernelOp::Release => format!("{fs}: release (withdraw finished)"),
        KernelOp::Unmounted => format!("{fs}: unmounted (left the group)"),
        KernelOp::MountError(e) => format!("{fs}: mount refused: {}", mount_error_text(*e)),
    }
}

pub fn describe_kernel_event(k: &KernelEvent) -> String {
    let ok = |b: bool| if b { "ok" } else { "FAILED" };
    match k {
        KernelEvent::MountResult { fs, ok: r } => format!("{fs}: mount {}", ok(*r)),
        KernelEvent::FirstRecoveryDone { fs } => format!("{fs}: first mounter replayed every journal"),
        KernelEvent::RecoveryDone { fs, jid, ok: r } => format!("{fs}: recovery of journal {} {}", jid.0, ok(*r)),
        KernelEvent::Withdraw { fs } => format!("{fs}: the kernel WITHDREW the filesystem"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::config::{BackendConfig, MemoryConfig};
    use crate::demo::simnet::SimNet;

    struct TestEnv<'a> {
        net: &'a mut SimNet,
        me: u32,
        fences: &'a mut Vec<(u32, Member, bool)>,
    }

    impl Env for TestEnv<'_> {
        fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
            self.net.send(self.me, bytes)
        }
        fn fence(&mut self, target: Member, known_inc: bool, _why: FenceWhy) {
            self.fences.push((self.me, target, known_inc));
        }
    }

    struct Cluster {
        net: SimNet,
        engines: Vec<Engine>,
        fences: Vec<(u32, Member, bool)>,
        now: u64,
    }

    impl Cluster {
        /// Nodes 1..=3 powered; daemons only on 1 and 2.
        fn new(nodelist: Option<&[u32]>) -> Cluster {
            let mut net = SimNet::new(3, 8);
            let mut engines = Vec::new();
            for i in 1..=2u32 {
                let fs = FsConfig {
                    name: "fs1".into(),
                    journals: 4,
                    backend: BackendConfig::Memory(MemoryConfig::default()),
                    mount_point: None,
                    auto_mount: false,
                    mode: Mode::Rw,
                };
                let rt = FsRuntime::new(fs, Box::new(MemoryBackend::new("fs1", MemoryConfig::default()))).unwrap();
                let t = Timings { fence_retry_ms: 1000, recovery_retry_ms: 1000, startup_fence_delay_ms: 500 };
                let mut e = Engine::new(NodeId(i), 1, t, vec![rt], 1000, "simnet", 0);
                if let Some(l) = nodelist {
                    e.set_nodelist(l);
                }
                engines.push(e);
                net.start_daemon(i);
            }
            let mut c = Cluster { net, engines, fences: Vec::new(), now: 0 };
            c.settle();
            c
        }

        fn with(&mut self, i: usize, f: impl FnOnce(&mut Engine, &mut TestEnv<'_>)) {
            let mut env = TestEnv { net: &mut self.net, me: i as u32 + 1, fences: &mut self.fences };
            f(&mut self.engines[i], &mut env);
        }

        fn settle(&mut self) {
            loop {
                self.net.flush();
                let mut moved = false;
                for i in 0..self.engines.len() {
                    while let Some(ev) = self.net.take(i as u32 + 1) {
                        moved = true;
                        let now = self.now;
                        self.with(i, |e, env| e.transport_event(now, ev, env));
                    }
                }
                if !moved && !self.net.has_pending() {
                    return;
                }
            }
        }

        /// Fire timers up to `until`.
        fn run_until(&mut self, until: u64) {
            loop {
                self.settle();
                let Some(t) = self.engines.iter().filter_map(|e| e.next_timer()).min().filter(|t| *t <= until) else {
                    break;
                };
                self.now = self.now.max(t);
                let now = self.now;
                for i in 0..self.engines.len() {
                    self.with(i, |e, env| e.fire_timers(now, env));
                }
            }
            self.now = until;
        }

        fn kernel_state(&self, i: usize) -> KernelState {
            self.engines[i].filesystems()[0].state()
        }
    }

    #[test]
    fn nodelist_enables_startup_fencing_before_the_first_mount() {
        // Configured [1, 2, 3], node 3 never starts: fenced (incarnation
        // unknown) after the grace period, and the first mount waits for it.
        let mut c = Cluster::new(Some(&[1, 2, 3]));
        c.now = 10;
        c.with(0, |e, env| e.request(10, "fs1", RequestKind::Mount(Mode::Rw), env).map(|_| ()).unwrap());
        c.run_until(400);
        assert!(c.fences.is_empty(), "fenced before the grace period: {:?}", c.fences);
        assert_ne!(c.kernel_state(0), KernelState::Mounted, "first mount before startup fencing");
        c.run_until(2000);
        let [(actor, target, known_inc)] = c.fences[..] else { panic!("expected one fence: {:?}", c.fences) };
        assert_eq!((target.node, target.inc, known_inc), (NodeId(3), Incarnation(0), false));
        assert_ne!(c.kernel_state(0), KernelState::Mounted, "first mount while node 3 may still hold the filesystem");
        let log: Vec<String> = c.engines[actor as usize - 1].log().since(0).into_iter().map(|e| e.text).collect();
        assert!(log.iter().any(|t| t == "configured cluster nodes [1,2,3] (startup fencing on)"), "{log:?}");
        assert!(
            log.iter().any(|t| t == "fencing node 3 (never joined: startup fencing): running the fence agent"),
            "{log:?}"
        );
        let now = c.now;
        c.with(actor as usize - 1, |e, env| e.fenced(now, target, FenceWhy::Fence, Ok(()), "", env));
        c.run_until(3000);
        assert_eq!(c.kernel_state(0), KernelState::Mounted);
        assert!(c.engines[0].filesystems()[0].kernel.first, "node 1 is the first mounter");

        // Without a nodelist: no startup fencing, the mount goes ahead.
        let mut c = Cluster::new(None);
        c.with(0, |e, env| e.request(0, "fs1", RequestKind::Mount(Mode::Rw), env).map(|_| ()).unwrap());
        c.run_until(5000);
        assert!(c.fences.is_empty(), "{:?}", c.fences);
        assert_eq!(c.kernel_state(0), KernelState::Mounted);
    }

    /// Node `i`'s mode of fs1 in its agreed group state.
    fn agreed_mode(c: &Cluster, i: usize, of: u32) -> Option<Mode> {
        let st = c.engines[i].node().status();
        st.group("fs1").and_then(|g| g.members.iter().find(|m| m.node == NodeId(of)).map(|m| m.mode))
    }

    #[test]
    fn remount_orders_the_kernel_and_the_cluster() {
        let mut c = Cluster::new(None);
        c.with(0, |e, env| e.request(0, "fs1", RequestKind::Mount(Mode::Rw), env).map(|_| ()).unwrap());
        c.with(1, |e, env| e.request(0, "fs1", RequestKind::Mount(Mode::Rw), env).map(|_| ()).unwrap());
        c.run_until(2000);
        assert_eq!(c.kernel_state(0), KernelState::Mounted);
        assert_eq!(c.engines[0].filesystems()[0].kernel.mode.as_deref(), Some("rw"));
        let req = |c: &mut Cluster, m: Mode| {
            let now = c.now;
            let mut r = Err(String::new());
            c.with(0, |e, env| r = e.request(now, "fs1", RequestKind::Remount(m), env));
            r
        };
        // Refused: the mode it has, a spectator, an unknown filesystem.
        assert!(req(&mut c, Mode::Rw).unwrap_err().contains("already mounted rw"));
        assert!(req(&mut c, Mode::Spectator).unwrap_err().contains("spectator holds no journal"));
        let mut r = Ok(String::new());
        c.with(0, |e, env| r = e.request(0, "nope", RequestKind::Remount(Mode::Ro), env));
        assert!(r.unwrap_err().contains("not configured"));

        // rw -> ro: the (memory) kernel first, then the cluster agrees.
        req(&mut c, Mode::Ro).unwrap();
        assert_eq!(c.engines[0].filesystems()[0].kernel.mode.as_deref(), Some("ro"));
        c.run_until(3000);
        for i in 0..2 {
            assert_eq!(agreed_mode(&c, i, 1), Some(Mode::Ro), "node {} sees node 1 ro", i + 1);
        }
        assert!(c.engines[0].filesystems()[0].kernel.remount.is_none());
        assert!(req(&mut c, Mode::Ro).unwrap_err().contains("already mounted ro"));

        // ro -> rw: the kernel stays ro until the cluster agreed.
        req(&mut c, Mode::Rw).unwrap();
        let k = &c.engines[0].filesystems()[0].kernel;
        assert_eq!(k.mode.as_deref(), Some("ro"), "rw before the cluster agreed");
        assert!(k.remount.as_deref().is_some_and(|t| t.contains("cluster agrees")), "{k:?}");
        assert!(req(&mut c, Mode::Ro).unwrap_err().contains("already in progress"));
        c.run_until(4000);
        let k = &c.engines[0].filesystems()[0].kernel;
        assert_eq!(k.mode.as_deref(), Some("rw"));
        assert!(k.remount.is_none());
        assert_eq!(agreed_mode(&c, 1, 1), Some(Mode::Rw));
        let log: Vec<String> = c.engines[0].log().since(0).into_iter().map(|e| e.text).collect();
        let at = |t: &str| log.iter().position(|l| l.contains(t)).unwrap_or_else(|| panic!("{t:?} not in {log:?}"));
        assert!(at("the cluster agreed on rw; remounting the kernel") < at("fs1: remounted rw"));
    }
}
