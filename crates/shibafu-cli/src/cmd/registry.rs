//! Registry and archive commands: `pull`, `push`, `save`, `load`, `login`,
//! `logout` (also under `image`), with the docker CLI's grammar, output and
//! credential handling (see [`crate::auth`]).

use std::io::Write;

use hyper::Method;
use serde_json::Value;
use tokio::io::AsyncReadExt;

use crate::auth::{server_key, ConfigFile, Credentials, Reference, INDEX_SERVER};
use crate::cli::{LoadArgs, LoginArgs, LogoutArgs, PullArgs, PushArgs, SaveArgs};
use crate::client::{body_stream, empty_body, full_body, query, reader_body, JsonLines};
use crate::cmd::seg;
use crate::config::io_reason;
use crate::error::{CliError, Result};
use crate::jsonmessage::{Display, Outcome, Renderer};
use crate::{term, Ctx};

/// Which of the process's streams progress goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Out,
    Err,
}

fn parse_ref(s: &str) -> Result<Reference> {
    Reference::parse(s).map_err(|e| CliError::other(e.to_string()))
}

/// Stored credentials for the registry of `r`, as an `X-Registry-Auth`
/// value. A config file that can't be read is warned about, not fatal.
fn auth_header(ctx: &Ctx, key: &str) -> String {
    let creds = ConfigFile::load(&ConfigFile::default_path()).and_then(|cf| cf.get(key));
    let mut creds = creds.unwrap_or_else(|e| {
        ctx.errln(&format!("WARNING: {e}"));
        Credentials::default()
    });
    creds.server = key.to_string();
    creds.header()
}

/// Draws a JSON message response on `target` (nothing when `quiet`, but
/// errors still end it). An in-stream error is the result.
pub async fn show_stream(
    ctx: &Ctx,
    resp: hyper::Response<hyper::body::Incoming>,
    target: Target,
    quiet: bool,
) -> Result<Outcome> {
    let (terminal, fd) = match target {
        Target::Out => (ctx.tty_out, 1),
        Target::Err => (ctx.tty_err, 2),
    };
    let width = if terminal {
        term::size(fd).map_or(80, |(_, w)| w)
    } else {
        200
    };
    let mut renderer = Renderer::new(Display { terminal, width });
    let mut outcome = Outcome::default();
    let mut lines = JsonLines::new(body_stream(resp));
    while let Some(item) = lines.next().await {
        let v: Value = item?;
        let text = renderer.message(&v, &mut outcome)?;
        if quiet || text.is_empty() {
            continue;
        }
        match target {
            Target::Out => ctx.out(&text),
            Target::Err => ctx.err_bytes(text.as_bytes()),
        }
    }
    Ok(outcome)
}

/// Pulls `r` (`POST /images/create?fromImage=&tag=`) with the stored
/// credentials of its registry, drawing progress on `target`.
pub async fn pull_ref(
    ctx: &Ctx,
    r: &Reference,
    platform: Option<&str>,
    quiet: bool,
    target: Target,
) -> Result<()> {
    let mut pairs = vec![("fromImage", r.name())];
    if let Some(t) = r.digest.as_ref().or(r.tag.as_ref()) {
        pairs.push(("tag", t.clone()));
    }
    if let Some(p) = platform {
        pairs.push(("platform", p.to_string()));
    }
    let header = auth_header(ctx, &r.auth_key());
    let resp = ctx
        .client
        .request_with(
            Method::POST,
            &format!("/images/create{}", query(&pairs)),
            empty_body(),
            None,
            &[("X-Registry-Auth", &header)],
        )
        .await?;
    show_stream(ctx, resp, target, quiet).await.map(|_| ())
}

/// The pull `run`/`create` do for a missing image: progress on stderr.
pub async fn pull_for_run(
    ctx: &Ctx,
    image: &str,
    platform: Option<&str>,
    quiet: bool,
) -> Result<()> {
    let r = parse_ref(image)?.with_default_tag();
    pull_ref(ctx, &r, platform, quiet, Target::Err).await
}

pub async fn pull(ctx: &Ctx, a: PullArgs) -> Result<i32> {
    let mut r = parse_ref(&a.name)?;
    if a.all_tags && !r.is_name_only() {
        return Err(CliError::usage("tag can't be used with --all-tags/-a"));
    }
    if !a.all_tags && r.is_name_only() {
        if !a.quiet {
            ctx.outln("Using default tag: latest");
        }
        r = r.with_default_tag();
    }
    pull_ref(ctx, &r, a.platform.as_deref(), a.quiet, Target::Out).await?;
    ctx.outln(&r.full());
    Ok(0)
}

