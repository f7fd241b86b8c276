//! `stats`: one-shot (`--no-stream`) or a live table refreshed every second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::cli::StatsArgs;
use crate::client::{body_stream, JsonLines};
use crate::cmd::{s, seg};
use crate::error::{CliError, Result};
use crate::human::{bytes_size, human_size, short_id};
use crate::template::{render_list, Format};
use crate::Ctx;

fn u(v: &Value, p: &str) -> u64 {
    v.pointer(p).and_then(Value::as_u64).unwrap_or(0)
}

/// One stats sample as docker's formatter shows it. `given` is the name the user typed.
pub fn stats_row(given: &str, v: &Value, trunc: bool) -> Value {
    let cpu_delta = u(v, "/cpu_stats/cpu_usage/total_usage") as f64
        - u(v, "/precpu_stats/cpu_usage/total_usage") as f64;
    let sys_delta =
        u(v, "/cpu_stats/system_cpu_usage") as f64 - u(v, "/precpu_stats/system_cpu_usage") as f64;
    let mut online = u(v, "/cpu_stats/online_cpus") as f64;
    if online == 0.0 {
        online = v
            .pointer("/cpu_stats/cpu_usage/percpu_usage")
            .and_then(Value::as_array)
            .map(|a| a.len())
            .unwrap_or(0) as f64;
    }
    let cpu = if sys_delta > 0.0 && cpu_delta > 0.0 {
        cpu_delta / sys_delta * online * 100.0
    } else {
        0.0
    };
    let usage = u(v, "/memory_stats/usage");
    let stat = |k: &str| {
        v.pointer("/memory_stats/stats")
            .and_then(|s| s.get(k))
            .and_then(Value::as_u64)
    };
    let mem = match (stat("total_inactive_file"), stat("inactive_file")) {
        (Some(x), _) if x < usage => usage - x,
        (None, Some(x)) if x < usage => usage - x,
        _ => usage,
    } as f64;
    let limit = u(v, "/memory_stats/limit") as f64;
    let mem_pct = if limit > 0.0 {
        mem / limit * 100.0
    } else {
        0.0
    };
    let (mut rx, mut tx) = (0u64, 0u64);
    for n in v
        .get("networks")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|o| o.values())
    {
        rx += n.get("rx_bytes").and_then(Value::as_u64).unwrap_or(0);
        tx += n.get("tx_bytes").and_then(Value::as_u64).unwrap_or(0);
    }
    let (mut rd, mut wr) = (0u64, 0u64);
    for e in v
        .pointer("/blkio_stats/io_service_bytes_recursive")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let val = e.get("value").and_then(Value::as_u64).unwrap_or(0);
        match s(e, "op").to_ascii_lowercase().as_str() {
            "read" => rd += val,
            "write" => wr += val,
            _ => {}
        }
    }
    let id = s(v, "id");
    json!({
        "Container": given,
        "ID": if trunc { short_id(id) } else { id.to_string() },
        "Name": s(v, "name").trim_start_matches('/'),
        "CPUPerc": format!("{cpu:.2}%"),
        "MemUsage": format!("{} / {}", bytes_size(mem), bytes_size(limit)),
        "MemPerc": format!("{mem_pct:.2}%"),
        "NetIO": format!("{} / {}", human_size(rx as f64), human_size(tx as f64)),
        "BlockIO": format!("{} / {}", human_size(rd as f64), human_size(wr as f64)),
        "PIDs": u(v, "/pids_stats/current").to_string(),
    })
}

fn headers() -> Value {
    json!({
        "Container": "CONTAINER", "ID": "CONTAINER ID", "Name": "NAME", "CPUPerc": "CPU %",
        "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS",
    })
}

const DEFAULT: &str = "{{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

