//! `cohort.toml`: parsed with serde into typed structs (`FileConfig` and
//! below: keyword enums, integers with their range and default, absolute
//! paths, names), then `Config::validate` checks what spans keys (one key
//! required or refused by another's value, duplicate names, group-id
//! collisions, the node in the node list) and files (the fence agent and
//! hooks executable, the UDP key readable and private). Every error names
//! the key (`filesystem[1].journals`, `fence.agent`, ...) and says why; one
//! the toml parser found also gives the line and column.
//!
//! See `packaging/cohort.toml.example` for a commented example.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::path::{Path, PathBuf};

use cohort_core::gcs::MAX_NODES;
use cohort_core::wire::{self, Mode, MAX_GROUPS, MAX_JOURNALS};
use cohort_core::GroupId;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Transport {
    #[default]
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UdpQuorum {
    /// More than half of the configured nodes.
    #[default]
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

#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum UeventSource {
    /// The kernel's kobject uevent netlink socket.
    #[default]
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

// ---- the file, typed ------------------------------------------------------
//
// What a single value's type can say is said by its type: keyword enums,
// integers with their range and default, absolute paths, names. The errors
// come from the toml deserializer with the value's position, and
// `toml_error` turns that position into the key path. What needs more than
// one value (or the file system) is checked in `Config::validate`.

/// A keyword: a string, one of `table`'s names. A TOML table is refused
/// (serde's derived enum impl would take `{ udp = {} }` for `"udp"`).
fn keyword<'de, D: Deserializer<'de>, T: Copy>(d: D, table: &[(&str, T)]) -> Result<T, D::Error> {
    let s = String::deserialize(d)?;
    match table.iter().find(|(k, _)| *k == s) {
        Some((_, v)) => Ok(*v),
        None => Err(D::Error::custom(format!("must be {} (got {s:?})", one_of(table.iter().map(|(k, _)| *k))))),
    }
}

/// `"a"`, `"a" or "b"`, `"a", "b" or "c"`.
fn one_of<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<String> = names.map(|n| format!("{n:?}")).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.concat(),
    }
}

/// `Deserialize` for a keyword enum: `keywords!(T { "name" => Variant, ... })`.
macro_rules! keywords {
    ($t:ident { $($name:literal => $v:ident),+ $(,)? }) => {
        impl $t {
            /// The spellings the file accepts.
            pub const KEYWORDS: &'static [(&'static str, $t)] = &[$(($name, $t::$v)),+];
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                keyword(d, Self::KEYWORDS)
            }
        }
    };
}

keywords!(Transport { "corosync" => Corosync, "udp" => Udp });
keywords!(UdpQuorum { "majority" => Majority, "two-node" => TwoNode });
keywords!(UdpMode { "multicast" => Multicast, "unicast" => Unicast });
keywords!(BackendKind { "dlm" => Dlm, "gfs2-sysfs" => Sysfs, "exec" => Exec, "memory" => Memory });
keywords!(FsMode { "rw" => Rw, "ro" => Ro, "spectator" => Spectator });

/// `udp.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UdpMode {
    Multicast,
    Unicast,
}

/// `filesystem[].backend`: which of `BackendConfig` the filesystem gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BackendKind {
    Dlm,
    Sysfs,
    Exec,
    Memory,
}

/// `filesystem[].mode` (core's `Mode` is not ours to derive on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum FsMode {
    #[default]
    Rw,
    Ro,
    Spectator,
}

impl From<FsMode> for Mode {
    fn from(m: FsMode) -> Mode {
        match m {
            FsMode::Rw => Mode::Rw,
            FsMode::Ro => Mode::Ro,
            FsMode::Spectator => Mode::Spectator,
        }
    }
}

/// An integer in `MIN..=MAX`, `DEFAULT` when absent (with `#[serde(default)]`).
/// `NEG`: a negative value is "must not be negative" (the durations and
/// counts) rather than "must be between" (ids, ports, journals).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Num<const MIN: u64, const MAX: u64, const DEFAULT: u64, const NEG: bool>(u64);

/// Milliseconds (or a count): negative values are "must not be negative".
type Ms<const MIN: u64, const MAX: u64, const DEFAULT: u64 = 0> = Num<MIN, MAX, DEFAULT, true>;
/// An id, a port, a count of journals: out of range is "must be between".
type Int<const MIN: u64, const MAX: u64, const DEFAULT: u64 = 0> = Num<MIN, MAX, DEFAULT, false>;
type NodeIdNum = Int<1, { u32::MAX as u64 }>;

impl<const MIN: u64, const MAX: u64, const DEFAULT: u64, const NEG: bool> Default for Num<MIN, MAX, DEFAULT, NEG> {
    fn default() -> Self {
        Num(DEFAULT)
    }
}

impl<'de, const MIN: u64, const MAX: u64, const DEFAULT: u64, const NEG: bool> Deserialize<'de>
    for Num<MIN, MAX, DEFAULT, NEG>
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let x = i64::deserialize(d)?;
        match u64::try_from(x) {
            Err(_) if NEG => Err(D::Error::custom(format!("must not be negative (got {x})"))),
            Ok(v) if (MIN..=MAX).contains(&v) => Ok(Num(v)),
            _ => Err(D::Error::custom(format!("must be between {MIN} and {MAX} (got {x})"))),
        }
    }
}

/// `String` newtypes checked on the way in: `checked!(T(inner), |s| -> Result<inner, String>)`.
macro_rules! checked {
    ($(#[$m:meta])* $t:ident($inner:ty), $check:expr) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
        #[serde(try_from = "String")]
        struct $t($inner);
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                let check: fn(String) -> Result<$inner, String> = $check;
                check(s).map($t)
            }
        }
    };
}

