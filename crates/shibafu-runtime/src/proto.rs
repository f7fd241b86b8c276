//! The supervisor's wire protocol, spoken over `run_dir/sup.sock` (a unix
//! stream socket, mode 0600).
//!
//! Everything is a frame: `kind: u8`, `len: u32` (little endian), then
//! `len` bytes of payload (at most [`MAX_FRAME`]). A connection carries
//! exactly one request:
//!
//! 1. The client sends one [`REQUEST`] frame (JSON [`Request`]).
//! 2. The supervisor answers one [`RESPONSE`] frame (JSON [`Response`]).
//!    `Wait` is answered only when the container has exited, with the
//!    [`crate::ExitStatus`].
//! 3. `Attach` and `Exec` connections then become streams:
//!    - supervisor -> client: [`STDOUT`] / [`STDERR`] frames (raw bytes),
//!      and finally one [`EXIT`] frame (JSON `ExitStatus` for the container,
//!      JSON `i32` exit code for an exec) after the output is drained;
//!    - client -> supervisor: [`STDIN`] frames (raw bytes) and one
//!      [`STDIN_EOF`] frame when the client's input ends (a half-close).
//!
//!    Closing the socket detaches; the process keeps running.
//!
//! Why this shape: one request per connection keeps the supervisor's state
//! machine trivial (no multiplexing), and framing keeps stdout/stderr
//! separate and lets stdin EOF be signalled without closing the output
//! direction.

use serde::{Deserialize, Serialize};

use crate::config::Resources;
use crate::spec::ExecSpec;

pub const REQUEST: u8 = 1;
pub const RESPONSE: u8 = 2;
pub const STDOUT: u8 = 3;
pub const STDERR: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDIN_EOF: u8 = 6;
pub const EXIT: u8 = 7;

/// Largest accepted payload.
pub const MAX_FRAME: usize = 1 << 20;
pub const HEADER: usize = 5;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Request {
    /// Pids and state; used by `connect`.
    Info,
    /// Let the created container's process exec.
    Start,
    Signal(i32),
    Pause,
    Resume,
    Update(Resources),
    /// Resize the container's tty (`exec: None`) or an exec's (its pid).
    Resize {
        rows: u16,
        cols: u16,
        exec: Option<i32>,
    },
    /// Answered when the container exits.
    Wait,
    Attach {
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    Exec(ExecSpec),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Paused,
    Exited,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Response {
    Ok,
    Info {
        container_pid: i32,
        supervisor_pid: i32,
        state: State,
    },
    Exited(crate::ExitStatus),
    ExecStarted {
        pid: i32,
    },
    Error(String),
}

/// What the supervisor writes to its ready pipe once (JSON, one line).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Ready {
    Created {
        container_pid: i32,
        supervisor_pid: i32,
    },
    Failed(String),
}

/// Appends a frame to `out`.
pub fn encode(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

pub fn encode_json<T: Serialize>(kind: u8, v: &T, out: &mut Vec<u8>) {
    let payload = serde_json::to_vec(v).unwrap_or_default();
    encode(kind, &payload, out);
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

/// Takes one complete frame off the front of `buf`, if there is one.
pub fn decode(buf: &mut Vec<u8>) -> Result<Option<(u8, Vec<u8>)>, FrameError> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if buf.len() < HEADER + len {
        return Ok(None);
    }
    let kind = buf[0];
    let payload = buf[HEADER..HEADER + len].to_vec();
    buf.drain(..HEADER + len);
    Ok(Some((kind, payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_roundtrip_in_pieces() {
        let mut wire = Vec::new();
        encode_json(REQUEST, &Request::Signal(9), &mut wire);
        encode(STDIN, b"hello", &mut wire);
        encode(STDIN_EOF, b"", &mut wire);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for b in wire {
            buf.push(b);
            while let Some(f) = decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 3);
        let req: Request = serde_json::from_slice(&got[0].1).unwrap();
        assert_eq!(req, Request::Signal(9));
        assert_eq!(got[1], (STDIN, b"hello".to_vec()));
        assert_eq!(got[2], (STDIN_EOF, vec![]));
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_frames_are_rejected() {
        let mut buf = vec![STDIN];
        buf.extend_from_slice(&((MAX_FRAME + 1) as u32).to_le_bytes());
        assert_eq!(decode(&mut buf), Err(FrameError::TooLarge(MAX_FRAME + 1)));
    }
}
