//! A small Docker Engine API client: HTTP/1.1 over the daemon's unix socket (or plain
//! TCP), one connection per request, with hijacking for attach and exec.
//!
//! Paths are sent unversioned: the daemon serves every route with and without the
//! `/vX.Y` prefix, and an unversioned path also works against any real dockerd.

use std::path::PathBuf;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{CliError, Result};

/// Request body type: empty, a buffer, or a stream (import, cp).
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A bidirectional byte stream left over after a 101 upgrade.
pub trait RawStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> RawStream for T {}

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

/// Parses `-H` / `SHIBAFU_HOST`: `unix:///path`, a plain path, or `tcp://host:port`.
pub fn parse_host(host: &str) -> Result<Endpoint> {
    if let Some(p) = host.strip_prefix("unix://") {
        if p.is_empty() {
            return Err(CliError::usage(format!(
                "invalid host {host:?}: empty socket path"
            )));
        }
        Ok(Endpoint::Unix(PathBuf::from(p)))
    } else if let Some(a) = host.strip_prefix("tcp://") {
        let a = a.trim_end_matches('/');
        if a.is_empty() {
            return Err(CliError::usage(format!(
                "invalid host {host:?}: empty address"
            )));
        }
        if a.contains(':') {
            Ok(Endpoint::Tcp(a.to_string()))
        } else {
            Ok(Endpoint::Tcp(format!("{a}:2375")))
        }
    } else if host.starts_with('/') || host.starts_with('.') {
        Ok(Endpoint::Unix(PathBuf::from(host)))
    } else {
        Err(CliError::usage(format!(
            "invalid host {host:?}: use unix:///path/to/socket, a socket path or tcp://host:port"
        )))
    }
}

pub fn empty_body() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn full_body(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A streaming request body (sent chunked).
pub fn stream_body<S>(s: S) -> Body
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    BodyExt::boxed_unsync(StreamBody::new(s.map_ok(Frame::data)))
}

/// A request body streamed from a reader (import, cp), 64 KiB at a time.
pub fn reader_body<R: AsyncRead + Send + Unpin + 'static>(r: R) -> Body {
    use tokio::io::AsyncReadExt;
    let s = futures::stream::unfold(Some(r), |state| async move {
        let mut r = state?;
        let mut buf = vec![0u8; 64 * 1024];
        match r.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(r)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    stream_body(s)
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    urlencoding::encode(s).into_owned()
}

/// Builds a `?a=b&c=d` query string from pairs (values encoded).
pub fn query(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    format!("?{}", parts.join("&"))
}

#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    host: String,
    debug: bool,
}

impl Client {
    pub fn new(host: &str, debug: bool) -> Result<Self> {
        Ok(Client {
            endpoint: parse_host(host)?,
            host: host.to_string(),
            debug,
        })
    }

    /// The host string as the user gave it (for error messages).
    pub fn host(&self) -> &str {
        &self.host
    }

    async fn connect(&self) -> Result<Box<dyn RawStream>> {
        let err = || CliError::Connect {
            host: self.host.clone(),
        };
        match &self.endpoint {
            Endpoint::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(|_| err())?;
                Ok(Box::new(s))
            }
            Endpoint::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a).await.map_err(|_| err())?;
                let _ = s.set_nodelay(true);
                Ok(Box::new(s))
            }
        }
    }

    fn build(
        &self,
        method: Method,
        path: &str,
        body: Body,
        content_type: Option<&str>,
    ) -> Result<Request<Body>> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "docker")
            .header(
                header::USER_AGENT,
                concat!("shibafu-cli/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        b.body(body).map_err(|e| CliError::Http(e.to_string()))
    }

    /// Sends a request and returns the response once its headers arrived; error
    /// statuses (>= 400) become [`CliError::Daemon`].
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>> {
        if self.debug {
            eprintln!("DEBU[0000] {} {}", req.method(), req.uri());
        }
        let io = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let resp = sender.send_request(req).await?;
        if resp.status().as_u16() >= 400 {
            return Err(error_from(resp).await);
        }
        Ok(resp)
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Body,
        ct: Option<&str>,
    ) -> Result<Response<Incoming>> {
        let req = self.build(method, path, body, ct)?;
        self.send(req).await
    }

    /// A request with extra headers (`X-Registry-Auth`).
    pub async fn request_with(
        &self,
        method: Method,
        path: &str,
        body: Body,
        ct: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Response<Incoming>> {
        let mut req = self.build(method, path, body, ct)?;
        for (k, v) in headers {
            let name = header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| CliError::Http(e.to_string()))?;
            let value =
                header::HeaderValue::from_str(v).map_err(|e| CliError::Http(e.to_string()))?;
            req.headers_mut().insert(name, value);
        }
        self.send(req).await
    }

    /// GET returning the raw body.
    pub async fn get_bytes(&self, path: &str) -> Result<Bytes> {
        let resp = self.request(Method::GET, path, empty_body(), None).await?;
        read_body(resp).await
    }

    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let b = self.get_bytes(path).await?;
        Ok(serde_json::from_slice(&b)?)
    }

    /// POST with an optional JSON body; returns the response body (may be empty).
    pub async fn post<T: Serialize>(&self, path: &str, body: Option<&T>) -> Result<Bytes> {
        let resp = self.post_resp(path, body).await?;
        read_body(resp).await
    }

    pub async fn post_resp<T: Serialize>(
        &self,
        path: &str,
        body: Option<&T>,
    ) -> Result<Response<Incoming>> {
        let (b, ct) = match body {
            Some(v) => (full_body(serde_json::to_vec(v)?), Some("application/json")),
            None => (empty_body(), None),
        };
        self.request(Method::POST, path, b, ct).await
    }

    pub async fn post_json<T: Serialize>(&self, path: &str, body: Option<&T>) -> Result<Value> {
        let b = self.post(path, body).await?;
        if b.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&b)?)
    }

    pub async fn delete(&self, path: &str) -> Result<Bytes> {
        let resp = self
            .request(Method::DELETE, path, empty_body(), None)
            .await?;
        read_body(resp).await
    }

    /// Sends a request asking for `Upgrade: tcp` and returns the raw stream after the
    /// daemon's 101. Anything but 101 is an error (docker's CLI fails the same way).
    pub async fn hijack<T: Serialize>(
        &self,
        path: &str,
        body: Option<&T>,
    ) -> Result<Box<dyn RawStream>> {
        let (b, ct) = match body {
            Some(v) => (full_body(serde_json::to_vec(v)?), Some("application/json")),
            None => (empty_body(), None),
        };
        let mut req = self.build(Method::POST, path, b, ct)?;
        req.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("Upgrade"),
        );
        req.headers_mut()
            .insert(header::UPGRADE, header::HeaderValue::from_static("tcp"));
        let resp = self.send(req).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = resp.status();
            let body = read_body(resp).await.unwrap_or_default();
            return Err(CliError::Http(format!(
                "expected 101 Switching Protocols from {path}, got {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        let up = hyper::upgrade::on(resp).await?;
        Ok(Box::new(TokioIo::new(up)))
    }
}

/// Reads a whole response body.
pub async fn read_body(resp: Response<Incoming>) -> Result<Bytes> {
    Ok(resp.into_body().collect().await?.to_bytes())
}

/// Turns an error response into [`CliError::Daemon`], taking the message from the
/// `{"message": ...}` body like docker does.
async fn error_from(resp: Response<Incoming>) -> CliError {
    let status = resp.status();
    let body = read_body(resp).await.unwrap_or_default();
    let message = match serde_json::from_slice::<Value>(&body) {
        Ok(v) if v.get("message").and_then(Value::as_str).is_some() => {
            v["message"].as_str().unwrap_or_default().to_string()
        }
        _ => {
            let text = String::from_utf8_lossy(&body).trim().to_string();
            if text.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("unknown error")
                    .to_string()
            } else {
                text
            }
        }
    };
    CliError::Daemon {
        status: status.as_u16(),
        message,
    }
}

