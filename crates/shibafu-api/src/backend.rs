//! The contract between the HTTP layer (`crate::server`) and the engine.
//!
//! The HTTP layer parses Docker Engine API requests, calls these traits and
//! renders their answers; it knows nothing of containers, images or state.
//! The engine (`shibafu-engine`) implements [`ContainerBackend`],
//! [`VolumeBackend`] and [`SystemBackend`]; the image store (`shibafu-image`)
//! implements [`ImageBackend`]. Payloads are the Docker API's own models
//! (`bollard_stubs::models`), so what a backend returns is what clients read.
//!
//! Name/ID resolution (full ID, unique ID prefix, name with or without the
//! leading `/`) is the backend's job: every `id_or_name` argument accepts all.

use std::collections::HashMap;
use std::pin::Pin;

use async_trait::async_trait;
use bollard_stubs::models::*;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::Stream;
use tokio::io::AsyncWrite;

/// A boxed, sendable stream.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = T> + Send + 'static>>;

/// Errors every backend returns. The HTTP layer maps them to Docker's status
/// codes and its `{"message": ...}` body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Not found (404). The message must name the missing object, e.g.
    /// "No such container: web" or "No such image: busybox:latest";
    /// docker-py needs "No such image" to raise `ImageNotFound`.
    #[error("{0}")]
    NotFound(String),
    /// 409: name in use, container running, image in use, ...
    #[error("{0}")]
    Conflict(String),
    /// 400: a value that can't be accepted ("invalid memory value 12q").
    #[error("{0}")]
    InvalidArgument(String),
    /// 304: already started / already stopped. No body.
    #[error("not modified")]
    NotModified,
    /// 401: a registry refused the credentials (`POST /auth`, pull, push).
    #[error("{0}")]
    Unauthorized(String),
    /// 500: the daemon failed. Message says what failed and why.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::NotFound(_) => 404,
            ApiError::Conflict(_) => 409,
            ApiError::InvalidArgument(_) => 400,
            ApiError::NotModified => 304,
            ApiError::Unauthorized(_) => 401,
            ApiError::Internal(_) => 500,
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Docker `filters` query parameter, normalised: both
/// `{"status":{"running":true}}` and `{"status":["running"]}` become
/// `{"status": ["running"]}`.
pub type Filters = HashMap<String, Vec<String>>;

/// Which output stream a chunk came from (values are Docker's frame header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StdStream {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
}

/// One chunk of container output.
#[derive(Debug, Clone)]
pub struct OutputChunk {
    pub stream: StdStream,
    pub data: Bytes,
}

/// One log line read back from the json-file log.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub stream: StdStream,
    /// RFC 3339 with nanoseconds, as stored ("2026-11-23T10:00:00.123456789Z").
    pub time: String,
    /// The line including its trailing newline (partial lines have none).
    pub data: Bytes,
}

#[derive(Debug, Clone, Default)]
pub struct LogsOptions {
    pub follow: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// Unix seconds (may be fractional); entries before it are skipped.
    pub since: Option<f64>,
    pub until: Option<f64>,
    pub timestamps: bool,
    /// `None` = all.
    pub tail: Option<usize>,
}

/// What the engine hands back for `logs`.
pub struct LogsStream {
    /// With a tty the HTTP layer sends raw bytes, otherwise 8-byte framed.
    pub tty: bool,
    /// Ends when the log is exhausted (or, with `follow`, when the container
    /// stops and the log is drained). Timestamps are NOT yet prefixed: the
    /// HTTP layer adds `time + " "` when `timestamps` was asked.
    pub entries: BoxStream<LogEntry>,
}

#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    pub stream: bool,
    pub logs: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub detach_keys: Option<String>,
}

/// Live stdio of a container or exec process.
pub struct AttachStreams {
    pub tty: bool,
    /// Where client stdin goes. Shutting it down is the client's EOF (closes
    /// the process's stdin when the container has `StdinOnce`, or for execs).
    /// `None` when stdin was not asked for or the process has none.
    pub stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Output until the process exits (then the stream ends).
    pub output: BoxStream<OutputChunk>,
}

