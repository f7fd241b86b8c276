//! shibafu's built-in OCI registry: the Distribution Specification 1.1
//! (pull, push, chunked/resumable uploads, cross-repository mount, tag and
//! catalog listing, deletion, referrers), basic auth from an htpasswd file
//! plus bearer tokens it issues itself, optional TLS, and a garbage
//! collector that can run while the server writes to the same root.
//!
//! Served by `shibafu registry serve` and by the daemon (`registry.serve`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

pub mod auth;
pub mod digest;
pub mod error;
pub mod gc;
pub mod manifest;
pub mod names;
pub mod range;
mod server;
pub mod storage;
mod tls;

pub use gc::{GcOptions, GcReport};

/// How long a graceful shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("--tls-cert and --tls-key go together")]
    TlsPair,
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("htpasswd: {0}")]
    Auth(#[from] auth::AuthError),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error(transparent)]
    Gc(#[from] gc::GcError),
}

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub root: PathBuf,
    pub htpasswd: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// A registry bound to its address, not yet serving (lets a caller learn the
/// port of `127.0.0.1:0`).
pub struct Bound {
    listener: TcpListener,
    router: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Validates the configuration, opens storage and binds the address.
pub async fn bind(cfg: ServerConfig) -> Result<Bound, Error> {
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(c, k)?)),
        (None, None) => None,
        _ => return Err(Error::TlsPair),
    };
    let users = match &cfg.htpasswd {
        Some(p) => Some(Arc::new(auth::Users::new(auth::Htpasswd::load(p)?))),
        None => None,
    };
    let storage = Arc::new(storage::Storage::open(&cfg.root)?);
    let key = auth::TokenKey::load_or_create(&cfg.root)?;
    let app = Arc::new(server::App {
        storage,
        users,
        key,
        tls: tls.is_some(),
    });
    let router = axum::Router::new().fallback(server::handle).with_state(app);
    let listener = TcpListener::bind(cfg.addr)
        .await
        .map_err(|source| Error::Bind {
            addr: cfg.addr,
            source,
        })?;
    Ok(Bound {
        listener,
        router,
        tls,
    })
}

impl Bound {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets requests in flight
    /// finish (up to 10 s).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut http = hyper::server::conn::http1::Builder::new();
        // The timer enables hyper's header read timeout (30 s), so a client
        // that trickles request headers cannot hold a connection forever.
        http.max_buf_size(4 << 20)
            .keep_alive(true)
            .timer(hyper_util::rt::TokioTimer::new());
        let http = Arc::new(http);
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let svc = TowerToHyperService::new(self.router.clone());
            let http = http.clone();
            match &self.tls {
                None => {
                    let conn = http.serve_connection(TokioIo::new(stream), svc);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!("connection from {peer}: {e}");
                        }
                    });
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let tls =
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!("TLS handshake with {peer}: {e}");
                                    return;
                                }
                                Err(_) => return,
                            };
                        let conn = watcher.watch(http.serve_connection(TokioIo::new(tls), svc));
                        if let Err(e) = conn.await {
                            tracing::debug!("connection from {peer}: {e}");
                        }
                    });
                }
            }
        }
        drop(self.listener);
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(SHUTDOWN_GRACE) => {
                tracing::warn!("shutdown: connections still open after {SHUTDOWN_GRACE:?}, closing");
            }
        }
        Ok(())
    }
}

/// Binds, then serves until `shutdown` completes.
pub async fn serve(
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let addr = cfg.addr;
    let bound = bind(cfg).await?;
    tracing::info!(
        "registry listening on {}",
        bound.local_addr().unwrap_or(addr)
    );
    bound.run(shutdown).await
}

/// Garbage-collects the storage under `root` (see [`gc`]).
pub fn gc(root: &Path, opts: GcOptions) -> Result<GcReport, Error> {
    Ok(gc::run(root, &opts)?)
}

/// Parses a duration flag: `0`, `90s`, `10m`, `1h`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    /// The daemon spawns the server on its runtime: the future must be Send.
    #[test]
    fn serve_future_is_send() {
        fn assert_send<T: Send + 'static>(_: &T) {}
        let cfg = super::ServerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            root: "/nonexistent".into(),
            htpasswd: None,
            tls_cert: None,
            tls_key: None,
        };
        let fut = super::serve(cfg, async {});
        assert_send(&fut);
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(super::parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(super::parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(super::parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert!(super::parse_duration("soon").is_err());
    }
}
