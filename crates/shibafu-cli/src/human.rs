//! Docker's human-readable renderings (go-units `HumanDuration`, `HumanSize`,
//! `BytesSize`), Go's `strconv.Quote` and duration syntax, and docker's timestamp
//! arguments (`--since 10m`, RFC 3339, unix seconds).

use std::time::Duration;

/// go-units `HumanDuration`: "Less than a second", "About a minute", "3 hours", ...
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 1 {
        return "Less than a second".into();
    } else if seconds == 1 {
        return "1 second".into();
    } else if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = seconds / 60;
    if minutes == 1 {
        return "About a minute".into();
    } else if minutes < 60 {
        return format!("{minutes} minutes");
    }
    // Go rounds to the nearest hour here.
    let hours = (d.as_secs_f64() / 3600.0).round() as u64;
    if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", seconds / 3600 / 24 / 365)
    }
}

/// "2 minutes ago" for a unix timestamp, relative to now.
pub fn ago(unix: i64) -> String {
    let now = chrono::Utc::now().timestamp_millis();
    let diff = (now - unix * 1000).max(0) as u64;
    format!("{} ago", human_duration(Duration::from_millis(diff)))
}

/// Go's `%.Ng`: N significant digits, trailing zeros removed.
fn fmt_g(v: f64, digits: usize) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let exp = v.abs().log10().floor() as i32;
    let decimals = (digits as i32 - 1 - exp).max(0) as usize;
    let mut s = format!("{v:.decimals$}");
    // Rounding may have added a digit (999.5 -> "1000"); Go would switch to
    // exponent form, which never happens for sizes below the next unit.
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    s
}

fn custom_size(size: f64, base: f64, units: &[&str], digits: usize) -> String {
    let mut size = size;
    let mut i = 0;
    while size >= base && i < units.len() - 1 {
        size /= base;
        i += 1;
    }
    format!("{}{}", fmt_g(size, digits), units[i])
}

const DECIMAL: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
const BINARY: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];

/// go-units `HumanSizeWithPrecision(size, 3)`: "4.26MB" (what `images`, `ps -s` show).
pub fn human_size(size: f64) -> String {
    custom_size(size, 1000.0, &DECIMAL, 3)
}

/// go-units `HumanSizeWithPrecision(size, digits)`; `HumanSize` is 4 digits.
pub fn human_size_prec(size: f64, digits: usize) -> String {
    custom_size(size, 1000.0, &DECIMAL, digits)
}

/// go-units `BytesSize`: "1.5MiB" (what `stats` shows for memory).
pub fn bytes_size(size: f64) -> String {
    custom_size(size, 1024.0, &BINARY, 4)
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// docker's `formatter.Ellipsis`: cut to `max` characters, the last being "…".
pub fn ellipsis(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    if max == 1 {
        return s.chars().next().map(String::from).unwrap_or_default();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// docker's `TruncateID`: strip an algorithm prefix, keep 12 characters.
pub fn short_id(id: &str) -> String {
    let id = id.split_once(':').map(|(_, r)| r).unwrap_or(id);
    id.chars().take(12).collect()
}

/// Parses a Go duration ("1h30m", "10s", "1.5m", "300ms"); plain "0" allowed.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let orig = s;
    let err = || format!("time: invalid duration {}", go_quote(orig));
    let mut s = s.trim();
    if s.starts_with('-') {
        return Err(format!("{} is negative", go_quote(orig)));
    }
    s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err());
    }
    let mut total = 0f64;
    while !s.is_empty() {
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        if num_end == 0 {
            return Err(err());
        }
        let num: f64 = s[..num_end].parse().map_err(|_| err())?;
        s = &s[num_end..];
        let unit_end = s
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(s.len());
        let unit = &s[..unit_end];
        s = &s[unit_end..];
        let mult = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("time: missing unit in duration {}", go_quote(orig))),
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    go_quote(unit),
                    go_quote(orig)
                ))
            }
        };
        total += num * mult;
    }
    Ok(Duration::from_secs_f64(total))
}

