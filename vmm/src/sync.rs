//! Locks that survive a panic elsewhere. A panicking thread poisons the mutexes it held;
//! the VM then still has to stop, report and release its devices, so the shared state
//! (exit channel, run gate, VM state) is used as it was left instead of panicking again.

use std::sync::{Mutex, MutexGuard};

/// Lock `m`, ignoring poison.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