/// `wait?condition=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitCondition {
    #[default]
    NotRunning,
    NextExit,
    Removed,
}

/// Result of stat on a path in a container (`X-Docker-Container-Path-Stat`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    /// Go `os.FileMode` bits (dir = 1<<31, symlink = 1<<27) | permission bits.
    pub mode: u32,
    /// RFC 3339.
    pub mtime: String,
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

/// Options of `POST /images/create?fromSrc=-` (import).
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// `repo` parameter, may hold a tag (`name:tag`).
    pub repo: Option<String>,
    pub tag: Option<String>,
    /// Dockerfile-style `changes`: `CMD ["sh"]`, `ENV A=b`, `WORKDIR /x`,
    /// `ENTRYPOINT ...`, `EXPOSE 80`, `USER u`, `LABEL k=v`, `VOLUME /v`,
    /// `STOPSIGNAL SIGINT`.
    pub changes: Vec<String>,
    pub message: Option<String>,
    pub platform: Option<String>,
}

/// Credentials a client sent: the decoded `X-Registry-Auth` header (URL-safe
/// base64 JSON) or the `POST /auth` body. Docker's field names.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegistryAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// base64 of `user:password` (the CLI's config-file form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serveraddress: Option<String>,
    /// OAuth2 refresh token from a previous login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identitytoken: Option<String>,
    /// A bearer token to send to the registry as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registrytoken: Option<String>,
}

impl RegistryAuth {
    /// Decodes an `X-Registry-Auth` value (URL-safe base64, padded or not,
    /// of JSON). Docker ignores bad values for pulls: `None` then.
    pub fn from_header(value: &str) -> Option<RegistryAuth> {
        let v = value.trim();
        if v.is_empty() {
            return None;
        }
        let bytes = base64_decode(v)?;
        let a: RegistryAuth = serde_json::from_slice(&bytes).ok()?;
        (a != RegistryAuth::default()).then_some(a)
    }
}

/// Lenient base64 (standard or URL-safe alphabet, padding optional, white
/// space ignored): what Docker accepts in `X-Registry-Auth` and `auth`.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::{alphabet, Engine as _};
    const CFG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CFG);
    const URL: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CFG);
    let clean: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    URL.decode(&clean).or_else(|_| STD.decode(&clean)).ok()
}

/// One line of Docker's JSON message stream (pull, push, load, build):
/// `{"status","id","progressDetail","progress","stream","aux","errorDetail","error"}`.
/// Absent fields are omitted, as dockerd does.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JsonMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `{}` for a status line about a layer, `{current,total}` for progress.
    #[serde(
        rename = "progressDetail",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub progress_detail: Option<JsonProgress>,
    /// The rendered bar (`[=====>    ] 1.2MB/3.4MB`), for old clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aux: Option<serde_json::Value>,
    #[serde(
        rename = "errorDetail",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub error_detail: Option<JsonError>,
    /// Deprecated duplicate of `errorDetail.message`; old clients read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JsonProgress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JsonError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    #[serde(default)]
    pub message: String,
}

impl JsonMessage {
    /// `{"status": s}`.
    pub fn status(s: impl Into<String>) -> JsonMessage {
        JsonMessage {
            status: Some(s.into()),
            ..Default::default()
        }
    }

    /// `{"status": s, "progressDetail": {}, "id": id}`.
    pub fn layer(id: impl Into<String>, s: impl Into<String>) -> JsonMessage {
        JsonMessage {
            status: Some(s.into()),
            id: Some(id.into()),
            progress_detail: Some(JsonProgress::default()),
            ..Default::default()
        }
    }

    /// An in-stream error (after the first byte was sent).
    pub fn error(message: impl Into<String>) -> JsonMessage {
        let message = message.into();
        JsonMessage {
            error_detail: Some(JsonError {
                code: None,
                message: message.clone(),
            }),
            error: Some(message),
            ..Default::default()
        }
    }
}

