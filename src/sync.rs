//! Locks that ignore poisoning, for the mutexes of plain data every layer
//! keeps (a TLS session, a turn-mode connection, a worker's slot).

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex that guards plain data, ignoring poisoning: no code holds
/// these locks across anything that can panic half-way.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
