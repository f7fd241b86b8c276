//! `run`, `create`, `start`, `attach`, `exec`: the commands that hijack a connection
//! and stream a process's stdio.
//!
//! Ordering matters (docker's): for an attached run the attach is hijacked first (so no
//! output is lost), then the wait request is sent and its headers received (so the
//! exit is not missed), and only then is the container started.

use bollard_stubs::models::{ContainerCreateBody, ExecConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::cli::{AttachArgs, CreateArgs, ExecArgs, RunArgs, StartArgs};
use crate::client::{query, read_body, RawStream};
use crate::cmd::{s, seg};
use crate::config::{build_create, collect_env};
use crate::error::{CliError, Result};
use crate::stdcopy::{Demuxer, StdStream};
use crate::term::{self, RawMode};
use crate::Ctx;

/// docker's `toStatusError`: the exit code for a failed start.
pub fn start_error_code(message: &str) -> i32 {
    if message.contains("executable file not found")
        || message.contains("no such file or directory")
        || message.contains("system cannot find the file specified")
    {
        127
    } else if message.contains("permission denied") || message.contains("is a directory") {
        126
    } else {
        125
    }
}

fn is_image_missing(e: &CliError) -> bool {
    match e {
        CliError::Daemon {
            status: 404,
            message,
        } => {
            let m = message.to_lowercase();
            m.contains("image") || m.contains("repository")
        }
        _ => false,
    }
}

/// Pulls `image` for `run`/`create`: progress on stderr, as docker.
pub async fn pull(ctx: &Ctx, image: &str, platform: Option<&str>, quiet: bool) -> Result<()> {
    crate::cmd::registry::pull_for_run(ctx, image, platform, quiet).await
}

/// Creates the container, pulling the image first when the daemon says it is missing
/// (or always, with `--pull always`). Returns the new ID.
async fn create_container(
    ctx: &Ctx,
    name: Option<&str>,
    pull_policy: &str,
    quiet: bool,
    platform: Option<&str>,
    body: &ContainerCreateBody,
) -> Result<String> {
    let image = body.image.clone().unwrap_or_default();
    let mut pairs = Vec::new();
    if let Some(n) = name {
        pairs.push(("name", n.to_string()));
    }
    let path = format!("/containers/create{}", query(&pairs));
    if pull_policy == "always" {
        pull(ctx, &image, platform, quiet).await?;
    }
    let resp = match ctx.client.post_json(&path, Some(body)).await {
        Ok(v) => v,
        Err(e) if is_image_missing(&e) && pull_policy == "missing" => {
            let shown = match crate::auth::Reference::parse(&image) {
                Ok(r) => r.with_default_tag().familiar(),
                Err(_) => image.clone(),
            };
            ctx.errln(&format!("Unable to find image '{shown}' locally"));
            pull(ctx, &image, platform, quiet).await?;
            ctx.client.post_json(&path, Some(body)).await?
        }
        Err(e) => return Err(e),
    };
    for w in resp
        .get("Warnings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(w) = w.as_str() {
            ctx.errln(&format!("WARNING: {w}"));
        }
    }
    let id = s(&resp, "Id").to_string();
    if id.is_empty() {
        return Err(CliError::Http("create response has no Id".into()));
    }
    Ok(id)
}

fn write_cidfile(path: &Option<String>, id: &str) -> Result<()> {
    if let Some(p) = path {
        if std::path::Path::new(p).exists() {
            return Err(CliError::other(format!("container ID file found, make sure the other container isn't running or delete {p}")));
        }
        std::fs::write(p, id).map_err(|e| {
            CliError::other(format!("failed to write the container ID to the file: {e}"))
        })?;
    }
    Ok(())
}

pub async fn create(ctx: &Ctx, a: CreateArgs) -> Result<i32> {
    let cwd = std::env::current_dir()?;
    let mut body = build_create(&a.opts, &a.image, &a.command, &cwd)?;
    if a.opts.tty && ctx.tty_out {
        if let Some((h, w)) = term::size(1) {
            body.host_config
                .get_or_insert_with(Default::default)
                .console_size = Some(vec![h as usize, w as usize]);
        }
    }
    let id = create_container(
        ctx,
        a.opts.name.as_deref(),
        &a.opts.pull,
        a.opts.quiet,
        a.opts.platform.as_deref(),
        &body,
    )
    .await?;
    write_cidfile(&a.opts.cidfile, &id)?;
    ctx.outln(&id);
    Ok(0)
}

