//! Docker's JSON progress messages for pull, push and load: the status
//! words, 12-hex layer ids, `progressDetail` and the rendered bar
//! (`[=====>     ]  1.2MB/3.4MB`) that old clients print as is. Progress
//! updates are throttled per layer so a fast local pull does not send
//! thousands of lines.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use shibafu_api::{JsonMessage, JsonProgress};
use tokio::sync::mpsc;

/// At most one progress line per layer per this interval.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Go's `units.HumanSize`: 4 significant digits, decimal units.
pub(crate) fn human_size(n: f64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut size = n;
    let mut i = 0;
    while size >= 1000.0 && i < UNITS.len() - 1 {
        size /= 1000.0;
        i += 1;
    }
    format!("{}{}", go_g4(size), UNITS[i])
}

/// `%.4g` as Go prints it for values in [0, 1000): at most 4 significant
/// digits, trailing zeros dropped.
fn go_g4(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let digits_before = if v >= 1.0 {
        (v.log10().floor() as i32) + 1
    } else {
        0
    };
    let decimals = (4 - digits_before).max(0) as usize;
    let s = format!("{v:.decimals$}");
    // Rounding can reach 1000 (999.95 → "1000"): Go prints "1000" too.
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The `progress` string of a JSON progress line, as dockerd renders it
/// for a 200-column width.
pub(crate) fn bar(current: u64, total: u64) -> String {
    if total == 0 {
        return format!("{:>8}", human_size(current as f64));
    }
    let pct = ((current as f64 / total as f64 * 100.0) as i64 / 2).clamp(0, 50) as usize;
    let spaces = 50 - pct;
    format!(
        "[{}>{}] {:>8}/{}",
        "=".repeat(pct),
        " ".repeat(spaces),
        human_size(current as f64),
        human_size(total as f64)
    )
}

/// The 12-hex id Docker shows for a layer digest (`sha256:` dropped).
pub(crate) fn short_id(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.chars().take(12).collect()
}

/// A cloneable sender of progress lines. Sending never blocks; once the
/// client is gone lines are dropped (the work goes on: a pull whose
/// client hung up still completes, as in dockerd).
#[derive(Clone)]
pub(crate) struct Reporter {
    tx: mpsc::UnboundedSender<JsonMessage>,
}

impl Reporter {
    pub(crate) fn new() -> (Reporter, mpsc::UnboundedReceiver<JsonMessage>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Reporter { tx }, rx)
    }

    pub(crate) fn send(&self, m: JsonMessage) {
        let _ = self.tx.send(m);
    }

    pub(crate) fn status(&self, s: impl Into<String>) {
        self.send(JsonMessage::status(s));
    }

    /// `{"status": s, "progressDetail": {}, "id": id}`.
    pub(crate) fn layer(&self, id: &str, s: &str) {
        self.send(JsonMessage::layer(id, s));
    }

    /// `{"status": s, "id": id}` without progressDetail (e.g. "Pulling from
    /// library/busybox" with the tag as id).
    pub(crate) fn with_id(&self, id: &str, s: &str) {
        self.send(JsonMessage {
            status: Some(s.to_string()),
            id: Some(id.to_string()),
            ..Default::default()
        });
    }

    pub(crate) fn progress(&self, id: &str, s: &str, current: u64, total: u64) {
        self.send(JsonMessage {
            status: Some(s.to_string()),
            id: Some(id.to_string()),
            progress_detail: Some(JsonProgress {
                current: Some(current as i64),
                total: (total > 0).then_some(total as i64),
            }),
            progress: Some(bar(current, total)),
            ..Default::default()
        });
    }

    pub(crate) fn error(&self, message: impl Into<String>) {
        self.send(JsonMessage::error(message));
    }

    /// A throttled progress reporter for one layer.
    pub(crate) fn throttled(&self, id: &str, status: &'static str, total: u64) -> Throttled {
        Throttled {
            reporter: self.clone(),
            id: id.to_string(),
            status,
            total,
            last: Mutex::new(None),
        }
    }
}

/// Sends a layer's progress at most every [`MIN_INTERVAL`] (and always the
/// final count).
pub(crate) struct Throttled {
    reporter: Reporter,
    id: String,
    status: &'static str,
    total: u64,
    last: Mutex<Option<Instant>>,
}

impl Throttled {
    pub(crate) fn update(&self, current: u64) {
        let now = Instant::now();
        let mut last = self.last.lock();
        let due = last.is_none_or(|t| now.duration_since(t) >= MIN_INTERVAL);
        if due || (self.total > 0 && current >= self.total) {
            *last = Some(now);
            drop(last);
            self.reporter
                .progress(&self.id, self.status, current, self.total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_go_prints_them() {
        assert_eq!(human_size(0.0), "0B");
        assert_eq!(human_size(999.0), "999B");
        assert_eq!(human_size(1000.0), "1kB");
        assert_eq!(human_size(2_111_000.0), "2.111MB");
        assert_eq!(human_size(32_500.0), "32.5kB");
        assert_eq!(human_size(1_234_567_890.0), "1.235GB");
    }

    #[test]
    fn bar_like_dockerd() {
        assert_eq!(
            bar(50, 100),
            format!("[{}>{}]      50B/100B", "=".repeat(25), " ".repeat(25))
        );
        assert!(bar(100, 100).starts_with(&format!("[{}>]", "=".repeat(50))));
        assert_eq!(bar(1500, 0), "   1.5kB");
    }

    #[test]
    fn short_ids() {
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
    }
}
