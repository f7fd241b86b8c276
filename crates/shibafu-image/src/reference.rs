//! Image references in Docker's grammar (distribution/reference), kept in
//! Docker's "familiar" form: `busybox:latest`, `user/app:1`,
//! `localhost:5000/a/b:t` (`docker.io/library/` is dropped), because that is
//! what `docker images` shows and what clients send back.

use std::fmt;

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DOMAIN: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format")]
    Format,
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    Uppercase(String),
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexName(String),
    #[error(
        "invalid reference format: repository name ({0}) must not be more than 255 characters"
    )]
    NameTooLong(String),
    #[error("invalid tag format: {0}")]
    Tag(String),
    #[error("invalid reference format: {0} has a digest, a tag is needed here")]
    Digested(String),
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Familiar repository name: `busybox`, `user/app`, `localhost:5000/a/b`.
    pub repo: String,
    pub tag: Option<String>,
    /// `algo:hex`, when the reference has `@digest`.
    pub digest: Option<String>,
}

impl ImageRef {
    /// `repo:tag`, with `latest` when no tag was given.
    pub fn tagged(&self) -> String {
        format!("{}:{}", self.repo, self.tag.as_deref().unwrap_or("latest"))
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Parses any reference (`name[:tag][@digest]`) and normalises its name.
pub fn parse(s: &str) -> Result<ImageRef, ReferenceError> {
    if s.is_empty() {
        return Err(ReferenceError::Format);
    }
    let (rest, digest) = match s.split_once('@') {
        Some((n, d)) => {
            if !is_digest(d) {
                return Err(ReferenceError::Format);
            }
            (n, Some(d.to_string()))
        }
        None => (s, None),
    };
    // The tag is after the last ':' that follows the last '/', so a
    // registry port (`localhost:5000/x`) is not taken for a tag.
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let i = last_slash + i;
            (&rest[..i], Some(&rest[i + 1..]))
        }
        None => (rest, None),
    };
    if let Some(t) = tag {
        validate_tag(t)?;
    }
    let repo = normalize_name(name)?;
    Ok(ImageRef {
        repo,
        tag: tag.map(str::to_string),
        digest,
    })
}

/// Parses a reference that names a tag (for `tag`, `import --repo`):
/// digests are refused and a missing tag means `latest`.
pub fn parse_tagged(s: &str) -> Result<ImageRef, ReferenceError> {
    let mut r = parse(s)?;
    if r.digest.is_some() {
        return Err(ReferenceError::Digested(s.to_string()));
    }
    if r.tag.is_none() {
        r.tag = Some("latest".to_string());
    }
    Ok(r)
}

/// The `repo` + `tag` query parameters of Docker's tag and import routes
/// (its `RepoTagReference`): a non-empty `tag` replaces any tag in `repo`;
/// otherwise `repo`'s own tag, or `latest`. Returns familiar `repo:tag`.
pub fn repo_tag(repo: &str, tag: Option<&str>) -> Result<String, ReferenceError> {
    let mut r = parse(repo)?;
    if r.digest.is_some() {
        return Err(ReferenceError::Digested(repo.to_string()));
    }
    if let Some(t) = tag.filter(|t| !t.is_empty()) {
        validate_tag(t)?;
        r.tag = Some(t.to_string());
    }
    Ok(r.tagged())
}

/// Checks a tag against `[\w][\w.-]{0,127}`.
pub fn validate_tag(t: &str) -> Result<(), ReferenceError> {
    let ok = !t.is_empty()
        && t.len() <= MAX_TAG_LEN
        && t.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && (b == b'.' || b == b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(ReferenceError::Tag(t.to_string()))
    }
}

/// True for 64 lowercase hex characters (an image ID without `sha256:`).
pub fn is_full_hex_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn normalize_name(name: &str) -> Result<String, ReferenceError> {
    if is_full_hex_id(name) {
        return Err(ReferenceError::HexName(name.to_string()));
    }
    let (domain, remainder) = split_domain(name);
    if let Some(d) = &domain {
        if !is_domain(d) {
            return Err(ReferenceError::Format);
        }
    }
    if remainder.bytes().any(|b| b.is_ascii_uppercase()) {
        let shown = match domain.as_deref() {
            None if !remainder.contains('/') => format!("{OFFICIAL_PREFIX}{remainder}"),
            _ => remainder.to_string(),
        };
        return Err(ReferenceError::Uppercase(shown));
    }
    if remainder.is_empty() || !remainder.split('/').all(is_path_component) {
        return Err(ReferenceError::Format);
    }
    let familiar = match domain.as_deref() {
        None | Some(DEFAULT_DOMAIN) | Some(LEGACY_DOMAIN) => {
            match remainder.strip_prefix(OFFICIAL_PREFIX) {
                Some(r) if !r.contains('/') => r.to_string(),
                _ => remainder.to_string(),
            }
        }
        Some(d) => format!("{d}/{remainder}"),
    };
    let full_len = match domain.as_deref() {
        None | Some(DEFAULT_DOMAIN) | Some(LEGACY_DOMAIN) => {
            DEFAULT_DOMAIN.len() + 1 + remainder.len()
        }
        Some(d) => d.len() + 1 + remainder.len(),
    };
    if full_len > MAX_NAME_LEN {
        return Err(ReferenceError::NameTooLong(familiar));
    }
    Ok(familiar)
}