/// The running pieces of an attached session that must be torn down at the end.
struct Session {
    _raw: Option<RawMode>,
    helpers: Vec<JoinHandle<()>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for h in &self.helpers {
            h.abort();
        }
    }
}

/// Resize now, and again on every SIGWINCH.
fn resize_task(ctx: &Ctx, path: String) -> Option<JoinHandle<()>> {
    if !ctx.tty_out {
        return None;
    }
    let client = ctx.client.clone();
    Some(tokio::spawn(async move {
        let send = |client: crate::client::Client, path: String| async move {
            if let Some((h, w)) = term::size(1) {
                let _ = client
                    .post::<()>(&format!("{path}?h={h}&w={w}"), None)
                    .await;
            }
        };
        send(client.clone(), path.clone()).await;
        let Ok(mut sig) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        else {
            return;
        };
        while sig.recv().await.is_some() {
            send(client.clone(), path.clone()).await;
        }
    }))
}

/// `--sig-proxy`: forward the signals a user sends us to the container.
fn sig_proxy_task(ctx: &Ctx, id: String) -> JoinHandle<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let client = ctx.client.clone();
    tokio::spawn(async move {
        let kinds = [
            (SignalKind::interrupt(), "SIGINT"),
            (SignalKind::terminate(), "SIGTERM"),
            (SignalKind::hangup(), "SIGHUP"),
            (SignalKind::quit(), "SIGQUIT"),
            (SignalKind::user_defined1(), "SIGUSR1"),
            (SignalKind::user_defined2(), "SIGUSR2"),
        ];
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
        let mut listeners = Vec::new();
        for (k, name) in kinds {
            if let Ok(mut s) = signal(k) {
                let tx = tx.clone();
                listeners.push(tokio::spawn(async move {
                    while s.recv().await.is_some() {
                        if tx.send(name).is_err() {
                            break;
                        }
                    }
                }));
            }
        }
        drop(tx);
        while let Some(name) = rx.recv().await {
            let _ = client
                .post::<()>(
                    &format!("/containers/{}/kill?signal={name}", seg(&id)),
                    None,
                )
                .await;
        }
        for l in listeners {
            l.abort();
        }
    })
}

/// Copies a hijacked stream to our stdout/stderr (demultiplexed unless `tty`), and
/// our stdin to the stream (half-closing it at EOF) when `forward_stdin`.
pub async fn pump(
    ctx: &Ctx,
    conn: Box<dyn RawStream>,
    tty: bool,
    forward_stdin: bool,
) -> Result<()> {
    let (mut rd, mut wr) = tokio::io::split(conn);
    let stdin_task = if forward_stdin {
        ctx.take_stdin().map(|mut input| {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut input, &mut wr).await;
                let _ = wr.shutdown().await;
            })
        })
    } else {
        None
    };
    let mut buf = vec![0u8; 32 * 1024];
    let mut demux = Demuxer::new();
    let mut result = Ok(());
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => {
                result = Err(e.into());
                break;
            }
        };
        if tty {
            ctx.out_bytes(&buf[..n]);
            continue;
        }
        match demux.feed(&buf[..n]) {
            Ok(parts) => {
                for (stream, data) in parts {
                    match stream {
                        StdStream::Stdout | StdStream::Stdin => ctx.out_bytes(&data),
                        StdStream::Stderr => ctx.err_bytes(&data),
                        StdStream::SysErr => {
                            result = Err(CliError::Daemon {
                                status: 500,
                                message: String::from_utf8_lossy(&data).trim().to_string(),
                            });
                        }
                    }
                }
            }
            Err(e) => {
                result = Err(CliError::Http(e.to_string()));
                break;
            }
        }
    }
    if let Some(t) = stdin_task {
        t.abort();
    }
    result
}

