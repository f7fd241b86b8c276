//! Docker's image filters: `dangling`, `reference` (glob), `label`,
//! `before`/`since`, `until`.

use shibafu_api::Filters;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("invalid filter '{0}'")]
    UnknownKey(String),
    #[error("invalid filter '{key}={value}': {why}")]
    BadValue {
        key: String,
        value: String,
        why: String,
    },
}

fn bad(key: &str, value: &str, why: impl Into<String>) -> FilterError {
    FilterError::BadValue {
        key: key.to_string(),
        value: value.to_string(),
        why: why.into(),
    }
}

/// Refuses keys not in `allowed`.
pub fn check_keys(filters: &Filters, allowed: &[&str]) -> Result<(), FilterError> {
    for k in filters.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(FilterError::UnknownKey(k.clone()));
        }
    }
    Ok(())
}

/// `dangling=true|false` (`1`/`0` too); `None` when not given.
pub fn dangling(filters: &Filters) -> Result<Option<bool>, FilterError> {
    let Some(vals) = filters.get("dangling") else {
        return Ok(None);
    };
    let mut out = None;
    for v in vals {
        let b = match v.to_ascii_lowercase().as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(bad("dangling", v, "expected true or false")),
        };
        if out.is_some_and(|o| o != b) {
            return Err(bad("dangling", v, "conflicting values"));
        }
        out = Some(b);
    }
    Ok(out)
}

/// Every `label` filter (`k` or `k=v`) must match; every `label!` must not.
pub fn labels_match(filters: &Filters, labels: &std::collections::HashMap<String, String>) -> bool {
    let matches = |f: &str| match f.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(f),
    };
    filters
        .get("label")
        .is_none_or(|fs| fs.iter().all(|f| matches(f)))
        && filters
            .get("label!")
            .is_none_or(|fs| fs.iter().all(|f| !matches(f)))
}

/// Docker's `reference` filter: the glob matches a tag (`busybox:latest`)
/// or its repository (`busybox`); several filters are alternatives.
pub fn reference_match(patterns: &[String], repo_tags: &[String]) -> bool {
    patterns.iter().any(|p| {
        repo_tags.iter().any(|t| {
            let repo = t
                .rsplit_once(':')
                .filter(|(_, tag)| !tag.contains('/'))
                .map_or(t.as_str(), |(r, _)| r);
            glob_match(p, t) || glob_match(p, repo)
        })
    })
}

/// Go's `path.Match`: `*` and `?` never match `/`; `[...]` classes with
/// ranges and `^`/`!` negation; `\` escapes.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn inner(p: &[char], n: &[char]) -> bool {
        if p.is_empty() {
            return n.is_empty();
        }
        match p[0] {
            '*' => {
                for i in 0..=n.len() {
                    if inner(&p[1..], &n[i..]) {
                        return true;
                    }
                    if i < n.len() && n[i] == '/' {
                        break;
                    }
                }
                false
            }
            '?' => !n.is_empty() && n[0] != '/' && inner(&p[1..], &n[1..]),
            '[' => {
                if n.is_empty() || n[0] == '/' {
                    return false;
                }
                let c = n[0];
                let mut i = 1;
                let negate = i < p.len() && (p[i] == '^' || p[i] == '!');
                if negate {
                    i += 1;
                }
                let mut matched = false;
                let mut first = true;
                while i < p.len() && (p[i] != ']' || first) {
                    first = false;
                    let mut lo = p[i];
                    if lo == '\\' && i + 1 < p.len() {
                        i += 1;
                        lo = p[i];
                    }
                    let mut hi = lo;
                    if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
                        hi = p[i + 2];
                        i += 2;
                    }
                    if lo <= c && c <= hi {
                        matched = true;
                    }
                    i += 1;
                }
                if i >= p.len() {
                    return false; // unterminated class: no match
                }
                matched != negate && inner(&p[i + 1..], &n[1..])
            }
            '\\' if p.len() > 1 => !n.is_empty() && n[0] == p[1] && inner(&p[2..], &n[1..]),
            c => !n.is_empty() && n[0] == c && inner(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    inner(&p, &n)
}

/// `until`/`since` values: unix seconds (fractional allowed), RFC 3339, a
/// date, or a Go duration (`10m`, `1h30m`) meaning that long before `now`.
pub fn parse_time(key: &str, value: &str, now: i64) -> Result<i64, FilterError> {
    if let Ok(f) = value.parse::<f64>() {
        return Ok(f.floor() as i64);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(t.timestamp());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp());
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S") {
        return Ok(t.and_utc().timestamp());
    }
    parse_duration(value)
        .map(|secs| now - secs)
        .ok_or_else(|| bad(key, value, "not a timestamp or duration"))
}

/// Go duration syntax, whole seconds (`1h30m`, `90s`, `2.5h`).
fn parse_duration(s: &str) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(total as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn globs_follow_go_path_match() {
        assert!(glob_match("busy*", "busybox"));
        assert!(glob_match("busybox:*", "busybox:latest"));
        assert!(!glob_match("*", "a/b"));
        assert!(glob_match("*/*", "a/b"));
        assert!(glob_match("b?sy[a-c]ox", "busybox"));
        assert!(!glob_match("b[!u]sybox", "busybox"));
        assert!(glob_match(r"a\*", "a*"));
        assert!(!glob_match("busy", "busybox"));
    }

    #[test]
    fn reference_filter_matches_tag_or_repo() {
        let tags = vec![
            "busybox:latest".to_string(),
            "localhost:5000/x/y:1".to_string(),
        ];
        assert!(reference_match(&["busybox".into()], &tags));
        assert!(reference_match(&["busybox:lat*".into()], &tags));
        assert!(reference_match(&["localhost:5000/x/*".into()], &tags));
        assert!(!reference_match(&["alpine".into()], &tags));
        assert!(!reference_match(&["busybox".into()], &[]));
    }

    #[test]
    fn labels_and_dangling() {
        let labels: HashMap<String, String> = [("a".to_string(), "1".to_string())].into();
        let f = |k: &str, v: &str| -> Filters { [(k.to_string(), vec![v.to_string()])].into() };
        assert!(labels_match(&f("label", "a"), &labels));
        assert!(labels_match(&f("label", "a=1"), &labels));
        assert!(!labels_match(&f("label", "a=2"), &labels));
        assert!(!labels_match(&f("label!", "a"), &labels));
        assert_eq!(dangling(&f("dangling", "true")).unwrap(), Some(true));
        assert_eq!(dangling(&f("dangling", "0")).unwrap(), Some(false));
        assert!(dangling(&f("dangling", "maybe")).is_err());
        assert_eq!(
            check_keys(&f("colour", "x"), &["label"])
                .unwrap_err()
                .to_string(),
            "invalid filter 'colour'"
        );
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("until", "1700000000", 0).unwrap(), 1_700_000_000);
        assert_eq!(
            parse_time("until", "2023-11-14T22:13:20Z", 0).unwrap(),
            1_700_000_000
        );
        assert_eq!(parse_time("until", "1h30m", 10_000).unwrap(), 10_000 - 5400);
        assert!(parse_time("until", "soon", 0).is_err());
    }
}
