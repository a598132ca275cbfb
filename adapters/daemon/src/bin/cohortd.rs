//! `cohortd`: the cohort host daemon.
//!
//! ```text
//! cohortd [--config FILE]     run (default /etc/cohort/cohort.toml)
//! cohortd --check [--config FILE]   validate the configuration and exit
//! cohortd demo                three daemons in one process, simulated network and time
//! cohortd demo --transport udp   the same over real UDP sockets on loopback, real time
//! ```
//!
//! Logs go to stderr (`COHORT_LOG` or `RUST_LOG`, tracing env-filter syntax;
//! else the configuration's `log_level`, re-read on SIGHUP; default `info`). A fatal error ends with one line `cohortd: <reason>` and
//! a non-zero exit status (see `cohortd::exit`).

use std::path::PathBuf;
use std::process::exit;

use cohortd::config::{Config, DEFAULT_PATH};
use cohortd::exit::{Fatal, FATAL, OK};

fn usage(msg: &str) -> ! {
    eprintln!("cohortd: {msg}");
    eprintln!("usage: cohortd [--config FILE] [--check] | cohortd demo [--transport sim|udp]");
    exit(FATAL)
}

/// The log filter given by the environment (`COHORT_LOG`, then `RUST_LOG`),
/// which takes precedence over the configuration's `log_level`.
fn env_filter() -> Option<String> {
    std::env::var("COHORT_LOG").ok().or_else(|| std::env::var("RUST_LOG").ok())
}

type LogHandle = tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

fn init_logging(default: &str) -> Option<LogHandle> {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{reload, EnvFilter};
    let filter = env_filter().unwrap_or_else(|| default.to_owned());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new(default));
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false).with_target(false);
    tracing_subscriber::registry().with(filter).with(fmt).try_init().ok().map(|()| handle)
}

/// Apply the configuration's `log_level` unless the environment sets the
/// filter. Returns what was done, for the log.
fn set_log_level(handle: &Option<LogHandle>, level: Option<&str>) -> Result<String, String> {
    if let Some(env) = env_filter() {
        return Ok(format!("log level from the environment ({env:?}); log_level in the file is not used"));
    }
    let level = level.unwrap_or("info");
    let f = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| format!("log_level {level:?}: {e}"))?;
    if let Some(h) = handle {
        h.reload(f).map_err(|e| format!("cannot change the log level: {e}"))?;
    }
    Ok(format!("log level {level:?}"))
}

fn fatal(f: &Fatal) -> ! {
    // One line, whatever the message contains.
    let msg = f.to_string().replace('\n', " ");
    eprintln!("cohortd: {msg}");
    exit(f.code())
}

fn main() {
    let mut config = PathBuf::from(DEFAULT_PATH);
    let mut check = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "demo" => {
                let _ = init_logging("off");
                let transport = match (args.next().as_deref(), args.next()) {
                    (None, _) => "sim".to_owned(),
                    (Some("--transport"), Some(t)) => t,
                    (Some(a), _) => usage(&format!("demo: unknown argument {a:?} (demo [--transport sim|udp])")),
                };
                if let Some(a) = args.next() {
                    usage(&format!("demo: unexpected argument {a:?}"));
                }
                exit(match transport.as_str() {
                    "sim" => cohortd::demo::main(true),
                    "udp" => cohortd::demo::udp::main(true),
                    t => usage(&format!("demo: --transport must be \"sim\" or \"udp\" (got {t:?})")),
                });
            }
            "--config" | "-c" => {
                config = args.next().map(PathBuf::from).unwrap_or_else(|| usage("--config needs a FILE"))
            }
            "--check" => check = true,
            "--version" | "-V" => {
                println!("cohortd {}", env!("CARGO_PKG_VERSION"));
                exit(OK)
            }
            "-h" | "--help" => {
                println!("usage: cohortd [--config FILE] [--check] | cohortd demo [--transport sim|udp]");
                exit(OK)
            }
            _ => usage(&format!("unknown argument {a:?}")),
        }
    }
    let handle = init_logging("info");
    let cfg = Config::load(&config).unwrap_or_else(|e| fatal(&Fatal::Config(e.to_string())));
    // A transport this build lacks (corosync without the `corosync` feature)
    // fails the check and the start, before anything is touched.
    if let Err(e) = cfg.check_build() {
        fatal(&Fatal::Config(format!("{}: {e}", config.display())));
    }
    if check {
        println!("{}: ok ({} filesystem(s))", config.display(), cfg.filesystems.len());
        println!("{}", cfg.startup_fencing_summary());
        exit(OK);
    }
    if let Err(e) = set_log_level(&handle, cfg.log_level.as_deref()) {
        tracing::warn!("{e}");
    }
    let opts = cohortd::daemon::RunOptions {
        config_path: config.clone(),
        set_log_level: Box::new(move |l| set_log_level(&handle, l)),
    };
    match cohortd::daemon::run(cfg, opts) {
        Ok(()) => exit(OK),
        Err(f) => {
            tracing::error!("{f}");
            fatal(&f)
        }
    }
}