pub async fn push(ctx: &Ctx, a: PushArgs) -> Result<i32> {
    let mut r = parse_ref(&a.name)?;
    if r.digest.is_some() {
        return Err(CliError::other("cannot push a digest reference"));
    }
    if a.all_tags && r.tag.is_some() {
        return Err(CliError::usage("tag can't be used with --all-tags/-a"));
    }
    if !a.all_tags && r.tag.is_none() {
        if !a.quiet {
            ctx.outln("Using default tag: latest");
        }
        r = r.with_default_tag();
    }
    let mut pairs = vec![];
    if let Some(t) = &r.tag {
        pairs.push(("tag", t.clone()));
    }
    let header = auth_header(ctx, &r.auth_key());
    let resp = ctx
        .client
        .request_with(
            Method::POST,
            &format!("/images/{}/push{}", seg(&r.familiar_name()), query(&pairs)),
            empty_body(),
            None,
            &[("X-Registry-Auth", &header)],
        )
        .await?;
    show_stream(ctx, resp, Target::Out, a.quiet).await?;
    if a.quiet {
        ctx.outln(&r.full());
    }
    Ok(0)
}

pub async fn save(ctx: &Ctx, a: SaveArgs) -> Result<i32> {
    if a.output.is_none() && ctx.tty_out {
        return Err(CliError::other(
            "cowardly refusing to save to a terminal. Use the -o flag or redirect",
        ));
    }
    let out_path = match &a.output {
        Some(o) => {
            let p = std::path::PathBuf::from(o);
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            if !dir.is_dir() {
                return Err(CliError::other(format!(
                    "failed to save image: invalid output path: directory {:?} does not exist",
                    dir.display().to_string()
                )));
            }
            Some(p)
        }
        None => None,
    };
    let pairs: Vec<(&str, String)> = a.images.iter().map(|n| ("names", n.clone())).collect();
    let resp = ctx
        .client
        .request(
            Method::GET,
            &format!("/images/get{}", query(&pairs)),
            empty_body(),
            None,
        )
        .await?;
    let mut body = body_stream(resp);
    use futures::StreamExt;
    match out_path {
        Some(path) => {
            // Written beside the target, renamed into place when complete
            // (a failed save leaves no truncated archive), as docker does.
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| "image.tar".into());
            let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
            let result = async {
                let mut f = std::fs::File::create(&tmp)?;
                while let Some(chunk) = body.next().await {
                    let chunk = chunk?;
                    f.write_all(&chunk)?;
                }
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                Ok::<(), CliError>(())
            }
            .await;
            if let Err(e) = result {
                let _ = std::fs::remove_file(&tmp);
                return Err(match e {
                    CliError::Io(e) => CliError::other(format!(
                        "failed to save image: {}: {}",
                        path.display(),
                        io_reason(&e)
                    )),
                    e => e,
                });
            }
        }
        None => {
            while let Some(chunk) = body.next().await {
                ctx.out_bytes(&chunk?);
            }
        }
    }
    Ok(0)
}

pub async fn load(ctx: &Ctx, a: LoadArgs) -> Result<i32> {
    if a.input.is_none() && ctx.tty_in {
        return Err(CliError::other(
            "requested load from stdin, but stdin is empty",
        ));
    }
    let quiet = a.quiet || !ctx.tty_out;
    let body = match &a.input {
        Some(path) => {
            let f = tokio::fs::File::open(path)
                .await
                .map_err(|e| CliError::other(format!("open {path}: {}", io_reason(&e))))?;
            reader_body(f)
        }
        None => reader_body(
            ctx.take_stdin()
                .ok_or_else(|| CliError::other("stdin is not available"))?,
        ),
    };
    let pairs = vec![("quiet", if quiet { "1" } else { "0" }.to_string())];
    let resp = ctx
        .client
        .request(
            Method::POST,
            &format!("/images/load{}", query(&pairs)),
            body,
            Some("application/x-tar"),
        )
        .await?;
    show_stream(ctx, resp, Target::Out, false).await?;
    Ok(0)
}

/// Reads one line from stdin for a prompt; with `hide`, terminal echo is
/// off meanwhile (passwords).
async fn prompt(ctx: &Ctx, question: &str, hide: bool) -> Result<String> {
    ctx.out(question);
    let echo_off = if hide && ctx.tty_in {
        EchoOff::new()
    } else {
        None
    };
    let mut input = ctx
        .take_stdin()
        .ok_or_else(|| CliError::other("stdin is not available"))?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte).await? {
            0 => break,
            _ if byte[0] == b'\n' => break,
            _ => line.push(byte[0]),
        }
    }
    // Give stdin back for a second prompt.
    ctx.put_stdin(input);
    drop(echo_off);
    if hide {
        ctx.outln("");
    }
    Ok(String::from_utf8_lossy(&line)
        .trim_end_matches('\r')
        .to_string())
}

