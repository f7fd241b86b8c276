//! Container commands that are plain requests: lifecycle verbs, `ps`, `logs`,
//! `wait`, `top`, `port`, `rename`, `update`, `container prune`.

use serde_json::{json, Value};

use crate::cli::{
    ContainersArgs, KillArgs, LogsArgs, PortArgs, PruneArgs, PsArgs, RenameArgs, RmArgs, StopArgs,
    TopArgs, UpdateArgs,
};
use crate::client::{body_stream, query};
use crate::cmd::{each, filters_json, s, seg};
use crate::error::{CliError, Result};
use crate::human::{ago, ellipsis, go_quote, human_size, short_id};
use crate::stdcopy::{Demuxer, StdStream};
use crate::template::{render_list, Format};
use crate::Ctx;
use futures::StreamExt;

pub async fn stop(ctx: &Ctx, a: StopArgs, restart: bool) -> Result<i32> {
    let verb = if restart { "restart" } else { "stop" };
    let mut pairs = Vec::new();
    if let Some(t) = a.timeout {
        pairs.push(("t", t.to_string()));
    }
    if let Some(sig) = &a.signal {
        pairs.push(("signal", sig.clone()));
    }
    let q = query(&pairs);
    let client = ctx.client.clone();
    each(ctx, &a.containers, |c| {
        let client = client.clone();
        let q = q.clone();
        async move {
            client
                .post::<()>(&format!("/containers/{}/{verb}{q}", seg(&c)), None)
                .await?;
            Ok(())
        }
    })
    .await
}

pub async fn kill(ctx: &Ctx, a: KillArgs) -> Result<i32> {
    let q = match &a.signal {
        Some(sig) => query(&[("signal", sig.clone())]),
        None => String::new(),
    };
    let client = ctx.client.clone();
    each(ctx, &a.containers, |c| {
        let client = client.clone();
        let q = q.clone();
        async move {
            client
                .post::<()>(&format!("/containers/{}/kill{q}", seg(&c)), None)
                .await?;
            Ok(())
        }
    })
    .await
}

/// `pause` / `unpause`.
pub async fn simple(ctx: &Ctx, a: ContainersArgs, verb: &'static str) -> Result<i32> {
    let client = ctx.client.clone();
    each(ctx, &a.containers, |c| {
        let client = client.clone();
        async move {
            client
                .post::<()>(&format!("/containers/{}/{verb}", seg(&c)), None)
                .await?;
            Ok(())
        }
    })
    .await
}

pub async fn rm(ctx: &Ctx, a: RmArgs) -> Result<i32> {
    let mut pairs = Vec::new();
    if a.force {
        pairs.push(("force", "1".to_string()));
    }
    if a.volumes {
        pairs.push(("v", "1".to_string()));
    }
    if a.link {
        pairs.push(("link", "1".to_string()));
    }
    let q = query(&pairs);
    let client = ctx.client.clone();
    each(ctx, &a.containers, |c| {
        let client = client.clone();
        let q = q.clone();
        async move {
            if c.trim_matches('/').is_empty() {
                return Err(CliError::other("Error: container name cannot be empty"));
            }
            client
                .delete(&format!("/containers/{}{q}", seg(&c)))
                .await?;
            Ok(())
        }
    })
    .await
}

