//! The control socket: `<state_dir>/cohortd.sock`, mode 0600, and only
//! peers with uid 0 (checked with `SO_PEERCRED`) are served. Non-blocking,
//! driven by the main loop's poll(2): one JSON request per line, one JSON
//! response per line ([`crate::api`]). `log` with `follow` keeps the
//! connection and streams new entries.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::api::Request;
use crate::eventlog::EventLog;

const MAX_LINE: usize = 64 * 1024;
const MAX_CLIENTS: usize = 64;
const MAX_OUT: usize = 8 * 1024 * 1024;
/// Bytes read from one client per [`ControlServer::service`] call: a client
/// that writes without end cannot keep the event loop in its read loop.
const READ_BUDGET: usize = 64 * 1024;
/// A connection that has sent nothing and been sent nothing for this long
/// (and does not follow the log) is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

struct Client {
    id: u64,
    stream: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// Following the log: last seq sent.
    follow: Option<u64>,
    /// Discarding the rest of an oversized line (up to its newline).
    skipping: bool,
    /// Last byte received or sent.
    active: Instant,
    eof: bool,
    dead: bool,
}

pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    clients: Vec<Client>,
    next_id: u64,
}

/// uid of the peer of a unix stream.
pub fn peer_uid(s: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred { pid: 0, uid: u32::MAX, gid: u32::MAX };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt(SO_PEERCRED) fills a ucred of the given size.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

impl ControlServer {
    /// Bind the socket (replacing a stale one: the caller holds the state
    /// directory lock, so no other daemon uses it).
    pub fn bind(path: &Path) -> io::Result<ControlServer> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Create it with 0600 from the start (umask), then make sure.
        // SAFETY: umask(2) is always safe; restored right after bind.
        let old = unsafe { libc::umask(0o177) };
        let l = UnixListener::bind(path);
        unsafe { libc::umask(old) };
        let listener = l?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(ControlServer { listener, path: path.to_path_buf(), clients: Vec::new(), next_id: 1 })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// fds to poll: (fd, events) with the listener first, then each client.
    pub fn poll_set(&self) -> Vec<(RawFd, i16)> {
        let mut v = vec![(self.listener.as_raw_fd(), libc::POLLIN)];
        for c in &self.clients {
            let mut ev = 0;
            if !c.eof {
                ev |= libc::POLLIN;
            }
            if !c.outbuf.is_empty() {
                ev |= libc::POLLOUT;
            }
            v.push((c.stream.as_raw_fd(), ev));
        }
        v
    }

    /// Accept, read and write as far as possible; return parsed requests
    /// (client id, request or a parse error).
    pub fn service(&mut self) -> Vec<(u64, Result<Request, String>)> {
        self.accept();
        let mut reqs = Vec::new();
        for c in &mut self.clients {
            if c.dead {
                continue;
            }
            let mut budget = READ_BUDGET;
            while !c.eof && budget > 0 {
                let mut buf = [0u8; 4096];
                match c.stream.read(&mut buf) {
                    Ok(0) => c.eof = true,
                    Ok(n) => {
                        budget = budget.saturating_sub(n);
                        c.active = Instant::now();
                        c.inbuf.extend_from_slice(&buf[..n]);
                        take_lines(c, &mut reqs);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        c.dead = true;
                        break;
                    }
                }
            }
            take_lines(c, &mut reqs);
        }
        reqs
    }

    /// Make room for a new connection when every slot is taken: close the
    /// connection idle longest (one that is not following the log first).
    /// The operator is never locked out by forgotten connections.
    fn evict_one(&mut self) {
        let victim =
            self.clients.iter().enumerate().min_by_key(|(_, c)| (c.follow.is_some(), c.active)).map(|(i, _)| i);
        if let Some(i) = victim {
            let mut c = self.clients.remove(i);
            tracing::warn!(
                "control socket: {MAX_CLIENTS} connections open; closing the one idle longest ({} s)",
                c.active.elapsed().as_secs()
            );
            let msg = serde_json::json!({"ok": false, "error": "closed: too many control connections and this one was idle longest"});
            let _ = c.stream.write(format!("{msg}\n").as_bytes());
        }
    }

    /// Close connections idle for longer than [`IDLE_TIMEOUT`] (log
    /// followers excepted: they wait for entries by design).
    pub fn expire_idle(&mut self) {
        for c in &mut self.clients {
            if c.follow.is_none() && c.active.elapsed() > IDLE_TIMEOUT {
                tracing::info!("control socket: closing a connection idle for {} s", IDLE_TIMEOUT.as_secs());
                c.dead = true;
            }
        }
        self.clients.retain(|c| !c.dead);
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    // Never block on a client, not even for a refusal.
                    if s.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let uid = peer_uid(&s);
                    if uid.as_ref().ok() != Some(&0) {
                        let why = match uid {
                            Ok(u) => format!("permission denied: only root may use the control socket (peer uid {u})"),
                            Err(e) => format!("permission denied: cannot check peer credentials: {e}"),
                        };
                        tracing::warn!("control socket: {why}");
                        let mut s = s;
                        let _ = writeln!(s, "{}", serde_json::json!({"ok": false, "error": why}));
                        continue;
                    }
                    if self.clients.len() >= MAX_CLIENTS {
                        self.evict_one();
                    }
                    let id = self.next_id;
                    self.next_id += 1;
                    self.clients.push(Client {
                        id,
                        stream: s,
                        inbuf: Vec::new(),
                        outbuf: Vec::new(),
                        follow: None,
                        skipping: false,
                        active: Instant::now(),
                        eof: false,
                        dead: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("control socket accept: {e}");
                    break;
                }
            }
        }
    }

    /// Queue one response line for a client.
    pub fn reply(&mut self, id: u64, v: &serde_json::Value) {
        if let Some(c) = self.clients.iter_mut().find(|c| c.id == id) {
            if c.outbuf.len() > MAX_OUT {
                c.dead = true;
                return;
            }
            c.outbuf.extend_from_slice(v.to_string().as_bytes());
            c.outbuf.push(b'\n');
        }
    }

    pub fn follow(&mut self, id: u64, after: u64) {
        if let Some(c) = self.clients.iter_mut().find(|c| c.id == id) {
            c.follow = Some(after);
        }
    }

    /// Stream new log entries to followers.
    pub fn push_log(&mut self, log: &EventLog) {
        let last = log.last_seq();
        let ids: Vec<(u64, u64)> =
            self.clients.iter().filter_map(|c| c.follow.filter(|s| *s < last).map(|s| (c.id, s))).collect();
        for (id, after) in ids {
            let entries = log.since(after);
            self.reply(id, &serde_json::json!({"ok": true, "entries": entries}));
            self.follow(id, last);
        }
    }

    /// Write what can be written; drop finished and dead clients.
    pub fn flush(&mut self) {
        for c in &mut self.clients {
            while !c.outbuf.is_empty() && !c.dead {
                match c.stream.write(&c.outbuf) {
                    Ok(0) => c.dead = true,
                    Ok(n) => {
                        c.outbuf.drain(..n);
                        c.active = Instant::now();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => c.dead = true,
                }
            }
        }
        // Done: dead, or the peer finished sending and has all its answers
        // (a follower that hung up is gone once its read side saw EOF).
        self.clients.retain(|c| !(c.dead || (c.eof && (c.outbuf.is_empty() || c.follow.is_some()))));
    }
}

/// Split complete lines off a client's input into requests. A line longer
/// than [`MAX_LINE`] is answered with an error and skipped up to its
/// newline: no part of it is ever taken for a request.
fn take_lines(c: &mut Client, reqs: &mut Vec<(u64, Result<Request, String>)>) {
    loop {
        let nl = c.inbuf.iter().position(|b| *b == b'\n');
        if c.skipping {
            match nl {
                Some(pos) => {
                    c.inbuf.drain(..=pos);
                    c.skipping = false;
                    continue;
                }
                None => {
                    c.inbuf.clear();
                    return;
                }
            }
        }
        let Some(pos) = nl else {
            if c.inbuf.len() > MAX_LINE {
                c.inbuf.clear();
                c.skipping = true;
                reqs.push((c.id, Err(format!("request line longer than {MAX_LINE} bytes: skipped"))));
            }
            return;
        };
        let line: Vec<u8> = c.inbuf.drain(..=pos).collect();
        if line.len() > MAX_LINE + 1 {
            reqs.push((c.id, Err(format!("request line longer than {MAX_LINE} bytes: skipped"))));
            continue;
        }
        let line = String::from_utf8_lossy(&line);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        reqs.push((c.id, serde_json::from_str::<Request>(line).map_err(|e| format!("bad request: {e}"))));
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
