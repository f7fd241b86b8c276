//! `shibafu daemon`: wires the image store, the engine and the API server
//! together and serves until SIGTERM/SIGINT. Containers are not stopped on
//! shutdown: their supervisors keep them running and the next daemon
//! re-adopts them (Docker's "live restore", always on).

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;

use crate::config::{self, Config};

/// Flags mirror dockerd's; each overrides the config file.
#[derive(Debug, Parser)]
#[command(
    name = "shibafu daemon",
    about = "Run the shibafu daemon (Docker Engine API on a unix socket)"
)]
struct DaemonArgs {
    /// Socket to serve the API on (unix:///PATH) [default: unix:///run/shibafu.sock]
    #[arg(short = 'H', long = "host")]
    host: Option<String>,
    /// Persistent state: images, containers, volumes [default: /var/lib/shibafu]
    #[arg(long = "data-root")]
    data_root: Option<PathBuf>,
    /// Volatile state: sockets, runtime state [default: /run/shibafu]
    #[arg(long = "exec-root")]
    exec_root: Option<PathBuf>,
    /// YAML config file (daemon, runtime, logging sections)
    #[arg(long = "config-file")]
    config_file: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace, or tracing directives
    #[arg(short = 'l', long = "log-level")]
    log_level: Option<String>,
    /// Log format: text or json
    #[arg(long = "log-format")]
    log_format: Option<String>,
    /// Check the configuration and exit
    #[arg(long = "validate")]
    validate: bool,
    /// Address pool for automatic subnets: base=CIDR,size=N (repeatable;
    /// replaces the config file's pools)
    #[arg(long = "default-address-pool")]
    default_address_pool: Vec<String>,
    /// Host ports for `-p 80` and `-P`: LOW-HIGH [default: 30000-32767]
    #[arg(long = "port-range")]
    port_range: Option<String>,
    /// The default bridge's gateway address with prefix (172.17.0.1/16)
    #[arg(long = "bip")]
    bip: Option<String>,
    /// MTU of the default bridge network
    #[arg(long = "mtu")]
    mtu: Option<u32>,
    /// Upstream resolver of the embedded DNS, IP[:PORT] (repeatable;
    /// replaces the config's `dns.upstreams`) [default: the host's resolv.conf]
    #[arg(long = "dns-upstream")]
    dns_upstream: Vec<String>,
    /// Translate host-local connects to 127.0.0.1/::1 published ports at
    /// connect time (cgroup eBPF; nftables DNAT stays for everyone else)
    /// [default: true]
    #[arg(long = "socket-lb", value_name = "BOOL")]
    socket_lb: Option<bool>,
    /// A registry spoken to over plain HTTP or unverified HTTPS: HOST:PORT
    /// or CIDR (repeatable; replaces the config's
    /// `registry.insecure_registries`; loopback ones always are)
    #[arg(long = "insecure-registry", value_name = "HOST:PORT|CIDR")]
    insecure_registry: Vec<String>,
    /// A Docker Hub mirror, http(s)://HOST[:PORT], tried before Docker Hub
    /// for docker.io pulls (repeatable; replaces the config's
    /// `registry.mirrors`)
    #[arg(long = "registry-mirror", value_name = "URL")]
    registry_mirror: Vec<String>,
}

pub fn main(argv: &[OsString]) -> i32 {
    // argv[0] = program, argv[1] = "daemon".
    let args = match DaemonArgs::try_parse_from(argv[1..].iter()) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let cfg = match resolve_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shibafu daemon: {e:#}");
            return 1;
        }
    };
    if args.validate {
        println!("configuration OK");
        return 0;
    }
    init_tracing(&cfg);
    // glibc gives each contending thread its own malloc arena (up to 8 per
    // core); the runtime's short-lived blocking threads (store commits,
    // supervisor spawns) would each leave one partly touched. Two arenas
    // keep the daemon's idle RSS at its live data. Before any thread exists.
    // SAFETY: plain libc call, single-threaded here.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("shibafu-daemon")
        // Short slices: DNS answers and API replies are not kept waiting
        // behind a busy host's long-running tasks (see sched.rs).
        .on_thread_start(|| {
            if let Err(e) = crate::sched::request_slice(crate::sched::DAEMON_SLICE_NS) {
                tracing::debug!("short scheduler slice not set: {e}");
            }
        })
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shibafu daemon: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("shibafu daemon: {e:#}");
            1
        }
    }
}