/// Sends `wait?condition=` and returns once its headers arrived; the task yields the
/// exit code when the body comes.
async fn start_wait(ctx: &Ctx, id: &str, condition: &str) -> Result<JoinHandle<Result<i64>>> {
    let resp = ctx
        .client
        .post_resp::<()>(
            &format!("/containers/{}/wait?condition={condition}", seg(id)),
            None,
        )
        .await?;
    Ok(tokio::spawn(async move {
        let body = read_body(resp).await?;
        let v: Value = serde_json::from_slice(&body)?;
        if let Some(msg) = v.pointer("/Error/Message").and_then(Value::as_str) {
            if !msg.is_empty() {
                return Err(CliError::Daemon {
                    status: 500,
                    message: msg.to_string(),
                });
            }
        }
        Ok(v.get("StatusCode").and_then(Value::as_i64).unwrap_or(-1))
    }))
}

async fn wait_result(task: JoinHandle<Result<i64>>) -> Result<i32> {
    match task.await {
        Ok(Ok(code)) => Ok(code as i32),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(CliError::other(format!("wait failed: {e}"))),
    }
}

fn attach_query(stdin: bool, stdout: bool, stderr: bool, detach_keys: &Option<String>) -> String {
    let b = |x: bool| if x { "1".to_string() } else { "0".to_string() };
    let mut pairs = vec![
        ("stream", "1".to_string()),
        ("stdin", b(stdin)),
        ("stdout", b(stdout)),
        ("stderr", b(stderr)),
    ];
    if let Some(k) = detach_keys {
        pairs.push(("detachKeys", k.clone()));
    }
    query(&pairs)
}

pub async fn run(ctx: &Ctx, a: RunArgs) -> Result<i32> {
    let cwd = std::env::current_dir()?;
    let mut body = build_create(&a.opts, &a.image, &a.command, &cwd)?;
    if a.detach {
        body.attach_stdin = Some(false);
        body.attach_stdout = Some(false);
        body.attach_stderr = Some(false);
        body.stdin_once = Some(false);
    }
    if a.opts.tty && ctx.tty_out {
        if let Some((h, w)) = term::size(1) {
            body.host_config
                .get_or_insert_with(Default::default)
                .console_size = Some(vec![h as usize, w as usize]);
        }
    }
    if a.opts.tty && a.opts.interactive && !a.detach && !ctx.tty_in {
        return Err(CliError::other("the input device is not a TTY"));
    }
    let id = create_container(
        ctx,
        a.opts.name.as_deref(),
        &a.opts.pull,
        a.opts.quiet,
        a.opts.platform.as_deref(),
        &body,
    )
    .await?;
    write_cidfile(&a.opts.cidfile, &id)?;
    let start_path = format!("/containers/{}/start", seg(&id));

    if a.detach {
        if let Err(e) = ctx.client.post::<()>(&start_path, None).await {
            return Err(report_start_error(ctx, e));
        }
        ctx.outln(&id);
        return Ok(0);
    }

    let tty = a.opts.tty;
    let want_stdin = body.attach_stdin.unwrap_or(false);
    let (want_out, want_err) = (
        body.attach_stdout.unwrap_or(true),
        body.attach_stderr.unwrap_or(true),
    );
    let conn = ctx
        .client
        .hijack::<()>(
            &format!(
                "/containers/{}/attach{}",
                seg(&id),
                attach_query(want_stdin, want_out, want_err, &a.detach_keys)
            ),
            None,
        )
        .await?;
    let condition = if a.opts.rm { "removed" } else { "next-exit" };
    let waiter = start_wait(ctx, &id, condition).await?;
    let raw = if tty && ctx.tty_in {
        RawMode::enable(0).ok()
    } else {
        None
    };
    let mut session = Session {
        _raw: raw,
        helpers: Vec::new(),
    };
    if let Err(e) = ctx.client.post::<()>(&start_path, None).await {
        drop(session);
        waiter.abort();
        return Err(report_start_error(ctx, e));
    }
    if tty {
        session
            .helpers
            .extend(resize_task(ctx, format!("/containers/{}/resize", seg(&id))));
    } else if a.sig_proxy {
        session.helpers.push(sig_proxy_task(ctx, id.clone()));
    }
    let streamed = pump(ctx, conn, tty, want_stdin).await;
    drop(session);
    if let Err(e) = streamed {
        ctx.errln(&format!("shibafu: {e}"));
    }
    wait_result(waiter).await
}

/// Prints a start failure the way docker does and picks its exit code.
fn report_start_error(ctx: &Ctx, e: CliError) -> CliError {
    let code = match &e {
        CliError::Daemon { message, .. } => start_error_code(message),
        _ => 125,
    };
    ctx.errln(&format!(
        "shibafu: {e}\n\nRun 'shibafu run --help' for more information"
    ));
    CliError::Status(code)
}

