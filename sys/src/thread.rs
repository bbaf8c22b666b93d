//! Scheduling of hexflow's own threads.
//!
//! Contract: [`lower_priority`] only ever makes the calling thread *less* urgent (a higher
//! nice value) and touches no other thread; it is how a background thread doing bulk work
//! (Parquet encoding) gives way to the threads that carry acknowledgements, without a
//! privilege and without changing how much work it can do when the CPU is otherwise idle.

use std::io;

/// Largest nice value Linux accepts (the least urgent).
pub const NICE_MAX: i32 = 19;

/// Raises the calling thread's nice value to `nice` (clamped to `0..=NICE_MAX`); a thread
/// that is already at least that nice (the process was started under `nice`) is left alone.
///
/// On Linux, nice is per thread (`setpriority(PRIO_PROCESS, gettid())`): a thread at nice
/// 10 gets about a tenth of the CPU of a nice-0 thread it competes with, and the CFS
/// scheduler lets a waking nice-0 thread preempt it at once. Elsewhere this does nothing.
///
/// # Errors
/// The system call failed (it cannot for an unprivileged raise of the calling thread's own
/// nice value, but a sandbox may refuse it); the thread keeps its priority.
pub fn lower_priority(nice: i32) -> io::Result<()> {
    set_nice(nice.clamp(0, NICE_MAX))
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_nice(nice: i32) -> io::Result<()> {
    // SAFETY: gettid has no preconditions and returns the caller's thread id;
    // __errno_location returns the calling thread's errno, valid for the thread's life;
    // getpriority/setpriority read their integer arguments only and concern that one thread.
    let (current, errno, tid) = unsafe {
        let tid = libc::gettid() as libc::id_t;
        *libc::__errno_location() = 0;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        (current, *libc::__errno_location(), tid)
    };
    // -1 is both a valid nice value and the error return: errno tells them apart.
    if current == -1 && errno != 0 {
        return Err(io::Error::from_raw_os_error(errno));
    }
    if current >= nice {
        return Ok(());
    }
    // SAFETY: as above.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_nice(_nice: i32) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of the calling thread, from `/proc/thread-self/stat` (field 19).
    #[cfg(target_os = "linux")]
    fn own_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        // The command name (field 2) may hold spaces: count fields after its ')'.
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        after
            .split(' ')
            .nth(16)
            .expect("nice field")
            .parse()
            .expect("number")
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn lowers_only_the_calling_thread_and_clamps() {
        let before = own_nice();
        let (clamped, kept) = std::thread::spawn(|| {
            lower_priority(99).expect("setpriority");
            let clamped = own_nice();
            // Never back up: asking for a more urgent value leaves the thread as it is.
            lower_priority(0).expect("getpriority");
            (clamped, own_nice())
        })
        .join()
        .expect("thread");
        assert_eq!(clamped, NICE_MAX);
        assert_eq!(kept, NICE_MAX);
        assert_eq!(own_nice(), before, "another thread's priority changed");
    }
}