/// Docker's rule: the first component is a registry when it contains `.`
/// or `:`, is `localhost`, or has uppercase letters.
fn split_domain(name: &str) -> (Option<String>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first.to_string()), rest)
        }
        _ => (None, name),
    }
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // separator
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == b.len() {
            return false;
        }
    }
}

/// `host[:port]` where host is dotted DNS labels or a bracketed IPv6.
fn is_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if d.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// `algo:hex` with at least 32 hex digits.
fn is_digest(d: &str) -> bool {
    let Some((algo, hex)) = d.split_once(':') else {
        return false;
    };
    !algo.is_empty()
        && algo.as_bytes()[0].is_ascii_alphabetic()
        && algo
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'.'))
        && hex.len() >= 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagged(s: &str) -> String {
        parse_tagged(s).unwrap().tagged()
    }

    #[test]
    fn familiar_names() {
        assert_eq!(tagged("busybox"), "busybox:latest");
        assert_eq!(tagged("busybox:1.36"), "busybox:1.36");
        assert_eq!(tagged("library/busybox"), "busybox:latest");
        assert_eq!(tagged("docker.io/library/busybox:x"), "busybox:x");
        assert_eq!(tagged("index.docker.io/library/busybox"), "busybox:latest");
        assert_eq!(tagged("docker.io/user/app"), "user/app:latest");
        assert_eq!(tagged("user/app:v1.0-rc_1"), "user/app:v1.0-rc_1");
        assert_eq!(tagged("localhost:5000/a/b:t"), "localhost:5000/a/b:t");
        assert_eq!(tagged("localhost/a"), "localhost/a:latest");
        assert_eq!(
            tagged("registry.example.com/x/y"),
            "registry.example.com/x/y:latest"
        );
        assert_eq!(tagged("[::1]:5000/app:1"), "[::1]:5000/app:1");
        assert_eq!(tagged("a__b-c---d/e_f.g"), "a__b-c---d/e_f.g:latest");
        // A registry may be uppercase, the path may not.
        assert_eq!(tagged("Registry.Local/app"), "Registry.Local/app:latest");
    }

    #[test]
    fn repo_and_tag_parameters() {
        assert_eq!(repo_tag("busybox", None).unwrap(), "busybox:latest");
        assert_eq!(repo_tag("busybox", Some("")).unwrap(), "busybox:latest");
        assert_eq!(repo_tag("busybox:1", None).unwrap(), "busybox:1");
        assert_eq!(repo_tag("busybox", Some("2")).unwrap(), "busybox:2");
        assert_eq!(repo_tag("busybox:1", Some("2")).unwrap(), "busybox:2");
        assert!(matches!(
            repo_tag("busybox", Some("-x")),
            Err(ReferenceError::Tag(_))
        ));
        assert!(repo_tag("Busybox", None).is_err());
    }

    #[test]
    fn digests_parse_but_are_not_tags() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.repo, "busybox");
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert!(matches!(
            parse_tagged(&format!("busybox@{d}")),
            Err(ReferenceError::Digested(_))
        ));
    }

    #[test]
    fn invalid_references() {
        for bad in [
            "",
            ":tag",
            "busybox:",
            "busybox:-x",
            "busy box",
            "a//b",
            "/a",
            "a/",
            "a..b",
            "a-",
            "_a",
            "a___b",
            "a:b:c",
            "localhost:port/a",
            "-host.com/a",
            "busybox@sha256:xyz",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            parse("BusyBox").unwrap_err(),
            ReferenceError::Uppercase("library/BusyBox".into())
        );
        assert!(parse("BusyBox")
            .unwrap_err()
            .to_string()
            .starts_with("invalid reference format"));
        assert!(matches!(
            parse(&"a".repeat(64)),
            Err(ReferenceError::HexName(_))
        ));
        assert!(matches!(
            parse(&format!("busybox:{}", "t".repeat(129))),
            Err(ReferenceError::Tag(_))
        ));
        assert!(matches!(
            parse(&"a".repeat(250)),
            Err(ReferenceError::NameTooLong(_))
        ));
    }
}
