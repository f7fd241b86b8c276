//! `network create/ls/inspect/rm/prune/connect/disconnect` (docker's commands and
//! request bodies, checked against docker CLI 28) and shibafu's own
//! `network policy ...` and `network reload`.

use std::net::IpAddr;

use serde_json::{json, Map, Value};

use crate::cli::{
    NetworkConnectArgs, NetworkCreateArgs, NetworkDisconnectArgs, NetworkInspectArgs,
    NetworkLsArgs, NetworkRmArgs, PolicyCreateArgs, PolicyInspectArgs, PolicyLsArgs, PolicyRmArgs,
    PruneArgs,
};
use crate::client::query;
use crate::cmd::{confirm, filters_json, natural_less, s, seg};
use crate::dnsopts::{labels, network_dns_option};
use crate::error::{CliError, Result};
use crate::human::short_id;
use crate::opts::kv_map;
use crate::template::{render_list, Format, Template};
use crate::Ctx;

/// A parsed CIDR (`net.ParseCIDR`): the address as written and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    /// Go's `net.ParseCIDR`, with its error text ("invalid CIDR address: X").
    pub fn parse(s: &str) -> std::result::Result<Cidr, String> {
        let bad = || format!("invalid CIDR address: {s}");
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let len: u8 = l.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(bad());
        }
        Ok(Cidr { addr, len })
    }

    /// Whether `ip` lies in this network (host bits of the CIDR ignored, like Go).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

/// docker's `subnetMatches(subnet, data)`: is `data` (an address, or a CIDR's
/// address) inside `subnet`?
fn subnet_matches(subnet: &str, data: &str) -> std::result::Result<bool, String> {
    let net = Cidr::parse(subnet).map_err(|e| format!("invalid subnet: {e}"))?;
    let ip = if data.contains('/') {
        Some(Cidr::parse(data)?.addr)
    } else {
        data.parse::<IpAddr>().ok()
    };
    Ok(ip.is_some_and(|ip| net.contains(ip)))
}

/// docker's `createIPAMConfig`: groups `--subnet/--ip-range/--gateway` into IPAM
/// config entries (one per subnet, in the order given) with the CLI's own checks;
/// everything else (valid subnet text, overlap with other networks, ...) is the
/// daemon's to judge.
pub fn ipam_config(
    subnets: &[String],
    ranges: &[String],
    gateways: &[String],
) -> std::result::Result<Vec<Value>, String> {
    if subnets.len() < ranges.len() || subnets.len() < gateways.len() {
        return Err("every ip-range or gateway must have a corresponding subnet".into());
    }
    for r in ranges {
        Cidr::parse(r)?;
    }
    let mut entries: Vec<(String, Map<String, Value>)> = Vec::new();
    for sn in subnets {
        for (k, _) in &entries {
            if subnet_matches(sn, k)? || subnet_matches(k, sn)? {
                return Err("multiple overlapping subnet configuration is not supported".into());
            }
        }
        let mut m = Map::new();
        m.insert("Subnet".into(), json!(sn));
        entries.push((sn.clone(), m));
    }
    for (field, items, what) in [
        ("IPRange", ranges, "range"),
        ("Gateway", gateways, "gateway"),
    ] {
        for it in items {
            let mut matched = false;
            for (sn, m) in entries.iter_mut() {
                if !subnet_matches(sn, it)? {
                    continue;
                }
                if let Some(prev) = m.get(field).and_then(Value::as_str) {
                    return Err(if field == "IPRange" {
                        format!("cannot configure multiple ranges ({it}, {prev}) on the same subnet ({sn})")
                    } else {
                        format!("cannot configure multiple gateways ({it}, {prev}) for the same subnet ({sn})")
                    });
                }
                m.insert(field.into(), json!(it));
                matched = true;
            }
            if !matched {
                return Err(format!("no matching subnet for {what} {it}"));
            }
        }
    }
    Ok(entries.into_iter().map(|(_, m)| Value::Object(m)).collect())
}

/// The `POST /networks/create` body, as docker's CLI sends it.
pub fn build_create(a: &NetworkCreateArgs) -> Result<Value> {
    let mut subnets = a.subnet.clone();
    subnets.extend(a.subnet_arg.iter().cloned());
    let dns = network_dns_option(&a.dns)?;
    let config = ipam_config(&subnets, &a.ip_range, &a.gateway).map_err(CliError::other)?;
    let mut options = kv_map(&a.opt);
    if let Some(dns) = dns {
        if options.contains_key(labels::NETWORK_DNS) {
            return Err(CliError::usage(format!(
                "conflicting options: --dns and -o {}",
                labels::NETWORK_DNS
            )));
        }
        options.insert(labels::NETWORK_DNS.to_string(), dns);
    }
    let mut body = json!({
        "Name": a.name,
        "Driver": a.driver,
        "Scope": "",
        "IPAM": {"Driver": "default", "Options": {}, "Config": config},
        "Internal": a.internal,
        "Attachable": a.attachable,
        "Ingress": false,
        "ConfigOnly": false,
        "ConfigFrom": null,
        "Options": options,
        "Labels": kv_map(&a.label),
    });
    if let Some(v4) = a.ipv4 {
        body["EnableIPv4"] = json!(v4);
    }
    if let Some(v6) = a.ipv6 {
        body["EnableIPv6"] = json!(v6);
    }
    Ok(body)
}

