//! The one `shibafu` binary: the CLI, `shibafu daemon`, and the hidden
//! per-container `shibafu supervise` process (the daemon re-executes this same
//! binary so supervisor and daemon can never disagree on versions).
#![cfg_attr(not(test), no_main)]

// No std runtime start (`lang_start`): it reads /proc/self/maps (glibc's
// pthread_getattr_np for the main thread's stack guard) and sets up an
// alternate signal stack before main, ~5% of every CLI command's and every
// supervisor's start. What it did that matters here is done below: SIGPIPE
// ignored (writes to closed pipes and sockets give EPIPE, as in every Rust
// program), and std::process::exit flushes stdout. `args_os` works without it
// (glibc hands argv to std's .init_array hook).

mod config;
mod daemon;
mod image_events;
mod registry_cmd;
mod sched;

// (Unit tests keep the test harness's own main.)
#[cfg(not(test))]
#[no_mangle]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    run()
}

#[cfg_attr(test, allow(dead_code))]
fn run() -> libc::c_int {
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let code = match args.get(1).and_then(|a| a.to_str()) {
        Some("daemon") => daemon::main(&args),
        Some("registry") => registry_cmd::main(&args),
        Some("supervise") => {
            // The supervisor must stay single-threaded (libcontainer forks with
            // raw clone3): nothing before this line may start a thread.
            let rest: Vec<String> = args[2..]
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            shibafu_runtime::supervisor::main(&rest)
        }
        _ => {
            // The CLI's wall time on a busy host is mostly waiting to be
            // scheduled at each wake-up (exec, the daemon's reply); a short
            // slice lets it preempt at once (see sched.rs). Best effort.
            let _ = sched::request_slice(sched::DAEMON_SLICE_NS);
            shibafu_cli::main(args)
        }
    };
    std::process::exit(code);
}
