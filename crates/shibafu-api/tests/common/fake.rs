//! An in-memory backend that behaves plausibly enough for real clients:
//! containers run a tiny command interpreter instead of a process
//! (`echo ARGS`, `cat` echoes stdin, `sleep N`, `exit N`, `err TEXT` writes
//! to stderr, anything else prints its command line), so the docker CLI and
//! docker-py go through create/attach/wait/start/logs/exec exactly as with a
//! real daemon.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bollard_stubs::models::*;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;
use sha2::Digest;
use shibafu_api::*;
use tokio::io::AsyncWrite;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::{BroadcastStream, UnboundedReceiverStream};

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn random_id() -> String {
    let mut h = sha2::Sha256::new();
    h.update(format!("{:?}{}", std::time::SystemTime::now(), rand_u64()));
    hex::encode(h.finalize())
}

fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Created,
    Running,
    Paused,
    Exited,
}

#[derive(Clone, Debug)]
struct CState {
    status: Status,
    exit_code: i64,
    exits: u64,
    removed: bool,
    started_at: String,
    finished_at: String,
}

struct Proc {
    /// Live output; `None` marks the end.
    out: broadcast::Sender<Option<OutputChunk>>,
    stdin_tx: mpsc::UnboundedSender<Option<Bytes>>,
    stdin_rx: Option<mpsc::UnboundedReceiver<Option<Bytes>>>,
    signal: watch::Sender<Option<i64>>,
}

struct Ctr {
    id: String,
    name: Mutex<String>,
    config: ContainerCreateBody,
    image_id: String,
    created: String,
    created_unix: i64,
    state: watch::Sender<CState>,
    proc: Mutex<Proc>,
    logs: Mutex<Vec<LogEntry>>,
    files: Mutex<BTreeMap<String, Vec<u8>>>,
    size: Mutex<(u16, u16)>,
}

impl Ctr {
    fn tty(&self) -> bool {
        self.config.tty.unwrap_or(false)
    }
    fn cmd(&self) -> Vec<String> {
        let mut v = self.config.entrypoint.clone().unwrap_or_default();
        v.extend(self.config.cmd.clone().unwrap_or_else(|| vec!["sh".into()]));
        v
    }
    fn status(&self) -> Status {
        self.state.borrow().status
    }
}

struct Exec {
    id: String,
    ctr: Arc<Ctr>,
    config: ExecConfig,
    running: Mutex<bool>,
    exit_code: Mutex<Option<i64>>,
}

#[derive(Clone)]
struct Img {
    id: String,
    tags: Vec<String>,
    size: i64,
    created: i64,
}

#[derive(Default)]
struct State {
    containers: Vec<Arc<Ctr>>,
    images: Vec<Img>,
    volumes: BTreeMap<String, Volume>,
    execs: HashMap<String, Arc<Exec>>,
    events: Vec<EventMessage>,
}

#[derive(Clone)]
pub struct Fake {
    st: Arc<Mutex<State>>,
    ev: broadcast::Sender<EventMessage>,
    /// The pretend remote registries behind pull, push and login.
    pub reg: Arc<FakeRegistry>,
}

/// What the fake's "registries" saw, and a gate that holds pulls of
/// `gated/...` after their first message (tests check that lines are
/// flushed as they come).
///
/// Remote content: `alpine`, `nginx`, `gated/app`, `broken/app` (its
/// stream fails after the first layer starts), `localhost:5999/...` (any
/// repository) on Docker's public names; `private.example:5000/...` needs
/// alice/secret or the identity token `tok-bob`. Tag `nosuchtag` is
/// missing everywhere.
pub struct FakeRegistry {
    pub pulls: Mutex<Vec<PullOptions>>,
    pub pushes: Mutex<Vec<PushOptions>>,
    pub logins: Mutex<Vec<RegistryAuth>>,
    pub load_bodies: Mutex<Vec<usize>>,
    pub gate: tokio::sync::Semaphore,
}

impl Default for FakeRegistry {
    fn default() -> Self {
        FakeRegistry {
            pulls: Default::default(),
            pushes: Default::default(),
            logins: Default::default(),
            load_bodies: Default::default(),
            gate: tokio::sync::Semaphore::new(0),
        }
    }
}

/// Splits `[domain/]path[:tag|@digest]` into (familiar repo, tag or digest).
fn split_ref(r: &str) -> (String, String) {
    let (name, tag) = if let Some((n, d)) = r.split_once('@') {
        (n.to_string(), d.to_string())
    } else {
        let last = r.rfind('/').map_or(0, |i| i + 1);
        match r[last..].rfind(':') {
            Some(i) => (r[..last + i].to_string(), r[last + i + 1..].to_string()),
            None => (r.to_string(), "latest".to_string()),
        }
    };
    let name = name.strip_prefix("docker.io/").unwrap_or(&name);
    let name = name.strip_prefix("index.docker.io/").unwrap_or(name);
    let name = name.strip_prefix("library/").unwrap_or(name);
    (name.to_string(), tag)
}

/// The registry host of a familiar repository name.
fn registry_of(repo: &str) -> &str {
    match repo.split_once('/') {
        Some((d, _)) if d.contains(['.', ':']) || d == "localhost" => d,
        _ => "docker.io",
    }
}

/// `docker.io/library/x` for `x`, as dockerd names repositories in messages.
fn qualified(repo: &str) -> String {
    if registry_of(repo) != "docker.io" {
        repo.to_string()
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    }
}