async fn inspect_container(ctx: &Ctx, c: &str) -> Result<Value> {
    ctx.client
        .get_json(&format!("/containers/{}/json", seg(c)))
        .await
}

pub async fn start(ctx: &Ctx, a: StartArgs) -> Result<i32> {
    if a.attach || a.interactive {
        if a.containers.len() > 1 {
            return Err(CliError::usage(
                "you cannot start and attach multiple containers at once",
            ));
        }
        let c = &a.containers[0];
        let info = inspect_container(ctx, c).await?;
        let id = s(&info, "Id").to_string();
        let tty = info
            .pointer("/Config/Tty")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let open_stdin = info
            .pointer("/Config/OpenStdin")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let want_stdin = a.interactive && open_stdin;
        let conn = ctx
            .client
            .hijack::<()>(
                &format!(
                    "/containers/{}/attach{}",
                    seg(&id),
                    attach_query(want_stdin, true, true, &a.detach_keys)
                ),
                None,
            )
            .await?;
        let waiter = start_wait(ctx, &id, "next-exit").await?;
        let raw = if tty && want_stdin && ctx.tty_in {
            RawMode::enable(0).ok()
        } else {
            None
        };
        let mut session = Session {
            _raw: raw,
            helpers: Vec::new(),
        };
        if let Err(e) = ctx
            .client
            .post::<()>(&format!("/containers/{}/start", seg(&id)), None)
            .await
        {
            drop(session);
            waiter.abort();
            let code = match &e {
                CliError::Daemon { message, .. } => start_error_code(message),
                _ => 1,
            };
            ctx.errln(&e.to_string());
            return Err(CliError::Status(code));
        }
        if tty {
            session
                .helpers
                .extend(resize_task(ctx, format!("/containers/{}/resize", seg(&id))));
        } else {
            session.helpers.push(sig_proxy_task(ctx, id.clone()));
        }
        let streamed = pump(ctx, conn, tty, want_stdin).await;
        drop(session);
        if let Err(e) = streamed {
            ctx.errln(&e.to_string());
        }
        return wait_result(waiter).await;
    }
    let client = ctx.client.clone();
    crate::cmd::each(ctx, &a.containers, |c| {
        let client = client.clone();
        async move {
            client
                .post::<()>(&format!("/containers/{}/start", seg(&c)), None)
                .await?;
            Ok(())
        }
    })
    .await
}

pub async fn attach(ctx: &Ctx, a: AttachArgs) -> Result<i32> {
    let info = inspect_container(ctx, &a.container).await?;
    let state = info.get("State").cloned().unwrap_or_default();
    if !state
        .get("Running")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return Err(CliError::other(
            "You cannot attach to a stopped container, start it first",
        ));
    }
    if state
        .get("Paused")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return Err(CliError::other(
            "You cannot attach to a paused container, unpause it first",
        ));
    }
    if state
        .get("Restarting")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return Err(CliError::other(
            "You cannot attach to a restarting container, wait until it is running",
        ));
    }
    let id = s(&info, "Id").to_string();
    let tty = info
        .pointer("/Config/Tty")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let open_stdin = info
        .pointer("/Config/OpenStdin")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let want_stdin = !a.no_stdin && open_stdin;
    if tty && want_stdin && !ctx.tty_in {
        return Err(CliError::other("the input device is not a TTY"));
    }
    let waiter = start_wait(ctx, &id, "not-running").await?;
    let conn = ctx
        .client
        .hijack::<()>(
            &format!(
                "/containers/{}/attach{}",
                seg(&id),
                attach_query(want_stdin, true, true, &a.detach_keys)
            ),
            None,
        )
        .await?;
    let raw = if tty && want_stdin && ctx.tty_in {
        RawMode::enable(0).ok()
    } else {
        None
    };
    let mut session = Session {
        _raw: raw,
        helpers: Vec::new(),
    };
    if tty {
        session
            .helpers
            .extend(resize_task(ctx, format!("/containers/{}/resize", seg(&id))));
    } else if a.sig_proxy {
        session.helpers.push(sig_proxy_task(ctx, id.clone()));
    }
    let streamed = pump(ctx, conn, tty, want_stdin).await;
    drop(session);
    streamed?;
    // Detached with the detach keys: the container is still running.
    let still = inspect_container(ctx, &id).await.ok();
    if still
        .as_ref()
        .and_then(|v| v.pointer("/State/Running"))
        .and_then(Value::as_bool)
        == Some(true)
    {
        waiter.abort();
        return Ok(0);
    }
    wait_result(waiter).await
}