/// docker's `GetTimestamp`: turns `--since`/`--until` values into the daemon's
/// "seconds.nanoseconds" form. Accepts Go durations relative to now ("10m"),
/// RFC 3339 dates and date-times (with or without zone), and unix timestamps.
pub fn parse_timestamp(value: &str, now: chrono::DateTime<chrono::Utc>) -> Result<String, String> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone};
    if let Ok(d) = parse_go_duration(value) {
        let t = now - chrono::Duration::from_std(d).map_err(|e| e.to_string())?;
        return Ok(format!(
            "{}.{:09}",
            t.timestamp(),
            t.timestamp_subsec_nanos()
        ));
    }
    // Unix seconds, possibly with a fraction: passed through as docker does.
    if !value.is_empty()
        && value.chars().all(|c| c.is_ascii_digit() || c == '.')
        && value.matches('.').count() <= 1
    {
        return Ok(value.to_string());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(format!(
            "{}.{:09}",
            t.timestamp(),
            t.timestamp_subsec_nanos()
        ));
    }
    let local = |n: NaiveDateTime| chrono::Local.from_local_datetime(&n).single();
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(value, f) {
            if let Some(t) = local(n) {
                return Ok(format!(
                    "{}.{:09}",
                    t.timestamp(),
                    t.timestamp_subsec_nanos()
                ));
            }
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0).and_then(local) {
            return Ok(format!("{}.{:09}", t.timestamp(), 0));
        }
    }
    Err(format!(
        "failed to parse value as time or duration: {}",
        go_quote(value)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_go_units() {
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(Duration::from_secs(1)), "1 second");
        assert_eq!(human_duration(Duration::from_secs(45)), "45 seconds");
        assert_eq!(human_duration(Duration::from_secs(90)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(150)), "2 minutes");
        assert_eq!(human_duration(Duration::from_secs(3600)), "About an hour");
        assert_eq!(human_duration(Duration::from_secs(5 * 3600)), "5 hours");
        assert_eq!(human_duration(Duration::from_secs(3 * 86400)), "3 days");
        assert_eq!(human_duration(Duration::from_secs(20 * 86400)), "2 weeks");
        assert_eq!(human_duration(Duration::from_secs(100 * 86400)), "3 months");
        assert_eq!(human_duration(Duration::from_secs(800 * 86400)), "2 years");
    }

    #[test]
    fn sizes_like_go_units() {
        assert_eq!(human_size(0.0), "0B");
        assert_eq!(human_size(999.0), "999B");
        assert_eq!(human_size(1000.0), "1kB");
        assert_eq!(human_size(4_261_000.0), "4.26MB");
        assert_eq!(human_size(1_234_567_890.0), "1.23GB");
        assert_eq!(human_size(12_500.0), "12.5kB");
        assert_eq!(bytes_size(1024.0 * 1024.0 * 1.5), "1.5MiB");
        assert_eq!(bytes_size(7_962_624_000.0), "7.416GiB");
        assert_eq!(bytes_size(512.0), "512B");
    }

    #[test]
    fn quote_and_ellipsis() {
        assert_eq!(go_quote("sh -c \"x\"\n"), "\"sh -c \\\"x\\\"\\n\"");
        assert_eq!(
            ellipsis("/docker-entrypoint.sh nginx", 20),
            "/docker-entrypoint.…"
        );
        assert_eq!(ellipsis("short", 20), "short");
        assert_eq!(short_id("sha256:0123456789abcdef0123"), "0123456789ab");
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_go_duration("1.5h").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_go_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_go_duration("10")
            .unwrap_err()
            .contains("missing unit"));
        assert!(parse_go_duration("5x")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_go_duration("-5s").unwrap_err().contains("negative"));
        assert!(parse_go_duration("abc").is_err());
    }

    #[test]
    fn timestamps() {
        let now = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:10:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_timestamp("10m", now).unwrap(), "1704067200.000000000");
        assert_eq!(
            parse_timestamp("2024-01-01T00:00:00Z", now).unwrap(),
            "1704067200.000000000"
        );
        assert_eq!(
            parse_timestamp("2024-01-01T00:00:00.5+01:00", now).unwrap(),
            "1704063600.500000000"
        );
        assert_eq!(parse_timestamp("1704067200", now).unwrap(), "1704067200");
        assert_eq!(
            parse_timestamp("1704067200.25", now).unwrap(),
            "1704067200.25"
        );
        assert!(parse_timestamp("yesterday", now).is_err());
    }
}
