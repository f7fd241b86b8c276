//! The container lifecycle: create, start (and its undo), the exit monitor,
//! restart policies, stop, kill, restart, pause, rm, rename, update, wait.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bollard_stubs::models::{
    ContainerCreateBody, ContainerCreateResponse, ContainerUpdateBody, EventMessageTypeEnum,
    HealthConfig,
};
use chrono::Utc;
use futures::future::BoxFuture;
use futures::FutureExt;
use shibafu_api::WaitCondition;
use shibafu_runtime::{
    LogConfig, MountConfig, MountKind as RtMountKind, NetworkMode, ProcessConfig, Resources,
    RunConfig, Security,
};

use crate::ctr::Ctr;
use crate::error::{EngineError, Result};
use crate::model::{ContainerRecord, HealthState, MountKind, NetAttach, NetMode, State, Status};
use crate::names;
use crate::network::own_addresses;
use crate::ports::{ExitInfo, Supervisor};
use crate::spec::{self, SpecError};
use crate::status::should_restart;
use crate::Engine;

/// How long to wait for a killed container to be reaped before giving up.
const KILL_WAIT: Duration = Duration::from_secs(30);

impl From<SpecError> for EngineError {
    fn from(e: SpecError) -> Self {
        match e {
            SpecError::Invalid(m) => EngineError::Invalid(m),
            e @ SpecError::NoSuchImage(_) => EngineError::NotFound(e.to_string()),
        }
    }
}

/// Exit code Docker records for a start that failed with `msg`.
pub fn start_failure_code(msg: &str) -> i64 {
    let m = msg.to_ascii_lowercase();
    if m.contains("executable file not found") || m.contains("no such file or directory") {
        127
    } else if m.contains("permission denied") {
        126
    } else {
        128
    }
}

/// Effective CFS quota/period from Docker's NanoCpus or explicit values.
pub fn cpu_quota_period(nano: i64, quota: i64, period: i64) -> (Option<i64>, Option<u64>) {
    if nano > 0 {
        let period = 100_000i64;
        (Some(nano * period / 1_000_000_000), Some(period as u64))
    } else {
        (
            (quota > 0).then_some(quota),
            (period > 0).then_some(period as u64),
        )
    }
}

pub fn resources_of(hc: &bollard_stubs::models::HostConfig) -> Resources {
    let (cpu_quota, cpu_period) = cpu_quota_period(
        hc.nano_cpus.unwrap_or(0),
        hc.cpu_quota.unwrap_or(0),
        hc.cpu_period.unwrap_or(0),
    );
    Resources {
        memory: hc.memory.filter(|m| *m > 0),
        memory_swap: hc.memory_swap.filter(|m| *m != 0),
        cpu_shares: hc.cpu_shares.filter(|s| *s > 0).map(|s| s as u64),
        cpu_quota,
        cpu_period,
        pids_limit: hc.pids_limit.filter(|p| *p > 0),
    }
}

/// `/etc/hosts` for a container.
pub fn hosts_file(hostname: &str, domain: &str, extra: &[String], own: &[IpAddr]) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    let fqdn = if domain.is_empty() {
        hostname.to_string()
    } else {
        format!("{hostname}.{domain} {hostname}")
    };
    // Docker names the container's own addresses; without any (none
    // mode), the hostname still resolves through 127.0.1.1.
    if own.is_empty() {
        s.push_str(&format!("127.0.1.1\t{fqdn}\n"));
    }
    for ip in own {
        s.push_str(&format!("{ip}\t{fqdn}\n"));
    }
    for e in extra {
        // "name:ip" (Docker CLI) or "name=ip".
        if let Some((name, ip)) = e.split_once(':').or_else(|| e.split_once('=')) {
            s.push_str(&format!("{ip}\t{name}\n"));
        }
    }
    s
}