fn sha(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// dockerd's progress bar: 50 cells, `=` done, `>` head, then sizes.
fn bar(current: i64, total: i64) -> String {
    let filled = (50 * current / total.max(1)) as usize;
    let mut b = "=".repeat(filled);
    if filled < 50 {
        b.push('>');
        b.push_str(&" ".repeat(49 - filled));
    } else {
        b.push('>');
    }
    format!("[{b}]  {}kB/{}kB", current / 1000, total / 1000)
}

fn progress(id: &str, status: &str, current: i64, total: i64) -> JsonMessage {
    JsonMessage {
        status: Some(status.into()),
        id: Some(id.into()),
        progress_detail: Some(JsonProgress {
            current: Some(current),
            total: Some(total),
        }),
        progress: Some(bar(current, total)),
        ..Default::default()
    }
}

fn auth_ok(a: &Option<RegistryAuth>) -> bool {
    a.as_ref().is_some_and(|a| {
        (a.username.as_deref() == Some("alice") && a.password.as_deref() == Some("secret"))
            || a.identitytoken.as_deref() == Some("tok-bob")
            || a.auth.as_deref() == Some("YWxpY2U6c2VjcmV0")
    })
}

/// The two layers (12-hex id, size) of a fake remote repository.
fn layers_of(repo: &str) -> Vec<(String, i64)> {
    vec![
        (sha(&format!("{repo}/0"))[..12].to_string(), 3_000),
        (sha(&format!("{repo}/1"))[..12].to_string(), 1_500),
    ]
}

/// A stream fed by a task (the fake's pull/push bodies).
fn spawn_stream<F, Fut>(f: F) -> BoxStream<JsonMessage>
where
    F: FnOnce(mpsc::UnboundedSender<JsonMessage>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(f(tx));
    UnboundedReceiverStream::new(rx).boxed()
}

fn normalize_image(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if name.starts_with("sha256:") || last.contains(':') || name.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

fn not_found_ctr(id: &str) -> ApiError {
    ApiError::NotFound(format!("No such container: {id}"))
}

impl Fake {
    pub fn new() -> Self {
        let (ev, _) = broadcast::channel(256);
        let fake = Fake {
            st: Arc::new(Mutex::new(State::default())),
            ev,
            reg: Arc::new(FakeRegistry::default()),
        };
        fake.st.lock().images.push(Img {
            id: format!("sha256:{}", hex::encode(sha2::Sha256::digest(b"busybox"))),
            tags: vec!["busybox:latest".into()],
            size: 4_500_000,
            created: 1_700_000_000,
        });
        fake
    }

    pub fn backends(&self) -> Backends {
        let a = Arc::new(self.clone());
        Backends {
            containers: a.clone(),
            images: a.clone(),
            volumes: a.clone(),
            system: a,
            networks: Arc::new(NoNetworks),
            dns: Arc::new(NoDns),
        }
    }

    fn event(&self, typ: EventMessageTypeEnum, action: &str, id: &str, attrs: &[(&str, &str)]) {
        let now = chrono::Utc::now();
        let ev = EventMessage {
            typ: Some(typ),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some(id.into()),
                attributes: Some(
                    attrs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            }),
            scope: Some(EventMessageScopeEnum::LOCAL),
            time: Some(now.timestamp()),
            time_nano: now.timestamp_nanos_opt(),
        };
        self.st.lock().events.push(ev.clone());
        let _ = self.ev.send(ev);
    }

    fn find(&self, id_or_name: &str) -> ApiResult<Arc<Ctr>> {
        let st = self.st.lock();
        let key = id_or_name.trim_start_matches('/');
        if let Some(c) = st
            .containers
            .iter()
            .find(|c| c.id == key || *c.name.lock() == key)
        {
            return Ok(c.clone());
        }
        let hits: Vec<_> = st
            .containers
            .iter()
            .filter(|c| !key.is_empty() && c.id.starts_with(key))
            .collect();
        match hits.len() {
            1 => Ok(hits[0].clone()),
            0 => Err(not_found_ctr(id_or_name)),
            _ => Err(ApiError::InvalidArgument(format!(
                "multiple IDs found with provided prefix: {key}"
            ))),
        }
    }

    fn find_image(&self, name: &str) -> ApiResult<Img> {
        let st = self.st.lock();
        let norm = normalize_image(name);
        st.images
            .iter()
            .find(|i| {
                i.tags.contains(&norm)
                    || i.id == name
                    || (name.len() >= 12
                        && i.id
                            .trim_start_matches("sha256:")
                            .starts_with(name.trim_start_matches("sha256:")))
            })
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("No such image: {norm}")))
    }

    fn remove_ctr(&self, c: &Arc<Ctr>) {
        self.st.lock().containers.retain(|x| x.id != c.id);
        c.state.send_modify(|s| s.removed = true);
        self.event(
            EventMessageTypeEnum::CONTAINER,
            "destroy",
            &c.id,
            &[("name", &c.name.lock())],
        );
    }

    fn summary(&self, c: &Ctr) -> ContainerSummary {
        let s = c.state.borrow().clone();
        let (state, status) = match s.status {
            Status::Created => (ContainerSummaryStateEnum::CREATED, "Created".to_string()),
            Status::Running => (
                ContainerSummaryStateEnum::RUNNING,
                "Up Less than a second".to_string(),
            ),
            Status::Paused => (
                ContainerSummaryStateEnum::PAUSED,
                "Up Less than a second (Paused)".to_string(),
            ),
            Status::Exited => (
                ContainerSummaryStateEnum::EXITED,
                format!("Exited ({}) Less than a second ago", s.exit_code),
            ),
        };
        ContainerSummary {
            id: Some(c.id.clone()),
            names: Some(vec![format!("/{}", c.name.lock())]),
            image: c.config.image.clone(),
            image_id: Some(c.image_id.clone()),
            command: Some(c.cmd().join(" ")),
            created: Some(c.created_unix),
            ports: Some(vec![]),
            labels: Some(c.config.labels.clone().unwrap_or_default()),
            state: Some(state),
            status: Some(status),
            host_config: Some(ContainerSummaryHostConfig {
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            network_settings: Some(ContainerSummaryNetworkSettings {
                networks: Some(HashMap::new()),
            }),
            mounts: Some(vec![]),
            ..Default::default()
        }
    }

    /// The "process": a tiny interpreter writing to the container's output.
    async fn run(
        argv: Vec<String>,
        tty: bool,
        mut stdin: Option<mpsc::UnboundedReceiver<Option<Bytes>>>,
        mut signal: watch::Receiver<Option<i64>>,
        mut emit: impl FnMut(StdStream, Bytes) + Send,
    ) -> i64 {
        let nl = |s: String| if tty { s.replace('\n', "\r\n") } else { s };
        let cmd = argv.first().cloned().unwrap_or_default();
        let args = argv.get(1..).unwrap_or_default().to_vec();
        match cmd.as_str() {
            "echo" => {
                emit(
                    StdStream::Stdout,
                    Bytes::from(nl(format!("{}\n", args.join(" ")))),
                );
                0
            }
            "err" => {
                emit(
                    if tty {
                        StdStream::Stdout
                    } else {
                        StdStream::Stderr
                    },
                    Bytes::from(nl(format!("{}\n", args.join(" ")))),
                );
                1
            }
            "exit" => args.first().and_then(|a| a.parse().ok()).unwrap_or(0),
            "sleep" => {
                let secs: f64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(0.0);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs_f64(secs)) => 0,
                    code = signal.wait_for(|s| s.is_some()) => code.map(|c| c.unwrap()).unwrap_or(137),
                }
            }
            "cat" | "sh" => {
                let Some(rx) = stdin.as_mut() else { return 0 };
                loop {
                    tokio::select! {
                        code = signal.wait_for(|s| s.is_some()) => return code.map(|c| c.unwrap()).unwrap_or(137),
                        msg = rx.recv() => match msg {
                            Some(Some(data)) => {
                                if tty {
                                    // A terminal echoes input; ^D ends the input.
                                    if let Some(p) = data.iter().position(|b| *b == 4) {
                                        if p > 0 { emit(StdStream::Stdout, Bytes::from(data[..p].to_vec())); }
                                        return 0;
                                    }
                                    let echoed: Vec<u8> = data.iter().flat_map(|b| if *b == b'\r' { vec![b'\r', b'\n'] } else { vec![*b] }).collect();
                                    emit(StdStream::Stdout, Bytes::from(echoed));
                                } else {
                                    emit(StdStream::Stdout, data);
                                }
                            }
                            _ => return 0,
                        }
                    }
                }
            }
            _ => {
                emit(
                    StdStream::Stdout,
                    Bytes::from(nl(format!("{}\n", argv.join(" ")))),
                );
                0
            }
        }
    }

    fn start_process(&self, c: Arc<Ctr>) {
        let (stdin, signal_rx) = {
            let mut p = c.proc.lock();
            let stdin = p.stdin_rx.take();
            (stdin, p.signal.subscribe())
        };
        let stdin = if c.config.open_stdin.unwrap_or(false) {
            stdin
        } else {
            None
        };
        c.state.send_modify(|s| {
            s.status = Status::Running;
            s.started_at = now_rfc3339();
        });
        self.event(
            EventMessageTypeEnum::CONTAINER,
            "start",
            &c.id,
            &[("name", &c.name.lock())],
        );
        let fake = self.clone();
        tokio::spawn(async move {
            let c2 = c.clone();
            let emit = move |stream, data: Bytes| {
                c2.logs.lock().push(LogEntry {
                    stream,
                    time: now_rfc3339(),
                    data: data.clone(),
                });
                let _ = c2.proc.lock().out.send(Some(OutputChunk { stream, data }));
            };
            let code = Fake::run(c.cmd(), c.tty(), stdin, signal_rx, emit).await;
            {
                let mut p = c.proc.lock();
                c.state.send_modify(|s| {
                    s.status = Status::Exited;
                    s.exit_code = code;
                    s.exits += 1;
                    s.finished_at = now_rfc3339();
                });
                let _ = p.out.send(None);
                // Fresh stdio for a later restart.
                let (tx, rx) = mpsc::unbounded_channel();
                p.stdin_tx = tx;
                p.stdin_rx = Some(rx);
                p.signal = watch::channel(None).0;
            }
            fake.event(
                EventMessageTypeEnum::CONTAINER,
                "die",
                &c.id,
                &[("exitCode", &code.to_string())],
            );
            if c.config
                .host_config
                .as_ref()
                .and_then(|h| h.auto_remove)
                .unwrap_or(false)
            {
                fake.remove_ctr(&c);
            }
        });
    }

    /// Output from now until the process ends (empty when not running and
    /// not about to be started).
    fn live_output(c: &Ctr, stdout: bool, stderr: bool) -> BoxStream<OutputChunk> {
        let p = c.proc.lock();
        if c.status() == Status::Exited {
            return futures::stream::empty().boxed();
        }
        BroadcastStream::new(p.out.subscribe())
            .map(|r| r.ok().flatten())
            .take_while(|c| futures::future::ready(c.is_some()))
            .filter_map(move |c| {
                let c = c.filter(|c| {
                    (c.stream == StdStream::Stdout && stdout)
                        || (c.stream == StdStream::Stderr && stderr)
                });
                futures::future::ready(c)
            })
            .boxed()
    }
}

