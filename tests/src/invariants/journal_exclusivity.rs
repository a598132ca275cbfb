//! Property 2, journal exclusivity, on the simulated kernels' ground truth:
//! when a kernel is asked to mount journal `j` of a filesystem, no other
//! live kernel (powered, same boot, not withdrawn) may hold `j`; and a first
//! mount (which replays every journal) may only happen while no other
//! kernel has the filesystem mounted at all.

use crate::world::World;

pub fn check_mount(w: &World, n: u32, fs: &str, jid: u16, first: bool) -> Result<(), String> {
    for node in w.nodes.iter().skip(1) {
        if node.id == n || !node.powered {
            continue;
        }
        let Some(k) = node.kernel.get(fs) else { continue };
        if k.holds() == Some(jid) {
            return Err(format!(
                "node {n} mounts {fs} with journal {jid} while node {} (boot {}) holds it ({:?})",
                node.id, node.boot, k.phase
            ));
        }
        if first && k.active() {
            return Err(format!(
                "node {n} mounts {fs} as first mounter while node {} has it mounted ({:?}, jid {:?})",
                node.id, k.phase, k.jid
            ));
        }
    }
    Ok(())
}

/// Whole-cluster scan (used by the liveness phase and tests).
pub fn check_all(w: &World) -> Result<(), String> {
    let mut seen: std::collections::BTreeMap<(&str, u16), u32> = std::collections::BTreeMap::new();
    for node in w.nodes.iter().skip(1) {
        if !node.powered {
            continue;
        }
        for (fs, k) in node.kernel.iter() {
            if let Some(j) = k.holds() {
                if let Some(other) = seen.insert((fs.as_str(), j), node.id) {
                    return Err(format!("nodes {other} and {} both hold journal {j} of {fs}", node.id));
                }
            }
        }
    }
    Ok(())
}
