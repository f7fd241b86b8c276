//! Docker's multiplexed stream: 8-byte header `[stream, 0, 0, 0, len u32 BE]` then the
//! payload. Used for attach/exec/logs output when the container has no tty.

/// Which stream a frame belongs to (header byte 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdStream {
    Stdin,
    Stdout,
    Stderr,
    /// Stream 3: the daemon reports an error inside the stream (docker's `systemErr`).
    SysErr,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DemuxError {
    #[error("unrecognized input header: {0}")]
    BadHeader(u8),
}

/// Incremental demultiplexer: feed it bytes as they arrive, get whole or partial frames
/// back. Payloads are handed out as soon as they arrive (not held until the frame is
/// complete) so interactive output is not delayed.
#[derive(Debug, Default)]
pub struct Demuxer {
    header: Vec<u8>,
    current: Option<(StdStream, usize)>,
}

impl Demuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes `data` and returns the payload pieces it completed, in order.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<Vec<(StdStream, Vec<u8>)>, DemuxError> {
        let mut out: Vec<(StdStream, Vec<u8>)> = Vec::new();
        while !data.is_empty() {
            match self.current {
                Some((stream, remaining)) => {
                    let n = remaining.min(data.len());
                    match out.last_mut() {
                        Some((s, buf)) if *s == stream => buf.extend_from_slice(&data[..n]),
                        _ => out.push((stream, data[..n].to_vec())),
                    }
                    data = &data[n..];
                    self.current = if remaining == n {
                        None
                    } else {
                        Some((stream, remaining - n))
                    };
                }
                None => {
                    let need = 8 - self.header.len();
                    let n = need.min(data.len());
                    self.header.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.header.len() == 8 {
                        let stream = match self.header[0] {
                            0 => StdStream::Stdin,
                            1 => StdStream::Stdout,
                            2 => StdStream::Stderr,
                            3 => StdStream::SysErr,
                            b => return Err(DemuxError::BadHeader(b)),
                        };
                        let len = u32::from_be_bytes([
                            self.header[4],
                            self.header[5],
                            self.header[6],
                            self.header[7],
                        ]) as usize;
                        self.header.clear();
                        if len > 0 {
                            self.current = Some((stream, len));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// True when the input ended cleanly on a frame boundary.
    pub fn is_idle(&self) -> bool {
        self.header.is_empty() && self.current.is_none()
    }
}

/// Builds one frame (used by tests and fakes).
pub fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![stream, 0, 0, 0];
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demux_whole_frames() {
        let mut d = Demuxer::new();
        let mut input = frame(1, b"hello\n");
        input.extend(frame(2, b"oops\n"));
        let out = d.feed(&input).unwrap();
        assert_eq!(
            out,
            vec![
                (StdStream::Stdout, b"hello\n".to_vec()),
                (StdStream::Stderr, b"oops\n".to_vec())
            ]
        );
        assert!(d.is_idle());
    }

    #[test]
    fn demux_byte_by_byte() {
        let mut d = Demuxer::new();
        let mut input = frame(1, b"abc");
        input.extend(frame(2, b"de"));
        input.extend(frame(1, b""));
        input.extend(frame(1, b"f"));
        let mut got_out = Vec::new();
        let mut got_err = Vec::new();
        for b in &input {
            for (s, p) in d.feed(std::slice::from_ref(b)).unwrap() {
                match s {
                    StdStream::Stdout => got_out.extend(p),
                    StdStream::Stderr => got_err.extend(p),
                    _ => panic!("unexpected stream"),
                }
            }
        }
        assert_eq!(got_out, b"abcf");
        assert_eq!(got_err, b"de");
        assert!(d.is_idle());
    }

    #[test]
    fn demux_partial_frame_is_not_idle() {
        let mut d = Demuxer::new();
        let input = frame(1, b"abcdef");
        let out = d.feed(&input[..10]).unwrap();
        assert_eq!(out, vec![(StdStream::Stdout, b"ab".to_vec())]);
        assert!(!d.is_idle());
    }

    #[test]
    fn demux_rejects_bad_header() {
        let mut d = Demuxer::new();
        assert_eq!(
            d.feed(&[9, 0, 0, 0, 0, 0, 0, 1, b'x']),
            Err(DemuxError::BadHeader(9))
        );
    }
}