/// `/etc/resolv.conf`: the host's, or one built from `--dns*`.
pub fn resolv_conf(host: &str, dns: &[String], search: &[String], opts: &[String]) -> String {
    if dns.is_empty() && search.is_empty() && opts.is_empty() {
        return host.to_string();
    }
    let mut out = String::new();
    let keep = |prefix: &str, given: bool| -> Vec<String> {
        if given {
            vec![]
        } else {
            host.lines()
                .filter(|l| l.trim_start().starts_with(prefix))
                .map(str::to_string)
                .collect()
        }
    };
    let mut lines = Vec::new();
    lines.extend(keep("nameserver", !dns.is_empty()));
    lines.extend(dns.iter().map(|d| format!("nameserver {d}")));
    lines.extend(keep("search", !search.is_empty()));
    if !search.is_empty() {
        lines.push(format!("search {}", search.join(" ")));
    }
    lines.extend(keep("options", !opts.is_empty()));
    if !opts.is_empty() {
        lines.push(format!("options {}", opts.join(" ")));
    }
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

fn host_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// What a failed start must undo.
#[derive(Default)]
struct Undo {
    mounted: bool,
    sup: Option<Arc<dyn Supervisor>>,
    attached: bool,
}

impl Engine {
    pub(crate) fn persist(&self, rec: &ContainerRecord) -> Result<()> {
        self.store.put_container(rec)
    }

    /// Persist, logging instead of failing: used where the in-memory state
    /// has already changed and must be published regardless.
    pub(crate) fn persist_logged(&self, rec: &ContainerRecord) {
        if let Err(e) = self.persist(rec) {
            tracing::error!(container = %rec.id, error = %e, "cannot persist container record");
        }
    }

    pub(crate) fn ctr_event(&self, action: &str, rec: &ContainerRecord, extra: &[(&str, String)]) {
        let mut attrs: HashMap<String, String> = rec.config.labels.clone().unwrap_or_default();
        attrs.insert("name".into(), rec.name.clone());
        attrs.insert("image".into(), rec.image.clone());
        for (k, v) in extra {
            attrs.insert(k.to_string(), v.clone());
        }
        self.events
            .emit(EventMessageTypeEnum::CONTAINER, action, &rec.id, attrs);
    }

    fn spec_ctx(&self) -> spec::Ctx {
        spec::Ctx {
            ncpu: crate::system::ncpu(),
            default_log_max_size: self.cfg.default_log_max_size,
            default_log_max_file: self.cfg.default_log_max_file,
        }
    }

    // ------------------------------------------------------------ create

    pub(crate) async fn create(
        &self,
        name: Option<String>,
        body: ContainerCreateBody,
    ) -> Result<ContainerCreateResponse> {
        let image_ref = body.image.clone().unwrap_or_default();
        if image_ref.is_empty() {
            return Err(EngineError::Invalid(
                "invalid reference format: no image given (Config.Image)".into(),
            ));
        }
        let image = self
            .images
            .resolve(&image_ref)
            .ok_or_else(|| EngineError::NotFound(format!("No such image: {image_ref}")))?;
        let plan = spec::plan(&body, &image, &self.spec_ctx(), names::new_id)?;
        crate::services::validate_create(&plan.config)
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let wanted_name = match name.filter(|n| !n.is_empty()) {
            Some(n) => Some(names::normalize_name(&n).map_err(EngineError::Invalid)?),
            None => None,
        };
        let (network, networks) = self.plan_networks(&body, &plan)?;
        let id = names::new_id();
        // Reserve the name atomically; everything after this rolls back.
        let name = {
            let mut taken = self.names.lock();
            let name = match wanted_name {
                Some(n) => {
                    if let Some(owner) = taken.get(&n) {
                        return Err(EngineError::Conflict(format!(
                            "Conflict. The container name \"/{n}\" is already in use by container \"{owner}\". You have to remove (or rename) that container to be able to reuse that name."
                        )));
                    }
                    n
                }
                None => names::random_name(|n| taken.contains_key(n)),
            };
            taken.insert(name.clone(), id.clone());
            name
        };
        let mut created_volumes: Vec<String> = Vec::new();
        let mut created_dirs: Vec<PathBuf> = Vec::new();
        let res = self
            .create_inner(
                &id,
                &name,
                &image_ref,
                image,
                plan,
                network,
                networks,
                &mut created_volumes,
                &mut created_dirs,
            )
            .await;
        match res {
            Ok(resp) => Ok(resp),
            Err(e) => {
                let _ = self.rootfs.remove(&self.rootfs_dir(&id));
                let _ = std::fs::remove_dir_all(self.ctr_dir(&id));
                for d in created_dirs.iter().rev() {
                    let _ = std::fs::remove_dir_all(d);
                }
                for v in created_volumes {
                    self.drop_volume_files(&v);
                }
                self.names.lock().remove(&name);
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_inner(
        &self,
        id: &str,
        name: &str,
        image_ref: &str,
        image: crate::ports::ImageInfo,
        mut plan: spec::Plan,
        network: NetMode,
        networks: Vec<NetAttach>,
        created_volumes: &mut Vec<String>,
        created_dirs: &mut Vec<PathBuf>,
    ) -> Result<ContainerCreateResponse> {
        {
            let _v = self.volume_op.lock().await;
            for need in &plan.volumes {
                if self.volumes.lock().contains_key(&need.name) {
                    continue;
                }
                self.create_volume_files(
                    &need.name,
                    need.labels.clone(),
                    HashMap::new(),
                    need.anonymous,
                )?;
                created_volumes.push(need.name.clone());
            }
        }
        for m in plan.mounts.iter_mut() {
            if m.kind == MountKind::Volume {
                m.source = self.volume_dir(&m.name).join("_data").display().to_string();
            }
        }
        for d in &plan.bind_dirs {
            if !d.exists() {
                // Remember the topmost directory we create, to roll back.
                let mut top = d.clone();
                while let Some(p) = top.parent() {
                    if p.exists() {
                        break;
                    }
                    top = p.to_path_buf();
                }
                std::fs::create_dir_all(d).map_err(|e| {
                    EngineError::Invalid(format!(
                        "error while creating mount source path '{}': {e}",
                        d.display()
                    ))
                })?;
                created_dirs.push(top);
            }
        }
        let dir = self.ctr_dir(id);
        std::fs::create_dir_all(dir.join("bundle"))
            .map_err(|e| EngineError::io(dir.display(), e))?;
        self.rootfs
            .create(&self.rootfs_dir(id))
            .map_err(EngineError::Io)?;
        let mut config = plan.config;
        if config.hostname.is_none() {
            config.hostname = Some(if network == NetMode::Host {
                host_hostname()
            } else {
                id[..12].to_string()
            });
        }
        let rec = ContainerRecord {
            id: id.to_string(),
            name: name.to_string(),
            created: Utc::now(),
            image: image_ref.to_string(),
            image_id: image.id.clone(),
            layers: image.layers.clone(),
            path: plan.path,
            args: plan.args,
            config,
            host_config: plan.host_config,
            state: State::default(),
            restart_count: 0,
            mounts: plan.mounts,
            network,
            restart_policy: plan.restart_policy,
            log_max_size: plan.log_max_size,
            log_max_file: plan.log_max_file,
            stop_signal: plan.stop_signal,
            stop_timeout: plan.stop_timeout,
            network_data: HashMap::new(),
            networks,
        };
        self.store.put_container_async(&rec).await?;
        self.ctrs
            .lock()
            .insert(id.to_string(), Ctr::new(rec.clone()));
        self.ctr_event("create", &rec, &[]);
        Ok(ContainerCreateResponse {
            id: id.to_string(),
            warnings: plan.warnings,
        })
    }

    // ------------------------------------------------------------ start

    pub(crate) async fn start(&self, reference: &str) -> Result<()> {
        let c = self.lookup(reference)?;
        let _g = c.op.lock().await;
        match c.status() {
            Status::Running | Status::Paused => return Err(EngineError::NotModified),
            Status::Removing | Status::Dead => {
                return Err(EngineError::Conflict(format!(
                    "container {} is marked for removal and cannot be started",
                    c.id
                )))
            }
            Status::Restarting => self.cancel_restart(&c),
            _ => {}
        }
        let rec = c.update(|r| r.state.manually_stopped = false);
        self.persist(&rec)?;
        let res = self.start_locked(&c).await;
        if res.is_err() && rec.auto_remove() {
            // Docker removes a `--rm` container whose start failed.
            if let Err(e) = self.remove_locked(&c, true).await {
                tracing::warn!(container = %c.id, error = %e, "auto-remove after failed start");
            }
        }
        res
    }

    /// Start with the operation lock held. On failure everything done is
    /// undone and the error recorded in the state.
    pub(crate) async fn start_locked(&self, c: &Arc<Ctr>) -> Result<()> {
        let rec = c.rec();
        let mut undo = Undo::default();
        match self.try_start(c, &rec, &mut undo).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let mut errs = Vec::new();
                if undo.attached {
                    let net = self.net();
                    errs.extend(net.detach(&rec).await);
                }
                if let Some(sup) = undo.sup.take() {
                    let _ = sup.signal(libc::SIGKILL).await;
                    let _ = tokio::time::timeout(Duration::from_secs(10), sup.wait()).await;
                    errs.extend(
                        self.runtime
                            .cleanup(&rec.id, &self.run_dirs(&rec.id), &self.merged_dir(&rec.id))
                            .await,
                    );
                }
                if undo.mounted {
                    if let Err(e) = self.rootfs.unmount(&self.rootfs_dir(&rec.id)) {
                        errs.push(e);
                    }
                }
                for err in errs {
                    tracing::warn!(container = %rec.id, error = %err, "undoing a failed start");
                }
                let msg = e.to_string();
                let rec = c.update(|r| {
                    r.state.error = msg.clone();
                    r.state.exit_code = start_failure_code(&msg);
                    r.state.pid = 0;
                    r.state.was_running = false;
                    if r.state.status != Status::Created {
                        r.state.status = Status::Exited;
                        r.state.finished_at = Some(Utc::now());
                    }
                });
                self.persist_logged(&rec);
                let code = rec.state.exit_code;
                c.wait_tx.send_modify(|w| {
                    w.running = false;
                    w.exit_code = code;
                });
                Err(e)
            }
        }
    }

    async fn try_start(&self, c: &Arc<Ctr>, rec: &ContainerRecord, undo: &mut Undo) -> Result<()> {
        let id = rec.id.as_str();
        let network = match &rec.network {
            NetMode::None | NetMode::Bridge | NetMode::Network(_) => NetworkMode::None,
            NetMode::Host => NetworkMode::Host,
            NetMode::Container(target) => {
                let t = self.ctrs.lock().get(target).cloned().ok_or_else(|| {
                    EngineError::NotFound(format!(
                        "cannot join network of a non running container: {target}"
                    ))
                })?;
                let tr = t.rec();
                if !tr.state.status.is_live() || tr.state.pid <= 0 {
                    return Err(EngineError::Conflict(format!(
                        "cannot join network namespace of a non running container: {}",
                        tr.name
                    )));
                }
                NetworkMode::Join(PathBuf::from(format!("/proc/{}/ns/net", tr.state.pid)))
            }
        };
        let merged = self
            .rootfs
            .mount(&self.rootfs_dir(id), &rec.layers)
            .map_err(EngineError::Io)?;
        undo.mounted = true;
        let etc = self.write_etc_files(rec)?;
        self.prepare_mounts(rec, &merged)?;
        let cfg = self.run_config(rec, &merged, etc, network);
        let dirs = self.run_dirs(id);
        let sup = self
            .runtime
            .spawn(&cfg, &dirs)
            .await
            .map_err(|m| self.start_error(m))?;
        undo.sup = Some(sup.clone());
        let pid = sup.container_pid();
        let net = self.net();
        undo.attached = true;
        net.attach(rec, pid)
            .await
            .map_err(|e| EngineError::Runtime(format!("failed to set up networking: {e}")))?;
        if !rec.networks.is_empty() {
            // The container's own addresses in its /etc/hosts (known only
            // now). Rewritten in place: the file is already bind-mounted.
            self.write_hosts(rec, &own_addresses(&net.endpoints(rec)))?;
        }
        self.wire_pending_attaches(c, &sup).await;
        sup.start().await.map_err(|m| self.start_error(m))?;
        // Running.
        undo.sup = None;
        *c.sup.lock() = Some(sup.clone());
        let has_health = crate::health::wants_health(&rec.config);
        let rec = c.update(|r| {
            r.state.status = Status::Running;
            r.state.pid = pid as i64;
            r.state.exit_code = 0;
            r.state.error = String::new();
            r.state.oom_killed = false;
            r.state.started_at = Some(Utc::now());
            r.state.finished_at = None;
            r.state.was_running = true;
            r.state.health = has_health.then(HealthState::default);
        });
        if let Err(e) = self.store.put_container_async(&rec).await {
            tracing::error!(container = %rec.id, error = %e, "cannot persist container record");
        }
        c.set_running(true);
        self.spawn_monitor(c.clone(), sup);
        if has_health {
            self.spawn_health(c.clone());
        }
        self.ctr_event("start", &rec, &[]);
        Ok(())
    }

    /// Runtime errors: exec failures are the user's (400), the rest ours.
    fn start_error(&self, msg: String) -> EngineError {
        if start_failure_code(&msg) != 128 {
            EngineError::Invalid(msg)
        } else {
            EngineError::Runtime(msg)
        }
    }

    /// `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf` in the container
    /// dir; returns their paths.
    fn write_etc_files(&self, rec: &ContainerRecord) -> Result<[PathBuf; 3]> {
        let dir = self.ctr_dir(&rec.id);
        let hostname = rec.config.hostname.clone().unwrap_or_default();
        let hosts = self.hosts_content(rec, &[]);
        let resolv = self.resolv_content(rec);
        let files = [
            (dir.join("hostname"), format!("{hostname}\n")),
            (dir.join("hosts"), hosts),
            (dir.join("resolv.conf"), resolv),
        ];
        for (p, content) in &files {
            std::fs::write(p, content).map_err(|e| EngineError::io(p.display(), e))?;
        }
        Ok([files[0].0.clone(), files[1].0.clone(), files[2].0.clone()])
    }

    /// After a live `network connect`/`disconnect`: `/etc/hosts` gets the
    /// container's current addresses and `/etc/resolv.conf` the DNS of its
    /// current networks, as Docker rebuilds both. Written in place: the
    /// files are bind-mounted into the running container.
    pub(crate) fn refresh_resolver_files(&self, rec: &ContainerRecord) -> Result<()> {
        self.write_hosts(rec, &own_addresses(&self.net().endpoints(rec)))?;
        let p = self.ctr_dir(&rec.id).join("resolv.conf");
        std::fs::write(&p, self.resolv_content(rec)).map_err(|e| EngineError::io(p.display(), e))
    }

    fn resolv_content(&self, rec: &ContainerRecord) -> String {
        let hc = &rec.host_config;
        match self.net().resolver(rec) {
            // User-defined networks: the embedded DNS (`--dns` servers
            // become its upstreams for this container, as with Docker).
            Some(r) => crate::dns::embedded_resolv_conf(
                &r,
                hc.dns_search.as_deref().unwrap_or_default(),
                hc.dns_options.as_deref().unwrap_or_default(),
            ),
            None => {
                let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
                resolv_conf(
                    &host_resolv,
                    hc.dns.as_deref().unwrap_or_default(),
                    hc.dns_search.as_deref().unwrap_or_default(),
                    hc.dns_options.as_deref().unwrap_or_default(),
                )
            }
        }
    }

    /// Rewrite `/etc/hosts` with the container's own addresses.
    fn write_hosts(&self, rec: &ContainerRecord, own: &[IpAddr]) -> Result<()> {
        let p = self.ctr_dir(&rec.id).join("hosts");
        std::fs::write(&p, self.hosts_content(rec, own))
            .map_err(|e| EngineError::io(p.display(), e))
    }

    fn hosts_content(&self, rec: &ContainerRecord, own: &[IpAddr]) -> String {
        let hostname = rec.config.hostname.clone().unwrap_or_default();
        let domain = rec.config.domainname.clone().unwrap_or_default();
        let hc = &rec.host_config;
        if rec.network == NetMode::Host {
            let mut h = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            for e in hc.extra_hosts.iter().flatten() {
                if let Some((name, ip)) = e.split_once(':').or_else(|| e.split_once('=')) {
                    h.push_str(&format!("{ip}\t{name}\n"));
                }
            }
            h
        } else {
            hosts_file(
                &hostname,
                &domain,
                hc.extra_hosts.as_deref().unwrap_or_default(),
                own,
            )
        }
    }

    /// Make sure mount sources exist; fill fresh volumes from the image.
    fn prepare_mounts(&self, rec: &ContainerRecord, merged: &Path) -> Result<()> {
        for m in &rec.mounts {
            match m.kind {
                MountKind::Bind => {
                    let p = Path::new(&m.source);
                    if !p.exists() {
                        std::fs::create_dir_all(p).map_err(|e| {
                            EngineError::Invalid(format!(
                                "error while creating mount source path '{}': {e}",
                                m.source
                            ))
                        })?;
                    }
                }
                MountKind::Volume => {
                    let data = Path::new(&m.source);
                    std::fs::create_dir_all(data)
                        .map_err(|e| EngineError::io(data.display(), e))?;
                    let fresh = self.volume_fresh(&m.name);
                    if fresh && !m.options.iter().any(|o| o == "nocopy") {
                        let from = crate::archive::resolve_in_root(merged, &m.destination);
                        if let Ok(from) = from {
                            if from.is_dir() {
                                crate::volumes::copy_tree(&from, data).map_err(|e| {
                                    EngineError::io(
                                        format!("copying image content into volume {}", m.name),
                                        e,
                                    )
                                })?;
                            }
                        }
                    }
                }
                MountKind::Tmpfs => {}
            }
        }
        Ok(())
    }

    pub(crate) fn run_config(
        &self,
        rec: &ContainerRecord,
        merged: &Path,
        etc: [PathBuf; 3],
        network: NetworkMode,
    ) -> RunConfig {
        let cfg = &rec.config;
        let hc = &rec.host_config;
        let hostname = cfg.hostname.clone().unwrap_or_default();
        let tty = cfg.tty.unwrap_or(false);
        let mut env = cfg.env.clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
            env.push(format!("HOSTNAME={hostname}"));
        }
        if tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        let console_size = hc
            .console_size
            .as_ref()
            .filter(|c| c.len() == 2 && c[0] > 0 && c[1] > 0)
            .map(|c| (c[0] as u16, c[1] as u16));
        let mut mounts: Vec<MountConfig> = ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"]
            .iter()
            .zip(etc)
            .map(|(dst, src)| MountConfig {
                kind: RtMountKind::Bind,
                source: src,
                destination: dst.to_string(),
                read_only: false,
                options: vec![],
            })
            .collect();
        let mut user_mounts: Vec<&crate::model::MountSpec> = rec.mounts.iter().collect();
        user_mounts.sort_by_key(|m| Path::new(&m.destination).components().count());
        for m in user_mounts {
            mounts.push(MountConfig {
                kind: match m.kind {
                    MountKind::Tmpfs => RtMountKind::Tmpfs,
                    _ => RtMountKind::Bind,
                },
                source: PathBuf::from(if m.kind == MountKind::Tmpfs {
                    "tmpfs"
                } else {
                    m.source.as_str()
                }),
                destination: m.destination.clone(),
                read_only: !m.rw,
                options: m
                    .options
                    .iter()
                    .filter(|o| *o != "nocopy")
                    .cloned()
                    .collect(),
            });
        }
        let mut no_new_privileges = false;
        let mut seccomp_unconfined = false;
        for o in hc.security_opt.iter().flatten() {
            let (k, v) = o
                .split_once('=')
                .or_else(|| o.split_once(':'))
                .unwrap_or((o.as_str(), ""));
            match k {
                "no-new-privileges" => no_new_privileges = v != "false",
                "seccomp" => seccomp_unconfined = v == "unconfined",
                _ => {}
            }
        }
        let labels = cfg.labels.clone().unwrap_or_default().into_iter().collect();
        RunConfig {
            id: rec.id.clone(),
            rootfs: merged.to_path_buf(),
            process: ProcessConfig {
                args: std::iter::once(rec.path.clone())
                    .chain(rec.args.iter().cloned())
                    .collect(),
                env,
                cwd: cfg
                    .working_dir
                    .clone()
                    .filter(|w| !w.is_empty())
                    .unwrap_or_else(|| "/".into()),
                user: cfg.user.clone().unwrap_or_default(),
                tty,
                open_stdin: cfg.open_stdin.unwrap_or(false),
                stdin_once: cfg.stdin_once.unwrap_or(false),
                console_size,
            },
            hostname,
            mounts,
            resources: resources_of(hc),
            security: Security {
                privileged: hc.privileged.unwrap_or(false),
                cap_add: hc.cap_add.clone().unwrap_or_default(),
                cap_drop: hc.cap_drop.clone().unwrap_or_default(),
                read_only_rootfs: hc.readonly_rootfs.unwrap_or(false),
                no_new_privileges,
                seccomp_unconfined,
            },
            network,
            log: LogConfig {
                path: self.log_path(&rec.id),
                max_size: rec.log_max_size,
                max_file: rec.log_max_file.max(1),
            },
            stop_signal: rec.stop_signal,
            init: hc.init.unwrap_or(false),
            init_path: self.cfg.init_path.clone(),
            cgroups_path: format!("/shibafu/{}", rec.id),
            labels,
        }
    }

    /// Connect attach clients that came before start, so nothing they send
    /// or should receive is lost.
    async fn wire_pending_attaches(&self, c: &Arc<Ctr>, sup: &Arc<dyn Supervisor>) {
        let pending: Vec<_> = std::mem::take(&mut *c.pending.lock());
        for p in pending {
            if p.out.is_closed() && p.stdin.is_none() {
                continue;
            }
            match sup.attach(p.req).await {
                Ok(stdio) => crate::exec::pipe_stdio(stdio, p.stdin, p.out),
                Err(e) => tracing::warn!(container = %c.id, error = %e, "attach at start failed"),
            }
        }
    }

    // ------------------------------------------------------------ exits

    pub(crate) fn spawn_monitor(&self, c: Arc<Ctr>, sup: Arc<dyn Supervisor>) {
        let eng = self.arc();
        let c2 = c.clone();
        let h = tokio::spawn(async move {
            let exit = sup.wait().await;
            eng.handle_exit(&c2, exit).await;
        });
        *c.monitor_task.lock() = Some(h.abort_handle());
    }

    /// Undo what start set up (network, supervisor state, rootfs mount);
    /// keeps going past errors and returns them all.
    pub(crate) async fn teardown(&self, rec: &ContainerRecord) -> Vec<String> {
        let net = self.net();
        let mut errs = net.detach(rec).await;
        errs.extend(
            self.runtime
                .cleanup(&rec.id, &self.run_dirs(&rec.id), &self.merged_dir(&rec.id))
                .await,
        );
        if let Err(e) = self.rootfs.unmount(&self.rootfs_dir(&rec.id)) {
            errs.push(e);
        }
        errs
    }

    /// The container's process is gone: record it, clean up, and apply
    /// `--rm` or the restart policy.
    pub(crate) async fn handle_exit(&self, c: &Arc<Ctr>, exit: ExitInfo) {
        if self.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        c.sup.lock().take();
        if let Some(h) = c.health_task.lock().take() {
            h.abort();
        }
        // A wait that failed (connection lost around the exit) is not a dead
        // supervisor when the supervisor recorded the real status: prefer it.
        let exit = if exit.code == crate::recovery::LOST_EXIT_CODE && exit.error.is_some() {
            self.runtime
                .read_exit_status(&self.run_dirs(&c.id))
                .unwrap_or(exit)
        } else {
            exit
        };
        let before = c.rec();
        for e in self.teardown(&before).await {
            tracing::warn!(container = %c.id, error = %e, "teardown after exit");
        }
        self.record_exit(c, exit).await;
    }

    /// Record an exit (after teardown) and decide what follows.
    pub(crate) async fn record_exit(&self, c: &Arc<Ctr>, exit: ExitInfo) {
        let before = c.rec();
        let finished = exit.finished_at.unwrap_or_else(Utc::now);
        let ran = before
            .state
            .started_at
            .map(|s| (finished - s).to_std().unwrap_or_default())
            .unwrap_or_default();
        let restart = !before.auto_remove()
            && !self.shutting_down.load(Ordering::SeqCst)
            && should_restart(
                &before.restart_policy,
                exit.code,
                before.state.manually_stopped,
                before.restart_count,
            );
        let rec = c.update(|r| {
            r.state.status = if restart {
                Status::Restarting
            } else {
                Status::Exited
            };
            r.state.exit_code = exit.code;
            r.state.oom_killed = exit.oom_killed;
            r.state.finished_at = Some(finished);
            r.state.pid = 0;
            r.state.error = exit.error.clone().unwrap_or_default();
            r.state.was_running = restart;
            if let Some(h) = r.state.health.as_mut() {
                h.status = crate::model::HealthStatus::Unhealthy;
            }
        });
        self.persist_logged(&rec);
        if exit.oom_killed {
            self.ctr_event("oom", &rec, &[]);
        }
        self.ctr_event("die", &rec, &[("exitCode", exit.code.to_string())]);
        c.publish_exit(exit.code, restart);
        if rec.auto_remove() {
            let eng = self.arc();
            let c = c.clone();
            tokio::spawn(async move {
                let _g = c.op.lock().await;
                if c.wait_tx.borrow().removed {
                    return;
                }
                if let Err(e) = eng.remove_locked(&c, true).await {
                    tracing::warn!(container = %c.id, error = %e, "auto-remove");
                }
            });
        } else if restart {
            let delay = c.backoff.lock().next(ran);
            self.schedule_restart(c.clone(), delay);
        }
    }

    pub(crate) fn schedule_restart(&self, c: Arc<Ctr>, delay: Duration) {
        let eng = self.arc();
        let gen = c.restart_gen.load(Ordering::SeqCst);
        let c2 = c.clone();
        let h = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _g = c2.op.lock().await;
            if c2.restart_gen.load(Ordering::SeqCst) != gen || c2.status() != Status::Restarting {
                return;
            }
            let rec = c2.update(|r| r.restart_count += 1);
            eng.persist_logged(&rec);
            if let Err(e) = eng.start_locked(&c2).await {
                tracing::warn!(container = %c2.id, error = %e, "restart by policy failed");
            }
        });
        *c.restart_task.lock() = Some(h.abort_handle());
    }

    /// Abandon a scheduled restart (stop/rm/start of a restarting container).
    pub(crate) fn cancel_restart(&self, c: &Arc<Ctr>) {
        c.restart_gen.fetch_add(1, Ordering::SeqCst);
        if let Some(h) = c.restart_task.lock().take() {
            h.abort();
        }
        if c.status() == Status::Restarting {
            let rec = c.update(|r| {
                r.state.status = Status::Exited;
                r.state.was_running = false;
            });
            self.persist_logged(&rec);
            c.set_running(false);
        }
    }

    /// Wait (up to `timeout`, `None` = forever) until the container's exit
    /// count passes `before`. True when it did.
    pub(crate) async fn wait_exit(c: &Arc<Ctr>, before: u64, timeout: Option<Duration>) -> bool {
        let mut rx = c.wait_tx.subscribe();
        let fut = async {
            loop {
                {
                    let w = rx.borrow_and_update();
                    if w.exits > before || w.removed {
                        return true;
                    }
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, fut).await.unwrap_or(false),
            None => fut.await,
        }
    }

    // ------------------------------------------------------------ stop/kill

    pub(crate) async fn stop(
        &self,
        reference: &str,
        signal: Option<String>,
        timeout: Option<i64>,
    ) -> Result<()> {
        let c = self.lookup(reference)?;
        let sig = signal
            .filter(|s| !s.is_empty())
            .map(|s| crate::signals::parse(&s))
            .transpose()
            .map_err(EngineError::Invalid)?;
        let _g = c.op.lock().await;
        match c.status() {
            Status::Restarting => {
                let rec = c.update(|r| r.state.manually_stopped = true);
                self.persist_logged(&rec);
                self.cancel_restart(&c);
                self.ctr_event("stop", &c.rec(), &[]);
                return Ok(());
            }
            s if !s.is_live() => return Err(EngineError::NotModified),
            _ => {}
        }
        self.stop_locked(&c, sig, timeout).await?;
        self.ctr_event("stop", &c.rec(), &[]);
        Ok(())
    }

    /// Stop signal, grace period, SIGKILL. Operation lock held.
    pub(crate) async fn stop_locked(
        &self,
        c: &Arc<Ctr>,
        sig: Option<i32>,
        timeout: Option<i64>,
    ) -> Result<()> {
        let rec = c.update(|r| r.state.manually_stopped = true);
        self.persist_logged(&rec);
        let Some(sup) = c.supervisor() else {
            return Ok(());
        };
        let before = c.wait_tx.borrow().exits;
        let sig = sig.unwrap_or(rec.stop_signal);
        let t = timeout
            .or(rec.config.stop_timeout)
            .unwrap_or(spec::DEFAULT_STOP_TIMEOUT);
        if rec.state.status == Status::Paused {
            let _ = sup.resume().await;
        }
        if let Err(e) = sup.signal(sig).await {
            tracing::debug!(container = %c.id, error = %e, "stop signal");
        }
        self.ctr_event("kill", &rec, &[("signal", sig.to_string())]);
        let grace = (t >= 0).then(|| Duration::from_secs(t as u64));
        if Self::wait_exit(c, before, grace).await {
            return Ok(());
        }
        let _ = sup.signal(libc::SIGKILL).await;
        self.ctr_event("kill", &rec, &[("signal", libc::SIGKILL.to_string())]);
        if Self::wait_exit(c, before, Some(KILL_WAIT)).await {
            Ok(())
        } else {
            Err(EngineError::Runtime(format!(
                "container {} did not exit within {}s of SIGKILL",
                c.id,
                KILL_WAIT.as_secs()
            )))
        }
    }

    pub(crate) async fn kill(&self, reference: &str, signal: Option<String>) -> Result<()> {
        let c = self.lookup(reference)?;
        let sig = match signal.filter(|s| !s.is_empty()) {
            Some(s) => crate::signals::parse(&s).map_err(EngineError::Invalid)?,
            None => libc::SIGKILL,
        };
        let _g = c.op.lock().await;
        let rec = c.rec();
        if !rec.state.status.is_live() {
            return Err(EngineError::Conflict(format!(
                "Container {} is not running",
                rec.id
            )));
        }
        let sup = c
            .supervisor()
            .ok_or_else(|| EngineError::Conflict(format!("Container {} is not running", rec.id)))?;
        if sig == libc::SIGKILL || sig == rec.stop_signal {
            let rec = c.update(|r| r.state.manually_stopped = true);
            self.persist_logged(&rec);
        }
        sup.signal(sig).await.map_err(EngineError::Runtime)?;
        self.ctr_event("kill", &rec, &[("signal", sig.to_string())]);
        Ok(())
    }

    pub(crate) async fn restart(
        &self,
        reference: &str,
        signal: Option<String>,
        timeout: Option<i64>,
    ) -> Result<()> {
        let c = self.lookup(reference)?;
        let sig = signal
            .filter(|s| !s.is_empty())
            .map(|s| crate::signals::parse(&s))
            .transpose()
            .map_err(EngineError::Invalid)?;
        let _g = c.op.lock().await;
        match c.status() {
            Status::Restarting => self.cancel_restart(&c),
            s if s.is_live() => {
                self.stop_locked(&c, sig, timeout).await?;
                self.ctr_event("stop", &c.rec(), &[]);
            }
            _ => {}
        }
        if c.wait_tx.borrow().removed {
            return Err(EngineError::NotFound(format!(
                "No such container: {reference}"
            )));
        }
        let rec = c.update(|r| r.state.manually_stopped = false);
        self.persist_logged(&rec);
        self.start_locked(&c).await?;
        self.ctr_event("restart", &c.rec(), &[]);
        Ok(())
    }

    // ------------------------------------------------------------ pause

    pub(crate) async fn pause(&self, reference: &str, pause: bool) -> Result<()> {
        let c = self.lookup(reference)?;
        let _g = c.op.lock().await;
        let rec = c.rec();
        match (rec.state.status, pause) {
            (Status::Running, true) | (Status::Paused, false) => {}
            (Status::Paused, true) => {
                return Err(EngineError::Conflict(format!(
                    "Container {} is already paused",
                    rec.id
                )))
            }
            (Status::Running, false) => {
                return Err(EngineError::Conflict(format!(
                    "Container {} is not paused",
                    rec.id
                )))
            }
            _ => {
                return Err(EngineError::Conflict(format!(
                    "Container {} is not running",
                    rec.id
                )))
            }
        }
        let sup = c
            .supervisor()
            .ok_or_else(|| EngineError::Conflict(format!("Container {} is not running", rec.id)))?;
        if pause {
            sup.pause().await.map_err(EngineError::Runtime)?;
        } else {
            sup.resume().await.map_err(EngineError::Runtime)?;
        }
        let rec = c.update(|r| {
            r.state.status = if pause {
                Status::Paused
            } else {
                Status::Running
            }
        });
        self.persist_logged(&rec);
        self.ctr_event(if pause { "pause" } else { "unpause" }, &rec, &[]);
        Ok(())
    }

    // ------------------------------------------------------------ rm

    pub(crate) async fn remove(&self, reference: &str, force: bool, volumes: bool) -> Result<()> {
        let c = self.lookup(reference)?;
        let _g = c.op.lock().await;
        if c.wait_tx.borrow().removed {
            return Err(EngineError::NotFound(format!(
                "No such container: {reference}"
            )));
        }
        let status = c.status();
        if status.is_live() || status == Status::Restarting {
            if !force {
                let what = if status == Status::Restarting {
                    "restarting"
                } else if status == Status::Paused {
                    "paused"
                } else {
                    "running"
                };
                return Err(EngineError::Conflict(format!(
                    "You cannot remove a {what} container {}. Stop the container before attempting removal or force remove",
                    c.id
                )));
            }
            self.cancel_restart(&c);
            if status.is_live() {
                let rec = c.update(|r| r.state.manually_stopped = true);
                self.persist_logged(&rec);
                if let Some(sup) = c.supervisor() {
                    let before = c.wait_tx.borrow().exits;
                    if rec.state.status == Status::Paused {
                        let _ = sup.resume().await;
                    }
                    let _ = sup.signal(libc::SIGKILL).await;
                    self.ctr_event("kill", &rec, &[("signal", libc::SIGKILL.to_string())]);
                    if !Self::wait_exit(&c, before, Some(KILL_WAIT)).await {
                        return Err(EngineError::Runtime(format!(
                            "could not kill running container {}, cannot remove",
                            c.id
                        )));
                    }
                }
            }
        }
        self.remove_locked(&c, volumes).await
    }

    /// Delete a stopped container and everything it owns.
    pub(crate) async fn remove_locked(&self, c: &Arc<Ctr>, remove_volumes: bool) -> Result<()> {
        c.abort_tasks();
        let rec = c.update(|r| r.state.status = Status::Removing);
        let id = rec.id.clone();
        let mut errs: Vec<String> = Vec::new();
        if let Err(e) = self.rootfs.remove(&self.rootfs_dir(&id)) {
            errs.push(e);
        }
        let dirs = self.run_dirs(&id);
        if dirs.run_dir.exists() {
            errs.extend(
                self.runtime
                    .cleanup(&id, &dirs, &self.merged_dir(&id))
                    .await,
            );
        }
        // Unlinking a container's files costs 5-60 ms on a busy ext4 (a
        // dozen unlinkat calls, ~4 ms each under load) and `run --rm` waits
        // for `removed`: move the dirs aside with one rename each and delete
        // them after the record. A crash leaves `<id>.removing`, which
        // start-up removes as the dir of an unrecorded container.
        let mut trash = Vec::new();
        for d in [self.ctr_dir(&id), dirs.run_dir.clone()] {
            let aside = d.with_file_name(format!("{id}.removing"));
            match std::fs::rename(&d, &aside) {
                Ok(()) => trash.push(aside),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => {
                    if let Err(e) = std::fs::remove_dir_all(&d) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            errs.push(format!("removing {}: {e}", d.display()));
                        }
                    }
                }
            }
        }
        if let Err(e) = self.store.delete_container_async(&id, &rec.name).await {
            errs.push(e.to_string());
        }
        self.ctrs.lock().remove(&id);
        {
            let mut names = self.names.lock();
            if names.get(&rec.name) == Some(&id) {
                names.remove(&rec.name);
            }
        }
        {
            let ids: Vec<String> = c.exec_ids.lock().drain(..).collect();
            let mut execs = self.execs.lock();
            for e in ids {
                execs.remove(&e);
            }
        }
        c.pending.lock().clear();
        if remove_volumes {
            let _v = self.volume_op.lock().await;
            for m in rec
                .mounts
                .iter()
                .filter(|m| m.kind == MountKind::Volume && m.anonymous)
            {
                if !self.volume_users(&m.name).is_empty() {
                    continue;
                }
                if let Err(e) = self.delete_volume(&m.name) {
                    errs.push(e.to_string());
                }
            }
        }
        self.ctr_event("destroy", &rec, &[]);
        c.publish_removed();
        if !trash.is_empty() {
            tokio::task::spawn_blocking(move || {
                for t in trash {
                    if let Err(e) = std::fs::remove_dir_all(&t) {
                        tracing::warn!(path = %t.display(), error = %e, "removing a container's files");
                    }
                }
            });
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(EngineError::Io(format!(
                "container {id} removed with errors: {}",
                errs.join("; ")
            )))
        }
    }

    // ------------------------------------------------------------ rename/update

    pub(crate) async fn rename(&self, reference: &str, new_name: &str) -> Result<()> {
        let c = self.lookup(reference)?;
        let new = names::normalize_name(new_name).map_err(EngineError::Invalid)?;
        let _g = c.op.lock().await;
        let old = c.name();
        if old == new {
            return Err(EngineError::Invalid(
                "Renaming a container with the same name as its current name".into(),
            ));
        }
        {
            let mut taken = self.names.lock();
            if let Some(owner) = taken.get(&new) {
                return Err(EngineError::Conflict(format!(
                    "Conflict. The container name \"/{new}\" is already in use by container \"{owner}\". You have to remove (or rename) that container to be able to reuse that name."
                )));
            }
            taken.insert(new.clone(), c.id.clone());
        }
        let rec = c.update(|r| r.name = new.clone());
        if let Err(e) = self.persist(&rec) {
            c.update(|r| r.name = old.clone());
            self.names.lock().remove(&new);
            return Err(e);
        }
        self.names.lock().remove(&old);
        self.ctr_event("rename", &rec, &[("oldName", format!("/{old}"))]);
        Ok(())
    }

    pub(crate) async fn update_container(
        &self,
        reference: &str,
        body: ContainerUpdateBody,
    ) -> Result<Vec<String>> {
        let c = self.lookup(reference)?;
        let _g = c.op.lock().await;
        let rec = c.rec();
        let mut hc = rec.host_config.clone();
        macro_rules! take {
            ($($f:ident),*) => {$(
                if body.$f.is_some() { hc.$f = body.$f.clone(); }
            )*};
        }
        take!(
            memory,
            memory_swap,
            memory_reservation,
            cpu_shares,
            cpu_period,
            cpu_quota,
            pids_limit,
            blkio_weight
        );
        if let Some(n) = body.nano_cpus {
            hc.nano_cpus = Some(n);
        }
        if body.memory.is_some() && body.memory_swap.is_none() {
            // Docker: changing memory alone keeps swap consistent.
            if let (Some(m), Some(s)) = (hc.memory, hc.memory_swap) {
                if s > 0 && s < m {
                    hc.memory_swap = Some(m * 2);
                }
            }
        }
        for (what, set) in [
            (
                "CpusetCpus",
                body.cpuset_cpus.as_ref().is_some_and(|v| !v.is_empty()),
            ),
            (
                "Devices",
                body.devices.as_ref().is_some_and(|v| !v.is_empty()),
            ),
            (
                "Ulimits",
                body.ulimits.as_ref().is_some_and(|v| !v.is_empty()),
            ),
        ] {
            if set {
                return Err(EngineError::Invalid(format!(
                    "updating {what} is not supported by shibafu"
                )));
            }
        }
        let mut warnings = Vec::new();
        spec::check_update_resources(&mut hc, crate::system::ncpu(), &mut warnings)?;
        let mut policy = rec.restart_policy.clone();
        if let Some(rp) = &body.restart_policy {
            policy = spec::parse_restart_policy(rp, rec.auto_remove())?;
            hc.restart_policy = Some(rp.clone());
        }
        if rec.state.status.is_live() {
            if let Some(sup) = c.supervisor() {
                let res = resources_of(&hc);
                if res != resources_of(&rec.host_config) {
                    sup.update(&res).await.map_err(|e| {
                        EngineError::Runtime(format!("Cannot update container {}: {e}", rec.id))
                    })?;
                }
            }
        }
        let rec = c.update(|r| {
            r.host_config = hc;
            r.restart_policy = policy;
        });
        self.persist(&rec)?;
        self.ctr_event("update", &rec, &[]);
        Ok(warnings)
    }

    // ------------------------------------------------------------ wait

    pub(crate) fn wait(
        &self,
        reference: &str,
        cond: WaitCondition,
    ) -> Result<BoxFuture<'static, Result<i64>>> {
        let c = self.lookup(reference)?;
        let mut rx = c.wait_tx.subscribe();
        let before = rx.borrow().exits;
        Ok(async move {
            loop {
                {
                    let w = rx.borrow_and_update();
                    let done = match cond {
                        WaitCondition::NotRunning => !w.running || w.removed,
                        WaitCondition::NextExit => w.exits > before || w.removed,
                        WaitCondition::Removed => w.removed,
                    };
                    if done {
                        return Ok(w.exit_code);
                    }
                }
                if rx.changed().await.is_err() {
                    // The container is gone from memory without a removal
                    // being published (daemon shutting down).
                    let code = rx.borrow().exit_code;
                    return Ok(code);
                }
            }
        }
        .boxed())
    }
}