pub async fn create(ctx: &Ctx, a: NetworkCreateArgs) -> Result<i32> {
    let body = build_create(&a)?;
    let v = ctx
        .client
        .post_json("/networks/create", Some(&body))
        .await?;
    ctx.outln(s(&v, "Id"));
    Ok(0)
}

/// Go's `time.Time.String()` for an RFC 3339 timestamp ("2024-01-02 03:04:05.5
/// +0000 UTC"), which docker prints for `{{.CreatedAt}}`.
pub fn go_time_string(rfc3339: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(rfc3339) else {
        return rfc3339.to_string();
    };
    let mut out = t.format("%Y-%m-%d %H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos > 0 {
        out.push('.');
        out.push_str(format!("{nanos:09}").trim_end_matches('0'));
    }
    let off = t.offset().local_minus_utc();
    if off == 0 {
        out.push_str(" +0000 UTC");
    } else {
        let sign = if off < 0 { '-' } else { '+' };
        let z = format!("{sign}{:02}{:02}", off.abs() / 3600, off.abs() % 3600 / 60);
        out.push_str(&format!(" {z} {z}"));
    }
    out
}

fn join_labels(v: &Value) -> String {
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
    labels.join(",")
}

/// The networks docker (and shibafu) create by themselves.
fn predefined(name: &str) -> bool {
    matches!(name, "bridge" | "host" | "none")
}

/// One `network ls` row: docker's fields plus shibafu's Subnet, Gateway and DNS
/// (the gateway addresses of a user-defined bridge network, where its embedded
/// DNS server listens).
pub fn network_row(v: &Value, trunc: bool) -> Value {
    let id = s(v, "Id");
    let configs = v
        .pointer("/IPAM/Config")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let pick = |k: &str| -> Vec<String> {
        configs
            .iter()
            .map(|c| s(c, k).to_string())
            .filter(|x| !x.is_empty())
            .collect()
    };
    let subnets = pick("Subnet").join(",");
    let gateways = pick("Gateway").join(",");
    let name = s(v, "Name");
    let dns = if s(v, "Driver") == "bridge" && !predefined(name) {
        gateways.clone()
    } else {
        String::new()
    };
    let b = |k: &str| {
        v.get(k)
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .to_string()
    };
    json!({
        "ID": if trunc { short_id(id) } else { id.to_string() },
        "Name": name,
        "Driver": s(v, "Driver"),
        "Scope": s(v, "Scope"),
        "IPv4": v.get("EnableIPv4").and_then(Value::as_bool).unwrap_or(true).to_string(),
        "IPv6": b("EnableIPv6"),
        "Internal": b("Internal"),
        "Labels": join_labels(v),
        "CreatedAt": go_time_string(s(v, "Created")),
        "Subnet": subnets,
        "Gateway": gateways,
        "DNS": dns,
    })
}

fn network_headers() -> Value {
    json!({
        "ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
        "IPv4": "IPV4", "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS",
        "CreatedAt": "CREATED AT", "Subnet": "SUBNET", "Gateway": "GATEWAY", "DNS": "DNS",
    })
}

/// shibafu's default `network ls` table (SPEC §3).
const NETWORK_TABLE: &str = "{{.Name}}\t{{.Subnet}}\t{{.Gateway}}\t{{.DNS}}";

/// Renders `network ls` output for the daemon's list (sorted by name like docker).
pub fn render_networks(
    list: &[Value],
    quiet: bool,
    trunc: bool,
    format: Option<&str>,
) -> Result<String> {
    let mut nets = list.to_vec();
    nets.sort_by(|a, b| {
        if natural_less(s(a, "Name"), s(b, "Name")) {
            std::cmp::Ordering::Less
        } else if natural_less(s(b, "Name"), s(a, "Name")) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    });
    let fmt_err = |e: crate::template::TemplateError| CliError::other(e.to_string());
    let format = Format::parse(format).map_err(fmt_err)?;
    let mut rows: Vec<Value> = nets.iter().map(|n| network_row(n, trunc)).collect();
    if quiet && matches!(format, Format::DefaultTable) {
        return Ok(rows.iter().map(|r| format!("{}\n", s(r, "ID"))).collect());
    }
    if matches!(format, Format::DefaultTable) {
        for r in rows.iter_mut() {
            for k in ["Subnet", "Gateway", "DNS"] {
                if s(r, k).is_empty() {
                    r[k] = json!("-");
                }
            }
        }
    }
    render_list(&format, NETWORK_TABLE, &network_headers(), &rows).map_err(fmt_err)
}

pub async fn ls(ctx: &Ctx, a: NetworkLsArgs) -> Result<i32> {
    // Parse the template before asking the daemon: a bad one fails fast.
    Format::parse(a.format.as_deref()).map_err(|e| CliError::other(e.to_string()))?;
    let q = match filters_json(&a.filter)? {
        Some(f) => query(&[("filters", f)]),
        None => String::new(),
    };
    let v = ctx.client.get_json(&format!("/networks{q}")).await?;
    let list = v.as_array().cloned().unwrap_or_default();
    let out = render_networks(&list, a.quiet, !a.no_trunc, a.format.as_deref())?;
    ctx.out(&out);
    Ok(0)
}