/// Options of a pull (`POST /images/create?fromImage=&tag=&platform=`).
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// The reference as the client gave it, tag or digest included
    /// (`busybox`, `docker.io/library/busybox:1.36`, `localhost:5000/a@sha256:..`).
    pub reference: String,
    /// `os/arch[/variant]`; the host's when None.
    pub platform: Option<String>,
    pub auth: Option<RegistryAuth>,
    /// `pull --all-tags`: the request had no `tag` and `reference` names
    /// none: every tag of the repository is pulled.
    pub all_tags: bool,
}

/// Options of a push (`POST /images/{name}/push?tag=`).
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Repository (familiar or qualified), maybe with a tag.
    pub name: String,
    /// `tag` query parameter; when absent and `name` has no tag, every tag
    /// of the repository is pushed (as dockerd does).
    pub tag: Option<String>,
    pub auth: Option<RegistryAuth>,
}

#[async_trait]
pub trait ContainerBackend: Send + Sync + 'static {
    /// `POST /containers/create?name=`. 404 "No such image: X" when the image
    /// is missing (the CLI then tries to pull), 409 on a name in use, 400 on
    /// bad values. Validates everything before it records anything.
    async fn container_create(
        &self,
        name: Option<String>,
        body: ContainerCreateBody,
    ) -> ApiResult<ContainerCreateResponse>;
    async fn container_list(
        &self,
        all: bool,
        limit: Option<usize>,
        size: bool,
        filters: Filters,
    ) -> ApiResult<Vec<ContainerSummary>>;
    async fn container_inspect(
        &self,
        id_or_name: &str,
        size: bool,
    ) -> ApiResult<ContainerInspectResponse>;
    /// `NotModified` when already running.
    async fn container_start(&self, id_or_name: &str) -> ApiResult<()>;
    /// `NotModified` when not running. `timeout` in seconds (-1 = wait forever).
    async fn container_stop(
        &self,
        id_or_name: &str,
        signal: Option<String>,
        timeout: Option<i64>,
    ) -> ApiResult<()>;
    async fn container_restart(
        &self,
        id_or_name: &str,
        signal: Option<String>,
        timeout: Option<i64>,
    ) -> ApiResult<()>;
    /// Conflict when not running. Signal by name ("SIGTERM", "TERM", "KILL")
    /// or number; default SIGKILL.
    async fn container_kill(&self, id_or_name: &str, signal: Option<String>) -> ApiResult<()>;
    async fn container_pause(&self, id_or_name: &str) -> ApiResult<()>;
    async fn container_unpause(&self, id_or_name: &str) -> ApiResult<()>;
    /// Conflict when running and not `force`.
    async fn container_remove(&self, id_or_name: &str, force: bool, volumes: bool)
        -> ApiResult<()>;
    async fn container_rename(&self, id_or_name: &str, new_name: &str) -> ApiResult<()>;
    async fn container_update(
        &self,
        id_or_name: &str,
        body: ContainerUpdateBody,
    ) -> ApiResult<ContainerUpdateResponse>;
    /// The outer result fails at once (unknown container); the inner future
    /// resolves to the exit code when the condition is met. The HTTP layer
    /// sends the 200 headers before awaiting it.
    async fn container_wait(
        &self,
        id_or_name: &str,
        condition: WaitCondition,
    ) -> ApiResult<BoxFuture<'static, ApiResult<i64>>>;
    async fn container_top(
        &self,
        id_or_name: &str,
        ps_args: Option<String>,
    ) -> ApiResult<ContainerTopResponse>;
    /// `stream=false` yields exactly one item. Stats need two samples for CPU
    /// percentages: fill `precpu_stats` (the first item of a stream may have
    /// an empty one unless `one_shot` is false, Docker-style).
    async fn container_stats(
        &self,
        id_or_name: &str,
        stream: bool,
        one_shot: bool,
    ) -> ApiResult<BoxStream<ContainerStatsResponse>>;
    async fn container_logs(&self, id_or_name: &str, opts: LogsOptions) -> ApiResult<LogsStream>;
    /// Allowed on created (not yet started) containers: stdin written before
    /// start is buffered and delivered once the process runs.
    async fn container_attach(
        &self,
        id_or_name: &str,
        opts: AttachOptions,
    ) -> ApiResult<AttachStreams>;
    async fn container_resize(&self, id_or_name: &str, height: u16, width: u16) -> ApiResult<()>;
    /// `GET /containers/{id}/archive?path=`: a tar stream of the path.
    async fn container_archive_get(
        &self,
        id_or_name: &str,
        path: &str,
    ) -> ApiResult<(PathStat, BoxStream<std::io::Result<Bytes>>)>;
    async fn container_archive_stat(&self, id_or_name: &str, path: &str) -> ApiResult<PathStat>;
    /// `PUT /containers/{id}/archive?path=`: extract the tar body into path.
    async fn container_archive_put(
        &self,
        id_or_name: &str,
        path: &str,
        no_overwrite_dir_non_dir: bool,
        copy_uid_gid: bool,
        body: BoxStream<std::io::Result<Bytes>>,
    ) -> ApiResult<()>;
    async fn container_prune(&self, filters: Filters) -> ApiResult<ContainerPruneResponse>;

    async fn exec_create(&self, id_or_name: &str, config: ExecConfig) -> ApiResult<IdResponse>;
    /// With `Detach` the process is started and `None` returned; otherwise
    /// its live stdio (the process starts when this returns, so no output is
    /// lost).
    async fn exec_start(
        &self,
        exec_id: &str,
        config: ExecStartConfig,
    ) -> ApiResult<Option<AttachStreams>>;
    async fn exec_resize(&self, exec_id: &str, height: u16, width: u16) -> ApiResult<()>;
    async fn exec_inspect(&self, exec_id: &str) -> ApiResult<ExecInspectResponse>;
}