/// Client stdin -> the fake process (buffered until it starts).
struct StdinWriter(mpsc::UnboundedSender<Option<Bytes>>);

impl AsyncWrite for StdinWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.0.send(Some(Bytes::copy_from_slice(buf))) {
            Ok(()) => Poll::Ready(Ok(buf.len())),
            Err(_) => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let _ = self.0.send(None);
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl ContainerBackend for Fake {
    async fn container_create(
        &self,
        name: Option<String>,
        body: ContainerCreateBody,
    ) -> ApiResult<ContainerCreateResponse> {
        let image = body
            .image
            .clone()
            .ok_or_else(|| ApiError::InvalidArgument("no image given".into()))?;
        let img = self.find_image(&image)?;
        let id = random_id();
        let name = name
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_else(|| format!("fake_{}", &id[..8]));
        if self
            .st
            .lock()
            .containers
            .iter()
            .any(|c| *c.name.lock() == name)
        {
            return Err(ApiError::Conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use"
            )));
        }
        let (out, _) = broadcast::channel(1024);
        let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
        let now = chrono::Utc::now();
        let ctr = Arc::new(Ctr {
            id: id.clone(),
            name: Mutex::new(name.clone()),
            config: body,
            image_id: img.id.clone(),
            created: now_rfc3339(),
            created_unix: now.timestamp(),
            state: watch::channel(CState {
                status: Status::Created,
                exit_code: 0,
                exits: 0,
                removed: false,
                started_at: "0001-01-01T00:00:00Z".into(),
                finished_at: "0001-01-01T00:00:00Z".into(),
            })
            .0,
            proc: Mutex::new(Proc {
                out,
                stdin_tx,
                stdin_rx: Some(stdin_rx),
                signal: watch::channel(None).0,
            }),
            logs: Mutex::new(vec![]),
            files: Mutex::new(BTreeMap::from([(
                "/etc/hostname".to_string(),
                format!("{}\n", &id[..12]).into_bytes(),
            )])),
            size: Mutex::new((24, 80)),
        });
        self.st.lock().containers.push(ctr);
        self.event(
            EventMessageTypeEnum::CONTAINER,
            "create",
            &id,
            &[("name", &name), ("image", &image)],
        );
        Ok(ContainerCreateResponse {
            id,
            warnings: vec![],
        })
    }

    async fn container_list(
        &self,
        all: bool,
        limit: Option<usize>,
        _size: bool,
        filters: Filters,
    ) -> ApiResult<Vec<ContainerSummary>> {
        let ctrs = self.st.lock().containers.clone();
        let mut out: Vec<_> = ctrs
            .iter()
            .rev()
            .filter(|c| all || c.status() == Status::Running || filters.contains_key("status"))
            .map(|c| self.summary(c))
            .filter(|s| {
                filters.iter().all(|(k, vals)| match k.as_str() {
                    "status" => vals
                        .iter()
                        .any(|v| s.state.map(|st| st.to_string()) == Some(v.clone())),
                    "name" => vals
                        .iter()
                        .any(|v| s.names.as_ref().unwrap()[0].contains(v.as_str())),
                    "id" => vals
                        .iter()
                        .any(|v| s.id.as_ref().unwrap().starts_with(v.as_str())),
                    "label" => vals.iter().all(|v| {
                        let labels = s.labels.as_ref().unwrap();
                        match v.split_once('=') {
                            Some((k, val)) => labels.get(k).map(String::as_str) == Some(val),
                            None => labels.contains_key(v),
                        }
                    }),
                    _ => true,
                })
            })
            .collect();
        if let Some(l) = limit {
            out.truncate(l);
        }
        Ok(out)
    }

    async fn container_inspect(
        &self,
        id: &str,
        _size: bool,
    ) -> ApiResult<ContainerInspectResponse> {
        let c = self.find(id)?;
        let s = c.state.borrow().clone();
        let argv = c.cmd();
        let config: ContainerConfig =
            serde_json::from_value(serde_json::to_value(&c.config).unwrap()).unwrap();
        let mut host = c.config.host_config.clone().unwrap_or_default();
        host.log_config = Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::new()),
        });
        Ok(ContainerInspectResponse {
            id: Some(c.id.clone()),
            created: Some(c.created.clone()),
            path: argv.first().cloned(),
            args: Some(argv.get(1..).unwrap_or_default().to_vec()),
            state: Some(ContainerState {
                status: Some(match s.status {
                    Status::Created => ContainerStateStatusEnum::CREATED,
                    Status::Running => ContainerStateStatusEnum::RUNNING,
                    Status::Paused => ContainerStateStatusEnum::PAUSED,
                    Status::Exited => ContainerStateStatusEnum::EXITED,
                }),
                running: Some(matches!(s.status, Status::Running | Status::Paused)),
                paused: Some(s.status == Status::Paused),
                restarting: Some(false),
                oom_killed: Some(false),
                dead: Some(false),
                pid: Some(if s.status == Status::Running { 4242 } else { 0 }),
                exit_code: Some(s.exit_code),
                error: Some(String::new()),
                started_at: Some(s.started_at),
                finished_at: Some(s.finished_at),
                health: None,
            }),
            image: Some(c.image_id.clone()),
            name: Some(format!("/{}", c.name.lock())),
            restart_count: Some(0),
            driver: Some("overlay2".into()),
            platform: Some("linux".into()),
            host_config: Some(host),
            mounts: Some(vec![]),
            config: Some(config),
            network_settings: Some(NetworkSettings {
                networks: Some(HashMap::new()),
                ports: Some(HashMap::new()),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    async fn container_start(&self, id: &str) -> ApiResult<()> {
        let c = self.find(id)?;
        match c.status() {
            Status::Running | Status::Paused => Err(ApiError::NotModified),
            _ => {
                self.start_process(c);
                Ok(())
            }
        }
    }

    async fn container_stop(
        &self,
        id: &str,
        _signal: Option<String>,
        _timeout: Option<i64>,
    ) -> ApiResult<()> {
        let c = self.find(id)?;
        if !matches!(c.status(), Status::Running | Status::Paused) {
            return Err(ApiError::NotModified);
        }
        let mut rx = c.state.subscribe();
        c.proc.lock().signal.send_replace(Some(143));
        let _ = rx
            .wait_for(|s| s.status == Status::Exited || s.removed)
            .await;
        Ok(())
    }

    async fn container_restart(
        &self,
        id: &str,
        signal: Option<String>,
        timeout: Option<i64>,
    ) -> ApiResult<()> {
        match self.container_stop(id, signal, timeout).await {
            Ok(()) | Err(ApiError::NotModified) => {}
            Err(e) => return Err(e),
        }
        self.container_start(id).await
    }

    async fn container_kill(&self, id: &str, signal: Option<String>) -> ApiResult<()> {
        let c = self.find(id)?;
        if c.status() != Status::Running {
            return Err(ApiError::Conflict(format!(
                "Container {} is not running",
                c.id
            )));
        }
        let code = match signal.as_deref().map(|s| s.trim_start_matches("SIG")) {
            None | Some("KILL") | Some("9") => 137,
            Some("TERM") | Some("15") => 143,
            Some("INT") | Some("2") => 130,
            Some(other) => {
                return Err(ApiError::InvalidArgument(format!(
                    "invalid signal: {other}"
                )))
            }
        };
        c.proc.lock().signal.send_replace(Some(code));
        Ok(())
    }

    async fn container_pause(&self, id: &str) -> ApiResult<()> {
        let c = self.find(id)?;
        if c.status() != Status::Running {
            return Err(ApiError::Conflict(format!(
                "Container {} is not running",
                c.id
            )));
        }
        c.state.send_modify(|s| s.status = Status::Paused);
        Ok(())
    }

    async fn container_unpause(&self, id: &str) -> ApiResult<()> {
        let c = self.find(id)?;
        if c.status() != Status::Paused {
            return Err(ApiError::Conflict(format!(
                "Container {} is not paused",
                c.id
            )));
        }
        c.state.send_modify(|s| s.status = Status::Running);
        Ok(())
    }

    async fn container_remove(&self, id: &str, force: bool, _volumes: bool) -> ApiResult<()> {
        let c = self.find(id)?;
        if matches!(c.status(), Status::Running | Status::Paused) {
            if !force {
                return Err(ApiError::Conflict(format!(
                    "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                    c.name.lock()
                )));
            }
            let mut rx = c.state.subscribe();
            c.proc.lock().signal.send_replace(Some(137));
            let _ = rx
                .wait_for(|s| s.status == Status::Exited || s.removed)
                .await;
        }
        if !c.state.borrow().removed {
            self.remove_ctr(&c);
        }
        Ok(())
    }

    async fn container_rename(&self, id: &str, new_name: &str) -> ApiResult<()> {
        let c = self.find(id)?;
        let new_name = new_name.trim_start_matches('/');
        if self
            .st
            .lock()
            .containers
            .iter()
            .any(|x| *x.name.lock() == new_name)
        {
            return Err(ApiError::Conflict(format!(
                "Conflict. The container name \"/{new_name}\" is already in use"
            )));
        }
        *c.name.lock() = new_name.to_string();
        Ok(())
    }

    async fn container_update(
        &self,
        id: &str,
        _body: ContainerUpdateBody,
    ) -> ApiResult<ContainerUpdateResponse> {
        self.find(id)?;
        Ok(ContainerUpdateResponse {
            warnings: Some(vec![]),
        })
    }

    async fn container_wait(
        &self,
        id: &str,
        condition: WaitCondition,
    ) -> ApiResult<BoxFuture<'static, ApiResult<i64>>> {
        let c = self.find(id)?;
        let mut rx = c.state.subscribe();
        let start_exits = rx.borrow().exits;
        Ok(async move {
            let res = match condition {
                WaitCondition::NotRunning => rx
                    .wait_for(|s| !matches!(s.status, Status::Running | Status::Paused))
                    .await
                    .map(|s| s.exit_code),
                WaitCondition::NextExit => rx
                    .wait_for(|s| s.exits > start_exits)
                    .await
                    .map(|s| s.exit_code),
                WaitCondition::Removed => rx.wait_for(|s| s.removed).await.map(|s| s.exit_code),
            };
            res.map_err(|_| ApiError::Internal("container state went away".into()))
        }
        .boxed())
    }

    async fn container_top(
        &self,
        id: &str,
        _ps_args: Option<String>,
    ) -> ApiResult<ContainerTopResponse> {
        let c = self.find(id)?;
        if c.status() != Status::Running {
            return Err(ApiError::Conflict(format!(
                "Container {} is not running",
                c.id
            )));
        }
        Ok(ContainerTopResponse {
            titles: Some(
                ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
                    .map(String::from)
                    .to_vec(),
            ),
            processes: Some(vec![[
                "root",
                "4242",
                "4241",
                "0",
                "10:00",
                "?",
                "00:00:00",
                &c.cmd().join(" "),
            ]
            .map(String::from)
            .to_vec()]),
        })
    }

    async fn container_stats(
        &self,
        id: &str,
        stream: bool,
        _one_shot: bool,
    ) -> ApiResult<BoxStream<ContainerStatsResponse>> {
        let c = self.find(id)?;
        let sample = move |n: u64| ContainerStatsResponse {
            id: Some(c.id.clone()),
            name: Some(format!("/{}", c.name.lock())),
            os_type: Some("linux".into()),
            read: Some(now_rfc3339()),
            cpu_stats: Some(ContainerCpuStats {
                cpu_usage: Some(ContainerCpuUsage {
                    total_usage: Some(1_000_000 * (n + 1)),
                    ..Default::default()
                }),
                system_cpu_usage: Some(1_000_000_000 * (n + 1)),
                online_cpus: Some(2),
                ..Default::default()
            }),
            precpu_stats: Some(ContainerCpuStats {
                cpu_usage: Some(ContainerCpuUsage {
                    total_usage: Some(1_000_000 * n),
                    ..Default::default()
                }),
                system_cpu_usage: Some(1_000_000_000 * n),
                online_cpus: Some(2),
                ..Default::default()
            }),
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(1 << 20),
                limit: Some(1 << 30),
                ..Default::default()
            }),
            num_procs: Some(0),
            ..Default::default()
        };
        if !stream {
            return Ok(futures::stream::iter([sample(0)]).boxed());
        }
        Ok(futures::stream::unfold(0u64, move |n| {
            let s = sample(n);
            async move {
                if n > 0 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Some((s, n + 1))
            }
        })
        .boxed())
    }

    async fn container_logs(&self, id: &str, opts: LogsOptions) -> ApiResult<LogsStream> {
        let c = self.find(id)?;
        let live = if opts.follow {
            Some(Fake::live_output(&c, opts.stdout, opts.stderr))
        } else {
            None
        };
        let mut past: Vec<LogEntry> = c
            .logs
            .lock()
            .iter()
            .filter(|e| {
                (e.stream == StdStream::Stdout && opts.stdout)
                    || (e.stream == StdStream::Stderr && opts.stderr)
            })
            .filter(|e| {
                let t = chrono::DateTime::parse_from_rfc3339(&e.time)
                    .unwrap()
                    .timestamp() as f64;
                opts.since.is_none_or(|s| t >= s.floor()) && opts.until.is_none_or(|u| t <= u)
            })
            .cloned()
            .collect();
        if let Some(n) = opts.tail {
            past.drain(..past.len().saturating_sub(n));
        }
        let mut entries = futures::stream::iter(past).boxed();
        if let Some(live) = live {
            entries = entries
                .chain(live.map(|c| LogEntry {
                    stream: c.stream,
                    time: now_rfc3339(),
                    data: c.data,
                }))
                .boxed();
        }
        Ok(LogsStream {
            tty: c.tty(),
            entries,
        })
    }

    async fn container_attach(&self, id: &str, opts: AttachOptions) -> ApiResult<AttachStreams> {
        let c = self.find(id)?;
        let mut output: BoxStream<OutputChunk> = futures::stream::empty().boxed();
        if opts.logs {
            let past: Vec<_> = c
                .logs
                .lock()
                .iter()
                .map(|e| OutputChunk {
                    stream: e.stream,
                    data: e.data.clone(),
                })
                .collect();
            output = futures::stream::iter(past).boxed();
        }
        if opts.stream {
            output = output
                .chain(Fake::live_output(&c, opts.stdout, opts.stderr))
                .boxed();
        }
        let stdin: Option<Box<dyn AsyncWrite + Send + Unpin>> =
            if opts.stdin && c.config.open_stdin.unwrap_or(false) {
                Some(Box::new(StdinWriter(c.proc.lock().stdin_tx.clone())))
            } else {
                None
            };
        Ok(AttachStreams {
            tty: c.tty(),
            stdin,
            output,
        })
    }

    async fn container_resize(&self, id: &str, height: u16, width: u16) -> ApiResult<()> {
        let c = self.find(id)?;
        *c.size.lock() = (height, width);
        Ok(())
    }

    async fn container_archive_get(
        &self,
        id: &str,
        path: &str,
    ) -> ApiResult<(PathStat, BoxStream<std::io::Result<Bytes>>)> {
        let c = self.find(id)?;
        let stat = self.container_archive_stat(id, path).await?;
        let files = c.files.lock().clone();
        let mut builder = tar::Builder::new(Vec::new());
        let prefix = path.trim_end_matches('/');
        for (p, data) in files
            .iter()
            .filter(|(p, _)| *p == path || p.starts_with(&format!("{prefix}/")))
        {
            let rel = format!("{}{}", stat.name, &p[prefix.len()..]);
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            builder.append_data(&mut h, rel, &data[..]).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        Ok((stat, futures::stream::iter([Ok(Bytes::from(tar))]).boxed()))
    }

    async fn container_archive_stat(&self, id: &str, path: &str) -> ApiResult<PathStat> {
        let c = self.find(id)?;
        let files = c.files.lock();
        let name = path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        let mtime = "2026-11-23T10:00:00Z".to_string();
        if let Some(data) = files.get(path) {
            return Ok(PathStat {
                name,
                size: data.len() as i64,
                mode: 0o644,
                mtime,
                link_target: String::new(),
            });
        }
        let prefix = format!("{}/", path.trim_end_matches('/'));
        if path == "/"
            || ["/tmp", "/etc"].contains(&path.trim_end_matches('/'))
            || files.keys().any(|k| k.starts_with(&prefix))
        {
            return Ok(PathStat {
                name: if name.is_empty() { "/".into() } else { name },
                size: 4096,
                mode: (1 << 31) | 0o755,
                mtime,
                link_target: String::new(),
            });
        }
        Err(ApiError::NotFound(format!(
            "Could not find the file {path} in container {id}"
        )))
    }

    async fn container_archive_put(
        &self,
        id: &str,
        path: &str,
        _no_overwrite: bool,
        _copy_uid_gid: bool,
        mut body: BoxStream<std::io::Result<Bytes>>,
    ) -> ApiResult<()> {
        let c = self.find(id)?;
        self.container_archive_stat(id, path).await?;
        let mut data = Vec::new();
        while let Some(chunk) = body.next().await {
            data.extend_from_slice(&chunk.map_err(|e| ApiError::InvalidArgument(e.to_string()))?);
        }
        let mut ar = tar::Archive::new(&data[..]);
        let entries = ar
            .entries()
            .map_err(|e| ApiError::InvalidArgument(format!("bad tar: {e}")))?;
        for e in entries {
            let mut e = e.map_err(|e| ApiError::InvalidArgument(format!("bad tar: {e}")))?;
            if e.header().entry_type().is_dir() {
                continue;
            }
            let rel = e.path().unwrap().to_string_lossy().to_string();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut content).unwrap();
            c.files
                .lock()
                .insert(format!("{}/{}", path.trim_end_matches('/'), rel), content);
        }
        Ok(())
    }

    async fn container_prune(&self, _filters: Filters) -> ApiResult<ContainerPruneResponse> {
        let dead: Vec<_> = self
            .st
            .lock()
            .containers
            .iter()
            .filter(|c| c.status() == Status::Exited)
            .cloned()
            .collect();
        for c in &dead {
            self.remove_ctr(c);
        }
        Ok(ContainerPruneResponse {
            containers_deleted: Some(dead.iter().map(|c| c.id.clone()).collect()),
            space_reclaimed: Some(0),
        })
    }

    async fn exec_create(&self, id: &str, config: ExecConfig) -> ApiResult<IdResponse> {
        let c = self.find(id)?;
        if c.status() != Status::Running {
            return Err(ApiError::Conflict(format!(
                "container {} is not running",
                c.id
            )));
        }
        let exec = Arc::new(Exec {
            id: random_id(),
            ctr: c,
            config,
            running: Mutex::new(false),
            exit_code: Mutex::new(None),
        });
        self.st.lock().execs.insert(exec.id.clone(), exec.clone());
        Ok(IdResponse {
            id: exec.id.clone(),
        })
    }

    async fn exec_start(
        &self,
        exec_id: &str,
        config: ExecStartConfig,
    ) -> ApiResult<Option<AttachStreams>> {
        let exec = self
            .st
            .lock()
            .execs
            .get(exec_id)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("No such exec instance: {exec_id}")))?;
        {
            let mut r = exec.running.lock();
            if *r || exec.exit_code.lock().is_some() {
                return Err(ApiError::Conflict(format!(
                    "exec {exec_id} has already been started"
                )));
            }
            *r = true;
        }
        let tty = exec.config.tty.unwrap_or(false);
        let (out_tx, out_rx) = mpsc::unbounded_channel::<OutputChunk>();
        let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
        let want_stdin = exec.config.attach_stdin.unwrap_or(false);
        let signal = exec.ctr.proc.lock().signal.subscribe();
        let argv = exec.config.cmd.clone().unwrap_or_default();
        let e2 = exec.clone();
        tokio::spawn(async move {
            let code = Fake::run(
                argv,
                tty,
                want_stdin.then_some(stdin_rx),
                signal,
                move |stream, data| {
                    let _ = out_tx.send(OutputChunk { stream, data });
                },
            )
            .await;
            *e2.exit_code.lock() = Some(code);
            *e2.running.lock() = false;
        });
        if config.detach.unwrap_or(false) {
            return Ok(None);
        }
        Ok(Some(AttachStreams {
            tty,
            stdin: want_stdin
                .then(|| Box::new(StdinWriter(stdin_tx)) as Box<dyn AsyncWrite + Send + Unpin>),
            output: UnboundedReceiverStream::new(out_rx).boxed(),
        }))
    }

    async fn exec_resize(&self, exec_id: &str, _h: u16, _w: u16) -> ApiResult<()> {
        self.st
            .lock()
            .execs
            .get(exec_id)
            .map(|_| ())
            .ok_or_else(|| ApiError::NotFound(format!("No such exec instance: {exec_id}")))
    }

    async fn exec_inspect(&self, exec_id: &str) -> ApiResult<ExecInspectResponse> {
        let exec = self
            .st
            .lock()
            .execs
            .get(exec_id)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("No such exec instance: {exec_id}")))?;
        let argv = exec.config.cmd.clone().unwrap_or_default();
        Ok(ExecInspectResponse {
            can_remove: Some(false),
            id: Some(exec.id.clone()),
            running: Some({
                let r = *exec.running.lock();
                r
            }),
            exit_code: {
                let code = *exec.exit_code.lock();
                code
            },
            process_config: Some(ProcessConfig {
                tty: exec.config.tty,
                entrypoint: argv.first().cloned(),
                arguments: Some(argv.get(1..).unwrap_or_default().to_vec()),
                ..Default::default()
            }),
            open_stdin: exec.config.attach_stdin,
            open_stdout: exec.config.attach_stdout,
            open_stderr: exec.config.attach_stderr,
            container_id: Some(exec.ctr.id.clone()),
            pid: Some(4343),
            ..Default::default()
        })
    }
}

