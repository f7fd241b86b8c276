//! `version`, `info`, `events`.

use serde_json::{json, Value};

use crate::cli::{EventsArgs, FormatArgs};
use crate::client::{body_stream, query, JsonLines};
use crate::cmd::{filters_json, s};
use crate::error::{CliError, Result};
use crate::human::{bytes_size, parse_timestamp};
use crate::template::{go_json, Template};
use crate::Ctx;

fn client_info() -> Value {
    json!({
        "Platform": {"Name": "shibafu"},
        "Version": crate::VERSION,
        "ApiVersion": "1.50",
        "DefaultAPIVersion": "1.50",
        "GitCommit": option_env!("SHIBAFU_GIT_COMMIT").unwrap_or("unknown"),
        "GoVersion": "rust",
        "Os": std::env::consts::OS,
        "Arch": match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a },
        "BuildTime": "",
        "Context": "default",
    })
}

fn template(f: &str) -> Result<Template> {
    let f = if f == "json" {
        "{{json .}}".to_string()
    } else {
        f.replace("\\t", "\t").replace("\\n", "\n")
    };
    Template::parse(&f).map_err(|e| CliError::other(e.to_string()))
}

pub async fn version(ctx: &Ctx, a: FormatArgs) -> Result<i32> {
    let client = client_info();
    let server = ctx.client.get_json("/version").await;
    if let Some(f) = &a.format {
        let t = template(f)?;
        let data = json!({"Client": client, "Server": server.as_ref().ok()});
        ctx.outln(
            &t.render(&data)
                .map_err(|e| CliError::other(e.to_string()))?,
        );
        return server.map(|_| 0);
    }
    let mut out = format!(
        "Client:\n Version:           {}\n API version:       {}\n Go version:        {}\n Git commit:        {}\n Built:             {}\n OS/Arch:           {}/{}\n Context:           default\n",
        s(&client, "Version"),
        s(&client, "ApiVersion"),
        s(&client, "GoVersion"),
        s(&client, "GitCommit"),
        s(&client, "BuildTime"),
        s(&client, "Os"),
        s(&client, "Arch"),
    );
    match server {
        Ok(v) => {
            let name = v
                .pointer("/Platform/Name")
                .and_then(Value::as_str)
                .unwrap_or("shibafu");
            out.push_str(&format!("\nServer: {name}\n Engine:\n"));
            let api = s(&v, "ApiVersion");
            let min = s(&v, "MinAPIVersion");
            out.push_str(&format!("  Version:          {}\n", s(&v, "Version")));
            out.push_str(&format!(
                "  API version:      {api}{}\n",
                if min.is_empty() {
                    String::new()
                } else {
                    format!(" (minimum version {min})")
                }
            ));
            out.push_str(&format!("  Go version:       {}\n", s(&v, "GoVersion")));
            out.push_str(&format!("  Git commit:       {}\n", s(&v, "GitCommit")));
            out.push_str(&format!("  Built:            {}\n", s(&v, "BuildTime")));
            out.push_str(&format!(
                "  OS/Arch:          {}/{}\n",
                s(&v, "Os"),
                s(&v, "Arch")
            ));
            out.push_str(&format!(
                "  Experimental:     {}\n",
                v.get("Experimental")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            ));
            for c in v
                .get("Components")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let cname = s(c, "Name");
                if cname == "Engine" {
                    continue;
                }
                out.push_str(&format!(
                    " {cname}:\n  Version:          {}\n",
                    s(c, "Version")
                ));
            }
            ctx.out(&out);
            Ok(0)
        }
        Err(e) => {
            ctx.out(&out);
            Err(e)
        }
    }
}