#[async_trait]
pub trait ImageBackend: Send + Sync + 'static {
    /// Import a rootfs tarball (plain or gzip) read from `body`. Returns the
    /// new image ID (`sha256:...`). A corrupt tarball is a 400 and leaves
    /// nothing behind.
    async fn image_import(
        &self,
        opts: ImportOptions,
        body: BoxStream<std::io::Result<Bytes>>,
    ) -> ApiResult<String>;
    async fn image_list(
        &self,
        all: bool,
        filters: Filters,
        digests: bool,
    ) -> ApiResult<Vec<ImageSummary>>;
    async fn image_inspect(&self, name: &str) -> ApiResult<ImageInspect>;
    async fn image_history(&self, name: &str) -> ApiResult<Vec<ImageHistoryResponseItem>>;
    async fn image_tag(&self, name: &str, repo: &str, tag: Option<&str>) -> ApiResult<()>;
    /// Refuses (409) images that a container uses unless `force`; the backend
    /// asks its [`ImageUsers`].
    async fn image_remove(
        &self,
        name: &str,
        force: bool,
        noprune: bool,
    ) -> ApiResult<Vec<ImageDeleteResponseItem>>;
    async fn image_prune(&self, filters: Filters) -> ApiResult<ImagePruneResponse>;
    /// Pull. Everything that can fail before any layer moves (bad
    /// reference, unknown repository or tag, auth refused, unreachable
    /// registry, no manifest for the platform) is the `Err` (an HTTP error,
    /// as dockerd answers); later failures end the stream with
    /// [`JsonMessage::error`].
    async fn image_pull(&self, opts: PullOptions) -> ApiResult<BoxStream<JsonMessage>>;
    /// Push; same error split as [`ImageBackend::image_pull`]. Ends with the
    /// `{Tag,Digest,Size}` aux line.
    async fn image_push(&self, opts: PushOptions) -> ApiResult<BoxStream<JsonMessage>>;
    /// `GET /images/get?names=` / `GET /images/{name}/get`: a Docker 25+
    /// archive of the named images, streamed. Unknown names are the `Err`.
    async fn image_save(&self, names: Vec<String>) -> ApiResult<BoxStream<std::io::Result<Bytes>>>;
    /// `POST /images/load`: reads Docker (old and new) and OCI archives,
    /// plain, gzip or zstd. Progress and `Loaded image: ...` lines
    /// (`{"stream": ...}`), errors in-stream.
    async fn image_load(
        &self,
        body: BoxStream<std::io::Result<Bytes>>,
        quiet: bool,
    ) -> ApiResult<BoxStream<JsonMessage>>;
    /// `POST /auth`: checks the credentials against the registry
    /// (`serveraddress`, Docker Hub when empty). A refusal is
    /// `Err(Unauthorized)` (401) with the registry's reason, as dockerd.
    async fn registry_login(&self, auth: RegistryAuth) -> ApiResult<AuthResponse>;
}

