//! The control protocol: one JSON object per line each way, over the unix
//! socket `<state_dir>/cohortd.sock`. Schema (version [`SCHEMA`]) documented
//! with examples in the crate README; these types are the source of truth.
//!
//! Requests: `{"cmd":"status"}`, `{"cmd":"members"}`,
//! `{"cmd":"mount","fs":"fs1","mode":"rw"}`, `{"cmd":"unmount","fs":"fs1"}`,
//! `{"cmd":"log","follow":false,"since":0}`. Every response carries
//! `"ok"`; errors are `{"ok":false,"error":"..."}`.

use cohort_core::mount::GroupWait;
use cohort_core::status::{DaemonWait, Status};
use cohort_core::wire::Mode;
use serde::{Deserialize, Serialize};

use crate::config::mode_name;

/// Version of the JSON schema below; bumped on incompatible changes.
pub const SCHEMA: u32 = 1;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Gen {
    pub ring: u64,
    pub epoch: u32,
}

impl From<cohort_core::Generation> for Gen {
    fn from(g: cohort_core::Generation) -> Gen {
        Gen { ring: g.ring, epoch: g.epoch }
    }
}

impl std::fmt::Display for Gen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.ring, self.epoch)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Status,
    Members,
    Mount {
        fs: String,
        #[serde(default = "default_mode")]
        mode: String,
    },
    Unmount {
        fs: String,
    },
    /// `mode`: `ro` or `rw`.
    Remount {
        fs: String,
        mode: String,
    },
    /// Prometheus text (`text`).
    Metrics,
    Log {
        #[serde(default)]
        follow: bool,
        /// Only entries with a larger seq.
        #[serde(default)]
        since: u64,
        /// At most this many of the newest entries (0: all kept).
        #[serde(default)]
        limit: usize,
    },
}

fn default_mode() -> String {
    "rw".into()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub seq: u64,
    /// Milliseconds since the daemon started (simulated time in the demo).
    pub t_ms: u64,
    pub node: u32,
    pub generation: Gen,
    pub kind: LogKind,
    pub text: String,
}

/// What an event log entry is about. JSON and text show the kebab-case
/// name (`change`, `request`, `kernel`, `kernel-event`, `fence`, `notice`,
/// `error`, `info`); a kind of a newer daemon reads as `other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogKind {
    /// Membership, quorum and generation changes.
    Change,
    /// Operator requests and their outcome.
    Request,
    /// What cohortd asked of the kernel.
    Kernel,
    /// What the kernel answered.
    KernelEvent,
    /// Fencing.
    Fence,
    /// A notice of the core (sync, stale merge, replay, drop).
    Notice,
    Error,
    Info,
    #[serde(other)]
    Other,
}

impl LogKind {
    pub fn name(self) -> &'static str {
        match self {
            LogKind::Change => "change",
            LogKind::Request => "request",
            LogKind::Kernel => "kernel",
            LogKind::KernelEvent => "kernel-event",
            LogKind::Fence => "fence",
            LogKind::Notice => "notice",
            LogKind::Error => "error",
            LogKind::Info => "info",
            LogKind::Other => "other",
        }
    }
}

impl std::fmt::Display for LogKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// The kernel side of one filesystem, as cohortd drives it
/// (`KernelJson::state` holds its name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelState {
    Idle,
    Mounting,
    Mounted,
    /// Given back after a withdraw or a reset.
    Released,
    Failed,
}

impl KernelState {
    pub const ALL: [KernelState; 5] =
        [KernelState::Idle, KernelState::Mounting, KernelState::Mounted, KernelState::Released, KernelState::Failed];