pub async fn wait(ctx: &Ctx, a: ContainersArgs) -> Result<i32> {
    let mut failed = false;
    for c in &a.containers {
        let r = async {
            let v = ctx
                .client
                .post_json::<()>(&format!("/containers/{}/wait", seg(c)), None)
                .await?;
            if let Some(m) = v.pointer("/Error/Message").and_then(Value::as_str) {
                if !m.is_empty() {
                    return Err(CliError::Daemon {
                        status: 500,
                        message: m.to_string(),
                    });
                }
            }
            Ok(v.get("StatusCode").and_then(Value::as_i64).unwrap_or(-1))
        }
        .await;
        match r {
            Ok(code) => ctx.outln(&code.to_string()),
            Err(e @ CliError::Connect { .. }) => return Err(e),
            Err(e) => {
                failed = true;
                ctx.errln(&e.to_string());
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

pub async fn rename(ctx: &Ctx, a: RenameArgs) -> Result<i32> {
    let new = a.new_name.trim();
    if new.is_empty() || a.container.trim().is_empty() {
        return Err(CliError::other(
            "Error: neither old nor new names may be empty",
        ));
    }
    ctx.client
        .post::<()>(
            &format!(
                "/containers/{}/rename{}",
                seg(&a.container),
                query(&[("name", new.to_string())])
            ),
            None,
        )
        .await?;
    Ok(0)
}

pub async fn update(ctx: &Ctx, a: UpdateArgs) -> Result<i32> {
    let body = crate::config::build_update(&a)?;
    let mut failed = false;
    for c in &a.containers {
        match ctx
            .client
            .post_json(&format!("/containers/{}/update", seg(c)), Some(&body))
            .await
        {
            Ok(v) => {
                for w in v
                    .get("Warnings")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(w) = w.as_str() {
                        ctx.errln(&format!("WARNING: {w}"));
                    }
                }
                ctx.outln(c);
            }
            Err(e @ CliError::Connect { .. }) => return Err(e),
            Err(e) => {
                failed = true;
                ctx.errln(&e.to_string());
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

pub async fn top(ctx: &Ctx, a: TopArgs) -> Result<i32> {
    let q = if a.ps_args.is_empty() {
        String::new()
    } else {
        query(&[("ps_args", a.ps_args.join(" "))])
    };
    let v = ctx
        .client
        .get_json(&format!("/containers/{}/top{q}", seg(&a.container)))
        .await?;
    let mut rows: Vec<Vec<String>> = Vec::new();
    let titles: Vec<String> = v
        .get("Titles")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .map(|x| x.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    rows.push(titles);
    for p in v
        .get("Processes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        rows.push(
            p.as_array()
                .map(|r| {
                    r.iter()
                        .map(|x| x.as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default(),
        );
    }
    ctx.out(&crate::tabwriter::table(&rows));
    Ok(0)
}

/// `port CONTAINER [PRIVATE_PORT[/PROTO]]`, reading `NetworkSettings.Ports`.
pub async fn port(ctx: &Ctx, a: PortArgs) -> Result<i32> {
    let v = ctx
        .client
        .get_json(&format!("/containers/{}/json", seg(&a.container)))
        .await?;
    let out = port_lines(&v, &a.container, a.port.as_deref())?;
    if !out.is_empty() {
        ctx.outln(&out.join("\n"));
    }
    Ok(0)
}

/// Go's `net.JoinHostPort`: brackets around addresses with a colon.
fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// docker's `port` output for an inspect result: every mapping as
/// `80/tcp -> 0.0.0.0:8080`, or for one private port just the host sides; lines in
/// natural order.
pub fn port_lines(inspect: &Value, container: &str, port: Option<&str>) -> Result<Vec<String>> {
    let ports = inspect
        .pointer("/NetworkSettings/Ports")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let bind = |b: &Value| join_host_port(s(b, "HostIp"), s(b, "HostPort"));
    let mut out: Vec<String> = Vec::new();
    if let Some(p) = port {
        let (num, proto) = p.split_once('/').unwrap_or((p, ""));
        let proto = if proto.is_empty() { "tcp" } else { proto };
        if num.parse::<u16>().is_err() {
            let why = if num.parse::<u64>().is_ok() {
                "value out of range"
            } else {
                "invalid syntax"
            };
            return Err(CliError::other(format!(
                "Error: invalid port ({num}): strconv.ParseUint: parsing {}: {why}",
                crate::human::go_quote(num)
            )));
        }
        let frontends = ports
            .get(&format!("{num}/{proto}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if frontends.is_empty() {
            return Err(CliError::other(format!(
                "Error: No public port '{p}' published for {container}"
            )));
        }
        out.extend(frontends.iter().map(bind));
    } else {
        for (from, frontends) in &ports {
            for b in frontends.as_array().into_iter().flatten() {
                out.push(format!("{from} -> {}", bind(b)));
            }
        }
    }
    out.sort_by(|a, b| {
        if crate::cmd::natural_less(a, b) {
            std::cmp::Ordering::Less
        } else if crate::cmd::natural_less(b, a) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    });
    Ok(out)
}

pub async fn logs(ctx: &Ctx, a: LogsArgs) -> Result<i32> {
    let info = ctx
        .client
        .get_json(&format!("/containers/{}/json", seg(&a.container)))
        .await?;
    let id = s(&info, "Id").to_string();
    let tty = info
        .pointer("/Config/Tty")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let now = chrono::Utc::now();
    let mut pairs = vec![("stdout", "1".to_string()), ("stderr", "1".to_string())];
    if a.follow {
        pairs.push(("follow", "1".into()));
    }
    if let Some(since) = &a.since {
        pairs.push((
            "since",
            crate::human::parse_timestamp(since, now)
                .map_err(|e| CliError::usage(format!("invalid value for \"since\": {e}")))?,
        ));
    }
    if let Some(until) = &a.until {
        pairs.push((
            "until",
            crate::human::parse_timestamp(until, now)
                .map_err(|e| CliError::usage(format!("invalid value for \"until\": {e}")))?,
        ));
    }
    if a.timestamps {
        pairs.push(("timestamps", "1".into()));
    }
    if a.details {
        pairs.push(("details", "1".into()));
    }
    pairs.push(("tail", a.tail.clone()));
    let resp = ctx
        .client
        .request(
            hyper::Method::GET,
            &format!("/containers/{}/logs{}", seg(&id), query(&pairs)),
            crate::client::empty_body(),
            None,
        )
        .await?;
    let mut body = body_stream(resp);
    let mut demux = Demuxer::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if tty {
            ctx.out_bytes(&chunk);
            continue;
        }
        for (stream, data) in demux
            .feed(&chunk)
            .map_err(|e| CliError::Http(e.to_string()))?
        {
            match stream {
                StdStream::Stderr => ctx.err_bytes(&data),
                StdStream::SysErr => {
                    return Err(CliError::other(
                        String::from_utf8_lossy(&data).trim().to_string(),
                    ))
                }
                _ => ctx.out_bytes(&data),
            }
        }
    }
    Ok(0)
}

/// docker's `DisplayablePorts`: groups consecutive ports, "0.0.0.0:8080->80/tcp".
pub fn displayable_ports(ports: &[Value]) -> String {
    struct P {
        ip: String,
        private: u16,
        public: u16,
        typ: String,
    }
    let mut ps: Vec<P> = ports
        .iter()
        .map(|p| P {
            ip: s(p, "IP").to_string(),
            private: p.get("PrivatePort").and_then(Value::as_u64).unwrap_or(0) as u16,
            public: p.get("PublicPort").and_then(Value::as_u64).unwrap_or(0) as u16,
            typ: s(p, "Type").to_string(),
        })
        .collect();
    ps.sort_by(|a, b| {
        (a.private, &a.ip, a.public, &a.typ).cmp(&(b.private, &b.ip, b.public, &b.typ))
    });
    let join_host = |ip: &str, port: &str| {
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    };
    let form_group = |key: &str, first: u16, last: u16| {
        let (ip, typ) = match key.rsplit_once('/') {
            Some((ip, t)) => (ip.to_string(), t.to_string()),
            None => (String::new(), key.to_string()),
        };
        let mut group = first.to_string();
        if first != last {
            group = format!("{group}-{last}");
        }
        if !ip.is_empty() {
            group = format!("{}->{group}", join_host(&ip, &group));
        }
        format!("{group}/{typ}")
    };
    let mut groups: Vec<(String, u16, u16)> = Vec::new();
    let mut result = Vec::new();
    let mut host_mappings = Vec::new();
    for p in &ps {
        let mut key = p.typ.clone();
        if !p.ip.is_empty() {
            if p.public != p.private {
                host_mappings.push(format!(
                    "{}->{}/{}",
                    join_host(&p.ip, &p.public.to_string()),
                    p.private,
                    p.typ
                ));
                continue;
            }
            key = format!("{}/{}", p.ip, p.typ);
        }
        match groups.iter_mut().find(|g| g.0 == key) {
            None => groups.push((key, p.private, p.private)),
            Some(g) => {
                if p.private == g.2.wrapping_add(1) {
                    g.2 = p.private;
                } else {
                    result.push(form_group(&g.0, g.1, g.2));
                    g.1 = p.private;
                    g.2 = p.private;
                }
            }
        }
    }
    for g in &groups {
        result.push(form_group(&g.0, g.1, g.2));
    }
    result.extend(host_mappings);
    result.join(", ")
}

/// The row docker's `ps` formatter exposes to templates (all strings, like docker's
/// `{{json .}}`).
pub fn ps_row(c: &Value, trunc: bool) -> Value {
    let id = s(c, "Id");
    let image = s(c, "Image");
    let image_id = s(c, "ImageID");
    let image = if image.is_empty() {
        "<no image>".to_string()
    } else if trunc && (short_id(image_id) == short_id(image) || image.starts_with("sha256:")) {
        short_id(image)
    } else if trunc {
        image.split('@').next().unwrap_or(image).to_string()
    } else {
        image.to_string()
    };
    let command = s(c, "Command");
    let command = go_quote(&if trunc {
        ellipsis(command, 20)
    } else {
        command.to_string()
    });
    let names: Vec<String> = c
        .get("Names")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|n| n.trim_start_matches('/'))
        // docker hides link aliases ("/other/alias") unless --no-trunc
        .filter(|n| !trunc || !n.contains('/'))
        .map(str::to_string)
        .collect();
    let created = c.get("Created").and_then(Value::as_i64).unwrap_or(0);
    let created_at = chrono::DateTime::from_timestamp(created, 0)
        .map(|t| {
            let l = t.with_timezone(&chrono::Local);
            let zone = if l.offset().local_minus_utc() == 0 {
                "UTC".to_string()
            } else {
                l.format("%Z").to_string()
            };
            format!("{} {}", l.format("%Y-%m-%d %H:%M:%S %z"), zone)
        })
        .unwrap_or_default();
    let mut labels: Vec<String> = c
        .get("Labels")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    labels.sort();
    let mounts: Vec<String> = c
        .get("Mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| {
            let name = if s(m, "Name").is_empty() {
                s(m, "Source")
            } else {
                s(m, "Name")
            };
            if trunc {
                ellipsis(name, 15)
            } else {
                name.to_string()
            }
        })
        .collect();
    let local_volumes = c
        .get("Mounts")
        .and_then(Value::as_array)
        .map(|m| m.iter().filter(|m| s(m, "Driver") == "local").count())
        .unwrap_or(0);
    let mut networks: Vec<String> = c
        .pointer("/NetworkSettings/Networks")
        .and_then(Value::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    networks.sort();
    let ports = displayable_ports(
        c.get("Ports")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]),
    );
    let size = {
        let rw = c.get("SizeRw").and_then(Value::as_i64);
        let root = c.get("SizeRootFs").and_then(Value::as_i64);
        match (rw, root) {
            (None, None) => String::new(),
            (rw, root) => {
                let mut sz = human_size(rw.unwrap_or(0) as f64);
                if let Some(r) = root.filter(|r| *r > 0) {
                    sz = format!("{sz} (virtual {})", human_size(r as f64));
                }
                sz
            }
        }
    };
    json!({
        "ID": if trunc { short_id(id) } else { id.to_string() },
        "Image": image,
        "Command": command,
        "CreatedAt": created_at,
        "RunningFor": ago(created),
        "Ports": ports,
        "State": s(c, "State"),
        "Status": s(c, "Status"),
        "Size": size,
        "Names": names.join(","),
        "Labels": labels.join(","),
        "Mounts": mounts.join(","),
        "LocalVolumes": local_volumes.to_string(),
        "Networks": networks.join(","),
        "Platform": c.pointer("/ImageManifestDescriptor/platform").cloned().unwrap_or(Value::Null),
    })
}

pub fn ps_headers() -> Value {
    json!({
        "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
        "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS", "Size": "SIZE",
        "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS", "LocalVolumes": "LOCAL VOLUMES",
        "Networks": "NETWORKS",
    })
}

pub async fn ps(ctx: &Ctx, a: PsArgs) -> Result<i32> {
    let format = Format::parse(a.format.as_deref()).map_err(|e| CliError::other(e.to_string()))?;
    let mut pairs = Vec::new();
    let limit = if a.latest { 1 } else { a.last };
    if a.all || limit > 0 {
        pairs.push(("all", "1".to_string()));
    }
    if limit > 0 {
        pairs.push(("limit", limit.to_string()));
    }
    // Sizes are expensive: ask only when shown.
    let wants_size = a.size
        || match &format {
            Format::Raw(_) | Format::Table(_) => {
                a.format.as_deref().unwrap_or("").contains(".Size")
            }
            Format::Json => true,
            Format::DefaultTable => false,
        };
    if wants_size {
        pairs.push(("size", "1".to_string()));
    }
    if let Some(f) = filters_json(&a.filter)? {
        pairs.push(("filters", f));
    }
    let list = ctx
        .client
        .get_json(&format!("/containers/json{}", query(&pairs)))
        .await?;
    let items = list.as_array().cloned().unwrap_or_default();
    if a.quiet {
        for c in &items {
            let id = s(c, "Id");
            ctx.outln(&if a.no_trunc {
                id.to_string()
            } else {
                short_id(id)
            });
        }
        return Ok(0);
    }
    let rows: Vec<Value> = items.iter().map(|c| ps_row(c, !a.no_trunc)).collect();
    let default = if a.size {
        "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}\t{{.Size}}"
    } else {
        "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
    };
    let out = render_list(&format, default, &ps_headers(), &rows)
        .map_err(|e| CliError::other(e.to_string()))?;
    ctx.out(&out);
    Ok(0)
}

pub async fn prune(ctx: &Ctx, a: PruneArgs) -> Result<i32> {
    if !a.force && !crate::cmd::confirm(ctx, "WARNING! This will remove all stopped containers.") {
        return Ok(0);
    }
    crate::cmd::prune_and_report(
        ctx,
        "/containers/prune",
        &a.filter,
        "ContainersDeleted",
        "Deleted Containers:",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_like_docker() {
        let ports = vec![
            json!({"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}),
            json!({"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}),
            json!({"PrivatePort": 443, "Type": "tcp"}),
            json!({"PrivatePort": 444, "Type": "tcp"}),
            json!({"PrivatePort": 53, "Type": "udp"}),
        ];
        assert_eq!(
            displayable_ports(&ports),
            "53/udp, 443-444/tcp, 0.0.0.0:8080->80/tcp, [::]:8080->80/tcp"
        );
        let same = vec![
            json!({"IP": "0.0.0.0", "PrivatePort": 8000, "PublicPort": 8000, "Type": "tcp"}),
            json!({"IP": "0.0.0.0", "PrivatePort": 8001, "PublicPort": 8001, "Type": "tcp"}),
        ];
        assert_eq!(displayable_ports(&same), "0.0.0.0:8000-8001->8000-8001/tcp");
        assert_eq!(displayable_ports(&[]), "");
    }

    #[test]
    fn port_like_docker() {
        let v = json!({"NetworkSettings": {"Ports": {
            "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
            "443/tcp": null,
            "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
            "9000/tcp": [{"HostIp": "", "HostPort": "9"}],
            "10000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "1"}],
        }}});
        assert_eq!(
            port_lines(&v, "web", None).unwrap(),
            vec![
                "53/udp -> 127.0.0.1:5353",
                "80/tcp -> 0.0.0.0:8080",
                "80/tcp -> [::]:8080",
                "9000/tcp -> :9",
                "10000/tcp -> 0.0.0.0:1",
            ]
        );
        assert_eq!(
            port_lines(&v, "web", Some("80")).unwrap(),
            vec!["0.0.0.0:8080", "[::]:8080"]
        );
        assert_eq!(
            port_lines(&v, "web", Some("53/udp")).unwrap(),
            vec!["127.0.0.1:5353"]
        );
        assert_eq!(
            port_lines(&v, "web", Some("443")).unwrap_err().to_string(),
            "Error: No public port '443' published for web"
        );
        assert_eq!(
            port_lines(&v, "web", Some("99/tcp"))
                .unwrap_err()
                .to_string(),
            "Error: No public port '99/tcp' published for web"
        );
        assert_eq!(
            port_lines(&v, "web", Some("abc")).unwrap_err().to_string(),
            "Error: invalid port (abc): strconv.ParseUint: parsing \"abc\": invalid syntax"
        );
        assert!(port_lines(&json!({}), "web", None).unwrap().is_empty());
    }

    #[test]
    fn ps_table_like_docker() {
        let now = chrono::Utc::now().timestamp();
        let c = json!({
            "Id": "0123456789abcdef0123", "Names": ["/web"], "Image": "busybox", "ImageID": "sha256:aa",
            "Command": "sleep 1000000000000000", "Created": now - 150, "Status": "Up 2 minutes", "State": "running",
            "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}],
            "Labels": {"b": "2", "a": "1"},
        });
        let row = ps_row(&c, true);
        assert_eq!(row["ID"], "0123456789ab");
        assert_eq!(row["Command"], "\"sleep 1000000000000…\"");
        assert_eq!(row["RunningFor"], "2 minutes ago");
        assert_eq!(row["Names"], "web");
        assert_eq!(row["Labels"], "a=1,b=2");
        let out = render_list(
            &Format::DefaultTable,
            "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}",
            &ps_headers(),
            &[row],
        )
        .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "CONTAINER ID   IMAGE     COMMAND                  CREATED         STATUS         PORTS                  NAMES");
        assert_eq!(lines[1], "0123456789ab   busybox   \"sleep 1000000000000…\"   2 minutes ago   Up 2 minutes   0.0.0.0:8080->80/tcp   web");
        let untrunc = ps_row(&c, false);
        assert_eq!(untrunc["Command"], "\"sleep 1000000000000000\"");
    }
}