checked!(
    /// An absolute path.
    AbsPath(PathBuf),
    |s| abs_path(&s)
);
checked!(
    /// `cluster_name`: the `<cluster>` of GFS2's lock table.
    ClusterName(String),
    |c| match c {
        c if c.is_empty() || c.contains(':') || c.contains('/') || c.len() > 32 => {
            Err(format!("must be 1 to 32 characters without ':' or '/' (got {c:?})"))
        }
        c => Ok(c),
    }
);
checked!(
    /// `sysfs.cluster`: the lock table's cluster part.
    LockCluster(String),
    |c| match c {
        c if c.is_empty() || c.contains(':') || c.contains('/') => {
            Err(format!("must not be empty or contain ':' or '/' ({c:?})"))
        }
        c => Ok(c),
    }
);
checked!(
    /// `corosync.group`: a CPG group name.
    CpgName(String),
    |g| match g {
        g if g.is_empty() || g.len() > 127 || g.contains('\0') => Err("must be 1 to 127 bytes without NUL".into()),
        g => Ok(g),
    }
);
checked!(
    /// `filesystem[].name`.
    FsNameText(String),
    |n| match wire::fs_name(&n) {
        Ok(_) => Ok(n),
        Err(_) => Err(format!("{n:?} is not a valid filesystem name (1 to 32 of A-Z a-z 0-9 _ - . :)")),
    }
);
checked!(
    /// `log_level`: a tracing env-filter.
    LogLevel(String),
    |l| match tracing_subscriber::EnvFilter::try_new(&l) {
        Ok(_) if !l.trim().is_empty() => Ok(l),
        Ok(_) => Err("must not be empty (e.g. \"info\", \"warn\", \"debug\")".into()),
        Err(e) => Err(format!("not a valid log filter {l:?}: {e} (e.g. \"info\", \"warn\")")),
    }
);
checked!(
    /// An IPv4 address (`udp.interface`).
    Ipv4Text(Ipv4Addr),
    |s| s.parse().map_err(|_| format!("must be an IPv4 address (got {s:?})"))
);
checked!(
    /// `udp.group`: an IPv4 multicast address.
    McastGroup(Ipv4Addr),
    |s| match s.parse::<Ipv4Addr>() {
        Err(_) => Err(format!("must be an IPv4 address (got {s:?})")),
        Ok(g) if !g.is_multicast() => Err(format!("{g} is not a multicast address (224.0.0.0/4)")),
        Ok(g) => Ok(g),
    }
);
checked!(
    /// An IP address (`dlm.addresses`).
    IpText(IpAddr),
    |s| s.parse().map_err(|_| format!("not an IP address: {s:?}"))
);
checked!(
    /// A node id as a table key (`[udp.peers]`, `dlm.addresses`).
    NodeKey(u32),
    |id| match id.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("the key must be a node id between 1 and {} (got {id:?})", u32::MAX)),
    }
);
checked!(
    /// A key of `[filesystem.exec.hooks]`: an operation name.
    HookName(String),
    |op| {
        if EXEC_OPS.contains(&op.as_str()) || op == EXEC_MOUNTED || op == EXEC_REMOUNT {
            Ok(op)
        } else {
            Err(format!("unknown operation (known: {}, {EXEC_REMOUNT}, {EXEC_MOUNTED})", EXEC_OPS.join(", ")))
        }
    }
);
impl TryFrom<String> for UeventSource {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "netlink" => Ok(UeventSource::Netlink),
            "none" => Ok(UeventSource::None),
            p if p.starts_with('/') => Ok(UeventSource::Fifo(PathBuf::from(p))),
            p => Err(format!("must be \"netlink\", \"none\" or an absolute FIFO path (got {p:?})")),
        }
    }
}

/// `nodes`: 1 to MAX_NODES distinct node ids, sorted.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NodeList(Vec<u32>);

impl<'de> Deserialize<'de> for NodeList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<i64>::deserialize(d)?;
        node_list(&v).map(NodeList).map_err(D::Error::custom)
    }
}

/// A TOML table as `T`: serde's derived struct impl alone would also take
/// an array (the fields by position).
struct Table<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Table<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData)).map(Table)
    }
}

fn default_path(p: &str) -> AbsPath {
    AbsPath(PathBuf::from(p))
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<NodeIdNum>,
    #[serde(default)]
    transport: Transport,
    nodes: Option<NodeList>,
    #[serde(default = "yes")]
    startup_fencing: bool,
    #[serde(default)]
    startup_fence_delay_ms: Ms<0, 3_600_000, 3000>,
    udp: Option<Table<UdpFile>>,
    #[serde(default = "FileConfig::default_state_dir")]
    state_dir: AbsPath,
    cluster_name: Option<ClusterName>,
    #[serde(default)]
    recovery_retry_ms: Ms<10, 600_000, 1000>,
    #[serde(default)]
    log_entries: Ms<10, 1_000_000, 2000>,
    log_level: Option<LogLevel>,
    corosync: Option<Table<CorosyncFile>>,
    dlm: Option<Table<DlmClusterFile>>,
    fence: Table<FenceFile>,
    #[serde(default)]
    filesystem: Vec<Table<FsFile>>,
}

