//! Command implementations, one module per family, and the dispatcher.

use serde_json::Value;

use crate::cli::{Cmd, ContainerCmd, ImageCmd, NetworkCmd, PolicyCmd, ServiceCmd, VolumeCmd};
use crate::error::{CliError, Result};
use crate::Ctx;

pub mod container;
pub mod cp;
pub mod dns_trace;
pub mod image;
pub mod inspect;
pub mod network;
pub mod registry;
pub mod run;
pub mod service;
pub mod stats;
pub mod system;
pub mod volume;

/// Runs a parsed command; `Ok(code)` is the process exit code.
pub async fn dispatch(cmd: Cmd, ctx: &Ctx) -> Result<i32> {
    match cmd {
        Cmd::Run(a) => run::run(ctx, a).await,
        Cmd::Create(a) => run::create(ctx, a).await,
        Cmd::Start(a) => run::start(ctx, a).await,
        Cmd::Stop(a) => container::stop(ctx, a, false).await,
        Cmd::Restart(a) => container::stop(ctx, a, true).await,
        Cmd::Kill(a) => container::kill(ctx, a).await,
        Cmd::Pause(a) => container::simple(ctx, a, "pause").await,
        Cmd::Unpause(a) => container::simple(ctx, a, "unpause").await,
        Cmd::Rm(a) => container::rm(ctx, a).await,
        Cmd::Ps(a) => container::ps(ctx, a).await,
        Cmd::Logs(a) => container::logs(ctx, a).await,
        Cmd::Exec(a) => run::exec(ctx, a).await,
        Cmd::Attach(a) => run::attach(ctx, a).await,
        Cmd::Wait(a) => container::wait(ctx, a).await,
        Cmd::Inspect(a) => {
            inspect::inspect(ctx, a.typ.as_deref(), a.format.as_deref(), a.size, &a.names).await
        }
        Cmd::Top(a) => container::top(ctx, a).await,
        Cmd::Stats(a) => stats::stats(ctx, a).await,
        Cmd::Port(a) => container::port(ctx, a).await,
        Cmd::Rename(a) => container::rename(ctx, a).await,
        Cmd::Cp(a) => cp::cp(ctx, a).await,
        Cmd::Update(a) => container::update(ctx, a).await,
        Cmd::Import(a) => image::import(ctx, a).await,
        Cmd::Pull(a) => registry::pull(ctx, a).await,
        Cmd::Push(a) => registry::push(ctx, a).await,
        Cmd::Save(a) => registry::save(ctx, a).await,
        Cmd::Load(a) => registry::load(ctx, a).await,
        Cmd::Login(a) => registry::login(ctx, a).await,
        Cmd::Logout(a) => registry::logout(ctx, a).await,
        Cmd::Images(a) => image::images(ctx, a).await,
        Cmd::Tag(a) => image::tag(ctx, a).await,
        Cmd::Rmi(a) => image::rmi(ctx, a).await,
        Cmd::History(a) => image::history(ctx, a).await,
        Cmd::Events(a) => system::events(ctx, a).await,
        Cmd::Info(a) => system::info(ctx, a).await,
        Cmd::Version(a) => system::version(ctx, a).await,
        Cmd::Container { cmd } => match cmd {
            ContainerCmd::Ls(a) => container::ps(ctx, a).await,
            ContainerCmd::Run(a) => run::run(ctx, a).await,
            ContainerCmd::Create(a) => run::create(ctx, a).await,
            ContainerCmd::Start(a) => run::start(ctx, a).await,
            ContainerCmd::Stop(a) => container::stop(ctx, a, false).await,
            ContainerCmd::Restart(a) => container::stop(ctx, a, true).await,
            ContainerCmd::Kill(a) => container::kill(ctx, a).await,
            ContainerCmd::Pause(a) => container::simple(ctx, a, "pause").await,
            ContainerCmd::Unpause(a) => container::simple(ctx, a, "unpause").await,
            ContainerCmd::Rm(a) => container::rm(ctx, a).await,
            ContainerCmd::Logs(a) => container::logs(ctx, a).await,
            ContainerCmd::Exec(a) => run::exec(ctx, a).await,
            ContainerCmd::Attach(a) => run::attach(ctx, a).await,
            ContainerCmd::Wait(a) => container::wait(ctx, a).await,
            ContainerCmd::Inspect(a) => {
                inspect::inspect(
                    ctx,
                    Some("container"),
                    a.format.as_deref(),
                    a.size,
                    &a.names,
                )
                .await
            }
            ContainerCmd::Top(a) => container::top(ctx, a).await,
            ContainerCmd::Stats(a) => stats::stats(ctx, a).await,
            ContainerCmd::Port(a) => container::port(ctx, a).await,
            ContainerCmd::Rename(a) => container::rename(ctx, a).await,
            ContainerCmd::Cp(a) => cp::cp(ctx, a).await,
            ContainerCmd::Update(a) => container::update(ctx, a).await,
            ContainerCmd::Prune(a) => container::prune(ctx, a).await,
        },
        Cmd::Image { cmd } => match cmd {
            ImageCmd::Ls(a) => image::images(ctx, a).await,
            ImageCmd::Inspect(a) => {
                inspect::inspect(ctx, Some("image"), a.format.as_deref(), false, &a.names).await
            }
            ImageCmd::Rm(a) => image::rmi(ctx, a).await,
            ImageCmd::Prune(a) => image::prune(ctx, a).await,
            ImageCmd::History(a) => image::history(ctx, a).await,
            ImageCmd::Tag(a) => image::tag(ctx, a).await,
            ImageCmd::Import(a) => image::import(ctx, a).await,
            ImageCmd::Pull(a) => registry::pull(ctx, a).await,
            ImageCmd::Push(a) => registry::push(ctx, a).await,
            ImageCmd::Save(a) => registry::save(ctx, a).await,
            ImageCmd::Load(a) => registry::load(ctx, a).await,
        },
        Cmd::Volume { cmd } => match cmd {
            VolumeCmd::Create(a) => volume::create(ctx, a).await,
            VolumeCmd::Ls(a) => volume::ls(ctx, a).await,
            VolumeCmd::Inspect(a) => {
                inspect::inspect(ctx, Some("volume"), a.format.as_deref(), false, &a.names).await
            }
            VolumeCmd::Rm(a) => volume::rm(ctx, a).await,
            VolumeCmd::Prune(a) => volume::prune(ctx, a).await,
        },
        Cmd::Network { cmd } => match cmd {
            NetworkCmd::Create(a) => network::create(ctx, a).await,
            NetworkCmd::Ls(a) => network::ls(ctx, a).await,
            NetworkCmd::Inspect(a) => network::inspect(ctx, a).await,
            NetworkCmd::Rm(a) => network::rm(ctx, a).await,
            NetworkCmd::Prune(a) => network::prune(ctx, a).await,
            NetworkCmd::Connect(a) => network::connect(ctx, a).await,
            NetworkCmd::Disconnect(a) => network::disconnect(ctx, a).await,
            NetworkCmd::Policy { cmd } => match cmd {
                PolicyCmd::Create(a) => network::policy_create(ctx, a).await,
                PolicyCmd::Ls(a) => network::policy_ls(ctx, a).await,
                PolicyCmd::Inspect(a) => network::policy_inspect(ctx, a).await,
                PolicyCmd::Rm(a) => network::policy_rm(ctx, a).await,
            },
            NetworkCmd::Reload => network::reload(ctx).await,
            NetworkCmd::DnsTrace(a) => dns_trace::dns_trace(ctx, a).await,
        },
        Cmd::Service { cmd } => match cmd {
            ServiceCmd::Ls(a) => service::ls(ctx, a).await,
            ServiceCmd::Inspect(a) => service::inspect(ctx, a).await,
        },
        Cmd::Daemon { .. } => Err(CliError::other(
            "the daemon is started by the shibafu binary itself: run `shibafu daemon --help`",
        )),
    }
}