pub async fn inspect(ctx: &Ctx, a: NetworkInspectArgs) -> Result<i32> {
    crate::cmd::inspect::inspect(
        ctx,
        Some("network"),
        a.format.as_deref(),
        a.verbose,
        &a.names,
    )
    .await
}

pub async fn rm(ctx: &Ctx, a: NetworkRmArgs) -> Result<i32> {
    let mut failed = false;
    for n in &a.networks {
        match ctx.client.delete(&format!("/networks/{}", seg(n))).await {
            Ok(_) => ctx.outln(n),
            Err(e) if a.force && e.is_not_found() => {}
            Err(e @ CliError::Connect { .. }) => return Err(e),
            Err(e) => {
                failed = true;
                ctx.errln(&e.to_string());
            }
        }
    }
    if failed {
        // docker's CLI ends with its StatusError text
        ctx.errln("exit status 1");
        return Ok(1);
    }
    Ok(0)
}

pub async fn prune(ctx: &Ctx, a: PruneArgs) -> Result<i32> {
    if !a.force
        && !confirm(
            ctx,
            "WARNING! This will remove all custom networks not used by at least one container.",
        )
    {
        return Ok(0);
    }
    let v = crate::cmd::prune_request(ctx, "/networks/prune", &a.filter).await?;
    let deleted: Vec<&str> = v
        .get("NetworksDeleted")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !deleted.is_empty() {
        let mut out = String::from("Deleted Networks:\n");
        for d in deleted {
            out.push_str(d);
            out.push('\n');
        }
        ctx.outln(&out);
    }
    Ok(0)
}

/// `network connect`'s body, as docker's CLI sends it (addresses are the daemon's
/// to validate).
pub fn build_connect(a: &NetworkConnectArgs) -> Result<Value> {
    let mut driver_opts = Map::new();
    for o in &a.driver_opt {
        match o.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                driver_opts.insert(k.trim().to_string(), json!(v.trim()));
            }
            _ => {
                return Err(CliError::other(
                    "invalid key/value pair format in driver options",
                ))
            }
        }
    }
    let mut ipam = Map::new();
    if let Some(ip) = a.ip.as_deref().filter(|s| !s.is_empty()) {
        ipam.insert("IPv4Address".into(), json!(ip));
    }
    if let Some(ip) = a.ip6.as_deref().filter(|s| !s.is_empty()) {
        ipam.insert("IPv6Address".into(), json!(ip));
    }
    Ok(json!({
        "Container": a.container,
        "EndpointConfig": {
            "IPAMConfig": ipam,
            "Links": if a.link.is_empty() { Value::Null } else { json!(a.link) },
            "Aliases": a.alias,
            "DriverOpts": driver_opts,
            "GwPriority": a.gw_priority,
        },
    }))
}

pub async fn connect(ctx: &Ctx, a: NetworkConnectArgs) -> Result<i32> {
    let body = build_connect(&a)?;
    ctx.client
        .post(
            &format!("/networks/{}/connect", seg(&a.network)),
            Some(&body),
        )
        .await?;
    Ok(0)
}

pub async fn disconnect(ctx: &Ctx, a: NetworkDisconnectArgs) -> Result<i32> {
    let body = json!({"Container": a.container, "Force": a.force});
    ctx.client
        .post(
            &format!("/networks/{}/disconnect", seg(&a.network)),
            Some(&body),
        )
        .await?;
    Ok(0)
}

/// One policy rule from `NET[:PORT[/PROTO]]` (the daemon resolves NET).
pub fn parse_rule(spec: &str, flag: &str) -> Result<Value> {
    let bad = |why: String| {
        CliError::usage(format!(
            "invalid argument \"{spec}\" for \"{flag}\" flag: {why}"
        ))
    };
    let (net, port) = match spec.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (spec, None),
    };
    if net.is_empty() {
        return Err(bad("expected NETWORK[:PORT[/PROTO]]".into()));
    }
    let mut rule = json!({ "Network": net });
    if let Some(p) = port {
        let (num, proto) = match p.split_once('/') {
            Some((n, pr)) => (n, Some(pr.to_ascii_lowercase())),
            None => (p, None),
        };
        let n: u16 = num
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad(format!("invalid port {num:?}: must be 1-65535")))?;
        rule["Port"] = json!(n);
        if let Some(pr) = proto {
            if pr != "tcp" && pr != "udp" {
                return Err(bad(format!("invalid protocol {pr:?}: must be tcp or udp")));
            }
            rule["Proto"] = json!(pr);
        }
    }
    Ok(rule)
}

