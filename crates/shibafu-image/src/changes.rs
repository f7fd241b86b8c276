//! Dockerfile-style `--change` instructions of `import`, applied to an
//! image config the way Docker's commit/import does.

use std::collections::HashMap;

use oci_spec::image::Config;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("{0} is not a valid change command")]
    UnknownInstruction(String),
    #[error("{0} requires at least one argument")]
    MissingArgument(String),
    #[error("{instruction}: {message}")]
    Invalid {
        instruction: String,
        message: String,
    },
}

fn invalid(instruction: &str, message: impl Into<String>) -> ChangeError {
    ChangeError::Invalid {
        instruction: instruction.to_string(),
        message: message.into(),
    }
}

/// Applies `changes` in order to `config`. All are validated before the
/// caller commits anything, since the whole import fails on the first error.
pub fn apply(config: &mut Config, changes: &[String]) -> Result<(), ChangeError> {
    let mut cmd_set = false;
    for change in changes {
        let change = change.trim();
        if change.is_empty() {
            continue;
        }
        let (word, rest) = match change.split_once(|c: char| c.is_whitespace()) {
            Some((w, r)) => (w, r.trim()),
            None => (change, ""),
        };
        let instr = word.to_ascii_uppercase();
        if !matches!(
            instr.as_str(),
            "CMD"
                | "ENTRYPOINT"
                | "ENV"
                | "WORKDIR"
                | "EXPOSE"
                | "USER"
                | "LABEL"
                | "VOLUME"
                | "STOPSIGNAL"
        ) {
            return Err(ChangeError::UnknownInstruction(word.to_string()));
        }
        if rest.is_empty() && instr != "CMD" && instr != "ENTRYPOINT" {
            return Err(ChangeError::MissingArgument(instr));
        }
        match instr.as_str() {
            "CMD" => {
                config.set_cmd(Some(command_form(rest)));
                cmd_set = true;
            }
            "ENTRYPOINT" => {
                config.set_entrypoint(Some(command_form(rest)));
                // As in Docker: a new entrypoint drops a CMD that was not
                // set by these same changes.
                if !cmd_set {
                    config.set_cmd(None);
                }
            }
            "ENV" => {
                let pairs = key_values(&instr, rest)?;
                let mut env = config.env().clone().unwrap_or_default();
                for (k, v) in pairs {
                    let prefix = format!("{k}=");
                    let entry = format!("{k}={v}");
                    match env.iter_mut().find(|e| e.starts_with(&prefix) || **e == k) {
                        Some(e) => *e = entry,
                        None => env.push(entry),
                    }
                }
                config.set_env(Some(env));
            }
            "LABEL" => {
                let pairs = key_values(&instr, rest)?;
                let mut labels: HashMap<String, String> =
                    config.labels().clone().unwrap_or_default();
                labels.extend(pairs);
                config.set_labels(Some(labels));
            }
            "WORKDIR" => {
                let dir = unquote(rest);
                let dir = if dir.starts_with('/') {
                    dir
                } else {
                    let base = config.working_dir().clone().unwrap_or_else(|| "/".into());
                    format!("{}/{}", base.trim_end_matches('/'), dir)
                };
                config.set_working_dir(Some(clean_path(&dir)));
            }
            "USER" => {
                config.set_user(Some(unquote(rest)));
            }
            "EXPOSE" => {
                let mut ports = config.exposed_ports().clone().unwrap_or_default();
                for spec in rest.split_whitespace() {
                    for p in expand_port(spec).map_err(|m| invalid("EXPOSE", m))? {
                        if !ports.contains(&p) {
                            ports.push(p);
                        }
                    }
                }
                config.set_exposed_ports(Some(ports));
            }
            "VOLUME" => {
                let list = if rest.starts_with('[') {
                    serde_json::from_str::<Vec<String>>(rest)
                        .map_err(|e| invalid("VOLUME", format!("invalid JSON array: {e}")))?
                } else {
                    rest.split_whitespace().map(unquote).collect()
                };
                let mut vols = config.volumes().clone().unwrap_or_default();
                for v in list {
                    if v.trim().is_empty() {
                        return Err(invalid("VOLUME", "volume path cannot be empty"));
                    }
                    if !vols.contains(&v) {
                        vols.push(v);
                    }
                }
                config.set_volumes(Some(vols));
            }
            "STOPSIGNAL" => {
                let sig = unquote(rest);
                validate_signal(&sig).map_err(|m| invalid("STOPSIGNAL", m))?;
                config.set_stop_signal(Some(sig));
            }
            _ => unreachable!("checked above"),
        }
    }
    Ok(())
}

