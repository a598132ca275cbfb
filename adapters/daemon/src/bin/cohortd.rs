//! `cohortd`: the cohort host daemon. The command line is
//! [`cohortd::cli::Cohortd`] (`cohortd --help`, man page cohortd(8)).
//!
//! Logs go to stderr (`COHORT_LOG` or `RUST_LOG`, tracing env-filter syntax;
//! else the configuration's `log_level`, re-read on SIGHUP; default `info`). A fatal error ends with one line `cohortd: <reason>` and
//! a non-zero exit status (see `cohortd::exit`).

use std::process::exit;

use cohortd::config::Config;
use cohortd::exit::{Fatal, FATAL, OK};

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
    use clap::Parser;
    use cohortd::cli::{Cohortd, CohortdCommand, DemoTransport};
    let args = Cohortd::try_parse().unwrap_or_else(|e| {
        // --help and --version exit 0; a usage error is a start refused
        // (exit 1, so systemd does not restart it).
        if e.use_stderr() {
            let _ = e.print();
            exit(FATAL)
        }
        e.exit()
    });
    if let Some(CohortdCommand::Demo { transport }) = args.command {
        let _ = init_logging("off");
        exit(match transport {
            DemoTransport::Sim => cohortd::demo::main(true),
            DemoTransport::Udp => cohortd::demo::udp::main(true),
        });
    }
    let (config, check) = (args.config, args.check);
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
