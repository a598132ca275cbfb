//! Property 5, no ambiguity: a node's generation never goes backwards while
//! it is anchored (it only counts its own events before it learned the
//! group's numbering), a group is never synced twice at one generation or at
//! an older one, and every sync names a generation of a ring the node was
//! actually told about (checked where the sync is observed, in `world.rs`).

use crate::world::Daemon;
use cohort_core::{Generation, GroupId};

pub fn on_generation(d: &mut Daemon, gen: Generation) -> Result<(), String> {
    if let Some(prev) = d.last_anchored {
        if gen < prev {
            return Err(format!(
                "generation went backwards while anchored: {}.{} after {}.{}",
                gen.ring, gen.epoch, prev.ring, prev.epoch
            ));
        }
    }
    d.last_anchored = Some(gen);
    Ok(())
}

pub fn on_group_synced(d: &mut Daemon, group: GroupId, gen: Generation) -> Result<(), String> {
    match d.group_gens.iter_mut().find(|(g, _)| *g == group) {
        Some((_, prev)) => {
            if gen <= *prev {
                return Err(format!(
                    "group synced at {}.{} after it was synced at {}.{}",
                    gen.ring, gen.epoch, prev.ring, prev.epoch
                ));
            }
            *prev = gen;
        }
        None => d.group_gens.push((group, gen)),
    }
    Ok(())
}