/// Terminal echo switched off until dropped.
struct EchoOff(nix::sys::termios::Termios);

impl EchoOff {
    fn new() -> Option<EchoOff> {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        let fd = std::io::stdin();
        let saved = tcgetattr(&fd).ok()?;
        let mut t = saved.clone();
        t.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&fd, SetArg::TCSANOW, &t).ok()?;
        Some(EchoOff(saved))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.0);
    }
}

/// `POST /auth`; the identity token the registry may issue replaces the
/// password in what is stored.
async fn authenticate(ctx: &Ctx, c: &mut Credentials) -> Result<()> {
    let resp = ctx
        .client
        .request(
            Method::POST,
            "/auth",
            full_body(serde_json::to_vec(&c.login_body())?),
            Some("application/json"),
        )
        .await?;
    let body = crate::client::read_body(resp).await?;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Some(t) = v
        .get("IdentityToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        c.identity_token = t.to_string();
        c.password.clear();
    }
    Ok(())
}

pub async fn login(ctx: &Ctx, a: LoginArgs) -> Result<i32> {
    if a.password.is_some() && a.password_stdin {
        return Err(CliError::usage(
            "--password and --password-stdin are mutually exclusive",
        ));
    }
    if a.password_stdin && a.username.is_none() {
        return Err(CliError::usage(
            "Must provide --username with --password-stdin",
        ));
    }
    let key = a
        .server
        .as_deref()
        .map(server_key)
        .unwrap_or_else(|| INDEX_SERVER.to_string());
    let mut file = ConfigFile::load(&ConfigFile::default_path())
        .map_err(|e| CliError::other(e.to_string()))?;
    if a.password.is_some() {
        ctx.errln("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    let mut password = a.password.clone();
    if a.password_stdin {
        let mut input = ctx
            .take_stdin()
            .ok_or_else(|| CliError::other("stdin is not available"))?;
        let mut buf = String::new();
        input.read_to_string(&mut buf).await?;
        password = Some(buf.trim_end_matches(['\n', '\r']).to_string());
    }
    // No flags: the stored credentials first, as the docker CLI does.
    if a.username.is_none() && password.is_none() {
        let stored = file.get(&key).unwrap_or_default();
        if !stored.username.is_empty() || !stored.identity_token.is_empty() {
            let mut c = stored.clone();
            c.server = key.clone();
            ctx.outln(&format!(
                "Authenticating with existing credentials... [Username: {}]",
                c.username
            ));
            if authenticate(ctx, &mut c).await.is_ok() {
                if c != stored {
                    file.store(&c).map_err(|e| CliError::other(e.to_string()))?;
                }
                ctx.outln("Login Succeeded");
                return Ok(0);
            }
            ctx.errln("Login did not succeed, error: stored credentials were refused");
        }
    }
    let needs_prompt = a.username.is_none() || password.as_deref().unwrap_or("").is_empty();
    if needs_prompt && !ctx.tty_in {
        return Err(CliError::other(
            "Error: Cannot perform an interactive login from a non TTY device",
        ));
    }
    let username = match a.username.clone() {
        Some(u) => u,
        None => prompt(ctx, "Username: ", false).await?.trim().to_string(),
    };
    if username.is_empty() {
        return Err(CliError::other("Error: Non-null Username Required"));
    }
    let password = match password.filter(|p| !p.is_empty()) {
        Some(p) => p,
        None => prompt(ctx, "Password: ", true).await?,
    };
    if password.is_empty() {
        return Err(CliError::other("Error: Password Required"));
    }
    let mut c = Credentials {
        username,
        password,
        identity_token: String::new(),
        server: key,
    };
    authenticate(ctx, &mut c).await?;
    file.store(&c).map_err(|e| CliError::other(e.to_string()))?;
    ctx.outln("Login Succeeded");
    Ok(0)
}

pub async fn logout(ctx: &Ctx, a: LogoutArgs) -> Result<i32> {
    let key = a
        .server
        .as_deref()
        .map(server_key)
        .unwrap_or_else(|| INDEX_SERVER.to_string());
    let mut file = ConfigFile::load(&ConfigFile::default_path())
        .map_err(|e| CliError::other(e.to_string()))?;
    if file
        .erase(&key)
        .map_err(|e| CliError::other(e.to_string()))?
    {
        ctx.outln(&format!("Removing login credentials for {key}"));
    } else {
        ctx.outln(&format!("Not logged in to {key}"));
    }
    Ok(0)
}
