//! Docker's json-file log format: one JSON object per line,
//! `{"log":"hi\n","stream":"stdout","time":"2024-01-01T00:00:00.000000001Z"}`,
//! rotated by size into `<path>.1 .. <path>.<max_file-1>`.
//!
//! The writer is used by the supervisor (blocking, small buffers); the
//! reader by the engine (`logs --tail --since --until -f`). Following keeps
//! reading as the file grows, survives rotation and truncation, and ends
//! when the caller's stop future resolves (the container stopped) and the
//! file has been drained.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::config::LogConfig;
use crate::OutputStream;

/// A line longer than this is written as several entries (as Docker does
/// with its 16 KiB buffer), so memory stays bounded.
pub const MAX_PARTIAL: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log file {path}: {err}")]
    Io { path: PathBuf, err: io::Error },
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> LogError + '_ {
    move |err| LogError::Io {
        path: path.to_path_buf(),
        err,
    }
}

#[derive(Serialize)]
struct EntryOut<'a> {
    log: &'a str,
    stream: &'a str,
    time: &'a str,
}

#[derive(Deserialize)]
struct EntryIn {
    log: String,
    stream: String,
    time: String,
}

/// Docker's timestamp format (RFC 3339, nanoseconds, UTC).
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Writes a container's output as json-file entries, with rotation.
pub struct LogWriter {
    path: PathBuf,
    max_size: Option<u64>,
    max_file: u32,
    file: Option<File>,
    size: u64,
    /// Incomplete last line per stream (stdout, stderr).
    partial: [Vec<u8>; 2],
    scratch: Vec<u8>,
}

impl LogWriter {
    /// Opens (appending) the log; an empty path disables logging.
    pub fn open(cfg: &LogConfig) -> Result<LogWriter, LogError> {
        let mut w = LogWriter {
            path: cfg.path.clone(),
            max_size: cfg.max_size.filter(|s| *s > 0),
            max_file: cfg.max_file.max(1),
            file: None,
            size: 0,
            partial: [Vec::new(), Vec::new()],
            scratch: Vec::new(),
        };
        if !cfg.path.as_os_str().is_empty() {
            if let Some(parent) = cfg.path.parent() {
                std::fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&cfg.path)
                .map_err(io_err(&cfg.path))?;
            w.size = f.metadata().map(|m| m.len()).unwrap_or(0);
            w.file = Some(f);
        }
        Ok(w)
    }

    fn idx(stream: OutputStream) -> usize {
        match stream {
            OutputStream::Stdout => 0,
            OutputStream::Stderr => 1,
        }
    }

    /// Appends one entry to the pending writes. Rotation is decided per
    /// entry, as Docker's json-file does: when this entry would take the file
    /// past `max-size`, what is pending goes to the current file, the file
    /// rotates and this entry starts the new one (an entry larger than
    /// max-size on its own still goes whole).
    fn push_entry(
        &mut self,
        stream: OutputStream,
        line: &[u8],
        time: &str,
    ) -> Result<(), LogError> {
        let start = self.scratch.len();
        let log = String::from_utf8_lossy(line);
        let e = EntryOut {
            log: &log,
            stream: stream.as_str(),
            time,
        };
        let _ = serde_json::to_writer(&mut self.scratch, &e);
        self.scratch.push(b'\n');
        if let Some(max) = self.max_size {
            let before = self.size + start as u64;
            if before > 0 && before + (self.scratch.len() - start) as u64 > max {
                let this = self.scratch.split_off(start);
                self.write_scratch()?;
                self.rotate()?;
                self.scratch = this;
            }
        }
        Ok(())
    }

