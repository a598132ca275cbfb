//! `cohortd` start-up failures (no corosync needed): every one is a single
//! line naming the cause, with the documented exit status.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const COHORTD: &str = env!("CARGO_BIN_EXE_cohortd");

fn agent(dir: &Path) -> PathBuf {
    let p = dir.join("fence.sh");
    fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn config(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("cohort.toml");
    let text = format!(
        "state_dir = \"{}\"\n{extra}\n[fence]\nagent = \"{}\"\n",
        dir.join("state").display(),
        agent(dir).display()
    );
    fs::write(&p, text).unwrap();
    p
}

fn run(cfg: &Path) -> Output {
    // A fresh network namespace (root only) guarantees that no corosync is reachable.
    let mut c = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("unshare");
        c.args(["-n", COHORTD]);
        c
    } else {
        Command::new(COHORTD)
    };
    c.arg("--config").arg(cfg).env("COHORT_LOG", "off").output().unwrap()
}

fn last_line(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("").to_owned()
}

#[test]
fn bad_config_names_the_key() {
    let d = tempfile::tempdir().unwrap();
    let o = run(&config(d.path(), "[[filesystem]]\nname = \"fs1\"\njournals = 300\nbackend = \"memory\"\n"));
    assert_eq!(o.status.code(), Some(1));
    let l = last_line(&o);
    assert!(l.starts_with("cohortd: configuration error: "), "{l}");
    assert!(l.ends_with("filesystem[0].journals: must be between 1 and 256 (got 300)"), "{l}");
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1);
    let o = Command::new(COHORTD).args(["--config", "/nonexistent/cohort.toml"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(last_line(&o).contains("/nonexistent/cohort.toml: cannot read"), "{}", last_line(&o));
}

#[test]
fn check_mode_validates_only() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "");
    let o = Command::new(COHORTD).arg("--check").arg("--config").arg(&cfg).output().unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(!d.path().join("state").exists(), "--check must not touch the state directory");
}

#[test]
fn udp_transport_is_not_yet_available() {
    let d = tempfile::tempdir().unwrap();
    let o = run(&config(d.path(), "transport = \"udp\""));
    assert_eq!(o.status.code(), Some(1));
    assert!(last_line(&o).contains("transport = \"udp\" is not yet available"), "{}", last_line(&o));
}

#[test]
fn refuses_to_join_with_a_leftover_mount() {
    let d = tempfile::tempdir().unwrap();
    // "/" is always in /proc/mounts: stands for a filesystem still mounted from a previous run.
    let o = run(&config(
        d.path(),
        "[[filesystem]]\nname = \"fs1\"\njournals = 2\nbackend = \"memory\"\nmount_point = \"/\"\n",
    ));
    assert_eq!(o.status.code(), Some(1));
    let l = last_line(&o);
    assert!(l.starts_with("cohortd: refusing to join: filesystem fs1 is still mounted at /"), "{l}");
    // nothing consumed: no incarnation was written
    assert!(!d.path().join("state/incarnation").exists());

    // a gfs2-sysfs filesystem whose sysfs directory still exists
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("sys");
    fs::create_dir_all(root.join("c1:g1/lock_module")).unwrap();
    let o = run(&config(
        d.path(),
        &format!(
            "[[filesystem]]\nname = \"g1\"\njournals = 2\nbackend = \"gfs2-sysfs\"\n[filesystem.sysfs]\nroot = \"{}\"\ncluster = \"c1\"\nuevents = \"none\"\n",
            root.display()
        ),
    ));
    assert_eq!(o.status.code(), Some(1));
    assert!(last_line(&o).contains("refusing to join: filesystem g1 is still mounted"), "{}", last_line(&o));
}

#[test]
fn corrupt_incarnation_is_an_error_and_left_alone() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "");
    fs::create_dir_all(d.path().join("state")).unwrap();
    fs::write(d.path().join("state/incarnation"), "12x\n").unwrap();
    let o = run(&cfg);
    assert_eq!(o.status.code(), Some(1));
    assert!(last_line(&o).contains("state/incarnation is corrupt"), "{}", last_line(&o));
    assert_eq!(fs::read_to_string(d.path().join("state/incarnation")).unwrap(), "12x\n");
}

#[test]
fn no_corosync_is_a_clear_error() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot isolate from a running corosync; covered by the real cluster test");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "");
    let o = run(&cfg);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let l = last_line(&o);
    assert!(l.starts_with("cohortd: cannot connect: corosync is not running"), "{l}");
    // the incarnation was consumed before joining: strictly greater at every start
    assert_eq!(fs::read_to_string(d.path().join("state/incarnation")).unwrap(), "1\n");
    let _ = run(&cfg);
    assert_eq!(fs::read_to_string(d.path().join("state/incarnation")).unwrap(), "2\n");
    // state_dir lock and socket permissions are covered by the real cluster test
}

#[test]
fn packaged_example_config_is_valid() {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../packaging/cohort.toml.example");
    let text = fs::read_to_string(p).unwrap();
    // the example names commands that do not exist here: point them at /bin/sh
    let text = text.replace("/usr/sbin/cohort-fence", "/bin/sh").replace("/usr/libexec/cohort/scratch-hook", "/bin/sh");
    let cfg = cohortd::config::Config::parse(&text, "cohort.toml.example").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.filesystems.len(), 2);
    assert_eq!(cfg.filesystems[0].backend.kind(), "gfs2-sysfs");
    let unit = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../packaging/cohortd.service")).unwrap();
    assert!(unit.contains("RestartForceExitStatus=75"), "the unit must restart a reset daemon");
}