/// JSON (exec) form stays as is; anything else is shell form.
fn command_form(rest: &str) -> Vec<String> {
    if rest.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(rest) {
            return v;
        }
    }
    if rest.is_empty() {
        return Vec::new();
    }
    vec!["/bin/sh".into(), "-c".into(), rest.to_string()]
}

/// `k=v k2="v 2"` or the legacy single pair `k v with spaces`.
fn key_values(instr: &str, rest: &str) -> Result<Vec<(String, String)>, ChangeError> {
    let words = split_words(rest).map_err(|m| invalid(instr, m))?;
    let first_is_pair = words.first().is_some_and(|w| w.has_equals);
    if !first_is_pair {
        // Legacy form: the first word is the key, the rest of the line the value.
        let (k, v) = match rest.split_once(|c: char| c.is_whitespace()) {
            Some((k, v)) => (k, v.trim()),
            None => return Err(invalid(instr, format!("missing value for {rest}"))),
        };
        return Ok(vec![(unquote(k), unquote(v))]);
    }
    let mut out = Vec::new();
    for w in words {
        if !w.has_equals {
            return Err(invalid(
                instr,
                format!("key-value pairs must be of the form key=value: {}", w.text),
            ));
        }
        let (k, v) = w.text.split_once('=').expect("has_equals");
        if k.is_empty() {
            return Err(invalid(instr, "key cannot be empty"));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

struct Word {
    text: String,
    /// True when an unquoted `=` occurred (a `key=value` word).
    has_equals: bool,
}

/// Splits on unquoted whitespace, removing quotes and backslash escapes.
fn split_words(s: &str) -> Result<Vec<Word>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut has_equals = false;
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(Word {
                        text: std::mem::take(&mut cur),
                        has_equals,
                    });
                    has_equals = false;
                    in_word = false;
                }
            }
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                in_word = true;
                match chars.next() {
                    Some(n) => cur.push(n),
                    None => cur.push('\\'),
                }
            }
            (None, '=') => {
                has_equals = true;
                in_word = true;
                cur.push('=');
            }
            (_, c) => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unmatched {q} quote"));
    }
    if in_word {
        words.push(Word {
            text: cur,
            has_equals,
        });
    }
    Ok(words)
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return s[1..s.len() - 1].to_string();
        }
    }
    s.to_string()
}

