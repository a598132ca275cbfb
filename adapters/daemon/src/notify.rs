//! systemd's notification protocol (sd_notify(3)) without libsystemd: one
//! datagram per message to `$NOTIFY_SOCKET` (a path, or `@name` for the
//! abstract namespace). cohortd sends `READY=1` once its daemon group has
//! synced for the first time (the node can serve mounts), `STATUS=` with
//! what it waits for whenever that changes (the same words as
//! `cohortctl status`), `WATCHDOG=1` from its event loop at half of
//! `WatchdogSec` (a wedged loop is restarted by systemd, and the other
//! nodes fence this one), and `STOPPING=1` when it starts to stop.
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd, or `Type=simple`)
//! every call does nothing. The variables are read once and removed from
//! the environment, so hooks and fence agents do not inherit them.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    /// Ping interval: half of `WATCHDOG_USEC`.
    watchdog: Option<Duration>,
    last_ping: Option<Instant>,
    ready: bool,
    status: String,
    /// Why the last send failed (logged once).
    failed: Option<String>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` (which,
    /// when set, must be this process). Call before any thread starts: it
    /// removes the variables from the environment.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        for v in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(v);
        }
        let for_us = pid.is_none_or(|p| p.trim() == std::process::id().to_string());
        let watchdog = usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(|u| Duration::from_micros(u / 2));
        let target = socket.and_then(|s| {
            let s = s.to_string_lossy().into_owned();
            let addr = match s.strip_prefix('@') {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    SocketAddr::from_abstract_name(name.as_bytes())
                }
                None => SocketAddr::from_pathname(&s),
            };
            match (UnixDatagram::unbound(), addr) {
                (Ok(sock), Ok(addr)) => Some((sock, addr)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!("NOTIFY_SOCKET={s}: cannot notify systemd: {e}");
                    None
                }
            }
        });
        Notifier { target, watchdog, last_ping: None, ready: false, status: String::new(), failed: None }
    }

    /// A notifier that sends nothing.
    pub fn none() -> Notifier {
        Notifier { target: None, watchdog: None, last_ping: None, ready: false, status: String::new(), failed: None }
    }

    pub fn active(&self) -> bool {
        self.target.is_some()
    }

    fn send(&mut self, msg: &str) {
        let Some((sock, addr)) = &self.target else { return };
        match sock.send_to_addr(msg.as_bytes(), addr) {
            Ok(_) => self.failed = None,
            Err(e) => {
                let e = e.to_string();
                if self.failed.as_deref() != Some(e.as_str()) {
                    tracing::warn!("cannot notify systemd ({msg:?}): {e}");
                }
                self.failed = Some(e);
            }
        }
    }

    /// `STATUS=` (only when it changed), and `READY=1` the first time
    /// `ready` is true.
    pub fn update(&mut self, ready: bool, status: &str) {
        let status = status.replace('\n', "; ");
        let mut msg = String::new();
        if ready && !self.ready {
            self.ready = true;
            msg.push_str("READY=1\n");
        }
        if status != self.status {
            msg.push_str(&format!("STATUS={status}\n"));
            self.status = status;
        }
        if !msg.is_empty() {
            self.send(&msg);
        }
    }

    /// `WATCHDOG=1` if half the watchdog interval passed since the last one.
    pub fn watchdog(&mut self, now: Instant) {
        let Some(every) = self.watchdog else { return };
        if self.last_ping.is_none_or(|t| now.duration_since(t) >= every) {
            self.last_ping = Some(now);
            self.send("WATCHDOG=1");
        }
    }

    /// How long the event loop may sleep before the next ping is due.
    pub fn next_ping(&self, now: Instant) -> Option<Duration> {
        let every = self.watchdog?;
        Some(self.last_ping.map_or(Duration::ZERO, |t| (t + every).saturating_duration_since(now)))
    }

    pub fn stopping(&mut self, why: &str) {
        let msg = format!("STOPPING=1\nSTATUS=stopping: {}", why.replace('\n', "; "));
        self.send(&msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv_all(s: &UnixDatagram) -> Vec<String> {
        s.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[test]
    fn sends_ready_once_status_on_change_and_paced_watchdog() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut n = Notifier {
            target: Some((UnixDatagram::unbound().unwrap(), SocketAddr::from_pathname(&path).unwrap())),
            watchdog: Some(Duration::from_millis(500)),
            last_ping: None,
            ready: false,
            status: String::new(),
            failed: None,
        };
        n.update(false, "joining the daemon group");
        n.update(false, "joining the daemon group");
        n.update(true, "daemon group synced\nfs1 running");
        n.update(true, "daemon group synced\nfs1 running");
        let t = Instant::now();
        n.watchdog(t);
        n.watchdog(t + Duration::from_millis(100));
        assert_eq!(n.next_ping(t + Duration::from_millis(100)), Some(Duration::from_millis(400)));
        n.watchdog(t + Duration::from_millis(600));
        n.stopping("signal");
        assert_eq!(
            recv_all(&server),
            [
                "STATUS=joining the daemon group\n",
                "READY=1\nSTATUS=daemon group synced; fs1 running\n",
                "WATCHDOG=1",
                "WATCHDOG=1",
                "STOPPING=1\nSTATUS=stopping: signal",
            ]
        );
        let mut quiet = Notifier::none();
        quiet.update(true, "x");
        quiet.watchdog(t);
        assert!(!quiet.active());
        assert_eq!(quiet.next_ping(t), None);
    }
}
