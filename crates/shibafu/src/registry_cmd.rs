//! `shibafu registry serve|gc`: the built-in OCI registry as a standalone
//! server (the daemon serves the same code from its config's
//! `registry.serve` section).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "shibafu registry",
    about = "Run or maintain the built-in OCI registry"
)]
struct RegistryArgs {
    /// Log filter: error, warn, info, debug, trace, or tracing directives
    #[arg(short = 'l', long = "log-level", default_value = "info", global = true)]
    log_level: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve the OCI Distribution API until SIGINT/SIGTERM
    Serve {
        /// Address to listen on, HOST:PORT
        #[arg(long, default_value = "127.0.0.1:5000")]
        addr: SocketAddr,
        /// Storage directory (created if missing)
        #[arg(long)]
        root: PathBuf,
        /// htpasswd file with bcrypt entries (`htpasswd -B`); enables auth
        #[arg(long)]
        htpasswd: Option<PathBuf>,
        /// PEM certificate chain; serves HTTPS (needs --tls-key)
        #[arg(long = "tls-cert", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key (needs --tls-cert)
        #[arg(long = "tls-key", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Delete blobs no manifest references (safe while a server runs)
    Gc {
        /// Storage directory
        #[arg(long)]
        root: PathBuf,
        /// Only report what would be deleted
        #[arg(long = "dry-run")]
        dry_run: bool,
        /// Also delete manifests that no tag reaches
        #[arg(long = "delete-untagged")]
        delete_untagged: bool,
        /// Keep unreferenced blobs written or used more recently than this
        /// (pushes in progress) [e.g. 0, 30s, 10m, 1h]
        #[arg(long = "grace-period", default_value = "1h", value_parser = shibafu_registry::parse_duration)]
        grace: std::time::Duration,
    },
}

pub fn main(argv: &[OsString]) -> i32 {
    // argv[0] = program, argv[1] = "registry"; usage lines read
    // "shibafu registry ...".
    let words =
        std::iter::once(OsString::from("shibafu registry")).chain(argv[2..].iter().cloned());
    let args = match RegistryArgs::try_parse_from(words) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    init_tracing(&args.log_level);
    match args.cmd {
        Cmd::Serve {
            addr,
            root,
            htpasswd,
            tls_cert,
            tls_key,
        } => {
            let cfg = shibafu_registry::ServerConfig {
                addr,
                root,
                htpasswd,
                tls_cert,
                tls_key,
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("shibafu-registry")
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("shibafu registry: cannot start the async runtime: {e}");
                    return 1;
                }
            };
            match rt.block_on(shibafu_registry::serve(cfg, shutdown_signal())) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("shibafu registry: {e}");
                    1
                }
            }
        }
        Cmd::Gc {
            root,
            dry_run,
            delete_untagged,
            grace,
        } => {
            let opts = shibafu_registry::GcOptions {
                dry_run,
                delete_untagged,
                grace,
                ..Default::default()
            };
            match shibafu_registry::gc(&root, opts) {
                Ok(r) => {
                    let verb = if dry_run { "would delete" } else { "deleted" };
                    for m in &r.manifests_deleted {
                        println!("{verb} manifest {m}");
                    }
                    for b in &r.blobs_deleted {
                        println!("{verb} blob {b}");
                    }
                    println!(
                        "{} repositories, {} manifests kept, {} blobs marked, {} blobs {verb} ({} bytes), {} in grace period, {} stale uploads {verb}",
                        r.repositories,
                        r.manifests_kept,
                        r.blobs_marked,
                        r.blobs_deleted.len(),
                        r.bytes_freed,
                        r.blobs_in_grace,
                        r.uploads_deleted
                    );
                    0
                }
                Err(e) => {
                    eprintln!("shibafu registry gc: {e}");
                    1
                }
            }
        }
    }
}

fn init_tracing(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without handlers the default dispositions still end the process.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
