//! The outermost layer: runs before routing so that `/v1.50/containers/json`
//! and `/containers/json` reach the same route.

use std::convert::Infallible;
use std::time::Instant;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use tower::ServiceExt;
use tracing::Instrument;

use super::error::error_response;
use super::{API_VERSION, MIN_API_VERSION};

/// The API version a request asked for through its `/vX.Y` prefix (the
/// current version when it had none). Some renderings depend on it, e.g. the
/// multiplexed-stream content type from 1.42 on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ReqVersion(pub u32, pub u32);

impl ReqVersion {
    pub(crate) fn current() -> Self {
        parse_version(API_VERSION).expect("API_VERSION is well formed")
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ReqVersion {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ReqVersion>()
            .copied()
            .unwrap_or_else(ReqVersion::current))
    }
}

fn parse_version(s: &str) -> Option<ReqVersion> {
    let (maj, min) = s.split_once('.').unwrap_or((s, "0"));
    Some(ReqVersion(maj.parse().ok()?, min.parse().ok()?))
}

/// Splits `/v1.50/rest` into (`1.50`, `/rest`). Only a segment that looks
/// like a version (`v` + digits and dots) is a prefix, as in moby's router.
fn split_version(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v")?;
    let end = rest.find('/').unwrap_or(rest.len());
    let ver = &rest[..end];
    if ver.is_empty() || !ver.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let tail = &rest[end..];
    Some((ver, if tail.is_empty() { "/" } else { tail }))
}

pub(crate) async fn handle(routes: Router, mut req: Request) -> Result<Response, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let span = tracing::info_span!("api", %method, %path);
    async move {
        let mut resp = match rewrite(&mut req) {
            Ok(()) => routes.oneshot(req).await?,
            Err(resp) => *resp,
        };
        common_headers(&mut resp);
        let status = resp.status().as_u16();
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        if resp.status().is_server_error() {
            tracing::warn!(status, duration_ms, "request failed");
        } else {
            tracing::info!(status, duration_ms, "request");
        }
        Ok(resp)
    }
    .instrument(span)
    .await
}

/// Strips the version prefix into a [`ReqVersion`] extension; refuses
/// versions outside [MIN_API_VERSION, API_VERSION] the way dockerd does.
fn rewrite(req: &mut Request) -> Result<(), Box<Response>> {
    let Some((ver, rest)) = split_version(req.uri().path()) else {
        req.extensions_mut().insert(ReqVersion::current());
        return Ok(());
    };
    let bad = |msg: String| Box::new(error_response(StatusCode::BAD_REQUEST, &msg));
    let Some(v) = parse_version(ver) else {
        return Err(bad(format!(
            "invalid API version {ver:?} in the request path"
        )));
    };
    let (max, min) = (
        ReqVersion::current(),
        parse_version(MIN_API_VERSION).expect("valid"),
    );
    if v > max {
        return Err(bad(format!(
            "client version {ver} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    if v < min {
        return Err(bad(format!(
            "client version {ver} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    let new_uri = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    match new_uri.parse::<Uri>() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(e) => return Err(bad(format!("invalid request path: {e}"))),
    }
    req.extensions_mut().insert(v);
    Ok(())
}

/// Headers dockerd puts on every response; the CLI reads them from `/_ping`
/// but also from errors.
fn common_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert(
        "Server",
        HeaderValue::from_static(concat!("shibafu/", env!("CARGO_PKG_VERSION"))),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefix() {
        assert_eq!(
            split_version("/v1.50/containers/json"),
            Some(("1.50", "/containers/json"))
        );
        assert_eq!(split_version("/v1.24/_ping"), Some(("1.24", "/_ping")));
        assert_eq!(split_version("/v1.50"), Some(("1.50", "/")));
        assert_eq!(split_version("/volumes"), None);
        assert_eq!(split_version("/version"), None);
        assert_eq!(split_version("/containers/json"), None);
        assert!(parse_version("1.42").unwrap() < parse_version("1.50").unwrap());
        assert!(parse_version("1.9").unwrap() < parse_version("1.10").unwrap());
    }
}