#[async_trait]
impl ImageBackend for Fake {
    async fn image_import(
        &self,
        opts: ImportOptions,
        mut body: BoxStream<std::io::Result<Bytes>>,
    ) -> ApiResult<String> {
        let mut h = sha2::Sha256::new();
        let mut size = 0i64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::InvalidArgument(format!("reading the tarball: {e}")))?;
            size += chunk.len() as i64;
            h.update(&chunk);
        }
        if size == 0 {
            return Err(ApiError::InvalidArgument("the tarball is empty".into()));
        }
        let id = format!("sha256:{}", hex::encode(h.finalize()));
        let mut tags = vec![];
        if let Some(repo) = opts.repo {
            tags.push(match opts.tag {
                Some(t) => format!("{repo}:{t}"),
                None => normalize_image(&repo),
            });
        }
        let mut st = self.st.lock();
        for img in st.images.iter_mut() {
            img.tags.retain(|t| !tags.contains(t));
        }
        st.images.push(Img {
            id: id.clone(),
            tags,
            size,
            created: chrono::Utc::now().timestamp(),
        });
        drop(st);
        self.event(EventMessageTypeEnum::IMAGE, "import", &id, &[]);
        Ok(id)
    }

    async fn image_list(
        &self,
        _all: bool,
        _filters: Filters,
        _digests: bool,
    ) -> ApiResult<Vec<ImageSummary>> {
        let used: HashSet<String> = self
            .st
            .lock()
            .containers
            .iter()
            .map(|c| c.image_id.clone())
            .collect();
        Ok(self
            .st
            .lock()
            .images
            .iter()
            .map(|i| ImageSummary {
                id: i.id.clone(),
                parent_id: String::new(),
                repo_tags: i.tags.clone(),
                repo_digests: vec![],
                created: i.created,
                size: i.size,
                shared_size: -1,
                labels: HashMap::new(),
                containers: used.contains(&i.id) as i64,
                manifests: None,
                descriptor: None,
            })
            .collect())
    }

    async fn image_inspect(&self, name: &str) -> ApiResult<ImageInspect> {
        let i = self.find_image(name)?;
        Ok(ImageInspect {
            id: Some(i.id),
            repo_tags: Some(i.tags),
            repo_digests: Some(vec![]),
            created: Some("2023-11-14T22:13:20Z".into()),
            config: Some(ImageConfig {
                cmd: Some(vec!["sh".into()]),
                env: Some(vec!["PATH=/bin".into()]),
                ..Default::default()
            }),
            architecture: Some("amd64".into()),
            os: Some("linux".into()),
            size: Some(i.size),
            root_fs: Some(ImageInspectRootFs {
                typ: "layers".into(),
                layers: Some(vec![]),
            }),
            ..Default::default()
        })
    }

    async fn image_history(&self, name: &str) -> ApiResult<Vec<ImageHistoryResponseItem>> {
        let i = self.find_image(name)?;
        Ok(vec![ImageHistoryResponseItem {
            id: i.id,
            created: i.created,
            created_by: "imported".into(),
            tags: i.tags,
            size: i.size,
            comment: String::new(),
        }])
    }

    async fn image_tag(&self, name: &str, repo: &str, tag: Option<&str>) -> ApiResult<()> {
        let i = self.find_image(name)?;
        let new = format!("{repo}:{}", tag.unwrap_or("latest"));
        let mut st = self.st.lock();
        for img in st.images.iter_mut() {
            img.tags.retain(|t| *t != new);
            if img.id == i.id {
                img.tags.push(new.clone());
            }
        }
        Ok(())
    }

    async fn image_remove(
        &self,
        name: &str,
        force: bool,
        _noprune: bool,
    ) -> ApiResult<Vec<ImageDeleteResponseItem>> {
        let i = self.find_image(name)?;
        if !force && self.st.lock().containers.iter().any(|c| c.image_id == i.id) {
            return Err(ApiError::Conflict(format!("conflict: unable to remove repository reference \"{name}\" - container is using its referenced image")));
        }
        let norm = normalize_image(name);
        let mut st = self.st.lock();
        let img = st.images.iter_mut().find(|x| x.id == i.id).unwrap();
        let mut out = vec![];
        if img.tags.len() > 1 && img.tags.contains(&norm) {
            img.tags.retain(|t| *t != norm);
            out.push(ImageDeleteResponseItem {
                untagged: Some(norm),
                deleted: None,
            });
        } else {
            for t in &img.tags {
                out.push(ImageDeleteResponseItem {
                    untagged: Some(t.clone()),
                    deleted: None,
                });
            }
            out.push(ImageDeleteResponseItem {
                untagged: None,
                deleted: Some(i.id.clone()),
            });
            st.images.retain(|x| x.id != i.id);
        }
        Ok(out)
    }

    async fn image_prune(&self, _filters: Filters) -> ApiResult<ImagePruneResponse> {
        Ok(ImagePruneResponse {
            images_deleted: Some(vec![]),
            space_reclaimed: Some(0),
        })
    }

    async fn image_pull(&self, opts: PullOptions) -> ApiResult<BoxStream<JsonMessage>> {
        self.reg.pulls.lock().push(opts.clone());
        let (repo, tag) = split_ref(&opts.reference);
        let known = matches!(
            repo.as_str(),
            "alpine" | "nginx" | "gated/app" | "broken/app"
        ) || repo.starts_with("localhost:5999/")
            || repo.starts_with("private.example:5000/");
        if !known {
            return Err(ApiError::NotFound(format!(
                "pull access denied for {repo}, repository does not exist or may require 'docker login': denied: requested access to the resource is denied"
            )));
        }
        if repo.starts_with("private.example:5000/") && !auth_ok(&opts.auth) {
            return Err(ApiError::Unauthorized(format!(
                "Head \"https://private.example:5000/v2/{}/manifests/{tag}\": unauthorized: authentication required",
                repo.split_once('/').unwrap().1
            )));
        }
        if tag == "nosuchtag" {
            return Err(ApiError::NotFound(format!(
                "manifest for {repo}:{tag} not found: manifest unknown: manifest unknown"
            )));
        }
        if let Some(p) = &opts.platform {
            if p != "linux/amd64" && p != "linux/arm64" {
                return Err(ApiError::NotFound(format!(
                    "no matching manifest for {p} in the manifest list entries"
                )));
            }
        }
        let by_digest = tag.starts_with("sha256:");
        let local = if by_digest {
            format!("{repo}@{tag}")
        } else {
            format!("{repo}:{tag}")
        };
        let id = format!("sha256:{}", sha(&format!("remote:{repo}")));
        let digest = format!("sha256:{}", sha(&format!("manifest:{repo}")));
        let present = self
            .st
            .lock()
            .images
            .iter()
            .any(|i| i.tags.contains(&local));
        let fake = self.clone();
        let reg = self.reg.clone();
        let path = match repo.split_once('/') {
            Some((d, p)) if registry_of(&repo) == d => p.to_string(),
            _ if repo.contains('/') => repo.clone(),
            _ => format!("library/{repo}"),
        };
        Ok(spawn_stream(move |tx| async move {
            let send = |m: JsonMessage| {
                let _ = tx.send(m);
            };
            send(JsonMessage::layer(
                tag.clone(),
                format!("Pulling from {path}"),
            ));
            if repo.starts_with("gated/") {
                let _ = reg.gate.acquire().await.map(|p| p.forget());
            }
            if !present {
                let layers = layers_of(&repo);
                for (l, _) in &layers {
                    send(JsonMessage::layer(l.clone(), "Pulling fs layer"));
                }
                for (i, (l, size)) in layers.iter().enumerate() {
                    send(progress(l, "Downloading", size / 3, *size));
                    if repo == "broken/app" {
                        send(JsonMessage::error(format!(
                            "failed to register layer: digest mismatch: expected sha256:{}, got sha256:{}",
                            sha(l),
                            sha(&format!("{l}x"))
                        )));
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    send(progress(l, "Downloading", *size, *size));
                    send(JsonMessage::layer(l.clone(), "Verifying Checksum"));
                    send(JsonMessage::layer(l.clone(), "Download complete"));
                    send(progress(l, "Extracting", *size, *size));
                    send(JsonMessage::layer(l.clone(), "Pull complete"));
                    let _ = i;
                }
                let mut st = fake.st.lock();
                for img in st.images.iter_mut() {
                    img.tags.retain(|t| *t != local);
                }
                match st.images.iter_mut().find(|i| i.id == id) {
                    Some(img) => img.tags.push(local.clone()),
                    None => st.images.push(Img {
                        id: id.clone(),
                        tags: vec![local.clone()],
                        size: 4_500,
                        created: 1_700_000_000,
                    }),
                }
            }
            send(JsonMessage::status(format!("Digest: {digest}")));
            send(JsonMessage::status(if present {
                format!("Status: Image is up to date for {local}")
            } else {
                format!("Status: Downloaded newer image for {local}")
            }));
            fake.event(
                EventMessageTypeEnum::IMAGE,
                "pull",
                &local,
                &[("name", &local)],
            );
        }))
    }

    async fn image_push(&self, opts: PushOptions) -> ApiResult<BoxStream<JsonMessage>> {
        self.reg.pushes.lock().push(opts.clone());
        let (repo, name_tag) = split_ref(&opts.name);
        let has_tag = opts.name.contains('@')
            || opts
                .name
                .rsplit('/')
                .next()
                .is_some_and(|l| l.contains(':'));
        let tags: Vec<String> = match (&opts.tag, has_tag) {
            (Some(t), _) => vec![t.clone()],
            (None, true) => vec![name_tag],
            (None, false) => {
                let prefix = format!("{repo}:");
                let mut v: Vec<String> = self
                    .st
                    .lock()
                    .images
                    .iter()
                    .flat_map(|i| i.tags.clone())
                    .filter_map(|t| t.strip_prefix(&prefix).map(str::to_string))
                    .collect();
                v.sort();
                v
            }
        };
        let first = tags.first().cloned().unwrap_or_else(|| "latest".into());
        if tags.is_empty() || self.find_image(&format!("{repo}:{first}")).is_err() {
            return Err(ApiError::NotFound(format!(
                "An image does not exist locally with the tag: {repo}"
            )));
        }
        let needs_auth = repo.starts_with("private.example:5000/");
        let allowed = !needs_auth || auth_ok(&opts.auth);
        let fake = self.clone();
        Ok(spawn_stream(move |tx| async move {
            let send = |m: JsonMessage| {
                let _ = tx.send(m);
            };
            send(JsonMessage::status(format!(
                "The push refers to repository [{}]",
                qualified(&repo)
            )));
            let layers = layers_of(&repo);
            for (l, _) in &layers {
                send(JsonMessage::layer(l.clone(), "Preparing"));
            }
            if !allowed {
                send(JsonMessage::error("unauthorized: authentication required"));
                return;
            }
            for (l, size) in &layers {
                send(progress(l, "Pushing", size / 2, *size));
                tokio::time::sleep(Duration::from_millis(5)).await;
                send(JsonMessage::layer(l.clone(), "Pushed"));
            }
            for t in &tags {
                let digest = format!("sha256:{}", sha(&format!("manifest:{repo}:{t}")));
                send(JsonMessage::status(format!(
                    "{t}: digest: {digest} size: 527"
                )));
                send(JsonMessage {
                    progress_detail: Some(JsonProgress::default()),
                    aux: Some(serde_json::json!({"Tag": t, "Digest": digest, "Size": 527})),
                    ..Default::default()
                });
                let name = format!("{repo}:{t}");
                fake.event(
                    EventMessageTypeEnum::IMAGE,
                    "push",
                    &name,
                    &[("name", &name)],
                );
            }
        }))
    }

    async fn image_save(&self, names: Vec<String>) -> ApiResult<BoxStream<std::io::Result<Bytes>>> {
        let mut imgs = vec![];
        for n in &names {
            imgs.push((normalize_image(n), self.find_image(n)?));
        }
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, path, data).unwrap();
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        let mut manifest = vec![];
        let mut repositories = serde_json::Map::new();
        for (tag, img) in &imgs {
            let config = serde_json::json!({"fake_id": img.id, "size": img.size}).to_string();
            let cfg_hex = sha(&config);
            add(&format!("blobs/sha256/{cfg_hex}"), config.as_bytes());
            let layer = format!("layer of {}", img.id);
            let layer_hex = sha(&layer);
            add(&format!("blobs/sha256/{layer_hex}"), layer.as_bytes());
            let tags: Vec<&String> = if img.tags.contains(tag) {
                vec![tag]
            } else {
                vec![]
            };
            manifest.push(serde_json::json!({
                "Config": format!("blobs/sha256/{cfg_hex}"),
                "RepoTags": tags,
                "Layers": [format!("blobs/sha256/{layer_hex}")],
            }));
            if let Some((r, t)) = tag.rsplit_once(':') {
                repositories.insert(r.into(), serde_json::json!({ t: layer_hex }));
            }
        }
        add("index.json", br#"{"schemaVersion":2,"manifests":[]}"#);
        add(
            "manifest.json",
            serde_json::Value::Array(manifest).to_string().as_bytes(),
        );
        add(
            "repositories",
            serde_json::Value::Object(repositories)
                .to_string()
                .as_bytes(),
        );
        let data = Bytes::from(b.into_inner().unwrap());
        for n in &names {
            self.event(EventMessageTypeEnum::IMAGE, "save", n, &[("name", n)]);
        }
        // Several chunks, as a real writer produces them.
        let chunks: Vec<std::io::Result<Bytes>> = data
            .chunks(1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Ok(futures::stream::iter(chunks).boxed())
    }

    async fn image_load(
        &self,
        mut body: BoxStream<std::io::Result<Bytes>>,
        quiet: bool,
    ) -> ApiResult<BoxStream<JsonMessage>> {
        let mut data = vec![];
        while let Some(chunk) = body.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::InvalidArgument(format!("reading the archive: {e}")))?;
            data.extend_from_slice(&chunk);
        }
        self.reg.load_bodies.lock().push(data.len());
        let mut files: HashMap<String, Vec<u8>> = HashMap::new();
        let parsed = (|| -> std::io::Result<()> {
            let mut ar = tar::Archive::new(&data[..]);
            for e in ar.entries()? {
                let mut e = e?;
                let path = e.path()?.to_string_lossy().to_string();
                let mut v = vec![];
                std::io::Read::read_to_end(&mut e, &mut v)?;
                files.insert(path, v);
            }
            Ok(())
        })();
        let fail = |msg: String| -> ApiResult<BoxStream<JsonMessage>> {
            Ok(futures::stream::iter([JsonMessage::error(msg)]).boxed())
        };
        if let Err(e) = parsed {
            return fail(format!("failed to read the archive: {e}"));
        }
        let Some(manifest) = files.get("manifest.json") else {
            return fail("invalid archive: no manifest.json or index.json found".into());
        };
        let Ok(manifest) = serde_json::from_slice::<Vec<serde_json::Value>>(manifest) else {
            return fail("invalid archive: manifest.json is not valid JSON".into());
        };
        let mut out = vec![];
        for m in manifest {
            let cfg_path = m["Config"].as_str().unwrap_or_default();
            let Some(cfg) = files.get(cfg_path) else {
                out.push(JsonMessage::error(format!(
                    "invalid archive: {cfg_path} is missing"
                )));
                break;
            };
            let cfg: serde_json::Value = serde_json::from_slice(cfg).unwrap_or_default();
            let id = cfg["fake_id"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| {
                    format!(
                        "sha256:{}",
                        hex::encode(sha2::Sha256::digest(cfg.to_string()))
                    )
                });
            if !quiet {
                for l in m["Layers"].as_array().into_iter().flatten() {
                    let hexid = l
                        .as_str()
                        .unwrap_or_default()
                        .rsplit('/')
                        .next()
                        .unwrap_or_default();
                    let total = files
                        .get(l.as_str().unwrap_or_default())
                        .map_or(0, |f| f.len() as i64);
                    out.push(progress(
                        &hexid[..12.min(hexid.len())],
                        "Loading layer",
                        total,
                        total,
                    ));
                }
            }
            let tags: Vec<String> = m["RepoTags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect();
            {
                let mut st = self.st.lock();
                for img in st.images.iter_mut() {
                    img.tags.retain(|t| !tags.contains(t));
                }
                match st.images.iter_mut().find(|i| i.id == id) {
                    Some(img) => img.tags.extend(tags.iter().cloned()),
                    None => st.images.push(Img {
                        id: id.clone(),
                        tags: tags.clone(),
                        size: cfg["size"].as_i64().unwrap_or(0),
                        created: 1_700_000_000,
                    }),
                }
            }
            if tags.is_empty() {
                out.push(JsonMessage {
                    stream: Some(format!("Loaded image ID: {id}\n")),
                    ..Default::default()
                });
                self.event(EventMessageTypeEnum::IMAGE, "load", &id, &[("name", &id)]);
            }
            for t in tags {
                out.push(JsonMessage {
                    stream: Some(format!("Loaded image: {t}\n")),
                    ..Default::default()
                });
                self.event(EventMessageTypeEnum::IMAGE, "load", &id, &[("name", &t)]);
            }
        }
        Ok(futures::stream::iter(out).boxed())
    }

    async fn registry_login(&self, auth: RegistryAuth) -> ApiResult<AuthResponse> {
        self.reg.logins.lock().push(auth.clone());
        let server = auth
            .serveraddress
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "https://index.docker.io/v1/".into());
        let a = Some(auth.clone());
        if auth_ok(&a) {
            let token = (auth.username.as_deref() == Some("bob") || auth.identitytoken.is_some())
                .then(|| "tok-bob".to_string());
            return Ok(AuthResponse {
                status: "Login Succeeded".into(),
                identity_token: token,
            });
        }
        if auth.username.as_deref() == Some("bob") && auth.password.as_deref() == Some("pw") {
            return Ok(AuthResponse {
                status: "Login Succeeded".into(),
                identity_token: Some("tok-bob".into()),
            });
        }
        let host = server
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .trim_end_matches("/v1")
            .to_string();
        Err(ApiError::Unauthorized(format!(
            "Get \"https://{host}/v2/\": unauthorized: incorrect username or password"
        )))
    }
}

