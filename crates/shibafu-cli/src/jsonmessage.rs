//! Docker's JSON message streams (pull, push, load) drawn as the docker CLI
//! draws them (`jsonmessage.DisplayJSONMessagesStream`): on a terminal one
//! line per layer, redrawn in place with cursor-up/down as its progress
//! moves; otherwise plain lines, one per status change, with no bars.

use serde_json::Value;

use crate::error::{CliError, Result};
use crate::human::human_size_prec;

/// Where a stream is drawn and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Display {
    /// Draw bars and redraw lines in place.
    pub terminal: bool,
    /// Terminal width: bars are drawn only on terminals wider than 110
    /// columns, as docker does (the numbers alone otherwise).
    pub width: u16,
}

/// A `progressDetail` (Go's `JSONProgress`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub current: i64,
    pub total: i64,
}

impl Progress {
    fn from_json(v: &Value) -> Option<Progress> {
        let o = v.as_object()?;
        Some(Progress {
            current: o.get("current").and_then(Value::as_i64).unwrap_or(0),
            total: o.get("total").and_then(Value::as_i64).unwrap_or(0),
        })
    }

    /// `[=====>     ]  1.2MB/3.4MB` as `JSONProgress.String` renders it.
    pub fn render(&self, width: u16) -> String {
        if self.current <= 0 && self.total <= 0 {
            return String::new();
        }
        let current = human_size_prec(self.current as f64, 4);
        if self.total <= 0 {
            return format!("{current:>8}");
        }
        let pct = (((self.current as f64 / self.total as f64) * 100.0) as i64 / 2).clamp(0, 50);
        let bar = if width > 110 {
            format!(
                "[{}>{}] ",
                "=".repeat(pct as usize),
                " ".repeat((50 - pct) as usize)
            )
        } else {
            String::new()
        };
        let numbers = if self.current > self.total {
            format!("{current:>8}")
        } else {
            format!("{current:>8}/{}", human_size_prec(self.total as f64, 4))
        };
        bar + &numbers
    }
}

/// What a finished stream left behind.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The `aux` objects (push's `{Tag,Digest,Size}`), in order.
    pub aux: Vec<Value>,
}

/// Draws messages as they arrive; keeps the per-layer line positions.
pub struct Renderer {
    display: Display,
    /// Layer id → line index (first seen = 0), as docker's `ids` map.
    ids: Vec<String>,
}

impl Renderer {
    pub fn new(display: Display) -> Renderer {
        Renderer {
            display,
            ids: Vec::new(),
        }
    }

    /// Renders one message into text to write, or the stream's error.
    pub fn message(&mut self, m: &Value, outcome: &mut Outcome) -> Result<String> {
        let mut out = String::new();
        if let Some(aux) = m.get("aux").filter(|a| !a.is_null()) {
            outcome.aux.push(aux.clone());
            return Ok(out);
        }
        let term = self.display.terminal;
        let id = m.get("id").and_then(Value::as_str).unwrap_or("");
        let progress = m.get("progressDetail").and_then(Progress::from_json);
        let progress_msg = m.get("progress").and_then(Value::as_str).unwrap_or("");
        let mut diff = 0;
        if !id.is_empty() && (progress.is_some() || !progress_msg.is_empty()) {
            let line = match self.ids.iter().position(|i| i == id) {
                Some(l) => l,
                None => {
                    self.ids.push(id.to_string());
                    if term {
                        out.push('\n');
                    }
                    self.ids.len() - 1
                }
            };
            diff = self.ids.len() - line;
            if term && diff > 0 {
                out.push_str(&format!("\x1b[{diff}A"));
            }
        } else {
            // Anything else ends the block of layer lines being redrawn.
            self.ids.clear();
        }
        let shown = self.display_one(m, id, progress, progress_msg, &mut out);
        if !id.is_empty() && term && diff > 0 {
            out.push_str(&format!("\x1b[{diff}B"));
        }
        shown.map(|()| out)
    }

    /// `JSONMessage.Display`.
    fn display_one(
        &self,
        m: &Value,
        id: &str,
        progress: Option<Progress>,
        progress_msg: &str,
        out: &mut String,
    ) -> Result<()> {
        if let Some(e) = stream_error(m) {
            return Err(e);
        }
        let term = self.display.terminal;
        let stream = m.get("stream").and_then(Value::as_str).unwrap_or("");
        let status = m.get("status").and_then(Value::as_str).unwrap_or("");
        let rendered = progress.map(|p| p.render(self.display.width));
        let mut endl = "";
        if term && stream.is_empty() && progress.is_some() {
            out.push_str("\x1b[2K\r");
            endl = "\r";
        } else if rendered.as_deref().is_some_and(|r| !r.is_empty()) {
            // No bars off a terminal.
            return Ok(());
        }
        if !id.is_empty() {
            out.push_str(id);
            out.push_str(": ");
        }
        if let (Some(r), true) = (&rendered, term) {
            out.push_str(&format!("{status} {r}{endl}"));
        } else if !progress_msg.is_empty() {
            out.push_str(&format!("{status} {progress_msg}{endl}"));
        } else if !stream.is_empty() {
            out.push_str(&format!("{stream}{endl}"));
        } else {
            out.push_str(&format!("{status}{endl}\n"));
        }
        Ok(())
    }
}