fn resolve_config(args: &DaemonArgs) -> Result<Config> {
    let mut cfg = match &args.config_file {
        Some(p) => Config::load(p)?,
        None => {
            let default = Path::new("/etc/shibafu/daemon.yaml");
            if default.exists() {
                Config::load(default)?
            } else {
                Config::default()
            }
        }
    };
    cfg.apply_env(|k| std::env::var(k).ok());
    if let Some(h) = &args.host {
        cfg.daemon.host = h.clone();
    }
    if let Some(p) = &args.data_root {
        cfg.daemon.data_root = absolute(p)?;
    }
    if let Some(p) = &args.exec_root {
        cfg.daemon.exec_root = absolute(p)?;
    }
    if let Some(l) = &args.log_level {
        cfg.logging.level = l.clone();
    }
    if let Some(f) = &args.log_format {
        cfg.logging.format = f.clone();
    }
    if !args.default_address_pool.is_empty() {
        cfg.network.default_address_pools = args
            .default_address_pool
            .iter()
            .map(|p| config::PoolEntry::parse_flag(p))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?;
    }
    if let Some(r) = &args.port_range {
        cfg.network.port_range = Some(r.clone());
    }
    if let Some(b) = &args.bip {
        cfg.network.bip = Some(b.clone());
    }
    if let Some(m) = args.mtu {
        cfg.network.mtu = Some(m);
    }
    if !args.dns_upstream.is_empty() {
        cfg.dns.upstreams = Some(args.dns_upstream.clone());
    }
    if let Some(v) = args.socket_lb {
        cfg.network.socket_lb = Some(v);
    }
    if !args.insecure_registry.is_empty() {
        cfg.registry.insecure_registries = args.insecure_registry.clone();
    }
    if !args.registry_mirror.is_empty() {
        cfg.registry.mirrors = args.registry_mirror.clone();
    }
    cfg.validate()?;
    Ok(cfg)
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

fn init_tracing(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&cfg.logging.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.logging.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Creates `dir` (and parents) with `mode` if missing and tightens its mode.
fn private_dir(dir: &Path, mode: u32) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", dir.display()))
}

/// Holds an exclusive lock on `<exec-root>/shibafu.pid` for the daemon's
/// lifetime: two daemons on one exec root would fight over supervisors.
fn lock_exec_root(exec_root: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    use std::io::Write;
    let path = exec_root.join("shibafu.pid");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| {
            anyhow::anyhow!(
                "another shibafu daemon is running with exec root {} ({e})",
                exec_root.display()
            )
        })?;
    lock.set_len(0)?;
    write!(lock, "{}", std::process::id())?;
    Ok(lock)
}