    /// Logs a chunk of output: complete lines become entries; an
    /// unterminated tail waits for the rest of its line.
    pub fn write(&mut self, stream: OutputStream, data: &[u8]) -> Result<(), LogError> {
        if self.file.is_none() {
            return Ok(());
        }
        let time = now_rfc3339();
        let i = Self::idx(stream);
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(nl + 1);
            if self.partial[i].is_empty() {
                self.push_entry(stream, line, &time)?;
            } else {
                let mut full = std::mem::take(&mut self.partial[i]);
                full.extend_from_slice(line);
                self.push_entry(stream, &full, &time)?;
            }
            rest = tail;
        }
        self.partial[i].extend_from_slice(rest);
        while self.partial[i].len() >= MAX_PARTIAL {
            let chunk: Vec<u8> = self.partial[i].drain(..MAX_PARTIAL).collect();
            self.push_entry(stream, &chunk, &time)?;
        }
        if self.partial[i].capacity() > MAX_PARTIAL * 2 {
            self.partial[i].shrink_to(MAX_PARTIAL);
        }
        self.write_scratch()
    }

    /// Writes out unterminated lines (at exit).
    pub fn flush_partial(&mut self) -> Result<(), LogError> {
        let time = now_rfc3339();
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            let i = Self::idx(stream);
            if !self.partial[i].is_empty() {
                let p = std::mem::take(&mut self.partial[i]);
                self.push_entry(stream, &p, &time)?;
            }
        }
        self.write_scratch()
    }

    /// Writes the pending entries to the current file (rotation was already
    /// decided entry by entry).
    fn write_scratch(&mut self) -> Result<(), LogError> {
        if self.scratch.is_empty() {
            return Ok(());
        }
        let res = match self.file.as_mut() {
            Some(f) => f.write_all(&self.scratch),
            None => Ok(()),
        };
        self.size += self.scratch.len() as u64;
        self.scratch.clear();
        if self.scratch.capacity() > 64 * 1024 {
            self.scratch.shrink_to(4096);
        }
        res.map_err(io_err(&self.path))
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> Result<(), LogError> {
        if self.max_file <= 1 {
            if let Some(f) = &self.file {
                f.set_len(0).map_err(io_err(&self.path))?;
            }
            self.size = 0;
            return Ok(());
        }
        let _ = std::fs::remove_file(self.rotated(self.max_file - 1));
        for n in (1..self.max_file - 1).rev() {
            let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
        }
        std::fs::rename(&self.path, self.rotated(1)).map_err(io_err(&self.path))?;
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        self.file = Some(f);
        self.size = 0;
        Ok(())
    }
}

/// One log entry as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub stream: OutputStream,
    /// As stored (RFC 3339 with nanoseconds).
    pub time: String,
    pub bytes: Bytes,
}

impl LogEntry {
    pub fn timestamp(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.time)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// What to read.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Only the last N entries (of those passing since/until).
    pub tail: Option<usize>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub follow: bool,
    /// Include stdout / stderr entries (both when neither is set).
    pub stdout: bool,
    pub stderr: bool,
}

impl ReadOptions {
    fn wants(&self, e: &LogEntry) -> bool {
        let streams_ok = match (self.stdout, self.stderr) {
            (false, false) => true,
            (o, er) => match e.stream {
                OutputStream::Stdout => o,
                OutputStream::Stderr => er,
            },
        };
        if !streams_ok {
            return false;
        }
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(t) = e.timestamp() else {
            return true;
        };
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }
}

pub fn parse_line(line: &[u8]) -> Option<LogEntry> {
    let e: EntryIn = serde_json::from_slice(line).ok()?;
    let stream = match e.stream.as_str() {
        "stderr" => OutputStream::Stderr,
        _ => OutputStream::Stdout,
    };
    Some(LogEntry {
        stream,
        time: e.time,
        bytes: Bytes::from(e.log.into_bytes()),
    })
}

fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s = path.to_path_buf().into_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn parse_complete_lines(buf: &mut Vec<u8>, opts: &ReadOptions, out: &mut Vec<LogEntry>) {
    let mut start = 0;
    while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
        if let Some(e) = parse_line(&buf[start..start + nl]) {
            if opts.wants(&e) {
                out.push(e);
            }
        }
        start += nl + 1;
    }
    buf.drain(..start);
}

/// Reads the whole log (rotated files first, oldest first).
pub fn read_log(cfg: &LogConfig, opts: &ReadOptions) -> Vec<LogEntry> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = (1..cfg.max_file.max(1))
        .rev()
        .map(|n| rotated_path(&cfg.path, n))
        .collect();
    files.push(cfg.path.clone());
    for f in files {
        if let Ok(mut data) = std::fs::read(&f) {
            if !data.ends_with(b"\n") {
                // A writer may be mid-line; the rest is picked up by follow.
                let cut = data.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
                data.truncate(cut);
            }
            parse_complete_lines(&mut data, opts, &mut out);
        }
    }
    if let Some(n) = opts.tail {
        let skip = out.len().saturating_sub(n);
        out.drain(..skip);
    }
    out
}

/// The live file being followed.
struct Tail {
    path: PathBuf,
    file: Option<File>,
    ino: u64,
    offset: u64,
    buf: Vec<u8>,
}

