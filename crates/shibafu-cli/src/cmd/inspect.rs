//! `inspect` (and `container/image/volume inspect`): prints the daemon's JSON as an
//! indented array, like docker, or renders `--format` per object.

use bytes::Bytes;
use serde_json::Value;

use crate::cmd::seg;
use crate::error::{CliError, Result};
use crate::template::Template;
use crate::Ctx;

/// JSON kept as written (key order, scalar text) so it can be re-indented faithfully.
#[derive(Debug)]
enum J {
    Obj(Vec<(String, J)>),
    Arr(Vec<J>),
    /// A string, number, bool or null exactly as the daemon wrote it.
    Raw(String),
}

fn skip_ws(b: &[u8], i: &mut usize) {
    while *i < b.len() && b[*i].is_ascii_whitespace() {
        *i += 1;
    }
}

fn parse_str(b: &[u8], i: &mut usize) -> Option<String> {
    let start = *i;
    *i += 1;
    while *i < b.len() {
        match b[*i] {
            b'\\' => *i += 2,
            b'"' => {
                *i += 1;
                return Some(String::from_utf8_lossy(&b[start..*i]).into_owned());
            }
            _ => *i += 1,
        }
    }
    None
}

fn parse_j(b: &[u8], i: &mut usize) -> Option<J> {
    skip_ws(b, i);
    match *b.get(*i)? {
        b'{' => {
            *i += 1;
            let mut items = Vec::new();
            loop {
                skip_ws(b, i);
                if *b.get(*i)? == b'}' {
                    *i += 1;
                    return Some(J::Obj(items));
                }
                let k = parse_str(b, i)?;
                skip_ws(b, i);
                if *b.get(*i)? != b':' {
                    return None;
                }
                *i += 1;
                let v = parse_j(b, i)?;
                items.push((k, v));
                skip_ws(b, i);
                if *b.get(*i)? == b',' {
                    *i += 1;
                }
            }
        }
        b'[' => {
            *i += 1;
            let mut items = Vec::new();
            loop {
                skip_ws(b, i);
                if *b.get(*i)? == b']' {
                    *i += 1;
                    return Some(J::Arr(items));
                }
                items.push(parse_j(b, i)?);
                skip_ws(b, i);
                if *b.get(*i)? == b',' {
                    *i += 1;
                }
            }
        }
        b'"' => parse_str(b, i).map(J::Raw),
        _ => {
            let start = *i;
            while *i < b.len()
                && !matches!(b[*i], b',' | b'}' | b']')
                && !b[*i].is_ascii_whitespace()
            {
                *i += 1;
            }
            Some(J::Raw(String::from_utf8_lossy(&b[start..*i]).into_owned()))
        }
    }
}

/// Fields whose values are Go maps: docker's CLI prints those with sorted keys.
const MAP_FIELDS: &[&str] = &[
    "\"Labels\"",
    "\"Data\"",
    "\"Options\"",
    "\"Ports\"",
    "\"Networks\"",
    "\"ExposedPorts\"",
    "\"Volumes\"",
    "\"Tmpfs\"",
    "\"Sysctls\"",
    "\"StorageOpt\"",
    "\"DriverOpts\"",
    "\"Annotations\"",
    "\"Attributes\"",
    "\"Status\"",
    "\"EndpointsConfig\"",
    "\"Containers\"",
    "\"AuxiliaryAddresses\"",
];

fn sort_maps(j: &mut J, key: Option<&str>, parent: Option<&str>) {
    match j {
        J::Obj(items) => {
            let is_map = key.is_some_and(|k| MAP_FIELDS.contains(&k))
                || (key == Some("\"Config\"") && parent == Some("\"LogConfig\""));
            if is_map {
                items.sort_by(|a, b| a.0.cmp(&b.0));
            }
            for (k, v) in items.iter_mut() {
                sort_maps(v, Some(k.as_str()), key);
            }
        }
        J::Arr(items) => {
            for v in items {
                sort_maps(v, None, key);
            }
        }
        J::Raw(_) => {}
    }
}

fn write_j(j: &J, depth: usize, out: &mut String) {
    let pad = |out: &mut String, d: usize| {
        out.push('\n');
        for _ in 0..d {
            out.push_str("    ");
        }
    };
    match j {
        J::Raw(r) => out.push_str(r),
        J::Obj(items) if items.is_empty() => out.push_str("{}"),
        J::Arr(items) if items.is_empty() => out.push_str("[]"),
        J::Obj(items) => {
            out.push('{');
            for (n, (k, v)) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                pad(out, depth + 1);
                out.push_str(k);
                out.push_str(": ");
                write_j(v, depth + 1, out);
            }
            pad(out, depth);
            out.push('}');
        }
        J::Arr(items) => {
            out.push('[');
            for (n, v) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                pad(out, depth + 1);
                write_j(v, depth + 1, out);
            }
            pad(out, depth);
            out.push(']');
        }
    }
}

