//! Lowering the CPU priority of the reader's own background threads.

/// Adds `increment` to the calling thread's nice value (Linux threads have their own); a
/// failure only costs priority, so it is logged, not returned.
pub fn lower_this_thread(increment: i32) {
    if increment <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread's own id.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            let current = libc::getpriority(libc::PRIO_PROCESS, tid);
            libc::setpriority(libc::PRIO_PROCESS, tid, (current + increment).min(19))
        };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "cannot lower the priority of a reader thread"
            );
        }
    }
}
