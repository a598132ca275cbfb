//! Property 3, recovery before reuse, on the shared disks' ground truth.
//!
//! A journal is *dirty* once a kernel wrote it (an rw mount completed) until
//! that kernel unmounts cleanly or someone replays it. The checks:
//!
//! * nobody mounts a dirty journal whose writer is gone: it must be replayed
//!   first (a dirty journal whose writer is alive is property 2);
//! * a replay (RecoverJournal, or a first mount, which replays every
//!   journal) never touches a journal whose writer is still alive, i.e. the
//!   writer was really powered off, fenced, reset or withdrawn; fencing that
//!   only *claimed* success would show up here;
//! * replays happen only while the replaying node's ring is quorate (the
//!   quorum the simulator computed for the ring the node last processed);
//! * two replays of one journal never run at once, and never while the
//!   journal is mounted by someone.
//!
//! "Exactly once" is checked as "at least once before reuse, never
//! concurrently"; a second replay of an idle journal is harmless and allowed
//! (the core conservatively replays journals of members that died before the
//! first mount finished).

use crate::world::World;

fn quorate(w: &World, n: u32) -> Result<(), String> {
    let d = w.nodes[n as usize].daemon.as_ref().ok_or(format!("node {n} replays without a daemon"))?;
    match d.ring {
        Some(r) if w.ring_quorate(r) => Ok(()),
        Some(r) => Err(format!("node {n} replays while its ring (seq {}) is not quorate", w.rings[r].seq)),
        None => Err(format!("node {n} replays before it saw any ring")),
    }
}

pub fn check_mount(w: &World, n: u32, fs: &str, jid: u16, first: bool) -> Result<(), String> {
    let Some(disk) = w.disks.get(fs) else { return Ok(()) };
    if first {
        let mut any_dirty = false;
        for (j, jr) in disk.journals.iter() {
            if let Some(wr) = jr.writer {
                any_dirty = true;
                if wr.node != n && w.writer_alive(fs, wr) {
                    return Err(format!(
                        "node {n} mounts {fs} as first mounter (replaying every journal) while journal {j} is written by live node {} (boot {})",
                        wr.node, wr.boot
                    ));
                }
            }
            if !jr.replaying.is_empty() {
                return Err(format!(
                    "node {n} mounts {fs} first while journal {j} is being replayed by {:?}",
                    jr.replaying
                ));
            }
        }
        if any_dirty {
            quorate(w, n)?;
        }
        return Ok(());
    }
    if let Some(jr) = disk.journals.get(&jid) {
        if let Some(wr) = jr.writer {
            if !w.writer_alive(fs, wr) {
                return Err(format!(
                    "node {n} mounts journal {jid} of {fs}, written by node {} (boot {}) that died, before it was replayed",
                    wr.node, wr.boot
                ));
            }
        }
        if !jr.replaying.is_empty() {
            return Err(format!(
                "node {n} mounts journal {jid} of {fs} while it is being replayed by {:?}",
                jr.replaying
            ));
        }
    }
    Ok(())
}

pub fn check_replay(w: &World, n: u32, fs: &str, jid: u16) -> Result<(), String> {
    quorate(w, n)?;
    if let Some(jr) = w.disks.get(fs).and_then(|d| d.journals.get(&jid)) {
        if let Some(wr) = jr.writer {
            if w.writer_alive(fs, wr) {
                return Err(format!(
                    "node {n} replays journal {jid} of {fs} while its writer, node {} (boot {}), is alive (not fenced)",
                    wr.node, wr.boot
                ));
            }
        }
        if !jr.replaying.is_empty() {
            return Err(format!("node {n} replays journal {jid} of {fs} while {:?} replays it too", jr.replaying));
        }
    }
    for node in w.nodes.iter().skip(1) {
        if node.powered && node.kernel.get(fs).and_then(|k| k.holds()) == Some(jid) {
            return Err(format!("node {n} replays journal {jid} of {fs} while node {} has it mounted", node.id));
        }
    }
    Ok(())
}

/// Dirty journals nobody replayed although live members could (liveness).
pub fn unreplayed(w: &World) -> Vec<(String, u16, u32)> {
    let mut out = Vec::new();
    for (fs, disk) in w.disks.iter() {
        let has_rw_member = w
            .nodes
            .iter()
            .skip(1)
            .any(|n| n.powered && n.kernel.get(fs).is_some_and(|k| k.active() && k.jid.is_some() && !k.spectator));
        if !has_rw_member {
            continue;
        }
        for (j, jr) in disk.journals.iter() {
            if let Some(wr) = jr.writer {
                if !w.writer_alive(fs, wr) {
                    out.push((fs.clone(), *j, wr.node));
                }
            }
        }
    }
    out
}