    pub fn name(self) -> &'static str {
        match self {
            KernelState::Idle => "idle",
            KernelState::Mounting => "mounting",
            KernelState::Mounted => "mounted",
            KernelState::Released => "released",
            KernelState::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusJson {
    pub schema: u32,
    pub node: u32,
    pub incarnation: u64,
    pub transport: String,
    pub uptime_ms: u64,
    pub generation: Gen,
    pub anchored: bool,
    pub quorate: Option<bool>,
    pub protocol: u16,
    pub daemon: DaemonJson,
    /// Nothing waits anywhere (daemon synced, no fencing, every group synced and unblocked).
    pub stable: bool,
    pub members: Vec<MemberJson>,
    pub fencing: Vec<FenceJson>,
    pub groups: Vec<GroupJson>,
    /// Configured filesystems this node is not a member of.
    pub idle_filesystems: Vec<String>,
    pub last_merge_partitions: u8,
    /// A pending fence could not be recorded: no journal is replayed until
    /// cohortd restarts (tests/CORE_BUGS.md, "node-keyed tables").
    #[serde(default)]
    pub fence_table_full: bool,
    pub stats: StatsJson,
    /// The transport's link view (UDP transport; `null` over corosync:
    /// `corosync-cfgtool -s` shows its links).
    #[serde(default)]
    pub link: Option<LinkJson>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkJson {
    /// The transport's installed view: its members and how long ago it was
    /// installed.
    pub view_members: Vec<u32>,
    pub view_age_ms: u64,
    /// Every configured peer.
    pub peers: Vec<PeerLinkJson>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerLinkJson {
    pub node: u32,
    pub address: Option<String>,
    /// The UDP transport's incarnation of that node (not cohortd's: it
    /// changes with every transport start, and names its datagrams).
    pub transport_incarnation: Option<u64>,
    /// Milliseconds since an authenticated datagram of it arrived; `null`:
    /// never.
    pub last_heard_ms: Option<u64>,
    /// `up` (heard within the failure timeout) or `down`.
    pub link: String,
    /// This incarnation announced a clean leave.
    pub left: bool,
    /// Heard but excluded from views for a while.
    pub suspected: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonJson {
    /// `joining`, `starts`, `sync`, `complete`, `stopped`.
    pub phase: String,
    /// Human text of what the daemon group waits for, `null` when nothing.
    pub waits_for: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberJson {
    pub node: u32,
    pub incarnation: Option<u64>,
    pub started: bool,
    pub stale: bool,
    pub has_state: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceJson {
    pub node: u32,
    pub incarnation: u64,
    pub attempts: u16,
    /// Who fences next (`null`: nobody can).
    pub actor: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitJson {
    /// `daemon-sync`, `quorum`, `fencing`, `starts`, `first-mounter`,
    /// `no-first-mounter`, `recovery`, `no-recoverer`, `kernel`.
    pub kind: String,
    pub nodes: Vec<u32>,
    pub jid: Option<u16>,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupJson {
    pub fs: String,
    pub group_id: u32,
    pub journals: u16,
    pub generation: Gen,
    /// `syncing`, `first-mount`, `recovering`, `mounting`, `running`.
    pub phase: String,
    pub synced: bool,
    pub first_done: bool,
    pub blocked: bool,
    pub mounted_here: bool,
    pub waits_for: Option<WaitJson>,
    pub members: Vec<GroupMemberJson>,
    pub recoveries: Vec<RecoveryJson>,
    pub kernel: KernelJson,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMemberJson {
    pub node: u32,
    pub mode: String,
    pub jid: Option<u16>,
    pub mounted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryJson {
    pub jid: u16,
    pub attempts: u16,
}

/// What this daemon told its kernel backend.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelJson {
    pub backend: String,
    /// A [`KernelState`] name (`idle`, `mounting`, `mounted`, `released`,
    /// `failed`); for a DLM lockspace group its lockspace state in words,
    /// `unknown` for a group cohortd has no filesystem for. Read it with
    /// [`KernelJson::kernel_state`].
    pub state: String,
    pub jid: Option<u16>,
    /// This node mounted as first mounter.
    pub first: bool,
    pub blocked: bool,
    pub last_error: Option<String>,
    /// The mode the kernel has the filesystem mounted in (`rw`, `ro`,
    /// `spectator`), while mounted.
    #[serde(default)]
    pub mode: Option<String>,
    /// A `cohortctl remount` in progress: what it waits for.
    #[serde(default)]
    pub remount: Option<String>,
}

impl KernelJson {
    /// The kernel state, when `state` names one.
    pub fn kernel_state(&self) -> Option<KernelState> {
        KernelState::ALL.into_iter().find(|k| k.name() == self.state)
    }

    /// Mounted by the kernel (and so usable, unless `blocked`).
    pub fn is_mounted(&self) -> bool {
        self.kernel_state() == Some(KernelState::Mounted)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsJson {
    pub delivered: u64,
    pub applied: u64,
    pub dropped_old_generation: u64,
    /// Messages sent in an older transport view than they were delivered in.
    #[serde(default)]
    pub dropped_other_view: u64,
    pub dropped_stale_sender: u64,
    pub dropped_other: u64,
    /// Why the last dropped message was dropped (`not-member`,
    /// `old-generation`, ...).
    #[serde(default)]
    pub last_drop: Option<String>,
    pub wire_errors: u64,
}

/// A drop reason in the words the status and the log use.
pub fn drop_reason_name(r: cohort_core::node::DropReason) -> &'static str {
    use cohort_core::node::DropReason as D;
    match r {
        D::Disagreement => "disagreement",
        D::OldGeneration => "old-generation",
        D::OtherView => "other-view",
        D::StaleSender => "stale-sender",
        D::NotMember => "not-member",
        D::NotSynced => "not-synced",
        D::NameCollision => "name-collision",
        D::AlreadyMember => "already-member",
        D::TableFull => "table-full",
        D::Inapplicable => "inapplicable",
        _ => "other",
    }
}

impl Request {
    /// The `cmd` name (metrics label).
    pub fn command(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Members => "members",
            Request::Mount { .. } => "mount",
            Request::Unmount { .. } => "unmount",
            Request::Remount { .. } => "remount",
            Request::Metrics => "metrics",
            Request::Log { .. } => "log",
        }
    }
}

pub fn parse_mode(s: &str) -> Option<Mode> {
    match s {
        "rw" => Some(Mode::Rw),
        "ro" => Some(Mode::Ro),
        "spectator" => Some(Mode::Spectator),
        _ => None,
    }
}

fn join_nodes(v: &[u32]) -> String {
    v.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",")
}

pub fn daemon_json(d: DaemonWait) -> DaemonJson {
    let (phase, waits) = match d {
        DaemonWait::Nothing => ("complete", None),
        DaemonWait::Join => ("joining", Some("joining the daemon group".to_owned())),
        DaemonWait::Starts => ("starts", Some("daemon starts of the current generation".to_owned())),
        DaemonWait::Sync(n) => ("sync", Some(format!("the sync snapshot of node {}", n.0))),
        DaemonWait::Stopped => ("stopped", Some("nothing: the node stopped".to_owned())),
    };
    DaemonJson { phase: phase.to_owned(), waits_for: waits }
}

/// Convert a group wait into JSON; `members` is the group's member list in
/// status order (the `Starts` mask indexes it).
pub fn wait_json(w: GroupWait, members: &[u32]) -> Option<WaitJson> {
    let mk = |kind: &str, nodes: Vec<u32>, jid: Option<u16>, text: String| {
        Some(WaitJson { kind: kind.to_owned(), nodes, jid, text })
    };
    match w {
        GroupWait::Nothing => None,
        GroupWait::DaemonSync => mk("daemon-sync", vec![], None, "the daemon group to sync".into()),
        GroupWait::Quorum => mk("quorum", vec![], None, "quorum".into()),
        GroupWait::Fencing(n) => mk("fencing", vec![n.0], None, format!("fencing of node {}", n.0)),
        GroupWait::Starts(mask) => {
            let nodes: Vec<u32> =
                members.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, n)| *n).collect();
            let t = format!("starts from node(s) {}", join_nodes(&nodes));
            mk("starts", nodes, None, t)
        }
        GroupWait::FirstMounter(n) => {
            mk("first-mounter", vec![n.0], None, format!("first mounter node {} to replay all journals", n.0))
        }
        GroupWait::NoFirstMounter => mk("no-first-mounter", vec![], None, "a member able to mount first (rw)".into()),
        GroupWait::Recovery(j) => mk("recovery", vec![], Some(j.0), format!("recovery of journal {}", j.0)),
        GroupWait::NoRecoverer(j) => {
            mk("no-recoverer", vec![], Some(j.0), format!("a mounted rw member to recover journal {}", j.0))
        }
        GroupWait::Kernel => mk("kernel", vec![], None, "the local kernel mount".into()),
    }
}

pub fn group_phase(synced: bool, first_done: bool, recovering: bool, wait: GroupWait) -> &'static str {
    if !synced {
        "syncing"
    } else if !first_done {
        "first-mount"
    } else if recovering {
        "recovering"
    } else if wait == GroupWait::Kernel {
        "mounting"
    } else {
        "running"
    }
}

/// Build the JSON status from the core's snapshot plus adapter facts.
pub fn status_json(
    st: &Status,
    transport: &str,
    uptime_ms: u64,
    stats: StatsJson,
    kernel: &dyn Fn(&str) -> KernelJson,
    configured: &[String],
) -> StatusJson {
    let groups: Vec<GroupJson> = st
        .groups
        .iter()
        .map(|g| {
            let members: Vec<u32> = g.members.iter().map(|m| m.node.0).collect();
            GroupJson {
                fs: g.fs.as_str().to_owned(),
                group_id: g.group.0,
                journals: g.journals,
                generation: g.generation.into(),
                phase: group_phase(g.synced, g.first_done, !g.recoveries.is_empty(), g.wait).to_owned(),
                synced: g.synced,
                first_done: g.first_done,
                blocked: g.blocked,
                mounted_here: g.mounted_here,
                waits_for: wait_json(g.wait, &members),
                members: g
                    .members
                    .iter()
                    .map(|m| GroupMemberJson {
                        node: m.node.0,
                        mode: mode_name(m.mode).to_owned(),
                        jid: m.jid.map(|j| j.0),
                        mounted: m.mounted,
                    })
                    .collect(),
                recoveries: g.recoveries.iter().map(|(j, a)| RecoveryJson { jid: j.0, attempts: *a }).collect(),
                kernel: kernel(g.fs.as_str()),
            }
        })
        .collect();
    let idle = configured.iter().filter(|f| !groups.iter().any(|g| &g.fs == *f)).cloned().collect();
    StatusJson {
        schema: SCHEMA,
        node: st.node.0,
        incarnation: st.incarnation.0,
        transport: transport.to_owned(),
        uptime_ms,
        generation: st.generation.into(),
        anchored: st.anchored,
        quorate: st.quorate,
        protocol: st.protocol,
        daemon: daemon_json(st.daemon),
        stable: st.is_stable(),
        members: st
            .members
            .iter()
            .map(|m| MemberJson {
                node: m.node.0,
                incarnation: m.inc.map(|i| i.0),
                started: m.started,
                stale: m.stale,
                has_state: m.has_state,
            })
            .collect(),
        fencing: st
            .fencing
            .iter()
            .map(|f| FenceJson {
                node: f.target.node.0,
                incarnation: f.target.inc.0,
                attempts: f.attempts,
                actor: f.actor.map(|a| a.0),
            })
            .collect(),
        groups,
        idle_filesystems: idle,
        last_merge_partitions: st.last_merge_partitions,
        fence_table_full: st.fence_table_full,
        stats,
        link: None,
    }
}

// ---- human output ------------------------------------------------------------

/// Render rows as a left-aligned table with a header line.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(|s| s.as_str()).collect()));
    }
    out
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |x| x.to_string())
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

pub fn render_members(s: &StatusJson) -> String {
    let rows: Vec<Vec<String>> = s
        .members
        .iter()
        .map(|m| {
            let mut flags = vec![];
            if m.node == s.node {
                flags.push("self");
            }
            if m.stale {
                flags.push("STALE");
            }
            if m.has_state {
                flags.push("state");
            }
            if s.fencing.iter().any(|f| f.node == m.node) {
                flags.push("fence-pending");
            }
            vec![m.node.to_string(), opt(m.incarnation), yes(m.started), flags.join(",")]
        })
        .collect();
    let mut out = table(&["NODE", "INCARNATION", "STARTED", "FLAGS"], &rows);
    out.push_str(
        "FLAGS: self = this node; state = holds cluster state (was synced); STALE = an older incarnation of a node \
         that restarted; fence-pending = must be fenced before its journals are touched\n",
    );
    out
}

/// The transport's links, like `corosync-cfgtool -s`.
pub fn render_link(s: &StatusJson) -> String {
    let Some(l) = &s.link else {
        return format!("transport {}: links: see `corosync-cfgtool -s`\n", s.transport);
    };
    let nodes: Vec<String> = l.view_members.iter().map(|n| n.to_string()).collect();
    let mut out = format!(
        "transport {}: view [{}] installed {:.1} s ago\n",
        s.transport,
        nodes.join(","),
        l.view_age_ms as f64 / 1000.0
    );
    let rows: Vec<Vec<String>> = l
        .peers
        .iter()
        .map(|p| {
            let mut flags = vec![];
            if l.view_members.contains(&p.node) {
                flags.push("in-view");
            }
            if p.left {
                flags.push("left");
            }
            if p.suspected {
                flags.push("SUSPECTED");
            }
            vec![
                p.node.to_string(),
                p.address.clone().unwrap_or_else(|| "-".into()),
                opt(p.transport_incarnation),
                p.last_heard_ms.map_or_else(|| "never".into(), |ms| format!("{:.1} s ago", ms as f64 / 1000.0)),
                p.link.clone(),
                flags.join(","),
            ]
        })
        .collect();
    out.push_str(&table(&["PEER", "ADDRESS", "UDP-INCARNATION", "LAST-HEARD", "LINK", "FLAGS"], &rows));
    out.push_str(
        "LINK: up = heard within the failure timeout. FLAGS: in-view = member of the installed view; left = \
         this incarnation left cleanly; SUSPECTED = heard but kept out of views for a while\n",
    );
    out
}

fn quorum_text(s: &StatusJson) -> &'static str {
    match s.quorate {
        Some(true) => "quorate",
        Some(false) => "NOT quorate",
        None => "quorum unknown",
    }
}

/// One line for systemd's `STATUS=`: what the node waits for, in the words
/// of `cohortctl status`.
pub fn status_line(s: &StatusJson) -> String {
    let mut parts = vec![match &s.daemon.waits_for {
        Some(w) => format!("daemon group: {w}"),
        None => format!("{} members at generation {}, {}", s.members.len(), s.generation, quorum_text(s)),
    }];
    if !s.fencing.is_empty() {
        let t: Vec<String> = s.fencing.iter().map(|f| f.node.to_string()).collect();
        parts.push(format!("fencing node {}", t.join(", ")));
    }
    for g in &s.groups {
        parts.push(match &g.waits_for {
            Some(w) => format!("{} {}, waits for {}", g.fs, g.phase, w.text),
            None => format!("{} {}", g.fs, g.phase),
        });
    }
    parts.join("; ")
}

pub fn render_status(s: &StatusJson) -> String {
    let mut out = String::new();
    let q = quorum_text(s);
    out.push_str(&format!(
        "node {} (incarnation {}), transport {}, generation {}{}, {}, protocol {}\n",
        s.node,
        s.incarnation,
        s.transport,
        s.generation,
        if s.anchored { "" } else { " (unanchored)" },
        q,
        s.protocol
    ));
    out.push_str(&format!(
        "daemon: {}{}{}\n",
        s.daemon.phase,
        s.daemon.waits_for.as_ref().map(|w| format!(", waiting for {w}")).unwrap_or_default(),
        if s.stable { " (stable)" } else { "" }
    ));
    if s.fence_table_full {
        out.push_str(
            "REPLAYS HALTED: a failed node's pending fence could not be recorded (more failed node ids than the \
             table holds); restart cohortd once the failed nodes are fenced\n",
        );
    }
    if s.last_merge_partitions >= 2 {
        out.push_str(&format!("last merge resolved {} partitions\n", s.last_merge_partitions));
    }
    out.push('\n');
    out.push_str(&render_members(s));
    out.push('\n');
    out.push_str(&render_link(s));
    if !s.fencing.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = s
            .fencing
            .iter()
            .map(|f| vec![f.node.to_string(), f.incarnation.to_string(), f.attempts.to_string(), opt(f.actor)])
            .collect();
        out.push_str(&table(&["FENCE-TARGET", "INCARNATION", "FAILED-ATTEMPTS", "ACTOR"], &rows));
    }
    out.push('\n');
    if s.groups.is_empty() {
        out.push_str("no mount groups\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .groups
            .iter()
            .map(|g| {
                vec![
                    g.fs.clone(),
                    g.generation.to_string(),
                    g.phase.clone(),
                    format!(
                        "{}{}{}",
                        g.kernel.state,
                        g.kernel.mode.as_ref().map_or(String::new(), |m| format!(",{m}")),
                        if g.kernel.blocked { ",blocked" } else { "" }
                    ),
                    match (&g.waits_for, &g.kernel.remount) {
                        (Some(w), _) => w.text.clone(),
                        (None, Some(r)) => format!("remount: {r}"),
                        (None, None) => "-".to_owned(),
                    },
                ]
            })
            .collect();
        out.push_str(&table(&["FS", "GENERATION", "PHASE", "KERNEL", "WAITS-FOR"], &rows));
        for g in &s.groups {
            out.push('\n');
            out.push_str(&format!("{}: journals {}, first mount {}\n", g.fs, g.journals, yes(g.first_done)));
            let rows: Vec<Vec<String>> = g
                .members
                .iter()
                .map(|m| vec![m.node.to_string(), m.mode.clone(), opt(m.jid), yes(m.mounted)])
                .chain(g.recoveries.iter().map(|r| {
                    vec!["-".into(), "recovery".into(), r.jid.to_string(), format!("{} failed attempt(s)", r.attempts)]
                }))
                .collect();
            out.push_str(&table(&["NODE", "MODE", "JID", "MOUNTED"], &rows));
        }
    }
    if !s.idle_filesystems.is_empty() {
        out.push_str(&format!("\nconfigured, not mounted here: {}\n", s.idle_filesystems.join(", ")));
    }
    out
}

pub fn render_log_entry(e: &LogEntry) -> String {
    format!(
        "{:>6} {:>10.3}s  gen {:<10} {:<12} {}",
        e.seq,
        e.t_ms as f64 / 1000.0,
        e.generation.to_string(),
        e.kind,
        e.text
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_kinds_keep_their_json_names_and_unknown_ones_read_as_other() {
        let all = [
            (LogKind::Change, "change"),
            (LogKind::Request, "request"),
            (LogKind::Kernel, "kernel"),
            (LogKind::KernelEvent, "kernel-event"),
            (LogKind::Fence, "fence"),
            (LogKind::Notice, "notice"),
            (LogKind::Error, "error"),
            (LogKind::Info, "info"),
        ];
        for (k, name) in all {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<LogKind>(&format!("\"{name}\"")).unwrap(), k);
            assert_eq!(k.name(), name);
            assert_eq!(format!("{k:<14}|"), format!("{name:<14}|"));
        }
        assert_eq!(serde_json::from_str::<LogKind>("\"a-kind-of-tomorrow\"").unwrap(), LogKind::Other);
    }

    #[test]
    fn kernel_json_reads_its_state_by_name() {
        let mut k = KernelJson::default();
        for s in KernelState::ALL {
            k.state = s.name().into();
            assert_eq!(k.kernel_state(), Some(s));
            assert_eq!(k.is_mounted(), s == KernelState::Mounted);
        }
        k.state = "running at 3.1".into(); // a DLM lockspace's state in words
        assert_eq!(k.kernel_state(), None);
        assert!(!k.is_mounted());
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()], vec!["z".into(), "w".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\nz    w\n");
    }

    #[test]
    fn requests_round_trip() {
        let r: Request = serde_json::from_str(r#"{"cmd":"mount","fs":"fs1"}"#).unwrap();
        assert_eq!(r, Request::Mount { fs: "fs1".into(), mode: "rw".into() });
        let r: Request = serde_json::from_str(r#"{"cmd":"log","follow":true}"#).unwrap();
        assert_eq!(r, Request::Log { follow: true, since: 0, limit: 0 });
        assert_eq!(serde_json::to_string(&Request::Status).unwrap(), r#"{"cmd":"status"}"#);
    }

    #[test]
    fn starts_wait_names_nodes() {
        let w = wait_json(GroupWait::Starts(0b101), &[1, 2, 3]).unwrap();
        assert_eq!(w.nodes, vec![1, 3]);
        assert_eq!(w.text, "starts from node(s) 1,3");
    }
}
