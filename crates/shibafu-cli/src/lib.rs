//! The `shibafu` command-line client: a drop-in for the docker CLI that talks to the
//! daemon's Docker Engine API over its unix socket.
//!
//! Layout: [`cli`] is the grammar, [`config`] and [`opts`] turn flags into API bodies,
//! [`client`] speaks HTTP (incl. hijacking), [`cmd`] holds one module per command
//! family, and [`template`]/[`tabwriter`]/[`human`] reproduce docker's output.

use std::ffi::OsString;
use std::io::Write;
use std::sync::{Arc, Mutex};

use clap::Parser;
use tokio::io::AsyncRead;

pub mod auth;
pub mod cli;
pub mod client;
pub mod cmd;
pub mod config;
pub mod dnsopts;
pub mod error;
pub mod human;
pub mod jsonmessage;
pub mod opts;
pub mod stdcopy;
pub mod tabwriter;
pub mod template;
pub mod term;

use cli::{Cli, Cmd};
use client::Client;
use error::CliError;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

type Sink = Arc<Mutex<Box<dyn Write + Send>>>;
type Source = Arc<Mutex<Option<Box<dyn AsyncRead + Send + Unpin>>>>;

/// Everything a command touches outside itself: the API client and the process's
/// stdio (swappable so the command flows can be tested in-process).
#[derive(Clone)]
pub struct Ctx {
    pub client: Client,
    out: Sink,
    err: Sink,
    stdin: Source,
    /// Whether stdin / stdout / stderr are terminals.
    pub tty_in: bool,
    pub tty_out: bool,
    pub tty_err: bool,
}

impl Ctx {
    /// The real process stdio.
    pub fn real(client: Client) -> Ctx {
        use std::io::IsTerminal;
        Ctx {
            client,
            out: Arc::new(Mutex::new(Box::new(std::io::stdout()))),
            err: Arc::new(Mutex::new(Box::new(std::io::stderr()))),
            stdin: Arc::new(Mutex::new(Some(Box::new(tokio::io::stdin())))),
            tty_in: std::io::stdin().is_terminal(),
            tty_out: std::io::stdout().is_terminal(),
            tty_err: std::io::stderr().is_terminal(),
        }
    }

    /// A context with caller-provided stdio (tests).
    pub fn with_io(
        client: Client,
        out: Box<dyn Write + Send>,
        err: Box<dyn Write + Send>,
        stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    ) -> Ctx {
        Ctx {
            client,
            out: Arc::new(Mutex::new(out)),
            err: Arc::new(Mutex::new(err)),
            stdin: Arc::new(Mutex::new(stdin)),
            tty_in: false,
            tty_out: false,
            tty_err: false,
        }
    }

    pub fn out_bytes(&self, b: &[u8]) {
        let mut o = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = o.write_all(b);
        let _ = o.flush();
    }

    pub fn err_bytes(&self, b: &[u8]) {
        let mut o = self.err.lock().unwrap_or_else(|p| p.into_inner());
        let _ = o.write_all(b);
        let _ = o.flush();
    }

    pub fn out(&self, s: &str) {
        self.out_bytes(s.as_bytes());
    }

    pub fn outln(&self, s: &str) {
        self.out_bytes(format!("{s}\n").as_bytes());
    }

    pub fn errln(&self, s: &str) {
        self.err_bytes(format!("{s}\n").as_bytes());
    }

    /// Gives stdin back after a partial read (login prompts).
    pub fn put_stdin(&self, s: Box<dyn AsyncRead + Send + Unpin>) {
        *self.stdin.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
    }

    /// Takes stdin for forwarding (only one stream may own it).
    pub fn take_stdin(&self) -> Option<Box<dyn AsyncRead + Send + Unpin>> {
        self.stdin.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Runs the CLI with the full argv (program name included) and returns the process
/// exit code. Builds its own tokio runtime.
pub fn main(args: Vec<OsString>) -> i32 {
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let _ = e.print();
            return match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                        && args.len() > 1
                    {
                        125
                    } else {
                        0
                    }
                }
                _ => 125,
            };
        }
    };
    if cli.version {
        println!("shibafu version {VERSION}");
        return 0;
    }
    let Some(cmd) = cli.cmd else {
        return 0;
    };
    let debug = cli.debug || cli.log_level == "debug";
    let client = match Client::new(&cli.host, debug) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return 125;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("failed to start the runtime: {e}");
            return 1;
        }
    };
    let ctx = Ctx::real(client);
    let code = rt.block_on(execute(cmd, &ctx));
    // Don't wait for the blocking stdin reader: it may sit in read(2) forever.
    rt.shutdown_background();
    code
}

/// Runs one parsed command and maps its outcome to docker's exit codes and messages.
pub async fn execute(cmd: Cmd, ctx: &Ctx) -> i32 {
    let run_like = match &cmd {
        Cmd::Run(_) | Cmd::Create(_) => Some(if matches!(cmd, Cmd::Run(_)) {
            "run"
        } else {
            "create"
        }),
        Cmd::Container {
            cmd: cli::ContainerCmd::Run(_),
        } => Some("run"),
        Cmd::Container {
            cmd: cli::ContainerCmd::Create(_),
        } => Some("create"),
        _ => None,
    };
    match cmd::dispatch(cmd, ctx).await {
        Ok(code) => code,
        Err(CliError::Status(code)) => code,
        Err(e) => {
            if let Some(name) = run_like {
                ctx.errln(&format!(
                    "shibafu: {e}\n\nRun 'shibafu {name} --help' for more information"
                ));
                125
            } else {
                ctx.errln(&e.to_string());
                match e {
                    CliError::Usage(_) => 125,
                    _ => 1,
                }
            }
        }
    }
}
