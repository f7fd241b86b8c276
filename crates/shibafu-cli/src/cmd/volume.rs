//! `volume create/ls/rm/prune` (inspect lives in `inspect`).

use bollard_stubs::models::VolumeCreateRequest;
use serde_json::{json, Value};

use crate::cli::{VolumeCreateArgs, VolumeLsArgs, VolumePruneArgs, VolumeRmArgs};
use crate::client::query;
use crate::cmd::{confirm, filters_json, s, seg};
use crate::error::{CliError, Result};
use crate::human::human_size;
use crate::opts::kv_map;
use crate::template::{render_list, Format};
use crate::Ctx;

pub async fn create(ctx: &Ctx, a: VolumeCreateArgs) -> Result<i32> {
    if a.name.is_some() && a.name_flag.is_some() && a.name != a.name_flag {
        return Err(CliError::usage(
            "conflicting options: cannot specify a volume-name through both --name and as a positional arg",
        ));
    }
    let req = VolumeCreateRequest {
        name: a.name.or(a.name_flag),
        driver: Some(a.driver),
        driver_opts: Some(kv_map(&a.opt)),
        labels: Some(kv_map(&a.label)),
        ..Default::default()
    };
    let v = ctx.client.post_json("/volumes/create", Some(&req)).await?;
    ctx.outln(s(&v, "Name"));
    Ok(0)
}

fn volume_row(v: &Value) -> Value {
    let mut labels: Vec<String> = v
        .get("Labels")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    labels.sort();
    let size = v.pointer("/UsageData/Size").and_then(Value::as_i64);
    let links = v.pointer("/UsageData/RefCount").and_then(Value::as_i64);
    json!({
        "Name": s(v, "Name"),
        "Driver": s(v, "Driver"),
        "Scope": s(v, "Scope"),
        "Mountpoint": s(v, "Mountpoint"),
        "Labels": labels.join(","),
        "Size": size.filter(|s| *s >= 0).map(|s| human_size(s as f64)).unwrap_or_else(|| "N/A".into()),
        "Links": links.filter(|l| *l >= 0).map(|l| l.to_string()).unwrap_or_else(|| "N/A".into()),
        "Group": "N/A",
        "Availability": "N/A",
        "Status": "N/A",
    })
}

pub async fn ls(ctx: &Ctx, a: VolumeLsArgs) -> Result<i32> {
    let format = Format::parse(a.format.as_deref()).map_err(|e| CliError::other(e.to_string()))?;
    let q = match filters_json(&a.filter)? {
        Some(f) => query(&[("filters", f)]),
        None => String::new(),
    };
    let v = ctx.client.get_json(&format!("/volumes{q}")).await?;
    let mut vols = v
        .get("Volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    vols.sort_by(|a, b| s(a, "Name").cmp(s(b, "Name")));
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
    if a.quiet {
        for vol in &vols {
            ctx.outln(s(vol, "Name"));
        }
        return Ok(0);
    }
    let rows: Vec<Value> = vols.iter().map(volume_row).collect();
    let headers = json!({
        "Name": "VOLUME NAME", "Driver": "DRIVER", "Scope": "SCOPE", "Mountpoint": "MOUNTPOINT", "Labels": "LABELS",
        "Size": "SIZE", "Links": "LINKS", "Group": "GROUP", "Availability": "AVAILABILITY", "Status": "STATUS",
    });
    let out = render_list(&format, "{{.Driver}}\t{{.Name}}", &headers, &rows)
        .map_err(|e| CliError::other(e.to_string()))?;
    ctx.out(&out);
    Ok(0)
}

pub async fn rm(ctx: &Ctx, a: VolumeRmArgs) -> Result<i32> {
    let q = if a.force { "?force=1" } else { "" };
    let client = ctx.client.clone();
    crate::cmd::each(ctx, &a.volumes, |v| {
        let client = client.clone();
        async move {
            client.delete(&format!("/volumes/{}{q}", seg(&v))).await?;
            Ok(())
        }
    })
    .await
}

pub async fn prune(ctx: &Ctx, a: VolumePruneArgs) -> Result<i32> {
    let warning = if a.all {
        "WARNING! This will remove all local volumes not used by at least one container."
    } else {
        "WARNING! This will remove anonymous local volumes not used by at least one container."
    };
    if !a.force && !confirm(ctx, warning) {
        return Ok(0);
    }
    let mut filters = a.filter.clone();
    if a.all {
        filters.push("all=true".into());
    }
    crate::cmd::prune_and_report(
        ctx,
        "/volumes/prune",
        &filters,
        "VolumesDeleted",
        "Deleted Volumes:",
    )
    .await
}
