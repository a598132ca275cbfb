//! Planted bugs for proving that the checkers bite (feature `planted`,
//! test-only). Without the feature [`on`] is a constant `false` and every
//! planted branch compiles away; with it, a test selects one bug at run
//! time with [`plant`], so one build covers every bug.
//!
//! | bug | where | what breaks |
//! |---|---|---|
//! | `JidOffByOne` | `mount.rs` `group_sync` | a new member takes the journal below a free one (checks `j + 1`) |
//! | `NoGenerationCheck` | `mount.rs` `start_sender` | a START of an older change counts for the current one |
//! | `SkipFenceWait` | `daemon/fence.rs` `fence_clear` | journals are replayed without waiting for the fence |
//! | `NoUnblock` | `mount.rs` `recovery_kick` | kernels stay blocked after the last recovery (liveness) |
//!
//! While a bug is planted the core's own `invariant!` assertions are off,
//! so what finds the bug is the simulator's properties, not the core.

/// A planted bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Bug {
    JidOffByOne = 1,
    NoGenerationCheck = 2,
    SkipFenceWait = 3,
    NoUnblock = 4,
}

impl Bug {
    pub const ALL: [Bug; 4] = [Bug::JidOffByOne, Bug::NoGenerationCheck, Bug::SkipFenceWait, Bug::NoUnblock];
}

#[cfg(feature = "planted")]
static PLANTED: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

/// Plant `bug` (or none) for every `Node` of this process.
#[cfg(feature = "planted")]
pub fn plant(bug: Option<Bug>) {
    PLANTED.store(bug.map_or(0, |b| b as u8), core::sync::atomic::Ordering::SeqCst);
}

/// Whether `bug` is planted.
#[cfg(feature = "planted")]
#[inline]
pub fn on(bug: Bug) -> bool {
    PLANTED.load(core::sync::atomic::Ordering::Relaxed) == bug as u8
}

#[cfg(not(feature = "planted"))]
#[inline(always)]
pub const fn on(_bug: Bug) -> bool {
    false
}

/// Whether any bug is planted (the core's assertions step aside).
#[cfg(feature = "planted")]
#[inline]
pub fn any() -> bool {
    PLANTED.load(core::sync::atomic::Ordering::Relaxed) != 0
}

#[cfg(not(feature = "planted"))]
#[inline(always)]
pub const fn any() -> bool {
    false
}