pub async fn exec(ctx: &Ctx, a: ExecArgs) -> Result<i32> {
    let env = collect_env(&a.env_file, &a.env)?;
    if a.tty && a.interactive && !a.detach && !ctx.tty_in {
        return Err(CliError::other("the input device is not a TTY"));
    }
    let console = if a.tty && ctx.tty_out {
        term::size(1).map(|(h, w)| vec![h as usize, w as usize])
    } else {
        None
    };
    let cfg = ExecConfig {
        attach_stdin: Some(a.interactive && !a.detach),
        attach_stdout: Some(!a.detach),
        attach_stderr: Some(!a.detach),
        console_size: console.clone(),
        detach_keys: a.detach_keys.clone(),
        tty: Some(a.tty),
        env: (!env.is_empty()).then_some(env),
        cmd: Some(a.command.clone()),
        privileged: Some(a.privileged),
        user: a.user.clone(),
        working_dir: a.workdir.clone(),
    };
    let created = ctx
        .client
        .post_json(
            &format!("/containers/{}/exec", seg(&a.container)),
            Some(&cfg),
        )
        .await?;
    let exec_id = s(&created, "Id").to_string();
    if exec_id.is_empty() {
        return Err(CliError::Http("exec create response has no Id".into()));
    }
    let start_body = serde_json::json!({"Detach": a.detach, "Tty": a.tty, "ConsoleSize": console});
    let start_path = format!("/exec/{}/start", seg(&exec_id));
    if a.detach {
        ctx.client.post(&start_path, Some(&start_body)).await?;
        return Ok(0);
    }
    let conn = match ctx.client.hijack(&start_path, Some(&start_body)).await {
        Ok(c) => c,
        Err(e @ CliError::Daemon { .. }) => {
            ctx.errln(&e.to_string());
            let code = exec_exit_code(ctx, &exec_id).await.filter(|c| *c != 0);
            return Err(CliError::Status(code.unwrap_or_else(
                || match start_error_code(&e.message()) {
                    125 => 126,
                    c => c,
                },
            )));
        }
        Err(e) => return Err(e),
    };
    let raw = if a.tty && a.interactive && ctx.tty_in {
        RawMode::enable(0).ok()
    } else {
        None
    };
    let mut session = Session {
        _raw: raw,
        helpers: Vec::new(),
    };
    if a.tty {
        session
            .helpers
            .extend(resize_task(ctx, format!("/exec/{}/resize", seg(&exec_id))));
    }
    let streamed = pump(ctx, conn, a.tty, a.interactive).await;
    drop(session);
    streamed?;
    Ok(exec_exit_code(ctx, &exec_id).await.unwrap_or(0))
}

/// The exec's exit code; polls briefly because the stream can end a moment before
/// the daemon records the exit.
async fn exec_exit_code(ctx: &Ctx, exec_id: &str) -> Option<i32> {
    for _ in 0..50 {
        let v = ctx
            .client
            .get_json(&format!("/exec/{}/json", seg(exec_id)))
            .await
            .ok()?;
        let running = v.get("Running").and_then(Value::as_bool).unwrap_or(false);
        if !running {
            return v.get("ExitCode").and_then(Value::as_i64).map(|c| c as i32);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_error_codes() {
        assert_eq!(
            start_error_code("exec: \"nope\": executable file not found in $PATH"),
            127
        );
        assert_eq!(start_error_code("stat /x: no such file or directory"), 127);
        assert_eq!(start_error_code("exec /etc/passwd: permission denied"), 126);
        assert_eq!(start_error_code("cgroup setup failed"), 125);
    }

    #[test]
    fn attach_query_flags() {
        assert_eq!(
            attach_query(true, true, false, &None),
            "?stream=1&stdin=1&stdout=1&stderr=0"
        );
        assert_eq!(
            attach_query(false, true, true, &Some("ctrl-x".into())),
            "?stream=1&stdin=0&stdout=1&stderr=1&detachKeys=ctrl-x"
        );
    }
}
