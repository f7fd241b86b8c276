//! Attach, logs and exec: the stdio side of containers.

use std::sync::Arc;

use bollard_stubs::models::{
    ExecConfig, ExecInspectResponse, ExecStartConfig, IdResponse, ProcessConfig,
};
use chrono::{TimeZone, Utc};
use futures::StreamExt;
use parking_lot::Mutex;
use shibafu_api::{
    AttachOptions, AttachStreams, BoxStream, LogEntry, LogsOptions, LogsStream, OutputChunk,
    StdStream,
};
use shibafu_runtime::logfile::{follow_log, ReadOptions};
use shibafu_runtime::{LogConfig, OutputStream};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::ctr::{Ctr, PendingAttach};
use crate::error::{EngineError, Result};
use crate::lifecycle::start_failure_code;
use crate::model::Status;
use crate::ports::{ExecProcess, ExecSpec, Stdio, StdioRequest};
use crate::Engine;

/// Connect a process's stdio to an attach client's buffered stdin and
/// output channel.
pub fn pipe_stdio(
    stdio: Stdio,
    stdin: Option<tokio::io::ReadHalf<tokio::io::SimplexStream>>,
    out: mpsc::Sender<OutputChunk>,
) {
    if let (Some(mut r), Some(mut w)) = (stdin, stdio.stdin) {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        });
    }
    let mut output = stdio.output;
    tokio::spawn(async move {
        while let Some(c) = output.next().await {
            if out.send(c).await.is_err() {
                break;
            }
        }
    });
}

fn to_std(s: OutputStream) -> StdStream {
    match s {
        OutputStream::Stdout => StdStream::Stdout,
        OutputStream::Stderr => StdStream::Stderr,
    }
}

fn unix_to_dt(t: f64) -> chrono::DateTime<Utc> {
    let secs = t.floor() as i64;
    let nanos = ((t - t.floor()) * 1e9) as u32;
    Utc.timestamp_opt(secs, nanos).single().unwrap_or_default()
}

/// One exec instance (kept in memory, like Docker).
pub struct Exec {
    pub id: String,
    pub container_id: String,
    pub config: ExecConfig,
    pub state: Mutex<ExecState>,
    pub process: Mutex<Option<Arc<dyn ExecProcess>>>,
}

#[derive(Debug, Clone, Default)]
pub struct ExecState {
    pub started: bool,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub pid: i64,
}

impl Engine {
    fn log_config(&self, rec: &crate::model::ContainerRecord) -> LogConfig {
        LogConfig {
            path: self.log_path(&rec.id),
            max_size: rec.log_max_size,
            max_file: rec.log_max_file.max(1),
        }
    }