impl Tail {
    /// Starts at the end of the part `read_log` already returned.
    fn new(path: &Path) -> Tail {
        let mut t = Tail {
            path: path.to_path_buf(),
            file: None,
            ino: 0,
            offset: 0,
            buf: Vec::new(),
        };
        if let Ok(f) = File::open(path) {
            if let Ok(md) = f.metadata() {
                t.ino = md.ino();
                // Resume after the last complete line.
                let data = std::fs::read(path).unwrap_or_default();
                t.offset = data.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1) as u64;
            }
            t.file = Some(f);
        }
        t
    }

    fn read_more(&mut self, opts: &ReadOptions, out: &mut Vec<LogEntry>) {
        if let Some(f) = self.file.as_mut() {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < self.offset {
                // Truncated in place (max-file=1 rotation).
                self.offset = 0;
                self.buf.clear();
            }
            if f.seek(SeekFrom::Start(self.offset)).is_ok() {
                let mut chunk = Vec::new();
                if let Ok(n) = f.read_to_end(&mut chunk) {
                    self.offset += n as u64;
                    self.buf.extend_from_slice(&chunk);
                    parse_complete_lines(&mut self.buf, opts, out);
                }
            }
        }
        // Rotated away? Finish the old file (done above), then switch.
        let cur = std::fs::metadata(&self.path).ok().map(|m| m.ino());
        if cur.is_some() && cur != Some(self.ino) {
            if let Ok(f) = File::open(&self.path) {
                self.ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
                self.file = Some(f);
                self.offset = 0;
                self.buf.clear();
                self.read_more(opts, out);
            }
        }
    }
}

/// A stream of log entries (see [`follow_log`]).
pub struct LogStream {
    rx: tokio::sync::mpsc::Receiver<LogEntry>,
}

impl futures::Stream for LogStream {
    type Item = LogEntry;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LogEntry>> {
        self.rx.poll_recv(cx)
    }
}

