//! `service ls` and `service inspect` (shibafu's own): the names the embedded
//! DNS answers with several containers (`--service`, shared `--network-alias`),
//! from `GET /shibafu/services` (a list of shibafu-api's `ServiceView`).

use bytes::Bytes;
use serde_json::{json, Value};

use crate::cli::{ServiceInspectArgs, ServiceLsArgs};
use crate::cmd::{natural_less, s, seg};
use crate::error::{CliError, Result};
use crate::template::{render_list, Format, Template};
use crate::Ctx;

/// Instances the DNS answers with now (healthy, or without a healthcheck),
/// and all instances.
fn counts(v: &Value) -> (usize, usize) {
    let inst = v
        .get("Instances")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let up = inst
        .iter()
        .filter(|i| i.get("InAnswers").and_then(Value::as_bool).unwrap_or(false))
        .count();
    (up, inst.len())
}

/// One `service ls` row.
pub fn service_row(v: &Value) -> Value {
    let (up, total) = counts(v);
    let ports: Vec<&str> = v
        .get("Ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    json!({
        "Name": s(v, "Name"),
        "Network": s(v, "Network"),
        "NetworkID": s(v, "NetworkId"),
        "Fqdn": s(v, "Fqdn"),
        "Instances": format!("{up}/{total}"),
        "Healthy": up,
        "Total": total,
        "Ports": ports.join(","),
    })
}

fn order(a: &Value, b: &Value) -> std::cmp::Ordering {
    let key = |v: &Value| (s(v, "Name").to_string(), s(v, "Network").to_string());
    let (ka, kb) = (key(a), key(b));
    for (x, y) in [(&ka.0, &kb.0), (&ka.1, &kb.1)] {
        if natural_less(x, y) {
            return std::cmp::Ordering::Less;
        }
        if natural_less(y, x) {
            return std::cmp::Ordering::Greater;
        }
    }
    std::cmp::Ordering::Equal
}

const SERVICE_TABLE: &str = "{{.Name}}\t{{.Network}}\t{{.Instances}}\t{{.Ports}}";

/// Renders `service ls`: sorted by name then network; `-q` prints each name
/// once (a name on two networks is one service to `service inspect`).
pub fn render_services(list: &[Value], quiet: bool, format: Option<&str>) -> Result<String> {
    let mut items = list.to_vec();
    items.sort_by(order);
    if quiet {
        let mut names: Vec<&str> = Vec::new();
        for v in &items {
            if !names.contains(&s(v, "Name")) {
                names.push(s(v, "Name"));
            }
        }
        return Ok(names.iter().map(|n| format!("{n}\n")).collect());
    }
    let fmt_err = |e: crate::template::TemplateError| CliError::other(e.to_string());
    let format = Format::parse(format).map_err(fmt_err)?;
    let mut rows: Vec<Value> = items.iter().map(service_row).collect();
    if matches!(format, Format::DefaultTable) {
        for r in rows.iter_mut() {
            if s(r, "Ports").is_empty() {
                r["Ports"] = json!("-");
            }
        }
    }
    let headers = json!({
        "Name": "NAME", "Network": "NETWORK", "NetworkID": "NETWORK ID", "Fqdn": "FQDN",
        "Instances": "INSTANCES", "Healthy": "HEALTHY", "Total": "TOTAL", "Ports": "PORTS",
    });
    render_list(&format, SERVICE_TABLE, &headers, &rows).map_err(fmt_err)
}

pub async fn ls(ctx: &Ctx, a: ServiceLsArgs) -> Result<i32> {
    let list = super::network::get_list_by_network(
        ctx,
        "/shibafu/services",
        &a.network,
        a.format.as_deref(),
    )
    .await?;
    ctx.out(&render_services(&list, a.quiet, a.format.as_deref())?);
    Ok(0)
}

/// What `service inspect` prints for the daemon's answers (each a JSON array
/// of one service's views, one per network), in argument order.
pub fn render_inspect(answers: &[Bytes], tmpl: Option<&Template>, compact: bool) -> Result<String> {
    if let Some(t) = tmpl {
        let mut out = String::new();
        for raw in answers {
            let v: Value = serde_json::from_slice(raw)?;
            for item in v.as_array().into_iter().flatten() {
                out.push_str(&t.render(item).map_err(|e| CliError::other(e.to_string()))?);
                out.push('\n');
            }
        }
        return Ok(out);
    }
    let items: Vec<&[u8]> = answers.iter().map(|r| r.as_ref()).collect();
    let mut out = if compact {
        crate::cmd::inspect::compact_array_items(&items)
    } else {
        crate::cmd::inspect::indent_array_items(&items)
    };
    out.push('\n');
    Ok(out)
}