#[async_trait]
impl VolumeBackend for Fake {
    async fn volume_create(&self, req: VolumeCreateRequest) -> ApiResult<Volume> {
        let name = req.name.filter(|n| !n.is_empty()).unwrap_or_else(random_id);
        let mut st = self.st.lock();
        let v = st.volumes.entry(name.clone()).or_insert_with(|| Volume {
            name: name.clone(),
            driver: "local".into(),
            mountpoint: format!("/var/lib/shibafu/volumes/{name}/_data"),
            created_at: Some(now_rfc3339()),
            labels: req.labels.unwrap_or_default(),
            scope: Some(VolumeScopeEnum::LOCAL),
            options: req.driver_opts.unwrap_or_default(),
            ..Default::default()
        });
        Ok(v.clone())
    }

    async fn volume_list(&self, _filters: Filters) -> ApiResult<VolumeListResponse> {
        Ok(VolumeListResponse {
            volumes: Some(self.st.lock().volumes.values().cloned().collect()),
            warnings: Some(vec![]),
        })
    }

    async fn volume_inspect(&self, name: &str) -> ApiResult<Volume> {
        self.st
            .lock()
            .volumes
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("get {name}: no such volume")))
    }

    async fn volume_remove(&self, name: &str, _force: bool) -> ApiResult<()> {
        self.st
            .lock()
            .volumes
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| ApiError::NotFound(format!("get {name}: no such volume")))
    }

    async fn volume_prune(&self, _filters: Filters) -> ApiResult<VolumePruneResponse> {
        let names: Vec<String> = std::mem::take(&mut self.st.lock().volumes)
            .into_keys()
            .collect();
        Ok(VolumePruneResponse {
            volumes_deleted: Some(names),
            space_reclaimed: Some(0),
        })
    }
}

