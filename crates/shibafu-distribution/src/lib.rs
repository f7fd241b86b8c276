//! shibafu's registry client: the OCI distribution protocol as a puller
//! and pusher needs it (manifests, streamed blobs with Range resume,
//! monolithic and chunked uploads, cross-repository mounts), Docker's
//! registry conventions (name → registry host, Docker Hub mirrors, plain
//! HTTP for loopback and `--insecure-registry`), and auth (basic, bearer
//! tokens from `WWW-Authenticate` challenges, cached per scope).
//!
//! Modules: `name` (Docker's name rules), `endpoint` (which URL a registry
//! name is reached at), `auth` (challenges and tokens), `client` (the
//! protocol itself), `wire` (error texts, digests, references).

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

mod auth;
mod client;
mod endpoint;
mod name;
mod wire;

pub use client::{Client, DEFAULT_CHUNK_SIZE};
pub use endpoint::DOCKER_HUB;
pub use name::DEFAULT_DOMAIN;

pub type BoxStream<T> = Pin<Box<dyn Stream<Item = T> + Send + 'static>>;

/// Media types the client asks for and understands.
pub mod media {
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
}

/// Errors, with Display texts close to what dockerd prints for the same case.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name that is no repository name.
    #[error("invalid reference format: {0}")]
    InvalidName(String),
    /// The registry could not be reached: `Get "URL": REASON` as Go prints it.
    #[error("{method} \"{url}\": {reason}")]
    Unreachable {
        method: String,
        url: String,
        reason: String,
    },
    /// 401 (after the auth dance) or a token server refusal.
    #[error("{0}")]
    Unauthorized(String),
    /// 403 / DENIED.
    #[error("{0}")]
    Denied(String),
    /// 404: code is the registry's error code (MANIFEST_UNKNOWN, NAME_UNKNOWN,
    /// BLOB_UNKNOWN, ...) when it sent one; message is "code: message" as
    /// distribution's errcode prints ("manifest unknown: manifest unknown").
    #[error("{message}")]
    NotFound {
        code: Option<String>,
        message: String,
    },
    /// Content that does not hash to the digest it was asked for.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    /// Any other status: "code: message" from the error body, or the status line.
    #[error("{message}")]
    Registry { status: u16, message: String },
    /// A read or local I/O failure while streaming (also a dropped connection).
    #[error("{0}")]
    Io(String),
}

/// A repository on a registry: `docker.io` + `library/busybox`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoName {
    /// `docker.io`, `localhost:5000`, `[::1]:5000`, `registry.example.com`.
    pub domain: String,
    /// `library/busybox`, `a/b/c`.
    pub path: String,
}

/// Credentials for one registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (from a previous login) for the token server.
    IdentityToken {
        username: String,
        token: String,
    },
    /// A bearer token sent as is.
    Bearer(String),
}

/// How the client reaches registries (daemon flags and config).
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// `host[:port]` names or CIDRs spoken to over plain HTTP (after HTTPS
    /// without certificate checks fails to connect), as dockerd's
    /// `--insecure-registry`. Loopback (127.0.0.0/8, ::1, localhost) is
    /// always insecure.
    pub insecure_registries: Vec<String>,
    /// Mirrors for docker.io (`http://127.0.0.1:5000`), tried in order
    /// before Docker Hub for pulls; pushes never use them.
    pub mirrors: Vec<String>,
    pub user_agent: String,
}

/// A manifest or index as the registry sent it.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Bytes,
    /// The Content-Type (or the JSON's own mediaType when the header is generic).
    pub media_type: String,
    /// `sha256:<hex>` of `bytes` (checked against Docker-Content-Digest and
    /// against the reference when it is a digest).
    pub digest: String,
}

/// A blob download in progress.
pub struct BlobReader {
    /// Size of the whole blob when the registry said it.
    pub total: Option<u64>,
    /// Offset of the first byte of `stream` in the blob: the requested
    /// offset when the registry honoured the Range, else 0.
    pub offset: u64,
    pub stream: BoxStream<Result<Bytes, Error>>,
}

/// Reports upload progress (bytes of the blob sent so far).
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;
