//! Docker's repository name rules (distribution/reference's
//! `ParseNormalizedNamed` without tags and digests), so that a name means
//! the same registry and repository here as in the docker CLI.

use crate::{Error, RepoName};

/// The registry behind names without a domain.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The legacy spelling of [`DEFAULT_DOMAIN`] that Docker rewrites.
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Official images live under this namespace on Docker Hub.
const OFFICIAL_PREFIX: &str = "library/";
/// distribution/reference's `NameTotalLengthMax`.
const NAME_MAX: usize = 255;

impl RepoName {
    /// Splits a familiar or qualified repository name (no tag, no digest):
    /// `busybox` → docker.io/library/busybox, `u/app` → docker.io/u/app,
    /// `localhost:5000/x` → localhost:5000/x (the first component is a
    /// domain when it holds `.` or `:` or is `localhost`; `index.docker.io`
    /// is `docker.io`).
    pub fn parse(name: &str) -> Result<RepoName, Error> {
        if name.is_empty() {
            return Err(invalid(name));
        }
        if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidName(format!(
                "invalid repository name ({name}), cannot specify 64-byte hexadecimal strings"
            )));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.to_lowercase() != first =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        let domain = if domain == LEGACY_DEFAULT_DOMAIN {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_PREFIX}{path}")
        } else {
            path
        };
        if !valid_domain(&domain) {
            return Err(invalid(name));
        }
        if path.to_lowercase() != path {
            return Err(Error::InvalidName(
                "repository name must be lowercase".to_string(),
            ));
        }
        if !path.split('/').all(valid_path_component) {
            return Err(invalid(name));
        }
        if domain.len() + 1 + path.len() > NAME_MAX {
            return Err(Error::InvalidName(format!(
                "repository name must not be more than {NAME_MAX} characters"
            )));
        }
        Ok(RepoName { domain, path })
    }

    /// Docker's familiar form: `busybox`, `u/app`, `localhost:5000/x`.
    pub fn familiar(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return format!("{}/{}", self.domain, self.path);
        }
        match self.path.strip_prefix(OFFICIAL_PREFIX) {
            Some(rest) if !rest.contains('/') => rest.to_string(),
            _ => self.path.clone(),
        }
    }
}

impl std::fmt::Display for RepoName {
    /// The fully qualified form: `docker.io/library/busybox`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)
    }
}

fn invalid(name: &str) -> Error {
    Error::InvalidName(format!("\"{name}\""))
}

/// `host(.host)*(:port)?` or `[ipv6](:port)?`, host labels of letters,
/// digits and inner dashes (reference's `domainAndPort`).
fn valid_domain(domain: &str) -> bool {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("x", Some(port)),
                None => return false,
            },
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> (String, String) {
        let r = RepoName::parse(s).unwrap();
        (r.domain, r.path)
    }

    #[test]
    fn normalizes_like_docker() {
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(p("busybox"), s("docker.io", "library/busybox"));
        assert_eq!(p("u/app"), s("docker.io", "u/app"));
        assert_eq!(p("docker.io/busybox"), s("docker.io", "library/busybox"));
        assert_eq!(p("index.docker.io/u/a"), s("docker.io", "u/a"));
        assert_eq!(p("localhost/x"), s("localhost", "x"));
        assert_eq!(p("localhost:5000/x/y"), s("localhost:5000", "x/y"));
        assert_eq!(p("127.0.0.1:5000/a"), s("127.0.0.1:5000", "a"));
        assert_eq!(p("[::1]:5000/a"), s("[::1]:5000", "a"));
        assert_eq!(p("reg.example.com/a/b/c"), s("reg.example.com", "a/b/c"));
        assert_eq!(p("a__b/c-d.e_f"), s("docker.io", "a__b/c-d.e_f"));
        assert_eq!(p("a/b---c"), s("docker.io", "a/b---c"));
    }

    #[test]
    fn familiar_drops_default_domain_and_library() {
        let f = |s: &str| RepoName::parse(s).unwrap().familiar();
        assert_eq!(f("busybox"), "busybox");
        assert_eq!(f("docker.io/library/busybox"), "busybox");
        assert_eq!(f("docker.io/u/app"), "u/app");
        assert_eq!(f("docker.io/library/a/b"), "library/a/b");
        assert_eq!(f("localhost:5000/library/x"), "localhost:5000/library/x");
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "Busybox",
            "u/App",
            "a b",
            "a//b",
            "a/",
            "/a",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "a$b",
            "host:port/x",
            "[::1/x",
            "a@b",
        ] {
            assert!(
                matches!(RepoName::parse(bad), Err(Error::InvalidName(_))),
                "{bad:?} accepted"
            );
        }
        let e = RepoName::parse("Busybox").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid reference format: repository name must be lowercase"
        );
        let hex = "a".repeat(64);
        assert!(RepoName::parse(&hex).is_err());
    }
}