/// The `POST /shibafu/networks/policies` body (shibafu-api's `NetworkPolicy`).
pub fn build_policy(a: &PolicyCreateArgs) -> Result<Value> {
    if a.name.trim().is_empty() {
        return Err(CliError::usage("policy name must not be empty"));
    }
    if a.network.trim().is_empty() {
        return Err(CliError::usage("--network must name a network"));
    }
    let deny = a
        .deny_ingress_from
        .iter()
        .map(|r| parse_rule(r, "--deny-ingress-from"))
        .collect::<Result<Vec<_>>>()?;
    let allow = a
        .allow_ingress_from
        .iter()
        .map(|r| parse_rule(r, "--allow-ingress-from"))
        .collect::<Result<Vec<_>>>()?;
    if deny.is_empty() && allow.is_empty() {
        return Err(CliError::usage(
            "a policy needs at least one --deny-ingress-from or --allow-ingress-from",
        ));
    }
    Ok(json!({
        "Name": a.name,
        "Network": a.network,
        "DenyIngressFrom": deny,
        "AllowIngressFrom": allow,
    }))
}

pub async fn policy_create(ctx: &Ctx, a: PolicyCreateArgs) -> Result<i32> {
    let body = build_policy(&a)?;
    let v = ctx
        .client
        .post_json("/shibafu/networks/policies", Some(&body))
        .await?;
    let id = s(&v, "Id");
    ctx.outln(if id.is_empty() { s(&v, "Name") } else { id });
    Ok(0)
}

/// A rule as the user wrote it: `NET`, `NET:80`, `NET:53/udp`.
pub fn rule_text(r: &Value) -> String {
    let mut t = s(r, "Network").to_string();
    if let Some(p) = r.get("Port").and_then(Value::as_u64) {
        t.push_str(&format!(":{p}"));
        let proto = s(r, "Proto");
        t.push('/');
        t.push_str(if proto.is_empty() { "tcp" } else { proto });
    }
    t
}

/// One `network policy ls` row.
pub fn policy_row(p: &Value, trunc: bool) -> Value {
    let rules = |k: &str| -> String {
        p.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().map(rule_text).collect::<Vec<_>>().join(","))
            .unwrap_or_default()
    };
    let id = s(p, "Id");
    json!({
        "ID": if trunc { short_id(id) } else { id.to_string() },
        "Name": s(p, "Name"),
        "Network": s(p, "Network"),
        "Deny": rules("DenyIngressFrom"),
        "Allow": rules("AllowIngressFrom"),
        "CreatedAt": go_time_string(s(p, "Created")),
    })
}

/// Renders `network policy ls` (sorted by name).
pub fn render_policies(
    list: &[Value],
    quiet: bool,
    trunc: bool,
    format: Option<&str>,
) -> Result<String> {
    let mut items = list.to_vec();
    items.sort_by(|a, b| s(a, "Name").cmp(s(b, "Name")));
    if quiet {
        return Ok(items
            .iter()
            .map(|p| format!("{}\n", s(p, "Name")))
            .collect());
    }
    let fmt_err = |e: crate::template::TemplateError| CliError::other(e.to_string());
    let format = Format::parse(format).map_err(fmt_err)?;
    let mut rows: Vec<Value> = items.iter().map(|p| policy_row(p, trunc)).collect();
    if matches!(format, Format::DefaultTable) {
        for r in rows.iter_mut() {
            for k in ["Deny", "Allow"] {
                if s(r, k).is_empty() {
                    r[k] = json!("-");
                }
            }
        }
    }
    let headers = json!({
        "ID": "POLICY ID", "Name": "NAME", "Network": "NETWORK",
        "Deny": "DENY INGRESS FROM", "Allow": "ALLOW INGRESS FROM", "CreatedAt": "CREATED AT",
    });
    render_list(
        &format,
        "{{.ID}}\t{{.Name}}\t{{.Network}}\t{{.Deny}}\t{{.Allow}}",
        &headers,
        &rows,
    )
    .map_err(fmt_err)
}

