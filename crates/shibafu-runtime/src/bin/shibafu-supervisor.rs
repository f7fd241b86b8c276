//! Stand-alone supervisor binary for this crate's integration tests
//! (`CARGO_BIN_EXE_shibafu-supervisor`); the product runs the same code as
//! `shibafu supervise`.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = match args.first().map(String::as_str) {
        Some("supervise") => &args[1..],
        _ => &args[..],
    };
    std::process::exit(shibafu_runtime::supervisor::main(rest));
}