pub async fn stats(ctx: &Ctx, a: StatsArgs) -> Result<i32> {
    let format = Format::parse(a.format.as_deref()).map_err(|e| CliError::other(e.to_string()))?;
    let containers: Vec<String> = if a.containers.is_empty() {
        let list = ctx
            .client
            .get_json(&format!(
                "/containers/json{}",
                if a.all { "?all=1" } else { "" }
            ))
            .await?;
        list.as_array()
            .into_iter()
            .flatten()
            .map(|c| short_id(s(c, "Id")))
            .collect()
    } else {
        a.containers.clone()
    };
    let trunc = !a.no_trunc;
    if a.no_stream {
        let mut rows = Vec::new();
        let mut failed = false;
        for c in &containers {
            match ctx
                .client
                .get_json(&format!("/containers/{}/stats?stream=0", seg(c)))
                .await
            {
                Ok(v) => rows.push(stats_row(c, &v, trunc)),
                Err(e @ CliError::Connect { .. }) => return Err(e),
                Err(e) => {
                    failed = true;
                    ctx.errln(&e.to_string());
                }
            }
        }
        ctx.out(
            &render_list(&format, DEFAULT, &headers(), &rows)
                .map_err(|e| CliError::other(e.to_string()))?,
        );
        return Ok(if failed { 1 } else { 0 });
    }
    // Live: one stream per container, the screen redrawn every second.
    let latest: Arc<Mutex<HashMap<String, Value>>> = Arc::new(Mutex::new(HashMap::new()));
    let mut tasks = Vec::new();
    for c in &containers {
        let client = ctx.client.clone();
        let latest = latest.clone();
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let resp = client
                .request(
                    hyper::Method::GET,
                    &format!("/containers/{}/stats?stream=1", seg(&c)),
                    crate::client::empty_body(),
                    None,
                )
                .await?;
            let mut lines = JsonLines::new(body_stream(resp));
            while let Some(v) = lines.next().await {
                let v = v?;
                latest
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(c.clone(), v);
            }
            Ok::<(), CliError>(())
        }));
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let rows: Vec<Value> = {
            let l = latest.lock().unwrap_or_else(|p| p.into_inner());
            containers
                .iter()
                .filter_map(|c| l.get(c).map(|v| stats_row(c, v, trunc)))
                .collect()
        };
        let text = render_list(&format, DEFAULT, &headers(), &rows)
            .map_err(|e| CliError::other(e.to_string()))?;
        if ctx.tty_out {
            ctx.out(&format!("\x1b[2J\x1b[H{text}"));
        } else {
            ctx.out(&text);
        }
        if tasks.iter().all(|t| t.is_finished()) {
            break;
        }
    }
    let mut failed = false;
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            failed = true;
            ctx.errln(&e.to_string());
        }
    }
    Ok(if failed { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_math_like_docker() {
        let v = json!({
            "id": "0123456789abcdef", "name": "/web",
            "cpu_stats": {"cpu_usage": {"total_usage": 2_000_000u64}, "system_cpu_usage": 20_000_000u64, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000u64}, "system_cpu_usage": 10_000_000u64},
            "memory_stats": {"usage": 3_145_728u64, "limit": 1_073_741_824u64, "stats": {"inactive_file": 1_048_576u64}},
            "networks": {"eth0": {"rx_bytes": 1500, "tx_bytes": 500}},
            "blkio_stats": {"io_service_bytes_recursive": [{"op": "read", "value": 4096}, {"op": "write", "value": 8192}]},
            "pids_stats": {"current": 3},
        });
        let r = stats_row("web", &v, true);
        assert_eq!(r["ID"], "0123456789ab");
        assert_eq!(r["Name"], "web");
        assert_eq!(r["CPUPerc"], "20.00%");
        assert_eq!(r["MemUsage"], "2MiB / 1GiB");
        assert_eq!(r["MemPerc"], "0.20%");
        assert_eq!(r["NetIO"], "1.5kB / 500B");
        assert_eq!(r["BlockIO"], "4.1kB / 8.19kB");
        assert_eq!(r["PIDs"], "3");
    }
}
