//! Knowing whether this process is a fork of the one that made an object.
//!
//! A forked child keeps the parent's memory but none of its threads: a tokio runtime, a
//! reader's poller or an HTTP connection pool made before `fork()` is dead in the child, and
//! waiting on any of them (a `block_on`, a join at drop) hangs forever. Each object that owns
//! threads records the fork generation it was made in; a child sees a newer generation and
//! rebuilds (runtime, writer) or stops relying on the parent's threads (reader), and never
//! drops what it inherited (dropping joins dead threads).
//!
//! The generation is bumped by a `pthread_atfork` child handler, which runs after every
//! `fork()` in the process (Python's `os.fork`, multiprocessing, a C library), and costs
//! reads one atomic load where a `getpid()` would cost a system call.

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

static GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    // Only async-signal-safe work here: atomics.
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// Installs the fork handlers (once per process; children inherit them).
pub fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: the handler only touches an atomic.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        if rc != 0 {
            tracing::warn!(
                rc,
                "cannot install the fork handler; do not fork after opening ikvpy clients"
            );
        }
    });
}

/// The fork generation of this process: 0 in the process that imported ikvpy first, one more
/// in each forked child (and grandchild).
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}
