//! Small OS helpers: commands with a timeout (fence agent, exec hooks), the
//! self-pipe that wakes the main loop from worker threads, /proc/mounts.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cohort_core::node::KernelEvent;
use cohort_core::Member;

use crate::fence::FenceWhy;

/// Run `cmd` in its own process group; kill the whole group with SIGKILL on
/// timeout. `Ok(())` on exit status 0, else why not.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<(), String> {
    match run_status_with_timeout(cmd, timeout)? {
        0 => Ok(()),
        c => Err(format!("exited with status {c}")),
    }
}

/// [`run_with_timeout`], returning the exit status; `Err` if it did not
/// exit normally (could not start, killed by a signal, timed out).
pub fn run_status_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<i32, String> {
    run_inner(cmd, timeout, None)
}

/// Most of a command's stderr kept by [`run_capturing_stderr`].
const MAX_STDERR: usize = 16 * 1024;

/// [`run_with_timeout`], with the command's stderr captured (up to 16 KiB)
/// and returned instead of going to ours, so the caller can log it.
pub fn run_capturing_stderr(cmd: &mut Command, timeout: Duration) -> (Result<(), String>, String) {
    let (tx, rx) = mpsc::channel();
    let r = match run_inner(cmd, timeout, Some(tx)) {
        Ok(0) => Ok(()),
        Ok(c) => Err(format!("exited with status {c}")),
        Err(e) => Err(e),
    };
    // The reader ends when every holder of the pipe closed it; a child of
    // the command that kept it open must not hold us up.
    let out = rx.recv_timeout(Duration::from_millis(200)).unwrap_or_default();
    (r, out)
}

fn run_inner(cmd: &mut Command, timeout: Duration, stderr: Option<mpsc::Sender<String>>) -> Result<i32, String> {
    cmd.stdin(Stdio::null()).process_group(0);
    if stderr.is_some() {
        cmd.stderr(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    if let (Some(tx), Some(mut err)) = (stderr, child.stderr.take()) {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let room = MAX_STDERR.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            let _ = tx.send(String::from_utf8_lossy(&kept).into_owned());
        });
    }
    let pid = child.id() as i32;
    let deadline = Instant::now() + timeout;
    let mut nap = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                return match (st.code(), st.signal()) {
                    (Some(c), _) => Ok(c),
                    (None, Some(s)) => Err(format!("killed by signal {s}")),
                    (None, None) => Err("ended abnormally".into()),
                };
            }
            Ok(None) => {}
            Err(e) => return Err(format!("wait failed: {e}")),
        }
        if Instant::now() >= deadline {
            // SAFETY: plain kill(2) on the process group we created.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {} ms (killed)", timeout.as_millis()));
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}

/// What worker threads report to the main loop.
#[derive(Debug)]
pub enum Wake {
    /// A kernel completion (exec backend).
    Kernel(KernelEvent),
    /// A backend worker finished something: poll the backends.
    Backend,
    /// An exec hook without a kernel event finished (for the log).
    Hook { fs: String, op: &'static str, result: Result<(), String> },
    /// A kernel remount (exec backend) finished.
    Remounted { fs: String, mode: cohort_core::wire::Mode, result: Result<(), String> },
    /// The fence agent finished; `stderr`: what it wrote there.
    Fenced { target: Member, why: FenceWhy, result: Result<(), String>, stderr: String, took_ms: u64 },
}

/// Sender side: a channel plus a byte on a non-blocking pipe to wake poll(2).
#[derive(Clone)]
pub struct Waker {
    tx: mpsc::Sender<Wake>,
    fd: RawFd,
}

impl Waker {
    /// The pipe's write end (for a signal handler: write(2) is async-signal-safe).
    pub fn raw_fd(&self) -> RawFd {
        self.fd
    }

    pub fn wake(&self, w: Wake) {
        if self.tx.send(w).is_ok() {
            let b = 1u8;
            // SAFETY: write(2) of one byte from a valid buffer; EAGAIN (pipe
            // full) is fine, the loop drains the channel anyway.
            unsafe { libc::write(self.fd, (&b as *const u8).cast(), 1) };
        }
    }
}

/// Receiver side, owned by the main loop.
pub struct WakeReceiver {
    rx: mpsc::Receiver<Wake>,
    fd: RawFd,
    wfd: RawFd,
}

impl WakeReceiver {
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Drain the pipe and return every pending message.
    pub fn drain(&self) -> Vec<Wake> {
        let mut buf = [0u8; 256];
        // SAFETY: read(2) into a local buffer on our non-blocking pipe.
        while unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        self.rx.try_iter().collect()
    }
}

impl Drop for WakeReceiver {
    fn drop(&mut self) {
        // SAFETY: closing fds we own.
        unsafe {
            libc::close(self.fd);
            libc::close(self.wfd);
        }
    }
}

pub fn wake_pair() -> io::Result<(Waker, WakeReceiver)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (tx, rx) = mpsc::channel();
    Ok((Waker { tx, fd: fds[1] }, WakeReceiver { rx, fd: fds[0], wfd: fds[1] }))
}

/// Unescape a /proc/mounts field (`\040` for space etc.).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Is something mounted at `path` according to this /proc/mounts text?
/// Returns the line's filesystem type.
pub fn mounted_at(mounts: &str, path: &std::path::Path) -> Option<String> {
    let want = path.to_string_lossy();
    let want = want.trim_end_matches('/');
    let want = if want.is_empty() { "/" } else { want };
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_dev, mp, ty) = (f.next()?, f.next()?, f.next()?);
        (unescape(mp) == want).then(|| ty.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_mounts_lookup() {
        let m = "/dev/sda1 / ext4 rw 0 0\n/dev/mapper/c-fs1 /mnt/my\\040fs gfs2 rw 0 0\n";
        assert_eq!(mounted_at(m, std::path::Path::new("/mnt/my fs")), Some("gfs2".into()));
        assert_eq!(mounted_at(m, std::path::Path::new("/mnt/my fs/")), Some("gfs2".into()));
        assert_eq!(mounted_at(m, std::path::Path::new("/mnt")), None);
    }

    #[test]
    fn timeout_kills_the_group() {
        let t = Instant::now();
        let r = run_with_timeout(Command::new("sh").args(["-c", "sleep 30 & sleep 30"]), Duration::from_millis(200));
        assert!(r.unwrap_err().starts_with("timed out after 200 ms"));
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(
            run_with_timeout(Command::new("sh").args(["-c", "exit 3"]), Duration::from_secs(5)).unwrap_err(),
            "exited with status 3"
        );
        assert!(run_with_timeout(&mut Command::new("true"), Duration::from_secs(5)).is_ok());
        assert!(run_with_timeout(&mut Command::new("/nonexistent"), Duration::from_secs(5))
            .unwrap_err()
            .starts_with("cannot start"));
    }

    #[test]
    fn waker_wakes() {
        let (w, r) = wake_pair().unwrap();
        w.wake(Wake::Hook { fs: "a".into(), op: "block", result: Ok(()) });
        let mut p = libc::pollfd { fd: r.fd(), events: libc::POLLIN, revents: 0 };
        assert_eq!(unsafe { libc::poll(&mut p, 1, 1000) }, 1);
        assert_eq!(r.drain().len(), 1);
        assert_eq!(unsafe { libc::poll(&mut p, 1, 0) }, 0);
    }
}
