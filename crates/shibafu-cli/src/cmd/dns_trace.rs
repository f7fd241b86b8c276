//! `network dns-trace` (shibafu's own): one query through the daemon's real
//! resolver path (`GET /shibafu/dns/trace`), reported for a human. The report
//! is the JSON of `shibafu_dns::TraceReport` (crates/shibafu-dns/src/trace.rs);
//! it is read leniently so a field added later never breaks the CLI.

use serde_json::Value;

use crate::cli::DnsTraceArgs;
use crate::client::query;
use crate::cmd::s;
use crate::error::{CliError, Result};
use crate::template::Template;
use crate::Ctx;

/// Width of the report's labels ("Matched:   ").
const LABEL: usize = 11;

/// The trace route's path and query for these flags.
pub fn trace_path(a: &DnsTraceArgs) -> Result<String> {
    let name = a.query.trim();
    if name.is_empty() {
        return Err(CliError::usage("--query must name something to resolve"));
    }
    let qtype = a.qtype.trim();
    if qtype.is_empty() {
        return Err(CliError::usage(
            "--type must not be empty (A, AAAA, PTR, SRV, ...)",
        ));
    }
    let mut pairs = vec![
        ("name", name.to_string()),
        ("type", qtype.to_ascii_uppercase()),
    ];
    if let Some(f) = a.from.as_deref().filter(|f| !f.is_empty()) {
        pairs.push(("from", f.to_string()));
    }
    if let Some(n) = a.network.as_deref().filter(|n| !n.is_empty()) {
        pairs.push(("network", n.to_string()));
    }
    Ok(format!("/shibafu/dns/trace{}", query(&pairs)))
}

/// Appends `label` and `lines` (the first on the label's line, the rest
/// aligned under it).
fn field(out: &mut String, label: &str, lines: &[String]) {
    for (i, l) in lines.iter().enumerate() {
        let head = if i == 0 {
            format!("{label}:")
        } else {
            String::new()
        };
        out.push_str(&format!("{head:<LABEL$}{l}\n"));
    }
}

fn arr(v: &Value, k: &str) -> Vec<Value> {
    v.get(k)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Who asked, in words. `from` is what the user typed for `--from` (the
/// report only knows the container's address).
fn requester(r: &Value, from: Option<&str>, network: Option<&str>) -> String {
    let listener = s(r, "listener");
    match r.get("from") {
        Some(Value::Object(o)) if o.contains_key("address") => {
            let addr = o.get("address").and_then(Value::as_str).unwrap_or("");
            match from {
                Some(c) => format!("from container {c} at {addr}"),
                None => format!("from {addr}"),
            }
        }
        Some(Value::Object(o)) if o.contains_key("network") => {
            let id = o.get("network").and_then(Value::as_str).unwrap_or("");
            let net = if !listener.is_empty() {
                listener
            } else {
                network.unwrap_or(id)
            };
            format!("as an unknown client at the gateway of {net}")
        }
        Some(Value::String(x)) => format!("from {x}"),
        _ => match from {
            Some(c) => format!("from container {c}"),
            None => "from an unknown client".to_string(),
        },
    }
}

/// Where the answer came from, in words.
fn source(r: &Value) -> String {
    match r.get("source") {
        Some(Value::String(x)) => match x.as_str() {
            "local" => "local".into(),
            "cache" => "cache".into(),
            "no_upstream" => {
                "none: not a local name, and no upstream resolver is configured".into()
            }
            "refused" => {
                "refused: not a local name, and this network does not forward (internal)".into()
            }
            other => other.to_string(),
        },
        Some(Value::Object(o)) => {
            if let Some(a) = o.get("upstream") {
                format!(
                    "upstream {}",
                    a.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| a.to_string())
                )
            } else if let Some(w) = o.get("failed") {
                format!(
                    "failed: {}",
                    w.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| w.to_string())
                )
            } else {
                Value::Object(o.clone()).to_string()
            }
        }
        Some(other) => other.to_string(),
        None => "unknown".into(),
    }
}