/// Implemented by the engine and given to the image store, so `rmi` and
/// `image prune` can refuse or skip images that containers use.
pub trait ImageUsers: Send + Sync + 'static {
    /// IDs (full, `sha256:...`) of images that some container references.
    fn images_in_use(&self) -> std::collections::HashSet<String>;
}

#[async_trait]
pub trait VolumeBackend: Send + Sync + 'static {
    async fn volume_create(&self, req: VolumeCreateRequest) -> ApiResult<Volume>;
    async fn volume_list(&self, filters: Filters) -> ApiResult<VolumeListResponse>;
    async fn volume_inspect(&self, name: &str) -> ApiResult<Volume>;
    async fn volume_remove(&self, name: &str, force: bool) -> ApiResult<()>;
    async fn volume_prune(&self, filters: Filters) -> ApiResult<VolumePruneResponse>;
}

#[async_trait]
pub trait SystemBackend: Send + Sync + 'static {
    async fn version(&self) -> ApiResult<SystemVersion>;
    async fn info(&self) -> ApiResult<SystemInfo>;
    async fn system_df(&self) -> ApiResult<SystemDataUsageResponse>;
    /// Past events in [since, until] from the engine's ring buffer, then (when
    /// `until` is None) live ones; filtered by `filters` (type, event/action,
    /// container, image, volume, label).
    async fn events(
        &self,
        since: Option<i64>,
        until: Option<i64>,
        filters: Filters,
    ) -> ApiResult<BoxStream<EventMessage>>;
}

/// One rule of a network policy: traffic from `network` (name or ID), to
/// every port when `port` is None, else to that port (`proto` "tcp"/"udp",
/// default tcp).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyRule {
    #[serde(rename = "Network")]
    pub network: String,
    #[serde(rename = "Port", default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(rename = "Proto", default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
}

/// A shibafu network policy (no Docker equivalent): ingress rules for the
/// containers of `network`. Deny rules win over allow rules; traffic
/// matching no rule follows the network's isolation default.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkPolicy {
    #[serde(rename = "Id", default)]
    pub id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Network")]
    pub network: String,
    #[serde(rename = "DenyIngressFrom", default)]
    pub deny_ingress_from: Vec<PolicyRule>,
    #[serde(rename = "AllowIngressFrom", default)]
    pub allow_ingress_from: Vec<PolicyRule>,
    /// RFC 3339; set by the backend.
    #[serde(rename = "Created", default)]
    pub created: String,
}

/// What `network reload` (reconcile) did, for the user.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct NetworkReloadReport {
    /// Human-readable lines: addresses released, veths/bridges removed,
    /// rules re-applied, ...
    #[serde(rename = "Actions", default)]
    pub actions: Vec<String>,
    /// Steps that failed (reconcile goes on past errors).
    #[serde(rename = "Errors", default)]
    pub errors: Vec<String>,
}