    /// Entries of the json-file log; with `follow`, until the container stops.
    pub(crate) fn logs(&self, reference: &str, opts: LogsOptions) -> Result<LogsStream> {
        let c = self.lookup(reference)?;
        if !opts.stdout && !opts.stderr {
            return Err(EngineError::Invalid(
                "Bad parameters: you must choose at least one stream".into(),
            ));
        }
        let rec = c.rec();
        let ro = ReadOptions {
            tail: opts.tail,
            since: opts.since.filter(|s| *s > 0.0).map(unix_to_dt),
            until: opts.until.filter(|s| *s > 0.0).map(unix_to_dt),
            follow: opts.follow,
            stdout: opts.stdout,
            stderr: opts.stderr,
        };
        let mut rx = c.wait_tx.subscribe();
        let stop = async move {
            loop {
                if !rx.borrow_and_update().running {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        let stream = follow_log(&self.log_config(&rec), ro, stop).map(|e| LogEntry {
            stream: to_std(e.stream),
            time: e.time,
            data: e.bytes,
        });
        Ok(LogsStream {
            tty: rec.tty(),
            entries: Box::pin(stream),
        })
    }

    pub(crate) async fn attach(
        &self,
        reference: &str,
        opts: AttachOptions,
    ) -> Result<AttachStreams> {
        let c = self.lookup(reference)?;
        let rec = c.rec();
        let tty = rec.tty();
        let req = StdioRequest {
            stdin: opts.stdin && rec.config.open_stdin.unwrap_or(false),
            stdout: opts.stdout,
            stderr: opts.stderr,
        };
        let replay: BoxStream<OutputChunk> = if opts.logs {
            let ro = ReadOptions {
                stdout: opts.stdout,
                stderr: opts.stderr,
                ..Default::default()
            };
            Box::pin(
                follow_log(&self.log_config(&rec), ro, async {}).map(|e| OutputChunk {
                    stream: to_std(e.stream),
                    data: e.bytes,
                }),
            )
        } else {
            Box::pin(futures::stream::empty())
        };
        if !opts.stream {
            return Ok(AttachStreams {
                tty,
                stdin: None,
                output: replay,
            });
        }
        let _g = c.op.lock().await;
        let status = c.status();
        let streams = match (status, c.supervisor()) {
            (Status::Running | Status::Paused, Some(sup)) => {
                let stdio = sup.attach(req).await.map_err(EngineError::Runtime)?;
                AttachStreams {
                    tty,
                    stdin: if req.stdin { stdio.stdin } else { None },
                    output: Box::pin(replay.chain(stdio.output)),
                }
            }
            (Status::Removing | Status::Dead, _) => {
                return Err(EngineError::Conflict(format!(
                    "container {} is being removed",
                    c.id
                )))
            }
            _ => {
                // Not running yet: buffer until start wires it up.
                let (tx, rx) = mpsc::channel(64);
                let (stdin_r, stdin_w) = if req.stdin {
                    let (r, w) = tokio::io::simplex(64 * 1024);
                    (Some(r), Some(w))
                } else {
                    (None, None)
                };
                c.pending.lock().push(PendingAttach {
                    req,
                    stdin: stdin_r,
                    out: tx,
                });
                AttachStreams {
                    tty,
                    stdin: stdin_w
                        .map(|w| Box::new(w) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>),
                    output: Box::pin(replay.chain(tokio_stream::wrappers::ReceiverStream::new(rx))),
                }
            }
        };
        self.ctr_event("attach", &rec, &[]);
        Ok(streams)
    }

    pub(crate) async fn resize(&self, reference: &str, height: u16, width: u16) -> Result<()> {
        let c = self.lookup(reference)?;
        match c.supervisor() {
            Some(sup) if c.status().is_live() => sup
                .resize(height, width)
                .await
                .map_err(EngineError::Runtime),
            _ => Err(EngineError::Conflict(format!(
                "Container {} is not running",
                c.id
            ))),
        }
    }

    fn running_ctr(&self, c: &Arc<Ctr>) -> Result<()> {
        match c.status() {
            Status::Running => Ok(()),
            Status::Paused => Err(EngineError::Conflict(format!(
                "Container {} is paused, unpause the container before exec",
                c.id
            ))),
            _ => Err(EngineError::Conflict(format!(
                "container {} is not running",
                c.id
            ))),
        }
    }

    pub(crate) fn exec_new(&self, reference: &str, config: ExecConfig) -> Result<IdResponse> {
        let c = self.lookup(reference)?;
        self.running_ctr(&c)?;
        if config.cmd.as_ref().is_none_or(|c| c.is_empty()) {
            return Err(EngineError::Invalid("No exec command specified".into()));
        }
        let id = crate::names::new_id();
        let exec = Arc::new(Exec {
            id: id.clone(),
            container_id: c.id.clone(),
            config: config.clone(),
            state: Mutex::new(ExecState::default()),
            process: Mutex::new(None),
        });
        self.execs.lock().insert(id.clone(), exec);
        c.exec_ids.lock().push(id.clone());
        let cmd = config.cmd.unwrap_or_default().join(" ");
        self.ctr_event(
            &format!("exec_create: {cmd}"),
            &c.rec(),
            &[("execID", id.clone())],
        );
        Ok(IdResponse { id })
    }

    fn find_exec(&self, id: &str) -> Result<Arc<Exec>> {
        self.execs
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("No such exec instance: {id}")))
    }

    pub(crate) async fn exec_run(
        &self,
        exec_id: &str,
        start: ExecStartConfig,
    ) -> Result<Option<AttachStreams>> {
        let exec = self.find_exec(exec_id)?;
        {
            let mut st = exec.state.lock();
            if st.started {
                return Err(EngineError::Conflict(format!(
                    "Error: Exec command {exec_id} has already run"
                )));
            }
            st.started = true;
        }
        let c = self
            .ctrs
            .lock()
            .get(&exec.container_id)
            .cloned()
            .ok_or_else(|| {
                EngineError::NotFound(format!("No such container: {}", exec.container_id))
            })?;
        if let Err(e) = self.running_ctr(&c) {
            exec.state.lock().started = false;
            return Err(e);
        }
        let sup = c
            .supervisor()
            .ok_or_else(|| EngineError::Conflict(format!("container {} is not running", c.id)))?;
        let rec = c.rec();
        let cfg = &exec.config;
        let detach = start.detach.unwrap_or(false);
        let tty = start.tty.or(cfg.tty).unwrap_or(false);
        let env = crate::spec::merge_env(
            rec.config.env.as_deref().unwrap_or_default(),
            cfg.env.as_deref().unwrap_or_default(),
        );
        let console = start
            .console_size
            .clone()
            .or_else(|| cfg.console_size.clone())
            .filter(|c| c.len() == 2 && c[0] > 0 && c[1] > 0)
            .map(|c| (c[0] as u16, c[1] as u16));
        let spec = ExecSpec {
            args: cfg.cmd.clone().unwrap_or_default(),
            env,
            cwd: cfg
                .working_dir
                .clone()
                .filter(|w| !w.is_empty())
                .or_else(|| rec.config.working_dir.clone().filter(|w| !w.is_empty()))
                .unwrap_or_else(|| "/".into()),
            user: cfg
                .user
                .clone()
                .filter(|u| !u.is_empty())
                .or_else(|| rec.config.user.clone())
                .unwrap_or_default(),
            tty,
            stdin: !detach && cfg.attach_stdin.unwrap_or(false),
            stdout: !detach && cfg.attach_stdout.unwrap_or(false),
            stderr: !detach && cfg.attach_stderr.unwrap_or(false),
            privileged: cfg.privileged.unwrap_or(false),
            console_size: console,
        };
        let cmd = spec.args.join(" ");
        let proc = match sup.exec(spec).await {
            Ok(p) => p,
            Err(m) => {
                {
                    let mut st = exec.state.lock();
                    st.exit_code = Some(start_failure_code(&m));
                    st.running = false;
                }
                self.ctr_event(
                    "exec_die",
                    &rec,
                    &[
                        ("execID", exec.id.clone()),
                        ("exitCode", start_failure_code(&m).to_string()),
                    ],
                );
                if detach {
                    return Err(if start_failure_code(&m) != 128 {
                        EngineError::Invalid(m)
                    } else {
                        EngineError::Runtime(m)
                    });
                }
                // Like Docker: the client is already attached; it reads the
                // error from the stream and the exit code (126/127) from
                // exec inspect.
                let chunk = OutputChunk {
                    stream: StdStream::Stdout,
                    data: bytes::Bytes::from(format!("OCI runtime exec failed: {m}: unknown\r\n")),
                };
                return Ok(Some(AttachStreams {
                    tty,
                    stdin: None,
                    output: Box::pin(futures::stream::iter([chunk])),
                }));
            }
        };
        {
            let mut st = exec.state.lock();
            st.running = true;
            st.pid = proc.pid() as i64;
        }
        *exec.process.lock() = Some(proc.clone());
        self.ctr_event(
            &format!("exec_start: {cmd}"),
            &rec,
            &[("execID", exec.id.clone())],
        );
        let stdio = proc.take_stdio();
        let eng = self.arc();
        let ex = exec.clone();
        let rec2 = rec.clone();
        let (exited_tx, exited_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let code = proc.wait().await;
            {
                let mut st = ex.state.lock();
                st.running = false;
                st.exit_code = Some(code);
            }
            eng.ctr_event(
                "exec_die",
                &rec2,
                &[("execID", ex.id.clone()), ("exitCode", code.to_string())],
            );
            let _ = exited_tx.send(());
        });
        if detach {
            return Ok(None);
        }
        let stdio = stdio.unwrap_or(Stdio {
            stdin: None,
            output: Box::pin(futures::stream::empty()),
        });
        // The stream ends only once the exit code is recorded: the docker
        // CLI reads it with one exec inspect as soon as the stream closes,
        // and the process's output can end before its exit status arrives
        // (a `docker exec c false` must never report 0).
        let exited = futures::stream::once(exited_rx).filter_map(|_| async { None });
        Ok(Some(AttachStreams {
            tty,
            stdin: if cfg.attach_stdin.unwrap_or(false) {
                stdio.stdin
            } else {
                None
            },
            output: Box::pin(stdio.output.chain(exited)),
        }))
    }