/// The error a message carries (`errorDetail`, or the old `error`), as the
/// docker CLI reports it: 401 becomes "authentication is required".
pub fn stream_error(m: &Value) -> Option<CliError> {
    let detail = m.get("errorDetail").filter(|d| !d.is_null());
    let msg = detail
        .and_then(|d| d.get("message"))
        .and_then(Value::as_str)
        .or_else(|| m.get("error").and_then(Value::as_str))?;
    if detail.and_then(|d| d.get("code")).and_then(Value::as_i64) == Some(401) {
        return Some(CliError::other("authentication is required"));
    }
    Some(CliError::other(msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(display: Display, msgs: &[Value]) -> (String, Option<String>, Outcome) {
        let mut r = Renderer::new(display);
        let mut o = Outcome::default();
        let mut text = String::new();
        for m in msgs {
            match r.message(m, &mut o) {
                Ok(t) => text.push_str(&t),
                Err(e) => return (text, Some(e.to_string()), o),
            }
        }
        (text, None, o)
    }

    fn pull_msgs() -> Vec<Value> {
        vec![
            json!({"status":"Pulling from library/alpine","id":"latest"}),
            json!({"status":"Pulling fs layer","progressDetail":{},"id":"aaaaaaaaaaaa"}),
            json!({"status":"Pulling fs layer","progressDetail":{},"id":"bbbbbbbbbbbb"}),
            json!({"status":"Downloading","progressDetail":{"current":1200000,"total":3400000},"progress":"[x]","id":"aaaaaaaaaaaa"}),
            json!({"status":"Download complete","progressDetail":{},"id":"aaaaaaaaaaaa"}),
            json!({"status":"Pull complete","progressDetail":{},"id":"bbbbbbbbbbbb"}),
            json!({"status":"Digest: sha256:abc"}),
            json!({"status":"Status: Downloaded newer image for alpine:latest"}),
        ]
    }

    #[test]
    fn plain_output_has_one_line_per_status_and_no_bars() {
        let (text, err, _) = run(
            Display {
                terminal: false,
                width: 200,
            },
            &pull_msgs(),
        );
        assert!(err.is_none());
        assert_eq!(
            text,
            "latest: Pulling from library/alpine\n\
             aaaaaaaaaaaa: Pulling fs layer\n\
             bbbbbbbbbbbb: Pulling fs layer\n\
             aaaaaaaaaaaa: Download complete\n\
             bbbbbbbbbbbb: Pull complete\n\
             Digest: sha256:abc\n\
             Status: Downloaded newer image for alpine:latest\n"
        );
    }

    #[test]
    fn terminal_output_redraws_layer_lines_in_place() {
        let (text, _, _) = run(
            Display {
                terminal: true,
                width: 120,
            },
            &pull_msgs()[..4],
        );
        let bar = format!("[{}>{}]    1.2MB/3.4MB", "=".repeat(17), " ".repeat(33));
        assert_eq!(
            text,
            format!(
                "latest: Pulling from library/alpine\n\
                 \n\x1b[1A\x1b[2K\raaaaaaaaaaaa: Pulling fs layer \r\x1b[1B\
                 \n\x1b[1A\x1b[2K\rbbbbbbbbbbbb: Pulling fs layer \r\x1b[1B\
                 \x1b[2A\x1b[2K\raaaaaaaaaaaa: Downloading {bar}\r\x1b[2B"
            )
        );
        // Narrow terminal: the numbers only.
        assert_eq!(
            Progress {
                current: 1_200_000,
                total: 3_400_000
            }
            .render(80),
            "   1.2MB/3.4MB"
        );
    }

    #[test]
    fn errors_aux_and_stream_lines() {
        let (text, err, o) = run(
            Display {
                terminal: false,
                width: 200,
            },
            &[
                json!({"stream":"Loaded image: a:1\n"}),
                json!({"progressDetail":{},"aux":{"Tag":"1","Digest":"sha256:d","Size":5}}),
                json!({"errorDetail":{"message":"boom"},"error":"boom"}),
                json!({"status":"never shown"}),
            ],
        );
        assert_eq!(text, "Loaded image: a:1\n");
        assert_eq!(err.as_deref(), Some("boom"));
        assert_eq!(o.aux[0]["Tag"], "1");
        let e = stream_error(&json!({"errorDetail":{"code":401,"message":"x"}})).unwrap();
        assert_eq!(e.to_string(), "authentication is required");
    }
}