#[async_trait]
impl SystemBackend for Fake {
    async fn version(&self) -> ApiResult<SystemVersion> {
        Ok(SystemVersion {
            platform: Some(SystemVersionPlatform {
                name: "shibafu".into(),
            }),
            components: Some(vec![SystemVersionComponents {
                name: "Engine".into(),
                version: "0.1.0".into(),
                details: None,
            }]),
            version: Some("0.1.0".into()),
            git_commit: Some("fake".into()),
            go_version: Some("rust".into()),
            os: Some("linux".into()),
            arch: Some("amd64".into()),
            kernel_version: Some("6.18".into()),
            experimental: Some(false),
            build_time: Some("2026-11-23T00:00:00Z".into()),
            ..Default::default()
        })
    }

    async fn info(&self) -> ApiResult<SystemInfo> {
        let st = self.st.lock();
        Ok(SystemInfo {
            id: Some("fake".into()),
            containers: Some(st.containers.len() as i64),
            containers_running: Some(
                st.containers
                    .iter()
                    .filter(|c| c.status() == Status::Running)
                    .count() as i64,
            ),
            containers_paused: Some(0),
            containers_stopped: Some(
                st.containers
                    .iter()
                    .filter(|c| c.status() == Status::Exited)
                    .count() as i64,
            ),
            images: Some(st.images.len() as i64),
            driver: Some("overlay2".into()),
            name: Some("fakehost".into()),
            server_version: Some("0.1.0".into()),
            os_type: Some("linux".into()),
            operating_system: Some("Debian".into()),
            architecture: Some("x86_64".into()),
            ncpu: Some(2),
            mem_total: Some(1 << 32),
            docker_root_dir: Some("/var/lib/shibafu".into()),
            ..Default::default()
        })
    }