/// A network as `GET /networks` and `GET /networks/{id}` return it:
/// Docker's `NetworkInspect` (flattened, so the JSON is Docker's) plus
/// shibafu's `Policies` (the network policies protecting it; omitted when
/// there are none).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct NetworkView {
    #[serde(flatten)]
    pub network: NetworkInspect,
    #[serde(rename = "Policies", default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<NetworkPolicy>,
}

/// Networks: Docker's `/networks` routes plus shibafu's own
/// (`/shibafu/networks/policies`, `/shibafu/networks/reload`).
/// `id_or_name` accepts a full ID, a unique ID prefix or a name.
#[async_trait]
pub trait NetworkBackend: Send + Sync + 'static {
    /// `GET /networks?filters=` (name, id, label, driver, type=custom|builtin,
    /// dangling). Docker's list omits `Containers`; we fill it anyway.
    async fn network_list(&self, filters: Filters) -> ApiResult<Vec<NetworkView>>;
    /// `GET /networks/{id}` with `Containers` and IPAM config (gateway filled in).
    async fn network_inspect(&self, id_or_name: &str) -> ApiResult<NetworkView>;
    /// `POST /networks/create`. 409 on a duplicate name, 400 on bad input
    /// (invalid CIDR, overlap, gateway outside subnet, bad option).
    async fn network_create(&self, req: NetworkCreateRequest) -> ApiResult<NetworkCreateResponse>;
    /// `DELETE /networks/{id}`: 409 while containers use it (names them),
    /// 403-equivalent Conflict for the predefined `bridge`/`host`/`none`.
    async fn network_remove(&self, id_or_name: &str) -> ApiResult<()>;
    /// `POST /networks/{id}/connect` (`Container`, `EndpointConfig` with
    /// `IPAMConfig.IPv4Address/IPv6Address` and `Aliases`).
    async fn network_connect(&self, id_or_name: &str, req: NetworkConnectRequest) -> ApiResult<()>;
    /// `POST /networks/{id}/disconnect` (`Container`, `Force`).
    async fn network_disconnect(
        &self,
        id_or_name: &str,
        req: NetworkDisconnectRequest,
    ) -> ApiResult<()>;
    /// `POST /networks/prune?filters=` (until, label): unused user networks.
    async fn network_prune(&self, filters: Filters) -> ApiResult<NetworkPruneResponse>;

    /// `POST /shibafu/networks/policies`: validated, then applied atomically.
    async fn policy_create(&self, policy: NetworkPolicy) -> ApiResult<NetworkPolicy>;
    /// `GET /shibafu/networks/policies?network=`.
    async fn policy_list(&self, network: Option<String>) -> ApiResult<Vec<NetworkPolicy>>;
    /// `GET /shibafu/networks/policies/{name or id}`.
    async fn policy_inspect(&self, name_or_id: &str) -> ApiResult<NetworkPolicy>;
    /// `DELETE /shibafu/networks/policies/{name or id}`.
    async fn policy_remove(&self, name_or_id: &str) -> ApiResult<()>;
    /// `POST /shibafu/networks/reload`: reconcile now.
    async fn network_reload(&self) -> ApiResult<NetworkReloadReport>;
}

/// Container labels that carry shibafu's service and probe settings, so the
/// unmodified docker CLI can set them too (`--label io.shibafu.service=api`).
/// The shibafu CLI's `--service`, `--service-weight`, `--service-port` and
/// `--health-probe` write them.
pub mod labels {
    /// Service names the container joins, comma-separated (`api,web`).
    pub const SERVICE: &str = "io.shibafu.service";
    /// Its weight in those services' round-robin, 1..=65535 (default 1).
    pub const SERVICE_WEIGHT: &str = "io.shibafu.service.weight";
    /// Extra SRV ports, comma-separated `PORT[/PROTO]` (`8080,53/udp`).
    pub const SERVICE_PORTS: &str = "io.shibafu.service.ports";
    /// A health probe the daemon runs besides `--health-cmd`:
    /// `tcp:PORT` or `http:PORT[/PATH]` (2xx/3xx is healthy). Timing comes
    /// from the container's healthcheck (`--health-interval`, ...).
    pub const HEALTH_PROBE: &str = "io.shibafu.health.probe";
    /// Network option (`network create -o` / shibafu's `network create
    /// --dns`): the network's own upstream resolvers, comma-separated
    /// `IP[:PORT]`; they replace the host's for that network.
    pub const NETWORK_DNS: &str = "io.shibafu.network.dns";
}

