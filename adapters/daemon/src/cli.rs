//! The command lines of `cohortd` and `cohortctl` (clap derive): one
//! definition for the parsers, `--help`, the man pages and the shell
//! completions (`cohort-docs`, see [`write_docs`]).

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

const COHORTD_AFTER: &str = "\
Examples:
  cohortd --check --config /etc/cohort/cohort.toml   validate a configuration, change nothing
  cohortd --config /etc/cohort/cohort.toml           run (systemd: packaging/cohortd.service)
  cohortd demo                                       three daemons, simulated network and time
  cohortd demo --transport udp                       the same over real UDP sockets on loopback

Logs go to stderr: COHORT_LOG or RUST_LOG (tracing env-filter syntax), else
the configuration's log_level (re-read on SIGHUP), default info.

Exit status: 0 clean stop; 1 configuration error, usage error or refused
start (e.g. a filesystem still mounted from a previous run: needs an
operator); 2 corosync lost (udp: the transport failed); 3 incompatible
protocol version; 75 reset after losing a stale-merge verdict (restart it:
the new start gets a new incarnation). A fatal error ends with one line
`cohortd: <reason>` on stderr.";

/// cohortd: the cohort host daemon (cluster filesystem membership and
/// mount-group coordination for GFS2).
#[derive(Parser, Debug, PartialEq, Eq)]
#[command(name = "cohortd", version, after_help = COHORTD_AFTER)]
pub struct Cohortd {
    /// The configuration file.
    #[arg(short, long, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Validate the configuration (and the startup fencing it implies),
    /// print a summary and exit; nothing is started.
    #[arg(long)]
    pub check: bool,
    #[command(subcommand)]
    pub command: Option<CohortdCommand>,
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum CohortdCommand {
    /// Three daemons in one process: a node fails, is fenced, its journal
    /// replayed; then a partition merges back. Prints what happens.
    #[command(after_help = "Examples:\n  cohortd demo\n  cohortd demo --transport udp")]
    Demo {
        /// `sim`: simulated network and time (instant); `udp`: real UDP
        /// sockets on loopback, real time.
        #[arg(long, value_enum, default_value_t = DemoTransport::Sim)]
        transport: DemoTransport,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DemoTransport {
    Sim,
    Udp,
}

const COHORTCTL_AFTER: &str = "\
The socket is --socket, else $COHORT_SOCKET, else <state_dir>/cohortd.sock of
--config (default /etc/cohort/cohort.toml), else /var/lib/cohort/cohortd.sock.

Exit status: 0 ok; 1 the daemon refused the request or a --wait failed or
timed out; 2 usage error; 3 cannot reach the daemon.

Examples:
  cohortctl status
  cohortctl mount fs1 --wait 60
  cohortctl remount fs1 ro
  cohortctl log --follow
  cohortctl metrics > /var/lib/node_exporter/textfile/cohort.prom";

/// cohortctl: ask cohortd, over its control socket, what it knows and
/// waits for, and give it mount requests.
#[derive(Parser, Debug, PartialEq, Eq)]
#[command(name = "cohortctl", version, after_help = COHORTCTL_AFTER)]
pub struct Cohortctl {
    /// cohortd's control socket (else $COHORT_SOCKET, else found through
    /// the configuration: see `cohortctl --help`).
    #[arg(short, long, value_name = "PATH", global = true, conflicts_with = "config")]
    pub socket: Option<PathBuf>,
    /// Find the socket through this configuration (its state_dir).
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Args, Debug, PartialEq, Eq)]
pub struct Wait {
    /// Wait up to SECS seconds until it is done (exit 1 if it fails or
    /// times out, naming what it waits for).
    #[arg(long, value_name = "SECS")]
    pub wait: Option<u64>,
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum CtlCommand {
    /// Nodes, generation, quorum, mount groups, journals and what
    /// everything waits for.
    #[command(after_help = "Examples:\n  cohortctl status\n  cohortctl status --json | jq .groups")]
    Status {
        /// The whole status as JSON (schema in the daemon README).
        #[arg(long)]
        json: bool,
    },
    /// The daemon group's members (incarnation, started, stale).
    Members {
        #[arg(long)]
        json: bool,
    },
    /// Ask to mount FS on this node (cohortd runs the kernel mount once the
    /// cluster agreed and gave it a journal).
    #[command(after_help = "Examples:\n  cohortctl mount fs1 --wait 60\n  cohortctl mount fs1 --ro")]
    Mount {
        /// The filesystem's name in the configuration.
        fs: String,
        /// Read-only: holds a journal (to remount rw later), never replays.
        #[arg(long, conflicts_with = "spectator")]
        ro: bool,
        /// Spectator: read-only, no journal.
        #[arg(long)]
        spectator: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Leave FS's mount group (after the kernel unmounted it: refused while
    /// the kernel still has it).
    #[command(after_help = "Example:\n  umount /mnt/fs1 && cohortctl unmount fs1 --wait 30")]
    Unmount {
        /// The filesystem's name in the configuration.
        fs: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Change this node's mode of FS: to ro the kernel remounts first, then
    /// the cluster is told; to rw the cluster agrees first.
    #[command(after_help = "Examples:\n  cohortctl remount fs1 ro\n  cohortctl remount fs1 rw --wait 30")]
    Remount {
        /// The filesystem's name in the configuration.
        fs: String,
        /// The new mode.
        #[arg(value_enum)]
        mode: RemountMode,
        #[command(flatten)]
        wait: Wait,
    },
    /// Counters and gauges in Prometheus' text format.
    Metrics,
    /// The daemon's event log (newest last).
    #[command(after_help = "Examples:\n  cohortctl log --last 50\n  cohortctl log --follow")]
    Log {
        /// Keep printing new entries.
        #[arg(short, long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Only entries after this sequence number.
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        since: u64,
        /// Only the newest N entries (0: all kept).
        #[arg(long, value_name = "N", default_value_t = 0)]
        last: usize,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemountMode {
    Ro,
    Rw,
}

impl RemountMode {
    pub fn name(self) -> &'static str {
        match self {
            RemountMode::Ro => "ro",
            RemountMode::Rw => "rw",
        }
    }
}

/// Man pages (`cohortd.8`, `cohortctl.8`, `cohortctl-<command>.8`) into
/// `dir/man8`, and bash, zsh and fish completions into `dir/completions`.
/// Returns the files written.
pub fn write_docs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    use clap_complete::Shell;
    let mut written = Vec::new();
    let man = dir.join("man8");
    let comp = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&comp)?;
    for cmd in [Cohortd::command(), Cohortctl::command()] {
        let name = cmd.get_name().to_owned();
        let mut pages = vec![(name.clone(), cmd.clone())];
        for sub in cmd.get_subcommands() {
            pages.push((format!("{name}-{}", sub.get_name()), sub.clone().name(format!("{name}-{}", sub.get_name()))));
        }
        for (page, c) in pages {
            let mut buf = Vec::new();
            clap_mangen::Man::new(c).section("8").render(&mut buf)?;
            let p = man.join(format!("{page}.8"));
            std::fs::write(&p, buf)?;
            written.push(p);
        }
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut c = cmd.clone();
            let p = clap_complete::generate_to(shell, &mut c, name.clone(), &comp)?;
            written.push(p);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_consistent() {
        Cohortd::command().debug_assert();
        Cohortctl::command().debug_assert();
    }

    #[test]
    fn parses_what_the_old_parsers_took() {
        let d = Cohortd::try_parse_from(["cohortd", "--check", "--config", "/x.toml"]).unwrap();
        assert_eq!((d.check, d.config, d.command), (true, PathBuf::from("/x.toml"), None));
        let d = Cohortd::try_parse_from(["cohortd", "demo", "--transport", "udp"]).unwrap();
        assert_eq!(d.command, Some(CohortdCommand::Demo { transport: DemoTransport::Udp }));
        assert!(Cohortd::try_parse_from(["cohortd", "demo", "--transport", "tcp"]).is_err());

        let c =
            Cohortctl::try_parse_from(["cohortctl", "--socket", "/s", "mount", "fs1", "--ro", "--wait", "5"]).unwrap();
        assert_eq!(c.socket, Some(PathBuf::from("/s")));
        assert_eq!(
            c.command,
            CtlCommand::Mount { fs: "fs1".into(), ro: true, spectator: false, wait: Wait { wait: Some(5) } }
        );
        // Global options after the command too.
        let c = Cohortctl::try_parse_from(["cohortctl", "status", "--json", "-s", "/s"]).unwrap();
        assert_eq!((c.socket, c.command), (Some(PathBuf::from("/s")), CtlCommand::Status { json: true }));
        let c = Cohortctl::try_parse_from(["cohortctl", "remount", "fs1", "ro"]).unwrap();
        assert_eq!(
            c.command,
            CtlCommand::Remount { fs: "fs1".into(), mode: RemountMode::Ro, wait: Wait { wait: None } }
        );
        let c = Cohortctl::try_parse_from(["cohortctl", "log", "-f", "--last", "3"]).unwrap();
        assert_eq!(c.command, CtlCommand::Log { follow: true, json: false, since: 0, last: 3 });
        for bad in [
            &["cohortctl", "mount", "fs1", "--ro", "--spectator"][..],
            &["cohortctl", "remount", "fs1", "spectator"],
            &["cohortctl", "--socket", "/s", "--config", "/c", "status"],
            &["cohortctl", "mount"],
            &["cohortctl", "mount", "fs1", "--wait", "soon"],
            &["cohortctl"],
        ] {
            assert!(Cohortctl::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn man_pages_and_completions_are_written() {
        let d = tempfile::tempdir().unwrap();
        let files = write_docs(d.path()).unwrap();
        let names: Vec<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        for want in ["cohortd.8", "cohortd-demo.8", "cohortctl.8", "cohortctl-remount.8", "cohortctl-metrics.8"] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        for want in ["cohortctl.bash", "_cohortctl", "cohortctl.fish", "cohortd.bash"] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        let page = std::fs::read_to_string(d.path().join("man8/cohortctl.8")).unwrap();
        assert!(page.contains("COHORT_SOCKET"), "{page}");
        let bash = std::fs::read_to_string(d.path().join("completions/cohortctl.bash")).unwrap();
        assert!(bash.contains("remount"), "{bash}");
    }
}
