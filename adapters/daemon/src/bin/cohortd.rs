//! `cohortd`: the cohort host daemon.
//!
//! ```text
//! cohortd [--config FILE]     run (default /etc/cohort/cohort.toml)
//! cohortd --check [--config FILE]   validate the configuration and exit
//! cohortd demo                three daemons in one process, simulated network and time
//! cohortd demo --transport udp   the same over real UDP sockets on loopback, real time
//! ```
//!
//! Logs go to stderr (`COHORT_LOG` or `RUST_LOG`, tracing env-filter syntax,
//! default `info`). A fatal error ends with one line `cohortd: <reason>` and
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

fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("COHORT_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| default.to_owned());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
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
                init_logging("off");
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
    init_logging("info");
    let cfg = Config::load(&config).unwrap_or_else(|e| fatal(&Fatal::Config(e.to_string())));
    if check {
        println!("{}: ok ({} filesystem(s))", config.display(), cfg.filesystems.len());
        exit(OK);
    }
    match cohortd::daemon::run(cfg) {
        Ok(()) => exit(OK),
        Err(f) => {
            tracing::error!("{f}");
            fatal(&f)
        }
    }
}
