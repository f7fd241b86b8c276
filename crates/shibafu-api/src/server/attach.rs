//! Live stdio over HTTP: the hijacked connection of `attach` and
//! `exec start`, stdcopy framing, and the detach-key escape.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::wrap::ReqVersion;
use crate::backend::{ApiError, AttachStreams, BoxStream, OutputChunk, StdStream};

pub(crate) const RAW_STREAM: &str = "application/vnd.docker.raw-stream";
pub(crate) const MULTIPLEXED_STREAM: &str = "application/vnd.docker.multiplexed-stream";

/// docker-py reads the upgraded socket through Python's buffered HTTP
/// response: bytes that arrive in the same segment as the 101 head are lost.
/// The 101 is flushed alone; the first payload waits this long.
const FIRST_PAYLOAD_DELAY: Duration = Duration::from_millis(20);

/// Docker's default detach sequence, ctrl-p ctrl-q.
const DEFAULT_DETACH_KEYS: &[u8] = &[0x10, 0x11];

/// Content type of an output stream: framed output is "multiplexed" from API
/// 1.42 on, raw before (and always raw with a tty).
pub(crate) fn stream_content_type(tty: bool, v: ReqVersion) -> HeaderValue {
    if !tty && v >= ReqVersion(1, 42) {
        HeaderValue::from_static(MULTIPLEXED_STREAM)
    } else {
        HeaderValue::from_static(RAW_STREAM)
    }
}

/// One stdcopy frame: `[stream, 0, 0, 0, len (u32 BE)]` + payload.
pub(crate) fn frame(stream: StdStream, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + data.len());
    for part in data.chunks(u32::MAX as usize) {
        out.put_u8(stream as u8);
        out.put_slice(&[0, 0, 0]);
        out.put_u32(part.len() as u32);
        out.put_slice(part);
    }
    out.freeze()
}

/// Output bytes as sent: raw with a tty, framed otherwise.
pub(crate) fn encode(tty: bool, chunk: OutputChunk) -> Bytes {
    if tty {
        chunk.data
    } else {
        frame(chunk.stream, &chunk.data)
    }
}

/// A client asks to hijack by sending `Upgrade` (docker CLI and docker-py
/// send `Upgrade: tcp` + `Connection: Upgrade`); hyper only upgrades then.
pub(crate) fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
}

/// Parses Docker's detach-key notation (`ctrl-p,ctrl-q`, `ctrl-@`, `a`).
/// `None`/empty means the default sequence.
pub(crate) fn parse_detach_keys(spec: Option<&str>) -> Result<Vec<u8>, ApiError> {
    let spec = match spec.map(str::trim) {
        None | Some("") => return Ok(DEFAULT_DETACH_KEYS.to_vec()),
        Some(s) => s,
    };
    let bad = || {
        ApiError::InvalidArgument(format!(
            "invalid detach keys {spec:?}: use a comma-separated list such as ctrl-p,ctrl-q"
        ))
    };
    let mut out = Vec::new();
    for key in spec.split(',') {
        let key = key.trim();
        if let Some(c) = key.strip_prefix("ctrl-") {
            let &[c] = c.as_bytes() else {
                return Err(bad());
            };
            out.push(match c.to_ascii_lowercase() {
                l @ b'a'..=b'z' => l - b'a' + 1,
                b'@' => 0,
                b'[' => 27,
                b'\\' => 28,
                b']' => 29,
                b'^' => 30,
                b'_' => 31,
                _ => return Err(bad()),
            });
        } else if key.len() == 1 {
            out.push(key.as_bytes()[0]);
        } else {
            return Err(bad());
        }
    }
    Ok(out)
}

/// How the client's input ended.
#[derive(Debug, PartialEq, Eq)]
enum InputEnd {
    /// EOF or the connection went away: stdin was shut down.
    Eof,
    /// The detach sequence: the session ends, the process keeps its stdin.
    Detached,
}

/// Copies client bytes to the process's stdin, watching for the detach
/// sequence. A stdin that stops accepting (process gone) is dropped and the
/// rest of the input discarded, so the client never blocks.
async fn pump_input<R: AsyncRead + Unpin>(
    mut rd: R,
    mut stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    keys: Option<Vec<u8>>,
) -> InputEnd {
    let mut buf = vec![0u8; 32 * 1024];
    let mut matched = 0usize;
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut out = Vec::with_capacity(n + matched);
        let mut detached = false;
        match keys.as_deref() {
            Some(keys) if !keys.is_empty() => {
                for &b in &buf[..n] {
                    if b == keys[matched] {
                        matched += 1;
                        if matched == keys.len() {
                            detached = true;
                            break;
                        }
                    } else {
                        out.extend_from_slice(&keys[..matched]);
                        matched = 0;
                        if b == keys[0] {
                            matched = 1;
                            if keys.len() == 1 {
                                detached = true;
                                break;
                            }
                        } else {
                            out.push(b);
                        }
                    }
                }
            }
            _ => out.extend_from_slice(&buf[..n]),
        }
        if let Some(w) = stdin.as_mut() {
            if !out.is_empty() && (w.write_all(&out).await.is_err() || w.flush().await.is_err()) {
                stdin = None;
            }
        }
        if detached {
            return InputEnd::Detached;
        }
    }
    if let Some(mut w) = stdin {
        let _ = w.shutdown().await;
    }
    InputEnd::Eof
}