/// Like Go's `json.Indent(dst, src, "", "    ")` on the daemon's text (key order and
/// scalars kept), except that map-valued fields get sorted keys the way docker's CLI
/// prints them; `sort_objects` sorts each array element's top-level keys too (docker
/// prints volumes from an alphabetically ordered struct).
pub fn indent_items(items: &[(bool, &[u8])]) -> String {
    let mut arr = Vec::new();
    for (sort_top, raw) in items {
        let mut i = 0;
        let Some(mut j) = parse_j(raw, &mut i) else {
            continue;
        };
        sort_maps(&mut j, None, None);
        if let (true, J::Obj(fields)) = (*sort_top, &mut j) {
            fields.sort_by(|a, b| a.0.cmp(&b.0));
        }
        arr.push(j);
    }
    let mut out = String::new();
    write_j(&J::Arr(arr), 0, &mut out);
    out
}

fn write_compact(j: &J, out: &mut String) {
    match j {
        J::Raw(r) => out.push_str(r),
        J::Obj(items) => {
            out.push('{');
            for (n, (k, v)) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(k);
                out.push(':');
                write_compact(v, out);
            }
            out.push('}');
        }
        J::Arr(items) => {
            out.push('[');
            for (n, v) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_compact(v, out);
            }
            out.push(']');
        }
    }
}

/// `inspect --format json`: the objects as one compact array, keys in the
/// daemon's order (docker's `json.Compact` of the raw replies).
pub fn compact_items(items: &[&[u8]]) -> String {
    let mut out = String::from("[");
    for (n, raw) in items.iter().enumerate() {
        let mut i = 0;
        let Some(j) = parse_j(raw, &mut i) else {
            continue;
        };
        if n > 0 {
            out.push(',');
        }
        write_compact(&j, &mut out);
    }
    out.push(']');
    out
}