async fn run(cfg: Config) -> Result<()> {
    let data_root = cfg.daemon.data_root.clone();
    let exec_root = cfg.daemon.exec_root.clone();
    let socket = config::socket_path(&cfg.daemon.host)?;
    private_dir(&data_root, 0o710)?;
    private_dir(&exec_root, 0o700)?;
    let _lock = lock_exec_root(&exec_root)?;

    let exe = std::env::current_exe().context("cannot find the shibafu binary")?;
    let images = Arc::new(
        shibafu_image::ImageStore::open(&data_root.join("image"))
            .context("cannot open the image store")?,
    );
    images.set_registry_config(cfg.registry.client_config()?);
    // The built-in registry, when configured: bound now before the engine
    // starts, so that a taken address fails the start cleanly; served until
    // the API stops.
    let registry = match cfg.registry.server_config()? {
        Some(rc) => {
            let root = rc.root.clone();
            let bound = shibafu_registry::bind(rc)
                .await
                .context("cannot start the registry server")?;
            if let Ok(addr) = bound.local_addr() {
                tracing::info!(%addr, root = %root.display(), "registry server listening");
            }
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                let r = bound
                    .run(async move {
                        let _ = stopped.await;
                    })
                    .await;
                if let Err(e) = &r {
                    tracing::error!(error = %e, "registry server stopped");
                }
                r
            });
            Some((stop, task))
        }
        None => None,
    };
    let engine_cfg = shibafu_engine::EngineConfig {
        data_root: data_root.clone(),
        exec_root: exec_root.clone(),
        exe,
        default_log_max_size: cfg
            .runtime
            .log_max_size
            .as_deref()
            .map(config::parse_size)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        default_log_max_file: cfg.runtime.log_max_file.unwrap_or(1),
        init_path: cfg.runtime.init_path.clone().or_else(|| {
            let p = PathBuf::from("/usr/bin/tini-static");
            p.exists().then_some(p)
        }),
    };
    // Networking first: bridges and rules must exist before the engine
    // re-adopts containers and restarts `always` ones onto them.
    let nets = Arc::new(
        shibafu_net::bridge::BridgeNetworks::open_host(
            cfg.network.bridge_config(data_root.join("network"))?,
        )
        .context("cannot open the network state")?,
    );
    for e in nets.restore().await {
        tracing::warn!(error = %e, "restoring networks");
    }
    // The embedded DNS of user-defined networks: its listeners come up
    // before containers are restarted onto them.
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let zone_suffix = cfg.dns.zone_suffix()?;
    let dns = Arc::new(
        shibafu_dns::DnsServer::new(shibafu_dns::DnsConfig {
            host_upstreams: cfg.dns.upstream_addrs(&host_resolv)?,
            zone_suffix: zone_suffix.clone(),
            conditional: cfg.dns.conditional_forwarders()?,
            ..Default::default()
        })
        .context("cannot start the DNS server")?,
    );
    for e in shibafu_engine::dns::sync_networks(&dns, &nets) {
        tracing::warn!("{e}");
    }
    let engine = shibafu_engine::Engine::new_with_network(
        engine_cfg,
        images.clone(),
        Arc::new(shibafu_engine::BridgeAttacher::with_dns(
            nets.clone(),
            &zone_suffix,
        )),
    )
    .await
    .context("cannot start the engine")?; // registers itself as the images' user
                                          // Now the live containers are known: release what dead ones held.
    match nets.reconcile(&engine.network_live_set()).await {
        Ok(rep) => {
            let r = shibafu_engine::netsvc::reload_report(&rep);
            for a in &r.actions {
                tracing::info!("network reconcile: {a}");
            }
            for e in &r.errors {
                tracing::warn!("network reconcile: {e}");
            }
        }
        Err(e) => tracing::error!(error = %e, "network reconcile failed"),
    }
    let firewall_watch = tokio::spawn(watch_firewall(nets.clone()));
    let dns_svc = Arc::new(
        shibafu_engine::DnsService::new(engine.clone(), nets.clone(), dns.clone())
            .with_zone_suffix(&zone_suffix)
            .with_cnames(cfg.dns.cname_configs()?),
    );
    let dns_watch = dns_svc.clone().spawn();

    let backends = shibafu_api::Backends {
        containers: engine.clone(),
        images: Arc::new(crate::image_events::EventingImages {
            inner: images.clone(),
            sink: engine.clone(),
        }),
        volumes: engine.clone(),
        system: engine.clone(),
        networks: Arc::new(shibafu_engine::NetworkService::new(
            engine.clone(),
            nets.clone(),
        )),
        dns: dns_svc.clone(),
    };
    let listener = shibafu_api::server::bind_unix(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    tracing::info!(
        socket = %socket.display(),
        data_root = %data_root.display(),
        exec_root = %exec_root.display(),
        "shibafu daemon ready"
    );
    // On a runtime worker, not on this block_on thread: a connection
    // accepted there is spawned into the same worker's queue and served at
    // once, where one accepted here woke the I/O driver's thread, then this
    // one, then a worker (two cross-thread wake-ups per CLI command).
    tokio::spawn(shibafu_api::server::serve(
        listener,
        backends,
        shutdown_signal(),
    ))
    .await
    .context("API server task")?
    .context("API server failed")?;
    tracing::info!("shutting down; containers keep running under their supervisors");
    if let Some((stop, task)) = registry {
        let _ = stop.send(());
        match tokio::time::timeout(std::time::Duration::from_secs(10), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "registry server"),
            Ok(Err(e)) => tracing::warn!(error = %e, "registry server task"),
            Err(_) => tracing::warn!("registry server did not stop in time"),
        }
    }
    firewall_watch.abort();
    dns_watch.abort();
    engine.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// How often the firewall's table is checked for.
const FIREWALL_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Re-applies the rules when shibafu's nftables table vanished (`nft flush
/// ruleset`, a firewall manager's reload), without a daemon restart.
async fn watch_firewall(nets: Arc<shibafu_net::bridge::BridgeNetworks>) {
    let mut tick = tokio::time::interval(FIREWALL_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let n = nets.clone();
        match tokio::task::spawn_blocking(move || n.ensure_firewall()).await {
            Ok(Ok(true)) => tracing::warn!("firewall rules were missing; re-applied"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "checking the firewall"),
            Err(e) => tracing::warn!(error = %e, "firewall check task"),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