pub async fn inspect(ctx: &Ctx, a: ServiceInspectArgs) -> Result<i32> {
    let compact = a.format.as_deref() == Some("json");
    let tmpl = match a.format.as_deref() {
        None | Some("") | Some("json") => None,
        Some(f) => Some(
            Template::parse(&f.replace("\\t", "\t").replace("\\n", "\n"))
                .map_err(|e| CliError::other(e.to_string()))?,
        ),
    };
    let mut answers = Vec::new();
    let mut errors = Vec::new();
    for n in &a.names {
        match ctx
            .client
            .get_bytes(&format!("/shibafu/services/{}", seg(n)))
            .await
        {
            Ok(raw) => answers.push(raw),
            Err(e) if e.is_not_found() => errors.push(format!("Error: No such service: {n}")),
            Err(e @ CliError::Connect { .. }) => return Err(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    ctx.out(&render_inspect(&answers, tmpl.as_ref(), compact)?);
    for e in &errors {
        ctx.errln(e);
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(name: &str, health: &str, up: bool) -> Value {
        json!({"Id": format!("{name}-id"), "Name": name, "IPv4Address": "10.1.0.2", "IPv6Address": "",
               "Weight": 1, "Health": health, "InAnswers": up, "Via": "service"})
    }

    fn sample() -> Vec<Value> {
        vec![
            json!({"Name": "web", "Network": "front", "NetworkId": "f1", "Fqdn": "web.front.local",
                   "Ports": ["80/tcp", "53/udp"],
                   "Instances": [inst("w1", "healthy", true), inst("w2", "unhealthy", false), inst("w3", "none", true)]}),
            json!({"Name": "api", "Network": "net10", "NetworkId": "n10", "Fqdn": "api.net10.local",
                   "Ports": [], "Instances": [inst("a1", "starting", false)]}),
            json!({"Name": "api", "Network": "net9", "NetworkId": "n9", "Fqdn": "api.net9.local",
                   "Instances": [inst("a2", "none", true), inst("a3", "healthy", true)]}),
        ]
    }

    #[test]
    fn ls_table_counts_instances_in_answers() {
        assert_eq!(
            render_services(&sample(), false, None).unwrap(),
            "NAME      NETWORK   INSTANCES   PORTS\n\
             api       net9      2/2         -\n\
             api       net10     0/1         -\n\
             web       front     2/3         80/tcp,53/udp\n"
        );
        assert_eq!(
            render_services(&[], false, None).unwrap(),
            "NAME      NETWORK   INSTANCES   PORTS\n"
        );
    }

    #[test]
    fn ls_quiet_prints_each_name_once() {
        assert_eq!(
            render_services(&sample(), true, None).unwrap(),
            "api\nweb\n"
        );
    }

    #[test]
    fn ls_formats() {
        assert_eq!(
            render_services(&sample(), false, Some("{{.Name}}.{{.Network}} {{.Healthy}}/{{.Total}} {{.Fqdn}} {{.NetworkID}} [{{.Ports}}]"))
                .unwrap(),
            "api.net9 2/2 api.net9.local n9 []\napi.net10 0/1 api.net10.local n10 []\nweb.front 2/3 web.front.local f1 [80/tcp,53/udp]\n"
        );
        let out = render_services(&sample(), false, Some("json")).unwrap();
        let rows: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2]["Instances"], "2/3");
        assert_eq!(rows[2]["Ports"], "80/tcp,53/udp");
        let out = render_services(&sample(), false, Some("table {{.Name}}\\t{{.Fqdn}}")).unwrap();
        assert_eq!(out.lines().next().unwrap(), "NAME      FQDN");
        assert!(render_services(&sample(), false, Some("{{.Name")).is_err());
    }

    #[test]
    fn inspect_merges_answers_into_one_array() {
        // as the daemon writes them (shibafu-api's field order)
        let a = Bytes::from_static(
            br#"[{"Name":"api","Network":"net10","NetworkId":"n10","Fqdn":"api.net10.local","Ports":[],
                 "Instances":[{"Id":"a1-id","Name":"a1","Weight":1,"Health":"starting","InAnswers":false,"Via":"service"}]},
                {"Name":"api","Network":"net9","NetworkId":"n9","Fqdn":"api.net9.local","Ports":[],
                 "Instances":[{"Id":"a2-id","Name":"a2"},{"Id":"a3-id","Name":"a3"}]}]"#,
        );
        let b = Bytes::from(serde_json::to_vec(&sample()[..1]).unwrap());
        let out = render_inspect(&[a.clone(), b.clone()], None, false).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        let names: Vec<(&str, &str)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (s(x, "Name"), s(x, "Network")))
            .collect();
        assert_eq!(
            names,
            vec![("api", "net10"), ("api", "net9"), ("web", "front")]
        );
        // indented like docker inspect, the daemon's key order kept
        assert!(
            out.starts_with(
                "[\n    {\n        \"Name\": \"api\",\n        \"Network\": \"net10\","
            ),
            "{out}"
        );
        assert_eq!(render_inspect(&[], None, false).unwrap(), "[]\n");
        let out = render_inspect(std::slice::from_ref(&a), None, true).unwrap();
        assert!(out.starts_with("[{\"Name\":\"api\""), "{out}");
        assert_eq!(out.lines().count(), 1);
        let t = Template::parse("{{.Name}} {{.Network}} {{len .Instances}}").unwrap();
        assert_eq!(
            render_inspect(&[a, b], Some(&t), false).unwrap(),
            "api net10 1\napi net9 2\nweb front 3\n"
        );
    }
}