/// The elements of answers that are each a JSON array, as one array (shibafu's
/// list-valued inspect routes, e.g. a service's views on every network).
fn flatten_arrays(answers: &[&[u8]]) -> Vec<J> {
    let mut out = Vec::new();
    for raw in answers {
        let mut i = 0;
        match parse_j(raw, &mut i) {
            Some(J::Arr(items)) => out.extend(items),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// [`indent_items`] for answers that are arrays: their elements, indented as
/// one array.
pub fn indent_array_items(answers: &[&[u8]]) -> String {
    let mut j = J::Arr(flatten_arrays(answers));
    sort_maps(&mut j, None, None);
    let mut out = String::new();
    write_j(&j, 0, &mut out);
    out
}

/// [`compact_items`] for answers that are arrays.
pub fn compact_array_items(answers: &[&[u8]]) -> String {
    let mut out = String::new();
    write_compact(&J::Arr(flatten_arrays(answers)), &mut out);
    out
}

/// [`indent_items`] over a whole JSON document.
pub fn indent_json(src: &[u8], sort_objects: bool) -> String {
    let mut i = 0;
    let Some(mut j) = parse_j(src, &mut i) else {
        return String::from_utf8_lossy(src).into_owned();
    };
    sort_maps(&mut j, None, None);
    if sort_objects {
        if let J::Arr(items) = &mut j {
            for it in items {
                if let J::Obj(fields) = it {
                    fields.sort_by(|a, b| a.0.cmp(&b.0));
                }
            }
        }
    }
    let mut out = String::new();
    write_j(&j, 0, &mut out);
    out
}

/// `detail` is the one extra each type has: `--size` for containers, `--verbose`
/// for networks.
fn path_for(typ: &str, name: &str, detail: bool) -> String {
    match typ {
        "container" => format!(
            "/containers/{}/json{}",
            seg(name),
            if detail { "?size=1" } else { "" }
        ),
        "image" => format!("/images/{}/json", seg(name)),
        "volume" => format!("/volumes/{}", seg(name)),
        _ => format!(
            "/networks/{}{}",
            seg(name),
            if detail { "?verbose=true" } else { "" }
        ),
    }
}

/// Finds one object, trying each type in docker's order when none is given.
async fn fetch(
    ctx: &Ctx,
    typ: Option<&str>,
    name: &str,
    size: bool,
) -> Result<(&'static str, Bytes)> {
    let types: &[&'static str] = match typ {
        Some("container") => &["container"],
        Some("image") => &["image"],
        Some("volume") => &["volume"],
        Some("network") => &["network"],
        _ => &["container", "image", "volume", "network"],
    };
    for t in types {
        match ctx.client.get_bytes(&path_for(t, name, size)).await {
            Ok(b) => return Ok((t, b)),
            Err(e) if e.is_not_found() && types.len() > 1 => continue,
            // a typed inspect prints the daemon's own message, like docker
            Err(e) => return Err(e),
        }
    }
    Err(CliError::other(format!("Error: No such object: {name}")))
}

pub async fn inspect(
    ctx: &Ctx,
    typ: Option<&str>,
    format: Option<&str>,
    size: bool,
    names: &[String],
) -> Result<i32> {
    // `--format json`: docker prints the daemon's objects as one compact array
    let compact = format == Some("json");
    let tmpl = match format {
        None | Some("") | Some("json") => None,
        Some(f) => Some(
            Template::parse(&f.replace("\\t", "\t").replace("\\n", "\n"))
                .map_err(|e| CliError::other(e.to_string()))?,
        ),
    };
    let mut raws: Vec<(bool, Bytes)> = Vec::new();
    let mut errors = Vec::new();
    let mut rendered = String::new();
    for n in names {
        match fetch(ctx, typ, n, size).await {
            Ok((t, raw)) => match &tmpl {
                Some(t) => {
                    let v: Value = serde_json::from_slice(&raw)?;
                    let text = t.render(&v).map_err(|e| CliError::other(e.to_string()))?;
                    rendered.push_str(&text);
                    rendered.push('\n');
                }
                None => raws.push((t == "volume", raw)),
            },
            Err(e @ CliError::Connect { .. }) => return Err(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if tmpl.is_some() {
        ctx.out(&rendered);
    } else if compact {
        let items: Vec<&[u8]> = raws.iter().map(|(_, r)| r.as_ref()).collect();
        ctx.outln(&compact_items(&items));
    } else {
        let items: Vec<(bool, &[u8])> = raws.iter().map(|(v, r)| (*v, r.as_ref())).collect();
        ctx.outln(&indent_items(&items));
    }
    for e in &errors {
        ctx.errln(e);
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_fields_sorted() {
        let src = br#"[{"Name":"v","Labels":{"b":"1","a":"2"},"LogConfig":{"Type":"x","Config":{"z":"1","m":"2"}},"Driver":"local"}]"#;
        let out = indent_json(src, false);
        assert!(
            out.find("\"a\"").unwrap() < out.find("\"b\"").unwrap(),
            "{out}"
        );
        assert!(
            out.find("\"m\"").unwrap() < out.find("\"z\"").unwrap(),
            "{out}"
        );
        assert!(
            out.find("\"Name\"").unwrap() < out.find("\"Driver\"").unwrap(),
            "{out}"
        );
        let sorted = indent_json(src, true);
        assert!(
            sorted.find("\"Driver\"").unwrap() < sorted.find("\"Name\"").unwrap(),
            "{sorted}"
        );
    }

    #[test]
    fn compact_like_docker() {
        let a: &[u8] = br#"{"Name": "n1", "Id": "x", "L": {"b": 1, "a": [1, "x y"]}}"#;
        let b: &[u8] = br#"{"Name":"n2"}"#;
        assert_eq!(
            compact_items(&[a, b]),
            r#"[{"Name":"n1","Id":"x","L":{"b":1,"a":[1,"x y"]}},{"Name":"n2"}]"#
        );
        assert_eq!(compact_items(&[]), "[]");
    }

    #[test]
    fn indent_like_go() {
        let src = br#"[{"Id":"a b","Args":[],"State":{"Running":true,"Pid":5},"Env":["X=1","Y={\"q\":1}"],"E":{}}]"#;
        let want = "[\n    {\n        \"Id\": \"a b\",\n        \"Args\": [],\n        \"State\": {\n            \"Running\": true,\n            \"Pid\": 5\n        },\n        \"Env\": [\n            \"X=1\",\n            \"Y={\\\"q\\\":1}\"\n        ],\n        \"E\": {}\n    }\n]";
        assert_eq!(indent_json(src, false), want);
        assert_eq!(indent_json(b"[]", false), "[]");
        assert_eq!(
            indent_json(b"[ {\"a\" : 1} ]", false),
            "[\n    {\n        \"a\": 1\n    }\n]"
        );
    }
}