    async fn system_df(&self) -> ApiResult<SystemDataUsageResponse> {
        Ok(SystemDataUsageResponse::default())
    }

    async fn events(
        &self,
        since: Option<i64>,
        until: Option<i64>,
        filters: Filters,
    ) -> ApiResult<BoxStream<EventMessage>> {
        let matches = move |e: &EventMessage| {
            filters.iter().all(|(k, vals)| match k.as_str() {
                "type" => vals
                    .iter()
                    .any(|v| e.typ.map(|t| t.to_string()) == Some(v.clone())),
                "event" | "action" => vals.iter().any(|v| e.action.as_deref() == Some(v)),
                _ => true,
            })
        };
        let live = BroadcastStream::new(self.ev.subscribe())
            .filter_map(|r| futures::future::ready(r.ok()));
        let past: Vec<_> = self
            .st
            .lock()
            .events
            .iter()
            .filter(|e| {
                since.is_some_and(|s| e.time.unwrap() >= s)
                    && until.is_none_or(|u| e.time.unwrap() <= u)
            })
            .cloned()
            .collect();
        let m2 = matches.clone();
        let past = futures::stream::iter(past).filter(move |e| futures::future::ready(m2(e)));
        if until.is_some() {
            return Ok(past.boxed());
        }
        Ok(past
            .chain(live.filter(move |e| futures::future::ready(matches(e))))
            .boxed())
    }
}