impl FileConfig {
    fn default_state_dir() -> AbsPath {
        default_path(DEFAULT_STATE_DIR)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CorosyncFile {
    #[serde(default = "CorosyncFile::default_group")]
    group: CpgName,
}

impl CorosyncFile {
    fn default_group() -> CpgName {
        CpgName("cohort".to_owned())
    }
}

/// Top-level `[dlm]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DlmClusterFile {
    addresses: Option<BTreeMap<NodeKey, IpText>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FenceFile {
    agent: AbsPath,
    #[serde(default)]
    timeout_ms: Ms<100, 3_600_000, 60_000>,
    #[serde(default)]
    retry_ms: Ms<10, 600_000, 1000>,
}

/// `[udp]`. The keys of one mode only are `Option` (given in the other
/// mode is an error), as is `fail_timeout_ms` (its default depends on
/// `heartbeat_ms`) and `mode` (its default depends on `peers`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UdpFile {
    mode: Option<UdpMode>,
    /// Required, but checked after `transport` (a `[udp]` table with
    /// transport "corosync" is refused for that).
    key_file: Option<AbsPath>,
    #[serde(default)]
    allow_insecure_key_file: bool,
    #[serde(default)]
    heartbeat_ms: Ms<5, 10_000, 50>,
    fail_timeout_ms: Option<Ms<10, 600_000>>,
    #[serde(default)]
    quorum: UdpQuorum,
    group: Option<McastGroup>,
    #[serde(default)]
    port: Int<1, 65535, { DEFAULT_UDP_PORT as u64 }>,
    interface: Option<Ipv4Text>,
    /// Multicast: `IP[:PORT]` (v4); unicast: `IP[:PORT]` with `port` as
    /// the default port: parsed in `udp_config`.
    bind: Option<String>,
    ttl: Option<Int<1, 255>>,
    loopback: Option<bool>,
    /// Addresses with `port` as the default port: parsed in `udp_config`.
    peers: Option<BTreeMap<NodeKey, String>>,
}

/// `[[filesystem]]`. `backend` picks the `BackendConfig` variant; its
/// tables (`sysfs`, `dlm`, `exec`, `memory`) sit beside it in today's
/// file format, so which tables a backend allows is checked in
/// `Config::validate`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FsFile {
    name: FsNameText,
    journals: Int<1, { MAX_JOURNALS as u64 }>,
    backend: BackendKind,
    mount_point: Option<AbsPath>,
    #[serde(default)]
    auto_mount: bool,
    #[serde(default)]
    mode: FsMode,
    sysfs: Option<Table<SysfsFile>>,
    dlm: Option<Table<DlmFile>>,
    exec: Option<Table<ExecFile>>,
    memory: Option<Table<MemoryFile>>,
}

/// `[filesystem.sysfs]` (backends `gfs2-sysfs` and `dlm`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SysfsFile {
    #[serde(default = "SysfsFile::default_root")]
    root: AbsPath,
    /// Default: the top-level `cluster_name`.
    cluster: Option<LockCluster>,
    #[serde(default)]
    uevents: UeventSource,
    #[serde(default)]
    poll_ms: Ms<10, 60_000, 1000>,
    #[serde(default)]
    mount_timeout_ms: Ms<10, 3_600_000, 60_000>,
}

impl SysfsFile {
    fn default_root() -> AbsPath {
        default_path("/sys/fs/gfs2")
    }

    /// No `[filesystem.sysfs]` table: every default.
    fn absent() -> SysfsFile {
        SysfsFile {
            root: SysfsFile::default_root(),
            cluster: None,
            uevents: UeventSource::default(),
            poll_ms: Default::default(),
            mount_timeout_ms: Default::default(),
        }
    }
}

/// `[filesystem.dlm]`. A `[filesystem.dlm]` table beside another backend
/// is ignored (as it always was): its paths are checked only with
/// backend "dlm", in `Config::validate`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DlmFile {
    device: Option<String>,
    options: Option<String>,
    configfs: Option<String>,
    dlm_sysfs: Option<String>,
    /// An absolute path, or "none".
    monitor: Option<String>,
    #[serde(default = "DlmFile::default_mount_cmd")]
    mount_cmd: PathBuf,
    #[serde(default = "DlmFile::default_umount_cmd")]
    umount_cmd: PathBuf,
}

impl DlmFile {
    fn default_mount_cmd() -> PathBuf {
        PathBuf::from("mount")
    }
    fn default_umount_cmd() -> PathBuf {
        PathBuf::from("umount")
    }
}

/// `[filesystem.exec]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecFile {
    hook: Option<AbsPath>,
    #[serde(default)]
    hooks: BTreeMap<HookName, AbsPath>,
    #[serde(default)]
    timeout_ms: Ms<10, 3_600_000, 60_000>,
    withdraw_file: Option<AbsPath>,
}

/// `[filesystem.memory]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MemoryFile {
    #[serde(default)]
    fail_mount: Ms<0, 1_000_000>,
    #[serde(default)]
    fail_recover: Ms<0, 1_000_000>,
}

// ---- errors ---------------------------------------------------------------

