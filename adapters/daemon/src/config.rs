//! `cohort.toml`: parsed with serde, then validated. Every error names the
//! key (`filesystem[1].journals`, `fence.agent`, ...) and says why.
//!
//! See `packaging/cohort.toml.example` for a commented example.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use cohort_core::gcs::MAX_NODES;
use cohort_core::wire::{self, Mode, MAX_GROUPS, MAX_JOURNALS};
use cohort_core::GroupId;
use serde::Deserialize;

pub const DEFAULT_PATH: &str = "/etc/cohort/cohort.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cohort";
pub const SOCKET_NAME: &str = "cohortd.sock";
/// Default multicast group of the UDP transport.
pub const DEFAULT_UDP_GROUP: Ipv4Addr = Ipv4Addr::new(239, 192, 71, 1);
/// Default UDP port (multicast group port; unicast peers given without a port).
pub const DEFAULT_UDP_PORT: u16 = 5405;

/// Why this build cannot run `transport = "corosync"` (no `corosync` feature).
pub const NO_COROSYNC: &str = "this cohortd was built without corosync support: rebuild with --features corosync, or \
                               use transport = \"udp\"";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Corosync,
    Udp,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Corosync => "corosync",
            Transport::Udp => "udp",
        }
    }

    /// Is this transport compiled into this build? `Err`: why not (corosync
    /// without the `corosync` cargo feature: [`NO_COROSYNC`]).
    pub fn available(self) -> Result<(), String> {
        match self {
            Transport::Corosync if !cfg!(feature = "corosync") => Err(NO_COROSYNC.to_owned()),
            _ => Ok(()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// From the file, or `None`: take corosync's local node id. Always
    /// `Some` with `transport = "udp"`.
    pub node_id: Option<u32>,
    pub transport: Transport,
    /// The configured cluster nodes (sorted, distinct): enables startup
    /// fencing. `None` (corosync only): read corosync's nodelist at start.
    /// Always `Some` with `transport = "udp"`.
    pub nodes: Option<Vec<u32>>,
    /// `startup_fencing` (default true). With true and no `nodes`, a
    /// corosync nodelist that cannot be read stops the start; false runs
    /// without startup fencing, explicitly.
    pub startup_fencing: bool,
    /// Startup fencing grace: in a cold cluster, configured nodes that have
    /// not joined within this time are fenced before any first mount.
    pub startup_fence_delay_ms: u64,
    /// `[udp]`: present exactly when `transport = "udp"`.
    pub udp: Option<UdpConfig>,
    pub state_dir: PathBuf,
    /// CPG group of the daemons.
    pub group: String,
    /// Cluster name (the `<cluster>` in GFS2's `<cluster>:<fs>` lock table).
    pub cluster_name: Option<String>,
    pub fence: FenceConfig,
    pub recovery_retry_ms: u64,
    /// Entries kept in the event log ring.
    pub log_entries: usize,
    /// `log_level`: tracing filter (env-filter syntax) when neither
    /// `COHORT_LOG` nor `RUST_LOG` is set; re-read on SIGHUP.
    pub log_level: Option<String>,
    pub filesystems: Vec<FsConfig>,
}

/// `[udp]`: the UDP transport (`cohort-udp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpConfig {
    pub net: UdpNet,
    /// The cluster key (32 raw bytes or 64 hex digits), same on every node.
    pub key_file: PathBuf,
    /// `udp.allow_insecure_key_file`: accept a key file that group or
    /// others can access (refused by default).
    pub allow_insecure_key_file: bool,
    pub heartbeat_ms: u64,
    pub fail_timeout_ms: u64,
    pub quorum: UdpQuorum,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UdpNet {
    Multicast {
        /// Group address and port.
        group: SocketAddrV4,
        /// Local interface address to join and send on (`0.0.0.0`: routing table).
        interface: Ipv4Addr,
        /// Local address of the sending (and unicast-receiving) socket.
        bind: Option<SocketAddrV4>,
        ttl: u32,
        loopback: bool,
    },
    Unicast {
        /// Address of every node (ours included unless `bind` is given).
        peers: BTreeMap<u32, SocketAddr>,
        /// Where we bind (default: our own entry in `peers`).
        bind: Option<SocketAddr>,
    },
}

impl UdpNet {
    pub fn mode(&self) -> &'static str {
        match self {
            UdpNet::Multicast { .. } => "multicast",
            UdpNet::Unicast { .. } => "unicast",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpQuorum {
    /// More than half of the configured nodes.
    Majority,
    /// Two-node cluster: one node is quorate alone (fencing decides races).
    TwoNode,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceConfig {
    pub agent: PathBuf,
    pub timeout_ms: u64,
    pub retry_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsConfig {
    pub name: String,
    pub journals: u16,
    pub backend: BackendConfig,
    /// Checked in /proc/self/mounts at startup (refuse to join if still
    /// mounted) and before leaving the group (`unmount`, stop).
    pub mount_point: Option<PathBuf>,
    /// Ask to mount at startup.
    pub auto_mount: bool,
    /// Mode of the automatic mount.
    pub mode: Mode,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendConfig {
    Dlm(Box<DlmConfig>),
    Sysfs(SysfsConfig),
    Exec(ExecConfig),
    Memory(MemoryConfig),
}

impl BackendConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            BackendConfig::Sysfs(_) => "gfs2-sysfs",
            BackendConfig::Dlm(_) => "dlm",
            BackendConfig::Exec(_) => "exec",
            BackendConfig::Memory(_) => "memory",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysfsConfig {
    /// `/sys/fs/gfs2` on a real host; a temp dir in tests.
    pub root: PathBuf,
    /// Lock table cluster name: the directory is `<root>/<cluster>:<fs>/lock_module/`.
    pub cluster: String,
    pub uevents: UeventSource,
    /// Re-read the state files this often while waiting (missed uevents).
    pub poll_ms: u64,
    /// How long a mount waits for the kernel's lock_module directory.
    pub mount_timeout_ms: u64,
}

/// `backend = "dlm"`: cohortd drives the kernel DLM and GFS2 itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DlmConfig {
    /// GFS2's side (lock_module directory, uevents, poll interval, slow-mount warning).
    pub lm: SysfsConfig,
    /// The shared block device (`[filesystem.dlm] device`).
    pub device: PathBuf,
    /// The filesystem's `mount_point` (required with this backend).
    pub mount_point: PathBuf,
    /// Extra mount options (`-o`), e.g. `noatime`.
    pub options: Option<String>,
    /// `/sys/kernel/config/dlm`.
    pub configfs: PathBuf,
    /// `/sys/kernel/dlm`.
    pub dlm_sysfs: PathBuf,
    /// `/dev/dlm-monitor`, held open while the daemon runs (`None`: tests).
    pub monitor: Option<PathBuf>,
    /// The DLM's address of every node (top-level `[dlm] addresses`, or the
    /// UDP transport's unicast peers).
    pub addresses: BTreeMap<u32, IpAddr>,
    pub mount_cmd: PathBuf,
    pub umount_cmd: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UeventSource {
    /// The kernel's kobject uevent netlink socket.
    Netlink,
    /// No notification: only the periodic re-read.
    None,
    /// A FIFO carrying uevent records, one per line (tests, fake trees).
    Fifo(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecConfig {
    /// Default hook for every operation.
    pub hook: Option<PathBuf>,
    /// Per-operation hooks (keys: the `OP` names, and [`EXEC_MOUNTED`]).
    pub hooks: BTreeMap<String, PathBuf>,
    pub timeout_ms: u64,
    /// A file the host creates when the kernel withdrew the filesystem
    /// (exec has no uevents): cohortd reports the withdraw once and removes
    /// the file. Checked every [`crate::backend::exec::WITHDRAW_POLL`].
    pub withdraw_file: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MemoryConfig {
    /// The first N mounts fail.
    pub fail_mount: u32,
    /// The first N journal recoveries fail.
    pub fail_recover: u32,
}

/// The `OP` names the exec backend passes (and accepts as `hooks` keys).
pub const EXEC_OPS: &[&str] = &[
    "block",
    "unblock",
    "set_jid",
    "mount_first",
    "mount",
    "mount_spectator",
    "recover_journal",
    "release",
    "unmounted",
    "mount_error",
];

/// The exec backend's remount (`cohortctl remount`; `MODE=ro|rw`;
/// optional: without it and without a default `hook`, remount is refused).
pub const EXEC_REMOUNT: &str = "remount";

/// The exec backend's query hook (`hooks.mounted`, never the default
/// `hook`): exit 0 = the kernel still has the filesystem mounted, 1 = not.
pub const EXEC_MOUNTED: &str = "mounted";

/// The lock_module side (`[filesystem.sysfs]`) of `gfs2-sysfs` and `dlm`.
fn parse_lm(k: &dyn Fn(&str) -> String, raw: Option<RawSysfs>, cluster_name: &Option<String>) -> R<SysfsConfig> {
    let s = raw.unwrap_or(RawSysfs { root: None, cluster: None, uevents: None, poll_ms: None, mount_timeout_ms: None });
    let root = abs_path(&k("sysfs.root"), s.root.as_deref().unwrap_or("/sys/fs/gfs2"))?;
    let cluster = match s.cluster.or_else(|| cluster_name.clone()) {
        Some(c) if c.is_empty() || c.contains(':') || c.contains('/') => {
            return err(k("sysfs.cluster"), format!("must not be empty or contain ':' or '/' ({c:?})"))
        }
        Some(c) => c,
        None => {
            return err(k("sysfs.cluster"), "missing: the lock table cluster name (or set the top-level cluster_name)")
        }
    };
    let uevents = match s.uevents.as_deref() {
        None | Some("netlink") => UeventSource::Netlink,
        Some("none") => UeventSource::None,
        Some(p) if p.starts_with('/') => UeventSource::Fifo(PathBuf::from(p)),
        Some(p) => {
            return err(
                k("sysfs.uevents"),
                format!("must be \"netlink\", \"none\" or an absolute FIFO path (got {p:?})"),
            )
        }
    };
    Ok(SysfsConfig {
        root,
        cluster,
        uevents,
        poll_ms: ms(&k("sysfs.poll_ms"), s.poll_ms, 1000, 10, 60_000)?,
        mount_timeout_ms: ms(&k("sysfs.mount_timeout_ms"), s.mount_timeout_ms, 60_000, 10, 3_600_000)?,
    })
}

// ---- raw file shape -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node_id: Option<i64>,
    transport: Option<String>,
    nodes: Option<Vec<i64>>,
    startup_fencing: Option<bool>,
    startup_fence_delay_ms: Option<i64>,
    udp: Option<RawUdp>,
    state_dir: Option<String>,
    cluster_name: Option<String>,
    recovery_retry_ms: Option<i64>,
    log_entries: Option<i64>,
    log_level: Option<String>,
    corosync: Option<RawCorosync>,
    dlm: Option<RawDlmCluster>,
    fence: Option<RawFence>,
    #[serde(default)]
    filesystem: Vec<RawFs>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDlmCluster {
    addresses: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDlm {
    device: Option<String>,
    options: Option<String>,
    configfs: Option<String>,
    dlm_sysfs: Option<String>,
    monitor: Option<String>,
    mount_cmd: Option<String>,
    umount_cmd: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCorosync {
    group: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUdp {
    mode: Option<String>,
    key_file: Option<String>,
    allow_insecure_key_file: Option<bool>,
    heartbeat_ms: Option<i64>,
    fail_timeout_ms: Option<i64>,
    quorum: Option<String>,
    group: Option<String>,
    port: Option<i64>,
    interface: Option<String>,
    bind: Option<String>,
    ttl: Option<i64>,
    loopback: Option<bool>,
    peers: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFence {
    agent: Option<String>,
    timeout_ms: Option<i64>,
    retry_ms: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFs {
    name: Option<String>,
    journals: Option<i64>,
    backend: Option<String>,
    mount_point: Option<String>,
    auto_mount: Option<bool>,
    mode: Option<String>,
    sysfs: Option<RawSysfs>,
    dlm: Option<RawDlm>,
    exec: Option<RawExec>,
    memory: Option<RawMemory>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSysfs {
    root: Option<String>,
    cluster: Option<String>,
    uevents: Option<String>,
    poll_ms: Option<i64>,
    mount_timeout_ms: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExec {
    hook: Option<String>,
    #[serde(default)]
    hooks: BTreeMap<String, String>,
    timeout_ms: Option<i64>,
    withdraw_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMemory {
    fail_mount: Option<i64>,
    fail_recover: Option<i64>,
}

/// A configuration error: `key` is the dotted path, `why` the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub why: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.why)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.why)
        }
    }
}

impl std::error::Error for ConfigError {}

type R<T> = Result<T, (String, String)>;

fn err<T>(key: impl Into<String>, why: impl Into<String>) -> R<T> {
    Err((key.into(), why.into()))
}

fn ms(key: &str, v: Option<i64>, default: u64, min: u64, max: u64) -> R<u64> {
    match v {
        None => Ok(default),
        Some(x) if x < 0 => err(key, format!("must not be negative (got {x})")),
        Some(x) if (x as u64) < min || (x as u64) > max => {
            err(key, format!("must be between {min} and {max} (got {x})"))
        }
        Some(x) => Ok(x as u64),
    }
}

fn abs_path(key: &str, s: &str) -> R<PathBuf> {
    if s.is_empty() {
        return err(key, "must not be empty");
    }
    let p = PathBuf::from(s);
    if !p.is_absolute() {
        return err(key, format!("must be an absolute path (got {s:?})"));
    }
    Ok(p)
}

fn executable(key: &str, p: &Path) -> R<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(p) {
        Err(e) => err(key, format!("{} cannot be used: {e}", p.display())),
        Ok(m) if !m.is_file() => err(key, format!("{} is not a regular file", p.display())),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => err(key, format!("{} is not executable", p.display())),
        Ok(_) => Ok(()),
    }
}

fn parse_mode(key: &str, s: &str) -> R<Mode> {
    match s {
        "rw" => Ok(Mode::Rw),
        "ro" => Ok(Mode::Ro),
        "spectator" => Ok(Mode::Spectator),
        _ => err(key, format!("must be \"rw\", \"ro\" or \"spectator\" (got {s:?})")),
    }
}

pub fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Rw => "rw",
        Mode::Ro => "ro",
        Mode::Spectator => "spectator",
    }
}

/// Position of a TOML error as "line N" plus the line's text.
fn toml_where(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else { return String::new() };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    format!("line {line_no} (`{line}`)")
}

/// A list of node ids: each 1..=u32::MAX, distinct, 1 to MAX_NODES of them. Sorted.
fn node_list(key: &str, v: &[i64]) -> R<Vec<u32>> {
    if v.is_empty() {
        return err(key, "must not be empty");
    }
    if v.len() > MAX_NODES {
        return err(key, format!("at most {MAX_NODES} nodes (got {})", v.len()));
    }
    let mut out: Vec<u32> = Vec::with_capacity(v.len());
    for &n in v {
        if n <= 0 || n > i64::from(u32::MAX) {
            return err(key, format!("node ids must be between 1 and {} (got {n})", u32::MAX));
        }
        if out.contains(&(n as u32)) {
            return err(key, format!("node {n} is listed twice"));
        }
        out.push(n as u32);
    }
    out.sort_unstable();
    Ok(out)
}

/// `ip:port`, or `ip` alone (then `default_port`). IPv6 as `[addr]:port`.
fn sock_addr(key: &str, s: &str, default_port: u16) -> R<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        if a.port() == 0 {
            return err(key, format!("port 0 is not a usable address ({s:?})"));
        }
        return Ok(a);
    }
    match s.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, default_port)),
        Err(_) => err(key, format!("must be \"IP:PORT\" or \"IP\" (got {s:?})")),
    }
}

fn ipv4(key: &str, s: &str) -> R<Ipv4Addr> {
    s.parse::<Ipv4Addr>().or_else(|_| err(key, format!("must be an IPv4 address (got {s:?})")))
}

/// Validate `[udp]` for node `me`; returns it and the cluster's node list.
/// The cluster key must not be accessible by group or others (as ssh
/// refuses a private key file that is): whoever reads it can impersonate
/// any node of the cluster.
fn key_file_private(path: &Path) -> R<()> {
    use std::os::unix::fs::PermissionsExt;
    let md = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return err("udp.key_file", format!("{} cannot be read: {e}", path.display())),
    };
    let mode = md.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return err(
            "udp.key_file",
            format!(
                "{p} is accessible by group or others (mode {mode:04o}): anyone who reads the key can impersonate \
                 every node; run `chmod 600 {p}` (or set udp.allow_insecure_key_file = true to accept it)",
                p = path.display()
            ),
        );
    }
    Ok(())
}

fn udp_config(u: RawUdp, me: u32, nodes: Option<&[u32]>) -> R<(UdpConfig, Vec<u32>)> {
    let Some(key_file) = u.key_file else {
        return err("udp.key_file", "missing: the cluster key file (32 random bytes or 64 hex digits)");
    };
    let key_file = abs_path("udp.key_file", &key_file)?;
    match std::fs::read(&key_file) {
        Err(e) => return err("udp.key_file", format!("{} cannot be read: {e}", key_file.display())),
        Ok(bytes) => {
            if let Err(why) = cohort_udp::parse_key(&bytes) {
                return err("udp.key_file", format!("{}: {why}", key_file.display()));
            }
        }
    }
    let allow_insecure_key_file = u.allow_insecure_key_file.unwrap_or(false);
    if !allow_insecure_key_file {
        key_file_private(&key_file)?;
    }
    let heartbeat_ms = ms("udp.heartbeat_ms", u.heartbeat_ms, 50, 5, 10_000)?;
    let fail_timeout_ms = ms("udp.fail_timeout_ms", u.fail_timeout_ms, (6 * heartbeat_ms).max(300), 10, 600_000)?;
    if fail_timeout_ms < 2 * heartbeat_ms {
        return err(
            "udp.fail_timeout_ms",
            format!("must be at least twice udp.heartbeat_ms = {heartbeat_ms} (got {fail_timeout_ms})"),
        );
    }
    let port = match u.port {
        None => DEFAULT_UDP_PORT,
        Some(p) if !(1..=65535).contains(&p) => {
            return err("udp.port", format!("must be between 1 and 65535 (got {p})"))
        }
        Some(p) => p as u16,
    };
    let mode = match u.mode.as_deref() {
        Some(m @ ("multicast" | "unicast")) => m,
        None if u.peers.is_some() => "unicast",
        None => "multicast",
        Some(m) => return err("udp.mode", format!("must be \"multicast\" or \"unicast\" (got {m:?})")),
    };
    let only_for = |present: bool, key: &str, m: &str| -> R<()> {
        if present {
            return err(format!("udp.{key}"), format!("only used with udp.mode = \"{m}\" (the mode is \"{mode}\")"));
        }
        Ok(())
    };
    let (net, all) = if mode == "multicast" {
        only_for(u.peers.is_some(), "peers", "unicast")?;
        let group = ipv4("udp.group", u.group.as_deref().unwrap_or("239.192.71.1"))?;
        if !group.is_multicast() {
            return err("udp.group", format!("{group} is not a multicast address (224.0.0.0/4)"));
        }
        let interface = ipv4("udp.interface", u.interface.as_deref().unwrap_or("0.0.0.0"))?;
        let bind = match u.bind.as_deref() {
            None => None,
            Some(b) => match b.parse::<SocketAddrV4>() {
                Ok(a) => Some(a),
                Err(_) => Some(SocketAddrV4::new(ipv4("udp.bind", b)?, 0)),
            },
        };
        let ttl = match u.ttl {
            None => 1,
            Some(t) if !(1..=255).contains(&t) => {
                return err("udp.ttl", format!("must be between 1 and 255 (got {t})"))
            }
            Some(t) => t as u32,
        };
        let Some(all) = nodes else {
            return err(
                "nodes",
                "missing: transport = \"udp\" in multicast mode needs the node ids of the cluster (nodes = [1, 2, 3])",
            );
        };
        let net = UdpNet::Multicast {
            group: SocketAddrV4::new(group, port),
            interface,
            bind,
            ttl,
            loopback: u.loopback.unwrap_or(true),
        };
        (net, all.to_vec())
    } else {
        only_for(u.group.is_some(), "group", "multicast")?;
        only_for(u.interface.is_some(), "interface", "multicast")?;
        only_for(u.ttl.is_some(), "ttl", "multicast")?;
        only_for(u.loopback.is_some(), "loopback", "multicast")?;
        let raw_peers = u.peers.unwrap_or_default();
        if raw_peers.is_empty() {
            return err(
                "udp.peers",
                "missing: unicast mode needs the address of every node ([udp.peers] 1 = \"IP:PORT\")",
            );
        }
        let mut peers: BTreeMap<u32, SocketAddr> = BTreeMap::new();
        for (id, addr) in &raw_peers {
            let key = format!("udp.peers.{id}");
            let n = match id.parse::<u32>() {
                Ok(n) if n > 0 => n,
                _ => return err(key, format!("the key must be a node id between 1 and {} (got {id:?})", u32::MAX)),
            };
            let a = sock_addr(&key, addr, port)?;
            if let Some((other, _)) = peers.iter().find(|(_, x)| **x == a) {
                return err(key, format!("address {a} is also node {other}'s"));
            }
            peers.insert(n, a);
        }
        let bind = match u.bind.as_deref() {
            None => None,
            Some(b) => Some(sock_addr("udp.bind", b, port)?),
        };
        let all: Vec<u32> = match nodes {
            None => peers.keys().copied().collect(),
            Some(l) => {
                for n in l {
                    let has_address = peers.contains_key(n) || (*n == me && bind.is_some());
                    if !has_address {
                        return err("udp.peers", format!("node {n} (in nodes) has no address"));
                    }
                }
                if let Some(p) = peers.keys().find(|p| !l.contains(p)) {
                    return err(format!("udp.peers.{p}"), format!("node {p} is not in nodes = {l:?}"));
                }
                l.to_vec()
            }
        };
        if all.len() > MAX_NODES {
            return err("udp.peers", format!("at most {MAX_NODES} nodes (got {})", all.len()));
        }
        if !peers.contains_key(&me) && bind.is_none() {
            return err(
                "udp.peers",
                format!("this node (node_id = {me}) has no address: add it to [udp.peers] or set udp.bind"),
            );
        }
        (UdpNet::Unicast { peers, bind }, all)
    };
    if !all.contains(&me) {
        return err("node_id", format!("{me} is not one of the configured nodes {all:?}"));
    }
    let quorum = match u.quorum.as_deref() {
        None | Some("majority") => UdpQuorum::Majority,
        Some("two-node") if all.len() == 2 => UdpQuorum::TwoNode,
        Some("two-node") => {
            return err("udp.quorum", format!("\"two-node\" needs exactly 2 configured nodes (got {})", all.len()))
        }
        Some(q) => return err("udp.quorum", format!("must be \"majority\" or \"two-node\" (got {q:?})")),
    };
    Ok((UdpConfig { net, key_file, allow_insecure_key_file, heartbeat_ms, fail_timeout_ms, quorum }, all))
}

impl Config {
    /// Read and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: String::new(),
            why: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, &file)
    }

    /// Parse and validate configuration text (`file` names it in errors).
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_owned(),
            key: toml_where(text, &e),
            why: e.message().trim().to_owned(),
        })?;
        Config::validate(raw).map_err(|(key, why)| ConfigError { file: file.to_owned(), key, why })
    }

    fn validate(raw: RawConfig) -> R<Config> {
        let node_id = match raw.node_id {
            None => None,
            Some(n) if n <= 0 || n > i64::from(u32::MAX) => {
                return err("node_id", format!("must be between 1 and {} (got {n})", u32::MAX))
            }
            Some(n) => Some(n as u32),
        };
        let transport = match raw.transport.as_deref() {
            None | Some("corosync") => Transport::Corosync,
            Some("udp") => Transport::Udp,
            Some(t) => return err("transport", format!("must be \"corosync\" or \"udp\" (got {t:?})")),
        };
        let state_dir = abs_path("state_dir", raw.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR))?;
        let mut nodes = match raw.nodes {
            None => None,
            Some(v) => Some(node_list("nodes", &v)?),
        };
        let startup_fence_delay_ms = ms("startup_fence_delay_ms", raw.startup_fence_delay_ms, 3000, 0, 3_600_000)?;
        if let (Some(me), Some(list)) = (node_id, nodes.as_ref()) {
            if !list.contains(&me) {
                return err("nodes", format!("does not contain this node's node_id {me} (nodes = {list:?})"));
            }
        }
        let udp = match (transport, raw.udp) {
            (Transport::Corosync, Some(_)) => {
                return err("udp", "options for transport \"udp\" given, but transport is \"corosync\"")
            }
            (Transport::Corosync, None) => None,
            (Transport::Udp, None) => {
                return err("udp", "missing: transport = \"udp\" needs a [udp] table with at least `key_file`")
            }
            (Transport::Udp, Some(u)) => {
                if raw.corosync.is_some() {
                    return err("corosync", "options for transport \"corosync\" given, but transport is \"udp\"");
                }
                let Some(me) = node_id else {
                    return err(
                        "node_id",
                        "missing: required with transport = \"udp\" (there is no corosync to ask for it)",
                    );
                };
                let (cfg, all) = udp_config(u, me, nodes.as_deref())?;
                nodes = Some(all);
                Some(cfg)
            }
        };
        let dlm_addresses: Option<BTreeMap<u32, IpAddr>> = match raw.dlm.and_then(|d| d.addresses) {
            Some(a) => {
                let mut m = BTreeMap::new();
                for (id, addr) in a {
                    let key = format!("dlm.addresses.{id}");
                    let n: u32 = match id.parse() {
                        Ok(n) if n > 0 => n,
                        _ => return err(key, "the key must be a node id (1 or more)"),
                    };
                    let ip: IpAddr = addr.parse().map_err(|_| (key.clone(), format!("not an IP address: {addr:?}")))?;
                    m.insert(n, ip);
                }
                Some(m)
            }
            None => match udp.as_ref().map(|u| &u.net) {
                Some(UdpNet::Unicast { peers, .. }) => Some(peers.iter().map(|(n, a)| (*n, a.ip())).collect()),
                _ => None,
            },
        };
        let group = raw.corosync.and_then(|c| c.group).unwrap_or_else(|| "cohort".to_owned());
        if group.is_empty() || group.len() > 127 || group.contains('\0') {
            return err("corosync.group", "must be 1 to 127 bytes without NUL");
        }
        let cluster_name = match raw.cluster_name {
            Some(c) if c.is_empty() || c.contains(':') || c.contains('/') || c.len() > 32 => {
                return err("cluster_name", format!("must be 1 to 32 characters without ':' or '/' (got {c:?})"))
            }
            c => c,
        };
        let Some(rf) = raw.fence else {
            return err("fence", "missing: a [fence] table with `agent` is required (fencing cannot be skipped)");
        };
        let Some(agent) = rf.agent else { return err("fence.agent", "missing: the fence agent command is required") };
        let agent = abs_path("fence.agent", &agent)?;
        executable("fence.agent", &agent)?;
        let fence = FenceConfig {
            agent,
            timeout_ms: ms("fence.timeout_ms", rf.timeout_ms, 60_000, 100, 3_600_000)?,
            retry_ms: ms("fence.retry_ms", rf.retry_ms, 1000, 10, 600_000)?,
        };
        let recovery_retry_ms = ms("recovery_retry_ms", raw.recovery_retry_ms, 1000, 10, 600_000)?;
        let log_entries = ms("log_entries", raw.log_entries, 2000, 10, 1_000_000)? as usize;
        let log_level = match raw.log_level {
            Some(l) => match tracing_subscriber::EnvFilter::try_new(&l) {
                Ok(_) if !l.trim().is_empty() => Some(l),
                Ok(_) => return err("log_level", "must not be empty (e.g. \"info\", \"warn\", \"debug\")"),
                Err(e) => {
                    return err("log_level", format!("not a valid log filter {l:?}: {e} (e.g. \"info\", \"warn\")"))
                }
            },
            None => None,
        };
        if raw.filesystem.len() > MAX_GROUPS {
            return err("filesystem", format!("at most {MAX_GROUPS} filesystems (got {})", raw.filesystem.len()));
        }
        let mut filesystems: Vec<FsConfig> = Vec::new();
        for (i, f) in raw.filesystem.into_iter().enumerate() {
            let k = |s: &str| format!("filesystem[{i}].{s}");
            let Some(name) = f.name else { return err(k("name"), "missing") };
            if wire::fs_name(&name).is_err() {
                return err(
                    k("name"),
                    format!("{name:?} is not a valid filesystem name (1 to 32 of A-Z a-z 0-9 _ - . :)"),
                );
            }
            if filesystems.iter().any(|x| x.name == name) {
                return err(k("name"), format!("{name:?} is configured twice"));
            }
            let journals = match f.journals {
                None => return err(k("journals"), "missing: the number of journals of the filesystem"),
                Some(j) if j < 1 || j > MAX_JOURNALS as i64 => {
                    return err(k("journals"), format!("must be between 1 and {MAX_JOURNALS} (got {j})"))
                }
                Some(j) => j as u16,
            };
            let mount_point = match f.mount_point {
                Some(m) => Some(abs_path(&k("mount_point"), &m)?),
                None => None,
            };
            let mode = parse_mode(&k("mode"), f.mode.as_deref().unwrap_or("rw"))?;
            let Some(kind) = f.backend else {
                return err(k("backend"), "missing: \"dlm\", \"gfs2-sysfs\", \"exec\" or \"memory\"");
            };
            let only = |present: bool, table: &str| -> R<()> {
                if present {
                    return err(k(table), format!("options for backend {table:?} given, but backend is {kind:?}"));
                }
                Ok(())
            };
            let backend = match kind.as_str() {
                "gfs2-sysfs" => {
                    only(f.exec.is_some(), "exec")?;
                    only(f.memory.is_some(), "memory")?;
                    only(f.dlm.is_some(), "dlm")?;
                    BackendConfig::Sysfs(parse_lm(&k, f.sysfs, &cluster_name)?)
                }
                "dlm" => {
                    only(f.exec.is_some(), "exec")?;
                    only(f.memory.is_some(), "memory")?;
                    if name.contains(':') || name.len() > wire::FS_NAME_LEN - 4 {
                        return err(
                            k("name"),
                            format!(
                                "with backend \"dlm\" the name is the DLM lockspace name (the part of the lock \
                                 table after ':'): no ':' and at most {} characters (got {name:?})",
                                wire::FS_NAME_LEN - 4
                            ),
                        );
                    }
                    let Some(d) = f.dlm else {
                        return err(k("dlm"), "missing: backend \"dlm\" needs a [filesystem.dlm] table with `device`");
                    };
                    let Some(device) = d.device else {
                        return err(k("dlm.device"), "missing: the shared block device (e.g. \"/dev/sdb\")");
                    };
                    let Some(mp) = mount_point.clone() else {
                        return err(k("mount_point"), "missing: backend \"dlm\" mounts the filesystem there");
                    };
                    let path_or =
                        |key: &str, v: Option<String>, def: &str| abs_path(&k(key), v.as_deref().unwrap_or(def));
                    let monitor = match d.monitor.as_deref() {
                        Some("none") => None,
                        m => Some(abs_path(&k("dlm.monitor"), m.unwrap_or("/dev/dlm-monitor"))?),
                    };
                    let addresses = match &dlm_addresses {
                        Some(a) => a.clone(),
                        None => return err(
                            "dlm.addresses",
                            "missing: the kernel DLM's address of every node ([dlm] addresses = { 1 = \"10.0.0.1\", \
                                 ... }); with transport \"udp\" in unicast mode the peers' addresses are used",
                        ),
                    };
                    if let Some(n) = nodes.as_ref().and_then(|ns| ns.iter().find(|n| !addresses.contains_key(n))) {
                        return err("dlm.addresses", format!("node {n} of `nodes` has no address"));
                    }
                    BackendConfig::Dlm(Box::new(DlmConfig {
                        lm: parse_lm(&k, f.sysfs, &cluster_name)?,
                        device: abs_path(&k("dlm.device"), &device)?,
                        mount_point: mp,
                        options: d.options.filter(|o| !o.trim().is_empty()),
                        configfs: path_or("dlm.configfs", d.configfs, "/sys/kernel/config/dlm")?,
                        dlm_sysfs: path_or("dlm.dlm_sysfs", d.dlm_sysfs, "/sys/kernel/dlm")?,
                        monitor,
                        addresses,
                        mount_cmd: PathBuf::from(d.mount_cmd.unwrap_or_else(|| "mount".into())),
                        umount_cmd: PathBuf::from(d.umount_cmd.unwrap_or_else(|| "umount".into())),
                    }))
                }
                "exec" => {
                    only(f.sysfs.is_some(), "sysfs")?;
                    only(f.memory.is_some(), "memory")?;
                    let Some(e) = f.exec else {
                        return err(
                            k("exec"),
                            "missing: backend \"exec\" needs an [filesystem.exec] table with `hook`",
                        );
                    };
                    let hook = match e.hook {
                        Some(h) => {
                            let p = abs_path(&k("exec.hook"), &h)?;
                            executable(&k("exec.hook"), &p)?;
                            Some(p)
                        }
                        None => None,
                    };
                    let mut hooks = BTreeMap::new();
                    for (op, cmd) in e.hooks {
                        let key = k(&format!("exec.hooks.{op}"));
                        if !EXEC_OPS.contains(&op.as_str()) && op != EXEC_MOUNTED && op != EXEC_REMOUNT {
                            return err(
                                key,
                                format!(
                                    "unknown operation (known: {}, {EXEC_REMOUNT}, {EXEC_MOUNTED})",
                                    EXEC_OPS.join(", ")
                                ),
                            );
                        }
                        let p = abs_path(&key, &cmd)?;
                        executable(&key, &p)?;
                        hooks.insert(op, p);
                    }
                    if hook.is_none() {
                        for op in EXEC_OPS {
                            if !hooks.contains_key(*op) {
                                return err(
                                    k("exec.hook"),
                                    format!("missing: no default hook and no hooks.{op} (every operation needs one)"),
                                );
                            }
                        }
                    }
                    // Without a way to see the kernel's mount, a restarted
                    // daemon would join while the old mount still writes, and
                    // `unmount` could not tell whether the kernel let go.
                    if !hooks.contains_key(EXEC_MOUNTED) && mount_point.is_none() {
                        return err(
                            k("exec.hooks.mounted"),
                            "missing: the exec backend needs a way to see whether the kernel still has the \
                             filesystem mounted (at start, after a restart, and before leaving the group): set \
                             hooks.mounted (exit 0 = mounted, 1 = not mounted) or mount_point (checked in \
                             /proc/self/mounts)",
                        );
                    }
                    let withdraw_file = match &e.withdraw_file {
                        Some(p) => Some(abs_path(&k("exec.withdraw_file"), p)?),
                        None => None,
                    };
                    BackendConfig::Exec(ExecConfig {
                        hook,
                        hooks,
                        timeout_ms: ms(&k("exec.timeout_ms"), e.timeout_ms, 60_000, 10, 3_600_000)?,
                        withdraw_file,
                    })
                }
                "memory" => {
                    only(f.sysfs.is_some(), "sysfs")?;
                    only(f.exec.is_some(), "exec")?;
                    let m = f.memory.unwrap_or(RawMemory { fail_mount: None, fail_recover: None });
                    BackendConfig::Memory(MemoryConfig {
                        fail_mount: ms(&k("memory.fail_mount"), m.fail_mount, 0, 0, 1_000_000)? as u32,
                        fail_recover: ms(&k("memory.fail_recover"), m.fail_recover, 0, 0, 1_000_000)? as u32,
                    })
                }
                other => {
                    return err(
                        k("backend"),
                        format!("must be \"dlm\", \"gfs2-sysfs\", \"exec\" or \"memory\" (got {other:?})"),
                    )
                }
            };
            filesystems.push(FsConfig {
                name,
                journals,
                backend,
                mount_point,
                auto_mount: f.auto_mount.unwrap_or(false),
                mode,
            });
        }
        // Every group this daemon makes (a filesystem's, a DLM lockspace's)
        // is keyed by a 31-bit hash of its name: two names with one key
        // would be refused at mount (`NameCollision`); say so now.
        let mut groups: Vec<(String, usize)> = Vec::new();
        for (i, f) in filesystems.iter().enumerate() {
            groups.push((f.name.clone(), i));
            if matches!(f.backend, BackendConfig::Dlm(_)) {
                groups.push((crate::backend::dlm::aux_group_name(&f.name), i));
            }
        }
        for (a, (na, _)) in groups.iter().enumerate() {
            for (nb, j) in groups.iter().skip(a + 1) {
                if GroupId::of_fs(na) == GroupId::of_fs(nb) {
                    return err(
                        format!("filesystem[{j}].name"),
                        format!("group {nb:?} has the same group id as {na:?} (a 31-bit hash of the name): rename one"),
                    );
                }
            }
        }
        Ok(Config {
            node_id,
            transport,
            nodes,
            startup_fencing: raw.startup_fencing.unwrap_or(true),
            startup_fence_delay_ms,
            udp,
            state_dir,
            group,
            cluster_name,
            fence,
            recovery_retry_ms,
            log_entries,
            log_level,
            filesystems,
        })
    }

    /// The keys whose value differs between `self` (running) and `new`
    /// and that only take effect at a restart (everything but `log_level`,
    /// `fence.agent` and `fence.timeout_ms`).
    pub fn restart_keys(&self, new: &Config) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut d = |changed: bool, k: &'static str| {
            if changed {
                v.push(k);
            }
        };
        d(self.node_id != new.node_id, "node_id");
        d(self.transport != new.transport, "transport");
        d(self.nodes != new.nodes, "nodes");
        d(self.startup_fencing != new.startup_fencing, "startup_fencing");
        d(self.startup_fence_delay_ms != new.startup_fence_delay_ms, "startup_fence_delay_ms");
        d(self.udp != new.udp, "udp");
        d(self.state_dir != new.state_dir, "state_dir");
        d(self.group != new.group, "corosync.group");
        d(self.cluster_name != new.cluster_name, "cluster_name");
        d(self.fence.retry_ms != new.fence.retry_ms, "fence.retry_ms");
        d(self.recovery_retry_ms != new.recovery_retry_ms, "recovery_retry_ms");
        d(self.log_entries != new.log_entries, "log_entries");
        d(self.filesystems != new.filesystems, "filesystem");
        v
    }

    /// `Err` when this build cannot run the configured transport (see
    /// [`Transport::available`]), for `cohortd --check` and the start. Not
    /// part of [`Config::parse`]: the file itself is valid.
    pub fn check_build(&self) -> Result<(), String> {
        self.transport.available().map_err(|why| format!("transport = \"{}\": {why}", self.transport.name()))
    }

    /// One line on startup fencing for `cohortd --check`.
    pub fn startup_fencing_summary(&self) -> String {
        match (&self.nodes, self.startup_fencing) {
            (_, false) => "startup fencing: OFF (startup_fencing = false): a first mount does not wait for \
                           configured nodes that have not joined"
                .to_owned(),
            (Some(n), true) => format!("startup fencing: on (nodes {n:?})"),
            (None, true) => "startup fencing: on, nodes from corosync's nodelist at start (corosync-cmapctl); the \
                             start fails if it cannot be read (set `nodes = [...]`, or startup_fencing = false)"
                .to_owned(),
        }
    }

    pub fn socket_path(&self) -> PathBuf {
        self.state_dir.join(SOCKET_NAME)
    }

    pub fn filesystem(&self, name: &str) -> Option<&FsConfig> {
        self.filesystems.iter().find(|f| f.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> String {
        // /bin/sh exists and is executable everywhere we run.
        "/bin/sh".to_owned()
    }

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, "test.toml")
    }

    #[test]
    fn minimal_and_defaults() {
        let c = parse(&format!(
            "state_dir = \"/tmp/x\"\n[fence]\nagent = \"{}\"\n[[filesystem]]\nname = \"fs1\"\njournals = 8\nbackend = \"memory\"\n",
            agent()
        ))
        .unwrap();
        assert_eq!(c.node_id, None);
        assert_eq!(c.transport, Transport::Corosync);
        assert_eq!(c.fence.timeout_ms, 60_000);
        assert_eq!(c.group, "cohort");
        assert_eq!(c.filesystems[0].journals, 8);
        assert_eq!(c.filesystems[0].mode, Mode::Rw);
        assert_eq!(c.socket_path(), PathBuf::from("/tmp/x/cohortd.sock"));
    }

    #[test]
    fn errors_name_the_key_and_why() {
        let base = format!("[fence]\nagent = \"{}\"\n", agent());
        let cases: &[(&str, &str)] = &[
            ("node_id = 0\n", "test.toml: node_id: must be between 1 and"),
            ("transport = \"tcp\"\n", "test.toml: transport: must be \"corosync\" or \"udp\" (got \"tcp\")"),
            ("state_dir = \"rel\"\n", "test.toml: state_dir: must be an absolute path"),
            ("[[filesystem]]\nname = \"fs1\"\nbackend = \"memory\"\n", "filesystem[0].journals: missing"),
            (
                "[[filesystem]]\nname = \"fs1\"\njournals = 0\nbackend = \"memory\"\n",
                "filesystem[0].journals: must be between 1 and 256 (got 0)",
            ),
            (
                "[[filesystem]]\nname = \"bad name\"\njournals = 2\nbackend = \"memory\"\n",
                "filesystem[0].name: \"bad name\" is not a valid filesystem name",
            ),
            (
                "[[filesystem]]\nname = \"a\"\njournals = 2\nbackend = \"zfs\"\n",
                "filesystem[0].backend: must be \"dlm\", \"gfs2-sysfs\", \"exec\" or \"memory\" (got \"zfs\")",
            ),
            (
                "cluster_name = \"c\"\n[[filesystem]]\nname = \"a\"\njournals = 2\nbackend = \"dlm\"\nmount_point = \"/mnt/a\"\n",
                "filesystem[0].dlm: missing: backend \"dlm\" needs a [filesystem.dlm] table with `device`",
            ),
            (
                "cluster_name = \"c\"\n[[filesystem]]\nname = \"a\"\njournals = 2\nbackend = \"dlm\"\n[filesystem.dlm]\ndevice = \"/dev/sdb\"\n",
                "filesystem[0].mount_point: missing: backend \"dlm\" mounts the filesystem there",
            ),
            (
                "cluster_name = \"c\"\n[[filesystem]]\nname = \"a\"\njournals = 2\nbackend = \"dlm\"\nmount_point = \"/mnt/a\"\n[filesystem.dlm]\ndevice = \"/dev/sdb\"\n",
                "dlm.addresses: missing",
            ),
            (
                "cluster_name = \"c\"\n[dlm]\naddresses = { 1 = \"nope\" }\n[[filesystem]]\nname = \"a\"\njournals = 2\nbackend = \"dlm\"\nmount_point = \"/mnt/a\"\n[filesystem.dlm]\ndevice = \"/dev/sdb\"\n",
                "dlm.addresses.1: not an IP address",
            ),
            (
                "cluster_name = \"c\"\n[[filesystem]]\nname = \"c:a\"\njournals = 2\nbackend = \"dlm\"\n",
                "filesystem[0].name: with backend \"dlm\" the name is the DLM lockspace name",
            ),
            (
                "[[filesystem]]\nname = \"a\"\njournals = 2\nbackend = \"gfs2-sysfs\"\n",
                "filesystem[0].sysfs.cluster: missing",
            ),
            (
                "[[filesystem]]\nname = \"a\"\njournals = 2\nbackend = \"exec\"\n",
                "filesystem[0].exec: missing",
            ),
            (
                "[[filesystem]]\nname = \"a\"\njournals = 2\nbackend = \"memory\"\n[[filesystem]]\nname = \"a\"\njournals = 2\nbackend = \"memory\"\n",
                "filesystem[1].name: \"a\" is configured twice",
            ),
            (
                "[[filesystem]]\nname = \"fs188883\"\njournals = 2\nbackend = \"memory\"\n[[filesystem]]\nname = \"fs632435\"\njournals = 2\nbackend = \"memory\"\n",
                "filesystem[1].name: group \"fs632435\" has the same group id as \"fs188883\" (a 31-bit hash of the name): rename one",
            ),
            ("bogus = 1\n", "unknown field `bogus`"),
            ("node_id = \"one\"\n", "line 1 (`node_id = \"one\"`)"),
        ];
        for (extra, want) in cases {
            let text = format!("{extra}{base}");
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "for {extra:?}: got {e:?}, want {want:?}");
        }
        let e = parse("").unwrap_err().to_string();
        assert!(e.contains("fence: missing"), "{e}");
        let e = parse("[fence]\nagent = \"/nonexistent/agent\"\n").unwrap_err().to_string();
        assert!(e.starts_with("test.toml: fence.agent: /nonexistent/agent cannot be used"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let plain = d.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        let e = parse(&format!("[fence]\nagent = \"{}\"\n", plain.display())).unwrap_err().to_string();
        assert!(e.contains("fence.agent") && e.contains("not executable"), "{e}");
    }

    #[test]
    fn backends_parse() {
        let d = tempfile::tempdir().unwrap();
        let key = key_file(d.path());
        let c = parse(&format!(
            r#"
cluster_name = "c1"
transport = "udp"
node_id = 1
nodes = [1]
[udp]
key_file = "{key}"
[fence]
agent = "{a}"
timeout_ms = 500
[[filesystem]]
name = "g1"
journals = 4
backend = "gfs2-sysfs"
mount_point = "/mnt/g1"
[filesystem.sysfs]
root = "/tmp/fake"
uevents = "/tmp/fake/uevents"
[[filesystem]]
name = "e1"
journals = 4
backend = "exec"
[filesystem.exec]
hook = "{a}"
[filesystem.exec.hooks]
recover_journal = "{a}"
mounted = "{a}"
[[filesystem]]
name = "m1"
journals = 4
backend = "memory"
auto_mount = true
mode = "spectator"
[filesystem.memory]
fail_recover = 2
"#,
            a = agent()
        ))
        .unwrap();
        assert_eq!(c.transport, Transport::Udp);
        match &c.filesystems[0].backend {
            BackendConfig::Sysfs(s) => {
                assert_eq!(s.cluster, "c1");
                assert_eq!(s.uevents, UeventSource::Fifo("/tmp/fake/uevents".into()));
            }
            b => panic!("{b:?}"),
        }
        assert!(matches!(&c.filesystems[1].backend, BackendConfig::Exec(e) if e.hooks.len() == 2));
        // exec needs a way to see the kernel's mount: hooks.mounted or mount_point
        let exec = |extra: &str| {
            parse(&format!(
                "[fence]\nagent = \"{a}\"\n[[filesystem]]\nname = \"e\"\njournals = 1\nbackend = \"exec\"\n{extra}[filesystem.exec]\nhook = \"{a}\"\n",
                a = agent()
            ))
        };
        let e = exec("").unwrap_err().to_string();
        assert!(e.starts_with("test.toml: filesystem[0].exec.hooks.mounted: missing: the exec backend needs"), "{e}");
        exec("mount_point = \"/mnt/e\"\n").unwrap();
        assert_eq!(c.filesystems[2].backend, BackendConfig::Memory(MemoryConfig { fail_mount: 0, fail_recover: 2 }));
        assert!(c.filesystems[2].auto_mount);
        let e = parse(&format!(
            "[fence]\nagent = \"{a}\"\n[[filesystem]]\nname = \"e\"\njournals = 1\nbackend = \"exec\"\n[filesystem.exec]\nhook = \"{a}\"\n[filesystem.exec.hooks]\nfrobnicate = \"{a}\"\n",
            a = agent()
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("filesystem[0].exec.hooks.frobnicate: unknown operation"), "{e}");
        let e = parse(&format!(
            "[fence]\nagent = \"{a}\"\n[[filesystem]]\nname = \"e\"\njournals = 1\nbackend = \"memory\"\n[filesystem.sysfs]\nroot = \"/x\"\n",
            a = agent()
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("filesystem[0].sysfs: options for backend \"sysfs\" given, but backend is \"memory\""),
            "{e}"
        );
    }

    #[test]
    fn dlm_backend_parses_and_takes_the_udp_peers_as_dlm_addresses() {
        let d = tempfile::tempdir().unwrap();
        let key = key_file(d.path());
        let base = format!(
            "cluster_name = \"lab\"\ntransport = \"udp\"\nnode_id = 2\n[udp]\nkey_file = \"{key}\"\n[udp.peers]\n1 = \"192.0.2.11:5405\"\n2 = \"192.0.2.12:5405\"\n[fence]\nagent = \"{a}\"\n[[filesystem]]\nname = \"fs1\"\njournals = 2\nbackend = \"dlm\"\nmount_point = \"/mnt/gfs2\"\n[filesystem.dlm]\ndevice = \"/dev/sdb\"\noptions = \"noatime\"\n",
            a = agent()
        );
        let c = parse(&base).unwrap();
        let BackendConfig::Dlm(dl) = &c.filesystems[0].backend else { panic!("not dlm") };
        assert_eq!(dl.device, PathBuf::from("/dev/sdb"));
        assert_eq!(dl.mount_point, PathBuf::from("/mnt/gfs2"));
        assert_eq!(dl.options.as_deref(), Some("noatime"));
        assert_eq!(dl.lm.cluster, "lab");
        assert_eq!(dl.configfs, PathBuf::from("/sys/kernel/config/dlm"));
        assert_eq!(dl.monitor, Some(PathBuf::from("/dev/dlm-monitor")));
        let want: BTreeMap<u32, IpAddr> =
            [(1, "192.0.2.11".parse().unwrap()), (2, "192.0.2.12".parse().unwrap())].into_iter().collect();
        assert_eq!(dl.addresses, want);
        // [dlm] addresses wins over the transport's, and must cover `nodes`.
        let c = parse(&format!("{base}[dlm]\naddresses = {{ 1 = \"10.0.0.1\", 2 = \"10.0.0.2\" }}\n")).unwrap();
        let BackendConfig::Dlm(dl) = &c.filesystems[0].backend else { panic!("not dlm") };
        assert_eq!(dl.addresses[&1], "10.0.0.1".parse::<IpAddr>().unwrap());
        let e = parse(&format!("nodes = [1, 2]\n{base}[dlm]\naddresses = {{ 1 = \"10.0.0.1\" }}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("node 2 of `nodes` has no address"), "{e}");
    }

    fn key_file(dir: &Path) -> String {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("cohort.key");
        std::fs::write(&p, format!("{}\n", "ab".repeat(32))).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p.display().to_string()
    }

    #[test]
    fn udp_unicast_and_multicast() {
        let d = tempfile::tempdir().unwrap();
        let key = key_file(d.path());
        let c = parse(&format!(
            "node_id = 2\ntransport = \"udp\"\n[udp]\nkey_file = \"{key}\"\nport = 7000\nheartbeat_ms = 100\n\
             [udp.peers]\n1 = \"127.0.0.1:7001\"\n2 = \"127.0.0.2\"\n3 = \"[::1]:7003\"\n[fence]\nagent = \"{}\"\n",
            agent()
        ))
        .unwrap();
        assert_eq!(c.node_id, Some(2));
        assert_eq!(c.nodes, Some(vec![1, 2, 3]), "nodes default to the peers");
        assert_eq!(c.startup_fence_delay_ms, 3000);
        let u = c.udp.unwrap();
        assert_eq!((u.heartbeat_ms, u.fail_timeout_ms, u.quorum), (100, 600, UdpQuorum::Majority));
        assert_eq!(u.key_file, PathBuf::from(&key));
        match u.net {
            UdpNet::Unicast { peers, bind } => {
                assert_eq!(bind, None);
                assert_eq!(peers[&1], "127.0.0.1:7001".parse::<SocketAddr>().unwrap());
                assert_eq!(peers[&2], "127.0.0.2:7000".parse::<SocketAddr>().unwrap(), "default port");
                assert_eq!(peers[&3], "[::1]:7003".parse::<SocketAddr>().unwrap());
            }
            n => panic!("{n:?}"),
        }
        let c = parse(&format!(
            "node_id = 1\ntransport = \"udp\"\nnodes = [2, 1]\nstartup_fence_delay_ms = 0\n[udp]\n\
             key_file = \"{key}\"\nquorum = \"two-node\"\ninterface = \"192.0.2.1\"\nbind = \"192.0.2.1\"\n\
             [fence]\nagent = \"{}\"\n",
            agent()
        ))
        .unwrap();
        assert_eq!(c.nodes, Some(vec![1, 2]));
        assert_eq!(c.startup_fence_delay_ms, 0);
        let u = c.udp.unwrap();
        assert_eq!(u.quorum, UdpQuorum::TwoNode);
        assert_eq!(
            u.net,
            UdpNet::Multicast {
                group: "239.192.71.1:5405".parse().unwrap(),
                interface: "192.0.2.1".parse().unwrap(),
                bind: Some("192.0.2.1:0".parse().unwrap()),
                ttl: 1,
                loopback: true
            }
        );
        // corosync: nodes optional, must contain node_id
        let c = parse(&format!("nodes = [3, 1, 2]\n[fence]\nagent = \"{}\"\n", agent())).unwrap();
        assert_eq!((c.nodes, c.udp), (Some(vec![1, 2, 3]), None));
    }

    #[test]
    fn udp_errors_name_the_key_and_why() {
        let d = tempfile::tempdir().unwrap();
        let key = key_file(d.path());
        let bad_key = d.path().join("bad.key");
        std::fs::write(&bad_key, "xyz\n").unwrap();
        let peers = "[udp.peers]\n1 = \"127.0.0.1:7001\"\n2 = \"127.0.0.1:7002\"\n";
        let udp = |extra: &str| format!("transport = \"udp\"\n[udp]\nkey_file = \"{key}\"\n{extra}");
        let cases: Vec<(String, &str)> = vec![
            (udp(peers), "node_id: missing: required with transport = \"udp\""),
            ("node_id = 1\ntransport = \"udp\"\n".to_string(), "udp: missing: transport = \"udp\" needs a [udp] table"),
            (
                "node_id = 1\n[udp]\nport = 1\n".into(),
                "udp: options for transport \"udp\" given, but transport is \"corosync\"",
            ),
            (format!("node_id = 1\n{}", udp("")), "nodes: missing: transport = \"udp\" in multicast mode needs"),
            (format!("node_id = 1\n{}", udp("mode = \"unicast\"\n")), "udp.peers: missing: unicast mode needs"),
            (format!("node_id = 1\ntransport = \"udp\"\n[udp]\n{peers}"), "udp.key_file: missing"),
            (
                format!("node_id = 1\ntransport = \"udp\"\n[udp]\nkey_file = \"{}\"\n{peers}", bad_key.display()),
                "udp.key_file: ",
            ),
            (
                format!("node_id = 1\n{}", udp(&format!("mode = \"tcp\"\n{peers}"))),
                "udp.mode: must be \"multicast\" or \"unicast\" (got \"tcp\")",
            ),
            (format!("node_id = 3\n{}", udp(peers)), "udp.peers: this node (node_id = 3) has no address"),
            (
                format!("node_id = 1\n{}", udp(&format!("heartbeat_ms = 200\nfail_timeout_ms = 300\n{peers}"))),
                "udp.fail_timeout_ms: must be at least twice udp.heartbeat_ms = 200 (got 300)",
            ),
            (
                format!("node_id = 1\n{}", udp(&format!("port = 70000\n{peers}"))),
                "udp.port: must be between 1 and 65535 (got 70000)",
            ),
            (
                format!("node_id = 1\n{}", udp(&format!("ttl = 2\n{peers}"))),
                "udp.ttl: only used with udp.mode = \"multicast\" (the mode is \"unicast\")",
            ),
            (
                format!("node_id = 1\n{}", udp("[udp.peers]\n1 = \"localhost:1\"\n")),
                "udp.peers.1: must be \"IP:PORT\" or \"IP\" (got \"localhost:1\")",
            ),
            (
                format!("node_id = 1\n{}", udp("[udp.peers]\n0 = \"127.0.0.1:1\"\n")),
                "udp.peers.0: the key must be a node id",
            ),
            (
                format!("node_id = 1\n{}", udp("[udp.peers]\n1 = \"127.0.0.1:1\"\n2 = \"127.0.0.1:1\"\n")),
                "udp.peers.2: address 127.0.0.1:1 is also node 1's",
            ),
            (format!("node_id = 1\nnodes = [1, 2, 3]\n{}", udp(peers)), "udp.peers: node 3 (in nodes) has no address"),
            (format!("node_id = 1\nnodes = [1]\n{}", udp(peers)), "udp.peers.2: node 2 is not in nodes = [1]"),
            (
                format!("node_id = 1\nnodes = [1, 2]\n{}", udp("group = \"10.0.0.1\"\n")),
                "udp.group: 10.0.0.1 is not a multicast address",
            ),
            (
                format!("node_id = 1\nnodes = [1, 2, 3]\n{}", udp("quorum = \"two-node\"\n")),
                "udp.quorum: \"two-node\" needs exactly 2 configured nodes (got 3)",
            ),
            (format!("node_id = 1\nnodes = [1, 2]\n{}", udp(peers)), "ok"),
            (
                format!("node_id = 1\nnodes = [1, 2]\n{}[corosync]\ngroup = \"x\"\n", udp(peers)),
                "corosync: options for transport \"corosync\" given, but transport is \"udp\"",
            ),
            ("node_id = 4\nnodes = [1, 2, 3]\n".into(), "nodes: does not contain this node's node_id 4"),
            ("nodes = []\n".into(), "nodes: must not be empty"),
            ("nodes = [1, 1]\n".into(), "nodes: node 1 is listed twice"),
            ("nodes = [0]\n".into(), "nodes: node ids must be between 1 and"),
            ("startup_fence_delay_ms = -1\n".into(), "startup_fence_delay_ms: must not be negative"),
        ];
        for (text, want) in cases {
            let text = format!("{text}\n[fence]\nagent = \"{}\"\n", agent());
            match parse(&text) {
                Ok(_) => assert_eq!(want, "ok", "for {text:?}: parsed, want {want:?}"),
                Err(e) => {
                    let e = e.to_string();
                    assert!(e.starts_with("test.toml: "), "{e}");
                    assert!(e.contains(want), "for {text:?}:\n got {e:?}\nwant {want:?}");
                }
            }
        }
    }
}
