//! The Docker Engine API over HTTP/1.1 on a unix socket.
//!
//! [`router`] builds the whole application: a thin outer layer strips the
//! `/vX.Y` prefix *before* routing (axum's own layers run after routing, too
//! late to change which route matches), checks the requested version, adds
//! Docker's common response headers and logs one event per request. The
//! route handlers parse queries and bodies, call the [`Backends`] traits and
//! render Docker's responses, including the hijacked streams of `attach` and
//! `exec start`.

mod attach;
mod containers;
mod dns;
mod error;
mod exec;
mod images;
mod networks;
mod query;
mod system;
mod volumes;
mod wrap;

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::UnixListener;

use crate::backend::Backends;

pub use query::{parse_bool, parse_filters, Query, QueryError};

/// The Engine API version this server speaks (advertised in `/_ping` and
/// `Api-Version`). Docker 29 clients refuse servers older than ~1.44.
pub const API_VERSION: &str = "1.50";
/// The oldest `/vX.Y` prefix accepted; the docker CLI falls back to 1.24 when
/// it can't negotiate.
pub const MIN_API_VERSION: &str = "1.24";

/// How long [`serve`] waits for open connections after `shutdown` resolves.
/// Streams such as `events` or `logs -f` never end on their own.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Binds the API socket at `path`.
///
/// A socket file left by a dead daemon is removed; if a live daemon answers
/// on it, this fails with "another daemon is listening on PATH" rather than
/// stealing its socket. The socket is created under a temporary name, given
/// mode 0660 and owner root:root (when running as root), then renamed into
/// place, so it is never reachable with looser permissions.
///
/// Must be called from within a Tokio runtime.
pub fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("binding {}: {e}", path.display()));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(ctx)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                ),
            ));
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another daemon is listening on {}", path.display()),
                ));
            }
            std::fs::remove_file(path).map_err(ctx)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ctx(e)),
    }

    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    // sun_path holds 108 bytes: fall back to binding in place when the
    // temporary name would not fit (permissions are then fixed right after).
    let direct = tmp.as_os_str().len() >= 100;
    let bind_path = if direct { path } else { tmp.as_path() };
    let _ = std::fs::remove_file(bind_path);
    let std_listener = std::os::unix::net::UnixListener::bind(bind_path).map_err(ctx)?;
    let finish = || -> io::Result<()> {
        std::fs::set_permissions(bind_path, std::fs::Permissions::from_mode(0o660))?;
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(bind_path, Some(0), Some(0))?;
        }
        if !direct {
            std::fs::rename(bind_path, path)?;
        }
        std_listener.set_nonblocking(true)
    };
    if let Err(e) = finish() {
        let _ = std::fs::remove_file(bind_path);
        return Err(ctx(e));
    }
    UnixListener::from_std(std_listener).map_err(ctx)
}

/// Serves the API on `listener` until `shutdown` resolves, then stops
/// accepting, asks open connections to finish (up to a few seconds) and
/// removes the socket file.
pub async fn serve(
    listener: UnixListener,
    backends: Backends,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = router(backends);
    let graceful = GracefulShutdown::new();
    // No timer: hyper then applies no header-read timeout, so clients may
    // keep pooled connections idle between commands (docker-py does) and
    // long streams (logs -f, events, attach) are never cut.
    let builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    let sock_path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            res = listener.accept() => match res {
                Ok((stream, _)) => stream,
                Err(e) if is_transient_accept_error(&e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => return Err(e),
            },
            _ = &mut shutdown => break,
        };
        let svc = TowerToHyperService::new(app.clone());
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if let Some(p) = sock_path {
        let _ = std::fs::remove_file(p);
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("closing API connections that were still open at shutdown");
    }
    Ok(())
}

/// Errors after which accepting can go on (out of descriptors, a client
/// that hung up before we accepted).
fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::ECONNABORTED
                | libc::EINTR
        )
    ) || e.kind() == io::ErrorKind::ConnectionAborted
        || e.kind() == io::ErrorKind::Interrupted
}

/// The complete application: version-prefix stripping, common headers and
/// request logging around the Docker routes.
pub fn router(backends: Backends) -> Router {
    let routes = Router::new()
        .route("/_ping", get(system::ping).head(system::ping))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .route("/system/df", get(system::df))
        .route("/events", get(system::events))
        .route("/auth", axum::routing::post(system::auth))
        .merge(containers::routes())
        .merge(exec::routes())
        .route(
            "/images/{*rest}",
            get(images::dispatch)
                .post(images::dispatch)
                .delete(images::dispatch),
        )
        .merge(volumes::routes())
        .merge(networks::routes())
        .merge(dns::routes())
        .fallback(error::page_not_found)
        .method_not_allowed_fallback(error::page_not_found)
        .with_state(backends);
    let outer = tower::service_fn(move |req| wrap::handle(routes.clone(), req));
    Router::new().fallback_service(outer)
}
