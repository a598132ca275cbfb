//! Exit codes of `cohortd` (stable: the systemd unit and the tests rely on them).

/// Clean stop (SIGTERM with nothing mounted, or after unmounting everything).
pub const OK: i32 = 0;
/// Fatal error: bad configuration, refused start, unexpected failure.
pub const FATAL: i32 = 1;
/// The connection to corosync was lost (or corosync is not running).
pub const TRANSPORT_LOST: i32 = 2;
/// No common protocol version with the running cluster.
pub const INCOMPATIBLE: i32 = 3;
/// This node lost a stale-merge verdict and reset: restart it (a new start
/// gets a new incarnation). `EX_TEMPFAIL`.
pub const RESET: i32 = 75;

/// Why the daemon stops; `code()` is its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fatal {
    Config(String),
    Startup(String),
    TransportLost(String),
    Incompatible(String),
    Reset(String),
    Other(String),
}

impl Fatal {
    pub fn code(&self) -> i32 {
        match self {
            Fatal::Config(_) | Fatal::Startup(_) | Fatal::Other(_) => FATAL,
            Fatal::TransportLost(_) => TRANSPORT_LOST,
            Fatal::Incompatible(_) => INCOMPATIBLE,
            Fatal::Reset(_) => RESET,
        }
    }
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fatal::Config(m) => write!(f, "configuration error: {m}"),
            Fatal::Startup(m) | Fatal::Other(m) => f.write_str(m),
            Fatal::TransportLost(m) => f.write_str(m),
            Fatal::Incompatible(m) => f.write_str(m),
            Fatal::Reset(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Fatal {}