/// One instance of a service on one network.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceInstance {
    /// Container ID.
    #[serde(rename = "Id")]
    pub id: String,
    /// Container name (no leading `/`).
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "IPv4Address", default)]
    pub ipv4: String,
    #[serde(rename = "IPv6Address", default)]
    pub ipv6: String,
    #[serde(rename = "Weight")]
    pub weight: u16,
    /// "healthy", "unhealthy", "starting" or "none" (no healthcheck).
    #[serde(rename = "Health")]
    pub health: String,
    /// Whether the DNS answers with it now (unhealthy instances leave).
    #[serde(rename = "InAnswers")]
    pub in_answers: bool,
    /// How it joined: "service" (`--service`) or "alias" (shared `--network-alias`).
    #[serde(rename = "Via")]
    pub via: String,
}

/// A service: a name answered by several containers on one network.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceView {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Network")]
    pub network: String,
    #[serde(rename = "NetworkId")]
    pub network_id: String,
    /// Fully qualified: `NAME.NETWORK.local`.
    #[serde(rename = "Fqdn")]
    pub fqdn: String,
    /// SRV ports, `PORT/PROTO`.
    #[serde(rename = "Ports", default)]
    pub ports: Vec<String>,
    #[serde(rename = "Instances", default)]
    pub instances: Vec<ServiceInstance>,
}

/// The query of `GET /shibafu/dns/trace`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsTraceQuery {
    /// The name asked for.
    pub name: String,
    /// Record type: A, AAAA, PTR, SRV, CNAME, TXT, MX, ANY... (default A).
    #[serde(default, rename = "type")]
    pub qtype: Option<String>,
    /// Ask as this container (name or ID): it sees its own networks.
    #[serde(default)]
    pub from: Option<String>,
    /// Ask at this network's gateway (name or ID) as a requester unknown
    /// to it. With neither `from` nor `network`: the first served network.
    #[serde(default)]
    pub network: Option<String>,
}

/// Services and DNS diagnostics (shibafu's own routes).
#[async_trait]
pub trait DnsBackend: Send + Sync + 'static {
    /// `GET /shibafu/services?network=NET`: every service (a `--service`
    /// name, or a `--network-alias` shared by two or more containers) of
    /// live containers, one entry per (name, network), sorted by name then network.
    async fn service_list(&self, network: Option<String>) -> ApiResult<Vec<ServiceView>>;
    /// `GET /shibafu/services/{name}`: that name on every network it
    /// exists in (404 "No such service: NAME" when none).
    async fn service_inspect(&self, name: &str) -> ApiResult<Vec<ServiceView>>;
    /// `GET /shibafu/dns/trace?name=&type=&from=&network=`: one query through
    /// the real resolver path; the JSON of `shibafu_dns::TraceReport`.
    /// 404 for an unknown container/network, 400 for a bad name/type or a
    /// container on no served network.
    async fn dns_trace(&self, q: DnsTraceQuery) -> ApiResult<serde_json::Value>;
}

/// Everything the HTTP layer serves.
#[derive(Clone)]
pub struct Backends {
    pub containers: std::sync::Arc<dyn ContainerBackend>,
    pub images: std::sync::Arc<dyn ImageBackend>,
    pub volumes: std::sync::Arc<dyn VolumeBackend>,
    pub system: std::sync::Arc<dyn SystemBackend>,
    pub networks: std::sync::Arc<dyn NetworkBackend>,
    pub dns: std::sync::Arc<dyn DnsBackend>,
}