/// A response body as a stream of byte chunks.
pub fn body_stream(resp: Response<Incoming>) -> impl Stream<Item = Result<Bytes>> + Send + Unpin {
    resp.into_body()
        .into_data_stream()
        .map_err(CliError::from)
        .boxed()
}

/// Splits a streamed body into JSON values, one per line (pull, import, events, stats).
pub struct JsonLines<S> {
    inner: S,
    buf: Vec<u8>,
    done: bool,
}

impl<S: Stream<Item = Result<Bytes>> + Unpin> JsonLines<S> {
    pub fn new(inner: S) -> Self {
        JsonLines {
            inner,
            buf: Vec::new(),
            done: false,
        }
    }

    /// The next JSON value, or `None` at the end of the body. Values may also be
    /// concatenated without newlines (docker's json encoder), which serde handles.
    pub async fn next(&mut self) -> Option<Result<Value>> {
        loop {
            // Try to parse one value from the buffer.
            let start = self.buf.iter().position(|b| !b.is_ascii_whitespace());
            match start {
                None => self.buf.clear(),
                Some(s) => {
                    let mut de =
                        serde_json::Deserializer::from_slice(&self.buf[s..]).into_iter::<Value>();
                    match de.next() {
                        Some(Ok(v)) => {
                            let used = s + de.byte_offset();
                            self.buf.drain(..used);
                            return Some(Ok(v));
                        }
                        Some(Err(e)) if !e.is_eof() => {
                            self.buf.clear();
                            return Some(Err(e.into()));
                        }
                        _ => {}
                    }
                }
            }
            if self.done {
                if self.buf.iter().any(|b| !b.is_ascii_whitespace()) {
                    self.buf.clear();
                    return Some(Err(CliError::Http("truncated JSON in response".into())));
                }
                return None;
            }
            match self.inner.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Some(Err(e)),
                None => self.done = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms() {
        assert_eq!(
            parse_host("unix:///run/x.sock").unwrap(),
            Endpoint::Unix("/run/x.sock".into())
        );
        assert_eq!(
            parse_host("/tmp/s").unwrap(),
            Endpoint::Unix("/tmp/s".into())
        );
        assert_eq!(
            parse_host("tcp://1.2.3.4").unwrap(),
            Endpoint::Tcp("1.2.3.4:2375".into())
        );
        assert!(parse_host("bogus").is_err());
        assert!(parse_host("unix://").is_err());
    }

    #[test]
    fn query_encodes_values() {
        assert_eq!(
            query(&[("a", "x y".into()), ("f", "{\"a\":1}".into())]),
            "?a=x%20y&f=%7B%22a%22%3A1%7D"
        );
        assert_eq!(query(&[]), "");
    }

    #[tokio::test]
    async fn json_lines_split_across_chunks() {
        let chunks: Vec<Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"{\"a\":1}\n{\"b\"")),
            Ok(Bytes::from_static(b":2}{\"c\":3}\n")),
        ];
        let mut jl = JsonLines::new(futures::stream::iter(chunks));
        assert_eq!(jl.next().await.unwrap().unwrap()["a"], 1);
        assert_eq!(jl.next().await.unwrap().unwrap()["b"], 2);
        assert_eq!(jl.next().await.unwrap().unwrap()["c"], 3);
        assert!(jl.next().await.is_none());
    }
}