/// Reads the log like [`read_log`]; with `opts.follow`, then keeps
/// yielding new entries until `stop` resolves (and what was written before
/// it has been read). Must be called within a tokio runtime.
pub fn follow_log<F>(cfg: &LogConfig, opts: ReadOptions, stop: F) -> LogStream
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let cfg = cfg.clone();
    tokio::spawn(async move {
        let path = cfg.path.clone();
        let (initial, mut tail) = {
            let cfg = cfg.clone();
            let o = opts.clone();
            tokio::task::spawn_blocking(move || {
                // Open the tail first so nothing written meanwhile is lost
                // (a duplicate-free handover: both use "last newline").
                let tail = Tail::new(&cfg.path);
                let mut entries = read_log(&cfg, &o);
                // Entries past the tail offset would be read twice.
                let live = std::fs::read(&cfg.path).unwrap_or_default();
                let extra = live.len() as u64 > tail.offset;
                if extra {
                    let mut after = live[tail.offset as usize..].to_vec();
                    let mut dup = Vec::new();
                    parse_complete_lines(&mut after, &o, &mut dup);
                    let keep = entries.len().saturating_sub(dup.len());
                    entries.truncate(keep);
                }
                (entries, tail)
            })
            .await
            .unwrap_or_else(|_| (Vec::new(), Tail::new(&path)))
        };
        for e in initial {
            if tx.send(e).await.is_err() {
                return;
            }
        }
        if !opts.follow {
            return;
        }
        let mut stop = Box::pin(stop);
        let mut stopping = false;
        loop {
            let mut out = Vec::new();
            tail.read_more(&opts, &mut out);
            for e in out {
                if let Some(u) = opts.until {
                    if e.timestamp().is_some_and(|t| t > u) {
                        return;
                    }
                }
                if tx.send(e).await.is_err() {
                    return;
                }
            }
            if stopping {
                return;
            }
            tokio::select! {
                _ = &mut stop => { stopping = true; }
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = tx.closed() => return,
            }
        }
    });
    LogStream { rx }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn cfg(dir: &Path, max_size: Option<u64>, max_file: u32) -> LogConfig {
        LogConfig {
            path: dir.join("c-json.log"),
            max_size,
            max_file,
        }
    }

    #[test]
    fn writes_docker_json_lines() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(d.path(), None, 1);
        let mut w = LogWriter::open(&c).unwrap();
        w.write(OutputStream::Stdout, b"hel").unwrap();
        w.write(OutputStream::Stderr, b"oops\n").unwrap();
        w.write(OutputStream::Stdout, b"lo\nwor\"ld\n\xff").unwrap();
        w.flush_partial().unwrap();
        let text = std::fs::read_to_string(&c.path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["log"], "oops\n");
        assert_eq!(lines[0]["stream"], "stderr");
        assert_eq!(lines[1]["log"], "hello\n");
        assert_eq!(lines[2]["log"], "wor\"ld\n");
        assert_eq!(lines[3]["log"], "\u{fffd}");
        let t = lines[1]["time"].as_str().unwrap();
        assert!(t.ends_with('Z') && t.len() == 30, "{t}");
        assert!(DateTime::parse_from_rfc3339(t).is_ok());
    }

    #[test]
    fn long_lines_are_split() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(d.path(), None, 1);
        let mut w = LogWriter::open(&c).unwrap();
        w.write(OutputStream::Stdout, &vec![b'a'; MAX_PARTIAL + 10])
            .unwrap();
        w.write(OutputStream::Stdout, b"\n").unwrap();
        let all = read_log(&c, &ReadOptions::default());
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].bytes.len(), MAX_PARTIAL);
        assert_eq!(&all[1].bytes[..], &b"aaaaaaaaaa\n"[..]);
    }

    /// One read can carry many lines; max-size holds per entry, not per read.
    #[test]
    fn one_big_chunk_still_rotates_at_max_size() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(d.path(), Some(2048), 2);
        let mut w = LogWriter::open(&c).unwrap();
        let chunk: String = (1..=500).map(|i| format!("line-{i}\n")).collect();
        w.write(OutputStream::Stdout, chunk.as_bytes()).unwrap();
        for p in [c.path.clone(), rotated_path(&c.path, 1)] {
            let len = std::fs::metadata(&p).unwrap().len();
            assert!(len > 0 && len <= 2048, "{} is {len} bytes", p.display());
        }
        assert!(!rotated_path(&c.path, 2).exists());
        let all = read_log(&c, &ReadOptions::default());
        assert_eq!(&all.last().unwrap().bytes[..], b"line-500\n");
        assert!(all.len() < 500);
    }

    #[test]
    fn rotation_keeps_max_file_and_reader_spans_files() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(d.path(), Some(200), 3);
        let mut w = LogWriter::open(&c).unwrap();
        for i in 0..30 {
            w.write(OutputStream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert!(c.path.exists());
        assert!(rotated_path(&c.path, 1).exists());
        assert!(rotated_path(&c.path, 2).exists());
        assert!(!rotated_path(&c.path, 3).exists());
        for n in [0, 1, 2] {
            let p = if n == 0 {
                c.path.clone()
            } else {
                rotated_path(&c.path, n)
            };
            assert!(std::fs::metadata(&p).unwrap().len() <= 200);
        }
        let all = read_log(&c, &ReadOptions::default());
        assert!(all.len() < 30 && all.len() > 3);
        assert_eq!(&all.last().unwrap().bytes[..], b"line 29\n");
        // Contiguous, oldest first.
        let nums: Vec<u32> = all
            .iter()
            .map(|e| {
                std::str::from_utf8(&e.bytes).unwrap()[5..]
                    .trim()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");

        let tail = read_log(
            &c,
            &ReadOptions {
                tail: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(&tail[0].bytes[..], b"line 28\n");
    }

    #[test]
    fn max_file_one_truncates() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(d.path(), Some(100), 1);
        let mut w = LogWriter::open(&c).unwrap();
        for i in 0..20 {
            w.write(OutputStream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert!(std::fs::metadata(&c.path).unwrap().len() <= 100);
        assert!(!rotated_path(&c.path, 1).exists());
        let all = read_log(&c, &ReadOptions::default());
        assert_eq!(&all.last().unwrap().bytes[..], b"line 19\n");
    }

    #[test]
    fn since_until_and_stream_filters() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(d.path(), None, 1);
        let lines = [
            r#"{"log":"a\n","stream":"stdout","time":"2024-01-01T00:00:01.000000000Z"}"#,
            r#"{"log":"b\n","stream":"stderr","time":"2024-01-01T00:00:02.000000000Z"}"#,
            r#"{"log":"c\n","stream":"stdout","time":"2024-01-01T00:00:03.000000000Z"}"#,
        ];
        std::fs::write(&c.path, lines.join("\n") + "\n").unwrap();
        let t = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
        let got = read_log(
            &c,
            &ReadOptions {
                since: t("2024-01-01T00:00:02Z"),
                ..Default::default()
            },
        );
        assert_eq!(got.len(), 2);
        let got = read_log(
            &c,
            &ReadOptions {
                until: t("2024-01-01T00:00:02Z"),
                ..Default::default()
            },
        );
        assert_eq!(got.len(), 2);
        let got = read_log(
            &c,
            &ReadOptions {
                stderr: true,
                ..Default::default()
            },
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].stream, OutputStream::Stderr);
    }

    #[tokio::test]
    async fn follow_sees_growth_and_rotation_then_stops() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(d.path(), Some(300), 2);
        let mut w = LogWriter::open(&c).unwrap();
        w.write(OutputStream::Stdout, b"first\n").unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut s = follow_log(
            &c,
            ReadOptions {
                follow: true,
                ..Default::default()
            },
            async move {
                let _ = stop_rx.await;
            },
        );
        let e = s.next().await.unwrap();
        assert_eq!(&e.bytes[..], b"first\n");
        // Enough to rotate several times.
        for i in 0..20 {
            w.write(OutputStream::Stdout, format!("n{i:02}\n").as_bytes())
                .unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        stop_tx.send(()).unwrap();
        let mut got = Vec::new();
        while let Some(e) = s.next().await {
            got.push(String::from_utf8(e.bytes.to_vec()).unwrap());
        }
        let want: Vec<String> = (0..20).map(|i| format!("n{i:02}\n")).collect();
        assert_eq!(got, want);
    }
}