pub async fn info(ctx: &Ctx, a: FormatArgs) -> Result<i32> {
    let v = ctx.client.get_json("/info").await;
    if let Some(f) = &a.format {
        let t = template(f)?;
        let mut data = v.as_ref().cloned().unwrap_or(Value::Null);
        if let Value::Object(o) = &mut data {
            o.insert("ClientInfo".into(), client_info());
        }
        ctx.outln(
            &t.render(&data)
                .map_err(|e| CliError::other(e.to_string()))?,
        );
        return v.map(|_| 0);
    }
    let mut out = format!(
        "Client:\n Version:    {}\n Context:    default\n Debug Mode: false\n\nServer:\n",
        crate::VERSION
    );
    let v = match v {
        Ok(v) => v,
        Err(e) => {
            ctx.out(&out);
            return Err(e);
        }
    };
    let n = |k: &str| v.get(k).and_then(Value::as_i64).unwrap_or(0);
    let line = |out: &mut String, k: &str, val: String| {
        if !val.is_empty() {
            out.push_str(&format!(" {k}: {val}\n"));
        }
    };
    out.push_str(&format!(
        " Containers: {}\n  Running: {}\n  Paused: {}\n  Stopped: {}\n",
        n("Containers"),
        n("ContainersRunning"),
        n("ContainersPaused"),
        n("ContainersStopped")
    ));
    out.push_str(&format!(" Images: {}\n", n("Images")));
    line(&mut out, "Server Version", s(&v, "ServerVersion").into());
    line(&mut out, "Storage Driver", s(&v, "Driver").into());
    for pair in v
        .get("DriverStatus")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some([k, val]) = pair.as_array().map(Vec::as_slice) {
            out.push_str(&format!(
                "  {}: {}\n",
                k.as_str().unwrap_or(""),
                val.as_str().unwrap_or("")
            ));
        }
    }
    line(&mut out, "Logging Driver", s(&v, "LoggingDriver").into());
    line(&mut out, "Cgroup Driver", s(&v, "CgroupDriver").into());
    line(&mut out, "Cgroup Version", s(&v, "CgroupVersion").into());
    if let Some(p) = v.get("Plugins") {
        out.push_str(" Plugins:\n");
        for k in ["Volume", "Network", "Log"] {
            let items: Vec<&str> = p
                .get(k)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            out.push_str(&format!("  {k}: {}\n", items.join(" ")));
        }
    }
    let sec: Vec<String> = v
        .get("SecurityOptions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|o| o.strip_prefix("name=").unwrap_or(o).to_string())
        .collect();
    if !sec.is_empty() {
        out.push_str(" Security Options:\n");
        for o in sec {
            out.push_str(&format!("  {o}\n"));
        }
    }
    line(&mut out, "Kernel Version", s(&v, "KernelVersion").into());
    line(
        &mut out,
        "Operating System",
        s(&v, "OperatingSystem").into(),
    );
    line(&mut out, "OSType", s(&v, "OSType").into());
    line(&mut out, "Architecture", s(&v, "Architecture").into());
    out.push_str(&format!(" CPUs: {}\n", n("NCPU")));
    out.push_str(&format!(
        " Total Memory: {}\n",
        bytes_size(n("MemTotal") as f64)
    ));
    line(&mut out, "Name", s(&v, "Name").into());
    line(&mut out, "ID", s(&v, "ID").into());
    line(&mut out, "Docker Root Dir", s(&v, "DockerRootDir").into());
    out.push_str(&format!(
        " Debug Mode: {}\n",
        v.get("Debug").and_then(Value::as_bool).unwrap_or(false)
    ));
    out.push_str(&format!(
        " Experimental: {}\n",
        v.get("ExperimentalBuild")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    ));
    out.push_str(&format!(
        " Live Restore Enabled: {}\n",
        v.get("LiveRestoreEnabled")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    ));
    ctx.out(&out);
    for w in v
        .get("Warnings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(w) = w.as_str() {
            ctx.errln(w);
        }
    }
    Ok(0)
}

/// docker's default event line: `TIME TYPE ACTION ID (k=v, ...)`.
pub fn event_line(e: &Value) -> String {
    let nanos = e
        .get("timeNano")
        .and_then(Value::as_i64)
        .unwrap_or_else(|| e.get("time").and_then(Value::as_i64).unwrap_or(0) * 1_000_000_000);
    let t = chrono::DateTime::from_timestamp(
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000) as u32,
    )
    .unwrap_or_default()
    .with_timezone(&chrono::Local);
    let ts = if t.offset().local_minus_utc() == 0 {
        t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.9f%:z").to_string()
    };
    let id = e.pointer("/Actor/ID").and_then(Value::as_str).unwrap_or("");
    let mut line = format!("{ts} {} {} {id}", s(e, "Type"), s(e, "Action"));
    if let Some(attrs) = e.pointer("/Actor/Attributes").and_then(Value::as_object) {
        let mut kv: Vec<String> = attrs
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        kv.sort();
        if !kv.is_empty() {
            line.push_str(&format!(" ({})", kv.join(", ")));
        }
    }
    line
}

pub async fn events(ctx: &Ctx, a: EventsArgs) -> Result<i32> {
    let now = chrono::Utc::now();
    let mut pairs = Vec::new();
    if let Some(since) = &a.since {
        pairs.push((
            "since",
            parse_timestamp(since, now).map_err(CliError::usage)?,
        ));
    }
    if let Some(until) = &a.until {
        pairs.push((
            "until",
            parse_timestamp(until, now).map_err(CliError::usage)?,
        ));
    }
    if let Some(f) = filters_json(&a.filter)? {
        pairs.push(("filters", f));
    }
    let tmpl = match a.format.as_deref() {
        None | Some("") => None,
        Some("json") => Some(None),
        Some(f) => Some(Some(template(f)?)),
    };
    let resp = ctx
        .client
        .request(
            hyper::Method::GET,
            &format!("/events{}", query(&pairs)),
            crate::client::empty_body(),
            None,
        )
        .await?;
    let mut lines = JsonLines::new(body_stream(resp));
    while let Some(ev) = lines.next().await {
        let ev = ev?;
        match &tmpl {
            None => ctx.outln(&event_line(&ev)),
            Some(None) => ctx.outln(&go_json(&ev)),
            Some(Some(t)) => ctx.outln(&t.render(&ev).map_err(|e| CliError::other(e.to_string()))?),
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines() {
        let e = json!({"Type": "container", "Action": "start", "Actor": {"ID": "abc", "Attributes": {"name": "web", "image": "busybox"}}, "time": 1, "timeNano": 1_000_000_123i64});
        let l = event_line(&e);
        assert!(
            l.ends_with(" container start abc (image=busybox, name=web)"),
            "{l}"
        );
        assert!(l.contains(".000000123"), "{l}");
    }
}