/// Encodes an object name for a URL path. `/` and `:` stay as they are: image
/// references contain them and the daemon routes `/images/{*rest}`.
pub fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `--filter k=v` flags to docker's `filters` JSON (`{"k":{"v":true}}`).
pub fn filters_json(filters: &[String]) -> Result<Option<String>> {
    if filters.is_empty() {
        return Ok(None);
    }
    let mut map = serde_json::Map::new();
    for f in filters {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| CliError::usage("bad format of filter (expected name=value)"))?;
        let k = k.trim().to_lowercase();
        let entry = map
            .entry(k)
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(o) = entry {
            o.insert(v.to_string(), Value::Bool(true));
        }
    }
    Ok(Some(Value::Object(map).to_string()))
}

/// Applies `f` to every argument; prints each failure, and fails with exit 1 if any
/// did (docker's behaviour for `stop a b`, `rm -f a b`, ...).
pub async fn each<F, Fut>(ctx: &Ctx, items: &[String], mut f: F) -> Result<i32>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut failed = false;
    for it in items {
        match f(it.clone()).await {
            Ok(()) => ctx.outln(it),
            Err(e @ CliError::Connect { .. }) => return Err(e),
            Err(e) => {
                failed = true;
                ctx.errln(&e.to_string());
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// Reads a string field.
pub fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Asks the user to confirm (prune). Non-terminal stdin answers "no", like docker.
pub fn confirm(ctx: &Ctx, question: &str) -> bool {
    ctx.out(&format!(
        "{question}\nAre you sure you want to continue? [y/N] "
    ));
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim().to_lowercase().as_str(), "y" | "yes")
}

/// POSTs `path` (a prune route) with `filters`; returns the daemon's report.
pub async fn prune_request(ctx: &Ctx, path: &str, filters: &[String]) -> Result<Value> {
    let q = match filters_json(filters)? {
        Some(f) => crate::client::query(&[("filters", f)]),
        None => String::new(),
    };
    ctx.client
        .post_json::<()>(&format!("{path}{q}"), None)
        .await
}

/// docker's `sortorder.NaturalLess`: digit runs compare as numbers ("net9" <
/// "net10"), digits sort before other bytes.
pub fn natural_less(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (da, db) = (a[i].is_ascii_digit(), b[j].is_ascii_digit());
        if da != db {
            return da;
        }
        if !da {
            if a[i] != b[j] {
                return a[i] < b[j];
            }
            i += 1;
            j += 1;
            continue;
        }
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let (nz_a, nz_b) = (i, j);
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let (na, nb) = (&a[nz_a..i], &b[nz_b..j]);
        if na.len() != nb.len() {
            return na.len() < nb.len();
        }
        if na != nb {
            return na < nb;
        }
        if nz_a != nz_b {
            return nz_a < nz_b;
        }
    }
    // identical so far: the shorter string first (Go compares the whole lengths)
    a.len() < b.len()
}

/// POSTs `path` (a prune route) with `filters` and prints docker's report:
/// the IDs listed under `list_key` below `heading`, then the space reclaimed.
pub async fn prune_and_report(
    ctx: &Ctx,
    path: &str,
    filters: &[String],
    list_key: &str,
    heading: &str,
) -> Result<i32> {
    let v = prune_request(ctx, path, filters).await?;
    let deleted = v
        .get(list_key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !deleted.is_empty() {
        ctx.outln(heading);
        for d in deleted {
            ctx.outln(d.as_str().unwrap_or(""));
        }
        ctx.outln("");
    }
    print_reclaimed(ctx, &v);
    Ok(0)
}

/// docker's last prune line.
pub fn print_reclaimed(ctx: &Ctx, v: &Value) {
    let space = v.get("SpaceReclaimed").and_then(Value::as_i64).unwrap_or(0);
    ctx.outln(&format!(
        "Total reclaimed space: {}",
        crate::human::human_size(space as f64)
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments() {
        assert_eq!(seg("localhost:5000/a/b:1"), "localhost:5000/a/b:1");
        assert_eq!(seg("a b?#"), "a%20b%3F%23");
    }

    #[test]
    fn natural_order_like_docker() {
        let mut v = vec![
            "net10",
            "net9",
            "bridge",
            "a01",
            "a1",
            "a",
            "80/tcp -> x",
            "9000/tcp -> x",
        ];
        v.sort_by(|a, b| {
            if natural_less(a, b) {
                std::cmp::Ordering::Less
            } else if natural_less(b, a) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        assert_eq!(
            v,
            vec![
                "80/tcp -> x",
                "9000/tcp -> x",
                "a",
                "a1",
                "a01",
                "bridge",
                "net9",
                "net10"
            ]
        );
    }

    #[test]
    fn filters() {
        let f = filters_json(&[
            "status=running".into(),
            "status=exited".into(),
            "label=a=b".into(),
        ])
        .unwrap()
        .unwrap();
        let v: Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["status"]["running"], true);
        assert_eq!(v["status"]["exited"], true);
        assert_eq!(v["label"]["a=b"], true);
        assert!(filters_json(&["bogus".into()]).is_err());
        assert!(filters_json(&[]).unwrap().is_none());
    }
}