/// Microseconds as milliseconds with two decimals ("0.04 ms").
fn millis(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// The human report of a trace.
pub fn render_trace(r: &Value, from: Option<&str>, network: Option<&str>) -> String {
    let mut out = String::new();
    let view: Vec<String> = arr(r, "view")
        .iter()
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect();
    let view = if view.is_empty() {
        "none".to_string()
    } else {
        view.join(", ")
    };
    field(
        &mut out,
        "Query",
        &[format!(
            "{} {} ({}, networks: {view})",
            s(r, "query"),
            s(r, "qtype"),
            requester(r, from, network)
        )],
    );
    let matched: Vec<String> = arr(r, "matched")
        .iter()
        .map(|m| {
            let why = s(m, "matched_as");
            match m.get("container").and_then(Value::as_str) {
                Some(c) => format!("{c} on {} ({why})", s(m, "network")),
                None => format!("network {} ({why})", s(m, "network")),
            }
        })
        .collect();
    if matched.is_empty() {
        field(
            &mut out,
            "Matched",
            &["nothing in the local table".to_string()],
        );
    } else {
        field(&mut out, "Matched", &matched);
    }
    let src = source(r);
    field(&mut out, "Source", std::slice::from_ref(&src));
    let upstreams: Vec<String> = arr(r, "upstreams")
        .iter()
        .map(|u| {
            let server = match u.get("server") {
                Some(Value::String(x)) => x.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            let proto = if u.get("tcp").and_then(Value::as_bool).unwrap_or(false) {
                "tcp"
            } else {
                "udp"
            };
            format!("{server} over {proto}: {}", s(u, "outcome"))
        })
        .collect();
    // Whose forwarding rules applied matters only when the name went upstream.
    let listener = s(r, "listener");
    if src != "local" && !listener.is_empty() {
        field(
            &mut out,
            "Listener",
            &[format!("{listener} (its forwarding rules applied)")],
        );
    }
    field(&mut out, "Upstream", &upstreams);
    let answers: Vec<String> = arr(r, "answers")
        .iter()
        .map(|a| {
            let ttl = a.get("ttl").and_then(Value::as_u64).unwrap_or(0);
            format!("{} {ttl} {} {}", s(a, "name"), s(a, "rtype"), s(a, "data"))
        })
        .collect();
    if answers.is_empty() {
        field(&mut out, "Answer", &["none".to_string()]);
    } else {
        field(&mut out, "Answer", &answers);
    }
    let us = r.get("elapsed_us").and_then(Value::as_u64).unwrap_or(0);
    field(
        &mut out,
        "Rcode",
        &[format!("{} in {}", s(r, "rcode"), millis(us))],
    );
    out
}

pub async fn dns_trace(ctx: &Ctx, a: DnsTraceArgs) -> Result<i32> {
    let path = trace_path(&a)?;
    let tmpl = match a.format.as_deref() {
        None | Some("") | Some("json") => None,
        Some(f) => Some(
            Template::parse(&f.replace("\\t", "\t").replace("\\n", "\n"))
                .map_err(|e| CliError::other(e.to_string()))?,
        ),
    };
    let raw = ctx.client.get_bytes(&path).await?;
    if a.format.as_deref() == Some("json") {
        ctx.out_bytes(&raw);
        if !raw.ends_with(b"\n") {
            ctx.out("\n");
        }
        return Ok(0);
    }
    let v: Value = serde_json::from_slice(&raw)?;
    match tmpl {
        Some(t) => {
            let text = t.render(&v).map_err(|e| CliError::other(e.to_string()))?;
            ctx.outln(&text);
        }
        None => ctx.out(&render_trace(&v, a.from.as_deref(), a.network.as_deref())),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Cmd, NetworkCmd};
    use clap::Parser;
    use serde_json::json;

    fn args(a: &[&str]) -> DnsTraceArgs {
        let mut v = vec!["shibafu", "network", "dns-trace"];
        v.extend_from_slice(a);
        match Cli::try_parse_from(v).unwrap().cmd.unwrap() {
            Cmd::Network {
                cmd: NetworkCmd::DnsTrace(a),
            } => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn path_and_query() {
        assert_eq!(
            trace_path(&args(&["--query", "web"])).unwrap(),
            "/shibafu/dns/trace?name=web&type=A"
        );
        assert_eq!(
            trace_path(&args(&[
                "--query",
                "_80._tcp.web.front.local",
                "--type",
                "srv",
                "--from",
                "c 1",
                "--network",
                "front"
            ]))
            .unwrap(),
            "/shibafu/dns/trace?name=_80._tcp.web.front.local&type=SRV&from=c%201&network=front"
        );
        assert!(matches!(
            trace_path(&args(&["--query", " "])),
            Err(CliError::Usage(_))
        ));
        assert!(Cli::try_parse_from(["shibafu", "network", "dns-trace"]).is_err());
    }

    #[test]
    fn local_answer_from_a_container() {
        let r = json!({
            "query": "web.front.local", "qtype": "A", "from": {"address": "10.1.0.3"},
            "view": ["front"], "listener": "front",
            "matched": [{"network": "front", "container": "web", "matched_as": "container name"}],
            "source": "local", "upstreams": [], "rcode": "NOERROR",
            "answers": [{"name": "web.front.local.", "rtype": "A", "ttl": 5, "data": "10.1.0.2"}],
            "elapsed_us": 40
        });
        assert_eq!(
            render_trace(&r, Some("c1"), None),
            "Query:     web.front.local A (from container c1 at 10.1.0.3, networks: front)\n\
             Matched:   web on front (container name)\n\
             Source:    local\n\
             Answer:    web.front.local. 5 A 10.1.0.2\n\
             Rcode:     NOERROR in 0.04 ms\n"
        );
    }

    #[test]
    fn service_with_several_matches_and_answers() {
        let r = json!({
            "query": "api", "qtype": "A", "from": {"address": "10.1.0.9"},
            "view": ["front", "back"], "listener": "front",
            "matched": [
                {"network": "back", "container": "a1", "matched_as": "service"},
                {"network": "back", "container": "a2", "matched_as": "service"},
                {"network": "back", "container": null, "matched_as": "configured CNAME"}
            ],
            "source": "local", "upstreams": [], "rcode": "NOERROR",
            "answers": [
                {"name": "api.", "rtype": "A", "ttl": 5, "data": "10.2.0.2"},
                {"name": "api.", "rtype": "A", "ttl": 5, "data": "10.2.0.3"}
            ],
            "elapsed_us": 1234
        });
        assert_eq!(
            render_trace(&r, None, None),
            "Query:     api A (from 10.1.0.9, networks: front, back)\n\
             Matched:   a1 on back (service)\n\
             \x20          a2 on back (service)\n\
             \x20          network back (configured CNAME)\n\
             Source:    local\n\
             Answer:    api. 5 A 10.2.0.2\n\
             \x20          api. 5 A 10.2.0.3\n\
             Rcode:     NOERROR in 1.23 ms\n"
        );
    }

    #[test]
    fn forwarded_with_a_dead_upstream() {
        let r = json!({
            "query": "example.com", "qtype": "AAAA", "from": {"network": "0123abcd"},
            "view": [], "listener": "front", "matched": [],
            "source": {"upstream": "127.0.0.153:53"},
            "upstreams": [
                {"server": "127.0.0.9:53", "tcp": false, "outcome": "timeout"},
                {"server": "127.0.0.153:53", "tcp": false, "outcome": "truncated"},
                {"server": "127.0.0.153:53", "tcp": true, "outcome": "NOERROR"}
            ],
            "rcode": "NOERROR",
            "answers": [{"name": "example.com.", "rtype": "AAAA", "ttl": 300, "data": "2001:db8::1"}],
            "elapsed_us": 2_501_000u64
        });
        assert_eq!(
            render_trace(&r, None, Some("front")),
            "Query:     example.com AAAA (as an unknown client at the gateway of front, networks: none)\n\
             Matched:   nothing in the local table\n\
             Source:    upstream 127.0.0.153:53\n\
             Listener:  front (its forwarding rules applied)\n\
             Upstream:  127.0.0.9:53 over udp: timeout\n\
             \x20          127.0.0.153:53 over udp: truncated\n\
             \x20          127.0.0.153:53 over tcp: NOERROR\n\
             Answer:    example.com. 300 AAAA 2001:db8::1\n\
             Rcode:     NOERROR in 2501.00 ms\n"
        );
    }

    #[test]
    fn sources_in_words() {
        let with = |src: Value| source(&json!({ "source": src }));
        assert_eq!(with(json!("cache")), "cache");
        assert!(with(json!("no_upstream")).contains("no upstream"));
        assert!(with(json!("refused")).starts_with("refused"));
        assert_eq!(with(json!({"failed": "SERVFAIL"})), "failed: SERVFAIL");
        assert_eq!(with(json!("something_new")), "something_new");
        // unknown requester shapes don't break the report
        let r = json!({"query": "x", "qtype": "A", "rcode": "NXDOMAIN", "source": "local"});
        assert_eq!(
            render_trace(&r, None, None),
            "Query:     x A (from an unknown client, networks: none)\n\
             Matched:   nothing in the local table\n\
             Source:    local\n\
             Answer:    none\n\
             Rcode:     NXDOMAIN in 0.00 ms\n"
        );
    }
}