/// Answers an attach/exec-start request with the process's stdio: a
/// hijacked connection when the client asked to upgrade, otherwise the same
/// bytes as a streamed 200 body (request body -> stdin).
pub(crate) fn respond(
    upgrade: Option<OnUpgrade>,
    request_body: Body,
    streams: AttachStreams,
    detach_keys: Option<Vec<u8>>,
    version: ReqVersion,
) -> Response {
    let content_type = stream_content_type(streams.tty, version);
    // The escape sequence only makes sense on a terminal; on a pipe it would
    // corrupt binary input that happens to hold ctrl-p.
    let keys = if streams.tty { detach_keys } else { None };
    match upgrade {
        Some(on_upgrade) => {
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(upgraded) => run_hijacked(TokioIo::new(upgraded), streams, keys).await,
                    Err(e) => tracing::debug!(error = %e, "client went away before the upgrade"),
                }
            });
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            resp.extensions_mut()
                .insert(hyper::ext::ReasonPhrase::from_static(b"UPGRADED"));
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, content_type);
            h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
            resp
        }
        None => {
            let AttachStreams { tty, stdin, output } = streams;
            if let Some(stdin) = stdin {
                let body = tokio_util::io::StreamReader::new(
                    request_body
                        .into_data_stream()
                        .map(|r| r.map_err(std::io::Error::other)),
                );
                tokio::spawn(pump_input(body, Some(stdin), None));
            }
            let mut resp = Response::new(Body::from_stream(
                output.map(move |c| Ok::<_, std::io::Error>(encode(tty, c))),
            ));
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, content_type);
            resp
        }
    }
}

/// Pumps both directions of a hijacked connection. Output keeps flowing
/// after the client's half-close; the connection closes when output ends or
/// the client detaches.
async fn run_hijacked<IO>(io: IO, streams: AttachStreams, keys: Option<Vec<u8>>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let AttachStreams { tty, stdin, output } = streams;
    let (rd, mut wr) = tokio::io::split(io);
    let (detach_tx, detach_rx) = tokio::sync::oneshot::channel::<()>();
    let input = tokio::spawn(async move {
        if pump_input(rd, stdin, keys).await == InputEnd::Detached {
            let _ = detach_tx.send(());
        }
    });
    let detached = async move {
        if detach_rx.await.is_err() {
            // Input ended normally: only output decides from now on.
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(detached);
    tokio::time::sleep(FIRST_PAYLOAD_DELAY).await;
    let _ = pump_output(&mut wr, output, tty, &mut detached).await;
    let _ = wr.shutdown().await;
    input.abort();
}

async fn pump_output<W: AsyncWrite + Unpin>(
    wr: &mut W,
    mut output: BoxStream<OutputChunk>,
    tty: bool,
    detached: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> std::io::Result<()> {
    loop {
        tokio::select! {
            biased;
            _ = &mut *detached => return Ok(()),
            chunk = output.next() => match chunk {
                Some(c) => {
                    wr.write_all(&encode(tty, c)).await?;
                    wr.flush().await?;
                }
                None => return Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_docker_header() {
        let f = frame(StdStream::Stderr, b"hi\n");
        assert_eq!(&f[..], &[2, 0, 0, 0, 0, 0, 0, 3, b'h', b'i', b'\n']);
        let raw = encode(
            true,
            OutputChunk {
                stream: StdStream::Stdout,
                data: Bytes::from_static(b"x"),
            },
        );
        assert_eq!(&raw[..], b"x");
    }

    #[test]
    fn detach_key_notation() {
        assert_eq!(parse_detach_keys(None).unwrap(), vec![0x10, 0x11]);
        assert_eq!(
            parse_detach_keys(Some("ctrl-a,x,ctrl-@,ctrl-_")).unwrap(),
            vec![1, b'x', 0, 31]
        );
        assert!(parse_detach_keys(Some("ctrl-1")).is_err());
        assert!(parse_detach_keys(Some("abc")).is_err());
    }

    #[tokio::test]
    async fn input_stops_at_detach_keys_and_passes_the_rest() {
        let (w, mut r) = tokio::io::duplex(1024);
        let input: &[u8] = b"ab\x10c\x10\x11zz";
        let end = pump_input(input, Some(Box::new(w)), Some(vec![0x10, 0x11])).await;
        assert_eq!(end, InputEnd::Detached);
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ab\x10c");
    }

    #[tokio::test]
    async fn input_eof_shuts_stdin_down() {
        let (w, mut r) = tokio::io::duplex(1024);
        let end = pump_input(&b"data"[..], Some(Box::new(w)), None).await;
        assert_eq!(end, InputEnd::Eof);
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"data");
    }
}
