//! Property 7, robustness: every call into a node runs under
//! `catch_unwind` (the core's debug invariants are `debug_assert!`s, so a
//! debug build turns an internal inconsistency into a caught panic), the
//! node never reports backpressure although the simulator drains it after
//! every input, never keeps output after a full drain, never produces bytes
//! its peers cannot decode, and never rejects a transport input that follows
//! the contract. The simulator's own queues are bounded in `world.rs`.

use cohort_core::node::{DeliverError, HandleError};
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static IN_GUARD: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Panics inside `guarded` are recorded silently; all others go to the
/// previous hook (so test failures still print).
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_GUARD.with(|g| g.get()) {
                let loc = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
                let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
                    (*s).to_string()
                } else if let Some(s) = info.payload().downcast_ref::<String>() {
                    s.clone()
                } else {
                    "panic".to_string()
                };
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}{loc}")));
            } else {
                prev(info);
            }
        }));
    });
}

/// Run `f`, turning a panic into `Err(message)`.
pub fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    let was = IN_GUARD.with(|g| g.replace(true));
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    IN_GUARD.with(|g| g.set(was));
    r.map_err(|_| LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| "panic".to_string()))
}

/// Which `handle` errors are violations (the rest are legitimate races,
/// e.g. a kernel answer for a group that was just left).
pub fn classify(e: &HandleError) -> Option<String> {
    match e {
        HandleError::Backpressure => Some("backpressure although every output was drained".into()),
        HandleError::Stopped => Some("input to a stopped node (it stopped without ResetSelf/Incompatible)".into()),
        HandleError::Barrier(b) => Some(format!("barrier rejected a contract-conforming transport input: {b:?}")),
        HandleError::Deliver(DeliverError::Wire(w)) => {
            Some(format!("a message produced by a core node did not decode: {w:?}"))
        }
        HandleError::Deliver(DeliverError::SenderMismatch) => Some("sender mismatch on a genuine message".into()),
        HandleError::Request(_) | HandleError::Kernel(_) | HandleError::Fence(_) => None,
        // An error this checker does not know yet is a violation until it
        // is classified here.
        other => Some(format!("unclassified handle error: {other:?}")),
    }
}
