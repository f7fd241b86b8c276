//! The `shibafu` command-line client: a drop-in for the docker CLI that talks to the
//! daemon's Docker Engine API over its unix socket.

/// Runs the CLI with the full argv (program name included) and returns the process exit code.
pub fn main(args: Vec<std::ffi::OsString>) -> i32 {
    let _ = args;
    eprintln!("shibafu CLI: not built yet");
    1
}