/// A healthcheck that actually runs something.
pub fn health_enabled(h: &HealthConfig) -> bool {
    matches!(
        h.test.as_ref().and_then(|t| t.first()).map(String::as_str),
        Some("CMD") | Some("CMD-SHELL")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_failure_codes() {
        assert_eq!(
            start_failure_code("exec: \"nope\": executable file not found in $PATH"),
            127
        );
        assert_eq!(
            start_failure_code("open /x: no such file or directory"),
            127
        );
        assert_eq!(
            start_failure_code("exec /etc/passwd: permission denied"),
            126
        );
        assert_eq!(start_failure_code("cgroup failure"), 128);
    }

    #[test]
    fn cpus_to_cfs() {
        assert_eq!(
            cpu_quota_period(1_500_000_000, 0, 0),
            (Some(150_000), Some(100_000))
        );
        assert_eq!(
            cpu_quota_period(0, 50_000, 100_000),
            (Some(50_000), Some(100_000))
        );
        assert_eq!(cpu_quota_period(0, 0, 0), (None, None));
    }

    /// A wait that lost its connection around the exit (seen under load as
    /// 137 for `run --rm ... cat` that exited 0) yields to the exit status
    /// the supervisor recorded.
    #[tokio::test]
    async fn lost_wait_prefers_the_recorded_exit_status() {
        use crate::fakes::{FakeImages, FakeRootfs, FakeRuntime};
        use shibafu_api::ContainerBackend;
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::EngineConfig {
            data_root: dir.path().join("data"),
            exec_root: dir.path().join("run"),
            exe: "/bin/false".into(),
            default_log_max_size: None,
            default_log_max_file: 1,
            init_path: None,
        };
        let rt = Arc::new(FakeRuntime::default());
        let e = Engine::with_parts(
            cfg,
            Arc::new(FakeImages),
            Arc::new(FakeRootfs::default()),
            rt.clone(),
        )
        .await
        .unwrap();
        let body = bollard_stubs::models::ContainerCreateBody {
            image: Some("busybox".into()),
            cmd: Some(vec!["sleep".into(), "100".into()]),
            ..Default::default()
        };
        let id = e
            .container_create(Some("lost".into()), body)
            .await
            .unwrap()
            .id;
        e.container_start("lost").await.unwrap();
        let c = e.lookup("lost").unwrap();
        let lost = || ExitInfo {
            code: crate::recovery::LOST_EXIT_CODE,
            error: Some("supervisor died: container has exited".into()),
            finished_at: Some(Utc::now()),
            ..Default::default()
        };
        // Without a recorded status the loss stands.
        e.handle_exit(&c, lost()).await;
        let st = c.rec().state;
        assert_eq!((st.status, st.exit_code), (Status::Exited, 137));

        e.container_start("lost").await.unwrap();
        rt.exit_files.lock().insert(
            e.run_dirs(&id).run_dir,
            ExitInfo {
                code: 0,
                ..Default::default()
            },
        );
        e.handle_exit(&c, lost()).await;
        let st = c.rec().state;
        assert_eq!((st.status, st.exit_code), (Status::Exited, 0));
        assert_eq!(st.error, "");
        e.shutdown().await;
    }

    #[test]
    fn etc_files() {
        let h = hosts_file("abc", "", &["db:10.0.0.2".into()], &[]);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.contains("127.0.1.1\tabc\n"));
        assert!(h.contains("10.0.0.2\tdb\n"));
        let host = "nameserver 10.0.0.1\nsearch corp\noptions ndots:2\n";
        assert_eq!(resolv_conf(host, &[], &[], &[]), host);
        let r = resolv_conf(host, &["1.1.1.1".into()], &[], &[]);
        assert!(r.contains("nameserver 1.1.1.1"));
        assert!(!r.contains("10.0.0.1"));
        assert!(r.contains("search corp"));
    }
}