/// A configuration error: `key` is the dotted path, `why` the reason, `at`
/// the line and column (1-based) of the value, or of the table missing a
/// key, when the toml parser gave them. Shown as
/// `file: key: why (line L, column C)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub why: String,
    pub at: Option<(usize, usize)>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ", self.file)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}", self.why)?;
        if let Some((line, column)) = self.at {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

type R<T> = Result<T, (String, String)>;

fn err<T>(key: impl Into<String>, why: impl Into<String>) -> R<T> {
    Err((key.into(), why.into()))
}

/// A toml error (syntax, or a value its type refused) as a `ConfigError`
/// naming the key path (`filesystem[1].journals`) found from the error's
/// position in the text.
fn toml_error(text: &str, file: &str, e: &toml::de::Error) -> ConfigError {
    let why = e.message().trim().to_owned();
    let Some(span) = e.span() else {
        return ConfigError { file: file.to_owned(), key: String::new(), why, at: None };
    };
    let Ok(doc) = toml::de::DeTable::parse(text) else {
        // Not TOML: "line N (`the line`)" as the key.
        return ConfigError { file: file.to_owned(), key: toml_where(text, &span), why, at: None };
    };
    let whole = span == doc.span();
    let mut best = None;
    if !whole {
        key_path(doc.get_ref(), "", &span, &mut best);
    }
    let path = best.map(|(_, p)| p).unwrap_or_default();
    let at = (!whole).then(|| line_column(text, span.start));
    if let Some(field) = why.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`')) {
        let key = if path.is_empty() { field.to_owned() } else { format!("{path}.{field}") };
        return ConfigError { file: file.to_owned(), why: missing_why(&key), key, at };
    }
    ConfigError { file: file.to_owned(), key: path, why, at }
}

/// The innermost key or value of `t` whose span holds `span`, as a key path.
fn key_path(t: &toml::de::DeTable<'_>, path: &str, span: &Range<usize>, best: &mut Option<(usize, String)>) {
    for (k, v) in t {
        let p = if path.is_empty() { k.get_ref().to_string() } else { format!("{path}.{}", k.get_ref()) };
        value_path(k.span(), None, &p, span, best);
        value_path(v.span(), Some(v.get_ref()), &p, span, best);
    }
}

fn value_path(
    at: Range<usize>,
    v: Option<&toml::de::DeValue<'_>>,
    path: &str,
    span: &Range<usize>,
    best: &mut Option<(usize, String)>,
) {
    if at.start <= span.start && span.end <= at.end && best.as_ref().is_none_or(|(len, _)| at.len() <= *len) {
        *best = Some((at.len(), path.to_owned()));
    }
    match v {
        Some(toml::de::DeValue::Table(t)) => key_path(t, path, span, best),
        Some(toml::de::DeValue::Array(a)) => {
            for (i, x) in a.iter().enumerate() {
                value_path(x.span(), Some(x.get_ref()), &format!("{path}[{i}]"), span, best);
            }
        }
        _ => {}
    }
}

fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// Position of a TOML syntax error as "line N" plus the line's text.
fn toml_where(text: &str, span: &Range<usize>) -> String {
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    format!("line {line_no} (`{line}`)")
}

/// What a missing required key is (`filesystem[2].journals` -> its hint).
fn missing_why(key: &str) -> String {
    let mut general = String::new();
    let mut in_index = false;
    for c in key.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            _ if in_index => continue,
            _ => {}
        }
        general.push(c);
    }
    let hint = match general.as_str() {
        "fence" => "a [fence] table with `agent` is required (fencing cannot be skipped)".to_owned(),
        "fence.agent" => "the fence agent command is required".to_owned(),
        "filesystem[].journals" => "the number of journals of the filesystem".to_owned(),
        "filesystem[].backend" => one_of(BackendKind::KEYWORDS.iter().map(|(k, _)| *k)),
        _ => return "missing".to_owned(),
    };
    format!("missing: {hint}")
}

// ---- checks of more than one value, or of files ---------------------------

fn abs_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let p = PathBuf::from(s);
    if !p.is_absolute() {
        return Err(format!("must be an absolute path (got {s:?})"));
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

pub fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Rw => "rw",
        Mode::Ro => "ro",
        Mode::Spectator => "spectator",
    }
}

/// A list of node ids: each 1..=u32::MAX, distinct, 1 to MAX_NODES of them. Sorted.
fn node_list(v: &[i64]) -> Result<Vec<u32>, String> {
    if v.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if v.len() > MAX_NODES {
        return Err(format!("at most {MAX_NODES} nodes (got {})", v.len()));
    }
    let mut out: Vec<u32> = Vec::with_capacity(v.len());
    for &n in v {
        let Some(id) = u32::try_from(n).ok().filter(|id| *id > 0) else {
            return Err(format!("node ids must be between 1 and {} (got {n})", u32::MAX));
        };
        if out.contains(&id) {
            return Err(format!("node {n} is listed twice"));
        }
        out.push(id);
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

/// Validate `[udp]` for node `me`; returns it and the cluster's node list.
fn udp_config(u: UdpFile, me: u32, nodes: Option<&[u32]>) -> R<(UdpConfig, Vec<u32>)> {
    let Some(AbsPath(key_file)) = u.key_file else {
        return err("udp.key_file", "missing: the cluster key file (32 random bytes or 64 hex digits)");
    };
    match std::fs::read(&key_file) {
        Err(e) => return err("udp.key_file", format!("{} cannot be read: {e}", key_file.display())),
        Ok(bytes) => {
            if let Err(why) = cohort_udp::parse_key(&bytes) {
                return err("udp.key_file", format!("{}: {why}", key_file.display()));
            }
        }
    }
    if !u.allow_insecure_key_file {
        key_file_private(&key_file)?;
    }
    let heartbeat_ms = u.heartbeat_ms.0;
    let fail_timeout_ms = u.fail_timeout_ms.map_or((6 * heartbeat_ms).max(300), |f| f.0);
    if fail_timeout_ms < 2 * heartbeat_ms {
        return err(
            "udp.fail_timeout_ms",
            format!("must be at least twice udp.heartbeat_ms = {heartbeat_ms} (got {fail_timeout_ms})"),
        );
    }
    let port = u16::try_from(u.port.0).expect("udp.port is 1..=65535");
    let mode = match u.mode {
        Some(m) => m,
        None if u.peers.is_some() => UdpMode::Unicast,
        None => UdpMode::Multicast,
    };
    let mode_name = |m: UdpMode| UdpMode::KEYWORDS.iter().find(|(_, x)| *x == m).map_or("", |(k, _)| *k);
    let only_for = |present: bool, key: &str, m: UdpMode| -> R<()> {
        if present {
            return err(
                format!("udp.{key}"),
                format!("only used with udp.mode = \"{}\" (the mode is \"{}\")", mode_name(m), mode_name(mode)),
            );
        }
        Ok(())
    };
    let (net, all) = match mode {
        UdpMode::Multicast => {
            only_for(u.peers.is_some(), "peers", UdpMode::Unicast)?;
            let group = u.group.map_or(DEFAULT_UDP_GROUP, |g| g.0);
            let interface = u.interface.map_or(Ipv4Addr::UNSPECIFIED, |i| i.0);
            let bind = match u.bind.as_deref() {
                None => None,
                Some(b) => match b.parse::<SocketAddrV4>() {
                    Ok(a) => Some(a),
                    Err(_) => match b.parse::<Ipv4Addr>() {
                        Ok(ip) => Some(SocketAddrV4::new(ip, 0)),
                        Err(_) => return err("udp.bind", format!("must be an IPv4 address (got {b:?})")),
                    },
                },
            };
            let Some(all) = nodes else {
                return err(
                    "nodes",
                    "missing: transport = \"udp\" in multicast mode needs the node ids of the cluster (nodes = [1, 2, \
                     3])",
                );
            };
            let net = UdpNet::Multicast {
                group: SocketAddrV4::new(group, port),
                interface,
                bind,
                ttl: u.ttl.map_or(1, |t| t.0 as u32),
                loopback: u.loopback.unwrap_or(true),
            };
            (net, all.to_vec())
        }
        UdpMode::Unicast => {
            only_for(u.group.is_some(), "group", UdpMode::Multicast)?;
            only_for(u.interface.is_some(), "interface", UdpMode::Multicast)?;
            only_for(u.ttl.is_some(), "ttl", UdpMode::Multicast)?;
            only_for(u.loopback.is_some(), "loopback", UdpMode::Multicast)?;
            let raw_peers = u.peers.unwrap_or_default();
            if raw_peers.is_empty() {
                return err(
                    "udp.peers",
                    "missing: unicast mode needs the address of every node ([udp.peers] 1 = \"IP:PORT\")",
                );
            }
            let mut peers: BTreeMap<u32, SocketAddr> = BTreeMap::new();
            for (NodeKey(n), addr) in &raw_peers {
                let key = format!("udp.peers.{n}");
                let a = sock_addr(&key, addr, port)?;
                if let Some((other, _)) = peers.iter().find(|(_, x)| **x == a) {
                    return err(key, format!("address {a} is also node {other}'s"));
                }
                peers.insert(*n, a);
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
        }
    };
    if !all.contains(&me) {
        return err("node_id", format!("{me} is not one of the configured nodes {all:?}"));
    }
    if u.quorum == UdpQuorum::TwoNode && all.len() != 2 {
        return err("udp.quorum", format!("\"two-node\" needs exactly 2 configured nodes (got {})", all.len()));
    }
    let cfg = UdpConfig {
        net,
        key_file,
        allow_insecure_key_file: u.allow_insecure_key_file,
        heartbeat_ms,
        fail_timeout_ms,
        quorum: u.quorum,
    };
    Ok((cfg, all))
}

/// The lock_module side (`[filesystem.sysfs]`) of `gfs2-sysfs` and `dlm`.
fn parse_lm(k: &dyn Fn(&str) -> String, s: Option<SysfsFile>, cluster_name: Option<&str>) -> R<SysfsConfig> {
    let s = s.unwrap_or_else(SysfsFile::absent);
    let cluster = match (s.cluster, cluster_name) {
        (Some(c), _) => c.0,
        (None, Some(c)) => c.to_owned(),
        (None, None) => {
            return err(k("sysfs.cluster"), "missing: the lock table cluster name (or set the top-level cluster_name)")
        }
    };
    Ok(SysfsConfig {
        root: s.root.0,
        cluster,
        uevents: s.uevents,
        poll_ms: s.poll_ms.0,
        mount_timeout_ms: s.mount_timeout_ms.0,
    })
}

impl Config {
    /// Read and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: String::new(),
            why: format!("cannot read: {e}"),
            at: None,
        })?;
        Config::parse(&text, &file)
    }

    /// Parse and validate configuration text (`file` names it in errors).
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let raw: FileConfig = toml::from_str(text).map_err(|e| toml_error(text, file, &e))?;
        Config::validate(raw).map_err(|(key, why)| ConfigError { file: file.to_owned(), key, why, at: None })
    }

    /// What the types of [`FileConfig`] cannot say: keys that depend on
    /// other keys, names that must differ, files that must exist.
    fn validate(raw: FileConfig) -> R<Config> {
        let node_id = raw.node_id.map(|n| u32::try_from(n.0).expect("node_id is 1..=u32::MAX"));
        let transport = raw.transport;
        let mut nodes = raw.nodes.map(|n| n.0);
        if let (Some(me), Some(list)) = (node_id, nodes.as_ref()) {
            if !list.contains(&me) {
                return err("nodes", format!("does not contain this node's node_id {me} (nodes = {list:?})"));
            }
        }
        let udp = match (transport, raw.udp.map(|t| t.0)) {
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
        let dlm_addresses: Option<BTreeMap<u32, IpAddr>> = match raw.dlm.and_then(|d| d.0.addresses) {
            Some(a) => Some(a.into_iter().map(|(n, ip)| (n.0, ip.0)).collect()),
            None => match udp.as_ref().map(|u| &u.net) {
                Some(UdpNet::Unicast { peers, .. }) => Some(peers.iter().map(|(n, a)| (*n, a.ip())).collect()),
                _ => None,
            },
        };
        let group = raw.corosync.map_or_else(CorosyncFile::default_group, |c| c.0.group).0;
        let cluster_name = raw.cluster_name.map(|c| c.0);
        let Table(rf) = raw.fence;
        executable("fence.agent", &rf.agent.0)?;
        let fence = FenceConfig { agent: rf.agent.0, timeout_ms: rf.timeout_ms.0, retry_ms: rf.retry_ms.0 };
        if raw.filesystem.len() > MAX_GROUPS {
            return err("filesystem", format!("at most {MAX_GROUPS} filesystems (got {})", raw.filesystem.len()));
        }
        let mut filesystems: Vec<FsConfig> = Vec::new();
        for (i, Table(f)) in raw.filesystem.into_iter().enumerate() {
            let k = |s: &str| format!("filesystem[{i}].{s}");
            let name = f.name.0;
            if filesystems.iter().any(|x| x.name == name) {
                return err(k("name"), format!("{name:?} is configured twice"));
            }
            let mount_point = f.mount_point.map(|m| m.0);
            let kind = f.backend;
            let kind_name = BackendKind::KEYWORDS.iter().find(|(_, b)| *b == kind).map_or("", |(n, _)| *n);
            let only = |present: bool, table: &str| -> R<()> {
                if present {
                    return err(k(table), format!("options for backend {table:?} given, but backend is {kind_name:?}"));
                }
                Ok(())
            };
            let backend = match kind {
                BackendKind::Sysfs => {
                    only(f.exec.is_some(), "exec")?;
                    only(f.memory.is_some(), "memory")?;
                    only(f.dlm.is_some(), "dlm")?;
                    BackendConfig::Sysfs(parse_lm(&k, f.sysfs.map(|t| t.0), cluster_name.as_deref())?)
                }
                BackendKind::Dlm => {
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
                    let Some(Table(d)) = f.dlm else {
                        return err(k("dlm"), "missing: backend \"dlm\" needs a [filesystem.dlm] table with `device`");
                    };
                    let Some(device) = d.device else {
                        return err(k("dlm.device"), "missing: the shared block device (e.g. \"/dev/sdb\")");
                    };
                    let path = |key: &str, v: &str| abs_path(v).or_else(|why| err(k(key), why));
                    let path_or = |key: &str, v: Option<String>, def: &str| path(key, v.as_deref().unwrap_or(def));
                    let monitor = match d.monitor.as_deref() {
                        Some("none") => None,
                        m => Some(path("dlm.monitor", m.unwrap_or("/dev/dlm-monitor"))?),
                    };
                    let Some(mp) = mount_point.clone() else {
                        return err(k("mount_point"), "missing: backend \"dlm\" mounts the filesystem there");
                    };
                    let Some(addresses) = dlm_addresses.clone() else {
                        return err(
                            "dlm.addresses",
                            "missing: the kernel DLM's address of every node ([dlm] addresses = { 1 = \"10.0.0.1\", \
                             ... }); with transport \"udp\" in unicast mode the peers' addresses are used",
                        );
                    };
                    if let Some(n) = nodes.as_ref().and_then(|ns| ns.iter().find(|n| !addresses.contains_key(n))) {
                        return err("dlm.addresses", format!("node {n} of `nodes` has no address"));
                    }
                    BackendConfig::Dlm(Box::new(DlmConfig {
                        lm: parse_lm(&k, f.sysfs.map(|t| t.0), cluster_name.as_deref())?,
                        device: path("dlm.device", &device)?,
                        mount_point: mp,
                        options: d.options.filter(|o| !o.trim().is_empty()),
                        configfs: path_or("dlm.configfs", d.configfs, "/sys/kernel/config/dlm")?,
                        dlm_sysfs: path_or("dlm.dlm_sysfs", d.dlm_sysfs, "/sys/kernel/dlm")?,
                        monitor,
                        addresses,
                        mount_cmd: d.mount_cmd,
                        umount_cmd: d.umount_cmd,
                    }))
                }
                BackendKind::Exec => {
                    only(f.sysfs.is_some(), "sysfs")?;
                    only(f.memory.is_some(), "memory")?;
                    let Some(Table(e)) = f.exec else {
                        return err(
                            k("exec"),
                            "missing: backend \"exec\" needs an [filesystem.exec] table with `hook`",
                        );
                    };
                    let hook = e.hook.map(|h| h.0);
                    if let Some(h) = &hook {
                        executable(&k("exec.hook"), h)?;
                    }
                    let mut hooks = BTreeMap::new();
                    for (HookName(op), AbsPath(p)) in e.hooks {
                        executable(&k(&format!("exec.hooks.{op}")), &p)?;
                        hooks.insert(op, p);
                    }
                    if hook.is_none() {
                        if let Some(op) = EXEC_OPS.iter().find(|op| !hooks.contains_key(**op)) {
                            return err(
                                k("exec.hook"),
                                format!("missing: no default hook and no hooks.{op} (every operation needs one)"),
                            );
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
                    BackendConfig::Exec(ExecConfig {
                        hook,
                        hooks,
                        timeout_ms: e.timeout_ms.0,
                        withdraw_file: e.withdraw_file.map(|w| w.0),
                    })
                }
                BackendKind::Memory => {
                    only(f.sysfs.is_some(), "sysfs")?;
                    only(f.exec.is_some(), "exec")?;
                    let m = f.memory.map(|t| t.0).unwrap_or_default();
                    BackendConfig::Memory(MemoryConfig {
                        fail_mount: m.fail_mount.0 as u32,
                        fail_recover: m.fail_recover.0 as u32,
                    })
                }
            };
            filesystems.push(FsConfig {
                name,
                journals: f.journals.0 as u16,
                backend,
                mount_point,
                auto_mount: f.auto_mount,
                mode: f.mode.into(),
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
            startup_fencing: raw.startup_fencing,
            startup_fence_delay_ms: raw.startup_fence_delay_ms.0,
            udp,
            state_dir: raw.state_dir.0,
            group,
            cluster_name,
            fence,
            recovery_retry_ms: raw.recovery_retry_ms.0,
            log_entries: raw.log_entries.0 as usize,
            log_level: raw.log_level.map(|l| l.0),
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
            (
                "node_id = \"one\"\n",
                "test.toml: node_id: invalid type: string \"one\", expected i64 (line 1, column 11)",
            ),
            ("node_id = \n", "test.toml: line 1 (`node_id =`): "),
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

    /// A value its type refuses: the error names the key path, the bad
    /// value and what is allowed, with the value's line and column.
    #[test]
    fn typed_values_name_the_key_the_value_and_what_is_allowed() {
        let d = tempfile::tempdir().unwrap();
        let key = key_file(d.path());
        let a = agent();
        let fs = |extra: &str| format!("[[filesystem]]\nname = \"a\"\njournals = 2\nbackend = \"memory\"\n{extra}");
        let udp = |extra: &str| {
            format!("transport = \"udp\"\nnode_id = 1\nnodes = [1, 2]\n[udp]\nkey_file = \"{key}\"\n{extra}")
        };
        let cases: Vec<(String, &str)> = vec![
            // keyword enums
            ("transport = \"Udp\"\n".into(), "test.toml: transport: must be \"corosync\" or \"udp\" (got \"Udp\") (line 1, column 13)"),
            ("transport = { udp = {} }\n".into(), "test.toml: transport: invalid type: map, expected a string (line 1, column 13)"),
            ("transport = 1\n".into(), "test.toml: transport: invalid type: integer `1`, expected a string (line 1, column 13)"),
            (udp("mode = \"broadcast\"\n"), "test.toml: udp.mode: must be \"multicast\" or \"unicast\" (got \"broadcast\") (line 6, column 8)"),
            (udp("quorum = \"two_node\"\n"), "test.toml: udp.quorum: must be \"majority\" or \"two-node\" (got \"two_node\") (line 6, column 10)"),
            (
                "[[filesystem]]\nname = \"a\"\njournals = 2\nbackend = \"gfs2\"\n".into(),
                "test.toml: filesystem[0].backend: must be \"dlm\", \"gfs2-sysfs\", \"exec\" or \"memory\" (got \"gfs2\") (line 4, column 11)",
            ),
            (fs("mode = \"RW\"\n"), "test.toml: filesystem[0].mode: must be \"rw\", \"ro\" or \"spectator\" (got \"RW\") (line 5, column 8)"),
            (
                "cluster_name = \"c\"\n[[filesystem]]\nname = \"a\"\njournals = 2\nbackend = \"gfs2-sysfs\"\n[filesystem.sysfs]\nuevents = \"udev\"\n".into(),
                "test.toml: filesystem[0].sysfs.uevents: must be \"netlink\", \"none\" or an absolute FIFO path (got \"udev\") (line 7, column 11)",
            ),
            // integers out of range, by their type
            (udp("port = 65536\n"), "test.toml: udp.port: must be between 1 and 65535 (got 65536) (line 6, column 8)"),
            (udp("ttl = 0\n"), "test.toml: udp.ttl: must be between 1 and 255 (got 0) (line 6, column 7)"),
            ("node_id = 4294967296\n".into(), "test.toml: node_id: must be between 1 and 4294967295 (got 4294967296) (line 1, column 11)"),
            (fs("[filesystem.memory]\nfail_mount = -3\n"), "test.toml: filesystem[0].memory.fail_mount: must not be negative (got -3) (line 6, column 14)"),
            (
                "[[filesystem]]\nname = \"a\"\njournals = 257\nbackend = \"memory\"\n".into(),
                "test.toml: filesystem[0].journals: must be between 1 and 256 (got 257) (line 3, column 12)",
            ),
            ("nodes = [1, 2.5]\n".into(), "test.toml: nodes[1]: invalid type: floating point `2.5`, expected i64 (line 1, column 13)"),
            // missing required keys: the key path, and where its table starts
            ("[[filesystem]]\njournals = 2\nbackend = \"memory\"\n".into(), "test.toml: filesystem[0].name: missing (line 1, column 1)"),
            (
                fs("[[filesystem]]\nname = \"b\"\njournals = 2\n"),
                "test.toml: filesystem[1].backend: missing: \"dlm\", \"gfs2-sysfs\", \"exec\" or \"memory\" (line 5, column 1)",
            ),
            // a table where a table belongs (not an array, by position)
            ("[corosync]\ngroup = \"g\"\n".into(), "ok"),
            ("corosync = [\"g\"]\n".into(), "test.toml: corosync: invalid type: sequence, expected a table (line 1, column 12)"),
            (fs("memory = [1, 2]\n"), "test.toml: filesystem[0].memory: invalid type: sequence, expected a table (line 5, column 10)"),
            // unknown keys, at any depth
            (fs("[filesystem.memory]\nfail = 1\n"), "test.toml: filesystem[0].memory.fail: unknown field `fail`, expected `fail_mount` or `fail_recover` (line 6, column 1)"),
        ];
        for (extra, want) in cases {
            let text = format!("{extra}[fence]\nagent = \"{a}\"\n");
            match parse(&text) {
                Ok(_) => assert_eq!(want, "ok", "for {text:?}: parsed, want {want:?}"),
                Err(e) => assert_eq!(e.to_string(), want, "for {text:?}"),
            }
        }
        // Missing without a table around it: no position.
        let e = parse("[fence]\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.at), ("fence.agent", Some((1, 1))));
        let e = parse("node_id = 1\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "test.toml: fence: missing: a [fence] table with `agent` is required (fencing cannot be skipped)"
        );
    }

    /// Every default, with nothing but the required keys given.
    #[test]
    fn defaults_applied() {
        let d = tempfile::tempdir().unwrap();
        let key = key_file(d.path());
        let c = parse(&format!("[fence]\nagent = \"{}\"\n", agent())).unwrap();
        assert_eq!(c.node_id, None);
        assert_eq!(c.transport, Transport::Corosync);
        assert_eq!(c.nodes, None);
        assert!(c.startup_fencing);
        assert_eq!(c.startup_fence_delay_ms, 3000);
        assert_eq!(c.udp, None);
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(c.group, "cohort");
        assert_eq!(c.cluster_name, None);
        assert_eq!(c.fence, FenceConfig { agent: agent().into(), timeout_ms: 60_000, retry_ms: 1000 });
        assert_eq!((c.recovery_retry_ms, c.log_entries, c.log_level), (1000, 2000, None));
        assert!(c.filesystems.is_empty());
        // [udp]: multicast without peers, unicast with them.
        let c = parse(&format!(
            "transport = \"udp\"\nnode_id = 1\nnodes = [1, 2]\n[udp]\nkey_file = \"{key}\"\n[fence]\nagent = \"{}\"\n",
            agent()
        ))
        .unwrap();
        let u = c.udp.unwrap();
        assert_eq!(
            (u.heartbeat_ms, u.fail_timeout_ms, u.quorum, u.allow_insecure_key_file),
            (50, 300, UdpQuorum::Majority, false)
        );
        assert_eq!(
            u.net,
            UdpNet::Multicast {
                group: SocketAddrV4::new(DEFAULT_UDP_GROUP, DEFAULT_UDP_PORT),
                interface: Ipv4Addr::UNSPECIFIED,
                bind: None,
                ttl: 1,
                loopback: true
            }
        );
        // Per filesystem and per backend.
        let c = parse(&format!(
            "cluster_name = \"c\"\n[dlm]\naddresses = {{ 1 = \"10.0.0.1\" }}\n[fence]\nagent = \"{a}\"\n\
             [[filesystem]]\nname = \"m\"\njournals = 1\nbackend = \"memory\"\n\
             [[filesystem]]\nname = \"s\"\njournals = 1\nbackend = \"gfs2-sysfs\"\n\
             [[filesystem]]\nname = \"d\"\njournals = 1\nbackend = \"dlm\"\nmount_point = \"/mnt/d\"\n[filesystem.dlm]\ndevice = \"/dev/sdb\"\n\
             [[filesystem]]\nname = \"e\"\njournals = 1\nbackend = \"exec\"\nmount_point = \"/mnt/e\"\n[filesystem.exec]\nhook = \"{a}\"\n",
            a = agent()
        ))
        .unwrap();
        let m = &c.filesystems[0];
        assert_eq!((m.auto_mount, m.mode, &m.mount_point), (false, Mode::Rw, &None));
        assert_eq!(m.backend, BackendConfig::Memory(MemoryConfig { fail_mount: 0, fail_recover: 0 }));
        let lm = SysfsConfig {
            root: "/sys/fs/gfs2".into(),
            cluster: "c".into(),
            uevents: UeventSource::Netlink,
            poll_ms: 1000,
            mount_timeout_ms: 60_000,
        };
        assert_eq!(c.filesystems[1].backend, BackendConfig::Sysfs(lm.clone()));
        let BackendConfig::Dlm(dl) = &c.filesystems[2].backend else { panic!("not dlm") };
        assert_eq!(dl.lm, lm);
        assert_eq!((dl.options.as_deref(), dl.monitor.as_deref()), (None, Some(Path::new("/dev/dlm-monitor"))));
        assert_eq!(
            (dl.configfs.as_path(), dl.dlm_sysfs.as_path()),
            (Path::new("/sys/kernel/config/dlm"), Path::new("/sys/kernel/dlm"))
        );
        assert_eq!((dl.mount_cmd.as_path(), dl.umount_cmd.as_path()), (Path::new("mount"), Path::new("umount")));
        let BackendConfig::Exec(e) = &c.filesystems[3].backend else { panic!("not exec") };
        assert_eq!((e.timeout_ms, e.hooks.len(), &e.withdraw_file), (60_000, 0, &None));
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