/// GET a shibafu list route, optionally `?network=NET`, after checking the
/// `--format` template (a bad one fails before the daemon is asked).
pub(crate) async fn get_list_by_network(
    ctx: &Ctx,
    path: &str,
    network: &Option<String>,
    format: Option<&str>,
) -> Result<Vec<serde_json::Value>> {
    Format::parse(format).map_err(|e| CliError::other(e.to_string()))?;
    let q = match network {
        Some(n) => query(&[("network", n.clone())]),
        None => String::new(),
    };
    let v = ctx.client.get_json(&format!("{path}{q}")).await?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

pub async fn policy_ls(ctx: &Ctx, a: PolicyLsArgs) -> Result<i32> {
    let list = get_list_by_network(
        ctx,
        "/shibafu/networks/policies",
        &a.network,
        a.format.as_deref(),
    )
    .await?;
    ctx.out(&render_policies(
        &list,
        a.quiet,
        !a.no_trunc,
        a.format.as_deref(),
    )?);
    Ok(0)
}

pub async fn policy_inspect(ctx: &Ctx, a: PolicyInspectArgs) -> Result<i32> {
    let tmpl = match a.format.as_deref() {
        None | Some("") => None,
        Some("json") => Some("{{json .}}".to_string()),
        Some(f) => Some(f.replace("\\t", "\t").replace("\\n", "\n")),
    }
    .map(|t| Template::parse(&t).map_err(|e| CliError::other(e.to_string())))
    .transpose()?;
    let mut raws = Vec::new();
    let mut rendered = String::new();
    let mut errors = Vec::new();
    for n in &a.names {
        match ctx
            .client
            .get_bytes(&format!("/shibafu/networks/policies/{}", seg(n)))
            .await
        {
            Ok(raw) => match &tmpl {
                Some(t) => {
                    let v: Value = serde_json::from_slice(&raw)?;
                    rendered.push_str(&t.render(&v).map_err(|e| CliError::other(e.to_string()))?);
                    rendered.push('\n');
                }
                None => raws.push(raw),
            },
            Err(e @ CliError::Connect { .. }) => return Err(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if tmpl.is_some() {
        ctx.out(&rendered);
    } else {
        let items: Vec<(bool, &[u8])> = raws.iter().map(|r| (false, r.as_ref())).collect();
        ctx.outln(&crate::cmd::inspect::indent_items(&items));
    }
    for e in &errors {
        ctx.errln(e);
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}

pub async fn policy_rm(ctx: &Ctx, a: PolicyRmArgs) -> Result<i32> {
    let client = ctx.client.clone();
    crate::cmd::each(ctx, &a.names, |n| {
        let client = client.clone();
        async move {
            client
                .delete(&format!("/shibafu/networks/policies/{}", seg(&n)))
                .await?;
            Ok(())
        }
    })
    .await
}

/// Prints a reload report: actions on stdout, errors on stderr; exit 1 on errors.
pub fn report_reload(ctx: &Ctx, v: &Value) -> i32 {
    let lines = |k: &str| -> Vec<String> {
        v.get(k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    };
    let actions = lines("Actions");
    let errors = lines("Errors");
    if actions.is_empty() && errors.is_empty() {
        ctx.outln("Networking is consistent: nothing to do");
    }
    for a in &actions {
        ctx.outln(a);
    }
    for e in &errors {
        ctx.errln(&format!("Error: {e}"));
    }
    if errors.is_empty() {
        0
    } else {
        1
    }
}

pub async fn reload(ctx: &Ctx) -> Result<i32> {
    let v = ctx
        .client
        .post_json::<()>("/shibafu/networks/reload", None)
        .await?;
    Ok(report_reload(ctx, &v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Cmd, NetworkCmd, PolicyCmd};
    use clap::Parser;

    fn net_cmd(args: &[&str]) -> NetworkCmd {
        let mut v = vec!["shibafu", "network"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v).unwrap().cmd.unwrap() {
            Cmd::Network { cmd } => cmd,
            other => panic!("{other:?}"),
        }
    }

    fn create_body(args: &[&str]) -> Result<Value> {
        let mut v = vec!["create"];
        v.extend_from_slice(args);
        match net_cmd(&v) {
            NetworkCmd::Create(a) => build_create(&a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_body_like_docker() {
        let b = create_body(&["n1"]).unwrap();
        assert_eq!(
            b,
            json!({"Name": "n1", "Driver": "bridge", "Scope": "", "IPAM": {"Driver": "default", "Options": {}, "Config": []},
                   "Internal": false, "Attachable": false, "Ingress": false, "ConfigOnly": false, "ConfigFrom": null,
                   "Options": {}, "Labels": {}})
        );
        let b = create_body(&[
            "--subnet",
            "10.5.0.0/24",
            "--gateway",
            "10.5.0.1",
            "--ip-range",
            "10.5.0.128/25",
            "--label",
            "a=b",
            "--label",
            "novalue",
            "-o",
            "com.docker.network.bridge.name=br5",
            "--internal",
            "--attachable",
            "--ipv6",
            "--subnet",
            "fd00::/64",
            "n1",
        ])
        .unwrap();
        assert_eq!(
            b["IPAM"]["Config"],
            json!([{"Subnet": "10.5.0.0/24", "IPRange": "10.5.0.128/25", "Gateway": "10.5.0.1"}, {"Subnet": "fd00::/64"}])
        );
        assert_eq!(b["Labels"], json!({"a": "b", "novalue": ""}));
        assert_eq!(
            b["Options"],
            json!({"com.docker.network.bridge.name": "br5"})
        );
        assert_eq!(
            (b["Internal"].clone(), b["Attachable"].clone()),
            (json!(true), json!(true))
        );
        assert_eq!(b["EnableIPv6"], json!(true));
        assert!(b.get("EnableIPv4").is_none());
        let b = create_body(&["--ipv6=false", "--ipv4=false", "n"]).unwrap();
        assert_eq!(
            (b["EnableIPv6"].clone(), b["EnableIPv4"].clone()),
            (json!(false), json!(false))
        );
        // comma lists, like pflag's string slices
        let b = create_body(&["--subnet", "10.1.0.0/24,10.2.0.0/24", "n"]).unwrap();
        assert_eq!(b["IPAM"]["Config"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn dns_option() {
        let b = create_body(&[
            "--dns",
            "10.0.0.53",
            "--dns",
            "[fd00::53]:5353,127.0.0.9:53",
            "n",
        ])
        .unwrap();
        assert_eq!(
            b["Options"],
            json!({"io.shibafu.network.dns": "10.0.0.53,[fd00::53]:5353,127.0.0.9:53"})
        );
        let b = create_body(&[
            "-o",
            "com.docker.network.bridge.name=br5",
            "--dns",
            "10.0.0.53",
            "n",
        ])
        .unwrap();
        assert_eq!(
            b["Options"],
            json!({"com.docker.network.bridge.name": "br5", "io.shibafu.network.dns": "10.0.0.53"})
        );
        // -o alone passes through (the daemon validates it)
        let b = create_body(&["-o", "io.shibafu.network.dns=10.0.0.1", "n"]).unwrap();
        assert_eq!(b["Options"], json!({"io.shibafu.network.dns": "10.0.0.1"}));
        let e = create_body(&["--dns", "10.0.0.1:0", "n"]).unwrap_err();
        assert!(matches!(e, CliError::Usage(_)));
        assert!(e.to_string().contains("\"--dns\" flag"), "{e}");
        let e = create_body(&["--dns", "dns.example", "n"]).unwrap_err();
        assert!(matches!(e, CliError::Usage(_)));
        let e = create_body(&[
            "-o",
            "io.shibafu.network.dns=10.0.0.1",
            "--dns",
            "10.0.0.2",
            "n",
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "conflicting options: --dns and -o io.shibafu.network.dns"
        );
    }

    #[test]
    fn short_form_subnet() {
        let b = create_body(&["frontend", "172.21.0.0/24"]).unwrap();
        assert_eq!(b["Name"], "frontend");
        assert_eq!(b["IPAM"]["Config"], json!([{"Subnet": "172.21.0.0/24"}]));
        let b = create_body(&["--gateway", "172.21.0.254", "frontend", "172.21.0.0/24"]).unwrap();
        assert_eq!(
            b["IPAM"]["Config"],
            json!([{"Subnet": "172.21.0.0/24", "Gateway": "172.21.0.254"}])
        );
    }

    #[test]
    fn client_side_ipam_errors_like_docker() {
        let e = |args: &[&str]| create_body(args).unwrap_err().to_string();
        assert_eq!(
            e(&["--gateway", "10.1.0.1", "n"]),
            "every ip-range or gateway must have a corresponding subnet"
        );
        assert_eq!(
            e(&[
                "--subnet",
                "10.1.0.0/24",
                "--gateway",
                "10.1.0.1",
                "--gateway",
                "10.1.0.2",
                "n"
            ]),
            "every ip-range or gateway must have a corresponding subnet"
        );
        assert_eq!(
            e(&["--subnet", "10.1.0.0/24", "--gateway", "10.2.0.1", "n"]),
            "no matching subnet for gateway 10.2.0.1"
        );
        assert_eq!(
            e(&["--subnet", "10.1.0.0/24", "--gateway", "bogus", "n"]),
            "no matching subnet for gateway bogus"
        );
        assert_eq!(
            e(&["--subnet", "10.1.0.0/16", "--subnet", "10.1.0.0/24", "n"]),
            "multiple overlapping subnet configuration is not supported"
        );
        assert_eq!(
            e(&["--subnet", "10.1.0.0/24", "--ip-range", "10.2.0.0/25", "n"]),
            "no matching subnet for range 10.2.0.0/25"
        );
        assert_eq!(
            e(&["--ip-range", "10.2.0.0", "--subnet", "10.2.0.0/24", "n"]),
            "invalid CIDR address: 10.2.0.0"
        );
        assert_eq!(
            e(&["--subnet", "10.1.0.0/24", "--subnet", "10.2.0.0/24", "--ip-range", "10.1.0.0/25", "--ip-range", "10.1.0.128/25", "n"]),
            "cannot configure multiple ranges (10.1.0.128/25, 10.1.0.0/25) on the same subnet (10.1.0.0/24)"
        );
        assert_eq!(
            e(&["--subnet", "bogus", "--subnet", "10.0.0.0/8", "n"]),
            "invalid subnet: invalid CIDR address: bogus"
        );
        // one bad subnet alone is the daemon's to refuse, as with docker
        assert_eq!(
            create_body(&["--subnet", "bogus", "n"]).unwrap()["IPAM"]["Config"],
            json!([{"Subnet": "bogus"}])
        );
        // exit code 1 (not a usage error), like docker
        assert!(matches!(
            create_body(&["--gateway", "10.1.0.1", "n"]),
            Err(CliError::Other(_))
        ));
    }

    #[test]
    fn cidr_math() {
        let c = Cidr::parse("10.1.0.5/24").unwrap();
        assert!(c.contains("10.1.0.200".parse().unwrap()));
        assert!(!c.contains("10.1.1.1".parse().unwrap()));
        assert!(!c.contains("fd00::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("fd00::/64")
            .unwrap()
            .contains("fd00::abcd".parse().unwrap()));
        assert!(!Cidr::parse("fd00::/64")
            .unwrap()
            .contains("fd01::1".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0",
            "x/8",
            "10.0.0.0/",
            "::/129",
            "10.0.0.0/-1",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    fn nets() -> Vec<Value> {
        vec![
            json!({"Name": "net10", "Id": "2222222222222222222222", "Created": "2024-01-02T03:04:05.123456789Z", "Scope": "local", "Driver": "bridge",
                   "EnableIPv4": true, "EnableIPv6": true, "Internal": true, "Labels": {"b": "2", "a": "1"},
                   "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.1.0.0/24", "Gateway": "10.1.0.1"}, {"Subnet": "fd00::/64", "Gateway": "fd00::1"}]}}),
            json!({"Name": "bridge", "Id": "1111111111111111111111", "Created": "2024-01-01T00:00:00Z", "Scope": "local", "Driver": "bridge",
                   "EnableIPv4": true, "EnableIPv6": false, "Internal": false, "Labels": {},
                   "IPAM": {"Driver": "default", "Config": [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]}}),
            json!({"Name": "host", "Id": "4444444444444444444444", "Created": "2024-01-01T00:00:00+09:00", "Scope": "local", "Driver": "host",
                   "IPAM": {"Driver": "default", "Config": []}}),
            json!({"Name": "net9", "Id": "3333333333333333333333", "Created": "2024-01-02T03:04:05Z", "Scope": "local", "Driver": "bridge",
                   "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.1"}]}}),
        ]
    }

    #[test]
    fn ls_default_table_is_name_subnet_gateway_dns() {
        let out = render_networks(&nets(), false, true, None).unwrap();
        assert_eq!(
            out,
            "NAME      SUBNET                  GATEWAY            DNS\n\
             bridge    172.17.0.0/16           172.17.0.1         -\n\
             host      -                       -                  -\n\
             net9      10.9.0.0/24             10.9.0.1           10.9.0.1\n\
             net10     10.1.0.0/24,fd00::/64   10.1.0.1,fd00::1   10.1.0.1,fd00::1\n"
        );
    }

    #[test]
    fn ls_quiet_format_and_no_trunc() {
        assert_eq!(
            render_networks(&nets(), true, true, None).unwrap(),
            "111111111111\n444444444444\n333333333333\n222222222222\n"
        );
        assert_eq!(
            render_networks(&nets()[..1], true, false, None).unwrap(),
            "2222222222222222222222\n"
        );
        let out = render_networks(
            &nets(),
            false,
            true,
            Some("{{.Name}} {{.ID}} {{.Driver}} {{.Scope}} {{.IPv4}} {{.IPv6}} {{.Internal}} {{.Labels}} {{.CreatedAt}}|{{.Subnet}}|{{.DNS}}"),
        )
        .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "bridge 111111111111 bridge local true false false  2024-01-01 00:00:00 +0000 UTC|172.17.0.0/16|");
        assert_eq!(
            lines[1],
            "host 444444444444 host local true false false  2024-01-01 00:00:00 +0900 +0900||"
        );
        assert_eq!(lines[3], "net10 222222222222 bridge local true true true a=1,b=2 2024-01-02 03:04:05.123456789 +0000 UTC|10.1.0.0/24,fd00::/64|10.1.0.1,fd00::1");
        let out = render_networks(
            &nets(),
            false,
            true,
            Some("table {{.ID}}\\t{{.Name}}\\t{{.Driver}}\\t{{.Scope}}"),
        )
        .unwrap();
        assert_eq!(
            out.lines().next().unwrap(),
            "NETWORK ID     NAME      DRIVER    SCOPE"
        );
        assert_eq!(
            out.lines().nth(1).unwrap(),
            "111111111111   bridge    bridge    local"
        );
        let out = render_networks(&nets()[1..2], false, true, Some("json")).unwrap();
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["Name"], "bridge");
        assert_eq!(v["IPv6"], "false");
        assert!(render_networks(&nets(), false, true, Some("{{.Name")).is_err());
    }

    #[test]
    fn connect_body_like_docker() {
        let a = match net_cmd(&["connect", "n1", "web"]) {
            NetworkCmd::Connect(a) => a,
            _ => unreachable!(),
        };
        assert_eq!(
            build_connect(&a).unwrap(),
            json!({"Container": "web", "EndpointConfig": {"IPAMConfig": {}, "Links": null, "Aliases": [], "DriverOpts": {}, "GwPriority": 0}})
        );
        let a = match net_cmd(&[
            "connect",
            "--ip",
            "10.0.0.5",
            "--ip6",
            "fd00::5",
            "--alias",
            "a",
            "--alias",
            "b,c",
            "--link",
            "x:y",
            "--driver-opt",
            "k=v",
            "--gw-priority",
            "-5",
            "n1",
            "web",
        ]) {
            NetworkCmd::Connect(a) => a,
            _ => unreachable!(),
        };
        assert_eq!(
            build_connect(&a).unwrap(),
            json!({"Container": "web", "EndpointConfig": {"IPAMConfig": {"IPv4Address": "10.0.0.5", "IPv6Address": "fd00::5"},
                   "Links": ["x:y"], "Aliases": ["a", "b", "c"], "DriverOpts": {"k": "v"}, "GwPriority": -5}})
        );
        let a = match net_cmd(&["connect", "--driver-opt", "novalue", "n1", "web"]) {
            NetworkCmd::Connect(a) => a,
            _ => unreachable!(),
        };
        assert_eq!(
            build_connect(&a).unwrap_err().to_string(),
            "invalid key/value pair format in driver options"
        );
    }

    #[test]
    fn policy_rules() {
        assert_eq!(parse_rule("web", "--x").unwrap(), json!({"Network": "web"}));
        assert_eq!(
            parse_rule("web:80", "--x").unwrap(),
            json!({"Network": "web", "Port": 80})
        );
        assert_eq!(
            parse_rule("web:53/UDP", "--x").unwrap(),
            json!({"Network": "web", "Port": 53, "Proto": "udp"})
        );
        for bad in ["web:0", "web:x", "web:70000", ":80", "web:80/icmp", ""] {
            let e = parse_rule(bad, "--allow-ingress-from").unwrap_err();
            assert!(matches!(e, CliError::Usage(_)), "{bad}");
            assert!(e.to_string().contains("--allow-ingress-from"), "{e}");
        }
        assert_eq!(rule_text(&json!({"Network": "a", "Port": 80})), "a:80/tcp");
        assert_eq!(
            rule_text(&json!({"Network": "a", "Port": 53, "Proto": "udp"})),
            "a:53/udp"
        );
        assert_eq!(rule_text(&json!({"Network": "a"})), "a");
    }

    #[test]
    fn policy_create_body() {
        let a = match net_cmd(&[
            "policy",
            "create",
            "--name",
            "p1",
            "--network",
            "backend",
            "--deny-ingress-from",
            "frontend",
            "--allow-ingress-from",
            "frontend:5432",
            "--allow-ingress-from",
            "ops:53/udp",
        ]) {
            NetworkCmd::Policy {
                cmd: PolicyCmd::Create(a),
            } => a,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            build_policy(&a).unwrap(),
            json!({"Name": "p1", "Network": "backend",
                   "DenyIngressFrom": [{"Network": "frontend"}],
                   "AllowIngressFrom": [{"Network": "frontend", "Port": 5432}, {"Network": "ops", "Port": 53, "Proto": "udp"}]})
        );
        let a = match net_cmd(&["policy", "create", "--name", "p1", "--network", "backend"]) {
            NetworkCmd::Policy {
                cmd: PolicyCmd::Create(a),
            } => a,
            other => panic!("{other:?}"),
        };
        assert!(build_policy(&a)
            .unwrap_err()
            .to_string()
            .contains("at least one"));
    }

    #[test]
    fn policy_table() {
        let list = vec![
            json!({"Id": "bbbbbbbbbbbbbbbbbbbb", "Name": "zeta", "Network": "db", "DenyIngressFrom": [], "AllowIngressFrom": [{"Network": "web", "Port": 5432}], "Created": "2024-01-01T00:00:00Z"}),
            json!({"Id": "aaaaaaaaaaaaaaaaaaaa", "Name": "alpha", "Network": "web", "DenyIngressFrom": [{"Network": "ops"}, {"Network": "dev"}], "AllowIngressFrom": []}),
        ];
        assert_eq!(
            render_policies(&list, false, true, None).unwrap(),
            "POLICY ID      NAME      NETWORK   DENY INGRESS FROM   ALLOW INGRESS FROM\n\
             aaaaaaaaaaaa   alpha     web       ops,dev             -\n\
             bbbbbbbbbbbb   zeta      db        -                   web:5432/tcp\n"
        );
        assert_eq!(
            render_policies(&list, true, true, None).unwrap(),
            "alpha\nzeta\n"
        );
        assert_eq!(
            render_policies(&list, false, true, Some("{{.Name}}:{{.Allow}}")).unwrap(),
            "alpha:\nzeta:web:5432/tcp\n"
        );
    }

    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn reload_report_and_exit_code() {
        let run = |v: Value| {
            let (out, err) = (Buf::default(), Buf::default());
            let client = crate::client::Client::new("unix:///nonexistent.sock", false).unwrap();
            let ctx = Ctx::with_io(client, Box::new(out.clone()), Box::new(err.clone()), None);
            let code = report_reload(&ctx, &v);
            (code, out.text(), err.text())
        };
        assert_eq!(
            run(json!({"Actions": ["released 10.1.0.5", "removed veth1"], "Errors": []})),
            (
                0,
                "released 10.1.0.5\nremoved veth1\n".into(),
                String::new()
            )
        );
        assert_eq!(
            run(json!({"Actions": ["removed veth1"], "Errors": ["bridge br9: busy"]})),
            (
                1,
                "removed veth1\n".into(),
                "Error: bridge br9: busy\n".into()
            )
        );
        assert_eq!(
            run(json!({"Actions": [], "Errors": []})),
            (
                0,
                "Networking is consistent: nothing to do\n".into(),
                String::new()
            )
        );
    }

    #[test]
    fn go_time() {
        assert_eq!(
            go_time_string("2024-01-02T03:04:05Z"),
            "2024-01-02 03:04:05 +0000 UTC"
        );
        assert_eq!(
            go_time_string("2024-01-02T03:04:05.500Z"),
            "2024-01-02 03:04:05.5 +0000 UTC"
        );
        assert_eq!(
            go_time_string("2024-01-02T03:04:05-05:30"),
            "2024-01-02 03:04:05 -0530 -0530"
        );
        assert_eq!(go_time_string(""), "");
    }
}
