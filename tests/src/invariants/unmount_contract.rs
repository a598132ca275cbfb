//! Property 9 of DOMAIN.md, the unmount contract: a member leaves a group
//! cleanly (its journal is then freed without replay) only after its
//! kernel has unmounted; a host that cannot show that must not send the
//! leave. Checked when a node multicasts an `Unmount`: its simulated kernel
//! must not hold the filesystem (mounted or mounting). The simulated host
//! unmounts the kernel before it asks (`unmount`) and refuses an
//! operator's early request (`unmount-early`) while the kernel has it.

use crate::kernel::KPhase;
use crate::world::World;
use cohort_core::wire::{self, MsgKind};
use cohort_core::GroupId;

pub fn check_send(w: &World, n: u32, bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < wire::HEADER_LEN || bytes[3] != MsgKind::Unmount as u8 {
        return Ok(());
    }
    let gid = u32::from_le_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
    let node = &w.nodes[n as usize];
    for (fs, k) in node.kernel.iter() {
        if GroupId::of_fs(fs).0 != gid {
            continue;
        }
        if k.phase != KPhase::Idle && !k.withdrawn {
            return Err(format!(
                "node {n} leaves {fs} cleanly while its kernel still has it ({:?}, jid {:?}): its journal would be freed without replay",
                k.phase, k.jid
            ));
        }
    }
    Ok(())
}
