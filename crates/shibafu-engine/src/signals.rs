//! Signal names and numbers as Docker accepts them ("SIGTERM", "TERM",
//! "term", "15", "SIGRTMIN+3").

const TABLE: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGPOLL),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

/// Parse a signal; `Err` carries Docker's message.
pub fn parse(s: &str) -> Result<i32, String> {
    let bad = || format!("Invalid signal: {s}");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = t.parse::<i32>() {
        return if (1..=SIGRTMAX).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let up = t.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(&(_, n)) = TABLE.iter().find(|(k, _)| *k == name) {
        return Ok(n);
    }
    let rt = |base: i32, rest: &str, sign: i32| -> Result<i32, String> {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.parse().map_err(|_| bad())?
        };
        let n = base + sign * off;
        if (SIGRTMIN..=SIGRTMAX).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        }
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return match rest.strip_prefix('+') {
            Some(r) => rt(SIGRTMIN, r, 1),
            None if rest.is_empty() => Ok(SIGRTMIN),
            None => Err(bad()),
        };
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return match rest.strip_prefix('-') {
            Some(r) => rt(SIGRTMAX, r, -1),
            None if rest.is_empty() => Ok(SIGRTMAX),
            None => Err(bad()),
        };
    }
    Err(bad())
}

/// "SIGTERM" for 15 (for `Config.StopSignal` defaults and events).
pub fn name(n: i32) -> String {
    TABLE
        .iter()
        .find(|(_, v)| *v == n)
        .map(|(k, _)| format!("SIG{k}"))
        .unwrap_or_else(|| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("SIGTERM"), Ok(15));
        assert_eq!(parse("term"), Ok(15));
        assert_eq!(parse("KILL"), Ok(9));
        assert_eq!(parse("9"), Ok(9));
        assert_eq!(parse("SIGRTMIN+3"), Ok(37));
        assert_eq!(parse("RTMAX-1"), Ok(63));
        assert_eq!(parse("SIGFOO"), Err("Invalid signal: SIGFOO".into()));
        assert!(parse("0").is_err());
        assert!(parse("65").is_err());
        assert_eq!(name(15), "SIGTERM");
        assert_eq!(name(40), "40");
    }
}
