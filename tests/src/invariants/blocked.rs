//! Property 8 of DOMAIN.md, blocked during recovery: while a journal of a
//! failed or withdrawn member of a group awaits replay, no member's kernel
//! runs that filesystem unblocked, and no member starts a mount of it;
//! the exceptions are the replay itself (a member that must mount to
//! replay, because no mounted member can, mounts blocked) and the first
//! mounter's mount, which replays every journal.
//!
//! "Awaits replay" is both true (the shared disk holds a journal written by
//! a kernel that is gone and not replayed yet) and known to the node (its
//! group holds a recovery): a node cannot block for a failure it has not
//! been told of yet, but from the step in which it learns of one, its
//! kernel must be stopped until the replay is done. Checked after every
//! step of every node, on the simulated kernel (`KFs::blocked`), and when a
//! mount starts.

use crate::kernel::KPhase;
use crate::world::World;

/// After a step of node `n` (its effects executed).
pub fn check_node(w: &World, n: u32) -> Result<(), String> {
    let node = &w.nodes[n as usize];
    let Some(d) = node.daemon.as_ref() else { return Ok(()) };
    if !node.powered {
        return Ok(());
    }
    for (fs, k) in node.kernel.iter() {
        if !k.active() || k.blocked || k.phase == KPhase::MountingFirst || k.first_pending {
            continue;
        }
        if d.node.awaits_replay(fs) && dirty(w, fs) {
            return Err(format!(
                "node {n} runs {fs} unblocked ({:?}) while a journal of a failed member awaits replay",
                k.phase
            ));
        }
    }
    Ok(())
}

/// Node `n` is asked to mount `fs` (not as first mounter).
pub fn check_mount(w: &World, n: u32, fs: &str) -> Result<(), String> {
    let node = &w.nodes[n as usize];
    let Some(d) = node.daemon.as_ref() else { return Ok(()) };
    let blocked = node.kernel.get(fs).is_some_and(|k| k.blocked);
    if d.node.awaits_replay(fs) && dirty(w, fs) && !blocked {
        return Err(format!(
            "node {n} starts an unblocked mount of {fs} while a journal of a failed member awaits replay"
        ));
    }
    Ok(())
}

/// A journal of `fs` was written by a kernel that is gone, and not replayed.
fn dirty(w: &World, fs: &str) -> bool {
    w.disks.get(fs).is_some_and(|d| d.journals.values().any(|j| j.writer.is_some_and(|wr| !w.writer_alive(fs, wr))))
}