    pub(crate) async fn exec_resize_tty(
        &self,
        exec_id: &str,
        height: u16,
        width: u16,
    ) -> Result<()> {
        let exec = self.find_exec(exec_id)?;
        let proc = exec.process.lock().clone();
        match proc {
            Some(p) if exec.state.lock().running => {
                p.resize(height, width).await.map_err(EngineError::Runtime)
            }
            _ => Err(EngineError::Conflict(format!(
                "Exec {exec_id} is not running"
            ))),
        }
    }

    pub(crate) fn exec_view(&self, exec_id: &str) -> Result<ExecInspectResponse> {
        let exec = self.find_exec(exec_id)?;
        let st = exec.state.lock().clone();
        let cfg = &exec.config;
        let cmd = cfg.cmd.clone().unwrap_or_default();
        Ok(ExecInspectResponse {
            can_remove: Some(false),
            detach_keys: Some(cfg.detach_keys.clone().unwrap_or_default()),
            id: Some(exec.id.clone()),
            running: Some(st.running),
            exit_code: st.exit_code,
            process_config: Some(ProcessConfig {
                privileged: Some(cfg.privileged.unwrap_or(false)),
                user: Some(cfg.user.clone().unwrap_or_default()),
                tty: Some(cfg.tty.unwrap_or(false)),
                entrypoint: cmd.first().cloned(),
                arguments: Some(cmd.iter().skip(1).cloned().collect()),
            }),
            open_stdin: Some(cfg.attach_stdin.unwrap_or(false)),
            open_stderr: Some(cfg.attach_stderr.unwrap_or(false)),
            open_stdout: Some(cfg.attach_stdout.unwrap_or(false)),
            container_id: Some(exec.container_id.clone()),
            pid: Some(st.pid),
        })
    }
}
