//! The one `shibafu` binary: the CLI, `shibafu daemon`, and the hidden
//! per-container `shibafu supervise` process (the daemon re-executes this same
//! binary so supervisor and daemon can never disagree on versions).

mod config;
mod daemon;
mod image_events;
mod sched;

use std::ffi::OsString;

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let code = match args.get(1).and_then(|a| a.to_str()) {
        Some("daemon") => daemon::main(&args),
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