/// No services, and every trace names an unknown network.
pub struct NoDns;

#[async_trait]
impl DnsBackend for NoDns {
    async fn service_list(&self, _n: Option<String>) -> ApiResult<Vec<ServiceView>> {
        Ok(vec![])
    }
    async fn service_inspect(&self, name: &str) -> ApiResult<Vec<ServiceView>> {
        Err(ApiError::NotFound(format!("No such service: {name}")))
    }
    async fn dns_trace(&self, q: DnsTraceQuery) -> ApiResult<serde_json::Value> {
        Err(ApiError::NotFound(format!(
            "network {:?} not found",
            q.network
        )))
    }
}

/// The HTTP tests exercise no network routes: every network is unknown.
pub struct NoNetworks;

#[async_trait]
impl NetworkBackend for NoNetworks {
    async fn network_list(&self, _f: Filters) -> ApiResult<Vec<NetworkView>> {
        Ok(vec![])
    }
    async fn network_inspect(&self, id: &str) -> ApiResult<NetworkView> {
        Err(ApiError::NotFound(format!("network {id} not found")))
    }
    async fn network_create(&self, r: NetworkCreateRequest) -> ApiResult<NetworkCreateResponse> {
        Err(ApiError::InvalidArgument(format!(
            "cannot create {}",
            r.name
        )))
    }
    async fn network_remove(&self, id: &str) -> ApiResult<()> {
        Err(ApiError::NotFound(format!("network {id} not found")))
    }
    async fn network_connect(&self, id: &str, _r: NetworkConnectRequest) -> ApiResult<()> {
        Err(ApiError::NotFound(format!("network {id} not found")))
    }
    async fn network_disconnect(&self, id: &str, _r: NetworkDisconnectRequest) -> ApiResult<()> {
        Err(ApiError::NotFound(format!("network {id} not found")))
    }
    async fn network_prune(&self, _f: Filters) -> ApiResult<NetworkPruneResponse> {
        Ok(NetworkPruneResponse {
            networks_deleted: Some(vec![]),
        })
    }
    async fn policy_create(&self, p: NetworkPolicy) -> ApiResult<NetworkPolicy> {
        Err(ApiError::NotFound(format!(
            "network {} not found",
            p.network
        )))
    }
    async fn policy_list(&self, _n: Option<String>) -> ApiResult<Vec<NetworkPolicy>> {
        Ok(vec![])
    }
    async fn policy_inspect(&self, n: &str) -> ApiResult<NetworkPolicy> {
        Err(ApiError::NotFound(format!("network policy {n} not found")))
    }
    async fn policy_remove(&self, n: &str) -> ApiResult<()> {
        Err(ApiError::NotFound(format!("network policy {n} not found")))
    }
    async fn network_reload(&self) -> ApiResult<NetworkReloadReport> {
        Ok(NetworkReloadReport::default())
    }
}
