//! Scheduling hints for the daemon's threads.
//!
//! The daemon answers DNS queries and API calls in short bursts. On a busy
//! host, a woken worker thread would otherwise wait for whatever runs on
//! its CPU to finish its time slice (EEVDF's run-to-parity, up to a few
//! milliseconds) before answering a query that takes microseconds. Linux
//! 6.12+ lets a SCHED_OTHER thread ask for a shorter slice
//! (`sched_attr.sched_runtime`); a shorter slice gives it an earlier
//! virtual deadline, so it preempts at wake-up (`PREEMPT_SHORT`) while
//! still getting only its fair share of CPU time. Older kernels ignore the
//! field; failure is harmless and only logged.

use std::io;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error("sched_setattr: {0}")]
    SetAttr(io::Error),
    #[error("sched_getattr: {0}")]
    GetAttr(io::Error),
}

/// The slice the daemon's threads ask for: the kernel's minimum.
pub const DAEMON_SLICE_NS: u64 = 100_000;

/// `struct sched_attr`, SCHED_ATTR_SIZE_VER1 (with the utilization clamps).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

fn getattr() -> Result<SchedAttr, SchedError> {
    let mut a = SchedAttr::default();
    // SAFETY: sched_getattr writes at most `size` bytes into `a`, which is
    // that large; pid 0 is the calling thread.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut a as *mut SchedAttr,
            std::mem::size_of::<SchedAttr>() as u32,
            0u32,
        )
    };
    if r != 0 {
        return Err(SchedError::GetAttr(io::Error::last_os_error()));
    }
    Ok(a)
}

/// Asks for a `slice_ns` time slice for the calling thread, keeping its
/// policy and nice value. Only SCHED_OTHER/SCHED_BATCH threads are changed
/// (a real-time thread set by an administrator is left alone).
pub fn request_slice(slice_ns: u64) -> Result<(), SchedError> {
    let mut a = getattr()?;
    if a.sched_policy != libc::SCHED_OTHER as u32 && a.sched_policy != libc::SCHED_BATCH as u32 {
        return Ok(());
    }
    a.size = std::mem::size_of::<SchedAttr>() as u32;
    a.sched_flags = 0;
    a.sched_runtime = slice_ns;
    a.sched_deadline = 0;
    a.sched_period = 0;
    // SAFETY: `a` is a valid, fully initialised sched_attr of `size` bytes;
    // pid 0 is the calling thread.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &a as *const SchedAttr, 0u32) };
    if r != 0 {
        return Err(SchedError::SetAttr(io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux (major, minor) from uname.
    fn kernel() -> (u32, u32) {
        let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut it = rel.split(|c: char| !c.is_ascii_digit());
        let major = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let minor = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        (major, minor)
    }

    #[test]
    fn a_thread_gets_the_slice_it_asks_for_and_keeps_its_nice() {
        std::thread::spawn(|| {
            // SAFETY: plain syscall on the calling thread.
            let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, before + 1) };
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            request_slice(DAEMON_SLICE_NS).unwrap();
            let a = getattr().unwrap();
            assert_eq!(a.sched_nice, nice, "nice must be kept");
            assert_eq!(a.sched_policy, libc::SCHED_OTHER as u32);
            if kernel() >= (6, 12) {
                assert_eq!(a.sched_runtime, DAEMON_SLICE_NS);
            }
        })
        .join()
        .unwrap();
    }
}
