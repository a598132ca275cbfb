//! The configured cluster nodes, which the core needs for startup fencing
//! (`Input::Nodelist`): from `nodes = [...]` in cohort.toml, from
//! `[udp.peers]` (UDP), or from corosync's nodelist read with
//! `corosync-cmapctl -b nodelist.node`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The tool that reads corosync's configuration map.
pub const CMAPCTL: &str = "corosync-cmapctl";

/// Node ids in `corosync-cmapctl -b nodelist.node` output: lines
/// `nodelist.node.N.nodeid (u32) = X`. Other keys are ignored. Sorted,
/// distinct.
pub fn parse_cmapctl(out: &str) -> Vec<u32> {
    let mut ids: Vec<u32> = Vec::new();
    for line in out.lines() {
        let Some((key, value)) = line.split_once('=') else { continue };
        let mut key = key.split_whitespace();
        let (Some(name), Some(_ty)) = (key.next(), key.next()) else { continue };
        let Some(rest) = name.strip_prefix("nodelist.node.") else { continue };
        let Some((idx, field)) = rest.split_once('.') else { continue };
        if field != "nodeid" || idx.is_empty() || !idx.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(id) = value.trim().parse::<u32>() {
            if id != 0 && !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    ids
}

/// `corosync-cmapctl` in `PATH`, else in /usr/sbin or /sbin.
pub fn find_cmapctl() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(CMAPCTL))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Read corosync's nodelist with `tool -b nodelist.node` (killed after
/// `timeout`). `Err` says why there is none.
pub fn corosync_nodelist(tool: &Path, timeout: Duration) -> Result<Vec<u32>, String> {
    let mut child = Command::new(tool)
        .args(["-b", "nodelist.node"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} did not answer within {} ms", tool.display(), timeout.as_millis()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("{}: wait failed: {e}", tool.display())),
        }
    }
    let out = child.wait_with_output().map_err(|e| format!("{}: {e}", tool.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{} -b nodelist.node failed ({}): {}", tool.display(), out.status, err.trim()));
    }
    let ids = parse_cmapctl(&stdout);
    if ids.is_empty() {
        return Err("corosync's configuration has no nodelist (no nodelist.node.N.nodeid keys)".into());
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cmapctl_output() {
        let out = "nodelist.local_node_pos (u32) = 0\n\
                   nodelist.node.0.name (str) = node1\n\
                   nodelist.node.0.nodeid (u32) = 3\n\
                   nodelist.node.0.ring0_addr (str) = 192.0.2.1\n\
                   nodelist.node.1.nodeid (u32) = 1\n\
                   nodelist.node.2.nodeid (u32) = 20\n\
                   nodelist.node.3.nodeid (u32) = 1\n\
                   nodelist.node.4.nodeid (u32) = bogus\n\
                   nodelist.node.x.nodeid (u32) = 7\n\
                   totem.nodeid (u32) = 9\n";
        assert_eq!(parse_cmapctl(out), vec![1, 3, 20]);
        assert!(parse_cmapctl("").is_empty());
    }

    #[test]
    fn runs_a_cmapctl_like_tool() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let tool = d.path().join("cmapctl");
        std::fs::write(
            &tool,
            "#!/bin/sh\n[ \"$1 $2\" = \"-b nodelist.node\" ] || exit 9\n\
             echo 'nodelist.node.0.nodeid (u32) = 2'\necho 'nodelist.node.1.nodeid (u32) = 1'\n",
        )
        .unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(corosync_nodelist(&tool, Duration::from_secs(10)).unwrap(), vec![1, 2]);
        std::fs::write(
            &tool,
            "#!/bin/sh\necho 'Failed to initialize the cmap API. Error CS_ERR_LIBRARY' >&2\nexit 1\n",
        )
        .unwrap();
        let e = corosync_nodelist(&tool, Duration::from_secs(10)).unwrap_err();
        assert!(e.contains("failed") && e.contains("CS_ERR_LIBRARY"), "{e}");
        std::fs::write(&tool, "#!/bin/sh\nexit 0\n").unwrap();
        let e = corosync_nodelist(&tool, Duration::from_secs(10)).unwrap_err();
        assert!(e.contains("no nodelist"), "{e}");
        std::fs::write(&tool, "#!/bin/sh\nsleep 20\n").unwrap();
        let e = corosync_nodelist(&tool, Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("did not answer"), "{e}");
    }
}