/// Lexically cleans an absolute path (`/a/./b/../c/` => `/a/c`).
fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `80`, `80/udp`, `8000-8002/tcp` => normalised `port/proto` entries.
fn expand_port(spec: &str) -> Result<Vec<String>, String> {
    let (range, proto) = match spec.split_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let port = |s: &str| -> Result<u16, String> {
        s.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port: {spec}"))
    };
    let (lo, hi) = match range.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(range)?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(format!("invalid port range: {spec}"));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// Accepts signal numbers and names with or without `SIG` (`SIGRTMIN+3` too).
fn validate_signal(sig: &str) -> Result<(), String> {
    if let Ok(n) = sig.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(())
        } else {
            Err(format!("invalid signal: {sig}"))
        };
    }
    let upper = sig.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    const NAMES: &[&str] = &[
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "IOT", "BUS", "FPE", "KILL", "USR1", "SEGV",
        "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU",
        "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "POLL", "PWR", "SYS",
    ];
    if NAMES.contains(&name) {
        return Ok(());
    }
    for (base, max) in [("RTMIN", 30u32), ("RTMAX", 30)] {
        if let Some(off) = name.strip_prefix(base) {
            let ok = off.is_empty()
                || off
                    .strip_prefix(if base == "RTMIN" { '+' } else { '-' })
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n <= max);
            if ok {
                return Ok(());
            }
        }
    }
    Err(format!("invalid signal: {sig}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(changes: &[&str]) -> Config {
        let mut c = Config::default();
        apply(
            &mut c,
            &changes.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        c
    }

    fn err(changes: &[&str]) -> ChangeError {
        let mut c = Config::default();
        apply(
            &mut c,
            &changes.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap_err()
    }

    #[test]
    fn cmd_and_entrypoint_forms() {
        let c = applied(&[r#"CMD ["sh", "-c", "echo hi"]"#]);
        assert_eq!(c.cmd().as_deref().unwrap(), ["sh", "-c", "echo hi"]);
        let c = applied(&["cmd echo $HOME && ls"]);
        assert_eq!(
            c.cmd().as_deref().unwrap(),
            ["/bin/sh", "-c", "echo $HOME && ls"]
        );
        let c = applied(&[r#"CMD ["x"]"#, r#"ENTRYPOINT ["/bin/ep"]"#]);
        assert_eq!(c.entrypoint().as_deref().unwrap(), ["/bin/ep"]);
        assert_eq!(
            c.cmd().as_deref().unwrap(),
            ["x"],
            "CMD set by the changes stays"
        );
        let c = applied(&["ENTRYPOINT top -b"]);
        assert_eq!(
            c.entrypoint().as_deref().unwrap(),
            ["/bin/sh", "-c", "top -b"]
        );
    }

    #[test]
    fn env_forms() {
        let c = applied(&[
            "ENV A=1 B=\"two words\" C=x\\ y",
            "ENV D some value here",
            "ENV A=3",
        ]);
        assert_eq!(
            c.env().as_deref().unwrap(),
            ["A=3", "B=two words", "C=x y", "D=some value here"]
        );
        assert!(matches!(err(&["ENV"]), ChangeError::MissingArgument(_)));
        assert!(matches!(err(&["ENV A=1 B"]), ChangeError::Invalid { .. }));
        assert!(matches!(err(&["ENV A=\"x"]), ChangeError::Invalid { .. }));
    }

    #[test]
    fn workdir_user_label_volume_expose_stopsignal() {
        let c = applied(&[
            "WORKDIR /app",
            "WORKDIR sub/../src",
            "USER nobody:nogroup",
            "LABEL a=b \"c d\"=e",
            "LABEL legacy some text",
            r#"VOLUME ["/data", "/logs"]"#,
            "VOLUME /cache",
            "EXPOSE 80 53/udp 8000-8001",
            "STOPSIGNAL SIGINT",
        ]);
        assert_eq!(c.working_dir().as_deref(), Some("/app/src"));
        assert_eq!(c.user().as_deref(), Some("nobody:nogroup"));
        let labels = c.labels().clone().unwrap();
        assert_eq!(labels["a"], "b");
        assert_eq!(labels["c d"], "e");
        assert_eq!(labels["legacy"], "some text");
        assert_eq!(
            c.volumes().as_deref().unwrap(),
            ["/data", "/logs", "/cache"]
        );
        assert_eq!(
            c.exposed_ports().as_deref().unwrap(),
            ["80/tcp", "53/udp", "8000/tcp", "8001/tcp"]
        );
        assert_eq!(c.stop_signal().as_deref(), Some("SIGINT"));
        assert_eq!(
            applied(&["STOPSIGNAL 9"]).stop_signal().as_deref(),
            Some("9")
        );
        assert_eq!(
            applied(&["STOPSIGNAL SIGRTMIN+3"]).stop_signal().as_deref(),
            Some("SIGRTMIN+3")
        );
    }

    #[test]
    fn bad_changes_are_named() {
        assert_eq!(
            err(&["RUN echo hi"]).to_string(),
            "RUN is not a valid change command"
        );
        assert!(err(&["EXPOSE 70000"]).to_string().contains("invalid port"));
        assert!(err(&["EXPOSE 80/xyz"])
            .to_string()
            .contains("invalid proto"));
        assert!(err(&["STOPSIGNAL SIGFOO"])
            .to_string()
            .contains("invalid signal"));
        assert!(err(&["VOLUME [\"/a\""]).to_string().starts_with("VOLUME"));
    }
}
